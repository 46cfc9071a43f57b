//! GitOps version bumps and rollback (root): a manifest under git bumped from app:1.0 to
//! app:1.1, applied, reverted and applied again, with the running image and the generation
//! rows' commits checked at each step; `wharf rollback` without git, `--to`, a later apply
//! converging to the manifest again, and clean refusals.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Env, SLEEPER, versioned_busybox};

struct T {
    env: Env,
    dir: PathBuf,
}

impl T {
    /// A manifest dir holding app-1.0.tar and app-1.1.tar: busybox with a different /VERSION.
    fn new() -> T {
        let env = Env::new();
        let dir = env.dir.path().join("repo");
        fs::create_dir_all(&dir).expect("mkdir");
        for v in ["1.0", "1.1"] {
            versioned_busybox(&env, &dir.join(format!("app-{v}.tar")), v);
        }
        T { env, dir }
    }

    fn manifest(&self, v: &str) -> PathBuf {
        let p = self.dir.join("app.toml");
        fs::write(
            &p,
            format!(
                "project = \"bump\"\n\n[images.app]\nsource = \"app-{v}.tar\"\ntag = \"app:{v}\"\n\
                 env = {{ PATH = \"/bin\" }}\n\n[containers.app]\nimage = \"app:{v}\"\ncommand = {SLEEPER}\n"
            ),
        )
        .expect("write manifest");
        p
    }

    fn apply(&self, p: &Path) {
        self.env
            .ok(&["apply", "-q", "-t", "5", "-f", p.to_str().expect("utf-8")]);
    }

    fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(&self.dir)
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.env.root.join("wharf.db")).expect("open db")
    }

    fn tag_id(&self, tag: &str) -> String {
        let (repo, t) = tag.split_once(':').expect("tag");
        self.db()
            .query_row(
                "SELECT image_id FROM tags WHERE repo = ?1 AND tag = ?2",
                [repo, t],
                |r| r.get(0),
            )
            .expect("tag row")
    }

    /// (image id, state, pid alive) of the container named `app`.
    fn app(&self) -> (String, String, bool) {
        let (img, state, pid): (String, String, Option<i32>) = self
            .db()
            .query_row(
                "SELECT image_id, state, pid FROM containers WHERE name = 'app'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .expect("container app");
        let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        (img, state, alive)
    }

    fn assert_runs(&self, image: &str) {
        let (img, state, alive) = self.app();
        assert_eq!(img, image, "app runs the wrong image");
        assert!(state == "running" && alive, "app is not running: {state}");
    }

    /// (seq, image_id, git_commit, cause, rollback_of, outcome), oldest first.
    #[allow(clippy::type_complexity)]
    fn generations(&self) -> Vec<(i64, String, Option<String>, String, Option<i64>, String)> {
        let db = self.db();
        let mut st = db
            .prepare(
                "SELECT seq, image_id, git_commit, cause, rollback_of, outcome FROM generations \
                 WHERE project = 'bump' AND name = 'app' ORDER BY seq",
            )
            .expect("prepare");
        st.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
    }
}

impl Drop for T {
    fn drop(&mut self) {
        if self.env.root.join("wharf.db").exists() {
            let _ = self.env.run(&["rm", "-f", "app"]);
        }
    }
}

#[test]
fn bump_apply_revert_apply_under_git() {
    require_root!();
    let t = T::new();
    t.git(&["init", "-q"]);
    let m = t.manifest("1.0");
    t.git(&["add", "."]);
    t.git(&["commit", "-q", "-m", "app 1.0"]);
    let c1 = t.git(&["rev-parse", "HEAD"]);
    t.apply(&m);
    let v1 = t.tag_id("app:1.0");
    t.assert_runs(&v1);

    // Bump: commit, apply → the new image is imported and the container recreated from it.
    t.manifest("1.1");
    t.git(&["commit", "-q", "-am", "app 1.1"]);
    let c2 = t.git(&["rev-parse", "HEAD"]);
    t.apply(&m);
    let v2 = t.tag_id("app:1.1");
    assert_ne!(v1, v2);
    t.assert_runs(&v2);
    // The old image is kept for a rollback.
    assert_eq!(t.tag_id("app:1.0"), v1);

    // git revert + apply brings back the previous version (no import: the source is known).
    t.git(&["revert", "--no-edit", "HEAD"]);
    let c3 = t.git(&["rev-parse", "HEAD"]);
    t.apply(&m);
    t.assert_runs(&v1);

    let g = t.generations();
    let seen: Vec<(i64, &str, Option<&str>, &str)> = g
        .iter()
        .map(|g| (g.0, g.1.as_str(), g.2.as_deref(), g.5.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (1, v1.as_str(), Some(c1.as_str()), "started"),
            (2, v2.as_str(), Some(c2.as_str()), "started"),
            (3, v1.as_str(), Some(c3.as_str()), "started"),
        ]
    );
    // The commit is the one journaled for the apply that made each generation.
    let tied: i64 = t
        .db()
        .query_row(
            "SELECT count(*) FROM generations g JOIN applies a ON a.id = g.apply_id \
             WHERE a.git_commit = g.git_commit AND a.git_dirty = 0",
            [],
            |r| r.get(0),
        )
        .expect("join");
    assert_eq!(tied, 3);

    // history NAME lists the generations with their commits above the runs.
    let h = t.env.ok(&["history", "app"]);
    assert!(h.starts_with("Generations:"), "{h}");
    assert!(h.contains(&c2[..12]) && h.contains("Runs:"), "{h}");
}

