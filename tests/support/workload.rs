//! A meshed workload in a cluster of the test control plane, written as
//! Kubernetes' controllers and Istio's sidecar injector would leave it: the
//! namespace labelled for injection, a Service, running Pods with an
//! injected sidecar's labels and a pod IP, and the EndpointSlice the
//! endpoint-slice controller keeps for them. The plane runs no kubelet,
//! scheduler or endpoint-slice controller, so this module writes what those
//! would: the Pods' status through the status subresource and the slice by
//! hand. istiod reads them as it reads any cluster's.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::{Container, Namespace, Pod, PodSpec, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;

use super::controlplane::Cluster;
use super::mesh::eventually;

/// The namespace and Service every test workload uses.
pub const NAMESPACE: &str = "sample";
pub const SERVICE: &str = "echo";
/// The Service's port and the pods' port behind it.
pub const SERVICE_PORT: i32 = 80;
pub const TARGET_PORT: i32 = 8080;
/// `HOST:PORT` of the Service, as proxies ask for it.
pub const ECHO: &str = "echo.sample.svc.cluster.local:80";

fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

/// Writes the `echo` workload into `cluster`: the namespace, the Service and
/// one ready Pod per IP in `pod_ips`, with their EndpointSlice.
pub async fn deploy_echo(cluster: &Cluster, pod_ips: &[String]) {
    let what = |step: &str, e: kube::Error| -> ! { panic!("{step} in {}: {e}", cluster.name()) };
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(NAMESPACE.into()),
            labels: labels(&[("istio-injection", "enabled")]),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(cluster.client())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap_or_else(|e| what("creating namespace sample", e));
    let service = Service {
        metadata: ObjectMeta {
            name: Some(SERVICE.into()),
            labels: labels(&[("app", SERVICE)]),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            selector: labels(&[("app", SERVICE)]),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: SERVICE_PORT,
                target_port: Some(IntOrString::Int(TARGET_PORT)),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    Api::<Service>::namespaced(cluster.client(), NAMESPACE)
        .create(&PostParams::default(), &service)
        .await
        .unwrap_or_else(|e| what("creating Service echo", e));
    let pods: Api<Pod> = Api::namespaced(cluster.client(), NAMESPACE);
    let mut endpoints = Vec::new();
    for (i, ip) in pod_ips.iter().enumerate() {
        let name = format!("echo-{}-{i}", cluster.name());
        let pod = injected_pod(&name);
        // The service-account controller makes `default` in a new namespace
        // shortly after it appears; admission refuses pods until then.
        eventually(
            &format!("pod {name} admitted in {}", cluster.name()),
            Duration::from_secs(30),
            async || pods.create(&PostParams::default(), &pod).await.ok(),
        )
        .await;
        // What the kubelet reports for a running pod whose containers are ready.
        let status = json!({ "status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{ "ip": ip }],
            "hostIP": "192.0.2.250",
            "conditions": [
                { "type": "Initialized", "status": "True" },
                { "type": "ContainersReady", "status": "True" },
                { "type": "Ready", "status": "True" },
            ],
        } });
        pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap_or_else(|e| what("setting the pod's status", e));
        endpoints.push(Endpoint {
            addresses: vec![ip.clone()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                name: Some(name),
                namespace: Some(NAMESPACE.into()),
                ..ObjectReference::default()
            }),
            ..Endpoint::default()
        });
    }
    let slice = EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("{SERVICE}-slice")),
            labels: labels(&[
                ("kubernetes.io/service-name", SERVICE),
                (
                    "endpointslice.kubernetes.io/managed-by",
                    "endpointslice-controller.k8s.io",
                ),
            ]),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints,
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(TARGET_PORT),
            protocol: Some("TCP".into()),
            ..EndpointPort::default()
        }]),
    };
    Api::<EndpointSlice>::namespaced(cluster.client(), NAMESPACE)
        .create(&PostParams::default(), &slice)
        .await
        .unwrap_or_else(|e| what("creating the EndpointSlice", e));
}

/// A pod as Istio's injector leaves it with the default injection path
/// (`/inject`): the labels of `files/injection-template.yaml` and the status
/// annotation, no `topology.istio.io/network` label (the injector sets that
/// only from a webhook path that names the network, as remote installs'
/// `/inject/cluster/<id>/net/<network>` does; `pkg/kube/inject/webhook.go`).
/// istiod then takes the pod's network from its namespace's label.
fn injected_pod(name: &str) -> Pod {
    let container = |name: &str, image: &str| Container {
        name: name.into(),
        image: Some(image.into()),
        ..Container::default()
    };
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: labels(&[
                ("app", SERVICE),
                ("security.istio.io/tlsMode", "istio"),
                ("service.istio.io/canonical-name", SERVICE),
                ("service.istio.io/canonical-revision", "latest"),
            ]),
            annotations: Some(BTreeMap::from([(
                "sidecar.istio.io/status".to_string(),
                r#"{"containers":["istio-proxy"],"revision":"default"}"#.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![
                container(SERVICE, "registry.k8s.io/e2e-test-images/agnhost:2.45"),
                container("istio-proxy", "docker.io/istio/proxyv2:1.31.0"),
            ],
            automount_service_account_token: Some(false),
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

/// The `kubectl rollout restart` stamp on a pod template.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// Namespace `shop`, labelled for sidecar injection, with a Deployment `web`
/// in it: what a network move's workload restart acts on.
pub async fn injected_deployment(cluster: &Cluster) {
    use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
    use k8s_openapi::api::core::v1::PodTemplateSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some("shop".into()),
            labels: labels(&[("istio-injection", "enabled")]),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(cluster.client())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("namespace shop");
    let deployment = Deployment {
        metadata: ObjectMeta {
            name: Some("web".into()),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            selector: LabelSelector {
                match_labels: labels(&[("app", "web")]),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: labels(&[("app", "web")]),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "web".into(),
                        image: Some("nginx".into()),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };
    Api::<Deployment>::namespaced(cluster.client(), "shop")
        .create(&PostParams::default(), &deployment)
        .await
        .expect("deployment web");
}

/// The restart stamp on `shop/web`'s pod template; none before any restart.
pub async fn restarted_at(cluster: &Cluster) -> Option<String> {
    let web = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(cluster.client(), "shop")
        .get("web")
        .await
        .expect("deployment web");
    web.spec?.template.metadata?.annotations?.get(RESTARTED_AT).cloned()
}
