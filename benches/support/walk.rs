//! Yardsticks for the planner benchmarks: one walk of an observation, so
//! that a plan's time can be read as a multiple of it (issue 34: every plan
//! at 1,000 primaries within 2× of one walk of its observation).
//!
//! - [`fingerprints`]: what plan format 1 built for every plan (removed with
//!   it, kept here as the measure issue 34 was written against): a key and a
//!   `uid@resourceVersion` value per object, a million remote secrets and a
//!   million binding Secrets at 1,000 primaries, into one ordered map.
//! - [`walk`]: the bare walk under it: every remote secret and binding
//!   Secret visited once, its name, UID and resourceVersion hashed, nothing
//!   allocated. No plan can be cheaper than this; it is the floor.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};

use meshform::objects;
use meshform::observe::model::{ObjectFacts, Observed};
use meshform::topology::{DEFAULT_GATEWAY_SERVICE, Topology};

/// Every remote secret and binding Secret of every cluster, once: their
/// names, UIDs and resourceVersions hashed.
pub fn walk(observed: &Observed) -> u64 {
    let mut hasher = foldhash::fast::FixedState::with_seed(34).build_hasher();
    for (cluster, observation) in &observed.clusters {
        hasher.write(cluster.as_bytes());
        let Some(facts) = observation.facts() else { continue };
        let objects = facts
            .remote_secrets
            .iter()
            .map(|(name, s)| (name, &s.object))
            .chain(facts.reader_bindings.iter().map(|(name, b)| (name, &b.object)));
        for (name, object) in objects {
            hasher.write(name.as_bytes());
            hasher.write(object.uid.as_bytes());
            hasher.write(object.resource_version.as_bytes());
        }
    }
    hasher.finish()
}

fn concat(parts: &[&str]) -> String {
    let mut out = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    parts.iter().for_each(|p| out.push_str(p));
    out
}

/// Plan format 1's fingerprints of what a plan was made from, as
/// `plan::fingerprints` built them (src/plan/fingerprint.rs before a807f2f).
pub fn fingerprints(desired: &Topology, observed: &Observed) -> BTreeMap<String, String> {
    let ns = &observed.namespace;
    let mut out = Vec::new();
    let entry = |key: String, object: &ObjectFacts| (key, concat(&[&object.uid, "@", &object.resource_version]));
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
            .map_or(DEFAULT_GATEWAY_SERVICE, |n| n.gateway_service.as_str());
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
    out.into_iter().collect()
}
