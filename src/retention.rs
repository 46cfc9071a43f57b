//! Retention policies as pure functions: given what exists, what is protected, the policy and
//! the time, which objects go and why.
//!
//! The caller (apply after a converge, `wharf system prune --policy`) gathers the facts from
//! the store, asks these functions, removes what they return under the store lock, and
//! journals every removal with its reason. Keeping the selection pure makes every policy
//! testable over a scripted history without root, and makes `--dry-run` exact.
//!
//! Protection always wins over a policy: a running container, an image any container uses,
//! an image a manifest references, and whatever a rollback would need are never selected.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Result;
use rusqlite::params;
use serde::Serialize;

use crate::disk::prune;
use crate::journal;
use crate::manifest::types::{ContainerRetention, ImageRetention, JournalRetention, Retention};
use crate::model::RetentionKind;
use crate::policy::{project_policies, root_config};
use crate::reference::Reference;
use crate::store::{Store, now_ns};

/// One image as retention sees it.
#[derive(Debug, Clone)]
pub struct ImageFact {
    pub id: String,
    /// The repositories it is tagged in (`app` for `app:1.0`); empty when dangling.
    pub repos: Vec<String>,
    /// When it entered the store (ns since the epoch): "newest" means most recently imported.
    pub imported_at: i64,
    /// When a container last used it: created from it, or ran it (ns); None if never.
    pub last_used: Option<i64>,
    /// A container (running or not) uses it, a manifest references it, or a rollback needs
    /// it.
    pub protected: bool,
}

/// One container as retention sees it.
#[derive(Debug, Clone)]
pub struct ContainerFact {
    pub id: String,
    /// The declared container it is a generation of (`project/name`); None for `wharf run`.
    pub declared: Option<String>,
    /// Running, or its monitor is alive.
    pub active: bool,
    /// When its last run ended (ns); None if it never ran.
    pub finished_at: Option<i64>,
    pub created_at: i64,
    /// A rollback would need it.
    pub protected: bool,
}

/// One journal entry (a run record or an apply record).
#[derive(Debug, Clone, Copy)]
pub struct EntryFact {
    pub id: i64,
    pub at: i64,
}

/// Something a policy selected, and why (journaled with the removal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected<K> {
    pub key: K,
    pub reason: String,
}

