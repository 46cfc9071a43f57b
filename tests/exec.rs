//! `wharf exec`, as root: the process joins the container's namespaces and cgroup, takes its
//! options, returns its exit code, gets a pty with -t, and leaves nothing behind.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Cleanup, Env, busybox_tar, code, text, wait_until};

/// A private root with `bb:1` and a detached container `box` (hostname `boxhost`) running
/// `sleep 300`; returns the container's full id.
fn setup(env: &Env) -> String {
    env.import(&busybox_tar(), "bb:1");
    let id = env.ok(&[
        "run",
        "-d",
        "--name",
        "box",
        "--hostname",
        "boxhost",
        "-e",
        "FROM_RUN=yes",
        "-w",
        "/srv",
        "bb:1",
        "sleep",
        "300",
    ]);
    id.trim().to_string()
}

/// The pids inside the container, as its own `ps` sees them (without the `ps` itself).
fn pids_inside(env: &Env) -> Vec<String> {
    let out = env.ok(&["exec", "box", "ps", "-o", "pid,args"]);
    out.lines()
        .skip(1)
        .filter(|l| !l.contains("ps -o pid,args"))
        .map(|l| l.trim().to_string())
        .collect()
}

#[test]
fn exec_joins_the_containers_namespaces_and_cgroup() {
    require_root!();
    let env = Env::new();
    let _c = Cleanup::new(&env, &["box"]);
    let id = setup(&env);

    assert_eq!(env.ok(&["exec", "box", "hostname"]), "boxhost\n");
    assert_eq!(
        env.ok(&["exec", "box", "cat", "/proc/1/cmdline"]),
        "sleep\x00300\x00"
    );
    // Its own pid is small: the container's pid namespace.
    let pid: u32 = env
        .ok(&["exec", "box", "sh", "-c", "echo $$"])
        .trim()
        .parse()
        .expect("a pid");
    assert!((2..100).contains(&pid), "pid {pid} is the container's");
    // Every namespace is init's.
    for ns in ["mnt", "uts", "ipc", "net", "pid", "cgroup"] {
        let out = env.ok(&[
            "exec",
            "box",
            "sh",
            "-c",
            &format!("readlink /proc/self/ns/{ns}; readlink /proc/1/ns/{ns}"),
        ]);
        let l: Vec<&str> = out.lines().collect();
        assert_eq!(l.len(), 2, "{out}");
        assert_eq!(l[0], l[1], "the {ns} namespace is the container's");
    }
    // The same cgroup as init, which is the container's (wharf/<id>).
    let out = env.ok(&[
        "exec",
        "box",
        "sh",
        "-c",
        "cat /proc/self/cgroup; echo --; cat /proc/1/cgroup",
    ]);
    let (mine, init) = out.split_once("--\n").expect("two parts");
    assert_eq!(mine, init);
    // Inside, the cgroup namespace is rooted at the container's cgroup; the host sees it.
    assert!(mine.lines().all(|l| l.ends_with(":/")), "{mine}");
    let host =
        std::fs::read_to_string(format!("/proc/{}/cgroup", common::running_pid(&env, "box")))
            .expect("read the init's cgroup");
    assert!(host.contains(&format!("wharf/{id}")), "{host}");
    // The container's root filesystem, not the host's.
    assert_eq!(
        env.ok(&["exec", "box", "ls", "/.dockerenv"]),
        "/.dockerenv\n"
    );
    // The container's environment and working directory.
    let out = env.ok(&["exec", "box", "sh", "-c", "echo $FROM_RUN $HOSTNAME; pwd"]);
    assert_eq!(out, "yes boxhost\n/srv\n");
}

