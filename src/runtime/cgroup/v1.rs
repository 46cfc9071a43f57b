//! cgroup v1: one directory `wharf/<id>` per hierarchy that carries a controller we use.
//! Hierarchies may be mounted one per controller (this machine: `cpu` and `cpuacct` apart)
//! or co-mounted (`cpu,cpuacct`); a co-mounted hierarchy gets one directory.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::io::Write;

use anyhow::{Context, Result};

use super::{
    ContainerCgroup, Entry, MemSwap, PARENT, Plan, check_cpuset_subset, kill_pids, mkdir, open_fd,
    read_key, read_procs, read_trimmed, read_u64, remove_dir_retry, write_file, write_limit,
};
use crate::error::user;
use crate::model::Stats;

/// The v1 controllers a container joins. Joining all of these (not only the limited ones)
/// makes `/proc/<pid>/cgroup` show the container's own cgroup for each, as docker does, and
/// gives destroy a freezer. blkio and devices are joined for the same reason; no limit is
/// written to them.
/// `name=systemd` is joined as runc and docker's cgroupfs driver do.
const JOIN: [&str; 9] = [
    "blkio",
    "memory",
    "pids",
    "cpuset",
    "cpuacct",
    "cpu",
    "freezer",
    "devices",
    "name=systemd",
];

/// Our name for the controller-less cgroup2 hierarchy of a hybrid host.
const UNIFIED: &str = "unified";

/// Where hybrid hosts (systemd's "hybrid" mode, this machine) mount it.
const UNIFIED_MOUNT: &str = "/sys/fs/cgroup/unified";

/// One mounted v1 hierarchy.
#[derive(Debug, Clone)]
struct Hier {
    mount: PathBuf,
    controllers: Vec<&'static str>,
}

/// The v1 hierarchies of this host that we use, found once from /proc/self/mountinfo.
#[derive(Debug, Default)]
pub(super) struct Hierarchies {
    hiers: Vec<Hier>,
}

impl Hierarchies {
    pub(super) fn find() -> Hierarchies {
        let mut hiers: Vec<Hier> = Vec::new();
        for m in cgroups_rs::fs::hierarchies::mountinfo_self() {
            let controllers: Vec<&'static str> = JOIN
                .iter()
                .copied()
                .filter(|c| m.super_opts.iter().any(|o| o == c))
                .collect();
            // The same hierarchy may be mounted twice (bind mounts): keep the first.
            if controllers.is_empty()
                || hiers
                    .iter()
                    .any(|h| h.controllers.iter().any(|c| controllers.contains(c)))
            {
                continue;
            }
            hiers.push(Hier {
                mount: m.mount_point,
                controllers,
            });
        }
        // A hybrid host also has a cgroup2 hierarchy without controllers. Joining it makes
        // the `0::` line of /proc/<pid>/cgroup the container's too, as runc does, and gives
        // destroy `cgroup.kill` (Linux >= 5.14) on a v1 host. A statfs, not another
        // mountinfo parse: runc's IsCgroup2HybridMode does the same.
        let is_cgroup2 = nix::sys::statfs::statfs(UNIFIED_MOUNT)
            .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
            .unwrap_or(false);
        if is_cgroup2 {
            hiers.push(Hier {
                mount: PathBuf::from(UNIFIED_MOUNT),
                controllers: vec![UNIFIED],
            });
        }
        Hierarchies { hiers }
    }

    fn cgroup(&self, id: &str) -> V1Cgroup {
        V1Cgroup {
            dirs: self
                .hiers
                .iter()
                .map(|h| Dir {
                    path: h.mount.join(PARENT).join(id),
                    controllers: h.controllers.clone(),
                })
                .collect(),
        }
    }

    fn has(&self, controller: &str) -> bool {
        self.hiers
            .iter()
            .any(|h| h.controllers.contains(&controller))
    }

    pub(super) fn create(&self, id: &str, plan: &Plan) -> Result<V1Cgroup> {
        if self.hiers.is_empty() {
            return Err(user("no cgroup filesystem is mounted under /sys/fs/cgroup")
                .hint("mount cgroup2 on /sys/fs/cgroup (or the v1 controllers), as systemd does")
                .into());
        }
        if let Some((controller, flag)) = plan.missing_controller(|c| self.has(c)) {
            return Err(user(format!(
                "{flag} is not supported on this host: no cgroup v1 {controller} hierarchy is mounted"
            ))
            .hint(format!("drop {flag}, or mount the {controller} controller"))
            .into());
        }
        let cg = self.cgroup(id);
        if let Err(e) = cg.setup(plan) {
            let _ = cg.destroy();
            return Err(e);
        }
        Ok(cg)
    }

