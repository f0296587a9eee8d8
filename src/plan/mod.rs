//! The planner: desired topology × observed clusters → an ordered plan.
//!
//! [`plan`] is a pure function. It reads no cluster, file or clock (the
//! observation carries its own time), so every rule of the mesh can be tested
//! with plain data. It encodes Istio's multi-cluster rules:
//!
//! - every primary holds a remote secret for every other cluster; remotes hold none;
//! - clusters on one network need nothing more; a cluster with peers on
//!   other networks exposes its services through the `cross-network-gateway`;
//! - Istio only picks up a cluster's new network on re-attach, so a network
//!   change is always detach → relabel → re-attach (→ restart workloads);
//! - objects meshform does not own are never changed or deleted (the one
//!   field it writes on Istio's objects is the network label, of the mesh
//!   namespace and of the east-west gateway Service);
//! - what the Istio install decides must fit the topology for traffic to
//!   flow: the gateway Service's port and address, istiod's cluster id, the
//!   injection network, the mesh id, one root of trust (blockers, with the
//!   install setting that fixes each).
//! - every primary's token for a peer is of the peer's read-only reader
//!   account, except a remote's control plane's, which is of the remote's
//!   control-plane account (what istiod writes in a remote it manages);
//! - a reader token dies with the binding Secret it is bound to: a holder
//!   that leaves loses its tokens at once, a replaced token goes once its
//!   successor has been in place for the grace period.
//!
//! One file per phase of the walk, each an `impl Planner` block: `detach.rs`,
//! `network.rs` (labels, reader accounts, gateways), `exposure.rs` (istiod
//! for remotes on other networks), `attach.rs` (attach and updates, workload
//! restarts), `revocation.rs`, `install.rs` (the Istio install's settings,
//! trust, addresses), `trust.rs` (managed trust: `cacerts` and istiod
//! restarts), `rotation.rs` (a root rotation's stages). Beside them: `model.rs` (the plan and its action
//! vocabulary), `index.rs` (lookups over the observation), `bindings.rs`
//! (binding Secrets placed by holder and peer), `hashes.rs`
//! (content hashes), `owned.rs` (an object meshform writes whole judged by
//! its spec, as the cross-network Gateway and istiod's exposure are),
//! `compare.rs` (a saved plan against the plan made again at apply),
//! `due.rs` (when planning again finds a rotation or a grace's end, for the
//! controller),
//! `simulate.rs` (a plan's expected effect). This module holds the walk, the
//! planner's shared helpers and its findings' wording rules; it reads no
//! cluster and imports nothing of observe's I/O, apply or render.

mod ambient;
mod attach;
mod bindings;
mod compare;
mod detach;
mod due;
mod exposure;
pub mod hashes;
mod holds;
mod index;
mod install;
mod model;
mod network;
mod owned;
mod revocation;
mod rotation;
pub mod simulate;
mod trust;

use std::collections::{BTreeMap, BTreeSet};

use foldhash::{HashMap, HashMapExt, HashSet};

use miette::Diagnostic;
use thiserror::Error;

pub use compare::{Difference, compare};
pub use due::next_due;
pub use holds::{Hold, Holds};
pub use model::*;

use self::bindings::{Bindings, Matched};
use self::index::{Desired, Index};
use crate::objects::{self, ReaderScope, remote_secret_name};
use crate::observe::model::{
    BindingFacts, ClusterFacts, ClusterState, EastWestFacts, ObjectFacts, Observed, RemoteSecretFacts, TokenFacts,
};
use crate::topology::{Cluster, REMOTE_SECRET_PREFIX, Role, TokenMode, Topology};

/// How long a replaced reader token outlives its successor by default.
/// Istio swaps a remote cluster's client when its secret changes, after
/// the new client has synced (pkg/kube/multicluster/secretcontroller.go):
/// seconds, not minutes.
pub const DEFAULT_REVOKE_GRACE_SECONDS: i64 = 300;

