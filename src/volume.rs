//! Volumes: a directory `<root>/volumes/<name>/_data` and a row in `volumes` (name,
//! created_at, labels, project).
//!
//! Every way a volume comes into being goes through this module: `volume create`, a manifest's
//! volume, and the run path (`-v NAME:/path` creates on first use, `-v /path` creates an
//! anonymous volume named by 64 random hex digits and labelled [`ANONYMOUS_LABEL`]).
//!
//! Races. A volume is "in use" when a container row lists it in its config; the container row
//! is written before its run mounts anything. [`ensure`] (the run path) and [`remove`] both do
//! their row *and* directory work inside one `BEGIN IMMEDIATE` SQLite transaction, which
//! serializes writers: either the removal committed first (and [`ensure`] then makes a fresh,
//! empty volume of that name), or the container's row was there when the removal checked its
//! users (and the removal is refused). A removal marks the directory, commits, then moves it
//! into `tmp/` and deletes it: killed before the commit, the volume is whole; after it, the
//! marked directory is cleared by the next creation of that name or the next removal's sweep
//! (see [`remove`]). No data is lost, and no removed volume's data comes back.
//! [`ensure`] costs one write transaction that changes nothing when the volume exists (no WAL
//! frame is written) and one `mkdir`: no store lock on the run path.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use anyhow::{Context, Result};
use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};
use serde::Serialize;

use crate::error::{UserError, user};
use crate::model::{Volume, VolumeKind};
use crate::store::{Store, fsutil, now_ns, random_hex};

/// The label marking an anonymous volume (the one docker 23+ uses, so filters carry over).
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

/// One volume, as `volume ls/inspect`, `system df` and prune see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeInfo {
    pub name: String,
    /// ns since the epoch.
    pub created_at: i64,
    pub labels: BTreeMap<String, String>,
    /// The manifest project that owns it; None for `volume create` and `run -v`.
    pub project: Option<String>,
    /// `<root>/volumes/<name>/_data`.
    pub mountpoint: PathBuf,
}

impl VolumeInfo {
    pub fn anonymous(&self) -> bool {
        self.labels.contains_key(ANONYMOUS_LABEL)
    }
}

/// docker's volume name rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+` (and at most 255 bytes, a file
/// name); [`crate::names::check`] is the one rule.
pub fn validate_name(name: &str) -> Result<(), UserError> {
    crate::names::check(crate::names::NameKind::Volume, name).map_err(Into::into)
}

/// A fresh anonymous volume name: 64 random hex digits, as docker names them.
pub fn anonymous_name() -> String {
    random_hex(32)
}

/// `<root>/volumes/<name>/_data`.
pub fn data_dir(store: &Store, name: &str) -> PathBuf {
    store.volumes_dir().join(name).join("_data")
}

fn immediate(store: &Store) -> Result<Transaction<'_>> {
    Transaction::new_unchecked(store.db(), TransactionBehavior::Immediate)
        .context("cannot begin a transaction on the state database")
}

fn make_dir(store: &Store, name: &str) -> Result<PathBuf> {
    let data = data_dir(store, name);
    if !data.is_dir() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&data)
            .with_context(|| format!("cannot create the volume directory {}", data.display()))?;
    }
    Ok(data)
}

/// Creates the volume `name` if it does not exist; returns its `_data` directory. The run path
/// calls this for every named or anonymous volume of a container (whose row exists already).
pub fn ensure(store: &Store, name: &str, anonymous: bool) -> Result<PathBuf> {
    let tx = immediate(store)?;
    let labels = if anonymous {
        format!("{{\"{ANONYMOUS_LABEL}\":\"\"}}")
    } else {
        "{}".to_string()
    };
    let grave = take_removed(&tx, store, name)?;
    tx.prepare_cached(
        "INSERT OR IGNORE INTO volumes (name, created_at, labels) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![name, now_ns(), labels])?;
    let data = make_dir(store, name)?;
    tx.commit()?;
    bury(grave);
    Ok(data)
}

/// `volume create`: a new volume with `labels`; a generated (anonymous-style) name when `name`
/// is None. Creating a volume that exists with the same labels succeeds, as docker's does.
pub fn create(
    store: &Store,
    name: Option<&str>,
    labels: &BTreeMap<String, String>,
    project: Option<&str>,
) -> Result<VolumeInfo> {
    let name = match name {
        Some(n) => {
            validate_name(n)?;
            n.to_string()
        }
        None => anonymous_name(),
    };
    let tx = immediate(store)?;
    if let Some(existing) = get_in(&tx, store, &name)? {
        if existing.labels != *labels || existing.project.as_deref() != project {
            return Err(user(format!(
                "volume {name} already exists with other labels or another owner"
            ))
            .hint("choose another name, or remove it first with `wharf volume rm`")
            .into());
        }
        make_dir(store, &name)?;
        tx.commit()?;
        return Ok(existing);
    }
    let grave = take_removed(&tx, store, &name)?;
    tx.prepare_cached(
        "INSERT INTO volumes (name, created_at, labels, project) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        name,
        now_ns(),
        serde_json::to_string(labels)?,
        project
    ])?;
    make_dir(store, &name)?;
    let info = get_in(&tx, store, &name)?.context("the new volume row vanished")?;
    tx.commit()?;
    bury(grave);
    Ok(info)
}