fn older_than(at: i64, now: i64, age: Duration) -> bool {
    let age_ns = i64::try_from(age.as_nanos()).unwrap_or(i64::MAX);
    now.saturating_sub(at) > age_ns
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Images: beyond the newest `keep` of each of its repositories (in every repository it is
/// in), or unused for longer than `unused_for` (never used counts from the import). The
/// newest `keep` of a repository are kept even when unused, so that a rollback target
/// survives a quiet week; protected images are never selected.
pub fn images(policy: &ImageRetention, facts: &[ImageFact], now: i64) -> Vec<Selected<String>> {
    // Rank each repository's images, newest first.
    let mut by_repo: BTreeMap<&str, Vec<&ImageFact>> = BTreeMap::new();
    for f in facts {
        for r in &f.repos {
            by_repo.entry(r.as_str()).or_default().push(f);
        }
    }
    let mut kept_by_rank: BTreeSet<&str> = BTreeSet::new();
    if let Some(keep) = policy.keep {
        for list in by_repo.values_mut() {
            list.sort_by(|a, b| b.imported_at.cmp(&a.imported_at).then(a.id.cmp(&b.id)));
            for f in list.iter().take(keep as usize) {
                kept_by_rank.insert(f.id.as_str());
            }
        }
    }
    let mut out = Vec::new();
    for f in facts {
        if f.protected || kept_by_rank.contains(f.id.as_str()) {
            continue;
        }
        if let Some(keep) = policy.keep
            && !f.repos.is_empty()
        {
            let repos = f.repos.join(", ");
            out.push(Selected {
                key: f.id.clone(),
                reason: format!("older than the newest {keep} of {repos}"),
            });
            continue;
        }
        if let Some(d) = policy.unused_for {
            let since = f.last_used.unwrap_or(f.imported_at);
            if older_than(since, now, d.0) {
                out.push(Selected {
                    key: f.id.clone(),
                    reason: format!("unused for more than {}", human(d.0)),
                });
            }
        }
    }
    out
}

/// Containers: exited generations of a declared container beyond the newest `keep_exited`,
/// and exited containers (declared or not) that finished longer than `max_age` ago. Active
/// and protected containers are never selected.
pub fn containers(
    policy: &ContainerRetention,
    facts: &[ContainerFact],
    now: i64,
) -> Vec<Selected<String>> {
    let ended = |f: &ContainerFact| f.finished_at.unwrap_or(f.created_at);
    let mut over_count: BTreeSet<&str> = BTreeSet::new();
    if let Some(keep) = policy.keep_exited {
        let mut by_decl: BTreeMap<&str, Vec<&ContainerFact>> = BTreeMap::new();
        for f in facts.iter().filter(|f| !f.active) {
            if let Some(d) = &f.declared {
                by_decl.entry(d.as_str()).or_default().push(f);
            }
        }
        for list in by_decl.values_mut() {
            list.sort_by(|a, b| ended(b).cmp(&ended(a)).then(a.id.cmp(&b.id)));
            for f in list.iter().skip(keep as usize) {
                over_count.insert(f.id.as_str());
            }
        }
    }
    let mut out = Vec::new();
    for f in facts {
        if f.active || f.protected {
            continue;
        }
        if over_count.contains(f.id.as_str()) {
            out.push(Selected {
                key: f.id.clone(),
                reason: format!(
                    "older than the last {} exited generations",
                    policy.keep_exited.unwrap_or(0)
                ),
            });
        } else if let Some(age) = policy.max_age
            && older_than(ended(f), now, age.0)
        {
            out.push(Selected {
                key: f.id.clone(),
                reason: format!("exited more than {} ago", human(age.0)),
            });
        }
    }
    out
}

/// Journal entries: older than `max_age`, and all but the newest `max_entries`.
pub fn journal(policy: &JournalRetention, facts: &[EntryFact], now: i64) -> Vec<Selected<i64>> {
    let mut sorted: Vec<EntryFact> = facts.to_vec();
    sorted.sort_by(|a, b| b.at.cmp(&a.at).then(b.id.cmp(&a.id)));
    let mut out = Vec::new();
    for (rank, f) in sorted.iter().enumerate() {
        if let Some(max) = policy.max_entries
            && rank as u64 >= max
        {
            out.push(Selected {
                key: f.id,
                reason: format!("beyond the newest {max} entries"),
            });
        } else if let Some(age) = policy.max_age
            && older_than(f.at, now, age.0)
        {
            out.push(Selected {
                key: f.id,
                reason: format!("older than {}", human(age.0)),
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Evaluating the policies against a store: gather facts, select (above), remove, journal.
// ---------------------------------------------------------------------------------------

/// Which objects a policy governs.
#[derive(Debug, Clone, Default)]
pub struct PolicyScope {
    /// A project's policy (its generations, its containers, the repositories its manifest
    /// names, its applies and its containers' runs); `None` is the root config's (`wharf
    /// run` containers, every image, and runs and applies outside any project's).
    pub project: Option<String>,
    /// Image references the manifest names (tags): their images are protected, and their
    /// repositories are the ones a project's image policy governs.
    pub refs: Vec<String>,
    /// An apply row never to remove (the apply evaluating the policy).
    pub current_apply: Option<i64>,
}

/// One object retention will remove.
#[derive(Debug, Clone, Serialize)]
pub struct Doomed {
    /// image | container | generation | run | apply
    pub kind: RetentionKind,
    pub key: String,
    /// What it is, for the listing (tags, a name, a generation).
    pub detail: String,
    pub reason: String,
}

/// What retention will remove under one policy.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetentionPlan {
    /// The project ("" for the root config's policy).
    pub scope: String,
    pub items: Vec<Doomed>,
}

impl RetentionPlan {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

fn repo_of(reference: &str) -> String {
    match Reference::parse(reference) {
        Ok(Reference::Tag { repo, .. }) => repo,
        _ => reference
            .rsplit_once(':')
            .map_or(reference, |(r, _)| r)
            .to_string(),
    }
}

/// The image ids rollbacks need (per declared container of every project: the image of the
/// generation `wharf rollback` would bring back) and the ids of the generation rows they
/// are; with every current generation's.
fn rollback_needs(
    store: &Store,
    gens: &[journal::Generation],
) -> Result<(BTreeSet<String>, BTreeSet<i64>)> {
    let live: BTreeMap<String, String> = store
        .db()
        .prepare("SELECT name, id FROM containers")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut by_decl: BTreeMap<(&str, &str), Vec<journal::Generation>> = BTreeMap::new();
    for g in gens {
        by_decl
            .entry((g.project.as_str(), g.name.as_str()))
            .or_default()
            .push(g.clone());
    }
    let (mut images, mut rows) = (BTreeSet::new(), BTreeSet::new());
    for ((_, name), list) in &by_decl {
        let current = live
            .get(*name)
            .and_then(|id| list.iter().find(|g| &g.container_id == id));
        if let Some(c) = current {
            rows.insert(c.id);
        }
        if let Some(t) = journal::rollback_target(list, current.map(|c| c.seq)) {
            images.insert(t.image_id.clone());
            rows.insert(t.id);
        }
    }
    Ok((images, rows))
}

/// Selects what `policy` removes in `scope`, from the store's facts. Read-only.
pub fn plan(
    store: &Store,
    policy: &Retention,
    scope: &PolicyScope,
    now: i64,
) -> Result<RetentionPlan> {
    let inv = prune::inventory(store)?;
    let all_gens = journal::all_generations(store, None)?;
    let (rollback_images, rollback_rows) = rollback_needs(store, &all_gens)?;
    let facts = Facts {
        store,
        inv: &inv,
        all_gens: &all_gens,
        rollback_images: &rollback_images,
        rollback_rows: &rollback_rows,
        scope,
        project: scope.project.as_deref(),
        now,
    };
    let mut items = Vec::new();
    if let Some(ip) = &policy.images {
        items.extend(doomed_images(&facts, ip)?);
    }
    if let Some(cp) = &policy.containers {
        items.extend(doomed_containers(&facts, cp)?);
    }
    if let Some(jp) = &policy.journal {
        items.extend(doomed_journal(&facts, jp)?);
    }
    Ok(RetentionPlan {
        scope: facts.project.unwrap_or_default().to_string(),
        items,
    })
}

/// What the policies are evaluated against: the store's inventory, every generation, what
/// a rollback would need, and the scope.
struct Facts<'a> {
    store: &'a Store,
    inv: &'a prune::Inventory,
    all_gens: &'a [journal::Generation],
    rollback_images: &'a BTreeSet<String>,
    rollback_rows: &'a BTreeSet<i64>,
    scope: &'a PolicyScope,
    project: Option<&'a str>,
    now: i64,
}

/// The images policy: facts (uses, references, repositories of generations) → removals.
fn doomed_images(f: &Facts<'_>, ip: &ImageRetention) -> Result<Vec<Doomed>> {
    let store = f.store;
    let inv = f.inv;
    let all_gens = f.all_gens;
    let rollback_images = f.rollback_images;
    let scope = f.scope;
    let project = f.project;
    let now = f.now;
    let db = f.store.db();
    let mut out = Vec::new();
    let mut referenced: BTreeSet<String> = BTreeSet::new();
    for r in &scope.refs {
        if let Ok(id) = crate::image::resolve(store, r) {
            referenced.insert(id);
        }
    }
    // Every project's references are protected, whichever policy runs.
    for (_, _, refs) in project_policies(store)? {
        for r in refs {
            if let Ok(id) = crate::image::resolve(store, &r) {
                referenced.insert(id);
            }
        }
    }
    let used: BTreeSet<&str> = inv.containers.iter().map(|c| c.image_id.as_str()).collect();
    let mut last_used: BTreeMap<String, i64> = BTreeMap::new();
    for c in &inv.containers {
        let e = last_used.entry(c.image_id.clone()).or_insert(c.created_at);
        *e = (*e).max(c.created_at);
    }
    let runs: Vec<(String, i64)> = db
        .prepare("SELECT image_id, MAX(started_at) FROM runs GROUP BY image_id")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (id, at) in runs {
        let e = last_used.entry(id).or_insert(at);
        *e = (*e).max(at);
    }
    // An image whose tag moved on is still a version of its repository.
    let mut gen_repos: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for g in all_gens {
        gen_repos
            .entry(g.image_id.as_str())
            .or_default()
            .insert(repo_of(&g.image_ref));
        let e = last_used.entry(g.image_id.clone()).or_insert(g.created_at);
        *e = (*e).max(g.created_at);
    }
    let governed: Option<BTreeSet<String>> =
        project.map(|_| scope.refs.iter().map(|r| repo_of(r)).collect());
    let facts: Vec<ImageFact> = inv
        .images
        .iter()
        .map(|i| {
            let mut repos: BTreeSet<String> = i.tags.iter().map(|t| repo_of(t)).collect();
            if let Some(g) = gen_repos.get(i.id.as_str()) {
                repos.extend(g.iter().cloned());
            }
            ImageFact {
                id: i.id.clone(),
                repos: repos.into_iter().collect(),
                imported_at: i.created_at,
                last_used: last_used.get(&i.id).copied(),
                protected: used.contains(i.id.as_str())
                    || referenced.contains(&i.id)
                    || rollback_images.contains(&i.id),
            }
        })
        .filter(|f| {
            governed
                .as_ref()
                .is_none_or(|g| f.repos.iter().any(|r| g.contains(r)))
        })
        .collect();
    for sel in images(ip, &facts, now) {
        let tags = inv
            .images
            .iter()
            .find(|i| i.id == sel.key)
            .map(|i| i.tags.join(", "))
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "<none>".into());
        out.push(Doomed {
            kind: RetentionKind::Image,
            detail: format!("{} {tags}", crate::image::short(&sel.key)),
            key: sel.key,
            reason: sel.reason,
        });
    }

    Ok(out)
}

/// The containers policy: `wharf run` containers under the root policy; under a project's,
/// its generation records (the project's containers are its current generations: removing
/// one would only make the next apply create it again).
fn doomed_containers(f: &Facts<'_>, cp: &ContainerRetention) -> Result<Vec<Doomed>> {
    let store = f.store;
    let inv = f.inv;
    let all_gens = f.all_gens;
    let rollback_rows = f.rollback_rows;
    let project = f.project;
    let now = f.now;
    let db = f.store.db();
    let mut out = Vec::new();
    let finished: BTreeMap<String, Option<i64>> = db
        .prepare("SELECT id, finished_at FROM containers")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let projects: BTreeMap<String, Option<String>> = db
        .prepare("SELECT id, project FROM containers")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut facts: Vec<ContainerFact> = Vec::new();
    if project.is_none() {
        for c in &inv.containers {
            if projects.get(&c.id).cloned().flatten().is_some() {
                continue;
            }
            facts.push(ContainerFact {
                id: c.id.clone(),
                declared: None,
                active: c.running,
                finished_at: finished.get(&c.id).copied().flatten(),
                created_at: c.created_at,
                protected: false,
            });
        }
    }
    let gen_facts: Vec<ContainerFact> = all_gens
        .iter()
        .filter(|g| project.is_none_or(|p| g.project == p))
        .filter(|g| project.is_some() || !project_policies_has(store, &g.project))
        .map(|g| ContainerFact {
            id: format!("gen:{}", g.id),
            declared: Some(format!("{}/{}", g.project, g.name)),
            active: g.superseded_at.is_none(),
            finished_at: g.superseded_at,
            created_at: g.created_at,
            protected: rollback_rows.contains(&g.id),
        })
        .collect();
    facts.extend(gen_facts);
    for sel in containers(cp, &facts, now) {
        if let Some(gid) = sel.key.strip_prefix("gen:") {
            let g = all_gens.iter().find(|g| g.id.to_string() == gid);
            out.push(Doomed {
                kind: RetentionKind::Generation,
                detail: g.map_or_else(String::new, |g| {
                    format!(
                        "{}/{} generation {} ({})",
                        g.project, g.name, g.seq, g.image_ref
                    )
                }),
                key: gid.to_string(),
                reason: sel.reason,
            });
        } else {
            let name = inv
                .containers
                .iter()
                .find(|c| c.id == sel.key)
                .map(|c| c.name.clone())
                .unwrap_or_default();
            out.push(Doomed {
                kind: RetentionKind::Container,
                detail: format!("{} {name}", crate::image::short(&sel.key)),
                key: sel.key,
                reason: sel.reason,
            });
        }
    }

    Ok(out)
}

/// The journal policy: finished runs and finished applies. The root config's covers what no
/// recorded project policy does, so the runs and applies of a downed project too.
fn doomed_journal(f: &Facts<'_>, jp: &JournalRetention) -> Result<Vec<Doomed>> {
    let scope = f.scope;
    let project = f.project;
    let now = f.now;
    let db = f.store.db();
    let mut out = Vec::new();
    let runs: Vec<EntryFact> = db
        .prepare(
            "SELECT id, started_at FROM runs WHERE finished_at IS NOT NULL AND \
             (CASE WHEN ?1 IS NULL \
               THEN container_id NOT IN (SELECT container_id FROM generations WHERE \
                 project IN (SELECT project FROM project_policies)) \
               ELSE container_id IN (SELECT container_id FROM generations WHERE project = ?1) END)",
        )?
        .query_map([project], |r| {
            Ok(EntryFact {
                id: r.get(0)?,
                at: r.get(1)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    for sel in journal(jp, &runs, now) {
        out.push(Doomed {
            kind: RetentionKind::Run,
            detail: format!("run {}", sel.key),
            key: sel.key.to_string(),
            reason: sel.reason,
        });
    }
    let applies: Vec<EntryFact> = db
        .prepare(
            "SELECT id, at FROM applies WHERE finished_at IS NOT NULL AND id IS NOT ?2 \
             AND (CASE WHEN ?1 IS NULL \
               THEN project NOT IN (SELECT project FROM project_policies) \
               ELSE project = ?1 END)",
        )?
        .query_map(params![project, scope.current_apply], |r| {
            Ok(EntryFact {
                id: r.get(0)?,
                at: r.get(1)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    for sel in journal(jp, &applies, now) {
        out.push(Doomed {
            kind: RetentionKind::Apply,
            detail: format!("apply {}", sel.key),
            key: sel.key.to_string(),
            reason: sel.reason,
        });
    }

    Ok(out)
}

fn project_policies_has(store: &Store, project: &str) -> bool {
    store
        .db()
        .prepare_cached("SELECT 1 FROM project_policies WHERE project = ?1")
        .and_then(|mut s| s.exists([project]))
        .unwrap_or(false)
}

/// What retention removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetentionReport {
    pub removed: Vec<Doomed>,
    /// Objects kept because their state changed since the plan, with the reason.
    pub skipped: Vec<String>,
    /// Bytes freed by image and container removals.
    pub reclaimed: u64,
}

/// Removes what `plan` lists (containers and images through `prune::execute`, which checks
/// each again), and journals every removal in `retention_log`.
pub fn execute(store: &Store, plan: &RetentionPlan) -> Result<RetentionReport> {
    let _guard = store.lock()?;
    let inv = prune::inventory(store)?;
    let keys = |kind: RetentionKind| -> Vec<&str> {
        plan.items
            .iter()
            .filter(|d| d.kind == kind)
            .map(|d| d.key.as_str())
            .collect()
    };
    let (cs, is) = (keys(RetentionKind::Container), keys(RetentionKind::Image));
    let mut report = RetentionReport::default();
    let pr = if cs.is_empty() && is.is_empty() {
        prune::Report::default()
    } else {
        prune::execute(store, &inv.plan_of(&cs, &is, &[]))?
    };
    report.skipped = pr.skipped;
    report.reclaimed = pr.reclaimed;
    let deleted_images: BTreeSet<String> = pr
        .images
        .iter()
        .filter_map(|r| match r {
            crate::image::Removed::Deleted(id) => Some(id.clone()),
            crate::image::Removed::Untagged(_) => None,
        })
        .collect();
    let db = store.db();
    for d in &plan.items {
        let done = match d.kind {
            RetentionKind::Container => pr.containers.iter().any(|c| c == &d.key),
            RetentionKind::Image => deleted_images.contains(&d.key),
            RetentionKind::Generation => {
                db.execute("DELETE FROM generations WHERE id = ?1", [&d.key])? > 0
            }
            RetentionKind::Run => db.execute("DELETE FROM runs WHERE id = ?1", [&d.key])? > 0,
            RetentionKind::Apply => db.execute("DELETE FROM applies WHERE id = ?1", [&d.key])? > 0,
        };
        if done {
            journal::record_retention(
                store,
                &journal::RetentionRecord {
                    at: now_ns(),
                    scope: plan.scope.clone(),
                    kind: d.kind,
                    key: d.key.clone(),
                    detail: d.detail.clone(),
                    reason: d.reason.clone(),
                },
            )?;
            report.removed.push(d.clone());
        }
    }
    Ok(report)
}

/// Every policy the store knows: the root config's, then each project's as last applied.
pub fn all_policies(store: &Store) -> Result<Vec<(Retention, PolicyScope)>> {
    let mut out = vec![(root_config(store.root())?, PolicyScope::default())];
    for (project, policy, refs) in project_policies(store)? {
        out.push((
            policy,
            PolicyScope {
                project: Some(project),
                refs,
                current_apply: None,
            },
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::values::HumanDuration;

    const H: i64 = 3_600_000_000_000;
    const D: i64 = 24 * H;

    fn dur(s: &str) -> Option<HumanDuration> {
        Some(HumanDuration(
            humantime::parse_duration(s).expect("test duration"),
        ))
    }

    fn img(id: &str, repos: &[&str], imported_at: i64) -> ImageFact {
        ImageFact {
            id: id.into(),
            repos: repos.iter().map(|r| r.to_string()).collect(),
            imported_at,
            last_used: None,
            protected: false,
        }
    }

    fn keys<K: Clone>(v: &[Selected<K>]) -> Vec<K> {
        v.iter().map(|s| s.key.clone()).collect()
    }

    #[test]
    fn images_keep_newest_n_per_repository() {
        let facts = vec![
            img("a1", &["app"], 1),
            img("a2", &["app"], 2),
            img("a3", &["app"], 3),
            img("a4", &["app"], 4),
            img("w1", &["web"], 1),
        ];
        let p = ImageRetention {
            keep: Some(2),
            unused_for: None,
        };
        assert_eq!(keys(&images(&p, &facts, 10)), vec!["a1", "a2"]);
    }

    #[test]
    fn an_image_kept_by_any_repository_stays() {
        let facts = vec![
            img("x", &["app", "web"], 1),
            img("a2", &["app"], 2),
            img("a3", &["app"], 3),
        ];
        let p = ImageRetention {
            keep: Some(2),
            unused_for: None,
        };
        // x is the 3rd of app, but the newest of web.
        assert!(images(&p, &facts, 10).is_empty());
    }

    #[test]
    fn protected_images_are_never_selected() {
        let mut old = img("old", &["app"], 1);
        old.protected = true;
        let facts = vec![old, img("n1", &["app"], 2), img("n2", &["app"], 3)];
        let p = ImageRetention {
            keep: Some(1),
            unused_for: dur("1s"),
        };
        // n2 is the newest of app: kept although unused; dangling images age out.
        let mut facts = facts;
        facts.push(img("dangling", &[], 0));
        assert_eq!(keys(&images(&p, &facts, 100 * D)), vec!["n1", "dangling"]);
    }

    #[test]
    fn unused_for_counts_from_last_use_or_import() {
        let mut used = img("used", &[], 0);
        used.last_used = Some(9 * D);
        let facts = vec![used, img("never", &[], 0), img("fresh", &[], 9 * D)];
        let p = ImageRetention {
            keep: None,
            unused_for: dur("7d"),
        };
        let sel = images(&p, &facts, 10 * D);
        assert_eq!(keys(&sel), vec!["never"]);
        assert_eq!(sel[0].reason, "unused for more than 7days");
    }

    fn ctr(id: &str, decl: Option<&str>, finished: Option<i64>) -> ContainerFact {
        ContainerFact {
            id: id.into(),
            declared: decl.map(str::to_string),
            active: false,
            finished_at: finished,
            created_at: 0,
            protected: false,
        }
    }

    #[test]
    fn containers_keep_last_n_exited_generations() {
        let mut running = ctr("g5", Some("p/web"), None);
        running.active = true;
        let facts = vec![
            ctr("g1", Some("p/web"), Some(1)),
            ctr("g2", Some("p/web"), Some(2)),
            ctr("g3", Some("p/web"), Some(3)),
            ctr("g4", Some("p/web"), Some(4)),
            running,
            ctr("d1", Some("p/db"), Some(1)),
            ctr("adhoc", None, Some(1)),
        ];
        let p = ContainerRetention {
            keep_exited: Some(2),
            max_age: None,
        };
        assert_eq!(keys(&containers(&p, &facts, 10)), vec!["g1", "g2"]);
    }

    #[test]
    fn containers_max_age_never_touches_active_or_protected() {
        let mut active = ctr("active", None, Some(0));
        active.active = true;
        let mut rollback = ctr("rollback", Some("p/web"), Some(0));
        rollback.protected = true;
        let facts = vec![
            active,
            rollback,
            ctr("old", None, Some(0)),
            ctr("new", None, Some(29 * D)),
        ];
        let p = ContainerRetention {
            keep_exited: None,
            max_age: dur("1d"),
        };
        assert_eq!(keys(&containers(&p, &facts, 30 * D)), vec!["old"]);
    }

    #[test]
    fn journal_max_entries_and_age() {
        let facts: Vec<EntryFact> = (1..=10).map(|i| EntryFact { id: i, at: i * D }).collect();
        let p = JournalRetention {
            max_age: dur("5d"),
            max_entries: Some(7),
        };
        // now = day 11: entries at days 1..=5 are older than 5 days; 1..=3 are beyond 7.
        let mut sel = keys(&journal(&p, &facts, 11 * D));
        sel.sort();
        assert_eq!(sel, vec![1, 2, 3, 4, 5]);
        let only_count = JournalRetention {
            max_age: None,
            max_entries: Some(0),
        };
        assert_eq!(journal(&only_count, &facts, 0).len(), 10);
    }

    #[test]
    fn no_policy_selects_nothing() {
        let facts = vec![img("a", &["app"], 0)];
        assert!(images(&ImageRetention::default(), &facts, 100 * D).is_empty());
        let c = vec![ctr("c", Some("p/x"), Some(0))];
        assert!(containers(&ContainerRetention::default(), &c, 100 * D).is_empty());
        let j = vec![EntryFact { id: 1, at: 0 }];
        assert!(journal(&JournalRetention::default(), &j, 100 * D).is_empty());
    }

    #[test]
    fn images_beyond_keep_dangling_fall_back_to_unused_for() {
        // A dangling image has no repository to be ranked in: only unused_for takes it.
        let facts = vec![
            img("a1", &["app"], 1),
            img("a2", &["app"], 2),
            img("d-old", &[], 0),
            img("d-new", &[], 9 * D),
        ];
        let p = ImageRetention {
            keep: Some(1),
            unused_for: dur("2d"),
        };
        let sel = images(&p, &facts, 10 * D);
        assert_eq!(keys(&sel), vec!["a1", "d-old"]);
        assert_eq!(sel[0].reason, "older than the newest 1 of app");
        // keep alone never takes a dangling image.
        let only_keep = ImageRetention {
            keep: Some(1),
            unused_for: None,
        };
        assert_eq!(keys(&images(&only_keep, &facts, 10 * D)), vec!["a1"]);
    }

    #[test]
    fn a_protected_generation_counts_among_the_kept_but_is_never_selected() {
        // The rollback target (g3) is the newest exited: it fills keep_exited = 1.
        let mut target = ctr("g3", Some("p/web"), Some(3));
        target.protected = true;
        let mut current = ctr("g4", Some("p/web"), None);
        current.active = true;
        let facts = vec![
            ctr("g1", Some("p/web"), Some(1)),
            ctr("g2", Some("p/web"), Some(2)),
            target,
            current,
        ];
        let keep1 = ContainerRetention {
            keep_exited: Some(1),
            max_age: None,
        };
        let sel = containers(&keep1, &facts, 10);
        assert_eq!(keys(&sel), vec!["g1", "g2"]);
        assert_eq!(sel[0].reason, "older than the last 1 exited generations");
        // keep_exited = 0: everything exited goes, except the protected one.
        let keep0 = ContainerRetention {
            keep_exited: Some(0),
            max_age: None,
        };
        assert_eq!(keys(&containers(&keep0, &facts, 10)), vec!["g1", "g2"]);
    }

    #[test]
    fn container_ages_count_from_the_end_of_the_last_run_or_creation() {
        let mut never_ran = ctr("created", None, None);
        never_ran.created_at = 5 * D;
        let facts = vec![ctr("ran", None, Some(8 * D)), never_ran];
        let p = ContainerRetention {
            keep_exited: None,
            max_age: dur("3d"),
        };
        assert_eq!(keys(&containers(&p, &facts, 10 * D)), vec!["created"]);
    }

    #[test]
    fn journal_keeps_the_newest_by_time_then_id() {
        let facts = vec![
            EntryFact { id: 1, at: 5 },
            EntryFact { id: 2, at: 5 },
            EntryFact { id: 3, at: 1 },
        ];
        let p = JournalRetention {
            max_age: None,
            max_entries: Some(1),
        };
        let mut sel = keys(&journal(&p, &facts, 10));
        sel.sort();
        assert_eq!(sel, vec![1, 3]);
    }

    #[test]
    fn repositories_of_references() {
        assert_eq!(repo_of("app:1.0"), "app");
        assert_eq!(repo_of("app"), "app");
        assert_eq!(
            repo_of("registry.local:5000/team/app:2"),
            "registry.local:5000/team/app"
        );
    }
}
