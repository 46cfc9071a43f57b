//! wharf's own network backend: the kernel's bridge, veth, nftables and routing, configured
//! in-process over netlink, with aardvark-dns for names. It takes netavark's options and
//! answers with netavark's status, so the sandbox drives either the same way.
//!
//! Why it exists: netavark 1.4 (Debian 12) spends ~300 ms of a `run --rm -p` in 58
//! `iptables` processes, making and removing the network's chains with its only container.
//! Here the per-network work (the bridge, the firewall table) is done once and kept with the
//! network; per container there is one veth pair made straight into its namespace, two map
//! elements per published port, and no process at all (aardvark-dns aside, started once).
//!
//! Setup, in order: each network's bridge ([`link::ensure_bridge`], which writes the firewall
//! table the first time), the veths ([`link::add_veths`]), the ports ([`nft::add_ports`]), the
//! DNS entries ([`dns::add`]). Teardown undoes them in reverse and tolerates what a setup cut
//! short never made.

pub mod dns;
pub mod link;
pub mod nft;

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ipnet::Ipv4Net;

use super::netavark::{Address, Interface, Network, Options, Status};
use super::ports::Binding;
use crate::error::{exit, user};
use crate::model::Protocol;

/// The search domain aardvark-dns answers names in (netavark's), besides bare names.
const DNS_DOMAIN: &str = "dns.podman";

/// One of the container's networks, from the options.
struct Joined<'a> {
    name: &'a str,
    info: &'a Network,
    interface: &'a str,
    address: Ipv4Addr,
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    aliases: &'a [String],
}

fn joined(opts: &Options) -> Result<Vec<Joined<'_>>> {
    let mut out = Vec::new();
    for (name, per) in &opts.networks {
        let info = opts
            .network_info
            .get(name)
            .with_context(|| format!("no description of the network {name}"))?;
        let sub = info
            .subnets
            .first()
            .with_context(|| format!("the network {name} has no subnet"))?;
        let subnet: Ipv4Net = sub
            .subnet
            .parse()
            .with_context(|| format!("the subnet {} of {name}", sub.subnet))?;
        let (Some(IpAddr::V4(address)), IpAddr::V4(gateway)) =
            (per.static_ips.first().copied(), sub.gateway)
        else {
            anyhow::bail!("the network {name} has no IPv4 address for the container");
        };
        out.push(Joined {
            name,
            info,
            interface: &per.interface_name,
            address,
            subnet,
            gateway,
            aliases: &per.aliases,
        });
    }
    // eth0 first: it carries the default route and the published ports.
    out.sort_by(|a, b| (a.interface.len(), a.interface).cmp(&(b.interface.len(), b.interface)));
    Ok(out)
}

/// The container's published ports, from netavark's mappings.
fn bindings(opts: &Options) -> Vec<Binding> {
    opts.port_mappings
        .iter()
        .flat_map(|m| {
            let host_ip = m.host_ip.parse().unwrap_or(Ipv4Addr::UNSPECIFIED);
            let protocol = if m.protocol == "udp" {
                Protocol::Udp
            } else {
                Protocol::Tcp
            };
            (0..m.range.max(1)).map(move |i| Binding {
                host_ip,
                host_port: m.host_port + i,
                container_port: m.container_port + i,
                protocol,
            })
        })
        .collect()
}

