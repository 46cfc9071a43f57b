//! Images: import, references and tags, configs, inspection, removal and layer GC.
//!
//! An image is a config blob (`blobs/sha256/<id>`) naming its layers by diff id; a layer is an
//! unpacked directory (`layers/<diff-id>`) shared by every image that lists it. Images are
//! immutable: nothing changes a layer once it is recorded, and containers write to their own
//! upper dirs.

pub mod archive;
pub mod auth;
pub mod commit;
pub mod config;
pub mod export;
pub mod import;
pub mod oci;
pub mod pull;
pub mod push;
pub mod unpack;

use std::path::PathBuf;

use anyhow::{Context, Result};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use crate::error::user;
use crate::reference::Reference;
use crate::store::{Store, fsutil, now_ns};
use config::ImageConfig;

/// One image, with everything `images` and `inspect` show.
#[derive(Debug, Clone, Serialize)]
pub struct ImageInfo {
    pub id: String,
    pub tags: Vec<String>,
    /// The config's `created`, ns since the epoch.
    pub created: i64,
    pub imported_at: i64,
    /// Bytes of file data in its layers.
    pub size: u64,
    pub comment: Option<String>,
    pub layers: Vec<String>,
    /// Containers (any state) created from it.
    pub containers: u64,
}

fn not_found(input: &str) -> anyhow::Error {
    user(format!("no such image: {input}"))
        .hint("`wharf images` lists the images; `wharf import FILE NAME:TAG` adds one")
        .into()
}

/// Resolves a user's reference (name[:tag], name@sha256:…, an id or a unique id prefix) to an
/// image id.
pub fn resolve(store: &Store, input: &str) -> Result<String> {
    let db = store.db();
    let parsed = Reference::parse(input);
    match &parsed {
        Ok(Reference::Tag { repo, tag }) => {
            let id: Option<String> = db
                .prepare_cached("SELECT image_id FROM tags WHERE repo = ?1 AND tag = ?2")?
                .query_row(params![repo, tag], |r| r.get(0))
                .optional()?;
            if let Some(id) = id {
                return Ok(id);
            }
        }
        Ok(Reference::Digest { repo, hex }) => {
            // A manifest digest the image was pulled or loaded by, else an image id.
            let id: Option<String> = db
                .prepare_cached(
                    "SELECT image_id FROM repo_digests WHERE repo = ?1 AND digest = ?2",
                )?
                .query_row(params![repo, format!("sha256:{hex}")], |r| r.get(0))
                .optional()?;
            if let Some(id) = id {
                return Ok(id);
            }
            let found: bool = db
                .prepare_cached("SELECT 1 FROM images WHERE id = ?1")?
                .exists([hex])?;
            return if found {
                Ok(hex.clone())
            } else {
                Err(not_found(input))
            };
        }
        Ok(Reference::Id(hex)) => {
            let found: bool = db
                .prepare_cached("SELECT 1 FROM images WHERE id = ?1")?
                .exists([hex])?;
            return if found {
                Ok(hex.clone())
            } else {
                Err(not_found(input))
            };
        }
        Err(_) => {}
    }
    if let Some(prefix) = Reference::id_candidate(input) {
        let mut stmt =
            db.prepare_cached("SELECT id FROM images WHERE substr(id, 1, ?2) = ?1 LIMIT 2")?;
        let ids: Vec<String> = stmt
            .query_map(params![prefix, prefix.len() as i64], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        match ids.len() {
            1 => return Ok(ids.into_iter().next().unwrap_or_default()),
            0 => {}
            _ => {
                return Err(user(format!(
                    "the id prefix {prefix} matches more than one image"
                ))
                .hint("give more digits of the id")
                .into());
            }
        }
    }
    match parsed {
        Err(e) => Err(e.into()),
        Ok(_) => Err(not_found(input)),
    }
}

/// The config blob of an image.
pub fn load_config(store: &Store, id: &str) -> Result<ImageConfig> {
    let path = store.blob_path(id);
    let bytes = std::fs::read(&path)
        .with_context(|| format!("cannot read image config {}", path.display()))?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("image config {} is not valid JSON", path.display()))
}

