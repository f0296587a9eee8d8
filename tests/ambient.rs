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
