//! `wharf events` (issue 14): docker's event stream, read from the journal. A run gives a
//! container `start` (its start time) and `die` (its end; `oom` first when the OOM killer
//! fired), a container row a `create`, an apply an apply `start` and `finish`. There is no
//! daemon to push events: the past comes from the tables, and following polls them.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use rusqlite::params;
use serde::Serialize;

use crate::error::user;
use crate::store::Store;

/// One event, docker's shape (`Type`, `Action`, `Actor`), its time in ns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    #[serde(rename = "Type")]
    pub kind: &'static str,
    #[serde(rename = "Action")]
    pub action: &'static str,
    #[serde(rename = "Actor")]
    pub actor: Actor,
    #[serde(rename = "timeNano")]
    pub time: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Actor {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Attributes")]
    pub attributes: BTreeMap<String, String>,
}

impl Event {
    /// docker's line: `TIME TYPE ACTION ID (k=v, ...)`.
    pub fn line(&self) -> String {
        let attrs: Vec<String> = self
            .actor
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!(
            "{} {} {} {} ({})",
            crate::util::rfc3339(self.time),
            self.kind,
            self.action,
            self.actor.id,
            attrs.join(", ")
        )
    }

    /// The identity of an event, to print each once while following.
    fn key(&self) -> (i64, &'static str, &'static str, String) {
        (self.time, self.kind, self.action, self.actor.id.clone())
    }
}

/// `--filter KEY=VALUE`s: values of one key OR together, keys AND (docker's rule).
#[derive(Debug, Clone, Default)]
pub struct Filters {
    by_key: BTreeMap<String, Vec<String>>,
}

const FILTER_KEYS: [&str; 5] = ["container", "event", "type", "image", "project"];

impl Filters {
    pub fn parse(args: &[String]) -> Result<Filters> {
        let mut f = Filters::default();
        for a in args {
            let Some((k, v)) = a.split_once('=') else {
                return Err(user(format!("invalid --filter {a:?}: expected KEY=VALUE"))
                    .hint("e.g. --filter container=web --filter event=die")
                    .into());
            };
            if !FILTER_KEYS.contains(&k) {
                return Err(user(format!("invalid --filter key {k:?}"))
                    .hint(format!("the keys are {}", FILTER_KEYS.join(", ")))
                    .into());
            }
            f.by_key
                .entry(k.to_string())
                .or_default()
                .push(v.to_string());
        }
        Ok(f)
    }

    pub fn matches(&self, e: &Event) -> bool {
        self.by_key.iter().all(|(k, vals)| {
            vals.iter().any(|v| match k.as_str() {
                "container" => {
                    e.kind == "container"
                        && (e.actor.id.starts_with(v.as_str())
                            || e.actor.attributes.get("name") == Some(v))
                }
                "event" => e.action == v,
                "type" => e.kind == v,
                "image" => e.actor.attributes.get("image") == Some(v),
                "project" => e.actor.attributes.get("project") == Some(v),
                _ => false,
            })
        })
    }
}

fn attrs(pairs: &[(&str, Option<String>)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k.to_string(), v)))
        .collect()
}

