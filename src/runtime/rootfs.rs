//! The container's root filesystem, in the order it is built: the mount namespace made
//! private, the write layer, the overlay, `/proc`, `/sys`, `/sys/fs/cgroup`, `/dev` and its
//! mounts, the `/etc`
//! files, the markers, the volumes, the console, `pivot_root`, the masked paths, the
//! read-only remount. [`build`] is that order, written once against the [`RootfsOps`] trait:
//! [`HostOps`] makes the syscalls (in the forked child), and the tests' recording fake checks
//! the order and every mount's flags without root, as youki's `Syscall` trait does.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use super::child::{self, ChildError, ChildSpec, err};
use super::sys;

/// Whether a mount point inside the root is a directory or a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// The operations the rootfs is built with. Paths named `dest` are inside the new root
/// (absolute, resolved within it: a symlink in the image cannot lead outside); `host` paths
/// are the host's.
pub trait RootfsOps {
    /// mount(2) on a host path (`/`, the run dir).
    fn mount_host(
        &mut self,
        source: Option<&str>,
        host: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()>;
    /// Creates a directory under a host path (the write layer on its tmpfs).
    fn mkdir_host(&mut self, host: &Path) -> io::Result<()>;
    /// Opens a stack of layers too deep to name by path in one page of mount options, and
    /// returns their names for `lowerdir=` (descriptors, relative to `/proc/self/fd`, which
    /// becomes the working directory). Opened in the container's mount namespace: overlay
    /// refuses a layer reached through a mount of another namespace.
    fn deep_lower(&mut self, layers: &[PathBuf]) -> io::Result<String>;
    /// Takes the overlay mounted at `host` as the new root.
    fn open_root(&mut self, host: &Path) -> io::Result<()>;
    /// Creates `dest` (a `kind`) in the root and mounts a filesystem on it.
    fn mount_in(
        &mut self,
        dest: &str,
        kind: Kind,
        source: &str,
        fstype: &str,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()>;
    /// Creates `dest` in the root (a directory when `host` is one) and bind-mounts `host` on
    /// it; then, with `flags`, remounts the bind with them (read-only, nodev).
    fn bind_in(&mut self, host: &Path, dest: &str, flags: libc::c_ulong) -> io::Result<()>;
    /// The container's cgroups at `/sys/fs/cgroup`, read-only unless `privileged`.
    fn cgroupfs(
        &mut self,
        inside: &super::cgroup::Inside,
        privileged: bool,
    ) -> Result<(), ChildError>;
    /// Fills the `/dev` tmpfs: docker's device nodes (bind mounts of the host's), its
    /// symlinks, and the mount points of `pts`, `shm` and `mqueue`.
    fn populate_dev(&mut self) -> io::Result<()>;
    /// Writes `content` to a file of the /dev tmpfs and bind-mounts it at `dest`.
    fn etc_file(&mut self, dest: &str, content: &[u8]) -> io::Result<()>;
    /// Best effort: `/etc/mtab` → `/proc/mounts`, `/.dockerenv`, `/run/.containerenv`.
    fn markers(&mut self);
    /// Opens the container's pty (the master goes to wharf over `sync`), binds its slave at
    /// `/dev/console`, and returns the slave.
    fn console(
        &mut self,
        sync: RawFd,
        winsize: Option<&libc::winsize>,
    ) -> Result<OwnedFd, ChildError>;
    /// pivot_root(2) into the root; the old root is detached.
    fn pivot(&mut self) -> io::Result<()>;
    /// Masks docker's paths under /proc and /sys (best effort, as runc).
    fn mask_paths(&mut self);
    /// Remounts `/` (after the pivot) with `flags`.
    fn remount_root(&mut self, flags: libc::c_ulong) -> io::Result<()>;
}

/// Builds the container's root filesystem and enters it. Returns the pty slave with `-t`.
pub fn build(
    spec: &ChildSpec,
    ops: &mut dyn RootfsOps,
    sync: RawFd,
    winsize: Option<&libc::winsize>,
) -> Result<Option<OwnedFd>, ChildError> {
    // Nothing we mount may propagate to the host.
    ops.mount_host(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )
    .map_err(|e| err("cannot make / private", e))?;
    let target = write_layer(spec, ops)?;
    let (upper, work) = if spec.tmp_layer {
        (spec.merged.join(&spec.upper), spec.merged.join(&spec.work))
    } else {
        (spec.upper.clone(), spec.work.clone())
    };
    let lower = if spec.lower_deep.is_empty() {
        spec.lower.clone()
    } else {
        ops.deep_lower(&spec.lower_deep)
            .map_err(|e| err("cannot open the image's layers", e))?
    };
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower,
        upper.display(),
        work.display()
    );
    // No device node of the image or made in the container is usable: the rootfs, /dev and
    // volumes are nodev, and /dev's nodes are bind mounts of the host's (the devices cgroup
    // closes them a second time).
    let nodev = nodev(spec);
    ops.mount_host(
        Some("overlay"),
        &target,
        Some("overlay"),
        nodev,
        Some(&data),
    )
    .map_err(|e| err("cannot mount the overlay root filesystem", e))?;
    ops.open_root(&target)
        .map_err(|e| err("cannot open the root filesystem", e))?;
    kernel_filesystems(ops, nodev, spec)?;
    for (content, dest) in &spec.etc_files {
        ops.etc_file(dest, content)
            .map_err(|e| err(format!("cannot mount {dest}"), e))?;
    }
    ops.markers();
    for (src, dest, ro) in &spec.volumes {
        let flags = nodev | if *ro { libc::MS_RDONLY } else { 0 };
        ops.bind_in(src, dest, flags)
            .map_err(|e| err(format!("cannot mount the volume at {dest}"), e))?;
    }
    for (dest, flags, data) in &spec.tmpfs {
        let data = (!data.is_empty()).then_some(data.as_str());
        ops.mount_in(dest, Kind::Dir, "tmpfs", "tmpfs", *flags, data)
            .map_err(|e| err(format!("cannot mount the tmpfs at {dest}"), e))?;
    }
    // The terminal, allocated inside so that ttyname() works: the master goes to wharf.
    let slave = if spec.tty {
        Some(ops.console(sync, winsize)?)
    } else {
        None
    };
    ops.pivot().map_err(|e| err("cannot change the root", e))?;
    ops.mask_paths();
    if spec.read_only {
        ops.remount_root(libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY)
            .map_err(|e| err("cannot make the root filesystem read-only", e))?;
    }
    Ok(slave)
}

fn nodev(spec: &ChildSpec) -> libc::c_ulong {
    if spec.privileged { 0 } else { libc::MS_NODEV }
}

/// The write layer: for `--rm`, a tmpfs at the run dir holding upper, work and the overlay's
/// mount point (`root`); else the kept `containers/<id>/{upper,work}`. Returns where the
/// overlay goes.
fn write_layer(spec: &ChildSpec, ops: &mut dyn RootfsOps) -> Result<PathBuf, ChildError> {
    if !spec.tmp_layer {
        return Ok(spec.merged.clone());
    }
    ops.mount_host(
        Some("tmpfs"),
        &spec.merged,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=755"),
    )
    .map_err(|e| err("cannot mount the write layer's tmpfs", e))?;
    for d in [&spec.upper, &spec.work, Path::new("root")] {
        ops.mkdir_host(&spec.merged.join(d))
            .map_err(|e| err("cannot create the write layer", e))?;
    }
    Ok(spec.merged.join("root"))
}

/// `/proc`, a read-only `/sys` with the container's cgroups, and `/dev` with `pts`, `shm` and `mqueue`, with docker's
/// flags.
fn kernel_filesystems(
    ops: &mut dyn RootfsOps,
    nodev: libc::c_ulong,
    spec: &ChildSpec,
) -> Result<(), ChildError> {
    let nosuid_noexec_nodev = libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV;
    let mounts: [(&str, &str, &str, libc::c_ulong, Option<&str>); 3] = [
        ("/proc", "proc", "proc", nosuid_noexec_nodev, None),
        (
            "/sys",
            "sysfs",
            "sysfs",
            nosuid_noexec_nodev | libc::MS_RDONLY,
            None,
        ),
        (
            "/dev",
            "tmpfs",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_STRICTATIME | nodev,
            Some("mode=755,size=65536k"),
        ),
    ];
    for (dest, source, fstype, flags, data) in mounts {
        ops.mount_in(dest, Kind::Dir, source, fstype, flags, data)
            .map_err(|e| err(format!("cannot mount {dest}"), e))?;
        if dest == "/sys" {
            ops.cgroupfs(&spec.cgroupfs, spec.privileged)?;
        }
    }
    ops.populate_dev()
        .map_err(|e| err("cannot populate /dev", e))?;
    for (host, dest) in &spec.devices {
        ops.bind_in(host, dest, 0)
            .map_err(|e| err(format!("cannot mount the device {dest}"), e))?;
    }
    let shm = format!("mode=1777,size={}", spec.shm_size);
    let dev_mounts: [(&str, &str, &str, libc::c_ulong, Option<&str>); 3] = [
        (
            "/dev/pts",
            "devpts",
            "devpts",
            libc::MS_NOSUID | libc::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
        ),
        ("/dev/shm", "shm", "tmpfs", nosuid_noexec_nodev, Some(&shm)),
        ("/dev/mqueue", "mqueue", "mqueue", nosuid_noexec_nodev, None),
    ];
    for (dest, source, fstype, flags, data) in dev_mounts {
        ops.mount_in(dest, Kind::Dir, source, fstype, flags, data)
            .map_err(|e| err(format!("cannot mount {dest}"), e))?;
    }
    Ok(())
}

/// The real operations, in the forked child: every path inside the root is resolved from a
/// descriptor of it (`child::mkdirs`/`open_in` never follow a symlink out of it), and mounted
/// through `/proc/self/fd/N`.
#[derive(Default)]
pub struct HostOps {
    root: Option<OwnedFd>,
    /// A deep stack's layers, open until the overlay is mounted (and the child execs).
    deep: Vec<OwnedFd>,
}

impl HostOps {
    fn root(&self) -> io::Result<RawFd> {
        self.root
            .as_ref()
            .map(|r| r.as_raw_fd())
            .ok_or_else(|| io::Error::other("the root filesystem is not open"))
    }
}

impl RootfsOps for HostOps {
    fn mount_host(
        &mut self,
        source: Option<&str>,
        host: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()> {
        sys::mount(source, host, fstype, flags, data)
    }

    fn mkdir_host(&mut self, host: &Path) -> io::Result<()> {
        std::fs::create_dir(host)
    }

    fn deep_lower(&mut self, layers: &[PathBuf]) -> io::Result<String> {
        let mut names = String::with_capacity(layers.len() * 4);
        for l in layers {
            let fd = nix::fcntl::open(
                l.as_path(),
                nix::fcntl::OFlag::O_PATH
                    | nix::fcntl::OFlag::O_DIRECTORY
                    | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| io::Error::other(format!("{}: {e}", l.display())))?;
            if !names.is_empty() {
                names.push(':');
            }
            names.push_str(&fd.as_raw_fd().to_string());
            self.deep.push(fd);
        }
        nix::unistd::chdir("/proc/self/fd")?;
        Ok(names)
    }

    fn open_root(&mut self, host: &Path) -> io::Result<()> {
        self.root = Some(child::open_dir(host)?);
        Ok(())
    }

    fn mount_in(
        &mut self,
        dest: &str,
        kind: Kind,
        source: &str,
        fstype: &str,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()> {
        let root = self.root()?;
        let t = match kind {
            Kind::Dir => child::mkdirs(root, dest)?,
            Kind::File => child::mkfile(root, dest)?,
        };
        sys::mount(Some(source), &child::fdpath(&t), Some(fstype), flags, data)
    }

    fn bind_in(&mut self, host: &Path, dest: &str, flags: libc::c_ulong) -> io::Result<()> {
        let root = self.root()?;
        let t = if host.is_dir() {
            child::mkdirs(root, dest)
        } else {
            child::mkfile(root, dest)
        }?;
        child::bind(host, &child::fdpath(&t), false)?;
        if flags != 0 {
            // `t` still names the directory under the new mount: reopen to reach its top.
            let top = child::open_in(root, dest, libc::O_PATH)?;
            sys::mount(
                None,
                &child::fdpath(&top),
                None,
                libc::MS_BIND | libc::MS_REMOUNT | flags,
                None,
            )?;
        }
        Ok(())
    }

    fn cgroupfs(
        &mut self,
        inside: &super::cgroup::Inside,
        privileged: bool,
    ) -> Result<(), ChildError> {
        let root = self
            .root()
            .map_err(|e| err("cannot open the root filesystem", e))?;
        child::mount_cgroupfs(root, inside, privileged)
    }

    fn populate_dev(&mut self) -> io::Result<()> {
        let dev = child::open_in(self.root()?, "/dev", libc::O_PATH | libc::O_DIRECTORY)?;
        child::make_dev(dev.as_raw_fd())
    }

    fn etc_file(&mut self, dest: &str, content: &[u8]) -> io::Result<()> {
        // Written to the /dev tmpfs, bind-mounted, unlinked (the mount keeps it).
        let root = self.root()?;
        let dev = child::open_in(root, "/dev", libc::O_PATH | libc::O_DIRECTORY)?;
        let src = child::tmp_file(dev.as_raw_fd(), content)?;
        let t = child::mkfile(root, dest)?;
        let r = child::bind(&child::fdpath(&src), &child::fdpath(&t), false);
        child::tmp_file_done(dev.as_raw_fd());
        r
    }

    fn markers(&mut self) {
        let Ok(root) = self.root() else { return };
        if let Ok(etc) = child::open_in(root, "/etc", libc::O_PATH | libc::O_DIRECTORY) {
            let _ = child::symlinkat("/proc/mounts", etc.as_raw_fd(), "mtab");
        }
        let _ = child::mkfile(root, "/.dockerenv");
        let _ = child::mkfile(root, "/run/.containerenv");
    }

    fn console(
        &mut self,
        sync: RawFd,
        winsize: Option<&libc::winsize>,
    ) -> Result<OwnedFd, ChildError> {
        let root = self
            .root()
            .map_err(|e| err("cannot open the root filesystem", e))?;
        let slave = child::open_pty(root, sync, winsize)?;
        let console = child::mkfile(root, "/dev/console")
            .map_err(|e| err("cannot create /dev/console", e))?;
        child::bind(&child::fdpath(&slave), &child::fdpath(&console), false)
            .map_err(|e| err("cannot mount /dev/console", e))?;
        Ok(slave)
    }

    fn pivot(&mut self) -> io::Result<()> {
        let root = self
            .root
            .take()
            .ok_or_else(|| io::Error::other("the root filesystem is not open"))?;
        child::pivot(&root)
    }

    fn mask_paths(&mut self) {
        child::mask_paths();
    }

    fn remount_root(&mut self, flags: libc::c_ulong) -> io::Result<()> {
        sys::mount(None, Path::new("/"), None, flags, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records every operation with its target and flags.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<String>,
    }

    fn f(flags: libc::c_ulong) -> String {
        let names = [
            (libc::MS_RDONLY, "ro"),
            (libc::MS_NOSUID, "nosuid"),
            (libc::MS_NODEV, "nodev"),
            (libc::MS_NOEXEC, "noexec"),
            (libc::MS_REMOUNT, "remount"),
            (libc::MS_BIND, "bind"),
            (libc::MS_REC, "rec"),
            (libc::MS_PRIVATE, "private"),
            (libc::MS_STRICTATIME, "strictatime"),
        ];
        names
            .iter()
            .filter(|(b, _)| flags & b != 0)
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()
            .join(",")
    }

    impl RootfsOps for Recorder {
        fn mount_host(
            &mut self,
            _: Option<&str>,
            host: &Path,
            fstype: Option<&str>,
            flags: libc::c_ulong,
            _: Option<&str>,
        ) -> io::Result<()> {
            self.calls.push(format!(
                "mount {} {} [{}]",
                fstype.unwrap_or("-"),
                host.display(),
                f(flags)
            ));
            Ok(())
        }
        fn mkdir_host(&mut self, host: &Path) -> io::Result<()> {
            self.calls.push(format!("mkdir {}", host.display()));
            Ok(())
        }
        fn deep_lower(&mut self, layers: &[PathBuf]) -> io::Result<String> {
            self.calls.push(format!("deep {}", layers.len()));
            Ok((3..3 + layers.len())
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(":"))
        }
        fn open_root(&mut self, host: &Path) -> io::Result<()> {
            self.calls.push(format!("root {}", host.display()));
            Ok(())
        }
        fn mount_in(
            &mut self,
            dest: &str,
            _: Kind,
            _: &str,
            fstype: &str,
            flags: libc::c_ulong,
            _: Option<&str>,
        ) -> io::Result<()> {
            self.calls
                .push(format!("mount {fstype} {dest} [{}]", f(flags)));
            Ok(())
        }
        fn bind_in(&mut self, host: &Path, dest: &str, flags: libc::c_ulong) -> io::Result<()> {
            self.calls
                .push(format!("bind {} {dest} [{}]", host.display(), f(flags)));
            Ok(())
        }
        fn cgroupfs(
            &mut self,
            inside: &crate::runtime::cgroup::Inside,
            privileged: bool,
        ) -> Result<(), ChildError> {
            let kind = match inside {
                crate::runtime::cgroup::Inside::Cgroup2 => "cgroup2",
                crate::runtime::cgroup::Inside::V1(_) => "v1",
            };
            let ro = if privileged { "rw" } else { "ro" };
            self.calls.push(format!("cgroupfs {kind} {ro}"));
            Ok(())
        }
        fn populate_dev(&mut self) -> io::Result<()> {
            self.calls.push("populate /dev".into());
            Ok(())
        }
        fn etc_file(&mut self, dest: &str, _: &[u8]) -> io::Result<()> {
            self.calls.push(format!("etc {dest}"));
            Ok(())
        }
        fn markers(&mut self) {
            self.calls.push("markers".into());
        }
        fn console(&mut self, _: RawFd, _: Option<&libc::winsize>) -> Result<OwnedFd, ChildError> {
            self.calls.push("console".into());
            let (r, _w) = sys::pipe().map_err(|e| err("pipe", e))?;
            Ok(r)
        }
        fn pivot(&mut self) -> io::Result<()> {
            self.calls.push("pivot".into());
            Ok(())
        }
        fn mask_paths(&mut self) {
            self.calls.push("mask".into());
        }
        fn remount_root(&mut self, flags: libc::c_ulong) -> io::Result<()> {
            self.calls.push(format!("remount / [{}]", f(flags)));
            Ok(())
        }
    }

    fn spec() -> ChildSpec {
        ChildSpec {
            merged: PathBuf::from("/r/run"),
            lower: "/r/layers/a".into(),
            upper: PathBuf::from("/r/c/upper"),
            work: PathBuf::from("/r/c/work"),
            tmp_layer: false,
            hostname: "h".into(),
            etc_files: [
                (b"h\n".to_vec(), "/etc/hostname"),
                (Vec::new(), "/etc/hosts"),
                (Vec::new(), "/etc/resolv.conf"),
            ],
            volumes: vec![(PathBuf::from("/data"), "/data".into(), true)],
            args: Vec::new(),
            env: Vec::new(),
            working_dir: "/".into(),
            user: None,
            tty: true,
            new_net: true,
            join_net: None,
            read_only: true,
            privileged: false,
            caps: 0,
            stdio: [0, 1, 2],
            cgroup_join: Vec::new(),
            cgroupfs: crate::runtime::cgroup::Inside::Cgroup2,
            seccomp: None,
            no_new_privs: true,
            tmpfs: vec![(
                "/run".into(),
                libc::MS_NOSUID | libc::MS_NODEV,
                String::new(),
            )],
            shm_size: 64 << 20,
            rlimits: Vec::new(),
            init: false,
            devices: vec![(PathBuf::from("/dev/fuse"), "/dev/fuse".into())],
            lower_deep: Vec::new(),
        }
    }

    #[test]
    fn the_rootfs_is_built_in_dockers_order_with_dockers_flags() {
        let mut r = Recorder::default();
        let slave = build(&spec(), &mut r, -1, None).unwrap_or_else(|e| panic!("{}", e.msg));
        assert!(slave.is_some(), "-t gives the console's slave");
        assert_eq!(
            r.calls,
            [
                "mount - / [rec,private]",
                "mount overlay /r/run [nodev]",
                "root /r/run",
                "mount proc /proc [nosuid,nodev,noexec]",
                "mount sysfs /sys [ro,nosuid,nodev,noexec]",
                "cgroupfs cgroup2 ro",
                "mount tmpfs /dev [nosuid,nodev,strictatime]",
                "populate /dev",
                "bind /dev/fuse /dev/fuse []",
                "mount devpts /dev/pts [nosuid,noexec]",
                "mount tmpfs /dev/shm [nosuid,nodev,noexec]",
                "mount mqueue /dev/mqueue [nosuid,nodev,noexec]",
                "etc /etc/hostname",
                "etc /etc/hosts",
                "etc /etc/resolv.conf",
                "markers",
                "bind /data /data [ro,nodev]",
                "mount tmpfs /run [nosuid,nodev]",
                "console",
                "pivot",
                "mask",
                "remount / [ro,remount,bind]",
            ]
        );
    }

    #[test]
    fn a_tmp_write_layer_goes_on_a_tmpfs_and_privileged_keeps_devices() {
        let mut s = spec();
        s.tmp_layer = true;
        s.upper = PathBuf::from("upper");
        s.work = PathBuf::from("work");
        s.privileged = true;
        s.tty = false;
        s.read_only = false;
        s.volumes.clear();
        let mut r = Recorder::default();
        assert!(
            build(&s, &mut r, -1, None)
                .unwrap_or_else(|e| panic!("{}", e.msg))
                .is_none()
        );
        assert_eq!(
            r.calls[..6],
            [
                "mount - / [rec,private]",
                "mount tmpfs /r/run [nosuid,nodev]",
                "mkdir /r/run/upper",
                "mkdir /r/run/work",
                "mkdir /r/run/root",
                "mount overlay /r/run/root []",
            ]
        );
        assert!(
            r.calls
                .contains(&"mount tmpfs /dev [nosuid,strictatime]".to_string())
        );
        assert_eq!(r.calls.last().map(String::as_str), Some("mask"));
        assert!(!r.calls.iter().any(|c| c == "console"));
    }
}
