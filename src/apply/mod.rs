//! Executing a plan on the clusters.
//!
//! Phase by phase, in the plan's order; actions of one phase run
//! concurrently up to a limit; a failure lets the running phase finish and
//! starts no further phase. Every write is server-side apply with field
//! manager `meshform` (so a second apply of the same content changes
//! nothing), every delete carries the UID and resourceVersion the plan saw.
//! Tokens come from the TokenRequest API, each bound to a binding Secret
//! made for it in the peer, and exist only in memory and in the remote
//! secret they are written to.
//!
//! Apply does what the plan says and nothing else: what to write, in which
//! order and with which preconditions all come from the plan. Its clients
//! come from [`crate::access`]; what it did is reported as [`Event`]s and a
//! [`Report`], which apply never prints.

pub mod build;
pub mod diff;
pub mod lock;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use futures::StreamExt;
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
use crate::objects::{self, FIELD_MANAGER};
use crate::observe::model::Observed;
use crate::plan::{Action, ActionKind, Fingerprints, Phase, Plan, Precondition, WriteMode};
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
    /// The clusters changed since the plan was made.
    #[error("plan is stale: {}", .0.join("; "))]
    #[diagnostic(
        code(meshform::apply::stale),
        help("run `meshform plan` again and apply the new plan")
    )]
    Stale(Vec<String>),
}

