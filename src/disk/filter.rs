//! `--filter KEY=VALUE` as docker's prune and ls verbs take it: `until=`, `label=`,
//! `label!=`, `name=`, `dangling=`. Several filters combine with AND.

use std::collections::BTreeMap;

use crate::error::{UserError, user};

/// A filter key a verb accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// `until=24h` / `until=2026-11-28T10:00:00Z`: created before that time.
    Until,
    /// `label=k`, `label=k=v`, `label!=k`, `label!=k=v`.
    Label,
    /// `name=part`: the name contains `part`.
    Name,
    /// `dangling=true|false`.
    Dangling,
}

impl Key {
    fn names(self) -> &'static [&'static str] {
        match self {
            Key::Until => &["until"],
            Key::Label => &["label", "label!"],
            Key::Name => &["name"],
            Key::Dangling => &["dangling"],
        }
    }
}

/// The keys prune verbs accept.
pub const PRUNE_KEYS: &[Key] = &[Key::Until, Key::Label];

/// One `label` / `label!` filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelFilter {
    pub key: String,
    /// `label=k=v`: the value must be `v`; None: the key must be present.
    pub value: Option<String>,
    /// `label!=`: the opposite.
    pub negate: bool,
}

impl LabelFilter {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let hit = match (&self.value, labels.get(&self.key)) {
            (None, found) => found.is_some(),
            (Some(want), Some(have)) => want == have,
            (Some(_), None) => false,
        };
        hit != self.negate
    }
}

/// Parsed filters. Empty filters match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    /// Only objects created strictly before this time (ns since the epoch).
    pub until: Option<i64>,
    pub labels: Vec<LabelFilter>,
    /// Any of these substrings of the name (docker ORs repeated `name=`).
    pub names: Vec<String>,
    pub dangling: Option<bool>,
}

impl Filters {
    /// Whether an object created at `created` (ns) with `labels` passes `until` and every
    /// label filter.
    pub fn matches(&self, created: i64, labels: &BTreeMap<String, String>) -> bool {
        self.until.is_none_or(|t| created < t) && self.labels.iter().all(|l| l.matches(labels))
    }

    /// Whether `name` passes the `name=` filters.
    pub fn name_matches(&self, name: &str) -> bool {
        self.names.is_empty() || self.names.iter().any(|n| name.contains(n.as_str()))
    }
}

fn accepted_list(accepted: &[Key]) -> String {
    accepted
        .iter()
        .flat_map(|k| k.names().iter().copied())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A time from a filter: a duration back from `now` (`90s`, `24h`, `7d`), an RFC 3339 time,
/// or Unix seconds.
pub fn parse_time(value: &str, now: i64) -> Option<i64> {
    let v = value.trim();
    if let Ok(d) = humantime::parse_duration(v) {
        return Some(now.saturating_sub(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)));
    }
    crate::util::parse_time_arg(v).ok()
}

