//! `wharf import` and the image verbs around it (issue 2, points 3, 4 and 6): sources and
//! compressions, identities, config changes, what a layer keeps, `images`, `tag`, `rmi`,
//! references and id prefixes.

mod common;
mod import_support;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use common::{Env, busybox_tar, seed_tar};
use import_support::*;

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn import_json(env: &Env, file: &Path, reference: &str) -> serde_json::Value {
    json(&env.ok(&[
        "--format",
        "json",
        "import",
        file.to_str().unwrap(),
        reference,
    ]))
}

fn inspect(env: &Env, r: &str) -> serde_json::Value {
    let v = json(&env.ok(&["image", "inspect", r]));
    v[0].clone()
}

fn layer_of(env: &Env, r: &str) -> PathBuf {
    let v = inspect(env, r);
    PathBuf::from(v["GraphDriver"]["Data"]["LowerDirs"].as_str().unwrap())
}

#[test]
fn import_from_file_and_from_stdin_give_the_same_layer() {
    require_root!(); // wharf import keeps owners (0:0 here): root only
    let env = Env::new();
    let tar = fs::read(busybox_tar()).unwrap();
    let sde = [("SOURCE_DATE_EPOCH", "1700000000")];
    let mut file = env.wharf();
    file.env("SOURCE_DATE_EPOCH", "1700000000").args([
        "import",
        busybox_tar().to_str().unwrap(),
        "bb:file",
    ]);
    let out = file.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let id_file = stdout(&out).trim().to_string();
    let out = import_bytes_env(&env, &tar, &["bb:stdin"], &sde);
    assert!(out.status.success(), "{}", stderr(&out));
    let id_stdin = stdout(&out).trim().to_string();
    assert_eq!(
        id_file, id_stdin,
        "same tar, same SOURCE_DATE_EPOCH, same id"
    );
    assert_eq!(entries(&env.root.join("layers")), vec![sha256_hex(&tar)]);
    assert!(layer_of(&env, "bb:stdin").join("bin/busybox").is_file());
}

