//! `wharf commit CONTAINER [REF]`: a container's write layer becomes a new top layer.
//!
//! The upper dir is already in overlay's form (deletions are 0/0 devices, replaced
//! directories opaque), so it goes through export's deterministic tar (whiteouts back in OCI
//! form) and the one-pass layer stager, like any pulled layer: one safe unpack, hashed for
//! its diff id. The new config is the image's with that diff id, a history entry, the
//! `--change` instructions and a new `created`.

use std::io::Write;

use anyhow::{Context, Result};

use super::config::{RunConfig, apply_changes, created_now};
use super::import::{StageMode, stage_into};
use crate::error::user;
use crate::reference::Reference;
use crate::store::Store;

/// How a commit is asked for.
#[derive(Debug, Default)]
pub struct CommitOptions {
    pub changes: Vec<String>,
    pub message: Option<String>,
    pub author: Option<String>,
}

/// `wharf commit`: returns the new image id.
pub fn commit(
    store: &Store,
    container: &str,
    reference: Option<&str>,
    opts: &CommitOptions,
) -> Result<String> {
    let tag = match reference.map(Reference::parse_named).transpose()? {
        Some(Reference::Tag { repo, tag }) => Some((repo, tag)),
        Some(r) => {
            return Err(user(format!("cannot commit as {r}: a digest is not a tag"))
                .hint("name the image name:tag, e.g. app:1.1")
                .into());
        }
        None => None,
    };
    let rec = crate::container::find(store, container)?;
    if rec.config.auto_remove {
        return Err(user(format!(
            "container {} was run with --rm: its write layer lives only while it runs",
            rec.name
        ))
        .hint("run it without --rm to commit it")
        .into());
    }
    let upper = store.container_dir(&rec.id).join("upper");
    if !upper.is_dir() {
        return Err(
            user(format!("container {} has no write layer yet", rec.name))
                .hint("start it once (wharf start), then commit")
                .into(),
        );
    }
    let base = std::fs::read(store.blob_path(&rec.image_id)).with_context(|| {
        format!(
            "cannot read the config of image {}",
            super::short(&rec.image_id)
        )
    })?;
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&base).context("the image config is not valid JSON")?;
    let mut run: RunConfig = serde_json::from_value(cfg["config"].clone()).unwrap_or_default();
    apply_changes(&mut run, &opts.changes)?;
    let created = created_now()?;

    // The upper dir as a tar, into the stager through a pipe.
    let (rd, wr) = nix::unistd::pipe().context("cannot create a pipe")?;
    let upper2 = upper.clone();
    let writer = std::thread::Builder::new()
        .name("commit-tar".into())
        .spawn(move || -> Result<()> {
            let mut w = std::io::BufWriter::with_capacity(256 * 1024, std::fs::File::from(wr));
            super::export::layer_tar(&upper2, &mut w)?;
            w.flush()?;
            Ok(())
        })
        .context("cannot start the commit writer thread")?;
    let staging = store.staging("commit")?;
    let staged = stage_into(
        staging,
        Box::new(std::fs::File::from(rd)),
        None,
        // The container's own files, already on this disk.
        StageMode::Layer { max_size: u64::MAX },
    );
    let written = writer
        .join()
        .map_err(|_| anyhow::anyhow!("the commit writer thread panicked"))?;
    let staged = staged?;
    written.with_context(|| format!("cannot read the write layer {}", upper.display()))?;
    let lowers = super::layer_dirs(store, &rec.image_id)?;
    super::unpack::link_from_lowers(&staged.dir, &lowers, &staged.links)?;

    // The config: the image's, plus the layer, the history entry and the changes.
    let diff = format!("sha256:{}", staged.hashes.diff_id);
    match cfg["rootfs"]["diff_ids"].as_array_mut() {
        Some(a) => a.push(serde_json::json!(diff)),
        None => anyhow::bail!("the image config has no rootfs.diff_ids"),
    }
    let mut changed = match cfg["config"].take() {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    if let serde_json::Value::Object(m) = serde_json::to_value(&run)? {
        for k in [
            "Entrypoint",
            "Cmd",
            "Env",
            "User",
            "WorkingDir",
            "ExposedPorts",
            "Volumes",
            "Labels",
            "StopSignal",
        ] {
            match m.get(k) {
                Some(v) => changed.insert(k.to_string(), v.clone()),
                None => changed.remove(k),
            };
        }
    }
    cfg["config"] = serde_json::Value::Object(changed);
    cfg["created"] = serde_json::json!(created);
    if let Some(a) = &opts.author {
        cfg["author"] = serde_json::json!(a);
    }
    let mut h = serde_json::json!({"created": created, "created_by": "wharf commit"});
    if let Some(m) = &opts.message {
        h["comment"] = serde_json::json!(m);
    }
    match cfg["history"].as_array_mut() {
        Some(a) => a.push(h),
        None => cfg["history"] = serde_json::json!([h]),
    }
    let config = serde_json::to_vec(&cfg)?;

    let mut layers = Vec::new();
    {
        let mut stmt = store.db().prepare_cached(
            "SELECT l.diff_id, l.size, l.tar_size, l.entries FROM image_layers il
             JOIN layers l ON l.diff_id = il.diff_id WHERE il.image_id = ?1 ORDER BY il.position",
        )?;
        let rows = stmt.query_map([&rec.image_id], |r| {
            Ok(super::NewLayer {
                diff_id: r.get(0)?,
                size: r.get::<_, i64>(1)? as u64,
                tar_size: r.get::<_, i64>(2)? as u64,
                entries: r.get::<_, i64>(3)? as u64,
                staged: None,
            })
        })?;
        for l in rows {
            layers.push(l?);
        }
    }
    layers.push(staged.into_new_layer());
    let committed = super::commit_image(
        store,
        super::NewImage {
            config: &config,
            created_ns: super::created_ns(Some(&created)),
            comment: opts.message.clone(),
            layers,
            tags: tag.into_iter().collect(),
            source_digest: None,
            repo_digest: None,
        },
    )?;
    Ok(committed.id)
}
