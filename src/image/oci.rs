//! OCI and Docker manifests, indexes and descriptors: the subset wharf reads, and the
//! assembly of a multi-layer image from its blobs (shared by `load` and `pull`).
//!
//! ```text
//!  manifest ─▶ config blob (digest checked) ─▶ diff ids
//!  each layer the store lacks, N side by side:
//!     blob reader ─▶ stage_into: sha256(blob) + decompress + sha256(tar) + safe unpack_layer
//!                    (whiteouts in overlay's form) ─▶ both digests checked
//!  then bottom-up: hardlinks to lower layers' files ─▶ commit_image (one transaction)
//! ```
//! Nothing reaches `layers/` before every digest of every layer has checked out.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use serde::Deserialize;

use super::import::{StagedLayer, stage_into};
use super::unpack::link_from_lowers;
use super::{Committed, NewImage, NewLayer};
use crate::error::user;
use crate::store::Store;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Manifests and configs over this size are refused (distribution's own limit is 4 MiB).
pub const MAX_MANIFEST: u64 = 4 * 1024 * 1024;

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// An image manifest (OCI or Docker v2 schema 2), or an index / manifest list.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion", default)]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    #[serde(default)]
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// Set in an index or manifest list.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

impl Manifest {
    pub fn is_index(&self) -> bool {
        self.media_type == OCI_INDEX
            || self.media_type == DOCKER_LIST
            || (self.config.is_none() && !self.manifests.is_empty())
    }
}

/// The parts of an image config the assembly needs.
#[derive(Debug, Deserialize)]
struct ConfigHead {
    rootfs: RootFsHead,
    #[serde(default)]
    created: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RootFsHead {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// Parses a manifest or index; `what` names it in errors.
pub fn parse_manifest(bytes: &[u8], what: &str) -> Result<Manifest> {
    let m: Manifest = serde_json::from_slice(bytes).map_err(|e| {
        anyhow::Error::new(
            user(format!("the manifest of {what} is not valid JSON: {e}"))
                .hint("the image is damaged; re-create or re-push it"),
        )
    })?;
    if m.schema_version == 1 {
        return Err(user(format!(
            "{what} has a Docker schema 1 manifest, which wharf does not read"
        ))
        .hint("re-push the image with a current tool (schema 2 or OCI)")
        .into());
    }
    Ok(m)
}

/// A `--platform` value: os/arch[/variant].
pub fn parse_platform(s: &str) -> Result<Platform> {
    let parts: Vec<&str> = s.split('/').collect();
    match parts[..] {
        [os, arch] | [os, arch, _] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: parts.get(2).map(|v| v.to_string()),
        }),
        _ => Err(user(format!("invalid platform {s:?}"))
            .hint("write os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8")
            .into()),
    }
}

/// The host's platform in the image spec's names.
pub fn host_platform() -> Platform {
    Platform {
        os: "linux".into(),
        architecture: super::config::go_arch().into(),
        variant: None,
    }
}

/// Picks the manifest of `want` from an index: os and architecture must match, the variant
/// when `want` names one; attestation entries (`unknown/unknown`) are never picked.
pub fn pick_platform<'a>(
    index: &'a Manifest,
    want: &Platform,
    what: &str,
) -> Result<&'a Descriptor> {
    let candidates: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| {
            d.platform
                .as_ref()
                .is_none_or(|p| p.os != "unknown" && p.architecture != "unknown")
        })
        .collect();
    let matches = |d: &&Descriptor| {
        d.platform.as_ref().is_some_and(|p| {
            p.os == want.os
                && p.architecture == want.architecture
                && want
                    .variant
                    .as_ref()
                    .is_none_or(|v| p.variant.as_deref() == Some(v))
        })
    };
    if let Some(d) = candidates.iter().find(|d| matches(d)) {
        return Ok(d);
    }
    // An index without platforms (an OCI layout of one image) names the image itself.
    if candidates.len() == 1 && candidates[0].platform.is_none() {
        return Ok(candidates[0]);
    }
    let have: Vec<String> = candidates
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .map(Platform::to_string)
        .collect();
    Err(user(format!("{what} has no image for {want}"))
        .hint(if have.is_empty() {
            "the index lists no usable image".to_string()
        } else {
            format!("it has: {}; choose one with --platform", have.join(", "))
        })
        .into())
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(v) => write!(f, "/{v}"),
            None => Ok(()),
        }
    }
}