#[test]
fn compression_is_told_by_magic_not_by_name() {
    require_root!(); // wharf import keeps owners (0:0 here): root only
    let env = Env::new();
    let plain = fs::read(busybox_tar()).unwrap();
    let diff = sha256_hex(&plain);
    let d = env.dir.path();
    let cases = [
        ("gzip-named.tar", gzip(&plain), "gzip"),
        ("zstd-named.tar.gz", zstd(&plain), "zstd"),
        ("plain-named.tar.zst", plain.clone(), "tar"),
    ];
    for (i, (name, bytes, kind)) in cases.iter().enumerate() {
        let p = d.join(name);
        fs::write(&p, bytes).unwrap();
        let v = import_json(&env, &p, &format!("c:{i}"));
        assert_eq!(v["Compression"], *kind, "{name}: {v}");
        assert_eq!(v["DiffId"], format!("sha256:{diff}"), "{name}");
        assert_eq!(
            v["SourceDigest"],
            format!("sha256:{}", sha256_hex(bytes)),
            "{name}"
        );
        assert_eq!(v["LayerReused"], i > 0, "{name}");
    }
    // One layer for the three.
    assert_eq!(entries(&env.root.join("layers")), vec![diff]);
    // Compressed stdin too.
    let out = import_bytes(&env, &zstd(&plain), &["c:stdin"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(entries(&env.root.join("layers")).len(), 1);
}

#[test]
fn same_tar_twice_keeps_one_layer() {
    require_root!(); // wharf import keeps owners (0:0 here): root only
    let env = Env::new();
    let a = import_json(&env, &busybox_tar(), "a:1");
    let b = import_json(&env, &busybox_tar(), "b:1");
    assert_eq!(a["DiffId"], b["DiffId"]);
    assert_eq!(a["LayerReused"], false);
    assert_eq!(b["LayerReused"], true);
    assert_eq!(entries(&env.root.join("layers")).len(), 1);
    assert_eq!(layer_of(&env, "a:1"), layer_of(&env, "b:1"));
    assert!(entries(&env.root.join("tmp")).is_empty(), "staging left");
    // A second, different tar is a second layer.
    import_json(&env, &seed_tar(), "seed:1");
    assert_eq!(entries(&env.root.join("layers")).len(), 2);
}

#[test]
fn source_date_epoch_makes_the_id_reproducible() {
    require_root!(); // wharf import keeps owners (0:0 here): root only
    let env = Env::new();
    let run = |epoch: &str, tag: &str| {
        let out = env
            .wharf()
            .env("SOURCE_DATE_EPOCH", epoch)
            .args(["import", busybox_tar().to_str().unwrap(), tag])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).trim().to_string()
    };
    let a = run("1700000000", "r:a");
    let b = run("1700000000", "r:b");
    let c = run("1700000001", "r:c");
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(inspect(&env, "r:a")["Created"], "2023-11-14T22:13:20Z");
    // One image with two tags, and a second one.
    assert_eq!(env.ok(&["images", "-q"]).lines().count(), 2);
    // Without it, created is now: a later import is another image.
    let d = env.import(&busybox_tar(), "r:d");
    assert_ne!(d, a);
    // A bad value is a clear error.
    let out = env
        .wharf()
        .env("SOURCE_DATE_EPOCH", "yesterday")
        .args(["import", busybox_tar().to_str().unwrap(), "r:e"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("SOURCE_DATE_EPOCH"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn changes_and_message_show_in_inspect() {
    require_root!(); // wharf import keeps owners (0:0 here): root only
    let env = Env::new();
    let id = env
        .ok(&[
            "import",
            "--change",
            r#"CMD ["/bin/sh", "-c", "echo hi"]"#,
            "--change",
            "ENV K=V",
            "-c",
            "WORKDIR /srv",
            "-m",
            "first import",
            busybox_tar().to_str().unwrap(),
            "ch:1",
        ])
        .trim()
        .to_string();
    let v = inspect(&env, "ch:1");
    assert_eq!(v["Id"], id);
    assert_eq!(
        v["Config"]["Cmd"],
        serde_json::json!(["/bin/sh", "-c", "echo hi"])
    );
    assert!(
        v["Config"]["Env"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("K=V")),
        "{v}"
    );
    assert_eq!(v["Config"]["WorkingDir"], "/srv");
    assert_eq!(v["Comment"], "first import");
    assert_eq!(v["History"][0]["comment"], "first import");
    assert_eq!(v["RepoTags"], serde_json::json!(["ch:1"]));
    assert_eq!(v["RootFS"]["Layers"].as_array().unwrap().len(), 1);
    assert!(v["Size"].as_u64().unwrap() > 100_000, "{v}");
    // The config blob is the id's preimage.
    let hex = id.strip_prefix("sha256:").unwrap();
    let blob = fs::read(env.root.join("blobs/sha256").join(hex)).unwrap();
    assert_eq!(sha256_hex(&blob), hex);

    // A bad change is refused before anything is read or written.
    let err = env.fails(&[
        "import",
        "-c",
        "FROM scratch",
        busybox_tar().to_str().unwrap(),
        "ch:2",
    ]);
    assert!(err.contains("--change"), "{err}");
    let err = env.fails(&[
        "import",
        "-c",
        "WORKDIR rel",
        busybox_tar().to_str().unwrap(),
        "ch:2",
    ]);
    assert!(err.contains("absolute"), "{err}");
    assert_eq!(env.ok(&["images", "-q"]).lines().count(), 1);
}

#[test]
fn ownership_modes_times_links_devices_and_xattrs_are_kept() {
    require_root!();
    let env = Env::new();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    let mut add = |b: &mut tar::Builder<Vec<u8>>,
                   path: &str,
                   typ: tar::EntryType,
                   mode: u32,
                   uid: u64,
                   data: &[u8],
                   link: Option<&str>| {
        h = tar::Header::new_ustar();
        h.set_entry_type(typ);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(uid + 1);
        h.set_mtime(1_234_567_890);
        h.set_size(data.len() as u64);
        if typ == tar::EntryType::Char {
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
        }
        match link {
            Some(l) => b.append_link(&mut h, path, l).unwrap(),
            None => b.append_data(&mut h, path, data).unwrap(),
        }
    };
    use tar::EntryType as T;
    add(&mut b, "./", T::Directory, 0o751, 0, b"", None);
    add(&mut b, "d/", T::Directory, 0o750, 1000, b"", None);
    add(
        &mut b,
        "d/suid",
        T::Regular,
        0o4755,
        0,
        b"#!/bin/sh\n",
        None,
    );
    add(&mut b, "d/sgid", T::Regular, 0o2711, 1234, b"x", None);
    add(&mut b, "d/owned", T::Regular, 0o640, 4321, b"data", None);
    add(&mut b, "d/sticky/", T::Directory, 0o1777, 0, b"", None);
    add(&mut b, "d/link", T::Symlink, 0o777, 77, b"", Some("owned"));
    add(&mut b, "d/hard", T::Link, 0o640, 4321, b"", Some("d/owned"));
    add(&mut b, "d/null", T::Char, 0o666, 0, b"", None);
    add(&mut b, "d/fifo", T::Fifo, 0o620, 5, b"", None);
    // xattrs, as GNU tar --xattrs writes them: PAX SCHILY.xattr.* records.
    // security.capability: vfs_cap_data v2, effective, permitted = CAP_NET_RAW (13).
    let mut cap = Vec::new();
    for w in [0x0200_0001u32, 1 << 13, 0, 0, 0] {
        cap.extend_from_slice(&w.to_le_bytes());
    }
    b.append_pax_extensions([
        ("SCHILY.xattr.user.wharf", &b"kept"[..]),
        ("SCHILY.xattr.security.capability", &cap[..]),
    ])
    .unwrap();
    add(&mut b, "d/capped", T::Regular, 0o755, 0, b"bin", None);
    let tar = b.into_inner().unwrap();

    let layer = import_ok(&env, &tar, "meta:1");
    let m = |p: &str| fs::symlink_metadata(layer.join(p)).unwrap();

    let root = fs::metadata(&layer).unwrap();
    assert_eq!(
        (root.mode() & 0o7777, root.mtime()),
        (0o751, 1_234_567_890),
        "root entry"
    );
    let d = m("d");
    assert!(d.is_dir());
    assert_eq!((d.mode() & 0o7777, d.uid(), d.gid()), (0o750, 1000, 1001));
    assert_eq!(d.mtime(), 1_234_567_890, "directory mtime");
    assert_eq!(m("d/suid").mode() & 0o7777, 0o4755, "setuid kept");
    let sg = m("d/sgid");
    assert_eq!(
        (sg.mode() & 0o7777, sg.uid(), sg.gid()),
        (0o2711, 1234, 1235),
        "setgid after chown"
    );
    assert_eq!(m("d/sticky").mode() & 0o7777, 0o1777);
    let o = m("d/owned");
    assert_eq!(
        (o.mode() & 0o7777, o.uid(), o.gid(), o.mtime()),
        (0o640, 4321, 4322, 1_234_567_890)
    );
    assert_eq!(fs::read(layer.join("d/owned")).unwrap(), b"data");
    let l = m("d/link");
    assert!(l.file_type().is_symlink());
    assert_eq!(
        fs::read_link(layer.join("d/link")).unwrap(),
        Path::new("owned")
    );
    assert_eq!(
        (l.uid(), l.gid(), l.mtime()),
        (77, 78, 1_234_567_890),
        "symlink owner and time"
    );
    let hard = m("d/hard");
    assert_eq!(hard.ino(), o.ino(), "hardlink shares the inode");
    assert_eq!(o.nlink(), 2);
    let null = m("d/null");
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    assert_eq!(null.mode() & 0o7777, 0o666);
    let fifo = m("d/fifo");
    assert!(fifo.file_type().is_fifo());
    assert_eq!((fifo.mode() & 0o7777, fifo.uid()), (0o620, 5));
    let capped = layer.join("d/capped");
    assert_eq!(
        lgetxattr(&capped, "user.wharf").as_deref(),
        Some(&b"kept"[..])
    );
    assert_eq!(
        lgetxattr(&capped, "security.capability"),
        Some(cap),
        "file capability kept"
    );
    assert_eq!(m("d/capped").mode() & 0o7777, 0o755);
}

#[test]
fn fixture_rootfs_round_trips() {
    require_root!();
    let env = Env::new();
    env.import(&busybox_tar(), "bb:1");
    let layer = layer_of(&env, "bb:1");
    // Compare with what tar itself makes of the same archive.
    let x = env.dir.path().join("x");
    fs::create_dir(&x).unwrap();
    let st = std::process::Command::new("tar")
        .args([
            "-C",
            x.to_str().unwrap(),
            "-xpf",
            busybox_tar().to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let walk = |base: &Path| {
        let mut v = Vec::new();
        for e in walkdir(base) {
            let m = fs::symlink_metadata(&e).unwrap();
            let rel = e.strip_prefix(base).unwrap().to_path_buf();
            let link = fs::read_link(&e).ok();
            v.push((
                rel,
                m.mode(),
                m.uid(),
                m.gid(),
                if m.is_dir() { 0 } else { m.size() },
                m.mtime(),
                link,
            ));
        }
        v.sort();
        v
    };
    assert_eq!(walk(&layer), walk(&x));
}

fn walkdir(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            out.push(path.clone());
            if e.file_type().unwrap().is_dir() {
                out.extend(walkdir(&path));
            }
        }
    }
    out
}

#[test]
fn images_table_quiet_and_json() {
    require_root!(); // wharf import keeps owners (0:0 here): root only
    let env = Env::new();
    let id = env.import(&busybox_tar(), "container:1.0");
    env.ok(&["tag", "container:1.0", "other/name:v2"]);
    let untagged = env
        .ok(&["import", "-m", "untagged", busybox_tar().to_str().unwrap()])
        .trim()
        .to_string();

    let table = env.ok(&["images"]);
    let mut lines = table.lines();
    let head = lines.next().unwrap();
    let cols = ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"];
    let pos: Vec<usize> = cols
        .iter()
        .map(|c| head.find(c).unwrap_or_else(|| panic!("{head}")))
        .collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "column order: {head}");
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 3, "{table}");
    let row = rows.iter().find(|r| r.starts_with("container ")).unwrap();
    assert!(row.contains("1.0") && row.contains(&id[7..19]), "{row}");
    assert!(row.contains("ago") || row.contains("now"), "CREATED: {row}");
    assert!(row.contains("MB") || row.contains("kB"), "SIZE: {row}");
    assert!(
        rows.iter()
            .any(|r| r.starts_with("other/name ") && r.contains("v2")),
        "{table}"
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("<none>") && r.contains(&untagged[7..19])),
        "{table}"
    );

    let q = env.ok(&["images", "-q"]);
    let mut ids: Vec<&str> = q.lines().collect();
    ids.sort();
    let mut want = vec![&id[7..19], &untagged[7..19]];
    want.sort();
    assert_eq!(ids, want);
    assert!(
        ids.iter()
            .all(|i| i.len() == 12 && i.bytes().all(|b| b.is_ascii_hexdigit()))
    );
    let full = env.ok(&["images", "-q", "--no-trunc"]);
    assert!(full.lines().any(|l| l == id), "{full}");

    let v = json(&env.ok(&["images", "--format", "json"]));
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 3);
    let c = arr.iter().find(|r| r["Repository"] == "container").unwrap();
    assert_eq!(c["Tag"], "1.0");
    assert_eq!(c["ID"], id);
    assert!(c["Size"].as_u64().unwrap() > 0);
    assert!(c["CreatedAt"].as_str().unwrap().ends_with('Z'), "{c}");

    // Filter by repository.
    let f = env.ok(&["images", "other/name"]);
    assert_eq!(f.lines().count(), 2, "{f}");
    // --filter: the one grammar of ps, volume ls and the prune verbs.
    let f = env.ok(&["images", "--filter", "reference=other/name"]);
    assert_eq!(f.lines().count(), 2, "{f}");
    let f = env.ok(&[
        "images",
        "-f",
        "reference=other/name:v2",
        "-f",
        "reference=nope",
    ]);
    assert_eq!(f.lines().count(), 2, "{f}");
    assert_eq!(
        env.ok(&["images", "-q", "-f", "dangling=true"]).trim(),
        &untagged[7..19]
    );
    let tagged = env.ok(&["images", "-q", "-f", "DANGLING = false"]);
    assert_eq!(tagged.trim(), &id[7..19]);
    assert!(
        env.ok(&["images", "-q", "-f", "until=1970-01-02T00:00:00Z"])
            .trim()
            .is_empty()
    );
    let err = env.fails(&["images", "-f", "label=x"]);
    assert!(
        err.contains("invalid filter \"label=x\": unknown key \"label\""),
        "{err}"
    );
    assert!(
        err.contains("dangling, reference, until"),
        "the hint lists the keys: {err}"
    );
    let err = env.fails(&["images", "-f", "dangling!=true"]);
    assert!(err.contains("dangling does not take !="), "{err}");
}

#[test]
fn tag_and_rmi_untag_then_delete() {
    require_root!(); // wharf import keeps owners (0:0 here): root only
    let env = Env::new();
    let id = env.import(&busybox_tar(), "app:1");
    let hex = id.strip_prefix("sha256:").unwrap().to_string();
    let layer = layer_of(&env, "app:1");
    env.ok(&["tag", "app:1", "app:2"]);
    env.ok(&["tag", &hex[..8], "app"]); // by id prefix, to app:latest
    assert_eq!(inspect(&env, "app:latest")["Id"], id);
    assert_eq!(
        inspect(&env, "app")["RepoTags"],
        serde_json::json!(["app:1", "app:2", "app:latest"])
    );

    // Untag: the image stays.
    let out = env.ok(&["rmi", "app:2"]);
    assert_eq!(out.trim(), "Untagged: app:2");
    assert!(layer.is_dir());
    env.fails(&["image", "inspect", "app:2"]);

    // By id, with several tags: refused without -f.
    let err = env.fails(&["rmi", &hex[..12]]);
    assert!(err.contains("several tags") && err.contains("-f"), "{err}");
    assert!(layer.is_dir());
    let out = env.ok(&["rmi", "-f", &hex[..12]]);
    assert!(
        out.contains("Untagged: app:1") && out.contains("Untagged: app:latest"),
        "{out}"
    );
    assert!(out.contains(&format!("Deleted: {id}")), "{out}");
    assert!(!layer.exists(), "layer dir removed with its last image");
    assert!(
        !env.root.join("blobs/sha256").join(&hex).exists(),
        "config blob removed"
    );
    assert_store_empty(&env);
}

#[test]
fn shared_layer_goes_with_its_last_image() {
    require_root!(); // wharf import keeps owners (0:0 here): root only
    let env = Env::new();
    let a = env.ok(&[
        "import",
        "-m",
        "one",
        busybox_tar().to_str().unwrap(),
        "x:1",
    ]);
    let b = env.ok(&[
        "import",
        "-m",
        "two",
        busybox_tar().to_str().unwrap(),
        "x:2",
    ]);
    assert_ne!(a, b, "different comments, different images");
    let layer = layer_of(&env, "x:1");
    assert_eq!(layer, layer_of(&env, "x:2"));
    let out = env.ok(&["rmi", "x:1"]);
    assert!(
        out.contains("Untagged: x:1") && out.contains("Deleted: sha256:"),
        "{out}"
    );
    assert!(layer.is_dir(), "layer still used by x:2");
    let out = env.ok(&["image", "rm", "x:2"]);
    assert!(
        out.contains(&format!(
            "Deleted: sha256:{}",
            layer.file_name().unwrap().to_str().unwrap()
        )),
        "layer reported: {out}"
    );
    assert!(!layer.exists());
    assert_store_empty(&env);
    // rmi of something missing: exit 1, named.
    let out = env.run(&["rmi", "x:1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no such image: x:1"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_references_exit_1_with_a_clear_message() {
    require_root!(); // wharf import keeps owners (0:0 here): root only
    let env = Env::new();
    env.import(&busybox_tar(), "ok:1");
    let tar = busybox_tar();
    let t = tar.to_str().unwrap();
    let digest_ref = format!("app@sha256:{}", "a".repeat(64));
    let id_like = "c".repeat(64);
    let sha_like = format!("sha256:{}", "d".repeat(64));
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["import", t, "Upper:1"], "lowercase"),
        (vec!["import", t, "app:"], "tag"),
        (vec!["import", t, "app:bad tag"], "invalid reference format"),
        (vec!["import", t, "x-:1"], "invalid reference format"),
        (vec!["import", t, ""], "empty"),
        (vec!["import", t, &digest_ref], "digest"),
        (vec!["import", t, &id_like], "look like an image id"),
        (vec!["tag", "ok:1", &sha_like], "look like an image id"),
        (vec!["tag", "ok:1", "UP:1"], "lowercase"),
        (vec!["tag", "ok:1", "a//b"], "invalid reference format"),
        (vec!["image", "inspect", "sha256:abc"], "64"),
        (vec!["image", "inspect", "no:such"], "no such image"),
        (vec!["rmi", "Bad::"], "invalid reference format"),
    ];
    for (args, want) in cases {
        let out = env.run(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: want {want:?} in {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // None of that added an image or a tag.
    assert_eq!(env.ok(&["images", "-q"]).lines().count(), 1);
    assert_eq!(env.ok(&["images"]).lines().count(), 2);
}

#[test]
fn id_prefixes_resolve_and_ambiguity_is_an_error() {
    require_root!(); // wharf import keeps owners (0:0 here): root only
    use sha2::Digest;
    let env = Env::new();
    let tar = fs::read(busybox_tar()).unwrap();
    let diff = sha256_hex(&tar);
    // Find two SOURCE_DATE_EPOCH values whose image ids share 4 leading hex digits, by
    // computing the config wharf will write (the test also checks that it does).
    let id_for = |epoch: u64| {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch);
        let created = humantime::format_rfc3339_seconds(t).to_string();
        let cfg = wharf::image::config::ImageConfig::for_import(
            &diff,
            &created,
            Default::default(),
            None,
        );
        hex::encode(sha2::Sha256::digest(cfg.to_canonical_json()))
    };
    let mut seen = std::collections::HashMap::new();
    let (e1, e2) = (1_600_000_000u64..)
        .find_map(|e| {
            let id = id_for(e);
            seen.insert(id[..4].to_string(), e).map(|prev| (prev, e))
        })
        .unwrap();
    let run = |epoch: u64, tag: &str| {
        let out = env
            .wharf()
            .env("SOURCE_DATE_EPOCH", epoch.to_string())
            .args(["import", busybox_tar().to_str().unwrap(), tag])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).trim().to_string()
    };
    let a = run(e1, "p:1");
    let b = run(e2, "p:2");
    assert_eq!(
        a,
        format!("sha256:{}", id_for(e1)),
        "id is sha256 of the canonical config"
    );
    assert_eq!(b, format!("sha256:{}", id_for(e2)));
    let (ha, hb) = (&a[7..], &b[7..]);
    assert_eq!(ha[..4], hb[..4]);

    let common_len = ha
        .bytes()
        .zip(hb.bytes())
        .take_while(|(x, y)| x == y)
        .count();
    let err = env.fails(&["image", "inspect", &ha[..4]]);
    assert!(err.contains("more than one image"), "{err}");
    // One more digit than they share is unique.
    assert_eq!(inspect(&env, &ha[..common_len + 1])["Id"], a);
    assert_eq!(
        inspect(&env, &format!("sha256:{}", &hb[..common_len + 1]))["Id"],
        b
    );
    assert_eq!(inspect(&env, ha)["Id"], a);
    assert_eq!(inspect(&env, &format!("p@sha256:{ha}"))["Id"], a);
    // Three digits are not an id prefix.
    let out = env.run(&["image", "inspect", &ha[..3]]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no such image"), "{}", stderr(&out));
    // A prefix of nothing.
    let none = if ha.starts_with("ffff") {
        "0000"
    } else {
        "ffff"
    };
    assert!(
        env.fails(&["image", "inspect", none])
            .contains("no such image")
    );
}

#[test]
fn an_ordinary_user_is_told_to_run_as_root() {
    require_root!(); // to become another user
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let env = Env::new();
    let root = env.dir.path().join("user-root");
    fs::create_dir(&root).unwrap();
    fs::set_permissions(&root, fs::Permissions::from_mode(0o777)).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args([
            "--root",
            root.join("r").to_str().unwrap(),
            "import",
            "-",
            "u:1",
        ])
        .env_remove("WHARF_ROOT")
        .uid(65534)
        .gid(65534)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let tar = fs::read(busybox_tar()).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let w = std::thread::spawn(move || {
        let _ = stdin.write_all(&tar);
    });
    let out = child.wait_with_output().unwrap();
    w.join().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("owner") && err.contains("run it as root"),
        "{err}"
    );
    assert!(entries(&root.join("r/tmp")).is_empty(), "staging left");
    assert!(entries(&root.join("r/layers")).is_empty());
}

#[test]
fn bad_sources_are_named() {
    let env = Env::new();
    let dir = env.dir.path().join("rootfs");
    fs::create_dir(&dir).unwrap();
    let err = env.fails(&["import", dir.to_str().unwrap(), "d:1"]);
    assert!(
        err.contains("is a directory") && err.contains("tar -C"),
        "{err}"
    );
    let missing = env.dir.path().join("missing.tar");
    let out = env.run(&["import", missing.to_str().unwrap(), "d:1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("missing.tar"), "{}", stderr(&out));
    assert!(env.ok(&["images", "-q"]).trim().is_empty());
}
