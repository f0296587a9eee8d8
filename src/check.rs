//! `meshform check`: the mesh's readiness as a checklist, per cluster, per
//! network and for the whole mesh, each line passing or failing with its fix.
//!
//! Pure data derived from the topology, the observation and the plan made of
//! them. It decides nothing of its own about what is wrong: every finding
//! and every pending write of the plan becomes a problem under exactly one
//! check, so `check` and `plan` cannot disagree. What it adds is the passing
//! side (what was found where all is well) and the grouping. It reads no
//! cluster and renders nothing.

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde::Serialize;

use crate::objects;
use crate::observe::model::{ClusterFacts, ClusterState, Observed, TokenFacts, UnknownReason};
use crate::plan::{Action, ActionKind, FindingKind, Plan, WriteMode};
use crate::topology::{Cluster, Role, TokenMode, Topology};

/// The code of a problem that is a write apply would make.
pub const APPLY: &str = "meshform::apply";

/// Every check of a mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Checklist {
    pub mesh: String,
    pub namespace: String,
    pub observed_at: Timestamp,
    /// By mesh name.
    pub clusters: Vec<ClusterChecks>,
    /// By network name.
    pub networks: Vec<NetworkChecks>,
    /// What holds between all clusters (one root of trust).
    pub mesh_checks: Vec<Check>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterChecks {
    pub cluster: String,
    pub role: Role,
    pub network: String,
    pub checks: Vec<Check>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkChecks {
    pub network: String,
    pub clusters: Vec<String>,
    pub checks: Vec<Check>,
}

/// One line of the checklist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub id: CheckId,
    pub status: Status,
    /// What was found: the passing state, or why the check was skipped.
    pub summary: String,
    /// Empty when the check passes.
    pub problems: Vec<Problem>,
}

/// What a check looks at; stable, for `--format json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckId {
    Reachable,
    NetworkLabel,
    ReaderAccount,
    ApiServer,
    Gateway,
    Istio,
    /// A remote's: the primary whose istiod serves it, named on its namespace.
    ControlPlane,
    RemoteSecrets,
    Tokens,
    /// Plan findings that no other check claims.
    Other,
    /// A network's gateway as istiod computes it from every cluster on it.
    NetworkGateway,
    RootOfTrust,
}

impl CheckId {
    pub fn title(self) -> &'static str {
        match self {
            CheckId::Reachable => "reachable",
            CheckId::NetworkLabel => "network label",
            CheckId::ReaderAccount => "reader account",
            CheckId::ApiServer => "API address",
            CheckId::Gateway => "east-west gateway",
            CheckId::Istio => "Istio install",
            CheckId::ControlPlane => "control plane",
            CheckId::RemoteSecrets => "remote secrets",
            CheckId::Tokens => "reader tokens",
            CheckId::Other => "other",
            CheckId::NetworkGateway => "gateway",
            CheckId::RootOfTrust => "root of trust",
        }
    }
}

/// Worst first, so that the worst of a check's problems is its `min`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Fail,
    Warn,
    /// Not looked at: the cluster could not be read.
    Skipped,
    Pass,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub status: Status,
    /// The plan finding's code, or `meshform::apply` for a pending write.
    pub code: String,
    pub message: String,
    pub fix: Option<String>,
}

impl Checklist {
    /// Every check, clusters first.
    pub fn checks(&self) -> impl Iterator<Item = &Check> {
        self.clusters
            .iter()
            .flat_map(|c| &c.checks)
            .chain(self.networks.iter().flat_map(|n| &n.checks))
            .chain(&self.mesh_checks)
    }

    pub fn passed(&self) -> bool {
        self.checks().all(|c| c.status != Status::Fail)
    }

    pub fn count(&self, status: Status) -> usize {
        self.checks().filter(|c| c.status == status).count()
    }
}

