//! Made-up observations of a topology, for tests, benchmarks and examples:
//! every cluster reachable, with a stable identity and address.

use std::collections::BTreeMap;

use jiff::Timestamp;

use super::model::{
    ClusterFacts, ClusterObservation, ClusterState, EastWestFacts, InstallFacts, NamespaceFacts, ObjectFacts, Observed,
    ReaderFacts, SNAPSHOT_FORMAT_VERSION, ZtunnelFacts,
};
use crate::objects::{self, DEFAULT_GATEWAY_PORT};
use crate::topology::{DataPlane, Role, Topology};

/// Each cluster as Istio installs it, correctly for the topology: the mesh
/// namespace (unlabelled), istiod with the cluster's name, network and mesh
/// id, one shared root of trust, and the east-west gateway Service labelled
/// with its network and given an address; meshform has written nothing yet.
/// An ambient cluster runs ambient's install instead: istiod with ambient
/// multi-network on, ztunnel with the cluster's name and network, the
/// Gateway API CRDs, and no east-west gateway yet.
pub fn fresh(topology: &Topology, now: Timestamp) -> Observed {
    let clusters = topology
        .clusters
        .iter()
        .map(|c| {
            let object = |kind: &str| ObjectFacts {
                uid: format!("{kind}-{}", c.name),
                resource_version: "1".to_string(),
                managed: false,
                spec_hash: None,
                content_sha256: None,
                content_owners: Vec::new(),
            };
            let ambient = c.data_plane == DataPlane::Ambient;
            let facts = ClusterFacts {
                identity: format!("kube-system-{}", c.name),
                server: format!("https://{}.clusters.example.com:6443", c.name),
                ca_sha256: Some(crate::objects::sha256_hex(c.name.as_bytes())),
                tls_server_name: None,
                insecure_transport: None,
                namespace: Some(NamespaceFacts {
                    object: object("ns"),
                    network: None,
                    control_planes: None,
                    network_owners: Vec::new(),
                    control_planes_by_meshform: false,
                    restart_owed: None,
                }),
                reader: ReaderFacts::default(),
                control_plane_account: ReaderFacts::default(),
                remote_secrets: BTreeMap::new(),
                gateway: None,
                istiod_gateway: None,
                istiod_virtual_service: None,
                gateway_service: (!ambient).then(|| object("svc")),
                unlabelled_secrets: Default::default(),
                east_west: (!ambient).then(|| EastWestFacts {
                    network: Some(c.network.clone()),
                    port_label: None,
                    ports: vec![DEFAULT_GATEWAY_PORT],
                    service_type: Some("LoadBalancer".to_string()),
                    addresses: vec![format!("{}.gateways.example.com", c.name)],
                    node_selector: false,
                    network_owners: Vec::new(),
                }),
                installs: BTreeMap::from([(
                    "default".to_string(),
                    InstallFacts {
                        // A remote's install runs no istiod (Istio's `remote` profile).
                        istiod: (c.role == Role::Primary).then(|| objects::ISTIOD.to_string()),
                        cluster_id: (c.role == Role::Primary).then(|| c.name.clone()),
                        // Istio's `remote` profile writes no injector ConfigMap
                        // but a selector-less `istiod` Service pointing at istiod.
                        injector: (c.role == Role::Primary).then(|| objects::INJECTOR_CONFIGMAP.to_string()),
                        remote_istiod: (c.role == Role::Remote).then(|| objects::ISTIOD.to_string()),
                        remote_values: (c.role == Role::Remote).then(|| objects::VALUES_CONFIGMAP.to_string()),
                        // Read from the injector ConfigMap's values.
                        injected_cluster_id: (c.role == Role::Primary).then(|| c.name.clone()),
                        injected_network: (c.role == Role::Primary).then(|| c.network.clone()),
                        mesh_id: (c.role == Role::Primary).then(|| topology.mesh.name.clone()),
                        // A remote's sidecars reach istiod through its control
                        // plane's east-west gateway, as Istio's guides install it.
                        remote_pilot_address: c
                            .control_plane
                            .as_ref()
                            .map(|primary| format!("{primary}.gateways.example.com")),
                        mesh_network_gateways: Vec::new(),
                        istiod_env: if ambient {
                            [objects::AMBIENT_ENV, objects::AMBIENT_MULTI_NETWORK_ENV]
                                .into_iter()
                                .map(|k| (k.to_string(), "true".to_string()))
                                .collect()
                        } else {
                            BTreeMap::new()
                        },
                        service_scope_configs: None,
                    },
                )]),
                root_certs: Some(vec![crate::objects::sha256_hex(b"shared root")]),
                k8s_gateways: ambient.then(BTreeMap::new),
                ztunnel: ambient.then(|| ZtunnelFacts {
                    cluster_id: Some(c.name.clone()),
                    network: Some(c.network.clone()),
                }),
                reader_bindings: BTreeMap::new(),
                ca_certs: None,
            };
            let observation = ClusterObservation {
                context: c.context.clone(),
                state: ClusterState::Reachable(Box::new(facts)),
            };
            (c.name.clone(), observation)
        })
        .collect();
    Observed {
        format_version: SNAPSHOT_FORMAT_VERSION,
        mesh: topology.mesh.name.clone(),
        namespace: topology.mesh.namespace.clone(),
        observed_at: now,
        clusters,
        trust_root: None,
        trust_previous_root: None,
    }
}

