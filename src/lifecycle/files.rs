//! A container's filesystem from outside (issue 14): `container diff` (its write layer),
//! `export` (the merged rootfs as a tar) and `cp` in both directions.
//!
//! The container's files are only ever reached through a helper process, `wharf __rootfs`,
//! that sees them as `/` of its own: for a running container it joins the container's mount
//! namespace (`cp` then sees its volumes and writes where the container reads); otherwise,
//! and for `export`, it mounts the overlay in a private mount namespace of its own on the
//! state root's run dir (read-only, the write layer as the top lower layer, so whiteouts are
//! applied by the kernel; read-write with the write layer for `cp` into a stopped
//! container). Inside, paths are resolved with `openat2(RESOLVE_IN_ROOT)` and trees are
//! walked one `openat(O_NOFOLLOW)` component at a time, so no symlink of the container, even
//! one swapped in while copying, leads outside it; files going in are written by the
//! import's unpacker (`image::unpack`), which has the same property.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag, fstatat};

use crate::container::{self, Record};
use crate::error::{exit, user};
use crate::image;
use crate::runtime::sys;
use crate::store::Store;

/// One line of `container diff`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    /// `A` added, `C` changed, `D` deleted (docker's letters).
    #[serde(rename = "Kind")]
    pub kind: char,
    #[serde(rename = "Path")]
    pub path: String,
}

/// Opens `name` in `dir` without following a symlink.
fn open_at(dir: BorrowedFd<'_>, name: &OsStr, flags: OFlag) -> Result<OwnedFd> {
    let fd = nix::fcntl::openat(
        dir,
        name,
        flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("cannot open {}", Path::new(name).display()))?;
    Ok(fd)
}

/// The names in the directory `dir` (not `.` and `..`), sorted.
fn list_dir(dir: BorrowedFd<'_>) -> Result<Vec<OsString>> {
    let fd = open_at(dir, OsStr::new("."), OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
    let mut d = nix::dir::Dir::from_fd(fd).context("cannot read a directory")?;
    let mut names: Vec<OsString> = d
        .iter()
        .filter_map(|e| e.ok())
        .map(|e| OsStr::from_bytes(e.file_name().to_bytes()).to_os_string())
        .filter(|n| n != "." && n != "..")
        .collect();
    names.sort();
    Ok(names)
}

fn is_whiteout(st: &libc::stat) -> bool {
    SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT) == SFlag::S_IFCHR && st.st_rdev == 0
}

/// `A`/`C`/`D` lines for the write layer of a container, sorted by path, as `docker diff`:
/// an overlay whiteout is a deletion, an entry the image has is a change, any other an
/// addition.
pub fn diff(store: &Store, input: &str) -> Result<Vec<Change>> {
    let rec = container::find(store, input)?;
    if rec.config.auto_remove {
        return Err(user(format!(
            "container {} runs with --rm: its write layer is a tmpfs only it sees",
            rec.name
        ))
        .hint("run it without --rm to inspect its changes")
        .into());
    }
    let upper = store.container_dir(&rec.id).join("upper");
    let layers = image::layer_dirs(store, &rec.image_id)?;
    let root = match nix::fcntl::open(
        &upper,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(Vec::new()),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot open {}", upper.display()));
        }
    };
    let mut out = Vec::new();
    diff_dir(root.as_fd(), Path::new("/"), &layers, &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(without_own_files(out))
}

/// Files the container's init makes in every container (child.rs), which docker keeps in
/// its init layer: not the container's changes.
const OWN_FILES: [&str; 3] = ["/.dockerenv", "/run/.containerenv", "/etc/mtab"];

/// `changes` without [`OWN_FILES`], nor a `C` directory left with nothing changed below it
/// (copied up only to hold them).
fn without_own_files(changes: Vec<Change>) -> Vec<Change> {
    let own: Vec<&Change> = changes
        .iter()
        .filter(|c| c.kind == 'A' && OWN_FILES.contains(&c.path.as_str()))
        .collect();
    let holders: Vec<String> = own
        .iter()
        .filter_map(|c| Path::new(&c.path).parent())
        .map(|p| p.display().to_string())
        .collect();
    let is_own = |c: &Change| c.kind == 'A' && OWN_FILES.contains(&c.path.as_str());
    let kept: Vec<Change> = changes.iter().filter(|c| !is_own(c)).cloned().collect();
    kept.iter()
        .filter(|c| {
            if c.kind != 'C' || !holders.contains(&c.path) {
                return true;
            }
            let prefix = format!("{}/", c.path);
            kept.iter().any(|o| o.path.starts_with(&prefix))
        })
        .cloned()
        .collect()
}

