//! cgroup integration tests (root): limits written, processes moved in, stats, OOM, destroy
//! and crash recovery, on whatever layout the host has (v1 here, v2 in the VM:
//! scripts/test-in-v2-vm.sh).

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use wharf::model::Limits;
use wharf::runtime::cgroup::{self, ContainerCgroup, Version};

const MIB: u64 = 1024 * 1024;

fn random_id(tag: &str) -> String {
    format!("wharf-test-{tag}-{:016x}", rand::random::<u64>())
}

/// A test cgroup, destroyed on drop even when the test failed.
struct Cg {
    id: String,
    cg: Box<dyn ContainerCgroup>,
}

impl Cg {
    fn new(tag: &str, limits: &Limits) -> Cg {
        let id = random_id(tag);
        let cg = cgroup::create(&id, limits).expect("create cgroup");
        Cg { id, cg }
    }

    /// The first of the cgroup's directories that has `file`.
    fn file(&self, file: &str) -> PathBuf {
        self.cg
            .paths()
            .into_iter()
            .map(|d| d.join(file))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("no {file} in {:?}", self.cg.paths()))
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.file(file))
            .expect("read cgroup file")
            .trim()
            .to_string()
    }
}

impl Drop for Cg {
    fn drop(&mut self) {
        if let Err(e) = self.cg.destroy() {
            eprintln!("cleanup of cgroup {}: {e:#}", self.id);
        }
    }
}

/// A shell that waits for a line on stdin before running `script`, so that it can be moved
/// into the cgroup first.
fn gated_shell(script: &str) -> Child {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("read _ && {script}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn /bin/sh")
}

fn release(child: &mut Child) {
    let mut stdin = child.stdin.take().expect("child stdin");
    stdin.write_all(b"go\n").expect("release child");
}

fn user_error_text(e: &anyhow::Error) -> String {
    let u = wharf::error::find_user_error(e).unwrap_or_else(|| panic!("not a user error: {e:#}"));
    format!("{} / {}", u.message, u.hint.clone().unwrap_or_default())
}

#[test]
fn limits_are_written() {
    require_root!();
    eprintln!("cgroup layout: {:?}", cgroup::detect());
    let cg = Cg::new(
        "limits",
        &Limits {
            memory: Some(64 * MIB),
            memory_swap: None,
            cpus: Some(0.5),
            cpu_shares: Some(512),
            pids: Some(64),
            cpuset_cpus: Some("0".into()),
        },
    );
    assert_eq!(cg.read("pids.max"), "64");
    assert_eq!(cg.read("cpuset.cpus"), "0");
    match cgroup::detect() {
        Version::V1 => {
            assert_eq!(cg.read("memory.limit_in_bytes"), (64 * MIB).to_string());
            assert_eq!(cg.read("cpu.cfs_quota_us"), "50000");
            assert_eq!(cg.read("cpu.cfs_period_us"), "100000");
            assert_eq!(cg.read("cpu.shares"), "512");
            assert!(!cg.read("cpuset.mems").is_empty());
        }
        Version::V2 => {
            assert_eq!(cg.read("memory.max"), (64 * MIB).to_string());
            assert_eq!(cg.read("cpu.max"), "50000 100000");
            assert_eq!(
                cg.read("cpu.weight"),
                cgroup::shares_to_weight(512).to_string()
            );
        }
    }
}

#[test]
fn unlimited_pids_and_swap() {
    require_root!();
    let cg = Cg::new(
        "unlimited",
        &Limits {
            memory: Some(32 * MIB),
            memory_swap: Some(-1),
            pids: Some(-1),
            ..Limits::default()
        },
    );
    assert_eq!(cg.read("pids.max"), "max");
}

#[test]
fn memory_swap_is_applied_or_refused_by_name() {
    require_root!();
    let id = random_id("swap");
    let limits = Limits {
        memory: Some(32 * MIB),
        memory_swap: Some(48 * MIB as i64),
        ..Limits::default()
    };
    match cgroup::create(&id, &limits) {
        Ok(c) => {
            let cg = Cg { id, cg: c };
            match cgroup::detect() {
                Version::V1 => {
                    assert_eq!(
                        cg.read("memory.memsw.limit_in_bytes"),
                        (48 * MIB).to_string()
                    )
                }
                Version::V2 => assert_eq!(cg.read("memory.swap.max"), (16 * MIB).to_string()),
            }
        }
        Err(e) => {
            let text = user_error_text(&e);
            assert!(text.contains("--memory-swap"), "{text}");
            assert!(
                cgroup::open(&id).is_none(),
                "a refused create left a cgroup"
            );
        }
    }
}

