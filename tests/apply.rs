//! `wharf apply / diff / validate / down` integration tests (root): convergence, no-op
//! applies, recreate on a limit change with the new limit in the cgroup, orphans, drift,
//! invalid manifests, a killed apply, ownership and name conflicts, concurrent applies,
//! down, dry-run, diff exit codes, and the apply journal (files, sha256, git).

mod common;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Env, SLEEPER, s, text};
use sha2::{Digest, Sha256};

/// A test's state root and manifest dir; on drop, removes every container of the root (even
/// when the test failed), then the root.
struct T {
    env: Env,
    dir: PathBuf,
}

impl T {
    fn new() -> T {
        let env = Env::new();
        let dir = env.dir.path().join("m");
        fs::create_dir_all(&dir).expect("mkdir");
        fs::copy(common::busybox_tar(), dir.join("busybox.tar")).expect("copy fixture");
        T { env, dir }
    }

    /// Writes `name` (a file, or `dir/file` for a directory project) under the manifest dir.
    fn write(&self, name: &str, body: &str) -> PathBuf {
        let p = self.dir.join(name);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).expect("mkdir");
        }
        fs::write(&p, body).expect("write manifest");
        p
    }

    fn run(&self, args: &[&str]) -> Output {
        self.env.run(args)
    }

    fn apply(&self, path: &Path) -> Output {
        self.run(&["apply", "-q", "-t", "5", "-f", s(path)])
    }

    fn apply_ok(&self, path: &Path) -> String {
        let out = self.apply(path);
        assert!(
            out.status.success(),
            "apply failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.env.root.join("wharf.db")).expect("open db")
    }

    fn count(&self, sql: &str) -> i64 {
        self.db()
            .query_row(sql, [], |r| r.get(0))
            .expect("count query")
    }

    /// name → (id, state, started_at, project, pid)
    fn containers(&self) -> Vec<Row> {
        let db = self.db();
        let mut st = db
            .prepare(
                "SELECT name, id, state, started_at, project, pid FROM containers ORDER BY name",
            )
            .expect("prepare");
        st.query_map([], |r| {
            Ok(Row {
                name: r.get(0)?,
                id: r.get(1)?,
                state: r.get(2)?,
                started_at: r.get(3)?,
                project: r.get(4)?,
                pid: r.get(5)?,
            })
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
    }

    fn container(&self, name: &str) -> Row {
        self.containers()
            .into_iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no container {name}: {:?}", self.containers()))
    }

    fn running(&self, name: &str) -> bool {
        let c = self.container(name);
        c.state == "running"
            && c.pid
                .is_some_and(|p| Path::new(&format!("/proc/{p}")).exists())
    }
}

impl Drop for T {
    fn drop(&mut self) {
        self.env.remove_all_containers();
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Row {
    name: String,
    id: String,
    state: String,
    started_at: Option<i64>,
    project: Option<String>,
    pid: Option<i32>,
}

fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn image_section() -> String {
    "[images.bb]\nsource = \"busybox.tar\"\ntag = \"bb:1\"\nenv = { PATH = \"/bin\" }\n\n"
        .to_string()
}

/// A manifest: the image section, then one `service(name, extra)` for each pair.
fn project(services: &[(&str, &str)]) -> String {
    let mut m = image_section();
    for (name, extra) in services {
        m.push_str(&service(name, extra));
    }
    m
}

fn service(name: &str, extra: &str) -> String {
    format!("[containers.{name}]\nimage = \"bb:1\"\ncommand = {SLEEPER}\n{extra}\n")
}

/// The memory limit of a running container's cgroup (v1 or v2), in bytes.
fn memory_limit(id: &str) -> u64 {
    let cg = wharf::runtime::cgroup::open(id).expect("the container has a cgroup");
    let file = cg
        .paths()
        .into_iter()
        .flat_map(|d| [d.join("memory.limit_in_bytes"), d.join("memory.max")])
        .find(|p| p.exists())
        .expect("a memory limit file");
    fs::read_to_string(&file)
        .expect("read memory limit")
        .trim()
        .parse()
        .expect("a number")
}

#[test]
fn apply_converges_and_a_second_apply_is_a_noop() {
    require_root!();
    let t = T::new();
    let m = t.write(
        "app.toml",
        &project(&[
            ("web", "limits = { memory = \"64MiB\" }"),
            ("idle", "state = \"stopped\""),
        ]),
    );
    let out = t.apply_ok(&m);
    assert!(out.contains("+ import bb:1"), "{out}");
    assert!(out.contains("+ create web (bb:1)"), "{out}");
    assert!(out.contains("+ create idle (bb:1), stopped"), "{out}");
    assert!(out.contains("Apply complete: 3 done, 0 failed."), "{out}");
    assert!(t.running("web"));
    assert!(!t.running("idle"));
    assert_eq!(t.container("web").project.as_deref(), Some("app"));
    let before = t.containers();

    let out = t.apply_ok(&m);
    assert!(
        out.contains("No changes. 2 containers up to date."),
        "{out}"
    );
    assert_eq!(
        t.containers(),
        before,
        "ids, states and start times are unchanged"
    );
    assert_eq!(t.count("SELECT count(*) FROM images"), 1, "no new import");
    assert!(t.running("web"));

    // Both applies are journaled, with the outcome of each action.
    let hist = t.env.ok(&["--format", "json", "history", "--applies"]);
    let v: serde_json::Value = serde_json::from_str(&hist).expect("json");
    let rows = v.as_array().expect("array");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["outcome"]["summary"], "0 done, 0 failed");
    assert_eq!(rows[1]["outcome"]["summary"], "3 done, 0 failed");
    assert_eq!(
        rows[1]["outcome"]["results"].as_array().map(Vec::len),
        Some(3)
    );
    assert_eq!(rows[1]["plan"]["actions"][0]["action"], "import");
    let sha = hex::encode(Sha256::digest(fs::read(&m).expect("read manifest")));
    assert_eq!(rows[0]["files"][0]["sha256"], sha.as_str());
    assert_eq!(
        rows[0]["files"][0]["path"],
        s(&fs::canonicalize(&m).expect("canonical"))
    );
}

#[test]
fn editing_limits_recreates_with_the_new_limit_in_effect() {
    require_root!();
    let t = T::new();
    let body = |mem: &str| {
        format!(
            "{}{}",
            image_section(),
            service("web", &format!("limits = {{ memory = \"{mem}\" }}"))
        )
    };
    let m = t.write("limits.toml", &body("64MiB"));
    t.apply_ok(&m);
    let old = t.container("web");
    assert_eq!(memory_limit(&old.id), 64 << 20);

    t.write("limits.toml", &body("128MiB"));
    let diff = t.run(&["diff", "-f", s(&m)]);
    assert_eq!(diff.status.code(), Some(2), "{}", text(&diff.stdout));
    let out = t.apply_ok(&m);
    assert!(
        out.contains("~ recreate web\n    limits.memory 64MiB → 128MiB"),
        "{out}"
    );
    let new = t.container("web");
    assert_ne!(new.id, old.id);
    assert!(t.running("web"));
    assert_eq!(memory_limit(&new.id), 128 << 20);
    assert!(
        wharf::runtime::cgroup::open(&old.id).is_none(),
        "the old container's cgroup is gone"
    );
}

#[test]
fn dropped_containers_are_removed_and_drift_is_healed() {
    require_root!();
    let t = T::new();
    let m = t.write("drift.toml", &project(&[("alpha", ""), ("beta", "")]));
    t.apply_ok(&m);
    let a = t.container("alpha");

    // b is dropped from the manifest: removed; a is left alone.
    t.write("drift.toml", &project(&[("alpha", "")]));
    let out = t.apply_ok(&m);
    assert!(out.contains("- remove beta"), "{out}");
    assert!(t.containers().iter().all(|c| c.name != "beta"));
    assert_eq!(t.container("alpha"), a);

    // Killed by hand: started again (same container).
    let pid = a.pid.expect("a pid");
    // SAFETY: kill with plain integers, on a process this test's apply started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_until(10, "alpha's exit to be recorded", || !t.running("alpha"));
    let out = t.apply_ok(&m);
    assert!(out.contains("> start alpha"), "{out}");
    assert!(t.running("alpha"));
    assert_eq!(t.container("alpha").id, a.id);

    // Stopped by hand: started again.
    t.env.ok(&["stop", "-t", "5", "alpha"]);
    let out = t.apply_ok(&m);
    assert!(out.contains("> start alpha"), "{out}");
    assert!(t.running("alpha"));

    // Removed by hand: created again.
    t.env.ok(&["rm", "-f", "alpha"]);
    let out = t.apply_ok(&m);
    assert!(out.contains("+ create alpha"), "{out}");
    assert!(t.running("alpha"));
}

#[test]
fn an_invalid_manifest_changes_nothing_and_every_error_has_its_position() {
    require_root!();
    let t = T::new();
    let m = t.write(
        "bad.toml",
        &format!(
            "{}[containers.web]\nimage = \"bb:1\"\ncolour = \"blue\"\nlimits = {{ memory = \"lots\" }}\n\n\
             [containers.db]\nimage = \"nothere:1\"\n",
            image_section().replace("busybox.tar", "missing.tar")
        ),
    );
    let out = t.apply(&m);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let name = s(&m);
    for (what, pos) in [
        ("missing.tar", "2:"),
        ("colour", "8:1"),
        ("lots", "9:"),
        ("nothere:1", "12:"),
    ] {
        assert!(err.contains(what), "no error about {what}:\n{err}");
        assert!(
            err.contains(&format!("{name}:{pos}")),
            "no position {name}:{pos} for {what}:\n{err}"
        );
    }
    assert_eq!(t.count("SELECT count(*) FROM images"), 0);
    assert_eq!(t.count("SELECT count(*) FROM containers"), 0);
    assert_eq!(t.count("SELECT count(*) FROM applies"), 0);
    // validate reports the same, and diff is an error.
    let v = t.run(&["validate", "-f", name]);
    assert_eq!(v.status.code(), Some(1));
    assert!(text(&v.stderr).contains(&format!("{name}:8:1")));
    assert_eq!(t.run(&["diff", "-f", name]).status.code(), Some(1));
}

fn spawn_apply(t: &T, m: &Path, envs: &[(&str, &str)], stderr: &Path) -> Child {
    let mut c = t.env.wharf();
    c.args(["apply", "-q", "-t", "5", "-f", s(m)])
        .stdout(Stdio::piped())
        .stderr(fs::File::create(stderr).expect("stderr file"));
    for (k, v) in envs {
        c.env(k, v);
    }
    c.spawn().expect("spawn apply")
}

fn file_has(p: &Path, what: &str) -> bool {
    fs::read_to_string(p).is_ok_and(|s| s.contains(what))
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn after_a_killed_apply_the_next_one_converges() {
    require_root!();
    let t = T::new();
    let m = t.write("killed.toml", &project(&[("alpha", ""), ("beta", "")]));
    // Plan: import, create a, create b (starts come last). Pause after 2: a recorded, not
    // started; b not made.
    let err = t.dir.join("k.err");
    let mut child = KillOnDrop(spawn_apply(
        &t,
        &m,
        &[("WHARF_TEST_APPLY_PAUSE_AFTER", "2")],
        &err,
    ));
    wait_until(60, "the apply to pause", || {
        file_has(&err, "paused after 2")
    });
    child.0.kill().expect("kill -9 the apply");
    child.0.wait().expect("wait");
    assert_eq!(
        t.count("SELECT count(*) FROM applies WHERE outcome IS NULL"),
        1,
        "the killed apply is journaled without an outcome"
    );
    let names: Vec<String> = t.containers().into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["alpha"]);

    let out = t.apply_ok(&m);
    assert!(
        !out.contains("+ import"),
        "the image was imported before the kill: {out}"
    );
    assert!(out.contains("> start alpha"), "{out}");
    assert!(out.contains("+ create beta"), "{out}");
    assert!(t.running("alpha") && t.running("beta"));
    let hist = t.env.ok(&["history", "--applies"]);
    assert!(hist.contains("interrupted"), "{hist}");
    let out = t.apply_ok(&m);
    assert!(out.contains("No changes"), "{out}");
}

#[test]
fn run_containers_are_untouched_and_name_conflicts_are_reported() {
    require_root!();
    let t = T::new();
    t.env.import(&common::busybox_tar(), "other:1");
    t.env.ok(&[
        "run",
        "-d",
        "--name",
        "bystander",
        "other:1",
        "/bin/sleep",
        "1000",
    ]);
    t.env.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "other:1",
        "/bin/sleep",
        "1000",
    ]);
    let theirs = t.write("theirs.toml", &project(&[("db", "")]));
    t.apply_ok(&theirs);
    let before: Vec<Row> = t.containers();

    let m = t.write(
        "mine.toml",
        &project(&[("web", ""), ("db", ""), ("app", "")]),
    );
    let out = t.apply(&m);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let (o, e) = (text(&out.stdout), text(&out.stderr));
    assert!(
        e.contains("container name web is taken by a container made with `wharf run`"),
        "{e}"
    );
    assert!(
        e.contains("container name db is taken by project theirs"),
        "{e}"
    );
    assert!(o.contains("+ create app"), "{o}");
    assert!(t.running("app"), "the other containers are still applied");
    for c in before {
        assert_eq!(t.container(&c.name), c, "{} was changed", c.name);
    }
    // down of this project leaves them too.
    t.env.ok(&["down", "-t", "5", "-f", s(&m)]);
    let names: Vec<String> = t.containers().into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["bystander", "db", "web"]);
}

