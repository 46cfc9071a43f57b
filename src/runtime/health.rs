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

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::error::{exit, user};

/// How many probe results inspect keeps (docker's number).
pub const KEEP_LOG: usize = 5;
/// How much of a probe's output is kept (docker's number).
pub const MAX_OUTPUT: usize = 4096;

/// A container's health check, in docker's `Config.Healthcheck` shape (durations in ns).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    /// `["CMD-SHELL", "cmd"]` (run with `sh -c`) or `["CMD", argv...]`.
    pub test: Vec<String>,
    pub interval: u64,
    pub timeout: u64,
    pub retries: u32,
    pub start_period: u64,
}

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_RETRIES: u32 = 3;

fn bad(msg: String, hint: &str) -> anyhow::Error {
    user(msg).hint(hint).code(exit::RUNTIME).into()
}

impl HealthConfig {
    /// From the parts the CLI or a manifest give; `test` is docker's form: a first element
    /// `CMD` or `CMD-SHELL`, or else one string (a shell command) or an argv.
    pub fn new(
        test: &[String],
        interval: Option<Duration>,
        timeout: Option<Duration>,
        retries: Option<u32>,
        start_period: Option<Duration>,
    ) -> Result<HealthConfig> {
        let test: Vec<String> = match test.first().map(String::as_str) {
            None => {
                return Err(bad(
                    "the health check command is empty".into(),
                    "give a command, e.g. --health-cmd 'wget -q -O- http://localhost/'",
                ));
            }
            Some("CMD") | Some("CMD-SHELL") => test.to_vec(),
            Some(_) if test.len() == 1 => vec!["CMD-SHELL".into(), test[0].clone()],
            Some(_) => std::iter::once("CMD".to_string())
                .chain(test.iter().cloned())
                .collect(),
        };
        if test.len() < 2
            || test[1..].iter().all(|a| a.trim().is_empty())
            || test[1..].iter().any(|a| a.contains('\0'))
        {
            return Err(bad(
                format!("invalid health check command {test:?}"),
                "give a command after CMD or CMD-SHELL, without NUL bytes",
            ));
        }
        // As docker: 0 means the default; anything else is at least 1ms.
        let positive = |d: Option<Duration>, flag: &str, default: Duration| match d {
            None => Ok(default),
            Some(d) if d.is_zero() => Ok(default),
            Some(d) if d >= Duration::from_millis(1) => Ok(d),
            Some(_) => Err(bad(
                format!("--health-{flag} must be at least 1ms"),
                "give a duration such as 500ms, 30s or 1m (0 means the default, 30s)",
            )),
        };
        let interval = positive(interval, "interval", DEFAULT_INTERVAL)?;
        let timeout = positive(timeout, "timeout", DEFAULT_TIMEOUT)?;
        let retries = match retries {
            None => DEFAULT_RETRIES,
            Some(0) => {
                return Err(bad(
                    "--health-retries must be at least 1".into(),
                    "give the number of consecutive failures that make it unhealthy",
                ));
            }
            Some(n) => n,
        };
        Ok(HealthConfig {
            test,
            interval: interval.as_nanos() as u64,
            timeout: timeout.as_nanos() as u64,
            retries,
            start_period: start_period.unwrap_or_default().as_nanos() as u64,
        })
    }

    /// The argv run inside the container.
    pub fn argv(&self) -> Vec<String> {
        match self.test.first().map(String::as_str) {
            Some("CMD-SHELL") => vec!["/bin/sh".into(), "-c".into(), self.test[1..].join(" ")],
            _ => self.test.get(1..).unwrap_or_default().to_vec(),
        }
    }

    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval)
    }
    pub fn timeout(&self) -> Duration {
        Duration::from_nanos(self.timeout)
    }
    pub fn start_period(&self) -> Duration {
        Duration::from_nanos(self.start_period)
    }
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
    fn test_forms_follow_docker() {
        let one = cfg(3, Duration::ZERO);
        assert_eq!(one.test, ["CMD-SHELL", "true"]);
        assert_eq!(one.argv(), ["/bin/sh", "-c", "true"]);
        let argv =
            HealthConfig::new(&["ls".into(), "/".into()], None, None, None, None).expect("valid");
        assert_eq!(argv.test, ["CMD", "ls", "/"]);
        assert_eq!(argv.argv(), ["ls", "/"]);
        assert_eq!(argv.interval(), DEFAULT_INTERVAL);
        assert_eq!(argv.retries, DEFAULT_RETRIES);
        assert!(HealthConfig::new(&[], None, None, None, None).is_err());
        assert!(HealthConfig::new(&["CMD".into()], None, None, None, None).is_err());
        assert!(HealthConfig::new(&[" ".into()], None, None, None, None).is_err());
        assert!(HealthConfig::new(&["x".into()], None, None, Some(0), None).is_err());
        assert!(
            HealthConfig::new(
                &["x".into()],
                Some(Duration::from_micros(5)),
                None,
                None,
                None
            )
            .is_err()
        );
        let zero = HealthConfig::new(&["x".into()], Some(Duration::ZERO), None, None, None)
            .expect("0 is the default");
        assert_eq!(zero.interval(), DEFAULT_INTERVAL);
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
