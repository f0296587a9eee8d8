//! What the Istio install decides must fit the topology for traffic to
//! flow: istiod's cluster id, the injection network, the mesh id, a
//! remote's pilot address, one root of trust, and peers' API addresses.

use super::*;

impl<'a> Planner<'a> {
    /// Each Istio install's identity must be the topology's: istiod ignores
    /// a remote secret whose data key equals its own cluster id, proxies
    /// whose cluster id is not the key fail xDS and CA authentication, and
    /// sidecars take their network from the injector's `global.network`
    /// (istio/istio `pkg/kube/multicluster/secretcontroller.go`,
    /// `pkg/kube/inject/inject.go`).
    pub(super) fn installs(&mut self) {
        let reachable: Vec<_> = self.reachable().collect();
        let mesh = self.desired.mesh.name.clone();
        for (cluster, facts) in reachable {
            // Only where mesh.toml allows it: otherwise the cluster was refused
            // before it was read (access::ConnectError::InsecureTransport).
            if let Some(what) = &facts.insecure_transport {
                self.finding(
                    FindingKind::Warning,
                    "insecure_transport",
                    &cluster.name,
                    format!(
                        "the kubeconfig of {} {what}: meshform and every primary's istiod send reader tokens to its \
                         API server without verifying who answers (allow_insecure_transport = true)",
                        cluster.name
                    ),
                    format!(
                        "give the context of {} the API server's CA (certificate-authority-data) and an https:// \
                         server, then remove allow_insecure_transport",
                        cluster.name
                    ),
                );
            }
            if facts.installs.is_empty() {
                self.finding(
                    FindingKind::Warning,
                    "istio_not_installed",
                    &cluster.name,
                    format!(
                        "no Istio install (istiod Deployment, istio-sidecar-injector ConfigMap, or a remote install's istiod Service) was found in {} of {}",
                        self.ns(),
                        cluster.name
                    ),
                    format!(
                        "install Istio in {} with values.global.multiCluster.clusterName={}, values.global.network={} and values.global.meshID={mesh}",
                        cluster.name, cluster.name, cluster.network
                    ),
                );
                continue;
            }
            for (revision, install) in &facts.installs {
                if !install.mesh_network_gateways.is_empty() {
                    let configmap = match revision.as_str() {
                        "default" => objects::MESH_CONFIGMAP.to_string(),
                        rev => format!("{}-{rev}", objects::MESH_CONFIGMAP),
                    };
                    self.finding(
                        FindingKind::Warning,
                        "mesh_networks_gateways",
                        &cluster.name,
                        format!(
                            "meshNetworks in ConfigMap {}/{configmap} of {} declares gateways for {}: istiod uses them beside the labelled gateway Services, but meshform does not read them, so its gateway checks for those networks may not be what istiod does",
                            self.ns(),
                            cluster.name,
                            install.mesh_network_gateways.join(", ")
                        ),
                        "declare each network's gateway as Istio's multi-cluster guides do, by the topology.istio.io/network label on its east-west gateway Service (meshform writes it), and drop values.global.meshNetworks".to_string(),
                    );
                }
                let set = |key: &str, value: &str| {
                    let rev = if revision == "default" {
                        String::new()
                    } else {
                        format!(" --set revision={revision}")
                    };
                    format!(
                        "reinstall Istio in {} with `istioctl install{rev} --set {key}={value}` (the Helm value {key})",
                        cluster.name
                    )
                };
                let install_name = install
                    .istiod
                    .clone()
                    .or_else(|| install.injector.clone())
                    .or_else(|| install.remote_istiod.clone())
                    .or_else(|| install.remote_values.clone())
                    .unwrap_or_else(|| revision.clone());
                let ids = [
                    install.istiod.as_ref().map(|d| {
                        (
                            format!("istiod Deployment {d} runs with CLUSTER_ID"),
                            &install.cluster_id,
                        )
                    }),
                    install.injector.as_ref().map(|c| {
                        (
                            format!("injector ConfigMap {c} gives sidecars cluster id"),
                            &install.injected_cluster_id,
                        )
                    }),
                ];
                for (what, id) in ids.into_iter().flatten() {
                    let id = id.as_deref().unwrap_or(objects::DEFAULT_CLUSTER_ID);
                    if id != cluster.name {
                        self.finding(
                            FindingKind::Blocker,
                            "istiod_cluster_id",
                            &cluster.name,
                            format!(
                                "the {what} {id:?} in {}, not its mesh name: peers' remote secrets for {} do not match it",
                                cluster.name, cluster.name
                            ),
                            set("values.global.multiCluster.clusterName", &cluster.name),
                        );
                        break;
                    }
                }
                // A remote install (no istiod of its own) finds istiod at its
                // pilot address: as Istio's remote profile writes it, through
                // its `istiod` Service; an older shape, its injector's values.
                let source = match (&install.remote_istiod, &install.injector, &install.remote_values) {
                    (Some(service), ..) => Some(PilotSource::Service(service)),
                    (None, Some(injector), _) => Some(PilotSource::Injector(injector)),
                    (None, None, Some(values)) => Some(PilotSource::Values(values)),
                    (None, None, None) => None,
                };
                if let (Some(source), Some(primary), None) = (source, &cluster.control_plane, &install.istiod) {
                    self.remote_pilot(cluster, primary, source, install.remote_pilot_address.as_deref(), &set);
                }
                if let Some(injector) = &install.injector {
                    if install.injected_network.as_deref() != Some(cluster.network.as_str()) {
                        self.finding(
                            FindingKind::Blocker,
                            "injection_network",
                            &cluster.name,
                            format!(
                                "injector ConfigMap {injector} in {} puts sidecars on network {}, the topology says {:?}",
                                cluster.name,
                                install
                                    .injected_network
                                    .as_deref()
                                    .map_or("none (unset)".to_string(), |n| format!("{n:?}")),
                                cluster.network
                            ),
                            set("values.global.network", &cluster.network),
                        );
                    }
                    if install.mesh_id.as_deref() != Some(mesh.as_str()) {
                        self.finding(
                            FindingKind::Blocker,
                            "mesh_id",
                            &cluster.name,
                            format!(
                                "Istio install {install_name} in {} has mesh id {}, [mesh].name is {mesh:?}",
                                cluster.name,
                                install
                                    .mesh_id
                                    .as_deref()
                                    .map_or("none (unset)".to_string(), |n| format!("{n:?}")),
                            ),
                            set("values.global.meshID", &mesh),
                        );
                    }
                }
            }
        }
    }

