//! The native backend's links, over rtnetlink: a bridge per network (made on first use, kept
//! with the network, as docker keeps `docker0`), and per container a veth pair whose host end
//! is a port of the bridge and whose other end is made inside the container's namespace,
//! named `eth0`, `eth1`, …, with its address, its default route and a MAC derived from its
//! address (so a neighbour cache that knew the address is right for its next holder).
//!
//! Work inside a container's namespace runs on a thread of its own that joins it (`setns`
//! changes only the calling thread); its netlink socket belongs to that namespace for good.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd};

use anyhow::{Context, Result, anyhow};
use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkMessage};
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

/// The alias wharf gives a bridge once its address, sysctls and firewall are in place: a
/// bridge without it (made by netavark, or cut short) is configured again.
const MARK: &str = "wharf";

/// A positive errno from an rtnetlink error.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("cannot start netlink's event loop")
}

/// A netlink handle in the calling thread's network namespace (inside the runtime `rt`).
fn connect(rt: &tokio::runtime::Runtime) -> Result<Handle> {
    let _enter = rt.enter();
    let (conn, handle, _) = rtnetlink::new_connection().context("cannot open a netlink socket")?;
    rt.spawn(conn);
    Ok(handle)
}

async fn link(h: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    match h
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
    {
        Ok(m) => Ok(m),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(anyhow!("cannot look up the link {name}: {e}")),
    }
}

fn alias(m: &LinkMessage) -> Option<&str> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfAlias(s) => Some(s.as_str()),
        _ => None,
    })
}

/// What a network's bridge needs.
pub struct Bridge<'a> {
    pub name: &'a str,
    pub gateway: Ipv4Addr,
    pub prefix: u8,
    /// Run once the bridge has its address, before it is marked configured: the firewall.
    pub configure: &'a dyn Fn() -> Result<()>,
}

/// The bridge's index, made and configured when missing or unmarked.
pub fn ensure_bridge(b: &Bridge<'_>) -> Result<u32> {
    let rt = runtime()?;
    let h = connect(&rt)?;
    rt.block_on(async {
        let existing = link(&h, b.name).await?;
        if let Some(m) = &existing
            && alias(m) == Some(MARK)
        {
            return Ok(m.header.index);
        }
        let index = match existing {
            Some(m) => m.header.index,
            None => {
                match h
                    .link()
                    .add(LinkBridge::new(b.name).build())
                    .execute()
                    .await
                {
                    Ok(()) => {}
                    Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                    Err(e) => return Err(anyhow!("cannot create the bridge {}: {e}", b.name)),
                }
                link(&h, b.name)
                    .await?
                    .ok_or_else(|| anyhow!("the bridge {} vanished as it was made", b.name))?
                    .header
                    .index
            }
        };
        match h
            .address()
            .add(index, IpAddr::V4(b.gateway), b.prefix)
            .execute()
            .await
        {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(libc::EEXIST) => {}
            Err(e) => return Err(anyhow!("cannot give {} its address: {e}", b.name)),
        }
        // A MAC of its own, set, so that it is not the lowest of its ports' (which changes
        // as containers come and go, and with it every container's neighbour entry for the
        // gateway).
        h.link()
            .set(
                LinkUnspec::new_with_index(index)
                    .address(mac_of(b.gateway).to_vec())
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| anyhow!("cannot bring {} up: {e}", b.name))?;
        // Published ports on 127.0.0.1 are DNAT'd out of the loopback: the bridge must route
        // such packets (netavark sets the same).
        sysctl(&format!("net/ipv4/conf/{}/route_localnet", b.name), "1")?;
        sysctl("net/ipv4/ip_forward", "1")?;
        (b.configure)()?;
        h.link()
            .set(LinkUnspec::new_with_index(index).alias(MARK).build())
            .execute()
            .await
            .map_err(|e| anyhow!("cannot mark the bridge {}: {e}", b.name))?;
        Ok(index)
    })
}

/// Deletes a network's bridge (nothing to do when it is gone).
pub fn remove_bridge(name: &str) -> Result<()> {
    let rt = runtime()?;
    let h = connect(&rt)?;
    rt.block_on(async {
        if let Some(m) = link(&h, name).await? {
            match h.link().del(m.header.index).execute().await {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(libc::ENODEV) => {}
                Err(e) => return Err(anyhow!("cannot delete the bridge {name}: {e}")),
            }
        }
        Ok(())
    })
}

/// Whether an interface of the host still has an address in `subnet` (another state root's
/// bridge on the same subnet: the firewall table's element is still needed).
pub fn subnet_in_use(subnet: ipnet::Ipv4Net) -> Result<bool> {
    use rtnetlink::packet_route::address::AddressAttribute;
    let rt = runtime()?;
    let h = connect(&rt)?;
    rt.block_on(async {
        let addrs: Vec<_> = h
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| anyhow!("cannot list the host's addresses: {e}"))?;
        Ok(addrs.iter().any(|m| {
            m.attributes.iter().any(
                |a| matches!(a, AddressAttribute::Address(IpAddr::V4(ip)) if subnet.contains(ip)),
            )
        }))
    })
}

/// Writes `value` to `/proc/sys/<key>` unless it holds it (in the calling thread's network
/// namespace, for `net/` keys).
fn sysctl(key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{key}");
    if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    std::fs::write(&path, value).with_context(|| format!("cannot set {path} to {value}"))
}

