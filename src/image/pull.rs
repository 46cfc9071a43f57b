//! `wharf pull`: images from OCI distribution registries (the v2 API), through `oci-client`.
//!
//! ```text
//!  REF ─ docker's normalisation (alpine → docker.io/library/alpine:latest)
//!      ─ manifest (OCI / Docker schema 2, ≤ 4 MiB; an index: the host's platform or
//!        --platform, never unknown/unknown) ─ its digest checked
//!      ─ already held (repo digest recorded, image present)? tag it, done
//!      ─ config blob (≤ 4 MiB, digest checked)
//!      ─ oci::assemble: the layers the store lacks, 3 side by side, each streamed from the
//!        registry through sha256 + decompression + sha256 + the safe unpacker, one pass
//! ```
//! The async client runs on a small tokio runtime; the unpacker's threads read each blob
//! through [`BlobReader`], which waits on the runtime for the next chunk.

use std::io::{self, Read};
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference as OciRef};

use super::oci::{self, Assembly, LayerSource, MAX_MANIFEST, Platform};
use crate::error::user;
use crate::store::Store;

/// How a pull is asked for.
pub struct PullOptions {
    /// `--platform` (None: the host's). Given, an image of another platform is refused, as
    /// docker refuses it; left out, an image of one platform is taken whatever it is.
    pub platform: Option<Platform>,
    /// `--tls-verify=false`: plain HTTP to this registry.
    pub tls_verify: bool,
    pub progress: Option<indicatif::MultiProgress>,
    /// Layers downloaded at once.
    pub parallel: usize,
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub id: String,
    /// The name as wharf tags it (docker's familiar form: `alpine`, `host:5000/team/app`).
    pub name: String,
    pub tag: Option<String>,
    /// The manifest digest, `sha256:…`.
    pub digest: String,
    /// The store held the image already.
    pub up_to_date: bool,
}

/// The media types a manifest request accepts.
const ACCEPT: &[&str] = &[
    oci::OCI_MANIFEST,
    oci::DOCKER_MANIFEST,
    oci::OCI_INDEX,
    oci::DOCKER_LIST,
];

/// A registry reference parsed with docker's rules, with the user's input for messages.
pub struct Target {
    pub oci: OciRef,
    pub input: String,
}

impl Target {
    pub fn parse(input: &str) -> Result<Target> {
        Ok(Target {
            oci: crate::reference::registry_ref(input)?,
            input: input.to_string(),
        })
    }

    /// docker's familiar name (`crate::reference::familiar`).
    pub fn familiar(&self) -> String {
        crate::reference::familiar(&self.oci)
    }

    /// The registry host[:port] as written in credentials (`docker.io` for Docker Hub).
    pub fn host(&self) -> &str {
        self.oci.registry()
    }
}

