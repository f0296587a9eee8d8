//! Ambient meshes and Gateway API east-west gateways (issue 31), on the test
//! control plane: what observe reads of them (the Gateway API CRDs installed
//! as released upstream, or absent), and how plan and check judge each
//! network's gateway the way istiod of that data plane finds it.

mod support;

use support::ambient::{
    ambient_east_west, apply_gateway, apply_gateway_as, gateway_managers, gateways, install_gateway_api,
    install_ztunnel, make_istiod_ambient, set_gateway_status_address, set_service_scope, sidecar_east_west,
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

/// `cluster action [gateway]` of every action of `mesh`'s plan, whatever its exit.
async fn actions(mesh: &Mesh) -> Vec<String> {
    let plan = mesh.run("plan", &["--format", "json"]).await.json();
    plan["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .map(|a| {
            let gateway = a["gateway"].as_str().map(|g| format!(" {g}")).unwrap_or_default();
            format!(
                "{} {}{gateway}",
                a["cluster"].as_str().unwrap(),
                a["action"].as_str().unwrap()
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
        "west ztunnel_missing",
        "west ambient_multi_network_off",
        "west gateway_api_missing",
    ] {
        assert!(found.iter().any(|f| f == expected), "{expected} in {found:#?}");
    }
    // Never the classic gateway's findings: ambient has no gateway Service.
    assert!(!found.iter().any(|f| f.contains("gateway_service")), "{found:#?}");
    // East has the Gateway API and no east-west Gateway: meshform writes it
    // (a planned write, no blocker); west has no Gateway API to write it with.
    assert!(!found.iter().any(|f| f.contains("ambient_gateway")), "{found:#?}");
    assert!(
        actions(&mesh)
            .await
            .contains(&"east ensure_ambient_gateway".to_string()),
        "{:?}",
        actions(&mesh).await
    );

    install_ztunnel(east, Some("east"), Some("n1")).await;
    install_ztunnel(west, Some("west"), Some("n2")).await;
    install_gateway_api(west).await;
    for cluster in [east, west] {
        make_istiod_ambient(cluster, true).await;
    }
    // The sample's Gateway, once with the wrong network, once pending. The
    // wrong label is the installer's: meshform would relabel it, but the
    // installer owns the field and would set it back.
    apply_gateway(east, &ambient_east_west("n2")).await;
    apply_gateway(west, &ambient_east_west("n2")).await;
    let found = findings(&mesh, 1).await;
    assert_eq!(found, ["east field_conflict", "west ambient_gateway_pending"]);
    assert!(
        actions(&mesh)
            .await
            .contains(&"east set_k8s_gateway_network istio-eastwestgateway".to_string()),
        "{:?}",
        actions(&mesh).await
    );

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
/// missing Service nor writes a second gateway. Unlabelled, meshform writes
/// its network label and only that: the installer keeps every other field.
/// A label helm owns is a conflict apply does not force.
#[tokio::test]
async fn meshform_labels_a_users_gateway_api_gateway_and_only_that_field() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    for (cluster, network) in [(east, "n1"), (west, "n2")] {
        install_istio(cluster, &Install::correct(cluster.name(), network)).await;
        install_gateway_api(cluster).await;
    }
    // East's install made its Gateway without the label; helm labels west's
    // for a network it left.
    apply_gateway(east, &sidecar_east_west("eastwest", None, "192.0.2.40")).await;
    apply_gateway_as(west, &sidecar_east_west("eastwest", Some("old"), "192.0.2.41"), "helm").await;
    let mesh = Mesh::new(&[Entry::of(east).network("n1"), Entry::of(west).network("n2")]);
    let plan = mesh.run("plan", &["--format", "json"]).await.expect(1).json();
    let conflict = plan["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "meshform::plan::field_conflict")
        .unwrap_or_else(|| panic!("{plan:#}"));
    assert_eq!(conflict["cluster"], "west");
    assert!(
        conflict["message"]
            .as_str()
            .unwrap()
            .contains("label topology.istio.io/network of Gateway istio-system/eastwest in west is owned by helm"),
        "{conflict:#}"
    );
    assert!(
        conflict["help"].as_str().unwrap().contains("helm manages it"),
        "{conflict:#}"
    );
    let planned = actions(&mesh).await;
    for expected in [
        "east set_k8s_gateway_network eastwest",
        "west set_k8s_gateway_network eastwest",
    ] {
        assert!(planned.iter().any(|a| a == expected), "{expected} in {planned:#?}");
    }
    assert!(
        !planned
            .iter()
            .any(|a| a.contains("ensure_gateway") || a.contains("ambient")),
        "no second gateway: {planned:#?}"
    );
    // Apply refuses; helm's release is the fix.
    mesh.run("apply", &["--auto-approve"]).await.expect(1);
    let labels = |g: &kube::api::DynamicObject| g.metadata.labels.clone().unwrap_or_default();
    assert!(
        !labels(&gateways(east).get("eastwest").await.unwrap()).contains_key("topology.istio.io/network"),
        "a refused apply labelled east's Gateway"
    );

    apply_gateway_as(west, &sidecar_east_west("eastwest", Some("n2"), "192.0.2.41"), "helm").await;
    let found = findings(&mesh, 0).await;
    assert!(found.is_empty(), "{found:#?}");
    mesh.apply(&[]).await;
    let gateway = gateways(east).get("eastwest").await.unwrap();
    assert_eq!(labels(&gateway)["topology.istio.io/network"], "n1");
    // meshform's entry holds the label alone; the installer keeps the spec.
    let managers = gateway_managers(east, "eastwest").await;
    let ours: Vec<&serde_json::Value> = managers
        .iter()
        .filter(|(m, _)| m == "meshform")
        .map(|(_, f)| f)
        .collect();
    assert_eq!(
        ours,
        [&serde_json::json!({"f:metadata": {"f:labels": {"f:topology.istio.io/network": {}}}})],
        "{managers:#?}"
    );
    assert!(
        managers
            .iter()
            .any(|(m, f)| m == "istio-installer" && f["f:spec"]["f:listeners"].is_object()),
        "{managers:#?}"
    );
    assert_eq!(gateway.data["spec"]["addresses"][0]["value"], "192.0.2.40");
    mesh.assert_converged(&clusters.all()).await;
}

/// An ambient mesh whose networks have no east-west Gateway: meshform
/// writes Istio's sample as its own (in a dry run first, with a diff),
/// labels the one a user made, puts its own back after a hand edit
/// (`--force-conflicts`, as the edit's manager owns the fields) and never
/// writes a classic gateway or istiod's exposure.
#[tokio::test]
async fn meshform_writes_the_ambient_east_west_gateway_and_repairs_it() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    for (cluster, network) in [(east, "n1"), (west, "n2")] {
        install_istio(cluster, &Install::correct(cluster.name(), network)).await;
        make_istiod_ambient(cluster, true).await;
        install_ztunnel(cluster, Some(cluster.name()), Some(network)).await;
        install_gateway_api(cluster).await;
    }
    // West's user made the sample without its label, by hand (no installer).
    let mut unlabelled = ambient_east_west("n2");
    unlabelled["metadata"].as_object_mut().unwrap().remove("labels");
    apply_gateway_as(west, &unlabelled, "kubectl").await;
    let entries = [Entry::of(east).network("n1"), Entry::of(west).network("n2")];
    let mesh = Mesh::new(&entries);
    mesh.write_with(&entries, "data_plane = \"ambient\"\n");
    let planned = actions(&mesh).await;
    assert!(
        planned.contains(&"east ensure_ambient_gateway".to_string()),
        "{planned:#?}"
    );
    assert!(
        planned.contains(&"west set_k8s_gateway_network istio-eastwestgateway".to_string()),
        "{planned:#?}"
    );
    assert!(
        !planned
            .iter()
            .any(|a| a.contains("ensure_gateway") || a.contains("exposure")),
        "{planned:#?}"
    );

    let dry = mesh
        .run("apply", &["--auto-approve", "--dry-run", "--diff"])
        .await
        .expect(0);
    assert!(dry.stdout.contains("gatewayClassName"), "{dry}");
    assert!(
        gateways(east).get_opt("istio-eastwestgateway").await.unwrap().is_none(),
        "a dry run wrote"
    );

    mesh.apply(&[]).await;
    let gateway = gateways(east).get("istio-eastwestgateway").await.unwrap();
    let written = serde_json::to_value(&gateway).unwrap();
    let sample = ambient_east_west("n1");
    assert_eq!(written["spec"]["gatewayClassName"], sample["spec"]["gatewayClassName"]);
    let listener = &written["spec"]["listeners"][0];
    for key in ["name", "port", "protocol"] {
        assert_eq!(listener[key], sample["spec"]["listeners"][0][key], "{written:#}");
    }
    assert_eq!(
        listener["tls"]["options"],
        sample["spec"]["listeners"][0]["tls"]["options"]
    );
    let labels = gateway.metadata.labels.clone().unwrap();
    assert_eq!(labels["topology.istio.io/network"], "n1");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "meshform", "{labels:?}");
    let west_labels = gateways(west)
        .get("istio-eastwestgateway")
        .await
        .unwrap()
        .metadata
        .labels
        .unwrap();
    assert_eq!(west_labels["topology.istio.io/network"], "n2");
    assert!(
        !west_labels.contains_key("app.kubernetes.io/managed-by"),
        "the user's Gateway stays theirs"
    );

    // Until Istio's gateway controller gives them addresses, both are pending.
    let found = findings(&mesh, 1).await;
    assert_eq!(found, ["east ambient_gateway_pending", "west ambient_gateway_pending"]);
    set_gateway_status_address(east, "istio-eastwestgateway", "192.0.2.60").await;
    set_gateway_status_address(west, "istio-eastwestgateway", "192.0.2.61").await;
    mesh.assert_converged(&clusters.all()).await;

    // A hand edit of meshform's Gateway: another port.
    let mut listeners = gateways(east).get("istio-eastwestgateway").await.unwrap().data["spec"]["listeners"].clone();
    listeners[0]["port"] = 15009.into();
    gateways(east)
        .patch(
            "istio-eastwestgateway",
            &kube::api::PatchParams {
                field_manager: Some("kubectl-patch".into()),
                ..Default::default()
            },
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"listeners": listeners}})),
        )
        .await
        .unwrap();
    let found = findings(&mesh, 1).await;
    assert_eq!(found, ["east field_conflict"], "{found:#?}");
    let plan = mesh
        .run("plan", &["--format", "json", "--force-conflicts"])
        .await
        .expect(0)
        .json();
    let repair = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "ensure_ambient_gateway")
        .unwrap_or_else(|| panic!("{plan:#}"));
    assert_eq!((&repair["cluster"], &repair["update"]), (&"east".into(), &true.into()));
    assert!(
        repair["reason"].as_str().unwrap().contains("changed in the cluster"),
        "{repair:#}"
    );
    mesh.apply(&["--force-conflicts"]).await;
    let repaired = gateways(east).get("istio-eastwestgateway").await.unwrap();
    assert_eq!(repaired.data["spec"]["listeners"][0]["port"], 15008);
    mesh.assert_converged(&clusters.all()).await;
}

