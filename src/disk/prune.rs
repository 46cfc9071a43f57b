//! Pruning: a pure selection ([`select`]: objects + scope + filters → what to remove) and an
//! executor ([`execute`]) that removes it through the same library calls `rm`, `rmi` and
//! `volume rm` use, re-checking each object's safety at removal time.
//!
//! docker's rules, in docker's order: stopped containers first (never a running one, never
//! one whose run owner is alive); then images no *remaining* container uses (dangling ones,
//! or with `-a` every unused one), so an image freed by the container prune goes in the same
//! pass; then volumes no remaining container mounts (anonymous ones, or with `-a` on
//! `volume prune` every unused one, as docker 23+ does). Filters (`until`, `label`,
//! `label!`) apply to every type and combine with AND. Image times are import times (when the
//! image came into this store); image labels are the config's `Labels`.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::Result;
use serde::Serialize;

use super::filter::Filters;
use crate::container;
use crate::image::{self, Removed};
use crate::store::{Store, fsutil};
use crate::volume;

/// A container as pruning sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerObj {
    pub id: String,
    pub name: String,
    pub image_id: String,
    pub created_at: i64,
    pub labels: BTreeMap<String, String>,
    /// Running, or its run's owner (foreground wharf or monitor) is alive.
    pub running: bool,
    /// Named and anonymous volumes it mounts.
    pub volumes: Vec<String>,
}

/// An image as pruning sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageObj {
    pub id: String,
    pub tags: Vec<String>,
    /// When it was imported into this store (ns).
    pub created_at: i64,
    /// The config's `Labels`.
    pub labels: BTreeMap<String, String>,
    pub layers: Vec<String>,
}

/// A volume as pruning sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeObj {
    pub name: String,
    pub created_at: i64,
    pub labels: BTreeMap<String, String>,
    pub anonymous: bool,
}

/// Everything in a store that pruning may consider.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub containers: Vec<ContainerObj>,
    pub images: Vec<ImageObj>,
    pub volumes: Vec<VolumeObj>,
}

impl Inventory {
    /// A plan removing exactly the named objects that exist here, for callers that select by
    /// their own rules (retention policies, apply): [`execute`] then removes them with the
    /// same safety re-checks. An image listed here is removed even when tagged.
    pub fn plan_of(&self, containers: &[&str], images: &[&str], volumes: &[&str]) -> Plan {
        Plan {
            containers: self
                .containers
                .iter()
                .filter(|c| containers.contains(&c.id.as_str()))
                .cloned()
                .collect(),
            images: self
                .images
                .iter()
                .filter(|i| images.contains(&i.id.as_str()))
                .cloned()
                .collect(),
            volumes: self
                .volumes
                .iter()
                .filter(|v| volumes.contains(&v.name.as_str()))
                .cloned()
                .collect(),
        }
    }
}

/// Which images an image prune takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageScope {
    /// Untagged images no container uses (docker's default).
    Dangling,
    /// Every image no container uses (`-a`).
    All,
}

/// Which volumes a volume prune takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeScope {
    /// Anonymous volumes no container mounts (docker 23+'s default, and `system prune
    /// --volumes`).
    Anonymous,
    /// Every volume no container mounts (`volume prune -a`).
    All,
}

/// What a prune covers.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub containers: bool,
    pub images: Option<ImageScope>,
    pub volumes: Option<VolumeScope>,
}

/// What to remove, in removal order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub containers: Vec<ContainerObj>,
    pub images: Vec<ImageObj>,
    pub volumes: Vec<VolumeObj>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.containers.is_empty() && self.images.is_empty() && self.volumes.is_empty()
    }
}

