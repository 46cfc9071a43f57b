//! `container diff`, `export` and `cp` (issue 14), and the hidden `__rootfs` helper they
//! run. The work is in `lifecycle::files`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::Ctx;
use super::output::print_json;
use crate::error::{exit, user};
use crate::lifecycle::files::{self as rootfs, CpArg, HelperOp};

#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Export a container's filesystem as a tar archive (`wharf import` reads it back)
    Export(ExportArgs),
    /// Copy files between a container and the host (CONTAINER:PATH on one side)
    Cp(CpArgs),
    /// (internal) the helper that sees a container's filesystem for cp and export
    #[command(name = "__rootfs", hide = true)]
    Rootfs(RootfsArgs),
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The container: name, id or id prefix
    container: String,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write to a file instead of stdout
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// The container: name, id or id prefix
    container: String,
}

#[derive(Debug, Args)]
pub struct CpArgs {
    /// Keep uid/gid of the files (default: owned by root, as docker's cp)
    #[arg(short, long)]
    archive: bool,
    /// CONTAINER:SRC_PATH, a host path, or - (a tar on stdin)
    src: String,
    /// CONTAINER:DEST_PATH, a host path, or - (a tar on stdout)
    dest: String,
}

#[derive(Debug, Args)]
pub struct RootfsArgs {
    id: String,
    op: String,
    args: Vec<String>,
    #[arg(long)]
    archive: bool,
}

/// `wharf container diff`: docker's A/C/D lines.
pub fn diff(ctx: &Ctx, a: &DiffArgs) -> Result<i32> {
    let store = ctx.store()?;
    let changes = rootfs::diff(&store, &a.container)?;
    if ctx.json() {
        print_json(&changes)?;
    } else {
        for c in changes {
            println!("{} {}", c.kind, c.path);
        }
    }
    Ok(exit::OK)
}

pub fn run(ctx: &Ctx, cmd: Commands) -> Result<i32> {
    let store = ctx.store()?;
    match cmd {
        Commands::Export(a) => {
            let out = match &a.output {
                Some(p) => Some(
                    std::fs::File::create(p)
                        .with_context(|| format!("cannot create {}", p.display()))?,
                ),
                None => {
                    use std::io::IsTerminal;
                    if std::io::stdout().is_terminal() {
                        return Err(user("refusing to write a tar archive to a terminal")
                            .hint("redirect it (`> rootfs.tar`) or give -o FILE")
                            .into());
                    }
                    None
                }
            };
            rootfs::export(&store, &a.container, out)
        }
        Commands::Cp(a) => match (CpArg::parse(&a.src), CpArg::parse(&a.dest)) {
            (CpArg::Container { container, path }, CpArg::Host(dest)) => {
                rootfs::copy_out(&store, &container, &path, &dest, a.archive)
            }
            (CpArg::Host(src), CpArg::Container { container, path }) => {
                rootfs::copy_in(&store, &src, &container, &path, a.archive)
            }
            (CpArg::Host(_), CpArg::Host(_)) => Err(user("one side of cp must be CONTAINER:PATH")
                .hint("e.g. `wharf cp web:/etc/hosts .` or `wharf cp ./conf web:/etc/app`")
                .into()),
            _ => Err(user("copying between two containers is not supported")
                .hint("copy to the host first, then into the other container")
                .into()),
        },
        Commands::Rootfs(a) => {
            let arg = |i: usize| a.args.get(i).cloned().unwrap_or_default();
            let op = match a.op.as_str() {
                "stat" => HelperOp::Stat(arg(0)),
                "get" => HelperOp::Get {
                    path: arg(0),
                    name: arg(1),
                    keep_owner: a.archive,
                },
                "put" => HelperOp::Put(arg(0)),
                "export" => HelperOp::Export,
                other => anyhow::bail!("unknown rootfs helper operation {other:?}"),
            };
            rootfs::helper_main(&store, &a.id, &op)
        }
    }
}
