//! docker's run/create flags, as root: --entrypoint, --env-file, --label-file, --cidfile,
//! --tmpfs, --shm-size, --mount, --ulimit, --stop-signal (and the image's StopSignal) and
//! --stop-timeout.

mod common;

use std::fs;

use common::{Cleanup, busybox_tar, code, import_with, inspect, running_pid, s, setup, text};

#[test]
fn entrypoint_replaces_the_images_and_its_cmd() {
    require_root!();
    let env = setup();
    import_with(
        &env,
        &[r#"ENTRYPOINT ["/bin/echo", "ep"]"#, r#"CMD ["cmd"]"#],
        &busybox_tar(),
        "ep:1",
    );
    assert_eq!(env.ok(&["run", "--rm", "ep:1"]), "ep cmd\n");
    assert_eq!(env.ok(&["run", "--rm", "ep:1", "arg"]), "ep arg\n");
    // --entrypoint drops the image's Cmd, as docker's does.
    assert_eq!(
        env.ok(&["run", "--rm", "--entrypoint", "/bin/echo", "ep:1"]),
        "\n"
    );
    assert_eq!(
        env.ok(&["run", "--rm", "--entrypoint", "/bin/echo", "ep:1", "x"]),
        "x\n"
    );
    // "" means none: the command alone.
    assert_eq!(
        env.ok(&["run", "--rm", "--entrypoint", "", "ep:1", "echo", "y"]),
        "y\n"
    );
    let out = env.run(&["run", "--rm", "--entrypoint", "", "ep:1"]);
    assert_eq!(code(&out), 125);
    assert!(
        text(&out.stderr).contains("entrypoint is empty"),
        "{}",
        text(&out.stderr)
    );
    assert!(env.ok(&["ps", "-aq"]).is_empty(), "nothing left behind");
}

#[test]
fn env_and_label_files_in_dockers_format() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["filed"]);
    let ef = env.dir.path().join("app.env");
    fs::write(
        &ef,
        "# comment\nA=1\n\nB=\"quoted\"\nFROM_HOST\nC=from-file\n",
    )
    .expect("write");
    let lf = env.dir.path().join("labels");
    fs::write(&lf, "tier=front\nbare\n").expect("write");
    let out = env
        .wharf()
        .env("FROM_HOST", "host-value")
        .args([
            "run",
            "--name",
            "filed",
            "--env-file",
            s(&ef),
            "-e",
            "C=flag",
            "--label-file",
            s(&lf),
            "-l",
            "tier=back",
            "bb:1",
            "sh",
            "-c",
            "echo $A $B $FROM_HOST $C",
        ])
        .output()
        .expect("wharf");
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "1 \"quoted\" host-value flag\n");
    let labels = inspect(&env, "filed")["Labels"].clone();
    assert_eq!(labels["tier"], "back", "--label wins over the file");
    assert_eq!(labels["bare"], "");
    fs::write(&ef, "GOOD=1\nBAD KEY=2\n").expect("write");
    let out = env.run(&["run", "--rm", "--env-file", s(&ef), "bb:1", "true"]);
    assert_eq!(code(&out), 125);
    assert!(
        text(&out.stderr).contains("app.env:2"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn cidfile_gets_the_id_and_an_existing_one_is_refused() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["cid"]);
    let f = env.dir.path().join("cid");
    let id = env.ok(&[
        "create",
        "--name",
        "cid",
        "--cidfile",
        s(&f),
        "bb:1",
        "true",
    ]);
    assert_eq!(fs::read_to_string(&f).expect("cidfile"), id.trim());
    let out = env.run(&["run", "--rm", "--cidfile", s(&f), "bb:1", "true"]);
    assert_eq!(code(&out), 125);
    assert!(
        text(&out.stderr).contains("exists"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        env.ok(&["ps", "-aq"]).lines().count(),
        1,
        "nothing new was created"
    );
}

#[test]
fn tmpfs_shm_size_and_mount() {
    require_root!();
    let env = setup();
    let host = env.dir.path().join("shared");
    fs::create_dir(&host).expect("mkdir");
    fs::write(host.join("f"), "host file\n").expect("write");
    let bind = format!("type=bind,source={},target=/srv,readonly", s(&host));
    let out = env.ok(&[
        "run",
        "--rm",
        "--tmpfs",
        "/scratch:size=1m,mode=1770",
        "--shm-size",
        "8m",
        "--mount",
        &bind,
        "--mount",
        "type=tmpfs,target=/t2,tmpfs-size=2m",
        "--mount",
        "type=volume,source=vol,target=/data",
        "bb:1",
        "sh",
        "-c",
        "grep -E ' /(scratch|t2|dev/shm) ' /proc/mounts; stat -c %a /scratch; cat /srv/f; \
         touch /srv/x 2>/dev/null || echo ro; echo v > /data/v",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    let line = |p: &str| {
        *lines
            .iter()
            .find(|l| l.split_whitespace().nth(1) == Some(p))
            .unwrap_or_else(|| panic!("{p} mounted: {out}"))
    };
    assert!(line("/scratch").contains("size=1024k"), "{out}");
    assert!(
        line("/scratch").contains("noexec"),
        "docker's default noexec: {out}"
    );
    assert!(line("/t2").contains("size=2048k"), "{out}");
    assert!(line("/dev/shm").contains("size=8192k"), "{out}");
    assert!(out.contains("\n1770\n"), "{out}");
    assert!(out.contains("host file\nro\n"), "{out}");
    assert_eq!(
        fs::read_to_string(env.root.join("volumes/vol/_data/v")).expect("volume"),
        "v\n"
    );
    for bad in [
        &["--tmpfs", "relative"][..],
        &["--tmpfs", "/x:bogus=1"],
        &["--mount", "type=bind,source=rel,target=/x"],
        &["--mount", "type=nfs,target=/x"],
        &["--mount", "type=tmpfs,source=a,target=/x"],
    ] {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(bad);
        args.extend_from_slice(&["bb:1", "true"]);
        let out = env.run(&args);
        assert_eq!(code(&out), 125, "{bad:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("hint:"), "{}", text(&out.stderr));
    }
}

#[test]
fn ulimits_apply_and_never_exceed_the_hard_limit() {
    require_root!();
    let env = setup();
    let out = env.ok(&[
        "run",
        "--rm",
        "--ulimit",
        "nofile=256:512",
        "--ulimit",
        "core=0",
        "bb:1",
        "sh",
        "-c",
        "ulimit -Sn; ulimit -Hn; ulimit -c",
    ]);
    assert_eq!(out, "256\n512\n0\n");
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    if hard != u64::MAX {
        let over = format!("nofile={}:{}", hard, hard + 1);
        let out = env.run(&["run", "--rm", "--ulimit", &over, "bb:1", "true"]);
        assert_eq!(code(&out), 125);
        assert!(
            text(&out.stderr).contains("above wharf's own"),
            "{}",
            text(&out.stderr)
        );
    }
    for bad in ["nofile=2:1", "bogus=1", "nofile=x"] {
        let out = env.run(&["run", "--rm", "--ulimit", bad, "bb:1", "true"]);
        assert_eq!(code(&out), 125, "{bad}");
    }
}

#[test]
fn stop_signal_and_timeout() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["usr1", "img-sig", "slow"]);
    // The trap answers USR1 only: a stop with TERM would have to wait for the KILL.
    let script = "trap 'exit 42' USR1; touch /ready; while :; do sleep 0.1; done";
    env.ok(&[
        "run",
        "-d",
        "--name",
        "usr1",
        "--stop-signal",
        "USR1",
        "bb:1",
        "sh",
        "-c",
        script,
    ]);
    common::await_ready(&env, "usr1");
    env.ok(&["stop", "-t", "30", "usr1"]);
    assert_eq!(inspect(&env, "usr1")["State"]["ExitCode"], 42);
    assert_eq!(inspect(&env, "usr1")["Config"]["stop_signal"], "SIGUSR1");
    // The image's StopSignal, when no flag is given.
    import_with(&env, &["STOPSIGNAL SIGUSR1"], &busybox_tar(), "sig:1");
    env.ok(&[
        "run", "-d", "--name", "img-sig", "sig:1", "sh", "-c", script,
    ]);
    common::await_ready(&env, "img-sig");
    env.ok(&["stop", "-t", "30", "img-sig"]);
    assert_eq!(inspect(&env, "img-sig")["State"]["ExitCode"], 42);
    // --stop-timeout: stop without -t kills after it (TERM is ignored by this init).
    env.ok(&[
        "run",
        "-d",
        "--name",
        "slow",
        "--stop-timeout",
        "1",
        "bb:1",
        "sh",
        "-c",
        "trap '' TERM; while :; do sleep 0.1; done",
    ]);
    running_pid(&env, "slow");
    env.ok(&["stop", "slow"]);
    assert_eq!(inspect(&env, "slow")["State"]["ExitCode"], 137);
    assert_eq!(inspect(&env, "slow")["Config"]["stop_timeout"], 1);
    let out = env.run(&["run", "--rm", "--stop-signal", "NOPE", "bb:1", "true"]);
    assert_eq!(code(&out), 125);
}

#[test]
fn a_manifest_entrypoint_goes_through_the_same_resolution() {
    require_root!();
    let env = setup();
    let dir = env.dir.path().join("proj");
    fs::create_dir(&dir).expect("mkdir");
    let m = dir.join("ep.toml");
    fs::write(
        &m,
        format!(
            "[images.bb]\nsource = {:?}\ntag = \"epbb:1\"\ncmd = [\"image-cmd\"]\n\n\
             [containers.epc]\nimage = \"epbb:1\"\nentrypoint = [\"/bin/echo\", \"from-ep\"]\n\
             state = \"stopped\"\n\n\
             [containers.bare]\nimage = \"epbb:1\"\nentrypoint = [\"/bin/echo\"]\n\
             command = [\"x\"]\nstate = \"stopped\"\n",
            s(&busybox_tar())
        ),
    )
    .expect("write");
    env.ok(&["apply", "-f", s(&m)]);
    let c = inspect(&env, "epc");
    assert_eq!(c["Path"], "/bin/echo");
    assert_eq!(
        c["Args"],
        serde_json::json!(["from-ep"]),
        "the image's Cmd is dropped"
    );
    let b = inspect(&env, "bare");
    assert_eq!(b["Args"], serde_json::json!(["x"]));
    // Converged: a second apply changes nothing (the spec hash was recorded).
    let out = env.ok(&["apply", "-f", s(&m)]);
    assert!(out.contains("No changes"), "{out}");
    env.ok(&["down", "-f", s(&m)]);
}

#[test]
fn init_reaps_orphans_and_forwards_signals() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["inited"]);
    // The command is PID 2 under the reaper; an orphan is reaped, not left a zombie.
    let out = env.ok(&[
        "run",
        "--rm",
        "--init",
        "bb:1",
        "sh",
        "-c",
        "echo $$; (sleep 0.2 &); sleep 1; ps -o pid,stat,comm | grep -c ' Z ' || true",
    ]);
    assert_eq!(out, "2\n0\n", "PID 2, no zombie");
    // A signal to the container reaches the command through PID 1.
    env.ok(&[
        "run",
        "-d",
        "--init",
        "--name",
        "inited",
        "bb:1",
        "sh",
        "-c",
        "trap 'exit 3' TERM; touch /ready; while :; do sleep 0.1; done",
    ]);
    common::await_ready(&env, "inited");
    env.ok(&["stop", "-t", "30", "inited"]);
    assert_eq!(inspect(&env, "inited")["State"]["ExitCode"], 3);
    assert_eq!(inspect(&env, "inited")["Config"]["init"], true);
    // The command's exit code is the container's, 128+N after a signal.
    let out = env.run(&["run", "--rm", "--init", "bb:1", "sh", "-c", "kill -KILL $$"]);
    assert_eq!(code(&out), 137, "{}", text(&out.stderr));
    let out = env.run(&["run", "--rm", "--init", "bb:1", "/no/such"]);
    assert_eq!(code(&out), 127, "{}", text(&out.stderr));
}

