//! From `run` options and the image config to a [`ContainerConfig`]: docker's rules for
//! Entrypoint/Cmd, Env, WorkingDir and User, the default environment, volumes, capabilities and
//! the size and CPU syntax of the limits.

use anyhow::Result;

use crate::error::{exit, user};
use crate::image::config::RunConfig;
use crate::model::{ContainerConfig, Device, Limits, Network, Tmpfs, Ulimit, Volume, VolumeKind};

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
    /// `--entrypoint` / a manifest's `entrypoint`: replaces the image's Entrypoint, and (as
    /// docker does) its Cmd too, so the argv is this followed by `command`.
    pub entrypoint: Option<Vec<String>>,
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
    pub restart: crate::model::RestartPolicy,
    /// A health check the monitor runs.
    pub healthcheck: Option<crate::model::HealthConfig>,
    /// `--security-opt` / a manifest's `security`.
    pub security: crate::model::Security,
    /// `--tmpfs PATH[:opts]` and `--mount type=tmpfs`.
    pub tmpfs: Vec<Tmpfs>,
    /// `--shm-size`: bytes of /dev/shm (docker's 64 MiB when None).
    pub shm_size: Option<u64>,
    /// `--ulimit NAME=SOFT[:HARD]`.
    pub ulimits: Vec<Ulimit>,
    /// `--stop-signal` (else the image's StopSignal, else SIGTERM).
    pub stop_signal: Option<String>,
    /// `--stop-timeout` seconds (else 10): `stop` without `-t` waits this long.
    pub stop_timeout: Option<u64>,
    /// `--init`: a reaper as PID 1 that forwards signals.
    pub init: bool,
    /// `--device HOST[:CONTAINER][:PERMS]`.
    pub devices: Vec<String>,
    /// `--log-opt max-size/max-file`.
    pub log_opts: Option<crate::model::LogPolicy>,
    /// `-p`, `--network NAME`, `--network-alias`, `--add-host`, `--dns*`. `-P` is resolved
    /// by [`build`] (`publish_all`).
    pub net: crate::model::NetOptions,
    /// `-P`: every ExposedPort of the image on a free host port.
    pub publish_all: bool,
}

/// `--device /dev/HOST[:/dev/CONTAINER][:rwm]` (docker's syntax); the host path must be a
/// character or block device.
pub fn parse_device(spec: &str) -> Result<Device> {
    let bad = |why: String| {
        runtime_error(
            format!("invalid --device {spec:?}: {why}"),
            "write --device /dev/HOST[:/dev/IN_CONTAINER][:PERMS], PERMS some of r, w, m",
        )
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let perms_ok = |p: &str| !p.is_empty() && p.chars().all(|c| "rwm".contains(c));
    let (host, path, access) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, p] if perms_ok(p) && !p.starts_with('/') => (*h, *h, *p),
        [h, c] => (*h, *c, "rwm"),
        [h, c, p] => (*h, *c, *p),
        _ => return Err(bad("expected HOST[:CONTAINER][:PERMS]".into())),
    };
    if !perms_ok(access) {
        return Err(bad(format!(
            "permissions {access:?} are not some of r, w, m"
        )));
    }
    if !host.starts_with('/') || !path.starts_with('/') || path == "/" {
        return Err(bad("the paths must be absolute".into()));
    }
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(host).map_err(|e| bad(format!("{host}: {e}")))?;
    let kind = if meta.file_type().is_char_device() {
        'c'
    } else if meta.file_type().is_block_device() {
        'b'
    } else {
        return Err(bad(format!("{host} is not a device node")));
    };
    let rdev = meta.rdev();
    Ok(Device {
        host_path: host.to_string(),
        path: path.to_string(),
        access: access.to_string(),
        kind,
        major: libc::major(rdev),
        minor: libc::minor(rdev),
    })
}

const TMPFS_KEYS: [&str; 5] = ["size", "mode", "uid", "gid", "nr_inodes"];
const TMPFS_FLAGS: [&str; 8] = [
    "ro", "rw", "exec", "noexec", "suid", "nosuid", "dev", "nodev",
];

