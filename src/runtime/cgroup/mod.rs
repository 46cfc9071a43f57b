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
//! - `ContainerCgroup::entry()` gives the descriptors through which the container's init
//!   enters without a migration (see [`Entry`]); `add_pid(pid)` moves a running process in
//!   (the fallback for kernels without `CLONE_INTO_CGROUP`).
//! - `inside()` says what the container's `/sys/fs/cgroup` shows (mounted by the child).
//! - `stats()` returns peak memory, cpu time and whether the OOM killer fired.
//! - `destroy()` kills what is left inside, then removes the cgroup (retrying rmdir).
//! - `remove_stale(keep)` removes wharf cgroups whose id is not in `keep` (crash recovery):
//!   only empty ones older than a few seconds, as other state roots share `wharf/`.
//!
//! How it relates to `cgroups-rs`: we use it to find the layout (`is_cgroup2_unified_mode`,
//! a statfs) and to parse `/proc/self/mountinfo` (`mountinfo_self`), once per process. The
//! cgroup objects themselves (`Cgroup::new_with_specified_controllers`, the controllers'
//! setters) are bypassed with direct file writes, because for our hot path they cost or hide
//! too much:
//! - every `Cgroup::load`/`clone` re-reads mountinfo or `cgroup.controllers`;
//! - on v1, `Cgroup::new` creates the group in every mounted hierarchy, and the cpuset
//!   initialisation from the parent logs and ignores its errors (a silent skip);
//! - on v2, enabling controllers in `cgroup.subtree_control` ignores write errors, and
//!   `add_task` refuses non-threaded cgroups;
//! - `delete` retries rmdir with a first delay of 10 ms, which alone is most of our budget
//!   (`wharf run --rm IMG /bin/true` must beat crun's ~17 ms end to end);
//! - its errors name neither the flag nor what to do about it.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use serde::{Deserialize, Serialize};

use crate::error::user;
use crate::model::{Limits, MIN_MEMORY, Stats, format_cpu_list, parse_cpu_list};

mod bpf;
mod v1;
mod v2;

/// The directory below each hierarchy's root that holds every container's cgroup.
pub const PARENT: &str = "wharf";

/// The CFS period wharf uses for `--cpus`: 100 ms, as docker does.
pub const CPU_PERIOD_US: u64 = 100_000;

/// Live usage of a running container's cgroup, for `wharf stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// CPU time used, in nanoseconds.
    pub cpu_ns: u64,
    /// Memory in use minus the inactive page cache (docker's "MEM USAGE").
    pub memory: u64,
    /// The memory limit; None when unlimited (the CLI shows the host's memory).
    pub memory_limit: Option<u64>,
    /// Bytes read from and written to block devices.
    pub block_read: u64,
    pub block_write: u64,
    /// Processes (tasks) inside.
    pub pids: u64,
}

/// Which cgroup layout the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// How a new process enters a container's cgroup without being migrated there by its parent.
///
/// Moving another process with `cgroup.procs` takes the kernel's global
/// `cgroup_threadgroup_rwsem` for writing, which waits for an RCU grace period unless another
/// migration happened just before: 5-17 ms on this host, more than the rest of a container's
/// start. Two ways avoid it:
/// - `clone_into`: a directory of a cgroup2 hierarchy (the v2 cgroup, or on a hybrid host the
///   container's directory in the controller-less cgroup2 mount) for
///   `clone3(CLONE_INTO_CGROUP)`, so the child is born there (Linux >= 5.7);
/// - `self_join`: the v1 hierarchies' `tasks` files, opened write-only. The child writes `0`
///   to each before anything else: a thread moving itself needs no threadgroup lock.
#[derive(Debug, Default)]
pub struct Entry {
    pub clone_into: Option<OwnedFd>,
    pub self_join: Vec<OwnedFd>,
}

