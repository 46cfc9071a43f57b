//! The command line: clap definitions, dispatch, and rendering. No logic a test would want
//! lives here; each verb calls into the library.
//!
//! Each area has its own file with its own subcommand enum, flattened into [`Command`]:
//! `image.rs` (import, images, tag, rmi, image ...), `container.rs` (run, logs, stop, ...),
//! `system.rs` (history, system ...), `apply.rs` (apply, diff, validate, down), `watch.rs`
//! (watch).

mod apply;
mod container;
mod image;
pub mod output;
mod ps;
mod system;
mod volume;
mod watch;

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::error;
use crate::store::{DEFAULT_ROOT, Store};

/// A daemonless container runner driven by declarative TOML manifests.
#[derive(Debug, Parser)]
#[command(
    name = "wharf",
    version,
    about,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// State root: images, containers, the journal.
    #[arg(long, global = true, env = "WHARF_ROOT", default_value = DEFAULT_ROOT, value_name = "DIR")]
    pub root: PathBuf,

    /// Output format (table or json; `save` takes docker-archive or oci-archive).
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Log what wharf does to stderr (RUST_LOG gives finer control).
    #[arg(long, global = true)]
    pub debug: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    /// `save` only: a docker-archive (its default).
    DockerArchive,
    /// `save` only: an oci-archive.
    OciArchive,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    #[command(flatten)]
    Image(image::Commands),
    #[command(flatten)]
    Container(container::Commands),
    #[command(flatten)]
    System(system::Commands),
    #[command(flatten)]
    Volume(volume::Commands),
    #[command(flatten)]
    Apply(apply::Commands),
    #[command(flatten)]
    Watch(watch::Commands),
}

/// What every verb gets: the global options, and the store opened on first use.
pub struct Ctx {
    pub root: PathBuf,
    pub format: Format,
    pub debug: bool,
}

impl Ctx {
    pub fn store(&self) -> anyhow::Result<Store> {
        Store::open(&self.root)
    }

    pub fn json(&self) -> bool {
        self.format == Format::Json
    }
}

/// Parses the command line, runs the verb, prints any error, and returns the exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    init_logging(cli.debug);
    let ctx = Ctx {
        root: cli.root,
        format: cli.format,
        debug: cli.debug,
    };
    let result = match cli.command {
        Command::Image(cmd) => image::run(&ctx, cmd),
        Command::Container(cmd) => container::run(&ctx, cmd),
        Command::System(cmd) => system::run(&ctx, cmd),
        Command::Volume(cmd) => volume::run(&ctx, cmd),
        Command::Apply(cmd) => apply::run(&ctx, cmd),
        Command::Watch(cmd) => watch::run(&ctx, cmd),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("{}", error::render(&err));
            error::exit_code(&err)
        }
    }
}

fn init_logging(debug: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::new(v),
        _ if debug => EnvFilter::new("wharf=debug"),
        _ => EnvFilter::new("wharf=warn"),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_verb_has_help() {
        let cmd = Cli::command();
        for sub in cmd.get_subcommands() {
            if sub.is_hide_set() {
                continue;
            }
            assert!(
                sub.get_about().is_some(),
                "`wharf {}` has no about text",
                sub.get_name()
            );
        }
    }
}