/// One interface of a container.
#[derive(Debug, Clone)]
pub struct Veth {
    /// Inside the container: eth0, eth1, …
    pub interface: String,
    /// On the host, a port of `bridge`.
    pub host_name: String,
    pub bridge: u32,
    pub address: Ipv4Addr,
    pub prefix: u8,
    /// The default route goes through it.
    pub gateway: Option<Ipv4Addr>,
}

/// The MAC of the interface holding `a`: locally administered, unicast, from the address.
pub fn mac_of(a: Ipv4Addr) -> [u8; 6] {
    let o = a.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

pub fn mac_text(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Runs `work` with a handle in the host's namespace and one in the namespace of `netns`,
/// on a thread that joins it.
fn in_netns<T: Send>(
    netns: &File,
    work: impl AsyncFnOnce(Handle, Handle) -> Result<T> + Send,
) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = runtime()?;
            let host = connect(&rt)?;
            nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .context("cannot join the container's network namespace")?;
            let inner = connect(&rt)?;
            rt.block_on(work(host, inner))
        })
        .join()
        .map_err(|_| anyhow!("the thread configuring the container's network panicked"))?
    })
}

/// Creates the container's interfaces in `netns`, with loopback up.
pub fn add_veths(netns: &File, veths: &[Veth]) -> Result<()> {
    let fd = netns.as_raw_fd();
    in_netns(netns, async move |host: Handle, inner: Handle| {
        for v in veths {
            let mac = mac_of(v.address);
            let peer = LinkMessageBuilder::<LinkUnspec>::new()
                .name(v.interface.clone())
                .setns_by_fd(fd)
                .address(mac.to_vec())
                .build();
            let pair = || {
                LinkVeth::new(&v.host_name, &v.interface)
                    .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.clone())))
                    .controller(v.bridge)
                    .up()
                    .build()
            };
            match host.link().add(pair()).execute().await {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(libc::EEXIST) => {
                    // A host end left by a run whose namespace outlived it: replaced.
                    if let Some(m) = link(&host, &v.host_name).await? {
                        let _ = host.link().del(m.header.index).execute().await;
                    }
                    host.link()
                        .add(pair())
                        .execute()
                        .await
                        .map_err(|e| anyhow!("cannot create the veth pair {}: {e}", v.host_name))?;
                }
                Err(e) => return Err(anyhow!("cannot create the veth pair {}: {e}", v.host_name)),
            }
            let index = link(&inner, &v.interface)
                .await?
                .ok_or_else(|| anyhow!("{} did not reach the container", v.interface))?
                .header
                .index;
            // A gratuitous ARP when it comes up tells the bridge's neighbours its MAC.
            sysctl(&format!("net/ipv4/conf/{}/arp_notify", v.interface), "1")?;
            inner
                .address()
                .add(index, IpAddr::V4(v.address), v.prefix)
                .execute()
                .await
                .map_err(|e| anyhow!("cannot give {} its address: {e}", v.interface))?;
            inner
                .link()
                .set(LinkUnspec::new_with_index(index).up().build())
                .execute()
                .await
                .map_err(|e| anyhow!("cannot bring {} up: {e}", v.interface))?;
            if let Some(gw) = v.gateway {
                match inner
                    .route()
                    .add(RouteMessageBuilder::<Ipv4Addr>::new().gateway(gw).build())
                    .execute()
                    .await
                {
                    Ok(()) => {}
                    // A network joined later (connect): the first one keeps the default route.
                    Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                    Err(e) => return Err(anyhow!("cannot route through {gw}: {e}")),
                }
            }
        }
        if let Some(lo) = link(&inner, "lo").await? {
            inner
                .link()
                .set(LinkUnspec::new_with_index(lo.header.index).up().build())
                .execute()
                .await
                .map_err(|e| anyhow!("cannot bring lo up: {e}"))?;
        }
        Ok(())
    })
}

/// Takes the container's interfaces off their networks. `delete`: the interfaces go (a
/// disconnect; the namespace stays). Otherwise only their addresses do, at once, and the
/// interfaces go with the namespace when its file is unmounted (the kernel deletes a dying
/// namespace's devices in the background, sparing the caller the wait of deleting a veth).
pub fn remove_veths(netns: &File, interfaces: &[String], delete: bool) -> Result<()> {
    in_netns(netns, async move |_host: Handle, inner: Handle| {
        for name in interfaces {
            let Some(m) = link(&inner, name).await? else {
                continue;
            };
            let index = m.header.index;
            if delete {
                match inner.link().del(index).execute().await {
                    Ok(()) => {}
                    Err(e) if errno(&e) == Some(libc::ENODEV) => {}
                    Err(e) => return Err(anyhow!("cannot delete {name}: {e}")),
                }
                continue;
            }
            let addrs: Vec<_> = inner
                .address()
                .get()
                .set_link_index_filter(index)
                .execute()
                .try_collect()
                .await
                .map_err(|e| anyhow!("cannot list the addresses of {name}: {e}"))?;
            for a in addrs {
                match inner.address().del(a).execute().await {
                    Ok(()) => {}
                    Err(e) if errno(&e) == Some(libc::EADDRNOTAVAIL) => {}
                    Err(e) => return Err(anyhow!("cannot take the address of {name}: {e}")),
                }
            }
        }
        Ok(())
    })
}
