//! cgroup v2: one directory `wharf/<id>` under the unified root. The `wharf` parent holds no
//! process (the no-internal-processes rule); it only passes the controllers down.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::{
    ContainerCgroup, Entry, MemSwap, PARENT, Plan, check_cpuset_subset, kill_pids, mkdir, open_fd,
    read_key, read_procs, read_trimmed, read_u64, remove_dir_retry, write_file, write_limit,
};
use crate::error::user;
use crate::model::Stats;

/// The controllers a container's cgroup gets, when the host has them.
/// `io` has no limit here; it gives `stats` its BLOCK I/O.
const CONTROLLERS: [&str; 5] = ["cpuset", "cpu", "io", "memory", "pids"];

/// The unified hierarchy of this host.
#[derive(Debug)]
pub(super) struct Root {
    root: PathBuf,
    /// What the root offers (`cgroup.controllers`), read once.
    available: Vec<String>,
}

impl Root {
    pub(super) fn find() -> Root {
        let root = PathBuf::from(cgroups_rs::fs::hierarchies::UNIFIED_MOUNTPOINT);
        let available = read_trimmed(&root.join("cgroup.controllers"))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        Root { root, available }
    }

    fn cgroup(&self, id: &str) -> V2Cgroup {
        V2Cgroup {
            dir: self.root.join(PARENT).join(id),
            device_filter: None,
        }
    }

    /// Makes `wharf/` and enables our controllers for its children. Fast path: one read.
    fn ensure_parent(&self) -> Result<PathBuf> {
        let parent = self.root.join(PARENT);
        mkdir(&parent)?;
        let want: Vec<&str> = CONTROLLERS
            .iter()
            .copied()
            .filter(|c| self.available.iter().any(|a| a == c))
            .collect();
        let enabled = |dir: &Path| -> Vec<String> {
            read_trimmed(&dir.join("cgroup.subtree_control"))
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect()
        };
        let have = enabled(&parent);
        if want.iter().all(|c| have.iter().any(|h| h == c)) {
            return Ok(parent);
        }
        let up = enabled(&self.root);
        for dir_and_have in [(&self.root, &up), (&parent, &have)] {
            let (dir, have) = dir_and_have;
            for c in want.iter().filter(|c| !have.iter().any(|h| h == *c)) {
                let f = dir.join("cgroup.subtree_control");
                if let Err(e) = std::fs::write(&f, format!("+{c}")) {
                    let hint = if e.raw_os_error() == Some(libc::EBUSY) {
                        format!(
                            "{} holds processes itself, so cgroup v2 cannot delegate controllers \
                             below it; move them into a child cgroup",
                            dir.display()
                        )
                    } else {
                        "run wharf as root on a host that delegates this controller".to_string()
                    };
                    return Err(user(format!(
                        "cannot enable the {c} controller in {}: {e}",
                        f.display()
                    ))
                    .hint(hint)
                    .into());
                }
            }
        }
        Ok(parent)
    }

    pub(super) fn create(&self, id: &str, plan: &Plan) -> Result<V2Cgroup> {
        if let Some((controller, flag)) =
            plan.missing_controller(|c| self.available.iter().any(|a| a == c))
        {
            return Err(user(format!(
                "{flag} is not supported on this host: the cgroup v2 root offers no {controller} controller"
            ))
            .hint(format!("drop {flag}, or enable the {controller} controller"))
            .into());
        }
        let parent = self.ensure_parent()?;
        let mut cg = self.cgroup(id);
        mkdir(&cg.dir)?;
        let setup = cg.apply(&parent, plan).and_then(|()| {
            super::bpf::attach_with(&cg.dir, &plan.device_rules()).map_err(|e| {
                e.context(
                    "cannot restrict the container's devices; the kernel needs \
                     CONFIG_CGROUP_BPF, and wharf needs root (CAP_BPF or CAP_SYS_ADMIN)",
                )
            })
        });
        match setup {
            Ok(prog) => cg.device_filter = Some(prog),
            Err(e) => {
                let _ = cg.destroy();
                return Err(e);
            }
        }
        Ok(cg)
    }

    pub(super) fn open(&self, id: &str) -> Option<V2Cgroup> {
        let cg = self.cgroup(id);
        cg.dir.exists().then_some(cg)
    }

    pub(super) fn ids(&self) -> BTreeSet<String> {
        let mut ids = BTreeSet::new();
        if let Ok(rd) = std::fs::read_dir(self.root.join(PARENT)) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false)
                    && let Some(name) = e.file_name().to_str()
                {
                    ids.insert(name.to_string());
                }
            }
        }
        ids
    }
}

/// A container's cgroup on a v2 host.
#[derive(Debug)]
pub(super) struct V2Cgroup {
    dir: PathBuf,
    /// The device filter `create` attached (closing it does not detach it).
    device_filter: Option<std::os::fd::OwnedFd>,
}

