//! Helpers shared by the integration tests: fixtures, a private state root per test, and
//! running the wharf binary against it.
#![allow(dead_code)]

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Skips the calling test (with a note on stderr) unless it runs as root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
    };
}

/// The directory holding `busybox-rootfs.tar` and `seed-rootfs.tar`, built once per
/// `cargo test` run by scripts/make-rootfs.sh (several test binaries share it under a lock).
pub fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fixtures");
        fs::create_dir_all(&dir).expect("create fixtures dir");
        let lock = File::create(dir.join(".lock")).expect("create fixtures lock");
        let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .expect("lock fixtures");
        if !dir.join("SHA256SUMS").exists() {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-rootfs.sh");
            let st = Command::new("bash")
                .arg(&script)
                .arg(&dir)
                .status()
                .expect("run make-rootfs.sh");
            assert!(st.success(), "scripts/make-rootfs.sh failed");
        }
        drop(lock);
        dir
    })
}

/// The static attacker programs of scripts/probes/*.c (syscall-probe, exe-grabber,
/// root-reader), built once per test binary by scripts/build-probes.sh; mount it into a
/// container (`-v DIR:/probe:ro`).
pub fn probes() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("probes");
        let lock = File::create(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(".probes.lock"))
            .expect("create probes lock");
        let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .expect("lock probes");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-probes.sh");
        let st = Command::new("bash")
            .arg(&script)
            .arg(&dir)
            .status()
            .expect("run build-probes.sh");
        assert!(st.success(), "scripts/build-probes.sh failed");
        drop(lock);
        dir
    })
}

/// Multi-layer images made by umoci and skopeo (scripts/make-image-fixtures.sh, once per
/// `cargo test` run): `layout/` (an OCI layout with `:multi` and `:deep`), `multi-docker.tar`,
/// `multi-oci.tar`.
pub fn image_fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let busybox = busybox_tar();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("image-fixtures");
        fs::create_dir_all(&dir).expect("create image fixtures dir");
        let lock = File::create(dir.join(".lock")).expect("create image fixtures lock");
        let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .expect("lock image fixtures");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-image-fixtures.sh");
        // Rebuilt when the script changes: DONE holds the digest of the script that made them.
        let version = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(
                fs::read(&script).expect("read the script"),
            ))
        };
        if fs::read_to_string(dir.join("DONE")).ok().as_deref() != Some(version.as_str()) {
            let st = Command::new("bash")
                .arg(&script)
                .arg(&dir)
                .arg(&busybox)
                .status()
                .expect("run make-image-fixtures.sh");
            assert!(st.success(), "scripts/make-image-fixtures.sh failed");
            fs::write(dir.join("DONE"), &version).expect("write DONE");
        }
        drop(lock);
        dir
    })
}

pub fn busybox_tar() -> PathBuf {
    fixtures().join("busybox-rootfs.tar")
}

pub fn seed_tar() -> PathBuf {
    fixtures().join("seed-rootfs.tar")
}

