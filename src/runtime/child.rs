//! The container's init, between clone and exec: it waits for the parent's go, builds the root
//! filesystem inside its own mount namespace, drops privileges, and execs the command as PID 1.
//!
//! This code runs in a forked copy of a single-threaded wharf. It never panics and never
//! returns: every failure becomes a [`ChildError`] sent to the parent over the sync socket
//! (`E` + exit code + message), then `_exit`. Success is the socket closing on exec
//! (it is close-on-exec), which the parent reads as EOF.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};

use super::sys;
use crate::error::exit;

/// Everything the child needs, prepared by the parent before clone.
pub struct ChildSpec {
    /// The overlay mount point (the state root's run dir, see `ops::run_dir`).
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
    pub read_only: bool,
    pub privileged: bool,
    /// Capabilities kept (bit i = capability i).
    pub caps: u64,
    /// Descriptors for 0, 1, 2 when there is no tty.
    pub stdio: [RawFd; 3],
    /// The v1 cgroups' `tasks` files (`cgroup::Entry::self_join`): the child joins them first.
    pub cgroup_join: Vec<RawFd>,
    /// The cgroup namespace to enter, when clone3 did not make one (see `launch`).
    pub cgroup_ns: Option<RawFd>,
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
            let mut msg = Vec::with_capacity(e.msg.len() + 5);
            msg.push(b'E');
            msg.extend_from_slice(&e.code.to_le_bytes());
            msg.extend_from_slice(e.msg.as_bytes());
            let _ = sys::write_all(sync.as_raw_fd(), &msg);
            e.code
        }
        Err(_) => exit::RUNTIME,
    };
    // SAFETY: _exit ends this forked process without running the parent's destructors.
    unsafe { libc::_exit(code) }
}

/// What a successful exec returns: nothing.
pub(super) enum Never {}

