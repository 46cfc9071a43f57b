//! The manifest's JSON Schema (draft-07), generated from the Rust types.
//!
//! The checked-in copy is `schemas/manifest.schema.json`; `tests/manifest_schema.rs` fails
//! when it is stale (`WHARF_BLESS=1 cargo test --test manifest_schema` rewrites it).

use std::sync::OnceLock;

use serde_json::Value;

use super::types::{ManifestFile, name_schema, object_name_schema};
use crate::names::NameKind;

/// The schema as a JSON value.
pub fn schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(generate)
}

/// The schema as the pretty JSON text that is checked in (with a trailing newline).
pub fn schema_json() -> String {
    let mut s = serde_json::to_string_pretty(schema()).unwrap_or_default();
    s.push('\n');
    s
}

fn generate() -> Value {
    let generator = schemars::generate::SchemaSettings::draft07().into_generator();
    let root = generator.into_root_schema_for::<ManifestFile>();
    let mut v = root.to_value();
    strip_null(&mut v);
    if let Some(defs) = v.get_mut("definitions").and_then(Value::as_object_mut) {
        defs.insert("Name".into(), name_schema());
        defs.insert(
            "ContainerName".into(),
            object_name_schema(NameKind::Container),
        );
        defs.insert("VolumeName".into(), object_name_schema(NameKind::Volume));
        // An image comes from a tarball (with its tag) or from a registry, never both.
        if let Some(img) = defs.get_mut("ImageSection").and_then(Value::as_object_mut) {
            img.insert(
                "oneOf".into(),
                serde_json::json!([
                    { "required": ["source", "tag"] },
                    { "required": ["ref"] }
                ]),
            );
        }
    }
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "$id".into(),
            Value::String("https://wharf.invalid/schemas/manifest.schema.json".into()),
        );
    }
    v
}

/// TOML has no null: `Option<T>` means "may be left out", which `required` already says.
/// Drops `"null"` from `type` arrays and `{"type": "null"}` from `anyOf`, collapsing what is
/// left, and drops `default: null`.
fn strip_null(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let t = types.remove(0);
                    map.insert("type".into(), t);
                }
            }
            if map.get("default") == Some(&Value::Null) {
                map.remove("default");
            }
            if let Some(Value::Array(any)) = map.get_mut("anyOf") {
                any.retain(|s| s.get("type") != Some(&Value::String("null".into())));
                if any.len() == 1 {
                    let only = any.remove(0);
                    map.remove("anyOf");
                    if let Value::Object(inner) = only {
                        for (k, val) in inner {
                            map.entry(k).or_insert(val);
                        }
                    }
                }
            }
            // draft-07 ignores the siblings of $ref (the description): wrap it in allOf.
            if map.len() > 1
                && let Some(r) = map.remove("$ref")
            {
                map.insert("allOf".into(), serde_json::json!([{ "$ref": r }]));
            }
            for val in map.values_mut() {
                strip_null(val);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_null),
        _ => {}
    }
}
