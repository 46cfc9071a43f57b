//! Networks: bridge networks and the addresses on them (the `networks` and `net_addresses`
//! tables), and a container's place on them ([`sandbox`]).
//!
//! The mechanism is a backend: wharf's own ([`native`], the default: the kernel's bridge,
//! veth, routing and nftables over netlink, with aardvark-dns for names) or podman's
//! netavark ([`netavark`], `[network] backend = "netavark"`), both driven with netavark's
//! options and answering its status. wharf owns what a backend leaves to its caller: the
//! networks' records, a persistent address allocator per network (a write transaction of
//! the store, so an address is never handed out twice), the network namespace's lifetime
//! ([`netns`]), the host ports a container publishes ([`ports`]: reserved by the monitor for
//! the run's lifetime) and teardown with the same options as setup ([`sandbox`]).
//!
//! - `wharf`: the default network, as docker's `bridge`: outbound NAT, no DNS.
//! - user networks (`network create`) and each project's `<project>_default` (apply): DNS
//!   by container name and alias.

pub mod native;
pub mod netavark;
mod netns;
pub mod ports;
pub mod sandbox;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use ipnet::Ipv4Net;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use sha2::Digest;

use crate::error::user;
use crate::names::{self, NameKind};
use crate::store::{Store, now_ns, random_hex};

pub use sandbox::{Sandbox, detach};

/// The default network's name (docker's `bridge`).
pub const DEFAULT_NETWORK: &str = "wharf";
/// The default network's host bridge.
const DEFAULT_INTERFACE: &str = "wharf0";
/// Names docker reserves for network modes.
const RESERVED: [&str; 4] = ["none", "host", "bridge", "default"];

/// A network's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Net {
    pub id: String,
    pub name: String,
    pub driver: String,
    /// The host bridge.
    pub interface: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// aardvark-dns answers container names and aliases on it.
    pub dns: bool,
    /// No outbound NAT and no published ports.
    pub internal: bool,
    /// The project whose apply made it.
    pub project: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub created_at: i64,
}

/// What `network create` (or apply) asks for.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    pub internal: bool,
    pub no_dns: bool,
    pub labels: BTreeMap<String, String>,
    pub project: Option<String>,
}

const COLUMNS: &str =
    "id, name, driver, interface, subnet, gateway, dns, internal, project, labels, created_at";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Net> {
    let bad = |i: usize, e: String| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
    };
    let subnet: String = r.get(4)?;
    let gateway: String = r.get(5)?;
    let labels: String = r.get(9)?;
    Ok(Net {
        id: r.get(0)?,
        name: r.get(1)?,
        driver: r.get(2)?,
        interface: r.get(3)?,
        subnet: subnet.parse().map_err(|e| bad(4, format!("{e}")))?,
        gateway: gateway.parse().map_err(|e| bad(5, format!("{e}")))?,
        dns: r.get(6)?,
        internal: r.get(7)?,
        project: r.get(8)?,
        labels: serde_json::from_str(&labels).map_err(|e| bad(9, e.to_string()))?,
        created_at: r.get(10)?,
    })
}

