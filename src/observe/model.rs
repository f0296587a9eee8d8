//! What meshform found in the clusters: plain, serialisable data.
//!
//! This is the planner's input and the content of `meshform snapshot`. It is
//! redacted by construction: there is no field that can hold a token, a
//! kubeconfig or any Secret data, only facts drawn from them (an address, a
//! CA fingerprint, a token's expiry).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use foldhash::HashSet;
use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Version of the snapshot format; bumped on any breaking change.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 4;

/// Every cluster of a topology, as observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Observed {
    pub format_version: u32,
    pub mesh: String,
    pub namespace: String,
    /// When the clusters were read. Token rotation is judged against it.
    #[schemars(with = "String")]
    pub observed_at: Timestamp,
    /// By mesh name, one entry per cluster of the topology.
    pub clusters: BTreeMap<String, ClusterObservation>,
    /// The root certificate `[mesh.trust]` names (managed trust only): read
    /// from its file beside the clusters, public facts only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_root: Option<TrustRoot>,
    /// The root a rotation moves away from (`previous_root_cert`), read as
    /// `trust_root` is; none unless a rotation is declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_previous_root: Option<TrustRoot>,
}

/// The mesh's root certificate, as read from the file mesh.toml names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TrustRoot {
    Read(CertFacts),
    /// Missing, unreadable or not a CA certificate.
    Unreadable {
        detail: String,
    },
}

/// A certificate, by its public facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CertFacts {
    /// SHA-256 (hex) of its DER.
    pub sha256: String,
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_name: Option<String>,
    #[schemars(with = "String")]
    pub not_after: Timestamp,
    /// basicConstraints CA:TRUE.
    pub ca: bool,
    /// SHA-256 of the root (of those it was checked against) whose key
    /// signed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_by: Option<String>,
}

/// Istio's plug-in CA Secret `cacerts`, described without its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CaCertsFacts {
    #[serde(flatten)]
    pub object: ObjectFacts,
    /// `ca-cert.pem`: the cluster's intermediate CA, checked against the
    /// certificates of `root-cert.pem`; none when absent or unreadable.
    pub ca_cert: Option<CertFacts>,
    /// SHA-256 of each certificate in `root-cert.pem`, sorted.
    pub roots: Vec<String>,
    /// `ca-cert.pem`, `ca-key.pem`, `root-cert.pem` and `cert-chain.pem` are
    /// all there: istiod refuses to start on part of them
    /// (pilot/pkg/bootstrap/istio_ca.go, `checkCABundleCompleteness`).
    pub complete: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterObservation {
    /// The kubeconfig context used.
    pub context: String,
    #[serde(flatten)]
    pub state: ClusterState,
}

