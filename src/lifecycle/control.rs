//! Verbs that act on a container's live processes or its record without starting or
//! stopping it (issue 14): `pause`/`unpause` (the freezer), `top` (the host's `ps` over the
//! cgroup's pids), `stats` samples, `update` (limits written to the cgroup and the record),
//! `wait` and `rename`.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::container::{self, Record};
use crate::error::user;
use crate::journal;
use crate::model::{ContainerConfig, ContainerState};
use crate::runtime::cgroup::{self, Usage};
use crate::store::Store;

fn not_running(rec: &Record) -> anyhow::Error {
    user(format!("container {} is not running", rec.name))
        .hint("start it with `wharf start`; `wharf ps -a` shows its state")
        .into()
}

/// The container named `input`, which must be running, with its cgroup.
fn running(store: &Store, input: &str) -> Result<(Record, Box<dyn cgroup::ContainerCgroup>)> {
    super::recover(store)?;
    let rec = container::find(store, input)?;
    if rec.live_pid().is_none() {
        return Err(not_running(&rec));
    }
    let cg = cgroup::open(&rec.id)
        .with_context(|| format!("the cgroup of container {} is gone", rec.name))?;
    Ok((rec, cg))
}

/// Whether a running container is paused (its cgroup frozen).
pub fn is_paused(rec: &Record) -> bool {
    rec.live_pid().is_some() && cgroup::is_frozen(&rec.id)
}

/// Freezes every process of a running container (docker's `pause`).
pub fn pause(store: &Store, input: &str) -> Result<Record> {
    let (rec, cg) = running(store, input)?;
    if cg.is_frozen() {
        return Err(user(format!("container {} is already paused", rec.name))
            .hint("`wharf unpause` resumes it")
            .into());
    }
    cg.set_frozen(true)?;
    Ok(rec)
}

/// Thaws a paused container (docker's `unpause`).
pub fn unpause(store: &Store, input: &str) -> Result<Record> {
    let (rec, cg) = running(store, input)?;
    if !cg.is_frozen() {
        return Err(user(format!("container {} is not paused", rec.name))
            .hint("`wharf ps` shows `(Paused)` for a paused container")
            .into());
    }
    cg.set_frozen(false)?;
    Ok(rec)
}

/// After an ending signal to a paused container: thaw it, so that the signal is delivered
/// (a frozen process acts on no signal, SIGKILL included on cgroup v1), as docker does.
pub fn thaw_after_signal(id: &str) {
    if let Some(cg) = cgroup::open(id)
        && cg.is_frozen()
        && let Err(e) = cg.set_frozen(false)
    {
        tracing::warn!("cannot thaw the paused container {id}: {e:#}");
    }
}

/// `top`'s result: the header of `ps` and its rows for the container's processes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Top {
    #[serde(rename = "Titles")]
    pub titles: Vec<String>,
    #[serde(rename = "Processes")]
    pub processes: Vec<Vec<String>>,
}

/// Runs the host's `ps` with `ps_args` (default `-ef`, as docker) and keeps the rows of the
/// container's processes (the pids of its cgroup), docker's way: the output needs a `PID`
/// column; each row is split into as many fields as the header has, the last one taking
/// the rest of the line.
pub fn top(store: &Store, input: &str, ps_args: &[String]) -> Result<Top> {
    let (_rec, cg) = running(store, input)?;
    let pids: BTreeSet<i32> = cg.procs().into_iter().collect();
    let args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_args.to_vec()
    };
    let out = Command::new("ps").args(&args).output().map_err(|e| {
        user(format!("cannot run the host's ps: {e}"))
            .hint("install procps (`apt-get install procps`)")
    })?;
    if !out.status.success() {
        return Err(user(format!(
            "ps {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
        .hint("give options the host's ps takes, e.g. `wharf top NAME aux` or `-o pid,comm`")
        .into());
    }
    parse_ps(&String::from_utf8_lossy(&out.stdout), &pids)
}

/// The rows of `ps` output whose PID is in `pids`.
pub fn parse_ps(text: &str, pids: &BTreeSet<i32>) -> Result<Top> {
    let mut lines = text.lines();
    let titles: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let Some(col) = titles.iter().position(|t| t == "PID") else {
        return Err(user("the output of ps has no PID column")
            .hint("include the pid in -o, e.g. `wharf top NAME -o pid,comm`")
            .into());
    };
    let mut processes = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < titles.len() {
            continue;
        }
        let Ok(pid) = fields[col].parse::<i32>() else {
            continue;
        };
        if !pids.contains(&pid) {
            continue;
        }
        let mut row: Vec<String> = fields[..titles.len() - 1]
            .iter()
            .map(|s| s.to_string())
            .collect();
        row.push(fields[titles.len() - 1..].join(" "));
        processes.push(row);
    }
    Ok(Top { titles, processes })
}

/// One reading of a container's cgroup, for `stats`.
#[derive(Debug, Clone)]
pub struct Sample {
    pub usage: Usage,
    pub at: Instant,
    /// Bytes received and sent on the container's interfaces (loopback left out); None
    /// for `--network host` (the host's counters are not the container's).
    pub net: Option<(u64, u64)>,
}

