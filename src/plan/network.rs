//! Phase 2, network: each cluster's network label (and a remote's control
//! plane), the read-only reader account primaries read it with (on a remote,
//! also the account its control plane alone reads and writes it with), and,
//! with peers on other networks, the cross-network Gateway and the east-west
//! gateway Service as istiod judges it.

use super::owned::Owned;
use super::*;
use crate::topology::DataPlane;

impl<'a> Planner<'a> {
    pub(super) fn network(&mut self) {
        let reachable: Vec<_> = self.reachable().collect();
        for (cluster, facts) in reachable {
            // The network label on the mesh namespace, and on a remote the
            // control-plane annotation beside it.
            let current = facts.namespace.as_ref().and_then(|n| n.network.clone());
            let control_plane = cluster.control_plane.clone();
            let namespace = facts.namespace.as_ref();
            let unnamed = control_plane
                .as_deref()
                .filter(|p| !namespace.is_some_and(|n| n.controlled_by(p)));
            // Left from when the cluster was a remote: meshform's own value
            // goes with the next apply of the namespace; another's is reported.
            let stale = cluster.role == Role::Primary && namespace.is_some_and(|n| n.control_planes.is_some());
            let own_stale = stale && namespace.is_some_and(|n| n.control_planes_by_meshform);
            if current.as_deref() != Some(cluster.network.as_str()) || unnamed.is_some() || own_stale {
                let reason = match (&current, facts.namespace.is_some(), unnamed) {
                    (None, false, _) => "create the mesh namespace with its network label".to_string(),
                    (Some(old), _, Some(primary)) if *old == cluster.network => format!(
                        "name {primary}'s istiod as the remote's control plane ({}), so that it serves the remote's namespaces",
                        objects::CONTROL_PLANE_ANNOTATION
                    ),
                    (Some(old), _, None) if *old == cluster.network => format!(
                        "a primary runs its own istiod: take off the {} meshform wrote while it was a remote",
                        objects::CONTROL_PLANE_ANNOTATION
                    ),
                    (None, true, _) => format!("label the mesh namespace with network {:?}", cluster.network),
                    (Some(old), _, _) if self.network_change(cluster).is_some() => {
                        format!(
                            "network changes from {old:?} to {:?}, between detach and re-attach",
                            cluster.network
                        )
                    }
                    (Some(old), _, _) => format!("network label is {old:?}, the topology says {:?}", cluster.network),
                };
                let owners = namespace.map(|n| n.network_owners.as_slice()).unwrap_or_default();
                let changes_label = current.as_deref() != Some(cluster.network.as_str());
                let ns = self.ns().to_string();
                let what = format!("label {} of Namespace {ns}", objects::NETWORK_LABEL);
                let force = changes_label && self.conflict(cluster, &what, owners);
                let kind = ActionKind::SetNetwork {
                    network: cluster.network.clone(),
                    previous: current,
                    control_plane,
                    force,
                    restart_owed: self.restart_from(cluster).map(str::to_string),
                };
                self.push(Phase::Network, &cluster.name, kind, reason);
            }
            if stale
                && !own_stale
                && let Some(ids) = namespace.and_then(|n| n.control_planes.as_deref())
            {
                self.finding(
                    FindingKind::Warning,
                    "control_plane_on_primary",
                    &cluster.name,
                    format!(
                        "primary {}'s mesh namespace has {}={ids}: those istiods also manage its namespaces, beside its own",
                        cluster.name,
                        objects::CONTROL_PLANE_ANNOTATION
                    ),
                    format!(
                        "kubectl annotate namespace {} {}- (in {})",
                        self.ns(),
                        objects::CONTROL_PLANE_ANNOTATION,
                        cluster.name
                    ),
                );
            }

            // The reader account primaries use to read this cluster, and on
            // a remote the account its control plane alone holds a token of.
            if self.index.has_primary_peer(cluster) {
                self.reader(cluster, facts, ReaderScope::Read);
            }
            let controlled = cluster.role == Role::Remote
                && cluster
                    .control_plane
                    .as_deref()
                    .and_then(|p| self.index.desired(p))
                    .is_some_and(|d| d.cluster.role == Role::Primary);
            if controlled {
                self.reader(cluster, facts, ReaderScope::ControlPlane);
            }

            // The cross-network gateway: needed while any peer is on another network.
            let other_network = self
                .clusters
                .iter()
                .filter(|d| d.name != cluster.name && d.network != cluster.network)
                .map(|d| d.name.as_str())
                .next();
            // Each data plane's istiod finds the network's gateway its own way (ambient.rs).
            self.data_plane(cluster, facts);
            if cluster.data_plane == DataPlane::Ambient {
                self.ambient_gateway(cluster, facts, other_network);
                continue;
            }
            // Sidecars skip an ambient east-west Gateway (`pilot/pkg/xds/endpoints/ep_filters.go`,
            // `selectNetworkGateways`): meshform's goes.
            self.delete_ambient_gateway(
                cluster,
                facts,
                "a sidecar cluster is reached through its own gateway; no sidecar uses the ambient east-west one",
            );
            let network = &self.desired.networks[&cluster.network];
            match (other_network, &facts.gateway) {
                (Some(peer), gateway) => {
                    // A Gateway API Gateway of the user's install may be the
                    // network's gateway instead: never write a second one.
                    if facts.gateway_service.is_none() && self.sidecar_k8s_gateway_judged(cluster, facts) {
                        continue;
                    }
                    if facts.gateway_service.is_none() {
                        self.finding(
                            FindingKind::Blocker,
                            "gateway_service_missing",
                            &cluster.name,
                            format!(
                                "{} has peers on other networks (such as {peer}), but the east-west gateway Service {}/{} of network {:?} is missing",
                                cluster.name,
                                self.ns(),
                                network.gateway_service,
                                cluster.network
                            ),
                            format!(
                                "install Istio's east-west gateway for network {:?} in {} (istioctl install with samples/multicluster/gen-eastwest-gateway.sh), or set gateway_service in [network.{}]",
                                cluster.network, cluster.name, cluster.network
                            ),
                        );
                    }
                    if let (Some(_), Some(east_west)) = (&facts.gateway_service, &facts.east_west) {
                        self.east_west(cluster, east_west);
                    }
                    let hash = hashes::gateway_hash(network.gateway_port);
                    let content = objects::content_sha256(&objects::gateway_spec(network.gateway_port));
                    // Another port in mesh.toml changes the hash as well: an
                    // update, no edit.
                    let write = match Owned::judge(gateway.as_ref(), &hash, &content) {
                        Owned::Absent => Some((
                            false,
                            format!(
                                "peers on other networks (such as {peer}) reach this cluster only through its east-west gateway"
                            ),
                        )),
                        Owned::Edited => Some((
                            true,
                            format!(
                                "its spec was changed in the cluster; meshform writes it back (port {}, TLS AUTO_PASSTHROUGH, hosts *.local)",
                                network.gateway_port
                            ),
                        )),
                        Owned::Outdated => Some((true, "the gateway is not what meshform writes".to_string())),
                        Owned::Current => None,
                        Owned::Unmanaged { differs } => {
                            // Left alone. One that is not what meshform would
                            // write may stop cross-network traffic: a conflict
                            // (check fails on it), else a warning.
                            let other = if differs {
                                format!(
                                    ", and its spec is not what meshform writes (port {}, TLS AUTO_PASSTHROUGH, hosts *.local)",
                                    network.gateway_port
                                )
                            } else {
                                String::new()
                            };
                            self.finding(
                                if differs {
                                    FindingKind::Conflict
                                } else {
                                    FindingKind::Warning
                                },
                                "gateway_unmanaged",
                                &cluster.name,
                                format!(
                                    "Gateway {}/{} exists and is not managed by meshform{other}; it is used as it is",
                                    self.ns(),
                                    objects::CROSS_NETWORK_GATEWAY
                                ),
                                "delete it to let meshform manage the gateway".to_string(),
                            );
                            None
                        }
                    };
                    if let Some((update, reason)) = write {
                        let owners = gateway.as_ref().map(|g| g.content_owners.clone()).unwrap_or_default();
                        let what = format!("the spec of Gateway {}/{}", self.ns(), objects::CROSS_NETWORK_GATEWAY);
                        let force = update && self.conflict(cluster, &what, &owners);
                        let kind = ActionKind::EnsureGateway {
                            network: cluster.network.clone(),
                            port: network.gateway_port,
                            spec_hash: hash,
                            update,
                            force,
                        };
                        self.push(Phase::Network, &cluster.name, kind, reason);
                    }
                }
                (None, Some(gateway)) if gateway.managed => {
                    let kind = ActionKind::DeleteGateway {
                        precondition: Precondition {
                            uid: gateway.uid.clone(),
                            resource_version: gateway.resource_version.clone(),
                        },
                    };
                    let reason = "no peer on another network is left; the cluster is reached directly".to_string();
                    self.push(Phase::Network, &cluster.name, kind, reason);
                }
                (None, _) => {}
            }
        }
    }

