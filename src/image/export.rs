//! Layers back to tar streams, for `wharf save` (and push): each layer directory is written
//! as a deterministic tar (names sorted, owners, modes, mtimes and xattrs as stored, no
//! atimes), with overlay's whiteouts turned back into the OCI form (`.wh.NAME`,
//! `.wh..wh..opq`). The same directory always gives the same bytes.
//!
//! wharf keeps layers unpacked, not their original tars, so a regenerated tar hashes to its
//! own diff id: when any differs from the config's, the config is rewritten with the new diff
//! ids (a new image id, the same content); when all match, the original config is kept.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::store::{Staging, Store};

/// A writer that hashes and counts what passes through.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    size: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// One layer written out.
pub struct ExportedLayer {
    /// The tar file in staging.
    pub path: PathBuf,
    /// sha256 hex of the tar.
    pub diff_id: String,
    pub size: u64,
}

/// An image written out: its (possibly rewritten) config and its layer tars, bottom first.
pub struct Exported {
    pub staging: Staging,
    pub config: Vec<u8>,
    /// sha256 hex of `config`.
    pub id: String,
    pub layers: Vec<ExportedLayer>,
    pub tags: Vec<String>,
}

/// Writes every layer of image `id` as a tar into a staging dir.
pub fn export(store: &Store, id: &str) -> Result<Exported> {
    let staging = store.staging("export")?;
    let config_path = store.blob_path(id);
    let original = fs::read(&config_path)
        .with_context(|| format!("cannot read the image config {}", config_path.display()))?;
    let mut layers = Vec::new();
    let dirs = super::layer_dirs(store, id)?;
    // layer_dirs is top first; archives list layers bottom first.
    for (i, dir) in dirs.iter().rev().enumerate() {
        let path = staging.path().join(format!("layer-{i}.tar"));
        let f = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut w = Hashing {
            inner: BufWriter::with_capacity(256 * 1024, f),
            hash: Sha256::new(),
            size: 0,
        };
        layer_tar(dir, &mut w)
            .with_context(|| format!("cannot write the layer {}", dir.display()))?;
        w.flush()?;
        layers.push(ExportedLayer {
            path,
            diff_id: hex::encode(w.hash.finalize()),
            size: w.size,
        });
    }
    let new_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    let config = with_diff_ids(original, &new_ids)?;
    let new_id = hex::encode(Sha256::digest(&config));
    let tags = super::info(store, id)?.tags;
    Ok(Exported {
        staging,
        config,
        id: new_id,
        layers,
        tags,
    })
}

/// The config `original` with these diff ids (sha256 hex, bottom first): unchanged bytes
/// when they are its own, else its JSON with `rootfs.diff_ids` replaced.
pub fn with_diff_ids(original: Vec<u8>, ids: &[&str]) -> Result<Vec<u8>> {
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&original).context("the image config is not valid JSON")?;
    let new_ids: Vec<String> = ids.iter().map(|d| format!("sha256:{d}")).collect();
    let same = cfg["rootfs"]["diff_ids"].as_array().is_some_and(|a| {
        a.iter()
            .map(|v| v.as_str().unwrap_or(""))
            .eq(new_ids.iter().map(String::as_str))
    });
    if same {
        return Ok(original);
    }
    cfg["rootfs"]["diff_ids"] = serde_json::json!(new_ids);
    Ok(serde_json::to_vec(&cfg)?)
}

/// A layer blob made from its directory in one pass: the deterministic tar, gzip'd (level 1)
/// with a fixed header (no name, mtime 0), into `out`. Returns (sha256 hex of the blob, its size,
/// sha256 hex of the tar): the same directory always gives the same blob.
pub fn layer_blob(dir: &Path, out: &Path) -> Result<(String, u64, String)> {
    let f = File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let blob = Hashing {
        inner: BufWriter::with_capacity(256 * 1024, f),
        hash: Sha256::new(),
        size: 0,
    };
    // Level 1: push's cost is compression (level 6 is ~3x slower here for ~10% less).
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(blob, flate2::Compression::fast());
    let mut tar = Hashing {
        inner: gz,
        hash: Sha256::new(),
        size: 0,
    };
    layer_tar(dir, &mut tar)
        .with_context(|| format!("cannot write the layer {}", dir.display()))?;
    let tar_hex = hex::encode(tar.hash.finalize());
    let mut blob = tar.inner.finish()?;
    blob.flush()?;
    Ok((hex::encode(blob.hash.finalize()), blob.size, tar_hex))
}

/// Writes the layer directory `dir` as a tar stream, deterministically.
pub fn layer_tar(dir: &Path, out: &mut dyn Write) -> Result<()> {
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    let mut links: HashMap<(u64, u64), String> = HashMap::new();
    walk(&mut b, dir, Path::new(""), &mut links)?;
    b.into_inner()?.flush()?;
    Ok(())
}