#[test]
fn device_is_mounted_and_allowed_with_its_permissions() {
    require_root!();
    let env = setup();
    // A node of loop-control (10:237), outside docker's default list: opening it does
    // nothing (only its ioctls act, and none is made).
    let node = env.dir.path().join("loop-control-node");
    let st = std::process::Command::new("mknod")
        .arg(&node)
        .args(["c", "10", "237"])
        .status()
        .expect("mknod");
    assert!(st.success());
    let dev = format!("{}:/dev/mydev:r", s(&node));
    let out = env.ok(&[
        "run",
        "--rm",
        "--device",
        &dev,
        "bb:1",
        "sh",
        "-c",
        "ls -l /dev/mydev | cut -c1; \
         (exec 3</dev/mydev) 2>&1 | grep -q 'not permitted' && echo read-denied || echo read-allowed; \
         (exec 3>/dev/mydev) 2>&1 | grep -q 'not permitted' && echo write-denied",
    ]);
    // Allowed means the cgroup let the open through (a host without the loop driver then
    // answers ENODEV, not EPERM).
    assert_eq!(out, "c\nread-allowed\nwrite-denied\n");
    // Without --device the same numbers stay closed, even for a node made inside.
    let out = env.ok(&[
        "run",
        "--rm",
        "bb:1",
        "sh",
        "-c",
        "mknod /tmp/k c 1 11 && ((exec 3</tmp/k) 2>/dev/null && echo opened || echo denied)",
    ]);
    assert_eq!(out, "denied\n");
    let out = env.run(&[
        "run",
        "--rm",
        "--device",
        s(&env.dir.path().join("nope")),
        "bb:1",
        "true",
    ]);
    assert_eq!(code(&out), 125);
    let out = env.run(&[
        "run",
        "--rm",
        "--device",
        &format!("{}:/dev/x:rwz", s(&node)),
        "bb:1",
        "true",
    ]);
    assert_eq!(code(&out), 125);
}

