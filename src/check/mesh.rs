//! What holds between all clusters of the mesh: one root of trust. Separate
//! roots are the plan's finding, filed under this check; its passing line
//! names the root the clusters share.

use std::collections::BTreeSet;

use super::{Check, CheckId, pass};
use crate::observe::model::Observed;
use crate::topology::Topology;

/// The roots of trust every cluster holds, by fingerprint.
pub(super) fn root_of_trust(topology: &Topology, observed: &Observed) -> Check {
    let roots: BTreeSet<&str> = topology
        .clusters
        .iter()
        .filter_map(|c| observed.facts(&c.name)?.root_certs.as_ref())
        .flatten()
        .map(String::as_str)
        .collect();
    let summary = if roots.is_empty() {
        "no istio-ca-root-cert found".to_string()
    } else {
        let prints: Vec<String> = roots
            .iter()
            .map(|r| format!("sha256:{}", &r[..r.len().min(16)]))
            .collect();
        format!("shared: {}", prints.join(", "))
    };
    pass(CheckId::RootOfTrust, summary)
}

/// The check a plan finding about no one cluster belongs to, by its code.
pub(super) fn finding_check(code: &str) -> CheckId {
    match code {
        "root_of_trust" | "trust_rotation" | "trust_rotation_blocked" => CheckId::RootOfTrust,
        _ => CheckId::Other,
    }
}
