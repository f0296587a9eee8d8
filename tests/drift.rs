//! Drift made by hand (issue 19), on real API servers: after a converged
//! apply, the edits people make with kubectl — a namespace relabelled, a
//! remote secret's cluster annotation changed, the cross-network Gateway's
//! port patched, the reader ClusterRole's rules and its binding's subjects
//! edited — each show in the plan with what changed; a field another manager
//! now owns is a blocker predicted from `managedFields` (apply writes nothing,
//! detaches nothing, exit 1; a drift check, `plan --detailed-exitcode`,
//! reports it as drift, 2) and
//! `--force-conflicts` corrects them. Objects of meshform's deleted by hand
//! are drift apply re-creates (exit 2); objects re-made by hand in their
//! place are conflicts left alone until adopted or deleted.

mod support;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use meshform::objects;
use serde_json::{Value, json};
use support::controlplane::{Cluster, ControlPlane};
use support::mesh::{Entry, Mesh, NAMESPACE, install_eastwest_gateway, remote_secrets, token_of};
use support::snapshot::assert_outcome;
use support::state::object_state;

/// meshform's reader ClusterRole and ClusterRoleBinding in the mesh namespace.
const READER: &str = "meshform-istio-reader-istio-system";
const GATEWAY: &str = "cross-network-gateway";

/// A merge patch as kubectl sends it: an update owned by `manager`.
fn by(manager: &str) -> PatchParams {
    PatchParams {
        field_manager: Some(manager.to_string()),
        ..PatchParams::default()
    }
}

fn gateway_port(gateway: &DynamicObject) -> Value {
    gateway.data["spec"]["servers"][0]["port"]["number"].clone()
}

/// As kubectl creates objects: owned by `manager`.
fn created_by(manager: &str) -> PostParams {
    PostParams {
        field_manager: Some(manager.to_string()),
        ..PostParams::default()
    }
}

fn gateways(c: &Cluster) -> Api<DynamicObject> {
    Api::namespaced_with(c.client(), NAMESPACE, &objects::gateway_resource())
}

/// The plan's actions as `cluster action[/mode] reason`, in order.
fn actions(plan: &Value) -> Vec<String> {
    plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let mode = a["mode"].as_str().map(|m| format!("/{m}")).unwrap_or_default();
            let update = match a["update"].as_bool() {
                Some(true) => "/update",
                Some(false) => "/create",
                None => "",
            };
            format!(
                "{} {}{mode}{update} {}",
                a["cluster"].as_str().unwrap(),
                a["action"].as_str().unwrap(),
                a["reason"].as_str().unwrap()
            )
        })
        .collect()
}

/// The plan's findings as `kind cluster code: message`, in order, but for
/// the two every cluster of the test plane has (no Istio, a loopback address).
fn findings(plan: &Value) -> Vec<String> {
    plan["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| {
            !["meshform::plan::istio_not_installed", "meshform::plan::peer_address"]
                .contains(&f["code"].as_str().unwrap())
        })
        .map(|f| {
            format!(
                "{} {} {}: {}",
                f["kind"].as_str().unwrap(),
                f["cluster"].as_str().unwrap_or("-"),
                f["code"].as_str().unwrap().trim_start_matches("meshform::plan::"),
                f["message"].as_str().unwrap()
            )
        })
        .collect()
}

fn resource_version(meta: &ObjectMeta) -> String {
    meta.resource_version.clone().unwrap_or_default()
}

/// The remote secret's token reads `peer`: what istiod in the primary relies on.
async fn assert_reads(secret: &Secret, peer: &Cluster) {
    let bytes = &secret.data.as_ref().unwrap().values().next().unwrap().0;
    let token = token_of(bytes).expect("a token in the remote secret");
    let services = Api::<Service>::namespaced(peer.client_with_token(&token).await, NAMESPACE)
        .list(&Default::default())
        .await;
    assert!(
        services.is_ok(),
        "the reader token does not read {}: {services:?}",
        peer.name()
    );
}

