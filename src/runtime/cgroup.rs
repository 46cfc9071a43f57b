//! cgroups: one small interface, with v1 and v2 behind it, detected at run time.
//!
//! A container's cgroup is `wharf/<id>` under each controller's root (v1) or under the
//! unified root (v2). Limits are written before the container's command runs; usage is
//! read for the journal before the cgroup is removed.
//!
//! INTERFACE CONTRACT (the runtime codes against this; the implementation fills it in):
//! - `Limits` is what `run` flags and manifests set.
//! - `create(id, &limits)` makes the cgroup and applies the limits; an unsupported limit on
//!   this host is an error naming it, not a silent skip.
//! - `ContainerCgroup::add_pid(pid)` moves a process in (the parent does this for the
//!   container's init before letting it exec).
//! - `stats()` returns peak memory, cpu time and whether the OOM killer fired.
//! - `destroy()` kills what is left inside, then removes the cgroup (retrying rmdir).
//! - `remove_stale(keep)` removes wharf cgroups whose id is not in `keep` (crash recovery).

use anyhow::Result;
use serde::{Deserialize, Serialize};

/// Resource limits of a container. `None` leaves the host default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Bytes of memory (`-m`).
    pub memory: Option<u64>,
    /// Bytes of memory plus swap (`--memory-swap`); -1 is unlimited swap.
    pub memory_swap: Option<i64>,
    /// CPUs as a fraction (`--cpus 0.5`): quota/period with a 100 ms period.
    pub cpus: Option<f64>,
    /// Relative CPU weight (`--cpu-shares`, docker's 2..262144, default 1024).
    pub cpu_shares: Option<u64>,
    /// Maximum number of processes (`--pids-limit`).
    pub pids: Option<i64>,
    /// CPUs the container may run on (`--cpuset-cpus 0-1`).
    pub cpuset_cpus: Option<String>,
}

/// Usage read from a cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub peak_memory: Option<u64>,
    pub cpu_usec: Option<u64>,
    /// The OOM killer killed a process in this cgroup.
    pub oom_killed: bool,
}

/// Which cgroup layout the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// One container's cgroup.
pub trait ContainerCgroup {
    fn add_pid(&self, pid: i32) -> Result<()>;
    fn stats(&self) -> Stats;
    fn destroy(&self) -> Result<()>;
}

pub fn detect() -> Version {
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        Version::V2
    } else {
        Version::V1
    }
}

pub fn create(_id: &str, _limits: &Limits) -> Result<Box<dyn ContainerCgroup>> {
    anyhow::bail!("cgroups are not implemented yet")
}

pub fn open(_id: &str) -> Option<Box<dyn ContainerCgroup>> {
    None
}

pub fn remove_stale(_keep: &[String]) -> Result<()> {
    Ok(())
}
