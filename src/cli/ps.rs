//! `wharf ps` (and `wharf container ls`): the containers of the store as docker lists them.
//!
//! One query reads every row ([`container::list`]); filtering, ordering and formatting happen
//! here. The only per-row system call is the liveness check of running rows (one read of
//! `/proc/<pid>/stat`), done by the reconcile that precedes the query.

use std::collections::BTreeMap;

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use super::Ctx;
use super::output::table;
use crate::container::{self, Record};
use crate::disk::filter::{self, LabelFilter, name_matches};
use crate::error::{UserError, exit};
use crate::model::ContainerState;
use crate::store::{Store, now_ns};
use crate::util::{ago, rfc3339};

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers (default: only running ones)
    #[arg(short, long)]
    all: bool,
    /// Print only the ids
    #[arg(short, long)]
    quiet: bool,
    /// Filter: status=, name=, label=KEY[=VALUE], ancestor=, id=, exited=, health=, volume=,
    /// network=, before=, since= (repeatable)
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    filter: Vec<String>,
    /// Show the N most recently created containers (all states)
    #[arg(short = 'n', long = "last", value_name = "N")]
    last: Option<usize>,
    /// Show the most recently created container (all states)
    #[arg(short, long)]
    latest: bool,
    /// Do not shorten ids and commands
    #[arg(long)]
    no_trunc: bool,
}

/// docker's container states, as `--filter status=` takes them.
const STATES: &[&str] = &[
    "created",
    "restarting",
    "running",
    "removing",
    "paused",
    "exited",
    "dead",
];

/// Parsed `--filter`s: values of one key OR together, keys AND together (labels AND among
/// themselves, as in docker: each `label=` must hold).
#[derive(Debug, Default)]
pub struct Filters {
    status: Vec<String>,
    name: Vec<String>,
    id: Vec<String>,
    exited: Vec<i32>,
    /// `label=k`, `label=k=v`, `label!=k=v`: each must hold.
    labels: Vec<LabelFilter>,
    /// Each ancestor: the reference as given, and the image id it resolves to.
    ancestors: Vec<(String, Option<String>)>,
    health: Vec<String>,
    /// A volume's name, a bind's host path, or a mount's destination.
    volumes: Vec<String>,
    networks: Vec<String>,
    /// Created before / after the creation of these containers (ns since the epoch).
    before: Option<i64>,
    since: Option<i64>,
}

/// The keys `ps --filter` takes (docker's, but `is-task`, `publish`, `expose`).
const KEYS: &[&str] = &[
    "status", "name", "id", "exited", "label", "ancestor", "health", "volume", "network", "before",
    "since",
];

const HINT: &str = "use --filter status=running|exited|created|..., name=NAME, label=KEY[=VALUE], \
     label!=KEY[=VALUE], ancestor=IMAGE, id=ID, exited=CODE, health=STATE, volume=NAME|PATH, \
     network=none|host, before=CONTAINER or since=CONTAINER";

impl Filters {
    /// Parses `KEY=VALUE` filters (by [`filter::split`], the one `--filter` grammar); `store`
    /// resolves `ancestor=` references.
    pub fn parse(args: &[String], store: Option<&Store>) -> Result<Filters, UserError> {
        let mut f = Filters::default();
        for a in filter::split(args, KEYS, &["label"], HINT)? {
            let value = a.value;
            match a.key.as_str() {
                "status" => {
                    if !STATES.contains(&value) {
                        return Err(a.error(
                            "unknown status",
                            format!("a status is one of {}", STATES.join(", ")),
                        ));
                    }
                    f.status.push(value.to_string());
                }
                "name" => f.name.push(value.to_string()),
                "id" => f.id.push(value.to_ascii_lowercase()),
                "exited" => f.exited.push(
                    value
                        .parse()
                        .map_err(|_| a.error("the exit code is not a number", HINT))?,
                ),
                "label" => f.labels.push(a.label(HINT)?),
                "ancestor" => {
                    let id = store.and_then(|s| crate::image::resolve(s, value).ok());
                    f.ancestors.push((value.to_string(), id));
                }
                "health" => {
                    const HEALTH: &[&str] = &["starting", "healthy", "unhealthy", "none"];
                    if !HEALTH.contains(&value) {
                        return Err(a.error(
                            "unknown health",
                            format!("a health is one of {}", HEALTH.join(", ")),
                        ));
                    }
                    f.health.push(value.to_string());
                }
                "volume" => f.volumes.push(value.to_string()),
                "network" => f.networks.push(value.to_string()),
                _ => {
                    let created = store
                        .ok_or_else(|| a.error("no store", HINT))
                        .and_then(|s| {
                            container::find(s, value).map_err(|_| {
                                a.error(
                                    format_args!("no such container: {value}"),
                                    "give a container's name or id",
                                )
                            })
                        })?
                        .created_at;
                    if a.key == "before" {
                        f.before = Some(f.before.map_or(created, |b| b.min(created)));
                    } else {
                        f.since = Some(f.since.map_or(created, |b| b.max(created)));
                    }
                }
            }
        }
        Ok(f)
    }

