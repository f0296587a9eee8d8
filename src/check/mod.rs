//! `meshform check`: the mesh's readiness as a checklist, per cluster, per
//! network and for the whole mesh, each line passing or failing with its fix.
//!
//! Pure data derived from the topology, the observation and the plan made of
//! them. It decides nothing of its own about what is wrong: every finding
//! and every pending write of the plan becomes a problem under exactly one
//! check, so `check` and `plan` cannot disagree. What it adds is the passing
//! side (what was found where all is well) and the grouping. It reads no
//! cluster and renders nothing.
//!
//! One file per scope, each saying what passes there and which of the plan's
//! findings and writes its checks claim:
//!
//! - `cluster.rs`: each cluster's lines (reachable, network label, reader
//!   account, API address, east-west gateway, Istio install, control plane,
//!   remote secrets, reader tokens), the check each cluster finding and each
//!   pending write belongs to, and the fix for a cluster that could not be read;
//! - `network.rs`: per network, the gateway istiod learns for it from every
//!   cluster on it, judged from all of them together;
//! - `mesh.rs`: what holds between all clusters (one root of trust), and the
//!   check a finding about no one cluster belongs to.
//!
//! This file holds the model (the checklist and its lines), the entry point
//! that builds each scope's lines and then files the plan's problems under
//! them, and the unit tests, which check the whole checklist. The scope files
//! build lines from the topology and the observation and name the check each
//! plan problem belongs to; only [`check`] files those problems. Beside the
//! plan's, a scope file reports only what the plan cannot see: a cluster that
//! could not be read, a remote whose control plane mesh.toml does not name, a
//! network without a gateway.

mod cluster;
mod mesh;
mod network;

use jiff::Timestamp;
use serde::Serialize;

use crate::observe::model::Observed;
use crate::plan::{Action, ActionKind, FindingKind, Plan};
use crate::topology::{Cluster, Role, Topology};

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
        clusters: clusters
            .iter()
            .map(|c| cluster::checks(topology, observed, c))
            .collect(),
        networks: network::checks(topology, observed),
        mesh_checks: vec![mesh::root_of_trust(topology, observed)],
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
            Some(cluster) => checklist.add(cluster, cluster::finding_check(code), problem),
            None => checklist.add_mesh(mesh::finding_check(code), problem),
        }
    }
    for action in plan.actions.iter().filter(|a| a.writes() || is_restart(a)) {
        let (id, status) = cluster::action_check(action, observed);
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

/// A check that passes, with what was found.
fn pass(id: CheckId, summary: String) -> Check {
    Check {
        id,
        status: Status::Pass,
        summary,
        problems: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use jiff::SignedDuration;

    use super::*;
    use crate::objects;
    use crate::observe::model::{ClusterFacts, ClusterState, UnknownReason};
    use crate::observe::synthetic;
    use crate::plan::WriteMode;
    use crate::plan::{Options, simulate::simulate};

    const EXAMPLE: &str = include_str!("../../mesh.toml.example");

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
            holder: Some(holder.into()),
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
