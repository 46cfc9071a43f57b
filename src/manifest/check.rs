//! Checks a span-carrying TOML tree against the generated JSON Schema, collecting every
//! problem with its position instead of stopping at the first.
//!
//! The schema keywords understood are those the generator emits: `$ref`, `allOf`, `anyOf`,
//! `oneOf`, `type`, `enum`, `properties`, `required`, `additionalProperties`,
//! `propertyNames`, `items`, `minimum`, `maximum`, `minItems`, `minLength`. A `$ref` to one of
//! the definitions in [`semantic`] also runs that value's own parser, so `"12Q"` in a size
//! field is reported at the string, with the size syntax as the hint.

use std::path::Path;

use serde_json::Value;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::diag::Problem;
use super::values::{
    self, ValueError, check_cpuset, check_name, check_object_name, normalize_capability,
    parse_duration, parse_restart, parse_size, parse_swap, parse_volume,
};
use crate::names::NameKind;
use crate::reference::Reference;

/// What the checker needs to know about the file it checks.
pub struct Ctx<'a> {
    /// What the store and the host answer (`super::Host`).
    pub host: &'a dyn super::Host,
    pub file: &'a Path,
    /// The directory relative paths are resolved against.
    pub base: &'a Path,
    pub root: &'a Value,
}

/// Checks a whole document against the root schema.
pub fn check_document(ctx: &Ctx<'_>, doc: &Spanned<DeTable<'_>>, out: &mut Vec<Problem>) {
    let span = doc.span();
    let value = Spanned::new(span, DeValue::Table(doc.get_ref().clone()));
    check_lengths(ctx, &value, "", out);
    check(ctx, ctx.root, &value, "", out);
}

/// Every string (a command argument, an env or label value, a key) must be shorter than
/// [`crate::model::MAX_VALUE_BYTES`]: the kernel refuses a longer argument or env entry at exec
/// (`MAX_ARG_STRLEN`), and no label needs more. One pass over the tree, one problem each.
fn check_lengths(ctx: &Ctx<'_>, value: &Spanned<DeValue<'_>>, path: &str, out: &mut Vec<Problem>) {
    let too_long = |what: &str, len: usize, span, out: &mut Vec<Problem>| {
        out.push(
            Problem::new(format!(
                "{what} is {len} bytes long; one value must be shorter than {} KiB",
                crate::model::MAX_VALUE_BYTES >> 10
            ))
            .at(ctx.file, span)
            .label("too long")
            .hint(Some(
                "the kernel refuses an argument or environment entry of 128 KiB or more at exec; \
                 put large data in a file (a bind mount or a volume) and pass its path",
            )),
        );
    };
    match value.get_ref() {
        DeValue::String(s) if s.len() >= crate::model::MAX_VALUE_BYTES => {
            let what = if path.is_empty() {
                "a value".to_string()
            } else {
                format!("`{path}`")
            };
            too_long(&what, s.len(), value.span(), out);
        }
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_lengths(ctx, item, &format!("{path}[{i}]"), out);
            }
        }
        DeValue::Table(t) => {
            for (k, v) in t.iter() {
                if k.get_ref().len() >= crate::model::MAX_VALUE_BYTES {
                    too_long(
                        &format!("a key in `{path}`"),
                        k.get_ref().len(),
                        k.span(),
                        out,
                    );
                    continue;
                }
                check_lengths(ctx, v, &join(path, k.get_ref()), out);
            }
        }
        _ => {}
    }
}

fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

fn matches_type(v: &DeValue<'_>, t: &str) -> bool {
    matches!(
        (t, v),
        ("string", DeValue::String(_))
            | ("integer", DeValue::Integer(_))
            | ("number", DeValue::Integer(_) | DeValue::Float(_))
            | ("boolean", DeValue::Boolean(_))
            | ("array", DeValue::Array(_))
            | ("object", DeValue::Table(_))
    )
}

fn describe_type(t: &str) -> &'static str {
    match t {
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        "boolean" => "a boolean (true or false)",
        "array" => "an array",
        "object" => "a table",
        _ => "a value",
    }
}

fn resolve<'s>(root: &'s Value, r: &'s str) -> Option<(&'s Value, &'s str)> {
    let name = r.strip_prefix("#/definitions/")?;
    Some((root.get("definitions")?.get(name)?, name))
}

fn as_f64(v: &DeValue<'_>) -> Option<f64> {
    match v {
        DeValue::Integer(i) => i64::from_str_radix(&i.as_str().replace('_', ""), i.radix())
            .ok()
            .map(|n| n as f64),
        DeValue::Float(f) => f.as_str().replace('_', "").parse().ok(),
        _ => None,
    }
}