/// Every event with `since <= time < until`, oldest first.
pub fn between(store: &Store, since: i64, until: i64) -> Result<Vec<Event>> {
    let mut out = Vec::new();
    let db = store.db();
    let mut runs = db.prepare_cached(
        "SELECT container_id, container_name, image_ref, started_at, finished_at, exit_code,
                signal, oom_killed
         FROM runs
         WHERE (started_at >= ?1 AND started_at < ?2)
            OR (finished_at >= ?1 AND finished_at < ?2)",
    )?;
    let rows = runs.query_map(params![since, until], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, Option<i64>>(4)?,
            r.get::<_, Option<i32>>(5)?,
            r.get::<_, Option<i32>>(6)?,
            r.get::<_, i64>(7)? != 0,
        ))
    })?;
    for row in rows {
        let (id, name, image, started, finished, code, signal, oom) = row?;
        let base = [("name", Some(name)), ("image", Some(image))];
        let actor = |extra: &[(&str, Option<String>)]| Actor {
            id: id.clone(),
            attributes: attrs(&[base.as_slice(), extra].concat()),
        };
        if (since..until).contains(&started) {
            out.push(Event {
                kind: "container",
                action: "start",
                actor: actor(&[]),
                time: started,
            });
        }
        if let Some(t) = finished.filter(|t| (since..until).contains(t)) {
            if oom {
                out.push(Event {
                    kind: "container",
                    action: "oom",
                    actor: actor(&[]),
                    time: t,
                });
            }
            out.push(Event {
                kind: "container",
                action: "die",
                actor: actor(&[
                    ("exitCode", code.map(|c| c.to_string())),
                    ("signal", signal.map(|s| s.to_string())),
                ]),
                time: t,
            });
        }
    }
    let mut created = db.prepare_cached(
        "SELECT id, name, image_ref, created_at, project FROM containers
         WHERE created_at >= ?1 AND created_at < ?2",
    )?;
    let rows = created.query_map(params![since, until], |r| {
        Ok(Event {
            kind: "container",
            action: "create",
            actor: Actor {
                id: r.get(0)?,
                attributes: attrs(&[
                    ("name", r.get(1)?),
                    ("image", r.get(2)?),
                    ("project", r.get(4)?),
                ]),
            },
            time: r.get(3)?,
        })
    })?;
    for e in rows {
        out.push(e?);
    }
    let mut applies = db.prepare_cached(
        "SELECT id, project, at, finished_at, git_commit FROM applies
         WHERE (at >= ?1 AND at < ?2) OR (finished_at >= ?1 AND finished_at < ?2)",
    )?;
    let rows = applies.query_map(params![since, until], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, Option<i64>>(3)?,
            r.get::<_, Option<String>>(4)?,
        ))
    })?;
    for row in rows {
        let (id, project, at, finished, commit) = row?;
        let actor = Actor {
            id: id.to_string(),
            attributes: attrs(&[("project", Some(project)), ("commit", commit)]),
        };
        if (since..until).contains(&at) {
            out.push(Event {
                kind: "apply",
                action: "start",
                actor: actor.clone(),
                time: at,
            });
        }
        if let Some(t) = finished.filter(|t| (since..until).contains(t)) {
            out.push(Event {
                kind: "apply",
                action: "finish",
                actor,
                time: t,
            });
        }
    }
    out.sort_by(|a, b| {
        a.time
            .cmp(&b.time)
            .then_with(|| order(a.action).cmp(&order(b.action)))
    });
    Ok(out)
}

/// create before start before oom before die at the same instant.
fn order(action: &str) -> u8 {
    match action {
        "create" => 0,
        "start" => 1,
        "oom" => 2,
        _ => 3,
    }
}

/// Prints the events of `[since, until)` through `emit`; without `until`, follows new
/// ones (polling the journal every 200 ms) until `emit` fails (a closed pipe) or the
/// process is interrupted.
pub fn stream(
    store: &Store,
    since: Option<i64>,
    until: Option<i64>,
    filters: &Filters,
    mut emit: impl FnMut(&Event) -> std::io::Result<()>,
) -> Result<()> {
    let start = since.unwrap_or_else(crate::store::now_ns);
    let Some(end) = until else {
        return follow(store, start, filters, emit);
    };
    for e in between(store, start, end)? {
        if filters.matches(&e) && emit(&e).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// How far back each poll looks again, for a row committed after the time it records.
const LAG_NS: i64 = 5_000_000_000;

fn follow(
    store: &Store,
    since: i64,
    filters: &Filters,
    mut emit: impl FnMut(&Event) -> std::io::Result<()>,
) -> Result<()> {
    let mut seen: BTreeSet<(i64, &'static str, &'static str, String)> = BTreeSet::new();
    let mut from = since;
    loop {
        let now = crate::store::now_ns();
        for e in between(store, from, i64::MAX)? {
            if seen.insert(e.key()) && filters.matches(&e) && emit(&e).is_err() {
                return Ok(());
            }
        }
        // Forget what is older than the window looked at again.
        from = from.max(now - LAG_NS);
        seen.retain(|k| k.0 >= from);
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(action: &'static str, name: &str) -> Event {
        Event {
            kind: "container",
            action,
            actor: Actor {
                id: "abc123".into(),
                attributes: attrs(&[("name", Some(name.into())), ("image", Some("bb:1".into()))]),
            },
            time: 1_000_000_000,
        }
    }

    #[test]
    fn filters_or_within_a_key_and_across_keys() {
        let f = Filters::parse(&[
            "container=web".into(),
            "event=start".into(),
            "event=die".into(),
        ])
        .unwrap();
        assert!(f.matches(&ev("start", "web")));
        assert!(f.matches(&ev("die", "web")));
        assert!(!f.matches(&ev("create", "web")));
        assert!(!f.matches(&ev("start", "db")));
        let by_id = Filters::parse(&["container=abc".into()]).unwrap();
        assert!(by_id.matches(&ev("start", "db")));
        assert!(Filters::parse(&["nope=1".into()]).is_err());
        assert!(Filters::parse(&["container".into()]).is_err());
    }

    #[test]
    fn lines_read_like_dockers() {
        assert_eq!(
            ev("start", "web").line(),
            "1970-01-01T00:00:01.000000000Z container start abc123 (image=bb:1, name=web)"
        );
    }
}