fn row(store: &Store, r: &rusqlite::Row<'_>) -> rusqlite::Result<(VolumeInfo, String)> {
    let name: String = r.get(0)?;
    Ok((
        VolumeInfo {
            mountpoint: data_dir(store, &name),
            name,
            created_at: r.get(1)?,
            labels: BTreeMap::new(),
            project: r.get(3)?,
        },
        r.get(2)?,
    ))
}

fn finish((mut v, labels): (VolumeInfo, String)) -> Result<VolumeInfo> {
    v.labels = serde_json::from_str(&labels)
        .with_context(|| format!("the stored labels of volume {} are corrupt", v.name))?;
    Ok(v)
}

fn get_in(conn: &rusqlite::Connection, store: &Store, name: &str) -> Result<Option<VolumeInfo>> {
    conn.prepare_cached("SELECT name, created_at, labels, project FROM volumes WHERE name = ?1")?
        .query_row([name], |r| row(store, r))
        .optional()?
        .map(finish)
        .transpose()
}

fn no_such(name: &str) -> anyhow::Error {
    user(format!("no such volume: {name}"))
        .hint("`wharf volume ls` lists the volumes")
        .into()
}

/// One volume by name.
pub fn get(store: &Store, name: &str) -> Result<VolumeInfo> {
    get_in(store.db(), store, name)?.ok_or_else(|| no_such(name))
}

/// Every volume, by name.
pub fn list(store: &Store) -> Result<Vec<VolumeInfo>> {
    let rows: Vec<_> = store
        .db()
        .prepare_cached("SELECT name, created_at, labels, project FROM volumes ORDER BY name")?
        .query_map([], |r| row(store, r))?
        .collect::<rusqlite::Result<_>>()?;
    rows.into_iter().map(finish).collect()
}

const USERS_SQL: &str = "SELECT json_extract(v.value, '$.source'), c.id, c.name \
     FROM containers c, json_each(c.config, '$.volumes') v \
     WHERE json_extract(v.value, '$.kind') = 'named' ORDER BY c.created_at, c.id";

/// A container using a volume: (id, name).
pub type User = (String, String);

/// Volume name → the containers (any state) whose config mounts it.
pub fn users(store: &Store) -> Result<HashMap<String, Vec<User>>> {
    users_in(store.db())
}

fn users_in(conn: &rusqlite::Connection) -> Result<HashMap<String, Vec<User>>> {
    let mut out: HashMap<String, Vec<User>> = HashMap::new();
    let mut stmt = conn.prepare_cached(USERS_SQL)?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, Option<String>>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for r in rows {
        let (vol, id, name) = r?;
        if let Some(vol) = vol {
            let list = out.entry(vol).or_default();
            if !list.iter().any(|(i, _)| *i == id) {
                list.push((id, name));
            }
        }
    }
    Ok(out)
}

/// The file in `volumes/<name>/` (beside `_data`, unseen by containers) that says a removal
/// of that volume has begun. With the row gone, the directory is what is left of a removed
/// volume; with the row still there, the removal did not commit and the volume is whole.
const REMOVED_MARK: &str = "removed";

