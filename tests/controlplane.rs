//! The test control plane itself: real apiservers that behave like the
//! clusters meshform meets (separate identities, RBAC, Istio CRDs, the
//! controllers for service accounts, namespaces and garbage collection) and
//! fault controls that work. Every other integration test builds on these.

mod support;

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams};
use serde_json::json;
use support::controlplane::{Cluster, ControlPlane};

/// Controllers react within seconds; this only bounds a broken one.
const EVENTUALLY: Duration = Duration::from_secs(90);

/// Polls `check` until it yields a value or [`EVENTUALLY`] passes.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn status_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    }
}

/// A bound token for a new ServiceAccount, from the TokenRequest API.
async fn service_account_token(cluster: &Cluster, namespace: &str, name: &str) -> String {
    let accounts: Api<ServiceAccount> = Api::namespaced(cluster.client(), namespace);
    accounts
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: meta(name),
                ..ServiceAccount::default()
            },
        )
        .await
        .expect("creating the service account");
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let issued = accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .expect("TokenRequest");
    issued.status.expect("TokenRequest status").token
}

async fn who_am_i(client: kube::Client) -> Result<String, kube::Error> {
    let review = Api::<SelfSubjectReview>::all(client)
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await?;
    Ok(review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .unwrap_or_default())
}

fn gateway_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("networking.istio.io", "v1", "Gateway"))
}

#[tokio::test]
async fn three_clusters_each_serve_their_own_namespaces() {
    // A context name that is no valid DNS label: meshform meets such names in real kubeconfigs.
    let names = ["east", "west", "gke_proj_europe-west1_prod"];
    let clusters = ControlPlane::shared().clusters(&names).await;
    assert_eq!(clusters.len(), 3);

    let mut uids = BTreeSet::new();
    for (cluster, name) in clusters.iter().zip(names) {
        assert_eq!(cluster.name(), name);
        let namespaces = Api::<Namespace>::all(cluster.client())
            .list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("listing namespaces of {name}: {e}"));
        let listed: BTreeSet<String> = namespaces
            .items
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        for expected in ["default", "kube-system", "istio-system"] {
            assert!(
                listed.contains(expected),
                "{name} lacks namespace {expected}: {listed:?}"
            );
        }
        let kube_system = namespaces
            .items
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some("kube-system"))
            .and_then(|n| n.metadata.uid.clone())
            .expect("kube-system has a UID");
        assert_eq!(
            kube_system,
            cluster.kube_system_uid(),
            "the plane reports {name}'s kube-system UID"
        );
        uids.insert(kube_system);
    }
    assert_eq!(uids.len(), 3, "kube-system UIDs must differ between clusters: {uids:?}");

    // The batch kubeconfig names every context as asked, for tools that read it whole.
    let kubeconfig = kube::config::Kubeconfig::read_from(clusters.kubeconfig()).expect("reading the kubeconfig");
    let contexts: BTreeSet<&str> = kubeconfig.contexts.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(contexts, names.into_iter().collect());
}

#[tokio::test]
async fn service_account_tokens_authenticate_only_on_their_own_cluster() {
    let clusters = ControlPlane::shared().clusters(&["a", "b"]).await;
    let (a, b) = (clusters.by_name("a"), clusters.by_name("b"));

    let token = service_account_token(a, "default", "probe").await;
    let user = who_am_i(a.client_with_token(&token).await)
        .await
        .expect("cluster a accepts its own token");
    assert_eq!(user, "system:serviceaccount:default:probe");

    // b has its own issuer and signing key; it must not trust a's tokens.
    let refused = who_am_i(b.client_with_token(&token).await)
        .await
        .expect_err("cluster b must refuse a's token");
    assert_eq!(status_code(&refused), Some(401), "{refused}");

    // The admin credentials are per cluster too.
    let admin_a = a.config().await;
    let admin_token = serde_json::to_value(&admin_a.auth_info).expect("auth info")["token"]
        .as_str()
        .map(str::to_owned);
    if let Some(admin_token) = admin_token {
        let refused = who_am_i(b.client_with_token(&admin_token).await)
            .await
            .expect_err("cluster b must refuse a's admin token");
        assert_eq!(status_code(&refused), Some(401), "{refused}");
    }
}

