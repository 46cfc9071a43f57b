//! Thin wrappers over the Linux syscalls the runtime needs and libc or nix do not wrap the way
//! we need them (fork-like clone with namespace flags, pivot_root, openat2, close_range,
//! SCM_RIGHTS, interface flags). Each returns `io::Result` and never panics: they run in the
//! forked child too.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn check_int(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A path as a C string; a NUL inside is an InvalidInput error.
pub fn cstr(p: impl AsRef<OsStr>) -> io::Result<CString> {
    CString::new(p.as_ref().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// fork(2) with namespace flags: the raw clone syscall without a new stack, so the child
/// continues on a copy-on-write copy of this stack, like fork. Returns 0 in the child and the
/// child's pid in the parent.
///
/// The caller must be single-threaded (wharf is): only the calling thread exists in the child.
pub fn clone_fork(flags: libc::c_int) -> io::Result<libc::pid_t> {
    // SAFETY: clone with a NULL stack behaves as fork; no pointer arguments are passed
    // (parent_tid, child_tid and tls are unused without the matching CLONE_* flags).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    check(ret).map(|pid| pid as libc::pid_t)
}

/// mount(2). `data` is the filesystem's option string.
pub fn mount(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let source = source.map(cstr).transpose()?;
    let target = cstr(target)?;
    let fstype = fstype.map(cstr).transpose()?;
    let data = data.map(cstr).transpose()?;
    // SAFETY: every pointer is either NULL or a NUL-terminated string that outlives the call.
    let ret = unsafe {
        libc::mount(
            source.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            target.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            data.as_ref()
                .map_or(std::ptr::null(), |s| s.as_ptr().cast()),
        )
    };
    check_int(ret).map(drop)
}

/// umount2(2).
pub fn umount(target: &Path, flags: libc::c_int) -> io::Result<()> {
    let target = cstr(target)?;
    // SAFETY: target is a valid NUL-terminated string.
    check_int(unsafe { libc::umount2(target.as_ptr(), flags) }).map(drop)
}

/// pivot_root(2).
pub fn pivot_root(new_root: &CStr, put_old: &CStr) -> io::Result<()> {
    // SAFETY: both arguments are valid NUL-terminated strings.
    check(unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) })
        .map(drop)
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// openat2(2) with RESOLVE_IN_ROOT: `path` is resolved as if `root` were `/`, so neither `..`
/// nor an absolute symlink can lead outside it.
pub fn open_in_root(root: RawFd, path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let p = cstr(path)?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: `how` is a valid open_how of the size passed; `p` is NUL-terminated.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root,
            p.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    })?;
    // SAFETY: openat2 returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Marks every descriptor from `first` up close-on-exec (close_range with
/// CLOSE_RANGE_CLOEXEC), so nothing of wharf's leaks into the container's command.
pub fn cloexec_from(first: u32) -> io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range takes plain integers.
    check(unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, CLOSE_RANGE_CLOEXEC) })
        .map(drop)
}

/// Makes `cmd` start clean, as a helper wharf runs must (netavark, aardvark-dns, nft): no
/// signal blocked (the monitor blocks those it reads from a signalfd, and a child inherits
/// the mask: an aardvark-dns started so never sees the SIGHUP that tells it to reload), and
/// every descriptor above stderr closed on exec (a pipe a long-lived helper kept open would
/// never reach EOF).
pub fn exec_clean(cmd: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: sigemptyset, sigprocmask and close_range are async-signal-safe and take only
    // the local set and plain integers.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            cloexec_from(3)
        })
    }
}

/// Sends `data` with one file descriptor attached (SCM_RIGHTS).
pub fn send_fd(sock: RawFd, data: &[u8], fd: RawFd) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // u64 alignment is enough for cmsghdr on Linux.
    let mut buf = [0u64; 4];
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    // SAFETY: msghdr is plain data; zeroed is a valid initial value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = buf.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: msg_control points at `buf` (32 bytes >= space for one fd); CMSG_FIRSTHDR
    // returns a pointer inside it, and CMSG_DATA stays within the header's space.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
    }
    // SAFETY: msg is fully initialised and its buffers outlive the call.
    check(unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) } as libc::c_long).map(drop)
}

/// Receives one message into `data`; returns its length (0 = the peer closed) and the file
/// descriptor attached to it, if any.
pub fn recv_msg(sock: RawFd, data: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let mut buf = [0u64; 8];
    // SAFETY: msghdr is plain data; zeroed is a valid initial value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = buf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&buf);
    let n = loop {
        // SAFETY: msg points at live buffers of the sizes given.
        let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut fd = None;
    // SAFETY: the kernel filled msg_control; CMSG_FIRSTHDR/NXTHDR walk it within
    // msg_controllen, and an SCM_RIGHTS payload holds at least one descriptor.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let raw = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
                fd = Some(OwnedFd::from_raw_fd(raw));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n, fd))
}

/// Brings the loopback interface up (SIOCSIFFLAGS on "lo"), without an `ip` binary.
pub fn loopback_up() -> io::Result<()> {
    const SIOCGIFFLAGS: libc::c_ulong = 0x8913;
    const SIOCSIFFLAGS: libc::c_ulong = 0x8914;
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    // SAFETY: socket(2) with constant arguments.
    let s = check_int(unsafe {
        libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
    })?;
    // SAFETY: s is a new descriptor owned here.
    let s = unsafe { OwnedFd::from_raw_fd(s) };
    let mut req = IfReq {
        name: [0; 16],
        flags: 0,
        _pad: [0; 22],
    };
    req.name[..2].copy_from_slice(b"lo");
    // SAFETY: req is a valid struct ifreq (40 bytes) for both ioctls.
    check_int(unsafe { libc::ioctl(s.as_raw_fd(), SIOCGIFFLAGS, &mut req) })?;
    req.flags |= libc::IFF_UP as libc::c_short;
    // SAFETY: as above.
    check_int(unsafe { libc::ioctl(s.as_raw_fd(), SIOCSIFFLAGS, &req) })?;
    Ok(())
}

