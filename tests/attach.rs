//! `wharf attach` and the detach keys of `run -it` / `start -ai`, as root: the monitor's
//! attach socket, several clients, stdin to a detached `-i` container, exit codes, and
//! `--sig-proxy`. A terminal comes from script(1), as a user's has.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{Cleanup, Env, KillOnDrop, code, inspect, setup, text, wait_until};

/// Lines it reads, echoed as `got:LINE`; `quit` exits with `code`.
fn echoer(code: i32) -> String {
    format!("while read l; do echo \"got:$l\"; [ \"$l\" = quit ] && exit {code}; done; exit 1")
}

fn wharf_cmd(env: &Env) -> String {
    format!(
        "{} --root {}",
        env!("CARGO_BIN_EXE_wharf"),
        env.root.display()
    )
}

/// Runs `inner` under script(1) (a terminal on its stdout); returns its output.
fn under_script(inner: &str) -> String {
    let out = Command::new("script")
        .args(["-qec", inner, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("run script");
    text(&out.stdout)
}

fn has_script() -> bool {
    let ok = Command::new("script").arg("--version").output().is_ok();
    if !ok {
        eprintln!("skipped: no `script` command (bsdutils)");
    }
    ok
}

fn state(env: &Env, name: &str) -> String {
    inspect(env, name)["State"]["Status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn run_it_detaches_on_the_keys_and_attach_takes_the_terminal_back() {
    require_root!();
    if !has_script() {
        return;
    }
    let env = setup();
    let _c = Cleanup::new(&env, &["d1", "d2"]);
    let w = wharf_cmd(&env);
    let prog = echoer(7);
    // The default keys: ctrl-p ctrl-q. What came before them reaches the container.
    let s = under_script(&format!(
        "printf 'one\\n\\020\\021' | {w} run -it --name d1 bb:1 sh -c '{prog}'; echo rc=$?"
    ));
    assert!(s.contains("rc=0"), "a detach exits 0: {s}");
    assert!(!s.contains("got:"), "nothing after the detach: {s}");
    assert_eq!(state(&env, "d1"), "running", "the container goes on");
    wait_until(20, "the line before the detach in the log", || {
        env.ok(&["logs", "d1"]).contains("got:one").then_some(())
    });
    // Attach again: input, output, and the container's exit code.
    let s = under_script(&format!(
        "printf 'two\\nquit\\n' | {w} attach d1; echo rc=$?"
    ));
    assert!(s.contains("got:two"), "{s}");
    assert!(
        s.contains("rc=7"),
        "attach exits with the container's code: {s}"
    );
    assert_eq!(state(&env, "d1"), "exited");
    assert_eq!(inspect(&env, "d1")["State"]["ExitCode"], 7);

    // Other keys; a ctrl-p alone is input again.
    env.ok(&["create", "-it", "--name", "d2", "bb:1", "sh", "-c", &prog]);
    let s = under_script(&format!(
        "printf 'a\\020b\\n\\030x' | {w} start -ai --detach-keys ctrl-x,x d2; echo rc=$?"
    ));
    assert!(s.contains("rc=0"), "{s}");
    assert_eq!(state(&env, "d2"), "running");
    wait_until(20, "the line before the detach in the log", || {
        env.ok(&["logs", "d2"]).contains("got:a").then_some(())
    });
    env.ok(&["rm", "-f", "d2"]);
}

#[test]
fn detached_containers_are_attachable_with_and_without_a_tty() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["tty1", "pipe1", "quiet"]);
    // -dit: the pty, through pipes on our side (no terminal here).
    env.ok(&[
        "run",
        "-dit",
        "--name",
        "tty1",
        "bb:1",
        "sh",
        "-c",
        &echoer(5),
    ]);
    let out = attach_with_input(&env, &["attach", "tty1"], b"hello\nquit\n");
    assert!(
        text(&out.stdout).contains("got:hello"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(code(&out), 5, "{}", text(&out.stderr));
    let err = env.fails(&["attach", "tty1"]);
    assert!(err.contains("not running"), "{err}");

    // -di: a stdin pipe the monitor holds; stdout and stderr apart.
    let prog = format!("echo to-err >&2; {}", echoer(6));
    env.ok(&["run", "-di", "--name", "pipe1", "bb:1", "sh", "-c", &prog]);
    let out = attach_with_input(&env, &["attach", "pipe1"], b"x\nquit\n");
    assert!(text(&out.stdout).contains("got:x"), "{}", text(&out.stdout));
    assert_eq!(code(&out), 6, "{}", text(&out.stderr));

    // Neither -i nor -t: output only; our stdin is not read.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "quiet",
        "bb:1",
        "sh",
        "-c",
        "trap 'exit 3' TERM; i=0; while :; do echo tick-$i; i=$((i+1)); sleep 0.1; done",
    ]);
    let a = spawn_attach(&env, &["attach", "--no-stdin", "quiet"]);
    let b = spawn_attach(&env, &["attach", "quiet"]);
    let (mut a, mut b) = (KillOnDrop(a), KillOnDrop(b));
    for c in [&mut a, &mut b] {
        let mut r = BufReader::new(c.0.stdout.take().expect("stdout"));
        let mut line = String::new();
        r.read_line(&mut line).expect("read");
        assert!(
            line.starts_with("tick-"),
            "each client gets the output: {line:?}"
        );
        // Keep reading in the background, so the monitor never holds output back.
        std::thread::spawn(move || std::io::copy(&mut r, &mut std::io::sink()));
    }
    env.ok(&["stop", "quiet"]);
    for c in [&mut a, &mut b] {
        let st = c.0.wait().expect("wait");
        assert_eq!(
            st.code(),
            Some(3),
            "each client exits with the container's code"
        );
    }
}

fn spawn_attach(env: &Env, args: &[&str]) -> std::process::Child {
    env.wharf()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn attach")
}

fn attach_with_input(env: &Env, args: &[&str], input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = env
        .wharf()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn attach");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write");
    child.wait_with_output().expect("wait")
}

