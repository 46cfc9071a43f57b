//! `wharf import`: a tarball becomes an immutable, content-addressed image in one pass.
//!
//! ```text
//!  source ─▶ [reader thread] sniff magic → sha256(source) → gunzip/unzstd → sha256(tar) ─┐
//!                                                                   chunks (bounded) │
//!  [calling thread] tar parse → safe unpack into tmp/import-*/layer ◀────────────────┘
//!  then, under the store lock: syncfs, rename to layers/<diff-id>, write the config blob,
//!  and record layer, image, source and tag in one transaction.
//! ```
//! Hashing and decompression overlap the file creation that bounds unpacking. A failure or a
//! kill at any point leaves only a staging dir (or an unrecorded layer), which the next
//! `Store::open` removes: the store is as before, or the import is complete.

use std::io::{self, BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread;

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

use super::config::{ImageConfig, RunConfig, apply_changes, created_now};
use super::unpack::{UnpackStats, unpack_base, unpack_layer};
use crate::error::user;
use crate::reference::Reference;
use crate::store::Store;

const CHUNK: usize = 256 * 1024;
const CHANNEL_DEPTH: usize = 8;

/// How an import is asked for.
#[derive(Debug, Default)]
pub struct ImportOptions {
    /// docker import's `--change` instructions.
    pub changes: Vec<String>,
    /// `-m`: the history comment.
    pub message: Option<String>,
    /// The tag to give the image.
    pub tag: Option<Reference>,
    /// A progress bar to advance by bytes read (the caller decides whether to show one).
    pub progress: Option<ProgressBar>,
    /// `--max-size`: the most file data the archive may hold (real size); `None` takes
    /// `[import] max_size` of the root config.toml, else 64 GiB.
    pub max_size: Option<u64>,
}

/// What an import made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The image id (sha256 hex of the config blob).
    pub id: String,
    /// The layer's diff id (sha256 hex of the uncompressed tar).
    pub diff_id: String,
    /// sha256 hex of the source bytes as read (equal to `diff_id` for a plain tar).
    pub source_digest: String,
    pub compression: Compression,
    /// The layer was already in the store; the unpacked copy was thrown away.
    pub layer_reused: bool,
    pub stats: UnpackStats,
}

/// The compression of a source, told by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "tar",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

/// Detects the compression from magic bytes, refusing formats wharf does not read.
pub fn detect(head: &[u8]) -> Result<Compression> {
    let unsupported = |what: &str| {
        anyhow::Error::new(
            user(format!(
                "the input is {what}-compressed, which wharf does not read"
            ))
            .hint("recompress it with gzip or zstd, or pass the plain tar"),
        )
    };
    Ok(match head {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
        [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => return Err(unsupported("xz")),
        [b'B', b'Z', b'h', ..] => return Err(unsupported("bzip2")),
        _ => Compression::None,
    })
}

/// Imports from a path, or standard input when `path` is `-`.
pub fn import_path(store: &Store, path: &Path, opts: ImportOptions) -> Result<Imported> {
    if path == Path::new("-") {
        return import_reader(store, Box::new(io::stdin()), None, opts);
    }
    let file = std::fs::File::open(path).map_err(|e| {
        anyhow::Error::new(
            user(format!("cannot open {}: {e}", path.display()))
                .hint("give the path of a tarball, or - to read one from standard input"),
        )
    })?;
    let meta = file.metadata().ok();
    if meta.as_ref().is_some_and(|m| m.is_dir()) {
        return Err(
            user(format!("{} is a directory, not a tarball", path.display()))
                .hint(format!(
                    "tar -C {} -c . | wharf import - NAME:TAG",
                    path.display()
                ))
                .into(),
        );
    }
    import_reader(store, Box::new(file), meta.map(|m| m.len()), opts)
}

/// Imports a tar stream (plain, gzip or zstd) read from `reader`.
pub fn import_reader(
    store: &Store,
    reader: Box<dyn Read + Send>,
    len: Option<u64>,
    opts: ImportOptions,
) -> Result<Imported> {
    // Everything the user can get wrong is checked before a byte is read.
    let mut run = RunConfig::default();
    apply_changes(&mut run, &opts.changes)?;
    let created = created_now()?;
    let max_size = match opts.max_size {
        Some(m) => m,
        None => crate::policy::import_max_size(store.root())?,
    };
    if let Some(pb) = &opts.progress
        && let Some(len) = len
    {
        pb.set_length(len);
    }

    let staged = stage_layer(
        store,
        reader,
        opts.progress.clone(),
        StageMode::Import { max_size },
        "import",
    )?;
    if let Some(pb) = &opts.progress {
        pb.finish_and_clear();
    }
    let hashes = &staged.hashes;
    let cfg = ImageConfig::for_import(&hashes.diff_id, &created, run, opts.message.clone());
    let blob = cfg.to_canonical_json();
    let created_ns = super::created_ns(Some(&created));
    let tags: Vec<(String, String)> = match &opts.tag {
        Some(Reference::Tag { repo, tag }) => vec![(repo.clone(), tag.clone())],
        _ => Vec::new(),
    };
    let (diff_id, source_digest, compression, stats) = (
        hashes.diff_id.clone(),
        hashes.source_digest.clone(),
        hashes.compression,
        staged.stats,
    );
    let committed = super::commit_image(
        store,
        super::NewImage {
            config: &blob,
            created_ns,
            comment: opts.message.clone(),
            layers: vec![staged.into_new_layer()],
            tags,
            source_digest: Some(source_digest.clone()),
            repo_digest: None,
        },
    )?;
    Ok(Imported {
        id: committed.id,
        diff_id,
        source_digest,
        compression,
        layer_reused: committed.reused.first().copied().unwrap_or(false),
        stats,
    })
}

/// A layer unpacked into staging, hashed, not yet in the store.
pub struct StagedLayer {
    pub staging: crate::store::Staging,
    pub dir: std::path::PathBuf,
    pub hashes: Hashes,
    pub stats: UnpackStats,
    /// Hardlinks to files of lower layers, made once those are unpacked.
    pub links: Vec<super::unpack::LowerLink>,
}

impl StagedLayer {
    pub fn into_new_layer(self) -> super::NewLayer {
        super::NewLayer {
            diff_id: self.hashes.diff_id.clone(),
            size: self.stats.bytes,
            tar_size: self.hashes.tar_size,
            entries: self.stats.entries,
            staged: Some((self.staging, self.dir)),
        }
    }
}

/// Reads a tar stream (plain, gzip or zstd) from `reader` into a new staging dir: the one
/// pass of import and pull.
pub fn stage_layer(
    store: &Store,
    reader: Box<dyn Read + Send>,
    progress: Option<ProgressBar>,
    mode: StageMode,
    kind: &str,
) -> Result<StagedLayer> {
    stage_into(store.staging(kind)?, reader, progress, mode)
}

/// What a staged stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageMode {
    /// `wharf import`: a root filesystem (an image archive is refused), whose files may
    /// hold at most `max_size` bytes (`--max-size`, `[import] max_size`).
    Import { max_size: u64 },
    /// An image archive to read (`wharf load`).
    Archive,
    /// A layer of a stack: whiteouts in overlay's form; its files hold at most `max_size`
    /// bytes (pull and load: `[import] max_size`).
    Layer { max_size: u64 },
}