#[test]
fn two_applies_at_once_serialize_and_the_second_plans_again() {
    require_root!();
    let t = T::new();
    let m = t.write("concurrent.toml", &project(&[("alpha", ""), ("beta", "")]));
    let hold = t.dir.join("hold");
    fs::write(&hold, "").expect("hold file");
    let (err_a, err_b) = (t.dir.join("a.err"), t.dir.join("b.err"));
    let hold_s = s(&hold).to_string();
    let mut a = KillOnDrop(spawn_apply(
        &t,
        &m,
        &[
            ("WHARF_TEST_APPLY_PAUSE_AFTER", "1"),
            ("WHARF_TEST_APPLY_PAUSE_FILE", &hold_s),
        ],
        &err_a,
    ));
    wait_until(60, "the first apply to pause", || {
        file_has(&err_a, "paused after 1")
    });
    let mut b = KillOnDrop(spawn_apply(&t, &m, &[("RUST_LOG", "wharf=info")], &err_b));
    wait_until(60, "the second apply to wait for the lock", || {
        file_has(&err_b, "waiting for another wharf process")
    });
    assert!(b.0.try_wait().expect("try_wait").is_none());
    fs::remove_file(&hold).expect("release the first apply");
    let mut outs = Vec::new();
    for c in [&mut a, &mut b] {
        let st = c.0.wait().expect("wait");
        let mut out = String::new();
        if let Some(mut so) = c.0.stdout.take() {
            so.read_to_string(&mut out).expect("read stdout");
        }
        assert!(st.success(), "an apply failed: {out}");
        outs.push(out);
    }
    assert!(outs[0].contains("+ create alpha"), "{}", outs[0]);
    assert!(
        outs[1].contains("No changes. 2 containers up to date."),
        "the second apply planned against the first's result: {}",
        outs[1]
    );
    assert!(t.running("alpha") && t.running("beta"));
}