/// Whether the cluster could be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ClusterState {
    Reachable(Box<ClusterFacts>),
    /// Not read: nothing is known, so nothing may be removed on its account.
    Unknown {
        reason: UnknownReason,
        detail: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnknownReason {
    /// No connection (refused, DNS, TLS).
    Unreachable,
    /// 401: the credentials were refused.
    Unauthorized,
    /// 403: the credentials lack a permission meshform needs.
    Forbidden,
    Timeout,
    /// The kubeconfig has no such context or cannot be used.
    Kubeconfig,
    /// Two entries of the topology reach the same cluster.
    DuplicateIdentity,
    Other,
}

/// What meshform reads in one reachable cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterFacts {
    /// UID of the `kube-system` namespace: the cluster's identity, stable
    /// across renames and kubeconfig changes.
    pub identity: String,
    /// The API server address in the kubeconfig.
    pub server: String,
    /// SHA-256 (hex) of the CA bundle that verifies `server`; none when the
    /// kubeconfig relies on system roots.
    pub ca_sha256: Option<String>,
    /// The kubeconfig's `tls-server-name`: the name `server`'s certificate
    /// is verified against, when not the address's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    /// Why meshform's connection to the cluster is unverified, when
    /// `allow_insecure_transport` let it be (`sets insecure-skip-tls-verify`,
    /// `uses an http:// server`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_transport: Option<String>,
    /// The mesh namespace; none when it does not exist.
    pub namespace: Option<NamespaceFacts>,
    pub reader: ReaderFacts,
    /// The account a remote's control plane holds its token of, with its
    /// role and binding (`meshform-control-plane`); absent in snapshots
    /// taken before it existed.
    #[serde(default, skip_serializing_if = "ReaderFacts::is_absent")]
    pub control_plane_account: ReaderFacts,
    /// Secrets labelled `istio/multiCluster=true` in the mesh namespace, by name.
    pub remote_secrets: BTreeMap<String, RemoteSecretFacts>,
    /// The `cross-network-gateway` Gateway; none when absent.
    pub gateway: Option<ObjectFacts>,
    /// The `istiod-gateway` Gateway and `istiod-vs` VirtualService that
    /// expose istiod to remotes on other networks; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub istiod_gateway: Option<ObjectFacts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub istiod_virtual_service: Option<ObjectFacts>,
    /// Whether the network's east-west gateway Service exists.
    pub gateway_service: Option<ObjectFacts>,
    /// What istiod reads of that Service to route other networks to this
    /// one; none when the Service is absent.
    pub east_west: Option<EastWestFacts>,
    /// The Istio installs found in the mesh namespace, by revision
    /// (`default` for an install without one); empty when none is.
    pub installs: BTreeMap<String, InstallFacts>,
    /// SHA-256 (hex) of each certificate in `istio-ca-root-cert`'s
    /// `root-cert.pem` in the mesh namespace, sorted; none when the
    /// ConfigMap is absent. Certificates are public, but only these are kept.
    pub root_certs: Option<Vec<String>>,
    /// Secrets in the mesh namespace named like remote secrets
    /// (`istio-remote-secret-*`) that are neither labelled `istio/multiCluster`
    /// nor meshform's: not in `remote_secrets`, and never to be written over.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub unlabelled_secrets: BTreeSet<String>,
    /// Gateway API Gateways of the mesh namespace, by name; none when the
    /// Gateway API CRDs are not served (the list answers 404).
    pub k8s_gateways: Option<BTreeMap<String, K8sGatewayFacts>>,
    /// ztunnel's DaemonSet in the mesh namespace; none when absent.
    pub ztunnel: Option<ZtunnelFacts>,
    /// The data-less Secrets labelled `meshform.io/reader-binding=true` that
    /// reader tokens issued here are bound to, by name. Deleting one revokes
    /// every token bound to it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reader_bindings: BTreeMap<String, BindingFacts>,
    /// Istio's plug-in CA Secret `cacerts` in the mesh namespace; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certs: Option<CaCertsFacts>,
}

/// The east-west gateway Service as istiod's network registry reads it
/// (istio/istio `pilot/pkg/serviceregistry/kube/controller/network.go`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EastWestFacts {
    /// The `topology.istio.io/network` label: istiod takes a Service as the
    /// gateway of the network it names, and only with it.
    pub network: Option<String>,
    /// The `networking.istio.io/gatewayPort` label, as written.
    pub port_label: Option<String>,
    /// The ports the Service lists.
    pub ports: Vec<u16>,
    /// `spec.type`.
    pub service_type: Option<String>,
    /// `status.loadBalancer.ingress` IPs and hostnames (of a LoadBalancer)
    /// and `spec.externalIPs`: the addresses istiod sends other networks to.
    pub addresses: Vec<String>,
    /// A NodePort Service with the `traffic.istio.io/nodeSelector`
    /// annotation: istiod uses the selected nodes' addresses.
    pub node_selector: bool,
    /// Field managers other than meshform that own the network label.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_owners: Vec<String>,
}

impl EastWestFacts {
    /// The port istiod sends other networks to: the `gatewayPort` label,
    /// else 15443 (an unparsable label falls back too).
    pub fn istiod_port(&self) -> u16 {
        self.port_label
            .as_deref()
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or(crate::objects::DEFAULT_GATEWAY_PORT)
    }

    /// Where istiod sends other networks: the first address, at istiod's port.
    pub fn istiod_address(&self) -> Option<String> {
        let port = self.istiod_port();
        self.addresses.first().map(|a| format!("{a}:{port}"))
    }
}

