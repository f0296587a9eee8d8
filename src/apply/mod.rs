//! Executing a plan on the clusters.
//!
//! Phase by phase, in the plan's order; actions of one phase run
//! concurrently up to a limit; a failure lets the running phase finish and
//! starts no further phase. Every write is server-side apply with field
//! manager `meshform` (so a second apply of the same content changes
//! nothing), except the creates of what must not exist yet: a new remote
//! secret, a token's binding Secret, the reader account. Every delete
//! carries the UID and resourceVersion the plan saw.
//! Tokens come from the TokenRequest API, each bound to a binding Secret
//! made for it in the peer, and exist only in memory and in the remote
//! secret they are written to.
//!
//! Apply does what the plan says and nothing else: what to write, in which
//! order and with which preconditions all come from the plan. Its clients
//! come from [`crate::access`]; what it did is reported as [`Event`]s and a
//! [`Report`], which apply never prints.
//!
//! Files: this one runs the phases and dispatches each action; `calls.rs` is
//! the thin kube layer (server-side apply, create, read-live, delete, errors
//! in the report's words), `build.rs` the objects as plain data, `tokens.rs`
//! the reader tokens, `restart.rs` the workload restart, `trust.rs` the
//! plug-in CA Secret and istiod's restart, `diff.rs` the
//! redacted diffs, `lock.rs` the apply lock, `sequence.rs` the order and
//! gating of a run's actions, `cancel.rs` a request to stop between actions.

pub mod build;
mod calls;
mod cancel;
pub mod diff;
pub mod lock;
mod restart;
mod sequence;
mod tokens;
mod trust;

pub use self::cancel::{Cancel, Stop};
pub(crate) use self::sequence::{Runner, sequence};

use self::calls::{Created, describe, join_diffs};

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, Preconditions};
use miette::Diagnostic;
use secrecy::SecretString;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use thiserror::Error;
use tokio::sync::OnceCell;

use crate::access::{Connection, Connections, error_chain, is_timeout};
use crate::objects::{self, FIELD_MANAGER, ReaderScope};
use crate::observe::model::Observed;
use crate::plan::{Action, ActionKind, Phase, Plan, Precondition, WriteMode};
use crate::topology::{TokenMode, Topology};

/// How to execute.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Send every write with `dryRun=All`: the API servers validate, nothing persists.
    pub dry_run: bool,
    /// Produce a unified diff (secret data redacted) for every action.
    pub diff: bool,
    /// Actions of one phase in flight at once.
    pub concurrency: usize,
}

/// Why apply refused to start.
#[derive(Debug, Error, Diagnostic, PartialEq)]
pub enum Refusal {
    /// The plan has blocking problems.
    #[error("the plan has {0} blocking problem(s); nothing was applied")]
    #[diagnostic(
        code(meshform::apply::blocked),
        help("fix the problems the plan lists, then plan again")
    )]
    Blocked(usize),
    /// Detaches need explicit consent.
    #[error("the plan detaches {clusters} (removes remote secrets from primaries); nothing was applied")]
    #[diagnostic(
        code(meshform::apply::detach_refused),
        help("pass --allow-detach to apply a plan that detaches clusters (network changes detach and re-attach)")
    )]
    Detach { clusters: String },
    /// Planned again from what the clusters hold now, with the choices the
    /// saved plan records, the plan has other actions.
    #[error(
        "the saved plan is stale, nothing was applied; planned again from mesh.toml and what the clusters hold now, it differs:\n{}",
        .differences.iter().map(|d| format!("  {d}")).collect::<Vec<_>>().join("\n")
    )]
    #[diagnostic(code(meshform::apply::stale))]
    Stale {
        differences: Vec<crate::plan::Difference>,
        /// The command that makes a plan of the clusters as they are now.
        #[help]
        fix: String,
    },
}

/// Checks that need no cluster: blockers and consent to detach. A plan with
/// blockers is refused only when they hold back every write; otherwise the
/// run does what they leave free ([`Plan::holds`]) and reports the rest.
pub fn preflight(plan: &Plan, allow_detach: bool) -> Result<(), Refusal> {
    let holds = plan.holds();
    let free = |a: &&Action| holds.of(a).is_none();
    let blockers = plan.blockers().count();
    if blockers > 0 && plan.free_writes() == 0 {
        return Err(Refusal::Blocked(blockers));
    }
    let mut detached: Vec<&str> = plan
        .actions
        .iter()
        .filter(free)
        .filter(|a| a.is_destructive())
        .filter_map(Action::peer)
        .collect();
    detached.sort_unstable();
    detached.dedup();
    if !allow_detach && !detached.is_empty() {
        return Err(Refusal::Detach {
            clusters: detached.join(", "),
        });
    }
    Ok(())
}

