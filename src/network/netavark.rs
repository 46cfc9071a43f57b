//! netavark, podman's network backend, called as podman calls it: the container's options as
//! JSON on stdin, `netavark --config DIR setup|teardown NETNS_PATH`, the status (or
//! `{"error": …}`) as JSON on stdout. aardvark-dns is started by netavark for the networks
//! with DNS; its files live in `<root>/netavark/aardvark-dns/`.
//!
//! The types are netavark's input and output (its `network/types.rs`), written here: netavark
//! is a binary, not a library.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::error::{exit, user};

/// Where distributions install netavark and aardvark-dns (Debian: /usr/lib/podman; Fedora:
/// /usr/libexec/podman), before `$PATH`.
const DIRS: [&str; 4] = [
    "/usr/libexec/podman",
    "/usr/lib/podman",
    "/usr/local/libexec/podman",
    "/usr/local/lib/podman",
];

/// The netavark and aardvark-dns binaries, or an error saying how to install them.
pub fn binaries() -> Result<(PathBuf, PathBuf)> {
    binaries_in(&search_path())
}

/// Where podman's network binaries are looked for: [`DIRS`], then `$PATH`.
fn search_path() -> Vec<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    DIRS.iter()
        .map(PathBuf::from)
        .chain(std::env::split_paths(&path))
        .collect()
}

/// One of podman's network binaries (`aardvark-dns` for the native backend).
pub fn find_binary(name: &str) -> Option<PathBuf> {
    find_in(&search_path(), name)
}

fn find_in(dirs: &[PathBuf], name: &str) -> Option<PathBuf> {
    dirs.iter().map(|d| d.join(name)).find(|p| p.is_file())
}

fn binaries_in(dirs: &[PathBuf]) -> Result<(PathBuf, PathBuf)> {
    match (find_in(dirs, "netavark"), find_in(dirs, "aardvark-dns")) {
        (Some(n), Some(a)) => Ok((n, a)),
        (n, _) => Err(user(format!(
            "bridge networks need {}, which is not installed",
            if n.is_none() {
                "netavark"
            } else {
                "aardvark-dns"
            }
        ))
        .hint(
            "install podman's network backend (Debian/Ubuntu: apt-get install netavark \
             aardvark-dns; Fedora: dnf install netavark aardvark-dns), or set `[network] \
             backend = \"native\"` in the state root's config.toml, or run with --network \
             none or --network host (`[network] default = \"none\"` makes none the default)",
        )
        .code(exit::RUNTIME)
        .into()),
    }
}

/// netavark's `NetworkOptions`: a container's networks and ports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Options {
    pub container_id: String,
    pub container_name: String,
    pub networks: BTreeMap<String, PerNetwork>,
    pub network_info: BTreeMap<String, Network>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_servers: Option<Vec<IpAddr>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerNetwork {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    pub interface_name: String,
    pub static_ips: Vec<IpAddr>,
}

/// netavark's `Network`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    pub id: String,
    pub driver: String,
    pub network_interface: String,
    pub subnets: Vec<Subnet>,
    pub ipv6_enabled: bool,
    pub internal: bool,
    pub dns_enabled: bool,
    pub ipam_options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subnet {
    pub subnet: String,
    pub gateway: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_ip: String,
    pub container_port: u16,
    pub host_port: u16,
    pub range: u16,
    pub protocol: String,
}

/// netavark's `StatusBlock` for one network.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    #[serde(default)]
    pub dns_search_domains: Option<Vec<String>>,
    #[serde(default)]
    pub dns_server_ips: Option<Vec<IpAddr>>,
    #[serde(default)]
    pub interfaces: Option<BTreeMap<String, Interface>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    pub mac_address: String,
    #[serde(default)]
    pub subnets: Option<Vec<Address>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Address {
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    pub ipnet: String,
}

impl Network {
    /// netavark's view of a network record.
    pub fn of(net: &super::Net) -> Network {
        Network {
            name: net.name.clone(),
            id: net.id.clone(),
            driver: net.driver.clone(),
            network_interface: net.interface.clone(),
            subnets: vec![Subnet {
                subnet: net.subnet.to_string(),
                gateway: IpAddr::V4(net.gateway),
            }],
            ipv6_enabled: false,
            internal: net.internal,
            dns_enabled: net.dns,
            ipam_options: BTreeMap::from([("driver".into(), "host-local".into())]),
        }
    }
}

/// The lock every wharf takes around a netavark call (the state root's when /run is not
/// writable).
const HOST_LOCK: &str = "/run/wharf-netavark.lock";

/// netavark's config dir under the state root (aardvark-dns's files are in it).
pub fn config_dir(root: &Path) -> PathBuf {
    root.join("netavark")
}

