//! What an ambient install and the Gateway API add to a cluster, for the
//! tests of issue 31: the Gateway API CRDs as released upstream (read from
//! the Go module cache, the version Istio's module requires, unchanged),
//! Gateway API Gateways and the address a gateway controller writes into
//! their status, istiod's ambient env, and ztunnel's DaemonSet.
//!
//! As with [`super::install`], nothing runs: the objects only say what an
//! install would run with.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use super::controlplane::Cluster;
use super::gobuild;
use super::mesh::NAMESPACE;

/// The Gateway API CRDs Istio's east-west gateways need, from the release's
/// `config/crd/standard`.
const CRDS: [&str; 2] = [
    "gateway.networking.k8s.io_gatewayclasses.yaml",
    "gateway.networking.k8s.io_gateways.yaml",
];

/// `sigs.k8s.io/gateway-api` in the module cache, at the version the pinned
/// Istio module requires (`tests/istiocheck/go.mod`).
fn release_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = Command::new(gobuild::go())
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/istiocheck"))
            .args(["list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/gateway-api"])
            .output()
            .expect("running go list");
        assert!(
            out.status.success(),
            "go list of sigs.k8s.io/gateway-api failed (run `go -C tests/istiocheck mod download`): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

/// The Gateway resource, as meshform reads it.
pub fn gateway_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "Gateway"))
}

/// Creates the Gateway API CRDs in `cluster` and waits until Gateways can
/// be listed in the mesh namespace.
pub async fn install_gateway_api(cluster: &Cluster) {
    let crds = Api::<CustomResourceDefinition>::all(cluster.client());
    for file in CRDS {
        let path = release_dir().join("config/crd/standard").join(file);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let crd: CustomResourceDefinition = serde_yaml_ng::from_str(&text).expect("a CRD");
        match crds.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(e) => panic!("creating {file} in {}: {e}", cluster.name()),
        }
    }
    let gateways: Api<DynamicObject> = Api::namespaced_with(cluster.client(), NAMESPACE, &gateway_resource());
    for _ in 0..300 {
        if gateways.list(&ListParams::default()).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the Gateway API is not served in {} after 30 s", cluster.name());
}

/// The ambient east-west Gateway `samples/multicluster/gen-eastwest-gateway.sh
/// --ambient --network NETWORK` prints.
pub fn ambient_east_west(network: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {
            "name": "istio-eastwestgateway",
            "namespace": NAMESPACE,
            "labels": {"topology.istio.io/network": network}
        },
        "spec": {
            "gatewayClassName": "istio-east-west",
            "listeners": [{
                "name": "mesh", "port": 15008, "protocol": "HBONE",
                "tls": {"mode": "Terminate", "options": {"gateway.istio.io/tls-terminate-mode": "ISTIO_MUTUAL"}}
            }]
        }
    })
}

/// A sidecar mesh's east-west gateway as a Gateway API Gateway (class
/// `istio`): a TLS listener on 15443 marked auto-passthrough, at `address`.
pub fn sidecar_east_west(name: &str, network: Option<&str>, address: &str) -> Value {
    let mut gateway = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "gatewayClassName": "istio",
            "addresses": [{"type": "IPAddress", "value": address}],
            "listeners": [{
                "name": "cross-network", "port": 15443, "protocol": "TLS",
                "tls": {"mode": "Passthrough", "options": {"gateway.istio.io/listener-protocol": "auto-passthrough"}}
            }]
        }
    });
    if let Some(network) = network {
        // No empty map when unlabelled: server-side apply would record the
        // installer as owning `labels` whole, and every label write conflict.
        gateway["metadata"]["labels"] = serde_json::json!({"topology.istio.io/network": network});
    }
    gateway
}

/// Writes a Gateway by server-side apply, as an installer would.
pub async fn apply_gateway(cluster: &Cluster, gateway: &Value) {
    apply_gateway_as(cluster, gateway, "istio-installer").await;
}

/// Writes a Gateway by server-side apply with field manager `manager`
/// (`helm`, say), taking its fields from any other.
pub async fn apply_gateway_as(cluster: &Cluster, gateway: &Value, manager: &str) {
    let name = gateway["metadata"]["name"].as_str().expect("a named Gateway");
    let object: DynamicObject = serde_json::from_value(gateway.clone()).unwrap();
    gateways(cluster)
        .patch(name, &PatchParams::apply(manager).force(), &Patch::Apply(&object))
        .await
        .unwrap_or_else(|e| panic!("applying Gateway {name} in {}: {e}", cluster.name()));
}

