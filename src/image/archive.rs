//! `wharf load`: docker-archives (the old `<id>/layer.tar` layout and Docker 25+'s OCI one),
//! oci-archives and OCI layout directories, plain, gzip or zstd.
//!
//! An archive file is unpacked into staging by the safe unpacker first (its paths cannot
//! escape; its symlinks resolve inside it), then read like a directory: every file is
//! opened with `openat2(RESOLVE_IN_ROOT)`. Layers go through [`oci::assemble`], the pipeline
//! pull uses: each digest is checked before anything is recorded.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use serde::Deserialize;

use super::oci::{self, Assembly, LayerSource, MAX_MANIFEST};
use crate::error::user;
use crate::reference::Reference;
use crate::store::Store;

/// One image a load recorded.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub id: String,
    pub tags: Vec<String>,
}

/// What `load` reads.
pub struct LoadOptions {
    pub progress: Option<indicatif::MultiProgress>,
    pub platform: oci::Platform,
}

/// A directory read through a descriptor, nothing resolving outside it.
struct Root {
    fd: OwnedFd,
    what: String,
}

impl Root {
    fn open(&self, rel: &str) -> Result<Option<File>> {
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        match openat2(self.fd.as_fd(), OsStr::from_bytes(rel.as_bytes()), how) {
            Ok(fd) => Ok(Some(File::from(fd))),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(anyhow::anyhow!("cannot open {rel} in {}: {e}", self.what)),
        }
    }

    fn must_open(&self, rel: &str) -> Result<File> {
        self.open(rel)?.ok_or_else(|| {
            user(format!("{} lacks {rel}", self.what))
                .hint("the archive is incomplete; re-create it (docker save, skopeo copy)")
                .into()
        })
    }

    /// A small JSON file, read whole (bounded: manifests, configs, indexes).
    fn small(&self, rel: &str) -> Result<Vec<u8>> {
        let f = self.must_open(rel)?;
        let mut buf = Vec::new();
        f.take(MAX_MANIFEST + 1)
            .read_to_end(&mut buf)
            .with_context(|| format!("cannot read {rel} in {}", self.what))?;
        if buf.len() as u64 > MAX_MANIFEST {
            return Err(user(format!("{rel} in {} is over 4 MiB", self.what))
                .hint("this is not an image archive wharf reads")
                .into());
        }
        Ok(buf)
    }

    /// A blob of an OCI layout, its digest checked.
    fn blob(&self, digest: &str, what: &str) -> Result<Vec<u8>> {
        use sha2::Digest;
        let hex = oci::digest_hex(digest, what)?;
        let bytes = self.small(&format!("blobs/sha256/{hex}"))?;
        let got = hex::encode(sha2::Sha256::digest(&bytes));
        if got != hex {
            return Err(user(format!(
                "{what} in {} does not match its digest {digest}: it hashes to sha256:{got}",
                self.what
            ))
            .hint("the archive is corrupt; re-create it")
            .into());
        }
        Ok(bytes)
    }
}

