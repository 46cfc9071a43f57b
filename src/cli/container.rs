//! Container verbs: run, create, start, restart, exec, ps, logs, stop, kill, rm, inspect
//! (issues 3 and 4). `ps` lives in `ps.rs`.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::Ctx;
use crate::container;
use crate::error::{exit, user};
use crate::lifecycle::{self, CreateMeta, StartMode, Started};
use crate::manifest::{RestartPolicy, parse_restart, parse_swap};
use crate::model::{HealthConfig, Limits, Network};
use crate::runtime::spec::{self, RunOptions};
use crate::runtime::{exec, logs};

#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Run a command in a new container
    Run(Box<RunArgs>),
    /// Create a new container without starting it; prints its id
    Create(Box<CreateArgs>),
    /// Start created or stopped containers (again, on their kept write layer)
    Start(StartArgs),
    /// Stop, then start containers
    Restart(RestartArgs),
    /// Run a command in a running container
    Exec(ExecArgs),
    /// List containers
    Ps(super::ps::PsArgs),
    /// Manage containers (`wharf container ls`, `wharf container prune`)
    #[command(subcommand)]
    Container(ContainerCommands),
    /// Print a container's logs
    Logs(LogsArgs),
    /// Stop running containers (SIGTERM, then SIGKILL after a timeout)
    Stop(StopArgs),
    /// Send a signal to running containers
    Kill(KillArgs),
    /// Remove containers
    Rm(RmArgs),
    /// Show containers' records as JSON
    Inspect(InspectArgs),
    /// (internal) the monitor of a detached container
    #[command(name = "__monitor", hide = true)]
    Monitor(MonitorArgs),
}

