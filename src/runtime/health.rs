//! Health checks as the monitor runs them: the check's config (stored in the container's
//! config, docker's `Healthcheck` shape) and the pure state machine that turns probe results
//! into `starting` / `healthy` / `unhealthy` (docker's rules).
//!
//! A probe is `wharf exec <id> <test>` (so it enters the container's namespaces and cgroup as
//! the container's user), run by the monitor every `interval`, killed after `timeout`. A
//! success makes the container healthy and clears the failing streak. A failure adds to the
//! streak, except while the container is still `starting` within its start period; `retries`
//! consecutive failures make it unhealthy. Unlike docker, the monitor then kills the container,
//! and the restart policy decides what follows (a failure, as for a non-zero exit).
//!
//! A probe whose `wharf exec` fails itself (exit 125 with wharf's error, e.g. a store newer
//! than the binary after an upgrade) says nothing about the container: it is kept in the log
//! and not counted. The monitor tells such a failure from a check that exits 125 by a random
//! token it hands `wharf exec` in [`PROBE_TOKEN_ENV`], which wharf prints before its own
//! error (the container's processes never see wharf's environment).

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::error::exit;
use crate::model::HealthConfig;

/// How many probe results inspect keeps (docker's number).
pub const KEEP_LOG: usize = 5;
/// How much of a probe's output is kept (docker's number).
pub const MAX_OUTPUT: usize = 4096;

/// The environment variable that carries a probe's token to its `wharf exec`.
pub const PROBE_TOKEN_ENV: &str = "WHARF_PROBE_TOKEN";

/// Whether a probe's result is wharf's own failure to run it (exit 125 and the token line
/// wharf prints before its error): then its output, without the token line.
pub fn probe_could_not_run(exit_code: i32, output: &str, token: &str) -> Option<String> {
    if exit_code != exit::RUNTIME || token.is_empty() {
        return None;
    }
    let mut found = false;
    let rest: Vec<&str> = output
        .split_inclusive('\n')
        .filter(|l| {
            let mark = l.trim_end() == token;
            found |= mark;
            !mark
        })
        .collect();
    found.then(|| rest.concat())
}

/// One probe's result (docker's `Health.Log` entry; times in ns since the epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub start: i64,
    pub end: i64,
    /// -1 when the probe exceeded its timeout (docker's value).
    pub exit_code: i32,
    pub output: String,
}

/// The health of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthState {
    /// `starting`, `healthy` or `unhealthy`.
    pub status: String,
    pub failing_streak: u32,
    /// The last [`KEEP_LOG`] probes, oldest first.
    pub log: VecDeque<Probe>,
}

impl Default for HealthState {
    fn default() -> Self {
        HealthState {
            status: "starting".into(),
            failing_streak: 0,
            log: VecDeque::new(),
        }
    }
}

impl HealthState {
    /// Takes a probe's result; `since_start` is how long the run has lasted at its end.
    /// Returns true when this result made the container unhealthy.
    pub fn record(&mut self, cfg: &HealthConfig, probe: Probe, since_start: Duration) -> bool {
        let ok = probe.exit_code == 0;
        self.log.push_back(probe);
        while self.log.len() > KEEP_LOG {
            self.log.pop_front();
        }
        if ok {
            self.failing_streak = 0;
            self.status = "healthy".into();
            return false;
        }
        if self.status == "starting" && since_start < cfg.start_period() {
            // A failure within the start period does not count (docker's rule).
            return false;
        }
        self.failing_streak += 1;
        if self.failing_streak >= cfg.retries && self.status != "unhealthy" {
            self.status = "unhealthy".into();
            return true;
        }
        false
    }

    /// Keeps a probe that could not run (see [`probe_could_not_run`]) in the log, without
    /// counting it: the status and the failing streak stay as they are.
    pub fn record_not_run(&mut self, probe: Probe) {
        self.log.push_back(probe);
        while self.log.len() > KEEP_LOG {
            self.log.pop_front();
        }
    }

    /// docker's `State.Health` JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "Status": self.status,
            "FailingStreak": self.failing_streak,
            "Log": self.log.iter().map(|p| serde_json::json!({
                "Start": crate::util::rfc3339(p.start),
                "End": crate::util::rfc3339(p.end),
                "ExitCode": p.exit_code,
                "Output": p.output,
            })).collect::<Vec<_>>(),
        })
    }
}

