//! The native backend's firewall: one nftables table, `ip wharf`, shared by every state root.
//!
//! Its chains and rules are static and written once per bridge by `nft -f` ([`ensure`]):
//! outbound NAT for the networks' subnets, forwarding to and from them, and published ports
//! as lookups in two maps. A container's ports are elements of those maps, added and removed
//! in-process over netlink ([`add_ports`], [`remove_ports`]): no process to start, one
//! transaction each. (No well-kept crate writes map elements: rustables has sets without
//! data, the `nftables` crate runs `nft`; the messages are a few attributes.)
//!
//! ```text
//! table ip wharf
//!   set subnets      every network's subnet        forward: accept replies and DNAT'd traffic
//!   set nat_subnets  the ones that are not internal  postrouting: masquerade what leaves them
//!   map ports_any    proto . port        : addr . port   -p PORT     (any host address)
//!   map ports_ip     addr . proto . port : addr . port   -p IP:PORT
//!   chain prerouting, output  fib daddr type local jump ports   (DNAT to the container)
//! ```

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use ipnet::Ipv4Net;
use rtnetlink::sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

use crate::error::{exit, user};
use crate::model::Protocol;
use crate::network::ports::Binding;

pub const TABLE: &str = "wharf";

/// The static part of the table: made when missing, its chains' rules replaced (one
/// transaction, so a packet sees either the old rules or the new).
const RULESET: &str = r#"
add table ip wharf
add set ip wharf subnets { type ipv4_addr; flags interval; }
add set ip wharf nat_subnets { type ipv4_addr; flags interval; }
add map ip wharf ports_any { type inet_proto . inet_service : ipv4_addr . inet_service; }
add map ip wharf ports_ip { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }
add chain ip wharf ports
add chain ip wharf prerouting { type nat hook prerouting priority dstnat; policy accept; }
add chain ip wharf output { type nat hook output priority -100; policy accept; }
add chain ip wharf postrouting { type nat hook postrouting priority srcnat; policy accept; }
add chain ip wharf forward { type filter hook forward priority filter; policy accept; }
flush chain ip wharf ports
flush chain ip wharf prerouting
flush chain ip wharf output
flush chain ip wharf postrouting
flush chain ip wharf forward
add rule ip wharf prerouting fib daddr type local jump ports
add rule ip wharf output fib daddr type local jump ports
add rule ip wharf ports dnat ip to ip daddr . meta l4proto . th dport map @ports_ip
add rule ip wharf ports dnat ip to meta l4proto . th dport map @ports_any
add rule ip wharf postrouting ip saddr @nat_subnets ip daddr != @subnets masquerade
add rule ip wharf postrouting ip saddr 127.0.0.0/8 ip daddr @subnets masquerade
add rule ip wharf postrouting ct status dnat ip saddr @subnets ip daddr @subnets masquerade
add rule ip wharf forward ip daddr @subnets ct state established,related accept
add rule ip wharf forward ip daddr @subnets ct status dnat accept
add rule ip wharf forward ip saddr @nat_subnets accept
add rule ip wharf forward ip saddr @subnets ip daddr != @subnets drop
"#;

/// Where distributions install nft.
const NFT: [&str; 3] = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"];

/// Fails, saying how to install it, when nft is missing.
pub fn check() -> Result<()> {
    nft_binary().map(|_| ())
}

fn nft_binary() -> Result<PathBuf> {
    nft_in(&NFT.map(PathBuf::from))
}

fn nft_in(candidates: &[PathBuf]) -> Result<PathBuf> {
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            user("bridge networks need nft, which is not installed")
                .hint(
                    "install nftables (Debian/Ubuntu: apt-get install nftables; Fedora: dnf \
                 install nftables), or set `[network] backend = \"netavark\"` in the state \
                 root's config.toml, or run with --network none or --network host",
                )
                .code(exit::RUNTIME)
                .into()
        })
}

