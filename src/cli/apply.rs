//! The declarative verbs: apply, diff, validate, down.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use super::Ctx;
use super::output::print_json;
use crate::error::exit;
use crate::manifest::{LoadOptions, Manifest};
use crate::reconcile::execute::{self, Applied, ApplyOptions};
use crate::reconcile::{Action, Plan};
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Converge the host to manifests: print the plan, then import, create, recreate, start,
    /// stop and remove what it says; exit 0 once converged
    Apply(ApplyArgs),
    /// Show what apply would change, field by field; exit 0 if nothing, 2 if something, 1 on
    /// error
    Diff(FileArgs),
    /// Check manifests (schema and semantics) without touching anything
    Validate(FileArgs),
    /// Remove the containers (and with --volumes the volumes) a project owns
    Down(DownArgs),
    /// Bring a declared container back to the image and spec of its previous good
    /// generation (or --to GENERATION); the next apply converges to the manifest again
    Rollback(RollbackArgs),
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The declared container (its name)
    pub name: String,
    /// The generation to bring back (`wharf history NAME` lists them)
    #[arg(long, value_name = "GENERATION")]
    pub to: Option<i64>,
    #[command(flatten)]
    pub stop: StopArgs,
}

#[derive(Debug, Args)]
pub struct FileArgs {
    /// A manifest file, or a directory whose *.toml files form one project; repeat for
    /// several projects
    #[arg(short = 'f', long = "file", value_name = "PATH", required = true)]
    pub files: Vec<PathBuf>,
    /// Read manifests, env files and image sources that are owned by another user or
    /// writable by group or others (refused by default: whoever can write them decides what
    /// runs as root)
    #[arg(long)]
    pub insecure_manifests: bool,
}

impl FileArgs {
    fn load_options(&self) -> LoadOptions {
        LoadOptions {
            insecure: self.insecure_manifests,
        }
    }
}

/// `-t/--timeout`, shared by the commands that stop containers (apply, down, rollback, watch).
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait for a container to stop (SIGTERM) before killing it
    #[arg(
        short = 't',
        long = "timeout",
        default_value_t = 10,
        value_name = "SECS"
    )]
    pub timeout: u64,
}

impl StopArgs {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout)
    }
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub f: FileArgs,
    /// Print the plan only: import nothing, start nothing, journal nothing
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub stop: StopArgs,
    /// Print no progress bar
    #[arg(short, long)]
    pub quiet: bool,
    /// Ask the registries again for the images `ref` tags name; a changed digest is pulled
    /// and recreates the containers that use it (with --dry-run: only asks)
    #[arg(long)]
    pub pull: bool,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    #[command(flatten)]
    pub f: FileArgs,
    /// Also remove the project's volumes (those no remaining container mounts)
    #[arg(long)]
    pub volumes: bool,
    #[command(flatten)]
    pub stop: StopArgs,
}

pub fn run(ctx: &Ctx, cmd: Commands) -> Result<i32> {
    match cmd {
        Commands::Apply(a) => apply(ctx, a),
        Commands::Diff(a) => diff(ctx, a),
        Commands::Validate(a) => validate(ctx, a),
        Commands::Down(a) => down(ctx, a),
        Commands::Rollback(a) => rollback(ctx, a),
    }
}

fn rollback(ctx: &Ctx, a: RollbackArgs) -> Result<i32> {
    let store = ctx.store()?;
    let r = execute::rollback(&store, &a.name, a.to, a.stop.timeout())?;
    if ctx.json() {
        print_json(&r)?;
        return Ok(exit::OK);
    }
    let from = r.from.map_or_else(
        || "a removed container".to_string(),
        |f| format!("generation {f}"),
    );
    println!(
        "{}: rolled back from {from} to generation {} ({} {}); now generation {}{}",
        r.name,
        r.to,
        r.image_ref,
        crate::image::short(&r.image_id),
        r.seq,
        if r.started { ", started" } else { "" }
    );
    if !r.as_last_applied {
        eprintln!(
            "note: the next `wharf apply` of project {} converges to the manifest again; \
             revert the manifest (`git revert`) to keep this version",
            r.project
        );
    }
    Ok(exit::OK)
}