/// One container's cgroup.
pub trait ContainerCgroup {
    /// Moves the running process `pid` in (the slow path: see [`Entry`]).
    fn add_pid(&self, pid: i32) -> Result<()>;
    /// Descriptors through which a process not yet created enters this cgroup. With
    /// `clone_into` set, a parent that cannot use `CLONE_INTO_CGROUP` must `add_pid` instead.
    fn entry(&self) -> Result<Entry>;
    fn stats(&self) -> Stats;
    fn destroy(&self) -> Result<()>;
    /// The cgroup's directories: one per v1 hierarchy, or the single v2 one. Useful to
    /// check for leftovers, and on v2 to open a directory fd for `CLONE_INTO_CGROUP`.
    fn paths(&self) -> Vec<PathBuf> {
        Vec::new()
    }
    /// Lifts the device rules of [`DEFAULT_DEVICES`] (`--privileged`). Call it before the
    /// container's command runs.
    fn allow_all_devices(&self) -> Result<()> {
        Ok(())
    }
    /// What the container's `/sys/fs/cgroup` shows (see [`Inside`]).
    fn inside(&self) -> Inside {
        Inside::V1(Vec::new())
    }
    /// Freezes (`pause`) or thaws (`unpause`) every process inside; returns once the kernel
    /// reports the new state (v1 `freezer.state`, v2 `cgroup.events` frozen).
    fn set_frozen(&self, frozen: bool) -> Result<()>;
    /// Whether the cgroup is frozen (or freezing).
    fn is_frozen(&self) -> bool;
    /// Live usage (`stats`).
    fn usage(&self) -> Usage;
    /// Writes `limits` to the live cgroup (`update`), with the same writers as `create`.
    fn update(&self, limits: &Limits) -> Result<()>;
    /// Every process inside, child cgroups included (`top`).
    fn procs(&self) -> Vec<i32> {
        let mut out = Vec::new();
        if let Some(dir) = self.paths().first() {
            procs_below(dir, &mut out);
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// Pids in `dir`'s `cgroup.procs` and in those of the cgroups below it.
fn procs_below(dir: &Path, out: &mut Vec<i32>) {
    out.extend(read_procs(dir));
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                procs_below(&e.path(), out);
            }
        }
    }
}

/// Polls `done` every 200 µs for up to 2 s; an error naming `what` when it never holds.
fn await_state(what: &str, mut done: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        if done() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    anyhow::bail!("the kernel did not {what} the container's processes within 2 s")
}

/// Memory in use as docker counts it: usage minus the inactive file cache of `stat_file`.
fn memory_usage(usage: Option<u64>, stat_file: &Path, inactive_key: &str) -> u64 {
    let usage = usage.unwrap_or(0);
    let inactive = read_key(stat_file, inactive_key).unwrap_or(0);
    usage.saturating_sub(inactive)
}

/// The container's view of its cgroups at `/sys/fs/cgroup`, read-only, as docker shows it.
/// The child mounts it inside its cgroup namespace, made once it is in its cgroups, so
/// every path it shows starts at the container's own cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inside {
    /// v2: a cgroup2 mount (rooted at the namespace's root, the container's cgroup).
    Cgroup2,
    /// v1: a tmpfs holding one read-only bind mount of the container's directory per
    /// hierarchy, as runc does.
    V1(Vec<V1Mount>),
}

/// One v1 hierarchy as the container sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Mount {
    /// The directory's name under `/sys/fs/cgroup` (the host's: `memory`, `cpu,cpuacct`).
    pub name: String,
    /// The container's directory in this hierarchy on the host.
    pub source: PathBuf,
    /// The names linked to `name` for a co-mounted hierarchy (`cpu` and `cpuacct` →
    /// `cpu,cpuacct`), as the host and docker show them.
    pub links: Vec<String>,
}

/// The devices a container may use, as docker and runc allow them by default: `(type, major,
/// minor, access)`, with `None` for `*`. Any character or block device node may be created
/// (`m`), but only these opened; so `CAP_MKNOD` in a container does not open the host's
/// disks. v1: the devices controller; v2: a BPF_PROG_TYPE_CGROUP_DEVICE program.
pub const DEFAULT_DEVICES: &[(char, Option<u32>, Option<u32>, &str)] = &[
    ('c', None, None, "m"),
    ('b', None, None, "m"),
    ('c', Some(1), Some(3), "rwm"),    // null
    ('c', Some(1), Some(5), "rwm"),    // zero
    ('c', Some(1), Some(7), "rwm"),    // full
    ('c', Some(1), Some(8), "rwm"),    // random
    ('c', Some(1), Some(9), "rwm"),    // urandom
    ('c', Some(5), Some(0), "rwm"),    // tty
    ('c', Some(5), Some(1), "rwm"),    // console
    ('c', Some(5), Some(2), "rwm"),    // ptmx
    ('c', Some(136), None, "rwm"),     // pts/*
    ('c', Some(10), Some(200), "rwm"), // net/tun
];

