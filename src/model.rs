//! The model: plain serde types every layer shares, and the enums the store keeps as text.
//!
//! This module sits at the bottom of the crate: it depends on `error` only, so the store,
//! the runtime, the lifecycle layer, the planner and the CLI can all use these types without
//! reaching up. What a container *is* (its [`ContainerConfig`], [`Limits`], [`Volume`]s,
//! [`RestartPolicy`], [`HealthConfig`], [`LogPolicy`]) lives here; what is done with it lives
//! above (`runtime` runs it, `lifecycle` owns its runs, `container` stores it).
//!
//! States and outcomes are enums ([`ContainerState`], [`GenerationOutcome`],
//! [`RetentionKind`]), written to and read from SQLite as their docker-style lowercase names
//! by the one [`text_enum!`] implementation of `ToSql`/`FromSql`.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use anyhow::Result;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{UserError, exit, user};

/// An enum stored as text: its names, `as_str`, `FromStr`, `Display`, serde as the string,
/// and rusqlite's `ToSql`/`FromSql` (an unknown name in a row is a corrupt-store error, never
/// a silent default).
macro_rules! text_enum {
    ($(#[$m:meta])* pub enum $ty:ident { $($(#[$vm:meta])* $v:ident = $s:literal,)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $ty { $($(#[$vm])* $v,)+ }

        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$v,)+];

            pub fn as_str(self) -> &'static str {
                match self { $($ty::$v => $s,)+ }
            }
        }

        impl std::str::FromStr for $ty {
            type Err = UserError;
            fn from_str(s: &str) -> std::result::Result<Self, UserError> {
                match s {
                    $($s => Ok($ty::$v),)+
                    _ => Err(user(format!(concat!("unknown ", stringify!($ty), " {:?}"), s))
                        .hint(concat!("one of: ", $($s, " ",)+))),
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        impl ToSql for $ty {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $ty {
            fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
                let s = v.as_str()?;
                s.parse().map_err(|e: UserError| FromSqlError::Other(Box::new(e)))
            }
        }
    };
}

text_enum! {
    /// A container's state, as docker names it. `created` (recorded, never run, or made by
    /// `create`) → `running` (pid set) → `exited`; with a restart policy `running` →
    /// `restarting` (the monitor waits its backoff; no pid) → `running`; `paused` while its
    /// cgroup is frozen. `removing` and `dead` are docker's and read back if stored.
    pub enum ContainerState {
        Created = "created",
        Running = "running",
        Paused = "paused",
        Restarting = "restarting",
        Removing = "removing",
        Exited = "exited",
        Dead = "dead",
    }
}

impl ContainerState {
    /// A run is in progress, or between two runs of a restart policy: the states in which
    /// the container has an owner that [`crate::lifecycle`] must stop before removing it.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            ContainerState::Running | ContainerState::Paused | ContainerState::Restarting
        )
    }

    /// A new run may be claimed from this state (`start`).
    pub fn is_startable(self) -> bool {
        matches!(self, ContainerState::Created | ContainerState::Exited)
    }
}

text_enum! {
    /// What became of a generation (one create or recreate of a declared container).
    pub enum GenerationOutcome {
        /// Made with `state = "stopped"`: not to be started.
        Created = "created",
        /// Made and started.
        Started = "started",
        /// Its create or start failed (the reason is in the `error` column); also the
        /// provisional outcome between a create and the start that follows it.
        Failed = "failed",
    }
}

text_enum! {
    /// What a retention policy removed (`retention_log.kind`).
    pub enum RetentionKind {
        Image = "image",
        Container = "container",
        Generation = "generation",
        Run = "run",
        Apply = "apply",
    }
}

/// What the container's network namespace is (`--network`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// A new network namespace with only `lo`, up (`--network none`; rows written before
    /// networks existed load as this).
    #[default]
    None,
    /// The host's network namespace.
    Host,
    /// A new network namespace on bridge networks (`NetOptions::networks`, the default
    /// network `wharf` unless named), set up by netavark.
    Bridge,
    /// Another container's network namespace (`--network container:NAME`), by its id.
    Container(String),
}