    pub(super) fn open(&self, id: &str) -> Option<V1Cgroup> {
        let cg = self.cgroup(id);
        cg.dirs.iter().any(|d| d.path.exists()).then_some(cg)
    }

    pub(super) fn ids(&self) -> BTreeSet<String> {
        let mut ids = BTreeSet::new();
        for h in &self.hiers {
            if let Ok(rd) = std::fs::read_dir(h.mount.join(PARENT)) {
                for e in rd.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false)
                        && let Some(name) = e.file_name().to_str()
                    {
                        ids.insert(name.to_string());
                    }
                }
            }
        }
        ids
    }
}

#[derive(Debug, Clone)]
struct Dir {
    path: PathBuf,
    controllers: Vec<&'static str>,
}

/// A container's cgroup on a v1 host.
#[derive(Debug)]
pub(super) struct V1Cgroup {
    dirs: Vec<Dir>,
}

impl V1Cgroup {
    fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|d| d.controllers.contains(&controller))
            .map(|d| d.path.as_path())
    }

    fn setup(&self, plan: &Plan) -> Result<()> {
        for d in &self.dirs {
            let parent = d.path.parent().unwrap_or(&d.path);
            let cpuset = d.controllers.contains(&"cpuset");
            // `wharf/` exists after the first container: make the child first, and the
            // parent only when the child's mkdir says it is missing.
            if !mkdir_child(&d.path)? {
                mkdir(parent)?;
                if cpuset {
                    init_cpuset(parent)?;
                    // Children get the parent's cpus and mems at mkdir (v1 leaves a new
                    // cpuset empty otherwise, and an empty cpuset cannot take tasks).
                    write_file(parent, "cgroup.clone_children", "1")?;
                }
                mkdir(&d.path)?;
            }
            if cpuset {
                setup_cpuset(&d.path, parent, plan)?;
            }
        }
        if let Some(dev) = self.dir("devices") {
            // Deny everything, then allow docker's defaults, one rule per write (the kernel
            // parses one per write) on one descriptor. A container that fails here must not
            // run with the host's devices open to it.
            write_file(dev, "devices.deny", "a")?;
            let p = dev.join("devices.allow");
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .with_context(|| format!("cannot open {}", p.display()))?;
            let extra = plan.device_rules();
            for rule in super::DEFAULT_DEVICES.iter().chain(extra.iter()) {
                let rule = super::device_rule(rule);
                f.write_all(rule.as_bytes())
                    .with_context(|| format!("cannot write {rule:?} to {}", p.display()))?;
            }
        }
        self.write_limits(plan)
    }

    /// The memory, cpu and pids limits of `plan` (at create, and for `update`).
    fn write_limits(&self, plan: &Plan) -> Result<()> {
        if let Some(mem) = self.dir("memory") {
            if let Some(m) = plan.memory {
                write_limit(mem, "memory.limit_in_bytes", &m.to_string(), "--memory")?;
            }
            match plan.memswap {
                None | Some(MemSwap::Unlimited) => {} // unlimited is v1's default
                Some(MemSwap::Total(t)) => write_limit(
                    mem,
                    "memory.memsw.limit_in_bytes",
                    &t.to_string(),
                    "--memory-swap",
                )
                .map_err(|e| {
                    if crate::error::find_user_error(&e).is_some() {
                        user("--memory-swap is not supported on this host: swap accounting is off")
                            .hint("boot the kernel with swapaccount=1, or drop --memory-swap")
                            .into()
                    } else {
                        e
                    }
                })?,
                Some(MemSwap::DefaultTotal(t)) => {
                    // docker's default; where the host accounts no swap there is nothing to set.
                    let f = mem.join("memory.memsw.limit_in_bytes");
                    if f.exists() {
                        write_file(mem, "memory.memsw.limit_in_bytes", &t.to_string())?;
                    }
                }
            }
        }
        if let Some(cpu) = self.dir("cpu") {
            if let Some(q) = plan.cpu_quota {
                write_limit(
                    cpu,
                    "cpu.cfs_period_us",
                    &super::CPU_PERIOD_US.to_string(),
                    "--cpus",
                )?;
                write_limit(cpu, "cpu.cfs_quota_us", &q.to_string(), "--cpus")?;
            }
            if let Some(s) = plan.cpu_shares {
                write_limit(cpu, "cpu.shares", &s.to_string(), "--cpu-shares")?;
            }
        }
        if let (Some(pids), Some(limit)) = (self.dir("pids"), plan.pids) {
            let v = limit.map_or_else(|| "max".to_string(), |n| n.to_string());
            write_limit(pids, "pids.max", &v, "--pids-limit")?;
        }
        Ok(())
    }

    /// SIGKILLs everything inside: with the hybrid hierarchy's `cgroup.kill` when there is
    /// one, else freeze (when there is a freezer), kill, thaw.
    fn kill_all(&self) {
        if let Some(u) = self.dir(UNIFIED)
            && std::fs::write(u.join("cgroup.kill"), "1").is_ok()
        {
            return;
        }
        let Some(main) = self.dirs.first() else {
            return;
        };
        if read_procs(&main.path).is_empty() {
            return;
        }
        let freezer = self.dir("freezer");
        let frozen = freezer.is_some_and(freeze);
        for d in &self.dirs {
            kill_pids(&read_procs(&d.path));
        }
        if frozen && let Some(f) = freezer {
            let _ = write_file(f, "freezer.state", "THAWED");
        }
    }
}

