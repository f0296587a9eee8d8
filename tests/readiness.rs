//! A mesh Istio can carry traffic on (issue 13), on real API servers: the
//! Istio install objects are written as an install writes them
//! (`support::install`), observed through the binary, and every finding of
//! the planner about them shows with its code, the cluster and the fix.
//! The east-west gateway Service's network label is written by apply, that
//! field only.

mod support;

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use serde_json::Value;
use support::controlplane::{Cluster, ControlPlane};
use support::install::{Install, MESH_ROOT, OTHER_ROOT, install_istio};
use support::mesh::{Entry, Mesh, NAMESPACE, install_eastwest_gateway, install_pending_eastwest_gateway};
use support::state::{network_label, object_state};

const GATEWAY: &str = "istio-eastwestgateway";

/// Two clusters on two networks, each with a correct install and an
/// addressed gateway Service; returns the mesh.
async fn two_networks(east: &Cluster, west: &Cluster) -> Mesh {
    for (c, network) in [(east, "n1"), (west, "n2")] {
        install_eastwest_gateway(c).await;
        install_istio(c, &Install::correct(c.name(), network)).await;
    }
    Mesh::new(&[Entry::of(east).network("n1"), Entry::of(west).network("n2")])
}

async fn gateway_labels(cluster: &Cluster) -> std::collections::BTreeMap<String, String> {
    Api::<Service>::namespaced(cluster.client(), NAMESPACE)
        .get(GATEWAY)
        .await
        .expect("the gateway Service")
        .metadata
        .labels
        .unwrap_or_default()
}

#[tokio::test]
async fn a_correct_install_converges_with_the_gateway_labelled_by_meshform() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    let mesh = two_networks(east, west).await;
    let (lines, _) = mesh.findings(0).await;
    assert_eq!(lines, Vec::<String>::new());
    let plan = mesh.run("plan", &[]).await.expect(0);
    assert!(
        plan.stdout
            .contains("+ Service istio-system/istio-eastwestgateway in east"),
        "{plan}"
    );
    mesh.apply(&[]).await;
    for (c, network) in [(east, "n1"), (west, "n2")] {
        let labels = gateway_labels(c).await;
        assert_eq!(
            labels.get("topology.istio.io/network").map(String::as_str),
            Some(network)
        );
        // Only that field: the installer's labels stay.
        assert_eq!(labels.get("istio").map(String::as_str), Some("eastwestgateway"));
    }
    mesh.assert_converged(&clusters.all()).await;

    // A network move relabels the gateway Service too (with Istio reinstalled for it).
    install_istio(west, &Install::correct("west", "n3")).await;
    mesh.write(&[Entry::of(east).network("n1"), Entry::of(west).network("n3")]);
    mesh.apply(&["--allow-detach"]).await;
    assert_eq!(
        gateway_labels(west)
            .await
            .get("topology.istio.io/network")
            .map(String::as_str),
        Some("n3")
    );
    mesh.assert_converged(&clusters.all()).await;
}

#[tokio::test]
async fn a_pending_load_balancer_or_a_missing_port_blocks_naming_the_service() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    install_eastwest_gateway(east).await;
    install_pending_eastwest_gateway(west).await;
    install_istio(east, &Install::correct("east", "n1")).await;
    install_istio(west, &Install::correct("west", "n2")).await;
    let mesh = Mesh::new(&[Entry::of(east).network("n1"), Entry::of(west).network("n2")]);
    let (lines, all) = mesh.findings(1).await;
    assert_eq!(lines, ["blocker west gateway_address_missing"]);
    let message = all[0]["message"].as_str().unwrap();
    assert!(message.contains("istio-system/istio-eastwestgateway"), "{message}");
    assert!(message.contains("pending"), "{message}");

    // The address arrives through the status subresource; then a port goes.
    support::install::set_gateway_address(west, GATEWAY, "192.0.2.20").await;
    let ports = serde_json::json!({"spec": {"ports": [{"name": "status-port", "port": 15021}]}});
    Api::<Service>::namespaced(west.client(), NAMESPACE)
        .patch(GATEWAY, &PatchParams::default(), &Patch::Merge(&ports))
        .await
        .expect("taking the tls port off");
    let (lines, all) = mesh.findings(1).await;
    assert_eq!(lines, ["blocker west gateway_port_missing"]);
    assert!(
        all[0]["help"].as_str().unwrap().contains("add port 15443"),
        "{:#}",
        all[0]
    );
    let refused = mesh.run("apply", &["--auto-approve"]).await.expect(1);
    assert!(refused.stderr.contains("blocking problem"), "{refused}");
}