#[test]
fn manifest_fields_for_the_run_flags() {
    require_root!();
    let env = setup();
    let dir = env.dir.path().join("mproj");
    fs::create_dir(&dir).expect("mkdir");
    let m = dir.join("flags.toml");
    let body = |extra: &str| {
        format!(
            "[images.bb]\nsource = {:?}\ntag = \"fbb:1\"\n\n\
             [containers.flagged]\nimage = \"fbb:1\"\n\
             command = [\"sh\", \"-c\", \"trap 'exit 42' USR1; touch /ready; while :; do sleep 0.1; done\"]\n\
             {extra}",
            s(&busybox_tar())
        )
    };
    fs::write(
        &m,
        body(
            "tmpfs = [\"/scratch:size=1m\"]\nshm_size = \"8MiB\"\ninit = true\n\
             stop_signal = \"USR1\"\nstop_grace_period = \"20s\"\n\
             ulimits = { nofile = { soft = 256, hard = 512 }, core = 0 }\n\
             devices = [\"/dev/null:/dev/lc:r\"]\n",
        ),
    )
    .expect("write");
    env.ok(&["apply", "-f", s(&m)]);
    common::await_ready(&env, "flagged");
    let out = env.ok(&[
        "exec",
        "flagged",
        "sh",
        "-c",
        "grep -c ' /scratch tmpfs' /proc/mounts; ulimit -Sn; ulimit -Hn; \
         [ \"$(cat /proc/1/comm)\" != sh ] && echo reaper; test -c /dev/lc && echo device",
    ]);
    assert_eq!(
        out, "1\n256\n512\nreaper\ndevice\n",
        "tmpfs, ulimits (an exec gets them too), the reaper as PID 1"
    );
    let cfg = inspect(&env, "flagged")["Config"].clone();
    assert_eq!(cfg["stop_signal"], "SIGUSR1");
    assert_eq!(cfg["stop_timeout"], 20);
    assert_eq!(cfg["shm_size"], 8 << 20);
    let out = env.ok(&["apply", "-f", s(&m)]);
    assert!(out.contains("No changes"), "{out}");
    env.ok(&["stop", "flagged"]);
    assert_eq!(
        inspect(&env, "flagged")["State"]["ExitCode"],
        42,
        "the manifest's stop signal"
    );
    // Bad values are caught by validation, with the file's line.
    fs::write(
        &m,
        body("tmpfs = [\"/x:bogus=1\"]\nstop_signal = \"NOPE\"\n"),
    )
    .expect("write");
    let err = env.fails(&["validate", "-f", s(&m)]);
    assert!(err.contains("flags.toml:"), "{err}");
    assert!(err.contains("bogus") && err.contains("NOPE"), "{err}");
    fs::write(&m, body("ulimits = { nofiles = 1 }\n")).expect("write");
    let err = env.fails(&["validate", "-f", s(&m)]);
    assert!(err.contains("nofiles"), "{err}");
    env.run(&["down", "-f", s(&m)]);
}

