//! The README's flagship example, as root: `manifests/make-images.sh` builds the images and
//! `manifests/web.toml` serves a real page, so its own health check passes.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;

use common::{Env, inspect, s, wait_until};

/// A port nobody listens on now (bound, then released).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[test]
fn web_toml_serves_its_page_and_turns_healthy() {
    require_root!();
    let env = Env::new();
    let top = env.dir.path().join("checkout");
    fs::create_dir_all(top.join("manifests")).expect("mkdir");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/make-images.sh");
    let st = std::process::Command::new("bash")
        .arg(script)
        .arg(top.join("images"))
        .status()
        .expect("make-images.sh");
    assert!(st.success());
    // The example as shipped, on a free port of 127.0.0.1 and probed every second.
    let port = free_port();
    let text = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/web.toml"))
        .expect("web.toml")
        .replace("\"-p\", \"8080\"", &format!("\"-p\", \"127.0.0.1:{port}\""))
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
        .replace("interval = \"10s\"", "interval = \"1s\"");
    assert!(
        text.contains(&port.to_string()),
        "the example still listens on 8080"
    );
    let m = top.join("manifests/web.toml");
    fs::write(&m, text).expect("write");
    env.ok(&["apply", "-f", s(&m)]);
    let guard = Down(&env, m.clone());
    wait_until(60, "web to be healthy", || {
        (inspect(&env, "web")["Health"] == "healthy").then_some(())
    });
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("send");
    let mut page = String::new();
    conn.read_to_string(&mut page).expect("read");
    assert!(
        page.starts_with("HTTP/1.") && page.contains(" 200 "),
        "{page}"
    );
    assert!(page.contains("Hello from wharf"), "{page}");
    assert_eq!(
        inspect(&env, "web")["RestartCount"],
        0,
        "never killed by its health check"
    );
    drop(guard);
}

/// `wharf down -f M` when dropped, so a failing test leaves no server behind.
struct Down<'a>(&'a Env, std::path::PathBuf);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["down", "-f", s(&self.1)]);
    }
}
