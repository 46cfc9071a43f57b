//! A container's place on its networks while its monitor runs: the namespace file, the
//! addresses, the reserved host ports, and netavark's setup, recorded in
//! `<root>/containers/<id>/network.json` before anything is made, so that whoever finds the
//! owner dead ([`crate::lifecycle::recover`]) tears down exactly what was set up.
//!
//! The monitor attaches once ([`attach`]) and keeps the sandbox across the restarts of its
//! restart policy (same addresses, same ports); [`detach`] ends it on every exit path: the
//! monitor's end, a `--rm` run's end, and recovery after a killed monitor.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::native;
use super::netavark::{self, Options, PerNetwork, PortMapping};
use super::ports::{self, Binding, Reserved};
use super::{Net, netns};
use crate::container::Record;
use crate::error::{exit, user};
use crate::model::Network;
use crate::policy::NetworkBackend;
use crate::store::{Store, fsutil};

/// `network.json`: what was set up for the container's current run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub netns: PathBuf,
    /// Who set it up, and so tears it down (files from before the native backend: netavark).
    #[serde(default = "legacy_backend")]
    pub backend: NetworkBackend,
    /// The backend's input (netavark's JSON): teardown sends it back unchanged.
    pub options: Options,
    /// netavark's answer, per network (empty until setup answered).
    #[serde(default)]
    pub status: BTreeMap<String, netavark::Status>,
    #[serde(default)]
    pub ports: Vec<Binding>,
    /// Network name → (network id, address, gateway, prefix length).
    #[serde(default)]
    pub addresses: BTreeMap<String, Endpoint>,
}

/// A container's address on one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub network_id: String,
    pub interface: String,
    pub address: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub prefix: u8,
    #[serde(default)]
    pub mac: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    pub dns: bool,
}

fn legacy_backend() -> NetworkBackend {
    NetworkBackend::Netavark
}

fn setup(
    backend: NetworkBackend,
    root: &Path,
    netns: &Path,
    opts: &Options,
) -> Result<BTreeMap<String, netavark::Status>> {
    match backend {
        NetworkBackend::Native => native::setup(root, netns, opts),
        NetworkBackend::Netavark => netavark::setup(root, netns, opts),
    }
}

/// `keep_netns`: only some networks go (a disconnect); the namespace stays.
fn teardown(
    backend: NetworkBackend,
    root: &Path,
    netns: &Path,
    opts: &Options,
    keep_netns: bool,
) -> Result<()> {
    match backend {
        NetworkBackend::Native => native::teardown(root, netns, opts, keep_netns),
        NetworkBackend::Netavark => netavark::teardown(root, netns, opts),
    }
}

fn state_path(store: &Store, id: &str) -> PathBuf {
    store.container_dir(id).join("network.json")
}

