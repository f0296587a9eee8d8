//! The objects an Istio install writes into a cluster's mesh namespace, as
//! Istio writes them, for tests that judge an install (issue 13): istiod's
//! Deployment with its `CLUSTER_ID` and its Service, the `istio-sidecar-injector`
//! ConfigMap with its `values`, the `values` ConfigMap of Helm's values, the
//! `istio-ca-root-cert` ConfigMap istiod publishes, and the east-west gateway
//! Service whose address a load balancer controller sets through the status
//! subresource. A remote install is Istio's `remote` profile: no istiod, no
//! injector ConfigMap, a selector-less `istiod` Service and, for an IP pilot
//! address, its EndpointSlice. Labels and names follow Istio's charts
//! (istio/istio `manifests/charts/istio-control/istio-discovery/templates/`,
//! `files/profile-remote.yaml`).
//!
//! There is no data plane: nothing runs istiod, the objects only say what an
//! install would run with.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, PodSpec, PodTemplateSpec, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;

use super::controlplane::Cluster;
use super::mesh::{MESH, NAMESPACE};

/// The root of trust every test install shares (a self-signed test CA; only
/// its certificate is kept), and one of another mesh.
pub const MESH_ROOT: &str = include_str!("../fixtures/roots/mesh-root.pem");
pub const OTHER_ROOT: &str = include_str!("../fixtures/roots/other-root.pem");

/// What one Istio install runs with. [`Install::correct`] is what meshform
/// expects for the cluster; tests change one field to get one finding.
#[derive(Debug, Clone)]
pub struct Install {
    /// `values.revision`; empty for the default install.
    pub revision: String,
    /// `values.global.multiCluster.clusterName`; `None` leaves the chart's
    /// default, which is `Kubernetes`.
    pub cluster_id: Option<String>,
    /// `values.global.network`.
    pub network: Option<String>,
    /// `values.global.meshID`.
    pub mesh_id: Option<String>,
    /// `root-cert.pem` of `istio-ca-root-cert`.
    pub roots: String,
    /// Istio's `remote` profile: no istiod Deployment, sidecars find istiod
    /// at `values.global.remotePilotAddress` (when set), through the
    /// `istiod` Service it writes (`templates/remote-istiod-service.yaml`,
    /// `remote-istiod-endpointslices.yaml`).
    pub remote: bool,
    pub remote_pilot_address: Option<String>,
    /// `values.global.omitSidecarInjectorConfigMap`, which the remote profile
    /// sets: no `istio-sidecar-injector` ConfigMap. Unset on a remote, the
    /// shape of an install that writes one beside its `istiod` Service.
    pub omit_injector: bool,
    /// `values.global.meshNetworks` (YAML, the map of networks): written into
    /// the `istio` ConfigMap's `meshNetworks` as `networks:`. The ConfigMap
    /// is written only then (istiod also watches a remote's).
    pub mesh_networks: Option<String>,
}

impl Install {
    /// An install for the cluster of mesh name `name` on `network`, in the tests' mesh.
    pub fn correct(name: &str, network: &str) -> Install {
        Install {
            revision: String::new(),
            cluster_id: Some(name.to_string()),
            network: Some(network.to_string()),
            mesh_id: Some(MESH.to_string()),
            roots: MESH_ROOT.to_string(),
            remote: false,
            remote_pilot_address: None,
            omit_injector: false,
            mesh_networks: None,
        }
    }

    /// A remote's install, its sidecars sent to istiod at `pilot`.
    pub fn remote(name: &str, network: &str, pilot: Option<&str>) -> Install {
        Install {
            remote: true,
            remote_pilot_address: pilot.map(str::to_string),
            omit_injector: true,
            ..Install::correct(name, network)
        }
    }

    fn suffix(&self) -> String {
        if self.revision.is_empty() {
            String::new()
        } else {
            format!("-{}", self.revision)
        }
    }

    fn labels(&self, app: Option<&str>) -> BTreeMap<String, String> {
        let rev = if self.revision.is_empty() {
            "default"
        } else {
            &self.revision
        };
        let mut labels = BTreeMap::from([
            ("istio.io/rev".to_string(), rev.to_string()),
            ("operator.istio.io/component".to_string(), "Pilot".to_string()),
            ("app.kubernetes.io/name".to_string(), "istiod".to_string()),
            ("release".to_string(), "istiod".to_string()),
        ]);
        if let Some(app) = app {
            labels.insert("app".to_string(), app.to_string());
        }
        labels
    }
}

