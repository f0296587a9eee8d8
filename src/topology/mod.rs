//! The topology file: its model, defaults and validation.
//!
//! This module owns everything about `mesh.toml` up to a resolved,
//! validated [`Topology`]. It takes text and returns data: no filesystem, no
//! kube client, no async. Problems come back as [`Problem`]s, all of them at
//! once, for the caller to render.

pub mod diagnostic;
pub mod file;
pub mod names;
mod resolve;
pub mod shape;
pub mod trust;

use std::collections::BTreeMap;

use miette::NamedSource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use diagnostic::{Code, Problem, Problems, Severity};

pub use file::{DataPlane, MeshFile, Role, TokenMode, TrustMode};
pub use resolve::REMOTE_SECRET_PREFIX;
pub use trust::{ManagedTrust, RootKeySource, Trust};

/// Namespace Istio runs in unless `[mesh] namespace` says otherwise.
pub const DEFAULT_NAMESPACE: &str = "istio-system";
/// The east-west gateway Service name Istio's samples install.
pub const DEFAULT_GATEWAY_SERVICE: &str = "istio-eastwestgateway";
/// Istio's mTLS passthrough port for cross-network traffic.
pub const DEFAULT_GATEWAY_PORT: u16 = 15443;
/// A week: long enough for weekly runs to rotate at half-life with margin.
pub const DEFAULT_TOKEN_LIFETIME: u64 = 7 * 24 * 3600;
/// TokenRequest refuses lifetimes under ten minutes.
pub const MIN_TOKEN_LIFETIME: u64 = 600;
/// A year; longer-lived credentials should be a deliberate `mode = "secret"`.
pub const MAX_TOKEN_LIFETIME: u64 = 366 * 24 * 3600;
/// meshform reads topology files up to this size; a real mesh of a thousand
/// clusters is well under 200 KiB.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;

/// A validated topology with every default filled in: what the planner takes
/// as the desired state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Topology {
    pub mesh: Mesh,
    /// In file order.
    pub clusters: Vec<Cluster>,
    /// Every network some cluster is on, by name.
    pub networks: BTreeMap<String, Network>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Mesh {
    pub name: String,
    pub namespace: String,
    pub tokens: Tokens,
    /// `[mesh] lock_cluster` as written (a cluster of the topology); see
    /// [`Topology::lock_cluster`] for the place it names by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_cluster: Option<String>,
    /// `[mesh.trust]` (skipped when check-only, so that the topology hash
    /// of a file without it does not change).
    #[serde(default, skip_serializing_if = "Trust::is_check")]
    pub trust: Trust,
}

/// Reader-token settings, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Tokens {
    pub mode: TokenMode,
    /// Lifetime asked of TokenRequest, in seconds.
    pub lifetime_seconds: u64,
    /// Rotate once this share of a token's life (in percent) has passed.
    pub rotate_at_percent: u8,
}

