//! Synthetic meshes for the planner benchmarks: N primaries spread over a few
//! networks, observed fresh (as Istio installs them), converged (fresh, then
//! the plan's effect simulated) or with a tenth of the clusters changed.
//!
//! Built from meshform's public types directly: validating a thousand-cluster
//! mesh.toml is not what these benchmarks measure.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use meshform::observe::model::Observed;
use meshform::observe::synthetic;
use meshform::plan::simulate::simulate;
use meshform::plan::{Options, plan};
use meshform::topology::{
    Cluster, DEFAULT_GATEWAY_PORT, DEFAULT_GATEWAY_SERVICE, DEFAULT_NAMESPACE, Mesh, Network, Role, Tokens, Topology,
};

/// A fixed observation time, so token ages (and so plans) are reproducible.
pub fn now() -> Timestamp {
    "2025-06-01T12:00:00Z".parse().expect("a valid timestamp")
}

/// Tokens of the simulated writes live a year: a converged mesh rotates nothing.
pub const TOKEN_LIFETIME: SignedDuration = SignedDuration::from_hours(24 * 365);

/// Networks in a mesh of `clusters`: several, about 25 clusters each (2 to 40).
pub fn networks(clusters: usize) -> usize {
    (clusters / 25).clamp(2, 40)
}

/// `clusters` primaries `c0000`, `c0001`… on `networks` networks, round robin.
pub fn topology(clusters: usize, networks: usize) -> Topology {
    let clusters: Vec<Cluster> = (0..clusters)
        .map(|i| {
            let name = format!("c{i:04}");
            Cluster {
                context: name.clone(),
                name,
                kubeconfig: None,
                network: format!("net{:02}", i % networks),
                role: Role::Primary,
                api_server: None,
                control_plane: None,
            }
        })
        .collect();
    let networks = clusters
        .iter()
        .map(|c| {
            let network = Network {
                gateway_service: DEFAULT_GATEWAY_SERVICE.to_string(),
                gateway_port: DEFAULT_GATEWAY_PORT,
            };
            (c.network.clone(), network)
        })
        .collect::<BTreeMap<_, _>>();
    Topology {
        mesh: Mesh {
            name: "mesh1".to_string(),
            namespace: DEFAULT_NAMESPACE.to_string(),
            tokens: Tokens::default(),
            lock_cluster: None,
        },
        clusters,
        networks,
    }
}

/// Every tenth cluster (a tenth of the mesh) moved to the next network.
pub fn moved(topology: &Topology) -> Topology {
    let names: Vec<String> = topology.networks.keys().cloned().collect();
    let mut out = topology.clone();
    for cluster in out.clusters.iter_mut().step_by(10) {
        let at = names
            .iter()
            .position(|n| *n == cluster.network)
            .expect("a known network");
        cluster.network = names[(at + 1) % names.len()].clone();
    }
    out
}

/// Every tenth cluster removed from the topology, and so no longer observed;
/// the other primaries still hold its remote secret.
pub fn removed(topology: &Topology, observed: &Observed) -> (Topology, Observed) {
    let mut out = topology.clone();
    let gone: Vec<String> = out.clusters.iter().step_by(10).map(|c| c.name.clone()).collect();
    out.clusters.retain(|c| !gone.contains(&c.name));
    let mut observed = observed.clone();
    observed.clusters.retain(|name, _| !gone.contains(name));
    (out, observed)
}

pub fn fresh(topology: &Topology) -> Observed {
    synthetic::fresh(topology, now())
}

/// The observation after the plan of `topology` against a fresh mesh is applied.
pub fn converged(topology: &Topology) -> Observed {
    let fresh = fresh(topology);
    let plan = plan(topology, &fresh, &Options::default()).expect("a fresh mesh plans");
    simulate(&fresh, &plan, TOKEN_LIFETIME)
}

/// One benchmark input: a topology and what was observed.
pub struct Scenario {
    pub name: &'static str,
    pub topology: Topology,
    pub observed: Observed,
}

/// The scenarios of one mesh size: fresh, converged, 10% moved, 10% removed.
pub fn scenarios(clusters: usize) -> Vec<Scenario> {
    let topology = topology(clusters, networks(clusters));
    let converged = converged(&topology);
    let (fewer, fewer_observed) = removed(&topology, &converged);
    vec![
        Scenario {
            name: "fresh",
            observed: fresh(&topology),
            topology: topology.clone(),
        },
        Scenario {
            name: "moved-10pct",
            topology: moved(&topology),
            observed: converged.clone(),
        },
        Scenario {
            name: "removed-10pct",
            topology: fewer,
            observed: fewer_observed,
        },
        Scenario {
            name: "converged",
            topology,
            observed: converged,
        },
    ]
}