/// `wharf load -i PATH` (`-` for standard input).
pub fn load(store: &Store, input: &Path, opts: &LoadOptions) -> Result<Vec<Loaded>> {
    let shown = if input == Path::new("-") {
        "standard input".to_string()
    } else {
        input.display().to_string()
    };
    let mut _staged = None;
    let dir = if input != Path::new("-") && input.is_dir() {
        input.to_path_buf()
    } else {
        let reader: Box<dyn Read + Send> = if input == Path::new("-") {
            Box::new(std::io::stdin())
        } else {
            Box::new(File::open(input).map_err(|e| {
                anyhow::Error::new(
                    user(format!("cannot open {shown}: {e}"))
                        .hint("give an image archive (docker save, skopeo copy ... docker-archive: or oci-archive:), or - for standard input"),
                )
            })?)
        };
        let staged = super::import::stage_layer(
            store,
            reader,
            None,
            super::import::StageMode::Archive,
            "load",
        )
        .with_context(|| format!("cannot unpack the archive {shown}"))?;
        let dir = staged.dir.clone();
        _staged = Some(staged);
        dir
    };
    let fd = nix::fcntl::open(
        &dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .with_context(|| format!("cannot open {}", dir.display()))?;
    let root = Root { fd, what: shown };
    if root.open("manifest.json")?.is_some() {
        docker_archive(store, &root, opts)
    } else if root.open("index.json")?.is_some() {
        oci_layout(store, &root, opts)
    } else {
        Err(user(format!(
            "{} is not an image archive: it has neither manifest.json nor index.json",
            root.what
        ))
        .hint("a root filesystem tarball is imported with `wharf import FILE NAME:TAG`")
        .into())
    }
}

#[derive(Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

fn docker_archive(store: &Store, root: &Root, opts: &LoadOptions) -> Result<Vec<Loaded>> {
    use sha2::Digest;
    let entries: Vec<DockerEntry> =
        serde_json::from_slice(&root.small("manifest.json")?).map_err(|e| {
            anyhow::Error::new(
                user(format!("manifest.json in {} is not valid: {e}", root.what))
                    .hint("the archive is damaged; re-create it"),
            )
        })?;
    let mut out = Vec::new();
    for e in entries {
        let config = root.small(&e.config)?;
        // Both layouts name the config by its digest: <hex>.json, or blobs/sha256/<hex>.
        let got = hex::encode(sha2::Sha256::digest(&config));
        let named = e
            .config
            .trim_end_matches(".json")
            .rsplit('/')
            .next()
            .unwrap_or("");
        if named.len() == 64 && named != got {
            return Err(user(format!(
                "the config {} in {} does not match its name: it hashes to sha256:{got}",
                e.config, root.what
            ))
            .hint("the archive is corrupt; re-create it")
            .into());
        }
        let tags = tags_of(e.repo_tags.unwrap_or_default().iter().map(String::as_str))?;
        let layers = e
            .layers
            .iter()
            .map(|p| LayerSource {
                blob_digest: None,
                media_type: String::new(),
                size: root
                    .open(p)
                    .ok()
                    .flatten()
                    .and_then(|f| f.metadata().ok())
                    .map(|m| m.len()),
            })
            .collect();
        let paths = e.layers.clone();
        let committed = oci::assemble(
            store,
            Assembly {
                what: root.what.clone(),
                config: &config,
                layers,
                tags: tags.clone(),
                repo_digest: None,
                parallel: 3,
                progress: opts.progress.clone(),
                blob_repo: None,
            },
            &|i, _| Ok(Box::new(root.must_open(&paths[i])?) as Box<dyn Read + Send>),
        )?;
        out.push(Loaded {
            id: committed.id,
            tags: tags.iter().map(|(r, t)| format!("{r}:{t}")).collect(),
        });
    }
    Ok(out)
}

fn tags_of<'a>(names: impl Iterator<Item = &'a str>) -> Result<Vec<(String, String)>> {
    let mut tags = Vec::new();
    for t in names {
        if let Reference::Tag { repo, tag } = Reference::parse_named(t)? {
            tags.push((repo, tag));
        }
    }
    Ok(tags)
}

fn oci_layout(store: &Store, root: &Root, opts: &LoadOptions) -> Result<Vec<Loaded>> {
    let index = oci::parse_manifest(&root.small("index.json")?, &root.what)?;
    let mut out = Vec::new();
    for entry in &index.manifests {
        // The name: containerd's full one, else the ref annotation when it is a full
        // reference (a bare tag like "latest" names no repository: the image is untagged).
        let name = entry
            .annotations
            .get("io.containerd.image.name")
            .or_else(|| {
                entry
                    .annotations
                    .get("org.opencontainers.image.ref.name")
                    .filter(|n| n.contains(['/', ':']))
            });
        let tags = tags_of(name.map(String::as_str).into_iter())?;
        let mut desc = entry.clone();
        let mut bytes = root.blob(&desc.digest, "a manifest")?;
        let mut m = oci::parse_manifest(&bytes, &root.what)?;
        if m.is_index() {
            desc = oci::pick_platform(&m, &opts.platform, &root.what)?.clone();
            bytes = root.blob(&desc.digest, "a manifest")?;
            m = oci::parse_manifest(&bytes, &root.what)?;
        }
        let Some(cfg_desc) = &m.config else {
            return Err(user(format!("a manifest in {} has no config", root.what))
                .hint("the layout is damaged; re-create it")
                .into());
        };
        let config = root.blob(&cfg_desc.digest, "the image config")?;
        let layers: Vec<LayerSource> = m
            .layers
            .iter()
            .map(|l| LayerSource {
                blob_digest: Some(l.digest.clone()),
                media_type: l.media_type.clone(),
                size: Some(l.size),
            })
            .collect();
        let committed = oci::assemble(
            store,
            Assembly {
                what: root.what.clone(),
                config: &config,
                layers,
                tags: tags.clone(),
                repo_digest: None,
                parallel: 3,
                progress: opts.progress.clone(),
                blob_repo: None,
            },
            &|_, l| {
                let digest = l.blob_digest.as_deref().unwrap_or_default();
                let hex = oci::digest_hex(digest, "a layer")?;
                Ok(Box::new(root.must_open(&format!("blobs/sha256/{hex}"))?)
                    as Box<dyn Read + Send>)
            },
        )?;
        out.push(Loaded {
            id: committed.id,
            tags: tags.iter().map(|(r, t)| format!("{r}:{t}")).collect(),
        });
    }
    if out.is_empty() {
        return Err(user(format!("{} holds no image", root.what))
            .hint("its index.json lists no manifest")
            .into());
    }
    Ok(out)
}

/// The archive `wharf save` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveFormat {
    /// `manifest.json` + `repositories`, `<id>.json` configs and `<diff-id>/layer.tar`s:
    /// what `docker load` and `podman load` read.
    DockerArchive,
    /// An OCI image layout in a tar: `oci-layout`, `index.json`, `blobs/sha256/`.
    OciArchive,
}

