//! The lifecycle layer: the one place that creates, starts, stops and removes containers.
//! Every verb (`run`, `create`, `start`, `restart`, `stop`, `kill`, `rm`), `apply`, `watch`,
//! prune and retention go through it. Below it, [`crate::runtime`] is mechanism (namespaces,
//! mounts, cgroups, exec) and [`crate::container`] is the records.
//!
//! **One owner per run.** `containers.monitor_pid` + `monitor_start` name the one process
//! that owns a container's run, and they change only by compare-and-swap in the store: a start
//! claims a `created`/`exited` container that has no owner, or that it owns already because it
//! created it to start it ([`container::claim`]); the detached monitor it spawns takes the
//! claim over from it ([`container::hand_over`]); a foreground run is its own monitor. Of two
//! starters, in any processes, one wins and the other is told the container is running.
//!
//! **Stops go side by side.** [`stop_all`] asks every container to stop at once, waits for
//! all of them in one loop, and SIGKILLs what is left when the grace period is over, so
//! stopping 100 containers costs one grace period, not 100.
//!
//! - [`monitor`]: the process that owns the runs of a container (stdio, signals, health
//!   probes, restarts, recording).
//! - [`recover`]: crash recovery (runs whose owner died), called by verbs that change state.
//! - [`inspect`]: docker's inspect JSON (a read).
//! - [`control`]: `pause`/`unpause` (the freezer), `top`, `stats`, `update`, `rename`, `wait`.
//! - [`files`]: a container's files from outside: `container diff`, `export`, `cp`.
//! - [`revive`]: `always`/`unless-stopped` containers whose monitor died, started again by
//!   the next apply, watch or `start` (there is no daemon to do it at boot).

mod attach;
pub mod control;
pub mod files;
mod inspect;
pub mod monitor;
mod recover;
mod revive;

pub use crate::runtime::attach::parse_detach_keys;
pub use attach::{AttachOptions, attach};
pub use inspect::inspect;
pub use recover::{finish_run, recover};
pub use revive::revive;

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rusqlite::OptionalExtension;

use crate::container::{self, NewContainer, Owner, Record};
use crate::error::{exit, user};
use crate::image;
use crate::model::{ContainerState, VolumeKind};
use crate::runtime::logs;
use crate::runtime::spec::{self, RunOptions};
use crate::runtime::sys;
use crate::store::{Store, random_hex};

use monitor::Attach;

/// What a container is recorded with besides its run options: labels, and for containers
/// made by `apply`, the owning project and the manifest spec.
#[derive(Debug, Default)]
pub struct CreateMeta<'a> {
    pub labels: BTreeMap<String, String>,
    pub project: Option<&'a str>,
    pub spec_hash: Option<&'a str>,
    pub spec: Option<&'a str>,
    /// The reference to record, when the image is given by id (`sha256:…`, as apply and
    /// rollback resolve it) but the container should show the reference it was declared with.
    pub image_ref: Option<&'a str>,
    /// The caller starts the container at once (`run`, apply): it is recorded as the owner of
    /// the run to come, so a crash in between reads as a failed run. Otherwise the container
    /// is created with no owner (`create`, a manifest's `state = "stopped"`).
    pub start: bool,
}

fn as_runtime(e: anyhow::Error) -> anyhow::Error {
    match crate::error::find_user_error(&e) {
        Some(u) => anyhow::Error::new(u.clone().code(exit::RUNTIME)),
        None => e,
    }
}

