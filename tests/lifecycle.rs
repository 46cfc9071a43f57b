//! Containers outliving their runs, as root: `create`, `start [-a] [-i]`, `restart`, the run
//! journal across runs, and `ps` with its options, filters and formats.

mod common;

use std::io::{BufRead, Read, Write};
use std::process::Stdio;

use common::{Cleanup, Env, code, history, inspect, running_pid, setup, text};

#[test]
fn start_reruns_on_the_kept_write_layer_and_returns_the_exit_code() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["keeper"]);
    // First run writes a file and exits 3; a second run finds it, prints it and exits 7.
    let script = "if [ -f /mark ]; then cat /mark; exit 7; fi; echo written > /mark; exit 3";
    let out = env.run(&["run", "--name", "keeper", "bb:1", "sh", "-c", script]);
    assert_eq!(code(&out), 3, "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");

    let out = env.run(&["start", "-a", "keeper"]);
    assert_eq!(
        code(&out),
        7,
        "start -a returns the exit code: {}",
        text(&out.stderr)
    );
    assert_eq!(
        text(&out.stdout),
        "written\n",
        "the file of the first run is there"
    );

    // A fresh container of the same image does not see it.
    let out = env.run(&["run", "--rm", "bb:1", "cat", "/mark"]);
    assert_eq!(code(&out), 1);
    assert!(
        text(&out.stderr).contains("No such file"),
        "{}",
        text(&out.stderr)
    );

    // The journal holds both runs, newest first, each with its exit code.
    let runs = history(&env, "keeper");
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0]["exit_code"], 7);
    assert_eq!(runs[1]["exit_code"], 3);
    assert!(runs.iter().all(|r| r["finished_at"].is_i64()));
    let st = inspect(&env, "keeper")["State"].clone();
    assert_eq!(st["Status"], "exited");
    assert_eq!(st["ExitCode"], 7);
}

