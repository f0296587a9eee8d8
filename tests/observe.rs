//! Observe on real API servers (issue 4), through the binary: clusters are
//! read in parallel, known by their kube-system UID, an unreachable one is
//! Unknown with its reason and stops the plan unless `--skip-unreachable`,
//! two entries on one cluster are an error, snapshots carry no secret bytes
//! and plan the same as the clusters themselves.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::controlplane::ControlPlane;
use support::mesh::{Entry, Mesh};

/// One network for all: no east-west gateway needed, so no blocker.
#[tokio::test]
async fn every_cluster_is_read_in_parallel_and_known_by_its_kube_system_uid() {
    let clusters = ControlPlane::shared().clusters(&["east", "west", "north"]).await;
    let all: Vec<_> = clusters.iter().collect();
    let mesh = Mesh::flat(&all);

    let snapshot = mesh.run("snapshot", &[]).await.expect(0).json();
    assert_eq!(snapshot["mesh"], "mesh1");
    for cluster in clusters.iter() {
        let observed = &snapshot["clusters"][cluster.name()];
        assert_eq!(observed["state"], "reachable", "{observed:#}");
        assert_eq!(observed["identity"], cluster.kube_system_uid(), "{observed:#}");
        assert_eq!(observed["server"], cluster.server());
        assert_eq!(observed["context"], cluster.name());
    }

    // Every request to every cluster now waits. One cluster alone takes a
    // few such delays (handshake, identity, the other reads); read one after
    // the other, three would take three times as long.
    let delay = Duration::from_millis(1500);
    for cluster in clusters.iter() {
        cluster.set_latency(delay).await;
    }
    let first = clusters.iter().next().expect("three clusters");
    let alone = Mesh::flat(&[first]);
    let started = Instant::now();
    alone.run("snapshot", &[]).await.expect(0);
    let one = started.elapsed();
    let started = Instant::now();
    let slow = mesh.run("snapshot", &[]).await.expect(0);
    let delayed = started.elapsed();
    for cluster in clusters.iter() {
        assert_eq!(slow.json()["clusters"][cluster.name()]["state"], "reachable");
    }
    assert!(
        delayed < one * 2,
        "observe of three clusters took {delayed:?}, of one {one:?}, with {delay:?} per request: clusters are not read in parallel"
    );
    // And the delay really applied, or the comparison above proves nothing.
    assert!(delayed >= delay, "latency was not injected ({delayed:?})");
}

#[tokio::test]
async fn an_unreachable_cluster_is_unknown_and_stops_the_plan_unless_skipped() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    let mesh = Mesh::flat(&[east, west]);
    west.stop().await;

    let snapshot = mesh.run("snapshot", &[]).await.expect(0).json();
    assert_eq!(snapshot["clusters"]["east"]["state"], "reachable");
    let west_state = &snapshot["clusters"]["west"];
    assert_eq!(west_state["state"], "unknown", "{west_state:#}");
    assert_eq!(west_state["reason"], "unreachable", "{west_state:#}");
    assert!(
        west_state["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "an unknown cluster says why: {west_state:#}"
    );

    let refused = mesh.run("plan", &[]).await.expect(1);
    assert!(
        refused.stderr.contains("cluster \"west\"") && refused.stderr.contains("--skip-unreachable"),
        "the error names the cluster and the way out:\n{refused}"
    );
    assert!(!refused.stderr.contains("\"east\""), "east is fine:\n{refused}");

    let deferred = mesh
        .run("plan", &["--skip-unreachable", "--format", "json"])
        .await
        .expect(0)
        .json();
    let listed: Vec<&str> = deferred["deferred"]
        .as_array()
        .expect("deferred is a list")
        .iter()
        .filter_map(|d| d["cluster"].as_str())
        .collect();
    assert_eq!(listed, ["west"], "{deferred:#}");
    for action in deferred["actions"].as_array().expect("actions") {
        assert_ne!(
            action["cluster"], "west",
            "nothing is planned in a deferred cluster: {action}"
        );
        assert_ne!(
            action["peer"], "west",
            "nothing is planned about a deferred cluster: {action}"
        );
    }
    // east itself is still planned for.
    assert!(
        deferred["actions"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["cluster"] == "east")),
        "{deferred:#}"
    );
    // The text view lists it too.
    let text = mesh.run("plan", &["--skip-unreachable"]).await.expect(0);
    assert!(text.stdout.contains("west"), "{text}");
}

