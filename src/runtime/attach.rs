//! Attaching to a running container's stdio (`wharf attach`, `run -i`, `start -ai`).
//!
//! The container's monitor owns its pty master (or its stdio pipes) and serves them on a
//! `SOCK_SEQPACKET` unix socket, `containers/<id>/attach.sock` (0600, under the private
//! state root; bound and reached through `/proc/self/fd/<dir>/` so a long state root never
//! meets `sun_path`'s 108 bytes). Each message is one tag byte and its payload, so a message
//! boundary is the framing:
//!
//! - monitor → client: [`STDOUT`]/[`STDERR`] data, then [`EXIT`] (the run's exit code, i32 LE)
//!   once the run is recorded;
//! - client → monitor: [`STDIN`] data, [`CLOSE_STDIN`] (EOF of a `run -i`'s stdin),
//!   [`RESIZE`] (rows, cols as u16 LE) and [`SIGNAL`] (`--sig-proxy`, i32 LE).
//!
//! The monitor never blocks on a client: every send is `MSG_DONTWAIT` into a per-client
//! queue; while a queue holds more than [`HIGH_WATER`] the monitor stops reading the
//! container's output (a slow terminal slows the container, as docker's attach does), and a
//! client that takes nothing for [`STALL`] is dropped. The client never blocks on the monitor
//! either (its stdin goes through a queue too), so neither side can wait on the other.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    self, AddressFamily, Backlog, MsgFlags, SockFlag, SockType, UnixAddr, accept4,
};

use super::sys;
use super::tty::{FORWARDED, RawMode, read_signals, signal_fd_of};

/// The socket's file name in the container's directory.
pub const SOCKET: &str = "attach.sock";

pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const EXIT: u8 = 3;
pub const STDIN: u8 = 16;
pub const CLOSE_STDIN: u8 = 17;
pub const RESIZE: u8 = 18;
pub const SIGNAL: u8 = 19;

/// The largest payload of one message (the relay's buffer).
pub const CHUNK: usize = 32 * 1024;

/// Queued bytes past which a client holds the container's output back.
const HIGH_WATER: usize = 1 << 20;
/// A client that takes nothing for this long while data waits for it is dropped.
const STALL: Duration = Duration::from_secs(30);
/// How long a run's end waits for its clients to take what is queued for them.
const END_FLUSH: Duration = Duration::from_secs(5);

/// docker's default `--detach-keys`.
pub const DEFAULT_DETACH_KEYS: &str = "ctrl-p,ctrl-q";

/// docker's `--detach-keys` syntax: comma-separated keys, each one character or
/// `ctrl-<c>` with `<c>` one of `a`-`z`, `@`, `[`, `\`, `]`, `^`, `_`. Empty: the default.
pub fn parse_detach_keys(s: &str) -> Result<Vec<u8>, String> {
    let s = if s.is_empty() { DEFAULT_DETACH_KEYS } else { s };
    let mut out = Vec::new();
    for key in s.split(',') {
        let b = key.as_bytes();
        if b.len() == 1 {
            out.push(b[0]);
            continue;
        }
        let lower = key.to_ascii_lowercase();
        let code = lower
            .strip_prefix("ctrl-")
            .and_then(|c| match c.as_bytes() {
                [c @ b'a'..=b'z'] => Some(c - b'a' + 1),
                [b'@'] => Some(0),
                [c @ (b'[' | b'\\' | b']' | b'^' | b'_')] => Some(c - b'[' + 27),
                _ => None,
            });
        match code {
            Some(c) => out.push(c),
            None => {
                return Err(format!(
                    "invalid detach key {key:?}: give one character or ctrl-<a-z, @, [, \\, ], ^ or _>"
                ));
            }
        }
    }
    Ok(out)
}

/// Finds the detach sequence in what the user types: bytes that may begin it are held back
/// until the sequence is complete (detach) or broken (they are sent after all).
#[derive(Debug)]
pub struct Detacher {
    keys: Vec<u8>,
    held: usize,
}

