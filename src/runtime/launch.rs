//! The parent's side of container creation: prepare the container and run dirs, clone the
//! child into its namespaces, put it in its cgroup, release it, and learn whether its exec
//! succeeded.
//!
//! Sync protocol: the typed messages of [`super::channel`] over a SOCK_SEQPACKET pair
//! (close-on-exec on both ends): `ToChild::Go` after the cgroup holds the child; back,
//! `FromChild::Pty` with the pty master (with `-t`), then `FromChild::Failed` or EOF (exec
//! succeeded: the socket closed on exec).

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::cgroup::{self, ContainerCgroup};
use super::channel::{self, Exec, ToChild, exec_hint};
use super::child::{self, ChildSpec};
use super::{spec, sys};
use crate::error::{exit, user};
use crate::model::{ContainerConfig, Network};

/// A container whose command is running.
pub struct Launched {
    /// Host pid of the container's init.
    pub pid: i32,
    /// The pty master, with `-t`.
    pub master: Option<OwnedFd>,
    pub cgroup: Option<Box<dyn ContainerCgroup>>,
}

/// overlay's `lowerdir=` value for `dirs` (top first): `:`-separated, each checked.
pub(crate) fn lowerdir(dirs: &[PathBuf]) -> Result<String> {
    let mut lower = String::new();
    for (i, l) in dirs.iter().enumerate() {
        let s = l.to_str().context("a layer path is not UTF-8")?;
        if s.contains([',', ':']) {
            anyhow::bail!("the layer path {s} holds a ',' or ':', which overlay cannot take");
        }
        if i > 0 {
            lower.push(':');
        }
        lower.push_str(s);
    }
    Ok(lower)
}

fn runtime_err(msg: String, hint: &str) -> anyhow::Error {
    user(msg).hint(hint).code(exit::RUNTIME).into()
}

/// The content of the container's /etc/hostname, /etc/hosts and /etc/resolv.conf. The child
/// writes them into its /dev tmpfs and bind-mounts them (no file on the host's disk).
pub fn etc_files(
    hostname: &str,
    hosts_extra: &[String],
    resolv: &[u8],
) -> [(Vec<u8>, &'static str); 3] {
    let mut hosts = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    if hosts_extra.is_empty() || !hosts_extra[0].ends_with(&format!("\t{hostname}")) {
        hosts.push_str(&format!("127.0.1.1\t{hostname}\n"));
    }
    for l in hosts_extra {
        hosts.push_str(l);
        hosts.push('\n');
    }
    [
        (format!("{hostname}\n").into_bytes(), "/etc/hostname"),
        (hosts.into_bytes(), "/etc/hosts"),
        (resolv.to_vec(), "/etc/resolv.conf"),
    ]
}

/// What a container's launch needs from the store, resolved by the lifecycle layer
/// (`lifecycle::prepare`): the runtime reads no table.
pub struct Prepared<'a> {
    pub id: &'a str,
    pub config: &'a ContainerConfig,
    /// The image's layer directories, top first.
    pub layers: Vec<PathBuf>,
    /// (host source, destination in the container, read-only), named volumes resolved to
    /// their data directories.
    pub volumes: Vec<(PathBuf, String, bool)>,
    /// `<root>/containers/<id>/`: the kept write layer's home.
    pub container_dir: PathBuf,
    /// The overlay mount point (`Store::run_dir`).
    pub run_dir: PathBuf,
    /// Where compiled seccomp filters are cached (the state root).
    pub seccomp_cache: PathBuf,
    /// The network namespace to join (bridge networks, `container:NAME`); None: a new one
    /// with loopback only (`none`) or the host's (`host`).
    pub netns: Option<fs::File>,
    /// /etc/hosts lines after localhost's (the container's addresses, `--add-host`).
    pub hosts: Vec<String>,
    /// /etc/resolv.conf.
    pub resolv: Vec<u8>,
}

