//! Restart policies and health checks, carried out by the container's monitor (no `wharf
//! watch`), as root: how many runs each policy makes, the journal and inspect/ps views of
//! them, `stop`/`rm -f` during a backoff wait, crash recovery of a restarting container, and
//! health checks that make a container healthy or, unhealthy, restart it.

mod common;

use std::time::Instant;

use common::{Cleanup, Env, busybox_tar, code, history, inspect, setup, text, wait_until};

/// The pid of the detached monitor (`wharf __monitor <id>`) of container `id`, if alive.
fn monitor_of(id: &str) -> Option<i32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
        if args.contains(&&b"__monitor"[..]) && args.contains(&id.as_bytes()) {
            return Some(pid);
        }
    }
    None
}

/// Waits until the container is exited and its monitor is gone: nothing can run it again.
fn await_settled(env: &Env, name: &str) -> serde_json::Value {
    let id = inspect(env, name)["Id"].as_str().expect("id").to_string();
    wait_until(30, "the container to settle exited", || {
        let v = inspect(env, name);
        (v["State"]["Status"] == "exited" && monitor_of(&id).is_none()).then_some(v)
    })
}

#[test]
fn on_failure_2_stops_after_exactly_two_restarts_and_start_resets_the_count() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["flaky"]);
    env.ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "bb:1",
        "sh",
        "-c",
        "echo try; exit 3",
    ]);
    let v = await_settled(&env, "flaky");
    assert_eq!(v["RestartCount"], 2);
    assert_eq!(v["State"]["ExitCode"], 3, "{v:#}");
    assert_eq!(v["State"]["Restarting"], false);
    assert_eq!(v["HostConfig"]["RestartPolicy"]["Name"], "on-failure");
    assert_eq!(v["HostConfig"]["RestartPolicy"]["MaximumRetryCount"], 2);
    let runs = history(&env, "flaky");
    assert_eq!(runs.len(), 3, "{runs:#?}");
    assert!(runs.iter().all(|r| r["exit_code"] == 3));
    // Newest first: the two restarts, then the run started by `run`.
    let flags: Vec<_> = runs.iter().map(|r| r["restart"].clone()).collect();
    assert_eq!(flags, [true, true, false]);
    // Every run wrote to the same log.
    assert_eq!(env.ok(&["logs", "flaky"]), "try\ntry\ntry\n");

    // A start by hand counts afresh (docker's rule): two more restarts, count 2, not 4.
    let out = env.run(&["start", "-a", "flaky"]);
    assert_eq!(code(&out), 3, "{}", text(&out.stderr));
    let v = await_settled(&env, "flaky");
    assert_eq!(v["RestartCount"], 2);
    assert_eq!(history(&env, "flaky").len(), 6);
}

#[test]
fn always_keeps_restarting_until_stop_and_then_stays_stopped() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["looper"]);
    // A success is restarted too under `always`.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "looper",
        "--restart",
        "always",
        "bb:1",
        "true",
    ]);
    wait_until(30, "three runs", || {
        (history(&env, "looper").len() >= 3).then_some(())
    });
    env.ok(&["stop", "looper"]);
    let v = await_settled(&env, "looper");
    assert!(v["RestartCount"].as_i64().expect("count") >= 2);
    let runs = history(&env, "looper").len();
    // The monitor is gone (await_settled): nothing restarts it, and the journal agrees.
    assert!(runs >= 3);
    assert_eq!(inspect(&env, "looper")["State"]["Status"], "exited");
    assert!(
        history(&env, "looper")
            .iter()
            .all(|r| !r["finished"].is_null())
    );
    let ps = env.ok(&["ps"]);
    assert!(!ps.contains("looper"), "stopped, not listed by ps: {ps}");
}

