//! What an Istio install tells about the mesh, drawn from the objects it
//! writes: the east-west gateway Service, istiod's Deployment, the injector
//! ConfigMap, a remote install's `istiod` Service and EndpointSlice, and the
//! root-of-trust ConfigMap.
//!
//! Pure functions from Kubernetes objects to [`model`](super::model) facts:
//! they keep only the few values the planner judges, never a whole object.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::model::{EastWestFacts, InstallFacts};
use crate::objects;

/// The gateway Service as istiod reads it: labels, ports and the addresses
/// `pilot/pkg/serviceregistry/kube/conversion.go` takes (LoadBalancer
/// ingress IPs or hostnames, then `spec.externalIPs`).
pub fn east_west(service: &Service) -> EastWestFacts {
    let labels = service.metadata.labels.as_ref();
    let label = |key: &str| labels.and_then(|l| l.get(key).cloned());
    let spec = service.spec.as_ref();
    let service_type = spec.and_then(|s| s.type_.clone());
    let mut addresses = Vec::new();
    if service_type.as_deref() == Some("LoadBalancer") {
        let ingress = service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        for entry in ingress.into_iter().flatten() {
            if let Some(ip) = entry.ip.clone().filter(|ip| !ip.is_empty()) {
                addresses.push(ip);
            } else if let Some(host) = entry.hostname.clone().filter(|h| !h.is_empty()) {
                addresses.push(host);
            }
        }
    }
    addresses.extend(spec.and_then(|s| s.external_ips.clone()).into_iter().flatten());
    EastWestFacts {
        network: label(objects::NETWORK_LABEL),
        port_label: label(objects::GATEWAY_PORT_LABEL),
        ports: spec
            .and_then(|s| s.ports.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|p| u16::try_from(p.port).ok())
            .collect(),
        node_selector: service_type.as_deref() == Some("NodePort")
            && service
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(objects::NODE_SELECTOR_ANNOTATION)),
        service_type,
        addresses,
        network_owners: objects::label_owners(&service.metadata, objects::NETWORK_LABEL),
    }
}

/// The revision an install object belongs to: its `istio.io/rev` label, or
/// the suffix of its name after `base-`; `default` for neither.
fn revision(meta: &kube::core::ObjectMeta, base: &str) -> Option<String> {
    let name = meta.name.as_deref()?;
    let suffix = match name.strip_prefix(base) {
        Some("") => None,
        Some(rest) => Some(rest.strip_prefix('-')?),
        None => return None,
    };
    let label = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(objects::REVISION_LABEL))
        .map(String::as_str);
    Some(label.or(suffix).unwrap_or("default").to_string())
}

