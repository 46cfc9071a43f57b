//! A container's network namespace as a file: made by a short-lived thread that unshares
//! its network namespace and bind-mounts it on `<root>/netns/<id>`, so the namespace lives
//! from netavark's setup to its teardown, across the container's restarts, whatever
//! process holds it.

use std::path::Path;

use anyhow::{Context, Result};
use nix::mount::{MntFlags, MsFlags};

/// Creates the namespace file at `path` (which must not exist).
pub fn create(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::File::create_new(path).with_context(|| format!("cannot create {}", path.display()))?;
    let target = path.to_path_buf();
    // The unshare changes only the calling thread's namespace: a thread of its own, which
    // ends once the namespace is bound to the file.
    let made = std::thread::spawn(move || -> Result<()> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .context("cannot create a network namespace")?;
        let ns = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
        nix::mount::mount(
            Some(ns.as_str()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .with_context(|| format!("cannot bind the network namespace to {}", target.display()))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the thread making the network namespace panicked"))?;
    if made.is_err() {
        let _ = std::fs::remove_file(path);
    }
    made
}

/// Unmounts and removes the namespace file (nothing to do when it is gone).
pub fn remove(path: &Path) -> Result<()> {
    match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e).with_context(|| format!("cannot unmount {}", path.display())),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}