/// Whether the image has `rel` (top layer first; a whiteout above hides it).
fn in_image(layers: &[PathBuf], rel: &Path) -> bool {
    let rel = rel.strip_prefix("/").unwrap_or(rel);
    for l in layers {
        if let Ok(m) = std::fs::symlink_metadata(l.join(rel)) {
            use std::os::unix::fs::{FileTypeExt, MetadataExt};
            return !(m.file_type().is_char_device() && m.rdev() == 0);
        }
    }
    false
}

fn diff_dir(
    dir: BorrowedFd<'_>,
    at: &Path,
    layers: &[PathBuf],
    out: &mut Vec<Change>,
) -> Result<()> {
    for name in list_dir(dir)? {
        let path = at.join(&name);
        let Ok(st) = fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
            continue; // removed meanwhile
        };
        let shown = path.display().to_string();
        if is_whiteout(&st) {
            out.push(Change {
                kind: 'D',
                path: shown,
            });
            continue;
        }
        let kind = if in_image(layers, &path) { 'C' } else { 'A' };
        out.push(Change { kind, path: shown });
        if SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT) == SFlag::S_IFDIR {
            let sub = open_at(dir, &name, OFlag::O_PATH | OFlag::O_DIRECTORY)?;
            diff_dir(sub.as_fd(), &path, layers, out)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- tar writing

/// A reader of exactly `size` bytes: a file that shrank while being read is padded with
/// zeros, one that grew is cut, so the archive stays well-formed.
fn exact(f: File, size: u64) -> impl Read {
    f.take(size).chain(std::io::repeat(0)).take(size)
}

/// Appends `name` of `dir` (and, for a directory, its tree) as `arch` in the archive.
/// Symlinks are archived as links, never followed. `keep_owner`: the files' uid/gid (else
/// 0:0, as docker's cp without `-a`).
fn append<W: Write>(
    b: &mut tar::Builder<W>,
    dir: BorrowedFd<'_>,
    name: &OsStr,
    arch: &Path,
    keep_owner: bool,
) -> Result<()> {
    let st = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(nix::errno::Errno::ENOENT) => return Ok(()), // removed meanwhile
        Err(e) => return Err(e).with_context(|| format!("cannot stat {}", arch.display())),
    };
    let mut h = tar::Header::new_gnu();
    h.set_mode(st.st_mode & 0o7777);
    h.set_mtime(st.st_mtime.max(0) as u64);
    let (uid, gid) = if keep_owner {
        (st.st_uid, st.st_gid)
    } else {
        (0, 0)
    };
    h.set_uid(u64::from(uid));
    h.set_gid(u64::from(gid));
    h.set_size(0);
    let kind = SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT);
    match kind {
        SFlag::S_IFDIR => {
            h.set_entry_type(tar::EntryType::Directory);
            if !arch.as_os_str().is_empty() {
                b.append_data(&mut h, arch, std::io::empty())?;
            }
            let sub = open_at(dir, name, OFlag::O_PATH | OFlag::O_DIRECTORY)?;
            for child in list_dir(sub.as_fd())? {
                append(b, sub.as_fd(), &child, &arch.join(&child), keep_owner)?;
            }
        }
        SFlag::S_IFREG => {
            let fd = open_at(dir, name, OFlag::O_RDONLY | OFlag::O_NONBLOCK)?;
            let f = File::from(fd);
            let meta = f.metadata()?;
            if !meta.is_file() {
                return Ok(()); // swapped for something else meanwhile
            }
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(meta.len());
            b.append_data(&mut h, arch, exact(f, meta.len()))?;
        }
        SFlag::S_IFLNK => {
            let target = nix::fcntl::readlinkat(dir, name)
                .with_context(|| format!("cannot read the link {}", arch.display()))?;
            h.set_entry_type(tar::EntryType::Symlink);
            let bytes = target.as_bytes();
            if bytes.len() < 100 {
                // Verbatim (append_link would normalise `/` into `//`).
                h.set_link_name_literal(bytes)?;
                b.append_data(&mut h, arch, std::io::empty())?;
            } else {
                b.append_link(&mut h, arch, Path::new(&target))?;
            }
        }
        SFlag::S_IFCHR | SFlag::S_IFBLK | SFlag::S_IFIFO => {
            h.set_entry_type(match kind {
                SFlag::S_IFCHR => tar::EntryType::Char,
                SFlag::S_IFBLK => tar::EntryType::Block,
                _ => tar::EntryType::Fifo,
            });
            h.set_device_major(libc::major(st.st_rdev))?;
            h.set_device_minor(libc::minor(st.st_rdev))?;
            b.append_data(&mut h, arch, std::io::empty())?;
        }
        _ => {} // sockets are not archived (docker skips them too)
    }
    Ok(())
}

