//! What a plan was made from, for apply to refuse a saved plan whose
//! inputs changed.

use super::*;

/// The parts joined, allocated once: `format!` grows its string piece by
/// piece, which shows at a million fingerprints.
pub(super) fn concat(parts: &[&str]) -> String {
    let mut out = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    parts.iter().for_each(|p| out.push_str(p));
    out
}

/// Everything the plan depends on, for staleness checks of saved plans.
pub fn fingerprints(desired: &Topology, observed: &Observed) -> Fingerprints {
    let ns = &observed.namespace;
    // A mesh of N primaries has about N² entries. They are collected, then
    // built into the map at once: `BTreeMap::from_iter` sorts (stably) and
    // keeps the last of equal keys, as inserting them one by one did. Each
    // cluster's entries are pushed in key order, so for usual cluster names
    // the sort finds them already sorted and costs one pass.
    let mut out = Vec::new();
    let entry = |key: String, object: &crate::observe::model::ObjectFacts| {
        (key, concat(&[&object.uid, "@", &object.resource_version]))
    };
    for (name, cluster) in &observed.clusters {
        let Some(facts) = cluster.facts() else {
            out.push((name.clone(), "unknown".to_string()));
            continue;
        };
        out.push((name.clone(), facts.identity.clone()));
        let role = objects::reader_cluster_role(ns);
        let service = desired
            .cluster(name)
            .and_then(|c| desired.networks.get(&c.network))
            .map_or(crate::topology::DEFAULT_GATEWAY_SERVICE, |n| n.gateway_service.as_str());
        let before_secrets = [
            (format!("ClusterRole/{role}"), facts.reader.cluster_role.as_ref()),
            (
                format!("ClusterRoleBinding/{role}"),
                facts.reader.cluster_role_binding.as_ref(),
            ),
            (
                format!("Gateway/{ns}/{}", objects::CROSS_NETWORK_GATEWAY),
                facts.gateway.as_ref(),
            ),
            (
                format!("Gateway/{ns}/{}", objects::ISTIOD_GATEWAY),
                facts.istiod_gateway.as_ref(),
            ),
            (format!("Namespace/{ns}"), facts.namespace.as_ref().map(|n| &n.object)),
            (
                format!("Secret/{ns}/{}", objects::READER_TOKEN_SECRET),
                facts.reader.token_secret.as_ref(),
            ),
        ];
        for (kind, object) in before_secrets {
            if let Some(object) = object {
                out.push(entry(format!("{name}/{kind}"), object));
            }
        }
        let secrets = format!("{name}/Secret/{ns}/");
        for (secret, s) in &facts.remote_secrets {
            out.push(entry(concat(&[&secrets, secret]), &s.object));
        }
        for (binding, b) in &facts.reader_bindings {
            out.push(entry(concat(&[&secrets, binding]), &b.object));
        }
        let after_secrets = [
            (format!("Service/{ns}/{service}"), facts.gateway_service.as_ref()),
            (
                format!("ServiceAccount/{ns}/{}", objects::READER_SERVICE_ACCOUNT),
                facts.reader.service_account.as_ref(),
            ),
            (
                format!("VirtualService/{ns}/{}", objects::ISTIOD_VIRTUAL_SERVICE),
                facts.istiod_virtual_service.as_ref(),
            ),
        ];
        for (kind, object) in after_secrets {
            if let Some(object) = object {
                out.push(entry(format!("{name}/{kind}"), object));
            }
        }
    }
    Fingerprints {
        topology_sha256: hashes::topology_hash(desired),
        observed: out.into_iter().collect(),
    }
}