#[test]
fn start_ai_forwards_stdin_and_start_is_a_noop_on_a_running_container() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["reader", "sleeper"]);
    let id = env.ok(&[
        "create",
        "-i",
        "--name",
        "reader",
        "bb:1",
        "sh",
        "-c",
        "read x; echo got $x; exit 4",
    ]);
    let id = id.trim();
    assert!(
        id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    assert_eq!(inspect(&env, "reader")["State"]["Status"], "created");
    assert!(history(&env, "reader").is_empty(), "create starts nothing");

    let mut child = env
        .wharf()
        .args(["start", "-ai", "reader"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn start -ai");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"hello\n")
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait start -ai");
    assert_eq!(code(&out), 4, "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "got hello\n");

    // Detached start prints the name; a second start does nothing.
    env.ok(&["create", "--name", "sleeper", "bb:1", "sleep", "60"]);
    assert_eq!(env.ok(&["start", "sleeper"]), "sleeper\n");
    let pid = running_pid(&env, "sleeper");
    assert_eq!(env.ok(&["start", "sleeper"]), "sleeper\n");
    assert_eq!(
        running_pid(&env, "sleeper"),
        pid,
        "the running container was left alone"
    );
    assert_eq!(history(&env, "sleeper").len(), 1);
    // Attaching stdin to a running container is refused with a way out.
    let err = env.fails(&["start", "-ai", "sleeper"]);
    assert!(
        err.contains("already running") && err.contains("logs -f"),
        "{err}"
    );
    let err = env.fails(&["start", "-a", "sleeper", "reader"]);
    assert!(err.contains("more than one"), "{err}");
    let err = env.fails(&["start", "nosuch"]);
    assert!(err.contains("no such container"), "{err}");
}

#[test]
fn start_a_on_a_detached_run_follows_it_to_its_exit_code() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["talker"]);
    let script =
        "echo before; while [ ! -f /go ]; do echo tick; sleep 0.05; done; echo after; exit 9";
    env.ok(&["run", "-d", "--name", "talker", "bb:1", "sh", "-c", script]);
    running_pid(&env, "talker");
    let mut attached = env
        .wharf()
        .args(["start", "-a", "talker"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn start -a");
    // A first line through start -a means it is attached (the container ticks until /go).
    let mut stdout = std::io::BufReader::new(attached.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("read start -a");
    assert!(first == "tick\n" || first == "before\n", "{first:?}");
    env.ok(&["exec", "talker", "touch", "/go"]);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("read start -a");
    let status = attached.wait().expect("wait start -a");
    assert_eq!(
        status.code(),
        Some(9),
        "start -a returns the run's exit code"
    );
    assert!(rest.ends_with("after\n"), "{rest:?}");
    assert!(
        rest.lines().rev().skip(1).all(|l| l == "tick"),
        "the run's output from where start -a attached: {rest:?}"
    );
    assert_eq!(
        history(&env, "talker").len(),
        1,
        "attached, not started again"
    );
}

#[test]
fn restart_stops_and_starts_again_on_the_same_layer() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["svc"]);
    // Counts its runs in its write layer.
    let script = "echo x >> /runs; trap 'exit 0' TERM; while true; do sleep 0.1; done";
    env.ok(&["create", "--name", "svc", "bb:1", "sh", "-c", script]);
    // restart of a created container starts it
    assert_eq!(env.ok(&["restart", "-t", "5", "svc"]), "svc\n");
    let first = running_pid(&env, "svc");
    assert_eq!(env.ok(&["restart", "-t", "5", "svc"]), "svc\n");
    let second = running_pid(&env, "svc");
    assert_ne!(first, second, "a new init");
    let runs = history(&env, "svc");
    assert_eq!(runs.len(), 2);
    assert_eq!(
        runs[1]["exit_code"], 0,
        "the first run ended by its TERM trap"
    );
    assert!(runs[0]["finished_at"].is_null(), "the second run is open");
    env.ok(&["stop", "-t", "5", "svc"]);
    assert_eq!(inspect(&env, "svc")["State"]["Status"], "exited");
    let upper = inspect(&env, "svc")["GraphDriver"]["Data"]["UpperDir"]
        .as_str()
        .expect("UpperDir")
        .to_string();
    let runs_file = std::fs::read_to_string(format!("{upper}/runs")).expect("read runs");
    assert_eq!(runs_file, "x\nx\n", "both runs wrote to the same layer");
}

/// Three containers: `up` running (a long command), `done` exited 3 with a label, `fresh`
/// created; in that order of creation.
fn three(env: &Env) {
    env.ok(&[
        "run",
        "-d",
        "--name",
        "up",
        "--label",
        "tier=front",
        "bb:1",
        "sh",
        "-c",
        "sleep 60; echo never",
    ]);
    let out = env.run(&[
        "run",
        "--name",
        "done",
        "--label",
        "tier=back",
        "--label",
        "env=prod",
        "bb:1",
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(code(&out), 3);
    env.ok(&["create", "--name", "fresh", "bb:1", "true"]);
}

fn names(out: &str) -> Vec<String> {
    out.lines()
        .skip(1)
        .map(|l| l.split_whitespace().last().unwrap_or("").to_string())
        .collect()
}

#[test]
fn ps_lists_like_docker() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["up", "done", "fresh"]);
    three(&env);
    running_pid(&env, "up");

    let out = env.ok(&["ps"]);
    let header = out.lines().next().unwrap_or("");
    for col in [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ] {
        assert!(header.contains(col), "{header}");
    }
    assert_eq!(names(&out), ["up"], "running only by default:\n{out}");
    let line = out.lines().nth(1).unwrap_or("");
    assert!(line.contains("\"sh -c sleep 60; ech…\""), "{line}");
    assert!(line.contains("   Up "), "{line}");
    assert!(line.contains(" ago "), "{line}");

    let out = env.ok(&["ps", "-a"]);
    assert_eq!(names(&out), ["fresh", "done", "up"], "newest first:\n{out}");
    assert!(out.contains("Exited (3) "), "{out}");
    assert!(out.contains("   Created   "), "{out}");
    assert_eq!(names(&env.ok(&["container", "ls", "-a"])), names(&out));
    assert_eq!(names(&env.ok(&["container", "list", "-a"])), names(&out));

    let q = env.ok(&["ps", "-a", "-q"]);
    let ids: Vec<&str> = q.lines().collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|i| i.len() == 12), "{q}");
    let full = env.ok(&["ps", "-a", "-q", "--no-trunc"]);
    assert!(full.lines().all(|i| i.len() == 64), "{full}");
    assert!(full.lines().zip(&ids).all(|(f, s)| f.starts_with(s)));

    let nt = env.ok(&["ps", "--no-trunc"]);
    assert!(nt.contains("\"sh -c sleep 60; echo never\""), "{nt}");

    assert_eq!(names(&env.ok(&["ps", "-n", "2"])), ["fresh", "done"]);
    assert_eq!(names(&env.ok(&["ps", "-l"])), ["fresh"]);

    // filters: status implies -a; values of one key OR; keys AND
    assert_eq!(names(&env.ok(&["ps", "-f", "status=exited"])), ["done"]);
    assert_eq!(
        names(&env.ok(&["ps", "-f", "status=exited", "-f", "status=created"])),
        ["fresh", "done"]
    );
    assert_eq!(
        names(&env.ok(&["ps", "-a", "--filter", "name=fre"])),
        ["fresh"]
    );
    assert_eq!(
        names(&env.ok(&["ps", "-a", "-f", "name=^up$", "-f", "name=done"])),
        ["done", "up"]
    );
    assert!(names(&env.ok(&["ps", "-a", "-f", "name=up", "-f", "status=exited"])).is_empty());
    assert_eq!(
        names(&env.ok(&["ps", "-a", "-f", "label=tier"])),
        ["done", "up"]
    );
    assert_eq!(
        names(&env.ok(&["ps", "-a", "-f", "label=tier=back"])),
        ["done"]
    );
    assert_eq!(
        names(&env.ok(&["ps", "-a", "-f", "label=tier", "-f", "label=env=prod"])),
        ["done"]
    );
    assert_eq!(
        names(&env.ok(&["ps", "-a", "-f", "ancestor=bb:1"])).len(),
        3
    );
    assert!(names(&env.ok(&["ps", "-a", "-f", "ancestor=nosuch:1"])).is_empty());
    assert_eq!(names(&env.ok(&["ps", "-f", "exited=3"])), ["done"]);
    assert_eq!(names(&env.ok(&["ps", "-f", "since=up"])), ["fresh", "done"]);
    assert_eq!(names(&env.ok(&["ps", "-f", "before=done"])), ["up"]);
    assert_eq!(names(&env.ok(&["ps", "-a", "-f", "network=none"])).len(), 3);
    assert!(names(&env.ok(&["ps", "-a", "-f", "network=host"])).is_empty());
    let err = env.fails(&["ps", "-f", "since=nosuch"]);
    assert!(err.contains("no such container"), "{err}");
    let err = env.fails(&["ps", "-f", "status=sleeping"]);
    assert!(
        err.contains("unknown status") && err.contains("hint:"),
        "{err}"
    );
    let err = env.fails(&["ps", "-f", "color=red"]);
    assert!(err.contains("unknown key"), "{err}");

    let json = env.ok(&["--format", "json", "ps", "-a"]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("ps json");
    let arr = v.as_array().expect("an array");
    assert_eq!(arr.len(), 3);
    assert_eq!(arr[1]["Names"], "done");
    assert_eq!(arr[1]["State"], "exited");
    assert_eq!(arr[1]["ExitCode"], 3);
    assert!(
        arr[1]["Status"]
            .as_str()
            .unwrap_or("")
            .starts_with("Exited (3) ")
    );
    assert_eq!(arr[1]["Labels"]["env"], "prod");
    assert_eq!(arr[2]["State"], "running");
    assert_eq!(arr[2]["ID"].as_str().map(str::len), Some(64));
    assert_eq!(arr[0]["Status"], "Created");
}

#[test]
fn inspect_shows_the_whole_record() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["rec"]);
    let bind = env.dir.path().join("conf");
    std::fs::create_dir_all(&bind).expect("mkdir conf");
    let bind_arg = format!("{}:/conf:ro", bind.display());
    let id = env.ok(&[
        "create",
        "--name",
        "rec",
        "-m",
        "64m",
        "--cpus",
        "0.5",
        "--pids-limit",
        "50",
        "-v",
        "data:/data",
        "-v",
        &bind_arg,
        "--label",
        "a=b",
        "bb:1",
        "sh",
        "-c",
        "echo hi > /x",
    ]);
    let id = id.trim();
    let v = inspect(&env, "rec");
    assert_eq!(v["Id"], id);
    assert_eq!(v["Name"], "rec");
    assert_eq!(v["ImageRef"], "bb:1");
    assert!(v["Image"].as_str().unwrap_or("").starts_with("sha256:"));
    assert_eq!(v["Path"], "sh");
    assert_eq!(v["Args"], serde_json::json!(["-c", "echo hi > /x"]));
    assert_eq!(v["State"]["Status"], "created");
    assert_eq!(v["State"]["Text"], "Created");
    assert_eq!(v["RestartCount"], 0);
    assert_eq!(v["Labels"]["a"], "b");
    assert_eq!(v["HostConfig"]["Memory"], 64 * 1024 * 1024);
    assert_eq!(v["HostConfig"]["NanoCpus"], 500_000_000);
    assert_eq!(v["HostConfig"]["PidsLimit"], 50);
    let mounts = v["Mounts"].as_array().expect("Mounts");
    assert_eq!(mounts.len(), 2);
    assert_eq!(mounts[0]["Type"], "volume");
    assert_eq!(mounts[0]["Name"], "data");
    assert_eq!(mounts[0]["Destination"], "/data");
    assert_eq!(mounts[0]["RW"], true);
    assert_eq!(mounts[1]["Type"], "bind");
    assert_eq!(mounts[1]["Source"], bind.display().to_string());
    assert_eq!(mounts[1]["RW"], false);
    let cdir = env.root.join("containers").join(id);
    assert_eq!(
        v["GraphDriver"]["Data"]["UpperDir"],
        cdir.join("upper").display().to_string()
    );
    assert_eq!(v["LogPath"], cdir.join("log.json").display().to_string());
    // After a run: the state, and the write layer really is that directory.
    assert_eq!(code(&env.run(&["start", "-a", "rec"])), 0);
    let v = inspect(&env, "rec");
    assert_eq!(v["State"]["Status"], "exited");
    assert_eq!(v["State"]["ExitCode"], 0);
    assert!(v["State"]["StartedAt"].is_string() && v["State"]["FinishedAt"].is_string());
    assert_eq!(
        std::fs::read_to_string(cdir.join("upper/x")).expect("the file in the write layer"),
        "hi\n"
    );
}
