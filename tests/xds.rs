//! A real istiod's own xDS answers prove the topology rules after every
//! apply (issue 14). istiod runs for a primary of the test control plane
//! (`tests/istiod/`, see `support::istiod`) and is asked, through EDS, as a
//! sidecar of a given network and cluster, for the endpoints of a Service
//! that has pods in every cluster (`support::workload`). What each proxy
//! must get follows from mesh.toml alone: the pod IPs of every cluster on its
//! own network, and for every cluster on another network exactly that
//! cluster's east-west gateway address and port, no pod IP of it
//! (istio/istio `pilot/pkg/xds/endpoints/ep_filters.go`, split horizon EDS).
//!
//! The standard mesh has four clusters on two networks: `east1` (primary)
//! and `east2` (remote) on `east`, `west1` and `west2` (primaries) on `west`.
//! istiod runs in `east1`, asked by sidecars of `east1` and of the remote
//! `east2` (whose control plane it is), and in `west1`, asked by a sidecar of
//! `west1`. Every primary's istiod plugs in an intermediate CA from one root,
//! as Istio's multi-cluster installs do, so the mesh has one root of trust.
//!
//! Where istiod fails silently, `meshform check` is shown to fail beforehand.
//! istiod runs without `EXTERNAL_ISTIOD` (and then writes nothing into the
//! remote), except in the external-istiod test, where it manages the remote
//! that meshform names it the control plane of.

mod support;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use support::controlplane::{Cluster, Clusters, ControlPlane};
use support::install::{Install, install_istio, set_gateway_address};
use support::istiod::{ISTIOD_TIMEOUT, Istiod, IstiodConfig, NetworkGateway, RootCa, Snapshot};
use support::mesh::{Entry, Mesh, NAMESPACE, eventually, install_pending_eastwest_gateway};
use support::workload::{self, ECHO, TARGET_PORT, deploy_echo};

const GATEWAY: &str = "istio-eastwestgateway";
/// istiod's gateway port: the Service's `tls` port, no port label
/// (`pilot/pkg/serviceregistry/kube/controller/network.go`).
const GATEWAY_PORT: u32 = 15443;
const NETWORK_LABEL: &str = "topology.istio.io/network";

/// The standard mesh: (cluster, network, remote).
const CLUSTERS: [(&str, &str, bool); 4] = [
    ("east1", "east", false),
    ("east2", "east", true),
    ("west1", "west", false),
    ("west2", "west", false),
];

/// A mesh of the test plane, what mesh.toml says of it now, and each
/// cluster's pod IPs and gateway address.
struct MeshUnderTest {
    clusters: Clusters,
    mesh: Mesh,
    root: RootCa,
    /// Cluster → network, for the clusters in mesh.toml.
    members: RefCell<BTreeMap<String, String>>,
}

impl MeshUnderTest {
    /// The standard mesh's clusters with their Istio install, east-west
    /// gateway (with an address) and `echo` workload, written into mesh.toml
    /// but not applied.
    async fn prepare() -> MeshUnderTest {
        let names: Vec<&str> = CLUSTERS.iter().map(|(name, _, _)| *name).collect();
        let clusters = ControlPlane::shared().clusters(&names).await;
        let root = RootCa::generate();
        for (name, network, _) in CLUSTERS {
            let cluster = clusters.by_name(name);
            install_pending_eastwest_gateway(cluster).await;
            set_gateway_address(cluster, GATEWAY, &gateway_address(name)).await;
            install_istio(
                cluster,
                &Install {
                    roots: root.cert(),
                    ..Install::correct(name, network)
                },
            )
            .await;
            deploy_echo(cluster, &pod_ips(name)).await;
        }
        let members = CLUSTERS
            .iter()
            .map(|(name, network, _)| (name.to_string(), network.to_string()))
            .collect();
        let under_test = MeshUnderTest {
            mesh: Mesh::new(&[]),
            clusters,
            root,
            members: RefCell::new(members),
        };
        under_test.write();
        under_test
    }

    fn cluster(&self, name: &str) -> &Cluster {
        self.clusters.by_name(name)
    }

    /// Rewrites mesh.toml from `members`.
    fn write(&self) {
        let entries: Vec<Entry> = CLUSTERS
            .iter()
            .filter_map(|(name, _, remote)| {
                let network = self.members.borrow().get(*name).cloned()?;
                let entry = Entry::of(self.cluster(name)).network(&network);
                // The remote is served by east1's istiod; named, since once
                // west2 moves onto east two primaries share its network.
                Some(if *remote { entry.served_by("east1") } else { entry })
            })
            .collect();
        self.mesh.write(&entries);
    }