/// Every network, by name.
pub fn list(store: &Store) -> Result<Vec<Net>> {
    let mut st = store
        .db()
        .prepare_cached(&format!("SELECT {COLUMNS} FROM networks ORDER BY name"))?;
    let rows = st.query_map([], from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The network named `name` (or whose id starts with it), if any.
pub fn lookup(store: &Store, name: &str) -> Result<Option<Net>> {
    let by_name = store
        .db()
        .prepare_cached(&format!("SELECT {COLUMNS} FROM networks WHERE name = ?1"))?
        .query_row([name], from_row)
        .optional()?;
    if by_name.is_some() || name.len() < 3 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(by_name);
    }
    let mut st = store.db().prepare_cached(&format!(
        "SELECT {COLUMNS} FROM networks WHERE id >= ?1 AND id < ?1 || 'g' LIMIT 2"
    ))?;
    let found: Vec<Net> = st
        .query_map([name], from_row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(if found.len() == 1 {
        found.into_iter().next()
    } else {
        None
    })
}

/// The network `name`; the default network is made on first use.
pub fn find(store: &Store, name: &str) -> Result<Net> {
    if name == DEFAULT_NETWORK {
        return ensure_default(store);
    }
    lookup(store, name)?.ok_or_else(|| {
        user(format!("network {name} not found"))
            .hint("`wharf network ls` lists the networks; `wharf network create NAME` makes one")
            .into()
    })
}

/// The default network `wharf`, made on first use: the first free /16 of 10.88.0.0/16,
/// 10.87.0.0/16, … down to 10.49.0.0/16, without DNS (as docker's default bridge). The
/// default state root's is on the bridge `wharf0`; another root's (tests, a second wharf)
/// gets a bridge of its own and starts its search at an offset from its path, so two roots
/// never share a bridge with two address allocators, and rarely a subnet.
pub fn ensure_default(store: &Store) -> Result<Net> {
    if let Some(n) = lookup(store, DEFAULT_NETWORK)? {
        return Ok(n);
    }
    let _lock = store.lock()?;
    if let Some(n) = lookup(store, DEFAULT_NETWORK)? {
        return Ok(n);
    }
    let taken = taken_subnets(store)?;
    let id = random_hex(32);
    let main_root = store.root() == std::path::Path::new(crate::store::DEFAULT_ROOT);
    let (interface, offset) = if main_root {
        (DEFAULT_INTERFACE.to_string(), 0)
    } else {
        let h = sha2::Sha256::digest(store.root().as_os_str().as_encoded_bytes());
        (format!("wharf-{}", &id[..8]), h[0] % 40)
    };
    let subnet = (0..40u8)
        .map(|i| (offset + i) % 40)
        .map(|i| Ipv4Net::new(Ipv4Addr::new(10, 88 - i, 0, 0), 16).expect("a /16 is valid"))
        .find(|s| !taken.iter().any(|t| overlaps(s, t)))
        .ok_or_else(|| {
            user("no free /16 in 10.49.0.0-10.88.255.255 for the default network")
                .hint("free one, or run containers with --network none")
        })?;
    insert_with_id(
        store,
        &id,
        DEFAULT_NETWORK,
        &interface,
        subnet,
        first_host(&subnet),
        &CreateOptions {
            no_dns: true,
            ..CreateOptions::default()
        },
    )
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn first_host(n: &Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(n.network()) + 1)
}

/// Subnets in use: every network's, and every route of the host (an address space the host
/// reaches already must not be handed to a bridge).
fn taken_subnets(store: &Store) -> Result<Vec<Ipv4Net>> {
    let mut taken: Vec<Ipv4Net> = list(store)?.into_iter().map(|n| n.subnet).collect();
    taken.extend(host_routes());
    Ok(taken)
}

/// The host's IPv4 routes other than the default route (`/proc/net/route`).
fn host_routes() -> Vec<Ipv4Net> {
    let Ok(text) = std::fs::read_to_string("/proc/net/route") else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            // Words of network byte order, printed as host-endian integers.
            let dest = Ipv4Addr::from(dest.to_ne_bytes());
            let prefix = mask.count_ones() as u8;
            (prefix > 0)
                .then(|| Ipv4Net::new(dest, prefix).ok())
                .flatten()
        })
        .collect()
}

/// Creates a bridge network. Without a subnet, the first free /24 of 10.89.0.0/16 … 10.127.
/// 255.0/24 is taken (skipping other networks and the host's routes).
pub fn create(store: &Store, name: &str, opts: &CreateOptions) -> Result<Net> {
    names::check(NameKind::Network, name).map_err(crate::error::UserError::from)?;
    if RESERVED.contains(&name) || name == DEFAULT_NETWORK {
        return Err(user(format!("network name {name:?} is reserved"))
            .hint("choose another name")
            .into());
    }
    let _lock = store.lock()?;
    if lookup(store, name)?.is_some_and(|n| n.name == name) {
        return Err(user(format!("network {name} already exists"))
            .hint("`wharf network inspect` shows it; `wharf network rm` removes it")
            .into());
    }
    let taken = taken_subnets(store)?;
    let subnet = match opts.subnet {
        Some(s) => {
            let s = s.trunc();
            if s.prefix_len() > 30 {
                return Err(user(format!("the subnet {s} is too small"))
                    .hint("give a subnet of /30 or larger, e.g. 10.89.7.0/24")
                    .into());
            }
            let nets = list(store)?;
            if let Some(o) = nets.iter().find(|n| overlaps(&n.subnet, &s)) {
                return Err(user(format!(
                    "the subnet {s} overlaps the network {} ({})",
                    o.name, o.subnet
                ))
                .hint("choose a subnet no other network uses")
                .into());
            }
            s
        }
        None => (89u32..=127)
            .flat_map(|b| (0..=255u32).map(move |c| (b, c)))
            .map(|(b, c)| Ipv4Net::new(Ipv4Addr::new(10, b as u8, c as u8, 0), 24).expect("/24"))
            .find(|s| !taken.iter().any(|t| overlaps(s, t)))
            .ok_or_else(|| {
                user("no free /24 subnet in 10.89.0.0-10.127.255.255")
                    .hint("give one with --subnet")
            })?,
    };
    let gateway = match opts.gateway {
        Some(g) if !subnet.contains(&g) || g == subnet.network() || g == subnet.broadcast() => {
            return Err(
                user(format!("the gateway {g} is not a host address of {subnet}"))
                    .hint("give an address inside the subnet, or leave --gateway out")
                    .into(),
            );
        }
        Some(g) => g,
        None => first_host(&subnet),
    };
    let id = random_hex(32);
    // A bridge name is at most 15 bytes; from the id, so roots never collide.
    let interface = format!("wharf-{}", &id[..8]);
    insert_with_id(store, &id, name, &interface, subnet, gateway, opts)
}