/// [`stage_layer`] into a staging dir made beforehand (the store is not touched: layers are
/// read side by side on other threads).
pub fn stage_into(
    staging: crate::store::Staging,
    reader: Box<dyn Read + Send>,
    progress: Option<ProgressBar>,
    mode: StageMode,
) -> Result<StagedLayer> {
    let layer = staging.path().join("layer");
    std::fs::create_dir(&layer).with_context(|| format!("cannot create {}", layer.display()))?;

    let (tx, rx) = sync_channel::<Vec<u8>>(CHANNEL_DEPTH);
    let cancel = Arc::new(AtomicBool::new(false));
    let reader_thread = {
        let cancel = Arc::clone(&cancel);
        thread::Builder::new()
            .name("import-read".into())
            .spawn(move || read_and_hash(reader, tx, &cancel, progress))
            .context("cannot start the import reader thread")?
    };
    let unpacked = match mode {
        StageMode::Layer { max_size } => unpack_layer(ChannelReader::new(rx), &layer, max_size),
        StageMode::Import { max_size } => {
            unpack_base(ChannelReader::new(rx), &layer, true, max_size).map(|s| (s, Vec::new()))
        }
        StageMode::Archive => {
            unpack_base(ChannelReader::new(rx), &layer, false, u64::MAX).map(|s| (s, Vec::new()))
        }
    };
    if unpacked.is_err() {
        cancel.store(true, Ordering::Relaxed);
    }
    let hashed = reader_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the import reader thread panicked"))?;
    // A decoding error (bad gzip checksum, truncated zstd) explains a tar error that
    // followed from it, so it is reported first; "cancelled" only echoes the unpacker's.
    let ((stats, links), hashes) = match (unpacked, hashed) {
        (Ok(u), Ok(hashes)) => (u, hashes),
        (_, Err(e)) if e.downcast_ref::<Cancelled>().is_none() => return Err(e),
        (Err(e), _) => return Err(e),
        (Ok(_), Err(e)) => return Err(e),
    };
    Ok(StagedLayer {
        staging,
        dir: layer,
        hashes,
        stats,
        links,
    })
}

pub(crate) fn sync_fs(path: &Path) -> Result<()> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    nix::unistd::syncfs(&f)
        .with_context(|| format!("cannot sync the filesystem of {}", path.display()))
}

/// The reader thread stopped because the unpacker failed.
#[derive(Debug, thiserror::Error)]
#[error("import cancelled")]
struct Cancelled;

/// The digests of a layer stream.
pub struct Hashes {
    /// sha256 hex of the uncompressed tar.
    pub diff_id: String,
    /// sha256 hex of the bytes as read.
    pub source_digest: String,
    pub tar_size: u64,
    pub compression: Compression,
    /// Bytes as read (the compressed blob's size).
    pub source_size: u64,
}

