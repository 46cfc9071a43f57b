//! The monitor: the process that owns the runs of a container. It starts it, relays its
//! stdio, forwards signals, runs its health checks, reaps it, records the exit, restarts it
//! as its restart policy says (after a backoff, on the same write layer), and cleans up.
//!
//! A foreground `wharf run` is the monitor of its container. A detached container's monitor
//! is `wharf __monitor <id>` (re-exec of /proc/self/exe by `run -d`, in its own session, a
//! child subreaper) whose stdio is /dev/null: it writes the container's output to the log.
//!
//! Every monitor serves the container's stdio on `containers/<id>/attach.sock`
//! ([`crate::runtime::attach`]): `wharf attach`, and the `run -i` / `start -ai` that spawned
//! a detached monitor and attached to it at once (so their detach keys leave it running).
//!
//! One `poll` loop over a signalfd, the container's output (pty master or pipes), the
//! attach socket and its clients. During a run, a second thread writes the log
//! ([`LogThread`]): the relay writes the terminal first, the log is off its hot path.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use serde::{Deserialize, Serialize};

use crate::container::{self, Outcome, Owner};
use crate::error::{exit, user};
use crate::model::{HealthConfig, Stats};
use crate::runtime::attach::{self, Input};
use crate::runtime::cgroup::ContainerCgroup;
use crate::runtime::health::{self, HealthState, Probe};
use crate::runtime::launch::{self, Launched};
use crate::runtime::logs::{LogThread, LogWriter, Stream};
use crate::runtime::restart::{self, Backoff, Decision, Ended};
use crate::runtime::sys;
use crate::runtime::tty::{read_signals, signal_fd};
use crate::store::{Store, now_ns};

/// How the monitor is attached to the caller.
pub enum Attach {
    /// `wharf run` or `wharf start -a` without `-i` in the foreground: the container's
    /// output goes to our stdout and stderr (and its log).
    Foreground,
    /// A detached monitor: output goes to the log; `ready` hears a [`Ready`] message.
    /// `client`: the attach of the `run -i` that spawned us, `winsize` its terminal's.
    Detached {
        ready: OwnedFd,
        client: Option<OwnedFd>,
        winsize: Option<libc::winsize>,
    },
}

/// What a detached monitor tells the `wharf` that spawned it, once, over the ready pipe
/// (JSON): the container's command runs, or why it could not be started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ready", rename_all = "snake_case")]
pub enum Ready {
    Started,
    Failed {
        code: i32,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hint: Option<String>,
    },
}

impl Ready {
    fn send(&self, fd: &OwnedFd) {
        if let Ok(bytes) = serde_json::to_vec(self) {
            let _ = sys::write_all(fd.as_raw_fd(), &bytes);
        }
    }

    /// Decodes what the monitor wrote before closing the pipe (nothing: it died first).
    pub fn decode(bytes: &[u8]) -> Ready {
        serde_json::from_slice(bytes).unwrap_or_else(|_| Ready::Failed {
            code: exit::RUNTIME,
            message: "the container's monitor exited before the container started".into(),
            hint: Some("run it in the foreground (without -d) to see why".into()),
        })
    }

    /// The start's result, as `run -d` and `start` report it.
    pub fn into_result(self) -> Result<()> {
        match self {
            Ready::Started => Ok(()),
            Ready::Failed {
                code,
                message,
                hint,
            } => {
                let mut e = user(message).code(code);
                if let Some(h) = hint {
                    e = e.hint(h);
                }
                Err(e.into())
            }
        }
    }
}

fn open_devnull() -> Result<File> {
    File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .context("cannot open /dev/null")
}

/// Where output goes: our stdout/stderr (a foreground run) first, then the log (docker's
/// json-file driver logs every container), then the attached clients.
struct Sink {
    term: bool,
    /// The log between runs.
    log: Option<LogWriter>,
    /// The log's thread during a run.
    thread: Option<LogThread>,
}

impl Sink {
    fn logs(&self) -> bool {
        self.log.is_some() || self.thread.is_some()
    }

    /// A run begins: the log's thread starts (after the fork of the container's init).
    fn begin(&mut self) {
        if let Some(w) = self.log.take() {
            match LogThread::spawn(w) {
                Ok(t) => self.thread = Some(t),
                Err(e) => tracing::warn!("cannot start the log's thread: {e}; not logged"),
            }
        }
    }

    /// The run's output is all read: the log's thread writes the rest and ends.
    fn end(&mut self) {
        if let Some(t) = self.thread.take() {
            self.log = t.finish();
        }
    }

