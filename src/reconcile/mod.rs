//! Desired vs observed state: the pure plan, and its execution.
//!
//! ```text
//! Manifest ──Desired::from_manifest(digest_of)──▶ Desired ─┐
//!                                                          ├─▶ plan() ─▶ Plan (Display: terraform-like)
//! store ──observe::observe()────────────────────▶ Observed ─┘
//! ```
//! [`plan`] is pure: digests of image sources are computed by the caller and carried in
//! [`Desired`], and everything known about the store is carried in [`Observed`].
//! [`execute::apply`] observes, plans and runs the plan under the store lock, journaled.

pub mod execute;
pub mod observe;
pub mod spec;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use spec::{ContainerSpec, Reason, SpecHealth, SpecLimits, SpecVolume, diff};

use crate::manifest::{DesiredState, Manifest};
use crate::reference::Reference;

/// Image config an imported rootfs lacks, from an `[images]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    pub workdir: Option<String>,
}

/// An image the manifest wants: a source tarball, its digest, and the tag it gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredImage {
    /// The `[images.NAME]` section name.
    pub name: String,
    /// Absolute path of the tarball.
    pub source: PathBuf,
    /// sha256 hex of the source file's bytes, as the store's `sources` table keys it.
    pub source_digest: String,
    /// The normalized tag (`app:1.1`).
    pub tag: String,
    pub config: ImageConfig,
}

/// An image the manifest wants from a registry (`[images.NAME] ref = "..."`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredPull {
    /// The `[images.NAME]` section name.
    pub name: String,
    /// The reference as written (`127.0.0.1:5000/team/web:1.4`, `name@sha256:…`).
    pub reference: String,
    /// The repository as wharf records it (docker's familiar name).
    pub repo: String,
    /// The digest the reference names (`sha256:…`): such an image never changes.
    pub pinned: Option<String>,
    /// The normalized local tags it gets: the ref's own (`repo:tag`, or `repo@sha256:…`) and
    /// the section's `tag`.
    pub tags: Vec<String>,
    /// The digest the registry has for the tag now (`apply --pull`, filled by the caller;
    /// `None`: not asked, the digest recorded at the first pull stands).
    pub resolved: Option<String>,
}

/// A volume the manifest wants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredVolume {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// A container the manifest wants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredContainer {
    pub name: String,
    pub spec: ContainerSpec,
    /// `spec.spec_hash()`, computed once.
    pub spec_hash: String,
    pub state: DesiredState,
}

/// A network the manifest's containers join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredNetwork {
    /// The full name (`shop_default`, or an external network's own).
    pub name: String,
    pub subnet: Option<String>,
    pub internal: bool,
    /// Made outside the project: it must exist; apply neither creates nor removes it.
    pub external: bool,
}

/// What the manifest wants, with source digests filled in.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Desired {
    pub project: String,
    pub images: Vec<DesiredImage>,
    pub volumes: Vec<DesiredVolume>,
    pub containers: Vec<DesiredContainer>,
    #[serde(default)]
    pub networks: Vec<DesiredNetwork>,
    /// Images pulled from registries.
    #[serde(default)]
    pub pulls: Vec<DesiredPull>,
}

