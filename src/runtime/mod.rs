//! Container spec → running process: namespaces, rootfs, cgroups, terminals, the monitor.