/// Whether `host` (host[:port]) is a loopback address: plain HTTP, as docker does.
pub fn is_loopback(host: &str) -> bool {
    let h = host
        .rsplit_once(':')
        .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(h, _)| h);
    let h = h.trim_start_matches('[').trim_end_matches(']');
    h == "localhost"
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The idle (read) timeout for registry connections: `WHARF_REGISTRY_TIMEOUT` seconds, 30 by
/// default. Connecting has the same bound.
fn timeout() -> Duration {
    std::env::var("WHARF_REGISTRY_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&s| s > 0)
        .map_or(Duration::from_secs(30), Duration::from_secs)
}

/// A client and its runtime for one registry.
pub struct Session {
    pub rt: tokio::runtime::Runtime,
    pub client: Client,
    pub auth: RegistryAuth,
    pub target: Target,
}

impl Session {
    pub fn new(target: Target, tls_verify: bool) -> Result<Session> {
        // reqwest is built without a default TLS provider: ring's, installed once.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let host = target.host().to_string();
        let protocol = if is_loopback(&host) || !tls_verify {
            ClientProtocol::HttpsExcept(vec![host.clone()])
        } else {
            ClientProtocol::Https
        };
        let config = ClientConfig {
            protocol,
            platform_resolver: None,
            read_timeout: Some(timeout()),
            connect_timeout: Some(timeout()),
            user_agent: concat!("wharf/", env!("CARGO_PKG_VERSION")),
            // Blobs go up in one PUT each (push::send says why).
            use_monolithic_push: true,
            ..Default::default()
        };
        let client = Client::try_from(config)
            .map_err(|e| anyhow::anyhow!("cannot set up the registry client: {e}"))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("cannot start the registry client's runtime")?;
        let auth = match super::auth::lookup(&host)? {
            Some((u, p)) => RegistryAuth::Basic(u, p),
            None => RegistryAuth::Anonymous,
        };
        Ok(Session {
            rt,
            client,
            auth,
            target,
        })
    }

    /// Turns a client error into a user error naming the reference and what to do.
    pub fn explain(&self, what: &str, e: OciDistributionError) -> anyhow::Error {
        let r = &self.target.input;
        let host = self.target.host();
        let anonymous = matches!(self.auth, RegistryAuth::Anonymous);
        let text = e.to_string();
        let chain = error_chain(&e);
        let (msg, hint) = match &e {
            OciDistributionError::AuthenticationFailure(_)
            | OciDistributionError::UnauthorizedError { .. } => (
                format!("{host} refused the {what} of {r}: {text}"),
                if anonymous {
                    format!("log in first: wharf login {host}")
                } else {
                    format!("check the credentials (wharf login {host}) and the access they grant")
                },
            ),
            OciDistributionError::ImageManifestNotFoundError(_) => (
                format!("{r}: no such image on {host}"),
                "check the name and tag".to_string(),
            ),
            _ => {
                let lower = chain.to_ascii_lowercase();
                let hint = if lower.contains("401") || lower.contains("unauthorized") {
                    if anonymous {
                        format!("the registry wants credentials: wharf login {host}")
                    } else {
                        format!("check the credentials (wharf login {host})")
                    }
                } else if lower.contains("redirect") {
                    "the registry redirects in a loop; check its address and proxy".to_string()
                } else if lower.contains("timed out") || lower.contains("timeout") {
                    "the registry did not answer in time (WHARF_REGISTRY_TIMEOUT sets the limit, in seconds)"
                        .to_string()
                } else if lower.contains("manifest unknown") || lower.contains("not found") {
                    "check the name and tag".to_string()
                } else {
                    format!("check that {host} is reachable and speaks the registry API (v2)")
                };
                (format!("cannot {what} {r} from {host}: {chain}"), hint)
            }
        };
        user(msg).hint(hint).into()
    }

    /// A manifest (or index) by reference, bounded and checked against its digest.
    pub fn manifest(&self, r: &OciRef) -> Result<(Vec<u8>, String)> {
        let (body, digest) = self
            .rt
            .block_on(self.client.pull_manifest_raw(r, &self.auth, ACCEPT))
            .map_err(|e| self.explain("pull", e))?;
        if body.len() as u64 > MAX_MANIFEST {
            return Err(user(format!(
                "the manifest of {} is {} bytes, over the 4 MiB limit",
                self.target.input,
                body.len()
            ))
            .hint("this is not an image manifest wharf reads; check the reference")
            .into());
        }
        let got = {
            use sha2::Digest;
            format!("sha256:{}", hex::encode(sha2::Sha256::digest(&body)))
        };
        if let Some(want) = r.digest()
            && want != got
        {
            return Err(user(format!(
                "the manifest of {} does not match its digest {want}: it hashes to {got}",
                self.target.input
            ))
            .hint("the registry sent other bytes than asked for; nothing was stored")
            .into());
        }
        let _ = digest;
        Ok((body.to_vec(), got))
    }

    /// A small blob (a config), bounded and checked against its digest.
    pub fn small_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let what = format!("the config {digest} of {}", self.target.input);
        let hex = oci::digest_hex(digest, &what)?.to_string();
        let r = &self.target.oci;
        let bytes = self.rt.block_on(async {
            let mut s = self
                .client
                .pull_blob_stream(r, digest)
                .await
                .map_err(|e| self.explain("pull", e))?;
            let mut buf = Vec::new();
            while let Some(chunk) = s.stream.next().await {
                let chunk = chunk.map_err(|e| {
                    anyhow::Error::new(
                        user(format!("cannot read {what}: {e}"))
                            .hint("the registry broke the connection; try again"),
                    )
                })?;
                buf.extend_from_slice(&chunk);
                if buf.len() as u64 > MAX_MANIFEST {
                    return Err(anyhow::Error::new(
                        user(format!("{what} is over the 4 MiB limit"))
                            .hint("this is not an image config wharf reads"),
                    ));
                }
            }
            Ok::<_, anyhow::Error>(buf)
        })?;
        let got = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&bytes))
        };
        if got != hex {
            return Err(user(format!(
                "{what} does not match its digest: it hashes to sha256:{got}"
            ))
            .hint("the blob is corrupt or was tampered with; nothing was stored")
            .into());
        }
        Ok(bytes)
    }

    /// A layer blob as a blocking reader, refusing more or fewer bytes than `size`.
    pub fn blob_reader(&self, digest: &str, size: Option<u64>) -> Result<BlobReader> {
        let s = self
            .rt
            .block_on(self.client.pull_blob_stream(&self.target.oci, digest))
            .map_err(|e| self.explain("pull", e))?;
        Ok(BlobReader {
            handle: self.rt.handle().clone(),
            stream: s.stream,
            cur: bytes::Bytes::new(),
            got: 0,
            size,
            done: false,
        })
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

/// A registry blob read synchronously: each read waits on the runtime for the next chunk.
pub struct BlobReader {
    handle: tokio::runtime::Handle,
    stream: futures_util::stream::BoxStream<'static, Result<bytes::Bytes, io::Error>>,
    cur: bytes::Bytes,
    got: u64,
    size: Option<u64>,
    /// The stream ended: it is not polled again (oci-client's verifying stream would
    /// check its digest a second time, over nothing).
    done: bool,
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            if self.done {
                return Ok(0);
            }
            match self.handle.block_on(self.stream.next()) {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => {
                    return Err(io::Error::other(format!(
                        "the download broke after {} bytes: {}",
                        self.got,
                        error_chain(&e)
                    )));
                }
                None => {
                    self.done = true;
                    if let Some(size) = self.size
                        && self.got < size
                    {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("the blob was cut short: {} of {size} bytes", self.got),
                        ));
                    }
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        self.got += n as u64;
        if let Some(size) = self.size
            && self.got > size
        {
            return Err(io::Error::other(format!(
                "the blob is longer than the {size} bytes its manifest says"
            )));
        }
        Ok(n)
    }
}

