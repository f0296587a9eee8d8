//! The names, labels and annotations of what meshform writes, and the
//! content hashes of what it reads: Istio's multi-cluster conventions in one
//! place, shared by observe (what to read), plan (what to compare) and apply
//! (what to write). Constants and pure functions only: no client, no I/O.

use k8s_openapi::api::rbac::v1::{PolicyRule, Subject};

/// Istio reads a cluster's network from this label on the mesh namespace.
pub const NETWORK_LABEL: &str = "topology.istio.io/network";
/// istiod watches Secrets with this label (value "true") for remote clusters.
pub const MULTICLUSTER_LABEL: &str = "istio/multiCluster";
/// The cluster id a remote secret is for; informational, Istio reads the data key.
pub const CLUSTER_ANNOTATION: &str = "networking.istio.io/cluster";

/// Marks objects meshform owns.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "meshform";
/// The mesh an owned object belongs to; objects of another mesh are not ours.
pub const MESH_LABEL: &str = "meshform.io/mesh";
/// Hash of the non-secret content meshform wrote, to spot drift cheaply.
pub const SPEC_HASH_ANNOTATION: &str = "meshform.io/spec-hash";
/// kube-system UID of the peer a remote secret points at: survives renames.
pub const PEER_IDENTITY_ANNOTATION: &str = "meshform.io/peer-identity";
/// Annotations in which tools keep a copy of the whole object they applied:
/// `kubectl apply` (client-side, as after `istioctl create-remote-secret |
/// kubectl apply -f -`), kapp and Rancher's objectset. On a remote secret the
/// copy holds its kubeconfig, token included, outside `data`, where the tools
/// that hide a Secret's data show it (`kubectl describe secret`, metadata-only
/// lists and caches); an adoption removes them.
pub const OBJECT_COPY_ANNOTATIONS: [&str; 3] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    "kapp.k14s.io/original",
    "objectset.rio.cattle.io/applied",
];

/// The reader account istiod in a primary uses to read a peer; Istio's own
/// charts create the same name, and meshform uses theirs when present.
pub const READER_SERVICE_ACCOUNT: &str = "istio-reader-service-account";
/// The legacy token Secret of the reader account, for `tokens.mode = "secret"`.
pub const READER_TOKEN_SECRET: &str = "istio-reader-service-account-token";
/// The account a remote's control plane (one primary) reads and writes the
/// remote through, apart from the read-only reader account every other
/// primary's token comes from: meshform's own, Istio has no such account.
pub const CONTROL_PLANE_SERVICE_ACCOUNT: &str = "meshform-control-plane";
/// Its legacy token Secret, for `tokens.mode = "secret"`.
pub const CONTROL_PLANE_TOKEN_SECRET: &str = "meshform-control-plane-token";
/// The cross-network Gateway, named as in Istio's `expose-services.yaml`.
pub const CROSS_NETWORK_GATEWAY: &str = "cross-network-gateway";
/// What exposes a primary's istiod on its east-west gateway to remotes on
/// other networks, named as in Istio's `samples/multicluster/expose-istiod.yaml`.
pub const ISTIOD_GATEWAY: &str = "istiod-gateway";
pub const ISTIOD_VIRTUAL_SERVICE: &str = "istiod-vs";
/// istiod's xDS (mTLS) port and its injection webhook port on the gateway.
pub const ISTIOD_XDS_PORT: u16 = 15012;
pub const ISTIOD_WEBHOOK_PORT: u16 = 15017;
/// istiod's east-west gateway pods carry this selector label.
pub const EASTWEST_SELECTOR: (&str, &str) = ("istio", "eastwestgateway");