/// A device rule as the v1 `devices.allow` file takes it: `c 1:3 rwm`, `c 136:* rwm`.
pub fn device_rule(rule: &(char, Option<u32>, Option<u32>, &str)) -> String {
    let n = |x: Option<u32>| x.map_or_else(|| "*".to_string(), |v| v.to_string());
    format!("{} {}:{} {}", rule.0, n(rule.1), n(rule.2), rule.3)
}

/// The host's layout, found once per process.
enum Layout {
    V1(v1::Hierarchies),
    V2(v2::Root),
}

fn layout() -> &'static Layout {
    static LAYOUT: OnceLock<Layout> = OnceLock::new();
    LAYOUT.get_or_init(|| {
        if cgroups_rs::fs::hierarchies::is_cgroup2_unified_mode() {
            Layout::V2(v2::Root::find())
        } else {
            Layout::V1(v1::Hierarchies::find())
        }
    })
}

pub fn detect() -> Version {
    match layout() {
        Layout::V1(_) => Version::V1,
        Layout::V2(_) => Version::V2,
    }
}

/// Writes `limits` to the live cgroup of container `id` (`wharf update`), validated by the
/// same rules as [`create`]'s. A missing cgroup is no error: nothing runs to limit.
pub fn update(id: &str, limits: &Limits) -> Result<()> {
    check_id(id)?;
    Plan::from_limits(limits)?;
    match open(id) {
        Some(cg) => cg.update(limits),
        None => Ok(()),
    }
}

/// Whether the cgroup of container `id` is frozen (`wharf pause`). One file read.
pub fn is_frozen(id: &str) -> bool {
    open(id).is_some_and(|cg| cg.is_frozen())
}

/// A device a container may use besides [`DEFAULT_DEVICES`] (`--device`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRule {
    /// 'c' or 'b'.
    pub kind: char,
    pub major: u32,
    pub minor: u32,
    /// Some of "rwm".
    pub access: String,
}

impl crate::model::Device {
    /// The devices cgroup / BPF rule that lets the container use this node.
    pub fn rule(&self) -> DeviceRule {
        DeviceRule {
            kind: self.kind,
            major: self.major,
            minor: self.minor,
            access: self.access.clone(),
        }
    }
}

/// Makes the cgroup `wharf/<id>` and applies `limits`. On error nothing is left behind.
pub fn create(id: &str, limits: &Limits) -> Result<Box<dyn ContainerCgroup>> {
    create_with_devices(id, limits, &[])
}

/// [`create`], allowing `devices` too (v1 `devices.allow`, v2 the BPF filter's rules).
pub fn create_with_devices(
    id: &str,
    limits: &Limits,
    devices: &[DeviceRule],
) -> Result<Box<dyn ContainerCgroup>> {
    check_id(id)?;
    let mut plan = Plan::from_limits(limits)?;
    plan.devices = devices.to_vec();
    match layout() {
        Layout::V1(h) => Ok(Box::new(h.create(id, &plan)?)),
        Layout::V2(r) => Ok(Box::new(r.create(id, &plan)?)),
    }
}

/// The existing cgroup of container `id`, if there is one.
pub fn open(id: &str) -> Option<Box<dyn ContainerCgroup>> {
    check_id(id).ok()?;
    match layout() {
        Layout::V1(h) => h.open(id).map(|c| Box::new(c) as Box<dyn ContainerCgroup>),
        Layout::V2(r) => r.open(id).map(|c| Box::new(c) as Box<dyn ContainerCgroup>),
    }
}

/// Removes the `wharf/<id>` cgroups whose id is not in `keep` and that are left over: empty
/// (no process inside) and older than [`STALE_MIN_AGE`]. Goes on past a failure and returns
/// the first error.
///
/// A cgroup that still holds processes is left alone, whatever its id: every state root on
/// the host (`--root`, each test's private root) shares `wharf/`, so an id unknown to this
/// store may be another root's running container. Kill your own dead containers with
/// `open(id)` + `destroy()`. The age guard covers another wharf between `create` and
/// `add_pid`.
pub fn remove_stale(keep: &[String]) -> Result<()> {
    remove_stale_where(keep, &|_| true)
}

