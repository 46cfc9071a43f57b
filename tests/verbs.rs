//! docker's everyday verbs over a running container, as root: wait, rename, pause/unpause
//! (the freezer, v1 and v2), top (the host's ps over the cgroup's pids), stats and update
//! (limits written to the cgroup and the record).

mod common;

use common::{Cleanup, Env, code, inspect, json, running_pid, setup, text, wait_until};

/// A container that loops until SIGTERM.
fn sleeper(env: &Env, name: &str, extra: &[&str]) -> String {
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[
        "bb:1",
        "sh",
        "-c",
        "trap 'exit 0' TERM; touch /ready; while :; do sleep 0.1; done",
    ]);
    let id = env.ok(&args).trim().to_string();
    common::await_ready(env, name);
    id
}

/// The cgroup directory of a container for `file` (v1: the hierarchy holding that file).
fn cgroup_file(id: &str, file: &str) -> std::path::PathBuf {
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if v2 {
        return std::path::Path::new("/sys/fs/cgroup/wharf")
            .join(id)
            .join(file);
    }
    let ctl = file.split('.').next().expect("controller prefix");
    let ctl = if ctl == "cgroup" { "freezer" } else { ctl };
    std::path::Path::new("/sys/fs/cgroup")
        .join(ctl)
        .join("wharf")
        .join(id)
        .join(file)
}

#[test]
fn wait_prints_the_exit_code_of_the_run() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["waited", "done"]);
    env.ok(&[
        "run",
        "-d",
        "--name",
        "waited",
        "bb:1",
        "sh",
        "-c",
        "sleep 0.3; exit 7",
    ]);
    let out = env.run(&["wait", "waited"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "7\n");
    // An exited container: its last code at once.
    assert_eq!(
        code(&env.run(&["run", "--name", "done", "bb:1", "sh", "-c", "exit 3"])),
        3
    );
    assert_eq!(env.ok(&["wait", "done", "waited"]), "3\n7\n");
    let err = env.fails(&["wait", "nope"]);
    assert!(err.contains("nope"), "{err}");
    // --rm: the journal still knows the code.
    let id = env.ok(&["run", "-d", "--rm", "bb:1", "sh", "-c", "sleep 0.3; exit 5"]);
    assert_eq!(env.ok(&["wait", id.trim()]), "5\n");
}

#[test]
fn rename_changes_the_name_and_refuses_a_taken_one() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["old", "new", "other"]);
    env.ok(&["create", "--name", "old", "bb:1", "true"]);
    env.ok(&["create", "--name", "other", "bb:1", "true"]);
    env.ok(&["rename", "old", "new"]);
    assert_eq!(inspect(&env, "new")["Name"], "new");
    assert!(env.fails(&["inspect", "old"]).contains("old"));
    let err = env.fails(&["rename", "new", "other"]);
    assert!(err.contains("already in use"), "{err}");
    let err = env.fails(&["rename", "new", "bad/name"]);
    assert!(err.contains("hint:"), "{err}");
    assert_eq!(inspect(&env, "new")["Name"], "new");
}

#[test]
fn pause_freezes_and_unpause_thaws() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["frozen"]);
    let id = sleeper(&env, "frozen", &[]);
    env.ok(&["pause", "frozen"]);
    assert_eq!(inspect(&env, "frozen")["State"]["Paused"], true);
    let ps = env.ok(&["ps"]);
    assert!(ps.contains("(Paused)"), "{ps}");
    let pid = running_pid(&env, "frozen");
    // The kernel says frozen: the init's state is stopped-by-freezer (v1 'D', v2 'S' in a
    // frozen cgroup), and the cgroup's own file says so.
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let state = if v2 {
        std::fs::read_to_string(cgroup_file(&id, "cgroup.events")).expect("events")
    } else {
        std::fs::read_to_string(cgroup_file(&id, "freezer.state")).expect("freezer")
    };
    assert!(
        state.contains("FROZEN") || state.contains("frozen 1"),
        "{state}"
    );
    let err = env.fails(&["pause", "frozen"]);
    assert!(err.contains("already paused"), "{err}");
    env.ok(&["unpause", "frozen"]);
    assert_eq!(inspect(&env, "frozen")["State"]["Paused"], false);
    assert!(env.fails(&["unpause", "frozen"]).contains("not paused"));
    // A paused container still stops: the stop thaws it so the signal arrives.
    env.ok(&["pause", "frozen"]);
    env.ok(&["stop", "-t", "20", "frozen"]);
    let st = inspect(&env, "frozen")["State"].clone();
    assert_eq!(st["Status"], "exited");
    assert_eq!(st["ExitCode"], 0, "SIGTERM reached the trap, not a SIGKILL");
    assert!(std::fs::metadata(format!("/proc/{pid}")).is_err());
    assert!(env.fails(&["pause", "frozen"]).contains("not running"));
}

