//! `wharf run` and friends, end to end, as root: what the container sees, exit codes, the
//! write layer, terminals, detached containers and their logs, volumes and networking.

mod common;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Cleanup, Env, busybox_tar, code, inspect, setup, text, wait_until};

/// Starts `wharf run --name NAME bb:1 sleep 60` in the foreground, output discarded, and
/// waits until the container runs. Returns wharf's process and the container's pid.
fn spawn_sleeper(env: &Env, name: &str) -> (std::process::Child, i64) {
    let fg = env
        .wharf()
        .args(["run", "--name", name, "bb:1", "sleep", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn wharf run");
    let pid = wait_until(20, "the container to run", || {
        let o = env.run(&["inspect", name]);
        if !o.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
        let st = &v[0]["State"];
        (st["Status"] == "running")
            .then(|| st["Pid"].as_i64())
            .flatten()
            .filter(|p| *p > 0)
    });
    (fg, pid)
}

fn state(env: &Env, name: &str) -> String {
    inspect(env, name)["State"]["Status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Sha256 of every path, mode and content below `dir`, in order.
fn tree_hash(dir: &Path) -> String {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::MetadataExt;
    fn walk(p: &Path, h: &mut Sha256) {
        let mut entries: Vec<PathBuf> = fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        entries.sort();
        for e in entries {
            let m = fs::symlink_metadata(&e).expect("stat");
            h.update(e.to_string_lossy().as_bytes());
            h.update(m.mode().to_le_bytes());
            h.update(m.mtime().to_le_bytes());
            if m.is_file() {
                h.update(fs::read(&e).expect("read"));
            } else if m.is_symlink() {
                h.update(
                    fs::read_link(&e)
                        .expect("readlink")
                        .as_os_str()
                        .as_encoded_bytes(),
                );
            } else if m.is_dir() {
                walk(&e, h);
            }
        }
    }
    let mut h = Sha256::new();
    walk(dir, &mut h);
    hex::encode(h.finalize())
}

#[test]
fn container_sees_a_docker_like_world() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["look"]);
    let script = r#"
        echo "hostname=$(hostname)"
        echo "pid=$$"
        echo "etc_hostname=$(cat /etc/hostname)"
        grep -q "$(hostname)" /etc/hosts && echo hosts_has_name
        grep -q localhost /etc/hosts && echo hosts_has_localhost
        [ -s /etc/resolv.conf ] && echo resolv_ok
        echo "mtab=$(readlink /etc/mtab)"
        [ -e /.dockerenv ] && echo dockerenv
        [ -e /run/.containerenv ] && echo containerenv
        for d in null zero full random urandom tty; do [ -c /dev/$d ] && echo "dev_$d"; done
        echo "ptmx=$(readlink /dev/ptmx)"
        cat /proc/mounts | while read src dst typ opts rest; do echo "mount $dst $typ $opts"; done
        grep -E '^(CapEff|CapBnd|CapInh|NoNewPrivs)' /proc/self/status
        echo "procs=$(ls /proc | grep -c '^[0-9]')"
        echo "keys=$(cat /proc/keys | wc -c)"
        echo x > /proc/sysrq-trigger 2>/dev/null || echo sysrq_ro
        echo 1 > /proc/sys/kernel/ostype 2>/dev/null || echo procsys_ro
        mknod /tmp/n c 1 3 && { echo x > /tmp/n 2>/dev/null && echo mknod_usable || echo mknod_blocked; }
        mknod /dev/n2 c 1 3 && { echo x > /dev/n2 2>/dev/null && echo devmknod_usable || echo devmknod_blocked; }
        echo x > /dev/null && echo devnull_ok
        env | sort | sed 's/^/env /'
    "#;
    let out = env.ok(&["run", "--name", "look", "bb:1", "sh", "-c", script]);
    let id = inspect(&env, "look")["Id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(id.len(), 64);
    let short = &id[..12];
    let has = |l: &str| out.lines().any(|x| x.trim() == l);
    for l in [
        &format!("hostname={short}"),
        "pid=1",
        &format!("etc_hostname={short}"),
        "hosts_has_name",
        "hosts_has_localhost",
        "resolv_ok",
        "mtab=/proc/mounts",
        "dockerenv",
        "containerenv",
        "dev_null",
        "dev_zero",
        "dev_full",
        "dev_random",
        "dev_urandom",
        "dev_tty",
        "ptmx=pts/ptmx",
        "CapEff:\t00000000a80425fb",
        "CapBnd:\t00000000a80425fb",
        "CapInh:\t0000000000000000",
        "NoNewPrivs:\t1",
        "keys=0",
        "procsys_ro",
        "mknod_blocked",
        "devmknod_blocked",
        "devnull_ok",
        "env container=wharf",
        "env HOME=/root",
        &format!("env HOSTNAME={short}"),
        "env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ] {
        assert!(has(l), "missing {l:?} in:\n{out}");
    }
    let mount = |dst: &str, typ: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("mount {dst} {typ} ")))
            .unwrap_or_else(|| panic!("no {typ} mount on {dst}:\n{out}"))
            .to_string()
    };
    mount("/", "overlay");
    mount("/proc", "proc");
    assert!(
        mount("/sys", "sysfs").contains(" ro,"),
        "/sys is not read-only"
    );
    mount("/dev", "tmpfs");
    mount("/dev/pts", "devpts");
    mount("/dev/shm", "tmpfs");
    mount("/dev/mqueue", "mqueue");
    assert!(
        out.contains("mount /etc/hostname "),
        "/etc/hostname is not a bind mount"
    );
    // Only the container's own processes: sh, and the ls of the pipeline.
    let procs: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("procs="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(99);
    // sh, its $(...) subshell, ls and grep; the host has many more.
    assert!(procs <= 5, "the container sees {procs} processes");
}

#[test]
fn exit_codes_follow_docker() {
    require_root!();
    let env = setup();
    assert_eq!(code(&env.run(&["run", "--rm", "bb:1", "true"])), 0);
    assert_eq!(
        code(&env.run(&["run", "--rm", "bb:1", "sh", "-c", "exit 3"])),
        3
    );
    let out = env.run(&["run", "--rm", "bb:1", "/etc/passwd"]);
    assert_eq!(code(&out), 126, "{}", text(&out.stderr));
    let out = env.run(&["run", "--rm", "bb:1", "no-such-command"]);
    assert_eq!(code(&out), 127);
    assert!(
        text(&out.stderr).contains("executable file not found"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(code(&env.run(&["run", "--rm", "bb:1", "/no/such"])), 127);
    // The busybox image has no Cmd: no command at all is wharf's error.
    let out = env.run(&["run", "--rm", "bb:1"]);
    assert_eq!(code(&out), 125);
    assert!(
        text(&out.stderr).contains("no command"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        code(&env.run(&["run", "--rm", "no-such-image:1", "true"])),
        125
    );
    // --rm left nothing behind.
    assert!(
        env.tree("containers").is_empty(),
        "{:?}",
        env.tree("containers")
    );

    // Death by signal N is 128+N, for the foreground wharf and in the record.
    let _c = Cleanup::new(&env, &["sig"]);
    let (mut fg, _) = spawn_sleeper(&env, "sig");
    env.ok(&["kill", "-s", "KILL", "sig"]);
    let st = fg.wait().expect("wait wharf run");
    assert_eq!(st.code(), Some(137));
    assert_eq!(inspect(&env, "sig")["State"]["ExitCode"], 137);
}

#[test]
fn signals_to_a_foreground_run_reach_the_container() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["fwd"]);
    let mut fg = env
        .wharf()
        .args([
            "run",
            "--name",
            "fwd",
            "bb:1",
            "sh",
            "-c",
            "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.05; done",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn wharf run");
    let mut stdout = fg.stdout.take().expect("stdout");
    let mut first = [0u8; 6];
    stdout.read_exact(&mut first).expect("read ready");
    assert_eq!(&first, b"ready\n");
    // SAFETY: kill on the pid of a child we spawned and have not reaped.
    unsafe { libc::kill(fg.id() as i32, libc::SIGTERM) };
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("read");
    let st = fg.wait().expect("wait");
    assert_eq!(rest, "got-term\n");
    assert_eq!(st.code(), Some(7));
}

#[test]
fn write_layer_is_kept_and_image_untouched() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["keep"]);
    let layers = env.root.join("layers");
    let before = tree_hash(&layers);
    env.ok(&[
        "run",
        "--name",
        "keep",
        "bb:1",
        "sh",
        "-c",
        "echo data > /made && rm /bin/ls && echo x >> /etc/passwd",
    ]);
    assert_eq!(tree_hash(&layers), before, "the image's layers changed");
    let id = inspect(&env, "keep")["Id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let upper = env.root.join("containers").join(&id).join("upper");
    assert_eq!(
        fs::read_to_string(upper.join("made")).unwrap_or_default(),
        "data\n"
    );
    // rm in the container is a whiteout (char 0:0) in the upper dir.
    use std::os::unix::fs::FileTypeExt;
    let wh = fs::symlink_metadata(upper.join("bin/ls")).expect("whiteout for /bin/ls");
    assert!(wh.file_type().is_char_device());
    // A fresh container of the same image sees the image as it was.
    let out = env.ok(&[
        "run",
        "--rm",
        "bb:1",
        "sh",
        "-c",
        "ls /made 2>&1; ls /bin/ls",
    ]);
    assert!(
        out.contains("No such file") && out.contains("/bin/ls"),
        "{out}"
    );
    // The stopped container's write layer stays until rm.
    assert_eq!(state(&env, "keep"), "exited");
    env.ok(&["rm", "keep"]);
    assert!(!upper.exists());
}

#[test]
fn tty_is_inside_and_the_terminal_is_restored() {
    require_root!();
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` command");
        return;
    }
    let env = setup();
    let wharf = format!(
        "{} --root {}",
        env!("CARGO_BIN_EXE_wharf"),
        env.root.display()
    );
    let inner = format!(
        "stty cols 77 rows 22; a=$(stty -g); \
         {wharf} run --rm -t bb:1 sh -c 'tty; stty size; ls -l /dev/console; [ -t 0 ] && echo stdin_tty; exit 5'; \
         echo rc=$?; b=$(stty -g); [ \"$a\" = \"$b\" ] && echo restored"
    );
    let out = Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .stdin(Stdio::piped())
        .output()
        .expect("run script");
    let s = text(&out.stdout);
    assert!(s.contains("/dev/pts/0"), "tty inside: {s}");
    assert!(s.contains("22 77"), "window size: {s}");
    assert!(s.contains("stdin_tty"), "{s}");
    assert!(s.contains("136,"), "/dev/console is the pty: {s}");
    assert!(s.contains("rc=5"), "{s}");
    assert!(s.contains("restored"), "terminal not restored: {s}");

    // -i forwards stdin through the pty.
    let inner = format!(
        "printf 'echo from-stdin-$((6*7))\\nexit 4\\n' | {wharf} run --rm -i -t bb:1 sh; echo rc=$?"
    );
    let out = Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .stdin(Stdio::piped())
        .output()
        .expect("run script");
    let s = text(&out.stdout);
    assert!(s.contains("from-stdin-42"), "{s}");
    assert!(s.contains("rc=4"), "{s}");
}

#[test]
fn pipes_keep_stdout_and_stderr_apart_and_stdin_is_forwarded() {
    require_root!();
    let env = setup();
    let out = env.run(&[
        "run",
        "--rm",
        "bb:1",
        "sh",
        "-c",
        "echo to-out; echo to-err >&2",
    ]);
    assert_eq!(text(&out.stdout), "to-out\n");
    assert_eq!(text(&out.stderr), "to-err\n");
    let mut child = env
        .wharf()
        .args(["run", "--rm", "-i", "bb:1", "tr", "a-z", "A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"hello\n").expect("write");
    }
    let mut s = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut s)
        .expect("read");
    assert!(child.wait().expect("wait").success());
    assert_eq!(s, "HELLO\n");
    // Without -i, stdin is /dev/null.
    let out = env.run(&["run", "--rm", "bb:1", "sh", "-c", "cat; echo done"]);
    assert_eq!(text(&out.stdout), "done\n");
}

#[test]
fn detached_logs_kill_and_stop() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["web"]);
    let id = env.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "bb:1",
        "sh",
        "-c",
        "echo err1 >&2; trap 'echo got-hup' HUP; echo out1; while :; do sleep 0.05; done",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "{id}");
    assert_eq!(state(&env, "web"), "running");
    // out1 comes after the trap is set: a HUP sent earlier would be lost (PID 1 ignores a
    // signal it has no handler for).
    let logs = wait_until(10, "the first log lines", || {
        let o = env.run(&["logs", "web"]);
        (text(&o.stdout).contains("out1") && text(&o.stderr).contains("err1")).then_some(o)
    });
    assert!(!text(&logs.stdout).contains("err1"), "streams mixed");
    env.ok(&["kill", "-s", "HUP", "web"]);
    wait_until(10, "the HUP trap", || {
        env.ok(&["logs", "web"]).contains("got-hup").then_some(())
    });
    assert_eq!(env.ok(&["logs", "--tail", "1", "web"]), "got-hup\n");
    let ts = env.ok(&["logs", "-t", "web"]);
    assert!(
        ts.lines()
            .all(|l| l.len() > 31 && l.as_bytes()[4] == b'-' && l.contains("Z ")),
        "{ts}"
    );
    // The monitor is outside our session and lives on.
    let mon = inspect(&env, "web");
    assert_eq!(mon["State"]["Running"], true);
    let pid = mon["State"]["Pid"].as_i64().unwrap_or(0);
    assert!(pid > 1 && Path::new(&format!("/proc/{pid}")).exists());
    // sh as PID 1 ignores TERM: stop kills it after the timeout.
    let t = Instant::now();
    env.ok(&["stop", "-t", "1", "web"]);
    assert!(t.elapsed() >= Duration::from_millis(900));
    let st = inspect(&env, "web");
    assert_eq!(st["State"]["Status"], "exited");
    assert_eq!(st["State"]["ExitCode"], 137);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the container's init is alive"
    );
    // logs -f of a stopped container prints all and returns.
    assert!(env.ok(&["logs", "-f", "web"]).contains("got-hup"));
    assert!(env.fails(&["kill", "web"]).contains("not running"));
}

#[test]
fn options_user_workdir_env_hostname_readonly_caps() {
    require_root!();
    let env = setup();
    let out = env.ok(&[
        "run",
        "--rm",
        "-u",
        "65534:65534",
        "-w",
        "/tmp/new/dir",
        "-e",
        "K=V",
        "--hostname",
        "web",
        "bb:1",
        "sh",
        "-c",
        "id -u; id -g; pwd; echo $K; hostname; grep CapEff /proc/self/status; echo HOME=$HOME",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "65534",
            "65534",
            "/tmp/new/dir",
            "V",
            "web",
            "CapEff:\t0000000000000000",
            "HOME=/nonexistent"
        ],
        "{out}"
    );
    let out = env.run(&["run", "--rm", "--read-only", "bb:1", "sh", "-c", "touch /x"]);
    assert_ne!(code(&out), 0, "the root filesystem was writable");
    let out = env.ok(&[
        "run",
        "--rm",
        "--cap-drop",
        "CHOWN",
        "--cap-add",
        "NET_ADMIN",
        "bb:1",
        "grep",
        "CapEff",
        "/proc/self/status",
    ]);
    // default a80425fb - CHOWN(bit 0) + NET_ADMIN(bit 12)
    assert_eq!(out.trim(), "CapEff:\t00000000a80435fa");
    let out = env.ok(&[
        "run",
        "--rm",
        "--privileged",
        "bb:1",
        "grep",
        "NoNewPrivs",
        "/proc/self/status",
    ]);
    assert_eq!(out.trim(), "NoNewPrivs:\t0");
    assert_eq!(
        code(&env.run(&["run", "--rm", "--cap-add", "BOGUS", "bb:1", "true"])),
        125
    );
}

#[test]
fn volumes_named_bind_readonly_and_symlink_escape() {
    require_root!();
    let env = setup();
    env.ok(&[
        "run",
        "--rm",
        "-v",
        "data:/data",
        "bb:1",
        "sh",
        "-c",
        "echo kept > /data/f",
    ]);
    let on_disk = env.root.join("volumes/data/_data/f");
    assert_eq!(fs::read_to_string(&on_disk).unwrap_or_default(), "kept\n");
    assert_eq!(
        env.ok(&[
            "run",
            "--rm",
            "-v",
            "data:/other",
            "bb:1",
            "cat",
            "/other/f"
        ]),
        "kept\n"
    );

    let host = env.dir.path().join("hostdir");
    fs::create_dir(&host).expect("mkdir");
    fs::write(host.join("h"), "host\n").expect("write");
    let spec = format!("{}:/mnt/h:ro", host.display());
    let out = env.run(&[
        "run",
        "--rm",
        "-v",
        &spec,
        "bb:1",
        "sh",
        "-c",
        "cat /mnt/h/h; touch /mnt/h/new",
    ]);
    assert_eq!(text(&out.stdout), "host\n");
    assert_ne!(code(&out), 0);
    assert!(!host.join("new").exists(), "wrote through a read-only bind");
    let spec = format!("{}:/mnt/h", host.display());
    env.ok(&["run", "--rm", "-v", &spec, "bb:1", "touch", "/mnt/h/new"]);
    assert!(host.join("new").exists());

    // An image whose /evil is a symlink to a host path: the mount stays inside the rootfs.
    let escape = env.dir.path().join("escape");
    let rootfs = env.dir.path().join("evil-rootfs");
    fs::create_dir(&rootfs).expect("mkdir");
    let st = Command::new("tar")
        .arg("-xf")
        .arg(busybox_tar())
        .arg("-C")
        .arg(&rootfs)
        .status()
        .expect("tar");
    assert!(st.success());
    std::os::unix::fs::symlink(&escape, rootfs.join("evil")).expect("symlink");
    let tar = env.dir.path().join("evil.tar");
    let st = Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&rootfs)
        .arg(".")
        .status()
        .expect("tar");
    assert!(st.success());
    env.import(&tar, "evil:1");
    env.ok(&[
        "run",
        "--rm",
        "-v",
        "ev:/evil/sub",
        "evil:1",
        "sh",
        "-c",
        "echo in > /evil/sub/f",
    ]);
    assert!(
        !escape.exists(),
        "the volume was mounted outside the rootfs"
    );
    assert_eq!(
        fs::read_to_string(env.root.join("volumes/ev/_data/f")).unwrap_or_default(),
        "in\n"
    );
    assert!(common::mounts_below(env.dir.path()).is_empty());
}

#[test]
fn network_none_has_only_loopback_and_host_shares() {
    require_root!();
    let env = setup();
    let ifaces = |out: String| -> Vec<String> {
        out.lines()
            .filter_map(|l| l.split_once(':').map(|(n, _)| n.trim().to_string()))
            .filter(|n| !n.contains('|'))
            .collect()
    };
    let none = ifaces(env.ok(&["run", "--rm", "bb:1", "cat", "/proc/net/dev"]));
    assert_eq!(none, ["lo"]);
    // lo is up: a local listener answers.
    let out = env.ok(&[
        "run",
        "--rm",
        "bb:1",
        "sh",
        "-c",
        "cat /sys/class/net/lo/operstate /sys/class/net/lo/flags",
    ]);
    assert!(out.contains("0x9"), "lo flags: {out}");
    // The host's own namespace (not a list of interfaces, which other tests change meanwhile).
    let host = fs::read_link("/proc/self/ns/net").expect("the host's netns");
    let shared = env.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "bb:1",
        "readlink",
        "/proc/self/ns/net",
    ]);
    assert_eq!(
        shared.trim(),
        host.to_string_lossy(),
        "--network host is not the host's network namespace"
    );
}

#[test]
fn a_killed_wharf_leaves_nothing_and_is_reconciled() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["crash"]);
    let (mut fg, pid) = spawn_sleeper(&env, "crash");
    fg.kill().expect("SIGKILL wharf");
    let _ = fg.wait();
    // PDEATHSIG takes the container down with its monitor.
    wait_until(10, "the container to die", || {
        (!Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
    // The next wharf command closes the run.
    let st = inspect(&env, "crash");
    assert_eq!(st["State"]["Status"], "exited");
    assert_eq!(st["State"]["Running"], false);
    assert!(common::mounts_below(env.dir.path()).is_empty());
}

#[test]
fn cgroup_limits_and_oom_are_recorded() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["oom", "lim"]);
    let out = env.ok(&[
        "run",
        "--name",
        "lim",
        "-m",
        "64m",
        "--pids-limit",
        "64",
        "--cpus",
        "0.5",
        "bb:1",
        "cat",
        "/proc/self/cgroup",
    ]);
    // The cgroup namespace is rooted at the container's own cgroups (made after it joined
    // them): every line reads `/`, none climbs out with `/..`.
    assert!(
        out.lines()
            .filter(|l| !l.is_empty())
            .all(|l| l.ends_with(":/")),
        "{out}"
    );
    let out = env.run(&[
        "run",
        "--name",
        "oom",
        "-m",
        "16m",
        "--memory-swap",
        "16m",
        "bb:1",
        "tail",
        "/dev/zero",
    ]);
    assert_eq!(code(&out), 137);
    assert_eq!(inspect(&env, "oom")["State"]["OOMKilled"], true);
}

#[test]
fn detached_tty_logs_follow_and_rm() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["ft", "busy"]);
    env.ok(&[
        "run",
        "-d",
        "-t",
        "--name",
        "ft",
        "bb:1",
        "sh",
        "-c",
        "tty; sleep 0.3; echo late",
    ]);
    // -f returns once the container has exited, with everything it wrote.
    let out = env.ok(&["logs", "-f", "ft"]);
    assert!(out.contains("/dev/pts/0") && out.contains("late"), "{out}");
    assert_eq!(state(&env, "ft"), "exited");
    assert_eq!(inspect(&env, "ft")["State"]["ExitCode"], 0);
    // A start failure of a detached container is reported by `run -d` itself.
    let out = env.run(&["run", "-d", "bb:1", "no-such-command"]);
    assert_eq!(code(&out), 127, "{}", text(&out.stderr));
    // rm refuses a running container unless forced.
    env.ok(&["run", "-d", "--name", "busy", "bb:1", "sleep", "60"]);
    assert!(env.fails(&["rm", "busy"]).contains("is running"));
    env.ok(&["rm", "-f", "busy"]);
    assert!(
        env.fails(&["inspect", "busy"])
            .contains("no such container")
    );
    // Names are unique.
    env.ok(&["run", "--name", "dup", "bb:1", "true"]);
    let out = env.run(&["run", "--name", "dup", "bb:1", "true"]);
    assert_eq!(code(&out), 125);
    assert!(text(&out.stderr).contains("already in use"));
}
