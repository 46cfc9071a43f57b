//! Container records: the `containers` and `runs` tables, names, lookup, and state
//! transitions.
//!
//! A container is a row in `containers` plus its directory `containers/<id>/` (the overlay
//! `upper/` and `work/`, the generated `hostname`/`hosts`/`resolv.conf`, and `log.json`).
//! Its [`ContainerConfig`] is everything needed to run it again (`start` reruns it).
//! Every run (start → exit) is one row of `runs`.
//!
//! States: `created` (recorded, not running) → `running` (pid and pid_start set) → `exited`,
//! or, when the restart policy runs it again, `running` → `restarting` (the monitor waits its
//! backoff; no pid) → `running`. `restart_count` counts those restarts since the last start by
//! hand (`run`, `start`: as docker, a manual start resets it).
//! The process that owns a run (the foreground `wharf run`, or a detached monitor) is recorded
//! as `monitor_pid` + `monitor_start`; [`reconcile`] finds runs whose owner died and closes them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use crate::error::user;
use crate::model::{self, ContainerConfig, ContainerState};
use crate::store::{Store, fsutil, now_ns};

/// A row of `containers`.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub id: String,
    pub name: String,
    pub image_id: String,
    pub image_ref: String,
    pub config: ContainerConfig,
    pub created_at: i64,
    pub state: ContainerState,
    pub pid: Option<i32>,
    pub pid_start: Option<u64>,
    pub monitor_pid: Option<i32>,
    pub monitor_start: Option<u64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub exit_code: Option<i32>,
    pub oom_killed: bool,
    /// `--label` / a manifest's labels.
    pub labels: BTreeMap<String, String>,
    /// The manifest project that owns it; None for `wharf run`/`create`.
    pub project: Option<String>,
    /// Hash of the manifest's effective spec (apply compares it to plan a recreate).
    pub spec_hash: Option<String>,
    /// The manifest's `ContainerSpec` as JSON, for field-level plan reasons.
    pub spec: Option<String>,
    /// Runs started by a restart policy since the container was last started by hand
    /// (`start` resets it, as docker's does).
    pub restart_count: i64,
    /// Health-check status, when the container has one.
    pub health: Option<String>,
    /// Why its last start failed (cleared by a start that runs the command).
    pub error: Option<String>,
}

impl Record {
    pub fn short_id(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }

    /// The container's process, if it is running and its pid was not recycled.
    pub fn live_pid(&self) -> Option<i32> {
        match (self.state, self.pid, self.pid_start) {
            (ContainerState::Running | ContainerState::Paused, Some(pid), Some(start))
                if proc_start_time(pid) == Some(start) =>
            {
                Some(pid)
            }
            _ => None,
        }
    }

    /// Whether a run of the container goes on (see [`run_goes_on`]).
    pub fn is_up(&self) -> bool {
        run_goes_on(
            self.state,
            self.pid.zip(self.pid_start),
            self.monitor_pid.zip(self.monitor_start),
        )
    }

    /// The process owning the current run, if it is alive (pid and start time match).
    pub fn live_monitor(&self) -> Option<i32> {
        match (self.monitor_pid, self.monitor_start) {
            (Some(pid), Some(start)) if proc_start_time(pid) == Some(start) => Some(pid),
            _ => None,
        }
    }
}