/// Where a value is, for messages: `containers.web.limits.memory`.
fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn example_hint(schema: &Value) -> Option<String> {
    let ex = schema.get("examples")?.as_array()?.first()?;
    Some(format!("for example: {ex}"))
}

/// Checks `value` at `path` against `schema`. Returns whether it passed (no new problems).
pub fn check(
    ctx: &Ctx<'_>,
    schema: &Value,
    value: &Spanned<DeValue<'_>>,
    path: &str,
    out: &mut Vec<Problem>,
) -> bool {
    let before = out.len();
    check_inner(ctx, schema, value, path, out);
    out.len() == before
}

fn check_inner(
    ctx: &Ctx<'_>,
    schema: &Value,
    value: &Spanned<DeValue<'_>>,
    path: &str,
    out: &mut Vec<Problem>,
) {
    let span = value.span();
    let v = value.get_ref();
    let what = if path.is_empty() {
        "the manifest".to_string()
    } else {
        format!("`{path}`")
    };

    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        if let Some((def, name)) = resolve(ctx.root, r)
            && check(ctx, def, value, path, out)
            && let Err(e) = semantic(ctx, name, v)
        {
            let label = if e.message.contains("does not exist") {
                "not found"
            } else {
                short_label(name)
            };
            out.push(
                Problem::new(format!("{what}: {}", e.message))
                    .at(ctx.file, span)
                    .label(label)
                    .hint(e.hint),
            );
        }
        return;
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            if !check(ctx, s, value, path, out) {
                return;
            }
        }
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(alts) = schema.get(key).and_then(Value::as_array) {
            // Alternatives that are all constants (a unit enum with doc comments) read
            // better as one "expected one of" than as a problem per alternative.
            let consts: Option<Vec<Value>> = alts.iter().map(|a| a.get("const").cloned()).collect();
            if let Some(consts) = consts {
                let as_enum = serde_json::json!({ "type": "string", "enum": consts });
                check_inner(ctx, &as_enum, value, path, out);
                return;
            }
            let mut best: Option<Vec<Problem>> = None;
            for s in alts {
                let mut scratch = Vec::new();
                if check(ctx, s, value, path, &mut scratch) {
                    best = None;
                    break;
                }
                if best.as_ref().is_none_or(|b| scratch.len() < b.len()) {
                    best = Some(scratch);
                }
            }
            if let Some(b) = best {
                out.extend(b);
                return;
            }
        }
    }

    // type
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if !types.is_empty() && !types.iter().any(|t| matches_type(v, t)) {
            let expected: Vec<&str> = types.iter().map(|t| describe_type(t)).collect();
            out.push(
                Problem::new(format!(
                    "{what}: expected {}, found {}",
                    expected.join(" or "),
                    type_name(v)
                ))
                .at(ctx.file, span)
                .label(format!("expected {}", expected.join(" or ")))
                .hint(
                    example_hint(schema)
                        .or_else(|| type_hint(&types, v))
                        .or_else(|| description(schema)),
                ),
            );
            return;
        }
    }

    // enum
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        let s = v.as_str().unwrap_or_default();
        if !options.iter().any(|o| o.as_str() == Some(s)) {
            let names: Vec<&str> = options.iter().filter_map(Value::as_str).collect();
            let list = names
                .iter()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(", ");
            let hint = match did_you_mean(s, names.iter().copied()) {
                Some(m) => format!("did you mean \"{m}\"? (one of {list})"),
                None => format!("write one of {list}"),
            };
            out.push(
                Problem::new(format!("{what}: unknown value {s:?}"))
                    .at(ctx.file, span)
                    .label("not one of the allowed values")
                    .hint(Some(hint)),
            );
            return;
        }
    }

    match v {
        DeValue::Table(table) => check_table(ctx, schema, table, span, path, out),
        DeValue::Array(items) => {
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && (items.len() as u64) < min
            {
                out.push(
                    Problem::new(format!("{what}: needs at least {min} item(s)"))
                        .at(ctx.file, span)
                        .label("too few items")
                        .hint(description(schema)),
                );
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(ctx, item_schema, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        DeValue::Integer(_) | DeValue::Float(_) => {
            if let Some(n) = as_f64(v) {
                let min = schema.get("minimum").and_then(Value::as_f64);
                let max = schema.get("maximum").and_then(Value::as_f64);
                if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) {
                    let range = match (min, max) {
                        (Some(a), Some(b)) => format!("from {a} to {b}"),
                        (Some(a), None) => format!("at least {a}"),
                        (None, Some(b)) => format!("at most {b}"),
                        (None, None) => String::new(),
                    };
                    out.push(
                        Problem::new(format!("{what}: {n} is out of range"))
                            .at(ctx.file, span)
                            .label(format!("must be {range}"))
                            .hint(description(schema)),
                    );
                }
            }
        }
        DeValue::String(s) => {
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && (s.chars().count() as u64) < min
            {
                out.push(
                    Problem::new(format!("{what}: must not be empty"))
                        .at(ctx.file, span)
                        .label("empty")
                        .hint(description(schema)),
                );
            }
        }
        _ => {}
    }
}

fn type_hint(types: &[&str], v: &DeValue<'_>) -> Option<String> {
    match (types.first().copied(), v) {
        (Some("array"), DeValue::String(s)) => Some(format!(
            "write a list of strings, e.g. [{}]",
            s.split_whitespace()
                .map(|w| format!("{w:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        (Some("string"), DeValue::Integer(i)) => Some(format!("quote it: \"{}\"", i.as_str())),
        (Some("string"), DeValue::Float(f)) => Some(format!("quote it: \"{}\"", f.as_str())),
        _ => None,
    }
}

fn description(schema: &Value) -> Option<String> {
    schema
        .get("description")
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn short_label(def: &str) -> &'static str {
    match def {
        "ByteSize" | "SwapLimit" => "not a valid size",
        "Duration" => "not a valid duration",
        "RestartPolicy" => "not a restart policy",
        "VolumeSpec" => "not a valid volume",
        "ImageRef" | "ImageTag" | "RegistryRef" => "not a valid image reference",
        "Name" | "ContainerName" | "VolumeName" => "not a valid name",
        "RelativeFile" => "file not found",
        "Capability" => "unknown capability",
        "CpuSet" => "not a valid cpuset",
        "AbsolutePath" => "not an absolute path",
        _ => "invalid value",
    }
}

fn check_table(
    ctx: &Ctx<'_>,
    schema: &Value,
    table: &DeTable<'_>,
    span: std::ops::Range<usize>,
    path: &str,
    out: &mut Vec<Problem>,
) {
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    let names = schema.get("propertyNames");
    for (key, val) in table.iter() {
        let k: &str = key.get_ref();
        let key_path = join(path, k);
        if let Some(names_schema) = names {
            let key_value = Spanned::new(key.span(), DeValue::String(k.to_string().into()));
            check(ctx, names_schema, &key_value, &key_path, out);
        }
        if let Some(prop) = props.and_then(|p| p.get(k)) {
            check(ctx, prop, val, &key_path, out);
        } else {
            match additional {
                Some(Value::Bool(false)) => {
                    let known: Vec<&str> = props
                        .map(|p| p.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    let hint = match did_you_mean(k, known.iter().copied()) {
                        Some(m) => format!("did you mean `{m}`?"),
                        None => format!(
                            "the keys allowed here are: {}",
                            known
                                .iter()
                                .map(|k| format!("`{k}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    };
                    let within = if path.is_empty() {
                        "at the top level".to_string()
                    } else {
                        format!("in `{path}`")
                    };
                    out.push(
                        Problem::new(format!("unknown key `{k}` {within}"))
                            .at(ctx.file, key.span())
                            .label("unknown key")
                            .hint(Some(hint)),
                    );
                }
                Some(s @ Value::Object(_)) => {
                    check(ctx, s, val, &key_path, out);
                }
                _ => {}
            }
        }
    }
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for r in required.iter().filter_map(Value::as_str) {
            if table.get(r).is_none() {
                let what = if path.is_empty() {
                    "the manifest".to_string()
                } else {
                    format!("`{path}`")
                };
                let desc = props
                    .and_then(|p| p.get(r))
                    .and_then(description)
                    .map(|d| format!("add `{r} = ...`: {d}"));
                out.push(
                    Problem::new(format!("{what} is missing the required key `{r}`"))
                        .at(ctx.file, span.clone())
                        .label(format!("`{r}` is missing here"))
                        .hint(desc),
                );
            }
        }
    }
}

/// The semantic check of a named definition (after its structure passed).
fn semantic(ctx: &Ctx<'_>, def: &str, v: &DeValue<'_>) -> Result<(), ValueError> {
    let Some(s) = v.as_str() else {
        // Integers in size fields: negative is the only way to be wrong.
        if matches!(def, "ByteSize")
            && let Some(n) = as_f64(v)
            && n < 0.0
        {
            return Err(ValueError {
                message: format!("a size cannot be negative ({n})"),
                hint: Some("write a number of bytes, or a string like \"64MiB\"".into()),
            });
        }
        return Ok(());
    };
    match def {
        "ByteSize" => parse_size(s).map(|_| ()),
        "SwapLimit" => parse_swap(s).map(|_| ()),
        "Duration" => parse_duration(s).map(|_| ()),
        "RestartPolicy" => parse_restart(s).map(|_| ()),
        "Name" => check_name(s),
        "ContainerName" => check_object_name(NameKind::Container, s),
        "VolumeName" => check_object_name(NameKind::Volume, s),
        "CpuSet" => check_cpuset(s),
        "Capability" => normalize_capability(s).map(|_| ()),
        "AbsolutePath" => {
            if s.starts_with('/') {
                Ok(())
            } else {
                Err(ValueError {
                    message: format!("{s:?} is not an absolute path"),
                    hint: Some(format!(
                        "paths inside the container start with '/', e.g. \"/{s}\""
                    )),
                })
            }
        }
        "Tmpfs" => ctx.host.check_tmpfs(s).map_err(|message| ValueError {
            message,
            hint: None,
        }),
        "Signal" => crate::util::parse_signal(s)
            .map(|_| ())
            .map_err(anyhow_to_value),
        "Device" => ctx.host.check_device(s).map_err(|message| ValueError {
            message,
            hint: None,
        }),
        "Port" => crate::model::PortSpec::parse(s)
            .map(|_| ())
            .map_err(|message| ValueError {
                message: format!("{s:?} is not a port mapping: {message}"),
                hint: Some(
                    "write \"[HOST_IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp]\", e.g. \"8080:80\""
                        .into(),
                ),
            }),
        "Subnet" => match s.parse::<ipnet::Ipv4Net>() {
            Ok(n) if n.prefix_len() <= 30 => Ok(()),
            Ok(_) => Err(ValueError {
                message: format!("the subnet {s} is too small"),
                hint: Some("give /30 or larger, e.g. \"10.89.7.0/24\"".into()),
            }),
            Err(_) => Err(ValueError {
                message: format!("{s:?} is not an IPv4 subnet"),
                hint: Some("write it in CIDR form, e.g. \"10.89.7.0/24\"".into()),
            }),
        },
        "ImageRef" => Reference::parse(s).map(|_| ()).map_err(user_to_value),
        "RegistryRef" => crate::reference::registry_ref(s)
            .map(|_| ())
            .map_err(user_to_value),
        "ImageTag" => Reference::parse_named(s)
            .map_err(user_to_value)
            .and_then(|r| match r {
                Reference::Tag { .. } => Ok(()),
                _ => Err(ValueError {
                    message: format!("{s:?} is not a tag"),
                    hint: Some("write name[:tag], e.g. \"app:1.1\"".into()),
                }),
            }),
        "RelativeFile" => {
            let p = join_path(ctx.base, s);
            if p.is_file() {
                Ok(())
            } else {
                let why = if p.exists() {
                    "is not a regular file"
                } else {
                    "does not exist"
                };
                Err(ValueError {
                    message: format!("{} {why}", p.display()),
                    hint: Some(format!(
                        "paths are relative to the manifest's directory ({}); create the file or fix the path",
                        ctx.base.display()
                    )),
                })
            }
        }
        "VolumeSpec" => {
            let spec = parse_volume(s)?;
            if let values::VolumeSource::Bind(src) = &spec.source {
                let p = join_path(ctx.base, src);
                if !p.exists() {
                    return Err(ValueError {
                        message: format!("bind mount source {} does not exist", p.display()),
                        hint: Some(format!(
                            "create it, or fix the path (relative paths start at {})",
                            ctx.base.display()
                        )),
                    });
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// `base` joined with `rel`, without `.` components (`/m/./x` reads badly in messages).
pub fn join_path(base: &Path, rel: &str) -> std::path::PathBuf {
    let mut p = base.to_path_buf();
    for c in Path::new(rel).components() {
        match c {
            std::path::Component::CurDir => {}
            other => p.push(other.as_os_str()),
        }
    }
    p
}

/// A runtime parser's error (a `UserError` inside) as the checker's.
fn anyhow_to_value(e: anyhow::Error) -> ValueError {
    match crate::error::find_user_error(&e) {
        Some(u) => user_to_value(u.clone()),
        None => ValueError {
            message: format!("{e:#}"),
            hint: None,
        },
    }
}

fn user_to_value(e: crate::error::UserError) -> ValueError {
    ValueError {
        message: e.message,
        hint: e.hint,
    }
}

/// The closest candidate within a small edit distance, if any.
pub fn did_you_mean<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let max = (input.chars().count() / 3).clamp(1, 3);
    candidates
        .into_iter()
        .map(|c| (levenshtein(input, c), c))
        .filter(|(d, _)| *d <= max)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Optimal string alignment distance: edits, with a swap of neighbours counting as one.
fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_you_mean_finds_close_keys() {
        let keys = ["image", "command", "env", "env_file", "limits"];
        assert_eq!(did_you_mean("imgae", keys), Some("image"));
        assert_eq!(did_you_mean("comand", keys), Some("command"));
        assert_eq!(did_you_mean("limit", keys), Some("limits"));
        assert_eq!(did_you_mean("zzzzzz", keys), None);
    }
}