/// Records a new container from `image_ref` and `opts` (state `created`).
pub fn create(
    store: &Store,
    image_ref: &str,
    name: Option<&str>,
    opts: &RunOptions,
    meta: &CreateMeta<'_>,
) -> Result<Record> {
    // Hot path: closing the last connection checkpoints the WAL (two fsyncs and an unlink,
    // 10-20 ms here). Leave that to SQLite's auto-checkpoint and to other verbs.
    let _ = store.db().set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    );
    recover(store)?;
    let image_id = image::resolve(store, image_ref).map_err(as_runtime)?;
    let image_cfg = image::load_config(store, &image_id)?;
    let id = random_hex(32);
    let mut cfg = spec::build(&id, &image_cfg.config, opts)?;
    resolve_network(store, &mut cfg).map_err(as_runtime)?;
    // The image's Labels, under the container's own (docker merges them at create too);
    // `wharf.*` labels are wharf's own, never an image's.
    let mut labels: BTreeMap<String, String> = image_cfg
        .config
        .labels
        .iter()
        .filter(|(k, _)| !k.starts_with("wharf."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.extend(meta.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    let name = match name {
        Some(n) => {
            crate::names::validate(n).map_err(|e| anyhow::Error::new(e.code(exit::RUNTIME)))?;
            n.to_string()
        }
        None => container::generate_name(store)?,
    };
    container::insert(
        store,
        &NewContainer {
            id: &id,
            name: &name,
            image_id: &image_id,
            image_ref: meta.image_ref.unwrap_or(image_ref),
            config: &cfg,
            owner: if meta.start { Owner::me() } else { None },
            labels: &labels,
            project: meta.project,
            spec_hash: meta.spec_hash,
            spec: meta.spec,
        },
    )
    .map_err(as_runtime)?;
    container::find(store, &id)
}

/// Checks the container's networks exist (the default network is made on first use) and
/// names a shared network's container by its id, as docker records it.
fn resolve_network(store: &Store, cfg: &mut crate::model::ContainerConfig) -> Result<()> {
    match &cfg.network {
        crate::model::Network::Container(target) => {
            let rec = container::find(store, target)?;
            if matches!(rec.config.network, crate::model::Network::Container(_)) {
                return Err(user(format!(
                    "container {} shares another container's network itself",
                    rec.name
                ))
                .hint("share the network of the container that owns it")
                .into());
            }
            cfg.network = crate::model::Network::Container(rec.id);
        }
        crate::model::Network::Bridge => {
            for a in &cfg.net.networks {
                let n = crate::network::find(store, &a.network)?;
                if !n.dns && !a.aliases.is_empty() {
                    return Err(user(format!(
                        "the network {} has no DNS for --network-alias",
                        n.name
                    ))
                    .hint("give aliases on a network made with `wharf network create`")
                    .into());
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Resolves what the runtime needs to launch `rec` from the store: its image's layer
/// directories, its volumes' data directories (a named volume is created on first use), and
/// its directories, and its network: the namespace of `net` (the monitor's sandbox on bridge
/// networks) or of the container it shares (`container:NAME`), /etc/hosts and resolv.conf.
/// A bind mount's source must exist.
pub fn prepare<'a>(
    store: &Store,
    rec: &'a Record,
    net: Option<&crate::network::Sandbox>,
) -> Result<crate::runtime::launch::Prepared<'a>> {
    let runtime_err = |msg: String, hint: &str| -> anyhow::Error {
        user(msg).hint(hint).code(exit::RUNTIME).into()
    };
    let layers = image::layer_dirs(store, &rec.image_id)?;
    if layers.is_empty() {
        return Err(runtime_err(
            format!("the image {} has no layers", image::short(&rec.image_id)),
            "re-import the image",
        ));
    }
    let mut volumes = Vec::with_capacity(rec.config.volumes.len());
    for v in &rec.config.volumes {
        let src = match v.kind {
            VolumeKind::Named => crate::volume::ensure(store, &v.source, v.anonymous)?,
            VolumeKind::Bind => {
                let p = std::path::PathBuf::from(&v.source);
                if !p.exists() {
                    return Err(runtime_err(
                        format!("the bind mount source {} does not exist", v.source),
                        "create it first, or use a named volume (-v NAME:/path)",
                    ));
                }
                p
            }
        };
        volumes.push((src, v.destination.clone(), v.read_only));
    }
    let (netns, state, hostname) = match (&rec.config.network, net) {
        (crate::model::Network::Container(target), _) => {
            let (f, st, host) = crate::network::sandbox::join_container(store, target)?;
            (Some(f), st, host)
        }
        (_, Some(sb)) => (
            Some(
                std::fs::File::open(&sb.state.netns)
                    .with_context(|| format!("cannot open {}", sb.state.netns.display()))?,
            ),
            Some(sb.state.clone()),
            rec.config.hostname.clone(),
        ),
        _ => (None, None, rec.config.hostname.clone()),
    };
    let (hosts, resolv) =
        crate::network::sandbox::etc_files(&rec.config, state.as_ref(), &hostname);
    Ok(crate::runtime::launch::Prepared {
        id: &rec.id,
        config: &rec.config,
        layers,
        volumes,
        container_dir: store.make_container_dir(&rec.id)?,
        run_dir: store.make_run_dir()?,
        seccomp_cache: store.root().to_path_buf(),
        netns,
        hosts,
        resolv,
    })
}

/// What [`start`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// It was running already (docker's no-op), or another starter won the claim.
    AlreadyRunning,
    /// Started under a detached monitor.
    Detached,
    /// Ran attached to the end, with this exit code.
    Exited(i32),
}

/// How to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartMode {
    /// Under a detached monitor (`run -d`, `start`, apply, watch, `restart`).
    Detached,
    /// In the foreground, to the end (`run`, `start -a`). Without `-i` this process is the
    /// monitor; with `-i` (or `--sig-proxy=false`) it spawns a detached monitor and attaches
    /// to it, so that the detach keys leave the container running.
    Attached(Attaching),
}

/// How a foreground start attaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attaching {
    /// `-i`: our stdin is forwarded (its EOF closes the container's).
    pub stdin: bool,
    /// The detach sequence (`--detach-keys`, parsed by `runtime::attach::parse_detach_keys`).
    pub detach_keys: Vec<u8>,
    /// `--sig-proxy`: the signals we get go to the container (docker's default: on).
    pub sig_proxy: bool,
}

impl Attaching {
    /// Through an attach to a detached monitor, rather than as the monitor itself.
    fn through_socket(&self) -> bool {
        self.stdin || !self.sig_proxy
    }
}

fn my_owner() -> Result<Owner> {
    Owner::me().context("cannot read this process's start time from /proc")
}

/// Starts a created or exited container on its kept write layer with its stored config; each
/// start opens a new run in the journal. The claim is the store's compare-and-swap: a
/// container that runs, or that another starter claimed first, is not started twice.
pub fn start(store: &Store, input: &str, mode: StartMode) -> Result<Started> {
    recover(store)?;
    let rec = container::find(store, input)?;
    start_record(store, &rec, mode)
}

/// [`start`] of a record the caller has just read (or created).
pub fn start_record(store: &Store, rec: &Record, mode: StartMode) -> Result<Started> {
    if rec.is_up() {
        return match mode {
            StartMode::Detached => Ok(Started::AlreadyRunning),
            // A detached run writes its log: follow it to the end, as docker attaches.
            StartMode::Attached(a)
                if !a.stdin && rec.live_monitor().is_some_and(is_detached_monitor) =>
            {
                follow_log(store, rec).map(Started::Exited)
            }
            StartMode::Attached(_) => Err(already_running(rec)),
        };
    }
    let me = my_owner()?;
    // A row this process inserted to start it at once (`run`, apply) is claimed already:
    // the insert recorded it as the owner. Anything else is claimed by compare-and-swap.
    let inserted_by_me = rec.state == ContainerState::Created
        && rec.monitor_pid.zip(rec.monitor_start) == Some((me.pid, me.start));
    if !inserted_by_me && !container::claim(store, &rec.id, me)? {
        // Lost the race with another starter (or a run began since we read the row).
        return match mode {
            StartMode::Detached => Ok(Started::AlreadyRunning),
            StartMode::Attached(_) => Err(user(format!(
                "container {} is being started by another wharf",
                rec.name
            ))
            .hint("wait for it, then `wharf logs -f` it")
            .into()),
        };
    }
    match mode {
        StartMode::Attached(a) if a.through_socket() => {
            attach::start_attached(store, rec, me, &a).map(Started::Exited)
        }
        StartMode::Attached(_) => {
            monitor::run(store, &rec.id, me, Attach::Foreground).map(Started::Exited)
        }
        StartMode::Detached => {
            let res = spawn_monitor(store.root(), &rec.id, None);
            if res.is_err() {
                // The monitor may have died before taking the run over: release our claim,
                // so the container reads as it was, not as a crashed run.
                let _ = container::release(store, &rec.id, me);
            }
            res.map(|()| Started::Detached)
        }
    }
}

/// Starts containers under detached monitors, `workers` at a time (apply's starts): each is
/// claimed here, in order (the store's compare-and-swap, as [`start`] does), then their
/// monitors are spawned side by side, each waiting for its container's exec. `on_done` is
/// called as each finishes. One result per id, in order.
pub fn start_all(
    store: &Store,
    ids: &[String],
    workers: usize,
    on_done: &(dyn Fn() + Sync),
) -> Vec<Result<Started>> {
    let me = match my_owner() {
        Ok(me) => me,
        Err(e) => return ids.iter().map(|_| Err(anyhow::anyhow!("{e:#}"))).collect(),
    };
    let mut results: Vec<Option<Result<Started>>> = Vec::with_capacity(ids.len());
    let mut claimed = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let res = container::find(store, id).and_then(|rec| {
            if rec.is_up() || !container::claim(store, &rec.id, me)? {
                return Ok(Some(Started::AlreadyRunning));
            }
            claimed.push((i, rec.id));
            Ok(None)
        });
        match res {
            Ok(Some(s)) => {
                on_done();
                results.push(Some(Ok(s)));
            }
            Ok(None) => results.push(None),
            Err(e) => {
                on_done();
                results.push(Some(Err(e)));
            }
        }
    }
    let root = store.root();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let spawned: std::sync::Mutex<Vec<(usize, Result<()>)>> = Default::default();
    std::thread::scope(|s| {
        for _ in 0..workers.clamp(1, claimed.len().max(1)) {
            s.spawn(|| {
                while let Some((i, id)) =
                    claimed.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                {
                    let res = spawn_monitor(root, id, None);
                    on_done();
                    if let Ok(mut v) = spawned.lock() {
                        v.push((*i, res));
                    }
                }
            });
        }
    });
    for (i, res) in spawned.into_inner().unwrap_or_default() {
        if res.is_err() {
            let _ = container::release(store, &ids[i], me);
        }
        results[i] = Some(res.map(|()| Started::Detached));
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(anyhow::anyhow!("the start was not attempted"))))
        .collect()
}