/// The checklist of `topology` as `observed`, with the problems of `plan`
/// (made of the two, with unreachable clusters deferred).
pub fn check(topology: &Topology, observed: &Observed, plan: &Plan) -> Checklist {
    let mut clusters: Vec<&Cluster> = topology.clusters.iter().collect();
    clusters.sort_by(|a, b| a.name.cmp(&b.name));
    let mut checklist = Checklist {
        mesh: topology.mesh.name.clone(),
        namespace: topology.mesh.namespace.clone(),
        observed_at: observed.observed_at,
        clusters: clusters.iter().map(|c| cluster_checks(topology, observed, c)).collect(),
        networks: networks(topology, observed),
        mesh_checks: vec![root_of_trust(topology, observed)],
    };
    for finding in &plan.findings {
        let code = finding.code.strip_prefix("meshform::plan::").unwrap_or(&finding.code);
        let status = match (finding.kind, code) {
            // Istio's guides label a namespace before installing: the plan
            // may go ahead, but the mesh carries no traffic without Istio.
            (_, "istio_not_installed") | (FindingKind::Blocker | FindingKind::Conflict, _) => Status::Fail,
            (FindingKind::Warning, _) => Status::Warn,
        };
        let problem = Problem {
            status,
            code: finding.code.clone(),
            message: finding.message.clone(),
            fix: finding.help.clone(),
        };
        match &finding.cluster {
            Some(cluster) => checklist.add(cluster, finding_check(code), problem),
            None => checklist.add_mesh(mesh_finding_check(code), problem),
        }
    }
    for action in plan.actions.iter().filter(|a| a.writes() || is_restart(a)) {
        let (id, status) = action_check(action, observed);
        let fix = if action.is_destructive() {
            "meshform apply --allow-detach"
        } else {
            "meshform apply"
        };
        let problem = Problem {
            status,
            code: APPLY.to_string(),
            message: format!("{}: {}", action.object(&plan.namespace), action.reason),
            fix: Some(fix.to_string()),
        };
        checklist.add(&action.cluster, id, problem);
    }
    for checks in &mut checklist.clusters {
        checks.checks.sort_by_key(|c| c.id);
    }
    checklist
}

fn is_restart(action: &Action) -> bool {
    matches!(action.kind, ActionKind::RestartWorkloads { .. })
}

impl Checklist {
    /// Adds a problem to a cluster's check, making the check if the cluster
    /// had none of that kind (a finding that no passing line stands for).
    fn add(&mut self, cluster: &str, id: CheckId, problem: Problem) {
        let Some(checks) = self.clusters.iter_mut().find(|c| c.cluster == cluster) else {
            // A cluster that left the mesh (its remote secrets are removed
            // from the primaries, which are the ones acted on).
            self.add_mesh(CheckId::Other, problem);
            return;
        };
        add_to(&mut checks.checks, id, problem);
    }

    fn add_mesh(&mut self, id: CheckId, problem: Problem) {
        add_to(&mut self.mesh_checks, id, problem);
    }
}

fn add_to(checks: &mut Vec<Check>, id: CheckId, problem: Problem) {
    let index = match checks.iter().position(|c| c.id == id) {
        Some(index) => index,
        None => {
            checks.push(Check {
                id,
                status: Status::Pass,
                summary: String::new(),
                problems: Vec::new(),
            });
            checks.len() - 1
        }
    };
    let check = &mut checks[index];
    if check.problems.is_empty() {
        // The passing state no longer holds.
        check.summary.clear();
    }
    check.status = check.status.min(problem.status);
    check.problems.push(problem);
}

/// The check a cluster's plan finding belongs to, by its code.
fn finding_check(code: &str) -> CheckId {
    match code {
        "network_change_partial" => CheckId::NetworkLabel,
        "reader_unmanaged" => CheckId::ReaderAccount,
        "peer_address" => CheckId::ApiServer,
        "gateway_service_missing"
        | "gateway_unmanaged"
        | "gateway_port_missing"
        | "gateway_port_mismatch"
        | "gateway_address_missing"
        | "istiod_exposure_unmanaged"
        | "mesh_networks_gateways" => CheckId::Gateway,
        "istio_not_installed" | "istiod_cluster_id" | "injection_network" | "mesh_id" => CheckId::Istio,
        "remote_pilot_address" | "control_plane_on_primary" => CheckId::ControlPlane,
        "remote_secret_duplicate" | "remote_secret_unmanaged" => CheckId::RemoteSecrets,
        "detached_holder" | "detach_not_revoked" => CheckId::Tokens,
        _ => CheckId::Other,
    }
}

