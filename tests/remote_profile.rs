//! A remote installed as Istio's `remote` profile renders it (issue 29 item
//! 3): no istiod Deployment and no injector ConfigMap, only a selector-less
//! `istiod` Service and, for an IP, its EndpointSlice holding the pilot
//! address (istio/istio `manifests/charts/istio-control/istio-discovery/`
//! `files/profile-remote.yaml`, `templates/remote-istiod-service.yaml`,
//! `templates/remote-istiod-endpointslices.yaml`). meshform reads the install
//! and its pilot address from those objects, keeps the istiod exposure of
//! the primary the address points at, and flags an address that reaches no
//! istiod.

mod support;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject};
use support::controlplane::{Cluster, ControlPlane};
use support::install::{Install, install_istio, set_gateway_address};
use support::mesh::{Entry, Mesh, NAMESPACE, install_eastwest_gateway};

/// Whether `cluster` holds meshform's `istiod-gateway` and `istiod-vs`.
async fn exposed(cluster: &Cluster) -> bool {
    let gateway =
        Api::<DynamicObject>::namespaced_with(cluster.client(), NAMESPACE, &meshform::objects::gateway_resource())
            .get_opt("istiod-gateway")
            .await
            .expect("reading istiod-gateway");
    let route = Api::<DynamicObject>::namespaced_with(
        cluster.client(),
        NAMESPACE,
        &meshform::objects::virtual_service_resource(),
    )
    .get_opt("istiod-vs")
    .await
    .expect("reading istiod-vs");
    assert_eq!(
        gateway.is_some(),
        route.is_some(),
        "one of the two in {}",
        cluster.name()
    );
    gateway.is_some()
}

#[tokio::test]
async fn a_remote_profile_install_is_read_and_keeps_its_primarys_istiod_exposure() {
    let clusters = ControlPlane::shared()
        .clusters(&["rp-east", "rp-west", "rp-south"])
        .await;
    let (east, west, south) = (
        clusters.by_name("rp-east"),
        clusters.by_name("rp-west"),
        clusters.by_name("rp-south"),
    );
    for cluster in [east, west, south] {
        install_eastwest_gateway(cluster).await;
    }
    // East's gateway is at 192.0.2.10, south's at 192.0.2.20.
    set_gateway_address(south, "istio-eastwestgateway", "192.0.2.20").await;
    install_istio(east, &Install::correct("rp-east", "n1")).await;
    install_istio(west, &Install::remote("rp-west", "n2", Some("192.0.2.10"))).await;
    // The shape of the remote profile: nothing of what a primary's install writes.
    let deployments = Api::<Deployment>::namespaced(west.client(), NAMESPACE)
        .list(&Default::default())
        .await
        .unwrap();
    assert!(deployments.items.is_empty());
    let injector = Api::<ConfigMap>::namespaced(west.client(), NAMESPACE)
        .get_opt("istio-sidecar-injector")
        .await
        .unwrap();
    assert!(injector.is_none());

    let mesh = Mesh::new(&[Entry::of(east).network("n1"), Entry::of(west).network("n2").remote()]);
    // Not `istio_not_installed`, and its address is east's gateway: nothing to say.
    let (lines, _) = mesh.findings(0).await;
    assert_eq!(lines, Vec::<String>::new());
    mesh.apply(&[]).await;
    mesh.assert_converged(&clusters.all()).await;
    assert!(exposed(east).await);
    let check = mesh.run("check", &[]).await.expect(0);
    assert!(check.stdout.contains("sidecars reach istiod at 192.0.2.10"), "{check}");

    // A second primary joins and becomes west's control plane: west's install
    // still reaches east's istiod through east's gateway, so east's exposure
    // stays (with a warning saying how to finish) while south's is written.
    install_istio(south, &Install::correct("rp-south", "n3")).await;
    mesh.write(&[
        Entry::of(east).network("n1"),
        Entry::of(west).network("n2").served_by("rp-south"),
        Entry::of(south).network("n3"),
    ]);
    let (lines, _) = mesh.findings(0).await;
    assert_eq!(lines, ["warning rp-west remote_pilot_previous"]);
    mesh.apply(&["--allow-detach"]).await;
    mesh.assert_converged(&clusters.all()).await;
    assert!(
        exposed(east).await,
        "east's istiod exposure went while west still used it"
    );
    assert!(exposed(south).await);

    // Reinstalled with an address that is no primary's gateway: flagged, by
    // IP (the EndpointSlice) and by hostname (the ExternalName Service).
    for address in ["192.0.2.99", "istiod.rp-south.example.com"] {
        install_istio(west, &Install::remote("rp-west", "n2", Some(address))).await;
        let (lines, all) = mesh.findings(1).await;
        assert_eq!(lines, ["blocker rp-west remote_pilot_address"], "{address}");
        let message = all[0]["message"].as_str().unwrap();
        assert!(message.contains(address), "{message}");
        assert!(message.contains("192.0.2.20"), "{message}");
    }

    // Reinstalled for its control plane: east's exposure goes, south's stays.
    install_istio(west, &Install::remote("rp-west", "n2", Some("192.0.2.20"))).await;
    let (lines, _) = mesh.findings(0).await;
    assert_eq!(lines, Vec::<String>::new());
    mesh.apply(&[]).await;
    mesh.assert_converged(&clusters.all()).await;
    assert!(!exposed(east).await);
    assert!(exposed(south).await);
    mesh.assert_no_token_leaked(&[east, west, south]).await;
}
