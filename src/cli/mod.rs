//! The command line: clap definitions, dispatch, and rendering. No logic a test would want
//! lives here; each verb calls into the library.
//!
//! Each area has its own file with its own subcommand enum, flattened into [`Command`]:
//! `image.rs` (import, images, tag, rmi, image ...), `container.rs` (run, logs, stop, ...),
//! `system.rs` (history, system ...), `apply.rs` (apply, diff, validate, down), `watch.rs`
//! (watch).

mod apply;
mod container;
mod docs;
mod files;
mod image;
mod network;
pub mod output;
mod ps;
mod system;
mod verbs;
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
    Network(network::Commands),
    #[command(flatten)]
    Apply(apply::Commands),
    #[command(flatten)]
    Watch(watch::Commands),
    #[command(flatten)]
    Verbs(verbs::Commands),
    #[command(flatten)]
    Files(files::Commands),
    #[command(flatten)]
    Docs(docs::Commands),
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
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e, std::env::args_os().skip(1)),
    };
    init_logging(cli.debug);
    if output_only(std::env::args_os().skip(1)) {
        // SAFETY: SIG_DFL for SIGPIPE installs no handler; nothing else runs yet.
        let _ = unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            )
        };
    }
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
        Command::Network(cmd) => network::run(&ctx, cmd),
        Command::Apply(cmd) => apply::run(&ctx, cmd),
        Command::Watch(cmd) => watch::run(&ctx, cmd),
        Command::Verbs(cmd) => verbs::run(&ctx, cmd),
        Command::Files(cmd) => files::run(&ctx, cmd),
        Command::Docs(cmd) => docs::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            let mut code = error::exit_code(&err);
            // docker's run and create exit 125 for every error of their own (1 would read as
            // the command's code).
            if code == error::exit::ERROR
                && matches!(
                    verb_of(std::env::args_os().skip(1)).as_deref(),
                    Some("run" | "create")
                )
            {
                code = error::exit::RUNTIME;
            }
            // A health probe's `wharf exec`: mark the failure as wharf's own, not the check's.
            if code == error::exit::RUNTIME
                && let Ok(token) = std::env::var(crate::runtime::health::PROBE_TOKEN_ENV)
            {
                eprintln!("{token}");
            }
            eprintln!("{}", error::render(&err));
            code
        }
    }
}

/// The verbs whose usage errors exit 125, as docker's `run`, `create` and `exec` do (their
/// exit code is otherwise the container command's, so 1 and 2 would be ambiguous).
const RUNTIME_VERBS: [&str; 3] = ["run", "create", "exec"];

/// The verb named on a command line: the first word that is not a global option or its
/// value (`wharf --root /x run ...` → `run`).
fn verb_of(args: impl IntoIterator<Item = std::ffi::OsString>) -> Option<String> {
    words_of(args).into_iter().next()
}

/// The first two words of a command line that are not options or a global option's value
/// (`wharf --root /x network ls -q` → `network ls`).
fn words_of(args: impl IntoIterator<Item = std::ffi::OsString>) -> Vec<String> {
    let mut args = args.into_iter();
    let mut words = Vec::new();
    while let Some(a) = args.next()
        && words.len() < 2
    {
        let a = a.to_string_lossy().into_owned();
        match a.as_str() {
            "--root" | "--format" => {
                args.next();
            }
            _ if a.starts_with('-') => {}
            _ => words.push(a),
        }
    }
    words
}

/// The verbs that only read and print. Their output piped into `head` ends them as it ends
/// `ls`, by SIGPIPE's default action, rather than with a panic of `println!` or an error.
/// Every other verb keeps SIGPIPE ignored (Rust's default): it relays to a container's pipes
/// and sockets, where EPIPE is handled, or changes state, which a closed pipe must not cut
/// short.
const OUTPUT_ONLY: [&str; 21] = [
    "images",
    "ps",
    "history",
    "inspect",
    "logs",
    "stats",
    "top",
    "events",
    "port",
    "completion",
    "diff",
    "validate",
    "image ls",
    "image inspect",
    "container ls",
    "container diff",
    "system df",
    "volume ls",
    "volume inspect",
    "network ls",
    "network inspect",
];