fn mesh_finding_check(code: &str) -> CheckId {
    match code {
        "root_of_trust" => CheckId::RootOfTrust,
        _ => CheckId::Other,
    }
}

/// The check a pending write belongs to, and how bad it is that it is pending.
fn action_check(action: &Action, observed: &Observed) -> (CheckId, Status) {
    match &action.kind {
        // The label is right: only a remote's control plane is not named yet.
        ActionKind::SetNetwork { network, previous, .. } if previous.as_ref() == Some(network) => {
            (CheckId::ControlPlane, Status::Fail)
        }
        ActionKind::SetNetwork { .. } | ActionKind::RestartWorkloads { .. } => (CheckId::NetworkLabel, Status::Fail),
        ActionKind::EnsureReader { .. } => (CheckId::ReaderAccount, Status::Fail),
        ActionKind::EnsureGateway { .. } | ActionKind::SetGatewayNetwork { .. } => (CheckId::Gateway, Status::Fail),
        // Left over from a network layout that is gone: harmless until removed.
        ActionKind::DeleteGateway { .. } => (CheckId::Gateway, Status::Warn),
        // A remote on another network cannot reach its istiod without it.
        ActionKind::EnsureIstiodExposure { .. } => (CheckId::Gateway, Status::Fail),
        ActionKind::DeleteIstiodExposure { .. } => (CheckId::Gateway, Status::Warn),
        ActionKind::DeleteRemoteSecret { .. } => (CheckId::RemoteSecrets, Status::Fail),
        ActionKind::WriteRemoteSecret {
            mode: WriteMode::Rotate,
            name,
            ..
        } => {
            // A rotation that is only due leaves a working token until then;
            // an expired or revoked one (its reader account deleted) reads nothing.
            let secret = observed.facts(&action.cluster).and_then(|f| f.remote_secrets.get(name));
            let peer = action.peer().and_then(|p| observed.facts(p));
            let account = peer.and_then(|f| f.reader.service_account.as_ref());
            let works = secret.is_some_and(|s| {
                let live = match s.token {
                    TokenFacts::Bound { expires_at, .. } => expires_at > observed.observed_at,
                    TokenFacts::Unbounded => true,
                    TokenFacts::Unknown => false,
                };
                let revoked = s
                    .token_account_uid
                    .as_ref()
                    .is_some_and(|uid| account.is_none_or(|a| a.uid != *uid));
                // A token whose binding Secret in the peer is gone is revoked too.
                let unbound = s
                    .token_binding_uid
                    .as_ref()
                    .is_some_and(|uid| peer.is_some_and(|f| !f.reader_bindings.values().any(|b| b.object.uid == *uid)));
                live && !revoked && !unbound
            });
            (CheckId::Tokens, if works { Status::Warn } else { Status::Fail })
        }
        ActionKind::WriteRemoteSecret { .. } => (CheckId::RemoteSecrets, Status::Fail),
        // A holder that left still has working tokens until this is applied; a
        // replaced token, which nothing uses any more, is harmless until then.
        ActionKind::RevokeReaderTokens { detach: true, .. } => (CheckId::Tokens, Status::Fail),
        ActionKind::RevokeReaderTokens { detach: false, .. } => (CheckId::Tokens, Status::Warn),
    }
}

fn pass(id: CheckId, summary: String) -> Check {
    Check {
        id,
        status: Status::Pass,
        summary,
        problems: Vec::new(),
    }
}