/// Choices the user makes on the command line. A saved plan records them
/// ([`Plan::options`]): apply plans it again with them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Options {
    /// Plan the reachable clusters and defer the rest, instead of failing.
    pub skip_unreachable: bool,
    /// Take over unmanaged remote secrets of the names meshform would write,
    /// and an unmanaged `cacerts` under managed trust.
    pub adopt: bool,
    /// Let apply run (rather than only show) workload restarts after a network
    /// change and istiod restarts for a new root; recorded in each
    /// `RestartWorkloads` and `RestartIstiod` action, which apply obeys.
    pub restart_workloads: bool,
    /// Take fields meshform writes from other field managers that own them
    /// (server-side apply's force), instead of a blocker.
    pub force_conflicts: bool,
    /// Rotate every reader token now (when to rotate otherwise is the
    /// topology's `[mesh.tokens] rotate_at_percent`).
    pub rotate_tokens: bool,
    /// Keep only actions that write to, or are about, these clusters.
    pub targets: Vec<String>,
    /// Seconds a replaced token stays valid after its successor was
    /// written, so every istiod has moved to the successor first.
    pub revoke_grace_seconds: i64,
    /// Plan for `meshform controller --auto=safe`, which runs with no person
    /// to consent: apply holds back what is not [`ActionKind::unattended`]
    /// ([`Hold::Person`]). No flag of `plan` or `apply` sets it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unattended: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            skip_unreachable: false,
            adopt: false,
            restart_workloads: false,
            force_conflicts: false,
            rotate_tokens: false,
            targets: Vec::new(),
            revoke_grace_seconds: DEFAULT_REVOKE_GRACE_SECONDS,
            unattended: false,
        }
    }
}

impl Options {
    /// The command-line flags that make these choices, for the help that
    /// says how to plan again (`--rotate-tokens --target a`).
    pub fn flags(&self) -> String {
        let mut flags: Vec<String> = [
            (self.skip_unreachable, "--skip-unreachable"),
            (self.adopt, "--adopt"),
            (self.rotate_tokens, "--rotate-tokens"),
            (self.force_conflicts, "--force-conflicts"),
            (self.restart_workloads, "--restart-workloads"),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, flag)| flag.to_string())
        .collect();
        flags.extend(self.targets.iter().map(|t| format!("--target {t}")));
        if self.revoke_grace_seconds != DEFAULT_REVOKE_GRACE_SECONDS {
            flags.push(format!("--revoke-grace {}", self.revoke_grace_seconds));
        }
        flags.join(" ")
    }
}

/// Why no plan could be made.
#[derive(Debug, Error, Diagnostic, PartialEq)]
pub enum PlanError {
    /// Planning without a cluster could remove what it still relies on.
    #[error("cannot plan: {} could not be read", list(.0.iter().map(|(c, why)| format!("cluster {c:?} ({why})"))))]
    #[diagnostic(
        code(meshform::plan::unreachable),
        help("fix access to the cluster, or pass --skip-unreachable to plan the others and defer its changes")
    )]
    Unreachable(Vec<(String, String)>),
    /// Two entries of the topology reach one cluster.
    #[error("clusters {first:?} and {second:?} are the same cluster (kube-system UID {identity})")]
    #[diagnostic(
        code(meshform::plan::same_cluster),
        help("each [[cluster]] must reach a different cluster: fix the `context` or `kubeconfig` of one of them")
    )]
    SameCluster {
        first: String,
        second: String,
        identity: String,
    },
    /// The observation does not belong to this topology.
    #[error("the observed state does not match the topology: {0}")]
    #[diagnostic(
        code(meshform::plan::observed_mismatch),
        help("take a new snapshot with `meshform snapshot` for this mesh.toml")
    )]
    ObservedMismatch(String),
    /// `--target` names no cluster.
    #[error("--target {0:?} is not a cluster of this mesh")]
    #[diagnostic(
        code(meshform::plan::unknown_target),
        help("use the mesh name of a [[cluster]] in mesh.toml")
    )]
    UnknownTarget(String),
}