#[tokio::test]
async fn hand_edits_are_found_in_full_and_corrected_with_force_conflicts() {
    let clusters = ControlPlane::shared().clusters(&["a", "b", "c"]).await;
    let [a, b, c] = clusters.by_names(["a", "b", "c"]);
    install_eastwest_gateway(c).await;
    // a and b share a network; c is alone on its own, behind its gateway.
    let mesh = Mesh::new(&[
        Entry::of(a).network("flat"),
        Entry::of(b).network("flat"),
        Entry::of(c).network("solo"),
    ]);
    install_eastwest_gateway(a).await;
    install_eastwest_gateway(b).await;
    mesh.apply(&[]).await;
    mesh.assert_converged(&clusters.all()).await;

    // 1. kubectl label ns istio-system topology.istio.io/network=hand-made --overwrite (in b)
    Api::<Namespace>::all(b.client())
        .patch(
            NAMESPACE,
            &by("kubectl-label"),
            &Patch::Merge(json!({"metadata": {"labels": {"topology.istio.io/network": "hand-made"}}})),
        )
        .await
        .expect("relabelling b");
    // 2. kubectl annotate secret istio-remote-secret-c networking.istio.io/cluster=oops --overwrite (in a)
    Api::<Secret>::namespaced(a.client(), NAMESPACE)
        .patch(
            "istio-remote-secret-c",
            &by("kubectl-annotate"),
            &Patch::Merge(json!({"metadata": {"annotations": {"networking.istio.io/cluster": "oops"}}})),
        )
        .await
        .expect("annotating a's secret for c");
    // 3. kubectl patch of c's cross-network-gateway: server port 15443 -> 443
    let gateways: Api<DynamicObject> =
        Api::namespaced_with(c.client(), NAMESPACE, &meshform::objects::gateway_resource());
    let mut servers = gateways.get("cross-network-gateway").await.unwrap().data["spec"]["servers"].clone();
    servers[0]["port"]["number"] = 443.into();
    gateways
        .patch(
            "cross-network-gateway",
            &by("kubectl-patch"),
            &Patch::Merge(json!({"spec": {"servers": servers}})),
        )
        .await
        .expect("patching c's gateway");

    // The plan shows all three, with what changed, and blocks on the label;
    // a drift check reports drift (2), the plan naming --force-conflicts.
    let check = mesh.run("plan", &["--detailed-exitcode"]).await.expect(2);
    assert_outcome("hand_edits_plan", &check);
    let plan = mesh.run("plan", &["--format", "json"]).await.expect(1).json();
    // The label makes b a cluster leaving network "hand-made": detached from
    // a and c first. That is what must not run ahead of the conflict.
    let detach: Vec<String> = actions(&plan)
        .into_iter()
        .filter(|a| a.contains("delete_remote_secret"))
        .collect();
    assert_eq!(detach.len(), 2, "{detach:#?}");
    let reasons: Vec<String> = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{} {}", a["cluster"].as_str().unwrap(), a["reason"].as_str().unwrap()))
        .collect();
    let has = |needle: &str| reasons.iter().any(|r| r.contains(needle));
    assert!(has("b network changes from \"hand-made\" to \"flat\""), "{reasons:#?}");
    assert!(
        has("a the remote secret for c was changed in the cluster: annotation networking.istio.io/cluster is \"oops\""),
        "{reasons:#?}"
    );
    assert!(has("c its spec was changed in the cluster"), "{reasons:#?}");
    let conflicts: Vec<&Value> = plan["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == "meshform::plan::field_conflict")
        .collect();
    // Every field another manager took, in cluster order: the label (kubectl-label), the
    // secret's annotation (kubectl-annotate) and the Gateway's servers
    // (kubectl-patch). In cluster order.
    let described: Vec<String> = conflicts
        .iter()
        .map(|f| {
            format!(
                "{} {} {}",
                f["kind"].as_str().unwrap(),
                f["cluster"].as_str().unwrap(),
                f["message"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        described,
        [
            "blocker a Secret istio-system/istio-remote-secret-c in a is owned by kubectl-annotate, not meshform: server-side apply would refuse to write it back",
            "blocker b label topology.istio.io/network of Namespace istio-system in b is owned by kubectl-label, not meshform: server-side apply would refuse to write it back",
            "blocker c the spec of Gateway istio-system/cross-network-gateway in c is owned by kubectl-patch, not meshform: server-side apply would refuse to write it back",
        ]
    );
    assert!(
        conflicts
            .iter()
            .all(|f| f["help"].as_str().unwrap().contains("--force-conflicts"))
    );

    // Apply refuses before writing anything: b is not detached by a failure
    // the plan could predict.
    let before = object_state(&[a, b, c]).await;
    let refused = mesh.run("apply", &["--auto-approve", "--allow-detach"]).await.expect(1);
    assert_outcome("hand_edits_refused", &refused);
    assert_eq!(before, object_state(&[a, b, c]).await, "a refused apply wrote");

    // With --force-conflicts the label is taken over and everything corrected.
    mesh.apply(&["--allow-detach", "--force-conflicts"]).await;
    let label = Api::<Namespace>::all(b.client())
        .get(NAMESPACE)
        .await
        .unwrap()
        .metadata
        .labels
        .unwrap();
    assert_eq!(label["topology.istio.io/network"], "flat");
    let secret = &remote_secrets(a).await["istio-remote-secret-c"];
    assert_eq!(
        secret.metadata.annotations.as_ref().unwrap()["networking.istio.io/cluster"],
        "c"
    );
    assert_eq!(
        gateway_port(&gateways.get("cross-network-gateway").await.unwrap()),
        15443
    );
    mesh.assert_converged(&clusters.all()).await;
    mesh.assert_no_token_leaked(&[a, b, c]).await;
}

#[tokio::test]
async fn reader_rules_and_subjects_edited_by_hand_are_found_and_taken_back_with_force_conflicts() {
    let clusters = ControlPlane::shared().clusters(&["a", "b"]).await;
    let (a, b) = (clusters.by_name("a"), clusters.by_name("b"));
    let mesh = Mesh::flat(&[a, b]);
    mesh.apply(&[]).await;
    mesh.assert_converged(&clusters.all()).await;
    let roles: Api<ClusterRole> = Api::all(b.client());
    let bindings: Api<ClusterRoleBinding> = Api::all(b.client());
    let written = roles.get(READER).await.unwrap();

    // kubectl edit clusterrole: `watch` taken off the core resources (istiod's
    // informers then fail on b, while the annotation still says meshform's).
    let mut rules = written.rules.clone().unwrap();
    let core = rules
        .iter_mut()
        .find(|r| r.resources.as_ref().is_some_and(|r| r.iter().any(|r| r == "pods")))
        .unwrap();
    core.verbs.retain(|v| v != "watch");
    let edited = roles
        .patch(READER, &by("kubectl-edit"), &Patch::Merge(json!({ "rules": rules })))
        .await
        .expect("editing b's reader role");

    let plan = mesh
        .run("plan", &["--format", "json", "--detailed-exitcode"])
        .await
        .expect(2)
        .json();
    assert_eq!(
        actions(&plan),
        [format!(
            "b ensure_reader/update the rules of ClusterRole {READER} changed in the cluster; meshform writes back what primaries need to read this cluster"
        )]
    );
    assert_eq!(
        findings(&plan),
        [format!(
            "blocker b field_conflict: the rules list of ClusterRole {READER} in b is owned by kubectl-edit, not meshform: server-side apply would refuse to write it back"
        )]
    );
    assert!(
        plan["findings"][0]["help"]
            .as_str()
            .unwrap()
            .contains("--force-conflicts"),
        "{plan:#}"
    );
    // Refused whole: the role keeps the edit.
    let refused = mesh.run("apply", &["--auto-approve"]).await.expect(1);
    assert_outcome("reader_edits_refused", &refused);
    assert_eq!(
        resource_version(&roles.get(READER).await.unwrap().metadata),
        resource_version(&edited.metadata)
    );

    mesh.apply(&["--force-conflicts"]).await;
    let taken = roles.get(READER).await.unwrap();
    assert_eq!(
        objects::rules_sha256(taken.rules.as_deref().unwrap()),
        objects::rules_sha256(&objects::reader_rules(objects::ReaderScope::Read))
    );
    assert_eq!(objects::rules_owners(&taken.metadata), Vec::<String>::new());
    mesh.assert_converged(&clusters.all()).await;

    // kubectl patch: a rule added to the role (write access to secrets) and a
    // subject to the binding. Both found, both taken back.
    let mut rules = taken.rules.clone().unwrap();
    rules.push(
        serde_json::from_value(json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "update"]}))
            .unwrap(),
    );
    roles
        .patch(READER, &by("kubectl-patch"), &Patch::Merge(json!({ "rules": rules })))
        .await
        .expect("adding a rule to b's reader role");
    let mut subjects = bindings.get(READER).await.unwrap().subjects.unwrap();
    subjects.push(
        serde_json::from_value(json!({"kind": "User", "name": "someone", "apiGroup": "rbac.authorization.k8s.io"}))
            .unwrap(),
    );
    bindings
        .patch(
            READER,
            &by("kubectl-patch"),
            &Patch::Merge(json!({ "subjects": subjects })),
        )
        .await
        .expect("adding a subject to b's reader binding");

    let plan = mesh
        .run("plan", &["--format", "json", "--detailed-exitcode"])
        .await
        .expect(2)
        .json();
    assert_eq!(
        actions(&plan),
        [format!(
            "b ensure_reader/update the rules of ClusterRole {READER} and the subjects of ClusterRoleBinding {READER} changed in the cluster; meshform writes back what primaries need to read this cluster"
        )]
    );
    assert_eq!(
        findings(&plan),
        [
            format!(
                "blocker b field_conflict: the rules list of ClusterRole {READER} in b is owned by kubectl-patch, not meshform: server-side apply would refuse to write it back"
            ),
            format!(
                "blocker b field_conflict: the subjects list of ClusterRoleBinding {READER} in b is owned by kubectl-patch, not meshform: server-side apply would refuse to write it back"
            ),
        ]
    );
    // The plan says it takes the fields over.
    let forced = mesh
        .run(
            "plan",
            &["--format", "json", "--detailed-exitcode", "--force-conflicts"],
        )
        .await
        .expect(2)
        .json();
    assert_eq!(forced["actions"][0]["force"], true, "{forced:#}");

    mesh.apply(&["--force-conflicts"]).await;
    let role = roles.get(READER).await.unwrap();
    assert_eq!(
        objects::rules_sha256(role.rules.as_deref().unwrap()),
        objects::rules_sha256(&objects::reader_rules(objects::ReaderScope::Read))
    );
    let binding = bindings.get(READER).await.unwrap();
    assert_eq!(
        binding.subjects.unwrap(),
        objects::reader_subjects(NAMESPACE, objects::ReaderScope::Read)
    );
    mesh.assert_converged(&clusters.all()).await;
    // a still reads b through the role taken back.
    assert_reads(&remote_secrets(a).await["istio-remote-secret-b"], b).await;
    mesh.assert_no_token_leaked(&[a, b]).await;
}

/// `a` and `c` on networks of their own, each behind its gateway, applied
/// and converged.
async fn converged_across(a: &Cluster, c: &Cluster) -> Mesh {
    install_eastwest_gateway(a).await;
    install_eastwest_gateway(c).await;
    let mesh = Mesh::new(&[Entry::of(a).network("one"), Entry::of(c).network("two")]);
    mesh.apply(&[]).await;
    mesh.assert_converged(&[a, c]).await;
    mesh
}

#[tokio::test]
async fn objects_deleted_by_hand_are_drift_that_apply_recreates() {
    let clusters = ControlPlane::shared().clusters(&["a", "c"]).await;
    let (a, c) = (clusters.by_name("a"), clusters.by_name("c"));
    let mesh = converged_across(a, c).await;

    // kubectl delete secret istio-remote-secret-c (in a); kubectl delete
    // gateway cross-network-gateway and clusterrole meshform-istio-reader-istio-system (in c).
    let secrets: Api<Secret> = Api::namespaced(a.client(), NAMESPACE);
    secrets
        .delete("istio-remote-secret-c", &DeleteParams::default())
        .await
        .expect("deleting a's secret for c");
    gateways(c)
        .delete(GATEWAY, &DeleteParams::default())
        .await
        .expect("deleting c's gateway");
    Api::<ClusterRole>::all(c.client())
        .delete(READER, &DeleteParams::default())
        .await
        .expect("deleting c's reader role");

    // Drift only, nothing in the way: exit 2, each object re-created, saying why.
    let plan = mesh
        .run("plan", &["--format", "json", "--detailed-exitcode"])
        .await
        .expect(2)
        .json();
    assert_eq!(
        actions(&plan),
        [
            format!(
                "c ensure_reader/create the ClusterRole {READER} is missing; without it primaries cannot read this cluster"
            ),
            "c ensure_gateway/create peers on other networks (such as a) reach this cluster only through its east-west gateway"
                .to_string(),
            "a write_remote_secret/create attach c to a".to_string(),
        ]
    );
    assert_eq!(findings(&plan), Vec::<String>::new());
    let markdown = mesh
        .run("plan", &["--format", "markdown", "--detailed-exitcode"])
        .await
        .expect(2);
    assert!(
        markdown
            .stdout
            .contains(&format!("the ClusterRole {READER} is missing")),
        "{markdown}"
    );

    mesh.apply(&[]).await;
    let gateway = gateways(c).get(GATEWAY).await.unwrap();
    assert_eq!(gateway_port(&gateway), 15443);
    assert!(objects::is_managed(gateway.metadata.labels.as_ref(), "mesh1"));
    assert!(
        Api::<ClusterRole>::all(c.client())
            .get_opt(READER)
            .await
            .unwrap()
            .is_some()
    );
    // The new secret's token reads c through the re-created role.
    assert_reads(&remote_secrets(a).await["istio-remote-secret-c"], c).await;
    mesh.assert_converged(&clusters.all()).await;
    mesh.assert_no_token_leaked(&[a, c]).await;
}

#[tokio::test]
async fn objects_remade_by_hand_are_conflicts_left_alone_until_adopted_or_deleted() {
    let clusters = ControlPlane::shared().clusters(&["a", "c"]).await;
    let (a, c) = (clusters.by_name("a"), clusters.by_name("c"));
    let mesh = converged_across(a, c).await;

    // c's Gateway deleted and made again by hand under its name, without
    // meshform's labels and on port 443 (kubectl create -f).
    let mut spec = objects::gateway_spec(15443);
    spec["servers"][0]["port"]["number"] = 443.into();
    gateways(c).delete(GATEWAY, &DeleteParams::default()).await.unwrap();
    let by_hand = DynamicObject::new(GATEWAY, &objects::gateway_resource())
        .within(NAMESPACE)
        .data(json!({ "spec": spec }));
    let gateway = gateways(c)
        .create(&created_by("kubectl-create"), &by_hand)
        .await
        .expect("making c's gateway by hand");
    // a's remote secret for c deleted and made again by hand, as istioctl's
    // instructions do it (kubectl create secret, kubectl label).
    let secrets: Api<Secret> = Api::namespaced(a.client(), NAMESPACE);
    secrets
        .delete("istio-remote-secret-c", &DeleteParams::default())
        .await
        .unwrap();
    let hand_made = Secret {
        metadata: ObjectMeta {
            name: Some("istio-remote-secret-c".into()),
            labels: Some(BTreeMap::from([("istio/multiCluster".into(), "true".into())])),
            ..ObjectMeta::default()
        },
        string_data: Some(BTreeMap::from([(
            "c".to_string(),
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    insecure-skip-tls-verify: true\n\
                 contexts:\n- name: c\n  context:\n    cluster: c\n    user: c\ncurrent-context: c\nusers:\n- name: c\n  user:\n    token: made-by-hand\n",
                c.server()
            ),
        )])),
        ..Secret::default()
    };
    let secret = secrets
        .create(&created_by("kubectl-create"), &hand_made)
        .await
        .expect("making a's secret for c by hand");

    // Neither is meshform's: both are conflicts, nothing is planned for them,
    // and the status stays 0 (apply has nothing to do until --adopt or a delete).
    let plan = mesh
        .run("plan", &["--format", "json", "--detailed-exitcode"])
        .await
        .expect(0)
        .json();
    assert_eq!(actions(&plan), Vec::<String>::new());
    assert_eq!(
        findings(&plan),
        [
            "conflict a remote_secret_unmanaged: Secret istio-system/istio-remote-secret-c in a is not managed by meshform; it is left as it is",
            "conflict c gateway_unmanaged: Gateway istio-system/cross-network-gateway exists and is not managed by meshform, and its spec is not what meshform writes (port 15443, TLS AUTO_PASSTHROUGH, hosts *.local); it is used as it is",
        ]
    );
    // check fails on both.
    let check = mesh.run("check", &[]).await.expect(1);
    assert_outcome("objects_remade_check", &check);
    // apply leaves both alone.
    mesh.apply(&[]).await;
    assert_eq!(
        resource_version(&secrets.get("istio-remote-secret-c").await.unwrap().metadata),
        resource_version(&secret.metadata)
    );
    assert_eq!(
        resource_version(&gateways(c).get(GATEWAY).await.unwrap().metadata),
        resource_version(&gateway.metadata)
    );

    // --adopt takes the secret over (the same object, meshform's content);
    // the Gateway has no adoption: deleted as the plan says, meshform writes its own.
    let adopt = mesh
        .run("plan", &["--format", "json", "--detailed-exitcode", "--adopt"])
        .await
        .expect(2)
        .json();
    assert_eq!(
        actions(&adopt),
        ["a write_remote_secret/adopt adopt the existing remote secret for c"]
    );
    mesh.apply(&["--adopt"]).await;
    let adopted = &remote_secrets(a).await["istio-remote-secret-c"];
    assert_eq!(adopted.metadata.uid, secret.metadata.uid);
    assert!(objects::is_managed(adopted.metadata.labels.as_ref(), "mesh1"));
    assert_eq!(
        adopted.metadata.annotations.as_ref().unwrap()["networking.istio.io/cluster"],
        "c"
    );
    assert_reads(adopted, c).await;
    gateways(c).delete(GATEWAY, &DeleteParams::default()).await.unwrap();
    mesh.apply(&[]).await;
    let gateway = gateways(c).get(GATEWAY).await.unwrap();
    assert_eq!(gateway_port(&gateway), 15443);
    assert!(objects::is_managed(gateway.metadata.labels.as_ref(), "mesh1"));
    mesh.assert_converged(&clusters.all()).await;
    mesh.assert_no_token_leaked(&[a, c]).await;
}
