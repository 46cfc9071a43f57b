//! Image references, parsed as docker parses them.
//!
//! ```text
//! reference := name [ ":" tag ] | name "@" "sha256:" hex64 | id
//! name      := [host[:port]/] component ("/" component)*
//! component := [a-z0-9]+ ((".") | "_" | "__" | "-"+) [a-z0-9]+)*
//! tag       := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
//! id        := "sha256:" hex64 | hex prefix of 4 or more digits (resolved against the store)
//! ```
//! wharf has no registries, so a name is kept as written: `app` is `app`, not
//! `docker.io/library/app`.

use std::fmt;

use crate::error::{UserError, user};

const MAX_NAME: usize = 255;

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// `name:tag` (`latest` when the tag is left out).
    Tag { repo: String, tag: String },
    /// `name@sha256:<hex>`: the image with that id, which must also carry the name.
    Digest { repo: String, hex: String },
    /// A full image id or a prefix of one (4 to 64 hex digits), as `sha256:<hex>` or bare.
    Id(String),
}

impl Reference {
    /// Parses a reference that may name an image by id. Bare hex of 4–64 digits is taken as an
    /// id candidate: the caller tries it as a tag first (docker does too: `abcd` can be a repo).
    pub fn parse(input: &str) -> Result<Reference, UserError> {
        if let Some(hex) = input.strip_prefix("sha256:") {
            if hex.len() == 64 && is_lower_hex(hex) {
                return Ok(Reference::Id(hex.to_string()));
            }
            return Err(bad(
                input,
                "an image id is sha256: followed by 64 lowercase hex digits",
            ));
        }
        if input.len() == 64 && is_lower_hex(input) {
            return Ok(Reference::Id(input.to_string()));
        }
        Self::parse_named(input)
    }

    /// Parses a reference that must carry a name (the target of `import` or `tag`).
    pub fn parse_named(input: &str) -> Result<Reference, UserError> {
        if input.is_empty() {
            return Err(bad(input, "the reference is empty"));
        }
        // Either would be read back as an image id by `parse`: the tag could never be used.
        if input.starts_with("sha256:") || (input.len() == 64 && is_lower_hex(input)) {
            return Err(bad(
                input,
                "a name cannot look like an image id (sha256:... or 64 hex digits)",
            ));
        }
        if let Some((name, digest)) = input.split_once('@') {
            validate_name(input, name)?;
            let name = docker_hub_short(name);
            let hex = digest.strip_prefix("sha256:").ok_or_else(|| {
                bad(
                    input,
                    "only sha256 digests are supported (name@sha256:<64 hex>)",
                )
            })?;
            if hex.len() != 64 || !is_lower_hex(hex) {
                return Err(bad(
                    input,
                    "a digest is sha256: followed by 64 lowercase hex digits",
                ));
            }
            return Ok(Reference::Digest {
                repo: name.to_string(),
                hex: hex.to_string(),
            });
        }
        // A ':' after the last '/' starts the tag; one before it is a registry port.
        let last_slash = input.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match input[last_slash..].rfind(':') {
            Some(i) => (&input[..last_slash + i], &input[last_slash + i + 1..]),
            None => (input, "latest"),
        };
        validate_name(input, name)?;
        validate_tag(input, tag)?;
        Ok(Reference::Tag {
            repo: docker_hub_short(name).to_string(),
            tag: tag.to_string(),
        })
    }

    /// An id prefix this reference could also stand for (bare hex of 4 or more digits).
    pub fn id_candidate(input: &str) -> Option<&str> {
        let hex = input.strip_prefix("sha256:").unwrap_or(input);
        (hex.len() >= 4 && hex.len() <= 64 && is_lower_hex(hex)).then_some(hex)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag { repo, tag } => write!(f, "{repo}:{tag}"),
            Reference::Digest { repo, hex } => write!(f, "{repo}@sha256:{hex}"),
            Reference::Id(hex) => write!(f, "sha256:{hex}"),
        }
    }
}