/// Reads the usage of each running container of `recs` (None for one not running).
pub fn sample(recs: &[Record]) -> Vec<Option<Sample>> {
    recs.iter()
        .map(|r| {
            let pid = r.live_pid()?;
            let cg = cgroup::open(&r.id)?;
            Some(Sample {
                usage: cg.usage(),
                at: Instant::now(),
                net: (r.config.network != crate::model::Network::Host)
                    .then(|| crate::network::sandbox::net_io(pid))
                    .flatten(),
            })
        })
        .collect()
}

/// CPU % between two samples, docker's way: CPU time over wall time, 100% per CPU.
pub fn cpu_percent(before: &Sample, after: &Sample) -> f64 {
    let wall = after.at.saturating_duration_since(before.at).as_nanos() as f64;
    let cpu = after.usage.cpu_ns.saturating_sub(before.usage.cpu_ns) as f64;
    if wall > 0.0 { cpu / wall * 100.0 } else { 0.0 }
}

/// Changes the recorded config with `change` (new limits, restart policy), checks it, and
/// writes the limits to the cgroup of a running container first: a limit the kernel refuses
/// leaves the record as it was.
pub fn update(
    store: &Store,
    input: &str,
    change: impl FnOnce(&mut ContainerConfig),
) -> Result<Record> {
    super::recover(store)?;
    let rec = container::find(store, input)?;
    let mut cfg = rec.config.clone();
    change(&mut cfg);
    if cfg.auto_remove && cfg.restart != crate::runtime::restart::RestartPolicy::No {
        return Err(user(format!(
            "container {} is removed when it exits (--rm): it cannot get a restart policy",
            rec.name
        ))
        .hint("drop --restart")
        .into());
    }
    if rec.live_pid().is_some() {
        cgroup::update(&rec.id, &cfg.limits)?;
    } else {
        cgroup::Plan::check(&cfg.limits)?;
    }
    container::set_config(store, &rec.id, &cfg)?;
    container::find(store, &rec.id)
}

/// Renames a container. A container a manifest declares keeps its manifest name (apply
/// finds it by that), so it is refused.
pub fn rename(store: &Store, input: &str, new_name: &str) -> Result<Record> {
    let rec = container::find(store, input)?;
    if let Some(p) = &rec.project {
        return Err(user(format!(
            "container {} belongs to project {p}: its name is the manifest's",
            rec.name
        ))
        .hint("rename it in the manifest and run `wharf apply`")
        .into());
    }
    crate::names::validate(new_name)?;
    container::rename(store, &rec.id, new_name)?;
    container::find(store, &rec.id)
}

/// Waits until the container's current (or, for a created one, next) run ends; returns its
/// exit code. An exited container's last code at once, as docker's `wait`.
pub fn wait(store: &Store, input: &str) -> Result<i32> {
    super::recover(store)?;
    let first = container::find(store, input)?;
    let id = first.id.clone();
    if first.state == ContainerState::Exited {
        return Ok(first.exit_code.unwrap_or(0));
    }
    let mut run_start = (first.state != ContainerState::Created)
        .then_some(first.started_at)
        .flatten();
    loop {
        let rec = match container::find(store, &id) {
            Ok(r) => r,
            Err(_) => break, // removed (--rm): the journal has the run
        };
        if rec.state == ContainerState::Running && !rec.is_up() {
            super::recover(store)?;
            continue;
        }
        match run_start {
            None if rec.started_at.is_some() && rec.state != ContainerState::Created => {
                run_start = rec.started_at
            }
            Some(s) if rec.started_at != Some(s) || rec.state != ContainerState::Running => break,
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Some(start) = run_start else {
        return Ok(0);
    };
    let runs = journal::runs(
        store,
        &journal::RunFilter {
            container: Some(id.clone()),
            since: Some(start),
            ..Default::default()
        },
    )?;
    // Newest first: the oldest run since the start is the one waited for.
    Ok(runs
        .iter()
        .rev()
        .find(|r| r.finished_at.is_some())
        .and_then(|r| r.exit_code)
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_rows_of_the_container_only() {
        let text = "UID          PID    PPID  C STIME TTY          TIME CMD\n\
                    root           1       0  0 08:00 ?        00:00:01 /sbin/init splash\n\
                    root        4242       1  0 08:01 ?        00:00:00 sh -c while :; do sleep 1; done\n\
                    root        4243    4242  0 08:01 ?        00:00:00 sleep 1\n";
        let pids: BTreeSet<i32> = [4242, 4243].into();
        let t = parse_ps(text, &pids).unwrap();
        assert_eq!(t.titles.len(), 8);
        assert_eq!(t.processes.len(), 2);
        assert_eq!(t.processes[0][1], "4242");
        assert_eq!(t.processes[0][7], "sh -c while :; do sleep 1; done");
        assert!(parse_ps("USER COMMAND\nroot x\n", &pids).is_err());
    }

    #[test]
    fn cpu_percent_is_cpu_time_over_wall_time() {
        let at = Instant::now();
        let s = |cpu_ns, at| Sample {
            usage: Usage {
                cpu_ns,
                ..Default::default()
            },
            at,
            net: None,
        };
        let p = cpu_percent(&s(0, at), &s(500_000_000, at + Duration::from_secs(1)));
        assert!((p - 50.0).abs() < 1e-9, "{p}");
        assert_eq!(cpu_percent(&s(0, at), &s(10, at)), 0.0);
    }
}
