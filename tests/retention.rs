//! Retention over a scripted history (root): four version bumps of one declared container
//! under a manifest `[retention]`, then `system prune --policy` with a root config.toml for
//! `wharf run` containers, unused images and the journal. Asserts exactly what is kept,
//! including the protected cases: the running container, an image a container uses, the
//! image a rollback needs, the current generation, and open runs.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use common::{Env, SLEEPER, s, versioned_busybox};

struct T {
    env: Env,
    dir: PathBuf,
}

impl T {
    fn new(versions: &[u32]) -> T {
        let env = Env::new();
        let dir = env.dir.path().join("m");
        fs::create_dir_all(&dir).expect("mkdir");
        for v in versions {
            versioned_busybox(&env, &dir.join(format!("app-{v}.tar")), &v.to_string());
        }
        T { env, dir }
    }

    fn manifest(&self, v: u32) -> PathBuf {
        let p = self.dir.join("app.toml");
        fs::write(
            &p,
            format!(
                "project = \"ret\"\n\n[images.app]\nsource = \"app-{v}.tar\"\ntag = \"app:{v}\"\n\
                 env = {{ PATH = \"/bin\" }}\n\n[containers.app]\nimage = \"app:{v}\"\ncommand = {SLEEPER}\n\n\
                 [retention.images]\nkeep = 1\n\n[retention.containers]\nkeep_exited = 1\n\n\
                 [retention.journal]\nmax_entries = 2\n"
            ),
        )
        .expect("write manifest");
        p
    }

    fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.env.root.join("wharf.db")).expect("open db")
    }

    fn strings(&self, sql: &str) -> BTreeSet<String> {
        let db = self.db();
        let mut st = db.prepare(sql).expect("prepare");
        st.query_map([], |r| r.get::<_, String>(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    fn ints(&self, sql: &str) -> Vec<i64> {
        let db = self.db();
        let mut st = db.prepare(sql).expect("prepare");
        st.query_map([], |r| r.get::<_, i64>(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    fn tags(&self) -> BTreeSet<String> {
        self.strings("SELECT repo || ':' || tag FROM tags")
    }
}

impl Drop for T {
    fn drop(&mut self) {
        self.env.remove_all_containers();
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn retention_keeps_exactly_what_the_policies_say() {
    require_root!();
    let t = T::new(&[1, 2, 3, 4]);
    let m = t.manifest(1);
    t.env.ok(&["apply", "-q", "-t", "5", "-f", s(&m)]);
    // A `wharf run` container that uses app:1 (created, never started): it protects app:1.
    t.env.ok(&["create", "--name", "pinned", "app:1", "true"]);
    let other = t.env.import(&common::busybox_tar(), "other:1");
    for v in 2..=4 {
        t.manifest(v);
        let out = t.env.run(&["apply", "-q", "-t", "5", "-f", s(&m)]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if v == 3 {
            // The first removals show on stderr with their reasons.
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("retention: removed generation ret/app generation 1"),
                "{err}"
            );
        }
    }

    // Images (keep = 1 of repository app): app:4 is the newest and runs; app:3 is what a
    // rollback needs; app:1 is used by `pinned`; app:2 goes. other:1 is not the project's.
    assert_eq!(t.tags(), set(&["app:1", "app:3", "app:4", "other:1"]));
    // Generations (keep_exited = 1): 4 is current, 3 the rollback target; 1 and 2 go.
    assert_eq!(
        t.ints("SELECT seq FROM generations WHERE project = 'ret' ORDER BY seq"),
        vec![3, 4]
    );
    // Applies (max_entries = 2 besides the one evaluating): 1 goes.
    assert_eq!(
        t.ints("SELECT id FROM applies WHERE project = 'ret' ORDER BY id"),
        vec![2, 3, 4]
    );
    // Every removal is journaled with its reason.
    let log = t.strings("SELECT kind || ' ' || detail || ': ' || reason FROM retention_log");
    assert!(
        log.iter().any(|l| l.starts_with("image ")
            && l.contains("app:2")
            && l.contains("older than the newest 1 of app")),
        "{log:?}"
    );
    assert_eq!(
        t.ints("SELECT count(*) FROM retention_log WHERE kind = 'generation'"),
        vec![2]
    );
    let shown = t.env.ok(&["history", "--retention"]);
    assert!(
        shown.contains("ret") && shown.contains("generation 1") && shown.contains("app:2"),
        "{shown}"
    );
    // The rollback still works after retention.
    t.env.ok(&["rollback", "-t", "5", "app"]);
    let img: BTreeSet<String> =
        t.strings("SELECT t.tag FROM containers c JOIN tags t ON t.image_id = c.image_id WHERE c.name = 'app'");
    assert_eq!(img, set(&["3"]));

    // The root config governs `wharf run` containers, every image, and the rest of the journal.
    for n in ["r1", "r2", "r3"] {
        t.env.ok(&["run", "--name", n, "app:4", "true"]);
    }
    t.env
        .ok(&["run", "-d", "--name", "live", "app:4", "sleep", "60"]);
    t.env.write_config("[retention.containers]\nmax_age = \"1ms\"\n\n[retention.images]\nunused_for = \"1ms\"\n\n\
         [retention.journal]\nmax_entries = 1\n",
    )
    .expect("config");
    // It lists what goes and asks; without a terminal it refuses and removes nothing.
    let out = t.env.run(&["system", "prune", "--policy"]);
    assert!(!out.status.success());
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("config.toml:") && listing.contains("r1"),
        "{listing}"
    );
    assert!(listing.contains("exited more than 1ms ago"), "{listing}");
    assert!(
        !listing.contains("live"),
        "a running container is listed: {listing}"
    );
    assert!(t.strings("SELECT name FROM containers").contains("r1"));

    let out = t.env.ok(&["system", "prune", "--policy", "-f"]);
    assert!(out.contains("objects removed"), "{out}");
    // Containers: the exited run containers and `pinned` go; the running one and the
    // project's stay.
    assert_eq!(
        t.strings("SELECT name FROM containers"),
        set(&["app", "live"])
    );
    // Images: other:1 (unused) goes; app:1 was still used by `pinned` when the policy was
    // evaluated, so it stays until the next evaluation; the project's references stay.
    let ids = t.strings("SELECT id FROM images");
    assert!(
        !ids.contains(other.trim_start_matches("sha256:")),
        "{ids:?}"
    );
    assert_eq!(t.tags(), set(&["app:1", "app:3", "app:4"]));
    // Runs of `wharf run` containers: the newest finished one (r3) and the open run of `live`.
    assert_eq!(
        t.strings("SELECT container_name FROM runs WHERE container_name != 'app'"),
        set(&["live", "r3"])
    );
    // The project's recorded policy ran too: after the rollback (generation 5, app:3), the
    // rollback target is generation 4, so generation 3 is beyond keep_exited = 1.
    assert_eq!(
        t.ints("SELECT seq FROM generations WHERE project = 'ret' ORDER BY seq"),
        vec![4, 5]
    );
    // A second evaluation takes app:1, now unused; the project's images stay.
    t.env.ok(&["system", "prune", "--policy", "-f"]);
    assert_eq!(t.tags(), set(&["app:3", "app:4"]));
    // Generation 3's run left the project's journal with its generation: the root policy
    // (newest 1 finished run) now takes it.
    let finished = t.ints(
        "SELECT count(*) FROM runs WHERE finished_at IS NOT NULL AND container_id NOT IN (SELECT container_id FROM generations)",
    );
    assert_eq!(finished, vec![1]);
    let again = t.env.ok(&["system", "prune", "--policy", "-f"]);
    assert!(again.contains("Nothing to remove"), "{again}");
}

#[test]
fn runs_of_a_downed_project_fall_under_the_root_journal_policy() {
    require_root!();
    let t = T::new(&[1, 2]);
    let m = t.manifest(1);
    t.env.ok(&["apply", "-q", "-t", "5", "-f", s(&m)]);
    t.manifest(2);
    t.env.ok(&["apply", "-q", "-t", "5", "-f", s(&m)]);
    t.env.ok(&["down", "-t", "5", "-f", s(&m)]);
    let finished = "SELECT count(*) FROM runs WHERE finished_at IS NOT NULL";
    assert_eq!(
        t.ints(finished),
        vec![2],
        "a run per generation, both ended"
    );
    assert_eq!(
        t.ints("SELECT count(*) FROM project_policies"),
        vec![0],
        "down forgot the project's policy"
    );
    t.env
        .write_config("[retention.journal]\nmax_entries = 1\n")
        .expect("config");
    let out = t.env.ok(&["system", "prune", "--policy", "-f"]);
    assert!(
        out.contains("objects removed") || out.contains("object removed"),
        "{out}"
    );
    assert_eq!(
        t.ints(finished),
        vec![1],
        "the root policy keeps the newest 1"
    );
    let log = t.strings("SELECT kind FROM retention_log");
    assert!(log.contains("run"), "{log:?}");
}

#[test]
fn a_bad_root_config_is_refused_with_its_position() {
    require_root!();
    let env = Env::new();
    env.ok(&["images"]);
    env.write_config("[retention.images]\nkeep = 3\nkeeep = 4\n")
        .expect("config");
    let err = env.fails(&["system", "prune", "--policy", "-f"]);
    assert!(err.contains("config.toml:3:1"), "{err}");
    assert!(err.contains("keeep"), "{err}");
    assert!(err.contains("hint:"), "{err}");
}

#[test]
fn log_rotation_follows_the_root_config() {
    require_root!();
    let env = Env::new();
    env.import(&common::busybox_tar(), "bb:1");
    env.write_config("[retention.logs]\nmax_size = \"2KiB\"\nmax_files = 3\n")
        .expect("config");
    let id = env
        .ok(&[
            "run",
            "-d",
            "--name",
            "chatty",
            "bb:1",
            "sh",
            "-c",
            "i=0; while [ $i -lt 300 ]; do echo line $i; i=$((i+1)); done",
        ])
        .trim()
        .to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let v: serde_json::Value =
            serde_json::from_str(&env.ok(&["inspect", "chatty"])).expect("inspect json");
        let st = v[0]["State"]["Status"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if st == "exited" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "chatty did not exit: {st}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let log = env.root.join("containers").join(&id).join("log.json");
    let rotated = |n: u32| PathBuf::from(format!("{}.{n}", log.display()));
    assert!(log.exists() && rotated(1).exists() && rotated(2).exists());
    assert!(!rotated(3).exists(), "more than max_files files");
    for f in [log.clone(), rotated(1), rotated(2)] {
        assert!(
            fs::metadata(&f).expect("stat").len() <= 2048,
            "{}",
            f.display()
        );
    }
    // `logs` reads across the files, oldest first: the newest line is last.
    let out = env.ok(&["logs", "chatty"]);
    assert_eq!(out.lines().last(), Some("line 299"));
    let first: u32 = out
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("line "))
        .and_then(|n| n.parse().ok())
        .expect("a line");
    assert!(first > 0, "nothing was rotated away");
    env.ok(&["rm", "-f", "chatty"]);
}
