//! The monitor: the process that owns one run of a container. It starts it, relays its
//! stdio, forwards signals, reaps it, records the exit, and cleans up.
//!
//! A foreground `wharf run` is the monitor of its container. A detached container's monitor
//! is `wharf __monitor <id>` (re-exec of /proc/self/exe by `run -d`, in its own session, a
//! child subreaper) whose stdio is /dev/null: it writes the container's output to the log.
//!
//! Everything is one thread and one `poll` loop over a signalfd, the container's output
//! (pty master or pipes) and, when attached with `-i`, our stdin.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{Context, Result};

use super::launch::{self, Launched};
use super::logs::{LogWriter, Stream};
use super::sys;
use crate::container::{self, Outcome};
use crate::error::{exit, user};
use crate::store::Store;

/// How the monitor is attached to the caller.
pub enum Attach {
    /// `wharf run` or `wharf start -a` in the foreground: the container uses our terminal
    /// or stdio; our stdin is forwarded with `stdin` (`-i`).
    Foreground { stdin: bool },
    /// A detached monitor: output goes to the log; `ready` hears `ok` or the start error.
    Detached { ready: OwnedFd },
}

pub(super) const FORWARDED: [libc::c_int; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Blocks the signals the monitor handles and returns a signalfd for them. The child
/// unblocks them before exec.
pub(super) fn signal_fd() -> Result<OwnedFd> {
    // SAFETY: a sigset_t is plain data, initialised by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a valid sigset_t; the signals are valid numbers.
    let fd = unsafe {
        libc::sigemptyset(&mut set);
        for s in FORWARDED.iter().chain(&[libc::SIGCHLD, libc::SIGWINCH]) {
            libc::sigaddset(&mut set, *s);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK)
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("cannot create a signalfd");
    }
    // SAFETY: a new descriptor owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The host terminal in raw mode; restored on drop (error paths and panics included).
pub(super) struct RawMode {
    fd: RawFd,
    saved: libc::termios,
}

impl RawMode {
    pub(super) fn enter(fd: RawFd) -> Option<RawMode> {
        // SAFETY: termios is plain data, filled by tcgetattr.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: t is a valid termios; fd is ours to query.
        if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
            return None;
        }
        let saved = t;
        // SAFETY: as above.
        unsafe {
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(fd, libc::TCSANOW, &t);
        }
        Some(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the attributes read from the same descriptor.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

fn open_devnull() -> Result<File> {
    File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .context("cannot open /dev/null")
}

/// Where output goes.
enum Sink {
    Fds,
    Log(LogWriter),
}

impl Sink {
    fn write(&mut self, stream: Stream, data: &[u8]) {
        match self {
            Sink::Fds => {
                let fd = if stream == Stream::Stderr { 2 } else { 1 };
                let _ = sys::write_all(fd, data);
            }
            Sink::Log(w) => {
                if let Err(e) = w.write(stream, data) {
                    tracing::warn!("cannot write the log: {e}");
                }
            }
        }
    }
}

/// Runs the container `id` (recorded, not running) to its end. Returns the exit code as `run`
/// reports it.
pub fn run(store: &Store, id: &str, attach: Attach) -> Result<i32> {
    let (mut ready, stdin) = match attach {
        Attach::Detached { ready } => (Some(ready), false),
        Attach::Foreground { stdin } => (None, stdin),
    };
    let res = run_inner(store, id, &mut ready, stdin);
    if let (Err(e), Some(ready)) = (&res, &ready) {
        // Not started yet: tell `run -d` why.
        let code = crate::error::exit_code(e);
        let code = if code == exit::ERROR {
            exit::RUNTIME
        } else {
            code
        };
        let (m, h) = match crate::error::find_user_error(e) {
            Some(u) => (u.message.clone(), u.hint.clone().unwrap_or_default()),
            None => (format!("{e:#}"), String::new()),
        };
        let _ = sys::write_all(ready.as_raw_fd(), format!("E{code}\n{m}\n{h}").as_bytes());
    }
    res
}

/// `ready` is taken (written `ok` and closed) once the command runs.
fn run_inner(
    store: &Store,
    id: &str,
    ready: &mut Option<OwnedFd>,
    attach_stdin: bool,
) -> Result<i32> {
    let rec = container::find(store, id)?;
    // Refuse a second owner; the one that created the record (this foreground `run`, or the
    // `run -d` that spawned us) hands over.
    let me = std::process::id() as i32;
    if rec.state == "running" && rec.live_monitor().is_some_and(|m| m != me) {
        return Err(user(format!("container {} is already running", rec.name))
            .hint("`wharf stop` it first")
            .code(exit::RUNTIME)
            .into());
    }
    container::claim(store, &rec.id)?;
    let sigfd = signal_fd()?;
    let cfg = rec.config.clone();
    let detached = ready.is_some();

    // Descriptors for the container's stdio without a tty, and what we read from.
    let devnull = open_devnull()?;
    let mut outputs: Vec<(OwnedFd, Stream)> = Vec::new();
    let mut child_ends: Vec<OwnedFd> = Vec::new();
    let stdio: [RawFd; 3] = if detached && !cfg.tty {
        let (r1, w1) = sys::pipe()?;
        let (r2, w2) = sys::pipe()?;
        outputs.push((r1, Stream::Stdout));
        outputs.push((r2, Stream::Stderr));
        let fds = [devnull.as_raw_fd(), w1.as_raw_fd(), w2.as_raw_fd()];
        child_ends.push(w1);
        child_ends.push(w2);
        fds
    } else {
        let stdin = if attach_stdin && !detached {
            0
        } else {
            devnull.as_raw_fd()
        };
        [stdin, 1, 2]
    };
    let mut sink = if detached {
        let path = container::log_path(store, &rec.id);
        let dir = store.container_dir(&rec.id);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Sink::Log(
            LogWriter::with_policy(
                &path,
                crate::retention::log_policy(store, rec.project.as_deref()),
            )
            .with_context(|| format!("cannot open {}", path.display()))?,
        )
    } else {
        Sink::Fds
    };

    let winsize = if cfg.tty && !detached {
        sys::get_winsize(0).or_else(|| sys::get_winsize(1))
    } else {
        None
    };
    let launched = launch::launch(store, &rec, stdio, winsize);
    drop(child_ends);
    let Launched {
        pid,
        master,
        cgroup,
    } = match launched {
        Ok(l) => l,
        Err(e) => {
            let code = crate::error::exit_code(&e);
            let out = Outcome {
                exit_code: if code == exit::ERROR {
                    exit::RUNTIME
                } else {
                    code
                },
                ..Outcome::default()
            };
            let _ = container::mark_exited(store, &rec.id, None, &out, cfg.auto_remove);
            if cfg.auto_remove {
                container::remove_files(store, &rec.id);
                crate::volume::remove_anonymous(store, &cfg.volumes);
            }
            return Err(e);
        }
    };
    let run_id = container::mark_running(store, &rec.id, pid).ok();
    if let Some(ready) = ready.take() {
        let _ = sys::write_all(ready.as_raw_fd(), b"ok");
    }

    // The terminal: raw mode on ours, the size copied now and on SIGWINCH.
    let mut raw = None;
    let mut stdin_open = false;
    if let Some(m) = &master {
        if !detached {
            if let Some(ws) = sys::get_winsize(0).or_else(|| sys::get_winsize(1)) {
                sys::set_winsize(m.as_raw_fd(), &ws);
            }
            if attach_stdin {
                raw = RawMode::enter(0);
                stdin_open = true;
            }
        }
        match m.try_clone() {
            Ok(c) => outputs.push((c, Stream::Stdout)),
            Err(e) => tracing::warn!("cannot duplicate the pty master: {e}"),
        }
    }

    let mut status: Option<libc::c_int> = None;
    let mut drain_deadline: Option<std::time::Instant> = None;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        if status.is_some() && outputs.is_empty() {
            break;
        }
        let mut pfds: Vec<libc::pollfd> = Vec::with_capacity(outputs.len() + 2);
        pfds.push(libc::pollfd {
            fd: sigfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        for (fd, _) in &outputs {
            pfds.push(libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let stdin_idx = pfds.len();
        if stdin_open && status.is_none() {
            pfds.push(libc::pollfd {
                fd: 0,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let timeout = match drain_deadline {
            Some(d) => {
                let left = d.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                left.as_millis() as libc::c_int + 1
            }
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
            // SAFETY: signalfd_siginfo is plain data; read fills it.
            let mut si: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            loop {
                // SAFETY: si is a writable buffer of `size` bytes.
                let r = unsafe {
                    libc::read(
                        sigfd.as_raw_fd(),
                        (&mut si as *mut libc::signalfd_siginfo).cast(),
                        size,
                    )
                };
                if r != size as isize {
                    break;
                }
                let sig = si.ssi_signo as libc::c_int;
                if sig == libc::SIGCHLD {
                    reap(pid, &mut status);
                } else if sig == libc::SIGWINCH {
                    if let (Some(m), Some(ws)) = (&master, sys::get_winsize(0)) {
                        sys::set_winsize(m.as_raw_fd(), &ws);
                    }
                } else if status.is_none() {
                    // SAFETY: kill on our own child, which has not been reaped yet.
                    unsafe { libc::kill(pid, sig) };
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
                Ok(0) | Err(_) => closed.push(i),
                Ok(n) => sink.write(*stream, &buf[..n]),
            }
        }
        for i in closed.into_iter().rev() {
            outputs.remove(i);
        }
        // Input.
        if stdin_idx < pfds.len() && pfds[stdin_idx].revents != 0 {
            match sys::read(0, &mut buf) {
                Ok(n) if n > 0 => {
                    if let Some(m) = &master {
                        let _ = sys::write_all(m.as_raw_fd(), &buf[..n]);
                    }
                }
                _ => stdin_open = false,
            }
        }
        if status.is_some() && drain_deadline.is_none() {
            // Init is gone, so is its pid namespace: outputs close promptly. Bound the wait
            // in case something outside holds a pipe.
            drain_deadline = Some(std::time::Instant::now() + std::time::Duration::from_secs(2));
        }
    }
    drop(raw);
    drop(master);

    let status = status.unwrap_or(0);
    let (exit_code, signal) = if libc::WIFSIGNALED(status) {
        let s = libc::WTERMSIG(status);
        (128 + s, Some(s))
    } else {
        (libc::WEXITSTATUS(status), None)
    };
    let stats = match &cgroup {
        Some(cg) => {
            let s = cg.stats();
            if let Err(e) = cg.destroy() {
                tracing::warn!("cannot remove the cgroup of {}: {e:#}", rec.short_id());
            }
            s
        }
        None => Default::default(),
    };
    let out = Outcome {
        exit_code,
        signal,
        stats,
    };
    container::mark_exited(store, &rec.id, run_id, &out, cfg.auto_remove)?;
    if cfg.auto_remove {
        container::remove_files(store, &rec.id);
        crate::volume::remove_anonymous(store, &cfg.volumes);
    }
    Ok(exit_code)
}

/// Reaps every exited child; records the container init's status.
fn reap(pid: i32, status: &mut Option<libc::c_int>) {
    loop {
        let mut st = 0;
        // SAFETY: waitpid with a valid status pointer.
        let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
        if r <= 0 {
            break;
        }
        if r == pid {
            *status = Some(st);
        }
    }
}

/// Entry point of `wharf __monitor <id>`: make this process a child subreaper that the OOM
/// killer spares, then run the container, reporting the start on `ready_fd`.
pub fn detached_main(store: &Store, id: &str, ready_fd: RawFd) -> Result<i32> {
    // SAFETY: prctl with plain integers; ready_fd was handed to us by `run -d` and is ours.
    let ready = unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        OwnedFd::from_raw_fd(ready_fd)
    };
    let _ = std::fs::write("/proc/self/oom_score_adj", "-999");
    run(store, id, Attach::Detached { ready })
}
