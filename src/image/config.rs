//! The OCI image config of an imported image, and docker import's `--change` instructions.
//!
//! The image id is the sha256 of the config blob's bytes, so the blob must be canonical:
//! [`ImageConfig::to_canonical_json`] serializes with a fixed field order and no whitespace,
//! and `created` comes from `SOURCE_DATE_EPOCH` when it is set, so importing the same tar
//! with the same changes gives the same id.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{UserError, user};

/// The OCI image configuration (image-spec `config.json`), the subset wharf writes and reads.
/// Field names and order follow the spec; unknown fields of a read config are kept.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    pub architecture: String,
    pub os: String,
    #[serde(default, deserialize_with = "null_default")]
    pub config: RunConfig,
    pub rootfs: RootFs,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub history: Vec<History>,
}

/// The `config` member: defaults for a container run from the image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    #[serde(rename = "User", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(
        rename = "ExposedPorts",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub exposed_ports: BTreeMap<String, Empty>,
    #[serde(
        rename = "Env",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub env: Vec<String>,
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(
        rename = "Volumes",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub volumes: BTreeMap<String, Empty>,
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_dir: Option<String>,
    #[serde(
        rename = "Labels",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    #[serde(
        rename = "StopSignal",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub stop_signal: Option<String>,
    /// docker's `Healthcheck` (not in the OCI spec, nor in oci-spec's type): read from the
    /// config of a pulled or loaded image; wharf's own configs never carry one.
    #[serde(
        rename = "Healthcheck",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub healthcheck: Option<ImageHealthcheck>,
}

/// An image's `Healthcheck`: every member may be missing (0 or absent means the default).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageHealthcheck {
    #[serde(rename = "Test", default, deserialize_with = "null_default")]
    pub test: Vec<String>,
    #[serde(rename = "Interval", default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<u64>,
    #[serde(rename = "Timeout", default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    #[serde(
        rename = "StartPeriod",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub start_period: Option<u64>,
    #[serde(rename = "Retries", default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
}

/// A `null` (docker writes `"Volumes": null`) reads as the default.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `{}` in JSON: the value type of ExposedPorts and Volumes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Empty {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub typ: String,
    #[serde(default, deserialize_with = "null_default")]
    pub diff_ids: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

impl ImageConfig {
    /// The config of a single-layer image imported from a tar with diff id `diff_id`.
    pub fn for_import(
        diff_id: &str,
        created: &str,
        run: RunConfig,
        comment: Option<String>,
    ) -> Self {
        ImageConfig {
            created: Some(created.to_string()),
            author: None,
            architecture: go_arch().to_string(),
            os: "linux".into(),
            config: run,
            rootfs: RootFs {
                typ: "layers".into(),
                diff_ids: vec![format!("sha256:{diff_id}")],
            },
            history: vec![History {
                created: Some(created.to_string()),
                created_by: Some("wharf import".into()),
                comment,
            }],
        }
    }

    /// The canonical bytes: compact JSON in declaration order. Hash these for the image id.
    pub fn to_canonical_json(&self) -> Vec<u8> {
        // Serializing plain structs, strings and string maps cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The architecture in Go's naming, as the image spec uses it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The `created` time of a new image: `SOURCE_DATE_EPOCH` when set (reproducible builds),
/// otherwise now. RFC 3339, UTC.
pub fn created_now() -> Result<String, UserError> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => {
            let secs: u64 = v.trim().parse().map_err(|_| {
                user(format!(
                    "SOURCE_DATE_EPOCH={v:?} is not a number of seconds"
                ))
                .hint("set it to a Unix time, e.g. SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)")
            })?;
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            Ok(humantime::format_rfc3339_seconds(t).to_string())
        }
        _ => Ok(humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()),
    }
}

/// Applies docker import's `--change` instructions (a Dockerfile subset) to `cfg`.
pub fn apply_changes(cfg: &mut RunConfig, changes: &[String]) -> Result<(), UserError> {
    for change in changes {
        apply_change(cfg, change)?;
    }
    Ok(())
}