fn insert_with_id(
    store: &Store,
    id: &str,
    name: &str,
    interface: &str,
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    opts: &CreateOptions,
) -> Result<Net> {
    store
        .db()
        .prepare_cached(&format!(
            "INSERT INTO networks ({COLUMNS}) VALUES (?1, ?2, 'bridge', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
        ))?
        .execute(params![
            id,
            name,
            interface,
            subnet.to_string(),
            gateway.to_string(),
            !opts.no_dns,
            opts.internal,
            opts.project,
            serde_json::to_string(&opts.labels)?,
            now_ns(),
        ])
        .with_context(|| format!("cannot record the network {name}"))?;
    lookup(store, name)?.with_context(|| format!("the network {name} vanished"))
}

/// The containers using `net`: holding an address on it, or configured to join it.
pub fn users(store: &Store, net: &Net) -> Result<Vec<crate::container::Record>> {
    Ok(crate::container::list(store)?
        .into_iter()
        .filter(|c| c.config.net.networks.iter().any(|a| a.network == net.name))
        .collect())
}

/// Removes the network `name`. A network a container holds an address on (a running one),
/// or one a container is configured to join, is refused, as docker does; the default network
/// is never removed.
pub fn remove(store: &Store, name: &str) -> Result<Net> {
    let net = find(store, name)?;
    if net.name == DEFAULT_NETWORK {
        return Err(user("the default network wharf cannot be removed")
            .hint("it holds no state while no container runs on it")
            .into());
    }
    let _lock = store.lock()?;
    let using = users(store, &net)?;
    if let Some(c) = using.first() {
        return Err(user(format!(
            "network {} is in use by container {}{}",
            net.name,
            c.name,
            if using.len() > 1 {
                format!(" and {} more", using.len() - 1)
            } else {
                String::new()
            }
        ))
        .hint("remove those containers first (`wharf rm -f NAME`), or disconnect them")
        .into());
    }
    store
        .db()
        .execute("DELETE FROM net_addresses WHERE network = ?1", [&net.id])?;
    store
        .db()
        .execute("DELETE FROM networks WHERE id = ?1", [&net.id])?;
    // netavark removes a bridge with its last container; the native backend keeps it with
    // the network (nothing to do for a bridge that is gone).
    if let Err(e) = native::remove_network(&net.interface, net.subnet) {
        tracing::warn!("cannot remove the bridge of network {}: {e:#}", net.name);
    }
    Ok(net)
}

/// Removes every network no container uses (not the default network). Returns their names.
pub fn prune(store: &Store) -> Result<Vec<String>> {
    let mut gone = Vec::new();
    for n in list(store)? {
        if n.name == DEFAULT_NETWORK || !users(store, &n)?.is_empty() {
            continue;
        }
        remove(store, &n.name)?;
        gone.push(n.name);
    }
    Ok(gone)
}

