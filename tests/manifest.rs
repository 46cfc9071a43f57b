//! Loading manifests: the examples load, and every kind of problem is reported at once,
//! each with file:line:col, a caret snippet and a hint.

use std::path::{Path, PathBuf};

use wharf::manifest::{self, Manifest, ManifestErrors};
use wharf::reconcile::{Desired, Observed, plan};

fn no_images(_: &str) -> bool {
    false
}

/// A temp dir with the manifests/ examples and stand-in tarballs where they expect them.
fn examples() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
    copy_dir(&src, &dir.path().join("manifests"));
    std::fs::create_dir_all(dir.path().join("images")).unwrap();
    for t in ["busybox.tar", "app-1.0.tar", "app-1.1.tar", "web.tar"] {
        std::fs::write(dir.path().join("images").join(t), t).unwrap();
    }
    let m = dir.path().join("manifests");
    (dir, m)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

fn load(p: &Path) -> Result<Manifest, ManifestErrors> {
    manifest::load(p, &no_images)
}

/// Writes files into a fresh directory and loads `target` (a file name or "." for the dir).
fn load_files(
    files: &[(&str, &str)],
    target: &str,
) -> (tempfile::TempDir, Result<Manifest, ManifestErrors>) {
    let dir = tempfile::tempdir().unwrap();
    let proj = dir.path().join("proj");
    std::fs::create_dir_all(&proj).unwrap();
    for (name, text) in files {
        let p = proj.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let r = load(&proj.join(target));
    (dir, r)
}

fn errors(r: Result<Manifest, ManifestErrors>) -> (String, Vec<String>) {
    let e = r.expect_err("the manifest should be rejected");
    let positions = e
        .problems
        .iter()
        .map(|p| e.position(p).unwrap_or_default())
        .collect();
    (e.render(false), positions)
}

#[test]
fn examples_load() {
    let (_tmp, m) = examples();
    let web = load(&m.join("web.toml")).unwrap();
    assert_eq!(web.project, "web");
    assert_eq!(
        web.containers["web"]
            .limits
            .as_ref()
            .unwrap()
            .memory
            .unwrap()
            .0,
        64 << 20
    );
    assert!(Path::new(&web.images["web"].source.as_ref().unwrap().0).is_absolute());

    let shop = load(&m.join("shop")).unwrap();
    assert_eq!(shop.project, "shop");
    assert_eq!(shop.containers.keys().collect::<Vec<_>>(), ["db", "front"]);
    assert!(shop.volumes.contains_key("data"));
    let front = &shop.containers["front"];
    assert_eq!(front.env["GREETING"], "hello", "env_file merged");
    assert_eq!(front.env["MODE"], "prod");
    let bind = front.volumes[1].to_string();
    assert!(
        bind.starts_with('/') && bind.ends_with("/shop/conf:/etc/shop:ro"),
        "{bind}"
    );
    assert_eq!(shop.retention.logs.as_ref().unwrap().max_files, Some(3));

    let v1 = load(&m.join("bump/v1/app.toml")).unwrap();
    let v2 = load(&m.join("bump/v2/app.toml")).unwrap();
    assert_eq!((v1.project.as_str(), v2.project.as_str()), ("bump", "bump"));
}

#[test]
fn a_version_bump_plans_import_and_recreate() {
    let (_tmp, m) = examples();
    let digest = |p: &Path| -> Result<String, std::io::Error> {
        Ok(format!("{:0>64}", p.file_name().unwrap().len()))
    };
    let v1 = Desired::from_manifest(&load(&m.join("bump/v1/app.toml")).unwrap(), digest).unwrap();
    let v2 = Desired::from_manifest(&load(&m.join("bump/v2/app.toml")).unwrap(), |p: &Path| {
        Ok::<_, std::io::Error>(format!("{:f>64}", p.file_name().unwrap().len()))
    })
    .unwrap();
    // The store as v1 left it.
    let c = &v1.containers[0];
    let observed = Observed {
        tags: [("app:1.0".to_string(), "1".repeat(64))].into(),
        sources: [(v1.images[0].source_digest.clone(), "1".repeat(64))].into(),
        containers: vec![wharf::reconcile::ObservedContainer {
            id: "c".repeat(64),
            name: c.name.clone(),
            project: Some("bump".into()),
            image_ref: c.spec.image.clone(),
            image_id: "1".repeat(64),
            spec_hash: Some(c.spec_hash.clone()),
            spec: Some(c.spec.clone()),
            state: wharf::reconcile::ObservedState::Running,
            ports: vec![],
        }],
        volumes: vec![],
        image_configs: Default::default(),
        networks: Default::default(),
        pulled: Default::default(),
    };
    assert_eq!(
        plan(&v1, &observed).to_string(),
        "No changes. 1 container up to date."
    );
    let text = plan(&v2, &observed).to_string();
    assert!(text.contains("+ import app:1.1 from "), "{text}");
    assert!(
        text.contains("~ recreate app\n    image app:1.0 → app:1.1\n"),
        "{text}"
    );
    assert!(
        text.ends_with(
            "Plan: 1 to import, 0 to create, 1 to recreate, 0 to remove, 0 to change otherwise."
        ),
        "{text}"
    );
}

const BAD: &str = r#"project = "p1"

[containers.web]
image = "app:1"
imgae = "typo"
restart = "sometimes"
volumes = ["data:/data", "./nope:/x", "bad"]
env = { A = 1 }
state = "paused"
cap_add = ["NET_ADMINN"]
command = "/bin/sh -c true"

[containers.web.limits]
memory = "12Q"
cpus = 0.5
cpuset = "3-1"

[containers.web.health]
command = ["true"]
interval = "7 parsecs"

[containers."-x"]
image = "Bad:Ref"

[images.app]
source = "missing.tar"
tag = "app:1"
"#;

#[test]
fn every_problem_is_reported_at_once_with_its_position() {
    let (_tmp, r) = load_files(&[("bad.toml", BAD)], "bad.toml");
    let (text, positions) = errors(r);
    let expect = [
        ("unknown key `imgae` in `containers.web`", "bad.toml:5:1"),
        ("invalid restart policy \"sometimes\"", "bad.toml:6:11"),
        ("bind mount source", "bad.toml:7:26"),
        ("invalid volume \"bad\"", "bad.toml:7:39"),
        (
            "`containers.web.env.A`: expected a string, found an integer",
            "bad.toml:8:13",
        ),
        ("unknown value \"paused\"", "bad.toml:9:9"),
        ("unknown capability \"NET_ADMINN\"", "bad.toml:10:12"),
        (
            "`containers.web.command`: expected an array, found a string",
            "bad.toml:11:11",
        ),
        ("invalid size \"12Q\"", "bad.toml:14:10"),
        ("invalid cpuset \"3-1\"", "bad.toml:16:10"),
        ("invalid duration \"7 parsecs\"", "bad.toml:20:12"),
        ("invalid container name \"-x\"", "bad.toml:22:13"),
        ("invalid reference format \"Bad:Ref\"", "bad.toml:23:9"),
        ("missing.tar does not exist", "bad.toml:26:10"),
        ("volume `data` is not declared", "bad.toml:7:12"),
    ];
    for (msg, pos) in expect {
        assert!(text.contains(msg), "missing {msg:?} in:\n{text}");
        assert!(
            positions.iter().any(|p| p.ends_with(pos)),
            "no problem at {pos} for {msg:?}; positions: {positions:?}\n{text}"
        );
    }
    assert_eq!(positions.len(), expect.len(), "{text}");
    // cargo-style rendering: location, caret, hint.
    assert!(text.contains("--> "), "{text}");
    assert!(text.contains("^^^^^ not a valid size"), "{text}");
    assert!(text.contains("did you mean `image`?"), "{text}");
    assert!(
        text.contains("write a list of strings, e.g. [\"/bin/sh\", \"-c\", \"true\"]"),
        "{text}"
    );
    assert!(text.contains("nothing was changed"), "{text}");
}

#[test]
fn duplicates_across_files_point_at_both() {
    let a = "[containers.web]\nimage = \"app:1\"\n\n[images.app]\nsource = \"a.tar\"\ntag = \"app:1\"\n";
    let b = "\n[containers.web]\nimage = \"app:1\"\n";
    let (_tmp, r) = load_files(&[("a.toml", a), ("b.toml", b), ("a.tar", "x")], ".");
    let e = r.unwrap_err();
    assert_eq!(e.len(), 1, "{e}");
    let p = &e.problems[0];
    assert_eq!(p.message, "container `web` is defined twice");
    assert!(e.position(p).unwrap().ends_with("b.toml:2:13"));
    assert!(p.also[0].0.file.ends_with("a.toml"));
    let text = e.render(false);
    assert!(text.contains("first defined here"), "{text}");
    assert!(text.contains("defined again here"), "{text}");
}

#[test]
fn images_come_from_the_manifest_or_the_store() {
    let m = "[containers.web]\nimage = \"app:2\"\n\n[images.app]\nsource = \"a.tar\"\ntag = \"app:1\"\n";
    let (tmp, r) = load_files(&[("mm.toml", m), ("a.tar", "x")], "mm.toml");
    let (text, positions) = errors(r);
    assert!(
        text.contains("no image app:2 in the manifest or the store"),
        "{text}"
    );
    assert!(text.contains("did you mean \"app:1\"?"), "{text}");
    assert_eq!(
        positions,
        [format!("{}:2:9", tmp.path().join("proj/mm.toml").display())]
    );
    // The caller's store lookup provides it.
    let ok = manifest::load(&tmp.path().join("proj/mm.toml"), &|r: &str| r == "app:2").unwrap();
    assert_eq!(ok.containers["web"].image.0, "app:2");
}

#[test]
fn syntax_errors_have_positions() {
    let (_tmp, r) = load_files(
        &[("syn.toml", "[containers.web]\nimage = \"app:1\n")],
        "syn.toml",
    );
    let (text, positions) = errors(r);
    assert!(text.contains("TOML syntax error"), "{text}");
    assert!(positions[0].contains("syn.toml:2:"), "{positions:?}");
}

#[test]
fn missing_required_keys_and_env_file_problems() {
    let m = "[containers.web]\nenv_file = \"web.env\"\nimage = \"app:1\"\n[images.app]\nsource = \"a.tar\"\n";
    let (_tmp, r) = load_files(
        &[
            ("m.toml", m),
            ("a.tar", ""),
            ("web.env", "# c\nOK=1\nnot a pair\n"),
        ],
        "m.toml",
    );
    let (text, positions) = errors(r);
    assert!(
        text.contains("`images.app` is missing the required key `tag`"),
        "{text}"
    );
    assert!(text.contains("expected KEY=VALUE"), "{text}");
    assert!(
        positions.iter().any(|p| p.ends_with("web.env:3:1")),
        "{positions:?}"
    );
}

#[test]
fn project_defaults_and_conflicts() {
    let (_tmp, r) = load_files(&[("alpha.toml", "")], "alpha.toml");
    assert_eq!(r.unwrap().project, "alpha");
    let (_tmp, r) = load_files(&[("a.toml", ""), ("b.toml", "")], ".");
    assert_eq!(r.unwrap().project, "proj");
    let (_tmp, r) = load_files(
        &[
            ("a.toml", "project = \"x1\"\n"),
            ("b.toml", "project = \"y1\"\n"),
        ],
        ".",
    );
    let (text, _) = errors(r);
    assert!(text.contains("two project names in one project"), "{text}");
}

#[test]
fn an_empty_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = load(dir.path()).unwrap_err();
    assert!(e.render(false).contains("has no *.toml files"));
}

