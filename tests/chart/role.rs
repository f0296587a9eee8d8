//! The chart's Role: what the controller does in its own namespace, granted
//! by name where RBAC allows, and no more; and the real controller taking its
//! Lease with exactly those rights.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::support::controlplane::{Cluster, ControlPlane};
use super::support::mesh::{Entry, MESH, Mesh, Streamed, eventually};
use super::{LEAST, NAMESPACE, one, render};

/// A Role's grants as (group, resource, verb, name), "" for any name.
pub fn granted(role: &Value) -> BTreeSet<(String, String, String, String)> {
    let mut grants = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        let list = |key: &str| -> Vec<String> {
            rule[key]
                .as_array()
                .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
                .unwrap_or_default()
        };
        let names = list("resourceNames");
        let names = if names.is_empty() { vec![String::new()] } else { names };
        for group in list("apiGroups") {
            for resource in list("resources") {
                for verb in list("verbs") {
                    for name in &names {
                        grants.insert((group.clone(), resource.clone(), verb.clone(), name.clone()));
                    }
                }
            }
        }
    }
    grants
}

/// What the controller does in its own namespace: its election Lease
/// (`meshform-controller-<mesh>`, src/controller/election.rs), its Events and
/// its status ConfigMap `meshform-status-<mesh>`. Kubernetes cannot limit
/// create by name, and Events are named by their writer.
pub fn expected_grants(mesh: &str) -> BTreeSet<(String, String, String, String)> {
    let lease = format!("meshform-controller-{mesh}");
    let status = format!("meshform-status-{mesh}");
    let mut grants = BTreeSet::new();
    let mut add = |group: &str, resource: &str, verbs: &[&str], name: &str| {
        for verb in verbs {
            grants.insert((group.into(), resource.into(), verb.to_string(), name.into()));
        }
    };
    add("coordination.k8s.io", "leases", &["create"], "");
    add("coordination.k8s.io", "leases", &["get", "update", "delete"], &lease);
    add("events.k8s.io", "events", &["create", "patch"], "");
    add("", "configmaps", &["create"], "");
    add("", "configmaps", &["patch"], &status);
    grants
}

#[test]
fn the_role_grants_what_the_controller_writes_in_its_namespace() {
    let docs = render(LEAST);
    let role = one(&docs, "Role");
    assert_eq!(role["metadata"]["namespace"], NAMESPACE);
    assert_eq!(granted(role), expected_grants("mesh1"));
    let binding = one(&docs, "RoleBinding");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    // By default: examples/rbac/meshform.yaml's account, which the kubeconfig uses.
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "meshform", "namespace": "istio-system"}])
    );
}

fn ssa() -> PatchParams {
    PatchParams::apply("chart-test").force()
}

/// The chart's Role as rendered for `cluster`, with `drop` taken off the
/// Lease's unnamed rule (`create`), applied for real.
async fn apply_role(cluster: &Cluster, docs: &[Value], drop: Option<&str>) {
    let mut role: Role = serde_json::from_value(one(docs, "Role").clone()).unwrap();
    if let Some(verb) = drop {
        for rule in role.rules.iter_mut().flatten() {
            if rule.resources.iter().flatten().any(|r| r == "leases") {
                rule.verbs.retain(|v| v != verb);
            }
        }
        role.rules
            .iter_mut()
            .for_each(|rules| rules.retain(|r| !r.verbs.is_empty()));
    }
    let name = role.metadata.name.clone().unwrap();
    Api::<Role>::namespaced(cluster.client(), NAMESPACE)
        .patch(&name, &ssa(), &Patch::Apply(&role))
        .await
        .expect("applying the Role");
}

/// The identity the chart binds by default (examples/rbac/meshform.yaml's
/// account), bound by the chart's RoleBinding and nothing else; a token for it.
async fn account_with_only_the_chart_s_binding(cluster: &Cluster, docs: &[Value]) -> String {
    let binding: RoleBinding = serde_json::from_value(one(docs, "RoleBinding").clone()).unwrap();
    let subject = &binding.subjects.as_ref().unwrap()[0];
    let namespace = subject.namespace.clone().unwrap();
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": subject.name, "namespace": namespace}})).unwrap();
    let accounts = Api::<ServiceAccount>::namespaced(cluster.client(), &namespace);
    accounts
        .patch(&subject.name, &ssa(), &Patch::Apply(&account))
        .await
        .expect("the account");
    Api::<RoleBinding>::namespaced(cluster.client(), NAMESPACE)
        .patch(
            binding.metadata.name.as_deref().unwrap(),
            &ssa(),
            &Patch::Apply(&binding),
        )
        .await
        .expect("the RoleBinding");
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    accounts
        .create_token_request(&subject.name, &PostParams::default(), &request)
        .await
        .expect("a token")
        .status
        .expect("token status")
        .token
}