#[tokio::test]
async fn an_install_with_the_default_cluster_id_another_network_or_mesh_id_blocks() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    let mesh = two_networks(east, west).await;
    // istioctl install without clusterName: istiod runs as `Kubernetes`.
    install_istio(
        west,
        &Install {
            cluster_id: None,
            network: Some("n1".into()),
            mesh_id: Some("cluster.local".into()),
            ..Install::correct("west", "n2")
        },
    )
    .await;
    let (lines, all) = mesh.findings(1).await;
    assert_eq!(
        lines,
        [
            "blocker west injection_network",
            "blocker west istiod_cluster_id",
            "blocker west mesh_id"
        ]
    );
    let text: Vec<String> = all
        .iter()
        .map(|f| format!("{} / {}", f["message"], f["help"]))
        .collect();
    assert!(text[1].contains("CLUSTER_ID \\\"Kubernetes\\\""), "{}", text[1]);
    assert!(
        text[1].contains("values.global.multiCluster.clusterName=west"),
        "{}",
        text[1]
    );
    assert!(text[0].contains("values.global.network=n2"), "{}", text[0]);
    assert!(text[2].contains("values.global.meshID=mesh1"), "{}", text[2]);

    // A revisioned install beside a correct one is found and judged too.
    install_istio(west, &Install::correct("west", "n2")).await;
    install_istio(
        west,
        &Install {
            revision: "canary".into(),
            cluster_id: Some("west-canary".into()),
            ..Install::correct("west", "n2")
        },
    )
    .await;
    let (lines, all) = mesh.findings(1).await;
    assert_eq!(lines, ["blocker west istiod_cluster_id"]);
    assert!(
        all[0]["message"].as_str().unwrap().contains("istiod-canary"),
        "{:#}",
        all[0]
    );
    assert!(
        all[0]["help"].as_str().unwrap().contains("--set revision=canary"),
        "{:#}",
        all[0]
    );
}

#[tokio::test]
async fn clusters_with_separate_roots_of_trust_block_but_a_rotation_does_not() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    let mesh = two_networks(east, west).await;
    // Each istiod with its own self-signed root, as without plugged-in CA certificates.
    install_istio(
        west,
        &Install {
            roots: OTHER_ROOT.into(),
            ..Install::correct("west", "n2")
        },
    )
    .await;
    let (lines, all) = mesh.findings(1).await;
    assert_eq!(lines, ["blocker - root_of_trust"]);
    let message = all[0]["message"].as_str().unwrap();
    // By fingerprint (sha256 of the DER): the shared test root and the other one.
    assert!(message.contains("east (root sha256:55de878f1bf00869)"), "{message}");
    assert!(message.contains("west (root sha256:453e4fd58a3fc9aa)"), "{message}");
    assert!(message.contains("CERTIFICATE_VERIFY_FAILED"), "{message}");

    // During a rotation west trusts both roots: one group again.
    install_istio(
        west,
        &Install {
            roots: format!("{OTHER_ROOT}{MESH_ROOT}"),
            ..Install::correct("west", "n2")
        },
    )
    .await;
    let (lines, _) = mesh.findings(0).await;
    assert_eq!(lines, Vec::<String>::new());
}