    /// The account of `scope`, its ClusterRole and binding in `cluster`:
    /// judged by what the role grants and whom the binding names, not only
    /// by the spec-hash annotation meshform wrote.
    pub(super) fn reader(&mut self, cluster: &Cluster, facts: &ClusterFacts, scope: ReaderScope) {
        let mode = self.desired.mesh.tokens.mode;
        let hash = hashes::reader_hash(self.ns(), mode, scope);
        let reader = facts.account(scope);
        let name = scope.cluster_role(self.ns());
        let account = scope.service_account();
        // Hashed from what apply writes (the same functions, never a copy of
        // the rules), here per cluster, so rules that differ between clusters
        // are judged against each cluster's own.
        let rules = objects::rules_sha256(&objects::reader_rules(scope));
        let subjects = objects::subjects_sha256(&objects::reader_subjects(self.ns(), scope));
        let needs_token_secret = mode == TokenMode::Secret;
        let shared = hashes::shared_remote_reader_hash(self.ns(), mode);
        if scope == ReaderScope::Read && self.control_plane_on_reader_token(cluster, facts) {
            // The reader role as meshform wrote it for a remote before, with
            // the control plane's writes: kept while the control plane
            // writes through a reader token; its rotation (phase 4) moves it
            // to its own account, and the next plan makes the reader read-only.
            let writes = objects::rules_sha256(&objects::reader_rules(ReaderScope::ControlPlane));
            let kept = Owned::judge(reader.cluster_role.as_ref(), &shared, &writes) == Owned::Current
                && Owned::judge(reader.cluster_role_binding.as_ref(), &shared, &subjects) == Owned::Current
                && reader.service_account.is_some()
                && (!needs_token_secret || reader.token_secret.is_some());
            if kept {
                return;
            }
        }
        let role = Owned::judge(reader.cluster_role.as_ref(), &hash, &rules);
        let binding = Owned::judge(reader.cluster_role_binding.as_ref(), &hash, &subjects);
        let foreign = matches!(role, Owned::Unmanaged { .. }) || matches!(binding, Owned::Unmanaged { .. });
        let rules_edited = role == Owned::Edited;
        let subjects_edited = binding == Owned::Edited;
        let current = reader.service_account.is_some()
            && (!needs_token_secret || reader.token_secret.is_some())
            && role == Owned::Current
            && binding == Owned::Current;
        if foreign && !self.options.adopt {
            self.finding(
                FindingKind::Conflict,
                "reader_unmanaged",
                &cluster.name,
                format!("ClusterRole or ClusterRoleBinding {name} exists and is not managed by meshform"),
                "pass --adopt to let meshform take it over, or delete it".to_string(),
            );
            return;
        }
        if current {
            return;
        }
        let edits: Vec<String> = [
            rules_edited.then(|| format!("the rules of ClusterRole {name}")),
            subjects_edited.then(|| format!("the subjects of ClusterRoleBinding {name}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        let (who, needs) = match scope {
            ReaderScope::Read => ("primaries", "primaries need"),
            ReaderScope::ControlPlane => ("its control plane", "its control plane needs"),
        };
        // Something of the account exists: it was made before, and a missing
        // part was deleted since.
        let made_before =
            reader.cluster_role_binding.is_some() || reader.service_account.as_ref().is_some_and(|a| a.managed);
        let reason = if reader.cluster_role.is_none() && !made_before {
            match scope {
                ReaderScope::Read => "primaries read this cluster through a read-only reader account".to_string(),
                ReaderScope::ControlPlane => format!(
                    "{}, the remote's control plane, reads it and writes istio-ca-root-cert and the webhooks' CA \
                     bundle there through an account of its own ({account}); every other primary's token stays read-only",
                    cluster.control_plane.as_deref().unwrap_or_default()
                ),
            }
        } else if reader.service_account.is_none() {
            format!("the {} {account} is missing", scope.describe())
        } else if reader.cluster_role.is_none() {
            format!("the ClusterRole {name} is missing; without it {who} cannot read this cluster")
        } else if reader.cluster_role_binding.is_none() {
            format!("the ClusterRoleBinding {name} is missing; without it {who} cannot read this cluster")
        } else if !edits.is_empty() {
            format!(
                "{} changed in the cluster; meshform writes back what {needs} to read this cluster",
                edits.join(" and ")
            )
        } else if scope == ReaderScope::Read
            && reader.cluster_role.as_ref().and_then(|r| r.spec_hash.as_deref()) == Some(shared.as_str())
        {
            format!(
                "the reader account, which every primary's token but the control plane's comes from, becomes \
                 read-only: the control plane's writes (istio-ca-root-cert, the webhooks' CA bundle) moved to {}",
                objects::CONTROL_PLANE_SERVICE_ACCOUNT
            )
        } else if needs_token_secret && reader.token_secret.is_none() {
            format!(
                "the {} token Secret {} is missing",
                scope.describe(),
                scope.token_secret()
            )
        } else {
            format!("the {}'s role is not what meshform writes", scope.describe())
        };
        // Content read (not in older snapshots) that is not meshform's, in
        // any state: another manager's fields there are what a write would
        // conflict with.
        fn differs<'o>(o: &'o Option<ObjectFacts>, want: &str) -> Option<&'o ObjectFacts> {
            o.as_ref()
                .filter(|o| o.content_sha256.as_deref().is_some_and(|c| c != want))
        }
        // Adopting is consent to take the objects over, their fields with
        // them, as for a remote secret.
        let force = if foreign {
            true
        } else {
            let mut force = false;
            if let Some(o) = differs(&reader.cluster_role, &rules) {
                force |= self.conflict(
                    cluster,
                    &format!("the rules list of ClusterRole {name}"),
                    &o.content_owners,
                );
            }
            if let Some(o) = differs(&reader.cluster_role_binding, &subjects) {
                force |= self.conflict(
                    cluster,
                    &format!("the subjects list of ClusterRoleBinding {name}"),
                    &o.content_owners,
                );
            }
            force
        };
        self.push(
            Phase::Network,
            &cluster.name,
            ActionKind::EnsureReader {
                spec_hash: hash,
                scope,
                update: reader.cluster_role.is_some(),
                force,
            },
            reason,
        );
    }

