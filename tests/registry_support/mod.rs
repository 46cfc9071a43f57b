//! Registries for the pull tests: Debian's `docker-registry` (the CNCF distribution
//! registry) started on 127.0.0.1 with a random port (plain, htpasswd basic auth, or token
//! auth against a tiny token server here), its storage in the test's temp dir, stopped by
//! pid; and small misbehaving servers (hang, redirect loop, huge manifest, stall mid-blob).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine;

use crate::common::{Env, wait_until};

/// A free port on 127.0.0.1 (bound, then released for the server to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub enum Auth {
    None,
    Basic { user: String, password: String },
    Token(TokenServer),
}

/// A running `docker-registry`, killed (by pid) and reaped on drop.
pub struct Registry {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
    pub auth: Auth,
}

impl Registry {
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The blob file of `digest` in the registry's storage (to damage it).
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    fn start(env: &Env, auth: Auth) -> Registry {
        assert!(
            Path::new("/usr/bin/docker-registry").exists(),
            "docker-registry is missing: apt-get install docker-registry"
        );
        let dir = env.dir.path().join(format!("registry-{}", free_port()));
        std::fs::create_dir_all(dir.join("storage")).unwrap();
        let port = free_port();
        let auth_yaml = match &auth {
            Auth::None => String::new(),
            Auth::Basic { user, password } => {
                let hash = bcrypt::hash(password, 4).unwrap();
                std::fs::write(dir.join("htpasswd"), format!("{user}:{hash}\n")).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: wharf-test\n    path: {}\n",
                    dir.join("htpasswd").display()
                )
            }
            Auth::Token(t) => format!(
                "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: wharf-test\n    issuer: wharf-test-issuer\n    rootcertbundle: {}\n",
                t.port,
                t.cert.display()
            ),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth_yaml}",
            dir.join("storage").display()
        );
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let child = Registry::spawn(&dir, port);
        Registry {
            child,
            port,
            dir,
            auth,
        }
    }

    /// Starts `docker-registry` on `dir`'s config and waits until it answers on `port`.
    fn spawn(dir: &Path, port: u16) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("log"))
            .unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        wait_until(20, "the registry to listen", || {
            let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n").ok()?;
            let mut head = [0u8; 12];
            s.read_exact(&mut head).ok()?;
            head.starts_with(b"HTTP/1.").then_some(())
        });
        child
    }

    /// How many requests of the registry's access log contain `pattern` (e.g.
    /// `"POST /v2/team/app/blobs/uploads/`).
    pub fn requests(&self, pattern: &str) -> usize {
        std::fs::read_to_string(self.dir.join("log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(pattern))
            .count()
    }

    /// Stops the registry (by its pid) and waits until its port refuses connections: what
    /// runs now must do without it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let port = self.port;
        wait_until(20, "the registry's port to close", || {
            TcpStream::connect(("127.0.0.1", port))
                .is_err()
                .then_some(())
        });
    }

    /// Starts the stopped registry again, same port and storage.
    pub fn restart(&mut self) {
        self.child = Registry::spawn(&self.dir, self.port);
    }

    pub fn plain(env: &Env) -> Registry {
        Registry::start(env, Auth::None)
    }

    pub fn basic(env: &Env, user: &str, password: &str) -> Registry {
        Registry::start(
            env,
            Auth::Basic {
                user: user.into(),
                password: password.into(),
            },
        )
    }

    pub fn token(env: &Env, user: &str, password: &str) -> Registry {
        let t = TokenServer::start(env.dir.path(), user, password);
        Registry::start(env, Auth::Token(t))
    }

    /// skopeo's `--dest-creds` for this registry's user, if it has one.
    fn creds(&self) -> Option<String> {
        match &self.auth {
            Auth::None => None,
            Auth::Basic { user, password } => Some(format!("{user}:{password}")),
            Auth::Token(t) => Some(format!("{}:{}", t.user, t.password)),
        }
    }

    /// `skopeo copy` of `src` (a transport:ref) to `docker://HOST/dest`.
    pub fn push(&self, src: &str, dest: &str, all: bool) {
        let mut c = Command::new("skopeo");
        c.args(["copy", "-q", "--dest-tls-verify=false"]);
        if all {
            c.arg("--all");
        }
        if let Some(cr) = self.creds() {
            c.args(["--dest-creds", &cr]);
        }
        let out = c
            .arg(src)
            .arg(format!("docker://{}/{dest}", self.host()))
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo copy {src} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `skopeo inspect` of `docker://HOST/name` (raw with `raw`).
    pub fn inspect(&self, name: &str, raw: bool) -> serde_json::Value {
        let mut c = Command::new("skopeo");
        c.args(["inspect", "--tls-verify=false"]);
        if raw {
            c.arg("--raw");
        }
        if let Some(cr) = self.creds() {
            c.args(["--creds", &cr]);
        }
        let out = c
            .arg(format!("docker://{}/{name}", self.host()))
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo inspect failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("skopeo prints JSON")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// A token server in a thread: GET /token with the right basic credentials gets an RS256
/// JWT whose x5c certificate is the registry's rootcertbundle; anything else gets 401.
pub struct TokenServer {
    pub port: u16,
    pub cert: PathBuf,
    key: PathBuf,
    pub user: String,
    pub password: String,
    stop: Arc<AtomicBool>,
    /// Requests served, with and without valid credentials.
    pub served: Arc<std::sync::atomic::AtomicUsize>,
}

impl TokenServer {
    fn start(dir: &Path, user: &str, password: &str) -> TokenServer {
        let key = dir.join("token.key");
        let cert = dir.join("token.crt");
        let st = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .args(["-subj", "/CN=wharf-test-token"])
            .stderr(Stdio::null())
            .status()
            .expect("run openssl");
        assert!(st.success(), "openssl req failed");
        let der = Command::new("openssl")
            .args(["x509", "-outform", "der", "-in"])
            .arg(&cert)
            .output()
            .expect("openssl x509");
        let x5c = base64::engine::general_purpose::STANDARD.encode(&der.stdout);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let want = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        {
            let (stop, served, key) = (stop.clone(), served.clone(), key.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(mut conn) = conn else { continue };
                    served.fetch_add(1, Ordering::SeqCst);
                    let (path, headers) = read_head(&mut conn);
                    let authorized = headers
                        .iter()
                        .any(|(k, v)| k.eq_ignore_ascii_case("authorization") && *v == want);
                    if !authorized {
                        let _ = conn.write_all(
                            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                        continue;
                    }
                    let token = jwt(&key, &x5c, &path);
                    let body = format!(
                        r#"{{"token":"{token}","access_token":"{token}","expires_in":300}}"#
                    );
                    let _ = conn.write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    );
                }
            });
        }
        TokenServer {
            port,
            cert,
            key,
            user: user.into(),
            password: password.into(),
            stop,
            served,
        }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// An RS256 JWT granting every scope the request asks for.
fn jwt(key: &Path, x5c: &str, path: &str) -> String {
    let query = path.split_once('?').map_or("", |(_, q)| q);
    let mut access = Vec::new();
    for kv in query.split('&') {
        if let Some(scope) = kv.strip_prefix("scope=") {
            let scope = scope
                .replace("%3A", ":")
                .replace("%2C", ",")
                .replace("%2F", "/");
            let parts: Vec<&str> = scope.splitn(3, ':').collect();
            if parts.len() == 3 {
                access.push(serde_json::json!({
                    "type": parts[0], "name": parts[1],
                    "actions": parts[2].split(',').collect::<Vec<_>>(),
                }));
            }
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": "wharf-test-issuer", "sub": "tester", "aud": "wharf-test",
        "exp": now + 300, "nbf": now - 10, "iat": now - 10, "jti": format!("{now}-{}", rand_u64()),
        "access": access,
    });
    let signing = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl dgst");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(signing.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    format!("{signing}.{}", b64url(&out.stdout))
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    u64::from_le_bytes(b)
}

/// Reads an HTTP request head: (path, headers).
pub fn read_head(conn: &mut TcpStream) -> (String, Vec<(String, String)>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    let _ = r.read_line(&mut line);
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).unwrap_or(0) == 0 || l == "\r\n" || l == "\n" {
            break;
        }
        if let Some((k, v)) = l.trim_end().split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    (path, headers)
}

/// A server in a thread that answers every request with `respond` (None: accept, then say
/// nothing). Stopped on drop.
pub struct Fake {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl Fake {
    pub fn start(respond: impl Fn(&str) -> Option<Vec<u8>> + Send + 'static) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let (path, _) = read_head(&mut conn);
                match respond(&path) {
                    Some(bytes) => {
                        let _ = conn.write_all(&bytes);
                    }
                    None => held.push(conn),
                }
            }
        });
        Fake { port, stop }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// A response with a body.
pub fn http(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// A proxy to `upstream` that forwards everything, except that blob responses stop after
/// `stall_after` bytes of body and then hang (the connection stays open).
pub struct StallProxy {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl StallProxy {
    pub fn start(upstream: u16, stall_after: usize) -> StallProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                std::thread::spawn(move || {
                    let (path, headers) = read_head(&mut conn);
                    let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                        return;
                    };
                    let mut req = format!("GET {path} HTTP/1.1\r\n");
                    for (k, v) in &headers {
                        if !k.eq_ignore_ascii_case("connection") {
                            req.push_str(&format!("{k}: {v}\r\n"));
                        }
                    }
                    req.push_str("Connection: close\r\n\r\n");
                    if up.write_all(req.as_bytes()).is_err() {
                        return;
                    }
                    let blob = path.contains("/blobs/");
                    let mut buf = vec![0u8; 16 * 1024];
                    let mut sent = 0usize;
                    loop {
                        let n = match up.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let n = if blob {
                            n.min(stall_after.saturating_sub(sent))
                        } else {
                            n
                        };
                        if n == 0 {
                            // Hang: keep the connection open, send nothing more.
                            std::thread::sleep(Duration::from_secs(3600));
                            return;
                        }
                        if conn.write_all(&buf[..n]).is_err() {
                            return;
                        }
                        sent += n;
                    }
                });
            }
        });
        StallProxy { port, stop }
    }
}

impl Drop for StallProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}
