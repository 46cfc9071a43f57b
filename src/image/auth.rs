//! Registry credentials in docker's `config.json` shape (`{"auths": {"HOST": {"auth":
//! base64("user:password")}}}`): wharf's own file (`$XDG_CONFIG_HOME/wharf/auth.json`, else
//! `~/.config/wharf/auth.json`, mode 0600), then docker's (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`), so an existing `docker login` is used too.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine;
use serde_json::{Map, Value};

use crate::error::user;

/// Docker Hub's key in `auths`, as docker writes it.
const HUB_KEY: &str = "https://index.docker.io/v1/";

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// wharf's credentials file.
pub fn wharf_file() -> Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("wharf/auth.json"));
    }
    home().map(|h| h.join(".config/wharf/auth.json")).ok_or_else(|| {
        user("cannot tell where to keep registry credentials: neither XDG_CONFIG_HOME nor HOME is set")
            .hint("set HOME (or XDG_CONFIG_HOME)")
            .into()
    })
}

fn docker_file() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("config.json"));
    }
    home().map(|h| h.join(".docker/config.json"))
}

/// The keys a registry may be stored under.
fn keys(host: &str) -> Vec<String> {
    if matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    ) {
        return vec![HUB_KEY.into(), "docker.io".into(), "index.docker.io".into()];
    }
    vec![
        host.to_string(),
        format!("https://{host}"),
        format!("http://{host}"),
        format!("https://{host}/v2/"),
    ]
}

fn store_key(host: &str) -> String {
    keys(host).swap_remove(0)
}

fn read(path: &Path) -> Result<Option<Value>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            user(format!(
                "the credentials file {} is not valid JSON: {e}",
                path.display()
            ))
            .hint("fix or remove it, then wharf login again")
            .into()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn decode(v: &Value, path: &Path) -> Result<Option<(String, String)>> {
    let Some(auth) = v.get("auth").and_then(Value::as_str) else {
        // A credential helper (credsStore) entry: not read by wharf.
        return Ok(None);
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    match raw.as_deref().and_then(|s| s.split_once(':')) {
        Some((u, p)) => Ok(Some((u.to_string(), p.to_string()))),
        None => Err(user(format!(
            "an \"auth\" entry in {} is not base64 of user:password",
            path.display()
        ))
        .hint("wharf login again")
        .into()),
    }
}

/// The credentials for `host`: wharf's file first, then docker's.
pub fn lookup(host: &str) -> Result<Option<(String, String)>> {
    let mut files = vec![wharf_file()?];
    files.extend(docker_file());
    for path in files {
        let Some(doc) = read(&path)? else { continue };
        for k in keys(host) {
            if let Some(v) = doc.get("auths").and_then(|a| a.get(&k))
                && let Some(c) = decode(v, &path)?
            {
                return Ok(Some(c));
            }
        }
    }
    Ok(None)
}

fn write(path: &Path, doc: &Value) -> Result<()> {
    let dir = path
        .parent()
        .context("the credentials file has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let bytes = serde_json::to_vec_pretty(doc)?;
    crate::store::fsutil::write_atomic(path, &bytes, 0o600)
}

/// `wharf login`: stores `user`/`password` for `host` in wharf's file (mode 0600).
pub fn login(host: &str, user_name: &str, password: &str) -> Result<PathBuf> {
    let path = wharf_file()?;
    let mut doc = read(&path)?.unwrap_or_else(|| Value::Object(Map::new()));
    let obj = doc
        .as_object_mut()
        .ok_or_else(|| anyhow::anyhow!("{} is not a JSON object", path.display()))?;
    let auths = obj
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(auths) = auths.as_object_mut() else {
        anyhow::bail!("\"auths\" in {} is not an object", path.display());
    };
    let enc = base64::engine::general_purpose::STANDARD.encode(format!("{user_name}:{password}"));
    auths.insert(store_key(host), serde_json::json!({ "auth": enc }));
    write(&path, &doc)?;
    Ok(path)
}

/// `wharf logout`: removes `host`'s entry from wharf's file. False when there was none.
pub fn logout(host: &str) -> Result<bool> {
    let path = wharf_file()?;
    let Some(mut doc) = read(&path)? else {
        return Ok(false);
    };
    let mut removed = false;
    if let Some(auths) = doc.get_mut("auths").and_then(Value::as_object_mut) {
        for k in keys(host) {
            removed |= auths.remove(&k).is_some();
        }
    }
    if removed {
        write(&path, &doc)?;
    }
    Ok(removed)
}
