//! `meshform apply` on real API servers (issue 5, item 10), through the
//! binary: what it writes, network changes in their order, detach, rename,
//! dry run, stale plans, the lock, partial failure and adoption. Every test
//! ends converged (a fresh plan is empty, a second apply writes nothing) and
//! checks that no token reached any output.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::config::KubeConfigOptions;
use meshform::observe;
use meshform::plan::{self, Options};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use support::controlplane::{Cluster, ControlPlane};
use support::install::{Install, OTHER_ROOT, install_istio};
use support::library;
use support::mesh::{Entry, MESH, Mesh, NAMESPACE, eventually, install_eastwest_gateway, remote_secrets};
use support::snapshot::assert_outcome;
use support::state::{network_label, object_state};
use support::workload::{injected_deployment, restarted_at};

const READER: &str = "istio-reader-service-account";
const READER_ROLE: &str = "meshform-istio-reader-istio-system";
const GATEWAY: &str = "cross-network-gateway";

fn gateways(cluster: &Cluster) -> Api<DynamicObject> {
    Api::namespaced_with(
        cluster.client(),
        NAMESPACE,
        &kube::core::ApiResource {
            group: "networking.istio.io".into(),
            version: "v1".into(),
            api_version: "networking.istio.io/v1".into(),
            kind: "Gateway".into(),
            plural: "gateways".into(),
        },
    )
}

async fn list<K>(api: &Api<K>, params: &ListParams) -> Vec<K>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    api.list(params).await.unwrap_or_else(|e| panic!("listing: {e}")).items
}

#[track_caller]
fn assert_managed(what: &str, meta: &ObjectMeta) {
    let labels = meta.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("app.kubernetes.io/managed-by").map(String::as_str),
        Some("meshform"),
        "{what}: {labels:?}"
    );
    assert_eq!(
        labels.get("meshform.io/mesh").map(String::as_str),
        Some(MESH),
        "{what}: {labels:?}"
    );
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// The claims of a JWT, unverified.
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .expect("payload is base64url");
    serde_json::from_slice(&bytes).expect("claims are JSON")
}

/// Checks the remote secret `primary` holds for `peer`, down to its token.
async fn assert_remote_secret(primary: &Cluster, peer: &Cluster, peer_name: &str) -> Secret {
    let name = format!("istio-remote-secret-{peer_name}");
    let secrets = remote_secrets(primary).await;
    let secret = secrets
        .get(&name)
        .unwrap_or_else(|| panic!("{} has no {name}: {:?}", primary.name(), secrets.keys()))
        .clone();
    let what = format!("{}/{name}", primary.name());
    assert_managed(&what, &secret.metadata);
    let labels = secret.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("istio/multiCluster").map(String::as_str),
        Some("true"),
        "{what}"
    );
    assert_eq!(
        annotation(&secret.metadata, "networking.istio.io/cluster"),
        Some(peer_name),
        "{what}"
    );
    assert_eq!(
        annotation(&secret.metadata, "meshform.io/peer-identity"),
        Some(peer.kube_system_uid()),
        "{what}"
    );
    assert!(
        annotation(&secret.metadata, "meshform.io/spec-hash").is_some(),
        "{what}"
    );
    let keys: Vec<&String> = secret.data.iter().flat_map(|d| d.keys()).collect();
    assert_eq!(
        keys,
        [peer_name],
        "{what}: Istio takes the cluster id from the one data key"
    );

    let kubeconfig = support::mesh::secret_kubeconfig(&secret);
    let cluster = kubeconfig.clusters[0].cluster.as_ref().expect("cluster entry");
    assert_eq!(
        cluster.server.as_deref().map(|s| s.trim_end_matches('/')),
        Some(peer.server()),
        "{what}"
    );
    assert!(
        cluster.certificate_authority_data.is_some(),
        "{what}: the peer's CA travels with it"
    );
    let token = support::mesh::token_of(&secret.data.as_ref().unwrap()[peer_name].0).expect("a token");
    let claims = claims(&token);
    // A remote's control plane (named on the remote's namespace, as meshform
    // writes it) holds a token of the remote's control-plane account; every
    // other primary one of the read-only reader account.
    let namespace = Api::<Namespace>::all(peer.client())
        .get(NAMESPACE)
        .await
        .expect("the peer's namespace");
    let account = if annotation(&namespace.metadata, "topology.istio.io/controlPlaneClusters") == Some(primary.name()) {
        "meshform-control-plane"
    } else {
        READER
    };
    assert_eq!(
        claims["sub"],
        format!("system:serviceaccount:{NAMESPACE}:{account}"),
        "{what}: the token is the peer's {account}'s"
    );
    assert!(
        claims["exp"].is_i64(),
        "{what}: a TokenRequest token has a lifetime: {claims}"
    );
    secret
}

async fn assert_reader(cluster: &Cluster) {
    let name = cluster.name();
    let account = Api::<ServiceAccount>::namespaced(cluster.client(), NAMESPACE)
        .get(READER)
        .await
        .unwrap_or_else(|e| panic!("{name}: reader account: {e}"));
    assert_managed(&format!("{name} ServiceAccount"), &account.metadata);
    let role = Api::<ClusterRole>::all(cluster.client())
        .get(READER_ROLE)
        .await
        .expect("reader role");
    assert_managed(&format!("{name} ClusterRole"), &role.metadata);
    assert!(annotation(&role.metadata, "meshform.io/spec-hash").is_some());
    let rules = role.rules.unwrap_or_default();
    assert!(
        rules.iter().any(|r| r
            .resources
            .as_ref()
            .is_some_and(|res| res.iter().any(|x| x == "services"))
            && r.verbs.iter().all(|v| ["get", "list", "watch"].contains(&v.as_str()))),
        "{name}: the reader reads services, read-only: {rules:?}"
    );
    let binding = Api::<ClusterRoleBinding>::all(cluster.client())
        .get(READER_ROLE)
        .await
        .expect("reader binding");
    assert_managed(&format!("{name} ClusterRoleBinding"), &binding.metadata);
    assert_eq!(binding.role_ref.name, READER_ROLE);
    let subject = &binding.subjects.as_ref().expect("subjects")[0];
    assert_eq!(
        (
            subject.kind.as_str(),
            subject.name.as_str(),
            subject.namespace.as_deref()
        ),
        ("ServiceAccount", READER, Some(NAMESPACE))
    );
}

async fn assert_gateway(cluster: &Cluster) {
    let gateway = gateways(cluster)
        .get(GATEWAY)
        .await
        .unwrap_or_else(|e| panic!("{}: no {GATEWAY}: {e}", cluster.name()));
    assert_managed(&format!("{} Gateway", cluster.name()), &gateway.metadata);
    let spec = &gateway.data["spec"];
    assert_eq!(spec["selector"], json!({"istio": "eastwestgateway"}));
    assert_eq!(spec["servers"][0]["port"]["number"], 15443);
    assert_eq!(spec["servers"][0]["tls"]["mode"], "AUTO_PASSTHROUGH");
    assert_eq!(spec["servers"][0]["hosts"], json!(["*.local"]));
}

async fn gateway_names(cluster: &Cluster) -> Vec<String> {
    list(&gateways(cluster), &ListParams::default())
        .await
        .into_iter()
        .filter_map(|g| g.metadata.name)
        .collect()
}