#[test]
fn down_removes_only_what_the_project_owns() {
    require_root!();
    let t = T::new();
    let vol = "[volumes.data]\n\n";
    let p1 = t.write(
        "p1/main.toml",
        &format!(
            "{}{vol}{}",
            image_section().replace("busybox.tar", "../busybox.tar"),
            service("one", "volumes = [\"data:/data\"]")
        ),
    );
    let p2 = t.write(
        "p2.toml",
        &format!(
            "{}[volumes.keep]\n\n{}",
            image_section(),
            service("two", "volumes = [\"keep:/data\"]")
        ),
    );
    let p1 = p1.parent().expect("the p1 project dir").to_path_buf();
    t.apply_ok(&p1);
    t.apply_ok(&p2);
    t.env.ok(&[
        "run",
        "-d",
        "--name",
        "byhand",
        "bb:1",
        "/bin/sleep",
        "1000",
    ]);
    assert_eq!(
        t.count("SELECT count(*) FROM volumes WHERE project = 'p1' AND name = 'data'"),
        1
    );
    assert!(t.env.root.join("volumes/data/_data").is_dir());

    let out = t.env.ok(&["down", "-t", "5", "--volumes", "-f", s(&p1)]);
    assert!(out.contains("Down complete"), "{out}");
    assert!(
        out.contains("- volume data\n"),
        "what down removes is shown: {out}"
    );
    let names: Vec<String> = t.containers().into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["byhand", "two"]);
    assert!(t.running("two") && t.running("byhand"));
    assert_eq!(
        t.count("SELECT count(*) FROM volumes WHERE name = 'data'"),
        0
    );
    assert!(!t.env.root.join("volumes/data").exists());
    assert_eq!(
        t.count("SELECT count(*) FROM volumes WHERE name = 'keep'"),
        1
    );
    // Once more: nothing left to remove.
    let out = t.env.ok(&["down", "-f", s(&p1)]);
    assert!(out.contains("Nothing to remove for project p1"), "{out}");
}

