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
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use rusqlite::OptionalExtension;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::observe::{observe, source_digest};
use super::{Action, ContainerSpec, Desired, Plan, plan};
use crate::container;
use crate::error::user;
use crate::image::{self, import};
use crate::journal;
use crate::lifecycle::{self, CreateMeta};
use crate::manifest::{self, Manifest};
use crate::model::{GenerationOutcome, Network};
use crate::reference::Reference;
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
    /// `--pull`: ask the registries for the digest of each tag a manifest pulls again.
    pub pull: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            stop_timeout: Duration::from_secs(10),
            progress: None,
            parallel_starts: 8,
            pull: false,
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
    /// What the retention policies removed after the converge.
    pub retention: crate::retention::RetentionReport,
    /// Why retention could not be evaluated, if it could not (the apply itself stands).
    pub retention_error: Option<String>,
}

/// The desired state of a manifest, with source digests (cached by file identity).
pub fn desired(store: &Store, m: &Manifest) -> Result<Desired> {
    Desired::from_manifest(m, |p| source_digest(store, p))
}

/// `--pull`: the digest each tag a manifest pulls has in its registry now (a manifest GET
/// each; nothing is written). A `@sha256:` reference is never asked.
pub fn resolve_pulls(d: &mut Desired) -> Result<()> {
    for p in d.pulls.iter_mut().filter(|p| p.pinned.is_none()) {
        p.resolved = Some(image::pull::resolve_digest(&p.reference)?);
    }
    Ok(())
}

/// The images the store holds for the desired pulls: by the pinned digest, else by the
/// ref's own tag (with the digest it was pulled by).
fn observe_pulls(store: &Store, d: &Desired, o: &mut super::Observed) -> Result<()> {
    let db = store.db();
    for p in &d.pulls {
        let found = match &p.pinned {
            Some(digest) => db
                .prepare_cached(
                    "SELECT r.image_id FROM repo_digests r JOIN images i ON i.id = r.image_id \
                     WHERE r.repo = ?1 AND r.digest = ?2",
                )?
                .query_row(rusqlite::params![p.repo, digest], |r| r.get::<_, String>(0))
                .optional()?
                .map(|id| super::ObservedPull {
                    image_id: id,
                    digest: Some(digest.clone()),
                }),
            None => match p.tags.first().and_then(|t| o.tags.get(t)) {
                None => None,
                Some(id) => Some(super::ObservedPull {
                    image_id: id.clone(),
                    digest: db
                        .prepare_cached(
                            "SELECT digest FROM repo_digests WHERE repo = ?1 AND image_id = ?2 \
                             ORDER BY created_at DESC LIMIT 1",
                        )?
                        .query_row(rusqlite::params![p.repo, id], |r| r.get(0))
                        .optional()?,
                }),
            },
        };
        if let Some(f) = found {
            o.pulled.insert(p.reference.clone(), f);
        }
    }
    Ok(())
}

/// Observes the store, with the configs of the images the desired sources were imported as.
fn observe_for(store: &Store, d: &Desired) -> Result<super::Observed> {
    let mut o = observe(store)?;
    observe_pulls(store, d, &mut o)?;
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
    plan_only_with(store, m, false)
}

/// [`plan_only`]; with `pull`, asks the registries what `apply --pull` would pull (reads
/// only: no pull, no store write).
pub fn plan_only_with(store: &Store, m: &Manifest, pull: bool) -> Result<Plan> {
    let mut d = desired(store, m)?;
    if pull {
        resolve_pulls(&mut d)?;
    }
    Ok(plan(&d, &observe_for(store, &d)?))
}

/// What manifest validation asks: the store for its images, the runtime for what this host
/// can run (a seccomp profile that compiles, its CPUs).
struct StoreHost<'a> {
    store: Option<&'a Store>,
}