/// Hands `container_id` an address on `net`: the lowest free host address other than the
/// gateway, in one write transaction, so two starters never get the same one. A container
/// holding one already keeps it.
pub fn allocate(store: &Store, net: &Net, container_id: &str) -> Result<Ipv4Addr> {
    let tx =
        rusqlite::Transaction::new_unchecked(store.db(), rusqlite::TransactionBehavior::Immediate)?;
    let held: Option<String> = tx
        .prepare_cached(
            "SELECT address FROM net_addresses WHERE network = ?1 AND container_id = ?2",
        )?
        .query_row(params![net.id, container_id], |r| r.get(0))
        .optional()?;
    if let Some(a) = held.and_then(|a| a.parse().ok()) {
        tx.commit()?;
        return Ok(a);
    }
    let used: std::collections::HashSet<u32> = tx
        .prepare_cached("SELECT address FROM net_addresses WHERE network = ?1")?
        .query_map([&net.id], |r| r.get::<_, String>(0))?
        .filter_map(|a| a.ok()?.parse::<Ipv4Addr>().ok().map(u32::from))
        .collect();
    let (first, last) = (
        u32::from(net.subnet.network()) + 1,
        u32::from(net.subnet.broadcast()) - 1,
    );
    let gw = u32::from(net.gateway);
    let addr = (first..=last)
        .find(|a| *a != gw && !used.contains(a))
        .map(Ipv4Addr::from)
        .ok_or_else(|| {
            user(format!(
                "the network {} has no free address left in {}",
                net.name, net.subnet
            ))
            .hint("remove containers from it, or use a network with a larger subnet")
        })?;
    tx.prepare_cached(
        "INSERT INTO net_addresses (network, address, container_id) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![net.id, addr.to_string(), container_id])?;
    tx.commit()?;
    Ok(addr)
}

/// Gives back every address `container_id` holds.
pub fn release(store: &Store, container_id: &str) -> Result<()> {
    store
        .db()
        .prepare_cached("DELETE FROM net_addresses WHERE container_id = ?1")?
        .execute([container_id])?;
    Ok(())
}

/// The containers holding an address on `net` (running on it), with the address.
pub fn holders(store: &Store, net: &Net) -> Result<Vec<(String, Ipv4Addr)>> {
    let mut st = store.db().prepare_cached(
        "SELECT container_id, address FROM net_addresses WHERE network = ?1 ORDER BY address",
    )?;
    let rows = st.query_map([&net.id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for r in rows {
        let (id, a) = r?;
        if let Ok(a) = a.parse() {
            out.push((id, a));
        }
    }
    Ok(out)
}

/// How many addresses are handed out.
pub fn allocated(store: &Store) -> Result<u64> {
    Ok(store
        .db()
        .query_row("SELECT count(*) FROM net_addresses", [], |r| {
            r.get::<_, i64>(0)
        })?
        .max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_never_handed_out_twice_and_come_back_when_released() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let net = create(
            &store,
            "small",
            &CreateOptions {
                subnet: Some("10.200.9.0/29".parse().unwrap()),
                ..CreateOptions::default()
            },
        )
        .unwrap();
        assert_eq!(net.gateway, Ipv4Addr::new(10, 200, 9, 1));
        // .2 to .6: five hosts besides the gateway.
        let got: Vec<Ipv4Addr> = (0..5)
            .map(|i| allocate(&store, &net, &format!("c{i}")).unwrap())
            .collect();
        assert_eq!(got[0], Ipv4Addr::new(10, 200, 9, 2));
        assert_eq!(got[4], Ipv4Addr::new(10, 200, 9, 6));
        assert_eq!(allocate(&store, &net, "c1").unwrap(), got[1], "kept");
        let full = allocate(&store, &net, "c9").unwrap_err();
        assert!(format!("{full:#}").contains("no free address"), "{full:#}");
        release(&store, "c2").unwrap();
        assert_eq!(allocate(&store, &net, "c9").unwrap(), got[2]);
        assert_eq!(allocated(&store).unwrap(), 5);
    }

    #[test]
    fn subnets_may_not_overlap_and_names_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let sub = |s: &str| CreateOptions {
            subnet: Some(s.parse().unwrap()),
            ..CreateOptions::default()
        };
        create(&store, "a1", &sub("10.201.0.0/24")).unwrap();
        let e = create(&store, "b1", &sub("10.201.0.128/25")).unwrap_err();
        assert!(
            format!("{e:#}").contains("overlaps the network a1"),
            "{e:#}"
        );
        let e = create(&store, "a1", &sub("10.202.0.0/24")).unwrap_err();
        assert!(format!("{e:#}").contains("already exists"), "{e:#}");
        assert!(create(&store, "host", &CreateOptions::default()).is_err());
        assert!(create(&store, "bad name", &CreateOptions::default()).is_err());
        let auto = create(&store, "c1", &CreateOptions::default()).unwrap();
        assert_eq!(auto.subnet.prefix_len(), 24);
        assert!(!overlaps(&auto.subnet, &"10.201.0.0/24".parse().unwrap()));
        let d = ensure_default(&store).unwrap();
        assert_eq!((d.name.as_str(), d.dns), (DEFAULT_NETWORK, false));
        assert!(remove(&store, DEFAULT_NETWORK).is_err());
        assert_eq!(remove(&store, "a1").unwrap().name, "a1");
    }
}