/// Counts and hashes the bytes that pass through it, advancing a progress bar.
struct Tee<R> {
    inner: R,
    hasher: Option<Sha256>,
    progress: Option<ProgressBar>,
    count: u64,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        if let Some(pb) = &self.progress {
            pb.inc(n as u64);
        }
        Ok(n)
    }
}

fn read_and_hash(
    reader: Box<dyn Read + Send>,
    tx: SyncSender<Vec<u8>>,
    cancel: &AtomicBool,
    progress: Option<ProgressBar>,
) -> Result<Hashes> {
    let mut br = BufReader::with_capacity(CHUNK, reader);
    // Sniff up to 6 bytes; a pipe may hand them over in pieces.
    let mut head = Vec::with_capacity(6);
    while head.len() < 6 {
        let mut b = [0u8; 6];
        let n = br
            .read(&mut b[..6 - head.len()])
            .map_err(|e| read_error("cannot read the input", e))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&b[..n]);
    }
    if head.is_empty() {
        return Err(user("the input is empty: expected a tar archive (plain, gzip or zstd)")
            .hint("check the path, or that the command piping into `wharf import -` produced output")
            .into());
    }
    let compression = detect(&head)?;
    let mut raw = Tee {
        inner: io::Cursor::new(head).chain(br),
        // A plain tar's source digest is its diff id: hash once.
        hasher: (compression != Compression::None).then(Sha256::new),
        progress,
        count: 0,
    };
    let mut pump = Pump {
        tx: Some(tx),
        cancel,
        hash: Sha256::new(),
        size: 0,
        compression,
    };
    // Each decoder is a concrete type so the raw Tee can be taken back out of it. After the
    // decoder's end, the raw rest is drained too: the source digest covers every byte.
    let raw_tee = match compression {
        Compression::None => {
            pump.run(&mut raw)?;
            None
        }
        Compression::Gzip => {
            let mut d = flate2::read::MultiGzDecoder::new(raw);
            pump.run(&mut d)?;
            Some(d.into_inner())
        }
        Compression::Zstd => {
            let mut d =
                zstd::stream::read::Decoder::new(raw).context("cannot start zstd decoding")?;
            pump.run(&mut d)?;
            Some(d.finish().into_inner())
        }
    };
    let diff_id = hex::encode(pump.hash.finalize());
    let (source_digest, source_size) = match raw_tee {
        None => (diff_id.clone(), pump.size),
        Some(mut tee) => {
            io::copy(&mut tee, &mut io::sink())
                .map_err(|e| read_error("cannot read the input", e))?;
            let d = hex::encode(tee.hasher.take().unwrap_or_default().finalize());
            (d, tee.count)
        }
    };
    Ok(Hashes {
        diff_id,
        source_digest,
        tar_size: pump.size,
        compression,
        source_size,
    })
}

/// Moves decoded chunks from a decoder to the unpacker, hashing them on the way.
struct Pump<'a> {
    tx: Option<SyncSender<Vec<u8>>>,
    cancel: &'a AtomicBool,
    hash: Sha256,
    size: u64,
    compression: Compression,
}

impl Pump<'_> {
    fn run(&mut self, decoded: &mut dyn Read) -> Result<()> {
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                // The unpacker failed; its error is the one to report.
                return Err(Cancelled.into());
            }
            let mut buf = vec![0u8; CHUNK];
            let n = match decoded.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let what = match self.compression {
                        Compression::None => "cannot read the input".to_string(),
                        c => format!("the {} stream is corrupt or truncated", c.name()),
                    };
                    return Err(read_error(&what, e));
                }
            };
            buf.truncate(n);
            self.hash.update(&buf);
            self.size += n as u64;
            // When the tar parser has seen the end-of-archive marker it stops listening;
            // hashing goes on to the true end of the stream.
            if let Some(tx) = &self.tx
                && tx.send(buf).is_err()
            {
                self.tx = None;
            }
        }
        self.tx = None;
        Ok(())
    }
}

fn read_error(what: &str, e: io::Error) -> anyhow::Error {
    anyhow::Error::new(
        user(format!("{what}: {e}"))
            .hint("the tarball is damaged or was cut short; re-create or re-download it"),
    )
}

/// Reads the chunks the reader thread sends.
struct ChannelReader {
    rx: Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    fn new(rx: Receiver<Vec<u8>>) -> Self {
        ChannelReader {
            rx,
            cur: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.cur = chunk;
                    self.pos = 0;
                }
                // The reader thread ended: at EOF, or on an error it reports itself.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_compression_by_magic() {
        assert_eq!(detect(&[0x1f, 0x8b, 8, 0]).unwrap(), Compression::Gzip);
        assert_eq!(
            detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]).unwrap(),
            Compression::Zstd
        );
        assert_eq!(detect(b"etc/\0\0").unwrap(), Compression::None);
        assert!(format!("{:#}", detect(b"\xfd7zXZ\0").unwrap_err()).contains("xz"));
        assert!(format!("{:#}", detect(b"BZh91A").unwrap_err()).contains("bzip2"));
    }
}