/// The number of the pty slave of a /dev/ptmx master (TIOCGPTN), after unlocking it.
pub fn unlock_pty(master: RawFd) -> io::Result<u32> {
    const TIOCSPTLCK: libc::c_ulong = 0x4004_5431;
    const TIOCGPTN: libc::c_ulong = 0x8004_5430;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int from the pointer.
    check_int(unsafe { libc::ioctl(master, TIOCSPTLCK, &unlock) })?;
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes an unsigned int to the pointer.
    check_int(unsafe { libc::ioctl(master, TIOCGPTN, &mut n) })?;
    Ok(n)
}

/// Reads the window size of a terminal.
pub fn get_winsize(fd: RawFd) -> Option<libc::winsize> {
    // SAFETY: winsize is plain data.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes a winsize to the pointer.
    let ret = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (ret == 0).then_some(ws)
}

/// Sets the window size of a terminal.
pub fn set_winsize(fd: RawFd, ws: &libc::winsize) {
    // SAFETY: TIOCSWINSZ reads a winsize from the pointer.
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, ws) };
}

/// A pair of connected SOCK_SEQPACKET unix sockets, close-on-exec.
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds has room for the two descriptors socketpair writes.
    check_int(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: both are new descriptors owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    check_int(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both are new descriptors owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// dup2(2) (which clears close-on-exec on the new descriptor).
pub fn dup2(from: RawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: dup2 takes plain integers.
    check_int(unsafe { libc::dup2(from, to) }).map(drop)
}

/// write(2) of the whole buffer, retrying on EINTR and short writes.
pub fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: buf is a valid slice for its length.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// read(2), retrying on EINTR.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: buf is a valid mutable slice for its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Reads `fd` to end of file (a helper's report on its pipe). Allocates: not for a forked child.
pub fn read_to_end(fd: RawFd) -> io::Result<Vec<u8>> {
    let mut msg = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match read(fd, &mut buf)? {
            0 => return Ok(msg),
            n => msg.extend_from_slice(&buf[..n]),
        }
    }
}

/// The seals of a sealed executable copy: no write, no resize, no more seal changes.
const EXE_SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// Whether `fd` is a memfd carrying every seal of [`sealed_exe_copy`].
fn is_sealed(fd: RawFd) -> bool {
    // SAFETY: fcntl(F_GET_SEALS) takes no pointer; EINVAL on a file that is not a memfd.
    let seals = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
    seals >= 0 && seals & EXE_SEALS == EXE_SEALS
}

/// A sealed memfd copy of this process's binary (runc's fix for CVE-2019-5736): a process
/// started from it has a `/proc/self/exe` that nothing can write, so a container that gets
/// hold of it (`#!/proc/self/exe` as a command's interpreter, or `/proc/<pid>/exe`) cannot
/// reach the host's wharf binary. Close-on-exec; execute it through `/proc/self/fd/N`.
pub fn sealed_exe_copy() -> io::Result<OwnedFd> {
    let mut src = std::fs::File::open("/proc/self/exe")?;
    // SAFETY: memfd_create with a NUL-terminated name; the result is checked.
    let fd = check_int(unsafe {
        libc::memfd_create(
            c"wharf".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    })?;
    // SAFETY: a new descriptor owned by nothing else.
    let mut copy = unsafe { std::fs::File::from_raw_fd(fd) };
    // std copies file to file with copy_file_range / sendfile: no pass through user space.
    std::io::copy(&mut src, &mut copy)?;
    // F_SEAL_WRITE waits a little for page references the copy left (its splice's pipe
    // buffers) and says EBUSY when they outlast that, as under load: try again, a while.
    let mut delay = std::time::Duration::from_millis(1);
    loop {
        // SAFETY: fcntl(F_ADD_SEALS) with an integer argument on our own memfd.
        match check_int(unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_ADD_SEALS, EXE_SEALS) }) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && delay.as_millis() < 512 => {
                std::thread::sleep(delay);
                delay *= 2;
            }
            res => {
                res?;
                break;
            }
        }
    }
    Ok(OwnedFd::from(copy))
}

/// Makes this process run from a sealed copy of its binary: returns at once when it already
/// does, else re-executes itself (same argv and environment) from [`sealed_exe_copy`].
/// Call it first thing in a command that puts processes into a container (`wharf exec`).
pub fn reexec_sealed() -> io::Result<()> {
    let exe = std::fs::File::open("/proc/self/exe")?;
    if is_sealed(exe.as_raw_fd()) {
        return Ok(());
    }
    drop(exe);
    let copy = sealed_exe_copy()?;
    let args: Vec<CString> = std::env::args_os().map(cstr).collect::<io::Result<_>>()?;
    let env: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = std::os::unix::ffi::OsStringExt::into_vec(k);
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
        })
        .collect::<io::Result<_>>()?;
    match nix::unistd::fexecve(&copy, &args, &env) {
        Ok(never) => match never {},
        Err(e) => Err(io::Error::from(e)),
    }
}