fn list(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

/// Diffs the desired topology against the observed clusters.
pub fn plan(desired: &Topology, observed: &Observed, options: &Options) -> Result<Plan, PlanError> {
    if observed.mesh != desired.mesh.name || observed.namespace != desired.mesh.namespace {
        return Err(PlanError::ObservedMismatch(format!(
            "it is of mesh {:?} in namespace {:?}, the topology declares mesh {:?} in namespace {:?}",
            observed.mesh, observed.namespace, desired.mesh.name, desired.mesh.namespace
        )));
    }
    if let Some(missing) = desired
        .clusters
        .iter()
        .find(|c| !observed.clusters.contains_key(&c.name))
    {
        return Err(PlanError::ObservedMismatch(format!(
            "cluster {:?} was not observed",
            missing.name
        )));
    }
    for target in &options.targets {
        let known = desired.cluster(target).is_some()
            || observed.clusters.values().filter_map(|c| c.facts()).any(|f| {
                f.remote_secrets
                    .values()
                    .any(|s| s.cluster_ids.iter().any(|id| id == target))
            });
        if !known {
            return Err(PlanError::UnknownTarget(target.clone()));
        }
    }
    // Every walk over the clusters is by name: the order of the file must not
    // change the plan, its errors or its texts.
    let mut by_name: Vec<&Cluster> = desired.clusters.iter().collect();
    by_name.sort_by(|a, b| a.name.cmp(&b.name));
    let mut identities: BTreeMap<&str, &str> = BTreeMap::new();
    for cluster in by_name.iter().copied() {
        if let Some(facts) = observed.facts(&cluster.name)
            && let Some(first) = identities.insert(&facts.identity, &cluster.name)
        {
            return Err(PlanError::SameCluster {
                first: first.to_string(),
                second: cluster.name.clone(),
                identity: facts.identity.clone(),
            });
        }
    }
    let unknown: Vec<(String, String)> = by_name
        .iter()
        .filter_map(|c| match &observed.clusters[&c.name].state {
            ClusterState::Unknown { detail, .. } => Some((c.name.clone(), detail.clone())),
            ClusterState::Reachable(_) => None,
        })
        .collect();
    if !unknown.is_empty() && !options.skip_unreachable {
        return Err(PlanError::Unreachable(unknown));
    }

    let index = Index::new(desired, observed);
    let mut planner = Planner::new(desired, observed, options, identities, &index);
    planner.detach();
    planner.network();
    planner.service_scopes();
    planner.mixed_data_planes();
    planner.istiod_exposure();
    planner.attach();
    planner.restarts();
    planner.revocations();
    planner.addresses();
    planner.installs();
    planner.ca_certs();
    planner.trust();
    Ok(planner.finish(unknown))
}

struct Planner<'a> {
    desired: &'a Topology,
    observed: &'a Observed,
    options: &'a Options,
    /// Desired clusters, sorted by name, for a deterministic walk.
    clusters: Vec<&'a Cluster>,
    /// kube-system UID → mesh name, for reachable desired clusters.
    identities: BTreeMap<&'a str, &'a str>,
    /// What the walks over (primary, peer) pairs look up.
    index: &'a Index<'a>,
    /// Detach's reasons that depend on the target cluster alone, by target:
    /// worded once, for the thousand primaries that hold its secret.
    detach_reasons: HashMap<&'a str, String>,
    actions: Vec<Action>,
    /// Detach's deletions of primaries' secrets, made during attach's walk,
    /// until it ends.
    detached: Vec<Action>,
    changes: BTreeSet<Change>,
    findings: Vec<Finding>,
    /// The binding Secrets observed and which of them a token that stays is
    /// bound to: a token bound to none of them is revoked. (UIDs are unique
    /// across clusters.)
    bindings: Bindings<'a>,
}

/// The desired-or-departed mesh name of a binding's holder: a holder
/// renamed since is found by its identity.
fn holder_of<'a>(identities: &BTreeMap<&'a str, &'a str>, binding: &'a BindingFacts) -> Option<&'a str> {
    let renamed = binding
        .holder_identity
        .as_deref()
        .and_then(|id| identities.get(id).copied());
    renamed.or(binding.holder.as_deref())
}

