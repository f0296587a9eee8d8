//! The objects meshform writes, built as plain data from the plan.
//!
//! Pure functions: no client, no clock. Apply sends what these return with
//! server-side apply; tests inspect it directly.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleRef};
use kube::api::{DynamicObject, ObjectMeta};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::objects::{
    self, CLUSTER_ANNOTATION, MULTICLUSTER_LABEL, PEER_IDENTITY_ANNOTATION, ReaderScope, SPEC_HASH_ANNOTATION,
};

fn meta(name: &str, namespace: Option<&str>, mesh: &str, spec_hash: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        labels: Some(objects::managed_labels(mesh)),
        annotations: spec_hash.map(|h| BTreeMap::from([(SPEC_HASH_ANNOTATION.to_string(), h.to_string())])),
        ..ObjectMeta::default()
    }
}

/// Only the network label, a remote's control-plane annotation and the
/// record of a workload restart owed: meshform owns those fields of the
/// namespace, not the namespace (Istio's installer does). One object, so
/// the relabel and the record of what it owes land in one write.
pub fn network_label(
    namespace: &str,
    network: &str,
    control_plane: Option<&str>,
    restart_owed: Option<&str>,
) -> Namespace {
    let annotations: BTreeMap<String, String> = [
        control_plane.map(|primary| (objects::CONTROL_PLANE_ANNOTATION, primary)),
        restart_owed.map(|from| (objects::RESTART_OWED_ANNOTATION, from)),
    ]
    .into_iter()
    .flatten()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Namespace {
        metadata: ObjectMeta {
            name: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(
                objects::NETWORK_LABEL.to_string(),
                network.to_string(),
            )])),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// Only the network label of the east-west gateway Service: the Service is
/// Istio's installer's; meshform owns that one field, as on the namespace.
pub fn gateway_network_label(namespace: &str, service: &str, network: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(service.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(
                objects::NETWORK_LABEL.to_string(),
                network.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        ..Service::default()
    }
}

/// The reader account, or a remote's control-plane account.
pub fn reader_account(namespace: &str, mesh: &str, scope: ReaderScope) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(scope.service_account(), Some(namespace), mesh, None),
        ..Default::default()
    }
}

/// A legacy token Secret for the account of `scope`: the token controller
/// fills it with a token that never expires (`tokens.mode = "secret"`).
pub fn reader_token_secret(namespace: &str, mesh: &str, scope: ReaderScope) -> Secret {
    let mut metadata = meta(scope.token_secret(), Some(namespace), mesh, None);
    metadata.annotations = Some(BTreeMap::from([(
        "kubernetes.io/service-account.name".to_string(),
        scope.service_account().to_string(),
    )]));
    Secret {
        metadata,
        type_: Some("kubernetes.io/service-account-token".into()),
        ..Secret::default()
    }
}

/// The binding Secret a reader token is bound to: no data, it stands for
/// the primary `holder` that will hold the token. Named by the API server
/// from `generateName`, one per token written.
pub fn token_binding(namespace: &str, mesh: &str, holder: &str, holder_identity: &str) -> Secret {
    let mut metadata = meta("", Some(namespace), mesh, None);
    metadata.name = None;
    metadata.generate_name = Some(objects::reader_binding_prefix(holder));
    metadata
        .labels
        .get_or_insert_default()
        .insert(objects::READER_BINDING_LABEL.into(), "true".into());
    metadata.annotations = Some(BTreeMap::from([
        (objects::HOLDER_ANNOTATION.to_string(), holder.to_string()),
        (
            objects::HOLDER_IDENTITY_ANNOTATION.to_string(),
            holder_identity.to_string(),
        ),
    ]));
    Secret {
        metadata,
        type_: Some("Opaque".into()),
        ..Secret::default()
    }
}