/// Istio installs by revision, from istiod Deployments (`app=istiod`), the
/// install's ConfigMaps (`operator.istio.io/component=Pilot`), of which only
/// `istio-sidecar-injector[-<rev>]` counts, and a remote install's
/// selector-less `istiod[-<rev>]` Service among the mesh namespace's
/// `services`, with its EndpointSlices among `slices`. A revision appears
/// when any of them is found: Istio's `remote` profile writes neither istiod
/// nor the injector ConfigMap (`files/profile-remote.yaml` sets
/// `global.omitSidecarInjectorConfigMap`; `templates/deployment.yaml` skips
/// istiod under `istiodRemote.enabled`).
pub fn installs(
    deployments: &[Deployment],
    configmaps: &[ConfigMap],
    services: &[Service],
    slices: &[EndpointSlice],
) -> BTreeMap<String, InstallFacts> {
    let mut out: BTreeMap<String, InstallFacts> = BTreeMap::new();
    for deployment in deployments {
        let Some(rev) = revision(&deployment.metadata, objects::ISTIOD) else {
            continue;
        };
        // The chart sets CLUSTER_ID on the `discovery` container from
        // `global.multiCluster.clusterName`, default `Kubernetes`
        // (istio/istio `manifests/charts/istio-control/istio-discovery/templates/deployment.yaml`).
        let cluster_id = deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .into_iter()
            .flat_map(|p| p.containers.iter())
            .flat_map(|c| c.env.iter().flatten())
            .find(|e| e.name == objects::CLUSTER_ID_ENV)
            .and_then(|e| e.value.clone());
        let install = out.entry(rev).or_default();
        install.istiod = deployment.metadata.name.clone();
        install.cluster_id = cluster_id;
        install.istiod_env = super::gateway_api::istiod_env(deployment);
    }
    for configmap in configmaps {
        let Some(rev) = revision(&configmap.metadata, objects::INJECTOR_CONFIGMAP) else {
            continue;
        };
        let values: serde_json::Value = configmap
            .data
            .as_ref()
            .and_then(|d| d.get("values"))
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or_default();
        let global = &values["global"];
        let text = |v: &serde_json::Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
        let install = out.entry(rev).or_default();
        install.injector = configmap.metadata.name.clone();
        // What the injection template puts into every sidecar: ISTIO_META_CLUSTER_ID
        // and ISTIO_META_NETWORK (istio/istio `pkg/kube/inject/inject.go`,
        // `extractClusterAndNetwork`, and `files/injection-template.yaml`).
        install.injected_cluster_id = text(&global["multiCluster"]["clusterName"]);
        install.injected_network = text(&global["network"]);
        install.mesh_id = text(&global["meshID"]);
        // A remote install's `istiod` Service and EndpointSlices point at it
        // (`manifests/charts/istio-control/istio-discovery/templates/remote-istiod-service.yaml`).
        install.remote_pilot_address = text(&global["remotePilotAddress"]);
    }
    // Helm's values as rendered, in `values[-<rev>]` (labelled like the
    // injector ConfigMap; `templates/configmap-values.yaml`): the one object
    // of a remote install without `remotePilotAddress` in the mesh
    // namespace, as it then writes no `istiod` Service either.
    for configmap in configmaps {
        let Some(rev) = revision(&configmap.metadata, objects::VALUES_CONFIGMAP) else {
            continue;
        };
        let values: serde_json::Value = configmap
            .data
            .as_ref()
            .and_then(|d| d.get("merged-values"))
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or_default();
        if values["istiodRemote"]["enabled"] == serde_json::Value::Bool(true) {
            out.entry(rev).or_default().remote_values = configmap.metadata.name.clone();
        }
    }
    for service in services {
        let Some((rev, address)) = remote_istiod(service, slices) else {
            continue;
        };
        let install = out.entry(rev).or_default();
        install.remote_istiod = service.metadata.name.clone();
        // What the webhook and sidecars reach is what the Service points at,
        // whatever the injector's values say (an older install's only record).
        if address.is_some() {
            install.remote_pilot_address = address;
        }
    }
    // The mesh config ConfigMap `istio[-<rev>]` of an install found above:
    // its `meshNetworks` (istiod's --meshNetworks file, from
    // `values.global.meshNetworks`; manifests/charts/istio-control/istio-discovery/templates/configmap.yaml).
    for configmap in configmaps {
        let injector = revision(&configmap.metadata, objects::INJECTOR_CONFIGMAP).is_some();
        let Some(rev) = revision(&configmap.metadata, objects::MESH_CONFIGMAP).filter(|_| !injector) else {
            continue;
        };
        if let (Some(install), Some(networks)) = (
            out.get_mut(&rev),
            configmap.data.as_ref().and_then(|d| d.get("meshNetworks")),
        ) {
            install.mesh_network_gateways = mesh_network_gateways(networks);
        }
        if let (Some(install), Some(mesh)) = (out.get_mut(&rev), configmap.data.as_ref().and_then(|d| d.get("mesh"))) {
            install.service_scope_configs = super::gateway_api::service_scope_configs(mesh);
        }
    }
    out
}

/// A remote install's `istiod[-<rev>]` Service: labelled
/// `app.kubernetes.io/name=istiod` and without a selector (a primary's
/// istiod Service selects its pods), with its revision and the address it
/// points at: its `externalName` when `remotePilotAddress` is a hostname,
/// else the first address of its EndpointSlice (istio/istio
/// `manifests/charts/istio-control/istio-discovery/templates/remote-istiod-service.yaml`,
/// `remote-istiod-endpointslices.yaml`).
fn remote_istiod(service: &Service, slices: &[EndpointSlice]) -> Option<(String, Option<String>)> {
    let meta = &service.metadata;
    let (key, value) = objects::ISTIOD_NAME_LABEL;
    if meta.labels.as_ref().and_then(|l| l.get(key)).map(String::as_str) != Some(value) {
        return None;
    }
    let spec = service.spec.as_ref();
    if spec.and_then(|s| s.selector.as_ref()).is_some_and(|s| !s.is_empty()) {
        return None;
    }
    let rev = revision(meta, objects::ISTIOD)?;
    let name = meta.name.as_deref()?;
    let address = if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
        spec.and_then(|s| s.external_name.clone())
    } else {
        slices
            .iter()
            .filter(|slice| {
                let labels = slice.metadata.labels.as_ref();
                labels
                    .and_then(|l| l.get(objects::SLICE_SERVICE_LABEL))
                    .map(String::as_str)
                    == Some(name)
            })
            .flat_map(|slice| slice.endpoints.iter())
            .flat_map(|endpoint| endpoint.addresses.iter())
            .next()
            .cloned()
    };
    Some((rev, address.filter(|a| !a.is_empty())))
}