const SUPPORTED: &str = "CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR";

fn apply_change(cfg: &mut RunConfig, change: &str) -> Result<(), UserError> {
    let change = change.trim();
    let (instr, rest) = match change.split_once(char::is_whitespace) {
        Some((i, r)) => (i, r.trim()),
        None => (change, ""),
    };
    let bad = |why: &str| {
        user(format!("invalid --change {change:?}: {why}")).hint(format!(
            "supported instructions: {SUPPORTED}; e.g. --change 'CMD [\"/bin/sh\"]'"
        ))
    };
    if rest.is_empty() {
        return Err(bad("the instruction has no argument"));
    }
    match instr.to_ascii_uppercase().as_str() {
        "CMD" => cfg.cmd = Some(exec_or_shell(rest).map_err(|e| bad(&e))?),
        "ENTRYPOINT" => cfg.entrypoint = Some(exec_or_shell(rest).map_err(|e| bad(&e))?),
        "ENV" => {
            for (k, v) in key_values(rest, true).map_err(|e| bad(&e))? {
                cfg.env
                    .retain(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) != k);
                cfg.env.push(format!("{k}={v}"));
            }
        }
        "LABEL" => {
            for (k, v) in key_values(rest, false).map_err(|e| bad(&e))? {
                cfg.labels.insert(k, v);
            }
        }
        "WORKDIR" => {
            if !rest.starts_with('/') {
                return Err(bad("WORKDIR must be an absolute path"));
            }
            cfg.working_dir = Some(rest.to_string());
        }
        "USER" => cfg.user = Some(rest.to_string()),
        "STOPSIGNAL" => cfg.stop_signal = Some(rest.to_string()),
        "EXPOSE" => {
            for port in rest.split_whitespace() {
                let (num, proto) = port.split_once('/').unwrap_or((port, "tcp"));
                if num.parse::<u16>().is_err() || !matches!(proto, "tcp" | "udp" | "sctp") {
                    return Err(bad(&format!("{port:?} is not a port like 80 or 53/udp")));
                }
                cfg.exposed_ports.insert(format!("{num}/{proto}"), Empty {});
            }
        }
        "VOLUME" => {
            let paths: Vec<String> = if rest.starts_with('[') {
                serde_json::from_str(rest).map_err(|e| bad(&format!("not a JSON array: {e}")))?
            } else {
                rest.split_whitespace().map(str::to_string).collect()
            };
            for p in paths {
                if !p.starts_with('/') {
                    return Err(bad(&format!("volume path {p:?} must be absolute")));
                }
                cfg.volumes.insert(p, Empty {});
            }
        }
        other => return Err(bad(&format!("{other} is not supported by import"))),
    }
    Ok(())
}

/// `["a", "b"]` (exec form) or `a b` (shell form, run by /bin/sh -c).
fn exec_or_shell(rest: &str) -> Result<Vec<String>, String> {
    if rest.starts_with('[') {
        let v: Vec<String> =
            serde_json::from_str(rest).map_err(|e| format!("not a JSON array of strings: {e}"))?;
        if v.is_empty() {
            return Err("the command is empty".into());
        }
        Ok(v)
    } else {
        Ok(vec!["/bin/sh".into(), "-c".into(), rest.into()])
    }
}

/// `K=V K2="v 2"`, or the legacy `K V` form (one pair, the rest of the line) for ENV.
fn key_values(rest: &str, legacy_ok: bool) -> Result<Vec<(String, String)>, String> {
    let first_word = rest.split_whitespace().next().unwrap_or("");
    if !first_word.contains('=') {
        if !legacy_ok {
            return Err("expected key=value".into());
        }
        let (k, v) = rest
            .split_once(char::is_whitespace)
            .ok_or("expected K=V or K V")?;
        return Ok(vec![(valid_key(k)?, v.trim().to_string())]);
    }
    let mut out = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        while let Some(&c) = chars.peek() {
            chars.next();
            match (quote, c) {
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (_, '\\') => {
                    if let Some(n) = chars.next() {
                        word.push(n);
                    }
                }
                (None, c) if c.is_whitespace() => break,
                (_, c) => word.push(c),
            }
        }
        if quote.is_some() {
            return Err("unterminated quote".into());
        }
        let (k, v) = word
            .split_once('=')
            .ok_or_else(|| format!("{word:?} is not key=value"))?;
        out.push((valid_key(k)?, v.to_string()));
    }
    Ok(out)
}

