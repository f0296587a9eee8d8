//! The `mesh.toml` file as written by users: what serde reads and what the
//! published JSON Schema (`schemas/mesh.schema.json`) describes.
//!
//! Defaults are not filled in here; [`super::resolve`] does that, so a file
//! round-trips as it was written.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A multi-cluster Istio mesh: its clusters, and how they are grouped into
/// networks.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "meshform topology (mesh.toml)")]
pub struct MeshFile {
    /// The mesh itself.
    pub mesh: MeshSection,
    /// The clusters of the mesh, one `[[cluster]]` table each.
    #[serde(default, rename = "cluster", skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<ClusterEntry>,
    /// East-west gateway settings per network, as `[network.<name>]`. A network
    /// needs no table unless its gateway differs from Istio's defaults.
    #[serde(default, rename = "network", skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, NetworkEntry>,
}

/// `[mesh]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MeshSection {
    /// The mesh id. Used in labels and object names, so it must be a
    /// DNS-1123 label.
    pub name: String,
    /// The namespace Istio runs in, on every cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "istio-system"))]
    pub namespace: Option<String>,
    /// How primaries authenticate to their peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokensSection>,
    /// The cluster whose mesh namespace holds the apply lock (a Lease). Every
    /// apply of the mesh locks there and nowhere else, so two applies can
    /// never lock different clusters; if it cannot be reached, apply stops.
    /// Defaults to the first primary by name. Change it only while no apply runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_cluster: Option<String>,
    /// The data plane every cluster runs unless its own `data_plane` says
    /// otherwise: it decides how istiod finds each network's gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "sidecar"))]
    pub data_plane: Option<DataPlane>,
    /// The mesh's root of trust: checked only (the default), or kept by
    /// meshform (Istio's plug-in CA Secret `cacerts` in every primary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<TrustSection>,
}

/// The data plane an Istio install runs, and so how its istiod finds other
/// networks' east-west gateways.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DataPlane {
    /// Sidecars: a network's gateway is a Service (or a Gateway API Gateway)
    /// labelled `topology.istio.io/network` with an auto-passthrough port.
    #[default]
    Sidecar,
    /// Ambient (ztunnel): a network's gateway is an `istio-east-west` Gateway
    /// API Gateway with an HBONE listener; multi-primary only.
    Ambient,
}

impl DataPlane {
    pub fn as_str(self) -> &'static str {
        match self {
            DataPlane::Sidecar => "sidecar",
            DataPlane::Ambient => "ambient",
        }
    }

    pub fn is_sidecar(&self) -> bool {
        *self == DataPlane::Sidecar
    }
}

/// `[mesh.trust]`: one root of trust for the mesh.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrustSection {
    /// `check`: meshform only reports clusters that do not share a root.
    /// `managed`: meshform writes an intermediate CA signed by the root into
    /// Istio's `cacerts` Secret of every primary and renews it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<TrustMode>,
    /// The root certificate (PEM file), relative to mesh.toml (`managed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_cert: Option<String>,
    /// The root the mesh is rotating away from (PEM file, relative to
    /// mesh.toml): set while rotating onto `root_cert`, removed once `check`
    /// shows the rotation complete. Only its certificate is read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_root_cert: Option<String>,
    /// The root's private key (PEM file), relative to mesh.toml; refused
    /// when its group or others may read it, as ssh refuses a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_key: Option<String>,
    /// Instead of `root_key`: a command (program and arguments, run without
    /// a shell) that prints the root's key in PEM to stdout, such as a
    /// Vault or KMS client. Its arguments and stderr are never shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_key_command: Option<Vec<String>>,
    /// Lifetime of each cluster's intermediate CA, such as "8760h".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "8760h"))]
    pub intermediate_lifetime: Option<String>,
    /// Renew an intermediate this long before it expires, such as "720h".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "720h"))]
    pub renew_before: Option<String>,
}

/// Who keeps the mesh on one root of trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TrustMode {
    /// The team plugs in CA certificates; meshform checks that they agree.
    #[default]
    Check,
    /// meshform issues and renews every primary's intermediate CA.
    Managed,
}

/// `[mesh.tokens]`: the reader tokens inside remote secrets.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokensSection {
    /// `request`: short-lived tokens from the TokenRequest API, rotated by
    /// meshform (run it on a schedule). `secret`: never-expiring legacy token
    /// Secrets, as istioctl makes them; no rotation needed, but a leaked
    /// remote secret stays valid until the Secret is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<TokenMode>,
    /// Lifetime of a requested token, such as "168h" (mode `request`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "168h"))]
    pub lifetime: Option<String>,
    /// Rotate a token once this percentage of its lifetime has passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100), extend("default" = 50))]
    pub rotate_at_percent: Option<u8>,
}

/// Where reader tokens come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TokenMode {
    /// Bounded tokens from the TokenRequest API.
    #[default]
    Request,
    /// A legacy `kubernetes.io/service-account-token` Secret: never expires.
    Secret,
}

impl TokenMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenMode::Request => "request",
            TokenMode::Secret => "secret",
        }
    }
}

/// `[[cluster]]`: one Kubernetes cluster of the mesh.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterEntry {
    /// The cluster's mesh name: the Istio cluster id and part of Kubernetes
    /// object names such as `istio-remote-secret-<name>`, so it must be a
    /// DNS-1123 label. Defaults to `context`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The kubeconfig context that reaches the cluster; any string, such as
    /// `gke_project_region_cluster`. Defaults to `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Kubeconfig file holding `context`; relative paths are relative to
    /// mesh.toml. Defaults to `$KUBECONFIG` or `~/.kube/config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
    /// The network the cluster belongs to. Clusters on the same network reach
    /// each other's pods directly; clusters on different networks only through
    /// the east-west gateway. Defaults to the cluster's name: a network of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// `primary` runs istiod and holds its peers' remote secrets; `remote` is
    /// controlled by the primaries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// The https address peers use to reach this cluster's API server, when the
    /// kubeconfig's address is private or on loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server: Option<String>,
    /// A remote's control plane: the mesh name of the primary whose istiod
    /// serves it (written to the remote's mesh namespace as
    /// `topology.istio.io/controlPlaneClusters`). Defaults to the only primary
    /// on the remote's network, else the mesh's only primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<String>,
    /// Use this cluster although its kubeconfig turns TLS verification off
    /// (`insecure-skip-tls-verify`) or reaches it over `http://`: reader
    /// tokens then travel to an unverified server (or in clear), and the
    /// remote secrets carry the same setting for istiod. Without it such a
    /// kubeconfig is refused before anything is read or any token minted;
    /// with it, plan and check warn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = false))]
    pub allow_insecure_transport: Option<bool>,
    /// The data plane this cluster's Istio install runs: `sidecar` or
    /// `ambient`. Defaults to `[mesh] data_plane`. Ambient clusters must be
    /// primaries (Istio's ambient multicluster is multi-primary only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_plane: Option<DataPlane>,
}

/// Whether a cluster runs its own control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs istiod; holds a remote secret for every other cluster of the mesh.
    #[default]
    Primary,
    /// Runs no istiod of its own; the primaries read it through remote secrets.
    Remote,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Remote => "remote",
        }
    }
}

/// `[network.<name>]`: how peers on other networks reach this network.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkEntry {
    /// The east-west gateway Service in the mesh namespace of each cluster
    /// on this network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "istio-eastwestgateway"))]
    pub gateway_service: Option<String>,
    /// The gateway's mTLS passthrough port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535), extend("default" = 15443))]
    pub gateway_port: Option<u16>,
}