/// `--tmpfs PATH[:OPT,OPT...]` (docker's syntax): `/run`, `/tmp:size=64m,mode=1777,exec`.
pub fn parse_tmpfs(spec: &str) -> Result<Tmpfs> {
    let (dest, opts) = spec.split_once(':').unwrap_or((spec, ""));
    let opts: Vec<String> = opts
        .split(',')
        .filter(|o| !o.is_empty())
        .map(str::to_string)
        .collect();
    tmpfs(spec, dest, opts, "--tmpfs")
}

fn tmpfs(spec: &str, dest: &str, opts: Vec<String>, flag: &str) -> Result<Tmpfs> {
    let bad = |why: String| {
        runtime_error(
            format!("invalid {flag} {spec:?}: {why}"),
            "write --tmpfs /path[:size=64m,mode=1777,exec], or --mount type=tmpfs,target=/path",
        )
    };
    if !dest.starts_with('/') || dest == "/" {
        return Err(bad("the path must be absolute and not /".into()));
    }
    let mut out = Vec::new();
    for o in opts {
        if TMPFS_FLAGS.contains(&o.as_str()) {
            out.push(o);
            continue;
        }
        let Some((k, v)) = o.split_once('=') else {
            return Err(bad(format!("unknown option {o:?}")));
        };
        if !TMPFS_KEYS.contains(&k) || v.is_empty() || v.contains([',', '\0']) {
            return Err(bad(format!("unknown option {o:?}")));
        }
        let v = match k {
            "size" => crate::util::parse_size(v)
                .map_err(|e| bad(e.message(v)))?
                .to_string(),
            "mode" => {
                u32::from_str_radix(v, 8).map_err(|_| bad(format!("mode {v:?} is not octal")))?;
                v.to_string()
            }
            _ => {
                v.parse::<u64>()
                    .map_err(|_| bad(format!("{k} {v:?} is not a number")))?;
                v.to_string()
            }
        };
        out.push(format!("{k}={v}"));
    }
    Ok(Tmpfs {
        destination: dest.to_string(),
        options: out,
    })
}

/// The lines of a docker `--env-file` / `--label-file`: `KEY=VALUE` (the value verbatim,
/// quotes included, as docker reads it) or a bare `KEY`; blank lines and `#` comments are
/// skipped. Errors name the file and line. (A manifest's `env_file` is compose's dotenv
/// format instead, which strips quotes: `manifest::load::parse_env_file`.)
pub fn parse_docker_env_file(path: &std::path::Path, flag: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        runtime_error(
            format!("cannot read {flag} {}: {e}", path.display()),
            "give the path of a readable file of KEY=VALUE lines",
        )
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = line.split_once('=').map_or(line, |(k, _)| k);
        if key.is_empty() || key.contains(char::is_whitespace) || line.contains('\0') {
            return Err(runtime_error(
                format!(
                    "{}:{}: invalid line in {flag}: {key:?} is not a variable name",
                    path.display(),
                    i + 1
                ),
                "write KEY=VALUE (or a bare KEY), one per line; # starts a comment",
            ));
        }
        out.push(line.to_string());
    }
    Ok(out)
}

/// What one `--mount` asks for: a `-v` volume (in `-v`'s syntax) or a tmpfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountArg {
    Volume(String),
    Tmpfs(Tmpfs),
}