/// Refuses an image of one platform (its config's os, architecture and variant) that is not
/// `want`, as docker does for a `--platform` the image does not have.
pub fn check_platform(config: &[u8], want: &Platform, what: &str) -> Result<()> {
    let have: Platform = serde_json::from_slice(config)
        .map_err(|e| user(format!("the config of {what} is not JSON: {e}")))?;
    let fits = have.os == want.os
        && have.architecture == want.architecture
        && want
            .variant
            .as_ref()
            .is_none_or(|v| have.variant.as_deref() == Some(v));
    if fits {
        return Ok(());
    }
    Err(user(format!(
        "{what} is an image for {have}, not the {want} asked for"
    ))
    .hint("it names one platform only: leave out --platform to take it as it is")
    .into())
}

/// Whether a layer media type is one wharf unpacks (the compression is told by magic bytes).
fn layer_type_ok(mt: &str) -> bool {
    matches!(
        mt,
        "" | "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.diff.tar"
    )
}

/// `sha256:<64 hex>` → the hex; anything else is refused, naming `what`.
pub fn digest_hex<'a>(digest: &'a str, what: &str) -> Result<&'a str> {
    match digest.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(h),
        _ => Err(user(format!(
            "{what} has the digest {digest:?}, which wharf cannot check"
        ))
        .hint("wharf verifies sha256 digests only")
        .into()),
    }
}

/// One layer to assemble: where to read it and what it must hash to.
pub struct LayerSource {
    /// The compressed blob's digest, when the source has one (registries, OCI layouts; a
    /// docker-archive has only diff ids).
    pub blob_digest: Option<String>,
    pub media_type: String,
    pub size: Option<u64>,
}

/// An image to assemble: its config bytes and layers, bottom first.
pub struct Assembly<'a> {
    /// Names the image in errors (a reference, or a file).
    pub what: String,
    pub config: &'a [u8],
    pub layers: Vec<LayerSource>,
    pub tags: Vec<(String, String)>,
    pub repo_digest: Option<(String, String, Vec<u8>)>,
    /// Layers read at once.
    pub parallel: usize,
    /// Progress bars, one per layer downloaded (the caller decides whether to show them).
    pub progress: Option<indicatif::MultiProgress>,
    /// The repository the blobs come from (`host/name`: a pull), recorded for push's
    /// cross-repository mounts.
    pub blob_repo: Option<String>,
}

type Opener<'a> = dyn Fn(usize, &LayerSource) -> Result<Box<dyn Read + Send>> + Sync + 'a;

