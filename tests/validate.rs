//! `topology::check` on bad files: every fixture under `tests/fixtures/invalid/`
//! against a table of the problems it must produce (code, severity, TOML
//! path, the exact source text under the first label, key help texts), bad
//! inputs that are generated rather than committed (not UTF-8, too large,
//! deeply nested), snapshots of the rendered diagnostics, round trips,
//! default resolution and property tests.
//!
//! The expectations are written by hand, here: adding a fixture without a row
//! in [`cases`] fails [`every_fixture_has_expectations`].

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use meshform::render::{self, Style};
use meshform::topology::file::{ClusterEntry, MeshSection, NetworkEntry};
use meshform::topology::names::Rule;
use meshform::topology::{self, Checked, Cluster, Code, Mesh, MeshFile, Network, Role, Severity, Tokens, Topology};
use proptest::prelude::*;

const FIXTURES: &str = "tests/fixtures/invalid";

/// What one problem must look like.
#[derive(Debug, Clone)]
struct Expect {
    code: Code,
    severity: Severity,
    path: Option<&'static str>,
    /// The exact source text under the first label; `None`: no label at all.
    span: Option<&'static str>,
    /// Substrings of the first label's message.
    label: Vec<&'static str>,
    /// Substrings of the help; `Some(vec![])` with [`Expect::no_help`]: no help.
    help: Option<Vec<&'static str>>,
    labels: Option<usize>,
}

fn error(code: Code, path: &'static str, span: &'static str) -> Expect {
    Expect {
        code,
        severity: Severity::Error,
        path: Some(path),
        span: Some(span),
        label: Vec::new(),
        help: None,
        labels: None,
    }
}

fn warning(code: Code, path: &'static str, span: &'static str) -> Expect {
    Expect {
        severity: Severity::Warning,
        ..error(code, path, span)
    }
}

/// A TOML syntax error: no TOML path.
fn syntax(span: &'static str) -> Expect {
    Expect {
        path: None,
        ..error(Code::Syntax, "", span)
    }
}

/// A problem about the whole file: no path, no label.
fn whole_file(code: Code) -> Expect {
    Expect {
        path: None,
        span: None,
        ..error(code, "", "")
    }
}

impl Expect {
    fn help(mut self, text: &'static str) -> Self {
        self.help.get_or_insert_with(Vec::new).push(text);
        self
    }

    fn no_help(mut self) -> Self {
        self.help = Some(Vec::new());
        self
    }

    fn label(mut self, text: &'static str) -> Self {
        self.label.push(text);
        self
    }

    fn labels(mut self, n: usize) -> Self {
        self.labels = Some(n);
        self
    }
}

