//! The lifecycle layer, as root: one owner per run (racing starts from many processes start
//! one run), stops side by side, reads that change nothing (a stale run is shown, not
//! recovered), and apply creating through the same path as `run` (one Entrypoint/Cmd rule).

mod common;

use std::fs;
use std::path::Path;
use std::process::{Child, Stdio};

use common::{Cleanup, Env, SLEEPER, code, history, inspect, json, running_pid, setup, text};

/// `wharf start NAME` from `n` processes at once; their exit codes.
fn racing_starts(env: &Env, name: &str, n: usize) -> Vec<i32> {
    let children: Vec<Child> = (0..n)
        .map(|_| {
            env.wharf()
                .args(["start", name])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn wharf start")
        })
        .collect();
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().expect("wait for wharf start");
            assert!(out.status.success(), "start failed: {}", text(&out.stderr));
            code(&out)
        })
        .collect()
}

#[test]
fn racing_starts_from_many_processes_start_exactly_one_run() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["racer"]);
    let cmd: Vec<String> = serde_json::from_str(SLEEPER).expect("SLEEPER is JSON");
    let mut args = vec!["create", "--name", "racer", "bb:1"];
    args.extend(cmd.iter().map(String::as_str));
    env.ok(&args);
    for round in 0..3 {
        let codes = racing_starts(&env, "racer", 8);
        assert!(codes.iter().all(|c| *c == 0), "{codes:?}");
        running_pid(&env, "racer");
        let runs = history(&env, "racer");
        assert_eq!(
            runs.len(),
            round + 1,
            "8 racing starts opened {} runs in round {round}: {runs:?}",
            runs.len() - round
        );
        // One init on the write layer: the container's cgroup holds one sleeper shell.
        let st = inspect(&env, "racer");
        assert_eq!(st["State"]["Status"], "running");
        env.ok(&["stop", "-t", "5", "racer"]);
    }
}

#[test]
fn stops_go_side_by_side_in_one_grace_period() {
    require_root!();
    let env = setup();
    let names = ["deaf1", "deaf2", "deaf3", "deaf4"];
    let _c = Cleanup::new(&env, &names);
    // Each ignores SIGTERM, so each stop waits out the whole grace period, then SIGKILLs.
    for n in names {
        env.ok(&[
            "run",
            "-d",
            "--name",
            n,
            "bb:1",
            "sh",
            "-c",
            "trap '' TERM; while :; do sleep 0.1; done",
        ]);
    }
    for n in names {
        running_pid(&env, n);
    }
    let grace_s = 3;
    let mut args = vec!["stop", "-t", "3"];
    args.extend(names);
    let out = env.ok(&args);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        names,
        "stop prints each name"
    );
    let ends: Vec<i64> = names
        .iter()
        .map(|n| {
            let runs = history(&env, n);
            assert_eq!(runs[0]["exit_code"], 137, "{n} was SIGKILLed: {runs:?}");
            runs[0]["finished_at"].as_i64().expect("finished")
        })
        .collect();
    // One after the other, each end would come a grace period after the one before.
    let spread = ends.iter().max().unwrap_or(&0) - ends.iter().min().unwrap_or(&0);
    assert!(
        spread < grace_s * 1_000_000_000 / 2,
        "the stops ended {spread} ns apart: they waited one after another"
    );
}

