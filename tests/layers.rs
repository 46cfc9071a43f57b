//! Multi-layer images (issue 12, point 2): layers made by umoci, stacked as overlay lower
//! dirs, whiteouts and opaque dirs in overlay's form, hardlinks to lower layers, 120 layers;
//! `wharf load` of OCI layouts, docker- and oci-archives (point 6); layer GC; hostile layers.

mod common;
mod import_support;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use common::{Env, busybox_tar, image_fixtures, s, text};
use import_support::*;

fn layout() -> PathBuf {
    image_fixtures().join("layout")
}

/// `wharf load -i PATH`, asserting success; returns stdout.
fn load(env: &Env, path: &Path) -> String {
    env.ok(&["load", "-q", "-i", s(path)])
}

/// The image id `wharf load -q` printed for the one image named `name` in the layout (the
/// layout's images are untagged: their ref names are bare tags).
fn loaded_ids(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix("Loaded image ID: "))
        .map(str::to_string)
        .collect()
}

/// The layout's image of ref name `name`, by its config digest (= the image id).
fn layout_image_id(name: &str) -> String {
    let idx: serde_json::Value =
        serde_json::from_slice(&fs::read(layout().join("index.json")).unwrap()).unwrap();
    let m = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == name)
        .unwrap();
    let hex = m["digest"].as_str().unwrap().trim_start_matches("sha256:");
    let man: serde_json::Value =
        serde_json::from_slice(&fs::read(layout().join("blobs/sha256").join(hex)).unwrap())
            .unwrap();
    man["config"]["digest"].as_str().unwrap().to_string()
}

fn run(env: &Env, image: &str, script: &str) -> String {
    env.ok(&["run", "--rm", image, "sh", "-c", script])
}

#[test]
fn umoci_layers_stack_with_whiteouts_opaque_dirs_and_lower_hardlinks() {
    require_root!();
    let env = Env::new();
    let ids = loaded_ids(&load(&env, &layout()));
    let multi = layout_image_id("multi");
    assert!(ids.contains(&multi), "{ids:?} lacks {multi}");
    let out = run(
        &env,
        &multi,
        "ls /data; echo -; ls /opq; echo -; ls /opq2; echo -; ls /replaced; echo -; \
         cat /base/link /base/file; echo $FOO; pwd",
    );
    assert_eq!(
        out, "keep\n-\nnew\n-\nnew\n-\nnew\n-\nlower\nlower\nbar\n/data\n",
        "whiteout (data/gone), opaque by umoci (opq), opaque marker after its entries (opq2), \
         whiteout then a new dir (replaced), hardlink to a lower file, config Env/WorkingDir"
    );
    // The image's Cmd runs with nothing on the command line.
    assert_eq!(env.ok(&["run", "--rm", &multi]), "hi\n");

    // On disk: overlay's own forms, one directory per layer.
    let info = common::json(&env.ok(&["image", "inspect", &multi]));
    let lowers: Vec<PathBuf> = info[0]["GraphDriver"]["Data"]["LowerDirs"]
        .as_str()
        .unwrap()
        .split(':')
        .map(PathBuf::from)
        .collect();
    assert_eq!(lowers.len(), 4, "{lowers:?}");
    let whiteout = lowers
        .iter()
        .map(|l| l.join("data/gone"))
        .find(|p| p.symlink_metadata().is_ok())
        .expect("a layer holds the whiteout of data/gone");
    let m = whiteout.symlink_metadata().unwrap();
    assert!(m.file_type().is_char_device(), "{m:?}");
    assert_eq!((m.rdev(), m.uid(), m.gid()), (0, 0, 0));
    let top = &lowers[0];
    for d in ["opq", "opq2", "replaced"] {
        assert_eq!(
            lgetxattr(&top.join(d), "trusted.overlay.opaque").as_deref(),
            Some(&b"y"[..]),
            "{d} is opaque in the top layer"
        );
        assert!(!top.join(d).join(".wh..wh..opq").exists());
    }
    assert!(!top.join(".wh.replaced").exists());
}