    /// A remote's sidecars find istiod at the install's `remotePilotAddress`;
    /// on another network than its control plane only that primary's east-west
    /// gateway reaches istiod (Istio's multi-network primary-remote guide).
    pub(super) fn remote_pilot(
        &mut self,
        cluster: &Cluster,
        primary: &str,
        source: PilotSource,
        address: Option<&str>,
        set: &dyn Fn(&str, &str) -> String,
    ) {
        let gateway = self
            .desired
            .cluster(primary)
            .filter(|p| p.network != cluster.network)
            .and_then(|_| self.facts(primary))
            .and_then(|f| f.east_west.as_ref())
            .filter(|e| !e.addresses.is_empty());
        // Still installed against another primary's gateway (its control
        // plane changed in mesh.toml): that istiod serves it until the
        // remote is reinstalled, and that primary keeps meshform's exposure
        // while it does (exposure.rs), so the remote is never left without one.
        // The primary whose gateway the remote uses, as `pilot_users` finds
        // its users, asked of this remote alone: a remote for each primary,
        // each asking every cluster, was 40 million steps at 1,000 primaries.
        let uses = |address: &str| {
            self.facts(&cluster.name).is_some_and(|f| {
                f.installs
                    .values()
                    .any(|i| i.istiod.is_none() && i.remote_pilot_address.as_deref() == Some(address))
            })
        };
        let previous = address.filter(|a| uses(a)).and_then(|address| {
            self.reachable()
                .filter(|(p, _)| p.role == Role::Primary && p.name != primary)
                .find(|(_, f)| {
                    f.east_west
                        .as_ref()
                        .is_some_and(|e| e.addresses.iter().any(|g| g == address))
                })
                .map(|(p, _)| (p.name.clone(), address))
        });
        if let Some((served_by, address)) = previous {
            let value = gateway
                .and_then(|g| g.addresses.first().cloned())
                .unwrap_or_else(|| format!("<the address of {primary}'s istiod or east-west gateway>"));
            self.finding(
                FindingKind::Warning,
                "remote_pilot_previous",
                &cluster.name,
                format!(
                    "remote {} reaches istiod at {address}, the east-west gateway of {served_by}, whose istiod serves it until it is reinstalled for its control plane {primary}; meshform keeps the istiod exposure it made in {served_by} until then",
                    cluster.name
                ),
                set("values.global.remotePilotAddress", &value),
            );
            return;
        }
        let problem = match (address, gateway) {
            (None, _) => match source {
                PilotSource::Injector(injector) => format!(
                    "injector ConfigMap {injector} in remote {} has no global.remotePilotAddress: its sidecars cannot find {primary}'s istiod",
                    cluster.name
                ),
                PilotSource::Values(values) => format!(
                    "remote {} has Istio's remote profile installed (ConfigMap {values}) without global.remotePilotAddress, so no istiod Service: its sidecars cannot find {primary}'s istiod",
                    cluster.name
                ),
                PilotSource::Service(service) => format!(
                    "Service {service} in remote {} has no EndpointSlice with an address (the install's global.remotePilotAddress): its sidecars cannot find {primary}'s istiod",
                    cluster.name
                ),
            },
            (Some(address), Some(gateway)) if !gateway.addresses.iter().any(|a| a == address) => format!(
                "remote {} reaches istiod at {address}, but on another network than {primary} only {primary}'s east-west gateway ({}) gets there",
                cluster.name,
                gateway.addresses.join(", ")
            ),
            _ => return,
        };
        let value = gateway
            .and_then(|g| g.addresses.first().cloned())
            .unwrap_or_else(|| format!("<the address of {primary}'s istiod or east-west gateway>"));
        self.finding(
            FindingKind::Blocker,
            "remote_pilot_address",
            &cluster.name,
            problem,
            set("values.global.remotePilotAddress", &value),
        );
    }

