//! Synthetic meshes for the planner benchmarks: N primaries spread over a few
//! networks, and one remote per network whose control plane is a primary on
//! the next network, observed fresh (as Istio installs them), converged
//! (fresh, then the plan's effect simulated, then filled in with what
//! observe reads: `synthetic::as_read`) or with a tenth of the clusters
//! changed. Everything the planner checks is in them: remote secrets and
//! the binding Secrets their tokens are bound to, reader accounts of both
//! scopes, cross-network Gateways and east-west Services, istiod exposed to
//! the remotes, Istio installs and roots of trust.
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

/// `clusters` primaries `c0000`, `c0001`… on `networks` networks, round
/// robin, and a remote `r00`, `r01`… on each network, served by the first
/// primary of the next network: istiod is exposed to it through that
/// primary's east-west gateway.
pub fn topology(clusters: usize, networks: usize) -> Topology {
    let network = |i: usize| format!("net{:02}", i % networks);
    let primaries = (0..clusters).map(|i| {
        let name = format!("c{i:04}");
        Cluster {
            context: name.clone(),
            name,
            kubeconfig: None,
            network: network(i),
            role: Role::Primary,
            api_server: None,
            control_plane: None,
            allow_insecure_transport: false,
            data_plane: Default::default(),
        }
    });
    let remotes = (0..networks).map(|i| {
        let name = format!("r{i:02}");
        Cluster {
            context: name.clone(),
            name,
            kubeconfig: None,
            network: network(i),
            role: Role::Remote,
            api_server: None,
            control_plane: Some(format!("c{:04}", (i + 1) % networks)),
            allow_insecure_transport: false,
            data_plane: Default::default(),
        }
    });
    let clusters: Vec<Cluster> = primaries.chain(remotes).collect();
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
            trust: Default::default(),
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
/// the other primaries still hold its remote secret. A remote's control
/// plane stays (the topology would be invalid without it).
pub fn removed(topology: &Topology, observed: &Observed) -> (Topology, Observed) {
    let mut out = topology.clone();
    let serving: Vec<&str> = topology
        .clusters
        .iter()
        .filter_map(|c| c.control_plane.as_deref())
        .collect();
    let gone: Vec<String> = out
        .clusters
        .iter()
        .step_by(10)
        .filter(|c| !serving.contains(&c.name.as_str()))
        .map(|c| c.name.clone())
        .collect();
    out.clusters.retain(|c| !gone.contains(&c.name));
    let mut observed = observed.clone();
    observed.clusters.retain(|name, _| !gone.contains(name));
    (out, observed)
}

pub fn fresh(topology: &Topology) -> Observed {
    synthetic::fresh(topology, now())
}

/// The observation after the plan of `topology` against a fresh mesh is
/// applied, as observe reads it.
pub fn converged(topology: &Topology) -> Observed {
    let fresh = fresh(topology);
    let plan = plan(topology, &fresh, &Options::default()).expect("a fresh mesh plans");
    let mut converged = simulate(&fresh, &plan, TOKEN_LIFETIME);
    synthetic::as_read(&mut converged, topology);
    converged
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