/// Freezes a v1 freezer cgroup, waiting up to 100 ms; false if it did not freeze.
fn freeze(dir: &Path) -> bool {
    if write_file(dir, "freezer.state", "FROZEN").is_err() {
        return false;
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(100) {
        if read_trimmed(&dir.join("freezer.state")).as_deref() == Some("FROZEN") {
            return true;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    true // partially frozen is still better than nothing; thaw after the kill
}

/// mkdir of a container's cgroup: false when its parent is missing.
fn mkdir_child(p: &Path) -> Result<bool> {
    match std::fs::create_dir(p) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(_) => mkdir(p).map(|()| true), // exists, or the error as mkdir words it
    }
}

/// The container's cpuset: normally filled in by the kernel from `wharf/` (clone_children),
/// then `--cpuset-cpus`. A `wharf/` made without clone_children gets it now.
fn setup_cpuset(dir: &Path, parent: &Path, plan: &Plan) -> Result<()> {
    if read_trimmed(&dir.join("cpuset.mems"))
        .unwrap_or_default()
        .is_empty()
    {
        init_cpuset(parent)?;
        for f in ["cpuset.cpus", "cpuset.mems"] {
            write_file(dir, f, &read_trimmed(&parent.join(f)).unwrap_or_default())?;
        }
        write_file(parent, "cgroup.clone_children", "1")?;
    }
    if let Some(want) = &plan.cpuset_cpus {
        let allowed = read_trimmed(&parent.join("cpuset.cpus")).unwrap_or_default();
        check_cpuset_subset(want, &allowed)?;
        write_limit(dir, "cpuset.cpus", want, "--cpuset-cpus")?;
    }
    Ok(())
}

/// A cpuset parent made by us starts empty in v1: copy cpus and mems from its own parent.
fn init_cpuset(dir: &Path) -> Result<()> {
    let Some(up) = dir.parent() else {
        return Ok(());
    };
    for f in ["cpuset.cpus", "cpuset.mems"] {
        if read_trimmed(&dir.join(f)).unwrap_or_default().is_empty() {
            let v = read_trimmed(&up.join(f)).unwrap_or_default();
            write_file(dir, f, &v)?;
        }
    }
    Ok(())
}

impl ContainerCgroup for V1Cgroup {
    fn add_pid(&self, pid: i32) -> Result<()> {
        for d in &self.dirs {
            write_file(&d.path, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    fn entry(&self) -> Result<Entry> {
        let mut e = Entry::default();
        for d in &self.dirs {
            if d.controllers.contains(&UNIFIED) {
                e.clone_into = Some(open_fd(&d.path, libc::O_DIRECTORY)?);
            } else {
                e.self_join.push(open_fd(&d.path.join("tasks"), 0)?);
            }
        }
        Ok(e)
    }

    fn stats(&self) -> Stats {
        let mut st = Stats::default();
        if let Some(mem) = self.dir("memory") {
            st.peak_memory = read_u64(&mem.join("memory.max_usage_in_bytes"))
                .or_else(|| read_u64(&mem.join("memory.usage_in_bytes")));
            st.oom_killed = read_key(&mem.join("memory.oom_control"), "oom_kill").unwrap_or(0) > 0;
        }
        if let Some(acct) = self.dir("cpuacct") {
            st.cpu_usec = read_u64(&acct.join("cpuacct.usage")).map(|ns| ns / 1000);
        }
        st
    }

    fn destroy(&self) -> Result<()> {
        self.kill_all();
        let mut first_err = None;
        for d in &self.dirs {
            if let Err(e) = remove_dir_retry(&d.path, &|p| kill_pids(&read_procs(p))) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.path.clone()).collect()
    }

    fn inside(&self) -> super::Inside {
        let mounts = self
            .dirs
            .iter()
            .filter_map(|d| {
                // <mount>/wharf/<id>: the host's name of the hierarchy is <mount>'s.
                let name = d
                    .path
                    .parent()?
                    .parent()?
                    .file_name()?
                    .to_str()?
                    .to_string();
                let links = d
                    .controllers
                    .iter()
                    .filter(|c| **c != name && !c.starts_with("name=") && **c != UNIFIED)
                    .map(|c| c.to_string())
                    .collect();
                Some(super::V1Mount {
                    name,
                    source: d.path.clone(),
                    links,
                })
            })
            .collect();
        super::Inside::V1(mounts)
    }

    fn allow_all_devices(&self) -> Result<()> {
        match self.dir("devices") {
            Some(dev) => write_file(dev, "devices.allow", "a"),
            None => Ok(()),
        }
    }

    fn set_frozen(&self, frozen: bool) -> Result<()> {
        let Some(f) = self.dir("freezer") else {
            return Err(
                user("pause is not supported on this host: no cgroup v1 freezer")
                    .hint("mount the freezer controller")
                    .into(),
            );
        };
        let want = if frozen { "FROZEN" } else { "THAWED" };
        write_file(f, "freezer.state", want)?;
        super::await_state(if frozen { "freeze" } else { "thaw" }, || {
            read_trimmed(&f.join("freezer.state")).as_deref() == Some(want)
        })
    }

    fn is_frozen(&self) -> bool {
        self.dir("freezer").is_some_and(|f| {
            matches!(
                read_trimmed(&f.join("freezer.state")).as_deref(),
                Some("FROZEN" | "FREEZING")
            )
        })
    }

    fn usage(&self) -> super::Usage {
        let mut u = super::Usage::default();
        if let Some(mem) = self.dir("memory") {
            u.memory = super::memory_usage(
                read_u64(&mem.join("memory.usage_in_bytes")),
                &mem.join("memory.stat"),
                "total_inactive_file",
            );
            // v1 reports "no limit" as the largest page-aligned i64.
            u.memory_limit = read_u64(&mem.join("memory.limit_in_bytes"))
                .filter(|&l| l < (i64::MAX as u64) & !0xfff);
        }
        if let Some(acct) = self.dir("cpuacct") {
            u.cpu_ns = read_u64(&acct.join("cpuacct.usage")).unwrap_or(0);
        }
        if let Some(blk) = self.dir("blkio") {
            let text =
                std::fs::read_to_string(blk.join("blkio.throttle.io_service_bytes_recursive"))
                    .unwrap_or_default();
            for l in text.lines() {
                let mut f = l.split_whitespace();
                let (Some(_dev), Some(op), Some(n)) = (f.next(), f.next(), f.next()) else {
                    continue;
                };
                let n: u64 = n.parse().unwrap_or(0);
                match op {
                    "Read" => u.block_read += n,
                    "Write" => u.block_write += n,
                    _ => {}
                }
            }
        }
        if let Some(p) = self.dir("pids") {
            u.pids = read_u64(&p.join("pids.current")).unwrap_or(0);
        }
        u
    }

    fn update(&self, limits: &super::Limits) -> Result<()> {
        let plan = Plan::from_limits(limits)?;
        // Raising -m above the current memory+swap limit is refused until that is raised:
        // on failure, write memory+swap first and try again.
        if let Err(e) = self.write_limits(&plan) {
            let memsw = match plan.memswap {
                Some(MemSwap::Total(t) | MemSwap::DefaultTotal(t)) => t,
                _ => return Err(e),
            };
            let Some(mem) = self.dir("memory") else {
                return Err(e);
            };
            if write_file(mem, "memory.memsw.limit_in_bytes", &memsw.to_string()).is_err() {
                return Err(e);
            }
            self.write_limits(&plan)?;
        }
        if let (Some(want), Some(dir)) = (&plan.cpuset_cpus, self.dir("cpuset")) {
            let parent = dir.parent().unwrap_or(dir);
            let allowed = read_trimmed(&parent.join("cpuset.cpus")).unwrap_or_default();
            check_cpuset_subset(want, &allowed)?;
            write_limit(dir, "cpuset.cpus", want, "--cpuset-cpus")?;
        }
        Ok(())
    }
}
