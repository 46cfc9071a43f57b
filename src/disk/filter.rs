//! `--filter KEY=VALUE` as docker's verbs take it: the one grammar of every `--filter`
//! ([`split`]: `key=value`, `key!=value` for keys that can be negated, the key trimmed and
//! case-insensitive, the value trimmed, as docker's `filters.ParseFlag`), the one error form
//! (`invalid filter "ARG": WHY` + the accepted keys), and the values several verbs share
//! (`label`, `name`). [`parse`] is the prune / `volume ls` / `images` set (`until=`, `label=`,
//! `label!=`, `name=`, `dangling=`, `reference=`; several filters combine with AND); `ps`
//! reads its own keys from [`split`] (`cli/ps.rs`).

use std::collections::BTreeMap;

use crate::error::{UserError, user};

/// One `--filter` argument, split: the key (lowercase, without the `!`), the value, and
/// whether it was `key!=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg<'a> {
    /// The argument as given, for messages.
    pub text: &'a str,
    pub key: String,
    pub value: &'a str,
    pub negate: bool,
}

impl Arg<'_> {
    /// `invalid filter "ARG": WHY`, with `hint`.
    pub fn error(&self, why: impl std::fmt::Display, hint: impl Into<String>) -> UserError {
        user(format!("invalid filter {:?}: {why}", self.text)).hint(hint)
    }

    /// `label=k`, `label=k=v` (and their negation): a [`LabelFilter`].
    pub fn label(&self, hint: &str) -> Result<LabelFilter, UserError> {
        let (k, v) = match self.value.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (self.value, None),
        };
        if k.is_empty() {
            return Err(self.error("the label key is empty", hint));
        }
        Ok(LabelFilter {
            key: k.to_string(),
            value: v,
            negate: self.negate,
        })
    }
}

/// The accepted keys as a hint lists them: `until, label, label!`.
pub fn key_list(keys: &[&str], negatable: &[&str]) -> String {
    keys.iter()
        .flat_map(|k| {
            let neg = negatable.contains(k).then(|| format!("{k}!"));
            std::iter::once(k.to_string()).chain(neg)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Splits `--filter` arguments by the one grammar: a key outside `keys`, `!=` on a key not
/// in `negatable`, or no `=` is refused naming the argument, with `hint`.
pub fn split<'a>(
    args: &'a [String],
    keys: &[&str],
    negatable: &[&str],
    hint: &str,
) -> Result<Vec<Arg<'a>>, UserError> {
    args.iter()
        .map(|text| {
            let bad = |why: String| user(format!("invalid filter {text:?}: {why}")).hint(hint);
            let Some((key, value)) = text.split_once('=') else {
                return Err(bad("expected KEY=VALUE".into()));
            };
            let (key, negate) = match key.strip_suffix('!') {
                Some(k) => (k, true),
                None => (key, false),
            };
            let key = key.trim().to_ascii_lowercase();
            if !keys.contains(&key.as_str()) {
                return Err(bad(format!("unknown key {key:?}")));
            }
            if negate && !negatable.contains(&key.as_str()) {
                return Err(bad(format!("{key} does not take !=")));
            }
            Ok(Arg {
                text,
                key,
                value: value.trim(),
                negate,
            })
        })
        .collect()
}

/// docker matches `name=` as a regular expression against the name; wharf takes the common
/// subset: a substring, `^` anchoring the start (a leading `/` after it is docker's old name
/// prefix), `$` the end.
pub fn name_matches(pattern: &str, name: &str) -> bool {
    let (start, p) = match pattern.strip_prefix('^') {
        Some(p) => (true, p.strip_prefix('/').unwrap_or(p)),
        None => (false, pattern),
    };
    let (end, p) = match p.strip_suffix('$') {
        Some(p) => (true, p),
        None => (false, p),
    };
    match (start, end) {
        (true, true) => name == p,
        (true, false) => name.starts_with(p),
        (false, true) => name.ends_with(p),
        (false, false) => name.contains(p),
    }
}

/// A filter key of the prune, `volume ls` and `images` verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// `until=24h` / `until=2026-11-28T10:00:00Z`: created before that time.
    Until,
    /// `label=k`, `label=k=v`, `label!=k`, `label!=k=v`.
    Label,
    /// `name=part`: the name contains `part` (`^`, `$` anchor it).
    Name,
    /// `dangling=true|false`.
    Dangling,
    /// `reference=repo[:tag]`: an image with a tag in that repository (and that tag).
    Reference,
}

