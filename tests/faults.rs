//! The fault matrix of RELIABILITY.md that `tests/apply.rs` does not cover,
//! on real API servers: a cluster slower than `--timeout` mid-apply,
//! meshform killed with SIGKILL mid-apply, a revoked reader token, and a
//! 409 conflict with another field manager. Each test ends with "a re-run
//! converges, no orphaned or half-written object": a fresh plan is empty, a
//! second apply writes nothing, meshform's objects are exactly the expected
//! ones, and every remote secret is complete (one data key, a kubeconfig that
//! parses, a token that reads the peer).

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::config::KubeConfigOptions;
use serde_json::{Value, json};
use support::controlplane::{Cluster, ControlPlane};
use support::mesh::{Entry, MESH, Mesh, NAMESPACE, remote_secrets, secret_kubeconfig, token_of};
use support::snapshot::assert_outcome;
use support::state::{meshform_objects, network_label, object_state};

const READER: &str = "istio-reader-service-account";
const READER_ROLE: &str = "meshform-istio-reader-istio-system";
const NETWORK_LABEL: &str = "topology.istio.io/network";

fn lease_name() -> String {
    format!("meshform-{MESH}")
}

async fn lease(cluster: &Cluster) -> Option<Lease> {
    Api::<Lease>::namespaced(cluster.client(), NAMESPACE)
        .get_opt(&lease_name())
        .await
        .expect("reading the lease")
}

/// Every remote secret in `primary` is complete: one data key naming a
/// cluster of `peers`, a kubeconfig that parses, and a token that reads that
/// peer (its kube-system is the peer's). A secret cut off half-way, or one
/// holding a revoked token, fails here.
async fn assert_remote_secrets_complete(primary: &Cluster, peers: &[&Cluster]) {
    for (name, secret) in remote_secrets(primary).await {
        let what = format!("{}/{name}", primary.name());
        let data = secret.data.as_ref().unwrap_or_else(|| panic!("{what} has no data"));
        assert_eq!(data.len(), 1, "{what}: one data key");
        let id = data.keys().next().expect("one key");
        let peer = peers
            .iter()
            .find(|p| p.name() == id)
            .unwrap_or_else(|| panic!("{what} registers {id:?}, not a peer"));
        assert_eq!(name, format!("istio-remote-secret-{id}"), "{what}");
        let kubeconfig = secret_kubeconfig(&secret);
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{what}: its kubeconfig does not load: {e}"));
        let reader = kube::Client::try_from(config).expect("a client from the remote secret");
        let kube_system = Api::<Namespace>::all(reader)
            .get("kube-system")
            .await
            .unwrap_or_else(|e| panic!("{what}: its token does not read {id}: {e}"));
        assert_eq!(
            kube_system.metadata.uid.as_deref(),
            Some(peer.kube_system_uid()),
            "{what}"
        );
    }
}

/// The objects a converged flat mesh of primaries holds: in each cluster the
/// reader account, role and binding, a remote secret per peer and the
/// binding Secrets of the peers' tokens for it; no Lease.
async fn assert_exactly_the_expected_objects(clusters: &[&Cluster]) {
    let secret = format!("Secret/{NAMESPACE}/");
    for &c in clusters {
        let mut expected: BTreeSet<String> = [
            format!("Namespace/{NAMESPACE}"),
            format!("ServiceAccount/{NAMESPACE}/{READER}"),
            format!("ClusterRole/{READER_ROLE}"),
            format!("ClusterRoleBinding/{READER_ROLE}"),
        ]
        .into();
        for peer in clusters.iter().filter(|p| p.name() != c.name()) {
            expected.insert(format!("{secret}istio-remote-secret-{}", peer.name()));
            // What the peer's tokens for c are bound to; named by the API server.
            // A replaced one stays for the grace period, so their count is not checked.
            expected.insert(format!("{secret}meshform-reader-binding-{}-*", peer.name()));
        }
        let binding = format!("{secret}meshform-reader-binding-");
        let found: BTreeSet<String> = meshform_objects(c)
            .await
            .into_iter()
            .map(|key| match key.strip_prefix(&binding) {
                Some(rest) => format!(
                    "{binding}{}-*",
                    rest.rsplit_once('-').map_or(rest, |(holder, _)| holder)
                ),
                None => key,
            })
            .collect();
        assert_eq!(found, expected, "{}: orphaned or missing objects", c.name());
        assert_remote_secrets_complete(c, clusters).await;
    }
}

