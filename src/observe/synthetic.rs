//! Made-up observations of a topology, for tests, benchmarks and examples:
//! every cluster reachable, with a stable identity and address.

use std::collections::BTreeMap;

use jiff::Timestamp;

use super::model::{
    ClusterFacts, ClusterObservation, ClusterState, NamespaceFacts, ObjectFacts, Observed, ReaderFacts,
    SNAPSHOT_FORMAT_VERSION,
};
use crate::topology::Topology;

/// Each cluster as Istio installs it: the mesh namespace (unlabelled) and the
/// east-west gateway Service exist, meshform has written nothing yet.
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
            };
            let facts = ClusterFacts {
                identity: format!("kube-system-{}", c.name),
                server: format!("https://{}.clusters.example.com:6443", c.name),
                ca_sha256: Some(crate::plan::desired::sha256_hex(c.name.as_bytes())),
                namespace: Some(NamespaceFacts {
                    object: object("ns"),
                    network: None,
                }),
                reader: ReaderFacts::default(),
                remote_secrets: BTreeMap::new(),
                gateway: None,
                gateway_service: Some(object("svc")),
                unlabelled_secrets: Default::default(),
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
