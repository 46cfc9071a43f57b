//! Container spec → running process: namespaces, rootfs, cgroups, terminals. Mechanism
//! only: the lifecycle layer (`crate::lifecycle`) owns the runs and prepares what a launch
//! needs from the store.
//!
//! - [`exec`]: a process joining a running container.
//! - [`spec`]: run options + image config → `ContainerConfig` (the Entrypoint/Cmd rule).
//! - [`launch`]: the parent side of clone; [`child`]: the container's init before exec;
//!   [`rootfs`]: the rootfs setup order; [`channel`]: their typed sync messages.
//! - [`restart`]: restart policies and their backoff (pure decisions the monitor follows).
//! - [`health`]: the health-check state machine (the monitor runs the probes).
//! - [`seccomp`]: docker's default seccomp profile (or the user's), compiled and cached.
//! - [`attach`]: the attach socket a monitor serves and its client.
//! - [`logs`]: the json-file log; [`tty`]: signals and raw mode; [`sys`]: raw syscalls.

pub mod attach;
pub mod cgroup;
pub mod channel;
pub mod child;
pub mod exec;
pub mod health;
pub mod launch;
pub mod logs;
pub mod restart;
pub mod rootfs;
pub mod seccomp;
pub mod spec;
pub mod sys;
pub mod tty;