/// Stale cgroups younger than this are left alone.
pub const STALE_MIN_AGE: Duration = Duration::from_secs(10);

/// Like [`remove_stale`], but only for ids that `candidate` accepts (e.g. a test's prefix).
pub fn remove_stale_where(keep: &[String], candidate: &dyn Fn(&str) -> bool) -> Result<()> {
    let ids = match layout() {
        Layout::V1(h) => h.ids(),
        Layout::V2(r) => r.ids(),
    };
    let mut first_err = None;
    for id in ids.iter().filter(|id| !keep.contains(id) && candidate(id)) {
        let Some(cg) = open(id) else { continue };
        let paths = cg.paths();
        if paths.iter().any(|p| !read_procs(p).is_empty()) {
            tracing::debug!("cgroup of {id} holds processes: not stale");
            continue;
        }
        // A cgroup directory's mtime is its creation time (nothing is created inside it).
        let young = paths.iter().any(|p| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age < STALE_MIN_AGE)
        });
        if young {
            continue;
        }
        if let Err(e) = cg.destroy() {
            tracing::warn!("cannot remove stale cgroup of {id}: {e:#}");
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Ids are path components: refuse anything that could escape `wharf/`.
fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        anyhow::bail!("invalid cgroup name {id:?}: expected letters, digits, '-', '_' or '.'")
    }
}

// ---------------------------------------------------------------- limits, validated

/// Memory plus swap, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MemSwap {
    /// `--memory-swap -1`.
    Unlimited,
    /// Total bytes of memory plus swap, as the user asked.
    Total(u64),
    /// No `--memory-swap` with `-m`: docker's default of twice the memory, applied only
    /// where the host accounts swap.
    DefaultTotal(u64),
}

/// `Limits` checked and converted to what the files take.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Plan {
    pub memory: Option<u64>,
    pub memswap: Option<MemSwap>,
    /// CFS quota in µs for a period of [`CPU_PERIOD_US`].
    pub cpu_quota: Option<u64>,
    pub cpu_shares: Option<u64>,
    /// `None` inside: no limit ("max").
    pub pids: Option<Option<u64>>,
    pub cpuset_cpus: Option<String>,
    /// Devices allowed besides the defaults.
    pub devices: Vec<DeviceRule>,
}

impl Plan {
    /// The extra device rules in the default rules' shape.
    pub(crate) fn device_rules(&self) -> Vec<(char, Option<u32>, Option<u32>, &str)> {
        self.devices
            .iter()
            .map(|d| (d.kind, Some(d.major), Some(d.minor), d.access.as_str()))
            .collect()
    }

    /// Checks `limits` by `create`'s rules without touching a cgroup (`update` of a
    /// container that is not running).
    pub(crate) fn check(limits: &Limits) -> Result<()> {
        Plan::from_limits(limits).map(|_| ())
    }

    /// The first limit this plan sets whose controller `has` says is missing, as
    /// `(controller, flag)`: a limit the host cannot enforce is refused, never skipped.
    pub(crate) fn missing_controller(
        &self,
        has: impl Fn(&str) -> bool,
    ) -> Option<(&'static str, &'static str)> {
        let needs = [
            (self.memory.is_some(), "memory", "--memory"),
            (
                matches!(self.memswap, Some(MemSwap::Total(_))),
                "memory",
                "--memory-swap",
            ),
            (self.cpu_quota.is_some(), "cpu", "--cpus"),
            (self.cpu_shares.is_some(), "cpu", "--cpu-shares"),
            (self.pids.is_some(), "pids", "--pids-limit"),
            (self.cpuset_cpus.is_some(), "cpuset", "--cpuset-cpus"),
        ];
        needs
            .into_iter()
            .find(|&(wanted, controller, _)| wanted && !has(controller))
            .map(|(_, controller, flag)| (controller, flag))
    }