    /// The east-west gateway Service of a cluster with peers on other
    /// networks, judged as istiod judges it
    /// (istio/istio `pilot/pkg/serviceregistry/kube/controller/network.go`):
    /// without the network label, a listed port and an address, istiod knows
    /// no gateway for the network and sends other networks raw pod IPs
    /// (`pilot/pkg/xds/endpoints/ep_filters.go`), with no error anywhere.
    pub(super) fn east_west(&mut self, cluster: &Cluster, east_west: &EastWestFacts) {
        let network = &self.desired.networks[&cluster.network];
        let service = format!("{}/{}", self.ns(), network.gateway_service);
        if east_west.network.as_deref() != Some(cluster.network.as_str()) {
            let reason = match &east_west.network {
                None => format!(
                    "istiod takes the Service as the gateway of network {:?} only with this label",
                    cluster.network
                ),
                Some(old) => format!(
                    "the gateway's network label is {old:?}, the topology says {:?}",
                    cluster.network
                ),
            };
            let what = format!("label {} of Service {service}", objects::NETWORK_LABEL);
            let force = self.conflict(cluster, &what, &east_west.network_owners);
            let kind = ActionKind::SetGatewayNetwork {
                service: network.gateway_service.clone(),
                network: cluster.network.clone(),
                previous: east_west.network.clone(),
                force,
            };
            self.push(Phase::Network, &cluster.name, kind, reason);
        }
        let port = east_west.istiod_port();
        if !east_west.ports.contains(&port) && !east_west.ports.contains(&objects::HBONE_GATEWAY_PORT) {
            self.finding(
                FindingKind::Blocker,
                "gateway_port_missing",
                &cluster.name,
                format!(
                    "the east-west gateway Service {service} in {} does not list port {port} (nor {}), so istiod does not use it as the gateway of network {:?}",
                    cluster.name,
                    objects::HBONE_GATEWAY_PORT,
                    cluster.network
                ),
                format!(
                    "add port {port} to Service {service} in {} (gen-eastwest-gateway.sh adds it as `tls`), or label the Service {}=<its mTLS port>",
                    cluster.name,
                    objects::GATEWAY_PORT_LABEL
                ),
            );
        } else if port != network.gateway_port && east_west.ports.contains(&port) {
            self.finding(
                FindingKind::Blocker,
                "gateway_port_mismatch",
                &cluster.name,
                format!(
                    "istiod sends other networks to port {port} of Service {service} in {}, but the Gateway meshform writes listens on gateway_port {}",
                    cluster.name, network.gateway_port
                ),
                format!(
                    "set gateway_port = {port} in [network.{}], or label Service {service} {}={}",
                    cluster.network,
                    objects::GATEWAY_PORT_LABEL,
                    network.gateway_port
                ),
            );
        }
        if east_west.addresses.is_empty() && !east_west.node_selector {
            let why = match east_west.service_type.as_deref() {
                Some("LoadBalancer") => "its load balancer has no address yet (pending)".to_string(),
                other => format!("it is of type {} and has no externalIPs", other.unwrap_or("ClusterIP")),
            };
            self.finding(
                FindingKind::Blocker,
                "gateway_address_missing",
                &cluster.name,
                format!(
                    "the east-west gateway Service {service} in {} has no address peers can reach: {why}",
                    cluster.name
                ),
                format!(
                    "wait for the load balancer of {service} in {} to be given an address (kubectl get service -n {} {} shows it), or set spec.externalIPs",
                    cluster.name,
                    self.ns(),
                    network.gateway_service
                ),
            );
        }
    }
}