/// The account's ClusterRole: its rules are `objects::reader_rules(scope)`.
/// Changing the rules means bumping the reader version in plan::hashes.
pub fn reader_role(namespace: &str, mesh: &str, spec_hash: &str, scope: ReaderScope) -> ClusterRole {
    ClusterRole {
        metadata: meta(&scope.cluster_role(namespace), None, mesh, Some(spec_hash)),
        rules: Some(objects::reader_rules(scope)),
        ..ClusterRole::default()
    }
}

pub fn reader_binding(namespace: &str, mesh: &str, spec_hash: &str, scope: ReaderScope) -> ClusterRoleBinding {
    let name = scope.cluster_role(namespace);
    ClusterRoleBinding {
        metadata: meta(&name, None, mesh, Some(spec_hash)),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name,
        },
        subjects: Some(objects::reader_subjects(namespace, scope)),
    }
}

/// The `cross-network-gateway`, as Istio's `expose-services.yaml` defines it:
/// mTLS passthrough on the east-west gateway for every `*.local` service.
pub fn cross_network_gateway(namespace: &str, mesh: &str, port: u16, spec_hash: &str) -> DynamicObject {
    let mut gateway = DynamicObject::new(objects::CROSS_NETWORK_GATEWAY, &objects::gateway_resource())
        .within(namespace)
        .data(json!({ "spec": objects::gateway_spec(port) }));
    gateway.metadata = meta(objects::CROSS_NETWORK_GATEWAY, Some(namespace), mesh, Some(spec_hash));
    gateway
}

/// Only the network label of a Gateway API Gateway of the user's install:
/// meshform owns that one field, as on the gateway Service.
pub fn k8s_gateway_network_label(namespace: &str, gateway: &str, network: &str) -> DynamicObject {
    let mut object = DynamicObject::new(gateway, &objects::k8s_gateway_resource())
        .within(namespace)
        .data(json!({}));
    object.metadata.labels = Some(BTreeMap::from([(
        objects::NETWORK_LABEL.to_string(),
        network.to_string(),
    )]));
    object
}

/// The ambient east-west Gateway as istio/istio
/// `samples/multicluster/gen-eastwest-gateway.sh --ambient --network
/// <network>` renders it, with meshform's labels and spec hash beside the
/// network label.
pub fn ambient_gateway(namespace: &str, mesh: &str, network: &str, spec_hash: &str) -> DynamicObject {
    let mut gateway = DynamicObject::new(objects::AMBIENT_EAST_WEST_GATEWAY, &objects::k8s_gateway_resource())
        .within(namespace)
        .data(json!({ "spec": objects::ambient_gateway_spec() }));
    gateway.metadata = meta(
        objects::AMBIENT_EAST_WEST_GATEWAY,
        Some(namespace),
        mesh,
        Some(spec_hash),
    );
    gateway
        .metadata
        .labels
        .get_or_insert_default()
        .insert(objects::NETWORK_LABEL.to_string(), network.to_string());
    gateway
}

/// The `istiod-gateway` and `istiod-vs` of Istio's `expose-istiod.yaml`:
/// istiod's ports on the east-west gateway, routed to its Service.
pub fn istiod_exposure(
    namespace: &str,
    mesh: &str,
    revision: Option<&str>,
    spec_hash: &str,
) -> (DynamicObject, DynamicObject) {
    let mut gateway = DynamicObject::new(objects::ISTIOD_GATEWAY, &objects::gateway_resource())
        .within(namespace)
        .data(json!({ "spec": objects::istiod_gateway_spec() }));
    gateway.metadata = meta(objects::ISTIOD_GATEWAY, Some(namespace), mesh, Some(spec_hash));
    let mut route = DynamicObject::new(objects::ISTIOD_VIRTUAL_SERVICE, &objects::virtual_service_resource())
        .within(namespace)
        .data(json!({ "spec": objects::istiod_virtual_service_spec(namespace, revision) }));
    route.metadata = meta(objects::ISTIOD_VIRTUAL_SERVICE, Some(namespace), mesh, Some(spec_hash));
    (gateway, route)
}

