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
/// The cross-network Gateway, named as in Istio's `expose-services.yaml`.
pub const CROSS_NETWORK_GATEWAY: &str = "cross-network-gateway";
/// istiod's east-west gateway pods carry this selector label.
pub const EASTWEST_SELECTOR: (&str, &str) = ("istio", "eastwestgateway");

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