fn names<K>(map: &BTreeMap<String, K>) -> Vec<&str> {
    map.keys().map(String::as_str).collect()
}

#[tokio::test]
async fn attach_three_clusters_on_two_networks() {
    let clusters = ControlPlane::shared().clusters(&["east", "west", "north"]).await;
    let [east, west, north] = clusters.by_names(["east", "west", "north"]);
    for (c, network) in clusters.iter().zip(["n1", "n1", "n2"]) {
        install_eastwest_gateway(c).await;
        support::install::install_istio(c, &support::install::Install::correct(c.name(), network)).await;
    }
    let all = [east, west, north];
    // east and west share n1 (west is a remote of it); north is alone on n2.
    let mesh = Mesh::new(&[
        Entry::of(east).network("n1"),
        Entry::of(west).network("n1").remote(),
        Entry::of(north).network("n2"),
    ]);
    // Secret data shows as a marker in the diff.
    let out = mesh.apply(&["--diff"]).await;
    assert_outcome("attach_three_clusters", &out);

    for (cluster, network) in [(east, "n1"), (west, "n1"), (north, "n2")] {
        assert_eq!(
            network_label(cluster).await.as_deref(),
            Some(network),
            "{}",
            cluster.name()
        );
        assert_reader(cluster).await;
        // Each has a peer on the other network, so each is reached through its gateway.
        assert_gateway(cluster).await;
    }
    // Primaries hold a secret for every other cluster; the remote holds none.
    assert_eq!(
        names(&remote_secrets(east).await),
        ["istio-remote-secret-north", "istio-remote-secret-west"]
    );
    assert_eq!(
        names(&remote_secrets(north).await),
        ["istio-remote-secret-east", "istio-remote-secret-west"]
    );
    assert!(
        remote_secrets(west).await.is_empty(),
        "a remote holds no remote secrets"
    );
    for (primary, peer) in [(east, west), (east, north), (north, east), (north, west)] {
        assert_remote_secret(primary, peer, peer.name()).await;
    }

    mesh.assert_converged(&all).await;
    mesh.assert_no_token_leaked(&all).await;
}

#[tokio::test]
async fn a_flat_network_needs_no_gateway() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    // No east-west gateway Service either: on one network none is needed.
    let mesh = Mesh::flat(&[east, west]);
    let plan = mesh.run("plan", &["--format", "json"]).await.expect(0).json();
    assert!(
        plan["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .all(|f| f["kind"] != "blocker"),
        "{plan:#}"
    );
    mesh.apply(&[]).await;
    for (primary, peer) in [(east, west), (west, east)] {
        assert_eq!(network_label(primary).await.as_deref(), Some("flat"));
        assert!(
            gateway_names(primary).await.is_empty(),
            "{}: a flat network has no gateway",
            primary.name()
        );
        assert_remote_secret(primary, peer, peer.name()).await;
    }
    mesh.assert_converged(&[east, west]).await;
    mesh.assert_no_token_leaked(&[east, west]).await;
}

#[tokio::test]
async fn a_missing_gateway_service_blocks_a_cross_network_mesh() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    install_eastwest_gateway(east).await;
    let mesh = Mesh::new(&[Entry::of(east).network("n1"), Entry::of(west).network("n2")]);
    let before = object_state(&[east, west]).await;
    let plan = mesh.run("plan", &["--format", "json"]).await.expect(1).json();
    let blockers: Vec<&Value> = plan["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["kind"] == "blocker")
        .collect();
    assert_eq!(blockers.len(), 1, "{plan:#}");
    assert_eq!(blockers[0]["cluster"], "west");
    assert_eq!(blockers[0]["code"], "meshform::plan::gateway_service_missing");
    let refused = mesh.run("apply", &["--auto-approve"]).await.expect(1);
    assert_outcome("missing_gateway_refused", &refused);
    assert_eq!(
        before,
        object_state(&[east, west]).await,
        "a blocked plan writes nothing"
    );
}

#[tokio::test]
async fn the_remote_secret_reads_its_peer_and_nothing_else() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    let mesh = Mesh::flat(&[east, west]);
    mesh.apply(&[]).await;

    // What istiod in east does with the secret: build a client from it.
    let secret = assert_remote_secret(east, west, "west").await;
    let kubeconfig = support::mesh::secret_kubeconfig(&secret);
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("the remote secret's kubeconfig loads");
    let reader = kube::Client::try_from(config).expect("a client from the remote secret");
    // It reads west's objects, not east's: the namespace it sees is west's.
    Api::<Service>::namespaced(reader.clone(), NAMESPACE)
        .list(&ListParams::default())
        .await
        .expect("the reader lists services on its peer");
    let kube_system = Api::<Namespace>::all(reader.clone())
        .get("kube-system")
        .await
        .expect("the reader reads namespaces on its peer");
    assert_eq!(kube_system.metadata.uid.as_deref(), Some(west.kube_system_uid()));
    let review = Api::<SelfSubjectReview>::all(reader.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .expect("who am I");
    let user = review.status.and_then(|s| s.user_info).and_then(|u| u.username);
    assert_eq!(
        user.as_deref(),
        Some("system:serviceaccount:istio-system:istio-reader-service-account")
    );
    // Read-only: it cannot write on the peer.
    let write = Api::<Secret>::namespaced(reader, NAMESPACE)
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("nope".into()),
                    ..ObjectMeta::default()
                },
                ..Secret::default()
            },
        )
        .await;
    assert!(
        matches!(write, Err(kube::Error::Api(ref s)) if s.code == 403),
        "{write:?}"
    );

    // The same token means nothing to another cluster.
    let token = support::mesh::token_of(&secret.data.as_ref().unwrap()["west"].0).expect("token");
    let elsewhere = Api::<Service>::namespaced(east.client_with_token(&token).await, NAMESPACE)
        .list(&ListParams::default())
        .await;
    assert!(
        matches!(elsewhere, Err(kube::Error::Api(ref s)) if s.code == 401),
        "{elsewhere:?}"
    );
    mesh.assert_no_token_leaked(&[east, west]).await;
}

/// Watch events `(type, name, resourceVersion, network label)`, recorded in the background.
type Seen = Arc<Mutex<Vec<(String, String, u64, Option<String>)>>>;

async fn record<K>(api: Api<K>) -> (Seen, tokio::task::JoinHandle<()>)
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let from = api
        .list(&ListParams::default())
        .await
        .expect("listing before the watch")
        .metadata
        .resource_version
        .expect("a list has a resourceVersion");
    // Awaiting the watch means the server has started it: nothing after this is missed.
    let stream = api.watch(&WatchParams::default(), &from).await.expect("watch");
    let seen: Seen = Arc::default();
    let into = seen.clone();
    let task = tokio::spawn(async move {
        let mut stream = stream.boxed();
        while let Ok(Some(event)) = stream.try_next().await {
            let (kind, object) = match event {
                WatchEvent::Added(o) => ("added", o),
                WatchEvent::Modified(o) => ("modified", o),
                WatchEvent::Deleted(o) => ("deleted", o),
                WatchEvent::Bookmark(_) | WatchEvent::Error(_) => continue,
            };
            let meta = object.meta();
            let rv = meta
                .resource_version
                .as_deref()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let network = meta
                .labels
                .as_ref()
                .and_then(|l| l.get("topology.istio.io/network").cloned());
            into.lock()
                .unwrap()
                .push((kind.into(), meta.name.clone().unwrap_or_default(), rv, network));
        }
    });
    (seen, task)
}