/// istiod reads a network gateway's port from this label on its Service
/// (istio/istio `pilot/pkg/serviceregistry/kube/controller/network.go`).
pub const GATEWAY_PORT_LABEL: &str = "networking.istio.io/gatewayPort";
/// The gateway port istiod assumes without the label, and the HBONE port it
/// also accepts (`DefaultNetworkGatewayPort`, `DefaultNetworkGatewayHBONEPort`).
pub const DEFAULT_GATEWAY_PORT: u16 = 15443;
pub const HBONE_GATEWAY_PORT: u16 = 15008;
/// On a NodePort gateway Service, makes istiod use node addresses
/// (istio/istio `pilot/pkg/serviceregistry/kube/conversion.go`).
pub const NODE_SELECTOR_ANNOTATION: &str = "traffic.istio.io/nodeSelector";
/// On a remote's mesh namespace: the cluster ids (comma-separated, or `*`)
/// of the istiods that manage the remote with `EXTERNAL_ISTIOD` (istio/istio
/// `pilot/pkg/serviceregistry/kube/controller/multicluster.go`).
pub const CONTROL_PLANE_ANNOTATION: &str = "topology.istio.io/controlPlaneClusters";
/// On the mesh namespace, while the workload restart a relabel needs has not
/// run: the network the running sidecars were injected with (`""` for
/// Istio's default network). Sidecars keep the network of their injection
/// (the pod's `topology.istio.io/network` label, istio/istio
/// `pkg/kube/inject/webhook.go` `applyMetadata`), and istiod takes a pod's
/// label before the namespace's (`pilot/pkg/serviceregistry/kube/controller/controller.go`
/// `Network`), so the debt outlives the run that made it: written in the
/// same apply as the relabel, taken off by apply once the restart ran.
pub const RESTART_OWED_ANNOTATION: &str = "meshform.io/restart-owed-from";
/// Istio's charts label istiod's Deployment `app=istiod` and every install
/// object `istio.io/rev=<revision>` (`default` without one); the injector
/// ConfigMap also `operator.istio.io/component=Pilot`
/// (istio/istio `manifests/charts/istio-control/istio-discovery/templates/`).
pub const ISTIOD_SELECTOR: &str = "app=istiod";
pub const INSTALL_CONFIGMAP_SELECTOR: &str = "operator.istio.io/component=Pilot";
/// A remote-profile install (no istiod of its own) writes a selector-less
/// Service `istiod[-<rev>]` (ExternalName when `remotePilotAddress` is a
/// hostname) and, for an IP, an EndpointSlice of that name holding it, both
/// labelled `app.kubernetes.io/name=istiod` (istio/istio
/// `manifests/charts/istio-control/istio-discovery/templates/remote-istiod-service.yaml`,
/// `remote-istiod-endpointslices.yaml`). Kubernetes' EndpointSlice controller
/// copies a Service's labels onto the slices it makes for a primary's istiod,
/// so those are left out by their `managed-by`.
pub const REMOTE_ISTIOD_SLICE_SELECTOR: &str =
    "app.kubernetes.io/name=istiod,endpointslice.kubernetes.io/managed-by!=endpointslice-controller.k8s.io";
pub const ISTIOD_NAME_LABEL: (&str, &str) = ("app.kubernetes.io/name", "istiod");
/// The Service an EndpointSlice belongs to.
pub const SLICE_SERVICE_LABEL: &str = "kubernetes.io/service-name";
pub const REVISION_LABEL: &str = "istio.io/rev";
/// istiod's Deployment and injector ConfigMap, `-<rev>` appended for a revision.
pub const ISTIOD: &str = "istiod";
pub const INJECTOR_CONFIGMAP: &str = "istio-sidecar-injector";
/// The install's mesh config ConfigMap (`mesh`, `meshNetworks`), `-<rev>` appended.
pub const MESH_CONFIGMAP: &str = "istio";
/// The install's record of its Helm values (`merged-values`), `-<rev>` appended.
pub const VALUES_CONFIGMAP: &str = "values";
/// The cluster id istiod runs with (istiod's Deployment env), and Istio's
/// default when `global.multiCluster.clusterName` is unset.
pub const CLUSTER_ID_ENV: &str = "CLUSTER_ID";
pub const DEFAULT_CLUSTER_ID: &str = "Kubernetes";
/// The roots of trust istiod publishes in every namespace, key `root-cert.pem`
/// (istio/istio `pilot/pkg/serviceregistry/kube/controller/namespacecontroller.go`).
pub const ROOT_CERT_CONFIGMAP: &str = "istio-ca-root-cert";
pub const ROOT_CERT_KEY: &str = "root-cert.pem";