/// A kubeconfig for `peer` carrying a reader token: what istiod in a primary
/// uses to read the peer. JSON is valid YAML, which is what Istio parses.
///
/// The server is verified as meshform's own client verifies it: with the
/// kubeconfig's CA and its `tls-server-name`, which istiod's client builder
/// honours (`pkg/kube/util.go` `NewUntrustedRestConfig` goes through
/// client-go's `clientcmd`, whose `getServerIdentificationPartialConfig`
/// sets `ServerName` from it).
pub fn peer_kubeconfig(peer: &str, endpoint: &PeerEndpoint<'_>, token: &SecretString) -> SecretString {
    let mut cluster = json!({ "server": endpoint.server });
    if endpoint.skip_tls_verify {
        // Only where mesh.toml allows it for the peer (`allow_insecure_transport`).
        // client-go refuses a CA beside it ("specifying a root certificates file
        // with the insecure flag is not allowed"), so none is written.
        cluster["insecure-skip-tls-verify"] = true.into();
    } else if let Some(pem) = endpoint.ca_pem {
        cluster["certificate-authority-data"] = base64::engine::general_purpose::STANDARD.encode(pem).into();
    }
    if let Some(name) = endpoint.tls_server_name {
        cluster["tls-server-name"] = name.into();
    }
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": peer, "cluster": cluster }],
        "users": [{ "name": peer, "user": { "token": token.expose_secret() } }],
        "contexts": [{ "name": peer, "context": { "cluster": peer, "user": peer } }],
        "current-context": peer,
    });
    SecretString::from(serde_json::to_string_pretty(&config).expect("a kubeconfig serialises"))
}

/// Where istiod reaches a peer's API server, and how it verifies it.
pub struct PeerEndpoint<'a> {
    pub server: &'a str,
    /// The CA bundle (PEM) of the peer's kubeconfig.
    pub ca_pem: Option<&'a [u8]>,
    /// The kubeconfig's `tls-server-name`.
    pub tls_server_name: Option<&'a str>,
    /// The kubeconfig's `insecure-skip-tls-verify`, when mesh.toml allows it.
    pub skip_tls_verify: bool,
}

/// The remote secret istiod watches: one data key, the peer's cluster id.
pub struct RemoteSecret<'a> {
    pub namespace: &'a str,
    pub mesh: &'a str,
    pub name: &'a str,
    pub peer: &'a str,
    pub peer_identity: &'a str,
    pub spec_hash: &'a str,
    /// Makes the write conditional on the object being as observed.
    pub resource_version: Option<&'a str>,
}