/// The pure selection: what `scope` with `filters` removes from `inv`.
pub fn select(inv: &Inventory, scope: &Scope, filters: &Filters) -> Plan {
    let mut plan = Plan::default();
    if scope.containers {
        plan.containers = inv
            .containers
            .iter()
            .filter(|c| !c.running && filters.matches(c.created_at, &c.labels))
            .cloned()
            .collect();
    }
    let removed: HashSet<&str> = plan.containers.iter().map(|c| c.id.as_str()).collect();
    let remaining = || {
        inv.containers
            .iter()
            .filter(|c| !removed.contains(c.id.as_str()))
    };
    if let Some(s) = scope.images {
        let used: HashSet<&str> = remaining().map(|c| c.image_id.as_str()).collect();
        plan.images = inv
            .images
            .iter()
            .filter(|i| {
                !used.contains(i.id.as_str())
                    && (s == ImageScope::All || i.tags.is_empty())
                    && filters.matches(i.created_at, &i.labels)
            })
            .cloned()
            .collect();
    }
    if let Some(s) = scope.volumes {
        let used: HashSet<&str> = remaining()
            .flat_map(|c| c.volumes.iter().map(String::as_str))
            .collect();
        plan.volumes = inv
            .volumes
            .iter()
            .filter(|v| {
                !used.contains(v.name.as_str())
                    && (s == VolumeScope::All || v.anonymous)
                    && filters.matches(v.created_at, &v.labels)
            })
            .cloned()
            .collect();
    }
    plan
}

/// Reads the store's containers, images and volumes (reconciling dead runs first).
pub fn inventory(store: &Store) -> Result<Inventory> {
    crate::lifecycle::recover(store)?;
    let containers = container::list(store)?
        .into_iter()
        .map(|r| ContainerObj {
            running: r.is_up() || r.live_monitor().is_some(),
            volumes: r
                .config
                .volumes
                .iter()
                .filter(|v| v.kind == crate::model::VolumeKind::Named)
                .map(|v| v.source.clone())
                .collect(),
            id: r.id,
            name: r.name,
            image_id: r.image_id,
            created_at: r.created_at,
            labels: r.labels,
        })
        .collect();
    let images = image::list(store)?
        .into_iter()
        .map(|i| ImageObj {
            labels: image::load_config(store, &i.id)
                .map(|c| c.config.labels)
                .unwrap_or_default(),
            id: i.id,
            tags: i.tags,
            created_at: i.imported_at,
            layers: i.layers,
        })
        .collect();
    let volumes = volume::list(store)?
        .into_iter()
        .map(|v| VolumeObj {
            anonymous: v.anonymous(),
            name: v.name,
            created_at: v.created_at,
            labels: v.labels,
        })
        .collect();
    Ok(Inventory {
        containers,
        images,
        volumes,
    })
}

/// Bytes the plan would free (st_blocks, like `du`): container directories, config blobs,
/// layers no kept image lists, volume directories.
pub fn estimate(store: &Store, inv: &Inventory, plan: &Plan) -> u64 {
    let mut total = 0;
    for c in &plan.containers {
        total += fsutil::disk_usage(&store.container_dir(&c.id));
    }
    let gone: HashSet<&str> = plan.images.iter().map(|i| i.id.as_str()).collect();
    let kept_layers: HashSet<&str> = inv
        .images
        .iter()
        .filter(|i| !gone.contains(i.id.as_str()))
        .flat_map(|i| i.layers.iter().map(String::as_str))
        .collect();
    let mut freed_layers = HashSet::new();
    for i in &plan.images {
        total += fsutil::disk_usage(&store.blob_path(&i.id));
        for l in &i.layers {
            if !kept_layers.contains(l.as_str()) && freed_layers.insert(l.as_str()) {
                total += fsutil::disk_usage(&store.layer_dir(l));
            }
        }
    }
    for v in &plan.volumes {
        total += fsutil::disk_usage(&store.volumes_dir().join(&v.name));
    }
    total
}

/// What a prune did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Container ids removed.
    pub containers: Vec<String>,
    /// Tags untagged and images and layers deleted, in docker's words.
    pub images: Vec<Removed>,
    /// Volume names removed.
    pub volumes: Vec<String>,
    /// Objects of the plan that were kept because their state changed since the plan
    /// (started, used, tagged), with the reason.
    pub skipped: Vec<String>,
    /// Bytes freed (st_blocks, like `du`).
    pub reclaimed: u64,
}

