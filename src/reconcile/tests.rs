//! Plan unit tests: every kind of action, and how reasons render. No root, no I/O.

use super::*;
use crate::manifest::RestartPolicy;

const P: &str = "shop";

fn spec(image: &str) -> ContainerSpec {
    ContainerSpec {
        image: image.into(),
        command: Some(vec!["/bin/httpd".into(), "-f".into()]),
        ..ContainerSpec::default()
    }
}

fn desired(containers: Vec<DesiredContainer>) -> Desired {
    Desired {
        project: P.into(),
        images: vec![],
        volumes: vec![],
        containers,
        networks: vec![],
        pulls: vec![],
    }
}

fn want(name: &str, s: ContainerSpec) -> DesiredContainer {
    DesiredContainer::new(name, s, DesiredState::Running)
}

fn have(name: &str, s: &ContainerSpec, state: ObservedState) -> ObservedContainer {
    ObservedContainer {
        id: format!("{name:0<64}"),
        name: name.into(),
        project: Some(P.into()),
        image_ref: s.image.clone(),
        image_id: "i1".repeat(32),
        spec_hash: Some(s.spec_hash()),
        spec: Some(s.clone()),
        state,
        ports: s
            .ports
            .iter()
            .filter_map(|p| crate::model::PortSpec::parse(p).ok())
            .collect(),
    }
}

fn observed(containers: Vec<ObservedContainer>) -> Observed {
    Observed {
        tags: BTreeMap::from([("app:1.0".into(), "i1".repeat(32))]),
        sources: BTreeMap::new(),
        containers,
        volumes: vec![],
        image_configs: BTreeMap::new(),
        networks: BTreeMap::new(),
        pulled: BTreeMap::new(),
    }
}

#[test]
fn up_to_date_is_no_change() {
    let s = spec("app:1.0");
    let plan = plan(
        &desired(vec![want("web", s.clone()), want("api", s.clone())]),
        &observed(vec![
            have("web", &s, ObservedState::Running),
            have("api", &s, ObservedState::Running),
        ]),
    );
    assert!(plan.is_empty(), "{plan:?}");
    assert_eq!(plan.to_string(), "No changes. 2 containers up to date.");
}

#[test]
fn create_starts_unless_stopped_is_desired() {
    let mut d = desired(vec![want("web", spec("app:1.0"))]);
    d.containers.push(DesiredContainer::new(
        "batch",
        spec("app:1.0"),
        DesiredState::Stopped,
    ));
    let plan = plan(&d, &observed(vec![]));
    assert!(
        matches!(&plan.actions[0], Action::Create { name, start: false, .. } if name == "batch")
    );
    assert!(matches!(&plan.actions[1], Action::Create { name, start: true, .. } if name == "web"));
    let text = plan.to_string();
    assert!(text.contains("+ create web (app:1.0)\n"), "{text}");
    assert!(
        text.contains("+ create batch (app:1.0), stopped\n"),
        "{text}"
    );
    assert!(
        text.ends_with(
            "Plan: 0 to import, 2 to create, 0 to recreate, 0 to remove, 0 to change otherwise."
        ),
        "{text}"
    );
}

