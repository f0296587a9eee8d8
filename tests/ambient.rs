//! Ambient meshes and Gateway API east-west gateways (issue 31), on the test
//! control plane: what observe reads of them (the Gateway API CRDs installed
//! as released upstream, or absent), and how plan and check judge each
//! network's gateway the way istiod of that data plane finds it.

mod support;

use support::ambient::{
    ambient_east_west, apply_gateway, install_gateway_api, install_ztunnel, make_istiod_ambient,
    set_gateway_status_address, set_service_scope,
};
use support::controlplane::ControlPlane;
use support::install::{Install, install_istio};
use support::mesh::{Entry, Mesh};

/// Observe reads the Gateway API Gateways of the mesh namespace with their
/// listeners and both kinds of address, ztunnel's identity, istiod's ambient
/// env and the mesh config's `serviceScopeConfigs`; a cluster without the
/// Gateway API CRDs is read all the same, the missing CRDs recorded as a fact.
#[tokio::test]
async fn observe_reads_gateway_api_gateways_ztunnel_and_istiods_ambient_settings() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    install_istio(east, &Install::correct("east", "east")).await;
    make_istiod_ambient(east, true).await;
    install_ztunnel(east, Some("east"), Some("east")).await;
    set_service_scope(
        east,
        "- servicesSelector:\n    matchLabels: {global: \"true\"}\n  scope: GLOBAL\n",
    )
    .await;
    install_gateway_api(east).await;
    apply_gateway(east, &ambient_east_west("east")).await;
    set_gateway_status_address(east, "istio-eastwestgateway", "192.0.2.20").await;
    install_istio(west, &Install::correct("west", "west")).await;

    let mesh = Mesh::new(&[Entry::of(east), Entry::of(west)]);
    mesh.write_with(&[Entry::of(east), Entry::of(west)], "data_plane = \"ambient\"\n");
    let snapshot = mesh.run("snapshot", &[]).await.expect(0).json();
    assert_eq!(snapshot["format_version"], 4);

    let east_facts = &snapshot["clusters"]["east"];
    let gateway = &east_facts["k8s_gateways"]["istio-eastwestgateway"];
    assert_eq!(gateway["class"], "istio-east-west", "{east_facts:#}");
    assert_eq!(gateway["network"], "east");
    assert_eq!(gateway["status_addresses"], serde_json::json!(["192.0.2.20"]));
    assert_eq!(gateway["spec_addresses"], serde_json::json!([]));
    let listener = &gateway["listeners"][0];
    assert_eq!(
        (&listener["port"], &listener["protocol"], &listener["tls_mode"]),
        (&15008.into(), &"HBONE".into(), &"Terminate".into()),
        "{gateway:#}"
    );
    assert_eq!(
        east_facts["ztunnel"],
        serde_json::json!({"cluster_id": "east", "network": "east"})
    );
    let install = &east_facts["installs"]["default"];
    assert_eq!(install["istiod_env"]["PILOT_ENABLE_AMBIENT"], "true", "{install:#}");
    assert_eq!(install["istiod_env"]["AMBIENT_ENABLE_MULTI_NETWORK"], "true");
    assert_eq!(
        install["service_scope_configs"],
        r#"[{"scope":"GLOBAL","servicesSelector":{"matchLabels":{"global":"true"}}}]"#
    );

    // No Gateway API here: the list is a 404, a fact and not a failed read.
    let west_facts = &snapshot["clusters"]["west"];
    assert_eq!(west_facts["state"], "reachable", "{west_facts:#}");
    assert!(west_facts["k8s_gateways"].is_null(), "{west_facts:#}");
    assert!(west_facts["ztunnel"].is_null(), "{west_facts:#}");
    assert!(west_facts["installs"]["default"].get("istiod_env").is_none());
}

