//! Lookups the planner makes for every (primary, peer) pair, built once per
//! plan from the topology and the observation.
//!
//! A mesh of N primaries holds about N² remote secrets. Answering "is this
//! cluster attached anywhere?" or "does this primary hold a hand-made secret
//! for that peer?" by scanning them, once per pair, made planning O(N³) to
//! O(N⁴); here each question is a hash lookup. The index only answers
//! questions: it is never iterated, so hash order cannot reach the plan.

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use crate::observe::model::{ClusterFacts, Observed};
use crate::topology::{Cluster, Topology};

pub(super) struct Index<'a> {
    /// Desired clusters by mesh name (the first, as [`Topology::cluster`]),
    /// with what the walks ask of each: one lookup per remote secret.
    clusters: HashMap<&'a str, Desired<'a>>,
    /// Names of the desired primaries, in file order.
    primaries: Vec<&'a str>,
    /// Cluster ids that a meshform remote secret in some observed cluster names.
    attached: HashSet<&'a str>,
    /// Cluster holding them → cluster id they name → the names of unmanaged
    /// remote secrets there, in name order.
    unmanaged: HashMap<&'a str, Unmanaged<'a>>,
}

/// A desired cluster and what was observed of it.
pub(super) struct Desired<'a> {
    pub cluster: &'a Cluster,
    /// What was observed, when it could be read (as [`Observed::facts`]).
    pub facts: Option<&'a ClusterFacts>,
    /// The network it leaves, when it is attached and moves to another
    /// (detach + relabel + re-attach). Without a label Istio puts a cluster
    /// on its default, unnamed network, so a missing label counts as `""`.
    pub leaves: Option<&'a str>,
}

/// Cluster id → names of the unmanaged remote secrets in one cluster that name it.
pub(super) type Unmanaged<'a> = HashMap<&'a str, Vec<&'a str>>;

impl<'a> Index<'a> {
    pub(super) fn new(desired: &'a Topology, observed: &'a Observed) -> Self {
        let primaries = desired.primaries().map(|c| c.name.as_str()).collect();
        let mut attached = HashSet::new();
        let mut unmanaged: HashMap<&str, Unmanaged> = HashMap::new();
        for (holder, observation) in &observed.clusters {
            let Some(holder_facts) = observation.facts() else {
                continue;
            };
            for (name, secret) in &holder_facts.remote_secrets {
                let ids = secret.cluster_ids.iter().map(String::as_str);
                // The annotation mostly repeats the data key: asked once.
                let annotated = secret
                    .annotated_cluster
                    .as_deref()
                    .filter(|a| secret.cluster_ids.first().is_none_or(|id| id != a));
                let named = ids.chain(annotated);
                if secret.object.managed {
                    attached.extend(named);
                    continue;
                }
                for id in named {
                    let names = unmanaged.entry(holder).or_default().entry(id).or_default();
                    // A secret naming a cluster twice (a data key and the annotation) counts once.
                    if names.last() != Some(&name.as_str()) {
                        names.push(name.as_str());
                    }
                }
            }
        }
        let mut clusters = HashMap::with_capacity(desired.clusters.len());
        for cluster in &desired.clusters {
            let facts = observed.facts(&cluster.name);
            let current = facts.map(|f| f.namespace.as_ref().and_then(|n| n.network.as_deref()).unwrap_or(""));
            let leaves = current.filter(|c| *c != cluster.network && attached.contains(cluster.name.as_str()));
            clusters
                .entry(cluster.name.as_str())
                .or_insert(Desired { cluster, facts, leaves });
        }
        Index {
            clusters,
            primaries,
            attached,
            unmanaged,
        }
    }