/// A Gateway API `Gateway` as istiod's two network registries read it:
/// the sidecar one (`pilot/pkg/serviceregistry/kube/controller/network.go`,
/// `handleGatewayResource`) and the ambient one
/// (`pilot/pkg/serviceregistry/ambient/networks.go`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct K8sGatewayFacts {
    #[serde(flatten)]
    pub object: ObjectFacts,
    /// `spec.gatewayClassName`.
    pub class: String,
    /// The `topology.istio.io/network` label.
    pub network: Option<String>,
    /// The `networking.istio.io/gatewayPort` label, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_label: Option<String>,
    pub listeners: Vec<ListenerFacts>,
    /// `spec.addresses` of type `IPAddress` or `Hostname` (istiod skips the
    /// others and those without a type): where the sidecar registry sends
    /// other networks.
    pub spec_addresses: Vec<String>,
    /// `status.addresses`, filtered alike: where the ambient registry sends them.
    pub status_addresses: Vec<String>,
    /// Field managers other than meshform that own the network label.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_owners: Vec<String>,
}

/// One listener of a Gateway API Gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ListenerFacts {
    pub name: String,
    pub port: u16,
    /// `protocol` (`HBONE`, `TLS`, ...).
    pub protocol: String,
    /// `tls.mode` when the listener has a `tls` block (the CRD defaults it
    /// to `Terminate`); none without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_mode: Option<String>,
    /// The `gateway.istio.io/listener-protocol` TLS option.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener_mode: Option<String>,
}

impl K8sGatewayFacts {
    /// `pilot/pkg/serviceregistry/kube/conversion.go` `IsAutoPassthrough`:
    /// a TLS listener with the auto-passthrough option, or, on a Gateway
    /// labelled with a network, the one on the `gatewayPort` label's port
    /// (15443 by default).
    pub fn is_auto_passthrough(&self, listener: &ListenerFacts) -> bool {
        if listener.tls_mode.is_none() {
            return false;
        }
        if listener.listener_mode.as_deref() == Some(crate::objects::LISTENER_MODE_AUTO_PASSTHROUGH) {
            return true;
        }
        let expected = self.port_label.as_deref().unwrap_or("15443");
        self.network.is_some() && listener.port.to_string() == expected
    }

    /// The `address:port` pairs a sidecar-mode istiod takes from this
    /// Gateway for its network (`handleGatewayResource`): each spec address
    /// with each auto-passthrough or HBONE listener; none without the label.
    pub fn sidecar_gateways(&self) -> Vec<String> {
        if self.network.as_deref().is_none_or(str::is_empty) {
            return Vec::new();
        }
        let ports: Vec<u16> = self
            .listeners
            .iter()
            .filter(|l| self.is_auto_passthrough(l) || l.protocol == "HBONE")
            .map(|l| l.port)
            .collect();
        self.spec_addresses
            .iter()
            .flat_map(|a| ports.iter().map(move |p| format!("{a}:{p}")))
            .collect()
    }

    /// Whether an ambient istiod of another cluster takes it as its
    /// network's east-west gateway (`remoteK8sGatewayToNetworkGateways`):
    /// class `istio-east-west`, the network label, an `HBONE` listener with
    /// TLS `Terminate`. It is then used at its status addresses.
    pub fn is_ambient_east_west(&self) -> bool {
        self.class == crate::objects::EAST_WEST_GATEWAY_CLASS
            && self.network.as_deref().is_some_and(|n| !n.is_empty())
            && self.hbone_terminate().is_some()
    }

    /// The first `HBONE` listener with TLS `Terminate`.
    pub fn hbone_terminate(&self) -> Option<&ListenerFacts> {
        self.listeners
            .iter()
            .find(|l| l.protocol == "HBONE" && l.tls_mode.as_deref() == Some("Terminate"))
    }
}

/// ztunnel's identity in the mesh, from its DaemonSet's env
/// (`manifests/charts/ztunnel/templates/daemonset.yaml`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ZtunnelFacts {
    /// `ISTIO_META_CLUSTER_ID`, as set; the chart always sets it
    /// (`multiCluster.clusterName`, default `Kubernetes`).
    pub cluster_id: Option<String>,
    /// `NETWORK`; the chart sets it only when `network` is set.
    pub network: Option<String>,
}