/// A reference to an image in a registry, parsed with docker's normalisation (`alpine` →
/// `docker.io/library/alpine:latest`): what `wharf pull` and a manifest's `ref` take.
pub fn registry_ref(input: &str) -> Result<oci_client::Reference, UserError> {
    input.parse().map_err(|e| {
        user(format!("invalid reference format {input:?}: {e}"))
            .hint("write [host[:port]/]name[:tag] or name@sha256:<digest>, e.g. alpine:3.20")
    })
}

/// docker's familiar name of a registry repository, the name wharf tags a pulled image with:
/// `docker.io/library/alpine` → `alpine`, `docker.io/me/app` → `me/app`; other registries
/// keep their host (`127.0.0.1:5000/team/app`).
pub fn familiar(r: &oci_client::Reference) -> String {
    let repo = r.repository();
    if r.registry() == "docker.io" {
        repo.strip_prefix("library/").unwrap_or(repo).to_string()
    } else {
        format!("{}/{repo}", r.registry())
    }
}

/// A Docker Hub name as docker shows it, the one the store tags with ([`familiar`]):
/// `docker.io/library/alpine` and `docker.io/alpine` are `alpine`, `docker.io/me/app` is
/// `me/app`. So `docker.io/library/alpine:3.20` (as skopeo writes an archive's RepoTags)
/// names the image `alpine:3.20`.
fn docker_hub_short(name: &str) -> &str {
    ["docker.io/", "index.docker.io/"]
        .iter()
        .find_map(|hub| name.strip_prefix(hub))
        .map_or(name, |rest| rest.strip_prefix("library/").unwrap_or(rest))
}

fn bad(input: &str, why: &str) -> UserError {
    user(format!("invalid reference format {input:?}: {why}"))
        .hint("write name[:tag] (lowercase, e.g. app:1.0), name@sha256:<digest>, or an image id")
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn validate_name(input: &str, name: &str) -> Result<(), UserError> {
    if name.is_empty() {
        return Err(bad(input, "the repository name is empty"));
    }
    if name.len() > MAX_NAME {
        return Err(bad(
            input,
            "the repository name is longer than 255 characters",
        ));
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    // A first part with a '.' or ':' or equal to "localhost" is a registry host[:port].
    if parts.len() > 1 {
        let first = parts[0];
        if first.contains('.') || first.contains(':') || first == "localhost" {
            validate_host(input, first)?;
            parts.remove(0);
        }
    }
    for part in parts {
        validate_component(input, part)?;
    }
    Ok(())
}

fn validate_host(input: &str, host: &str) -> Result<(), UserError> {
    let (h, port) = match host.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (host, None),
    };
    let ok_host = !h.is_empty()
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    let ok_port = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if ok_host && ok_port {
        Ok(())
    } else {
        Err(bad(
            input,
            &format!("{host:?} is not a valid registry host"),
        ))
    }
}

fn validate_component(input: &str, c: &str) -> Result<(), UserError> {
    if c.is_empty() {
        return Err(bad(input, "a path component of the name is empty"));
    }
    if c.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(bad(input, "repository names must be lowercase"));
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = c.as_bytes();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err(bad(
            input,
            &format!("{c:?} must start and end with a lowercase letter or digit"),
        ));
    }
    // Separators: '.', '_', '__', or one or more '-'.
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if alnum(b) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return Err(bad(
                input,
                &format!(
                    "{sep:?} in {c:?} is not allowed: separate words with '.', '_', '__' or '-'"
                ),
            ));
        }
    }
    Ok(())
}

