//! Container networking, end to end, as root, with the real netavark and aardvark-dns: published
//! ports from the host (tcp and udp), names between containers on a user network, a shared
//! network namespace, port conflicts, teardown after a killed monitor, and no leftovers after
//! 200 runs.
//!
//! Traffic goes only to 127.0.0.1 and to the containers and networks these tests create. The
//! tests take one lock: they share the host's firewall, and their roots' default networks
//! pick their /16s without seeing each other's (their bridges come and go).

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::{Cleanup, Env, code, inspect, json, probes, running_pid, setup, wait_until};

static NET: Mutex<()> = Mutex::new(());

/// The lock, and a root whose containers join the default network unless told otherwise;
/// None (the test is skipped) without root, or without nft and aardvark-dns (the native
/// backend's tools).
fn net_env() -> Option<(MutexGuard<'static, ()>, Env)> {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root");
        return None;
    }
    let have = |paths: &[&str]| paths.iter().any(|p| Path::new(p).exists());
    if !have(&["/usr/sbin/nft", "/sbin/nft"])
        || !have(&[
            "/usr/libexec/podman/aardvark-dns",
            "/usr/lib/podman/aardvark-dns",
        ])
    {
        eprintln!("skipped: needs nft and aardvark-dns (apt-get install nftables aardvark-dns)");
        return None;
    }
    let guard = NET.lock().unwrap_or_else(|e| e.into_inner());
    let env = setup();
    fs::write(
        env.root.join("config.toml"),
        "[network]\ndefault = \"bridge\"\n",
    )
    .expect("config");
    Some((guard, env))
}

/// A static directory served by busybox httpd in the tests' containers.
fn www(env: &Env, body: &str) -> String {
    let dir = env.dir.path().join("www");
    fs::create_dir_all(&dir).expect("www");
    fs::write(dir.join("index.html"), body).expect("index");
    format!("{}:/www:ro", dir.display())
}

/// GET / from 127.0.0.1:port, retried until it answers (the server starts after `run -d`).
fn http_get(port: u16) -> String {
    wait_until(20, "the published port to answer", || {
        let mut c = TcpStream::connect(("127.0.0.1", port)).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        c.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
        let mut out = String::new();
        c.read_to_string(&mut out).ok()?;
        out.contains("200 OK").then_some(out)
    })
}

/// A port of 127.0.0.1 that was free a moment ago (the kernel's pick).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `url` from inside the running container `from`, retried until it answers (names on a
/// network with DNS resolve once aardvark-dns has read the new entries).
fn get_from(env: &Env, from: &str, url: &str) -> String {
    wait_until(20, &format!("{url} from {from}"), || {
        let o = env.run(&["exec", from, "wget", "-qO-", url]);
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
    })
}

/// A host command's standard output ("" when it cannot run).
fn output_of(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// What is left of the root's networking: namespace files, handed-out addresses (from
/// `network inspect`), firewall rules naming a container, aardvark-dns entries.
fn leftovers(env: &Env) -> Vec<String> {
    let mut left = Vec::new();
    if let Ok(d) = fs::read_dir(env.root.join("netns")) {
        left.extend(d.flatten().map(|e| format!("netns {}", e.path().display())));
    }
    let held: i64 = rusqlite::Connection::open(env.root.join("wharf.db"))
        .and_then(|c| c.query_row("SELECT count(*) FROM net_addresses", [], |r| r.get(0)))
        .unwrap_or(0);
    if held > 0 {
        left.push(format!("{held} addresses handed out"));
    }
    let nets = json(&env.ok(&["--format", "json", "network", "ls"]));
    for n in nets.as_array().expect("list") {
        for (id, c) in n["Containers"].as_object().expect("containers") {
            left.push(format!(
                "address {} of {id} on {}",
                c["IPv4Address"], n["Name"]
            ));
        }
        if let Some(iface) = n["NetworkInterface"].as_str()
            && let Ok(ports) = fs::read_dir(format!("/sys/class/net/{iface}/brif"))
        {
            left.extend(
                ports
                    .flatten()
                    .map(|p| format!("veth {:?} on {iface}", p.file_name())),
            );
        }
    }
    let ids: Vec<String> = env
        .ok(&["ps", "-aq", "--no-trunc"])
        .lines()
        .map(String::from)
        .collect();
    // netavark's rules name the container; the native backend's published ports are
    // elements of the `ip wharf` maps, leading to an address on one of the root's networks.
    let rules = output_of("iptables-save", &[]);
    for l in rules.lines() {
        if ids.iter().any(|id| l.contains(id.as_str())) {
            left.push(format!("rule {l}"));
        }
    }
    let subnets: Vec<ipnet::Ipv4Net> = nets
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|n| n["Subnets"][0]["Subnet"].as_str()?.parse().ok())
        .collect();
    for map in ["ports_any", "ports_ip"] {
        let out = output_of("nft", &["list", "map", "ip", "wharf", map]);
        for word in out.split(|c: char| c.is_whitespace() || c == ',' || c == '{' || c == '}') {
            if let Ok(a) = word.parse::<std::net::Ipv4Addr>()
                && subnets.iter().any(|s| s.contains(&a))
            {
                left.push(format!("port leading to {a} in {map}"));
            }
        }
    }
    if let Ok(d) = fs::read_dir(env.root.join("netavark/aardvark-dns")) {
        for e in d.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name != "aardvark.pid" && fs::metadata(e.path()).is_ok_and(|m| m.len() > 0) {
                let body = fs::read_to_string(e.path()).unwrap_or_default();
                // The first line is the network's gateway; any other is a container.
                if body.lines().count() > 1 {
                    left.push(format!("dns entries in {name}: {body}"));
                }
            }
        }
    }
    left
}