/// The detached monitors this process spawned and has not reaped.
static MONITORS: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

/// Reaps the detached monitors this process spawned that have ended; returns how many. Only
/// those: a `waitpid(-1)` would take the exit status of a child another thread waits for
/// (`git` under an apply in `wharf watch`'s converge threads).
pub fn reap_monitors() -> usize {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let Ok(mut pids) = MONITORS.lock() else {
        return 0;
    };
    let before = pids.len();
    pids.retain(|&pid| {
        !matches!(
            waitpid(nix::unistd::Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)),
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(_)
        )
    });
    before - pids.len()
}

fn already_running(rec: &Record) -> anyhow::Error {
    user(format!("container {} is already running", rec.name))
        .hint(format!(
            "follow its output with `wharf logs -f {}`, or `wharf exec -it {} sh`",
            rec.name, rec.name
        ))
        .into()
}

/// Whether `pid` is a detached monitor (`wharf __monitor`), whose container writes its log.
fn is_detached_monitor(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.split(|&b| b == 0).any(|a| a == b"__monitor"))
        .unwrap_or(false)
}

/// Prints what the running container `rec` logs from now until its run ends; returns the
/// run's exit code.
fn follow_log(store: &Store, rec: &Record) -> Result<i32> {
    let path = container::log_path(store, &rec.id);
    let offset = std::fs::metadata(&path).map_or(0, |m| m.len());
    logs::follow(
        &path,
        offset,
        logs::ReadOptions::default(),
        Duration::from_millis(50),
        || {
            container::find(store, &rec.id)
                .map(|r| r.state.is_active() && r.live_monitor().is_some())
                .unwrap_or(false)
        },
    )?;
    last_exit_code(store, &rec.id)
}

