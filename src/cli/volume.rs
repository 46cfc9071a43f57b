//! Volume verbs: volume create, ls, inspect, rm, prune.

use anyhow::Result;
use clap::{Args, Subcommand};

use super::Ctx;
use super::output::{print_json, print_table};
use super::system::{PruneArgs, prune};
use crate::disk::filter::{self, Key};
use crate::disk::prune::{Scope, VolumeScope};
use crate::error::exit;
use crate::store::now_ns;
use crate::util::rfc3339;
use crate::volume;

#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Manage volumes
    #[command(subcommand)]
    Volume(VolumeCmd),
}

#[derive(Debug, Subcommand)]
pub enum VolumeCmd {
    /// Create a volume (a generated name when none is given)
    Create(CreateArgs),
    /// List volumes
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show volumes' details as JSON
    Inspect(NamesArgs),
    /// Remove volumes no container uses
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove unused volumes: anonymous ones, or with -a every unused one
    Prune(VolumePruneArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Set a label on the volume (KEY=VALUE)
    #[arg(short, long = "label", value_name = "KEY=VALUE")]
    label: Vec<String>,
    /// The name: [a-zA-Z0-9][a-zA-Z0-9_.-]+
    name: Option<String>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print only volume names
    #[arg(short, long)]
    quiet: bool,
    /// Filter: name=PART, label=KEY[=VALUE], label!=KEY[=VALUE], dangling=true|false
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    filter: Vec<String>,
}

#[derive(Debug, Args)]
pub struct NamesArgs {
    #[arg(required = true)]
    volumes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Do not fail on a volume that does not exist (a volume in use is never removed)
    #[arg(short, long)]
    force: bool,
    #[arg(required = true)]
    volumes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct VolumePruneArgs {
    /// Remove every unused volume, named ones too (default: anonymous ones only)
    #[arg(short, long)]
    all: bool,
    #[command(flatten)]
    common: PruneArgs,
}

pub fn run(ctx: &Ctx, cmd: Commands) -> Result<i32> {
    let Commands::Volume(cmd) = cmd;
    match cmd {
        VolumeCmd::Create(a) => {
            let store = ctx.store()?;
            let labels = super::container::parse_labels(&a.label)?;
            let v = volume::create(&store, a.name.as_deref(), &labels, None)?;
            println!("{}", v.name);
            Ok(exit::OK)
        }
        VolumeCmd::Ls(a) => ls(ctx, a),
        VolumeCmd::Inspect(a) => {
            let store = ctx.store()?;
            let users = volume::users(&store)?;
            let mut out = Vec::new();
            let mut code = exit::OK;
            for n in &a.volumes {
                match volume::get(&store, n) {
                    Ok(v) => out.push(serde_json::json!({
                        "CreatedAt": rfc3339(v.created_at),
                        "Driver": "local",
                        "Labels": v.labels,
                        "Mountpoint": v.mountpoint,
                        "Name": v.name,
                        "Options": {},
                        "Scope": "local",
                        "Anonymous": v.anonymous(),
                        "Project": v.project,
                        "UsedBy": users.get(&v.name).map(|u| u.iter().map(|(_, n)| n.clone()).collect::<Vec<_>>()).unwrap_or_default(),
                    })),
                    Err(e) => {
                        eprintln!("{}", crate::error::render(&e));
                        code = crate::error::exit_code(&e);
                    }
                }
            }
            print_json(&out)?;
            Ok(code)
        }
        VolumeCmd::Rm(a) => {
            let store = ctx.store()?;
            crate::lifecycle::recover(&store)?;
            let mut code = exit::OK;
            for n in &a.volumes {
                match volume::remove(&store, n, a.force) {
                    Ok(_) => println!("{n}"),
                    Err(e) => {
                        eprintln!("{}", crate::error::render(&e));
                        code = crate::error::exit_code(&e);
                    }
                }
            }
            Ok(code)
        }
        VolumeCmd::Prune(a) => prune(
            ctx,
            &Scope {
                containers: false,
                images: None,
                volumes: Some(if a.all {
                    VolumeScope::All
                } else {
                    VolumeScope::Anonymous
                }),
            },
            &a.common,
        ),
    }
}

fn ls(ctx: &Ctx, a: LsArgs) -> Result<i32> {
    let f = filter::parse(&a.filter, &[Key::Name, Key::Label, Key::Dangling], now_ns())?;
    let store = ctx.store()?;
    let users = volume::users(&store)?;
    let vols: Vec<_> = volume::list(&store)?
        .into_iter()
        .filter(|v| {
            let used = users.get(&v.name).is_some_and(|u| !u.is_empty());
            f.name_matches(&v.name)
                && f.labels.iter().all(|l| l.matches(&v.labels))
                && f.dangling.is_none_or(|d| d != used)
        })
        .collect();
    if a.quiet {
        for v in &vols {
            println!("{}", v.name);
        }
    } else if ctx.json() {
        let v: Vec<_> = vols
            .iter()
            .map(|v| {
                serde_json::json!({
                    "Driver": "local", "Name": v.name, "Labels": v.labels,
                    "Mountpoint": v.mountpoint, "CreatedAt": rfc3339(v.created_at),
                    "Anonymous": v.anonymous(),
                    "Links": users.get(&v.name).map_or(0, Vec::len),
                })
            })
            .collect();
        print_json(&v)?;
    } else {
        print_table(
            &["DRIVER", "VOLUME NAME"],
            vols.iter()
                .map(|v| vec!["local".to_string(), v.name.clone()])
                .collect(),
        );
    }
    Ok(exit::OK)
}