#[test]
fn unless_stopped_respects_stop_during_a_backoff_wait_and_ps_shows_restarting() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["crashy"]);
    env.ok(&[
        "run",
        "-d",
        "--name",
        "crashy",
        "--restart",
        "unless-stopped",
        "bb:1",
        "sh",
        "-c",
        "exit 5",
    ]);
    // The delay doubles (100 ms, 200 ms, ...): after 5 restarts the wait is 3.2 s, long
    // enough to look at it and stop it within.
    wait_until(30, "a long backoff wait", || {
        let v = inspect(&env, "crashy");
        (v["State"]["Status"] == "restarting" && v["RestartCount"].as_i64() >= Some(5))
            .then_some(())
    });
    // ps (without -a: restarting counts as up, as docker lists it) shows docker's status.
    let ps = env.ok(&["ps"]);
    let line = ps
        .lines()
        .find(|l| l.contains("crashy"))
        .unwrap_or_else(|| panic!("ps lists a restarting container: {ps}"));
    assert!(line.contains("Restarting (5)"), "{line}");
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["--format", "json", "ps"])).expect("ps prints JSON");
    let row = &json[0];
    assert_eq!(row["State"], "restarting");
    assert_eq!(row["ExitCode"], 5);
    assert!(row["RestartCount"].as_i64() >= Some(5), "{row}");
    let before = history(&env, "crashy").len();

    // During the wait: stop ends it now and records the container exited.
    let t = Instant::now();
    env.ok(&["stop", "crashy"]);
    let took = t.elapsed();
    let v = await_settled(&env, "crashy");
    assert_eq!(v["State"]["ExitCode"], 5, "{v:#}");
    assert_eq!(
        history(&env, "crashy").len(),
        before,
        "no run after the stop (stop took {took:?})"
    );
    let ps = env.ok(&["ps", "-a"]);
    assert!(ps.contains("Exited (5)"), "{ps}");
}

#[test]
fn rm_f_during_a_backoff_wait_removes_it_and_its_monitor() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["gone"]);
    env.ok(&[
        "run",
        "-d",
        "--name",
        "gone",
        "--restart",
        "always",
        "bb:1",
        "false",
    ]);
    let id = inspect(&env, "gone")["Id"]
        .as_str()
        .expect("id")
        .to_string();
    wait_until(30, "the restarting state", || {
        (inspect(&env, "gone")["State"]["Status"] == "restarting").then_some(())
    });
    env.ok(&["rm", "-f", "gone"]);
    let err = env.fails(&["inspect", "gone"]);
    assert!(err.contains("no such container"), "{err}");
    wait_until(10, "the monitor to exit", || {
        monitor_of(&id).is_none().then_some(())
    });
}

#[test]
fn no_policy_and_a_success_under_on_failure_do_not_restart() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["once", "fine"]);
    env.ok(&["run", "-d", "--name", "once", "bb:1", "sh", "-c", "exit 1"]);
    env.ok(&[
        "run",
        "-d",
        "--name",
        "fine",
        "--restart",
        "on-failure",
        "bb:1",
        "true",
    ]);
    for (name, exit) in [("once", 1), ("fine", 0)] {
        let v = await_settled(&env, name);
        assert_eq!(v["RestartCount"], 0, "{name}");
        assert_eq!(v["State"]["ExitCode"], exit, "{name}");
        assert_eq!(history(&env, name).len(), 1, "{name}");
    }
    assert_eq!(
        inspect(&env, "once")["HostConfig"]["RestartPolicy"]["Name"],
        "no"
    );
}

#[test]
fn a_foreground_run_restarts_too_and_returns_the_last_exit_code() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["fore"]);
    let out = env.run(&[
        "run",
        "--name",
        "fore",
        "--restart",
        "on-failure:1",
        "bb:1",
        "sh",
        "-c",
        "echo again; exit 4",
    ]);
    assert_eq!(code(&out), 4, "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "again\nagain\n");
    assert_eq!(inspect(&env, "fore")["RestartCount"], 1);
    assert_eq!(history(&env, "fore").len(), 2);
}

#[test]
fn rm_with_a_restart_policy_and_bad_flags_are_refused_without_leftovers() {
    require_root!();
    let env = setup();
    let err = env.fails(&["run", "--rm", "--restart", "always", "bb:1", "true"]);
    assert!(err.contains("--rm and --restart always conflict"), "{err}");
    let err = env.fails(&["run", "--restart", "sometimes", "bb:1", "true"]);
    assert!(err.contains("invalid --restart"), "{err}");
    assert!(
        err.contains("unless-stopped"),
        "the hint lists the policies: {err}"
    );
    let err = env.fails(&["create", "--health-interval", "1s", "bb:1", "true"]);
    assert!(err.contains("need --health-cmd"), "{err}");
    let err = env.fails(&[
        "run",
        "--health-cmd",
        "true",
        "--health-timeout",
        "soon",
        "bb:1",
        "true",
    ]);
    assert!(err.contains("invalid --health-timeout"), "{err}");
    let ps = env.ok(&["ps", "-a", "-q"]);
    assert_eq!(ps.trim(), "", "nothing recorded");
}

