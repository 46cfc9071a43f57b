//! The typed messages between wharf and a process it puts into a container (a container's
//! init, or an `exec`'d process) over their `SOCK_SEQPACKET` pair: one serde enum each way,
//! one message per datagram as JSON, a descriptor riding along as `SCM_RIGHTS`.
//!
//! ```text
//! wharf ── ToChild::Go { winsize } ─────────────────────────▶ child (after its cgroup holds it)
//! wharf ◀── FromChild::Pty + the pty master (with -t) ──────── child
//! wharf ◀── FromChild::Failed { code, message } ────────────── child (setup or exec failed)
//! wharf ◀── EOF ────────────────────────────────────────────── exec succeeded (close-on-exec)
//! wharf ◀── FromChild::Born { pid } ───────────────────────── `exec`'s intermediate, on a pipe
//! ```
//! The child side runs in a forked copy of a single-threaded wharf: encoding and decoding
//! allocate but never panic (every error is a value).

use std::io;
use std::os::fd::{OwnedFd, RawFd};

use serde::{Deserialize, Serialize};

use super::sys;

/// The largest message either side sends (a failure's text is cut to fit).
const MAX_MESSAGE: usize = 8192;

/// wharf → child.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case")]
pub enum ToChild {
    /// Go on (the parent has put the child in its cgroup), with the terminal size the pty
    /// starts with: rows, cols, xpixel, ypixel.
    Go { winsize: Option<[u16; 4]> },
}

/// child → wharf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case")]
pub enum FromChild {
    /// The pty master follows as `SCM_RIGHTS`.
    Pty,
    /// `exec`'s intermediate forked the process that joins the container: its host pid.
    Born { pid: i32 },
    /// Setup or exec failed; `code` is the exit code `run` (or `exec`) gives.
    Failed { code: i32, message: String },
}

impl ToChild {
    pub fn go(winsize: Option<libc::winsize>) -> ToChild {
        ToChild::Go {
            winsize: winsize.map(|w| [w.ws_row, w.ws_col, w.ws_xpixel, w.ws_ypixel]),
        }
    }

    /// The terminal size of a `Go`.
    pub fn winsize(&self) -> Option<libc::winsize> {
        match self {
            ToChild::Go { winsize } => winsize.map(|[r, c, x, y]| libc::winsize {
                ws_row: r,
                ws_col: c,
                ws_xpixel: x,
                ws_ypixel: y,
            }),
        }
    }
}

fn encode<T: Serialize>(msg: &T) -> io::Result<Vec<u8>> {
    serde_json::to_vec(msg).map_err(io::Error::other)
}

/// Sends a message to the child.
pub fn send_to_child(sock: RawFd, msg: &ToChild) -> io::Result<()> {
    sys::write_all(sock, &encode(msg)?)
}

/// Receives the parent's message; None when the parent closed its end first.
pub fn recv_in_child(sock: RawFd) -> io::Result<Option<ToChild>> {
    let mut buf = [0u8; 512];
    let n = sys::read(sock, &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    serde_json::from_slice(buf.get(..n).unwrap_or_default())
        .map(Some)
        .map_err(io::Error::other)
}

/// Sends a message to wharf, with a descriptor when one is given.
pub fn send_to_parent(sock: RawFd, msg: &FromChild, fd: Option<RawFd>) -> io::Result<()> {
    let mut msg = msg.clone();
    if let FromChild::Failed { message, .. } = &mut msg {
        let mut cut = message.len().min(MAX_MESSAGE - 64);
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    let bytes = encode(&msg)?;
    match fd {
        Some(fd) => sys::send_fd(sock, &bytes, fd),
        None => sys::write_all(sock, &bytes),
    }
}

/// What the child said before its exec.
#[derive(Debug)]
pub enum Exec {
    /// The child exec'd (its end closed); with `-t`, the pty master it sent before.
    Ran { master: Option<OwnedFd> },
    /// It failed, with the exit code and message to report.
    Failed { code: i32, message: String },
}

/// What to tell the user about a child's failure with `code`.
pub fn exec_hint(code: i32) -> &'static str {
    match code {
        crate::error::exit::NOT_FOUND => "check the command's path and the container's PATH",
        crate::error::exit::NOT_EXECUTABLE => "check that the command is an executable file",
        _ => "run with --debug for details",
    }
}

/// Reads the child's messages until it execs (EOF) or reports a failure.
pub fn await_exec(sock: RawFd) -> io::Result<Exec> {
    let mut master = None;
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let (n, fd) = sys::recv_msg(sock, &mut buf)?;
        let Some(bytes) = buf.get(..n).filter(|b| !b.is_empty()) else {
            return Ok(Exec::Ran { master });
        };
        match serde_json::from_slice::<FromChild>(bytes) {
            Ok(FromChild::Pty) if fd.is_some() => master = fd,
            Ok(FromChild::Failed { code, message }) => return Ok(Exec::Failed { code, message }),
            Ok(FromChild::Pty) => {
                return Err(io::Error::other("the child announced a pty but sent none"));
            }
            Ok(FromChild::Born { .. }) => {
                return Err(io::Error::other("unexpected message from the child: born"));
            }
            Err(e) => {
                return Err(io::Error::other(format!(
                    "unexpected message from the child: {e}"
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn messages_cross_a_socket_pair_with_a_descriptor() {
        let (a, b) = sys::seqpacket_pair().expect("socketpair");
        let ws = libc::winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        send_to_child(a.as_raw_fd(), &ToChild::go(Some(ws))).expect("send go");
        let go = recv_in_child(b.as_raw_fd()).expect("recv").expect("a go");
        assert_eq!(go.winsize().map(|w| (w.ws_row, w.ws_col)), Some((24, 80)));

        let (r, _w) = sys::pipe().expect("pipe");
        send_to_parent(b.as_raw_fd(), &FromChild::Pty, Some(r.as_raw_fd())).expect("send pty");
        send_to_parent(
            b.as_raw_fd(),
            &FromChild::Failed {
                code: 127,
                message: "é".repeat(MAX_MESSAGE),
            },
            None,
        )
        .expect("send failure");
        match await_exec(a.as_raw_fd()).expect("await") {
            Exec::Failed { code, message } => {
                assert_eq!(code, 127);
                assert!(message.len() < MAX_MESSAGE, "cut to fit");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        drop(b);
        match await_exec(a.as_raw_fd()).expect("await") {
            Exec::Ran { master } => assert!(master.is_none()),
            other => panic!("expected EOF, got {other:?}"),
        }
    }

    #[test]
    fn a_parent_gone_before_the_go_reads_as_none_and_garbage_as_an_error() {
        let (a, b) = sys::seqpacket_pair().expect("socketpair");
        sys::write_all(a.as_raw_fd(), b"g").expect("old framing");
        assert!(recv_in_child(b.as_raw_fd()).is_err());
        drop(a);
        assert_eq!(recv_in_child(b.as_raw_fd()).expect("eof"), None);
    }
}
