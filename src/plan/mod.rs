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
//! - a reader token dies with the binding Secret it is bound to: a holder
//!   that leaves loses its tokens at once, a replaced token goes once its
//!   successor has been in place for the grace period.

pub mod desired;
mod exposure;
mod index;
mod model;
pub mod simulate;

use std::collections::{BTreeMap, BTreeSet};

use foldhash::{HashSet, HashSetExt};

use miette::Diagnostic;
use thiserror::Error;

pub use model::*;

use self::index::Index;
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

/// Choices the user makes on the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Plan the reachable clusters and defer the rest, instead of failing.
    pub skip_unreachable: bool,
    /// Take over unmanaged remote secrets of the names meshform would write.
    pub adopt: bool,
    /// Let apply run (rather than only show) workload restarts after a network
    /// change; recorded in each `RestartWorkloads` action, which apply obeys.
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
        }
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

    let walk = |fingerprints: Box<dyn FnOnce() -> Fingerprints + '_>| {
        let index = Index::new(desired, observed);
        let mut planner = Planner::new(desired, observed, options, identities, &index);
        planner.detach();
        planner.network();
        planner.istiod_exposure();
        planner.attach();
        planner.restarts();
        planner.revocations();
        planner.addresses();
        planner.installs();
        planner.trust();
        planner.finish(unknown, fingerprints)
    };
    // Fingerprints depend on the inputs alone, and a large mesh has one per
    // remote secret (a million at 1,000 clusters, a third of the work): they
    // are worked out on a second core beside the walk. Small meshes are not
    // worth a thread.
    if desired.clusters.len() < 64 {
        return Ok(walk(Box::new(|| fingerprints(desired, observed))));
    }
    Ok(std::thread::scope(|scope| {
        let prints = scope.spawn(|| fingerprints(desired, observed));
        walk(Box::new(|| {
            prints.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        }))
    }))
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
    /// (primary, secret name) of the secrets the detach phase removes: a
    /// stale copy under another name going does not make the peer's own
    /// secret absent.
    removed: HashSet<(&'a str, &'a str)>,
    actions: Vec<Action>,
    changes: BTreeSet<Change>,
    findings: Vec<Finding>,
    /// UIDs of every binding Secret observed: a token bound to none of them
    /// is revoked. (UIDs are unique across clusters.)
    bindings: HashSet<&'a str>,
}

/// The cluster id a remote secret registers: Istio takes its data keys.
fn secret_target(secret: &RemoteSecretFacts) -> Option<&str> {
    secret
        .cluster_ids
        .first()
        .or(secret.annotated_cluster.as_ref())
        .map(String::as_str)
}