/// Checks the config against the layer list, reads and unpacks the layers the store lacks
/// (`parallel` at once), makes cross-layer hardlinks, and commits the image.
pub fn assemble(store: &Store, a: Assembly<'_>, open: &Opener<'_>) -> Result<Committed> {
    let head: ConfigHead = serde_json::from_slice(a.config).map_err(|e| {
        anyhow::Error::new(
            user(format!("the image config of {} is not valid: {e}", a.what))
                .hint("the image is damaged; re-create or re-push it"),
        )
    })?;
    let diff_ids = head.rootfs.diff_ids;
    if diff_ids.len() != a.layers.len() {
        return Err(user(format!(
            "the image {} lists {} layers but its config {} diff ids",
            a.what,
            a.layers.len(),
            diff_ids.len()
        ))
        .hint("the image is damaged; re-create or re-push it")
        .into());
    }
    if diff_ids.is_empty() {
        return Err(user(format!("the image {} has no layers", a.what))
            .hint("wharf runs images with at least one layer")
            .into());
    }
    let mut hexes = Vec::with_capacity(diff_ids.len());
    for (i, (d, l)) in diff_ids.iter().zip(&a.layers).enumerate() {
        hexes.push(digest_hex(d, &format!("layer {} of {}", i + 1, a.what))?.to_string());
        if !layer_type_ok(&l.media_type) {
            return Err(user(format!(
                "layer {} of {} has the media type {:?}, which wharf does not unpack",
                i + 1,
                a.what,
                l.media_type
            ))
            .hint("wharf reads tar layers, plain, gzip or zstd")
            .into());
        }
        if let Some(b) = &l.blob_digest {
            digest_hex(b, &format!("layer {} of {}", i + 1, a.what))?;
        }
    }

    // Which layers to fetch: those the store lacks (each diff id once).
    let mut todo: Vec<usize> = Vec::new();
    {
        let mut stmt = store
            .db()
            .prepare_cached("SELECT 1 FROM layers WHERE diff_id = ?1")?;
        for (i, h) in hexes.iter().enumerate() {
            if !stmt.exists([h])? && !todo.iter().any(|&j| hexes[j] == *h) {
                todo.push(i);
            }
        }
    }
    // Each layer is bounded as an import is: `[import] max_size`.
    let max_size = crate::policy::import_max_size(store.root())?;
    let mut stagings = Vec::with_capacity(todo.len());
    for _ in &todo {
        stagings.push(Some(store.staging("layer")?));
    }

    // Read side by side: a pool of `parallel` workers takes the next layer in order.
    let results: Vec<std::sync::Mutex<Option<Result<StagedLayer>>>> =
        todo.iter().map(|_| std::sync::Mutex::new(None)).collect();
    let stagings = std::sync::Mutex::new(stagings);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let workers = a.parallel.clamp(1, 16).min(todo.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let k = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if k >= todo.len() || failed.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    let i = todo[k];
                    let staging = stagings
                        .lock()
                        .ok()
                        .and_then(|mut v| v.get_mut(k).and_then(Option::take));
                    let r = match staging {
                        Some(st) => fetch_layer(&a, i, &hexes[i], st, max_size, open),
                        None => Err(anyhow::anyhow!("internal: layer {i} staged twice")),
                    };
                    if r.is_err() {
                        failed.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                    if let Ok(mut slot) = results[k].lock() {
                        *slot = Some(r);
                    }
                }
            });
        }
    });
    let mut staged: BTreeMap<usize, StagedLayer> = BTreeMap::new();
    let mut first_err = None;
    for (k, slot) in results.into_iter().enumerate() {
        match slot.into_inner().ok().flatten() {
            Some(Ok(l)) => {
                staged.insert(todo[k], l);
            }
            Some(Err(e)) => {
                first_err.get_or_insert(e);
            }
            None => {}
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }

    // Bottom-up: a layer's hardlinks to files below it, now that all are unpacked.
    let mut dirs: Vec<PathBuf> = Vec::with_capacity(hexes.len());
    for (i, h) in hexes.iter().enumerate() {
        let dir = match staged.get(&i) {
            Some(l) => l.dir.clone(),
            None => match todo.iter().position(|&j| hexes[j] == *h) {
                Some(k) => staged
                    .get(&todo[k])
                    .map(|l| l.dir.clone())
                    .unwrap_or_else(|| store.layer_dir(h)),
                None => store.layer_dir(h),
            },
        };
        if let Some(l) = staged.get(&i) {
            let lowers: Vec<PathBuf> = dirs.iter().rev().cloned().collect();
            link_from_lowers(&l.dir, &lowers, &l.links)
                .with_context(|| format!("layer {} of {}", i + 1, a.what))?;
        }
        dirs.push(dir);
    }

    // The blobs read and verified, as push will know them.
    let blobs: Vec<super::LayerBlob> = staged
        .values()
        .map(|l| super::LayerBlob {
            diff_id: l.hashes.diff_id.clone(),
            digest: format!("sha256:{}", l.hashes.source_digest),
            size: l.hashes.source_size,
            media_type: super::layer_media_type(l.hashes.compression).to_string(),
            tar_digest: l.hashes.diff_id.clone(),
            repo: a.blob_repo.clone(),
        })
        .collect();
    let mut layers = Vec::with_capacity(hexes.len());
    for (i, h) in hexes.iter().enumerate() {
        layers.push(match staged.remove(&i) {
            Some(l) => l.into_new_layer(),
            None => {
                let (size, tar_size, entries) = store
                    .db()
                    .prepare_cached(
                        "SELECT size, tar_size, entries FROM layers WHERE diff_id = ?1",
                    )?
                    .query_row([h], |r| {
                        Ok((
                            r.get::<_, i64>(0)? as u64,
                            r.get::<_, i64>(1)? as u64,
                            r.get::<_, i64>(2)? as u64,
                        ))
                    })
                    .unwrap_or((0, 0, 0));
                NewLayer {
                    diff_id: h.clone(),
                    size,
                    tar_size,
                    entries,
                    staged: None,
                }
            }
        });
    }
    let committed = super::commit_image(
        store,
        NewImage {
            config: a.config,
            created_ns: super::created_ns(head.created.as_deref()),
            comment: None,
            layers,
            tags: a.tags,
            source_digest: None,
            repo_digest: a.repo_digest,
        },
    )?;
    // After the image: a crash in between only costs a push its shortcut.
    if let Err(e) = super::record_blobs(store, &blobs) {
        tracing::warn!("cannot record the blobs of {}: {e:#}", a.what);
    }
    Ok(committed)
}