#[test]
fn reserved_labels_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lab.toml");
    let m =
        "[containers.web]\nimage = \"app:1\"\nlabels = { \"wharf.project\" = \"x\", ok = \"1\" }\n";
    std::fs::write(&path, m).unwrap();
    // The store has app:1, so the label is the only problem.
    let e = manifest::load(&path, &|r: &str| r == "app:1").unwrap_err();
    assert_eq!(e.len(), 1, "{e}");
    assert!(
        e.position(&e.problems[0])
            .unwrap()
            .ends_with("lab.toml:3:12"),
        "{e}"
    );
    assert!(e.problems[0].message.contains("is reserved"), "{e}");
}

#[test]
fn a_200_container_project_loads_and_plans_quickly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.tar"), "x").unwrap();
    let mut text =
        String::from("[images.app]\nsource = \"a.tar\"\ntag = \"app:1\"\n\n[volumes.data]\n");
    for i in 0..200 {
        text.push_str(&format!(
            "\n[containers.c{i:03}]\nimage = \"app:1\"\ncommand = [\"/bin/sh\", \"-c\", \"sleep 1\"]\n\
             env = {{ N = \"{i}\" }}\nvolumes = [\"data:/data\"]\nrestart = \"on-failure:3\"\n\
             limits = {{ memory = \"64MiB\", cpus = 0.5, pids = 64 }}\n"
        ));
    }
    let path = dir.path().join("big.toml");
    std::fs::write(&path, text).unwrap();
    let _ = wharf::manifest::schema::schema(); // generated once per process
    let t = std::time::Instant::now();
    let m = load(&path).unwrap();
    let d = Desired::from_manifest(&m, |_| Ok::<_, std::io::Error>("a".repeat(64))).unwrap();
    let p = plan(&d, &Observed::default());
    let took = t.elapsed();
    assert_eq!(p.summary().create, 201);
    eprintln!("load + desired + plan of 200 containers: {took:?}");
    // Generous for debug builds on a shared machine; release is far below 50 ms.
    assert!(took < std::time::Duration::from_secs(2), "{took:?}");
}

