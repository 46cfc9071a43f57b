//! `wharf watch` integration tests (root): a watch runs as a child against a private state
//! root; each test awaits conditions on the store with deadlines, and a guard kills the watch
//! (then the containers) even when the test fails.
//!
//! What they prove: a manifest created, modified or deleted converges (deleting the last file
//! of a project tears nothing down); a replaced tarball is imported again and its container
//! recreated; an invalid edit prints its positions and keeps the old container; SIGTERM stops
//! the watch and the containers keep running; a second watch of a project is refused; a
//! container killed by hand comes back through the store trigger, long before a resync; a
//! crash-looping container is restarted with a growing backoff.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Env, SLEEPER, s};

/// (id, state, pid, image_id, started_at)
type Row = (String, String, Option<i32>, String, Option<i64>);

struct T {
    env: Env,
    dir: PathBuf,
}

impl T {
    fn new() -> T {
        let env = Env::new();
        let dir = env.dir.path().join("proj");
        fs::create_dir_all(&dir).expect("mkdir");
        fs::copy(common::busybox_tar(), dir.join("busybox.tar")).expect("copy fixture");
        let dir = fs::canonicalize(&dir).expect("canonical dir");
        T { env, dir }
    }

    /// Writes a manifest atomically (as editors do: a temp file renamed over the old one).
    fn write(&self, name: &str, body: &str) -> PathBuf {
        let p = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        fs::write(&tmp, body).expect("write manifest");
        fs::rename(&tmp, &p).expect("rename manifest");
        p
    }

    fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.env.root.join("wharf.db")).expect("open db")
    }

    /// (id, state, pid, image_id, started_at) of a container, if it exists.
    fn container(&self, name: &str) -> Option<Row> {
        if !self.env.root.join("wharf.db").exists() {
            return None;
        }
        self.db()
            .query_row(
                "SELECT id, state, pid, image_id, started_at FROM containers WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .ok()
    }

    fn running(&self, name: &str) -> bool {
        self.container(name).is_some_and(|(_, state, pid, _, _)| {
            state == "running" && pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists())
        })
    }

    fn id(&self, name: &str) -> String {
        self.container(name)
            .unwrap_or_else(|| panic!("no container {name}"))
            .0
    }

    /// Starts `wharf watch ARGS` with its output in files.
    fn watch(&self, args: &[&str]) -> Watch {
        let n = fs::read_dir(self.env.dir.path()).map_or(0, |d| d.count());
        let out = self.env.dir.path().join(format!("watch{n}.out"));
        let err = self.env.dir.path().join(format!("watch{n}.err"));
        let child = self
            .env
            .wharf()
            .arg("watch")
            .args(["-t", "5"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).expect("create out"))
            .stderr(fs::File::create(&err).expect("create err"))
            .spawn()
            .expect("spawn wharf watch");
        Watch {
            child: Some(child),
            out,
            err,
        }
    }
}

impl Drop for T {
    fn drop(&mut self) {
        self.env.remove_all_containers();
    }
}

/// A running `wharf watch`; killed (SIGKILL) on drop if still running.
struct Watch {
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
}

