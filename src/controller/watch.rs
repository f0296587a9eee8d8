//! The controller's wake-up on change: per cluster, kube's `watcher` on what
//! observe reads (`observe/mod.rs`), in the mesh namespace and the few
//! cluster-scoped objects meshform owns, each narrowed by a field or label
//! selector where the API allows, so that an idle mesh sends no event at all.
//!
//! A watch is only a trigger: it holds no store and judges nothing, and the
//! round it wakes observes afresh (one read path, one truth). Every watch is
//! of metadata only (`PartialObjectMetadata`: the API server sends no data,
//! no spec, no status), so no Secret's data, token or key is ever held.
//! Changes are debounced ([`Debounce`]) so a burst (a person's apply, the
//! controller's own writes) costs one round. A cluster whose watches fail
//! backs off (kube's `default_backoff`, client-go's) and stops no other.

use std::collections::HashMap;
use std::fmt::Debug;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DynamicObject};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Config, Event};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::access::{Connections, Sources};
use crate::objects;
use crate::topology::Topology;

/// How long a watch lasts before it is renewed from where it left off (no
/// list). kube's default is 290 s; an idle controller then sends a request
/// per watch every five minutes. The API server honours a longer one, and a
/// dead connection is found by the HTTP/2 and TCP keepalive meanwhile
/// (`access/transport.rs`), not by the watch's end.
const WATCH_SECONDS: u32 = 1800;

/// A kind the cluster does not serve (no Gateway API CRDs, no Istio CRDs):
/// looked for again this rarely rather than at the backoff's 30 s.
const NOT_SERVED_RETRY: Duration = Duration::from_secs(600);

/// At most this many changes are named in a round's report.
const NAMED: usize = 8;

/// One change seen by a watch: a cluster and an object, never its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub cluster: String,
    /// `Kind namespace/name`, or `Kind (relisted)` when a watch had to list
    /// again and may have missed changes.
    pub object: String,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.cluster, self.object)
    }
}

/// The watches of every cluster of one topology; dropped, they stop.
pub struct Watches {
    tasks: Vec<JoinHandle<()>>,
    changes: mpsc::Receiver<Change>,
    /// Clusters with watches running (the others had no client).
    watched: usize,
}

impl Drop for Watches {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Watches {
    /// Starts the watches of every cluster with a client; a cluster whose
    /// kubeconfig cannot be used has none (its rounds defer it) until the
    /// next [`Watches::start`].
    pub async fn start(topology: &Topology, sources: &Sources) -> Watches {
        let connections = Connections::open(topology, sources).await;
        // Bounded: when it is full a round is owed anyway, and what is
        // dropped is only its name.
        let (sender, changes) = mpsc::channel(256);
        let mut tasks = Vec::new();
        for connection in connections.ready() {
            let scope = Scope {
                client: connection.client.clone(),
                cluster: connection.cluster.clone(),
                namespace: topology.mesh.namespace.clone(),
                sender: sender.clone(),
            };
            scope.spawn_all(&mut tasks);
        }
        Watches {
            tasks,
            changes,
            watched: connections.ready().count(),
        }
    }

    /// Clusters watched.
    pub fn watched(&self) -> usize {
        self.watched
    }

    /// The next change; never returns while there are no watches.
    pub async fn next(&mut self) -> Change {
        match self.changes.recv().await {
            Some(change) => change,
            None => std::future::pending().await,
        }
    }
}

/// Changes seen since the last round began, and when the round they owe is due:
/// after `quiet` with no new change, or `max` after the first, whichever is
/// sooner (a steady trickle still gets its round).
#[derive(Debug)]
pub struct Debounce {
    quiet: Duration,
    max: Duration,
    first: Option<Instant>,
    last: Option<Instant>,
    named: Vec<String>,
}

impl Debounce {
    pub fn new(quiet: Duration, max: Duration) -> Debounce {
        Debounce {
            quiet,
            max,
            first: None,
            last: None,
            named: Vec::new(),
        }
    }

    pub fn record(&mut self, change: &Change, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
        let named = change.to_string();
        if self.named.len() < NAMED && !self.named.contains(&named) {
            self.named.push(named);
        }
    }

    /// When the owed round is due; `None`: no change seen.
    pub fn due(&self) -> Option<Instant> {
        Some((self.last? + self.quiet).min(self.first? + self.max))
    }