    pub(crate) fn from_limits(l: &Limits) -> Result<Plan> {
        let mut p = Plan::default();
        if let Some(m) = l.memory {
            if m < MIN_MEMORY {
                let given = match m {
                    m if m % (1 << 20) == 0 => format!("{}MiB", m >> 20),
                    m if m % 1024 == 0 => format!("{}KiB", m >> 10),
                    m => format!("{m} bytes"),
                };
                return Err(
                    user(format!("invalid --memory {given}: the minimum is 6MiB"))
                        .hint("give -m a value of at least 6m")
                        .into(),
                );
            }
            p.memory = Some(m);
        }
        p.memswap = match (l.memory_swap, p.memory) {
            (None | Some(0), None) => None,
            (None | Some(0), Some(m)) => Some(MemSwap::DefaultTotal(m.saturating_mul(2))),
            (Some(-1), _) => Some(MemSwap::Unlimited),
            (Some(s), _) if s < 0 => {
                return Err(user(format!("invalid --memory-swap {s}"))
                    .hint("give a size of at least -m's, or -1 for unlimited swap")
                    .into());
            }
            (Some(_), None) => {
                return Err(user("--memory-swap needs --memory")
                    .hint("set -m too: --memory-swap is memory plus swap")
                    .into());
            }
            (Some(s), Some(m)) => {
                let s = s as u64;
                if s < m {
                    return Err(user(format!(
                        "--memory-swap {s} is smaller than --memory {m}"
                    ))
                    .hint("--memory-swap is memory plus swap: give at least -m's value, or -1")
                    .into());
                }
                Some(MemSwap::Total(s))
            }
        };
        if let Some(c) = l.cpus {
            p.cpu_quota = Some(cpus_to_quota(c, online_cpus())?);
        }
        p.cpu_shares = match l.cpu_shares {
            None | Some(0) => None,
            Some(s) if !(2..=262_144).contains(&s) => {
                return Err(user(format!("invalid --cpu-shares {s}"))
                    .hint("give a value between 2 and 262144 (the default is 1024)")
                    .into());
            }
            Some(s) => Some(s),
        };
        p.pids = l.pids.map(|n| if n <= 0 { None } else { Some(n as u64) });
        if let Some(c) = &l.cpuset_cpus {
            let set = parse_cpu_list(c).map_err(|e| {
                user(format!("invalid --cpuset-cpus {c:?}: {e}"))
                    .hint("give CPU numbers and ranges, e.g. 0-2,4")
            })?;
            p.cpuset_cpus = Some(format_cpu_list(&set));
        }
        Ok(p)
    }
}

/// Checks `l` as a start would (`create` does it with the same rules), plus what the
/// kernel would refuse at start: CPUs of `--cpuset-cpus` that this host does not have.
pub fn check_limits(l: &Limits) -> Result<()> {
    let plan = Plan::from_limits(l)?;
    if let (Some(want), Some(online)) = (&plan.cpuset_cpus, host_cpus()) {
        let want = parse_cpu_list(want).unwrap_or_default();
        if let Some(bad) = want.difference(&online).next() {
            return Err(user(format!(
                "invalid --cpuset-cpus: this host has no CPU {bad} (it has {})",
                format_cpu_list(&online)
            ))
            .hint("give CPUs from the host's list (/sys/devices/system/cpu/online)")
            .into());
        }
    }
    Ok(())
}

/// The host's online CPUs.
pub fn host_cpus() -> Option<BTreeSet<u32>> {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/online").ok()?;
    parse_cpu_list(&s).ok()
}

/// `--cpus` → CFS quota in µs for a 100 ms period. `online` is the number of online CPUs.
pub fn cpus_to_quota(cpus: f64, online: Option<usize>) -> Result<u64> {
    let max = online.unwrap_or(usize::MAX) as f64;
    if !cpus.is_finite() || cpus < 0.01 || cpus > max {
        let range = match online {
            Some(n) => format!("0.01 to {n}, as this host has {n} CPUs"),
            None => "at least 0.01".to_string(),
        };
        return Err(user(format!("invalid --cpus {cpus}"))
            .hint(format!("give a value from {range}"))
            .into());
    }
    Ok(((cpus * CPU_PERIOD_US as f64).round() as u64).max(1000))
}

/// v1 `cpu.shares` (2..262144, default 1024) → v2 `cpu.weight` (1..10000, default 100),
/// the conversion runc, crun and systemd use.
pub fn shares_to_weight(shares: u64) -> u64 {
    match shares {
        0 => 0,
        1..=2 => 1,
        262_144.. => 10_000,
        s => 1 + ((s - 2) * 9999) / 262_142,
    }
}