/// Every fixture and the problems it must produce, in the order `check`
/// reports them (errors first, then by position in the file).
fn cases() -> BTreeMap<&'static str, Vec<Expect>> {
    use Code::*;
    let secret_help = "reader token meshform writes into the remote secret";
    BTreeMap::from([
        // --- api_server
        (
            "api_server_credentials",
            vec![
                error(
                    InvalidApiServer,
                    "cluster[0].api_server",
                    r#""https://admin:hunter2@203.0.113.10:6443""#,
                )
                .label("remove the user and password")
                .help(secret_help),
            ],
        ),
        (
            "api_server_credentials_escaped",
            vec![
                error(
                    InvalidApiServer,
                    "cluster[0].api_server",
                    r#""https://admin:hunter2\u0040203.0.113.10:6443""#,
                )
                .help(secret_help),
            ],
        ),
        (
            "api_server_credentials_next_to_bad_name",
            vec![
                error(InvalidName, "cluster[0].name", r#""gke_acme_eu_east""#)
                    .help(r#"set name = "gke-acme-eu-east"; the kubeconfig context can stay as it is"#),
                error(
                    InvalidApiServer,
                    "cluster[0].api_server",
                    r#""https://admin:hunter2@203.0.113.10:6443""#,
                ),
            ],
        ),
        (
            "api_server_http",
            vec![
                error(
                    InvalidApiServer,
                    "cluster[0].api_server",
                    r#""http://203.0.113.10:6443""#,
                )
                .label("must use TLS")
                .help("use https://203.0.113.10"),
            ],
        ),
        (
            "api_server_http_credentials",
            vec![
                error(
                    InvalidApiServer,
                    "cluster[0].api_server",
                    r#""http://admin:hunter2@203.0.113.10:6443""#,
                )
                .help("use https://203.0.113.10"),
            ],
        ),
        (
            "api_server_not_url",
            vec![
                error(InvalidApiServer, "cluster[0].api_server", r#""203.0.113.10:6443""#)
                    .label("https://203.0.113.10:6443")
                    .help("https://"),
            ],
        ),
        // --- gateway
        (
            "bad_gateway_service",
            vec![
                error(InvalidName, "network.east.gateway_service", r#""1st_Gateway""#)
                    .label(r#"the API server would reject Service "1st_Gateway""#)
                    .help(r#"use "st-gateway""#)
                    .help("DNS-1035"),
            ],
        ),
        // --- role
        (
            "bad_role",
            vec![
                error(InvalidValue, "cluster[0].role", r#""primay""#)
                    .label(r#"expected one of "primary", "remote""#)
                    .help(r#"did you mean "primary"?"#),
            ],
        ),
        // --- data_plane (issue 31)
        (
            "ambient_remote",
            vec![
                error(AmbientRemote, "cluster[1].role", r#""remote""#)
                    .label("a remote")
                    .labels(2)
                    .help(r#"Istio's ambient multicluster is multi-primary only: install istiod on "west" and remove `role = "remote"`, or set `data_plane = "sidecar"` on it"#),
            ],
        ),
        (
            "bad_data_plane",
            vec![
                error(InvalidValue, "cluster[0].data_plane", r#""ambiant""#)
                    .label(r#"expected one of "sidecar", "ambient""#)
                    .help(r#"did you mean "ambient"?"#),
            ],
        ),
        (
            "bad_role_no_suggestion",
            vec![
                error(InvalidValue, "cluster[0].role", r#""leader""#)
                    .label(r#"expected one of "primary", "remote""#)
                    .no_help(),
            ],
        ),
        // --- cluster names
        (
            "cluster_name_empty",
            vec![error(InvalidName, "cluster[0].name", r#""""#).label("it is empty")],
        ),
        (
            "cluster_name_from_context",
            vec![
                error(InvalidName, "cluster[0].name", r#""gke_acme-prod_asia-east1_apac""#)
                    .label("the mesh name defaults to the context")
                    .label(r#"Secret "istio-remote-secret-gke_acme-prod_asia-east1_apac""#)
                    .help(r#"add name = "gke-acme-prod-asia-east1-apac" to this `[[cluster]]`"#),
            ],
        ),
        (
            "cluster_name_too_long",
            vec![
                error(
                    InvalidName,
                    "cluster[0].name",
                    r#""aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa""#,
                )
                .label("it is 64 characters long, at most 63 are allowed")
                .help(r#"set name = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";"#),
            ],
        ),
        (
            "cluster_name_underscores",
            vec![
                error(InvalidName, "cluster[0].name", r#""gke_gcp-cluster_region""#)
                    .label("it contains '_' at position 4")
                    .label(r#"the API server would reject Secret "istio-remote-secret-gke_gcp-cluster_region""#)
                    // `context` defaulted to the bad name: keep it when renaming.
                    .help(r#"set name = "gke-gcp-cluster-region" and context = "gke_gcp-cluster_region""#),
            ],
        ),
        (
            "cluster_name_underscores_with_context",
            vec![
                error(InvalidName, "cluster[0].name", r#""gke_gcp-cluster_region""#)
                    .label(r#"Secret "istio-remote-secret-gke_gcp-cluster_region""#)
                    .help(r#"set name = "gke-gcp-cluster-region"; the kubeconfig context can stay as it is"#),
            ],
        ),
        (
            "cluster_name_unicode_lookalike",
            vec![
                // A Cyrillic 'е' (U+0435) that looks like the Latin 'e'.
                error(InvalidName, "cluster[0].name", "\"\u{435}ast\"")
                    .label("it contains '\u{435}' at position 1")
                    .help(r#"set name = "east""#),
            ],
        ),
        (
            "cluster_name_uppercase",
            vec![
                error(InvalidName, "cluster[0].name", r#""EuWest""#)
                    .label("it contains 'E' at position 1")
                    .help(r#"set name = "euwest""#),
            ],
        ),
        (
            "cluster_without_name_or_context",
            vec![
                error(MissingKey, "cluster[0].name", "[[cluster]]")
                    .label("this cluster needs a name")
                    .help("set `name`"),
            ],
        ),
        // --- duplicates
        (
            "duplicate_cluster_names",
            vec![
                error(DuplicateCluster, "cluster[1].name", r#""east""#)
                    .label("first used here")
                    .labels(2)
                    .help("own mesh name"),
            ],
        ),
        (
            "duplicate_context",
            vec![
                error(DuplicateContext, "cluster[1].context", r#""kind-east""#)
                    .label("first used here")
                    .labels(2),
            ],
        ),
        ("duplicate_keys", vec![syntax("name").label("duplicate key")]),
        // --- whole file
        ("empty", vec![whole_file(Empty).help("[mesh]\nname = \"mesh1\"")]),
        ("whitespace_only", vec![whole_file(Empty)]),
        (
            "not_toml",
            vec![
                syntax(":").label("invalid unquoted key"),
                syntax("").label("expected `=`"),
                syntax("").label("expected `=`"),
                syntax("").label("expected `=`"),
                syntax("").label("expected `=`"),
            ],
        ),
        // --- kubeconfig
        (
            "empty_kubeconfig",
            vec![
                error(InvalidKubeconfig, "cluster[0].kubeconfig", r#""""#)
                    .help("remove the key to use $KUBECONFIG or ~/.kube/config"),
            ],
        ),
        // --- mesh
        (
            "empty_mesh",
            vec![
                error(EmptyMesh, "cluster", "mesh")
                    .label("declares no `[[cluster]]`")
                    .help("[[cluster]]"),
            ],
        ),
        (
            "invalid_mesh_name",
            vec![
                error(InvalidName, "mesh.name", r#""Mesh_1""#)
                    .label(r#"Lease "meshform-Mesh_1""#)
                    .help(r#"use "mesh-1""#),
            ],
        ),
        (
            "invalid_namespace",
            vec![
                error(InvalidName, "mesh.namespace", r#""istio_system""#)
                    .label(r#"Namespace "istio_system""#)
                    .help(r#"use "istio-system""#),
            ],
        ),
        (
            "missing_mesh",
            vec![
                // The file as a whole lacks it: the label sits at the start.
                error(MissingKey, "mesh", "").label("`[mesh]` table is required here"),
            ],
        ),
        (
            "missing_mesh_name",
            vec![error(MissingKey, "mesh.name", "[mesh]").label("`name` is required here")],
        ),
        // --- networks
        (
            "network_not_label_value",
            vec![
                error(InvalidNetwork, "cluster[0].network", r#""eu/flat""#)
                    .label(r#"topology.istio.io/network="eu/flat""#)
                    .help(r#"use "eu-flat""#),
            ],
        ),
        (
            "network_too_long",
            vec![
                error(
                    InvalidNetwork,
                    "cluster[0].network",
                    r#""eu-flat-network-spanning-every-zone-of-every-region-in-europe-west""#,
                )
                .label("it is 66 characters long")
                .help(r#"use "eu-flat-network-spanning-every-zone-of-every-region-in-europe-w""#),
            ],
        ),
        (
            "network_table_invalid_key",
            vec![
                error(InvalidNetwork, r#"network."eu flat""#, r#""eu flat""#)
                    .label("it contains ' ' at position 3")
                    .help(r#"use "eu-flat""#),
            ],
        ),
        (
            "unused_network",
            vec![
                warning(UnusedNetwork, "network.us", "us")
                    .label("no cluster uses")
                    .help(r#"set `network = "us"` on the clusters it is for"#),
            ],
        ),
        (
            "unused_network_typo",
            vec![warning(UnusedNetwork, "network.eu-falt", "eu-falt").help(r#"did you mean network "eu-flat"?"#)],
        ),
        (
            "no_primary",
            vec![
                error(NoPrimary, "cluster", r#""remote""#)
                    .labels(2)
                    .help(r#"set `role = "primary"` on at least one cluster"#),
            ],
        ),
        // --- ports
        (
            "port_negative",
            vec![error(InvalidValue, "network.east.gateway_port", "-1").label("must be from 1 to 65535")],
        ),
        (
            "port_out_of_range",
            vec![error(InvalidValue, "network.east.gateway_port", "70000").label("must be from 1 to 65535")],
        ),
        (
            "port_zero",
            vec![error(InvalidValue, "network.east.gateway_port", "0").label("must be from 1 to 65535")],
        ),
        // --- several at once
        (
            "several_problems",
            vec![
                error(InvalidName, "mesh.name", r#""Mesh_1""#),
                error(UnknownKey, "mesh.namepsace", "namepsace").help("did you mean `namespace`?"),
                error(InvalidName, "cluster[0].name", r#""gke_gcp-cluster_region""#),
                error(InvalidValue, "cluster[0].role", r#""primay""#),
                error(InvalidName, "cluster[1].name", r#""gke_acme-prod_asia-east1_apac""#)
                    .label("the mesh name defaults to the context"),
                error(InvalidNetwork, "cluster[1].network", r#""asia/pacific""#),
                error(InvalidApiServer, "cluster[1].api_server", r#""http://203.0.113.40""#),
                error(InvalidValue, "network.unused.gateway_port", "0"),
                warning(UnusedNetwork, "network.unused", "unused"),
            ],
        ),
        (
            "several_problems_cluster_names",
            vec![
                error(DuplicateCluster, "cluster[1].name", r#""east""#),
                error(NoPrimary, "cluster", r#""remote""#).labels(2),
                error(InvalidKubeconfig, "cluster[1].kubeconfig", r#""  ""#),
            ],
        ),
        // --- unknown keys
        (
            "unknown_key_clusters_plural",
            vec![
                error(EmptyMesh, "cluster", "mesh"),
                error(UnknownKey, "clusters", "clusters")
                    .label("not a meshform key")
                    .help("did you mean `cluster`?"),
            ],
        ),
        (
            "unknown_key_in_cluster",
            vec![
                error(UnknownKey, "cluster[0].zone", "zone")
                    .help("known keys here: allow_insecure_transport, api_server, context, control_plane, data_plane, kubeconfig, name, network, role"),
            ],
        ),
        (
            "unknown_key_in_cluster_typo",
            vec![error(UnknownKey, "cluster[0].networkName", "networkName").help("did you mean `network`?")],
        ),
        (
            "unknown_key_in_mesh",
            vec![error(UnknownKey, "mesh.namepsace", "namepsace").help("did you mean `namespace`?")],
        ),
        (
            "unknown_key_in_network",
            vec![error(UnknownKey, "network.eu.gateway_prot", "gateway_prot").help("did you mean `gateway_port`?")],
        ),
        (
            "unknown_key_top_level",
            vec![error(UnknownKey, "version", "version").help("known keys here: cluster, mesh, network")],
        ),
        (
            "unknown_key_top_level_typo",
            vec![error(UnknownKey, "netwrok", "netwrok").help("did you mean `network`?")],
        ),
        // --- wrong types
        (
            "wrong_type_cluster_single_table",
            // Regression: a follow-on "the mesh has no clusters" used to
            // contradict the `[cluster]` table right there in the file.
            vec![
                error(WrongType, "cluster", "[cluster]")
                    .label("expected an array")
                    .help("write `[[cluster]]`, with double brackets, once for each entry"),
            ],
        ),
        (
            "wrong_type_cluster_strings",
            vec![
                error(WrongType, "cluster[0]", r#""east""#).label("expected a table"),
                error(WrongType, "cluster[1]", r#""west""#).label("expected a table"),
            ],
        ),
        (
            "wrong_type_gateway_port",
            vec![error(WrongType, "network.east.gateway_port", r#""15443""#).label("expected an integer")],
        ),
        (
            "wrong_type_mesh_array",
            vec![error(WrongType, "mesh", "[[mesh]]").label("expected a table")],
        ),
        (
            "wrong_type_mesh_name",
            vec![
                error(WrongType, "mesh.name", "1")
                    .label("expected a string")
                    .help("put the value in double quotes"),
            ],
        ),
        (
            "wrong_type_network_string",
            vec![error(WrongType, "network", r#""eu""#)],
        ),
        (
            "wrong_type_role",
            vec![error(WrongType, "cluster[0].role", "true").label("expected a string")],
        ),
    ])
}

/// Compares what `check` found in `bytes` with `expected`; returns every
/// mismatch, so one run shows all of them.
fn compare(name: &str, bytes: &[u8], checked: &Checked, expected: &[Expect]) -> Vec<String> {
    let mut failures = Vec::new();
    let mut fail = |what: String| failures.push(format!("{name}: {what}"));
    let found = &checked.problems.problems;
    if found.len() != expected.len() {
        fail(format!(
            "expected {} problems, found {}:\n{:#?}",
            expected.len(),
            found.len(),
            found.iter().map(|p| (p.code, &p.path, &p.message)).collect::<Vec<_>>()
        ));
    }
    for (i, (problem, want)) in found.iter().zip(expected).enumerate() {
        let mut fail = |what: String| fail(format!("problem {i} ({}): {what}", problem.message));
        if problem.code != want.code {
            fail(format!("code {:?}, expected {:?}", problem.code, want.code));
        }
        if problem.severity != want.severity {
            fail(format!("severity {:?}, expected {:?}", problem.severity, want.severity));
        }
        if problem.path.as_deref() != want.path {
            fail(format!("path {:?}, expected {:?}", problem.path, want.path));
        }
        match (problem.labels.first(), want.span) {
            (None, None) => {}
            (Some(label), Some(span)) => {
                // The original bytes, not the (redacted) text diagnostics show.
                let under = bytes
                    .get(label.offset..label.offset + label.length)
                    .map(String::from_utf8_lossy);
                if under.as_deref() != Some(span) {
                    fail(format!("first label covers {under:?}, expected {span:?}"));
                }
                for text in &want.label {
                    if !label.message.contains(text) {
                        fail(format!("label {:?} does not contain {text:?}", label.message));
                    }
                }
            }
            (got, want) => fail(format!("first label {got:?}, expected one over {want:?}")),
        }
        if let Some(n) = want.labels
            && problem.labels.len() != n
        {
            fail(format!("{} labels, expected {n}", problem.labels.len()));
        }
        match (&want.help, &problem.help) {
            (None, _) => {}
            (Some(w), None) if w.is_empty() => {}
            (Some(w), Some(help)) if w.is_empty() => fail(format!("unexpected help {help:?}")),
            (Some(_), None) => fail("no help".to_string()),
            (Some(w), Some(help)) => {
                for text in w {
                    if !help.contains(text) {
                        fail(format!("help {help:?} does not contain {text:?}"));
                    }
                }
            }
        }
    }
    // The topology comes out exactly when there is no error.
    let errors = expected.iter().any(|e| e.severity == Severity::Error);
    if checked.topology.is_some() == errors {
        fail(format!(
            "topology is {:?} with errors expected: {errors}",
            checked.topology.is_some()
        ));
    }
    failures
}

fn fixture(name: &str) -> Vec<u8> {
    fs::read(Path::new(FIXTURES).join(format!("{name}.toml"))).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn check_fixture(name: &str) -> (Vec<u8>, Checked) {
    let bytes = fixture(name);
    let checked = topology::check(&format!("{name}.toml"), &bytes);
    (bytes, checked)
}

#[test]
fn every_fixture_reports_its_problems() {
    let mut failures = Vec::new();
    for (name, expected) in cases() {
        let (bytes, checked) = check_fixture(name);
        failures.extend(compare(name, &bytes, &checked, &expected));
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_fixture_has_expectations() {
    let on_disk: BTreeSet<String> = fs::read_dir(FIXTURES)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    let in_table: BTreeSet<String> = cases().keys().map(|k| k.to_string()).collect();
    assert_eq!(on_disk, in_table, "fixtures and the expectation table disagree");
    assert!(
        on_disk.len() >= 35,
        "issue 2 asks for at least 30 bad files; keep at least 35"
    );
}

/// Every problem code, spelt out so that adding a `Code` breaks the build here
/// until a test covers it.
fn all_codes() -> Vec<Code> {
    use Code::*;
    let every = [
        TooLarge,
        NotUtf8,
        Empty,
        Syntax,
        UnknownKey,
        MissingKey,
        WrongType,
        InvalidValue,
        InvalidName,
        DuplicateCluster,
        DuplicateContext,
        InvalidNetwork,
        NoPrimary,
        EmptyMesh,
        UnusedNetwork,
        InvalidApiServer,
        InvalidKubeconfig,
        AmbientRemote,
    ];
    for code in every {
        match code {
            TooLarge | NotUtf8 | Empty | Syntax | UnknownKey | MissingKey | WrongType | InvalidValue | InvalidName
            | DuplicateCluster | DuplicateContext | InvalidNetwork | NoPrimary | EmptyMesh | UnusedNetwork
            | InvalidApiServer | InvalidKubeconfig | AmbientRemote => {}
        }
    }
    every.to_vec()
}

#[test]
fn every_code_is_covered() {
    let mut covered: BTreeSet<Code> = cases().values().flatten().map(|e| e.code).collect();
    // Covered by the generated inputs below.
    covered.extend([Code::TooLarge, Code::NotUtf8]);
    let missing: Vec<Code> = all_codes().into_iter().filter(|c| !covered.contains(c)).collect();
    assert!(missing.is_empty(), "no test for {missing:?}");
}

// --- inputs generated here rather than committed

const MINIMAL: &str = "[mesh]\nname = \"mesh1\"\n\n[[cluster]]\nname = \"east\"\n";

#[test]
fn not_utf8_points_at_the_first_bad_byte() {
    let mut bytes = b"[mesh]\nname = \"mesh".to_vec();
    let at = bytes.len();
    bytes.extend_from_slice(b"\xff\xfe1\"\n\n[[cluster]]\nname = \"east\"\n");
    let checked = topology::check("latin1.toml", &bytes);
    let expected = Expect {
        path: None,
        // What the lossy text shows for 0xff; the span is that one byte.
        ..error(Code::NotUtf8, "", "\u{fffd}")
    }
    .label("invalid UTF-8 at byte 19")
    .help("re-save the file as UTF-8");
    let failures = compare("not utf-8", &bytes, &checked, &[expected]);
    assert!(failures.is_empty(), "{failures:#?}");
    let label = &checked.problems.problems[0].labels[0];
    assert_eq!((label.offset, label.length), (at, 1));
    assert_eq!((label.line, label.column), (Some(2), Some(13)));
}

#[test]
fn a_file_over_one_mebibyte_is_refused_before_parsing() {
    // Valid TOML all the way: only the size is wrong.
    let mut text = MINIMAL.to_string();
    while text.len() <= topology::MAX_FILE_BYTES {
        text.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    let checked = topology::check("huge.toml", text.as_bytes());
    let failures = compare(
        "too large",
        text.as_bytes(),
        &checked,
        &[whole_file(Code::TooLarge).help("check that this is the right file")],
    );
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(
        checked.problems.problems[0].message,
        "huge.toml is larger than the 1048576 bytes meshform reads from a topology file"
    );

    // Exactly at the limit is fine.
    text.truncate(topology::MAX_FILE_BYTES);
    let cut = text.rfind('\n').unwrap() + 1;
    text.truncate(cut);
    while text.len() < topology::MAX_FILE_BYTES {
        text.push('#');
    }
    let checked = topology::check("limit.toml", text.as_bytes());
    assert!(checked.problems.problems.is_empty(), "{:?}", checked.problems.problems);
}

#[test]
fn deeply_nested_values_are_a_syntax_error_not_a_stack_overflow() {
    let depth = 100_000;
    for (what, text) in [
        ("arrays", format!("a = {}{}", "[".repeat(depth), "]".repeat(depth))),
        (
            "inline tables",
            format!("a = {}1{}", "{a = ".repeat(depth), "}".repeat(depth)),
        ),
        (
            "arrays under a network",
            format!(
                "{MINIMAL}[network.east]\nx = {}{}",
                "[".repeat(depth),
                "]".repeat(depth)
            ),
        ),
    ] {
        let checked = topology::check("deep.toml", text.as_bytes());
        let problems = &checked.problems.problems;
        assert_eq!(problems.len(), 1, "{what}: {problems:?}");
        assert_eq!(problems[0].code, Code::Syntax, "{what}");
        assert!(
            problems[0].message.contains("recurs"),
            "{what}: {}",
            problems[0].message
        );
    }
}

#[test]
fn deeply_nested_headers_are_refused_without_blaming_line_one() {
    // Regression: the parser gives no position for its recursion limit, and
    // the label used to land on the first line (here `[mesh]`).
    let text = format!("{MINIMAL}[network.east.{}]\nx = 1\n", vec!["a"; 5_000].join("."));
    let checked = topology::check("deep.toml", text.as_bytes());
    let failures = compare("deep header", text.as_bytes(), &checked, &[whole_file(Code::Syntax)]);
    assert!(failures.is_empty(), "{failures:#?}");

    // Nesting the parser accepts reaches the shape check, which stops at the
    // first unknown key.
    let text = format!(
        "{MINIMAL}[network.east]\nx = {}1{}\n",
        "{a = ".repeat(60),
        "}".repeat(60)
    );
    let checked = topology::check("deep.toml", text.as_bytes());
    let failures = compare(
        "nested under a network",
        text.as_bytes(),
        &checked,
        &[error(Code::UnknownKey, "network.east.x", "x")],
    );
    assert!(failures.is_empty(), "{failures:#?}");
}

// --- credentials

#[test]
fn api_server_credentials_never_reach_the_output() {
    for name in [
        "api_server_credentials",
        "api_server_credentials_escaped",
        "api_server_credentials_next_to_bad_name",
        "api_server_http_credentials",
    ] {
        let (bytes, checked) = check_fixture(name);
        assert!(
            String::from_utf8_lossy(&bytes).contains("hunter2"),
            "{name}: the fixture must carry one"
        );
        let mut text = Vec::new();
        render::diagnostics::text(&checked.problems, Style::PLAIN, &mut text).unwrap();
        let mut json = Vec::new();
        render::diagnostics::json(&checked.problems, checked.topology.as_ref(), &mut json).unwrap();
        for (format, out) in [("text", text), ("json", json)] {
            let out = String::from_utf8(out).unwrap();
            assert!(
                !out.contains("hunter2"),
                "{name}: the password is in the {format} output:\n{out}"
            );
            assert!(
                !out.contains("admin:"),
                "{name}: the user is in the {format} output:\n{out}"
            );
        }
    }
}

#[test]
fn redaction_leaves_addresses_without_credentials_alone() {
    let (_, checked) = check_fixture("api_server_http");
    let mut text = Vec::new();
    render::diagnostics::text(&checked.problems, Style::PLAIN, &mut text).unwrap();
    assert!(
        String::from_utf8(text)
            .unwrap()
            .contains(r#""http://203.0.113.10:6443""#)
    );
}

// --- rendered diagnostics

fn rendered(name: &str, bytes: &[u8]) -> String {
    let checked = topology::check(name, bytes);
    let mut out = Vec::new();
    render::diagnostics::text(&checked.problems, Style::PLAIN, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn rendered_diagnostics() {
    for name in [
        "cluster_name_underscores",
        "cluster_name_from_context",
        "api_server_credentials_next_to_bad_name",
        "duplicate_context",
        "unknown_key_top_level_typo",
        "wrong_type_cluster_single_table",
        "unused_network",
        "several_problems",
        "empty",
    ] {
        let text = rendered(&format!("{name}.toml"), &fixture(name));
        insta::assert_snapshot!(format!("text__{name}"), text);
    }
    let text = rendered("latin1.toml", b"[mesh]\nname = \"caf\xe9\"\n");
    insta::assert_snapshot!("text__not_utf8", text);
}

#[test]
fn a_valid_file_renders_nothing() {
    assert_eq!(
        rendered("mesh.toml.example", &fs::read("mesh.toml.example").unwrap()),
        ""
    );
}

// --- round trips and defaults

#[test]
fn files_round_trip_through_toml() {
    let mut files = vec![("mesh.toml.example".to_string(), fs::read("mesh.toml.example").unwrap())];
    // Fixtures that are well shaped (only semantic problems) parse too.
    for name in cases().keys() {
        files.push((name.to_string(), fixture(name)));
    }
    let mut round_tripped = 0;
    for (name, bytes) in files {
        let Some(file) = topology::check(&name, &bytes).file else {
            continue;
        };
        let again = toml::to_string(&file).unwrap();
        let reparsed = topology::check("again.toml", again.as_bytes());
        assert_eq!(
            reparsed.file.as_ref(),
            Some(&file),
            "{name} did not round-trip:\n{again}"
        );
        round_tripped += 1;
    }
    assert!(round_tripped >= 10, "only {round_tripped} files parsed");
}

fn cluster(name: &str, context: &str, network: &str, role: Role) -> Cluster {
    Cluster {
        name: name.into(),
        context: context.into(),
        kubeconfig: None,
        network: network.into(),
        control_plane: None,
        role,
        api_server: None,
        allow_insecure_transport: false,
        data_plane: Default::default(),
    }
}

fn default_gateway() -> Network {
    Network {
        gateway_service: "istio-eastwestgateway".into(),
        gateway_port: 15443,
    }
}

#[test]
fn the_example_resolves_to_four_clusters_on_three_networks() {
    let checked = topology::check("mesh.toml.example", &fs::read("mesh.toml.example").unwrap());
    let (topology, warnings) = checked.into_result().unwrap();
    assert!(warnings.problems.is_empty(), "{:?}", warnings.problems);
    let expected = Topology {
        mesh: Mesh {
            name: "mesh1".into(),
            namespace: "istio-system".into(),
            tokens: Tokens::default(),
            lock_cluster: None,
            trust: Default::default(),
        },
        clusters: vec![
            cluster("eu-west", "kind-eu-west", "eu-flat", Role::Primary),
            // Served by the one primary on its network.
            Cluster {
                control_plane: Some("eu-west".into()),
                ..cluster("eu-central", "kind-eu-central", "eu-flat", Role::Remote)
            },
            // No `network`: a network of its own, named after the cluster.
            cluster("us-east", "kind-us-east", "us-east", Role::Primary),
            Cluster {
                api_server: Some("https://203.0.113.40:443".into()),
                ..cluster("apac", "gke_acme-prod_asia-east1_apac", "asia", Role::Primary)
            },
        ],
        networks: BTreeMap::from([
            (
                "asia".into(),
                Network {
                    gateway_service: "istio-eastwestgateway-asia".into(),
                    gateway_port: 15443,
                },
            ),
            ("eu-flat".into(), default_gateway()),
            ("us-east".into(), default_gateway()),
        ]),
    };
    assert_eq!(topology, expected);
    assert_eq!(
        topology.primaries().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["eu-west", "us-east", "apac"]
    );
    assert_eq!(topology.cluster("apac").unwrap().network, "asia");
}

#[test]
fn defaults_fill_in_from_name_and_context() {
    let text = r#"
[mesh]
name = "m"

[[cluster]]
name = "east"

[[cluster]]
context = "west"
kubeconfig = "kube/west.yaml"

[network.east]
gateway_port = 443
"#;
    let (topology, _) = topology::check("t.toml", text.as_bytes()).into_result().unwrap();
    assert_eq!(topology.mesh.namespace, "istio-system");
    assert_eq!(
        topology.clusters,
        [
            // context = name, network = name, role = primary
            cluster("east", "east", "east", Role::Primary),
            // name = context
            Cluster {
                kubeconfig: Some("kube/west.yaml".into()),
                ..cluster("west", "west", "west", Role::Primary)
            },
        ]
    );
    assert_eq!(
        topology.networks,
        BTreeMap::from([
            (
                "east".into(),
                Network {
                    gateway_port: 443,
                    ..default_gateway()
                }
            ),
            ("west".into(), default_gateway()),
        ])
    );
}

#[test]
fn the_same_context_in_different_kubeconfigs_is_two_clusters() {
    let text = r#"
[mesh]
name = "m"

[[cluster]]
name = "east"
context = "admin"
kubeconfig = "east.yaml"

[[cluster]]
name = "west"
context = "admin"
kubeconfig = "west.yaml"
"#;
    let checked = topology::check("t.toml", text.as_bytes());
    assert!(checked.problems.problems.is_empty(), "{:?}", checked.problems.problems);
}

// --- properties

fn rules() -> [Rule; 4] {
    [
        Rule::Dns1123Label,
        Rule::Dns1123Subdomain,
        Rule::Dns1035Label,
        Rule::LabelValue,
    ]
}

/// Names as people write them: kubeconfig contexts, ARNs, upper case,
/// accents and look-alikes.
fn name_like() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-zA-Z0-9_.:/@ -]{0,80}|[a-zà-ÿ0-9е日-]{1,70}|gke_[a-z0-9-]{1,20}_[a-z0-9-]{1,20}")
        .unwrap()
}

/// Fragments of TOML, to build files that are nearly right.
fn toml_ish() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "[mesh]",
        "[[cluster]]",
        "[cluster]",
        "[network.",
        "[network.\"a b\"]",
        "]",
        "]]",
        "name",
        "context",
        "network",
        "role",
        "kubeconfig",
        "api_server",
        "gateway_port",
        "gateway_service",
        "namespace",
        " = ",
        "=",
        "\"",
        "'",
        "\"\"\"",
        "\\",
        "\\u0040",
        "\"east\"",
        "\"gke_p_r_c\"",
        "\"remote\"",
        "\"https://u:p@h:6443\"",
        "\"http://h\"",
        "0",
        "15443",
        "70000",
        "-1",
        "0x3C4B",
        "true",
        "1979-05-27",
        "{",
        "}",
        "[",
        ",",
        ".",
        "#",
        "\n",
        "\r\n",
        " ",
        "\t",
        "é",
        "е",
        "\u{0}",
        "\u{feff}",
    ]);
    prop::collection::vec(token, 0..60).prop_map(|tokens| tokens.concat())
}

fn check_and_render(bytes: &[u8]) -> Checked {
    let checked = topology::check("p.toml", bytes);
    let mut out = Vec::new();
    render::diagnostics::text(&checked.problems, Style::PLAIN, &mut out).unwrap();
    render::diagnostics::json(&checked.problems, checked.topology.as_ref(), &mut out).unwrap();
    for problem in &checked.problems.problems {
        for label in &problem.labels {
            assert!(label.offset + label.length <= bytes.len(), "{problem:?}");
        }
    }
    checked
}

fn mesh_file() -> impl Strategy<Value = MeshFile> {
    let text = || proptest::option::of(name_like());
    let role = proptest::option::of(prop_oneof![Just(Role::Primary), Just(Role::Remote)]);
    let insecure = proptest::option::of(proptest::bool::ANY);
    let entry = (text(), text(), text(), text(), role, text(), text(), insecure).prop_map(
        |(name, context, kubeconfig, network, role, api_server, control_plane, allow_insecure_transport)| {
            ClusterEntry {
                name,
                context,
                kubeconfig,
                network,
                role,
                api_server,
                control_plane,
                allow_insecure_transport,
                data_plane: None,
            }
        },
    );
    let network = (proptest::option::of(name_like()), proptest::option::of(1u16..)).prop_map(
        |(gateway_service, gateway_port)| NetworkEntry {
            gateway_service,
            gateway_port,
        },
    );
    (
        name_like(),
        proptest::option::of(name_like()),
        prop::collection::vec(entry, 0..5),
        prop::collection::btree_map(name_like(), network, 0..3),
    )
        .prop_map(|(name, namespace, clusters, networks)| MeshFile {
            mesh: MeshSection {
                name,
                namespace,
                tokens: None,
                lock_cluster: None,
                data_plane: None,
                trust: None,
            },
            clusters,
            networks,
        })
}

proptest! {
    #[test]
    fn names_pass_their_rule_or_suggest_one_that_does(name in name_like()) {
        for rule in rules() {
            if rule.check(&name).is_ok() {
                continue;
            }
            match rule.suggest(&name) {
                Some(suggestion) => prop_assert_eq!(rule.check(&suggestion), Ok(()), "{:?} {:?} -> {:?}", rule, name, suggestion),
                // Nothing to build a name from.
                None => prop_assert!(
                    !deunicode::deunicode(&name).chars().any(|c| c.is_ascii_alphabetic()),
                    "{:?} has no suggestion for {:?}", rule, name
                ),
            }
        }
    }

    #[test]
    fn check_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        check_and_render(&bytes);
    }

    #[test]
    fn check_never_panics_on_toml_ish_text(text in toml_ish()) {
        check_and_render(text.as_bytes());
    }

    #[test]
    fn any_mesh_file_round_trips_through_check(file in mesh_file()) {
        let text = toml::to_string(&file).unwrap();
        let checked = check_and_render(text.as_bytes());
        // Whatever its names, a serialised MeshFile is well shaped, and
        // `file` is only withheld for shape problems.
        prop_assert_eq!(checked.file.as_ref(), Some(&file), "{:?}\n{}", checked.problems.problems, text);
    }
}

/// Problems of a topology text as `severity code message (help)`.
fn problems_of(text: &str) -> Vec<String> {
    topology::check("mesh.toml", text.as_bytes())
        .problems
        .problems
        .iter()
        .map(|p| {
            format!(
                "{:?} {} {} ({})",
                p.severity,
                p.code.as_str(),
                p.message,
                p.help.clone().unwrap_or_default()
            )
        })
        .collect()
}

#[test]
fn a_remote_is_served_by_the_primary_it_names_or_the_one_there_is() {
    let mesh = |remote: &str| {
        format!(
            "[mesh]\nname = \"m\"\n[[cluster]]\nname = \"a\"\nnetwork = \"n1\"\n[[cluster]]\nname = \"b\"\nnetwork = \"n2\"\n[[cluster]]\nname = \"r\"\nrole = \"remote\"\n{remote}"
        )
    };
    let control_plane = |text: &str| {
        let (topology, _) = topology::check("mesh.toml", text.as_bytes()).into_result().unwrap();
        topology.cluster("r").unwrap().control_plane.clone()
    };
    // The only primary on its network.
    assert_eq!(control_plane(&mesh("network = \"n2\"\n")), Some("b".into()));
    // Named.
    assert_eq!(
        control_plane(&mesh("network = \"n2\"\ncontrol_plane = \"a\"\n")),
        Some("a".into())
    );
    // The mesh's only primary, on another network.
    let one = "[mesh]\nname = \"m\"\n[[cluster]]\nname = \"a\"\n[[cluster]]\nname = \"r\"\nrole = \"remote\"\n";
    assert_eq!(control_plane(one), Some("a".into()));

    // Two primaries elsewhere: an error that names them (issue 29: a
    // default that became "none" when a primary was added left the remote
    // without the istiod its install reaches).
    let ambiguous = mesh("");
    assert!(
        topology::check("mesh.toml", ambiguous.as_bytes())
            .into_result()
            .is_err()
    );
    let problems = problems_of(&ambiguous);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].starts_with("Error meshform::topology::missing_key remote \"r\" has no `control_plane`"),
        "{problems:#?}"
    );
    assert!(problems[0].contains("one of a, b"), "{problems:#?}");

    // A name that is no primary, and a primary with the key: errors.
    let problems = problems_of(&mesh("control_plane = \"aa\"\n"));
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].starts_with("Error meshform::topology::invalid_value `control_plane` of \"r\" names no primary"),
        "{problems:#?}"
    );
    assert!(problems[0].contains("did you mean \"a\"?"), "{problems:#?}");
    let problems = problems_of(&mesh("control_plane = \"r\"\n"));
    assert!(
        problems[0].contains("names no primary"),
        "a remote cannot serve itself: {problems:#?}"
    );
    let on_primary = "[mesh]\nname = \"m\"\n[[cluster]]\nname = \"a\"\ncontrol_plane = \"a\"\n";
    let problems = problems_of(on_primary);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].contains("primary \"a\" has a `control_plane`"),
        "{problems:#?}"
    );
}

#[test]
fn the_lock_cluster_is_named_or_the_first_primary_by_name() {
    let mesh = |key: &str| {
        format!(
            "[mesh]\nname = \"m\"\n{key}[[cluster]]\nname = \"west\"\n[[cluster]]\nname = \"east\"\n[[cluster]]\nname = \"a-remote\"\nrole = \"remote\"\ncontrol_plane = \"west\"\n"
        )
    };
    let lock_cluster = |text: &str| {
        let (topology, _) = topology::check("mesh.toml", text.as_bytes()).into_result().unwrap();
        topology.lock_cluster().map(str::to_string)
    };
    // By default the first primary by name, whatever the file's order and the remotes.
    assert_eq!(lock_cluster(&mesh("")), Some("east".into()));
    assert_eq!(lock_cluster(&mesh("lock_cluster = \"west\"\n")), Some("west".into()));
    // Any cluster of the mesh may hold it.
    assert_eq!(
        lock_cluster(&mesh("lock_cluster = \"a-remote\"\n")),
        Some("a-remote".into())
    );

    // A name that is no cluster: an error at the key, with the close name.
    let text = mesh("lock_cluster = \"eats\"\n");
    let checked = topology::check("mesh.toml", text.as_bytes());
    let problems = &checked.problems.problems;
    assert_eq!(problems.len(), 1, "{problems:#?}");
    let problem = &problems[0];
    assert_eq!(problem.code.as_str(), "meshform::topology::invalid_value");
    assert_eq!(problem.path.as_deref(), Some("mesh.lock_cluster"));
    assert!(
        problem.message.contains("`lock_cluster` \"eats\" is not a cluster"),
        "{problem:#?}"
    );
    assert_eq!(problem.help.as_deref(), Some("did you mean \"east\"?"));
    let label = &problem.labels[0];
    assert_eq!(
        &text[label.offset..label.offset + label.length],
        "\"eats\"",
        "{problem:#?}"
    );
    let far = problems_of(&mesh("lock_cluster = \"zzzzzz\"\n"));
    assert!(far[0].contains("one of: west, east, a-remote"), "{far:#?}");
}