impl Watch {
    fn out(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn err(&self) -> String {
        fs::read_to_string(&self.err).unwrap_or_default()
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Waits for the log to have `n` lines containing `what`.
    fn await_log(&mut self, what: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.out().matches(what).count() >= n {
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                panic!(
                    "watch exited ({st}) before logging {what:?}:\n{}\n{}",
                    self.out(),
                    self.err()
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {n}× {what:?} in the watch log:\n{}\nstderr:\n{}",
                self.out(),
                self.err()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).expect("signal watch");
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("a running watch");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = c.try_wait().expect("wait") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("the watch did not exit");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_until(what: &str, w: &Watch, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; watch log:\n{}\nstderr:\n{}",
            w.out(),
            w.err()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn images() -> String {
    "project = \"proj\"\n\n[images.bb]\nsource = \"busybox.tar\"\ntag = \"bb:1\"\nenv = { PATH = \"/bin\" }\n\n"
        .to_string()
}

fn service(name: &str, extra: &str) -> String {
    format!("[containers.{name}]\nimage = \"bb:1\"\ncommand = {SLEEPER}\n{extra}\n")
}

#[test]
fn manifests_created_modified_and_deleted_converge() {
    require_root!();
    let t = T::new();
    t.write("a.toml", &format!("{}{}", images(), service("web", "")));
    let mut w = t.watch(&["--resync", "1h", s(&t.dir)]);
    w.await_log("start: import bb:1, create web: converged", 1);
    assert!(t.running("web"));
    let web = t.id("web");

    // A new file of the directory joins the project.
    t.write("b.toml", &service("db", ""));
    wait_until("db running", &w, || t.running("db"));
    let db = t.id("db");

    // A changed command recreates.
    t.write("b.toml", &service("db", "env = { V = \"2\" }"));
    wait_until("db recreated", &w, || {
        t.container("db").is_some_and(|c| c.0 != db) && t.running("db")
    });
    w.await_log("changed b.toml: recreate db: converged", 1);

    // Deleting one file of the project removes what it declared.
    fs::remove_file(t.dir.join("b.toml")).expect("rm b.toml");
    wait_until("db removed", &w, || t.container("db").is_none());
    w.await_log("remove db: converged", 1);

    // Deleting the last file tears nothing down.
    fs::remove_file(t.dir.join("a.toml")).expect("rm a.toml");
    w.await_log("no manifest left", 1);
    assert!(t.running("web"), "web was torn down:\n{}", w.out());
    assert_eq!(t.id("web"), web);

    // The trigger is journaled with each apply.
    let triggers: Vec<String> = t
        .db()
        .prepare("SELECT json_extract(plan, '$.trigger') FROM applies ORDER BY id")
        .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
        .expect("applies");
    assert_eq!(triggers.first().map(String::as_str), Some("start"));
    assert!(
        triggers.iter().any(|x| x == "changed b.toml"),
        "{triggers:?}"
    );
}

#[test]
fn a_replaced_tarball_is_imported_again_and_recreates() {
    require_root!();
    let t = T::new();
    t.write("app.toml", &format!("{}{}", images(), service("web", "")));
    let mut w = t.watch(&["--resync", "1h", s(&t.dir)]);
    w.await_log("start: import bb:1, create web: converged", 1);
    let (id, _, _, image, _) = t.container("web").expect("web");

    // A new tarball (one more file) renamed over the old one, as a build would.
    let extra = t.env.dir.path().join("extra");
    fs::create_dir_all(&extra).expect("mkdir");
    fs::write(extra.join("VERSION"), "2\n").expect("write");
    let next = t.env.dir.path().join("next.tar");
    fs::copy(t.dir.join("busybox.tar"), &next).expect("copy");
    let st = Command::new("tar")
        .args(["-rf", s(&next), "-C", s(&extra), "VERSION"])
        .status()
        .expect("tar");
    assert!(st.success());
    fs::rename(&next, t.dir.join("busybox.tar")).expect("replace tarball");

    wait_until("web recreated from the new image", &w, || {
        t.container("web")
            .is_some_and(|c| c.0 != id && c.3 != image && c.1 == "running")
    });
    w.await_log(
        "changed busybox.tar: import bb:1, recreate web: converged",
        1,
    );
    let out = t.env.ok(&["exec", "web", "cat", "/VERSION"]);
    assert_eq!(out.trim(), "2");
}

#[test]
fn an_invalid_edit_keeps_the_old_state_and_prints_positions() {
    require_root!();
    let t = T::new();
    let m = t.write("app.toml", &format!("{}{}", images(), service("web", "")));
    let mut w = t.watch(&["--resync", "1h", s(&m)]);
    w.await_log("start: import bb:1, create web: converged", 1);
    let id = t.id("web");

    // Line 12: `limits = { memory = "lots" }`, after the 11 lines of the valid manifest.
    t.write(
        "app.toml",
        &format!(
            "{}{}limits = {{ memory = \"lots\" }}\n",
            images(),
            service("web", "")
        ),
    );
    w.await_log("invalid manifest", 1);
    let err = w.err();
    assert!(
        err.contains(&format!("{}:12:21", s(&m))) && err.contains("lots"),
        "no position for the bad value:\n{err}"
    );
    assert!(t.running("web"));
    assert_eq!(t.id("web"), id, "the container was touched");

    // Fixing it converges again from the last good state (nothing to do but journal).
    t.write("app.toml", &format!("{}{}", images(), service("web", "")));
    w.await_log("changed app.toml: no changes: converged", 1);
    assert_eq!(t.id("web"), id);
}

#[test]
fn sigterm_stops_the_watch_and_the_containers_keep_running() {
    require_root!();
    let t = T::new();
    t.write("app.toml", &format!("{}{}", images(), service("web", "")));
    let mut w = t.watch(&["--resync", "1h", s(&t.dir)]);
    w.await_log("converged", 1);
    let (id, _, pid, _, _) = t.container("web").expect("web");
    w.signal(nix::sys::signal::Signal::SIGTERM);
    let st = w.wait_exit();
    assert!(st.success(), "watch exited with {st}: {}", w.err());
    assert!(w.err().contains("keep running"), "{}", w.err());
    // The container and its monitor outlive the watch.
    assert!(t.running("web"));
    assert_eq!(t.container("web").map(|c| (c.0, c.2)), Some((id, pid)));
    let ps = t.env.ok(&["ps"]);
    assert!(ps.contains("Up"), "{ps}");
    // The lock went with the watch: a new watch starts and has nothing to do.
    let mut w2 = t.watch(&["--resync", "1h", s(&t.dir)]);
    w2.await_log("start: no changes: converged", 1);
}

#[test]
fn a_second_watch_of_the_same_project_is_refused() {
    require_root!();
    let t = T::new();
    let m = t.write("app.toml", &format!("{}{}", images(), service("web", "")));
    let mut w = t.watch(&["--resync", "1h", s(&t.dir)]);
    w.await_log("converged", 1);
    // The same project through another path (the file instead of its directory).
    let out = t
        .env
        .wharf()
        .args(["watch", s(&m)])
        .stdin(Stdio::null())
        .output()
        .expect("second watch");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("project proj is already watched by")
            && err.contains(&format!("pid {}", w.pid())),
        "{err}"
    );
    // The same path again.
    let out = t
        .env
        .wharf()
        .args(["watch", "-f", s(&t.dir)])
        .stdin(Stdio::null())
        .output()
        .expect("third watch");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already watched by"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(t.running("web"));
}

#[test]
fn a_container_killed_by_hand_comes_back_without_a_resync() {
    require_root!();
    let t = T::new();
    t.write("app.toml", &format!("{}{}", images(), service("web", "")));
    let mut w = t.watch(&["--resync", "1h", s(&t.dir)]);
    w.await_log("converged", 1);
    let (id, _, pid, _, started) = t.container("web").expect("web");
    t.env.ok(&["kill", "web"]);
    wait_until("web started again", &w, || {
        t.container("web")
            .is_some_and(|c| c.4 != started && c.2 != pid)
            && t.running("web")
    });
    w.await_log("container state: start web: converged", 1);
    assert_eq!(t.id("web"), id, "started again, not recreated");
    assert!(!w.out().contains("resync"), "{}", w.out());
}

#[test]
fn a_crash_looping_container_is_restarted_with_a_growing_backoff() {
    require_root!();
    let t = T::new();
    t.write(
        "app.toml",
        &format!(
            "{}[containers.flap]\nimage = \"bb:1\"\ncommand = [\"/bin/sh\", \"-c\", \"exit 3\"]\n",
            images()
        ),
    );
    let mut w = t.watch(&["--resync", "1h", s(&t.dir)]);
    // Each exit is a store change; the converges that follow are spaced 0, 0.5, 1, 2 s...
    w.await_log("container state: start flap", 4);
    let times: Vec<std::time::SystemTime> = w
        .out()
        .lines()
        .filter(|l| l.contains("container state: start flap"))
        .filter_map(|l| humantime::parse_rfc3339(l.split(' ').next()?).ok())
        .collect();
    assert!(times.len() >= 4, "{}", w.out());
    let gap = |i: usize| times[i + 1].duration_since(times[i]).unwrap_or_default();
    assert!(
        gap(2) >= Duration::from_millis(900) && gap(2) > gap(0),
        "no backoff between restarts: {:?}\n{}",
        (gap(0), gap(1), gap(2)),
        w.out()
    );
}

#[test]
fn one_projects_long_stop_does_not_hold_back_another_projects_change() {
    require_root!();
    let t = T::new();
    let header = |p: &str| images().replace("project = \"proj\"", &format!("project = \"{p}\""));
    let deaf = |v: &str| {
        format!(
            "[containers.deaf]\nimage = \"bb:1\"\n\
             command = [\"/bin/sh\", \"-c\", \"trap '' TERM; while :; do sleep 0.1; done # {v}\"]\n"
        )
    };
    let a = t.write("a.toml", &(header("slowproj") + &deaf("v1")));
    let quick = |names: &[&str]| {
        let mut m = header("quickproj");
        for n in names {
            m += &format!("[containers.{n}]\nimage = \"bb:1\"\ncommand = {SLEEPER}\n\n");
        }
        m
    };
    let b = t.write("b.toml", &quick(&["q1"]));
    let mut w = t.watch(&[s(&a), s(&b)]);
    w.await_log("converged", 2);
    wait_until("deaf and q1 to run", &w, || {
        t.running("deaf") && t.running("q1")
    });
    let old = t.id("deaf");
    // deaf ignores SIGTERM: recreating it waits out the whole grace period (5 s).
    t.write("a.toml", &(header("slowproj") + &deaf("v2")));
    wait_until("the recreate to ask deaf to stop", &w, || {
        t.db()
            .query_row(
                "SELECT stop_requested FROM containers WHERE id = ?1",
                [&old],
                |r| r.get::<_, i64>(0),
            )
            .is_ok_and(|v| v == 1)
    });
    t.write("b.toml", &quick(&["q1", "q2"]));
    wait_until("q2 to run", &w, || t.running("q2"));
    assert!(
        t.container("deaf").is_some_and(|c| c.0 == old),
        "quickproj converged only after slowproj's stop was over:\n{}",
        w.out()
    );
    wait_until("deaf to be recreated", &w, || {
        t.container("deaf").is_some_and(|c| c.0 != old) && t.running("deaf")
    });
}