/// The exit code of the container's last run (125 when it has none).
fn last_exit_code(store: &Store, id: &str) -> Result<i32> {
    let code: Option<i32> = store
        .db()
        .prepare_cached(
            "SELECT exit_code FROM runs WHERE container_id = ?1 ORDER BY started_at DESC LIMIT 1",
        )?
        .query_row([id], |r| r.get(0))
        .optional()?
        .flatten();
    Ok(code.unwrap_or(exit::RUNTIME))
}

/// Spawns the detached monitor of a claimed container (`wharf __monitor`, in its own
/// session), which takes the claim over from us; returns once the command runs, or with the
/// error that stopped it. `client`: an attach socket the monitor serves from the start (its
/// fd 4), and the terminal size for the container's pty.
fn spawn_monitor(
    root: &Path,
    id: &str,
    client: Option<(&std::os::fd::OwnedFd, Option<libc::winsize>)>,
) -> Result<()> {
    let (r, w) = sys::pipe().context("cannot create a pipe")?;
    // Above the descriptors the child's dup2 writes (3, 4), so neither overwrites the other.
    let high = |fd: std::os::fd::BorrowedFd<'_>| -> std::io::Result<std::os::fd::OwnedFd> {
        let d = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))?;
        // SAFETY: a new descriptor owned by nothing else.
        Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(d) })
    };
    use std::os::fd::AsFd;
    let w = {
        let orig = w;
        high(orig.as_fd()).context("cannot duplicate a pipe")?
    };
    let c = client
        .map(|(c, _)| high(c.as_fd()))
        .transpose()
        .context("cannot duplicate the attach socket")?;
    let wfd = w.as_raw_fd();
    let cfd = c.as_ref().map(|c| c.as_raw_fd());
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg("--root")
        .arg(root)
        .arg("__monitor")
        .arg(id)
        .arg("--ready-fd")
        .arg("3")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some((_, ws)) = client {
        cmd.arg("--attach-fd").arg("4");
        if let Some(ws) = ws {
            cmd.arg("--tty-size")
                .arg(format!("{}x{}", ws.ws_row, ws.ws_col));
        }
    }
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // syscalls (setsid, dup2, close_range) on descriptors this process owns.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            if libc::dup2(wfd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(c) = cfd
                && libc::dup2(c, 4) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // Nothing the caller left open follows the monitor.
            let first: u32 = if cfd.is_some() { 5 } else { 4 };
            libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32);
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .context("cannot start the container's monitor")?;
    drop(w);
    drop(c);
    // The monitor outlives us (init adopts it); while we live, it is our child, reaped by
    // [`reap_monitors`] (a long-lived `wharf watch`).
    if let Ok(mut m) = MONITORS.lock() {
        m.push(child.id() as i32);
    }
    drop(child);
    let msg = sys::read_to_end(r.as_raw_fd()).context("cannot read from the monitor")?;
    monitor::Ready::decode(&msg).into_result()
}