/// Gateway API Gateways istiod takes as network gateways (istio/istio
/// `pkg/config/constants/constants.go`): `istio-east-west` is ambient's
/// east-west gateway, `istio-remote` names one istiod has no API access to.
pub const EAST_WEST_GATEWAY_CLASS: &str = "istio-east-west";
pub const REMOTE_GATEWAY_CLASS: &str = "istio-remote";
/// The TLS option marking a Gateway API listener auto-passthrough, and its value.
pub const LISTENER_MODE_OPTION: &str = "gateway.istio.io/listener-protocol";
pub const LISTENER_MODE_AUTO_PASSTHROUGH: &str = "auto-passthrough";
/// The name `samples/multicluster/gen-eastwest-gateway.sh --ambient` gives
/// the ambient east-west Gateway.
pub const AMBIENT_EAST_WEST_GATEWAY: &str = "istio-eastwestgateway";
/// ztunnel's DaemonSet (`manifests/charts/ztunnel`, `resourceName` default)
/// and the env it takes its cluster id and network from; the cluster id
/// defaults to `Kubernetes`, the network to none.
pub const ZTUNNEL: &str = "ztunnel";
pub const ZTUNNEL_CLUSTER_ID_ENV: &str = "ISTIO_META_CLUSTER_ID";
pub const ZTUNNEL_NETWORK_ENV: &str = "NETWORK";
/// istiod's env that decides how it finds network gateways
/// (`pilot/pkg/features/ambient.go`, `pilot/pkg/features/pilot.go`): kept
/// in the snapshot, the rest of istiod's env is not.
pub const AMBIENT_ENV: &str = "PILOT_ENABLE_AMBIENT";
pub const AMBIENT_MULTI_NETWORK_ENV: &str = "AMBIENT_ENABLE_MULTI_NETWORK";
pub const GATEWAY_API_NETWORKS_ENV: &str = "PILOT_MULTI_NETWORK_DISCOVER_GATEWAY_API";
pub const ISTIOD_ENV_KEPT: [&str; 3] = [AMBIENT_ENV, AMBIENT_MULTI_NETWORK_ENV, GATEWAY_API_NETWORKS_ENV];

/// Istio's plug-in CA Secret and its keys (istio/istio
/// `security/pkg/pki/ca/ca.go`: `CACertsSecret`, `CACertFile`,
/// `CAPrivateKeyFile`, `CertChainFile`, `RootCertFile`), mounted into istiod
/// at /etc/cacerts.
pub const CA_CERTS_SECRET: &str = "cacerts";
pub const CA_CERT_KEY: &str = "ca-cert.pem";
pub const CA_KEY_KEY: &str = "ca-key.pem";
pub const CA_CHAIN_KEY: &str = "cert-chain.pem";
pub const CA_ROOT_CERT_KEY: &str = "root-cert.pem";
pub const CA_CERTS_KEYS: [&str; 4] = [CA_CERT_KEY, CA_KEY_KEY, CA_CHAIN_KEY, CA_ROOT_CERT_KEY];

/// Marks the data-less Secrets that reader tokens are bound to (value "true").
pub const READER_BINDING_LABEL: &str = "meshform.io/reader-binding";
/// The primary holding the tokens bound to a binding Secret, by mesh name.
pub const HOLDER_ANNOTATION: &str = "meshform.io/holder";
/// The holder's kube-system UID: a renamed holder is still the same holder.
pub const HOLDER_IDENTITY_ANNOTATION: &str = "meshform.io/holder-identity";

/// Field manager for server-side apply.
pub const FIELD_MANAGER: &str = "meshform";

/// The remote secret a primary holds for `peer`, as istioctl names it.
pub fn remote_secret_name(peer: &str) -> String {
    format!("{}{peer}", crate::topology::REMOTE_SECRET_PREFIX)
}

/// The `generateName` of the binding Secrets in a peer for tokens `holder`
/// holds: one per token written, the API server adds a random suffix.
pub fn reader_binding_prefix(holder: &str) -> String {
    format!("meshform-reader-binding-{holder}-")
}

