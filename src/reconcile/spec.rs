//! A container's effective spec: everything that determines it, and nothing that doesn't.
//! Its hash is recorded with the container; a different hash means recreate.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::manifest::{
    ContainerSection, HealthCheck, Network, RestartPolicy, VolumeSource, format_size,
    normalize_capability,
};
use crate::model::Limits;
use crate::reference::Reference;

/// Resource limits as numbers (bytes, fractions of CPUs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecLimits {
    pub memory: Option<u64>,
    /// Bytes of memory plus swap; -1 is unlimited.
    pub memory_swap: Option<i64>,
    pub cpus: Option<f64>,
    pub cpu_shares: Option<u64>,
    pub pids: Option<i64>,
    pub cpuset: Option<String>,
}

impl From<&SpecLimits> for Limits {
    fn from(l: &SpecLimits) -> Limits {
        Limits {
            memory: l.memory,
            memory_swap: l.memory_swap,
            cpus: l.cpus,
            cpu_shares: l.cpu_shares,
            pids: l.pids,
            cpuset_cpus: l.cpuset.clone(),
        }
    }
}

impl From<&crate::manifest::LimitsSection> for SpecLimits {
    fn from(l: &crate::manifest::LimitsSection) -> SpecLimits {
        SpecLimits {
            memory: l.memory.map(|b| b.0),
            memory_swap: l.memory_swap.map(|s| s.as_i64()),
            cpus: l.cpus,
            cpu_shares: l.cpu_shares,
            pids: l.pids,
            cpuset: l.cpuset.as_ref().map(|c| c.0.clone()),
        }
    }
}

/// A mount in the effective spec: bind sources are absolute host paths.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecVolume {
    pub source: VolumeSource,
    pub target: String,
    pub read_only: bool,
}

impl std::fmt::Display for SpecVolume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let src = match &self.source {
            VolumeSource::Named(n) => n,
            VolumeSource::Bind(p) => p,
        };
        write!(
            f,
            "{src}:{}{}",
            self.target,
            if self.read_only { ":ro" } else { "" }
        )
    }
}

/// The health check with its defaults filled in (seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecHealth {
    pub command: Vec<String>,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub retries: u32,
    pub start_period_ms: u64,
}

impl From<&HealthCheck> for SpecHealth {
    fn from(h: &HealthCheck) -> SpecHealth {
        let ms = |d: Option<crate::manifest::HumanDuration>, default: u64| {
            d.map_or(default, |d| d.0.as_millis() as u64)
        };
        SpecHealth {
            command: h.command.clone(),
            interval_ms: ms(h.interval, 30_000),
            timeout_ms: ms(h.timeout, 30_000),
            retries: h.retries.unwrap_or(3),
            start_period_ms: ms(h.start_period, 0),
        }
    }
}

/// Everything that determines a container. Stored as JSON with the container; its
/// [`spec_hash`](ContainerSpec::spec_hash) decides whether a container must be recreated.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    /// The image reference, normalized (`app` → `app:latest`).
    pub image: String,
    /// Replaces the image's Entrypoint when set.
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's Cmd when set.
    pub command: Option<Vec<String>>,
    /// The container's own environment (env_file merged, `env` winning); the image's
    /// environment is applied underneath by the runtime.
    pub env: BTreeMap<String, String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub limits: SpecLimits,
    pub volumes: Vec<SpecVolume>,
    pub read_only: bool,
    /// Normalized (`CAP_NET_ADMIN`), sorted, deduplicated.
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub restart: RestartPolicy,
    pub network: Network,
    /// The user's labels (wharf's own ownership labels are not part of the spec).
    pub labels: BTreeMap<String, String>,
    pub health: Option<SpecHealth>,
    /// seccomp (a profile file's text is part of the spec: editing it recreates) and
    /// no_new_privileges. Left out of the JSON when default, so older hashes stay.
    #[serde(default, skip_serializing_if = "crate::model::Security::is_default")]
    pub security: crate::model::Security,
    // Issue 14's fields: skipped when unset, so the hash of a spec without them is what it
    // was before they existed (no recreate after an upgrade).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<u64>,
    /// (name, soft, hard).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<(String, u64, u64)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    // Issue 13's fields, skipped when empty likewise.
    /// The networks joined in bridge mode, by their full names (`shop_default`), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    /// Published ports in `-p` syntax, normalized (`8080:80`, `127.0.0.1:53:53/udp`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
}