#[test]
fn recreate_carries_field_level_reasons() {
    let old = ContainerSpec {
        env: BTreeMap::from([("MODE".into(), "prod".into()), ("OLD".into(), "1".into())]),
        limits: SpecLimits {
            memory: Some(64 << 20),
            ..SpecLimits::default()
        },
        ..spec("app:1.0")
    };
    let mut new = old.clone();
    new.image = "app:1.1".into();
    new.limits.memory = Some(128 << 20);
    new.limits.pids = Some(64);
    new.command = Some(vec!["/bin/sh".into()]);
    new.env.insert("MODE".into(), "dev".into());
    new.env.remove("OLD");
    new.env.insert("NEW".into(), "x".into());
    new.restart = RestartPolicy::OnFailure { max: Some(5) };
    new.cap_add = vec!["CAP_NET_ADMIN".into()];
    new.volumes = vec![SpecVolume {
        source: crate::manifest::VolumeSource::Named("data".into()),
        target: "/data".into(),
        read_only: true,
    }];
    let mut o = observed(vec![have("web", &old, ObservedState::Running)]);
    o.tags.insert("app:1.1".into(), "i2".repeat(32));
    let plan = plan(&desired(vec![want("web", new.clone())]), &o);
    let Action::Recreate {
        reasons,
        spec_hash,
        start,
        ..
    } = &plan.actions[0]
    else {
        panic!("{plan:?}")
    };
    assert!(*start);
    assert_eq!(spec_hash, &new.spec_hash());
    let lines: Vec<String> = reasons.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "image app:1.0 → app:1.1",
            "command changed",
            "env.MODE prod → dev",
            "env.NEW added: x",
            "env.OLD removed (was 1)",
            "limits.memory 64MiB → 128MiB",
            "limits.pids unset → 64",
            "volume added: data:/data:ro",
            "cap_add added: CAP_NET_ADMIN",
            "restart no → on-failure:5",
        ]
    );
    let text = plan.to_string();
    assert!(
        text.starts_with("~ recreate web\n    image app:1.0 → app:1.1\n    command changed\n"),
        "{text}"
    );
    assert!(
        text.ends_with(
            "0 to import, 0 to create, 1 to recreate, 0 to remove, 0 to change otherwise."
        ),
        "{text}"
    );
}

#[test]
fn start_stopped_and_stop_running() {
    let s = spec("app:1.0");
    let d = Desired {
        containers: vec![
            want("web", s.clone()),
            DesiredContainer::new("batch", s.clone(), DesiredState::Stopped),
            want("fresh", s.clone()),
        ],
        ..desired(vec![])
    };
    let o = observed(vec![
        have("web", &s, ObservedState::Exited),
        have("batch", &s, ObservedState::Running),
        have("fresh", &s, ObservedState::Created),
    ]);
    let plan = plan(&d, &o);
    let text = plan.to_string();
    assert_eq!(
        text,
        ". stop batch\n> start fresh\n> start web\n\nPlan: 0 to import, 0 to create, 0 to recreate, 0 to remove, 3 to change otherwise."
    );
}

#[test]
fn orphans_of_this_project_only_are_removed() {
    let s = spec("app:1.0");
    let mut foreign = have("other", &s, ObservedState::Running);
    foreign.project = Some("another".into());
    let mut manual = have("manual", &s, ObservedState::Running);
    manual.project = None;
    let o = observed(vec![
        have("old", &s, ObservedState::Running),
        have("gone", &s, ObservedState::Exited),
        foreign,
        manual,
    ]);
    let plan = plan(&desired(vec![]), &o);
    assert_eq!(plan.actions.len(), 2, "{plan:?}");
    let text = plan.to_string();
    assert!(
        text.contains("- remove old (no longer declared; running, will be stopped)\n"),
        "{text}"
    );
    assert!(
        text.contains("- remove gone (no longer declared)\n"),
        "{text}"
    );
    assert!(
        text.contains("0 to create, 0 to recreate, 2 to remove"),
        "{text}"
    );
}

#[test]
fn a_name_owned_elsewhere_is_a_conflict_not_a_change() {
    let s = spec("app:1.0");
    let mut manual = have("web", &s, ObservedState::Running);
    manual.project = None;
    let plan = plan(&desired(vec![want("web", s)]), &observed(vec![manual]));
    assert!(plan.actions.is_empty());
    assert_eq!(plan.conflicts.len(), 1);
    assert!(!plan.is_empty());
    assert!(
        plan.to_string()
            .contains("taken by a container made with `wharf run`")
    );
}

