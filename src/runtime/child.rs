//! The container's init, between clone and exec: it waits for the parent's go, builds the root
//! filesystem inside its own mount namespace, drops privileges, and execs the command as PID 1.
//!
//! This code runs in a forked copy of a single-threaded wharf. It never panics and never
//! returns: every failure becomes a [`ChildError`] sent to the parent over the sync socket
//! ([`FromChild::Failed`]: exit code + message), then `_exit`. Success is the socket closing
//! on exec (it is close-on-exec), which the parent reads as EOF (see [`channel`]).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};

use super::channel::{self, FromChild};
use super::rootfs;
use super::sys;
use crate::error::exit;

/// Everything the child needs, prepared by the parent before clone.
pub struct ChildSpec {
    /// The overlay mount point (the state root's run dir, see `Store::run_dir`).
    pub merged: PathBuf,
    /// overlay's lowerdir (layer dirs, top first, `:`-separated).
    pub lower: String,
    /// The write layer: host paths, or with `tmp_layer` names inside a tmpfs mounted at
    /// `merged` (the overlay then goes on `merged/root`).
    pub upper: PathBuf,
    pub work: PathBuf,
    pub tmp_layer: bool,
    pub hostname: String,
    /// Content of /etc/hostname, /etc/hosts, /etc/resolv.conf.
    pub etc_files: [(Vec<u8>, &'static str); 3],
    /// (host source, destination in the container, read-only)
    pub volumes: Vec<(PathBuf, String, bool)>,
    pub args: Vec<CString>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: Option<String>,
    pub tty: bool,
    pub new_net: bool,
    /// A network namespace to join (a bridge network's, another container's).
    pub join_net: Option<RawFd>,
    pub read_only: bool,
    pub privileged: bool,
    /// Capabilities kept (bit i = capability i).
    pub caps: u64,
    /// Descriptors for 0, 1, 2 when there is no tty.
    pub stdio: [RawFd; 3],
    /// The v1 cgroups' `tasks` files (`cgroup::Entry::self_join`): the child joins them first.
    pub cgroup_join: Vec<RawFd>,
    /// What `/sys/fs/cgroup` shows inside (mounted in the child's own cgroup namespace).
    pub cgroupfs: super::cgroup::Inside,
    /// The compiled seccomp filter (`seccomp::filter_for`); None: unconfined.
    pub seccomp: Option<Vec<u8>>,
    /// Set no_new_privs (see [`set_privileges`]).
    pub no_new_privs: bool,
    /// tmpfs mounts: (destination, mount flags, data), after the volumes.
    pub tmpfs: Vec<(String, libc::c_ulong, String)>,
    /// Bytes of /dev/shm.
    pub shm_size: u64,
    /// (resource, soft, hard) set before exec (`RLIM_INFINITY` is u64::MAX).
    pub rlimits: Vec<(libc::__rlimit_resource_t, u64, u64)>,
    /// `--init`: stay PID 1 as a reaper and run the command as its child ([`reaper`]).
    pub init: bool,
    /// `--device`: (host node, path in the container), bind-mounted after /dev is made.
    pub devices: Vec<(PathBuf, String)>,
    /// A stack too deep for absolute paths in one page of mount options (`lower` is then
    /// empty): the child opens these (top first) and names them by descriptor, relative to
    /// `/proc/self/fd`.
    pub lower_deep: Vec<PathBuf>,
}

/// A failure in the child, with the exit code `run` (or `exec`) should give.
pub struct ChildError {
    pub code: i32,
    pub msg: String,
}

pub(super) fn err(what: impl std::fmt::Display, e: io::Error) -> ChildError {
    ChildError {
        code: exit::RUNTIME,
        msg: format!("{what}: {e}"),
    }
}

/// The child's entry point after clone. Never returns.
pub fn run(spec: &ChildSpec, sync: &OwnedFd) -> ! {
    finish(sync, || setup(spec, sync))
}

/// Runs a forked child's setup `f` (which ends in exec): a failure (or a panic) is sent to
/// the parent over `sync` as `E` + code + message, then the child `_exit`s. Never returns.
pub(super) fn finish(sync: &OwnedFd, f: impl FnOnce() -> Result<Never, ChildError>) -> ! {
    let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(never)) => match never {},
        Ok(Err(e)) => {
            let failed = FromChild::Failed {
                code: e.code,
                message: e.msg,
            };
            let _ = channel::send_to_parent(sync.as_raw_fd(), &failed, None);
            e.code
        }
        Err(_) => exit::RUNTIME,
    };
    // SAFETY: _exit ends this forked process without running the parent's destructors.
    unsafe { libc::_exit(code) }
}

