//! Runs a [`Plan`] against the store, journaled, under the store lock.
//!
//! ```text
//! apply(): digests (cached) ─▶ lock ─▶ observe ─▶ plan ─▶ journal row (plan, files, git)
//!          ─▶ volumes ─▶ imports ─▶ tags ─▶ containers: remove orphans, stop, recreate
//!             (remove + create), create ─▶ start everything to start, in parallel
//!          ─▶ journal outcome ─▶ unlock
//! ```
//! Each action's failure is recorded and the others go on; an action that depends on a failed
//! one (a container whose image failed to import) fails with that reason. A killed apply
//! leaves its journal row without an outcome, and whatever it finished; the next apply
//! observes that and plans the rest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use rusqlite::params;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::observe::{observe, source_digest};
use super::{Action, ContainerSpec, Desired, Plan, plan};
use crate::container::{self, Network};
use crate::image::{self, import};
use crate::journal;
use crate::manifest::{self, Manifest};
use crate::reference::Reference;
use crate::runtime::ops::{self, CreateMeta};
use crate::runtime::spec::RunOptions;
use crate::store::Store;

/// The label every container and volume of a project carries (ownership is the `project`
/// column; the label makes it visible to `wharf ps --filter`-style tools and `inspect`).
pub const PROJECT_LABEL: &str = "wharf.project";
/// The label naming the manifest entry a container comes from.
pub const SERVICE_LABEL: &str = "wharf.container";

/// How to apply.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// SIGTERM → SIGKILL grace for containers stopped or removed.
    pub stop_timeout: Duration,
    /// A progress bar to advance by actions (the CLI shows one on a terminal only).
    pub progress: Option<ProgressBar>,
    /// How many containers start at once.
    pub parallel_starts: usize,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            stop_timeout: Duration::from_secs(10),
            progress: None,
            parallel_starts: 8,
        }
    }
}

/// What became of one action.
#[derive(Debug, Clone, Serialize)]
pub struct ActionResult {
    /// The action as the plan printed it (first line).
    pub action: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The container id it made, for create and recreate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// What an apply did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    pub results: Vec<ActionResult>,
    /// Declared containers whose name someone else owns (nothing was done for them).
    pub conflicts: Vec<String>,
    /// "3 done, 1 failed" (what `wharf history --applies` shows).
    pub summary: String,
}

impl Outcome {
    pub fn failed(&self) -> usize {
        self.results.iter().filter(|r| !r.ok).count()
    }

    /// Converged: every action succeeded and no declared container was blocked.
    pub fn converged(&self) -> bool {
        self.failed() == 0 && self.conflicts.is_empty()
    }
}

/// One manifest file as journaled.
#[derive(Debug, Clone, Serialize)]
pub struct JournalFile {
    pub path: PathBuf,
    pub sha256: String,
}

/// The result of [`apply`].
#[derive(Debug)]
pub struct Applied {
    pub plan: Plan,
    pub outcome: Outcome,
    /// The `applies` row.
    pub journal_id: i64,
}

/// The desired state of a manifest, with source digests (cached by file identity).
pub fn desired(store: &Store, m: &Manifest) -> Result<Desired> {
    Desired::from_manifest(m, |p| source_digest(store, p))
}