impl Network {
    /// docker's NetworkMode string: `none`, `host`, `bridge`, `container:<id>`.
    pub fn mode(&self) -> String {
        match self {
            Network::None => "none".into(),
            Network::Host => "host".into(),
            Network::Bridge => "bridge".into(),
            Network::Container(id) => format!("container:{id}"),
        }
    }
}

/// A port's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// One `-p [ip:][hostPort:]containerPort[/proto]` (a range is `range` ports counting up).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortSpec {
    /// The host address to listen on; None: every address (0.0.0.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<std::net::Ipv4Addr>,
    /// None: a free port is picked at each start (`-p 80`, `-P`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    pub container_port: u16,
    /// How many consecutive ports (1 for a single port).
    pub range: u16,
    pub protocol: Protocol,
}

impl PortSpec {
    /// Parses docker's `-p` syntax: `80`, `8080:80`, `127.0.0.1:8080:80`, `127.0.0.1::80`,
    /// `8000-8009:80-89/udp`. The error says what is wrong, without the spec.
    pub fn parse(spec: &str) -> Result<PortSpec, String> {
        let (addr, proto) = match spec.rsplit_once('/') {
            Some((a, "tcp")) => (a, Protocol::Tcp),
            Some((a, "udp")) => (a, Protocol::Udp),
            Some((_, p)) => return Err(format!("unknown protocol {p:?} (tcp or udp)")),
            None => (spec, Protocol::Tcp),
        };
        let parts: Vec<&str> = addr.split(':').collect();
        let (ip, host, cont) = match parts.as_slice() {
            [c] => (None, None, *c),
            [h, c] => (None, Some(*h), *c),
            [ip, h, c] => (Some(*ip), Some(*h).filter(|h| !h.is_empty()), *c),
            _ => return Err("expected [IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]".into()),
        };
        let host_ip = match ip {
            None | Some("") => None,
            Some(ip) => Some(
                ip.parse::<std::net::Ipv4Addr>()
                    .map_err(|_| format!("{ip:?} is not an IPv4 address"))?,
            ),
        };
        let range = |s: &str| -> Result<(u16, u16), String> {
            let num = |n: &str| match n.parse::<u16>() {
                Ok(p) if p > 0 => Ok(p),
                _ => Err(format!("{n:?} is not a port (1-65535)")),
            };
            match s.split_once('-') {
                None => num(s).map(|p| (p, 1)),
                Some((a, b)) => {
                    let (a, b) = (num(a)?, num(b)?);
                    if b < a {
                        return Err(format!("the range {s} ends before it starts"));
                    }
                    Ok((a, b - a + 1))
                }
            }
        };
        let (container_port, n) = range(cont)?;
        let host_port = match host {
            None => None,
            Some(h) => {
                let (p, hn) = range(h)?;
                if hn != n {
                    return Err(format!(
                        "the host range holds {hn} ports and the container range {n}"
                    ));
                }
                Some(p)
            }
        };
        if host_port.is_none() && n > 1 {
            return Err("a container port range needs a host port range of the same size".into());
        }
        Ok(PortSpec {
            host_ip,
            host_port,
            container_port,
            range: n,
            protocol: proto,
        })
    }
}

impl fmt::Display for PortSpec {
    /// Back in `-p` syntax.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = |p: u16| {
            if self.range > 1 {
                format!("{p}-{}", p + (self.range - 1))
            } else {
                p.to_string()
            }
        };
        if let Some(ip) = self.host_ip {
            write!(f, "{ip}:")?;
            if self.host_port.is_none() {
                f.write_str(":")?;
            }
        }
        if let Some(h) = self.host_port {
            write!(f, "{}:", r(h))?;
        }
        f.write_str(&r(self.container_port))?;
        // tcp is the default: left out, as a user writes it.
        match self.protocol {
            Protocol::Tcp => Ok(()),
            p => write!(f, "/{p}"),
        }
    }
}

