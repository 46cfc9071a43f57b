//! Policy storage: where the retention and log policies live and how they are read. The root
//! `config.toml` (the policy for `wharf run` containers, every image and the journal outside
//! projects), each project's `[retention]` as last applied (`project_policies`), and a
//! container's log rotation derived from them. The retention engine (`retention`) evaluates
//! these policies; the monitor reads a container's log policy from here, without reaching up
//! into the engine.

use std::path::Path;

use anyhow::Result;
use rusqlite::params;

use crate::error::user;
use crate::manifest::types::{JournalRetention, LogRetention, Retention};
use crate::model::LogPolicy;
use crate::store::{Store, now_ns};

/// The file under the state root that holds the defaults for `wharf run` containers (and for
/// `system prune --policy` outside any project): a `[retention]` table shaped like a
/// manifest's.
pub const ROOT_CONFIG: &str = "config.toml";

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RootConfig {
    #[serde(default)]
    retention: Retention,
    /// `[import]`: read by [`import_max_size`].
    #[serde(default)]
    import: ImportLimits,
    /// `[network]`: read by [`default_network`].
    #[serde(default)]
    network: NetworkDefaults,
}

/// `[network]` of the root config.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkDefaults {
    /// The `--network` of a container that gives none: "bridge" (docker's default), "none",
    /// "host", or a network's name.
    #[serde(default)]
    default: Option<String>,
    /// Who configures bridge networks: "native" (wharf itself, the default) or "netavark".
    #[serde(default)]
    backend: Option<NetworkBackend>,
}

/// Who configures bridge networks (`[network] backend` of the root config).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkBackend {
    /// wharf over netlink and nftables, aardvark-dns for names (`network::native`).
    #[default]
    Native,
    /// podman's netavark, called as podman calls it (`network::netavark`).
    Netavark,
}

fn network_config(root: &Path) -> Result<NetworkDefaults> {
    let path = root.join(ROOT_CONFIG);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(NetworkDefaults::default());
        }
        Err(e) => return Err(user(format!("cannot read {}: {e}", path.display())).into()),
    };
    let file: RootConfig = toml::from_str(&text).map_err(|e| {
        let at = e.span().map_or_else(String::new, |sp| {
            let (l, c) = crate::manifest::diag::line_col(&text, sp.start);
            format!(":{l}:{c}")
        });
        user(format!("{}{at}: {}", path.display(), e.message())).hint(
            "write [network] default = \"bridge\" (or \"none\", \"host\", a network's name), \
             backend = \"native\" (or \"netavark\")",
        )
    })?;
    Ok(file.network)
}

/// `[network] backend` of the root config, else native.
pub fn network_backend(root: &Path) -> Result<NetworkBackend> {
    Ok(network_config(root)?.backend.unwrap_or_default())
}

/// The `--network` of a `run`/`create` that gives none: `[network] default` of the root
/// config, else "bridge".
pub fn default_network(root: &Path) -> Result<String> {
    Ok(network_config(root)?
        .default
        .unwrap_or_else(|| "bridge".into()))
}

/// The journal's default outside projects: the newest 10,000 runs (and applies) are kept.
/// A `[retention.journal]` table replaces it (an empty one keeps everything).
pub const DEFAULT_JOURNAL_MAX_ENTRIES: u64 = 10_000;

fn with_default_journal(mut r: Retention) -> Retention {
    if r.journal.is_none() {
        r.journal = Some(JournalRetention {
            max_age: None,
            max_entries: Some(DEFAULT_JOURNAL_MAX_ENTRIES),
        });
    }
    r
}

/// Reads `<root>/config.toml`'s `[retention]` (empty policies when the file is absent). A
/// bad file is a user error naming the file, line and column.
pub fn root_config(root: &Path) -> Result<Retention> {
    let path = root.join(ROOT_CONFIG);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(with_default_journal(Retention::default()));
        }
        Err(e) => {
            return Err(user(format!("cannot read {}: {e}", path.display())).into());
        }
    };
    match toml::from_str::<RootConfig>(&text) {
        Ok(c) => Ok(with_default_journal(c.retention)),
        Err(e) => {
            let at = e.span().map_or_else(String::new, |sp| {
                let line = text[..sp.start].matches('\n').count() + 1;
                let col = sp.start - text[..sp.start].rfind('\n').map_or(0, |n| n + 1) + 1;
                format!(":{line}:{col}")
            });
            Err(user(format!(
                "{}{at}: {}",
                path.display(),
                e.message()
            ))
            .hint("the file holds one [retention] table shaped like a manifest's, e.g. [retention.images] keep = 3")
            .into())
        }
    }
}

