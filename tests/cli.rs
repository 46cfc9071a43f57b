//! The command line itself: usage errors exit 125 for run, create and exec (docker's), 1
//! elsewhere, with clap's message and a hint; `--help` and `--version` exit 0. No root needed:
//! nothing here reaches a store.

mod common;

use common::{Env, code, text};

#[test]
fn usage_errors_of_run_create_and_exec_exit_125() {
    let env = Env::new();
    for args in [
        &["run", "--no-such-flag", "img"][..],
        &["run"],
        &["create", "--memory"],
        &["exec", "only-a-container"],
    ] {
        let out = env.run(args);
        assert_eq!(code(&out), 125, "wharf {args:?}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(err.contains("error:"), "clap's message for {args:?}: {err}");
        assert!(
            err.contains(&format!("hint: `wharf {} --help`", args[0])),
            "a hint for {args:?}: {err}"
        );
        assert!(
            !env.root.join("wharf.db").exists(),
            "a usage error touches no store"
        );
    }
    // A network is looked up when the container is created: an unknown one is wharf's
    // failure (125), as docker's "network ... not found".
    let out = env.run(&["run", "--network", "bridge-of-nowhere", "img"]);
    assert_eq!(code(&out), 125);
}

#[test]
fn usage_errors_elsewhere_exit_1_with_a_hint() {
    let env = Env::new();
    for args in [
        &["ps", "--no-such-flag"][..],
        &["rm"],
        &["logs"],
        &["volume", "create", "--bad"],
        &["--root"],
    ] {
        let out = env.run(args);
        assert_eq!(code(&out), 1, "wharf {args:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("hint:"), "{}", text(&out.stderr));
    }
    let out = env.run(&["no-such-verb"]);
    assert_eq!(code(&out), 1);
    assert!(
        text(&out.stderr).contains("hint: `wharf --help` lists the verbs"),
        "{}",
        text(&out.stderr)
    );
    // The global options before the verb do not hide it.
    let out = env.run(&["--debug", "--format", "json", "run", "--bogus", "x"]);
    assert_eq!(code(&out), 125, "{}", text(&out.stderr));
}

#[test]
fn help_and_version_exit_0() {
    let env = Env::new();
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["ps", "-h"],
        &["--version"],
    ] {
        let out = env.run(args);
        assert_eq!(code(&out), 0, "wharf {args:?}: {}", text(&out.stderr));
        assert!(!text(&out.stdout).is_empty());
    }
    let help = text(&env.run(&["run", "--help"]).stdout);
    for flag in [
        "--detach",
        "--memory",
        "--restart",
        "--health-cmd",
        "--cpuset-cpus",
    ] {
        assert!(help.contains(flag), "run --help lists {flag}");
    }
}

#[test]
fn completions_and_man_pages_come_from_the_clap_tree() {
    let env = Env::new();
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef wharf"),
        ("fish", "complete -c wharf"),
    ] {
        let out = env.ok(&["completion", shell]);
        assert!(
            out.contains(marker),
            "{shell}: {}",
            &out[..out.len().min(200)]
        );
        assert!(out.contains("health-cmd"), "{shell} completes run's flags");
    }
    assert_eq!(code(&env.run(&["completion", "tcsh"])), 1);
    let dir = env.dir.path().join("man");
    env.ok(&["__man", dir.to_str().expect("utf-8")]);
    let run = std::fs::read_to_string(dir.join("wharf-run.1")).expect("wharf-run.1");
    assert!(run.contains(".TH wharf-run 1"), "{run}");
    assert!(run.contains("health\\-cmd"), "the page lists run's flags");
    assert!(dir.join("wharf.1").exists());
    assert!(
        !dir.join("wharf-__monitor.1").exists(),
        "internal verbs get no page"
    );
}

#[test]
fn output_piped_into_a_reader_that_stops_ends_quietly() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let env = Env::new();
    // A pipe whose reader takes one chunk and leaves, as `| head -1` does (bash's completion
    // script is ~170 KB, more than a pipe holds: the write meets the closed pipe).
    let mut child = env
        .wharf()
        .args(["completion", "bash"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut first = [0u8; 16];
    let mut stdout = child.stdout.take().expect("stdout");
    stdout.read_exact(&mut first).expect("read");
    drop(stdout);
    let out = child.wait_with_output().expect("wait");
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "as `ls | head` ends"
    );
}