impl Desired {
    /// Builds the desired state of a loaded manifest. `digest_of(path)` returns the sha256 hex
    /// of a source tarball (the caller reads it; this stays free of I/O).
    pub fn from_manifest<E>(
        m: &Manifest,
        mut digest_of: impl FnMut(&Path) -> Result<String, E>,
    ) -> Result<Desired, E> {
        let mut images = Vec::new();
        let mut pulls = Vec::new();
        for (name, img) in &m.images {
            let tag = img.tag.as_deref().map(normalize_ref);
            if let Some(r) = &img.r#ref {
                pulls.extend(DesiredPull::new(name, r, tag));
                continue;
            }
            let (Some(source), Some(tag)) = (&img.source, tag) else {
                continue; // the loader refuses such a section
            };
            let source = PathBuf::from(&source.0);
            let source_digest = digest_of(&source)?;
            images.push(DesiredImage {
                name: name.clone(),
                source,
                source_digest,
                tag,
                config: ImageConfig {
                    cmd: img.cmd.clone(),
                    entrypoint: img.entrypoint.clone(),
                    env: img.env.clone(),
                    workdir: img.workdir.as_ref().map(|w| w.0.clone()),
                },
            });
        }
        let volumes = m
            .volumes
            .iter()
            .map(|(name, v)| DesiredVolume {
                name: name.clone(),
                labels: v.labels.clone(),
            })
            .collect();
        let containers: Vec<DesiredContainer> = m
            .containers
            .iter()
            .map(|(name, c)| {
                let spec =
                    ContainerSpec::from_section(c, &m.project, &m.networks, m.default_network);
                DesiredContainer::new(name, spec, c.state)
            })
            .collect();
        // The networks the containers join, and every declared one.
        let mut networks: Vec<DesiredNetwork> = Vec::new();
        let full = |key: &str, external: bool| {
            if external {
                key.to_string()
            } else {
                format!("{}_{key}", m.project)
            }
        };
        for (key, n) in &m.networks {
            networks.push(DesiredNetwork {
                name: full(key, n.external),
                subnet: n.subnet.as_ref().map(|s| s.0.clone()),
                internal: n.internal,
                external: n.external,
            });
        }
        for c in &containers {
            for n in &c.spec.networks {
                if !networks.iter().any(|d| d.name == *n) {
                    networks.push(DesiredNetwork {
                        name: n.clone(),
                        subnet: None,
                        internal: false,
                        external: false,
                    });
                }
            }
        }
        Ok(Desired {
            project: m.project.clone(),
            images,
            volumes,
            containers,
            networks,
            pulls,
        })
    }
}

impl DesiredPull {
    /// The pull of a `ref` (validated by the loader; `None` if it does not parse).
    fn new(name: &str, reference: &str, tag: Option<String>) -> Option<DesiredPull> {
        let r = crate::reference::registry_ref(reference).ok()?;
        let mut tags: Vec<String> = crate::manifest::ref_tag(reference).into_iter().collect();
        tags.extend(tag);
        tags.dedup();
        Some(DesiredPull {
            name: name.to_string(),
            reference: reference.to_string(),
            repo: crate::reference::familiar(&r),
            pinned: r.digest().map(str::to_string),
            tags,
            resolved: None,
        })
    }

    /// What to pull: the digest the plan settled on, else the reference as written.
    pub fn what(&self, digest: Option<&str>) -> String {
        match digest {
            Some(d) => format!("{}@{d}", self.repo),
            None => self.reference.clone(),
        }
    }
}

impl DesiredContainer {
    pub fn new(name: &str, spec: ContainerSpec, state: DesiredState) -> Self {
        DesiredContainer {
            name: name.to_string(),
            spec_hash: spec.spec_hash(),
            spec,
            state,
        }
    }
}

/// `app` → `app:latest`; anything unparsable is kept as written.
pub fn normalize_ref(s: &str) -> String {
    Reference::parse(s).map_or_else(|_| s.to_string(), |r| r.to_string())
}

/// A container's state in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObservedState {
    Created,
    Running,
    Exited,
    Dead,
}

/// A container in the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservedContainer {
    pub id: String,
    pub name: String,
    /// The owning project; `None` for `wharf run` containers.
    pub project: Option<String>,
    /// The reference as recorded.
    pub image_ref: String,
    pub image_id: String,
    pub spec_hash: Option<String>,
    /// The stored effective spec, when it parses as one.
    pub spec: Option<ContainerSpec>,
    pub state: ObservedState,
    /// The host ports it publishes (its config's, so `wharf run -p` ones too).
    pub ports: Vec<crate::model::PortSpec>,
}