fn cluster_checks(topology: &Topology, observed: &Observed, cluster: &Cluster) -> ClusterChecks {
    let observation = observed.clusters.get(&cluster.name);
    let checks = match observation.map(|o| &o.state) {
        Some(ClusterState::Reachable(facts)) => reachable_checks(topology, cluster, facts),
        Some(ClusterState::Unknown { reason, detail }) => {
            let context = observation.map_or(cluster.context.as_str(), |o| o.context.as_str());
            vec![Check {
                id: CheckId::Reachable,
                status: Status::Fail,
                summary: "nothing else was checked".to_string(),
                problems: vec![Problem {
                    status: Status::Fail,
                    code: "meshform::plan::unreachable".to_string(),
                    message: format!("{} could not be read: {detail}", cluster.name),
                    fix: Some(unreachable_fix(*reason, context)),
                }],
            }]
        }
        None => vec![Check {
            id: CheckId::Reachable,
            status: Status::Skipped,
            summary: "not in the observation".to_string(),
            problems: Vec::new(),
        }],
    };
    ClusterChecks {
        cluster: cluster.name.clone(),
        role: cluster.role,
        network: cluster.network.clone(),
        checks,
    }
}

fn unreachable_fix(reason: UnknownReason, context: &str) -> String {
    match reason {
        UnknownReason::Unreachable => {
            format!(
                "check that the API server of context {context:?} can be reached from here (address, VPN, firewall)"
            )
        }
        UnknownReason::Unauthorized => {
            format!("refresh the credentials of context {context:?} (for a cloud cluster, its get-credentials command)")
        }
        UnknownReason::Forbidden => {
            format!("grant the identity of context {context:?} the permissions in examples/rbac/")
        }
        UnknownReason::Timeout => "retry with a longer --timeout, or find why the API server is slow".to_string(),
        UnknownReason::Kubeconfig => format!("fix context {context:?} in the kubeconfig"),
        UnknownReason::DuplicateIdentity => {
            "two [[cluster]] entries reach this cluster: keep one of them in mesh.toml".to_string()
        }
        UnknownReason::Other => "retry; run with -vv to see the requests".to_string(),
    }
}

fn reachable_checks(topology: &Topology, cluster: &Cluster, facts: &ClusterFacts) -> Vec<Check> {
    let ns = &topology.mesh.namespace;
    let mut checks = vec![pass(
        CheckId::Reachable,
        format!("{} (kube-system {})", facts.server, facts.identity),
    )];
    checks.push(pass(
        CheckId::NetworkLabel,
        format!("namespace {ns} is on network {:?}", cluster.network),
    ));
    let read_by_primaries = topology.primaries().any(|p| p.name != cluster.name);
    if read_by_primaries {
        checks.push(pass(
            CheckId::ReaderAccount,
            format!("{ns}/{}", objects::READER_SERVICE_ACCOUNT),
        ));
        let server = cluster.api_server.as_deref().unwrap_or(&facts.server);
        checks.push(pass(CheckId::ApiServer, format!("primaries reach it at {server}")));
    }
    if topology.clusters.iter().any(|c| c.network != cluster.network) {
        let network = &topology.networks[&cluster.network];
        let summary = match &facts.east_west {
            Some(east_west) => format!(
                "Service {ns}/{} on network {:?}, {}",
                network.gateway_service,
                cluster.network,
                east_west.istiod_address().unwrap_or_else(|| "no address".to_string())
            ),
            None => format!("Service {ns}/{}", network.gateway_service),
        };
        checks.push(pass(CheckId::Gateway, summary));
    }
    let installs: Vec<String> = facts
        .installs
        .iter()
        .map(|(revision, install)| {
            let name = install
                .istiod
                .clone()
                .or_else(|| install.injector.clone())
                .unwrap_or_else(|| revision.clone());
            format!(
                "{name} (cluster id {}, network {})",
                install
                    .cluster_id
                    .as_deref()
                    .or(install.injected_cluster_id.as_deref())
                    .unwrap_or(objects::DEFAULT_CLUSTER_ID),
                install.injected_network.as_deref().unwrap_or("unset")
            )
        })
        .collect();
    checks.push(pass(CheckId::Istio, installs.join(", ")));
    if cluster.role == Role::Remote {
        let check = match &cluster.control_plane {
            Some(primary) => {
                let at = facts
                    .installs
                    .values()
                    .find_map(|i| i.remote_pilot_address.as_deref())
                    .map(|a| format!(", sidecars reach istiod at {a}"))
                    .unwrap_or_default();
                pass(CheckId::ControlPlane, format!("served by {primary}'s istiod{at}"))
            }
            None => Check {
                id: CheckId::ControlPlane,
                status: Status::Fail,
                summary: String::new(),
                problems: vec![Problem {
                    status: Status::Fail,
                    code: "meshform::topology::missing_key".to_string(),
                    message: format!(
                        "mesh.toml does not say which primary's istiod serves remote {}",
                        cluster.name
                    ),
                    fix: Some(format!(
                        "set `control_plane` on cluster {:?} in mesh.toml",
                        cluster.name
                    )),
                }],
            },
        };
        checks.push(check);
    }
    if cluster.role == Role::Primary {
        let peers: BTreeSet<&str> = facts
            .remote_secrets
            .values()
            .filter(|s| s.object.managed)
            .flat_map(|s| s.cluster_ids.iter().map(String::as_str))
            .collect();
        let summary = if peers.is_empty() {
            "none needed".to_string()
        } else {
            format!("for {}", peers.into_iter().collect::<Vec<_>>().join(", "))
        };
        checks.push(pass(CheckId::RemoteSecrets, summary));
        checks.push(pass(CheckId::Tokens, tokens_summary(topology, facts)));
    }
    checks
}