fn events_of<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

#[tokio::test]
async fn a_cluster_slower_than_the_timeout_fails_its_actions_and_a_rerun_converges() {
    let clusters = ControlPlane::shared().clusters(&["east", "west", "north"]).await;
    let all @ [east, _, north] = clusters.by_names(["east", "west", "north"]);
    let mesh = Mesh::flat(&all);
    // Apply asks before it writes, once every cluster is read and the plan
    // made: north turns slow exactly between the reads and the writes, with
    // no race against a phase already sending requests.
    let (run, mut terminal) = mesh.stream_asking("apply", &["--format", "json", "--timeout", "2s"]);
    run.wait_for_stderr("Only 'yes' will be accepted", Duration::from_secs(120))
        .await;
    // From now on every request to north takes longer than --timeout.
    north.set_latency(Duration::from_secs(3)).await;
    terminal.answer("yes");
    let out = run.finish(&mesh).await.expect(1);
    let events = out.events();
    let failed = events_of(&events, "failed");
    assert!(!failed.is_empty(), "north's actions fail:\n{out}");
    for f in &failed {
        assert_eq!(f["action"]["cluster"], "north", "only north's actions fail:\n{out}");
        let error = f["error"].as_str().expect("an error text").to_ascii_lowercase();
        assert!(
            error.contains("north") && (error.contains("timed out") || error.contains("timeout")),
            "the error says north timed out: {f}"
        );
    }
    // Every action of east and west in the failed phase finished.
    let started: BTreeSet<u64> = events_of(&events, "started")
        .iter()
        .filter(|e| e["action"]["cluster"] != "north")
        .map(|e| e["index"].as_u64().expect("index"))
        .collect();
    let done: BTreeSet<u64> = events_of(&events, "done")
        .iter()
        .map(|e| e["index"].as_u64().expect("index"))
        .collect();
    assert!(!started.is_empty(), "{out}");
    assert!(
        started.is_subset(&done),
        "east's and west's actions of the phase finish:\n{out}"
    );
    // No later phase started: nothing but network-phase actions ran, nothing attached.
    assert!(
        events_of(&events, "started")
            .iter()
            .all(|e| e["action"]["phase"] == "network"),
        "{out}"
    );
    let summary = events_of(&events, "summary")[0];
    assert!(!summary["skipped"].as_array().expect("skipped").is_empty(), "{summary}");
    for c in all {
        assert!(
            remote_secrets(c).await.is_empty(),
            "{}: attach ran after a failed phase",
            c.name()
        );
    }
    assert!(lease(east).await.is_none(), "the lock is released after a failure");

    north.set_latency(Duration::ZERO).await;
    mesh.apply(&[]).await;
    mesh.assert_converged(&all).await;
    assert_exactly_the_expected_objects(&all).await;
    mesh.assert_no_token_leaked(&all).await;
}