/// Removes what `plan` lists. Each object's safety is checked again at removal (a container
/// started since the plan, an image a new container uses, a volume newly mounted are kept
/// and reported in `skipped`). Images go under the store lock, followed by layer GC.
pub fn execute(store: &Store, plan: &Plan) -> Result<Report> {
    let mut r = Report::default();
    for c in &plan.containers {
        let size = fsutil::disk_usage(&store.container_dir(&c.id));
        match crate::lifecycle::remove(store, &c.id, false, false) {
            Ok(_) => {
                r.containers.push(c.id.clone());
                r.reclaimed += size;
            }
            Err(e) => r.skipped.push(format!("container {}: {e:#}", c.name)),
        }
    }
    if !plan.images.is_empty() {
        let _guard = store.lock()?;
        let mut deleted = 0;
        for i in &plan.images {
            let blob = fsutil::disk_usage(&store.blob_path(&i.id));
            match image::remove_unused(store, &i.id, i.tags.is_empty())? {
                Some(untagged) => {
                    r.images.extend(untagged.into_iter().map(Removed::Untagged));
                    r.images.push(Removed::Deleted(i.id.clone()));
                    r.reclaimed += blob;
                    deleted += 1;
                }
                None => r.skipped.push(format!(
                    "image {}: now used by a container or tagged",
                    image::short(&i.id)
                )),
            }
        }
        if deleted > 0 {
            let sizes: HashMap<String, u64> = image::unused_layers(store)?
                .into_iter()
                .map(|l| {
                    let s = fsutil::disk_usage(&store.layer_dir(&l));
                    (l, s)
                })
                .collect();
            for l in image::gc_layers(store)? {
                r.reclaimed += sizes.get(&l).copied().unwrap_or(0);
                r.images.push(Removed::Deleted(l));
            }
        }
    }
    for v in &plan.volumes {
        let size = fsutil::disk_usage(&store.volumes_dir().join(&v.name));
        match volume::remove(store, &v.name, true) {
            Ok(true) => {
                r.volumes.push(v.name.clone());
                r.reclaimed += size;
            }
            Ok(false) => {}
            Err(e) => r.skipped.push(format!("volume {}: {e:#}", v.name)),
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::filter::{self, PRUNE_KEYS};

    const NOW: i64 = 1_000_000 * 1_000_000_000;
    const H: i64 = 3600 * 1_000_000_000;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn c(id: &str, image: &str, running: bool, age_h: i64, vols: &[&str]) -> ContainerObj {
        ContainerObj {
            id: id.into(),
            name: format!("n-{id}"),
            image_id: image.into(),
            created_at: NOW - age_h * H,
            labels: BTreeMap::new(),
            running,
            volumes: vols.iter().map(|v| v.to_string()).collect(),
        }
    }

    fn i(id: &str, tags: &[&str], age_h: i64) -> ImageObj {
        ImageObj {
            id: id.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            created_at: NOW - age_h * H,
            labels: BTreeMap::new(),
            layers: vec![format!("l-{id}")],
        }
    }

    fn v(name: &str, anonymous: bool, age_h: i64) -> VolumeObj {
        VolumeObj {
            name: name.into(),
            created_at: NOW - age_h * H,
            labels: BTreeMap::new(),
            anonymous,
        }
    }

    fn f(args: &[&str]) -> Filters {
        let a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        filter::parse(&a, PRUNE_KEYS, NOW).unwrap()
    }

    fn ids<T>(xs: &[T], key: impl Fn(&T) -> &str) -> Vec<String> {
        xs.iter().map(|x| key(x).to_string()).collect()
    }

    fn inv() -> Inventory {
        Inventory {
            containers: vec![
                c("run", "img-run", true, 48, &["vol-run"]),
                c("old", "img-old", false, 48, &["anon-old"]),
                c("new", "img-new", false, 1, &["named-new"]),
            ],
            images: vec![
                i("img-run", &[], 48),
                i("img-old", &["old:1"], 48),
                i("img-new", &[], 48),
                i("dangling", &[], 48),
                i("tagged", &["t:1"], 48),
            ],
            volumes: vec![
                v("vol-run", true, 48),
                v("anon-old", true, 48),
                v("named-new", false, 48),
                v("anon-free", true, 48),
                v("named-free", false, 48),
            ],
        }
    }

    const ALL: Scope = Scope {
        containers: true,
        images: Some(ImageScope::All),
        volumes: Some(VolumeScope::All),
    };

    #[test]
    fn running_containers_and_what_they_use_are_never_selected() {
        let p = select(&inv(), &ALL, &Filters::default());
        assert_eq!(ids(&p.containers, |c| &c.id), ["old", "new"]);
        assert!(!ids(&p.images, |i| &i.id).contains(&"img-run".to_string()));
        assert!(!ids(&p.volumes, |v| &v.name).contains(&"vol-run".to_string()));
        // images and volumes freed by the container prune go in the same pass
        assert_eq!(
            ids(&p.images, |i| &i.id),
            ["img-old", "img-new", "dangling", "tagged"]
        );
        assert_eq!(
            ids(&p.volumes, |v| &v.name),
            ["anon-old", "named-new", "anon-free", "named-free"]
        );
    }

    #[test]
    fn dangling_images_and_anonymous_volumes_by_default() {
        let scope = Scope {
            containers: true,
            images: Some(ImageScope::Dangling),
            volumes: Some(VolumeScope::Anonymous),
        };
        let p = select(&inv(), &scope, &Filters::default());
        assert_eq!(ids(&p.images, |i| &i.id), ["img-new", "dangling"]);
        assert_eq!(ids(&p.volumes, |v| &v.name), ["anon-old", "anon-free"]);
    }

    #[test]
    fn without_the_container_prune_their_images_and_volumes_stay() {
        let scope = Scope {
            containers: false,
            images: Some(ImageScope::All),
            volumes: Some(VolumeScope::All),
        };
        let p = select(&inv(), &scope, &Filters::default());
        assert!(p.containers.is_empty());
        assert_eq!(ids(&p.images, |i| &i.id), ["dangling", "tagged"]);
        assert_eq!(ids(&p.volumes, |v| &v.name), ["anon-free", "named-free"]);
    }

    #[test]
    fn until_applies_to_every_type() {
        let mut inv = inv();
        inv.images.push(i("fresh", &[], 1));
        inv.volumes.push(v("fresh-vol", true, 1));
        let p = select(&inv, &ALL, &f(&["until=24h"]));
        assert_eq!(ids(&p.containers, |c| &c.id), ["old"]);
        // img-new is still used by the kept container "new"
        assert!(!ids(&p.images, |i| &i.id).contains(&"img-new".to_string()));
        assert!(!ids(&p.images, |i| &i.id).contains(&"fresh".to_string()));
        assert!(!ids(&p.volumes, |v| &v.name).contains(&"named-new".to_string()));
        assert!(!ids(&p.volumes, |v| &v.name).contains(&"fresh-vol".to_string()));
        assert!(ids(&p.volumes, |v| &v.name).contains(&"anon-old".to_string()));
    }

    #[test]
    fn labels_apply_to_every_type() {
        let mut inv = inv();
        inv.containers[1].labels = labels(&[("env", "ci")]);
        inv.images[3].labels = labels(&[("env", "ci")]);
        inv.volumes[3].labels = labels(&[("env", "ci")]);
        let p = select(&inv, &ALL, &f(&["label=env=ci"]));
        assert_eq!(ids(&p.containers, |c| &c.id), ["old"]);
        assert_eq!(ids(&p.images, |i| &i.id), ["dangling"]);
        assert_eq!(ids(&p.volumes, |v| &v.name), ["anon-free"]);
        let p = select(&inv, &ALL, &f(&["label!=env"]));
        assert_eq!(ids(&p.containers, |c| &c.id), ["new"]);
        assert!(!ids(&p.images, |i| &i.id).contains(&"dangling".to_string()));
        assert!(!ids(&p.volumes, |v| &v.name).contains(&"anon-free".to_string()));
        // AND: label and until together
        let p = select(&inv, &ALL, &f(&["label=env=ci", "until=100h"]));
        assert!(p.is_empty());
    }

    #[test]
    fn plan_of_takes_exactly_what_exists() {
        let p = inv().plan_of(&["old", "gone"], &["tagged"], &["named-free", "nope"]);
        assert_eq!(ids(&p.containers, |c| &c.id), ["old"]);
        assert_eq!(ids(&p.images, |i| &i.id), ["tagged"]);
        assert_eq!(ids(&p.volumes, |v| &v.name), ["named-free"]);
    }

    #[test]
    fn an_empty_store_selects_nothing() {
        assert!(select(&Inventory::default(), &ALL, &Filters::default()).is_empty());
    }
}
