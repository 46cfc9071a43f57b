//! `wharf watch`: converge manifests now and on every change (the loop is `crate::watch`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::Ctx;
use crate::error::{exit, user};
use crate::watch::converge::{Options, Projects};
use crate::watch::{Timing, watch};

#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Converge manifests now, then again on every change to a *.toml or a referenced tarball,
    /// when a container exits, and every --resync; SIGTERM/SIGINT stop watching and leave the
    /// containers running
    Watch(WatchArgs),
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// A manifest file, or a directory whose *.toml files form one project (as with `apply
    /// -f`); several paths watch several projects
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// The same as a PATH (for symmetry with `apply -f`)
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub files: Vec<PathBuf>,
    /// Converge at least this often even when nothing changes
    #[arg(long, default_value = "30s", value_parser = duration, value_name = "DURATION")]
    pub resync: Duration,
    /// Quiet time after the last file event before converging (an editor's burst of writes
    /// gives one converge)
    #[arg(long, default_value = "100ms", value_parser = duration, value_name = "DURATION")]
    pub debounce: Duration,
    #[command(flatten)]
    pub stop: super::apply::StopArgs,
    /// Also log the resyncs and store checks that found nothing to do
    #[arg(short, long)]
    pub verbose: bool,
    /// Read manifests, env files and image sources that are owned by another user or
    /// writable by group or others (refused by default, as with apply)
    #[arg(long)]
    pub insecure_manifests: bool,
}

fn duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30s, 500ms, 1m)"))?;
    if d.is_zero() {
        return Err("must be more than zero".into());
    }
    Ok(d)
}

pub fn run(ctx: &Ctx, cmd: Commands) -> Result<i32> {
    match cmd {
        Commands::Watch(a) => run_watch(ctx, a),
    }
}

fn run_watch(ctx: &Ctx, a: WatchArgs) -> Result<i32> {
    let paths: Vec<PathBuf> = a.files.into_iter().chain(a.paths).collect();
    if paths.is_empty() {
        return Err(user("no manifest to watch")
            .hint("give a manifest file or a directory: `wharf watch manifests/`")
            .into());
    }
    let store = ctx.store()?;
    let mut projects = Projects::new(
        &store,
        &paths,
        Options {
            stop_timeout: a.stop.timeout(),
            resync: a.resync,
            verbose: a.verbose || ctx.debug,
            insecure_manifests: a.insecure_manifests,
        },
    )?;
    let timing = Timing {
        debounce: a.debounce,
        max_delay: (a.debounce * 20).max(Duration::from_secs(2)),
        resync: a.resync,
    };
    let n = watch(timing, &mut projects)?;
    eprintln!(
        "watch: stopped after {n} converge{}; the containers keep running under their monitors",
        if n == 1 { "" } else { "s" }
    );
    Ok(exit::OK)
}