/// `observed` after Istio was reinstalled for `topology` (as a rename or a
/// network move needs, before meshform relabels and re-attaches): each
/// install's cluster id, injection network and mesh id are the topology's.
/// Labels meshform writes are left as found.
pub fn reinstall_for(observed: &mut Observed, topology: &Topology) {
    for cluster in &topology.clusters {
        if let Some(ClusterState::Reachable(facts)) = observed.clusters.get_mut(&cluster.name).map(|c| &mut c.state) {
            for install in facts.installs.values_mut() {
                install.cluster_id = Some(cluster.name.clone());
                if install.injector.is_some() {
                    install.injected_cluster_id = Some(cluster.name.clone());
                    install.injected_network = Some(cluster.network.clone());
                    install.mesh_id = Some(topology.mesh.name.clone());
                }
            }
        }
    }
}

/// Fills in what observe reads of a mesh meshform has written, beyond what
/// [`crate::plan::simulate::simulate`] records of its writes: the service
/// account UID in each remote secret's token claims (the peer's reader
/// account, or for a remote's control plane its control-plane account, as
/// TokenRequest issues it) and the content of each account's ClusterRole
/// and binding, and the maps laid out and the strings shared as observe
/// builds them ([`Observed::share_strings`]). The planner
/// benchmarks plan against this, so that every check the planner makes of
/// an observation is in what they measure.
pub fn as_read(observed: &mut Observed, topology: &Topology) {
    use crate::objects::ReaderScope;
    let uid = |observed: &Observed, name: &str, scope: ReaderScope| {
        Some(
            observed
                .facts(name)?
                .account(scope)
                .service_account
                .as_ref()?
                .uid
                .as_str()
                .into(),
        )
    };
    let accounts: BTreeMap<(String, ReaderScope), std::sync::Arc<str>> = topology
        .clusters
        .iter()
        .flat_map(|c| [(c, ReaderScope::Read), (c, ReaderScope::ControlPlane)])
        .filter_map(|(c, scope)| Some(((c.name.clone(), scope), uid(observed, &c.name, scope)?)))
        .collect();
    for cluster in &topology.clusters {
        let Some(facts) = observed.facts_mut(&cluster.name) else {
            continue;
        };
        for scope in [ReaderScope::Read, ReaderScope::ControlPlane] {
            let rules = objects::rules_sha256(&objects::reader_rules(scope));
            let subjects = objects::subjects_sha256(&objects::reader_subjects(&topology.mesh.namespace, scope));
            let account = facts.account_mut(scope);
            if let Some(role) = account.cluster_role.as_mut().filter(|r| r.managed) {
                role.content_sha256 = Some(rules);
            }
            if let Some(binding) = account.cluster_role_binding.as_mut().filter(|b| b.managed) {
                binding.content_sha256 = Some(subjects);
            }
        }
        for secret in facts.remote_secrets.values_mut().filter(|s| s.object.managed) {
            let Some(peer) = secret.cluster_ids.first() else {
                continue;
            };
            let scope = match topology.cluster(peer) {
                Some(p) if p.role == Role::Remote && p.control_plane.as_deref() == Some(cluster.name.as_str()) => {
                    ReaderScope::ControlPlane
                }
                _ => ReaderScope::Read,
            };
            secret.token_account_uid = accounts.get(&(peer.clone(), scope)).cloned();
        }
        // Observe collects each list into its map, which `BTreeMap` builds
        // in bulk with full nodes; simulate inserted the secrets one by one,
        // which leaves the nodes about half full (a third more heap at a
        // million secrets than observe's maps hold).
        facts.remote_secrets = std::mem::take(&mut facts.remote_secrets).into_iter().collect();
        facts.reader_bindings = std::mem::take(&mut facts.reader_bindings).into_iter().collect();
    }
    observed.share_strings();
}
