//! Container spec → running process: namespaces, rootfs, cgroups, terminals, the monitor.
//!
//! - [`ops`]: the verbs (`run`, `start`, `restart`, `stop`, `kill`, `rm`, `inspect`) and the run
//!   dir (the overlay mount point).
//! - [`exec`]: `wharf exec`, a process joining a running container.
//! - [`spec`]: run options + image config → `ContainerConfig`.
//! - [`launch`]: the parent side of clone; [`child`]: the container's init before exec.
//! - [`monitor`]: the process owning a run (stdio, signals, reaping, recording, cleanup).
//! - [`restart`]: restart policies and their backoff (pure decisions the monitor follows).
//! - [`health`]: health-check config and its state machine (the monitor runs the probes).
//! - [`logs`]: the json-file log; [`sys`]: raw syscall wrappers.

pub mod cgroup;
pub mod child;
pub mod control;
pub mod exec;
pub mod health;
pub mod launch;
pub mod logs;
pub mod monitor;
pub mod ops;
pub mod restart;
pub mod rootfs;
pub mod spec;
pub mod sys;
