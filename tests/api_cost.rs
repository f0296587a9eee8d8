//! What meshform costs the API servers (issue 9), counted on real ones: every
//! request of observe and apply goes through a counting tower layer around
//! the kube client of each cluster's connection.
//!
//! - observe makes exactly `observe::REQUESTS_PER_CLUSTER` requests to each
//!   cluster, all reads, whether the mesh has 3 clusters or 8: the cost of a
//!   plan grows with the number of clusters, not with the number of pairs;
//! - applying a converged mesh again reads and writes nothing more than that:
//!   zero writes.
//!
//! Counts only: no test here asserts a duration.

mod support;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::{Method, Request, Response};
use kube::client::Body;
use meshform::access::Connections;
use meshform::observe::{self, REQUESTS_PER_CLUSTER};
use meshform::plan::{self, Options};
use meshform::topology::Topology;
use support::controlplane::ControlPlane;
use support::library;
use support::mesh::Mesh;

/// Method and path of every request one cluster received.
#[derive(Clone, Default)]
struct Requests(Arc<Mutex<Vec<(Method, String)>>>);

impl Requests {
    fn take(&self) -> Vec<(Method, String)> {
        std::mem::take(&mut *self.0.lock().expect("request log"))
    }
}

/// A tower service that records each request, then sends it through the
/// cluster's own client (its address, TLS and credentials).
#[derive(Clone)]
struct Counting {
    inner: kube::Client,
    seen: Requests,
}

impl tower::Service<Request<Body>> for Counting {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, kube::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), kube::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let line = (request.method().clone(), request.uri().path().to_string());
        self.seen.0.lock().expect("request log").push(line);
        let inner = self.inner.clone();
        Box::pin(async move { inner.send(request).await })
    }
}

/// Connects to every cluster of mesh.toml the way the CLI does, then puts a
/// counting layer in front of each client.
async fn connect_counted(mesh: &Mesh) -> (Topology, Connections, BTreeMap<String, Requests>) {
    let (topology, mut connections) = mesh.connect().await;
    let mut counters = BTreeMap::new();
    for connection in connections.ready_mut() {
        let seen = Requests::default();
        let counting = Counting {
            inner: connection.client.clone(),
            seen: seen.clone(),
        };
        connection.client = kube::Client::new(counting, connection.client.default_namespace());
        counters.insert(connection.cluster.clone(), seen);
    }
    (topology, connections, counters)
}

fn is_write(method: &Method) -> bool {
    ![Method::GET, Method::HEAD, Method::OPTIONS].contains(method)
}

/// Plans and executes like `meshform apply --auto-approve` (without the
/// lock), through the counting clients. Returns the number of actions.
async fn apply_counted(topology: &Topology, connections: &Connections) -> usize {
    let observed = observe::observe(topology, connections).await;
    let plan = plan::plan(topology, &observed, &Options::default()).expect("the mesh plans");
    if plan.is_empty() {
        return 0;
    }
    let (succeeded, failures) = library::execute(&plan, topology, &observed, connections, 16).await;
    assert!(succeeded, "apply failed: {failures:?}");
    plan.actions.len()
}

/// `gateway_api`: the clusters given the Gateway API CRDs (issue 31); the
/// others answer the list of Gateways with a 404, which costs the same.
async fn observe_counts(names: &[&str], gateway_api: &[&str]) -> BTreeMap<String, Vec<(Method, String)>> {
    let clusters = ControlPlane::shared().clusters(names).await;
    for name in gateway_api {
        support::ambient::install_gateway_api(clusters.by_name(name)).await;
    }
    let mesh = Mesh::flat(&clusters.all());
    let (topology, connections, counters) = connect_counted(&mesh).await;
    let observed = observe::observe(&topology, &connections).await;
    for name in names {
        assert!(
            observed.facts(name).is_some(),
            "{name} was read: {:?}",
            observed.clusters[*name]
        );
    }
    counters
        .iter()
        .map(|(name, seen)| (name.clone(), seen.take()))
        .collect()
}

#[tokio::test]
async fn observe_makes_the_same_reads_of_every_cluster_however_large_the_mesh() {
    let small = observe_counts(&["east", "west", "north"], &["east"]).await;
    // As many clusters as the shared plane holds comfortably next to other tests.
    let large_names = ["c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8"];
    let large = observe_counts(&large_names, &[]).await;
    for (mesh, counts) in [("3 clusters", &small), ("8 clusters", &large)] {
        for (cluster, requests) in counts {
            assert_eq!(
                requests.len(),
                REQUESTS_PER_CLUSTER,
                "observe of {cluster} in a mesh of {mesh}: {requests:#?}"
            );
            assert!(
                requests.iter().all(|(method, _)| *method == Method::GET),
                "observe only reads: {requests:#?}"
            );
        }
    }
    // Every cluster is read alike, in a small mesh as in a large one, with
    // the Gateway API (east) or without it (c1).
    let paths = |requests: &Vec<(Method, String)>| {
        let mut paths: Vec<String> = requests.iter().map(|(_, p)| p.clone()).collect();
        paths.sort();
        paths
    };
    assert_eq!(paths(&small["east"]), paths(&large["c1"]));
}

#[tokio::test]
async fn a_converged_re_apply_writes_nothing() {
    let clusters = ControlPlane::shared().clusters(&["east", "west", "north"]).await;
    let mesh = Mesh::flat(&clusters.all());
    let (topology, connections, counters) = connect_counted(&mesh).await;

    let actions = apply_counted(&topology, &connections).await;
    assert!(actions > 0, "a fresh mesh needs writes");
    let requests: Vec<(Method, String)> = counters.values().flat_map(|s| s.take()).collect();
    let first = requests.iter().filter(|(m, _)| is_write(m)).count();
    // Observe's metadata list of the namespace's Secrets already tells apply
    // which names are taken: no read before each new remote secret (issue 20).
    let reads_of_one_secret: Vec<_> = requests
        .iter()
        .filter(|(m, p)| *m == Method::GET && p.contains("/secrets/istio-remote-secret-"))
        .collect();
    assert!(reads_of_one_secret.is_empty(), "{reads_of_one_secret:#?}");
    assert!(
        first >= actions,
        "every action writes: {first} writes for {actions} actions"
    );
    mesh.assert_converged(&clusters.all()).await;

    let actions = apply_counted(&topology, &connections).await;
    assert_eq!(actions, 0, "a converged mesh plans nothing");
    for (cluster, seen) in &counters {
        let requests = seen.take();
        let writes: Vec<_> = requests.iter().filter(|(m, _)| is_write(m)).collect();
        assert!(
            writes.is_empty(),
            "a converged re-apply wrote to {cluster}: {writes:#?}"
        );
        assert_eq!(requests.len(), REQUESTS_PER_CLUSTER, "{cluster}: {requests:#?}");
    }
}
