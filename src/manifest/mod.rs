//! TOML manifests: types, loading, validation with file:line:col, the JSON Schema.
//!
//! Loading is three passes. The first walks each file's span-carrying TOML tree
//! (`toml::de::DeTable`) against the JSON Schema generated from the types ([`schema`]),
//! collecting every problem with its position: syntax, unknown keys (with "did you mean"),
//! wrong types, and the semantic checks of sizes, durations, restart policies, volume specs,
//! names, capabilities and paths, each pointing at the value. The second checks across files
//! (duplicates point at both definitions, image references, declared volumes, env files,
//! memory vs swap). Only when both are clean are the files deserialized into the types and
//! merged, so every problem is reported at once and nothing is touched before.
//!
//! ```no_run
//! # use std::path::Path;
//! let has_image = |reference: &str| false; // ask the store
//! match wharf::manifest::load(Path::new("manifests/shop"), &has_image) {
//!     Ok(manifest) => println!("project {}", manifest.project),
//!     Err(errors) => eprintln!("{}", errors.render(false)), // or errors.to_json()
//! }
//! ```

pub mod check;
pub mod diag;
pub mod load;
pub mod schema;
pub mod trust;
pub mod types;
pub mod values;

pub use diag::{ManifestErrors, Problem};
pub use load::{Host, Manifest, load, load_with, ref_tag};
pub use trust::LoadOptions;
pub use types::*;
pub use values::*;