impl ZtunnelFacts {
    /// The cluster id ztunnel reports: `Kubernetes` when unset.
    pub fn effective_cluster_id(&self) -> &str {
        self.cluster_id.as_deref().unwrap_or(crate::objects::DEFAULT_CLUSTER_ID)
    }
}

/// A boolean of istiod's env as Go's `strconv.ParseBool` reads it (Istio's
/// `pkg/env` registers booleans that way); none when absent or unparsable.
fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// One Istio control plane install (istiod and its injector) in the mesh namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InstallFacts {
    /// The istiod Deployment (`istiod` or `istiod-<rev>`), when found.
    pub istiod: Option<String>,
    /// The `CLUSTER_ID` istiod runs with.
    pub cluster_id: Option<String>,
    /// The injector ConfigMap (`istio-sidecar-injector[-<rev>]`), when found.
    pub injector: Option<String>,
    /// `global.multiCluster.clusterName` of its `values`: the cluster id sidecars get.
    pub injected_cluster_id: Option<String>,
    /// `global.network`: the network sidecars get when injected.
    pub injected_network: Option<String>,
    /// `global.meshID`.
    pub mesh_id: Option<String>,
    /// The selector-less Service (`istiod` or `istiod-<rev>`) of a remote
    /// install (Istio's `remote` profile): it stands in for the istiod the
    /// install does not run, at `remote_pilot_address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_istiod: Option<String>,
    /// The `values[-<rev>]` ConfigMap of a remote install
    /// (`istiodRemote.enabled` in its `merged-values`): found even when the
    /// install has no pilot address, so no `istiod` Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_values: Option<String>,
    /// Where a remote install's sidecars and injection webhook find istiod:
    /// the address its `remote_istiod` Service points at (the EndpointSlice's
    /// IP, or the ExternalName), else the injector's `global.remotePilotAddress`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_pilot_address: Option<String>,
    /// Networks whose gateways the install's `meshNetworks` declares (the
    /// `istio[-<rev>]` ConfigMap), sorted; meshform judges gateways by the
    /// labelled Services alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mesh_network_gateways: Vec<String>,
    /// The variables of istiod's env that say how it finds network gateways
    /// ([`crate::objects::ISTIOD_ENV_KEPT`]), as set on its Deployment
    /// (literal values only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub istiod_env: BTreeMap<String, String>,
    /// The mesh config's `serviceScopeConfigs` (the `mesh` key of the
    /// `istio[-<rev>]` ConfigMap), as compact JSON; none when not set. In
    /// ambient, they say which services other clusters see.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_scope_configs: Option<String>,
}

impl InstallFacts {
    fn env_bool(&self, key: &str, default: bool) -> bool {
        self.istiod_env
            .get(key)
            .and_then(|v| parse_go_bool(v))
            .unwrap_or(default)
    }

    /// istiod runs ambient (`PILOT_ENABLE_AMBIENT`, set by the chart's
    /// `ambient` profile; `pilot/pkg/features/ambient.go`, default false).
    pub fn ambient(&self) -> bool {
        self.env_bool(crate::objects::AMBIENT_ENV, false)
    }

    /// `AMBIENT_ENABLE_MULTI_NETWORK` (default false), which istiod ignores
    /// without ambient (`registerAmbient`).
    pub fn ambient_multi_network(&self) -> bool {
        self.ambient() && self.env_bool(crate::objects::AMBIENT_MULTI_NETWORK_ENV, false)
    }

    /// `PILOT_MULTI_NETWORK_DISCOVER_GATEWAY_API` (default true): a sidecar
    /// istiod takes labelled Gateway API Gateways as network gateways.
    pub fn gateway_api_networks(&self) -> bool {
        self.env_bool(crate::objects::GATEWAY_API_NETWORKS_ENV, true)
    }
}