/// A private state root in a temp dir. Dropping it unmounts anything left mounted below it
/// and removes it, even when the test failed.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("wharf-test-")
            .tempdir()
            .expect("create temp dir");
        // Open, so that the tests acting as `nobody` (tests/private_state.rs) reach the state
        // root and meet its own modes. A container's non-root user needs no access to it.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).ok();
        let root = dir.path().join("root");
        let env = Env { dir, root };
        env.write_config("").expect("write config.toml");
        env
    }

    /// Writes the root's config.toml: `extra`, then `[network] default = "none"`. The tests
    /// run their containers with loopback only unless they ask for a network (tests/network.rs
    /// does): bridge networks need root and nft, and roots run side by side.
    pub fn write_config(&self, extra: &str) -> std::io::Result<()> {
        fs::create_dir_all(&self.root)?;
        fs::write(
            self.root.join("config.toml"),
            format!("{extra}\n[network]\ndefault = \"none\"\n"),
        )
    }

    /// `wharf --root <root>` with a clean environment for the variables wharf reads.
    pub fn wharf(&self) -> Command {
        self.wharf_at(Path::new(env!("CARGO_BIN_EXE_wharf")))
    }

    /// [`Env::wharf`] with the wharf binary at `bin` (a copy a test may see attacked).
    pub fn wharf_at(&self, bin: &Path) -> Command {
        let mut c = Command::new(bin);
        c.arg("--root").arg(&self.root);
        c.env_remove("WHARF_ROOT")
            .env_remove("RUST_LOG")
            .env_remove("SOURCE_DATE_EPOCH");
        c.stdin(Stdio::null());
        c
    }

    /// Runs wharf with `args`; returns its output whatever the status.
    pub fn run(&self, args: &[&str]) -> Output {
        self.wharf().args(args).output().expect("spawn wharf")
    }

    /// Runs wharf with `args`, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "wharf {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs wharf with `args`, asserts failure, returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "wharf {args:?} succeeded but should have failed:\nstdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// The store database's bytes (and its WAL's): a read must leave them as they were.
    pub fn db_bytes(&self) -> Vec<(String, Vec<u8>)> {
        ["wharf.db", "wharf.db-wal"]
            .iter()
            .map(|f| {
                (
                    f.to_string(),
                    fs::read(self.root.join(f)).unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Imports a fixture tarball as `reference`; returns the image id (sha256:...).
    pub fn import(&self, tar: &Path, reference: &str) -> String {
        self.ok(&["import", tar.to_str().expect("utf-8 path"), reference])
            .trim()
            .to_string()
    }

    /// Every entry under `root/sub`, sorted, as relative paths.
    pub fn tree(&self, sub: &str) -> Vec<String> {
        let base = self.root.join(sub);
        let mut out = Vec::new();
        fn walk(base: &Path, p: &Path, out: &mut Vec<String>) {
            if let Ok(rd) = fs::read_dir(p) {
                for e in rd.flatten() {
                    let path = e.path();
                    out.push(
                        path.strip_prefix(base)
                            .unwrap_or(&path)
                            .display()
                            .to_string(),
                    );
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        walk(base, &path, out);
                    }
                }
            }
        }
        walk(&base, &base, &mut out);
        out.sort();
        out
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // aardvark-dns, which netavark started for this root's DNS networks, lives until
        // their last container leaves; a failed test may leave one: stop it by its pid file.
        let pidfile = self.root.join("netavark/aardvark-dns/aardvark.pid");
        if let Some(pid) = fs::read_to_string(pidfile)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
            .filter(|p| *p > 1)
        {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let root = self.root.to_string_lossy().into_owned();
            if String::from_utf8_lossy(&cmdline).contains(&root) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        // The native backend keeps a network's bridge (and its subnet in the firewall table)
        // as long as the network: this root's go with it.
        let db = self.root.join("wharf.db");
        if db.exists() {
            let nets: Vec<(String, String)> = rusqlite::Connection::open(&db)
                .and_then(|c| {
                    c.prepare("SELECT interface, subnet FROM networks")
                        .and_then(|mut s| {
                            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
                        })
                })
                .unwrap_or_default();
            for (iface, subnet) in nets {
                if let Ok(subnet) = subnet.parse() {
                    let _ = wharf::network::native::remove_network(&iface, subnet);
                }
            }
        }
        unmount_below(self.dir.path());
    }
}

/// Lazily unmounts every mount point at or below `dir`, deepest first.
pub fn unmount_below(dir: &Path) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Mount points of this host at or below `dir` (to assert that nothing was left behind).
pub fn mounts_below(dir: &Path) -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .map(str::to_string)
        .collect()
}

/// Removes the named containers (`wharf rm -f`, which kills them) when dropped, so a failing
/// test leaves no monitor or container process behind. Bind it to a named variable
/// (`let _c = Cleanup::new(..)`), not `_`, or it is dropped at once.
pub struct Cleanup<'a> {
    env: &'a Env,
    names: Vec<String>,
}

impl<'a> Cleanup<'a> {
    pub fn new(env: &'a Env, names: &[&str]) -> Cleanup<'a> {
        Cleanup {
            env,
            names: names.iter().map(|n| n.to_string()).collect(),
        }
    }
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = self.env.run(&["rm", "-f", n]);
        }
    }
}

/// A child process (a `wharf watch`) killed with SIGKILL and reaped when dropped, so a
/// failing test leaves nothing running.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fresh private root with the busybox fixture imported as `bb:1`.
pub fn setup() -> Env {
    let env = Env::new();
    env.import(&busybox_tar(), "bb:1");
    env
}

/// Bytes as text, invalid UTF-8 replaced.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The exit code of a finished process, -1 when a signal ended it.
pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// Parses `s` as JSON, panicking when it is not.
pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).expect("valid JSON")
}

