//! The journal: one record per container run, one per apply. Written by the runtime and the
//! reconciler as they act (`begin_apply`/`finish_apply`); read by `wharf history`; pruned
//! only by retention.

use anyhow::Result;
use rusqlite::{Row, params};
use serde::Serialize;

use crate::store::Store;

/// One run of a container, from start to exit.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub id: i64,
    pub container_id: String,
    pub container_name: String,
    pub image_id: String,
    pub image_ref: String,
    pub command: Vec<String>,
    /// ns since the epoch
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    pub peak_memory: Option<u64>,
    pub cpu_usec: Option<u64>,
    /// Started by a restart policy rather than by a user.
    pub restart: bool,
}

/// Which runs to list.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// A container name, or a prefix of its id.
    pub container: Option<String>,
    /// Runs started at or after this time (ns).
    pub since: Option<i64>,
    /// Runs started before this time (ns).
    pub until: Option<i64>,
    pub limit: Option<usize>,
}

fn run_from_row(r: &Row<'_>) -> rusqlite::Result<RunRecord> {
    let command: String = r.get(5)?;
    Ok(RunRecord {
        id: r.get(0)?,
        container_id: r.get(1)?,
        container_name: r.get(2)?,
        image_id: r.get(3)?,
        image_ref: r.get(4)?,
        command: serde_json::from_str(&command).unwrap_or_else(|_| vec![command]),
        started_at: r.get(6)?,
        finished_at: r.get(7)?,
        exit_code: r.get(8)?,
        signal: r.get(9)?,
        oom_killed: r.get::<_, i64>(10)? != 0,
        peak_memory: r.get::<_, Option<i64>>(11)?.map(|v| v as u64),
        cpu_usec: r.get::<_, Option<i64>>(12)?.map(|v| v as u64),
        restart: r.get::<_, i64>(13)? != 0,
    })
}

/// Runs matching `filter`, newest first. Runs outlive their container's removal.
pub fn runs(store: &Store, filter: &RunFilter) -> Result<Vec<RunRecord>> {
    let mut stmt = store.db().prepare_cached(
        "SELECT id, container_id, container_name, image_id, image_ref, command, started_at,
                finished_at, exit_code, signal, oom_killed, peak_memory, cpu_usec, restart
         FROM runs
         WHERE (?1 IS NULL OR container_name = ?1 OR substr(container_id, 1, length(?1)) = ?1)
           AND (?2 IS NULL OR started_at >= ?2)
           AND (?3 IS NULL OR started_at < ?3)
         ORDER BY started_at DESC, id DESC
         LIMIT ?4",
    )?;
    let limit = filter.limit.map_or(-1, |l| l as i64);
    let rows = stmt.query_map(
        params![filter.container, filter.since, filter.until, limit],
        run_from_row,
    )?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// One `wharf apply`.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyRecord {
    pub id: i64,
    pub at: i64,
    pub finished_at: Option<i64>,
    pub project: String,
    pub files: serde_json::Value,
    pub git_commit: Option<String>,
    pub git_dirty: Option<bool>,
    pub plan: serde_json::Value,
    pub outcome: Option<serde_json::Value>,
}

/// Applies, newest first, optionally of one project and since a time.
pub fn applies(
    store: &Store,
    project: Option<&str>,
    since: Option<i64>,
    limit: Option<usize>,
) -> Result<Vec<ApplyRecord>> {
    let mut stmt = store.db().prepare_cached(
        "SELECT id, at, finished_at, project, files, git_commit, git_dirty, plan, outcome
         FROM applies
         WHERE (?1 IS NULL OR project = ?1) AND (?2 IS NULL OR at >= ?2)
         ORDER BY at DESC, id DESC LIMIT ?3",
    )?;
    let json = |s: String| serde_json::from_str(&s).unwrap_or(serde_json::Value::String(s));
    let rows = stmt.query_map(
        params![project, since, limit.map_or(-1, |l| l as i64)],
        |r| {
            Ok(ApplyRecord {
                id: r.get(0)?,
                at: r.get(1)?,
                finished_at: r.get(2)?,
                project: r.get(3)?,
                files: json(r.get(4)?),
                git_commit: r.get(5)?,
                git_dirty: r.get::<_, Option<i64>>(6)?.map(|v| v != 0),
                plan: json(r.get(7)?),
                outcome: r.get::<_, Option<String>>(8)?.map(json),
            })
        },
    )?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Opens the journal record of an apply (its outcome stays NULL until
/// [`finish_apply`]: a killed apply is seen as interrupted). Returns its id.
pub fn begin_apply(
    store: &Store,
    project: &str,
    files: &serde_json::Value,
    git: Option<(&str, bool)>,
    plan: &serde_json::Value,
) -> Result<i64> {
    store
        .db()
        .prepare_cached(
            "INSERT INTO applies (at, project, files, git_commit, git_dirty, plan) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            crate::store::now_ns(),
            project,
            files.to_string(),
            git.map(|(c, _)| c),
            git.map(|(_, d)| d as i64),
            plan.to_string()
        ])?;
    Ok(store.db().last_insert_rowid())
}

/// Records the outcome of each action of an apply, and when it finished.
pub fn finish_apply(store: &Store, id: i64, outcome: &serde_json::Value) -> Result<()> {
    store
        .db()
        .prepare_cached("UPDATE applies SET finished_at = ?2, outcome = ?3 WHERE id = ?1")?
        .execute(params![id, crate::store::now_ns(), outcome.to_string()])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(store: &Store, cid: &str, name: &str, started: i64) {
        store
            .db()
            .execute(
                "INSERT INTO runs (container_id, container_name, image_id, image_ref, command, started_at, finished_at, exit_code)
                 VALUES (?1, ?2, 'img', 'app:1', '[\"/bin/true\"]', ?3, ?4, 0)",
                params![cid, name, started, started + 5],
            )
            .unwrap();
    }

    #[test]
    fn runs_filter_by_name_id_prefix_and_time_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        insert(&store, "aaaa1111", "web", 100);
        insert(&store, "aaaa1111", "web", 300);
        insert(&store, "bbbb2222", "db", 200);
        let all = runs(&store, &RunFilter::default()).unwrap();
        assert_eq!(
            all.iter().map(|r| r.started_at).collect::<Vec<_>>(),
            [300, 200, 100]
        );
        assert_eq!(all[0].command, ["/bin/true"]);
        let web = runs(
            &store,
            &RunFilter {
                container: Some("web".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(web.len(), 2);
        let by_id = runs(
            &store,
            &RunFilter {
                container: Some("bbbb".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(by_id.len(), 1);
        assert_eq!(by_id[0].container_name, "db");
        let recent = runs(
            &store,
            &RunFilter {
                since: Some(150),
                until: Some(300),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(recent.len(), 1);
        let limited = runs(
            &store,
            &RunFilter {
                limit: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(limited[0].started_at, 300);
    }
}