/// The cluster id a remote secret registers: Istio takes its data keys.
fn secret_target(secret: &RemoteSecretFacts) -> Option<&str> {
    secret
        .cluster_ids
        .first()
        .map(String::as_str)
        .or(secret.annotated_cluster.as_deref())
}

/// A reachable cluster as its peers' remote secrets hold it.
struct Peer<'a> {
    cluster: &'a Cluster,
    facts: &'a ClusterFacts,
    /// Its entry in the index, which detach would otherwise look up for
    /// every secret held for it.
    desired: &'a Desired<'a>,
    /// The reason of its re-attach when it moves: the same in every primary.
    reattach: Option<String>,
    /// `istio-remote-secret-<peer>`.
    secret: String,
    /// The address primaries reach it at.
    server: String,
    spec_hash: String,
    /// Its position among the reachable clusters, in name order.
    at: usize,
    /// Attached nowhere yet, under this name or an old one: writing its
    /// secrets attaches it to the mesh.
    joins: bool,
}

impl<'a> Planner<'a> {
    fn new(
        desired: &'a Topology,
        observed: &'a Observed,
        options: &'a Options,
        identities: BTreeMap<&'a str, &'a str>,
        index: &'a Index<'a>,
    ) -> Self {
        let mut clusters: Vec<&Cluster> = desired.clusters.iter().collect();
        clusters.sort_by(|a, b| a.name.cmp(&b.name));
        let reachable: Vec<(&Cluster, &ClusterFacts)> = clusters
            .iter()
            .filter_map(|c| index.facts(&c.name).map(|f| (*c, f)))
            .collect();
        // The reachable primaries' positions, in name order, as attach walks
        // them, with the identity a binding's holder annotation must match.
        let mut primaries: HashMap<&str, (usize, &str)> = HashMap::new();
        let mut count = 0;
        for (cluster, facts) in reachable.iter().filter(|(c, _)| c.role == Role::Primary) {
            primaries
                .entry(cluster.name.as_str())
                .or_insert((count, facts.identity.as_str()));
            count += 1;
        }
        let facts: Vec<&ClusterFacts> = reachable.iter().map(|(_, f)| *f).collect();
        let bindings = Bindings::new(observed, &facts, count, |binding| {
            // Mostly the annotation names the holder as it is now: one
            // lookup, no search of the identities.
            let fast = binding.holder.as_deref().filter(|h| {
                primaries
                    .get(h)
                    .is_some_and(|(_, id)| binding.holder_identity.as_deref().is_none_or(|i| i == *id))
            });
            let holder = fast.or_else(|| holder_of(&identities, binding))?;
            primaries.get(holder).map(|(at, _)| *at)
        });
        Planner {
            desired,
            observed,
            options,
            clusters,
            identities,
            index,
            detach_reasons: HashMap::new(),
            actions: Vec::new(),
            detached: Vec::new(),
            changes: BTreeSet::new(),
            findings: Vec::new(),
            bindings,
        }
    }

    fn ns(&self) -> &str {
        &self.desired.mesh.namespace
    }