    fn write(&mut self, stream: Stream, data: &[u8]) {
        if self.term {
            let fd = if stream == Stream::Stderr { 2 } else { 1 };
            let _ = sys::write_all(fd, data);
        }
        if let Some(t) = &self.thread {
            t.write(stream, data);
        }
    }
}

/// Runs the container `id` (recorded, not running) to its end. Returns the exit code as `run`
/// reports it.
///
/// `from` is the process that claimed the run ([`container::claim`]): this one (a foreground
/// run), or the `wharf` that spawned this detached monitor; the monitor takes the claim over
/// from it by compare-and-swap, and refuses to run a container someone else owns.
pub fn run(store: &Store, id: &str, from: Owner, attach: Attach) -> Result<i32> {
    let (mut ready, client, winsize) = match attach {
        Attach::Detached {
            ready,
            client,
            winsize,
        } => (Some(ready), client, winsize),
        Attach::Foreground => (None, None, None),
    };
    let res = run_inner(store, id, from, &mut ready, client, winsize);
    if let Err(e) = &res {
        // A detached monitor's stderr is /dev/null: the record is where this is seen.
        let _ = container::set_error(store, id, &format!("{e:#}"));
    }
    if let (Err(e), Some(ready)) = (&res, &ready) {
        // Not started yet: tell `run -d` why.
        let code = crate::error::exit_code(e);
        let code = if code == exit::ERROR {
            exit::RUNTIME
        } else {
            code
        };
        let (message, hint) = match crate::error::find_user_error(e) {
            Some(u) => (u.message.clone(), u.hint.clone()),
            None => (format!("{e:#}"), None),
        };
        Ready::Failed {
            code,
            message,
            hint,
        }
        .send(ready);
    }
    res
}

/// Signals that, sent to the monitor itself (Ctrl-C on a foreground run, `wharf stop` during
/// a backoff wait), mean the user wants the container to end: no restart follows.
const ENDING: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// How one run ended.
struct RunEnd {
    run_id: Option<i64>,
    out: Outcome,
    /// The monitor got an ending signal during the run.
    user_stop: bool,
    /// The health check made it unhealthy and the monitor killed it.
    unhealthy: bool,
}

/// What every run of this monitor shares.
struct Shared<'a> {
    store: &'a Store,
    rec: &'a container::Record,
    sigfd: &'a OwnedFd,
    devnull: &'a File,
    detached: bool,
    /// The terminal size of a detached `-t` run's first client.
    winsize: Option<libc::winsize>,
}