impl RemoteSecret<'_> {
    pub fn build(&self, kubeconfig: &SecretString) -> Secret {
        let mut metadata = meta(self.name, Some(self.namespace), self.mesh, Some(self.spec_hash));
        metadata
            .labels
            .get_or_insert_default()
            .insert(MULTICLUSTER_LABEL.into(), "true".into());
        let annotations = metadata.annotations.get_or_insert_default();
        annotations.insert(CLUSTER_ANNOTATION.into(), self.peer.into());
        annotations.insert(PEER_IDENTITY_ANNOTATION.into(), self.peer_identity.into());
        metadata.resource_version = self.resource_version.map(str::to_string);
        Secret {
            metadata,
            type_: Some("Opaque".into()),
            data: Some(BTreeMap::from([(
                self.peer.to_string(),
                ByteString(kubeconfig.expose_secret().as_bytes().to_vec()),
            )])),
            ..Secret::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::model::{ObjectFacts, TokenFacts};

    #[test]
    fn remote_secret_reads_back_as_written() {
        // The observe side must recognise exactly what the apply side writes.
        let token = SecretString::from("header.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6eDp5In0.sig");
        let endpoint = PeerEndpoint {
            server: "https://b.example.com:6443",
            ca_pem: Some(b"PEM"),
            tls_server_name: Some("apiserver.b.internal"),
            skip_tls_verify: false,
        };
        let kubeconfig = peer_kubeconfig("b", &endpoint, &token);
        let secret = RemoteSecret {
            namespace: "istio-system",
            mesh: "m",
            name: "istio-remote-secret-b",
            peer: "b",
            peer_identity: "uid-b",
            spec_hash: "h",
            resource_version: None,
        }
        .build(&kubeconfig);
        let labels = secret.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[MULTICLUSTER_LABEL], "true");
        assert!(objects::is_managed(Some(labels), "m"));
        let object = ObjectFacts {
            uid: String::new(),
            resource_version: String::new(),
            managed: true,
            spec_hash: None,
            content_sha256: None,
            content_owners: Vec::new(),
        };
        let facts = crate::observe::secrets::facts(&secret, object);
        assert_eq!(facts.cluster_ids, ["b"]);
        assert_eq!(facts.annotated_cluster.as_deref(), Some("b"));
        assert_eq!(facts.peer_identity.as_deref(), Some("uid-b"));
        assert_eq!(facts.server.as_deref(), Some("https://b.example.com:6443"));
        assert_eq!(
            facts.ca_sha256.as_deref(),
            Some(crate::objects::sha256_hex(b"PEM").as_str())
        );
        assert_eq!(facts.tls_server_name.as_deref(), Some("apiserver.b.internal"));
        assert_eq!(facts.token, TokenFacts::Unbounded);
    }

    // client-go refuses a CA beside insecure-skip-tls-verify; the setting itself is carried only where allowed.
    #[test]
    fn an_unverified_peer_gets_insecure_skip_tls_verify_and_no_ca() {
        let token = SecretString::from("t");
        let endpoint = PeerEndpoint {
            server: "https://b.example.com:6443",
            ca_pem: Some(b"PEM"),
            tls_server_name: None,
            skip_tls_verify: true,
        };
        let config: serde_json::Value =
            serde_json::from_str(peer_kubeconfig("b", &endpoint, &token).expose_secret()).unwrap();
        let cluster = &config["clusters"][0]["cluster"];
        assert_eq!(cluster["insecure-skip-tls-verify"], true);
        assert!(cluster.get("certificate-authority-data").is_none(), "{cluster}");
        assert!(cluster.get("tls-server-name").is_none(), "{cluster}");
    }

    #[test]
    fn istiod_exposure_matches_istios_expose_istiod() {
        let (gw, vs) = istiod_exposure("istio-system", "m", None, "h");
        let servers = &gw.data["spec"]["servers"];
        assert_eq!(servers[0]["port"]["number"], 15012);
        assert_eq!(servers[1]["port"]["number"], 15017);
        assert!(
            servers
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["tls"]["mode"] == "PASSTHROUGH")
        );
        assert_eq!(vs.data["spec"]["gateways"], json!(["istiod-gateway"]));
        let routes = &vs.data["spec"]["tls"];
        assert_eq!(
            routes[0]["route"][0]["destination"]["host"],
            "istiod.istio-system.svc.cluster.local"
        );
        assert_eq!(routes[0]["route"][0]["destination"]["port"]["number"], 15012);
        assert_eq!(routes[1]["match"][0]["port"], 15017);
        assert_eq!(routes[1]["route"][0]["destination"]["port"]["number"], 443);
        assert_eq!(vs.types.as_ref().unwrap().kind, "VirtualService");
        // A revision's istiod, as expose-istiod-rev.yaml.tmpl routes it.
        let (_, vs) = istiod_exposure("istio-system", "m", Some("1-24"), "h");
        assert_eq!(
            vs.data["spec"]["tls"][1]["route"][0]["destination"]["host"],
            "istiod-1-24.istio-system.svc.cluster.local"
        );
    }

    #[test]
    fn reader_role_and_binding_read_back_as_written() {
        // Through JSON, as the API server hands them back: the planner must
        // find what apply writes equal to what it expects.
        for scope in [ReaderScope::Read, ReaderScope::ControlPlane] {
            let role: ClusterRole =
                serde_json::from_value(serde_json::to_value(reader_role("istio-system", "m", "h", scope)).unwrap())
                    .unwrap();
            assert_eq!(
                objects::rules_sha256(role.rules.as_deref().unwrap()),
                objects::rules_sha256(&objects::reader_rules(scope))
            );
        }
        for scope in [ReaderScope::Read, ReaderScope::ControlPlane] {
            let binding: ClusterRoleBinding =
                serde_json::from_value(serde_json::to_value(reader_binding("istio-system", "m", "h", scope)).unwrap())
                    .unwrap();
            assert_eq!(
                objects::subjects_sha256(binding.subjects.as_deref().unwrap()),
                objects::subjects_sha256(&objects::reader_subjects("istio-system", scope))
            );
            assert_eq!(binding.role_ref.name, scope.cluster_role("istio-system"));
            assert_eq!(
                binding.subjects.unwrap()[0].name,
                scope.service_account(),
                "each account's role is bound to that account alone"
            );
        }
    }

    /// istio/istio `samples/multicluster/gen-eastwest-gateway.sh --network n1 --ambient`.
    #[test]
    fn ambient_gateway_matches_istios_sample_and_reads_back_as_written() {
        let gw = ambient_gateway("istio-system", "m", "n1", "h");
        let sample = json!({
            "gatewayClassName": "istio-east-west",
            "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE",
                "tls": {"mode": "Terminate", "options": {"gateway.istio.io/tls-terminate-mode": "ISTIO_MUTUAL"}}}]
        });
        assert_eq!(gw.data["spec"], sample);
        assert_eq!(gw.types.as_ref().unwrap().api_version, "gateway.networking.k8s.io/v1");
        assert_eq!(gw.metadata.name.as_deref(), Some("istio-eastwestgateway"));
        let labels = gw.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[objects::NETWORK_LABEL], "n1");
        assert!(objects::is_managed(Some(labels), "m"));
        // As the API server returns it: the listener's defaults filled in,
        // and a listener of someone else's beside it. Still meshform's content.
        let mut served = sample.clone();
        served["listeners"][0]["allowedRoutes"] = json!({"namespaces": {"from": "Same"}});
        served["listeners"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "other", "port": 15443, "protocol": "TLS"}));
        assert_eq!(
            objects::content_sha256(&objects::ambient_gateway_content(&served)),
            objects::content_sha256(&objects::ambient_gateway_content(&sample))
        );
        served["listeners"][0]["port"] = 15009.into();
        assert_ne!(
            objects::content_sha256(&objects::ambient_gateway_content(&served)),
            objects::content_sha256(&objects::ambient_gateway_content(&sample))
        );
        // The user's Gateway gets a label and nothing else.
        let label = serde_json::to_value(k8s_gateway_network_label("istio-system", "eastwest", "n1")).unwrap();
        assert_eq!(label["metadata"]["labels"], json!({objects::NETWORK_LABEL: "n1"}));
        assert!(label.get("spec").is_none(), "{label}");
    }

    #[test]
    fn gateway_matches_istios_expose_services() {
        let gw = cross_network_gateway("istio-system", "m", 15443, "h");
        let server = &gw.data["spec"]["servers"][0];
        assert_eq!(server["port"]["number"], 15443);
        assert_eq!(server["tls"]["mode"], "AUTO_PASSTHROUGH");
        assert_eq!(server["hosts"], json!(["*.local"]));
        assert_eq!(gw.data["spec"]["selector"]["istio"], "eastwestgateway");
        assert_eq!(gw.types.as_ref().unwrap().api_version, "networking.istio.io/v1");
    }
}