#[test]
fn invalid_limits_are_named_and_leave_nothing() {
    require_root!();
    let cases = [
        (
            Limits {
                cpus: Some(10_000.0),
                ..Limits::default()
            },
            "--cpus",
        ),
        (
            Limits {
                cpuset_cpus: Some("4095".into()),
                ..Limits::default()
            },
            "--cpuset-cpus",
        ),
        (
            Limits {
                memory_swap: Some(64 * MIB as i64),
                ..Limits::default()
            },
            "--memory-swap",
        ),
        (
            Limits {
                cpu_shares: Some(1_000_000),
                ..Limits::default()
            },
            "--cpu-shares",
        ),
    ];
    for (limits, flag) in cases {
        let id = random_id("invalid");
        let err = match cgroup::create(&id, &limits) {
            Ok(c) => {
                let _ = c.destroy();
                panic!("{limits:?} was accepted");
            }
            Err(e) => e,
        };
        let text = user_error_text(&err);
        assert!(text.contains(flag), "{flag}: {text}");
        assert!(
            cgroup::open(&id).is_none(),
            "{flag}: a failed create left a cgroup"
        );
    }
}

#[test]
fn added_process_is_inside() {
    require_root!();
    let cg = Cg::new("procs", &Limits::default());
    let mut child = gated_shell("sleep 30");
    let pid = child.id() as i32;
    cg.cg.add_pid(pid).expect("add pid");
    for dir in cg.cg.paths() {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).expect("read procs");
        assert!(
            procs.lines().any(|l| l.trim() == pid.to_string()),
            "{pid} not in {}",
            dir.display()
        );
    }
    let own =
        std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("read /proc/pid/cgroup");
    // Every hierarchy we join shows the container's own cgroup.
    let joined = [
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
    let unified = cgroup::detect() == Version::V2
        || std::path::Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists();
    for line in own.lines() {
        let mut f = line.splitn(3, ':');
        let (_, ctls, path) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or(""));
        let ours = if ctls.is_empty() {
            unified
        } else {
            ctls.split(',').any(|c| joined.contains(&c))
        };
        if ours {
            assert_eq!(path, format!("/wharf/{}", cg.id), "{line}");
        }
    }
    // destroy kills what is inside.
    cg.cg.destroy().expect("destroy");
    let status = child.wait().expect("wait");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "{status:?}");
}

#[test]
fn stats_after_the_process_ran() {
    require_root!();
    let cg = Cg::new("stats", &Limits::default());
    let mut child =
        gated_shell("i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; x=$(printf %0100000d 0)");
    cg.cg.add_pid(child.id() as i32).expect("add pid");
    release(&mut child);
    assert!(child.wait().expect("wait").success());
    let st = cg.cg.stats();
    eprintln!("{st:?}");
    assert!(st.cpu_usec.is_some_and(|u| u > 0), "{st:?}");
    assert!(st.peak_memory.is_some_and(|m| m > 0), "{st:?}");
    assert!(!st.oom_killed, "{st:?}");
}

#[test]
fn oom_kill_is_recorded() {
    require_root!();
    // No swap, so the test cannot page out to a host's swap instead of being killed; a host
    // that does not account swap refuses --memory-swap, and then has none to limit.
    let mut limits = Limits {
        memory: Some(16 * MIB),
        memory_swap: Some(16 * MIB as i64),
        ..Limits::default()
    };
    let id = random_id("oom");
    let created = cgroup::create(&id, &limits).or_else(|e| {
        assert!(user_error_text(&e).contains("--memory-swap"), "{e:#}");
        limits.memory_swap = None;
        cgroup::create(&id, &limits)
    });
    let cg = Cg {
        id,
        cg: created.expect("create cgroup"),
    };
    let mut child = gated_shell("x=0123456789abcdef; while :; do x=$x$x; done");
    cg.cg.add_pid(child.id() as i32).expect("add pid");
    release(&mut child);
    let status = child.wait().expect("wait");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "{status:?}");
    let st = cg.cg.stats();
    eprintln!("{st:?}");
    assert!(st.oom_killed, "{st:?}");
    assert!(st.peak_memory.is_some_and(|m| m > 8 * MIB), "{st:?}");
}