    /// A round begins: what it observes includes every change so far. The
    /// changes it answers are returned, by name.
    pub fn take(&mut self) -> Vec<String> {
        self.first = None;
        self.last = None;
        std::mem::take(&mut self.named)
    }
}

/// One cluster's watches: where they send and what they share.
struct Scope {
    client: kube::Client,
    cluster: String,
    namespace: String,
    sender: mpsc::Sender<Change>,
}

/// What of an object's change wakes the controller.
#[derive(Clone, Copy)]
enum Wake {
    /// Any change (labels, annotations, content, status).
    Any,
    /// A change of its spec (`metadata.generation`), its labels or its
    /// annotations, or its creation or deletion: a workload's status changes
    /// with every pod, and observe reads only its spec.
    Spec,
}

impl Scope {
    fn spawn_all(self, tasks: &mut Vec<JoinHandle<()>>) {
        let ns = self.namespace.clone();
        let by_name = |name: &str| Config::default().fields(&format!("metadata.name={name}"));
        let by_label = |selector: &str| Config::default().labels(selector);
        let all = Config::default;
        let client = || self.client.clone();
        let mut spawn = |task| tasks.push(task);
        // The mesh namespace (network label, control-plane annotation).
        spawn(self.spawn("Namespace", Api::<Namespace>::all(client()), by_name(&ns), Wake::Any));
        // Remote secrets, reader token Secrets, binding Secrets, cacerts and
        // unlabelled Secrets of a remote secret's name: every Secret of the
        // namespace, metadata only.
        spawn(self.spawn("Secret", Api::<Secret>::namespaced(client(), &ns), all(), Wake::Any));
        // By name, as observe GETs them: so RBAC grants list and watch of
        // these names only (a metadata.name field selector is authorized as
        // the name: `requestinfo.go` in k8s.io/apiserver), not of every one.
        for name in [objects::READER_SERVICE_ACCOUNT, objects::CONTROL_PLANE_SERVICE_ACCOUNT] {
            let accounts = Api::<ServiceAccount>::namespaced(client(), &ns);
            spawn(self.spawn("ServiceAccount", accounts, by_name(name), Wake::Any));
        }
        // The gateway Services (named per network) and a remote install's istiod Service.
        spawn(self.spawn("Service", Api::<Service>::namespaced(client(), &ns), all(), Wake::Any));
        for role in [
            objects::reader_cluster_role(&ns),
            objects::control_plane_cluster_role(&ns),
        ] {
            spawn(self.spawn(
                "ClusterRole",
                Api::<ClusterRole>::all(client()),
                by_name(&role),
                Wake::Any,
            ));
            let bindings = Api::<ClusterRoleBinding>::all(client());
            spawn(self.spawn("ClusterRoleBinding", bindings, by_name(&role), Wake::Any));
        }
        // Istio's by name too; Gateway API Gateways have any name.
        for (kind, resource, config) in [
            (
                "Gateway",
                objects::gateway_resource(),
                by_name(objects::CROSS_NETWORK_GATEWAY),
            ),
            ("Gateway", objects::gateway_resource(), by_name(objects::ISTIOD_GATEWAY)),
            (
                "VirtualService",
                objects::virtual_service_resource(),
                by_name(objects::ISTIOD_VIRTUAL_SERVICE),
            ),
            (
                "Gateway.gateway.networking.k8s.io",
                objects::k8s_gateway_resource(),
                all(),
            ),
        ] {
            let api = Api::<DynamicObject>::namespaced_with(client(), &ns, &resource);
            spawn(self.spawn(kind, api, config, Wake::Any));
        }
        let deployments = Api::<Deployment>::namespaced(client(), &ns);
        spawn(self.spawn(
            "Deployment",
            deployments,
            by_label(objects::ISTIOD_SELECTOR),
            Wake::Spec,
        ));
        let daemonsets = Api::<DaemonSet>::namespaced(client(), &ns);
        spawn(self.spawn("DaemonSet", daemonsets, by_name(objects::ZTUNNEL), Wake::Spec));
        let installs = by_label(objects::INSTALL_CONFIGMAP_SELECTOR);
        spawn(self.spawn(
            "ConfigMap",
            Api::<ConfigMap>::namespaced(client(), &ns),
            installs,
            Wake::Any,
        ));
        let root = by_name(objects::ROOT_CERT_CONFIGMAP);
        spawn(self.spawn(
            "ConfigMap",
            Api::<ConfigMap>::namespaced(client(), &ns),
            root,
            Wake::Any,
        ));
        let slices = Api::<EndpointSlice>::namespaced(client(), &ns);
        let remote_istiod = by_label(objects::REMOTE_ISTIOD_SLICE_SELECTOR);
        spawn(self.spawn("EndpointSlice", slices, remote_istiod, Wake::Any));
    }

