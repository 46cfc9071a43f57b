//! `wharf attach`, and the foreground `run -i` / `start -ai`: a client of the attach socket
//! the container's monitor serves ([`crate::runtime::attach`]).

use std::os::fd::OwnedFd;

use anyhow::{Context, Result};

use super::{Attaching, last_exit_code, spawn_monitor};
use crate::container::{self, Owner, Record};
use crate::error::{exit, user};
use crate::runtime::attach::{self, ClientOptions, Ended};
use crate::runtime::sys;
use crate::store::Store;

/// `wharf attach`'s options.
#[derive(Debug, Clone)]
pub struct AttachOptions {
    /// `--no-stdin` not given.
    pub stdin: bool,
    pub detach_keys: Vec<u8>,
    pub sig_proxy: bool,
}

/// What an attachment's end means as an exit code: the run's, 0 on a detach, 128+N for our
/// own signal N; the journal's last code when the monitor went away without telling.
fn outcome(store: &Store, id: &str, ended: Ended) -> Result<i32> {
    match attach::exit_code(ended) {
        Some(c) => Ok(c),
        None => last_exit_code(store, id),
    }
}

/// `wharf attach CONTAINER`: our terminal to the running container's stdio until its run
/// ends (its exit code), the detach keys (0), or our own ending signal.
pub fn attach(store: &Store, input: &str, opts: &AttachOptions) -> Result<i32> {
    super::recover(store)?;
    let rec = container::find(store, input)?;
    if !rec.is_up() {
        return Err(user(format!(
            "cannot attach to container {}: it is not running",
            rec.name
        ))
        .hint(format!("start it first: `wharf start -ai {}`", rec.name))
        .into());
    }
    let sock = attach::connect(&store.container_dir(&rec.id)).map_err(|e| {
        anyhow::Error::new(
            user(format!(
                "cannot attach to container {}: its monitor does not answer ({e})",
                rec.name
            ))
            .hint(format!(
                "it may be restarting or ending: `wharf ps -a`; its output is in `wharf logs {}`",
                rec.name
            )),
        )
    })?;
    let copts = ClientOptions {
        stdin: opts.stdin && rec.config.interactive,
        stdin_once: false,
        tty: rec.config.tty,
        detach_keys: opts.detach_keys.clone(),
        sig_proxy: opts.sig_proxy,
    };
    let ended = attach::client(sock, &copts).context("the attach failed")?;
    outcome(store, &rec.id, ended)
}

/// A claimed container started under a detached monitor that serves `mine`'s peer from the
/// start, then attached to to the end.
pub(super) fn start_attached(store: &Store, rec: &Record, me: Owner, a: &Attaching) -> Result<i32> {
    let (mine, theirs): (OwnedFd, OwnedFd) =
        sys::seqpacket_pair().context("cannot create the attach socket")?;
    let winsize = if rec.config.tty {
        sys::get_winsize(0).or_else(|| sys::get_winsize(1))
    } else {
        None
    };
    let res = spawn_monitor(store.root(), &rec.id, Some((&theirs, winsize)));
    drop(theirs);
    if let Err(e) = res {
        let _ = container::release(store, &rec.id, me);
        return Err(e);
    }
    let copts = ClientOptions {
        stdin: a.stdin,
        stdin_once: true,
        tty: rec.config.tty,
        detach_keys: a.detach_keys.clone(),
        sig_proxy: a.sig_proxy,
    };
    let ended = attach::client(mine, &copts).map_err(|e| {
        anyhow::Error::new(
            user(format!("lost the container's output: {e}"))
                .hint(format!(
                    "it runs on: `wharf attach {}` or `wharf logs {}`",
                    rec.name, rec.name
                ))
                .code(exit::RUNTIME),
        )
    })?;
    outcome(store, &rec.id, ended)
}
