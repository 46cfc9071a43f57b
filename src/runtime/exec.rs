//! `wharf exec`: a new process inside a running container.
//!
//! The CLI first re-executes `wharf exec` from a sealed memfd copy of its binary
//! (`sys::reexec_sealed`, runc's CVE-2019-5736 fix), so the process it puts into the
//! container, and whatever that process runs as `/proc/self/exe`, can never write the host's
//! binary. The container's init is pinned by a pidfd and descriptors of its
//! `/proc/<pid>/ns/*`, opened and then checked against the recorded start time, so a
//! recycled pid is never joined. wharf stays on the host. It forks an intermediate, which is
//! invisible inside (host pid namespace) and not dumpable: it writes "0" to the container's
//! cgroup files (opened by wharf on the host), enters every namespace of the container
//! (`setns(pidfd, ...)` in one call on Linux >= 5.8: mount, uts, ipc, net, cgroup, and pid
//! for its children; one setns per descriptor, mount last, on older kernels), then forks the
//! process with CLONE_PARENT and reports its pid. That process is thus born inside every
//! namespace and the cgroup, as wharf's child (wharf reaps it and forwards signals to it);
//! nothing in the container ever sees it with the host's root or mounts. It allocates its
//! pty inside the container with `-t`, takes the container's user, capabilities,
//! `no_new_privs` and seccomp filter, and execs. The sync protocol is `launch`'s: "g"
//! (+ terminal size) down, `T` + pty master and `E` + code + message up, EOF on a
//! successful exec.
//!
//! With `-d`, an intermediate process (own session, stdio on /dev/null) does all of that and
//! waits for the command, so it is reaped outside the container, not left a zombie of the
//! container's init.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{Context, Result};

use super::cgroup::{self, ContainerCgroup};
use super::channel::{self, Exec, FromChild, ToChild, exec_hint};
use super::child::{self, ChildError, Never};
use super::tty::{FORWARDED, RawMode, read_signals, signal_fd};
use super::{spec, sys};
use crate::container::{self, Record};
use crate::error::{exit, user};
use crate::model::ContainerState;

/// What `wharf exec` asks for.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub command: Vec<String>,
    pub interactive: bool,
    pub tty: bool,
    pub detach: bool,
    /// `-e K=V` (or `K`, copied from wharf's environment), over the container's.
    pub env: Vec<String>,
    /// Default: the container's working directory.
    pub working_dir: Option<String>,
    /// Default: the container's user.
    pub user: Option<String>,
}

/// What the forked child needs, prepared before the fork.
struct ExecSpec {
    args: Vec<CString>,
    env: Vec<String>,
    working_dir: String,
    user: Option<String>,
    caps: u64,
    tty: bool,
    stdio: [RawFd; 3],
    /// The container's seccomp filter (compiled or cached), None: unconfined.
    seccomp: Option<Vec<u8>>,
    no_new_privs: bool,
    /// The container's `--ulimit`s: an exec'd process gets them too, as in docker.
    rlimits: Vec<(libc::__rlimit_resource_t, u64, u64)>,
}

fn runtime_err(msg: String, hint: &str) -> anyhow::Error {
    user(msg).hint(hint).code(exit::RUNTIME).into()
}

/// pidfd_open(2).
fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes plain integers.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor (close-on-exec) owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The namespaces of a container's init, pinned before its start time is checked.
struct Target {
    /// None where pidfd_open is missing (Linux < 5.3).
    pidfd: Option<OwnedFd>,
    /// `/proc/<pid>/ns/*` in join order, pid first: the way in on kernels whose setns takes
    /// no pidfd (< 5.8).
    ns: Vec<(OwnedFd, libc::c_int)>,
}

/// The namespaces the exec'd process joins after the pid namespace, in order: the mount
/// namespace last (the other paths are the host's /proc until then).
const REST: [(&str, libc::c_int); 5] = [
    ("cgroup", libc::CLONE_NEWCGROUP),
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("net", libc::CLONE_NEWNET),
    ("mnt", libc::CLONE_NEWNS),
];

