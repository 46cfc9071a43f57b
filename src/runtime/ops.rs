//! The container verbs the CLI (and later the reconciler) call: create, run in the
//! foreground or detached, stop, kill, remove, inspect.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rusqlite::OptionalExtension;
use serde_json::json;

use super::logs;
use super::monitor::{self, Attach};
use super::spec::{self, RunOptions};
use super::sys;
use crate::container::{self, NewContainer, Record};
use crate::error::{exit, user};
use crate::image;
use crate::store::{Store, random_hex};
use crate::util::rfc3339;

/// The run dir of a state root: `<root>/run/`. It is the overlay mount point of every
/// container of that root: each container mounts its overlay (and, for `--rm`, the tmpfs of
/// its write layer) there inside its own private mount namespace, then pivots into it, so the
/// host never sees a mount there and containers never see each other's. It holds no state and
/// nothing is created in it per container (no dir churn on the hot path). Living in the state
/// root, it never collides between roots (tests run many at once) and leaves nothing in /run.
/// wharf never removes it: a container between its overlay mount and pivot_root would lose
/// its mount.
pub fn run_dir(store: &Store) -> PathBuf {
    store.root().join("run")
}

/// What a container is recorded with besides its run options: labels, and for containers
/// made by `apply`, the owning project and the manifest spec.
#[derive(Debug, Default)]
pub struct CreateMeta<'a> {
    pub labels: BTreeMap<String, String>,
    pub project: Option<&'a str>,
    pub spec_hash: Option<&'a str>,
    pub spec: Option<&'a str>,
}

/// Records a new container from `image_ref` and `opts` (state `created`).
pub fn create(
    store: &Store,
    image_ref: &str,
    name: Option<&str>,
    opts: &RunOptions,
) -> Result<Record> {
    create_with(store, image_ref, name, opts, &CreateMeta::default())
}

/// [`create`], with labels and ownership.
pub fn create_with(
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
    container::reconcile(store)?;
    let image_id =
        image::resolve(store, image_ref).map_err(|e| match crate::error::find_user_error(&e) {
            Some(u) => anyhow::Error::new(u.clone().code(exit::RUNTIME)),
            None => e,
        })?;
    let image_cfg = image::load_config(store, &image_id)?;
    let id = random_hex(32);
    let cfg = spec::build(&id, &image_cfg.config, opts)?;
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
            image_ref,
            config: &cfg,
            owner: me(),
            labels: &meta.labels,
            project: meta.project,
            spec_hash: meta.spec_hash,
            spec: meta.spec,
        },
    )
    .map_err(|e| match crate::error::find_user_error(&e) {
        Some(u) => anyhow::Error::new(u.clone().code(exit::RUNTIME)),
        None => e,
    })?;
    container::find(store, &id)
}

/// This process as a run owner: (pid, start time).
fn me() -> Option<(i32, u64)> {
    let pid = std::process::id() as i32;
    container::proc_start_time(pid).map(|t| (pid, t))
}

/// Runs a recorded container in the foreground; returns its exit code.
pub fn run_foreground(store: &Store, rec: &Record) -> Result<i32> {
    let stdin = rec.config.interactive;
    monitor::run(store, &rec.id, Attach::Foreground { stdin })
}

/// What [`start`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// It was running already (docker's no-op).
    AlreadyRunning,
    /// Started under a detached monitor.
    Detached,
    /// Ran attached to the end, with this exit code.
    Exited(i32),
}