#[test]
fn log_opt_rotates_a_detached_containers_log() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["chatty"]);
    let id = env.ok(&[
        "run",
        "-d",
        "--name",
        "chatty",
        "--log-opt",
        "max-size=1k",
        "--log-opt",
        "max-file=3",
        "bb:1",
        "sh",
        "-c",
        "i=0; while [ $i -lt 300 ]; do echo line-$i; i=$((i+1)); done",
    ]);
    assert_eq!(env.ok(&["wait", "chatty"]), "0\n");
    let dir = env.root.join("containers").join(id.trim());
    assert!(dir.join("log.json.1").exists() && dir.join("log.json.2").exists());
    assert!(!dir.join("log.json.3").exists(), "at most 3 files");
    let size = fs::metadata(dir.join("log.json")).expect("log").len();
    assert!(size <= 2048, "rotated near 1k: {size}");
    let logs = env.ok(&["logs", "chatty"]);
    assert!(logs.ends_with("line-299\n"), "the newest lines are kept");
    assert!(!logs.contains("line-0\n"), "the oldest are rotated away");
    assert_eq!(
        inspect(&env, "chatty")["Config"]["log_opts"]["max_files"],
        3
    );
    for bad in ["max-size=big", "max-file=0", "compress=true"] {
        let out = env.run(&["run", "--rm", "--log-opt", bad, "bb:1", "true"]);
        assert_eq!(code(&out), 125, "{bad}");
    }
}

