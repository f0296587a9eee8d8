//! Each cluster's checks: what passes when its observation is all well, and
//! which check each of the plan's findings about a cluster and each pending
//! write of the plan belongs to. A cluster that could not be read has one
//! failing line, with the fix for why. The plan's problems are filed by
//! [`super::check`]; the only problems made here are those the plan cannot
//! see (a cluster that could not be read, a remote whose control plane
//! mesh.toml does not name).

use std::collections::BTreeSet;

use super::{Check, CheckId, ClusterChecks, Problem, Status, pass};
use crate::objects;
use crate::observe::model::{ClusterFacts, ClusterState, Observed, TokenFacts, UnknownReason};
use crate::plan::{Action, ActionKind, CaCertsMode, WriteMode};
use crate::topology::{Cluster, Role, TokenMode, Topology};

/// A cluster's passing lines, or the one line that says it could not be read.
pub(super) fn checks(topology: &Topology, observed: &Observed, cluster: &Cluster) -> ClusterChecks {
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
        // A remote's control plane holds a token of an account of its own.
        let control_plane = match (&cluster.role, cluster.control_plane.as_deref()) {
            (crate::topology::Role::Remote, Some(primary)) => format!(
                ", read-only; {primary}'s {ns}/{} writes what its istiod writes there",
                objects::CONTROL_PLANE_SERVICE_ACCOUNT
            ),
            _ => String::new(),
        };
        checks.push(pass(
            CheckId::ReaderAccount,
            format!("{ns}/{}{control_plane}", objects::READER_SERVICE_ACCOUNT),
        ));
        let server = cluster.api_server.as_deref().unwrap_or(&facts.server);
        checks.push(pass(CheckId::ApiServer, format!("primaries reach it at {server}")));
    }
    if topology.clusters.iter().any(|c| c.network != cluster.network) {
        let network = &topology.networks[&cluster.network];
        // Each data plane's istiod finds the network's gateway its own way
        // (plan/ambient.rs): ambient the istio-east-west Gateway, sidecar the
        // labelled Service or else a labelled Gateway API Gateway.
        let summary = if cluster.data_plane == crate::topology::DataPlane::Ambient {
            match facts.ambient_gateway(&cluster.network) {
                Some((name, g)) => format!(
                    "ambient (istio-east-west Gateway {ns}/{name} on network {:?}, {})",
                    cluster.network,
                    g.status_addresses.first().map_or("no address", String::as_str)
                ),
                None => format!("ambient (Gateway of class {})", objects::EAST_WEST_GATEWAY_CLASS),
            }
        } else {
            match (&facts.east_west, facts.sidecar_k8s_gateway(&cluster.network)) {
                (Some(east_west), _) => format!(
                    "sidecar (Service {ns}/{} on network {:?}, {})",
                    network.gateway_service,
                    cluster.network,
                    east_west.istiod_address().unwrap_or_else(|| "no address".to_string())
                ),
                (None, Some((name, g))) => format!(
                    "sidecar (Gateway API Gateway {ns}/{name} on network {:?}, {})",
                    cluster.network,
                    g.sidecar_gateways().first().map_or("no address", String::as_str)
                ),
                (None, None) => format!("sidecar (Service {ns}/{})", network.gateway_service),
            }
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
                .or_else(|| install.remote_istiod.clone().map(|s| format!("Service {s}")))
                .or_else(|| install.remote_values.clone().map(|c| format!("ConfigMap {c}")))
                .unwrap_or_else(|| revision.clone());
            // The remote profile records neither: its pods are injected by
            // its control plane's istiod.
            if install.istiod.is_none() && install.injector.is_none() {
                return format!("{name} (Istio's remote profile)");
            }
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

/// The check a cluster's plan finding belongs to, by its code.
pub(super) fn finding_check(code: &str) -> CheckId {
    match code {
        "network_change_partial" => CheckId::NetworkLabel,
        "reader_unmanaged" => CheckId::ReaderAccount,
        "peer_address" | "insecure_transport" => CheckId::ApiServer,
        "gateway_service_missing"
        | "gateway_unmanaged"
        | "gateway_port_missing"
        | "gateway_port_mismatch"
        | "gateway_address_missing"
        | "istiod_exposure_unmanaged"
        | "mesh_networks_gateways"
        | "gateway_api_missing"
        | "ambient_gateway_missing"
        | "ambient_gateway_listener"
        | "ambient_gateway_pending"
        | "ambient_gateway_duplicate" => CheckId::Gateway,
        "istio_not_installed"
        | "data_plane_mismatch"
        | "ambient_multi_network_off"
        | "ztunnel_missing"
        | "ztunnel_cluster_id"
        | "ztunnel_network"
        | "istiod_cluster_id"
        | "injection_network"
        | "mesh_id"
        | "ca_cert_expiring"
        | "ca_certs_unmanaged"
        | "trust_rotation_blocked" => CheckId::Istio,
        "remote_pilot_address" | "remote_pilot_previous" | "control_plane_on_primary" => CheckId::ControlPlane,
        "remote_secret_duplicate" | "remote_secret_unmanaged" => CheckId::RemoteSecrets,
        "detached_holder" | "detach_not_revoked" | "adopted_token_outlives" => CheckId::Tokens,
        _ => CheckId::Other,
    }
}

/// The check a pending write belongs to, and how bad it is that it is pending.
pub(super) fn action_check(action: &Action, observed: &Observed) -> (CheckId, Status) {
    match &action.kind {
        // The label is right: only a remote's control plane is not named yet.
        ActionKind::SetNetwork { network, previous, .. } if previous.as_ref() == Some(network) => {
            (CheckId::ControlPlane, Status::Fail)
        }
        ActionKind::SetNetwork { .. } | ActionKind::RestartWorkloads { .. } => (CheckId::NetworkLabel, Status::Fail),
        ActionKind::EnsureReader { .. } => (CheckId::ReaderAccount, Status::Fail),
        ActionKind::EnsureGateway { .. }
        | ActionKind::SetGatewayNetwork { .. }
        | ActionKind::SetK8sGatewayNetwork { .. }
        | ActionKind::EnsureAmbientGateway { .. } => (CheckId::Gateway, Status::Fail),
        // Left over from a network layout that is gone: harmless until removed.
        ActionKind::DeleteGateway { .. } | ActionKind::DeleteAmbientGateway { .. } => (CheckId::Gateway, Status::Warn),
        // A remote on another network cannot reach its istiod without it.
        ActionKind::EnsureIstiodExposure { .. } => (CheckId::Gateway, Status::Fail),
        ActionKind::DeleteIstiodExposure { .. } => (CheckId::Gateway, Status::Warn),
        ActionKind::DeleteRemoteSecret { .. } => (CheckId::RemoteSecrets, Status::Fail),
        // A renewal ahead of the end leaves a working CA until then.
        ActionKind::WriteCaCerts {
            mode: CaCertsMode::Renew,
            ..
        } => (CheckId::Istio, Status::Warn),
        ActionKind::WriteCaCerts { .. } | ActionKind::RestartIstiod { .. } => (CheckId::Istio, Status::Fail),
        ActionKind::WriteRemoteSecret {
            mode: WriteMode::Rotate,
            name,
            ..
        } => {
            // A rotation that is only due leaves a working token until then;
            // an expired or revoked one (its reader account deleted) reads nothing.
            let secret = observed.facts(&action.cluster).and_then(|f| f.remote_secrets.get(name));
            let peer = action.peer().and_then(|p| observed.facts(p));
            let works = secret.is_some_and(|s| {
                let live = match s.token {
                    TokenFacts::Bound { expires_at, .. } => expires_at > observed.observed_at,
                    TokenFacts::Unbounded => true,
                    TokenFacts::Unknown => false,
                };
                // Issued to an account that is gone; a token of the other
                // account (the reader's where the control plane's is due)
                // still works until it is replaced.
                let revoked = s
                    .token_account_uid
                    .as_ref()
                    .is_some_and(|uid| peer.is_none_or(|f| f.account_of(uid).is_none()));
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
