//! Phases 3 and 4, attach and updates: every primary's remote secret for
//! every peer, written, refreshed (address, CA, drift, a token due) or
//! adopted; and the workload restart a relabel needs.

use super::*;

impl<'a> Planner<'a> {
    pub(super) fn attach(&mut self) {
        let primaries: Vec<_> = self.reachable().filter(|(c, _)| c.role == Role::Primary).collect();
        // What a remote secret for a peer holds does not depend on the
        // primary holding it: work it out once per peer, not per pair.
        let mut peers: Vec<Peer> = self
            .reachable()
            .enumerate()
            .map(|(at, (cluster, facts))| {
                let server = self.peer_server(cluster, facts);
                let desired = self
                    .index
                    .desired(&cluster.name)
                    .expect("a reachable cluster is desired");
                let moving = desired.leaves.is_some();
                Peer {
                    cluster,
                    facts,
                    desired,
                    reattach: moving.then(|| format!("re-attach {} on network {:?}", cluster.name, cluster.network)),
                    at,
                    secret: remote_secret_name(&cluster.name),
                    spec_hash: hashes::remote_secret_hash(
                        &cluster.name,
                        &server,
                        facts.ca_sha256.as_deref(),
                        facts.tls_server_name.as_deref(),
                        facts.insecure_transport.as_deref(),
                        &facts.identity,
                        self.desired.mesh.tokens.mode,
                    ),
                    server,
                    // A renamed cluster is taken out once detach has judged every secret.
                    joins: !moving && !self.index.attached(&cluster.name),
                }
            })
            .collect();
        // A primary's secrets are looked up by walking them beside the peers,
        // both in secret-name order: two string comparisons a pair instead of
        // a tree search, which showed at a million pairs.
        peers.sort_by(|a, b| a.secret.cmp(&b.secret));
        // Peers that join the mesh: one change each, however many primaries attach them.
        let mut joining: BTreeMap<&str, &str> = BTreeMap::new();
        let now = self.observed.observed_at;
        let ns = self.desired.mesh.namespace.as_str();
        // Positions as `Bindings::new` gave them: the reachable primaries in name order.
        for (at, (primary, facts)) in primaries.into_iter().enumerate() {
            // Each secret is judged for detach as the walk reaches it, and
            // its token marks its binding: one walk for the three phases.
            let mut held = facts.remote_secrets.iter().peekable();
            let unmanaged = self.index.unmanaged_in(&primary.name);
            for peer_entry in &peers {
                let Peer {
                    cluster: peer,
                    facts: peer_facts,
                    secret: name,
                    server,
                    spec_hash: hash,
                    ..
                } = peer_entry;
                if peer.name == primary.name {
                    continue;
                }
                while let Some((held, secret)) = held.next_if(|(held, _)| *held < name) {
                    self.not_at_pair(primary, held, secret);
                }
                let existing = held.next_if(|(held, _)| *held == name);
                let (existing, stays, matched) = match existing {
                    Some((held, secret)) => {
                        let stays = !self.detach_secret(primary, held, secret, Some(peer_entry.desired));
                        let uid = secret.token_binding_uid.as_deref();
                        let matched = if stays {
                            self.bindings.token_at(at, peer_entry.at, uid)
                        } else {
                            Matched::Unbound
                        };
                        (Some(secret), stays, matched)
                    }
                    None => (None, false, Matched::Unbound),
                };
                // Only meshform's secrets are detached: a removed one was.
                let ours = existing.filter(|s| s.object.managed && stays);
                let account = Self::token_scope(primary, peer);
                let write = |mode, precondition: Option<&RemoteSecretFacts>, force| ActionKind::WriteRemoteSecret {
                    peer: peer.name.clone(),
                    name: name.clone(),
                    server: server.clone(),
                    account,
                    mode,
                    spec_hash: hash.clone(),
                    precondition: precondition.map(|s| Precondition {
                        uid: s.object.uid.clone(),
                        resource_version: s.object.resource_version.clone(),
                    }),
                    force,
                };
                // A field of meshform's own secret that another manager took
                // (`kubectl annotate`) makes the write a conflict. Worded only
                // for a write: formatting it for every pair showed at a million.
                let what = || format!("Secret {ns}/{name}");

                // Istio ignores a second secret for a cluster id it already
                // has: an unmanaged one of another name blocks ours, and
                // nothing is written or adopted next to it.
                let other = index::naming(unmanaged, &peer.name)
                    .iter()
                    .find(|n| **n != name.as_str())
                    .copied();
                if let Some(other) = other {
                    self.finding(
                        FindingKind::Conflict,
                        "remote_secret_duplicate",
                        &primary.name,
                        format!(
                            "Secret {}/{other} in {} already registers cluster {}, and Istio ignores a second secret for the same cluster id",
                            self.ns(),
                            primary.name,
                            peer.name
                        ),
                        format!("delete {other} (made by istioctl or by hand) and plan again"),
                    );
                    continue;
                }
                // istioctl's secret of our name: left alone unless adopted.
                if let Some(same_name) = existing.filter(|s| !s.object.managed) {
                    // Istio takes the cluster id from the data key: adopting a
                    // secret of this name that registers another cluster would
                    // silently detach that cluster from this primary.
                    let registers_peer = same_name.cluster_ids == [peer.name.as_str()];
                    if self.options.adopt && !registers_peer {
                        self.finding(
                            FindingKind::Conflict,
                            "remote_secret_unmanaged",
                            &primary.name,
                            format!(
                                "Secret {}/{name} in {} is not managed by meshform and registers cluster id {:?}, not {}; it is left as it is",
                                self.ns(),
                                primary.name,
                                same_name.cluster_ids.join(", "),
                                peer.name
                            ),
                            "delete it (made by istioctl or by hand) and plan again".to_string(),
                        );
                    } else if self.options.adopt {
                        let mut reason = format!("adopt the existing remote secret for {}", peer.name);
                        if !same_name.object_copies.is_empty() {
                            reason.push_str(&format!(
                                ", and remove the copy of it (token included) kept in annotation {}",
                                same_name.object_copies.join(", ")
                            ));
                        }
                        self.adopted_token(primary, peer, name, same_name);
                        self.push(
                            Phase::Attach,
                            &primary.name,
                            write(WriteMode::Adopt, Some(same_name), false),
                            reason,
                        );
                    } else {
                        self.finding(
                            FindingKind::Conflict,
                            "remote_secret_unmanaged",
                            &primary.name,
                            format!(
                                "Secret {}/{name} in {} is not managed by meshform; it is left as it is",
                                self.ns(),
                                primary.name
                            ),
                            "pass --adopt to let meshform take it over, or delete it".to_string(),
                        );
                    }
                    continue;
                }
                match ours {
                    None => {
                        let reason = match &peer_entry.reattach {
                            Some(reattach) => reattach.clone(),
                            None => format!("attach {} to {}", peer.name, primary.name),
                        };
                        if peer_entry.joins {
                            joining.insert(&peer.name, &peer.network);
                        }
                        self.push(
                            Phase::Attach,
                            &primary.name,
                            write(WriteMode::Create, None, false),
                            reason,
                        );
                    }
                    Some(secret) if secret.object.spec_hash.as_deref() != Some(hash.as_str()) => {
                        let reason = if secret.server.as_deref() != Some(server.as_str()) {
                            format!(
                                "API address of {} changes from {} to {server}",
                                peer.name,
                                secret.server.as_deref().unwrap_or("none")
                            )
                        } else if secret.ca_sha256.as_deref() != peer_facts.ca_sha256.as_deref() {
                            format!("the CA of {} has changed", peer.name)
                        } else if secret.tls_server_name.as_deref() != peer_facts.tls_server_name.as_deref() {
                            format!(
                                "the TLS server name of {} changes from {} to {}",
                                peer.name,
                                secret.tls_server_name.as_deref().unwrap_or("none"),
                                peer_facts.tls_server_name.as_deref().unwrap_or("none")
                            )
                        } else {
                            format!("the remote secret for {} is not what meshform writes", peer.name)
                        };
                        let force = self.conflict(primary, &what(), &secret.object.content_owners);
                        self.push(
                            Phase::Update,
                            &primary.name,
                            write(WriteMode::Update, Some(secret), force),
                            reason,
                        );
                    }
                    Some(secret) if drift(secret, &peer.name, server).is_some() => {
                        let reason = drift(secret, &peer.name, server).unwrap_or_default();
                        let force = self.conflict(primary, &what(), &secret.object.content_owners);
                        self.push(
                            Phase::Update,
                            &primary.name,
                            write(WriteMode::Update, Some(secret), force),
                            format!(
                                "the remote secret for {} was changed in the cluster: {reason}",
                                peer.name
                            ),
                        );
                    }
                    Some(secret) => {
                        // Deleting the account revokes its tokens, and a
                        // re-created account has another UID: no expiry shows
                        // that. A token of the other account is no revocation
                        // but the wrong account: the control plane's write
                        // access, or a read-only token where it writes.
                        let expected = peer_facts.account(account).service_account.as_ref();
                        let issued_to = secret.token_account_uid.as_deref();
                        let wrong = issued_to
                            .and_then(|uid| peer_facts.account_of(uid))
                            .filter(|s| *s != account);
                        let revoked = issued_to
                            .filter(|_| wrong.is_none())
                            .filter(|uid| expected.is_none_or(|a| a.uid != *uid));
                        // Likewise a token whose binding Secret is gone (deleted by hand).
                        let unbound = secret
                            .token_binding_uid
                            .as_ref()
                            .filter(|uid| matched != Matched::AtPair && !self.bindings.observed(uid));
                        // istiod reads a remote's control-plane annotation only
                        // when it adds the cluster (`checkShouldLead`, istio/istio
                        // pilot/pkg/serviceregistry/kube/controller/multicluster.go):
                        // naming this primary there now takes a new kubeconfig,
                        // which makes istiod add the cluster again.
                        let newly_named = peer.role == Role::Remote
                            && peer.control_plane.as_deref() == Some(primary.name.as_str())
                            && !peer_facts
                                .namespace
                                .as_ref()
                                .and_then(|n| n.control_planes.as_deref())
                                .is_some_and(|ids| ids.split(',').any(|id| id == primary.name || id == "*"));
                        // A legacy token is shared and dies with its token
                        // Secret, not with a binding.
                        let replaced = if self.desired.mesh.tokens.mode == TokenMode::Secret {
                            "and the replaced legacy token stays valid with its account's role"
                        } else {
                            "and the replaced one is revoked after the grace period"
                        };
                        let rotate = match &secret.token {
                            _ if self.options.rotate_tokens => Some("--rotate-tokens".to_string()),
                            _ if newly_named => Some(format!(
                                "istiod in {} reads {}'s control-plane annotation only when it adds the cluster, and a new token makes it add {} again",
                                primary.name, peer.name, peer.name
                            )),
                            _ if unbound.is_some() => Some(format!(
                                "its token is revoked: the binding Secret in {} it was bound to was deleted",
                                peer.name
                            )),
                            _ if revoked.is_some() => Some(format!(
                                "its token is revoked: the {} {} it was issued to {}",
                                account.describe(),
                                account.service_account(),
                                if expected.is_none() {
                                    "was deleted"
                                } else {
                                    "was deleted and re-created"
                                }
                            )),
                            _ if wrong == Some(ReaderScope::Read) => Some(format!(
                                "{} is {}'s control plane and writes there through a token of the reader account, which \
                                 every primary's token comes from: a token of its own account {} replaces it, {}",
                                primary.name,
                                peer.name,
                                objects::CONTROL_PLANE_SERVICE_ACCOUNT,
                                replaced
                            )),
                            _ if wrong.is_some() => Some(format!(
                                "{} is not {}'s control plane: a token of the read-only reader account replaces the \
                                 control-plane account's, {}",
                                primary.name, peer.name, replaced
                            )),
                            // Legacy token Secrets never expire; there is nothing to rotate.
                            _ if self.desired.mesh.tokens.mode == TokenMode::Secret => None,
                            TokenFacts::Bound { issued_at, expires_at } => {
                                let percent = self.desired.mesh.tokens.rotate_at_percent;
                                let due = due::rotation_second(*issued_at, *expires_at, percent);
                                (now.as_second() >= due).then(|| {
                                    format!("the token expires at {expires_at}, and {percent}% of its life has passed")
                                })
                            }
                            TokenFacts::Unbounded => None,
                            TokenFacts::Unknown => Some("the secret holds no readable token".to_string()),
                        };
                        if let Some(why) = rotate {
                            let reason = format!("new token for {}: {why}", peer.name);
                            let force = self.conflict(primary, &what(), &secret.object.content_owners);
                            self.push(
                                Phase::Update,
                                &primary.name,
                                write(WriteMode::Rotate, Some(secret), force),
                                reason,
                            );
                        }
                    }
                }
            }
            // Those after the last peer's name.
            for (held, secret) in held {
                self.not_at_pair(primary, held, secret);
            }
        }
        let renamed: BTreeSet<&str> = self
            .changes
            .iter()
            .filter_map(|c| match c {
                Change::Rename { to, .. } => Some(to.as_str()),
                _ => None,
            })
            .collect();
        joining.retain(|cluster, _| !renamed.contains(cluster));
        let detached = std::mem::take(&mut self.detached);
        self.actions.reserve_exact(detached.len());
        self.actions.extend(detached);
        for (cluster, network) in joining {
            self.changes.insert(Change::Attach {
                cluster: cluster.to_string(),
                network: network.to_string(),
            });
        }
    }

