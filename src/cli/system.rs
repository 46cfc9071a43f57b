//! Journal and housekeeping verbs: history, system df, system prune, container prune (and
//! the prune rendering `image prune` and `volume prune` share).

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Result;
use clap::{Args, Subcommand};

use super::Ctx;
use super::output::{print_json, print_table};
use crate::disk::df;
use crate::disk::filter::{self, PRUNE_KEYS};
use crate::disk::prune::{self, ImageScope, Plan, Scope, VolumeScope};
use crate::error::{exit, user};
use crate::image::{Removed, short};
use crate::journal::{self, RunFilter};
use crate::retention;
use crate::store::now_ns;
use crate::util::{ago, human_size, parse_time_arg, rfc3339};

#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Show the journal: a declared container's generations and every run, newest first
    History(HistoryArgs),
    /// Disk usage and cleanup
    #[command(subcommand)]
    System(SystemCmd),
}

#[derive(Debug, Subcommand)]
pub enum SystemCmd {
    /// Show disk usage: images, containers, volumes (-v: each item, logs, the journal)
    Df(DfArgs),
    /// Remove stopped containers, dangling images (-a: every unused image) and, with
    /// --volumes, unused anonymous volumes
    Prune(SystemPruneArgs),
}

#[derive(Debug, Args)]
pub struct DfArgs {
    /// List each image, container, volume and log with its size, and the journal
    #[arg(short, long)]
    pub verbose: bool,
}

/// Options every prune verb takes.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Do not ask for confirmation
    #[arg(short, long)]
    pub force: bool,
    /// Only objects matching: until=24h|7d|RFC3339, label=KEY[=VALUE], label!=KEY[=VALUE]
    /// (repeatable; all must match)
    #[arg(long = "filter", value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SystemPruneArgs {
    /// Remove every image no container uses, not only dangling ones
    #[arg(short, long)]
    pub all: bool,
    /// Also remove anonymous volumes no container uses (named volumes: `volume prune -a`)
    #[arg(long)]
    pub volumes: bool,
    /// Apply the retention policies now instead: each project's `[retention]` as last
    /// applied, and <root>/config.toml's for everything else
    #[arg(long, conflicts_with_all = ["all", "volumes", "filter"])]
    pub policy: bool,
    #[command(flatten)]
    pub common: PruneArgs,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only runs of this container (name or id prefix); removed containers included
    pub container: Option<String>,
    /// Only runs started since: a duration back (2h, 7d) or an RFC 3339 time
    #[arg(long)]
    pub since: Option<String>,
    /// Only runs started before: a duration back or an RFC 3339 time
    #[arg(long)]
    pub until: Option<String>,
    /// Show at most this many records
    #[arg(short = 'n', long = "last")]
    pub last: Option<usize>,
    /// Show apply records instead of runs
    #[arg(long, conflicts_with = "generations")]
    pub applies: bool,
    /// Show only the generations of a declared container (image, manifest commit, when,
    /// outcome); without it, `history NAME` lists them above the runs
    #[arg(long, requires = "container")]
    pub generations: bool,
    /// Show what the retention policies removed (what, which policy, why), newest first
    #[arg(long, conflicts_with_all = ["applies", "generations", "container"])]
    pub retention: bool,
    /// Do not shorten ids and commands
    #[arg(long)]
    pub no_trunc: bool,
}

pub fn run(ctx: &Ctx, cmd: Commands) -> Result<i32> {
    match cmd {
        Commands::History(a) => history(ctx, a),
        Commands::System(SystemCmd::Df(a)) => system_df(ctx, &a),
        Commands::System(SystemCmd::Prune(a)) if a.policy => prune_policy(ctx, a.common.force),
        Commands::System(SystemCmd::Prune(a)) => prune(
            ctx,
            &Scope {
                containers: true,
                images: Some(if a.all {
                    ImageScope::All
                } else {
                    ImageScope::Dangling
                }),
                volumes: a.volumes.then_some(VolumeScope::Anonymous),
            },
            &a.common,
        ),
    }
}

