//! Container verbs: run, logs, stop, kill, ... (issue 3 and 4).

use anyhow::Result;
use clap::Subcommand;

use super::Ctx;

#[derive(Debug, Subcommand)]
pub enum Commands {}

pub fn run(_ctx: &Ctx, cmd: Commands) -> Result<i32> {
    match cmd {}
}
