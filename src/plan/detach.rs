//! Phase 1, detach: the remote secrets of leaving, renamed and re-networked
//! clusters go from every primary first, so no istiod keeps a stale view
//! (Istio picks up a new network only on re-attach).

use super::*;

impl<'a> Planner<'a> {
    pub(super) fn detach(&mut self) {
        let reachable: Vec<_> = self.reachable().collect();
        for (primary, facts) in reachable {
            for (name, secret) in &facts.remote_secrets {
                if !secret.object.managed {
                    continue;
                }
                let Some(target) = secret_target(secret) else { continue };
                let desired_target = self.index.desired(target);
                if desired_target.is_some_and(|d| d.facts.is_none()) {
                    // Unknown clusters are never detached, not even from a
                    // primary turned remote: their actions are deferred.
                    continue;
                }
                let reason = if primary.role == Role::Remote {
                    self.changes.insert(Change::BecameRemote {
                        cluster: primary.name.clone(),
                    });
                    format!(
                        "{} is now a remote cluster, and remotes hold no remote secrets",
                        primary.name
                    )
                } else if target == primary.name {
                    "a primary needs no remote secret for itself".to_string()
                } else if let Some(target_cluster) = desired_target {
                    if let Some(from) = target_cluster.leaves {
                        format!(
                            "{target} moves from network {from:?} to {:?}: Istio only sees a new network on re-attach",
                            target_cluster.cluster.network
                        )
                    } else if name.strip_prefix(REMOTE_SECRET_PREFIX) != Some(target) || secret.cluster_ids.len() != 1 {
                        format!("the secret is not in the form meshform writes for {target}; it is replaced")
                    } else {
                        continue;
                    }
                } else {
                    let renamed = secret
                        .peer_identity
                        .as_deref()
                        .and_then(|id| self.identities.get(id))
                        .filter(|new| **new != target);
                    match renamed {
                        Some(new) => {
                            self.changes.insert(Change::Rename {
                                from: target.to_string(),
                                to: new.to_string(),
                            });
                            format!("{target} is renamed to {new}: detach the old name, attach the new")
                        }
                        None => {
                            self.changes.insert(Change::Detach {
                                cluster: target.to_string(),
                            });
                            format!("{target} is no longer in the topology")
                        }
                    }
                };
                self.removed.insert((&primary.name, name));
                let kind = ActionKind::DeleteRemoteSecret {
                    peer: target.to_string(),
                    name: name.clone(),
                    precondition: Precondition {
                        uid: secret.object.uid.clone(),
                        resource_version: secret.object.resource_version.clone(),
                    },
                };
                self.push(Phase::Detach, &primary.name, kind, reason);
            }
        }
        let unknown_primaries: Vec<&str> = self
            .clusters
            .iter()
            .filter(|c| c.role == Role::Primary && self.facts(&c.name).is_none())
            .map(|c| c.name.as_str())
            .collect();
        for cluster in self.clusters.clone() {
            if let Some(from) = self.network_change(cluster) {
                self.changes.insert(Change::NetworkChange {
                    cluster: cluster.name.clone(),
                    from: from.to_string(),
                    to: cluster.network.clone(),
                });
                // A primary that could not be read keeps its secret for the
                // cluster, and with it the old network, until a later run.
                if !unknown_primaries.is_empty() {
                    self.finding(
                        FindingKind::Warning,
                        "network_change_partial",
                        &cluster.name,
                        format!(
                            "{} changes network, but {} could not be read and keep{} the old view of it",
                            cluster.name,
                            unknown_primaries.join(", "),
                            if unknown_primaries.len() == 1 { "s" } else { "" }
                        ),
                        "run apply again once every primary is reachable".to_string(),
                    );
                }
            }
        }
    }
}
