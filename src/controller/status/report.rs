//! What the controller writes about itself in its own cluster and
//! namespace (its home, where its leader-election Lease is): Kubernetes
//! Events regarding that Lease, and the status ConfigMap
//! `meshform-status-<mesh>`. A task of its own does the writing, so a slow
//! or unreachable home never holds up a round; a write that fails is
//! logged and the next one tried. It writes names, codes and counts only,
//! never Secret data.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::runtime::events::{Event, Recorder, Reporter};
use tokio::sync::mpsc;

use crate::access::{Connections, Sources};
use crate::controller::Election;
use crate::topology::Topology;

/// The field manager of the status ConfigMap, and the Events' reporting controller.
pub const MANAGER: &str = "meshform-controller";

/// The status ConfigMap's name.
pub fn status_name(mesh: &str) -> String {
    format!("meshform-status-{mesh}")
}

pub enum Note {
    /// The topology to reach the home cluster with (its kubeconfig).
    Topology(Box<Topology>),
    Event(Event),
    /// The status object's data; written if it differs from the last written.
    Status {
        mesh: String,
        data: BTreeMap<String, String>,
    },
}

/// Starts the writer; it ends when the sender is dropped.
pub fn spawn(home: Election, sources: Sources) -> mpsc::UnboundedSender<Note> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(work(rx, home, sources));
    tx
}

/// `home` is where the controller lives: its election's cluster and
/// namespace; Events are about its Lease.
async fn work(mut notes: mpsc::UnboundedReceiver<Note>, home: Election, sources: Sources) {
    let mut client: Option<kube::Client> = None;
    let mut recorder: Option<Recorder> = None;
    let mut written: Option<BTreeMap<String, String>> = None;
    let mut regarding = ObjectReference::default();
    while let Some(note) = notes.recv().await {
        match note {
            Note::Topology(topology) => {
                regarding = ObjectReference {
                    api_version: Some("coordination.k8s.io/v1".into()),
                    kind: Some("Lease".into()),
                    name: Some(home.lease(&topology.mesh.name)),
                    namespace: Some(home.namespace.clone()),
                    ..ObjectReference::default()
                };
                let connections = Connections::open(&topology, &sources).await;
                client = match connections.cluster(&home.cluster) {
                    Some(Ok(connection)) => Some(connection.client.clone()),
                    Some(Err(e)) => {
                        tracing::warn!(cluster = %home.cluster, error = %e, "no Events or status object: the home cluster cannot be reached");
                        None
                    }
                    None => None,
                };
                recorder = client.clone().map(|c| {
                    Recorder::new(
                        c,
                        Reporter {
                            controller: MANAGER.into(),
                            // The hostname: the pod's name in a Deployment.
                            instance: None,
                        },
                    )
                });
            }
            Note::Event(event) => {
                if let Some(recorder) = &recorder
                    && let Err(e) = recorder.publish(&event, &regarding).await
                {
                    tracing::warn!(reason = %event.reason, error = %e, "cannot publish an Event");
                }
            }
            Note::Status { mesh, data } => {
                let Some(client) = &client else { continue };
                if written.as_ref() == Some(&data) {
                    continue;
                }
                let object = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(status_name(&mesh)),
                        labels: Some(BTreeMap::from([(
                            "app.kubernetes.io/managed-by".to_string(),
                            "meshform".to_string(),
                        )])),
                        ..ObjectMeta::default()
                    },
                    data: Some(data.clone()),
                    ..ConfigMap::default()
                };
                let api = Api::<ConfigMap>::namespaced(client.clone(), &home.namespace);
                match api
                    .patch(
                        &status_name(&mesh),
                        &PatchParams::apply(MANAGER).force(),
                        &Patch::Apply(&object),
                    )
                    .await
                {
                    Ok(_) => written = Some(data),
                    Err(e) => tracing::warn!(error = %e, "cannot write the status ConfigMap"),
                }
            }
        }
    }
}
