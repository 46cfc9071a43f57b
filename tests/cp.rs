//! `container diff`, `export` and `cp`, as root, with a hostile-symlink set like import's:
//! whatever symlinks a container holds (absolute, relative, climbing, to the host's files),
//! cp resolves them inside the container, never on the host, in both directions, for a
//! stopped container (a private overlay mount) and a running one (its mount namespace).

mod common;
mod import_support;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use import_support::Raw;

use common::{Cleanup, Env, code, json, running_pid, s, setup, text};

/// A container whose write layer holds hostile symlinks, a file, a deletion and a change.
const HOSTILE: &str = "ln -s / /evil; ln -s ../../../../../.. /up; mkdir /d; \
     echo inside > /d/f; ln -s /etc/shadow /d/shadow; ln -s /tmp /d/tmplink; \
     rm /bin/vi; echo changed > /etc/motd";

fn hostile(env: &Env, name: &str) {
    let out = env.run(&["run", "--name", name, "bb:1", "sh", "-c", HOSTILE]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
}

/// A marker name no host file has.
fn marker(env: &Env) -> String {
    format!(
        "wharf-cp-{}",
        env.dir
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
    )
}

#[test]
fn diff_lists_additions_changes_and_deletions() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["changed"]);
    hostile(&env, "changed");
    let out = env.ok(&["container", "diff", "changed"]);
    let lines: Vec<&str> = out.lines().collect();
    for want in [
        "A /d",
        "A /d/f",
        "A /evil",
        "D /bin/vi",
        "C /bin",
        "C /etc",
        "A /etc/motd",
    ] {
        assert!(lines.contains(&want), "{want} in:\n{out}");
    }
    assert!(
        !out.contains(".dockerenv"),
        "the init's own files are no change: {out}"
    );
    let mut sorted = lines.clone();
    sorted.sort_by_key(|l| &l[2..]);
    assert_eq!(lines, sorted, "sorted by path");
    let v = json(&env.ok(&["--format", "json", "container", "diff", "changed"]));
    assert!(
        v.as_array()
            .expect("array")
            .iter()
            .any(|c| c["Kind"] == "D" && c["Path"] == "/bin/vi")
    );
    // `wharf diff` stays the manifest diff.
    assert!(env.fails(&["diff", "changed"]).contains("error"));
}

#[test]
fn export_is_the_merged_rootfs_and_import_reads_it_back() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["exported"]);
    hostile(&env, "exported");
    let tar = env.dir.path().join("exported.tar");
    env.ok(&["export", "-o", s(&tar), "exported"]);
    let list = std::process::Command::new("tar")
        .arg("-tvf")
        .arg(&tar)
        .output()
        .expect("tar");
    let list = text(&list.stdout);
    assert!(list.contains("evil -> /\n"), "symlinks verbatim: {list}");
    assert!(!list.contains("bin/vi\n"), "the deleted file is gone");
    assert!(!list.contains(".wh."), "no whiteouts in an export");
    env.ok(&["import", s(&tar), "exported:1"]);
    let out = env.ok(&[
        "run",
        "--rm",
        "exported:1",
        "sh",
        "-c",
        "cat /d/f /etc/motd; ls /bin/vi || echo novi",
    ]);
    assert_eq!(out, "inside\nchanged\nnovi\n");
    // Nothing stays mounted on the host.
    assert!(
        common::mounts_below(&env.root).is_empty(),
        "{:?}",
        common::mounts_below(&env.root)
    );
}

fn check_copies_out(env: &Env, name: &str) {
    let dest = env.dir.path().join(format!("out-{name}"));
    fs::create_dir(&dest).expect("mkdir");
    // Through an absolute symlink to / and a climbing one: the container's /d, not the host's.
    env.ok(&["cp", &format!("{name}:/evil/d"), s(&dest)]);
    assert_eq!(fs::read_to_string(dest.join("d/f")).expect("f"), "inside\n");
    // Symlinks inside the copy are copied as links, never followed to the host's files.
    let link = fs::symlink_metadata(dest.join("d/shadow")).expect("link");
    assert!(link.file_type().is_symlink());
    assert_eq!(
        fs::read_link(dest.join("d/shadow")).expect("target"),
        Path::new("/etc/shadow")
    );
    env.ok(&[
        "cp",
        &format!("{name}:/up/up/etc/motd"),
        s(&dest.join("motd")),
    ]);
    assert_eq!(
        fs::read_to_string(dest.join("motd")).expect("motd"),
        "changed\n"
    );
    // A symlink as the source: the link itself.
    env.ok(&["cp", &format!("{name}:/evil"), s(&dest.join("evil"))]);
    assert_eq!(
        fs::read_link(dest.join("evil")).expect("link"),
        Path::new("/")
    );
    // Missing: an error naming the path, nothing written.
    let err = env.fails(&["cp", &format!("{name}:/nope/x"), s(&dest.join("x"))]);
    assert!(err.contains("/nope/x"), "{err}");
    assert!(!dest.join("x").exists());
}

