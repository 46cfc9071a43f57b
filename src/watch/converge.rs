//! The converge step of `wharf watch`: one [`Converger`] for several projects.
//!
//! Each watched PATH is one project, exactly as with `apply -f PATH` (a file, or a directory
//! whose `*.toml` files merge into one project); one watch may hold several. A converge loads
//! the project's manifest and applies it ([`execute::apply`]); only the projects a trigger
//! concerns converge (a changed file converges the projects that watch it, a store change the
//! projects whose containers it touched; start and resync converge all).
//!
//! Rules:
//! - An invalid manifest prints its problems (`file:line:col`, caret snippets) and changes
//!   nothing: the last good state keeps running.
//! - A project whose manifests are all gone (the file deleted, or the directory's last
//!   `*.toml` deleted) is an empty input, not a request to tear down: a warning says how to
//!   remove it (`wharf down`). Deleting one file of a directory project is an edit: what it
//!   declared is removed, as `apply` would.
//! - A project is watched by one watch at a time: `<root>/watch/<project>.lock` (flock) holds
//!   the watcher's pid; a second watch refuses to start, naming it.
//! - A container of ours that is not running (exited, killed, removed) converges at once,
//!   unless its monitor is alive (a restart policy carries it). A project whose store
//!   converges follow each other within [`CRASH_WINDOW`] backs off (0.5 s doubling, capped at
//!   the resync interval), so a crash-looping container does not spin the host.
//! - Resync and store converges that find nothing to do are neither applied nor journaled.
//!   Every other converge is an apply: journaled, with the trigger in the plan JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{IsTerminal, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};
use rusqlite::params;

use super::{Converger, Msg, Trigger, WatchSet};
use crate::container::run_goes_on;
use crate::error::user;
use crate::manifest::{DesiredState, Manifest};
use crate::reconcile::execute::{self, ApplyOptions};
use crate::reconcile::{Action, Plan};
use crate::store::Store;

/// Store converges of one project closer together than this count as a crash loop.
pub const CRASH_WINDOW: Duration = Duration::from_secs(10);
/// The first backoff of a crash loop; it doubles up to the resync interval.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// How to converge.
#[derive(Debug, Clone)]
pub struct Options {
    /// SIGTERM → SIGKILL grace for containers stopped or removed.
    pub stop_timeout: Duration,
    /// The resync interval (caps the crash-loop backoff).
    pub resync: Duration,
    /// Also log converges that found nothing to do.
    pub verbose: bool,
    /// `--insecure-manifests`: skip the owner and mode checks of `manifest::trust`.
    pub insecure_manifests: bool,
}

fn load_options(opts: &Options) -> crate::manifest::LoadOptions {
    crate::manifest::LoadOptions {
        insecure: opts.insecure_manifests,
    }
}

/// An flock on `<root>/watch/<project>.lock`, holding the watcher's pid.
#[derive(Debug)]
pub struct ProjectLock {
    pub project: String,
    _file: Flock<File>,
}

/// Takes the watch lock of `project`, or says who holds it.
pub fn lock_project(root: &Path, project: &str) -> Result<ProjectLock> {
    lock_file(
        root,
        &format!("{project}.lock"),
        &format!("project {project}"),
        project,
    )
}

/// Takes the watch lock of a manifest path (so that a second watch of a manifest that does
/// not load yet is refused too), or says who holds it.
fn lock_path(root: &Path, path: &Path) -> Result<ProjectLock> {
    use sha2::{Digest, Sha256};
    let h = hex::encode(Sha256::digest(path.as_os_str().as_encoded_bytes()));
    let name = format!("path-{}.lock", &h[..16]);
    lock_file(root, &name, &path.display().to_string(), "")
}