/// Runs `nft -f -` with `script`.
fn run(script: &str) -> Result<()> {
    let nft = nft_binary()?;
    let nft = nft.display();
    let mut cmd = Command::new(nft.to_string());
    cmd.args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    crate::runtime::sys::exec_clean(&mut cmd);
    let mut child = cmd.spawn().with_context(|| format!("cannot run {nft}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .with_context(|| format!("cannot write to {nft}"))?;
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("cannot wait for {nft}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(user(format!(
            "nft could not write wharf's firewall table: {}",
            err.trim()
        ))
        .hint("the kernel needs nf_tables with its nat, fib and ct modules")
        .code(exit::RUNTIME)
        .into());
    }
    Ok(())
}

/// Makes the table (when missing) and lists `subnet` in it: in `nat_subnets` too unless the
/// network is internal.
pub fn ensure(subnet: Ipv4Net, internal: bool) -> Result<()> {
    let mut script = String::from(RULESET);
    script.push_str(&format!("add element ip wharf subnets {{ {subnet} }}\n"));
    if !internal {
        script.push_str(&format!(
            "add element ip wharf nat_subnets {{ {subnet} }}\n"
        ));
    }
    run(&script)
}

/// Takes `subnet` out of the table (a removed network). Nothing to do when the table or the
/// element is gone.
pub fn forget(subnet: Ipv4Net) {
    for set in ["subnets", "nat_subnets"] {
        let _ = run(&format!("delete element ip wharf {set} {{ {subnet} }}\n"));
    }
}

// ---------------------------------------------------------------- netlink
// include/uapi/linux/netfilter/nfnetlink.h and nf_tables.h
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 0x2;
const NFPROTO_IPV4: u8 = 2;

/// A netlink attribute: header, payload, padding to 4 bytes.
fn attr(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len().next_multiple_of(4), 0);
}

fn nested(out: &mut Vec<u8>, kind: u16, inner: impl FnOnce(&mut Vec<u8>)) {
    let mut body = Vec::new();
    inner(&mut body);
    attr(out, kind | NLA_F_NESTED, &body);
}

/// A netlink message with an nfgenmsg header.
fn message(
    out: &mut Vec<u8>,
    kind: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    body: &[u8],
) {
    let len = 16 + 4 + body.len();
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&[family, 0]);
    out.extend_from_slice(&res_id.to_be_bytes());
    out.extend_from_slice(body);
}

/// The values of a concatenation: each field in network order, padded to 4 bytes (nftables'
/// registers are 32 bits wide).
fn concat(fields: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for f in fields {
        v.extend_from_slice(f);
        v.resize(v.len().next_multiple_of(4), 0);
    }
    v
}

fn proto(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => libc::IPPROTO_TCP as u8,
        Protocol::Udp => libc::IPPROTO_UDP as u8,
    }
}

/// The map and element (key, value) of a published port.
fn element(b: &Binding, to: Ipv4Addr) -> (&'static str, Vec<u8>, Vec<u8>) {
    let value = concat(&[&to.octets(), &b.container_port.to_be_bytes()]);
    let (p, port) = ([proto(b.protocol)], b.host_port.to_be_bytes());
    if b.host_ip.is_unspecified() {
        ("ports_any", concat(&[&p, &port]), value)
    } else {
        ("ports_ip", concat(&[&b.host_ip.octets(), &p, &port]), value)
    }
}

