//! What waits: the actions apply holds back while a plan has blockers
//! ([`Plan::holds`], issue 29: one cluster's blocker does not stop the rest
//! of the mesh from being kept alive), what counts as maintenance
//! ([`Action::maintains`]), and what `meshform controller` may run with no
//! person watching ([`ActionKind::unattended`], issue 30). Worked out from
//! the plan alone, so a saved plan is held the same way; it must not look
//! at anything but the plan.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::model::{Action, ActionKind, CaCertsMode, Change, Finding, Plan, WriteMode};

impl ActionKind {
    /// Whether the controller may run it with no person watching
    /// (`--auto=safe`): writes that put meshform's own objects, labels,
    /// reader accounts and remote secrets back or bring them up to date,
    /// token rotations and the revocation of replaced tokens. Detaches,
    /// relabels to another network, revoking a departed holder's tokens,
    /// other deletes, adoptions and restarts wait for a person; so does
    /// anything a detach, move or rename is about ([`Plan::holds`]).
    pub fn unattended(&self) -> bool {
        match self {
            ActionKind::EnsureReader { .. }
            | ActionKind::EnsureGateway { .. }
            | ActionKind::EnsureIstiodExposure { .. }
            | ActionKind::EnsureAmbientGateway { .. }
            // A gateway Service's label: a hand edit put back. On a
            // network move it is held with the move.
            | ActionKind::SetGatewayNetwork { .. } => true,
            // A Gateway API Gateway's label: a first label or one put back
            // is safe; moving the user's Gateway to another network waits.
            ActionKind::SetK8sGatewayNetwork { network, previous, .. } => previous.as_ref().is_none_or(|p| p == network),
            // The label (or namespace) put back, or the control-plane
            // annotation; another network is a move.
            ActionKind::SetNetwork { network, previous, .. } => previous.as_ref().is_none_or(|p| p == network),
            ActionKind::WriteRemoteSecret { mode, .. } => *mode != WriteMode::Adopt,
            ActionKind::RevokeReaderTokens { detach, .. } => !detach,
            // A first intermediate, or one renewed under the same root, keeps
            // every workload's trust; a new root or someone else's Secret
            // replaced waits, and so does istiod's restart.
            ActionKind::WriteCaCerts { mode, .. } => matches!(mode, CaCertsMode::Create | CaCertsMode::Renew),
            ActionKind::RestartIstiod { .. }
            | ActionKind::DeleteRemoteSecret { .. }
            | ActionKind::DeleteGateway { .. }
            | ActionKind::DeleteAmbientGateway { .. }
            | ActionKind::DeleteIstiodExposure { .. }
            | ActionKind::RestartWorkloads { .. } => false,
        }
    }
}

impl Action {
    /// Keeps what is in place working without changing the mesh's shape:
    /// writes of meshform's own objects (a token rotation, a remote secret
    /// or reader account put back, a Gateway repaired, the mesh namespace's
    /// network label put back) and the revocation of replaced tokens. Deletes, labels on Istio's objects, adoptions and
    /// restarts are changes; so is anything of a cluster a [`Change`] is
    /// about (see [`Plan::holds`]).
    pub fn maintains(&self) -> bool {
        match &self.kind {
            ActionKind::WriteRemoteSecret { mode, .. } => *mode != WriteMode::Adopt,
            ActionKind::RevokeReaderTokens { detach, .. } => !detach,
            // The mesh namespace or its label put back: what lives in the
            // namespace (the reader account, a Gateway) cannot be written
            // without it. A relabel is a change.
            ActionKind::SetNetwork { previous: None, .. } => true,
            ActionKind::EnsureReader { .. }
            | ActionKind::EnsureGateway { .. }
            | ActionKind::EnsureAmbientGateway { .. }
            | ActionKind::EnsureIstiodExposure { .. } => true,
            // A renewal under the same root keeps workloads' certificates
            // coming; a new intermediate or root changes who trusts whom.
            ActionKind::WriteCaCerts { mode, .. } => *mode == CaCertsMode::Renew,
            ActionKind::DeleteRemoteSecret { .. }
            | ActionKind::SetNetwork { .. }
            | ActionKind::DeleteGateway { .. }
            | ActionKind::DeleteAmbientGateway { .. }
            | ActionKind::DeleteIstiodExposure { .. }
            | ActionKind::RestartWorkloads { .. }
            | ActionKind::RestartIstiod { .. }
            | ActionKind::SetGatewayNetwork { .. }
            | ActionKind::SetK8sGatewayNetwork { .. } => false,
        }
    }
}

