//! `attach`, `wait`, `rename`, `pause`, `unpause`, `top`, `stats` and `update` (issue 14): docker's
//! verbs over a container's live processes and record. The work is in `lifecycle::control`.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde::Serialize;

use super::Ctx;
use super::container::each;
use super::output::{print_json, print_table, table};
use crate::container;
use crate::error::{exit, user};
use crate::lifecycle::control::{self, Sample};
use crate::runtime::cgroup::Usage;

#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Attach the terminal to a running container's stdio (detach: ctrl-p ctrl-q)
    Attach(AttachArgs),
    /// Block until containers stop, then print their exit codes
    Wait(NamesArgs),
    /// Rename a container
    Rename(RenameArgs),
    /// Pause all processes within containers (the cgroup freezer)
    Pause(NamesArgs),
    /// Unpause all processes within containers
    Unpause(NamesArgs),
    /// Display the running processes of a container (the host's ps)
    Top(TopArgs),
    /// Display a live stream of containers' resource usage
    Stats(StatsArgs),
    /// Update the limits or restart policy of containers (running ones at once)
    Update(UpdateArgs),
    /// Show events from the journal (container create/start/oom/die, applies), then follow
    Events(EventsArgs),
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Show events since this time (10m, 2h, an RFC 3339 time, or Unix seconds)
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Stop at this time instead of following (same forms as --since)
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// container=NAME|ID, event=start|die|oom|create|finish, type=container|apply,
    /// image=REF, project=NAME
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    filter: Vec<String>,
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// The keys that detach the terminal and leave the container running (docker's
    /// syntax: a comma-separated list of a character or ctrl-<c>)
    #[arg(long, value_name = "KEYS", default_value = "ctrl-p,ctrl-q")]
    detach_keys: String,
    /// Do not attach stdin (output only)
    #[arg(long)]
    no_stdin: bool,
    /// Forward the signals wharf gets to the container (without a tty)
    #[arg(long, value_name = "BOOL", default_value_t = true, num_args = 0..=1,
          require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    sig_proxy: bool,
    /// The container: name, id or id prefix
    container: String,
}

