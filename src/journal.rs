//! The journal: one record per container run, one per apply. Written by the runtime and the
//! reconciler as they act (`begin_apply`/`finish_apply`); read by `wharf history`; pruned
//! only by retention.

use anyhow::Result;
use rusqlite::{Row, params};
use serde::Serialize;

use crate::model::GenerationOutcome;
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

/// One generation of a declared container: a create or recreate by apply, or a rollback.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub id: i64,
    pub project: String,
    pub name: String,
    /// 1, 2, ... per declared container.
    pub seq: i64,
    pub container_id: String,
    pub image_id: String,
    pub image_ref: String,
    /// The effective spec (JSON of `ContainerSpec`).
    pub spec: serde_json::Value,
    pub spec_hash: String,
    /// The apply that made it (None for a rollback).
    pub apply_id: Option<i64>,
    pub git_commit: Option<String>,
    pub git_dirty: Option<bool>,
    /// `apply` or `rollback`.
    pub cause: String,
    /// For a rollback: the generation it brought back.
    pub rollback_of: Option<i64>,
    pub created_at: i64,
    pub outcome: GenerationOutcome,
    pub error: Option<String>,
    /// When a later generation replaced it (None: current, or the container is gone).
    pub superseded_at: Option<i64>,
    /// The registry manifest its image was pulled by (`repo@sha256:…`), for a pulled image.
    pub image_digest: Option<String>,
}

impl Generation {
    /// A generation a rollback may return to: it was created or started without error.
    pub fn good(&self) -> bool {
        self.outcome != GenerationOutcome::Failed
    }
}

/// What a new generation is.
#[derive(Debug, Clone)]
pub struct NewGeneration<'a> {
    pub project: &'a str,
    pub name: &'a str,
    pub container_id: &'a str,
    pub image_id: &'a str,
    pub image_ref: &'a str,
    pub spec_json: &'a str,
    pub spec_hash: &'a str,
    pub apply_id: Option<i64>,
    pub git: Option<(&'a str, bool)>,
    pub cause: &'a str,
    pub rollback_of: Option<i64>,
    pub outcome: GenerationOutcome,
    pub error: Option<&'a str>,
    /// `repo@sha256:…` of a pulled image.
    pub image_digest: Option<&'a str>,
}

const GEN_COLS: &str = "id, project, name, seq, container_id, image_id, image_ref, spec, spec_hash, \
     apply_id, git_commit, git_dirty, cause, rollback_of, created_at, outcome, error, superseded_at, image_digest";

fn gen_from_row(r: &Row<'_>) -> rusqlite::Result<Generation> {
    let spec: String = r.get(7)?;
    Ok(Generation {
        id: r.get(0)?,
        project: r.get(1)?,
        name: r.get(2)?,
        seq: r.get(3)?,
        container_id: r.get(4)?,
        image_id: r.get(5)?,
        image_ref: r.get(6)?,
        spec: serde_json::from_str(&spec).unwrap_or(serde_json::Value::String(spec)),
        spec_hash: r.get(8)?,
        apply_id: r.get(9)?,
        git_commit: r.get(10)?,
        git_dirty: r.get::<_, Option<i64>>(11)?.map(|v| v != 0),
        cause: r.get(12)?,
        rollback_of: r.get(13)?,
        created_at: r.get(14)?,
        outcome: r.get(15)?,
        error: r.get(16)?,
        superseded_at: r.get(17)?,
        image_digest: r.get(18)?,
    })
}

/// Records a new generation (the next seq of its declared container) and marks the
/// previous ones superseded. Returns its seq.
pub fn record_generation(store: &Store, g: &NewGeneration<'_>) -> Result<i64> {
    let now = crate::store::now_ns();
    let tx = store.db().unchecked_transaction()?;
    let seq: i64 = tx.query_row(
        "SELECT COALESCE(MAX(seq), 0) + 1 FROM generations WHERE project = ?1 AND name = ?2",
        params![g.project, g.name],
        |r| r.get(0),
    )?;
    tx.execute(
        "UPDATE generations SET superseded_at = ?3 \
         WHERE project = ?1 AND name = ?2 AND superseded_at IS NULL",
        params![g.project, g.name, now],
    )?;
    tx.execute(
        "INSERT INTO generations (project, name, seq, container_id, image_id, image_ref, spec, \
         spec_hash, apply_id, git_commit, git_dirty, cause, rollback_of, created_at, outcome, error, \
         image_digest) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
        params![
            g.project,
            g.name,
            seq,
            g.container_id,
            g.image_id,
            g.image_ref,
            g.spec_json,
            g.spec_hash,
            g.apply_id,
            g.git.map(|(c, _)| c),
            g.git.map(|(_, d)| d as i64),
            g.cause,
            g.rollback_of,
            now,
            g.outcome,
            g.error,
            g.image_digest,
        ],
    )?;
    tx.commit()?;
    Ok(seq)
}