/// Starts a created or exited container again, on its kept write layer, with its stored
/// config; each start opens a new run in the journal. `attach`: run it in this process
/// (stdout/stderr, and stdin with `Some(true)`) to its end; `None`: under a detached monitor.
pub fn start(store: &Store, input: &str, attach: Option<bool>) -> Result<Started> {
    container::reconcile(store)?;
    let rec = container::find(store, input)?;
    if container::is_active_state(&rec.state)
        && (rec.live_pid().is_some() || rec.live_monitor().is_some())
    {
        return match attach {
            None => Ok(Started::AlreadyRunning),
            // A detached run writes its log: follow it to the end, as docker attaches.
            Some(false) if rec.live_monitor().is_some_and(is_detached_monitor) => {
                follow_log(store, &rec).map(Started::Exited)
            }
            Some(_) => Err(user(format!("container {} is already running", rec.name))
                .hint(format!(
                    "follow its output with `wharf logs -f {}`, or `wharf exec -it {} sh`",
                    rec.name, rec.name
                ))
                .into()),
        };
    }
    if !container::claim_start(store, &rec.id)? {
        // Lost a race with another start (or a run began between reconcile and now).
        if attach.is_some() {
            return Err(user(format!(
                "container {} is being started by another wharf",
                rec.name
            ))
            .hint("wait for it, then `wharf logs -f` it")
            .into());
        }
        return Ok(Started::AlreadyRunning);
    }
    match attach {
        Some(stdin) => {
            monitor::run(store, &rec.id, Attach::Foreground { stdin }).map(Started::Exited)
        }
        None => {
            let res = run_detached(store.root(), &rec.id);
            if res.is_err() {
                // The monitor may have died before taking the run over: release our claim,
                // so the container reads as it was, not as a crashed run.
                let _ = container::disown(store, &rec.id);
            }
            res.map(|()| Started::Detached)
        }
    }
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
    let opts = logs::ReadOptions::default();
    let mut offset = std::fs::metadata(&path).map_or(0, |m| m.len());
    loop {
        let running = container::find(store, &rec.id)
            .map(|r| container::is_active_state(&r.state) && r.live_monitor().is_some())
            .unwrap_or(false);
        offset = logs::print_from(&path, offset, opts)?;
        if !running {
            // The monitor wrote the tail before recording the exit.
            logs::print_from(&path, offset, opts)?;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let code: Option<i32> = store
        .db()
        .prepare_cached(
            "SELECT exit_code FROM runs WHERE container_id = ?1 ORDER BY started_at DESC LIMIT 1",
        )?
        .query_row([&rec.id], |r| r.get(0))
        .optional()?
        .flatten();
    Ok(code.unwrap_or(exit::RUNTIME))
}

/// `wharf restart`: stop (SIGTERM, SIGKILL after `timeout`) if running, then start detached.
pub fn restart(store: &Store, input: &str, timeout: Duration) -> Result<Record> {
    let rec = stop(store, input, timeout)?;
    if container::find(store, &rec.id).is_err() {
        return Err(user(format!(
            "container {} was removed when it stopped",
            rec.name
        ))
        .hint("it was run with --rm; run it again with `wharf run`")
        .into());
    }
    start(store, &rec.id, None)?;
    Ok(rec)
}

/// Starts a recorded container under a detached monitor (`wharf __monitor`, in its own
/// session) and returns once its command runs, or with the error that stopped it.
pub fn run_detached(root: &Path, id: &str) -> Result<()> {
    let (r, w) = sys::pipe().context("cannot create a pipe")?;
    let wfd = w.as_raw_fd();
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
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // syscalls (setsid, dup2, fcntl, close_range) on descriptors this process owns.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            if wfd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0);
            } else if libc::dup2(wfd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Nothing the caller left open follows the monitor.
            libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .context("cannot start the container's monitor")?;
    drop(w);
    let msg = sys::read_to_end(r.as_raw_fd()).context("cannot read from the monitor")?;
    drop(child); // the monitor outlives us; init adopts it
    let text = String::from_utf8_lossy(&msg);
    if text == "ok" {
        return Ok(());
    }
    if let Some(rest) = text.strip_prefix('E') {
        let mut lines = rest.splitn(3, '\n');
        let code = lines
            .next()
            .and_then(|c| c.parse().ok())
            .unwrap_or(exit::RUNTIME);
        let message = lines
            .next()
            .unwrap_or("the container failed to start")
            .to_string();
        let mut e = user(message).code(code);
        if let Some(h) = lines.next().filter(|h| !h.is_empty()) {
            e = e.hint(h);
        }
        return Err(e.into());
    }
    Err(
        user("the container's monitor exited before the container started")
            .hint("run it in the foreground (without -d) to see why")
            .code(exit::RUNTIME)
            .into(),
    )
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

/// Parses `HUP`, `SIGHUP`, `hup` or `1`.
pub fn parse_signal(s: &str) -> Result<i32> {
    if let Ok(n) = s.parse::<i32>()
        && (1..=64).contains(&n)
    {
        return Ok(n);
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|s| s as i32)
        .map_err(|_| {
            user(format!("invalid signal {s:?}"))
                .hint("use a name like TERM, HUP, KILL or a number")
                .into()
        })
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
    (rec.state == "restarting")
        .then(|| rec.live_monitor())
        .flatten()
}

/// Whether a monitor owns a run of the container or waits to restart it: also true in the
/// instant between the init's exit and its monitor recording it, when a stop must still
/// reach the monitor (through `stop_requested`) lest the policy restart the container.
fn has_live_run(rec: &Record) -> bool {
    container::is_active_state(&rec.state) && rec.live_monitor().is_some()
}

/// Tells the monitor of a `restarting` container to stop waiting: it then records the
/// container exited (it also polls `stop_requested`; the signal makes it prompt).
fn end_restart_wait(rec: &Record) {
    if let Some(m) = waiting_monitor(rec) {
        // SAFETY: kill with plain integers; the monitor's pid and start time were just checked.
        unsafe { libc::kill(m, libc::SIGTERM) };
    }
}

/// Sends `sig` to the container's init (never to a recycled pid). A terminating signal marks
/// the container stopped by the user; a container waiting to restart is just stopped.
pub fn kill(store: &Store, input: &str, sig: i32) -> Result<Record> {
    container::reconcile(store)?;
    let rec = container::find(store, input)?;
    if ENDING.contains(&sig) && (rec.live_pid().is_some() || has_live_run(&rec)) {
        container::request_stop(store, &rec.id)?;
    }
    let Some(pid) = rec.live_pid() else {
        if waiting_monitor(&rec).is_some() && ENDING.contains(&sig) {
            end_restart_wait(&rec);
            return Ok(rec);
        }
        return Err(not_running(&rec));
    };
    // SAFETY: kill with plain integers; pid and its start time were just checked.
    if unsafe { libc::kill(pid, sig) } < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot signal container {}", rec.name));
    }
    if ENDING.contains(&sig) {
        super::control::thaw_after_signal(&rec.id);
    }
    Ok(rec)
}

/// Waits until the run of `id` is recorded as ended (or its monitor is gone).
fn wait_stopped(store: &Store, id: &str, timeout: Duration) -> bool {
    wait_for(timeout, || match container::find(store, id) {
        Ok(r) => !container::is_active_state(&r.state) || r.live_monitor().is_none(),
        Err(_) => true, // removed (--rm)
    })
}

/// SIGTERM, then SIGKILL after `timeout`; returns once the exit is recorded.
pub fn stop(store: &Store, input: &str, timeout: Duration) -> Result<Record> {
    container::reconcile(store)?;
    let rec = container::find(store, input)?;
    if rec.live_pid().is_none() && !has_live_run(&rec) {
        return Ok(rec); // already stopped: docker succeeds too
    }
    container::request_stop(store, &rec.id)?;
    // Read again after the request: the monitor may have moved between running and
    // restarting meanwhile; from now on it sees the request before any new run.
    let rec = container::find(store, &rec.id)?;
    match rec.live_pid() {
        Some(pid) => {
            // SAFETY: kill with plain integers; pid and its start time were just checked.
            unsafe { libc::kill(pid, spec::stop_signal(&rec.config)) };
            super::control::thaw_after_signal(&rec.id);
        }
        None => end_restart_wait(&rec),
    }
    if !wait_stopped(store, &rec.id, timeout) {
        if let Some(pid) = container::find(store, &rec.id)
            .ok()
            .and_then(|r| r.live_pid())
        {
            // SAFETY: kill with plain integers; pid and its start time were just checked.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if !wait_stopped(store, &rec.id, Duration::from_secs(10)) {
            anyhow::bail!("container {} did not stop", rec.name);
        }
    }
    container::reconcile(store)?;
    Ok(rec)
}

/// Removes a container; a running one only with `force` (killed first).
pub fn remove(store: &Store, input: &str, force: bool) -> Result<Record> {
    remove_with(store, input, force, false)
}

/// [`remove`]; with `volumes` (`rm -v`), also its anonymous volumes (named ones are kept).
pub fn remove_with(store: &Store, input: &str, force: bool, volumes: bool) -> Result<Record> {
    let rec = remove_container(store, input, force)?;
    if volumes {
        crate::volume::remove_anonymous(store, &rec.config.volumes);
    }
    Ok(rec)
}

fn remove_container(store: &Store, input: &str, force: bool) -> Result<Record> {
    container::reconcile(store)?;
    let rec = container::find(store, input)?;
    if rec.live_monitor().is_some() || rec.live_pid().is_some() {
        if !force {
            return Err(user(format!("container {} is running", rec.name))
                .hint("stop it first, or use `wharf rm -f`")
                .into());
        }
        // Never restarted by its policy from here on.
        container::request_stop(store, &rec.id)?;
        let rec = container::find(store, &rec.id)?;
        if let Some(pid) = rec.live_pid() {
            // SAFETY: kill with plain integers; pid and its start time were just checked.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            super::control::thaw_after_signal(&rec.id);
        } else {
            end_restart_wait(&rec);
        }
        if !wait_stopped(store, &rec.id, Duration::from_secs(10)) {
            anyhow::bail!("container {} did not stop", rec.name);
        }
        container::reconcile(store)?;
    }
    if let Ok(rec) = container::find(store, &rec.id) {
        container::remove(store, &rec)?;
    }
    Ok(rec)
}

/// The record as docker-style inspect JSON: identity, image (id and reference), config,
/// state, mounts, limits (`HostConfig`), restart count, write layer and log paths.
pub fn inspect(store: &Store, input: &str) -> Result<serde_json::Value> {
    container::reconcile(store)?;
    let r = container::find(store, input)?;
    let running = r.live_pid().is_some();
    let restarting = r.state == "restarting";
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
        crate::runtime::restart::RestartPolicy::OnFailure { max } => {
            ("on-failure".to_string(), max.unwrap_or(0))
        }
        p => (p.to_string(), 0),
    };
    let cdir = store.container_dir(&r.id);
    let c = &r.config;
    let mounts: Vec<serde_json::Value> = c
        .volumes
        .iter()
        .map(|v| match v.kind {
            container::VolumeKind::Named => json!({
                "Type": "volume",
                "Name": v.source,
                "Source": store.volumes_dir().join(&v.source).join("_data"),
                "Destination": v.destination,
                "Mode": if v.read_only { "ro" } else { "rw" },
                "RW": !v.read_only,
            }),
            container::VolumeKind::Bind => json!({
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
            "NetworkMode": match c.network {
                container::Network::None => "none",
                container::Network::Host => "host",
            },
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
    }))
}