/// The layer directories of an image, top layer first (overlay's `lowerdir` order).
pub fn layer_dirs(store: &Store, id: &str) -> Result<Vec<PathBuf>> {
    let mut stmt = store.db().prepare_cached(
        "SELECT diff_id FROM image_layers WHERE image_id = ?1 ORDER BY position DESC",
    )?;
    let dirs = stmt
        .query_map([id], |r| r.get::<_, String>(0))?
        .map(|d| d.map(|d| store.layer_dir(&d)))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(dirs)
}

/// A layer of a new image: already in the store, or unpacked in staging.
pub struct NewLayer {
    pub diff_id: String,
    pub size: u64,
    pub tar_size: u64,
    pub entries: u64,
    /// The staging dir and the unpacked layer in it; None when the store holds the layer.
    pub staged: Option<(crate::store::Staging, PathBuf)>,
}

/// An image to record: its config blob (the image id is its sha256) and its layers, bottom
/// first.
pub struct NewImage<'a> {
    pub config: &'a [u8],
    pub created_ns: i64,
    pub comment: Option<String>,
    pub layers: Vec<NewLayer>,
    pub tags: Vec<(String, String)>,
    /// The digest of the source file (import), for apply's "imported already".
    pub source_digest: Option<String>,
    /// (repository, manifest digest "sha256:…", manifest bytes): where it was pulled from.
    pub repo_digest: Option<(String, String, Vec<u8>)>,
}

/// What [`commit_image`] did.
pub struct Committed {
    pub id: String,
    /// Per layer: the store had it already (the staged copy was thrown away).
    pub reused: Vec<bool>,
}

/// `created` of a config (RFC 3339) in ns since the epoch; now when missing or unreadable.
pub fn created_ns(created: Option<&str>) -> i64 {
    created
        .and_then(|c| humantime::parse_rfc3339(c).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or_else(now_ns, |d| d.as_nanos() as i64)
}

/// Records an image under the store lock: staged layers are moved into `layers/` (after a
/// syncfs: files before rows), the config blob is written, and one transaction records the
/// layers, the image, its layer list, tags, source and repository digest. A crash before the
/// commit leaves only unrecorded dirs and blobs, which `Store::open` removes.
pub fn commit_image(store: &Store, img: NewImage<'_>) -> Result<Committed> {
    use sha2::Digest;
    let id = hex::encode(sha2::Sha256::digest(img.config));
    let _guard = store.lock()?;
    let db = store.db();
    let mut reused = Vec::with_capacity(img.layers.len());
    let mut synced = false;
    let mut moved = std::collections::HashSet::new();
    for l in &img.layers {
        let have = moved.contains(&l.diff_id)
            || db
                .prepare_cached("SELECT 1 FROM layers WHERE diff_id = ?1")?
                .exists([&l.diff_id])?;
        let dest = store.layer_dir(&l.diff_id);
        match &l.staged {
            Some((_, dir)) if !have => {
                if !synced {
                    import::sync_fs(dir)?;
                    synced = true;
                }
                fsutil::remove_tree(&dest).ok();
                std::fs::rename(dir, &dest)
                    .with_context(|| format!("cannot move the layer to {}", dest.display()))?;
                moved.insert(l.diff_id.clone());
                reused.push(false);
            }
            None if !have => {
                anyhow::bail!("the layer {} is neither staged nor in the store", l.diff_id)
            }
            _ => reused.push(true),
        }
    }
    if !moved.is_empty() {
        fsutil::sync_dir(&store.layers_dir())?;
    }
    let blob_path = store.blob_path(&id);
    if !blob_path.exists() {
        fsutil::write_atomic(&blob_path, img.config, 0o644)?;
    }
    let now = now_ns();
    let size: u64 = img.layers.iter().map(|l| l.size).sum();
    let tx = db.unchecked_transaction()?;
    tx.execute(
        "INSERT OR IGNORE INTO images (id, created, imported_at, size, comment) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, img.created_ns, now, size as i64, img.comment],
    )?;
    for (pos, l) in img.layers.iter().enumerate() {
        tx.execute(
            "INSERT OR IGNORE INTO layers (diff_id, size, tar_size, entries, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![l.diff_id, l.size as i64, l.tar_size as i64, l.entries as i64, now],
        )?;
        tx.execute(
            "INSERT OR IGNORE INTO image_layers (image_id, position, diff_id) VALUES (?1, ?2, ?3)",
            params![id, pos as i64, l.diff_id],
        )?;
    }
    if let Some(d) = &img.source_digest {
        tx.execute(
            "INSERT OR REPLACE INTO sources (digest, image_id, created_at) VALUES (?1, ?2, ?3)",
            params![d, id, now],
        )?;
    }
    for (repo, tag) in &img.tags {
        tx.execute(
            "INSERT OR REPLACE INTO tags (repo, tag, image_id, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![repo, tag, id, now],
        )?;
    }
    if let Some((repo, digest, manifest)) = &img.repo_digest {
        tx.execute(
            "INSERT OR REPLACE INTO repo_digests (repo, digest, image_id, manifest, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![repo, digest, id, manifest, now],
        )?;
    }
    tx.commit().context("cannot record the image")?;
    Ok(Committed { id, reused })
}

/// The manifest digests images were pulled or loaded by: image id → (repository, digest).
pub fn repo_digests(
    store: &Store,
) -> Result<std::collections::HashMap<String, Vec<(String, String)>>> {
    let mut out: std::collections::HashMap<String, Vec<(String, String)>> = Default::default();
    let mut stmt = store
        .db()
        .prepare_cached("SELECT image_id, repo, digest FROM repo_digests ORDER BY created_at")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (id, repo, d) = row?;
        out.entry(id).or_default().push((repo, d));
    }
    Ok(out)
}

