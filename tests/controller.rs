//! `meshform controller` (issue 30), run as a process against real API
//! servers: it converges a fresh mesh, repairs hand edits with no command
//! (woken by its watches: the tests that say so run with an hour's resync),
//! rotates a short-lived token on time and revokes the one it replaced,
//! reports a destructive change of mesh.toml without applying it (a person's
//! `apply --allow-detach` does, while it runs; a person's apply during a
//! round waits for the lock), keeps the last good mesh.toml when an edit is
//! invalid, writes nothing with `--auto=none`, and stops on SIGTERM, mid-round
//! too, with the apply lock and its leadership released. Its status (issue 30
//! item 3): the metrics Prometheus scrapes match the clusters, the probes
//! answer, Events mark transitions and the status ConfigMap holds the plan's
//! summary and no secret.

mod support;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use support::controlplane::{Cluster, ControlPlane};
use support::mesh::{
    Entry, MESH, Mesh, NAMESPACE, Streamed, eventually, install_eastwest_gateway, remote_secrets, token_of,
};
use support::metrics;

const READER: &str = "meshform-istio-reader-istio-system";
/// Long enough for a round on a busy 2-core machine.
const ROUND: Duration = Duration::from_secs(120);

/// `meshform controller` on `mesh` with a short resync and poll, serving
/// metrics on a free port (tests run side by side).
fn controller(mesh: &Mesh, args: &[&str]) -> Streamed {
    controller_every(mesh, "2s", args)
}

/// `meshform controller` with a resync of `resync`: with "1h", only its
/// watches, what falls due and its own retries start a round in a test.
fn controller_every(mesh: &Mesh, resync: &str, args: &[&str]) -> Streamed {
    let mut all = vec![
        "--resync",
        resync,
        "--poll",
        "500ms",
        "--retry",
        "1s",
        "--metrics-address",
        "127.0.0.1:0",
    ];
    all.extend_from_slice(args);
    mesh.stream("controller", &all)
}

/// A merge patch as kubectl sends it: an update owned by `manager`.
fn by(manager: &str) -> PatchParams {
    PatchParams {
        field_manager: Some(manager.into()),
        ..PatchParams::default()
    }
}

/// Reads events until one matches; panics if the controller goes quiet or ends.
async fn until(stream: &mut Streamed, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + ROUND;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let line = stream
            .next_line(left)
            .await
            .unwrap_or_else(|| panic!("the controller ended before {what}"));
        let event: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if matches(&event) {
            return event;
        }
    }
}

fn round(event: &Value, ending: &str) -> bool {
    event["event"] == "round" && event["ending"] == ending
}

fn held_objects(event: &Value) -> Vec<String> {
    event["held"]
        .as_array()
        .map(|h| {
            h.iter()
                .map(|l| format!("{} {}", l["cluster"].as_str().unwrap(), l["object"].as_str().unwrap()))
                .collect()
        })
        .unwrap_or_default()
}

async fn lease(cluster: &Cluster) -> Option<Lease> {
    Api::<Lease>::namespaced(cluster.client(), NAMESPACE)
        .get_opt(&format!("meshform-{MESH}"))
        .await
        .expect("reading the lease")
}

/// SIGTERM, then the run's whole output; it must end with `stopped`, exit 0.
async fn terminate(stream: Streamed, mesh: &Mesh) -> support::mesh::Outcome {
    let pid = stream.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("running kill");
    assert!(killed.success());
    let outcome = stream.finish(mesh).await.expect(0);
    assert!(
        outcome.stdout.trim_end().ends_with(r#"{"event":"stopped"}"#),
        "{outcome}"
    );
    outcome
}

#[tokio::test]
async fn converges_a_fresh_mesh_and_repairs_hand_edits_without_a_command() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let [east, west] = clusters.by_names(["east", "west"]);
    let mesh = Mesh::flat(&[east, west]);
    // An hour's resync: the repair below is the watches' doing.
    let mut stream = controller_every(&mesh, "1h", &[]);
    let loaded = until(&mut stream, "loaded", |e| e["event"] == "loaded").await;
    assert_eq!(loaded["clusters"], 2);
    let first = until(&mut stream, "the first round", |e| e["event"] == "round").await;
    assert_eq!(first["trigger"], "start", "{first}");
    assert_eq!(first["ending"], "applied", "{first}");
    assert!(first["held"].as_array().unwrap().is_empty(), "{first}");
    // A round that wrote is followed at once by one that sees the result,
    // and learns when the tokens it wrote rotate.
    let second = until(&mut stream, "a converged round", |e| round(e, "converged")).await;
    assert_eq!(second["trigger"], "after_write", "{second}");
    assert!(second["due"].is_string(), "{second}");
    mesh.assert_plan_empty().await;

    // Hand edits: a remote secret and the reader ClusterRole deleted.
    Api::<Secret>::namespaced(east.client(), NAMESPACE)
        .delete("istio-remote-secret-west", &DeleteParams::default())
        .await
        .expect("deleting a remote secret");
    Api::<ClusterRole>::all(west.client())
        .delete(READER, &DeleteParams::default())
        .await
        .expect("deleting the reader role");
    let repaired = until(&mut stream, "the repair", |e| round(e, "applied")).await;
    assert_eq!(repaired["trigger"], "change", "{repaired}");
    let changes = repaired["changes"].to_string();
    assert!(
        changes.contains("east Secret istio-system/istio-remote-secret-west"),
        "{repaired}"
    );
    until(&mut stream, "a converged round", |e| round(e, "converged")).await;
    assert!(remote_secrets(east).await.contains_key("istio-remote-secret-west"));
    assert!(
        Api::<ClusterRole>::all(west.client())
            .get_opt(READER)
            .await
            .expect("reading the reader role")
            .is_some()
    );
    mesh.assert_plan_empty().await;

    terminate(stream, &mesh).await;
    assert_eq!(lease(east).await, None, "the lock is released on SIGTERM");
    mesh.assert_no_token_leaked(&[east, west]).await;
}

