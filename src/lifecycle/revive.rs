//! Bringing back `--restart always` / `unless-stopped` containers whose monitor died.
//!
//! A monitor killed (OOM killer, `kill -9`, a reboot) takes its container with it, and
//! nothing of wharf runs to restart it: there is no daemon. docker restarts such containers
//! when its daemon starts; wharf does it at the next `apply`, `watch` or `start`, which are
//! the commands that mean "make things run". Each one is logged with the reason.

use anyhow::Result;

use super::{StartMode, recover};
use crate::container;
use crate::model::RestartPolicy;
use crate::store::Store;

/// Starts (detached) every container whose monitor died and whose restart policy is
/// `always` or `unless-stopped`; prints why on stderr. Returns their names. A container
/// that fails to start is reported and the others go on.
pub fn revive(store: &Store) -> Result<Vec<String>> {
    recover(store)?;
    let mut revived = Vec::new();
    for id in container::monitor_died_ids(store)? {
        let Ok(rec) = container::find(store, &id) else {
            continue; // removed meanwhile
        };
        if !rec.monitor_died()
            || !matches!(
                rec.config.restart,
                RestartPolicy::Always | RestartPolicy::UnlessStopped
            )
        {
            continue;
        }
        eprintln!(
            "wharf: restarting {}: its monitor died at an unknown time, and its restart policy is {}",
            rec.name, rec.config.restart
        );
        match super::start(store, &rec.id, StartMode::Detached) {
            Ok(_) => revived.push(rec.name),
            Err(e) => eprintln!(
                "wharf: cannot restart {}: {}",
                rec.name,
                crate::error::render(&e).trim()
            ),
        }
    }
    Ok(revived)
}
