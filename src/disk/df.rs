//! `system df`: what images, containers, volumes, logs and the journal take on disk.
//!
//! Sizes are bytes of allocated blocks (`st_blocks * 512`), what `du -s -B1` prints for the
//! same paths, counting each inode once per tree: the space a removal would give back, not
//! apparent file sizes. The paths:
//! - an image: its layer dirs `layers/<diff-id>` and its config blob `blobs/sha256/<id>`;
//! - a container: its write layer `containers/<id>/upper` (as docker's SIZE);
//! - a volume: `volumes/<name>/_data`;
//! - logs: `containers/<id>/log.json` and its rotations `log.json.1`, `.2`, …;
//! - the journal: `wharf.db` with its `-wal` and `-shm` files.
//!
//! docker's definitions: an image is active when any container, running or not, uses it;
//! images share layers, so the Images SIZE counts each layer once, and RECLAIMABLE counts
//! only the layers no active image lists, plus the config blobs of inactive images. A
//! container is reclaimable when it is not running; a volume when no container mounts it.
//! RECLAIMABLE is never more than SIZE, never negative.

use std::collections::{HashMap, HashSet};

use anyhow::Result;
use serde::Serialize;

use crate::container;
use crate::image;
use crate::store::{Store, fsutil};
use crate::volume;

/// One line of the summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "TotalCount")]
    pub total: usize,
    #[serde(rename = "Active")]
    pub active: usize,
    #[serde(rename = "Size")]
    pub size: u64,
    #[serde(rename = "Reclaimable")]
    pub reclaimable: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageUsage {
    pub id: String,
    pub tags: Vec<String>,
    pub created: i64,
    /// Its layers and config blob.
    pub size: u64,
    /// Bytes of its layers that other images list too.
    pub shared_size: u64,
    pub unique_size: u64,
    pub containers: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ContainerUsage {
    pub id: String,
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub created: i64,
    pub state: String,
    /// docker's STATUS text ("Exited (3) 2 hours ago").
    pub status: String,
    pub running: bool,
    /// Its write layer.
    pub size: u64,
    pub log_size: u64,
    pub volumes: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct VolumeUsage {
    pub name: String,
    /// Containers mounting it.
    pub links: usize,
    pub size: u64,
    pub anonymous: bool,
}

/// Everything `system df [-v]` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub summary: Vec<Summary>,
    pub images: Vec<ImageUsage>,
    pub containers: Vec<ContainerUsage>,
    pub volumes: Vec<VolumeUsage>,
    /// `wharf.db` and its WAL files.
    pub journal: u64,
}

/// An image for the pure image summary: its layers, blob size, and whether a container uses it.
#[derive(Debug, Clone)]
pub struct ImageInput<'a> {
    pub layers: &'a [String],
    pub blob: u64,
    pub active: bool,
}

