//! Phase 1, detach: the remote secrets of leaving, renamed and re-networked
//! clusters go from every primary first, so no istiod keeps a stale view
//! (Istio picks up a new network only on re-attach).

use super::*;

impl<'a> Planner<'a> {
    /// The remote secrets held by clusters that are not primaries (a
    /// primary turned remote), and the network changes. A primary's own
    /// secrets are judged by [`Planner::detach_secret`] as attach walks
    /// them: one walk over a million secrets, not two.
    pub(super) fn detach(&mut self) {
        let others: Vec<_> = self.reachable().filter(|(c, _)| c.role != Role::Primary).collect();
        for (cluster, facts) in others {
            for (name, secret) in &facts.remote_secrets {
                self.not_at_pair(cluster, name, secret);
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

    /// A remote secret of `holder` that is not the one of a pair attach
    /// checks (another name, the primary's own, a remote's): judged for
    /// detach, and its token, if it stays, counts for revocation.
    pub(super) fn not_at_pair(&mut self, holder: &'a Cluster, name: &'a str, secret: &'a RemoteSecretFacts) {
        if !self.detach_secret(holder, name, secret, None) {
            self.bindings.token_elsewhere(secret.token_binding_uid.as_deref());
        }
    }

    /// Whether meshform's remote secret `name` in `holder` goes in the
    /// detach phase: a leaving, renamed or re-networked cluster's, a
    /// primary's own, a remote's, or one not in meshform's form. The
    /// action and the change are recorded. `peer`: the desired cluster the
    /// walk expects the secret to be for, which spares a lookup when it is.
    pub(super) fn detach_secret(
        &mut self,
        holder: &'a Cluster,
        name: &'a str,
        secret: &'a RemoteSecretFacts,
        peer: Option<&'a Desired<'a>>,
    ) -> bool {
        if !secret.object.managed {
            return false;
        }
        let Some(target) = secret_target(secret) else {
            return false;
        };
        let desired_target = match peer {
            Some(peer) if peer.cluster.name == target => Some(peer),
            _ => self.index.desired(target),
        };
        if desired_target.is_some_and(|d| d.facts.is_none()) {
            // Unknown clusters are never detached, not even from a
            // primary turned remote: their actions are deferred.
            return false;
        }
        let reason = if holder.role == Role::Remote {
            self.changes.insert(Change::BecameRemote {
                cluster: holder.name.clone(),
            });
            format!(
                "{} is now a remote cluster, and remotes hold no remote secrets",
                holder.name
            )
        } else if target == holder.name {
            "a primary needs no remote secret for itself".to_string()
        } else if let Some(target_cluster) = desired_target {
            if let Some(from) = target_cluster.leaves {
                self.target_reason(target, || {
                    format!(
                        "{target} moves from network {from:?} to {:?}: Istio only sees a new network on re-attach",
                        target_cluster.cluster.network
                    )
                })
            } else if name.strip_prefix(REMOTE_SECRET_PREFIX) != Some(target) || secret.cluster_ids.len() != 1 {
                format!("the secret is not in the form meshform writes for {target}; it is replaced")
            } else {
                return false;
            }
        } else {
            let renamed = secret
                .peer_identity
                .as_deref()
                .and_then(|id| self.identities.get(id).copied())
                .filter(|new| *new != target);
            match renamed {
                Some(new) => {
                    self.changes.insert(Change::Rename {
                        from: target.to_string(),
                        to: new.to_string(),
                    });
                    format!("{target} is renamed to {new}: detach the old name, attach the new")
                }
                None => self.target_reason(target, || format!("{target} is no longer in the topology")),
            }
        };
        // Kept apart until attach's walk ends, so that the plan's sort finds
        // each phase's actions in runs, not interleaved pair by pair.
        self.detached.push(Action {
            phase: Phase::Detach,
            cluster: holder.name.clone(),
            kind: ActionKind::DeleteRemoteSecret {
                peer: target.to_string(),
                name: name.to_string(),
                precondition: Precondition {
                    uid: secret.object.uid.clone(),
                    resource_version: secret.object.resource_version.clone(),
                },
            },
            reason,
        });
        true
    }

    /// The reason every primary's secret for `target` is detached with, when
    /// it depends on the target alone (it moves, or left the topology):
    /// worded once, not once per primary. A target that left is recorded as
    /// a detach the first time.
    fn target_reason(&mut self, target: &'a str, word: impl FnOnce() -> String) -> String {
        if let Some(reason) = self.detach_reasons.get(target) {
            return reason.clone();
        }
        if self.index.desired(target).is_none() {
            self.changes.insert(Change::Detach {
                cluster: target.to_string(),
            });
        }
        let reason = word();
        self.detach_reasons.insert(target, reason.clone());
        reason
    }
}