#[tokio::test]
async fn a_narrow_role_is_forbidden_outside_its_grant() {
    let clusters = ControlPlane::shared().clusters(&["rbac"]).await;
    let cluster = &clusters[0];
    cluster.create_namespace("team-a").await;
    cluster.create_namespace("team-b").await;

    let role = Role {
        metadata: meta("configmap-reader"),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            verbs: vec!["get".into(), "list".into()],
            ..PolicyRule::default()
        }]),
    };
    Api::<Role>::namespaced(cluster.client(), "team-a")
        .create(&PostParams::default(), &role)
        .await
        .expect("creating the role");
    let binding = RoleBinding {
        metadata: meta("reader"),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "configmap-reader".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "reader".into(),
            namespace: Some("team-a".into()),
            ..Subject::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(cluster.client(), "team-a")
        .create(&PostParams::default(), &binding)
        .await
        .expect("creating the role binding");

    let token = service_account_token(cluster, "team-a", "reader").await;
    let reader = cluster.client_with_token(&token).await;
    Api::<ConfigMap>::namespaced(reader.clone(), "team-a")
        .list(&ListParams::default())
        .await
        .expect("the role grants listing configmaps in team-a");

    let other_namespace = Api::<ConfigMap>::namespaced(reader.clone(), "team-b")
        .list(&ListParams::default())
        .await
        .expect_err("configmaps in team-b are outside the grant");
    assert_eq!(status_code(&other_namespace), Some(403), "{other_namespace}");
    let other_resource = Api::<Secret>::namespaced(reader, "team-a")
        .list(&ListParams::default())
        .await
        .expect_err("secrets are outside the grant");
    assert_eq!(status_code(&other_resource), Some(403), "{other_resource}");
}

#[tokio::test]
async fn gateways_round_trip_and_schema_violations_are_rejected() {
    let clusters = ControlPlane::shared().clusters(&["mesh"]).await;
    let cluster = &clusters[0];
    let resource = gateway_resource();
    let gateways: Api<DynamicObject> = Api::namespaced_with(cluster.client(), "istio-system", &resource);

    let spec = json!({
        "selector": { "istio": "eastwestgateway" },
        "servers": [{
            "port": { "number": 15443, "name": "tls", "protocol": "TLS" },
            "tls": { "mode": "AUTO_PASSTHROUGH" },
            "hosts": ["*.local"]
        }]
    });
    let mut gateway = DynamicObject::new("cross-network-gateway", &resource).within("istio-system");
    gateway.data = json!({ "spec": spec });
    gateways
        .create(&PostParams::default(), &gateway)
        .await
        .expect("creating a valid Gateway");
    let read = gateways.get("cross-network-gateway").await.expect("reading it back");
    assert_eq!(read.data["spec"], spec);
    assert!(read.metadata.uid.is_some());

    // The older served versions read the same object.
    let v1beta1 = ApiResource::from_gvk(&GroupVersionKind::gvk("networking.istio.io", "v1beta1", "Gateway"));
    let old: Api<DynamicObject> = Api::namespaced_with(cluster.client(), "istio-system", &v1beta1);
    assert_eq!(
        old.get("cross-network-gateway").await.expect("v1beta1 read").data["spec"],
        spec
    );

    let invalid = [
        (
            "a string port number",
            json!({ "servers": [{ "port": { "number": "eighty", "name": "http", "protocol": "HTTP" }, "hosts": ["*"] }] }),
        ),
        (
            "an unknown TLS mode",
            json!({ "servers": [{ "port": { "number": 443, "name": "https", "protocol": "HTTPS" }, "hosts": ["*"], "tls": { "mode": "SOMETIMES" } }] }),
        ),
        (
            "a server without hosts",
            json!({ "servers": [{ "port": { "number": 80, "name": "http", "protocol": "HTTP" } }] }),
        ),
        ("a non-string selector value", json!({ "selector": { "istio": 7 } })),
    ];
    for (i, (what, spec)) in invalid.into_iter().enumerate() {
        let mut bad = DynamicObject::new(&format!("invalid-{i}"), &resource).within("istio-system");
        bad.data = json!({ "spec": spec });
        let err = gateways.create(&PostParams::default(), &bad).await.expect_err(what);
        assert_eq!(status_code(&err), Some(422), "{what}: {err}");
    }
}