fn call(root: &Path, verb: &str, netns: &Path, opts: &Options) -> Result<Vec<u8>> {
    let (netavark, aardvark) = binaries()?;
    let dir = config_dir(root);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // One netavark at a time on the host: two first containers of a network started side by
    // side would both create its bridge and firewall chains, and a teardown removing a
    // network's chains would race a setup appending to them (the default network `wharf`
    // of two state roots shares its bridge and chains).
    let lock_path = Path::new(HOST_LOCK);
    let lock = std::fs::File::create(lock_path)
        .or_else(|_| std::fs::File::create(dir.join("wharf.lock")))
        .with_context(|| format!("cannot create {}", lock_path.display()))?;
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .context("cannot lock netavark's config dir")?;
    let input = serde_json::to_vec(opts)?;
    // netavark starts aardvark-dns, which lives on: it must hold none of our descriptors (a
    // pipe it kept open would never reach EOF, and `run -d` waits for its ready pipe's), so
    // netavark's output goes to memory files read after it exits, and every descriptor above
    // stderr is closed on its exec.
    let capture = |what: &str| -> Result<File> {
        let fd = nix::sys::memfd::memfd_create(
            c"netavark-output",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )
        .with_context(|| format!("cannot create a memory file for netavark's {what}"))?;
        Ok(File::from(fd))
    };
    let (mut stdout, mut stderr) = (capture("output")?, capture("errors")?);
    let mut cmd = Command::new(&netavark);
    cmd.arg("--config")
        .arg(&dir)
        .arg("--rootless")
        .arg("false")
        .arg("--aardvark-binary")
        .arg(&aardvark)
        .arg(verb)
        .arg(netns)
        .stdin(Stdio::piped())
        .stdout(stdout.try_clone()?)
        .stderr(stderr.try_clone()?);
    crate::runtime::sys::exec_clean(&mut cmd);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", netavark.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&input)
            .with_context(|| format!("cannot write to {}", netavark.display()))?;
    }
    let status = child
        .wait()
        .with_context(|| format!("cannot wait for {}", netavark.display()))?;
    let read = |f: &mut File| -> Vec<u8> {
        let mut b = Vec::new();
        let _ = f.seek(std::io::SeekFrom::Start(0));
        let _ = f.read_to_end(&mut b);
        b
    };
    let out = Output {
        status,
        stdout: read(&mut stdout),
        stderr: read(&mut stderr),
    };
    if !out.status.success() {
        #[derive(Deserialize)]
        struct Failure {
            error: String,
        }
        let why = serde_json::from_slice::<Failure>(&out.stdout)
            .map(|f| f.error)
            .unwrap_or_else(|_| {
                let err = String::from_utf8_lossy(&out.stderr);
                err.lines()
                    .filter(|l| !l.contains("syslog"))
                    .collect::<Vec<_>>()
                    .join("; ")
            });
        return Err(user(format!("netavark {verb} failed: {why}"))
            .hint(
                "netavark needs iptables (or nftables) and the bridge and veth kernel \
                 modules; `wharf network inspect` shows the network it was given",
            )
            .code(exit::RUNTIME)
            .into());
    }
    Ok(out.stdout)
}

/// Sets the container's networks up in the network namespace at `netns`.
pub fn setup(root: &Path, netns: &Path, opts: &Options) -> Result<BTreeMap<String, Status>> {
    let out = call(root, "setup", netns, opts)?;
    serde_json::from_slice(&out).context("netavark's answer to setup is not its status JSON")
}

/// Undoes [`setup`] with the same options.
pub fn teardown(root: &Path, netns: &Path, opts: &Options) -> Result<()> {
    call(root, "teardown", netns, opts).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_backend_says_how_to_install_it() {
        let dir = tempfile::tempdir().unwrap();
        let e = binaries_in(&[dir.path().to_path_buf()]).unwrap_err();
        let u = crate::error::find_user_error(&e).unwrap();
        assert!(
            u.message.contains("netavark, which is not installed"),
            "{}",
            u.message
        );
        let hint = u.hint.as_deref().unwrap();
        assert!(
            hint.contains("apt-get install netavark aardvark-dns")
                && hint.contains("--network none")
        );
        std::fs::write(dir.path().join("netavark"), "").unwrap();
        let e = binaries_in(&[dir.path().to_path_buf()]).unwrap_err();
        assert!(format!("{e:#}").contains("aardvark-dns"), "{e:#}");
    }

    #[test]
    fn the_options_are_netavarks_json() {
        let opts = Options {
            container_id: "c".repeat(64),
            container_name: "web".into(),
            networks: BTreeMap::from([(
                "wharf".into(),
                PerNetwork {
                    aliases: vec![],
                    interface_name: "eth0".into(),
                    static_ips: vec!["10.88.0.2".parse().unwrap()],
                },
            )]),
            network_info: BTreeMap::new(),
            port_mappings: vec![PortMapping {
                host_ip: String::new(),
                container_port: 80,
                host_port: 8080,
                range: 1,
                protocol: "tcp".into(),
            }],
            dns_servers: None,
        };
        let v: serde_json::Value = serde_json::to_value(&opts).unwrap();
        assert_eq!(v["networks"]["wharf"]["static_ips"][0], "10.88.0.2");
        assert_eq!(v["port_mappings"][0]["host_port"], 8080);
        let status: BTreeMap<String, Status> = serde_json::from_str(
            r#"{"w":{"dns_search_domains":["dns.podman"],"dns_server_ips":["10.89.0.1"],
            "interfaces":{"eth0":{"mac_address":"3a:93:bf:e9:e5:87","subnets":[{"gateway":"10.89.0.1","ipnet":"10.89.0.2/24"}]}}}}"#,
        )
        .unwrap();
        let eth0 = &status["w"].interfaces.as_ref().unwrap()["eth0"];
        assert_eq!(eth0.subnets.as_ref().unwrap()[0].ipnet, "10.89.0.2/24");
    }
}