/// Where the ports lead: the address on the first network that is not internal.
fn port_target(nets: &[Joined<'_>]) -> Option<Ipv4Addr> {
    nets.iter().find(|j| !j.info.internal).map(|j| j.address)
}

/// The host end of a container's interface: `wh` + 10 characters of its id + the
/// interface's number (15 bytes at most, the kernel's limit).
fn host_name(container_id: &str, interface: &str) -> String {
    let n = interface.trim_start_matches("eth");
    format!("wh{}{n}", &container_id[..10.min(container_id.len())])
}

fn aardvark() -> Result<PathBuf> {
    super::netavark::find_binary("aardvark-dns").ok_or_else(|| {
        user("networks with DNS need aardvark-dns, which is not installed")
            .hint(
                "install it (Debian/Ubuntu: apt-get install aardvark-dns; Fedora: dnf install \
                 aardvark-dns), or create the network with --disable-dns",
            )
            .code(exit::RUNTIME)
            .into()
    })
}

fn ensure_bridge(j: &Joined<'_>) -> Result<u32> {
    let (subnet, internal) = (j.subnet, j.info.internal);
    link::ensure_bridge(&link::Bridge {
        name: &j.info.network_interface,
        gateway: j.gateway,
        prefix: j.subnet.prefix_len(),
        configure: &|| nft::ensure(subnet, internal),
    })
}

/// Sets the container's networks up in the namespace at `netns`. A failure of the kernel's
/// (a module missing, a refused netlink request) says what the backend needs.
pub fn setup(root: &Path, netns: &Path, opts: &Options) -> Result<BTreeMap<String, Status>> {
    setup_networks(root, netns, opts).map_err(|e| {
        if crate::error::find_user_error(&e).is_some() {
            return e;
        }
        user(format!("cannot set up the container's network: {e:#}"))
            .hint(
                "the native backend needs the kernel's bridge, veth and nf_tables (nat, fib, ct, \
                 masq) modules: modprobe bridge veth nf_tables; or set `[network] backend = \
                 \"netavark\"` in the state root's config.toml, or run with --network none",
            )
            .code(exit::RUNTIME)
            .into()
    })
}

fn setup_networks(root: &Path, netns: &Path, opts: &Options) -> Result<BTreeMap<String, Status>> {
    let nets = joined(opts)?;
    let ns = File::open(netns).with_context(|| format!("cannot open {}", netns.display()))?;
    let mut veths = Vec::new();
    let mut gateway_taken = false;
    // A marked bridge has its firewall, unless the host's ruleset was flushed since.
    let table = nft::table_exists()?;
    for j in &nets {
        let bridge = ensure_bridge(j)?;
        if !table {
            nft::ensure(j.subnet, j.info.internal)?;
        }
        let gateway = (!j.info.internal && !gateway_taken).then_some(j.gateway);
        gateway_taken |= gateway.is_some();
        veths.push(link::Veth {
            interface: j.interface.to_string(),
            host_name: host_name(&opts.container_id, j.interface),
            bridge,
            address: j.address,
            prefix: j.subnet.prefix_len(),
            gateway,
        });
    }
    link::add_veths(&ns, &veths)?;
    let ports = bindings(opts);
    if let Some(to) = port_target(&nets) {
        match nft::add_ports(&ports, to)? {
            Ok(()) => {}
            Err(libc::ENOENT) => {
                // The table went (a flushed ruleset): written again, and the ports with it.
                for j in &nets {
                    nft::ensure(j.subnet, j.info.internal)?;
                }
                if let Err(code) = nft::add_ports(&ports, to)? {
                    return Err(std::io::Error::from_raw_os_error(code))
                        .context("cannot publish the container's ports");
                }
            }
            Err(code) => {
                return Err(std::io::Error::from_raw_os_error(code))
                    .context("cannot publish the container's ports");
            }
        }
    }
    let servers = opts.dns_servers.clone().unwrap_or_default();
    let entries: Vec<dns::Entry<'_>> = nets
        .iter()
        .filter(|j| j.info.dns_enabled)
        .map(|j| {
            let mut names = vec![opts.container_name.clone()];
            names.extend(
                j.aliases
                    .iter()
                    .filter(|a| **a != opts.container_name)
                    .cloned(),
            );
            dns::Entry {
                network: j.name,
                gateway: j.gateway,
                container_id: &opts.container_id,
                address: j.address,
                names,
                servers: &servers,
            }
        })
        .collect();
    if !entries.is_empty() {
        dns::add(root, &aardvark()?, &entries)?;
    }
    Ok(nets
        .iter()
        .map(|j| {
            let mac = link::mac_text(&link::mac_of(j.address));
            let iface = Interface {
                mac_address: mac,
                subnets: Some(vec![Address {
                    gateway: Some(IpAddr::V4(j.gateway)),
                    ipnet: format!("{}/{}", j.address, j.subnet.prefix_len()),
                }]),
            };
            let status = Status {
                dns_search_domains: j.info.dns_enabled.then(|| vec![DNS_DOMAIN.to_string()]),
                dns_server_ips: j.info.dns_enabled.then(|| vec![IpAddr::V4(j.gateway)]),
                interfaces: Some(BTreeMap::from([(j.interface.to_string(), iface)])),
            };
            (j.name.to_string(), status)
        })
        .collect())
}

/// Undoes [`setup`] for the networks of `opts`. `keep_netns`: the namespace lives on (a
/// disconnect), so the interfaces are deleted; otherwise they lose their addresses now and
/// go with the namespace.
pub fn teardown(root: &Path, netns: &Path, opts: &Options, keep_netns: bool) -> Result<()> {
    let nets = joined(opts)?;
    let mut first_err = None;
    if let Some(to) = port_target(&nets)
        && let Err(e) = nft::remove_ports(&bindings(opts), to)
    {
        first_err.get_or_insert(e);
    }
    let dns: Vec<&str> = nets
        .iter()
        .filter(|j| j.info.dns_enabled)
        .map(|j| j.name)
        .collect();
    if !dns.is_empty()
        && let Some(aardvark) = super::netavark::find_binary("aardvark-dns")
        && let Err(e) = dns::remove(root, &aardvark, &opts.container_id, &dns)
    {
        first_err.get_or_insert(e);
    }
    match File::open(netns) {
        Ok(ns) => {
            let names: Vec<String> = nets.iter().map(|j| j.interface.to_string()).collect();
            if let Err(e) = link::remove_veths(&ns, &names, keep_netns) {
                first_err.get_or_insert(e);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            first_err.get_or_insert(anyhow::Error::new(e).context("cannot open the namespace"));
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// A removed network: its bridge goes, and its subnet leaves the firewall table unless a
/// bridge of another state root still has it.
pub fn remove_network(interface: &str, subnet: Ipv4Net) -> Result<()> {
    link::remove_bridge(interface)?;
    if !link::subnet_in_use(subnet)? {
        nft::forget(subnet);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_fit_the_kernels_limit() {
        let id = "0123456789abcdef".repeat(4);
        assert_eq!(host_name(&id, "eth0"), "wh01234567890");
        assert!(host_name(&id, "eth12").len() <= 15);
    }

    #[test]
    fn a_range_is_one_binding_per_port() {
        let opts = Options {
            container_id: "c".into(),
            container_name: "n".into(),
            networks: BTreeMap::new(),
            network_info: BTreeMap::new(),
            port_mappings: vec![super::super::netavark::PortMapping {
                host_ip: "127.0.0.1".into(),
                container_port: 80,
                host_port: 8080,
                range: 2,
                protocol: "udp".into(),
            }],
            dns_servers: None,
        };
        let b = bindings(&opts);
        assert_eq!(b.len(), 2);
        assert_eq!((b[1].host_port, b[1].container_port), (8081, 81));
        assert_eq!(b[0].protocol, Protocol::Udp);
        assert_eq!(b[0].host_ip, Ipv4Addr::LOCALHOST);
    }
}