#[tokio::test]
async fn meshform_killed_mid_apply_leaves_its_lease_and_no_half_written_secret() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    let all = [east, west];
    let mesh = Mesh::flat(&all);
    // A slow west keeps the run in its attach phase for seconds. Each remote
    // secret takes one request to west (east's the token, west's the write),
    // and with --concurrency 1 the second starts only once the first is
    // written, so the kill lands while it is in flight (3s of it). West turns
    // slow while apply waits for its answer, after the reads. The lock (in
    // east, the first primary by name) lasts 15s: long enough that the re-run
    // below meets it before it expires, even on a loaded machine.
    let (mut run, mut terminal) = mesh.stream_asking(
        "apply",
        &[
            "--format",
            "json",
            "--lock-duration",
            "15s",
            "--timeout",
            "60s",
            "--concurrency",
            "1",
        ],
    );
    run.wait_for_stderr("Only 'yes' will be accepted", Duration::from_secs(120))
        .await;
    west.set_latency(Duration::from_secs(3)).await;
    terminal.answer("yes");
    let pid = run.id();
    // Killed as soon as the first remote secret is written: the other is
    // still being written (or not yet started).
    loop {
        let line = run
            .next_line(Duration::from_secs(180))
            .await
            .expect("meshform ended before attaching");
        let event: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if event["event"] == "done" && event["action"]["phase"] == "attach" {
            break;
        }
    }
    let kill = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("running kill");
    assert!(kill.success());
    let killed = run.finish(&mesh).await;
    assert_eq!(killed.code, -1, "killed by a signal, no exit status:\n{killed}");
    assert!(
        !killed.stdout.contains("\"event\":\"summary\""),
        "it died before finishing:\n{killed}"
    );
    west.set_latency(Duration::ZERO).await;

    // Its lock is left behind, naming it.
    let held = lease(east).await.expect("a killed apply leaves its Lease");
    let spec = held.spec.expect("lease spec");
    let holder = spec.holder_identity.clone().unwrap_or_default();
    assert!(holder.contains(&format!("pid {pid}")), "{holder}");
    let renewed = spec.renew_time.expect("renewed").0;
    let expires = renewed + jiff::SignedDuration::from_secs(spec.lease_duration_seconds.unwrap_or(0).into());
    // Nothing it wrote is half-written.
    for c in all {
        assert_remote_secrets_complete(c, &all).await;
    }

    // A re-run fails fast, naming the holder, and writes nothing.
    let before = object_state(&[east, west]).await;
    let blocked = mesh.run("apply", &["--auto-approve"]).await.expect(1);
    // The snapshot redacts the holder; this names it.
    assert!(
        blocked.stderr.contains(&format!("pid {pid}")),
        "names the holder:\n{blocked}"
    );
    assert_outcome("killed_apply_blocks_a_rerun", &blocked);
    assert_eq!(before, object_state(&[east, west]).await, "a blocked apply wrote");

    // Waiting for the lock: the abandoned lease expires and the run converges.
    let out = mesh.apply(&["--lock-timeout", "60s"]).await;
    // The kill may land after the second secret is already written: then
    // there is nothing left to do, but the lock must still be waited for.
    // Either output may come: no snapshot.
    assert!(
        out.stdout.contains("Apply complete") || out.stdout.contains("No changes"),
        "{out}"
    );
    // meshform reads lease times to the second.
    assert!(
        jiff::Timestamp::now() + jiff::SignedDuration::from_secs(1) >= expires,
        "the apply did not wait for the abandoned lock"
    );
    assert!(lease(east).await.is_none(), "the lock is released");
    mesh.assert_converged(&all).await;
    assert_exactly_the_expected_objects(&all).await;
    mesh.assert_no_token_leaked(&all).await;
}

/// The token in the remote secret `primary` holds for `peer`.
async fn secret_token(primary: &Cluster, peer: &str) -> String {
    let secret = remote_secrets(primary)
        .await
        .remove(&format!("istio-remote-secret-{peer}"));
    let secret = secret.unwrap_or_else(|| panic!("{} has no secret for {peer}", primary.name()));
    token_of(&secret.data.as_ref().expect("data")[peer].0).expect("a token")
}

/// Whether `token` authenticates to `cluster` (`Some(code)` of a refusal).
async fn refused(cluster: &Cluster, token: &str) -> Option<u16> {
    match Api::<Namespace>::all(cluster.client_with_token(token).await)
        .get("kube-system")
        .await
    {
        Ok(_) => None,
        Err(kube::Error::Api(status)) => Some(status.code),
        Err(e) => panic!("asking {} with a token: {e}", cluster.name()),
    }
}