#[test]
fn destroy_leaves_nothing_and_is_idempotent() {
    require_root!();
    let cg = Cg::new(
        "destroy",
        &Limits {
            memory: Some(64 * MIB),
            pids: Some(32),
            ..Limits::default()
        },
    );
    let paths = cg.cg.paths();
    assert!(!paths.is_empty());
    assert!(paths.iter().all(|p| p.is_dir()), "{paths:?}");
    // A process tree inside, released so that it forks.
    let mut child = gated_shell("sleep 30 & sleep 30 & wait");
    cg.cg.add_pid(child.id() as i32).expect("add pid");
    release(&mut child);
    std::thread::sleep(std::time::Duration::from_millis(50));
    cg.cg.destroy().expect("destroy");
    let _ = child.wait();
    for p in &paths {
        assert!(!p.exists(), "{} is left", p.display());
    }
    cg.cg.destroy().expect("second destroy");
    assert!(cgroup::open(&cg.id).is_none());
}

/// Sets a cgroup's directories' mtime (its creation time, for remove_stale) an hour back.
fn backdate(cg: &Cg) {
    for p in cg.cg.paths() {
        let st = Command::new("touch")
            .arg("-d")
            .arg("1 hour ago")
            .arg(&p)
            .status()
            .expect("run touch");
        assert!(st.success(), "touch {}", p.display());
    }
}

#[test]
fn remove_stale_removes_only_old_empty_unkept_cgroups() {
    require_root!();
    let prefix = random_id("stale");
    let make = |tag: &str| {
        let id = format!("{prefix}-{tag}");
        let cg = cgroup::create(&id, &Limits::default()).expect("create");
        Cg { id, cg }
    };
    let (gone, young, busy, kept) = (make("gone"), make("young"), make("busy"), make("kept"));
    backdate(&gone);
    backdate(&busy);
    backdate(&kept);
    let mut child = gated_shell("sleep 30");
    busy.cg.add_pid(child.id() as i32).expect("add pid");
    cgroup::remove_stale_where(std::slice::from_ref(&kept.id), &|id| {
        id.starts_with(&prefix)
    })
    .expect("remove stale");
    assert!(cgroup::open(&gone.id).is_none(), "stale cgroup left");
    assert!(gone.cg.paths().iter().all(|p| !p.exists()));
    for (what, cg) in [("young", &young), ("busy", &busy), ("kept", &kept)] {
        assert!(
            cg.cg.paths().iter().all(|p| p.is_dir()),
            "{what} cgroup removed"
        );
    }
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "busy cgroup's process killed"
    );
    busy.cg.destroy().expect("destroy");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(child.wait().expect("wait").signal(), Some(9));
}

/// A process in the cgroup may create any device node, but only open docker's default
/// devices: CAP_MKNOD must not open the host's disks or kernel memory.
#[test]
fn only_default_devices_open() {
    require_root!();
    let dir = tempfile::Builder::new()
        .prefix("wharf-dev-")
        .tempdir()
        .expect("temp dir");
    let d = dir.path().display();
    let probe = |cg: &Cg| -> (bool, bool) {
        let mut child = gated_shell(&format!(
            "rm -f {d}/null {d}/kmsg; mknod {d}/null c 1 3 && mknod {d}/kmsg c 1 11 || exit 9; \
             ok=0; (exec 3<{d}/null) 2>/dev/null || ok=$((ok+1)); \
             (exec 3<{d}/kmsg) 2>/dev/null || ok=$((ok+2)); exit $ok"
        ));
        cg.cg.add_pid(child.id() as i32).expect("add pid");
        release(&mut child);
        let code = child.wait().expect("wait").code();
        assert_ne!(code, Some(9), "mknod failed in the cgroup");
        let code = code.unwrap_or(-1);
        (code & 1 == 0, code & 2 == 0) // (null opened, kmsg opened)
    };
    let cg = Cg::new("devices", &Limits::default());
    let (null, kmsg) = probe(&cg);
    if !null {
        eprintln!("skipped: cannot open a device node in {d} (nodev?)");
        return;
    }
    assert!(!kmsg, "a device outside the default list could be opened");
    let privileged = Cg::new("privileged", &Limits::default());
    privileged
        .cg
        .allow_all_devices()
        .expect("allow all devices");
    assert_eq!(probe(&privileged), (true, true));
}