/// The manifest checks names with the rule create applies (names.rs): a 129-character
/// container name or a 256-character volume name fails `validate`, at its position, instead
/// of passing it and failing at create.
#[test]
fn names_past_the_length_limits_are_refused_where_they_are() {
    let c = "c".repeat(129);
    let v = "v".repeat(256);
    let ok_c = "k".repeat(128);
    let m = format!(
        "[containers.{c}]\nimage = \"app:1\"\nvolumes = [\"{v}:/data\"]\n\n\
         [containers.{ok_c}]\nimage = \"app:1\"\n\n[volumes.{v}]\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.toml");
    std::fs::write(&path, m).unwrap();
    let e = manifest::load(&path, &|_: &str| true).unwrap_err();
    let text = e.render(false);
    let positions: Vec<String> = e
        .problems
        .iter()
        .map(|p| e.position(p).unwrap_or_default())
        .collect();
    for (msg, pos) in [
        (
            "invalid container name \"cccccccccccccccccccccccc\"...: 129 characters, at most 128",
            "long.toml:1:13",
        ),
        (
            "invalid volume name \"vvvvvvvvvvvvvvvvvvvvvvvv\"...: 256 characters, at most 255",
            "long.toml:8:10",
        ),
        ("invalid volume \"", "long.toml:3:12"),
    ] {
        assert!(text.contains(msg), "missing {msg:?} in:\n{text}");
        assert!(
            positions.iter().any(|p| p.ends_with(pos)),
            "no problem at {pos}: {positions:?}\n{text}"
        );
    }
    assert_eq!(e.len(), 3, "the 128-character name passes: {text}");
    assert!(text.contains("2 to 128 characters"), "{text}");
}