#[test]
fn import_tag_and_volumes_come_first() {
    let img = |name: &str, digest: &str, tag: &str| DesiredImage {
        name: name.into(),
        source: PathBuf::from(format!("/m/images/{name}.tar")),
        source_digest: digest.into(),
        tag: tag.into(),
        config: ImageConfig::default(),
    };
    let d = Desired {
        project: P.into(),
        images: vec![
            img("new", &"a".repeat(64), "new:1"),
            img("known", &"b".repeat(64), "known:1"),
            img("same", &"c".repeat(64), "same:1"),
        ],
        volumes: vec![
            DesiredVolume {
                name: "data".into(),
                labels: BTreeMap::new(),
            },
            DesiredVolume {
                name: "cache".into(),
                labels: BTreeMap::new(),
            },
        ],
        containers: vec![want("web", spec("new:1"))],
        networks: vec![],
        pulls: vec![],
    };
    let o = Observed {
        tags: BTreeMap::from([("same:1".into(), "9".repeat(64))]),
        sources: BTreeMap::from([
            ("b".repeat(64), "8".repeat(64)),
            ("c".repeat(64), "9".repeat(64)),
        ]),
        containers: vec![],
        volumes: vec![ObservedVolume {
            name: "cache".into(),
            project: Some(P.into()),
        }],
        image_configs: BTreeMap::new(),
        networks: BTreeMap::new(),
        pulled: BTreeMap::new(),
    };
    let plan = plan(&d, &o);
    let text = plan.to_string();
    assert_eq!(
        text,
        "+ volume data\n\
         + import new:1 from /m/images/new.tar (sha256:aaaaaaaaaaaa)\n\
         + tag known:1 → 888888888888\n\
         + create web (new:1)\n\
         \n\
         Plan: 1 to import, 2 to create, 0 to recreate, 0 to remove, 1 to change otherwise."
    );
}

#[test]
fn same_tag_new_source_recreates() {
    let s = spec("app:1.0");
    let mut d = desired(vec![want("web", s.clone())]);
    d.images.push(DesiredImage {
        name: "app".into(),
        source: "/m/app.tar".into(),
        source_digest: "d".repeat(64),
        tag: "app:1.0".into(),
        config: ImageConfig::default(),
    });
    let plan = plan(&d, &observed(vec![have("web", &s, ObservedState::Running)]));
    let text = plan.to_string();
    assert!(text.contains("+ import app:1.0"), "{text}");
    assert!(
        text.contains("~ recreate web\n    image app:1.0 (i1i1i1i1i1i1) → app:1.0 (new import)"),
        "{text}"
    );
    // Already imported under another id: the tag moves and the container follows.
    let mut o = observed(vec![have("web", &s, ObservedState::Running)]);
    o.sources.insert("d".repeat(64), "e".repeat(64));
    let text = plan_text(&d, &o);
    assert!(
        text.contains("~ tag app:1.0: i1i1i1i1i1i1 → eeeeeeeeeeee"),
        "{text}"
    );
    assert!(
        text.contains("image app:1.0 (i1i1i1i1i1i1) → app:1.0 (eeeeeeeeeeee)"),
        "{text}"
    );
}

#[test]
fn a_changed_image_config_imports_again() {
    let s = spec("app:1.0");
    let mut d = desired(vec![want("web", s.clone())]);
    let config = ImageConfig {
        cmd: Some(vec!["/bin/sh".into()]),
        ..ImageConfig::default()
    };
    d.images.push(DesiredImage {
        name: "app".into(),
        source: "/m/app.tar".into(),
        source_digest: "d".repeat(64),
        tag: "app:1.0".into(),
        config: config.clone(),
    });
    let mut o = observed(vec![have("web", &s, ObservedState::Running)]);
    o.sources.insert("d".repeat(64), "i1".repeat(32));
    // Imported with the same config: nothing to do.
    o.image_configs.insert("i1".repeat(32), config);
    assert!(plan(&d, &o).is_empty(), "{}", plan_text(&d, &o));
    // The section's cmd changed since: import again, and the container follows the image.
    o.image_configs
        .insert("i1".repeat(32), ImageConfig::default());
    let text = plan_text(&d, &o);
    assert!(text.contains("+ import app:1.0"), "{text}");
    assert!(text.contains("~ recreate web"), "{text}");
}

fn plan_text(d: &Desired, o: &Observed) -> String {
    plan(d, o).to_string()
}

