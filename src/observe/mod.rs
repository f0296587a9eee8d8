//! Reading the clusters of a topology, all at once, through the clients
//! [`crate::access`] opened. Observe only reads and records: it writes
//! nothing and judges nothing (what is wrong is plan's to say).
//!
//! Each cluster costs the same small, fixed number of API requests however
//! large the mesh is: GETs of named objects, one LIST of remote secrets by
//! label, one LIST of the mesh namespace's Secret metadata (names, labels
//! and annotations only: the API server sends no data), one LIST of the
//! metadata of the binding Secrets reader tokens are bound to, by label,
//! one LIST of the mesh namespace's Services (the east-west gateway's, and a
//! remote install's `istiod` Service), three LISTs of the Istio install by
//! label (a revision's objects carry names meshform cannot know; see
//! [`istio`]), and one LIST of the Gateway API
//! Gateways of the mesh namespace ([`gateway_api`]; a 404, the CRDs not
//! served, is a fact, not an error). A cluster that cannot be read becomes
//! `Unknown` with the reason; it never fails the whole observation. What comes back is
//! [`model::Observed`], which holds no secret data.

pub(crate) mod gateway_api;
pub mod istio;
pub mod model;
pub(crate) mod secrets;
pub mod synthetic;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DynamicObject, ListParams, PartialObjectMeta};
use kube::core::ObjectMeta;

use self::model::{
    BindingFacts, ClusterFacts, ClusterObservation, ClusterState, NamespaceFacts, ObjectFacts, Observed, ReaderFacts,
    SNAPSHOT_FORMAT_VERSION, UnknownReason,
};
use crate::access::{Connection, Connections, error_chain, is_timeout};
use crate::objects;
use crate::topology::Topology;

/// API requests observe makes per reachable cluster; constant by design.
pub const REQUESTS_PER_CLUSTER: usize = 22;

/// Reads every cluster in parallel.
pub async fn observe(topology: &Topology, connections: &Connections) -> Observed {
    let opened = open(connections).await;
    observe_opened(topology, connections, opened).await
}

/// Each cluster's first read: its kube-system Namespace, whose UID is the
/// cluster's identity. It opens the cluster's connection, which the other
/// reads then share. The UID never changes while the cluster exists, so
/// this read may come before apply holds its lock, and runs beside it.
pub struct Opened(BTreeMap<String, Result<Namespace, kube::Error>>);

/// The first read of every cluster with a client, all at once.
pub async fn open(connections: &Connections) -> Opened {
    let reads = connections.ready().map(|connection| async move {
        let namespaces: Api<Namespace> = Api::all(connection.client.clone());
        (connection.cluster.clone(), namespaces.get("kube-system").await)
    });
    Opened(futures::future::join_all(reads).await.into_iter().collect())
}

/// [`observe`], with the first reads already made by [`open`].
pub async fn observe_opened(topology: &Topology, connections: &Connections, opened: Opened) -> Observed {
    let started = std::time::Instant::now();
    let mut opened = opened.0;
    let reads = topology.clusters.iter().map(|cluster| {
        let first = opened.remove(&cluster.name);
        async move {
            let name = &cluster.name;
            let connection = connections
                .cluster(name)
                .expect("connections are opened for every cluster of the topology");
            let read_started = std::time::Instant::now();
            let state = match connection {
                Ok(connection) => match read_cluster(topology, connection, first).await {
                    Ok(facts) => ClusterState::Reachable(Box::new(facts)),
                    Err(error) => unknown(&error),
                },
                Err(error) => ClusterState::Unknown {
                    reason: UnknownReason::Kubeconfig,
                    detail: error.to_string(),
                },
            };
            // Names, counts and kube's error text only: never a token or kubeconfig.
            let elapsed_ms = read_started.elapsed().as_millis();
            match &state {
                ClusterState::Reachable(_) => {
                    tracing::debug!(cluster = %name, requests = REQUESTS_PER_CLUSTER, elapsed_ms, "read cluster")
                }
                ClusterState::Unknown { reason, detail } => {
                    tracing::info!(cluster = %name, ?reason, %detail, elapsed_ms, "cluster not read")
                }
            }
            (
                name.clone(),
                ClusterObservation {
                    context: cluster.context.clone(),
                    state,
                },
            )
        }
    });
    let clusters: BTreeMap<_, _> = futures::future::join_all(reads).await.into_iter().collect();
    tracing::info!(
        clusters = clusters.len(),
        reachable = clusters.values().filter(|c| c.facts().is_some()).count(),
        elapsed_ms = started.elapsed().as_millis(),
        "observed mesh"
    );
    let mut observed = Observed {
        format_version: SNAPSHOT_FORMAT_VERSION,
        mesh: topology.mesh.name.clone(),
        namespace: topology.mesh.namespace.clone(),
        observed_at: jiff::Timestamp::now(),
        clusters,
        // A file beside the clusters: the root certificate is public, and
        // the plan judges every cluster's `cacerts` against it.
        trust_root: crate::trust::read_root(topology, connections.base_dir()),
        trust_previous_root: crate::trust::read_previous_root(topology, connections.base_dir()),
    };
    observed.share_strings();
    observed
}