// ---------------------------------------------------------------- the helper

/// What the helper does, inside the container's filesystem.
#[derive(Debug, Clone)]
pub enum HelperOp {
    /// Prints `dir`, `file` or `missing` for a path (symlinks followed inside the root).
    Stat(String),
    /// Writes a tar of a path to stdout, its top entry named `name`.
    Get {
        path: String,
        name: String,
        keep_owner: bool,
    },
    /// Unpacks a tar from stdin into a directory.
    Put(String),
    /// Writes a tar of the whole merged rootfs to stdout (`export`).
    Export,
}

/// The directory the helper sees the container's rootfs in, as a descriptor.
fn enter(store: &Store, rec: &Record, op: &HelperOp) -> Result<OwnedFd> {
    let export = matches!(op, HelperOp::Export);
    if !export && let Some(pid) = rec.live_pid() {
        // Pin the namespace first, then check that the pid still is the container's init.
        let ns = File::open(format!("/proc/{pid}/ns/mnt"))
            .with_context(|| format!("cannot open the mount namespace of {}", rec.name))?;
        if container::proc_start_time(pid) != rec.pid_start {
            return Err(user(format!("container {} stopped meanwhile", rec.name))
                .hint("try again")
                .into());
        }
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNS)
            .context("cannot join the container's mount namespace")?;
        // A copy of its mount namespace of our own, with a procfs of our pid namespace on
        // /proc: the unpacker reaches descriptors through /proc/self/fd (root's mode,
        // hardlinks, a replaced directory, xattrs), which the container's procfs, of its own
        // pid namespace, cannot resolve for us. Files still land in the container's
        // filesystems; it sees none of our mounts.
        private_mount_namespace()?;
        sys::mount(
            Some("proc"),
            Path::new("/proc"),
            Some("proc"),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            None,
        )
        .context("cannot mount a procfs for wharf's rootfs helper")?;
        return nix::fcntl::open(
            "/",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .context("cannot open the container's root");
    }
    if rec.config.auto_remove {
        return Err(user(format!(
            "container {} runs with --rm: its write layer is a tmpfs only it sees",
            rec.name
        ))
        .hint("`wharf cp` works on it while it runs; export a container run without --rm")
        .into());
    }
    let cdir = store.container_dir(&rec.id);
    let (upper, work) = (cdir.join("upper"), cdir.join("work"));
    let layers = image::layer_dirs(store, &rec.image_id)?;
    let write = matches!(op, HelperOp::Put(_));
    // The overlay's options, or the one directory to bind read-only: overlay needs two
    // lower dirs without an upper one (a never-started container of a one-layer image).
    let (data, single) = if write {
        for d in [&upper, &work] {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            crate::runtime::launch::lowerdir(&layers)?,
            upper.display(),
            work.display()
        );
        (data, None)
    } else {
        let mut dirs = Vec::with_capacity(layers.len() + 1);
        if upper.is_dir() {
            dirs.push(upper);
        }
        dirs.extend(layers);
        match dirs.as_slice() {
            [one] => (String::new(), Some(one.clone())),
            _ => (
                format!("lowerdir={}", crate::runtime::launch::lowerdir(&dirs)?),
                None,
            ),
        }
    };
    private_mount_namespace()?;
    let target = store.make_run_dir()?;
    std::fs::create_dir_all(&target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    let ro = if write { 0 } else { libc::MS_RDONLY };
    let flags = libc::MS_NODEV | libc::MS_NOSUID | ro;
    match &single {
        Some(dir) => sys::mount(dir.to_str(), &target, None, libc::MS_BIND, None).and_then(|()| {
            sys::mount(
                None,
                &target,
                None,
                libc::MS_REMOUNT | libc::MS_BIND | flags,
                None,
            )
        }),
        None => sys::mount(
            Some("overlay"),
            &target,
            Some("overlay"),
            flags,
            Some(&data),
        ),
    }
    .context("cannot mount the container's filesystem")?;
    nix::fcntl::open(
        &target,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .context("cannot open the container's filesystem")
}

/// Moves this process (the single-threaded `__rootfs` helper) into a copy of its mount
/// namespace whose mounts propagate nowhere.
fn private_mount_namespace() -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .context("cannot make a private mount namespace")?;
    sys::mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )
    .context("cannot make the mounts private")
}