#[test]
fn an_image_of_121_layers_runs() {
    require_root!();
    let env = Env::new();
    load(&env, &layout());
    let deep = layout_image_id("deep");
    let info = common::json(&env.ok(&["image", "inspect", &deep]));
    assert_eq!(info[0]["RootFS"]["Layers"].as_array().unwrap().len(), 121);
    assert_eq!(
        run(&env, &deep, "ls /deep | wc -l; cat /deep/1 /deep/120"),
        "120\n1\n120\n"
    );
    // The write layer of a kept container stacks on it too.
    env.ok(&[
        "run",
        "--name",
        "deep",
        &deep,
        "sh",
        "-c",
        "echo x > /deep/new",
    ]);
    env.ok(&["rm", "deep"]);
}

#[test]
fn docker_and_oci_archives_load_plain_gzip_or_zstd() {
    require_root!();
    let env = Env::new();
    let fx = image_fixtures();
    let multi = layout_image_id("multi");
    let docker = fs::read(fx.join("multi-docker.tar")).unwrap();
    let oci = fs::read(fx.join("multi-oci.tar")).unwrap();
    let dir = env.dir.path();
    fs::write(dir.join("d.tar.gz"), gzip(&docker)).unwrap();
    fs::write(dir.join("o.tar.zst"), zstd(&oci)).unwrap();
    for p in [
        fx.join("multi-docker.tar"),
        fx.join("multi-oci.tar"),
        dir.join("d.tar.gz"),
        dir.join("o.tar.zst"),
    ] {
        let out = env.ok(&["load", "-i", s(&p)]);
        assert_eq!(out, "Loaded image: wharf.test/multi:1\n", "{}", p.display());
        let id = env.ok(&["images", "-q", "--no-trunc", "wharf.test/multi:1"]);
        assert_eq!(id.trim(), multi, "{} gives the same image", p.display());
    }
    // From standard input too.
    let out = env
        .wharf()
        .args(["load"])
        .stdin(fs::File::open(fx.join("multi-docker.tar")).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(env.ok(&["run", "--rm", "wharf.test/multi:1"]), "hi\n");
    assert!(entries(&env.root.join("tmp")).is_empty());
    assert_eq!(entries(&env.root.join("layers")).len(), 4);
}

#[test]
fn import_refuses_an_image_archive_pointing_at_load() {
    require_root!();
    let env = Env::new();
    let err = env.fails(&[
        "import",
        s(&image_fixtures().join("multi-docker.tar")),
        "x:1",
    ]);
    assert!(
        err.contains("image archive") && err.contains("wharf load"),
        "{err}"
    );
    assert_store_empty(&env);
}

#[test]
fn gc_removes_a_layer_only_when_no_image_lists_it() {
    require_root!();
    let env = Env::new();
    load(&env, &layout());
    let (multi, deep) = (layout_image_id("multi"), layout_image_id("deep"));
    // busybox is the base of both: 4 + 121 layers, one shared.
    assert_eq!(entries(&env.root.join("layers")).len(), 124);
    env.ok(&["rmi", &deep]);
    assert_eq!(entries(&env.root.join("layers")).len(), 4);
    assert_eq!(env.ok(&["run", "--rm", &multi]), "hi\n");
    env.ok(&["rmi", &multi]);
    assert_store_empty(&env);
}

/// A crafted top layer over busybox: loaded inside its layer, or refused leaving nothing.
/// Layouts are written outside the test's temp dir, which the canary watches.
fn hostile_top(env: &Env, canary: &Canary, top: Vec<u8>) -> Result<String, String> {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("layout");
    oci_layout(&dir, &[fs::read(busybox_tar()).unwrap(), top]);
    let out = env.run(&["load", "-q", "-i", s(&dir)]);
    canary.assert_unchanged(env);
    assert!(entries(&env.root.join("tmp")).is_empty());
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        assert_store_empty(env);
        Err(err)
    }
}

