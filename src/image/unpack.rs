//! Unpacks a tar stream into a directory, safely.
//!
//! Every path is resolved with `openat2(RESOLVE_IN_ROOT)` against a descriptor of the target
//! directory, so the kernel treats that directory as `/`: a symlink in the archive (even
//! `evil -> /etc`, or `../../..`) resolves inside the layer, exactly as it will inside the
//! container. Nothing can be created outside, whatever the order or the content of the
//! entries, and no check-then-use race is left to win.
//!
//! Names are cleaned lexically first: a leading `/` and `.` components are dropped (docker
//! does the same); a `..` that would climb above the root, a name or link longer than the
//! kernel accepts, or a NUL byte refuses the whole archive with an error naming the entry.
//! A later entry replaces an earlier one of the same name, as `tar -x` does.
//!
//! Kept: file data, ownership, mode (set-id bits included), mtime, symlinks, hardlinks,
//! device nodes and fifos, and extended attributes from PAX `SCHILY.xattr.*` records.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::{
    FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmodat, mkdirat, mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, LinkatFlags, Uid, UnlinkatFlags, fchownat, linkat, symlinkat, unlinkat};

use crate::error::user;

const PATH_MAX: usize = 4096;
const NAME_MAX: usize = 255;
/// Files at least this big have their writeback started as soon as they are written.
const WRITEBACK_MIN: u64 = 128 * 1024;

/// What an unpack wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UnpackStats {
    /// Entries applied (whiteouts and skipped types not counted).
    pub entries: u64,
    /// Bytes of regular file data written.
    pub bytes: u64,
}

/// Unpacks the archive read from `reader` into `dest`, an existing empty directory: a base
/// layer (whiteouts are dropped: there is nothing below to hide).
pub fn unpack<R: Read>(reader: R, dest: &Path) -> Result<UnpackStats> {
    unpack_base(reader, dest, false, u64::MAX)
}

/// [`unpack`], refusing the archive once its files hold more than `max_size` bytes (counted
/// at their real size: a GNU sparse file's holes count, though they are not written); with
/// `refuse_image_archive`, an archive whose top level holds an image archive's
/// `manifest.json`, `oci-layout` or `repositories` is refused (`wharf import` of a
/// `docker save` output), pointing at `wharf load`.
pub fn unpack_base<R: Read>(
    reader: R,
    dest: &Path,
    refuse_image_archive: bool,
    max_size: u64,
) -> Result<UnpackStats> {
    let mut u = Unpacker::new(dest)?;
    u.refuse_image_archive = refuse_image_archive;
    u.max_size = max_size;
    unpack_with(reader, u)
}

/// [`unpack`] into the directory `dest` is a descriptor of (`wharf cp` into a container:
/// the directory was itself resolved inside the container's root). Existing entries of the
/// same names are replaced; nothing is created outside `dest`.
pub fn unpack_into<R: Read>(reader: R, dest: OwnedFd) -> Result<UnpackStats> {
    unpack_with(reader, Unpacker::from_fd(dest))
}

fn unpack_with<R: Read>(reader: R, mut u: Unpacker) -> Result<UnpackStats> {
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().context("cannot read the tar stream")?;
    for entry in entries {
        let mut entry = entry.map_err(|e| {
            anyhow::Error::new(
                user(format!(
                    "the tar stream is corrupt or truncated: {}",
                    tar_reason(&e)
                ))
                .hint("check the tarball (tar -tvf FILE); re-create it if it was cut short"),
            )
        })?;
        u.entry(&mut entry)?;
    }
    u.finish()?;
    Ok(u.stats)
}

/// A hardlink whose target is not in its own layer: made by [`link_from_lowers`] once the
/// layers below are unpacked too (layers are unpacked side by side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LowerLink {
    /// The link's cleaned path, and its target's, inside the layer.
    pub name: Vec<u8>,
    pub target: Vec<u8>,
}

/// Unpacks one layer of an image into `dest` in overlay's form: `.wh.NAME` becomes a 0/0
/// character device `NAME`, `.wh..wh..opq` the `trusted.overlay.opaque` xattr on its
/// directory (set at the end, so its place in the tar does not matter). A hardlink to a file
/// this layer lacks is returned, for [`link_from_lowers`]. The layer's files may hold at most
/// `max_size` bytes, as [`unpack_base`] counts them.
pub fn unpack_layer<R: Read>(
    reader: R,
    dest: &Path,
    max_size: u64,
) -> Result<(UnpackStats, Vec<LowerLink>)> {
    let mut u = Unpacker::new(dest)?;
    u.max_size = max_size;
    u.layer = Some(LayerState::default());
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().context("cannot read the tar stream")?;
    for entry in entries {
        let mut entry = entry.map_err(|e| {
            anyhow::Error::new(
                user(format!("the tar stream is corrupt or truncated: {e}"))
                    .hint("check the layer (tar -tvf FILE); re-create it if it was cut short"),
            )
        })?;
        u.entry(&mut entry)?;
    }
    let links = u
        .layer
        .as_mut()
        .map(|l| std::mem::take(&mut l.links))
        .unwrap_or_default();
    u.finish()?;
    Ok((u.stats, links))
}

