//! wharf: a daemonless container runner driven by declarative TOML manifests.
//!
//! The map of this crate is `docs/ARCHITECTURE.md`. In short: [`store`] owns the state root,
//! [`image`] imports tarballs into content-addressed images, [`runtime`] turns a container
//! spec into a running process, and [`cli`] is the thin layer that parses and renders.

pub mod cli;
pub mod error;
pub mod image;
pub mod reference;
pub mod runtime;
pub mod store;
pub mod util;
