//! The names, labels and annotations of what meshform writes: Istio's
//! multi-cluster conventions in one place, shared by observe (what to read),
//! plan (what to compare) and apply (what to write).

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

/// The reader account istiod in a primary uses to read a peer; Istio's own
/// charts create the same name, and meshform uses theirs when present.
pub const READER_SERVICE_ACCOUNT: &str = "istio-reader-service-account";
/// The legacy token Secret of the reader account, for `tokens.mode = "secret"`.
pub const READER_TOKEN_SECRET: &str = "istio-reader-service-account-token";
/// The cross-network Gateway, named as in Istio's `expose-services.yaml`.
pub const CROSS_NETWORK_GATEWAY: &str = "cross-network-gateway";
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
/// Istio's charts label istiod's Deployment `app=istiod` and every install
/// object `istio.io/rev=<revision>` (`default` without one); the injector
/// ConfigMap also `operator.istio.io/component=Pilot`
/// (istio/istio `manifests/charts/istio-control/istio-discovery/templates/`).
pub const ISTIOD_SELECTOR: &str = "app=istiod";
pub const INSTALL_CONFIGMAP_SELECTOR: &str = "operator.istio.io/component=Pilot";
pub const REVISION_LABEL: &str = "istio.io/rev";
/// istiod's Deployment and injector ConfigMap, `-<rev>` appended for a revision.
pub const ISTIOD: &str = "istiod";
pub const INJECTOR_CONFIGMAP: &str = "istio-sidecar-injector";
/// The cluster id istiod runs with (istiod's Deployment env), and Istio's
/// default when `global.multiCluster.clusterName` is unset.
pub const CLUSTER_ID_ENV: &str = "CLUSTER_ID";
pub const DEFAULT_CLUSTER_ID: &str = "Kubernetes";
/// The roots of trust istiod publishes in every namespace, key `root-cert.pem`
/// (istio/istio `pilot/pkg/serviceregistry/kube/controller/namespacecontroller.go`).
pub const ROOT_CERT_CONFIGMAP: &str = "istio-ca-root-cert";
pub const ROOT_CERT_KEY: &str = "root-cert.pem";

/// Field manager for server-side apply.
pub const FIELD_MANAGER: &str = "meshform";

/// The remote secret a primary holds for `peer`, as istioctl names it.
pub fn remote_secret_name(peer: &str) -> String {
    format!("{}{peer}", crate::topology::REMOTE_SECRET_PREFIX)
}

/// The read-only ClusterRole (and its binding) meshform owns for the reader
/// account; named apart from Istio's own so the two never collide.
pub fn reader_cluster_role(namespace: &str) -> String {
    format!("meshform-istio-reader-{namespace}")
}

/// The Lease that serialises applies of one mesh.
pub fn lock_lease(mesh: &str) -> String {
    format!("meshform-{mesh}")
}

/// The Istio Gateway resource, served as `networking.istio.io/v1`.
pub fn gateway_resource() -> kube::core::ApiResource {
    kube::core::ApiResource {
        group: "networking.istio.io".to_string(),
        version: "v1".to_string(),
        api_version: "networking.istio.io/v1".to_string(),
        kind: "Gateway".to_string(),
        plural: "gateways".to_string(),
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