/// The position in `events` of the first `done` event for `action` in
/// `cluster` (about `peer`, when given).
fn done_at(events: &[Value], action: &str, cluster: &str, peer: Option<&str>) -> usize {
    events
        .iter()
        .position(|e| {
            e["event"] == "done"
                && e["action"]["action"] == action
                && e["action"]["cluster"] == cluster
                && peer.is_none_or(|p| e["action"]["peer"] == p)
        })
        .unwrap_or_else(|| panic!("no done {action} in {cluster} ({peer:?}): {events:#?}"))
}

#[tokio::test]
async fn a_network_change_detaches_relabels_and_reattaches_in_that_order() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    for c in clusters.iter() {
        install_eastwest_gateway(c).await;
    }
    injected_deployment(west).await;
    let mesh = Mesh::new(&[Entry::of(east).network("n1"), Entry::of(west).network("n1")]);
    mesh.apply(&[]).await;
    let first = remote_secrets(east).await["istio-remote-secret-west"].clone();
    assert!(gateway_names(east).await.is_empty());

    // west moves to n2.
    mesh.write(&[Entry::of(east).network("n1"), Entry::of(west).network("n2")]);
    let before = object_state(&[east, west]).await;
    let refused = mesh.run("apply", &["--auto-approve"]).await.expect(1);
    // The refusal names the cluster and the flag.
    assert_outcome("network_change_refused", &refused);
    assert_eq!(
        before,
        object_state(&[east, west]).await,
        "a refused apply writes nothing"
    );

    let (secrets_seen, secrets_task) = record(Api::<Secret>::namespaced(east.client(), NAMESPACE)).await;
    let (namespaces_seen, namespaces_task) = record(Api::<Namespace>::all(west.client())).await;
    let out = mesh.apply(&["--allow-detach", "--format", "json"]).await;
    let events = out.events();
    let detach = done_at(&events, "delete_remote_secret", "east", Some("west"));
    let relabel = done_at(&events, "set_network", "west", None);
    let attach = done_at(&events, "write_remote_secret", "east", Some("west"));
    assert!(detach < relabel && relabel < attach, "events out of order: {events:#?}");
    // The restart step is shown, not run, without --restart-workloads: skipped, naming the flag.
    let restart = events
        .iter()
        .find(|e| e["event"] == "skipped" && e["action"]["action"] == "restart_workloads")
        .unwrap_or_else(|| panic!("no skipped restart: {events:#?}"));
    assert!(
        restart["why"]
            .as_str()
            .is_some_and(|d| d.contains("--restart-workloads")),
        "{restart:#}"
    );
    assert_eq!(
        restarted_at(west).await,
        None,
        "workloads restarted without --restart-workloads"
    );

    // The server's history agrees: the clusters share one etcd, so
    // resourceVersions are ordered across them.
    let secret_rv = |kind: &str| {
        let seen = secrets_seen.lock().unwrap();
        seen.iter()
            .find(|(k, name, ..)| k == kind && name == "istio-remote-secret-west")
            .map(|(_, _, rv, _)| *rv)
            .unwrap_or_else(|| panic!("no {kind} of istio-remote-secret-west in east: {seen:?}"))
    };
    // The watch may lag the apply's return a little.
    eventually("the watch to see the re-attach", Duration::from_secs(10), async || {
        secrets_seen
            .lock()
            .unwrap()
            .iter()
            .any(|(k, n, ..)| k == "added" && n == "istio-remote-secret-west")
            .then_some(())
    })
    .await;
    let (deleted, added) = (secret_rv("deleted"), secret_rv("added"));
    let relabelled = {
        let seen = namespaces_seen.lock().unwrap();
        seen.iter()
            .find(|(k, name, _, network)| k == "modified" && name == NAMESPACE && network.as_deref() == Some("n2"))
            .map(|(_, _, rv, _)| *rv)
            .unwrap_or_else(|| panic!("no relabel of {NAMESPACE} in west: {seen:?}"))
    };
    secrets_task.abort();
    namespaces_task.abort();
    assert!(
        deleted < relabelled && relabelled < added,
        "detach {deleted}, relabel {relabelled}, re-attach {added}"
    );
    let second = remote_secrets(east).await["istio-remote-secret-west"].clone();
    assert_ne!(
        first.metadata.uid, second.metadata.uid,
        "the secret was re-created, not patched"
    );
    let namespace_rv: u64 = Api::<Namespace>::all(west.client())
        .get(NAMESPACE)
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap()
        .parse()
        .unwrap();
    let secret_rv: u64 = second.metadata.resource_version.clone().unwrap().parse().unwrap();
    assert!(
        namespace_rv < secret_rv,
        "the namespace was relabelled ({namespace_rv}) before the secret was written ({secret_rv})"
    );
    assert_eq!(network_label(west).await.as_deref(), Some("n2"));
    for c in [east, west] {
        assert_gateway(c).await;
    }
    // west's secret for east stays: east did not move.
    let west_holds = remote_secrets(west).await;
    assert_eq!(names(&west_holds), ["istio-remote-secret-east"]);
    mesh.assert_converged(&[east, west]).await;

    // Back to n1, this time restarting the workloads; the gateways go.
    mesh.write(&[Entry::of(east).network("n1"), Entry::of(west).network("n1")]);
    let out = mesh
        .apply(&["--allow-detach", "--restart-workloads", "--format", "json"])
        .await;
    let events = out.events();
    let restart = done_at(&events, "restart_workloads", "west", None);
    assert!(
        done_at(&events, "write_remote_secret", "east", Some("west")) < restart,
        "{events:#?}"
    );
    assert!(
        restarted_at(west).await.is_some(),
        "--restart-workloads restarts injected workloads: {:#}",
        events[restart]
    );
    assert_eq!(network_label(west).await.as_deref(), Some("n1"));
    for c in [east, west] {
        assert!(
            gateway_names(c).await.is_empty(),
            "{}: no peer on another network is left",
            c.name()
        );
    }
    assert_remote_secret(east, west, "west").await;
    mesh.assert_converged(&[east, west]).await;
    mesh.assert_no_token_leaked(&[east, west]).await;
}

#[tokio::test]
async fn a_detach_needs_allow_detach() {
    let clusters = ControlPlane::shared().clusters(&["east", "west", "north"]).await;
    let all @ [east, west, north] = clusters.by_names(["east", "west", "north"]);
    let mesh = Mesh::flat(&all);
    mesh.apply(&[]).await;
    assert_remote_secret(east, north, "north").await;

    // north leaves the mesh.
    mesh.write(&[Entry::of(east).network("flat"), Entry::of(west).network("flat")]);
    let before = object_state(&all).await;
    let refused = mesh.run("apply", &["--auto-approve"]).await.expect(1);
    assert_outcome("detach_refused", &refused);
    assert_eq!(before, object_state(&all).await, "a refused apply writes nothing");

    let north_before = object_state(&[north]).await;
    mesh.apply(&["--allow-detach"]).await;
    assert_eq!(names(&remote_secrets(east).await), ["istio-remote-secret-west"]);
    assert_eq!(names(&remote_secrets(west).await), ["istio-remote-secret-east"]);
    assert_eq!(
        north_before,
        object_state(&[north]).await,
        "a cluster outside the topology is not touched"
    );
    mesh.assert_converged(&[east, west]).await;
    mesh.assert_no_token_leaked(&[east, west]).await;
}