#[test]
fn a_monitor_killed_during_the_backoff_is_recovered_as_exited() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["orphan"]);
    env.ok(&[
        "run",
        "-d",
        "--name",
        "orphan",
        "--restart",
        "always",
        "bb:1",
        "sh",
        "-c",
        "exit 6",
    ]);
    let id = inspect(&env, "orphan")["Id"]
        .as_str()
        .expect("id")
        .to_string();
    // After 4 restarts the wait is 1.6 s: the monitor is killed within it.
    let monitor = wait_until(30, "a long backoff wait with its monitor", || {
        let m = monitor_of(&id)?;
        let v = inspect(&env, "orphan");
        (v["State"]["Status"] == "restarting" && v["RestartCount"].as_i64() >= Some(4)).then_some(m)
    });
    // SAFETY: kill with plain integers on the monitor found above.
    unsafe { libc::kill(monitor, libc::SIGKILL) };
    wait_until(10, "the monitor to die", || {
        monitor_of(&id).is_none().then_some(())
    });
    // Reads show what crash recovery will make of it: exited with its last run's code, not 125.
    let v = inspect(&env, "orphan");
    assert_eq!(v["State"]["Status"], "exited");
    assert_eq!(v["State"]["ExitCode"], 6, "{v:#}");
    // And it starts again by hand.
    env.ok(&["start", "orphan"]);
    wait_until(30, "a run after the start", || {
        (inspect(&env, "orphan")["RestartCount"].as_i64() >= Some(1)).then_some(())
    });
}

#[test]
fn a_restart_that_cannot_start_says_why_in_inspect() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["selfrm"]);
    // The first run deletes the shell from its write layer; the restart cannot exec it.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "selfrm",
        "--restart",
        "on-failure:3",
        "bb:1",
        "sh",
        "-c",
        "rm /bin/sh; exit 1",
    ]);
    let v = await_settled(&env, "selfrm");
    assert_eq!(v["State"]["ExitCode"], 127, "{v:#}");
    let err = v["State"]["Error"].as_str().unwrap_or("");
    assert!(err.contains(r#"exec: "sh""#), "no reason kept: {v:#}");
    // A start by hand fails the same way, on the terminal and in the record.
    let out = env.run(&["start", "-a", "selfrm"]);
    assert_eq!(code(&out), 127, "{}", text(&out.stderr));
    assert!(
        inspect(&env, "selfrm")["State"]["Error"]
            .as_str()
            .is_some_and(|e| e.contains(r#"exec: "sh""#))
    );
}

#[test]
fn a_passing_health_check_shows_healthy_in_ps_and_inspect() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["fit"]);
    env.ok(&[
        "run",
        "-d",
        "--name",
        "fit",
        "--health-cmd",
        "test -f /tmp/ready && echo fine",
        "--health-interval",
        "100ms",
        "bb:1",
        "sh",
        "-c",
        "touch /tmp/ready; exec sleep 600",
    ]);
    let line = wait_until(30, "ps to show (healthy)", || {
        env.ok(&["ps"])
            .lines()
            .find(|l| l.contains("fit") && l.contains("(healthy)"))
            .map(str::to_string)
    });
    assert!(line.contains("Up "), "{line}");
    let v = inspect(&env, "fit");
    let h = &v["State"]["Health"];
    assert_eq!(h["Status"], "healthy");
    assert_eq!(h["FailingStreak"], 0);
    let log = h["Log"].as_array().expect("a log");
    assert!(!log.is_empty());
    assert_eq!(log[log.len() - 1]["ExitCode"], 0);
    assert_eq!(log[log.len() - 1]["Output"], "fine\n");
    assert_eq!(
        v["Config"]["healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "test -f /tmp/ready && echo fine"])
    );
    let filtered = env.ok(&["ps", "--filter", "health=healthy", "-q"]);
    assert!(!filtered.trim().is_empty(), "health= filter matches");
}

#[test]
fn a_failing_health_check_makes_it_unhealthy_and_on_failure_restarts_it() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["sick"]);
    env.ok(&[
        "run",
        "-d",
        "--name",
        "sick",
        "--restart",
        "on-failure:1",
        "--health-cmd",
        "echo not ready; exit 1",
        "--health-interval",
        "100ms",
        "--health-retries",
        "2",
        "bb:1",
        "sleep",
        "600",
    ]);
    // Unhealthy, killed, restarted once, unhealthy again, killed, and left exited.
    let v = await_settled(&env, "sick");
    assert_eq!(v["RestartCount"], 1);
    assert_eq!(v["State"]["ExitCode"], 137, "{v:#}");
    let h = &v["State"]["Health"];
    assert_eq!(h["Status"], "unhealthy");
    assert_eq!(h["FailingStreak"], 2);
    let log = h["Log"].as_array().expect("a log");
    assert_eq!(log[log.len() - 1]["Output"], "not ready\n");
    assert_eq!(log[log.len() - 1]["ExitCode"], 1);
    let runs = history(&env, "sick");
    assert_eq!(runs.len(), 2, "{runs:#?}");
    assert!(runs.iter().all(|r| r["exit_code"] == 137));
}

