//! seccomp (issue 11, point 2): every container and exec runs under docker's default profile
//! unless told otherwise; the syscalls docker refuses fail with docker's errno.

mod common;

use common::{Cleanup, Env, busybox_tar, s};

fn errnos(out: &str) -> Vec<(String, i32)> {
    out.lines()
        .filter_map(|l| {
            let (n, e) = l.split_once(' ')?;
            Some((n.to_string(), e.trim().parse().ok()?))
        })
        .collect()
}

/// scripts/probes/syscall-probe.c tries add_key, keyctl, clone3, mount and
/// unshare(CLONE_NEWUSER) and prints `NAME ERRNO` for each (0: it worked).
fn probe_mount() -> String {
    format!("{}:/probe:ro", s(common::probes()))
}

const EPERM: i32 = 1;
const ENOSYS: i32 = 38;

#[test]
fn default_profile_refuses_what_docker_refuses_and_unconfined_lifts_it() {
    require_root!();
    let env = Env::new();
    let _c = Cleanup::new(&env, &["sc"]);
    env.import(&busybox_tar(), "bb:1");
    let vol = probe_mount();

    // docker's errnos under the default profile, for a container and for an exec into it.
    let want: Vec<(String, i32)> = [
        ("add_key", EPERM),
        ("keyctl", EPERM),
        ("clone3", ENOSYS),
        ("mount", EPERM),
        ("unshare", EPERM),
    ]
    .iter()
    .map(|(n, e)| (n.to_string(), *e))
    .collect();
    let out = env.ok(&["run", "--rm", "-v", &vol, "bb:1", "/probe/syscall-probe"]);
    assert_eq!(errnos(&out), want, "run: {out}");
    env.ok(&[
        "run", "-d", "--name", "sc", "-v", &vol, "bb:1", "sleep", "300",
    ]);
    let out = env.ok(&["exec", "sc", "/probe/syscall-probe"]);
    assert_eq!(errnos(&out), want, "exec: {out}");
    for args in [
        vec![
            "run",
            "--rm",
            "bb:1",
            "grep",
            "^Seccomp:",
            "/proc/self/status",
        ],
        vec!["exec", "sc", "grep", "^Seccomp:", "/proc/self/status"],
    ] {
        assert_eq!(env.ok(&args), "Seccomp:\t2\n", "{args:?}");
    }
    // busybox's unshare, as a user types it.
    let out = env.run(&["run", "--rm", "bb:1", "unshare", "-U", "-r", "true"]);
    assert_ne!(
        common::code(&out),
        0,
        "unshare -U worked under the default profile"
    );

    // unconfined: no filter; what the kernel allows with docker's capabilities works again
    // (mount still needs CAP_SYS_ADMIN, which the container does not have).
    let out = env.ok(&[
        "run",
        "--rm",
        "--security-opt",
        "seccomp=unconfined",
        "-v",
        &vol,
        "bb:1",
        "sh",
        "-c",
        "grep ^Seccomp: /proc/self/status; /probe/syscall-probe",
    ]);
    assert!(out.starts_with("Seccomp:\t0\n"), "{out}");
    let got = errnos(&out);
    for n in ["add_key", "keyctl", "clone3", "unshare"] {
        assert!(
            got.iter().any(|(g, e)| g == n && *e == 0),
            "{n} under unconfined: {out}"
        );
    }
    env.ok(&["rm", "-f", "sc"]);
}

#[test]
fn a_profile_file_is_applied_and_a_bad_one_refused_up_front() {
    require_root!();
    let env = Env::new();
    env.import(&busybox_tar(), "bb:1");
    // Allow everything but mkdir/mkdirat, which fail with EACCES (13).
    let profile = env.dir.path().join("profile.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", s(&profile));
    let out = env.run(&["run", "--rm", "--security-opt", &opt, "bb:1", "mkdir", "/x"]);
    assert_ne!(common::code(&out), 0);
    assert!(
        common::text(&out.stderr).contains("Permission denied"),
        "{}",
        common::text(&out.stderr)
    );
    // no-new-privileges is accepted (and shows).
    let out = env.ok(&[
        "run",
        "--rm",
        "--security-opt",
        "no-new-privileges",
        "bb:1",
        "grep",
        "^NoNewPrivs:",
        "/proc/self/status",
    ]);
    assert_eq!(out, "NoNewPrivs:\t1\n");

    // A profile that does not parse, or names an unknown action: refused at create, naming
    // the file; no container is left behind.
    std::fs::write(&profile, r#"{"defaultAction": "SCMP_ACT_NOPE"}"#).unwrap();
    let err = env.fails(&["run", "--rm", "--security-opt", &opt, "bb:1", "true"]);
    assert!(
        err.contains(s(&profile)) && err.contains("SCMP_ACT_NOPE"),
        "{err}"
    );
    let err = env.fails(&["create", "--security-opt", "apparmor=unconfined", "bb:1"]);
    assert!(err.contains("apparmor=unconfined"), "{err}");
    assert_eq!(env.ok(&["ps", "-aq"]), "");
}

/// Removes every container of the root at drop, even when the test failed.
struct AllGone<'a>(&'a Env);

impl Drop for AllGone<'_> {
    fn drop(&mut self) {
        self.0.remove_all_containers();
    }
}

#[test]
fn manifest_security_sets_the_profile_and_a_bad_one_is_pointed_at() {
    require_root!();
    let env = Env::new();
    let _c = AllGone(&env);
    env.import(&busybox_tar(), "bb:1");
    let dir = env.dir.path().join("proj");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("deny-mkdir.json"),
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}"#,
    )
    .unwrap();
    let manifest = dir.join("app.toml");
    let write = |free: &str, own: &str| {
        std::fs::write(
            &manifest,
            format!(
                "[containers.free]\nimage = \"bb:1\"\ncommand = [\"sleep\", \"300\"]\n\
                 security = {{ seccomp = \"{free}\" }}\n\n\
                 [containers.own]\nimage = \"bb:1\"\ncommand = [\"sleep\", \"300\"]\n\
                 security = {{ seccomp = \"{own}\", no_new_privileges = true }}\n"
            ),
        )
        .unwrap();
    };
    write("unconfined", "deny-mkdir.json");
    env.ok(&["apply", "-f", s(&manifest)]);
    let status = |name: &str| env.ok(&["exec", name, "grep", "^Seccomp:", "/proc/self/status"]);
    assert_eq!(status("free"), "Seccomp:\t0\n");
    assert_eq!(status("own"), "Seccomp:\t2\n");
    let out = env.run(&["exec", "own", "mkdir", "/x"]);
    assert!(
        common::text(&out.stderr).contains("Permission denied"),
        "the manifest's profile (relative to it) applies: {}",
        common::text(&out.stderr)
    );

    // A missing profile: validate and apply point at the value (file:line:col), touch nothing.
    write("unconfined", "missing.json");
    let err = env.fails(&["validate", "-f", s(&manifest)]);
    assert!(
        err.contains(&format!("{}:9:24", s(&manifest))) && err.contains("missing.json"),
        "{err}"
    );
    let err = env.fails(&["apply", "-f", s(&manifest)]);
    assert!(err.contains("missing.json"), "{err}");
    assert_eq!(status("own"), "Seccomp:\t2\n");
    write("unconfined", "deny-mkdir.json");
    env.ok(&["down", "-t", "1", "-f", s(&manifest)]);
}