fn check_copies_in(env: &Env, name: &str) {
    let m = marker(env);
    let src = env.dir.path().join(&m);
    fs::write(&src, "from host\n").expect("write");
    // Into the container's /tmp through its symlinks, never the host's /tmp.
    for dest in ["/evil/tmp/", "/up/tmp/", "/d/tmplink/"] {
        env.ok(&["cp", s(&src), &format!("{name}:{dest}")]);
    }
    env.ok(&["cp", s(&src), &format!("{name}:/up/../evil/renamed")]);
    assert!(
        !Path::new("/tmp").join(&m).exists(),
        "nothing reached the host's /tmp"
    );
    assert!(
        !Path::new("/renamed").exists(),
        "nothing reached the host's /"
    );
    // Tars on stdin (import's hostile set): an entry climbing out is refused, and so is a
    // file through a symlink entry to /tmp. Nothing reaches the host's /tmp.
    let climbing = Raw::new()
        .file(&format!("../../../../tmp/{m}-climb"), b"x")
        .finish();
    let through_link = Raw::new()
        .symlink("esc", "/tmp")
        .file(&format!("esc/{m}-via-link"), b"y")
        .finish();
    let feed = |tar: &[u8]| {
        let mut child = env
            .wharf()
            .args(["cp", "-", &format!("{name}:/d")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("wharf");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(tar)
            .expect("feed");
        child.wait_with_output().expect("wharf")
    };
    let out = feed(&climbing);
    assert_ne!(code(&out), 0, "a climbing entry is refused");
    assert!(
        text(&out.stderr).contains("refusing"),
        "{}",
        text(&out.stderr)
    );
    // The link resolves inside the destination directory, as import's unpacker treats its
    // root as `/`: there is no /d/tmp, so the entry is refused.
    let out = feed(&through_link);
    assert_ne!(code(&out), 0);
    assert!(
        text(&out.stderr).contains("refusing"),
        "{}",
        text(&out.stderr)
    );
    assert!(!Path::new("/tmp").join(format!("{m}-via-link")).exists());
    assert!(!Path::new("/tmp").join(format!("{m}-climb")).exists());

    // An ordinary `tar -C dir -cf - .`: its `./` entry (the destination's own mode and
    // times) and a hardlink between two of its files.
    let site = env.dir.path().join(format!("site-{name}"));
    fs::create_dir_all(&site).expect("mkdir");
    fs::write(site.join("index.html"), "hello\n").expect("write");
    fs::hard_link(site.join("index.html"), site.join("same.html")).expect("link");
    let tar = std::process::Command::new("tar")
        .arg("-C")
        .arg(&site)
        .args(["-cf", "-", "."])
        .output()
        .expect("tar");
    assert!(tar.status.success());
    let out = feed(&tar.stdout);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let back = env.dir.path().join(format!("back-{name}"));
    fs::create_dir_all(&back).expect("mkdir");
    env.ok(&["cp", &format!("{name}:/d/same.html"), s(&back)]);
    assert_eq!(
        fs::read_to_string(back.join("same.html")).unwrap(),
        "hello\n"
    );
}

#[test]
fn cp_resolves_hostile_symlinks_inside_a_stopped_container() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["stopped"]);
    hostile(&env, "stopped");
    check_copies_out(&env, "stopped");
    check_copies_in(&env, "stopped");
    // What went in is in the container's write layer.
    let m = marker(&env);
    let diff = env.ok(&["container", "diff", "stopped"]);
    assert!(diff.contains(&format!("A /tmp/{m}")), "{diff}");
    assert!(diff.contains("A /renamed"), "{diff}");
    assert!(common::mounts_below(&env.root).is_empty());
}

#[test]
fn cp_resolves_hostile_symlinks_inside_a_running_container() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["live"]);
    let script = format!("{HOSTILE}; trap 'exit 0' TERM; while :; do sleep 0.1; done");
    env.ok(&["run", "-d", "--name", "live", "bb:1", "sh", "-c", &script]);
    running_pid(&env, "live");
    common::wait_until(20, "the script's files", || {
        (code(&env.run(&["exec", "live", "test", "-f", "/etc/motd"])) == 0).then_some(())
    });
    check_copies_out(&env, "live");
    check_copies_in(&env, "live");
    let m = marker(&env);
    // The running container sees the copies at once.
    let out = env.ok(&["exec", "live", "cat", &format!("/tmp/{m}"), "/renamed"]);
    assert_eq!(out, "from host\nfrom host\n");
    // A tar to stdout and back.
    let out = env
        .wharf()
        .args(["cp", "live:/d/f", "-"])
        .output()
        .expect("wharf");
    assert_eq!(code(&out), 0);
    assert!(
        text(&out.stdout).contains("inside"),
        "a tar holding the file"
    );
}

#[test]
fn cp_and_export_work_on_a_container_never_started() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["fresh"]);
    // docker's create, cp, start: the image has one layer and the container no write layer.
    env.ok(&["create", "--name", "fresh", "bb:1", "cat", "/etc/app.conf"]);
    let tar = env.dir.path().join("fresh.tar");
    env.ok(&["export", "-o", s(&tar), "fresh"]);
    assert!(fs::metadata(&tar).expect("export").len() > 0);
    let conf = env.dir.path().join("app.conf");
    fs::write(&conf, "port=80\n").expect("write");
    env.ok(&["cp", s(&conf), "fresh:/etc/"]);
    assert_eq!(env.ok(&["start", "-a", "fresh"]), "port=80\n");
    assert!(common::mounts_below(&env.root).is_empty());
}