/// One batch of one NEWSETELEM/DELSETELEM message per element.
fn batch(add: bool, elements: &[(&str, Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut buf = Vec::new();
    message(
        &mut buf,
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        0,
        0,
        NFNL_SUBSYS_NFTABLES,
        &[],
    );
    for (i, (set, key, value)) in elements.iter().enumerate() {
        let mut body = Vec::new();
        attr(
            &mut body,
            NFTA_SET_ELEM_LIST_TABLE,
            format!("{TABLE}\0").as_bytes(),
        );
        attr(
            &mut body,
            NFTA_SET_ELEM_LIST_SET,
            format!("{set}\0").as_bytes(),
        );
        nested(&mut body, NFTA_SET_ELEM_LIST_ELEMENTS, |b| {
            nested(b, NFTA_LIST_ELEM, |e| {
                nested(e, NFTA_SET_ELEM_KEY, |k| attr(k, NFTA_DATA_VALUE, key));
                if add {
                    nested(e, NFTA_SET_ELEM_DATA, |d| attr(d, NFTA_DATA_VALUE, value));
                }
            });
        });
        let (kind, flags) = if add {
            (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE)
        } else {
            (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK)
        };
        let kind = (NFNL_SUBSYS_NFTABLES << 8) | kind;
        message(&mut buf, kind, flags, 1 + i as u32, NFPROTO_IPV4, 0, &body);
    }
    let end = 1 + elements.len() as u32;
    message(
        &mut buf,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        end,
        0,
        NFNL_SUBSYS_NFTABLES,
        &[],
    );
    buf
}

/// The process's nftables socket, opened on first use and never closed: closing one that
/// committed a transaction waits for that transaction's clean-up (an RCU grace period, ~10 ms
/// here), so the process's exit pays it once, after everything else, and overlapping it.
fn socket() -> std::io::Result<&'static std::sync::Mutex<Socket>> {
    static SOCKET: std::sync::OnceLock<std::sync::Mutex<Socket>> = std::sync::OnceLock::new();
    if let Some(s) = SOCKET.get() {
        return Ok(s);
    }
    let mut sock = Socket::new(NETLINK_NETFILTER)?;
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;
    Ok(SOCKET.get_or_init(|| std::sync::Mutex::new(sock)))
}

/// Sends `buf` and reads the kernel's acknowledgements of messages 1..=n: the first error as
/// an errno, or Ok.
fn send(buf: &[u8], n: u32) -> std::io::Result<Result<(), i32>> {
    let sock = socket()?.lock().unwrap_or_else(|e| e.into_inner());
    sock.send(buf, 0)?;
    let mut acked = 0;
    let mut first_err = None;
    while acked < n {
        let (rx, _) = sock.recv_from_full()?;
        let len = rx.len();
        let mut off = 0;
        while off + 16 <= len {
            let mlen = u32::from_ne_bytes(rx[off..off + 4].try_into().unwrap_or_default()) as usize;
            let kind = u16::from_ne_bytes(rx[off + 4..off + 6].try_into().unwrap_or_default());
            if mlen < 16 || off + mlen > len {
                return Err(std::io::Error::other("a truncated netlink answer"));
            }
            if kind == NLMSG_ERROR && mlen >= 20 {
                let code =
                    i32::from_ne_bytes(rx[off + 16..off + 20].try_into().unwrap_or_default());
                acked += 1;
                if code != 0 && first_err.is_none() {
                    first_err = Some(-code);
                    // The batch is aborted at the first error: no other message is answered.
                    acked = n;
                }
            }
            off += mlen.next_multiple_of(4);
        }
    }
    Ok(first_err.map_or(Ok(()), Err))
}

/// Whether the table is there (a flush of the host's ruleset, as a restart of nftables.service
/// does, takes it away while the bridges stay).
pub fn table_exists() -> Result<bool> {
    let mut body = Vec::new();
    attr(&mut body, NFTA_TABLE_NAME, format!("{TABLE}\0").as_bytes());
    let mut buf = Vec::new();
    let kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE;
    message(
        &mut buf,
        kind,
        NLM_F_REQUEST | NLM_F_ACK,
        1,
        NFPROTO_IPV4,
        0,
        &body,
    );
    match send(&buf, 1).context("cannot talk to nftables")? {
        Ok(()) => Ok(true),
        Err(libc::ENOENT) => Ok(false),
        Err(code) => Err(std::io::Error::from_raw_os_error(code))
            .context("cannot look for wharf's nftables table"),
    }
}

/// Publishes the container's ports: DNAT from each binding to `to` (its address).
/// `Err(ENOENT)` says the table is missing ([`ensure`] makes it).
pub fn add_ports(bindings: &[Binding], to: Ipv4Addr) -> Result<Result<(), i32>> {
    if bindings.is_empty() {
        return Ok(Ok(()));
    }
    let elems: Vec<_> = bindings.iter().map(|b| element(b, to)).collect();
    send(&batch(true, &elems), elems.len() as u32).context("cannot talk to nftables")
}

/// Withdraws the container's ports. An element that is gone (a flushed table, a setup cut
/// short) is no error: each goes in a transaction of its own when the whole batch fails.
pub fn remove_ports(bindings: &[Binding], to: Ipv4Addr) -> Result<()> {
    if bindings.is_empty() {
        return Ok(());
    }
    let elems: Vec<_> = bindings.iter().map(|b| element(b, to)).collect();
    if send(&batch(false, &elems), elems.len() as u32)?.is_ok() {
        return Ok(());
    }
    for e in elems {
        match send(&batch(false, std::slice::from_ref(&e)), 1)? {
            Ok(()) | Err(libc::ENOENT) => {}
            Err(code) => {
                return Err(std::io::Error::from_raw_os_error(code))
                    .context("cannot withdraw a published port");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_nft_says_how_to_install_it() {
        let dir = tempfile::tempdir().unwrap();
        let e = nft_in(&[dir.path().join("nft")]).unwrap_err();
        let u = crate::error::find_user_error(&e).unwrap();
        assert!(u.message.contains("need nft"), "{}", u.message);
        let hint = u.hint.as_deref().unwrap();
        assert!(hint.contains("apt-get install nftables") && hint.contains("\"netavark\""));
        std::fs::write(dir.path().join("nft"), "").unwrap();
        assert_eq!(
            nft_in(&[dir.path().join("nft")]).unwrap(),
            dir.path().join("nft")
        );
    }

    #[test]
    fn a_port_is_a_concatenation_of_registers() {
        let b = Binding {
            host_ip: Ipv4Addr::UNSPECIFIED,
            host_port: 8080,
            container_port: 80,
            protocol: Protocol::Tcp,
        };
        let (set, key, value) = element(&b, Ipv4Addr::new(10, 88, 0, 2));
        assert_eq!(set, "ports_any");
        assert_eq!(key, [6, 0, 0, 0, 0x1f, 0x90, 0, 0]);
        assert_eq!(value, [10, 88, 0, 2, 0, 80, 0, 0]);
        let b = Binding {
            host_ip: Ipv4Addr::LOCALHOST,
            protocol: Protocol::Udp,
            ..b
        };
        let (set, key, _) = element(&b, Ipv4Addr::new(10, 88, 0, 2));
        assert_eq!(set, "ports_ip");
        assert_eq!(key, [127, 0, 0, 1, 17, 0, 0, 0, 0x1f, 0x90, 0, 0]);
    }

    #[test]
    fn a_batch_is_framed_by_begin_and_end() {
        let b = Binding {
            host_ip: Ipv4Addr::UNSPECIFIED,
            host_port: 1,
            container_port: 2,
            protocol: Protocol::Tcp,
        };
        let buf = batch(true, &[element(&b, Ipv4Addr::LOCALHOST)]);
        let first = u32::from_ne_bytes(buf[0..4].try_into().unwrap()) as usize;
        assert_eq!(
            u16::from_ne_bytes(buf[4..6].try_into().unwrap()),
            NFNL_MSG_BATCH_BEGIN
        );
        let second = u32::from_ne_bytes(buf[first..first + 4].try_into().unwrap()) as usize;
        let kind = u16::from_ne_bytes(buf[first + 4..first + 6].try_into().unwrap());
        assert_eq!(kind, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM);
        let end = first + second;
        assert_eq!(
            u16::from_ne_bytes(buf[end + 4..end + 6].try_into().unwrap()),
            NFNL_MSG_BATCH_END
        );
        assert_eq!(buf.len(), end + 20);
    }
}