/// `ready` is taken (written `ok` and closed) once the command runs.
///
/// Runs the container, then again for as long as its restart policy says so: each run is a
/// row of `runs` (`restart = 1` after the first), between runs the container is `restarting`
/// while the monitor waits the backoff. The wait ends early, and the container stays exited,
/// when the user stops it (`stop_requested` in the row, or an ending signal to the monitor).
fn run_inner(
    store: &Store,
    id: &str,
    from: Owner,
    ready: &mut Option<OwnedFd>,
    client: Option<OwnedFd>,
    winsize: Option<libc::winsize>,
) -> Result<i32> {
    let me = Owner::me().context("cannot read this process's start time from /proc")?;
    // A foreground run is its own monitor: the claim is already ours.
    if from != me && !container::hand_over(store, id, from, me)? {
        let name = container::find(store, id).map_or_else(|_| id.to_string(), |r| r.name);
        return Err(user(format!("container {name} is owned by another wharf"))
            .hint("it is running or being started: `wharf ps -a` shows it")
            .code(exit::RUNTIME)
            .into());
    }
    let rec = container::find(store, id)?;
    let sigfd = signal_fd()?;
    let cfg = rec.config.clone();
    let detached = ready.is_some();
    let devnull = open_devnull()?;
    let mut sink = if detached {
        let path = container::log_path(store, &rec.id);
        store.make_container_dir(&rec.id)?;
        let w = LogWriter::with_policy(&path, log_policy(store, &rec))
            .with_context(|| format!("cannot open {}", path.display()))?;
        Sink {
            term: false,
            log: Some(w),
            thread: None,
        }
    } else {
        // A foreground run is logged too (`wharf logs` after `run`), by the log's thread;
        // a --rm container's log would go with it at once, so that hot path writes none
        // (and, without -t, its output goes to our stdout directly, with no relay).
        let log = if rec.config.auto_remove {
            None
        } else {
            let path = container::log_path(store, &rec.id);
            let _ = store.make_container_dir(&rec.id);
            LogWriter::with_policy(&path, log_policy(store, &rec))
                .map_err(|e| {
                    tracing::warn!(
                        "cannot open {}: {e}; this run is not logged",
                        path.display()
                    )
                })
                .ok()
        };
        Sink {
            term: true,
            log,
            thread: None,
        }
    };
    // `wharf attach` reaches the container through this socket.
    let mut server = match store
        .make_container_dir(&rec.id)
        .map_err(|e| std::io::Error::other(format!("{e:#}")))
        .and_then(|dir| attach::Server::bind(&dir))
    {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot serve attach for {}: {e}", rec.short_id());
            attach::Server::none()
        }
    };
    if let Some(c) = client {
        server.add(c);
    }
    let shared = Shared {
        store,
        rec: &rec,
        sigfd: &sigfd,
        devnull: &devnull,
        detached,
        winsize,
    };
    // The container's networks, once for all its runs (the same addresses and ports across
    // restarts); torn down before the run is finished (a --rm container's files go then).
    let sandbox = std::cell::RefCell::new(crate::network::sandbox::attach(store, &rec)?);
    let finish = |run_id: Option<i64>, out: &Outcome| {
        if let Some(sb) = sandbox.borrow_mut().take() {
            sb.detach(store);
        }
        super::finish_run(store, &rec, run_id, out)
    };

    let mut restarts: u32 = 0;
    let mut last_delay = None;
    loop {
        let began = Instant::now();
        // (The sandbox's borrow ends before `finish` takes it.)
        let ran = run_once(
            &shared,
            &mut sink,
            &mut server,
            ready,
            restarts > 0,
            sandbox.borrow().as_ref(),
        );
        let end = match ran {
            Ok(end) => end,
            Err(e) => {
                // The reason first: whoever reads the run as exited finds why.
                let _ = container::set_error(store, &rec.id, &format!("{e:#}"));
                let code = crate::error::exit_code(&e);
                let out = Outcome {
                    exit_code: if code == exit::ERROR {
                        exit::RUNTIME
                    } else {
                        code
                    },
                    ..Outcome::default()
                };
                let _ = finish(None, &out);
                server.end_run(out.exit_code);
                return Err(e);
            }
        };
        let code = end.out.exit_code;
        let stop_requested =
            end.user_stop || container::stop_requested(store, &rec.id).unwrap_or(true);
        let ended = Ended {
            // Killed for being unhealthy is a failure whatever the exit status says.
            code: if end.unhealthy && code == 0 { 1 } else { code },
            stop_requested,
            ran_for: began.elapsed(),
        };
        let after =
            match restart::decide(cfg.restart, ended, restarts, last_delay, Backoff::default()) {
                Decision::Stay => {
                    let done = finish(end.run_id, &end.out);
                    server.end_run(code);
                    done?;
                    return Ok(code);
                }
                Decision::Restart { after } => after,
            };
        let marked = container::mark_restarting(store, &rec.id, end.run_id, &end.out);
        server.end_run(code);
        marked?;
        tracing::info!(
            "container {} exited with {code}; restarting it in {after:?} (policy {})",
            rec.short_id(),
            cfg.restart
        );
        let go_on = wait_backoff(store, &rec.id, &sigfd, after)?
            && container::begin_restart(store, &rec.id)?;
        if !go_on {
            finish(None, &end.out)?;
            return Ok(code);
        }
        // Clients attached during the wait hear this run's end.
        server.end_run(code);
        restarts += 1;
        last_delay = Some(after);
    }
}

/// Waits `after` between two runs; false when the user stopped the container meanwhile. The
/// row is polled every 50 ms (cheap, and only while waiting); `wharf stop` also signals us.
fn wait_backoff(store: &Store, id: &str, sigfd: &OwnedFd, after: Duration) -> Result<bool> {
    let deadline = Instant::now() + after;
    loop {
        if container::stop_requested(store, id)? {
            return Ok(false);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(true);
        }
        let mut pfd = libc::pollfd {
            fd: sigfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let timeout = left.min(Duration::from_millis(50)).as_millis() as libc::c_int + 1;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout) };
        if n > 0 {
            for sig in read_signals(sigfd) {
                if ENDING.contains(&sig) {
                    return Ok(false);
                }
                if sig == libc::SIGCHLD {
                    reap_all();
                }
            }
        }
    }
}

