//! What the store has, for the planner: tags, sources, containers (with liveness) and volumes;
//! and the digests of image sources, cached by file identity.
//!
//! Observing is cheap by design (a no-op apply of 200 containers is mostly this): four
//! queries, one JSON parse per container, and one `/proc/<pid>/stat` read per running
//! container (liveness). Nothing else touches a container.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result};
use rusqlite::{OptionalExtension, params};
use sha2::{Digest, Sha256};

use super::{ContainerSpec, Observed, ObservedContainer, ObservedState, ObservedVolume};
use crate::container;
use crate::error::user;
use crate::model::ContainerState;
use crate::store::{Store, now_ns};

/// Reads the store, writing nothing: a run whose monitor died reads as exited through the
/// record's read view (the liveness rule), so a container killed by hand is seen as exited
/// by `diff` and `--dry-run` too; `apply` recovers such runs before it observes.
pub fn observe(store: &Store) -> Result<Observed> {
    let db = store.db();
    let tags = db
        .prepare_cached("SELECT repo, tag, image_id FROM tags")?
        .query_map([], |r| {
            Ok((
                format!("{}:{}", r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                r.get::<_, String>(2)?,
            ))
        })?
        .collect::<rusqlite::Result<BTreeMap<_, _>>>()?;
    let sources = db
        .prepare_cached("SELECT digest, image_id FROM sources")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<BTreeMap<String, String>>>()?;
    let volumes = db
        .prepare_cached("SELECT name, project FROM volumes ORDER BY name")?
        .query_map([], |r| {
            Ok(ObservedVolume {
                name: r.get(0)?,
                project: r.get(1)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let containers = container::list(store)?
        .into_iter()
        .map(|rec| {
            // A live monitor carries a run (starting, or restarting per its policy): it,
            // not apply, starts the container again.
            let state = if rec.is_up() {
                ObservedState::Running
            } else {
                match rec.state {
                    ContainerState::Created => ObservedState::Created,
                    ContainerState::Removing | ContainerState::Dead => ObservedState::Dead,
                    _ => ObservedState::Exited,
                }
            };
            ObservedContainer {
                ports: rec.config.net.ports,
                spec: rec
                    .spec
                    .as_deref()
                    .and_then(ContainerSpec::from_stored_json),
                id: rec.id,
                name: rec.name,
                project: rec.project,
                image_ref: rec.image_ref,
                image_id: rec.image_id,
                spec_hash: rec.spec_hash,
                state,
            }
        })
        .collect();
    let networks = crate::network::list(store)?
        .into_iter()
        .map(|n| (n.name, (n.project, n.subnet.to_string())))
        .collect();
    Ok(Observed {
        tags,
        sources,
        containers,
        volumes,
        image_configs: BTreeMap::new(),
        networks,
        pulled: BTreeMap::new(),
    })
}

/// How long after its last change a file's digest may be cached. A file changed within the
/// same clock tick as it was hashed could change again without moving its times (git's
/// "racily clean" problem); such a file is hashed again next time instead.
const RACY_NS: i64 = 2_000_000_000;

fn stat_key(m: &std::fs::Metadata) -> (i64, i64, i64, i64, i64) {
    (
        m.dev() as i64,
        m.ino() as i64,
        m.size() as i64,
        m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        m.ctime() * 1_000_000_000 + m.ctime_nsec(),
    )
}

/// The sha256 hex of an image source, from the `source_digests` cache when the file's
/// device, inode, size, mtime and ctime are exactly as recorded; hashed (and cached)
/// otherwise. ctime cannot be set by a user, and any write moves it, so a cached digest is
/// trusted only for the very file it was computed from.
pub fn source_digest(store: &Store, path: &Path) -> Result<String> {
    source_digest_with(store, path, RACY_NS)
}

fn source_digest_with(store: &Store, path: &Path, racy_ns: i64) -> Result<String> {
    let missing = |e: std::io::Error| {
        anyhow::Error::new(
            user(format!(
                "cannot read the image source {}: {e}",
                path.display()
            ))
            .hint("make the tarball (see the manifest's comments), or fix `source`"),
        )
    };
    let meta = std::fs::metadata(path).map_err(missing)?;
    let key = stat_key(&meta);
    let path_s = path.to_string_lossy();
    let db = store.db();
    let cached: Option<String> = db
        .prepare_cached(
            "SELECT digest FROM source_digests WHERE path = ?1 AND dev = ?2 AND ino = ?3 \
             AND size = ?4 AND mtime_ns = ?5 AND ctime_ns = ?6",
        )?
        .query_row(params![path_s, key.0, key.1, key.2, key.3, key.4], |r| {
            r.get(0)
        })
        .optional()?;
    if let Some(d) = cached {
        return Ok(d);
    }
    let mut f = std::fs::File::open(path).map_err(missing)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let digest = hex::encode(h.finalize());
    // Cache only if the file did not change while it was read, and not too recently.
    let after = f.metadata().map(|m| stat_key(&m)).ok();
    if after == Some(key) && now_ns() - key.4.max(key.3) > racy_ns {
        db.prepare_cached(
            "INSERT OR REPLACE INTO source_digests (path, dev, ino, size, mtime_ns, ctime_ns, digest) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![path_s, key.0, key.1, key.2, key.3, key.4, digest])?;
    }
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(b: &[u8]) -> String {
        hex::encode(Sha256::digest(b))
    }

    #[test]
    fn source_digests_are_cached_by_file_identity_and_rehashed_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("root")).unwrap();
        let f = dir.path().join("src.tar");
        std::fs::write(&f, b"one").unwrap();
        let rows = |s: &Store| -> i64 {
            s.db()
                .query_row("SELECT count(*) FROM source_digests", [], |r| r.get(0))
                .unwrap()
        };
        // Just written: within the racy window, hashed but not cached.
        assert_eq!(source_digest(&store, &f).unwrap(), sha(b"one"));
        assert_eq!(rows(&store), 0);
        // Outside the window: cached, and the cache is what answers next time.
        assert_eq!(source_digest_with(&store, &f, 0).unwrap(), sha(b"one"));
        assert_eq!(rows(&store), 1);
        store
            .db()
            .execute("UPDATE source_digests SET digest = 'cached'", [])
            .unwrap();
        assert_eq!(source_digest_with(&store, &f, 0).unwrap(), "cached");
        // Any write moves ctime (and here size): hashed again, never the stale digest.
        std::fs::write(&f, b"two!").unwrap();
        assert_eq!(source_digest_with(&store, &f, 0).unwrap(), sha(b"two!"));
        // A missing source is the user's to fix.
        let err = source_digest(&store, &dir.path().join("gone.tar")).unwrap_err();
        assert!(crate::error::find_user_error(&err).is_some(), "{err:#}");
    }
}