/// What a successful exec returns: nothing.
pub(super) enum Never {}

/// Reads the parent's go ([`ToChild::Go`], with the terminal size when there is one) from
/// the sync socket. Then checks that the parent is still there: it may have died before
/// PDEATHSIG was armed, after sending the go (which stays buffered); its end of the socket
/// is closed then. A death after this check is PDEATHSIG's. Runs in the forked child: no
/// panics, only read(2) and poll(2). `gone` and `died` are the messages for a parent gone
/// before the go and one dead after it.
pub(super) fn await_go(
    fd: RawFd,
    gone: &str,
    died: &str,
) -> Result<Option<libc::winsize>, ChildError> {
    let winsize = match channel::recv_in_child(fd) {
        Ok(Some(go)) => go.winsize(),
        _ => {
            return Err(ChildError {
                code: exit::RUNTIME,
                msg: gone.into(),
            });
        }
    };
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: pfd is one valid pollfd; timeout 0 does not block.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    if n != 0 && pfd.revents & (libc::POLLHUP | libc::POLLRDHUP) != 0 {
        return Err(ChildError {
            code: exit::RUNTIME,
            msg: died.into(),
        });
    }
    Ok(winsize)
}

fn setup(spec: &ChildSpec, sync: &OwnedFd) -> Result<Never, ChildError> {
    let fd = sync.as_raw_fd();
    // SAFETY: prctl and umask take plain integers.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        libc::umask(0o022);
    }
    if let Some(ns) = spec.join_net {
        // SAFETY: setns on a descriptor of a network namespace the parent opened.
        if unsafe { libc::setns(ns, libc::CLONE_NEWNET) } < 0 {
            return Err(err(
                "cannot join the container's network namespace",
                io::Error::last_os_error(),
            ));
        }
    }
    // Into the container's cgroups before anything is charged: "0" moves this thread alone,
    // which needs no global lock (the parent made the cgroups and set the limits already).
    for &f in &spec.cgroup_join {
        sys::write_all(f, b"0").map_err(|e| err("cannot join the container's cgroup", e))?;
    }
    // Wait for the parent's go (on the slow path it follows the parent's `add_pid`).
    let winsize = await_go(
        fd,
        "the parent went away before the container started",
        "the parent died during setup",
    )?;
    // Now in every cgroup of the container: a cgroup namespace made here is rooted there,
    // so /proc/self/cgroup and the cgroupfs mounted below show `/`, never a `/..` path.
    // SAFETY: unshare with a plain flag, on this process only.
    if unsafe { libc::unshare(libc::CLONE_NEWCGROUP) } < 0 {
        return Err(err(
            "cannot create the cgroup namespace",
            io::Error::last_os_error(),
        ));
    }
    nix::unistd::sethostname(&spec.hostname)
        .map_err(|e| err("cannot set the hostname", e.into()))?;
    let slave = rootfs::build(spec, &mut rootfs::HostOps::default(), fd, winsize.as_ref())?;
    if spec.new_net {
        sys::loopback_up().map_err(|e| err("cannot bring up the loopback interface", e))?;
    }

    stdio_setup(slave, &spec.stdio)?;

    let mut env = spec.env.clone();
    let ids = resolve_user(spec.user.as_deref())?;
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", ids.home));
    }
    set_rlimits(&spec.rlimits)?;
    set_privileges(spec.caps, spec.no_new_privs, &ids)?;
    if let Err(e) = nix::unistd::chdir(spec.working_dir.as_str()) {
        let created = e == nix::errno::Errno::ENOENT
            && std::fs::create_dir_all(&spec.working_dir).is_ok()
            && nix::unistd::chdir(spec.working_dir.as_str()).is_ok();
        if !created {
            return Err(err(
                format!(
                    "cannot change to the working directory {}",
                    spec.working_dir
                ),
                e.into(),
            ));
        }
    }
    if spec.init {
        reaper(sync, &spec.args, &env, spec.seccomp.as_deref())
    } else {
        exec_clean(&spec.args, &env, spec.seccomp.as_deref())
    }
}