fn xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let Ok(p) = CString::new(path.as_os_str().as_bytes()) else {
        return Vec::new();
    };
    let mut names = vec![0u8; 4096];
    // SAFETY: a NUL-terminated path and a buffer of the given length owned by this frame.
    let n = unsafe { libc::llistxattr(p.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return Vec::new();
    }
    names.truncate(n as usize);
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if name.starts_with(b"trusted.overlay.") {
            continue;
        }
        let Ok(cn) = CString::new(name) else { continue };
        let mut val = vec![0u8; 65536];
        // SAFETY: two NUL-terminated strings and a buffer of the given length owned here.
        let m =
            unsafe { libc::lgetxattr(p.as_ptr(), cn.as_ptr(), val.as_mut_ptr().cast(), val.len()) };
        if m >= 0 {
            val.truncate(m as usize);
            out.push((name.to_vec(), val));
        }
    }
    out.sort();
    out
}

fn is_opaque(path: &Path) -> bool {
    let Ok(p) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    let mut v = [0u8; 4];
    // SAFETY: NUL-terminated strings and a 4-byte buffer owned by this frame.
    let n = unsafe {
        libc::lgetxattr(
            p.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            v.as_mut_ptr().cast(),
            v.len(),
        )
    };
    n == 1 && v[0] == b'y'
}

fn header_for(meta: &fs::Metadata, typ: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(typ);
    h.set_mode(meta.mode() & 0o7777);
    h.set_uid(meta.uid().into());
    h.set_gid(meta.gid().into());
    h.set_mtime(meta.mtime().max(0) as u64);
    h.set_size(0);
    h
}

fn append_pax(b: &mut tar::Builder<&mut dyn Write>, xattrs: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
    if xattrs.is_empty() {
        return Ok(());
    }
    let recs: Vec<(String, &[u8])> = xattrs
        .iter()
        .map(|(k, v)| {
            (
                format!("SCHILY.xattr.{}", String::from_utf8_lossy(k)),
                v.as_slice(),
            )
        })
        .collect();
    b.append_pax_extensions(recs.iter().map(|(k, v)| (k.as_str(), *v)))?;
    Ok(())
}

fn walk(
    b: &mut tar::Builder<&mut dyn Write>,
    root: &Path,
    rel: &Path,
    links: &mut HashMap<(u64, u64), String>,
) -> Result<()> {
    let dir = root.join(rel);
    let mut names: Vec<_> = fs::read_dir(&dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort_by(|a, c| a.as_bytes().cmp(c.as_bytes()));
    if !rel.as_os_str().is_empty() && is_opaque(&dir) {
        let meta = fs::symlink_metadata(&dir)?;
        let mut h = header_for(&meta, tar::EntryType::Regular);
        h.set_mode(0o644);
        b.append_data(&mut h, rel.join(".wh..wh..opq"), io::empty())?;
    }
    for name in names {
        let path = dir.join(&name);
        let relp = rel.join(&name);
        let meta = fs::symlink_metadata(&path)?;
        let ft = meta.file_type();
        if ft.is_char_device() && meta.rdev() == 0 {
            let mut wh = OsStr::new(".wh.").to_os_string();
            wh.push(&name);
            let mut h = header_for(&meta, tar::EntryType::Regular);
            h.set_mode(0o644);
            b.append_data(&mut h, rel.join(wh), io::empty())?;
            continue;
        }
        append_pax(b, &xattrs(&path))?;
        if ft.is_dir() {
            let mut h = header_for(&meta, tar::EntryType::Directory);
            b.append_data(&mut h, &relp, io::empty())?;
            walk(b, root, &relp, links)?;
        } else if ft.is_symlink() {
            let mut h = header_for(&meta, tar::EntryType::Symlink);
            let target = fs::read_link(&path)?;
            b.append_link(&mut h, &relp, &target)?;
        } else if ft.is_file() {
            let key = (meta.dev(), meta.ino());
            if meta.nlink() > 1 {
                if let Some(first) = links.get(&key) {
                    let mut h = header_for(&meta, tar::EntryType::Link);
                    b.append_link(&mut h, &relp, first)?;
                    continue;
                }
                links.insert(key, relp.to_string_lossy().into_owned());
            }
            let mut h = header_for(&meta, tar::EntryType::Regular);
            h.set_size(meta.len());
            let f = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
            b.append_data(&mut h, &relp, f)?;
        } else {
            let typ = if ft.is_char_device() {
                tar::EntryType::Char
            } else if ft.is_block_device() {
                tar::EntryType::Block
            } else if ft.is_fifo() {
                tar::EntryType::Fifo
            } else {
                continue; // sockets are not archived
            };
            let mut h = header_for(&meta, typ);
            let rdev = meta.rdev();
            h.set_device_major(libc::major(rdev))?;
            h.set_device_minor(libc::minor(rdev))?;
            b.append_data(&mut h, &relp, io::empty())?;
        }
    }
    Ok(())
}