/// Images SIZE (each layer once, plus blobs), RECLAIMABLE (layers no active image lists, plus
/// inactive images' blobs), and each image's (size, shared).
pub fn image_totals(
    images: &[ImageInput<'_>],
    layer_size: &HashMap<String, u64>,
) -> (u64, u64, Vec<(u64, u64)>) {
    let size_of = |l: &String| layer_size.get(l).copied().unwrap_or(0);
    let mut refs: HashMap<&str, usize> = HashMap::new();
    let mut active_layers: HashSet<&str> = HashSet::new();
    for i in images {
        let distinct: HashSet<&str> = i.layers.iter().map(String::as_str).collect();
        for l in distinct {
            *refs.entry(l).or_default() += 1;
            if i.active {
                active_layers.insert(l);
            }
        }
    }
    let mut size: u64 = images.iter().map(|i| i.blob).sum();
    let mut reclaimable: u64 = images.iter().filter(|i| !i.active).map(|i| i.blob).sum();
    for l in refs.keys() {
        let s = layer_size.get(*l).copied().unwrap_or(0);
        size += s;
        if !active_layers.contains(l) {
            reclaimable += s;
        }
    }
    let per = images
        .iter()
        .map(|i| {
            let distinct: HashSet<&String> = i.layers.iter().collect();
            let total: u64 = distinct.iter().map(|l| size_of(l)).sum::<u64>() + i.blob;
            let shared: u64 = distinct
                .iter()
                .filter(|l| refs.get(l.as_str()).copied().unwrap_or(0) > 1)
                .map(|l| size_of(l))
                .sum();
            (total, shared)
        })
        .collect();
    (size, reclaimable.min(size), per)
}

/// Measures the store. `verbose` adds the Logs and Journal lines to the summary.
pub fn usage(store: &Store, verbose: bool) -> Result<Usage> {
    let records = container::list(store)?;
    let images = image::list(store)?;
    let vols = volume::list(store)?;
    let users = volume::users(store)?;

    let mut by_image: HashMap<&str, usize> = HashMap::new();
    for r in &records {
        *by_image.entry(r.image_id.as_str()).or_default() += 1;
    }
    let mut layer_size = HashMap::new();
    for i in &images {
        for l in &i.layers {
            if !layer_size.contains_key(l) {
                layer_size.insert(l.clone(), fsutil::disk_usage(&store.layer_dir(l)));
            }
        }
    }
    let inputs: Vec<ImageInput<'_>> = images
        .iter()
        .map(|i| ImageInput {
            layers: &i.layers,
            blob: fsutil::disk_usage(&store.blob_path(&i.id)),
            active: by_image.contains_key(i.id.as_str()),
        })
        .collect();
    let (img_size, img_reclaim, per) = image_totals(&inputs, &layer_size);
    let image_usage: Vec<ImageUsage> = images
        .iter()
        .zip(per)
        .map(|(i, (size, shared))| ImageUsage {
            id: i.id.clone(),
            tags: i.tags.clone(),
            created: i.created,
            size,
            shared_size: shared,
            unique_size: size - shared,
            containers: by_image.get(i.id.as_str()).copied().unwrap_or(0),
        })
        .collect();

    let log_size = |id: &str| {
        let p = container::log_path(store, id);
        crate::runtime::logs::log_files(&p)
            .iter()
            .map(|f| fsutil::disk_usage(f))
            .sum::<u64>()
    };
    let containers: Vec<ContainerUsage> = records
        .iter()
        .map(|r| ContainerUsage {
            id: r.id.clone(),
            name: r.name.clone(),
            image: r.image_ref.clone(),
            command: r.config.args.clone(),
            created: r.created_at,
            state: r.state.to_string(),
            status: r.status_text(crate::store::now_ns()),
            running: r.is_up() || r.live_monitor().is_some(),
            size: fsutil::disk_usage(&store.container_dir(&r.id).join("upper")),
            log_size: log_size(&r.id),
            volumes: r
                .config
                .volumes
                .iter()
                .filter(|v| v.kind == crate::model::VolumeKind::Named)
                .count(),
        })
        .collect();
    let volumes: Vec<VolumeUsage> = vols
        .iter()
        .map(|v| VolumeUsage {
            name: v.name.clone(),
            links: users.get(&v.name).map_or(0, Vec::len),
            size: fsutil::disk_usage(&v.mountpoint),
            anonymous: v.anonymous(),
        })
        .collect();
    let journal = ["wharf.db", "wharf.db-wal", "wharf.db-shm"]
        .iter()
        .map(|f| fsutil::disk_usage(&store.root().join(f)))
        .sum();

    let mut summary = vec![
        Summary {
            kind: "Images".into(),
            total: images.len(),
            active: image_usage.iter().filter(|i| i.containers > 0).count(),
            size: img_size,
            reclaimable: img_reclaim,
        },
        Summary {
            kind: "Containers".into(),
            total: containers.len(),
            active: containers.iter().filter(|c| c.running).count(),
            size: containers.iter().map(|c| c.size).sum(),
            reclaimable: containers
                .iter()
                .filter(|c| !c.running)
                .map(|c| c.size)
                .sum(),
        },
        Summary {
            kind: "Local Volumes".into(),
            total: volumes.len(),
            active: volumes.iter().filter(|v| v.links > 0).count(),
            size: volumes.iter().map(|v| v.size).sum(),
            reclaimable: volumes
                .iter()
                .filter(|v| v.links == 0)
                .map(|v| v.size)
                .sum(),
        },
    ];
    if verbose {
        summary.push(Summary {
            kind: "Logs".into(),
            total: containers.iter().filter(|c| c.log_size > 0).count(),
            active: containers
                .iter()
                .filter(|c| c.log_size > 0 && c.running)
                .count(),
            size: containers.iter().map(|c| c.log_size).sum(),
            reclaimable: containers
                .iter()
                .filter(|c| !c.running)
                .map(|c| c.log_size)
                .sum(),
        });
        summary.push(Summary {
            kind: "Journal".into(),
            total: 1,
            active: 1,
            size: journal,
            reclaimable: 0,
        });
    }
    Ok(Usage {
        summary,
        images: image_usage,
        containers,
        volumes,
        journal,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(ls: &[&str]) -> Vec<String> {
        ls.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn shared_layers_count_once_and_only_unused_bytes_are_reclaimable() {
        let sizes: HashMap<String, u64> = [("base", 1000), ("a", 100), ("b", 10)]
            .map(|(k, v)| (k.to_string(), v))
            .into();
        let la = layers(&["base", "a"]);
        let lb = layers(&["base", "b"]);
        let imgs = [
            ImageInput {
                layers: &la,
                blob: 1,
                active: true,
            },
            ImageInput {
                layers: &lb,
                blob: 2,
                active: false,
            },
        ];
        let (size, reclaim, per) = image_totals(&imgs, &sizes);
        assert_eq!(size, 1000 + 100 + 10 + 1 + 2);
        // base is used by the active image: only b and the inactive blob are reclaimable
        assert_eq!(reclaim, 10 + 2);
        assert_eq!(per, vec![(1101, 1000), (1012, 1000)]);
    }

    #[test]
    fn nothing_active_means_everything_reclaimable_and_never_more() {
        let sizes: HashMap<String, u64> = [("x".to_string(), 7)].into();
        let l = layers(&["x", "x"]);
        let imgs = [ImageInput {
            layers: &l,
            blob: 3,
            active: false,
        }];
        let (size, reclaim, per) = image_totals(&imgs, &sizes);
        assert_eq!((size, reclaim), (10, 10));
        assert_eq!(per, vec![(10, 0)]);
        let (size, reclaim, _) = image_totals(&[], &sizes);
        assert_eq!((size, reclaim), (0, 0));
    }
}
