//! Helpers for the import and store suites: crafting tar streams (including ones `tar::Builder`
//! refuses to write), feeding them to `wharf import -`, and checking that the store and its
//! surroundings hold nothing a refused import could have left.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use crate::common::Env;

/// A tar stream written header by header, so that any name, type or link can be put in.
#[derive(Default)]
pub struct Raw {
    pub buf: Vec<u8>,
}

/// A ustar header block with a correct checksum. `name` and `link` must fit (100 bytes).
pub fn header(name: &[u8], typ: u8, link: &[u8], size: u64, mode: u32) -> [u8; 512] {
    assert!(
        name.len() <= 100 && link.len() <= 100,
        "use a long-name record"
    );
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    let octal = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
        let s = format!("{v:0w$o}\0", w = len - 1);
        h[at..at + len].copy_from_slice(s.as_bytes());
    };
    octal(&mut h, 100, 8, u64::from(mode));
    octal(&mut h, 108, 8, 0);
    octal(&mut h, 116, 8, 0);
    octal(&mut h, 124, 12, size);
    octal(&mut h, 136, 12, 1_600_000_000);
    h[156] = typ;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    set_checksum(&mut h);
    h
}

/// Recomputes a header block's checksum.
pub fn set_checksum(h: &mut [u8]) {
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h[..512].iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

impl Raw {
    pub fn new() -> Raw {
        Raw::default()
    }

    fn data(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.buf.extend(std::iter::repeat_n(0u8, pad));
    }

    pub fn entry(&mut self, name: &[u8], typ: u8, link: &[u8], data: &[u8], mode: u32) -> &mut Raw {
        let h = header(name, typ, link, data.len() as u64, mode);
        self.buf.extend_from_slice(&h);
        self.data(data);
        self
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Raw {
        self.entry(name.as_bytes(), b'0', b"", data, 0o644)
    }

    pub fn dir(&mut self, name: &str) -> &mut Raw {
        self.entry(name.as_bytes(), b'5', b"", b"", 0o755)
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Raw {
        self.entry(name.as_bytes(), b'2', target.as_bytes(), b"", 0o777)
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Raw {
        self.entry(name.as_bytes(), b'1', target.as_bytes(), b"", 0o644)
    }

    /// A PAX extended header ('x') applying to the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Raw {
        let mut body = Vec::new();
        for (k, v) in records {
            // "<len> <key>=<value>\n", where <len> counts itself.
            let rest = k.len() + v.len() + 3;
            let mut len = rest + 1;
            while len.to_string().len() + rest != len {
                len += 1;
            }
            body.extend_from_slice(format!("{len} {k}=").as_bytes());
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        self.entry(b"PaxHeaders/x", b'x', b"", &body, 0o644)
    }

    /// A GNU long-name record ('L') giving the next entry's name.
    pub fn gnu_longname(&mut self, name: &[u8]) -> &mut Raw {
        let mut n = name.to_vec();
        n.push(0);
        self.entry(b"././@LongLink", b'L', b"", &n, 0o644)
    }

    /// The stream with its end-of-archive marker.
    pub fn finish(&self) -> Vec<u8> {
        let mut v = self.buf.clone();
        v.extend(std::iter::repeat_n(0u8, 1024));
        v
    }
}

/// Runs `wharf import - <args…>` with `input` on stdin.
pub fn import_bytes(env: &Env, input: &[u8], args: &[&str]) -> Output {
    import_bytes_env(env, input, args, &[])
}

pub fn import_bytes_env(env: &Env, input: &[u8], args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut cmd = env.wharf();
    cmd.arg("import").arg("-").args(args);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wharf import");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = input.to_vec();
    // wharf may stop reading early (a refused entry): a broken pipe here is expected.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait for wharf import");
    writer.join().expect("writer thread");
    out
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Imports `input` from stdin and asserts success; returns the layer directory.
pub fn import_ok(env: &Env, input: &[u8], reference: &str) -> PathBuf {
    let out = import_bytes(env, input, &[reference]);
    assert!(
        out.status.success(),
        "import failed: {}\n{}",
        out.status,
        stderr(&out)
    );
    let layers = entries(&env.root.join("layers"));
    assert_eq!(layers.len(), 1, "expected one layer: {layers:?}");
    env.root.join("layers").join(&layers[0])
}

/// Names in a directory, sorted (empty when it does not exist).
pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Opens the store with `wharf images` (which runs recovery) and asserts it holds nothing:
/// no image, tag, layer, blob, nor anything under tmp/.
pub fn assert_store_empty(env: &Env) {
    let q = env.ok(&["images", "-q"]);
    assert_eq!(q.trim(), "", "images left: {q}");
    let json = env.ok(&["images", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("images json");
    assert_eq!(v.as_array().map(Vec::len), Some(0), "{json}");
    for sub in ["layers", "blobs/sha256", "tmp"] {
        let left = entries(&env.root.join(sub));
        assert!(left.is_empty(), "{sub}/ not empty: {left:?}");
    }
    let db = rusqlite::Connection::open(env.root.join("wharf.db")).expect("open db");
    for table in [
        "images",
        "tags",
        "layers",
        "image_layers",
        "sources",
        "layer_blobs",
    ] {
        let n: i64 = db
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 0, "table {table} has {n} rows");
    }
}

/// A directory beside the state root that no import may touch, with its recorded state.
pub struct Canary {
    pub dir: PathBuf,
    before: BTreeMap<PathBuf, (u64, i64, u32, u64)>,
}

impl Canary {
    pub fn new(env: &Env) -> Canary {
        let dir = env.dir.path().join("canary");
        fs::create_dir_all(dir.join("etc")).expect("canary dir");
        fs::write(dir.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n").expect("canary file");
        fs::write(dir.join("keep"), b"keep me\n").expect("canary file");
        let before = snapshot(env.dir.path(), &env.root);
        Canary { dir, before }
    }

    /// Asserts that nothing outside the state root changed (no file added, removed or
    /// modified in the test's temp dir, the canary included).
    pub fn assert_unchanged(&self, env: &Env) {
        let after = snapshot(env.dir.path(), &env.root);
        assert_eq!(
            self.before, after,
            "something outside the state root changed"
        );
        assert_eq!(
            fs::read(self.dir.join("etc/passwd")).expect("canary"),
            b"root:x:0:0::/root:/bin/sh\n"
        );
    }
}

/// (size, mtime, mode, inode) of everything below `base`, skipping the subtree `skip`.
fn snapshot(base: &Path, skip: &Path) -> BTreeMap<PathBuf, (u64, i64, u32, u64)> {
    let mut out = BTreeMap::new();
    fn walk(p: &Path, skip: &Path, out: &mut BTreeMap<PathBuf, (u64, i64, u32, u64)>) {
        let Ok(rd) = fs::read_dir(p) else { return };
        for e in rd.flatten() {
            let path = e.path();
            if path == skip {
                continue;
            }
            if let Ok(m) = fs::symlink_metadata(&path) {
                let size = if m.is_dir() { 0 } else { m.size() };
                let mtime = if m.is_dir() { 0 } else { m.mtime() };
                out.insert(path.clone(), (size, mtime, m.mode(), m.ino()));
                if m.is_dir() {
                    walk(&path, skip, out);
                }
            }
        }
    }
    walk(base, skip, &mut out);
    out
}

/// An extended attribute of `path` itself (not following a final symlink).
pub fn lgetxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let n = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: two NUL-terminated strings and a buffer of the given length owned by this frame.
    let rc = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if rc < 0 {
        return None;
    }
    buf.truncate(rc as usize);
    Some(buf)
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).expect("zstd")
}

/// Writes an OCI layout at `dir` (made) of one image whose layers are `layers` (plain tars,
/// bottom first), each stored gzip-compressed; its config has `Cmd ["/bin/sh"]`. Returns the
/// layers' blob paths.
pub fn oci_layout(dir: &Path, layers: &[Vec<u8>]) -> Vec<PathBuf> {
    oci_layout_with(dir, layers, serde_json::json!({"Cmd": ["/bin/sh"]}))
}

/// [`oci_layout`] with `run_config` as the config's `config` member.
pub fn oci_layout_with(
    dir: &Path,
    layers: &[Vec<u8>],
    run_config: serde_json::Value,
) -> Vec<PathBuf> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).expect("mkdir blobs");
    let put = |data: &[u8]| -> (String, PathBuf) {
        let hex = sha256_hex(data);
        let p = blobs.join(&hex);
        fs::write(&p, data).expect("write blob");
        (format!("sha256:{hex}"), p)
    };
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    let mut paths = Vec::new();
    for l in layers {
        diff_ids.push(format!("sha256:{}", sha256_hex(l)));
        let gz = gzip(l);
        let (digest, p) = put(&gz);
        descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest, "size": gz.len(),
        }));
        paths.push(p);
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": run_config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("config json");
    let (cdigest, _) = put(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": cdigest, "size": config.len()},
        "layers": descs,
    }))
    .expect("manifest json");
    let (mdigest, _) = put(&manifest);
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "digest": mdigest, "size": manifest.len(),
                           "annotations": {"org.opencontainers.image.ref.name": "wharf.test/crafted:1"}}],
        }))
        .expect("index json"),
    )
    .expect("write index");
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
    paths
}
