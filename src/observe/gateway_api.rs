//! What the Gateway API Gateways of the mesh namespace and ztunnel's
//! DaemonSet tell about each network's gateway and the ambient data plane.
//!
//! Pure functions from Kubernetes objects to [`model`](super::model) facts,
//! keeping only what istiod's network registries read; they judge nothing.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use kube::api::DynamicObject;
use serde_json::Value;

use super::model::{K8sGatewayFacts, ListenerFacts, ObjectFacts, ZtunnelFacts};
use crate::objects;

/// The addresses istiod takes of a Gateway's `spec.addresses` or
/// `status.addresses`: of type `IPAddress` or `Hostname` only, and none
/// without a type (both registries skip them:
/// `pilot/pkg/serviceregistry/kube/controller/network.go`,
/// `pilot/pkg/serviceregistry/ambient/networks.go`).
fn addresses(list: &Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter(|a| matches!(a["type"].as_str(), Some("IPAddress" | "Hostname")))
        .filter_map(|a| a["value"].as_str().filter(|v| !v.is_empty()).map(str::to_string))
        .collect()
}

/// A Gateway API Gateway as istiod reads it; `object` is its identity and ownership.
pub fn gateway(gateway: &DynamicObject, object: ObjectFacts) -> K8sGatewayFacts {
    let labels = gateway.metadata.labels.as_ref();
    let label = |key: &str| labels.and_then(|l| l.get(key).cloned());
    let spec = &gateway.data["spec"];
    let listeners = spec["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            let tls = l.get("tls").filter(|t| t.is_object());
            ListenerFacts {
                name: l["name"].as_str().unwrap_or_default().to_string(),
                port: l["port"].as_u64().and_then(|p| u16::try_from(p).ok()).unwrap_or(0),
                protocol: l["protocol"].as_str().unwrap_or_default().to_string(),
                // The CRD defaults `tls.mode` to Terminate.
                tls_mode: tls.map(|t| t["mode"].as_str().unwrap_or("Terminate").to_string()),
                listener_mode: tls
                    .and_then(|t| t["options"][objects::LISTENER_MODE_OPTION].as_str())
                    .map(str::to_string),
            }
        })
        .collect();
    K8sGatewayFacts {
        object,
        class: spec["gatewayClassName"].as_str().unwrap_or_default().to_string(),
        network: label(objects::NETWORK_LABEL),
        port_label: label(objects::GATEWAY_PORT_LABEL),
        listeners,
        spec_addresses: addresses(&spec["addresses"]),
        status_addresses: addresses(&gateway.data["status"]["addresses"]),
        network_owners: objects::label_owners(&gateway.metadata, objects::NETWORK_LABEL),
    }
}

/// ztunnel's cluster id and network, from the env of its `istio-proxy`
/// container (the chart's only one; any container setting them counts).
pub fn ztunnel(daemonset: &DaemonSet) -> ZtunnelFacts {
    let env: Vec<_> = daemonset
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .into_iter()
        .flat_map(|p| p.containers.iter())
        .flat_map(|c| c.env.iter().flatten())
        .collect();
    let value = |key: &str| env.iter().find(|e| e.name == key).and_then(|e| e.value.clone());
    ZtunnelFacts {
        cluster_id: value(objects::ZTUNNEL_CLUSTER_ID_ENV),
        network: value(objects::ZTUNNEL_NETWORK_ENV),
    }
}

/// The variables of istiod's env meshform keeps ([`objects::ISTIOD_ENV_KEPT`]),
/// literal values only (a `valueFrom` is not resolved).
pub fn istiod_env(deployment: &Deployment) -> BTreeMap<String, String> {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .into_iter()
        .flat_map(|p| p.containers.iter())
        .flat_map(|c| c.env.iter().flatten())
        .filter(|e| objects::ISTIOD_ENV_KEPT.contains(&e.name.as_str()))
        .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
        .collect()
}