    fn network_of(&self, name: &str) -> String {
        self.members.borrow()[name].clone()
    }

    /// istiod in `primary`, asked by a sidecar of each of `proxies` (cluster
    /// names; each asks on its cluster's network in mesh.toml).
    fn istiod(&self, primary: &str, proxies: &[&str]) -> Istiod {
        let mut config = IstiodConfig::new(primary).root(&self.root).service(ECHO);
        for proxy in proxies {
            config = config.proxy(proxy, &self.network_of(proxy), proxy);
        }
        Istiod::start(self.cluster(primary), &config)
    }

    /// The two istiods of the standard mesh: east1's, asked by east1 and the
    /// remote east2; west1's, asked by west1.
    fn istiods(&self) -> (Istiod, Istiod) {
        (
            self.istiod("east1", &["east1", "east2"]),
            self.istiod("west1", &["west1"]),
        )
    }

    /// What the topology rules give a sidecar on `network`, by cluster: the
    /// pod IPs of a cluster on the same network, else that cluster's gateway.
    fn expected(&self, network: &str) -> BTreeMap<String, Vec<String>> {
        self.members
            .borrow()
            .iter()
            .map(|(name, on)| {
                let addresses = if on == network {
                    pod_ips(name).iter().map(|ip| format!("{ip}:{TARGET_PORT}")).collect()
                } else {
                    vec![format!("{}:{GATEWAY_PORT}", gateway_address(name))]
                };
                (name.clone(), addresses)
            })
            .collect()
    }

    /// The gateways mesh.toml implies: every member's, on its network.
    fn expected_gateways(&self) -> Vec<NetworkGateway> {
        let mut gateways: Vec<NetworkGateway> = self
            .members
            .borrow()
            .iter()
            .map(|(name, network)| NetworkGateway {
                network: network.clone(),
                cluster: name.clone(),
                addr: gateway_address(name),
                port: GATEWAY_PORT,
            })
            .collect();
        gateways.sort();
        gateways
    }

    /// Waits until every proxy asking `istiod` gets what the rules give it,
    /// and istiod's debug views agree with mesh.toml.
    async fn wait_for_rules(&self, istiod: &Istiod, when: &str) -> Snapshot {
        self.wait_for(istiod, when, true).await
    }

    /// [`MeshUnderTest::wait_for_rules`], with `/debug/networkz` holding at
    /// least mesh.toml's gateways rather than exactly them.
    async fn wait_for_endpoint_rules(&self, istiod: &Istiod, when: &str) -> Snapshot {
        self.wait_for(istiod, when, false).await
    }

    async fn wait_for(&self, istiod: &Istiod, when: &str, exact_gateways: bool) -> Snapshot {
        let members: BTreeMap<String, String> = self
            .members
            .borrow()
            .keys()
            .map(|name| (name.clone(), "synced".to_string()))
            .collect();
        let gateways = self.expected_gateways();
        istiod
            .wait_for(
                &format!("{when}: every proxy's endpoints by the topology rules, and debug views as mesh.toml"),
                |s| {
                    let known = s.gateways();
                    s.ready
                        && s.clusters() == members
                        && if exact_gateways {
                            known == gateways
                        } else {
                            gateways.iter().all(|g| known.contains(g))
                        }
                        && !s.proxies.is_empty()
                        && s.proxies
                            .iter()
                            .all(|p| p.connected && p.by_cluster(ECHO) == self.expected(&p.network))
                },
            )
            .await
    }

    async fn apply(&self, args: &[&str]) {
        self.mesh.apply(args).await;
        self.mesh.assert_converged(&self.clusters.all()).await;
    }

    /// No token reached any output: meshform's, istiod's answers or its log.
    async fn assert_no_token_leaked(&self, istiods: &[&Istiod]) {
        for istiod in istiods {
            self.mesh.record(&istiod.output());
        }
        let clusters: Vec<&Cluster> = self.clusters.iter().collect();
        self.mesh.assert_no_token_leaked(&clusters).await;
    }
}

/// Each cluster's pod IPs: `10.<n>.0.1` and `10.<n>.0.2`.
fn pod_ips(name: &str) -> Vec<String> {
    let n = index(name) + 11;
    vec![format!("10.{n}.0.1"), format!("10.{n}.0.2")]
}