impl manifest::Host for StoreHost<'_> {
    fn has_image(&self, r: &str) -> bool {
        self.store.is_some_and(|s| image::resolve(s, r).is_ok())
    }
    fn check_seccomp_profile(&self, json: &str) -> std::result::Result<(), String> {
        crate::runtime::seccomp::check_profile(json).map_err(|e| format!("{e:#}"))
    }
    fn online_cpus(&self) -> Option<usize> {
        crate::runtime::cgroup::online_cpus()
    }
    fn host_cpus(&self) -> Option<std::collections::BTreeSet<u32>> {
        crate::runtime::cgroup::host_cpus()
    }
    fn check_tmpfs(&self, spec: &str) -> std::result::Result<(), String> {
        crate::runtime::spec::parse_tmpfs(spec)
            .map(|_| ())
            .map_err(|e| user_message(&e))
    }
    fn check_device(&self, spec: &str) -> std::result::Result<(), String> {
        crate::runtime::spec::parse_device(spec)
            .map(|_| ())
            .map_err(|e| user_message(&e))
    }
    fn default_network(&self) -> manifest::Network {
        let given = self
            .store
            .and_then(|s| crate::policy::default_network(s.root()).ok());
        match given.as_deref() {
            Some("none") => manifest::Network::None,
            Some("host") => manifest::Network::Host,
            _ => manifest::Network::Bridge,
        }
    }
}

/// The message of a user error (its hint dropped: the manifest's own hint follows).
fn user_message(e: &anyhow::Error) -> String {
    crate::error::find_user_error(e).map_or_else(|| format!("{e:#}"), |u| u.message.clone())
}

/// Loads a manifest, asking the store which images it has.
pub fn load_manifest(
    store: Option<&Store>,
    path: &Path,
) -> std::result::Result<Manifest, manifest::ManifestErrors> {
    manifest::load(path, &StoreHost { store })
}

/// [`load_manifest`] with the trust options (`--insecure-manifests`).
pub fn load_manifest_with(
    store: Option<&Store>,
    path: &Path,
    opts: manifest::LoadOptions,
) -> std::result::Result<Manifest, manifest::ManifestErrors> {
    manifest::load_with(path, &StoreHost { store }, opts)
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
    let mut d = desired(store, m)?;
    // The registries are asked before the lock too.
    if opts.pull {
        resolve_pulls(&mut d)?;
    }
    // Hashing the manifests and asking git take their time: done before the lock, so a
    // concurrent apply or a monitor waits for none of it.
    let inputs = JournalInputs::of(m)?;
    // Applies of one project serialize on its lock (a second plans against the first's
    // result); the store lock is held only while planning and changing the image store
    // (volumes, imports, tags), so the containers' stops and starts block no other project.
    let _project = store.named_lock(&format!("apply-{}", m.project))?;
    let guard = std::cell::RefCell::new(Some(store.lock()?));
    crate::lifecycle::recover(store)?;
    let p = plan(&d, &observe_for(store, &d)?);
    let progress = on_plan(&p);
    let journal_id = begin_journal(store, m, &inputs, &p)?;
    let git = inputs.git;
    let opts = ApplyOptions {
        progress: progress.or_else(|| opts.progress.clone()),
        ..opts.clone()
    };
    let ctx = GenerationContext {
        apply_id: Some(journal_id),
        git,
    };
    let outcome = execute_steps(store, &p, &opts, Some(&ctx), &mut || {
        guard.borrow_mut().take();
    });
    finish_journal(store, journal_id, &outcome)?;
    let _guard = match guard.into_inner() {
        Some(g) => g,
        None => store.lock()?,
    };
    let (retention, retention_error) = match enforce_retention(store, m, &d, journal_id) {
        Ok(r) => (r, None),
        Err(e) => (Default::default(), Some(crate::error::render(&e))),
    };
    Ok(Applied {
        plan: p,
        outcome,
        journal_id,
        retention,
        retention_error,
    })
}