#[tokio::test]
async fn a_cluster_without_istio_is_a_warning_and_can_be_prepared() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    // Istio's guides label the namespace before installing Istio.
    let mesh = Mesh::flat(&[east, west]);
    install_istio(east, &Install::correct("east", "flat")).await;
    let (lines, all) = mesh.findings(0).await;
    assert_eq!(lines, ["warning west istio_not_installed"]);
    assert!(
        all[0]["help"]
            .as_str()
            .unwrap()
            .contains("values.global.multiCluster.clusterName=west"),
        "{:#}",
        all[0]
    );
    mesh.apply(&[]).await;
    mesh.assert_converged(&clusters.all()).await;
    mesh.assert_no_token_leaked(&[east, west]).await;
}

/// `check --format json`: each cluster's, network's and the mesh's checks
/// as `id status`, by scope.
fn checklist(json: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    let scopes = [("clusters", "cluster"), ("networks", "network")];
    for (list, key) in scopes {
        for scope in json[list].as_array().expect(list) {
            for check in scope["checks"].as_array().expect("checks") {
                lines.push(format!(
                    "{} {} {}",
                    scope[key].as_str().unwrap(),
                    check["id"].as_str().unwrap(),
                    check["status"].as_str().unwrap()
                ));
            }
        }
    }
    for check in json["mesh_checks"].as_array().expect("mesh checks") {
        lines.push(format!(
            "mesh {} {}",
            check["id"].as_str().unwrap(),
            check["status"].as_str().unwrap()
        ));
    }
    lines
}

#[tokio::test]
async fn check_fails_until_the_mesh_can_carry_traffic_and_agrees_offline() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    install_eastwest_gateway(east).await;
    install_pending_eastwest_gateway(west).await;
    install_istio(east, &Install::correct("east", "n1")).await;
    install_istio(west, &Install::correct("west", "n2")).await;
    let mesh = Mesh::new(&[Entry::of(east).network("n1"), Entry::of(west).network("n2")]);

    let before = mesh.run("check", &["--format", "json"]).await.expect(1).json();
    assert_eq!(before["passed"], false);
    let lines = checklist(&before);
    // West's load balancer has no address yet, and neither gateway Service
    // has its network label (apply writes it): no network has a gateway.
    for line in [
        "west gateway fail",
        "east gateway fail",
        "n2 network_gateway fail",
        "n1 network_gateway fail",
    ] {
        assert!(lines.contains(&line.to_string()), "{line:?} not in {lines:#?}");
    }
    let west_checks = &before["clusters"][1]["checks"];
    let gateway = west_checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "gateway")
        .unwrap();
    assert!(
        gateway["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["code"] == "meshform::plan::gateway_address_missing" && p["fix"].is_string()),
        "{gateway:#}"
    );

    // The address arrives, meshform applies: every check passes (the
    // loopback API addresses of the test plane are warnings only).
    support::install::set_gateway_address(west, GATEWAY, "192.0.2.20").await;
    mesh.apply(&[]).await;
    let ready = mesh.run("check", &[]).await.expect(0);
    assert!(ready.stdout.contains("The mesh is ready"), "{ready}");
    assert!(!ready.stdout.contains("[FAIL]"), "{ready}");
    assert!(ready.stdout.contains("192.0.2.20:15443 (west)"), "{ready}");

    // Offline from a snapshot, the same checklist.
    let online = mesh.run("check", &["--format", "json"]).await.expect(0).json();
    let snapshot = mesh.dir().join("observed.json");
    mesh.run("snapshot", &["-o", snapshot.to_str().unwrap()])
        .await
        .expect(0);
    let offline = mesh
        .run("check", &["--format", "json", "--observed", snapshot.to_str().unwrap()])
        .await
        .expect(0)
        .json();
    let without_time = |mut v: Value| {
        v["observed_at"] = Value::Null;
        v
    };
    assert_eq!(without_time(online), without_time(offline));

    // A cluster that cannot be read fails its own line; the other is still checked.
    west.stop().await;
    let down = mesh.run("check", &["--format", "json"]).await.expect(1).json();
    let lines = checklist(&down);
    assert!(lines.contains(&"west reachable fail".to_string()), "{lines:#?}");
    assert!(!lines.iter().any(|l| l.starts_with("west gateway")), "{lines:#?}");
    assert!(lines.contains(&"east reachable pass".to_string()), "{lines:#?}");
    assert!(lines.contains(&"east gateway pass".to_string()), "{lines:#?}");
    west.start().await;
    mesh.assert_no_token_leaked(&[east, west]).await;
}