/// The read-only ClusterRole (and its binding) meshform owns for the reader
/// account; named apart from Istio's own so the two never collide.
pub fn reader_cluster_role(namespace: &str) -> String {
    format!("meshform-istio-reader-{namespace}")
}

/// The ClusterRole (and its binding) of a remote's control-plane account.
pub fn control_plane_cluster_role(namespace: &str) -> String {
    format!("meshform-istiod-control-plane-{namespace}")
}

/// Which of the two accounts a primary's token for a peer comes from, and
/// what that account may do in the peer.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ReaderScope {
    /// The reader account: read the cluster (and review its workloads'
    /// tokens), as Istio's `istio-reader` role grants. Every primary's token
    /// for a peer comes from it, except a remote's control plane's.
    #[default]
    Read,
    /// The control-plane account of a remote: what the reader reads, and
    /// what the istiod of the remote's control plane writes there, as
    /// Istio's remote profile grants it: the `istio-ca-root-cert` ConfigMaps
    /// and its leader-election ConfigMap, and the CA bundle of the injection
    /// and validation webhooks
    /// (istio/istio `manifests/charts/istio-control/istio-discovery/templates/reader-clusterrole.yaml`,
    /// `istiodRemote.enabled`; `pilot/pkg/serviceregistry/kube/controller/multicluster.go`
    /// starts the namespace controller and `pkg/webhooks/webhookpatch.go`
    /// for a remote only where `checkShouldLead` names this istiod). Only
    /// that primary's token comes from it: any other primary that could
    /// patch the remote's injection webhook could put its own injector in.
    ControlPlane,
}

impl ReaderScope {
    pub fn is_read(&self) -> bool {
        *self == ReaderScope::Read
    }

