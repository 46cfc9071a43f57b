//! Restart policies as the monitor carries them out: whether a run that just ended is
//! followed by another, and after how long.
//!
//! docker's rules: `no` never restarts; `on-failure[:N]` restarts after a non-zero exit, at
//! most N times; `always` and `unless-stopped` restart after any exit. A container stopped
//! by the user (`wharf stop`, `wharf kill`, `rm -f`) is never restarted by its monitor.
//! (`always` and `unless-stopped` differ in docker when the daemon starts again; wharf has no
//! daemon, and `apply`/`watch` start every declared container they find stopped.)
//!
//! The delay doubles from 100 ms up to one minute, and falls back to 100 ms after a run that
//! lasted at least 10 s (docker's numbers), so a crash loop costs little and a service that
//! dies once a day restarts at once.

use std::time::Duration;

pub use crate::model::RestartPolicy;

/// Backoff parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// A run at least this long resets the delay.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(60),
            reset_after: Duration::from_secs(10),
        }
    }
}

/// How a run ended, as far as the policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// The exit code as `run` reports it (128+N for signal N).
    pub code: i32,
    /// The user asked it to stop (stop, kill, rm -f).
    pub stop_requested: bool,
    /// How long the run lasted.
    pub ran_for: Duration,
}

/// The monitor's decision after a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The container stays exited.
    Stay,
    /// Start it again after the delay.
    Restart { after: Duration },
}

/// Decides what follows a run. `restarts` counts the restarts done so far by this policy;
/// `last_delay` is the delay before the run that just ended (None for the first run).
pub fn decide(
    policy: RestartPolicy,
    ended: Ended,
    restarts: u32,
    last_delay: Option<Duration>,
    backoff: Backoff,
) -> Decision {
    if ended.stop_requested {
        return Decision::Stay;
    }
    let again = match policy {
        RestartPolicy::No => false,
        RestartPolicy::OnFailure { max } => ended.code != 0 && max.is_none_or(|m| restarts < m),
        RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
    };
    if !again {
        return Decision::Stay;
    }
    let after = match last_delay {
        Some(d) if ended.ran_for < backoff.reset_after => {
            (d * 2).clamp(backoff.initial, backoff.max)
        }
        _ => backoff.initial,
    };
    Decision::Restart { after }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(code: i32) -> Ended {
        Ended {
            code,
            stop_requested: false,
            ran_for: Duration::from_millis(5),
        }
    }

    fn restarts_until_stay(policy: RestartPolicy, code: i32, cap: u32) -> u32 {
        let mut n = 0;
        let mut delay = None;
        while n < cap {
            match decide(policy, ended(code), n, delay, Backoff::default()) {
                Decision::Stay => break,
                Decision::Restart { after } => {
                    delay = Some(after);
                    n += 1;
                }
            }
        }
        n
    }

    #[test]
    fn on_failure_max_stops_after_max_restarts() {
        let p = RestartPolicy::OnFailure { max: Some(2) };
        assert_eq!(restarts_until_stay(p, 1, 100), 2);
        assert_eq!(
            restarts_until_stay(p, 0, 100),
            0,
            "success is not a failure"
        );
        let unbounded = RestartPolicy::OnFailure { max: None };
        assert_eq!(restarts_until_stay(unbounded, 137, 100), 100);
    }

    #[test]
    fn always_and_unless_stopped_restart_after_any_exit_but_not_after_stop() {
        for p in [RestartPolicy::Always, RestartPolicy::UnlessStopped] {
            assert_eq!(restarts_until_stay(p, 0, 50), 50);
            let stopped = Ended {
                stop_requested: true,
                ..ended(143)
            };
            assert_eq!(
                decide(p, stopped, 0, None, Backoff::default()),
                Decision::Stay
            );
        }
        assert_eq!(restarts_until_stay(RestartPolicy::No, 1, 50), 0);
    }

    #[test]
    fn backoff_doubles_caps_and_resets_after_a_long_run() {
        let b = Backoff::default();
        let p = RestartPolicy::Always;
        let mut delay = None;
        let mut seen = Vec::new();
        for _ in 0..12 {
            let Decision::Restart { after } = decide(p, ended(1), 0, delay, b) else {
                panic!("always restarts");
            };
            seen.push(after);
            delay = Some(after);
        }
        assert_eq!(seen[0], Duration::from_millis(100));
        assert_eq!(seen[1], Duration::from_millis(200));
        assert_eq!(seen[5], Duration::from_millis(3200));
        assert_eq!(*seen.last().expect("12 delays"), Duration::from_secs(60));
        let long = Ended {
            ran_for: Duration::from_secs(10),
            ..ended(1)
        };
        assert_eq!(
            decide(p, long, 0, delay, b),
            Decision::Restart {
                after: Duration::from_millis(100)
            }
        );
    }
}