#[tokio::test]
async fn a_revoked_reader_token_is_planned_for_rotation_and_replaced() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    let all = [east, west];
    let mesh = Mesh::flat(&all);
    mesh.apply(&[]).await;
    let old = secret_token(east, "west").await;
    assert_eq!(refused(west, &old).await, None, "the reader token works at first");

    // Deleting the reader account revokes every token bound to it.
    Api::<ServiceAccount>::namespaced(west.client(), NAMESPACE)
        .delete(READER, &DeleteParams::default())
        .await
        .expect("deleting west's reader account");
    support::mesh::eventually("the token to be refused", Duration::from_secs(60), async || {
        (refused(west, &old).await == Some(401)).then_some(())
    })
    .await;

    let plan = mesh
        .run("plan", &["--format", "json", "--detailed-exitcode"])
        .await
        .expect(2)
        .json();
    let actions = plan["actions"].as_array().expect("actions");
    let reader = actions
        .iter()
        .find(|a| a["action"] == "ensure_reader")
        .unwrap_or_else(|| panic!("the reader account is recreated: {plan:#}"));
    assert_eq!(reader["cluster"], "west", "{plan:#}");
    let rotation = actions
        .iter()
        .find(|a| a["action"] == "write_remote_secret")
        .unwrap_or_else(|| panic!("the revoked token is replaced: {plan:#}"));
    assert_eq!(
        (&rotation["cluster"], &rotation["peer"], &rotation["mode"]),
        (&json!("east"), &json!("west"), &json!("rotate")),
        "{plan:#}"
    );
    assert!(
        rotation["reason"]
            .as_str()
            .is_some_and(|r| r.contains("reader account")),
        "the reason says why: {rotation}"
    );
    assert_eq!(actions.len(), 2, "nothing else: {plan:#}");

    mesh.apply(&[]).await;
    let new = secret_token(east, "west").await;
    assert_ne!(new, old);
    assert_eq!(refused(west, &new).await, None, "the new token reads west");
    mesh.assert_converged(&all).await;
    assert_exactly_the_expected_objects(&all).await;
    mesh.assert_no_token_leaked(&all).await;
}

#[tokio::test]
async fn a_token_past_its_rotation_point_is_rotated() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    let all = [east, west];
    let entries = all.map(|c| Entry::of(c).network("flat"));
    let mesh = Mesh::new(&entries);
    // TokenRequest grants no less than ten minutes: 1% of that is 6 seconds.
    mesh.write_with(&entries, "[mesh.tokens]\nlifetime = \"10m\"\nrotate_at_percent = 1\n");
    mesh.apply(&[]).await;
    let old = secret_token(east, "west").await;
    // Past the rotation point (a lower bound: the token was issued before apply returned).
    tokio::time::sleep(Duration::from_secs(8)).await;

    let plan = mesh
        .run("plan", &["--format", "json", "--detailed-exitcode"])
        .await
        .expect(2)
        .json();
    let actions = plan["actions"].as_array().expect("actions");
    assert_eq!(actions.len(), 2, "both tokens are due: {plan:#}");
    for a in actions {
        assert_eq!(a["mode"], "rotate", "{plan:#}");
        assert!(
            a["reason"].as_str().is_some_and(|r| r.contains("1% of its life")),
            "{a}"
        );
    }
    mesh.apply(&[]).await;
    let new = secret_token(east, "west").await;
    assert_ne!(new, old);
    assert_eq!(refused(west, &new).await, None, "the new token reads west");
    // No convergence check by plan here: 6 seconds on, the new tokens are due
    // again. What must hold is that the rotated secrets are complete and work.
    assert_exactly_the_expected_objects(&all).await;
    mesh.assert_no_token_leaked(&all).await;
}

/// Another field manager's server-side apply of the mesh namespace's network
/// label (or, with `None`, of no label: it lets go of the field).
async fn apply_as_helm(cluster: &Cluster, network: Option<&str>) {
    let labels = network.map_or_else(|| json!({}), |n| json!({ NETWORK_LABEL: n }));
    let namespace = json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": NAMESPACE, "labels": labels },
    });
    Api::<Namespace>::all(cluster.client())
        .patch(NAMESPACE, &PatchParams::apply("helm"), &Patch::Apply(&namespace))
        .await
        .unwrap_or_else(|e| panic!("helm's apply in {}: {e}", cluster.name()));
}