/// The Gateway API Gateways of the mesh namespace.
pub fn gateways(cluster: &Cluster) -> Api<DynamicObject> {
    Api::namespaced_with(cluster.client(), NAMESPACE, &gateway_resource())
}

/// The field managers of a Gateway with what each owns (`fieldsV1`).
pub async fn gateway_managers(cluster: &Cluster, name: &str) -> Vec<(String, Value)> {
    let gateway = gateways(cluster)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("reading Gateway {name} in {}: {e}", cluster.name()));
    gateway
        .metadata
        .managed_fields
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e.manager.unwrap_or_default(),
                e.fields_v1.map(|f| f.0).unwrap_or_default(),
            )
        })
        .collect()
}

/// Sets a Gateway's `status.addresses`, as Istio's gateway controller does
/// once its Service has a load balancer address.
pub async fn set_gateway_status_address(cluster: &Cluster, name: &str, ip: &str) {
    let status = json!({"status": {"addresses": [{"type": "IPAddress", "value": ip}]}});
    Api::<DynamicObject>::namespaced_with(cluster.client(), NAMESPACE, &gateway_resource())
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap_or_else(|e| panic!("setting the status address of {name} in {}: {e}", cluster.name()));
}

/// istiod of the default install runs ambient (the `ambient` profile's
/// `PILOT_ENABLE_AMBIENT`), with `AMBIENT_ENABLE_MULTI_NETWORK` as given.
/// Requires [`super::install::install_istio`] first.
pub async fn make_istiod_ambient(cluster: &Cluster, multi_network: bool) {
    let patch = json!({"spec": {"template": {"spec": {"containers": [{
        "name": "discovery",
        "env": [
            {"name": "PILOT_ENABLE_AMBIENT", "value": "true"},
            {"name": "AMBIENT_ENABLE_MULTI_NETWORK", "value": if multi_network { "true" } else { "false" }}
        ]
    }]}}}});
    Api::<Deployment>::namespaced(cluster.client(), NAMESPACE)
        .patch("istiod", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap_or_else(|e| panic!("making istiod ambient in {}: {e}", cluster.name()));
}

/// ztunnel's DaemonSet as the chart renders its env: `ISTIO_META_CLUSTER_ID`
/// always (default `Kubernetes`), `NETWORK` when set.
pub async fn install_ztunnel(cluster: &Cluster, cluster_id: Option<&str>, network: Option<&str>) {
    let mut env = vec![json!({"name": "ISTIO_META_CLUSTER_ID", "value": cluster_id.unwrap_or("Kubernetes")})];
    if let Some(network) = network {
        env.push(json!({"name": "NETWORK", "value": network}));
    }
    let daemonset: DaemonSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "ztunnel", "namespace": NAMESPACE},
        "spec": {
            "selector": {"matchLabels": {"app": "ztunnel"}},
            "template": {
                "metadata": {"labels": {"app": "ztunnel"}},
                "spec": {"containers": [{"name": "istio-proxy", "image": "docker.io/istio/ztunnel:1.31.0", "env": env}]}
            }
        }
    }))
    .unwrap();
    Api::<DaemonSet>::namespaced(cluster.client(), NAMESPACE)
        .patch(
            "ztunnel",
            &PatchParams::apply("istio-installer").force(),
            &Patch::Apply(&daemonset),
        )
        .await
        .unwrap_or_else(|e| panic!("installing ztunnel in {}: {e}", cluster.name()));
}

/// The install's mesh config ConfigMap `istio` with `serviceScopeConfigs`
/// (YAML, the list) in its `mesh`, labelled as the chart labels it.
pub async fn set_service_scope(cluster: &Cluster, configs: &str) {
    let configmap: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "istio", "namespace": NAMESPACE,
                     "labels": {"istio.io/rev": "default", "operator.istio.io/component": "Pilot"}},
        "data": {"mesh": format!("trustDomain: cluster.local\nserviceScopeConfigs:\n{configs}")}
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(cluster.client(), NAMESPACE)
        .patch(
            "istio",
            &PatchParams::apply("istio-installer").force(),
            &Patch::Apply(&configmap),
        )
        .await
        .unwrap_or_else(|e| panic!("writing the mesh config in {}: {e}", cluster.name()));
}