/// Asserts that [`leftovers`] empties: the host ends of the veths of namespaces that were
/// unmounted go when the kernel has cleaned those namespaces up, in the background.
fn no_leftovers(env: &Env) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = leftovers(env);
        if left.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left behind: {left:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_published_tcp_port_answers_on_127_0_0_1_and_ps_port_and_inspect_show_it() {
    let Some((_g, env)) = net_env() else { return };
    let _c = Cleanup::new(&env, &["web"]);
    // Loopback only by default: a container that publishes is on the bridge all the same.
    fs::write(
        env.root.join("config.toml"),
        "[network]\ndefault = \"none\"\n",
    )
    .expect("config");
    let vol = www(&env, "hello from the container\n");
    // A free port, found by the kernel.
    let port = free_port();
    env.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        &format!("{port}:80"),
        "-v",
        &vol,
        "bb:1",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    assert!(http_get(port).contains("hello from the container"));
    // The request and the page went through the container's interface.
    let st = json(&env.ok(&["--format", "json", "stats", "--no-stream"]));
    let net = st[0]["NetIO"].as_str().expect("NetIO").to_string();
    assert!(net != "0B / 0B" && net != "--", "{net}");
    let ps = env.ok(&["ps"]);
    assert!(ps.contains(&format!("0.0.0.0:{port}->80/tcp")), "{ps}");
    assert_eq!(
        env.ok(&["port", "web"]).trim(),
        format!("80/tcp -> 0.0.0.0:{port}")
    );
    assert_eq!(
        env.ok(&["port", "web", "80"]).trim(),
        format!("0.0.0.0:{port}")
    );
    let v = inspect(&env, "web");
    let ns = &v["NetworkSettings"];
    assert_eq!(ns["Ports"]["80/tcp"][0]["HostPort"], port.to_string());
    let ip = ns["Networks"]["wharf"]["IPAddress"]
        .as_str()
        .expect("an address")
        .to_string();
    assert!(ip.starts_with("10."), "{ip}");
    assert_eq!(v["HostConfig"]["NetworkMode"], "bridge");
    // The container sees its own address in /etc/hosts, and the network's resolvers.
    let hosts = env.ok(&["exec", "web", "cat", "/etc/hosts"]);
    assert!(hosts.contains(&ip), "{hosts}");
    // The port is held: another container cannot take it, and says so before it starts.
    let e = env.run(&["run", "--rm", "-p", &format!("{port}:80"), "bb:1", "true"]);
    assert_eq!(code(&e), 125);
    let err = String::from_utf8_lossy(&e.stderr);
    assert!(
        err.contains("already in use") && err.contains(&port.to_string()),
        "{err}"
    );
    env.ok(&["rm", "-f", "web"]);
    no_leftovers(&env);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the port still answers"
    );
}