/// One network a bridge-mode container joins, with the names it answers to there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAttachment {
    pub network: String,
    /// `--network-alias`: more DNS names for the container on this network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// A container's network settings besides its mode: networks, published ports, names and
/// resolvers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetOptions {
    /// Bridge mode: the networks joined, in interface order (eth0 first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetworkAttachment>,
    /// `-p`, and `-P` (the image's ExposedPorts on free host ports).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    /// `--add-host NAME:IP`, as "NAME:IP".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_hosts: Vec<String>,
    /// `--dns`: the container's resolvers (on a DNS network, aardvark-dns forwards to them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<std::net::IpAddr>,
    /// `--dns-search`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    /// `--dns-option`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_options: Vec<String>,
}

impl NetOptions {
    pub fn is_empty(&self) -> bool {
        *self == NetOptions::default()
    }
}

impl ContainerConfig {
    /// The networks as `ps` and `--filter network=` name them: the joined networks in bridge
    /// mode (`wharf` when none is named), else the mode.
    pub fn network_names(&self) -> Vec<String> {
        match &self.network {
            Network::Bridge if self.net.networks.is_empty() => vec!["wharf".into()],
            Network::Bridge => self
                .net
                .networks
                .iter()
                .map(|a| a.network.clone())
                .collect(),
            other => vec![other.mode()],
        }
    }
}

/// Checks `--add-host NAME:IP` (docker's `host-gateway` is not known here).
pub fn check_add_host(s: &str) -> Result<(), String> {
    let Some((name, ip)) = s.split_once(':') else {
        return Err("expected NAME:IP".into());
    };
    if name.is_empty() || name.chars().any(|c| c.is_whitespace()) {
        return Err(format!("{name:?} is not a host name"));
    }
    ip.parse::<std::net::IpAddr>()
        .map(|_| ())
        .map_err(|_| format!("{ip:?} is not an IP address"))
}

/// One `-v` mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// `named` (under `<root>/volumes/<name>/_data`) or `bind` (a host path).
    pub kind: VolumeKind,
    /// The volume name, or the absolute host path.
    pub source: String,
    /// Absolute path inside the container.
    pub destination: String,
    pub read_only: bool,
    /// An anonymous volume (`-v /path`): named by 64 random hex digits; `rm -v` removes it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub anonymous: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeKind {
    Named,
    Bind,
}

/// The effective spec of a container: the image's defaults merged with the command line.
/// Stored as JSON in `containers.config`; `start` runs a container again from it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// argv of the container's init (entrypoint + cmd, resolved).
    pub args: Vec<String>,
    /// `K=V`, complete (PATH, HOSTNAME, TERM, container=wharf, image env, `-e`). HOME is
    /// added at start from the container's /etc/passwd when absent.
    pub env: Vec<String>,
    /// Working directory inside the container ("/" when neither image nor `-w` give one).
    pub working_dir: String,
    /// `uid[:gid]` or `name[:group]`, resolved inside the container at start; None = root.
    #[serde(default)]
    pub user: Option<String>,
    pub hostname: String,
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub interactive: bool,
    #[serde(default)]
    pub network: Network,
    #[serde(default)]
    pub volumes: Vec<Volume>,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default)]
    pub cap_add: Vec<String>,
    #[serde(default)]
    pub cap_drop: Vec<String>,
    #[serde(default)]
    pub privileged: bool,
    #[serde(default)]
    pub limits: Limits,
    /// `--rm`: remove the container when its run ends.
    #[serde(default)]
    pub auto_remove: bool,
    /// `--restart`: what the monitor does when the command exits (rows written before
    /// restart policies existed load as "no").
    #[serde(default)]
    pub restart: RestartPolicy,
    /// `--health-cmd` and friends, or the manifest's `health`: run by the monitor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    /// `--security-opt` / a manifest's `security`: seccomp profile and no_new_privileges.
    #[serde(default, skip_serializing_if = "Security::is_default")]
    pub security: Security,
    /// `--tmpfs`, `--mount type=tmpfs`: tmpfs mounts made at each start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<Tmpfs>,
    /// `--shm-size` in bytes (None: 64 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<u64>,
    /// `--ulimit`: set on the init before exec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<Ulimit>,
    /// The first signal of `stop` (`--stop-signal`, or the image's StopSignal): "SIGUSR1".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// `--stop-timeout` seconds: the grace of `stop` without `-t`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<u64>,
    /// `--init`: PID 1 is wharf's reaper, the command its child (`child::reaper`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
    /// `--device`: host nodes bind-mounted in, allowed by the devices cgroup / BPF filter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Device>,
    /// `--log-opt max-size/max-file`: over retention's log policy, field by field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_opts: Option<LogPolicy>,
    /// Networks, published ports, extra hosts and resolvers.
    #[serde(default, skip_serializing_if = "NetOptions::is_empty")]
    pub net: NetOptions,
}