#[test]
fn sig_proxy_forwards_signals_and_false_leaves_the_container_running() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["sp1", "sp2"]);
    let prog = "trap 'echo got-term; exit 9' TERM; echo ready; while :; do sleep 0.1; done";
    for (name, proxy) in [("sp1", true), ("sp2", false)] {
        let flag = format!("--sig-proxy={proxy}");
        let mut child = KillOnDrop(
            env.wharf()
                .args(["run", "-i", &flag, "--name", name, "bb:1", "sh", "-c", prog])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn"),
        );
        let mut r = BufReader::new(child.0.stdout.take().expect("stdout"));
        let mut line = String::new();
        r.read_line(&mut line).expect("read");
        assert_eq!(line, "ready\n");
        // SAFETY: kill on our own child, not reaped yet.
        unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
        let st = child.0.wait().expect("wait");
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut r, &mut rest);
        if proxy {
            assert_eq!(st.code(), Some(9), "the container's code");
            assert!(rest.contains("got-term"), "{rest:?}");
            assert_eq!(state(&env, name), "exited");
        } else {
            assert_eq!(st.code(), Some(128 + libc::SIGTERM));
            assert_eq!(state(&env, name), "running", "the signal was wharf's");
        }
    }
}

#[test]
fn bad_detach_keys_are_usage_errors() {
    require_root!();
    let env = setup();
    let out = env.run(&["run", "-it", "--detach-keys", "ctrl-1", "bb:1", "true"]);
    assert_eq!(code(&out), 125, "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--detach-keys"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        env.run(&["ps", "-aq"]).stdout.is_empty(),
        "nothing is created"
    );
    let out = env.run(&["attach", "--detach-keys", "ab", "nosuch"]);
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    let out = env.run(&["attach", "nosuch"]);
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
}

#[test]
fn foreground_runs_are_logged_with_their_streams() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["fg1"]);
    let out = env.run(&[
        "run",
        "--name",
        "fg1",
        "bb:1",
        "sh",
        "-c",
        "echo to-out; echo to-err >&2; exit 2",
    ]);
    assert_eq!(code(&out), 2);
    assert_eq!(
        text(&out.stdout),
        "to-out\n",
        "the terminal gets it as before"
    );
    assert_eq!(text(&out.stderr), "to-err\n");
    let logs = env.run(&["logs", "fg1"]);
    assert_eq!(text(&logs.stdout), "to-out\n");
    assert_eq!(text(&logs.stderr), "to-err\n");
    // An attached start is logged too, after the first run.
    let out = env.run(&["start", "-a", "fg1"]);
    assert_eq!(code(&out), 2);
    assert_eq!(text(&env.run(&["logs", "fg1"]).stdout), "to-out\nto-out\n");
    env.ok(&["rm", "-f", "fg1"]);
    // Bulk output: all of it in the log, in order.
    let out = env.run(&[
        "run",
        "--name",
        "fg1",
        "bb:1",
        "sh",
        "-c",
        "i=0; while [ $i -lt 20000 ]; do echo line-$i; i=$((i+1)); done",
    ]);
    assert_eq!(code(&out), 0);
    let lines: Vec<String> = text(&env.run(&["logs", "fg1"]).stdout)
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 20000);
    assert_eq!(lines[19999], "line-19999");
    assert_eq!(text(&out.stdout).lines().count(), 20000);
}