/// Each cluster's east-west gateway load balancer address.
fn gateway_address(name: &str) -> String {
    format!("192.0.2.{}", index(name) + 11)
}

fn index(name: &str) -> usize {
    CLUSTERS
        .iter()
        .position(|(n, _, _)| *n == name)
        .unwrap_or_else(|| panic!("{name} is not in the standard mesh"))
}

/// Endpoints of `service` for `proxy` that are pod IPs of `cluster`.
fn pod_ips_of(s: &Snapshot, proxy: &str, cluster: &str) -> Vec<String> {
    let ips = pod_ips(cluster);
    s.proxy(proxy)
        .endpoints(ECHO)
        .iter()
        .filter(|e| ips.contains(&e.address))
        .map(|e| format!("{}:{}", e.address, e.port))
        .collect()
}

#[tokio::test]
async fn proxies_get_pod_ips_on_their_network_and_only_gateways_across() {
    let under_test = MeshUnderTest::prepare().await;
    let (east, west) = under_test.istiods();
    // Before apply each istiod knows its own cluster only.
    let alone = east
        .wait_for("east1's own pods", |s| {
            s.ready && s.proxy("east1").by_cluster(ECHO).keys().eq(["east1"])
        })
        .await;
    assert_eq!(alone.clusters().keys().collect::<Vec<_>>(), ["east1"]);

    under_test.apply(&[]).await;
    let from_east = under_test.wait_for_rules(&east, "after apply").await;
    let from_west = under_test.wait_for_rules(&west, "after apply").await;

    // Spelled out once, for the reader: a sidecar on east gets east's pods and
    // west's gateways; one on west the reverse; the remote's sidecar is served
    // by east1's istiod like east1's own.
    let by_cluster = from_east.proxy("east1").by_cluster(ECHO);
    assert_eq!(by_cluster["east1"], ["10.11.0.1:8080", "10.11.0.2:8080"]);
    assert_eq!(by_cluster["east2"], ["10.12.0.1:8080", "10.12.0.2:8080"]);
    assert_eq!(by_cluster["west1"], ["192.0.2.13:15443"]);
    assert_eq!(by_cluster["west2"], ["192.0.2.14:15443"]);
    assert_eq!(from_east.proxy("east2").by_cluster(ECHO), by_cluster);
    let by_cluster = from_west.proxy("west1").by_cluster(ECHO);
    assert_eq!(by_cluster["east1"], ["192.0.2.11:15443"]);
    assert_eq!(by_cluster["east2"], ["192.0.2.12:15443"]);
    assert_eq!(by_cluster["west2"], ["10.14.0.1:8080", "10.14.0.2:8080"]);
    // Cross-network endpoints are sent only with mTLS (the gateway routes by SNI).
    for s in [&from_east, &from_west] {
        for proxy in &s.proxies {
            assert!(
                proxy.endpoints(ECHO).iter().all(|e| e.tls_mode == "istio"),
                "{proxy:#?}"
            );
        }
    }

    // istiod's own debug views: every cluster synced through the secret
    // meshform wrote, every gateway on its network.
    let clusterz = from_east.clusterz.clone().unwrap_or_default();
    for c in clusterz.iter().filter(|c| c.id != "east1") {
        assert_eq!(c.secret_name, format!("{NAMESPACE}/istio-remote-secret-{}", c.id));
    }
    assert_eq!(from_west.gateways(), under_test.expected_gateways());

    // What istiod wrote into the cluster it serves, and nothing into others.
    assert_writes_only_its_own(&from_east, false);
    assert_writes_only_its_own(&from_west, false);
    assert_eq!(
        root_cert_of(under_test.cluster("east1"), workload::NAMESPACE)
            .await
            .as_deref(),
        Some(under_test.root.cert().as_str()),
        "istiod publishes the plugged-in root into its cluster's namespaces"
    );
    // Without EXTERNAL_ISTIOD, east1's istiod leaves the remote's namespaces
    // alone, though meshform names it on the remote's namespace.
    assert_eq!(
        root_cert_of(under_test.cluster("east2"), workload::NAMESPACE).await,
        None
    );

    under_test.assert_no_token_leaked(&[&east, &west]).await;
}

