//! TOML manifests: types, loading, validation with file:line:col, the JSON Schema.
//!
//! Loading is two passes over each file. The first walks the span-carrying TOML tree
//! (`toml::de::DeTable`) against the JSON Schema generated from the types ([`schema`]),
//! collecting every problem with its position: unknown keys, wrong types, and the semantic
//! checks of sizes, durations, restart policies, volume specs, names and paths. Cross-file
//! checks follow (duplicates, image references). Only a clean set of files is deserialized
//! into the types, so every problem is reported at once and nothing is touched before.

pub mod check;
pub mod diag;
pub mod load;
pub mod schema;
pub mod types;
pub mod values;

pub use diag::{ManifestErrors, Problem};
pub use load::{Manifest, load};
pub use types::*;
pub use values::*;