/// docker's STATUS text at time `now` (ns): "Up 3 minutes", "Up 2 hours (healthy)",
/// "Exited (137) 2 hours ago", "Created", "Restarting (1) 5 seconds ago".
pub fn status_text(
    state: ContainerState,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    exit_code: Option<i32>,
    health: Option<&str>,
    now: i64,
) -> String {
    let since = |t: i64| {
        crate::util::human_duration(std::time::Duration::from_nanos(
            now.saturating_sub(t).max(0) as u64,
        ))
    };
    let code = exit_code.unwrap_or(0);
    match state {
        ContainerState::Running => {
            let up = format!("Up {}", since(started_at.unwrap_or(now)));
            match health {
                Some("starting") => format!("{up} (health: starting)"),
                Some(h) if !h.is_empty() && h != "none" => format!("{up} ({h})"),
                _ => up,
            }
        }
        ContainerState::Paused => format!("Up {} (Paused)", since(started_at.unwrap_or(now))),
        ContainerState::Restarting => format!(
            "Restarting ({code}) {} ago",
            since(finished_at.unwrap_or(now))
        ),
        ContainerState::Removing => "Removal In Progress".into(),
        ContainerState::Dead => "Dead".into(),
        ContainerState::Exited => match (finished_at, started_at) {
            (Some(t), _) => format!("Exited ({code}) {} ago", since(t)),
            // Its monitor died: when it ended is not known (see Record::monitor_died).
            (None, Some(_)) => format!("Exited ({code}) at an unknown time"),
            (None, None) => "Created".into(),
        },
        ContainerState::Created => "Created".into(),
    }
}

impl Record {
    /// Whether the container's monitor died while it ran (or waited to restart): it is
    /// `exited`, it has run, and no time of its end was recorded ([`mark_monitor_died`]).
    pub fn monitor_died(&self) -> bool {
        self.state == ContainerState::Exited
            && self.finished_at.is_none()
            && self.started_at.is_some()
    }

    /// docker's STATUS column at time `now` (ns since the epoch).
    pub fn status_text(&self, now: i64) -> String {
        status_text(
            self.state,
            self.started_at,
            self.finished_at,
            self.exit_code,
            self.health.as_deref(),
            now,
        )
    }
}

const COLUMNS: &str = "id, name, image_id, image_ref, config, created_at, state, pid, pid_start, \
     monitor_pid, monitor_start, started_at, finished_at, exit_code, oom_killed, labels, project, \
     spec_hash, spec, restart_count, health, error";

/// A row's record; its config and labels come back as JSON, parsed by [`finish_row`] (a
/// config selected as NULL, as `list_for_ps` does, leaves the default).
fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Record, (Option<String>, String))> {
    let cfg: Option<String> = r.get(4)?;
    Ok((
        Record {
            id: r.get(0)?,
            name: r.get(1)?,
            image_id: r.get(2)?,
            image_ref: r.get(3)?,
            config: ContainerConfig::default(),
            created_at: r.get(5)?,
            state: r.get(6)?,
            pid: r.get(7)?,
            pid_start: r.get::<_, Option<i64>>(8)?.map(|v| v as u64),
            monitor_pid: r.get(9)?,
            monitor_start: r.get::<_, Option<i64>>(10)?.map(|v| v as u64),
            started_at: r.get(11)?,
            finished_at: r.get(12)?,
            exit_code: r.get(13)?,
            oom_killed: r.get::<_, i64>(14)? != 0,
            labels: BTreeMap::new(),
            project: r.get(16)?,
            spec_hash: r.get(17)?,
            spec: r.get(18)?,
            restart_count: r.get(19)?,
            health: r.get(20)?,
            error: r.get(21)?,
        },
        (cfg, r.get(15)?),
    ))
}

/// A row as readers see it: a run whose owner died, which crash recovery has not closed
/// yet (only verbs that change state recover), reads as what recovery will make of it:
/// exited with wharf's 125 (or, between two runs of a restart policy, the last run's code),
/// its end time unknown. Nothing is written.
fn observed(mut rec: Record) -> Record {
    if rec.state.is_active() && !rec.is_up() {
        if rec.state != ContainerState::Restarting || rec.exit_code.is_none() {
            rec.exit_code = Some(crate::error::exit::RUNTIME);
        }
        if rec.state != ContainerState::Restarting {
            rec.finished_at = None;
        }
        rec.state = ContainerState::Exited;
        rec.pid = None;
        rec.pid_start = None;
    }
    rec
}