#[test]
fn foreground_runs_with_a_terminal_are_logged_too() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["fg"]);
    // `script` gives wharf a terminal, as a user's `run -it` has.
    let w = format!(
        "{} --root {} run -it --name fg bb:1 sh -c 'echo out-$((40+2)); exit 3'",
        env!("CARGO_BIN_EXE_wharf"),
        s(&env.root)
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &w, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script");
    assert_eq!(code(&out), 3, "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("out-42"),
        "the terminal gets it: {}",
        text(&out.stdout)
    );
    let logs = env.ok(&["logs", "fg"]);
    assert!(logs.contains("out-42"), "and the log: {logs:?}");
}

#[test]
fn every_error_of_run_and_create_exits_125_as_dockers() {
    require_root!();
    let env = setup();
    for args in [
        &["run", "--rm", "-m", "4m", "bb:1", "true"][..],
        &["create", "-m", "4m", "bb:1", "true"],
        &["run", "--rm", "nosuch:1", "true"],
        &["create", "--cpus", "4096", "bb:1", "true"],
    ] {
        let out = env.run(args);
        assert_eq!(code(&out), 125, "{args:?}: {}", text(&out.stderr));
    }
    // The size as it was typed, not in bytes.
    let err = env.fails(&["create", "-m", "4m", "bb:1", "true"]);
    assert!(err.contains("invalid --memory 4MiB"), "{err}");
    assert_eq!(env.ok(&["ps", "-aq"]), "", "nothing was created");
}