/// Polls `f` every 20 ms until it returns Some, or panics naming `what` after `secs` seconds.
pub fn wait_until<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `wharf inspect NAME`: the container's record as JSON.
pub fn inspect(env: &Env, name: &str) -> serde_json::Value {
    let out = env.ok(&["inspect", name]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("inspect prints JSON");
    v[0].clone()
}

/// The pid of a running container, once it runs (waits up to 20 s).
pub fn running_pid(env: &Env, name: &str) -> i64 {
    wait_until(20, "the container to run", || {
        let st = inspect(env, name)["State"].clone();
        (st["Running"] == true)
            .then(|| st["Pid"].as_i64())
            .flatten()
    })
}

/// `du -s -B1 -c` of the paths: allocated bytes, each inode once (0 for no paths).
pub fn du(paths: &[PathBuf]) -> u64 {
    if paths.is_empty() {
        return 0;
    }
    let out = Command::new("du")
        .args(["-s", "-B1", "-c"])
        .args(paths)
        .output()
        .expect("run du");
    assert!(out.status.success(), "du {paths:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("du total")
}

/// `wharf import -q --change C.. TAR REFERENCE`; returns the image id without `sha256:`.
pub fn import_with(env: &Env, changes: &[&str], tar: &Path, reference: &str) -> String {
    let mut args = vec!["import", "-q"];
    for c in changes {
        args.push("--change");
        args.push(c);
    }
    let tar = tar.display().to_string();
    args.push(&tar);
    args.push(reference);
    let out = env.ok(&args);
    out.trim()
        .strip_prefix("sha256:")
        .expect("an image id")
        .to_string()
}

/// `wharf history NAME`: the runs of a container, newest first.
pub fn history(env: &Env, name: &str) -> Vec<serde_json::Value> {
    let out = env.ok(&["--format", "json", "history", name]);
    serde_json::from_str(&out).expect("history prints JSON")
}

/// A manifest `command` for busybox that exits at once on SIGTERM (a PID 1 without a handler
/// ignores it), so removing the container is quick.
pub const SLEEPER: &str = r#"["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"]"#;

/// A path as &str (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8")
}

/// Writes `tar`: the busybox fixture plus a file `/VERSION` holding `version`, so that each
/// version is a different image. Scratch files go in the env's temp dir.
pub fn versioned_busybox(env: &Env, tar: &Path, version: &str) {
    fs::copy(busybox_tar(), tar).expect("copy fixture");
    let extra = env.dir.path().join(format!("extra-{version}"));
    fs::create_dir_all(&extra).expect("mkdir");
    fs::write(extra.join("VERSION"), format!("{version}\n")).expect("write");
    let st = Command::new("tar")
        .arg("-rf")
        .arg(tar)
        .arg("-C")
        .arg(&extra)
        .arg("VERSION")
        .status()
        .expect("tar");
    assert!(st.success(), "tar -r failed");
}

impl Env {
    /// `wharf rm -f` of every container the root's database records (for Drop guards:
    /// errors are ignored, and a root with no database yet has none).
    pub fn remove_all_containers(&self) {
        let db = self.root.join("wharf.db");
        if !db.exists() {
            return;
        }
        let names: Vec<String> = rusqlite::Connection::open(&db)
            .and_then(|c| {
                c.prepare("SELECT name FROM containers")
                    .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            })
            .unwrap_or_default();
        for n in names {
            let _ = self.run(&["rm", "-f", &n]);
        }
    }
}

/// Waits until the container `name` has created `/ready` (a script's signal that its traps
/// are set: a signal sent before would hit the default action, or be ignored by a PID 1).
pub fn await_ready(env: &Env, name: &str) {
    wait_until(20, "the container's /ready", || {
        (code(&env.run(&["exec", name, "test", "-f", "/ready"])) == 0).then_some(())
    });
}

/// The pid of the monitor that owns `name`'s run, from the store (waits up to 20 s).
pub fn monitor_pid(env: &Env, name: &str) -> i32 {
    wait_until(20, "a monitor pid", || {
        rusqlite::Connection::open(env.root.join("wharf.db"))
            .and_then(|c| {
                c.query_row(
                    "SELECT monitor_pid FROM containers WHERE name = ?1",
                    [name],
                    |r| r.get::<_, Option<i32>>(0),
                )
            })
            .ok()
            .flatten()
    })
}