fn finish_observed(row: (Record, (Option<String>, String))) -> Result<Record> {
    finish_row(row).map(observed)
}

fn finish_row((mut rec, (cfg, labels)): (Record, (Option<String>, String))) -> Result<Record> {
    if let Some(cfg) = cfg {
        rec.config = serde_json::from_str(&cfg)
            .with_context(|| format!("the stored config of container {} is corrupt", rec.id))?;
    }
    rec.labels = serde_json::from_str(&labels)
        .with_context(|| format!("the stored labels of container {} are corrupt", rec.id))?;
    Ok(rec)
}

/// Every container of the store, oldest first.
pub fn list(store: &Store) -> Result<Vec<Record>> {
    let sql = format!("SELECT {COLUMNS} FROM containers ORDER BY created_at, id");
    let rows: Vec<_> = store
        .db()
        .prepare_cached(&sql)?
        .query_map([], from_row)?
        .collect::<rusqlite::Result<_>>()?;
    rows.into_iter().map(finish_observed).collect()
}

/// Every container of the store, oldest first, with only what `ps` shows or filters on:
/// the config holds `args`, `volumes`, `network` and `net` (the rest default) and `spec` is not
/// read. With `args_cap`, at most that many arguments of at most that many characters each
/// (enough for a truncated COMMAND column): SQLite's JSON functions pick them out, so a
/// record holding megabytes of command or environment is not copied and parsed whole.
pub fn list_for_ps(store: &Store, args_cap: Option<usize>) -> Result<Vec<Record>> {
    let cols = COLUMNS
        .replace("config,", "NULL,")
        .replace("spec,", "NULL,");
    let sql = format!(
        "SELECT {cols}, \
           CASE WHEN ?1 IS NULL THEN config -> '$.args' ELSE \
             (SELECT json_group_array(substr(value, 1, ?1)) FROM \
               (SELECT value FROM json_each(config, '$.args') LIMIT ?1)) END, \
           config -> '$.volumes', config -> '$.network', config -> '$.net' \
         FROM containers ORDER BY created_at, id"
    );
    let cap = args_cap.map(|c| c as i64);
    let mut stmt = store.db().prepare_cached(&sql)?;
    let rows = stmt.query_map([cap], |r| {
        let parts: (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        ) = (r.get(22)?, r.get(23)?, r.get(24)?, r.get(25)?);
        Ok((from_row(r)?, parts))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (row, (args, volumes, network, net)) = row?;
        let mut rec = finish_row(row)?;
        let corrupt = |what: &str| format!("the stored {what} of container {} is corrupt", rec.id);
        if let Some(a) = args {
            rec.config.args = serde_json::from_str(&a).with_context(|| corrupt("command"))?;
        }
        if let Some(v) = volumes {
            rec.config.volumes = serde_json::from_str(&v).with_context(|| corrupt("mounts"))?;
        }
        if let Some(n) = network {
            rec.config.network = serde_json::from_str(&n).with_context(|| corrupt("network"))?;
        }
        if let Some(n) = net {
            rec.config.net = serde_json::from_str(&n).with_context(|| corrupt("networks"))?;
        }
        out.push(observed(rec));
    }
    Ok(out)
}

/// A fresh `adjective_surname` no container of this store has.
pub fn generate_name(store: &Store) -> Result<String> {
    let mut stmt = store
        .db()
        .prepare_cached("SELECT 1 FROM containers WHERE name = ?1")?;
    let mut failure = None;
    let name = crate::names::generate(|n| match stmt.exists([n]) {
        Ok(taken) => taken,
        Err(e) => {
            failure = Some(e);
            false
        }
    });
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(name),
    }
}

