//! Drift made by hand (issue 19), on real API servers: after a converged
//! apply, the three edits people make with kubectl — a namespace relabelled,
//! a remote secret's cluster annotation changed, the cross-network Gateway's
//! port patched — each show in the plan with what changed; the label owned by
//! `kubectl-label` is a blocker predicted from `managedFields` (apply writes
//! nothing, detaches nothing), and `--force-conflicts` corrects all three.

mod support;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use support::controlplane::{Cluster, ControlPlane};
use support::mesh::{Entry, Mesh, NAMESPACE, install_eastwest_gateway, remote_secrets};

/// A merge patch as kubectl sends it: an update owned by `manager`.
fn by(manager: &str) -> PatchParams {
    PatchParams {
        field_manager: Some(manager.to_string()),
        ..PatchParams::default()
    }
}

async fn state(c: &Cluster) -> Vec<String> {
    let mut out: Vec<String> = remote_secrets(c)
        .await
        .into_iter()
        .map(|(name, s)| format!("{name}@{}", s.metadata.resource_version.unwrap_or_default()))
        .collect();
    let ns = Api::<Namespace>::all(c.client()).get(NAMESPACE).await.unwrap();
    out.push(format!("ns@{}", ns.metadata.resource_version.unwrap_or_default()));
    out
}

fn gateway_port(gateway: &DynamicObject) -> Value {
    gateway.data["spec"]["servers"][0]["port"]["number"].clone()
}

#[tokio::test]
async fn hand_edits_are_found_in_full_and_corrected_with_force_conflicts() {
    let clusters = ControlPlane::shared().clusters(&["a", "b", "c"]).await;
    let (a, b, c) = (clusters.by_name("a"), clusters.by_name("b"), clusters.by_name("c"));
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
    mesh.assert_converged().await;

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

    // The plan shows all three, with what changed, and blocks on the label.
    let plan = mesh.run("plan", &["--format", "json"]).await.expect(1).json();
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
    let before = [state(a).await, state(b).await, state(c).await];
    let refused = mesh.run("apply", &["--auto-approve", "--allow-detach"]).await.expect(1);
    assert!(refused.stderr.contains("blocking problem"), "{refused}");
    assert_eq!(
        before,
        [state(a).await, state(b).await, state(c).await],
        "a refused apply wrote"
    );

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
    mesh.assert_converged().await;
    mesh.assert_no_token_leaked(&[a, b, c]).await;
}