#[test]
fn top_lists_the_container_processes_only() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["topped"]);
    sleeper(&env, "topped", &[]);
    let pid = running_pid(&env, "topped");
    let out = env.ok(&["top", "topped"]);
    assert!(out.ends_with('\n'), "a table ends its last line: {out:?}");
    let mut lines = out.lines();
    let header = lines.next().expect("header");
    assert!(header.contains("PID") && header.contains("CMD"), "{header}");
    let rows: Vec<&str> = lines.collect();
    assert!(
        rows.iter()
            .any(|l| l.split_whitespace().nth(1) == Some(&pid.to_string())),
        "the init {pid} is listed: {out}"
    );
    assert!(
        !rows
            .iter()
            .any(|l| l.split_whitespace().nth(1) == Some("1")),
        "the host's init is not: {out}"
    );
    // ps options pass through; JSON is docker's Titles/Processes.
    let v = json(&env.ok(&["--format", "json", "top", "topped", "-o", "pid,comm"]));
    assert_eq!(v["Titles"], serde_json::json!(["PID", "COMMAND"]));
    let procs = v["Processes"].as_array().expect("rows");
    assert!(
        procs
            .iter()
            .any(|p| p[0].as_str() == Some(pid.to_string().as_str()) && p[1] == "sh"),
        "{v}"
    );
    let err = env.fails(&["top", "topped", "-o", "comm"]);
    assert!(err.contains("PID column"), "{err}");
}

#[test]
fn stats_reads_the_cgroup() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["measured", "idle"]);
    sleeper(&env, "measured", &["-m", "64m", "--pids-limit", "50"]);
    env.ok(&["create", "--name", "idle", "bb:1", "true"]);
    let out = env.ok(&["stats", "--no-stream"]);
    assert!(out.ends_with('\n'), "a table ends its last line: {out:?}");
    let header = out.lines().next().expect("header");
    for col in [
        "CONTAINER ID",
        "NAME",
        "CPU %",
        "MEM USAGE / LIMIT",
        "MEM %",
        "NET I/O",
        "BLOCK I/O",
        "PIDS",
    ] {
        assert!(header.contains(col), "{col} in {header}");
    }
    assert!(out.contains("measured") && !out.contains("idle"), "{out}");
    assert!(out.contains(" / 64MiB"), "the limit is the cgroup's: {out}");
    let v = json(&env.ok(&["--format", "json", "stats", "--no-stream", "-a"]));
    let rows = v.as_array().expect("rows");
    assert_eq!(rows.len(), 2, "{v}");
    let m = rows
        .iter()
        .find(|r| r["Name"] == "measured")
        .expect("measured");
    let pids: u64 = m["PIDs"].as_str().expect("string").parse().expect("number");
    assert!(pids >= 1, "{m}");
    assert!(
        m["MemUsage"].as_str().expect("s").ends_with("/ 64MiB"),
        "{m}"
    );
    assert!(m["CPUPerc"].as_str().expect("s").ends_with('%'), "{m}");
    // --network none: loopback only, which is not counted (tests/network.rs sees traffic).
    assert_eq!(m["NetIO"], "0B / 0B", "{m}");
    let i = rows.iter().find(|r| r["Name"] == "idle").expect("idle");
    assert_eq!(i["PIDs"], "0");
}

