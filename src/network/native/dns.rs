//! Container names on networks with DNS, answered by aardvark-dns as netavark drives it: one
//! file per network in `<root>/netavark/aardvark-dns/` (its gateway, then a line per
//! container: id, addresses, names), the server started on the first entry and told of
//! every change by SIGHUP; it reads the files again, and exits when none is left.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, anyhow};

/// One container on one network, as aardvark-dns reads it.
pub struct Entry<'a> {
    pub network: &'a str,
    pub gateway: Ipv4Addr,
    pub container_id: &'a str,
    pub address: Ipv4Addr,
    pub names: Vec<String>,
    /// The container's own `--dns` servers, which aardvark-dns asks for other names.
    pub servers: &'a [IpAddr],
}

pub fn dir(root: &Path) -> PathBuf {
    crate::network::netavark::config_dir(root).join("aardvark-dns")
}

fn lock(root: &Path) -> Result<nix::fcntl::Flock<File>> {
    let path = crate::network::netavark::config_dir(root).join("aardvark.lock");
    let f = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("cannot lock {}", path.display()))
}

fn join(v: &[impl ToString]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Adds the container's entries and tells aardvark-dns (starting it when it is not running).
pub fn add(root: &Path, aardvark: &Path, entries: &[Entry<'_>]) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let dir = dir(root);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let _lock = lock(root)?;
    for e in entries {
        let path = dir.join(e.network);
        let mut f = match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                writeln!(f, "{}", e.gateway)?;
                f
            }
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                OpenOptions::new().append(true).open(&path)?
            }
            Err(err) => {
                return Err(err).with_context(|| format!("cannot write {}", path.display()));
            }
        };
        let servers = if e.servers.is_empty() {
            String::new()
        } else {
            format!(" {}", join(e.servers))
        };
        // No IPv6 address: an empty field between two spaces, as netavark writes it.
        writeln!(
            f,
            "{} {}  {}{servers}",
            e.container_id,
            e.address,
            join(&e.names)
        )
        .with_context(|| format!("cannot write {}", path.display()))?;
    }
    notify(root, aardvark, true)
}

/// Removes the container's entries from the files of `networks`.
pub fn remove(root: &Path, aardvark: &Path, container_id: &str, networks: &[&str]) -> Result<()> {
    let dir = dir(root);
    if networks.is_empty() || !dir.exists() {
        return Ok(());
    }
    let _lock = lock(root)?;
    let mut changed = false;
    for n in networks {
        let path = dir.join(n);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let mut lines = text.lines();
        let head = lines.next().unwrap_or_default();
        let keep: Vec<&str> = lines
            .filter(|l| l.split(' ').next() != Some(container_id))
            .collect();
        changed = true;
        if keep.is_empty() {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        } else {
            let mut body = format!("{head}\n");
            for l in keep {
                body.push_str(l);
                body.push('\n');
            }
            crate::store::fsutil::write_atomic(&path, body.as_bytes(), 0o644)?;
        }
    }
    if changed {
        notify(root, aardvark, false)?;
    }
    Ok(())
}

fn server_pid(dir: &Path) -> Option<i32> {
    std::fs::read_to_string(dir.join("aardvark.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
        .filter(|p| *p > 1)
}

/// Waits until aardvark-dns `pid` catches SIGHUP. aardvark-dns 1.4 writes its pid file and
/// tells its parent it is ready before it installs its handler: a SIGHUP in between takes
/// the default action and kills it (two containers started side by side, the second one's
/// signal arriving while the first one's server starts). False when it is gone.
fn await_hup_handler(pid: i32) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            return false;
        };
        let caught = status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << (libc::SIGHUP - 1)) != 0);
        if caught || std::time::Instant::now() > deadline {
            return caught;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// SIGHUP to the running aardvark-dns; `start`: start one when none runs.
fn notify(root: &Path, aardvark: &Path, start: bool) -> Result<()> {
    let dir = dir(root);
    if let Some(pid) = server_pid(&dir).filter(|p| await_hup_handler(*p)) {
        match nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGHUP,
        ) {
            Ok(()) => return Ok(()),
            Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => return Err(anyhow!("cannot signal aardvark-dns ({pid}): {e}")),
        }
    }
    if !start {
        return Ok(());
    }
    // It forks and its parent exits once it serves; it must hold none of our descriptors (a
    // pipe it kept open would never reach EOF).
    let mut cmd = Command::new(aardvark);
    cmd.arg("--config")
        .arg(&dir)
        .args(["-p", "53", "run"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    crate::runtime::sys::exec_clean(&mut cmd);
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {}", aardvark.display()))?;
    if !status.success() {
        return Err(anyhow!("aardvark-dns did not start ({status})"));
    }
    // The next writer's SIGHUP must find its handler (we hold the files' lock meanwhile).
    match server_pid(&dir) {
        Some(pid) if await_hup_handler(pid) => Ok(()),
        _ => Err(anyhow!("aardvark-dns started but does not serve")),
    }
}