impl Detacher {
    pub fn new(keys: Vec<u8>) -> Detacher {
        Detacher { keys, held: 0 }
    }

    /// Appends to `out` what to forward of `input`; true when the sequence is complete
    /// (what follows it is dropped).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        if self.keys.is_empty() {
            out.extend_from_slice(input);
            return false;
        }
        for &b in input {
            if b == self.keys[self.held] {
                self.held += 1;
                if self.held == self.keys.len() {
                    self.held = 0;
                    return true;
                }
                continue;
            }
            if self.held > 0 {
                out.extend_from_slice(&self.keys[..self.held]);
                self.held = 0;
                if b == self.keys[0] {
                    self.held = 1;
                    if self.keys.len() == 1 {
                        return true;
                    }
                    continue;
                }
            }
            out.push(b);
        }
        false
    }
}

/// `/proc/self/fd/<dir>/attach.sock`: the socket's address through an open directory.
fn socket_addr(dir: &OwnedFd) -> io::Result<UnixAddr> {
    UnixAddr::new(&PathBuf::from(format!(
        "/proc/self/fd/{}/{SOCKET}",
        dir.as_raw_fd()
    )))
    .map_err(io::Error::from)
}

fn open_dir(dir: &Path) -> io::Result<OwnedFd> {
    Ok(nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?)
}

/// What a client asked of the container.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    Stdin(Vec<u8>),
    CloseStdin,
    Resize { rows: u16, cols: u16 },
    Signal(i32),
}

struct Client {
    fd: OwnedFd,
    queue: VecDeque<Vec<u8>>,
    queued: usize,
    /// When the queue last moved (or was filled from empty).
    moved: Instant,
}

impl Client {
    fn new(fd: OwnedFd) -> Client {
        Client {
            fd,
            queue: VecDeque::new(),
            queued: 0,
            moved: Instant::now(),
        }
    }

    fn push(&mut self, msg: Vec<u8>) {
        if self.queue.is_empty() {
            self.moved = Instant::now();
        }
        self.queued += msg.len();
        self.queue.push_back(msg);
    }

    /// Sends what the socket takes; false when the client is gone.
    fn flush(&mut self) -> bool {
        while let Some(m) = self.queue.front() {
            match socket::send(
                self.fd.as_raw_fd(),
                m,
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            ) {
                Ok(_) => {
                    self.queued -= m.len();
                    self.queue.pop_front();
                    self.moved = Instant::now();
                }
                Err(nix::errno::Errno::EAGAIN) => return true,
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return false,
            }
        }
        true
    }

    fn stalled(&self, now: Instant) -> bool {
        !self.queue.is_empty() && now.duration_since(self.moved) >= STALL
    }
}

/// The monitor's side: the listening socket and its clients.
pub struct Server {
    dir: Option<OwnedFd>,
    listener: Option<OwnedFd>,
    clients: Vec<Client>,
    /// For the clients' messages (allocated at the first).
    buf: Vec<u8>,
}

impl Server {
    /// A server with no socket (it could not be bound): only `first` clients.
    pub fn none() -> Server {
        Server {
            dir: None,
            listener: None,
            clients: Vec::new(),
            buf: Vec::new(),
        }
    }

    /// Listens on `<dir>/attach.sock` (a stale one is replaced), 0600.
    pub fn bind(dir: &Path) -> io::Result<Server> {
        let dfd = open_dir(dir)?;
        let _ = nix::unistd::unlinkat(&dfd, SOCKET, nix::unistd::UnlinkatFlags::NoRemoveDir);
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        socket::bind(fd.as_raw_fd(), &socket_addr(&dfd)?)?;
        nix::sys::stat::fchmodat(
            &dfd,
            SOCKET,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )?;
        socket::listen(&fd, Backlog::new(16).map_err(io::Error::from)?)?;
        Ok(Server {
            dir: Some(dfd),
            listener: Some(fd),
            clients: Vec::new(),
            buf: Vec::new(),
        })
    }

    /// A client connected beforehand (the `run -i` that spawned this monitor).
    pub fn add(&mut self, fd: OwnedFd) {
        self.clients.push(Client::new(fd));
    }

