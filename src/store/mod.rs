//! The state root: its layout, its lock, its metadata database, and recovery at open.
//!
//! ```text
//! <root>/wharf.lock           flock: held by multi-step changes to the layout (import commit,
//!                             removal of layers, debris cleanup, apply)
//! <root>/wharf.db             SQLite (WAL): images, tags, containers, the journal
//! <root>/layers/<diff-id>/    one unpacked layer, read-only lower dir for overlay
//! <root>/blobs/sha256/<hex>   image config JSON
//! <root>/containers/<id>/     a container's upper/, work/, logs
//! <root>/volumes/<name>/_data
//! <root>/tmp/                 staging; what is here and not in use at open is crash debris
//! ```
//!
//! Readers never take the lock: SQLite in WAL mode gives them a consistent snapshot while a
//! writer works. Single-row updates (a monitor recording an exit) rely on SQLite's own
//! serialization; the lock is for changes that span the filesystem and the database.

pub mod fsutil;
mod schema;

use std::cell::Cell;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::fcntl::{Flock, FlockArg};
use rusqlite::Connection;

use crate::error::user;

/// The default state root.
pub const DEFAULT_ROOT: &str = "/var/lib/wharf";

/// An open state root.
pub struct Store {
    root: PathBuf,
    db: Connection,
    lock_file: File,
    lock: Cell<Option<Flock<File>>>,
    lock_depth: Cell<u32>,
}

/// Holds the store lock until dropped. Re-entrant within one [`Store`].
pub struct LockGuard<'a> {
    store: &'a Store,
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        let depth = self.store.lock_depth.get() - 1;
        self.store.lock_depth.set(depth);
        if depth == 0 {
            // The section ended whole: clear the mark while still holding the lock (after
            // the unlock, the next holder's mark could be cleared by mistake).
            let _ = self.store.lock_file.set_len(0);
            // Dropping the Flock unlocks it.
            drop(self.store.lock.take());
        }
    }
}

/// A staging directory under `tmp/`. Its owner holds an flock on `tmp/<name>.lock`, so a
/// concurrent `Store::open` can tell live staging from debris. Removed on drop unless its
/// content was moved out.
pub struct Staging {
    path: PathBuf,
    lock_path: PathBuf,
    _lock: Flock<File>,
}

impl Staging {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fsutil::remove_tree(&self.path);
        let _ = fs::remove_file(&self.lock_path);
    }
}

impl Store {
    /// Opens (creating if needed) the state root at `root`, migrates its database, and
    /// removes debris a crash left when no other wharf is working on it.
    pub fn open(root: &Path) -> Result<Store> {
        let root = if root.is_absolute() {
            root.to_path_buf()
        } else {
            std::env::current_dir()
                .context("cannot read the current directory")?
                .join(root)
        };
        let mut builder = fs::DirBuilder::new();
        // Private, as docker's /var/lib/docker (0710): the database holds env values and
        // env_file secrets, the logs what containers print. Nothing of a container needs
        // to traverse the root: overlay reaches its layers with the mounter's credentials,
        // volumes and bind mounts are reached through their mounts.
        builder.recursive(true).mode(0o700);
        for sub in ["", "layers", "blobs/sha256", "containers", "volumes", "tmp"] {
            let dir = root.join(sub);
            builder.create(&dir).map_err(|e| {
                anyhow::Error::new(
                    user(format!(
                        "cannot create the state root directory {}: {e}",
                        dir.display()
                    ))
                    .hint("run wharf as root, or point --root (or WHARF_ROOT) at a writable directory"),
                )
            })?;
        }
        tighten(&root, 0o700)?;
        let lock_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(root.join("wharf.lock"))
            .with_context(|| format!("cannot open {}", root.join("wharf.lock").display()))?;
        let db = open_db(&root.join("wharf.db"))?;
        let store = Store {
            root,
            db,
            lock_file,
            lock: Cell::new(None),
            lock_depth: Cell::new(0),
        };
        store.recover()?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn db(&self) -> &Connection {
        &self.db
    }

    pub fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    pub fn layer_dir(&self, diff_id: &str) -> PathBuf {
        self.root.join("layers").join(diff_id)
    }

    pub fn blob_path(&self, hex: &str) -> PathBuf {
        self.root.join("blobs/sha256").join(hex)
    }

    pub fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// The run dir: `<root>/run/`, the overlay mount point of every container of this root.
    /// Each container mounts its overlay (and, for `--rm`, the tmpfs of its write layer) there
    /// inside its own private mount namespace, then pivots into it, so the host never sees a
    /// mount there and containers never see each other's. It holds no state and nothing is
    /// created in it per container (no dir churn on the hot path). Living in the state root,
    /// it never collides between roots (tests run many at once) and leaves nothing in /run.
    /// wharf never removes it: a container between its overlay mount and pivot_root would
    /// lose its mount.
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }

    /// Creates the container's directory (0700: its logs and health are private) if it does
    /// not exist, and returns it.
    pub fn make_container_dir(&self, id: &str) -> Result<PathBuf> {
        let dir = self.container_dir(id);
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(dir),
            Err(e) => Err(e).with_context(|| format!("cannot create {}", dir.display())),
        }
    }

    /// Creates the run dir (`<root>/run`, the overlay mount point, 0700) if needed.
    pub fn make_run_dir(&self) -> Result<PathBuf> {
        let dir = self.run_dir();
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(dir),
            Err(e) => Err(e).with_context(|| format!("cannot create {}", dir.display())),
        }
    }

    pub fn volumes_dir(&self) -> PathBuf {
        self.root.join("volumes")
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Marks the lock file while a locked section runs (its size is 1, else 0): a process
    /// killed inside one leaves the mark, which tells the next `open` to look for debris.
    fn mark_locked(&self, flock: Flock<File>) -> Result<LockGuard<'_>> {
        self.lock_file
            .set_len(1)
            .context("cannot mark the state root's lock file")?;
        self.lock.set(Some(flock));
        self.lock_depth.set(1);
        Ok(LockGuard { store: self })
    }

    /// Takes the store lock, waiting for another wharf process to release it.
    pub fn lock(&self) -> Result<LockGuard<'_>> {
        if self.lock_depth.get() == 0 {
            let file = self
                .lock_file
                .try_clone()
                .context("cannot duplicate the lock file descriptor")?;
            let flock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(l) => l,
                Err((file, nix::errno::Errno::EWOULDBLOCK)) => {
                    tracing::info!("waiting for another wharf process to release the store lock");
                    Flock::lock(file, FlockArg::LockExclusive)
                        .map_err(|(_, e)| e)
                        .context("cannot lock the state root")?
                }
                Err((_, e)) => return Err(e).context("cannot lock the state root"),
            };
            return self.mark_locked(flock);
        }
        self.lock_depth.set(self.lock_depth.get() + 1);
        Ok(LockGuard { store: self })
    }

    /// An flock on `<root>/locks/<name>.lock`, held until the returned value is dropped; waits
    /// (logging that it does) while another process holds it. It serializes work on one
    /// thing, such as the applies of one project, without the store lock: an apply holds
    /// its project's lock throughout, and the store lock only while it plans and changes the
    /// image store, so stopping one project's containers never blocks another's apply.
    pub fn named_lock(&self, name: &str) -> Result<Flock<File>> {
        let dir = self.root.join("locks");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(format!("{name}.lock"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => Ok(l),
            Err((file, nix::errno::Errno::EWOULDBLOCK)) => {
                tracing::info!("waiting for another wharf process to release the lock {name}");
                Flock::lock(file, FlockArg::LockExclusive)
                    .map_err(|(_, e)| e)
                    .with_context(|| format!("cannot lock {}", path.display()))
            }
            Err((_, e)) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
        }
    }

    /// Takes the lock only if nobody holds it. `None` when another process does.
    fn try_lock(&self) -> Result<Option<LockGuard<'_>>> {
        if self.lock_depth.get() > 0 {
            return self.lock().map(Some);
        }
        let file = self
            .lock_file
            .try_clone()
            .context("cannot duplicate the lock file descriptor")?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => self.mark_locked(l).map(Some),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(e).context("cannot lock the state root"),
        }
    }

    /// Makes a new staging directory under `tmp/`, named after `kind`.
    pub fn staging(&self, kind: &str) -> Result<Staging> {
        let _guard = self.lock()?;
        let name = format!("{kind}-{}", random_hex(8));
        let path = self.tmp_dir().join(&name);
        let lock_path = self.tmp_dir().join(format!("{name}.lock"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&lock_path)
            .with_context(|| format!("cannot create {}", lock_path.display()))?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| e)
            .with_context(|| format!("cannot lock {}", lock_path.display()))?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Staging {
            path,
            lock_path,
            _lock: lock,
        })
    }

    /// Whether a crash may have left debris: a staging entry in `tmp/` (a live one, or one
    /// whose owner died), or the lock file's mark (a process died inside a locked section:
    /// an import between moving its layer in and its commit, a removal between its rows and
    /// its files). Cheap: one fstat and one read of an empty directory, so that the hot path
    /// (`run`) does not scan `layers/` and `blobs/` on every open.
    fn may_hold_debris(&self) -> Result<bool> {
        let marked = self
            .lock_file
            .metadata()
            .context("cannot stat the state root's lock file")?
            .len()
            > 0;
        if marked {
            return Ok(true);
        }
        let tmp = self.tmp_dir();
        let mut entries =
            fs::read_dir(&tmp).with_context(|| format!("cannot read {}", tmp.display()))?;
        Ok(entries.next().is_some())
    }

    /// Removes what a crash left: staging dirs nobody holds, and layer dirs and config
    /// blobs no image records (a crash between moving a layer in and committing its image,
    /// or between deleting an image's rows and its files).
    fn recover(&self) -> Result<()> {
        if !self.may_hold_debris()? {
            return Ok(());
        }
        let Some(_guard) = self.try_lock()? else {
            return Ok(()); // another wharf is working; it, or the next one, will clean up
        };
        let tmp = self.tmp_dir();
        let entries =
            fs::read_dir(&tmp).with_context(|| format!("cannot read {}", tmp.display()))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".lock") {
                continue;
            }
            let lock_path = tmp.join(format!("{name}.lock"));
            let held = match OpenOptions::new().write(true).open(&lock_path) {
                Ok(f) => Flock::lock(f, FlockArg::LockExclusiveNonblock).is_err(),
                Err(_) => false,
            };
            if !held {
                tracing::info!("removing debris {}", entry.path().display());
                fsutil::remove_tree(&entry.path())
                    .with_context(|| format!("cannot remove debris {}", entry.path().display()))?;
                let _ = fs::remove_file(&lock_path);
            }
        }
        // Lock files whose staging dir is gone.
        for entry in fs::read_dir(&tmp)?.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(stem) = name.strip_suffix(".lock")
                && !tmp.join(stem).exists()
                && let Ok(f) = OpenOptions::new().write(true).open(entry.path())
                && Flock::lock(f, FlockArg::LockExclusiveNonblock).is_ok()
            {
                let _ = fs::remove_file(entry.path());
            }
        }
        self.remove_unrecorded_layers()?;
        self.remove_unrecorded_blobs()
    }

    /// Config blobs no image records: written by an import killed before its commit.
    fn remove_unrecorded_blobs(&self) -> Result<()> {
        let dir = self.root.join("blobs/sha256");
        let mut stmt = self
            .db
            .prepare_cached("SELECT 1 FROM images WHERE id = ?1")?;
        for entry in fs::read_dir(&dir)?.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy().into_owned();
            if !stmt.exists([&name])? {
                tracing::info!("removing unrecorded blob {name}");
                fs::remove_file(entry.path())
                    .with_context(|| format!("cannot remove {}", entry.path().display()))?;
            }
        }
        Ok(())
    }

    fn remove_unrecorded_layers(&self) -> Result<()> {
        let dir = self.layers_dir();
        let mut stmt = self
            .db
            .prepare_cached("SELECT 1 FROM layers WHERE diff_id = ?1")?;
        for entry in fs::read_dir(&dir)?.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy().into_owned();
            if !stmt.exists([&name])? {
                tracing::info!("removing unrecorded layer {name}");
                fsutil::remove_tree(&entry.path())
                    .with_context(|| format!("cannot remove {}", entry.path().display()))?;
            }
        }
        Ok(())
    }
}