/// Kills the detached monitor of `name` with SIGKILL and waits until its container is gone
/// (PDEATHSIG), leaving its row `running`: a stale run.
fn make_stale(env: &Env, name: &str) {
    let pid = running_pid(env, name);
    let monitor: i32 = fs::read_to_string(format!("/proc/{pid}/stat"))
        .expect("stat of the container")
        .rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .expect("the container's parent");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the monitor");
    common::wait_until(20, "the container to die with its monitor", || {
        (!Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
}

/// The bytes of the store's database files.
#[test]
fn reads_change_nothing_and_show_a_stale_run_as_exited() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["stale"]);
    let dir = env.dir.path().join("m");
    fs::create_dir_all(&dir).expect("mkdir");
    let manifest = dir.join("reads.toml");
    fs::write(
        &manifest,
        format!("[containers.web]\nimage = \"bb:1\"\ncommand = {SLEEPER}\n"),
    )
    .expect("write manifest");
    env.ok(&["run", "-d", "--name", "stale", "bb:1", "sleep", "1000"]);
    make_stale(&env, "stale");
    // A read that checkpoints the WAL, so that what follows starts from settled files.
    env.ok(&["images"]);
    let before = env.db_bytes();

    let ps = env.ok(&["ps", "-a"]);
    assert!(
        ps.contains("Exited (125)"),
        "a stale run reads as exited: {ps}"
    );
    let st = inspect(&env, "stale")["State"].clone();
    assert_eq!(st["Status"], "exited", "{st}");
    assert_eq!(st["ExitCode"], 125);
    assert!(st["FinishedAt"].is_null(), "no end time is invented: {st}");
    env.ok(&["history", "stale"]);
    env.ok(&["--format", "json", "ps", "-a"]);
    let out = env.run(&["diff", "-f", manifest.to_str().expect("utf-8 path")]);
    assert_eq!(code(&out), 2, "diff plans a create: {}", text(&out.stderr));
    let out = env.run(&[
        "apply",
        "--dry-run",
        "-f",
        manifest.to_str().expect("utf-8 path"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    assert_eq!(
        env.db_bytes(),
        before,
        "ps, inspect, history, diff and apply --dry-run wrote to the database"
    );
    let row = json(&env.ok(&["--format", "json", "ps", "-a"]));
    assert_eq!(row[0]["State"], "exited");

    // A verb that changes state recovers it: the run is closed in the journal.
    env.ok(&["rm", "stale"]);
}

#[test]
fn a_manifest_entrypoint_without_a_command_runs_on_an_image_without_cmd() {
    require_root!();
    let env = Env::new();
    let dir = env.dir.path().join("m");
    fs::create_dir_all(&dir).expect("mkdir");
    fs::copy(common::busybox_tar(), dir.join("busybox.tar")).expect("copy fixture");
    // The image section gives no cmd, so the image has none.
    let manifest = dir.join("ep.toml");
    fs::write(
        &manifest,
        format!(
            "[images.bb]\nsource = \"busybox.tar\"\ntag = \"bb:1\"\n\n\
             [containers.ep]\nimage = \"bb:1\"\nentrypoint = {SLEEPER}\n"
        ),
    )
    .expect("write manifest");
    let path = manifest.to_str().expect("utf-8 path");
    let out = env.run(&["apply", "-q", "-t", "5", "-f", path]);
    assert!(
        out.status.success(),
        "apply failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    running_pid(&env, "ep");
    let cfg = inspect(&env, "ep");
    assert_eq!(cfg["Path"], "/bin/sh", "{cfg}");
    // A manual start after apply resets the restart count, as apply's own starts do.
    assert_eq!(cfg["RestartCount"], 0);
    let out = env.run(&["down", "-t", "5", "-f", path]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn apply_asks_git_before_it_takes_the_store_lock() {
    require_root!();
    let env = setup();
    let dir = env.dir.path().join("repo");
    fs::create_dir_all(dir.join(".git")).expect("a .git dir");
    let manifest = dir.join("slowgit.toml");
    fs::write(&manifest, "[volumes.vol]\n").expect("write manifest");
    // A `git` that blocks until released: the apply sits in it.
    let bin = env.dir.path().join("bin");
    fs::create_dir_all(&bin).expect("mkdir bin");
    let release = env.dir.path().join("release");
    let started = env.dir.path().join("git-started");
    let git = bin.join("git");
    fs::write(
        &git,
        format!(
            "#!/bin/sh\ntouch {}\nwhile [ ! -e {} ]; do sleep 0.05; done\nexit 1\n",
            started.display(),
            release.display()
        ),
    )
    .expect("write fake git");
    fs::set_permissions(&git, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let path = std::env::var("PATH").unwrap_or_default();
    let slow = env
        .wharf()
        .args(["apply", "-q", "-f", manifest.to_str().expect("utf-8")])
        .env("PATH", format!("{}:{path}", bin.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn apply");
    common::wait_until(30, "the apply to ask git", || {
        started.exists().then_some(())
    });
    // While it waits for git, a verb that needs the store lock goes through.
    let mut other = env
        .wharf()
        .args(["image", "prune", "-f"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn prune");
    let finished = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut done = false;
    while std::time::Instant::now() < finished {
        if other.try_wait().expect("try_wait").is_some() {
            done = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    fs::write(&release, "").expect("release git");
    let out = slow.wait_with_output().expect("wait apply");
    let _ = other.kill();
    let _ = other.wait();
    assert!(
        done,
        "image prune waited for the lock of an apply that was running git"
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn one_projects_stops_do_not_block_another_projects_apply() {
    require_root!();
    let env = setup();
    let dir = env.dir.path().join("m");
    fs::create_dir_all(&dir).expect("mkdir");
    let slow = dir.join("slowstop.toml");
    fs::write(
        &slow,
        "[containers.deaf]\nimage = \"bb:1\"\n\
         command = [\"/bin/sh\", \"-c\", \"trap '' TERM; while :; do sleep 0.1; done\"]\n",
    )
    .expect("write manifest");
    let quick = dir.join("quick.toml");
    fs::write(
        &quick,
        format!("[containers.other]\nimage = \"bb:1\"\ncommand = {SLEEPER}\n"),
    )
    .expect("write manifest");
    let (slow_s, quick_s) = (
        slow.to_str().expect("utf-8"),
        quick.to_str().expect("utf-8"),
    );
    env.ok(&["apply", "-q", "-f", slow_s]);
    running_pid(&env, "deaf");
    // deaf ignores SIGTERM: its down waits out the whole 30 s grace period.
    let mut down = env
        .wharf()
        .args(["down", "-t", "30", "-f", slow_s])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn down");
    let out = env.run(&["apply", "-q", "-f", quick_s]);
    let still_stopping = down.try_wait().expect("try_wait").is_none();
    let _ = down.kill();
    let down_out = down.wait_with_output().expect("wait down");
    eprintln!("down: {}", text(&down_out.stderr));
    let _ = env.run(&["rm", "-f", "deaf", "other"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        still_stopping,
        "the other project's apply finished only after this down had waited out its grace period"
    );
}