#[tokio::test]
async fn a_network_move_switches_the_moved_clusters_endpoints_both_ways() {
    let under_test = MeshUnderTest::prepare().await;
    let (east, west) = under_test.istiods();
    under_test.apply(&[]).await;
    let before = under_test.wait_for_rules(&east, "before the move").await;
    assert_eq!(before.proxy("east1").by_cluster(ECHO)["west2"], ["192.0.2.14:15443"]);

    // west2 joins east: Istio reinstalled with the new network first (the
    // injection_network blocker asks for that), then mesh.toml and apply,
    // which detaches, relabels (namespace and gateway) and re-attaches it.
    let move_to = async |network: &str| {
        install_istio(
            under_test.cluster("west2"),
            &Install {
                roots: under_test.root.cert(),
                ..Install::correct("west2", network)
            },
        )
        .await;
        under_test.members.borrow_mut().insert("west2".into(), network.into());
        under_test.write();
        under_test.apply(&["--allow-detach"]).await;
    };
    move_to("east").await;
    let from_east = under_test.wait_for_rules(&east, "after west2 moved to east").await;
    let from_west = under_test.wait_for_rules(&west, "after west2 moved to east").await;
    // From the gateway to its pod IPs for east; the reverse for west.
    assert_eq!(
        from_east.proxy("east1").by_cluster(ECHO)["west2"],
        ["10.14.0.1:8080", "10.14.0.2:8080"]
    );
    assert_eq!(from_west.proxy("west1").by_cluster(ECHO)["west2"], ["192.0.2.14:15443"]);
    assert_eq!(pod_ips_of(&from_west, "west1", "west2"), Vec::<String>::new());

    move_to("west").await;
    let from_east = under_test.wait_for_rules(&east, "after west2 moved back").await;
    let from_west = under_test.wait_for_rules(&west, "after west2 moved back").await;
    assert_eq!(from_east.proxy("east1").by_cluster(ECHO)["west2"], ["192.0.2.14:15443"]);
    assert_eq!(pod_ips_of(&from_east, "east1", "west2"), Vec::<String>::new());
    assert_eq!(
        from_west.proxy("west1").by_cluster(ECHO)["west2"],
        ["10.14.0.1:8080", "10.14.0.2:8080"]
    );
    under_test.assert_no_token_leaked(&[&east, &west]).await;
}

#[tokio::test]
async fn endpoints_stay_through_a_token_rotation_and_go_with_a_detach() {
    let under_test = MeshUnderTest::prepare().await;
    let (east, west) = under_test.istiods();
    under_test.apply(&[]).await;
    let converged = under_test.wait_for_rules(&east, "after apply").await;
    under_test.wait_for_rules(&west, "after apply").await;

    // New tokens in every remote secret: istiod builds a client from each new
    // kubeconfig and swaps the cluster's registry in once it has synced
    // (pilot/pkg/serviceregistry/kube/controller/multicluster.go, which logs
    // the swap). No answer in between may lose an endpoint.
    let mark = east.mark();
    under_test.apply(&["--rotate-tokens"]).await;
    for peer in ["east2", "west1", "west2"] {
        east.wait_for_log(
            &format!("{peer}'s registry rebuilt from its new token"),
            &format!("cluster {peer} synced, replacing registry"),
        )
        .await;
    }
    let after = under_test.wait_for_rules(&east, "after the rotation").await;
    assert_eq!(
        after.proxy("east1").by_cluster(ECHO),
        converged.proxy("east1").by_cluster(ECHO)
    );
    for s in east.since(mark) {
        let got = s.proxy("east1").by_cluster(ECHO);
        assert_eq!(
            got,
            converged.proxy("east1").by_cluster(ECHO),
            "an answer during the rotation lost endpoints"
        );
    }

    // west2 leaves the mesh: its endpoints and its cluster are gone from
    // istiod's answers. Its gateway is not always: istiod drops a deleted
    // registry without reloading the gateways (the aggregate controller's
    // deleteRegistry notifies no gateway handler), so /debug/networkz may
    // list west2's gateway until another gateway changes. No endpoint uses
    // it: west1 has its own.
    under_test.members.borrow_mut().remove("west2");
    under_test.write();
    under_test.apply(&["--allow-detach"]).await;
    let from_east = under_test.wait_for_endpoint_rules(&east, "after west2's detach").await;
    let from_west = under_test.wait_for_endpoint_rules(&west, "after west2's detach").await;
    for (s, proxy) in [(&from_east, "east1"), (&from_east, "east2"), (&from_west, "west1")] {
        let endpoints = s.proxy(proxy).endpoints(ECHO);
        assert!(
            endpoints.iter().all(|e| e.cluster != "west2"
                && e.address != gateway_address("west2")
                && !pod_ips("west2").contains(&e.address)),
            "{proxy} still gets west2: {endpoints:#?}"
        );
    }
    assert!(!from_east.clusters().contains_key("west2"));
    under_test.assert_no_token_leaked(&[&east, &west]).await;
}