/// A volume in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedVolume {
    pub name: String,
    pub project: Option<String>,
}

/// What the store has.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    /// Normalized tag (`app:1.1`) → image id.
    pub tags: BTreeMap<String, String>,
    /// Source digest → the image id it was imported as.
    pub sources: BTreeMap<String, String>,
    /// All containers (of every project: names are global).
    pub containers: Vec<ObservedContainer>,
    /// All volumes.
    pub volumes: Vec<ObservedVolume>,
    /// The config of the images that desired sources were imported as (image id → the part
    /// of its config an `[images]` section sets). An image whose config differs from the
    /// section's is imported again with the new config (its layer is reused).
    #[serde(default)]
    pub image_configs: BTreeMap<String, ImageConfig>,
    /// Every network: name → (owning project, subnet).
    #[serde(default)]
    pub networks: BTreeMap<String, (Option<String>, String)>,
    /// The images desired pulls have in the store, by reference as written.
    #[serde(default)]
    pub pulled: BTreeMap<String, ObservedPull>,
}

/// A pulled image the store holds for a manifest's `ref`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedPull {
    pub image_id: String,
    /// The manifest digest it was pulled by (`sha256:…`), when recorded.
    pub digest: Option<String>,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Create a bridge network of the project.
    CreateNetwork {
        name: String,
        subnet: Option<String>,
        internal: bool,
    },
    CreateVolume {
        name: String,
        labels: BTreeMap<String, String>,
    },
    /// Import a source whose digest the store lacks, and tag it.
    Import {
        image: String,
        source: PathBuf,
        digest: String,
        tag: String,
        config: ImageConfig,
    },
    /// Pull an image from a registry (the store lacks it, or `--pull` found a new digest),
    /// and tag it.
    Pull {
        image: String,
        /// The reference as written.
        reference: String,
        /// What is pulled: `repo@digest` when the digest is known, else the reference.
        pull: String,
        /// The digest it will have (`None`: resolved by the pull itself).
        digest: Option<String>,
        /// The digest the store has for it now, when it is replaced.
        previous: Option<String>,
        tags: Vec<String>,
    },
    /// Point a tag at an image the store has (the source was imported before).
    Tag {
        tag: String,
        image_id: String,
        /// The image id the tag pointed at before, if any.
        previous: Option<String>,
    },
    /// Create a container, and start it when `start`.
    Create {
        name: String,
        spec: ContainerSpec,
        spec_hash: String,
        start: bool,
    },
    /// Remove the container and create it again from the new spec.
    Recreate {
        name: String,
        id: String,
        spec: ContainerSpec,
        spec_hash: String,
        reasons: Vec<Reason>,
        start: bool,
    },
    Start {
        name: String,
        id: String,
    },
    Stop {
        name: String,
        id: String,
    },
    /// Remove a container of this project that the manifest no longer declares.
    RemoveOrphan {
        name: String,
        id: String,
        running: bool,
    },
}

/// A declared container that cannot be planned: its name is taken by a container this project
/// does not own, a host port it publishes is another project's, or a network it needs is
/// not there as declared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    pub name: String,
    /// The owner: another project, or `None` for a `wharf run` container.
    pub owner: Option<String>,
    /// What else blocks it (None: its name is taken).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(r) = &self.reason {
            return write!(f, "container {}: {r}", self.name);
        }
        match &self.owner {
            Some(p) => write!(
                f,
                "container name {} is taken by project {p}; rename the container in the manifest",
                self.name
            ),
            None => write!(
                f,
                "container name {} is taken by a container made with `wharf run`; remove it (`wharf rm -f {}`) or rename the container in the manifest",
                self.name, self.name
            ),
        }
    }
}

