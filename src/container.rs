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
use serde::{Deserialize, Serialize};

use crate::error::user;
use crate::runtime::cgroup::{self, Limits};
use crate::store::{Store, fsutil, now_ns};

/// What the container's network namespace is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// A new network namespace with only `lo`, up.
    #[default]
    None,
    /// The host's network namespace.
    Host,
}

/// One `-v` mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// `named` (under `<root>/volumes/<name>/_data`) or `bind` (a host path).
    pub kind: VolumeKind,
    /// The volume name, or the absolute host path.
    pub source: String,
    /// Absolute path inside the container.
    pub destination: String,
    pub read_only: bool,
    /// An anonymous volume (`-v /path`): named by 64 random hex digits; `rm -v` removes it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub anonymous: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeKind {
    Named,
    Bind,
}

/// The effective spec of a container: the image's defaults merged with the command line.
/// Stored as JSON in `containers.config`; `start` runs a container again from it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// argv of the container's init (entrypoint + cmd, resolved).
    pub args: Vec<String>,
    /// `K=V`, complete (PATH, HOSTNAME, TERM, container=wharf, image env, `-e`). HOME is
    /// added at start from the container's /etc/passwd when absent.
    pub env: Vec<String>,
    /// Working directory inside the container ("/" when neither image nor `-w` give one).
    pub working_dir: String,
    /// `uid[:gid]` or `name[:group]`, resolved inside the container at start; None = root.
    #[serde(default)]
    pub user: Option<String>,
    pub hostname: String,
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub interactive: bool,
    #[serde(default)]
    pub network: Network,
    #[serde(default)]
    pub volumes: Vec<Volume>,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default)]
    pub cap_add: Vec<String>,
    #[serde(default)]
    pub cap_drop: Vec<String>,
    #[serde(default)]
    pub privileged: bool,
    #[serde(default)]
    pub limits: Limits,
    /// `--rm`: remove the container when its run ends.
    #[serde(default)]
    pub auto_remove: bool,
    /// `--restart`: what the monitor does when the command exits (rows written before
    /// restart policies existed load as "no").
    #[serde(default)]
    pub restart: crate::runtime::restart::RestartPolicy,
    /// `--health-cmd` and friends, or the manifest's `health`: run by the monitor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<crate::runtime::health::HealthConfig>,
    /// `--tmpfs`, `--mount type=tmpfs`: tmpfs mounts made at each start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<crate::runtime::spec::Tmpfs>,
    /// `--shm-size` in bytes (None: 64 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<u64>,
    /// `--ulimit`: set on the init before exec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<crate::runtime::spec::Ulimit>,
    /// The first signal of `stop` (`--stop-signal`, or the image's StopSignal): "SIGUSR1".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// `--stop-timeout` seconds: the grace of `stop` without `-t`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<u64>,
    /// `--init`: PID 1 is wharf's reaper, the command its child (`child::reaper`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
    /// `--device`: host nodes bind-mounted in, allowed by the devices cgroup / BPF filter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<crate::runtime::spec::Device>,
    /// `--log-opt max-size/max-file`: over retention's log policy, field by field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_opts: Option<crate::runtime::logs::LogPolicy>,
}

/// A row of `containers`.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub id: String,
    pub name: String,
    pub image_id: String,
    pub image_ref: String,
    pub config: ContainerConfig,
    pub created_at: i64,
    pub state: String,
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
}

impl Record {
    pub fn short_id(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }

    /// The container's process, if it is running and its pid was not recycled.
    pub fn live_pid(&self) -> Option<i32> {
        match (self.state.as_str(), self.pid, self.pid_start) {
            ("running", Some(pid), Some(start)) if proc_start_time(pid) == Some(start) => Some(pid),
            _ => None,
        }
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
    state: &str,
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
        "running" => {
            let up = format!("Up {}", since(started_at.unwrap_or(now)));
            match health {
                Some("starting") => format!("{up} (health: starting)"),
                Some(h) if !h.is_empty() && h != "none" => format!("{up} ({h})"),
                _ => up,
            }
        }
        "paused" => format!("Up {} (Paused)", since(started_at.unwrap_or(now))),
        "restarting" => format!(
            "Restarting ({code}) {} ago",
            since(finished_at.unwrap_or(now))
        ),
        "removing" => "Removal In Progress".into(),
        "dead" => "Dead".into(),
        "exited" => match finished_at {
            Some(t) => format!("Exited ({code}) {} ago", since(t)),
            None => "Created".into(),
        },
        _ => "Created".into(),
    }
}