/// A new container to record.
pub struct NewContainer<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub image_id: &'a str,
    pub image_ref: &'a str,
    pub config: &'a ContainerConfig,
    /// The process that will start its first run at once (`run`, apply): recorded with the
    /// row, so a crash before the run starts is found by crash recovery too. None for a
    /// container nobody starts yet (`create`, `state = "stopped"`).
    pub owner: Option<Owner>,
    pub labels: &'a BTreeMap<String, String>,
    pub project: Option<&'a str>,
    pub spec_hash: Option<&'a str>,
    pub spec: Option<&'a str>,
}

/// Inserts a container in state `created`.
pub fn insert(store: &Store, c: &NewContainer<'_>) -> Result<()> {
    let config = serde_json::to_string(c.config)?;
    let res = store
        .db()
        .prepare_cached(
            "INSERT INTO containers (id, name, image_id, image_ref, config, created_at, state, \
             monitor_pid, monitor_start, labels, project, spec_hash, spec) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?13, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?
        .execute(params![
            c.id,
            c.name,
            c.image_id,
            c.image_ref,
            config,
            now_ns(),
            c.owner.map(|o| o.pid),
            c.owner.map(|o| o.start as i64),
            serde_json::to_string(c.labels)?,
            c.project,
            c.spec_hash,
            c.spec,
            ContainerState::Created,
        ]);
    match res {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Err(
                user(format!("the container name {:?} is already in use", c.name))
                    .hint("choose another --name, or remove that container with `wharf rm`")
                    .into(),
            )
        }
        Err(e) => Err(e.into()),
    }
}

/// Finds a container by name, full id, or unique id prefix.
pub fn find(store: &Store, input: &str) -> Result<Record> {
    let db = store.db();
    let sql = format!("SELECT {COLUMNS} FROM containers WHERE name = ?1 OR id = ?1");
    if let Some(row) = db
        .prepare_cached(&sql)?
        .query_row([input], from_row)
        .optional()?
    {
        return finish_observed(row);
    }
    if !input.is_empty() && input.len() < 64 && input.bytes().all(|b| b.is_ascii_hexdigit()) {
        let sql = format!("SELECT {COLUMNS} FROM containers WHERE substr(id, 1, ?2) = ?1 LIMIT 2");
        let rows: Vec<_> = db
            .prepare_cached(&sql)?
            .query_map(
                params![input.to_ascii_lowercase(), input.len() as i64],
                from_row,
            )?
            .collect::<rusqlite::Result<_>>()?;
        if rows.len() > 1 {
            return Err(user(format!(
                "the id prefix {input} matches more than one container"
            ))
            .hint("give more digits of the id, or the name")
            .into());
        }
        if let Some(row) = rows.into_iter().next() {
            return finish_observed(row);
        }
    }
    Err(user(format!("no such container: {input}"))
        .hint("`wharf ps -a` lists the containers")
        .into())
}

/// Every container whose row says a run is in progress or claimed: the ones crash recovery
/// looks at.
pub fn active(store: &Store) -> Result<Vec<Record>> {
    let sql =
        format!("SELECT {COLUMNS} FROM containers WHERE state = ?1 OR monitor_pid IS NOT NULL");
    let rows: Vec<_> = store
        .db()
        .prepare_cached(&sql)?
        .query_map([ContainerState::Running], from_row)?
        .collect::<rusqlite::Result<_>>()?;
    rows.into_iter().map(finish_row).collect()
}

/// A process that owns a container's run: its pid and start time (clock ticks since boot),
/// which together name one process for the whole uptime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub pid: i32,
    pub start: u64,
}

impl Owner {
    /// The calling process.
    pub fn me() -> Option<Owner> {
        let pid = std::process::id() as i32;
        proc_start_time(pid).map(|start| Owner { pid, start })
    }

    /// The calling process's parent (the starter that spawned a detached monitor).
    pub fn parent() -> Option<Owner> {
        let pid = nix::unistd::getppid().as_raw();
        proc_start_time(pid).map(|start| Owner { pid, start })
    }

    pub fn is_alive(self) -> bool {
        proc_start_time(self.pid) == Some(self.start)
    }
}

