//! Network verbs: network create, ls, inspect, rm, prune, connect, disconnect; and `port`.

use anyhow::Result;
use clap::{Args, Subcommand};

use super::Ctx;
use super::output::{print_json, print_table};
use crate::error::{exit, user};
use crate::network::{self, CreateOptions, Net};
use crate::util::rfc3339;

#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Manage networks
    #[command(subcommand)]
    Network(NetworkCmd),
    /// List a container's published ports, or the host address of one of them
    Port(PortArgs),
}

#[derive(Debug, Subcommand)]
pub enum NetworkCmd {
    /// Create a bridge network (with DNS between its containers)
    Create(CreateArgs),
    /// List networks
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show networks' details as JSON
    Inspect(NamesArgs),
    /// Remove networks no container uses
    #[command(alias = "remove")]
    Rm(NamesArgs),
    /// Remove every network no container uses
    Prune(PruneArgs),
    /// Connect a container to a network (at once when it runs)
    Connect(ConnectArgs),
    /// Disconnect a container from a network
    Disconnect(DisconnectArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The subnet in CIDR form (default: the first free /24 of 10.89.0.0 to 10.127.255.0)
    #[arg(long)]
    subnet: Option<String>,
    /// The gateway (default: the subnet's first address)
    #[arg(long)]
    gateway: Option<String>,
    /// No outbound NAT and no published ports
    #[arg(long)]
    internal: bool,
    /// Do not resolve container names on this network
    #[arg(long)]
    disable_dns: bool,
    /// The bridge driver (the only one)
    #[arg(short, long, default_value = "bridge")]
    driver: String,
    /// Set a label on the network (KEY=VALUE)
    #[arg(long = "label", value_name = "KEY=VALUE")]
    label: Vec<String>,
    name: String,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print only network names
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Debug, Args)]
pub struct NamesArgs {
    #[arg(required = true)]
    networks: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Do not ask for confirmation (wharf never asks: accepted for docker's scripts)
    #[arg(short, long)]
    force: bool,
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Another DNS name of the container on this network
    #[arg(long = "alias")]
    alias: Vec<String>,
    network: String,
    container: String,
}

#[derive(Debug, Args)]
pub struct DisconnectArgs {
    /// Accepted for docker's scripts
    #[arg(short, long)]
    force: bool,
    network: String,
    container: String,
}

#[derive(Debug, Args)]
pub struct PortArgs {
    container: String,
    /// PORT[/PROTO]: print only where this container port is published
    port: Option<String>,
}

fn inspect_json(store: &crate::store::Store, n: &Net) -> Result<serde_json::Value> {
    let mut containers = serde_json::Map::new();
    for (id, addr) in network::holders(store, n)? {
        let ep =
            network::sandbox::state(store, &id).and_then(|s| s.addresses.get(&n.name).cloned());
        let name = crate::container::find(store, &id)
            .map(|c| c.name)
            .unwrap_or_default();
        containers.insert(
            id,
            serde_json::json!({
                "Name": name,
                "IPv4Address": format!("{addr}/{}", n.subnet.prefix_len()),
                "MacAddress": ep.map(|e| e.mac).unwrap_or_default(),
            }),
        );
    }
    Ok(serde_json::json!({
        "Name": n.name,
        "Id": n.id,
        "Created": rfc3339(n.created_at),
        "Driver": n.driver,
        "NetworkInterface": n.interface,
        "Subnets": [{"Subnet": n.subnet.to_string(), "Gateway": n.gateway.to_string()}],
        "IPAM": {"Driver": "host-local", "Config": [{"Subnet": n.subnet.to_string(), "Gateway": n.gateway.to_string()}]},
        "Internal": n.internal,
        "DNSEnabled": n.dns,
        "Labels": n.labels,
        "Project": n.project,
        "Containers": containers,
    }))
}

pub fn run(ctx: &Ctx, cmd: Commands) -> Result<i32> {
    let cmd = match cmd {
        Commands::Network(c) => c,
        Commands::Port(a) => return port(ctx, &a),
    };
    let store = ctx.store()?;
    match cmd {
        NetworkCmd::Create(a) => {
            if a.driver != "bridge" {
                return Err(user(format!("unknown network driver {:?}", a.driver))
                    .hint("wharf has the bridge driver only")
                    .into());
            }
            let subnet = a
                .subnet
                .as_deref()
                .map(|s| {
                    s.parse().map_err(|_| {
                        user(format!("invalid --subnet {s:?}"))
                            .hint("give an IPv4 subnet in CIDR form, e.g. 10.89.7.0/24")
                    })
                })
                .transpose()?;
            let gateway = a
                .gateway
                .as_deref()
                .map(|g| {
                    g.parse().map_err(|_| {
                        user(format!("invalid --gateway {g:?}")).hint("give an IPv4 address")
                    })
                })
                .transpose()?;
            let n = network::create(
                &store,
                &a.name,
                &CreateOptions {
                    subnet,
                    gateway,
                    internal: a.internal,
                    no_dns: a.disable_dns,
                    labels: super::container::parse_labels(&a.label)?,
                    project: None,
                },
            )?;
            println!("{}", n.name);
            Ok(exit::OK)
        }
        NetworkCmd::Ls(a) => {
            network::ensure_default(&store)?;
            let nets = network::list(&store)?;
            if a.quiet {
                for n in &nets {
                    println!("{}", n.name);
                }
            } else if ctx.json() {
                let v = nets
                    .iter()
                    .map(|n| inspect_json(&store, n))
                    .collect::<Result<Vec<_>>>()?;
                print_json(&v)?;
            } else {
                print_table(
                    &["NETWORK ID", "NAME", "DRIVER", "SUBNET", "DNS"],
                    nets.iter()
                        .map(|n| {
                            vec![
                                n.id[..12].to_string(),
                                n.name.clone(),
                                n.driver.clone(),
                                n.subnet.to_string(),
                                if n.dns { "yes" } else { "no" }.to_string(),
                            ]
                        })
                        .collect(),
                );
            }
            Ok(exit::OK)
        }
        NetworkCmd::Inspect(a) => {
            let mut out = Vec::new();
            let mut code = exit::OK;
            for name in &a.networks {
                match network::find(&store, name).and_then(|n| inspect_json(&store, &n)) {
                    Ok(v) => out.push(v),
                    Err(e) => {
                        eprintln!("{}", crate::error::render(&e));
                        code = crate::error::exit_code(&e);
                    }
                }
            }
            print_json(&out)?;
            Ok(code)
        }
        NetworkCmd::Rm(a) => {
            crate::lifecycle::recover(&store)?;
            let mut code = exit::OK;
            for name in &a.networks {
                match network::remove(&store, name) {
                    Ok(n) => println!("{}", n.name),
                    Err(e) => {
                        eprintln!("{}", crate::error::render(&e));
                        code = crate::error::exit_code(&e);
                    }
                }
            }
            Ok(code)
        }
        NetworkCmd::Prune(_) => {
            crate::lifecycle::recover(&store)?;
            let gone = network::prune(&store)?;
            if !gone.is_empty() {
                println!("Deleted Networks:");
                for n in gone {
                    println!("{n}");
                }
            }
            Ok(exit::OK)
        }
        NetworkCmd::Connect(a) => {
            crate::lifecycle::recover(&store)?;
            network::sandbox::connect(&store, &a.container, &a.network, &a.alias)?;
            Ok(exit::OK)
        }
        NetworkCmd::Disconnect(a) => {
            crate::lifecycle::recover(&store)?;
            network::sandbox::disconnect(&store, &a.container, &a.network)?;
            Ok(exit::OK)
        }
    }
}

/// `wharf port NAME [PORT[/PROTO]]`: docker's `80/tcp -> 0.0.0.0:8080` lines.
fn port(ctx: &Ctx, a: &PortArgs) -> Result<i32> {
    let store = ctx.store()?;
    let rec = crate::container::find(&store, &a.container)?;
    let bindings = network::sandbox::bindings(&store, &rec.id);
    let wanted = match &a.port {
        None => None,
        Some(p) => {
            let spec = crate::model::PortSpec::parse(p).map_err(|e| {
                user(format!("invalid port {p:?}: {e}"))
                    .hint("give PORT or PORT/PROTO, e.g. 80/tcp")
            })?;
            Some((spec.container_port, spec.protocol))
        }
    };
    let shown: Vec<_> = bindings
        .iter()
        .filter(|b| wanted.is_none_or(|(p, proto)| b.container_port == p && b.protocol == proto))
        .collect();
    if let (Some((p, proto)), true) = (wanted, shown.is_empty()) {
        return Err(user(format!(
            "no public port {p}/{proto} is published for {}",
            rec.name
        ))
        .hint(format!("`wharf port {}` lists what is published", rec.name))
        .into());
    }
    for b in shown {
        if wanted.is_some() {
            println!("{}:{}", b.host_ip, b.host_port);
        } else {
            println!(
                "{}/{} -> {}:{}",
                b.container_port, b.protocol, b.host_ip, b.host_port
            );
        }
    }
    Ok(exit::OK)
}