#[test]
fn cross_field_checks() {
    let m = "[containers.web]\nimage = \"app:1\"\nvolumes = [\"/tmp:/x\", \"/tmp:/x:ro\"]\n\
             limits = { memory = \"128m\", memory_swap = \"64m\" }\n";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("xf.toml");
    std::fs::write(&path, m).unwrap();
    let e = manifest::load(&path, &|_: &str| true).unwrap_err();
    let text = e.render(false);
    assert_eq!(e.len(), 2, "{text}");
    assert!(text.contains("two volumes mount at /x"), "{text}");
    assert!(
        text.contains("`limits.memory_swap` is below `limits.memory`"),
        "{text}"
    );
}

#[test]
fn watched_paths_cover_sources_and_env_files() {
    let (_tmp, m) = examples();
    let shop = load(&m.join("shop")).unwrap();
    let paths = shop.watched_paths();
    assert_eq!(paths.len(), 4, "{paths:?}"); // two manifests, one tarball, one env file
    assert!(paths.iter().any(|p| p.ends_with("images/busybox.tar")));
    assert!(paths.iter().any(|p| p.ends_with("conf/front.env")));
}

#[test]
fn problems_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("js.toml");
    std::fs::write(
        &path,
        "[containers.web]\nimage = \"app:1\"\nrestart = \"sometimes\"\n",
    )
    .unwrap();
    let e = manifest::load(&path, &|_: &str| true).unwrap_err();
    let j = e.to_json();
    assert_eq!(j[0]["line"], 3);
    assert_eq!(j[0]["column"], 11);
    assert_eq!(j[0]["end_column"], 22);
    assert!(j[0]["hint"].as_str().unwrap().contains("on-failure:N"));
}