#[tokio::test]
async fn a_detach_waits_for_a_person_and_an_invalid_edit_keeps_the_last_good_mesh() {
    let clusters = ControlPlane::shared().clusters(&["east", "west", "north"]).await;
    let [east, west, north] = clusters.by_names(["east", "west", "north"]);
    let mesh = Mesh::flat(&[east, west, north]);
    let mut stream = controller(&mesh, &[]);
    until(&mut stream, "a converged round", |e| round(e, "converged")).await;

    // An invalid edit: reported, and the last good mesh is still kept.
    let good = std::fs::read_to_string(mesh.file()).unwrap();
    std::fs::write(mesh.file(), good.replace("name = \"north\"", "name = \"North_1\"")).unwrap();
    let invalid = until(&mut stream, "the invalid edit", |e| e["event"] == "invalid").await;
    assert_eq!(invalid["kept_last_good"], true, "{invalid}");
    assert!(
        invalid["diagnostics"][0]["code"]
            .as_str()
            .is_some_and(|c| c.starts_with("meshform::topology::")),
        "{invalid}"
    );
    Api::<Secret>::namespaced(west.client(), NAMESPACE)
        .delete("istio-remote-secret-north", &DeleteParams::default())
        .await
        .expect("deleting a remote secret");
    until(&mut stream, "the repair under the last good mesh", |e| {
        round(e, "applied")
    })
    .await;
    assert!(remote_secrets(west).await.contains_key("istio-remote-secret-north"));

    // north leaves mesh.toml: its detach and the revocation of what it holds wait.
    mesh.write(&[Entry::of(east).network("flat"), Entry::of(west).network("flat")]);
    until(&mut stream, "the new mesh", |e| e["event"] == "loaded").await;
    let held = until(&mut stream, "a round after the change", |e| e["event"] == "round").await;
    assert_eq!(held["trigger"], "config", "{held}");
    let objects = held_objects(&held);
    for expected in [
        "east Secret istio-system/istio-remote-secret-north",
        "west Secret istio-system/istio-remote-secret-north",
    ] {
        assert!(objects.iter().any(|o| o == expected), "{expected} not held: {held}");
    }
    assert!(
        held["held"][0]["why"]
            .as_str()
            .unwrap()
            .contains("meshform apply --allow-detach"),
        "{held}"
    );
    assert_eq!(held["done"], 0, "{held}");
    // Rounds go on, and still nothing is detached.
    until(&mut stream, "another round", |e| {
        e["event"] == "round" && e["trigger"] == "resync"
    })
    .await;
    assert!(remote_secrets(east).await.contains_key("istio-remote-secret-north"));
    assert!(remote_secrets(west).await.contains_key("istio-remote-secret-north"));

    // A person applies it while the controller runs; they take turns at the lock.
    mesh.apply(&["--allow-detach", "--lock-timeout", "2m"]).await;
    assert!(!remote_secrets(east).await.contains_key("istio-remote-secret-north"));
    until(&mut stream, "a converged round", |e| round(e, "converged")).await;

    terminate(stream, &mesh).await;
    mesh.assert_no_token_leaked(&[east, west]).await;
}