/// Resource limits of a container. `None` leaves the host default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Bytes of memory (`-m`).
    pub memory: Option<u64>,
    /// Bytes of memory plus swap (`--memory-swap`); -1 is unlimited swap.
    pub memory_swap: Option<i64>,
    /// CPUs as a fraction (`--cpus 0.5`): quota/period with a 100 ms period.
    pub cpus: Option<f64>,
    /// Relative CPU weight (`--cpu-shares`, docker's 2..262144, default 1024).
    pub cpu_shares: Option<u64>,
    /// Maximum number of processes (`--pids-limit`).
    pub pids: Option<i64>,
    /// CPUs the container may run on (`--cpuset-cpus 0-1`).
    pub cpuset_cpus: Option<String>,
}

/// Usage read from a cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub peak_memory: Option<u64>,
    pub cpu_usec: Option<u64>,
    /// The OOM killer killed a process in this cgroup.
    pub oom_killed: bool,
}

/// What the container's monitor does when the container's command exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RestartPolicy {
    /// Never restart.
    #[default]
    No,
    /// Restart after a non-zero exit, at most `max` times when given.
    OnFailure { max: Option<u32> },
    /// Always restart, even after `wharf stop` once wharf starts again.
    Always,
    /// Always restart, unless stopped by the user.
    UnlessStopped,
}

/// Parses docker's `--restart` forms; the error says what to write instead.
pub fn parse_restart(input: &str) -> Result<RestartPolicy, UserError> {
    let err = || {
        UserError::new(format!("invalid restart policy {input:?}")).hint(
            "write \"no\", \"on-failure\", \"on-failure:N\" (N = maximum restarts), \"always\" or \"unless-stopped\"",
        )
    };
    match input {
        "no" => Ok(RestartPolicy::No),
        "always" => Ok(RestartPolicy::Always),
        "unless-stopped" => Ok(RestartPolicy::UnlessStopped),
        "on-failure" => Ok(RestartPolicy::OnFailure { max: None }),
        _ => match input.strip_prefix("on-failure:") {
            Some(n) => n
                .parse::<u32>()
                .map(|n| RestartPolicy::OnFailure { max: Some(n) })
                .map_err(|_| err()),
            None => Err(err()),
        },
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartPolicy::No => f.write_str("no"),
            RestartPolicy::OnFailure { max: None } => f.write_str("on-failure"),
            RestartPolicy::OnFailure { max: Some(n) } => write!(f, "on-failure:{n}"),
            RestartPolicy::Always => f.write_str("always"),
            RestartPolicy::UnlessStopped => f.write_str("unless-stopped"),
        }
    }
}

impl Serialize for RestartPolicy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for RestartPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_restart(&s).map_err(serde::de::Error::custom)
    }
}

