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
//! meshform writes the network label of the Gateway API Gateway the user's
//! install made (that field only), or, on an ambient cluster with none, the
//! `istio-east-west` Gateway itself as Istio's sample renders it (meshform's
//! own then, written back when edited). What it cannot write (the CRDs,
//! istiod's and ztunnel's settings, an address) is a blocker naming the fix.

use super::owned::Owned;
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
        facts.sidecar_k8s_gateway(&cluster.network).map(|(name, _)| name)
    }

    /// Gateway API Gateways peers' istiods read (not `istio-remote`) with an
    /// auto-passthrough or HBONE listener.
    fn sidecar_k8s_candidates(&self, facts: &'a ClusterFacts) -> impl Iterator<Item = (&'a str, &'a K8sGatewayFacts)> {
        facts
            .k8s_gateways
            .iter()
            .flatten()
            .filter(|(_, g)| g.class != objects::REMOTE_GATEWAY_CLASS)
            // meshform's own ambient one is deleted on a sidecar cluster, never taken.
            .filter(|(name, g)| own_ambient_gateway(name, g).is_none())
            .filter(|(_, g)| {
                g.listeners.iter().any(|l| {
                    l.protocol == "HBONE" || g.is_auto_passthrough(l) || l.port == objects::DEFAULT_GATEWAY_PORT
                })
            })
            .map(|(name, g)| (name.as_str(), g))
    }

    /// A sidecar cluster with peers on other networks and no gateway
    /// Service: whether a Gateway API Gateway stands in for it. Returns
    /// true when one is there (usable, labelled by this plan, or with a
    /// blocker saying why not).
    pub(super) fn sidecar_k8s_gateway_judged(&mut self, cluster: &Cluster, facts: &'a ClusterFacts) -> bool {
        if self.sidecar_k8s_gateway(cluster, facts).is_some() {
            return true;
        }
        let Some((name, gateway)) = self.sidecar_k8s_candidates(facts).next() else {
            return false;
        };
        // The user's install made it: meshform writes its network label
        // (that field only), never a second gateway.
        if gateway.network.as_deref() != Some(cluster.network.as_str()) {
            self.label_k8s_gateway(cluster, name, gateway);
        }
        if gateway.spec_addresses.is_empty() {
            let resource = format!("gateway.gateway.networking.k8s.io/{name}");
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

    /// Plans the network label of the user's Gateway API Gateway `name`,
    /// blocked (unless `--force-conflicts`) when another field manager owns it.
    fn label_k8s_gateway(&mut self, cluster: &Cluster, name: &str, gateway: &K8sGatewayFacts) {
        let reason = match &gateway.network {
            None => format!(
                "istiod takes the Gateway as the gateway of network {:?} only with this label",
                cluster.network
            ),
            Some(old) => format!(
                "the Gateway's network label is {old:?}, the topology says {:?}",
                cluster.network
            ),
        };
        let what = format!("label {} of Gateway {}/{name}", objects::NETWORK_LABEL, self.ns());
        let force = self.conflict(cluster, &what, &gateway.network_owners);
        let kind = ActionKind::SetK8sGatewayNetwork {
            gateway: name.to_string(),
            network: cluster.network.clone(),
            previous: gateway.network.clone(),
            force,
        };
        self.push(Phase::Network, &cluster.name, kind, reason);
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
            self.delete_ambient_gateway(
                cluster,
                facts,
                "no peer on another network is left; the cluster is reached directly",
            );
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
        // meshform's own east-west Gateway, judged by content as the classic one is.
        let hash = hashes::ambient_gateway_hash(&cluster.network);
        let content = objects::content_sha256(&objects::ambient_gateway_content(&objects::ambient_gateway_spec()));
        let named = gateways.get(objects::AMBIENT_EAST_WEST_GATEWAY);
        if let Some(own) = named.filter(|g| g.object.managed) {
            let mut state = Owned::judge(Some(&own.object), &hash, &content);
            if state == Owned::Current && own.network.as_deref() != Some(cluster.network.as_str()) {
                state = Owned::Edited;
            }
            let reason = match state {
                Owned::Edited => format!(
                    "it was changed in the cluster; meshform writes it back (class {}, listener {} HBONE on {}, TLS Terminate, network {:?})",
                    objects::EAST_WEST_GATEWAY_CLASS,
                    objects::AMBIENT_LISTENER,
                    objects::HBONE_GATEWAY_PORT,
                    cluster.network
                ),
                Owned::Outdated => "the east-west Gateway is not what meshform writes".to_string(),
                _ => String::new(),
            };
            if matches!(state, Owned::Edited | Owned::Outdated) {
                let mut owners = own.object.content_owners.clone();
                owners.extend(own.network_owners.iter().cloned());
                owners.sort();
                owners.dedup();
                let what = format!("Gateway {ns}/{}", objects::AMBIENT_EAST_WEST_GATEWAY);
                let force = self.conflict(cluster, &what, &owners);
                let kind = ActionKind::EnsureAmbientGateway {
                    network: cluster.network.clone(),
                    spec_hash: hash,
                    update: true,
                    force,
                };
                self.push(Phase::Network, &cluster.name, kind, reason);
                return;
            }
        }
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
                // The user's east-west Gateway: meshform labels it (that field only).
                self.label_k8s_gateway(cluster, name, g);
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
            } else if named.is_some() {
                // The name is someone else's, of another class: never written over.
                self.finding(
                    FindingKind::Blocker,
                    "ambient_gateway_missing",
                    &cluster.name,
                    format!(
                        "{} runs ambient with peers on other networks (such as {peer}), but has no {} Gateway for network {:?}, and the Gateway {ns}/{} meshform would write is another's, of another class",
                        cluster.name,
                        objects::EAST_WEST_GATEWAY_CLASS,
                        cluster.network,
                        objects::AMBIENT_EAST_WEST_GATEWAY
                    ),
                    format!(
                        "rename or delete Gateway {ns}/{} in {}, or make an east-west Gateway yourself: {generate}",
                        objects::AMBIENT_EAST_WEST_GATEWAY,
                        cluster.name
                    ),
                );
            } else {
                let kind = ActionKind::EnsureAmbientGateway {
                    network: cluster.network.clone(),
                    spec_hash: hash,
                    update: false,
                    force: false,
                };
                let reason = format!(
                    "peers on other networks (such as {peer}) reach this ambient cluster only through an {} Gateway; Istio deploys it and gives it its address",
                    objects::EAST_WEST_GATEWAY_CLASS
                );
                self.push(Phase::Network, &cluster.name, kind, reason);
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

    /// Deletes the `istio-eastwestgateway` meshform wrote (its labels, of
    /// class `istio-east-west`), when no ambient peer on another network
    /// needs it; a user's Gateway, or one of another class, is left alone.
    pub(super) fn delete_ambient_gateway(&mut self, cluster: &Cluster, facts: &ClusterFacts, reason: &str) {
        let own = facts
            .k8s_gateways
            .iter()
            .flatten()
            .find_map(|(name, g)| own_ambient_gateway(name, g));
        if let Some(own) = own {
            let kind = ActionKind::DeleteAmbientGateway {
                precondition: Precondition {
                    uid: own.uid.clone(),
                    resource_version: own.resource_version.clone(),
                },
            };
            self.push(Phase::Network, &cluster.name, kind, reason.to_string());
        }
    }

    /// Sidecar and ambient clusters on different networks: Istio has no
    /// cross-network path between the two data planes. A sidecar drops a
    /// gateway with no mTLS port, which the ambient `istio-east-west` one is
    /// (`pilot/pkg/xds/endpoints/ep_filters.go`, `selectNetworkGateways`:
    /// "Sidecar proxies cannot talk to ambient E/W gateway for now"), and
    /// an ambient istiod takes only HBONE gateways (same function), which a
    /// sidecar network's AUTO_PASSTHROUGH gateway is not. Upstream:
    /// https://github.com/istio/istio/issues/60716 (the question, open),
    /// https://github.com/istio/istio/issues/57878 (sidecars sent to the
    /// ambient gateway fail), https://github.com/istio/istio/pull/61704
    /// (experimental interop, open), and enabling ambient multi-network in
    /// a sidecar mesh changes its traffic
    /// (https://github.com/istio/istio/issues/61746, #60609, #61713).
    /// Clusters of both data planes on one network reach each other's pods
    /// directly, which is not judged here. A warning, said once for the
    /// mesh: each data plane's own pairs still work.
    pub(super) fn mixed_data_planes(&mut self) {
        let mut sidecars: Vec<&str> = Vec::new();
        let mut ambients: Vec<&str> = Vec::new();
        for s in self.clusters.iter().filter(|c| c.data_plane == DataPlane::Sidecar) {
            for a in self.clusters.iter().filter(|c| c.data_plane == DataPlane::Ambient) {
                if s.network != a.network {
                    sidecars.push(&s.name);
                    ambients.push(&a.name);
                }
            }
        }
        if sidecars.is_empty() {
            return;
        }
        for names in [&mut sidecars, &mut ambients] {
            names.sort();
            names.dedup();
        }
        let message = format!(
            "sidecar clusters {} and ambient clusters {} are on different networks: Istio has no cross-network path between the two data planes (sidecars skip the ambient east-west gateway, ambient skips the sidecar one), so their calls to each other reach only endpoints on the caller's network",
            sidecars.join(", "),
            ambients.join(", ")
        );
        let mut concerns: Vec<String> = sidecars.iter().chain(&ambients).map(|c| c.to_string()).collect();
        concerns.sort();
        self.findings.push(Finding {
            kind: FindingKind::Warning,
            code: "meshform::plan::mixed_data_plane_networks".to_string(),
            cluster: None,
            message,
            help: Some(
                "put clusters whose workloads call each other on one data plane (data_plane in mesh.toml, after migrating the workloads) or on one network; cross-network interop is experimental upstream (istio/istio#61704)"
                    .to_string(),
            ),
            concerns,
        });
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

/// meshform's own ambient east-west Gateway: its name, meshform's labels
/// (`managed`), and the class it writes.
fn own_ambient_gateway<'f>(name: &str, gateway: &'f K8sGatewayFacts) -> Option<&'f ObjectFacts> {
    (name == objects::AMBIENT_EAST_WEST_GATEWAY
        && gateway.object.managed
        && gateway.class == objects::EAST_WEST_GATEWAY_CLASS)
        .then_some(&gateway.object)
}
