//! Reading manifests and the files they name (env files, image sources) from places that may
//! not be trusted, the way sshd's `StrictModes` treats `authorized_keys`.
//!
//! A manifest says which containers run as root and what they mount, so whoever can write
//! it, or the directory it is in, or any directory above, owns the host. wharf refuses a
//! manifest, env file, image source or manifest directory that
//! - is owned by a user other than root or the caller (the real uid), or
//! - is writable by its group or by others,
//!
//! and applies the same rule to every directory above it, up to `/`. Both the path as given
//! and its resolved form are walked, so a symlink in an open directory is refused as well
//! as one pointing into one; a symlink itself must be owned by root or the caller. A
//! directory with the sticky bit (`/tmp`) may be writable by others when it is an ancestor,
//! since nobody else can rename or remove what is in it; the directory holding a manifest
//! may not be, since anyone could add a `*.toml` file to it. `--insecure-manifests` skips
//! these checks, never the ones on the file's type and size.
//!
//! Every file is opened with `O_NONBLOCK` (a FIFO does not block the open) and checked with
//! `fstat` before anything is read: it must be a regular file of at most
//! [`MAX_MANIFEST_BYTES`], and reading stops there whatever `fstat` said.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// The largest manifest or env file read (4 MiB); a bigger one is refused.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// How manifests are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// `--insecure-manifests`: skip the owner and mode checks.
    pub insecure: bool,
}

/// What is being read, for the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Manifest,
    EnvFile,
    ImageSource,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Manifest => "manifest",
            Kind::EnvFile => "env file",
            Kind::ImageSource => "image source",
        }
    }
}

/// Why a file was refused; never holds any of its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub message: String,
    pub hint: String,
}

fn refused(message: String, hint: &str) -> Refused {
    Refused {
        message,
        hint: hint.to_string(),
    }
}

const INSECURE_HINT: &str = "make it owned by root (or you) and writable by its owner only \
     (chown root; chmod go-w), or pass --insecure-manifests if you trust everyone who can write it";

fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::getuid().as_raw()
}

/// The owner and mode rule for one path. `holder`: the directory directly holding manifests
/// (the sticky bit does not excuse it).
fn check_meta(
    path: &Path,
    meta: &std::fs::Metadata,
    what: &str,
    holder: bool,
) -> Result<(), Refused> {
    if !trusted_owner(meta.uid()) {
        return Err(refused(
            format!(
                "{what} {} is owned by uid {}, not by root or you: whoever owns it can decide what wharf runs as root",
                path.display(),
                meta.uid()
            ),
            INSECURE_HINT,
        ));
    }
    let mode = meta.mode();
    let sticky_dir = meta.is_dir() && mode & 0o1000 != 0 && !holder;
    if mode & 0o022 != 0 && !sticky_dir {
        let who = if mode & 0o002 != 0 {
            "everyone"
        } else {
            "its group"
        };
        return Err(refused(
            format!(
                "{what} {} is writable by {who} (mode {:o}): anyone who can write it can decide what wharf runs as root",
                path.display(),
                mode & 0o7777
            ),
            INSECURE_HINT,
        ));
    }
    Ok(())
}

/// `path` made absolute without resolving symlinks (`.` and `..` folded lexically).
fn absolute(path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(path)
    };
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

/// Checks every directory above `path` (the path as given, then its resolved form): with
/// `holds_file`, the first one (the directory holding the file) strictly, the others
/// allowing a sticky bit.
fn check_parents(path: &Path, holds_file: bool) -> Result<(), Refused> {
    let given = absolute(path);
    let resolved = std::fs::canonicalize(path).unwrap_or_else(|_| given.clone());
    for p in [&given, &resolved] {
        let mut holder = holds_file;
        let mut dir = p.parent();
        while let Some(d) = dir {
            let meta = std::fs::metadata(d).map_err(|e| {
                refused(
                    format!("cannot check the directory {}: {e}", d.display()),
                    "check the path and its permissions",
                )
            })?;
            check_meta(d, &meta, "the directory", holder)?;
            holder = false;
            dir = d.parent();
        }
    }
    Ok(())
}

/// Checks a manifest directory (given to `-f` or `watch`): it and every directory above.
pub fn check_dir(path: &Path, opts: LoadOptions) -> Result<(), Refused> {
    if opts.insecure {
        return Ok(());
    }
    let meta = std::fs::metadata(path).map_err(|e| {
        refused(
            format!("cannot read {}: {e}", path.display()),
            "check the path",
        )
    })?;
    check_meta(path, &meta, "the manifest directory", true)?;
    check_parents(path, false)
}