#[tokio::test]
async fn a_renamed_cluster_is_detached_under_the_old_name_and_attached_under_the_new() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    let mesh = Mesh::flat(&[east, west]);
    mesh.apply(&[]).await;
    let held_by_west = remote_secrets(west).await;

    mesh.write(&[
        Entry::of(east).network("flat"),
        Entry::of(west).named("west2").network("flat"),
    ]);
    let plan = mesh.run("plan", &["--format", "json"]).await.expect(0).json();
    assert!(
        plan["changes"]
            .as_array()
            .expect("changes")
            .contains(&json!({"change": "rename", "from": "west", "to": "west2"})),
        "{plan:#}"
    );
    let refused = mesh.run("apply", &["--auto-approve"]).await.expect(1);
    assert_outcome("rename_refused", &refused);

    mesh.apply(&["--allow-detach"]).await;
    assert_eq!(names(&remote_secrets(east).await), ["istio-remote-secret-west2"]);
    assert_remote_secret(east, west, "west2").await;
    // The renamed cluster's own secret for east is untouched.
    let still = remote_secrets(west).await;
    assert_eq!(names(&still), ["istio-remote-secret-east"]);
    assert_eq!(
        still["istio-remote-secret-east"].metadata.uid,
        held_by_west["istio-remote-secret-east"].metadata.uid
    );
    mesh.assert_converged(&[east, west]).await;
    mesh.assert_no_token_leaked(&[east, west]).await;
}

#[tokio::test]
async fn a_dry_run_persists_nothing_and_redacts_secret_data() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    for c in clusters.iter() {
        install_eastwest_gateway(c).await;
    }
    let mesh = Mesh::new(&[Entry::of(east).network("n1"), Entry::of(west).network("n2")]);

    // Fresh: every kind of object would be created.
    let before = object_state(&[east, west]).await;
    let dry = mesh.run("apply", &["--dry-run", "--diff"]).await.expect(0);
    // A diff of every kind of object; secret data redacted.
    assert_outcome("dry_run_fresh", &dry);
    assert_eq!(
        before,
        object_state(&[east, west]).await,
        "a dry run persisted something"
    );

    // Applied, then a dry run that would replace every token.
    mesh.apply(&[]).await;
    let before = object_state(&[east, west]).await;
    let dry = mesh
        .run("apply", &["--dry-run", "--diff", "--rotate-tokens"])
        .await
        .expect(0);
    // A new token shows as a changed value.
    assert_outcome("dry_run_rotate_tokens", &dry);
    assert_eq!(
        before,
        object_state(&[east, west]).await,
        "a dry run persisted something"
    );
    mesh.assert_converged(&clusters.all()).await;

    // A dry run of a network change with restarts: deletes, relabels and
    // restarts are sent with dryRun=All too.
    injected_deployment(west).await;
    mesh.write(&[Entry::of(east).network("n1"), Entry::of(west).network("n3")]);
    let before = object_state(&[east, west]).await;
    let dry = mesh
        .run(
            "apply",
            &["--dry-run", "--diff", "--allow-detach", "--restart-workloads"],
        )
        .await
        .expect(0);
    assert_outcome("dry_run_network_change", &dry);
    assert_eq!(
        before,
        object_state(&[east, west]).await,
        "a dry run persisted something"
    );
    assert_eq!(restarted_at(west).await, None);
    mesh.assert_no_token_leaked(&[east, west]).await;
}

/// Issue 29 item 7: apply plans a saved plan again, under the lock and with
/// the choices it records, and writes it only when the same actions come
/// out; otherwise it refuses, names what differs and writes nothing.
#[tokio::test]
async fn a_saved_plan_is_planned_again_and_refused_once_its_actions_change() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    for cluster in [east, west] {
        install_istio(cluster, &Install::correct(cluster.name(), "flat")).await;
    }
    let mesh = Mesh::flat(&[east, west]);
    let plan = mesh.dir().join("p.json");
    let plan = plan.to_str().expect("utf-8 path");

    // A saved plan of unchanged clusters applies.
    mesh.run("plan", &["--out", plan]).await.expect(0);
    mesh.apply(&[plan]).await;
    assert_remote_secret(east, west, "west").await;
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(plan).unwrap()).unwrap();
    assert_eq!(saved["format_version"], 2);
    assert_eq!(saved["options"]["rotate_tokens"], false);

    // A plan to rotate every token, then unrelated edits of what it acts on
    // (an annotation on a secret it rotates, a label on the namespace): the
    // same actions come out, so it applies, with the choice it recorded.
    mesh.run("plan", &["--rotate-tokens", "--out", plan]).await.expect(0);
    let secrets: Api<Secret> = Api::namespaced(east.client(), NAMESPACE);
    let patch = json!({"metadata": {"annotations": {"edited-by": "a person"}}});
    secrets
        .patch(
            "istio-remote-secret-west",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .expect("editing the secret");
    let patch = json!({"metadata": {"labels": {"team": "platform"}}});
    Api::<Namespace>::all(west.client())
        .patch(NAMESPACE, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("labelling the namespace");
    let data = |mut secrets: BTreeMap<String, Secret>| secrets.remove("istio-remote-secret-west").map(|s| s.data);
    let before = data(remote_secrets(east).await);
    let applied = mesh.apply(&[plan]).await;
    assert!(applied.stdout.contains("rotate"), "{applied}");
    // Compared, never printed: the data holds a token.
    assert!(before != data(remote_secrets(east).await), "the token was not rotated");
    mesh.assert_converged(&clusters.all()).await;

    // A remote secret deleted: planning again writes a new one where the
    // saved plan rotated it. Refused, nothing written.
    mesh.run("plan", &["--rotate-tokens", "--out", plan]).await.expect(0);
    secrets
        .delete("istio-remote-secret-west", &Default::default())
        .await
        .expect("deleting the secret");
    let before = object_state(&[east, west]).await;
    let stale = mesh.run("apply", &["--auto-approve", plan]).await.expect(1);
    assert_outcome("stale_plan_remote_secret_deleted", &stale);
    assert_eq!(
        before,
        object_state(&[east, west]).await,
        "a stale plan wrote something"
    );
    mesh.apply(&[]).await;

    // A root of trust changed in west: the clusters no longer trust each
    // other, and the fresh plan's blocker holds back what the saved plan ran.
    mesh.run("plan", &["--rotate-tokens", "--out", plan]).await.expect(0);
    install_istio(
        west,
        &Install {
            roots: OTHER_ROOT.into(),
            ..Install::correct("west", "flat")
        },
    )
    .await;
    let before = object_state(&[east, west]).await;
    let stale = mesh.run("apply", &["--auto-approve", plan]).await.expect(1);
    assert_outcome("stale_plan_root_of_trust_changed", &stale);
    assert_eq!(
        before,
        object_state(&[east, west]).await,
        "a stale plan wrote something"
    );
    install_istio(west, &Install::correct("west", "flat")).await;

    // A changed mesh.toml makes a saved plan stale too.
    mesh.run("plan", &["--out", plan]).await.expect(0);
    mesh.write(&[
        Entry::of(east).network("flat"),
        Entry::of(west).network("flat").remote(),
    ]);
    let before = object_state(&[east, west]).await;
    let stale = mesh.run("apply", &["--auto-approve", plan]).await.expect(1);
    assert_outcome("stale_plan_mesh_toml_changed", &stale);
    assert_eq!(
        before,
        object_state(&[east, west]).await,
        "a stale plan wrote something"
    );

    // A plan file of format 1 (no planning choices) is refused with the
    // command that makes a new one.
    let mut old = saved;
    old["format_version"] = 1.into();
    std::fs::write(plan, old.to_string()).unwrap();
    let refused = mesh.run("apply", &["--auto-approve", plan]).await.expect(1);
    assert!(
        refused
            .stderr
            .contains("its format_version is 1, this meshform reads version 2 (it was saved by an older meshform"),
        "{refused}"
    );
    assert!(refused.stderr.contains("meshform plan --out"), "{refused}");
    mesh.assert_no_token_leaked(&[east, west]).await;
}

/// A Lease for the mesh's apply lock, held by someone else; returns when it
/// expires, at the soonest (a taker times it from its own first sight).
async fn hold_lock(cluster: &Cluster, holder: &str, seconds: i32) -> Instant {
    let expires = Instant::now() + Duration::from_secs(seconds.unsigned_abs().into());
    write_lease(cluster, holder, seconds, jiff::Timestamp::now()).await;
    expires
}

/// Writes the mesh's lock Lease in `cluster` as a holder whose clock reads
/// `clock` would: held by `holder` for `seconds`, renewed "at" `clock`.
async fn write_lease(cluster: &Cluster, holder: &str, seconds: i32, clock: jiff::Timestamp) {
    let leases = Api::<Lease>::namespaced(cluster.client(), NAMESPACE);
    let name = format!("meshform-{MESH}");
    let spec = LeaseSpec {
        holder_identity: Some(holder.into()),
        lease_duration_seconds: Some(seconds),
        acquire_time: Some(MicroTime(clock)),
        renew_time: Some(MicroTime(clock)),
        ..LeaseSpec::default()
    };
    match leases.get_opt(&name).await.expect("reading the lease") {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name),
                    ..ObjectMeta::default()
                },
                spec: Some(spec),
            };
            leases
                .create(&PostParams::default(), &lease)
                .await
                .expect("creating the lease");
        }
        Some(mut lease) => {
            let renewed = lease.spec.get_or_insert_default();
            renewed.renew_time = spec.renew_time;
            leases
                .replace(&name, &PostParams::default(), &lease)
                .await
                .expect("renewing the lease");
        }
    }
}