    /// `status=` lists stopped containers without `-a`, as in docker.
    pub fn implies_all(&self) -> bool {
        !self.status.is_empty()
            || !self.exited.is_empty()
            || self.before.is_some()
            || self.since.is_some()
    }

    pub fn matches(&self, r: &Record) -> bool {
        let any =
            |v: &Vec<String>, f: &dyn Fn(&str) -> bool| v.is_empty() || v.iter().any(|s| f(s));
        any(&self.status, &|s| s == r.state.as_str())
            && any(&self.name, &|n| name_matches(n, &r.name))
            && any(&self.id, &|p| r.id.starts_with(p))
            && (self.exited.is_empty()
                || (r.state == ContainerState::Exited
                    && r.exit_code.is_some_and(|c| self.exited.contains(&c))))
            && self.labels.iter().all(|l| l.matches(&r.labels))
            && any(&self.health, &|h| {
                r.health.as_deref().unwrap_or("none") == h
            })
            && any(&self.volumes, &|v| {
                r.config
                    .volumes
                    .iter()
                    .any(|m| m.source == v || m.destination == v)
            })
            && any(&self.networks, &|n| {
                r.config.network_names().iter().any(|m| m == n)
            })
            && self.before.is_none_or(|t| r.created_at < t)
            && self.since.is_none_or(|t| r.created_at > t)
            && (self.ancestors.is_empty()
                || self.ancestors.iter().any(|(given, id)| {
                    id.as_deref() == Some(r.image_id.as_str())
                        || r.image_ref == *given
                        || r.image_id.starts_with(given.trim_start_matches("sha256:"))
                            && given.trim_start_matches("sha256:").len() >= 12
                }))
    }
}

/// The command as docker's COMMAND column shows it: argv joined by spaces, cut to 20
/// characters with an ellipsis (unless `no_trunc`), then quoted like Go's `strconv.Quote`.
pub fn command_column(args: &[String], no_trunc: bool) -> String {
    let cmd = args.join(" ");
    let shown = if no_trunc { cmd } else { ellipsis(&cmd, 20) };
    go_quote(&shown)
}

/// `s` cut to `max` characters, the last being `…`, when longer.
pub fn ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Go's `strconv.Quote`: double quotes, with `"` and `\` escaped, and control characters
/// as `\n`, `\t`, `\x1b`, `\u0085`...
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The IMAGE column: the reference as given; an id reference is shortened like docker's.
fn image_column(r: &Record, no_trunc: bool) -> String {
    let bare = r.image_ref.trim_start_matches("sha256:");
    if !no_trunc && bare.len() == 64 && bare.bytes().all(|b| b.is_ascii_hexdigit()) {
        return bare[..12].to_string();
    }
    r.image_ref.clone()
}

/// One container of `ps --format json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct PsJson<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    names: &'a str,
    image: &'a str,
    #[serde(rename = "ImageID")]
    image_id: String,
    command: String,
    created_at: String,
    running_for: String,
    state: &'a str,
    status: String,
    exit_code: Option<i32>,
    started_at: Option<String>,
    finished_at: Option<String>,
    labels: &'a BTreeMap<String, String>,
    ports: String,
    mounts: Vec<&'a str>,
    networks: String,
    restart_count: i64,
}

/// The containers `ps` shows, newest first.
/// `full_command`: the whole command is shown (`--no-trunc`, JSON).
pub fn select(store: &Store, a: &PsArgs, full_command: bool) -> Result<Vec<Record>> {
    let filters = Filters::parse(&a.filter, Some(store))?;
    // The COMMAND column shows 20 characters unless --no-trunc or JSON: 32 arguments of 32
    // characters each decide it (an ellipsis included).
    let cap = (!full_command).then_some(32);
    let mut all = container::list_for_ps(store, cap)?;
    all.reverse(); // newest first, as docker lists them
    let limit = if a.latest {
        Some(1)
    } else {
        a.last.filter(|&n| n > 0)
    };
    let show_all = a.all || limit.is_some() || filters.implies_all();
    let mut out: Vec<Record> = all
        .into_iter()
        .filter(|r| show_all || r.state.is_active())
        .filter(|r| filters.matches(r))
        .collect();
    if let Some(n) = limit {
        out.truncate(n);
    }
    Ok(out)
}