/// Checks `path` without reading it (an image source, which the import reads later).
pub fn check_file(path: &Path, kind: Kind, opts: LoadOptions) -> Result<(), Refused> {
    if opts.insecure {
        return Ok(());
    }
    let what = kind.name();
    if let Ok(l) = std::fs::symlink_metadata(path)
        && l.file_type().is_symlink()
        && !trusted_owner(l.uid())
    {
        return Err(refused(
            format!(
                "the symlink {} ({what}) is owned by uid {}, not by root or you",
                path.display(),
                l.uid()
            ),
            INSECURE_HINT,
        ));
    }
    let meta = std::fs::metadata(path).map_err(|e| {
        refused(
            format!("cannot read {what} {}: {e}", path.display()),
            "check the path and its permissions",
        )
    })?;
    check_meta(path, &meta, what, false)?;
    check_parents(path, true)
}

/// Reads a manifest or env file: trusted (unless `opts.insecure`), a regular file, at most
/// [`MAX_MANIFEST_BYTES`], UTF-8. An error names the file and the reason, never its content.
pub fn read(path: &Path, kind: Kind, opts: LoadOptions) -> Result<String, Refused> {
    let what = kind.name();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            refused(
                format!("cannot read {what} {}: {e}", path.display()),
                "check the path and its permissions",
            )
        })?;
    let meta = file.metadata().map_err(|e| {
        refused(
            format!("cannot stat {what} {}: {e}", path.display()),
            "check the path",
        )
    })?;
    if !meta.is_file() {
        return Err(refused(
            format!(
                "{what} {} is not a regular file (a {})",
                path.display(),
                file_kind(&meta)
            ),
            "give a regular file",
        ));
    }
    if !opts.insecure {
        // The file opened, so no swap between the check and the read.
        check_meta(path, &meta, what, false)?;
        check_file(path, kind, opts)?;
    }
    let too_big = || {
        refused(
            format!(
                "{what} {} is larger than {} MiB",
                path.display(),
                MAX_MANIFEST_BYTES >> 20
            ),
            "split it into several files of a directory project",
        )
    };
    if meta.len() > MAX_MANIFEST_BYTES {
        return Err(too_big());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    read_capped(file, &mut bytes).map_err(|e| {
        refused(
            format!("cannot read {what} {}: {e}", path.display()),
            "check the file",
        )
    })?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(too_big());
    }
    String::from_utf8(bytes).map_err(|e| {
        refused(
            format!(
                "{what} {} is not UTF-8 text (byte {})",
                path.display(),
                e.utf8_error().valid_up_to()
            ),
            "save it as UTF-8",
        )
    })
}

/// Reads at most one byte more than the limit (which tells a file that grew).
fn read_capped(file: File, out: &mut Vec<u8>) -> std::io::Result<()> {
    file.take(MAX_MANIFEST_BYTES + 1).read_to_end(out)?;
    Ok(())
}

fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn fifo_and_devices_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("m.toml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let insecure = LoadOptions { insecure: true };
        let e = read(&fifo, Kind::Manifest, insecure).unwrap_err();
        assert!(e.message.contains("not a regular file (a FIFO)"), "{e:?}");
        let e = read(Path::new("/dev/zero"), Kind::Manifest, insecure).unwrap_err();
        assert!(e.message.contains("character device"), "{e:?}");
    }

    #[test]
    fn size_is_capped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.toml");
        std::fs::write(&p, vec![b'#'; MAX_MANIFEST_BYTES as usize + 1]).unwrap();
        let e = read(&p, Kind::Manifest, LoadOptions::default()).unwrap_err();
        assert!(e.message.contains("larger than 4 MiB"), "{e:?}");
        std::fs::write(&p, vec![b'#'; MAX_MANIFEST_BYTES as usize]).unwrap();
        assert!(read(&p, Kind::Manifest, LoadOptions::default()).is_ok());
    }

    #[test]
    fn open_files_and_dirs_are_refused_unless_insecure() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.toml");
        std::fs::write(&p, "").unwrap();
        assert!(read(&p, Kind::Manifest, LoadOptions::default()).is_ok());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = read(&p, Kind::Manifest, LoadOptions::default()).unwrap_err();
        assert!(e.message.contains("writable by everyone"), "{e:?}");
        assert!(read(&p, Kind::Manifest, LoadOptions { insecure: true }).is_ok());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        // The holding directory: sticky or not, open to others is refused.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let e = read(&p, Kind::Manifest, LoadOptions::default()).unwrap_err();
        assert!(e.message.contains("the directory"), "{e:?}");
        assert!(check_dir(dir.path(), LoadOptions::default()).is_err());
        // As an ancestor, a sticky directory is fine (tempdirs live in /tmp).
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(check_dir(&sub, LoadOptions::default()).is_ok());
    }

    #[test]
    fn absolute_folds_dots() {
        assert_eq!(absolute(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
    }
}
