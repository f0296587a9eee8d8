//! A real istiod's own xDS answers prove the topology rules after every
//! apply (issue 14). istiod runs for a primary of the test control plane
//! (`tests/istiod/`, see `support::istiod`) and is asked, through EDS, as a
//! sidecar of a given network and cluster, for the endpoints of a Service
//! that has pods in every cluster (`support::workload`).

mod support;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use support::controlplane::{Cluster, ControlPlane};
use support::install::{Install, install_istio, set_gateway_address};
use support::istiod::{ISTIOD_TIMEOUT, Istiod, IstiodConfig, Snapshot};
use support::mesh::{Entry, Mesh, NAMESPACE, eventually, install_pending_eastwest_gateway};
use support::workload::{self, ECHO, deploy_echo};

const GATEWAY: &str = "istio-eastwestgateway";

#[tokio::test]
async fn istiod_with_its_own_ca_writes_only_to_the_cluster_it_serves() {
    let clusters = ControlPlane::shared().clusters(&["solo", "peer"]).await;
    let (solo, peer) = (clusters.by_name("solo"), clusters.by_name("peer"));
    for (cluster, network) in [(solo, "n1"), (peer, "n2")] {
        install_pending_eastwest_gateway(cluster).await;
        set_gateway_address(cluster, GATEWAY, "192.0.2.30").await;
        deploy_echo(cluster, &[format!("10.30.0.{}", usize::from(network == "n2") + 1)]).await;
    }
    install_istio(solo, &Install::correct("solo", "n1")).await;
    // No root given: istiod creates its own self-signed CA (istio-ca-secret)
    // and publishes its root; the peer's install is given the same root, so
    // that the mesh has one root of trust.
    let istiod = Istiod::start(solo, &IstiodConfig::new("solo").proxy("p", "n1", "solo").service(ECHO));
    let started = istiod.wait_for("istiod ready", |s| s.ready).await;
    assert!(
        started.root_cert.starts_with("-----BEGIN CERTIFICATE-----"),
        "{}",
        started.root_cert
    );
    // Its namespace controller replaces the installer's istio-ca-root-cert with its own root.
    eventually(
        "istiod's root in solo's istio-ca-root-cert",
        ISTIOD_TIMEOUT,
        async || (root_cert_of(solo, NAMESPACE).await.as_deref() == Some(started.root_cert.as_str())).then_some(()),
    )
    .await;
    install_istio(
        peer,
        &Install {
            roots: started.root_cert.clone(),
            ..Install::correct("peer", "n2")
        },
    )
    .await;
    let mesh = Mesh::new(&[Entry::of(solo).network("n1"), Entry::of(peer).network("n2")]);
    mesh.apply(&[]).await;
    mesh.assert_converged().await;
    let done = istiod
        .wait_for("the peer's gateway for p", |s| {
            s.proxy("p").by_cluster(ECHO).get("peer").map(Vec::as_slice) == Some(&["192.0.2.30:15443".to_string()])
        })
        .await;
    assert_writes_only_its_own(&done, true);
    assert_eq!(
        root_cert_of(solo, NAMESPACE).await.as_deref(),
        Some(started.root_cert.as_str())
    );
    assert_eq!(root_cert_of(peer, workload::NAMESPACE).await, None);
    mesh.record(&istiod.output());
    mesh.assert_no_token_leaked(&[solo, peer]).await;
}

/// `root-cert.pem` of `istio-ca-root-cert` in `namespace` of `cluster`.
async fn root_cert_of(cluster: &Cluster, namespace: &str) -> Option<String> {
    Api::<ConfigMap>::namespaced(cluster.client(), namespace)
        .get_opt("istio-ca-root-cert")
        .await
        .unwrap_or_else(|e| panic!("reading istio-ca-root-cert in {}: {e}", cluster.name()))
        .and_then(|c| c.data)
        .and_then(|d| d.get("root-cert.pem").cloned())
}

/// What istiod writes into the cluster it serves (tests/istiod/README.md):
/// the roots (`istio-ca-root-cert`) and revocation list (`istio-ca-crl`)
/// ConfigMaps in every namespace, its leader-election ConfigMaps and Leases
/// in the mesh namespace, and with its own CA the `istio-ca-secret` Secret.
/// Everything else is a surprise.
fn assert_writes_only_its_own(s: &Snapshot, own_ca: bool) {
    let system = format!("/api/v1/namespaces/{NAMESPACE}/");
    let leases = format!("/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases");
    let expected = |method: &str, path: &str| -> bool {
        let in_namespace = path.strip_prefix("/api/v1/namespaces/").and_then(|p| p.split_once('/'));
        match (method, in_namespace) {
            ("POST", Some((_, "configmaps"))) => true,
            ("PUT", Some((_, "configmaps/istio-ca-root-cert" | "configmaps/istio-ca-crl"))) => true,
            ("PUT", _) if path.starts_with(&format!("{system}configmaps/istio-")) => true,
            ("POST", _) if path == format!("{system}secrets") => own_ca,
            ("POST" | "PUT", _) => path.starts_with(&leases),
            _ => false,
        }
    };
    assert!(!s.writes.is_empty(), "istiod wrote nothing: the proxy records nothing?");
    let surprises: Vec<_> = s.writes.iter().filter(|w| !expected(&w.method, &w.path)).collect();
    assert!(surprises.is_empty(), "istiod wrote what it should not: {surprises:#?}");
    let wrote_secret = s.writes.iter().any(|w| w.path == format!("{system}secrets"));
    assert_eq!(wrote_secret, own_ca, "istio-ca-secret written: {:#?}", s.writes);
}