/// Observes the store, with the configs of the images the desired sources were imported as.
fn observe_for(store: &Store, d: &Desired) -> Result<super::Observed> {
    let mut o = observe(store)?;
    for img in &d.images {
        if let Some(id) = o.sources.get(&img.source_digest)
            && !o.image_configs.contains_key(id)
        {
            let c = image::load_config(store, id)?.config;
            let env = c
                .env
                .iter()
                .filter_map(|e| e.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            o.image_configs.insert(
                id.clone(),
                super::ImageConfig {
                    cmd: c.cmd,
                    entrypoint: c.entrypoint,
                    env,
                    workdir: c.working_dir,
                },
            );
        }
    }
    Ok(o)
}

/// Plans without changing anything (`--dry-run`, `diff`).
pub fn plan_only(store: &Store, m: &Manifest) -> Result<Plan> {
    let d = desired(store, m)?;
    Ok(plan(&d, &observe_for(store, &d)?))
}

/// Loads a manifest, asking the store which images it has.
pub fn load_manifest(
    store: Option<&Store>,
    path: &Path,
) -> std::result::Result<Manifest, manifest::ManifestErrors> {
    let has_image = |r: &str| store.is_some_and(|s| image::resolve(s, r).is_ok());
    manifest::load(path, &has_image)
}

/// Applies a manifest: plans under the store lock (so a concurrent apply's result is seen),
/// calls `on_plan` with the plan, journals it, runs it, and journals the outcome. `on_plan`
/// may return a progress bar for the run (shown below the plan it printed).
pub fn apply(
    store: &Store,
    m: &Manifest,
    opts: &ApplyOptions,
    on_plan: impl FnOnce(&Plan) -> Option<ProgressBar>,
) -> Result<Applied> {
    let d = desired(store, m)?;
    let _guard = store.lock()?;
    let p = plan(&d, &observe_for(store, &d)?);
    let progress = on_plan(&p);
    let journal_id = begin_journal(store, m, &p)?;
    let opts = ApplyOptions {
        progress: progress.or_else(|| opts.progress.clone()),
        ..opts.clone()
    };
    let outcome = execute(store, &p, &opts);
    finish_journal(store, journal_id, &outcome)?;
    Ok(Applied {
        plan: p,
        outcome,
        journal_id,
    })
}

/// Removes what the project owns: its containers, and with `volumes` its volumes (those no
/// remaining container mounts). Journaled like an apply of an empty project.
pub fn down(
    store: &Store,
    m: &Manifest,
    volumes: bool,
    opts: &ApplyOptions,
    on_plan: impl FnOnce(&Plan),
) -> Result<Applied> {
    let _guard = store.lock()?;
    let empty = Desired {
        project: m.project.clone(),
        ..Desired::default()
    };
    let p = plan(&empty, &observe(store)?);
    on_plan(&p);
    let journal_id = begin_journal(store, m, &p)?;
    let mut outcome = execute(store, &p, opts);
    if volumes {
        for (name, res) in remove_project_volumes(store, &m.project)? {
            outcome.results.push(ActionResult {
                action: format!("- volume {name}"),
                ok: res.is_ok(),
                error: res.err().map(|e| format!("{e:#}")),
                id: None,
            });
        }
        outcome.summary = summarize(&outcome.results, &outcome.conflicts);
    }
    finish_journal(store, journal_id, &outcome)?;
    Ok(Applied {
        plan: p,
        outcome,
        journal_id,
    })
}

fn begin_journal(store: &Store, m: &Manifest, p: &Plan) -> Result<i64> {
    // Absolute paths: the journal outlives the working directory it was run from.
    let abs: Vec<PathBuf> = m
        .files
        .iter()
        .map(|f| std::fs::canonicalize(f).unwrap_or_else(|_| f.clone()))
        .collect();
    let files: Vec<JournalFile> = abs
        .iter()
        .map(|f| {
            let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
            Ok(JournalFile {
                path: f.clone(),
                sha256: hex::encode(Sha256::digest(&bytes)),
            })
        })
        .collect::<Result<_>>()?;
    let git = git_state(&abs);
    journal::begin_apply(
        store,
        &m.project,
        &serde_json::to_value(&files)?,
        git.as_ref().map(|(c, d)| (c.as_str(), *d)),
        &serde_json::to_value(p)?,
    )
}

fn finish_journal(store: &Store, id: i64, outcome: &Outcome) -> Result<()> {
    journal::finish_apply(store, id, &serde_json::to_value(outcome)?)
}

/// The git commit (HEAD) of the repository holding the manifests, and whether the manifest
/// files differ from it (modified, staged or untracked). `None` outside a repository or
/// without git. Git is only run when a `.git` is found above the manifests.
pub fn git_state(files: &[PathBuf]) -> Option<(String, bool)> {
    let dir = files.first()?.parent()?;
    if !dir.ancestors().any(|a| a.join(".git").exists()) {
        return None;
    }
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_OPTIONAL_LOCKS", "0")
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--verify", "HEAD"])?;
    let mut status = vec!["status", "--porcelain", "--"];
    let paths: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    status.extend(paths.iter().map(String::as_str));
    let dirty = git(&status).is_none_or(|s| !s.is_empty());
    Some((commit, dirty))
}

fn summarize(results: &[ActionResult], conflicts: &[String]) -> String {
    let failed = results.iter().filter(|r| !r.ok).count();
    let mut s = format!("{} done, {failed} failed", results.len() - failed);
    if !conflicts.is_empty() {
        s.push_str(&format!(", {} blocked by name conflicts", conflicts.len()));
    }
    s
}

/// The test hook that makes an apply stop between two actions, so a test can kill it at a
/// known point. Only debug builds honour it.
fn test_pause(done: usize) {
    if !cfg!(debug_assertions) {
        return;
    }
    let Some(n) = std::env::var("WHARF_TEST_APPLY_PAUSE_AFTER")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return;
    };
    if n != done {
        return;
    }
    eprintln!("apply: paused after {done} actions (WHARF_TEST_APPLY_PAUSE_AFTER)");
    let file = std::env::var_os("WHARF_TEST_APPLY_PAUSE_FILE").map(PathBuf::from);
    loop {
        if file.as_ref().is_some_and(|f| !f.exists()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs a plan. Never fails as a whole: each action's error is in the outcome.
pub fn execute(store: &Store, p: &Plan, opts: &ApplyOptions) -> Outcome {
    let mut results: Vec<Option<ActionResult>> = vec![None; p.actions.len()];
    let label = |a: &Action| a.to_string().lines().next().unwrap_or_default().to_string();
    if let Some(pb) = &opts.progress {
        pb.set_length(p.actions.len() as u64);
    }
    // Images that failed to import or tag: containers using them fail with that reason.
    let mut broken_images: BTreeMap<String, String> = BTreeMap::new();
    let mut starts: Vec<(usize, String, String)> = Vec::new(); // (action, name, id)
    let mut done = 0;
    for (i, a) in p.actions.iter().enumerate() {
        test_pause(done);
        if let Some(pb) = &opts.progress {
            pb.set_message(label(a));
        }
        let mut made_id = None;
        let res: Result<()> = match a {
            Action::CreateVolume { name, labels } => create_volume(store, &p.project, name, labels),
            Action::Import {
                source,
                tag,
                config,
                ..
            } => import_source(store, source, tag, config).map_err(|e| {
                broken_images.insert(tag.clone(), format!("{e:#}"));
                e
            }),
            Action::Tag { tag, image_id, .. } => {
                image::tag(store, image_id, tag).map(|_| ()).map_err(|e| {
                    broken_images.insert(tag.clone(), format!("{e:#}"));
                    e
                })
            }
            Action::Create {
                name,
                spec,
                spec_hash,
                start,
            } => check_image(&broken_images, spec)
                .and_then(|()| create(store, &p.project, name, spec, spec_hash, *start))
                .map(|id| {
                    if *start {
                        starts.push((i, name.clone(), id.clone()));
                    }
                    made_id = Some(id);
                }),
            Action::Recreate {
                name,
                id,
                spec,
                spec_hash,
                start,
                ..
            } => check_image(&broken_images, spec)
                .and_then(|()| remove(store, id, opts.stop_timeout))
                .and_then(|()| create(store, &p.project, name, spec, spec_hash, *start))
                .map(|id| {
                    if *start {
                        starts.push((i, name.clone(), id.clone()));
                    }
                    made_id = Some(id);
                }),
            Action::Start { name, id } => {
                starts.push((i, name.clone(), id.clone()));
                Ok(())
            }
            Action::Stop { id, .. } => ops::stop(store, id, opts.stop_timeout).map(|_| ()),
            Action::RemoveOrphan { id, .. } => remove(store, id, opts.stop_timeout),
        };
        results[i] = Some(ActionResult {
            action: label(a),
            ok: res.is_ok(),
            error: res.err().map(|e| format!("{e:#}")),
            id: made_id,
        });
        let is_pending_start = starts.last().is_some_and(|s| s.0 == i);
        if !is_pending_start && let Some(pb) = &opts.progress {
            pb.inc(1);
        }
        done += 1;
    }
    test_pause(done);

    // Starts run in parallel: each spawns a monitor and waits for the container's exec.
    let start_errors = start_all(store.root(), &starts, opts);
    for ((i, _, _), err) in starts.iter().zip(start_errors) {
        if let (Some(r), Some(e)) = (results[*i].as_mut(), err) {
            r.ok = false;
            r.error = Some(e);
        }
    }
    let results: Vec<ActionResult> = results.into_iter().flatten().collect();
    let conflicts: Vec<String> = p.conflicts.iter().map(ToString::to_string).collect();
    if let Some(pb) = &opts.progress {
        pb.finish_and_clear();
    }
    Outcome {
        summary: summarize(&results, &conflicts),
        results,
        conflicts,
    }
}

fn start_all(
    root: &Path,
    starts: &[(usize, String, String)],
    opts: &ApplyOptions,
) -> Vec<Option<String>> {
    let errors: Mutex<Vec<Option<String>>> = Mutex::new(vec![None; starts.len()]);
    let next = Mutex::new(0usize);
    let workers = opts.parallel_starts.clamp(1, starts.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let k = {
                        let Ok(mut n) = next.lock() else { return };
                        let k = *n;
                        *n += 1;
                        k
                    };
                    let Some((_, _, id)) = starts.get(k) else {
                        return;
                    };
                    let res = ops::run_detached(root, id);
                    if let Some(pb) = &opts.progress {
                        pb.inc(1);
                    }
                    if let Err(e) = res
                        && let Ok(mut errs) = errors.lock()
                    {
                        errs[k] = Some(format!(
                            "cannot start: {}",
                            crate::error::render(&e).trim_start_matches("error: ")
                        ));
                    }
                }
            });
        }
    });
    errors.into_inner().unwrap_or_default()
}

