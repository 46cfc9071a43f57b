//! `system prune` and the per-type prune verbs end to end, as root: what they never remove
//! (running containers, images and volumes in use), dangling versus `-a`, layer GC, the
//! filters on every type, and the confirmation rules.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::{Cleanup, Env, busybox_tar, du, import_with, json, seed_tar};

fn exists(env: &Env, what: &str, name: &str) -> bool {
    env.run(&[what, "inspect", name]).status.success()
}

fn container_exists(env: &Env, name: &str) -> bool {
    env.run(&["inspect", name]).status.success()
}

fn state(env: &Env, name: &str) -> String {
    json(&env.ok(&["inspect", name]))[0]["State"]["Status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn image_ids(env: &Env) -> BTreeSet<String> {
    env.ok(&["images", "-q", "--no-trunc"])
        .lines()
        .map(|l| l.trim_start_matches("sha256:").to_string())
        .collect()
}

fn volumes(env: &Env) -> BTreeSet<String> {
    env.ok(&["volume", "ls", "-q"])
        .lines()
        .map(str::to_string)
        .collect()
}

fn dir_names(p: &Path) -> BTreeSet<String> {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The store's files agree with its rows: one blob per image, one layer dir per recorded
/// layer, one volume dir per volume, nothing in staging.
fn assert_consistent(env: &Env) {
    let ids = image_ids(env);
    assert_eq!(
        dir_names(&env.root.join("blobs/sha256")),
        ids,
        "blobs vs images"
    );
    let layers: BTreeSet<String> = ids
        .iter()
        .flat_map(|id| {
            let v = json(&env.ok(&["image", "inspect", id]));
            v[0]["RootFS"]["Layers"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|l| l.as_str().unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let on_disk: BTreeSet<String> = dir_names(&env.root.join("layers"))
        .into_iter()
        .map(|d| format!("sha256:{d}"))
        .collect();
    assert_eq!(on_disk, layers, "layer dirs vs images' layers");
    assert_eq!(
        dir_names(&env.root.join("volumes")),
        volumes(env),
        "volume dirs"
    );
    assert!(env.tree("tmp").is_empty(), "staging: {:?}", env.tree("tmp"));
}

#[test]
fn without_a_terminal_it_refuses_and_force_skips_the_question() {
    require_root!();
    let env = Env::new();
    env.import(&busybox_tar(), "bb:1");
    let _c = Cleanup::new(&env, &["stopped"]);
    env.ok(&["run", "--name", "stopped", "bb:1", "true"]);
    let id = json(&env.ok(&["inspect", "stopped"]))[0]["Id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for verb in [&["system", "prune"][..], &["container", "prune"]] {
        let out = env.run(verb);
        assert_eq!(out.status.code(), Some(1), "{verb:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // it lists exactly what it would remove, then refuses with the way out
        assert!(stdout.contains("1 stopped container"), "{stdout}");
        assert!(
            stdout.contains(&id[..12]) && stdout.contains("stopped"),
            "{stdout}"
        );
        assert!(stderr.contains("not a terminal"), "{stderr}");
        assert!(stderr.contains("-f"), "{stderr}");
        assert!(
            container_exists(&env, "stopped"),
            "removed without confirmation"
        );
    }
    let out = env.ok(&["container", "prune", "-f"]);
    assert!(out.contains("Deleted Containers:"), "{out}");
    assert!(out.contains(&id), "{out}");
    assert!(out.contains("Total reclaimed space: "), "{out}");
    assert!(!container_exists(&env, "stopped"));
    assert!(!env.root.join("containers").join(&id).exists());
    // nothing to do: no question, success
    let out = env.ok(&["system", "prune"]);
    assert!(out.contains("Total reclaimed space: 0B"), "{out}");
    assert_consistent(&env);
}

#[test]
fn prune_never_removes_a_running_container_or_what_a_container_uses() {
    require_root!();
    let env = Env::new();
    let bb_id = import_with(&env, &[], &busybox_tar(), "bb:1");
    let other = import_with(&env, &["LABEL other=1"], &busybox_tar(), "other:1");
    let _c = Cleanup::new(&env, &["live", "dead", "user"]);
    env.ok(&[
        "run",
        "-d",
        "--name",
        "live",
        "-v",
        "livevol:/v",
        "-v",
        "/liveanon",
        "bb:1",
        "sleep",
        "60",
    ]);
    env.ok(&[
        "run",
        "--name",
        "dead",
        "-v",
        "deadvol:/d",
        "-v",
        "/deadanon",
        "bb:1",
        "true",
    ]);
    let before = volumes(&env);
    assert_eq!(before.len(), 4, "{before:?}");

    // image prune -a alone keeps an image a stopped container uses, and the running one's
    env.ok(&["run", "--name", "user", "other:1", "true"]);
    let out = env.ok(&["image", "prune", "-a", "-f"]);
    assert!(out.contains("Total reclaimed space: 0B"), "{out}");
    assert_eq!(
        image_ids(&env),
        BTreeSet::from([bb_id.clone(), other.clone()])
    );
    // volume prune -a alone keeps the volumes of stopped and running containers
    env.ok(&["volume", "prune", "-a", "-f"]);
    assert_eq!(volumes(&env), before);
    env.ok(&["rm", "user"]);

    env.ok(&["system", "prune", "-a", "--volumes", "-f"]);
    assert_eq!(state(&env, "live"), "running");
    assert!(!container_exists(&env, "dead"));
    assert_eq!(
        image_ids(&env),
        BTreeSet::from([bb_id.clone()]),
        "bb:1 is in use"
    );
    let after = volumes(&env);
    assert!(after.contains("livevol"));
    assert_eq!(
        after.len(),
        3,
        "only dead's anonymous volume goes: {after:?}"
    );
    assert!(
        after.contains("deadvol"),
        "system prune --volumes takes anonymous ones only"
    );

    env.ok(&["volume", "prune", "-a", "-f"]);
    assert_eq!(
        volumes(&env).len(),
        2,
        "livevol and live's anonymous volume stay"
    );
    assert!(!volumes(&env).contains("deadvol"));
    assert_eq!(state(&env, "live"), "running");
    assert_consistent(&env);
}

#[test]
fn dangling_versus_all_and_the_layers_that_go() {
    require_root!();
    let env = Env::new();
    let a = import_with(&env, &[], &busybox_tar(), "app:1");
    let b = import_with(&env, &["CMD [\"/bin/true\"]"], &busybox_tar(), "app:1");
    assert_ne!(a, b);
    let s = import_with(&env, &[], &seed_tar(), "seed:1");
    let u = import_with(&env, &["LABEL used=1"], &busybox_tar(), "used:1");
    let _c = Cleanup::new(&env, &["uc"]);
    env.ok(&["run", "--name", "uc", "used:1", "true"]);
    let layers_before = dir_names(&env.root.join("layers"));
    assert_eq!(layers_before.len(), 2);

    // dangling only: app:1's old image
    let out = env.ok(&["image", "prune", "-f"]);
    assert!(out.contains(&format!("deleted: sha256:{a}")), "{out}");
    assert_eq!(
        image_ids(&env),
        BTreeSet::from([b.clone(), s.clone(), u.clone()])
    );
    assert_eq!(
        dir_names(&env.root.join("layers")),
        layers_before,
        "shared layer kept"
    );

    // -a: every unused image; the seed layer goes, the busybox one stays (used:1 lists it)
    let seed_layer = json(&env.ok(&["image", "inspect", &s]))[0]["RootFS"]["Layers"][0]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("sha256:")
        .to_string();
    let expected = du(&[
        env.root.join("layers").join(&seed_layer),
        env.root.join("blobs/sha256").join(&b),
        env.root.join("blobs/sha256").join(&s),
    ]);
    let report = json(&env.ok(&["--format", "json", "image", "prune", "-a", "-f"]));
    assert_eq!(report["reclaimed"].as_u64(), Some(expected), "{report}");
    assert_eq!(image_ids(&env), BTreeSet::from([u.clone()]));
    assert!(!env.root.join("layers").join(&seed_layer).exists());
    assert_eq!(dir_names(&env.root.join("layers")).len(), 1);
    assert!(env.ok(&["images"]).contains("used"));
    assert_consistent(&env);
}

#[test]
fn filters_until_label_and_negation_work_on_every_type() {
    require_root!();
    let env = Env::new();
    env.import(&busybox_tar(), "bb:1");
    let ci_img = import_with(&env, &["LABEL env=ci"], &busybox_tar(), "ci:1");
    let keep_img = import_with(&env, &["LABEL keep=1"], &busybox_tar(), "keepimg:1");
    let _c = Cleanup::new(&env, &["keep", "ci"]);
    env.ok(&["run", "--name", "keep", "--label", "keep=1", "bb:1", "true"]);
    env.ok(&["run", "--name", "ci", "--label", "env=ci", "bb:1", "true"]);
    env.ok(&["volume", "create", "--label", "env=ci", "civol"]);
    env.ok(&["volume", "create", "--label", "keep=1", "keepvol"]);
    env.ok(&["volume", "create", "plain"]);

    // until: everything here is newer than 2000 and than an hour ago
    for until in ["until=2000-01-01T00:00:00Z", "until=1h"] {
        let out = env.ok(&[
            "system",
            "prune",
            "-a",
            "--volumes",
            "-f",
            "--filter",
            until,
        ]);
        assert!(out.contains("Nothing to remove"), "{until}: {out}");
    }
    let out = env.ok(&[
        "volume",
        "prune",
        "-a",
        "-f",
        "--filter",
        "until=2000-01-01T00:00:00Z",
    ]);
    assert!(out.contains("Nothing to remove"), "{out}");

    // label= on containers, images and volumes
    env.ok(&["container", "prune", "-f", "--filter", "label=env=ci"]);
    assert!(!container_exists(&env, "ci") && container_exists(&env, "keep"));
    env.ok(&["image", "prune", "-a", "-f", "--filter", "label=env=ci"]);
    assert!(!image_ids(&env).contains(&ci_img));
    assert!(image_ids(&env).contains(&keep_img));
    env.ok(&["volume", "prune", "-a", "-f", "--filter", "label=env=ci"]);
    assert_eq!(
        volumes(&env),
        BTreeSet::from(["keepvol".into(), "plain".into()])
    );

    // label!= on volumes and images; label!= AND until on containers
    env.ok(&["volume", "prune", "-a", "-f", "--filter", "label!=keep"]);
    assert_eq!(volumes(&env), BTreeSet::from(["keepvol".to_string()]));
    env.ok(&["image", "prune", "-a", "-f", "--filter", "label!=keep"]);
    assert!(
        image_ids(&env).contains(&keep_img),
        "label!=keep removed keepimg:1"
    );
    env.ok(&[
        "container",
        "prune",
        "-f",
        "--filter",
        "label!=keep",
        "--filter",
        "until=2100-01-01T00:00:00Z",
    ]);
    assert!(container_exists(&env, "keep"));
    env.ok(&[
        "container",
        "prune",
        "-f",
        "--filter",
        "until=2100-01-01T00:00:00Z",
    ]);
    assert!(!container_exists(&env, "keep"));

    // a bad filter names itself and the accepted keys, and removes nothing
    env.ok(&["volume", "create", "x1"]);
    let err = env.fails(&[
        "system",
        "prune",
        "-f",
        "--volumes",
        "--filter",
        "colour=red",
    ]);
    assert!(err.contains("\"colour=red\""), "{err}");
    assert!(err.contains("until, label, label!"), "{err}");
    let err = env.fails(&["volume", "prune", "-f", "--filter", "until=tomorrowish"]);
    assert!(err.contains("until=tomorrowish"), "{err}");
    assert!(volumes(&env).contains("x1"));
    assert!(exists(&env, "image", "keepimg:1"));
    assert_consistent(&env);
}

/// Runs `wharf ARGS` on a pseudo-terminal (util-linux `script`), typing `input`.
fn on_a_terminal(env: &Env, args: &str, input: &str) -> Option<String> {
    use std::io::Write;
    let cmd = format!(
        "{} --root {} {args}",
        env!("CARGO_BIN_EXE_wharf"),
        env.root.display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env_remove("WHARF_ROOT")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("type the answer");
    let out = child.wait_with_output().expect("wait for script");
    assert!(out.status.success(), "{out:?}");
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn on_a_terminal_it_asks_and_only_yes_removes() {
    require_root!();
    let env = Env::new();
    env.import(&busybox_tar(), "bb:1");
    let _c = Cleanup::new(&env, &["s1"]);
    env.ok(&["run", "--name", "s1", "bb:1", "true"]);
    let Some(out) = on_a_terminal(&env, "container prune", "n\n") else {
        eprintln!("skipped: util-linux `script` is not installed");
        return;
    };
    assert!(out.contains("[y/N]"), "{out}");
    assert!(out.contains("s1"), "{out}");
    assert!(out.contains("Nothing was removed"), "{out}");
    assert!(container_exists(&env, "s1"));
    let out = on_a_terminal(&env, "container prune", "y\n").expect("script ran before");
    assert!(out.contains("Deleted Containers:"), "{out}");
    assert!(!container_exists(&env, "s1"));
}