/// Claims a new run of a stopped container (`created` or `exited`) for `me`: a compare-and-
/// swap in the store, so of two starters racing, in any processes, exactly one wins. The claim
/// succeeds when the container has no owner, or `me` already owns it (it created the record
/// to start it at once). It resets `stop_requested` and, as a start by hand does in docker,
/// `restart_count`. Run crash recovery first, so an owner that died does not hold the claim.
pub fn claim(store: &Store, id: &str, me: Owner) -> Result<bool> {
    let n = store
        .db()
        .prepare_cached(
            "UPDATE containers SET monitor_pid = ?2, monitor_start = ?3, stop_requested = 0, \
             restart_count = 0 WHERE id = ?1 AND state IN (?4, ?5) \
             AND (monitor_pid IS NULL OR (monitor_pid = ?2 AND monitor_start = ?3))",
        )?
        .execute(params![
            id,
            me.pid,
            me.start as i64,
            ContainerState::Created,
            ContainerState::Exited
        ])?;
    Ok(n == 1)
}

/// Hands a claimed run from `from` (the starter) to `to` (the monitor it spawned): a compare-
/// and-swap, false when `from` no longer owns it.
pub fn hand_over(store: &Store, id: &str, from: Owner, to: Owner) -> Result<bool> {
    let n = store
        .db()
        .prepare_cached(
            "UPDATE containers SET monitor_pid = ?4, monitor_start = ?5 \
             WHERE id = ?1 AND monitor_pid = ?2 AND monitor_start = ?3",
        )?
        .execute(params![
            id,
            from.pid,
            from.start as i64,
            to.pid,
            to.start as i64
        ])?;
    Ok(n == 1)
}

/// Gives up `owner`'s claim of a container that is not running (a start that failed before
/// its monitor took over, or a `create` that will not start it), so it reads as it was, not
/// as a crashed run. A claim someone else holds is left alone.
pub fn release(store: &Store, id: &str, owner: Owner) -> Result<()> {
    store
        .db()
        .prepare_cached(
            "UPDATE containers SET monitor_pid = NULL, monitor_start = NULL \
             WHERE id = ?1 AND state != ?4 AND monitor_pid = ?2 AND monitor_start = ?3",
        )?
        .execute(params![
            id,
            owner.pid,
            owner.start as i64,
            ContainerState::Running
        ])?;
    Ok(())
}

/// Records why the container could not be started (or restarted): inspect's `State.Error`
/// until a start runs its command. A container already gone (`--rm`) has nothing to keep it.
pub fn set_error(store: &Store, rec_id: &str, error: &str) -> Result<()> {
    store
        .db()
        .prepare_cached("UPDATE containers SET error = ?2 WHERE id = ?1")?
        .execute(params![rec_id, error])?;
    Ok(())
}

/// Records that the container's init runs as `pid`, and opens its row in `runs` (`restart`:
/// started by the restart policy, counted in `restart_count`). Returns the run's row id.
pub fn mark_running(store: &Store, rec_id: &str, pid: i32, restart: bool) -> Result<i64> {
    let start = proc_start_time(pid).map(|s| s as i64);
    let now = now_ns();
    let tx = store.db().unchecked_transaction()?;
    tx.prepare_cached(
        "UPDATE containers SET state = ?6, pid = ?2, pid_start = ?3, started_at = ?4, \
         finished_at = NULL, exit_code = NULL, oom_killed = 0, error = NULL, \
         restart_count = restart_count + ?5, \
         health = CASE WHEN json_extract(config, '$.healthcheck') IS NULL THEN NULL \
         ELSE 'starting' END WHERE id = ?1",
    )?
    .execute(params![
        rec_id,
        pid,
        start,
        now,
        restart as i64,
        ContainerState::Running
    ])?;
    tx.prepare_cached(
        "INSERT INTO runs (container_id, container_name, image_id, image_ref, command, started_at, \
         restart) SELECT id, name, image_id, image_ref, json_extract(config, '$.args'), ?2, ?3 \
         FROM containers WHERE id = ?1",
    )?
    .execute(params![rec_id, now, restart])?;
    let run_id = tx.last_insert_rowid();
    tx.commit()?;
    Ok(run_id)
}

