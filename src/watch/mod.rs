//! The watch loop: converge now, then again when a manifest or a referenced tarball changes,
//! when the store changes (a container exited), and every resync interval; stop on SIGTERM
//! or SIGINT, leaving containers running under their monitors.
//!
//! The loop is generic over the converge step ([`Converger`]), so it knows nothing of
//! manifests or plans, and its timing rules (debounce, resync) are unit-tested with a
//! scripted event channel. [`watch`] wires it to inotify (notify) and to the signals.
//!
//! What is watched is recomputed after each converge ([`WatchSet`]): the manifest
//! directories (non-recursively, any `*.toml`, so new files count as they appear), each
//! manifest file given by path, each referenced source tarball, and the store's WAL file
//! (every commit, such as a monitor recording an exit, appends to it). Directories are
//! watched rather than files so that editors which replace a file by rename are seen.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use notify::{RecursiveMode, Watcher};

pub mod converge;

/// Why a converge runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// The first converge, when the watch starts.
    Start,
    /// Watched files changed (debounced): the paths seen.
    Changed(Vec<PathBuf>),
    /// The store changed and the converger said it matters (a container exited).
    Store,
    /// The resync interval passed with nothing else happening.
    Resync,
}

/// What to watch: directories, each with the names in it that matter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchSet {
    dirs: BTreeMap<PathBuf, Names>,
    /// Paths whose change is a store change, not a manifest change.
    store_files: BTreeSet<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Names {
    any_toml: bool,
    files: BTreeSet<OsString>,
}

impl WatchSet {
    /// Every `*.toml` in `dir`, present or future.
    pub fn add_manifest_dir(&mut self, dir: &Path) {
        self.dirs.entry(dir.to_path_buf()).or_default().any_toml = true;
    }

    /// One file (a manifest given by path, or a source tarball).
    pub fn add_file(&mut self, file: &Path) {
        if let (Some(dir), Some(name)) = (file.parent(), file.file_name()) {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            self.dirs
                .entry(dir.to_path_buf())
                .or_default()
                .files
                .insert(name.to_os_string());
        }
    }

    /// A file of the store whose change means "look at the store again".
    pub fn add_store_file(&mut self, file: &Path) {
        self.add_file(file);
        self.store_files.insert(file.to_path_buf());
    }

    /// Adds everything `other` watches.
    pub fn extend(&mut self, other: &WatchSet) {
        for (dir, names) in &other.dirs {
            let mine = self.dirs.entry(dir.clone()).or_default();
            mine.any_toml |= names.any_toml;
            mine.files.extend(names.files.iter().cloned());
        }
        self.store_files.extend(other.store_files.iter().cloned());
    }

    /// Whether a change to `path` is a manifest or source change for this set.
    pub fn matches(&self, path: &Path) -> bool {
        self.classify(path) == Some(false)
    }

    /// The directories to hand to inotify.
    pub fn dirs(&self) -> impl Iterator<Item = &Path> {
        self.dirs.keys().map(PathBuf::as_path)
    }

    /// What a changed path means: None (not ours), or Some(true) for a store file.
    fn classify(&self, path: &Path) -> Option<bool> {
        if self.store_files.contains(path) {
            return Some(true);
        }
        let (dir, name) = (path.parent()?, path.file_name()?);
        let names = self.dirs.get(dir)?;
        let toml = Path::new(name).extension().is_some_and(|e| e == "toml");
        // Editors' swap and backup files (`.x.toml.swp`, `x.toml~`) end otherwise.
        (names.files.contains(name) || (names.any_toml && toml)).then_some(false)
    }
}

/// The converge step the loop drives.
pub trait Converger {
    /// Converges and returns what to watch from now on. An invalid manifest must print its
    /// errors, leave everything running, and return the last good set.
    fn converge(&mut self, why: &Trigger) -> WatchSet;

    /// The store changed: does that call for a converge (did a container of ours exit)?
    fn store_changed(&mut self) -> bool;

    /// Asked after each converge and store check: ask [`Converger::store_changed`] again after
    /// this long even if the store does not change (a store converge held back by a backoff).
    fn retry_in(&self) -> Option<Duration> {
        None
    }