/// Debug builds only: `WHARF_TEST_VOLUME_RM_PAUSE=marked|committed` stops `volume rm` at that
/// point (after writing the mark / after committing the row's deletion) until it is killed,
/// so a test can kill it there.
fn test_pause(point: &str) {
    if cfg!(debug_assertions)
        && std::env::var("WHARF_TEST_VOLUME_RM_PAUSE").is_ok_and(|v| v == point)
    {
        eprintln!("volume rm: paused {point} (WHARF_TEST_VOLUME_RM_PAUSE)");
        loop {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// Inside the caller's write transaction: if `name` has no row and its directory carries the
/// removal mark (a removal committed, then cut short), moves the directory into `tmp/` and
/// returns where, for the caller to delete after its commit (recovery deletes it otherwise).
fn take_removed(tx: &Transaction<'_>, store: &Store, name: &str) -> Result<Option<PathBuf>> {
    let dir = store.volumes_dir().join(name);
    if !dir.join(REMOVED_MARK).exists() || get_in(tx, store, name)?.is_some() {
        return Ok(None);
    }
    let grave = store.tmp_dir().join(format!("volume-rm-{}", random_hex(8)));
    match fs::rename(&dir, &grave) {
        Ok(()) => Ok(Some(grave)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot move {} aside", dir.display())),
    }
}

/// Deletes what [`take_removed`] moved aside; a failure only leaves debris for recovery.
fn bury(grave: Option<PathBuf>) {
    if let Some(g) = grave
        && let Err(e) = fsutil::remove_tree(&g)
    {
        tracing::warn!("cannot remove {}: {e}", g.display());
    }
}

/// Removes a volume: its row, then its directory. Refused while any container (running or
/// not) mounts it, naming the containers; `-f` does not override that (as in docker), it only
/// makes a missing volume no error. Returns whether a volume was removed.
///
/// Crash-safe in this order: mark the directory ([`REMOVED_MARK`]), commit the row's
/// deletion, then move the directory into `tmp/` and delete it. Killed before the commit, the
/// volume is whole (row and data; the mark means nothing while the row exists). Killed after
/// it, the marked directory is what [`take_removed`] clears: the next creation of that name,
/// or the next `volume rm`'s sweep.
pub fn remove(store: &Store, name: &str, force: bool) -> Result<bool> {
    // The store lock serializes removals (and their sweep) and keeps recovery from running
    // while one is under way.
    let _guard = store.lock()?;
    sweep_removed(store);
    let tx = immediate(store)?;
    if get_in(&tx, store, name)?.is_none() {
        return if force { Ok(false) } else { Err(no_such(name)) };
    }
    if let Some(users) = users_in(&tx)?.remove(name).filter(|u| !u.is_empty()) {
        let names: Vec<&str> = users.iter().map(|(_, n)| n.as_str()).collect();
        return Err(user(format!(
            "volume {name} is in use by container{} {}",
            if names.len() > 1 { "s" } else { "" },
            names.join(", ")
        ))
        .hint(
            "remove the container first (`wharf rm NAME`; `wharf rm -v` also removes its \
             anonymous volumes), then the volume",
        )
        .into());
    }
    let dir = store.volumes_dir().join(name);
    match fs::write(dir.join(REMOVED_MARK), b"") {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {} // no directory: only the row
        Err(e) => return Err(e).with_context(|| format!("cannot mark {}", dir.display())),
    }
    test_pause("marked");
    tx.prepare_cached("DELETE FROM volumes WHERE name = ?1")?
        .execute([name])?;
    tx.commit()?;
    test_pause("committed");
    // The name is free now: a concurrent `ensure` may already have taken the marked directory
    // aside and made a fresh one, so the move happens in a write transaction of its own.
    let tx = immediate(store)?;
    let grave = take_removed(&tx, store, name)?;
    tx.commit()?;
    if let Some(g) = grave {
        fsutil::remove_tree(&g).with_context(|| format!("cannot remove {}", g.display()))?;
    }
    Ok(true)
}

/// Clears the directories of removals cut short after their commit (see [`remove`]). Called
/// under the store lock; failures are logged, the next sweep tries again.
fn sweep_removed(store: &Store) {
    let Ok(entries) = fs::read_dir(store.volumes_dir()) else {
        return;
    };
    for e in entries.flatten() {
        if !e.path().join(REMOVED_MARK).exists() {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        let taken = immediate(store).and_then(|tx| {
            let g = take_removed(&tx, store, &name)?;
            tx.commit()?;
            Ok(g)
        });
        match taken {
            Ok(g) => bury(g),
            Err(e) => tracing::warn!("cannot clear the removed volume {name}: {e:#}"),
        }
    }
}

/// `rm -v`: removes the anonymous volumes among `volumes` (a removed container's mounts).
/// Named volumes are kept, as docker keeps them; an anonymous volume another container mounts
/// too is kept. Returns the names removed.
pub fn remove_anonymous(store: &Store, volumes: &[Volume]) -> Vec<String> {
    let mut out = Vec::new();
    for v in volumes
        .iter()
        .filter(|v| v.kind == VolumeKind::Named && v.anonymous)
    {
        match remove(store, &v.source, true) {
            Ok(true) => out.push(v.source.clone()),
            Ok(false) => {}
            Err(e) => tracing::info!("keeping anonymous volume {}: {e:#}", v.source),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ContainerConfig;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        (dir, s)
    }

    fn add_container(s: &Store, id: &str, vols: &[(&str, bool)]) {
        s.db()
            .execute(
                "INSERT INTO images (id, created, imported_at, size) VALUES ('img', 0, 0, 0) \
                 ON CONFLICT DO NOTHING",
                [],
            )
            .unwrap();
        let cfg = ContainerConfig {
            volumes: vols
                .iter()
                .map(|(n, anon)| Volume {
                    kind: VolumeKind::Named,
                    source: n.to_string(),
                    destination: "/d".into(),
                    read_only: false,
                    anonymous: *anon,
                })
                .collect(),
            ..Default::default()
        };
        s.db()
            .execute(
                "INSERT INTO containers (id, name, image_id, image_ref, config, created_at, state) \
                 VALUES (?1, ?1, 'img', 'img', ?2, 0, 'exited')",
                params![id, serde_json::to_string(&cfg).unwrap()],
            )
            .unwrap();
    }

    #[test]
    fn names_follow_dockers_rule() {
        assert!(validate_name("data").is_ok());
        assert!(validate_name("a.b_c-d").is_ok());
        assert!(validate_name(&anonymous_name()).is_ok());
        for bad in ["", "a", "-x", ".x", "a/b", "a b", "../x", &"x".repeat(256)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ensure_is_idempotent_and_marks_anonymous() {
        let (_d, s) = store();
        let p = ensure(&s, "data", false).unwrap();
        fs::write(p.join("f"), b"x").unwrap();
        assert_eq!(ensure(&s, "data", false).unwrap(), p);
        assert!(p.join("f").exists(), "ensure emptied an existing volume");
        ensure(&s, "anon01", true).unwrap();
        let all = list(&s).unwrap();
        assert_eq!(all.len(), 2);
        assert!(all.iter().find(|v| v.name == "anon01").unwrap().anonymous());
        assert!(!all.iter().find(|v| v.name == "data").unwrap().anonymous());
    }

    #[test]
    fn create_checks_names_and_labels() {
        let (_d, s) = store();
        let l: BTreeMap<_, _> = [("a".to_string(), "1".to_string())].into();
        let v = create(&s, Some("web"), &l, None).unwrap();
        assert!(v.mountpoint.is_dir());
        assert_eq!(create(&s, Some("web"), &l, None).unwrap(), v);
        assert!(create(&s, Some("web"), &BTreeMap::new(), None).is_err());
        assert!(create(&s, Some("bad/name"), &l, None).is_err());
        let made = create(&s, None, &BTreeMap::new(), None).unwrap();
        assert_eq!(made.name.len(), 64);
    }

    #[test]
    fn remove_refuses_in_use_and_names_the_container() {
        let (_d, s) = store();
        ensure(&s, "data", false).unwrap();
        add_container(&s, "c1", &[("data", false)]);
        let e = remove(&s, "data", true).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("in use by container c1"), "{msg}");
        assert!(data_dir(&s, "data").is_dir());
        s.db().execute("DELETE FROM containers", []).unwrap();
        assert!(remove(&s, "data", false).unwrap());
        assert!(!s.volumes_dir().join("data").exists());
        assert!(get(&s, "data").is_err());
        assert!(remove(&s, "data", false).is_err());
        assert!(!remove(&s, "data", true).unwrap());
        // nothing left in tmp/
        assert_eq!(fs::read_dir(s.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn remove_anonymous_keeps_named_and_shared() {
        let (_d, s) = store();
        ensure(&s, "named1", false).unwrap();
        ensure(&s, "anon01", true).unwrap();
        ensure(&s, "anon02", true).unwrap();
        // another container mounts anon02 by name
        add_container(&s, "other", &[("anon02", false)]);
        let vols: Vec<Volume> = [("named1", false), ("anon01", true), ("anon02", true)]
            .iter()
            .map(|(n, a)| Volume {
                kind: VolumeKind::Named,
                source: n.to_string(),
                destination: "/d".into(),
                read_only: false,
                anonymous: *a,
            })
            .collect();
        assert_eq!(remove_anonymous(&s, &vols), ["anon01"]);
        let left: Vec<String> = list(&s).unwrap().into_iter().map(|v| v.name).collect();
        assert_eq!(left, ["anon02", "named1"]);
    }
}