/// Istio's external-istiod mode: a primary's istiod manages a remote (its
/// namespaces' roots, its webhooks) only when the remote's mesh namespace
/// names it (`checkShouldLead` in
/// pilot/pkg/serviceregistry/kube/controller/multicluster.go, read when the
/// cluster is added, hence the new token when the name is written), and
/// writes there through the remote secret's account: the remote's
/// control-plane account, whose role grants those writes (the reader
/// account every other primary's token comes from is read-only).
#[tokio::test]
async fn external_istiod_manages_a_remote_only_when_meshform_names_it_its_control_plane() {
    let under_test = MeshUnderTest::prepare().await;
    under_test.apply(&[]).await;
    let remote = under_test.cluster("east2");
    let mut config = IstiodConfig::new("east1")
        .root(&under_test.root)
        .service(ECHO)
        .external();
    for proxy in ["east1", "east2"] {
        config = config.proxy(proxy, "east", proxy);
    }

    // The annotation taken off by hand: istiod syncs the remote but leaves
    // its namespaces alone, and injected pods there would never start.
    set_control_plane(remote, None).await;
    let east = Istiod::start(under_test.cluster("east1"), &config);
    east.wait_for_log(
        "that it does not manage east2",
        "should join leader-election for cluster east2: false",
    )
    .await;
    under_test
        .wait_for_endpoint_rules(&east, "without the annotation")
        .await;
    assert_eq!(root_cert_of(remote, workload::NAMESPACE).await, None);

    // A drift check finds it. istiod reads the annotation only when it adds
    // the cluster: with the annotation, apply gives east1's secret for east2
    // a new token, istiod adds east2 again, manages it and publishes the
    // mesh's root there, without a restart.
    let plan = under_test.mesh.run("plan", &["--detailed-exitcode"]).await.expect(2);
    assert!(
        plan.stdout
            .contains("reads east2's control-plane annotation only when it adds the cluster"),
        "{plan}"
    );
    under_test.apply(&[]).await;
    east.wait_for_log(
        "that it manages east2",
        "should join leader-election for cluster east2: true",
    )
    .await;
    let root = under_test.root.cert();
    eventually(
        "the mesh's root in east2's istio-ca-root-cert",
        ISTIOD_TIMEOUT,
        async || (root_cert_of(remote, workload::NAMESPACE).await.as_deref() == Some(root.as_str())).then_some(()),
    )
    .await;
    under_test.wait_for_endpoint_rules(&east, "with the annotation").await;
    under_test.assert_no_token_leaked(&[&east]).await;
}

/// Sets or removes (`None`) the control-plane annotation of `cluster`'s mesh
/// namespace, as `kubectl annotate` would.
async fn set_control_plane(cluster: &Cluster, primary: Option<&str>) {
    let patch = json!({ "metadata": { "annotations": { "topology.istio.io/controlPlaneClusters": primary } } });
    Api::<Namespace>::all(cluster.client())
        .patch(NAMESPACE, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("annotating the namespace of {}: {e}", cluster.name()));
}

/// Sets or removes (`None`) the network label of `cluster`'s gateway Service,
/// as a reinstall of the gateway chart without it would.
async fn label_gateway(cluster: &Cluster, network: Option<&str>) {
    let patch = json!({ "metadata": { "labels": { NETWORK_LABEL: network } } });
    Api::<Service>::namespaced(cluster.client(), NAMESPACE)
        .patch(GATEWAY, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("relabelling the gateway of {}: {e}", cluster.name()));
}