/// Records a project's policy and the image references its manifest names (apply calls this
/// on every converge; `system prune --policy` and the log writer read it).
pub fn record_project_policy(
    store: &Store,
    project: &str,
    policy: &Retention,
    refs: &[String],
) -> Result<()> {
    let (policy, refs) = (serde_json::to_string(policy)?, serde_json::to_string(refs)?);
    // Unchanged (the common case): no write.
    let same = store
        .db()
        .prepare_cached(
            "SELECT 1 FROM project_policies WHERE project = ?1 AND retention = ?2 AND refs = ?3",
        )?
        .exists(params![project, policy, refs])?;
    if same {
        return Ok(());
    }
    store
        .db()
        .prepare_cached(
            "INSERT OR REPLACE INTO project_policies (project, retention, refs, updated_at) \
             VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![project, policy, refs, now_ns()])?;
    Ok(())
}

/// Every project's recorded policy and references.
pub fn project_policies(store: &Store) -> Result<Vec<(String, Retention, Vec<String>)>> {
    policies_where(store, "", [])
}

/// The `project_policies` rows matching `filter` (an SQL `WHERE` clause, or empty), decoded.
/// A row that does not decode is an error naming its project: read as "no policy", it would
/// silently stop protecting the images that project's manifest references.
fn policies_where<P: rusqlite::Params>(
    store: &Store,
    filter: &str,
    params: P,
) -> Result<Vec<(String, Retention, Vec<String>)>> {
    let sql =
        format!("SELECT project, retention, refs FROM project_policies {filter} ORDER BY project");
    let mut stmt = store.db().prepare_cached(&sql)?;
    let rows = stmt.query_map(params, |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (p, ret, refs) = row?;
        let decoded = serde_json::from_str(&ret)
            .and_then(|ret| Ok((ret, serde_json::from_str(&refs)?)))
            .map_err(|e| {
                crate::error::user(format!(
                    "the recorded retention policy of project {p} is corrupt: {e}"
                ))
                .hint(
                    "apply the project's manifests again (`wharf apply -f ...`) to record it anew",
                )
            })?;
        out.push((p, decoded.0, decoded.1));
    }
    Ok(out)
}

/// The log policy of a container: its project's `[retention.logs]` as last applied, else the
/// root config's, else [`crate::model::MAX_SIZE`] and 2 files. Never fails: a bad root config
/// falls back to the defaults (with a warning), so a container still starts.
pub fn log_policy(store: &Store, project: Option<&str>) -> LogPolicy {
    let from = |l: Option<&LogRetention>| {
        l.map(|l| LogPolicy {
            max_size: l.max_size.map(|b| b.0),
            max_files: l.max_files,
        })
    };
    let mut policy = LogPolicy::default();
    if let Some(p) = project
        && let Ok(list) = policies_where(store, "WHERE project = ?1", [p])
        && let Some((_, r, _)) = list.first()
        && let Some(l) = from(r.logs.as_ref())
    {
        policy = l;
    }
    match root_config(store.root()) {
        Ok(r) => {
            if let Some(d) = from(r.logs.as_ref()) {
                policy.max_size = policy.max_size.or(d.max_size);
                policy.max_files = policy.max_files.or(d.max_files);
            }
        }
        Err(e) => tracing::warn!("{e:#}; using the default log rotation"),
    }
    policy
}

// ---- [import]: limits on what wharf reads ----
//
// ```toml
// [import]
// max_size = "64GiB"   # the most file data one import may unpack (real size)
// ```
// The value limits of commands, env entries and labels are fixed (the kernel's): see
// [`crate::model::MAX_VALUE_BYTES`].

/// The default of `--max-size` and `[import] max_size`: 64 GiB, generous for any real
/// image, and a stop for a small archive that would expand without end (sparse files,
/// compression bombs).
pub const DEFAULT_IMPORT_MAX_SIZE: u64 = 64 << 30;

/// `[import]` of the root config.
#[derive(Debug, Default, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportLimits {
    /// A size ("64GiB", "500m") or a number of bytes.
    #[serde(default)]
    pub max_size: Option<toml::Value>,
}