pub fn run(ctx: &Ctx, a: PsArgs) -> Result<i32> {
    let store = ctx.store()?;
    // A reader: closing the last connection would checkpoint the WAL (fsyncs and unlinks).
    let _ = store.db().set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    );
    let rows = select(&store, &a, a.no_trunc || ctx.json())?;
    let now = now_ns();
    if a.quiet {
        let mut s = String::with_capacity(rows.len() * 13);
        for r in &rows {
            s.push_str(if a.no_trunc { &r.id } else { r.short_id() });
            s.push('\n');
        }
        write_out(s.as_bytes())?;
        return Ok(exit::OK);
    }
    if ctx.json() {
        let v: Vec<PsJson<'_>> = rows
            .iter()
            .map(|r| PsJson {
                id: &r.id,
                names: &r.name,
                image: &r.image_ref,
                image_id: format!("sha256:{}", r.image_id),
                command: command_column(&r.config.args, true),
                created_at: rfc3339(r.created_at),
                running_for: ago(r.created_at),
                state: if paused(r) {
                    "paused"
                } else {
                    r.state.as_str()
                },
                status: status(r, now),
                exit_code: r.exit_code.filter(|_| {
                    matches!(r.state, ContainerState::Exited | ContainerState::Restarting)
                }),
                started_at: r.started_at.map(rfc3339),
                finished_at: r.finished_at.map(rfc3339),
                labels: &r.labels,
                ports: ports_column(&store, r),
                mounts: r
                    .config
                    .volumes
                    .iter()
                    .map(|v| v.destination.as_str())
                    .collect(),
                networks: r.config.network_names().join(","),
                restart_count: r.restart_count,
            })
            .collect();
        let mut text = serde_json::to_vec_pretty(&v)?;
        text.push(b'\n');
        write_out(&text)?;
        return Ok(exit::OK);
    }
    let rows_out: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                if a.no_trunc {
                    r.id.clone()
                } else {
                    r.short_id().to_string()
                },
                image_column(r, a.no_trunc),
                command_column(&r.config.args, a.no_trunc),
                ago(r.created_at),
                status(r, now),
                ports_column(&store, r),
                r.name.clone(),
            ]
        })
        .collect();
    let mut text = table(
        &[
            "CONTAINER ID",
            "IMAGE",
            "COMMAND",
            "CREATED",
            "STATUS",
            "PORTS",
            "NAMES",
        ],
        rows_out,
    );
    text.push('\n');
    write_out(text.as_bytes())?;
    Ok(exit::OK)
}

/// Writes to stdout in one go; a reader that went away (`| head`) is not an error.
fn write_out(b: &[u8]) -> Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(b) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// docker's PORTS: the published ports of a running container (`0.0.0.0:8080->80/tcp`).
fn ports_column(store: &Store, r: &Record) -> String {
    if r.config.net.ports.is_empty() || r.live_pid().is_none() {
        return String::new();
    }
    crate::network::ports::column(&crate::network::sandbox::bindings(store, &r.id))
}

/// A running container whose cgroup is frozen (`wharf pause`) is `paused`: one freezer read
/// per running row.
fn paused(r: &container::Record) -> bool {
    r.state == ContainerState::Running && crate::lifecycle::control::is_paused(r)
}