/// Once both clusters are on one network, meshform deletes the ambient
/// east-west Gateway it wrote (with its UID and resourceVersion as
/// preconditions), and leaves the user's Gateway API Gateways alone: the
/// east-west one it labelled, and an ingress of another class.
#[tokio::test]
async fn meshform_deletes_its_ambient_gateway_once_no_peer_is_on_another_network() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    for (cluster, network) in [(east, "n1"), (west, "n2")] {
        install_istio(cluster, &Install::correct(cluster.name(), network)).await;
        make_istiod_ambient(cluster, true).await;
        install_ztunnel(cluster, Some(cluster.name()), Some(network)).await;
        install_gateway_api(cluster).await;
    }
    apply_gateway(west, &ambient_east_west("n2")).await;
    set_gateway_status_address(west, "istio-eastwestgateway", "192.0.2.63").await;
    let ingress = serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "ingress", "namespace": "istio-system"},
        "spec": {"gatewayClassName": "istio",
                 "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}
    });
    apply_gateway(east, &ingress).await;
    let entries = [Entry::of(east).network("n1"), Entry::of(west).network("n2")];
    let mesh = Mesh::new(&entries);
    mesh.write_with(&entries, "data_plane = \"ambient\"\n");
    mesh.apply(&[]).await;
    let written = gateways(east).get("istio-eastwestgateway").await.unwrap();
    set_gateway_status_address(east, "istio-eastwestgateway", "192.0.2.62").await;
    mesh.assert_converged(&clusters.all()).await;

    // west moves onto east's network (its Istio reinstalled with it).
    install_istio(west, &Install::correct("west", "n1")).await;
    make_istiod_ambient(west, true).await;
    install_ztunnel(west, Some("west"), Some("n1")).await;
    let entries = [Entry::of(east).network("n1"), Entry::of(west).network("n1")];
    mesh.write_with(&entries, "data_plane = \"ambient\"\n");
    let plan = mesh.run("plan", &["--format", "json"]).await.json();
    let deletes: Vec<_> = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "delete_ambient_gateway")
        .collect();
    assert_eq!(deletes.len(), 1, "{plan:#}");
    assert_eq!(deletes[0]["cluster"], "east");
    assert_eq!(
        deletes[0]["precondition"]["uid"].as_str(),
        written.metadata.uid.as_deref(),
        "{plan:#}"
    );
    mesh.apply(&["--allow-detach", "--restart-workloads"]).await;
    assert!(
        gateways(east).get_opt("istio-eastwestgateway").await.unwrap().is_none(),
        "meshform's ambient Gateway is left"
    );
    assert!(gateways(east).get_opt("ingress").await.unwrap().is_some());
    let users = gateways(west).get("istio-eastwestgateway").await.unwrap();
    assert!(
        !users
            .metadata
            .labels
            .unwrap_or_default()
            .contains_key("app.kubernetes.io/managed-by"),
        "the user's Gateway stays theirs"
    );
    mesh.assert_converged(&clusters.all()).await;
}