/// Parses `--filter` arguments; a key outside `accepted` is refused naming it and the accepted
/// keys. `now` anchors durations.
pub fn parse(args: &[String], accepted: &[Key], now: i64) -> Result<Filters, UserError> {
    let mut f = Filters::default();
    let keys = accepted_list(accepted);
    for arg in args {
        let bad = |why: String| {
            user(format!("invalid filter {arg:?}: {why}")).hint(format!(
                "write --filter KEY=VALUE with KEY one of: {keys} (e.g. --filter until=24h, \
                 --filter label=env=prod, --filter label!=keep)"
            ))
        };
        let Some((key, value)) = arg.split_once('=') else {
            return Err(bad("expected KEY=VALUE".into()));
        };
        let key = key.trim().to_ascii_lowercase();
        let Some(kind) = accepted
            .iter()
            .copied()
            .find(|k| k.names().contains(&key.as_str()))
        else {
            return Err(bad(format!("unknown key {key:?}")));
        };
        match kind {
            Key::Until => {
                if f.until.is_some() {
                    return Err(bad("more than one until filter".into()));
                }
                f.until = Some(parse_time(value, now).ok_or_else(|| {
                    bad(format!(
                        "{value:?} is not a time: give a duration back from now (24h, 7d), \
                         an RFC 3339 time or Unix seconds"
                    ))
                })?);
            }
            Key::Label => {
                let (k, v) = match value.split_once('=') {
                    Some((k, v)) => (k, Some(v.to_string())),
                    None => (value, None),
                };
                if k.is_empty() {
                    return Err(bad("the label key is empty".into()));
                }
                f.labels.push(LabelFilter {
                    key: k.to_string(),
                    value: v,
                    negate: key == "label!",
                });
            }
            Key::Name => f.names.push(value.to_string()),
            Key::Dangling => {
                f.dangling = Some(match value.to_ascii_lowercase().as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(bad(format!("{value:?} is not true or false"))),
                });
            }
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000 * 1_000_000_000;
    const H: i64 = 3600 * 1_000_000_000;

    fn p(args: &[&str]) -> Result<Filters, UserError> {
        let a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse(&a, PRUNE_KEYS, NOW)
    }

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn until_takes_durations_rfc3339_and_seconds() {
        assert_eq!(p(&["until=24h"]).unwrap().until, Some(NOW - 24 * H));
        assert_eq!(p(&["until=7d"]).unwrap().until, Some(NOW - 7 * 24 * H));
        assert_eq!(p(&["until=1970-01-01T01:00:00Z"]).unwrap().until, Some(H));
        assert_eq!(p(&["until=3600"]).unwrap().until, Some(H));
        let e = p(&["until=yesterday"]).unwrap_err();
        assert!(e.message.contains("until=yesterday"), "{}", e.message);
        assert!(p(&["until=1h", "until=2h"]).is_err());
    }

    #[test]
    fn labels_and_negations_combine_with_and() {
        let f = p(&["label=env=prod", "label!=keep"]).unwrap();
        assert!(f.matches(0, &labels(&[("env", "prod")])));
        assert!(!f.matches(0, &labels(&[("env", "prod"), ("keep", "")])));
        assert!(!f.matches(0, &labels(&[("env", "dev")])));
        assert!(!f.matches(0, &labels(&[])));
        let f = p(&["label=a", "label!=b=1"]).unwrap();
        assert!(f.matches(0, &labels(&[("a", "x"), ("b", "2")])));
        assert!(!f.matches(0, &labels(&[("a", "x"), ("b", "1")])));
        let f = p(&["until=1h", "label=a"]).unwrap();
        assert!(f.matches(NOW - 2 * H, &labels(&[("a", "")])));
        assert!(!f.matches(NOW - H / 2, &labels(&[("a", "")])));
        assert!(!f.matches(NOW - 2 * H, &labels(&[])));
        assert!(Filters::default().matches(NOW, &labels(&[])));
    }

    #[test]
    fn a_bad_filter_names_itself_and_the_accepted_keys() {
        let e = p(&["colour=red"]).unwrap_err();
        assert!(e.message.contains("\"colour=red\""), "{}", e.message);
        assert!(
            e.message.contains("unknown key \"colour\""),
            "{}",
            e.message
        );
        let hint = e.hint.unwrap();
        assert!(hint.contains("until, label, label!"), "{hint}");
        let e = p(&["until"]).unwrap_err();
        assert!(e.message.contains("KEY=VALUE"));
        assert!(p(&["label="]).is_err());
        // a key another verb accepts is still refused here
        assert!(p(&["name=x"]).is_err());
    }

    #[test]
    fn name_and_dangling_for_ls() {
        let a: Vec<String> = vec!["name=we".into(), "dangling=true".into()];
        let f = parse(&a, &[Key::Name, Key::Dangling, Key::Label], NOW).unwrap();
        assert!(f.name_matches("web") && !f.name_matches("db"));
        assert_eq!(f.dangling, Some(true));
        let a: Vec<String> = vec!["dangling=maybe".into()];
        assert!(parse(&a, &[Key::Dangling], NOW).is_err());
    }
}
