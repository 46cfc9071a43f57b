//! Issue 11, point 6: unbounded inputs. The attacker hands wharf a 125-byte gzip holding a
//! 10 GiB sparse file, a manifest with a 50 MB command, values over the kernel's argument
//! limit, a journal that grows without end, and a container record of many megabytes that
//! `ps` must not choke on.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Builds, in `dir`, a gzip'd tar holding one 10 GiB sparse file with no data (GNU tar
/// `--sparse`): about 125 bytes.
fn sparse_bomb(dir: &Path) -> PathBuf {
    let src = dir.join("bomb-src");
    fs::create_dir_all(&src).expect("mkdir");
    let f = fs::File::create(src.join("big")).expect("create");
    f.set_len(10 << 30).expect("truncate to 10 GiB");
    drop(f);
    let tgz = dir.join("bomb.tgz");
    let st = Command::new("tar")
        .args(["--sparse", "-czf"])
        .arg(&tgz)
        .arg("-C")
        .arg(&src)
        .arg("big")
        .status()
        .expect("run tar");
    assert!(st.success(), "tar --sparse failed");
    fs::remove_file(src.join("big")).expect("rm");
    let len = fs::metadata(&tgz).expect("stat").len();
    assert!(len < 1024, "the bomb is {len} bytes, not a bomb");
    tgz
}

#[test]
fn a_sparse_bomb_is_written_sparse_and_counted_at_its_real_size() {
    require_root!();
    let env = Env::new();
    let tgz = sparse_bomb(env.dir.path());

    // Under a limit below its real size: refused, nothing left behind.
    let e = env.fails(&["import", "--max-size", "1GiB", s(&tgz), "bomb:1"]);
    assert!(e.contains("larger than the import limit"), "{e}");
    assert!(e.contains("--max-size"), "{e}");
    assert!(env.tree("layers").is_empty(), "{:?}", env.tree("layers"));
    assert!(env.tree("tmp").is_empty(), "{:?}", env.tree("tmp"));
    assert_eq!(env.ok(&["images", "-q"]), "");

    // The root config's [import] max_size does the same.
    env.write_config("[import]\nmax_size = \"2GiB\"\n")
        .expect("write config");
    let e = env.fails(&["import", s(&tgz), "bomb:1"]);
    assert!(e.contains("2147483648 bytes"), "{e}");
    env.write_config("[import]\nmax_size = \"12Q\"\n")
        .expect("write");
    let e = env.fails(&["import", s(&tgz), "bomb:1"]);
    assert!(e.contains("config.toml") && e.contains("max_size"), "{e}");
    fs::remove_file(env.root.join("config.toml")).expect("rm");

    // Under the default (64 GiB): imported, and written sparse.
    env.ok(&["import", "-q", s(&tgz), "bomb:1"]);
    let layers = fs::read_dir(env.root.join("layers"))
        .expect("layers")
        .flatten()
        .map(|e| e.path())
        .collect::<Vec<_>>();
    assert_eq!(layers.len(), 1);
    let big = layers[0].join("big");
    let meta = fs::metadata(&big).expect("the file was unpacked");
    assert_eq!(meta.len(), 10 << 30, "the file lost its size");
    let allocated = meta.blocks() * 512;
    assert!(
        allocated < 1 << 20,
        "a sparse file with no data took {allocated} bytes of disk"
    );
    assert!(
        du(&layers) < 1 << 20,
        "the layer takes {} bytes",
        du(&layers)
    );
}