/// Reads, verifies and unpacks layer `i` into `staging`.
fn fetch_layer(
    a: &Assembly<'_>,
    i: usize,
    diff_hex: &str,
    staging: crate::store::Staging,
    max_size: u64,
    open: &Opener<'_>,
) -> Result<StagedLayer> {
    let src = &a.layers[i];
    let what = format!(
        "layer {} of {} ({})",
        i + 1,
        a.what,
        src.blob_digest
            .as_deref()
            .unwrap_or(&format!("diff id sha256:{diff_hex}"))
    );
    let pb = a.progress.as_ref().map(|m| {
        let pb = m.add(ProgressBar::new(src.size.unwrap_or(0)));
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix:.bold} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        let short = src
            .blob_digest
            .as_deref()
            .and_then(|d| d.strip_prefix("sha256:"))
            .unwrap_or(diff_hex);
        pb.set_prefix(super::short(short).to_string());
        pb
    });
    let reader = open(i, src).with_context(|| format!("cannot read {what}"))?;
    let staged = stage_into(
        staging,
        reader,
        pb.clone(),
        super::import::StageMode::Layer { max_size },
    )
    .with_context(|| what.clone())?;
    if let Some(pb) = &pb {
        pb.finish();
    }
    if let Some(b) = &src.blob_digest
        && b.strip_prefix("sha256:") != Some(staged.hashes.source_digest.as_str())
    {
        return Err(user(format!(
            "{what} does not match its digest: its bytes hash to sha256:{}",
            staged.hashes.source_digest
        ))
        .hint("the blob is corrupt or was tampered with; nothing was stored")
        .into());
    }
    if staged.hashes.diff_id != diff_hex {
        return Err(user(format!(
            "{what} does not match the image config: it unpacks to sha256:{}, the config says sha256:{diff_hex}",
            staged.hashes.diff_id
        ))
        .hint("the image is damaged or was tampered with; nothing was stored")
        .into());
    }
    Ok(staged)
}
