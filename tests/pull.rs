//! `wharf pull`, `login`, `logout`, `images --digests` (issue 12, points 1 and 8) against
//! Debian's docker-registry on 127.0.0.1 (plain, htpasswd, token auth), images pushed there
//! by skopeo from the umoci fixtures; and registries that misbehave.

mod common;
mod import_support;
mod registry_support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{Env, code, image_fixtures, text, wait_until};
use import_support::{assert_store_empty, entries};
use registry_support::{Fake, Registry, StallProxy, http};

fn layout_ref(name: &str) -> String {
    format!("oci:{}:{name}", image_fixtures().join("layout").display())
}

/// The config digest (= image id) of the layout's image `name`.
fn layout_image_id(name: &str) -> String {
    let l = image_fixtures().join("layout");
    let idx: serde_json::Value =
        serde_json::from_slice(&fs::read(l.join("index.json")).unwrap()).unwrap();
    let m = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == name)
        .unwrap()
        .clone();
    let hex = m["digest"].as_str().unwrap().trim_start_matches("sha256:");
    let man: serde_json::Value =
        serde_json::from_slice(&fs::read(l.join("blobs/sha256").join(hex)).unwrap()).unwrap();
    man["config"]["digest"].as_str().unwrap().to_string()
}

/// wharf with its credentials and docker's config in the test's temp dir.
fn wharf(env: &Env) -> Command {
    let cfg = env.dir.path().join("home");
    fs::create_dir_all(&cfg).unwrap();
    let mut c = env.wharf();
    c.env("HOME", &cfg)
        .env("XDG_CONFIG_HOME", cfg.join(".config"))
        .env("DOCKER_CONFIG", cfg.join(".docker"))
        .env("WHARF_REGISTRY_TIMEOUT", "3");
    c
}

fn run(env: &Env, args: &[&str]) -> Output {
    wharf(env).args(args).output().expect("spawn wharf")
}