#[test]
fn hostile_layers_are_refused_or_stay_inside() {
    require_root!();
    let env = Env::new();
    let canary = Canary::new(&env);
    let up = "../../../..";
    let err = hostile_top(
        &env,
        &canary,
        Raw::new().file(&format!("{up}/evil"), b"x").finish(),
    )
    .unwrap_err();
    assert!(
        err.contains("climbs out") && err.contains("layer 2"),
        "{err}"
    );
    let err = hostile_top(
        &env,
        &canary,
        Raw::new()
            .hardlink("link", "../../../../canary/keep")
            .finish(),
    )
    .unwrap_err();
    assert!(err.contains("link"), "{err}");
    let err = hostile_top(&env, &canary, Raw::new().file(".wh..", b"").finish()).unwrap_err();
    assert!(err.contains("whiteout"), "{err}");
    // A hardlink to a file no layer has.
    let err = hostile_top(
        &env,
        &canary,
        Raw::new().hardlink("l", "nowhere/x").finish(),
    )
    .unwrap_err();
    assert!(
        err.contains("neither this layer nor the ones below"),
        "{err}"
    );
    // A symlink out of the image, then a write through it: lands inside the layer.
    let ok = hostile_top(
        &env,
        &canary,
        Raw::new()
            .dir("etc")
            .symlink("esc", "/etc")
            .file("esc/written", b"overwritten")
            .finish(),
    )
    .unwrap();
    let id = loaded_ids(&ok).pop().unwrap();
    assert_eq!(
        run(&env, &id, "cat /etc/written"),
        "overwritten",
        "written inside the layer"
    );
    env.ok(&["rmi", &id]);
    // overlay's own xattrs in a layer are dropped: only whiteouts make them.
    let ok = hostile_top(
        &env,
        &canary,
        Raw::new()
            .pax(&[("SCHILY.xattr.trusted.overlay.opaque", b"y")])
            .dir("etc")
            .finish(),
    )
    .unwrap();
    let id = loaded_ids(&ok).pop().unwrap();
    assert_ne!(
        run(&env, &id, "ls /etc"),
        "",
        "busybox's /etc shows through"
    );
}

#[test]
fn a_layer_that_does_not_match_its_digest_is_refused_and_leaves_nothing() {
    require_root!();
    let env = Env::new();
    let canary = Canary::new(&env);
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("bad");
    let blobs = oci_layout(
        &dir,
        &[
            fs::read(busybox_tar()).unwrap(),
            Raw::new().file("f", b"data").finish(),
        ],
    );
    // Replace the top layer's bytes by another valid gzip tar: the blob digest fails.
    fs::write(&blobs[1], gzip(&Raw::new().file("f", b"evil").finish())).unwrap();
    let err = env.fails(&["load", "-i", s(&dir)]);
    assert!(
        err.contains("layer 2") && err.contains("does not match its digest"),
        "{err}"
    );
    canary.assert_unchanged(&env);
    assert_store_empty(&env);
}