#[tokio::test]
async fn a_label_owned_by_another_field_manager_is_a_conflict_until_released() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    let all = [east, west];
    apply_as_helm(west, Some("helm-net")).await;
    let mesh = Mesh::flat(&all);

    // Predicted from managedFields: the plan blocks, naming helm and the fix,
    // and apply writes nothing (before, it failed mid-run on the label).
    let out = mesh.run("apply", &["--auto-approve"]).await.expect(1);
    assert_outcome("field_conflict_blocked", &out);
    // Nothing written: helm's value stands, nothing attached.
    assert_eq!(network_label(west).await.as_deref(), Some("helm-net"));
    for c in all {
        assert!(
            remote_secrets(c).await.is_empty(),
            "{}: attach ran after a blocked plan",
            c.name()
        );
    }
    assert!(lease(east).await.is_none(), "the lock is released after a refusal");

    // helm lets go of the label; a re-run converges.
    apply_as_helm(west, None).await;
    assert_eq!(network_label(west).await, None);
    mesh.apply(&[]).await;
    assert_eq!(network_label(west).await.as_deref(), Some("flat"));
    mesh.assert_converged(&all).await;
    assert_exactly_the_expected_objects(&all).await;
    mesh.assert_no_token_leaked(&all).await;
}

/// The lock is a Lease in the mesh namespace of one cluster, the lock
/// cluster (here east, the first primary by name). Without the namespace
/// there, apply says which namespace to create where, or which key names
/// another cluster, and writes nothing. The lock never moves on its own:
/// west having the namespace changes nothing (before issue 29 the lock moved
/// to the next primary that could hold it).
#[tokio::test]
async fn a_lock_cluster_without_the_mesh_namespace_is_named_and_nothing_is_written() {
    const MISSING: &str = "mesh-not-installed";
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    let mesh = Mesh::flat(&[east, west]);
    let text = std::fs::read_to_string(mesh.file()).expect("reading mesh.toml");
    let text = text.replace(
        &format!("namespace = \"{NAMESPACE}\""),
        &format!("namespace = \"{MISSING}\""),
    );
    std::fs::write(mesh.file(), text).expect("writing mesh.toml");

    west.create_namespace(MISSING).await;
    let before = object_state(&[east, west]).await;
    let refused = mesh.run("apply", &["--auto-approve"]).await.expect(1);
    for words in [
        &format!("namespace {MISSING} does not exist in cluster east") as &str,
        &format!("kubectl create namespace {MISSING}"),
        "lock_cluster",
        "meshform::apply::lock_namespace",
    ] {
        assert!(refused.stderr.contains(words), "{words:?} in:\n{refused}");
    }
    assert!(
        !refused.stderr.contains("wait for the other apply"),
        "no lock is held; the help must not say so:\n{refused}"
    );
    let namespace = Api::<Namespace>::all(east.client())
        .get_opt(MISSING)
        .await
        .expect("reading the namespace");
    assert!(namespace.is_none(), "east: a refused apply created {MISSING}");
    let west_lease = Api::<Lease>::namespaced(west.client(), MISSING)
        .get_opt(&lease_name())
        .await
        .expect("reading the lease");
    assert!(west_lease.is_none(), "the lock moved to west");
    assert_eq!(before, object_state(&[east, west]).await, "a refused apply wrote");

    east.create_namespace(MISSING).await;
    mesh.run("apply", &["--auto-approve"]).await.expect(0);
    mesh.assert_plan_empty().await;
}

// Regression (issue 29): the API server answered 504 to the create of a remote
// secret that had committed; the transport sent the create again, met the
// secret it had just made (409), and apply, calling it "not managed by
// meshform", deleted the binding Secret of the token it had stored.
#[tokio::test]
async fn a_create_answered_504_after_it_committed_keeps_its_secret_and_token() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let all @ [east, west] = clusters.by_names(["east", "west"]);
    let mesh = Mesh::flat(&all);
    east.add_http_fault(json!({
        "kind": "commit_then_timeout",
        "method": "POST",
        "path": format!("/api/v1/namespaces/{NAMESPACE}/secrets"),
        "body_contains": "istio-remote-secret-west",
    }))
    .await;
    let out = mesh.run("apply", &["--auto-approve"]).await;
    assert_eq!(east.clear_http_faults().await, 1, "the create was answered 504:\n{out}");
    out.expect(0);

    let token = secret_token(east, "west").await;
    assert_eq!(refused(west, &token).await, None, "the token stored reads west");
    mesh.assert_converged(&all).await;
    assert_exactly_the_expected_objects(&all).await;
    mesh.assert_no_token_leaked(&all).await;
}

