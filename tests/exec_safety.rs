//! A safe exec (issue 11, point 3), tried the way an attacker inside would: a process wharf
//! puts into a running container (exec, health probe) is inside every namespace and the
//! cgroup before the container can see it, and never runs from the host's wharf binary.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{Cleanup, Env, busybox_tar, s, wait_until};

/// busybox's rootfs with /bin/sh replaced by a `#!/proc/self/exe` script (CVE-2019-5736's
/// image): whatever runs /bin/sh runs the executable of the process that exec'd it. It also
/// holds the libraries wharf (`bin`) loads, as a glibc-based image would, so that wharf
/// really runs inside.
fn evil_image(dir: &Path, bin: &Path) -> PathBuf {
    let mut src = tar::Archive::new(fs::File::open(busybox_tar()).expect("open busybox tar"));
    let out = dir.join("evil.tar");
    let mut b = tar::Builder::new(fs::File::create(&out).expect("create evil tar"));
    for e in src.entries().expect("read busybox tar") {
        let mut e = e.expect("tar entry");
        let path = e.path().expect("entry path").into_owned();
        if path == Path::new("./bin/sh") || path == Path::new("bin/sh") {
            continue;
        }
        let h = e.header().clone();
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("entry data");
        b.append(&h, data.as_slice()).expect("copy entry");
    }
    let ldd = std::process::Command::new("ldd")
        .arg(bin)
        .output()
        .expect("run ldd");
    let libs: Vec<PathBuf> = common::text(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(PathBuf::from)
        .collect();
    assert!(
        !libs.is_empty(),
        "ldd lists no library for {}",
        bin.display()
    );
    let mut dirs: Vec<PathBuf> = Vec::new();
    for lib in &libs {
        for d in lib.ancestors().skip(1) {
            if d != Path::new("/") && !dirs.iter().any(|x| x == d) {
                dirs.push(d.to_path_buf());
            }
        }
    }
    dirs.sort();
    for d in &dirs {
        let mut h = tar::Header::new_ustar();
        h.set_path(d.strip_prefix("/").unwrap()).unwrap();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(0);
        h.set_cksum();
        b.append(&h, &[][..]).expect("add lib dir");
    }
    for lib in &libs {
        let data = fs::read(lib).expect("read a library");
        let mut h = tar::Header::new_ustar();
        h.set_path(lib.strip_prefix("/").unwrap()).unwrap();
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, data.as_slice()).expect("add a library");
    }
    let script = b"#!/proc/self/exe\n";
    let mut h = tar::Header::new_ustar();
    h.set_path("bin/sh").unwrap();
    h.set_mode(0o755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(script.len() as u64);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    b.append(&h, &script[..]).expect("add bin/sh");
    b.finish().expect("finish tar");
    out
}

fn probes_volume() -> String {
    format!("{}:/probe:ro", s(common::probes()))
}

#[test]
fn a_proc_self_exe_shell_cannot_write_the_wharf_binary() {
    require_root!();
    let env = Env::new();
    let _c = Cleanup::new(&env, &["grab"]);
    // The target is a copy of wharf: a failure here cannot break the rest of the suite.
    let bin = env.dir.path().join("bin/wharf");
    fs::create_dir_all(bin.parent().unwrap()).unwrap();
    fs::copy(env!("CARGO_BIN_EXE_wharf"), &bin).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    let before = fs::read(&bin).unwrap();
    let tar = evil_image(env.dir.path(), &bin);
    env.ok(&["import", s(&tar), "evil:1"]);
    // The attacker: the container's init, watching for a process whose exe is wharf's. Its
    // monitor runs from the test's binary, `exec` from the copy: as after an upgrade of the
    // installed binary (the monitor's own file is busy, not writable, while it runs).
    env.ok(&[
        "run",
        "-d",
        "--name",
        "grab",
        "-v",
        &probes_volume(),
        "evil:1",
        "/probe/exe-grabber",
    ]);

    // `wharf exec grab /bin/sh`: the kernel runs /proc/self/exe, the exec'd process's own
    // executable, inside the container. Its error message goes to a full pipe, so it stays
    // alive (blocked in write) until the grabber has its exe open.
    let (mut r, w) = std::io::pipe().unwrap();
    let fd = w.as_fd();
    nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .unwrap();
    let mut filler = w.try_clone().unwrap();
    while filler.write(&[0u8; 4096]).is_ok() {}
    drop(filler);
    nix::fcntl::fcntl(
        w.as_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )
    .unwrap();
    let mut exec = env
        .wharf_at(&bin)
        .args(["exec", "grab", "/bin/sh"])
        .stdout(Stdio::null())
        .stderr(Stdio::from(w))
        .spawn()
        .expect("spawn wharf exec");
    let logs = || common::text(&env.wharf().args(["logs", "grab"]).output().unwrap().stdout);
    let grabbed = wait_until(30, "the grabber to catch the exec'd process", || {
        let l = logs();
        l.contains("grabbed").then_some(l)
    });
    // Let it finish: the grabber then tries to write its executable.
    let mut sink = Vec::new();
    let drain = std::thread::spawn(move || r.read_to_end(&mut sink));
    let _ = exec.wait();
    let _ = drain.join();
    let out = wait_until(60, "the grabber's verdict", || {
        let l = logs();
        (l.contains("wrote") || l.contains("refused")).then_some(l)
    });
    assert!(
        !grabbed.contains(s(&bin)),
        "the exec'd process ran the host's binary inside the container:\n{out}"
    );
    assert!(
        !out.contains("wrote"),
        "the container wrote to wharf's executable:\n{out}"
    );
    assert!(
        fs::read(&bin).unwrap() == before,
        "the wharf binary changed:\n{out}"
    );
    env.ok(&["rm", "-f", "grab"]);
}

#[test]
fn a_ptrace_capable_container_never_sees_an_exec_with_the_hosts_root() {
    require_root!();
    let env = Env::new();
    let _c = Cleanup::new(&env, &["reader"]);
    env.import(&busybox_tar(), "bb:1");
    // A host file the container cannot reach by any path of its own.
    let marker = env.dir.path().join("host-marker");
    fs::write(&marker, "host\n").unwrap();
    env.ok(&[
        "run",
        "-d",
        "--name",
        "reader",
        "--cap-add",
        "SYS_PTRACE",
        "--health-cmd",
        "true",
        "--health-interval",
        "50ms",
        "-v",
        &probes_volume(),
        "bb:1",
        "/probe/root-reader",
        s(&marker),
    ]);
    for _ in 0..200 {
        env.ok(&["exec", "reader", "true"]);
    }
    // Probes ran meanwhile (the container is healthy only through them).
    wait_until(30, "a health probe", || {
        (common::inspect(&env, "reader")["State"]["Health"]["Status"] == "healthy").then_some(())
    });
    let out = common::text(
        &env.wharf()
            .args(["logs", "reader"])
            .output()
            .unwrap()
            .stdout,
    );
    assert!(
        !out.contains("ESCAPED"),
        "a process in the container opened the host's root:\n{out}"
    );
    let seen = out.lines().filter(|l| l.starts_with("seen ")).count();
    assert!(seen >= 1, "the reader saw no exec'd process:\n{out}");
    env.ok(&["rm", "-f", "reader"]);
}
