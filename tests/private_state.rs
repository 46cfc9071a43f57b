//! Issue 11, point 4: the state root is private. An attacker is `nobody` on the host: it tries
//! to read the database (env values), logs (what containers print) and anything else under
//! the root, and to find an env value in the cgroup tree or a process's command line.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const SECRET: &str = "hunter2-s3cr3t-value";

fn mode(p: &Path) -> u32 {
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Every path at or below `root` (the root first), as root sees them, tagged `d:` or `f:`.
fn everything(root: &Path) -> Vec<String> {
    fn walk(p: &Path, out: &mut Vec<String>) {
        let Ok(m) = fs::symlink_metadata(p) else {
            return;
        };
        if m.is_dir() {
            out.push(format!("d:{}", p.display()));
            if let Ok(rd) = fs::read_dir(p) {
                for e in rd.flatten() {
                    walk(&e.path(), out);
                }
            }
        } else if m.is_file() {
            out.push(format!("f:{}", p.display()));
        }
    }
    let mut out = Vec::new();
    walk(root, &mut out);
    out
}

/// Runs, as uid/gid 65534 with no supplementary groups, a shell that tries to list every
/// `d:` path and read every `f:` path; returns what it managed to (one line each).
fn readable_by_nobody(paths: &[String]) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(
            r#"for p; do case $p in
                 d:*) ls -a -- "${p#d:}" >/dev/null 2>&1 && echo "listed ${p#d:}";;
                 f:*) head -c1 -- "${p#f:}" >/dev/null 2>&1 && echo "read ${p#f:}";;
               esac; done"#,
        )
        .arg("sh")
        .args(paths)
        .uid(65534)
        .gid(65534)
        .output()
        .expect("spawn sh as nobody");
    text(&out.stdout)
}

#[test]
fn nobody_reads_nothing_under_the_state_root() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["secret-box", "user-box"]);
    // A container with a secret in its env that prints it to its log, kept running.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "secret-box",
        "-e",
        &format!("TOKEN={SECRET}"),
        "bb:1",
        "sh",
        "-c",
        "echo token=$TOKEN; trap 'exit 0' TERM; while :; do sleep 0.1; done",
    ]);
    running_pid(&env, "secret-box");
    wait_until(10, "the log line", || {
        env.ok(&["logs", "secret-box"])
            .contains(SECRET)
            .then_some(())
    });

    // The modes.
    let root = &env.root;
    let m = mode(root);
    assert!(m == 0o700 || m == 0o710, "state root mode {m:o}");
    for f in ["wharf.db", "wharf.db-wal", "wharf.db-shm"] {
        let p = root.join(f);
        assert!(p.exists(), "{f} missing");
        assert_eq!(mode(&p), 0o600, "{f}");
    }
    let id = inspect(&env, "secret-box")["Id"]
        .as_str()
        .expect("an id")
        .to_string();
    let log = root.join("containers").join(&id).join("log.json");
    assert_eq!(mode(&log) & !0o640, 0, "log.json mode {:o}", mode(&log));
    assert_eq!(
        mode(&root.join("run")) & 0o077,
        0,
        "the run dir is not private"
    );

    // As nobody: nothing below the root, the root included, can be listed or read.
    let paths = everything(root);
    assert!(paths.len() > 10, "the walk found too little: {paths:?}");
    assert!(paths.iter().any(|p| p.ends_with("log.json")));
    let got = readable_by_nobody(&paths);
    assert_eq!(got, "", "nobody could read state:\n{got}");
    // And even with the root itself opened up, the database stays private.
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).expect("chmod");
    let db: Vec<String> = paths
        .iter()
        .filter(|p| p.contains("wharf.db") || p.ends_with("log.json"))
        .cloned()
        .collect();
    let got = readable_by_nobody(&db);
    assert_eq!(got, "", "nobody could read the database or a log:\n{got}");
    // The next command closes it again.
    env.ok(&["ps", "-a"]);
    assert_eq!(mode(root), 0o700, "the root was not tightened at open");

    // Names the host shows to everyone carry ids, never env values: the cgroup tree, the
    // command lines of every process, the host's mount table.
    let mut leaks = Vec::new();
    let out = Command::new("find")
        .arg("/sys/fs/cgroup")
        .args(["-maxdepth", "4", "-path", "*wharf*"])
        .output()
        .expect("find");
    if text(&out.stdout).contains(SECRET) {
        leaks.push("cgroup path".to_string());
    }
    for e in fs::read_dir("/proc").expect("/proc").flatten() {
        if let Ok(c) = fs::read(e.path().join("cmdline"))
            && text(&c).contains(SECRET)
        {
            leaks.push(format!("cmdline of {}", e.path().display()));
        }
    }
    if fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .contains(SECRET)
    {
        leaks.push("mountinfo".into());
    }
    assert!(leaks.is_empty(), "the secret shows in {leaks:?}");

    // A container with a non-root user still works on a private root: its rootfs (overlay,
    // copy-up into the write layer), a volume and a bind mount.
    let bind = env.dir.path().join("bind");
    fs::create_dir_all(&bind).expect("mkdir");
    fs::write(bind.join("hello"), "from-the-host\n").expect("write");
    fs::set_permissions(&bind, fs::Permissions::from_mode(0o777)).expect("chmod");
    let out = env.ok(&[
        "run",
        "--name",
        "user-box",
        "-u",
        "65534:65534",
        "-v",
        &format!("{}:/bind", s(&bind)),
        "-v",
        "vol:/vol",
        "bb:1",
        "sh",
        "-c",
        "cat /bind/hello && echo x > /bind/out && ls /vol && id -u && cat /etc/hostname >/dev/null \
         && echo ok",
    ]);
    assert!(
        out.contains("from-the-host") && out.contains("65534\nok"),
        "{out}"
    );
    assert_eq!(
        fs::metadata(bind.join("out")).expect("written").uid(),
        65534,
        "the bind mount was not written as the container's user"
    );
}

#[test]
fn an_open_root_left_by_an_older_wharf_is_tightened_at_open() {
    require_root!();
    let env = Env::new();
    env.ok(&["ps", "-a"]);
    let root = &env.root;
    // What wharf before this change left: 0711 dirs and 0644 database files.
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).expect("chmod");
    for f in ["wharf.db", "wharf.db-wal", "wharf.db-shm"] {
        let p = root.join(f);
        if p.exists() {
            fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).expect("chmod");
        }
    }
    let paths: Vec<String> = vec![format!("f:{}", root.join("wharf.db").display())];
    assert_ne!(
        readable_by_nobody(&paths),
        "",
        "the setup did not open the root up"
    );
    env.ok(&["images"]);
    assert_eq!(mode(root), 0o700);
    for f in ["wharf.db", "wharf.db-wal", "wharf.db-shm"] {
        let p: PathBuf = root.join(f);
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{f}");
        }
    }
    assert_eq!(readable_by_nobody(&paths), "");
    // 0710 (docker's /var/lib/docker) is left as it is.
    fs::set_permissions(root, fs::Permissions::from_mode(0o710)).expect("chmod");
    env.ok(&["images"]);
    assert_eq!(mode(root), 0o710);
}