/// After a converge, under the store lock: records the project's policy and references, and
/// applies its `[retention]` (see `crate::retention`).
fn enforce_retention(
    store: &Store,
    m: &Manifest,
    d: &Desired,
    apply_id: i64,
) -> Result<crate::retention::RetentionReport> {
    use crate::retention;
    let mut refs: Vec<String> = d.images.iter().map(|i| i.tag.clone()).collect();
    refs.extend(d.pulls.iter().flat_map(|p| p.tags.iter().cloned()));
    refs.extend(d.containers.iter().map(|c| c.spec.image.clone()));
    refs.sort();
    refs.dedup();
    crate::policy::record_project_policy(store, &m.project, &m.retention, &refs)?;
    let r = &m.retention;
    if r.images.is_none() && r.containers.is_none() && r.journal.is_none() {
        // The no-op apply stays cheap: no inventory without a policy to evaluate.
        return Ok(Default::default());
    }
    let scope = retention::PolicyScope {
        project: Some(m.project.clone()),
        refs,
        current_apply: Some(apply_id),
    };
    let plan = retention::plan(store, &m.retention, &scope, crate::store::now_ns())?;
    if plan.is_empty() {
        return Ok(Default::default());
    }
    retention::execute(store, &plan)
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
    let inputs = JournalInputs::of(m)?;
    let _project = store.named_lock(&format!("apply-{}", m.project))?;
    let guard = store.lock()?;
    crate::lifecycle::recover(store)?;
    let empty = Desired {
        project: m.project.clone(),
        ..Desired::default()
    };
    let p = plan(&empty, &observe(store)?);
    on_plan(&p);
    let journal_id = begin_journal(store, m, &inputs, &p)?;
    // The stops and removes need only the project's lock.
    drop(guard);
    let mut outcome = execute(store, &p, opts);
    // The project is gone: its manifest no longer protects images, and its generations fall
    // under the root config's retention.
    store.db().execute(
        "DELETE FROM project_policies WHERE project = ?1",
        [&m.project],
    )?;
    // The project's networks go with its containers (as compose's down).
    for n in crate::network::list(store)? {
        if n.project.as_deref() == Some(m.project.as_str()) {
            let res = crate::network::remove(store, &n.name);
            outcome.results.push(ActionResult {
                action: format!("- network {}", n.name),
                ok: res.is_ok(),
                error: res.err().map(|e| format!("{e:#}")),
                id: None,
            });
        }
    }
    outcome.summary = summarize(&outcome.results, &outcome.conflicts);
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
        retention: Default::default(),
        retention_error: None,
    })
}

/// Opens the apply's journal row; returns its id and the manifests' git state.
/// What an apply journals of its manifests: each file with its sha256, and the git commit
/// (+ dirty) they are at. Read before the store lock is taken.
struct JournalInputs {
    files: Vec<JournalFile>,
    git: Option<(String, bool)>,
}

impl JournalInputs {
    fn of(m: &Manifest) -> Result<JournalInputs> {
        // Absolute paths: the journal outlives the working directory it was run from.
        let abs: Vec<PathBuf> = m
            .files
            .iter()
            .map(|f| std::fs::canonicalize(f).unwrap_or_else(|_| f.clone()))
            .collect();
        let files = abs
            .iter()
            .map(|f| {
                let bytes =
                    std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
                Ok(JournalFile {
                    path: f.clone(),
                    sha256: hex::encode(Sha256::digest(&bytes)),
                })
            })
            .collect::<Result<_>>()?;
        Ok(JournalInputs {
            files,
            git: git_state(&abs),
        })
    }
}

/// Opens the apply's journal row with its plan.
fn begin_journal(store: &Store, m: &Manifest, inputs: &JournalInputs, p: &Plan) -> Result<i64> {
    journal::begin_apply(
        store,
        &m.project,
        &serde_json::to_value(&inputs.files)?,
        inputs.git.as_ref().map(|(c, d)| (c.as_str(), *d)),
        &serde_json::to_value(p)?,
    )
}

/// What ties the generations an apply makes to its journal row and manifest commit.
#[derive(Debug, Clone, Default)]
pub struct GenerationContext {
    pub apply_id: Option<i64>,
    pub git: Option<(String, bool)>,
}