#[test]
fn diff_exit_codes_and_dry_run_touches_nothing() {
    require_root!();
    let t = T::new();
    let m = t.write("dry.toml", &project(&[("web", "")]));
    let dry = t.run(&["apply", "--dry-run", "-f", s(&m)]);
    assert!(dry.status.success());
    assert!(text(&dry.stdout).contains("+ import bb:1"));
    let diff = t.run(&["diff", "-f", s(&m)]);
    assert_eq!(diff.status.code(), Some(2));
    assert_eq!(t.count("SELECT count(*) FROM images"), 0);
    assert_eq!(t.count("SELECT count(*) FROM containers"), 0);
    assert_eq!(t.count("SELECT count(*) FROM applies"), 0);
    assert!(t.env.tree("layers").is_empty());

    t.apply_ok(&m);
    let diff = t.run(&["diff", "-f", s(&m)]);
    assert_eq!(diff.status.code(), Some(0), "{}", text(&diff.stdout));
    let json = t.run(&["--format", "json", "diff", "-f", s(&m)]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(v["changes"], false);
    assert_eq!(v["plan"]["unchanged"], 1);
    t.write("dry.toml", "[containers.web]\nimage = 3\n");
    assert_eq!(t.run(&["diff", "-f", s(&m)]).status.code(), Some(1));
}

#[test]
fn one_failing_container_does_not_stop_the_others() {
    require_root!();
    let t = T::new();
    let m = t.write(
        "failing.toml",
        &format!(
            "{}[containers.broken]\nimage = \"bb:1\"\ncommand = [\"/nonexistent\"]\n\n{}",
            image_section(),
            service("fine", "")
        ),
    );
    let out = t.apply(&m);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("broken") && err.contains("/nonexistent"),
        "{err}"
    );
    assert!(text(&out.stdout).contains("Apply incomplete: 2 done, 1 failed."));
    assert!(t.running("fine"));
}

