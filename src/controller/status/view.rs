//! What a round says about the mesh, as one value: the clusters and whether
//! they were read, the pairs a primary's istiod reads and their tokens'
//! ends, the plan's pending writes and blockers, and the checklist's lines.
//! Metrics, Events and the status object are all rendered from it, and it is
//! made only of what the round observed and planned and of `check::check`
//! over the two, so none of them can disagree with `plan` or `check`. It
//! holds names, codes and times only: never an object's data.

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde::Serialize;

use crate::check;
use crate::controller::Seen;
use crate::observe::model::{ClusterState, TokenFacts, UnknownReason};
use crate::plan::ActionKind;
use crate::topology::Topology;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeshView {
    pub mesh: String,
    pub observed_at: Timestamp,
    pub clusters: Vec<ClusterView>,
    pub pairs: Vec<PairView>,
    /// The plan's writes the round did not do: held for a person, failed,
    /// or (`--auto=none`) all of them.
    pub pending: Vec<PendingView>,
    pub blockers: Vec<BlockerView>,
    pub checks: Vec<CheckView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterView {
    pub cluster: String,
    pub reachable: bool,
    /// Why it could not be read; the detail (an address, a server's
    /// message) stays in the round's log line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<UnknownReason>,
}

/// A primary (`holder`) whose istiod reads `peer` through a remote secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairView {
    pub holder: String,
    pub peer: String,
    /// After the round, the holder holds a remote secret for the peer: it
    /// was observed and not deleted, or the round wrote it.
    pub attached: bool,
    /// The end of the held secret's token, when it is bounded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_expires_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PendingView {
    pub cluster: String,
    pub object: String,
    /// The action's name as plans spell it (`write_remote_secret`).
    pub kind: String,
    /// Refused without `meshform apply --allow-detach`.
    pub destructive: bool,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlockerView {
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckView {
    /// `cluster`, `network` or `mesh`.
    pub scope: &'static str,
    /// The cluster's or network's name, or the mesh's.
    pub name: String,
    pub check: String,
    /// As `meshform check --format json` spells it: pass, warn, fail, skipped.
    pub result: String,
}

impl MeshView {
    pub fn of(topology: &Topology, seen: &Seen) -> MeshView {
        let Seen { observed, plan, done } = seen;
        let done: BTreeSet<usize> = done.iter().copied().collect();
        let clusters = topology
            .clusters
            .iter()
            .map(|c| {
                let state = observed.clusters.get(&c.name).map(|o| &o.state);
                ClusterView {
                    cluster: c.name.clone(),
                    reachable: matches!(state, Some(ClusterState::Reachable(_))),
                    unreachable: match state {
                        Some(ClusterState::Reachable(_)) => None,
                        Some(ClusterState::Unknown { reason, .. }) => Some(*reason),
                        None => Some(UnknownReason::Other),
                    },
                }
            })
            .collect();
        MeshView {
            mesh: topology.mesh.name.clone(),
            observed_at: observed.observed_at,
            clusters,
            pairs: pairs(topology, seen, &done),
            pending: plan
                .actions
                .iter()
                .enumerate()
                .filter(|(i, a)| a.writes() && !done.contains(i))
                .map(|(_, a)| PendingView {
                    cluster: a.cluster.clone(),
                    object: a.object(&plan.namespace),
                    kind: kind_name(&a.kind),
                    destructive: a.is_destructive(),
                    reason: a.reason.clone(),
                })
                .collect(),
            blockers: plan
                .blockers()
                .map(|f| BlockerView {
                    code: f.code.clone(),
                    cluster: f.cluster.clone(),
                    message: f.message.clone(),
                })
                .collect(),
            checks: checks(topology, seen),
        }
    }
}

/// Every primary's remote secrets, by the cluster ids istiod takes from
/// them (their data keys: istio `pkg/kube/multicluster/secretcontroller.go`
/// adds one cluster per key). A primary that could not be read is left
/// out: nothing is known of what it holds.
fn pairs(topology: &Topology, seen: &Seen, done: &BTreeSet<usize>) -> Vec<PairView> {
    let Seen { observed, plan, .. } = seen;
    let did = |holder: &str, peer: &str, delete: bool| {
        done.iter().any(|i| {
            let a = &plan.actions[*i];
            a.cluster == holder
                && match &a.kind {
                    ActionKind::DeleteRemoteSecret { peer: p, .. } => delete && p == peer,
                    ActionKind::WriteRemoteSecret { peer: p, .. } => !delete && p == peer,
                    _ => false,
                }
        })
    };
    let mut pairs = Vec::new();
    for holder in topology.primaries() {
        let Some(facts) = observed.facts(&holder.name) else {
            continue;
        };
        let mut peers: BTreeSet<&str> = topology
            .clusters
            .iter()
            .map(|c| c.name.as_str())
            .filter(|c| *c != holder.name)
            .collect();
        peers.extend(
            facts
                .remote_secrets
                .values()
                .flat_map(|s| s.cluster_ids.iter().map(String::as_str)),
        );
        for peer in peers {
            let held = facts
                .remote_secrets
                .values()
                .find(|s| s.cluster_ids.iter().any(|id| id == peer));
            let kept = held.is_some() && !did(&holder.name, peer, true);
            pairs.push(PairView {
                holder: holder.name.clone(),
                peer: peer.to_string(),
                attached: kept || did(&holder.name, peer, false),
                token_expires_at: held.filter(|_| kept).and_then(|s| match s.token {
                    TokenFacts::Bound { expires_at, .. } => Some(expires_at),
                    TokenFacts::Unbounded | TokenFacts::Unknown => None,
                }),
            });
        }
    }
    pairs
}

fn checks(topology: &Topology, seen: &Seen) -> Vec<CheckView> {
    let checklist = check::check(topology, &seen.observed, &seen.plan);
    let line = |scope: &'static str, name: &str, c: &check::Check| CheckView {
        scope,
        name: name.to_string(),
        check: snake(&c.id),
        result: snake(&c.status),
    };
    let mut lines = Vec::new();
    for cluster in &checklist.clusters {
        lines.extend(cluster.checks.iter().map(|c| line("cluster", &cluster.cluster, c)));
    }
    for network in &checklist.networks {
        lines.extend(network.checks.iter().map(|c| line("network", &network.network, c)));
    }
    lines.extend(checklist.mesh_checks.iter().map(|c| line("mesh", &checklist.mesh, c)));
    lines
}

/// An action's name as a plan's JSON spells it (its serde tag), so the
/// metric's label and `meshform plan --format json` agree.
fn kind_name(kind: &ActionKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.get("action")?.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A unit enum's serde name (`CheckId::RemoteSecrets` is `remote_secrets`).
fn snake<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use jiff::SignedDuration;

    use super::*;
    use crate::observe::model::Observed;
    use crate::observe::synthetic;
    use crate::plan::simulate::simulate;
    use crate::plan::{self, Options};
    use crate::topology::Role;

    const EXAMPLE: &str = include_str!("../../../mesh.toml.example");

    fn example() -> Topology {
        crate::topology::check("mesh.toml", EXAMPLE.as_bytes())
            .into_result()
            .unwrap()
            .0
    }

    fn options() -> Options {
        Options {
            skip_unreachable: true,
            ..Options::default()
        }
    }

    fn seen(topology: &Topology, observed: Observed, done: Vec<usize>) -> Seen {
        let plan = plan::plan(topology, &observed, &options()).unwrap();
        Seen { observed, plan, done }
    }

    fn fresh(topology: &Topology) -> Observed {
        synthetic::fresh(topology, "2026-03-01T12:00:00Z".parse().unwrap())
    }

    /// Every primary with every other cluster.
    fn all_pairs(topology: &Topology) -> usize {
        let primaries = topology.clusters.iter().filter(|c| c.role == Role::Primary).count();
        primaries * (topology.clusters.len() - 1)
    }

    #[test]
    fn a_fresh_mesh_has_every_pair_detached_and_every_write_pending() {
        let topology = example();
        let seen = seen(&topology, fresh(&topology), Vec::new());
        let view = MeshView::of(&topology, &seen);
        assert!(view.clusters.iter().all(|c| c.reachable));
        assert_eq!(view.pairs.len(), all_pairs(&topology));
        assert!(view.pairs.iter().all(|p| !p.attached && p.token_expires_at.is_none()));
        assert_eq!(
            view.pending.len(),
            seen.plan.actions.iter().filter(|a| a.writes()).count()
        );
        assert!(
            view.pending
                .iter()
                .any(|p| p.kind == "write_remote_secret" && !p.destructive)
        );
        assert!(view.checks.iter().any(|c| c.result == "fail"));
        assert!(view.checks.iter().any(|c| c.scope == "network"));
        assert!(
            view.checks
                .iter()
                .any(|c| c.scope == "mesh" && c.check == "root_of_trust")
        );
    }

    #[test]
    fn what_a_round_wrote_is_attached_and_no_longer_pending() {
        let topology = example();
        let observed = fresh(&topology);
        let plan = plan::plan(&topology, &observed, &options()).unwrap();
        let done = (0..plan.actions.len()).collect();
        let view = MeshView::of(&topology, &Seen { observed, plan, done });
        assert!(view.pairs.iter().all(|p| p.attached), "{:#?}", view.pairs);
        assert!(view.pending.is_empty(), "{:#?}", view.pending);
    }

    #[test]
    fn a_converged_mesh_is_all_attached_with_token_ends_and_nothing_pending() {
        let topology = example();
        let observed = fresh(&topology);
        let plan = plan::plan(&topology, &observed, &options()).unwrap();
        let mut after = simulate(&observed, &plan, SignedDuration::from_hours(24 * 7));
        after.observed_at = observed.observed_at + SignedDuration::from_hours(1);
        let seen = seen(&topology, after, Vec::new());
        let view = MeshView::of(&topology, &seen);
        assert!(seen.plan.is_empty(), "{:#?}", seen.plan);
        assert_eq!(view.pairs.len(), all_pairs(&topology));
        assert!(view.pairs.iter().all(|p| p.attached && p.token_expires_at.is_some()));
        assert!(view.pending.is_empty() && view.blockers.is_empty());
        assert!(view.checks.iter().all(|c| c.result == "pass"), "{:#?}", view.checks);
    }

    #[test]
    fn a_primary_that_cannot_be_read_has_no_pairs_and_is_unreachable() {
        let topology = example();
        let mut observed = fresh(&topology);
        let primary = topology.primaries().next().unwrap().name.clone();
        observed.clusters.get_mut(&primary).unwrap().state = ClusterState::Unknown {
            reason: UnknownReason::Timeout,
            detail: "timed out".into(),
        };
        let view = MeshView::of(&topology, &seen(&topology, observed, Vec::new()));
        let cluster = view.clusters.iter().find(|c| c.cluster == primary).unwrap();
        assert!(!cluster.reachable);
        assert_eq!(cluster.unreachable, Some(UnknownReason::Timeout));
        assert!(view.pairs.iter().all(|p| p.holder != primary));
        assert!(view.pairs.iter().any(|p| p.peer == primary));
    }
}