/// Pages in the WAL after which a commit checkpoints it (see `open_db`).
const WAL_AUTOCHECKPOINT: u32 = 200;

/// Modes with a bit outside these are tightened at open: the root may be 0710 (docker's),
/// never readable or writable by group or others.
const ROOT_MODE_ALLOWED: u32 = 0o710;

/// Makes the state root private when an older wharf (0711) or a user left it open. One stat
/// on the hot path; a chmod only when the mode is wrong.
fn tighten(root: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::metadata(root).with_context(|| format!("cannot stat {}", root.display()))?;
    let current = meta.permissions().mode() & 0o7777;
    if current & !ROOT_MODE_ALLOWED != 0 {
        tracing::info!(
            "tightening the state root {} from {current:o} to {mode:o}",
            root.display()
        );
        fs::set_permissions(root, fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot make the state root {} private", root.display()))?;
    }
    Ok(())
}

/// The database and its WAL and shared-memory files are 0600. SQLite creates `-wal` and
/// `-shm` with the database file's mode, so the database is created 0600 before SQLite opens
/// it; files an older wharf made 0644 are tightened.
fn private_db_files(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
    {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let p = PathBuf::from(p);
        let Ok(meta) = fs::metadata(&p) else { continue };
        if meta.permissions().mode() & 0o077 != 0 {
            fs::set_permissions(&p, fs::Permissions::from_mode(0o600))
                .with_context(|| format!("cannot make {} private", p.display()))?;
        }
    }
    Ok(())
}

fn open_db(path: &Path) -> Result<Connection> {
    private_db_files(path)?;
    let mut db =
        Connection::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    db.busy_timeout(Duration::from_secs(30))?;
    // WAL: readers never block the writer, nor it them. NORMAL: durable across a crash of
    // wharf; a power loss may lose the last transaction but never corrupts the database.
    db.pragma_update(None, "journal_mode", "WAL")
        .context("cannot switch the database to WAL mode")?;
    db.pragma_update(None, "synchronous", "NORMAL")?;
    db.pragma_update(None, "foreign_keys", "ON")?;
    // The first connection to open the database rebuilds the WAL index by reading every
    // frame since the last checkpoint, and every wharf command is a first connection: with
    // SQLite's default of checkpointing at 1000 pages that is ~1.3 ms on an average open
    // (measured here, 613 frames). 200 pages bound it to ~0.4 ms; a checkpoint (two fsyncs,
    // 3-8 ms here) then comes every ~14 runs instead of every ~70.
    db.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT)?;
    migrate(&mut db).with_context(|| format!("cannot migrate {}", path.display()))?;
    Ok(db)
}