fn valid_key(k: &str) -> Result<String, String> {
    if k.is_empty() || k.contains(char::is_whitespace) {
        Err(format!("{k:?} is not a valid name"))
    } else {
        Ok(k.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed(changes: &[&str]) -> RunConfig {
        let mut c = RunConfig::default();
        apply_changes(
            &mut c,
            &changes.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        c
    }

    #[test]
    fn cmd_exec_and_shell_forms() {
        assert_eq!(
            changed(&[r#"CMD ["/bin/sh", "-l"]"#]).cmd.unwrap(),
            ["/bin/sh", "-l"]
        );
        assert_eq!(
            changed(&["CMD echo hi"]).cmd.unwrap(),
            ["/bin/sh", "-c", "echo hi"]
        );
        assert_eq!(
            changed(&[r#"entrypoint ["/x"]"#]).entrypoint.unwrap(),
            ["/x"]
        );
    }

    #[test]
    fn env_forms_and_override() {
        let c = changed(&["ENV A=1 B=\"two words\"", "ENV C 3 4", "ENV A=x"]);
        assert_eq!(c.env, ["B=two words", "C=3 4", "A=x"]);
    }

    #[test]
    fn workdir_user_label_expose_volume() {
        let c = changed(&[
            "WORKDIR /srv",
            "USER 1000:1000",
            "LABEL a=b c=\"d e\"",
            "EXPOSE 80 53/udp",
            r#"VOLUME ["/data"]"#,
        ]);
        assert_eq!(c.working_dir.as_deref(), Some("/srv"));
        assert_eq!(c.user.as_deref(), Some("1000:1000"));
        assert_eq!(c.labels["c"], "d e");
        assert!(c.exposed_ports.contains_key("80/tcp") && c.exposed_ports.contains_key("53/udp"));
        assert!(c.volumes.contains_key("/data"));
    }

    #[test]
    fn bad_changes_say_why() {
        for (change, why) in [
            ("RUN make", "not supported"),
            ("WORKDIR rel", "absolute"),
            ("CMD", "no argument"),
            ("CMD [oops", "JSON"),
            ("EXPOSE http", "port"),
            ("LABEL novalue", "key=value"),
            ("ENV A=\"x", "unterminated"),
        ] {
            let mut c = RunConfig::default();
            let err = apply_changes(&mut c, &[change.to_string()]).unwrap_err();
            assert!(err.message.contains(why), "{change}: {}", err.message);
            assert!(
                err.hint
                    .as_deref()
                    .unwrap()
                    .contains("supported instructions")
            );
        }
    }

    #[test]
    fn canonical_json_is_stable_and_compact() {
        let c = ImageConfig::for_import(
            "ab",
            "1970-01-01T00:00:00Z",
            changed(&["CMD [\"/bin/sh\"]"]),
            None,
        );
        let a = c.to_canonical_json();
        let back: ImageConfig = serde_json::from_slice(&a).unwrap();
        assert_eq!(back.to_canonical_json(), a);
        let s = String::from_utf8(a).unwrap();
        assert!(
            s.starts_with(r#"{"created":"1970-01-01T00:00:00Z","architecture":""#),
            "{s}"
        );
        assert!(
            s.contains(r#""rootfs":{"type":"layers","diff_ids":["sha256:ab"]}"#),
            "{s}"
        );
        assert!(!s.contains(' ') || s.contains("wharf import"));
    }
}
