//! Loading a manifest file or directory: check everything, report everything, then merge.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::check::{Ctx, check_document, did_you_mean};
use super::diag::{Location, ManifestErrors, Problem};
use super::trust::{self, Kind, LoadOptions};
use super::types::{
    ContainerSection, ImageSection, ManifestFile, Network, NetworkSection, Retention, VolumeSection,
};
use super::values::{VolumeSource, check_name, parse_volume};
use crate::reference::Reference;

/// A loaded, validated project: every file merged, every relative path resolved.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifest {
    /// The project name (from `project =`, else the file stem or directory name).
    pub project: String,
    /// The files it was loaded from, in merge order.
    pub files: Vec<PathBuf>,
    /// Images by section name; `source` is an absolute path, `tag` is set (a `ref` image
    /// without one gets the ref's own name).
    pub images: BTreeMap<String, ImageSection>,
    /// Containers by name. `env_file` is an absolute path and its variables are merged into
    /// `env` (the `env` table wins); bind-mount sources in `volumes` are absolute paths.
    pub containers: BTreeMap<String, ContainerSection>,
    /// Named volumes.
    pub volumes: BTreeMap<String, VolumeSection>,
    /// The project's networks, by section name (created as `<project>_<name>`).
    pub networks: BTreeMap<String, NetworkSection>,
    /// The network of a container that names none ([`Host::default_network`]).
    pub default_network: Network,
    /// Retention policies (all empty when no file has a `[retention]` table).
    pub retention: Retention,
    /// Which file defined each entry: keys like `containers.web`, `images.app`, `volumes.data`.
    pub defined_in: BTreeMap<String, PathBuf>,
}

impl Manifest {
    /// Every file the manifest depends on: the manifests, image sources and env files (for
    /// `watch`). Sorted, without duplicates.
    pub fn watched_paths(&self) -> Vec<PathBuf> {
        let mut v: BTreeSet<PathBuf> = self.files.iter().cloned().collect();
        v.extend(
            self.images
                .values()
                .filter_map(|i| i.source.as_ref().map(|s| PathBuf::from(&s.0))),
        );
        v.extend(
            self.containers
                .values()
                .filter_map(|c| c.env_file.as_ref().map(|e| PathBuf::from(&e.0))),
        );
        // seccomp profile files (resolved to absolute paths at load).
        v.extend(
            self.containers
                .values()
                .filter_map(|c| c.security.as_ref()?.seccomp.as_ref())
                .filter(|s| !matches!(s.as_str(), "default" | "unconfined"))
                .map(PathBuf::from),
        );
        v.into_iter().collect()
    }
}

struct Source {
    path: PathBuf,
    base: PathBuf,
    text: String,
}

/// Loads one manifest file, or every `*.toml` file of a directory (in sorted order) as one
/// project. `has_image(reference)` answers whether the store already has an image, for
/// container `image` references that no `[images]` section provides.
///
/// Nothing is changed on the host. Either every check passes, or every problem found is
/// returned at once.
/// What validation asks of the store and the host, answered by the caller
/// (`reconcile::execute::load_manifest` asks the store and the runtime): the manifest module
/// itself touches neither. A closure `Fn(&str) -> bool` is a `Host` that answers
/// `has_image`, skips the host checks and defaults containers to `network = "none"`.
pub trait Host {
    /// Whether the store has an image by this reference.
    fn has_image(&self, reference: &str) -> bool;
    /// Whether a seccomp profile's JSON compiles on this host (the error says why not).
    fn check_seccomp_profile(&self, _json: &str) -> Result<(), String> {
        Ok(())
    }
    /// How many CPUs the host has online (None: not checked).
    fn online_cpus(&self) -> Option<usize> {
        None
    }
    /// The host's CPUs, for `cpuset` (None: not checked).
    fn host_cpus(&self) -> Option<std::collections::BTreeSet<u32>> {
        None
    }
    /// Whether a `tmpfs` entry (`/path[:opts]`) is one the runtime mounts.
    fn check_tmpfs(&self, _spec: &str) -> Result<(), String> {
        Ok(())
    }
    /// Whether a `devices` entry names a device node of this host.
    fn check_device(&self, _spec: &str) -> Result<(), String> {
        Ok(())
    }
    /// The network of a container that names none and publishes nothing: the state root's
    /// `[network] default` (bridge: the project's networks).
    fn default_network(&self) -> Network {
        Network::Bridge
    }
}

impl<F: Fn(&str) -> bool> Host for F {
    fn has_image(&self, reference: &str) -> bool {
        self(reference)
    }
    /// Loopback only, as the tests' state roots: a closure knows no state root.
    fn default_network(&self) -> Network {
        Network::None
    }
}

pub fn load(path: &Path, host: &dyn Host) -> Result<Manifest, ManifestErrors> {
    load_with(path, host, LoadOptions::default())
}

