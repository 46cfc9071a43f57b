//! The fixtures build and a basic import round-trips; the detailed suites live beside this.

mod common;

use common::{Env, busybox_tar};

#[test]
fn import_then_list() {
    require_root!();
    let env = Env::new();
    let id = env.import(&busybox_tar(), "container:1.0");
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
    let list = env.ok(&["images"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("container ") && l.contains(&id[7..19])),
        "{list}"
    );
}
