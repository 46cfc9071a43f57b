//! Issue 11, point 7: one set of checks. What a start would refuse is refused at validate,
//! apply and create (cpus beyond the host, mounts onto /proc, /sys or /dev); a container
//! whose monitor was killed reads as such, without an invented end time; and the next
//! apply or start brings a `--restart always` one back, saying why.

mod common;

use std::fs;
use std::path::Path;

use common::*;

/// SIGKILLs the monitor of `name` and waits for its container to die with it.
fn kill_monitor(env: &Env, name: &str) {
    let pid = running_pid(env, name);
    let mon = monitor_pid(env, name);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(mon),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the monitor");
    wait_until(20, "the container to die with its monitor", || {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        (stat.is_empty() || stat.contains(") Z ")).then_some(())
    });
}

#[test]
fn limits_a_start_would_refuse_are_refused_at_validate_apply_and_create() {
    require_root!();
    let env = setup();
    let dir = env.dir.path().join("m");
    fs::create_dir(&dir).expect("mkdir");
    fs::create_dir(dir.join("d")).expect("mkdir");
    let write = |name: &str, body: &str| {
        let p = dir.join(name);
        fs::write(&p, body).expect("write");
        p
    };
    let m = write(
        "cpus.toml",
        "[containers.cpu]\nimage = \"bb:1\"\ncommand = [\"true\"]\nlimits = { cpus = 1024.0 }\n",
    );
    for verb in ["validate", "apply"] {
        let e = env.fails(&[verb, "-f", s(&m)]);
        assert!(e.contains("cpus.toml:4:"), "{verb}: {e}");
        assert!(e.contains("more than the"), "{verb}: {e}");
    }
    assert!(!env.run(&["inspect", "cpu"]).status.success());
    let e = env.fails(&["create", "--name", "cpu", "--cpus", "1024", "bb:1", "true"]);
    assert!(e.contains("--cpus"), "{e}");
    assert!(
        !env.run(&["inspect", "cpu"]).status.success(),
        "create left a container"
    );

    // Mount destinations runc refuses, in a manifest and on the CLI.
    for (dest, ok) in [
        ("/proc", false),
        ("/proc/sys", false),
        ("/tmp/../proc/self", false),
        ("/sys", false),
        ("/dev", false),
        ("/dev/shm", true),
        ("/sys/fs/x", true),
        ("/proc/cpuinfo", true),
        ("/srv/data", true),
    ] {
        let m = write(
            "mount.toml",
            &format!(
                "[containers.mnt]\nimage = \"bb:1\"\ncommand = [\"true\"]\nvolumes = [\"./d:{dest}\"]\n"
            ),
        );
        let out = env.run(&["validate", "-f", s(&m)]);
        assert_eq!(
            out.status.success(),
            ok,
            "validate {dest}: {}",
            text(&out.stderr)
        );
        if !ok {
            let e = text(&out.stderr);
            assert!(e.contains("mount.toml:4:"), "{dest}: {e}");
            let v = format!("{}:{dest}", s(&dir.join("d")));
            let e = env.fails(&["run", "--rm", "-v", &v, "bb:1", "true"]);
            assert!(e.contains("invalid volume"), "run -v {v}: {e}");
        }
    }
    assert!(
        env.ok(&["ps", "-a", "-q"]).is_empty(),
        "a refused run left a container"
    );
}

#[test]
fn a_killed_monitor_is_reported_and_restart_always_comes_back_at_the_next_start() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["always", "plain"]);
    let sleeper = [
        "sh",
        "-c",
        "trap 'exit 0' TERM; while :; do sleep 0.1; done",
    ];
    let mut run = vec![
        "run",
        "-d",
        "--name",
        "always",
        "--restart",
        "always",
        "bb:1",
    ];
    run.extend(sleeper);
    env.ok(&run);
    let mut run = vec!["run", "-d", "--name", "plain", "bb:1"];
    run.extend(sleeper);
    env.ok(&run);
    kill_monitor(&env, "always");
    kill_monitor(&env, "plain");

    // ps and inspect: Exited (125), no invented FinishedAt, and the reason.
    let ps = env.ok(&["ps", "-a"]);
    for name in ["always", "plain"] {
        let line = ps.lines().find(|l| l.ends_with(name)).expect("listed");
        assert!(line.contains("Exited (125) at an unknown time"), "{line}");
    }
    let st = inspect(&env, "plain")["State"].clone();
    assert_eq!(st["Status"], "exited", "{st}");
    assert_eq!(st["ExitCode"], 125, "{st}");
    assert!(st["FinishedAt"].is_null(), "an invented FinishedAt: {st}");
    assert!(
        st["Error"]
            .as_str()
            .unwrap_or("")
            .contains("monitor died at an unknown time"),
        "{st}"
    );
    let listed = env.ok(&["--format", "json", "ps", "-a", "--filter", "name=plain"]);
    assert!(json(&listed)[0]["FinishedAt"].is_null(), "{listed}");

    // The next start (of any container) brings `always` back and says why; `plain` stays
    // down until started itself.
    let out = env.run(&["start", "plain"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let e = text(&out.stderr);
    assert!(
        e.contains("restarting always: its monitor died"),
        "no reason logged: {e}"
    );
    running_pid(&env, "always");
    running_pid(&env, "plain");
    let st = inspect(&env, "always")["State"].clone();
    assert!(
        st["Error"].is_null(),
        "the reason outlived the restart: {st}"
    );
}

#[test]
fn the_next_apply_brings_back_a_declared_always_container_and_logs_why() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["web"]);
    let dir = env.dir.path().join("proj");
    fs::create_dir(&dir).expect("mkdir");
    let m = dir.join("proj.toml");
    fs::write(
        &m,
        format!("[containers.web]\nimage = \"bb:1\"\ncommand = {SLEEPER}\nrestart = \"always\"\n"),
    )
    .expect("write");
    env.ok(&["apply", "-f", s(&m)]);
    kill_monitor(&env, "web");
    let out = env.run(&["apply", "-f", s(&m)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("restarting web: its monitor died"),
        "{}",
        text(&out.stderr)
    );
    running_pid(&env, "web");
    assert!(Path::new(&env.root).exists());
}

#[test]
fn a_watch_brings_back_a_run_always_container_whose_monitor_died() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["bg"]);
    env.ok(&[
        "run",
        "-d",
        "--name",
        "bg",
        "--restart",
        "always",
        "bb:1",
        "sh",
        "-c",
        "trap 'exit 0' TERM; while :; do sleep 0.1; done",
    ]);
    kill_monitor(&env, "bg");
    let dir = env.dir.path().join("w");
    fs::create_dir(&dir).expect("mkdir");
    fs::write(dir.join("w.toml"), "project = \"w\"\n").expect("write");
    let err_path = env.dir.path().join("watch.err");
    let _watch = KillOnDrop(
        env.wharf()
            .args(["watch", "--resync", "1h", s(&dir)])
            .stdout(std::process::Stdio::null())
            .stderr(fs::File::create(&err_path).expect("create"))
            .spawn()
            .expect("spawn watch"),
    );
    wait_until(20, "the watch to restart bg", || {
        let e = fs::read_to_string(&err_path).unwrap_or_default();
        e.contains("restarting bg: its monitor died").then_some(())
    });
    running_pid(&env, "bg");
}
