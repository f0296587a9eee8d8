//! Each network's gateway as the istiod of the cluster's data plane finds it
//! (issue 31), and what an ambient install must run with for other networks
//! to reach it: part of phase 2, network.
//!
//! - sidecar: beside the labelled Service, a labelled Gateway API Gateway
//!   with an auto-passthrough (or HBONE) listener and a spec address is the
//!   network's gateway (`pilot/pkg/serviceregistry/kube/controller/network.go`,
//!   `handleGatewayResource`; on by default, `PILOT_MULTI_NETWORK_DISCOVER_GATEWAY_API`).
//!   Class `istio-remote` is taken only by the istiod of the cluster holding
//!   it, so peers never find it there.
//! - ambient: istiod learns another cluster's network gateway only from an
//!   `istio-east-west` Gateway with an HBONE listener, TLS Terminate, at its
//!   status addresses (`pilot/pkg/serviceregistry/ambient/networks.go`,
//!   `remoteK8sGatewayToNetworkGateways`), and only with
//!   `AMBIENT_ENABLE_MULTI_NETWORK` (`pilot/pkg/features/ambient.go`).
//!
//! Findings and the removal of meshform's own classic Gateway only: meshform
//! does not yet write a Gateway API Gateway's label or the ambient Gateway
//! itself; each blocker names the command that does.

use super::*;
use crate::observe::model::K8sGatewayFacts;
use crate::topology::DataPlane;

impl<'a> Planner<'a> {
    /// What the install runs against what mesh.toml says it runs, for a
    /// cluster with an istiod; and ztunnel's identity on an ambient one.
    pub(super) fn data_plane(&mut self, cluster: &Cluster, facts: &ClusterFacts) {
        let istiods: Vec<_> = facts.installs.values().filter(|i| i.istiod.is_some()).collect();
        let runs = match (istiods.iter().any(|i| i.ambient()), istiods.is_empty()) {
            (_, true) => None,
            (true, _) => Some(DataPlane::Ambient),
            (false, _) => Some(DataPlane::Sidecar),
        };
        if let Some(runs) = runs.filter(|r| *r != cluster.data_plane) {
            self.finding(
                FindingKind::Blocker,
                "data_plane_mismatch",
                &cluster.name,
                format!(
                    "mesh.toml says {} runs the {} data plane, but its istiod runs {} ({}={})",
                    cluster.name,
                    cluster.data_plane.as_str(),
                    runs.as_str(),
                    objects::AMBIENT_ENV,
                    runs == DataPlane::Ambient
                ),
                format!(
                    "set data_plane = \"{}\" for {} in mesh.toml, or reinstall its Istio with the {} profile",
                    runs.as_str(),
                    cluster.name,
                    if cluster.data_plane == DataPlane::Ambient {
                        "ambient"
                    } else {
                        "default"
                    }
                ),
            );
        }
        if cluster.data_plane != DataPlane::Ambient {
            return;
        }
        let Some(ztunnel) = &facts.ztunnel else {
            self.finding(
                FindingKind::Blocker,
                "ztunnel_missing",
                &cluster.name,
                format!(
                    "{} is on the ambient data plane, but has no ztunnel DaemonSet in {}",
                    cluster.name,
                    self.ns()
                ),
                format!(
                    "install ztunnel in {} (helm install ztunnel istio/ztunnel -n {} --set multiCluster.clusterName={} --set network={})",
                    cluster.name,
                    self.ns(),
                    cluster.name,
                    cluster.network
                ),
            );
            return;
        };
        // ztunnel reports its own cluster id and network to istiod, which
        // places its workloads by them (`manifests/charts/ztunnel/templates/daemonset.yaml`).
        let helm = format!(
            "helm upgrade ztunnel istio/ztunnel -n {} --reuse-values --set multiCluster.clusterName={} --set network={} (in {})",
            self.ns(),
            cluster.name,
            cluster.network,
            cluster.name
        );
        if ztunnel.effective_cluster_id() != cluster.name {
            self.finding(
                FindingKind::Blocker,
                "ztunnel_cluster_id",
                &cluster.name,
                format!(
                    "ztunnel in {} runs as cluster {:?}, not {:?}",
                    cluster.name,
                    ztunnel.effective_cluster_id(),
                    cluster.name
                ),
                helm.clone(),
            );
        }
        if ztunnel.network.as_deref() != Some(cluster.network.as_str()) {
            self.finding(
                FindingKind::Blocker,
                "ztunnel_network",
                &cluster.name,
                format!(
                    "ztunnel in {} runs on network {}, not {:?}",
                    cluster.name,
                    ztunnel
                        .network
                        .as_deref()
                        .map_or("none".to_string(), |n| format!("{n:?}")),
                    cluster.network
                ),
                helm,
            );
        }
    }