/// The network state of a running container (None: not on a bridge network, or not
/// running). Reads change nothing.
pub fn state(store: &Store, id: &str) -> Option<State> {
    let bytes = std::fs::read(state_path(store, id)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Not fsynced: what it describes (the namespace, the veths, the firewall elements) is gone
/// after a crash of the host, and a crash of the process leaves the file whole.
fn save(store: &Store, id: &str, st: &State) -> Result<()> {
    store.make_container_dir(id)?;
    fsutil::write_atomic_volatile(&state_path(store, id), &serde_json::to_vec(st)?, 0o600)
}

/// A container's network while its monitor runs. Dropped without [`Sandbox::detach`] (an
/// error path), it tears itself down.
pub struct Sandbox {
    root: PathBuf,
    id: String,
    pub state: State,
    netns: File,
    _ports: Reserved,
    done: bool,
}

impl Sandbox {
    /// The namespace for the container's init to join (`setns`).
    pub fn netns_fd(&self) -> RawFd {
        self.netns.as_raw_fd()
    }

    /// Tears the sandbox down: netavark's teardown, the namespace, the addresses.
    pub fn detach(mut self, store: &Store) {
        self.done = true;
        if let Err(e) = detach(store, &self.id) {
            tracing::warn!("cannot tear down the network of {}: {e:#}", &self.id[..12]);
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        match Store::open(&self.root) {
            Ok(store) => {
                if let Err(e) = detach(&store, &self.id) {
                    tracing::warn!("cannot tear down the network of {}: {e:#}", &self.id[..12]);
                }
            }
            Err(e) => tracing::warn!("cannot open the store to tear down a network: {e:#}"),
        }
    }
}

/// Sets up the container's bridge networks (None for the other modes): reserves its host
/// ports, hands it an address on each network, makes its namespace and runs netavark's
/// setup. Whatever fails leaves nothing behind.
pub fn attach(store: &Store, rec: &Record) -> Result<Option<Sandbox>> {
    if rec.config.network != Network::Bridge {
        return Ok(None);
    }
    let backend = crate::policy::network_backend(store.root())?;
    match backend {
        NetworkBackend::Native => native::nft::check()?,
        NetworkBackend::Netavark => {
            netavark::binaries()?;
        }
    }
    // Debris of a run whose owner died before recovery saw it.
    if state_path(store, &rec.id).exists() {
        detach(store, &rec.id)?;
    }
    let net = &rec.config.net;
    let mut nets: Vec<(Net, Vec<String>)> = Vec::new();
    let attachments = if net.networks.is_empty() {
        vec![crate::model::NetworkAttachment {
            network: super::DEFAULT_NETWORK.into(),
            aliases: vec![],
        }]
    } else {
        net.networks.clone()
    };
    for a in &attachments {
        let n =
            super::find(store, &a.network).map_err(|e| {
                match crate::error::find_user_error(&e) {
                    Some(u) => anyhow::Error::new(u.clone().code(exit::RUNTIME)),
                    None => e,
                }
            })?;
        nets.push((n, a.aliases.clone()));
    }
    if nets.iter().all(|(n, _)| n.internal) && !net.ports.is_empty() {
        return Err(user("an internal network cannot publish ports")
            .hint("join a network that is not --internal, or drop -p")
            .code(exit::RUNTIME)
            .into());
    }
    let reserved = ports::reserve(&net.ports, &[])?;
    // From here on, a failure undoes what was made (`detach` is idempotent).
    let undo = |e: anyhow::Error| -> anyhow::Error {
        if let Err(u) = detach(store, &rec.id) {
            tracing::warn!("cannot undo a failed network setup: {u:#}");
        }
        e
    };
    let mut options = Options {
        container_id: rec.id.clone(),
        container_name: rec.name.clone(),
        networks: BTreeMap::new(),
        network_info: BTreeMap::new(),
        port_mappings: reserved
            .bindings
            .iter()
            .map(|b| PortMapping {
                host_ip: if b.host_ip.is_unspecified() {
                    String::new()
                } else {
                    b.host_ip.to_string()
                },
                container_port: b.container_port,
                host_port: b.host_port,
                range: 1,
                protocol: b.protocol.to_string(),
            })
            .collect(),
        dns_servers: (!net.dns.is_empty()).then(|| net.dns.clone()),
    };
    let mut addresses = BTreeMap::new();
    for (i, (n, aliases)) in nets.iter().enumerate() {
        let addr = super::allocate(store, n, &rec.id).map_err(undo)?;
        join(
            &mut options,
            &mut addresses,
            rec,
            n,
            aliases,
            format!("eth{i}"),
            addr,
        );
    }
    let netns = store.root().join("netns").join(&rec.id);
    let mut st = State {
        netns: netns.clone(),
        backend,
        options,
        status: BTreeMap::new(),
        ports: reserved.bindings.clone(),
        addresses,
    };
    save(store, &rec.id, &st).map_err(undo)?;
    netns::create(&netns).map_err(undo)?;
    st.status = setup(backend, store.root(), &netns, &st.options).map_err(undo)?;
    for (name, ep) in st.addresses.iter_mut() {
        if let Some(i) = st.status.get(name).and_then(|s| s.interfaces.as_ref())
            && let Some(iface) = i.get(&ep.interface)
        {
            ep.mac = iface.mac_address.clone();
        }
    }
    save(store, &rec.id, &st).map_err(undo)?;
    let file = File::open(&netns)
        .with_context(|| format!("cannot open {}", netns.display()))
        .map_err(undo)?;
    Ok(Some(Sandbox {
        root: store.root().to_path_buf(),
        id: rec.id.clone(),
        state: st,
        netns: file,
        _ports: reserved,
        done: false,
    }))
}

/// Adds network `n` (the container's address `addr` on it, as `interface`) to netavark's
/// options and to the container's endpoints: its DNS names are its aliases, its hostname and
/// short id (netavark adds the container's name).
fn join(
    options: &mut Options,
    addresses: &mut BTreeMap<String, Endpoint>,
    rec: &Record,
    n: &Net,
    aliases: &[String],
    interface: String,
    addr: Ipv4Addr,
) {
    let mut names = aliases.to_vec();
    for extra in [&rec.config.hostname, &rec.id[..12].to_string()] {
        if *extra != rec.name && !names.contains(extra) {
            names.push(extra.clone());
        }
    }
    options.networks.insert(
        n.name.clone(),
        PerNetwork {
            aliases: names,
            interface_name: interface.clone(),
            static_ips: vec![IpAddr::V4(addr)],
        },
    );
    options
        .network_info
        .insert(n.name.clone(), netavark::Network::of(n));
    addresses.insert(
        n.name.clone(),
        Endpoint {
            network_id: n.id.clone(),
            interface,
            address: addr,
            gateway: n.gateway,
            prefix: n.subnet.prefix_len(),
            mac: String::new(),
            aliases: aliases.to_vec(),
            dns: n.dns,
        },
    );
}

/// Tears down what [`attach`] set up for container `id`, from its `network.json`: netavark's
/// teardown with the same options, the namespace file, the addresses. Idempotent; cheap when
/// there is nothing (one stat).
pub fn detach(store: &Store, id: &str) -> Result<()> {
    let path = state_path(store, id);
    let st = match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice::<State>(&b).ok(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return super::release(store, id);
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut first_err = None;
    if let Some(st) = st {
        if st.netns.exists()
            && let Err(e) = teardown(st.backend, store.root(), &st.netns, &st.options, false)
        {
            {
                // A setup cut short leaves less than it says: teardown removes what it finds
                // (the veth goes with the namespace anyway).
                tracing::debug!("network teardown of {id}: {e:#}");
            }
        }
        if let Err(e) = netns::remove(&st.netns) {
            first_err = Some(e);
        }
    }
    super::release(store, id)?;
    if let Err(e) = std::fs::remove_file(&path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        first_err.get_or_insert(anyhow::Error::new(e));
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The network namespace of the running container `target` (`--network container:NAME`),
/// with its network state for /etc/hosts and resolv.conf.
pub fn join_container(store: &Store, target: &str) -> Result<(File, Option<State>, String)> {
    let rec = crate::container::find(store, target).map_err(|_| {
        user(format!(
            "the container {target} whose network this one shares is gone"
        ))
        .hint("recreate this container with another --network")
        .code(exit::RUNTIME)
    })?;
    let pid = rec.live_pid().ok_or_else(|| {
        user(format!(
            "the container {} whose network this one shares is not running",
            rec.name
        ))
        .hint(format!("start it first: wharf start {}", rec.name))
        .code(exit::RUNTIME)
    })?;
    let path = format!("/proc/{pid}/ns/net");
    let f = File::open(&path).with_context(|| format!("cannot open {path}"))?;
    Ok((f, state(store, &rec.id), rec.config.hostname.clone()))
}

/// The container's extra /etc/hosts lines and its /etc/resolv.conf, from its network state
/// (None: not on a bridge network) and its `--add-host`/`--dns*` options.
pub fn etc_files(
    cfg: &crate::model::ContainerConfig,
    st: Option<&State>,
    hostname: &str,
) -> (Vec<String>, Vec<u8>) {
    let mut hosts = Vec::new();
    let mut resolv = String::new();
    let mut search: Vec<String> = Vec::new();
    let mut servers: Vec<IpAddr> = Vec::new();
    if let Some(st) = st {
        for ep in st.addresses.values() {
            let line = format!("{}\t{hostname}", ep.address);
            if !hosts.contains(&line) {
                hosts.push(line);
            }
        }
        for s in st.status.values() {
            for ip in s.dns_server_ips.iter().flatten() {
                if !servers.contains(ip) {
                    servers.push(*ip);
                }
            }
            for d in s.dns_search_domains.iter().flatten() {
                if !search.contains(d) {
                    search.push(d.clone());
                }
            }
        }
    }
    for h in &cfg.net.add_hosts {
        if let Some((name, ip)) = h.split_once(':') {
            hosts.push(format!("{ip}\t{name}"));
        }
    }
    // On a network with DNS, the container asks aardvark-dns (which forwards to --dns);
    // otherwise --dns, else the host's resolvers (a loopback resolver is unreachable from
    // a namespace of its own), else docker's fallback.
    if servers.is_empty() {
        servers = cfg.net.dns.clone();
    }
    let host_resolv = if servers.is_empty() && cfg.network == Network::Host {
        std::fs::read_to_string("/etc/resolv.conf").ok()
    } else {
        None
    };
    if let Some(h) = host_resolv {
        resolv = h;
    } else {
        if servers.is_empty() {
            let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            for l in host.lines() {
                let mut f = l.split_whitespace();
                match (f.next(), f.next()) {
                    (Some("nameserver"), Some(ip)) => {
                        if let Ok(ip) = ip.parse::<IpAddr>()
                            && !ip.is_loopback()
                        {
                            servers.push(ip);
                        }
                    }
                    (Some("search"), _) if cfg.net.dns_search.is_empty() => {
                        search.extend(l.split_whitespace().skip(1).map(String::from));
                    }
                    _ => {}
                }
            }
        }
        if servers.is_empty() {
            servers = vec![
                IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)),
                IpAddr::V4(Ipv4Addr::new(8, 8, 4, 4)),
            ];
        }
        search.extend(cfg.net.dns_search.iter().cloned());
        if !search.is_empty() {
            resolv.push_str(&format!("search {}\n", search.join(" ")));
        }
        for s in &servers {
            resolv.push_str(&format!("nameserver {s}\n"));
        }
        if !cfg.net.dns_options.is_empty() {
            resolv.push_str(&format!("options {}\n", cfg.net.dns_options.join(" ")));
        }
    }
    (hosts, resolv.into_bytes())
}

/// The host side of a published port's container address (the tests and `port` read it).
pub fn bindings(store: &Store, id: &str) -> Vec<Binding> {
    state(store, id).map(|s| s.ports).unwrap_or_default()
}

/// Bytes received and sent by the network namespace of process `pid`, over its interfaces
/// other than loopback (`/proc/<pid>/net/dev`: the reader's view is the process's namespace).
pub fn net_io(pid: i32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
    let mut total = (0u64, 0u64);
    for line in text.lines().skip(2) {
        let Some((iface, rest)) = line.split_once(':') else {
            continue;
        };
        if iface.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        if f.len() >= 9 {
            total.0 += f[0];
            total.1 += f[8];
        }
    }
    Some(total)
}

/// `<root>/netns`, where the namespace files live.
pub fn netns_dir(root: &Path) -> PathBuf {
    root.join("netns")
}

fn not_bridge(rec: &Record) -> anyhow::Error {
    user(format!(
        "container {} is on --network {}, not on bridge networks",
        rec.name,
        rec.config.network.mode()
    ))
    .hint("recreate it with --network NAME to join networks")
    .into()
}

/// The options of one network of `st`, for a live connect or disconnect.
fn one_network(st: &State, name: &str) -> Options {
    Options {
        networks: st
            .options
            .networks
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(n, p)| (n.clone(), p.clone()))
            .collect(),
        network_info: st
            .options
            .network_info
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(n, p)| (n.clone(), p.clone()))
            .collect(),
        port_mappings: Vec::new(),
        ..st.options.clone()
    }
}

/// `network connect`: the container joins `network` from its next start, and at once when
/// it runs (a new interface, eth1, eth2, …, in its namespace).
pub fn connect(store: &Store, input: &str, network: &str, aliases: &[String]) -> Result<()> {
    let rec = crate::container::find(store, input)?;
    if rec.config.network != Network::Bridge {
        return Err(not_bridge(&rec));
    }
    let n = super::find(store, network)?;
    if !aliases.is_empty() && !n.dns {
        return Err(
            user(format!("the network {} has no DNS for --alias", n.name))
                .hint("give aliases on a network with DNS")
                .into(),
        );
    }
    let mut cfg = rec.config.clone();
    if cfg.net.networks.is_empty() {
        cfg.net.networks.push(crate::model::NetworkAttachment {
            network: super::DEFAULT_NETWORK.into(),
            aliases: vec![],
        });
    }
    if cfg.net.networks.iter().any(|a| a.network == n.name) {
        return Err(user(format!(
            "container {} is already on the network {}",
            rec.name, n.name
        ))
        .hint("`wharf inspect` shows its networks")
        .into());
    }
    cfg.net.networks.push(crate::model::NetworkAttachment {
        network: n.name.clone(),
        aliases: aliases.to_vec(),
    });
    if rec.is_up()
        && let Some(mut st) = state(store, &rec.id)
    {
        let addr = super::allocate(store, &n, &rec.id)?;
        let interface = format!("eth{}", st.addresses.len());
        join(
            &mut st.options,
            &mut st.addresses,
            &rec,
            &n,
            aliases,
            interface.clone(),
            addr,
        );
        let one = one_network(&st, &n.name);
        let status = match setup(st.backend, store.root(), &st.netns, &one) {
            Ok(s) => s,
            Err(e) => {
                release_on(store, &n, &rec.id)?;
                return Err(e);
            }
        };
        let mac = status
            .get(&n.name)
            .and_then(|s| {
                s.interfaces
                    .as_ref()?
                    .get(&interface)
                    .map(|i| i.mac_address.clone())
            })
            .unwrap_or_default();
        st.status.extend(status);
        if let Some(ep) = st.addresses.get_mut(&n.name) {
            ep.mac = mac;
        }
        save(store, &rec.id, &st)?;
        refresh_etc(&rec, &st);
    }
    crate::container::set_config(store, &rec.id, &cfg)
}

/// Rewrites a running container's /etc/hosts and /etc/resolv.conf after its networks changed
/// (a resolver of a network it joined, the address of one it left), as they would be at its
/// next start. They are bind mounts of files in its /dev tmpfs, written in place through its
/// root: `openat2(RESOLVE_IN_ROOT)` from `/proc/PID/root`, the last component not followed,
/// so no symlink the container made leads outside it, and only a regular file is written. A
/// failure (a read-only file, a container that replaced its own) is a warning: the network
/// change itself stands.
fn refresh_etc(rec: &Record, st: &State) {
    let Some(pid) = rec.live_pid() else { return };
    let (hosts, resolv) = etc_files(&rec.config, Some(st), &rec.config.hostname);
    let files = crate::runtime::launch::etc_files(&rec.config.hostname, &hosts, &resolv);
    let root = match File::open(format!("/proc/{pid}/root")) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("cannot reach the files of container {}: {e}", rec.name);
            return;
        }
    };
    let write = |content: &[u8], dest: &str| -> std::io::Result<()> {
        // Not truncated before it is known to be a regular file: a container able to replace
        // the mount could leave a FIFO (O_NONBLOCK: no wait for a reader) or a device there.
        let fd = crate::runtime::sys::open_in_root(
            root.as_raw_fd(),
            Path::new(dest),
            libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
        )?;
        let mut f = File::from(fd);
        if !f.metadata()?.is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
        f.set_len(0)?;
        std::io::Write::write_all(&mut f, content)
    };
    for (content, dest) in files.iter().filter(|(_, d)| *d != "/etc/hostname") {
        if let Err(e) = write(content, dest) {
            tracing::warn!(
                "cannot update {dest} of container {}: {e}; it changes at its next start",
                rec.name
            );
        }
    }
}