#[test]
fn values_over_the_kernels_argument_limit_are_validation_errors() {
    require_root!();
    let env = setup();
    let dir = env.dir.path().join("m");
    fs::create_dir(&dir).expect("mkdir");

    // A 50 MB command: the manifest is over 4 MiB, refused before it is parsed.
    let huge = dir.join("huge.toml");
    let big = "x".repeat(50_000_000);
    fs::write(
        &huge,
        format!("[containers.c]\nimage = \"bb:1\"\ncommand = [\"echo\", \"{big}\"]\n"),
    )
    .expect("write");
    drop(big);
    let e = env.fails(&["validate", "-f", s(&huge)]);
    assert!(e.contains("larger than 4 MiB"), "{e}");
    fs::remove_file(&huge).expect("rm");

    // 200 KiB in a command argument, an env value and a label: each at its file:line:col.
    let long = "y".repeat(200 * 1024);
    let m = dir.join("long.toml");
    fs::write(
        &m,
        format!(
            "[containers.c]\nimage = \"bb:1\"\ncommand = [\"echo\", \"{long}\"]\n\
             env = {{ BIG = \"{long}\" }}\nlabels = {{ big = \"{long}\" }}\n"
        ),
    )
    .expect("write");
    for verb in ["validate", "apply"] {
        let e = env.fails(&[verb, "-f", s(&m)]);
        assert!(
            e.contains("shorter than 128 KiB"),
            "{verb}: {}",
            &e[..e.len().min(2000)]
        );
        for (line, what) in [(3, "command[1]"), (4, "env.BIG"), (5, "labels.big")] {
            assert!(
                e.contains(&format!("long.toml:{line}:")),
                "{verb}: no position for {what}"
            );
            assert!(e.contains(what), "{verb}: {what} not named");
        }
        // The snippet is cut, not 200 KiB of y's per problem.
        assert!(e.len() < 3 * 200 * 1024, "{verb} printed {} bytes", e.len());
    }
    assert!(
        !env.run(&["inspect", "c"]).status.success(),
        "apply made it"
    );

    // On the CLI: an image env and `-e` that add up to more than execve takes (2 MiB) are a
    // user error at create, not a failed start.
    let v = "z".repeat(120 * 1024);
    let mut args: Vec<String> = vec!["import".into(), "-q".into()];
    for i in 0..12 {
        args.push("--change".into());
        args.push(format!("ENV V{i}={v}"));
    }
    args.push(s(&busybox_tar()).into());
    args.push("fat:1".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    env.ok(&args);
    let mut run: Vec<String> = vec!["run".into(), "--name".into(), "fat".into()];
    for i in 0..6 {
        run.push("-e".into());
        run.push(format!("W{i}={v}"));
    }
    run.extend(["fat:1".into(), "true".into()]);
    let run: Vec<&str> = run.iter().map(String::as_str).collect();
    let out = env.run(&run);
    let e = text(&out.stderr);
    assert_ne!(code(&out), 0, "a 2.2 MB environment was accepted");
    assert!(e.contains("2 MiB"), "{}", &e[..e.len().min(2000)]);
    assert!(
        !e.contains("E2BIG") && !e.contains("Argument list too long"),
        "{e}"
    );
    assert!(
        !env.run(&["inspect", "fat"]).status.success(),
        "a container was left"
    );
}

#[test]
fn the_run_journal_keeps_ten_thousand_runs_by_default() {
    require_root!();
    let env = setup();
    env.ok(&["run", "--name", "once", "bb:1", "true"]);
    // 10,010 finished runs (as a host running short jobs for months would have).
    {
        let mut db = rusqlite::Connection::open(env.root.join("wharf.db")).expect("db");
        let tx = db.transaction().expect("tx");
        {
            let mut st = tx
                .prepare(
                    "INSERT INTO runs (container_id, container_name, image_id, image_ref, command, \
                     started_at, finished_at, exit_code) \
                     SELECT container_id, container_name, image_id, image_ref, command, \
                     started_at - ?1, finished_at - ?1, 0 FROM runs LIMIT 1",
                )
                .expect("prepare");
            for i in 1..10_010i64 {
                st.execute([i * 1_000_000_000]).expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    let count = || -> i64 {
        rusqlite::Connection::open(env.root.join("wharf.db"))
            .and_then(|c| c.query_row("SELECT count(*) FROM runs", [], |r| r.get(0)))
            .expect("count")
    };
    assert_eq!(count(), 10_010);
    let out = env.ok(&["system", "prune", "--policy", "-f"]);
    assert!(out.contains("run "), "{}", &out[..out.len().min(2000)]);
    assert_eq!(
        count(),
        10_000,
        "the default journal policy kept another number"
    );
    // The newest (the real run) is kept.
    let real: i64 = rusqlite::Connection::open(env.root.join("wharf.db"))
        .and_then(|c| c.query_row("SELECT count(*) FROM runs WHERE id = 1", [], |r| r.get(0)))
        .expect("query");
    assert_eq!(real, 1, "the newest run was removed");

    // [retention.journal] changes it.
    env.write_config("[retention.journal]\nmax_entries = 5\n")
        .expect("write");
    env.ok(&["system", "prune", "--policy", "-f"]);
    assert_eq!(count(), 5);
    // An empty table keeps everything.
    env.write_config("[retention.journal]\n").expect("write");
    env.ok(&["run", "--rm", "bb:1", "true"]);
    env.ok(&["system", "prune", "--policy", "-f"]);
    assert_eq!(count(), 6);
}

#[test]
fn ps_reads_only_what_it_shows_of_a_huge_record() {
    require_root!();
    let env = setup();
    env.ok(&["create", "--name", "huge", "bb:1", "sh", "-c", "true"]);
    env.ok(&[
        "create",
        "--name",
        "small",
        "-v",
        "data:/data",
        "bb:1",
        "echo",
        "hi",
    ]);
    // A record an older wharf let in: 50 MB of command and spec.
    let big = "q".repeat(50_000_000);
    rusqlite::Connection::open(env.root.join("wharf.db"))
        .and_then(|c| {
            c.execute(
                "UPDATE containers SET config = json_set(config, '$.args', \
                 json_array('sh', '-c', ?1)), spec = ?1 WHERE name = 'huge'",
                [&big],
            )
        })
        .expect("inflate the record");

    let out = env.ok(&["ps", "-a"]);
    let line = out
        .lines()
        .find(|l| l.ends_with("huge"))
        .expect("huge is listed");
    assert!(line.contains("\"sh -c qqqqqqqqqqqqq…\""), "{line}");
    assert!(line.len() < 200, "{line}");
    let small = out.lines().find(|l| l.ends_with("small")).expect("small");
    assert!(small.contains("\"echo hi\""), "{small}");
    // Filters on what ps reads still work.
    let out = env.ok(&["ps", "-a", "-q", "--filter", "volume=/data"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    // JSON shows it whole.
    let out = env.ok(&["--format", "json", "ps", "-a", "--filter", "name=huge"]);
    let v = json(&out);
    assert_eq!(v[0]["Command"].as_str().map(str::len), Some(50_000_000 + 8));
}
