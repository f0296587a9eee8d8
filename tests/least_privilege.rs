//! Least privilege (issue 7, item 4): `meshform plan` and `apply` with
//! credentials bound to exactly `examples/rbac/meshform.yaml` (a
//! ServiceAccount in every cluster, its token from TokenRequest, a
//! kubeconfig that uses it) attach a three-cluster mesh and converge. Then,
//! one verb at a time, a permission is taken away and the run that needs it
//! fails with a message naming the verb and the resource, as the API server
//! words it; with the verb back, a re-run converges.
//! `meshform controller` (issue 30) runs under the same account, its
//! watches included: none is refused, and one repairs a hand edit.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;
use secrecy::ExposeSecret;
use serde_json::Value;
use support::controlplane::{Cluster, ControlPlane};
use support::install::{Install, install_istio};
use support::mesh::{Entry, MESH, Mesh, NAMESPACE, Streamed, eventually, install_eastwest_gateway};

const RBAC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/rbac/meshform.yaml");
const ACCOUNT: &str = "meshform";
const READER_ROLE: &str = "meshform-istio-reader-istio-system";

/// The documents of the example, as JSON.
fn documents() -> Vec<Value> {
    let text = std::fs::read_to_string(RBAC).expect("reading examples/rbac/meshform.yaml");
    text.split("\n---\n")
        .map(|doc| serde_yaml_ng::from_str::<Value>(doc).expect("a YAML document"))
        .collect()
}

fn of_kind<T: serde::de::DeserializeOwned>(docs: &[Value], kind: &str) -> T {
    let doc = docs
        .iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in the example"));
    serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{kind}: {e}"))
}

/// The example's rules with `verb` taken off `resource` (every rule naming it).
fn without(rules: &[PolicyRule], resource: &str, verb: &str) -> Vec<PolicyRule> {
    let mut found = false;
    let rules = rules
        .iter()
        .cloned()
        .filter_map(|mut rule| {
            if rule.resources.iter().flatten().any(|r| r == resource) && rule.verbs.iter().any(|v| v == verb) {
                found = true;
                rule.verbs.retain(|v| v != verb);
            }
            (!rule.verbs.is_empty()).then_some(rule)
        })
        .collect();
    assert!(found, "the example grants no {verb} on {resource}");
    rules
}

fn ssa() -> PatchParams {
    PatchParams::apply("least-privilege-test").force()
}

/// Applies the example's roles, with `change` made to their rules.
async fn apply_roles(cluster: &Cluster, change: Option<(&str, &str)>) {
    let docs = documents();
    let mut cluster_role: ClusterRole = of_kind(&docs, "ClusterRole");
    let mut role: Role = of_kind(&docs, "Role");
    if let Some((resource, verb)) = change {
        let in_role = role
            .rules
            .iter()
            .flatten()
            .any(|r| r.resources.iter().flatten().any(|x| x == resource));
        if in_role {
            role.rules = Some(without(role.rules.as_deref().unwrap_or_default(), resource, verb));
        } else {
            cluster_role.rules = Some(without(
                cluster_role.rules.as_deref().unwrap_or_default(),
                resource,
                verb,
            ));
        }
    }
    Api::<ClusterRole>::all(cluster.client())
        .patch(ACCOUNT, &ssa(), &Patch::Apply(&cluster_role))
        .await
        .expect("applying the ClusterRole");
    Api::<Role>::namespaced(cluster.client(), NAMESPACE)
        .patch(ACCOUNT, &ssa(), &Patch::Apply(&role))
        .await
        .expect("applying the Role");
}