#[tokio::test]
async fn two_entries_reaching_one_cluster_are_an_error() {
    let clusters = ControlPlane::shared().clusters(&["east"]).await;
    let east = clusters.by_name("east");
    let mesh = Mesh::new(&[]);
    // The same context in two kubeconfig files: topology validation cannot
    // tell, only the kube-system UID can.
    let copies: Vec<_> = ["one.yaml", "two.yaml"]
        .iter()
        .map(|file| {
            let path = mesh.dir().join(file);
            std::fs::copy(east.kubeconfig(), &path).expect("copying the kubeconfig");
            path
        })
        .collect();
    mesh.write(&[
        Entry::of(east).named("first").kubeconfig(&copies[0]).network("flat"),
        Entry::of(east).named("second").kubeconfig(&copies[1]).network("flat"),
    ]);

    let out = mesh.run("plan", &[]).await.expect(1);
    assert!(
        out.stderr.contains("\"first\"") && out.stderr.contains("\"second\"") && out.stderr.contains("same cluster"),
        "{out}"
    );
    assert!(out.stderr.contains(east.kube_system_uid()), "{out}");
    mesh.run("apply", &["--auto-approve"]).await.expect(1);
}

#[tokio::test]
async fn a_snapshot_after_apply_holds_no_token_or_secret_bytes() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    let mesh = Mesh::flat(&[east, west]);
    mesh.apply(&[]).await;

    let path = mesh.dir().join("observed.json");
    let out = mesh
        .run("snapshot", &["-o", path.to_str().expect("utf-8 path")])
        .await
        .expect(0);
    assert!(out.stdout.is_empty(), "-o writes the file, not stdout:\n{out}");
    let snapshot: Value = serde_json::from_slice(&std::fs::read(&path).expect("snapshot written")).expect("JSON");
    // The snapshot does describe the secrets, without their content.
    let secret = &snapshot["clusters"]["east"]["remote_secrets"]["istio-remote-secret-west"];
    assert_eq!(secret["cluster_ids"], serde_json::json!(["west"]), "{snapshot:#}");
    assert_eq!(secret["token"]["kind"], "bound", "{snapshot:#}");
    // The leak check reads the tokens from both clusters' secrets and scans
    // every output and every file in the mesh directory, observed.json included.
    mesh.assert_no_token_leaked(&[east, west]).await;
}

#[tokio::test]
async fn a_plan_from_a_snapshot_equals_the_live_plan() {
    let clusters = ControlPlane::shared().clusters(&["east", "west", "north"]).await;
    let [east, west, north] = clusters.by_names(["east", "west", "north"]);
    for (cluster, network) in clusters.iter().zip(["n1", "n1", "n2"]) {
        support::mesh::install_eastwest_gateway(cluster).await;
        let install = support::install::Install::correct(cluster.name(), network);
        support::install::install_istio(cluster, &install).await;
    }
    let mesh = Mesh::new(&[
        Entry::of(east).network("n1"),
        Entry::of(west).network("n1").remote(),
        Entry::of(north).network("n2"),
    ]);
    let path = mesh.dir().join("observed.json");
    let path = path.to_str().expect("utf-8 path");

    let compare = async |when: &str| {
        let live = mesh.run("plan", &["--format", "json"]).await.expect(0).json();
        mesh.run("snapshot", &["-o", path]).await.expect(0);
        let offline = mesh
            .run("plan", &["--format", "json", "--observed", path])
            .await
            .expect(0)
            .json();
        assert_eq!(live, offline, "{when}: the offline plan differs from the live one");
        live
    };
    // Fresh clusters: everything to write.
    let fresh = compare("fresh").await;
    assert!(!fresh["actions"].as_array().expect("actions").is_empty());
    // Applied, then north moves to n1: detach, relabel, re-attach.
    mesh.apply(&[]).await;
    mesh.write(&[
        Entry::of(east).network("n1"),
        // Two primaries on its network now: it names the one serving it.
        Entry::of(west).network("n1").served_by("east"),
        Entry::of(north).network("n1"),
    ]);
    // A network move starts with Istio reinstalled for the new network.
    support::install::install_istio(north, &support::install::Install::correct("north", "n1")).await;
    let moved = compare("network change").await;
    assert!(
        moved["changes"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["change"] == "network_change")),
        "{moved:#}"
    );
}