impl Target {
    /// Pins the process `pid` if it still is the one that started at `start`; None if not.
    fn open(pid: i32, start: u64) -> Result<Option<Target>> {
        let pidfd = match pidfd_open(pid) {
            Ok(fd) => Some(fd),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => None,
            Err(e) => return Err(e).context("cannot open the container's init (pidfd_open)"),
        };
        let mut ns = Vec::with_capacity(6);
        for (name, flag) in [("pid", libc::CLONE_NEWPID)].into_iter().chain(REST) {
            match std::fs::File::open(format!("/proc/{pid}/ns/{name}")) {
                Ok(f) => ns.push((OwnedFd::from(f), flag)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot open /proc/{pid}/ns/{name}"));
                }
            }
        }
        // Opened first, checked after: with the start time unchanged, every descriptor is
        // the recorded process's, whatever happens to the pid number later.
        if container::proc_start_time(pid) != Some(start) {
            return Ok(None);
        }
        Ok(Some(Target { pidfd, ns }))
    }

    /// Enters every namespace of the container: the mount, uts, ipc, net and cgroup ones for
    /// this process, the pid one for its children. With a pidfd (Linux >= 5.8) in one
    /// setns, all or nothing; else one per descriptor, the mount namespace last.
    fn enter_all(&self) -> std::io::Result<()> {
        if let Some(fd) = &self.pidfd {
            let all = REST.iter().fold(libc::CLONE_NEWPID, |acc, (_, f)| acc | f);
            match setns(fd.as_raw_fd(), all) {
                Ok(()) => return Ok(()),
                // A kernel before 5.8: setns takes no pidfd.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => return Err(e),
            }
        }
        for (fd, flag) in &self.ns {
            setns(fd.as_raw_fd(), *flag)?;
        }
        Ok(())
    }
}

/// setns(2) on a namespace descriptor, or on a pidfd (Linux ≥ 5.8: every namespace in
/// `flags` of that process at once).
fn setns(fd: RawFd, flags: libc::c_int) -> std::io::Result<()> {
    // SAFETY: setns takes plain integers.
    if unsafe { libc::setns(fd, flags) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `opts.command` in the running container `input`; returns the command's exit code
/// (0 at once with `-d`). 126/127: not executable / not found; 125: wharf's failure.
/// `root` is the state root (its seccomp filter cache).
pub fn exec(root: &std::path::Path, rec: &Record, opts: &ExecOptions) -> Result<i32> {
    let not_running = || -> anyhow::Error {
        user(format!("container {} is not running", rec.name))
            .hint(format!("start it first: `wharf start {}`", rec.name))
            .code(exit::RUNTIME)
            .into()
    };
    let (Some(pid), Some(start)) = (rec.pid, rec.pid_start) else {
        return Err(not_running());
    };
    if rec.state != ContainerState::Running {
        return Err(not_running());
    }
    let Some(target) = Target::open(pid, start)? else {
        return Err(not_running());
    };
    if opts.command.is_empty() {
        return Err(runtime_err(
            "no command given".into(),
            "give the command after the container: `wharf exec NAME ls /`",
        ));
    }
    let cfg = &rec.config;
    let mut env = cfg.env.clone();
    if opts.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    for e in &opts.env {
        spec::set_env(&mut env, e)?;
    }
    let working_dir = opts
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| cfg.working_dir.clone());
    if !working_dir.starts_with('/') {
        return Err(runtime_err(
            format!("the working directory {working_dir:?} is not an absolute path"),
            "give -w an absolute path such as /tmp",
        ));
    }
    let args = opts
        .command
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| runtime_err("the command holds a NUL byte".into(), "remove it"))?;
    let Some(cg) = cgroup::open(&rec.id) else {
        return Err(runtime_err(
            format!("the cgroup of container {} is missing", rec.name),
            "restart the container: `wharf restart NAME`",
        ));
    };
    let devnull = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .context("cannot open /dev/null")?;
    let dn = devnull.as_raw_fd();
    let caps = spec::capability_mask(cfg)?;
    let seccomp = super::seccomp::filter_for(root, &cfg.security, caps, cfg.privileged)
        .context("cannot prepare the container's seccomp filter")?;
    let spec = ExecSpec {
        seccomp,
        no_new_privs: child::no_new_privs(cfg.privileged, &cfg.security),
        args,
        env,
        working_dir,
        user: opts.user.clone().or_else(|| cfg.user.clone()),
        caps,
        rlimits: cfg
            .ulimits
            .iter()
            .filter_map(|u| u.resource().map(|r| (r, u.soft, u.hard)))
            .collect(),
        tty: opts.tty,
        stdio: if opts.detach {
            [dn, dn, dn]
        } else if opts.interactive {
            [0, 1, 2]
        } else {
            [dn, 1, 2]
        },
    };
    if opts.detach {
        return detach(&target, cg.as_ref(), &spec);
    }
    let sigfd = signal_fd()?;
    let winsize = if opts.tty {
        sys::get_winsize(0).or_else(|| sys::get_winsize(1))
    } else {
        None
    };
    let (child, master) = launch(&target, cg.as_ref(), &spec, winsize)?;
    drop(devnull);
    relay(child, master, &sigfd, opts.interactive)
}

