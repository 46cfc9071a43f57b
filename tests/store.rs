//! The state store under stress (issue 2, points 2, 3 and 5): an import killed midway leaves
//! the store as before once it is opened again; live staging survives another process's
//! recovery; concurrent imports and removals keep the database and the layers consistent.

mod common;
mod import_support;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::time::{Duration, Instant};

use common::{Env, busybox_tar, seed_tar};
use import_support::*;

/// Waits (polling) until `cond` holds; panics after 60 s.
fn await_cond(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The `layer` dirs of import staging dirs under `<root>/tmp`.
fn staging_layers(env: &Env) -> Vec<PathBuf> {
    entries(&env.root.join("tmp"))
        .into_iter()
        .filter(|n| n.starts_with("import-") && !n.ends_with(".lock"))
        .map(|n| env.root.join("tmp").join(n).join("layer"))
        .collect()
}

/// A `wharf import -` whose stdin the test feeds by hand. Killed on drop.
struct Feeding {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
}

impl Feeding {
    fn start(env: &Env, reference: &str) -> Feeding {
        let mut child = env
            .wharf()
            .args(["import", "-", reference])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wharf import");
        let stdin = child.stdin.take();
        Feeding {
            child: Some(child),
            stdin,
        }
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("running")
    }

    /// Closes stdin and waits for the import to end.
    fn finish(mut self) -> std::process::Output {
        self.stdin = None;
        self.child
            .take()
            .expect("running")
            .wait_with_output()
            .expect("wait")
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.stdin
            .as_mut()
            .expect("stdin open")
            .write_all(bytes)
            .expect("feed import");
        self.stdin
            .as_mut()
            .expect("stdin open")
            .flush()
            .expect("flush");
    }
}

impl Drop for Feeding {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// First half of a tar: a marker file then a few MB of files, with no end marker.
fn first_half() -> Raw {
    let mut raw = Raw::new();
    raw.file("marker", b"the import has started");
    let blob = vec![0x5au8; 256 * 1024];
    for i in 0..16 {
        raw.file(&format!("data/f{i:03}"), &blob);
    }
    raw
}

fn second_half(raw: &mut Raw) -> Vec<u8> {
    raw.file("zz-last", b"the end");
    raw.finish()
}

#[test]
fn sigkilled_import_leaves_the_store_as_before() {
    require_root!(); // wharf import keeps owners (0:0 here): root only
    let env = Env::new();
    let canary = Canary::new(&env);
    // The store already holds an image; it must be untouched.
    let before = env.import(&busybox_tar(), "before:1");
    let layers_before = entries(&env.root.join("layers"));
    let blobs_before = entries(&env.root.join("blobs/sha256"));

    let mut imp = Feeding::start(&env, "killed:1");
    let mut raw = first_half();
    imp.feed(&raw.buf);
    // Await the unpacker having written into its staging dir: the import is midway.
    await_cond("the staging dir to hold the marker", || {
        staging_layers(&env)
            .iter()
            .any(|l| l.join("marker").is_file())
    });
    imp.child().kill().expect("SIGKILL the import");
    let status = imp.child().wait().expect("wait");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    // Before recovery, the debris is there: the test would prove nothing otherwise.
    assert!(
        !entries(&env.root.join("tmp")).is_empty(),
        "no staging debris to recover"
    );

    // Opening the store (any verb) removes the debris; everything else is as before.
    let q = env.ok(&["images", "-q", "--no-trunc"]);
    assert_eq!(q.trim(), before);
    assert!(
        entries(&env.root.join("tmp")).is_empty(),
        "debris left: {:?}",
        entries(&env.root.join("tmp"))
    );
    assert_eq!(entries(&env.root.join("layers")), layers_before);
    assert_eq!(entries(&env.root.join("blobs/sha256")), blobs_before);
    env.fails(&["image", "inspect", "killed:1"]);
    canary.assert_unchanged(&env);
    let db = rusqlite::Connection::open(env.root.join("wharf.db")).unwrap();
    let ok: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    drop(db);

    // A new import of the same stream works and is complete.
    let tar = second_half(&mut raw);
    let out = import_bytes(&env, &tar, &["killed:1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let layer = env.root.join("layers").join(sha256_hex(&tar));
    assert_eq!(fs::read(layer.join("zz-last")).unwrap(), b"the end");
    assert_eq!(
        fs::metadata(layer.join("data/f015")).unwrap().len(),
        256 * 1024
    );
    assert!(entries(&env.root.join("tmp")).is_empty());
}

#[test]
fn recovery_by_another_process_keeps_a_live_import() {
    require_root!(); // wharf import keeps owners (0:0 here): root only
    let env = Env::new();
    let mut imp = Feeding::start(&env, "live:1");
    let mut raw = first_half();
    imp.feed(&raw.buf);
    await_cond("the staging dir to hold the marker", || {
        staging_layers(&env)
            .iter()
            .any(|l| l.join("marker").is_file())
    });
    let staging = staging_layers(&env);
    // Another wharf opens the store (and runs recovery) while the import is running.
    env.ok(&["images"]);
    assert!(
        staging[0].join("marker").is_file(),
        "recovery removed a live import's staging dir"
    );
    let fed = raw.buf.len();
    let tar = second_half(&mut raw);
    imp.feed(&tar[fed..]);
    let out = imp.finish();
    assert!(out.status.success(), "{}", stderr(&out));
    let layer = env.root.join("layers").join(sha256_hex(&tar));
    assert_eq!(fs::read(layer.join("zz-last")).unwrap(), b"the end");
    assert!(entries(&env.root.join("tmp")).is_empty());
}

/// Spawns `wharf import FILE REF` for each pair at once; asserts each succeeded.
fn import_all_at_once(env: &Env, jobs: &[(&Path, &str)]) -> Vec<String> {
    let children: Vec<Child> = jobs
        .iter()
        .map(|(file, r)| {
            env.wharf()
                .args(["import", file.to_str().unwrap(), r])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .zip(jobs)
        .map(|(c, (_, r))| {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "import {r} failed: {}", stderr(&out));
            stdout(&out).trim().to_string()
        })
        .collect()
}

fn assert_db_consistent(env: &Env) {
    let db = rusqlite::Connection::open(env.root.join("wharf.db")).unwrap();
    let ok: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let fk: i64 = db
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(fk, 0, "foreign key violations");
    // Every recorded layer has its dir, and every layer dir is recorded.
    let mut stmt = db
        .prepare("SELECT diff_id FROM layers ORDER BY diff_id")
        .unwrap();
    let recorded: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(recorded, entries(&env.root.join("layers")));
    // Every image has its config blob.
    let mut stmt = db.prepare("SELECT id FROM images ORDER BY id").unwrap();
    let images: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(images, entries(&env.root.join("blobs/sha256")));
}

#[test]
fn concurrent_imports_into_one_root_all_succeed() {
    require_root!(); // wharf import keeps owners (0:0 here): root only
    let env = Env::new();
    let bb = busybox_tar();
    let seed = seed_tar();
    // A fresh root: the processes also race to create and migrate the store.
    let ids = import_all_at_once(
        &env,
        &[
            (&bb, "bb:1"),
            (&seed, "seed:1"),
            (&bb, "bb:2"),
            (&seed, "seed:2"),
        ],
    );
    assert!(
        ids.iter()
            .all(|i| i.starts_with("sha256:") && i.len() == 71),
        "{ids:?}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["images", "--format", "json"])).unwrap();
    let mut tags: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}:{}",
                r["Repository"].as_str().unwrap(),
                r["Tag"].as_str().unwrap()
            )
        })
        .collect();
    tags.sort();
    assert_eq!(tags, ["bb:1", "bb:2", "seed:1", "seed:2"]);
    let mut diffs = vec![
        sha256_hex(&fs::read(&bb).unwrap()),
        sha256_hex(&fs::read(&seed).unwrap()),
    ];
    diffs.sort();
    assert_eq!(
        entries(&env.root.join("layers")),
        diffs,
        "one layer per distinct tar"
    );
    assert!(entries(&env.root.join("tmp")).is_empty());
    assert_db_consistent(&env);
    assert!(env.root.join("layers").join(&diffs[0]).join("bin").is_dir());
}

#[test]
fn removal_racing_an_import_of_the_same_layer_keeps_what_is_used() {
    require_root!(); // wharf import keeps owners (0:0 here): root only
    let env = Env::new();
    let bb = busybox_tar();
    let diff = sha256_hex(&fs::read(&bb).unwrap());
    for round in 0..3 {
        env.import(&bb, "old:1");
        let rmi = env
            .wharf()
            .args(["rmi", "old:1"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let new = format!("new:{round}");
        import_all_at_once(&env, &[(&bb, &new)]);
        let out = rmi.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        // Whatever the order, new:N is whole: its layer is recorded and on disk.
        let layer = env.root.join("layers").join(&diff);
        assert!(
            layer.join("bin/busybox").is_file(),
            "round {round}: layer of new:{round} gone"
        );
        env.fails(&["image", "inspect", "old:1"]);
        assert_db_consistent(&env);
        env.ok(&["rmi", &new]);
        assert!(!layer.exists());
    }
    assert_store_empty(&env);
}

#[test]
fn many_processes_opening_a_fresh_root_at_once() {
    let env = Env::new();
    let children: Vec<Child> = (0..6)
        .map(|_| {
            env.wharf()
                .args(["images", "-q"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let db = rusqlite::Connection::open(env.root.join("wharf.db")).unwrap();
    let v: i64 = db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert!(v >= 1, "schema not migrated");
    let mode: String = db
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert_store_empty(&env);
}

#[test]
fn unrecorded_layer_dir_and_blob_are_debris() {
    require_root!(); // wharf import keeps owners (0:0 here): root only
    // What a crash between moving a layer in and committing its image leaves.
    let env = Env::new();
    env.import(&busybox_tar(), "keep:1");
    let fake = env.root.join("layers").join("f".repeat(64));
    fs::create_dir_all(fake.join("etc")).unwrap();
    fs::write(fake.join("etc/x"), b"x").unwrap();
    fs::create_dir_all(env.root.join("tmp/import-deadbeef/layer/usr")).unwrap();
    // ... and a config blob written by an import killed before its commit.
    let blob = env.root.join("blobs/sha256").join("e".repeat(64));
    fs::write(&blob, b"{}").unwrap();
    env.ok(&["images"]);
    assert!(!fake.exists());
    assert!(!blob.exists(), "unrecorded config blob left");
    assert!(entries(&env.root.join("tmp")).is_empty());
    assert_eq!(entries(&env.root.join("layers")).len(), 1);
    assert_db_consistent(&env);
}
