//! Disk space: what the store takes ([`df`]), and getting it back ([`prune`]), with docker's
//! `--filter` syntax ([`filter`]).
//!
//! The CLI's `system df`, `system prune`, `container prune`, `image prune` and `volume prune`
//! are thin renderers over these functions; `apply` and retention policies call them too.
//! [`prune::select`] is pure (objects + scope + filters → plan); [`prune::execute`] removes a
//! plan through the same library calls as `rm`, `rmi` and `volume rm`.

pub mod df;
pub mod filter;
pub mod prune;