#[tokio::test]
async fn stopped_clusters_refuse_connections_and_restart_with_their_data() {
    let clusters = ControlPlane::shared().clusters(&["flaky", "steady"]).await;
    let (flaky, steady) = (clusters.by_name("flaky"), clusters.by_name("steady"));
    let maps: Api<ConfigMap> = Api::namespaced(flaky.client(), "default");
    maps.create(
        &PostParams::default(),
        &ConfigMap {
            metadata: meta("survivor"),
            ..ConfigMap::default()
        },
    )
    .await
    .expect("creating a configmap");
    let uid_before = flaky.kube_system_uid().to_owned();

    flaky.stop().await;
    // The port stays reserved while the cluster is down (tests/controlplane/proxy.go):
    // a connection is reset at once instead of refused, and carries nothing.
    if let Ok(mut stream) = TcpStream::connect_timeout(&flaky.address(), Duration::from_secs(2)) {
        stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let read = stream.read(&mut [0; 16]);
        assert!(
            matches!(read, Ok(0)) || read.as_ref().is_err_and(|e| e.kind() == ErrorKind::ConnectionReset),
            "a stopped cluster's port must cut connections at once, got {read:?}"
        );
    }
    assert!(
        maps.get("survivor").await.is_err(),
        "requests to a stopped cluster fail"
    );
    // The other cluster is unaffected.
    Api::<Namespace>::all(steady.client())
        .list(&ListParams::default())
        .await
        .expect("the other cluster still serves");

    flaky.start().await;
    // The client from before the outage reconnects to the same address, and
    // the cluster kept its data and identity.
    let client = flaky.client();
    let survivor = eventually("the restarted cluster to serve", || {
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        async move { maps.get("survivor").await.ok() }
    })
    .await;
    assert_eq!(survivor.metadata.name.as_deref(), Some("survivor"));
    let kube_system = Api::<Namespace>::all(client)
        .get("kube-system")
        .await
        .expect("kube-system");
    assert_eq!(kube_system.metadata.uid.as_deref(), Some(uid_before.as_str()));
}

#[tokio::test]
async fn injected_latency_slows_every_request() {
    let clusters = ControlPlane::shared().clusters(&["slow"]).await;
    let cluster = &clusters[0];
    let namespaces: Api<Namespace> = Api::all(cluster.client());
    namespaces.list(&ListParams::default()).await.expect("warm-up list");

    let delay = Duration::from_millis(400);
    cluster.set_latency(delay).await;
    // Twice: the first reuses the kept-alive connection, both must be slowed.
    for _ in 0..2 {
        let started = Instant::now();
        namespaces
            .list(&ListParams::default())
            .await
            .expect("a slowed list still succeeds");
        let took = started.elapsed();
        assert!(took >= delay, "request took {took:?}, less than the injected {delay:?}");
    }
    cluster.set_latency(Duration::ZERO).await;
    namespaces
        .list(&ListParams::default())
        .await
        .expect("list after clearing latency");

    // Dropping the guard deletes the test's clusters, so a long suite does not pile them up.
    let address = cluster.address();
    drop(clusters);
    assert!(
        TcpStream::connect_timeout(&address, Duration::from_secs(2)).is_err(),
        "a dropped cluster's port must be closed"
    );
}

#[tokio::test]
async fn an_own_plane_leaves_no_files_or_ports_behind() {
    let plane = tokio::task::spawn_blocking(|| ControlPlane::start(&["solo"]))
        .await
        .expect("starting a plane");
    let clusters = plane.initial_clusters().await;
    let solo = clusters.by_name("solo");
    Api::<Namespace>::all(solo.client())
        .list(&ListParams::default())
        .await
        .expect("the plane's own cluster serves");
    let address = solo.address();
    let kubeconfig = plane.kubeconfig().to_owned();
    let state_dir = kubeconfig
        .parent()
        .expect("kubeconfig in the state directory")
        .to_owned();
    assert!(kubeconfig.is_file());
    drop(clusters);

    // Dropping closes the plane's stdin, the same way a crashed test process would.
    tokio::task::spawn_blocking(move || drop(plane))
        .await
        .expect("stopping the plane");
    assert!(!state_dir.exists(), "{} must be removed", state_dir.display());
    assert!(
        TcpStream::connect_timeout(&address, Duration::from_secs(2)).is_err(),
        "a stopped plane's ports must be closed"
    );
}