    /// What to watch before the first converge (the manifests given), so that a change made
    /// while it runs is not missed; asked again after each [`Msg::Converged`].
    fn initial_set(&self) -> WatchSet {
        WatchSet::default()
    }

    /// The loop's channel, for a converger that converges in the background: it sends
    /// [`Msg::Converged`] when a converge is done (its watch set may have changed).
    fn attach(&mut self, _tx: Sender<Msg>) {}

    /// The loop is stopping: let converges under way finish.
    fn finish(&mut self) {}
}

/// What reaches the loop.
#[derive(Debug)]
pub enum Msg {
    /// Paths notify reported.
    Paths(Vec<PathBuf>),
    /// A notify error: printed, the loop goes on (the resync covers what was missed).
    Error(String),
    /// SIGTERM or SIGINT.
    Stop,
    /// SIGCHLD: a child (a monitor this process started) ended; look at the store.
    Child,
    /// A background converge is done: what to watch may have changed.
    Converged,
}

/// Timing of the loop.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Quiet time after the last relevant event before converging: an editor's burst of
    /// writes gives one converge.
    pub debounce: Duration,
    /// The longest a steady stream of events can delay a converge.
    pub max_delay: Duration,
    /// Converge at least this often.
    pub resync: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            debounce: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            resync: Duration::from_secs(30),
        }
    }
}

/// Runs the loop until [`Msg::Stop`] or the channel closes. `on_set` is told each new watch
/// set (to update inotify). Returns the number of converges.
pub fn run_loop(
    rx: &Receiver<Msg>,
    timing: Timing,
    conv: &mut dyn Converger,
    on_set: &mut dyn FnMut(&WatchSet),
) -> u64 {
    let initial = conv.initial_set();
    on_set(&initial);
    let mut set = conv.converge(&Trigger::Start);
    if set != initial {
        on_set(&set);
    }
    let mut converges = 1u64;
    let mut last_converge = Instant::now();
    // A pending manifest change: the paths, when the first came, when the last came.
    let mut pending: Option<(BTreeSet<PathBuf>, Instant, Instant)> = None;
    let mut store_pending = false;
    let mut retry_at = conv.retry_in().map(|d| Instant::now() + d);
    loop {
        let now = Instant::now();
        let resync_at = last_converge + timing.resync;
        let deadline = match &pending {
            Some((_, first, last)) => (*last + timing.debounce).min(*first + timing.max_delay),
            None if store_pending => now,
            None => retry_at.map_or(resync_at, |r| r.min(resync_at)),
        };
        let msg = rx.recv_timeout(deadline.saturating_duration_since(now));
        match msg {
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => {
                conv.finish();
                return converges;
            }
            Ok(Msg::Converged) => {
                let next = conv.initial_set();
                if next != set {
                    set = next;
                    on_set(&set);
                }
            }
            Ok(Msg::Error(e)) => tracing::warn!("watch: {e}"),
            Ok(Msg::Child) => store_pending = true,
            Ok(Msg::Paths(paths)) => {
                let now = Instant::now();
                for p in paths {
                    match set.classify(&p) {
                        Some(true) => store_pending = true,
                        Some(false) => {
                            let entry = pending.get_or_insert_with(|| (BTreeSet::new(), now, now));
                            entry.0.insert(p);
                            entry.2 = now;
                        }
                        None => {}
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                // A store change pending alongside stays pending: the Changed converge covers
                // only the projects of those paths, so the store check runs right after it.
                let why = if let Some((paths, _, _)) = pending.take() {
                    Some(Trigger::Changed(paths.into_iter().collect()))
                } else if store_pending
                    || retry_at.is_some_and(|r| r <= Instant::now() && r < resync_at)
                {
                    store_pending = false;
                    match conv.store_changed() {
                        true => Some(Trigger::Store),
                        false => {
                            retry_at = conv.retry_in().map(|d| Instant::now() + d);
                            continue;
                        }
                    }
                } else {
                    Some(Trigger::Resync)
                };
                if let Some(why) = why {
                    let next = conv.converge(&why);
                    if next != set {
                        set = next;
                        on_set(&set);
                    }
                    converges += 1;
                }
                retry_at = conv.retry_in().map(|d| Instant::now() + d);
                last_converge = Instant::now();
            }
        }
    }
}

/// Watches with inotify and stops on SIGTERM/SIGINT. Returns the number of converges.
pub fn watch(timing: Timing, conv: &mut dyn Converger) -> Result<u64> {
    let (tx, rx) = mpsc::channel::<Msg>();
    let fs_tx = tx.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let msg = match res {
            Ok(ev) if ev.kind.is_access() => return,
            Ok(ev) => Msg::Paths(ev.paths),
            Err(e) => Msg::Error(e.to_string()),
        };
        let _ = fs_tx.send(msg);
    })
    .context("cannot start watching files (inotify)")?;
    conv.attach(tx.clone());
    forward_signals(tx)?;
    let mut watched: BTreeSet<PathBuf> = BTreeSet::new();
    let mut on_set = |set: &WatchSet| {
        let want: BTreeSet<PathBuf> = set.dirs().map(Path::to_path_buf).collect();
        for gone in watched.difference(&want) {
            let _ = watcher.unwatch(gone);
        }
        for new in want.difference(&watched) {
            if let Err(e) = watcher.watch(new, RecursiveMode::NonRecursive) {
                tracing::warn!("cannot watch {}: {e}", new.display());
            }
        }
        watched = want;
    };
    Ok(run_loop(&rx, timing, conv, &mut on_set))
}