/// The account, its roles and bindings in `cluster`, and a token for it.
async fn install(cluster: &Cluster) -> String {
    let docs = documents();
    let account: ServiceAccount = of_kind(&docs, "ServiceAccount");
    let accounts = Api::<ServiceAccount>::namespaced(cluster.client(), NAMESPACE);
    accounts
        .patch(ACCOUNT, &ssa(), &Patch::Apply(&account))
        .await
        .expect("account");
    apply_roles(cluster, None).await;
    let binding: ClusterRoleBinding = of_kind(&docs, "ClusterRoleBinding");
    Api::<ClusterRoleBinding>::all(cluster.client())
        .patch(ACCOUNT, &ssa(), &Patch::Apply(&binding))
        .await
        .expect("ClusterRoleBinding");
    let binding: RoleBinding = of_kind(&docs, "RoleBinding");
    Api::<RoleBinding>::namespaced(cluster.client(), NAMESPACE)
        .patch(ACCOUNT, &ssa(), &Patch::Apply(&binding))
        .await
        .expect("RoleBinding");
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    accounts
        .create_token_request(ACCOUNT, &PostParams::default(), &request)
        .await
        .expect("a token for the meshform account")
        .status
        .expect("token status")
        .token
}

/// The plane's kubeconfig for these clusters, each user's admin token
/// replaced by the meshform account's token of that cluster.
fn kubeconfig(dir: &Path, clusters: &[&Cluster], tokens: &[String]) -> PathBuf {
    let path = clusters[0].kubeconfig();
    let mut text = std::fs::read_to_string(path).expect("reading the plane's kubeconfig");
    let config = Kubeconfig::read_from(path).expect("parsing the plane's kubeconfig");
    for (cluster, token) in clusters.iter().zip(tokens) {
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
        text = text.replace(admin.expose_secret(), token);
    }
    let out = dir.join("meshform-kubeconfig.yaml");
    std::fs::write(&out, text).expect("writing the kubeconfig");
    out
}