/// docker's `--mount type=bind|volume|tmpfs,source=…,target=…[,readonly]
/// [,tmpfs-size=…][,tmpfs-mode=…]` (`src`, `dst`/`destination`, `ro` accepted too).
pub fn parse_mount(spec: &str) -> Result<MountArg> {
    let bad = |why: String| {
        runtime_error(
            format!("invalid --mount {spec:?}: {why}"),
            "write --mount type=bind,source=/host,target=/path[,readonly], \
             type=volume,source=NAME,target=/path, or type=tmpfs,target=/path[,tmpfs-size=64m]",
        )
    };
    let (mut kind, mut source, mut target, mut ro) = ("volume", None, None, false);
    let mut tmpfs_opts = Vec::new();
    for field in spec.split(',').filter(|f| !f.is_empty()) {
        let (k, v) = field.split_once('=').unwrap_or((field, ""));
        match k {
            "type" => {
                kind = match v {
                    "bind" => "bind",
                    "volume" => "volume",
                    "tmpfs" => "tmpfs",
                    _ => return Err(bad(format!("type {v:?} is not bind, volume or tmpfs"))),
                }
            }
            "source" | "src" => source = Some(v.to_string()),
            "target" | "destination" | "dst" => target = Some(v.to_string()),
            "readonly" | "ro" => {
                ro = match v {
                    "" | "1" | "true" => true,
                    "0" | "false" => false,
                    _ => return Err(bad(format!("{k}={v:?} is not true or false"))),
                }
            }
            "tmpfs-size" => tmpfs_opts.push(format!("size={v}")),
            "tmpfs-mode" => tmpfs_opts.push(format!("mode={v}")),
            _ => return Err(bad(format!("unknown field {k:?}"))),
        }
    }
    let Some(target) = target else {
        return Err(bad("target= is missing".into()));
    };
    if target.contains(':') {
        return Err(bad("the target holds a ':'".into()));
    }
    if kind != "tmpfs" && !tmpfs_opts.is_empty() {
        return Err(bad("tmpfs-size and tmpfs-mode are for type=tmpfs".into()));
    }
    let ro_suffix = if ro { ":ro" } else { "" };
    match (kind, source) {
        ("tmpfs", Some(_)) => Err(bad("a tmpfs has no source".into())),
        ("tmpfs", None) => {
            if ro {
                tmpfs_opts.push("ro".into());
            }
            tmpfs(spec, &target, tmpfs_opts, "--mount").map(MountArg::Tmpfs)
        }
        ("bind", Some(src)) if src.starts_with('/') && !src.contains(':') => {
            Ok(MountArg::Volume(format!("{src}:{target}{ro_suffix}")))
        }
        ("bind", _) => Err(bad("a bind mount needs an absolute source=".into())),
        (_, Some(src)) if !src.is_empty() => {
            if src.starts_with('/') {
                return Err(bad(
                    "a volume's source is a volume name; use type=bind for a host path".into(),
                ));
            }
            Ok(MountArg::Volume(format!("{src}:{target}{ro_suffix}")))
        }
        // No source: an anonymous volume.
        _ if ro => Err(bad("an anonymous volume cannot be read-only".into())),
        _ => Ok(MountArg::Volume(target)),
    }
}

/// docker's `--ulimit` names and their resources.
const ULIMITS: [(&str, libc::__rlimit_resource_t); 15] = [
    ("core", libc::RLIMIT_CORE),
    ("cpu", libc::RLIMIT_CPU),
    ("data", libc::RLIMIT_DATA),
    ("fsize", libc::RLIMIT_FSIZE),
    ("locks", libc::RLIMIT_LOCKS),
    ("memlock", libc::RLIMIT_MEMLOCK),
    ("msgqueue", libc::RLIMIT_MSGQUEUE),
    ("nice", libc::RLIMIT_NICE),
    ("nofile", libc::RLIMIT_NOFILE),
    ("nproc", libc::RLIMIT_NPROC),
    ("rss", libc::RLIMIT_RSS),
    ("rtprio", libc::RLIMIT_RTPRIO),
    ("rttime", libc::RLIMIT_RTTIME),
    ("sigpending", libc::RLIMIT_SIGPENDING),
    ("stack", libc::RLIMIT_STACK),
];

impl Ulimit {
    pub fn resource(&self) -> Option<libc::__rlimit_resource_t> {
        ULIMITS
            .iter()
            .find(|(n, _)| *n == self.name)
            .map(|&(_, r)| r)
    }
}