/// docker's STATUS, with `(Paused)` for a paused container.
fn status(r: &container::Record, now: i64) -> String {
    if paused(r) {
        container::status_text(ContainerState::Paused, r.started_at, None, None, None, now)
    } else {
        r.status_text(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn command_is_cut_and_quoted_like_docker() {
        assert_eq!(command_column(&s(&["/bin/bash"]), false), "\"/bin/bash\"");
        assert_eq!(
            command_column(&s(&["/bin/sh", "-c", "'while true; do date; done'"]), false),
            "\"/bin/sh -c 'while t…\""
        );
        // exactly 20 characters stay whole
        let twenty = "abcdefghij0123456789";
        assert_eq!(
            command_column(&s(&[twenty]), false),
            format!("\"{twenty}\"")
        );
        assert_eq!(
            command_column(&s(&["abcdefghij0123456789x"]), false),
            "\"abcdefghij012345678…\""
        );
        // untruncated
        assert_eq!(
            command_column(&s(&["sleep", "1000000000000000000000"]), true),
            "\"sleep 1000000000000000000000\""
        );
        // quoting
        assert_eq!(
            command_column(&s(&["echo", "a\"b\\c\n\t\x1b"]), true),
            "\"echo a\\\"b\\\\c\\n\\t\\x1b\""
        );
        // characters, not bytes, are counted
        assert_eq!(
            command_column(&s(&["échoéééééééééééééééééé"]), false),
            "\"échoééééééééééééééé…\""
        );
        assert_eq!(command_column(&[], false), "\"\"");
    }

    #[test]
    fn name_filter_takes_substrings_and_anchors() {
        assert!(name_matches("web", "my_web_1"));
        assert!(name_matches("^my", "my_web_1"));
        assert!(name_matches("^/my", "my_web_1"));
        assert!(!name_matches("^web", "my_web_1"));
        assert!(name_matches("_1$", "my_web_1"));
        assert!(name_matches("^my_web_1$", "my_web_1"));
        assert!(!name_matches("^my_web$", "my_web_1"));
    }

    fn rec(name: &str, state: &str, code: Option<i32>, labels: &[(&str, &str)]) -> Record {
        Record {
            id: format!("{:0<64}", name.len()),
            name: name.into(),
            image_id: "ab".repeat(32),
            image_ref: "bb:1".into(),
            config: Default::default(),
            created_at: 0,
            state: state.parse().expect("a state"),
            pid: None,
            pid_start: None,
            monitor_pid: None,
            monitor_start: None,
            started_at: None,
            finished_at: None,
            exit_code: code,
            oom_killed: false,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            project: None,
            spec_hash: None,
            spec: None,
            restart_count: 0,
            health: None,
            error: None,
        }
    }

    #[test]
    fn filters_or_within_a_key_and_across_keys() {
        let web = rec(
            "web",
            "running",
            None,
            &[("tier", "front"), ("env", "prod")],
        );
        let db = rec("db", "exited", Some(3), &[("tier", "back")]);
        let f = |v: &[&str]| Filters::parse(&s(v), None).unwrap();
        assert!(f(&[]).matches(&web));
        let st = f(&["status=running", "status=exited"]);
        assert!(st.matches(&web) && st.matches(&db));
        assert!(st.implies_all());
        let both = f(&["status=exited", "name=web"]);
        assert!(!both.matches(&web) && !both.matches(&db));
        let names = f(&["name=web", "name=db"]);
        assert!(names.matches(&web) && names.matches(&db));
        // labels: each must hold (docker's rule)
        assert!(f(&["label=tier"]).matches(&db));
        assert!(f(&["label=tier=front", "label=env=prod"]).matches(&web));
        assert!(!f(&["label=tier=front", "label=env=dev"]).matches(&web));
        assert!(f(&["label!=tier=front"]).matches(&db));
        assert!(!f(&["label!=tier=front"]).matches(&web));
        assert!(f(&["ancestor=bb:1"]).matches(&web));
        assert!(!f(&["ancestor=other:1"]).matches(&web));
        assert!(f(&[&format!("ancestor={}", "ab".repeat(6))]).matches(&web));
        assert!(f(&["exited=3"]).matches(&db) && !f(&["exited=0"]).matches(&db));
        assert!(!f(&["exited=3"]).matches(&web));
        assert!(f(&["id=3"]).matches(&web) && !f(&["id=3"]).matches(&db));
        assert!(f(&["health=none"]).matches(&web));
        assert!(!f(&["health=healthy"]).matches(&web));
        assert!(f(&["network=none"]).matches(&web) && !f(&["network=host"]).matches(&web));
        assert!(!f(&["volume=data"]).matches(&web));
    }

    #[test]
    fn bad_filters_say_what_is_wrong() {
        let e = Filters::parse(&s(&["status=sleeping"]), None).unwrap_err();
        assert!(e.message.contains("unknown status"), "{}", e.message);
        assert!(e.hint.unwrap().contains("exited"));
        let e = Filters::parse(&s(&["color=red"]), None).unwrap_err();
        assert!(e.message.contains("unknown key \"color\""), "{}", e.message);
        assert!(e.hint.unwrap().contains("ancestor=IMAGE"));
        assert!(Filters::parse(&s(&["name"]), None).is_err());
        assert!(Filters::parse(&s(&["name!=x"]), None).is_err());
        assert!(Filters::parse(&s(&["exited=x"]), None).is_err());
        assert!(Filters::parse(&s(&["health=great"]), None).is_err());
        assert!(Filters::parse(&s(&["since=web"]), None).is_err());
    }
}