/// Reads the parent's go from the sync socket: "g", then the terminal size (rows, cols,
/// xpixel, ypixel as u16) when there is one. Then checks that the parent is still there: it
/// may have died before PDEATHSIG was armed, after sending the go (which stays buffered); its
/// end of the socket is closed then. A death after this check is PDEATHSIG's. Runs in the
/// forked child: no panics, only read(2) and poll(2). `gone` and `died` are the messages for a
/// parent gone before the go and one dead after it.
pub(super) fn await_go(
    fd: RawFd,
    gone: &str,
    died: &str,
) -> Result<Option<libc::winsize>, ChildError> {
    let mut go = [0u8; 9];
    let mut winsize = None;
    match sys::read(fd, &mut go) {
        Ok(1) => {}
        Ok(9) => {
            let u = |i: usize| u16::from_le_bytes([go[i], go[i + 1]]);
            winsize = Some(libc::winsize {
                ws_row: u(1),
                ws_col: u(3),
                ws_xpixel: u(5),
                ws_ypixel: u(7),
            });
        }
        _ => {
            return Err(ChildError {
                code: exit::RUNTIME,
                msg: gone.into(),
            });
        }
    }
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
    // Into the container's cgroups before anything is charged: "0" moves this thread alone,
    // which needs no global lock (the parent made the cgroups and set the limits already).
    for &f in &spec.cgroup_join {
        sys::write_all(f, b"0").map_err(|e| err("cannot join the container's cgroup", e))?;
    }
    if let Some(ns) = spec.cgroup_ns {
        // SAFETY: setns on a descriptor the parent opened for us.
        if unsafe { libc::setns(ns, libc::CLONE_NEWCGROUP) } < 0 {
            return Err(err(
                "cannot enter the cgroup namespace",
                io::Error::last_os_error(),
            ));
        }
    }
    // Wait for the parent's go.
    let winsize = await_go(
        fd,
        "the parent went away before the container started",
        "the parent died during setup",
    )?;
    nix::unistd::sethostname(&spec.hostname)
        .map_err(|e| err("cannot set the hostname", e.into()))?;
    // Nothing we mount may propagate to the host.
    sys::mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )
    .map_err(|e| err("cannot make / private", e))?;
    let target = if spec.tmp_layer {
        sys::mount(
            Some("tmpfs"),
            &spec.merged,
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV,
            Some("mode=755"),
        )
        .map_err(|e| err("cannot mount the write layer's tmpfs", e))?;
        for d in [&spec.upper, &spec.work, Path::new("root")] {
            std::fs::create_dir(spec.merged.join(d))
                .map_err(|e| err("cannot create the write layer", e))?;
        }
        spec.merged.join("root")
    } else {
        spec.merged.clone()
    };
    let (upper, work) = if spec.tmp_layer {
        (spec.merged.join(&spec.upper), spec.merged.join(&spec.work))
    } else {
        (spec.upper.clone(), spec.work.clone())
    };
    // Opened here, in the container's mount namespace: overlay refuses a layer reached
    // through a mount of another namespace. Closed when this function returns.
    let mut deep = Vec::with_capacity(spec.lower_deep.len());
    let lower = if spec.lower_deep.is_empty() {
        spec.lower.clone()
    } else {
        let mut names = String::with_capacity(spec.lower_deep.len() * 4);
        for l in &spec.lower_deep {
            let fd = nix::fcntl::open(
                l.as_path(),
                nix::fcntl::OFlag::O_PATH
                    | nix::fcntl::OFlag::O_DIRECTORY
                    | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| err(format!("cannot open the layer {}", l.display()), e.into()))?;
            if !names.is_empty() {
                names.push(':');
            }
            names.push_str(&fd.as_raw_fd().to_string());
            deep.push(fd);
        }
        nix::unistd::chdir("/proc/self/fd")
            .map_err(|e| err("cannot enter /proc/self/fd", e.into()))?;
        names
    };
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower,
        upper.display(),
        work.display()
    );
    // No device node of the image or made in the container is usable (there is no devices
    // cgroup to stop CAP_MKNOD): the rootfs, /dev and volumes are nodev, and /dev's nodes are
    // bind mounts of the host's.
    let nodev = if spec.privileged { 0 } else { libc::MS_NODEV };
    sys::mount(
        Some("overlay"),
        &target,
        Some("overlay"),
        nodev,
        Some(&data),
    )
    .map_err(|e| err("cannot mount the overlay root filesystem", e))?;
    if !deep.is_empty() {
        nix::unistd::chdir("/").map_err(|e| err("cannot leave /proc/self/fd", e.into()))?;
        drop(deep);
    }
    let root = open_dir(&target).map_err(|e| err("cannot open the root filesystem", e))?;
    let rfd = root.as_raw_fd();

    let nosuid_noexec_nodev = libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV;
    let t = mkdirs(rfd, "/proc").map_err(|e| err("cannot create /proc", e))?;
    sys::mount(
        Some("proc"),
        &fdpath(&t),
        Some("proc"),
        nosuid_noexec_nodev,
        None,
    )
    .map_err(|e| err("cannot mount /proc", e))?;
    let t = mkdirs(rfd, "/sys").map_err(|e| err("cannot create /sys", e))?;
    sys::mount(
        Some("sysfs"),
        &fdpath(&t),
        Some("sysfs"),
        nosuid_noexec_nodev | libc::MS_RDONLY,
        None,
    )
    .map_err(|e| err("cannot mount /sys", e))?;
    let t = mkdirs(rfd, "/dev").map_err(|e| err("cannot create /dev", e))?;
    sys::mount(
        Some("tmpfs"),
        &fdpath(&t),
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_STRICTATIME | nodev,
        Some("mode=755,size=65536k"),
    )
    .map_err(|e| err("cannot mount /dev", e))?;
    let dev = open_in(rfd, "/dev", libc::O_PATH | libc::O_DIRECTORY)
        .map_err(|e| err("cannot open /dev", e))?;
    make_dev(dev.as_raw_fd()).map_err(|e| err("cannot populate /dev", e))?;
    let t = open_in(rfd, "/dev/pts", libc::O_PATH | libc::O_DIRECTORY)
        .map_err(|e| err("cannot open /dev/pts", e))?;
    sys::mount(
        Some("devpts"),
        &fdpath(&t),
        Some("devpts"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )
    .map_err(|e| err("cannot mount /dev/pts", e))?;
    let t = open_in(rfd, "/dev/shm", libc::O_PATH | libc::O_DIRECTORY)
        .map_err(|e| err("cannot open /dev/shm", e))?;
    sys::mount(
        Some("shm"),
        &fdpath(&t),
        Some("tmpfs"),
        nosuid_noexec_nodev,
        Some("mode=1777,size=65536k"),
    )
    .map_err(|e| err("cannot mount /dev/shm", e))?;
    let t = open_in(rfd, "/dev/mqueue", libc::O_PATH | libc::O_DIRECTORY)
        .map_err(|e| err("cannot open /dev/mqueue", e))?;
    sys::mount(
        Some("mqueue"),
        &fdpath(&t),
        Some("mqueue"),
        nosuid_noexec_nodev,
        None,
    )
    .map_err(|e| err("cannot mount /dev/mqueue", e))?;

    // /etc files: written to the /dev tmpfs, bind-mounted, unlinked (the mounts keep them).
    for (content, dest) in &spec.etc_files {
        let src = tmp_file(dev.as_raw_fd(), content)
            .map_err(|e| err(format!("cannot write {dest}"), e))?;
        let t = mkfile(rfd, dest).map_err(|e| err(format!("cannot create {dest}"), e))?;
        let r = bind(&fdpath(&src), &fdpath(&t), false);
        tmp_file_done(dev.as_raw_fd());
        r.map_err(|e| err(format!("cannot mount {dest}"), e))?;
    }
    if let Ok(etc) = open_in(rfd, "/etc", libc::O_PATH | libc::O_DIRECTORY) {
        let _ = symlinkat("/proc/mounts", etc.as_raw_fd(), "mtab");
    }
    // Markers.
    let _ = mkfile(rfd, "/.dockerenv");
    let _ = mkfile(rfd, "/run/.containerenv");

    for (src, dest, ro) in &spec.volumes {
        let t = if src.is_dir() {
            mkdirs(rfd, dest)
        } else {
            mkfile(rfd, dest)
        }
        .map_err(|e| err(format!("cannot create the volume mount point {dest}"), e))?;
        bind(src, &fdpath(&t), false)
            .map_err(|e| err(format!("cannot mount the volume at {dest}"), e))?;
        if *ro || nodev != 0 {
            // `t` still names the directory under the new mount: reopen to reach its top.
            let top = open_in(rfd, dest, libc::O_PATH)
                .map_err(|e| err(format!("cannot open the volume at {dest}"), e))?;
            sys::mount(
                None,
                &fdpath(&top),
                None,
                libc::MS_BIND | libc::MS_REMOUNT | nodev | if *ro { libc::MS_RDONLY } else { 0 },
                None,
            )
            .map_err(|e| err(format!("cannot set the flags of the volume at {dest}"), e))?;
        }
    }

    // The terminal, allocated inside so that ttyname() works: master goes to the parent.
    let slave = if spec.tty {
        let slave = open_pty(rfd, fd, winsize.as_ref())?;
        let console =
            mkfile(rfd, "/dev/console").map_err(|e| err("cannot create /dev/console", e))?;
        bind(&fdpath(&slave), &fdpath(&console), false)
            .map_err(|e| err("cannot mount /dev/console", e))?;
        Some(slave)
    } else {
        None
    };

    pivot(&root).map_err(|e| err("cannot change the root", e))?;
    drop(root);
    mask_paths();
    if spec.read_only {
        sys::mount(
            None,
            Path::new("/"),
            None,
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
            None,
        )
        .map_err(|e| err("cannot make the root filesystem read-only", e))?;
    }
    if spec.new_net {
        sys::loopback_up().map_err(|e| err("cannot bring up the loopback interface", e))?;
    }

    stdio_setup(slave, &spec.stdio)?;

    let mut env = spec.env.clone();
    let ids = resolve_user(spec.user.as_deref())?;
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", ids.home));
    }
    set_privileges(spec.caps, spec.privileged, &ids)?;
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
    exec_clean(&spec.args, &env)
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
    sys::send_fd(sync, b"T", master.as_raw_fd())
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
pub(super) fn exec_clean(args: &[CString], env: &[String]) -> Result<Never, ChildError> {
    // Signals: wharf blocked some and Rust ignores SIGPIPE; the command starts clean.
    // SAFETY: sigprocmask and signal with valid arguments.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    sys::cloexec_from(3).map_err(|e| err("cannot close wharf's descriptors", e))?;
    exec(args, env)
}