// Regression (issue 29): the lock was taken in the first primary that
// answered. An apply that found the lock cluster slower than its --timeout
// locked the next primary instead, and wrote beside the apply that held the
// lock in the first. The lock's place is now fixed by mesh.toml: an apply
// that cannot reach it stops there and names the key that moves it.
#[tokio::test]
async fn an_apply_that_cannot_reach_the_lock_cluster_stops_and_never_writes_beside_its_holder() {
    let clusters = ControlPlane::shared().clusters(&["east", "west", "north"]).await;
    let all @ [east, west, north] = clusters.by_names(["east", "west", "north"]);
    let mesh = Mesh::flat(&all);
    // east (the first primary by name) holds the lock and answers in 2 s: in
    // time for an apply with --timeout 30s, too late for one with 1s.
    east.set_latency(Duration::from_secs(2)).await;
    let (holder, mut terminal) = mesh.stream_asking("apply", &["--format", "json", "--timeout", "30s"]);
    holder
        .wait_for_stderr("Only 'yes' will be accepted", Duration::from_secs(180))
        .await;
    let before = object_state(&[west, north]).await;
    let hurried = mesh
        .run(
            "apply",
            &[
                "--auto-approve",
                "--skip-unreachable",
                "--timeout",
                "1s",
                "--format",
                "json",
            ],
        )
        .await
        .expect(1);
    for words in [
        "meshform::apply::lock_unreachable",
        "cluster east, which holds it, cannot be reached",
        "lock_cluster",
    ] {
        assert!(hurried.stderr.contains(words), "{words:?} in:\n{hurried}");
    }
    assert!(
        hurried.events().iter().all(|e| e["event"] != "done"),
        "an apply without the lock wrote:\n{hurried}"
    );
    assert_eq!(
        before,
        object_state(&[west, north]).await,
        "an apply without the lock wrote"
    );
    for cluster in [west, north] {
        assert!(
            lease(cluster).await.is_none(),
            "{}: a lock taken elsewhere",
            cluster.name()
        );
    }

    east.set_latency(Duration::ZERO).await;
    terminal.answer("yes");
    holder.finish(&mesh).await.expect(0);
    assert!(lease(east).await.is_none(), "the lock is released");
    mesh.assert_converged(&all).await;
    assert_exactly_the_expected_objects(&all).await;
    mesh.assert_no_token_leaked(&all).await;
}

// Regression (issue 29): the request deadline covered the response headers
// only; a link cut mid-response (headers in, body stopped, connection open)
// hung meshform forever. The outer bound makes this test fail, not hang.
#[tokio::test]
async fn a_response_cut_mid_body_fails_with_a_timeout_instead_of_hanging() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let all @ [_, west] = clusters.by_names(["east", "west"]);
    let mesh = Mesh::flat(&all);
    west.add_http_fault(json!({
        "kind": "stall_body",
        "method": "GET",
        "path": format!("/api/v1/namespaces/{NAMESPACE}/secrets"),
        "times": 1000,
    }))
    .await;
    let plan = mesh.run("plan", &["--timeout", "3s"]);
    let out = tokio::time::timeout(Duration::from_secs(300), plan)
        .await
        .expect("plan ends instead of hanging on a stalled response");
    assert!(west.clear_http_faults().await >= 1, "west's LIST stalled:\n{out}");
    assert_ne!(out.code, 0, "{out}");
    let stderr = out.stderr.to_ascii_lowercase();
    assert!(
        stderr.contains("west") && stderr.contains("timed out"),
        "the error says west timed out:\n{out}"
    );
}