/// A container's health check, in docker's `Config.Healthcheck` shape (durations in ns).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    /// `["CMD-SHELL", "cmd"]` (run with `sh -c`) or `["CMD", argv...]`.
    pub test: Vec<String>,
    pub interval: u64,
    pub timeout: u64,
    pub retries: u32,
    pub start_period: u64,
}

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_RETRIES: u32 = 3;

fn bad_health(msg: String, hint: &str) -> anyhow::Error {
    user(msg).hint(hint).code(exit::RUNTIME).into()
}

impl HealthConfig {
    /// From the parts the CLI or a manifest give; `test` is docker's form: a first element
    /// `CMD` or `CMD-SHELL`, or else one string (a shell command) or an argv.
    pub fn new(
        test: &[String],
        interval: Option<Duration>,
        timeout: Option<Duration>,
        retries: Option<u32>,
        start_period: Option<Duration>,
    ) -> Result<HealthConfig> {
        let test: Vec<String> = match test.first().map(String::as_str) {
            None => {
                return Err(bad_health(
                    "the health check command is empty".into(),
                    "give a command, e.g. --health-cmd 'wget -q -O- http://localhost/'",
                ));
            }
            Some("CMD") | Some("CMD-SHELL") => test.to_vec(),
            Some(_) if test.len() == 1 => vec!["CMD-SHELL".into(), test[0].clone()],
            Some(_) => std::iter::once("CMD".to_string())
                .chain(test.iter().cloned())
                .collect(),
        };
        if test.len() < 2
            || test[1..].iter().all(|a| a.trim().is_empty())
            || test[1..].iter().any(|a| a.contains('\0'))
        {
            return Err(bad_health(
                format!("invalid health check command {test:?}"),
                "give a command after CMD or CMD-SHELL, without NUL bytes",
            ));
        }
        // As docker: 0 means the default; anything else is at least 1ms.
        let positive = |d: Option<Duration>, flag: &str, default: Duration| match d {
            None => Ok(default),
            Some(d) if d.is_zero() => Ok(default),
            Some(d) if d >= Duration::from_millis(1) => Ok(d),
            Some(_) => Err(bad_health(
                format!("--health-{flag} must be at least 1ms"),
                "give a duration such as 500ms, 30s or 1m (0 means the default, 30s)",
            )),
        };
        let interval = positive(interval, "interval", DEFAULT_INTERVAL)?;
        let timeout = positive(timeout, "timeout", DEFAULT_TIMEOUT)?;
        let retries = match retries {
            None => DEFAULT_RETRIES,
            Some(0) => {
                return Err(bad_health(
                    "--health-retries must be at least 1".into(),
                    "give the number of consecutive failures that make it unhealthy",
                ));
            }
            Some(n) => n,
        };
        Ok(HealthConfig {
            test,
            interval: interval.as_nanos() as u64,
            timeout: timeout.as_nanos() as u64,
            retries,
            start_period: start_period.unwrap_or_default().as_nanos() as u64,
        })
    }

    /// The argv run inside the container.
    pub fn argv(&self) -> Vec<String> {
        match self.test.first().map(String::as_str) {
            Some("CMD-SHELL") => vec!["/bin/sh".into(), "-c".into(), self.test[1..].join(" ")],
            _ => self.test.get(1..).unwrap_or_default().to_vec(),
        }
    }

    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval)
    }
    pub fn timeout(&self) -> Duration {
        Duration::from_nanos(self.timeout)
    }
    pub fn start_period(&self) -> Duration {
        Duration::from_nanos(self.start_period)
    }
}

/// Bytes per log file before rotation.
pub const MAX_SIZE: u64 = 10 << 20;

/// Log files per container (the current one included) by default.
pub const MAX_FILES: u32 = 2;

/// A container's log rotation (`[retention.logs]`); unset fields take the defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPolicy {
    pub max_size: Option<u64>,
    pub max_files: Option<u32>,
}