/// How many CPUs the host has online.
pub fn online_cpus() -> Option<usize> {
    host_cpus().map(|s| s.len())
}

/// Checks that the requested CPUs are a subset of what the parent cgroup allows.
fn check_cpuset_subset(want: &str, allowed: &str) -> Result<()> {
    let (Ok(w), Ok(a)) = (parse_cpu_list(want), parse_cpu_list(allowed)) else {
        return Ok(()); // the kernel will judge
    };
    if let Some(bad) = w.difference(&a).next() {
        return Err(user(format!(
            "invalid --cpuset-cpus {want}: CPU {bad} is not available here"
        ))
        .hint(format!("this host allows CPUs {}", allowed.trim()))
        .into());
    }
    Ok(())
}

// ---------------------------------------------------------------- file helpers

/// Writes `value` to the cgroup file `dir/file`.
fn write_file(dir: &Path, file: &str, value: &str) -> Result<()> {
    let p = dir.join(file);
    std::fs::write(&p, value).with_context(|| format!("cannot write {value:?} to {}", p.display()))
}

/// Writes a limit; a missing file means the host does not support it, which the user is
/// told about, naming the flag.
fn write_limit(dir: &Path, file: &str, value: &str, flag: &str) -> Result<()> {
    let p = dir.join(file);
    match std::fs::write(&p, value) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(user(format!(
            "{flag} is not supported on this host: {} does not exist",
            p.display()
        ))
        .hint(format!("drop {flag}, or enable it in the kernel"))
        .into()),
        Err(e) if e.kind() == ErrorKind::InvalidInput => Err(user(format!(
            "the kernel refused {flag} {value}: {e} (writing {})",
            p.display()
        ))
        .hint(format!("check the value of {flag}"))
        .into()),
        Err(e) => Err(e)
            .with_context(|| format!("cannot set {flag}: writing {value:?} to {}", p.display())),
    }
}