/// Checks that need no cluster: blockers and consent to detach.
pub fn preflight(plan: &Plan, allow_detach: bool) -> Result<(), Refusal> {
    let blockers = plan.blockers().count();
    if blockers > 0 {
        return Err(Refusal::Blocked(blockers));
    }
    let mut detached: Vec<&str> = plan
        .actions
        .iter()
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

/// What changed between a plan's fingerprints and the clusters now.
pub fn staleness(planned: &Fingerprints, now: &Fingerprints) -> Vec<String> {
    let mut changes = Vec::new();
    if planned.topology_sha256 != now.topology_sha256 {
        changes.push("mesh.toml has changed".to_string());
    }
    for (key, before) in &planned.observed {
        match now.observed.get(key) {
            None => changes.push(format!("{key} was deleted")),
            Some(after) if after != before => changes.push(format!("{key} changed ({before} → {after})")),
            Some(_) => {}
        }
    }
    for key in now.observed.keys().filter(|k| !planned.observed.contains_key(*k)) {
        changes.push(format!("{key} was created"));
    }
    changes
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
    /// The apply lock could not be renewed, so no further phase was started.
    pub lock_lost: bool,
}

impl Report {
    pub fn succeeded(&self) -> bool {
        self.failed.is_empty() && !self.lock_lost
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
}

struct Run<'a> {
    target: &'a Target<'a>,
    settings: &'a Settings,
    /// `secret` mode: one legacy token per peer per run, shared by every
    /// primary that needs it. Requested tokens are one per primary and peer.
    tokens: HashMap<&'a str, OnceCell<Result<SecretString, String>>>,
    restart_stamp: String,
}

/// Executes the plan. Stops after the first phase with a failure; the report
/// says what was done, what failed and what was skipped.
pub async fn execute(target: &Target<'_>, settings: &Settings, progress: &dyn Progress) -> Report {
    let tokens = target
        .plan
        .actions
        .iter()
        .filter_map(Action::peer)
        .map(|p| (p, OnceCell::new()))
        .collect();
    let run = Run {
        target,
        settings,
        tokens,
        restart_stamp: jiff::Timestamp::now().to_string(),
    };
    let mut report = Report::default();
    for phase in Phase::ALL {
        let actions: Vec<(usize, &Action)> = target
            .plan
            .actions
            .iter()
            .enumerate()
            .filter(|(_, a)| a.phase == phase)
            .collect();
        if actions.is_empty() {
            continue;
        }
        // Once the lease could not be renewed another apply may hold it:
        // writing on would race it.
        if report.succeeded() && target.lock.is_some_and(lock::Lock::lost) {
            report.lock_lost = true;
        }
        if !report.succeeded() {
            let why = if report.lock_lost {
                "the apply lock was lost (another apply may hold it)"
            } else {
                "an earlier phase failed"
            };
            for (index, action) in actions {
                progress.event(Event::Skipped {
                    index,
                    action,
                    why: why.into(),
                });
                report.skipped.push(index);
            }
            continue;
        }
        progress.event(Event::Phase {
            phase,
            actions: actions.len(),
        });
        // A restart the plan shows without running (planned without
        // --restart-workloads) is reported as skipped, not as done.
        let (actions, shown): (Vec<_>, Vec<_>) = actions.into_iter().partition(|(_, a)| a.writes());
        for (index, action) in shown {
            progress.event(Event::Skipped {
                index,
                action,
                why: "not run: plan or apply with --restart-workloads to restart the injected workloads".into(),
            });
            report.skipped.push(index);
        }
        let phase_started = std::time::Instant::now();
        tracing::info!(?phase, actions = actions.len(), "phase started");
        let results: Vec<(usize, Result<Option<String>, String>)> = futures::stream::iter(actions)
            .map(|(index, action)| {
                let run = &run;
                async move {
                    progress.event(Event::Started { index, action });
                    let started = std::time::Instant::now();
                    let result = run.action(action).await;
                    // The object's name and the outcome only: diffs and errors go to the report.
                    tracing::debug!(
                        cluster = %action.cluster,
                        object = %action.object(&target.plan.namespace),
                        ok = result.is_ok(),
                        elapsed_ms = started.elapsed().as_millis(),
                        "action"
                    );
                    match &result {
                        Ok(diff) => progress.event(Event::Done {
                            index,
                            action,
                            dry_run: settings.dry_run,
                            diff: diff.clone(),
                        }),
                        Err(error) => progress.event(Event::Failed {
                            index,
                            action,
                            error: error.clone(),
                        }),
                    }
                    (index, result)
                }
            })
            .buffer_unordered(settings.concurrency.max(1))
            .collect()
            .await;
        for (index, result) in results {
            match result {
                Ok(_) => report.done.push(index),
                Err(e) => report.failed.push((index, e)),
            }
        }
        tracing::info!(?phase, elapsed_ms = phase_started.elapsed().as_millis(), "phase done");
    }
    report.done.sort_unstable();
    report.failed.sort_unstable();
    report.skipped.sort_unstable();
    report
}

/// What an API call left behind, for the diff.
type Before = Option<Value>;

fn to_value<T: Serialize>(object: &Option<T>) -> Before {
    object.as_ref().and_then(|o| serde_json::to_value(o).ok())
}

fn preconditions(p: &Precondition) -> DeleteParams {
    DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(p.uid.clone()),
            resource_version: Some(p.resource_version.clone()),
        }),
        ..DeleteParams::default()
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

    fn apply_params(&self, force: bool) -> PatchParams {
        let mut params = PatchParams::apply(FIELD_MANAGER);
        params.force = force;
        params.dry_run = self.settings.dry_run;
        params
    }

    fn delete_params(&self, precondition: &Precondition) -> DeleteParams {
        DeleteParams {
            dry_run: self.settings.dry_run,
            ..preconditions(precondition)
        }
    }

    /// Server-side apply of one object, returning the diff when asked for.
    async fn ssa<K>(
        &self,
        cluster: &str,
        api: &Api<K>,
        name: &str,
        object: &K,
        force: bool,
    ) -> Result<Option<String>, String>
    where
        K: kube::Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    {
        let before = self.live(cluster, api, name).await?;
        let after = api
            .patch(name, &self.apply_params(force), &Patch::Apply(object))
            .await
            .map_err(|e| describe(cluster, &e))?;
        Ok(self
            .wants_diff()
            .then(|| diff::unified(before.as_ref(), serde_json::to_value(&after).ok().as_ref())))
    }

    /// Creates `object` unless something of its name exists: one request
    /// where a read and then a write would take two. `None` when it exists
    /// (and was left as it is), else the diff when asked for.
    async fn create<K>(&self, cluster: &str, api: &Api<K>, object: &K) -> Result<Option<Option<String>>, String>
    where
        K: kube::Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    {
        let params = PostParams {
            dry_run: self.settings.dry_run,
            field_manager: Some(FIELD_MANAGER.to_string()),
        };
        match api.create(&params, object).await {
            Ok(after) => {
                Ok(Some(self.wants_diff().then(|| {
                    diff::unified(None, serde_json::to_value(&after).ok().as_ref())
                })))
            }
            Err(kube::Error::Api(status)) if status.code == 409 && status.reason == "AlreadyExists" => Ok(None),
            Err(e) => Err(describe(cluster, &e)),
        }
    }

    /// The object as it is now, for the diff; nothing is read without one.
    async fn live<K>(&self, cluster: &str, api: &Api<K>, name: &str) -> Result<Before, String>
    where
        K: kube::Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    {
        if !self.wants_diff() {
            return Ok(None);
        }
        Ok(to_value(&api.get_opt(name).await.map_err(|e| describe(cluster, &e))?))
    }

    async fn delete<K>(
        &self,
        cluster: &str,
        api: &Api<K>,
        name: &str,
        precondition: &Precondition,
    ) -> Result<Option<String>, String>
    where
        K: kube::Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    {
        let before = self.live(cluster, api, name).await?;
        match api.delete(name, &self.delete_params(precondition)).await {
            Ok(_) => {}
            // Already gone is what a delete wants.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => return Err(describe(cluster, &e)),
        }
        Ok(self.wants_diff().then(|| diff::unified(before.as_ref(), None)))
    }

    fn wants_diff(&self) -> bool {
        self.settings.diff || self.settings.dry_run
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
                ..
            } => {
                // Label and annotation in one apply: an apply without a field
                // meshform applied before would remove it.
                let api: Api<Namespace> = Api::all(client);
                let namespace = build::network_label(ns, network, control_plane.as_deref());
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
                let role = objects::reader_cluster_role(ns);
                let account = build::reader_account(ns, self.mesh());
                let role_object = build::reader_role(ns, self.mesh(), spec_hash, *scope);
                let binding = build::reader_binding(ns, self.mesh(), spec_hash);
                // Three independent objects, written at once (a binding may
                // name a role that does not exist yet). Istio's charts may
                // have made the account already: use it, never touch it.
                let (account, role, binding) = tokio::try_join!(
                    self.create(cluster, &accounts, &account),
                    self.ssa(cluster, &roles, &role, &role_object, *force),
                    self.ssa(cluster, &bindings, &role, &binding, *force),
                )?;
                let mut diffs = vec![account.flatten(), role, binding];
                if self.target.topology.mesh.tokens.mode == TokenMode::Secret {
                    // The token controller fills this Secret for an account that exists: after it.
                    let secrets: Api<Secret> = Api::namespaced(client, ns);
                    let token_secret = build::reader_token_secret(ns, self.mesh());
                    diffs.push(
                        self.ssa(cluster, &secrets, objects::READER_TOKEN_SECRET, &token_secret, false)
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
                mode,
                spec_hash,
                precondition,
                force,
            } => {
                let peer_connection = self.connection(peer)?;
                let identity = self
                    .target
                    .observed
                    .facts(peer)
                    .map(|f| f.identity.clone())
                    .ok_or_else(|| format!("cluster {peer} was not observed"))?;
                let api: Api<Secret> = Api::namespaced(client, ns);
                // Server-side apply would merge into a hand-made Secret of this name
                // (a second data key is a second cluster id to Istio). Observe, run
                // after the lock was taken, saw every Secret name of the namespace.
                // Not a create instead: fields a create sets belong to an "Update"
                // manager, and later applies of new tokens would conflict with it.
                if *mode == WriteMode::Create {
                    let facts = self
                        .target
                        .observed
                        .facts(cluster)
                        .ok_or_else(|| format!("cluster {cluster} was not observed"))?;
                    if facts.unlabelled_secrets.contains(name) {
                        return Err(format!(
                            "Secret {ns}/{name} already exists and is not managed by meshform; it was left as it is \
                             (delete it, or label it {}=true and apply with --adopt)",
                            objects::MULTICLUSTER_LABEL
                        ));
                    }
                }
                let token = self.token(cluster, peer).await?;
                let kubeconfig = build::peer_kubeconfig(peer, server, peer_connection.ca_pem.as_deref(), &token);
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
                // Adoption takes the fields over from whoever wrote them (istioctl, kubectl).
                self.ssa(cluster, &api, name, &secret, *force || *mode == WriteMode::Adopt)
                    .await
            }
            // execute() never hands a restart the plan did not enable to here.
            ActionKind::RestartWorkloads { .. } => self.restart(cluster, client).await,
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
            ActionKind::RevokeReaderTokens { name, precondition, .. } => {
                self.delete(cluster, &Api::<Secret>::namespaced(client, ns), name, precondition)
                    .await
            }
        }
    }

    /// A reader token of `peer` for `holder`. A requested token is bound to
    /// a binding Secret made for it in the peer, which stands for the holder:
    /// deleting it revokes the token (pkg/serviceaccount/claims.go in
    /// Kubernetes checks that the bound Secret exists with the same UID).
    /// A legacy token is shared by every primary: read once per run.
    async fn token(&self, holder: &str, peer: &str) -> Result<SecretString, String> {
        if self.settings.dry_run {
            // Nothing persists in a dry run, so no credential is minted for it.
            return Ok(SecretString::from("dry-run"));
        }
        let connection = self.connection(peer)?;
        if self.target.topology.mesh.tokens.mode == TokenMode::Secret {
            let cell = self
                .tokens
                .get(peer)
                .ok_or_else(|| format!("no token slot for {peer}"))?;
            return cell.get_or_init(|| legacy_token(connection, self.ns())).await.clone();
        }
        let identity = self
            .target
            .observed
            .facts(holder)
            .map(|f| f.identity.as_str())
            .unwrap_or_default();
        let secrets: Api<Secret> = Api::namespaced(connection.client.clone(), self.ns());
        let binding = secrets
            .create(
                &PostParams {
                    dry_run: false,
                    field_manager: Some(FIELD_MANAGER.to_string()),
                },
                &build::token_binding(self.ns(), self.mesh(), holder, identity),
            )
            .await
            .map_err(|e| {
                format!(
                    "cannot create the token's binding Secret in {peer}: {}",
                    describe(peer, &e)
                )
            })?;
        let accounts: Api<ServiceAccount> = Api::namespaced(connection.client.clone(), self.ns());
        let request = TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: Some(self.target.topology.mesh.tokens.lifetime_seconds as i64),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Secret".into()),
                    name: binding.metadata.name,
                    uid: binding.metadata.uid,
                }),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        let response = accounts
            .create_token_request(objects::READER_SERVICE_ACCOUNT, &PostParams::default(), &request)
            .await
            .map_err(|e| format!("cannot get a reader token from {peer}: {}", describe(peer, &e)))?;
        response
            .status
            .map(|s| SecretString::from(s.token))
            .ok_or_else(|| format!("{peer} answered the token request without a token"))
    }

    /// `kubectl rollout restart` for every injected workload: a new
    /// pod-template annotation makes the controllers replace the pods.
    async fn restart(&self, cluster: &str, client: kube::Client) -> Result<Option<String>, String> {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let mut injected = BTreeSet::new();
        for selector in ["istio-injection=enabled", "istio.io/rev"] {
            let list = namespaces
                .list(&ListParams::default().labels(selector))
                .await
                .map_err(|e| describe(cluster, &e))?;
            for ns in list.items {
                if let Some(name) = ns.metadata.name {
                    injected.insert(name);
                }
            }
        }
        let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": self.restart_stamp
        }}}}});
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            dry_run: self.settings.dry_run,
            ..PatchParams::default()
        };
        let mut restarted = Vec::new();
        for ns in &injected {
            restarted.extend(restart_all::<Deployment>(cluster, &client, ns, &patch, &params).await?);
            restarted.extend(restart_all::<StatefulSet>(cluster, &client, ns, &patch, &params).await?);
            restarted.extend(restart_all::<DaemonSet>(cluster, &client, ns, &patch, &params).await?);
        }
        Ok(Some(if restarted.is_empty() {
            "no injected workloads to restart".to_string()
        } else {
            format!("restarted {}", restarted.join(", "))
        }))
    }
}