/// A binding Secret: it stands for the primary holding the tokens bound to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BindingFacts {
    #[serde(flatten)]
    pub object: ObjectFacts,
    /// The `meshform.io/holder` annotation: the primary's mesh name.
    /// Shared by the holder's bindings in every peer ([`Observed::share_strings`]).
    #[serde(default, with = "shared")]
    #[schemars(with = "Option<String>")]
    pub holder: Option<Arc<str>>,
    /// The `meshform.io/holder-identity` annotation: its kube-system UID.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "shared")]
    #[schemars(with = "Option<String>")]
    pub holder_identity: Option<Arc<str>>,
}

/// Identity and ownership of one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ObjectFacts {
    pub uid: String,
    pub resource_version: String,
    /// Labelled as meshform's, for this mesh.
    pub managed: bool,
    /// The spec-hash annotation meshform wrote, if any: shared by every
    /// primary's secret for one peer ([`Observed::share_strings`]).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "shared")]
    #[schemars(with = "Option<String>")]
    pub spec_hash: Option<Arc<str>>,
    /// SHA-256 of the content meshform writes, as the cluster holds it now
    /// (the Gateway's spec, the reader ClusterRole's rules, its binding's
    /// subjects): edits by hand show here, not in the annotation. None when
    /// not read (snapshots taken before meshform read it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_sha256: Option<String>,
    /// Field managers other than meshform that own part of that content
    /// (`metadata.managedFields`): apply cannot write it back without force.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content_owners: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NamespaceFacts {
    #[serde(flatten)]
    pub object: ObjectFacts,
    /// The `topology.istio.io/network` label.
    pub network: Option<String>,
    /// The `topology.istio.io/controlPlaneClusters` annotation, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_planes: Option<String>,
    /// Field managers other than meshform that own the network label
    /// (`kubectl label` is `kubectl-label`): apply cannot change it without force.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_owners: Vec<String>,
    /// meshform's field manager owns that annotation (`metadata.managedFields`):
    /// applying the namespace without it takes it off.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub control_planes_by_meshform: bool,
    /// The `meshform.io/restart-owed-from` annotation: a relabel's workload
    /// restart has not run yet, and the sidecars have this network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_owed: Option<String>,
}

