//! TOML manifests: types, loading, validation with file:line:col, the JSON Schema.