async fn control_planes(cluster: &Cluster) -> Option<String> {
    Api::<k8s_openapi::api::core::v1::Namespace>::all(cluster.client())
        .get(NAMESPACE)
        .await
        .expect("the mesh namespace")
        .metadata
        .annotations
        .unwrap_or_default()
        .remove("topology.istio.io/controlPlaneClusters")
}

#[tokio::test]
async fn a_remote_names_its_control_plane_and_loses_the_name_when_it_runs_its_own() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    install_istio(east, &Install::correct("east", "flat")).await;
    // A remote install whose sidecars have no istiod address: a blocker.
    install_istio(west, &Install::remote("west", "flat", None)).await;
    let mesh = Mesh::new(&[
        Entry::of(east).network("flat"),
        Entry::of(west).network("flat").remote(),
    ]);
    let (lines, all) = mesh.findings(1).await;
    assert_eq!(lines, ["blocker west remote_pilot_address"]);
    assert!(
        all[0]["message"].as_str().unwrap().contains("east's istiod"),
        "{:#}",
        all[0]
    );

    install_istio(west, &Install::remote("west", "flat", Some("192.0.2.10"))).await;
    let (lines, _) = mesh.findings(0).await;
    assert_eq!(lines, Vec::<String>::new());
    mesh.apply(&[]).await;
    // The one primary there is serves it (the default), named as istiod reads it.
    assert_eq!(control_planes(west).await.as_deref(), Some("east"));
    assert_eq!(control_planes(east).await, None);
    mesh.assert_converged(&clusters.all()).await;
    let check = mesh.run("check", &[]).await.expect(0);
    assert!(
        check
            .stdout
            .contains("served by east's istiod, sidecars reach istiod at 192.0.2.10"),
        "{check}"
    );

    // West installs its own istiod and becomes a primary: meshform takes its
    // annotation off (one apply of the namespace without it), the label stays.
    install_istio(west, &Install::correct("west", "flat")).await;
    mesh.write(&[Entry::of(east).network("flat"), Entry::of(west).network("flat")]);
    mesh.apply(&[]).await;
    assert_eq!(control_planes(west).await, None);
    assert_eq!(network_label(west).await.as_deref(), Some("flat"));
    mesh.assert_converged(&clusters.all()).await;
    mesh.assert_no_token_leaked(&[east, west]).await;
}

/// The `istiod-gateway` Gateway or `istiod-vs` VirtualService of `cluster`,
/// as JSON; none when absent.
async fn istiod_exposure(cluster: &Cluster, gateway: bool) -> Option<Value> {
    let resource = if gateway {
        meshform::objects::gateway_resource()
    } else {
        meshform::objects::virtual_service_resource()
    };
    let name = if gateway { "istiod-gateway" } else { "istiod-vs" };
    Api::<kube::api::DynamicObject>::namespaced_with(cluster.client(), NAMESPACE, &resource)
        .get_opt(name)
        .await
        .expect("reading the istiod exposure")
        .map(|o| serde_json::to_value(o).unwrap())
}

