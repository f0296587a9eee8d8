//! Least privilege (issue 7, item 4): `meshform plan` and `apply` with
//! credentials bound to exactly `examples/rbac/meshform.yaml` (a
//! ServiceAccount in every cluster, its token from TokenRequest, a
//! kubeconfig that uses it) attach a three-cluster mesh and converge. Then,
//! one verb at a time, a permission is taken away and the run that needs it
//! fails with a message naming the verb and the resource, as the API server
//! words it; with the verb back, a re-run converges.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;
use secrecy::ExposeSecret;
use serde_json::Value;
use support::controlplane::{Cluster, ControlPlane};
use support::install::{Install, install_istio};
use support::mesh::{Entry, Mesh, NAMESPACE, eventually, install_eastwest_gateway};

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