#[tokio::test]
async fn auto_none_reports_and_writes_nothing() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let [east, west] = clusters.by_names(["east", "west"]);
    let mesh = Mesh::flat(&[east, west]);
    let mut stream = controller(&mesh, &["--auto", "none"]);
    let reported = until(&mut stream, "a round", |e| e["event"] == "round").await;
    assert_eq!(reported["ending"], "reported", "{reported}");
    let objects = held_objects(&reported);
    assert!(
        objects.contains(&"east Secret istio-system/istio-remote-secret-west".to_string()),
        "{reported}"
    );
    until(&mut stream, "a second round", |e| e["event"] == "round").await;
    assert!(
        remote_secrets(east).await.is_empty(),
        "--auto=none wrote a remote secret"
    );
    assert_eq!(lease(east).await, None, "--auto=none takes no lock");
    terminate(stream, &mesh).await;
}

/// The leader-election Lease's holder, if any.
async fn leader(cluster: &Cluster) -> Option<String> {
    Api::<Lease>::namespaced(cluster.client(), "default")
        .get_opt(&format!("meshform-controller-{MESH}"))
        .await
        .expect("reading the election lease")
        .and_then(|l| l.spec?.holder_identity)
}

#[tokio::test]
async fn two_replicas_elect_one_leader_and_a_killed_leader_is_replaced() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let [east, west] = clusters.by_names(["east", "west"]);
    let mesh = Mesh::flat(&[east, west]);
    let election = [
        "--leader-election-cluster",
        "east",
        "--leader-election-namespace",
        "default",
        "--leader-election-duration",
        "4s",
        "--lock-duration",
        "5s",
    ];
    let mut first = controller(&mesh, &election);
    until(&mut first, "leadership", |e| e["event"] == "leading").await;
    until(&mut first, "a converged round", |e| round(e, "converged")).await;
    let first_pid = format!("pid {})", first.id());
    let mut second = controller(&mesh, &election);
    until(&mut second, "loaded", |e| e["event"] == "loaded").await;
    // Longer than the lease: the first renews it, the second only waits.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let holder = leader(east).await.expect("a leader");
    assert!(holder.ends_with(&first_pid), "{holder}");

    let killed = std::process::Command::new("kill")
        .args(["-KILL", &first.id().to_string()])
        .status()
        .expect("running kill");
    assert!(killed.success());
    let started = std::time::Instant::now();
    until(&mut second, "leadership", |e| e["event"] == "leading").await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?} to replace a dead leader",
        started.elapsed()
    );
    let holder = leader(east).await.expect("a leader");
    assert!(holder.ends_with(&format!("pid {})", second.id())), "{holder}");
    // The new leader reconciles: a hand edit is repaired.
    Api::<Secret>::namespaced(east.client(), NAMESPACE)
        .delete("istio-remote-secret-west", &DeleteParams::default())
        .await
        .expect("deleting a remote secret");
    until(&mut second, "the repair", |e| round(e, "applied")).await;
    assert!(remote_secrets(east).await.contains_key("istio-remote-secret-west"));
    drop(first);
    terminate(second, &mesh).await;
    assert_eq!(leader(east).await, None, "leadership is released on SIGTERM");
}

#[tokio::test]
async fn an_unreachable_cluster_is_retried_while_the_rest_is_kept() {
    let clusters = ControlPlane::shared().clusters(&["east", "west", "north"]).await;
    let [east, west, north] = clusters.by_names(["east", "west", "north"]);
    let mesh = Mesh::flat(&[east, west, north]);
    let mut stream = controller(&mesh, &[]);
    until(&mut stream, "a converged round", |e| round(e, "converged")).await;

    north.stop().await;
    Api::<Secret>::namespaced(east.client(), NAMESPACE)
        .delete("istio-remote-secret-west", &DeleteParams::default())
        .await
        .expect("deleting a remote secret");
    let kept = until(&mut stream, "the repair beside a stopped cluster", |e| {
        e["event"] == "round" && e["done"].as_u64() > Some(0)
    })
    .await;
    assert_eq!(kept["deferred"], serde_json::json!(["north"]), "{kept}");
    assert!(remote_secrets(east).await.contains_key("istio-remote-secret-west"));
    // Nothing of north's is removed while it cannot be read, and it is retried.
    let retried = until(&mut stream, "a retry", |e| {
        e["event"] == "round" && e["trigger"] == "retry"
    })
    .await;
    assert_eq!(retried["deferred"], serde_json::json!(["north"]), "{retried}");
    assert!(remote_secrets(east).await.contains_key("istio-remote-secret-north"));

    north.start().await;
    until(&mut stream, "a converged round with north back", |e| {
        round(e, "converged") && e["deferred"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
    terminate(stream, &mesh).await;
    mesh.assert_no_token_leaked(&[east, west, north]).await;
}

/// Where the controller serves metrics and probes: its first line says.
async fn serving(stream: &mut Streamed) -> String {
    let line = until(stream, "serving", |e| e["event"] == "serving").await;
    line["address"].as_str().expect("an address").to_string()
}

/// Every ordered pair of distinct clusters: each a primary whose istiod reads the other.
fn pairs<'a>(names: &[&'a str]) -> Vec<(&'a str, &'a str)> {
    names
        .iter()
        .flat_map(|h| names.iter().filter(move |p| p != &h).map(move |p| (*h, *p)))
        .collect()
}

/// Events about the election Lease in `default` of `cluster`, by reason.
async fn events(cluster: &Cluster) -> Vec<k8s_openapi::api::events::v1::Event> {
    Api::<k8s_openapi::api::events::v1::Event>::namespaced(cluster.client(), "default")
        .list(&Default::default())
        .await
        .expect("listing Events")
        .items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(&format!("meshform-controller-{MESH}"))
        })
        .collect()
}