    /// Sidecars keep the network they started with: after a relabel,
    /// workloads must restart for cross-network traffic to reach them. The
    /// restart stays in the plan until apply has run it: the relabel's write
    /// records it on the namespace, and apply takes that off after the restart.
    pub(super) fn restarts(&mut self) {
        let relabelled: Vec<_> = self
            .clusters
            .clone()
            .into_iter()
            .filter_map(|c| self.restart_from(c).map(|from| (c, from)))
            .collect();
        for (cluster, from) in relabelled {
            let context = shell_quote(&cluster.context);
            // Run by hand, the restart must also clear what records it, or
            // every later plan would ask for it again.
            let command = format!(
                "for ns in $(kubectl --context {context} get namespaces -l istio-injection=enabled -o name) \
                 $(kubectl --context {context} get namespaces -l istio.io/rev -o name); do \
                 kubectl --context {context} -n \"${{ns#namespace/}}\" rollout restart deployment,statefulset,daemonset; done \
                 && kubectl --context {context} annotate namespace {} {}-",
                shell_quote(self.ns()),
                objects::RESTART_OWED_ANNOTATION
            );
            let old = if from.is_empty() {
                "the default network".to_string()
            } else {
                format!("network {from:?}")
            };
            // Owed, and not relabelled again by this plan: an earlier run
            // relabelled the cluster and stopped before the restart.
            let labelled = self
                .facts(&cluster.name)
                .and_then(|f| f.namespace.as_ref())
                .is_some_and(|n| n.network.as_deref() == Some(cluster.network.as_str()));
            let owed = labelled && self.owed_restart(cluster).is_some();
            let reason = if owed {
                format!(
                    "an earlier apply moved {} from {old} to {:?} without restarting its workloads ({} on Namespace {}): \
                     running sidecars keep {old} until restarted; cross-network traffic to them fails until then",
                    cluster.name,
                    cluster.network,
                    objects::RESTART_OWED_ANNOTATION,
                    self.ns()
                )
            } else {
                format!("running sidecars keep {old} until restarted; cross-network traffic to them fails until then")
            };
            let kind = ActionKind::RestartWorkloads {
                enabled: self.options.restart_workloads,
                command,
                owed,
            };
            self.push(Phase::Update, &cluster.name, kind, reason);
        }
    }
}