/// Why `d` cannot be planned besides its name: a network it joins is missing (external) or
/// exists with another subnet or owner, or a host port it publishes is published by a
/// container of another project (or of `wharf run`).
fn network_conflict(
    project: &str,
    d: &DesiredContainer,
    desired: &Desired,
    observed: &Observed,
) -> Option<String> {
    for n in &d.spec.networks {
        let want = desired.networks.iter().find(|w| w.name == *n);
        match (observed.networks.get(n), want) {
            (None, Some(w)) if w.external => {
                return Some(format!(
                    "the external network {n} does not exist; create it first (`wharf network create {n}`)"
                ));
            }
            (Some((owner, _)), Some(w)) if !w.external && owner.as_deref() != Some(project) => {
                return Some(format!(
                    "a network named {n} exists already and is not this project's; remove it or rename the project"
                ));
            }
            (Some((_, subnet)), Some(w))
                if !w.external && w.subnet.as_ref().is_some_and(|s| s != subnet) =>
            {
                return Some(format!(
                    "the network {n} exists with the subnet {subnet}, not {}; `wharf down` the project to change it",
                    w.subnet.as_deref().unwrap_or_default()
                ));
            }
            _ => {}
        }
    }
    let mine: Vec<crate::model::PortSpec> = d
        .spec
        .ports
        .iter()
        .filter_map(|p| crate::model::PortSpec::parse(p).ok())
        .filter(|p| p.host_port.is_some())
        .collect();
    if mine.is_empty() {
        return None;
    }
    for o in &observed.containers {
        if o.project.as_deref() == Some(project) {
            continue;
        }
        for theirs in &o.ports {
            for p in &mine {
                if let Some(port) = overlap(p, theirs) {
                    let owner = o
                        .project
                        .as_deref()
                        .map_or_else(|| "`wharf run`".to_string(), |p| format!("project {p}"));
                    return Some(format!(
                        "the host port {port}/{} is published by container {} of {owner}; publish another port",
                        p.protocol, o.name
                    ));
                }
            }
        }
    }
    None
}

/// The first host port two publications share (same protocol, overlapping addresses).
fn overlap(a: &crate::model::PortSpec, b: &crate::model::PortSpec) -> Option<u16> {
    let (ha, hb) = (a.host_port?, b.host_port?);
    let ip_overlap = a.host_ip.is_none() || b.host_ip.is_none() || a.host_ip == b.host_ip;
    if a.protocol != b.protocol || !ip_overlap {
        return None;
    }
    let (a_end, b_end) = (ha as u32 + a.range as u32, hb as u32 + b.range as u32);
    let start = ha.max(hb) as u32;
    (start < a_end.min(b_end)).then_some(start as u16)
}

/// The actions that converge observed to desired, in dependency order: volumes, imports and
/// tags, orphan removals, then containers (stop, recreate, create, start).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub project: String,
    pub actions: Vec<Action>,
    /// Declared containers that cannot be created (name owned by someone else).
    pub conflicts: Vec<Conflict>,
    /// Declared containers that need nothing.
    pub unchanged: usize,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty() && self.conflicts.is_empty()
    }

    /// Counts for the summary line.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for a in &self.actions {
            match a {
                Action::Import { .. } => s.import += 1,
                Action::Pull { .. } => s.pull += 1,
                Action::Create { .. }
                | Action::CreateVolume { .. }
                | Action::CreateNetwork { .. } => s.create += 1,
                Action::Recreate { .. } => s.recreate += 1,
                Action::RemoveOrphan { .. } => s.remove += 1,
                Action::Tag { .. } | Action::Start { .. } | Action::Stop { .. } => s.other += 1,
            }
        }
        s
    }
}

/// How many actions of each kind a plan has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub import: usize,
    /// Containers and volumes to create.
    pub create: usize,
    pub recreate: usize,
    pub remove: usize,
    /// Tags, starts and stops.
    pub other: usize,
    pub pull: usize,
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// `sha256:ab12…`: a digest as a plan shows it.
fn short_digest(d: &str) -> String {
    let hex = d.strip_prefix("sha256:").unwrap_or(d);
    format!("sha256:{}…", hex.get(..12).unwrap_or(hex))
}

