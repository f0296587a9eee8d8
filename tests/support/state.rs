//! What the test clusters hold, read for assertions: the state a second
//! apply must leave unchanged, meshform's own objects, the network label.
//!
//! One listing serves every reader here, so "state" means the same thing in
//! every test file. It only reads; nothing here writes to a cluster.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DynamicObject, ListParams};
use serde::de::DeserializeOwned;

use super::controlplane::Cluster;
use super::mesh::NAMESPACE;

const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
const NETWORK_LABEL: &str = "topology.istio.io/network";

/// One object as listed: `Kind/namespace/name` (no namespace part for a
/// cluster-scoped one), `uid@resourceVersion`, and whether meshform's label
/// marks it as meshform's.
struct Listed {
    key: String,
    version: String,
    labelled: bool,
}

fn listed<K: kube::Resource>(kind: &str, items: Vec<K>) -> impl Iterator<Item = Listed> {
    items.into_iter().map(move |item| {
        let meta = item.meta();
        let ns = meta.namespace.as_deref().map(|n| format!("{n}/")).unwrap_or_default();
        Listed {
            key: format!("{kind}/{ns}{}", meta.name.as_deref().unwrap_or_default()),
            version: format!(
                "{}@{}",
                meta.uid.as_deref().unwrap_or_default(),
                meta.resource_version.as_deref().unwrap_or_default()
            ),
            labelled: meta
                .labels
                .as_ref()
                .and_then(|l| l.get(MANAGED_BY))
                .is_some_and(|v| v == "meshform"),
        }
    })
}

async fn list<K>(cluster: &Cluster, api: Api<K>, params: &ListParams) -> Vec<K>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    api.list(params)
        .await
        .unwrap_or_else(|e| panic!("listing in {}: {e}", cluster.name()))
        .items
}

/// Everything meshform could write in `cluster` and the objects around it:
/// all Namespaces, Secrets and Deployments, the mesh namespace's
/// ServiceAccounts (but `default`), Gateways and lock Leases, and meshform's
/// ClusterRoles and ClusterRoleBindings (the plane's own are many and
/// never meshform's).
async fn listing(cluster: &Cluster) -> Vec<Listed> {
    let client = cluster.client();
    let all = ListParams::default();
    let ours = ListParams::default().labels(&format!("{MANAGED_BY}=meshform"));
    // The service-account controller adds `default` to a new namespace
    // whenever it gets to it; it is the cluster's, not a write of meshform.
    let accounts: Vec<ServiceAccount> = list(
        cluster,
        Api::<ServiceAccount>::namespaced(client.clone(), NAMESPACE),
        &all,
    )
    .await
    .into_iter()
    .filter(|a| a.metadata.name.as_deref() != Some("default"))
    .collect();
    let gateways =
        Api::<DynamicObject>::namespaced_with(client.clone(), NAMESPACE, &meshform::objects::gateway_resource());
    let mut out = Vec::new();
    out.extend(listed(
        "Namespace",
        list::<Namespace>(cluster, Api::all(client.clone()), &all).await,
    ));
    out.extend(listed(
        "Secret",
        list::<Secret>(cluster, Api::all(client.clone()), &all).await,
    ));
    out.extend(listed("ServiceAccount", accounts));
    out.extend(listed(
        "ClusterRole",
        list::<ClusterRole>(cluster, Api::all(client.clone()), &ours).await,
    ));
    out.extend(listed(
        "ClusterRoleBinding",
        list::<ClusterRoleBinding>(cluster, Api::all(client.clone()), &ours).await,
    ));
    out.extend(listed("Gateway", list(cluster, gateways, &all).await));
    out.extend(listed(
        "Deployment",
        list::<Deployment>(cluster, Api::all(client.clone()), &all).await,
    ));
    // The apply lock, whoever holds it; a running istiod's leader-election
    // Leases are renewed all the time and are not meshform's.
    let leases: Vec<Lease> = list(cluster, Api::<Lease>::namespaced(client, NAMESPACE), &all)
        .await
        .into_iter()
        .filter(|l| l.metadata.name.as_deref().is_some_and(|n| n.starts_with("meshform-")))
        .collect();
    out.extend(listed("Lease", leases));
    out
}

/// The state of `clusters` as `cluster/Kind/namespace/name` →
/// `uid@resourceVersion`, over what [`listing`] covers. Any write that
/// persists changes a resourceVersion or the set of keys, and an object
/// deleted and re-made changes its uid: equal states mean nothing was
/// written.
pub async fn object_state(clusters: &[&Cluster]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for &c in clusters {
        for object in listing(c).await {
            out.insert(format!("{}/{}", c.name(), object.key), object.version);
        }
    }
    out
}

/// meshform's objects in `cluster`, as `Kind/namespace/name` keys of the
/// same listing as [`object_state`]: those carrying its managed-by label,
/// and the mesh namespace, whose network label meshform writes.
pub async fn meshform_objects(cluster: &Cluster) -> BTreeSet<String> {
    let mesh_namespace = format!("Namespace/{NAMESPACE}");
    listing(cluster)
        .await
        .into_iter()
        .filter(|o| o.labelled || o.key == mesh_namespace)
        .map(|o| o.key)
        .collect()
}

/// The `topology.istio.io/network` label of the mesh namespace.
pub async fn network_label(cluster: &Cluster) -> Option<String> {
    let ns = Api::<Namespace>::all(cluster.client())
        .get(NAMESPACE)
        .await
        .unwrap_or_else(|e| panic!("reading the mesh namespace in {}: {e}", cluster.name()));
    ns.metadata.labels?.get(NETWORK_LABEL).cloned()
}
