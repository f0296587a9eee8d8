//! Checks the shape of a parsed file (known keys, value types, required
//! keys, enum values, number ranges) against the JSON Schema generated from
//! [`super::file::MeshFile`], and records where every key sits in the file.
//!
//! serde stops at the first unknown key or wrong type; walking the schema
//! instead reports every such problem at once, with spans, and with a "did you
//! mean" drawn from the keys the schema allows. The schema is the one source of
//! truth, so the published `schemas/mesh.schema.json` and this check cannot
//! disagree.

use std::collections::HashMap;
use std::ops::Range;

use serde_json::Value as Schema;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::diagnostic::{self, Code, Problem, elided};

/// Where each key of the file sits: TOML path (`cluster[1].name`) to the span
/// of the key and of its value.
#[derive(Debug, Default, Clone)]
pub struct Spans {
    entries: HashMap<String, (Range<usize>, Range<usize>)>,
}

impl Spans {
    /// The span of the value at `path`, if the file has that key.
    pub fn value(&self, path: &str) -> Option<Range<usize>> {
        self.entries.get(path).map(|(_, v)| v.clone())
    }

    /// The span of the key at `path`, if the file has that key.
    pub fn key(&self, path: &str) -> Option<Range<usize>> {
        self.entries.get(path).map(|(k, _)| k.clone())
    }

    /// The span of the value at `path`, or else of the nearest enclosing key
    /// that is in the file (defaults are reported where they would be written).
    pub fn nearest(&self, path: &str) -> Range<usize> {
        let mut path = path;
        loop {
            if let Some(span) = self.key(path) {
                return if path.contains('.') || path.ends_with(']') {
                    self.value(path).unwrap_or(span)
                } else {
                    span
                };
            }
            match path.rfind(['.', '[']) {
                Some(cut) => path = &path[..cut],
                None => return 0..0,
            }
        }
    }
}

/// Walks `root` against `schema`, returning every shape problem found and
/// the spans of every key.
pub fn check(schema: &Schema, root: &Spanned<DeTable<'_>>) -> (Vec<Problem>, Spans) {
    let mut walk = Walk {
        defs: schema.get("$defs"),
        problems: Vec::new(),
        spans: Spans::default(),
    };
    walk.table(schema, root.get_ref(), root.span(), "");
    (walk.problems, walk.spans)
}

/// Removes the entries at `bad` paths from `table`, so that the rest of a
/// file with shape problems can still be deserialised and checked. Array
/// elements are never removed: that would shift the indices spans refer to.
pub fn prune(table: &mut DeTable<'_>, path: &str, bad: &std::collections::HashSet<String>) {
    let doomed: Vec<_> = table
        .iter()
        .filter(|(key, _)| bad.contains(&join(path, key.get_ref())))
        .map(|(key, _)| key.clone())
        .collect();
    for key in doomed {
        table.remove(&key);
    }
    for (key, value) in table.iter_mut() {
        let key_path = join(path, key.get_ref());
        match value.get_mut() {
            DeValue::Table(inner) => prune(inner, &key_path, bad),
            DeValue::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    if let DeValue::Table(inner) = item.get_mut() {
                        prune(inner, &format!("{key_path}[{i}]"), bad);
                    }
                }
            }
            _ => {}
        }
    }
}

struct Walk<'s> {
    defs: Option<&'s Schema>,
    problems: Vec<Problem>,
    spans: Spans,
}