/// Every image, newest first.
pub fn list(store: &Store) -> Result<Vec<ImageInfo>> {
    let db = store.db();
    let mut stmt = db.prepare_cached(
        "SELECT i.id, i.created, i.imported_at, i.size, i.comment,
                (SELECT group_concat(repo || ':' || tag, char(10)) FROM
                    (SELECT repo, tag FROM tags t WHERE t.image_id = i.id ORDER BY repo, tag)),
                (SELECT group_concat(diff_id, char(10)) FROM
                    (SELECT diff_id FROM image_layers l WHERE l.image_id = i.id ORDER BY position)),
                (SELECT count(*) FROM containers c WHERE c.image_id = i.id)
         FROM images i ORDER BY i.created DESC, i.imported_at DESC",
    )?;
    let split = |s: Option<String>| -> Vec<String> {
        s.map(|s| s.split('\n').map(str::to_string).collect())
            .unwrap_or_default()
    };
    let rows = stmt.query_map([], |r| {
        Ok(ImageInfo {
            id: r.get(0)?,
            created: r.get(1)?,
            imported_at: r.get(2)?,
            size: r.get::<_, i64>(3)? as u64,
            comment: r.get(4)?,
            tags: split(r.get(5)?),
            layers: split(r.get(6)?),
            containers: r.get::<_, i64>(7)? as u64,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// One image by reference.
pub fn info(store: &Store, input: &str) -> Result<ImageInfo> {
    let id = resolve(store, input)?;
    list(store)?
        .into_iter()
        .find(|i| i.id == id)
        .ok_or_else(|| not_found(input))
}

/// `wharf tag SOURCE TARGET`: points the tag TARGET at the image SOURCE resolves to.
pub fn tag(store: &Store, source: &str, target: &str) -> Result<String> {
    let id = resolve(store, source)?;
    let Reference::Tag { repo, tag } = Reference::parse_named(target)? else {
        return Err(user(format!("{target:?} is not a name:tag"))
            .hint("a tag target is name[:tag], e.g. app:1.1")
            .into());
    };
    store.db().execute(
        "INSERT OR REPLACE INTO tags (repo, tag, image_id, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![repo, tag, id, now_ns()],
    )?;
    Ok(id)
}

/// What `rmi` did, in docker's words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Removed {
    Untagged(String),
    Deleted(String),
}

/// `wharf rmi`: removes a tag, and the image once no tag and no container holds it.
/// By id, an image with several tags needs `force`; an image a container uses is never
/// deleted (its tags go with `force`).
pub fn remove(store: &Store, input: &str, force: bool) -> Result<Vec<Removed>> {
    let _guard = store.lock()?;
    let id = resolve(store, input)?;
    let img = info(store, &id)?;
    let by_tag = match Reference::parse(input) {
        Ok(Reference::Tag { repo, tag }) => img
            .tags
            .iter()
            .find(|t| **t == format!("{repo}:{tag}"))
            .cloned(),
        _ => None,
    };
    let mut out = Vec::new();
    let db = store.db();
    let untag = |t: &str| -> Result<()> {
        let (repo, tag) = t.rsplit_once(':').unwrap_or((t, "latest"));
        db.execute(
            "DELETE FROM tags WHERE repo = ?1 AND tag = ?2",
            params![repo, tag],
        )?;
        Ok(())
    };
    if let Some(t) = by_tag {
        if img.tags.len() > 1 || (img.containers > 0 && force) {
            untag(&t)?;
            return Ok(vec![Removed::Untagged(t)]);
        }
    } else if img.tags.len() > 1 && !force {
        return Err(user(format!(
            "image {} is referenced by several tags ({})",
            short(&id),
            img.tags.join(", ")
        ))
        .hint("remove the tags one by one, or use -f to remove them all and the image")
        .into());
    }
    if img.containers > 0 {
        let users = container_users(store, &id)?;
        if force {
            for t in &img.tags {
                untag(t)?;
                out.push(Removed::Untagged(t.clone()));
            }
            return Ok(out);
        }
        return Err(user(format!(
            "image {input} is in use by container{} {}",
            if users.len() > 1 { "s" } else { "" },
            users.join(", ")
        ))
        .hint("remove the container first (wharf rm), or use -f to remove only the tag")
        .into());
    }
    let tx = db.unchecked_transaction()?;
    for t in &img.tags {
        untag(t)?;
        out.push(Removed::Untagged(t.clone()));
    }
    tx.execute("DELETE FROM images WHERE id = ?1", [&id])?;
    tx.commit()?;
    out.push(Removed::Deleted(id.clone()));
    let _ = std::fs::remove_file(store.blob_path(&id));
    for layer in gc_layers(store)? {
        out.push(Removed::Deleted(layer));
    }
    Ok(out)
}

fn container_users(store: &Store, id: &str) -> Result<Vec<String>> {
    let mut stmt = store
        .db()
        .prepare_cached("SELECT name FROM containers WHERE image_id = ?1 ORDER BY created_at")?;
    let names = stmt
        .query_map([id], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(names)
}

/// Deletes image `id` and its tags, for prune: only if no container uses it, and with
/// `only_untagged` only if it has no tag, both checked in the deleting transaction. Returns
/// the tags it untagged, or None when it is kept. The caller holds the store lock and runs
/// [`gc_layers`] afterwards.
pub fn remove_unused(store: &Store, id: &str, only_untagged: bool) -> Result<Option<Vec<String>>> {
    let _guard = store.lock()?;
    let tx =
        rusqlite::Transaction::new_unchecked(store.db(), rusqlite::TransactionBehavior::Immediate)?;
    let used = tx
        .prepare_cached("SELECT 1 FROM containers WHERE image_id = ?1")?
        .exists([id])?;
    let tags: Vec<String> = tx
        .prepare_cached("SELECT repo || ':' || tag FROM tags WHERE image_id = ?1 ORDER BY 1")?
        .query_map([id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if used || (only_untagged && !tags.is_empty()) {
        return Ok(None);
    }
    tx.execute("DELETE FROM tags WHERE image_id = ?1", [id])?;
    if tx.execute("DELETE FROM images WHERE id = ?1", [id])? == 0 {
        return Ok(None);
    }
    tx.commit()?;
    let _ = std::fs::remove_file(store.blob_path(id));
    Ok(Some(tags))
}

/// Layers no image lists (what [`gc_layers`] would remove now).
pub fn unused_layers(store: &Store) -> Result<Vec<String>> {
    Ok(store
        .db()
        .prepare_cached(
            "SELECT diff_id FROM layers WHERE diff_id NOT IN (SELECT diff_id FROM image_layers)",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?)
}

/// Removes layers no image lists: their rows first, then their directories (a crash in
/// between leaves unrecorded dirs, which `Store::open` removes). Returns their diff ids.
pub fn gc_layers(store: &Store) -> Result<Vec<String>> {
    let _guard = store.lock()?;
    let db = store.db();
    let unused: Vec<String> = db
        .prepare_cached(
            "SELECT diff_id FROM layers WHERE diff_id NOT IN (SELECT diff_id FROM image_layers)",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if unused.is_empty() {
        return Ok(unused);
    }
    let tx = db.unchecked_transaction()?;
    for d in &unused {
        tx.execute("DELETE FROM layers WHERE diff_id = ?1", [d])?;
    }
    tx.commit()?;
    for d in &unused {
        fsutil::remove_tree(&store.layer_dir(d)).with_context(|| {
            format!(
                "cannot remove layer directory {}",
                store.layer_dir(d).display()
            )
        })?;
    }
    Ok(unused)
}

/// A compressed blob a layer is known by (`layer_blobs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    pub diff_id: String,
    /// `sha256:<hex>`.
    pub digest: String,
    pub size: u64,
    pub media_type: String,
    /// sha256 hex of the tar it decompresses to: the diff id for the blob a layer was pulled
    /// or loaded as; a push's regenerated tar otherwise.
    pub tar_digest: String,
    /// A repository known to hold it (`host/name`), for cross-repository mounts.
    pub repo: Option<String>,
}

/// The OCI layer media type of a blob of this compression.
pub fn layer_media_type(c: import::Compression) -> &'static str {
    match c {
        import::Compression::None => "application/vnd.oci.image.layer.v1.tar",
        import::Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        import::Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
    }
}

/// Records blobs of layers the store holds (one known already keeps its row; a repository
/// given replaces the one recorded).
pub fn record_blobs(store: &Store, blobs: &[LayerBlob]) -> Result<()> {
    let tx = store.db().unchecked_transaction()?;
    let now = now_ns();
    for b in blobs {
        tx.execute(
            "INSERT INTO layer_blobs (diff_id, digest, size, media_type, tar_digest, repo, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (diff_id, digest) DO UPDATE SET repo = COALESCE(excluded.repo, repo)",
            params![b.diff_id, b.digest, b.size as i64, b.media_type, b.tar_digest, b.repo, now],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// The blobs a layer is known by: the original (its tar is the layer's) first, then the
/// newest.
pub fn layer_blobs(store: &Store, diff_id: &str) -> Result<Vec<LayerBlob>> {
    let mut stmt = store.db().prepare_cached(
        "SELECT digest, size, media_type, tar_digest, repo FROM layer_blobs WHERE diff_id = ?1 \
         ORDER BY tar_digest = diff_id DESC, created_at DESC",
    )?;
    let rows = stmt.query_map([diff_id], |r| {
        Ok(LayerBlob {
            diff_id: diff_id.to_string(),
            digest: r.get(0)?,
            size: r.get::<_, i64>(1)? as u64,
            media_type: r.get(2)?,
            tar_digest: r.get(3)?,
            repo: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The 12-digit short form of an id.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// `wharf image inspect`: docker's shape, plus wharf's layer paths.
pub fn inspect(store: &Store, input: &str) -> Result<serde_json::Value> {
    let img = info(store, input)?;
    let cfg = load_config(store, &img.id)?;
    let lower: Vec<String> = layer_dirs(store, &img.id)?
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    Ok(serde_json::json!({
        "Id": format!("sha256:{}", img.id),
        "RepoTags": img.tags,
        "Created": cfg.created,
        "Comment": img.comment,
        "Architecture": cfg.architecture,
        "Os": cfg.os,
        "Size": img.size,
        "Config": cfg.config,
        "RootFS": { "Type": cfg.rootfs.typ, "Layers": cfg.rootfs.diff_ids },
        "History": cfg.history,
        "GraphDriver": { "Name": "overlay", "Data": { "LowerDirs": lower.join(":") } },
        "Metadata": { "ImportedAt": crate::util::rfc3339(img.imported_at) },
        "Containers": img.containers,
    }))
}