fn lock_file(root: &Path, name: &str, what: &str, project: &str) -> Result<ProjectLock> {
    let dir = root.join("watch");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(name);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut f) => {
            f.set_len(0)?;
            f.rewind()?;
            write!(f, "{}", std::process::id())?;
            Ok(ProjectLock {
                project: project.to_string(),
                _file: f,
            })
        }
        Err((mut f, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            let pid = pid.trim();
            let holder = if pid.is_empty() {
                "another process".to_string()
            } else {
                format!("pid {pid}")
            };
            Err(user(format!(
                "{what} is already watched by {holder} (lock {})",
                path.display()
            ))
            .hint(format!(
                "one watch per project: stop that watch first (kill {pid}, or `systemctl stop` its unit)"
            ))
            .into())
        }
        Err((_, e)) => {
            Err(anyhow::Error::new(e).context(format!("cannot lock {}", path.display())))
        }
    }
}

/// What the last valid load of a project said.
#[derive(Debug)]
struct Good {
    project: String,
    set: WatchSet,
    /// Declared containers: name → wants running.
    containers: BTreeMap<String, bool>,
}

#[derive(Debug)]
struct Project {
    /// The manifest files or directory, whatever loads.
    base: WatchSet,
    /// What its worker's last valid load said (the worker writes it, the loop reads it).
    good: Arc<Mutex<Option<Good>>>,
    /// Its worker, once started; its state until then.
    worker: Option<Worker>,
    idle: Option<ProjectWork>,
    _path_lock: ProjectLock,
    /// Crash-loop backoff: store converges in a row, when the last was, when the next may be.
    streak: u32,
    last_store: Option<Instant>,
    hold_until: Option<Instant>,
}

/// The thread that converges one project, so that one project's converge (a long stop of
/// its containers) never holds back another's. Triggers queue up in its channel and are
/// coalesced: a burst gives one converge.
#[derive(Debug)]
struct Worker {
    tx: Sender<Trigger>,
    handle: JoinHandle<()>,
}

/// What one project's converges need and keep, owned by its worker.
#[derive(Debug)]
struct ProjectWork {
    /// The PATH as given (for messages and `wharf down -f`).
    given: PathBuf,
    /// Absolute.
    path: PathBuf,
    is_dir: bool,
    lock: Option<ProjectLock>,
    /// The problems last printed: the same ones are not printed again at each resync.
    last_errors: Option<String>,
    good: Arc<Mutex<Option<Good>>>,
}

impl ProjectWork {
    fn name(&self) -> String {
        self.good
            .lock()
            .ok()
            .and_then(|g| g.as_ref().map(|g| g.project.clone()))
            .unwrap_or_else(|| self.given.display().to_string())
    }
}

/// Reads the shared last good load of a project (a poisoned lock reads as none).
fn good_read<T>(good: &Mutex<Option<Good>>, f: impl FnOnce(&Good) -> T) -> Option<T> {
    good.lock().ok().and_then(|g| g.as_ref().map(f))
}

/// The [`Converger`] of `wharf watch`.
pub struct Projects<'a> {
    store: &'a Store,
    root: PathBuf,
    wal: PathBuf,
    opts: Options,
    projects: Vec<Project>,
    /// Projects the last store check found out of step.
    store_dirty: BTreeSet<usize>,
    /// The loop's channel: a worker says there when it has converged.
    loop_tx: Option<Sender<Msg>>,
}

