//! Issue 11, point 5: manifests from untrusted places. The attacker is `nobody` with write
//! access somewhere on the manifest's path (a world-writable watch directory, a file it
//! owns, a symlink it planted), or a manifest that points an `env_file` at a secret; and
//! special files (/dev/zero, a FIFO, a huge file) given as manifests.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The secret: a line shaped like /etc/shadow's (our own file; the real one is never read).
const SECRET: &str = "HASHSECRETxyz";

fn secret_file(dir: &Path) -> PathBuf {
    let p = dir.join("shadow");
    fs::write(
        &p,
        format!("root:$6${SECRET}$abcdefgh:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"),
    )
    .expect("write secret");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).expect("chmod");
    p
}

/// A manifest declaring `evil`, a container that bind-mounts the host's `/`.
fn evil_manifest() -> String {
    format!("[containers.evil]\nimage = \"bb:1\"\ncommand = {SLEEPER}\nvolumes = [\"/:/host\"]\n")
}

/// Writes `body` to `path` as uid/gid 65534 (the file is nobody's).
fn write_as_nobody(path: &Path, body: &str) {
    let st = Command::new("sh")
        .arg("-c")
        .arg("cat > \"$1\"")
        .arg("sh")
        .arg(path)
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("stdin").write_all(body.as_bytes())?;
            c.wait()
        })
        .expect("write as nobody");
    assert!(st.success(), "nobody could not write {}", path.display());
}

fn has_container(env: &Env, name: &str) -> bool {
    env.run(&["inspect", name]).status.success()
}

/// Runs wharf `args` and kills it if it has not finished within 20 s (a blocked or runaway
/// read fails the test instead of hanging it).
fn run_bounded(env: &Env, args: &[&str]) -> (bool, String, String) {
    let dir = env.dir.path();
    let n = fs::read_dir(dir).map_or(0, |d| d.count());
    let (out, err) = (dir.join(format!("o{n}")), dir.join(format!("e{n}")));
    let mut child = env
        .wharf()
        .args(args)
        .stdout(fs::File::create(&out).expect("create"))
        .stderr(fs::File::create(&err).expect("create"))
        .spawn()
        .expect("spawn wharf");
    let deadline = Instant::now() + Duration::from_secs(20);
    let st = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("wharf {args:?} did not finish within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        st.success(),
        fs::read_to_string(&out).unwrap_or_default(),
        fs::read_to_string(&err).unwrap_or_default(),
    )
}

#[test]
fn a_world_writable_watch_dir_does_not_let_nobody_run_a_root_container() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["evil"]);
    let dir = env.dir.path().join("manifests");
    fs::create_dir(&dir).expect("mkdir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).expect("chmod");
    write_as_nobody(&dir.join("evil.toml"), &evil_manifest());

    // watch: reports the directory and converges nothing.
    let err_path = env.dir.path().join("watch.err");
    let watch = KillOnDrop(
        env.wharf()
            .args(["watch", "--resync", "1h", s(&dir)])
            .stdout(Stdio::null())
            .stderr(fs::File::create(&err_path).expect("create"))
            .spawn()
            .expect("spawn watch"),
    );
    let err = wait_until(20, "the watch to refuse the directory", || {
        let e = fs::read_to_string(&err_path).unwrap_or_default();
        e.contains("writable by everyone").then_some(e)
    });
    drop(watch);
    assert!(err.contains(s(&dir)), "the directory is not named: {err}");
    assert!(
        err.contains("--insecure-manifests"),
        "no way out given: {err}"
    );
    assert!(
        !has_container(&env, "evil"),
        "nobody's manifest made a container"
    );

    // apply, diff, validate and down refuse it the same way.
    for verb in ["apply", "diff", "validate", "down"] {
        let e = env.fails(&[verb, "-f", s(&dir)]);
        assert!(e.contains("writable by everyone"), "{verb}: {e}");
    }
    assert!(!has_container(&env, "evil"));

    // The directory closed, the file is still nobody's: refused by its owner.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    let e = env.fails(&["apply", "-f", s(&dir)]);
    assert!(e.contains("owned by uid 65534"), "{e}");
    assert!(!has_container(&env, "evil"));

    // --insecure-manifests is the explicit override (validate only: nothing runs).
    let out = env.ok(&["validate", "--insecure-manifests", "-f", s(&dir)]);
    assert!(out.contains("evil") || out.contains("valid"), "{out}");
}

#[test]
fn a_symlink_planted_by_nobody_and_an_open_parent_are_refused() {
    require_root!();
    let env = setup();
    let open = env.dir.path().join("open");
    fs::create_dir(&open).expect("mkdir");
    // Below a directory nobody owns, our own manifest is still refused: nobody can swap it.
    let nobody_dir = open.join("nobody-owns");
    fs::create_dir(&nobody_dir).expect("mkdir");
    std::os::unix::fs::chown(&nobody_dir, Some(65534), Some(65534)).expect("chown");
    let sub = nobody_dir.join("sub");
    fs::create_dir(&sub).expect("mkdir");
    fs::write(sub.join("app.toml"), "").expect("write");
    let e = env.fails(&["validate", "-f", s(&sub.join("app.toml"))]);
    assert!(e.contains("owned by uid 65534"), "{e}");

    // A symlink to a secret file, made by nobody: refused, the secret not shown.
    let safe = env.dir.path().join("safe");
    fs::create_dir(&safe).expect("mkdir");
    let secret = secret_file(&safe);
    let link = safe.join("app.toml");
    std::os::unix::fs::symlink(&secret, &link).expect("symlink");
    std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).expect("lchown");
    let (ok, out, err) = run_bounded(&env, &["apply", "-f", s(&link)]);
    assert!(!ok);
    assert!(err.contains("symlink") && err.contains("65534"), "{err}");
    assert!(!out.contains(SECRET) && !err.contains(SECRET), "{out}{err}");
}

