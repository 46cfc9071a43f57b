//! No leftovers: 200 `wharf run --rm` in a row leave no mount, process, run dir or container
//! dir on the host. A test binary of its own, so no other test's containers interfere.

mod common;

use std::fs;
use std::path::Path;

use common::{Env, busybox_tar};

/// Pids of processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if !name.bytes().all(|b| b.is_ascii_digit()) || name == me {
                        return None;
                    }
                    let cmd = fs::read(e.path().join("cmdline")).ok()?;
                    String::from_utf8_lossy(&cmd)
                        .contains(needle)
                        .then_some(name)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Pids whose parent is this test process (a container or monitor we failed to reap).
fn our_children() -> Vec<String> {
    let me = std::process::id().to_string();
    fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let stat = fs::read_to_string(e.path().join("stat")).ok()?;
                    let rest = &stat[stat.rfind(')')? + 2..];
                    (rest.split(' ').nth(1)? == me)
                        .then(|| e.file_name().to_string_lossy().into_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn two_hundred_runs_leave_nothing_behind() {
    require_root!();
    let env = Env::new();
    env.import(&busybox_tar(), "bb:1");
    let mountinfo_before = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let root = env.root.to_string_lossy().into_owned();
    for i in 0..200 {
        let out = env.run(&["run", "--rm", "bb:1", "true"]);
        assert!(
            out.status.success(),
            "run {i} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Mounts: none below the state root, and none new in our namespace.
    assert!(common::mounts_below(env.dir.path()).is_empty());
    let mountinfo_after = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let ours = |m: &str| m.lines().filter(|l| l.contains(&root)).count();
    assert_eq!(ours(&mountinfo_before), ours(&mountinfo_after));
    // Processes: no monitor, no container.
    assert!(
        processes_mentioning(&root).is_empty(),
        "{:?}",
        processes_mentioning(&root)
    );
    assert!(our_children().is_empty(), "{:?}", our_children());
    // Files: no container dir, no run dir.
    assert!(
        env.tree("containers").is_empty(),
        "{:?}",
        env.tree("containers")
    );
    // The run dir of this state root (see Store::run_dir) holds nothing.
    let entries: Vec<_> = fs::read_dir(env.root.join("run"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(entries.is_empty(), "left in the run dir: {entries:?}");
    // cgroup dirs (once cgroups land): none named after one of our containers.
    let db = rusqlite::Connection::open(env.root.join("wharf.db")).expect("open db");
    let ids: Vec<String> = db
        .prepare("SELECT container_id FROM runs")
        .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
        .expect("read runs");
    assert_eq!(ids.len(), 200, "one journal row per run");
    for ctl in ["memory", "pids", "cpu", "cpuacct", "cpuset", "unified", ""] {
        let dir = Path::new("/sys/fs/cgroup").join(ctl).join("wharf");
        for id in &ids {
            assert!(
                !dir.join(id).exists(),
                "cgroup {} left",
                dir.join(id).display()
            );
        }
    }
}

/// wharf SIGKILLed at varied points of `run` (before, during and after the container's
/// setup): its container dies with it, and the next wharf command closes the records.
#[test]
fn wharf_killed_during_setup_leaves_nothing() {
    require_root!();
    let env = Env::new();
    env.import(&busybox_tar(), "bb:1");
    let marker = "61.125";
    for i in 0..12u64 {
        let mut child = env
            .wharf()
            .args(["run", "--rm", "bb:1", "sleep", marker])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn wharf");
        // Not a synchronization: the point is to kill at a different moment each time.
        std::thread::sleep(std::time::Duration::from_millis(i * 4));
        let _ = child.kill();
        let _ = child.wait();
    }
    // PDEATHSIG (or the parent's EOF before the go) ends every container.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !processes_mentioning(marker).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "containers outlived wharf"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // A verb that changes state recovers first (this one fails: no such container); reads
    // never do.
    let _ = env.run(&["rm", "nothing"]);
    let db = rusqlite::Connection::open(env.root.join("wharf.db")).expect("open db");
    let left: i64 = db
        .query_row("SELECT count(*) FROM containers", [], |r| r.get(0))
        .expect("count");
    assert_eq!(left, 0, "--rm containers left in the store");
    let open_runs: i64 = db
        .query_row(
            "SELECT count(*) FROM runs WHERE finished_at IS NULL",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(open_runs, 0, "runs left open");
    assert!(
        env.tree("containers").is_empty(),
        "{:?}",
        env.tree("containers")
    );
    assert!(common::mounts_below(env.dir.path()).is_empty());
}