impl<'a> Projects<'a> {
    /// Resolves the paths and takes the lock of every project whose manifest loads now (a
    /// project watched elsewhere is refused here, before anything converges). A manifest that
    /// does not load yet is watched all the same; its lock is taken once it loads.
    pub fn new(store: &'a Store, paths: &[PathBuf], opts: Options) -> Result<Self> {
        let root = std::fs::canonicalize(store.root())
            .with_context(|| format!("cannot resolve {}", store.root().display()))?;
        let mut projects = Vec::new();
        let mut seen = BTreeSet::new();
        for given in paths {
            let path = std::fs::canonicalize(given).map_err(|e| {
                user(format!("cannot watch {}: {e}", given.display()))
                    .hint("give a manifest file or a directory of *.toml files")
            })?;
            if !seen.insert(path.clone()) {
                continue;
            }
            let is_dir = path.is_dir();
            let path_lock = lock_path(&root, &path)?;
            let mut base = WatchSet::default();
            if is_dir {
                base.add_manifest_dir(&path);
            } else {
                base.add_file(&path);
            }
            let good = Arc::new(Mutex::new(None));
            projects.push(Project {
                base,
                good: good.clone(),
                worker: None,
                idle: Some(ProjectWork {
                    given: given.clone(),
                    path,
                    is_dir,
                    lock: None,
                    last_errors: None,
                    good,
                }),
                _path_lock: path_lock,
                streak: 0,
                last_store: None,
                hold_until: None,
            });
        }
        let mut names: BTreeMap<String, PathBuf> = BTreeMap::new();
        for w in projects.iter_mut().filter_map(|p| p.idle.as_mut()) {
            if let Ok(m) = execute::load_manifest_with(Some(store), &w.path, load_options(&opts)) {
                if let Some(other) = names.insert(m.project.clone(), w.given.clone()) {
                    return Err(user(format!(
                        "{} and {} are both project {}",
                        other.display(),
                        w.given.display(),
                        m.project
                    ))
                    .hint("watch each project once (files of one project go in one directory)")
                    .into());
                }
                w.lock = Some(lock_project(&root, &m.project)?);
            }
        }
        Ok(Projects {
            store,
            wal: root.join("wharf.db-wal"),
            root,
            opts,
            projects,
            store_dirty: BTreeSet::new(),
            loop_tx: None,
        })
    }

    /// Everything to watch: each project's files and sources, and the store's WAL.
    fn watch_set(&self) -> WatchSet {
        let mut set = WatchSet::default();
        for p in &self.projects {
            set.extend(&p.base);
            good_read(&p.good, |g| set.extend(&g.set));
        }
        set.add_store_file(&self.wal);
        set
    }

    fn concerns(&self, i: usize, why: &Trigger) -> bool {
        let p = &self.projects[i];
        match why {
            Trigger::Start | Trigger::Resync => true,
            Trigger::Store => self.store_dirty.contains(&i),
            Trigger::Changed(paths) => paths.iter().any(|path| {
                p.base.matches(path) || good_read(&p.good, |g| g.set.matches(path)) == Some(true)
            }),
        }
    }

    /// Sends `why` to project `i`'s worker, starting it first if need be.
    fn dispatch(&mut self, i: usize, why: &Trigger) {
        let p = &mut self.projects[i];
        if p.worker.is_none()
            && let Some(work) = p.idle.take()
        {
            let (tx, rx) = mpsc::channel::<Trigger>();
            let (root, opts, loop_tx) =
                (self.root.clone(), self.opts.clone(), self.loop_tx.clone());
            let spawned = std::thread::Builder::new()
                .name("converge".into())
                .spawn(move || work_loop(work, &root, &opts, &rx, loop_tx.as_ref()));
            match spawned {
                Ok(handle) => p.worker = Some(Worker { tx, handle }),
                Err(e) => tracing::warn!("watch: cannot start a converge thread: {e}"),
            }
        }
        if let Some(w) = &p.worker {
            let _ = w.tx.send(why.clone());
        }
    }
}

/// A project's worker: converges it for each trigger (a burst queued meanwhile gives one
/// converge: every changed path, or the strongest trigger), with its own store connection,
/// and tells the loop after each converge. Ends when its channel closes.
fn work_loop(
    mut work: ProjectWork,
    root: &Path,
    opts: &Options,
    rx: &Receiver<Trigger>,
    loop_tx: Option<&Sender<Msg>>,
) {
    let store = match Store::open(root) {
        Ok(s) => s,
        Err(e) => {
            log(&work.name(), "start", &failed_text(&e), Instant::now());
            return;
        }
    };
    while let Ok(first) = rx.recv() {
        let why = rx.try_iter().fold(first, coalesce);
        converge_project(&store, root, opts, &mut work, &why);
        if let Some(tx) = loop_tx {
            let _ = tx.send(Msg::Converged);
        }
    }
}