impl LogPolicy {
    /// A container's own `--log-opt`s (`self`) over the policy `base` (retention's: the
    /// project's `[retention.logs]`, else the root config's), field by field.
    pub fn over(self, base: LogPolicy) -> LogPolicy {
        LogPolicy {
            max_size: self.max_size.or(base.max_size),
            max_files: self.max_files.or(base.max_files),
        }
    }

    /// docker's `--log-opt max-size=10m` / `max-file=3` (json-file's keys); others refused.
    pub fn parse_opts(opts: &[String]) -> anyhow::Result<Option<LogPolicy>> {
        if opts.is_empty() {
            return Ok(None);
        }
        let bad = |o: &str, why: &str| -> anyhow::Error {
            crate::error::user(format!("invalid --log-opt {o:?}: {why}"))
                .hint("wharf's json-file log takes max-size=SIZE (10m) and max-file=N (N >= 1)")
                .code(crate::error::exit::RUNTIME)
                .into()
        };
        let mut p = LogPolicy::default();
        for o in opts {
            match o.split_once('=') {
                Some(("max-size", v)) => {
                    p.max_size = Some(crate::util::parse_size(v).map_err(|_| bad(o, "not a size"))?)
                }
                Some(("max-file", v)) => {
                    p.max_files = Some(
                        v.parse::<u32>()
                            .ok()
                            .filter(|&n| n >= 1)
                            .ok_or_else(|| bad(o, "not a number of files, at least 1"))?,
                    )
                }
                _ => return Err(bad(o, "unknown option")),
            }
        }
        Ok(Some(p))
    }

    /// (bytes per file, files), defaults filled in; at least 1 byte and 1 file.
    pub fn resolved(self) -> (u64, u32) {
        (
            self.max_size.unwrap_or(MAX_SIZE).max(1),
            self.max_files.unwrap_or(MAX_FILES).max(1),
        )
    }
}

/// The seccomp and privilege options of a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Security {
    #[serde(default)]
    pub seccomp: Seccomp,
    /// `--security-opt no-new-privileges`: set even where wharf would not.
    #[serde(default)]
    pub no_new_privileges: bool,
}

impl Security {
    pub fn is_default(&self) -> bool {
        *self == Security::default()
    }
}

/// Which seccomp filter a container runs under.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Seccomp {
    /// docker's default profile.
    #[default]
    Default,
    /// No filter (`seccomp=unconfined`).
    Unconfined,
    /// A profile of the user's: the file it was read from and its text, read at create.
    Profile { source: String, json: String },
}

// ---- what a container mounts and is limited by, besides volumes ----

/// A host device given to the container (`--device`): its node is bind-mounted at `path`
/// and the devices cgroup (v1) or BPF filter (v2) allows its numbers with `access`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Device {
    #[serde(rename = "PathOnHost")]
    pub host_path: String,
    #[serde(rename = "PathInContainer")]
    pub path: String,
    #[serde(rename = "CgroupPermissions")]
    pub access: String,
    /// 'c' or 'b', and the numbers, read from the host node at create.
    pub kind: char,
    pub major: u32,
    pub minor: u32,
}

/// A tmpfs mounted in the container (`--tmpfs`, `--mount type=tmpfs`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tmpfs {
    /// Absolute path inside the container.
    pub destination: String,
    /// Checked mount options: flags (`ro`, `exec`, `suid`, `dev`, ...) and `size=`,
    /// `mode=`, `uid=`, `gid=`, `nr_inodes=`.
    #[serde(default)]
    pub options: Vec<String>,
}