/// Classifies a failed read. The detail is kube's message, which names
/// the request and the server's reason but carries no credentials.
fn unknown(error: &kube::Error) -> ClusterState {
    let reason = match error {
        kube::Error::Api(status) if status.code == 401 => UnknownReason::Unauthorized,
        kube::Error::Api(status) if status.code == 403 => UnknownReason::Forbidden,
        kube::Error::Api(status) if status.code == 504 || status.code == 408 => UnknownReason::Timeout,
        other if is_timeout(other) => UnknownReason::Timeout,
        kube::Error::HyperError(_) | kube::Error::Service(_) => UnknownReason::Unreachable,
        _ => UnknownReason::Other,
    };
    let detail = match error {
        kube::Error::Api(status) => format!("{} ({})", status.message, status.code),
        other => error_chain(other),
    };
    ClusterState::Unknown { reason, detail }
}

fn object_facts(meta: &ObjectMeta, mesh: &str) -> ObjectFacts {
    ObjectFacts {
        uid: meta.uid.clone().unwrap_or_default(),
        resource_version: meta.resource_version.clone().unwrap_or_default(),
        managed: objects::is_managed(meta.labels.as_ref(), mesh),
        spec_hash: meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(objects::SPEC_HASH_ANNOTATION))
            .map(|h| h.as_str().into()),
        content_sha256: None,
        content_owners: Vec::new(),
    }
}