impl Key {
    fn name(self) -> &'static str {
        match self {
            Key::Until => "until",
            Key::Label => "label",
            Key::Name => "name",
            Key::Dangling => "dangling",
            Key::Reference => "reference",
        }
    }

    /// What a hint shows of it.
    fn examples(self) -> &'static [&'static str] {
        match self {
            Key::Until => &["until=24h"],
            Key::Label => &["label=env=prod", "label!=keep"],
            Key::Name => &["name=web"],
            Key::Dangling => &["dangling=true"],
            Key::Reference => &["reference=app:1.0"],
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
    /// Any of these `repo[:tag]` (docker ORs repeated `reference=`).
    pub references: Vec<String>,
}

impl Filters {
    /// Whether an object created at `created` (ns) with `labels` passes `until` and every
    /// label filter.
    pub fn matches(&self, created: i64, labels: &BTreeMap<String, String>) -> bool {
        self.until.is_none_or(|t| created < t) && self.labels.iter().all(|l| l.matches(labels))
    }

    /// Whether `name` passes the `name=` filters.
    pub fn name_matches(&self, name: &str) -> bool {
        self.names.is_empty() || self.names.iter().any(|n| name_matches(n, name))
    }
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
    let keys: Vec<&str> = accepted.iter().map(|k| k.name()).collect();
    let negatable: &[&str] = if accepted.contains(&Key::Label) {
        &["label"]
    } else {
        &[]
    };
    let examples: Vec<&str> = accepted
        .iter()
        .flat_map(|k| k.examples())
        .copied()
        .collect();
    let hint = format!(
        "write --filter KEY=VALUE with KEY one of: {} (e.g. --filter {})",
        key_list(&keys, negatable),
        examples.join(", --filter ")
    );
    let mut f = Filters::default();
    for a in split(args, &keys, negatable, &hint)? {
        match a.key.as_str() {
            "until" => {
                if f.until.is_some() {
                    return Err(a.error("more than one until filter", hint));
                }
                f.until = Some(parse_time(a.value, now).ok_or_else(|| {
                    a.error(
                        format_args!(
                            "{:?} is not a time: give a duration back from now (24h, 7d), \
                             an RFC 3339 time or Unix seconds",
                            a.value
                        ),
                        hint.clone(),
                    )
                })?);
            }
            "label" => f.labels.push(a.label(&hint)?),
            "name" => f.names.push(a.value.to_string()),
            "reference" => f.references.push(a.value.to_string()),
            _ => {
                f.dangling = Some(match a.value.to_ascii_lowercase().as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => {
                        return Err(
                            a.error(format_args!("{:?} is not true or false", a.value), hint)
                        );
                    }
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
    fn the_hint_shows_only_keys_the_verb_takes() {
        let a = vec!["label=x".to_string()];
        let e = parse(&a, &[Key::Dangling, Key::Reference, Key::Until], NOW).unwrap_err();
        let hint = e.hint.unwrap_or_default();
        assert!(!hint.contains("label"), "{hint}");
        assert!(hint.contains("--filter dangling=true"), "{hint}");
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
        let a: Vec<String> = vec!["name=^we".into(), "name=b$".into()];
        let f = parse(&a, &[Key::Name], NOW).unwrap();
        assert!(f.name_matches("web") && f.name_matches("db") && !f.name_matches("awe"));
        let a: Vec<String> = vec!["dangling=maybe".into()];
        assert!(parse(&a, &[Key::Dangling], NOW).is_err());
    }
}

#[cfg(test)]
mod grammar_tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn one_grammar_for_every_verb() {
        let a = s(&[" Label != k=v ", "NAME=web", "until= 1h "]);
        let got = split(&a, &["label", "name", "until"], &["label"], "h").unwrap();
        assert_eq!(
            (got[0].key.as_str(), got[0].value, got[0].negate),
            ("label", "k=v", true)
        );
        assert_eq!((got[1].key.as_str(), got[1].value), ("name", "web"));
        assert_eq!(got[2].value, "1h");
        let l = got[0].label("h").unwrap();
        assert_eq!(
            (l.key.as_str(), l.value.as_deref(), l.negate),
            ("k", Some("v"), true)
        );
        for (arg, why) in [
            ("name", "expected KEY=VALUE"),
            ("name!=x", "name does not take !="),
            ("colour=red", "unknown key \"colour\""),
        ] {
            let e = split(&s(&[arg]), &["label", "name"], &["label"], "the hint").unwrap_err();
            assert_eq!(e.message, format!("invalid filter {arg:?}: {why}"));
            assert_eq!(e.hint.as_deref(), Some("the hint"));
        }
        assert_eq!(
            key_list(&["until", "label"], &["label"]),
            "until, label, label!"
        );
    }
}