// Regression (issue 29): the lock compared the holder's renewTime with the
// local clock, so a holder whose clock ran an hour behind lost a lease it was
// renewing to the first apply that looked. Expiry is now judged as client-go's
// leader election judges it: by how long the record has been seen unchanged.
#[tokio::test]
async fn a_lease_renewed_by_a_holder_with_a_skewed_clock_is_not_taken() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    let mesh = Mesh::flat(&[east, west]);
    let skew = jiff::SignedDuration::from_hours(1);
    // The lock cluster: the first primary by name.
    write_lease(east, "skewed-holder", 6, jiff::Timestamp::now() - skew).await;
    let renewer = {
        let east = east.client();
        tokio::spawn(async move {
            let leases = Api::<Lease>::namespaced(east, NAMESPACE);
            let name = format!("meshform-{MESH}");
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Ok(mut lease) = leases.get(&name).await {
                    if let Some(spec) = lease.spec.as_mut() {
                        spec.renew_time = Some(MicroTime(jiff::Timestamp::now() - skew));
                    }
                    let _ = leases.replace(&name, &PostParams::default(), &lease).await;
                }
            }
        })
    };
    // Everything but the lease, which its holder keeps renewing.
    let state = async || {
        let mut state = object_state(&[east, west]).await;
        state.retain(|key, _| !key.contains("/Lease/"));
        state
    };
    let before = state().await;
    // Waiting longer than the lease's duration: every renewal starts the watch again.
    let refused = mesh
        .run("apply", &["--auto-approve", "--lock-timeout", "15s"])
        .await
        .expect(1);
    renewer.abort();
    assert!(refused.stderr.contains("lock held by skewed-holder"), "{refused}");
    assert_eq!(before, state().await, "an apply wrote beside a live lease");
    let holder = Api::<Lease>::namespaced(east.client(), NAMESPACE)
        .get(&format!("meshform-{MESH}"))
        .await
        .expect("the lease")
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(holder.as_deref(), Some("skewed-holder"), "the lease changed hands");
}

// The other half of the same rule: an unchanged lease is free only once this
// apply has watched it for the lease's duration, however old its renewTime
// looks; then it is taken. Before, a lease whose renewTime was an hour old
// was taken at once, by any apply, without waiting.
#[tokio::test]
async fn an_unchanged_lease_is_taken_only_after_its_duration_has_been_watched() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    let mesh = Mesh::flat(&[east, west]);
    let an_hour_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
    write_lease(east, "gone-holder", 6, an_hour_ago).await;
    let before = object_state(&[east, west]).await;

    let refused = mesh.run("apply", &["--auto-approve"]).await.expect(1);
    assert!(refused.stderr.contains("lock held by gone-holder"), "{refused}");
    assert_eq!(before, object_state(&[east, west]).await, "a refused apply wrote");

    let started = Instant::now();
    mesh.apply(&["--lock-timeout", "60s"]).await;
    assert!(
        started.elapsed() >= Duration::from_secs(6),
        "the lease was taken before it had been seen unchanged for its 6 s ({:?})",
        started.elapsed()
    );
    assert_remote_secret(east, west, "west").await;
    assert_eq!(
        Api::<Lease>::namespaced(east.client(), NAMESPACE)
            .get_opt(&format!("meshform-{MESH}"))
            .await
            .expect("reading the lease"),
        None,
        "the lock is released after apply"
    );
    mesh.assert_converged(&[east, west]).await;
    mesh.assert_no_token_leaked(&[east, west]).await;
}

#[tokio::test]
async fn a_held_lock_fails_an_apply_fast_or_makes_it_wait() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    let mesh = Mesh::flat(&[east, west]);
    // The lock lives in the first primary by name (no `lock_cluster`): east.
    let expires = hold_lock(east, "ops-person (by hand)", 8).await;
    let before = object_state(&[east, west]).await;

    let started = Instant::now();
    let blocked = mesh.run("apply", &["--auto-approve"]).await.expect(1);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "no --lock-timeout: fail at once ({:?})",
        started.elapsed()
    );
    // The error names the holder.
    assert_outcome("held_lock_refused", &blocked);
    assert_eq!(
        before,
        object_state(&[east, west]).await,
        "a blocked apply wrote something"
    );

    assert!(
        Instant::now() < expires,
        "the lease expired before the test could wait for it"
    );
    mesh.apply(&["--lock-timeout", "60s"]).await;
    // meshform reads lease times to the second.
    let done = Instant::now();
    assert!(
        done + Duration::from_secs(1) >= expires,
        "the apply did not wait for the held lock: done {:?} before it expired",
        expires - done
    );
    assert_remote_secret(east, west, "west").await;
    mesh.assert_converged(&[east, west]).await;
    mesh.assert_no_token_leaked(&[east, west]).await;
}