async fn read_cluster(
    topology: &Topology,
    connection: &Connection,
    opened: Option<Result<Namespace, kube::Error>>,
) -> Result<ClusterFacts, kube::Error> {
    let ns = topology.mesh.namespace.as_str();
    let mesh = topology.mesh.name.as_str();
    let client = connection.client.clone();
    let cluster = topology
        .cluster(&connection.cluster)
        .expect("connection of a topology cluster");
    let gateway_service = &topology.networks[&cluster.network].gateway_service;
    let role_name = objects::reader_cluster_role(ns);
    let control_plane_role = objects::control_plane_cluster_role(ns);

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let gateways: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &objects::gateway_resource());
    let virtual_services: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &objects::virtual_service_resource());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), ns);
    let k8s_gateways: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &objects::k8s_gateway_resource());
    // Without the Gateway API CRDs the list is a 404: a fact plan judges
    // (an ambient network has no gateway then), not a failed read.
    let k8s_gateway_list = async {
        match k8s_gateways.list(&ListParams::default()).await {
            Ok(list) => Ok(Some(list.items)),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
            Err(error) => Err(error),
        }
    };
    let endpoint_slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let by_label = ListParams::default().labels(&format!("{}=true", objects::MULTICLUSTER_LABEL));
    let all = ListParams::default();
    let bindings_by_label = ListParams::default().labels(&format!("{}=true", objects::READER_BINDING_LABEL));
    // Installs are listed, not read by name: a revision's objects carry a
    // name meshform cannot know (`istiod-<rev>`, `istio-sidecar-injector-<rev>`).
    let istiods = ListParams::default().labels(objects::ISTIOD_SELECTOR);
    let install_configmaps = ListParams::default().labels(objects::INSTALL_CONFIGMAP_SELECTOR);
    let remote_slices = ListParams::default().labels(objects::REMOTE_ISTIOD_SLICE_SELECTOR);
    // The reads of REQUESTS_PER_CLUSTER: the cluster's identity first, which
    // opens the connection (HTTP/2 where the server offers it), then the
    // others at once over it. Sent together, each would open a connection
    // of its own; an unreachable cluster also fails once, not once per read.
    let kube_system = match opened {
        Some(read) => read?,
        None => namespaces.get("kube-system").await?,
    };
    // Secret metadata of the whole namespace (PartialObjectMetadataList: no
    // data crosses the wire) gives the reader token Secret and every
    // unlabelled Secret of a remote secret's name in one request; apply then
    // needs no read before each new remote secret to keep off a hand-made one.
    let (
        mesh_ns,
        account,
        role,
        binding,
        remote_secrets,
        gateway,
        services_listed,
        secret_metadata,
        reader_bindings,
        istiod,
        install_cms,
        slices,
        root_cert,
        istiod_gateway,
        istiod_virtual_service,
        k8s_gateway_list,
        ztunnel,
        ca_certs,
        control_plane_account,
        control_plane_role,
        control_plane_binding,
    ) = tokio::try_join!(
        namespaces.get_opt(ns),
        accounts.get_opt(objects::READER_SERVICE_ACCOUNT),
        roles.get_opt(&role_name),
        bindings.get_opt(&role_name),
        secrets.list(&by_label),
        gateways.get_opt(objects::CROSS_NETWORK_GATEWAY),
        // One LIST for the gateway Service (named in mesh.toml) and a remote
        // install's `istiod` Service (see `istio::installs`): a request
        // fewer than reading them apart.
        services.list(&all),
        secrets.list_metadata(&all),
        secrets.list_metadata(&bindings_by_label),
        deployments.list(&istiods),
        configmaps.list(&install_configmaps),
        endpoint_slices.list(&remote_slices),
        configmaps.get_opt(objects::ROOT_CERT_CONFIGMAP),
        gateways.get_opt(objects::ISTIOD_GATEWAY),
        virtual_services.get_opt(objects::ISTIOD_VIRTUAL_SERVICE),
        k8s_gateway_list,
        daemonsets.get_opt(objects::ZTUNNEL),
        secrets.get_opt(objects::CA_CERTS_SECRET),
        // Read in every cluster, whatever its role, so that the count stays
        // fixed and an account left from when a cluster was a remote shows.
        accounts.get_opt(objects::CONTROL_PLANE_SERVICE_ACCOUNT),
        roles.get_opt(&control_plane_role),
        bindings.get_opt(&control_plane_role),
    )?;
    let service = services_listed
        .items
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(gateway_service.as_str()));
    let token_secret = |name: &str| {
        secret_metadata
            .items
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
            .map(|s| object_facts(&s.metadata, mesh))
    };
    // What they grant, hashed as the planner hashes what meshform writes: a
    // rule edited by hand shows, though the annotation does not.
    let account_facts = |account: Option<ServiceAccount>,
                         role: Option<ClusterRole>,
                         binding: Option<ClusterRoleBinding>,
                         scope: objects::ReaderScope| ReaderFacts {
        service_account: account.map(|a| object_facts(&a.metadata, mesh)),
        cluster_role: role.map(|r| ObjectFacts {
            content_sha256: Some(objects::rules_sha256(r.rules.as_deref().unwrap_or_default())),
            content_owners: objects::rules_owners(&r.metadata),
            ..object_facts(&r.metadata, mesh)
        }),
        cluster_role_binding: binding.map(|b| ObjectFacts {
            content_sha256: Some(objects::subjects_sha256(b.subjects.as_deref().unwrap_or_default())),
            content_owners: objects::subjects_owners(&b.metadata),
            ..object_facts(&b.metadata, mesh)
        }),
        token_secret: token_secret(scope.token_secret()),
    };
    let unlabelled_secrets = secret_metadata
        .items
        .iter()
        .filter(|s| !is_labelled_remote_secret(s) && !objects::is_managed(s.metadata.labels.as_ref(), mesh))
        .filter_map(|s| s.metadata.name.clone())
        .filter(|name| name.starts_with(crate::topology::REMOTE_SECRET_PREFIX))
        .collect();

    let remote_secrets = remote_secrets
        .items
        .iter()
        .filter_map(|s| {
            Some((
                s.metadata.name.clone()?,
                secrets::facts(
                    s,
                    ObjectFacts {
                        content_owners: objects::remote_secret_owners(&s.metadata),
                        ..object_facts(&s.metadata, mesh)
                    },
                ),
            ))
        })
        .collect();
    Ok(ClusterFacts {
        identity: kube_system.metadata.uid.unwrap_or_default(),
        server: connection.server.clone(),
        ca_sha256: connection.ca_pem.as_deref().map(crate::objects::sha256_hex),
        tls_server_name: connection.tls_server_name.clone(),
        insecure_transport: connection.insecure.map(str::to_string),
        namespace: mesh_ns.map(|n| NamespaceFacts {
            object: object_facts(&n.metadata, mesh),
            network: n
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(objects::NETWORK_LABEL).cloned()),
            control_planes: n
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(objects::CONTROL_PLANE_ANNOTATION).cloned()),
            network_owners: objects::label_owners(&n.metadata, objects::NETWORK_LABEL),
            control_planes_by_meshform: owns_annotation(&n.metadata, objects::CONTROL_PLANE_ANNOTATION),
            restart_owed: n
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(objects::RESTART_OWED_ANNOTATION).cloned()),
        }),
        reader: account_facts(account, role, binding, objects::ReaderScope::Read),
        control_plane_account: account_facts(
            control_plane_account,
            control_plane_role,
            control_plane_binding,
            objects::ReaderScope::ControlPlane,
        ),
        remote_secrets,
        gateway: gateway.map(|g| spec_facts(&g, mesh)),
        istiod_gateway: istiod_gateway.map(|g| spec_facts(&g, mesh)),
        istiod_virtual_service: istiod_virtual_service.map(|v| spec_facts(&v, mesh)),
        east_west: service.map(istio::east_west),
        gateway_service: service.map(|s| object_facts(&s.metadata, mesh)),
        unlabelled_secrets,
        installs: istio::installs(&istiod.items, &install_cms.items, &services_listed.items, &slices.items),
        k8s_gateways: k8s_gateway_list.map(|list| {
            list.iter()
                .filter_map(|g| {
                    Some((
                        g.metadata.name.clone()?,
                        gateway_api::gateway(
                            g,
                            // Judged by what meshform would write of it, were it meshform's.
                            ObjectFacts {
                                content_sha256: Some(objects::content_sha256(&objects::ambient_gateway_content(
                                    &g.data["spec"],
                                ))),
                                content_owners: objects::spec_owners(&g.metadata),
                                ..object_facts(&g.metadata, mesh)
                            },
                        ),
                    ))
                })
                .collect()
        }),
        ztunnel: ztunnel.as_ref().map(gateway_api::ztunnel),
        root_certs: root_cert.as_ref().map(istio::root_fingerprints),
        reader_bindings: reader_bindings
            .items
            .iter()
            .filter_map(|b| {
                let annotation = |key: &str| {
                    let value = b.metadata.annotations.as_ref().and_then(|a| a.get(key))?;
                    Some(value.as_str().into())
                };
                Some((
                    b.metadata.name.clone()?,
                    BindingFacts {
                        object: object_facts(&b.metadata, mesh),
                        holder: annotation(objects::HOLDER_ANNOTATION),
                        holder_identity: annotation(objects::HOLDER_IDENTITY_ANNOTATION),
                    },
                ))
            })
            .collect(),
        ca_certs: ca_certs.as_ref().map(|s| ca_certs_facts(s, mesh)),
    })
}