/// What of meshform's own remote secret differs from what it wrote, though
/// its spec-hash annotation says otherwise: the cluster id Istio reads
/// (the data key and the annotation) or the address in its kubeconfig.
/// Read from the facts observe keeps, never from the token.
pub(super) fn drift(secret: &RemoteSecretFacts, peer: &str, server: &str) -> Option<String> {
    if !secret.object.managed {
        return None;
    }
    if secret.annotated_cluster.as_deref() != Some(peer) {
        return Some(format!(
            "annotation {} is {}, meshform writes {peer:?}",
            objects::CLUSTER_ANNOTATION,
            secret
                .annotated_cluster
                .as_deref()
                .map_or("missing".to_string(), |a| format!("{a:?}"))
        ));
    }
    if secret.cluster_ids != [peer] {
        return Some(format!(
            "its data keys are {:?}, meshform writes one, {peer:?}",
            secret.cluster_ids
        ));
    }
    match secret.server.as_deref() {
        Some(s) if s != server => Some(format!("its kubeconfig points at {s}, meshform writes {server}")),
        _ => None,
    }
}

pub(super) fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./:@".contains(&b)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

impl Planner<'_> {
    /// A never-expiring token in a secret being adopted keeps working after
    /// meshform writes its own token in its place, wherever a copy of it
    /// went (istioctl's output, the annotation kubectl kept, backups), until
    /// the legacy token Secret it was issued from is deleted in the peer:
    /// the plan says so, with the command. In `secret` mode meshform's own
    /// token comes from its own token Secret, so the same holds.
    fn adopted_token(&mut self, primary: &Cluster, peer: &Cluster, name: &str, secret: &RemoteSecretFacts) {
        if secret.token != TokenFacts::Unbounded {
            return;
        }
        let ns = self.ns().to_string();
        let (which, command) = match &secret.token_secret {
            Some(token_secret)
                if token_secret == objects::READER_TOKEN_SECRET
                    || token_secret == objects::CONTROL_PLANE_TOKEN_SECRET =>
            {
                return;
            }
            Some(token_secret) => (
                format!("Secret {ns}/{token_secret} in {}", peer.name),
                format!(
                    "kubectl --context {} -n {ns} delete secret {token_secret}",
                    peer.context
                ),
            ),
            None => (
                format!("its service-account token Secret in {}", peer.name),
                format!(
                    "kubectl --context {} -n {ns} get secrets --field-selector type=kubernetes.io/service-account-token, then delete the one that issued it",
                    peer.context
                ),
            ),
        };
        // One warning a peer, however many primaries adopt a secret for it.
        let code = "meshform::plan::adopted_token_outlives";
        if self
            .findings
            .iter()
            .any(|f| f.code == code && f.cluster.as_deref() == Some(peer.name.as_str()))
        {
            return;
        }
        self.finding(
            FindingKind::Warning,
            "adopted_token_outlives",
            &peer.name,
            format!(
                "Secret {ns}/{name} in {} holds a token for {} that never expires; adopting replaces it there, but the \
                 old token keeps working wherever a copy of it is (istioctl's output, backups) until {which} is deleted",
                primary.name, peer.name
            ),
            format!("once every primary reads {} with meshform's tokens, revoke it: {command}", peer.name),
        );
    }
}