#[derive(Debug, Subcommand)]
pub enum ContainerCommands {
    /// List containers
    #[command(name = "ls", visible_aliases = ["list", "ps"])]
    Ls(super::ps::PsArgs),
    /// Remove stopped containers
    Prune(super::system::PruneArgs),
    /// Changes to a container's files: A added, C changed, D deleted (`wharf diff` is the
    /// manifest diff)
    Diff(super::files::DiffArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run in the background and print the container id
    #[arg(short, long)]
    detach: bool,
    /// The keys that detach the terminal and leave the container running, with -i
    /// (docker's syntax: a comma-separated list of a character or ctrl-<c>)
    #[arg(long, value_name = "KEYS", default_value = "ctrl-p,ctrl-q")]
    detach_keys: String,
    /// Forward the signals wharf gets to the container (without -t); =false leaves them
    /// to wharf (Ctrl-C then detaches)
    #[arg(long, value_name = "BOOL", default_value_t = true, num_args = 0..=1,
          require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    sig_proxy: bool,
    #[command(flatten)]
    create: CreateArgs,
}

/// The options of `run` but `-d`: what `create` takes.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Keep stdin open and forward it
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-terminal inside the container
    #[arg(short, long)]
    tty: bool,
    /// Remove the container when it exits
    #[arg(long)]
    rm: bool,
    /// A name for the container
    #[arg(long)]
    name: Option<String>,
    /// Set a label on the container (KEY=VALUE)
    #[arg(short, long = "label", value_name = "KEY=VALUE")]
    label: Vec<String>,
    /// Set an environment variable (KEY=VALUE, or KEY to copy wharf's)
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Working directory inside the container
    #[arg(short, long = "workdir", value_name = "DIR")]
    workdir: Option<String>,
    /// User to run as: uid[:gid] or name[:group]
    #[arg(short, long)]
    user: Option<String>,
    /// Container hostname (default: the short id)
    #[arg(long)]
    hostname: Option<String>,
    /// Network: bridge (the default network wharf), none (loopback only), host,
    /// container:NAME (share its network), or a network's name (repeatable)
    #[arg(long = "network", visible_alias = "net", value_name = "NETWORK")]
    network: Vec<String>,
    /// Another DNS name of the container on its user networks
    #[arg(
        long = "network-alias",
        visible_alias = "net-alias",
        value_name = "ALIAS"
    )]
    network_alias: Vec<String>,
    /// Publish a container port on the host: [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp]
    #[arg(short = 'p', long = "publish", value_name = "PORTS")]
    publish: Vec<String>,
    /// Publish every port the image exposes on a free host port
    #[arg(short = 'P', long = "publish-all")]
    publish_all: bool,
    /// Add a line to /etc/hosts: NAME:IP
    #[arg(long = "add-host", value_name = "NAME:IP")]
    add_host: Vec<String>,
    /// A DNS server for the container
    #[arg(long = "dns", value_name = "IP")]
    dns: Vec<String>,
    /// A DNS search domain
    #[arg(long = "dns-search", value_name = "DOMAIN")]
    dns_search: Vec<String>,
    /// A resolv.conf option (ndots:2, ...)
    #[arg(long = "dns-option", visible_alias = "dns-opt", value_name = "OPTION")]
    dns_option: Vec<String>,
    /// Mount a volume: NAME:/path, or /host/path:/path[:ro]
    #[arg(short, long = "volume", value_name = "SRC:DEST[:ro]")]
    volume: Vec<String>,
    /// Mount the root filesystem read-only
    #[arg(long)]
    read_only: bool,
    /// Add a capability
    #[arg(long, value_name = "CAP")]
    cap_add: Vec<String>,
    /// Drop a capability
    #[arg(long, value_name = "CAP")]
    cap_drop: Vec<String>,
    /// Give the container every capability and no no_new_privs
    #[arg(long)]
    privileged: bool,
    #[command(flatten)]
    limits: LimitArgs,
    /// Restart policy: no, on-failure[:max-retries], always, unless-stopped
    #[arg(long, value_name = "POLICY", default_value = "no")]
    restart: String,
    /// Command run inside the container to check its health (with sh -c)
    #[arg(long, value_name = "CMD")]
    health_cmd: Option<String>,
    /// Time between health checks (ms|s|m|h) (default 30s)
    #[arg(long, value_name = "DURATION")]
    health_interval: Option<String>,
    /// Maximum time one check may take (default 30s)
    #[arg(long, value_name = "DURATION")]
    health_timeout: Option<String>,
    /// Consecutive failures that make the container unhealthy (default 3)
    #[arg(long, value_name = "N")]
    health_retries: Option<u32>,
    /// Time after start during which failures do not count (default 0s)
    #[arg(long, value_name = "DURATION")]
    health_start_period: Option<String>,
    /// Security options: seccomp=unconfined, seccomp=PROFILE.json (docker's format; the
    /// default is docker's profile), no-new-privileges
    #[arg(long = "security-opt", value_name = "OPT")]
    security_opt: Vec<String>,
    /// Overwrite the image's entrypoint (and, as docker, drop its Cmd); "" for none
    #[arg(long, value_name = "CMD", allow_hyphen_values = true)]
    entrypoint: Option<String>,
    /// Read environment variables from a file (docker's format: KEY=VALUE or KEY lines)
    #[arg(long, value_name = "FILE")]
    env_file: Vec<std::path::PathBuf>,
    /// Read labels from a file (KEY=VALUE lines)
    #[arg(long, value_name = "FILE")]
    label_file: Vec<std::path::PathBuf>,
    /// Write the container id to this file (refused if it exists)
    #[arg(long, value_name = "FILE")]
    cidfile: Option<std::path::PathBuf>,
    /// Mount a tmpfs: /path[:size=64m,mode=1777,exec,...]
    #[arg(long, value_name = "PATH[:OPTS]")]
    tmpfs: Vec<String>,
    /// Size of /dev/shm (default 64m)
    #[arg(long, value_name = "BYTES")]
    shm_size: Option<String>,
    /// Mount: type=bind|volume|tmpfs,source=...,target=...[,readonly]
    #[arg(long, value_name = "SPEC")]
    mount: Vec<String>,
    /// A resource limit: NAME=SOFT[:HARD] (nofile=1024:2048; never above wharf's own hard limit)
    #[arg(long, value_name = "NAME=SOFT[:HARD]")]
    ulimit: Vec<String>,
    /// Signal that stops the container (default: the image's StopSignal, else TERM)
    #[arg(long, value_name = "SIGNAL")]
    stop_signal: Option<String>,
    /// Seconds `stop` waits before SIGKILL when not given -t (default 10)
    #[arg(long, value_name = "SECS")]
    stop_timeout: Option<u64>,
    /// Run a reaper as PID 1 that forwards signals and reaps zombies (the command is PID 2)
    #[arg(long)]
    init: bool,
    /// Give the container a host device: /dev/HOST[:/dev/IN_CONTAINER][:rwm]
    #[arg(long, value_name = "DEVICE")]
    device: Vec<String>,
    /// Log rotation: max-size=SIZE, max-file=N (json-file's)
    #[arg(long, value_name = "OPT=VALUE")]
    log_opt: Vec<String>,
    /// The image: name[:tag], or an id
    image: String,
    /// The command and its arguments (default: the image's)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// The resource limits `run`, `create` and `update` take: one set of flags, one parser.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Memory limit (64m, 1g)
    #[arg(short, long, value_name = "BYTES")]
    memory: Option<String>,
    /// Memory plus swap limit (-1 or unlimited: unlimited swap)
    #[arg(long, value_name = "BYTES", allow_hyphen_values = true)]
    memory_swap: Option<String>,
    /// CPUs (0.5 = half a CPU)
    #[arg(long)]
    cpus: Option<f64>,
    /// Relative CPU weight (default 1024)
    #[arg(long)]
    cpu_shares: Option<u64>,
    /// Maximum number of processes
    #[arg(long)]
    pids_limit: Option<i64>,
    /// CPUs the container may use (0-1, 0,2)
    #[arg(long)]
    cpuset_cpus: Option<String>,
}

