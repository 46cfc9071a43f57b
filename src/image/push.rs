//! `wharf push SRC [DEST]`: an image to a registry, layers first, then the config, then the
//! manifest (OCI). Each layer is the deterministic tar of its directory (export.rs), gzip'd
//! with a fixed header, so the same image always gives the same blobs and manifest digest;
//! a blob the registry has is not sent.

use std::io::{BufWriter, Read, Write};

use anyhow::{Context, Result};
use oci_client::token_cache::RegistryOperation;
use sha2::{Digest, Sha256};

use super::oci;
use super::pull::{Session, Target};
use crate::error::user;
use crate::reference::Reference;
use crate::store::Store;

/// What a push did.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The manifest digest, `sha256:…`.
    pub digest: String,
    /// Per layer: (blob digest, sent (false: the registry had it)).
    pub layers: Vec<(String, bool)>,
    pub reference: String,
}

struct Blob {
    path: std::path::PathBuf,
    digest: String,
    size: u64,
}

/// gzip of a file into `out`, deterministic (no name, mtime 0), hashed.
fn gzip_file(src: &std::path::Path, out: &std::path::Path) -> Result<(String, u64)> {
    struct Hashing<W> {
        inner: W,
        hash: Sha256,
        size: u64,
    }
    impl<W: Write> Write for Hashing<W> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = self.inner.write(buf)?;
            self.hash.update(&buf[..n]);
            self.size += n as u64;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.inner.flush()
        }
    }
    let f =
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let w = Hashing {
        inner: BufWriter::with_capacity(256 * 1024, f),
        hash: Sha256::new(),
        size: 0,
    };
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(w, flate2::Compression::default());
    let mut input = std::fs::File::open(src)?;
    std::io::copy(&mut input, &mut gz)?;
    let mut w = gz.finish()?;
    w.flush()?;
    Ok((hex::encode(w.hash.finalize()), w.size))
}

/// `wharf push SRC [DEST]`.
pub fn push(store: &Store, src: &str, dest: Option<&str>, tls_verify: bool) -> Result<Pushed> {
    let id = super::resolve(store, src)?;
    let dest = match dest {
        Some(d) => d.to_string(),
        None => match Reference::parse(src) {
            Ok(Reference::Tag { repo, tag }) => format!("{repo}:{tag}"),
            _ => {
                return Err(user(format!("{src} names no repository to push to"))
                    .hint("give the destination: wharf push IMAGE host:5000/team/app:1.0")
                    .into());
            }
        },
    };
    let target = Target::parse(&dest)?;
    if target.oci.digest().is_some() {
        return Err(
            user(format!("cannot push to {dest}: a digest is not a tag"))
                .hint("push to name:tag; the digest is printed after the push")
                .into(),
        );
    }
    let exported = super::export::export(store, &id)?;
    let mut blobs = Vec::with_capacity(exported.layers.len());
    for (i, l) in exported.layers.iter().enumerate() {
        let path = exported.staging.path().join(format!("layer-{i}.tar.gz"));
        let (hex, size) = gzip_file(&l.path, &path)?;
        blobs.push(Blob {
            path,
            digest: format!("sha256:{hex}"),
            size,
        });
    }
    let config_digest = format!("sha256:{}", exported.id);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": oci::OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": exported.config.len(),
        },
        "layers": blobs.iter().map(|b| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": b.digest,
            "size": b.size,
        })).collect::<Vec<_>>(),
    }))?;
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&manifest)));

    let s = Session::new(target, tls_verify)?;
    let r = s.target.oci.clone();
    s.rt.block_on(s.client.auth(&r, &s.auth, RegistryOperation::Push))
        .map_err(|e| s.explain("push", e))?;
    let mut layers = Vec::new();
    for b in &blobs {
        let have =
            s.rt.block_on(s.client.blob_exists(&r, &b.digest))
                .map_err(|e| s.explain("push", e))?;
        if !have {
            let mut f = std::fs::File::open(&b.path)?;
            let stream = futures_util::stream::poll_fn(move |_| {
                let mut buf = vec![0u8; 1 << 20];
                match f.read(&mut buf) {
                    Ok(0) => std::task::Poll::Ready(None),
                    Ok(n) => {
                        buf.truncate(n);
                        std::task::Poll::Ready(Some(Ok(bytes::Bytes::from(buf))))
                    }
                    Err(e) => std::task::Poll::Ready(Some(Err(
                        oci_client::errors::OciDistributionError::IoError(e),
                    ))),
                }
            });
            s.rt.block_on(
                s.client
                    .push_blob_stream(&r, stream, &b.digest, Some(b.size)),
            )
            .map_err(|e| s.explain("push", e))?;
        }
        layers.push((b.digest.clone(), !have));
    }
    let have_config =
        s.rt.block_on(s.client.blob_exists(&r, &config_digest))
            .map_err(|e| s.explain("push", e))?;
    if !have_config {
        s.rt.block_on(
            s.client
                .push_blob(&r, exported.config.clone(), &config_digest),
        )
        .map_err(|e| s.explain("push", e))?;
    }
    s.rt.block_on(s.client.push_manifest_raw(
        &r,
        manifest,
        http::HeaderValue::from_static(oci::OCI_MANIFEST),
    ))
    .map_err(|e| s.explain("push", e))?;
    Ok(Pushed {
        digest,
        layers,
        reference: dest,
    })
}