/// The container's `--ulimit`s, (resource, soft, hard), on this process (init and exec).
pub(super) fn set_rlimits(
    limits: &[(libc::__rlimit_resource_t, u64, u64)],
) -> Result<(), ChildError> {
    for &(res, soft, hard) in limits {
        let lim = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: setrlimit with a valid resource and a rlimit on the stack.
        if unsafe { libc::setrlimit(res, &lim) } < 0 {
            return Err(err("cannot set a --ulimit", io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// `--init`: this process (the container's PID 1, still wharf's code after the fork from
/// wharf) forks the command, which execs as PID 2, and stays behind as a tiny init: it
/// forwards every signal it receives to the command, reaps every process that ends up its
/// child (orphans are re-parented to PID 1), and exits with the command's status (128+N
/// after a signal), which ends the container, as tini does. Every signal is blocked before
/// the fork, so none reaches PID 1 with its default action; the command unblocks them in
/// `exec_clean`. An exec failure of the command goes to the parent over `sync` as usual.
fn reaper(
    sync: &OwnedFd,
    args: &[CString],
    env: &[String],
    seccomp: Option<&[u8]>,
) -> Result<Never, ChildError> {
    // SAFETY: sigset operations on a zeroed set on the stack.
    let all = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        set
    };
    // SAFETY: fork in a single-threaded process; the child only execs (or reports and exits).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(err(
            "cannot fork the command (--init)",
            io::Error::last_os_error(),
        ));
    }
    if pid == 0 {
        // Its own process group, in the terminal's foreground when there is one: a ^C from
        // the terminal reaches the command once, not also through PID 1's forwarding.
        // SAFETY: plain calls on this process and descriptor 0 (signals still blocked,
        // so tcsetpgrp from the background raises no SIGTTOU).
        unsafe {
            libc::setpgid(0, 0);
            if libc::isatty(0) == 1 {
                libc::tcsetpgrp(0, libc::getpid());
            }
        }
        return exec_clean(args, env, seccomp);
    }
    // PID 1 keeps stdio only: the sync socket closes (the parent's EOF comes with the
    // command's exec) and so do wharf's other descriptors.
    // SAFETY: closing descriptors this process owns; nothing uses them after this.
    unsafe {
        libc::close(sync.as_raw_fd());
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
    }
    loop {
        // SAFETY: sigwaitinfo with a valid set and a zeroed siginfo on the stack.
        let sig = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::sigwaitinfo(&all, &mut info)
        };
        if sig < 0 {
            continue; // EINTR
        }
        if sig != libc::SIGCHLD {
            // SAFETY: kill with plain integers: our own child.
            unsafe { libc::kill(pid, sig) };
            continue;
        }
        loop {
            let mut status = 0;
            // SAFETY: waitpid with a status integer on the stack.
            let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if r <= 0 {
                break;
            }
            if r == pid {
                let code = if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    128 + libc::WTERMSIG(status)
                };
                // SAFETY: _exit ends PID 1, and with it the container.
                unsafe { libc::_exit(code) };
            }
        }
    }
}