/// A remote on another network reaches its control plane's istiod only
/// through that primary's east-west gateway: meshform writes Istio's
/// `expose-istiod.yaml` there while the remote needs it, and removes it
/// once the remote joins its control plane's network.
#[tokio::test]
async fn a_remote_across_networks_gets_istiod_exposed_on_its_control_planes_gateway() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    for cluster in [east, west] {
        install_eastwest_gateway(cluster).await;
    }
    install_istio(east, &Install::correct("east", "n1")).await;
    // Its sidecars reach istiod at east's east-west gateway (192.0.2.10).
    install_istio(west, &Install::remote("west", "n2", Some("192.0.2.10"))).await;
    let mesh = Mesh::new(&[Entry::of(east).network("n1"), Entry::of(west).network("n2").remote()]);
    let (lines, _) = mesh.findings(0).await;
    assert_eq!(lines, Vec::<String>::new());
    let plan = mesh.run("plan", &[]).await.expect(0);
    assert!(
        plan.stdout
            .contains("+ Gateway and VirtualService istio-system/istiod-gateway, istiod-vs in east"),
        "{plan}"
    );
    mesh.apply(&[]).await;
    mesh.assert_converged(&clusters.all()).await;

    let gateway = istiod_exposure(east, true).await.expect("istiod-gateway in east");
    let ports: Vec<&Value> = gateway["spec"]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["port"]["number"])
        .collect();
    assert_eq!(ports, [&Value::from(15012), &Value::from(15017)]);
    assert_eq!(
        gateway["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "meshform"
    );
    let route = istiod_exposure(east, false).await.expect("istiod-vs in east");
    assert_eq!(
        route["spec"]["tls"][0]["route"][0]["destination"]["host"],
        "istiod.istio-system.svc.cluster.local"
    );
    assert_eq!(istiod_exposure(west, true).await, None, "a remote exposes no istiod");
    mesh.run("check", &[]).await.expect(0);

    // Edited by hand (`kubectl patch`): a drift check sees it, and that the
    // field is kubectl's now; apply takes it back with --force-conflicts.
    let patch = serde_json::json!({ "spec": { "tls": [] } });
    Api::<kube::api::DynamicObject>::namespaced_with(
        east.client(),
        NAMESPACE,
        &meshform::objects::virtual_service_resource(),
    )
    .patch(
        "istiod-vs",
        &PatchParams {
            field_manager: Some("kubectl-patch".into()),
            ..PatchParams::default()
        },
        &Patch::Merge(&patch),
    )
    .await
    .expect("editing istiod-vs");
    let (lines, all) = mesh.findings(1).await;
    assert_eq!(lines, ["blocker east field_conflict"]);
    assert!(
        all[0]["message"].as_str().unwrap().contains("kubectl-patch"),
        "{:#}",
        all[0]
    );
    let drift = mesh
        .run("plan", &["--detailed-exitcode", "--force-conflicts"])
        .await
        .expect(2);
    assert!(drift.stdout.contains("changed in the cluster"), "{drift}");
    mesh.apply(&["--force-conflicts"]).await;
    mesh.assert_converged(&clusters.all()).await;
    assert!(istiod_exposure(east, false).await.unwrap()["spec"]["tls"][0].is_object());

    // The remote joins east's network, but its install still sends sidecars
    // and the injection webhook to east's gateway: the exposure stays
    // (issue 29; before, apply deleted it and new pods in west failed).
    install_istio(west, &Install::remote("west", "n1", Some("192.0.2.10"))).await;
    mesh.write(&[Entry::of(east).network("n1"), Entry::of(west).network("n1").remote()]);
    let plan = mesh.run("plan", &[]).await.expect(0);
    assert!(!plan.stdout.contains("istiod-gateway"), "{plan}");
    mesh.apply(&["--allow-detach"]).await;
    mesh.assert_converged(&clusters.all()).await;
    assert!(istiod_exposure(east, true).await.is_some());
    assert!(istiod_exposure(east, false).await.is_some());
    // Reinstalled to reach istiod directly on the flat network: it goes.
    install_istio(west, &Install::remote("west", "n1", Some("192.0.2.11"))).await;
    let plan = mesh.run("plan", &[]).await.expect(0);
    assert!(
        plan.stdout
            .contains("install reaches istiod through this gateway any more"),
        "{plan}"
    );
    mesh.apply(&[]).await;
    mesh.assert_converged(&clusters.all()).await;
    assert_eq!(istiod_exposure(east, true).await, None);
    assert_eq!(istiod_exposure(east, false).await, None);
    mesh.assert_no_token_leaked(&[east, west]).await;
}