#[test]
fn a_published_udp_port_answers_and_a_port_in_use_on_the_host_is_refused() {
    let Some((_g, env)) = net_env() else { return };
    let _c = Cleanup::new(&env, &["echo"]);
    let probe = format!("{}:/probe:ro", probes().display());
    // -p 127.0.0.1::PORT/udp: a free host port, picked at start, shown by `port`.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "echo",
        "-p",
        "127.0.0.1::5353/udp",
        "-v",
        &probe,
        "bb:1",
        "/probe/udp-echo",
        "5353",
    ]);
    let line = env.ok(&["port", "echo", "5353/udp"]);
    let hostport: u16 = line
        .trim()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .expect("a port");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let answer = wait_until(20, "the udp echo", || {
        sock.send_to(b"ping", ("127.0.0.1", hostport)).ok()?;
        let mut buf = [0u8; 64];
        let (n, _) = sock.recv_from(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    });
    assert_eq!(answer, "pong:ping");
    env.ok(&["rm", "-f", "echo"]);

    // A port another process of the host holds: a clear error, and nothing left behind.
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap().port();
    let out = env.run(&[
        "run",
        "-d",
        "--name",
        "late",
        "-p",
        &format!("127.0.0.1:{taken}:80"),
        "bb:1",
        "sleep",
        "30",
    ]);
    assert_eq!(code(&out), 125);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("127.0.0.1:{taken}/tcp is already in use")),
        "{err}"
    );
    assert!(
        !inspect(&env, "late")["State"]["Running"]
            .as_bool()
            .unwrap_or(true)
    );
    env.ok(&["rm", "-f", "late"]);
    no_leftovers(&env);
}

#[test]
fn containers_on_a_user_network_reach_each_other_by_name_and_alias_and_share_a_namespace() {
    let Some((_g, env)) = net_env() else { return };
    let _c = Cleanup::new(&env, &["db"]);
    let _n = NetCleanup(&env, "backend");
    env.ok(&["network", "create", "backend", "--subnet", "10.89.207.0/24"]);
    let vol = www(&env, "db says hi\n");
    env.ok(&[
        "run",
        "-d",
        "--name",
        "db",
        "--network",
        "backend",
        "--network-alias",
        "database",
        "-v",
        &vol,
        "bb:1",
        "httpd",
        "-f",
        "-p",
        "5432",
        "-h",
        "/www",
    ]);
    running_pid(&env, "db");
    let ip = inspect(&env, "db")["NetworkSettings"]["Networks"]["backend"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(ip.starts_with("10.89.207."), "{ip}");
    for name in ["db", "database"] {
        let got = wait_until(20, "db to answer by name", || {
            let o = env.run(&[
                "run",
                "--rm",
                "--network",
                "backend",
                "bb:1",
                "wget",
                "-qO-",
                &format!("http://{name}:5432/"),
            ]);
            o.status
                .success()
                .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
        });
        assert_eq!(got, "db says hi\n", "by {name}");
    }
    let resolv = env.ok(&[
        "run",
        "--rm",
        "--network",
        "backend",
        "bb:1",
        "cat",
        "/etc/resolv.conf",
    ]);
    assert!(resolv.contains("nameserver 10.89.207.1"), "{resolv}");
    // container:NAME shares db's namespace: db's server is on its loopback.
    let got = env.ok(&[
        "run",
        "--rm",
        "--network",
        "container:db",
        "bb:1",
        "wget",
        "-qO-",
        "http://127.0.0.1:5432/",
    ]);
    assert_eq!(got, "db says hi\n");
    // On the default network, names do not resolve (as docker's default bridge): resolv.conf
    // names the host's resolvers, so ask the container's own loopback instead (nothing
    // answers there; no query leaves the host).
    let o = env.run(&[
        "run",
        "--rm",
        "--dns",
        "127.0.0.1",
        "bb:1",
        "wget",
        "-T",
        "2",
        "-qO-",
        "http://db:5432/",
    ]);
    assert_ne!(code(&o), 0, "a name resolved on the default network");
    // The network is in use: not removed.
    let e = env.fails(&["network", "rm", "backend"]);
    assert!(e.contains("in use by container db"), "{e}");
    env.ok(&["rm", "-f", "db"]);
    env.ok(&["network", "rm", "backend"]);
    no_leftovers(&env);
}

/// Removes the network when dropped (after the containers' Cleanup, declared before it).
struct NetCleanup<'a>(&'a Env, &'a str);

impl Drop for NetCleanup<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["network", "rm", self.1]);
    }
}