/// The import limit of a state root: `[import] max_size` of its config.toml, else
/// [`DEFAULT_IMPORT_MAX_SIZE`]. A bad value is a user error naming the file, line and
/// column.
pub fn import_max_size(root: &Path) -> Result<u64> {
    let path = root.join(ROOT_CONFIG);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DEFAULT_IMPORT_MAX_SIZE),
        Err(e) => return Err(user(format!("cannot read {}: {e}", path.display())).into()),
    };
    let at = |span: Option<std::ops::Range<usize>>| {
        span.map_or_else(String::new, |sp| {
            let (l, c) = crate::manifest::diag::line_col(&text, sp.start);
            format!(":{l}:{c}")
        })
    };
    let hint = "write [import] max_size = \"64GiB\" (a size with a binary unit, or bytes)";
    let file: RootConfig = toml::from_str(&text).map_err(|e| {
        user(format!(
            "{}{}: {}",
            path.display(),
            at(e.span()),
            e.message()
        ))
        .hint(hint)
    })?;
    let size = match file.import.max_size {
        None => DEFAULT_IMPORT_MAX_SIZE,
        Some(toml::Value::Integer(n)) if n > 0 => n as u64,
        Some(toml::Value::String(s)) => crate::util::parse_size(&s).map_err(|e| {
            user(format!(
                "{}: [import] max_size: {}",
                path.display(),
                e.message(&s)
            ))
            .hint(hint)
        })?,
        Some(other) => {
            return Err(user(format!(
                "{}: [import] max_size must be a size such as \"64GiB\", not {other}",
                path.display()
            ))
            .hint(hint)
            .into());
        }
    };
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_config_is_optional_and_errors_carry_positions() {
        let dir = tempfile::tempdir().unwrap();
        let absent = root_config(dir.path()).unwrap();
        assert_eq!(
            absent.journal.and_then(|j| j.max_entries),
            Some(DEFAULT_JOURNAL_MAX_ENTRIES),
            "the journal keeps 10,000 entries by default"
        );
        assert_eq!(absent.images, None);
        std::fs::write(
            dir.path().join(ROOT_CONFIG),
            "[retention.logs]\nmax_size = \"1MiB\"\nmax_files = 3\n",
        )
        .unwrap();
        let r = root_config(dir.path()).unwrap();
        let logs = r.logs.unwrap();
        assert_eq!(
            (logs.max_size.map(|b| b.0), logs.max_files),
            (Some(1 << 20), Some(3))
        );
        std::fs::write(dir.path().join(ROOT_CONFIG), "[retention]\nimages = 3\n").unwrap();
        let e = root_config(dir.path()).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("config.toml:2:"), "{msg}");
        assert!(crate::error::find_user_error(&e).is_some());
    }

    #[test]
    fn default_file_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            import_max_size(dir.path()).unwrap(),
            DEFAULT_IMPORT_MAX_SIZE
        );
        let cfg = dir.path().join(ROOT_CONFIG);
        std::fs::write(
            &cfg,
            "[retention.images]\nkeep = 3\n[import]\nmax_size = \"1GiB\"\n",
        )
        .unwrap();
        assert_eq!(import_max_size(dir.path()).unwrap(), 1 << 30);
        std::fs::write(&cfg, "[import]\nmax_size = 4096\n").unwrap();
        assert_eq!(import_max_size(dir.path()).unwrap(), 4096);
        std::fs::write(&cfg, "[import]\nmax_size = \"12Q\"\n").unwrap();
        let e = format!("{:#}", import_max_size(dir.path()).unwrap_err());
        assert!(e.contains("max_size"), "{e}");
        std::fs::write(&cfg, "[import]\nmax_sise = 1\n").unwrap();
        let e = format!("{:#}", import_max_size(dir.path()).unwrap_err());
        assert!(e.contains("config.toml:2:1"), "{e}");
    }
}