/// Enters the container's pid namespace (for our children), forks the child, moves it into
/// the cgroup and releases it. Returns its pid and, with a tty, the pty master, once the
/// command runs; or the error that stopped it.
fn launch(
    target: &Target,
    cg: &dyn ContainerCgroup,
    spec: &ExecSpec,
    winsize: Option<libc::winsize>,
) -> Result<(i32, Option<OwnedFd>)> {
    // The cgroup's files, opened here on the host: `tasks` of each v1 hierarchy and
    // `cgroup.procs` of the cgroup2 directory. The intermediate writes "0" to each (moving
    // itself) before it enters the container's mount namespace, where these paths are the
    // container's read-only view.
    let entry = cg.entry().context("cannot open the container's cgroup")?;
    let mut join = entry.self_join;
    if let Some(dir) = &entry.clone_into {
        // SAFETY: openat on a directory descriptor we own, with a NUL-terminated name.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                c"cgroup.procs".as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error())
                .context("cannot open the container's cgroup.procs");
        }
        // SAFETY: a new descriptor owned by nothing else.
        join.push(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let (parent_sock, child_sock) = sys::seqpacket_pair().context("cannot create a socket pair")?;
    let (report_r, report_w) = sys::pipe().context("cannot create a pipe")?;
    // An intermediate process on the host (invisible inside) joins the cgroup and every
    // namespace, then forks the process with CLONE_PARENT: it is born inside everything
    // (as runc's nsexec does), our child, and never seen in the host's mount namespace.
    let mid = sys::clone_fork(0).context("cannot fork")?;
    if mid == 0 {
        drop(parent_sock);
        drop(report_r);
        intermediate(target, &join, spec, &child_sock, report_w);
    }
    drop(child_sock);
    drop(report_w);
    drop(join);
    let report = sys::read_to_end(report_r.as_raw_fd());
    // SAFETY: waitpid on our own child (it exits right after its report).
    unsafe { libc::waitpid(mid, std::ptr::null_mut(), 0) };
    let report = report.context("cannot read from the exec helper")?;
    let pid = match serde_json::from_slice::<FromChild>(&report) {
        Ok(FromChild::Born { pid }) => pid,
        Ok(FromChild::Failed { message, .. }) => {
            return Err(runtime_err(
                message,
                "wharf exec needs root (CAP_SYS_ADMIN)",
            ));
        }
        _ => anyhow::bail!("the exec helper died before the process started"),
    };
    let kill_child = || {
        // SAFETY: kill and waitpid on our own child's pid (ours through CLONE_PARENT).
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    };
    if let Err(e) = channel::send_to_child(parent_sock.as_raw_fd(), &ToChild::go(winsize)) {
        kill_child();
        return Err(anyhow::Error::new(e).context("cannot release the process"));
    }
    let master = match channel::await_exec(parent_sock.as_raw_fd()) {
        Ok(Exec::Ran { master }) => master,
        Ok(Exec::Failed { code, message }) => {
            // SAFETY: waitpid on our own child.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
            return Err(user(message).hint(exec_hint(code)).code(code).into());
        }
        Err(e) => {
            kill_child();
            return Err(anyhow::Error::new(e).context("sync with the process"));
        }
    };
    Ok((pid, master))
}

/// The intermediate, forked on the host: not dumpable (nothing inside can open its /proc
/// entries, nor those of the child it forks, until exec), into the cgroup (`join`), into
/// every namespace, then the child with CLONE_PARENT. Reports [`FromChild::Born`] with the
/// child's pid, or [`FromChild::Failed`], on `report`, and exits. Never returns, never panics.
fn intermediate(
    target: &Target,
    join: &[OwnedFd],
    spec: &ExecSpec,
    sync: &OwnedFd,
    report: OwnedFd,
) -> ! {
    let r = report.as_raw_fd();
    let fail = |what: &str, e: std::io::Error| -> ! {
        let failed = FromChild::Failed {
            code: exit::RUNTIME,
            message: format!("{what}: {e}"),
        };
        let _ = channel::send_to_parent(r, &failed, None);
        // SAFETY: _exit ends this forked process without running the parent's destructors.
        unsafe { libc::_exit(exit::RUNTIME) }
    };
    // SAFETY: prctl with plain integers.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    for f in join {
        if let Err(e) = sys::write_all(f.as_raw_fd(), b"0") {
            fail("cannot join the container's cgroup", e);
        }
    }
    if let Err(e) = target.enter_all() {
        fail("cannot enter the container's namespaces", e);
    }
    let pid = match sys::clone_fork(libc::CLONE_PARENT) {
        Ok(pid) => pid,
        Err(e) => fail("cannot fork into the container", e),
    };
    if pid == 0 {
        drop(report);
        child::finish(sync, || setup(spec, sync));
    }
    let code = match channel::send_to_parent(r, &FromChild::Born { pid }, None) {
        Ok(()) => 0,
        Err(_) => {
            // Nobody will release it: end it.
            // SAFETY: kill on the process we just forked.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            exit::RUNTIME
        }
    };
    // SAFETY: as above.
    unsafe { libc::_exit(code) }
}