/// The manifest digest a registry has for `input` now (one manifest GET; nothing is
/// stored): what `apply --pull` compares with the digest an image was pulled by.
pub fn resolve_digest(input: &str) -> Result<String> {
    let s = Session::new(Target::parse(input)?, true)?;
    Ok(s.manifest(&s.target.oci)?.1)
}

/// `wharf pull REF`.
pub fn pull(store: &Store, input: &str, opts: &PullOptions) -> Result<Pulled> {
    let target = Target::parse(input)?;
    let name = target.familiar();
    let tag = target
        .oci
        .digest()
        .is_none()
        .then(|| target.oci.tag().unwrap_or("latest").to_string());
    let s = Session::new(target, opts.tls_verify)?;
    // The digest the reference names (an index's, as docker records it); the bytes kept are
    // the platform's manifest (push and save send it).
    let (mut bytes, digest) = s.manifest(&s.target.oci)?;
    let mut m = oci::parse_manifest(&bytes, input)?;
    let picked = m.is_index();
    if picked {
        let want = opts.platform.clone().unwrap_or_else(oci::host_platform);
        let d = oci::pick_platform(&m, &want, input)?;
        let by = s.target.oci.clone_with_digest(d.digest.clone());
        (bytes, _) = s.manifest(&by)?;
        m = oci::parse_manifest(&bytes, input)?;
        if m.is_index() {
            return Err(user(format!("{input}: an index inside an index"))
                .hint("wharf follows one level of image index")
                .into());
        }
    }
    if !matches!(
        m.media_type.as_str(),
        "" | oci::OCI_MANIFEST | oci::DOCKER_MANIFEST
    ) {
        return Err(user(format!(
            "{input} has a manifest of media type {:?}, which wharf does not read",
            m.media_type
        ))
        .hint("wharf pulls OCI and Docker schema 2 images")
        .into());
    }
    let Some(cfg) = m.config.clone() else {
        return Err(user(format!("the manifest of {input} has no config"))
            .hint("this is not a container image")
            .into());
    };
    let tags: Vec<(String, String)> = tag.iter().map(|t| (name.clone(), t.clone())).collect();

    // Held already: the image id is the config's digest. Tag it and record where from.
    let cfg_hex = oci::digest_hex(&cfg.digest, &format!("the config of {input}"))?.to_string();
    let held = store
        .db()
        .prepare_cached("SELECT 1 FROM images WHERE id = ?1")?
        .exists([&cfg_hex])?;
    // An image of one platform (no index to pick from): its config says which.
    let mut fetched = None;
    if !picked && let Some(want) = &opts.platform {
        let config = if held {
            let path = store.blob_path(&cfg_hex);
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?
        } else {
            s.small_blob(&cfg.digest)?
        };
        oci::check_platform(&config, want, input)?;
        fetched = Some(config);
    }
    if held {
        let tx = store.db().unchecked_transaction()?;
        let now = crate::store::now_ns();
        for (repo, t) in &tags {
            tx.execute(
                "INSERT OR REPLACE INTO tags (repo, tag, image_id, created_at) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![repo, t, cfg_hex, now],
            )?;
        }
        tx.execute(
            "INSERT OR REPLACE INTO repo_digests (repo, digest, image_id, manifest, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![name, digest, cfg_hex, bytes, now],
        )?;
        tx.commit()?;
        return Ok(Pulled {
            id: cfg_hex,
            name,
            tag,
            digest,
            up_to_date: true,
        });
    }

    let config = match fetched {
        Some(c) => c,
        None => s.small_blob(&cfg.digest)?,
    };
    let layers: Vec<LayerSource> = m
        .layers
        .iter()
        .map(|l| LayerSource {
            blob_digest: Some(l.digest.clone()),
            media_type: l.media_type.clone(),
            size: Some(l.size),
        })
        .collect();
    let digests: Vec<(String, u64)> = m
        .layers
        .iter()
        .map(|l| (l.digest.clone(), l.size))
        .collect();
    let committed = oci::assemble(
        store,
        Assembly {
            what: input.to_string(),
            config: &config,
            layers,
            tags,
            repo_digest: Some((name.clone(), digest.clone(), bytes.clone())),
            parallel: opts.parallel,
            progress: opts.progress.clone(),
            blob_repo: Some(name.clone()),
        },
        &|i, _| {
            let (d, size) = &digests[i];
            Ok(Box::new(s.blob_reader(d, Some(*size))?) as Box<dyn Read + Send>)
        },
    )?;
    Ok(Pulled {
        id: committed.id,
        name,
        tag,
        digest,
        up_to_date: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_as_docker_does() {
        let t = Target::parse("alpine").unwrap();
        assert_eq!(t.oci.whole(), "docker.io/library/alpine:latest");
        assert_eq!(t.familiar(), "alpine");
        let t = Target::parse("me/app:1").unwrap();
        assert_eq!(t.familiar(), "me/app");
        let t = Target::parse("127.0.0.1:5000/team/app:1.4").unwrap();
        assert_eq!(t.familiar(), "127.0.0.1:5000/team/app");
        assert_eq!(t.host(), "127.0.0.1:5000");
        assert!(Target::parse("Bad:Ref").is_err());
    }

    #[test]
    fn loopback_registries_are_told_apart() {
        for h in [
            "127.0.0.1:5000",
            "localhost:5000",
            "localhost",
            "[::1]:5000",
            "127.1.2.3",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["registry.example:5000", "10.0.0.1", "docker.io"] {
            assert!(!is_loopback(h), "{h}");
        }
    }
}