/// Waits until an Event with `reason` is there (they are written beside the rounds).
async fn event(cluster: &Cluster, reason: &str) -> k8s_openapi::api::events::v1::Event {
    let deadline = tokio::time::Instant::now() + ROUND;
    loop {
        if let Some(e) = events(cluster)
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some(reason))
        {
            return e;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {reason} Event; there are {:?}",
            events(cluster)
                .await
                .iter()
                .map(|e| e.reason.clone())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the status ConfigMap's status.json matches.
async fn status_object(cluster: &Cluster, matches: impl Fn(&Value) -> bool) -> ConfigMap {
    let api = Api::<ConfigMap>::namespaced(cluster.client(), "default");
    let deadline = tokio::time::Instant::now() + ROUND;
    loop {
        let found = api
            .get_opt(&format!("meshform-status-{MESH}"))
            .await
            .expect("reading the status ConfigMap");
        let json = found
            .as_ref()
            .and_then(|c| c.data.as_ref()?.get("status.json"))
            .map(|j| serde_json::from_str::<Value>(j).expect("status.json is JSON"));
        if json.as_ref().is_some_and(&matches) {
            return found.unwrap();
        }
        assert!(tokio::time::Instant::now() < deadline, "the status object is {json:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const ELECTION: [&str; 4] = [
    "--leader-election-cluster",
    "east",
    "--leader-election-namespace",
    "default",
];

#[tokio::test]
async fn metrics_probes_events_and_the_status_object_match_the_clusters() {
    let clusters = ControlPlane::shared().clusters(&["east", "west", "north"]).await;
    let [east, west, north] = clusters.by_names(["east", "west", "north"]);
    let mesh = Mesh::flat(&[east, west, north]);
    let mut stream = controller(&mesh, &ELECTION);
    let address = serving(&mut stream).await;
    until(&mut stream, "a converged round", |e| round(e, "converged")).await;

    let scrape = metrics::scrape(&address).await;
    let now = jiff::Timestamp::now().as_second() as f64;
    for cluster in ["east", "west", "north"] {
        assert_eq!(scrape.value("meshform_cluster_reachable", &[("cluster", cluster)]), 1.0);
        let seen = scrape.value(
            "meshform_cluster_last_observed_timestamp_seconds",
            &[("cluster", cluster)],
        );
        assert!(
            seen > now - 120.0 && seen <= now + 1.0,
            "{cluster} last observed at {seen}"
        );
    }
    let all = pairs(&["east", "west", "north"]);
    assert_eq!(
        scrape.series("meshform_pair_attached", &[]).len(),
        all.len(),
        "{}",
        scrape.body
    );
    for (holder, peer) in &all {
        let labels = [("holder", *holder), ("peer", *peer)];
        assert_eq!(
            scrape.value("meshform_pair_attached", &labels),
            1.0,
            "{holder} reads {peer}"
        );
        // Bound tokens, as the clusters hold them.
        let secret = remote_secrets(clusters.by_names([*holder])[0]).await;
        assert!(secret.contains_key(&format!("istio-remote-secret-{peer}")));
        let expiry = scrape.value("meshform_reader_token_expiry_timestamp_seconds", &labels);
        assert!(expiry > now, "{holder}'s token for {peer} expires at {expiry}");
    }
    assert_eq!(scrape.sum("meshform_pending_actions", &[]), 0.0, "{}", scrape.body);
    assert!(scrape.series("meshform_blockers", &[]).is_empty(), "{}", scrape.body);
    // The check lines are `meshform check`'s, counted (the plane runs no
    // Istio: its check fails on every cluster, in both).
    let check = mesh.run("check", &["--format", "json"]).await.json();
    let mut lines: std::collections::BTreeMap<(String, String, String), f64> = Default::default();
    let scopes = [("cluster", &check["clusters"]), ("network", &check["networks"])];
    for (scope, groups) in scopes {
        for line in groups
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["checks"].as_array().unwrap())
        {
            let key = (
                scope.to_string(),
                line["id"].as_str().unwrap().to_string(),
                line["status"].as_str().unwrap().to_string(),
            );
            *lines.entry(key).or_default() += 1.0;
        }
    }
    for line in check["mesh_checks"].as_array().unwrap() {
        let key = (
            "mesh".to_string(),
            line["id"].as_str().unwrap().to_string(),
            line["status"].as_str().unwrap().to_string(),
        );
        *lines.entry(key).or_default() += 1.0;
    }
    let scraped: std::collections::BTreeMap<(String, String, String), f64> = scrape
        .series("meshform_check_results", &[])
        .iter()
        .map(|s| {
            (
                (
                    s.labels["scope"].clone(),
                    s.labels["check"].clone(),
                    s.labels["result"].clone(),
                ),
                s.value,
            )
        })
        .collect();
    assert_eq!(scraped, lines, "{check:#}");
    assert_eq!(
        lines[&("cluster".to_string(), "reachable".to_string(), "pass".to_string())],
        3.0
    );
    // The first round wrote, the second (converged) confirmed it.
    assert!(scrape.value("meshform_reconcile_duration_seconds_count", &[("result", "success")]) >= 2.0);
    assert_eq!(
        scrape.series("meshform_reconcile_duration_seconds_count", &[])[0].kind,
        "histogram"
    );
    assert!(scrape.value("meshform_last_success_timestamp_seconds", &[]) > now - 120.0);
    assert_eq!(scrape.value("meshform_leader", &[]), 1.0);
    assert_eq!(metrics::get(&address, "/healthz").await.status, 200);
    assert_eq!(metrics::get(&address, "/readyz").await.status, 200);
    assert_eq!(metrics::get(&address, "/nothing").await.status, 404);

    // A standby: ready (mesh.toml loaded), not leading.
    let mut standby = controller(&mesh, &ELECTION);
    let standby_address = serving(&mut standby).await;
    until(&mut standby, "loaded", |e| e["event"] == "loaded").await;
    let standby_scrape = metrics::scrape(&standby_address).await;
    assert_eq!(standby_scrape.value("meshform_leader", &[]), 0.0);
    assert!(standby_scrape.series("meshform_cluster_reachable", &[]).is_empty());
    let ready = metrics::get(&standby_address, "/readyz").await;
    assert_eq!(ready.status, 200, "{ready:?}");
    assert_eq!(metrics::get(&standby_address, "/healthz").await.status, 200);
    drop(standby);

    // Events about the election Lease: its leader, and the first round's writes.
    event(east, "LeaderElected").await;
    let applied = event(east, "Applied").await;
    assert_eq!(applied.type_.as_deref(), Some("Normal"));
    assert_eq!(applied.reporting_controller.as_deref(), Some("meshform-controller"));
    // The status object: the converged plan's summary.
    let status = status_object(east, |s| s["ending"] == "converged").await;
    let json: Value = serde_json::from_str(&status.data.as_ref().unwrap()["status.json"]).unwrap();
    assert_eq!(json["pending"], serde_json::json!([]), "{json:#}");
    assert_eq!(json["pairs"].as_array().unwrap().len(), all.len(), "{json:#}");
    assert!(
        status.data.as_ref().unwrap()["summary"].starts_with("converged: 3/3 clusters reachable, 6/6 pairs attached"),
        "{status:?}"
    );

    // A cluster out of reach: reachable 0, its last read kept, what it holds
    // unknown (its pairs gone), what the others hold for it still attached.
    north.stop().await;
    until(&mut stream, "a round without north", |e| {
        e["event"] == "round" && e["deferred"] == serde_json::json!(["north"])
    })
    .await;
    let scrape = metrics::scrape(&address).await;
    assert_eq!(scrape.value("meshform_cluster_reachable", &[("cluster", "north")]), 0.0);
    assert_eq!(scrape.value("meshform_cluster_reachable", &[("cluster", "east")]), 1.0);
    assert!(
        scrape.value(
            "meshform_cluster_last_observed_timestamp_seconds",
            &[("cluster", "north")]
        ) > 0.0
    );
    assert!(
        scrape
            .series("meshform_pair_attached", &[("holder", "north")])
            .is_empty(),
        "{}",
        scrape.body
    );
    assert_eq!(
        scrape.value("meshform_pair_attached", &[("holder", "east"), ("peer", "north")]),
        1.0
    );
    assert!(scrape.value("meshform_reconcile_duration_seconds_count", &[("result", "incomplete")]) >= 1.0);
    let unreachable = event(east, "ClusterUnreachable").await;
    assert_eq!(unreachable.type_.as_deref(), Some("Warning"));
    assert!(
        unreachable.note.as_deref().unwrap().contains("north"),
        "{unreachable:?}"
    );
    status_object(east, |s| s["deferred"] == serde_json::json!(["north"])).await;
    north.start().await;
    until(&mut stream, "north back", |e| {
        round(e, "converged") && e["deferred"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
    event(east, "ClusterReachable").await;

    terminate(stream, &mesh).await;
    // What was written about the mesh goes where the leak check looks: no
    // token of a remote secret may be in the Events or the status object.
    let notes: Vec<String> = events(east).await.iter().filter_map(|e| e.note.clone()).collect();
    let object = Api::<ConfigMap>::namespaced(east.client(), "default")
        .get(&format!("meshform-status-{MESH}"))
        .await
        .expect("reading the status ConfigMap");
    std::fs::write(
        mesh.dir().join("written-status.txt"),
        format!("{}\n{}", serde_json::to_string(&object).unwrap(), notes.join("\n")),
    )
    .unwrap();
    mesh.assert_no_token_leaked(&[east, west, north]).await;
}

#[tokio::test]
async fn auto_none_shows_every_pending_write_in_the_metrics() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let [east, west] = clusters.by_names(["east", "west"]);
    let mesh = Mesh::flat(&[east, west]);
    let mut stream = controller(&mesh, &["--auto", "none"]);
    let address = serving(&mut stream).await;
    let reported = until(&mut stream, "a round", |e| e["event"] == "round").await;
    let held = held_objects(&reported);
    let scrape = metrics::scrape(&address).await;
    assert_eq!(
        scrape.sum("meshform_pending_actions", &[]),
        held.len() as f64,
        "{}",
        scrape.body
    );
    assert_eq!(
        scrape.value(
            "meshform_pending_actions",
            &[("kind", "write_remote_secret"), ("destructive", "false")]
        ),
        2.0,
        "{}",
        scrape.body
    );
    // Nothing attached yet; failing checks name what is missing.
    for (holder, peer) in pairs(&["east", "west"]) {
        assert_eq!(
            scrape.value("meshform_pair_attached", &[("holder", holder), ("peer", peer)]),
            0.0
        );
    }
    assert!(scrape.sum("meshform_check_results", &[("result", "fail")]) > 0.0);
    // Reporting is what --auto=none is for: a success, with no Lease to be about.
    assert!(scrape.value("meshform_reconcile_duration_seconds_count", &[("result", "success")]) >= 1.0);
    assert_eq!(scrape.value("meshform_leader", &[]), 1.0);
    terminate(stream, &mesh).await;
}

#[test]
fn prometheus_refuses_a_broken_exposition() {
    // The parser the tests trust must be able to say no.
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    assert!(metrics::parse(content_type, "# TYPE a gauge\na 1\n# EOF\n").is_ok());
    assert!(
        metrics::parse(content_type, "# TYPE a gauge\na 1\n").is_err(),
        "no # EOF"
    );
    assert!(metrics::parse(content_type, "# TYPE a gauge\na{x=\"1} 1\n# EOF\n").is_err());
}

/// `east` and `west` on networks of their own, each behind its east-west
/// gateway, so that meshform writes a Gateway and a gateway label in each.
async fn two_networks(clusters: &support::controlplane::Clusters) -> Mesh {
    let [east, west] = clusters.by_names(["east", "west"]);
    install_eastwest_gateway(east).await;
    install_eastwest_gateway(west).await;
    Mesh::new(&[Entry::of(east).network("n1"), Entry::of(west).network("n2")])
}

/// Waits for the round that repairs a hand edit: woken by a change (the
/// resync is an hour away), it writes, and names what changed.
async fn repaired_by_a_change(stream: &mut Streamed, what: &str, changed: &str) {
    let repaired = until(stream, what, |e| round(e, "applied")).await;
    assert_eq!(repaired["trigger"], "change", "{what}: {repaired}");
    assert!(repaired["changes"].to_string().contains(changed), "{what}: {repaired}");
    assert!(repaired["held"].as_array().unwrap().is_empty(), "{what}: {repaired}");
    until(stream, "a converged round", |e| round(e, "converged")).await;
}

#[tokio::test]
async fn hand_edits_are_repaired_by_the_watches_with_no_command() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let [east, west] = clusters.by_names(["east", "west"]);
    let mesh = two_networks(&clusters).await;
    let mut stream = controller_every(&mesh, "1h", &[]);
    until(&mut stream, "a converged round", |e| round(e, "converged")).await;
    mesh.assert_plan_empty().await;

    // kubectl label svc istio-eastwestgateway topology.istio.io/network- (in east).
    let services = Api::<Service>::namespaced(east.client(), NAMESPACE);
    services
        .patch(
            "istio-eastwestgateway",
            &by("kubectl-label"),
            &Patch::Merge(json!({"metadata": {"labels": {"topology.istio.io/network": null}}})),
        )
        .await
        .expect("unlabelling east's gateway Service");
    repaired_by_a_change(
        &mut stream,
        "the gateway label",
        "east Service istio-system/istio-eastwestgateway",
    )
    .await;
    let labels = services
        .get("istio-eastwestgateway")
        .await
        .unwrap()
        .metadata
        .labels
        .unwrap();
    assert_eq!(labels["topology.istio.io/network"], "n1");

    // kubectl delete secret istio-remote-secret-east (in west).
    Api::<Secret>::namespaced(west.client(), NAMESPACE)
        .delete("istio-remote-secret-east", &DeleteParams::default())
        .await
        .expect("deleting a remote secret");
    repaired_by_a_change(
        &mut stream,
        "the remote secret",
        "west Secret istio-system/istio-remote-secret-east",
    )
    .await;
    assert!(remote_secrets(west).await.contains_key("istio-remote-secret-east"));

    // The binding Secret east's token for west is bound to, deleted in west:
    // the token stops working, and a new one is written.
    let old = remote_token(east, "west").await;
    let bindings = Api::<Secret>::namespaced(west.client(), NAMESPACE);
    let binding = bindings
        .list_metadata(&ListParams::default().labels("meshform.io/reader-binding=true"))
        .await
        .expect("listing the bindings")
        .items
        .into_iter()
        .next()
        .and_then(|b| b.metadata.name)
        .expect("a binding Secret");
    bindings
        .delete(&binding, &DeleteParams::default())
        .await
        .expect("deleting the binding Secret");
    repaired_by_a_change(
        &mut stream,
        "the revoked token",
        &format!("west Secret istio-system/{binding}"),
    )
    .await;
    let new = remote_token(east, "west").await;
    assert_ne!(new, old, "the token bound to the deleted Secret was replaced");
    assert!(accepted(west, &new).await);

    // kubectl patch gateway cross-network-gateway: its selector removed (in west).
    let gateways: Api<DynamicObject> =
        Api::namespaced_with(west.client(), NAMESPACE, &meshform::objects::gateway_resource());
    let written = gateways.get("cross-network-gateway").await.unwrap().data["spec"].clone();
    gateways
        .patch(
            "cross-network-gateway",
            &by("kubectl-patch"),
            &Patch::Merge(json!({"spec": {"selector": null}})),
        )
        .await
        .expect("patching west's Gateway");
    repaired_by_a_change(
        &mut stream,
        "the Gateway",
        "west Gateway istio-system/cross-network-gateway",
    )
    .await;
    assert_eq!(
        gateways.get("cross-network-gateway").await.unwrap().data["spec"],
        written
    );

    mesh.assert_plan_empty().await;
    terminate(stream, &mesh).await;
    mesh.assert_no_token_leaked(&[east, west]).await;
}

/// The reader token `holder`'s remote secret for `peer` carries.
async fn remote_token(holder: &Cluster, peer: &str) -> String {
    let secret = remote_secrets(holder)
        .await
        .remove(&format!("istio-remote-secret-{peer}"))
        .unwrap_or_else(|| panic!("{} has no remote secret for {peer}", holder.name()));
    token_of(&secret.data.expect("data")[peer].0).expect("a token")
}

/// Whether `peer` accepts `token` (a 401 is a no; any other error fails).
async fn accepted(peer: &Cluster, token: &str) -> bool {
    match Api::<Namespace>::all(peer.client_with_token(token).await)
        .get(NAMESPACE)
        .await
    {
        Ok(_) => true,
        Err(kube::Error::Api(status)) if status.code == 401 => false,
        Err(e) => panic!("reading {} with a reader token: {e}", peer.name()),
    }
}

#[tokio::test]
async fn a_short_lived_token_is_rotated_on_time_and_the_replaced_one_revoked_after_the_grace() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let [east, west] = clusters.by_names(["east", "west"]);
    let entries = [east, west].map(|c| Entry::of(c).network("flat"));
    let mesh = Mesh::new(&entries);
    // TokenRequest grants no less than ten minutes: 1% of that is 6 seconds.
    mesh.write_with(&entries, "[mesh.tokens]\nlifetime = \"10m\"\nrotate_at_percent = 1\n");
    let mut stream = controller_every(&mesh, "1h", &["--revoke-grace", "3"]);
    until(&mut stream, "a converged round", |e| round(e, "converged")).await;
    let old = remote_token(east, "west").await;

    // No resync for an hour and no edit: the rotation's moment wakes it.
    let rotated = until(&mut stream, "the rotation", |e| {
        e["event"] == "round" && e["trigger"] == "due" && e["done"].as_u64() > Some(0)
    })
    .await;
    assert_eq!(rotated["ending"], "applied", "{rotated}");
    let new = remote_token(east, "west").await;
    assert_ne!(new, old, "{rotated}");
    // Then the grace's end: the replaced token is refused, the new one is not.
    eventually("west refusing the replaced token", ROUND, async || {
        (!accepted(west, &old).await).then_some(())
    })
    .await;
    assert!(accepted(west, &remote_token(east, "west").await).await);
    terminate(stream, &mesh).await;
    mesh.assert_no_token_leaked(&[east, west]).await;
}

#[tokio::test]
async fn a_person_s_apply_during_a_round_waits_for_the_lock() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let [east, west] = clusters.by_names(["east", "west"]);
    let mesh = Mesh::flat(&[east, west]);
    let mut stream = controller_every(&mesh, "1h", &[]);
    until(&mut stream, "a converged round", |e| round(e, "converged")).await;

    // Slow API servers make the repair round last seconds.
    for c in [east, west] {
        c.set_latency(Duration::from_millis(500)).await;
    }
    Api::<Secret>::namespaced(east.client(), NAMESPACE)
        .delete("istio-remote-secret-west", &DeleteParams::default())
        .await
        .expect("deleting a remote secret");
    let holder = eventually("the controller's round holding the lock", ROUND, async || {
        lease(east).await.and_then(|l| l.spec?.holder_identity)
    })
    .await;
    assert!(holder.ends_with(&format!("pid {})", stream.id())), "{holder}");
    // Without waiting it would be refused: "another apply ... is running".
    let out = mesh.apply(&["--lock-timeout", "2m"]).await;
    assert!(!out.stderr.contains("another apply"), "{out}");
    let round = until(&mut stream, "the repair", |e| {
        e["event"] == "round" && e["trigger"] == "change"
    })
    .await;
    assert!(round["failed"].as_array().unwrap().is_empty(), "{round}");
    for c in [east, west] {
        c.set_latency(Duration::ZERO).await;
    }
    assert!(remote_secrets(east).await.contains_key("istio-remote-secret-west"));
    mesh.assert_plan_empty().await;
    terminate(stream, &mesh).await;
}

#[tokio::test]
async fn sigterm_mid_round_stops_between_actions_and_releases_the_lock_and_leadership() {
    let clusters = ControlPlane::shared().clusters(&["east", "west", "north"]).await;
    let [east, west, north] = clusters.by_names(["east", "west", "north"]);
    let mesh = Mesh::flat(&[east, west, north]);
    // Slow API servers: the first round (a whole mesh to write) lasts long.
    for c in [east, west, north] {
        c.set_latency(Duration::from_millis(700)).await;
    }
    let stream = controller_every(
        &mesh,
        "1h",
        &[
            "--leader-election-cluster",
            "east",
            "--leader-election-namespace",
            "default",
        ],
    );
    eventually("the round holding the lock", ROUND, async || lease(east).await).await;
    let outcome = terminate(stream, &mesh).await;
    for c in [east, west, north] {
        c.set_latency(Duration::ZERO).await;
    }
    let events: Vec<Value> = outcome
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let last_round = events
        .iter()
        .rfind(|e| e["event"] == "round")
        .unwrap_or_else(|| panic!("no round reported: {outcome}"));
    assert_eq!(last_round["ending"], "stopped", "{outcome}");
    assert!(last_round["failed"].as_array().unwrap().is_empty(), "{outcome}");
    assert_eq!(lease(east).await, None, "the lock is released");
    assert_eq!(leader(east).await, None, "leadership is released");
    // What was not done is done by the next run.
    mesh.apply(&[]).await;
    mesh.assert_converged(&[east, west, north]).await;
}
