//! Crash recovery: runs whose owner (a foreground `wharf run`, or a detached monitor) died
//! without recording the end. Only verbs that change state call [`recover`]; reads (`ps`,
//! `inspect`, `history`, `diff`, `apply --dry-run`) see such a run through the liveness rule
//! ([`crate::container::run_goes_on`]) and change nothing.

use anyhow::Result;
use rusqlite::OptionalExtension;

use crate::container::{self, Outcome, Record};
use crate::error::exit;
use crate::model::{ContainerState, Stats};
use crate::runtime::cgroup;
use crate::store::Store;

/// Closes every run whose owner died: kills what is left of the container (its monitor's
/// death already SIGKILLed its init through PDEATHSIG), records it exited with its cgroup's
/// figures, and finishes it as its own monitor would have ([`finish_run`]: a `--rm` container
/// goes). Cheap when nothing is stale: one indexed query.
pub fn recover(store: &Store) -> Result<()> {
    let mut cleaned = false;
    for rec in container::active(store)? {
        if rec.live_monitor().is_some() {
            continue;
        }
        if let Some(pid) = rec.live_pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        tracing::info!("closing the run of {} whose monitor died", rec.short_id());
        let stats = match cgroup::open(&rec.id) {
            Some(cg) => {
                let s = cg.stats();
                let _ = cg.destroy();
                s
            }
            None => Stats::default(),
        };
        let run_id: Option<i64> = store
            .db()
            .prepare_cached(
                "SELECT id FROM runs WHERE container_id = ?1 AND finished_at IS NULL \
                 ORDER BY started_at DESC LIMIT 1",
            )?
            .query_row([&rec.id], |r| r.get(0))
            .optional()?;
        // Between two runs of a restart policy, the last run's exit code stands.
        let exit_code = match (rec.state, rec.exit_code) {
            (ContainerState::Restarting, Some(c)) => c,
            _ => exit::RUNTIME,
        };
        let out = Outcome {
            exit_code,
            signal: None,
            stats,
        };
        // The network it was given goes first (a --rm container's files go below).
        if let Err(e) = crate::network::detach(store, &rec.id) {
            tracing::warn!("cannot tear down the network of {}: {e:#}", rec.short_id());
        }
        if rec.config.auto_remove {
            finish_run(store, &rec, run_id, &out)?;
        } else {
            // Exited at an unknown time (no FinishedAt invented; inspect says why), which
            // `revive` brings back for `always` and `unless-stopped`.
            container::mark_monitor_died(store, &rec.id, run_id, &out)?;
        }
        cleaned = true;
    }
    if cleaned {
        let keep: Vec<String> = store
            .db()
            .prepare_cached("SELECT id FROM containers WHERE state = ?1")?
            .query_map([ContainerState::Running], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        cgroup::remove_stale(&keep)?;
    }
    Ok(())
}

/// Records the end of the container's last run and, for a `--rm` container, removes it with
/// its directory and anonymous volumes: the one `--rm` cleanup, for the monitor and for
/// crash recovery alike.
pub fn finish_run(store: &Store, rec: &Record, run_id: Option<i64>, out: &Outcome) -> Result<()> {
    let remove = rec.config.auto_remove;
    container::mark_exited(store, &rec.id, run_id, out, remove)?;
    if remove {
        container::remove_files(store, &rec.id);
        crate::volume::remove_anonymous(store, &rec.config.volumes);
    }
    Ok(())
}