fn check_image(broken: &BTreeMap<String, String>, spec: &ContainerSpec) -> Result<()> {
    match broken.get(&spec.image) {
        Some(why) => anyhow::bail!("its image {} is not available: {why}", spec.image),
        None => Ok(()),
    }
}

/// Creates a named volume owned by the project, labelled with it.
fn create_volume(
    store: &Store,
    project: &str,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> Result<()> {
    let mut labels = labels.clone();
    labels.insert(PROJECT_LABEL.into(), project.into());
    crate::volume::create(store, Some(name), &labels, Some(project)).map(|_| ())
}

/// Removes the project's volumes; one that a container still mounts is kept, with the
/// reason (`volume::remove` names the containers).
fn remove_project_volumes(store: &Store, project: &str) -> Result<Vec<(String, Result<()>)>> {
    let names: Vec<String> = store
        .db()
        .prepare_cached("SELECT name FROM volumes WHERE project = ?1 ORDER BY name")?
        .query_map([project], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(names
        .into_iter()
        .map(|name| {
            let res = crate::volume::remove(store, &name, true).map(|_| ());
            (name, res)
        })
        .collect())
}

/// docker import's `--change` lines for an `[images]` section's config.
fn changes(config: &super::ImageConfig) -> Vec<String> {
    let json = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_default();
    let mut out = Vec::new();
    if let Some(c) = &config.cmd {
        out.push(format!("CMD {}", json(c)));
    }
    if let Some(e) = &config.entrypoint {
        out.push(format!("ENTRYPOINT {}", json(e)));
    }
    for (k, v) in &config.env {
        out.push(format!(
            "ENV {k}=\"{}\"",
            v.replace('\\', "\\\\").replace('"', "\\\"")
        ));
    }
    if let Some(w) = &config.workdir {
        out.push(format!("WORKDIR {w}"));
    }
    out
}

fn import_source(
    store: &Store,
    source: &Path,
    tag: &str,
    config: &super::ImageConfig,
) -> Result<()> {
    let tag = Reference::parse_named(tag)?;
    import::import_path(
        store,
        source,
        import::ImportOptions {
            changes: changes(config),
            message: Some("wharf apply".into()),
            tag: Some(tag),
            progress: None,
        },
    )?;
    Ok(())
}

/// The run options of a spec.
pub fn run_options(spec: &ContainerSpec) -> RunOptions {
    RunOptions {
        command: spec.command.clone().unwrap_or_default(),
        env: spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        working_dir: spec.workdir.clone(),
        user: spec.user.clone(),
        hostname: spec.hostname.clone(),
        network: match spec.network {
            manifest::Network::None => Network::None,
            manifest::Network::Host => Network::Host,
        },
        volumes: spec.volumes.iter().map(ToString::to_string).collect(),
        read_only: spec.read_only,
        cap_add: spec.cap_add.clone(),
        cap_drop: spec.cap_drop.clone(),
        limits: spec.cgroup_limits(),
        restart: spec.restart,
        // The manifest's checks validated it; a config that still fails gets no check
        // rather than an apply that cannot create the container.
        healthcheck: spec.health.as_ref().and_then(|h| {
            let ms = Duration::from_millis;
            crate::runtime::health::HealthConfig::new(
                &h.command,
                Some(ms(h.interval_ms)),
                Some(ms(h.timeout_ms)),
                Some(h.retries),
                Some(ms(h.start_period_ms)),
            )
            .ok()
        }),
        ..RunOptions::default()
    }
}

/// Records a container of the project from its spec; returns its id.
fn create(
    store: &Store,
    project: &str,
    name: &str,
    spec: &ContainerSpec,
    spec_hash: &str,
    start: bool,
) -> Result<String> {
    let mut labels = spec.labels.clone();
    labels.insert(PROJECT_LABEL.into(), project.into());
    labels.insert(SERVICE_LABEL.into(), name.into());
    let spec_json = spec.canonical_json();
    let rec = ops::create_with(
        store,
        &spec.image,
        Some(name),
        &run_options(spec),
        &CreateMeta {
            labels,
            project: Some(project),
            spec_hash: Some(spec_hash),
            spec: Some(&spec_json),
        },
    )?;
    // The runtime's options have no entrypoint: an entrypoint from the manifest replaces the
    // image's (and, as with docker's --entrypoint, the image's Cmd).
    if let Some(ep) = &spec.entrypoint {
        let mut cfg = rec.config.clone();
        cfg.args = ep
            .iter()
            .chain(spec.command.iter().flatten())
            .cloned()
            .collect();
        if cfg.args.is_empty() {
            let _ = container::remove(store, &rec);
            anyhow::bail!("the entrypoint is empty and no command is given");
        }
        store.db().execute(
            "UPDATE containers SET config = ?2 WHERE id = ?1",
            params![rec.id, serde_json::to_string(&cfg)?],
        )?;
    }
    if !start {
        // Nobody will start it: this apply is not the owner of a run to come (a created
        // container whose owner is gone is closed as a crashed run, `exited`).
        store.db().execute(
            "UPDATE containers SET monitor_pid = NULL, monitor_start = NULL WHERE id = ?1",
            [&rec.id],
        )?;
    }
    Ok(rec.id)
}

/// Stops (SIGTERM, then SIGKILL after `timeout`) and removes a container.
fn remove(store: &Store, id: &str, timeout: Duration) -> Result<()> {
    ops::stop(store, id, timeout)?;
    ops::remove(store, id, true)?;
    Ok(())
}