/// Progress as it happens.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event<'a> {
    Phase {
        phase: Phase,
        actions: usize,
    },
    Started {
        index: usize,
        action: &'a Action,
    },
    Done {
        index: usize,
        action: &'a Action,
        dry_run: bool,
        diff: Option<String>,
    },
    Failed {
        index: usize,
        action: &'a Action,
        error: String,
    },
    Skipped {
        index: usize,
        action: &'a Action,
        why: String,
    },
}

/// Receives events. Concurrent actions run on one task, so no locking is needed.
pub trait Progress {
    fn event(&self, event: Event<'_>);
}

/// How each action of the plan ended, by its index in `plan.actions`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub done: Vec<usize>,
    pub failed: Vec<(usize, String)>,
    pub skipped: Vec<usize>,
    /// Actions the plan's blockers held back, with why ([`Plan::holds`]).
    pub held: Vec<(usize, String)>,
    /// The apply lock could not be renewed, so no further phase was started.
    pub lock_lost: bool,
    /// The run was asked to stop (SIGINT, SIGTERM) and left actions undone:
    /// those in flight finished, nothing was started after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<Stop>,
}

impl Report {
    /// Everything planned was done (or shown, for a restart not enabled).
    pub fn succeeded(&self) -> bool {
        !self.halted() && self.held.is_empty()
    }

    /// No further phase may start: an action failed, the lock was lost or
    /// the run was asked to stop.
    pub fn halted(&self) -> bool {
        !self.failed.is_empty() || self.lock_lost || self.stopped.is_some()
    }
}

/// Everything execution needs.
pub struct Target<'a> {
    pub plan: &'a Plan,
    pub topology: &'a Topology,
    /// The observation the plan was checked against (after taking the lock).
    pub observed: &'a Observed,
    pub connections: &'a Connections,
    /// The apply lock held for the run (none in a dry run).
    pub lock: Option<&'a lock::Lock>,
    /// The root of trust, loaded for the run when the plan writes `cacerts`.
    pub signer: Option<&'a crate::trust::Signer>,
}

struct Run<'a> {
    target: &'a Target<'a>,
    settings: &'a Settings,
    /// `secret` mode: one legacy token per peer and account per run, shared
    /// by every primary that needs it. Requested tokens are one per primary
    /// and peer.
    tokens: HashMap<(&'a str, ReaderScope), OnceCell<Result<SecretString, String>>>,
    restart_stamp: String,
}

/// Executes the plan. Stops after the first phase with a failure; the report
/// says what was done, what failed and what was skipped.
pub async fn execute(target: &Target<'_>, settings: &Settings, progress: &dyn Progress) -> Report {
    execute_until(target, settings, progress, &Cancel::new()).await
}

/// [`execute`], stopping between actions once `cancel` asks: what is in
/// flight finishes, nothing further starts, and the report lists the rest
/// as skipped.
pub async fn execute_until(
    target: &Target<'_>,
    settings: &Settings,
    progress: &dyn Progress,
    cancel: &Cancel,
) -> Report {
    let tokens = target
        .plan
        .actions
        .iter()
        .filter_map(Action::peer)
        .flat_map(|p| [(p, ReaderScope::Read), (p, ReaderScope::ControlPlane)])
        .map(|key| (key, OnceCell::new()))
        .collect();
    let run = Run {
        target,
        settings,
        tokens,
        restart_stamp: jiff::Timestamp::now().to_string(),
    };
    let lock_lost = || target.lock.is_some_and(lock::Lock::lost);
    sequence(target.plan, &run, &lock_lost, cancel, settings, progress).await
}

/// A Secret of a remote secret's name that meshform did not make.
fn not_ours(ns: &str, name: &str) -> String {
    format!(
        "Secret {ns}/{name} already exists and is not managed by meshform; it was left as it is \
         (delete it, or label it {}=true and apply with --adopt)",
        objects::MULTICLUSTER_LABEL
    )
}