#[derive(Debug, Args)]
pub struct NamesArgs {
    /// Containers: names, ids or id prefixes
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RenameArgs {
    /// The container: name, id or id prefix
    container: String,
    /// Its new name
    new_name: String,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// The container: name, id or id prefix
    container: String,
    /// Options for the host's ps (default: -ef)
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "PS OPTIONS"
    )]
    ps_options: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Show all containers (default: running ones)
    #[arg(short, long)]
    all: bool,
    /// Print one reading and exit
    #[arg(long)]
    no_stream: bool,
    /// Containers (default: all running, or all with -a)
    containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    limits: super::container::LimitArgs,
    /// Restart policy: no, on-failure[:max-retries], always, unless-stopped
    #[arg(long, value_name = "POLICY")]
    restart: Option<String>,
    /// Containers: names, ids or id prefixes
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn run(ctx: &Ctx, cmd: Commands) -> Result<i32> {
    let store = ctx.store()?;
    match cmd {
        Commands::Attach(a) => {
            let opts = crate::lifecycle::AttachOptions {
                stdin: !a.no_stdin,
                detach_keys: crate::lifecycle::parse_detach_keys(&a.detach_keys).map_err(|e| {
                    user(format!("invalid --detach-keys {:?}: {e}", a.detach_keys))
                        .hint("for example --detach-keys ctrl-x,x (docker's syntax)")
                })?,
                sig_proxy: a.sig_proxy,
            };
            crate::lifecycle::attach(&store, &a.container, &opts)
        }
        Commands::Wait(a) => each(&a.containers, |n| {
            let code = control::wait(&store, n)?;
            println!("{code}");
            Ok(())
        }),
        Commands::Rename(a) => {
            control::rename(&store, &a.container, &a.new_name)?;
            Ok(exit::OK)
        }
        Commands::Pause(a) => each(&a.containers, |n| {
            control::pause(&store, n)?;
            println!("{n}");
            Ok(())
        }),
        Commands::Unpause(a) => each(&a.containers, |n| {
            control::unpause(&store, n)?;
            println!("{n}");
            Ok(())
        }),
        Commands::Top(a) => {
            let top = control::top(&store, &a.container, &a.ps_options)?;
            if ctx.json() {
                print_json(&top)?;
            } else {
                let titles: Vec<&str> = top.titles.iter().map(String::as_str).collect();
                print_table(&titles, top.processes);
            }
            Ok(exit::OK)
        }
        Commands::Stats(a) => stats(ctx, &store, &a),
        Commands::Update(a) => update(&store, &a),
        Commands::Events(a) => {
            let time = |flag: &str, v: &Option<String>| -> Result<Option<i64>> {
                v.as_deref()
                    .map(|s| {
                        crate::util::parse_time_arg(s).map_err(|e| {
                            anyhow::Error::new(
                                user(format!("invalid --{flag}: {}", e.message)).hint(
                                    e.hint.unwrap_or_else(|| "give a duration or a time".into()),
                                ),
                            )
                        })
                    })
                    .transpose()
            };
            let (since, until) = (time("since", &a.since)?, time("until", &a.until)?);
            let filters = crate::events::Filters::parse(&a.filter)?;
            let json = ctx.json();
            crate::events::stream(&store, since, until, &filters, |e| {
                let mut out = std::io::stdout().lock();
                if json {
                    let line = serde_json::to_string(e).map_err(std::io::Error::other)?;
                    writeln!(out, "{line}")?;
                } else {
                    writeln!(out, "{}", e.line())?;
                }
                out.flush()
            })?;
            Ok(exit::OK)
        }
    }
}

fn update(store: &crate::store::Store, a: &UpdateArgs) -> Result<i32> {
    let limits = a.limits.parse(exit::ERROR)?;
    let restart =
        a.restart
            .as_deref()
            .map(|r| {
                crate::manifest::parse_restart(r).map_err(|e| {
                    user(format!("invalid --restart {r:?}")).hint(e.hint.unwrap_or_else(|| {
                        "give no, on-failure[:N], always or unless-stopped".into()
                    }))
                })
            })
            .transpose()?;
    let nothing = limits == crate::model::Limits::default() && restart.is_none();
    if nothing {
        return Err(user("nothing to update")
            .hint("give at least one of -m, --memory-swap, --cpus, --cpu-shares, --pids-limit, --cpuset-cpus, --restart")
            .into());
    }
    each(&a.containers, |n| {
        control::update(store, n, |c| {
            super::container::overlay_limits(&mut c.limits, &limits);
            if let Some(r) = restart {
                c.restart = r;
            }
        })?;
        println!("{n}");
        Ok(())
    })
}

/// Bytes in docker's binary style for memory (4 significant digits): `1.523MiB`, `7.63GiB`.
fn binary_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    let digits = if v >= 1000.0 {
        0
    } else if v >= 100.0 {
        1
    } else if v >= 10.0 {
        2
    } else {
        3
    };
    let s = format!("{v:.digits$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    format!("{s}{}", UNITS[unit])
}

/// The host's memory: the limit `stats` shows for a container without one.
fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// One row of `stats`, with docker's `--format json` keys (its values are strings too).
#[derive(Debug, Serialize)]
struct StatsRow {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Container")]
    container: String,
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "CPUPerc")]
    cpu: String,
    #[serde(rename = "MemUsage")]
    mem_usage: String,
    #[serde(rename = "MemPerc")]
    mem_perc: String,
    #[serde(rename = "NetIO")]
    net_io: String,
    #[serde(rename = "BlockIO")]
    block_io: String,
    #[serde(rename = "PIDs")]
    pids: String,
}