/// The container's cgroups at `/sys/fs/cgroup` (read-only unless privileged, as docker):
/// a cgroup2 mount in this cgroup namespace, or a tmpfs of read-only bind mounts of the
/// container's v1 directories plus the links of co-mounted hierarchies.
pub(super) fn mount_cgroupfs(
    rfd: RawFd,
    inside: &super::cgroup::Inside,
    privileged: bool,
) -> Result<(), ChildError> {
    const DIR: &str = "/sys/fs/cgroup";
    let fail = |e| err("cannot mount /sys/fs/cgroup", e);
    let ro = if privileged { 0 } else { libc::MS_RDONLY };
    let flags = libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV;
    let t = open_in(rfd, DIR, libc::O_PATH | libc::O_DIRECTORY).map_err(fail)?;
    match inside {
        super::cgroup::Inside::Cgroup2 => {
            sys::mount(
                Some("cgroup2"),
                &fdpath(&t),
                Some("cgroup2"),
                flags | ro,
                None,
            )
            .map_err(fail)?;
        }
        super::cgroup::Inside::V1(mounts) => {
            sys::mount(
                Some("tmpfs"),
                &fdpath(&t),
                Some("tmpfs"),
                flags,
                Some("mode=755,size=64k"),
            )
            .map_err(fail)?;
            let top = open_in(rfd, DIR, libc::O_PATH | libc::O_DIRECTORY).map_err(fail)?;
            for m in mounts {
                let d = mkdirs(rfd, &format!("{DIR}/{}", m.name)).map_err(fail)?;
                sys::mount(m.source.to_str(), &fdpath(&d), None, libc::MS_BIND, None)
                    .map_err(fail)?;
                let d = open_in(rfd, &format!("{DIR}/{}", m.name), libc::O_PATH).map_err(fail)?;
                sys::mount(
                    None,
                    &fdpath(&d),
                    None,
                    libc::MS_BIND | libc::MS_REMOUNT | flags | ro,
                    None,
                )
                .map_err(fail)?;
                for l in &m.links {
                    symlinkat(&m.name, top.as_raw_fd(), l).map_err(fail)?;
                }
            }
            sys::mount(
                None,
                &fdpath(&top),
                None,
                libc::MS_REMOUNT | flags | ro,
                Some("mode=755,size=64k"),
            )
            .map_err(fail)?;
        }
    }
    Ok(())
}

/// Opens a new pty of the devpts at `root`/dev/pts, sizes it, sends the master to the parent
/// over `sync` (`T` + SCM_RIGHTS) and returns the slave.
pub(super) fn open_pty(
    root: RawFd,
    sync: RawFd,
    winsize: Option<&libc::winsize>,
) -> Result<OwnedFd, ChildError> {
    let master = open_in(root, "/dev/pts/ptmx", libc::O_RDWR | libc::O_NOCTTY)
        .map_err(|e| err("cannot open /dev/pts/ptmx", e))?;
    let n = sys::unlock_pty(master.as_raw_fd()).map_err(|e| err("cannot unlock the pty", e))?;
    if let Some(ws) = winsize {
        // Before exec, so the command's first look at the size sees the real one.
        sys::set_winsize(master.as_raw_fd(), ws);
    }
    let slave = open_in(
        root,
        &format!("/dev/pts/{n}"),
        libc::O_RDWR | libc::O_NOCTTY,
    )
    .map_err(|e| err("cannot open the pty", e))?;
    channel::send_to_parent(sync, &FromChild::Pty, Some(master.as_raw_fd()))
        .map_err(|e| err("cannot send the pty to wharf", e))?;
    Ok(slave)
}