/// [`load`], with the trust checks of [`trust`] (skipped with `opts.insecure`). Problems
/// show snippets of manifests only: a problem in an env file names the file, line and
/// column, never its content.
pub fn load_with(
    path: &Path,
    host: &dyn Host,
    opts: LoadOptions,
) -> Result<Manifest, ManifestErrors> {
    let mut problems = Vec::new();
    let mut sources: BTreeMap<PathBuf, String> = BTreeMap::new();

    let (files, default_project) = match list_files(path, opts) {
        Ok(x) => x,
        Err(p) => return Err(ManifestErrors::new(vec![*p], sources)),
    };
    let fail = |problems, sources| ManifestErrors::new(problems, sources).show_only(&files);

    let mut loaded: Vec<Source> = Vec::new();
    for f in &files {
        match trust::read(f, Kind::Manifest, opts) {
            Ok(text) => {
                let parent = f.parent().unwrap_or(Path::new("."));
                let parent = if parent.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    parent
                };
                let base = std::fs::canonicalize(parent).unwrap_or_else(|_| parent.to_path_buf());
                sources.insert(f.clone(), text.clone());
                loaded.push(Source {
                    path: f.clone(),
                    base,
                    text,
                });
            }
            Err(r) => problems.push(Problem::new(r.message).hint(Some(r.hint))),
        }
    }

    // Pass 1: syntax and schema, per file.
    let root = super::schema::schema();
    let mut docs: Vec<(usize, Spanned<DeTable<'_>>)> = Vec::new();
    for (i, src) in loaded.iter().enumerate() {
        let (doc, errors) = DeTable::parse_recoverable(&src.text);
        if !errors.is_empty() {
            for e in errors {
                let span = e.span().unwrap_or(0..0);
                problems.push(
                    Problem::new(format!("TOML syntax error: {}", e.message().trim()))
                        .at(&src.path, span)
                        .label("here")
                        .hint(Some("see https://toml.io for the syntax")),
                );
            }
            continue;
        }
        let ctx = Ctx {
            host,
            file: &src.path,
            base: &src.base,
            root,
        };
        check_document(&ctx, &doc, &mut problems);
        docs.push((i, doc));
    }

    // Pass 2: across files.
    let project = cross_check(
        &loaded,
        &docs,
        &default_project,
        host,
        opts,
        &mut problems,
        &mut sources,
    );

    if !problems.is_empty() {
        return Err(fail(problems, sources));
    }

    // Pass 3: typed deserialization of clean files, then merge.
    let mut m = Manifest {
        project,
        files: files.clone(),
        default_network: host.default_network(),
        ..Manifest::default()
    };
    for src in &loaded {
        let file: ManifestFile = match toml::from_str(&src.text) {
            Ok(f) => f,
            Err(e) => {
                // The checks above should have caught this; report it all the same.
                problems.push(
                    Problem::new(e.message().to_string())
                        .at(&src.path, e.span().unwrap_or(0..0))
                        .label("here"),
                );
                continue;
            }
        };
        merge(&mut m, src, file, opts, &mut problems);
    }
    if !problems.is_empty() {
        return Err(fail(problems, sources));
    }
    Ok(m)
}

fn list_files(path: &Path, opts: LoadOptions) -> Result<(Vec<PathBuf>, String), Box<Problem>> {
    let meta = std::fs::metadata(path).map_err(|e| {
        Box::new(
            Problem::new(format!("cannot read {}: {e}", path.display()))
                .hint(Some("give a manifest file or a directory of *.toml files")),
        )
    })?;
    let stem_of = |p: &Path, dir: bool| -> String {
        let name = if dir {
            std::fs::canonicalize(p)
                .ok()
                .and_then(|c| c.file_name().map(|n| n.to_string_lossy().into_owned()))
        } else {
            p.file_stem().map(|n| n.to_string_lossy().into_owned())
        };
        name.unwrap_or_default()
    };
    if meta.is_dir() {
        trust::check_dir(path, opts)
            .map_err(|r| Box::new(Problem::new(r.message).hint(Some(r.hint))))?;
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| Box::new(Problem::new(format!("cannot list {}: {e}", path.display()))))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(Box::new(
                Problem::new(format!("{} has no *.toml files", path.display())).hint(Some(
                    "put manifests (NAME.toml) in the directory, or give a file",
                )),
            ));
        }
        Ok((files, stem_of(path, true)))
    } else {
        Ok((vec![path.to_path_buf()], stem_of(path, false)))
    }
}

fn get<'a, 'i>(t: &'a DeTable<'i>, key: &str) -> Option<&'a Spanned<DeValue<'i>>> {
    t.get(key)
}

fn table<'a, 'i>(v: &'a Spanned<DeValue<'i>>) -> Option<&'a DeTable<'i>> {
    v.get_ref().as_table()
}

