//! The Helm chart `deploy/meshform` (issue 30, item 4) and its alert rules
//! (`deploy/meshform/alerts.yaml`): Helm itself (built from the Go module
//! proxy, `tests/chartcheck`) lints the chart strictly and renders it with the
//! least values and with every option on; the rendered objects are applied
//! with a server-side dry run, strict field validation, to a real API server
//! (a schema error fails), and the pod is dry-run created in a namespace that
//! enforces the "restricted" Pod Security Standard. The Deployment's arguments
//! parse with meshform's own CLI; the Role grants what the controller writes in
//! its namespace, no more. Every alert's expr is parsed with Prometheus's PromQL
//! parser and names only metrics the controller exports, and every meshform
//! command its runbook names parses.

#[path = "../support/mod.rs"]
mod support;

mod alerts;
mod role;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use clap::Parser;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use meshform::cli::{Cli, Command as Sub};
use serde::Deserialize;
use serde_json::{Value, json};
use support::controlplane::{Cluster, ControlPlane};
use support::gobuild;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/meshform");
pub const ALERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/meshform/alerts.yaml");
pub const NAMESPACE: &str = "meshform";

/// The least values: the two the chart cannot guess.
pub const LEAST: &[&str] = &["--set", "leaderElection.cluster=east", "--set", "meshName=mesh1"];

/// Every option away from its default.
const FULL: &str = r#"
image:
  repository: registry.example/meshform
  tag: "0.1.0-rc1"
replicas: 3
meshToml:
  inline: |
    [mesh]
    name = "prod"

    [[cluster]]
    name = "east"
    role = "primary"
    network = "n1"
leaderElection:
  cluster: east
  duration: 20s
auto: none
resync: 10m
extraArgs: ["--concurrency", "4"]
metrics:
  port: 9090
serviceAccount:
  projectedToken:
    enabled: true
    audience: https://kubernetes.default.svc
podDisruptionBudget:
  minAvailable: 2
serviceMonitor:
  enabled: true
  labels: {release: prometheus}
prometheusRule:
  enabled: true
  labels: {release: prometheus}
priorityClassName: system-cluster-critical
nodeSelector: {kubernetes.io/os: linux}
"#;

/// Helm, inside the checker program: `tests/chartcheck` pins helm.sh/helm/v4.
pub fn chartcheck() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/chartcheck");
        gobuild::build_cached("chartcheck", &src, &["-trimpath", "-ldflags", "-s -w"])
    })
}

/// Runs `helm ARGS` with its configuration and caches in a scratch directory,
/// so nothing of the user's Helm setup takes part.
pub fn helm(args: &[&str]) -> Output {
    let home = gobuild::out_dir("chartcheck").join("helm-home");
    Command::new(chartcheck())
        .arg("helm")
        .args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("running helm")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `helm template` with `values`, which must succeed; its documents as JSON.
pub fn render(values: &[&str]) -> Vec<Value> {
    let mut args = vec!["template", "meshform", CHART, "--namespace", NAMESPACE];
    args.extend_from_slice(values);
    let out = helm(&args);
    assert!(
        out.status.success(),
        "helm template {values:?} failed:\n{}",
        text(&out.stderr)
    );
    let yaml = text(&out.stdout);
    serde_yaml_ng::Deserializer::from_str(&yaml)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("helm rendered invalid YAML ({e}):\n{yaml}")))
        .filter(|doc| !doc.is_null())
        .collect()
}

/// The FULL values, written to a file for `-f` (renamed into place: tests
/// of other processes may be reading it).
fn full_values() -> Vec<String> {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    let path = PATH.get_or_init(|| {
        let dir = gobuild::out_dir("chartcheck");
        std::fs::create_dir_all(&dir).unwrap();
        let tmp = dir.join(format!("full-values.{}.tmp", std::process::id()));
        std::fs::write(&tmp, FULL).unwrap();
        let path = dir.join("full-values.yaml");
        std::fs::rename(&tmp, &path).unwrap();
        path
    });
    vec!["-f".into(), path.to_string_lossy().into_owned()]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn kinds(docs: &[Value]) -> BTreeSet<String> {
    docs.iter().map(|d| d["kind"].as_str().unwrap().to_string()).collect()
}

pub fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<_> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind}: {found:?}");
    found[0]
}