/// `--ulimit NAME=SOFT[:HARD]` (-1 or `unlimited` for no limit), checked against wharf's
/// own hard limit: root without CAP_SYS_RESOURCE cannot raise one, and the container never
/// gets more than wharf has.
pub fn parse_ulimit(spec: &str) -> Result<Ulimit> {
    let bad = |why: String| {
        runtime_error(
            format!("invalid --ulimit {spec:?}: {why}"),
            "write --ulimit NAME=SOFT[:HARD], e.g. nofile=1024:2048 (names: core, cpu, data, \
             fsize, locks, memlock, msgqueue, nice, nofile, nproc, rss, rtprio, rttime, \
             sigpending, stack)",
        )
    };
    let (name, vals) = spec
        .split_once('=')
        .ok_or_else(|| bad("expected NAME=SOFT[:HARD]".into()))?;
    let num = |v: &str| -> Result<u64> {
        match v {
            "-1" | "unlimited" => Ok(u64::MAX),
            _ => v
                .parse::<u64>()
                .map_err(|_| bad(format!("{v:?} is not a number"))),
        }
    };
    let (soft, hard) = match vals.split_once(':') {
        Some((s, h)) => (num(s)?, num(h)?),
        None => (num(vals)?, num(vals)?),
    };
    let u = Ulimit {
        name: name.to_string(),
        soft,
        hard,
    };
    if u.resource().is_none() {
        return Err(bad(format!("unknown limit {name:?}")));
    }
    if soft > hard {
        return Err(bad(format!(
            "the soft limit {soft} is above the hard limit {hard}"
        )));
    }
    check_ulimit(&u)?;
    Ok(u)
}

/// A ulimit never above wharf's own hard limit (flag or manifest), nor soft above hard.
pub fn check_ulimit(u: &Ulimit) -> Result<()> {
    let (name, soft, hard) = (u.name.as_str(), u.soft, u.hard);
    let spec = format!("{name}={soft}:{hard}");
    let Some(res) = u.resource() else {
        return Err(runtime_error(
            format!("invalid ulimit {name:?}"),
            "the names are core, cpu, data, fsize, locks, memlock, msgqueue, nice, nofile, \
             nproc, rss, rtprio, rttime, sigpending, stack",
        ));
    };
    if soft > hard {
        return Err(runtime_error(
            format!("ulimit {spec}: the soft limit is above the hard limit"),
            "give a soft limit at most the hard one",
        ));
    }
    let own = nix::sys::resource::getrlimit(res_of(res)).map(|(_, h)| h);
    if let Ok(own_hard) = own
        && hard > own_hard
    {
        let shown = |v: u64| {
            if v == u64::MAX {
                "unlimited".to_string()
            } else {
                v.to_string()
            }
        };
        return Err(runtime_error(
            format!(
                "ulimit {spec}: the hard limit {} is above wharf's own ({})",
                shown(hard),
                shown(own_hard)
            ),
            &format!(
                "a container cannot get more than the host gives wharf (raising it needs \
                 CAP_SYS_RESOURCE); give at most {name}={}",
                shown(own_hard)
            ),
        ));
    }
    Ok(())
}

/// nix's name for a libc resource number.
fn res_of(r: libc::__rlimit_resource_t) -> nix::sys::resource::Resource {
    use nix::sys::resource::Resource as R;
    match r {
        libc::RLIMIT_CORE => R::RLIMIT_CORE,
        libc::RLIMIT_CPU => R::RLIMIT_CPU,
        libc::RLIMIT_DATA => R::RLIMIT_DATA,
        libc::RLIMIT_FSIZE => R::RLIMIT_FSIZE,
        libc::RLIMIT_LOCKS => R::RLIMIT_LOCKS,
        libc::RLIMIT_MEMLOCK => R::RLIMIT_MEMLOCK,
        libc::RLIMIT_MSGQUEUE => R::RLIMIT_MSGQUEUE,
        libc::RLIMIT_NICE => R::RLIMIT_NICE,
        libc::RLIMIT_NPROC => R::RLIMIT_NPROC,
        libc::RLIMIT_RSS => R::RLIMIT_RSS,
        libc::RLIMIT_RTPRIO => R::RLIMIT_RTPRIO,
        libc::RLIMIT_RTTIME => R::RLIMIT_RTTIME,
        libc::RLIMIT_SIGPENDING => R::RLIMIT_SIGPENDING,
        libc::RLIMIT_STACK => R::RLIMIT_STACK,
        _ => R::RLIMIT_NOFILE,
    }
}