impl Tmpfs {
    /// Mount flags and data: docker's defaults are `noexec,nosuid,nodev`; the options may
    /// lift `exec` and `suid` (never `dev`: wharf's rootfs is nodev, see ARCHITECTURE).
    pub fn mount_args(&self) -> (libc::c_ulong, String) {
        let mut flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        let mut data = Vec::new();
        for o in &self.options {
            match o.as_str() {
                "ro" => flags |= libc::MS_RDONLY,
                "rw" => flags &= !libc::MS_RDONLY,
                "exec" => flags &= !libc::MS_NOEXEC,
                "noexec" => flags |= libc::MS_NOEXEC,
                "suid" => flags &= !libc::MS_NOSUID,
                "nosuid" => flags |= libc::MS_NOSUID,
                "nodev" | "dev" => {}
                kv => data.push(kv.to_string()),
            }
        }
        (flags, data.join(","))
    }
}

/// A resource limit of the container's processes (`--ulimit`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ulimit {
    /// docker's name: `nofile`, `nproc`, `core`, ...
    #[serde(rename = "Name")]
    pub name: String,
    /// `u64::MAX` is unlimited.
    #[serde(rename = "Soft")]
    pub soft: u64,
    #[serde(rename = "Hard")]
    pub hard: u64,
}

// ---- value rules every layer checks the same way ----

/// The limit of one string value (a command argument, an env entry, a label): it must be
/// shorter than 128 KiB, Linux's `MAX_ARG_STRLEN` (an argument or env entry of that size or
/// more fails `execve` with E2BIG).
pub const MAX_VALUE_BYTES: usize = 128 * 1024;

/// The limit of a container's command (entrypoint + arguments) and environment together:
/// 2 MiB, the kernel's `ARG_MAX` under the default 8 MiB stack limit (a quarter of it).
pub const MAX_EXEC_BYTES: usize = 2 << 20;

/// Where a mount may not go: `/proc` and anything under it (but the files lxcfs-style tools
/// bind over, which runc allows), `/sys` and `/dev` themselves. runc refuses the same: a
/// mount there hides or replaces the kernel interfaces the container's own setup relies on
/// (and over /proc, the masks that keep its host-wide files out of reach). `dest` must be
/// absolute; `.`, `..` and repeated slashes are folded first.
pub fn check_mount_destination(dest: &str) -> Result<(), String> {
    const PROC_ALLOWED: &[&str] = &[
        "/proc/cpuinfo",
        "/proc/diskstats",
        "/proc/meminfo",
        "/proc/stat",
        "/proc/swaps",
        "/proc/uptime",
        "/proc/loadavg",
        "/proc/slabinfo",
        "/proc/net/dev",
        "/proc/sys/kernel/ns_last_pid",
    ];
    let mut parts: Vec<&str> = Vec::new();
    for c in dest.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let clean = format!("/{}", parts.join("/"));
    match parts.as_slice() {
        [] => Err("a mount cannot replace the container's root (/)".into()),
        ["proc", ..] if !PROC_ALLOWED.contains(&clean.as_str()) => Err(format!(
            "{clean} is in /proc, which the container's own procfs owns (runc refuses it too)"
        )),
        ["sys"] | ["dev"] => Err(format!(
            "a mount cannot replace {clean} itself (runc refuses it too); mount below it"
        )),
        _ => Ok(()),
    }
}

/// docker's smallest `-m`.
pub const MIN_MEMORY: u64 = 6 * 1024 * 1024;