fn join(parent: &str, key: &str) -> String {
    // Keys that are not bare TOML keys are quoted, as TOML would need them.
    let bare = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let key = if bare { key.to_string() } else { format!("{key:?}") };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

fn toml_type(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

fn matches_type(json_type: &str, value: &DeValue<'_>) -> bool {
    matches!(
        (json_type, value),
        ("string", DeValue::String(_))
            | ("integer", DeValue::Integer(_))
            | ("number", DeValue::Integer(_) | DeValue::Float(_))
            | ("boolean", DeValue::Boolean(_))
            | ("array", DeValue::Array(_))
            | ("object", DeValue::Table(_))
    )
}

fn type_name(json_type: &str) -> &str {
    match json_type {
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        "boolean" => "a boolean",
        "array" => "an array",
        "object" => "a table",
        other => other,
    }
}

/// The closest of `candidates` to `key`, if it is close enough to be a typo.
pub fn did_you_mean<'a>(key: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let key = key.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(&key, &c.to_ascii_lowercase()), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

impl<'s> Walk<'s> {
    fn resolve(&self, mut schema: &'s Schema) -> &'s Schema {
        // Bounded: a cyclic $ref would otherwise loop forever.
        for _ in 0..16 {
            match schema.get("$ref").and_then(Schema::as_str) {
                Some(r) => match (r.strip_prefix("#/$defs/"), self.defs) {
                    (Some(name), Some(defs)) => match defs.get(name) {
                        Some(next) => schema = next,
                        None => break,
                    },
                    _ => break,
                },
                None => break,
            }
        }
        schema
    }

    fn value(&mut self, schema: &'s Schema, value: &Spanned<DeValue<'_>>, path: &str) {
        let schema = self.resolve(schema);
        let span = value.span();
        let inner = value.get_ref();

        if let Some(alternatives) = schema
            .get("oneOf")
            .or_else(|| schema.get("anyOf"))
            .and_then(Schema::as_array)
        {
            return self.alternatives(alternatives, value, path);
        }

        let types: Vec<&str> = match schema.get("type") {
            Some(Schema::String(t)) => vec![t.as_str()],
            Some(Schema::Array(ts)) => ts.iter().filter_map(Schema::as_str).filter(|t| *t != "null").collect(),
            _ => Vec::new(),
        };
        if !types.is_empty() && !types.iter().any(|t| matches_type(t, inner)) {
            let expected: Vec<&str> = types.iter().map(|t| type_name(t)).collect();
            let mut problem = Problem::error(
                Code::WrongType,
                format!("`{path}` must be {}, found {}", expected.join(" or "), toml_type(inner)),
            )
            .at(path)
            .label(span, format!("expected {}", expected.join(" or ")));
            if types.contains(&"array") {
                problem = problem.help(format!("write `[[{path}]]`, with double brackets, once for each entry"));
            } else if types.contains(&"string") && !matches!(inner, DeValue::Table(_) | DeValue::Array(_)) {
                problem = problem.help("put the value in double quotes");
            } else if types.contains(&"string") {
                problem = problem.help("write one value in double quotes");
            } else if types.contains(&"integer") {
                problem = problem.help("write a whole number, without quotes or a decimal point");
            } else if types.contains(&"object") {
                problem = problem.help(format!("write it as a `[{path}]` table of keys"));
            }
            self.problems.push(problem);
            return;
        }

        match inner {
            DeValue::Table(table) => self.table(schema, table, span, path),
            DeValue::Array(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        let item_path = format!("{path}[{i}]");
                        self.spans.entries.insert(item_path.clone(), (item.span(), item.span()));
                        self.value(item_schema, item, &item_path);
                    }
                }
            }
            DeValue::Integer(int) => {
                let parsed = i128::from_str_radix(&int.as_str().replace('_', ""), int.radix()).ok();
                let min = schema.get("minimum").and_then(Schema::as_i64);
                let max = schema.get("maximum").and_then(Schema::as_i64);
                let in_range = parsed
                    .is_some_and(|n| min.is_none_or(|m| n >= i128::from(m)) && max.is_none_or(|m| n <= i128::from(m)));
                if !in_range {
                    let range = match (min, max) {
                        (Some(a), Some(b)) => format!("from {a} to {b}"),
                        (Some(a), None) => format!("at least {a}"),
                        (None, Some(b)) => format!("at most {b}"),
                        (None, None) => "a 64-bit integer".to_string(),
                    };
                    self.problems.push(
                        Problem::error(Code::InvalidValue, format!("`{path}` is out of range"))
                            .at(path)
                            .label(span, format!("must be {range}"))
                            .help(format!("use a number {range}")),
                    );
                }
            }
            _ => {}
        }
    }

    fn alternatives(&mut self, alternatives: &'s [Schema], value: &Spanned<DeValue<'_>>, path: &str) {
        // Try each alternative on a scratch walk; the first that fits wins.
        for alt in alternatives {
            let before = self.problems.len();
            if let Some(c) = self.resolve(alt).get("const") {
                if value.get_ref().as_str() == c.as_str() {
                    return;
                }
                continue;
            }
            self.value(alt, value, path);
            if self.problems.len() == before {
                return;
            }
            self.problems.truncate(before);
        }
        let consts: Vec<&str> = alternatives
            .iter()
            .filter_map(|a| self.resolve(a).get("const").and_then(Schema::as_str))
            .collect();
        let span = value.span();
        let problem = match value.get_ref().as_str() {
            Some(found) if !consts.is_empty() => {
                let quoted: Vec<String> = consts.iter().map(|c| format!("{c:?}")).collect();
                let mut p = Problem::error(
                    Code::InvalidValue,
                    format!("`{path}` cannot be {}", diagnostic::quoted(found)),
                )
                .at(path)
                .label(span, format!("expected one of {}", quoted.join(", ")));
                if let Some(close) = did_you_mean(found, consts.iter().copied()) {
                    p = p.help(format!("did you mean {close:?}?"));
                }
                p
            }
            _ => Problem::error(
                Code::WrongType,
                format!("`{path}` must be a string, found {}", toml_type(value.get_ref())),
            )
            .at(path)
            .label(span, "expected a string")
            .help(if consts.is_empty() {
                "write the value in double quotes".to_string()
            } else {
                let quoted: Vec<String> = consts.iter().map(|c| format!("{c:?}")).collect();
                format!("write one of {}", quoted.join(", "))
            }),
        };
        self.problems.push(problem);
    }

    fn table(&mut self, schema: &'s Schema, table: &DeTable<'_>, span: Range<usize>, path: &str) {
        let schema = self.resolve(schema);
        let properties = schema.get("properties").and_then(Schema::as_object);
        let additional = schema.get("additionalProperties");

        for (key, value) in table.iter() {
            let key_path = join(path, key.get_ref());
            self.spans.entries.insert(key_path.clone(), (key.span(), value.span()));
            if let Some(prop) = properties.and_then(|p| p.get(key.get_ref().as_ref())) {
                self.value(prop, value, &key_path);
                continue;
            }
            match additional {
                Some(Schema::Bool(false)) | None if properties.is_some() => {
                    let known: Vec<&str> = properties
                        .into_iter()
                        .flat_map(|p| p.keys().map(String::as_str))
                        .collect();
                    let where_ = match path {
                        "" => "at the top level".to_string(),
                        p if p.ends_with(']') => format!("in `{p}`"),
                        p => format!("in `[{p}]`"),
                    };
                    let mut problem = Problem::error(
                        Code::UnknownKey,
                        format!("unknown key `{}` {where_}", elided(key.get_ref())),
                    )
                    .at(&key_path)
                    .label(key.span(), "not a meshform key");
                    problem = match did_you_mean(key.get_ref(), known.iter().copied()) {
                        Some(close) => problem.help(format!("did you mean `{close}`?")),
                        None => problem.help(format!("known keys here: {}", known.join(", "))),
                    };
                    self.problems.push(problem);
                }
                Some(extra) if extra.is_object() => self.value(extra, value, &key_path),
                _ => {}
            }
        }

        for required in schema.get("required").and_then(Schema::as_array).into_iter().flatten() {
            let Some(required) = required.as_str() else {
                continue;
            };
            if table.get(required).is_none() {
                let where_ = if path.is_empty() {
                    "the file".to_string()
                } else {
                    format!("`[{path}]`")
                };
                let what = if properties
                    .and_then(|p| p.get(required))
                    .is_some_and(|p| self.resolve(p).get("type").and_then(Schema::as_str) == Some("object"))
                {
                    format!("`[{}]` table", join(path, required))
                } else {
                    format!("`{required}`")
                };
                let label_span = if path.is_empty() { 0..0 } else { span.clone() };
                self.problems.push(
                    Problem::error(Code::MissingKey, format!("{where_} has no {what}"))
                        .at(join(path, required))
                        .label(label_span, format!("{what} is required here")),
                );
            }
        }
    }
}