impl ContainerSpec {
    /// The effective spec of a loaded (validated, paths resolved) container section of
    /// `project`. A container without `network` is on `default` (the root's default network
    /// mode), unless it publishes ports or names networks, which need the bridge: then it
    /// joins its `networks` (`<project>_<name>`, or an external network's own name), else
    /// `<project>_default`.
    pub fn from_section(
        c: &ContainerSection,
        project: &str,
        networks: &BTreeMap<String, crate::manifest::NetworkSection>,
        default: Network,
    ) -> ContainerSpec {
        let network = c
            .network
            .unwrap_or(if c.ports.is_empty() && c.networks.is_empty() {
                default
            } else {
                Network::Bridge
            });
        let joined = if network != Network::Bridge {
            Vec::new()
        } else if c.networks.is_empty() {
            vec![format!("{project}_default")]
        } else {
            c.networks
                .iter()
                .map(|n| match networks.get(n) {
                    Some(sec) if sec.external => n.clone(),
                    _ => format!("{project}_{n}"),
                })
                .collect()
        };
        let ports = c
            .ports
            .iter()
            .map(|p| {
                crate::model::PortSpec::parse(&p.0).map_or_else(|_| p.0.clone(), |s| s.to_string())
            })
            .collect();
        let caps = |list: &[crate::manifest::CapabilityName]| {
            let mut v: Vec<String> = list
                .iter()
                .map(|c| normalize_capability(c).unwrap_or_else(|_| c.0.clone()))
                .collect();
            v.sort();
            v.dedup();
            v
        };
        let image = Reference::parse(&c.image)
            .map(|r| r.to_string())
            .unwrap_or_else(|_| c.image.0.clone());
        ContainerSpec {
            image,
            entrypoint: c.entrypoint.clone(),
            command: c.command.clone(),
            env: c.env.clone(),
            workdir: c.workdir.as_ref().map(|w| w.0.clone()),
            user: c.user.clone(),
            hostname: c.hostname.clone(),
            limits: c.limits.as_ref().map(SpecLimits::from).unwrap_or_default(),
            volumes: c
                .volumes
                .iter()
                .map(|v| SpecVolume {
                    source: v.source.clone(),
                    target: v.target.clone(),
                    read_only: v.read_only,
                })
                .collect(),
            read_only: c.read_only,
            cap_add: caps(&c.cap_add),
            cap_drop: caps(&c.cap_drop),
            restart: c.restart,
            network,
            labels: c.labels.clone(),
            health: c.health.as_ref().map(SpecHealth::from),
            security: c.security.as_ref().map(spec_security).unwrap_or_default(),
            tmpfs: c.tmpfs.iter().map(|t| t.0.clone()).collect(),
            shm_size: c.shm_size.map(|b| b.0),
            ulimits: c.ulimits.as_ref().map(|u| u.entries()).unwrap_or_default(),
            stop_signal: c.stop_signal.as_ref().map(|s| s.0.clone()),
            stop_timeout: c.stop_grace_period.map(|d| d.0.as_secs()),
            init: c.init,
            devices: c.devices.iter().map(|d| d.0.clone()).collect(),
            networks: joined,
            ports,
        }
    }

    /// Parses a spec stored with a container (the `config` column). `None` when it is not a
    /// spec this wharf understands; the plan then recreates with a reason saying so.
    pub fn from_stored_json(json: &str) -> Option<ContainerSpec> {
        serde_json::from_str(json).ok()
    }

    /// The canonical JSON: fields in declaration order, maps sorted, no whitespace.
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// sha256 hex of [`canonical_json`](Self::canonical_json).
    pub fn spec_hash(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_json().as_bytes()))
    }

    /// The limits for the runtime's cgroup.
    pub fn cgroup_limits(&self) -> Limits {
        Limits::from(&self.limits)
    }
}

