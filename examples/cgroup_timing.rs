//! Rough cost of a container's cgroup lifecycle on this host (root):
//! `cargo run --example cgroup_timing [N]`. Not a test: numbers go to docs/notes/cgroup.md.

use std::time::{Duration, Instant};

use wharf::model::Limits;
use wharf::runtime::cgroup;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let limits = Limits {
        memory: Some(64 << 20),
        cpus: Some(0.5),
        pids: Some(64),
        ..Limits::default()
    };
    println!("layout {:?}, {n} rounds", cgroup::detect());
    for (name, limits) in [
        ("no limits", Limits::default()),
        ("-m --cpus --pids-limit", limits),
    ] {
        let (mut create, mut add, mut stats, mut destroy) = (vec![], vec![], vec![], vec![]);
        for i in 0..n {
            let id = format!("timing-{}-{i}", std::process::id());
            let t = Instant::now();
            let cg = cgroup::create(&id, &limits)?;
            create.push(t.elapsed());
            let mut child = std::process::Command::new("/bin/true").spawn()?;
            let t = Instant::now();
            // The child may already be gone: what we time is the writes.
            let _ = cg.add_pid(child.id() as i32);
            add.push(t.elapsed());
            child.wait()?;
            let t = Instant::now();
            let _ = cg.stats();
            stats.push(t.elapsed());
            let t = Instant::now();
            cg.destroy()?;
            destroy.push(t.elapsed());
        }
        println!(
            "{name:>24}: create {:?}  add_pid {:?}  stats {:?}  destroy {:?}  (medians)",
            median(create),
            median(add),
            median(stats),
            median(destroy)
        );
    }
    Ok(())
}
