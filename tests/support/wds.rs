//! What ambient istiod sends a ztunnel: the workloads of its workload
//! discovery answer (WDS, `istio.workload.Address` over delta xDS), as
//! `tests/istiod/wds.go` prints them for each `-ztunnel`.
//!
//! Only reads istiod's answers; which workload a ztunnel should get is the
//! tests' to say, from mesh.toml.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One asking ztunnel and the workloads istiod last sent it.
#[derive(Debug, Clone, Deserialize)]
pub struct ZtunnelView {
    pub name: String,
    pub network: String,
    pub cluster: String,
    pub connected: bool,
    pub error: Option<String>,
    pub workloads: Vec<Workload>,
}

/// One `istio.workload.Workload`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Workload {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    /// Its own IPs; none for a coalesced workload of another network.
    pub addresses: Vec<String>,
    pub network: String,
    pub cluster: String,
    /// Where ztunnel sends traffic for it: set for another network's workloads.
    pub network_gateway: Option<GatewayAddress>,
    /// `namespace/hostname` of its services.
    pub services: Vec<String>,
    /// How many workloads a coalesced workload stands for.
    pub capacity: u32,
    pub status: String,
}

/// A workload's `network_gateway`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub struct GatewayAddress {
    /// `NETWORK/IP`, or `NAMESPACE/HOSTNAME` for a hostname.
    pub address: String,
    pub hbone_port: u32,
}

impl ZtunnelView {
    /// The workloads of `service` (`namespace/hostname`).
    pub fn of_service(&self, service: &str) -> Vec<&Workload> {
        self.workloads
            .iter()
            .filter(|w| w.services.iter().any(|s| s == service))
            .collect()
    }

    /// How ztunnel reaches each workload of `service`, by the workload's
    /// network, when istiod's network is `local`: a workload's own IPs, and
    /// for a workload of another network with a gateway `via GATEWAY:PORT
    /// for CAPACITY` (ztunnel uses the gateway only then). Sorted.
    pub fn routes(&self, service: &str, local: &str) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for w in self.of_service(service) {
            let route = out.entry(w.network.clone()).or_default();
            route.extend(w.addresses.iter().cloned());
            if let Some(g) = w.network_gateway.as_ref().filter(|_| w.network != local) {
                route.push(format!("via {}:{} for {}", g.address, g.hbone_port, w.capacity));
            }
        }
        for routes in out.values_mut() {
            routes.sort();
        }
        out
    }
}