/// The file the monitor keeps a run's health in: `containers/<id>/health.json`.
pub fn state_path(store: &crate::store::Store, id: &str) -> std::path::PathBuf {
    store.container_dir(id).join("health.json")
}

/// Writes `state` for inspect (atomically: a temp file renamed over the old one).
pub fn save(store: &crate::store::Store, id: &str, state: &HealthState) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = state_path(store, id);
    store.make_container_dir(id)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .open(&tmp)?
        .write_all(&serde_json::to_vec(state)?)?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

/// The health saved by the monitor, if any.
pub fn load(store: &crate::store::Store, id: &str) -> Option<HealthState> {
    let data = std::fs::read(state_path(store, id)).ok()?;
    serde_json::from_slice(&data).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(retries: u32, start_period: Duration) -> HealthConfig {
        HealthConfig::new(
            &["true".to_string()],
            None,
            None,
            Some(retries),
            Some(start_period),
        )
        .expect("valid")
    }

    fn probe(code: i32) -> Probe {
        Probe {
            start: 0,
            end: 0,
            exit_code: code,
            output: String::new(),
        }
    }

    #[test]
    fn wharf_failing_to_run_a_probe_is_not_the_containers_failure() {
        let tok = "5f3c0a";
        let out = format!("{tok}\nerror: the state database has schema version 99\n");
        assert_eq!(
            probe_could_not_run(125, &out, tok).as_deref(),
            Some("error: the state database has schema version 99\n")
        );
        // The check's own 125, or another code, or no token: the check's result.
        assert_eq!(probe_could_not_run(125, "error: mine\n", tok), None);
        assert_eq!(probe_could_not_run(1, &out, tok), None);
        assert_eq!(probe_could_not_run(125, &format!("x{tok}\n"), tok), None);
        assert_eq!(probe_could_not_run(125, &out, ""), None);
        // Kept in the log, not counted: a healthy container stays healthy.
        let c = cfg(1, Duration::ZERO);
        let mut h = HealthState::default();
        h.record(&c, probe(0), Duration::from_secs(1));
        for _ in 0..3 {
            h.record_not_run(probe(125));
        }
        assert_eq!((h.status.as_str(), h.failing_streak), ("healthy", 0));
        assert_eq!(h.log.len(), 4);
        assert!(
            h.record(&c, probe(125), Duration::from_secs(1)),
            "the check's 125 counts"
        );
    }

    #[test]
    fn retries_consecutive_failures_make_it_unhealthy_once() {
        let c = cfg(3, Duration::ZERO);
        let mut h = HealthState::default();
        assert_eq!(h.status, "starting");
        assert!(!h.record(&c, probe(1), Duration::from_secs(1)));
        assert!(!h.record(&c, probe(1), Duration::from_secs(2)));
        assert_eq!(h.failing_streak, 2);
        assert!(!h.record(&c, probe(0), Duration::from_secs(3)));
        assert_eq!((h.status.as_str(), h.failing_streak), ("healthy", 0));
        assert!(!h.record(&c, probe(1), Duration::from_secs(4)));
        assert!(!h.record(&c, probe(-1), Duration::from_secs(5)));
        assert!(h.record(&c, probe(2), Duration::from_secs(6)));
        assert_eq!(h.status, "unhealthy");
        assert!(
            !h.record(&c, probe(1), Duration::from_secs(7)),
            "reported once"
        );
        assert_eq!(h.log.len(), KEEP_LOG);
        assert_eq!(h.log.back().map(|p| p.exit_code), Some(1));
    }

    #[test]
    fn failures_in_the_start_period_do_not_count_while_starting() {
        let c = cfg(1, Duration::from_secs(10));
        let mut h = HealthState::default();
        assert!(!h.record(&c, probe(1), Duration::from_secs(1)));
        assert_eq!((h.status.as_str(), h.failing_streak), ("starting", 0));
        assert!(!h.record(&c, probe(0), Duration::from_secs(2)));
        // Healthy once: the start period no longer shields a failure.
        assert!(h.record(&c, probe(1), Duration::from_secs(3)));
        let mut late = HealthState::default();
        assert!(late.record(&c, probe(1), Duration::from_secs(11)));
    }
}
