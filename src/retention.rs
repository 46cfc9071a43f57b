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

use crate::manifest::types::{ContainerRetention, ImageRetention, JournalRetention};

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
}