impl Default for Tokens {
    fn default() -> Self {
        Tokens {
            mode: TokenMode::Request,
            lifetime_seconds: DEFAULT_TOKEN_LIFETIME,
            rotate_at_percent: 50,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Cluster {
    /// Mesh name: Istio cluster id, used in object names.
    pub name: String,
    /// Kubeconfig context.
    pub context: String,
    /// Kubeconfig file, as written in mesh.toml (relative to it).
    pub kubeconfig: Option<String>,
    pub network: String,
    pub role: Role,
    /// Address peers use for this cluster's API server, when set.
    pub api_server: Option<String>,
    /// A remote's control plane: the primary whose istiod serves it. Never
    /// set for a primary; unset for a remote only when no default is unambiguous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<String>,
    /// `allow_insecure_transport`: the kubeconfig may turn TLS verification
    /// off or use `http://` (skipped when false, so that the topology hash
    /// of a file without it does not change).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_insecure_transport: bool,
    /// The data plane its install runs (skipped when `sidecar`, so that the
    /// topology hash of a file without it does not change).
    #[serde(default, skip_serializing_if = "DataPlane::is_sidecar")]
    pub data_plane: DataPlane,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Network {
    pub gateway_service: String,
    pub gateway_port: u16,
}

impl Topology {
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }

    pub fn primaries(&self) -> impl Iterator<Item = &Cluster> {
        self.clusters.iter().filter(|c| c.role == Role::Primary)
    }

    /// The cluster that holds the mesh's apply lock: `[mesh] lock_cluster`,
    /// else the first primary by name (where an earlier meshform took it
    /// whenever that primary answered, so its locks are found in the same
    /// place). A function of the file alone: two applies of one mesh.toml
    /// lock the same cluster, whatever each can reach.
    pub fn lock_cluster(&self) -> Option<&str> {
        self.mesh
            .lock_cluster
            .as_deref()
            .or_else(|| self.primaries().map(|c| c.name.as_str()).min())
    }
}

/// The outcome of checking a topology file: the topology when it is valid,
/// and every problem found (warnings included) either way.
#[derive(Debug)]
pub struct Checked {
    pub file: Option<MeshFile>,
    pub topology: Option<Topology>,
    pub problems: Problems,
}

impl Checked {
    /// The topology and its warnings, or every problem when there is an error.
    pub fn into_result(self) -> Result<(Topology, Problems), Problems> {
        match self.topology {
            Some(topology) => Ok((topology, self.problems)),
            None => Err(self.problems),
        }
    }
}

/// The JSON Schema of mesh.toml, as published in `schemas/mesh.schema.json`.
pub fn schema() -> serde_json::Value {
    // TOML has no null: optional keys are simply absent, so the schema should
    // not offer `null` to editors.
    let generator = schemars::generate::SchemaSettings::draft2020_12()
        .with_transform(schemars::transform::RecursiveTransform(drop_null))
        .into_generator();
    generator.into_root_schema_for::<MeshFile>().to_value()
}

/// Seconds in a duration written as "90m", "168h", "7d" or "1h30m" (a day
/// is 24 hours here); `None` when it is not one.
pub fn duration_seconds(text: &str) -> Option<i64> {
    let span: jiff::Span = text.trim().parse().ok()?;
    let total = span
        .total((jiff::Unit::Second, jiff::SpanRelativeTo::days_are_24_hours()))
        .ok()?;
    (total.is_finite() && total.fract() == 0.0 && total.abs() < 1e15).then_some(total as i64)
}

fn drop_null(schema: &mut schemars::Schema) {
    use serde_json::Value;
    let is_null = |v: &Value| v.get("type").and_then(Value::as_str) == Some("null");
    if let Some(Value::Array(types)) = schema.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types.remove(0);
            schema.insert("type".into(), only);
        }
    }
    // `Option<Enum>` comes out as `anyOf: [{$ref}, {type: null}]`.
    if let Some(Value::Array(any)) = schema.get("anyOf")
        && any.len() == 2
        && any.iter().any(is_null)
        && let Some(other) = any.iter().find(|v| !is_null(v)).cloned()
    {
        schema.remove("anyOf");
        if let Value::Object(fields) = other {
            for (k, v) in fields {
                schema.insert(k, v);
            }
        }
    }
}

/// Parses and validates a topology file. `name` is how the file is shown in
/// diagnostics; `bytes` is its content.
pub fn check(name: &str, bytes: &[u8]) -> Checked {
    let failed = |text: String, mut problem: Problem| {
        // JSON readers get line and column for these labels too.
        problem.locate(&text);
        Checked {
            file: None,
            topology: None,
            problems: Problems {
                source: NamedSource::new(name, text),
                problems: vec![problem],
            },
        }
    };

    if bytes.len() > MAX_FILE_BYTES {
        return failed(
            String::new(),
            Problem::error(
                Code::TooLarge,
                // Callers may stop reading at the limit (the CLI reads one
                // byte more), so the length seen here is not the file's size.
                format!("{name} is larger than the {MAX_FILE_BYTES} bytes meshform reads from a topology file"),
            )
            .help("a topology file declares clusters and networks only; check that this is the right file"),
        );
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(err) => {
            let at = err.valid_up_to();
            let lossy = String::from_utf8_lossy(bytes).into_owned();
            // Point at the character U+FFFD replaced, which sits at the same offset.
            return failed(
                lossy,
                Problem::error(Code::NotUtf8, format!("{name} is not UTF-8 text"))
                    .label(at..at + 1, format!("invalid UTF-8 at byte {at}"))
                    .help("TOML files must be UTF-8; re-save the file as UTF-8"),
            );
        }
    };
    if text.trim().is_empty() {
        return failed(
            text.to_string(),
            Problem::error(Code::Empty, format!("{name} is empty"))
                .help("a topology needs at least:\n[mesh]\nname = \"mesh1\"\n\n[[cluster]]\nname = \"east\""),
        );
    }

    let (root, errors) = toml::de::DeTable::parse_recoverable(text);
    let mut problems: Vec<Problem> = errors
        .iter()
        .map(|err| {
            let problem = Problem::error(
                Code::Syntax,
                format!("{name} is not valid TOML: {}", err.message().trim()),
            );
            let message = err.message();
            let problem = problem.help(if message.contains("duplicate key") {
                "TOML allows each key, and each [table] header, once: keep one of the two"
            } else if message.contains("recurs") {
                "a topology nests tables two levels deep at most: remove the nesting"
            } else {
                "fix the TOML syntax at the marked place; strings need double quotes, tables [brackets]"
            });
            // Some errors (the parser's recursion limit) have no position;
            // a label at 0..0 would blame the first line of the file.
            match err.span() {
                Some(span) => problem.label(span, err.message().trim().to_string()),
                None => problem,
            }
        })
        .collect();
    let mut file = None;
    let mut topology = None;
    // Spans are taken even from a file with syntax errors: the partial table
    // still says where each `api_server` is, for redaction below.
    let (shape_problems, spans) = shape::check(&schema(), &root);
    let shown = redact_credentials(text, &spans);
    if problems.is_empty() {
        let mut root = root;
        if !shape_problems.is_empty() {
            // Drop what is malformed and check the rest too, so one run
            // reports every problem in the file.
            let bad = shape_problems
                .iter()
                .filter(|p| p.code != Code::MissingKey)
                .filter_map(|p| p.path.clone())
                .collect();
            shape::prune(root.get_mut(), "", &bad);
        }
        problems = shape_problems;
        match <MeshFile as Deserialize>::deserialize(toml::de::Deserializer::from(root)) {
            Ok(parsed) => {
                let (resolved, mut semantic) = resolve::resolve(&parsed, &spans);
                if problems.is_empty() {
                    topology = resolved;
                    file = Some(parsed);
                }
                // A malformed `cluster` (`[cluster]` for `[[cluster]]`) was
                // pruned above; "no clusters" would then contradict the file.
                if problems.iter().any(|p| p.path.as_deref() == Some("cluster")) {
                    semantic.retain(|p| p.code != Code::EmptyMesh);
                }
                // Likewise a malformed `name` or `context` was pruned: "has
                // neither `name` nor `context`" would contradict the file.
                semantic.retain(|p| {
                    p.code != Code::MissingKey || !problems.iter().any(|q| q.path.is_some() && q.path == p.path)
                });
                problems.extend(semantic);
            }
            Err(_) if !problems.is_empty() => {}
            // The shape check should have caught anything serde refuses;
            // keep its message rather than lose the problem.
            Err(err) => problems.push(
                Problem::error(Code::WrongType, err.message().trim().to_string())
                    .label(err.span().unwrap_or(0..0), "here"),
            ),
        }
    }
    let lines = diagnostic::LineStarts::of(text);
    for problem in &mut problems {
        problem.locate_in(text, &lines);
    }
    // Errors first, then in file order, so the output reads top to bottom.
    problems.sort_by_key(|p| (p.severity, p.labels.first().map_or(0, |l| l.offset)));
    Checked {
        file,
        topology,
        problems: Problems {
            source: NamedSource::new(name, shown),
            problems,
        },
    }
}

/// The file's text with the user and password of every `api_server` URL
/// masked, byte for byte so that spans still line up. Rendered diagnostics
/// quote the lines around each problem, and they end up in CI logs and
/// tickets; a credential in the file must not travel with them.
fn redact_credentials(text: &str, spans: &shape::Spans) -> String {
    let mut shown = text.as_bytes().to_vec();
    let values = (0..)
        .map_while(|i| spans.key(&format!("cluster[{i}]")).map(|_| i))
        .filter_map(|i| spans.value(&format!("cluster[{i}].api_server")));
    for span in values {
        let Some(raw) = text.get(span.clone()) else {
            continue;
        };
        let opening = raw.find(['"', '\'']).map_or(0, |q| q + 1);
        let masked = if raw.contains('\\') {
            // Escapes could spell `@` or the password any way: mask the
            // whole string.
            let closing = raw.rfind(['"', '\'']).filter(|&e| e > opening);
            opening..closing.unwrap_or(raw.len())
        } else {
            let start = raw.find("://").map_or(opening, |s| s + 3);
            let authority_end = raw[start..]
                .find(['/', '?', '#', '"', '\''])
                .map_or(raw.len(), |e| start + e);
            match raw[start..authority_end].rfind('@') {
                Some(at) => start..start + at,
                None => continue,
            }
        };
        shown[span.start + masked.start..span.start + masked.end].fill(b'*');
    }
    // The key command's arguments may carry a credential (a token, a role
    // id): everything after its program is masked, newlines kept.
    if let Some(span) = spans.value("mesh.trust.root_key_command")
        && let Some(raw) = text.get(span.clone())
        && let Some(comma) = raw.find(',')
    {
        let end = raw.rfind(']').filter(|&e| e > comma).unwrap_or(raw.len());
        for byte in &mut shown[span.start + comma + 1..span.start + end] {
            if !matches!(*byte, b'\n' | b'\r' | b' ' | b'\t' | b',') {
                *byte = b'*';
            }
        }
    }
    // Only whole characters were replaced by ASCII, so this cannot fail.
    String::from_utf8(shown).unwrap_or_else(|_| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl_flags() {
        assert_eq!(duration_seconds("168h"), Some(604_800));
        assert_eq!(duration_seconds("7d"), Some(604_800));
        assert_eq!(duration_seconds("1h30m"), Some(5_400));
        assert_eq!(duration_seconds("90s"), Some(90));
        assert_eq!(duration_seconds("soon"), None);
        assert_eq!(duration_seconds(""), None);
    }

    #[test]
    fn diagnostics_never_quote_the_key_commands_arguments() {
        let text = "[mesh]\nname = \"m\"\n[mesh.trust]\nmode = \"managed\"\nroot_cert = \"r.pem\"\nroot_key_command = [\"vault\", \"--token=s3cr3t-t0ken\"]\nrenew_before = \"soon\"\n[[cluster]]\nname = \"a\"\n";
        let problems = check("t", text.as_bytes()).into_result().unwrap_err();
        let shown = problems.source.inner();
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("[\"vault\","), "{shown}");
        assert_eq!(shown.len(), text.len());
    }

    #[test]
    fn token_settings_default_and_validate() {
        let base = "[mesh]\nname = \"m\"\n[[cluster]]\nname = \"a\"\n";
        let (t, _) = check("t", base.as_bytes()).into_result().unwrap();
        assert_eq!(t.mesh.tokens, Tokens::default());
        let custom = format!("{base}[mesh.tokens]\nmode = \"secret\"\nlifetime = \"24h\"\nrotate_at_percent = 80\n");
        let (t, _) = check("t", custom.as_bytes()).into_result().unwrap();
        assert_eq!(t.mesh.tokens.mode, TokenMode::Secret);
        assert_eq!(t.mesh.tokens.lifetime_seconds, 86_400);
        assert_eq!(t.mesh.tokens.rotate_at_percent, 80);
        for bad in ["5m", "forever", "10000d"] {
            let text = format!("{base}[mesh.tokens]\nlifetime = \"{bad}\"\n");
            let problems = check("t", text.as_bytes()).into_result().unwrap_err();
            assert_eq!(problems.problems[0].code, Code::InvalidValue, "{bad}");
            assert_eq!(
                problems.problems[0].path.as_deref(),
                Some("mesh.tokens.lifetime"),
                "{bad}"
            );
        }
    }
}