#[test]
fn an_image_config_gives_volumes_healthcheck_user_and_entrypoint() {
    require_root!();
    let env = Env::new();
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("cfg");
    oci_layout_with(
        &dir,
        &[fs::read(busybox_tar()).unwrap()],
        serde_json::json!({
            "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["id -u; echo $A; pwd"],
            "Env": ["A=from-image"], "User": "65534", "WorkingDir": "/tmp",
            "Volumes": {"/vol": {}, "/data/": {}}, "Labels": null, "OnBuild": null,
            "ExposedPorts": {"80/tcp": {}},
            "Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 2000000000u64, "Retries": 2},
        }),
    );
    let id = loaded_ids(&load(&env, &dir)).pop().unwrap();
    assert_eq!(env.ok(&["run", "--rm", &id]), "65534\nfrom-image\n/tmp\n");
    env.ok(&["create", "--name", "cfg-c", &id]);
    let c = common::inspect(&env, "cfg-c");
    let dests: Vec<&str> = c["Mounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["Destination"].as_str())
        .collect();
    assert!(dests.contains(&"/vol") && dests.contains(&"/data"), "{c}");
    let h = &c["Config"]["healthcheck"];
    assert_eq!(h["Test"], serde_json::json!(["CMD-SHELL", "true"]), "{c}");
    assert_eq!(h["Interval"], 2_000_000_000u64);
    assert_eq!(h["Retries"], 2);
    // A volume given on the command line replaces the image's at that path.
    env.ok(&["create", "--name", "cfg-d", "-v", "named:/vol", &id]);
    let d = common::inspect(&env, "cfg-d");
    let vol: Vec<_> = d["Mounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["Destination"] == "/vol")
        .collect();
    assert_eq!(vol.len(), 1, "{d}");
    env.ok(&["rm", "-v", "cfg-c", "cfg-d"]);
}

#[test]
fn image_labels_are_the_containers_unless_it_sets_its_own() {
    require_root!();
    let env = Env::new();
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("labelled");
    oci_layout_with(
        &dir,
        &[fs::read(busybox_tar()).unwrap()],
        serde_json::json!({
            "Cmd": ["/bin/true"],
            "Labels": {"org.example.team": "web", "tier": "image", "wharf.project": "spoof"},
        }),
    );
    let id = loaded_ids(&load(&env, &dir)).pop().unwrap();
    env.ok(&["create", "--name", "lab-a", "--label", "tier=mine", &id]);
    env.ok(&["create", "--name", "lab-b", &id]);
    let a = common::inspect(&env, "lab-a");
    assert_eq!(a["Labels"]["org.example.team"], "web", "{a}");
    assert_eq!(a["Labels"]["tier"], "mine", "the container's own wins: {a}");
    assert!(
        a["Labels"].get("wharf.project").is_none(),
        "wharf's own: {a}"
    );
    let b = common::inspect(&env, "lab-b");
    assert_eq!(b["Labels"]["tier"], "image", "{b}");
    let ps = |filter: &str| {
        let rows = common::json(&env.ok(&["--format", "json", "ps", "-a", "--filter", filter]));
        let mut names: Vec<String> = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["Names"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    };
    assert_eq!(ps("label=org.example.team=web"), ["lab-a", "lab-b"]);
    assert_eq!(ps("label=tier=image"), ["lab-b"]);
    assert_eq!(ps("label=tier=mine"), ["lab-a"]);
    env.ok(&["rm", "lab-a", "lab-b"]);
}

fn skopeo_inspect(target: &str) -> serde_json::Value {
    let out = std::process::Command::new("skopeo")
        .args(["inspect", target])
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo inspect {target}: {}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("skopeo prints JSON")
}

#[test]
fn save_writes_archives_skopeo_reads_and_load_brings_back() {
    require_root!();
    let env = Env::new();
    env.ok(&["load", "-i", s(&image_fixtures().join("multi-docker.tar"))]);
    let dir = env.dir.path();
    let d = dir.join("out/app.tar");
    fs::create_dir_all(d.parent().unwrap()).unwrap();
    env.ok(&["save", "-o", s(&d), "wharf.test/multi:1"]);
    let v = skopeo_inspect(&format!("docker-archive:{}", d.display()));
    assert_eq!(v["Layers"].as_array().unwrap().len(), 4, "{v}");
    assert_eq!(v["Labels"]["fixture"], "multi");
    let o = dir.join("out/app-oci.tar");
    env.ok(&[
        "--format",
        "oci-archive",
        "save",
        "-o",
        s(&o),
        "wharf.test/multi:1",
    ]);
    let v = skopeo_inspect(&format!("oci-archive:{}:1", o.display()));
    assert_eq!(v["Layers"].as_array().unwrap().len(), 4, "{v}");
    // Reproducible: the same layers give the same bytes.
    let d2 = dir.join("out/again.tar");
    env.ok(&["save", "-o", s(&d2), "wharf.test/multi:1"]);
    assert_eq!(fs::read(&d).unwrap(), fs::read(&d2).unwrap());
    assert_eq!(
        entries(&dir.join("out")),
        vec!["again.tar", "app-oci.tar", "app.tar"],
        "no temporary files left"
    );

    // Loaded into another store, both archives give one image that runs as the original.
    let other = Env::new();
    other.ok(&["load", "-i", s(&d)]);
    other.ok(&["load", "-i", s(&o)]);
    assert_eq!(other.ok(&["images", "-q"]).lines().count(), 1);
    assert_eq!(
        other.ok(&[
            "run",
            "--rm",
            "wharf.test/multi:1",
            "sh",
            "-c",
            "ls /data /opq /opq2 /replaced; cat /base/link; echo $FOO",
        ]),
        "/data:\nkeep\n\n/opq:\nnew\n\n/opq2:\nnew\n\n/replaced:\nnew\nlower\nbar\n"
    );
    assert_eq!(other.ok(&["run", "--rm", "wharf.test/multi:1"]), "hi\n");

    // Failures leave no file behind.
    let err = env.fails(&["save", "-o", s(&dir.join("out/x.tar")), "nosuch:1"]);
    assert!(err.contains("no such image"), "{err}");
    assert!(!dir.join("out/x.tar").exists());
    assert_eq!(entries(&dir.join("out")).len(), 3);
    assert!(entries(&env.root.join("tmp")).is_empty());
}

#[test]
fn commit_turns_the_write_layer_into_a_new_top_layer() {
    require_root!();
    let env = Env::new();
    env.ok(&["load", "-i", s(&image_fixtures().join("multi-docker.tar"))]);
    env.ok(&[
        "run",
        "--name",
        "web",
        "wharf.test/multi:1",
        "sh",
        "-c",
        "rm /data/keep; rm -r /opq; mkdir /opq; echo x > /opq/x; echo added > /added; \
         ln /base/file /base/hl",
    ]);
    let out = env.ok(&[
        "commit",
        "-m",
        "my change",
        "--change",
        r#"CMD ["cat", "/added"]"#,
        "web",
        "app:1.1",
    ]);
    let id = out
        .trim()
        .strip_prefix("sha256:")
        .expect("an image id")
        .to_string();
    assert_eq!(id.len(), 64);
    assert_eq!(
        env.ok(&["run", "--rm", "app:1.1"]),
        "added\n",
        "the --change applies"
    );
    assert_eq!(
        env.ok(&[
            "run",
            "--rm",
            "app:1.1",
            "sh",
            "-c",
            "ls /data /opq; cat /base/hl; echo $FOO"
        ]),
        "/data:\n\n/opq:\nx\nlower\nbar\n",
        "a deletion is a whiteout, a replaced dir opaque; the image's Env is kept"
    );
    let info = common::json(&env.ok(&["image", "inspect", "app:1.1"]));
    assert_eq!(info[0]["RootFS"]["Layers"].as_array().unwrap().len(), 5);
    assert_eq!(
        info[0]["History"].as_array().unwrap().last().unwrap()["comment"],
        "my change"
    );
    // The base layers are shared, not copied.
    assert_eq!(entries(&env.root.join("layers")).len(), 5);
    env.ok(&["rm", "web"]);
    let err = env.fails(&["commit", "nosuch"]);
    assert!(err.contains("nosuch"), "{err}");
}

#[test]
fn a_docker_25_archive_loads() {
    require_root!();
    // Docker 25+ writes an OCI layout plus a manifest.json naming blobs/sha256/ paths.
    let env = Env::new();
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("d25");
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(layout())
        .arg(&dir)
        .status()
        .unwrap();
    assert!(st.success());
    let multi = layout_image_id("multi");
    let idx: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let m = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "multi")
        .unwrap();
    let hex = m["digest"].as_str().unwrap().trim_start_matches("sha256:");
    let man: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("blobs/sha256").join(hex)).unwrap()).unwrap();
    let blob = |d: &serde_json::Value| {
        format!(
            "blobs/sha256/{}",
            d.as_str().unwrap().trim_start_matches("sha256:")
        )
    };
    let layers: Vec<String> = man["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| blob(&l["digest"]))
        .collect();
    fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec(&serde_json::json!([{
            "Config": blob(&man["config"]["digest"]), "RepoTags": ["d25/multi:1"], "Layers": layers,
        }]))
        .unwrap(),
    )
    .unwrap();
    let tar = scratch.path().join("d25.tar");
    let st = std::process::Command::new("tar")
        .arg("-C")
        .arg(&dir)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        env.ok(&["load", "-i", s(&tar)]),
        "Loaded image: d25/multi:1\n"
    );
    assert_eq!(
        env.ok(&["images", "-q", "--no-trunc", "d25/multi:1"])
            .trim(),
        multi
    );
    assert_eq!(env.ok(&["run", "--rm", "d25/multi:1"]), "hi\n");
}

#[test]
fn an_archive_naming_docker_hub_in_full_loads_as_the_short_name() {
    require_root!();
    let env = Env::new();
    // skopeo writes an archive's RepoTags as docker.io/library/NAME:TAG.
    let a = env.dir.path().join("hub.tar");
    let st = std::process::Command::new("skopeo")
        .args(["copy", "-q"])
        .arg(format!(
            "docker-archive:{}",
            image_fixtures().join("multi-docker.tar").display()
        ))
        .arg(format!(
            "docker-archive:{}:docker.io/library/skimg:3.20",
            a.display()
        ))
        .status()
        .expect("run skopeo");
    assert!(st.success());
    let out = env.ok(&["load", "-i", s(&a)]);
    assert_eq!(out.trim(), "Loaded image: skimg:3.20", "{out}");
    for name in ["skimg:3.20", "docker.io/library/skimg:3.20"] {
        assert_eq!(env.ok(&["run", "--rm", name]), "hi\n", "by {name}");
    }
}