/// The networks of a `meshNetworks` document that declare gateways, sorted.
/// istiod takes those gateways beside the labelled Services
/// (pilot/pkg/model/network.go, `NetworkManager.reloadGateways`).
fn mesh_network_gateways(yaml: &str) -> Vec<String> {
    let doc: serde_json::Value = serde_yaml_ng::from_str(yaml).unwrap_or_default();
    let mut names: Vec<String> = doc["networks"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, n)| n["gateways"].as_array().is_some_and(|g| !g.is_empty()))
        .map(|(name, _)| name.clone())
        .collect();
    names.sort();
    names
}

/// SHA-256 fingerprints of the certificates in `istio-ca-root-cert`, sorted
/// and without repeats. Blocks that are not certificates are skipped.
pub fn root_fingerprints(configmap: &ConfigMap) -> Vec<String> {
    let pem = configmap
        .data
        .as_ref()
        .and_then(|d| d.get(objects::ROOT_CERT_KEY))
        .map(String::as_str)
        .unwrap_or_default();
    let mut prints: Vec<String> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .map(|der| crate::objects::sha256_hex(der.as_ref()))
        .collect();
    prints.sort();
    prints.dedup();
    prints
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_networks_with_gateways_are_found() {
        let yaml = "networks:\n  n2:\n    endpoints:\n    - fromRegistry: b\n    gateways:\n    - address: 192.0.2.7\n      port: 15443\n  n1:\n    endpoints:\n    - fromRegistry: a\n    gateways: []\n";
        assert_eq!(mesh_network_gateways(yaml), ["n2"]);
        assert!(mesh_network_gateways("networks: {}").is_empty());
        assert!(mesh_network_gateways("not: [valid").is_empty());
    }
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, LoadBalancerStatus, ServicePort, ServiceSpec, ServiceStatus,
    };
    use kube::core::ObjectMeta;

    fn meta(name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn a_pending_load_balancer_has_no_address_and_external_ips_count() {
        let mut service = Service {
            metadata: meta(
                "gw",
                &[(objects::NETWORK_LABEL, "n1"), (objects::GATEWAY_PORT_LABEL, "15443")],
            ),
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                ports: Some(vec![ServicePort {
                    port: 15443,
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        };
        let facts = east_west(&service);
        assert_eq!(facts.network.as_deref(), Some("n1"));
        assert_eq!(facts.ports, [15443]);
        assert!(facts.addresses.is_empty());
        service.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![
                    LoadBalancerIngress {
                        ip: Some("192.0.2.1".into()),
                        ..LoadBalancerIngress::default()
                    },
                    LoadBalancerIngress {
                        hostname: Some("gw.example.com".into()),
                        ..LoadBalancerIngress::default()
                    },
                ]),
            }),
            ..ServiceStatus::default()
        });
        service.spec.as_mut().unwrap().external_ips = Some(vec!["198.51.100.7".into()]);
        assert_eq!(
            east_west(&service).addresses,
            ["192.0.2.1", "gw.example.com", "198.51.100.7"]
        );
    }

    #[test]
    fn revisioned_installs_are_found_and_other_configmaps_ignored() {
        let injector = |name: &str, rev: &str, values: &str| ConfigMap {
            metadata: meta(name, &[(objects::REVISION_LABEL, rev)]),
            data: Some(BTreeMap::from([("values".to_string(), values.to_string())])),
            ..ConfigMap::default()
        };
        let configmaps = [
            injector(
                "istio-sidecar-injector",
                "default",
                r#"{"global":{"meshID":"m","network":"n","multiCluster":{"clusterName":"a"}}}"#,
            ),
            injector("istio-sidecar-injector-canary", "canary", r#"{"global":{}}"#),
            injector("istio", "default", "{}"),
            injector("istio-sidecar-injectorx", "x", "{}"),
        ];
        let installs = installs(&[], &configmaps, &[], &[]);
        assert_eq!(installs.keys().collect::<Vec<_>>(), ["canary", "default"]);
        let default = &installs["default"];
        assert_eq!(default.injected_cluster_id.as_deref(), Some("a"));
        assert_eq!(default.injected_network.as_deref(), Some("n"));
        assert_eq!(default.mesh_id.as_deref(), Some("m"));
        assert_eq!(installs["canary"].injected_cluster_id, None);
    }

    /// Istio's remote profile: no istiod, no injector ConfigMap; a
    /// selector-less `istiod[-<rev>]` Service and, for an IP, its
    /// EndpointSlice. A primary's istiod Service (with a selector) and the
    /// slices Kubernetes makes for it are not a remote install.
    #[test]
    fn a_remote_profile_install_is_found_by_its_istiod_service() {
        use k8s_openapi::api::discovery::v1::Endpoint;
        let service = |name: &str, rev: &str, spec: ServiceSpec| Service {
            metadata: meta(
                name,
                &[(objects::REVISION_LABEL, rev), ("app.kubernetes.io/name", "istiod")],
            ),
            spec: Some(spec),
            ..Service::default()
        };
        let slice = |name: &str, service: &str, ip: &str| EndpointSlice {
            metadata: meta(
                name,
                &[
                    (objects::SLICE_SERVICE_LABEL, service),
                    ("app.kubernetes.io/name", "istiod"),
                ],
            ),
            address_type: "IPv4".into(),
            endpoints: vec![Endpoint {
                addresses: vec![ip.into()],
                ..Endpoint::default()
            }],
            ..EndpointSlice::default()
        };
        let services = [
            service("istiod", "default", ServiceSpec::default()),
            service(
                "istiod-canary",
                "canary",
                ServiceSpec {
                    type_: Some("ExternalName".into()),
                    external_name: Some("istiod.example.com".into()),
                    ..ServiceSpec::default()
                },
            ),
            service(
                "istiod-primary",
                "primary",
                ServiceSpec {
                    selector: Some(BTreeMap::from([("app".into(), "istiod".into())])),
                    ..ServiceSpec::default()
                },
            ),
            Service {
                metadata: meta("istiod-unlabelled", &[]),
                ..Service::default()
            },
        ];
        let slices = [
            slice("istiod-primary-x7k2p", "istiod-primary", "10.0.0.9"),
            slice("istiod", "istiod", "192.0.2.10"),
        ];
        let found = installs(&[], &[], &services, &slices);
        assert_eq!(found.keys().collect::<Vec<_>>(), ["canary", "default"]);
        assert_eq!(found["default"].remote_istiod.as_deref(), Some("istiod"));
        assert_eq!(found["default"].remote_pilot_address.as_deref(), Some("192.0.2.10"));
        assert_eq!(found["default"].istiod, None);
        assert_eq!(
            found["canary"].remote_pilot_address.as_deref(),
            Some("istiod.example.com")
        );
        // Without its EndpointSlice, the Service shows the install, with no address.
        let found = installs(&[], &[], &services[..1], &slices[..1]);
        assert_eq!(found["default"].remote_istiod.as_deref(), Some("istiod"));
        assert_eq!(found["default"].remote_pilot_address, None);

        // Installed without remotePilotAddress: only Helm's values record shows it.
        let values = |name: &str, rev: &str, remote: bool| ConfigMap {
            metadata: meta(name, &[(objects::REVISION_LABEL, rev)]),
            data: Some(BTreeMap::from([(
                "merged-values".to_string(),
                format!(r#"{{"istiodRemote":{{"enabled":{remote}}},"global":{{}}}}"#),
            )])),
            ..ConfigMap::default()
        };
        let found = installs(
            &[],
            &[values("values", "default", true), values("values-b", "b", false)],
            &[],
            &[],
        );
        assert_eq!(found.keys().collect::<Vec<_>>(), ["default"]);
        assert_eq!(found["default"].remote_values.as_deref(), Some("values"));
        assert_eq!(found["default"].remote_pilot_address, None);
    }

    #[test]
    fn root_fingerprints_are_of_each_certificate() {
        let block = |bytes: &[u8]| {
            use base64::Engine;
            format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            )
        };
        let configmap = ConfigMap {
            data: Some(BTreeMap::from([(
                objects::ROOT_CERT_KEY.to_string(),
                format!("{}{}{}", block(b"two"), block(b"one"), block(b"two")),
            )])),
            ..ConfigMap::default()
        };
        let mut expected = vec![crate::objects::sha256_hex(b"one"), crate::objects::sha256_hex(b"two")];
        expected.sort();
        assert_eq!(root_fingerprints(&configmap), expected);
    }
}