#[test]
fn the_window_size_follows_the_attached_terminal() {
    require_root!();
    if !has_script() {
        return;
    }
    let env = setup();
    let _c = Cleanup::new(&env, &["ws1"]);
    let w = wharf_cmd(&env);
    // run -it: the pty has the terminal's size from the start (the monitor is detached).
    let s = under_script(&format!(
        "stty rows 31 cols 99; printf '' | {w} run -it --rm bb:1 stty size; echo rc=$?"
    ));
    assert!(s.contains("31 99"), "{s}");
    assert!(s.contains("rc=0"), "{s}");
    // attach: the size of the attaching terminal is sent to the pty.
    env.ok(&[
        "run",
        "-dit",
        "--name",
        "ws1",
        "bb:1",
        "sh",
        "-c",
        "read l; stty size; exit 2",
    ]);
    let s = under_script(&format!(
        "stty rows 27 cols 88; printf 'go\\n' | {w} attach ws1; echo rc=$?"
    ));
    assert!(s.contains("27 88"), "{s}");
    assert!(s.contains("rc=2"), "{s}");
}

#[test]
fn junk_on_the_attach_socket_is_ignored() {
    use nix::sys::socket::{
        AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr, connect, send, socket,
    };
    use std::os::fd::AsRawFd;
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["junk"]);
    let id = env.ok(&[
        "run",
        "-di",
        "--name",
        "junk",
        "bb:1",
        "sh",
        "-c",
        &echoer(4),
    ]);
    let dir = env.root.join("containers").join(id.trim());
    let dfd = std::fs::File::open(&dir).expect("open the container's dir");
    let addr = UnixAddr::new(&std::path::PathBuf::from(format!(
        "/proc/self/fd/{}/attach.sock",
        dfd.as_raw_fd()
    )))
    .expect("address");
    let sock = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    connect(sock.as_raw_fd(), &addr).expect("connect");
    let big = vec![16u8; 200 * 1024];
    let junk: [&[u8]; 7] = [
        &[],
        &[200, 1, 2, 3],
        &[19, 1],                      // a short signal
        &[19, 0xff, 0xff, 0xff, 0x7f], // no such signal
        &[19, 0, 0, 0, 0],             // signal 0
        &[18, 0, 0],                   // a short resize
        &big,                          // more than one message may hold
    ];
    for m in junk {
        let _ = send(sock.as_raw_fd(), m, MsgFlags::MSG_NOSIGNAL);
    }
    drop(sock);
    assert_eq!(state(&env, "junk"), "running", "the monitor shrugs it off");
    let out = attach_with_input(&env, &["attach", "junk"], b"ok\nquit\n");
    assert!(
        text(&out.stdout).contains("got:ok"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(code(&out), 4, "{}", text(&out.stderr));
}

#[test]
fn input_a_tty_container_does_not_read_never_stalls_its_output() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["deaf"]);
    // It writes and never reads: its terminal's input fills (a pty takes ~64 KiB).
    env.ok(&[
        "run",
        "-dit",
        "--name",
        "deaf",
        "bb:1",
        "sh",
        "-c",
        "i=0; while :; do echo tick-$i; i=$((i+1)); sleep 0.05; done",
    ]);
    let ticks = |env: &Env| -> usize {
        env.ok(&["logs", "deaf"])
            .lines()
            .filter_map(|l| l.trim().strip_prefix("tick-")?.parse().ok())
            .max()
            .unwrap_or(0)
    };
    let input = env.dir.path().join("input");
    std::fs::write(&input, format!("{}\n", "x".repeat(63)).repeat(16 * 1024)).expect("write input");
    let feeder = env
        .wharf()
        .args(["attach", "deaf"])
        .stdin(std::fs::File::open(&input).expect("open input"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn attach");
    let _feeder = KillOnDrop(feeder);
    // 1 MiB of input later, the output still flows and the monitor still answers.
    let seen = wait_until(20, "some output", || {
        let t = ticks(&env);
        (t > 0).then_some(t)
    });
    wait_until(20, "more output while its input waits", || {
        (ticks(&env) >= seen + 20).then_some(())
    });
    env.ok(&["stop", "-t", "1", "deaf"]);
    assert_eq!(state(&env, "deaf"), "exited");
}