/// A copy of the cluster's kubeconfig that authenticates with `token`.
fn kubeconfig_with_token(cluster: &support::controlplane::Cluster, token: &str, path: &std::path::Path) {
    let mut config = kube::config::Kubeconfig::read_from(cluster.kubeconfig()).expect("reading the kubeconfig");
    for user in &mut config.auth_infos {
        if let Some(auth) = user.auth_info.as_mut() {
            auth.token = Some(secrecy::SecretString::from(token.to_string()));
        }
    }
    // JSON is YAML.
    std::fs::write(path, serde_json::to_vec(&config).expect("kubeconfig serialises")).expect("writing the kubeconfig");
}

#[tokio::test]
async fn refused_forbidden_and_slow_clusters_are_unknown_with_their_reason() {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    use kube::api::{Api, ObjectMeta, PostParams};

    let clusters = ControlPlane::shared()
        .clusters(&["refused", "forbidden", "slow", "fine"])
        .await;
    let mesh = Mesh::new(&[]);
    let refused = mesh.dir().join("refused.yaml");
    kubeconfig_with_token(clusters.by_name("refused"), "not-a-token-of-this-cluster", &refused);
    // A service account with no permission at all.
    let forbidden = clusters.by_name("forbidden");
    let accounts: Api<ServiceAccount> = Api::namespaced(forbidden.client(), "kube-system");
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("nobody".into()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    accounts
        .create(&PostParams::default(), &account)
        .await
        .expect("creating the account");
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let token = accounts
        .create_token_request("nobody", &PostParams::default(), &request)
        .await
        .expect("a token")
        .status
        .expect("token status")
        .token;
    let nobody = mesh.dir().join("forbidden.yaml");
    kubeconfig_with_token(forbidden, &token, &nobody);
    // Slower than the 5s request timeout the helper passes.
    clusters.by_name("slow").set_latency(Duration::from_secs(6)).await;
    mesh.write(&[
        Entry::of(clusters.by_name("refused"))
            .kubeconfig(&refused)
            .network("flat"),
        Entry::of(forbidden).kubeconfig(&nobody).network("flat"),
        Entry::of(clusters.by_name("slow")).network("flat"),
        Entry::of(clusters.by_name("fine")).network("flat"),
    ]);

    let snapshot = mesh.run("snapshot", &[]).await.expect(0).json();
    let reason = |name: &str| {
        let c = &snapshot["clusters"][name];
        (
            c["state"].as_str().unwrap_or_default().to_string(),
            c["reason"].as_str().unwrap_or_default().to_string(),
        )
    };
    assert_eq!(
        reason("refused"),
        ("unknown".into(), "unauthorized".into()),
        "{snapshot:#}"
    );
    assert_eq!(
        reason("forbidden"),
        ("unknown".into(), "forbidden".into()),
        "{snapshot:#}"
    );
    assert_eq!(reason("slow"), ("unknown".into(), "timeout".into()), "{snapshot:#}");
    assert_eq!(reason("fine").0, "reachable", "{snapshot:#}");
    let plan = mesh.run("plan", &[]).await.expect(1);
    for name in ["refused", "forbidden", "slow"] {
        assert!(plan.stderr.contains(&format!("cluster \"{name}\"")), "{plan}");
    }
    // The forbidden account's token is printed nowhere either.
    assert!(!plan.to_string().contains(&token) && !snapshot.to_string().contains(&token));
}