/// `wharf container prune` (the verb lives in the `container` group of `container.rs`).
pub(crate) fn container_prune(ctx: &Ctx, a: &PruneArgs) -> Result<i32> {
    prune(
        ctx,
        &Scope {
            containers: true,
            ..Scope::default()
        },
        a,
    )
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// What the plan removes, one object a line.
fn describe(plan: &Plan, scope: &Scope, estimate: u64) -> String {
    let mut s = String::from("WARNING! This will remove:\n");
    if scope.containers {
        s += &format!(
            "  - {}\n",
            plural(
                plan.containers.len(),
                "stopped container",
                "stopped containers"
            )
        );
        for c in &plan.containers {
            s += &format!("      {}  {}\n", short(&c.id), c.name);
        }
    }
    if let Some(i) = scope.images {
        let kind = match i {
            ImageScope::Dangling => ("dangling image", "dangling images"),
            ImageScope::All => ("unused image", "unused images"),
        };
        s += &format!("  - {}\n", plural(plan.images.len(), kind.0, kind.1));
        for i in &plan.images {
            let tags = if i.tags.is_empty() {
                "<none>".to_string()
            } else {
                i.tags.join(", ")
            };
            s += &format!("      {}  {tags}\n", short(&i.id));
        }
    }
    if let Some(v) = scope.volumes {
        let kind = match v {
            VolumeScope::Anonymous => ("unused anonymous volume", "unused anonymous volumes"),
            VolumeScope::All => ("unused volume", "unused volumes"),
        };
        s += &format!("  - {}\n", plural(plan.volumes.len(), kind.0, kind.1));
        for v in &plan.volumes {
            s += &format!("      {}\n", v.name);
        }
    }
    s += &format!("About {} would be reclaimed.\n", human_size(estimate));
    s
}

/// Runs a prune: lists the plan, asks `[y/N]` on a terminal (or refuses without one unless
/// `-f`), removes, and prints what went and the space reclaimed. Shared by every prune verb.
pub(super) fn prune(ctx: &Ctx, scope: &Scope, a: &PruneArgs) -> Result<i32> {
    let filters = filter::parse(&a.filter, PRUNE_KEYS, now_ns())?;
    let store = ctx.store()?;
    let inv = prune::inventory(&store)?;
    let plan = prune::select(&inv, scope, &filters);
    if plan.is_empty() {
        if ctx.json() {
            print_json(&prune::Report::default())?;
        } else {
            println!("Nothing to remove.\nTotal reclaimed space: 0B");
        }
        return Ok(exit::OK);
    }
    if !a.force {
        let text = describe(&plan, scope, prune::estimate(&store, &inv, &plan));
        // The listing goes where the user reads it: stdout, or stderr under --format json.
        if !confirm(ctx, &text)? {
            return Ok(exit::OK);
        }
    }
    let report = prune::execute(&store, &plan)?;
    for s in &report.skipped {
        eprintln!("warning: kept {s}");
    }
    if ctx.json() {
        print_json(&report)?;
        return Ok(exit::OK);
    }
    if !report.containers.is_empty() {
        println!("Deleted Containers:");
        for c in &report.containers {
            println!("{c}");
        }
        println!();
    }
    if !report.images.is_empty() {
        println!("Deleted Images:");
        for e in &report.images {
            match e {
                Removed::Untagged(t) => println!("untagged: {t}"),
                Removed::Deleted(id) => println!("deleted: sha256:{id}"),
            }
        }
        println!();
    }
    if !report.volumes.is_empty() {
        println!("Deleted Volumes:");
        for v in &report.volumes {
            println!("{v}");
        }
        println!();
    }
    println!("Total reclaimed space: {}", human_size(report.reclaimed));
    Ok(exit::OK)
}

/// `system prune --policy`: evaluates every retention policy, lists what goes and why, asks
/// like the other prune verbs, removes and journals.
fn prune_policy(ctx: &Ctx, force: bool) -> Result<i32> {
    let store = ctx.store()?;
    let now = now_ns();
    let mut plans = Vec::new();
    for (policy, scope) in retention::all_policies(&store)? {
        let p = retention::plan(&store, &policy, &scope, now)?;
        if !p.is_empty() {
            plans.push(p);
        }
    }
    if plans.is_empty() {
        if ctx.json() {
            print_json(&Vec::<retention::RetentionReport>::new())?;
        } else {
            println!("Nothing to remove: every retention policy is met.");
        }
        return Ok(exit::OK);
    }
    if !force {
        let mut text = String::from("WARNING! The retention policies will remove:\n");
        for p in &plans {
            let scope = if p.scope.is_empty() {
                "config.toml".to_string()
            } else {
                format!("project {}", p.scope)
            };
            text += &format!("  {scope}:\n");
            for d in &p.items {
                text += &format!("    - {} {}  ({})\n", d.kind, d.detail, d.reason);
            }
        }
        if !confirm(ctx, &text)? {
            return Ok(exit::OK);
        }
    }
    let mut reports = Vec::new();
    for p in &plans {
        reports.push(retention::execute(&store, p)?);
    }
    for s in reports.iter().flat_map(|r| &r.skipped) {
        eprintln!("warning: kept {s}");
    }
    if ctx.json() {
        print_json(&reports)?;
        return Ok(exit::OK);
    }
    let mut n = 0;
    for d in reports.iter().flat_map(|r| &r.removed) {
        println!("removed {} {}  ({})", d.kind, d.detail, d.reason);
        n += 1;
    }
    let reclaimed: u64 = reports.iter().map(|r| r.reclaimed).sum();
    println!(
        "{} removed. Total reclaimed space: {}",
        plural(n, "object", "objects"),
        human_size(reclaimed)
    );
    Ok(exit::OK)
}

/// Prints `text` (to stdout, or stderr under JSON) and asks `[y/N]` on a terminal; refuses
/// without one. Returns whether to go on.
fn confirm(ctx: &Ctx, text: &str) -> Result<bool> {
    if ctx.json() {
        eprint!("{text}");
    } else {
        print!("{text}");
    }
    if !std::io::stdin().is_terminal() {
        return Err(user(
            "refusing to prune without confirmation: standard input is not a terminal",
        )
        .hint("add -f (--force) to remove what is listed above without asking")
        .into());
    }
    eprint!("Are you sure you want to continue? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        eprintln!("Nothing was removed.");
        return Ok(false);
    }
    Ok(true)
}

fn with_percent(part: u64, whole: u64) -> String {
    let pct = if whole == 0 {
        0
    } else {
        (part as u128 * 100 / whole as u128) as u64
    };
    format!("{} ({pct}%)", human_size(part))
}

fn system_df(ctx: &Ctx, a: &DfArgs) -> Result<i32> {
    let store = ctx.store()?;
    let u = df::usage(&store, a.verbose)?;
    if ctx.json() {
        print_json(&u)?;
        return Ok(exit::OK);
    }
    print_table(
        &["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"],
        u.summary
            .iter()
            .map(|s| {
                vec![
                    s.kind.clone(),
                    s.total.to_string(),
                    s.active.to_string(),
                    human_size(s.size),
                    with_percent(s.reclaimable, s.size),
                ]
            })
            .collect(),
    );
    if !a.verbose {
        return Ok(exit::OK);
    }
    println!("\nImages space usage:\n");
    let mut rows = Vec::new();
    for i in &u.images {
        let tags = super::image::repo_tags(&i.tags);
        for (repo, tag) in tags {
            rows.push(vec![
                repo,
                tag,
                short(&i.id).to_string(),
                ago(i.created),
                human_size(i.size),
                human_size(i.shared_size),
                human_size(i.unique_size),
                i.containers.to_string(),
            ]);
        }
    }
    print_table(
        &[
            "REPOSITORY",
            "TAG",
            "IMAGE ID",
            "CREATED",
            "SIZE",
            "SHARED SIZE",
            "UNIQUE SIZE",
            "CONTAINERS",
        ],
        rows,
    );
    println!("\nContainers space usage:\n");
    print_table(
        &[
            "CONTAINER ID",
            "IMAGE",
            "COMMAND",
            "LOCAL VOLUMES",
            "SIZE",
            "CREATED",
            "STATUS",
            "NAMES",
        ],
        u.containers
            .iter()
            .map(|c| {
                vec![
                    short(&c.id).to_string(),
                    c.image.clone(),
                    super::ps::command_column(&c.command, false),
                    c.volumes.to_string(),
                    human_size(c.size),
                    ago(c.created),
                    c.status.clone(),
                    c.name.clone(),
                ]
            })
            .collect(),
    );
    println!("\nLocal Volumes space usage:\n");
    print_table(
        &["VOLUME NAME", "LINKS", "SIZE"],
        u.volumes
            .iter()
            .map(|v| vec![v.name.clone(), v.links.to_string(), human_size(v.size)])
            .collect(),
    );
    println!("\nLogs space usage:\n");
    print_table(
        &["CONTAINER ID", "NAMES", "SIZE"],
        u.containers
            .iter()
            .filter(|c| c.log_size > 0)
            .map(|c| {
                vec![
                    short(&c.id).to_string(),
                    c.name.clone(),
                    human_size(c.log_size),
                ]
            })
            .collect(),
    );
    println!("\nJournal (wharf.db): {}", human_size(u.journal));
    Ok(exit::OK)
}

fn history(ctx: &Ctx, a: HistoryArgs) -> Result<i32> {
    let since = a.since.as_deref().map(parse_time_arg).transpose()?;
    let until = a.until.as_deref().map(parse_time_arg).transpose()?;
    let store = ctx.store()?;
    if a.retention {
        let mut records = journal::retention_log(&store, a.last)?;
        records.retain(|r| since.is_none_or(|t| r.at >= t) && until.is_none_or(|t| r.at < t));
        if ctx.json() {
            return print_json(&records).map(|()| 0);
        }
        let rows = records
            .iter()
            .map(|r| {
                vec![
                    ago(r.at),
                    if r.scope.is_empty() {
                        "config.toml".to_string()
                    } else {
                        r.scope.clone()
                    },
                    r.kind.to_string(),
                    r.detail.clone(),
                    r.reason.clone(),
                ]
            })
            .collect();
        print_table(&["WHEN", "POLICY", "KIND", "WHAT", "WHY"], rows);
        return Ok(0);
    }
    if a.applies {
        let records = journal::applies(&store, a.container.as_deref(), since, a.last)?;
        if ctx.json() {
            return print_json(&records).map(|()| 0);
        }
        let rows = records
            .iter()
            .map(|r| {
                let commit = r.git_commit.as_deref().map_or_else(
                    || "-".to_string(),
                    |c| {
                        format!(
                            "{}{}",
                            short(c),
                            if r.git_dirty == Some(true) {
                                "+dirty"
                            } else {
                                ""
                            }
                        )
                    },
                );
                let outcome = match &r.outcome {
                    None => "interrupted".to_string(),
                    Some(o) => o
                        .get("summary")
                        .and_then(|s| s.as_str())
                        .unwrap_or("done")
                        .to_string(),
                };
                vec![
                    r.id.to_string(),
                    r.project.clone(),
                    ago(r.at),
                    commit,
                    outcome,
                ]
            })
            .collect();
        print_table(&["APPLY", "PROJECT", "WHEN", "COMMIT", "OUTCOME"], rows);
        return Ok(0);
    }
    if let Some(name) = &a.container {
        let mut gens = journal::generations(&store, None, name)?;
        if gens.is_empty()
            && let Ok(rec) = crate::container::find(&store, name)
        {
            gens = journal::generations(&store, rec.project.as_deref(), &rec.name)?;
        }
        gens.retain(|g| {
            since.is_none_or(|t| g.created_at >= t) && until.is_none_or(|t| g.created_at < t)
        });
        if let Some(n) = a.last {
            gens.truncate(n);
        }
        if a.generations {
            if ctx.json() {
                return print_json(&gens).map(|()| 0);
            }
            print_generations(&gens, a.no_trunc);
            return Ok(0);
        }
        if !gens.is_empty() && !ctx.json() {
            println!("Generations:");
            print_generations(&gens, a.no_trunc);
            println!("\nRuns:");
        }
    }
    let records = journal::runs(
        &store,
        &RunFilter {
            container: a.container,
            since,
            until,
            limit: a.last,
        },
    )?;
    if ctx.json() {
        let v: Vec<_> = records
            .iter()
            .map(|r| {
                let mut j = serde_json::to_value(r).unwrap_or_default();
                j["started"] = rfc3339(r.started_at).into();
                if let Some(f) = r.finished_at {
                    j["finished"] = rfc3339(f).into();
                }
                j
            })
            .collect();
        return print_json(&v).map(|()| 0);
    }
    let rows = records
        .iter()
        .map(|r| {
            // ps's COMMAND: cut and quoted as Go does, so a newline is `\n`, not a new row.
            let cmd = super::ps::command_column(&r.command, a.no_trunc);
            let duration = r.finished_at.map_or_else(
                || "running".to_string(),
                |f| {
                    let d = std::time::Duration::from_millis(
                        ((f - r.started_at).max(0) / 1_000_000) as u64,
                    );
                    humantime::format_duration(d).to_string()
                },
            );
            let exit = match (r.exit_code, r.signal) {
                (_, Some(sig)) => format!("{} (signal {sig})", 128 + sig),
                (Some(c), None) => c.to_string(),
                (None, None) => "-".into(),
            };
            vec![
                if a.no_trunc {
                    r.container_id.clone()
                } else {
                    short(&r.container_id).to_string()
                },
                r.container_name.clone(),
                r.image_ref.clone(),
                cmd,
                ago(r.started_at),
                duration,
                exit,
                if r.oom_killed {
                    "yes".into()
                } else {
                    "no".into()
                },
                r.peak_memory.map_or("-".into(), human_size),
                r.cpu_usec
                    .map_or("-".into(), |u| format!("{:.2}s", u as f64 / 1e6)),
            ]
        })
        .collect();
    print_table(
        &[
            "CONTAINER ID",
            "NAME",
            "IMAGE",
            "COMMAND",
            "STARTED",
            "DURATION",
            "EXIT",
            "OOM",
            "PEAK MEM",
            "CPU",
        ],
        rows,
    );
    Ok(0)
}

/// The generations table of `history NAME`: the current one marked `*`.
fn print_generations(gens: &[journal::Generation], no_trunc: bool) {
    let current = gens
        .iter()
        .filter(|g| g.superseded_at.is_none())
        .map(|g| g.id)
        .max();
    let rows = gens
        .iter()
        .map(|g| {
            let commit = g.git_commit.as_deref().map_or_else(
                || "-".to_string(),
                |c| {
                    let c = if no_trunc { c } else { short(c) };
                    format!(
                        "{c}{}",
                        if g.git_dirty == Some(true) {
                            "+dirty"
                        } else {
                            ""
                        }
                    )
                },
            );
            let cause = match (g.cause.as_str(), g.rollback_of, g.apply_id) {
                ("rollback", Some(to), _) => format!("rollback to {to}"),
                (_, _, Some(a)) => format!("apply {a}"),
                (c, _, _) => c.to_string(),
            };
            let mut outcome = g.outcome.to_string();
            if let Some(e) = g
                .error
                .as_deref()
                .filter(|_| g.outcome == crate::model::GenerationOutcome::Failed)
            {
                outcome = format!("failed: {e}");
            }
            vec![
                format!("{}{}", g.seq, if Some(g.id) == current { " *" } else { "" }),
                g.image_ref.clone(),
                if no_trunc {
                    g.image_id.clone()
                } else {
                    short(&g.image_id).to_string()
                },
                commit,
                cause,
                ago(g.created_at),
                outcome,
                if no_trunc {
                    g.container_id.clone()
                } else {
                    short(&g.container_id).to_string()
                },
            ]
        })
        .collect();
    print_table(
        &[
            "GEN",
            "IMAGE",
            "IMAGE ID",
            "COMMIT",
            "CAUSE",
            "CREATED",
            "OUTCOME",
            "CONTAINER",
        ],
        rows,
    );
}