fn ok(env: &Env, args: &[&str]) -> String {
    let out = run(env, args);
    assert!(
        out.status.success(),
        "wharf {args:?} failed: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Asserts `wharf args` fails with exit 1 and leaves nothing in the store; returns stderr.
fn fails_clean(env: &Env, args: &[&str]) -> String {
    let out = run(env, args);
    let err = text(&out.stderr);
    assert_eq!(code(&out), 1, "wharf {args:?}: {err}");
    assert!(
        err.starts_with("error: ") && err.contains("hint: "),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_store_empty(env);
    err
}

fn login(env: &Env, host: &str, user: &str, password: &str) -> Output {
    let mut c = wharf(env);
    c.args(["login", host, "-u", user, "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_pulled_image_runs_and_keeps_its_digest() {
    require_root!();
    let env = Env::new();
    let reg = Registry::plain(&env);
    reg.push(&layout_ref("multi"), "wharf/multi:1", false);
    let name = format!("{}/wharf/multi:1", reg.host());
    let out = ok(&env, &["pull", &name]);
    let digest = reg.inspect("wharf/multi:1", false)["Digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    assert!(out.contains("Downloaded newer image"), "{out}");
    assert_eq!(ok(&env, &["run", "--rm", &name]), "hi\n", "the image's Cmd");
    let images = ok(&env, &["images", "--digests"]);
    assert!(
        images.contains("DIGEST") && images.contains(&digest),
        "{images}"
    );
    let id = layout_image_id("multi");
    assert_eq!(
        ok(&env, &["images", "-q", "--no-trunc", &name]).trim(),
        id,
        "the image id is the config digest"
    );
    // Again: nothing to download.
    let out = ok(&env, &["pull", &name]);
    assert!(out.contains("Image is up to date"), "{out}");
    // By digest, and run by digest.
    let by_digest = format!("{}/wharf/multi@{digest}", reg.host());
    assert_eq!(ok(&env, &["pull", "-q", &by_digest]).trim(), id);
    assert_eq!(
        ok(&env, &["run", "--rm", &by_digest, "cat", "/base/link"]),
        "lower\n"
    );
    assert!(entries(&env.root.join("tmp")).is_empty());
    assert_eq!(entries(&env.root.join("layers")).len(), 4);
}

#[test]
fn an_index_gives_the_host_platform_and_platform_picks_another() {
    require_root!();
    let env = Env::new();
    let reg = Registry::plain(&env);
    reg.push(&layout_ref("index"), "wharf/index:1", true);
    let name = format!("{}/wharf/index:1", reg.host());
    assert_eq!(
        ok(&env, &["pull", "-q", &name]).trim(),
        layout_image_id("multi"),
        "the host's platform, not the unknown/unknown attestation listed first"
    );
    let other = if cfg!(target_arch = "aarch64") {
        "linux/amd64"
    } else {
        "linux/arm64"
    };
    assert_eq!(
        ok(&env, &["pull", "-q", "--platform", other, &name]).trim(),
        layout_image_id("deep")
    );
    let out = run(&env, &["pull", "--platform", "linux/s390x", &name]);
    let err = text(&out.stderr);
    assert_eq!(code(&out), 1, "{err}");
    assert!(
        err.contains("no image for linux/s390x") && err.contains("--platform"),
        "{err}"
    );
    assert!(!err.contains("unknown/unknown"), "{err}");
    let err = text(&run(&env, &["pull", "--platform", "s390x", &name]).stderr);
    assert!(err.contains("os/arch"), "{err}");

    // An image of one platform, no index: another --platform is refused, held or not.
    reg.push(&layout_ref("multi"), "wharf/single:1", false);
    let single = format!("{}/wharf/single:1", reg.host());
    for env in [&env, &Env::new()] {
        let out = run(env, &["pull", "--platform", "linux/s390x", &single]);
        let err = text(&out.stderr);
        assert_eq!(code(&out), 1, "{err}");
        assert!(
            err.contains("not the linux/s390x asked for") && err.contains("leave out --platform"),
            "{err}"
        );
    }
    assert_eq!(
        ok(&env, &["pull", "-q", &single]).trim(),
        layout_image_id("multi")
    );
}

#[test]
fn basic_auth_needs_a_login_kept_in_a_private_file() {
    require_root!();
    let env = Env::new();
    let reg = Registry::basic(&env, "alice", "s3cret");
    reg.push(&layout_ref("multi"), "team/multi:1", false);
    let host = reg.host();
    let name = format!("{host}/team/multi:1");
    let err = fails_clean(&env, &["pull", &name]);
    assert!(err.contains(&format!("wharf login {host}")), "{err}");

    let out = login(&env, &host, "alice", "wrong");
    assert!(
        out.status.success(),
        "login only stores: {}",
        text(&out.stderr)
    );
    let err = fails_clean(&env, &["pull", &name]);
    assert!(err.contains("credentials"), "{err}");

    let out = login(&env, &host, "alice", "s3cret");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "Login Succeeded\n");
    let file = env.dir.path().join("home/.config/wharf/auth.json");
    let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let doc: serde_json::Value = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
    assert!(doc["auths"][&host]["auth"].is_string(), "{doc}");
    ok(&env, &["pull", &name]);
    assert_eq!(ok(&env, &["run", "--rm", &name]), "hi\n");

    assert!(ok(&env, &["logout", &host]).contains("Removing login credentials"));
    ok(&env, &["rmi", &name]);
    fails_clean(&env, &["pull", &name]);

    // An existing docker login is read too.
    let docker = env.dir.path().join("home/.docker");
    fs::create_dir_all(&docker).unwrap();
    fs::write(
        docker.join("config.json"),
        format!(r#"{{"auths":{{"{host}":{{"auth":"YWxpY2U6czNjcmV0"}}}}}}"#),
    )
    .unwrap();
    ok(&env, &["pull", &name]);
}

#[test]
fn token_auth_follows_the_challenge_to_the_token_server() {
    require_root!();
    let env = Env::new();
    let reg = Registry::token(&env, "bob", "hunter2");
    reg.push(&layout_ref("multi"), "team/multi:1", false);
    let host = reg.host();
    let name = format!("{host}/team/multi:1");
    let err = fails_clean(&env, &["pull", &name]);
    assert!(err.contains(&format!("wharf login {host}")), "{err}");
    let out = login(&env, &host, "bob", "hunter2");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let before = match &reg.auth {
        registry_support::Auth::Token(t) => t.served.load(std::sync::atomic::Ordering::SeqCst),
        _ => unreachable!(),
    };
    ok(&env, &["pull", &name]);
    let after = match &reg.auth {
        registry_support::Auth::Token(t) => t.served.load(std::sync::atomic::Ordering::SeqCst),
        _ => unreachable!(),
    };
    assert!(after > before, "the token server was asked");
    assert_eq!(ok(&env, &["run", "--rm", &name]), "hi\n");
}

/// The digest of the first layer of `name`'s manifest in `reg`.
fn first_layer(reg: &Registry, name: &str) -> (String, u64) {
    let m = reg.inspect(name, true);
    let l = &m["layers"][0];
    (
        l["digest"].as_str().unwrap().to_string(),
        l["size"].as_u64().unwrap(),
    )
}

#[test]
fn a_tampered_or_truncated_blob_is_refused_and_leaves_nothing() {
    require_root!();
    let env = Env::new();
    let reg = Registry::plain(&env);
    reg.push(&layout_ref("multi"), "wharf/multi:1", false);
    let name = format!("{}/wharf/multi:1", reg.host());
    let (digest, _) = first_layer(&reg, "wharf/multi:1");
    let file = reg.blob_file(&digest);
    let good = fs::read(&file).unwrap();
    // Same length, one byte changed (inside the gzip stream: decoding may fail first).
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    fs::write(&file, &bad).unwrap();
    let err = fails_clean(&env, &["pull", &name]);
    assert!(err.contains("layer 1") && err.contains(&name), "{err}");
    // Cut short.
    fs::write(&file, &good[..good.len() / 2]).unwrap();
    let err = fails_clean(&env, &["pull", &name]);
    assert!(err.contains("layer 1"), "{err}");
    // Restored: the next pull works.
    fs::write(&file, &good).unwrap();
    ok(&env, &["pull", &name]);
}

#[test]
fn misbehaving_registries_give_clear_errors_and_leave_nothing() {
    require_root!();
    let env = Env::new();
    // Hangs: accepts, never answers (WHARF_REGISTRY_TIMEOUT=3 in these tests).
    let hang = Fake::start(|_| None);
    let err = fails_clean(&env, &["pull", &format!("{}/x/y:1", hang.host())]);
    assert!(err.contains("in time"), "{err}");
    // Redirects to itself.
    let lp = Fake::start(|path| Some(http("302 Found", &[("Location", path)], b"")));
    let err = fails_clean(&env, &["pull", &format!("{}/x/y:1", lp.host())]);
    assert!(err.contains("redirect"), "{err}");
    // 401 without credentials.
    let locked = Fake::start(|_| {
        Some(http(
            "401 Unauthorized",
            &[("WWW-Authenticate", r#"Basic realm="x""#)],
            br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        ))
    });
    let err = fails_clean(&env, &["pull", &format!("{}/x/y:1", locked.host())]);
    assert!(
        err.contains(&format!("wharf login {}", locked.host())),
        "{err}"
    );
    // A manifest over 4 MiB.
    let big = Fake::start(|path| {
        if path == "/v2/" {
            return Some(http("200 OK", &[], b"{}"));
        }
        let mut body = br#"{"schemaVersion":2,"pad":""#.to_vec();
        body.extend(std::iter::repeat_n(b'x', 5 << 20));
        body.extend_from_slice(br#""}"#);
        Some(http(
            "200 OK",
            &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
            &body,
        ))
    });
    let err = fails_clean(&env, &["pull", &format!("{}/x/y:1", big.host())]);
    assert!(err.contains("4 MiB"), "{err}");
    // An unknown media type.
    let odd = Fake::start(|path| {
        if path == "/v2/" {
            return Some(http("200 OK", &[], b"{}"));
        }
        Some(http(
            "200 OK",
            &[("Content-Type", "application/vnd.example.thing+json")],
            br#"{"schemaVersion":2,"mediaType":"application/vnd.example.thing+json","config":{"mediaType":"x","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2},"layers":[]}"#,
        ))
    });
    let err = fails_clean(&env, &["pull", &format!("{}/x/y:1", odd.host())]);
    assert!(err.contains("application/vnd.example.thing+json"), "{err}");
}

#[test]
fn a_pull_killed_mid_layer_leaves_the_store_consistent_and_the_next_pull_works() {
    require_root!();
    let env = Env::new();
    let reg = Registry::plain(&env);
    reg.push(&layout_ref("multi"), "wharf/multi:1", false);
    let proxy = StallProxy::start(reg.port, 300_000);
    let via = format!("127.0.0.1:{}/wharf/multi:1", proxy.port);
    let mut child = wharf(&env)
        .args(["pull", "-q", &via])
        .env("WHARF_REGISTRY_TIMEOUT", "600")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let tmp = env.root.join("tmp");
    wait_until(30, "a layer being unpacked", || {
        let staged: Vec<PathBuf> = entries(&tmp)
            .into_iter()
            .filter(|e| e.starts_with("layer-") && !e.ends_with(".lock"))
            .map(|e| tmp.join(e).join("layer"))
            .collect();
        staged.iter().any(|l| entries(l).len() > 1).then_some(())
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.wait();
    // The next command's recovery removes the staging; nothing was recorded.
    assert_store_empty(&env);
    let name = format!("{}/wharf/multi:1", reg.host());
    ok(&env, &["pull", &name]);
    assert_eq!(ok(&env, &["run", "--rm", &name]), "hi\n");
    let _ = Path::new("");
}

#[test]
fn push_sends_only_missing_blobs_and_is_reproducible() {
    require_root!();
    let env = Env::new();
    let reg = Registry::plain(&env);
    // SOURCE_DATE_EPOCH fixes the config's `created`: two stores make the same image.
    let import = |e: &Env| {
        let out = e
            .wharf()
            .env("SOURCE_DATE_EPOCH", "0")
            .args(["import", "-q"])
            .arg(common::busybox_tar())
            .arg("app:1")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    import(&env);
    let dest = format!("{}/team/app:1", reg.host());
    let out = ok(&env, &["push", "app:1", &dest]);
    assert!(out.contains(": Pushed"), "{out}");
    let digest = out
        .lines()
        .last()
        .and_then(|l| l.split("digest: ").nth(1))
        .unwrap()
        .to_string();
    assert_eq!(
        reg.inspect("team/app:1", false)["Digest"],
        digest.as_str(),
        "skopeo sees it"
    );
    let uploads = "\"POST /v2/team/app/blobs/uploads/";
    let sent = reg.requests(uploads);
    assert!(sent >= 1, "the access log counts uploads");
    // Each blob in one PUT, as containerd pushes: no chunked PATCHes.
    assert_eq!(reg.requests("\"PATCH /v2/team/app/blobs/uploads/"), 0);
    assert_eq!(reg.requests("\"PUT /v2/team/app/blobs/uploads/"), sent);
    let again = ok(&env, &["push", "app:1", &dest]);
    assert!(
        again.contains("Layer already exists") && !again.contains(": Pushed"),
        "{again}"
    );
    assert_eq!(reg.requests(uploads), sent, "the second push sends no blob");
    assert!(again.ends_with(&format!("digest: {digest}\n")), "{again}");
    // Another store importing the same tarball pushes the same digest.
    let other = Env::new();
    import(&other);
    assert_eq!(ok(&other, &["push", "-q", "app:1", &dest]).trim(), digest);
    // And it pulls back and runs.
    let third = Env::new();
    ok(&third, &["pull", &dest]);
    assert_eq!(ok(&third, &["run", "--rm", &dest, "echo", "ok"]), "ok\n");
    // A pushed multi-layer image keeps its whiteouts and opaque dirs.
    ok(
        &env,
        &[
            "load",
            "-i",
            &image_fixtures()
                .join("multi-docker.tar")
                .display()
                .to_string(),
        ],
    );
    let m = format!("{}/team/multi:1", reg.host());
    ok(&env, &["push", "wharf.test/multi:1", &m]);
    ok(&third, &["pull", &m]);
    assert_eq!(
        ok(
            &third,
            &[
                "run",
                "--rm",
                &m,
                "sh",
                "-c",
                "ls /data /opq; cat /base/link"
            ]
        ),
        "/data:\nkeep\n\n/opq:\nnew\nlower\n"
    );
}

#[test]
fn push_to_a_registry_with_auth_needs_a_login() {
    require_root!();
    let env = Env::new();
    let reg = Registry::basic(&env, "alice", "s3cret");
    env.import(&common::busybox_tar(), "app:1");
    let dest = format!("{}/team/app:1", reg.host());
    let out = run(&env, &["push", "app:1", &dest]);
    let err = text(&out.stderr);
    assert_eq!(code(&out), 1, "{err}");
    assert!(
        err.contains(&format!("wharf login {}", reg.host())),
        "{err}"
    );
    assert!(login(&env, &reg.host(), "alice", "s3cret").status.success());
    ok(&env, &["push", "app:1", &dest]);
    assert!(reg.inspect("team/app:1", false)["Digest"].is_string());
}

/// A manifest pulling `reference` as `web:1.4`, for a container `web` that keeps running.
fn pull_manifest(env: &Env, reference: &str, image: &str) -> PathBuf {
    let dir = env.dir.path().join("m");
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pulled.toml");
    fs::write(
        &path,
        format!(
            "[images.web]\nref = \"{reference}\"\ntag = \"web:1.4\"\n\n\
             [containers.web]\nimage = \"{image}\"\ncommand = {}\n",
            common::SLEEPER
        ),
    )
    .unwrap();
    path
}

fn container_image(env: &Env, name: &str) -> String {
    let out = ok(env, &["inspect", name]);
    let v = common::json(&out);
    let v = if v.is_array() { v[0].clone() } else { v };
    v["Image"].as_str().unwrap_or_default().to_string()
}

fn short_digest(d: &str) -> String {
    format!("sha256:{}…", &d.trim_start_matches("sha256:")[..12])
}

#[test]
fn apply_pulls_a_ref_once_and_pull_moves_it_to_a_new_digest() {
    require_root!();
    let env = Env::new();
    let _c = common::Cleanup::new(&env, &["web"]);
    let mut reg = Registry::plain(&env);
    reg.push(&layout_ref("multi"), "team/web:1.4", false);
    let old = reg.inspect("team/web:1.4", false)["Digest"]
        .as_str()
        .unwrap()
        .to_string();
    let reference = format!("{}/team/web:1.4", reg.host());
    let m = pull_manifest(&env, &reference, "web:1.4");
    let m = m.to_str().unwrap();

    // Reads first: they pull nothing and write nothing.
    ok(&env, &["images"]);
    let before = env.db_bytes();
    let out = ok(&env, &["apply", "--dry-run", "-f", m]);
    assert!(
        out.contains(&format!("+ pull web:1.4 from {reference}")),
        "{out}"
    );
    assert_eq!(
        code(&run(&env, &["diff", "-f", m])),
        2,
        "diff sees a change"
    );
    assert_eq!(env.db_bytes(), before, "--dry-run and diff write nothing");
    assert!(
        entries(&env.root.join("layers")).is_empty(),
        "nothing pulled"
    );

    let out = ok(&env, &["apply", "-f", m]);
    assert!(out.contains("+ pull web:1.4"), "{out}");
    let first = layout_image_id("multi");
    assert_eq!(
        format!(
            "sha256:{}",
            container_image(&env, "web").trim_start_matches("sha256:")
        ),
        first
    );
    // The generation records the digest the tag had.
    let gens = common::json(&ok(
        &env,
        &["--format", "json", "history", "--generations", "web"],
    ));
    assert!(
        gens.to_string().contains(&format!("team/web@{old}")),
        "the generation keeps the pulled digest: {gens}"
    );

    // Re-applying needs no registry: the tag was resolved once.
    reg.stop();
    let out = ok(&env, &["apply", "-f", m]);
    assert!(out.contains("No changes"), "{out}");

    // A new image under the same tag: only --pull sees it.
    reg.restart();
    reg.push(&layout_ref("deep"), "team/web:1.4", false);
    let new = reg.inspect("team/web:1.4", false)["Digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(old, new);
    let out = ok(&env, &["apply", "-f", m]);
    assert!(
        out.contains("No changes"),
        "without --pull the digest stands: {out}"
    );
    ok(&env, &["images"]);
    let before = env.db_bytes();
    let line = format!(
        "image web:1.4 {} → {}",
        short_digest(&old),
        short_digest(&new)
    );
    let out = ok(&env, &["apply", "--dry-run", "--pull", "-f", m]);
    assert!(
        out.contains("~ recreate web") && out.contains(&line),
        "{out}"
    );
    assert_eq!(env.db_bytes(), before, "--dry-run --pull only asks");
    let out = ok(&env, &["apply", "--pull", "-f", m]);
    assert!(
        out.contains("~ recreate web") && out.contains(&line),
        "{out}"
    );
    assert_eq!(
        format!(
            "sha256:{}",
            container_image(&env, "web").trim_start_matches("sha256:")
        ),
        layout_image_id("deep")
    );
    let out = ok(&env, &["apply", "--pull", "-f", m]);
    assert!(out.contains("No changes"), "the same digest again: {out}");

    // Rollback returns to the bytes the first generation ran, with no registry.
    reg.stop();
    ok(&env, &["rollback", "web"]);
    assert_eq!(
        format!(
            "sha256:{}",
            container_image(&env, "web").trim_start_matches("sha256:")
        ),
        first
    );
    // Back to the new one, the first image removed: a rollback to it pulls the digest
    // its generation recorded.
    reg.restart();
    ok(&env, &["rollback", "web"]);
    ok(&env, &["rmi", &first]);
    assert!(run(&env, &["image", "inspect", &first]).status.code() != Some(0));
    ok(&env, &["rollback", "web", "--to", "1"]);
    assert_eq!(
        format!(
            "sha256:{}",
            container_image(&env, "web").trim_start_matches("sha256:")
        ),
        first,
        "pulled again by the recorded digest"
    );
    assert!(entries(&env.root.join("tmp")).is_empty());
}

#[test]
fn a_digest_ref_is_never_asked_again() {
    require_root!();
    let env = Env::new();
    let _c = common::Cleanup::new(&env, &["web"]);
    let mut reg = Registry::plain(&env);
    reg.push(&layout_ref("multi"), "team/pin:1", false);
    let digest = reg.inspect("team/pin:1", false)["Digest"]
        .as_str()
        .unwrap()
        .to_string();
    let reference = format!("{}/team/pin@{digest}", reg.host());
    // The container names the image by the ref itself.
    let m = pull_manifest(&env, &reference, &reference);
    let m = m.to_str().unwrap();
    let out = ok(&env, &["apply", "-f", m]);
    assert!(
        out.contains(&format!("({})", short_digest(&digest))),
        "{out}"
    );
    assert_eq!(
        format!(
            "sha256:{}",
            container_image(&env, "web").trim_start_matches("sha256:")
        ),
        layout_image_id("multi")
    );
    // The tag moves in the registry, and the registry goes away: --pull asks nothing.
    reg.push(&layout_ref("deep"), "team/pin:1", false);
    reg.stop();
    let out = ok(&env, &["apply", "--pull", "-f", m]);
    assert!(out.contains("No changes"), "{out}");
    assert_eq!(
        ok(&env, &["images", "-q", "--no-trunc", "web:1.4"]).trim(),
        layout_image_id("multi")
    );
}

#[test]
fn bad_image_refs_in_manifests_are_positioned_errors() {
    require_root!();
    let env = Env::new();
    let dir = env.dir.path().join("m");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("root.tar"), b"").unwrap();
    for (body, want) in [
        (
            "[images.web]\nref = \"Bad:Ref:x\"\n",
            "not a valid image reference",
        ),
        (
            "[images.web]\nref = \"127.0.0.1:5000/a:1\"\nsource = \"root.tar\"\ntag = \"a:1\"\n",
            "both `source` and `ref`",
        ),
        (
            "[images.web]\ntag = \"a:1\"\n",
            "missing the required key `source`",
        ),
        (
            "[images.web]\nref = \"127.0.0.1:5000/a:1\"\ncmd = [\"sh\"]\n",
            "`cmd` is for a tarball image",
        ),
        (
            "[images.web]\nsource = \"root.tar\"\n",
            "required key `tag`",
        ),
    ] {
        let path = dir.join("bad.toml");
        fs::write(&path, body).unwrap();
        let out = run(&env, &["validate", "-f", path.to_str().unwrap()]);
        let err = text(&out.stderr);
        assert_eq!(code(&out), 1, "{body}: {err}");
        assert!(err.contains(want), "{body}: {err}");
        assert!(err.contains("bad.toml:"), "file:line:col: {body}: {err}");
    }
    // A container may name the ref itself: validate knows the tag the pull gives.
    fs::write(
        dir.join("ok.toml"),
        "[images.web]\nref = \"127.0.0.1:5000/team/web:1.4\"\n\n[containers.web]\nimage = \"127.0.0.1:5000/team/web:1.4\"\n",
    )
    .unwrap();
    ok(
        &env,
        &["validate", "-f", dir.join("ok.toml").to_str().unwrap()],
    );
    assert!(!env.root.join("layers").exists() || entries(&env.root.join("layers")).is_empty());
}

#[test]
fn push_mounts_pulled_blobs_and_sends_a_regenerated_one_once() {
    require_root!();
    let env = Env::new();
    let reg = Registry::plain(&env);
    reg.push(&layout_ref("multi"), "team/multi:1", false);
    let original = reg.inspect("team/multi:1", false)["Digest"]
        .as_str()
        .unwrap()
        .to_string();
    let src = format!("{}/team/multi:1", reg.host());
    ok(&env, &["pull", "-q", &src]);
    // Another repository of the same registry: every layer is mounted, none sent, and the
    // image keeps its manifest (the same digest).
    let out = ok(
        &env,
        &["push", &src, &format!("{}/other/multi:1", reg.host())],
    );
    let mounted = out.matches(": Mounted from 127.0.0.1").count();
    assert_eq!(mounted, 4, "{out}");
    assert!(!out.contains(": Pushed"), "{out}");
    assert!(out.ends_with(&format!("digest: {original}\n")), "{out}");
    // The layers' mounts and the config's.
    assert_eq!(
        reg.requests("\"POST /v2/other/multi/blobs/uploads/?mount="),
        5
    );
    assert_eq!(
        reg.requests("\"PATCH /v2/other/multi/blobs/uploads/"),
        0,
        "no blob bytes sent"
    );
    // Another registry: the layers are made from their directories and sent once; the
    // second push HEADs the blobs made the first time and sends nothing.
    let other = Registry::plain(&env);
    let dest = format!("{}/team/multi:1", other.host());
    let first = ok(&env, &["push", &src, &dest]);
    assert_eq!(first.matches(": Pushed").count(), 4, "{first}");
    let uploads = "\"POST /v2/team/multi/blobs/uploads/";
    let sent = other.requests(uploads);
    let again = ok(&env, &["push", &src, &dest]);
    assert_eq!(again.matches("Layer already exists").count(), 4, "{again}");
    assert_eq!(other.requests(uploads), sent, "nothing sent again");
    assert_eq!(
        first.lines().last(),
        again.lines().last(),
        "the same digest on a second push"
    );
    // What was sent pulls back and runs in another store.
    let third = Env::new();
    ok(&third, &["pull", &dest]);
    assert_eq!(ok(&third, &["run", "--rm", &dest]), "hi\n");
}

#[test]
fn pulled_and_loaded_layers_are_bounded_by_the_import_limit() {
    require_root!();
    let env = Env::new();
    let reg = Registry::plain(&env);
    reg.push(&layout_ref("multi"), "team/multi:1", false);
    let name = format!("{}/team/multi:1", reg.host());
    // The busybox layer's files are over 64 KiB.
    fs::create_dir_all(&env.root).unwrap();
    fs::write(
        env.root.join("config.toml"),
        "[import]\nmax_size = \"64KiB\"\n",
    )
    .unwrap();
    let err = fails_clean(&env, &["pull", &name]);
    assert!(
        err.contains("import limit of 65536 bytes") && err.contains("max_size"),
        "{err}"
    );
    let archive = image_fixtures().join("multi-docker.tar");
    let err = fails_clean(&env, &["load", "-i", archive.to_str().unwrap()]);
    assert!(err.contains("import limit of 65536 bytes"), "{err}");
    // Under a limit that fits, both work.
    fs::write(
        env.root.join("config.toml"),
        "[import]\nmax_size = \"64MiB\"\n",
    )
    .unwrap();
    ok(&env, &["pull", "-q", &name]);
    ok(&env, &["load", "-i", archive.to_str().unwrap()]);
}