fn tokens_summary(topology: &Topology, facts: &ClusterFacts) -> String {
    let managed = facts.remote_secrets.values().filter(|s| s.object.managed);
    let earliest = managed
        .clone()
        .filter_map(|s| match s.token {
            TokenFacts::Bound { expires_at, .. } => Some(expires_at),
            _ => None,
        })
        .min();
    match earliest {
        Some(at) => format!("the first expires at {at}"),
        None if managed.count() == 0 => "none held".to_string(),
        None if topology.mesh.tokens.mode == TokenMode::Secret => {
            "legacy token Secrets, never expiring (tokens.mode = \"secret\")".to_string()
        }
        None => "never expiring".to_string(),
    }
}

/// Per network: the gateway istiod learns for it from every cluster on it
/// (a Service labelled with the network, listing istiod's port, with an
/// address; istio/istio `pilot/pkg/serviceregistry/kube/controller/network.go`).
fn networks(topology: &Topology, observed: &Observed) -> Vec<NetworkChecks> {
    let several = topology.networks.len() > 1;
    topology
        .networks
        .keys()
        .map(|network| {
            let mut members: Vec<&Cluster> = topology.clusters.iter().filter(|c| &c.network == network).collect();
            members.sort_by(|a, b| a.name.cmp(&b.name));
            let mut checks = Vec::new();
            if several && !members.is_empty() {
                let gateways: Vec<String> = members
                    .iter()
                    .filter_map(|c| {
                        let east_west = observed.facts(&c.name)?.east_west.as_ref()?;
                        let usable = east_west.network.as_deref() == Some(network.as_str())
                            && (east_west.ports.contains(&east_west.istiod_port())
                                || east_west.ports.contains(&objects::HBONE_GATEWAY_PORT));
                        usable.then(|| east_west.istiod_address().map(|a| format!("{a} ({})", c.name)))?
                    })
                    .collect();
                let unread = members.iter().any(|c| observed.facts(&c.name).is_none());
                checks.push(match (gateways.is_empty(), unread) {
                    (false, _) => pass(CheckId::NetworkGateway, gateways.join(", ")),
                    (true, true) => Check {
                        id: CheckId::NetworkGateway,
                        status: Status::Skipped,
                        summary: "not every cluster of the network could be read".to_string(),
                        problems: Vec::new(),
                    },
                    (true, false) => Check {
                        id: CheckId::NetworkGateway,
                        status: Status::Fail,
                        summary: String::new(),
                        problems: vec![Problem {
                            status: Status::Fail,
                            code: "meshform::check::network_gateway".to_string(),
                            message: format!(
                                "istiod knows no gateway for network {network:?}: other networks are sent its pods' IPs, which they cannot reach"
                            ),
                            fix: Some(format!(
                                "give the east-west gateway Service of a cluster on {network:?} an address and the label {}={network} (see the clusters' east-west gateway checks)",
                                objects::NETWORK_LABEL
                            )),
                        }],
                    },
                });
            }
            NetworkChecks {
                network: network.clone(),
                clusters: members.iter().map(|c| c.name.clone()).collect(),
                checks,
            }
        })
        .collect()
}

