//! Container spec → running process: namespaces, rootfs, cgroups, terminals, the monitor.

pub mod cgroup;