/// Sets the outcome of the generation of a container (after its start).
pub fn set_generation_outcome(
    store: &Store,
    container_id: &str,
    outcome: GenerationOutcome,
    error: Option<&str>,
) -> Result<()> {
    store
        .db()
        .prepare_cached("UPDATE generations SET outcome = ?2, error = ?3 WHERE container_id = ?1")?
        .execute(params![container_id, outcome, error])?;
    Ok(())
}

/// The generations of a declared container (`project` None: of any project), newest first.
pub fn generations(store: &Store, project: Option<&str>, name: &str) -> Result<Vec<Generation>> {
    let mut stmt = store.db().prepare(&format!(
        "SELECT {GEN_COLS} FROM generations WHERE name = ?2 AND (?1 IS NULL OR project = ?1) \
         ORDER BY project, seq DESC"
    ))?;
    let rows = stmt.query_map(params![project, name], gen_from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Every generation, of one project or all (oldest first).
pub fn all_generations(store: &Store, project: Option<&str>) -> Result<Vec<Generation>> {
    let mut stmt = store.db().prepare(&format!(
        "SELECT {GEN_COLS} FROM generations WHERE (?1 IS NULL OR project = ?1) \
         ORDER BY project, name, seq"
    ))?;
    let rows = stmt.query_map(params![project], gen_from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The generation a rollback of a declared container returns to: the newest good generation
/// older than the current one (`current`: its seq, or None when the container is gone, then
/// the newest good one) whose image or spec differs from the current's. `gens` are one
/// declared container's.
pub fn rollback_target(gens: &[Generation], current: Option<i64>) -> Option<&Generation> {
    let cur = current.and_then(|s| gens.iter().find(|g| g.seq == s));
    let limit = current.unwrap_or(i64::MAX);
    gens.iter()
        .filter(|g| {
            g.seq < limit
                && g.good()
                && cur.is_none_or(|c| g.image_id != c.image_id || g.spec_hash != c.spec_hash)
        })
        .max_by_key(|g| g.seq)
}

/// One removal made by a retention policy.
#[derive(Debug, Clone, Serialize)]
pub struct RetentionRecord {
    pub at: i64,
    /// The project whose policy removed it ("" for the root config's).
    pub scope: String,
    /// image | container | generation | run | apply
    pub kind: crate::model::RetentionKind,
    pub key: String,
    pub detail: String,
    pub reason: String,
}

/// Journals a retention removal.
pub fn record_retention(store: &Store, r: &RetentionRecord) -> Result<()> {
    store
        .db()
        .prepare_cached(
            "INSERT INTO retention_log (at, scope, kind, key, detail, reason) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![r.at, r.scope, r.kind, r.key, r.detail, r.reason])?;
    Ok(())
}

/// Retention removals, newest first.
pub fn retention_log(store: &Store, limit: Option<usize>) -> Result<Vec<RetentionRecord>> {
    let mut stmt = store.db().prepare(
        "SELECT at, scope, kind, key, detail, reason FROM retention_log \
         ORDER BY at DESC, id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit.map_or(-1, |l| l as i64)], |r| {
        Ok(RetentionRecord {
            at: r.get(0)?,
            scope: r.get(1)?,
            kind: r.get(2)?,
            key: r.get(3)?,
            detail: r.get(4)?,
            reason: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
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

    fn generation(seq: i64, image: &str, outcome: &str) -> Generation {
        Generation {
            id: seq,
            project: "p".into(),
            name: "web".into(),
            seq,
            container_id: format!("c{seq}"),
            image_id: image.into(),
            image_ref: format!("app:{image}"),
            spec: serde_json::Value::Null,
            spec_hash: "h".into(),
            apply_id: None,
            git_commit: None,
            git_dirty: None,
            cause: "apply".into(),
            rollback_of: None,
            created_at: seq,
            outcome: outcome.parse().expect("an outcome"),
            error: None,
            superseded_at: None,
            image_digest: None,
        }
    }

    #[test]
    fn rollback_target_is_the_newest_good_different_generation_before_the_current() {
        let gens = vec![
            generation(1, "v1", "started"),
            generation(2, "v2", "started"),
            generation(3, "v3", "failed"),
            generation(4, "v2", "started"), // same as 4: skipped
            generation(5, "v2", "started"),
        ];
        // Current 5 (v2): 4 is the same image and spec, 3 failed, 2 is v2 again: 1.
        assert_eq!(rollback_target(&gens, Some(5)).map(|g| g.seq), Some(1));
        // Current 3: 2.
        assert_eq!(rollback_target(&gens, Some(3)).map(|g| g.seq), Some(2));
        // The container is gone: the newest good generation.
        assert_eq!(rollback_target(&gens, None).map(|g| g.seq), Some(5));
        // Nothing before the first.
        assert!(rollback_target(&gens, Some(1)).is_none());
    }
}