/// Waits until the account may (or may not) `verb` `resource` in `cluster`:
/// RBAC changes reach the authorizer through an informer, not at once.
async fn until_allowed(cluster: &Cluster, token: &str, resource: &str, verb: &str, allowed: bool) {
    let client = cluster.client_with_token(token).await;
    let (resource, subresource) = resource.split_once('/').map_or((resource, None), |(r, s)| (r, Some(s)));
    let group = match resource {
        "leases" => "coordination.k8s.io",
        "clusterroles" | "clusterrolebindings" => "rbac.authorization.k8s.io",
        "gateways" => "networking.istio.io",
        _ => "",
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some(group.into()),
                resource: Some(resource.into()),
                subresource: subresource.map(Into::into),
                verb: Some(verb.into()),
                namespace: (resource != "namespaces" && group != "rbac.authorization.k8s.io").then(|| NAMESPACE.into()),
                name: match (resource, subresource) {
                    ("namespaces", _) => Some(NAMESPACE.into()),
                    ("serviceaccounts", Some(_)) => Some("istio-reader-service-account".into()),
                    ("clusterroles", _) => Some(READER_ROLE.into()),
                    ("services", _) => Some("istio-eastwestgateway".into()),
                    _ => None,
                },
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client);
    eventually(
        &format!("{verb} {resource} allowed={allowed}"),
        Duration::from_secs(30),
        async || {
            let answer = api.create(&PostParams::default(), &review).await.ok()?;
            (answer.status?.allowed == allowed).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn plan_and_apply_need_exactly_the_example_role() {
    let clusters = ControlPlane::shared().clusters(&["lp-a", "lp-b", "lp-c"]).await;
    let all: Vec<&Cluster> = ["lp-a", "lp-b", "lp-c"].iter().map(|n| clusters.by_name(n)).collect();
    let mut tokens = Vec::new();
    for (&c, network) in all.iter().zip(["n1", "n1", "n2"]) {
        install_eastwest_gateway(c).await;
        install_istio(c, &Install::correct(c.name(), network)).await;
        tokens.push(install(c).await);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = kubeconfig(dir.path(), &all, &tokens);
    let entries = [
        Entry::of(all[0]).network("n1").kubeconfig(&path),
        Entry::of(all[1]).network("n1").kubeconfig(&path),
        Entry::of(all[2]).network("n2").kubeconfig(&path),
    ];
    let mesh = Mesh::new(&entries);

    // Exactly the example: plan, apply, converged.
    mesh.run("plan", &["--detailed-exitcode"]).await.expect(2);
    let out = mesh.apply(&[]).await;
    assert!(out.stdout.contains("Apply complete"), "{out}");
    mesh.assert_converged(&all).await;

    // One verb less at a time; each case names what triggers the call.
    let (a, token_a) = (all[0], &tokens[0]);
    let cases: [(&str, &str, &str); 5] = [
        // A new reader token is minted by TokenRequest.
        ("serviceaccounts/token", "create", "rotate"),
        // A missing network label is set with server-side apply.
        ("namespaces", "patch", "relabel"),
        // So is the east-west gateway Service's (issue 13).
        ("services", "patch", "gateway-label"),
        // The reader ClusterRole, deleted by hand, is written again.
        ("clusterroles", "escalate", "reader"),
        // A detached cluster's remote secrets are deleted.
        ("secrets", "delete", "detach"),
    ];
    for (resource, verb, trigger) in cases {
        for &c in &all {
            apply_roles(c, Some((resource, verb))).await;
        }
        until_allowed(a, token_a, resource, verb, false).await;
        let args: &[&str] = match trigger {
            "rotate" => &["--rotate-tokens"],
            "relabel" => {
                let labels = serde_json::json!({"metadata": {"labels": {"topology.istio.io/network": null}}});
                Api::<Namespace>::all(a.client())
                    .patch(NAMESPACE, &PatchParams::default(), &Patch::Merge(&labels))
                    .await
                    .expect("removing the network label");
                // To Istio a cluster without its label was on another network.
                &["--allow-detach"]
            }
            "gateway-label" => {
                let labels = serde_json::json!({"metadata": {"labels": {"topology.istio.io/network": null}}});
                Api::<Service>::namespaced(a.client(), NAMESPACE)
                    .patch("istio-eastwestgateway", &PatchParams::default(), &Patch::Merge(&labels))
                    .await
                    .expect("removing the gateway's network label");
                &[]
            }
            "reader" => {
                Api::<ClusterRole>::all(a.client())
                    .delete(READER_ROLE, &Default::default())
                    .await
                    .expect("deleting the reader ClusterRole");
                &[]
            }
            _ => {
                mesh.write(&entries[..2]);
                &["--allow-detach"]
            }
        };
        let failed = mesh.run("apply", &[&["--auto-approve"], args].concat()).await;
        assert_eq!(failed.code, 1, "{resource} without {verb}:\n{failed}");
        let text = format!("{}{}", failed.stdout, failed.stderr);
        let named = match verb {
            // RBAC's escalation check words it its own way.
            "escalate" => "is attempting to grant RBAC permissions not currently held".to_string(),
            _ => format!("cannot {verb} resource \"{}\"", resource),
        };
        assert!(
            text.contains(&named),
            "{resource} without {verb}: {named:?} not in\n{failed}"
        );
        assert!(text.contains(ACCOUNT), "the account is not named:\n{failed}");

        for &c in &all {
            apply_roles(c, None).await;
        }
        until_allowed(a, token_a, resource, verb, true).await;
        // The same run again, with the verb back, finishes the job.
        let out = mesh.apply(args).await;
        assert!(out.stdout.contains("Apply complete"), "{resource} {verb}: {out}");
        mesh.assert_converged(&all).await;
    }
    mesh.assert_no_token_leaked(&all[..2]).await;
}

// ---------------------------------------------------------------------------
// Issue 29 item 9: on a remote, only its control plane's token writes.

const CONTROL_PLANE_ACCOUNT: &str = "meshform-control-plane";
const REMOTE_SECRET: &str = "istio-remote-secret-lp-remote";

/// The token `holder`'s remote secret for lp-remote carries.
async fn token_for_remote(holder: &Cluster) -> String {
    let secrets = support::mesh::remote_secrets(holder).await;
    let secret = secrets.get(REMOTE_SECRET).expect("a remote secret for lp-remote");
    support::mesh::token_of(&secret.data.as_ref().expect("data")["lp-remote"].0).expect("a token")
}

/// Who the API server of `cluster` takes `token` for.
async fn whoami(cluster: &Cluster, token: &str) -> String {
    let review = Api::<SelfSubjectReview>::all(cluster.client_with_token(token).await)
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .expect("who am I");
    review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .unwrap_or_default()
}

/// What istiod writes in a remote it manages, tried with `token`: a patch
/// of the injection webhook (its CA bundle, `pkg/webhooks/webhookpatch.go`)
/// and a ConfigMap (`istio-ca-root-cert` in every namespace, by the
/// namespace controller). Whether each was allowed; any other error panics.
async fn writes(cluster: &Cluster, token: &str, probe: &str) -> (bool, bool) {
    let client = cluster.client_with_token(token).await;
    let allowed = |result: Result<(), kube::Error>, what: &str| match result {
        Ok(()) => true,
        Err(kube::Error::Api(status)) if status.code == 403 => false,
        Err(e) => panic!("{what} with the token of {probe}: {e}"),
    };
    let label = serde_json::json!({"metadata": {"labels": {"probed-by": probe}}});
    let patched = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .patch(WEBHOOK, &PatchParams::default(), &Patch::Merge(&label))
        .await
        .map(drop);
    let configmap = ConfigMap {
        metadata: kube::api::ObjectMeta {
            // A new name every try: a retry must not meet its own ConfigMap.
            name: Some(format!(
                "probe-{probe}-{}",
                PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            )),
            ..Default::default()
        },
        ..Default::default()
    };
    let created = Api::<ConfigMap>::namespaced(client, "default")
        .create(&PostParams::default(), &configmap)
        .await
        .map(drop);
    (
        allowed(patched, "patching the webhook"),
        allowed(created, "creating a ConfigMap"),
    )
}

const WEBHOOK: &str = "istio-sidecar-injector";
static PROBES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The remote's injection webhook, as Istio's remote profile installs it.
async fn install_webhook(cluster: &Cluster) {
    let webhook: MutatingWebhookConfiguration = serde_json::from_value(serde_json::json!({
        "metadata": { "name": WEBHOOK },
        "webhooks": [{
            "name": "rev.namespace.sidecar-injector.istio.io",
            "clientConfig": { "url": "https://istiod.example.com:15017/inject" },
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "failurePolicy": "Ignore",
        }],
    }))
    .expect("a webhook");
    Api::<MutatingWebhookConfiguration>::all(cluster.client())
        .patch(
            WEBHOOK,
            &PatchParams::apply("istio-installer").force(),
            &Patch::Apply(&webhook),
        )
        .await
        .expect("installing the injection webhook");
}

/// The remote as meshform laid it out before the control plane had an
/// account of its own: the reader role carries the control plane's writes
/// and the control plane's token is the reader's. Returns that token.
async fn old_layout(remote: &Cluster, control_plane: &Cluster) -> String {
    use meshform::objects::ReaderScope;
    let apply = PatchParams::apply("meshform").force();
    let role = meshform::objects::control_plane_cluster_role(NAMESPACE);
    Api::<ClusterRoleBinding>::all(remote.client())
        .delete(&role, &Default::default())
        .await
        .expect("deleting the control-plane binding");
    Api::<ClusterRole>::all(remote.client())
        .delete(&role, &Default::default())
        .await
        .expect("deleting the control-plane role");
    Api::<ServiceAccount>::namespaced(remote.client(), NAMESPACE)
        .delete(CONTROL_PLANE_ACCOUNT, &Default::default())
        .await
        .expect("deleting the control-plane account");
    let shared = meshform::plan::hashes::shared_remote_reader_hash(NAMESPACE, meshform::topology::TokenMode::Request);
    let mut reader = meshform::apply::build::reader_role(NAMESPACE, MESH, &shared, ReaderScope::Read);
    reader.rules = Some(meshform::objects::reader_rules(ReaderScope::ControlPlane));
    Api::<ClusterRole>::all(remote.client())
        .patch(READER_ROLE, &apply, &Patch::Apply(&reader))
        .await
        .expect("the reader role with the control plane's writes");
    let binding = meshform::apply::build::reader_binding(NAMESPACE, MESH, &shared, ReaderScope::Read);
    Api::<ClusterRoleBinding>::all(remote.client())
        .patch(READER_ROLE, &apply, &Patch::Apply(&binding))
        .await
        .expect("the reader binding");
    // A reader token for the control plane, bound as meshform binds one.
    let bound =
        meshform::apply::build::token_binding(NAMESPACE, MESH, control_plane.name(), control_plane.kube_system_uid());
    let bound = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(remote.client(), NAMESPACE)
        .create(&PostParams::default(), &bound)
        .await
        .expect("a binding Secret");
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(3600),
            bound_object_ref: Some(k8s_openapi::api::authentication::v1::BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Secret".into()),
                name: bound.metadata.name,
                uid: bound.metadata.uid,
            }),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let token = Api::<ServiceAccount>::namespaced(remote.client(), NAMESPACE)
        .create_token_request("istio-reader-service-account", &PostParams::default(), &request)
        .await
        .expect("a reader token")
        .status
        .expect("status")
        .token;
    let secrets = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(control_plane.client(), NAMESPACE);
    let secret = secrets.get(REMOTE_SECRET).await.expect("the control plane's secret");
    let mut kubeconfig: Value =
        serde_json::from_slice(&secret.data.expect("data")["lp-remote"].0).expect("meshform writes JSON");
    kubeconfig["users"][0]["user"]["token"] = token.clone().into();
    let data = base64::engine::general_purpose::STANDARD.encode(kubeconfig.to_string());
    // As meshform's own field manager: no other manager owns its fields.
    let params = PatchParams {
        field_manager: Some("meshform".into()),
        ..PatchParams::default()
    };
    secrets
        .patch(
            REMOTE_SECRET,
            &params,
            &Patch::Merge(serde_json::json!({"data": {"lp-remote": data}})),
        )
        .await
        .expect("the reader token into the control plane's secret");
    token
}

async fn until_writes(cluster: &Cluster, token: &str, probe: &str, want: (bool, bool)) {
    eventually(
        &format!("{probe} writes {want:?}"),
        Duration::from_secs(30),
        async || (writes(cluster, token, probe).await == want).then_some(()),
    )
    .await;
}

/// On a remote, only the token its control plane holds can patch the
/// injection webhook and write ConfigMaps (a control-plane account of its
/// own); every other primary's token is the read-only reader's. meshform
/// runs with exactly `examples/rbac/meshform.yaml`. A remote laid out as
/// before (one reader account with the writes, the control plane's token
/// of it) moves: the next apply gives the control plane a token of its own
/// account while the reader keeps the writes, the apply after makes the
/// reader read-only and revokes the replaced token.
#[tokio::test]
async fn only_the_control_planes_token_writes_in_its_remote_and_an_old_layout_moves() {
    let names = ["lp-cp", "lp-remote", "lp-other"];
    let clusters = ControlPlane::shared().clusters(&names).await;
    let [primary, remote, other] = clusters.by_names(names);
    let all = [primary, remote, other];
    let mut tokens = Vec::new();
    for &c in &all {
        let istio = if c.name() == "lp-remote" {
            // Its sidecars find lp-cp's istiod there (same network: any address).
            Install::remote(c.name(), "n1", Some("192.0.2.10"))
        } else {
            Install::correct(c.name(), "n1")
        };
        install_istio(c, &istio).await;
        tokens.push(install(c).await);
    }
    install_webhook(remote).await;
    let dir = tempfile::tempdir().unwrap();
    let path = kubeconfig(dir.path(), &all, &tokens);
    let mesh = Mesh::new(&[
        Entry::of(primary).network("n1").kubeconfig(&path),
        Entry::of(remote).network("n1").served_by("lp-cp").kubeconfig(&path),
        Entry::of(other).network("n1").kubeconfig(&path),
    ]);
    let out = mesh.apply(&[]).await;
    assert!(out.stdout.contains("Apply complete"), "{out}");
    mesh.assert_converged(&all).await;

    let control_planes = token_for_remote(primary).await;
    let others = token_for_remote(other).await;
    assert_eq!(
        whoami(remote, &control_planes).await,
        format!("system:serviceaccount:{NAMESPACE}:{CONTROL_PLANE_ACCOUNT}")
    );
    assert_eq!(
        whoami(remote, &others).await,
        format!("system:serviceaccount:{NAMESPACE}:istio-reader-service-account")
    );
    until_writes(remote, &control_planes, "lp-cp", (true, true)).await;
    assert_eq!(writes(remote, &others, "lp-other").await, (false, false));

    // The layout before: any primary's token could patch the webhook.
    let old = old_layout(remote, primary).await;
    until_writes(remote, &others, "lp-other-old", (true, true)).await;
    let out = mesh.apply(&[]).await;
    assert!(out.stdout.contains("Apply complete"), "{out}");
    let moved = token_for_remote(primary).await;
    assert_eq!(
        whoami(remote, &moved).await,
        format!("system:serviceaccount:{NAMESPACE}:{CONTROL_PLANE_ACCOUNT}")
    );
    until_writes(remote, &moved, "lp-cp-moved", (true, true)).await;
    // The reader keeps the writes until the control plane's token is its own:
    // the replaced token still works through the grace period.
    assert_eq!(writes(remote, &old, "lp-cp-old").await, (true, true));

    let out = mesh.apply(&["--revoke-grace", "0"]).await;
    assert!(out.stdout.contains("Apply complete"), "{out}");
    until_writes(remote, &others, "lp-other-after", (false, false)).await;
    // The replaced token is revoked: its binding Secret is gone, and the API
    // server refuses it once its token cache lets go of it.
    eventually("the replaced token refused", Duration::from_secs(30), async || {
        let answer = Api::<SelfSubjectReview>::all(remote.client_with_token(&old).await)
            .create(&PostParams::default(), &SelfSubjectReview::default())
            .await;
        matches!(answer, Err(kube::Error::Api(status)) if status.code == 401).then_some(())
    })
    .await;
    until_writes(remote, &moved, "lp-cp-after", (true, true)).await;
    mesh.assert_converged(&all).await;
    mesh.assert_no_token_leaked(&[primary, other]).await;
}

// ---------------------------------------------------------------------------
// Issue 30: `meshform controller`'s watches under the same account.

/// The controller's events until a round ends `ending`.
async fn round_ending(stream: &mut Streamed, ending: &str) -> Value {
    loop {
        let line = (stream.next_line(Duration::from_secs(120)).await)
            .unwrap_or_else(|| panic!("the controller ended or went quiet before a round {ending}"));
        let event: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if event["event"] == "round" && event["ending"] == ending {
            return event;
        }
    }
}

#[tokio::test]
async fn the_controller_watches_with_exactly_the_example_role() {
    let clusters = ControlPlane::shared().clusters(&["lpw-a", "lpw-b"]).await;
    let all: Vec<&Cluster> = ["lpw-a", "lpw-b"].iter().map(|n| clusters.by_name(n)).collect();
    let mut tokens = Vec::new();
    for &c in &all {
        tokens.push(install(c).await);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = kubeconfig(dir.path(), &all, &tokens);
    let mesh = Mesh::new(
        &all.iter()
            .map(|c| Entry::of(c).network("flat").kubeconfig(&path))
            .collect::<Vec<_>>(),
    );
    // An hour's resync: only a watch can start the repair below. A watch that
    // fails is logged at the default level (warn), with the API server's words.
    let args = ["--resync", "1h", "--poll", "500ms", "--retry", "1s"];
    let mut stream = mesh.stream(
        "controller",
        &[&args[..], &["--metrics-address", "127.0.0.1:0"]].concat(),
    );
    round_ending(&mut stream, "converged").await;

    // Deleted by hand: seen by a watch by name (a resourceNames rule).
    Api::<ClusterRole>::all(all[1].client())
        .delete(READER_ROLE, &Default::default())
        .await
        .expect("deleting the reader ClusterRole");
    let repaired = round_ending(&mut stream, "applied").await;
    assert_eq!(repaired["trigger"], "change", "{repaired}");
    let named = format!("lpw-b ClusterRole {READER_ROLE}");
    assert!(repaired["changes"].to_string().contains(&named), "{repaired}");
    round_ending(&mut stream, "converged").await;

    let pid = stream.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = stream.finish(&mesh).await.expect(0);
    assert!(!out.stderr.contains("forbidden"), "a watch was refused:\n{out}");
    mesh.assert_no_token_leaked(&all).await;
}