/// Issue 29 item 7: apply plans a saved plan again, with findings of now. A
/// remote reinstalled since to reach istiod where its control plane's
/// gateway is not makes a blocker of that remote, which holds back what the
/// saved plan would write for it: refused, nothing written.
#[tokio::test]
async fn a_saved_plan_is_refused_once_a_remotes_pilot_address_changed() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    for cluster in [east, west] {
        install_eastwest_gateway(cluster).await;
    }
    install_istio(east, &Install::correct("east", "n1")).await;
    install_istio(west, &Install::remote("west", "n2", Some("192.0.2.10"))).await;
    let mesh = Mesh::new(&[Entry::of(east).network("n1"), Entry::of(west).network("n2").remote()]);
    mesh.apply(&[]).await;
    let plan = mesh.dir().join("p.json");
    let plan = plan.to_str().expect("utf-8 path");
    mesh.run("plan", &["--rotate-tokens", "--out", plan]).await.expect(0);

    install_istio(west, &Install::remote("west", "n2", Some("192.0.2.11"))).await;
    let before = object_state(&[east, west]).await;
    let stale = mesh.run("apply", &["--auto-approve", plan]).await.expect(1);
    assert!(
        stale.stderr.contains(
            "changed east: write_remote_secret Secret istio-system/istio-remote-secret-west: apply runs it → holds it back (blocker remote_pilot_address concerns west)"
        ),
        "{stale}"
    );
    assert_eq!(
        before,
        object_state(&[east, west]).await,
        "a stale plan wrote something"
    );
    mesh.assert_no_token_leaked(&[east, west]).await;
}

/// A mesh that declares gateways in `meshNetworks` instead of Service
/// labels: meshform says plainly that it judges gateways by the labelled
/// Services only, in the plan and in `check`, and names the fix.
#[tokio::test]
async fn gateways_declared_in_mesh_networks_are_named_as_not_judged() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    for (cluster, network) in [(east, "n1"), (west, "n2")] {
        install_eastwest_gateway(cluster).await;
        install_istio(cluster, &Install::correct(cluster.name(), network)).await;
    }
    let networks = "  n2:\n    endpoints:\n    - fromRegistry: west\n    gateways:\n    - address: 192.0.2.77\n      port: 15443\n";
    install_istio(
        east,
        &Install {
            mesh_networks: Some(networks.to_string()),
            ..Install::correct("east", "n1")
        },
    )
    .await;
    let mesh = Mesh::new(&[Entry::of(east).network("n1"), Entry::of(west).network("n2")]);
    let (lines, all) = mesh.findings(0).await;
    assert_eq!(lines, ["warning east mesh_networks_gateways"]);
    let message = all[0]["message"].as_str().unwrap();
    assert!(
        message.contains("ConfigMap istio-system/istio of east declares gateways for n2"),
        "{message}"
    );
    assert!(
        all[0]["help"]
            .as_str()
            .unwrap()
            .contains("drop values.global.meshNetworks")
    );
    mesh.apply(&[]).await;
    mesh.assert_converged(&clusters.all()).await;
    // A warning in `check`, under east's gateway: the rest passes.
    let check = mesh.run("check", &[]).await.expect(0);
    assert!(check.stdout.contains("meshNetworks"), "{check}");
}