/// Writes (or rewrites) the install's objects into `cluster`, by server-side
/// apply as an installer would.
pub async fn install_istio(cluster: &Cluster, install: &Install) {
    let params = PatchParams::apply("istio-installer").force();
    let name = format!("istiod{}", install.suffix());
    let mut env = vec![EnvVar {
        name: "REVISION".into(),
        value: Some(if install.revision.is_empty() {
            "default".into()
        } else {
            install.revision.clone()
        }),
        ..EnvVar::default()
    }];
    env.push(EnvVar {
        name: "CLUSTER_ID".into(),
        value: Some(install.cluster_id.clone().unwrap_or_else(|| "Kubernetes".into())),
        ..EnvVar::default()
    });
    let selector = BTreeMap::from([("app".to_string(), "istiod".to_string())]);
    let deployment = Deployment {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(NAMESPACE.into()),
            labels: Some(install.labels(Some("istiod"))),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            // Nothing runs it: the test plane has no scheduler or kubelet.
            replicas: Some(0),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(selector),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "discovery".into(),
                        image: Some("docker.io/istio/pilot:1.31.0".into()),
                        env: Some(env),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };
    let mut global = json!({ "multiCluster": { "enabled": true } });
    if let Some(id) = &install.cluster_id {
        global["multiCluster"]["clusterName"] = id.clone().into();
    }
    if let Some(network) = &install.network {
        global["network"] = network.clone().into();
    }
    if let Some(mesh_id) = &install.mesh_id {
        global["meshID"] = mesh_id.clone().into();
    }
    if let Some(pilot) = &install.remote_pilot_address {
        global["remotePilotAddress"] = pilot.clone().into();
    }
    let values = json!({ "global": global, "revision": install.revision, "sidecarInjectorWebhook": {} });
    // Helm's values as rendered, kept for tooling (`templates/configmap-values.yaml`).
    let mut merged = values.clone();
    merged["istiodRemote"] = json!({ "enabled": install.remote });
    let values_record = ConfigMap {
        metadata: ObjectMeta {
            name: Some(format!("values{}", install.suffix())),
            namespace: Some(NAMESPACE.into()),
            labels: Some(install.labels(None)),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([
            ("original-values".to_string(), "{}".to_string()),
            (
                "merged-values".to_string(),
                serde_json::to_string_pretty(&merged).unwrap(),
            ),
        ])),
        ..ConfigMap::default()
    };
    let injector = ConfigMap {
        metadata: ObjectMeta {
            name: Some(format!("istio-sidecar-injector{}", install.suffix())),
            namespace: Some(NAMESPACE.into()),
            labels: Some(install.labels(None)),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([
            ("values".to_string(), serde_json::to_string_pretty(&values).unwrap()),
            (
                "config".to_string(),
                "defaultTemplates: [sidecar]\npolicy: enabled\n".to_string(),
            ),
        ])),
        ..ConfigMap::default()
    };
    // istiod's namespace controller writes this, labelled `istio.io/config=true`.
    let roots = ConfigMap {
        metadata: ObjectMeta {
            name: Some("istio-ca-root-cert".into()),
            namespace: Some(NAMESPACE.into()),
            labels: Some(BTreeMap::from([("istio.io/config".to_string(), "true".to_string())])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("root-cert.pem".to_string(), install.roots.clone())])),
        ..ConfigMap::default()
    };
    // The chart's mesh config ConfigMap, labelled like the injector's
    // (manifests/charts/istio-control/istio-discovery/templates/configmap.yaml).
    let mesh_config = install.mesh_networks.as_ref().map(|networks| ConfigMap {
        metadata: ObjectMeta {
            name: Some(format!("istio{}", install.suffix())),
            namespace: Some(NAMESPACE.into()),
            labels: Some(install.labels(None)),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([
            ("mesh".to_string(), "trustDomain: cluster.local\n".to_string()),
            ("meshNetworks".to_string(), format!("networks:\n{networks}")),
        ])),
        ..ConfigMap::default()
    });
    ensure_namespace(cluster).await;
    let what = |e: kube::Error| -> ! { panic!("installing Istio objects in {}: {e}", cluster.name()) };
    if !install.remote {
        Api::<Deployment>::namespaced(cluster.client(), NAMESPACE)
            .patch(&name, &params, &Patch::Apply(&deployment))
            .await
            .unwrap_or_else(|e| what(e));
    }
    write_istiod_service(cluster, install, &name, &params).await;
    let injector = (!install.omit_injector).then_some(&injector);
    let configmaps = Api::<ConfigMap>::namespaced(cluster.client(), NAMESPACE);
    for configmap in [injector, Some(&values_record), Some(&roots), mesh_config.as_ref()]
        .into_iter()
        .flatten()
    {
        configmaps
            .patch(
                configmap.metadata.name.as_deref().unwrap(),
                &params,
                &Patch::Apply(configmap),
            )
            .await
            .unwrap_or_else(|e| what(e));
    }
}

