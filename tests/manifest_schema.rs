//! The checked-in JSON Schema matches the types, is well-formed draft-07 with descriptions
//! everywhere, and every example under manifests/ validates against it.
//!
//! Regenerate the schema with `WHARF_BLESS=1 cargo test --test manifest_schema`.

use std::path::{Path, PathBuf};

use serde_json::Value;

const SCHEMA_PATH: &str = "schemas/manifest.schema.json";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn checked_in_schema_is_up_to_date() {
    let generated = wharf::manifest::schema::schema_json();
    let path = root().join(SCHEMA_PATH);
    if std::env::var_os("WHARF_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "{SCHEMA_PATH} is stale: it differs from the schema generated from src/manifest/types.rs.\n\
         Regenerate it with:\n\n    WHARF_BLESS=1 cargo test --test manifest_schema\n\n\
         and commit the result."
    );
}

/// Walks every subschema, calling `f(path, schema)`.
fn walk(v: &Value, path: &str, f: &mut dyn FnMut(&str, &Value)) {
    f(path, v);
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                if k == "examples" || k == "enum" || k == "default" {
                    continue;
                }
                walk(c, &format!("{path}/{k}"), f);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                walk(c, &format!("{path}/{i}"), f);
            }
        }
        _ => {}
    }
}

#[test]
fn schema_is_draft07_closed_and_described() {
    let s = wharf::manifest::schema::schema();
    assert_eq!(s["$schema"], "http://json-schema.org/draft-07/schema#");
    assert!(s["definitions"].is_object(), "uses definitions");
    let mut problems = Vec::new();
    walk(s, "#", &mut |path, v| {
        let Some(obj) = v.as_object() else { return };
        if obj.contains_key("properties")
            && obj.get("additionalProperties") != Some(&Value::Bool(false))
        {
            problems.push(format!(
                "{path}: a table without additionalProperties: false"
            ));
        }
        if let Some(props) = obj.get("properties").and_then(Value::as_object) {
            for (name, p) in props {
                if p.get("description")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    problems.push(format!("{path}/properties/{name}: no description"));
                }
            }
        }
        if let Some(defs) = obj.get("definitions").and_then(Value::as_object) {
            for (name, d) in defs {
                if d.get("description").is_none() {
                    problems.push(format!("{path}/definitions/{name}: no description"));
                }
            }
        }
        if obj.contains_key("$ref") && obj.len() > 1 {
            problems.push(format!("{path}: $ref with siblings (ignored by draft-07)"));
        }
    });
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn examples(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            examples(&p, out);
        } else if p.extension().is_some_and(|x| x == "toml") {
            out.push(p);
        }
    }
}

#[test]
fn every_example_validates_against_the_schema() {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join(SCHEMA_PATH)).unwrap()).unwrap();
    let validator = jsonschema::draft7::new(&schema).expect("the schema compiles as draft-07");
    let mut files = Vec::new();
    examples(&root().join("manifests"), &mut files);
    assert!(files.len() >= 4, "{files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let depth = f
            .strip_prefix(root().join("manifests"))
            .unwrap()
            .components()
            .count();
        let header = format!(
            "#:schema {}schemas/manifest.schema.json",
            "../".repeat(depth)
        );
        assert!(
            text.starts_with(&header),
            "{} must start with `{header}`",
            f.display()
        );
        let value: toml::Value = toml::from_str(&text).unwrap();
        let json = serde_json::to_value(&value).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&json)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {}", f.display(), errors.join("\n"));
    }
}

#[test]
fn the_schema_rejects_what_the_loader_rejects() {
    let schema = wharf::manifest::schema::schema();
    let validator = jsonschema::draft7::new(schema).unwrap();
    for bad in [
        r#"[containers.web]
           image = "app:1"
           imgae = "x""#,
        r#"[containers.web]
           image = "app:1"
           restart = "sometimes""#,
        r#"[containers.web]
           image = "app:1"
           limits = { memory = "12Q" }"#,
        r#"[containers.web]
           image = "app:1"
           state = "paused""#,
        r#"[containers."-bad"]
           image = "app:1""#,
        r#"[containers.web]
           image = "app:1"
           volumes = ["data"]"#,
        r#"bogus = 1"#,
        r#"[images.web]
           tag = "web:1""#,
        r#"[images.web]
           source = "web.tar""#,
        r#"[images.web]
           source = "web.tar"
           tag = "web:1"
           ref = "127.0.0.1:5000/team/web:1""#,
    ] {
        let value: toml::Value = toml::from_str(bad).unwrap();
        let json = serde_json::to_value(&value).unwrap();
        assert!(!validator.is_valid(&json), "schema accepted:\n{bad}");
    }
    for good in [
        r#"[images.web]
           ref = "127.0.0.1:5000/team/web:1.4""#,
        r#"[images.web]
           ref = "127.0.0.1:5000/team/web:1.4"
           tag = "web:1.4""#,
        r#"[images.web]
           source = "web.tar"
           tag = "web:1""#,
    ] {
        let value: toml::Value = toml::from_str(good).unwrap();
        let json = serde_json::to_value(&value).unwrap();
        assert!(validator.is_valid(&json), "schema refused:\n{good}");
    }
    let img = &schema["definitions"]["ImageSection"]["properties"];
    assert!(img["ref"].to_string().contains("RegistryRef"), "{img}");
}