/// Makes the hardlinks of `dest` whose targets are in lower layers (`lowers`, top first):
/// each becomes a copy of the highest lower layer's file (overlay would copy it up on the
/// first write anyway). A link whose name a later entry of its layer took is left out.
pub fn link_from_lowers(
    dest: &Path,
    lowers: &[std::path::PathBuf],
    links: &[LowerLink],
) -> Result<()> {
    if links.is_empty() {
        return Ok(());
    }
    let mut u = Unpacker::new(dest)?;
    let mut state = LayerState::default();
    for l in lowers {
        state.lowers.push(
            nix::fcntl::open(
                l,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .with_context(|| format!("cannot open the lower layer {}", l.display()))?,
        );
    }
    u.layer = Some(state);
    for link in links {
        let parts = clean(&link.name)?;
        let tparts = clean(&link.target)?;
        let Some((&base, dir_parts)) = parts.split_last() else {
            continue;
        };
        u.dir(&link.name, dir_parts)?;
        let parent = match &u.cached {
            Some((_, fd)) => fd.as_fd(),
            None => unreachable!("dir() fills the cache"),
        };
        match nix::sys::stat::fstatat(
            parent,
            OsStr::from_bytes(base),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(_) => continue,
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(refuse(&link.name, &format!("cannot inspect it: {e}"))),
        }
        u.copy_from_lower(&link.name, &link.target, &tparts, parent, &cstr(base)?)?;
    }
    Ok(())
}

/// Directory metadata applied at the end: creating children changes a directory's mtime.
struct DirTimes {
    path: Vec<u8>,
    mtime: i64,
}

/// What unpacking a layer above others keeps track of.
#[derive(Default)]
struct LayerState {
    /// Hardlinks to files this layer lacks.
    links: Vec<LowerLink>,
    /// The layers below, top first.
    lowers: Vec<OwnedFd>,
    /// Directories marked opaque (cleaned paths), applied in `finish`.
    opaque: Vec<Vec<u8>>,
    /// Whiteout devices this unpack made (cleaned paths): a directory that replaces one is
    /// opaque (the lower one was deleted, then made anew).
    whiteouts: std::collections::HashSet<Vec<u8>>,
}

const OPAQUE_XATTR: &[u8] = b"trusted.overlay.opaque\0";

struct Unpacker {
    root: OwnedFd,
    refuse_image_archive: bool,
    /// Set when unpacking a layer above others (whiteouts kept in overlay's form).
    layer: Option<LayerState>,
    /// The last parent directory opened, by cleaned path: tars list a directory's entries
    /// together, so this saves a path walk per entry.
    cached: Option<(Vec<u8>, OwnedFd)>,
    dir_times: Vec<DirTimes>,
    /// The mtime of the archive's root entry ("./"), applied last.
    root_mtime: Option<i64>,
    stats: UnpackStats,
    euid: u32,
    egid: u32,
    /// The most file data an archive may hold (its real size).
    max_size: u64,
}

/// The reason of a tar parse error without what the tar crate quotes of the input: it cites
/// header fields and the entry's name ("... when getting cksum for NAME"), which for a file
/// that is not a tar at all (a secret given as an image source) are its first bytes.
fn tar_reason(e: &io::Error) -> String {
    let m = e.to_string();
    match m.split_once(": ") {
        Some((reason, _)) => format!("{reason} (in a tar header)"),
        None => m,
    }
}

/// Blocks of zeros this long in a sparse file's data are skipped (left as holes).
const HOLE_BLOCK: usize = 4096;
static ZEROS: [u8; HOLE_BLOCK] = [0; HOLE_BLOCK];

fn how(flags: OFlag) -> OpenHow {
    OpenHow::new().flags(flags | OFlag::O_CLOEXEC).resolve(
        ResolveFlag::RESOLVE_IN_ROOT
            | ResolveFlag::RESOLVE_NO_MAGICLINKS
            | ResolveFlag::RESOLVE_NO_XDEV,
    )
}

/// Display form of an entry name for errors: lossy, and cut when absurdly long.
fn shown(name: &[u8]) -> String {
    let s = String::from_utf8_lossy(name);
    if s.len() > 120 {
        format!(
            "{}... ({} bytes)",
            &s[..s.floor_char_boundary(100)],
            name.len()
        )
    } else {
        s.into_owned()
    }
}

fn refuse(name: &[u8], why: &str) -> anyhow::Error {
    anyhow::Error::new(
        user(format!("refusing tar entry {:?}: {why}", shown(name)))
            .hint("the archive is broken or crafted to escape its directory; nothing was imported"),
    )
}

/// Cleans an entry name lexically: drops `/` prefixes and `.`, applies `..`, and refuses
/// names that climb out, hold NUL, or exceed PATH_MAX / NAME_MAX. Returns the components.
fn clean(name: &[u8]) -> Result<Vec<&[u8]>> {
    if name.contains(&0) {
        return Err(refuse(name, "the name contains a NUL byte"));
    }
    if name.len() >= PATH_MAX {
        return Err(refuse(
            name,
            &format!("the name is {} bytes, longer than PATH_MAX", name.len()),
        ));
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in name.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if parts.pop().is_none() {
                    return Err(refuse(name, "it climbs out of the image with '..'"));
                }
            }
            c if c.len() > NAME_MAX => {
                return Err(refuse(
                    name,
                    &format!(
                        "a path component is {} bytes, longer than NAME_MAX",
                        c.len()
                    ),
                ));
            }
            c => parts.push(c),
        }
    }
    Ok(parts)
}