    fn spawn<K>(&self, kind: &str, api: Api<K>, config: Config, wake: Wake) -> JoinHandle<()>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        let config = config.timeout(WATCH_SECONDS);
        let to = (self.cluster.clone(), kind.to_string(), self.sender.clone());
        tokio::spawn(watch(api, config, wake, to))
    }
}

/// Runs one watch until its task is aborted.
async fn watch<K>(
    api: Api<K>,
    config: Config,
    wake: Wake,
    (cluster, kind, sender): (String, String, mpsc::Sender<Change>),
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    // Metadata only: what `metadata_watcher` asks for (PartialObjectMetadata).
    // kube deprecates it for `Api<PartialObjectMeta<K>>`, which needs a
    // DynamicType per kind; this one takes the typed and dynamic Apis alike.
    #[allow(deprecated)]
    let stream = kube::runtime::metadata_watcher(api, config).default_backoff();
    let mut stream = std::pin::pin!(stream);
    // Generation per object (by uid), for `Wake::Spec`.
    let mut seen: HashMap<String, (Option<i64>, u64)> = HashMap::new();
    let mut listed = false;
    let mut failing = false;
    let send = |object: String| {
        // Full: a round is owed already; closed: the controller is stopping.
        let _ = sender.try_send(Change {
            cluster: cluster.clone(),
            object,
        });
    };
    let named = |o: &PartialObjectMeta<K>| match o.namespace() {
        Some(ns) => format!("{kind} {ns}/{}", o.name_any()),
        None => format!("{kind} {}", o.name_any()),
    };
    while let Some(item) = stream.next().await {
        let event = match item {
            Ok(event) => event,
            Err(error) => {
                let not_served =
                    matches!(&error, watcher::Error::InitialListFailed(kube::Error::Api(s)) if s.code == 404);
                if !failing {
                    // Names the kind and kube's message only: no credentials.
                    tracing::warn!(%cluster, %kind, %error, "watch failed; retrying with backoff");
                }
                failing = true;
                if not_served {
                    tokio::time::sleep(NOT_SERVED_RETRY).await;
                }
                continue;
            }
        };
        if failing {
            tracing::info!(%cluster, %kind, "watching again");
            failing = false;
        }
        match event {
            Event::Init => seen.clear(),
            Event::InitApply(object) => {
                seen.insert(object.uid().unwrap_or_default(), fingerprint(&object));
            }
            Event::InitDone => {
                // The first list is what the start round observes; a later
                // one (the watch's history expired) may hide a change.
                if listed {
                    send(format!("{kind} (listed again)"));
                }
                listed = true;
            }
            Event::Apply(object) => {
                let now = fingerprint(&object);
                let before = seen.insert(object.uid().unwrap_or_default(), now);
                let changed = match wake {
                    Wake::Any => true,
                    Wake::Spec => before != Some(now),
                };
                if changed {
                    send(named(&object));
                }
            }
            Event::Delete(object) => {
                seen.remove(&object.uid().unwrap_or_default());
                send(named(&object));
            }
        }
    }
}

/// What of an object `Wake::Spec` compares: its generation, and a hash of its
/// labels and annotations (a relabel bumps no generation).
fn fingerprint<K>(object: &PartialObjectMeta<K>) -> (Option<i64>, u64) {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    object.metadata.labels.hash(&mut hasher);
    object.metadata.annotations.hash(&mut hasher);
    (object.metadata.generation, hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(object: &str) -> Change {
        Change {
            cluster: "east".into(),
            object: object.into(),
        }
    }

    #[test]
    fn a_burst_is_one_round_after_quiet_and_a_trickle_is_capped() {
        let mut debounce = Debounce::new(Duration::from_secs(1), Duration::from_secs(10));
        assert_eq!(debounce.due(), None, "no change, no round");
        let start = Instant::now();
        debounce.record(&change("Secret a"), start);
        debounce.record(&change("Secret a"), start + Duration::from_millis(300));
        assert_eq!(debounce.due(), Some(start + Duration::from_millis(1300)));
        // A change every half second: due at most 10 s after the first.
        for i in 2..40 {
            debounce.record(&change("Service b"), start + Duration::from_millis(500 * i));
        }
        assert_eq!(debounce.due(), Some(start + Duration::from_secs(10)));
        assert_eq!(debounce.take(), ["east Secret a", "east Service b"], "named once each");
        assert_eq!(debounce.due(), None);
    }
}