impl Record {
    /// docker's STATUS column at time `now` (ns since the epoch).
    pub fn status_text(&self, now: i64) -> String {
        status_text(
            &self.state,
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
     spec_hash, spec, restart_count, health";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Record, (String, String))> {
    let cfg: String = r.get(4)?;
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
        },
        (cfg, r.get(15)?),
    ))
}

fn finish_row((mut rec, (cfg, labels)): (Record, (String, String))) -> Result<Record> {
    rec.config = serde_json::from_str(&cfg)
        .with_context(|| format!("the stored config of container {} is corrupt", rec.id))?;
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
    rows.into_iter().map(finish_row).collect()
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
    /// The process that will own its first run (pid, start time): recorded with the row, so
    /// a crash before the run starts is found by [`reconcile`] too.
    pub owner: Option<(i32, u64)>,
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
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'created', ?7, ?8, ?9, ?10, ?11, ?12)",
        )?
        .execute(params![
            c.id,
            c.name,
            c.image_id,
            c.image_ref,
            config,
            now_ns(),
            c.owner.map(|(p, _)| p),
            c.owner.map(|(_, t)| t as i64),
            serde_json::to_string(c.labels)?,
            c.project,
            c.spec_hash,
            c.spec,
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
        return finish_row(row);
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
            return finish_row(row);
        }
    }
    Err(user(format!("no such container: {input}"))
        .hint("`wharf ps -a` lists the containers")
        .into())
}

/// Every container whose state says a run is in progress.
fn active(store: &Store) -> Result<Vec<Record>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM containers WHERE state = 'running' OR monitor_pid IS NOT NULL"
    );
    let rows: Vec<_> = store
        .db()
        .prepare_cached(&sql)?
        .query_map([], from_row)?
        .collect::<rusqlite::Result<_>>()?;
    rows.into_iter().map(finish_row).collect()
}

/// Claims a run of `id` for the calling process (the monitor): records it as the owner before
/// the container process exists, so a crash at any later point is found by [`reconcile`].
pub fn claim(store: &Store, id: &str) -> Result<()> {
    let me = std::process::id() as i32;
    let start = proc_start_time(me).map(|s| s as i64);
    store
        .db()
        .prepare_cached(
            "UPDATE containers SET monitor_pid = ?2, monitor_start = ?3, stop_requested = 0 \
             WHERE id = ?1",
        )?
        .execute(params![id, me, start])?;
    Ok(())
}

/// Forgets the owner recorded by [`insert`] on a container that is not running: `wharf
/// create` made it and exits, so its death must not read as a crashed run.
pub fn disown(store: &Store, id: &str) -> Result<()> {
    store
        .db()
        .prepare_cached(
            "UPDATE containers SET monitor_pid = NULL, monitor_start = NULL \
             WHERE id = ?1 AND state != 'running'",
        )?
        .execute([id])?;
    Ok(())
}

/// Claims a new run of a stopped container (`created` or `exited`) for the calling process,
/// atomically: false when it runs, or another process is starting it. Run [`reconcile`]
/// first, so an owner that died does not hold the claim.
pub fn claim_start(store: &Store, id: &str) -> Result<bool> {
    let me = std::process::id() as i32;
    let start = proc_start_time(me).map(|s| s as i64);
    let n = store
        .db()
        .prepare_cached(
            "UPDATE containers SET monitor_pid = ?2, monitor_start = ?3, stop_requested = 0, \
             restart_count = 0 WHERE id = ?1 AND state IN ('created', 'exited') \
             AND monitor_pid IS NULL",
        )?
        .execute(params![id, me, start])?;
    Ok(n == 1)
}

/// Records that the container's init runs as `pid`, and opens its row in `runs` (`restart`:
/// started by the restart policy, counted in `restart_count`). Returns the run's row id.
pub fn mark_running(store: &Store, rec_id: &str, pid: i32, restart: bool) -> Result<i64> {
    let start = proc_start_time(pid).map(|s| s as i64);
    let now = now_ns();
    let tx = store.db().unchecked_transaction()?;
    tx.prepare_cached(
        "UPDATE containers SET state = 'running', pid = ?2, pid_start = ?3, started_at = ?4, \
         finished_at = NULL, exit_code = NULL, oom_killed = 0, \
         restart_count = restart_count + ?5, \
         health = CASE WHEN json_extract(config, '$.healthcheck') IS NULL THEN NULL \
         ELSE 'starting' END WHERE id = ?1",
    )?
    .execute(params![rec_id, pid, start, now, restart as i64])?;
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
    pub stats: cgroup::Stats,
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
            "UPDATE containers SET state = 'exited', pid = NULL, pid_start = NULL, \
             monitor_pid = NULL, monitor_start = NULL, finished_at = ?2, exit_code = ?3, \
             oom_killed = ?4 WHERE id = ?1",
        )?
        .execute(params![id, now, out.exit_code, out.stats.oom_killed])?;
    }
    tx.commit()?;
    Ok(())
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
        "UPDATE containers SET state = 'restarting', pid = NULL, pid_start = NULL, \
         finished_at = ?2, exit_code = ?3, oom_killed = ?4 WHERE id = ?1",
    )?
    .execute(params![id, now, out.exit_code, out.stats.oom_killed])?;
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
            "SELECT 1 FROM containers WHERE id = ?1 AND state = 'restarting' \
             AND stop_requested = 0",
        )?
        .exists([id])?)
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