/// The runtime's security options of a loaded section (its profile path is absolute). A
/// profile that cannot be read now (validation read it) gives an empty text, which fails
/// the container's start with the reason.
fn spec_security(s: &crate::manifest::SecuritySection) -> crate::model::Security {
    use crate::model::{Seccomp, Security};
    let seccomp = match s.seccomp.as_deref() {
        None | Some("default") => Seccomp::Default,
        Some("unconfined") => Seccomp::Unconfined,
        Some(path) => crate::runtime::seccomp::read_profile(std::path::Path::new(path))
            .unwrap_or_else(|_| Seccomp::Profile {
                source: path.to_string(),
                json: String::new(),
            }),
    };
    Security {
        seccomp,
        no_new_privileges: s.no_new_privileges,
    }
}

/// A field-level difference between two specs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// `image`, `limits.memory`, `env.MODE`, `command`, ...
    pub field: String,
    pub old: Option<String>,
    pub new: Option<String>,
    /// Whether `old`/`new` are worth printing (false for commands: "command changed").
    pub show_values: bool,
}

impl Reason {
    pub fn new(field: impl Into<String>, old: Option<String>, new: Option<String>) -> Self {
        Reason {
            field: field.into(),
            old,
            new,
            show_values: true,
        }
    }

    pub fn changed(field: impl Into<String>) -> Self {
        Reason {
            field: field.into(),
            old: None,
            new: None,
            show_values: false,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.show_values {
            return write!(f, "{} changed", self.field);
        }
        match (&self.old, &self.new) {
            (Some(o), Some(n)) => write!(f, "{} {o} → {n}", self.field),
            (None, Some(n)) => write!(f, "{} added: {n}", self.field),
            (Some(o), None) => write!(f, "{} removed (was {o})", self.field),
            (None, None) => write!(f, "{} changed", self.field),
        }
    }
}

fn opt<T: ToString>(v: &Option<T>) -> Option<String> {
    v.as_ref().map(ToString::to_string)
}

fn diff_map(
    out: &mut Vec<Reason>,
    prefix: &str,
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) {
    for (k, v) in new {
        match old.get(k) {
            Some(o) if o == v => {}
            o => out.push(Reason::new(
                format!("{prefix}.{k}"),
                o.cloned(),
                Some(v.clone()),
            )),
        }
    }
    for (k, o) in old {
        if !new.contains_key(k) {
            out.push(Reason::new(format!("{prefix}.{k}"), Some(o.clone()), None));
        }
    }
}

fn diff_list(out: &mut Vec<Reason>, field: &str, old: &[String], new: &[String]) {
    for n in new.iter().filter(|n| !old.contains(n)) {
        out.push(Reason::new(field, None, Some(n.clone())));
    }
    for o in old.iter().filter(|o| !new.contains(o)) {
        out.push(Reason::new(field, Some(o.clone()), None));
    }
}

/// Field-level reasons why `new` differs from `old`, in a stable order.
pub fn diff(old: &ContainerSpec, new: &ContainerSpec) -> Vec<Reason> {
    let mut r = Vec::new();
    if old.image != new.image {
        r.push(Reason::new(
            "image",
            Some(old.image.clone()),
            Some(new.image.clone()),
        ));
    }
    if old.entrypoint != new.entrypoint {
        r.push(Reason::changed("entrypoint"));
    }
    if old.command != new.command {
        r.push(Reason::changed("command"));
    }
    diff_map(&mut r, "env", &old.env, &new.env);
    for (field, o, n) in [
        ("workdir", &old.workdir, &new.workdir),
        ("user", &old.user, &new.user),
        ("hostname", &old.hostname, &new.hostname),
    ] {
        if o != n {
            r.push(Reason::new(field, o.clone(), n.clone()));
        }
    }
    let (ol, nl) = (&old.limits, &new.limits);
    let size = |v: Option<u64>| v.map(format_size);
    let swap = |v: Option<i64>| {
        v.map(|b| match u64::try_from(b) {
            Ok(b) => format_size(b),
            Err(_) => "unlimited".to_string(),
        })
    };
    for (field, o, n) in [
        ("limits.memory", size(ol.memory), size(nl.memory)),
        (
            "limits.memory_swap",
            swap(ol.memory_swap),
            swap(nl.memory_swap),
        ),
        ("limits.cpus", opt(&ol.cpus), opt(&nl.cpus)),
        (
            "limits.cpu_shares",
            opt(&ol.cpu_shares),
            opt(&nl.cpu_shares),
        ),
        ("limits.pids", opt(&ol.pids), opt(&nl.pids)),
        ("limits.cpuset", ol.cpuset.clone(), nl.cpuset.clone()),
    ] {
        if o != n {
            r.push(Reason::new(
                field,
                Some(o.unwrap_or_else(|| "unset".into())),
                Some(n.unwrap_or_else(|| "unset".into())),
            ));
        }
    }
    let vols = |v: &[SpecVolume]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
    diff_list(&mut r, "volume", &vols(&old.volumes), &vols(&new.volumes));
    if old.read_only != new.read_only {
        r.push(Reason::new(
            "read_only",
            Some(old.read_only.to_string()),
            Some(new.read_only.to_string()),
        ));
    }
    diff_list(&mut r, "cap_add", &old.cap_add, &new.cap_add);
    diff_list(&mut r, "cap_drop", &old.cap_drop, &new.cap_drop);
    if old.restart != new.restart {
        r.push(Reason::new(
            "restart",
            Some(old.restart.to_string()),
            Some(new.restart.to_string()),
        ));
    }
    if old.network != new.network {
        let name = |n: Network| match n {
            Network::None => "none".to_string(),
            Network::Host => "host".to_string(),
            Network::Bridge => "bridge".to_string(),
        };
        r.push(Reason::new(
            "network",
            Some(name(old.network)),
            Some(name(new.network)),
        ));
    }
    for (field, o, n) in [
        ("networks", &old.networks, &new.networks),
        ("ports", &old.ports, &new.ports),
    ] {
        if o != n {
            r.push(Reason::new(
                field,
                Some(format!("{o:?}")),
                Some(format!("{n:?}")),
            ));
        }
    }
    diff_map(&mut r, "labels", &old.labels, &new.labels);
    if old.tmpfs != new.tmpfs {
        r.push(Reason::changed("tmpfs"));
    }
    if old.shm_size != new.shm_size {
        r.push(Reason::new(
            "shm_size",
            opt(&old.shm_size),
            opt(&new.shm_size),
        ));
    }
    if old.ulimits != new.ulimits {
        r.push(Reason::changed("ulimits"));
    }
    if old.stop_signal != new.stop_signal {
        r.push(Reason::new(
            "stop_signal",
            opt(&old.stop_signal),
            opt(&new.stop_signal),
        ));
    }
    if old.stop_timeout != new.stop_timeout {
        r.push(Reason::new(
            "stop_grace_period",
            opt(&old.stop_timeout),
            opt(&new.stop_timeout),
        ));
    }
    if old.init != new.init {
        r.push(Reason::new(
            "init",
            Some(old.init.to_string()),
            Some(new.init.to_string()),
        ));
    }
    if old.devices != new.devices {
        r.push(Reason::changed("devices"));
    }
    if old.health != new.health {
        r.push(Reason::changed("health"));
    }
    if old.security != new.security {
        r.push(Reason::changed("security"));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spec without issue 14's fields serializes (and hashes) as before they existed, so
    /// an upgrade recreates nothing.
    #[test]
    fn unset_new_fields_leave_the_hash_alone() {
        let spec = ContainerSpec {
            image: "app:1".into(),
            ..ContainerSpec::default()
        };
        let json = spec.canonical_json();
        for f in [
            "tmpfs",
            "shm_size",
            "ulimits",
            "stop_signal",
            "stop_timeout",
            "init",
            "devices",
        ] {
            assert!(!json.contains(f), "{f} in {json}");
        }
        let back = ContainerSpec::from_stored_json(&json).expect("parses");
        assert_eq!(back.spec_hash(), spec.spec_hash());
        let with = ContainerSpec {
            init: true,
            ..spec.clone()
        };
        assert_ne!(with.spec_hash(), spec.spec_hash());
        assert_eq!(diff(&spec, &with)[0].to_string(), "init false → true");
    }
}