#[test]
fn network_connect_and_disconnect_change_a_running_container() {
    let Some((_g, env)) = net_env() else { return };
    let _c = Cleanup::new(&env, &["app", "peer"]);
    let _n = NetCleanup(&env, "side");
    env.ok(&["network", "create", "side", "--subnet", "10.89.208.0/24"]);
    let vol = www(&env, "peer\n");
    env.ok(&[
        "run",
        "-d",
        "--name",
        "peer",
        "--network",
        "side",
        "-v",
        &vol,
        "bb:1",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    env.ok(&["run", "-d", "--name", "app", "bb:1", "sleep", "300"]);
    running_pid(&env, "app");
    env.ok(&["network", "connect", "side", "app"]);
    let nets = inspect(&env, "app")["NetworkSettings"]["Networks"].clone();
    assert!(
        nets["side"]["IPAddress"]
            .as_str()
            .unwrap()
            .starts_with("10.89.208."),
        "{nets}"
    );
    // The running container's resolv.conf now names side's resolver (the default network
    // has none), so the peer answers by address and by name.
    let resolv = env.ok(&["exec", "app", "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver 10.89.208.1\n"), "{resolv}");
    let peer = inspect(&env, "peer")["NetworkSettings"]["Networks"]["side"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    let hosts = env.ok(&["exec", "app", "cat", "/etc/hosts"]);
    assert!(hosts.contains("10.89.208."), "app's new address: {hosts}");
    for target in [peer.as_str(), "peer"] {
        // (nc: busybox's wget crashes on some refused connections.)
        let get = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc {target} 80");
        let got = wait_until(20, "peer after connect", || {
            let o = env.run(&["exec", "app", "sh", "-c", &get]);
            let out = String::from_utf8_lossy(&o.stdout).into_owned();
            out.contains("200 OK").then_some(out)
        });
        assert!(got.ends_with("peer\n"), "by {target}: {got}");
    }
    let e = env.fails(&["network", "connect", "side", "app"]);
    assert!(e.contains("already on the network side"), "{e}");
    env.ok(&["network", "disconnect", "side", "app"]);
    assert!(inspect(&env, "app")["NetworkSettings"]["Networks"]["side"].is_null());
    let addrs = env.ok(&["exec", "app", "ip", "-o", "-4", "addr"]);
    assert!(!addrs.contains("10.89.208."), "{addrs}");
    let resolv = env.ok(&["exec", "app", "cat", "/etc/resolv.conf"]);
    assert!(!resolv.contains("10.89.208.1"), "{resolv}");
    let e = env.fails(&["network", "disconnect", "wharf", "app"]);
    assert!(e.contains("last one"), "{e}");
    env.ok(&["rm", "-f", "app", "peer"]);
    no_leftovers(&env);
}

#[test]
fn a_killed_monitor_leaves_nothing_once_the_next_command_recovers() {
    let Some((_g, env)) = net_env() else { return };
    let _c = Cleanup::new(&env, &["victim"]);
    env.ok(&[
        "run",
        "-d",
        "--name",
        "victim",
        "-p",
        "127.0.0.1::80",
        "bb:1",
        "sleep",
        "300",
    ]);
    running_pid(&env, "victim");
    assert!(
        !leftovers(&env).is_empty(),
        "a running container holds an address and a namespace"
    );
    let monitor = common::monitor_pid(&env, "victim");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the monitor");
    wait_until(20, "the monitor to die", || {
        (!Path::new(&format!("/proc/{monitor}")).exists()).then_some(())
    });
    // A verb that changes state recovers: the network is torn down with the run.
    env.ok(&["volume", "prune", "-f"]);
    no_leftovers(&env);
    // And it starts again with its network.
    env.ok(&["start", "victim"]);
    running_pid(&env, "victim");
    assert!(!env.ok(&["port", "victim"]).is_empty());
    env.ok(&["rm", "-f", "victim"]);
    no_leftovers(&env);
}

#[test]
fn publish_all_takes_the_images_exposed_ports_and_host_mode_keeps_the_hosts_name() {
    let Some((_g, env)) = net_env() else { return };
    let _c = Cleanup::new(&env, &["pa"]);
    common::import_with(
        &env,
        &["EXPOSE 80/tcp 53/udp"],
        &common::busybox_tar(),
        "exp:1",
    );
    env.ok(&["run", "-d", "--name", "pa", "-P", "exp:1", "sleep", "300"]);
    let lines = env.ok(&["port", "pa"]);
    assert!(
        lines.contains("80/tcp -> 0.0.0.0:") && lines.contains("53/udp -> 0.0.0.0:"),
        "{lines}"
    );
    env.ok(&["rm", "-f", "pa"]);
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let inside = env.ok(&["run", "--rm", "--network", "host", "bb:1", "hostname"]);
    assert_eq!(inside.trim(), host);
    let e = env.run(&[
        "run",
        "--rm",
        "--network",
        "host",
        "-p",
        "80:80",
        "bb:1",
        "true",
    ]);
    assert_eq!(code(&e), 125);
    assert!(String::from_utf8_lossy(&e.stderr).contains("cannot publish ports"));
    // --add-host and --dns reach /etc/hosts and resolv.conf.
    let hosts = env.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--add-host",
        "gw.test:10.1.2.3",
        "--dns",
        "10.9.9.9",
        "bb:1",
        "cat",
        "/etc/hosts",
        "/etc/resolv.conf",
    ]);
    assert!(
        hosts.contains("10.1.2.3\tgw.test") && hosts.contains("nameserver 10.9.9.9"),
        "{hosts}"
    );
    no_leftovers(&env);
}

#[test]
fn a_restart_policy_brings_the_same_ports_back() {
    let Some((_g, env)) = net_env() else { return };
    let _c = Cleanup::new(&env, &["rs"]);
    env.ok(&[
        "run",
        "-d",
        "--name",
        "rs",
        "--restart",
        "on-failure:1",
        "-p",
        "127.0.0.1::80",
        "bb:1",
        "sh",
        "-c",
        "sleep 1; exit 3",
    ]);
    let before = env.ok(&["port", "rs"]);
    wait_until(30, "the restart", || {
        (inspect(&env, "rs")["RestartCount"].as_i64() == Some(1)).then_some(())
    });
    if inspect(&env, "rs")["State"]["Running"] == true {
        assert_eq!(env.ok(&["port", "rs"]), before, "a restart keeps its ports");
    }
    wait_until(30, "the end", || {
        (inspect(&env, "rs")["State"]["Status"] == "exited").then_some(())
    });
    no_leftovers(&env);
}

#[test]
fn two_hundred_runs_with_a_published_port_leave_nothing_behind() {
    let Some((_g, env)) = net_env() else { return };
    for i in 0..200 {
        let out = env.run(&["run", "--rm", "-p", "127.0.0.1::80", "bb:1", "true"]);
        assert_eq!(
            code(&out),
            0,
            "run {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    no_leftovers(&env);
    assert_eq!(env.ok(&["ps", "-aq"]), "");
}

/// A manifest of project `name`: `db` serving on 5432, `front` published on 127.0.0.1:port.
fn project(env: &Env, name: &str, subnet: &str, port: u16) -> std::path::PathBuf {
    let vol = www(env, "from the project\n");
    let path = env.dir.path().join(format!("{name}.toml"));
    fs::write(
        &path,
        format!(
            "project = \"{name}\"\n\n[networks.default]\nsubnet = \"{subnet}\"\n\n\
             [containers.{name}-db]\nimage = \"bb:1\"\n\
             command = [\"httpd\", \"-f\", \"-p\", \"5432\", \"-h\", \"/www\"]\nvolumes = [\"{vol}\"]\n\n\
             [containers.{name}-front]\nimage = \"bb:1\"\n\
             command = [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]\nvolumes = [\"{vol}\"]\n\
             ports = [\"127.0.0.1:{port}:80\"]\n"
        ),
    )
    .expect("manifest");
    path
}

#[test]
fn a_project_gets_its_own_network_its_names_resolve_and_down_removes_it() {
    let Some((_g, env)) = net_env() else { return };
    let _c = Cleanup::new(&env, &["pn-db", "pn-front", "pm-db", "pm-front"]);
    let (p1, p2) = (free_port(), free_port());
    let m = project(&env, "pn", "10.89.210.0/24", p1);
    let out = env.ok(&["apply", "-f", common::s(&m)]);
    assert!(
        out.contains("+ network pn_default (10.89.210.0/24)"),
        "{out}"
    );
    assert!(http_get(p1).contains("from the project"));
    // The containers of one project reach each other by name.
    assert_eq!(
        get_from(&env, "pn-front", "http://pn-db:5432/"),
        "from the project\n"
    );
    // A changed port: the plan says so field by field, and the container is recreated.
    let text = fs::read_to_string(&m)
        .unwrap()
        .replace(&format!(":{p1}:"), &format!(":{p2}:"));
    fs::write(&m, text).unwrap();
    let out = env.ok(&["apply", "-f", common::s(&m)]);
    let change = format!("ports [\"127.0.0.1:{p1}:80\"] → [\"127.0.0.1:{p2}:80\"]");
    assert!(
        out.contains("~ recreate pn-front") && out.contains(&change),
        "{out}"
    );
    assert!(http_get(p2).contains("from the project"));
    // Another project claiming the same host port: a conflict in the plan, nothing started.
    let other = project(&env, "pm", "10.89.211.0/24", p2);
    let o = env.run(&["apply", "-f", common::s(&other)]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        all.contains(&format!(
            "host port {p2}/tcp is published by container pn-front of project pn"
        )),
        "{all}"
    );
    assert!(
        env.run(&["inspect", "pm-front"]).status.code() != Some(0),
        "pm-front was created"
    );
    env.ok(&["down", "-f", common::s(&other)]);
    env.ok(&["down", "-f", common::s(&m)]);
    let nets = env.ok(&["network", "ls", "-q"]);
    assert!(
        !nets.contains("pn_default") && !nets.contains("pm_default"),
        "{nets}"
    );
    no_leftovers(&env);
}

#[test]
fn the_netavark_backend_publishes_ports_and_resolves_names_too() {
    let Some((_g, env)) = net_env() else { return };
    if !["/usr/libexec/podman/netavark", "/usr/lib/podman/netavark"]
        .iter()
        .any(|p| Path::new(p).exists())
    {
        eprintln!("skipped: netavark is not installed (apt-get install netavark)");
        return;
    }
    fs::write(
        env.root.join("config.toml"),
        "[network]\ndefault = \"bridge\"\nbackend = \"netavark\"\n",
    )
    .expect("config");
    let _c = Cleanup::new(&env, &["nv-db", "nv-web"]);
    let _n = NetCleanup(&env, "nv");
    env.ok(&["network", "create", "nv", "--subnet", "10.89.209.0/24"]);
    let vol = www(&env, "through netavark\n");
    let port = free_port();
    let published = format!("127.0.0.1:{port}:80");
    for (name, publish) in [("nv-db", None), ("nv-web", Some(published.as_str()))] {
        let mut args = vec!["run", "-d", "--name", name, "--network", "nv", "-v", &vol];
        if let Some(p) = publish {
            args.extend(["-p", p]);
        }
        args.extend(["bb:1", "httpd", "-f", "-p", "80", "-h", "/www"]);
        env.ok(&args);
    }
    assert!(http_get(port).contains("through netavark"));
    assert_eq!(
        get_from(&env, "nv-web", "http://nv-db/"),
        "through netavark\n"
    );
    // netavark's own iptables rules carry the port, not wharf's nftables maps.
    let id = inspect(&env, "nv-web")["Id"].as_str().unwrap().to_string();
    let rules = output_of("iptables-save", &[]);
    assert!(rules.contains(&id), "no netavark rule names {id}");
    env.ok(&["rm", "-f", "nv-web", "nv-db"]);
    no_leftovers(&env);
}

#[test]
fn a_flushed_firewall_table_is_written_again_by_the_next_start() {
    let Some((_g, env)) = net_env() else { return };
    let _c = Cleanup::new(&env, &["fw"]);
    let vol = www(&env, "after the flush\n");
    let port = free_port();
    let published = format!("127.0.0.1:{port}:80");
    let start = || {
        env.ok(&[
            "run", "-d", "--name", "fw", "-p", &published, "-v", &vol, "bb:1", "httpd", "-f", "-p",
            "80", "-h", "/www",
        ]);
    };
    start();
    assert!(http_get(port).contains("after the flush"));
    env.ok(&["rm", "-f", "fw"]);
    // What a restart of nftables.service does to the table; the bridge stays, marked.
    let st = std::process::Command::new("nft")
        .args(["delete", "table", "ip", "wharf"])
        .status()
        .expect("nft");
    assert!(st.success());
    // A start that publishes nothing writes it again, with the network's subnet (its NAT).
    env.ok(&["run", "--rm", "bb:1", "true"]);
    let subnet = json(&env.ok(&["--format", "json", "network", "inspect", "wharf"]))[0]["Subnets"]
        [0]["Subnet"]
        .as_str()
        .unwrap()
        .to_string();
    let set = output_of("nft", &["list", "set", "ip", "wharf", "nat_subnets"]);
    assert!(set.contains(&subnet), "{subnet} not in {set}");
    start();
    assert!(http_get(port).contains("after the flush"));
    env.ok(&["rm", "-f", "fw"]);
    no_leftovers(&env);
}
