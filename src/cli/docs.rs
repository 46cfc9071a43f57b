//! `wharf completion SHELL` (clap_complete) and the hidden `wharf __man DIR` (clap_mangen):
//! both read the clap tree, so they never drift from the verbs and flags.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, Subcommand, ValueEnum};

use crate::error::exit;

#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Print a shell completion script (bash, zsh or fish)
    Completion(CompletionArgs),
    /// (internal) write a man page per verb into DIR
    #[command(name = "__man", hide = true)]
    Man(ManArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    shell: Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Where to write wharf.1, wharf-run.1, ... (created if missing)
    dir: PathBuf,
}

pub fn run(cmd: Commands) -> Result<i32> {
    match cmd {
        Commands::Completion(a) => {
            let shell = match a.shell {
                Shell::Bash => clap_complete::Shell::Bash,
                Shell::Zsh => clap_complete::Shell::Zsh,
                Shell::Fish => clap_complete::Shell::Fish,
            };
            let mut cmd = super::Cli::command();
            clap_complete::generate(shell, &mut cmd, "wharf", &mut std::io::stdout());
        }
        Commands::Man(a) => {
            std::fs::create_dir_all(&a.dir)
                .with_context(|| format!("cannot create {}", a.dir.display()))?;
            clap_mangen::generate_to(super::Cli::command(), &a.dir)
                .with_context(|| format!("cannot write the man pages into {}", a.dir.display()))?;
        }
    }
    Ok(exit::OK)
}