fn migrate(db: &mut Connection) -> Result<()> {
    let version: u32 = db.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let latest = schema::MIGRATIONS.len() as u32;
    if version == latest {
        return Ok(());
    }
    if version > latest {
        bail!(
            user(format!(
                "the state database has schema version {version}, newer than this wharf knows ({latest})"
            ))
            .hint("use the newer wharf that wrote it, or another --root")
        );
    }
    // IMMEDIATE: two processes opening a fresh store at once migrate one after the other.
    let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: u32 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql)
            .with_context(|| format!("migration {} failed", i + 1))?;
    }
    tx.pragma_update(None, "user_version", latest)?;
    tx.commit()?;
    Ok(())
}

/// `n` random bytes as hex.
pub fn random_hex(n: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// Now, in nanoseconds since the Unix epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_creates_layout_and_migrates_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        for sub in ["layers", "blobs/sha256", "containers", "volumes", "tmp"] {
            assert!(dir.path().join(sub).is_dir(), "{sub}");
        }
        let v: u32 = s
            .db()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v as usize, schema::MIGRATIONS.len());
        drop(s);
        Store::open(dir.path()).unwrap();
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.db().pragma_update(None, "user_version", 999).unwrap();
        drop(s);
        let err = Store::open(dir.path()).err().unwrap();
        assert!(format!("{err:#}").contains("newer than this wharf knows"));
    }

    #[test]
    fn debris_is_removed_but_live_staging_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let live = s.staging("import").unwrap();
        fs::write(live.path().join("f"), b"x").unwrap();
        // debris: a staging dir with no lock holder, and an unrecorded layer
        fs::create_dir_all(dir.path().join("tmp/import-dead/sub")).unwrap();
        fs::write(dir.path().join("tmp/import-dead.lock"), b"").unwrap();
        fs::create_dir_all(dir.path().join("layers/abc")).unwrap();
        fs::write(dir.path().join("blobs/sha256/abc"), b"{}").unwrap();
        let s2 = Store::open(dir.path()).unwrap();
        assert!(live.path().join("f").exists(), "live staging removed");
        assert!(!dir.path().join("tmp/import-dead").exists());
        assert!(!dir.path().join("tmp/import-dead.lock").exists());
        assert!(!dir.path().join("layers/abc").exists());
        assert!(!dir.path().join("blobs/sha256/abc").exists());
        drop(live);
        drop(s2);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        drop(s);
    }

    #[test]
    fn a_locked_section_cut_short_is_recovered_and_a_clean_one_is_not_scanned() {
        let dir = tempfile::tempdir().unwrap();
        let len = || fs::metadata(dir.path().join("wharf.lock")).unwrap().len();
        let s = Store::open(dir.path()).unwrap();
        // A section that ends clears its mark.
        drop(s.lock().unwrap());
        assert_eq!(len(), 0);
        // Without the mark and with tmp/ empty, open does not scan layers/ (the hot path).
        fs::create_dir_all(dir.path().join("layers/abc")).unwrap();
        drop(Store::open(dir.path()).unwrap());
        assert!(dir.path().join("layers/abc").exists());
        // A process killed inside a section: its unlock never ran (the flock goes with it).
        let guard = s.lock().unwrap();
        assert_eq!(len(), 1);
        fs::write(dir.path().join("blobs/sha256/abc"), b"{}").unwrap();
        std::mem::forget(guard);
        drop(s);
        let s2 = Store::open(dir.path()).unwrap();
        assert!(!dir.path().join("layers/abc").exists());
        assert!(!dir.path().join("blobs/sha256/abc").exists());
        assert_eq!(len(), 0, "recovery clears the mark");
        drop(s2);
    }

    #[test]
    fn lock_is_reentrant_and_exclusive_across_stores() {
        let dir = tempfile::tempdir().unwrap();
        let a = Store::open(dir.path()).unwrap();
        let b = Store::open(dir.path()).unwrap();
        let g1 = a.lock().unwrap();
        let g2 = a.lock().unwrap();
        assert!(b.try_lock().unwrap().is_none());
        drop(g2);
        assert!(b.try_lock().unwrap().is_none());
        drop(g1);
        assert!(b.try_lock().unwrap().is_some());
    }
}
