//! Published ports: the host side of `-p`. netavark forwards them (DNAT) but binds nothing,
//! so the monitor reserves each host port for the run's lifetime by holding a socket on it
//! (a listener for tcp, a bound socket for udp), as podman does: a port in use is a clear
//! error before the container starts, and no other process (or container) takes it while the
//! container runs. A `-p 80` or `-P` port is picked by the kernel (bind to port 0).

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
use std::os::fd::OwnedFd;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::error::{exit, user};
use crate::model::{PortSpec, Protocol};

/// One published port as it is bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Binding {
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl Binding {
    /// docker's form: `0.0.0.0:8080->80/tcp`.
    pub fn docker(&self) -> String {
        format!(
            "{}:{}->{}/{}",
            self.host_ip, self.host_port, self.container_port, self.protocol
        )
    }
}

/// The sockets holding a container's host ports.
pub struct Reserved {
    pub bindings: Vec<Binding>,
    _sockets: Vec<OwnedFd>,
}

fn reserve_one(ip: Ipv4Addr, port: u16, proto: Protocol) -> std::io::Result<(OwnedFd, u16)> {
    let addr = SocketAddrV4::new(ip, port);
    Ok(match proto {
        Protocol::Tcp => {
            let l = TcpListener::bind(addr)?;
            let p = l.local_addr()?.port();
            (OwnedFd::from(l), p)
        }
        Protocol::Udp => {
            let s = UdpSocket::bind(addr)?;
            let p = s.local_addr()?.port();
            (OwnedFd::from(s), p)
        }
    })
}

/// Binds every host port of `specs`; the first one in use is an error naming it. `previous`
/// are the bindings of an earlier run: a picked port comes back when it is free.
pub fn reserve(specs: &[PortSpec], previous: &[Binding]) -> Result<Reserved> {
    let mut bindings = Vec::new();
    let mut sockets = Vec::new();
    for spec in specs {
        let ip = spec.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        for i in 0..spec.range {
            let cport = spec.container_port + i;
            let wanted = spec.host_port.map(|h| h + i);
            let again = previous
                .iter()
                .find(|b| {
                    b.container_port == cport && b.protocol == spec.protocol && b.host_ip == ip
                })
                .map(|b| b.host_port);
            let got = match (wanted, again) {
                (Some(p), _) => reserve_one(ip, p, spec.protocol),
                (None, Some(p)) => {
                    reserve_one(ip, p, spec.protocol).or_else(|_| reserve_one(ip, 0, spec.protocol))
                }
                (None, None) => reserve_one(ip, 0, spec.protocol),
            };
            match got {
                Ok((fd, port)) => {
                    sockets.push(fd);
                    bindings.push(Binding {
                        host_ip: ip,
                        host_port: port,
                        container_port: cport,
                        protocol: spec.protocol,
                    });
                }
                Err(e) => {
                    let port = wanted.unwrap_or(0);
                    let (msg, hint) = match e.kind() {
                        std::io::ErrorKind::AddrInUse => (
                            format!(
                                "the host port {ip}:{port}/{} is already in use",
                                spec.protocol
                            ),
                            format!(
                                "publish another host port (-p {}:{cport}), or stop what \
                                 holds it (`ss -lntup 'sport = :{port}'` shows it)",
                                port.saturating_add(1)
                            ),
                        ),
                        std::io::ErrorKind::AddrNotAvailable => (
                            format!("{ip} is not an address of this host"),
                            "publish on one of the host's addresses, or leave the address out"
                                .to_string(),
                        ),
                        _ => (
                            format!(
                                "cannot bind the host port {ip}:{port}/{}: {e}",
                                spec.protocol
                            ),
                            "check the port".to_string(),
                        ),
                    };
                    return Err(user(msg).hint(hint).code(exit::RUNTIME).into());
                }
            }
        }
    }
    Ok(Reserved {
        bindings,
        _sockets: sockets,
    })
}

/// docker's PORTS column: `0.0.0.0:8080->80/tcp, 53/udp` (declared but not bound: the
/// container is not running).
pub fn column(bindings: &[Binding]) -> String {
    bindings
        .iter()
        .map(Binding::docker)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_in_use_is_refused_and_a_picked_port_comes_back() {
        let specs = [PortSpec::parse("127.0.0.1::9/udp").unwrap()];
        let first = reserve(&specs, &[]).unwrap();
        let b = first.bindings[0];
        assert_eq!(b.host_ip, Ipv4Addr::LOCALHOST);
        assert!(b.host_port > 0);
        // Held: the same port again is in use.
        let fixed = [PortSpec::parse(&format!("127.0.0.1:{}:9/udp", b.host_port)).unwrap()];
        let e = reserve(&fixed, &[]).err().unwrap();
        assert!(format!("{e:#}").contains("already in use"), "{e:#}");
        drop(first);
        let again = reserve(&specs, &[b]).unwrap();
        assert_eq!(
            again.bindings,
            vec![b],
            "the earlier pick comes back when free"
        );
        assert_eq!(b.docker(), format!("127.0.0.1:{}->9/udp", b.host_port));
    }
}