/// How a run ended.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome {
    /// The exit code as wharf reports it (128+N for signal N).
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub stats: model::Stats,
}

/// Records the end of a run (container row and its `runs` row) in one transaction; with
/// `remove`, deletes the container row instead of marking it exited.
pub fn mark_exited(
    store: &Store,
    id: &str,
    run_id: Option<i64>,
    out: &Outcome,
    remove: bool,
) -> Result<()> {
    let now = now_ns();
    let tx = store.db().unchecked_transaction()?;
    if let Some(run_id) = run_id {
        close_run(&tx, run_id, now, out)?;
    }
    if remove {
        tx.prepare_cached("DELETE FROM containers WHERE id = ?1")?
            .execute([id])?;
    } else {
        tx.prepare_cached(
            "UPDATE containers SET state = ?5, pid = NULL, pid_start = NULL, \
             monitor_pid = NULL, monitor_start = NULL, finished_at = ?2, exit_code = ?3, \
             oom_killed = ?4 WHERE id = ?1",
        )?
        .execute(params![
            id,
            now,
            out.exit_code,
            out.stats.oom_killed,
            ContainerState::Exited
        ])?;
    }
    tx.commit()?;
    Ok(())
}

/// Records that a container's monitor died (found by [`reconcile`]): `exited` with `out`'s
/// code and no `finished_at`, since nobody saw when it ended ([`Record::monitor_died`]). The
/// run's row is closed at `now` (the journal needs it closed; history says when wharf found
/// it).
pub fn mark_monitor_died(
    store: &Store,
    id: &str,
    run_id: Option<i64>,
    out: &Outcome,
) -> Result<()> {
    let now = now_ns();
    let tx = store.db().unchecked_transaction()?;
    if let Some(run_id) = run_id {
        close_run(&tx, run_id, now, out)?;
    }
    tx.prepare_cached(
        "UPDATE containers SET state = ?4, pid = NULL, pid_start = NULL, \
         monitor_pid = NULL, monitor_start = NULL, finished_at = NULL, exit_code = ?2, \
         oom_killed = ?3 WHERE id = ?1",
    )?
    .execute(params![
        id,
        out.exit_code,
        out.stats.oom_killed,
        ContainerState::Exited
    ])?;
    tx.commit()?;
    Ok(())
}

