//! Per network: the gateway istiod learns for it from every cluster on it,
//! where one usable east-west gateway is enough. The clusters' own gateway
//! checks say what is wrong with each; this says whether the network, as
//! istiod sees it, has one at all, a problem the plan does not report.

use super::{Check, CheckId, NetworkChecks, Problem, Status, pass};
use crate::objects;
use crate::observe::model::Observed;
use crate::topology::{Cluster, DataPlane, Topology};

/// Per network: the gateway istiod learns for it from every cluster on it
/// (a Service labelled with the network, listing istiod's port, with an
/// address; istio/istio `pilot/pkg/serviceregistry/kube/controller/network.go`).
pub(super) fn checks(topology: &Topology, observed: &Observed) -> Vec<NetworkChecks> {
    let several = topology.networks.len() > 1;
    topology
        .networks
        .keys()
        .map(|network| {
            let mut members: Vec<&Cluster> = topology.clusters.iter().filter(|c| &c.network == network).collect();
            members.sort_by(|a, b| a.name.cmp(&b.name));
            let mut checks = Vec::new();
            if several && !members.is_empty() {
                let gateways: Vec<String> = members
                    .iter()
                    .flat_map(|c| gateway_api(c, network, observed).into_iter().chain(service(c, network, observed)))
                    .collect();
                let unread = members.iter().any(|c| observed.facts(&c.name).is_none());
                checks.push(match (gateways.is_empty(), unread) {
                    (false, _) => pass(CheckId::NetworkGateway, gateways.join(", ")),
                    (true, true) => Check {
                        id: CheckId::NetworkGateway,
                        status: Status::Skipped,
                        summary: "not every cluster of the network could be read".to_string(),
                        problems: Vec::new(),
                    },
                    (true, false) => Check {
                        id: CheckId::NetworkGateway,
                        status: Status::Fail,
                        summary: String::new(),
                        problems: vec![Problem {
                            status: Status::Fail,
                            code: "meshform::check::network_gateway".to_string(),
                            message: format!(
                                "istiod knows no gateway for network {network:?}: other networks are sent its pods' IPs, which they cannot reach"
                            ),
                            fix: Some(format!(
                                "give the east-west gateway (Service, or Gateway API Gateway; ambient: the istio-east-west Gateway) of a cluster on {network:?} an address and the label {}={network} (see the clusters' east-west gateway checks)",
                                objects::NETWORK_LABEL
                            )),
                        }],
                    },
                });
            }
            NetworkChecks {
                network: network.clone(),
                clusters: members.iter().map(|c| c.name.clone()).collect(),
                checks,
            }
        })
        .collect()
}

/// The gateway Service of `cluster` as a sidecar istiod takes it for `network`.
fn service(cluster: &Cluster, network: &str, observed: &Observed) -> Option<String> {
    if cluster.data_plane == DataPlane::Ambient {
        return None;
    }
    let east_west = observed.facts(&cluster.name)?.east_west.as_ref()?;
    let usable = east_west.network.as_deref() == Some(network)
        && (east_west.ports.contains(&east_west.istiod_port())
            || east_west.ports.contains(&objects::HBONE_GATEWAY_PORT));
    usable.then(|| east_west.istiod_address().map(|a| format!("{a} ({})", cluster.name)))?
}

/// The Gateway API Gateways of `cluster` that istiod of its data plane takes
/// for `network` (issue 31; `plan/ambient.rs` cites Istio's rules): an
/// ambient one at its status addresses, a sidecar one at its spec addresses.
fn gateway_api(cluster: &Cluster, network: &str, observed: &Observed) -> Vec<String> {
    let Some(gateways) = observed.facts(&cluster.name).and_then(|f| f.k8s_gateways.as_ref()) else {
        return Vec::new();
    };
    gateways
        .iter()
        .filter(|(_, g)| g.network.as_deref() == Some(network))
        .flat_map(|(name, g)| match cluster.data_plane {
            DataPlane::Ambient if g.is_ambient_east_west() => {
                let port = g.hbone_terminate().map_or(objects::HBONE_GATEWAY_PORT, |l| l.port);
                g.status_addresses
                    .iter()
                    .map(|a| format!("{a}:{port} ({}, ambient Gateway {name})", cluster.name))
                    .collect::<Vec<_>>()
            }
            DataPlane::Sidecar if g.class != objects::REMOTE_GATEWAY_CLASS => g
                .sidecar_gateways()
                .into_iter()
                .map(|a| format!("{a} ({}, Gateway {name})", cluster.name))
                .collect(),
            _ => Vec::new(),
        })
        .collect()
}