/// The signal `stop` sends a container first: its `--stop-signal` (or the image's
/// StopSignal), else SIGTERM.
pub fn stop_signal(cfg: &ContainerConfig) -> i32 {
    cfg.stop_signal
        .as_deref()
        .and_then(|s| crate::util::parse_signal(s).ok())
        .unwrap_or(libc::SIGTERM)
}

/// How long `stop` without `-t` waits before SIGKILL: `--stop-timeout`, else docker's 10 s.
pub fn stop_timeout(cfg: &ContainerConfig) -> std::time::Duration {
    std::time::Duration::from_secs(cfg.stop_timeout.unwrap_or(10))
}

fn runtime_error(msg: String, hint: &str) -> anyhow::Error {
    user(msg).hint(hint).code(exit::RUNTIME).into()
}

/// Builds the effective config of a new container with id `id`.
pub fn build(id: &str, image: &RunConfig, opts: &RunOptions) -> Result<ContainerConfig> {
    let args = resolve_args(image, opts.entrypoint.as_deref(), &opts.command)?;
    // With the host's network, the host's name (as docker does); else the short id.
    let hostname = opts.hostname.clone().unwrap_or_else(|| {
        if opts.network == crate::model::Network::Host {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| id[..12].to_string())
        } else {
            id[..12].to_string()
        }
    });
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
    check_exec_size(&args, &env)?;
    // Every limit a start would refuse is refused now, at create (run, create, apply).
    crate::runtime::cgroup::check_limits(&opts.limits)?;
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
                crate::model::HealthConfig::new(
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
        network: opts.network.clone(),
        volumes,
        read_only: opts.read_only,
        cap_add: opts.cap_add.clone(),
        cap_drop: opts.cap_drop.clone(),
        privileged: opts.privileged,
        limits: opts.limits.clone(),
        auto_remove: opts.auto_remove,
        restart: opts.restart,
        healthcheck,
        tmpfs: opts.tmpfs.clone(),
        shm_size: opts.shm_size,
        ulimits: {
            for u in &opts.ulimits {
                check_ulimit(u)?;
            }
            opts.ulimits.clone()
        },
        stop_signal: match opts.stop_signal.as_deref().or(image.stop_signal.as_deref()) {
            None => None,
            Some(sig) => {
                let n = crate::util::parse_signal(sig).map_err(|_| {
                    runtime_error(
                        format!("invalid stop signal {sig:?}"),
                        "give --stop-signal a name like TERM, INT, QUIT or a number",
                    )
                })?;
                Some(
                    nix::sys::signal::Signal::try_from(n)
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_else(|_| n.to_string()),
                )
            }
        },
        stop_timeout: opts.stop_timeout,
        init: opts.init,
        devices: opts
            .devices
            .iter()
            .map(|d| parse_device(d))
            .collect::<Result<Vec<_>>>()?,
        log_opts: opts.log_opts,
        security: opts.security.clone(),
        net: build_net(image, opts)?,
    })
}

/// The container's network options: `-P` expanded to the image's ExposedPorts, each checked
/// against the network mode (ports and aliases need a bridge network).
fn build_net(image: &RunConfig, opts: &RunOptions) -> Result<crate::model::NetOptions> {
    use crate::model::{Network, PortSpec};
    let mut net = opts.net.clone();
    if opts.publish_all {
        for key in image.exposed_ports.keys() {
            let spec = PortSpec::parse(key).map_err(|e| {
                runtime_error(
                    format!("the image's ExposedPorts entry {key:?} is invalid: {e}"),
                    "publish its ports one by one with -p",
                )
            })?;
            if !net.ports.iter().any(|p| {
                p.protocol == spec.protocol
                    && (p.container_port..p.container_port + p.range).contains(&spec.container_port)
            }) {
                net.ports.push(spec);
            }
        }
    }
    let bridge = opts.network == Network::Bridge;
    if !bridge && !net.ports.is_empty() {
        return Err(runtime_error(
            format!("--network {} cannot publish ports", opts.network.mode()),
            "publish ports from a bridge network (the default), or drop -p/-P",
        ));
    }
    if !bridge && net.networks.iter().any(|a| !a.aliases.is_empty()) {
        return Err(runtime_error(
            "--network-alias needs a bridge network".into(),
            "give --network NAME of a network made with `wharf network create`",
        ));
    }
    if matches!(opts.network, Network::Container(_))
        && (!net.dns.is_empty() || !net.add_hosts.is_empty())
    {
        return Err(runtime_error(
            "--dns and --add-host cannot be given with --network container:NAME".into(),
            "the container shares the other container's network, names and resolvers",
        ));
    }
    for h in &net.add_hosts {
        crate::model::check_add_host(h).map_err(|e| {
            runtime_error(
                format!("invalid --add-host {h:?}: {e}"),
                "write --add-host NAME:IP",
            )
        })?;
    }
    Ok(net)
}