/// Ids of the containers whose monitor died (see [`Record::monitor_died`]).
pub fn monitor_died_ids(store: &Store) -> Result<Vec<String>> {
    Ok(store
        .db()
        .prepare_cached(
            "SELECT id FROM containers WHERE state = ?1 AND finished_at IS NULL \
             AND started_at IS NOT NULL ORDER BY created_at",
        )?
        .query_map([ContainerState::Exited], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?)
}

/// Closes a `runs` row with how the run ended (in the caller's transaction).
fn close_run(tx: &rusqlite::Transaction, run_id: i64, now: i64, out: &Outcome) -> Result<()> {
    tx.prepare_cached(
        "UPDATE runs SET finished_at = ?2, exit_code = ?3, signal = ?4, oom_killed = ?5, \
         peak_memory = ?6, cpu_usec = ?7 WHERE id = ?1",
    )?
    .execute(params![
        run_id,
        now,
        out.exit_code,
        out.signal,
        out.stats.oom_killed,
        out.stats.peak_memory.map(|v| v as i64),
        out.stats.cpu_usec.map(|v| v as i64)
    ])?;
    Ok(())
}

/// Records the end of a run the restart policy follows with another: the `runs` row is
/// closed as by [`mark_exited`], the container is `restarting` (no pid; its monitor stays).
pub fn mark_restarting(store: &Store, id: &str, run_id: Option<i64>, out: &Outcome) -> Result<()> {
    let now = now_ns();
    let tx = store.db().unchecked_transaction()?;
    if let Some(run_id) = run_id {
        close_run(&tx, run_id, now, out)?;
    }
    tx.prepare_cached(
        "UPDATE containers SET state = ?5, pid = NULL, pid_start = NULL, \
         finished_at = ?2, exit_code = ?3, oom_killed = ?4 WHERE id = ?1",
    )?
    .execute(params![
        id,
        now,
        out.exit_code,
        out.stats.oom_killed,
        ContainerState::Restarting
    ])?;
    tx.commit()?;
    Ok(())
}

/// Whether the next run of a `restarting` container may begin: it is still there, still
/// restarting, and nobody asked it to stop. (A stop coming after this check finds the new run
/// and stops it as any other.) [`mark_running`] then counts the restart.
pub fn begin_restart(store: &Store, id: &str) -> Result<bool> {
    Ok(store
        .db()
        .prepare_cached(
            "SELECT 1 FROM containers WHERE id = ?1 AND state = ?2 AND stop_requested = 0",
        )?
        .exists(params![id, ContainerState::Restarting])?)
}

/// Whether the user asked the container to stop (`stop`, `kill`, `rm -f`) since its start.
pub fn stop_requested(store: &Store, id: &str) -> Result<bool> {
    let v: Option<i64> = store
        .db()
        .prepare_cached("SELECT stop_requested FROM containers WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    // A row that is gone was removed: nothing to restart.
    Ok(v.is_none_or(|v| v != 0))
}

/// Marks that the user asks the container to stop: its monitor will not restart it.
pub fn request_stop(store: &Store, id: &str) -> Result<()> {
    store
        .db()
        .prepare_cached("UPDATE containers SET stop_requested = 1 WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

/// Records the container's health status (`starting`, `healthy`, `unhealthy`).
pub fn set_health(store: &Store, id: &str, health: &str) -> Result<()> {
    store
        .db()
        .prepare_cached("UPDATE containers SET health = ?2 WHERE id = ?1")?
        .execute(params![id, health])?;
    Ok(())
}

/// The liveness rule, the one place it is written: a run goes on while its init is alive
/// (`running` with the recorded pid and start time), or while a live monitor carries it
/// (between two runs of a restart policy; between a claimed start and the init's birth; in
/// the instant between the init's exit and its monitor recording it). A `created` container
/// whose creator is still alive does not count: `create` records its creator as owner only
/// so that a crash before the first run is found. `apply`, `watch`, `stop`, prune and `ps`
/// all ask this.
pub fn run_goes_on(
    state: ContainerState,
    pid: Option<(i32, u64)>,
    monitor: Option<(i32, u64)>,
) -> bool {
    let alive = |p: Option<(i32, u64)>| p.is_some_and(|(pid, t)| proc_start_time(pid) == Some(t));
    (matches!(state, ContainerState::Running | ContainerState::Paused) && alive(pid))
        || (state != ContainerState::Created && alive(monitor))
}

/// Deletes a container's row and directory. The caller made sure it is not running.
pub fn remove(store: &Store, rec: &Record) -> Result<()> {
    store
        .db()
        .prepare_cached("DELETE FROM containers WHERE id = ?1")?
        .execute([&rec.id])?;
    remove_files(store, &rec.id);
    Ok(())
}

/// Removes the container's directory (best effort).
pub fn remove_files(store: &Store, id: &str) {
    let dir = store.container_dir(id);
    if let Err(e) = fsutil::remove_tree(&dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("cannot remove {}: {e}", dir.display());
    }
}

/// Field 22 of /proc/<pid>/stat: the process start time in clock ticks since boot. A pid plus
/// its start time names one process for the whole uptime. None for a zombie: it is dead (a
/// monitor killed and not yet reaped by whoever adopted it must read as gone).
pub fn proc_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm (field 2) may hold spaces and parentheses: parse after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut fields = rest.split(' ');
    if matches!(fields.next(), Some("Z" | "X")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// The log file of a container.
pub fn log_path(store: &Store, id: &str) -> PathBuf {
    store.container_dir(id).join("log.json")
}

/// Renames container `id` (`wharf rename`). A name in use is a user error.
pub fn rename(store: &Store, id: &str, new_name: &str) -> Result<()> {
    let res = store
        .db()
        .prepare_cached("UPDATE containers SET name = ?2 WHERE id = ?1")?
        .execute(params![id, new_name]);
    match res {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Err(
                user(format!("the container name {new_name:?} is already in use"))
                    .hint("choose another name, or remove that container with `wharf rm`")
                    .into(),
            )
        }
        Err(e) => Err(e.into()),
    }
}

/// Replaces the recorded config of container `id` (`wharf update`: new limits, restart
/// policy); the next start runs with it.
pub fn set_config(store: &Store, id: &str, config: &ContainerConfig) -> Result<()> {
    store
        .db()
        .prepare_cached("UPDATE containers SET config = ?2 WHERE id = ?1")?
        .execute(params![id, serde_json::to_string(config)?])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_reads_like_docker() {
        let s = 1_000_000_000i64;
        let now = 10_000 * s;
        assert_eq!(
            status_text(ContainerState::Created, None, None, None, None, now),
            "Created"
        );
        assert_eq!(
            status_text(ContainerState::Running, Some(now), None, None, None, now),
            "Up Less than a second"
        );
        assert_eq!(
            status_text(
                ContainerState::Running,
                Some(now - 180 * s),
                None,
                None,
                None,
                now
            ),
            "Up 3 minutes"
        );
        assert_eq!(
            status_text(
                ContainerState::Running,
                Some(now - 90 * s),
                None,
                None,
                Some("healthy"),
                now
            ),
            "Up About a minute (healthy)"
        );
        assert_eq!(
            status_text(
                ContainerState::Running,
                Some(now - 5 * s),
                None,
                None,
                Some("unhealthy"),
                now
            ),
            "Up 5 seconds (unhealthy)"
        );
        assert_eq!(
            status_text(
                ContainerState::Running,
                Some(now - s),
                None,
                None,
                Some("starting"),
                now
            ),
            "Up 1 second (health: starting)"
        );
        assert_eq!(
            status_text(
                ContainerState::Exited,
                Some(0),
                Some(now - 7200 * s),
                Some(137),
                None,
                now
            ),
            "Exited (137) 2 hours ago"
        );
        assert_eq!(
            status_text(
                ContainerState::Exited,
                Some(0),
                Some(now),
                Some(0),
                None,
                now
            ),
            "Exited (0) Less than a second ago"
        );
        // A run that never started (its owner died first) reads as docker's never-started.
        assert_eq!(
            status_text(ContainerState::Exited, None, None, Some(125), None, now),
            "Created"
        );
        assert_eq!(
            status_text(
                ContainerState::Restarting,
                Some(0),
                Some(now - 5 * s),
                Some(1),
                None,
                now
            ),
            "Restarting (1) 5 seconds ago"
        );
        assert_eq!(
            status_text(
                ContainerState::Paused,
                Some(now - 3600 * s),
                None,
                None,
                None,
                now
            ),
            "Up About an hour (Paused)"
        );
        assert_eq!(
            status_text(ContainerState::Dead, None, None, None, None, now),
            "Dead"
        );
        assert_eq!(
            status_text(ContainerState::Removing, None, None, None, None, now),
            "Removal In Progress"
        );
    }

    #[test]
    fn start_time_of_self_is_stable() {
        let me = std::process::id() as i32;
        let a = proc_start_time(me);
        assert!(a.is_some());
        assert_eq!(a, proc_start_time(me));
        assert_eq!(proc_start_time(i32::MAX), None);
    }
}