#[test]
fn network_and_port_mistakes_are_reported_where_they_are() {
    let m = "[networks.back]\nsubnet = \"10.89.7.0/24\"\n\n\
             [networks.other]\nsubnet = \"10.89.7.128/25\"\n\n\
             [containers.web]\nimage = \"app:1\"\nports = [\"8080:80\", \"80/sctp\"]\nnetworks = [\"bakc\"]\n\n\
             [containers.api]\nimage = \"app:1\"\nports = [\"8080:8080\"]\n\n\
             [containers.hosty]\nimage = \"app:1\"\nnetwork = \"host\"\nports = [\"9090:90\"]\n";
    let (_d, r) = load_files(&[("n.toml", m)], "n.toml");
    let (text, positions) = errors(r);
    for want in [
        "the subnet 10.89.7.128/25 overlaps network `back`'s 10.89.7.0/24",
        "\"80/sctp\" is not a port mapping",
        "unknown network `bakc`",
        "did you mean \"back\"",
        "the host port 8080/tcp is published by `api` too",
        "`ports` needs the bridge network, not network = \"host\"",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    // file:line:col of each: the bad port is on line 9.
    assert!(
        positions.iter().any(|p| p.ends_with("n.toml:9:21")),
        "{positions:?}"
    );
}

#[test]
fn containers_join_the_projects_default_network_unless_told_otherwise() {
    let m = "project = \"pn\"\n[networks.back]\n\n\
             [containers.aa]\nimage = \"app:1\"\n\n\
             [containers.bb]\nimage = \"app:1\"\nnetworks = [\"back\", \"default\"]\nports = [\"8080:80\"]\n\n\
             [containers.cc]\nimage = \"app:1\"\nnetwork = \"none\"\n";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, m).unwrap();
    /// A store that has every image, on a root whose default network is bridge.
    struct Bridged;
    impl manifest::Host for Bridged {
        fn has_image(&self, _: &str) -> bool {
            true
        }
        fn default_network(&self) -> manifest::Network {
            manifest::Network::Bridge
        }
    }
    let m = manifest::load(&path, &Bridged).expect("valid");
    let d = wharf::reconcile::Desired::from_manifest(&m, |_| Ok::<_, ()>("0".repeat(64))).unwrap();
    let spec = |n: &str| &d.containers.iter().find(|c| c.name == n).unwrap().spec;
    assert_eq!(spec("aa").networks, ["pn_default"]);
    assert_eq!(spec("bb").networks, ["pn_back", "pn_default"]);
    assert_eq!(spec("bb").ports, ["8080:80"]);
    assert!(spec("cc").networks.is_empty());
    let names: Vec<&str> = d.networks.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["pn_back", "pn_default"]);
}
