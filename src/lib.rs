//! wharf: a daemonless container runner driven by declarative TOML manifests.
//!
//! The map of this crate is `docs/ARCHITECTURE.md`. In short: [`store`] owns the state root,
//! [`image`] imports tarballs into content-addressed images, [`runtime`] turns a container
//! spec into a running process, [`manifest`] and [`reconcile`] are the declarative side, and
//! [`cli`] is the thin layer that parses and renders.

pub mod cli;
pub mod container;
pub mod disk;
pub mod error;
pub mod events;
pub mod image;
pub mod journal;
pub mod lifecycle;
pub mod manifest;
pub mod model;
pub mod names;
pub mod network;
pub mod policy;
pub mod reconcile;
pub mod reference;
pub mod retention;
pub mod runtime;
pub mod store;
pub mod util;
pub mod volume;
pub mod watch;