impl NamespaceFacts {
    /// Whether the istiod of cluster id `primary` manages this (remote)
    /// cluster: the annotation lists it, or is `*`.
    pub fn controlled_by(&self, primary: &str) -> bool {
        self.control_planes
            .as_deref()
            .is_some_and(|ids| ids.split(',').any(|id| id == "*" || id == primary))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReaderFacts {
    pub service_account: Option<ObjectFacts>,
    pub cluster_role: Option<ObjectFacts>,
    pub cluster_role_binding: Option<ObjectFacts>,
    /// The legacy token Secret of the reader account (`tokens.mode = "secret"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<ObjectFacts>,
}

impl ReaderFacts {
    /// None of the account's objects exists.
    pub fn is_absent(&self) -> bool {
        *self == ReaderFacts::default()
    }
}

impl ClusterFacts {
    /// The Gateway API Gateway istiod of a sidecar cluster on another
    /// network takes as `network`'s gateway here: not `istio-remote` (only
    /// the istiod holding it reads one), labelled with the network, at a
    /// spec address with an auto-passthrough or HBONE listener. By name.
    pub fn sidecar_k8s_gateway(&self, network: &str) -> Option<(&str, &K8sGatewayFacts)> {
        self.k8s_gateways
            .iter()
            .flatten()
            .filter(|(_, g)| g.class != crate::objects::REMOTE_GATEWAY_CLASS)
            .find(|(_, g)| g.network.as_deref() == Some(network) && !g.sidecar_gateways().is_empty())
            .map(|(name, g)| (name.as_str(), g))
    }

    /// The `istio-east-west` Gateway an ambient istiod of another cluster
    /// takes as `network`'s gateway here, by name (its status address may
    /// still be pending).
    pub fn ambient_gateway(&self, network: &str) -> Option<(&str, &K8sGatewayFacts)> {
        self.k8s_gateways
            .iter()
            .flatten()
            .find(|(_, g)| g.is_ambient_east_west() && g.network.as_deref() == Some(network))
            .map(|(name, g)| (name.as_str(), g))
    }

    /// The objects of the account of `scope`.
    pub fn account(&self, scope: crate::objects::ReaderScope) -> &ReaderFacts {
        match scope {
            crate::objects::ReaderScope::Read => &self.reader,
            crate::objects::ReaderScope::ControlPlane => &self.control_plane_account,
        }
    }

    pub fn account_mut(&mut self, scope: crate::objects::ReaderScope) -> &mut ReaderFacts {
        match scope {
            crate::objects::ReaderScope::Read => &mut self.reader,
            crate::objects::ReaderScope::ControlPlane => &mut self.control_plane_account,
        }
    }

    /// Which of the two accounts a token issued to the account of UID `uid`
    /// comes from; none when neither is that account (deleted since).
    pub fn account_of(&self, uid: &str) -> Option<crate::objects::ReaderScope> {
        [
            crate::objects::ReaderScope::Read,
            crate::objects::ReaderScope::ControlPlane,
        ]
        .into_iter()
        .find(|s| self.account(*s).service_account.as_ref().is_some_and(|a| a.uid == uid))
    }
}

/// A remote secret, described without its content.
///
/// What every primary's secret for one peer repeats (its address, CA,
/// identity, the account its token is of) is held as shared strings: a mesh
/// of N primaries has N² remote secrets, and one copy per peer of these is
/// a third of the observation's heap at 1,000 primaries
/// ([`Observed::share_strings`]). They serialise as plain strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RemoteSecretFacts {
    #[serde(flatten)]
    pub object: ObjectFacts,
    /// The cluster ids Istio takes from it: its data keys.
    pub cluster_ids: Vec<String>,
    /// The `networking.istio.io/cluster` annotation.
    #[serde(default, with = "shared")]
    #[schemars(with = "Option<String>")]
    pub annotated_cluster: Option<Arc<str>>,
    /// The API server address in the kubeconfig it carries.
    #[serde(default, with = "shared")]
    #[schemars(with = "Option<String>")]
    pub server: Option<Arc<str>>,
    #[serde(default, with = "shared")]
    #[schemars(with = "Option<String>")]
    pub ca_sha256: Option<Arc<str>>,
    /// The `tls-server-name` of the kubeconfig it carries.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "shared")]
    #[schemars(with = "Option<String>")]
    pub tls_server_name: Option<Arc<str>>,
    /// The peer's identity, as recorded by meshform when it wrote the secret.
    #[serde(default, with = "shared")]
    #[schemars(with = "Option<String>")]
    pub peer_identity: Option<Arc<str>>,
    pub token: TokenFacts,
    /// UID of the service account the token was issued to, from its claims.
    /// Deleting that account revokes the token (a re-created account has
    /// another UID), which its validity period does not show.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "shared")]
    #[schemars(with = "Option<String>")]
    pub token_account_uid: Option<Arc<str>>,
    /// UID of the binding Secret the token is bound to, from its claims;
    /// none for a token bound to nothing (legacy, or issued before binding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_binding_uid: Option<String>,
    /// The legacy token Secret (in the peer) a never-expiring token comes
    /// from, from its claims: deleting it revokes the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<String>,
    /// Which of [`crate::objects::OBJECT_COPY_ANNOTATIONS`] it carries: a
    /// copy of the secret, token included, that an adoption removes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub object_copies: Vec<String>,
}

/// What is known of the token inside a remote secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TokenFacts {
    /// A TokenRequest token with a lifetime.
    Bound {
        #[schemars(with = "String")]
        issued_at: Timestamp,
        #[schemars(with = "String")]
        expires_at: Timestamp,
    },
    /// A never-expiring token (legacy token Secret, as istioctl makes).
    Unbounded,
    /// None, or not readable.
    Unknown,
}

impl ClusterObservation {
    pub fn facts(&self) -> Option<&ClusterFacts> {
        match &self.state {
            ClusterState::Reachable(facts) => Some(facts),
            ClusterState::Unknown { .. } => None,
        }
    }
}