/// SIGTERM and SIGINT become [`Msg::Stop`]; SIGCHLD becomes [`Msg::Child`] (a monitor this
/// process started died: if it was killed, nobody else writes to the store to say so).
fn forward_signals(tx: Sender<Msg>) -> Result<()> {
    use signal_hook::consts::{SIGCHLD, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGCHLD])
        .context("cannot install the SIGTERM/SIGINT/SIGCHLD handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let msg = if sig == SIGCHLD {
                    Msg::Child
                } else {
                    Msg::Stop
                };
                let stop = matches!(msg, Msg::Stop);
                if tx.send(msg).is_err() || stop {
                    return;
                }
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Script {
        set: WatchSet,
        seen: Vec<Trigger>,
        store_matters: bool,
    }

    impl Converger for Script {
        fn converge(&mut self, why: &Trigger) -> WatchSet {
            self.seen.push(why.clone());
            self.set.clone()
        }
        fn store_changed(&mut self) -> bool {
            self.store_matters
        }
    }

    fn script() -> Script {
        let mut set = WatchSet::default();
        set.add_manifest_dir(Path::new("/m"));
        set.add_file(Path::new("/img/app.tar"));
        set.add_store_file(Path::new("/root/wharf.db-wal"));
        Script {
            set,
            seen: Vec::new(),
            store_matters: true,
        }
    }

    const FAST: Timing = Timing {
        debounce: Duration::from_millis(20),
        max_delay: Duration::from_secs(5),
        resync: Duration::from_secs(3600),
    };

    fn paths(v: &[&str]) -> Msg {
        Msg::Paths(v.iter().map(PathBuf::from).collect())
    }

    /// Sends `msgs` (all queued before the loop starts, so they arrive as one burst), then
    /// a stop once the loop has converged `want` times.
    fn drive(s: &mut Script, msgs: Vec<Msg>, want: usize, timing: Timing) -> u64 {
        let (tx, rx) = mpsc::channel();
        for m in msgs {
            tx.send(m).expect("send");
        }
        struct Stopper<'a> {
            inner: &'a mut Script,
            tx: Sender<Msg>,
            want: usize,
        }
        impl Converger for Stopper<'_> {
            fn converge(&mut self, why: &Trigger) -> WatchSet {
                let set = self.inner.converge(why);
                if self.inner.seen.len() >= self.want {
                    let _ = self.tx.send(Msg::Stop);
                }
                set
            }
            fn store_changed(&mut self) -> bool {
                let r = self.inner.store_changed();
                if !r {
                    let _ = self.tx.send(Msg::Stop);
                }
                r
            }
        }
        let mut st = Stopper { inner: s, tx, want };
        run_loop(&rx, timing, &mut st, &mut |_| {})
    }

    #[test]
    fn a_burst_of_writes_gives_one_converge() {
        let mut s = script();
        let burst = vec![
            paths(&["/m/web.toml"]),
            paths(&["/m/.web.toml.swp"]),
            paths(&["/m/web.toml", "/m/web.toml~"]),
            paths(&["/m/db.toml"]),
        ];
        let n = drive(&mut s, burst, 2, FAST);
        assert_eq!(n, 2);
        assert_eq!(
            s.seen,
            vec![
                Trigger::Start,
                Trigger::Changed(vec!["/m/db.toml".into(), "/m/web.toml".into()])
            ]
        );
    }

    #[test]
    fn unrelated_files_are_ignored_and_sources_count() {
        let mut s = script();
        let msgs = vec![
            paths(&["/m/notes.txt", "/img/other.tar", "/elsewhere/x.toml"]),
            paths(&["/img/app.tar"]),
        ];
        drive(&mut s, msgs, 2, FAST);
        assert_eq!(s.seen[1], Trigger::Changed(vec!["/img/app.tar".into()]));
    }

    #[test]
    fn store_changes_converge_only_when_they_matter() {
        let mut s = script();
        drive(&mut s, vec![paths(&["/root/wharf.db-wal"])], 2, FAST);
        assert_eq!(s.seen, vec![Trigger::Start, Trigger::Store]);

        let mut quiet = script();
        quiet.store_matters = false;
        let n = drive(&mut quiet, vec![paths(&["/root/wharf.db-wal"])], 9, FAST);
        assert_eq!(
            n, 1,
            "a store change that does not matter converges nothing"
        );
    }

    #[test]
    fn a_held_back_store_check_is_asked_again_after_retry_in() {
        struct Held {
            set: WatchSet,
            seen: Vec<Trigger>,
            checks: u32,
            tx: Sender<Msg>,
        }
        impl Converger for Held {
            fn converge(&mut self, why: &Trigger) -> WatchSet {
                self.seen.push(why.clone());
                if self.seen.len() == 2 {
                    let _ = self.tx.send(Msg::Stop);
                }
                self.set.clone()
            }
            fn store_changed(&mut self) -> bool {
                self.checks += 1;
                self.checks > 1 // the first check is held back (a backoff)
            }
            fn retry_in(&self) -> Option<Duration> {
                (self.checks == 1).then_some(Duration::from_millis(10))
            }
        }
        let (tx, rx) = mpsc::channel();
        tx.send(paths(&["/root/wharf.db-wal"])).expect("send");
        let mut h = Held {
            set: script().set,
            seen: Vec::new(),
            checks: 0,
            tx,
        };
        let n = run_loop(&rx, FAST, &mut h, &mut |_| {});
        assert_eq!(n, 2);
        assert_eq!(h.seen, vec![Trigger::Start, Trigger::Store]);
        assert_eq!(h.checks, 2, "asked again without a new store event");
    }

    #[test]
    fn a_child_signal_is_a_store_change() {
        let mut s = script();
        drive(&mut s, vec![Msg::Child], 2, FAST);
        assert_eq!(s.seen, vec![Trigger::Start, Trigger::Store]);
    }

    #[test]
    fn resync_converges_when_nothing_happens() {
        let mut s = script();
        let timing = Timing {
            resync: Duration::from_millis(10),
            ..FAST
        };
        drive(&mut s, vec![], 3, timing);
        assert_eq!(
            s.seen,
            vec![Trigger::Start, Trigger::Resync, Trigger::Resync]
        );
    }

    #[test]
    fn stop_ends_the_loop_at_once() {
        let mut s = script();
        let n = drive(&mut s, vec![paths(&["/m/a.toml"]), Msg::Stop], 9, FAST);
        assert_eq!(n, 1, "stop wins over a pending change");
    }

    #[test]
    fn relative_file_names_watch_the_current_dir() {
        let mut set = WatchSet::default();
        set.add_file(Path::new("web.toml"));
        assert_eq!(set.dirs().collect::<Vec<_>>(), vec![Path::new(".")]);
    }
}
