//! `wharf inspect` of a container: docker's shape. A read: it changes nothing (a run whose
//! monitor died shows through the liveness rule, not by recovering it).

use anyhow::Result;
use serde_json::json;

use crate::container;
use crate::image;
use crate::model::{ContainerState, RestartPolicy, VolumeKind};
use crate::store::Store;
use crate::util::rfc3339;

/// inspect's `State.Error` of a container whose monitor died.
pub const MONITOR_DIED: &str =
    "its monitor died at an unknown time, and the container with it (parent-death signal)";

/// The record as docker-style inspect JSON: identity, image (id and reference), config,
/// state, mounts, limits (`HostConfig`), restart count, write layer and log paths.
pub fn inspect(store: &Store, input: &str) -> Result<serde_json::Value> {
    let r = container::find(store, input)?;
    let running = r.live_pid().is_some();
    let restarting = r.state == ContainerState::Restarting;
    let health = r
        .config
        .healthcheck
        .as_ref()
        .and(crate::runtime::health::load(store, &r.id))
        .map(|h| {
            let mut j = h.to_json();
            // The row is the truth for the status (the file may be from the run before).
            if let Some(s) = &r.health {
                j["Status"] = json!(s);
            }
            j
        });
    // docker's shape: the policy's name, and N of on-failure:N (0: unbounded or n/a).
    let (policy, max_retries) = match r.config.restart {
        RestartPolicy::OnFailure { max } => ("on-failure".to_string(), max.unwrap_or(0)),
        p => (p.to_string(), 0),
    };
    let cdir = store.container_dir(&r.id);
    let c = &r.config;
    let mounts: Vec<serde_json::Value> = c
        .volumes
        .iter()
        .map(|v| match v.kind {
            VolumeKind::Named => json!({
                "Type": "volume",
                "Name": v.source,
                "Source": store.volumes_dir().join(&v.source).join("_data"),
                "Destination": v.destination,
                "Mode": if v.read_only { "ro" } else { "rw" },
                "RW": !v.read_only,
            }),
            VolumeKind::Bind => json!({
                "Type": "bind",
                "Source": v.source,
                "Destination": v.destination,
                "Mode": if v.read_only { "ro" } else { "rw" },
                "RW": !v.read_only,
            }),
        })
        .collect();
    let lower: Option<String> = image::layer_dirs(store, &r.image_id).ok().map(|dirs| {
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    });
    let l = &c.limits;
    let (upper, work) = if c.auto_remove {
        // --rm: the write layer is a tmpfs inside the container's mount namespace.
        (None, None)
    } else {
        (Some(cdir.join("upper")), Some(cdir.join("work")))
    };
    Ok(json!({
        "Id": r.id,
        "Name": r.name,
        "Created": rfc3339(r.created_at),
        "Image": format!("sha256:{}", r.image_id),
        "ImageRef": r.image_ref,
        "Path": c.args.first(),
        "Args": c.args.get(1..).unwrap_or_default(),
        "State": {
            "Status": r.state,
            "Running": running || restarting,
            "Restarting": restarting,
            "Pid": if running { r.pid.unwrap_or(0) } else { 0 },
            "Paused": super::control::is_paused(&r),
            "ExitCode": r.exit_code.unwrap_or(0),
            "OOMKilled": r.oom_killed,
            "StartedAt": r.started_at.map(rfc3339),
            "FinishedAt": r.finished_at.map(rfc3339),
            "Health": health,
            "Text": r.status_text(crate::store::now_ns()),
            "Error": r.monitor_died().then_some(MONITOR_DIED).or(r.error.as_deref()),
        },
        "RestartCount": r.restart_count,
        "Labels": r.labels,
        "Project": r.project,
        "SpecHash": r.spec_hash,
        "Health": r.health,
        "Config": r.config,
        "Mounts": mounts,
        "HostConfig": {
            "Memory": l.memory.unwrap_or(0),
            "MemorySwap": l.memory_swap.unwrap_or(0),
            "NanoCpus": l.cpus.map_or(0, |c| (c * 1e9).round() as i64),
            "CpuShares": l.cpu_shares.unwrap_or(0),
            "PidsLimit": l.pids,
            "CpusetCpus": l.cpuset_cpus.clone().unwrap_or_default(),
            "Privileged": c.privileged,
            "ReadonlyRootfs": c.read_only,
            "CapAdd": c.cap_add,
            "CapDrop": c.cap_drop,
            "NetworkMode": c.network.mode(),
            "AutoRemove": c.auto_remove,
            "RestartPolicy": {
                "Name": policy,
                "MaximumRetryCount": max_retries,
            },
        },
        "GraphDriver": {
            "Name": "overlay",
            "Data": {
                "LowerDir": lower,
                "UpperDir": upper,
                "WorkDir": work,
            },
        },
        "UpperDir": upper,
        "LogPath": container::log_path(store, &r.id),
        "NetworkSettings": network_settings(store, &r, running),
    }))
}

/// docker's NetworkSettings: the published ports (`{"80/tcp": [{"HostIp", "HostPort"}]}`) and
/// the address on each network, while the container runs.
fn network_settings(store: &Store, r: &container::Record, running: bool) -> serde_json::Value {
    let st = running
        .then(|| crate::network::sandbox::state(store, &r.id))
        .flatten();
    let mut ports = serde_json::Map::new();
    for p in &r.config.net.ports {
        for i in 0..p.range {
            ports.insert(
                format!("{}/{}", p.container_port + i, p.protocol),
                json!(null),
            );
        }
    }
    let mut networks = serde_json::Map::new();
    if let Some(st) = &st {
        for b in &st.ports {
            let key = format!("{}/{}", b.container_port, b.protocol);
            let entry =
                json!({"HostIp": b.host_ip.to_string(), "HostPort": b.host_port.to_string()});
            match ports.get_mut(&key) {
                Some(serde_json::Value::Array(v)) => v.push(entry),
                _ => {
                    ports.insert(key, json!([entry]));
                }
            }
        }
        for (name, ep) in &st.addresses {
            networks.insert(
                name.clone(),
                json!({
                    "NetworkID": ep.network_id,
                    "IPAddress": ep.address.to_string(),
                    "IPPrefixLen": ep.prefix,
                    "Gateway": ep.gateway.to_string(),
                    "MacAddress": ep.mac,
                    "Aliases": ep.aliases,
                }),
            );
        }
    }
    let first = st
        .as_ref()
        .and_then(|s| s.addresses.values().next().cloned());
    json!({
        "Ports": ports,
        "Networks": networks,
        "IPAddress": first.as_ref().map(|e| e.address.to_string()).unwrap_or_default(),
        "Gateway": first.as_ref().map(|e| e.gateway.to_string()).unwrap_or_default(),
        "MacAddress": first.map(|e| e.mac).unwrap_or_default(),
        "SandboxKey": st.map(|s| s.netns.display().to_string()).unwrap_or_default(),
    })
}