/// Whether a run is in progress or between two runs of a restart policy.
pub fn is_active_state(state: &str) -> bool {
    matches!(state, "running" | "restarting")
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

/// Closes the runs whose owner (foreground wharf or monitor) died without recording the end:
/// marks them exited, destroys their cgroup, and removes `--rm` containers.
/// Cheap when nothing is stale: one indexed query.
pub fn reconcile(store: &Store) -> Result<()> {
    let mut cleaned = false;
    for rec in active(store)? {
        if rec.live_monitor().is_some() {
            continue;
        }
        // A monitor that died leaves its container without a parent: PDEATHSIG killed it.
        if let Some(pid) = rec.live_pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        tracing::info!("closing the run of {} whose monitor died", rec.short_id());
        let stats = match cgroup::open(&rec.id) {
            Some(cg) => {
                let s = cg.stats();
                let _ = cg.destroy();
                s
            }
            None => cgroup::Stats::default(),
        };
        let run_id: Option<i64> = store
            .db()
            .prepare_cached(
                "SELECT id FROM runs WHERE container_id = ?1 AND finished_at IS NULL \
                 ORDER BY started_at DESC LIMIT 1",
            )?
            .query_row([&rec.id], |r| r.get(0))
            .optional()?;
        // Between two runs of a restart policy, the last run's exit code stands.
        let exit_code = match (rec.state.as_str(), rec.exit_code) {
            ("restarting", Some(c)) => c,
            _ => crate::error::exit::RUNTIME,
        };
        let out = Outcome {
            exit_code,
            signal: None,
            stats,
        };
        mark_exited(store, &rec.id, run_id, &out, rec.config.auto_remove)?;
        if rec.config.auto_remove {
            remove_files(store, &rec.id);
            crate::volume::remove_anonymous(store, &rec.config.volumes);
        }
        cleaned = true;
    }
    if cleaned {
        let keep: Vec<String> = store
            .db()
            .prepare_cached("SELECT id FROM containers WHERE state = 'running'")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        cgroup::remove_stale(&keep)?;
    }
    Ok(())
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
            status_text("created", None, None, None, None, now),
            "Created"
        );
        assert_eq!(
            status_text("running", Some(now), None, None, None, now),
            "Up Less than a second"
        );
        assert_eq!(
            status_text("running", Some(now - 180 * s), None, None, None, now),
            "Up 3 minutes"
        );
        assert_eq!(
            status_text(
                "running",
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
                "running",
                Some(now - 5 * s),
                None,
                None,
                Some("unhealthy"),
                now
            ),
            "Up 5 seconds (unhealthy)"
        );
        assert_eq!(
            status_text("running", Some(now - s), None, None, Some("starting"), now),
            "Up 1 second (health: starting)"
        );
        assert_eq!(
            status_text(
                "exited",
                Some(0),
                Some(now - 7200 * s),
                Some(137),
                None,
                now
            ),
            "Exited (137) 2 hours ago"
        );
        assert_eq!(
            status_text("exited", Some(0), Some(now), Some(0), None, now),
            "Exited (0) Less than a second ago"
        );
        // A run that never started (its owner died first) reads as docker's never-started.
        assert_eq!(
            status_text("exited", None, None, Some(125), None, now),
            "Created"
        );
        assert_eq!(
            status_text("restarting", Some(0), Some(now - 5 * s), Some(1), None, now),
            "Restarting (1) 5 seconds ago"
        );
        assert_eq!(
            status_text("paused", Some(now - 3600 * s), None, None, None, now),
            "Up About an hour (Paused)"
        );
        assert_eq!(status_text("dead", None, None, None, None, now), "Dead");
        assert_eq!(
            status_text("removing", None, None, None, None, now),
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
