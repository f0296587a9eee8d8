//! Fixtures for the planner tests: topologies from TOML text, observations
//! built from `synthetic::fresh` plus the state an earlier topology left, and
//! one-line summaries of plans that read like the rules they check.
//!
//! Everything here goes through meshform's public API only.

use jiff::{SignedDuration, Timestamp};
use meshform::observe::model::{
    ClusterFacts, ClusterState, ObjectFacts, Observed, RemoteSecretFacts, TokenFacts, UnknownReason,
};
use meshform::observe::synthetic;
use meshform::plan::simulate::simulate;
use meshform::plan::{Action, ActionKind, Finding, Options, Plan, PlanError, WriteMode, plan};
use meshform::topology::Topology;

/// The observation time of every fixture: a fixed instant, so plans that
/// judge token age are reproducible.
pub fn now() -> Timestamp {
    "2025-06-01T12:00:00Z".parse().expect("a valid timestamp")
}

/// The lifetime of tokens meshform issues in these fixtures.
pub const TOKEN_LIFETIME: SignedDuration = SignedDuration::from_hours(24 * 365);

/// A validated topology from mesh.toml text; panics with the rendered
/// problems when the text is not valid.
pub fn topology(toml: &str) -> Topology {
    match meshform::topology::check("mesh.toml", toml.as_bytes()).into_result() {
        Ok((topology, _warnings)) => topology,
        Err(problems) => panic!("invalid topology: {problems:?}\n{toml}"),
    }
}

/// What `topology` reports for `toml`, when it is invalid.
pub fn topology_error(toml: &str) -> String {
    match meshform::topology::check("mesh.toml", toml.as_bytes()).into_result() {
        Ok(_) => panic!("expected an invalid topology:\n{toml}"),
        Err(problems) => format!("{problems:?}"),
    }
}

/// Every cluster of `topology` as Istio installs it, meshform having written nothing.
pub fn fresh(topology: &Topology) -> Observed {
    synthetic::fresh(topology, now())
}

/// `observed` after applying the plan of `topology` (default options).
pub fn converge(topology: &Topology, observed: &Observed) -> Observed {
    let plan = plan(topology, observed, &Options::default()).expect("the prior topology plans");
    simulate(observed, &plan, TOKEN_LIFETIME)
}

/// The facts of a reachable cluster, to edit.
pub fn facts_mut<'a>(observed: &'a mut Observed, cluster: &str) -> &'a mut ClusterFacts {
    match &mut observed
        .clusters
        .get_mut(cluster)
        .unwrap_or_else(|| panic!("cluster {cluster} is not observed"))
        .state
    {
        ClusterState::Reachable(facts) => facts,
        ClusterState::Unknown { .. } => panic!("cluster {cluster} is not reachable"),
    }
}

/// Marks a cluster as unreadable.
pub fn make_unknown(observed: &mut Observed, cluster: &str) {
    observed
        .clusters
        .get_mut(cluster)
        .unwrap_or_else(|| panic!("cluster {cluster} is not observed"))
        .state = ClusterState::Unknown {
        reason: UnknownReason::Unreachable,
        detail: "connection refused".to_string(),
    };
}

/// A remote secret made by istioctl or by hand: not meshform's, with a
/// never-expiring token.
pub fn unmanaged_secret(cluster_ids: &[&str]) -> RemoteSecretFacts {
    RemoteSecretFacts {
        object: ObjectFacts {
            uid: format!("istioctl-{}", cluster_ids.join("-")),
            resource_version: "7".to_string(),
            managed: false,
            spec_hash: None,
            content_sha256: None,
            content_owners: Vec::new(),
        },
        cluster_ids: cluster_ids.iter().map(|s| s.to_string()).collect(),
        annotated_cluster: cluster_ids.first().map(|s| (*s).into()),
        server: Some("https://somewhere.example.com:6443".into()),
        ca_sha256: None,
        tls_server_name: None,
        peer_identity: None,
        token: TokenFacts::Unbounded,
        token_account_uid: None,
        token_binding_uid: None,
        token_secret: None,
        object_copies: Vec::new(),
    }
}

/// Sets the token of a (managed) remote secret.
pub fn set_token(observed: &mut Observed, primary: &str, secret: &str, token: TokenFacts) {
    facts_mut(observed, primary)
        .remote_secrets
        .get_mut(secret)
        .unwrap_or_else(|| panic!("no secret {secret} in {primary}"))
        .token = token;
}

/// A bound token issued `age` before the fixture time, living `life`.
pub fn bound_token(age: SignedDuration, life: SignedDuration) -> TokenFacts {
    let issued_at = now().checked_sub(age).expect("in range");
    TokenFacts::Bound {
        issued_at,
        expires_at: issued_at.checked_add(life).expect("in range"),
    }
}

/// A plan with default options, which must succeed.
pub fn plan_ok(topology: &Topology, observed: &Observed) -> Plan {
    plan_with(topology, observed, &Options::default())
}