#[test]
fn unknown_stored_spec_still_recreates_with_a_reason() {
    let s = spec("app:1.0");
    let mut h = have("web", &s, ObservedState::Running);
    h.spec = None;
    h.spec_hash = Some("0".repeat(64));
    let text = plan_text(&desired(vec![want("web", s)]), &observed(vec![h]));
    assert!(
        text.contains("~ recreate web\n    spec (the stored spec"),
        "{text}"
    );
}

#[test]
fn spec_hash_is_stable_and_sensitive() {
    let a = spec("app:1.0");
    assert_eq!(a.spec_hash(), a.clone().spec_hash());
    assert_eq!(a.spec_hash().len(), 64);
    let mut b = a.clone();
    b.limits.cpus = Some(0.5);
    assert_ne!(a.spec_hash(), b.spec_hash());
    let json = a.canonical_json();
    let back: ContainerSpec = serde_json::from_str(&json).unwrap();
    assert_eq!(back.spec_hash(), a.spec_hash());
}

#[test]
fn limits_convert_to_cgroup_limits() {
    let s = ContainerSpec {
        limits: SpecLimits {
            memory: Some(1 << 20),
            memory_swap: Some(-1),
            cpus: Some(0.5),
            cpu_shares: Some(512),
            pids: Some(10),
            cpuset: Some("0-1".into()),
        },
        ..ContainerSpec::default()
    };
    let l = s.cgroup_limits();
    assert_eq!(l.memory, Some(1 << 20));
    assert_eq!(l.memory_swap, Some(-1));
    assert_eq!(l.cpuset_cpus.as_deref(), Some("0-1"));
}