/// Starts the prepared container. `stdio` are the descriptors for its 0, 1, 2 without a tty.
/// The caller has blocked the signals it handles (the child unblocks them before exec).
/// `winsize` is the terminal size the container's pty starts with (`-t` in the foreground).
pub fn launch(
    prep: &Prepared<'_>,
    stdio: [RawFd; 3],
    winsize: Option<libc::winsize>,
) -> Result<Launched> {
    let cfg = prep.config;
    let cdir = &prep.container_dir;
    // A `--rm` container's write layer is thrown away at exit: it lives on a tmpfs mounted in
    // the container's own mount namespace (its pages are charged to the container's memory
    // cgroup), so a run creates and deletes nothing on the host's disk. Otherwise the write
    // layer is `containers/<id>/upper`, kept across runs.
    let tmp_layer = cfg.auto_remove;
    let (upper, work) = if tmp_layer {
        (PathBuf::from("upper"), PathBuf::from("work"))
    } else {
        let (u, w) = (cdir.join("upper"), cdir.join("work"));
        for d in [&u, &w] {
            fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        (u, w)
    };
    let merged = prep.run_dir.clone();

    let layers = &prep.layers;
    if layers.is_empty() {
        return Err(runtime_err(
            "the image has no layers".into(),
            "re-import the image",
        ));
    }
    let mut lower = lowerdir(layers)?;
    // The mount options must fit in a page: a deep stack (100+ layers of 70-byte paths) is
    // named by descriptors instead, which the child opens in its own mount namespace (overlay
    // refuses layers reached through another namespace's mounts) and names relative to
    // /proc/self/fd ("12:13:…", see child.rs).
    let mut lower_deep = Vec::new();
    if lower.len() + upper.as_os_str().len() + work.as_os_str().len() + 64 > 4000 {
        // 4 bytes a layer ("NNN:") plus the rest must fit too.
        if layers.len() * 5 + upper.as_os_str().len() + work.as_os_str().len() + 64 > 4000 {
            return Err(runtime_err(
                format!(
                    "the image has {} layers, more than overlay can stack",
                    layers.len()
                ),
                "use an image with fewer layers (overlay stacks at most 500)",
            ));
        }
        lower_deep = layers.clone();
        lower = String::new();
    }
    for p in [&upper, &work] {
        if p.to_str().is_none_or(|s| s.contains([',', ':'])) {
            anyhow::bail!(
                "the path {} holds a ',' or ':', which overlay cannot take",
                p.display()
            );
        }
    }
    let volumes = prep.volumes.clone();

    let args = cfg
        .args
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| runtime_err("the command holds a NUL byte".into(), "remove it"))?;
    let caps = spec::capability_mask(cfg)?;
    let mut child_spec = ChildSpec {
        merged: merged.clone(),
        lower,
        upper,
        work,
        tmp_layer,
        hostname: cfg.hostname.clone(),
        etc_files: etc_files(&cfg.hostname, &prep.hosts, &prep.resolv),
        volumes,
        args,
        env: cfg.env.clone(),
        working_dir: cfg.working_dir.clone(),
        user: cfg.user.clone(),
        tty: cfg.tty,
        new_net: cfg.network == Network::None,
        join_net: prep.netns.as_ref().map(|f| f.as_raw_fd()),
        read_only: cfg.read_only,
        privileged: cfg.privileged,
        caps,
        stdio,
        cgroup_join: Vec::new(),
        cgroupfs: cgroup::Inside::V1(Vec::new()),
        seccomp: super::seccomp::filter_for(
            &prep.seccomp_cache,
            &cfg.security,
            caps,
            cfg.privileged,
        )
        .map_err(|e| {
            runtime_err(
                format!("cannot prepare the seccomp filter: {e:#}"),
                "check the container's seccomp profile, or run it with \
                     --security-opt seccomp=unconfined",
            )
        })?,
        no_new_privs: child::no_new_privs(cfg.privileged, &cfg.security),
        tmpfs: cfg
            .tmpfs
            .iter()
            .map(|t| {
                let (flags, data) = t.mount_args();
                (t.destination.clone(), flags, data)
            })
            .collect(),
        shm_size: cfg.shm_size.unwrap_or(64 << 20),
        rlimits: cfg
            .ulimits
            .iter()
            .filter_map(|u| u.resource().map(|r| (r, u.soft, u.hard)))
            .collect(),
        init: cfg.init,
        devices: cfg
            .devices
            .iter()
            .map(|d| (PathBuf::from(&d.host_path), d.path.clone()))
            .collect(),
        lower_deep,
    };

    // The cgroup first, with its limits, so that the child is born in it or joins it
    // itself (see `cgroup::Entry`): no migration by the parent, no RCU grace period.
    let cg = match cgroup::create_with_devices(
        prep.id,
        &cfg.limits,
        &cfg.devices.iter().map(|d| d.rule()).collect::<Vec<_>>(),
    ) {
        Ok(cg) => cg,
        Err(e) => {
            // Limits the user gave are named in `e` when they are the cause.
            return Err(match crate::error::find_user_error(&e) {
                Some(u) => anyhow::Error::new(u.clone().code(exit::RUNTIME)),
                None => anyhow::Error::new(
                    user(format!("cannot create the container's cgroup: {e:#}"))
                        .hint("check the host's cgroup setup (wharf needs the memory, cpu and pids controllers)")
                        .code(exit::RUNTIME),
                ),
            });
        }
    };
    let entry = if cfg.privileged {
        cg.allow_all_devices()
    } else {
        Ok(())
    }
    .and_then(|()| cg.entry());
    let entry = match entry {
        Ok(e) => e,
        Err(e) => {
            let _ = cg.destroy();
            return Err(e.context("cannot prepare the container's cgroup"));
        }
    };
    child_spec.cgroup_join = entry.self_join.iter().map(|f| f.as_raw_fd()).collect();
    child_spec.cgroupfs = cg.inside();

    let (parent_sock, child_sock) = match sys::seqpacket_pair() {
        Ok(p) => p,
        Err(e) => {
            let _ = cg.destroy();
            return Err(anyhow::Error::new(e).context("cannot create a socket pair"));
        }
    };
    // No CLONE_NEWCGROUP: the child makes its cgroup namespace itself once it is in its
    // cgroups (after the go, which follows `add_pid` on the slow path), so the namespace is
    // rooted at the container's own cgroup on every path and no `/..` is ever shown.
    let mut flags =
        libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    // A namespace to join is joined by the child (`setns`), before anything else.
    if cfg.network == Network::None {
        flags |= libc::CLONE_NEWNET;
    }
    // Born in the cgroup2 directory when the kernel can (>= 5.7); else the parent moves it.
    let (cloned, born_inside) = match &entry.clone_into {
        Some(dir) => match clone_into_cgroup(flags, dir.as_raw_fd()) {
            Err(e) if clone3_unsupported(&e) => (sys::clone_fork(flags), false),
            r => (r, true),
        },
        None => (sys::clone_fork(flags), true),
    };
    let pid = match cloned {
        Ok(pid) => pid,
        Err(e) => {
            let _ = cg.destroy();
            return Err(runtime_err(
                format!("cannot create the container's namespaces: {e}"),
                "wharf needs root (CAP_SYS_ADMIN) and a kernel with mount, pid, uts, ipc, net \
                 and cgroup namespaces",
            ));
        }
    };
    if pid == 0 {
        drop(parent_sock);
        child::run(&child_spec, &child_sock);
    }
    drop(child_sock);
    drop(entry);
    let kill_child = || {
        // SAFETY: kill and waitpid on our own child's pid.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    };
    if !born_inside && let Err(e) = cg.add_pid(pid) {
        kill_child();
        let _ = cg.destroy();
        return Err(e.context("cannot move the container into its cgroup"));
    }
    let cg = Some(cg);
    let fail = |e: anyhow::Error| {
        kill_child();
        if let Some(cg) = &cg {
            let _ = cg.destroy();
        }
        e
    };

    if let Err(e) = channel::send_to_child(parent_sock.as_raw_fd(), &ToChild::go(winsize)) {
        return Err(fail(
            anyhow::Error::new(e).context("cannot release the container"),
        ));
    }
    let master = match channel::await_exec(parent_sock.as_raw_fd()) {
        // EOF: exec succeeded (or the child died: the monitor sees).
        Ok(Exec::Ran { master }) => master,
        Ok(Exec::Failed { code, message }) => {
            // SAFETY: waitpid on our own child.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
            if let Some(cg) = &cg {
                let _ = cg.destroy();
            }
            return Err(user(message).hint(exec_hint(code)).code(code).into());
        }
        Err(e) => {
            return Err(fail(
                anyhow::Error::new(e).context("sync with the container"),
            ));
        }
    };
    Ok(Launched {
        pid,
        master,
        cgroup: cg,
    })
}

/// `CLONE_INTO_CGROUP` (linux/sched.h), for clone3.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` of clone3 up to `cgroup` (CLONE_ARGS_SIZE_VER2, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// clone3 as a fork (no new stack) into the namespaces of `flags`, with the child born in the
/// cgroup2 directory `cgroup_dir`. Returns 0 in the child, its pid in the parent.
fn clone_into_cgroup(flags: libc::c_int, cgroup_dir: RawFd) -> std::io::Result<libc::pid_t> {
    let args = CloneArgs {
        flags: flags as u32 as u64 | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup_dir as u64,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 with a valid clone_args of the size given; no stack, tid or tls
    // pointers (their flags are unset), so the child continues on a copy of our stack, as
    // after fork.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret as libc::pid_t)
    }
}

/// The kernel has no clone3 (< 5.3), or no CLONE_INTO_CGROUP (< 5.7: E2BIG for the larger
/// struct, or EINVAL).
fn clone3_unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL)
    )
}