    fn facts(&self, cluster: &str) -> Option<&'a ClusterFacts> {
        self.index.facts(cluster)
    }

    fn reachable(&self) -> impl Iterator<Item = (&'a Cluster, &'a ClusterFacts)> + '_ {
        self.clusters
            .iter()
            .filter_map(|c| self.facts(&c.name).map(|f| (*c, f)))
    }

    fn push(&mut self, phase: Phase, cluster: &str, kind: ActionKind, reason: String) {
        self.actions.push(Action {
            phase,
            cluster: cluster.to_string(),
            kind,
            reason,
        });
    }

    fn finding(&mut self, kind: FindingKind, code: &str, cluster: &str, message: String, help: String) {
        self.findings.push(Finding {
            kind,
            code: format!("meshform::plan::{code}"),
            cluster: Some(cluster.to_string()),
            message,
            help: Some(help),
            concerns: Vec::new(),
        });
    }

    /// Another field manager owns the network label meshform is about to
    /// change: server-side apply refuses it (409) without force. Predicted
    /// here from `managedFields`, a blocker unless `--force-conflicts`, so
    /// that apply never detaches a cluster and then fails on its label.
    /// Returns whether the write must force.
    fn conflict(&mut self, cluster: &Cluster, what: &str, owners: &[String]) -> bool {
        if owners.is_empty() {
            return false;
        }
        if self.options.force_conflicts {
            return true;
        }
        // Installers and GitOps controllers set their fields back on their next
        // sync: forcing would start a tug of war, their own setting is the fix.
        let installers: Vec<&str> = owners
            .iter()
            .map(String::as_str)
            .filter(|o| INSTALLERS.iter().any(|i| o.starts_with(i)))
            .collect();
        let owners = owners.join(", ");
        let help = if installers.is_empty() {
            format!(
                "pass --force-conflicts to take it over from {owners} (as `kubectl apply --server-side --force-conflicts` does), or undo the edit by hand"
            )
        } else {
            format!(
                "{} manages it and would set it back: change it where that install is declared (for the network label, Istio's values.global.network or the chart's namespace labels), not with --force-conflicts",
                installers.join(", ")
            )
        };
        self.finding(
            FindingKind::Blocker,
            "field_conflict",
            &cluster.name,
            format!(
                "{what} in {} is owned by {owners}, not meshform: server-side apply would refuse to write it back",
                cluster.name
            ),
            help,
        );
        false
    }

    /// The network label the cluster has now, if it differs from the desired one.
    fn relabel_from(&self, cluster: &Cluster) -> Option<&'a str> {
        let current = self.facts(&cluster.name)?.namespace.as_ref()?.network.as_deref()?;
        (current != cluster.network).then_some(current)
    }

    /// The network the running sidecars have, as an earlier run's relabel
    /// recorded it on the mesh namespace, while their restart is owed.
    fn owed_restart(&self, cluster: &Cluster) -> Option<&'a str> {
        self.facts(&cluster.name)?.namespace.as_ref()?.restart_owed.as_deref()
    }

    /// The network whose sidecars a workload restart must replace, when
    /// one is owed (recorded by an earlier run, the oldest network first) or
    /// this plan relabels the cluster. Both the restart and the annotation
    /// written with the relabel come from here, so they cannot disagree.
    fn restart_from(&self, cluster: &Cluster) -> Option<&'a str> {
        self.owed_restart(cluster)
            .or_else(|| self.network_change(cluster))
            .or_else(|| self.relabel_from(cluster))
    }

    /// The network an attached cluster leaves, when it moves to another.
    fn network_change(&self, cluster: &Cluster) -> Option<&'a str> {
        self.index.desired(&cluster.name).and_then(|d| d.leaves)
    }

    /// Which account `primary`'s token for `peer` comes from: a remote's
    /// control plane holds one of the control-plane account, every other
    /// primary one of the read-only reader account.
    fn token_scope(primary: &Cluster, peer: &Cluster) -> ReaderScope {
        if peer.role == Role::Remote && peer.control_plane.as_deref() == Some(primary.name.as_str()) {
            ReaderScope::ControlPlane
        } else {
            ReaderScope::Read
        }
    }

    /// A remote whose control plane still writes there through a token of
    /// the reader account (as meshform set remotes up before the control
    /// plane had an account of its own): the reader role keeps the control
    /// plane's writes until that token is replaced, so istiod is never
    /// refused in between.
    fn control_plane_on_reader_token(&self, remote: &Cluster, facts: &ClusterFacts) -> bool {
        let Some(reader) = facts.reader.service_account.as_ref() else {
            return false;
        };
        let Some(control_plane) = remote.control_plane.as_deref().filter(|_| remote.role == Role::Remote) else {
            return false;
        };
        self.facts(control_plane).is_some_and(|f| {
            f.remote_secrets
                .get(&remote_secret_name(&remote.name))
                .is_some_and(|s| s.object.managed && s.token_account_uid.as_deref() == Some(reader.uid.as_str()))
        })
    }

    fn peer_server(&self, cluster: &Cluster, facts: &ClusterFacts) -> String {
        cluster.api_server.clone().unwrap_or_else(|| facts.server.clone())
    }

    /// Orders the plan.
    fn finish(mut self, unknown: Vec<(String, String)>) -> Plan {
        sort_actions(&mut self.actions);
        let mut changes: Vec<Change> = self.changes.into_iter().collect();
        if !self.options.targets.is_empty() {
            let mut targets: BTreeSet<String> = self.options.targets.iter().cloned().collect();
            // A network change is detach + relabel + re-attach in every
            // primary, or nothing: touching a moving cluster takes in all of it.
            let moving: BTreeSet<String> = changes
                .iter()
                .filter_map(|c| match c {
                    Change::NetworkChange { cluster, .. } => Some(cluster.clone()),
                    _ => None,
                })
                .collect();
            let pulled: Vec<String> = self
                .actions
                .iter()
                .filter(|a| targets.contains(&a.cluster) || a.peer().is_some_and(|p| targets.contains(p)))
                .flat_map(|a| [Some(a.cluster.as_str()), a.peer()])
                .flatten()
                .filter(|c| moving.contains(*c))
                .map(str::to_string)
                .collect();
            targets.extend(pulled);
            let hit = |c: &str| targets.contains(c);
            self.actions.retain(|a| hit(&a.cluster) || a.peer().is_some_and(hit));
            changes.retain(|c| match c {
                Change::Attach { cluster, .. }
                | Change::Detach { cluster }
                | Change::NetworkChange { cluster, .. }
                | Change::BecameRemote { cluster } => hit(cluster),
                Change::Rename { from, to } => hit(from) || hit(to),
            });
            // A mesh-wide finding is kept when it concerns a target.
            self.findings
                .retain(|f| f.clusters().any(hit) || (f.cluster.is_none() && f.concerns.is_empty()));
        }
        self.findings
            .sort_by(|a, b| (a.kind, &a.cluster, &a.code).cmp(&(b.kind, &b.cluster, &b.code)));
        Plan {
            format_version: PLAN_FORMAT_VERSION,
            meshform_version: env!("CARGO_PKG_VERSION").to_string(),
            mesh: self.desired.mesh.name.clone(),
            namespace: self.desired.mesh.namespace.clone(),
            actions: self.actions,
            changes,
            findings: self.findings,
            deferred: unknown
                .into_iter()
                .map(|(cluster, reason)| Deferred { cluster, reason })
                .collect(),
            topology_sha256: hashes::topology_hash(self.desired),
            options: self.options.clone(),
        }
    }
}