/// `wharf save`: the images `refs` name as one archive written to `out`.
pub fn save(
    store: &Store,
    refs: &[String],
    format: SaveFormat,
    out: &mut dyn std::io::Write,
) -> Result<()> {
    use sha2::Digest;
    let mut images = Vec::new();
    for r in refs {
        let id = super::resolve(store, r)?;
        let mut e = super::export::export(store, &id)?;
        // The tags to record: the one named, or every tag of an image named by id.
        if let Ok(Reference::Tag { repo, tag }) = Reference::parse(r) {
            e.tags = vec![format!("{repo}:{tag}")];
        }
        images.push(e);
    }
    let mut b = tar::Builder::new(out);
    let mut written = std::collections::HashSet::new();
    let add = |b: &mut tar::Builder<&mut dyn std::io::Write>,
               name: &str,
               data: &mut dyn Read,
               size: u64|
     -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_data(&mut h, name, data)?;
        Ok(())
    };
    match format {
        SaveFormat::DockerArchive => {
            let mut manifest = Vec::new();
            let mut repositories: std::collections::BTreeMap<
                String,
                std::collections::BTreeMap<String, String>,
            > = Default::default();
            for e in &images {
                let cfg_name = format!("{}.json", e.id);
                if written.insert(cfg_name.clone()) {
                    add(&mut b, &cfg_name, &mut &e.config[..], e.config.len() as u64)?;
                }
                let mut layer_names = Vec::new();
                for l in &e.layers {
                    let name = format!("{}/layer.tar", l.diff_id);
                    if written.insert(name.clone()) {
                        let mut f = File::open(&l.path)?;
                        add(&mut b, &name, &mut f, l.size)?;
                    }
                    layer_names.push(name);
                }
                for t in &e.tags {
                    if let Some((repo, tag)) = t.rsplit_once(':') {
                        let top = e
                            .layers
                            .last()
                            .map(|l| l.diff_id.clone())
                            .unwrap_or_default();
                        repositories
                            .entry(repo.to_string())
                            .or_default()
                            .insert(tag.to_string(), top);
                    }
                }
                manifest.push(serde_json::json!({
                    "Config": cfg_name, "RepoTags": e.tags, "Layers": layer_names,
                }));
            }
            let m = serde_json::to_vec(&manifest)?;
            add(&mut b, "manifest.json", &mut &m[..], m.len() as u64)?;
            let r = serde_json::to_vec(&repositories)?;
            add(&mut b, "repositories", &mut &r[..], r.len() as u64)?;
        }
        SaveFormat::OciArchive => {
            let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
            add(&mut b, "oci-layout", &mut &layout[..], layout.len() as u64)?;
            let mut index = Vec::new();
            for e in &images {
                let cfg_name = format!("blobs/sha256/{}", e.id);
                if written.insert(cfg_name.clone()) {
                    add(&mut b, &cfg_name, &mut &e.config[..], e.config.len() as u64)?;
                }
                let mut descs = Vec::new();
                for l in &e.layers {
                    let name = format!("blobs/sha256/{}", l.diff_id);
                    if written.insert(name.clone()) {
                        let mut f = File::open(&l.path)?;
                        add(&mut b, &name, &mut f, l.size)?;
                    }
                    descs.push(serde_json::json!({
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": format!("sha256:{}", l.diff_id), "size": l.size,
                    }));
                }
                let m = serde_json::to_vec(&serde_json::json!({
                    "schemaVersion": 2, "mediaType": oci::OCI_MANIFEST,
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               "digest": format!("sha256:{}", e.id), "size": e.config.len()},
                    "layers": descs,
                }))?;
                let mhex = hex::encode(sha2::Sha256::digest(&m));
                let mname = format!("blobs/sha256/{mhex}");
                if written.insert(mname.clone()) {
                    add(&mut b, &mname, &mut &m[..], m.len() as u64)?;
                }
                let entry = |annotations: serde_json::Value| {
                    serde_json::json!({
                        "mediaType": oci::OCI_MANIFEST, "digest": format!("sha256:{mhex}"),
                        "size": m.len(), "annotations": annotations,
                    })
                };
                if e.tags.is_empty() {
                    index.push(entry(serde_json::json!({})));
                }
                for t in &e.tags {
                    let tag = t.rsplit_once(':').map_or("latest", |(_, t)| t);
                    index.push(entry(serde_json::json!({
                        "org.opencontainers.image.ref.name": tag,
                        "io.containerd.image.name": t,
                    })));
                }
            }
            let idx = serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2, "mediaType": oci::OCI_INDEX, "manifests": index,
            }))?;
            add(&mut b, "index.json", &mut &idx[..], idx.len() as u64)?;
        }
    }
    b.into_inner()?.flush()?;
    Ok(())
}