/// The command and environment fit what `execve` takes: each string shorter than
/// `MAX_VALUE_BYTES` (128 KiB), all together within `MAX_EXEC_BYTES` (2 MiB). Checked when
/// the container is made, so that a start never fails with E2BIG.
fn check_exec_size(args: &[String], env: &[String]) -> Result<()> {
    use crate::model::{MAX_EXEC_BYTES, MAX_VALUE_BYTES};
    let hint = "put large data in a file (a bind mount or a volume) and pass its path";
    for (what, list) in [("a command argument", args), ("an environment entry", env)] {
        if let Some(long) = list.iter().find(|a| a.len() >= MAX_VALUE_BYTES) {
            return Err(runtime_error(
                format!(
                    "{what} is {} bytes long; one must be shorter than {} KiB",
                    long.len(),
                    MAX_VALUE_BYTES >> 10
                ),
                hint,
            ));
        }
    }
    let total: usize = args.iter().chain(env).map(|a| a.len() + 1).sum();
    if total > MAX_EXEC_BYTES {
        return Err(runtime_error(
            format!(
                "the command and environment are {total} bytes together, over the {} MiB the kernel takes",
                MAX_EXEC_BYTES >> 20
            ),
            hint,
        ));
    }
    Ok(())
}

/// docker's Entrypoint/Cmd rule, the one place wharf resolves a container's argv: the
/// entrypoint (given, else the image's) followed by the command (given, else the image's
/// Cmd, unless an entrypoint was given: docker's `--entrypoint` resets Cmd).
pub fn resolve_args(
    image: &RunConfig,
    entrypoint: Option<&[String]>,
    command: &[String],
) -> Result<Vec<String>> {
    let mut args: Vec<String> = match entrypoint {
        Some(ep) => ep.to_vec(),
        None => image.entrypoint.clone().unwrap_or_default(),
    };
    if !command.is_empty() {
        args.extend(command.iter().cloned());
    } else if entrypoint.is_none() {
        args.extend(image.cmd.clone().unwrap_or_default());
    }
    if args.is_empty() {
        return Err(match entrypoint {
            Some(_) => runtime_error(
                "no command specified: the entrypoint is empty and no command was given".into(),
                "give the entrypoint a program (`--entrypoint /bin/sh`), or a command after the image",
            ),
            None => runtime_error(
                "no command specified: the image has no Cmd or Entrypoint and none was given"
                    .into(),
                "give the command after the image: `wharf run IMAGE /bin/sh`, or import the image \
                 with `--change 'CMD [\"/bin/sh\"]'`",
            ),
        });
    }
    Ok(args)
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
    crate::model::check_mount_destination(dest).map_err(|why| bad(&why))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_size_limits() {
        let v = |n: usize| "x".repeat(n);
        assert!(check_exec_size(&[v(128 * 1024 - 1)], &[]).is_ok());
        assert!(check_exec_size(&[v(128 * 1024)], &[]).is_err());
        assert!(check_exec_size(&[], &[format!("K={}", v(128 * 1024))]).is_err());
        let many: Vec<String> = (0..20).map(|_| v(120 * 1024)).collect();
        let e = check_exec_size(&many, &[]).unwrap_err();
        assert!(format!("{e:#}").contains("2 MiB"), "{e:#}");
    }

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