/// A session of its own, and stdio: the pty `slave` as controlling terminal and 0, 1, 2, or
/// the `stdio` descriptors.
pub(super) fn stdio_setup(slave: Option<OwnedFd>, stdio: &[RawFd; 3]) -> Result<(), ChildError> {
    // A session of its own: the host's controlling terminal is out of reach.
    // SAFETY: setsid takes no arguments.
    unsafe { libc::setsid() };
    match &slave {
        Some(s) => {
            // SAFETY: TIOCSCTTY with arg 0 on a terminal descriptor we own.
            unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCSCTTY, 0) };
            for i in 0..3 {
                sys::dup2(s.as_raw_fd(), i).map_err(|e| err("cannot set up stdio", e))?;
            }
        }
        None => {
            for (i, &src) in stdio.iter().enumerate() {
                if src != i as RawFd {
                    sys::dup2(src, i as RawFd).map_err(|e| err("cannot set up stdio", e))?;
                } else {
                    // Clear close-on-exec on an inherited descriptor used as is.
                    // SAFETY: fcntl F_SETFD on a descriptor number.
                    unsafe { libc::fcntl(src, libc::F_SETFD, 0) };
                }
            }
        }
    }
    drop(slave);
    Ok(())
}

/// Unblocks every signal, restores SIGPIPE, marks wharf's descriptors close-on-exec, and
/// execs `args` (searching PATH of `env`).
pub(super) fn exec_clean(
    args: &[CString],
    env: &[String],
    seccomp: Option<&[u8]>,
) -> Result<Never, ChildError> {
    // Signals: wharf blocked some and Rust ignores SIGPIPE; the command starts clean.
    // SAFETY: sigprocmask and signal with valid arguments.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    sys::cloexec_from(3).map_err(|e| err("cannot close wharf's descriptors", e))?;
    // The seccomp filter last: after the user, capabilities and no_new_privs, before exec.
    if let Some(bpf) = seccomp {
        super::seccomp::load(bpf).map_err(|e| err("cannot load the seccomp filter", e))?;
    }
    exec(args, env)
}

pub(super) fn fdpath(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

pub(super) fn open_dir(p: &Path) -> io::Result<OwnedFd> {
    let c = sys::cstr(p)?;
    // SAFETY: c is NUL-terminated.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor owned by nothing else.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

pub(super) fn open_in(root: RawFd, path: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
    sys::open_in_root(root, Path::new(path), flags)
}

/// Creates the directory `path` and its parents inside `root`, resolving every component
/// inside the root (a dangling symlink's target is created inside the root too); returns an
/// O_PATH descriptor of it.
pub(super) fn mkdirs(root: RawFd, path: &str) -> io::Result<OwnedFd> {
    mkdirs_at(root, Path::new(path), 0)
}

fn mkdirs_at(root: RawFd, path: &Path, depth: u32) -> io::Result<OwnedFd> {
    if depth > 40 {
        return Err(io::Error::from_raw_os_error(libc::ELOOP));
    }
    let dir_flags = libc::O_PATH | libc::O_DIRECTORY;
    let mut cur = PathBuf::from("/");
    let mut dir = sys::open_in_root(root, &cur, dir_flags)?;
    for c in path.components() {
        let Component::Normal(name) = c else { continue };
        cur.push(name);
        let next = match sys::open_in_root(root, &cur, dir_flags) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let n = sys::cstr(name)?;
                // SAFETY: dir is a directory descriptor, n a single NUL-terminated component.
                let r = unsafe { libc::mkdirat(dir.as_raw_fd(), n.as_ptr(), 0o755) };
                if r < 0 {
                    let e = io::Error::last_os_error();
                    if e.raw_os_error() != Some(libc::EEXIST) {
                        return Err(e);
                    }
                    // A dangling symlink: create its target, resolved inside the root.
                    let target = nix::fcntl::readlinkat(&dir, name).map_err(io::Error::from)?;
                    let parent = cur.parent().unwrap_or(Path::new("/"));
                    mkdirs_at(root, &parent.join(&target), depth + 1)?;
                }
                sys::open_in_root(root, &cur, dir_flags)?
            }
            Err(e) => return Err(e),
        };
        dir = next;
    }
    Ok(dir)
}