#[test]
fn exec_options_and_exit_codes() {
    require_root!();
    let env = Env::new();
    let _c = Cleanup::new(&env, &["box", "stopped"]);
    setup(&env);

    let out = env.ok(&[
        "exec",
        "-e",
        "A=1",
        "-e",
        "FROM_RUN=over",
        "box",
        "sh",
        "-c",
        "echo $A $FROM_RUN",
    ]);
    assert_eq!(out, "1 over\n");
    assert_eq!(env.ok(&["exec", "-w", "/tmp", "box", "pwd"]), "/tmp\n");
    assert_eq!(
        env.ok(&["exec", "-u", "1000:1001", "box", "id"]).trim(),
        "uid=1000 gid=1001 groups=1001"
    );
    assert_eq!(
        env.ok(&["exec", "-u", "nobody", "box", "id", "-un"]),
        "nobody\n"
    );
    // A non-root user keeps no capabilities; root has the container's set, not more.
    let caps = env.ok(&[
        "exec",
        "-u",
        "1000",
        "box",
        "grep",
        "CapEff",
        "/proc/self/status",
    ]);
    assert!(caps.contains("0000000000000000"), "{caps}");
    let caps = env.ok(&["exec", "box", "grep", "CapBnd", "/proc/self/status"]);
    assert!(
        !caps.contains("000001ffffffffff"),
        "bounding set is docker's: {caps}"
    );
    let nnp = env.ok(&["exec", "box", "grep", "NoNewPrivs", "/proc/self/status"]);
    assert!(nnp.contains('1'), "{nnp}");

    // stdin with -i
    let mut child = env
        .wharf()
        .args(["exec", "-i", "box", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn exec -i");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"through\n")
        .expect("write");
    let out = child.wait_with_output().expect("wait exec -i");
    assert_eq!(text(&out.stdout), "through\n");

    // exit codes
    assert_eq!(code(&env.run(&["exec", "box", "sh", "-c", "exit 5"])), 5);
    let out = env.run(&["exec", "box", "nosuchcmd"]);
    assert_eq!(code(&out), 127);
    assert!(
        text(&out.stderr).contains("not found"),
        "{}",
        text(&out.stderr)
    );
    let out = env.run(&["exec", "box", "/etc"]);
    assert_eq!(code(&out), 126, "{}", text(&out.stderr));
    let out = env.run(&["exec", "-w", "/nonexistent", "box", "true"]);
    assert_eq!(code(&out), 126);
    assert!(
        text(&out.stderr).contains("/nonexistent"),
        "{}",
        text(&out.stderr)
    );
    let out = env.run(&["exec", "box", "sh", "-c", "kill -KILL $$"]);
    assert_eq!(code(&out), 137);

    // a container that is not running
    env.ok(&["create", "--name", "stopped", "bb:1", "true"]);
    let out = env.run(&["exec", "stopped", "true"]);
    assert_eq!(code(&out), 125);
    let err = text(&out.stderr);
    assert!(
        err.contains("not running") && err.contains("wharf start stopped"),
        "{err}"
    );
    let out = env.run(&["exec", "nosuch", "true"]);
    assert_ne!(code(&out), 0);
    assert!(text(&out.stderr).contains("no such container"));
}

#[test]
fn exec_tty_signals_detach_and_no_leftovers() {
    require_root!();
    let env = Env::new();
    let _c = Cleanup::new(&env, &["box"]);
    setup(&env);
    assert_eq!(pids_inside(&env), ["1 sleep 300"]);

    // -t: a pty of the container's devpts; without it, none.
    let out = env.run(&["exec", "-t", "box", "tty"]);
    assert_eq!(code(&out), 0);
    assert!(
        text(&out.stdout).starts_with("/dev/pts/"),
        "{}",
        text(&out.stdout)
    );
    let out = env.run(&["exec", "box", "tty"]);
    assert_eq!(code(&out), 1);
    assert_eq!(text(&out.stdout), "not a tty\n");
    let out = env.ok(&["exec", "-t", "box", "sh", "-c", "echo $TERM"]);
    assert_eq!(out.trim(), "xterm");

    // SIGTERM to wharf exec reaches the process: its exit code comes back.
    let child = env
        .wharf()
        .args([
            "exec",
            "box",
            "sh",
            "-c",
            "trap 'exit 42' TERM; touch /tmp/trapped; while true; do sleep 0.05; done",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn exec");
    let wharf_pid = child.id() as i32;
    // Its trap is set (a process seen inside before that may still be wharf's, pre-exec).
    wait_until(20, "the exec'd shell to set its trap", || {
        (code(&env.run(&["exec", "box", "test", "-e", "/tmp/trapped"])) == 0).then_some(())
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(wharf_pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signal wharf exec");
    let out = child.wait_with_output().expect("wait exec");
    assert_eq!(code(&out), 42);

    // A killed wharf exec takes its process with it.
    let mut child = env
        .wharf()
        .args(["exec", "box", "sleep", "200"])
        .spawn()
        .expect("spawn exec");
    wait_until(20, "the exec'd sleep to run", || {
        pids_inside(&env)
            .iter()
            .any(|p| p.ends_with("sleep 200"))
            .then_some(())
    });
    child.kill().expect("kill wharf exec");
    let _ = child.wait();
    wait_until(20, "the exec'd sleep to go", || {
        (pids_inside(&env) == ["1 sleep 300"]).then_some(())
    });

    // -d returns at once; the process runs, then is reaped (no zombie left to init).
    let t = Instant::now();
    assert_eq!(
        env.ok(&[
            "exec",
            "-d",
            "box",
            "sh",
            "-c",
            "sleep 0.3; touch /tmp/detached"
        ]),
        ""
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    wait_until(20, "the detached exec to finish", || {
        (env.run(&["exec", "box", "test", "-f", "/tmp/detached"])
            .status
            .success())
        .then_some(())
    });
    wait_until(20, "the detached exec to be reaped", || {
        (pids_inside(&env) == ["1 sleep 300"]).then_some(())
    });
    let out = env.run(&["exec", "-d", "box", "nosuchcmd"]);
    assert_eq!(code(&out), 127, "{}", text(&out.stderr));

    // Nothing is left: no process in the container but init, and the container still runs.
    assert_eq!(pids_inside(&env), ["1 sleep 300"]);
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", "box"])).expect("inspect json");
    assert_eq!(v[0]["State"]["Running"], true);
}