/// Parses a kernel CPU list (`0-2,4`, as in `cpuset.cpus`).
pub fn parse_cpu_list(s: &str) -> std::result::Result<BTreeSet<u32>, String> {
    let mut set = BTreeSet::new();
    let s = s.trim();
    if s.is_empty() {
        return Err("empty CPU list".into());
    }
    for part in s.split(',') {
        let part = part.trim();
        let num = |t: &str| {
            t.trim()
                .parse::<u32>()
                .map_err(|_| format!("{t:?} is not a CPU number"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b || b - a > 65_536 {
                    return Err(format!("bad range {part:?}"));
                }
                set.extend(a..=b);
            }
            None => {
                set.insert(num(part)?);
            }
        }
    }
    Ok(set)
}

/// The canonical form of a CPU set: `0-2,4`.
pub fn format_cpu_list(set: &BTreeSet<u32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_specs_read_dockers_syntax_and_print_back() {
        let p = PortSpec::parse("127.0.0.1:8080:80/udp").unwrap();
        assert_eq!(p.host_ip, Some(std::net::Ipv4Addr::LOCALHOST));
        assert_eq!(
            (p.host_port, p.container_port, p.range),
            (Some(8080), 80, 1)
        );
        assert_eq!(p.protocol, Protocol::Udp);
        assert_eq!(p.to_string(), "127.0.0.1:8080:80/udp");
        let r = PortSpec::parse("8000-8009:80-89").unwrap();
        assert_eq!(
            (r.host_port, r.container_port, r.range),
            (Some(8000), 80, 10)
        );
        assert_eq!(r.to_string(), "8000-8009:80-89");
        let e = PortSpec::parse("127.0.0.1::53").unwrap();
        assert_eq!((e.host_port, e.container_port), (None, 53));
        assert_eq!(e.to_string(), "127.0.0.1::53");
        for bad in [
            "",
            "0",
            "70000",
            "80/sctp",
            "a:b:c:d",
            "8000-8001:80",
            "80-81",
            "x.y:1:2",
            "9-8:9-8",
        ] {
            assert!(PortSpec::parse(bad).is_err(), "{bad}");
        }
        assert!(check_add_host("db:10.0.0.2").is_ok());
        assert!(check_add_host("db").is_err() && check_add_host("db:nope").is_err());
    }

    #[test]
    fn test_forms_follow_docker() {
        let one =
            HealthConfig::new(&["true".to_string()], None, None, Some(3), None).expect("valid");
        assert_eq!(one.test, ["CMD-SHELL", "true"]);
        assert_eq!(one.argv(), ["/bin/sh", "-c", "true"]);
        let argv =
            HealthConfig::new(&["ls".into(), "/".into()], None, None, None, None).expect("valid");
        assert_eq!(argv.test, ["CMD", "ls", "/"]);
        assert_eq!(argv.argv(), ["ls", "/"]);
        assert_eq!(argv.interval(), DEFAULT_INTERVAL);
        assert_eq!(argv.retries, DEFAULT_RETRIES);
        assert!(HealthConfig::new(&[], None, None, None, None).is_err());
        assert!(HealthConfig::new(&["CMD".into()], None, None, None, None).is_err());
        assert!(HealthConfig::new(&[" ".into()], None, None, None, None).is_err());
        assert!(HealthConfig::new(&["x".into()], None, None, Some(0), None).is_err());
        assert!(
            HealthConfig::new(
                &["x".into()],
                Some(Duration::from_micros(5)),
                None,
                None,
                None
            )
            .is_err()
        );
        let zero = HealthConfig::new(&["x".into()], Some(Duration::ZERO), None, None, None)
            .expect("0 is the default");
        assert_eq!(zero.interval(), DEFAULT_INTERVAL);
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for s in ContainerState::ALL {
            assert_eq!(s.as_str().parse::<ContainerState>().ok(), Some(*s));
        }
        assert!("runing".parse::<ContainerState>().is_err());
        assert!(ContainerState::Restarting.is_active());
        assert!(!ContainerState::Exited.is_active());
        assert!(ContainerState::Created.is_startable());
    }

    #[test]
    fn an_unknown_state_in_a_row_is_an_error_not_a_default() {
        let db = rusqlite::Connection::open_in_memory().expect("db");
        let ok: ContainerState = db
            .query_row("SELECT ?1", [ContainerState::Exited], |r| r.get(0))
            .expect("read back");
        assert_eq!(ok, ContainerState::Exited);
        let bad: rusqlite::Result<ContainerState> =
            db.query_row("SELECT 'zombie'", [], |r| r.get(0));
        assert!(bad.is_err());
    }
}