#[test]
fn a_health_check_that_hangs_times_out() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["hung"]);
    env.ok(&[
        "run",
        "-d",
        "--name",
        "hung",
        "--health-cmd",
        "sleep 60",
        "--health-interval",
        "100ms",
        "--health-timeout",
        "200ms",
        "--health-retries",
        "1",
        "bb:1",
        "sleep",
        "600",
    ]);
    // Without a restart policy, unhealthy kills it once and leaves it exited.
    let v = await_settled(&env, "hung");
    assert_eq!(v["State"]["ExitCode"], 137, "{v:#}");
    let log = v["State"]["Health"]["Log"]
        .as_array()
        .expect("a log")
        .clone();
    assert_eq!(log[log.len() - 1]["ExitCode"], -1);
    assert_eq!(
        log[log.len() - 1]["Output"],
        "Health check exceeded timeout (200ms)"
    );
}

/// Sets the store's schema version while alive (a newer wharf's store: every wharf command,
/// a probe's `wharf exec` too, refuses it with 125), and puts it back when dropped.
struct NewerStore {
    db: std::path::PathBuf,
    was: u32,
}

impl NewerStore {
    fn new(env: &Env) -> NewerStore {
        let db = env.root.join("wharf.db");
        let c = rusqlite::Connection::open(&db).expect("open db");
        let was: u32 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("user_version");
        c.pragma_update(None, "user_version", was + 100)
            .expect("bump");
        NewerStore { db, was }
    }
}

impl Drop for NewerStore {
    fn drop(&mut self) {
        if let Ok(c) = rusqlite::Connection::open(&self.db) {
            let _ = c.pragma_update(None, "user_version", self.was);
        }
    }
}

fn health_json(env: &Env, id: &str) -> serde_json::Value {
    let p = env.root.join("containers").join(id).join("health.json");
    std::fs::read(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

#[test]
fn a_probe_wharf_cannot_run_is_not_counted_but_the_checks_own_125_is() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["calm", "own"]);
    env.ok(&[
        "run",
        "-d",
        "--name",
        "calm",
        "--health-cmd",
        "true",
        "--health-interval",
        "100ms",
        "--health-retries",
        "1",
        "bb:1",
        "sleep",
        "600",
    ]);
    let id = inspect(&env, "calm")["Id"]
        .as_str()
        .expect("id")
        .to_string();
    wait_until(30, "calm to be healthy", || {
        (health_json(&env, &id)["status"] == "healthy").then_some(())
    });
    {
        let _newer = NewerStore::new(&env);
        // Probes now fail in wharf itself (exit 125): logged, and the container stays healthy.
        let h = wait_until(30, "probes that could not run", || {
            let h = health_json(&env, &id);
            let log = h["log"].as_array()?;
            (log.len() >= 3 && log.iter().rev().take(3).all(|p| p["exit_code"] == 125)).then_some(h)
        });
        assert_eq!(h["status"], "healthy", "{h:#}");
        assert_eq!(h["failing_streak"], 0, "{h:#}");
        let last = &h["log"][h["log"].as_array().unwrap().len() - 1];
        let out = last["output"].as_str().unwrap_or_default();
        assert!(out.contains("newer than this wharf knows"), "{out}");
        assert!(monitor_of(&id).is_some(), "the container was not killed");
    }
    let v = inspect(&env, "calm");
    assert_eq!(v["State"]["Status"], "running");
    assert_eq!(v["State"]["Health"]["Status"], "healthy");

    // A check that exits 125 itself is a failure like any other.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "own",
        "--health-cmd",
        "exit 125",
        "--health-interval",
        "100ms",
        "--health-retries",
        "1",
        "bb:1",
        "sleep",
        "600",
    ]);
    let v = await_settled(&env, "own");
    assert_eq!(v["State"]["Health"]["Status"], "unhealthy");
    assert_eq!(v["State"]["ExitCode"], 137, "{v:#}");
}