/// The clusters a change is about.
fn about(change: &Change) -> [Option<&str>; 2] {
    match change {
        Change::Attach { cluster, .. }
        | Change::Detach { cluster }
        | Change::NetworkChange { cluster, .. }
        | Change::BecameRemote { cluster } => [Some(cluster.as_str()), None],
        Change::Rename { from, to } => [Some(from.as_str()), Some(to.as_str())],
    }
}

impl Plan {
    /// What apply holds back while the plan has blockers: every action
    /// that writes to or is about a cluster a blocker concerns, and every
    /// action that is not maintenance of a cluster no change is about.
    /// The rest (rotations, revocations of replaced tokens, repairs of the
    /// other pairs) still runs, so one cluster's pending load balancer or
    /// CA migration does not let every token in the mesh expire.
    pub fn holds(&self) -> Holds<'_> {
        let mut blocked = BTreeMap::new();
        for finding in self.blockers() {
            for cluster in finding.clusters() {
                blocked.entry(cluster).or_insert(finding);
            }
        }
        let changing = self.changes.iter().flat_map(about).flatten().collect();
        // Of a controller's plan: the clusters whose changes take a person's
        // consent. A new cluster attaching is safe unattended.
        let moving = self
            .changes
            .iter()
            .filter(|c| self.options.unattended && !matches!(c, Change::Attach { .. }))
            .flat_map(about)
            .flatten()
            .collect();
        Holds {
            blocked,
            changing,
            blockers: self.blockers().count(),
            unattended: self.options.unattended,
            moving,
        }
    }

    /// The writes apply makes though the plan has blockers: those
    /// [`Plan::holds`] leaves free.
    pub fn free_writes(&self) -> usize {
        let holds = self.holds();
        self.actions
            .iter()
            .filter(|a| a.writes() && holds.of(a).is_none())
            .count()
    }
}

/// Why apply leaves an action undone: the rule that one cluster's blocker
/// does not stop the rest of the mesh from being kept alive (issue 29).
/// Worked out from the plan alone, so a saved plan is held the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "held_by", rename_all = "snake_case")]
pub enum Hold {
    /// A blocker concerns a cluster the action writes to or is about.
    Blocker { code: String, cluster: String },
    /// Not maintenance: the mesh's shape does not change while it has blockers.
    Change { blockers: usize },
    /// Planned unattended (`meshform controller`), and not safe to run
    /// without a person ([`ActionKind::unattended`]).
    Person {
        /// It detaches, or is part of a change that does: `--allow-detach`.
        allow_detach: bool,
    },
}

impl std::fmt::Display for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hold::Blocker { code, cluster } => write!(
                f,
                "held back: blocker {} concerns {cluster}; fix it and apply again",
                code.trim_start_matches("meshform::plan::")
            ),
            Hold::Change { blockers } => write!(
                f,
                "held back: the plan has {blockers} blocker(s), and while it does apply only keeps the mesh alive (token rotation, revocation of replaced tokens, repairs of meshform's objects)"
            ),
            Hold::Person { allow_detach } => write!(
                f,
                "held back: not safe unattended; a person applies it with `meshform apply{}`",
                if *allow_detach { " --allow-detach" } else { "" }
            ),
        }
    }
}

/// What a plan's blockers hold back; see [`Plan::holds`].
pub struct Holds<'a> {
    /// Cluster → the first blocker (in the plan's order) concerning it.
    blocked: BTreeMap<&'a str, &'a Finding>,
    /// Clusters a [`Change`] is about: their actions change the mesh's shape.
    changing: BTreeSet<&'a str>,
    blockers: usize,
    /// The plan is a controller's ([`Options::unattended`](super::Options::unattended)).
    unattended: bool,
    /// Of an unattended plan: clusters a detach, move or rename is about.
    moving: BTreeSet<&'a str>,
}

impl Holds<'_> {
    /// Why `action` is held back, if it is.
    pub fn of(&self, action: &Action) -> Option<Hold> {
        let touched = || std::iter::once(action.cluster.as_str()).chain(action.peer());
        if self.blockers > 0 {
            if let Some((cluster, finding)) = touched().find_map(|c| self.blocked.get_key_value(c)) {
                return Some(Hold::Blocker {
                    code: finding.code.clone(),
                    cluster: cluster.to_string(),
                });
            }
            if !action.maintains() || touched().any(|c| self.changing.contains(c)) {
                return Some(Hold::Change {
                    blockers: self.blockers,
                });
            }
        }
        let moving = touched().any(|c| self.moving.contains(c));
        if self.unattended && (moving || !action.kind.unattended()) {
            return Some(Hold::Person {
                allow_detach: moving || action.is_destructive(),
            });
        }
        None
    }
}
