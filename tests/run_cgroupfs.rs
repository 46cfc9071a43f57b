//! The container sees its own cgroups, read-only, at /sys/fs/cgroup (issue 11, point 1): a
//! JVM, Go or Node runtime inside sizes itself from these files. Runs on the v1 host and in
//! the cgroup-v2 VM (scripts/test-in-v2-vm.sh runs every tests/run*.rs).

mod common;

use common::{Cleanup, Env, busybox_tar};

/// Reads the limits the way a runtime inside would, for both layouts: prints
/// `v1`/`v2`, then memory, pids and cpu lines, then /proc/self/cgroup.
const READ_LIMITS: &str = r#"
if [ -e /sys/fs/cgroup/cgroup.controllers ]; then
  echo v2
  echo "memory=$(cat /sys/fs/cgroup/memory.max)"
  echo "pids=$(cat /sys/fs/cgroup/pids.max)"
  echo "cpu=$(cat /sys/fs/cgroup/cpu.max)"
else
  echo v1
  echo "memory=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)"
  echo "pids=$(cat /sys/fs/cgroup/pids/pids.max)"
  echo "cpu=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)"
fi
if echo 1 > /sys/fs/cgroup/pids.max 2>/dev/null || echo 1 > /sys/fs/cgroup/pids/pids.max 2>/dev/null; then
  echo writable
fi
cat /proc/self/cgroup
"#;

fn check(out: &str, what: &str) {
    let layout = out.lines().next().unwrap_or_default();
    let get = |key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{what}: no {key} line in:\n{out}"))
            .to_string()
    };
    assert_eq!(get("memory"), "67108864", "{what}: -m 64m, in:\n{out}");
    assert_eq!(get("pids"), "50", "{what}: --pids-limit 50, in:\n{out}");
    // v2 cpu.max and v1 cfs_quota_us + cfs_period_us, as printed: quota, then period.
    assert_eq!(get("cpu"), "50000 100000", "{what}: --cpus 0.5, in:\n{out}");
    assert!(
        !out.contains("writable"),
        "{what}: the cgroupfs is writable:\n{out}"
    );
    // Every line of /proc/self/cgroup is rooted at the container's own cgroup.
    let cg: Vec<&str> = out.lines().filter(|l| l.contains(":/")).collect();
    assert!(!cg.is_empty(), "{what}: no /proc/self/cgroup lines:\n{out}");
    for l in &cg {
        assert!(
            l.ends_with(":/"),
            "{what}: /proc/self/cgroup shows a path outside the container's cgroup: {l}\n{out}"
        );
    }
    if layout == "v2" {
        assert_eq!(cg, ["0::/"], "{what}: {out}");
    }
}

#[test]
fn limits_read_inside_match_the_flags_for_run_and_exec() {
    require_root!();
    let env = Env::new();
    let _c = Cleanup::new(&env, &["lim"]);
    env.import(&busybox_tar(), "bb:1");
    let limits = ["-m", "64m", "--pids-limit", "50", "--cpus", "0.5"];

    let mut args = vec!["run", "--rm"];
    args.extend(limits);
    args.extend(["bb:1", "sh", "-c", READ_LIMITS]);
    check(&env.ok(&args), "run");

    // A kept container (slow path: its write layer on disk) and a process exec'd into it.
    let mut args = vec!["run", "-d", "--name", "lim"];
    args.extend(limits);
    args.extend(["bb:1", "sleep", "300"]);
    env.ok(&args);
    check(&env.ok(&["exec", "lim", "sh", "-c", READ_LIMITS]), "exec");
    env.ok(&["rm", "-f", "lim"]);
}