#[tokio::test]
async fn a_second_apply_is_refused_and_an_abandoned_lock_expires() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    let mesh = Mesh::flat(&[east, west]);
    // A slow west keeps the first apply busy while it holds the lock.
    west.set_latency(Duration::from_millis(1500)).await;
    let mut first = mesh.spawn("apply", &["--auto-approve", "--lock-duration", "4s"]);
    let pid = first.id().expect("running");
    let leases: Api<Lease> = Api::namespaced(east.client(), NAMESPACE);
    let lease = format!("meshform-{MESH}");
    eventually(
        "the first apply to take the lock",
        Duration::from_secs(60),
        async || {
            let held = leases.get_opt(&lease).await.ok()??;
            held.spec?.holder_identity.filter(|h| h.contains(&format!("pid {pid}")))
        },
    )
    .await;

    // A second apply while the first runs: refused, naming the first.
    let second = mesh.run("apply", &["--auto-approve"]).await.expect(1);
    // The snapshot redacts the holder; this names it.
    assert!(
        second.stderr.contains(&format!("pid {pid}")),
        "the error names the holder:\n{second}"
    );
    assert_outcome("second_apply_refused", &second);
    assert!(
        first.try_wait().expect("polling the first apply").is_none(),
        "the first apply ended too soon"
    );

    // The first dies holding the lock; nothing renews it, so it expires.
    first.kill().await.expect("killing the first apply");
    let killed = first.wait_with_output().await.expect("the first apply's output");
    mesh.record(&String::from_utf8_lossy(&killed.stdout));
    mesh.record(&String::from_utf8_lossy(&killed.stderr));
    west.set_latency(Duration::ZERO).await;
    let third = mesh.apply(&["--lock-timeout", "30s"]).await;
    assert_outcome("apply_after_abandoned_lock", &third);
    assert_eq!(
        leases.get_opt(&lease).await.expect("reading the lease"),
        None,
        "the lock is released after apply"
    );
    // Whatever the killed run left half done, a re-run converges.
    assert_remote_secret(east, west, "west").await;
    assert_remote_secret(west, east, "east").await;
    mesh.assert_converged(&[east, west]).await;
    mesh.assert_no_token_leaked(&[east, west]).await;
}

#[tokio::test]
async fn a_cluster_stopped_mid_apply_fails_the_run_and_a_rerun_converges() {
    let clusters = ControlPlane::shared().clusters(&["east", "west", "north"]).await;
    let all @ [east, west, north] = clusters.by_names(["east", "west", "north"]);
    let mesh = Mesh::flat(&all);
    // Apply asks once every cluster is read and the plan made; north stops
    // answering, and then stops, before the answer lets the first phase start.
    // (Stopping alone can wait behind other tests' cluster starts.)
    let (run, mut terminal) = mesh.stream_asking("apply", &["--format", "json"]);
    run.wait_for_stderr("Only 'yes' will be accepted", Duration::from_secs(120))
        .await;
    north.set_latency(Duration::from_secs(60)).await;
    north.stop().await;
    terminal.answer("yes");
    let out = run.finish(&mesh).await.expect(1);
    let events = out.events();
    let stdout = &out.stdout;
    let summary = events
        .iter()
        .find(|e| e["event"] == "summary")
        .unwrap_or_else(|| panic!("{stdout}"));
    let failed = summary["failed"].as_array().expect("failed");
    assert!(!failed.is_empty(), "{summary}");
    assert!(
        events
            .iter()
            .filter(|e| e["event"] == "failed")
            .all(|e| e["action"]["cluster"] == "north"),
        "only north's actions fail: {stdout}"
    );
    // No phase starts after a failed one: no remote secret was written.
    assert!(!summary["skipped"].as_array().expect("skipped").is_empty(), "{summary}");
    assert!(
        events
            .iter()
            .filter(|e| e["event"] == "done")
            .all(|e| e["action"]["phase"] == "network"),
        "{stdout}"
    );
    for c in [east, west] {
        assert!(
            remote_secrets(c).await.is_empty(),
            "{}: attach ran after a failed phase",
            c.name()
        );
    }
    let leases = Api::<Lease>::namespaced(east.client(), NAMESPACE);
    assert_eq!(
        leases.get_opt(&format!("meshform-{MESH}")).await.unwrap(),
        None,
        "the lock is released after a failure"
    );

    north.start().await;
    north.set_latency(Duration::ZERO).await;
    mesh.apply(&[]).await;
    for (primary, peer) in [
        (east, west),
        (east, north),
        (west, east),
        (west, north),
        (north, east),
        (north, west),
    ] {
        assert_remote_secret(primary, peer, peer.name()).await;
    }
    mesh.assert_converged(&all).await;
    mesh.assert_no_token_leaked(&all).await;
}

/// A remote secret made by hand (or by istioctl) for `peer`.
async fn hand_made_secret(primary: &Cluster, peer: &str) -> Secret {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(format!("istio-remote-secret-{peer}")),
            labels: Some(BTreeMap::from([("istio/multiCluster".into(), "true".into())])),
            annotations: Some(BTreeMap::from([("networking.istio.io/cluster".into(), peer.into())])),
            ..ObjectMeta::default()
        },
        string_data: Some(BTreeMap::from([(peer.to_string(), "made by hand".to_string())])),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(primary.client(), NAMESPACE)
        .create(&PostParams::default(), &secret)
        .await
        .expect("creating the hand-made secret")
}