    /// The desired cluster of this mesh name, with its facts.
    pub(super) fn desired(&self, name: &str) -> Option<&Desired<'a>> {
        self.clusters.get(name)
    }

    /// What was observed of desired `cluster`, when it could be read.
    pub(super) fn facts(&self, cluster: &str) -> Option<&'a ClusterFacts> {
        self.desired(cluster).and_then(|d| d.facts)
    }

    /// Some cluster holds a meshform remote secret for `cluster`.
    pub(super) fn attached(&self, cluster: &str) -> bool {
        self.attached.contains(cluster)
    }

    /// Some primary other than `cluster` reads it: it needs a reader account
    /// and an address its peers can reach.
    pub(super) fn has_primary_peer(&self, cluster: &Cluster) -> bool {
        // At most two names are looked at: names are unique in a valid topology.
        self.primaries.iter().any(|p| *p != cluster.name)
    }

    /// The unmanaged remote secrets in `holder`, by the cluster id they name.
    pub(super) fn unmanaged_in(&self, holder: &str) -> Option<&Unmanaged<'a>> {
        self.unmanaged.get(holder)
    }
}

/// Remote secrets in a holder, not meshform's, that name `cluster`, in name order.
pub(super) fn naming<'i, 'a>(unmanaged: Option<&'i Unmanaged<'a>>, cluster: &str) -> &'i [&'a str] {
    unmanaged.and_then(|ids| ids.get(cluster)).map_or(&[], Vec::as_slice)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::model::{ObjectFacts, RemoteSecretFacts, TokenFacts};
    use crate::observe::synthetic;
    use crate::topology::Role;

    fn topology() -> Topology {
        let text = "[mesh]\nname = \"mesh1\"\n\n[[cluster]]\nname = \"a\"\n\n[[cluster]]\nname = \"b\"\nrole = \"remote\"\ncontrol_plane = \"a\"\n\n[[cluster]]\nname = \"c\"\n";
        crate::topology::check("mesh.toml", text.as_bytes())
            .into_result()
            .expect("a valid topology")
            .0
    }

    fn secret(managed: bool, ids: &[&str], annotated: Option<&str>) -> RemoteSecretFacts {
        RemoteSecretFacts {
            object: ObjectFacts {
                uid: "uid".to_string(),
                resource_version: "1".to_string(),
                managed,
                spec_hash: None,
                content_sha256: None,
                content_owners: Vec::new(),
            },
            cluster_ids: ids.iter().map(|s| s.to_string()).collect(),
            annotated_cluster: annotated.map(Into::into),
            server: None,
            ca_sha256: None,
            tls_server_name: None,
            peer_identity: None,
            token: TokenFacts::Unknown,
            token_account_uid: None,
            token_binding_uid: None,
            token_secret: None,
            object_copies: Vec::new(),
        }
    }

    #[test]
    fn answers_as_a_scan_of_every_secret_would() {
        let topology = topology();
        let mut observed = synthetic::fresh(&topology, "2025-06-01T12:00:00Z".parse().expect("a time"));
        let crate::observe::model::ClusterState::Reachable(a) = &mut observed.clusters.get_mut("a").expect("a").state
        else {
            unreachable!("synthetic clusters are reachable")
        };
        a.remote_secrets
            .insert("istio-remote-secret-c".to_string(), secret(true, &["c"], Some("c")));
        a.remote_secrets
            .insert("by-hand".to_string(), secret(false, &["b", "gone"], Some("b")));
        a.remote_secrets
            .insert("another".to_string(), secret(false, &[], Some("b")));

        let index = Index::new(&topology, &observed);
        assert!(index.attached("c"));
        assert!(!index.attached("b"), "an unmanaged secret does not attach");
        assert_eq!(naming(index.unmanaged_in("a"), "b"), ["another", "by-hand"]);
        assert_eq!(naming(index.unmanaged_in("a"), "gone"), ["by-hand"]);
        assert!(naming(index.unmanaged_in("c"), "b").is_empty());
        assert_eq!(index.desired("b").map(|d| d.cluster.role), Some(Role::Remote));
        assert!(index.desired("gone").is_none());
        assert_eq!(index.facts("b"), observed.facts("b"));
        assert!(index.facts("gone").is_none());
        let [a, b, c] = [0, 1, 2].map(|i| &topology.clusters[i]);
        assert!(index.has_primary_peer(a) && index.has_primary_peer(b) && index.has_primary_peer(c));
    }
}
