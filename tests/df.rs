//! `system df` end to end, as root: every figure equals `du -s -B1` of the same paths
//! (allocated blocks, each inode once), with docker's definitions of active and reclaimable.

mod common;

use std::path::PathBuf;

use common::{Cleanup, Env, busybox_tar, du, import_with, json, seed_tar};

fn layer_of(env: &Env, image: &str) -> String {
    json(&env.ok(&["image", "inspect", image]))[0]["RootFS"]["Layers"][0]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("sha256:")
        .to_string()
}

fn id_of(env: &Env, name: &str) -> String {
    json(&env.ok(&["inspect", name]))[0]["Id"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// (total, active, size, reclaimable) of one summary line.
fn line(df: &serde_json::Value, kind: &str) -> (u64, u64, u64, u64) {
    let s = df["summary"]
        .as_array()
        .expect("summary")
        .iter()
        .find(|s| s["Type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} line in {df}"));
    let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k} of {kind}"));
    (n("TotalCount"), n("Active"), n("Size"), n("Reclaimable"))
}

#[test]
fn df_figures_equal_du_of_the_same_paths() {
    require_root!();
    let env = Env::new();
    let root = env.root.clone();
    let bb = import_with(&env, &[], &busybox_tar(), "bb:1");
    // same layer, another image id: shares every byte of its layer with bb:1
    let bb2 = import_with(&env, &["LABEL twin=1"], &busybox_tar(), "bb:2");
    let seed = import_with(&env, &[], &seed_tar(), "seed:1");
    let bb_layer = layer_of(&env, "bb:1");
    let seed_layer = layer_of(&env, "seed:1");
    assert_ne!(bb_layer, seed_layer);
    let _c = Cleanup::new(&env, &["writer", "sleeper"]);
    env.ok(&[
        "run",
        "--name",
        "writer",
        "-v",
        "data:/data",
        "bb:1",
        "sh",
        "-c",
        "dd if=/dev/zero of=/data/big bs=1k count=300 2>/dev/null; \
         dd if=/dev/zero of=/upper-file bs=1k count=50 2>/dev/null; echo log line",
    ]);
    env.ok(&["volume", "create", "free"]);
    std::fs::write(root.join("volumes/free/_data/f"), vec![7u8; 20_000]).expect("write");
    env.ok(&["run", "-d", "--name", "sleeper", "bb:1", "sleep", "60"]);
    let writer = id_of(&env, "writer");
    let sleeper = id_of(&env, "sleeper");

    let df = json(&env.ok(&["--format", "json", "system", "df", "-v"]));

    // Images: every layer once plus every config blob; bb:1 is active (containers use it),
    // so only the seed layer and the blobs of bb:2 and seed:1 are reclaimable.
    let blob = |id: &str| root.join("blobs/sha256").join(id);
    let layer = |d: &str| root.join("layers").join(d);
    let (total, active, size, reclaim) = line(&df, "Images");
    assert_eq!((total, active), (3, 1));
    assert_eq!(
        size,
        du(&[
            layer(&bb_layer),
            layer(&seed_layer),
            blob(&bb),
            blob(&bb2),
            blob(&seed)
        ])
    );
    assert_eq!(reclaim, du(&[layer(&seed_layer), blob(&bb2), blob(&seed)]));
    assert!(reclaim < size);
    let img = |id: &str| {
        df["images"]
            .as_array()
            .expect("images")
            .iter()
            .find(|i| i["id"] == id)
            .cloned()
            .expect("image listed")
    };
    assert_eq!(
        img(&bb)["size"].as_u64(),
        Some(du(&[layer(&bb_layer), blob(&bb)]))
    );
    assert_eq!(
        img(&bb)["shared_size"].as_u64(),
        Some(du(&[layer(&bb_layer)]))
    );
    assert_eq!(img(&seed)["shared_size"].as_u64(), Some(0));
    assert_eq!(img(&bb)["containers"].as_u64(), Some(2));

    // Containers: their write layers; the stopped one is reclaimable.
    let upper = |id: &str| root.join("containers").join(id).join("upper");
    let (total, active, size, reclaim) = line(&df, "Containers");
    assert_eq!((total, active), (2, 1));
    assert_eq!(size, du(&[upper(&writer), upper(&sleeper)]));
    assert_eq!(reclaim, du(&[upper(&writer)]));
    assert!(
        reclaim >= 50 * 1024,
        "the 50k file in the write layer: {reclaim}"
    );

    // Local Volumes: _data dirs; the one no container mounts is reclaimable.
    let data = |n: &str| root.join("volumes").join(n).join("_data");
    let (total, active, size, reclaim) = line(&df, "Local Volumes");
    assert_eq!((total, active), (2, 1));
    assert_eq!(size, du(&[data("data"), data("free")]));
    assert_eq!(reclaim, du(&[data("free")]));
    assert!(size >= 300 * 1024);

    // -v: logs and the journal
    let (_, _, size, _) = line(&df, "Logs");
    let logs: Vec<PathBuf> = [&writer, &sleeper]
        .iter()
        .flat_map(|id| {
            ["log.json", "log.json.1"]
                .iter()
                .map(|f| root.join("containers").join(id).join(f))
                .filter(|p| p.exists())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(size, du(&logs));
    let (_, _, size, reclaim) = line(&df, "Journal");
    assert!(size > 0 && reclaim == 0);

    // The table: docker's header, and the per-item sections with -v.
    let table = env.ok(&["system", "df"]);
    assert!(
        table.starts_with("TYPE            TOTAL   ACTIVE   SIZE"),
        "{table}"
    );
    assert!(
        table.contains("Local Volumes") && !table.contains("Journal"),
        "{table}"
    );
    let verbose = env.ok(&["system", "df", "-v"]);
    for section in [
        "Images space usage:",
        "Containers space usage:",
        "Local Volumes space usage:",
        "Logs space usage:",
        "Journal (wharf.db):",
    ] {
        assert!(verbose.contains(section), "{section} missing:\n{verbose}");
    }
    assert!(
        verbose.contains("writer") && verbose.contains("free"),
        "{verbose}"
    );
}

#[test]
fn an_empty_store_is_all_zero() {
    require_root!();
    let env = Env::new();
    let df = json(&env.ok(&["--format", "json", "system", "df"]));
    for kind in ["Images", "Containers", "Local Volumes"] {
        assert_eq!(line(&df, kind), (0, 0, 0, 0), "{kind}");
    }
    let table = env.ok(&["system", "df"]);
    assert!(table.contains("0B (0%)"), "{table}");
}