    /// The ServiceAccount tokens of this scope are issued to.
    pub fn service_account(self) -> &'static str {
        match self {
            ReaderScope::Read => READER_SERVICE_ACCOUNT,
            ReaderScope::ControlPlane => CONTROL_PLANE_SERVICE_ACCOUNT,
        }
    }

    /// The ClusterRole and ClusterRoleBinding of the account.
    pub fn cluster_role(self, namespace: &str) -> String {
        match self {
            ReaderScope::Read => reader_cluster_role(namespace),
            ReaderScope::ControlPlane => control_plane_cluster_role(namespace),
        }
    }

    /// The account's legacy token Secret (`tokens.mode = "secret"`).
    pub fn token_secret(self) -> &'static str {
        match self {
            ReaderScope::Read => READER_TOKEN_SECRET,
            ReaderScope::ControlPlane => CONTROL_PLANE_TOKEN_SECRET,
        }
    }

    /// The account in words, for plans and errors.
    pub fn describe(self) -> &'static str {
        match self {
            ReaderScope::Read => "reader account",
            ReaderScope::ControlPlane => "control-plane account",
        }
    }

    pub fn other(self) -> ReaderScope {
        match self {
            ReaderScope::Read => ReaderScope::ControlPlane,
            ReaderScope::ControlPlane => ReaderScope::Read,
        }
    }
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> k8s_openapi::api::rbac::v1::PolicyRule {
    let strings = |items: &[&str]| Some(items.iter().map(|s| s.to_string()).collect());
    k8s_openapi::api::rbac::v1::PolicyRule {
        api_groups: strings(groups),
        resources: strings(resources),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// The reader ClusterRole's rules: what istiod in a primary needs to read a
/// peer cluster (its services, endpoints, pods and nodes, Istio's
/// configuration, token and access reviews for the peer's workloads), as
/// Istio's own reader role grants it; for a remote's control-plane account,
/// also what its control plane writes ([`ReaderScope::ControlPlane`]). The
/// one source of the rules, for apply to write and the planner to compare.
pub fn reader_rules(scope: ReaderScope) -> Vec<k8s_openapi::api::rbac::v1::PolicyRule> {
    let read = &["get", "list", "watch"];
    let mut rules = vec![
        rule(
            &[
                "config.istio.io",
                "security.istio.io",
                "networking.istio.io",
                "authentication.istio.io",
                "rbac.istio.io",
                "telemetry.istio.io",
                "extensions.istio.io",
            ],
            &["*"],
            read,
        ),
        rule(
            &[""],
            &[
                "endpoints",
                "pods",
                "services",
                "nodes",
                "replicationcontrollers",
                "namespaces",
                "secrets",
                // istiod watches each remote's mesh config (ConfigMap `istio`
                // in the mesh namespace) and syncs the remote's registry only
                // once that watch has listed (istio/istio
                // pilot/pkg/serviceregistry/kube/controller/multicluster.go);
                // without it a peer stays `timeout` in /debug/clusterz and a
                // rebuilt client, after a token rotation, is never swapped in.
                "configmaps",
            ],
            read,
        ),
        rule(
            &["networking.x-k8s.io", "gateway.networking.k8s.io"],
            &["gateways"],
            read,
        ),
        rule(&["apiextensions.k8s.io"], &["customresourcedefinitions"], read),
        rule(&["discovery.k8s.io"], &["endpointslices"], read),
        rule(&["multicluster.x-k8s.io"], &["serviceexports", "serviceimports"], read),
        rule(&["apps"], &["replicasets"], read),
        rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
        rule(&["authorization.k8s.io"], &["subjectaccessreviews"], &["create"]),
    ];
    if scope == ReaderScope::ControlPlane {
        rules.extend([
            rule(&[""], &["configmaps"], &["create", "get", "list", "watch", "update"]),
            rule(
                &["admissionregistration.k8s.io"],
                &["mutatingwebhookconfigurations"],
                &["get", "list", "watch", "update", "patch"],
            ),
            rule(
                &["admissionregistration.k8s.io"],
                &["validatingwebhookconfigurations"],
                &["get", "list", "watch", "update"],
            ),
        ]);
    }
    rules
}

/// The Lease that serialises applies of one mesh.
pub fn lock_lease(mesh: &str) -> String {
    format!("meshform-{mesh}")
}

/// An Istio networking resource, served as `networking.istio.io/v1`.
fn istio_networking(kind: &str, plural: &str) -> kube::core::ApiResource {
    kube::core::ApiResource {
        group: "networking.istio.io".to_string(),
        version: "v1".to_string(),
        api_version: "networking.istio.io/v1".to_string(),
        kind: kind.to_string(),
        plural: plural.to_string(),
    }
}

/// The Istio Gateway resource.
pub fn gateway_resource() -> kube::core::ApiResource {
    istio_networking("Gateway", "gateways")
}

/// The Istio VirtualService resource.
pub fn virtual_service_resource() -> kube::core::ApiResource {
    istio_networking("VirtualService", "virtualservices")
}

/// The Gateway API Gateway resource (`gateway.networking.k8s.io/v1`).
pub fn k8s_gateway_resource() -> kube::core::ApiResource {
    kube::core::ApiResource {
        group: "gateway.networking.k8s.io".into(),
        version: "v1".into(),
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "Gateway".into(),
        plural: "gateways".into(),
    }
}

/// Labels on every object meshform owns in `mesh`.
pub fn managed_labels(mesh: &str) -> std::collections::BTreeMap<String, String> {
    [(MANAGED_BY_LABEL, MANAGED_BY), (MESH_LABEL, mesh)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Whether labels mark an object as meshform's, for this mesh.
pub fn is_managed(labels: Option<&std::collections::BTreeMap<String, String>>, mesh: &str) -> bool {
    labels.is_some_and(|l| {
        l.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)
            && l.get(MESH_LABEL).map(String::as_str) == Some(mesh)
    })
}

/// The spec of the `cross-network-gateway` Gateway meshform writes: the one
/// source of its content, for apply to write and the planner to compare.
pub fn gateway_spec(port: u16) -> serde_json::Value {
    serde_json::json!({
        "selector": { EASTWEST_SELECTOR.0: EASTWEST_SELECTOR.1 },
        "servers": [{
            "port": { "number": port, "name": "tls", "protocol": "TLS" },
            "tls": { "mode": "AUTO_PASSTHROUGH" },
            "hosts": ["*.local"],
        }],
    })
}

/// The name of the listener of the ambient east-west Gateway.
pub const AMBIENT_LISTENER: &str = "mesh";

/// The spec of the ambient east-west Gateway meshform writes when a network
/// has none: what istio/istio `samples/multicluster/gen-eastwest-gateway.sh
/// --ambient` renders (class `istio-east-west`, listener `mesh`, HBONE on
/// 15008, TLS Terminate with Istio mTLS). Its network is a label, written
/// beside it.
pub fn ambient_gateway_spec() -> serde_json::Value {
    serde_json::json!({
        "gatewayClassName": EAST_WEST_GATEWAY_CLASS,
        "listeners": [{
            "name": AMBIENT_LISTENER,
            "port": HBONE_GATEWAY_PORT,
            "protocol": "HBONE",
            "tls": {
                "mode": "Terminate",
                "options": { "gateway.istio.io/tls-terminate-mode": "ISTIO_MUTUAL" },
            },
        }],
    })
}

/// The part of a Gateway API Gateway's spec meshform writes, for its
/// content hash: the class and the `mesh` listener's name, port, protocol
/// and TLS. What the API server defaults (`allowedRoutes`, `tls.mode`) and
/// what others add beside it (another listener, addresses) are left out:
/// server-side apply leaves them be, so they are no edit meshform puts back.
pub fn ambient_gateway_content(spec: &serde_json::Value) -> serde_json::Value {
    let listener = spec["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["name"] == AMBIENT_LISTENER)
        .map(|l| {
            let tls = &l["tls"];
            serde_json::json!({
                "name": l["name"],
                "port": l["port"],
                "protocol": l["protocol"],
                "tls": {
                    "mode": tls["mode"].as_str().unwrap_or("Terminate"),
                    "options": tls.get("options").cloned().unwrap_or_else(|| serde_json::json!({})),
                },
            })
        });
    serde_json::json!({ "gatewayClassName": spec["gatewayClassName"], "listener": listener })
}

/// The spec of the `istiod-gateway` Gateway: TLS passthrough of istiod's
/// xDS and webhook ports on the east-west gateway
/// (istio/istio `samples/multicluster/expose-istiod.yaml`).
pub fn istiod_gateway_spec() -> serde_json::Value {
    let server = |name: &str, port: u16| {
        serde_json::json!({
            "port": { "name": name, "number": port, "protocol": "TLS" },
            "tls": { "mode": "PASSTHROUGH" },
            "hosts": ["*"],
        })
    };
    serde_json::json!({
        "selector": { EASTWEST_SELECTOR.0: EASTWEST_SELECTOR.1 },
        "servers": [server("tls-istiod", ISTIOD_XDS_PORT), server("tls-istiodwebhook", ISTIOD_WEBHOOK_PORT)],
    })
}

/// The spec of the `istiod-vs` VirtualService: routes the two ports of the
/// `istiod-gateway` to the istiod Service of `revision` (`istiod`, or
/// `istiod-<rev>` as `expose-istiod-rev.yaml.tmpl` does), xDS to 15012 and
/// the webhook to 443.
pub fn istiod_virtual_service_spec(namespace: &str, revision: Option<&str>) -> serde_json::Value {
    let service = match revision {
        None | Some("default") => ISTIOD.to_string(),
        Some(rev) => format!("{ISTIOD}-{rev}"),
    };
    let host = format!("{service}.{namespace}.svc.cluster.local");
    let route = |port: u16, to: u16| {
        serde_json::json!({
            "match": [{ "port": port, "sniHosts": ["*"] }],
            "route": [{ "destination": { "host": host, "port": { "number": to } } }],
        })
    };
    serde_json::json!({
        "hosts": ["*"],
        "gateways": [ISTIOD_GATEWAY],
        "tls": [route(ISTIOD_XDS_PORT, ISTIOD_XDS_PORT), route(ISTIOD_WEBHOOK_PORT, 443)],
    })
}

/// SHA-256 (hex) of a JSON value with its object keys sorted: equal content,
/// equal hash, however the API server ordered it.
pub fn content_sha256(value: &serde_json::Value) -> String {
    // serde_json's maps are sorted (no `preserve_order`), so this is canonical.
    sha256_hex(&serde_json::to_vec(value).unwrap_or_default())
}

/// SHA-256 (hex) of arbitrary bytes, e.g. a CA bundle: observe records it,
/// plan compares it, neither sees the bytes of the other.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Who an account's ClusterRoleBinding grants its role to: that account,
/// and nobody else.
pub fn reader_subjects(namespace: &str, scope: ReaderScope) -> Vec<Subject> {
    vec![Subject {
        kind: "ServiceAccount".into(),
        name: scope.service_account().into(),
        namespace: Some(namespace.into()),
        ..Subject::default()
    }]
}

/// SHA-256 of a ClusterRole's rules as RBAC reads them, a union of grants:
/// neither the order of the rules nor of the items in a rule counts, and an
/// empty list is no list. Computed alike on the live role and on
/// [`reader_rules`], so only a change of what is granted shows.
pub fn rules_sha256(rules: &[PolicyRule]) -> String {
    fn set(items: Option<&Vec<String>>) -> Vec<&String> {
        let mut items: Vec<&String> = items.into_iter().flatten().collect();
        items.sort();
        items.dedup();
        items
    }
    let mut normalised: Vec<serde_json::Value> = rules
        .iter()
        .map(|r| {
            serde_json::json!({
                "apiGroups": set(r.api_groups.as_ref()),
                "resources": set(r.resources.as_ref()),
                "resourceNames": set(r.resource_names.as_ref()),
                "nonResourceURLs": set(r.non_resource_urls.as_ref()),
                "verbs": set(Some(&r.verbs)),
            })
        })
        .collect();
    normalised.sort_by_key(|r| r.to_string());
    normalised.dedup();
    content_sha256(&serde_json::Value::Array(normalised))
}

/// SHA-256 of a ClusterRoleBinding's subjects, in any order. Its `roleRef`
/// is left out: the API server refuses to change it, so a binding of
/// meshform's name always refers to meshform's role.
pub fn subjects_sha256(subjects: &[Subject]) -> String {
    let mut normalised: Vec<serde_json::Value> = subjects
        .iter()
        .map(|s| {
            // None and "" are one apiGroup: the API server leaves a
            // ServiceAccount's empty (it fills one in for User and Group).
            let group = s.api_group.as_deref().unwrap_or_default();
            serde_json::json!([s.kind, group, s.namespace.as_deref().unwrap_or_default(), s.name])
        })
        .collect();
    normalised.sort_by_key(|s| s.to_string());
    normalised.dedup();
    content_sha256(&serde_json::Value::Array(normalised))
}

/// The field managers other than meshform that own label `label` of an
/// object (`metadata.managedFields`): server-side apply refuses to take the
/// field from them without force.
pub fn label_owners(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, label: &str) -> Vec<String> {
    let key = format!("f:{label}");
    owners(meta, |f| f["f:metadata"]["f:labels"].get(&key).is_some())
}

/// The field managers other than meshform that own a field of a remote
/// secret that meshform writes: its labels and annotations, and its data.
pub fn remote_secret_owners(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Vec<String> {
    owners(meta, |f| {
        let annotations = &f["f:metadata"]["f:annotations"];
        let labels = &f["f:metadata"]["f:labels"];
        [CLUSTER_ANNOTATION, SPEC_HASH_ANNOTATION, PEER_IDENTITY_ANNOTATION]
            .iter()
            .any(|a| annotations.get(format!("f:{a}")).is_some())
            || [MULTICLUSTER_LABEL, MANAGED_BY_LABEL, MESH_LABEL]
                .iter()
                .any(|l| labels.get(format!("f:{l}")).is_some())
            || f.get("f:data").is_some()
    })
}

/// The field managers other than meshform that own the rules of a ClusterRole.
pub fn rules_owners(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Vec<String> {
    owners(meta, |f| f.get("f:rules").is_some())
}

/// The field managers other than meshform that own the subjects of a ClusterRoleBinding.
pub fn subjects_owners(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Vec<String> {
    owners(meta, |f| f.get("f:subjects").is_some())
}

/// The field managers other than meshform that own any field of `spec`.
pub fn spec_owners(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Vec<String> {
    owners(meta, |f| f.get("f:spec").is_some())
}

fn owners(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    owns: impl Fn(&serde_json::Value) -> bool,
) -> Vec<String> {
    let mut owners: Vec<String> = meta
        .managed_fields
        .iter()
        .flatten()
        .filter(|e| e.manager.as_deref() != Some(FIELD_MANAGER))
        .filter(|e| e.fields_v1.as_ref().is_some_and(|f| owns(&f.0)))
        .filter_map(|e| e.manager.clone())
        .collect();
    owners.sort();
    owners.dedup();
    owners
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(rules: &[k8s_openapi::api::rbac::v1::PolicyRule], group: &str, resource: &str, verb: &str) -> bool {
        rules.iter().any(|r| {
            r.api_groups.iter().flatten().any(|g| g == group)
                && r.resources.iter().flatten().any(|x| x == resource || x == "*")
                && r.verbs.iter().any(|v| v == verb)
        })
    }

    #[test]
    fn only_a_remotes_reader_writes_what_its_control_plane_needs() {
        let read = reader_rules(ReaderScope::Read);
        let control = reader_rules(ReaderScope::ControlPlane);
        assert!(
            control.starts_with(&read),
            "the control plane's rules extend the reader's"
        );
        for (group, resource, verb) in [
            ("", "configmaps", "create"),
            ("", "configmaps", "update"),
            ("admissionregistration.k8s.io", "mutatingwebhookconfigurations", "patch"),
            (
                "admissionregistration.k8s.io",
                "validatingwebhookconfigurations",
                "update",
            ),
        ] {
            assert!(grants(&control, group, resource, verb), "{group}/{resource} {verb}");
            assert!(
                !grants(&read, group, resource, verb),
                "read-only reader grants {group}/{resource} {verb}"
            );
        }
        // Reading is what both do; no scope writes Secrets.
        assert!(grants(&read, "", "configmaps", "watch"));
        assert!(!grants(&control, "", "secrets", "create"));
    }

    fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
        let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        PolicyRule {
            api_groups: Some(strings(groups)),
            resources: Some(strings(resources)),
            verbs: strings(verbs),
            ..PolicyRule::default()
        }
    }

    #[test]
    fn rules_hash_by_what_they_grant() {
        let rules = vec![
            rule(&[""], &["pods", "services"], &["get", "list"]),
            rule(&["apps"], &["replicasets"], &["get"]),
        ];
        let reordered = vec![
            rule(&["apps"], &["replicasets"], &["get"]),
            PolicyRule {
                resource_names: Some(Vec::new()),
                ..rule(&[""], &["services", "pods"], &["list", "get", "get"])
            },
        ];
        assert_eq!(rules_sha256(&rules), rules_sha256(&reordered));

        let mut verb_removed = rules.clone();
        verb_removed[0].verbs.pop();
        assert_ne!(rules_sha256(&rules), rules_sha256(&verb_removed));
        let mut rule_added = rules.clone();
        rule_added.push(rule(&[""], &["secrets"], &["create"]));
        assert_ne!(rules_sha256(&rules), rules_sha256(&rule_added));
        let mut named = rules.clone();
        named[1].resource_names = Some(vec!["one".into()]);
        assert_ne!(rules_sha256(&rules), rules_sha256(&named));
    }

    #[test]
    fn subjects_hash_in_any_order_with_the_servers_defaults() {
        let account = |name: &str, group: Option<&str>| Subject {
            kind: "ServiceAccount".into(),
            name: name.into(),
            namespace: Some("istio-system".into()),
            api_group: group.map(str::to_string),
        };
        let written = [account("a", None), account("b", None)];
        let read = [account("b", Some("")), account("a", Some(""))];
        assert_eq!(subjects_sha256(&written), subjects_sha256(&read));
        assert_ne!(subjects_sha256(&written), subjects_sha256(&written[..1]));
    }
}
