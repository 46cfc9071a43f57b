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