impl LimitArgs {
    /// The limits given, parsed and checked; a bad value is a user error with `code` (125
    /// for `run`/`create`, 1 for `update`). Absent flags stay None.
    pub fn parse(&self, code: i32) -> Result<Limits> {
        let bad =
            |msg: String, hint: &str| -> anyhow::Error { user(msg).hint(hint).code(code).into() };
        let size = |flag: &str, s: &str| {
            crate::util::parse_size(s)
                .map_err(|e| bad(format!("invalid {flag}: {}", e.message(s)), e.hint))
        };
        let memory = self
            .memory
            .as_deref()
            .map(|s| size("--memory", s))
            .transpose()?;
        let memory_swap = match self.memory_swap.as_deref() {
            None => None,
            Some(s) => Some(
                parse_swap(s)
                    .map_err(|e| {
                        bad(
                            format!("invalid --memory-swap: {}", e.message),
                            e.hint.as_deref().unwrap_or(crate::util::SIZE_HINT),
                        )
                    })?
                    .as_i64(),
            ),
        };
        if let Some(c) = self.cpus
            && !(c.is_finite() && c > 0.0)
        {
            return Err(bad(
                format!("invalid --cpus {c}"),
                "give a positive number such as 0.5 or 2",
            ));
        }
        Ok(Limits {
            memory,
            memory_swap,
            cpus: self.cpus,
            cpu_shares: self.cpu_shares,
            pids: self.pids_limit,
            cpuset_cpus: self.cpuset_cpus.clone(),
        })
    }
}