fn output_only(args: impl IntoIterator<Item = std::ffi::OsString>) -> bool {
    let words = words_of(args);
    let one = words.first().map(String::as_str).unwrap_or_default();
    let two = words.join(" ");
    OUTPUT_ONLY.contains(&one) || OUTPUT_ONLY.contains(&two.as_str())
}

/// Prints clap's message for a command line it refused, and returns the exit code: 0 for
/// `--help` and `--version`, 125 for `run`, `create` and `exec` (docker's), 1 elsewhere.
fn usage_error(e: &clap::Error, args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return error::exit::OK;
    }
    let verb = verb_of(args);
    let known = verb.as_deref().filter(|v| {
        <Cli as clap::CommandFactory>::command()
            .find_subcommand(v)
            .is_some()
    });
    let _ = e.print();
    let hint = match known {
        Some(v) => format!("`wharf {v} --help` lists its arguments and flags"),
        None => "`wharf --help` lists the verbs".to_string(),
    };
    eprintln!("  hint: {hint}");
    match known {
        Some(v) if RUNTIME_VERBS.contains(&v) => error::exit::RUNTIME,
        _ => error::exit::ERROR,
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

    /// Every flag of every verb (and sub-verb) shows in its `--help`: none is hidden.
    #[test]
    fn every_flag_is_in_help() {
        fn walk(cmd: &mut clap::Command, path: &str) {
            let help = cmd.render_long_help().to_string();
            for arg in cmd.get_arguments() {
                if arg.is_hide_set() || path.contains("__") {
                    continue;
                }
                if let Some(l) = arg.get_long() {
                    assert!(
                        help.contains(&format!("--{l}")),
                        "`{path} --help` lacks --{l}"
                    );
                }
                if let Some(s) = arg.get_short() {
                    assert!(
                        help.contains(&format!("-{s}")),
                        "`{path} --help` lacks -{s}"
                    );
                }
            }
            for arg in cmd.get_arguments() {
                assert!(
                    !arg.is_hide_set() || path.contains("__"),
                    "`{path}` hides {}",
                    arg.get_id()
                );
            }
            let names: Vec<String> = cmd
                .get_subcommands()
                .map(|s| s.get_name().to_string())
                .collect();
            for n in names {
                if let Some(sub) = cmd.find_subcommand_mut(&n) {
                    walk(sub, &format!("{path} {n}"));
                }
            }
        }
        let mut cmd = Cli::command();
        cmd.build();
        walk(&mut cmd, "wharf");
    }

    #[test]
    fn the_verb_is_found_past_global_options() {
        let v = |a: &[&str]| verb_of(a.iter().map(std::ffi::OsString::from));
        assert_eq!(v(&["--root", "/x", "run", "img"]).as_deref(), Some("run"));
        assert_eq!(
            v(&["--debug", "--format=json", "ps"]).as_deref(),
            Some("ps")
        );
        assert_eq!(v(&["--debug"]), None);
    }

    #[test]
    fn only_verbs_that_read_and_print_die_of_a_closed_pipe() {
        let o = |a: &[&str]| output_only(a.iter().map(std::ffi::OsString::from));
        assert!(o(&["--root", "/x", "images", "-q"]));
        assert!(o(&["network", "ls"]) && o(&["system", "df", "-v"]));
        assert!(!o(&["network", "rm", "ls"]) && !o(&["run", "ps"]) && !o(&["apply"]));
        assert!(!o(&["system", "prune"]) && !o(&["attach", "images"]));
        // Each listed word or pair is a verb clap knows.
        let cmd = Cli::command();
        for v in OUTPUT_ONLY {
            let mut c = &cmd;
            for w in v.split(' ') {
                c = c
                    .find_subcommand(w)
                    .unwrap_or_else(|| panic!("no verb {v}"));
            }
        }
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
