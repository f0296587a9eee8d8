//! Reader tokens die with their binding Secret: a holder that leaves loses
//! its tokens at once, a replaced token goes once its successor has been in
//! place for the grace period.

use std::cell::OnceCell;

use super::*;

impl<'a> Planner<'a> {
    /// Deletes the binding Secrets no istiod depends on any more, which
    /// revokes every token bound to them: a holder that left the mesh (or
    /// became a remote) loses them at once, a rotated token once its
    /// successor has been in place for the grace period.
    pub(super) fn revocations(&mut self) {
        self.secret_mode_detaches();
        // Without a binding observed there is nothing to revoke, and a large
        // fresh mesh need not index its million writes for it.
        if self.bindings.count == 0 {
            return;
        }
        let now = self.observed.observed_at.as_second();
        // When each holder's current token (in a secret meshform wrote) for
        // each peer was issued; a legacy token has no issue time. Only a
        // replaced token asks, and a mesh without one need not build it.
        let issued: OnceCell<BTreeMap<(&str, &str), Option<i64>>> = OnceCell::new();
        let writing: HashSet<(&str, &str)> = self
            .actions
            .iter()
            .filter(|a| matches!(a.kind, ActionKind::WriteRemoteSecret { .. }))
            .filter_map(|a| Some((a.cluster.as_str(), a.peer()?)))
            .collect();
        let mut left: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        let mut revoked = Vec::new();
        // Which binding Secrets the tokens that stay are bound to was marked
        // as detach and attach walked the secrets, by the binding's place in
        // this same walk.
        let mut at = 0;
        for (peer, facts) in self.reachable() {
            for (name, binding) in &facts.reader_bindings {
                let index = at;
                at += 1;
                if !binding.object.managed || self.bindings.referenced(index) {
                    continue;
                }
                let Some(holder) = self.holder(binding) else { continue };
                let (detach, reason) = match self.index.desired(holder).map(|d| d.cluster) {
                    // Not read: nothing may be removed on its account.
                    Some(_) if self.facts(holder).is_none() => continue,
                    Some(h) if h.role == Role::Remote => (
                        true,
                        format!(
                            "{holder} is now a remote cluster: the reader tokens it holds for {} are revoked",
                            peer.name
                        ),
                    ),
                    Some(_) if writing.contains(&(holder, peer.name.as_str())) => continue,
                    Some(_) => {
                        // Only a token meshform wrote replaces it; with none, or
                        // someone else's secret in the way, nothing is revoked.
                        let issued = issued.get_or_init(|| self.issued());
                        let Some(successor) = issued.get(&(holder, peer.name.as_str())).copied() else {
                            continue;
                        };
                        let grace = self.options.revoke_grace_seconds;
                        if successor.is_some_and(|iat| now < iat + grace) {
                            continue;
                        }
                        (
                            false,
                            format!(
                                "{holder} holds a newer token for {}; the replaced one is revoked{}",
                                peer.name,
                                if successor.is_some() {
                                    format!(", {grace}s after its successor was issued")
                                } else {
                                    String::new()
                                }
                            ),
                        )
                    }
                    None => {
                        left.entry(holder).or_default().push(&peer.name);
                        (
                            true,
                            format!(
                                "{holder} is no longer in the topology: the reader tokens it holds for {} are revoked",
                                peer.name
                            ),
                        )
                    }
                };
                let kind = ActionKind::RevokeReaderTokens {
                    holder: holder.to_string(),
                    name: name.clone(),
                    detach,
                    precondition: Precondition {
                        uid: binding.object.uid.clone(),
                        resource_version: binding.object.resource_version.clone(),
                    },
                };
                let phase = if detach { Phase::Detach } else { Phase::Update };
                revoked.push((phase, &peer.name, kind, reason));
            }
        }
        drop(writing);
        for (phase, peer, kind, reason) in revoked {
            self.push(phase, peer, kind, reason);
        }
        // In `secret` mode the tokens a holder has are legacy ones no binding
        // revokes: that is said below instead.
        if self.desired.mesh.tokens.mode == TokenMode::Secret {
            left.clear();
        }
        for (holder, mut peers) in left {
            peers.dedup();
            self.finding(
                FindingKind::Warning,
                "detached_holder",
                holder,
                format!(
                    "{holder} left the mesh and cannot be reached; the remote secrets it holds for {} stay there, \
                     but their tokens are revoked and no longer authenticate",
                    peers.join(", ")
                ),
                format!(
                    "when {holder} can be reached, delete them: kubectl delete secret -n {} -l {}=true",
                    self.ns(),
                    objects::MULTICLUSTER_LABEL
                ),
            );
        }
    }

    /// In `secret` mode a detach revokes nothing: the plan says so.
    pub(super) fn secret_mode_detaches(&mut self) {
        if self.desired.mesh.tokens.mode == TokenMode::Secret {
            let detached: Vec<String> = self
                .changes
                .iter()
                .filter_map(|c| match c {
                    Change::Detach { cluster } => Some(cluster.clone()),
                    _ => None,
                })
                .collect();
            for cluster in detached {
                self.finding(
                    FindingKind::Warning,
                    "detach_not_revoked",
                    &cluster,
                    format!(
                        "with tokens.mode = \"secret\" every primary shares one never-expiring token per peer: \
                         the tokens {cluster} holds are not revoked and stay valid"
                    ),
                    format!(
                        "use tokens.mode = \"request\" (the default), whose tokens a detach revokes; or delete \
                         Secret {ns}/{} in every peer (and {ns}/{} in a remote it was the control plane of) and \
                         apply again, which gives every primary a new token",
                        objects::READER_TOKEN_SECRET,
                        objects::CONTROL_PLANE_TOKEN_SECRET,
                        ns = self.ns(),
                    ),
                );
            }
        }
    }

    /// When each holder's current token (in a secret meshform wrote) for
    /// each peer was issued, by (holder, peer); `None` for a legacy token.
    /// Of two secrets for one peer, the last by name counts.
    fn issued(&self) -> BTreeMap<(&'a str, &'a str), Option<i64>> {
        // (primary, secret name) of the secrets the detach phase removes: a
        // stale copy under another name going does not make the peer's own
        // secret absent.
        let removed: HashSet<(&str, &str)> = self
            .actions
            .iter()
            .filter_map(|a| match &a.kind {
                ActionKind::DeleteRemoteSecret { name, .. } => Some((a.cluster.as_str(), name.as_str())),
                _ => None,
            })
            .collect();
        let mut issued = BTreeMap::new();
        for (holder, facts) in self.reachable() {
            for (name, secret) in &facts.remote_secrets {
                if !secret.object.managed || removed.contains(&(holder.name.as_str(), name.as_str())) {
                    continue;
                }
                if let Some(target) = secret_target(secret) {
                    let iat = match &secret.token {
                        TokenFacts::Bound { issued_at, .. } => Some(issued_at.as_second()),
                        _ => None,
                    };
                    issued.insert((holder.name.as_str(), target), iat);
                }
            }
        }
        issued
    }

    /// The desired-or-departed mesh name of a binding's holder: a holder
    /// renamed since is found by its identity.
    pub(super) fn holder(&self, binding: &'a BindingFacts) -> Option<&'a str> {
        holder_of(&self.identities, binding)
    }
}