/// One trigger for two queued ones: the changed paths of both, else the one that converges
/// more (start, then a change, then a resync, then a store change).
fn coalesce(a: Trigger, b: Trigger) -> Trigger {
    let rank = |t: &Trigger| match t {
        Trigger::Start => 3,
        Trigger::Changed(_) => 2,
        Trigger::Resync => 1,
        Trigger::Store => 0,
    };
    match (a, b) {
        (Trigger::Changed(mut x), Trigger::Changed(y)) => {
            x.extend(y);
            x.sort();
            x.dedup();
            Trigger::Changed(x)
        }
        (a, b) if rank(&b) > rank(&a) => b,
        (a, _) => a,
    }
}

/// Loads a project's manifest and applies it (see the module docs for the rules).
fn converge_project(
    store: &Store,
    root: &Path,
    opts: &Options,
    p: &mut ProjectWork,
    why: &Trigger,
) {
    {
        let t0 = Instant::now();
        // `always` containers whose monitor died come back first, with the reason logged.
        if let Err(e) = crate::lifecycle::revive(store) {
            eprintln!("warning: {}", crate::error::render(&e).trim());
        }
        let trigger = trigger_text(why);
        let m = match execute::load_manifest_with(Some(store), &p.path, load_options(opts)) {
            Ok(m) => m,
            Err(errors) => {
                let text = errors.render(std::io::stderr().is_terminal());
                let again = p.last_errors.as_ref() == Some(&text);
                p.last_errors = Some(text.clone());
                if again && matches!(why, Trigger::Resync | Trigger::Store) && !opts.verbose {
                    return;
                }
                let gone = if p.is_dir {
                    !has_toml(&p.path)
                } else {
                    !p.path.exists()
                };
                if gone {
                    log(
                        &p.name(),
                        &trigger,
                        &format!(
                            "no manifest left in {}: nothing is torn down, the last good state keeps running (remove it with `wharf down -f FILE`, or restore the manifest)",
                            p.given.display()
                        ),
                        t0,
                    );
                } else {
                    eprintln!("{text}");
                    log(
                        &p.name(),
                        &trigger,
                        &format!(
                            "invalid manifest ({} problem{}): nothing changed, the last good state keeps running",
                            errors.problems.len(),
                            if errors.problems.len() == 1 { "" } else { "s" }
                        ),
                        t0,
                    );
                }
                return;
            }
        };
        // The lock follows the project name (`project =` may be edited).
        if p.lock.as_ref().is_none_or(|l| l.project != m.project) {
            match lock_project(root, &m.project) {
                Ok(l) => p.lock = Some(l),
                Err(e) => {
                    log(
                        &m.project,
                        &trigger,
                        &format!(
                            "not converged: {}",
                            crate::error::render(&e).trim_start_matches("error: ")
                        ),
                        t0,
                    );
                    return;
                }
            }
        }
        if let Ok(mut g) = p.good.lock() {
            *g = Some(good_of(&m));
        }
        p.last_errors = None;
        let quiet = matches!(why, Trigger::Resync | Trigger::Store);
        if quiet {
            match execute::plan_only(store, &m) {
                Ok(plan) if plan.actions.is_empty() => {
                    if opts.verbose {
                        log(&m.project, &trigger, "no changes", t0);
                    }
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    log(&m.project, &trigger, &failed_text(&e), t0);
                    return;
                }
            }
        }
        let opts = ApplyOptions {
            stop_timeout: opts.stop_timeout,
            ..ApplyOptions::default()
        };
        match execute::apply(store, &m, &opts, |_| None) {
            Ok(applied) => {
                // The trigger goes into the journaled plan (an extra key readers ignore).
                let _ = store.db().execute(
                    "UPDATE applies SET plan = json_set(plan, '$.trigger', ?2) WHERE id = ?1",
                    params![applied.journal_id, trigger],
                );
                let o = &applied.outcome;
                let outcome = if o.converged() {
                    "converged".to_string()
                } else {
                    format!("incomplete ({})", o.summary)
                };
                log(
                    &m.project,
                    &trigger,
                    &format!(
                        "{}: {outcome} (apply #{})",
                        changes_text(&applied.plan),
                        applied.journal_id
                    ),
                    t0,
                );
                for r in o.results.iter().filter(|r| !r.ok) {
                    eprintln!(
                        "  error: {}: {}",
                        r.action.trim_start_matches(['+', '~', '-', '>', '.', ' ']),
                        r.error.as_deref().unwrap_or("failed")
                    );
                }
                for c in &o.conflicts {
                    eprintln!("  error: {c}");
                }
            }
            Err(e) => log(&m.project, &trigger, &failed_text(&e), t0),
        }
    }
}

