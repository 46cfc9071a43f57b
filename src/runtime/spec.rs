//! From `run` options and the image config to a [`ContainerConfig`]: docker's rules for
//! Entrypoint/Cmd, Env, WorkingDir and User, the default environment, volumes, capabilities and
//! the size and CPU syntax of the limits.

use anyhow::Result;

use crate::container::{ContainerConfig, Network, Volume, VolumeKind};
use crate::error::{exit, user};
use crate::image::config::RunConfig;
use crate::runtime::cgroup::Limits;

/// docker's default PATH.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// docker's default capability set.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// What the command line of `run` (or a manifest) asks for.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub command: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub tty: bool,
    pub interactive: bool,
    pub network: Network,
    pub volumes: Vec<String>,
    pub read_only: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub privileged: bool,
    pub limits: Limits,
    pub auto_remove: bool,
    /// What the monitor does when the command exits.
    pub restart: crate::runtime::restart::RestartPolicy,
    /// A health check the monitor runs.
    pub healthcheck: Option<crate::runtime::health::HealthConfig>,
}

fn runtime_error(msg: String, hint: &str) -> anyhow::Error {
    user(msg).hint(hint).code(exit::RUNTIME).into()
}

/// Builds the effective config of a new container with id `id`.
pub fn build(id: &str, image: &RunConfig, opts: &RunOptions) -> Result<ContainerConfig> {
    let mut args: Vec<String> = image.entrypoint.clone().unwrap_or_default();
    if opts.command.is_empty() {
        args.extend(image.cmd.clone().unwrap_or_default());
    } else {
        args.extend(opts.command.iter().cloned());
    }
    if args.is_empty() {
        return Err(runtime_error(
            "no command specified: the image has no Cmd or Entrypoint and none was given".into(),
            "give the command after the image: `wharf run IMAGE /bin/sh`, or import the image \
             with `--change 'CMD [\"/bin/sh\"]'`",
        ));
    }
    let hostname = opts
        .hostname
        .clone()
        .unwrap_or_else(|| id[..12].to_string());
    let mut env: Vec<String> = vec![
        format!("PATH={DEFAULT_PATH}"),
        format!("HOSTNAME={hostname}"),
    ];
    if opts.tty {
        env.push("TERM=xterm".into());
    }
    env.push("container=wharf".into());
    for e in image.env.iter().chain(opts.env.iter()) {
        set_env(&mut env, e)?;
    }
    let working_dir = opts
        .working_dir
        .clone()
        .or_else(|| image.working_dir.clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    if !working_dir.starts_with('/') {
        return Err(runtime_error(
            format!("the working directory {working_dir:?} is not an absolute path"),
            "give -w an absolute path such as /tmp",
        ));
    }
    let mut volumes = opts
        .volumes
        .iter()
        .map(|v| parse_volume(v))
        .collect::<Result<Vec<_>>>()?;
    // The image's Volumes become anonymous volumes, as docker makes them, unless the
    // command line mounts something there.
    for path in image.volumes.keys() {
        let dest = if path.len() > 1 {
            path.trim_end_matches('/')
        } else {
            path.as_str()
        };
        if dest.starts_with('/') && dest != "/" && !volumes.iter().any(|v| v.destination == dest) {
            volumes.push(parse_volume(dest)?);
        }
    }
    // The image's Healthcheck, unless the command line gives one; ["NONE"] disables it.
    let healthcheck = match (&opts.healthcheck, &image.healthcheck) {
        (Some(h), _) => Some(h.clone()),
        (None, Some(h)) if !h.test.is_empty() && h.test[0] != "NONE" => {
            let d = |ns: Option<u64>| ns.map(std::time::Duration::from_nanos);
            Some(
                crate::runtime::health::HealthConfig::new(
                    &h.test,
                    d(h.interval),
                    d(h.timeout),
                    h.retries.filter(|&r| r > 0),
                    d(h.start_period),
                )
                .map_err(|e| {
                    runtime_error(
                        format!("the image's Healthcheck is invalid: {e:#}"),
                        "override it with --health-cmd",
                    )
                })?,
            )
        }
        _ => None,
    };
    for c in opts.cap_add.iter().chain(opts.cap_drop.iter()) {
        parse_cap(c)?;
    }
    Ok(ContainerConfig {
        args,
        env,
        working_dir,
        user: opts
            .user
            .clone()
            .or_else(|| image.user.clone())
            .filter(|u| !u.is_empty()),
        hostname,
        tty: opts.tty,
        interactive: opts.interactive,
        network: opts.network,
        volumes,
        read_only: opts.read_only,
        cap_add: opts.cap_add.clone(),
        cap_drop: opts.cap_drop.clone(),
        privileged: opts.privileged,
        limits: opts.limits.clone(),
        auto_remove: opts.auto_remove,
        restart: opts.restart,
        healthcheck,
    })
}

/// Sets `K=V` in `env`, replacing an earlier K; a bare `K` takes the value of wharf's own
/// environment (as docker's `-e K`), or is skipped when unset there.
pub fn set_env(env: &mut Vec<String>, entry: &str) -> Result<()> {
    let (key, value) = match entry.split_once('=') {
        Some((k, v)) => (k.to_string(), v.to_string()),
        None => match std::env::var(entry) {
            Ok(v) => (entry.to_string(), v),
            Err(_) => return Ok(()),
        },
    };
    if key.is_empty() || key.contains('\0') || value.contains('\0') {
        return Err(runtime_error(
            format!("invalid environment variable {entry:?}"),
            "write -e KEY=VALUE",
        ));
    }
    let prefix = format!("{key}=");
    env.retain(|e| !e.starts_with(&prefix));
    env.push(format!("{key}={value}"));
    Ok(())
}

/// `-v NAME:/path[:ro|rw]`, `-v /host:/path[:ro|rw]`, or `-v /path` (an anonymous volume:
/// a new volume named by 64 random hex digits, as docker makes one; `rm -v` removes it).
pub fn parse_volume(spec: &str) -> Result<Volume> {
    let bad = |why: &str| {
        runtime_error(
            format!("invalid volume {spec:?}: {why}"),
            "write -v NAME:/path, -v /host/path:/path[:ro], or -v /path for an anonymous volume",
        )
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, dest, read_only) = match parts.as_slice() {
        [d] => ("", *d, false),
        [s, d] => (*s, *d, false),
        [s, d, "ro"] => (*s, *d, true),
        [s, d, "rw"] => (*s, *d, false),
        _ => return Err(bad("expected [SOURCE:]DEST[:ro]")),
    };
    if !dest.starts_with('/') || dest == "/" {
        return Err(bad("the destination must be an absolute path other than /"));
    }
    if source.is_empty() {
        if parts.len() > 1 {
            return Err(bad("the source is empty"));
        }
        return Ok(Volume {
            kind: VolumeKind::Named,
            source: crate::volume::anonymous_name(),
            destination: dest.to_string(),
            read_only,
            anonymous: true,
        });
    }
    if source.starts_with('/') {
        return Ok(Volume {
            kind: VolumeKind::Bind,
            source: source.to_string(),
            destination: dest.to_string(),
            read_only,
            anonymous: false,
        });
    }
    crate::volume::validate_name(source)
        .map_err(|_| bad("a volume name is [a-zA-Z0-9][a-zA-Z0-9_.-]+"))?;
    Ok(Volume {
        kind: VolumeKind::Named,
        source: source.to_string(),
        destination: dest.to_string(),
        read_only,
        anonymous: false,
    })
}

fn parse_cap(name: &str) -> Result<Option<caps::Capability>> {
    if name.eq_ignore_ascii_case("all") {
        return Ok(None);
    }
    let canon = caps::to_canonical(name);
    canon.parse::<caps::Capability>().map(Some).map_err(|_| {
        runtime_error(
            format!("unknown capability {name:?}"),
            "use names like NET_ADMIN or CAP_NET_ADMIN (see capabilities(7)), or ALL",
        )
    })
}

/// The capability mask a container keeps: docker's default set, plus `cap_add`, minus
/// `cap_drop`; everything with `privileged`.
pub fn capability_mask(cfg: &ContainerConfig) -> Result<u64> {
    if cfg.privileged {
        return Ok(u64::MAX);
    }
    let mut mask = 0u64;
    for c in DEFAULT_CAPS {
        if let Ok(cap) = c.parse::<caps::Capability>() {
            mask |= cap.bitmask();
        }
    }
    for c in &cfg.cap_add {
        mask |= parse_cap(c)?.map_or(u64::MAX, |c| c.bitmask());
    }
    for c in &cfg.cap_drop {
        mask &= !parse_cap(c)?.map_or(u64::MAX, |c| c.bitmask());
    }
    Ok(mask)
}

/// `64m`, `1g`, `512k`, `1048576` (bytes; suffixes b k m g, any case, binary multiples).
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix('b')
        .filter(|r| !r.is_empty() && r.ends_with(['k', 'm', 'g']))
        .unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('b') => (&t[..t.len() - 1], 1),
        _ => (t, 1),
    };
    num.parse::<f64>()
        .ok()
        .filter(|n| n.is_finite() && *n > 0.0)
        .map(|n| (n * mult as f64) as u64)
        .ok_or_else(|| {
            runtime_error(
                format!("invalid size {s:?}"),
                "write a number with an optional unit: 64m, 1g, 512k",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rc(cmd: Option<&[&str]>, ep: Option<&[&str]>) -> RunConfig {
        RunConfig {
            cmd: cmd.map(|c| c.iter().map(|s| s.to_string()).collect()),
            entrypoint: ep.map(|c| c.iter().map(|s| s.to_string()).collect()),
            env: vec!["A=1".into(), "PATH=/img".into()],
            working_dir: Some("/srv".into()),
            ..RunConfig::default()
        }
    }

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn image_defaults_apply_when_the_command_line_gives_none() {
        let c = build(ID, &rc(Some(&["sh"]), None), &RunOptions::default()).unwrap();
        assert_eq!(c.args, ["sh"]);
        assert_eq!(c.working_dir, "/srv");
        assert_eq!(c.hostname, "0123456789ab");
        assert!(c.env.contains(&"PATH=/img".to_string()));
        assert!(c.env.contains(&"container=wharf".to_string()));
        assert!(c.env.contains(&"HOSTNAME=0123456789ab".to_string()));
        let opts = RunOptions {
            command: vec!["ls".into()],
            env: vec!["A=2".into()],
            working_dir: Some("/tmp".into()),
            ..RunOptions::default()
        };
        let c = build(ID, &rc(Some(&["sh"]), Some(&["/init"])), &opts).unwrap();
        assert_eq!(c.args, ["/init", "ls"]);
        assert_eq!(c.working_dir, "/tmp");
        assert!(c.env.contains(&"A=2".to_string()) && !c.env.contains(&"A=1".to_string()));
    }

    #[test]
    fn no_command_is_a_125() {
        let e = build(ID, &rc(None, None), &RunOptions::default()).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 125);
    }

    #[test]
    fn sizes_volumes_and_caps_parse() {
        assert_eq!(parse_size("64m").unwrap(), 64 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert_eq!(parse_size("2mb").unwrap(), 2 << 20);
        assert!(parse_size("x").is_err());
        let v = parse_volume("/a:/b:ro").unwrap();
        assert!(v.read_only && v.kind == VolumeKind::Bind);
        assert_eq!(parse_volume("data:/d").unwrap().kind, VolumeKind::Named);
        assert!(parse_volume("data:rel").is_err());
        let a = parse_volume("/data").unwrap();
        assert!(a.anonymous && a.kind == VolumeKind::Named && a.destination == "/data");
        assert_eq!(a.source.len(), 64);
        assert_ne!(parse_volume("/data").unwrap().source, a.source);
        assert!(!parse_volume("data:/d").unwrap().anonymous);
        assert!(parse_volume(":/d").is_err() && parse_volume("rel").is_err());
        assert!(parse_volume("/").is_err());
        let mut c = build(ID, &rc(Some(&["sh"]), None), &RunOptions::default()).unwrap();
        let m = capability_mask(&c).unwrap();
        assert_eq!(m.count_ones() as usize, DEFAULT_CAPS.len());
        c.cap_add = vec!["net_admin".into()];
        c.cap_drop = vec!["CAP_CHOWN".into()];
        let m2 = capability_mask(&c).unwrap();
        assert_eq!(
            m2 & caps::Capability::CAP_NET_ADMIN.bitmask(),
            caps::Capability::CAP_NET_ADMIN.bitmask()
        );
        assert_eq!(m2 & caps::Capability::CAP_CHOWN.bitmask(), 0);
        c.cap_add = vec!["bogus".into()];
        assert!(capability_mask(&c).is_err());
    }
}