/// `cluster code` of every blocker and warning of `mesh`'s plan, not the
/// warning that the test plane's API servers are on loopback.
async fn findings(mesh: &Mesh, exit: i32) -> Vec<String> {
    let plan = mesh.run("plan", &["--format", "json"]).await.expect(exit).json();
    plan["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["code"] != "meshform::plan::peer_address")
        .map(|f| {
            format!(
                "{} {}",
                f["cluster"].as_str().unwrap_or("-"),
                f["code"].as_str().unwrap().trim_start_matches("meshform::plan::")
            )
        })
        .collect()
}

/// An ambient mesh of two primaries on two networks, judged as ambient's
/// istiod finds gateways: every missing piece is a blocker with its own
/// code, in the order a platform team following Istio's ambient multicluster
/// guide would fix them, and none of the classic gateway objects is asked for.
#[tokio::test]
async fn an_ambient_mesh_is_blocked_until_each_network_has_an_addressed_east_west_gateway() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    for (cluster, network) in [(east, "n1"), (west, "n2")] {
        install_istio(cluster, &Install::correct(cluster.name(), network)).await;
        make_istiod_ambient(cluster, false).await;
    }
    // ztunnel of east left at the chart's defaults: cluster id Kubernetes, no network.
    install_ztunnel(east, None, None).await;
    install_gateway_api(east).await;
    let entries = [Entry::of(east).network("n1"), Entry::of(west).network("n2")];
    let mesh = Mesh::new(&entries);
    mesh.write_with(&entries, "data_plane = \"ambient\"\n");

    let found = findings(&mesh, 1).await;
    for expected in [
        "east ztunnel_cluster_id",
        "east ztunnel_network",
        "east ambient_multi_network_off",
        "east ambient_gateway_missing",
        "west ztunnel_missing",
        "west ambient_multi_network_off",
        "west gateway_api_missing",
    ] {
        assert!(found.iter().any(|f| f == expected), "{expected} in {found:#?}");
    }
    // Never the classic gateway's findings: ambient has no gateway Service.
    assert!(!found.iter().any(|f| f.contains("gateway_service")), "{found:#?}");

    install_ztunnel(east, Some("east"), Some("n1")).await;
    install_ztunnel(west, Some("west"), Some("n2")).await;
    install_gateway_api(west).await;
    for cluster in [east, west] {
        make_istiod_ambient(cluster, true).await;
    }
    // The sample's Gateway, once with the wrong network, once pending.
    apply_gateway(east, &ambient_east_west("n2")).await;
    apply_gateway(west, &ambient_east_west("n2")).await;
    let found = findings(&mesh, 1).await;
    assert_eq!(found, ["east ambient_gateway_network", "west ambient_gateway_pending"]);

    apply_gateway(east, &ambient_east_west("n1")).await;
    set_gateway_status_address(east, "istio-eastwestgateway", "192.0.2.30").await;
    set_gateway_status_address(west, "istio-eastwestgateway", "192.0.2.31").await;
    let mut second = ambient_east_west("n1");
    second["metadata"]["name"] = "istio-eastwestgateway-2".into();
    apply_gateway(east, &second).await;
    let found = findings(&mesh, 0).await;
    assert_eq!(found, ["east ambient_gateway_duplicate"]);

    // The plan writes no classic cross-network Gateway and no istiod exposure.
    let plan = mesh.run("plan", &["--format", "json"]).await.expect(0).json();
    let kinds: Vec<&str> = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["action"].as_str())
        .collect();
    assert!(
        !kinds.iter().any(|k| k.contains("gateway") || k.contains("exposure")),
        "{kinds:?}"
    );
}

/// A sidecar mesh whose east-west gateway is a Gateway API Gateway (no
/// gateway Service): istiod takes it, so meshform neither blocks on a
/// missing Service nor writes a second gateway; unlabelled, it is a blocker
/// with the `kubectl label` that fixes it.
#[tokio::test]
async fn a_sidecar_mesh_with_a_gateway_api_east_west_gateway_needs_no_service() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    for (cluster, network, address) in [(east, "n1", "192.0.2.40"), (west, "n2", "192.0.2.41")] {
        install_istio(cluster, &Install::correct(cluster.name(), network)).await;
        install_gateway_api(cluster).await;
        let gateway = support::ambient::sidecar_east_west("eastwest", Some(network), address);
        apply_gateway(cluster, &gateway).await;
    }
    let unlabelled = support::ambient::sidecar_east_west("eastwest", None, "192.0.2.41");
    // Server-side apply by the same manager drops the label it no longer sets.
    apply_gateway(west, &unlabelled).await;
    let mesh = Mesh::new(&[Entry::of(east).network("n1"), Entry::of(west).network("n2")]);
    let found = findings(&mesh, 1).await;
    assert_eq!(found, ["west gateway_network_label"], "{found:#?}");

    apply_gateway(
        west,
        &support::ambient::sidecar_east_west("eastwest", Some("n2"), "192.0.2.41"),
    )
    .await;
    let found = findings(&mesh, 0).await;
    assert!(found.is_empty(), "{found:#?}");
    let plan = mesh.run("plan", &["--format", "json"]).await.expect(0).json();
    let kinds: Vec<&str> = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["action"].as_str())
        .collect();
    assert!(
        !kinds.iter().any(|k| k.contains("gateway")),
        "no second gateway: {kinds:?}"
    );
}