/// `wharf exec`: runs a command in the running container `input` (see
/// [`crate::runtime::exec`]); returns the command's exit code.
pub fn exec(store: &Store, input: &str, opts: &crate::runtime::exec::ExecOptions) -> Result<i32> {
    recover(store)?;
    let rec = container::find(store, input)?;
    crate::runtime::exec::exec(store.root(), &rec, opts)
}

/// `wharf restart`: stop (SIGTERM, SIGKILL after `timeout`) if running, then start detached.
/// Several containers stop side by side, then start.
pub fn restart_all(
    store: &Store,
    inputs: &[String],
    timeout: Option<Duration>,
) -> Vec<Result<Record>> {
    stop_all(store, inputs, timeout)
        .into_iter()
        .map(|res| {
            let rec = res?;
            let Ok(now) = container::find(store, &rec.id) else {
                return Err(user(format!(
                    "container {} was removed when it stopped",
                    rec.name
                ))
                .hint("it was run with --rm; run it again with `wharf run`")
                .into());
            };
            start_record(store, &now, StartMode::Detached)?;
            Ok(rec)
        })
        .collect()
}

/// Polls `cond` every few ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn not_running(rec: &Record) -> anyhow::Error {
    user(format!("container {} is not running", rec.name))
        .hint("`wharf ps -a` shows its state")
        .into()
}

/// Signals that end a container: `kill` with one of them counts as the user stopping it, so
/// its restart policy does not run it again (HUP, USR1 and the like are messages, not ends).
const ENDING: [i32; 4] = [libc::SIGKILL, libc::SIGTERM, libc::SIGINT, libc::SIGQUIT];

/// A container between two runs of its restart policy, with its monitor waiting the backoff:
/// the monitor's pid.
fn waiting_monitor(rec: &Record) -> Option<i32> {
    (rec.state == ContainerState::Restarting)
        .then(|| rec.live_monitor())
        .flatten()
}