fn validate_tag(input: &str, tag: &str) -> Result<(), UserError> {
    let bytes = tag.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    if bytes.is_empty() {
        return Err(bad(input, "the tag after ':' is empty"));
    }
    if bytes.len() > 128 {
        return Err(bad(input, "the tag is longer than 128 characters"));
    }
    if !word(bytes[0]) || !bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-') {
        return Err(bad(
            input,
            "a tag is letters, digits, '_', '.' and '-', and does not start with '.' or '-'",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(repo: &str, tag: &str) -> Reference {
        Reference::Tag {
            repo: repo.into(),
            tag: tag.into(),
        }
    }

    #[test]
    fn parses_names_and_tags() {
        assert_eq!(Reference::parse("app").unwrap(), tag("app", "latest"));
        assert_eq!(Reference::parse("app:1.0").unwrap(), tag("app", "1.0"));
        assert_eq!(
            Reference::parse("my/app:v1_x-2").unwrap(),
            tag("my/app", "v1_x-2")
        );
        assert_eq!(
            Reference::parse("localhost:5000/app").unwrap(),
            tag("localhost:5000/app", "latest")
        );
        assert_eq!(
            Reference::parse("reg.example.com:5000/team/app:2").unwrap(),
            tag("reg.example.com:5000/team/app", "2")
        );
        assert_eq!(
            Reference::parse("a__b.c-d---e").unwrap(),
            tag("a__b.c-d---e", "latest")
        );
    }

    #[test]
    fn parses_digests_and_ids() {
        let hex = "a".repeat(64);
        assert_eq!(
            Reference::parse(&format!("app@sha256:{hex}")).unwrap(),
            Reference::Digest {
                repo: "app".into(),
                hex: hex.clone()
            }
        );
        assert_eq!(
            Reference::parse(&format!("sha256:{hex}")).unwrap(),
            Reference::Id(hex.clone())
        );
        assert_eq!(Reference::parse(&hex).unwrap(), Reference::Id(hex.clone()));
        assert_eq!(Reference::id_candidate("abcd"), Some("abcd"));
        assert_eq!(Reference::id_candidate("abc"), None);
        assert_eq!(Reference::id_candidate("app"), None);
        assert_eq!(Reference::id_candidate("sha256:0123ab"), Some("0123ab"));
    }

    #[test]
    fn rejects_bad_references_with_a_reason() {
        for (input, why) in [
            ("", "empty"),
            ("App:1", "lowercase"),
            ("app:", "tag after ':' is empty"),
            ("app:.x", "does not start with"),
            ("-app", "must start and end"),
            ("app-", "must start and end"),
            ("a..b", "not allowed"),
            ("a___b", "not allowed"),
            ("a//b", "empty"),
            ("app@sha256:xyz", "64 lowercase hex"),
            ("app@md5:abc", "only sha256"),
            ("sha256:abc", "64 lowercase hex"),
            ("app:a b", "a tag is"),
        ] {
            let err = Reference::parse(input).expect_err(input);
            assert!(err.message.contains(why), "{input:?}: {}", err.message);
            assert!(
                err.message.contains("invalid reference format"),
                "{}",
                err.message
            );
            assert!(err.hint.is_some());
        }
        for input in [format!("sha256:{}", "a".repeat(64)), "b".repeat(64)] {
            let err = Reference::parse_named(&input).expect_err(&input);
            assert!(
                err.message.contains("look like an image id"),
                "{}",
                err.message
            );
        }
        let long = format!("app:{}", "x".repeat(129));
        assert!(Reference::parse(&long).is_err());
        assert!(Reference::parse(&"a".repeat(256)).is_err());
    }

    #[test]
    fn docker_hub_names_are_the_familiar_ones() {
        assert_eq!(
            Reference::parse("docker.io/library/alpine:3.20").unwrap(),
            tag("alpine", "3.20")
        );
        assert_eq!(
            Reference::parse("docker.io/alpine").unwrap(),
            tag("alpine", "latest")
        );
        assert_eq!(
            Reference::parse("index.docker.io/me/app:1").unwrap(),
            tag("me/app", "1")
        );
        let d = format!("docker.io/library/alpine@sha256:{}", "a".repeat(64));
        assert!(
            matches!(Reference::parse(&d).unwrap(), Reference::Digest { repo, .. } if repo == "alpine")
        );
        // Other registries keep their host.
        assert_eq!(
            Reference::parse("127.0.0.1:5000/library/alpine:1").unwrap(),
            tag("127.0.0.1:5000/library/alpine", "1")
        );
    }

    #[test]
    fn display_round_trips() {
        for s in ["app:1.0", "my/app:latest", "localhost:5000/x:y"] {
            assert_eq!(Reference::parse(s).unwrap().to_string(), s);
        }
    }
}