/// A mesh of a sidecar cluster and an ambient cluster on two networks:
/// each data plane's pairs work, but Istio has no cross-network path
/// between them, a warning naming both; on one network there is none.
#[tokio::test]
async fn a_mesh_mixing_sidecar_and_ambient_across_networks_is_warned_about() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    install_istio(east, &Install::correct("east", "n1")).await;
    install_istio(west, &Install::correct("west", "n2")).await;
    make_istiod_ambient(west, true).await;
    install_ztunnel(west, Some("west"), Some("n2")).await;
    install_gateway_api(west).await;
    let mesh = Mesh::new(&[
        Entry::of(east).network("n1"),
        Entry::of(west).network("n2").data_plane("ambient"),
    ]);
    let plan = mesh.run("plan", &["--format", "json"]).await.json();
    let mixed = plan["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "meshform::plan::mixed_data_plane_networks")
        .unwrap_or_else(|| panic!("{plan:#}"));
    assert_eq!(mixed["kind"], "warning");
    assert_eq!(mixed["concerns"], serde_json::json!(["east", "west"]));
    assert!(
        mixed["message"]
            .as_str()
            .unwrap()
            .starts_with("sidecar clusters east and ambient clusters west are on different networks"),
        "{mixed:#}"
    );
    assert!(
        mixed["help"].as_str().unwrap().contains("istio/istio#61704"),
        "{mixed:#}"
    );

    // The ambient cluster on the sidecar one's network: no warning.
    mesh.write(&[
        Entry::of(east).network("n1"),
        Entry::of(west).network("n1").data_plane("ambient"),
    ]);
    let plan = mesh.run("plan", &["--format", "json"]).await.json();
    let codes: Vec<&str> = plan["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["code"].as_str())
        .collect();
    assert!(
        !codes.contains(&"meshform::plan::mixed_data_plane_networks"),
        "{codes:#?}"
    );
}