/// The plane's kubeconfig with `cluster`'s admin token replaced by `token`.
fn kubeconfig(dir: &Path, cluster: &Cluster, token: &str) -> PathBuf {
    let path = cluster.kubeconfig();
    let text = std::fs::read_to_string(path).expect("reading the plane's kubeconfig");
    let config = Kubeconfig::read_from(path).expect("parsing the plane's kubeconfig");
    let context = config
        .contexts
        .iter()
        .find(|c| c.name == cluster.name())
        .expect("context");
    let user = &context.context.as_ref().expect("context body").user;
    let admin = config
        .auth_infos
        .iter()
        .find(|a| Some(&a.name) == user.as_ref())
        .and_then(|a| a.auth_info.as_ref()?.token.as_ref())
        .expect("an admin token");
    let out = dir.join("controller-kubeconfig.yaml");
    std::fs::write(&out, text.replace(admin.expose_secret(), token)).expect("writing the kubeconfig");
    out
}

/// Reads the controller's events until one is `event`.
async fn until(stream: &mut Streamed, event: &str) -> Value {
    loop {
        let line = stream
            .next_line(Duration::from_secs(120))
            .await
            .unwrap_or_else(|| panic!("the controller ended before {event}"));
        let parsed: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert_ne!(parsed["event"], "leading", "led before the Role allowed it: {line}");
        if parsed["event"] == event {
            return parsed;
        }
    }
}

async fn lease(cluster: &Cluster) -> Option<Lease> {
    Api::<Lease>::namespaced(cluster.client(), NAMESPACE)
        .get_opt(&format!("meshform-controller-{MESH}"))
        .await
        .expect("reading the election Lease")
}

/// The real controller, whose identity has nothing but the chart's Role in
/// its namespace (bound as the chart binds it), takes its Lease, renews it
/// and releases it on SIGTERM; with `create` taken off the Role it cannot.
#[tokio::test(flavor = "multi_thread")]
async fn the_controller_leads_with_the_chart_s_role_and_not_without_it() {
    let clusters = ControlPlane::shared().clusters(&["home"]).await;
    let home = clusters.by_name("home");
    let mesh_name = format!("meshName={MESH}");
    let docs = render(&["--set", "leaderElection.cluster=home", "--set", &mesh_name]);
    home.create_namespace(NAMESPACE).await;
    apply_role(home, &docs, Some("create")).await;
    let token = account_with_only_the_chart_s_binding(home, &docs).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kubeconfig(dir.path(), home, &token);
    let mesh = Mesh::new(&[Entry::of(home).network("flat").kubeconfig(&kubeconfig)]);
    let mut stream = mesh.stream(
        "controller",
        &[
            "--auto",
            "none",
            "--resync",
            "2s",
            "--poll",
            "500ms",
            "--retry",
            "1s",
            "--leader-election-cluster",
            "home",
            "--leader-election-namespace",
            NAMESPACE,
            "--leader-election-duration",
            "3s",
            "--metrics-address",
            "127.0.0.1:0",
        ],
    );
    let failed = until(&mut stream, "election_failed").await;
    assert!(failed["message"].as_str().unwrap().contains("leases"), "{failed}");
    assert_eq!(lease(home).await, None);

    apply_role(home, &docs, None).await;
    let mut leading = None;
    while leading.is_none() {
        let line = stream
            .next_line(Duration::from_secs(120))
            .await
            .expect("the controller ended");
        let event: Value = serde_json::from_str(&line).unwrap();
        if event["event"] == "leading" {
            leading = Some(event);
        }
    }
    let spec = |l: Lease| l.spec.expect("a Lease spec");
    let taken = spec(lease(home).await.expect("the Lease after leading"));
    assert!(taken.holder_identity.is_some(), "{taken:?}");
    // Renewed (update) within the lease's duration.
    eventually("a renewal of the Lease", Duration::from_secs(30), async || {
        let now = spec(lease(home).await?);
        (now.renew_time != taken.renew_time).then_some(())
    })
    .await;
    // The status ConfigMap (create, then patch by name) and the Events, with
    // nothing but the Role's rights.
    eventually("the status ConfigMap", Duration::from_secs(60), async || {
        Api::<ConfigMap>::namespaced(home.client(), NAMESPACE)
            .get_opt(&format!("meshform-status-{MESH}"))
            .await
            .ok()
            .flatten()
    })
    .await;
    eventually("an Event about the Lease", Duration::from_secs(60), async || {
        let events = Api::<Event>::namespaced(home.client(), NAMESPACE)
            .list(&ListParams::default())
            .await
            .ok()?;
        (!events.items.is_empty()).then_some(())
    })
    .await;

    let killed = std::process::Command::new("kill")
        .args(["-TERM", &stream.id().to_string()])
        .status()
        .expect("running kill");
    assert!(killed.success());
    let outcome = stream.finish(&mesh).await;
    assert_eq!(outcome.code, 0, "{outcome}");
    // Released (delete) on SIGTERM.
    assert_eq!(lease(home).await, None, "{outcome}");
}