impl Converger for Projects<'_> {
    fn converge(&mut self, why: &Trigger) -> WatchSet {
        let now = Instant::now();
        for i in 0..self.projects.len() {
            if !self.concerns(i, why) {
                continue;
            }
            if *why == Trigger::Store {
                let p = &mut self.projects[i];
                let looping = p
                    .last_store
                    .is_some_and(|t| now.duration_since(t) < CRASH_WINDOW);
                p.streak = if looping { p.streak + 1 } else { 0 };
                p.last_store = Some(now);
                p.hold_until = (p.streak > 0).then(|| {
                    let d = FIRST_BACKOFF.saturating_mul(1 << (p.streak - 1).min(16));
                    now + d.min(self.opts.resync)
                });
            }
            self.dispatch(i, why);
        }
        self.store_dirty.clear();
        crate::lifecycle::reap_monitors();
        self.watch_set()
    }

    fn attach(&mut self, tx: Sender<Msg>) {
        self.loop_tx = Some(tx);
    }

    fn finish(&mut self) {
        // Closing each worker's channel ends it after the converge it is in, if any: a
        // stop never cuts an apply short.
        let workers: Vec<Worker> = self
            .projects
            .iter_mut()
            .filter_map(|p| p.worker.take())
            .collect();
        for w in workers {
            drop(w.tx);
            let _ = w.handle.join();
        }
    }

    fn store_changed(&mut self) -> bool {
        crate::lifecycle::reap_monitors();
        self.store_dirty.clear();
        let now = Instant::now();
        for (i, p) in self.projects.iter().enumerate() {
            if p.hold_until.is_some_and(|h| h > now) {
                continue;
            }
            let Some(res) = good_read(&p.good, |g| out_of_step(self.store, g)) else {
                continue;
            };
            match res {
                Ok(true) => {
                    self.store_dirty.insert(i);
                }
                Ok(false) => {}
                Err(e) => tracing::warn!("watch: cannot read the store: {e:#}"),
            }
        }
        !self.store_dirty.is_empty()
    }

    fn initial_set(&self) -> WatchSet {
        self.watch_set()
    }

    fn retry_in(&self) -> Option<Duration> {
        let now = Instant::now();
        self.projects
            .iter()
            .filter_map(|p| p.hold_until)
            .filter(|h| *h > now)
            .map(|h| h - now)
            .min()
    }
}

/// Whether a project's declared containers differ from what runs: one that should run is not
/// running (and no live monitor carries it), is gone, or one that should not run runs. One
/// indexed query; a `/proc` read per live pid.
fn out_of_step(store: &Store, g: &Good) -> Result<bool> {
    let mut rows: BTreeMap<String, bool> = BTreeMap::new();
    let db = store.db();
    let mut q = db.prepare_cached(
        "SELECT name, state, pid, pid_start, monitor_pid, monitor_start FROM containers \
         WHERE project = ?1",
    )?;
    let mut it = q.query([&g.project])?;
    while let Some(r) = it.next()? {
        let owner = |p: Option<i32>, t: Option<i64>| p.zip(t.map(|t| t as u64));
        let up = run_goes_on(
            r.get(1)?,
            owner(r.get(2)?, r.get(3)?),
            owner(r.get(4)?, r.get(5)?),
        );
        rows.insert(r.get(0)?, up);
    }
    Ok(g.containers
        .iter()
        .any(|(name, want)| match rows.get(name) {
            None => true,
            Some(up) => up != want,
        }))
}