#[tokio::test]
async fn an_unmanaged_remote_secret_is_a_conflict_until_adopted() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    let hand_made = hand_made_secret(east, "west").await;
    let mesh = Mesh::flat(&[east, west]);

    let plan = mesh.run("plan", &["--format", "json"]).await.expect(0).json();
    let conflicts: Vec<&Value> = plan["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["kind"] == "conflict")
        .collect();
    assert_eq!(conflicts.len(), 1, "{plan:#}");
    assert_eq!(conflicts[0]["cluster"], "east");
    assert!(
        conflicts[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("istio-remote-secret-west")),
        "{plan:#}"
    );
    let out = mesh.apply(&[]).await;
    // The conflict is reported.
    assert_outcome("unmanaged_secret_conflict", &out);
    let after = remote_secrets(east).await["istio-remote-secret-west"].clone();
    assert_eq!(
        after.metadata.resource_version, hand_made.metadata.resource_version,
        "the unmanaged secret was changed"
    );
    assert_eq!(after.data, hand_made.data);
    // Everything else is applied.
    assert_remote_secret(west, east, "east").await;
    mesh.assert_converged(&clusters.all()).await;

    let adopted = mesh.apply(&["--adopt"]).await;
    assert_outcome("unmanaged_secret_adopted", &adopted);
    let taken = assert_remote_secret(east, west, "west").await;
    assert_eq!(
        taken.metadata.uid, hand_made.metadata.uid,
        "adoption takes the object over, it does not replace it"
    );
    let plan = mesh
        .run("plan", &["--format", "json", "--detailed-exitcode"])
        .await
        .expect(0)
        .json();
    assert_eq!(
        plan["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .filter(|f| f["kind"] == "conflict")
            .count(),
        0,
        "{plan:#}"
    );
    mesh.assert_converged(&[east, west]).await;
    mesh.assert_no_token_leaked(&[east, west]).await;
}

/// A Secret made by hand, without meshform's labels, as a user would leave one.
async fn make_by_hand(secrets: &Api<Secret>, name: &str) -> Secret {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        string_data: Some(BTreeMap::from([("legacy".to_string(), "made by hand".to_string())])),
        ..Secret::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("creating the secret")
}

/// The Secret `make_by_hand` made is as it was: nothing merged into it.
async fn assert_untouched(secrets: &Api<Secret>, made: &Secret) {
    let name = made.metadata.name.as_deref().expect("a named secret");
    let now = secrets.get(name).await.expect("the secret");
    assert_eq!(
        now.metadata.resource_version, made.metadata.resource_version,
        "the secret was changed"
    );
}

/// Deletes the Secret `make_by_hand` made, then applies: the remote secret
/// of its name is written.
async fn remove_by_hand_and_apply(mesh: &Mesh, secrets: &Api<Secret>, made: &Secret) {
    let name = made.metadata.name.as_deref().expect("a named secret");
    secrets
        .delete(name, &Default::default())
        .await
        .expect("deleting the secret");
    mesh.apply(&[]).await;
}

// Regression: server-side apply merged meshform's remote secret into an
// unlabelled Secret of the same name, which observe (listing by label) never
// saw: the object was taken over and got a second cluster id.
#[tokio::test]
async fn an_unlabelled_secret_of_the_same_name_is_not_merged_into() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    let secrets: Api<Secret> = Api::namespaced(east.client(), NAMESPACE);
    let made = make_by_hand(&secrets, "istio-remote-secret-west").await;
    let mesh = Mesh::flat(&[east, west]);

    let out = mesh.run("apply", &["--auto-approve"]).await.expect(1);
    assert_outcome("unlabelled_secret_not_merged", &out);
    assert_untouched(&secrets, &made).await;
    // The rest of the phase went ahead.
    assert_remote_secret(west, east, "east").await;

    remove_by_hand_and_apply(&mesh, &secrets, &made).await;
    assert_remote_secret(east, west, "west").await;
    mesh.assert_converged(&[east, west]).await;
    mesh.assert_no_token_leaked(&[east, west]).await;
}

// The window the test above cannot reach through the binary: a Secret of the
// name made after observe read the namespace, before the write. A new remote
// secret is a create, which the API server refuses; the token minted for it
// is revoked at once.
#[tokio::test]
async fn a_secret_made_after_observe_is_not_merged_into_and_its_token_is_revoked() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    let mesh = Mesh::flat(&[east, west]);
    let (topology, connections) = mesh.connect().await;
    let observed = observe::observe(&topology, &connections).await;
    let plan = plan::plan(&topology, &observed, &Options::default()).expect("the mesh plans");

    let secrets: Api<Secret> = Api::namespaced(east.client(), NAMESPACE);
    let made = make_by_hand(&secrets, "istio-remote-secret-west").await;
    let (succeeded, failures) = library::execute(&plan, &topology, &observed, &connections, 8).await;
    assert!(!succeeded);
    let failed: Vec<String> = failures.iter().map(|f| format!("{}: {}", f.cluster, f.error)).collect();
    assert_eq!(
        failed,
        [format!(
            "east: Secret {NAMESPACE}/istio-remote-secret-west already exists and is not managed by meshform; it \
             was left as it is (delete it, or label it istio/multiCluster=true and apply with --adopt)"
        )]
    );
    assert_untouched(&secrets, &made).await;
    // The rest of the phase went ahead; west keeps the binding of east's
    // token for it, and none for the token east never got.
    assert_remote_secret(west, east, "east").await;
    let bindings = |holder: &str| {
        let prefix = format!("meshform-reader-binding-{holder}-");
        async move {
            list(
                &Api::<Secret>::namespaced(west.client(), NAMESPACE),
                &ListParams::default().labels("meshform.io/reader-binding=true"),
            )
            .await
            .into_iter()
            .filter(|s| s.metadata.name.as_deref().is_some_and(|n| n.starts_with(&prefix)))
            .count()
        }
    };
    assert_eq!(bindings("east").await, 0, "the refused secret's token was not revoked");
    let east_bindings = list(
        &Api::<Secret>::namespaced(east.client(), NAMESPACE),
        &ListParams::default().labels("meshform.io/reader-binding=true"),
    )
    .await;
    assert_eq!(east_bindings.len(), 1, "west's token for east is bound");

    remove_by_hand_and_apply(&mesh, &secrets, &made).await;
    assert_remote_secret(east, west, "west").await;
    assert_eq!(bindings("east").await, 1);
    mesh.assert_converged(&[east, west]).await;
    mesh.assert_no_token_leaked(&[east, west]).await;
}

#[tokio::test]
async fn rotating_tokens_replaces_them_in_place() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    let mesh = Mesh::flat(&[east, west]);
    mesh.apply(&[]).await;
    let token = |s: &Secret, peer: &str| support::mesh::token_of(&s.data.as_ref().unwrap()[peer].0).expect("token");
    let before = assert_remote_secret(east, west, "west").await;
    let old_token = token(&before, "west");
    mesh.assert_no_token_leaked(&[east, west]).await;

    let out = mesh.apply(&["--rotate-tokens", "--diff"]).await;
    assert_outcome("rotate_tokens", &out);
    let after = assert_remote_secret(east, west, "west").await;
    // In place: the same object, never a moment without the peer.
    assert_eq!(after.metadata.uid, before.metadata.uid);
    let new_token = token(&after, "west");
    assert_ne!(new_token, old_token, "the token was not rotated");
    assert!(!out.to_string().contains(&old_token) && !out.to_string().contains(&new_token));
    mesh.assert_converged(&[east, west]).await;
    mesh.assert_no_token_leaked(&[east, west]).await;
}

#[tokio::test]
async fn an_unreachable_cluster_is_deferred_and_never_detached() {
    let clusters = ControlPlane::shared().clusters(&["east", "west", "north"]).await;
    let all @ [east, west, north] = clusters.by_names(["east", "west", "north"]);
    let mesh = Mesh::flat(&all);
    mesh.apply(&[]).await;
    let secret_rv =
        async |primary: &Cluster, name: &str| remote_secrets(primary).await[name].metadata.resource_version.clone();
    let east_for_north = secret_rv(east, "istio-remote-secret-north").await;
    let west_for_north = secret_rv(west, "istio-remote-secret-north").await;
    let east_for_west = secret_rv(east, "istio-remote-secret-west").await;

    north.stop().await;
    let refused = mesh
        .run("apply", &["--auto-approve", "--rotate-tokens"])
        .await
        .expect(1);
    assert_outcome("unreachable_refused", &refused);
    // Deferred: the reachable clusters' tokens rotate, north's secrets stay as they are.
    let out = mesh
        .apply(&["--skip-unreachable", "--allow-detach", "--rotate-tokens"])
        .await;
    // The deferred cluster is listed.
    assert_outcome("unreachable_skipped", &out);
    assert_ne!(
        secret_rv(east, "istio-remote-secret-west").await,
        east_for_west,
        "east's secret for west was not rotated"
    );
    assert_eq!(
        secret_rv(east, "istio-remote-secret-north").await,
        east_for_north,
        "a secret for an unknown cluster changed"
    );
    assert_eq!(
        secret_rv(west, "istio-remote-secret-north").await,
        west_for_north,
        "a secret for an unknown cluster changed"
    );

    north.start().await;
    mesh.assert_converged(&all).await;
    mesh.assert_no_token_leaked(&all).await;
}