impl V2Cgroup {
    fn apply(&self, parent: &Path, plan: &Plan) -> Result<()> {
        let d = &self.dir;
        if let Some(m) = plan.memory {
            write_limit(d, "memory.max", &m.to_string(), "--memory")?;
        }
        let swap_file = d.join("memory.swap.max");
        match (plan.memswap, plan.memory) {
            (Some(MemSwap::Total(t)), Some(m)) => {
                if !swap_file.exists() {
                    return Err(user(
                        "--memory-swap is not supported on this host: swap accounting is off",
                    )
                    .hint("boot the kernel with swapaccount=1, or drop --memory-swap")
                    .into());
                }
                write_limit(d, "memory.swap.max", &(t - m).to_string(), "--memory-swap")?;
            }
            (Some(MemSwap::DefaultTotal(t)), Some(m)) if swap_file.exists() => {
                write_file(d, "memory.swap.max", &(t - m).to_string())?;
            }
            // Unlimited is the default ("max"); without swap accounting there is nothing to set.
            _ => {}
        }
        if let Some(q) = plan.cpu_quota {
            write_limit(
                d,
                "cpu.max",
                &format!("{q} {}", super::CPU_PERIOD_US),
                "--cpus",
            )?;
        }
        if let Some(s) = plan.cpu_shares {
            let w = super::shares_to_weight(s);
            write_limit(d, "cpu.weight", &w.to_string(), "--cpu-shares")?;
        }
        if let Some(limit) = plan.pids {
            let v = limit.map_or_else(|| "max".to_string(), |n| n.to_string());
            write_limit(d, "pids.max", &v, "--pids-limit")?;
        }
        if let Some(cpus) = &plan.cpuset_cpus {
            if let Some(allowed) = read_trimmed(&parent.join("cpuset.cpus.effective")) {
                check_cpuset_subset(cpus, &allowed)?;
            }
            write_limit(d, "cpuset.cpus", cpus, "--cpuset-cpus")?;
        }
        Ok(())
    }

    /// SIGKILLs everything inside: `cgroup.kill` (Linux ≥ 5.14), else freeze, kill, thaw.
    fn kill_all(&self) {
        match std::fs::write(self.dir.join("cgroup.kill"), "1") {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound && self.dir.exists() => {
                let frozen = self.freeze();
                kill_pids(&read_procs(&self.dir));
                if frozen {
                    let _ = write_file(&self.dir, "cgroup.freeze", "0");
                }
            }
            Err(_) => {}
        }
    }

    fn freeze(&self) -> bool {
        if write_file(&self.dir, "cgroup.freeze", "1").is_err() {
            return false;
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(100) {
            if read_key(&self.dir.join("cgroup.events"), "frozen") == Some(1) {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        true
    }
}

impl ContainerCgroup for V2Cgroup {
    fn add_pid(&self, pid: i32) -> Result<()> {
        let f = self.dir.join("cgroup.procs");
        std::fs::write(&f, pid.to_string())
            .with_context(|| format!("cannot move process {pid} into {}", f.display()))
    }

    fn entry(&self) -> Result<Entry> {
        Ok(Entry {
            clone_into: Some(open_fd(&self.dir, libc::O_DIRECTORY)?),
            self_join: Vec::new(),
        })
    }

    fn stats(&self) -> Stats {
        let d = &self.dir;
        Stats {
            peak_memory: read_u64(&d.join("memory.peak"))
                .or_else(|| read_u64(&d.join("memory.current"))),
            cpu_usec: read_key(&d.join("cpu.stat"), "usage_usec"),
            oom_killed: read_key(&d.join("memory.events"), "oom_kill").unwrap_or(0) > 0,
        }
    }

    fn destroy(&self) -> Result<()> {
        self.kill_all();
        remove_dir_retry(&self.dir, &|p| {
            if std::fs::write(p.join("cgroup.kill"), "1").is_err() {
                kill_pids(&read_procs(p));
            }
        })
    }

    fn paths(&self) -> Vec<PathBuf> {
        vec![self.dir.clone()]
    }

    fn inside(&self) -> super::Inside {
        super::Inside::Cgroup2
    }

    fn set_frozen(&self, frozen: bool) -> Result<()> {
        write_file(&self.dir, "cgroup.freeze", if frozen { "1" } else { "0" })?;
        let want = u64::from(frozen);
        super::await_state(if frozen { "freeze" } else { "thaw" }, || {
            read_key(&self.dir.join("cgroup.events"), "frozen") == Some(want)
        })
    }

    fn is_frozen(&self) -> bool {
        read_u64(&self.dir.join("cgroup.freeze")) == Some(1)
    }

    fn usage(&self) -> super::Usage {
        let d = &self.dir;
        let mut u = super::Usage {
            cpu_ns: read_key(&d.join("cpu.stat"), "usage_usec").unwrap_or(0) * 1000,
            memory: super::memory_usage(
                read_u64(&d.join("memory.current")),
                &d.join("memory.stat"),
                "inactive_file",
            ),
            memory_limit: read_u64(&d.join("memory.max")), // "max" does not parse: None
            pids: read_u64(&d.join("pids.current")).unwrap_or(0),
            ..Default::default()
        };
        // io.stat: "8:0 rbytes=1 wbytes=2 rios=..." per device (with the io controller).
        for l in std::fs::read_to_string(d.join("io.stat"))
            .unwrap_or_default()
            .lines()
        {
            for kv in l.split_whitespace().skip(1) {
                match kv.split_once('=') {
                    Some(("rbytes", n)) => u.block_read += n.parse::<u64>().unwrap_or(0),
                    Some(("wbytes", n)) => u.block_write += n.parse::<u64>().unwrap_or(0),
                    _ => {}
                }
            }
        }
        u
    }

    fn update(&self, limits: &super::Limits) -> Result<()> {
        let plan = Plan::from_limits(limits)?;
        let parent = self.dir.parent().unwrap_or(&self.dir).to_path_buf();
        self.apply(&parent, &plan)
    }

    fn allow_all_devices(&self) -> Result<()> {
        match &self.device_filter {
            Some(prog) => super::bpf::detach(&self.dir, prog),
            None => anyhow::bail!(
                "cannot lift the device rules of {}: only the handle create() returned can",
                self.dir.display()
            ),
        }
    }
}