/// One run: launch, relay, health checks, reap, stats.
fn run_once(
    sh: &Shared<'_>,
    sink: &mut Sink,
    server: &mut attach::Server,
    ready: &mut Option<OwnedFd>,
    is_restart: bool,
    net: Option<&crate::network::Sandbox>,
) -> Result<RunEnd> {
    let (store, rec) = (sh.store, sh.rec);
    let cfg = &rec.config;
    let detached = sh.detached;
    let (mut outputs, child_ends, stdio, stdin_w) = container_stdio(sh, sink.logs())?;
    let winsize = match (cfg.tty, detached) {
        (false, _) => None,
        (true, false) => sys::get_winsize(0).or_else(|| sys::get_winsize(1)),
        (true, true) => sh.winsize,
    };
    let launched =
        super::prepare(store, rec, net).and_then(|prep| launch::launch(&prep, stdio, winsize));
    drop(child_ends);
    let Launched {
        pid,
        master,
        cgroup,
    } = launched?;
    let run_id = container::mark_running(store, &rec.id, pid, is_restart).ok();
    let started = Instant::now();
    if let Some(ready) = ready.take() {
        Ready::Started.send(&ready);
    }
    let mut health = cfg.healthcheck.as_ref().map(|h| Checker::new(h, started));
    if let Some(c) = &health {
        c.save(store, &rec.id);
    }

    attach_terminal(sh, master.as_ref(), &mut outputs);
    sink.begin();
    let relayed = relay(
        sh,
        sink,
        server,
        pid,
        master.as_ref(),
        outputs,
        stdin_w,
        &mut health,
        started,
    );
    sink.end();
    let Relayed {
        status,
        user_stop,
        unhealthy,
    } = relayed?;
    drop(master);
    if let Some(c) = &mut health {
        c.abandon();
    }

    let (exit_code, signal, stats) = run_outcome(status, cgroup.as_deref(), rec);
    Ok(RunEnd {
        run_id,
        out: Outcome {
            exit_code,
            signal,
            stats,
        },
        user_stop,
        unhealthy,
    })
}

/// The log policy of `rec`: its `--log-opt`, over its project's (or the root's).
fn log_policy(store: &Store, rec: &container::Record) -> crate::model::LogPolicy {
    rec.config
        .log_opts
        .unwrap_or_default()
        .over(crate::policy::log_policy(store, rec.project.as_deref()))
}

/// The container's stdio without a tty: pipes the monitor reads (detached, or a logged
/// foreground run), or this process's own descriptors (a --rm foreground run); a pipe the
/// monitor writes the clients' input to (a detached `-i` container). Returns what to read
/// from, the child's ends (closed once it is launched), its 0, 1, 2, and the stdin pipe.
#[allow(clippy::type_complexity)]
fn container_stdio(
    sh: &Shared<'_>,
    logged: bool,
) -> Result<(
    Vec<(OwnedFd, Stream)>,
    Vec<OwnedFd>,
    [RawFd; 3],
    Option<OwnedFd>,
)> {
    let cfg = &sh.rec.config;
    let mut outputs: Vec<(OwnedFd, Stream)> = Vec::new();
    let mut child_ends: Vec<OwnedFd> = Vec::new();
    let devnull = sh.devnull.as_raw_fd();
    if cfg.tty {
        return Ok((outputs, child_ends, [devnull, devnull, devnull], None));
    }
    let mut stdin_w = None;
    let stdin = if sh.detached && cfg.interactive {
        let (r, w) = sys::pipe()?;
        // The monitor never blocks on a container that does not read its input.
        nix::fcntl::fcntl(
            &w,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )?;
        stdin_w = Some(w);
        let fd = r.as_raw_fd();
        child_ends.push(r);
        fd
    } else {
        devnull
    };
    let stdio: [RawFd; 3] = if sh.detached || logged {
        let (r1, w1) = sys::pipe()?;
        let (r2, w2) = sys::pipe()?;
        // Our read ends (their own open files: the container's ends stay blocking) are
        // non-blocking, so that one wakeup drains a burst of small writes.
        for r in [&r1, &r2] {
            nix::fcntl::fcntl(
                r,
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            )?;
        }
        outputs.push((r1, Stream::Stdout));
        outputs.push((r2, Stream::Stderr));
        let fds = [stdin, w1.as_raw_fd(), w2.as_raw_fd()];
        child_ends.push(w1);
        child_ends.push(w2);
        fds
    } else {
        [stdin, 1, 2]
    };
    Ok((outputs, child_ends, stdio, stdin_w))
}