/// A remote secret of meshform's for this mesh that appeared after observe
/// read the namespace: another meshform run wrote it.
fn made_since_observe(ns: &str, name: &str) -> String {
    format!(
        "Secret {ns}/{name} was created by another meshform run after this one read the cluster; it was left as it \
         is: plan and apply again"
    )
}

/// Whether `secret` carries meshform's labels for `mesh`.
fn managed_by_meshform(secret: &Secret, mesh: &str) -> bool {
    let labels = secret.metadata.labels.as_ref();
    let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
    label(objects::MANAGED_BY_LABEL) == Some(objects::MANAGED_BY) && label(objects::MESH_LABEL) == Some(mesh)
}

impl Runner for Run<'_> {
    async fn run(&self, action: &Action) -> Result<Option<String>, String> {
        self.action(action).await
    }
}

impl Run<'_> {
    fn ns(&self) -> &str {
        &self.target.topology.mesh.namespace
    }

    fn mesh(&self) -> &str {
        &self.target.topology.mesh.name
    }

    fn connection(&self, cluster: &str) -> Result<&Connection, String> {
        self.target
            .connections
            .get(cluster)
            .ok_or_else(|| format!("no connection to cluster {cluster}"))
    }

    async fn action(&self, action: &Action) -> Result<Option<String>, String> {
        let cluster = action.cluster.as_str();
        let connection = self.connection(cluster)?;
        let client = connection.client.clone();
        let ns = self.ns();
        match &action.kind {
            ActionKind::DeleteRemoteSecret { name, precondition, .. } => {
                self.delete(cluster, &Api::<Secret>::namespaced(client, ns), name, precondition)
                    .await
            }
            ActionKind::SetNetwork {
                network,
                control_plane,
                force,
                restart_owed,
                ..
            } => {
                // Label and annotations in one apply: an apply without a field
                // meshform applied before would remove it, and the restart a
                // relabel owes is recorded by the write that relabels.
                let api: Api<Namespace> = Api::all(client);
                let namespace = build::network_label(ns, network, control_plane.as_deref(), restart_owed.as_deref());
                self.ssa(cluster, &api, ns, &namespace, *force).await
            }
            ActionKind::EnsureReader {
                spec_hash,
                scope,
                force,
                ..
            } => {
                let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
                let roles: Api<ClusterRole> = Api::all(client.clone());
                let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
                let role = scope.cluster_role(ns);
                let account = build::reader_account(ns, self.mesh(), *scope);
                let role_object = build::reader_role(ns, self.mesh(), spec_hash, *scope);
                let binding = build::reader_binding(ns, self.mesh(), spec_hash, *scope);
                // Three independent objects, written at once (a binding may
                // name a role that does not exist yet). Istio's charts may
                // have made the account already: use it, never touch it.
                let (account, role, binding) = tokio::try_join!(
                    self.create(cluster, &accounts, &account),
                    self.ssa(cluster, &roles, &role, &role_object, *force),
                    self.ssa(cluster, &bindings, &role, &binding, *force),
                )?;
                // An account that exists is used as it is, whoever made it.
                let account = match account {
                    Created::New(diff) => diff,
                    Created::Existing(_) => None,
                };
                let mut diffs = vec![account, role, binding];
                if self.target.topology.mesh.tokens.mode == TokenMode::Secret {
                    // The token controller fills this Secret for an account that exists: after it.
                    let secrets: Api<Secret> = Api::namespaced(client, ns);
                    let token_secret = build::reader_token_secret(ns, self.mesh(), *scope);
                    diffs.push(
                        self.ssa(cluster, &secrets, scope.token_secret(), &token_secret, false)
                            .await?,
                    );
                }
                Ok(join_diffs(diffs))
            }
            ActionKind::EnsureGateway {
                port, spec_hash, force, ..
            } => {
                let api: Api<DynamicObject> = Api::namespaced_with(client, ns, &objects::gateway_resource());
                let gateway = build::cross_network_gateway(ns, self.mesh(), *port, spec_hash);
                self.ssa(cluster, &api, objects::CROSS_NETWORK_GATEWAY, &gateway, *force)
                    .await
            }
            ActionKind::EnsureIstiodExposure {
                revision,
                spec_hash,
                force,
                ..
            } => {
                let gateways: Api<DynamicObject> =
                    Api::namespaced_with(client.clone(), ns, &objects::gateway_resource());
                let routes: Api<DynamicObject> = Api::namespaced_with(client, ns, &objects::virtual_service_resource());
                let (gateway, route) = build::istiod_exposure(ns, self.mesh(), revision.as_deref(), spec_hash);
                let (gateway, route) = tokio::try_join!(
                    self.ssa(cluster, &gateways, objects::ISTIOD_GATEWAY, &gateway, *force),
                    self.ssa(cluster, &routes, objects::ISTIOD_VIRTUAL_SERVICE, &route, *force),
                )?;
                Ok(join_diffs(vec![gateway, route]))
            }
            ActionKind::DeleteIstiodExposure {
                gateway,
                virtual_service,
            } => {
                let gateways: Api<DynamicObject> =
                    Api::namespaced_with(client.clone(), ns, &objects::gateway_resource());
                let routes: Api<DynamicObject> = Api::namespaced_with(client, ns, &objects::virtual_service_resource());
                let mut diffs = Vec::new();
                if let Some(precondition) = virtual_service {
                    diffs.push(
                        self.delete(cluster, &routes, objects::ISTIOD_VIRTUAL_SERVICE, precondition)
                            .await?,
                    );
                }
                if let Some(precondition) = gateway {
                    diffs.push(
                        self.delete(cluster, &gateways, objects::ISTIOD_GATEWAY, precondition)
                            .await?,
                    );
                }
                Ok(join_diffs(diffs))
            }
            ActionKind::DeleteGateway { precondition } => {
                let api: Api<DynamicObject> = Api::namespaced_with(client, ns, &objects::gateway_resource());
                self.delete(cluster, &api, objects::CROSS_NETWORK_GATEWAY, precondition)
                    .await
            }
            ActionKind::WriteRemoteSecret {
                peer,
                name,
                server,
                account,
                mode,
                spec_hash,
                precondition,
                // Consent the plan recorded; how apply forces is below.
                force: _,
            } => {
                let peer_connection = self.connection(peer)?;
                let identity = self
                    .target
                    .observed
                    .facts(peer)
                    .map(|f| f.identity.clone())
                    .ok_or_else(|| format!("cluster {peer} was not observed"))?;
                let api: Api<Secret> = Api::namespaced(client, ns);
                // Observe, run after the lock was taken, saw every Secret name of
                // the namespace: a hand-made one of this name fails here, before a
                // token is minted for it.
                if *mode == WriteMode::Create {
                    let facts = self
                        .target
                        .observed
                        .facts(cluster)
                        .ok_or_else(|| format!("cluster {cluster} was not observed"))?;
                    if facts.unlabelled_secrets.contains(name) {
                        return Err(not_ours(ns, name));
                    }
                }
                let minted = self.token(cluster, peer, *account).await?;
                let endpoint = build::PeerEndpoint {
                    server,
                    ca_pem: peer_connection.ca_pem.as_deref(),
                    tls_server_name: peer_connection.tls_server_name.as_deref(),
                    skip_tls_verify: peer_connection.insecure == Some(crate::access::SKIPS_TLS_VERIFY),
                };
                let kubeconfig = build::peer_kubeconfig(peer, &endpoint, &minted.token);
                let secret = build::RemoteSecret {
                    namespace: ns,
                    mesh: self.mesh(),
                    name,
                    peer,
                    peer_identity: &identity,
                    spec_hash,
                    resource_version: precondition.as_ref().map(|p| p.resource_version.as_str()),
                }
                .build(&kubeconfig);
                match mode {
                    // A create, not server-side apply: it never merges into a
                    // Secret of this name made since observe (a second data key is
                    // a second cluster id to Istio), and it costs the API server
                    // about half of what applying a new object does (BENCHMARKS.md).
                    // Refused, the token it carried is revoked at once: no binding
                    // Secret is left standing for a token nobody holds.
                    WriteMode::Create if !self.settings.dry_run => match self.create(cluster, &api, &secret).await? {
                        Created::New(diff) => Ok(diff),
                        // This create, committed by an attempt answered with a
                        // timeout: it holds the token just minted, which must
                        // live on.
                        Created::Existing(existing) if existing.data == secret.data => Ok(self
                            .wants_diff()
                            .then(|| diff::unified(None, serde_json::to_value(&existing).ok().as_ref()))),
                        // Someone else's: the token minted for it is held by
                        // nobody, and is revoked at once.
                        Created::Existing(existing) => {
                            let why = if managed_by_meshform(&existing, self.mesh()) {
                                made_since_observe(ns, name)
                            } else {
                                not_ours(ns, name)
                            };
                            Err(match self.discard(peer, &minted).await {
                                Ok(()) => why,
                                Err(e) => format!("{why}; the reader token minted for it could not be revoked: {e}"),
                            })
                        }
                    },
                    // A dry run persists no delete of an earlier phase, and a
                    // re-attach deletes a secret before creating one of the same
                    // name: the dry run checks the body by server-side apply,
                    // which validates the same object and shows what replaces what.
                    // Forced, as a create takes no field from anyone.
                    WriteMode::Create => self.ssa(cluster, &api, name, &secret, true).await,
                    // Adoption takes the fields over from whoever wrote them
                    // (istioctl, kubectl). An update or rotation forces too: the
                    // fields a create set belong to meshform's "Update" entry in
                    // managedFields, which server-side apply counts as another
                    // manager. It takes nothing from anyone else: the plan blocked
                    // on every field another manager owns (unless
                    // --force-conflicts), and the resourceVersion the Secret
                    // carries fails the write if it changed since.
                    WriteMode::Update | WriteMode::Rotate => self.ssa(cluster, &api, name, &secret, true).await,
                    WriteMode::Adopt => {
                        // Observe named the copies this secret carries.
                        let copies = self
                            .target
                            .observed
                            .facts(cluster)
                            .and_then(|f| f.remote_secrets.get(name))
                            .map(|s| s.object_copies.clone())
                            .unwrap_or_default();
                        self.adopt(cluster, &api, name, secret, &copies).await
                    }
                }
            }
            // execute() never hands a restart the plan did not enable to here.
            ActionKind::RestartWorkloads { .. } => self.restart(cluster, client).await,
            ActionKind::RestartIstiod { deployments, .. } => self.restart_istiod(cluster, client, deployments).await,
            ActionKind::WriteCaCerts {
                mode,
                root_sha256,
                previous_root_sha256,
                lifetime_seconds,
                precondition,
                ..
            } => {
                self.write_ca_certs(
                    cluster,
                    client,
                    *mode,
                    (root_sha256, previous_root_sha256.as_deref()),
                    *lifetime_seconds,
                    precondition.as_ref(),
                )
                .await
            }
            ActionKind::SetGatewayNetwork {
                service,
                network,
                force,
                ..
            } => {
                let api: Api<Service> = Api::namespaced(client, ns);
                self.ssa(
                    cluster,
                    &api,
                    service,
                    &build::gateway_network_label(ns, service, network),
                    *force,
                )
                .await
            }
            ActionKind::SetK8sGatewayNetwork {
                gateway,
                network,
                force,
                ..
            } => {
                let api: Api<DynamicObject> = Api::namespaced_with(client, ns, &objects::k8s_gateway_resource());
                self.ssa(
                    cluster,
                    &api,
                    gateway,
                    &build::k8s_gateway_network_label(ns, gateway, network),
                    *force,
                )
                .await
            }
            ActionKind::EnsureAmbientGateway {
                network,
                spec_hash,
                force,
                ..
            } => {
                let api: Api<DynamicObject> = Api::namespaced_with(client, ns, &objects::k8s_gateway_resource());
                let gateway = build::ambient_gateway(ns, self.mesh(), network, spec_hash);
                self.ssa(cluster, &api, objects::AMBIENT_EAST_WEST_GATEWAY, &gateway, *force)
                    .await
            }
            ActionKind::DeleteAmbientGateway { precondition } => {
                let api: Api<DynamicObject> = Api::namespaced_with(client, ns, &objects::k8s_gateway_resource());
                self.delete(cluster, &api, objects::AMBIENT_EAST_WEST_GATEWAY, precondition)
                    .await
            }
            ActionKind::RevokeReaderTokens { name, precondition, .. } => {
                self.delete(cluster, &Api::<Secret>::namespaced(client, ns), name, precondition)
                    .await
            }
        }
    }
}