// Regression: a lost lock (renewal refused because another apply took the
// Lease) went unnoticed, and apply went on to the next phases regardless.
#[tokio::test]
async fn an_apply_that_loses_its_lock_starts_no_further_phase() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    let mesh = Mesh::flat(&[east, west]);
    let (run, mut terminal) = mesh.stream_asking("apply", &["--format", "json", "--lock-duration", "2s"]);
    // While apply waits for its answer, holding the lock: a slow west will
    // keep the first phase busy for seconds, and someone takes the lease
    // over, as an apply would once it looks expired. Renewals come every
    // 2s/3, so apply learns of it during its first phase at the latest.
    run.wait_for_stderr("Only 'yes' will be accepted", Duration::from_secs(120))
        .await;
    west.set_latency(Duration::from_millis(1500)).await;
    let leases: Api<Lease> = Api::namespaced(east.client(), NAMESPACE);
    let name = format!("meshform-{MESH}");
    eventually("taking the lease over", Duration::from_secs(30), async || {
        let mut lease = leases.get(&name).await.ok()?;
        let spec = lease.spec.as_mut()?;
        spec.holder_identity = Some("thief".into());
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        spec.lease_duration_seconds = Some(600);
        leases.replace(&name, &PostParams::default(), &lease).await.ok()
    })
    .await;
    terminal.answer("yes");
    let out = run.finish(&mesh).await.expect(1);
    let events = out.events();
    assert!(
        events
            .iter()
            .filter(|e| e["event"] == "done")
            .all(|e| e["action"]["phase"] == "network"),
        "a phase started after the lock was lost:\n{out}"
    );
    assert!(out.stdout.contains("lock"), "the report says the lock was lost:\n{out}");
    for c in [east, west] {
        assert!(
            remote_secrets(c).await.is_empty(),
            "{}: attach ran without the lock",
            c.name()
        );
    }
    let lease = leases.get(&name).await.expect("the lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("thief"),
        "the new holder's lease is left alone"
    );

    leases
        .delete(&name, &Default::default())
        .await
        .expect("the thief lets go");
    west.set_latency(Duration::ZERO).await;
    mesh.apply(&[]).await;
    mesh.assert_converged(&[east, west]).await;
    mesh.assert_no_token_leaked(&[east, west]).await;
}

#[tokio::test]
async fn two_applies_at_once_write_once() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    let mesh = Mesh::flat(&[east, west]);
    let first = mesh.stream("apply", &["--auto-approve"]);
    let second = mesh.stream("apply", &["--auto-approve"]);
    let (first, second) = (first.finish(&mesh).await, second.finish(&mesh).await);
    let (won, lost) = match (first.code, second.code) {
        (0, 1) => (first, second),
        (1, 0) => (second, first),
        _ => panic!("exactly one apply succeeds:\n{first}\n{second}"),
    };
    // Which of the two wins, and how the loser fails, varies: no snapshot.
    assert!(won.stdout.contains("Apply complete"), "{won}");
    // The loser either met the held lock or, taking it later, found its plan
    // out of date: either way it wrote nothing of its own.
    assert!(
        lost.stderr.contains("lock held by meshform") || lost.stderr.contains("plan is stale"),
        "{lost}"
    );
    assert!(!lost.stdout.contains("done "), "{lost}");
    mesh.assert_converged(&[east, west]).await;
    mesh.assert_no_token_leaked(&[east, west]).await;
}

#[tokio::test]
async fn a_primary_that_becomes_a_remote_gives_up_its_secrets() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    let mesh = Mesh::flat(&[east, west]);
    mesh.apply(&[]).await;

    mesh.write(&[
        Entry::of(east).network("flat"),
        Entry::of(west).network("flat").remote(),
    ]);
    let plan = mesh.run("plan", &["--format", "json"]).await.expect(0).json();
    assert!(
        plan["changes"]
            .as_array()
            .expect("changes")
            .contains(&json!({"change": "became_remote", "cluster": "west"})),
        "{plan:#}"
    );
    let refused = mesh.run("apply", &["--auto-approve"]).await.expect(1);
    assert_outcome("became_remote_refused", &refused);
    mesh.apply(&["--allow-detach"]).await;
    assert!(
        remote_secrets(west).await.is_empty(),
        "a remote holds no remote secrets"
    );
    assert_remote_secret(east, west, "west").await;
    mesh.assert_converged(&[east, west]).await;

    // And back: a primary again, it holds a secret for east once more.
    mesh.write(&[Entry::of(east).network("flat"), Entry::of(west).network("flat")]);
    mesh.apply(&[]).await;
    assert_remote_secret(west, east, "east").await;
    mesh.assert_converged(&[east, west]).await;
    mesh.assert_no_token_leaked(&[east, west]).await;
}

#[tokio::test]
async fn token_mode_secret_writes_never_expiring_tokens_that_work() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    let mesh = Mesh::new(&[]);
    mesh.write_with(
        &[Entry::of(east).network("flat"), Entry::of(west).network("flat")],
        "\n[mesh.tokens]\nmode = \"secret\"\n",
    );
    mesh.apply(&[]).await;
    let secret = remote_secrets(east).await["istio-remote-secret-west"].clone();
    let token = support::mesh::token_of(&secret.data.as_ref().unwrap()["west"].0).expect("token");
    assert!(
        claims(&token).get("exp").is_none(),
        "a legacy token never expires: {}",
        claims(&token)
    );
    let services = Api::<Service>::namespaced(west.client_with_token(&token).await, NAMESPACE)
        .list(&ListParams::default())
        .await;
    assert!(services.is_ok(), "the legacy token reads its cluster: {services:?}");
    mesh.assert_converged(&[east, west]).await;
    mesh.assert_no_token_leaked(&[east, west]).await;
}

#[tokio::test]
async fn a_second_secret_for_a_registered_cluster_id_is_never_written() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    // istioctl's own naming differs from meshform's; Istio reads the data key.
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("istioctl-secret-for-west".into()),
            labels: Some(BTreeMap::from([("istio/multiCluster".into(), "true".into())])),
            ..ObjectMeta::default()
        },
        string_data: Some(BTreeMap::from([("west".to_string(), "made by istioctl".to_string())])),
        ..Secret::default()
    };
    let made = Api::<Secret>::namespaced(east.client(), NAMESPACE)
        .create(&PostParams::default(), &secret)
        .await
        .expect("creating the secret");
    let mesh = Mesh::flat(&[east, west]);
    let plan = mesh.run("plan", &["--format", "json"]).await.expect(0).json();
    let conflict = plan["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["code"] == "meshform::plan::remote_secret_duplicate")
        .unwrap_or_else(|| panic!("{plan:#}"));
    assert_eq!(conflict["cluster"], "east");
    mesh.apply(&["--adopt"]).await;
    let held = remote_secrets(east).await;
    assert_eq!(
        names(&held),
        ["istioctl-secret-for-west"],
        "a second secret for west was written"
    );
    assert_eq!(
        held["istioctl-secret-for-west"].metadata.resource_version,
        made.metadata.resource_version
    );
    assert_remote_secret(west, east, "east").await;
    mesh.assert_converged(&[east, west]).await;
    mesh.assert_no_token_leaked(&[west]).await;
}