/// A reachable cluster as its peers' remote secrets hold it.
struct Peer<'a> {
    cluster: &'a Cluster,
    facts: &'a ClusterFacts,
    /// `istio-remote-secret-<peer>`.
    secret: String,
    /// The address primaries reach it at.
    server: String,
    spec_hash: String,
    /// It moves to another network: re-attached, not attached.
    moving: bool,
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
        Planner {
            desired,
            observed,
            options,
            clusters,
            identities,
            index,
            removed: HashSet::new(),
            actions: Vec::new(),
            changes: BTreeSet::new(),
            findings: Vec::new(),
            bindings: observed
                .clusters
                .values()
                .filter_map(|c| c.facts())
                .flat_map(|f| f.reader_bindings.values().map(|b| b.object.uid.as_str()))
                .collect(),
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

    /// The network an attached cluster leaves, when it moves to another.
    fn network_change(&self, cluster: &Cluster) -> Option<&'a str> {
        self.index.desired(&cluster.name).and_then(|d| d.leaves)
    }

    fn peer_server(&self, cluster: &Cluster, facts: &ClusterFacts) -> String {
        cluster.api_server.clone().unwrap_or_else(|| facts.server.clone())
    }

    fn detach(&mut self) {
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

    fn network(&mut self) {
        let reachable: Vec<_> = self.reachable().collect();
        for (cluster, facts) in reachable {
            // The network label on the mesh namespace, and on a remote the
            // control-plane annotation beside it.
            let current = facts.namespace.as_ref().and_then(|n| n.network.clone());
            let control_plane = cluster.control_plane.clone();
            let namespace = facts.namespace.as_ref();
            let unnamed = control_plane
                .as_deref()
                .filter(|p| !namespace.is_some_and(|n| n.controlled_by(p)));
            // Left from when the cluster was a remote: meshform's own value
            // goes with the next apply of the namespace; another's is reported.
            let stale = cluster.role == Role::Primary && namespace.is_some_and(|n| n.control_planes.is_some());
            let own_stale = stale && namespace.is_some_and(|n| n.control_planes_by_meshform);
            if current.as_deref() != Some(cluster.network.as_str()) || unnamed.is_some() || own_stale {
                let reason = match (&current, facts.namespace.is_some(), unnamed) {
                    (None, false, _) => "create the mesh namespace with its network label".to_string(),
                    (Some(old), _, Some(primary)) if *old == cluster.network => format!(
                        "name {primary}'s istiod as the remote's control plane ({}), so that it serves the remote's namespaces",
                        objects::CONTROL_PLANE_ANNOTATION
                    ),
                    (Some(old), _, None) if *old == cluster.network => format!(
                        "a primary runs its own istiod: take off the {} meshform wrote while it was a remote",
                        objects::CONTROL_PLANE_ANNOTATION
                    ),
                    (None, true, _) => format!("label the mesh namespace with network {:?}", cluster.network),
                    (Some(old), _, _) if self.network_change(cluster).is_some() => {
                        format!(
                            "network changes from {old:?} to {:?}, between detach and re-attach",
                            cluster.network
                        )
                    }
                    (Some(old), _, _) => format!("network label is {old:?}, the topology says {:?}", cluster.network),
                };
                let owners = namespace.map(|n| n.network_owners.as_slice()).unwrap_or_default();
                let changes_label = current.as_deref() != Some(cluster.network.as_str());
                let ns = self.ns().to_string();
                let what = format!("label {} of Namespace {ns}", objects::NETWORK_LABEL);
                let force = changes_label && self.conflict(cluster, &what, owners);
                let kind = ActionKind::SetNetwork {
                    network: cluster.network.clone(),
                    previous: current,
                    control_plane,
                    force,
                };
                self.push(Phase::Network, &cluster.name, kind, reason);
            }
            if stale
                && !own_stale
                && let Some(ids) = namespace.and_then(|n| n.control_planes.as_deref())
            {
                self.finding(
                    FindingKind::Warning,
                    "control_plane_on_primary",
                    &cluster.name,
                    format!(
                        "primary {}'s mesh namespace has {}={ids}: those istiods also manage its namespaces, beside its own",
                        cluster.name,
                        objects::CONTROL_PLANE_ANNOTATION
                    ),
                    format!(
                        "kubectl annotate namespace {} {}- (in {})",
                        self.ns(),
                        objects::CONTROL_PLANE_ANNOTATION,
                        cluster.name
                    ),
                );
            }

            // The reader account primaries use to read this cluster.
            if self.index.has_primary_peer(cluster) {
                self.reader(cluster, facts);
            }

            // The cross-network gateway: needed while any peer is on another network.
            let other_network = self
                .clusters
                .iter()
                .filter(|d| d.name != cluster.name && d.network != cluster.network)
                .map(|d| d.name.as_str())
                .next();
            let network = &self.desired.networks[&cluster.network];
            match (other_network, &facts.gateway) {
                (Some(peer), gateway) => {
                    if facts.gateway_service.is_none() {
                        self.finding(
                            FindingKind::Blocker,
                            "gateway_service_missing",
                            &cluster.name,
                            format!(
                                "{} has peers on other networks (such as {peer}), but the east-west gateway Service {}/{} of network {:?} is missing",
                                cluster.name,
                                self.ns(),
                                network.gateway_service,
                                cluster.network
                            ),
                            format!(
                                "install Istio's east-west gateway for network {:?} in {} (istioctl install with samples/multicluster/gen-eastwest-gateway.sh), or set gateway_service in [network.{}]",
                                cluster.network, cluster.name, cluster.network
                            ),
                        );
                    }
                    if let (Some(_), Some(east_west)) = (&facts.gateway_service, &facts.east_west) {
                        self.east_west(cluster, east_west);
                    }
                    let hash = desired::gateway_hash(network.gateway_port);
                    let content = objects::content_sha256(&objects::gateway_spec(network.gateway_port));
                    // Edited in the cluster: the annotation still says what
                    // meshform wrote, the spec does not. (Another port in
                    // mesh.toml changes the hash as well: that is no edit.)
                    let edited = gateway.as_ref().is_some_and(|g| {
                        g.managed
                            && g.spec_hash.as_deref() == Some(&hash)
                            && g.content_sha256.as_deref().is_some_and(|c| c != content)
                    });
                    let update = match gateway {
                        None => Some(false),
                        Some(g) if g.managed && (g.spec_hash.as_deref() != Some(&hash) || edited) => Some(true),
                        Some(g) if !g.managed => {
                            // Made by hand (or re-made after meshform's was
                            // deleted): left alone. One that is not what
                            // meshform would write may stop cross-network
                            // traffic: a conflict (check fails on it), else a warning.
                            let differs = g.content_sha256.as_deref().is_some_and(|c| c != content);
                            let other = if differs {
                                format!(
                                    ", and its spec is not what meshform writes (port {}, TLS AUTO_PASSTHROUGH, hosts *.local)",
                                    network.gateway_port
                                )
                            } else {
                                String::new()
                            };
                            self.finding(
                                if differs {
                                    FindingKind::Conflict
                                } else {
                                    FindingKind::Warning
                                },
                                "gateway_unmanaged",
                                &cluster.name,
                                format!(
                                    "Gateway {}/{} exists and is not managed by meshform{other}; it is used as it is",
                                    self.ns(),
                                    objects::CROSS_NETWORK_GATEWAY
                                ),
                                "delete it to let meshform manage the gateway".to_string(),
                            );
                            None
                        }
                        Some(_) => None,
                    };
                    if let Some(update) = update {
                        let reason = if edited {
                            format!(
                                "its spec was changed in the cluster; meshform writes it back (port {}, TLS AUTO_PASSTHROUGH, hosts *.local)",
                                network.gateway_port
                            )
                        } else if update {
                            "the gateway is not what meshform writes".to_string()
                        } else {
                            format!(
                                "peers on other networks (such as {peer}) reach this cluster only through its east-west gateway"
                            )
                        };
                        let owners = gateway.as_ref().map(|g| g.content_owners.clone()).unwrap_or_default();
                        let what = format!("the spec of Gateway {}/{}", self.ns(), objects::CROSS_NETWORK_GATEWAY);
                        let force = update && self.conflict(cluster, &what, &owners);
                        let kind = ActionKind::EnsureGateway {
                            network: cluster.network.clone(),
                            port: network.gateway_port,
                            spec_hash: hash,
                            update,
                            force,
                        };
                        self.push(Phase::Network, &cluster.name, kind, reason);
                    }
                }
                (None, Some(gateway)) if gateway.managed => {
                    let kind = ActionKind::DeleteGateway {
                        precondition: Precondition {
                            uid: gateway.uid.clone(),
                            resource_version: gateway.resource_version.clone(),
                        },
                    };
                    let reason = "no peer on another network is left; the cluster is reached directly".to_string();
                    self.push(Phase::Network, &cluster.name, kind, reason);
                }
                (None, _) => {}
            }
        }
    }

    fn attach(&mut self) {
        let primaries: Vec<_> = self.reachable().filter(|(c, _)| c.role == Role::Primary).collect();
        // What a remote secret for a peer holds does not depend on the
        // primary holding it: work it out once per peer, not per pair.
        let renamed: BTreeSet<&str> = self
            .changes
            .iter()
            .filter_map(|c| match c {
                Change::Rename { to, .. } => Some(to.as_str()),
                _ => None,
            })
            .collect();
        let mut peers: Vec<Peer> = self
            .reachable()
            .map(|(cluster, facts)| {
                let server = self.peer_server(cluster, facts);
                let moving = self.network_change(cluster).is_some();
                Peer {
                    cluster,
                    facts,
                    secret: remote_secret_name(&cluster.name),
                    spec_hash: desired::remote_secret_hash(
                        &cluster.name,
                        &server,
                        facts.ca_sha256.as_deref(),
                        &facts.identity,
                        self.desired.mesh.tokens.mode,
                    ),
                    server,
                    moving,
                    joins: !moving && !self.index.attached(&cluster.name) && !renamed.contains(cluster.name.as_str()),
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
        for (primary, facts) in primaries {
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
                while held.next_if(|(held, _)| *held < name).is_some() {}
                let existing = held.peek().filter(|(held, _)| *held == name).map(|(_, s)| *s);
                let ours = existing
                    .filter(|s| s.object.managed && !self.removed.contains(&(primary.name.as_str(), name.as_str())));
                let write = |mode, precondition: Option<&RemoteSecretFacts>, force| ActionKind::WriteRemoteSecret {
                    peer: peer.name.clone(),
                    name: name.clone(),
                    server: server.clone(),
                    mode,
                    spec_hash: hash.clone(),
                    precondition: precondition.map(|s| Precondition {
                        uid: s.object.uid.clone(),
                        resource_version: s.object.resource_version.clone(),
                    }),
                    force,
                };
                // A field of meshform's own secret that another manager took
                // (`kubectl annotate`) makes the write a conflict.
                let what = format!("Secret {}/{name}", self.ns());

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
                        let reason = format!("adopt the existing remote secret for {}", peer.name);
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
                        let reason = if peer_entry.moving {
                            format!("re-attach {} on network {:?}", peer.name, peer.network)
                        } else {
                            format!("attach {} to {}", peer.name, primary.name)
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
                        } else if secret.ca_sha256 != peer_facts.ca_sha256 {
                            format!("the CA of {} has changed", peer.name)
                        } else {
                            format!("the remote secret for {} is not what meshform writes", peer.name)
                        };
                        let force = self.conflict(primary, &what, &secret.object.content_owners);
                        self.push(
                            Phase::Update,
                            &primary.name,
                            write(WriteMode::Update, Some(secret), force),
                            reason,
                        );
                    }
                    Some(secret) if drift(secret, &peer.name, server).is_some() => {
                        let reason = drift(secret, &peer.name, server).unwrap_or_default();
                        let force = self.conflict(primary, &what, &secret.object.content_owners);
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
                        // Deleting the reader account revokes its tokens, and a
                        // re-created account has another UID: no expiry shows that.
                        let account = peer_facts.reader.service_account.as_ref();
                        let revoked = secret
                            .token_account_uid
                            .as_ref()
                            .filter(|uid| account.is_none_or(|a| a.uid != **uid));
                        // Likewise a token whose binding Secret is gone (deleted by hand).
                        let unbound = secret
                            .token_binding_uid
                            .as_ref()
                            .filter(|uid| !self.bindings.contains(uid.as_str()));
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
                                "its token is revoked: the reader account {} it was issued to {}",
                                objects::READER_SERVICE_ACCOUNT,
                                if account.is_none() {
                                    "was deleted"
                                } else {
                                    "was deleted and re-created"
                                }
                            )),
                            // Legacy token Secrets never expire; there is nothing to rotate.
                            _ if self.desired.mesh.tokens.mode == TokenMode::Secret => None,
                            TokenFacts::Bound { issued_at, expires_at } => {
                                let percent = i64::from(self.desired.mesh.tokens.rotate_at_percent);
                                let life = expires_at.as_second() - issued_at.as_second();
                                let due = issued_at.as_second() + life * percent / 100;
                                (now.as_second() >= due).then(|| {
                                    format!("the token expires at {expires_at}, and {percent}% of its life has passed")
                                })
                            }
                            TokenFacts::Unbounded => None,
                            TokenFacts::Unknown => Some("the secret holds no readable token".to_string()),
                        };
                        if let Some(why) = rotate {
                            let reason = format!("new token for {}: {why}", peer.name);
                            let force = self.conflict(primary, &what, &secret.object.content_owners);
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
        }
        for (cluster, network) in joining {
            self.changes.insert(Change::Attach {
                cluster: cluster.to_string(),
                network: network.to_string(),
            });
        }
    }

    /// Sidecars keep the network they started with: after a relabel,
    /// workloads must restart for cross-network traffic to reach them.
    fn restarts(&mut self) {
        let relabelled: Vec<_> = self
            .clusters
            .clone()
            .into_iter()
            .filter_map(|c| {
                self.network_change(c)
                    .or_else(|| self.relabel_from(c))
                    .map(|from| (c, from))
            })
            .collect();
        for (cluster, from) in relabelled {
            let context = shell_quote(&cluster.context);
            let command = format!(
                "for ns in $(kubectl --context {context} get namespaces -l istio-injection=enabled -o name) \
                 $(kubectl --context {context} get namespaces -l istio.io/rev -o name); do \
                 kubectl --context {context} -n \"${{ns#namespace/}}\" rollout restart deployment,statefulset,daemonset; done"
            );
            let old = if from.is_empty() {
                "the default network".to_string()
            } else {
                format!("network {from:?}")
            };
            let reason =
                format!("running sidecars keep {old} until restarted; cross-network traffic to them fails until then");
            let kind = ActionKind::RestartWorkloads {
                enabled: self.options.restart_workloads,
                command,
            };
            self.push(Phase::Update, &cluster.name, kind, reason);
        }
    }

    /// The east-west gateway Service of a cluster with peers on other
    /// networks, judged as istiod judges it
    /// (istio/istio `pilot/pkg/serviceregistry/kube/controller/network.go`):
    /// without the network label, a listed port and an address, istiod knows
    /// no gateway for the network and sends other networks raw pod IPs
    /// (`pilot/pkg/xds/endpoints/ep_filters.go`), with no error anywhere.
    /// The reader account, ClusterRole and binding primaries read `cluster`
    /// through: judged by what the role grants and whom the binding names,
    /// not only by the spec-hash annotation meshform wrote.
    fn reader(&mut self, cluster: &Cluster, facts: &ClusterFacts) {
        // A remote's control plane writes there through the same account.
        let scope = match cluster.role {
            Role::Primary => ReaderScope::Read,
            Role::Remote => ReaderScope::ControlPlane,
        };
        let hash = desired::reader_hash(self.ns(), self.desired.mesh.tokens.mode, scope);
        let reader = &facts.reader;
        let name = objects::reader_cluster_role(self.ns());
        let foreign = [&reader.cluster_role, &reader.cluster_role_binding]
            .into_iter()
            .flatten()
            .any(|o| !o.managed);
        // Hashed from what apply writes (the same functions, never a copy of
        // the rules), here per cluster, so rules that differ between clusters
        // are judged against each cluster's own.
        let role = reader
            .cluster_role
            .as_ref()
            .map(|o| (o, objects::rules_sha256(&objects::reader_rules(scope))));
        let binding = reader
            .cluster_role_binding
            .as_ref()
            .map(|o| (o, objects::subjects_sha256(&objects::reader_subjects(self.ns()))));
        // Content read (not in older snapshots) that is not meshform's.
        let differs = |o: &ObjectFacts, want: &str| o.content_sha256.as_deref().is_some_and(|c| c != want);
        // Changed in the cluster: the annotation says meshform wrote the
        // current version, the content says otherwise. (A new meshform with
        // other rules changes the hash too; that is not an edit.)
        let edited =
            |o: &ObjectFacts, want: &str| o.managed && o.spec_hash.as_deref() == Some(&hash) && differs(o, want);
        let rules_edited = role.as_ref().is_some_and(|(o, want)| edited(o, want));
        let subjects_edited = binding.as_ref().is_some_and(|(o, want)| edited(o, want));
        let needs_token_secret = self.desired.mesh.tokens.mode == TokenMode::Secret;
        let current = reader.service_account.is_some()
            && (!needs_token_secret || reader.token_secret.is_some())
            && [&reader.cluster_role, &reader.cluster_role_binding]
                .into_iter()
                .all(|o| {
                    o.as_ref()
                        .is_some_and(|o| o.managed && o.spec_hash.as_deref() == Some(&hash))
                })
            && !rules_edited
            && !subjects_edited;
        if foreign && !self.options.adopt {
            self.finding(
                FindingKind::Conflict,
                "reader_unmanaged",
                &cluster.name,
                format!("ClusterRole or ClusterRoleBinding {name} exists and is not managed by meshform"),
                "pass --adopt to let meshform take it over, or delete it".to_string(),
            );
            return;
        }
        if current {
            return;
        }
        let edits: Vec<String> = [
            rules_edited.then(|| format!("the rules of ClusterRole {name}")),
            subjects_edited.then(|| format!("the subjects of ClusterRoleBinding {name}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        // Something of the reader exists: it was made before, and a missing
        // part was deleted since.
        let made_before =
            reader.cluster_role_binding.is_some() || reader.service_account.as_ref().is_some_and(|a| a.managed);
        let reason = if reader.cluster_role.is_none() && !made_before {
            match scope {
                ReaderScope::Read => "primaries read this cluster through a read-only reader account",
                ReaderScope::ControlPlane => {
                    "primaries read this cluster, and its control plane publishes its roots there, through a reader account"
                }
            }
            .to_string()
        } else if reader.service_account.is_none() {
            format!("the reader account {} is missing", objects::READER_SERVICE_ACCOUNT)
        } else if reader.cluster_role.is_none() {
            format!("the ClusterRole {name} is missing; without it primaries cannot read this cluster")
        } else if reader.cluster_role_binding.is_none() {
            format!("the ClusterRoleBinding {name} is missing; without it primaries cannot read this cluster")
        } else if !edits.is_empty() {
            format!(
                "{} changed in the cluster; meshform writes back what primaries need to read this cluster",
                edits.join(" and ")
            )
        } else if reader.cluster_role.as_ref().and_then(|r| r.spec_hash.as_deref())
            == Some(&desired::reader_hash(
                self.ns(),
                self.desired.mesh.tokens.mode,
                ReaderScope::Read,
            ))
            && scope == ReaderScope::ControlPlane
        {
            "a remote's control plane writes istio-ca-root-cert and the webhooks' CA bundle there through the reader account"
                .to_string()
        } else if needs_token_secret && reader.token_secret.is_none() {
            format!("the reader token Secret {} is missing", objects::READER_TOKEN_SECRET)
        } else {
            "the reader account's role is not what meshform writes".to_string()
        };
        // Adopting is consent to take the objects over, their fields with
        // them, as for a remote secret.
        let force = if foreign {
            true
        } else {
            let mut force = false;
            if let Some((o, want)) = &role
                && differs(o, want)
            {
                force |= self.conflict(
                    cluster,
                    &format!("the rules list of ClusterRole {name}"),
                    &o.content_owners,
                );
            }
            if let Some((o, want)) = &binding
                && differs(o, want)
            {
                force |= self.conflict(
                    cluster,
                    &format!("the subjects list of ClusterRoleBinding {name}"),
                    &o.content_owners,
                );
            }
            force
        };
        self.push(
            Phase::Network,
            &cluster.name,
            ActionKind::EnsureReader {
                spec_hash: hash,
                scope,
                update: reader.cluster_role.is_some(),
                force,
            },
            reason,
        );
    }

    fn east_west(&mut self, cluster: &Cluster, east_west: &EastWestFacts) {
        let network = &self.desired.networks[&cluster.network];
        let service = format!("{}/{}", self.ns(), network.gateway_service);
        if east_west.network.as_deref() != Some(cluster.network.as_str()) {
            let reason = match &east_west.network {
                None => format!(
                    "istiod takes the Service as the gateway of network {:?} only with this label",
                    cluster.network
                ),
                Some(old) => format!(
                    "the gateway's network label is {old:?}, the topology says {:?}",
                    cluster.network
                ),
            };
            let what = format!("label {} of Service {service}", objects::NETWORK_LABEL);
            let force = self.conflict(cluster, &what, &east_west.network_owners);
            let kind = ActionKind::SetGatewayNetwork {
                service: network.gateway_service.clone(),
                network: cluster.network.clone(),
                previous: east_west.network.clone(),
                force,
            };
            self.push(Phase::Network, &cluster.name, kind, reason);
        }
        let port = east_west.istiod_port();
        if !east_west.ports.contains(&port) && !east_west.ports.contains(&objects::HBONE_GATEWAY_PORT) {
            self.finding(
                FindingKind::Blocker,
                "gateway_port_missing",
                &cluster.name,
                format!(
                    "the east-west gateway Service {service} in {} does not list port {port} (nor {}), so istiod does not use it as the gateway of network {:?}",
                    cluster.name,
                    objects::HBONE_GATEWAY_PORT,
                    cluster.network
                ),
                format!(
                    "add port {port} to Service {service} in {} (gen-eastwest-gateway.sh adds it as `tls`), or label the Service {}=<its mTLS port>",
                    cluster.name,
                    objects::GATEWAY_PORT_LABEL
                ),
            );
        } else if port != network.gateway_port && east_west.ports.contains(&port) {
            self.finding(
                FindingKind::Blocker,
                "gateway_port_mismatch",
                &cluster.name,
                format!(
                    "istiod sends other networks to port {port} of Service {service} in {}, but the Gateway meshform writes listens on gateway_port {}",
                    cluster.name, network.gateway_port
                ),
                format!(
                    "set gateway_port = {port} in [network.{}], or label Service {service} {}={}",
                    cluster.network,
                    objects::GATEWAY_PORT_LABEL,
                    network.gateway_port
                ),
            );
        }
        if east_west.addresses.is_empty() && !east_west.node_selector {
            let why = match east_west.service_type.as_deref() {
                Some("LoadBalancer") => "its load balancer has no address yet (pending)".to_string(),
                other => format!("it is of type {} and has no externalIPs", other.unwrap_or("ClusterIP")),
            };
            self.finding(
                FindingKind::Blocker,
                "gateway_address_missing",
                &cluster.name,
                format!(
                    "the east-west gateway Service {service} in {} has no address peers can reach: {why}",
                    cluster.name
                ),
                format!(
                    "wait for the load balancer of {service} in {} to be given an address (kubectl get service -n {} {} shows it), or set spec.externalIPs",
                    cluster.name,
                    self.ns(),
                    network.gateway_service
                ),
            );
        }
    }

    /// Each Istio install's identity must be the topology's: istiod ignores
    /// a remote secret whose data key equals its own cluster id, proxies
    /// whose cluster id is not the key fail xDS and CA authentication, and
    /// sidecars take their network from the injector's `global.network`
    /// (istio/istio `pkg/kube/multicluster/secretcontroller.go`,
    /// `pkg/kube/inject/inject.go`).
    fn installs(&mut self) {
        let reachable: Vec<_> = self.reachable().collect();
        let mesh = self.desired.mesh.name.clone();
        for (cluster, facts) in reachable {
            if facts.installs.is_empty() {
                self.finding(
                    FindingKind::Warning,
                    "istio_not_installed",
                    &cluster.name,
                    format!(
                        "no Istio install (istiod Deployment or istio-sidecar-injector ConfigMap) was found in {} of {}",
                        self.ns(),
                        cluster.name
                    ),
                    format!(
                        "install Istio in {} with values.global.multiCluster.clusterName={}, values.global.network={} and values.global.meshID={mesh}",
                        cluster.name, cluster.name, cluster.network
                    ),
                );
                continue;
            }
            for (revision, install) in &facts.installs {
                if !install.mesh_network_gateways.is_empty() {
                    let configmap = match revision.as_str() {
                        "default" => objects::MESH_CONFIGMAP.to_string(),
                        rev => format!("{}-{rev}", objects::MESH_CONFIGMAP),
                    };
                    self.finding(
                        FindingKind::Warning,
                        "mesh_networks_gateways",
                        &cluster.name,
                        format!(
                            "meshNetworks in ConfigMap {}/{configmap} of {} declares gateways for {}: istiod uses them beside the labelled gateway Services, but meshform does not read them, so its gateway checks for those networks may not be what istiod does",
                            self.ns(),
                            cluster.name,
                            install.mesh_network_gateways.join(", ")
                        ),
                        "declare each network's gateway as Istio's multi-cluster guides do, by the topology.istio.io/network label on its east-west gateway Service (meshform writes it), and drop values.global.meshNetworks".to_string(),
                    );
                }
                let set = |key: &str, value: &str| {
                    let rev = if revision == "default" {
                        String::new()
                    } else {
                        format!(" --set revision={revision}")
                    };
                    format!(
                        "reinstall Istio in {} with `istioctl install{rev} --set {key}={value}` (the Helm value {key})",
                        cluster.name
                    )
                };
                let install_name = install
                    .istiod
                    .clone()
                    .or_else(|| install.injector.clone())
                    .unwrap_or_else(|| revision.clone());
                let ids = [
                    install.istiod.as_ref().map(|d| {
                        (
                            format!("istiod Deployment {d} runs with CLUSTER_ID"),
                            &install.cluster_id,
                        )
                    }),
                    install.injector.as_ref().map(|c| {
                        (
                            format!("injector ConfigMap {c} gives sidecars cluster id"),
                            &install.injected_cluster_id,
                        )
                    }),
                ];
                for (what, id) in ids.into_iter().flatten() {
                    let id = id.as_deref().unwrap_or(objects::DEFAULT_CLUSTER_ID);
                    if id != cluster.name {
                        self.finding(
                            FindingKind::Blocker,
                            "istiod_cluster_id",
                            &cluster.name,
                            format!(
                                "the {what} {id:?} in {}, not its mesh name: peers' remote secrets for {} do not match it",
                                cluster.name, cluster.name
                            ),
                            set("values.global.multiCluster.clusterName", &cluster.name),
                        );
                        break;
                    }
                }
                // A remote install (no istiod of its own) finds istiod at its pilot address.
                if let (Some(injector), Some(primary), None) =
                    (&install.injector, &cluster.control_plane, &install.istiod)
                {
                    self.remote_pilot(
                        cluster,
                        primary,
                        injector,
                        install.remote_pilot_address.as_deref(),
                        &set,
                    );
                }
                if let Some(injector) = &install.injector {
                    if install.injected_network.as_deref() != Some(cluster.network.as_str()) {
                        self.finding(
                            FindingKind::Blocker,
                            "injection_network",
                            &cluster.name,
                            format!(
                                "injector ConfigMap {injector} in {} puts sidecars on network {}, the topology says {:?}",
                                cluster.name,
                                install
                                    .injected_network
                                    .as_deref()
                                    .map_or("none (unset)".to_string(), |n| format!("{n:?}")),
                                cluster.network
                            ),
                            set("values.global.network", &cluster.network),
                        );
                    }
                    if install.mesh_id.as_deref() != Some(mesh.as_str()) {
                        self.finding(
                            FindingKind::Blocker,
                            "mesh_id",
                            &cluster.name,
                            format!(
                                "Istio install {install_name} in {} has mesh id {}, [mesh].name is {mesh:?}",
                                cluster.name,
                                install
                                    .mesh_id
                                    .as_deref()
                                    .map_or("none (unset)".to_string(), |n| format!("{n:?}")),
                            ),
                            set("values.global.meshID", &mesh),
                        );
                    }
                }
            }
        }
    }

    /// A remote's sidecars find istiod at the install's `remotePilotAddress`;
    /// on another network than its control plane only that primary's east-west
    /// gateway reaches istiod (Istio's multi-network primary-remote guide).
    fn remote_pilot(
        &mut self,
        cluster: &Cluster,
        primary: &str,
        injector: &str,
        address: Option<&str>,
        set: &dyn Fn(&str, &str) -> String,
    ) {
        let gateway = self
            .desired
            .cluster(primary)
            .filter(|p| p.network != cluster.network)
            .and_then(|_| self.facts(primary))
            .and_then(|f| f.east_west.as_ref())
            .filter(|e| !e.addresses.is_empty());
        let problem = match (address, gateway) {
            (None, _) => format!(
                "injector ConfigMap {injector} in remote {} has no global.remotePilotAddress: its sidecars cannot find {primary}'s istiod",
                cluster.name
            ),
            (Some(address), Some(gateway)) if !gateway.addresses.iter().any(|a| a == address) => format!(
                "remote {} reaches istiod at {address}, but on another network than {primary} only {primary}'s east-west gateway ({}) gets there",
                cluster.name,
                gateway.addresses.join(", ")
            ),
            _ => return,
        };
        let value = gateway
            .and_then(|g| g.addresses.first().cloned())
            .unwrap_or_else(|| format!("<the address of {primary}'s istiod or east-west gateway>"));
        self.finding(
            FindingKind::Blocker,
            "remote_pilot_address",
            &cluster.name,
            problem,
            set("values.global.remotePilotAddress", &value),
        );
    }

    /// Cross-cluster mTLS needs one root of trust. Clusters whose roots share
    /// a certificate trust each other (so a rotation, with old and new root
    /// side by side, is fine); more than one such group cannot talk.
    fn trust(&mut self) {
        let names: Vec<&str> = self.clusters.iter().map(|c| c.name.as_str()).collect();
        let groups = self.observed.trust_groups(names);
        if groups.len() < 2 {
            return;
        }
        let described: Vec<String> = groups
            .iter()
            .map(|(names, roots)| {
                let prints: Vec<String> = roots
                    .iter()
                    .map(|r| format!("sha256:{}", &r[..r.len().min(16)]))
                    .collect();
                format!(
                    "{} (root {})",
                    names.iter().copied().collect::<Vec<_>>().join(", "),
                    prints.join(", ")
                )
            })
            .collect();
        self.findings.push(Finding {
            kind: FindingKind::Blocker,
            code: "meshform::plan::root_of_trust".to_string(),
            cluster: None,
            message: format!(
                "the clusters have {} roots of trust that share no certificate: {}; traffic between them fails with CERTIFICATE_VERIFY_FAILED",
                groups.len(),
                described.join("; ")
            ),
            help: Some(format!(
                "plug in intermediate CA certificates signed by one root (Secret cacerts in {} of every cluster, as in Istio's plug-in CA guide), then restart istiod",
                self.ns()
            )),
        });
    }

    /// Deletes the binding Secrets no istiod depends on any more, which
    /// revokes every token bound to them: a holder that left the mesh (or
    /// became a remote) loses them at once, a rotated token once its
    /// successor has been in place for the grace period.
    fn revocations(&mut self) {
        self.secret_mode_detaches();
        // Without a binding observed there is nothing to revoke, and a large
        // fresh mesh need not index its million writes for it.
        if self.bindings.is_empty() {
            return;
        }
        let now = self.observed.observed_at.as_second();
        // Binding UIDs the tokens in remote secrets that stay are bound to,
        // and when each holder's current token (in a secret meshform wrote)
        // for each peer was issued; a legacy token has no issue time.
        let mut referenced: HashSet<&str> = HashSet::new();
        let mut issued: BTreeMap<(&str, &str), Option<i64>> = BTreeMap::new();
        for (holder, facts) in self.reachable() {
            for (name, secret) in &facts.remote_secrets {
                if self.removed.contains(&(holder.name.as_str(), name.as_str())) {
                    continue;
                }
                referenced.extend(secret.token_binding_uid.as_deref());
                if !secret.object.managed {
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
        let writing: BTreeSet<(String, String)> = self
            .actions
            .iter()
            .filter(|a| matches!(a.kind, ActionKind::WriteRemoteSecret { .. }))
            .filter_map(|a| Some((a.cluster.clone(), a.peer()?.to_string())))
            .collect();
        let mut left: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let reachable: Vec<_> = self.reachable().collect();
        for (peer, facts) in reachable {
            for (name, binding) in &facts.reader_bindings {
                if !binding.object.managed || referenced.contains(binding.object.uid.as_str()) {
                    continue;
                }
                let Some(holder) = self.holder(binding) else { continue };
                let (detach, reason) = match self.desired.cluster(holder) {
                    // Not read: nothing may be removed on its account.
                    Some(_) if self.facts(holder).is_none() => continue,
                    Some(h) if h.role == Role::Remote => (
                        true,
                        format!(
                            "{holder} is now a remote cluster: the reader tokens it holds for {} are revoked",
                            peer.name
                        ),
                    ),
                    Some(_) if writing.contains(&(holder.to_string(), peer.name.clone())) => continue,
                    Some(_) => {
                        // Only a token meshform wrote replaces it; with none, or
                        // someone else's secret in the way, nothing is revoked.
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
                        left.entry(holder.to_string()).or_default().push(peer.name.clone());
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
                self.push(phase, &peer.name, kind, reason);
            }
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
                &holder,
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
    fn secret_mode_detaches(&mut self) {
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
                         Secret {}/{} in every peer and apply again, which gives every primary a new token",
                        self.ns(),
                        objects::READER_TOKEN_SECRET
                    ),
                );
            }
        }
    }

    /// The desired-or-departed mesh name of a binding's holder: a holder
    /// renamed since is found by its identity.
    fn holder(&self, binding: &'a BindingFacts) -> Option<&'a str> {
        let renamed = binding
            .holder_identity
            .as_deref()
            .and_then(|id| self.identities.get(id).copied());
        renamed.or(binding.holder.as_deref())
    }

    /// istiod in a primary dials a peer's API server at the address in the
    /// remote secret: one on loopback or a private-only name cannot work.
    fn addresses(&mut self) {
        let reachable: Vec<_> = self.reachable().collect();
        for (cluster, facts) in reachable {
            if !self.index.has_primary_peer(cluster) {
                continue;
            }
            let server = self.peer_server(cluster, facts);
            if let Some(why) = unreachable_from_peers(&server) {
                self.finding(
                    FindingKind::Warning,
                    "peer_address",
                    &cluster.name,
                    format!("primaries will reach {} at {server}, {why}", cluster.name),
                    format!(
                        "set `api_server` of cluster {:?} to an address its peers can reach",
                        cluster.name
                    ),
                );
            }
        }
    }

    /// Orders the plan; `fingerprints` is asked for last, so that work
    /// done beside the walk is awaited as late as it can be.
    fn finish(mut self, unknown: Vec<(String, String)>, fingerprints: impl FnOnce() -> Fingerprints) -> Plan {
        self.actions.sort_by(|a, b| {
            (a.phase, &a.cluster, a.kind.rank(), a.peer()).cmp(&(b.phase, &b.cluster, b.kind.rank(), b.peer()))
        });
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
            self.findings.retain(|f| f.cluster.as_deref().is_none_or(hit));
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
            fingerprints: fingerprints(),
        }
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

/// What of meshform's own remote secret differs from what it wrote, though
/// its spec-hash annotation says otherwise: the cluster id Istio reads
/// (the data key and the annotation) or the address in its kubeconfig.
/// Read from the facts observe keeps, never from the token.
fn drift(secret: &RemoteSecretFacts, peer: &str, server: &str) -> Option<String> {
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

/// Why peers could not reach `server`, if they could not.
fn unreachable_from_peers(server: &str) -> Option<&'static str> {
    let url = url::Url::parse(server).ok()?;
    match url.host()? {
        url::Host::Ipv4(ip) if ip.is_loopback() => Some("a loopback address"),
        url::Host::Ipv6(ip) if ip.is_loopback() => Some("a loopback address"),
        url::Host::Domain(host) => {
            let host = host.trim_end_matches('.').to_ascii_lowercase();
            if host == "localhost" || host.ends_with(".localhost") {
                Some("a loopback address")
            } else if [".local", ".internal", ".svc", ".cluster.local", ".localdomain"]
                .iter()
                .any(|suffix| host.ends_with(suffix))
                || !host.contains('.')
            {
                Some("a name that only resolves inside its own network")
            } else {
                None
            }
        }
        _ => None,
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./:@".contains(&b)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The parts joined, allocated once: `format!` grows its string piece by
/// piece, which shows at a million fingerprints.
fn concat(parts: &[&str]) -> String {
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
        topology_sha256: desired::topology_hash(desired),
        observed: out.into_iter().collect(),
    }
}