fn root_of_trust(topology: &Topology, observed: &Observed) -> Check {
    let roots: BTreeSet<&str> = topology
        .clusters
        .iter()
        .filter_map(|c| observed.facts(&c.name)?.root_certs.as_ref())
        .flatten()
        .map(String::as_str)
        .collect();
    let summary = if roots.is_empty() {
        "no istio-ca-root-cert found".to_string()
    } else {
        let prints: Vec<String> = roots
            .iter()
            .map(|r| format!("sha256:{}", &r[..r.len().min(16)]))
            .collect();
        format!("shared: {}", prints.join(", "))
    };
    pass(CheckId::RootOfTrust, summary)
}

#[cfg(test)]
mod tests {
    use jiff::SignedDuration;

    use super::*;
    use crate::observe::model::ClusterState;
    use crate::observe::synthetic;
    use crate::plan::{Options, simulate::simulate};

    const EXAMPLE: &str = include_str!("../mesh.toml.example");

    fn now() -> Timestamp {
        "2026-03-01T12:00:00Z".parse().unwrap()
    }

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

    fn checked(topology: &Topology, observed: &Observed) -> (Checklist, Plan) {
        let plan = crate::plan::plan(topology, observed, &options()).unwrap();
        (check(topology, observed, &plan), plan)
    }

    /// The example after its fresh plan was applied, a day later.
    fn converged(topology: &Topology) -> Observed {
        let fresh = synthetic::fresh(topology, now());
        let plan = crate::plan::plan(topology, &fresh, &options()).unwrap();
        let mut after = simulate(&fresh, &plan, SignedDuration::from_hours(24 * 7));
        after.observed_at = now() + SignedDuration::from_hours(24);
        after
    }