fn join(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(&b'/')
}

fn cstr(b: &[u8]) -> Result<CString> {
    CString::new(b).map_err(|_| anyhow::anyhow!("name contains a NUL byte"))
}

impl Unpacker {
    fn new(dest: &Path) -> Result<Self> {
        let root = nix::fcntl::open(
            dest,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("cannot open {}", dest.display()))?;
        Ok(Unpacker::from_fd(root))
    }

    fn from_fd(root: OwnedFd) -> Self {
        Unpacker {
            root,
            refuse_image_archive: false,
            layer: None,
            cached: None,
            dir_times: Vec::new(),
            root_mtime: None,
            stats: UnpackStats::default(),
            euid: Uid::effective().as_raw(),
            egid: Gid::effective().as_raw(),
            max_size: u64::MAX,
        }
    }

    /// Opens (creating as needed, mode 0755) the directory `parts`, resolved inside the root.
    fn dir(&mut self, name: &[u8], parts: &[&[u8]]) -> Result<BorrowedFd<'_>> {
        let key = join(parts);
        if self.cached.as_ref().is_none_or(|(p, _)| *p != key) {
            let fd = self.open_dir(name, parts)?;
            self.cached = Some((key, fd));
        }
        // Just set above when it was missing.
        match &self.cached {
            Some((_, fd)) => Ok(fd.as_fd()),
            None => unreachable!("cache filled above"),
        }
    }

    fn open_dir(&self, name: &[u8], parts: &[&[u8]]) -> Result<OwnedFd> {
        if parts.is_empty() {
            return Ok(self.root.try_clone()?);
        }
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
        match openat2(
            self.root.as_fd(),
            OsStr::from_bytes(&join(parts)),
            how(flags),
        ) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) => {}
            Err(e) => {
                return Err(refuse(
                    name,
                    &format!("its parent directory cannot be opened: {e}"),
                ));
            }
        }
        // Walk down, creating what is missing (archives may omit directory entries).
        let mut fd = self.root.try_clone()?;
        for part in parts {
            let p = OsStr::from_bytes(part);
            fd = match openat2(fd.as_fd(), p, how(flags)) {
                Ok(next) => next,
                Err(Errno::ENOENT) => {
                    match mkdirat(fd.as_fd(), p, Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => {
                            return Err(refuse(
                                name,
                                &format!("cannot create its parent directory: {e}"),
                            ));
                        }
                    }
                    openat2(fd.as_fd(), p, how(flags)).map_err(|e| {
                        refuse(name, &format!("cannot open its parent directory: {e}"))
                    })?
                }
                Err(Errno::ENOTDIR) => {
                    return Err(refuse(
                        name,
                        &format!("{:?} on its path is not a directory", shown(part)),
                    ));
                }
                Err(e) => {
                    return Err(refuse(
                        name,
                        &format!("cannot open its parent directory: {e}"),
                    ));
                }
            };
        }
        Ok(fd)
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let name = entry.path_bytes().into_owned();
        let kind = entry.header().entry_type();
        let parts = clean(&name)?;
        if self.refuse_image_archive
            && let [top] = parts[..]
            && matches!(top, b"manifest.json" | b"oci-layout" | b"repositories")
        {
            return Err(anyhow::Error::new(
                user(format!(
                    "this is an image archive (it holds {}), not a root filesystem tarball",
                    shown(top)
                ))
                .hint("load it with `wharf load -i FILE`; import takes a root filesystem tar"),
            ));
        }
        if parts.last().is_some_and(|p| p.starts_with(b".wh.")) {
            return self.whiteout(&name, &parts);
        }
        let xattrs = xattrs_of(entry);
        let header = entry.header();
        let major = header.device_major().ok().flatten().unwrap_or(0);
        let minor = header.device_minor().ok().flatten().unwrap_or(0);
        let mode = header
            .mode()
            .map_err(|e| refuse(&name, &format!("bad mode field: {e}")))?
            & 0o7777;
        let uid = header
            .uid()
            .map_err(|e| refuse(&name, &format!("bad uid field: {e}")))?;
        let gid = header
            .gid()
            .map_err(|e| refuse(&name, &format!("bad gid field: {e}")))?;
        let mtime = header
            .mtime()
            .map_err(|e| refuse(&name, &format!("bad mtime field: {e}")))?
            as i64;
        let (uid, gid) = (
            u32::try_from(uid).map_err(|_| refuse(&name, "uid out of range"))?,
            u32::try_from(gid).map_err(|_| refuse(&name, "gid out of range"))?,
        );

        let Some((&base, dir_parts)) = parts.split_last() else {
            // The root itself ("./"): take its mode and owner; nothing to create.
            if kind.is_dir() {
                self.meta_root(uid, gid, mode, mtime)?;
            }
            return Ok(());
        };
        let base_c = cstr(base)?;
        let is_dir = kind.is_dir();
        // A directory entry for an existing directory only updates its metadata; anything
        // else replaces what is there.
        self.dir(&name, dir_parts)?;
        self.make_room(&name, dir_parts, base, is_dir)?;
        self.dir(&name, dir_parts)?;
        // Borrow the cached descriptor through the field (not a dup per entry): the code
        // below only reads `self` or writes other fields.
        let parent = match &self.cached {
            Some((_, fd)) => fd.as_fd(),
            None => unreachable!("dir() fills the cache"),
        };

        use tar::EntryType as T;
        match kind {
            T::Regular | T::Continuous | T::GNUSparse => {
                let fd = openat(
                    parent,
                    base_c.as_c_str(),
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|e| refuse(&name, &format!("cannot create it: {e}")))?;
                let mut file = File::from(fd);
                let n = self.copy_data(&name, entry, &mut file, kind == T::GNUSparse)?;
                self.stats.bytes += n;
                if n >= WRITEBACK_MIN {
                    // Start writing the data back now, asynchronously: the syncfs before
                    // the commit then waits for less, and the disk works while we unpack.
                    // SAFETY: sync_file_range only reads its integer arguments.
                    let _ = unsafe {
                        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE)
                    };
                }
                self.owner_mode_xattrs(&name, parent, base, uid, gid, mode, &xattrs, false)?;
                set_mtime(parent, base, mtime);
            }
            T::Directory => {
                match mkdirat(parent, base_c.as_c_str(), Mode::from_bits_truncate(0o700)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => {
                        return Err(refuse(&name, &format!("cannot create the directory: {e}")));
                    }
                }
                self.owner_mode_xattrs(&name, parent, base, uid, gid, mode, &xattrs, false)?;
                self.dir_times.push(DirTimes {
                    path: join(&parts),
                    mtime,
                });
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| refuse(&name, "the symlink has no target"))?
                    .into_owned();
                if target.len() >= PATH_MAX || target.contains(&0) {
                    return Err(refuse(
                        &name,
                        "the symlink target is too long or holds a NUL byte",
                    ));
                }
                symlinkat(OsStr::from_bytes(&target), parent, base_c.as_c_str())
                    .map_err(|e| refuse(&name, &format!("cannot create the symlink: {e}")))?;
                self.owner_mode_xattrs(&name, parent, base, uid, gid, mode, &xattrs, true)?;
                set_mtime(parent, base, mtime);
            }
            T::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| refuse(&name, "the hardlink has no target"))?
                    .into_owned();
                let tparts = clean(&target)
                    .map_err(|_| refuse(&name, "its hardlink target climbs out of the image"))?;
                let Some((&tbase, tdir)) = tparts.split_last() else {
                    return Err(refuse(&name, "a hardlink to the root directory"));
                };
                let tparent = if tdir.is_empty() {
                    self.root.try_clone()?
                } else {
                    match openat2(
                        self.root.as_fd(),
                        OsStr::from_bytes(&join(tdir)),
                        how(OFlag::O_PATH | OFlag::O_DIRECTORY),
                    ) {
                        Err(Errno::ENOENT) if self.layer.is_some() => {
                            self.defer_link(&parts, &tparts);
                            return Ok(());
                        }
                        r => r,
                    }
                    .map_err(|e| {
                        refuse(
                            &name,
                            &format!(
                                "its hardlink target {:?} cannot be found: {e}",
                                shown(&target)
                            ),
                        )
                    })?
                };
                match linkat(
                    tparent.as_fd(),
                    OsStr::from_bytes(tbase),
                    parent,
                    base_c.as_c_str(),
                    LinkatFlags::empty(),
                ) {
                    Ok(()) => {}
                    Err(Errno::ENOENT) if self.layer.is_some() => {
                        self.defer_link(&parts, &tparts);
                        return Ok(());
                    }
                    Err(e) => {
                        return Err(refuse(
                            &name,
                            &format!("cannot link to {:?}: {e}", shown(&target)),
                        ));
                    }
                }
            }
            T::Char | T::Block | T::Fifo => {
                let sflag = match kind {
                    T::Char => SFlag::S_IFCHR,
                    T::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let dev = nix::sys::stat::makedev(major.into(), minor.into());
                mknodat(
                    parent,
                    base_c.as_c_str(),
                    sflag,
                    Mode::from_bits_truncate(0o600),
                    dev,
                )
                .map_err(|e| refuse(&name, &format!("cannot create the device node: {e}")))?;
                self.owner_mode_xattrs(&name, parent, base, uid, gid, mode, &xattrs, false)?;
                set_mtime(parent, base, mtime);
            }
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => return Ok(()),
            other => {
                tracing::warn!(
                    "skipping tar entry {} of unsupported type {other:?}",
                    shown(&name)
                );
                return Ok(());
            }
        }
        self.stats.entries += 1;
        Ok(())
    }

    /// A `.wh.` entry: dropped in a base layer; in a layer above others, turned into
    /// overlay's whiteout (a 0/0 character device) or opaque mark.
    fn whiteout(&mut self, name: &[u8], parts: &[&[u8]]) -> Result<()> {
        let Some((&base, dir_parts)) = parts.split_last() else {
            return Ok(());
        };
        if self.layer.is_none() {
            tracing::debug!("skipping whiteout {} in a base layer", shown(name));
            return Ok(());
        }
        if base == b".wh..wh..opq" {
            // The directory may come later in the tar, or not at all (then it is made).
            self.dir(name, dir_parts)?;
            if let Some(layer) = &mut self.layer {
                layer.opaque.push(join(dir_parts));
            }
            return Ok(());
        }
        if base.starts_with(b".wh..wh.") {
            // AUFS bookkeeping (.wh..wh.plnk, .wh..wh.aufs): nothing to apply.
            tracing::debug!("skipping AUFS metadata {}", shown(name));
            return Ok(());
        }
        let target = &base[4..];
        if target.is_empty() || target == b"." || target == b".." {
            return Err(refuse(name, "a whiteout of no file (or of . or ..)"));
        }
        let mut path = join(dir_parts);
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(target);
        self.dir(name, dir_parts)?;
        let parent = match &self.cached {
            Some((_, fd)) => fd.as_fd(),
            None => unreachable!("dir() fills the cache"),
        };
        match nix::sys::stat::fstatat(
            parent,
            OsStr::from_bytes(target),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => {
                // This layer's own entry of that name stays (a whiteout hides only what is
                // below); a directory of this layer must then hide the lower one's content.
                let is_dir =
                    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR;
                if let Some(layer) = &mut self.layer
                    && is_dir
                {
                    layer.opaque.push(path);
                }
                return Ok(());
            }
            Err(Errno::ENOENT) => {}
            Err(e) => {
                return Err(refuse(
                    name,
                    &format!("cannot inspect what it whites out: {e}"),
                ));
            }
        }
        mknodat(
            parent,
            OsStr::from_bytes(target),
            SFlag::S_IFCHR,
            Mode::empty(),
            nix::sys::stat::makedev(0, 0),
        )
        .map_err(|e| refuse(name, &format!("cannot create the whiteout: {e}")))?;
        if (self.euid, self.egid) != (0, 0) {
            fchownat(
                parent,
                OsStr::from_bytes(target),
                Some(Uid::from_raw(0)),
                Some(Gid::from_raw(0)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| self.chown_error(name, 0, 0, e))?;
        }
        if let Some(layer) = &mut self.layer {
            layer.whiteouts.insert(path);
        }
        Ok(())
    }

    fn defer_link(&mut self, parts: &[&[u8]], tparts: &[&[u8]]) {
        if let Some(layer) = &mut self.layer {
            layer.links.push(LowerLink {
                name: join(parts),
                target: join(tparts),
            });
        }
    }

    /// A hardlink whose target is not in this layer: copies the target from the highest
    /// lower layer that has it (a whiteout above it means it is gone).
    fn copy_from_lower(
        &self,
        name: &[u8],
        target: &[u8],
        tparts: &[&[u8]],
        parent: BorrowedFd<'_>,
        base: &CString,
    ) -> Result<()> {
        let tpath = join(tparts);
        let lowers = self.layer.as_ref().map_or(&[][..], |l| &l.lowers[..]);
        let missing = || {
            refuse(
                name,
                &format!(
                    "its hardlink target {:?} is in neither this layer nor the ones below",
                    shown(target)
                ),
            )
        };
        for lower in lowers {
            let fd = match openat2(
                lower.as_fd(),
                OsStr::from_bytes(&tpath),
                how(OFlag::O_PATH | OFlag::O_NOFOLLOW),
            ) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => continue,
                // A whited-out directory on the way (a device, not a directory).
                Err(Errno::ENOTDIR) => return Err(missing()),
                Err(e) => {
                    return Err(refuse(
                        name,
                        &format!("cannot open its hardlink target {:?}: {e}", shown(target)),
                    ));
                }
            };
            let st = nix::sys::stat::fstat(&fd)
                .map_err(|e| refuse(name, &format!("cannot inspect its hardlink target: {e}")))?;
            let fmt = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
            let b = OsStr::from_bytes(base.as_bytes());
            match fmt {
                SFlag::S_IFREG => {
                    let mut src =
                        File::open(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(|e| {
                            refuse(name, &format!("cannot read its hardlink target: {e}"))
                        })?;
                    let out = openat(
                        parent,
                        base.as_c_str(),
                        OFlag::O_WRONLY
                            | OFlag::O_CREAT
                            | OFlag::O_EXCL
                            | OFlag::O_NOFOLLOW
                            | OFlag::O_CLOEXEC,
                        Mode::from_bits_truncate(0o600),
                    )
                    .map_err(|e| refuse(name, &format!("cannot create it: {e}")))?;
                    io::copy(&mut src, &mut File::from(out)).map_err(|e| {
                        refuse(name, &format!("cannot copy its hardlink target: {e}"))
                    })?;
                }
                SFlag::S_IFLNK => {
                    let link = nix::fcntl::readlinkat(&fd, OsStr::new("")).map_err(|e| {
                        refuse(name, &format!("cannot read its hardlink target: {e}"))
                    })?;
                    symlinkat(link.as_os_str(), parent, b)
                        .map_err(|e| refuse(name, &format!("cannot create the symlink: {e}")))?;
                }
                SFlag::S_IFCHR if st.st_rdev == 0 => return Err(missing()),
                _ => {
                    return Err(refuse(
                        name,
                        "its hardlink target in a lower layer is not a file or symlink",
                    ));
                }
            }
            let symlink = fmt == SFlag::S_IFLNK;
            self.owner_mode_xattrs(
                name,
                parent,
                base.as_bytes(),
                st.st_uid,
                st.st_gid,
                st.st_mode & 0o7777,
                &[],
                symlink,
            )?;
            set_mtime(parent, base.as_bytes(), st.st_mtime);
            return Ok(());
        }
        Err(missing())
    }

    /// Marks the directory `path` (cleaned, inside the root) opaque for overlay. A directory
    /// a later entry replaced by a non-directory needs no mark.
    fn set_opaque(&self, path: &[u8]) -> Result<()> {
        let p: &[u8] = if path.is_empty() { b"." } else { path };
        let fd = match openat2(
            self.root.as_fd(),
            OsStr::from_bytes(p),
            how(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => return Ok(()),
            Err(e) => {
                return Err(refuse(
                    path,
                    &format!("cannot open the opaque directory: {e}"),
                ));
            }
        };
        // SAFETY: fsetxattr reads a NUL-terminated name and a 1-byte value owned here.
        let rc = unsafe {
            libc::fsetxattr(
                fd.as_raw_fd(),
                OPAQUE_XATTR.as_ptr().cast(),
                b"y".as_ptr().cast(),
                1,
                0,
            )
        };
        if rc != 0 {
            let e = Errno::last();
            return Err(anyhow::Error::new(
                user(format!(
                    "cannot mark the directory {:?} opaque (xattr trusted.overlay.opaque): {e}",
                    shown(path)
                ))
                .hint("layers need a filesystem with trusted xattrs (ext4, xfs) and root"),
            ));
        }
        Ok(())
    }

    /// Clears the way for a new entry `base` in `dir_parts`: a later entry replaces an earlier
    /// one, as with `tar -x`. A directory stays when the new entry is a directory too.
    /// Copies an entry's data into `file`, counting it against `max_size`. A GNU sparse
    /// entry (which the tar crate reads back with its holes as zeros) is written sparse:
    /// blocks of zeros become holes, so a 10 GiB sparse file costs its data, not 10 GiB.
    fn copy_data<R: Read>(
        &self,
        name: &[u8],
        entry: &mut tar::Entry<'_, R>,
        file: &mut File,
        sparse: bool,
    ) -> Result<u64> {
        use std::io::{Seek, SeekFrom, Write};
        let broke = |e: io::Error| {
            anyhow::Error::new(
                user(format!(
                    "the tar stream broke while reading {:?}: {e}",
                    shown(name)
                ))
                .hint("the archive is truncated or corrupt; re-create it"),
            )
        };
        // Sized to the entry: most files are small, and a large buffer per file would be
        // an mmap and munmap each.
        let mut buf = vec![0u8; (entry.size() as usize).clamp(512, 256 * 1024)];
        let mut written: u64 = 0;
        let mut ends_in_hole = false;
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(broke(e)),
            };
            if self.stats.bytes.saturating_add(written + n as u64) > self.max_size {
                return Err(user(format!(
                    "the image is larger than the import limit of {} bytes ({:?} passes it, counted at its real size)",
                    self.max_size,
                    shown(name)
                ))
                .hint("raise it with --max-size SIZE, or `[import] max_size` in the state root's config.toml")
                .into());
            }
            if sparse {
                for chunk in buf[..n].chunks(HOLE_BLOCK) {
                    if chunk == &ZEROS[..chunk.len()] {
                        file.seek(SeekFrom::Current(chunk.len() as i64))
                            .with_context(|| {
                                format!("cannot write {:?} into the layer", shown(name))
                            })?;
                        ends_in_hole = true;
                    } else {
                        file.write_all(chunk).with_context(|| {
                            format!("cannot write {:?} into the layer", shown(name))
                        })?;
                        ends_in_hole = false;
                    }
                }
            } else {
                file.write_all(&buf[..n])
                    .with_context(|| format!("cannot write {:?} into the layer", shown(name)))?;
            }
            written += n as u64;
        }
        if ends_in_hole {
            file.set_len(written)
                .with_context(|| format!("cannot write {:?} into the layer", shown(name)))?;
        }
        Ok(written)
    }

    fn make_room(
        &mut self,
        name: &[u8],
        dir_parts: &[&[u8]],
        base: &[u8],
        new_is_dir: bool,
    ) -> Result<()> {
        self.dir(name, dir_parts)?;
        let parent = match &self.cached {
            Some((_, fd)) => fd.as_fd(),
            None => unreachable!("dir() fills the cache"),
        };
        let st = match nix::sys::stat::fstatat(
            parent,
            OsStr::from_bytes(base),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => {
                return Err(refuse(
                    name,
                    &format!("cannot inspect the existing entry: {e}"),
                ));
            }
        };
        let existing_dir =
            SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR;
        if existing_dir && new_is_dir {
            return Ok(());
        }
        if let Some(layer) = &mut self.layer {
            let mut path = join(dir_parts);
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(base);
            // A directory where this layer whited out the lower one: the lower one was
            // deleted and a new one made, so it must not show through.
            if layer.whiteouts.remove(&path) && new_is_dir {
                layer.opaque.push(path);
            }
        }
        if existing_dir {
            // Remove the whole subtree through /proc/self/fd/<parent>/<base>: the parent fd
            // is inside the root, `base` is one component and not a symlink, and std's
            // remove_dir_all does not follow symlinks below it.
            let path = format!("/proc/self/fd/{}/", parent.as_raw_fd());
            let mut p = std::path::PathBuf::from(path);
            p.push(OsStr::from_bytes(base));
            std::fs::remove_dir_all(&p).map_err(|e| {
                refuse(name, &format!("cannot replace the existing directory: {e}"))
            })?;
            // Cached descriptors may point into the removed tree.
            self.cached = None;
        } else {
            let parent = self.dir(name, dir_parts)?;
            unlinkat(parent, OsStr::from_bytes(base), UnlinkatFlags::NoRemoveDir)
                .map_err(|e| refuse(name, &format!("cannot replace the existing entry: {e}")))?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn owner_mode_xattrs(
        &self,
        name: &[u8],
        parent: BorrowedFd<'_>,
        base: &[u8],
        uid: u32,
        gid: u32,
        mode: u32,
        xattrs: &[(Vec<u8>, Vec<u8>)],
        symlink: bool,
    ) -> Result<()> {
        let b = OsStr::from_bytes(base);
        if (uid, gid) != (self.euid, self.egid) {
            fchownat(
                parent,
                b,
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| self.chown_error(name, uid, gid, e))?;
        }
        if !symlink {
            // After chown: chown clears the set-id bits. `base` is not a symlink: this
            // unpacker just created it, or make_room kept a real directory there, and nothing
            // else writes in the private staging dir. So follow: with AT_SYMLINK_NOFOLLOW,
            // which the fchmodat syscall lacks, libc emulates it with an O_PATH open, an
            // fstat and a chmod through /proc: four syscalls and a /proc lookup per entry.
            fchmodat(
                parent,
                b,
                Mode::from_bits_truncate(mode),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| refuse(name, &format!("cannot set its mode: {e}")))?;
        }
        for (k, v) in xattrs {
            // After chown too: chown clears security.capability.
            let mut path =
                std::path::PathBuf::from(format!("/proc/self/fd/{}", parent.as_raw_fd()));
            path.push(b);
            let p = cstr(path.as_os_str().as_bytes())?;
            let key = cstr(k)?;
            // SAFETY: lsetxattr reads two NUL-terminated strings and a buffer of the given
            // length, all owned by this frame; it does not follow a final symlink.
            let rc =
                unsafe { libc::lsetxattr(p.as_ptr(), key.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
            if rc != 0 {
                let e = Errno::last();
                // user.* on a symlink or device is not allowed by Linux; keep going like tar.
                tracing::warn!(
                    "cannot set xattr {} on {}: {e}",
                    String::from_utf8_lossy(k),
                    shown(name)
                );
            }
        }
        Ok(())
    }

    /// A failed chown: as an ordinary user that is EPERM, and the fix is to run as root.
    fn chown_error(&self, name: &[u8], uid: u32, gid: u32, e: Errno) -> anyhow::Error {
        if e == Errno::EPERM && self.euid != 0 {
            return user(format!(
                "cannot give {:?} its owner {uid}:{gid}: {e}",
                shown(name)
            ))
            .hint("wharf import keeps file owners, which needs root: run it as root")
            .into();
        }
        refuse(name, &format!("cannot set its owner to {uid}:{gid}: {e}"))
    }

    fn meta_root(&mut self, uid: u32, gid: u32, mode: u32, mtime: i64) -> Result<()> {
        let empty = OsStr::new("");
        if (uid, gid) != (self.euid, self.egid) {
            fchownat(
                self.root.as_fd(),
                empty,
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
                AtFlags::AT_EMPTY_PATH,
            )
            .map_err(|e| self.chown_error(b"./", uid, gid, e))?;
        }
        let p = format!("/proc/self/fd/{}", self.root.as_raw_fd());
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .context("cannot set the mode of the image root")?;
        // The root's mtime changes with every entry: applied in finish().
        self.root_mtime = Some(mtime);
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.cached = None;
        if let Some(layer) = self.layer.take() {
            for path in &layer.opaque {
                self.set_opaque(path)?;
            }
        }
        for d in self.dir_times.iter().rev() {
            let p = OsStr::from_bytes(&d.path);
            // O_NOFOLLOW: a later entry may have replaced the directory with a symlink.
            if let Ok(fd) = openat2(
                self.root.as_fd(),
                p,
                how(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW),
            ) {
                set_fd_mtime(&fd, d.mtime);
            }
        }
        if let Some(mtime) = self.root_mtime {
            set_fd_mtime(&self.root, mtime);
        }
        Ok(())
    }
}

/// Sets the mtime of what an `O_PATH` descriptor names (futimens needs a real fd).
fn set_fd_mtime(fd: &OwnedFd, mtime: i64) {
    let ts = TimeSpec::new(mtime, 0);
    let proc = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let _ = utimensat(
        nix::fcntl::AT_FDCWD,
        proc.as_str(),
        &ts,
        &ts,
        UtimensatFlags::FollowSymlink,
    );
}

fn set_mtime(parent: BorrowedFd<'_>, base: &[u8], mtime: i64) {
    let ts = TimeSpec::new(mtime, 0);
    let _ = utimensat(
        parent,
        OsStr::from_bytes(base),
        &ts,
        &ts,
        UtimensatFlags::NoFollowSymlink,
    );
}

fn xattrs_of<R: Read>(entry: &mut tar::Entry<'_, R>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(Some(exts)) = entry.pax_extensions() {
        for ext in exts.flatten() {
            if let Some(k) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                // overlay's own attributes (opaque, redirect, metacopy, origin) would change
                // what the stacked layers show: only wharf sets them, from whiteouts.
                if k.starts_with(b"trusted.overlay.") {
                    tracing::warn!("dropping the overlay xattr {}", String::from_utf8_lossy(k));
                    continue;
                }
                out.push((k.to_vec(), ext.value_bytes().to_vec()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_strips_and_refuses() {
        assert_eq!(clean(b"/a/./b//c").unwrap(), vec![&b"a"[..], b"b", b"c"]);
        assert_eq!(clean(b"a/../b").unwrap(), vec![&b"b"[..]]);
        assert!(clean(b"./").unwrap().is_empty());
        assert!(clean(b"../x").is_err());
        assert!(clean(b"a/../../x").is_err());
        assert!(clean(&vec![b'a'; 256]).is_err());
        assert!(clean(&[b'a'; 4096]).is_err());
        let msg = format!("{:#}", clean(b"/../etc/passwd").unwrap_err());
        assert!(
            msg.contains("/../etc/passwd") && msg.contains("climbs out"),
            "{msg}"
        );
    }
}