#[test]
fn rollback_without_git_then_apply_converges_again() {
    require_root!();
    let t = T::new();
    let m = t.manifest("1.0");
    t.apply(&m);
    let v1 = t.tag_id("app:1.0");
    t.manifest("1.1");
    t.apply(&m);
    let v2 = t.tag_id("app:1.1");
    t.assert_runs(&v2);

    // Rollback: the previous good generation's image and spec.
    let out = t.env.ok(&["rollback", "-t", "5", "app"]);
    assert!(out.contains("to generation 1"), "{out}");
    t.assert_runs(&v1);
    let ref_: String = t
        .db()
        .query_row(
            "SELECT image_ref FROM containers WHERE name = 'app'",
            [],
            |r| r.get(0),
        )
        .expect("ref");
    assert_eq!(ref_, "app:1.0", "ps shows the generation's reference");
    let g = t.generations();
    assert_eq!(g.len(), 3);
    assert_eq!(
        (g[2].3.as_str(), g[2].4, g[2].2.as_deref()),
        ("rollback", Some(1), None)
    );

    // Rolling back again returns to the newest different good generation (1.1): undo.
    // --to picks one explicitly.
    // Back to what the manifest says, it notes nothing; away from it, that apply undoes it.
    let note = "converges to the manifest again";
    let out = t.env.run(&["rollback", "-t", "5", "--to", "2", "app"]);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains(note));
    t.assert_runs(&v2);
    let out = t.env.run(&["rollback", "-t", "5", "--to", "1", "app"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains(note));
    t.assert_runs(&v1);

    // The manifest still says 1.1: apply converges to it (rollback is an emergency brake).
    let diff = t.env.run(&["diff", "-f", m.to_str().expect("utf-8")]);
    let plan = String::from_utf8_lossy(&diff.stdout);
    assert_eq!(diff.status.code(), Some(2), "{plan}");
    assert!(plan.contains("recreate app"), "{plan}");
    t.apply(&m);
    t.assert_runs(&v2);

    // history --generations as JSON.
    let j = t
        .env
        .ok(&["--format", "json", "history", "app", "--generations"]);
    let v: serde_json::Value = serde_json::from_str(&j).expect("json");
    assert_eq!(v.as_array().map(Vec::len), Some(6));
    assert_eq!(v[0]["seq"], 6);
    assert_eq!(v[0]["cause"], "apply");
}

#[test]
fn rollback_refuses_cleanly() {
    require_root!();
    let t = T::new();
    let m = t.manifest("1.0");
    t.apply(&m);
    let v1 = t.tag_id("app:1.0");
    let err = t.env.fails(&["rollback", "app"]);
    assert!(err.contains("no previous good generation"), "{err}");
    assert!(err.contains("hint:"), "{err}");
    let err = t.env.fails(&["rollback", "--to", "9", "app"]);
    assert!(err.contains("has no generation 9"), "{err}");
    let err = t.env.fails(&["rollback", "--to", "1", "app"]);
    assert!(err.contains("already at generation 1"), "{err}");
    let err = t.env.fails(&["rollback", "nosuch"]);
    assert!(err.contains("no generations"), "{err}");
    // Nothing was touched by the refusals.
    t.assert_runs(&v1);
    assert_eq!(t.generations().len(), 1);

    // A `wharf run` container has no generations.
    t.env
        .ok(&["run", "-d", "--name", "adhoc", "app:1.0", "sleep", "30"]);
    let err = t.env.fails(&["rollback", "adhoc"]);
    assert!(err.contains("made by `wharf run`"), "{err}");
    t.env.ok(&["rm", "-f", "adhoc"]);

    // The image of the target is gone: refused before the running container is touched.
    t.manifest("1.1");
    t.apply(&m);
    let v2 = t.tag_id("app:1.1");
    t.db()
        .execute(
            "UPDATE generations SET image_id = 'feedface' WHERE seq = 1",
            [],
        )
        .expect("update");
    let err = t.env.fails(&["rollback", "app"]);
    assert!(err.contains("no longer in the store"), "{err}");
    t.assert_runs(&v2);
}