#[tokio::test]
async fn a_gateway_without_the_network_label_sends_pod_ips_across_until_meshform_labels_it() {
    let under_test = MeshUnderTest::prepare().await;
    let east = under_test.istiod("east1", &["east1"]);
    under_test.apply(&[]).await;
    under_test.wait_for_rules(&east, "after apply").await;

    // One of west's gateways loses its label: istiod sends west1's endpoints
    // through the network's other gateway (ep_filters.go, selectNetworkGateways:
    // the cluster's own gateway, else the network's), still no pod IP. The
    // answer then has one endpoint for west, west2's gateway, carrying the
    // weight of both clusters' pods.
    let weight_of = |s: &Snapshot, address: &str| -> u32 {
        s.proxy("east1")
            .endpoints(ECHO)
            .iter()
            .filter(|e| e.address == address)
            .map(|e| e.weight)
            .sum()
    };
    let before = weight_of(&east.latest().expect("an answer"), "192.0.2.14");
    label_gateway(under_test.cluster("west1"), None).await;
    let one_left = east
        .wait_for("west1's endpoints through west2's gateway", |s| {
            let west: Vec<String> = s
                .proxy("east1")
                .endpoints(ECHO)
                .iter()
                .filter(|e| e.cluster.starts_with("west"))
                .map(|e| format!("{}:{}", e.address, e.port))
                .collect();
            s.gateways().iter().all(|g| g.cluster != "west1") && west == ["192.0.2.14:15443"]
        })
        .await;
    assert_eq!(pod_ips_of(&one_left, "east1", "west1"), Vec::<String>::new());
    assert!(
        weight_of(&one_left, "192.0.2.14") > before,
        "west2's gateway does not carry west1's pods: {:#?}",
        one_left.proxy("east1")
    );

    // Both do: istiod knows no gateway for west and sends the east sidecar
    // west's raw pod IPs, which it cannot reach. Nothing reports an error.
    label_gateway(under_test.cluster("west2"), None).await;
    let silent = east
        .wait_for("west's raw pod IPs sent to east (the silent failure)", |s| {
            pod_ips_of(s, "east1", "west1").len() == 2 && pod_ips_of(s, "east1", "west2").len() == 2
        })
        .await;
    assert!(
        silent.gateways().iter().all(|g| g.network != "west"),
        "{:#?}",
        silent.gateways()
    );
    assert!(silent.ready);

    // meshform's check fails on it, and its plan labels both Services.
    assert_eq!(
        failing_checks(&under_test.mesh).await,
        BTreeSet::from([
            ("network west".to_string(), "network_gateway".to_string()),
            ("west1".to_string(), "gateway".to_string()),
            ("west2".to_string(), "gateway".to_string()),
        ])
    );
    let plan = under_test.mesh.run("plan", &["--detailed-exitcode"]).await.expect(2);
    for cluster in ["west1", "west2"] {
        assert!(
            plan.stdout
                .contains(&format!("+ Service istio-system/istio-eastwestgateway in {cluster}")),
            "{plan}"
        );
    }
    under_test.apply(&[]).await;
    under_test
        .wait_for_rules(&east, "after meshform relabelled the gateways")
        .await;
    under_test.assert_no_token_leaked(&[&east]).await;
}

/// The failing checks of `meshform check` (which exits 1), as (cluster, check
/// id); a network's or the mesh's as ("network <name>", id) and ("mesh", id).
async fn failing_checks(mesh: &Mesh) -> BTreeSet<(String, String)> {
    let check = mesh.run("check", &["--format", "json"]).await.expect(1).json();
    assert_eq!(check["passed"], false);
    let failing = |checks: &serde_json::Value, owner: String| -> Vec<(String, String)> {
        checks
            .as_array()
            .expect("checks")
            .iter()
            .filter(|c| c["status"] == "fail")
            .map(|c| (owner.clone(), c["id"].as_str().unwrap_or_default().to_string()))
            .collect()
    };
    let mut out = BTreeSet::new();
    for cluster in check["clusters"].as_array().expect("clusters") {
        out.extend(failing(
            &cluster["checks"],
            cluster["cluster"].as_str().unwrap().to_string(),
        ));
    }
    for network in check["networks"].as_array().expect("networks") {
        let name = format!("network {}", network["network"].as_str().unwrap());
        out.extend(failing(&network["checks"], name));
    }
    out.extend(failing(&check["mesh_checks"], "mesh".to_string()));
    out
}