fn good_of(m: &Manifest) -> Good {
    let mut set = WatchSet::default();
    for f in m.watched_paths() {
        set.add_file(&f);
    }
    Good {
        project: m.project.clone(),
        set,
        containers: m
            .containers
            .iter()
            .map(|(n, c)| (n.clone(), c.state == DesiredState::Running))
            .collect(),
    }
}

fn has_toml(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.filter_map(|e| e.ok())
            .any(|e| e.path().extension().is_some_and(|x| x == "toml"))
    })
}

fn trigger_text(why: &Trigger) -> String {
    match why {
        Trigger::Start => "start".into(),
        Trigger::Resync => "resync".into(),
        Trigger::Store => "container state".into(),
        Trigger::Changed(paths) => {
            let names: Vec<String> = paths
                .iter()
                .map(|p| {
                    p.file_name()
                        .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into())
                })
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let more = names.len().saturating_sub(3);
            let mut s = format!(
                "changed {}",
                names.into_iter().take(3).collect::<Vec<_>>().join(", ")
            );
            if more > 0 {
                s.push_str(&format!(" (+{more})"));
            }
            s
        }
    }
}

/// "recreate web, start db" (or "no changes").
fn changes_text(p: &Plan) -> String {
    if p.actions.is_empty() {
        return "no changes".into();
    }
    p.actions
        .iter()
        .map(|a| match a {
            Action::CreateVolume { name, .. } => format!("volume {name}"),
            Action::CreateNetwork { name, .. } => format!("network {name}"),
            Action::Import { tag, .. } => format!("import {tag}"),
            Action::Pull { reference, .. } => format!("pull {reference}"),
            Action::Tag { tag, .. } => format!("tag {tag}"),
            Action::Create { name, .. } => format!("create {name}"),
            Action::Recreate { name, .. } => format!("recreate {name}"),
            Action::Start { name, .. } => format!("start {name}"),
            Action::Stop { name, .. } => format!("stop {name}"),
            Action::RemoveOrphan { name, .. } => format!("remove {name}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn failed_text(e: &anyhow::Error) -> String {
    let text = crate::error::render(e);
    format!(
        "not converged, the last good state keeps running: {}",
        text.trim_start_matches("error: ").replace('\n', " / ")
    )
}

/// The one line each converge logs: time, project, trigger, what, duration.
fn log(project: &str, trigger: &str, what: &str, t0: Instant) {
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    let time = humantime::format_rfc3339_millis(std::time::SystemTime::now());
    println!("{time} {project}: {trigger}: {what} [{ms:.0} ms]");
    let _ = std::io::stdout().flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_triggers_coalesce_into_the_one_that_converges_most() {
        let p = |s: &str| PathBuf::from(s);
        let changed = |v: &[&str]| Trigger::Changed(v.iter().map(|s| p(s)).collect());
        assert_eq!(
            coalesce(changed(&["b", "a"]), changed(&["a", "c"])),
            changed(&["a", "b", "c"])
        );
        assert_eq!(coalesce(Trigger::Store, Trigger::Resync), Trigger::Resync);
        assert_eq!(coalesce(Trigger::Resync, changed(&["a"])), changed(&["a"]));
        assert_eq!(coalesce(changed(&["a"]), Trigger::Store), changed(&["a"]));
        assert_eq!(coalesce(Trigger::Start, changed(&["a"])), Trigger::Start);
    }
}
