//! Hostile and broken archives (issue 2, point 5). Each is either unpacked safely inside the
//! layer or refused with an error naming the entry; nothing is ever written outside the state
//! root (a canary dir beside it must not change), and a refused import leaves no image, tag,
//! layer, blob, or anything under tmp/.

mod common;
mod import_support;

use std::fs;
use std::path::Path;

use common::{Env, busybox_tar};
use import_support::*;

/// The staging layer is `<root>/tmp/import-*/layer`: four `..` reach the test's temp dir,
/// where the canary lives.
const UP4: &str = "../../../..";

/// Imports `tar` from stdin; asserts it was refused with exit 1 and a message containing
/// each of `want`, that the store is empty afterwards, and that the canary is unchanged.
fn refused(env: &Env, canary: &Canary, tar: &[u8], want: &[&str]) -> String {
    let out = import_bytes(env, tar, &["hostile:1"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "should be refused: {err}");
    assert!(err.starts_with("error: "), "{err}");
    for w in want {
        assert!(err.contains(w), "want {w:?} in: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    canary.assert_unchanged(env);
    assert_store_empty(env);
    err
}

/// Imports `tar`; asserts success and an unchanged canary; returns the layer dir.
fn accepted(env: &Env, canary: &Canary, tar: &[u8]) -> std::path::PathBuf {
    let layer = import_ok(env, tar, "hostile:1");
    canary.assert_unchanged(env);
    assert!(entries(&env.root.join("tmp")).is_empty());
    layer
}

/// Imports `tar`; whatever the outcome, the canary is unchanged. A refusal must name `entry`
/// and leave the store empty. Returns the layer when the import succeeded.
fn inside_or_refused(
    env: &Env,
    canary: &Canary,
    tar: &[u8],
    entry: &str,
) -> Option<std::path::PathBuf> {
    let out = import_bytes(env, tar, &["hostile:1"]);
    canary.assert_unchanged(env);
    if out.status.success() {
        let layers = entries(&env.root.join("layers"));
        assert_eq!(layers.len(), 1);
        Some(env.root.join("layers").join(&layers[0]))
    } else {
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!("{entry:?}")),
            "refusal must name {entry:?}: {err}"
        );
        assert_store_empty(env);
        None
    }
}

fn setup() -> (Env, Canary) {
    let env = Env::new();
    let canary = Canary::new(&env);
    (env, canary)
}

#[test]
fn dotdot_escapes_are_refused_naming_the_entry() {
    require_root!(); // wharf import keeps owners (0:0 here): root only
    let (env, canary) = setup();
    let name = format!("{UP4}/canary/pwned");
    let tar = Raw::new().file("ok", b"fine").file(&name, b"evil").finish();
    refused(&env, &canary, &tar, &[&name, "climbs out"]);
    assert!(!canary.dir.join("pwned").exists());
    // Hidden in the middle of a path.
    let tar = Raw::new().file("a/../../x", b"evil").finish();
    refused(&env, &canary, &tar, &["a/../../x"]);
    // A '..' that stays inside is fine.
    let layer = accepted(&env, &canary, &Raw::new().file("a/b/../c", b"ok").finish());
    assert_eq!(fs::read(layer.join("a/c")).unwrap(), b"ok");
}

#[test]
fn absolute_paths_are_stripped_to_inside() {
    require_root!(); // wharf import keeps owners (0:0 here): root only
    let (env, canary) = setup();
    let abs = canary.dir.join("abs-pwned");
    let tar = Raw::new()
        .file(abs.to_str().unwrap(), b"inside")
        .file("/etc/wharf-abs-probe", b"inside too")
        .finish();
    let layer = accepted(&env, &canary, &tar);
    assert!(!abs.exists());
    assert!(!Path::new("/etc/wharf-abs-probe").exists());
    let rel = abs.strip_prefix("/").unwrap();
    assert_eq!(fs::read(layer.join(rel)).unwrap(), b"inside");
    assert_eq!(
        fs::read(layer.join("etc/wharf-abs-probe")).unwrap(),
        b"inside too"
    );
}

#[test]
fn writing_through_an_absolute_symlink_stays_inside() {
    require_root!(); // the probe in the host's /etc needs root to be a real test
    let (env, canary) = setup();
    let probe = format!("wharf-probe-{}", std::process::id());
    let cdir = canary.dir.to_str().unwrap().to_string();
    let tar = Raw::new()
        .symlink("evil", "/etc")
        .dir("etc")
        .file(&format!("evil/{probe}"), b"through /etc")
        .file("evil/passwd", b"root::0:0::/:/bin/sh\n")
        .symlink("can", &cdir)
        .file("can/pwned", b"through the canary link")
        .finish();
    let out = import_bytes(&env, &tar, &["hostile:1"]);
    let err = stderr(&out);
    let host_probe = Path::new("/etc").join(&probe);
    let escaped = host_probe.exists();
    let _ = fs::remove_file(&host_probe);
    assert!(!escaped, "a file was written into the host's /etc");
    canary.assert_unchanged(&env);
    if out.status.success() {
        let layer = env
            .root
            .join("layers")
            .join(&entries(&env.root.join("layers"))[0]);
        assert_eq!(
            fs::read(layer.join("etc").join(&probe)).unwrap(),
            b"through /etc"
        );
        assert_eq!(
            fs::read(layer.join("etc/passwd")).unwrap(),
            b"root::0:0::/:/bin/sh\n"
        );
        assert_eq!(
            fs::read_link(layer.join("evil")).unwrap(),
            Path::new("/etc")
        );
        // "can" points at a path that does not exist inside the layer: created there, or refused.
        let inside = layer.join(cdir.trim_start_matches('/')).join("pwned");
        assert!(inside.exists(), "can/pwned went nowhere");
    } else {
        assert!(
            err.contains("can/pwned"),
            "refusal must name the entry: {err}"
        );
        assert_store_empty(&env);
    }
}

#[test]
fn symlink_climbing_out_then_written_through_lands_inside() {
    require_root!(); // wharf import keeps owners (0:0 here): root only
    let (env, canary) = setup();
    let tar = Raw::new()
        .symlink("up", "../../../../../..")
        .file("up/pwned", b"clamped")
        .finish();
    let layer = accepted(&env, &canary, &tar);
    // ".." stops at the layer's root, as it will in the container.
    assert_eq!(fs::read(layer.join("pwned")).unwrap(), b"clamped");
    env.ok(&["rmi", "hostile:1"]);
    // Through a link to the canary's relative path: a dangling link inside the layer.
    let tar = Raw::new()
        .symlink("deep/up2", &format!("{UP4}/canary"))
        .file("deep/up2/keep", b"overwrite?")
        .finish();
    if let Some(layer) = inside_or_refused(&env, &canary, &tar, "deep/up2/keep") {
        assert_eq!(fs::read(layer.join("canary/keep")).unwrap(), b"overwrite?");
    }
    assert_eq!(fs::read(canary.dir.join("keep")).unwrap(), b"keep me\n");
}

#[test]
fn hardlinks_pointing_outside_are_refused() {
    require_root!(); // wharf import keeps owners (0:0 here): root only
    let (env, canary) = setup();
    let cases = [
        format!("{UP4}/canary/keep"),
        "../../etc/passwd".to_string(),
        "/etc/shadow".to_string(),
        canary.dir.join("keep").to_str().unwrap().to_string(),
    ];
    for target in &cases {
        let tar = Raw::new().hardlink("h", target).finish();
        let err = refused(&env, &canary, &tar, &["\"h\""]);
        assert!(
            err.contains("hardlink") || err.contains("climbs out"),
            "{err}"
        );
    }
    // Through a symlink that points outside: resolved inside, where nothing is.
    let tar = Raw::new()
        .symlink("s", canary.dir.to_str().unwrap())
        .hardlink("h", "s/keep")
        .finish();
    refused(&env, &canary, &tar, &["\"h\""]);
    let tar = Raw::new()
        .symlink("s", "/etc")
        .hardlink("h", "s/passwd")
        .finish();
    refused(&env, &canary, &tar, &["\"h\""]);
    // A hardlink to an entry of the same archive is fine, by absolute name too.
    let layer = accepted(
        &env,
        &canary,
        &Raw::new().file("f", b"x").hardlink("g", "/f").finish(),
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        fs::metadata(layer.join("f")).unwrap().ino(),
        fs::metadata(layer.join("g")).unwrap().ino()
    );
}

#[test]
fn hardlink_to_a_symlink_links_the_symlink_itself() {
    require_root!(); // wharf import keeps owners (0:0 here): root only
    let (env, canary) = setup();
    let tar = Raw::new()
        .symlink("s", canary.dir.join("keep").to_str().unwrap())
        .hardlink("h", "s")
        .file("h", b"write via the hardlink name")
        .finish();
    // The later "h" replaces the link; nothing reaches the canary.
    let layer = accepted(&env, &canary, &tar);
    assert_eq!(
        fs::read(layer.join("h")).unwrap(),
        b"write via the hardlink name"
    );
    assert!(
        fs::symlink_metadata(layer.join("s"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn duplicate_entries_later_wins() {
    require_root!(); // wharf import keeps owners (0:0 here): root only
    let (env, canary) = setup();
    let tar = Raw::new()
        .file("same", b"first")
        .file("same", b"second")
        // file replaced by a directory
        .file("f2d", b"file")
        .dir("f2d")
        .file("f2d/child", b"c")
        // directory (with content) replaced by a file
        .dir("d2f")
        .file("d2f/old", b"o")
        .file("d2f", b"now a file")
        // symlink replaced by a file: the file must not be written through the link
        .symlink("l2f", canary.dir.join("keep").to_str().unwrap())
        .file("l2f", b"plain")
        // directory replaced by a symlink (to a dir of the layer), then written through
        .dir("real")
        .dir("d2l")
        .file("d2l/old", b"o")
        .symlink("d2l", "/real")
        .file("d2l/new", b"via link")
        .finish();
    let layer = accepted(&env, &canary, &tar);
    assert_eq!(fs::read(layer.join("same")).unwrap(), b"second");
    assert!(layer.join("f2d").is_dir());
    assert_eq!(fs::read(layer.join("f2d/child")).unwrap(), b"c");
    assert_eq!(fs::read(layer.join("d2f")).unwrap(), b"now a file");
    let l2f = fs::symlink_metadata(layer.join("l2f")).unwrap();
    assert!(l2f.is_file());
    assert_eq!(fs::read(layer.join("l2f")).unwrap(), b"plain");
    assert!(
        fs::symlink_metadata(layer.join("d2l"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read(layer.join("real/new")).unwrap(), b"via link");
    assert!(!layer.join("real/old").exists());
    env.ok(&["rmi", "hostile:1"]);
    // Directory replaced by a symlink to the canary (absolute, so dangling inside), then
    // written through: inside, or refused.
    let tar = Raw::new()
        .dir("d2l")
        .symlink("d2l", canary.dir.to_str().unwrap())
        .file("d2l/pwned", b"inside")
        .finish();
    inside_or_refused(&env, &canary, &tar, "d2l/pwned");
    assert!(!canary.dir.join("pwned").exists());
}

#[test]
fn names_longer_than_path_max_or_name_max_are_refused() {
    require_root!(); // wharf import keeps owners (0:0 here): root only
    let (env, canary) = setup();
    // GNU long name: 5000 bytes of short components.
    let long: String = std::iter::repeat_n("abcdefghi/", 500).collect::<String>() + "f";
    let tar = Raw::new()
        .gnu_longname(long.as_bytes())
        .file("placeholder", b"x")
        .finish();
    refused(&env, &canary, &tar, &["PATH_MAX", "abcdefghi/abcdefghi"]);
    // PAX path with a 300-byte component.
    let comp = "n".repeat(300);
    let tar = Raw::new()
        .pax(&[("path", format!("dir/{comp}").as_bytes())])
        .file("placeholder", b"x")
        .finish();
    refused(&env, &canary, &tar, &["NAME_MAX", "dir/nnnn"]);
    // tar::Builder writes long names as GNU long-name records itself.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    b.append_data(&mut h, format!("x/{}", "y".repeat(256)), &b"z"[..])
        .unwrap();
    refused(&env, &canary, &b.into_inner().unwrap(), &["NAME_MAX"]);
    // A symlink target longer than PATH_MAX.
    let tar = Raw::new()
        .pax(&[("linkpath", "t/".repeat(2100).as_bytes())])
        .symlink("s", "placeholder")
        .finish();
    refused(&env, &canary, &tar, &["\"s\"", "too long"]);
    // Long but legal (a 3000-byte path of 200-byte components) is fine.
    let ok: String =
        std::iter::repeat_n(format!("{}/", "d".repeat(199)), 15).collect::<String>() + "f";
    let layer = accepted(
        &env,
        &canary,
        &Raw::new()
            .gnu_longname(ok.as_bytes())
            .file("p", b"deep")
            .finish(),
    );
    assert_eq!(fs::read(layer.join(&ok)).unwrap(), b"deep");
}

#[test]
fn truncated_and_corrupt_streams_are_refused() {
    require_root!(); // wharf import keeps owners (0:0 here): root only
    let (env, canary) = setup();
    let good = fs::read(busybox_tar()).unwrap();
    // Cut in the middle of busybox's data.
    let cut = &good[..good.len() / 2 + 100];
    refused(&env, &canary, cut, &["truncated"]);
    // A header with a bad checksum (the second entry's name altered).
    let mut raw = Raw::new();
    raw.file("a", b"1").file("b", b"2");
    let mut bad = raw.finish();
    bad[1024] = b'c';
    refused(&env, &canary, &bad, &["checksum"]);
    // Garbage that is no tar at all.
    let junk: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    refused(&env, &canary, &junk, &["tar"]);
}

#[test]
fn compressed_stream_errors_are_refused() {
    require_root!(); // wharf import keeps owners (0:0 here): root only
    let (env, canary) = setup();
    let good = fs::read(busybox_tar()).unwrap();
    // gzip with a bad CRC: flip a byte of the trailer's CRC32.
    let mut gz = gzip(&good);
    let n = gz.len();
    gz[n - 8] ^= 0xff;
    refused(&env, &canary, &gz, &["gzip", "corrupt"]);
    // gzip cut short.
    let gz = gzip(&good);
    refused(&env, &canary, &gz[..gz.len() * 2 / 3], &["gzip"]);
    // zstd cut short.
    let zs = zstd(&good);
    refused(&env, &canary, &zs[..zs.len() - 64], &["zstd"]);
    // xz and bzip2 are named and refused.
    let mut xz = vec![0xfd, b'7', b'z', b'X', b'Z', 0x00];
    xz.extend_from_slice(&[0u8; 100]);
    refused(&env, &canary, &xz, &["xz"]);
    let mut bz = b"BZh91AY&SY".to_vec();
    bz.extend_from_slice(&[0u8; 100]);
    refused(&env, &canary, &bz, &["bzip2"]);
    // Empty input.
    refused(&env, &canary, b"", &["empty"]);
    // And from a file, named by its path.
    let p = env.dir.path().join("broken.tar.gz");
    let mut gz = gzip(&good);
    let n = gz.len();
    gz[n - 8] ^= 0xff;
    fs::write(&p, &gz).unwrap();
    let out = env.run(&["import", p.to_str().unwrap(), "f:1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    fs::remove_file(&p).unwrap();
    assert_store_empty(&env);
}

#[test]
fn special_entries_cannot_escape() {
    require_root!();
    let (env, canary) = setup();
    // A device node and a fifo written through a symlink to the canary dir: inside, or refused.
    let mut raw = Raw::new();
    raw.symlink("c", canary.dir.to_str().unwrap());
    let mut h = header(b"c/null", b'3', b"", 0, 0o666);
    h[329..337].copy_from_slice(b"0000001\0");
    h[337..345].copy_from_slice(b"0000003\0");
    set_checksum(&mut h);
    raw.buf.extend_from_slice(&h);
    raw.entry(b"c/fifo", b'6', b"", b"", 0o644);
    let out = import_bytes(&env, &raw.finish(), &["hostile:1"]);
    canary.assert_unchanged(&env);
    if !out.status.success() {
        assert!(stderr(&out).contains("c/"), "{}", stderr(&out));
        assert_store_empty(&env);
    }
}