#[test]
fn update_writes_the_cgroup_and_the_record() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["updated", "stopped"]);
    let id = sleeper(&env, "updated", &["-m", "64m"]);
    env.ok(&[
        "update",
        "-m",
        "128m",
        "--pids-limit",
        "40",
        "--cpus",
        "0.5",
        "updated",
    ]);
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let read = |f: &str| {
        std::fs::read_to_string(cgroup_file(&id, f))
            .unwrap_or_else(|e| panic!("{f}: {e}"))
            .trim()
            .to_string()
    };
    let (mem, cpu) = if v2 {
        (read("memory.max"), read("cpu.max"))
    } else {
        (read("memory.limit_in_bytes"), read("cpu.cfs_quota_us"))
    };
    assert_eq!(mem, (128u64 << 20).to_string());
    assert!(cpu.starts_with("50000"), "{cpu}");
    assert_eq!(read("pids.max"), "40");
    let hc = inspect(&env, "updated")["HostConfig"].clone();
    assert_eq!(hc["Memory"], 128u64 << 20);
    assert_eq!(hc["PidsLimit"], 40);
    assert_eq!(hc["NanoCpus"], 500_000_000);
    // A bad limit changes nothing.
    let out = env.run(&["update", "-m", "1k", "updated"]);
    assert_eq!(code(&out), 1);
    assert!(text(&out.stderr).contains("hint:"), "{}", text(&out.stderr));
    assert_eq!(
        inspect(&env, "updated")["HostConfig"]["Memory"],
        128u64 << 20
    );
    assert!(
        env.fails(&["update", "updated"])
            .contains("nothing to update")
    );
    // The swap forms `run` takes: -1 and unlimited (update's flags are run's).
    for unlimited in ["unlimited", "-1"] {
        env.ok(&["update", "--memory-swap", unlimited, "updated"]);
        assert_eq!(
            inspect(&env, "updated")["HostConfig"]["MemorySwap"],
            -1,
            "{unlimited}"
        );
    }
    let out = env.run(&["update", "--memory-swap", "lots", "updated"]);
    assert_eq!(code(&out), 1, "a usage error of update exits 1");
    assert!(
        text(&out.stderr).contains("--memory-swap"),
        "{}",
        text(&out.stderr)
    );
    // A stopped container: the record, used by the next start.
    env.ok(&["create", "--name", "stopped", "bb:1", "sleep", "30"]);
    env.ok(&[
        "update",
        "--restart",
        "on-failure:2",
        "--pids-limit",
        "7",
        "stopped",
    ]);
    let c = inspect(&env, "stopped");
    assert_eq!(c["HostConfig"]["PidsLimit"], 7);
    assert_eq!(c["HostConfig"]["RestartPolicy"]["Name"], "on-failure");
    env.ok(&["start", "stopped"]);
    let sid = c["Id"].as_str().expect("id").to_string();
    wait_until(20, "the started container's cgroup", || {
        std::fs::read_to_string(cgroup_file(&sid, "pids.max"))
            .ok()
            .filter(|s| s.trim() == "7")
    });
}

#[test]
fn events_come_from_the_journal_and_follow_new_runs() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["evented", "followed"]);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        - 1;
    let out = env.run(&["run", "--name", "evented", "bb:1", "sh", "-c", "exit 4"]);
    assert_eq!(code(&out), 4);
    let since = before.to_string();
    let until = (before + 3600).to_string();
    let out = env.ok(&["events", "--since", &since, "--until", &until]);
    let lines: Vec<&str> = out.lines().collect();
    let pos = |action: &str| {
        lines
            .iter()
            .position(|l| l.contains(&format!("container {action} ")) && l.contains("name=evented"))
            .unwrap_or_else(|| panic!("a {action} event in {out}"))
    };
    assert!(
        pos("create") < pos("start") && pos("start") < pos("die"),
        "{out}"
    );
    assert!(lines[pos("die")].contains("exitCode=4"), "{out}");
    let only = env.ok(&[
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "-f",
        "event=die",
    ]);
    assert_eq!(only.lines().count(), 1, "{only}");
    let v = json(
        env.ok(&[
            "--format",
            "json",
            "events",
            "--since",
            &since,
            "--until",
            &until,
            "-f",
            "event=start",
        ])
        .trim(),
    );
    assert_eq!(v["Action"], "start");
    assert_eq!(v["Actor"]["Attributes"]["name"], "evented");
    assert!(env.fails(&["events", "-f", "bogus=1"]).contains("hint:"));

    // Following: a run started after `events` printed the past shows up, live.
    env.ok(&["create", "--name", "followed", "bb:1", "true"]);
    let mut follower = env
        .wharf()
        .args(["events", "--since", &since, "-f", "container=followed"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn events");
    let stdout = follower.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |what: &str| {
        rx.recv_timeout(std::time::Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("no {what} event: {e}"))
    };
    let first = next("create");
    assert!(
        first.contains("container create ") && first.contains("name=followed"),
        "{first}"
    );
    // `events` has printed the past and now follows: the run comes after.
    env.ok(&["start", "-a", "followed"]);
    let start = next("start");
    assert!(start.contains("container start "), "{start}");
    let die = next("die");
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(
        die.contains("container die ") && die.contains("exitCode=0"),
        "{die}"
    );
    assert!(
        !die.contains("evented") && !start.contains("evented"),
        "the filter holds"
    );
}

#[test]
fn history_keeps_one_row_per_run_for_a_multi_line_command() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["multi"]);
    env.ok(&[
        "run",
        "--name",
        "multi",
        "bb:1",
        "sh",
        "-c",
        "echo a\necho b",
    ]);
    let out = env.ok(&["history", "multi", "--no-trunc"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "a header and one row: {out}");
    assert!(lines[1].contains(r#""sh -c echo a\necho b""#), "{out}");
}