    pub fn has_clients(&self) -> bool {
        !self.clients.is_empty()
    }

    /// Whether a client's queue is full: stop reading the container's output for now.
    pub fn held_back(&self) -> bool {
        self.clients.iter().any(|c| c.queued > HIGH_WATER)
    }

    /// When a stalled client must be dropped.
    pub fn wake(&self) -> Option<Instant> {
        self.clients
            .iter()
            .filter(|c| !c.queue.is_empty())
            .map(|c| c.moved + STALL)
            .min()
    }

    /// Adds the listener's and each client's pollfd to `pfds` (clients' input only when
    /// `take_input`); [`Server::handle`] reads them back from the same index.
    pub fn poll_fds(&self, pfds: &mut Vec<libc::pollfd>, take_input: bool) -> usize {
        let first = pfds.len();
        if let Some(l) = &self.listener {
            pfds.push(libc::pollfd {
                fd: l.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        for c in &self.clients {
            let mut events = if take_input { libc::POLLIN } else { 0 };
            if !c.queue.is_empty() {
                events |= libc::POLLOUT;
            }
            pfds.push(libc::pollfd {
                fd: c.fd.as_raw_fd(),
                events,
                revents: 0,
            });
        }
        first
    }

    /// Accepts, reads and flushes as `pfds[first..]` say; returns the clients' requests.
    pub fn handle(&mut self, pfds: &[libc::pollfd], first: usize) -> Vec<Input> {
        let mut inputs = Vec::new();
        let mut i = first;
        let accept = self.listener.is_some() && pfds.get(i).is_some_and(|p| p.revents != 0);
        if self.listener.is_some() {
            i += 1;
        }
        let now = Instant::now();
        let mut gone = Vec::new();
        let buf = &mut self.buf;
        for (k, c) in self.clients.iter_mut().enumerate() {
            let Some(p) = pfds.get(i + k) else { break };
            if p.revents & libc::POLLOUT != 0 && !c.flush() {
                gone.push(k);
                continue;
            }
            if p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                if buf.is_empty() {
                    buf.resize(CHUNK + 64, 0);
                }
                match socket::recv(c.fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
                    Ok(0) => gone.push(k),
                    Ok(n) => inputs.extend(decode_input(&buf[..n])),
                    Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                    Err(_) => gone.push(k),
                }
                continue;
            }
            if c.stalled(now) {
                tracing::warn!("an attached client took no output for {STALL:?}: dropped");
                gone.push(k);
            }
        }
        for k in gone.into_iter().rev() {
            self.clients.remove(k);
        }
        if accept && let Some(l) = &self.listener {
            while let Ok(fd) = accept4(l.as_fd(), SockFlag::SOCK_CLOEXEC) {
                self.clients.push(Client::new(fd));
            }
        }
        inputs
    }

    /// Queues the container's output for every client, in messages of at most [`CHUNK`].
    pub fn broadcast(&mut self, stderr: bool, data: &[u8]) {
        if data.len() > CHUNK {
            for part in data.chunks(CHUNK) {
                self.broadcast(stderr, part);
            }
            return;
        }
        if self.clients.is_empty() {
            return;
        }
        let mut msg = Vec::with_capacity(data.len() + 1);
        msg.push(if stderr { STDERR } else { STDOUT });
        msg.extend_from_slice(data);
        let mut gone = Vec::new();
        let last = self.clients.len() - 1;
        let mut msg = Some(msg);
        for (k, c) in self.clients.iter_mut().enumerate() {
            // The last client takes the message itself: no copy for the usual one client.
            let m = if k == last {
                msg.take().unwrap_or_default()
            } else {
                msg.clone().unwrap_or_default()
            };
            c.push(m);
            if !c.flush() {
                gone.push(k);
            }
        }
        for k in gone.into_iter().rev() {
            self.clients.remove(k);
        }
    }

    /// The run ended with `code` (and is recorded): every client gets what is queued for it
    /// and the code (for at most [`END_FLUSH`]), then is let go.
    pub fn end_run(&mut self, code: i32) {
        let mut msg = vec![EXIT];
        msg.extend_from_slice(&code.to_le_bytes());
        for c in &mut self.clients {
            c.push(msg.clone());
        }
        let deadline = Instant::now() + END_FLUSH;
        loop {
            self.clients
                .retain_mut(|c| c.flush() && !c.queue.is_empty());
            let now = Instant::now();
            if self.clients.is_empty() || now >= deadline {
                break;
            }
            let mut pfds: Vec<libc::pollfd> = self
                .clients
                .iter()
                .map(|c| libc::pollfd {
                    fd: c.fd.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                })
                .collect();
            let ms = deadline.saturating_duration_since(now).as_millis() as libc::c_int + 1;
            // SAFETY: pfds is a valid array of pollfd of the length given.
            unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
        }
        self.clients.clear();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let (Some(d), Some(_)) = (&self.dir, &self.listener) {
            let _ = nix::unistd::unlinkat(d, SOCKET, nix::unistd::UnlinkatFlags::NoRemoveDir);
        }
    }
}

fn decode_input(m: &[u8]) -> Option<Input> {
    let (&tag, rest) = m.split_first()?;
    match tag {
        STDIN => Some(Input::Stdin(rest.to_vec())),
        CLOSE_STDIN => Some(Input::CloseStdin),
        RESIZE if rest.len() == 4 => Some(Input::Resize {
            rows: u16::from_le_bytes([rest[0], rest[1]]),
            cols: u16::from_le_bytes([rest[2], rest[3]]),
        }),
        SIGNAL if rest.len() == 4 => Some(Input::Signal(i32::from_le_bytes([
            rest[0], rest[1], rest[2], rest[3],
        ]))),
        _ => None,
    }
}

/// Connects to the attach socket in the container's directory `dir`.
pub fn connect(dir: &Path) -> io::Result<OwnedFd> {
    let dfd = open_dir(dir)?;
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    socket::connect(fd.as_raw_fd(), &socket_addr(&dfd)?)?;
    Ok(fd)
}

/// How a client attaches.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Forward our stdin (the container was started with -i, and no --no-stdin).
    pub stdin: bool,
    /// Our stdin's EOF closes the container's (`run -i`, `start -ai`: docker's StdinOnce).
    pub stdin_once: bool,
    /// The container has a tty: ours goes raw, its size follows ours.
    pub tty: bool,
    /// The detach sequence (empty: none).
    pub detach_keys: Vec<u8>,
    /// Forward the signals we get to the container (without a tty).
    pub sig_proxy: bool,
}

/// How an attachment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The run ended with this code.
    Exited(i32),
    /// The user typed the detach sequence: the container goes on.
    Detached,
    /// The monitor closed the socket without a code.
    Lost,
    /// We got an ending signal we do not forward (the container goes on).
    Signaled(i32),
}

