//! The terminal and signal plumbing every process that relays a container's stdio shares
//! (the monitor and `exec`): the signals forwarded to the container, a signalfd for them, and
//! the host terminal in raw mode.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{Context, Result};

pub const FORWARDED: [libc::c_int; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Blocks the signals the monitor handles and returns a signalfd for them. The child
/// unblocks them before exec.
pub fn signal_fd() -> Result<OwnedFd> {
    let mut sigs = FORWARDED.to_vec();
    sigs.extend([libc::SIGCHLD, libc::SIGWINCH]);
    signal_fd_of(&sigs)
}

/// Blocks `sigs` and returns a signalfd for them (`wharf attach`'s own set).
pub fn signal_fd_of(sigs: &[libc::c_int]) -> Result<OwnedFd> {
    // SAFETY: a sigset_t is plain data, initialised by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a valid sigset_t; the signals are valid numbers.
    let fd = unsafe {
        libc::sigemptyset(&mut set);
        for s in sigs {
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
pub struct RawMode {
    fd: RawFd,
    saved: libc::termios,
}

impl RawMode {
    pub fn enter(fd: RawFd) -> Option<RawMode> {
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

/// Reads every pending signal from the signalfd (non-blocking).
pub fn read_signals(sigfd: &OwnedFd) -> Vec<libc::c_int> {
    let mut out = Vec::new();
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
        out.push(si.ssi_signo as libc::c_int);
    }
    out
}