#[test]
fn an_env_file_that_is_a_secret_is_named_never_shown() {
    require_root!();
    let env = setup();
    let dir = env.dir.path().join("proj");
    fs::create_dir(&dir).expect("mkdir");
    let secret = secret_file(&dir);
    let m = dir.join("app.toml");
    fs::write(
        &m,
        format!(
            "[containers.app]\nimage = \"bb:1\"\ncommand = {SLEEPER}\nenv_file = \"{}\"\n",
            s(&secret)
        ),
    )
    .expect("write");
    for args in [
        vec!["validate", "-f", s(&m)],
        vec!["--format", "json", "validate", "-f", s(&m)],
        vec!["apply", "-f", s(&m)],
        vec!["diff", "-f", s(&m)],
    ] {
        let (ok, out, err) = run_bounded(&env, &args);
        assert!(!ok, "{args:?} accepted a shadow file as env file");
        let all = format!("{out}{err}");
        assert!(!all.contains(SECRET), "{args:?} echoed the secret:\n{all}");
        assert!(!all.contains("root:"), "{args:?} echoed a line:\n{all}");
        // It names the file, the line and the reason.
        assert!(all.contains(s(&secret)), "{args:?}: {all}");
        if args[0] != "--format" {
            assert!(all.contains("line 1"), "{args:?}: {all}");
            assert!(all.contains("expected KEY=VALUE"), "{args:?}: {all}");
        }
    }
    assert!(!has_container(&env, "app"));
    // Nothing was stored either: the database and its WAL do not hold it.
    for f in ["wharf.db", "wharf.db-wal"] {
        let bytes = fs::read(env.root.join(f)).unwrap_or_default();
        assert!(
            !text(&bytes).contains(SECRET),
            "{f} holds the secret after a refused apply"
        );
    }
}

#[test]
fn dev_zero_a_fifo_and_a_huge_manifest_are_refused_at_once() {
    require_root!();
    let env = Env::new();
    // /dev/zero grew validate to 6.6 GB: now a refusal, not a read.
    let (ok, _, err) = run_bounded(&env, &["validate", "-f", "/dev/zero"]);
    assert!(!ok);
    assert!(err.contains("not a regular file"), "{err}");
    assert!(err.contains("character device"), "{err}");

    // A FIFO nobody writes to would block the open: refused without blocking.
    let dir = env.dir.path().join("m");
    fs::create_dir(&dir).expect("mkdir");
    let fifo = dir.join("app.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let (ok, _, err) = run_bounded(&env, &["validate", "-f", s(&fifo)]);
    assert!(!ok);
    assert!(err.contains("FIFO"), "{err}");
    let (ok, _, err) = run_bounded(&env, &["apply", "-f", s(&fifo)]);
    assert!(!ok);
    assert!(err.contains("FIFO"), "{err}");

    // A manifest over 4 MiB (a comment, so it would otherwise be valid).
    let big = dir.join("big.toml");
    fs::write(&big, "#".repeat((4 << 20) + 1)).expect("write");
    let (ok, _, err) = run_bounded(&env, &["validate", "-f", s(&big)]);
    assert!(!ok);
    assert!(err.contains("larger than 4 MiB"), "{err}");
    fs::write(&big, "#".repeat(4 << 20)).expect("write");
    let (ok, _, err) = run_bounded(&env, &["validate", "-f", s(&big)]);
    assert!(ok, "a 4 MiB manifest is allowed: {err}");
}

#[test]
fn a_secret_given_as_a_tarball_is_not_quoted_in_the_error() {
    require_root!();
    let env = Env::new();
    let dir = env.dir.path().join("t");
    fs::create_dir(&dir).expect("mkdir");
    // Long enough for a tar header (512 bytes): the parser reads its name and checksum.
    let secret = dir.join("secret.tar");
    fs::write(
        &secret,
        format!("{SECRET}{}\n", "-not-a-tar-header".repeat(40)),
    )
    .expect("write");
    let e = env.fails(&["import", s(&secret), "x:1"]);
    assert!(e.contains("corrupt"), "{e}");
    assert!(!e.contains(SECRET), "the error quotes the file: {e}");
    // The same through a manifest's image source.
    let m = dir.join("app.toml");
    fs::write(
        &m,
        "[images.x]\nsource = \"secret.tar\"\ntag = \"x:1\"\n[containers.app]\nimage = \"x:1\"\ncommand = [\"true\"]\n",
    )
    .expect("write");
    let (ok, out, err) = run_bounded(&env, &["apply", "-f", s(&m)]);
    assert!(!ok);
    assert!(!out.contains(SECRET) && !err.contains(SECRET), "{out}{err}");
    let bytes = fs::read(env.root.join("wharf.db-wal")).unwrap_or_default();
    let db = fs::read(env.root.join("wharf.db")).unwrap_or_default();
    assert!(
        !text(&bytes).contains(SECRET) && !text(&db).contains(SECRET),
        "the journal holds the secret"
    );
}