fn stats_row(rec: &container::Record, before: Option<&Sample>, after: Option<&Sample>) -> StatsRow {
    // docker's "received / sent"; "--" on the host's network.
    let net_io = match after.and_then(|a| a.net) {
        Some((rx, tx)) => format!(
            "{} / {}",
            crate::util::human_size(rx),
            crate::util::human_size(tx)
        ),
        None => "--".to_string(),
    };
    let (Some(b), Some(a)) = (before, after) else {
        return StatsRow {
            id: rec.short_id().to_string(),
            container: rec.name.clone(),
            name: rec.name.clone(),
            cpu: "0.00%".into(),
            mem_usage: "0B / 0B".into(),
            mem_perc: "0.00%".into(),
            net_io,
            block_io: "0B / 0B".into(),
            pids: "0".into(),
        };
    };
    let u: &Usage = &a.usage;
    let limit = u.memory_limit.unwrap_or_else(host_memory);
    let mem_perc = if limit > 0 {
        u.memory as f64 / limit as f64 * 100.0
    } else {
        0.0
    };
    StatsRow {
        id: rec.short_id().to_string(),
        container: rec.name.clone(),
        name: rec.name.clone(),
        cpu: format!("{:.2}%", control::cpu_percent(b, a)),
        mem_usage: format!("{} / {}", binary_size(u.memory), binary_size(limit)),
        mem_perc: format!("{mem_perc:.2}%"),
        net_io,
        block_io: format!(
            "{} / {}",
            crate::util::human_size(u.block_read),
            crate::util::human_size(u.block_write)
        ),
        pids: u.pids.to_string(),
    }
}

fn stats(ctx: &Ctx, store: &crate::store::Store, a: &StatsArgs) -> Result<i32> {
    let pick = || -> Result<Vec<container::Record>> {
        if a.containers.is_empty() {
            Ok(container::list(store)?
                .into_iter()
                .filter(|r| a.all || r.live_pid().is_some())
                .collect())
        } else {
            a.containers
                .iter()
                .map(|n| container::find(store, n))
                .collect()
        }
    };
    let recs = pick()?;
    let tty = std::io::stdout().is_terminal();
    let mut before = control::sample(&recs);
    loop {
        std::thread::sleep(if a.no_stream {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(1)
        });
        let after = control::sample(&recs);
        let rows: Vec<StatsRow> = recs
            .iter()
            .zip(before.iter().zip(after.iter()))
            .map(|(r, (b, s))| stats_row(r, b.as_ref(), s.as_ref()))
            .collect();
        if ctx.json() {
            print_json(&rows)?;
        } else {
            let body: Vec<Vec<String>> = rows
                .into_iter()
                .map(|r| {
                    vec![
                        r.id,
                        r.name,
                        r.cpu,
                        r.mem_usage,
                        r.mem_perc,
                        r.net_io,
                        r.block_io,
                        r.pids,
                    ]
                })
                .collect();
            let text = table(
                &[
                    "CONTAINER ID",
                    "NAME",
                    "CPU %",
                    "MEM USAGE / LIMIT",
                    "MEM %",
                    "NET I/O",
                    "BLOCK I/O",
                    "PIDS",
                ],
                body,
            );
            let mut out = std::io::stdout().lock();
            if tty && !a.no_stream {
                let _ = out.write_all(b"\x1b[2J\x1b[H");
            }
            let _ = out.write_all(text.as_bytes());
            let _ = out.write_all(b"\n");
            let _ = out.flush();
        }
        if a.no_stream {
            return Ok(exit::OK);
        }
        before = after;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_reads_like_docker() {
        assert_eq!(binary_size(0), "0B");
        assert_eq!(binary_size(1536), "1.5KiB");
        assert_eq!(binary_size(64 * 1024 * 1024), "64MiB");
        assert_eq!(binary_size(1_597_000), "1.523MiB");
    }
}