fn read_trimmed(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

fn read_u64(p: &Path) -> Option<u64> {
    read_trimmed(p)?.parse().ok()
}

/// The value of `key` in a flat keyed file (`memory.events`, `cpu.stat`, `memory.oom_control`).
fn read_key(p: &Path, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(p).ok()?;
    s.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        if k == key {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

/// Pids in a `cgroup.procs`; empty when the cgroup is gone.
fn read_procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn kill_pids(pids: &[i32]) {
    for &pid in pids {
        if pid > 0 {
            // ESRCH: it died already.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Opens `path` close-on-exec with `flags` (a cgroup directory or `tasks` file for [`Entry`]).
fn open_fd(path: &Path, flags: i32) -> Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(flags & libc::O_DIRECTORY != 0)
        .write(flags & libc::O_DIRECTORY == 0)
        .custom_flags(flags | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    Ok(f.into())
}

/// mkdir that accepts an existing directory.
fn mkdir(p: &Path) -> Result<()> {
    match std::fs::create_dir(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => Err(user(format!(
            "cannot create cgroup {}: permission denied",
            p.display()
        ))
        .hint("run wharf as root")
        .into()),
        Err(e) => Err(e).with_context(|| format!("cannot create cgroup {}", p.display())),
    }
}

/// How long destroy keeps trying to empty and remove a cgroup before it gives up.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Removes the cgroup directory `dir` (and any child cgroups below it), calling `kill`
/// before each retry. A missing directory is success.
fn remove_dir_retry(dir: &Path, kill: &dyn Fn(&Path)) -> Result<()> {
    let start = Instant::now();
    let mut delay = Duration::from_micros(100);
    loop {
        let err = match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => e,
        };
        // Child cgroups (a container that made its own) go first.
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    let _ = remove_dir_retry(&e.path(), kill);
                }
            }
        }
        if start.elapsed() > REMOVE_TIMEOUT {
            let left = read_procs(dir);
            return Err(err).with_context(|| {
                format!(
                    "cannot remove cgroup {} (processes still inside: {left:?})",
                    dir.display()
                )
            });
        }
        kill(dir);
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_become_quota() {
        assert_eq!(cpus_to_quota(0.5, Some(2)).unwrap(), 50_000);
        assert_eq!(cpus_to_quota(1.5, Some(2)).unwrap(), 150_000);
        assert_eq!(cpus_to_quota(0.01, Some(2)).unwrap(), 1_000);
        assert_eq!(cpus_to_quota(2.0, None).unwrap(), 200_000);
        assert!(cpus_to_quota(0.001, Some(2)).is_err());
        assert!(cpus_to_quota(3.0, Some(2)).is_err());
        assert!(cpus_to_quota(f64::NAN, Some(2)).is_err());
        assert!(cpus_to_quota(-1.0, None).is_err());
    }

    #[test]
    fn shares_become_weight() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(500_000), 10_000);
        assert_eq!(shares_to_weight(100), 4);
    }

    #[test]
    fn cpu_lists() {
        let s = parse_cpu_list("0-2,4, 6-7\n").unwrap();
        assert_eq!(
            s.iter().copied().collect::<Vec<_>>(),
            vec![0, 1, 2, 4, 6, 7]
        );
        assert_eq!(format_cpu_list(&s), "0-2,4,6-7");
        assert_eq!(format_cpu_list(&parse_cpu_list("3,1,2").unwrap()), "1-3");
        assert!(parse_cpu_list("").is_err());
        assert!(parse_cpu_list("a").is_err());
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("1,,2").is_err());
        assert!(check_cpuset_subset("0-1", "0-3").is_ok());
        assert!(check_cpuset_subset("4", "0-3").is_err());
    }

    #[test]
    fn memory_swap_rules() {
        let mib = 1024 * 1024;
        let l = |memory, memory_swap| Limits {
            memory,
            memory_swap,
            ..Limits::default()
        };
        let p = Plan::from_limits(&l(Some(64 * mib), None)).unwrap();
        assert_eq!(p.memswap, Some(MemSwap::DefaultTotal(128 * mib)));
        let p = Plan::from_limits(&l(Some(64 * mib), Some(-1))).unwrap();
        assert_eq!(p.memswap, Some(MemSwap::Unlimited));
        let p = Plan::from_limits(&l(Some(64 * mib), Some(96 * mib as i64))).unwrap();
        assert_eq!(p.memswap, Some(MemSwap::Total(96 * mib)));
        assert!(Plan::from_limits(&l(Some(64 * mib), Some(32 * mib as i64))).is_err());
        assert!(Plan::from_limits(&l(None, Some(64 * mib as i64))).is_err());
        assert!(Plan::from_limits(&l(Some(1024), None)).is_err());
        assert!(Plan::from_limits(&l(Some(64 * mib), Some(-2))).is_err());
        assert_eq!(Plan::from_limits(&l(None, None)).unwrap(), Plan::default());
    }

    #[test]
    fn other_limits() {
        let p = Plan::from_limits(&Limits {
            cpu_shares: Some(512),
            pids: Some(-1),
            cpuset_cpus: Some("1,0".into()),
            ..Limits::default()
        })
        .unwrap();
        assert_eq!(p.cpu_shares, Some(512));
        assert_eq!(p.pids, Some(None));
        assert_eq!(p.cpuset_cpus.as_deref(), Some("0-1"));
        let bad = |l: Limits| {
            let e = Plan::from_limits(&l).unwrap_err();
            crate::error::find_user_error(&e).is_some()
        };
        assert!(bad(Limits {
            cpu_shares: Some(1),
            ..Limits::default()
        }));
        assert!(bad(Limits {
            cpuset_cpus: Some("x".into()),
            ..Limits::default()
        }));
    }

    #[test]
    fn device_rules() {
        let rules: Vec<String> = DEFAULT_DEVICES.iter().map(device_rule).collect();
        assert_eq!(rules[0], "c *:* m");
        assert!(rules.contains(&"c 1:3 rwm".to_string()));
        assert!(rules.contains(&"c 136:* rwm".to_string()));
    }

    #[test]
    fn ids_cannot_escape() {
        assert!(check_id("abc123").is_ok());
        for bad in ["", ".", "..", "a/b", "../x", "a b"] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keyed_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("memory.events");
        std::fs::write(&p, "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n").unwrap();
        assert_eq!(read_key(&p, "oom_kill"), Some(1));
        assert_eq!(read_key(&p, "oom"), Some(1));
        assert_eq!(read_key(&p, "nope"), None);
    }
}