/// Orders actions by phase, cluster, rank and peer, keeping the order they
/// were planned in among equals (a stable sort). The sort moves their
/// positions, not the actions: a stable sort of the actions themselves
/// takes a scratch copy of half of them (110 MiB for a fresh plan of 1,000
/// primaries).
fn sort_actions(actions: &mut [Action]) {
    fn key(a: &Action) -> (Phase, &str, u8, Option<&str>) {
        (a.phase, a.cluster.as_str(), a.kind.rank(), a.peer())
    }
    let mut order: Vec<usize> = (0..actions.len()).collect();
    order.sort_by(|a, b| key(&actions[*a]).cmp(&key(&actions[*b])));
    // Position `to` takes the action at `order[to]`: follow each cycle of
    // the permutation, marking positions done as they are filled.
    for start in 0..order.len() {
        let mut to = start;
        while order[to] != start {
            let from = order[to];
            actions.swap(to, from);
            order[to] = to;
            to = from;
        }
        order[to] = to;
    }
}

/// Field managers of installers and GitOps controllers (Helm, Istio's
/// installer and operator, Argo CD, Flux), by name prefix.
const INSTALLERS: [&str; 7] = [
    "helm",
    "istio-installer",
    "istio-operator",
    "istioctl",
    "argocd",
    "kustomize-controller",
    "helm-controller",
];