/// The terminal of a `-t` run: in the foreground, the pty's size copied from ours; the
/// master is read like any output.
fn attach_terminal(
    sh: &Shared<'_>,
    master: Option<&OwnedFd>,
    outputs: &mut Vec<(OwnedFd, Stream)>,
) {
    if let Some(m) = master {
        if !sh.detached
            && let Some(ws) = sys::get_winsize(0).or_else(|| sys::get_winsize(1))
        {
            sys::set_winsize(m.as_raw_fd(), &ws);
        }
        match m.try_clone() {
            Ok(c) => outputs.push((c, Stream::Stdout)),
            Err(e) => tracing::warn!("cannot duplicate the pty master: {e}"),
        }
    }
}

/// How the relay of one run ended.
struct Relayed {
    /// The init's wait status.
    status: Option<libc::c_int>,
    user_stop: bool,
    unhealthy: bool,
}

/// Input queued for a container's stdin pipe past which the clients' input waits.
const STDIN_QUEUE: usize = 64 * 1024;

/// The poll loop of a run: signals (forwarded, SIGCHLD reaped, SIGWINCH copied), output to
/// the sink and the attached clients, their input to the pty or the stdin pipe, health
/// probes; until the init is reaped and its outputs are drained (at most 2 s more).
#[allow(clippy::too_many_arguments)]
fn relay(
    sh: &Shared<'_>,
    sink: &mut Sink,
    server: &mut attach::Server,
    pid: i32,
    master: Option<&OwnedFd>,
    mut outputs: Vec<(OwnedFd, Stream)>,
    mut stdin_w: Option<OwnedFd>,
    health: &mut Option<Checker>,
    started: Instant,
) -> Result<Relayed> {
    let (store, rec) = (sh.store, sh.rec);
    let interactive = rec.config.interactive;
    let mut status: Option<libc::c_int> = None;
    let mut user_stop = false;
    let mut unhealthy = false;
    let mut drain_deadline: Option<Instant> = None;
    let mut buf = vec![0u8; 8 * attach::CHUNK];
    // Input for the pty or the stdin pipe that it did not take yet (a pipe is closed once
    // written when asked). Never a blocking write: a container that reads no input while it
    // writes output would block us, and its output with us.
    let mut stdin_queue: Vec<u8> = Vec::new();
    let mut close_stdin = false;
    if let Some(m) = master
        && let Err(e) = nix::fcntl::fcntl(
            m,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
    {
        tracing::warn!("cannot make the pty master non-blocking: {e}");
    }
    // The pipes and the pty master (one open file with its duplicate in `outputs`) are
    // non-blocking and drained at each wakeup.
    let mut drains: Vec<bool> = outputs
        .iter()
        .map(|(fd, _)| {
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).is_ok_and(|fl| {
                nix::fcntl::OFlag::from_bits_truncate(fl).contains(nix::fcntl::OFlag::O_NONBLOCK)
            })
        })
        .collect();
    loop {
        if status.is_some() && outputs.is_empty() {
            break;
        }
        let held_back = server.held_back();
        let mut pfds: Vec<libc::pollfd> = Vec::with_capacity(outputs.len() + 4);
        pfds.push(libc::pollfd {
            fd: sh.sigfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        for (fd, _) in &outputs {
            pfds.push(libc::pollfd {
                // A client's queue is full: the output waits (poll skips a negative fd).
                fd: if held_back { -1 } else { fd.as_raw_fd() },
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let input_fd = master.or(stdin_w.as_ref()).map(|f| f.as_raw_fd());
        if let Some(w) = input_fd
            && !stdin_queue.is_empty()
        {
            pfds.push(libc::pollfd {
                fd: w,
                events: libc::POLLOUT,
                revents: 0,
            });
        }
        let first_client = server.poll_fds(&mut pfds, stdin_queue.len() < STDIN_QUEUE);
        let now = Instant::now();
        if let Some(d) = drain_deadline
            && d <= now
        {
            break;
        }
        let wake = [
            drain_deadline,
            // No more probes once it is unhealthy: its killing is on its way.
            health
                .as_ref()
                .filter(|_| status.is_none() && !unhealthy)
                .map(Checker::wake),
            server.wake(),
        ]
        .into_iter()
        .flatten()
        .min();
        let timeout = match wake {
            Some(w) => w.saturating_duration_since(now).as_millis() as libc::c_int + 1,
            None => -1,
        };
        // SAFETY: pfds is a valid array of pollfd of the length given.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("poll failed");
        }
        // Signals.
        if pfds[0].revents & libc::POLLIN != 0 {
            for sig in read_signals(sh.sigfd) {
                if sig == libc::SIGCHLD {
                    for (p, st) in reap_all() {
                        if p == pid {
                            status = Some(st);
                        } else if let Some(c) = health {
                            c.reaped(p, st);
                        }
                    }
                } else if sig == libc::SIGWINCH {
                    if let (Some(m), Some(ws)) = (master, sys::get_winsize(0)) {
                        sys::set_winsize(m.as_raw_fd(), &ws);
                    }
                } else {
                    // Also when the container is already gone: Ctrl-C may reach it and us
                    // at once, and must not read as a crash to restart.
                    if ENDING.contains(&sig) {
                        user_stop = true;
                    }
                    if status.is_none() {
                        // SAFETY: kill on our own child, which has not been reaped yet.
                        unsafe { libc::kill(pid, sig) };
                    }
                }
            }
        }
        // Output.
        let mut closed = Vec::new();
        for (i, (fd, stream)) in outputs.iter().enumerate() {
            let re = pfds[i + 1].revents;
            if re == 0 {
                continue;
            }
            match sys::read(fd.as_raw_fd(), &mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Ok(0) | Err(_) => closed.push(i),
                Ok(mut n) => {
                    // What else the pipe holds now, up to the buffer: one pass for a burst
                    // (its end of file is seen at the next wakeup).
                    while drains[i] && n < buf.len() {
                        match sys::read(fd.as_raw_fd(), &mut buf[n..]) {
                            Ok(m) if m > 0 => n += m,
                            _ => break,
                        }
                    }
                    sink.write(*stream, &buf[..n]);
                    server.broadcast(*stream == Stream::Stderr, &buf[..n]);
                }
            }
        }
        for i in closed.into_iter().rev() {
            outputs.remove(i);
            drains.remove(i);
        }
        // The clients: their input, resizes and signals.
        for input in server.handle(&pfds, first_client) {
            match input {
                Input::Stdin(data) if interactive && input_fd.is_some() => {
                    stdin_queue.extend_from_slice(&data)
                }
                Input::Stdin(_) => {}
                Input::CloseStdin => close_stdin = true,
                Input::Resize { rows, cols } => {
                    if let Some(m) = master {
                        let ws = libc::winsize {
                            ws_row: rows,
                            ws_col: cols,
                            ws_xpixel: 0,
                            ws_ypixel: 0,
                        };
                        sys::set_winsize(m.as_raw_fd(), &ws);
                    }
                }
                Input::Signal(sig) => {
                    if ENDING.contains(&sig) {
                        user_stop = true;
                    }
                    if status.is_none() && (1..=64).contains(&sig) {
                        // SAFETY: kill on our own child, which has not been reaped yet.
                        unsafe { libc::kill(pid, sig) };
                    }
                }
            }
        }
        // The pty or the stdin pipe: what it takes now; a pipe is closed after the last byte
        // once asked (a terminal has no end of input to send).
        if let Some(w) = master.or(stdin_w.as_ref())
            && (!stdin_queue.is_empty() || close_stdin)
        {
            let mut gone = false;
            while !stdin_queue.is_empty() {
                match nix::unistd::write(w, &stdin_queue) {
                    Ok(n) => {
                        stdin_queue.drain(..n);
                    }
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(nix::errno::Errno::EAGAIN) => break,
                    Err(_) => {
                        gone = true;
                        break;
                    }
                }
            }
            if gone {
                stdin_queue.clear();
            }
            if master.is_none() && (gone || (close_stdin && stdin_queue.is_empty())) {
                stdin_w = None;
            }
        }
        // Health checks.
        if status.is_none()
            && !unhealthy
            && let Some(c) = health.as_mut()
            && c.step(store, &rec.id, started)
        {
            unhealthy = true;
            tracing::warn!("container {} is unhealthy: killing it", rec.short_id());
            // SAFETY: kill on our own child, which has not been reaped yet.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if status.is_some() && drain_deadline.is_none() {
            // Init is gone, so is its pid namespace: outputs close promptly. Bound the wait
            // in case something outside holds a pipe.
            drain_deadline = Some(Instant::now() + Duration::from_secs(2));
        }
    }
    Ok(Relayed {
        status,
        user_stop,
        unhealthy,
    })
}

/// The run's exit code (128+N for signal N) and signal, and its cgroup's figures (the
/// cgroup is removed).
fn run_outcome(
    status: Option<libc::c_int>,
    cgroup: Option<&dyn ContainerCgroup>,
    rec: &container::Record,
) -> (i32, Option<i32>, Stats) {
    let status = status.unwrap_or(0);
    let (exit_code, signal) = if libc::WIFSIGNALED(status) {
        let s = libc::WTERMSIG(status);
        (128 + s, Some(s))
    } else {
        (libc::WEXITSTATUS(status), None)
    };
    let stats = match cgroup {
        Some(cg) => {
            let s = cg.stats();
            if let Err(e) = cg.destroy() {
                tracing::warn!("cannot remove the cgroup of {}: {e:#}", rec.short_id());
            }
            s
        }
        None => Default::default(),
    };
    (exit_code, signal, stats)
}

/// Reaps every exited child (the container's init, health probes, orphans we adopted as a
/// subreaper); returns (pid, status) of each.
fn reap_all() -> Vec<(i32, libc::c_int)> {
    let mut out = Vec::new();
    loop {
        let mut st = 0;
        // SAFETY: waitpid with a valid status pointer.
        let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
        if r <= 0 {
            break;
        }
        out.push((r, st));
    }
    out
}

/// A probe in flight: `wharf exec` of the check, its output in a memfd.
struct Running {
    pid: i32,
    output: File,
    start_ns: i64,
    deadline: Instant,
    timed_out: bool,
    /// Printed by `wharf exec` before an error of its own (`health::PROBE_TOKEN_ENV`).
    token: String,
}

/// The health checks of one run.
struct Checker {
    /// A sealed memfd copy of wharf (`sys::sealed_exe_copy`, made at the first probe): the
    /// probes run from it, never from a path of the host's binary (CVE-2019-5736).
    exe: Option<OwnedFd>,
    cfg: HealthConfig,
    state: HealthState,
    next: Instant,
    probe: Option<Running>,
    /// The status of the probe, once reaped.
    done: Option<libc::c_int>,
}

impl Checker {
    fn new(cfg: &HealthConfig, started: Instant) -> Checker {
        Checker {
            exe: None,
            cfg: cfg.clone(),
            state: HealthState::default(),
            next: started + cfg.interval(),
            probe: None,
            done: None,
        }
    }

    /// When the monitor must look at the checks next.
    fn wake(&self) -> Instant {
        match &self.probe {
            Some(p) if self.done.is_none() && !p.timed_out => p.deadline,
            // A finished or killed probe: right away, once reaped.
            Some(_) => Instant::now() + Duration::from_millis(20),
            None => self.next,
        }
    }

    fn save(&self, store: &Store, id: &str) {
        if let Err(e) = health::save(store, id, &self.state) {
            tracing::warn!("cannot save the health of {id}: {e:#}");
        }
    }

    fn reaped(&mut self, pid: i32, st: libc::c_int) {
        if self.probe.as_ref().is_some_and(|p| p.pid == pid) {
            self.done = Some(st);
        }
    }

    /// Starts, times out or concludes a probe as due; true when the container just became
    /// unhealthy.
    fn step(&mut self, store: &Store, id: &str, started: Instant) -> bool {
        let now = Instant::now();
        if let Some(p) = &mut self.probe {
            if let Some(st) = self.done.take() {
                let Some(p) = self.probe.take() else {
                    return false;
                };
                let mut data = vec![0u8; health::MAX_OUTPUT];
                let n = p.output.read_at(&mut data, 0).unwrap_or(0);
                data.truncate(n);
                let (code, output) = if p.timed_out {
                    (
                        -1,
                        format!(
                            "Health check exceeded timeout ({})",
                            humantime::format_duration(self.cfg.timeout())
                        ),
                    )
                } else if libc::WIFSIGNALED(st) {
                    (
                        128 + libc::WTERMSIG(st),
                        String::from_utf8_lossy(&data).into_owned(),
                    )
                } else {
                    (
                        libc::WEXITSTATUS(st),
                        String::from_utf8_lossy(&data).into_owned(),
                    )
                };
                if !p.timed_out
                    && let Some(output) = health::probe_could_not_run(code, &output, &p.token)
                {
                    // wharf could not run the probe (exit 125): not the container's failure.
                    tracing::warn!("the health check of {id} could not run: {}", output.trim());
                    self.state.record_not_run(Probe {
                        start: p.start_ns,
                        end: now_ns(),
                        exit_code: code,
                        output,
                    });
                    self.save(store, id);
                    self.next = now + self.cfg.interval();
                    return false;
                }
                let probe = Probe {
                    start: p.start_ns,
                    end: now_ns(),
                    exit_code: code,
                    output,
                };
                let before = self.state.status.clone();
                let turned = self.state.record(&self.cfg, probe, started.elapsed());
                if self.state.status != before
                    && let Err(e) = container::set_health(store, id, &self.state.status)
                {
                    tracing::warn!("cannot record the health of {id}: {e:#}");
                }
                self.save(store, id);
                self.next = now + self.cfg.interval();
                return turned;
            }
            if !p.timed_out && now >= p.deadline {
                // SAFETY: kill on our own child, not reaped yet (`done` is unset).
                unsafe { libc::kill(p.pid, libc::SIGKILL) };
                p.timed_out = true;
            }
            return false;
        }
        if now >= self.next {
            match self.spawn(store, id) {
                Ok(p) => self.probe = Some(p),
                Err(e) => {
                    tracing::warn!("cannot run the health check of {id}: {e:#}");
                    self.next = now + self.cfg.interval();
                }
            }
        }
        false
    }

    /// `wharf --root ROOT exec ID ARGV...`, in its own session, signals unblocked, stdout
    /// and stderr to a memfd.
    fn spawn(&mut self, store: &Store, id: &str) -> Result<Running> {
        let exe = match &self.exe {
            Some(fd) => fd.as_raw_fd(),
            None => {
                let fd = sys::sealed_exe_copy().context("cannot make a sealed copy of wharf")?;
                self.exe.insert(fd).as_raw_fd()
            }
        };
        // SAFETY: a NUL-terminated name; the result is checked.
        let fd = unsafe { libc::memfd_create(c"wharf-health".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("memfd_create");
        }
        // SAFETY: a new descriptor owned by nothing else.
        let output = unsafe { File::from_raw_fd(fd) };
        let token = crate::store::random_hex(16);
        // The descriptor is close-on-exec: exec opens it before closing it.
        let mut cmd = std::process::Command::new(format!("/proc/self/fd/{exe}"));
        cmd.env(health::PROBE_TOKEN_ENV, &token)
            .arg("--root")
            .arg(store.root())
            .arg("exec")
            .arg(id)
            .args(self.cfg.argv())
            .stdin(std::process::Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output.try_clone()?);
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
        // syscalls (setsid, sigprocmask) on this process.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                Ok(())
            });
        }
        let child = cmd.spawn().context("cannot start wharf exec")?;
        let pid = child.id() as i32;
        drop(child); // reaped by the monitor's SIGCHLD loop
        Ok(Running {
            pid,
            output,
            start_ns: now_ns(),
            deadline: Instant::now() + self.cfg.timeout(),
            timed_out: false,
            token,
        })
    }

    /// The run ended: kill a probe in flight (the SIGCHLD loop or the next run reaps it).
    fn abandon(&mut self) {
        if let Some(p) = self.probe.take()
            && self.done.is_none()
        {
            // SAFETY: kill on our own child; not reaped yet (`done` is unset).
            unsafe { libc::kill(p.pid, libc::SIGKILL) };
        }
    }
}

/// Entry point of `wharf __monitor <id>`: make this process a child subreaper that the OOM
/// killer spares, then run the container, reporting the start on `ready_fd`.
///
/// `attach_fd`: a connected attach socket, the `run -i` that spawned us (`winsize`: its
/// terminal's size, for the pty from the start).
pub fn detached_main(
    store: &Store,
    id: &str,
    ready_fd: RawFd,
    attach_fd: Option<RawFd>,
    winsize: Option<(u16, u16)>,
) -> Result<i32> {
    // SAFETY: prctl with plain integers; ready_fd and attach_fd were handed to us by the
    // wharf that spawned us and are ours.
    let (ready, client) = unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        (
            OwnedFd::from_raw_fd(ready_fd),
            attach_fd.map(|fd| OwnedFd::from_raw_fd(fd)),
        )
    };
    let _ = std::fs::write("/proc/self/oom_score_adj", "-999");
    let from = Owner::parent().context("the wharf that started this monitor is gone")?;
    let winsize = winsize.map(|(rows, cols)| libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    });
    run(
        store,
        id,
        from,
        Attach::Detached {
            ready,
            client,
            winsize,
        },
    )
}