/// Tells the monitor of a `restarting` container to stop waiting: it then records the
/// container exited (it also polls `stop_requested`; the signal makes it prompt).
fn end_restart_wait(rec: &Record) {
    if let Some(m) = waiting_monitor(rec) {
        signal(m, libc::SIGTERM);
    }
}

/// kill(2) of a pid whose start time the caller just checked against the record.
fn signal(pid: i32, sig: i32) -> bool {
    // SAFETY: kill with plain integers; the pid and its start time were just checked.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// Sends `sig` to the container's init (never to a recycled pid). A terminating signal marks
/// the container stopped by the user; a container waiting to restart is just stopped.
pub fn kill(store: &Store, input: &str, sig: i32) -> Result<Record> {
    recover(store)?;
    let rec = container::find(store, input)?;
    if ENDING.contains(&sig) && rec.is_up() {
        container::request_stop(store, &rec.id)?;
    }
    let Some(pid) = rec.live_pid() else {
        if waiting_monitor(&rec).is_some() && ENDING.contains(&sig) {
            end_restart_wait(&rec);
            return Ok(rec);
        }
        return Err(not_running(&rec));
    };
    if !signal(pid, sig) {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot signal container {}", rec.name));
    }
    if ENDING.contains(&sig) {
        // A paused container cannot act on the signal: thaw it.
        control::thaw_after_signal(&rec.id);
    }
    Ok(rec)
}

/// Whether the run of `id` is over: recorded as ended, its monitor gone, or the row removed
/// (`--rm`).
fn run_over(store: &Store, id: &str) -> bool {
    match container::find(store, id) {
        Ok(r) => !r.state.is_active() || r.live_monitor().is_none(),
        Err(_) => true,
    }
}

/// How [`end_all`] ends containers.
#[derive(Debug, Clone, Copy)]
enum End {
    /// Each container's stop signal (`--stop-signal`, the image's StopSignal, else TERM),
    /// then SIGKILL after the grace: the given one, else each container's `--stop-timeout`.
    Stop(Option<Duration>),
    /// SIGKILL at once (`rm -f`).
    Kill,
}

/// Asks a container to stop: marks the stop as the user's (its policy will not restart it),
/// then sends `sig` to its init (thawing it if paused), or ends its monitor's backoff wait.
/// False when it was not up (nothing to wait for).
fn ask_to_stop(store: &Store, rec: &Record, sig: i32) -> Result<bool> {
    if !rec.is_up() {
        return Ok(false);
    }
    container::request_stop(store, &rec.id)?;
    // Read again after the request: the monitor may have moved between running and
    // restarting meanwhile; from now on it sees the request before any new run.
    let rec = container::find(store, &rec.id)?;
    match rec.live_pid() {
        Some(pid) => {
            signal(pid, sig);
            control::thaw_after_signal(&rec.id);
        }
        None => end_restart_wait(&rec),
    }
    Ok(true)
}

/// Waits in one loop (side by side) until every run of `pending` (id, deadline) is over;
/// one still going at its deadline is SIGKILLed then (and waited for up to 10 s more).
/// Returns the ones that outlived even that.
fn wait_all(store: &Store, pending: Vec<(String, Instant)>) -> Vec<String> {
    let mut pending: Vec<(String, Instant, bool)> =
        pending.into_iter().map(|(id, d)| (id, d, false)).collect();
    let last = pending
        .iter()
        .map(|(_, d, _)| *d)
        .max()
        .unwrap_or_else(Instant::now)
        + Duration::from_secs(10);
    wait_for(last.saturating_duration_since(Instant::now()), || {
        pending.retain(|(id, _, _)| !run_over(store, id));
        let now = Instant::now();
        for (id, deadline, killed) in pending.iter_mut() {
            if !*killed && now >= *deadline {
                *killed = true;
                if let Some(pid) = container::find(store, id).ok().and_then(|r| r.live_pid()) {
                    signal(pid, libc::SIGKILL);
                    control::thaw_after_signal(id);
                }
                // It may have SIGKILL at the deadline and 10 s more to go.
                *deadline = now + Duration::from_secs(10);
            }
        }
        pending.is_empty() || pending.iter().all(|(_, d, k)| *k && now >= *d)
    });
    pending.into_iter().map(|(id, _, _)| id).collect()
}

/// The container's stop signal, then SIGKILL after `timeout` (None: its `--stop-timeout`);
/// returns once the exit is recorded.
pub fn stop(store: &Store, input: &str, timeout: Option<Duration>) -> Result<Record> {
    let mut res = stop_all(store, &[input.to_string()], timeout);
    res.pop()
        .unwrap_or_else(|| Err(anyhow::anyhow!("no container to stop")))
}

/// Stops containers side by side: every one is sent its stop signal at once, all are
/// awaited in one loop, and each still going at the end of its grace (`timeout`, else its
/// `--stop-timeout`) is SIGKILLed. One result per input, in order; stopping a stopped
/// container succeeds (docker's rule).
pub fn stop_all(
    store: &Store,
    inputs: &[String],
    timeout: Option<Duration>,
) -> Vec<Result<Record>> {
    end_all(store, inputs, End::Stop(timeout))
}

/// The common part of [`stop_all`] and `rm -f`.
fn end_all(store: &Store, inputs: &[String], how: End) -> Vec<Result<Record>> {
    if let Err(e) = recover(store) {
        return inputs
            .iter()
            .map(|_| Err(anyhow::anyhow!("{e:#}")))
            .collect();
    }
    let mut results: Vec<Result<Record>> = Vec::with_capacity(inputs.len());
    let mut pending = Vec::new();
    let start = Instant::now();
    for input in inputs {
        let res = container::find(store, input).and_then(|rec| {
            let (sig, grace) = match how {
                End::Kill => (libc::SIGKILL, Duration::ZERO),
                End::Stop(t) => (
                    spec::stop_signal(&rec.config),
                    t.unwrap_or_else(|| spec::stop_timeout(&rec.config)),
                ),
            };
            if ask_to_stop(store, &rec, sig)? {
                pending.push((rec.id.clone(), start + grace));
            }
            Ok(rec)
        });
        results.push(res);
    }
    let stuck = wait_all(store, pending);
    for r in results.iter_mut() {
        if let Ok(rec) = r
            && stuck.contains(&rec.id)
        {
            *r = Err(anyhow::anyhow!("container {} did not stop", rec.name));
        }
    }
    if let Err(e) = recover(store) {
        tracing::warn!("crash recovery after the stop failed: {e:#}");
    }
    results
}

/// Removes a container; a running one only with `force` (killed first). With `volumes`
/// (`rm -v`), also its anonymous volumes (named ones are kept).
pub fn remove(store: &Store, input: &str, force: bool, volumes: bool) -> Result<Record> {
    let mut res = remove_all(store, &[input.to_string()], force, volumes);
    res.pop()
        .unwrap_or_else(|| Err(anyhow::anyhow!("no container to remove")))
}

/// [`remove`] of several containers; with `force`, the running ones are killed side by side.
pub fn remove_all(
    store: &Store,
    inputs: &[String],
    force: bool,
    volumes: bool,
) -> Vec<Result<Record>> {
    if let Err(e) = recover(store) {
        return inputs
            .iter()
            .map(|_| Err(anyhow::anyhow!("{e:#}")))
            .collect();
    }
    let mut results: Vec<Result<Record>> = inputs
        .iter()
        .map(|input| {
            let rec = container::find(store, input)?;
            if !force && (rec.is_up() || rec.live_monitor().is_some()) {
                return Err(user(format!("container {} is running", rec.name))
                    .hint("stop it first, or use `wharf rm -f`")
                    .into());
            }
            Ok(rec)
        })
        .collect();
    if force {
        let (at, up): (Vec<usize>, Vec<String>) = results
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.as_ref().ok().map(|r| (i, r)))
            .filter(|(_, r)| r.is_up() || r.live_monitor().is_some())
            .map(|(i, r)| (i, r.id.clone()))
            .unzip();
        if !up.is_empty() {
            let ended = end_all(store, &up, End::Kill);
            for (i, res) in at.into_iter().zip(ended) {
                if let Err(e) = res {
                    results[i] = Err(e);
                }
            }
        }
    }
    for r in results.iter_mut() {
        let Ok(rec) = r else { continue };
        if let Ok(now) = container::find(store, &rec.id)
            && let Err(e) = container::remove(store, &now)
        {
            *r = Err(e);
            continue;
        }
        if volumes {
            crate::volume::remove_anonymous(store, &rec.config.volumes);
        }
    }
    results
}
