//! Per network: the gateway istiod learns for it from every cluster on it,
//! where one usable east-west gateway is enough. The clusters' own gateway
//! checks say what is wrong with each; this says whether the network, as
//! istiod sees it, has one at all, a problem the plan does not report.

use super::{Check, CheckId, NetworkChecks, Problem, Status, pass};
use crate::objects;
use crate::observe::model::Observed;
use crate::topology::{Cluster, Topology};

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
                    .filter_map(|c| {
                        let east_west = observed.facts(&c.name)?.east_west.as_ref()?;
                        let usable = east_west.network.as_deref() == Some(network.as_str())
                            && (east_west.ports.contains(&east_west.istiod_port())
                                || east_west.ports.contains(&objects::HBONE_GATEWAY_PORT));
                        usable.then(|| east_west.istiod_address().map(|a| format!("{a} ({})", c.name)))?
                    })
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
                                "give the east-west gateway Service of a cluster on {network:?} an address and the label {}={network} (see the clusters' east-west gateway checks)",
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