/// The blockers of a fresh plan, as (cluster, code).
async fn blockers(mesh: &Mesh) -> BTreeSet<(String, String)> {
    let plan = mesh.run("plan", &["--format", "json"]).await.json();
    plan["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["kind"] == "blocker")
        .map(|f| {
            (
                f["cluster"].as_str().unwrap_or("-").to_string(),
                f["code"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_gateway_without_an_address_sends_pod_ips_across_and_blocks_the_plan() {
    let under_test = MeshUnderTest::prepare().await;
    let east = under_test.istiod("east1", &["east1"]);
    under_test.apply(&[]).await;
    let converged = under_test.wait_for_rules(&east, "after apply").await;
    let west_missing = BTreeSet::from([
        (
            "west1".to_string(),
            "meshform::plan::gateway_address_missing".to_string(),
        ),
        (
            "west2".to_string(),
            "meshform::plan::gateway_address_missing".to_string(),
        ),
    ]);

    // West's load balancers lose their addresses (the cloud controller clears
    // the status). meshform's plan blocks at once, naming each Service.
    // istiod does not notice: it extracts a Service's gateways only while the
    // Service has an address (pilot/pkg/serviceregistry/kube/controller/controller.go,
    // addOrUpdateService), so it keeps sending the address that is gone.
    for cluster in ["west1", "west2"] {
        let cleared = json!({ "status": { "loadBalancer": { "ingress": null } } });
        Api::<Service>::namespaced(under_test.cluster(cluster).client(), NAMESPACE)
            .patch_status(GATEWAY, &PatchParams::default(), &Patch::Merge(&cleared))
            .await
            .unwrap_or_else(|e| panic!("clearing the address of {cluster}'s gateway: {e}"));
    }
    assert_eq!(blockers(&under_test.mesh).await, west_missing);
    let stale = east.latest().expect("an answer");
    assert_eq!(
        stale.gateways(),
        converged.gateways(),
        "istiod dropped the address-less gateways"
    );

    // The gateways are reinstalled (gen-eastwest-gateway.sh labels them with
    // their network) and their new load balancers are pending: istiod knows
    // no gateway for west and sends the east sidecar west's raw pod IPs,
    // which it cannot reach. Nothing reports an error; the plan still blocks.
    for cluster in ["west1", "west2"] {
        let cluster = under_test.cluster(cluster);
        Api::<Service>::namespaced(cluster.client(), NAMESPACE)
            .delete(GATEWAY, &Default::default())
            .await
            .unwrap_or_else(|e| panic!("deleting the gateway of {}: {e}", cluster.name()));
        install_pending_eastwest_gateway(cluster).await;
        label_gateway(cluster, Some("west")).await;
    }
    let silent = east
        .wait_for("west's raw pod IPs sent to east (the silent failure)", |s| {
            pod_ips_of(s, "east1", "west1").len() == 2 && pod_ips_of(s, "east1", "west2").len() == 2
        })
        .await;
    assert!(
        silent.gateways().iter().all(|g| g.network != "west"),
        "{:#?}",
        silent.gateways()
    );
    assert!(silent.ready, "istiod reports itself ready throughout");
    assert_eq!(blockers(&under_test.mesh).await, west_missing);
    // `check` fails each of west's gateways, and network west's.
    let failing = failing_checks(&under_test.mesh).await;
    for cluster in ["west1", "west2"] {
        assert!(
            failing.contains(&(cluster.to_string(), "gateway".to_string())),
            "{failing:?}"
        );
    }
    assert!(
        failing.contains(&("network west".to_string(), "network_gateway".to_string())),
        "{failing:?}"
    );
    assert!(
        !failing.iter().any(|(owner, _)| owner.starts_with("east")),
        "{failing:?}"
    );
    let refused = under_test.mesh.run("apply", &["--auto-approve"]).await.expect(1);
    assert!(refused.stderr.contains("blocking problem"), "{refused}");

    // The fix: the load balancers get addresses; the plan is clean and istiod
    // sends the gateways again.
    for cluster in ["west1", "west2"] {
        set_gateway_address(under_test.cluster(cluster), GATEWAY, &gateway_address(cluster)).await;
    }
    under_test.mesh.assert_converged(&under_test.clusters.all()).await;
    under_test.wait_for_rules(&east, "after the addresses came back").await;
    under_test.assert_no_token_leaked(&[&east]).await;
}

#[tokio::test]
async fn istiod_with_its_own_ca_writes_only_to_the_cluster_it_serves() {
    let clusters = ControlPlane::shared().clusters(&["solo", "peer"]).await;
    let (solo, peer) = (clusters.by_name("solo"), clusters.by_name("peer"));
    for (cluster, network) in [(solo, "n1"), (peer, "n2")] {
        install_pending_eastwest_gateway(cluster).await;
        set_gateway_address(cluster, GATEWAY, "192.0.2.30").await;
        deploy_echo(cluster, &[format!("10.30.0.{}", usize::from(network == "n2") + 1)]).await;
    }
    install_istio(solo, &Install::correct("solo", "n1")).await;
    // No root given: istiod creates its own self-signed CA (istio-ca-secret)
    // and publishes its root; the peer's install is given the same root, so
    // that the mesh has one root of trust.
    let istiod = Istiod::start(solo, &IstiodConfig::new("solo").proxy("p", "n1", "solo").service(ECHO));
    let started = istiod.wait_for("istiod ready", |s| s.ready).await;
    assert!(
        started.root_cert.starts_with("-----BEGIN CERTIFICATE-----"),
        "{}",
        started.root_cert
    );
    // Its namespace controller replaces the installer's istio-ca-root-cert with its own root.
    eventually(
        "istiod's root in solo's istio-ca-root-cert",
        ISTIOD_TIMEOUT,
        async || (root_cert_of(solo, NAMESPACE).await.as_deref() == Some(started.root_cert.as_str())).then_some(()),
    )
    .await;
    install_istio(
        peer,
        &Install {
            roots: started.root_cert.clone(),
            ..Install::correct("peer", "n2")
        },
    )
    .await;
    let mesh = Mesh::new(&[Entry::of(solo).network("n1"), Entry::of(peer).network("n2")]);
    mesh.apply(&[]).await;
    mesh.assert_converged(&clusters.all()).await;
    let done = istiod
        .wait_for("the peer's gateway for p", |s| {
            s.proxy("p").by_cluster(ECHO).get("peer").map(Vec::as_slice) == Some(&["192.0.2.30:15443".to_string()])
        })
        .await;
    assert_writes_only_its_own(&done, true);
    assert_eq!(
        root_cert_of(solo, NAMESPACE).await.as_deref(),
        Some(started.root_cert.as_str())
    );
    assert_eq!(root_cert_of(peer, workload::NAMESPACE).await, None);
    mesh.record(&istiod.output());
    mesh.assert_no_token_leaked(&[solo, peer]).await;
}

/// `root-cert.pem` of `istio-ca-root-cert` in `namespace` of `cluster`.
async fn root_cert_of(cluster: &Cluster, namespace: &str) -> Option<String> {
    Api::<ConfigMap>::namespaced(cluster.client(), namespace)
        .get_opt("istio-ca-root-cert")
        .await
        .unwrap_or_else(|e| panic!("reading istio-ca-root-cert in {}: {e}", cluster.name()))
        .and_then(|c| c.data)
        .and_then(|d| d.get("root-cert.pem").cloned())
}

/// What istiod writes into the cluster it serves (tests/istiod/README.md):
/// the roots (`istio-ca-root-cert`) and revocation list (`istio-ca-crl`)
/// ConfigMaps in every namespace, its leader-election ConfigMaps and Leases
/// in the mesh namespace, and with its own CA the `istio-ca-secret` Secret.
/// Everything else is a surprise.
fn assert_writes_only_its_own(s: &Snapshot, own_ca: bool) {
    let system = format!("/api/v1/namespaces/{NAMESPACE}/");
    let leases = format!("/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases");
    let expected = |method: &str, path: &str| -> bool {
        let in_namespace = path.strip_prefix("/api/v1/namespaces/").and_then(|p| p.split_once('/'));
        match (method, in_namespace) {
            ("POST", Some((_, "configmaps"))) => true,
            ("PUT", Some((_, "configmaps/istio-ca-root-cert" | "configmaps/istio-ca-crl"))) => true,
            ("PUT", _) if path.starts_with(&format!("{system}configmaps/istio-")) => true,
            ("POST", _) if path == format!("{system}secrets") => own_ca,
            ("POST" | "PUT", _) => path.starts_with(&leases),
            _ => false,
        }
    };
    assert!(!s.writes.is_empty(), "istiod wrote nothing: the proxy records nothing?");
    let surprises: Vec<_> = s.writes.iter().filter(|w| !expected(&w.method, &w.path)).collect();
    assert!(surprises.is_empty(), "istiod wrote what it should not: {surprises:#?}");
    let wrote_secret = s.writes.iter().any(|w| w.path == format!("{system}secrets"));
    assert_eq!(wrote_secret, own_ca, "istio-ca-secret written: {:#?}", s.writes);
}