/// The `istiod[-<rev>]` Service: a primary's selects istiod's pods
/// (`templates/service.yaml`); a remote's has no selector and points at
/// `remotePilotAddress`: an ExternalName for a hostname, else an
/// EndpointSlice of its name holding the IP
/// (`templates/remote-istiod-service.yaml`, `remote-istiod-endpointslices.yaml`).
/// What an install no longer renders is deleted, as `helm upgrade` does.
async fn write_istiod_service(cluster: &Cluster, install: &Install, name: &str, params: &PatchParams) {
    let services = Api::<Service>::namespaced(cluster.client(), NAMESPACE);
    let slices = Api::<EndpointSlice>::namespaced(cluster.client(), NAMESPACE);
    let pilot = install.remote_pilot_address.as_deref().filter(|_| install.remote);
    let ip = pilot.and_then(|p| p.parse::<std::net::IpAddr>().ok());
    let mut labels = install.labels(None);
    labels.insert("app.kubernetes.io/part-of".into(), "istio".into());
    labels.insert("app.kubernetes.io/managed-by".into(), "Helm".into());
    let webhook = json!({ "port": 443, "targetPort": 15017, "name": "tcp-webhook", "protocol": "TCP" });
    let xds = json!({ "port": 15012, "name": "tcp-istiod", "protocol": "TCP" });
    let service = match (install.remote, pilot) {
        (false, _) => Some(json!({
            "type": "ClusterIP",
            "selector": { "app": "istiod", "istio.io/rev": labels["istio.io/rev"] },
            "ports": [xds, webhook],
        })),
        (true, None) => None,
        (true, Some(_)) if ip.is_some() => Some(json!({ "type": "ClusterIP", "ports": [xds, webhook] })),
        (true, Some(host)) => Some(json!({ "type": "ExternalName", "externalName": host, "ports": [xds, webhook] })),
    };
    let what = |e: kube::Error| -> ! { panic!("writing the istiod Service of {}: {e}", cluster.name()) };
    match service {
        Some(spec) => {
            let body = json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": { "name": name, "namespace": NAMESPACE, "labels": labels },
                "spec": spec,
            });
            services
                .patch(name, params, &Patch::Apply(&body))
                .await
                .unwrap_or_else(|e| what(e));
        }
        None => gone(services.delete(name, &DeleteParams::default()).await).unwrap_or_else(|e| what(e)),
    }
    match ip {
        Some(ip) => {
            let mut labels = labels.clone();
            labels.remove("istio.io/rev");
            labels.insert("kubernetes.io/service-name".into(), name.to_string());
            labels.insert("endpointslice.kubernetes.io/managed-by".into(), "Helm".into());
            let body = json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": { "name": name, "namespace": NAMESPACE, "labels": labels },
                "addressType": if ip.is_ipv4() { "IPv4" } else { "IPv6" },
                "endpoints": [{ "addresses": [ip.to_string()] }],
                "ports": [
                    { "port": 15012, "name": "tcp-istiod", "protocol": "TCP" },
                    { "port": 15017, "name": "tcp-webhook", "protocol": "TCP" },
                ],
            });
            slices
                .patch(name, params, &Patch::Apply(&body))
                .await
                .unwrap_or_else(|e| what(e));
        }
        None => gone(slices.delete(name, &DeleteParams::default()).await).unwrap_or_else(|e| what(e)),
    }
}

/// A delete's result, an object already absent counting as deleted.
fn gone<T>(result: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Istio's installer creates the mesh namespace (unlabelled) before anything in it.
async fn ensure_namespace(cluster: &Cluster) {
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(cluster.client());
    let namespace = k8s_openapi::api::core::v1::Namespace {
        metadata: ObjectMeta {
            name: Some(NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        ..Default::default()
    };
    match namespaces.create(&PostParams::default(), &namespace).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => panic!("creating {NAMESPACE} in {}: {e}", cluster.name()),
    }
}

/// Sets the east-west gateway Service's load balancer address, as a cloud's
/// load balancer controller does: through the status subresource.
pub async fn set_gateway_address(cluster: &Cluster, service: &str, ip: &str) {
    let status = json!({ "status": { "loadBalancer": { "ingress": [{ "ip": ip }] } } });
    Api::<Service>::namespaced(cluster.client(), NAMESPACE)
        .patch_status(service, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap_or_else(|e| panic!("setting the address of {service} in {}: {e}", cluster.name()));
}