fn winsize_msg() -> Option<Vec<u8>> {
    let ws = sys::get_winsize(0).or_else(|| sys::get_winsize(1))?;
    let mut m = vec![RESIZE];
    m.extend_from_slice(&ws.ws_row.to_le_bytes());
    m.extend_from_slice(&ws.ws_col.to_le_bytes());
    Some(m)
}

/// Relays our stdio to and from the attached container until its run ends, the user
/// detaches, or the monitor goes away.
pub fn client(sock: OwnedFd, opts: &ClientOptions) -> io::Result<Ended> {
    // The signals a client handles: the forwarded ones (the ending ones also restore the
    // terminal before we go) and window size changes.
    let mut sigs = FORWARDED.to_vec();
    sigs.push(libc::SIGWINCH);
    let sigfd = signal_fd_of(&sigs).map_err(io::Error::other)?;
    let raw = if opts.tty && opts.stdin {
        RawMode::enter(0)
    } else {
        None
    };
    let res = relay(&sock, &sigfd, opts);
    drop(raw);
    res
}

fn relay(sock: &OwnedFd, sigfd: &OwnedFd, opts: &ClientOptions) -> io::Result<Ended> {
    let mut out: VecDeque<Vec<u8>> = VecDeque::new();
    if opts.tty
        && let Some(m) = winsize_msg()
    {
        out.push_back(m);
    }
    let mut detacher = Detacher::new(if opts.stdin {
        opts.detach_keys.clone()
    } else {
        Vec::new()
    });
    let mut stdin_open = opts.stdin;
    let mut buf = vec![0u8; CHUNK + 64];
    loop {
        let mut pfds = vec![
            libc::pollfd {
                fd: sock.as_raw_fd(),
                events: libc::POLLIN | if out.is_empty() { 0 } else { libc::POLLOUT },
                revents: 0,
            },
            libc::pollfd {
                fd: sigfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // Our stdin only while nothing waits to be sent: the monitor's pace is ours.
        let read_stdin = stdin_open && out.is_empty();
        if read_stdin {
            pfds.push(libc::pollfd {
                fd: 0,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: pfds is a valid array of pollfd of the length given.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if pfds[1].revents != 0 {
            for sig in read_signals(sigfd) {
                if sig == libc::SIGWINCH {
                    if opts.tty
                        && let Some(m) = winsize_msg()
                    {
                        out.push_back(m);
                    }
                } else if opts.sig_proxy && !opts.tty {
                    let mut m = vec![SIGNAL];
                    m.extend_from_slice(&sig.to_le_bytes());
                    out.push_back(m);
                } else if [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT].contains(&sig)
                {
                    return Ok(Ended::Signaled(sig));
                }
            }
        }
        // What the socket holds, a few messages at a wakeup.
        let mut burst = 0;
        while burst < 16 && pfds[0].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            burst += 1;
            match socket::recv(sock.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => return Ok(Ended::Lost),
                Ok(n) => match buf[..n].split_first() {
                    Some((&STDOUT, d)) => sys::write_all(1, d)?,
                    Some((&STDERR, d)) => sys::write_all(2, d)?,
                    Some((&EXIT, c)) if c.len() == 4 => {
                        return Ok(Ended::Exited(i32::from_le_bytes([c[0], c[1], c[2], c[3]])));
                    }
                    _ => {}
                },
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return Ok(Ended::Lost),
            }
        }
        if pfds[0].revents & libc::POLLOUT != 0 {
            while let Some(m) = out.front() {
                match socket::send(
                    sock.as_raw_fd(),
                    m,
                    MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
                ) {
                    Ok(_) => {
                        out.pop_front();
                    }
                    Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => break,
                    Err(_) => return Ok(Ended::Lost),
                }
            }
        }
        if read_stdin && pfds.get(2).is_some_and(|p| p.revents != 0) {
            match sys::read(0, &mut buf[..CHUNK]) {
                Ok(n) if n > 0 => {
                    let mut fwd = vec![STDIN];
                    let detach = detacher.feed(&buf[..n], &mut fwd);
                    if fwd.len() > 1 {
                        out.push_back(fwd);
                    }
                    if detach {
                        flush_blocking(sock, &mut out);
                        return Ok(Ended::Detached);
                    }
                }
                _ => {
                    stdin_open = false;
                    if opts.stdin_once {
                        out.push_back(vec![CLOSE_STDIN]);
                    }
                }
            }
        }
    }
}

/// Sends what is queued before we go (the keys typed before the detach sequence).
fn flush_blocking(sock: &OwnedFd, out: &mut VecDeque<Vec<u8>>) {
    while let Some(m) = out.pop_front() {
        if socket::send(sock.as_raw_fd(), &m, MsgFlags::MSG_NOSIGNAL).is_err() {
            return;
        }
    }
}

/// The exit code a client's end means for `wharf attach` / `run -i`: the run's code, 0 on a
/// detach, 128+N for our own signal N; `None` when the monitor went away without one.
pub fn exit_code(e: Ended) -> Option<i32> {
    match e {
        Ended::Exited(c) => Some(c),
        Ended::Detached => Some(0),
        Ended::Signaled(s) => Some(128 + s),
        Ended::Lost => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_take_docker_syntax() {
        assert_eq!(parse_detach_keys("").unwrap(), vec![16, 17]);
        assert_eq!(parse_detach_keys("ctrl-p,ctrl-q").unwrap(), vec![16, 17]);
        assert_eq!(parse_detach_keys("CTRL-A,x").unwrap(), vec![1, b'x']);
        assert_eq!(
            parse_detach_keys("ctrl-@,ctrl-[,ctrl-\\,ctrl-],ctrl-^,ctrl-_").unwrap(),
            vec![0, 27, 28, 29, 30, 31]
        );
        for bad in ["ctrl-", "ctrl-1", "ab", "ctrl-pq", "a,,b"] {
            assert!(parse_detach_keys(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_detach_sequence_is_held_back_and_broken_ones_are_sent() {
        let mut d = Detacher::new(vec![16, 17]);
        let mut out = Vec::new();
        assert!(!d.feed(b"ab\x10", &mut out));
        assert_eq!(out, b"ab");
        // Broken across reads: the held key is sent with what broke it.
        assert!(!d.feed(b"c", &mut out));
        assert_eq!(out, b"ab\x10c");
        out.clear();
        assert!(!d.feed(b"\x10\x10", &mut out));
        assert_eq!(out, b"\x10", "the second ctrl-p may still begin it");
        assert!(d.feed(b"\x11rest", &mut out));
        assert_eq!(out, b"\x10", "what follows the sequence is dropped");
        let mut none = Detacher::new(Vec::new());
        let mut out = Vec::new();
        assert!(!none.feed(b"\x10\x11", &mut out));
        assert_eq!(out, b"\x10\x11");
    }

    #[test]
    fn inputs_decode_and_junk_is_ignored() {
        assert_eq!(
            decode_input(&[STDIN, b'h', b'i']),
            Some(Input::Stdin(b"hi".to_vec()))
        );
        assert_eq!(decode_input(&[CLOSE_STDIN]), Some(Input::CloseStdin));
        assert_eq!(
            decode_input(&[RESIZE, 24, 0, 80, 0]),
            Some(Input::Resize { rows: 24, cols: 80 })
        );
        assert_eq!(
            decode_input(&[SIGNAL, 15, 0, 0, 0]),
            Some(Input::Signal(15))
        );
        assert_eq!(decode_input(&[RESIZE, 1]), None);
        assert_eq!(decode_input(&[]), None);
        assert_eq!(decode_input(&[200, 1, 2]), None);
    }

    #[test]
    fn a_server_relays_both_ways_and_ends_with_the_code() {
        let dir = tempfile::tempdir().unwrap();
        let mut srv = Server::bind(dir.path()).unwrap();
        let meta = std::fs::metadata(dir.path().join(SOCKET)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let c = connect(dir.path()).unwrap();
        // Accept.
        let mut pfds = Vec::new();
        let first = srv.poll_fds(&mut pfds, true);
        // SAFETY: a valid pollfd array.
        unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 5000) };
        assert!(srv.handle(&pfds, first).is_empty());
        assert!(srv.has_clients());
        socket::send(c.as_raw_fd(), &[STDIN, b'x'], MsgFlags::empty()).unwrap();
        let mut pfds = Vec::new();
        let first = srv.poll_fds(&mut pfds, true);
        // SAFETY: a valid pollfd array.
        unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 5000) };
        assert_eq!(srv.handle(&pfds, first), vec![Input::Stdin(b"x".to_vec())]);
        srv.broadcast(false, b"out");
        srv.end_run(7);
        let mut buf = [0u8; 64];
        let n = socket::recv(c.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
        assert_eq!(&buf[..n], &[STDOUT, b'o', b'u', b't']);
        let n = socket::recv(c.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
        assert_eq!(&buf[..n], &[EXIT, 7, 0, 0, 0]);
        drop(srv);
        assert!(!dir.path().join(SOCKET).exists(), "the socket goes with it");
    }
}
