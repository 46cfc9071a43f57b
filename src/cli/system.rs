//! Journal and housekeeping verbs: history (and, as they land, system df / prune).

use anyhow::Result;
use clap::{Args, Subcommand};

use super::Ctx;
use super::output::{print_json, print_table};
use crate::image::short;
use crate::journal::{self, RunFilter};
use crate::util::{ago, human_size, parse_time_arg, rfc3339};

#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Show the run journal (every run of every container), newest first
    History(HistoryArgs),
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
    #[arg(long)]
    pub applies: bool,
    /// Do not shorten ids and commands
    #[arg(long)]
    pub no_trunc: bool,
}

pub fn run(ctx: &Ctx, cmd: Commands) -> Result<i32> {
    match cmd {
        Commands::History(a) => history(ctx, a),
    }
}

fn history(ctx: &Ctx, a: HistoryArgs) -> Result<i32> {
    let since = a.since.as_deref().map(parse_time_arg).transpose()?;
    let until = a.until.as_deref().map(parse_time_arg).transpose()?;
    let store = ctx.store()?;
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
            let cmd = r.command.join(" ");
            let cmd = if a.no_trunc || cmd.chars().count() <= 24 {
                format!("\"{cmd}\"")
            } else {
                format!("\"{}…\"", cmd.chars().take(23).collect::<String>())
            };
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