/// Diffs desired against observed. Pure: no I/O, same input, same plan.
pub fn plan(desired: &Desired, observed: &Observed) -> Plan {
    let project = desired.project.as_str();
    let mut p = Plan {
        project: project.to_string(),
        ..Plan::default()
    };

    // Networks: the project's, created when missing (an external one must exist).
    for n in &desired.networks {
        if !n.external && !observed.networks.contains_key(&n.name) {
            p.actions.push(Action::CreateNetwork {
                name: n.name.clone(),
                subnet: n.subnet.clone(),
                internal: n.internal,
            });
        }
    }

    // Volumes: create what is missing; an existing volume is used whoever owns it.
    let existing: BTreeSet<&str> = observed.volumes.iter().map(|v| v.name.as_str()).collect();
    for v in &desired.volumes {
        if !existing.contains(v.name.as_str()) {
            p.actions.push(Action::CreateVolume {
                name: v.name.clone(),
                labels: v.labels.clone(),
            });
        }
    }

    // Images: what each desired tag will point at (None: not known until imported).
    let mut tag_target: BTreeMap<&str, Option<&str>> = BTreeMap::new();
    for img in &desired.images {
        let imported = observed.sources.get(&img.source_digest).filter(|id| {
            observed
                .image_configs
                .get(*id)
                .is_none_or(|c| *c == img.config)
        });
        match imported {
            None => {
                p.actions.push(Action::Import {
                    image: img.name.clone(),
                    source: img.source.clone(),
                    digest: img.source_digest.clone(),
                    tag: img.tag.clone(),
                    config: img.config.clone(),
                });
                tag_target.insert(&img.tag, None);
            }
            Some(id) => {
                let current = observed.tags.get(&img.tag);
                if current != Some(id) {
                    p.actions.push(Action::Tag {
                        tag: img.tag.clone(),
                        image_id: id.clone(),
                        previous: current.cloned(),
                    });
                }
                tag_target.insert(&img.tag, Some(id));
            }
        }
    }

    // Pulled images: a tag whose digest is to change gets (old digest, new digest).
    let mut pull_change: BTreeMap<&str, (Option<&str>, Option<&str>)> = BTreeMap::new();
    for want in &desired.pulls {
        let have = observed.pulled.get(&want.reference);
        let stale = match have {
            None => true,
            Some(h) => {
                want.pinned.is_none() && want.resolved.is_some() && h.digest != want.resolved
            }
        };
        if stale {
            let digest = want.pinned.as_deref().or(want.resolved.as_deref());
            let previous = have.and_then(|h| h.digest.as_deref());
            p.actions.push(Action::Pull {
                image: want.name.clone(),
                reference: want.reference.clone(),
                pull: want.what(digest),
                digest: digest.map(str::to_string),
                previous: previous.map(str::to_string),
                tags: want.tags.clone(),
            });
            for t in &want.tags {
                tag_target.insert(t, None);
                pull_change.insert(t, (previous, digest));
            }
            continue;
        }
        let Some(h) = have else { continue };
        for t in &want.tags {
            let current = observed.tags.get(t);
            // `repo@sha256:…` is no tag: the pull recorded that digest.
            if current != Some(&h.image_id) && !t.contains('@') {
                p.actions.push(Action::Tag {
                    tag: t.clone(),
                    image_id: h.image_id.clone(),
                    previous: current.cloned(),
                });
            }
            tag_target.insert(t, Some(&h.image_id));
        }
    }

    // Containers.
    let by_name: BTreeMap<&str, &ObservedContainer> = observed
        .containers
        .iter()
        .map(|c| (c.name.as_str(), c))
        .collect();
    let declared: BTreeSet<&str> = desired.containers.iter().map(|c| c.name.as_str()).collect();

    let mut orphans = Vec::new();
    let mut all: Vec<&ObservedContainer> = observed.containers.iter().collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    for c in all {
        if c.project.as_deref() == Some(project) && !declared.contains(c.name.as_str()) {
            orphans.push(Action::RemoveOrphan {
                name: c.name.clone(),
                id: c.id.clone(),
                running: c.state == ObservedState::Running,
            });
        }
    }

    let (mut stops, mut recreates, mut creates, mut starts) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut wanted: Vec<&DesiredContainer> = desired.containers.iter().collect();
    wanted.sort_by(|a, b| a.name.cmp(&b.name));
    for d in wanted {
        let want_running = d.state == DesiredState::Running;
        if let Some(reason) = network_conflict(project, d, desired, observed) {
            p.conflicts.push(Conflict {
                name: d.name.clone(),
                owner: None,
                reason: Some(reason),
            });
            continue;
        }
        let Some(o) = by_name.get(d.name.as_str()) else {
            creates.push(Action::Create {
                name: d.name.clone(),
                spec: d.spec.clone(),
                spec_hash: d.spec_hash.clone(),
                start: want_running,
            });
            continue;
        };
        if o.project.as_deref() != Some(project) {
            p.conflicts.push(Conflict {
                name: d.name.clone(),
                owner: o.project.clone(),
                reason: None,
            });
            continue;
        }
        let mut reasons = Vec::new();
        if o.spec_hash.as_deref() != Some(d.spec_hash.as_str()) {
            if let Some(old) = &o.spec {
                reasons = diff(old, &d.spec);
            }
            if reasons.is_empty() {
                reasons.push(Reason::changed(
                    "spec (the stored spec is unreadable or from another wharf version)",
                ));
            }
        }
        // Same reference, different image behind it.
        if reasons.iter().all(|r| r.field != "image") {
            let target: Option<Option<&str>> = match tag_target.get(d.spec.image.as_str()) {
                Some(t) => Some(*t),
                None => observed.tags.get(&d.spec.image).map(|s| Some(s.as_str())),
            };
            let change = pull_change.get(d.spec.image.as_str());
            match target {
                Some(None) if change.is_some() => {
                    let (old, new) = change.copied().unwrap_or_default();
                    let old = match old {
                        Some(o) => short_digest(o),
                        None => format!("({})", short(&o.image_id)),
                    };
                    reasons.push(Reason {
                        field: "image".into(),
                        old: Some(format!("{} {old}", d.spec.image)),
                        new: Some(new.map_or_else(|| "(new pull)".into(), short_digest)),
                        show_values: true,
                    });
                }
                Some(None) => reasons.push(Reason {
                    field: "image".into(),
                    old: Some(format!("{} ({})", d.spec.image, short(&o.image_id))),
                    new: Some(format!("{} (new import)", d.spec.image)),
                    show_values: true,
                }),
                Some(Some(id)) if id != o.image_id => reasons.push(Reason {
                    field: "image".into(),
                    old: Some(format!("{} ({})", d.spec.image, short(&o.image_id))),
                    new: Some(format!("{} ({})", d.spec.image, short(id))),
                    show_values: true,
                }),
                _ => {}
            }
        }
        if o.state == ObservedState::Dead {
            reasons.push(Reason::changed("state (the container is dead)"));
        }
        if !reasons.is_empty() {
            recreates.push(Action::Recreate {
                name: d.name.clone(),
                id: o.id.clone(),
                spec: d.spec.clone(),
                spec_hash: d.spec_hash.clone(),
                reasons,
                start: want_running,
            });
            continue;
        }
        let running = o.state == ObservedState::Running;
        if want_running && !running {
            starts.push(Action::Start {
                name: d.name.clone(),
                id: o.id.clone(),
            });
        } else if !want_running && running {
            stops.push(Action::Stop {
                name: d.name.clone(),
                id: o.id.clone(),
            });
        } else {
            p.unchanged += 1;
        }
    }
    p.actions.extend(orphans);
    p.actions.extend(stops);
    p.actions.extend(recreates);
    p.actions.extend(creates);
    p.actions.extend(starts);
    // A network that only blocked containers would join is not made: a refused container
    // leaves nothing behind.
    if !p.conflicts.is_empty() {
        let blocked: BTreeSet<&str> = p.conflicts.iter().map(|c| c.name.as_str()).collect();
        let used: BTreeSet<&str> = desired
            .containers
            .iter()
            .filter(|d| !blocked.contains(d.name.as_str()))
            .flat_map(|d| d.spec.networks.iter().map(String::as_str))
            .collect();
        p.actions.retain(
            |a| !matches!(a, Action::CreateNetwork { name, .. } if !used.contains(name.as_str())),
        );
    }
    p
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::CreateVolume { name, .. } => write!(f, "+ volume {name}"),
            Action::CreateNetwork { name, subnet, .. } => match subnet {
                Some(s) => write!(f, "+ network {name} ({s})"),
                None => write!(f, "+ network {name}"),
            },
            Action::Import {
                source,
                digest,
                tag,
                ..
            } => write!(
                f,
                "+ import {tag} from {} (sha256:{})",
                source.display(),
                short(digest)
            ),
            Action::Pull {
                reference,
                digest,
                previous,
                tags,
                ..
            } => {
                let tag = tags.last().map_or(reference.as_str(), String::as_str);
                match (previous, digest) {
                    (Some(old), Some(new)) => write!(
                        f,
                        "~ pull {tag} from {reference}: {} → {}",
                        short_digest(old),
                        short_digest(new)
                    ),
                    (_, Some(new)) => {
                        write!(f, "+ pull {tag} from {reference} ({})", short_digest(new))
                    }
                    (_, None) => write!(f, "+ pull {tag} from {reference}"),
                }
            }
            Action::Tag {
                tag,
                image_id,
                previous,
            } => match previous {
                Some(prev) => write!(f, "~ tag {tag}: {} → {}", short(prev), short(image_id)),
                None => write!(f, "+ tag {tag} → {}", short(image_id)),
            },
            Action::Create {
                name, spec, start, ..
            } => {
                write!(f, "+ create {name} ({})", spec.image)?;
                if !start {
                    f.write_str(", stopped")?;
                }
                Ok(())
            }
            Action::Recreate { name, reasons, .. } => {
                write!(f, "~ recreate {name}")?;
                for r in reasons {
                    write!(f, "\n    {r}")?;
                }
                Ok(())
            }
            Action::Start { name, .. } => write!(f, "> start {name}"),
            Action::Stop { name, .. } => write!(f, ". stop {name}"),
            Action::RemoveOrphan { name, running, .. } => {
                write!(f, "- remove {name} (no longer declared")?;
                if *running {
                    f.write_str("; running, will be stopped")?;
                }
                f.write_str(")")
            }
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.conflicts {
            writeln!(f, "! {c}")?;
        }
        if self.actions.is_empty() {
            let n = self.unchanged;
            let plural = |n: usize| if n == 1 { "" } else { "s" };
            if !self.conflicts.is_empty() {
                let b = self.conflicts.len();
                return write!(
                    f,
                    "Nothing else to do: {b} container{} blocked (above), {n} up to date.",
                    plural(b)
                );
            }
            return write!(f, "No changes. {n} container{} up to date.", plural(n));
        }
        for a in &self.actions {
            writeln!(f, "{a}")?;
        }
        let s = self.summary();
        f.write_str("\nPlan: ")?;
        if s.pull > 0 {
            write!(f, "{} to pull, ", s.pull)?;
        }
        write!(
            f,
            "{} to import, {} to create, {} to recreate, {} to remove, {} to change otherwise.",
            s.import, s.create, s.recreate, s.remove, s.other
        )
    }
}

#[cfg(test)]
mod tests;