/// Journals a new generation of a declared container (the container row gives its image).
fn record_generation(
    store: &Store,
    project: &str,
    name: &str,
    container_id: &str,
    ctx: &GenerationContext,
    rollback_of: Option<i64>,
    start: bool,
) -> Result<i64> {
    let (image_id, image_ref, spec, spec_hash): (String, String, Option<String>, Option<String>) =
        store.db().query_row(
            "SELECT image_id, image_ref, spec, spec_hash FROM containers WHERE id = ?1",
            [container_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
    // A pulled image: the manifest it was pulled by, for a rollback to pull it again.
    let image_digest: Option<String> = store
        .db()
        .prepare_cached(
            "SELECT repo || '@' || digest FROM repo_digests WHERE image_id = ?1 \
             ORDER BY created_at DESC LIMIT 1",
        )?
        .query_row([&image_id], |r| r.get(0))
        .optional()?;
    journal::record_generation(
        store,
        &journal::NewGeneration {
            project,
            name,
            container_id,
            image_id: &image_id,
            image_ref: &image_ref,
            spec_json: spec.as_deref().unwrap_or("{}"),
            spec_hash: spec_hash.as_deref().unwrap_or_default(),
            apply_id: ctx.apply_id,
            git: ctx.git.as_ref().map(|(c, d)| (c.as_str(), *d)),
            cause: if rollback_of.is_some() {
                "rollback"
            } else {
                "apply"
            },
            rollback_of,
            // A container to start is "started" once its start succeeded (set below).
            outcome: if start {
                GenerationOutcome::Failed
            } else {
                GenerationOutcome::Created
            },
            error: start.then_some("not started yet"),
            image_digest: image_digest.as_deref(),
        },
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
        s.push_str(&format!(", {} blocked by conflicts", conflicts.len()));
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
    execute_in(store, p, opts, Some(&GenerationContext::default()))
}

/// [`execute`], journaling each container created or recreated as a generation tied to
/// `gen` (the apply row and the manifest commit); `None` journals no generations.
pub fn execute_in(
    store: &Store,
    p: &Plan,
    opts: &ApplyOptions,
    gen_ctx: Option<&GenerationContext>,
) -> Outcome {
    execute_steps(store, p, opts, gen_ctx, &mut || {})
}

/// [`execute_in`]; `image_store_done` is called once, before the first container action:
/// the volumes, imports and tags are done, and the caller may release the store lock.
fn execute_steps(
    store: &Store,
    p: &Plan,
    opts: &ApplyOptions,
    gen_ctx: Option<&GenerationContext>,
    image_store_done: &mut dyn FnMut(),
) -> Outcome {
    let mut results: Vec<Option<ActionResult>> = vec![None; p.actions.len()];
    let label = |a: &Action| a.to_string().lines().next().unwrap_or_default().to_string();
    if let Some(pb) = &opts.progress {
        pb.set_length(p.actions.len() as u64);
    }
    // Images that failed to import or tag: containers using them fail with that reason.
    let mut broken_images: BTreeMap<String, String> = BTreeMap::new();
    let mut starts: Vec<(usize, String, String)> = Vec::new(); // (action, name, id)
    let mut done = 0;
    let mut stopped_ahead = false;
    let mut released = false;
    for (i, a) in p.actions.iter().enumerate() {
        test_pause(done);
        if !released
            && !matches!(
                a,
                Action::CreateVolume { .. }
                    | Action::Import { .. }
                    | Action::Pull { .. }
                    | Action::Tag { .. }
            )
        {
            released = true;
            image_store_done();
        }
        if !stopped_ahead && stops(a, &broken_images).is_some() {
            // The first action that stops a container: imports and tags are done, so stop
            // every container this plan stops, removes or recreates now, side by side (one
            // grace period for all); their own actions then find them stopped.
            stopped_ahead = true;
            let ids: Vec<String> = p.actions[i..]
                .iter()
                .filter_map(|a| stops(a, &broken_images))
                .collect();
            for (id, res) in
                ids.iter()
                    .zip(lifecycle::stop_all(store, &ids, Some(opts.stop_timeout)))
            {
                if let Err(e) = res {
                    tracing::warn!("cannot stop {id}: {e:#}");
                }
            }
        }
        if let Some(pb) = &opts.progress {
            pb.set_message(label(a));
        }
        let mut made_id = None;
        let res: Result<()> = match a {
            Action::CreateNetwork {
                name,
                subnet,
                internal,
            } => create_network(store, &p.project, name, subnet.as_deref(), *internal),
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
            Action::Pull { pull, tags, .. } => pull_image(store, pull, tags).map_err(|e| {
                for t in tags {
                    broken_images.insert(t.clone(), format!("{e:#}"));
                }
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
            Action::Stop { id, .. } => {
                lifecycle::stop(store, id, Some(opts.stop_timeout)).map(|_| ())
            }
            Action::RemoveOrphan { id, .. } => remove(store, id, opts.stop_timeout),
        };
        if let (Some(ctx), Some(id)) = (gen_ctx, &made_id) {
            let (name, start) = match a {
                Action::Create { name, start, .. } | Action::Recreate { name, start, .. } => {
                    (name.as_str(), *start)
                }
                _ => ("", false),
            };
            if let Err(e) = record_generation(store, &p.project, name, id, ctx, None, start) {
                tracing::warn!("cannot journal the generation of {name}: {e:#}");
            }
        }
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
    let start_errors = start_all(store, &starts, opts);
    for ((i, _, id), err) in starts.iter().zip(start_errors) {
        if gen_ctx.is_some() {
            let (outcome, e) = match &err {
                Some(e) => (GenerationOutcome::Failed, Some(e.as_str())),
                None => (GenerationOutcome::Started, None),
            };
            if let Err(e) = journal::set_generation_outcome(store, id, outcome, e) {
                tracing::warn!("cannot journal the outcome of {id}: {e:#}");
            }
        }
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
    store: &Store,
    starts: &[(usize, String, String)],
    opts: &ApplyOptions,
) -> Vec<Option<String>> {
    let ids: Vec<String> = starts.iter().map(|(_, _, id)| id.clone()).collect();
    let on_done = || {
        if let Some(pb) = &opts.progress {
            pb.inc(1);
        }
    };
    lifecycle::start_all(store, &ids, opts.parallel_starts, &on_done)
        .into_iter()
        .map(|r| {
            r.err().map(|e| {
                format!(
                    "cannot start: {}",
                    crate::error::render(&e).trim_start_matches("error: ")
                )
            })
        })
        .collect()
}

/// The container an action stops first, if it stops one (a recreate whose image failed
/// does not: it fails and leaves the container running).
fn stops(a: &Action, broken: &BTreeMap<String, String>) -> Option<String> {
    match a {
        Action::Stop { id, .. } | Action::RemoveOrphan { id, .. } => Some(id.clone()),
        Action::Recreate { id, spec, .. } if check_image(broken, spec).is_ok() => Some(id.clone()),
        _ => None,
    }
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
            max_size: None,
        },
    )?;
    Ok(())
}

/// Creates a network of the project (`<project>_<name>`).
fn create_network(
    store: &Store,
    project: &str,
    name: &str,
    subnet: Option<&str>,
    internal: bool,
) -> Result<()> {
    let subnet = subnet
        .map(|s| {
            s.parse::<ipnet::Ipv4Net>()
                .map_err(|_| anyhow::anyhow!("the subnet {s:?} is invalid"))
        })
        .transpose()?;
    crate::network::create(
        store,
        name,
        &crate::network::CreateOptions {
            subnet,
            internal,
            project: Some(project.to_string()),
            ..crate::network::CreateOptions::default()
        },
    )
    .map(|_| ())
}

/// Pulls `what` (`repo@sha256:…` when the plan knows the digest, else the reference) and
/// tags it with each of `tags`.
fn pull_image(store: &Store, what: &str, tags: &[String]) -> Result<()> {
    let pulled = image::pull::pull(
        store,
        what,
        &image::pull::PullOptions {
            platform: None,
            tls_verify: true,
            progress: None,
            parallel: 3,
        },
    )?;
    // `repo@sha256:…` is no tag: the pull recorded that digest.
    for t in tags.iter().filter(|t| !t.contains('@')) {
        image::tag(store, &pulled.id, t)?;
    }
    Ok(())
}

/// The run options of a spec.
pub fn run_options(spec: &ContainerSpec) -> RunOptions {
    RunOptions {
        command: spec.command.clone().unwrap_or_default(),
        entrypoint: spec.entrypoint.clone(),
        env: spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        working_dir: spec.workdir.clone(),
        user: spec.user.clone(),
        hostname: spec.hostname.clone(),
        network: match spec.network {
            manifest::Network::None => Network::None,
            manifest::Network::Host => Network::Host,
            manifest::Network::Bridge => Network::Bridge,
        },
        net: crate::model::NetOptions {
            networks: spec
                .networks
                .iter()
                .map(|n| crate::model::NetworkAttachment {
                    network: n.clone(),
                    aliases: Vec::new(),
                })
                .collect(),
            // Validated by the manifest's checks.
            ports: spec
                .ports
                .iter()
                .filter_map(|p| crate::model::PortSpec::parse(p).ok())
                .collect(),
            ..crate::model::NetOptions::default()
        },
        volumes: spec.volumes.iter().map(ToString::to_string).collect(),
        read_only: spec.read_only,
        cap_add: spec.cap_add.clone(),
        cap_drop: spec.cap_drop.clone(),
        limits: spec.cgroup_limits(),
        restart: spec.restart,
        // Validated by the manifest's checks.
        tmpfs: spec
            .tmpfs
            .iter()
            .filter_map(|t| crate::runtime::spec::parse_tmpfs(t).ok())
            .collect(),
        shm_size: spec.shm_size,
        ulimits: spec
            .ulimits
            .iter()
            .map(|(name, soft, hard)| crate::model::Ulimit {
                name: name.clone(),
                soft: *soft,
                hard: *hard,
            })
            .collect(),
        stop_signal: spec.stop_signal.clone(),
        stop_timeout: spec.stop_timeout,
        init: spec.init,
        devices: spec.devices.clone(),
        // The manifest's checks validated it; a config that still fails gets no check
        // rather than an apply that cannot create the container.
        healthcheck: spec.health.as_ref().and_then(|h| {
            let ms = Duration::from_millis;
            crate::model::HealthConfig::new(
                &h.command,
                Some(ms(h.interval_ms)),
                Some(ms(h.timeout_ms)),
                Some(h.retries),
                Some(ms(h.start_period_ms)),
            )
            .ok()
        }),
        security: spec.security.clone(),
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
    create_from(store, project, name, spec, spec_hash, start, &spec.image)
}

/// [`create`] from a given image (a reference or `sha256:<id>`); the recorded reference
/// stays the spec's.
fn create_from(
    store: &Store,
    project: &str,
    name: &str,
    spec: &ContainerSpec,
    spec_hash: &str,
    start: bool,
    image: &str,
) -> Result<String> {
    let mut labels = spec.labels.clone();
    labels.insert(PROJECT_LABEL.into(), project.into());
    labels.insert(SERVICE_LABEL.into(), name.into());
    let spec_json = spec.canonical_json();
    let rec = lifecycle::create(
        store,
        image,
        Some(name),
        &run_options(spec),
        &CreateMeta {
            labels,
            project: Some(project),
            spec_hash: Some(spec_hash),
            spec: Some(&spec_json),
            image_ref: Some(&spec.image),
            start,
        },
    )?;

    Ok(rec.id)
}

/// Stops (SIGTERM, then SIGKILL after `timeout`) and removes a container.
fn remove(store: &Store, id: &str, timeout: Duration) -> Result<()> {
    lifecycle::stop(store, id, Some(timeout))?;
    lifecycle::remove(store, id, true, false)?;
    Ok(())
}

/// What a rollback did.
#[derive(Debug, Clone, Serialize)]
pub struct RolledBack {
    pub project: String,
    pub name: String,
    /// The generation that was current (None: the container was gone).
    pub from: Option<i64>,
    /// The generation brought back.
    pub to: i64,
    /// The new generation the rollback made.
    pub seq: i64,
    pub container_id: String,
    pub image_id: String,
    pub image_ref: String,
    pub started: bool,
    /// What it came back to is what the last apply made (its image and spec): the manifest's
    /// version, which the next apply keeps.
    pub as_last_applied: bool,
}

/// Brings a declared container back to an earlier generation: the newest good generation
/// before the current one whose image or spec differs (or `to`). Recreates the container
/// from that generation's image id (which need not be tagged any more) and stored spec,
/// starts it if that generation was started, and journals a new generation (cause
/// `rollback`). Needs no git and no manifest. A later `apply` converges to the manifest
/// again: a rollback is an emergency brake; `git revert` + apply is the durable fix.
pub fn rollback(
    store: &Store,
    name: &str,
    to: Option<i64>,
    stop_timeout: Duration,
) -> Result<RolledBack> {
    let _guard = store.lock()?;
    crate::lifecycle::recover(store)?;
    let current = match container::find(store, name) {
        Ok(rec) => Some(rec),
        Err(e) if crate::error::find_user_error(&e).is_some() => None,
        Err(e) => return Err(e),
    };
    if let Some(rec) = &current
        && rec.project.is_none()
    {
        return Err(user(format!(
            "{name} was made by `wharf run`, not by apply: it has no generations to roll back to"
        ))
        .hint(
            "rollback works on containers a manifest declares; run the old image with `wharf run`",
        )
        .into());
    }
    let name = current.as_ref().map_or(name, |r| r.name.as_str());
    let project = current.as_ref().and_then(|r| r.project.clone());
    let gens = journal::generations(store, project.as_deref(), name)?;
    let Some(newest) = gens.first() else {
        return Err(user(format!("{name} has no generations to roll back to"))
            .hint("`wharf history NAME` lists a declared container's generations; apply records one per create or recreate")
            .into());
    };
    let project = newest.project.clone();
    let gens: Vec<journal::Generation> =
        gens.into_iter().filter(|g| g.project == project).collect();
    let current_gen = current
        .as_ref()
        .and_then(|rec| gens.iter().find(|g| g.container_id == rec.id));
    let from = current_gen.map(|g| g.seq);
    let target = match to {
        Some(seq) => {
            let Some(g) = gens.iter().find(|g| g.seq == seq) else {
                return Err(user(format!("{name} has no generation {seq}"))
                    .hint(format!("`wharf history {name}` lists its generations"))
                    .into());
            };
            if from == Some(seq) {
                return Err(user(format!("{name} is already at generation {seq}"))
                    .hint(format!("`wharf history {name}` lists its generations"))
                    .into());
            }
            g
        }
        None => {
            let found = journal::rollback_target(&gens, from);
            let Some(g) = found else {
                return Err(user(format!(
                    "{name} has no previous good generation to roll back to"
                ))
                .hint(format!(
                    "`wharf history {name}` lists its generations; give one with --to"
                ))
                .into());
            };
            g
        }
    };
    // Check everything before touching the running container.
    let spec = serde_json::to_string(&target.spec)
        .ok()
        .and_then(|s| ContainerSpec::from_stored_json(&s))
        .ok_or_else(|| {
            user(format!(
                "generation {} of {name} has a spec this wharf cannot read",
                target.seq
            ))
        })?;
    let image_ref = format!("sha256:{}", target.image_id);
    // A pulled image removed since: the exact manifest it was pulled by, pulled again.
    if image::resolve(store, &image_ref).is_err()
        && let Some(by) = &target.image_digest
        && let Err(e) = pull_image(store, by, &[])
    {
        tracing::warn!("cannot pull {by} again: {e:#}");
    }
    if image::resolve(store, &image_ref).is_err() {
        return Err(user(format!(
            "the image of generation {} of {name} ({}, {}) is no longer in the store",
            target.seq,
            target.image_ref,
            crate::image::short(&target.image_id)
        ))
        .hint("import it again and apply, or roll back to another generation with --to")
        .into());
    }
    if let Some(rec) = &current {
        remove(store, &rec.id, stop_timeout)?;
    }
    let start = target.outcome == GenerationOutcome::Started;
    let id = create_from(
        store,
        &project,
        name,
        &spec,
        &target.spec_hash,
        start,
        &image_ref,
    )?;
    let ctx = GenerationContext::default();
    let seq = record_generation(store, &project, name, &id, &ctx, Some(target.seq), start)?;
    if start {
        let errs = start_all(
            store,
            &[(0, name.to_string(), id.clone())],
            &ApplyOptions::default(),
        );
        let err = errs.into_iter().next().flatten();
        journal::set_generation_outcome(
            store,
            &id,
            if err.is_some() {
                GenerationOutcome::Failed
            } else {
                GenerationOutcome::Started
            },
            err.as_deref(),
        )?;
        if let Some(e) = err {
            anyhow::bail!(
                "{name} was recreated from generation {} but {e}",
                target.seq
            );
        }
    }
    // Newest first: the last generation an apply made.
    let as_last_applied = gens
        .iter()
        .find(|g| g.cause == "apply")
        .is_some_and(|g| g.spec_hash == target.spec_hash && g.image_id == target.image_id);
    Ok(RolledBack {
        project,
        name: name.to_string(),
        from,
        to: target.seq,
        seq,
        container_id: id,
        image_id: target.image_id.clone(),
        image_ref: target.image_ref.clone(),
        started: start,
        as_last_applied,
    })
}