#[test]
fn the_journal_records_the_git_commit_and_dirty_flag() {
    require_root!();
    if std::process::Command::new("git")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no git");
        return;
    }
    let t = T::new();
    let m = t.write("gitproj.toml", &project(&[("web", "")]));
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(&t.dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .output()
            .expect("git");
        assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
        text(&out.stdout).trim().to_string()
    };
    git(&["init", "-q"]);
    git(&["add", "gitproj.toml"]);
    git(&["commit", "-qm", "first"]);
    let head = git(&["rev-parse", "HEAD"]);
    t.apply_ok(&m);
    fs::write(&m, project(&[("web", "user = \"1\"")])).expect("edit");
    t.apply_ok(&m);
    let rows: Vec<(String, i64, String)> = {
        let db = t.db();
        let mut st = db
            .prepare("SELECT git_commit, git_dirty, files FROM applies ORDER BY id")
            .expect("prepare");
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0].0.as_str(), rows[0].1), (head.as_str(), 0));
    assert_eq!((rows[1].0.as_str(), rows[1].1), (head.as_str(), 1));
    let sha = hex::encode(Sha256::digest(fs::read(&m).expect("read")));
    assert!(rows[1].2.contains(&sha), "{}", rows[1].2);
    let hist = t.env.ok(&["history", "--applies"]);
    assert!(hist.contains(&format!("{}+dirty", &head[..12])), "{hist}");
}

#[test]
fn a_changed_image_section_imports_again_and_recreates_its_containers() {
    require_root!();
    let t = T::new();
    let body = |word: &str| {
        format!(
            "{}\ncmd = [\"/bin/sh\", \"-c\", \"echo {word}; trap 'exit 0' TERM; while :; do sleep 0.1; done\"]\n\n\
             [containers.echoer]\nimage = \"bb:1\"\n",
            image_section().trim_end()
        )
    };
    let m = t.write("imgcfg.toml", &body("first"));
    t.apply_ok(&m);
    let old = t.container("echoer");
    t.write("imgcfg.toml", &body("second"));
    let out = t.apply_ok(&m);
    assert!(out.contains("+ import bb:1"), "{out}");
    assert!(out.contains("~ recreate echoer"), "{out}");
    assert_ne!(t.container("echoer").id, old.id);
    assert_eq!(t.count("SELECT count(*) FROM images"), 2);
    assert_eq!(
        t.count("SELECT count(*) FROM layers"),
        1,
        "the layer is reused"
    );
    wait_until(10, "the new command's output", || {
        text(&t.run(&["logs", "echoer"]).stdout).contains("second")
    });
    let out = t.apply_ok(&m);
    assert!(out.contains("No changes"), "{out}");
}