/// Sets in `to` each limit `given` has (`update`: what is not given stays as it was).
pub fn overlay_limits(to: &mut Limits, given: &Limits) {
    if given.memory.is_some() {
        to.memory = given.memory;
    }
    if given.memory_swap.is_some() {
        to.memory_swap = given.memory_swap;
    }
    if given.cpus.is_some() {
        to.cpus = given.cpus;
    }
    if given.cpu_shares.is_some() {
        to.cpu_shares = given.cpu_shares;
    }
    if given.pids.is_some() {
        to.pids = given.pids;
    }
    if given.cpuset_cpus.is_some() {
        to.cpuset_cpus = given.cpuset_cpus.clone();
    }
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Attach stdout and stderr, and exit with the container's exit code
    #[arg(short, long)]
    attach: bool,
    /// Attach stdin too (implies -a)
    #[arg(short, long)]
    interactive: bool,
    /// The keys that detach the terminal and leave the container running, with -ai
    /// (docker's syntax: a comma-separated list of a character or ctrl-<c>)
    #[arg(long, value_name = "KEYS", default_value = "ctrl-p,ctrl-q")]
    detach_keys: String,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RestartArgs {
    /// Seconds to wait for the stop before killing (default: the container's
    /// --stop-timeout, else 10)
    #[arg(short, long)]
    time: Option<u64>,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Keep stdin open and forward it
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-terminal inside the container
    #[arg(short, long)]
    tty: bool,
    /// Run in the background (output discarded)
    #[arg(short, long)]
    detach: bool,
    /// Set an environment variable (KEY=VALUE, or KEY to copy wharf's)
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Working directory inside the container (default: the container's)
    #[arg(short, long = "workdir", value_name = "DIR")]
    workdir: Option<String>,
    /// User to run as: uid[:gid] or name[:group] (default: the container's)
    #[arg(short, long)]
    user: Option<String>,
    /// The container: name, id or id prefix
    container: String,
    /// The command and its arguments
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Follow the log until the container stops
    #[arg(short, long)]
    follow: bool,
    /// Show only the last N lines
    #[arg(short = 'n', long)]
    tail: Option<usize>,
    /// Prefix each line with its time
    #[arg(short, long)]
    timestamps: bool,
    container: String,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait before killing (default: the container's --stop-timeout, else 10)
    #[arg(short, long)]
    time: Option<u64>,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal to send (name or number)
    #[arg(short, long, default_value = "KILL")]
    signal: String,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Kill a running container first
    #[arg(short, long)]
    force: bool,
    /// Also remove the container's anonymous volumes (named volumes are kept)
    #[arg(short, long)]
    volumes: bool,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct MonitorArgs {
    id: String,
    #[arg(long)]
    ready_fd: i32,
    /// A connected attach socket (the `run -i` that spawned the monitor).
    #[arg(long)]
    attach_fd: Option<i32>,
    /// ROWSxCOLS: the pty's size from the start.
    #[arg(long, value_parser = parse_tty_size)]
    tty_size: Option<(u16, u16)>,
}

fn parse_tty_size(s: &str) -> Result<(u16, u16), String> {
    s.split_once('x')
        .and_then(|(r, c)| Some((r.parse().ok()?, c.parse().ok()?)))
        .ok_or_else(|| format!("{s:?} is not ROWSxCOLS"))
}

/// `--detach-keys`, parsed (a usage error of `run` exits 125).
pub(crate) fn detach_keys(s: &str) -> Result<Vec<u8>> {
    lifecycle::parse_detach_keys(s).map_err(|e| {
        runtime_usage(
            format!("invalid --detach-keys {s:?}: {e}"),
            "for example --detach-keys ctrl-x,x (docker's syntax)",
        )
    })
}

fn runtime_usage(msg: String, hint: &str) -> anyhow::Error {
    user(msg).hint(hint).code(exit::RUNTIME).into()
}

/// `--network` (default: the state root's `[network] default`, else bridge; bridge for a
/// container that publishes ports, as in manifests), `-p`, `--network-alias`, `--add-host`,
/// `--dns*`, as the run options take them. A named network and `container:NAME` are looked
/// up when the container is created.
fn network_options(ctx: &Ctx, a: &CreateArgs) -> Result<(Network, crate::model::NetOptions)> {
    use crate::model::{NetOptions, NetworkAttachment, PortSpec};
    let given = if a.network.is_empty() {
        let root_default = crate::policy::default_network(&ctx.root)?;
        let publishes = a.publish_all || !a.publish.is_empty();
        if publishes && matches!(root_default.as_str(), "none" | "host") {
            vec!["bridge".to_string()]
        } else {
            vec![root_default]
        }
    } else {
        a.network.clone()
    };
    let mut networks = Vec::new();
    let mut mode = Network::Bridge;
    for n in &given {
        let m = match n.as_str() {
            "none" => Network::None,
            "host" => Network::Host,
            "bridge" | "default" => {
                networks.push(crate::network::DEFAULT_NETWORK.to_string());
                Network::Bridge
            }
            c if c.starts_with("container:") => {
                let target = &c["container:".len()..];
                if target.is_empty() {
                    return Err(runtime_usage(
                        "--network container: names no container".into(),
                        "write --network container:NAME",
                    ));
                }
                Network::Container(target.to_string())
            }
            name => {
                networks.push(name.to_string());
                Network::Bridge
            }
        };
        if m != Network::Bridge && given.len() > 1 {
            return Err(runtime_usage(
                format!("--network {n} cannot be combined with other networks"),
                "give it alone, or join several bridge networks by name",
            ));
        }
        mode = m;
    }
    let ports = a
        .publish
        .iter()
        .map(|p| {
            PortSpec::parse(p).map_err(|e| {
                runtime_usage(
                    format!("invalid -p {p:?}: {e}"),
                    "write -p [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp], e.g. -p 8080:80",
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let dns = a
        .dns
        .iter()
        .map(|d| {
            d.parse().map_err(|_| {
                runtime_usage(
                    format!("invalid --dns {d:?}"),
                    "give an IP address such as 10.0.0.53",
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // The default network alone is named by the mode (old rows and docker's `bridge`).
    let networks: Vec<NetworkAttachment> = if networks.len() == 1
        && networks[0] == crate::network::DEFAULT_NETWORK
    {
        if !a.network_alias.is_empty() {
            return Err(runtime_usage(
                "--network-alias needs a user network".into(),
                "the default network has no DNS: create one (`wharf network create NAME`) and give --network NAME",
            ));
        }
        Vec::new()
    } else {
        networks
            .into_iter()
            .map(|n| NetworkAttachment {
                network: n,
                aliases: a.network_alias.clone(),
            })
            .collect()
    };
    if mode != Network::Bridge && !a.network_alias.is_empty() {
        return Err(runtime_usage(
            "--network-alias needs a user network".into(),
            "give --network NAME of a network made with `wharf network create`",
        ));
    }
    Ok((
        mode,
        NetOptions {
            networks,
            ports,
            add_hosts: a.add_host.clone(),
            dns,
            dns_search: a.dns_search.clone(),
            dns_options: a.dns_option.clone(),
        },
    ))
}

/// `--label-file`s, then `--label`s (a later one wins).
fn labels(a: &CreateArgs) -> Result<BTreeMap<String, String>> {
    let mut all = Vec::new();
    for f in &a.label_file {
        all.extend(spec::parse_docker_env_file(f, "--label-file")?);
    }
    all.extend(a.label.iter().cloned());
    parse_labels(&all)
}

/// `--cidfile`: refused when it exists (docker's rule: another container may own it).
fn check_cidfile(a: &CreateArgs) -> Result<()> {
    if let Some(p) = &a.cidfile
        && p.exists()
    {
        return Err(runtime_usage(
            format!("the container id file {} exists", p.display()),
            "make sure no other container uses it, then remove it, or give another --cidfile",
        ));
    }
    Ok(())
}

/// Writes the id to `--cidfile`.
fn write_cidfile(a: &CreateArgs, id: &str) -> Result<()> {
    if let Some(p) = &a.cidfile {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(p)
            .map_err(|e| {
                runtime_usage(
                    format!("cannot create the container id file {}: {e}", p.display()),
                    "give --cidfile a new file in an existing directory",
                )
            })?;
        f.write_all(id.as_bytes())?;
    }
    Ok(())
}

fn options(ctx: &Ctx, a: &CreateArgs) -> Result<RunOptions> {
    let (network, net) = network_options(ctx, a)?;
    let limits = a.limits.parse(exit::RUNTIME)?;
    let restart = parse_restart(&a.restart).map_err(|e| {
        runtime_usage(
            format!("invalid --restart {:?}", a.restart),
            e.hint
                .as_deref()
                .unwrap_or("give no, on-failure[:N], always or unless-stopped"),
        )
    })?;
    if a.rm && restart != RestartPolicy::No {
        return Err(runtime_usage(
            format!("--rm and --restart {restart} conflict"),
            "a container removed when it exits cannot be restarted: drop one of them",
        ));
    }
    // docker: the env files first, then -e (a later value wins).
    let mut env = Vec::new();
    for f in &a.env_file {
        env.extend(spec::parse_docker_env_file(f, "--env-file")?);
    }
    env.extend(a.env.iter().cloned());
    let mut volumes = a.volume.clone();
    let mut tmpfs = a
        .tmpfs
        .iter()
        .map(|t| spec::parse_tmpfs(t))
        .collect::<Result<Vec<_>>>()?;
    for m in &a.mount {
        match spec::parse_mount(m)? {
            spec::MountArg::Volume(v) => volumes.push(v),
            spec::MountArg::Tmpfs(t) => tmpfs.push(t),
        }
    }
    if let Some(sig) = &a.stop_signal {
        crate::util::parse_signal(sig).map_err(|_| {
            runtime_usage(
                format!("invalid --stop-signal {sig:?}"),
                "give a name like TERM, INT, QUIT, USR1 or a number",
            )
        })?;
    }
    Ok(RunOptions {
        entrypoint: a.entrypoint.as_ref().map(|e| {
            if e.is_empty() {
                Vec::new()
            } else {
                vec![e.clone()]
            }
        }),
        tmpfs,
        shm_size: a
            .shm_size
            .as_deref()
            .map(|s| size_flag("--shm-size", s))
            .transpose()?,
        ulimits: a
            .ulimit
            .iter()
            .map(|u| spec::parse_ulimit(u))
            .collect::<Result<Vec<_>>>()?,
        stop_signal: a.stop_signal.clone(),
        stop_timeout: a.stop_timeout,
        init: a.init,
        devices: a.device.clone(),
        log_opts: crate::model::LogPolicy::parse_opts(&a.log_opt)?,
        command: a.command.clone(),
        env,
        working_dir: a.workdir.clone(),
        user: a.user.clone(),
        hostname: a.hostname.clone(),
        tty: a.tty,
        interactive: a.interactive,
        network,
        net,
        publish_all: a.publish_all,
        volumes,
        read_only: a.read_only,
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        privileged: a.privileged,
        limits,
        auto_remove: a.rm,
        restart,
        healthcheck: healthcheck(a)?,
        security: crate::model::Security::from_opts(&a.security_opt)?,
    })
}

/// A size flag (`-m 64m`, `--memory 1GiB`) through the one size parser, naming the flag.
fn size_flag(flag: &str, s: &str) -> Result<u64> {
    crate::util::parse_size(s)
        .map_err(|e| runtime_usage(format!("invalid {flag}: {}", e.message(s)), e.hint))
}

/// `--health-*`: a check only with `--health-cmd`; the other flags without it are a mistake.
fn healthcheck(a: &CreateArgs) -> Result<Option<HealthConfig>> {
    let duration = |flag: &str, v: &Option<String>| -> Result<Option<Duration>> {
        v.as_deref()
            .map(|s| {
                crate::manifest::parse_duration(s).map_err(|e| {
                    runtime_usage(
                        format!("invalid --health-{flag} {s:?}: {}", e.message),
                        "give a duration such as 500ms, 30s or 1m30s",
                    )
                })
            })
            .transpose()
    };
    let interval = duration("interval", &a.health_interval)?;
    let timeout = duration("timeout", &a.health_timeout)?;
    let start_period = duration("start-period", &a.health_start_period)?;
    let Some(cmd) = &a.health_cmd else {
        if interval.is_some()
            || timeout.is_some()
            || start_period.is_some()
            || a.health_retries.is_some()
        {
            return Err(runtime_usage(
                "--health-interval, --health-timeout, --health-retries and \
                 --health-start-period need --health-cmd"
                    .into(),
                "give the check with --health-cmd CMD",
            ));
        }
        return Ok(None);
    };
    HealthConfig::new(
        std::slice::from_ref(cmd),
        interval,
        timeout,
        a.health_retries,
        start_period,
    )
    .map(Some)
}

/// `--label KEY=VALUE` (or `KEY`, an empty value, as docker takes it).
pub(crate) fn parse_labels(args: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for a in args {
        let (k, v) = a.split_once('=').unwrap_or((a.as_str(), ""));
        if k.is_empty() {
            return Err(runtime_usage(
                format!("invalid --label {a:?}: the key is empty"),
                "write labels as KEY=VALUE",
            ));
        }
        if v.len() >= crate::model::MAX_VALUE_BYTES {
            return Err(runtime_usage(
                format!(
                    "--label {k}: the value is {} bytes long; one must be shorter than 128 KiB",
                    v.len()
                ),
                "keep labels short; put data in a file",
            ));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// Prints the outcome of a verb done to several containers at once (side by side): each name
/// that succeeded, each error; the last error's code is returned.
fn report_all(names: &[String], results: Vec<Result<container::Record>>) -> i32 {
    let mut code = exit::OK;
    for (n, r) in names.iter().zip(results) {
        match r {
            Ok(_) => println!("{n}"),
            Err(e) => {
                eprintln!("{}", crate::error::render(&e));
                code = crate::error::exit_code(&e);
            }
        }
    }
    code
}

/// `-t SECS`; None: each container's `--stop-timeout` (else 10 s).
fn grace(t: Option<u64>) -> Option<Duration> {
    t.map(Duration::from_secs)
}

/// Runs `f` on each container argument; errors are printed, and the last one's code returned.
pub(crate) fn each(names: &[String], mut f: impl FnMut(&str) -> Result<()>) -> Result<i32> {
    let mut code = exit::OK;
    for n in names {
        if let Err(e) = f(n) {
            eprintln!("{}", crate::error::render(&e));
            code = crate::error::exit_code(&e);
        }
    }
    Ok(code)
}

pub fn run(ctx: &Ctx, cmd: Commands) -> Result<i32> {
    match cmd {
        Commands::Run(r) => {
            let (detach, a) = (r.detach, &r.create);
            // Every failure of `run` before the command runs is wharf's: 125.
            let opts = options(ctx, a)?;
            let detach_keys = detach_keys(&r.detach_keys)?;
            check_cidfile(a)?;
            let store = ctx.store().map_err(as_runtime)?;
            let meta = CreateMeta {
                labels: labels(a)?,
                start: true,
                ..Default::default()
            };
            let rec = lifecycle::create(&store, &a.image, a.name.as_deref(), &opts, &meta)?;
            if let Err(e) = write_cidfile(a, &rec.id) {
                let _ = lifecycle::remove(&store, &rec.id, true, false);
                return Err(e);
            }
            let mode = if detach {
                StartMode::Detached
            } else {
                StartMode::Attached(lifecycle::Attaching {
                    stdin: rec.config.interactive,
                    detach_keys,
                    sig_proxy: r.sig_proxy,
                })
            };
            match lifecycle::start_record(&store, &rec, mode).map_err(as_runtime)? {
                Started::Exited(code) => Ok(code),
                _ => {
                    println!("{}", rec.id);
                    Ok(exit::OK)
                }
            }
        }
        Commands::Create(a) => {
            let opts = options(ctx, &a)?;
            check_cidfile(&a)?;
            let store = ctx.store().map_err(as_runtime)?;
            let meta = CreateMeta {
                labels: labels(&a)?,
                ..Default::default()
            };
            let rec = lifecycle::create(&store, &a.image, a.name.as_deref(), &opts, &meta)?;
            if let Err(e) = write_cidfile(&a, &rec.id) {
                let _ = lifecycle::remove(&store, &rec.id, true, false);
                return Err(e);
            }
            println!("{}", rec.id);
            Ok(exit::OK)
        }
        Commands::Start(a) => {
            let store = ctx.store()?;
            if a.attach || a.interactive {
                if a.containers.len() > 1 {
                    return Err(
                        user("cannot start and attach more than one container at once")
                            .hint("start them without -a, or one at a time")
                            .into(),
                    );
                }
                let mode = StartMode::Attached(lifecycle::Attaching {
                    stdin: a.interactive,
                    detach_keys: detach_keys(&a.detach_keys)?,
                    sig_proxy: true,
                });
                return match lifecycle::start(&store, &a.containers[0], mode)? {
                    Started::Exited(code) => Ok(code),
                    _ => Ok(exit::OK),
                };
            }
            // The `always` containers whose monitor died come back with any start.
            super::apply::revive(&store);
            each(&a.containers, |n| {
                lifecycle::start(&store, n, StartMode::Detached)?;
                println!("{n}");
                Ok(())
            })
        }
        Commands::Restart(a) => {
            let store = ctx.store()?;
            let res = lifecycle::restart_all(&store, &a.containers, grace(a.time));
            Ok(report_all(&a.containers, res))
        }
        Commands::Exec(a) => {
            // First: run from a sealed copy of the binary, so that no process this puts into
            // the container can reach the host's wharf binary (CVE-2019-5736).
            crate::runtime::sys::reexec_sealed().map_err(|e| {
                anyhow::Error::new(
                    user(format!("cannot run from a sealed copy of wharf: {e}"))
                        .hint("wharf exec needs memfd_create (Linux >= 3.17) and /proc")
                        .code(exit::RUNTIME),
                )
            })?;
            let store = ctx.store().map_err(as_runtime)?;
            let opts = exec::ExecOptions {
                command: a.command,
                interactive: a.interactive,
                tty: a.tty,
                detach: a.detach,
                env: a.env,
                working_dir: a.workdir,
                user: a.user,
            };
            lifecycle::exec(&store, &a.container, &opts).map_err(as_runtime)
        }
        Commands::Ps(a) | Commands::Container(ContainerCommands::Ls(a)) => super::ps::run(ctx, a),
        Commands::Container(ContainerCommands::Prune(a)) => super::system::container_prune(ctx, &a),
        Commands::Container(ContainerCommands::Diff(a)) => super::files::diff(ctx, &a),
        Commands::Logs(a) => {
            let store = ctx.store()?;
            let rec = container::find(&store, &a.container)?;
            let path = container::log_path(&store, &rec.id);
            let opts = logs::ReadOptions {
                tail: a.tail,
                timestamps: a.timestamps,
            };
            let offset = logs::print(&path, opts)?;
            if a.follow {
                logs::follow(&path, offset, opts, Duration::from_millis(100), || {
                    container::find(&store, &rec.id)
                        .map(|r| r.state.is_active() && r.live_monitor().is_some())
                        .unwrap_or(false)
                })?;
            }
            Ok(exit::OK)
        }
        Commands::Stop(a) => {
            let store = ctx.store()?;
            let res = lifecycle::stop_all(&store, &a.containers, grace(a.time));
            Ok(report_all(&a.containers, res))
        }
        Commands::Kill(a) => {
            let store = ctx.store()?;
            let sig = crate::util::parse_signal(&a.signal)?;
            each(&a.containers, |n| {
                lifecycle::kill(&store, n, sig)?;
                println!("{n}");
                Ok(())
            })
        }
        Commands::Rm(a) => {
            let store = ctx.store()?;
            let res = lifecycle::remove_all(&store, &a.containers, a.force, a.volumes);
            Ok(report_all(&a.containers, res))
        }
        Commands::Inspect(a) => {
            let store = ctx.store()?;
            let mut out = Vec::new();
            let code = each(&a.containers, |n| {
                out.push(lifecycle::inspect(&store, n)?);
                Ok(())
            })?;
            let text = serde_json::to_string_pretty(&out)?;
            let _ = writeln!(std::io::stdout(), "{text}");
            Ok(code)
        }
        Commands::Monitor(a) => {
            let store = ctx.store()?;
            lifecycle::monitor::detached_main(&store, &a.id, a.ready_fd, a.attach_fd, a.tty_size)
        }
    }
}

/// An error of wharf's own during `run` exits 125 (docker's rule), keeping any user error's
/// message, hint, and a more specific code (126, 127).
fn as_runtime(e: anyhow::Error) -> anyhow::Error {
    match crate::error::find_user_error(&e) {
        Some(u) if u.code != exit::ERROR => e,
        Some(u) => {
            let u = u.clone().code(exit::RUNTIME);
            anyhow::Error::new(u)
        }
        None => anyhow::Error::new(user(format!("{e:#}")).code(exit::RUNTIME)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Create {
        #[command(flatten)]
        a: CreateArgs,
    }

    fn opts(args: &[&str]) -> Result<RunOptions> {
        let c = Create::try_parse_from(["create"].iter().chain(args).chain(&["img"]))?;
        let ctx = Ctx {
            root: std::path::PathBuf::from("/nonexistent-wharf-root"),
            format: super::super::Format::Table,
            debug: false,
        };
        options(&ctx, &c.a)
    }

    #[test]
    fn network_flags_give_the_mode_and_the_networks() {
        let o = opts(&["-p", "8080:80", "-p", "127.0.0.1::53/udp"]).unwrap();
        assert_eq!(o.network, Network::Bridge);
        assert!(
            o.net.networks.is_empty(),
            "the default network is the mode's"
        );
        assert_eq!(o.net.ports.len(), 2);
        let o = opts(&["--network", "backend", "--network-alias", "db"]).unwrap();
        assert_eq!(o.net.networks[0].network, "backend");
        assert_eq!(o.net.networks[0].aliases, ["db"]);
        let o = opts(&["--network", "container:web"]).unwrap();
        assert_eq!(o.network, Network::Container("web".into()));
        for bad in [
            &["-p", "99999:80"][..],
            &["--network", "host", "--network", "backend"],
            &["--network-alias", "x"],
            &["--dns", "not-an-ip"],
        ] {
            let e = opts(bad).unwrap_err();
            assert_eq!(crate::error::exit_code(&e), exit::RUNTIME, "{bad:?}: {e:#}");
        }
    }

    #[test]
    fn size_flags_take_the_manifest_forms_and_name_the_flag() {
        let o = opts(&["-m", "64MiB", "--memory-swap", "1GiB"]).unwrap();
        assert_eq!(o.limits.memory, Some(64 << 20));
        assert_eq!(o.limits.memory_swap, Some(1 << 30));
        let o = opts(&["--memory", "512m", "--memory-swap", "unlimited"]).unwrap();
        assert_eq!(o.limits.memory, Some(512 << 20));
        assert_eq!(o.limits.memory_swap, Some(-1));
        assert_eq!(
            opts(&["--memory-swap", "-1"]).unwrap().limits.memory_swap,
            Some(-1)
        );
        let e = opts(&["-m", "64Q"]).unwrap_err();
        let u = crate::error::find_user_error(&e).unwrap();
        assert!(
            u.message.contains("--memory") && u.message.contains("\"64Q\""),
            "{}",
            u.message
        );
        assert!(u.hint.as_deref().unwrap().contains("64MiB"));
        assert_eq!(u.code, exit::RUNTIME);
        let e = opts(&["--memory-swap", "lots"]).unwrap_err();
        let u = crate::error::find_user_error(&e).unwrap();
        assert!(u.message.contains("--memory-swap"), "{}", u.message);
        assert!(u.hint.as_deref().unwrap().contains("unlimited"));
    }
}