pub fn plan_with(topology: &Topology, observed: &Observed, options: &Options) -> Plan {
    match plan(topology, observed, options) {
        Ok(plan) => plan,
        Err(err) => panic!("planning failed: {err}"),
    }
}

pub fn plan_err(topology: &Topology, observed: &Observed, options: &Options) -> PlanError {
    match plan(topology, observed, options) {
        Ok(plan) => panic!("expected an error, got a plan of {:?}", actions(&plan)),
        Err(err) => err,
    }
}

/// One action as `phase cluster kind[/mode] [peer]`, e.g.
/// `attach a write_remote_secret/create b`: phase, the cluster written to,
/// what is done and, for remote secrets, which peer they are about.
pub fn action_line(action: &Action) -> String {
    let phase = serde_json::to_value(action.phase).expect("a phase serialises");
    let phase = phase.as_str().expect("a phase is a string");
    let kind = match &action.kind {
        ActionKind::DeleteRemoteSecret { .. } => "delete_remote_secret".to_string(),
        ActionKind::SetNetwork { network, previous, .. } => {
            format!("set_network {}->{network}", previous.as_deref().unwrap_or("none"))
        }
        ActionKind::EnsureReader { scope, .. } if !scope.is_read() => "ensure_reader/control_plane".to_string(),
        ActionKind::EnsureReader { .. } => "ensure_reader".to_string(),
        ActionKind::EnsureGateway { update, .. } => {
            if *update {
                "ensure_gateway/update".to_string()
            } else {
                "ensure_gateway/create".to_string()
            }
        }
        ActionKind::DeleteGateway { .. } => "delete_gateway".to_string(),
        ActionKind::DeleteAmbientGateway { .. } => "delete_ambient_gateway".to_string(),
        ActionKind::EnsureIstiodExposure { .. } => "ensure_istiod_exposure".to_string(),
        ActionKind::DeleteIstiodExposure { .. } => "delete_istiod_exposure".to_string(),
        ActionKind::WriteRemoteSecret { mode, .. } => format!("write_remote_secret/{}", mode_name(*mode)),
        ActionKind::RestartWorkloads { enabled, .. } => {
            if *enabled {
                "restart_workloads/enabled".to_string()
            } else {
                "restart_workloads/shown".to_string()
            }
        }
        ActionKind::SetGatewayNetwork { network, previous, .. } => {
            format!(
                "set_gateway_network {}->{network}",
                previous.as_deref().unwrap_or("none")
            )
        }
        ActionKind::SetK8sGatewayNetwork {
            gateway,
            network,
            previous,
            ..
        } => format!(
            "set_k8s_gateway_network {gateway} {}->{network}",
            previous.as_deref().unwrap_or("none")
        ),
        ActionKind::EnsureAmbientGateway { update, .. } => {
            if *update {
                "ensure_ambient_gateway/update".to_string()
            } else {
                "ensure_ambient_gateway/create".to_string()
            }
        }
        ActionKind::WriteCaCerts { mode, .. } => {
            let mode = serde_json::to_value(mode).expect("a mode serialises");
            format!("write_ca_certs/{}", mode.as_str().expect("a mode is a string"))
        }
        ActionKind::RestartIstiod { enabled, .. } => {
            if *enabled {
                "restart_istiod/enabled".to_string()
            } else {
                "restart_istiod/shown".to_string()
            }
        }
        ActionKind::RevokeReaderTokens { detach, .. } => {
            if *detach {
                "revoke_reader_tokens/detach".to_string()
            } else {
                "revoke_reader_tokens/replaced".to_string()
            }
        }
    };
    match action.peer() {
        Some(peer) => format!("{phase} {} {kind} {peer}", action.cluster),
        None => format!("{phase} {} {kind}", action.cluster),
    }
}

pub fn mode_name(mode: WriteMode) -> &'static str {
    match mode {
        WriteMode::Create => "create",
        WriteMode::Update => "update",
        WriteMode::Rotate => "rotate",
        WriteMode::Adopt => "adopt",
    }
}

/// Every action of the plan, in order, as [`action_line`]s.
pub fn actions(plan: &Plan) -> Vec<String> {
    plan.actions.iter().map(action_line).collect()
}

/// One finding as `kind cluster code`, e.g. `blocker a gateway_service_missing`.
pub fn finding_line(finding: &Finding) -> String {
    let kind = serde_json::to_value(finding.kind).expect("a finding kind serialises");
    format!(
        "{} {} {}",
        kind.as_str().expect("a finding kind is a string"),
        finding.cluster.as_deref().unwrap_or("-"),
        finding.code.trim_start_matches("meshform::plan::")
    )
}

pub fn findings(plan: &Plan) -> Vec<String> {
    plan.findings.iter().map(finding_line).collect()
}

/// The reasons of the actions, in order.
pub fn reasons(plan: &Plan) -> Vec<&str> {
    plan.actions.iter().map(|a| a.reason.as_str()).collect()
}