/// Splits a container path into its parent and last component, lexically (`..` cannot
/// climb above `/`). The last component is empty for `/`.
fn split(path: &str) -> (PathBuf, OsString) {
    let mut parts: Vec<&OsStr> = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => parts.push(n),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    let last = parts.pop().map(OsStr::to_os_string).unwrap_or_default();
    let parent: PathBuf = std::iter::once(OsStr::new("/")).chain(parts).collect();
    (parent, last)
}

fn not_found(path: &str, e: std::io::Error) -> anyhow::Error {
    user(format!(
        "no such file or directory in the container: {path} ({e})"
    ))
    .hint("check the path; symlinks resolve inside the container")
    .into()
}

/// The helper's body (`wharf __rootfs ID OP ...`): it runs alone in its process, which it
/// moves into the container's (or a private) mount namespace.
pub fn helper_main(store: &Store, id: &str, op: &HelperOp) -> Result<i32> {
    let rec = container::find(store, id)?;
    let root = enter(store, &rec, op)?;
    let rfd = root.as_raw_fd();
    match op {
        HelperOp::Stat(path) => {
            let what = match sys::open_in_root(rfd, Path::new(path), libc::O_PATH) {
                Ok(fd) => {
                    if File::from(fd).metadata()?.is_dir() {
                        "dir"
                    } else {
                        "file"
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => "missing",
                Err(e) => return Err(not_found(path, e)),
            };
            println!("{what}");
        }
        HelperOp::Get {
            path,
            name,
            keep_owner,
        } => {
            let (parent, last) = split(path);
            let pfd = sys::open_in_root(rfd, &parent, libc::O_PATH | libc::O_DIRECTORY)
                .map_err(|e| not_found(path, e))?;
            let stdout = std::io::stdout().lock();
            let mut b = tar::Builder::new(stdout);
            if last.is_empty() {
                // The root itself: its entries under `name`.
                for child in list_dir(pfd.as_fd())? {
                    let arch = Path::new(name).join(&child);
                    append(&mut b, pfd.as_fd(), &child, &arch, *keep_owner)?;
                }
            } else {
                if let Err(e) = fstatat(pfd.as_fd(), last.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                {
                    return Err(not_found(path, e.into()));
                }
                append(&mut b, pfd.as_fd(), &last, Path::new(name), *keep_owner)?;
            }
            b.into_inner()?.flush()?;
        }
        HelperOp::Put(dir) => {
            let dfd = sys::open_in_root(rfd, Path::new(dir), libc::O_PATH | libc::O_DIRECTORY)
                .map_err(|e| not_found(dir, e))?;
            image::unpack::unpack_into(std::io::stdin().lock(), dfd)?;
        }
        HelperOp::Export => {
            let stdout = std::io::stdout().lock();
            let mut b = tar::Builder::new(stdout);
            for child in list_dir(root.as_fd())? {
                append(&mut b, root.as_fd(), &child, Path::new(&child), true)?;
            }
            b.into_inner()?.flush()?;
        }
    }
    Ok(exit::OK)
}

/// `wharf __rootfs` with `op` for container `id`, stdio as given.
fn helper(store: &Store, id: &str, op: &HelperOp) -> Command {
    let mut c = Command::new("/proc/self/exe");
    c.arg("--root").arg(store.root()).arg("__rootfs").arg(id);
    match op {
        HelperOp::Stat(p) => c.args(["stat", p]),
        HelperOp::Get {
            path,
            name,
            keep_owner,
        } => {
            c.args(["get", path, name]);
            if *keep_owner {
                c.arg("--archive");
            }
            &mut c
        }
        HelperOp::Put(d) => c.args(["put", d]),
        HelperOp::Export => c.arg("export"),
    };
    c
}

/// The helper's exit code as ours (its own error was printed on stderr).
fn helper_failed(code: Option<i32>) -> Result<i32> {
    Ok(code.filter(|&c| c != 0).unwrap_or(exit::ERROR))
}

/// `wharf export`: the merged rootfs as a tar, into `out` (a file) or stdout.
pub fn export(store: &Store, input: &str, out: Option<File>) -> Result<i32> {
    let rec = container::find(store, input)?;
    let mut c = helper(store, &rec.id, &HelperOp::Export);
    if let Some(f) = out {
        c.stdout(Stdio::from(f));
    }
    let st = c.status().context("cannot start wharf's rootfs helper")?;
    if st.success() {
        Ok(exit::OK)
    } else {
        helper_failed(st.code())
    }
}

/// One side of `wharf cp`: `CONTAINER:PATH`, or a host path (`-` is a tar on stdio).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpArg {
    Container { container: String, path: String },
    Host(PathBuf),
}

impl CpArg {
    /// docker's rule: `NAME:PATH` names a container path unless the part before the colon
    /// looks like a path (it holds a `/` or starts with `.`).
    pub fn parse(s: &str) -> CpArg {
        match s.split_once(':') {
            Some((c, p)) if !c.is_empty() && !c.contains('/') && !c.starts_with('.') => {
                CpArg::Container {
                    container: c.to_string(),
                    path: if p.is_empty() { "/".into() } else { p.into() },
                }
            }
            _ => CpArg::Host(PathBuf::from(s)),
        }
    }
}

fn base_name(p: &str) -> Option<OsString> {
    let (_, last) = split(p);
    (!last.is_empty()).then_some(last)
}

/// `wharf cp CONTAINER:SRC DEST` (`-` for a tar on stdout). `DEST` an existing directory:
/// into it; else `DEST` is the copy (its parent must exist), as docker's cp.
pub fn copy_out(
    store: &Store,
    input: &str,
    src: &str,
    dest: &Path,
    keep_owner: bool,
) -> Result<i32> {
    let rec = container::find(store, input)?;
    let src_name = base_name(src);
    if dest == Path::new("-") {
        let name = src_name.unwrap_or_else(|| ".".into());
        let op = HelperOp::Get {
            path: src.into(),
            name: name.to_string_lossy().into_owned(),
            keep_owner,
        };
        let st = helper(store, &rec.id, &op).status()?;
        return if st.success() {
            Ok(exit::OK)
        } else {
            helper_failed(st.code())
        };
    }
    // Where to unpack, and the name of the copy there.
    let (into, name): (PathBuf, OsString) = if dest.is_dir() {
        match src_name {
            Some(n) => (dest.to_path_buf(), n),
            None => (dest.to_path_buf(), OsString::new()),
        }
    } else {
        let parent = match dest.parent() {
            Some(p) if p.as_os_str().is_empty() => Path::new("."),
            Some(p) => p,
            None => Path::new("/"),
        };
        if !parent.is_dir() {
            return Err(user(format!(
                "the destination directory {} does not exist",
                parent.display()
            ))
            .hint("create it first, or copy into an existing directory")
            .into());
        }
        let Some(n) = dest.file_name() else {
            return Err(user(format!("invalid destination {}", dest.display()))
                .hint("give a file or directory path")
                .into());
        };
        if src_name.is_none() {
            std::fs::create_dir(dest)
                .with_context(|| format!("cannot create {}", dest.display()))?;
            (dest.to_path_buf(), OsString::new())
        } else {
            (parent.to_path_buf(), n.to_os_string())
        }
    };
    let op = HelperOp::Get {
        path: src.into(),
        name: name.to_string_lossy().into_owned(),
        keep_owner,
    };
    let mut child = helper(store, &rec.id, &op)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start wharf's rootfs helper")?;
    let Some(stdout) = child.stdout.take() else {
        anyhow::bail!("the rootfs helper has no stdout");
    };
    let unpacked = image::unpack::unpack(stdout, &into);
    if unpacked.is_err() {
        let _ = child.kill();
    }
    let st = child.wait()?;
    unpacked.with_context(|| format!("cannot write into {}", into.display()))?;
    if !st.success() {
        return helper_failed(st.code());
    }
    Ok(exit::OK)
}

/// `wharf cp SRC CONTAINER:DEST` (`-` for a tar on stdin, unpacked into the directory
/// DEST). The same rules as [`copy_out`], the other way round.
pub fn copy_in(
    store: &Store,
    src: &Path,
    input: &str,
    dest: &str,
    keep_owner: bool,
) -> Result<i32> {
    let rec = container::find(store, input)?;
    let run = |op: &HelperOp, feed: &mut dyn FnMut(&mut dyn Write) -> Result<()>| -> Result<i32> {
        let mut child = helper(store, &rec.id, op)
            .stdin(Stdio::piped())
            .spawn()
            .context("cannot start wharf's rootfs helper")?;
        let fed = match child.stdin.take() {
            Some(mut stdin) => feed(&mut stdin),
            None => Err(anyhow::anyhow!("the rootfs helper has no stdin")),
        };
        let st = child.wait()?;
        if !st.success() {
            return helper_failed(st.code());
        }
        fed?;
        Ok(exit::OK)
    };
    if src == Path::new("-") {
        return run(&HelperOp::Put(dest.into()), &mut |w| {
            std::io::copy(&mut std::io::stdin().lock(), w)?;
            Ok(())
        });
    }
    let meta = std::fs::symlink_metadata(src)
        .map_err(|e| user(format!("cannot read {}: {e}", src.display())).hint("check the path"))?;
    let stat = helper(store, &rec.id, &HelperOp::Stat(dest.into()))
        .stderr(Stdio::inherit())
        .output()
        .context("cannot start wharf's rootfs helper")?;
    if !stat.status.success() {
        return helper_failed(stat.status.code());
    }
    let (dest_parent, dest_last) = split(dest);
    let src_name = src
        .file_name()
        .map(OsStr::to_os_string)
        .unwrap_or_else(|| ".".into());
    let (into, name) = match String::from_utf8_lossy(&stat.stdout).trim() {
        "dir" => (dest.to_string(), src_name),
        "file" if meta.is_dir() => {
            return Err(user(format!(
                "cannot copy the directory {} onto the file {dest} in the container",
                src.display()
            ))
            .hint("give a directory as the destination")
            .into());
        }
        _ if dest_last.is_empty() => (dest.to_string(), src_name),
        _ => (dest_parent.to_string_lossy().into_owned(), dest_last),
    };
    // The source's parent and name; a source without a name (`/`, `..`) gives its entries.
    let src_base = src.file_name().map(OsStr::to_os_string);
    let open_dir = match (&src_base, src.parent()) {
        (Some(_), Some(p)) if !p.as_os_str().is_empty() => p,
        (Some(_), _) => Path::new("."),
        (None, _) => src,
    };
    let pdir =
        File::open(open_dir).with_context(|| format!("cannot open {}", open_dir.display()))?;
    run(&HelperOp::Put(into), &mut |w| {
        let mut b = tar::Builder::new(w);
        match &src_base {
            Some(base) => append(&mut b, pdir.as_fd(), base, Path::new(&name), keep_owner)?,
            None => {
                for child in list_dir(pdir.as_fd())? {
                    let arch = Path::new(&name).join(&child);
                    append(&mut b, pdir.as_fd(), &child, &arch, keep_owner)?;
                }
            }
        }
        b.finish()?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_paths_split_lexically() {
        assert_eq!(split("/etc/hosts"), (PathBuf::from("/etc"), "hosts".into()));
        assert_eq!(split("/"), (PathBuf::from("/"), OsString::new()));
        assert_eq!(split("../../etc/x"), (PathBuf::from("/etc"), "x".into()));
        assert_eq!(split("a/b/"), (PathBuf::from("/a"), "b".into()));
    }

    #[test]
    fn cp_arguments_like_docker() {
        assert_eq!(
            CpArg::parse("web:/etc"),
            CpArg::Container {
                container: "web".into(),
                path: "/etc".into()
            }
        );
        assert_eq!(CpArg::parse("./a:b"), CpArg::Host("./a:b".into()));
        assert_eq!(CpArg::parse("/x/y:z"), CpArg::Host("/x/y:z".into()));
        assert_eq!(CpArg::parse("file"), CpArg::Host("file".into()));
        assert_eq!(CpArg::parse("-"), CpArg::Host("-".into()));
    }

    #[test]
    fn the_inits_own_files_are_no_change() {
        let c = |kind, path: &str| Change {
            kind,
            path: path.into(),
        };
        let got = without_own_files(vec![
            c('A', "/.dockerenv"),
            c('C', "/etc"),
            c('A', "/etc/mtab"),
            c('C', "/run"),
            c('A', "/run/.containerenv"),
            c('A', "/run/app.pid"),
        ]);
        assert_eq!(got, vec![c('C', "/run"), c('A', "/run/app.pid")]);
    }

    #[test]
    fn short_files_are_padded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let mut out = Vec::new();
        exact(File::open(&p).unwrap(), 5)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"abc\0\0");
        let mut out = Vec::new();
        exact(File::open(&p).unwrap(), 2)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"ab");
    }
}