    /// Cross-cluster mTLS needs one root of trust. Clusters whose roots share
    /// a certificate trust each other (so a rotation, with old and new root
    /// side by side, is fine); more than one such group cannot talk.
    pub(super) fn trust(&mut self) {
        let names: Vec<&str> = self.clusters.iter().map(|c| c.name.as_str()).collect();
        let groups = self.observed.trust_groups(names);
        if groups.len() < 2 {
            return;
        }
        let described: Vec<String> = groups
            .iter()
            .map(|(names, roots)| {
                let prints: Vec<String> = roots
                    .iter()
                    .map(|r| format!("sha256:{}", &r[..r.len().min(16)]))
                    .collect();
                format!(
                    "{} (root {})",
                    names.iter().copied().collect::<Vec<_>>().join(", "),
                    prints.join(", ")
                )
            })
            .collect();
        // The clusters outside the group most of the mesh shares are the
        // ones to fix (on a tie, every group's): apply holds back only
        // theirs, so a CA migration gone wrong in one cluster does not
        // stop token rotation everywhere.
        let largest = groups.iter().map(|(names, _)| names.len()).max().unwrap_or_default();
        let tie = groups.iter().filter(|(names, _)| names.len() == largest).count() > 1;
        let mut concerns: Vec<String> = groups
            .iter()
            .filter(|(names, _)| tie || names.len() < largest)
            .flat_map(|(names, _)| names.iter().map(|n| n.to_string()))
            .collect();
        concerns.sort();
        // Managed trust plans its own fix (cacerts from the mesh's root, then
        // istiod restarts): a blocker would hold back exactly those writes.
        let managed = !self.desired.mesh.trust.is_check();
        self.findings.push(Finding {
            kind: if managed { FindingKind::Warning } else { FindingKind::Blocker },
            code: "meshform::plan::root_of_trust".to_string(),
            cluster: None,
            concerns,
            message: format!(
                "the clusters have {} roots of trust that share no certificate: {}; traffic between them fails with CERTIFICATE_VERIFY_FAILED",
                groups.len(),
                described.join("; ")
            ),
            help: Some(if managed {
                "apply with --restart-workloads: meshform writes cacerts of the mesh's root into every primary and restarts each istiod that does not serve it yet".to_string()
            } else {
                format!(
                    "plug in intermediate CA certificates signed by one root (Secret cacerts in {} of every cluster, as in Istio's plug-in CA guide), then restart istiod",
                    self.ns()
                )
            }),
        });
    }

    /// istiod in a primary dials a peer's API server at the address in the
    /// remote secret: one on loopback or a private-only name cannot work.
    pub(super) fn addresses(&mut self) {
        let reachable: Vec<_> = self.reachable().collect();
        for (cluster, facts) in reachable {
            if !self.index.has_primary_peer(cluster) {
                continue;
            }
            let server = self.peer_server(cluster, facts);
            if let Some(why) = unreachable_from_peers(&server) {
                self.finding(
                    FindingKind::Warning,
                    "peer_address",
                    &cluster.name,
                    format!("primaries will reach {} at {server}, {why}", cluster.name),
                    format!(
                        "set `api_server` of cluster {:?} to an address its peers can reach",
                        cluster.name
                    ),
                );
            }
        }
    }
}

/// Why peers could not reach `server`, if they could not.
pub(super) fn unreachable_from_peers(server: &str) -> Option<&'static str> {
    let url = url::Url::parse(server).ok()?;
    match url.host()? {
        url::Host::Ipv4(ip) if ip.is_loopback() => Some("a loopback address"),
        url::Host::Ipv6(ip) if ip.is_loopback() => Some("a loopback address"),
        url::Host::Domain(host) => {
            let host = host.trim_end_matches('.').to_ascii_lowercase();
            if host == "localhost" || host.ends_with(".localhost") {
                Some("a loopback address")
            } else if [".local", ".internal", ".svc", ".cluster.local", ".localdomain"]
                .iter()
                .any(|suffix| host.ends_with(suffix))
                || !host.contains('.')
            {
                Some("a name that only resolves inside its own network")
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Where a remote install records its pilot address.
#[derive(Clone, Copy)]
pub(super) enum PilotSource<'a> {
    /// Its selector-less `istiod[-<rev>]` Service (Istio's `remote` profile).
    Service(&'a str),
    /// Its injector ConfigMap's `values` (an install that writes one).
    Injector(&'a str),
    /// Only its `values[-<rev>]` ConfigMap: installed without a pilot address.
    Values(&'a str),
}