/// `cacerts` by its certificates; its key is dropped with the Secret, unread.
fn ca_certs_facts(secret: &Secret, mesh: &str) -> model::CaCertsFacts {
    let text = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|b| std::str::from_utf8(&b.0).ok())
    };
    let roots_pem = text(objects::CA_ROOT_CERT_KEY).unwrap_or_default();
    let mut roots: Vec<String> = rustls_pki_types::pem::PemObject::pem_slice_iter(roots_pem.as_bytes())
        .filter_map(Result::ok)
        .map(|der: rustls_pki_types::CertificateDer<'_>| objects::sha256_hex(der.as_ref()))
        .collect();
    roots.sort();
    roots.dedup();
    model::CaCertsFacts {
        object: object_facts(&secret.metadata, mesh),
        ca_cert: text(objects::CA_CERT_KEY).and_then(|pem| crate::trust::pem_cert_facts(pem, roots_pem)),
        roots,
        complete: objects::CA_CERTS_KEYS
            .iter()
            .all(|k| secret.data.as_ref().is_some_and(|d| d.contains_key(*k))),
    }
}

/// An object judged by its spec: who wrote it, what it holds, who owns it.
fn spec_facts(object: &DynamicObject, mesh: &str) -> ObjectFacts {
    ObjectFacts {
        content_sha256: Some(objects::content_sha256(&object.data["spec"])),
        content_owners: objects::spec_owners(&object.metadata),
        ..object_facts(&object.metadata, mesh)
    }
}

fn is_labelled_remote_secret(secret: &PartialObjectMeta<Secret>) -> bool {
    secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(objects::MULTICLUSTER_LABEL))
        .is_some_and(|v| v == "true")
}

/// Whether meshform's field manager applied `annotation` of an object.
fn owns_annotation(meta: &ObjectMeta, annotation: &str) -> bool {
    meta.managed_fields.iter().flatten().any(|entry| {
        entry.manager.as_deref() == Some(objects::FIELD_MANAGER)
            && entry.operation.as_deref() == Some("Apply")
            && entry.fields_v1.as_ref().is_some_and(|f| {
                f.0["f:metadata"]["f:annotations"]
                    .get(format!("f:{annotation}"))
                    .is_some()
            })
    })
}
