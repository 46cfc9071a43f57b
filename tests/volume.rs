//! Volumes end to end, as root: create/ls/inspect/rm, refusal while in use, volumes outliving
//! their containers, anonymous volumes and `rm -v`.

mod common;

use std::fs;

use common::{Cleanup, Env, json, setup};

fn names(env: &Env, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["volume", "ls", "-q"];
    args.extend_from_slice(extra);
    env.ok(&args).lines().map(str::to_string).collect()
}

/// The volumes a container's config mounts: (source, anonymous).
fn mounts(env: &Env, name: &str) -> Vec<(String, bool)> {
    let v = json(&env.ok(&["inspect", name]));
    v[0]["Config"]["volumes"]
        .as_array()
        .expect("volumes array")
        .iter()
        .map(|m| {
            (
                m["source"].as_str().unwrap_or_default().to_string(),
                m["anonymous"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

#[test]
fn lifecycle_create_ls_filter_inspect_rm() {
    require_root!();
    let env = Env::new();
    assert_eq!(
        env.ok(&["volume", "create", "--label", "env=ci", "web"]),
        "web\n"
    );
    // idempotent with the same labels, refused with other labels
    assert_eq!(
        env.ok(&["volume", "create", "--label", "env=ci", "web"]),
        "web\n"
    );
    let err = env.fails(&["volume", "create", "web"]);
    assert!(err.contains("already exists"), "{err}");
    env.ok(&["volume", "create", "db"]);
    let generated = env.ok(&["volume", "create"]).trim().to_string();
    assert_eq!(generated.len(), 64);
    assert!(generated.bytes().all(|b| b.is_ascii_hexdigit()));

    let err = env.fails(&["volume", "create", "../evil"]);
    assert!(err.contains("invalid volume name"), "{err}");
    assert!(!env.root.join("evil").exists());

    let mut all = names(&env, &[]);
    all.sort();
    let mut want = vec!["db".to_string(), "web".to_string(), generated.clone()];
    want.sort();
    assert_eq!(all, want);
    assert_eq!(names(&env, &["--filter", "label=env=ci"]), ["web"]);
    assert_eq!(names(&env, &["--filter", "name=we"]), ["web"]);
    assert!(!names(&env, &["--filter", "label!=env"]).contains(&"web".to_string()));
    assert_eq!(names(&env, &["--filter", "dangling=true"]).len(), 3);
    let err = env.fails(&["volume", "ls", "--filter", "until=1h"]);
    assert!(err.contains("unknown key \"until\""), "{err}");
    assert!(err.contains("name, label, label!, dangling"), "{err}");

    let table = env.ok(&["volume", "ls"]);
    assert!(table.starts_with("DRIVER"), "{table}");

    let v = json(&env.ok(&["volume", "inspect", "web"]));
    assert_eq!(v[0]["Name"], "web");
    assert_eq!(v[0]["Labels"]["env"], "ci");
    let mp = v[0]["Mountpoint"].as_str().expect("mountpoint");
    assert_eq!(std::path::Path::new(mp), env.root.join("volumes/web/_data"));
    assert!(env.root.join("volumes/web/_data").is_dir());

    assert_eq!(env.ok(&["volume", "rm", "web", "db"]), "web\ndb\n");
    assert!(!env.root.join("volumes/web").exists());
    let err = env.fails(&["volume", "rm", "web"]);
    assert!(err.contains("no such volume: web"), "{err}");
    env.ok(&["volume", "rm", "-f", "web"]);
    assert_eq!(names(&env, &[]), [generated]);
    // nothing left behind in staging
    assert!(env.tree("tmp").is_empty(), "{:?}", env.tree("tmp"));
}

#[test]
fn a_volume_in_use_is_refused_and_outlives_its_container() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["writer", "reader", "sleeper"]);
    env.ok(&[
        "run",
        "--name",
        "writer",
        "-v",
        "data:/data",
        "bb:1",
        "sh",
        "-c",
        "echo kept > /data/f",
    ]);
    // exited, still in use: refused, naming the container, even with -f (as docker does)
    for args in [
        &["volume", "rm", "data"][..],
        &["volume", "rm", "-f", "data"],
    ] {
        let err = env.fails(args);
        assert!(
            err.contains("volume data is in use by container writer"),
            "{err}"
        );
        assert!(err.contains("hint:"), "{err}");
    }
    assert!(env.root.join("volumes/data/_data/f").exists());

    // a running container's volume is refused too
    env.ok(&[
        "run", "-d", "--name", "sleeper", "-v", "busy:/b", "bb:1", "sleep", "60",
    ]);
    let err = env.fails(&["volume", "rm", "busy"]);
    assert!(err.contains("in use by container sleeper"), "{err}");
    env.ok(&["rm", "-f", "sleeper"]);

    // the volume outlives its container, and a new one sees the data
    env.ok(&["rm", "writer"]);
    assert_eq!(
        fs::read_to_string(env.root.join("volumes/data/_data/f")).unwrap_or_default(),
        "kept\n"
    );
    let out = env.ok(&["run", "--rm", "-v", "data:/x", "bb:1", "cat", "/x/f"]);
    assert_eq!(out, "kept\n");
    env.ok(&["volume", "rm", "data", "busy"]);
    assert!(names(&env, &[]).is_empty());
}

#[test]
fn rm_v_removes_anonymous_volumes_and_keeps_named_ones() {
    require_root!();
    let env = setup();
    let _c = Cleanup::new(&env, &["c1", "c2"]);
    env.ok(&[
        "run",
        "--name",
        "c1",
        "-v",
        "named:/n",
        "-v",
        "/anon",
        "bb:1",
        "sh",
        "-c",
        "echo a > /anon/f; echo n > /n/f",
    ]);
    let m = mounts(&env, "c1");
    let anon: Vec<&String> = m.iter().filter(|(_, a)| *a).map(|(s, _)| s).collect();
    assert_eq!(anon.len(), 1, "{m:?}");
    let anon = anon[0].clone();
    assert_eq!(anon.len(), 64);
    assert_eq!(
        fs::read_to_string(env.root.join("volumes").join(&anon).join("_data/f"))
            .unwrap_or_default(),
        "a\n"
    );
    let v = json(&env.ok(&["volume", "inspect", &anon]));
    assert_eq!(v[0]["Anonymous"], true);
    assert_eq!(
        names(&env, &["--filter", "label=com.docker.volume.anonymous"]),
        std::slice::from_ref(&anon)
    );

    // plain rm keeps every volume
    env.ok(&["run", "--name", "c2", "-v", "/anon2", "bb:1", "true"]);
    let anon2 = mounts(&env, "c2")[0].0.clone();
    env.ok(&["rm", "c2"]);
    assert!(names(&env, &[]).contains(&anon2));

    env.ok(&["rm", "-v", "c1"]);
    let left = names(&env, &[]);
    assert!(
        !left.contains(&anon),
        "rm -v kept the anonymous volume: {left:?}"
    );
    assert!(!env.root.join("volumes").join(&anon).exists());
    assert!(
        left.contains(&"named".to_string()),
        "rm -v removed a named volume"
    );
    assert_eq!(
        fs::read_to_string(env.root.join("volumes/named/_data/f")).unwrap_or_default(),
        "n\n"
    );

    // --rm removes the anonymous volumes of its container, as docker does
    let before = names(&env, &[]);
    env.ok(&[
        "run",
        "--rm",
        "-v",
        "/scratch",
        "bb:1",
        "touch",
        "/scratch/x",
    ]);
    assert_eq!(names(&env, &[]), before);
}

/// Kills its child when dropped (a test that fails mid-way leaves no paused wharf behind).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `volume rm NAME` stopped at `point` (a debug-build hook) and kills it there.
fn rm_killed_at(env: &Env, name: &str, point: &str) {
    let err = env.dir.path().join(format!("rm-{name}.err"));
    let child = env
        .wharf()
        .args(["volume", "rm", name])
        .env("WHARF_TEST_VOLUME_RM_PAUSE", point)
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("spawn volume rm");
    let _kill = KillOnDrop(child);
    common::wait_until(30, "volume rm to pause", || {
        fs::read_to_string(&err)
            .is_ok_and(|s| s.contains(&format!("paused {point}")))
            .then_some(())
    });
}

#[test]
fn a_volume_rm_killed_midway_loses_no_data() {
    require_root!();
    let env = Env::new();
    let data = |v: &str| env.root.join("volumes").join(v).join("_data");
    for v in ["kept", "gone", "other"] {
        env.ok(&["volume", "create", v]);
        fs::write(data(v).join("file"), v).expect("write into the volume");
    }
    // Killed before its commit: the volume is whole, row and data, through the recovery
    // the next command runs (the kill left the store lock's mark).
    rm_killed_at(&env, "kept", "marked");
    assert!(names(&env, &[]).contains(&"kept".to_string()));
    assert_eq!(
        fs::read_to_string(data("kept").join("file")).unwrap(),
        "kept"
    );
    env.ok(&["volume", "inspect", "kept"]);
    assert_eq!(
        fs::read_to_string(data("kept").join("file")).unwrap(),
        "kept"
    );

    // Killed after it: removed, and its data does not come back under its name.
    rm_killed_at(&env, "gone", "committed");
    assert!(!names(&env, &[]).contains(&"gone".to_string()));
    env.ok(&["volume", "create", "gone"]);
    assert!(data("gone").is_dir());
    assert_eq!(
        fs::read_dir(data("gone")).unwrap().count(),
        0,
        "a fresh volume"
    );

    // What a removal cut short after its commit left, the next removal clears.
    rm_killed_at(&env, "other", "committed");
    assert!(env.root.join("volumes/other").exists());
    env.ok(&["volume", "rm", "kept"]);
    assert!(!env.root.join("volumes/other").exists());
    assert!(!env.root.join("volumes/kept").exists());
    let mut left = names(&env, &[]);
    left.sort();
    assert_eq!(left, ["gone"]);
    let debris: Vec<_> = fs::read_dir(env.root.join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(debris.is_empty(), "{debris:?}");
}