    fn facts<'a>(observed: &'a mut Observed, cluster: &str) -> &'a mut ClusterFacts {
        match &mut observed.clusters.get_mut(cluster).unwrap().state {
            ClusterState::Reachable(facts) => facts,
            ClusterState::Unknown { .. } => panic!("{cluster} is not reachable"),
        }
    }

    fn of<'a>(checklist: &'a Checklist, cluster: &str, id: CheckId) -> &'a Check {
        checklist
            .clusters
            .iter()
            .find(|c| c.cluster == cluster)
            .and_then(|c| c.checks.iter().find(|k| k.id == id))
            .unwrap_or_else(|| panic!("no {id:?} check for {cluster}: {checklist:#?}"))
    }

    fn problems(checklist: &Checklist) -> usize {
        checklist.checks().map(|c| c.problems.len()).sum()
    }

    #[test]
    fn a_converged_mesh_passes_every_check() {
        let topology = example();
        let (checklist, plan) = checked(&topology, &converged(&topology));
        assert!(plan.is_empty(), "{plan:#?}");
        assert!(checklist.passed(), "{checklist:#?}");
        assert_eq!(checklist.count(Status::Fail), 0);
        assert_eq!(problems(&checklist), 0);
        // Primaries hold secrets for every other cluster, and say so.
        let secrets = of(&checklist, "apac", CheckId::RemoteSecrets);
        assert_eq!(secrets.summary, "for eu-central, eu-west, us-east");
        // A remote holds none, and has no such line.
        let remote = checklist.clusters.iter().find(|c| c.cluster == "eu-central").unwrap();
        assert!(
            remote.checks.iter().all(|c| c.id != CheckId::RemoteSecrets),
            "{remote:#?}"
        );
        let gateway = &checklist.networks.iter().find(|n| n.network == "asia").unwrap().checks[0];
        assert_eq!(gateway.status, Status::Pass);
        assert_eq!(gateway.summary, "apac.gateways.example.com:15443 (apac)");
    }

    #[test]
    fn every_finding_and_every_pending_write_is_one_problem() {
        let topology = example();
        let mut observed = synthetic::fresh(&topology, now());
        facts(&mut observed, "us-east").gateway_service = None;
        facts(&mut observed, "eu-central").server = "https://127.0.0.1:6443".to_string();
        let (checklist, plan) = checked(&topology, &observed);
        let writes = plan.actions.iter().filter(|a| a.writes() || is_restart(a)).count();
        assert!(writes > 0 && !plan.findings.is_empty());
        assert_eq!(problems(&checklist), writes + plan.findings.len(), "{checklist:#?}");
        assert!(!checklist.passed());
        let gateway = of(&checklist, "us-east", CheckId::Gateway);
        assert_eq!(gateway.status, Status::Fail);
        assert!(gateway.summary.is_empty(), "a failing check shows no passing state");
        assert!(
            gateway
                .problems
                .iter()
                .any(|p| p.code == "meshform::plan::gateway_service_missing" && p.fix.is_some()),
            "{gateway:#?}"
        );
        // A warning is a problem that does not fail its check.
        let address = of(&checklist, "eu-central", CheckId::ApiServer);
        assert_eq!(address.status, Status::Warn, "{address:#?}");
        // Pending writes land under the check they fix.
        assert_eq!(of(&checklist, "apac", CheckId::NetworkLabel).status, Status::Fail);
        assert_eq!(of(&checklist, "apac", CheckId::ReaderAccount).status, Status::Fail);
        assert_eq!(of(&checklist, "apac", CheckId::RemoteSecrets).problems.len(), 3);
    }

    #[test]
    fn an_unreachable_cluster_fails_its_own_line_and_the_rest_is_checked() {
        let topology = example();
        let mut observed = converged(&topology);
        observed.clusters.get_mut("apac").unwrap().state = ClusterState::Unknown {
            reason: UnknownReason::Unauthorized,
            detail: "401 Unauthorized".to_string(),
        };
        let (checklist, _) = checked(&topology, &observed);
        let apac = checklist.clusters.iter().find(|c| c.cluster == "apac").unwrap();
        assert_eq!(apac.checks.len(), 1, "{apac:#?}");
        assert_eq!(apac.checks[0].status, Status::Fail);
        let fix = apac.checks[0].problems[0].fix.as_deref().unwrap();
        assert!(fix.contains("refresh the credentials of context \"gke_"), "{fix}");
        assert_eq!(of(&checklist, "us-east", CheckId::Reachable).status, Status::Pass);
        // asia has no other cluster: its gateway cannot be judged.
        let asia = &checklist.networks.iter().find(|n| n.network == "asia").unwrap().checks[0];
        assert_eq!(asia.status, Status::Skipped);
        assert!(!checklist.passed());
    }

    #[test]
    fn a_network_without_a_usable_gateway_fails_and_one_of_two_is_enough() {
        let topology = example();
        let mut observed = converged(&topology);
        facts(&mut observed, "apac")
            .east_west
            .as_mut()
            .unwrap()
            .addresses
            .clear();
        facts(&mut observed, "eu-west").east_west.as_mut().unwrap().ports = vec![443];
        let (checklist, _) = checked(&topology, &observed);
        let network = |n: &str| checklist.networks.iter().find(|x| x.network == n).unwrap().checks[0].clone();
        assert_eq!(network("asia").status, Status::Fail);
        assert!(network("asia").problems[0].message.contains("pods' IPs"));
        // eu-central's gateway still serves eu-flat.
        assert_eq!(network("eu-flat").status, Status::Pass);
        assert_eq!(
            network("eu-flat").summary,
            "eu-central.gateways.example.com:15443 (eu-central)"
        );
        assert_eq!(of(&checklist, "eu-west", CheckId::Gateway).status, Status::Fail);
        assert_eq!(of(&checklist, "apac", CheckId::Gateway).status, Status::Fail);
    }

    #[test]
    fn separate_roots_of_trust_fail_the_mesh_check() {
        let topology = example();
        let mut observed = converged(&topology);
        facts(&mut observed, "apac").root_certs = Some(vec!["ab".repeat(32)]);
        let (checklist, _) = checked(&topology, &observed);
        let trust = &checklist.mesh_checks[0];
        assert_eq!((trust.id, trust.status), (CheckId::RootOfTrust, Status::Fail));
        assert!(
            trust.problems[0].message.contains("apac (root sha256:abab"),
            "{trust:#?}"
        );
    }

    #[test]
    fn istio_missing_fails_though_the_plan_only_warns() {
        let topology = example();
        let mut observed = converged(&topology);
        facts(&mut observed, "us-east").installs.clear();
        let (checklist, plan) = checked(&topology, &observed);
        assert_eq!(plan.blockers().count(), 0);
        assert_eq!(of(&checklist, "us-east", CheckId::Istio).status, Status::Fail);
        assert!(!checklist.passed());
    }

    #[test]
    fn a_token_due_for_rotation_warns_and_an_expired_one_fails() {
        let topology = example();
        let mut due = converged(&topology);
        // Six of its seven days have passed: past rotate_at_percent, not expired.
        due.observed_at = now() + SignedDuration::from_hours(24 * 6);
        let (checklist, plan) = checked(&topology, &due);
        assert!(plan.actions.iter().all(|a| matches!(
            a.kind,
            ActionKind::WriteRemoteSecret {
                mode: WriteMode::Rotate,
                ..
            }
        )));
        assert_eq!(of(&checklist, "apac", CheckId::Tokens).status, Status::Warn);
        assert!(checklist.passed(), "a due rotation is no failure: {checklist:#?}");

        let mut expired = due;
        expired.observed_at = now() + SignedDuration::from_hours(24 * 8);
        let (checklist, _) = checked(&topology, &expired);
        assert_eq!(of(&checklist, "apac", CheckId::Tokens).status, Status::Fail);
        assert!(!checklist.passed());
    }

    /// A binding Secret in `cluster` for tokens `holder` holds, not referenced
    /// by any remote secret.
    fn stray_binding(observed: &mut Observed, cluster: &str, holder: &str) {
        let binding = crate::observe::model::BindingFacts {
            object: crate::observe::model::ObjectFacts {
                uid: format!("stray-{holder}-{cluster}"),
                resource_version: "1".to_string(),
                managed: true,
                spec_hash: None,
                content_sha256: None,
                content_owners: Vec::new(),
            },
            holder: Some(holder.to_string()),
            holder_identity: None,
        };
        facts(observed, cluster)
            .reader_bindings
            .insert(format!("{}stray", objects::reader_binding_prefix(holder)), binding);
    }

    #[test]
    fn a_departed_holders_working_tokens_fail_and_a_replaced_token_warns() {
        let topology = example();
        let mut departed = converged(&topology);
        stray_binding(&mut departed, "eu-west", "gone");
        let (checklist, plan) = checked(&topology, &departed);
        assert!(
            plan.actions
                .iter()
                .any(|a| matches!(a.kind, ActionKind::RevokeReaderTokens { detach: true, .. }))
        );
        assert_eq!(of(&checklist, "eu-west", CheckId::Tokens).status, Status::Fail);
        assert!(!checklist.passed());

        let mut replaced = converged(&topology);
        stray_binding(&mut replaced, "eu-west", "us-east");
        let (checklist, plan) = checked(&topology, &replaced);
        assert!(
            plan.actions
                .iter()
                .any(|a| matches!(a.kind, ActionKind::RevokeReaderTokens { detach: false, .. }))
        );
        assert_eq!(of(&checklist, "eu-west", CheckId::Tokens).status, Status::Warn);
        assert!(
            checklist.passed(),
            "a replaced token left over is no failure: {checklist:#?}"
        );
    }

    #[test]
    fn a_token_whose_binding_was_deleted_fails() {
        let topology = example();
        let mut observed = converged(&topology);
        let name = format!("{}simulated", objects::reader_binding_prefix("us-east"));
        assert!(facts(&mut observed, "eu-west").reader_bindings.remove(&name).is_some());
        let (checklist, _) = checked(&topology, &observed);
        assert_eq!(of(&checklist, "us-east", CheckId::Tokens).status, Status::Fail);
        assert!(!checklist.passed());
    }
}