fn fdpath(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn open_dir(p: &Path) -> io::Result<OwnedFd> {
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

fn open_in(root: RawFd, path: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
    sys::open_in_root(root, Path::new(path), flags)
}

/// Creates the directory `path` and its parents inside `root`, resolving every component
/// inside the root (a dangling symlink's target is created inside the root too); returns an
/// O_PATH descriptor of it.
fn mkdirs(root: RawFd, path: &str) -> io::Result<OwnedFd> {
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
fn mkfile(root: RawFd, path: &str) -> io::Result<OwnedFd> {
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
fn tmp_file(dir: RawFd, content: &[u8]) -> io::Result<OwnedFd> {
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
fn tmp_file_done(dir: RawFd) {
    // SAFETY: unlinkat with a NUL-terminated name in a directory we own.
    unsafe { libc::unlinkat(dir, c".wharf-etc".as_ptr(), 0) };
}

fn symlinkat(target: &str, dir: RawFd, name: &str) -> io::Result<()> {
    let t = sys::cstr(target)?;
    let n = sys::cstr(name)?;
    // SAFETY: both strings are NUL-terminated; dir is a directory descriptor.
    if unsafe { libc::symlinkat(t.as_ptr(), dir, n.as_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn bind(src: &Path, target: &Path, ro: bool) -> io::Result<()> {
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
fn make_dev(dev: RawFd) -> io::Result<()> {
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
fn pivot(root: &OwnedFd) -> io::Result<()> {
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
fn mask_paths() {
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
/// keeps the default set; another uid keeps none, as in docker), then no_new_privs.
pub(super) fn set_privileges(caps: u64, privileged: bool, ids: &Ids) -> Result<(), ChildError> {
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
    if !privileged {
        // SAFETY: prctl with plain integers.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
            return Err(err("cannot set no_new_privs", io::Error::last_os_error()));
        }
    }
    Ok(())
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