/// Brings back `always` containers whose monitor died (logged on stderr); a failure to
/// look for them is a warning, never a reason not to apply.
pub(crate) fn revive(store: &Store) {
    if let Err(e) = crate::lifecycle::revive(store) {
        eprintln!("warning: {}", crate::error::render(&e).trim());
    }
}

/// Loads a manifest, or prints every problem (to stderr, or as JSON) and returns `None`.
fn load(ctx: &Ctx, store: Option<&Store>, path: &Path, opts: LoadOptions) -> Option<Manifest> {
    match execute::load_manifest_with(store, path, opts) {
        Ok(m) => Some(m),
        Err(errors) => {
            if ctx.json() {
                let _ = print_json(&json!({ "path": path, "errors": errors.to_json() }));
            } else {
                eprintln!("{}", errors.render(std::io::stderr().is_terminal()));
            }
            None
        }
    }
}

/// The store, if the state root has one (validate touches nothing, not even to create it).
fn existing_store(ctx: &Ctx) -> Result<Option<Store>> {
    if ctx.root.join("wharf.db").exists() {
        ctx.store().map(Some)
    } else {
        Ok(None)
    }
}

fn progress(quiet: bool) -> Option<ProgressBar> {
    (!quiet && std::io::stderr().is_terminal()).then(|| {
        let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        pb.set_style(
            ProgressStyle::with_template("{spinner} [{pos}/{len}] {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        pb.enable_steady_tick(Duration::from_millis(100));
        pb
    })
}

fn print_plan(ctx: &Ctx, p: &Plan) {
    if !ctx.json() {
        println!("{p}");
    }
}

/// Prints what an apply did; returns its exit code.
fn report(ctx: &Ctx, verb: &str, applied: &Applied) -> Result<i32> {
    let o = &applied.outcome;
    if ctx.json() {
        print_json(&json!({
            "project": applied.plan.project,
            "plan": applied.plan,
            "outcome": o,
            "apply_id": applied.journal_id,
            "retention": applied.retention,
            "retention_error": applied.retention_error,
        }))?;
    } else {
        for d in &applied.retention.removed {
            eprintln!("retention: removed {} {} ({})", d.kind, d.detail, d.reason);
        }
        if let Some(e) = &applied.retention_error {
            eprintln!("warning: retention policies not applied: {}", e.trim());
        }
        for r in o.results.iter().filter(|r| !r.ok) {
            eprintln!(
                "error: {}: {}",
                r.action.trim_start_matches(['+', '~', '-', '>', '.', ' ']),
                r.error.as_deref().unwrap_or("failed")
            );
        }
        for c in &o.conflicts {
            eprintln!("error: {c}");
        }
        if !applied.plan.actions.is_empty() || !o.conflicts.is_empty() {
            println!(
                "\n{verb} {}: {}.",
                if o.converged() {
                    "complete"
                } else {
                    "incomplete"
                },
                o.summary
            );
        }
    }
    Ok(if o.converged() { exit::OK } else { exit::ERROR })
}

fn apply(ctx: &Ctx, a: ApplyArgs) -> Result<i32> {
    let store = ctx.store()?;
    let mut code = exit::OK;
    if !a.dry_run {
        revive(&store);
    }
    for path in &a.f.files {
        let Some(m) = load(ctx, Some(&store), path, a.f.load_options()) else {
            code = exit::ERROR;
            continue;
        };
        if a.dry_run {
            let p = execute::plan_only_with(&store, &m, a.pull)?;
            if ctx.json() {
                print_json(&json!({ "project": p.project, "plan": p }))?;
            } else {
                print_plan(ctx, &p);
            }
            if !p.conflicts.is_empty() {
                code = exit::ERROR;
            }
            continue;
        }
        let opts = ApplyOptions {
            stop_timeout: a.stop.timeout(),
            pull: a.pull,
            ..ApplyOptions::default()
        };
        let applied = execute::apply(&store, &m, &opts, |p| {
            print_plan(ctx, p);
            (!p.actions.is_empty())
                .then(|| progress(a.quiet || ctx.json()))
                .flatten()
        })?;
        if report(ctx, "Apply", &applied)? != exit::OK {
            code = exit::ERROR;
        }
    }
    Ok(code)
}

fn diff(ctx: &Ctx, a: FileArgs) -> Result<i32> {
    let store = ctx.store()?;
    let mut code = exit::OK;
    for path in &a.files {
        let Some(m) = load(ctx, Some(&store), path, a.load_options()) else {
            return Ok(exit::ERROR);
        };
        let p = execute::plan_only(&store, &m)?;
        if ctx.json() {
            print_json(&json!({ "project": p.project, "plan": p, "changes": !p.is_empty() }))?;
        } else {
            print_plan(ctx, &p);
        }
        if !p.conflicts.is_empty() {
            return Ok(exit::ERROR);
        }
        if !p.actions.is_empty() {
            code = 2;
        }
    }
    Ok(code)
}

fn validate(ctx: &Ctx, a: FileArgs) -> Result<i32> {
    let store = existing_store(ctx)?;
    let mut code = exit::OK;
    let mut summaries = Vec::new();
    for path in &a.files {
        let Some(m) = load(ctx, store.as_ref(), path, a.load_options()) else {
            code = exit::ERROR;
            continue;
        };
        let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
        let line = format!(
            "{}: valid (project {}: {}, {}, {})",
            path.display(),
            m.project,
            plural(m.images.len(), "image"),
            plural(m.containers.len(), "container"),
            plural(m.volumes.len(), "volume")
        );
        summaries.push(json!({
            "path": path,
            "project": m.project,
            "files": m.files,
            "images": m.images.len(),
            "containers": m.containers.len(),
            "volumes": m.volumes.len(),
        }));
        if !ctx.json() {
            println!("{line}");
        }
    }
    if ctx.json() && code == exit::OK {
        print_json(&summaries)?;
    }
    Ok(code)
}

fn down(ctx: &Ctx, a: DownArgs) -> Result<i32> {
    let store = ctx.store()?;
    let mut code = exit::OK;
    for path in &a.f.files {
        // `down` needs only the project name: a manifest whose images are gone still names it.
        let Some(m) = load(ctx, Some(&store), path, a.f.load_options()) else {
            code = exit::ERROR;
            continue;
        };
        let opts = ApplyOptions {
            stop_timeout: a.stop.timeout(),
            ..ApplyOptions::default()
        };
        let applied = execute::down(&store, &m, a.volumes, &opts, |p| {
            if ctx.json() {
                return;
            }
            for act in &p.actions {
                match act {
                    Action::RemoveOrphan { name, running, .. } => println!(
                        "- remove {name}{}",
                        if *running {
                            " (running: stopped first)"
                        } else {
                            ""
                        }
                    ),
                    other => println!("{other}"),
                }
            }
        })?;
        if !ctx.json() {
            // The project's networks and volumes go after its containers, outside the plan.
            let after: Vec<&str> = applied
                .outcome
                .results
                .iter()
                .map(|r| r.action.as_str())
                .filter(|a| a.starts_with("- network ") || a.starts_with("- volume "))
                .collect();
            for a in &after {
                println!("{a}");
            }
            if applied.plan.actions.is_empty() && after.is_empty() {
                println!("Nothing to remove for project {}.", m.project);
            }
        }
        if report(ctx, "Down", &applied)? != exit::OK {
            code = exit::ERROR;
        }
    }
    Ok(code)
}