/// `serviceScopeConfigs` of a mesh config document (YAML), as compact JSON
/// with sorted keys, so that equal settings compare equal; none when unset.
pub fn service_scope_configs(mesh: &str) -> Option<String> {
    let doc: Value = serde_yaml_ng::from_str(mesh).ok()?;
    let configs = doc.get("serviceScopeConfigs").filter(|c| !c.is_null())?;
    serde_json::to_string(configs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object() -> ObjectFacts {
        ObjectFacts {
            uid: "u".into(),
            resource_version: "1".into(),
            managed: false,
            spec_hash: None,
            content_sha256: None,
            content_owners: Vec::new(),
        }
    }

    fn dynamic(value: Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    /// `samples/multicluster/gen-eastwest-gateway.sh --ambient --network n1`, with an address.
    #[test]
    fn the_ambient_sample_is_an_east_west_gateway_at_its_status_address() {
        let gw = gateway(
            &dynamic(json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                "metadata": {"name": "istio-eastwestgateway", "namespace": "istio-system",
                             "labels": {"topology.istio.io/network": "n1"}},
                "spec": {"gatewayClassName": "istio-east-west", "listeners": [
                    {"name": "mesh", "port": 15008, "protocol": "HBONE",
                     "tls": {"mode": "Terminate", "options": {"gateway.istio.io/tls-terminate-mode": "ISTIO_MUTUAL"}}}]},
                "status": {"addresses": [{"type": "IPAddress", "value": "192.0.2.9"},
                                         {"type": "NamedAddress", "value": "x"}, {"value": "untyped"}]}
            })),
            object(),
        );
        assert!(gw.is_ambient_east_west());
        assert_eq!(gw.status_addresses, ["192.0.2.9"]);
        assert!(gw.spec_addresses.is_empty());
        // The sidecar registry reads spec addresses: none here.
        assert!(gw.sidecar_gateways().is_empty());
    }

    #[test]
    fn a_sidecar_gateway_counts_its_auto_passthrough_listeners_at_spec_addresses() {
        let gw = gateway(
            &dynamic(json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                "metadata": {"name": "ew", "labels": {"topology.istio.io/network": "n2"}},
                "spec": {"gatewayClassName": "istio", "addresses": [{"type": "Hostname", "value": "ew.example.com"}],
                         "listeners": [
                    {"name": "tls", "port": 15443, "protocol": "TLS", "tls": {"mode": "Passthrough"}},
                    {"name": "other", "port": 16000, "protocol": "TLS",
                     "tls": {"mode": "Passthrough", "options": {"gateway.istio.io/listener-protocol": "auto-passthrough"}}},
                    {"name": "plain", "port": 80, "protocol": "HTTP"}]}
            })),
            object(),
        );
        assert_eq!(gw.sidecar_gateways(), ["ew.example.com:15443", "ew.example.com:16000"]);
        assert!(!gw.is_ambient_east_west());
        let mut unlabelled = gw.clone();
        unlabelled.network = None;
        assert!(unlabelled.sidecar_gateways().is_empty());
    }

    #[test]
    fn service_scope_configs_are_kept_comparable() {
        let a =
            "defaultConfig: {}\nserviceScopeConfigs:\n- servicesSelector:\n    matchLabels: {x: y}\n  scope: GLOBAL\n";
        let b = "serviceScopeConfigs: [{scope: GLOBAL, servicesSelector: {matchLabels: {x: y}}}]";
        assert_eq!(service_scope_configs(a), service_scope_configs(b));
        assert!(service_scope_configs(a).unwrap().contains("GLOBAL"));
        assert_eq!(service_scope_configs("defaultConfig: {}"), None);
    }

    #[test]
    fn ztunnel_env_is_read_and_the_cluster_id_defaults() {
        let ds: DaemonSet = serde_json::from_value(json!({
            "metadata": {"name": "ztunnel"},
            "spec": {"selector": {}, "template": {"spec": {"containers": [
                {"name": "istio-proxy", "env": [{"name": "NETWORK", "value": "n1"}]}]}}}
        }))
        .unwrap();
        let facts = ztunnel(&ds);
        assert_eq!(facts.network.as_deref(), Some("n1"));
        assert_eq!(facts.effective_cluster_id(), "Kubernetes");
    }
}