/// Creates an empty file at `path` inside `root` if nothing is there (and its parents);
/// returns an O_PATH descriptor of what is there.
pub(super) fn mkfile(root: RawFd, path: &str) -> io::Result<OwnedFd> {
    match open_in(root, path, libc::O_PATH) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.raw_os_error() != Some(libc::ENOENT) => return Err(e),
        Err(_) => {}
    }
    let p = Path::new(path);
    let parent = p.parent().and_then(Path::to_str).unwrap_or("/");
    let name = p
        .file_name()
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let dir = mkdirs(root, parent)?;
    let n = sys::cstr(name)?;
    // SAFETY: dir is a directory descriptor, n a single NUL-terminated component.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            n.as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            0o644,
        )
    };
    if fd >= 0 {
        // SAFETY: fd is a new descriptor we close right away.
        unsafe { libc::close(fd) };
    }
    open_in(root, path, libc::O_PATH)
}

/// A file `.wharf-etc` holding `content` in directory `dir`; an O_PATH descriptor.
pub(super) fn tmp_file(dir: RawFd, content: &[u8]) -> io::Result<OwnedFd> {
    let name = c".wharf-etc";
    // SAFETY: dir is a directory descriptor, name NUL-terminated.
    let fd = unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC,
            0o644,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor owned by nothing else.
    let file: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
    sys::write_all(file.as_raw_fd(), content).and_then(|()| {
        // SAFETY: as above; O_PATH reopen of the same name.
        let p = unsafe { libc::openat(dir, name.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        if p < 0 {
            Err(io::Error::last_os_error())
        } else {
            // SAFETY: a new descriptor owned by nothing else.
            Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(p) })
        }
    })
}

/// Removes what [`tmp_file`] made once it is mounted.
pub(super) fn tmp_file_done(dir: RawFd) {
    // SAFETY: unlinkat with a NUL-terminated name in a directory we own.
    unsafe { libc::unlinkat(dir, c".wharf-etc".as_ptr(), 0) };
}