#[test]
fn a_manifest_carries_the_restart_policy_and_the_health_check() {
    require_root!();
    let env = Env::new();
    let dir = env.dir.path().join("m");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::copy(busybox_tar(), dir.join("busybox.tar")).expect("copy fixture");
    let manifest = dir.join("app.toml");
    std::fs::write(
        &manifest,
        "[images.bb]\nsource = \"busybox.tar\"\ntag = \"bb:1\"\n\n\
         [containers.flop]\nimage = \"bb:1\"\nrestart = \"on-failure:1\"\n\
         command = [\"sh\", \"-c\", \"sleep 0.2; exit 2\"]\n\n\
         [containers.doc]\nimage = \"bb:1\"\ncommand = [\"sleep\", \"600\"]\n\
         health = { command = [\"true\"], interval = \"100ms\", retries = 2 }\n\n\
         [containers.loop]\nimage = \"bb:1\"\nrestart = \"always\"\n\
         command = [\"sh\", \"-c\", \"exit 1\"]\n",
    )
    .expect("write manifest");
    let _c = Cleanup::new(&env, &["flop", "doc", "loop"]);
    let out = env.run(&["apply", "-q", "-f", manifest.to_str().expect("utf-8")]);
    assert!(out.status.success(), "apply: {}", text(&out.stderr));
    let v = await_settled(&env, "flop");
    assert_eq!(v["RestartCount"], 1);
    assert_eq!(v["State"]["ExitCode"], 2, "{v:#}");
    assert_eq!(v["HostConfig"]["RestartPolicy"]["Name"], "on-failure");
    assert_eq!(history(&env, "flop").len(), 2);
    wait_until(30, "doc to be healthy", || {
        (inspect(&env, "doc")["State"]["Health"]["Status"] == "healthy").then_some(())
    });
    let v = inspect(&env, "doc");
    assert_eq!(
        v["Config"]["healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "true"])
    );
    assert_eq!(v["Config"]["healthcheck"]["Retries"], 2);

    // A container waiting to restart is its monitor's, not dead: applying again keeps it.
    let id = wait_until(30, "a long backoff wait", || {
        let v = inspect(&env, "loop");
        (v["State"]["Status"] == "restarting" && v["RestartCount"].as_i64() >= Some(4))
            .then(|| v["Id"].clone())
    });
    let out = env.run(&["apply", "-q", "-f", manifest.to_str().expect("utf-8")]);
    assert!(out.status.success(), "apply: {}", text(&out.stderr));
    let v = inspect(&env, "loop");
    assert_eq!(v["Id"], id, "not recreated");
    assert!(v["RestartCount"].as_i64() >= Some(4), "not started afresh");
}

#[test]
fn a_signal_to_a_foreground_run_ends_it_without_a_restart() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["front"]);
    let mut child = env
        .wharf()
        .args([
            "run",
            "--name",
            "front",
            "--restart",
            "always",
            "bb:1",
            "sh",
            "-c",
            // An init ignores signals it has no handler for: give it one.
            "trap 'exit 143' TERM; while :; do sleep 0.1; done",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn wharf run");
    wait_until(30, "the container to run", || {
        let out = env.run(&["inspect", "front"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (v[0]["State"]["Status"] == "running").then_some(())
    });
    // SAFETY: kill with plain integers on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_until(30, "wharf run to exit", || child.try_wait().ok().flatten());
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    let v = inspect(&env, "front");
    assert_eq!(v["State"]["Status"], "exited");
    assert_eq!(v["RestartCount"], 0);
    assert_eq!(history(&env, "front").len(), 1);
}

/// A container running as another user still dies with its monitor: a change of
/// credentials clears the parent-death signal, which the child arms again.
#[test]
fn a_container_with_a_user_dies_with_its_monitor() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["nobody-box"]);
    let id = env.ok(&[
        "run",
        "-d",
        "--name",
        "nobody-box",
        "-u",
        "65534:65534",
        "bb:1",
        "sleep",
        "1000",
    ]);
    let id = id.trim().to_string();
    let pid = wait_until(10, "the container's init", || {
        let v = inspect(&env, "nobody-box");
        v["State"]["Pid"].as_i64().filter(|p| *p > 1)
    });
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains("65534")),
        "not running as 65534: {status}"
    );
    let monitor = monitor_of(&id).expect("the detached monitor runs");
    // SAFETY: kill with plain integers on the monitor found just above.
    unsafe { libc::kill(monitor, libc::SIGKILL) };
    wait_until(10, "the container's init to die with its monitor", || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie waiting for its reaper.
        (stat.is_empty() || stat.contains(") Z ")).then_some(())
    });
}