/// `network disconnect`: the container leaves `network` (at once when it runs). Its last
/// network cannot be left: a bridge-mode container needs one.
pub fn disconnect(store: &Store, input: &str, network: &str) -> Result<()> {
    let rec = crate::container::find(store, input)?;
    if rec.config.network != Network::Bridge {
        return Err(not_bridge(&rec));
    }
    let n = super::find(store, network)?;
    let mut cfg = rec.config.clone();
    let joined = if cfg.net.networks.is_empty() {
        vec![super::DEFAULT_NETWORK.to_string()]
    } else {
        cfg.net.networks.iter().map(|a| a.network.clone()).collect()
    };
    if !joined.contains(&n.name) {
        return Err(user(format!(
            "container {} is not on the network {}",
            rec.name, n.name
        ))
        .hint("`wharf inspect` shows its networks")
        .into());
    }
    if joined.len() == 1 {
        return Err(user(format!(
            "the network {} is the last one of container {}",
            n.name, rec.name
        ))
        .hint("connect it to another network first")
        .into());
    }
    cfg.net.networks.retain(|a| a.network != n.name);
    if rec.is_up()
        && let Some(mut st) = state(store, &rec.id)
        && st.options.networks.contains_key(&n.name)
    {
        teardown(
            st.backend,
            store.root(),
            &st.netns,
            &one_network(&st, &n.name),
            true,
        )?;
        st.options.networks.remove(&n.name);
        st.options.network_info.remove(&n.name);
        st.status.remove(&n.name);
        st.addresses.remove(&n.name);
        save(store, &rec.id, &st)?;
        release_on(store, &n, &rec.id)?;
        refresh_etc(&rec, &st);
    }
    crate::container::set_config(store, &rec.id, &cfg)
}

fn release_on(store: &Store, net: &Net, id: &str) -> Result<()> {
    store
        .db()
        .prepare_cached("DELETE FROM net_addresses WHERE network = ?1 AND container_id = ?2")?
        .execute(rusqlite::params![net.id, id])?;
    Ok(())
}