#[tokio::test]
async fn cluster_controllers_manage_service_accounts_namespaces_and_garbage() {
    let clusters = ControlPlane::shared().clusters(&["controllers"]).await;
    let cluster = &clusters[0];
    cluster.create_namespace("apps").await;

    // serviceaccount controller: every namespace gets "default".
    let accounts: Api<ServiceAccount> = Api::namespaced(cluster.client(), "apps");
    eventually("the default ServiceAccount", || {
        let accounts = accounts.clone();
        async move { accounts.get_opt("default").await.ok().flatten() }
    })
    .await;

    // serviceaccount-token controller: legacy token Secrets get a token, as
    // Istio's remote secrets for older clusters rely on.
    let secrets: Api<Secret> = Api::namespaced(cluster.client(), "apps");
    let mut legacy = Secret {
        metadata: meta("default-token"),
        type_: Some("kubernetes.io/service-account-token".into()),
        ..Secret::default()
    };
    legacy.metadata.annotations =
        Some([("kubernetes.io/service-account.name".to_owned(), "default".to_owned())].into());
    secrets
        .create(&PostParams::default(), &legacy)
        .await
        .expect("creating a legacy token secret");
    let filled = eventually("the legacy token to be filled", || {
        let secrets = secrets.clone();
        async move {
            let secret = secrets.get("default-token").await.ok()?;
            let data = secret.data?;
            (data.contains_key("token") && data.contains_key("ca.crt")).then_some(data)
        }
    })
    .await;
    let token = String::from_utf8(filled["token"].0.clone()).expect("token is text");
    let user = who_am_i(cluster.client_with_token(&token).await)
        .await
        .expect("the legacy token authenticates");
    assert_eq!(user, "system:serviceaccount:apps:default");

    // garbage collector: dependents go when their owner goes.
    let maps: Api<ConfigMap> = Api::namespaced(cluster.client(), "apps");
    let owner = maps
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: meta("owner"),
                ..ConfigMap::default()
            },
        )
        .await
        .expect("creating the owner");
    let mut dependent = ConfigMap {
        metadata: meta("dependent"),
        ..ConfigMap::default()
    };
    dependent.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: "owner".into(),
        uid: owner.metadata.uid.clone().expect("owner uid"),
        ..OwnerReference::default()
    }]);
    maps.create(&PostParams::default(), &dependent)
        .await
        .expect("creating the dependent");
    maps.delete("owner", &DeleteParams::background())
        .await
        .expect("deleting the owner");
    eventually("the dependent to be collected", || {
        let maps = maps.clone();
        async move { matches!(maps.get_opt("dependent").await, Ok(None)).then_some(()) }
    })
    .await;

    // namespace controller: a deleted namespace is emptied and goes away.
    let namespaces: Api<Namespace> = Api::all(cluster.client());
    namespaces
        .delete("apps", &DeleteParams::default())
        .await
        .expect("deleting the namespace");
    eventually("the namespace to go away", || {
        let namespaces = namespaces.clone();
        async move { matches!(namespaces.get_opt("apps").await, Ok(None)).then_some(()) }
    })
    .await;
}

/// What the benchmarks read of the plane (bench/curve): a collection on
/// request, counted; a CPU profile that brackets a load, one at a time.
#[tokio::test]
async fn the_plane_collects_counts_and_profiles_on_request() {
    let plane = ControlPlane::shared();
    let stats = |(status, body): (u16, Vec<u8>)| -> serde_json::Value {
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).expect("memstats are JSON")
    };
    let before = stats(plane.control("GET", "/memstats").await);
    let collected = stats(plane.control("POST", "/gc").await);
    let count = |v: &serde_json::Value, key: &str| v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"));
    assert!(
        count(&collected, "gcs") > count(&before, "gcs"),
        "a forced collection is counted: {before} then {collected}"
    );
    assert!(count(&collected, "allocated_bytes") >= count(&before, "allocated_bytes"));
    assert!(count(&collected, "heap_bytes") > 0);

    let (status, body) = plane.control("POST", "/profile/start").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, body) = plane.control("POST", "/profile/start").await;
    assert_eq!(status, 409, "a second profile is refused while one runs");
    assert!(String::from_utf8_lossy(&body).contains("already running"));
    let (status, profile) = plane.control("POST", "/profile/stop").await;
    assert_eq!(status, 200);
    assert_eq!(
        profile.get(..2),
        Some(&[0x1f, 0x8b][..]),
        "a pprof profile is gzipped protobuf"
    );
    let (status, _) = plane.control("POST", "/profile/stop").await;
    assert_eq!(status, 409, "stopping with no profile running is refused");
}