pub fn yaml_file(path: &str) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn chart_version_is_cargo_toml_s() {
    let chart = yaml_file(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/meshform/Chart.yaml"));
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn helm_lints_the_chart_strictly() {
    let full = full_values();
    for values in [LEAST.to_vec(), strs(&full)] {
        let mut args = vec!["lint", "--strict", CHART, "--namespace", NAMESPACE];
        args.extend_from_slice(&values);
        let out = helm(&args);
        assert!(
            out.status.success(),
            "helm lint --strict {values:?}:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}

/// What no default can stand for is asked for by name, and a mesh name that
/// disagrees with the inline mesh.toml is refused.
#[test]
fn the_chart_asks_for_what_it_cannot_guess() {
    let cases: &[(&[&str], &str)] = &[
        (&[], "is required"),
        (&["--set", "meshName=mesh1"], "leaderElection.cluster is required"),
        (&["--set", "leaderElection.cluster=east"], "meshName is required"),
        (
            &[
                "--set",
                "leaderElection.cluster=east",
                "--set",
                "meshName=other",
                "--set-string",
                "meshToml.inline=[mesh]\nname = \"prod\"\n",
            ],
            "is not meshToml.inline's [mesh] name",
        ),
        (
            &[
                "--set",
                "leaderElection.cluster=east",
                "--set",
                "meshName=mesh1",
                "--set",
                "rbac.subjects=null",
            ],
            "nobody could take the Lease",
        ),
    ];
    for (values, message) in cases {
        let mut args = vec!["template", "meshform", CHART, "--namespace", NAMESPACE];
        args.extend_from_slice(values);
        let out = helm(&args);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{values:?} rendered");
        assert!(
            stderr.contains(message),
            "{values:?}: expected {message:?} in:\n{stderr}"
        );
    }
}

#[test]
fn least_values_render_the_controller_and_nothing_optional() {
    let docs = render(LEAST);
    assert_eq!(
        kinds(&docs),
        [
            "Deployment",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
        .map(String::from)
        .into(),
    );
    let deployment = one(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    // The release image of Cargo.toml's version (Containerfile: USER 65532).
    assert_eq!(
        container["image"],
        format!("ghcr.io/meshform/meshform:{}", env!("CARGO_PKG_VERSION"))
    );
    // meshform reaches every cluster through the kubeconfig only: no token.
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(one(&docs, "ServiceAccount")["automountServiceAccountToken"], false);
    assert_eq!(pod["serviceAccountName"], "meshform");
    let mounts: Vec<&str> = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert!(!mounts.iter().any(|m| m.contains("serviceaccount")), "{mounts:?}");
    // The restricted profile, as the Containerfile's user.
    let pod_security = &pod["securityContext"];
    assert_eq!(pod_security["runAsNonRoot"], true);
    assert_eq!(pod_security["runAsUser"], 65532);
    assert_eq!(pod_security["seccompProfile"]["type"], "RuntimeDefault");
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    // mesh.toml is a ConfigMap directory: a subPath mount would never see an edit.
    for mount in container["volumeMounts"].as_array().unwrap() {
        assert!(mount.get("subPath").is_none(), "{mount}");
    }
    let topology = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "topology")
        .unwrap();
    assert_eq!(topology["configMap"]["name"], "meshform-topology");
    let kubeconfig = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "kubeconfig")
        .unwrap();
    assert_eq!(kubeconfig["secret"]["secretName"], "meshform-kubeconfig");
    // The Lease's namespace is the pod's, from the downward API.
    assert_eq!(
        container["env"],
        json!([{"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}])
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "metrics");
    assert_eq!(container["ports"][0]["containerPort"], 8080);

    let controller = controller_args(deployment);
    assert_eq!(controller.file, "/etc/meshform/mesh.toml");
    assert_eq!(controller.kubeconfig, "/var/run/meshform/kubeconfig/kubeconfig");
    assert_eq!(controller.auto, "Safe");
    assert_eq!(controller.election, "east");
    assert_eq!(controller.resync_seconds, 300);
    for path in [&controller.file, &controller.kubeconfig] {
        assert!(
            mounts.iter().any(|m| path.starts_with(m)),
            "{path} is not mounted: {mounts:?}"
        );
    }

    // The PDB and the Service select the Deployment's pods.
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let pdb = one(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    for (key, value) in pdb["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&labels[key], value, "PDB selector {key}");
    }
    let service = one(&docs, "Service");
    for (key, value) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&labels[key], value, "Service selector {key}");
    }
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics");
}

#[test]
fn every_option_renders_as_asked() {
    let full = full_values();
    let docs = render(&strs(&full));
    assert_eq!(
        kinds(&docs),
        [
            "ConfigMap",
            "Deployment",
            "PodDisruptionBudget",
            "PrometheusRule",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
            "ServiceMonitor"
        ]
        .map(String::from)
        .into(),
    );
    let deployment = one(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "registry.example/meshform:0.1.0-rc1");
    assert_eq!(container["ports"][0]["containerPort"], 9090);
    // The inline mesh.toml is the chart's ConfigMap, mounted whole.
    let config_map = one(&docs, "ConfigMap");
    let toml = config_map["data"]["mesh.toml"].as_str().unwrap();
    assert!(toml.contains("name = \"prod\""), "{toml}");
    let topology = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "topology")
        .unwrap();
    assert_eq!(topology["configMap"]["name"], config_map["metadata"]["name"]);
    // The projected token: short-lived, for this cluster's kubeconfig context.
    assert_eq!(pod["automountServiceAccountToken"], false);
    let projected = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "serviceaccount")
        .expect("the projected token's volume");
    assert_eq!(
        projected["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
        3600
    );
    let controller = controller_args(deployment);
    assert_eq!(controller.auto, "None");
    assert_eq!(controller.resync_seconds, 600);
    assert_eq!(controller.concurrency, 4);
    // The Lease and status ConfigMap carry the inline mesh.toml's name.
    let role = one(&docs, "Role");
    assert_eq!(role::granted(role), role::expected_grants("prod"));
    let subjects = one(&docs, "RoleBinding")["subjects"].as_array().unwrap().clone();
    assert!(
        subjects.contains(&json!({"kind": "ServiceAccount", "name": "meshform", "namespace": NAMESPACE})),
        "with the projected token the chart's account takes the Lease: {subjects:?}"
    );
    assert_eq!(one(&docs, "PodDisruptionBudget")["spec"]["minAvailable"], 2);
    let monitor = one(&docs, "ServiceMonitor");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    // The PrometheusRule is alerts.yaml, one copy.
    let rule = one(&docs, "PrometheusRule");
    assert_eq!(rule["spec"], yaml_file(ALERTS));
}

/// What the Deployment's arguments mean to `meshform controller`.
struct ControllerArgs {
    file: String,
    kubeconfig: String,
    auto: String,
    election: String,
    resync_seconds: u64,
    concurrency: usize,
}

/// Parses the container's arguments with meshform's CLI definition, with the
/// POD_NAMESPACE the pod's environment gives `--leader-election-namespace`.
fn controller_args(deployment: &Value) -> ControllerArgs {
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().expect("arguments are strings").to_string())
        .collect();
    let mut words = vec!["meshform".to_string()];
    words.extend(args.iter().cloned());
    words.extend(["--leader-election-namespace".into(), NAMESPACE.into()]);
    let cli = Cli::try_parse_from(&words).unwrap_or_else(|e| panic!("`{}` does not parse:\n{e}", words.join(" ")));
    let Sub::Controller(args) = cli.command else {
        panic!("not `meshform controller`: {words:?}");
    };
    ControllerArgs {
        file: args.topology.file.to_string_lossy().into_owned(),
        kubeconfig: args
            .clusters
            .kubeconfig
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        auto: format!("{:?}", args.auto),
        election: args.leader_election_cluster.unwrap_or_default(),
        resync_seconds: args.resync.as_secs(),
        concurrency: args.concurrency,
    }
}

/// The plural of each kind the chart renders, for the dynamic API.
pub fn api_resource(doc: &Value) -> ApiResource {
    let kind = doc["kind"].as_str().unwrap();
    let api_version = doc["apiVersion"].as_str().unwrap();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let plural = match kind {
        "ServiceAccount" => "serviceaccounts",
        "Role" => "roles",
        "RoleBinding" => "rolebindings",
        "ConfigMap" => "configmaps",
        "Deployment" => "deployments",
        "Service" => "services",
        "PodDisruptionBudget" => "poddisruptionbudgets",
        other => panic!("the test does not know the plural of {other}"),
    };
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

/// Applies every rendered object with a server-side dry run and strict field
/// validation; the Prometheus Operator's kinds are left out (no CRDs in the
/// test control plane; their shape is checked above and their rules below).
async fn dry_run_apply(cluster: &Cluster, docs: &[Value]) {
    for doc in docs {
        let group = doc["apiVersion"].as_str().unwrap();
        if group.starts_with("monitoring.coreos.com/") {
            continue;
        }
        let resource = api_resource(doc);
        let name = doc["metadata"]["name"].as_str().unwrap();
        assert_eq!(doc["metadata"]["namespace"], NAMESPACE, "{name}");
        let api: Api<DynamicObject> = Api::namespaced_with(cluster.client(), NAMESPACE, &resource);
        let object: DynamicObject = serde_json::from_value(doc.clone()).unwrap();
        api.patch(
            name,
            &PatchParams::apply("meshform-chart-test").dry_run().validation_strict(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("{} {name} is refused by the API server: {e}", doc["kind"]));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_server_accepts_every_rendered_object_and_the_restricted_profile_the_pod() {
    let plane = ControlPlane::shared();
    let clusters = plane.clusters(&["chart"]).await;
    let cluster = clusters.by_name("chart");
    // The namespace of examples/ci/cronjob.yaml: Pod Security "restricted" enforced.
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(cluster.client());
    let namespace = serde_json::from_value(json!({
        "metadata": {"name": NAMESPACE, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}
    }))
    .unwrap();
    namespaces.create(&PostParams::default(), &namespace).await.unwrap();

    let full = full_values();
    let least = render(LEAST);
    let every = render(&strs(&full));
    for docs in [&least, &every] {
        dry_run_apply(cluster, docs).await;
    }

    // The pod itself, as the Deployment's ReplicaSet would create it: the
    // ServiceAccount admission plugin wants its account to exist.
    for docs in [&least, &every] {
        let account = one(docs, "ServiceAccount");
        let accounts: Api<DynamicObject> = Api::namespaced_with(cluster.client(), NAMESPACE, &api_resource(account));
        let object: DynamicObject = serde_json::from_value(account.clone()).unwrap();
        accounts
            .patch(
                account["metadata"]["name"].as_str().unwrap(),
                &PatchParams::apply("meshform-chart-test"),
                &Patch::Apply(&object),
            )
            .await
            .unwrap();
        let template = &one(docs, "Deployment")["spec"]["template"];
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
            "metadata": {"name": "meshform-chart-test", "labels": template["metadata"]["labels"]},
            "spec": template["spec"],
        }))
        .unwrap();
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(cluster.client(), NAMESPACE);
        pods.create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &pod,
        )
        .await
        .unwrap_or_else(|e| panic!("the chart's pod is refused in a restricted namespace: {e}"));
    }

    // The check can fail: a pod that runs as root is refused there.
    let template = &one(&least, "Deployment")["spec"]["template"];
    let mut spec = template["spec"].clone();
    spec["securityContext"]["runAsNonRoot"] = json!(false);
    spec["securityContext"]["runAsUser"] = json!(0);
    let pod: k8s_openapi::api::core::v1::Pod =
        serde_json::from_value(json!({"metadata": {"name": "root"}, "spec": spec})).unwrap();
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(cluster.client(), NAMESPACE);
    let refused = pods
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &pod,
        )
        .await
        .expect_err("a root pod must be refused");
    assert!(refused.to_string().contains("restricted"), "{refused}");
}