async fn restart_all<K>(
    cluster: &str,
    client: &kube::Client,
    ns: &str,
    patch: &Value,
    params: &PatchParams,
) -> Result<Vec<String>, String>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let mut names = Vec::new();
    for object in api
        .list(&ListParams::default())
        .await
        .map_err(|e| describe(cluster, &e))?
        .items
    {
        let name = object.meta().name.clone().unwrap_or_default();
        api.patch(&name, params, &Patch::Merge(patch))
            .await
            .map_err(|e| describe(cluster, &e))?;
        names.push(format!("{}/{ns}/{name}", K::kind(&())));
    }
    Ok(names)
}

/// The token the token controller put into the reader's legacy Secret; it
/// may take a moment after the Secret is created.
async fn legacy_token(connection: &Connection, ns: &str) -> Result<SecretString, String> {
    let secrets: Api<Secret> = Api::namespaced(connection.client.clone(), ns);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let secret = secrets
            .get_opt(objects::READER_TOKEN_SECRET)
            .await
            .map_err(|e| describe(&connection.cluster, &e))?;
        let token = secret
            .as_ref()
            .and_then(|s| s.data.as_ref())
            .and_then(|d| d.get("token"));
        if let Some(token) = token.and_then(|t| String::from_utf8(t.0.clone()).ok()) {
            return Ok(SecretString::from(token));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "Secret {ns}/{} in {} has no token after 30s: is the token controller running?",
                objects::READER_TOKEN_SECRET,
                connection.cluster
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A failed API call in the report's words. kube's text of an API error
/// ends in a debug dump of the whole Status; two cases get words of their own:
/// a server-side apply conflict names the fields and the field manager that
/// owns them, with what to do (meshform never forces a field another manager
/// applied), and a timeout says which cluster did not answer, and which flag
/// sets how long meshform waits.
fn describe(cluster: &str, error: &kube::Error) -> String {
    if let kube::Error::Api(status) = error {
        let conflicts: Vec<String> = status
            .details
            .iter()
            .flat_map(|d| &d.causes)
            .filter(|c| c.reason == "FieldManagerConflict")
            .map(|c| format!("{} ({})", c.field, c.message))
            .collect();
        if status.code == 409 && !conflicts.is_empty() {
            return format!(
                "another field manager owns what meshform would write: {}; meshform does not take fields over \
                 from other managers: have that manager stop setting the field (or remove it there), then apply again",
                conflicts.join(", ")
            );
        }
    }
    if is_timeout(error) {
        return format!(
            "timed out: the API server of {cluster} did not answer within --timeout ({})",
            error_chain(error)
        );
    }
    error_chain(error)
}

fn join_diffs(diffs: Vec<Option<String>>) -> Option<String> {
    let parts: Vec<String> = diffs.into_iter().flatten().filter(|d| !d.is_empty()).collect();
    (!parts.is_empty()).then(|| parts.join("\n"))
}

#[cfg(test)]
mod tests {
    use kube::core::Status;
    use kube::core::response::{StatusCause, StatusDetails};

    use super::*;

    // Regression: a 409 from server-side apply read "ApiError: Apply failed with 1 conflict: ... (Status { ... })",
    // a debug dump, with no word on what to do.
    #[test]
    fn a_field_manager_conflict_names_the_field_the_manager_and_the_fix() {
        let status = Status {
            code: 409,
            reason: "Conflict".into(),
            message: "Apply failed with 1 conflict: conflict with \"helm\": .metadata.labels.topology.istio.io/network"
                .into(),
            details: Some(StatusDetails {
                name: String::new(),
                group: String::new(),
                kind: String::new(),
                uid: String::new(),
                causes: vec![StatusCause {
                    reason: "FieldManagerConflict".into(),
                    message: "conflict with \"helm\"".into(),
                    field: ".metadata.labels.topology.istio.io/network".into(),
                }],
                retry_after_seconds: 0,
            }),
            ..Status::default()
        };
        let text = describe("west", &kube::Error::Api(Box::new(status)));
        assert_eq!(
            text,
            "another field manager owns what meshform would write: .metadata.labels.topology.istio.io/network \
             (conflict with \"helm\"); meshform does not take fields over from other managers: have that manager \
             stop setting the field (or remove it there), then apply again"
        );
        assert!(!text.contains("Status {"), "{text}");
    }

    // Regression: a request slower than --timeout failed with "ServiceError: client error (SendRequest):
    // connection error: timed out", which did not say which setting had run out.
    #[test]
    fn a_timeout_says_so_and_names_the_flag() {
        let timed_out = std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out");
        let text = describe("north", &kube::Error::Service(Box::new(timed_out)));
        assert_eq!(
            text,
            "timed out: the API server of north did not answer within --timeout (ServiceError: timed out)"
        );
    }

    #[test]
    fn other_errors_keep_their_chain() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        assert_eq!(
            describe("north", &kube::Error::Service(Box::new(refused))),
            "ServiceError: connection refused"
        );
    }
}