/// One cluster's blocker does not stop the rest of the mesh from being kept
/// alive (issue 29): with north's load balancer pending and a rotation due
/// everywhere, east and west rotate each other's tokens; every pair with
/// north is held back, and apply says so in text and JSON, exits 1, and
/// converges once the address is back.
#[tokio::test]
async fn a_blocker_in_one_cluster_holds_back_its_pairs_and_every_other_pair_rotates() {
    let clusters = ControlPlane::shared().clusters(&["east", "west", "north"]).await;
    let (east, west, north) = (
        clusters.by_name("east"),
        clusters.by_name("west"),
        clusters.by_name("north"),
    );
    for (cluster, network) in [(east, "n1"), (west, "n2"), (north, "n3")] {
        install_eastwest_gateway(cluster).await;
        install_istio(cluster, &Install::correct(cluster.name(), network)).await;
    }
    let mesh = Mesh::new(&[
        Entry::of(east).network("n1"),
        Entry::of(west).network("n2"),
        Entry::of(north).network("n3"),
    ]);
    mesh.apply(&[]).await;
    mesh.assert_converged(&clusters.all()).await;

    // north's load balancer loses its address.
    let pending = serde_json::json!({ "status": { "loadBalancer": { "ingress": null } } });
    Api::<Service>::namespaced(north.client(), NAMESPACE)
        .patch_status(GATEWAY, &PatchParams::default(), &Patch::Merge(&pending))
        .await
        .expect("taking north's address away");
    let tokens = async || {
        let mut all = std::collections::BTreeMap::new();
        for cluster in [east, west, north] {
            for (name, secret) in support::mesh::remote_secrets(cluster).await {
                let data = secret.data.unwrap_or_default();
                let token = data.values().next().and_then(|v| support::mesh::token_of(&v.0));
                all.insert(format!("{}/{name}", cluster.name()), token.expect("a token"));
            }
        }
        all
    };
    let changed = |before: &std::collections::BTreeMap<String, String>,
                   after: &std::collections::BTreeMap<String, String>| {
        before
            .iter()
            .filter(|(k, v)| after.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect::<Vec<_>>()
    };

    let before = tokens().await;
    let run = mesh
        .run("apply", &["--auto-approve", "--rotate-tokens"])
        .await
        .expect(1);
    assert!(
        run.stdout
            .contains("Apply incomplete: 2 done, 0 failed, 0 skipped, 4 held back"),
        "{run}"
    );
    assert!(
        run.stdout.contains(
            "skipped ~ Secret istio-system/istio-remote-secret-north in east: held back: blocker gateway_address_missing concerns north; fix it and apply again"
        ),
        "{run}"
    );
    assert!(
        run.stdout
            .contains("4 action(s) held back: blocker gateway_address_missing concerns north"),
        "{run}"
    );
    let after = tokens().await;
    assert_eq!(
        changed(&before, &after),
        ["east/istio-remote-secret-west", "west/istio-remote-secret-east"]
    );

    // The same as JSON: each held action as a skipped event with why, and
    // the summary lists them.
    let run = mesh
        .run("apply", &["--auto-approve", "--rotate-tokens", "--format", "json"])
        .await
        .expect(1);
    let events = run.events();
    let summary = events.last().expect("a summary");
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["done"].as_array().unwrap().len(), 2, "{summary:#}");
    let held = summary["held"].as_array().unwrap();
    assert_eq!(held.len(), 4, "{summary:#}");
    for entry in held {
        let why = entry["why"].as_str().unwrap();
        assert!(why.contains("blocker gateway_address_missing concerns north"), "{why}");
    }
    let skipped: Vec<&Value> = events.iter().filter(|e| e["event"] == "skipped").collect();
    assert_eq!(skipped.len(), 4, "{events:#?}");
    assert_eq!(
        changed(&after, &tokens().await),
        ["east/istio-remote-secret-west", "west/istio-remote-secret-east"]
    );

    // The address is back: the held pairs rotate, and the mesh converges.
    support::install::set_gateway_address(north, GATEWAY, "192.0.2.30").await;
    let before = tokens().await;
    mesh.apply(&["--rotate-tokens"]).await;
    assert_eq!(changed(&before, &tokens().await).len(), 6);
    mesh.assert_converged(&clusters.all()).await;
}