/// Finds the key of `name` in `t` (for its span).
fn key_span(t: &DeTable<'_>, name: &str) -> Option<Range<usize>> {
    t.iter()
        .find(|(k, _)| k.get_ref() == name)
        .map(|(k, _)| k.span())
}

fn cross_check(
    loaded: &[Source],
    docs: &[(usize, Spanned<DeTable<'_>>)],
    default_project: &str,
    host: &dyn Host,
    opts: LoadOptions,
    problems: &mut Vec<Problem>,
    sources: &mut BTreeMap<PathBuf, String>,
) -> String {
    let project = project_name(loaded, docs, default_project, problems);
    check_duplicates(loaded, docs, problems);
    let tags = image_tags(loaded, docs, problems);
    check_image_sources(loaded, docs, opts, problems);
    let volumes = declared_volumes(docs);
    check_reserved_labels(loaded, docs, problems);
    check_containers(loaded, docs, &tags, &volumes, host, opts, problems, sources);
    check_networks(loaded, docs, problems);
    project
}

/// Networks and ports: a container joins declared networks (or `default`); ports and
/// networks need the bridge network; two containers of the project may not publish one
/// host port; declared subnets may not overlap.
fn check_networks(
    loaded: &[Source],
    docs: &[(usize, Spanned<DeTable<'_>>)],
    problems: &mut Vec<Problem>,
) {
    let mut declared: BTreeMap<String, ()> = BTreeMap::new();
    let mut subnets: Vec<(ipnet::Ipv4Net, String, Location)> = Vec::new();
    for (i, doc) in docs {
        let src = &loaded[*i];
        let Some(t) = get(doc.get_ref(), "networks").and_then(table) else {
            continue;
        };
        for (k, v) in t.iter() {
            declared.insert(k.get_ref().to_string(), ());
            let Some(sub) = table(v).and_then(|n| get(n, "subnet")) else {
                continue;
            };
            let Some(net) = sub
                .get_ref()
                .as_str()
                .and_then(|s| s.parse::<ipnet::Ipv4Net>().ok())
            else {
                continue;
            };
            let net = net.trunc();
            if let Some((o, name, loc)) = subnets
                .iter()
                .find(|(o, _, _)| o.contains(&net.network()) || net.contains(&o.network()))
            {
                problems.push(
                    Problem::new(format!(
                        "network `{}`: the subnet {net} overlaps network `{name}`'s {o}",
                        k.get_ref()
                    ))
                    .at(&src.path, sub.span())
                    .label("overlapping subnet")
                    .also(&loc.file, loc.span.clone(), "the other subnet")
                    .hint(Some("give each network its own subnet")),
                );
                continue;
            }
            subnets.push((
                net,
                k.get_ref().to_string(),
                Location {
                    file: src.path.clone(),
                    span: sub.span(),
                },
            ));
        }
    }
    // (protocol, host port) → the container and where it was published first.
    let mut published: BTreeMap<(String, u16), (String, Location)> = BTreeMap::new();
    for (i, doc) in docs {
        let src = &loaded[*i];
        let Some(containers) = get(doc.get_ref(), "containers").and_then(table) else {
            continue;
        };
        for (name, c) in containers.iter() {
            let Some(c) = table(c) else { continue };
            let name = name.get_ref();
            let mode = get(c, "network")
                .and_then(|v| v.get_ref().as_str().map(|s| (s.to_string(), v.span())));
            for key in ["ports", "networks"] {
                if let (Some((m, span)), Some(v)) = (&mode, get(c, key))
                    && matches!(m.as_str(), "none" | "host")
                    && v.get_ref().as_array().is_some_and(|a| !a.is_empty())
                {
                    problems.push(
                        Problem::new(format!(
                            "container `{name}`: `{key}` needs the bridge network, not network = {m:?}"
                        ))
                        .at(&src.path, v.span())
                        .label(format!("{key} of a container on network {m:?}"))
                        .also(&src.path, span.clone(), "the network is set here")
                        .hint(Some("drop `network` (the project's network is the default), or drop these")),
                    );
                }
            }
            if let Some(nets) = get(c, "networks").and_then(|v| v.get_ref().as_array()) {
                for n in nets.iter() {
                    let Some(s) = n.get_ref().as_str() else {
                        continue;
                    };
                    if s != "default" && !declared.contains_key(s) {
                        let hint = match did_you_mean(s, declared.keys().map(String::as_str)) {
                            Some(m) => format!("did you mean {m:?}? Or declare [networks.{s}]"),
                            None => format!(
                                "declare [networks.{s}] (`external = true` for a network made with `wharf network create`), or join \"default\""
                            ),
                        };
                        problems.push(
                            Problem::new(format!("container `{name}`: unknown network `{s}`"))
                                .at(&src.path, n.span())
                                .label("not a network of the project")
                                .hint(Some(hint)),
                        );
                    }
                }
            }
            let Some(ports) = get(c, "ports").and_then(|v| v.get_ref().as_array()) else {
                continue;
            };
            for p in ports.iter() {
                let Some(spec) = p
                    .get_ref()
                    .as_str()
                    .and_then(|s| crate::model::PortSpec::parse(s).ok())
                else {
                    continue;
                };
                let Some(host) = spec.host_port else { continue };
                for k in 0..spec.range {
                    let key = (spec.protocol.to_string(), host + k);
                    let here = Location {
                        file: src.path.clone(),
                        span: p.span(),
                    };
                    match published.get(&key) {
                        Some((other, loc)) => {
                            problems.push(
                                Problem::new(format!(
                                    "container `{name}`: the host port {}/{} is published by `{other}` too",
                                    key.1, key.0
                                ))
                                .at(&src.path, p.span())
                                .label("second publication")
                                .also(&loc.file, loc.span.clone(), "first publication")
                                .hint(Some("publish another host port")),
                            );
                            break;
                        }
                        None => {
                            published.insert(key, (name.to_string(), here));
                        }
                    }
                }
            }
        }
    }
}

/// The project's name: `project =` (one name across the files), else `default_project`.
fn project_name(
    loaded: &[Source],
    docs: &[(usize, Spanned<DeTable<'_>>)],
    default_project: &str,
    problems: &mut Vec<Problem>,
) -> String {
    let mut project: Option<(String, Location)> = None;
    for (i, doc) in docs {
        let src = &loaded[*i];
        if let Some(v) = get(doc.get_ref(), "project")
            && let Some(name) = v.get_ref().as_str()
        {
            let here = Location {
                file: src.path.clone(),
                span: v.span(),
            };
            if let Err(e) = check_name(name) {
                problems.push(
                    Problem::new(format!("`project`: {}", e.message))
                        .at(&src.path, v.span())
                        .label("not a valid project name")
                        .hint(e.hint),
                );
            }
            match &project {
                Some((first, loc)) if first != name => problems.push(
                    Problem::new(format!(
                        "two project names in one project: {first:?} and {name:?}"
                    ))
                    .at(&src.path, v.span())
                    .label("second name")
                    .also(&loc.file, loc.span.clone(), "first name")
                    .hint(Some("files of one directory form one project: use one name, or set it in one file only")),
                ),
                Some(_) => {}
                None => project = Some((name.to_string(), here)),
            }
        }
    }
    match project {
        Some((p, _)) => p,
        None => {
            if check_name(default_project).is_err() {
                problems.push(
                    Problem::new(format!(
                        "the project name {default_project:?}, taken from the file or directory name, is not a valid name"
                    ))
                    .hint(Some("set `project = \"NAME\"` at the top of the manifest (letters, digits, '_', '.', '-')")),
                );
            }
            default_project.to_string()
        }
    }
}

/// Duplicate names across (and within) files.
fn check_duplicates(
    loaded: &[Source],
    docs: &[(usize, Spanned<DeTable<'_>>)],
    problems: &mut Vec<Problem>,
) {
    let mut seen: BTreeMap<String, Location> = BTreeMap::new();
    for (i, doc) in docs {
        let src = &loaded[*i];
        for section in ["images", "containers", "volumes", "networks"] {
            let Some(t) = get(doc.get_ref(), section).and_then(table) else {
                continue;
            };
            for (k, _) in t.iter() {
                let id = format!("{section}.{}", k.get_ref());
                dup(&id, &src.path, k.span(), &mut seen, problems);
            }
        }
        if let Some(span) = key_span(doc.get_ref(), "retention") {
            dup("retention", &src.path, span, &mut seen, problems);
        }
    }
}

/// The image tags `[images]` provides, where each is declared.
fn image_tags(
    loaded: &[Source],
    docs: &[(usize, Spanned<DeTable<'_>>)],
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, Location> {
    let mut tags: BTreeMap<String, Location> = BTreeMap::new();
    for (i, doc) in docs {
        let src = &loaded[*i];
        let Some(images) = get(doc.get_ref(), "images").and_then(table) else {
            continue;
        };
        for (_, img) in images.iter() {
            let Some(t) = table(img) else { continue };
            // A `ref` image is tagged with its own name too (as `wharf pull` tags it).
            let pulled = get(t, "ref").and_then(|r| Some((r, r.get_ref().as_str()?)));
            if let Some((span, s)) = pulled
                && let Some(norm) = ref_tag(s)
            {
                tags.entry(norm).or_insert(Location {
                    file: src.path.clone(),
                    span: span.span(),
                });
            }
            let Some(tag) = get(t, "tag") else {
                continue;
            };
            let Some(s) = tag.get_ref().as_str() else {
                continue;
            };
            let Ok(r) = Reference::parse_named(s) else {
                continue;
            };
            let norm = r.to_string();
            if let Some(first) = tags.get(&norm) {
                problems.push(
                    Problem::new(format!("two [images] sections produce the tag {norm}"))
                        .at(&src.path, tag.span())
                        .label("second")
                        .also(&first.file, first.span.clone(), "first")
                        .hint(Some("give each image its own tag")),
                );
            } else {
                tags.insert(
                    norm,
                    Location {
                        file: src.path.clone(),
                        span: tag.span(),
                    },
                );
            }
        }
    }
    tags
}

/// The local tag a registry reference gives its image: docker's familiar name with the tag
/// (`127.0.0.1:5000/team/web:1.4`, `alpine:latest`), or `name@sha256:…` for a digest.
pub fn ref_tag(s: &str) -> Option<String> {
    let r = crate::reference::registry_ref(s).ok()?;
    let name = crate::reference::familiar(&r);
    let local = match r.digest() {
        Some(d) => format!("{name}@{d}"),
        None => format!("{name}:{}", r.tag().unwrap_or("latest")),
    };
    Reference::parse_named(&local).ok().map(|r| r.to_string())
}

/// An image section is one of: `source` + `tag`, or `ref` (+ `tag`); the config keys
/// (`cmd`, `entrypoint`, `env`, `workdir`) describe a rootfs tarball only. (The schema's
/// `oneOf` reports a missing `source`, `ref` or `tag`.)
fn check_image_kind(
    path: &Path,
    name: &Spanned<std::borrow::Cow<'_, str>>,
    t: &DeTable<'_>,
    problems: &mut Vec<Problem>,
) {
    let n = name.get_ref();
    match (get(t, "source"), get(t, "ref")) {
        (Some(_), Some(r)) => problems.push(
            Problem::new(format!("[images.{n}] has both `source` and `ref`"))
                .at(path, r.span())
                .label("second image origin")
                .hint(Some("an image is imported from a tarball (`source`) or pulled from a registry (`ref`): keep one")),
        ),
        (None, Some(_)) => {
            for key in ["cmd", "entrypoint", "env", "workdir"] {
                if let Some(k) = key_span(t, key) {
                    problems.push(
                        Problem::new(format!("[images.{n}]: `{key}` is for a tarball image, not a pulled one"))
                            .at(path, k)
                            .label("not with `ref`")
                            .hint(Some("a pulled image keeps its own config; set `command`, `entrypoint`, `env` or `workdir` in the [containers] section instead")),
                    );
                }
            }
        }
        _ => {}
    }
}

/// Image sections: one origin each; sources: who may write them decides what runs.
fn check_image_sources(
    loaded: &[Source],
    docs: &[(usize, Spanned<DeTable<'_>>)],
    opts: LoadOptions,
    problems: &mut Vec<Problem>,
) {
    for (i, doc) in docs {
        let src = &loaded[*i];
        let Some(images) = get(doc.get_ref(), "images").and_then(table) else {
            continue;
        };
        for (name, img) in images.iter() {
            let Some(t) = table(img) else { continue };
            check_image_kind(&src.path, name, t, problems);
            let Some(source) = get(t, "source") else {
                continue;
            };
            let Some(s) = source.get_ref().as_str() else {
                continue;
            };
            let p = super::check::join_path(&src.base, s);
            if p.is_file()
                && let Err(r) = trust::check_file(&p, Kind::ImageSource, opts)
            {
                problems.push(
                    Problem::new(r.message)
                        .at(&src.path, source.span())
                        .label("image source named here")
                        .hint(Some(r.hint)),
                );
            }
        }
    }
}

/// The volumes `[volumes]` declares.
fn declared_volumes(docs: &[(usize, Spanned<DeTable<'_>>)]) -> BTreeSet<String> {
    let mut volumes: BTreeSet<String> = BTreeSet::new();
    for (_, doc) in docs {
        if let Some(t) = get(doc.get_ref(), "volumes").and_then(table) {
            volumes.extend(t.iter().map(|(k, _)| k.get_ref().to_string()));
        }
    }
    volumes
}

/// Labels starting with `wharf.` are wharf's own.
fn check_reserved_labels(
    loaded: &[Source],
    docs: &[(usize, Spanned<DeTable<'_>>)],
    problems: &mut Vec<Problem>,
) {
    for (i, doc) in docs {
        let src = &loaded[*i];
        for section in ["containers", "volumes"] {
            let Some(t) = get(doc.get_ref(), section).and_then(table) else {
                continue;
            };
            for (name, entry) in t.iter() {
                let Some(labels) = table(entry).and_then(|e| get(e, "labels")).and_then(table)
                else {
                    continue;
                };
                for (k, _) in labels
                    .iter()
                    .filter(|(k, _)| k.get_ref().starts_with("wharf."))
                {
                    problems.push(
                        Problem::new(format!(
                            "`{section}.{}.labels`: the label {:?} is reserved",
                            name.get_ref(),
                            k.get_ref()
                        ))
                        .at(&src.path, k.span())
                        .label("reserved prefix")
                        .hint(Some("labels starting with \"wharf.\" are wharf's own (ownership, project); pick another prefix")),
                    );
                }
            }
        }
    }
}

/// Per container: image references, named volumes, env files, limits the host refuses,
/// the seccomp profile.
#[allow(clippy::too_many_arguments)]
fn check_containers(
    loaded: &[Source],
    docs: &[(usize, Spanned<DeTable<'_>>)],
    tags: &BTreeMap<String, Location>,
    volumes: &BTreeSet<String>,
    host: &dyn Host,
    opts: LoadOptions,
    problems: &mut Vec<Problem>,
    sources: &mut BTreeMap<PathBuf, String>,
) {
    for (i, doc) in docs {
        let src = &loaded[*i];
        let Some(containers) = get(doc.get_ref(), "containers").and_then(table) else {
            continue;
        };
        for (name, c) in containers.iter() {
            let Some(c) = table(c) else { continue };
            if let Some(img) = get(c, "image")
                && let Some(s) = img.get_ref().as_str()
                && let Ok(r) = Reference::parse(s)
            {
                let norm = r.to_string();
                if !tags.contains_key(&norm) && !host.has_image(s) {
                    let hint = match did_you_mean(&norm, tags.keys().map(String::as_str)) {
                        Some(m) => format!(
                            "did you mean {m:?}? Or declare [images.NAME] with source and tag = {s:?}, or `wharf import FILE {s}` first"
                        ),
                        None => format!(
                            "declare [images.NAME] with `source = \"...\"` and `tag = {s:?}`, or run `wharf import FILE {s}` first"
                        ),
                    };
                    problems.push(
                        Problem::new(format!(
                            "container `{}`: no image {norm} in the manifest or the store",
                            name.get_ref()
                        ))
                        .at(&src.path, img.span())
                        .label("unknown image")
                        .hint(Some(hint)),
                    );
                }
            }
            if let Some(limits) = get(c, "limits").and_then(table) {
                check_swap(src, limits, problems);
                check_host_limits(src, limits, host, problems);
            }
            if let Some(vols) = get(c, "volumes").and_then(|v| v.get_ref().as_array()) {
                let mut targets: BTreeMap<String, Range<usize>> = BTreeMap::new();
                for v in vols.iter() {
                    let Some(s) = v.get_ref().as_str() else {
                        continue;
                    };
                    if let Ok(spec) = parse_volume(s) {
                        if let Some(first) = targets.get(&spec.target) {
                            problems.push(
                                Problem::new(format!(
                                    "container `{}`: two volumes mount at {}",
                                    name.get_ref(),
                                    spec.target
                                ))
                                .at(&src.path, v.span())
                                .label("second mount")
                                .also(&src.path, first.clone(), "first mount")
                                .hint(Some("mount each path once")),
                            );
                        } else {
                            targets.insert(spec.target.clone(), v.span());
                        }
                    }
                    if let Ok(spec) = parse_volume(s)
                        && let VolumeSource::Named(n) = &spec.source
                        && !volumes.contains(n)
                    {
                        problems.push(
                            Problem::new(format!("volume `{n}` is not declared"))
                                .at(&src.path, v.span())
                                .label("undeclared volume")
                                .hint(Some(format!(
                                    "add `[volumes.{n}]` to the manifest, or write \"./{n}:...\" for a bind mount of a directory"
                                ))),
                        );
                    }
                }
            }
            if let Some(sec) = get(c, "security").and_then(table)
                && let Some(sc) = get(sec, "seccomp")
                && let Some(s) = sc.get_ref().as_str()
                && !matches!(s, "default" | "unconfined" | "")
            {
                let p = super::check::join_path(&src.base, s);
                let problem = match std::fs::read_to_string(&p) {
                    Err(e) => Some((
                        format!("cannot read the seccomp profile {}: {e}", p.display()),
                        "cannot read",
                    )),
                    Ok(text) => host.check_seccomp_profile(&text).err().map(|e| {
                        (
                            format!("the seccomp profile {} is invalid: {e}", p.display()),
                            "invalid profile",
                        )
                    }),
                };
                if let Some((msg, label)) = problem {
                    problems.push(
                        Problem::new(format!("container `{}`: {msg}", name.get_ref()))
                            .at(&src.path, sc.span())
                            .label(label)
                            .hint(Some(
                                "give \"default\", \"unconfined\" or the path (relative to this file) of a JSON seccomp profile in docker's format",
                            )),
                    );
                }
            }
            if let Some(ef) = get(c, "env_file")
                && let Some(s) = ef.get_ref().as_str()
            {
                let p = super::check::join_path(&src.base, s);
                // The schema check said whether it exists; here, whether it may be read.
                // Its content is never shown (it may hold secrets, or be a file that is
                // not an env file at all): problems name its line.
                match p.is_file().then(|| trust::read(&p, Kind::EnvFile, opts)) {
                    None => {} // missing or not a regular file: the schema check said so
                    Some(Ok(text)) => {
                        if let Err(errs) = parse_env_file(&text) {
                            for (span, msg) in errs {
                                let (line, _) = super::diag::line_col(&text, span.start);
                                problems.push(
                                    Problem::new(format!("{}, line {line}: {msg}", p.display()))
                                        .at(&p, span)
                                        .also(&src.path, ef.span(), "env file named here")
                                        .hint(Some("write one KEY=VALUE per line; lines starting with # are comments")),
                                );
                            }
                        }
                        sources.insert(p, text);
                    }
                    Some(Err(r)) => {
                        problems.push(
                            Problem::new(r.message)
                                .at(&src.path, ef.span())
                                .label("env file named here")
                                .hint(Some(r.hint)),
                        );
                    }
                }
            }
        }
    }
}

/// `memory_swap` includes memory, so it cannot be below it (docker refuses this too).
fn check_swap(src: &Source, limits: &DeTable<'_>, problems: &mut Vec<Problem>) {
    let bytes = |key: &str| -> Option<(i128, Range<usize>)> {
        let v = get(limits, key)?;
        let n: i128 = match v.get_ref() {
            DeValue::String(s) if s.eq_ignore_ascii_case("unlimited") => -1,
            DeValue::String(s) => i128::from(super::values::parse_size(s).ok()?),
            DeValue::Integer(i) => i.as_str().replace('_', "").parse().ok()?,
            _ => return None,
        };
        Some((n, v.span()))
    };
    if let (Some((mem, mem_span)), Some((swap, swap_span))) =
        (bytes("memory"), bytes("memory_swap"))
        && swap >= 0
        && swap < mem
    {
        problems.push(
            Problem::new("`limits.memory_swap` is below `limits.memory`")
                .at(&src.path, swap_span)
                .label("memory plus swap")
                .also(&src.path, mem_span, "memory alone")
                .hint(Some("memory_swap counts memory and swap together: make it at least the memory limit, or \"unlimited\"")),
        );
    }
}

/// The limits a start would refuse on this host, refused here with their position: more
/// `cpus` than the host has, `memory` under the kernel's minimum, a `cpuset` CPU the host
/// lacks (the same rules as `runtime::cgroup::check_limits` at create).
fn check_host_limits(
    src: &Source,
    limits: &DeTable<'_>,
    host: &dyn Host,
    problems: &mut Vec<Problem>,
) {
    if let Some(v) = get(limits, "cpus")
        && let Some(cpus) = match v.get_ref() {
            DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().ok(),
            DeValue::Integer(i) => i.as_str().replace('_', "").parse::<f64>().ok(),
            _ => None,
        }
        && let Some(online) = host.online_cpus()
        && cpus > online as f64
    {
        problems.push(
            Problem::new(format!(
                "`limits.cpus` is {cpus}, more than the {online} CPUs of this host"
            ))
            .at(&src.path, v.span())
            .label("more CPUs than the host has")
            .hint(Some(format!(
                "give at most {online}; a start would refuse it"
            ))),
        );
    }
    if let Some(v) = get(limits, "memory")
        && let DeValue::String(s) = v.get_ref()
        && let Ok(m) = super::values::parse_size(s)
        && m < crate::model::MIN_MEMORY
    {
        problems.push(
            Problem::new(format!(
                "`limits.memory` is {m} bytes, under the minimum of 6MiB"
            ))
            .at(&src.path, v.span())
            .label("too little memory")
            .hint(Some("give at least \"6MiB\"; a start would refuse it")),
        );
    }
    if let Some(v) = get(limits, "cpuset")
        && let DeValue::String(s) = v.get_ref()
        && let Ok(want) = crate::model::parse_cpu_list(s)
        && let Some(cpus) = host.host_cpus()
        && let Some(bad) = want.difference(&cpus).next()
    {
        problems.push(
            Problem::new(format!(
                "`limits.cpuset` names CPU {bad}, which this host does not have ({})",
                crate::model::format_cpu_list(&cpus)
            ))
            .at(&src.path, v.span())
            .label("no such CPU")
            .hint(Some(
                "give CPUs from /sys/devices/system/cpu/online; a start would refuse it",
            )),
        );
    }
}

fn dup(
    id: &str,
    file: &Path,
    span: Range<usize>,
    seen: &mut BTreeMap<String, Location>,
    problems: &mut Vec<Problem>,
) {
    if let Some(first) = seen.get(id) {
        let (kind, name) = id.split_once('.').unwrap_or((id, ""));
        let what = match kind {
            "images" => format!("image `{name}`"),
            "containers" => format!("container `{name}`"),
            "volumes" => format!("volume `{name}`"),
            _ => format!("[{id}]"),
        };
        problems.push(
            Problem::new(format!("{what} is defined twice"))
                .at(file, span)
                .label("defined again here")
                .also(&first.file, first.span.clone(), "first defined here")
                .hint(Some("files of one directory merge into one project: rename one, or delete one of them")),
        );
    } else {
        seen.insert(
            id.to_string(),
            Location {
                file: file.to_path_buf(),
                span,
            },
        );
    }
}

/// Parses `KEY=VALUE` lines; `#` comments and blank lines are skipped, `export ` is allowed,
/// a value may be wrapped in matching quotes.
/// Problems in an env file: the byte range of the line, and what is wrong with it.
pub type EnvFileErrors = Vec<(Range<usize>, String)>;

/// Parses `KEY=VALUE` lines.
pub fn parse_env_file(text: &str) -> Result<BTreeMap<String, String>, EnvFileErrors> {
    let mut env = BTreeMap::new();
    let mut errs = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let content = line.trim_end_matches(['\n', '\r']);
        let trimmed = content.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let lead = content.len() - trimmed.len();
        let body = trimmed.strip_prefix("export ").unwrap_or(trimmed);
        let span = start + lead..start + content.len();
        match body.split_once('=') {
            Some((k, v))
                if !k.is_empty()
                    && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && !k.as_bytes()[0].is_ascii_digit() =>
            {
                let v = v.trim();
                let v = match (v.chars().next(), v.chars().last()) {
                    (Some(q @ ('"' | '\'')), Some(e)) if q == e && v.len() >= 2 => {
                        &v[1..v.len() - 1]
                    }
                    _ => v,
                };
                env.insert(k.to_string(), v.to_string());
            }
            // The name is not echoed: the file may not be an env file at all.
            Some(_) => errs.push((
                span,
                "invalid variable name (letters, digits and '_', not starting with a digit)"
                    .to_string(),
            )),
            None => errs.push((span, "expected KEY=VALUE".to_string())),
        }
    }
    if errs.is_empty() { Ok(env) } else { Err(errs) }
}

fn resolve(base: &Path, rel: &str) -> PathBuf {
    let p = super::check::join_path(base, rel);
    std::fs::canonicalize(&p).unwrap_or(p)
}

fn merge(
    m: &mut Manifest,
    src: &Source,
    file: ManifestFile,
    opts: LoadOptions,
    problems: &mut Vec<Problem>,
) {
    for (name, mut img) in file.images {
        if let Some(source) = &mut img.source {
            source.0 = resolve(&src.base, source).to_string_lossy().into_owned();
        }
        if img.tag.is_none()
            && let Some(t) = img.r#ref.as_deref().and_then(ref_tag)
        {
            img.tag = Some(super::values::ImageTag(t));
        }
        m.defined_in
            .insert(format!("images.{name}"), src.path.clone());
        m.images.insert(name, img);
    }
    for (name, v) in file.volumes {
        m.defined_in
            .insert(format!("volumes.{name}"), src.path.clone());
        m.volumes.insert(name, v);
    }
    for (name, n) in file.networks {
        m.defined_in
            .insert(format!("networks.{name}"), src.path.clone());
        m.networks.insert(name, n);
    }
    for (name, mut c) in file.containers {
        if let Some(ef) = &mut c.env_file {
            let p = resolve(&src.base, ef);
            match trust::read(&p, Kind::EnvFile, opts) {
                Ok(text) => {
                    if let Ok(vars) = parse_env_file(&text) {
                        for (k, v) in vars {
                            c.env.entry(k).or_insert(v);
                        }
                    }
                }
                Err(r) => problems.push(
                    Problem::new(r.message)
                        .at(&src.path, 0..0)
                        .hint(Some(r.hint)),
                ),
            }
            ef.0 = p.to_string_lossy().into_owned();
        }
        if let Some(sc) = c.security.as_mut().and_then(|s| s.seccomp.as_mut())
            && !matches!(sc.as_str(), "default" | "unconfined")
        {
            *sc = super::check::join_path(&src.base, sc)
                .to_string_lossy()
                .into_owned();
        }
        for v in &mut c.volumes {
            if let VolumeSource::Bind(b) = &mut v.source {
                *b = resolve(&src.base, b).to_string_lossy().into_owned();
            }
        }
        m.defined_in
            .insert(format!("containers.{name}"), src.path.clone());
        m.containers.insert(name, c);
    }
    if let Some(r) = file.retention {
        m.retention = r;
    }
}