/// The child, between fork and exec, born inside the container's cgroup and namespaces.
/// Runs in a forked copy of single-threaded wharf: no panics escape (`child::finish`),
/// every failure goes to the parent.
fn setup(spec: &ExecSpec, sync: &OwnedFd) -> Result<Never, ChildError> {
    let fd = sync.as_raw_fd();
    // SAFETY: prctl takes plain integers.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    // The parent may have died before PDEATHSIG was armed: await_go checks.
    let winsize = child::await_go(
        fd,
        "wharf went away before the process started",
        "wharf died during setup",
    )?;
    // The intermediate's joining the mount namespace put us at its root: the container's.
    nix::unistd::chdir("/").map_err(|e| child::err("cannot change to /", e.into()))?;
    let slave = if spec.tty {
        // SAFETY: a NUL-terminated path; the result is checked.
        let root = unsafe {
            libc::open(
                c"/".as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if root < 0 {
            return Err(child::err(
                "cannot open the root directory",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: a new descriptor owned by nothing else.
        let root = unsafe { OwnedFd::from_raw_fd(root) };
        Some(child::open_pty(root.as_raw_fd(), fd, winsize.as_ref())?)
    } else {
        None
    };
    child::stdio_setup(slave, &spec.stdio)?;
    let mut env = spec.env.clone();
    let ids = child::resolve_user(spec.user.as_deref())?;
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", ids.home));
    }
    child::set_rlimits(&spec.rlimits)?;
    child::set_privileges(spec.caps, spec.no_new_privs, &ids)?;
    if let Err(e) = nix::unistd::chdir(spec.working_dir.as_str()) {
        return Err(ChildError {
            code: exit::NOT_EXECUTABLE,
            msg: format!(
                "cannot change to the working directory {}: {}",
                spec.working_dir,
                std::io::Error::from(e)
            ),
        });
    }
    child::exec_clean(&spec.args, &env, spec.seccomp.as_deref())
}

/// Relays the pty (with `-t`), forwards signals, reaps the child; returns its exit code.
fn relay(pid: i32, master: Option<OwnedFd>, sigfd: &OwnedFd, interactive: bool) -> Result<i32> {
    let mut raw = None;
    let mut stdin_open = false;
    if let Some(m) = &master {
        if let Some(ws) = sys::get_winsize(0).or_else(|| sys::get_winsize(1)) {
            sys::set_winsize(m.as_raw_fd(), &ws);
        }
        if interactive {
            raw = RawMode::enter(0);
            stdin_open = true;
        }
    }
    let mut output = master.as_ref().map(|m| m.as_raw_fd());
    let mut status: Option<libc::c_int> = None;
    let mut drain_deadline: Option<std::time::Instant> = None;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        if status.is_some() && output.is_none() {
            break;
        }
        let mut pfds = Vec::with_capacity(3);
        pfds.push(libc::pollfd {
            fd: sigfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        let out_idx = output.map(|fd| {
            pfds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
            pfds.len() - 1
        });
        let in_idx = (stdin_open && status.is_none()).then(|| {
            pfds.push(libc::pollfd {
                fd: 0,
                events: libc::POLLIN,
                revents: 0,
            });
            pfds.len() - 1
        });
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
        if pfds[0].revents & libc::POLLIN != 0 {
            for sig in read_signals(sigfd) {
                if sig == libc::SIGCHLD {
                    let mut st = 0;
                    // SAFETY: waitpid on our own child with a valid status pointer.
                    if status.is_none()
                        && unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) } == pid
                    {
                        status = Some(st);
                    }
                } else if sig == libc::SIGWINCH {
                    if let (Some(m), Some(ws)) = (&master, sys::get_winsize(0)) {
                        sys::set_winsize(m.as_raw_fd(), &ws);
                    }
                } else if status.is_none() && FORWARDED.contains(&sig) {
                    // SAFETY: kill on our own child, which has not been reaped yet.
                    unsafe { libc::kill(pid, sig) };
                }
            }
        }
        if let (Some(i), Some(fd)) = (out_idx, output)
            && pfds[i].revents != 0
        {
            match sys::read(fd, &mut buf) {
                Ok(0) | Err(_) => output = None,
                Ok(n) => {
                    let _ = sys::write_all(1, &buf[..n]);
                }
            }
        }
        if let Some(i) = in_idx
            && pfds[i].revents != 0
        {
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
            // A process the command left in the background may hold the pty: bound the drain.
            drain_deadline = Some(std::time::Instant::now() + std::time::Duration::from_secs(2));
        }
    }
    drop(raw);
    drop(master);
    let status = match status {
        Some(s) => s,
        None => {
            let mut st = 0;
            // SAFETY: waitpid on our own child with a valid status pointer.
            unsafe { libc::waitpid(pid, &mut st, 0) };
            st
        }
    };
    Ok(if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        libc::WEXITSTATUS(status)
    })
}

/// `-d`: an intermediate process in its own session starts the command and waits for it;
/// we return once the command runs (or with the error that stopped it).
fn detach(target: &Target, cg: &dyn ContainerCgroup, spec: &ExecSpec) -> Result<i32> {
    let (r, w) = sys::pipe().context("cannot create a pipe")?;
    let m = sys::clone_fork(0).context("cannot fork")?;
    if m == 0 {
        drop(r);
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // SAFETY: setsid takes no arguments.
            unsafe { libc::setsid() };
            // Nothing of the caller's stdio stays open here (a pipe would wait for us).
            for i in 0..3 {
                let _ = sys::dup2(spec.stdio[0], i);
            }
            match launch(target, cg, spec, None) {
                Ok((pid, _)) => {
                    let _ = sys::write_all(w.as_raw_fd(), b"ok");
                    drop(w);
                    // SAFETY: waitpid on our own child.
                    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
                    0
                }
                Err(e) => {
                    let code = crate::error::exit_code(&e);
                    let (msg, hint) = match crate::error::find_user_error(&e) {
                        Some(u) => (u.message.clone(), u.hint.clone().unwrap_or_default()),
                        None => (format!("{e:#}"), String::new()),
                    };
                    let _ =
                        sys::write_all(w.as_raw_fd(), format!("E{code}\n{msg}\n{hint}").as_bytes());
                    1
                }
            }
        }))
        .unwrap_or(exit::RUNTIME);
        // SAFETY: _exit ends this forked process without running the parent's destructors.
        unsafe { libc::_exit(code) }
    }
    drop(w);
    let msg = sys::read_to_end(r.as_raw_fd()).context("cannot read from the exec helper")?;
    let text = String::from_utf8_lossy(&msg);
    if text == "ok" {
        return Ok(exit::OK);
    }
    // The helper failed: reap it (it exits right after reporting).
    // SAFETY: waitpid on our own child.
    unsafe { libc::waitpid(m, std::ptr::null_mut(), 0) };
    if let Some(rest) = text.strip_prefix('E') {
        let mut lines = rest.splitn(3, '\n');
        let code = lines
            .next()
            .and_then(|c| c.parse().ok())
            .unwrap_or(exit::RUNTIME);
        let mut e = user(lines.next().unwrap_or("exec failed").to_string()).code(code);
        if let Some(h) = lines.next().filter(|h| !h.is_empty()) {
            e = e.hint(h);
        }
        return Err(e.into());
    }
    Err(runtime_err(
        "the exec helper died before the command started".into(),
        "run it without -d to see why",
    ))
}
