//! Limits on what wharf reads, and their `[import]` table in `<root>/config.toml`.
//!
//! ```toml
//! [import]
//! max_size = "64GiB"   # the most file data one import may unpack (real size)
//! ```
//!
//! The value limits of commands, env entries and labels are fixed (the kernel's); see
//! [`crate::manifest::values::MAX_VALUE_BYTES`].

use std::path::Path;

use anyhow::Result;
use serde::Deserialize;

use crate::error::user;
use crate::policy::ROOT_CONFIG;

/// The default of `--max-size` and `[import] max_size`: 64 GiB, generous for any real
/// image, and a stop for a small archive that would expand without end (sparse files,
/// compression bombs).
pub const DEFAULT_IMPORT_MAX_SIZE: u64 = 64 << 30;

/// `[import]` of the root config.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportLimits {
    /// A size ("64GiB", "500m") or a number of bytes.
    #[serde(default)]
    pub max_size: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
struct LimitsFile {
    #[serde(default)]
    import: ImportLimits,
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
    let file: LimitsFile = toml::from_str(&text).map_err(|e| {
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
        Some(toml::Value::String(s)) => crate::manifest::values::parse_size(&s).map_err(|e| {
            user(format!(
                "{}: [import] max_size: {}",
                path.display(),
                e.message
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