#[test]
fn project_networks_are_created_first_and_a_port_change_recreates_field_by_field() {
    let mut s = spec("app:1.0");
    s.network = crate::manifest::Network::Bridge;
    s.networks = vec![format!("{P}_default")];
    s.ports = vec!["8080:80".into()];
    let mut d = desired(vec![want("web", s.clone())]);
    d.networks.push(DesiredNetwork {
        name: format!("{P}_default"),
        subnet: None,
        internal: false,
        external: false,
    });
    let p = plan(&d, &observed(vec![]));
    assert!(
        matches!(&p.actions[0], Action::CreateNetwork { name, .. } if *name == format!("{P}_default")),
        "{p}"
    );
    // Changed port: recreate, with the old and new lists.
    let mut o = observed(vec![have("web", &s, ObservedState::Running)]);
    o.networks.insert(
        format!("{P}_default"),
        (Some(P.into()), "10.89.0.0/24".into()),
    );
    let mut s2 = s.clone();
    s2.ports = vec!["8081:80".into()];
    let mut d2 = desired(vec![want("web", s2)]);
    d2.networks = d.networks.clone();
    let text = plan(&d2, &o).to_string();
    assert!(
        text.contains("~ recreate web") && text.contains(r#"ports ["8080:80"] → ["8081:80"]"#),
        "{text}"
    );
}

#[test]
fn a_host_port_of_another_project_is_a_conflict_before_anything_starts() {
    let mut theirs = spec("app:1.0");
    theirs.ports = vec!["127.0.0.1:8000-8009:80-89".into()];
    let mut other = have("their-web", &theirs, ObservedState::Running);
    other.project = Some("other".into());
    let mut mine = spec("app:1.0");
    mine.ports = vec!["8005:80".into()];
    let p = plan(
        &desired(vec![want("web", mine.clone())]),
        &observed(vec![other.clone()]),
    );
    assert_eq!(p.conflicts.len(), 1, "{p}");
    let text = p.to_string();
    assert!(
        text.contains("host port 8005/tcp is published by container their-web of project other"),
        "{text}"
    );
    assert!(
        !p.actions.iter().any(|a| matches!(a, Action::Create { .. })),
        "{p}"
    );
    // udp, or another address, does not collide.
    mine.ports = vec!["8005:80/udp".into()];
    assert!(
        plan(&desired(vec![want("web", mine)]), &observed(vec![other]))
            .conflicts
            .is_empty()
    );
}

#[test]
fn a_network_only_blocked_containers_would_join_is_not_created() {
    let mut adhoc = have("adhoc", &spec("app:1.0"), ObservedState::Running);
    adhoc.project = None;
    adhoc.ports = vec![crate::model::PortSpec::parse("8080:80").unwrap()];
    let mut mine = spec("app:1.0");
    mine.ports = vec!["8080:80".into()];
    mine.networks = vec![format!("{P}_default")];
    let mut d = desired(vec![want("web", mine)]);
    d.networks.push(DesiredNetwork {
        name: format!("{P}_default"),
        subnet: None,
        internal: false,
        external: false,
    });
    let p = plan(&d, &observed(vec![adhoc]));
    assert_eq!(p.conflicts.len(), 1, "{p}");
    assert!(p.actions.is_empty(), "{p}");
    assert!(
        p.to_string()
            .ends_with("Nothing else to do: 1 container blocked (above), 0 up to date."),
        "{p}"
    );
}

#[test]
fn a_host_port_of_a_wharf_run_container_is_a_conflict_too() {
    // `wharf run -p 8080:80`: no project, no manifest spec; its config publishes the port.
    let mut adhoc = have("adhoc", &spec("app:1.0"), ObservedState::Running);
    adhoc.project = None;
    adhoc.spec = None;
    adhoc.ports = vec![crate::model::PortSpec::parse("8080:80").unwrap()];
    let mut mine = spec("app:1.0");
    mine.ports = vec!["8080:80".into()];
    let p = plan(&desired(vec![want("web", mine)]), &observed(vec![adhoc]));
    let text = p.to_string();
    assert!(
        text.contains("host port 8080/tcp is published by container adhoc of `wharf run`"),
        "{text}"
    );
}

fn pull_of(resolved: Option<&str>) -> DesiredPull {
    DesiredPull {
        name: "app".into(),
        reference: "127.0.0.1:5000/team/app:1.0".into(),
        repo: "127.0.0.1:5000/team/app".into(),
        pinned: None,
        tags: vec!["127.0.0.1:5000/team/app:1.0".into(), "app:1.0".into()],
        resolved: resolved.map(str::to_string),
    }
}

#[test]
fn a_pulled_tag_is_kept_until_pull_finds_a_new_digest() {
    let s = spec("app:1.0");
    let old = format!("sha256:{}", "a".repeat(64));
    let new = format!("sha256:{}", "b".repeat(64));
    let mut o = observed(vec![have("web", &s, ObservedState::Running)]);
    o.tags
        .insert("127.0.0.1:5000/team/app:1.0".into(), "i1".repeat(32));
    o.pulled.insert(
        "127.0.0.1:5000/team/app:1.0".into(),
        ObservedPull {
            image_id: "i1".repeat(32),
            digest: Some(old.clone()),
        },
    );
    let mut d = desired(vec![want("web", s.clone())]);
    // Not asked (no --pull), or asked and the same: nothing to do.
    for resolved in [None, Some(old.as_str())] {
        d.pulls = vec![pull_of(resolved)];
        let p = plan(&d, &o);
        assert!(p.is_empty(), "{p}");
    }
    // A new digest: pulled by digest, and the container recreated with both digests shown.
    d.pulls = vec![pull_of(Some(&new))];
    let p = plan(&d, &o);
    assert!(
        matches!(&p.actions[0], Action::Pull { pull, .. } if *pull == format!("127.0.0.1:5000/team/app@{new}")),
        "{p:?}"
    );
    let text = p.to_string();
    assert!(
        text.contains(
            "~ recreate web\n    image app:1.0 sha256:aaaaaaaaaaaa… → sha256:bbbbbbbbbbbb…"
        ),
        "{text}"
    );
    assert!(text.contains("Plan: 1 to pull, 0 to import"), "{text}");
    // Missing from the store: pulled by the reference (the pull resolves it).
    let p = plan(&desired(vec![]), &observed(vec![]));
    assert!(p.is_empty());
    let mut d = desired(vec![]);
    d.pulls = vec![pull_of(None)];
    let p = plan(&d, &observed(vec![]));
    assert_eq!(
        p.to_string().lines().next(),
        Some("+ pull app:1.0 from 127.0.0.1:5000/team/app:1.0")
    );
}
