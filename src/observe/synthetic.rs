//! Made-up observations of a topology, for tests, benchmarks and examples:
//! every cluster reachable, with a stable identity and address.

use std::collections::BTreeMap;

use jiff::Timestamp;

use super::model::{
    ClusterFacts, ClusterObservation, ClusterState, EastWestFacts, InstallFacts, NamespaceFacts, ObjectFacts, Observed,
    ReaderFacts, SNAPSHOT_FORMAT_VERSION,
};
use crate::objects::{self, DEFAULT_GATEWAY_PORT};
use crate::topology::{Role, Topology};

/// Each cluster as Istio installs it, correctly for the topology: the mesh
/// namespace (unlabelled), istiod with the cluster's name, network and mesh
/// id, one shared root of trust, and the east-west gateway Service labelled
/// with its network and given an address; meshform has written nothing yet.
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
            let facts = ClusterFacts {
                identity: format!("kube-system-{}", c.name),
                server: format!("https://{}.clusters.example.com:6443", c.name),
                ca_sha256: Some(crate::objects::sha256_hex(c.name.as_bytes())),
                namespace: Some(NamespaceFacts {
                    object: object("ns"),
                    network: None,
                    control_planes: None,
                    network_owners: Vec::new(),
                    control_planes_by_meshform: false,
                }),
                reader: ReaderFacts::default(),
                remote_secrets: BTreeMap::new(),
                gateway: None,
                istiod_gateway: None,
                istiod_virtual_service: None,
                gateway_service: Some(object("svc")),
                unlabelled_secrets: Default::default(),
                east_west: Some(EastWestFacts {
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
                        injector: Some(objects::INJECTOR_CONFIGMAP.to_string()),
                        injected_cluster_id: Some(c.name.clone()),
                        injected_network: Some(c.network.clone()),
                        mesh_id: Some(topology.mesh.name.clone()),
                        // A remote's sidecars reach istiod through its control
                        // plane's east-west gateway, as Istio's guides install it.
                        remote_pilot_address: c
                            .control_plane
                            .as_ref()
                            .map(|primary| format!("{primary}.gateways.example.com")),
                        mesh_network_gateways: Vec::new(),
                    },
                )]),
                root_certs: Some(vec![crate::objects::sha256_hex(b"shared root")]),
                reader_bindings: BTreeMap::new(),
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
                install.injected_cluster_id = Some(cluster.name.clone());
                install.injected_network = Some(cluster.network.clone());
                install.mesh_id = Some(topology.mesh.name.clone());
            }
        }
    }
}