/// Clusters that trust each other, and the root certificates they share.
pub type TrustGroup<'a> = (BTreeSet<&'a str>, BTreeSet<&'a str>);

impl Observed {
    pub fn facts(&self, cluster: &str) -> Option<&ClusterFacts> {
        self.clusters.get(cluster).and_then(ClusterObservation::facts)
    }

    /// The roots of trust of `clusters` (those read, with an
    /// `istio-ca-root-cert`), grouped: clusters whose root sets share a
    /// certificate trust each other (so a rotation, with old and new root
    /// side by side, keeps one group). Sorted; more than one group cannot talk.
    pub fn trust_groups<'a>(&'a self, clusters: impl IntoIterator<Item = &'a str>) -> Vec<TrustGroup<'a>> {
        let mut groups: Vec<TrustGroup<'a>> = Vec::new();
        for name in clusters {
            let Some(roots) = self
                .facts(name)
                .and_then(|f| f.root_certs.as_ref())
                .filter(|r| !r.is_empty())
            else {
                continue;
            };
            let mut group = (
                BTreeSet::from([name]),
                roots.iter().map(String::as_str).collect::<BTreeSet<_>>(),
            );
            let (joined, apart): (Vec<_>, Vec<_>) = groups.into_iter().partition(|(_, r)| !r.is_disjoint(&group.1));
            for (names, roots) in joined {
                group.0.extend(names);
                group.1.extend(roots);
            }
            groups = apart;
            groups.push(group);
        }
        groups.sort();
        groups
    }

    pub fn facts_mut(&mut self, cluster: &str) -> Option<&mut ClusterFacts> {
        match &mut self.clusters.get_mut(cluster)?.state {
            ClusterState::Reachable(facts) => Some(facts),
            ClusterState::Unknown { .. } => None,
        }
    }

    /// Holds each string the remote secrets and binding Secrets of every
    /// cluster repeat per peer or holder once, shared by all of them (see
    /// [`RemoteSecretFacts`]). Observe reads each Secret on its own; this
    /// joins equal strings afterwards. UIDs, resourceVersions and names are
    /// left alone: each object has its own.
    pub fn share_strings(&mut self) {
        let mut strings = SharedStrings::default();
        for observation in self.clusters.values_mut() {
            let ClusterState::Reachable(facts) = &mut observation.state else {
                continue;
            };
            for secret in facts.remote_secrets.values_mut() {
                let fields = [
                    &mut secret.object.spec_hash,
                    &mut secret.annotated_cluster,
                    &mut secret.server,
                    &mut secret.ca_sha256,
                    &mut secret.tls_server_name,
                    &mut secret.peer_identity,
                    &mut secret.token_account_uid,
                ];
                fields.into_iter().flatten().for_each(|s| strings.share(s));
            }
            for binding in facts.reader_bindings.values_mut() {
                let fields = [&mut binding.holder, &mut binding.holder_identity];
                fields.into_iter().flatten().for_each(|s| strings.share(s));
            }
        }
    }
}

/// Serde of the shared strings: as plain strings, which is what serde's own
/// `Arc` support (its `rc` feature) would give, without rebuilding every
/// crate built on serde with that feature.
mod shared {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Arc<str>>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(text) => serializer.serialize_some(&**text),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Arc<str>>, D::Error> {
        Ok(Option::<String>::deserialize(deserializer)?.map(Arc::from))
    }
}

/// Equal strings held once ([`Observed::share_strings`]).
#[derive(Default)]
pub struct SharedStrings(HashSet<Arc<str>>);

impl SharedStrings {
    /// The one shared copy of `text`.
    pub fn get(&mut self, text: &str) -> Arc<str> {
        match self.0.get(text) {
            Some(shared) => shared.clone(),
            None => {
                let shared: Arc<str> = Arc::from(text);
                self.0.insert(shared.clone());
                shared
            }
        }
    }

    /// `text` replaced by the one shared copy of it.
    pub fn share(&mut self, text: &mut Arc<str>) {
        match self.0.get(text.as_ref()) {
            Some(shared) => *text = shared.clone(),
            None => {
                self.0.insert(text.clone());
            }
        }
    }
}