pub(super) fn symlinkat(target: &str, dir: RawFd, name: &str) -> io::Result<()> {
    let t = sys::cstr(target)?;
    let n = sys::cstr(name)?;
    // SAFETY: both strings are NUL-terminated; dir is a directory descriptor.
    if unsafe { libc::symlinkat(t.as_ptr(), dir, n.as_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub(super) fn bind(src: &Path, target: &Path, ro: bool) -> io::Result<()> {
    let s = src.to_str().ok_or(io::ErrorKind::InvalidInput)?;
    sys::mount(Some(s), target, None, libc::MS_BIND | libc::MS_REC, None)?;
    if ro {
        sys::mount(
            None,
            target,
            None,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
            None,
        )?;
    }
    Ok(())
}

/// Device nodes (bind mounts of the host's) and links of a docker /dev.
pub(super) fn make_dev(dev: RawFd) -> io::Result<()> {
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let n = sys::cstr(name)?;
        // SAFETY: dev is a directory descriptor, n NUL-terminated.
        let fd = unsafe {
            libc::openat(
                dev,
                n.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC,
                0o666,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor we own; closed right away.
        unsafe { libc::close(fd) };
        // SAFETY: as above, an O_PATH descriptor of the file just made.
        let t = unsafe { libc::openat(dev, n.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        if t < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor owned by nothing else.
        let t: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(t) };
        let src = PathBuf::from(format!("/dev/{name}"));
        sys::mount(src.to_str(), &fdpath(&t), None, libc::MS_BIND, None)?;
    }
    for (target, name) in [
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
        ("pts/ptmx", "ptmx"),
        ("/proc/kcore", "core"),
    ] {
        symlinkat(target, dev, name)?;
    }
    for name in ["pts", "shm", "mqueue"] {
        let n = sys::cstr(name)?;
        // SAFETY: dev is a directory descriptor, n NUL-terminated.
        if unsafe { libc::mkdirat(dev, n.as_ptr(), 0o755) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// pivot_root into `root` and detach the old root; MS_MOVE + chroot where the current root
/// cannot be pivoted (a ramfs/initramfs root).
pub(super) fn pivot(root: &OwnedFd) -> io::Result<()> {
    nix::unistd::fchdir(root).map_err(io::Error::from)?;
    let dot = c".";
    match sys::pivot_root(dot, dot) {
        Ok(()) => {
            sys::umount(Path::new("."), libc::MNT_DETACH)?;
        }
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            sys::mount(Some("."), Path::new("/"), None, libc::MS_MOVE, None)?;
            nix::unistd::chroot(".").map_err(io::Error::from)?;
        }
        Err(e) => return Err(e),
    }
    nix::unistd::chdir("/").map_err(io::Error::from)
}

/// docker's masked paths (hidden) and read-only paths. Missing ones are skipped.
pub(super) fn mask_paths() {
    const MASKED: &[&str] = &[
        "/proc/asound",
        "/proc/acpi",
        "/proc/interrupts",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/sys/firmware",
        "/sys/devices/virtual/powercap",
    ];
    const READ_ONLY: &[&str] = &[
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger",
    ];
    for p in MASKED {
        let path = Path::new(p);
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => {
                let _ = sys::mount(
                    Some("tmpfs"),
                    path,
                    Some("tmpfs"),
                    libc::MS_RDONLY,
                    Some("size=0"),
                );
            }
            Ok(_) => {
                let _ = sys::mount(Some("/dev/null"), path, None, libc::MS_BIND, None);
            }
            Err(_) => {}
        }
    }
    for p in READ_ONLY {
        let path = Path::new(p);
        if path.exists() {
            let _ = bind(path, path, true);
        }
    }
}

pub(super) struct Ids {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: String,
}

/// Resolves `user[:group]` (names or numbers) against the container's /etc/passwd and
/// /etc/group, as docker does.
pub(super) fn resolve_user(spec: Option<&str>) -> Result<Ids, ChildError> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let (u, g) = match spec {
        None | Some("") => ("0", None),
        Some(s) => match s.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (s, None),
        },
    };
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 7 && (f[0] == u || f[2] == u));
    let bad = |what: &str| ChildError {
        code: exit::RUNTIME,
        msg: format!("unable to find {what} in the container's /etc files"),
    };
    let (uid, mut gid, home, name) = match &entry {
        Some(f) => (
            f[2].parse().map_err(|_| bad(&format!("user {u}")))?,
            f[3].parse().map_err(|_| bad(&format!("user {u}")))?,
            f[5].to_string(),
            f[0].to_string(),
        ),
        None => match u.parse::<u32>() {
            Ok(n) => (n, n, "/".to_string(), String::new()),
            Err(_) => return Err(bad(&format!("user {u}"))),
        },
    };
    if let Some(g) = g {
        gid = match group
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 3 && (f[0] == g || f[2] == g))
        {
            Some(f) => f[2].parse().map_err(|_| bad(&format!("group {g}")))?,
            None => g.parse().map_err(|_| bad(&format!("group {g}")))?,
        };
    }
    let mut groups = vec![gid];
    if !name.is_empty() {
        for f in group.lines().map(|l| l.split(':').collect::<Vec<_>>()) {
            if f.len() >= 4
                && f[3].split(',').any(|m| m == name)
                && let Ok(id) = f[2].parse::<u32>()
                && !groups.contains(&id)
            {
                groups.push(id);
            }
        }
    }
    Ok(Ids {
        uid,
        gid,
        groups,
        home: if home.is_empty() { "/".into() } else { home },
    })
}

/// Bounding set, then groups/gid/uid, then the effective and permitted sets (root
/// keeps the default set; another uid keeps none, as in docker), then no_new_privs when
/// `no_new_privs` ([`no_new_privs`]). The seccomp filter comes later, in [`exec_clean`].
pub(super) fn set_privileges(caps: u64, no_new_privs: bool, ids: &Ids) -> Result<(), ChildError> {
    for cap in 0..64u32 {
        if caps & (1u64 << cap) == 0 {
            // SAFETY: prctl with plain integers.
            let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINVAL) {
                    break; // past the kernel's last capability
                }
                return Err(err("cannot drop a capability from the bounding set", e));
            }
        }
    }
    let groups: Vec<libc::gid_t> = ids.groups.clone();
    // SAFETY: groups points at groups.len() gids.
    if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } < 0 {
        return Err(err("cannot set the groups", io::Error::last_os_error()));
    }
    // SAFETY: plain integer arguments.
    if unsafe { libc::setresgid(ids.gid, ids.gid, ids.gid) } < 0 {
        return Err(err("cannot set the gid", io::Error::last_os_error()));
    }
    // SAFETY: plain integer arguments.
    if unsafe { libc::setresuid(ids.uid, ids.uid, ids.uid) } < 0 {
        return Err(err("cannot set the uid", io::Error::last_os_error()));
    }
    // A change of credentials clears the parent-death signal (prctl(2)): arm it again, so a
    // container (or an exec'd process) with another user still dies with its monitor.
    // SAFETY: prctl with plain integers.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    if ids.uid == 0 {
        // Never more than we hold (root here may lack some, e.g. CAP_SYS_RESOURCE).
        let held = caps::read(None, caps::CapSet::Permitted).unwrap_or_default();
        let set: caps::CapsHashSet = held
            .into_iter()
            .filter(|c| caps & c.bitmask() != 0)
            .collect();
        // Inheritable stays empty, as in docker since 20.10 (CVE-2022-24769).
        let _ = caps::clear(None, caps::CapSet::Inheritable);
        for which in [caps::CapSet::Effective, caps::CapSet::Permitted] {
            caps::set(None, which, &set).map_err(|e| ChildError {
                code: exit::RUNTIME,
                msg: format!("cannot set capabilities: {e}"),
            })?;
        }
    }
    if no_new_privs {
        // SAFETY: prctl with plain integers.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
            return Err(err("cannot set no_new_privs", io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Whether a process gets no_new_privs: every unprivileged one (wharf's rule, stricter than
/// docker's default), and a privileged one with `--security-opt no-new-privileges`. A
/// seccomp filter without CAP_SYS_ADMIN needs it too: `seccomp::load` sets it then.
pub fn no_new_privs(privileged: bool, sec: &crate::model::Security) -> bool {
    !privileged || sec.no_new_privileges
}

/// execve the command, searching PATH of the container's environment as execvp does.
fn exec(args: &[CString], env: &[String]) -> Result<Never, ChildError> {
    let Some(prog) = args.first() else {
        return Err(ChildError {
            code: exit::RUNTIME,
            msg: "no command".into(),
        });
    };
    let envc: Vec<CString> = env
        .iter()
        .filter_map(|e| CString::new(e.as_str()).ok())
        .collect();
    let mut envp: Vec<*const libc::c_char> = envc.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let name = prog.to_bytes();
    let candidates: Vec<CString> = if name.contains(&b'/') {
        vec![prog.clone()]
    } else {
        let path = env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(super::spec::DEFAULT_PATH);
        path.split(':')
            .filter(|d| !d.is_empty())
            .filter_map(|d| {
                let mut p = d.as_bytes().to_vec();
                p.push(b'/');
                p.extend_from_slice(name);
                CString::new(p).ok()
            })
            .collect()
    };
    // execvp's rule: skip candidates that do not exist, remember the first other error.
    let mut first_err: Option<io::Error> = None;
    for c in &candidates {
        // SAFETY: c, argv and envp are NUL-terminated arrays of valid C strings.
        unsafe { libc::execve(c.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => {}
            Some(libc::EACCES) => {
                first_err.get_or_insert(e);
            }
            _ => {
                first_err.get_or_insert(e);
                break;
            }
        }
    }
    let shown = String::from_utf8_lossy(name);
    Err(match first_err {
        None if name.contains(&b'/') => ChildError {
            code: exit::NOT_FOUND,
            msg: format!("exec: \"{shown}\": no such file or directory"),
        },
        None => ChildError {
            code: exit::NOT_FOUND,
            msg: format!("exec: \"{shown}\": executable file not found in $PATH"),
        },
        Some(e) => ChildError {
            code: exit::NOT_EXECUTABLE,
            msg: format!("exec: \"{shown}\": {e}"),
        },
    })
}