    /// A Gateway API Gateway of `facts` that other networks' sidecar istiods
    /// take as the gateway of `cluster`'s network, by name.
    pub(super) fn sidecar_k8s_gateway(&self, cluster: &Cluster, facts: &'a ClusterFacts) -> Option<&'a str> {
        self.sidecar_k8s_candidates(facts)
            .find(|(_, g)| g.network.as_deref() == Some(cluster.network.as_str()) && !g.sidecar_gateways().is_empty())
            .map(|(name, _)| name)
    }

    /// Gateway API Gateways peers' istiods read (not `istio-remote`) with an
    /// auto-passthrough or HBONE listener.
    fn sidecar_k8s_candidates(&self, facts: &'a ClusterFacts) -> impl Iterator<Item = (&'a str, &'a K8sGatewayFacts)> {
        facts
            .k8s_gateways
            .iter()
            .flatten()
            .filter(|(_, g)| g.class != objects::REMOTE_GATEWAY_CLASS)
            .filter(|(_, g)| {
                g.listeners.iter().any(|l| {
                    l.protocol == "HBONE" || g.is_auto_passthrough(l) || l.port == objects::DEFAULT_GATEWAY_PORT
                })
            })
            .map(|(name, g)| (name.as_str(), g))
    }

    /// A sidecar cluster with peers on other networks and no gateway
    /// Service: whether a Gateway API Gateway stands in for it. Returns
    /// true when one is there (usable or not, with a blocker saying why).
    pub(super) fn sidecar_k8s_gateway_judged(&mut self, cluster: &Cluster, facts: &'a ClusterFacts) -> bool {
        if self.sidecar_k8s_gateway(cluster, facts).is_some() {
            return true;
        }
        let Some((name, gateway)) = self.sidecar_k8s_candidates(facts).next() else {
            return false;
        };
        let resource = format!("gateway.gateway.networking.k8s.io/{name}");
        if gateway.network.as_deref() != Some(cluster.network.as_str()) {
            self.finding(
                FindingKind::Blocker,
                "gateway_network_label",
                &cluster.name,
                format!(
                    "Gateway {}/{name} in {} is not labelled {}={:?}, so istiod does not take it as the network's gateway",
                    self.ns(),
                    cluster.name,
                    objects::NETWORK_LABEL,
                    cluster.network
                ),
                format!(
                    "kubectl --context {} label --overwrite -n {} {resource} {}={}",
                    cluster.context,
                    self.ns(),
                    objects::NETWORK_LABEL,
                    cluster.network
                ),
            );
        } else {
            self.finding(
                FindingKind::Blocker,
                "gateway_address_missing",
                &cluster.name,
                format!(
                    "Gateway {}/{name} in {} has no spec.addresses of type IPAddress or Hostname: istiod's sidecar registry sends other networks there only",
                    self.ns(),
                    cluster.name
                ),
                format!(
                    "set spec.addresses of {resource} in {} to the gateway's reachable address",
                    cluster.name
                ),
            );
        }
        true
    }

    /// An ambient cluster with peers on other networks (`peer`, one of them):
    /// its `istio-east-west` Gateway and istiod's multi-network switch.
    pub(super) fn ambient_gateway(&mut self, cluster: &Cluster, facts: &'a ClusterFacts, peer: Option<&str>) {
        // meshform's classic Gateway of a cluster that was sidecar: no ambient pod uses it.
        if let Some(gateway) = facts.gateway.as_ref().filter(|g| g.managed) {
            let kind = ActionKind::DeleteGateway {
                precondition: Precondition {
                    uid: gateway.uid.clone(),
                    resource_version: gateway.resource_version.clone(),
                },
            };
            let reason =
                "an ambient cluster is reached through its istio-east-west Gateway; no ambient pod uses this one"
                    .to_string();
            self.push(Phase::Network, &cluster.name, kind, reason);
        }
        let Some(peer) = peer else {
            return;
        };
        let ns = self.ns().to_string();
        for install in facts.installs.values().filter(|i| i.istiod.is_some()) {
            if install.ambient() && !install.ambient_multi_network() {
                self.finding(
                    FindingKind::Blocker,
                    "ambient_multi_network_off",
                    &cluster.name,
                    format!(
                        "istiod {} in {} runs without {}=true, so it knows no other network's gateway (peers such as {peer})",
                        install.istiod.as_deref().unwrap_or(objects::ISTIOD),
                        cluster.name,
                        objects::AMBIENT_MULTI_NETWORK_ENV
                    ),
                    format!(
                        "set pilot.env.{}=true in {}'s istiod install (helm upgrade istiod istio/istiod -n {ns} --reuse-values --set env.{}=true)",
                        objects::AMBIENT_MULTI_NETWORK_ENV,
                        cluster.name,
                        objects::AMBIENT_MULTI_NETWORK_ENV
                    ),
                );
            }
        }
        let Some(gateways) = &facts.k8s_gateways else {
            self.finding(
                FindingKind::Blocker,
                "gateway_api_missing",
                &cluster.name,
                format!(
                    "{} runs ambient with peers on other networks (such as {peer}), but does not serve the Gateway API CRDs its east-west gateway needs",
                    cluster.name
                ),
                format!(
                    "kubectl --context {} apply --server-side -f https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.6.0/standard-install.yaml",
                    cluster.context
                ),
            );
            return;
        };
        let east_west: Vec<(&String, &K8sGatewayFacts)> = gateways
            .iter()
            .filter(|(_, g)| g.class == objects::EAST_WEST_GATEWAY_CLASS)
            .collect();
        let ours: Vec<_> = east_west
            .iter()
            .filter(|(_, g)| g.is_ambient_east_west() && g.network.as_deref() == Some(cluster.network.as_str()))
            .collect();
        let generate = format!(
            "samples/multicluster/gen-eastwest-gateway.sh --network {} --ambient | kubectl --context {} apply -f -",
            cluster.network, cluster.context
        );
        let Some((name, gateway)) = ours.first() else {
            if let Some((name, g)) = east_west.iter().find(|(_, g)| g.hbone_terminate().is_some()) {
                self.finding(
                    FindingKind::Blocker,
                    "ambient_gateway_network",
                    &cluster.name,
                    format!(
                        "the east-west Gateway {ns}/{name} in {} is labelled {}, not {}={:?}: istiod of other networks does not take it as this network's gateway",
                        cluster.name,
                        g.network.as_deref().map_or("with no network".to_string(), |n| format!("{}={n:?}", objects::NETWORK_LABEL)),
                        objects::NETWORK_LABEL,
                        cluster.network
                    ),
                    format!(
                        "kubectl --context {} label --overwrite -n {ns} gateway.gateway.networking.k8s.io/{name} {}={}",
                        cluster.context,
                        objects::NETWORK_LABEL,
                        cluster.network
                    ),
                );
            } else if let Some((name, _)) = east_west.first() {
                self.finding(
                    FindingKind::Blocker,
                    "ambient_gateway_listener",
                    &cluster.name,
                    format!(
                        "the east-west Gateway {ns}/{name} in {} has no HBONE listener with TLS mode Terminate, which istiod requires of a network's gateway",
                        cluster.name
                    ),
                    format!(
                        "give it the listener Istio's sample writes (name mesh, port {}, protocol HBONE, tls.mode Terminate): {generate}",
                        objects::HBONE_GATEWAY_PORT
                    ),
                );
            } else {
                self.finding(
                    FindingKind::Blocker,
                    "ambient_gateway_missing",
                    &cluster.name,
                    format!(
                        "{} runs ambient with peers on other networks (such as {peer}), but has no {} Gateway for network {:?}: istiod of other networks drops its workloads (\"No network gateway found\")",
                        cluster.name,
                        objects::EAST_WEST_GATEWAY_CLASS,
                        cluster.network
                    ),
                    generate,
                );
            }
            return;
        };
        if gateway.status_addresses.is_empty() {
            self.finding(
                FindingKind::Blocker,
                "ambient_gateway_pending",
                &cluster.name,
                format!(
                    "the east-west Gateway {ns}/{name} in {} has no status address yet (pending): istiod of other networks drops its workloads until it has one",
                    cluster.name
                ),
                format!(
                    "wait for its load balancer to be given an address (kubectl --context {} get gateway -n {ns} {name} shows it under ADDRESS)",
                    cluster.context
                ),
            );
        }
        if ours.len() > 1 {
            let names: Vec<&str> = ours.iter().map(|(n, _)| n.as_str()).collect();
            self.finding(
                FindingKind::Warning,
                "ambient_gateway_duplicate",
                &cluster.name,
                format!(
                    "{} has {} east-west Gateways for network {:?} ({}); istiod takes the first it sees",
                    cluster.name,
                    names.len(),
                    cluster.network,
                    names.join(", ")
                ),
                format!("delete all but one of them in {}", cluster.name),
            );
        }
    }

    /// Ambient clusters whose mesh configs scope services differently: a
    /// service global in one is local in another, so other clusters see it
    /// from one side only (`pilot/pkg/serviceregistry/ambient/services.go`,
    /// `matchServiceScope`). Said once for the mesh.
    pub(super) fn service_scopes(&mut self) {
        let mut scopes: BTreeMap<Option<&str>, Vec<&str>> = BTreeMap::new();
        for (cluster, facts) in self.reachable() {
            if cluster.data_plane != DataPlane::Ambient {
                continue;
            }
            let scope = facts.installs.values().find_map(|i| i.service_scope_configs.as_deref());
            scopes.entry(scope).or_default().push(&cluster.name);
        }
        if scopes.len() < 2 {
            return;
        }
        let groups: Vec<String> = scopes
            .iter()
            .map(|(scope, names)| format!("{} ({})", names.join(", "), scope.unwrap_or("none")))
            .collect();
        let first = scopes.values().next().and_then(|n| n.first()).map(|n| n.to_string());
        self.finding(
            FindingKind::Warning,
            "service_scope_differs",
            first.as_deref().unwrap_or_default(),
            format!(
                "the ambient clusters' mesh configs set different serviceScopeConfigs: {}",
                groups.join("; ")
            ),
            "give every ambient cluster the same meshConfig.serviceScopeConfigs".to_string(),
        );
    }
}
