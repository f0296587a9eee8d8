//! A real ambient istiod's own answers prove the ambient topology rules
//! (issue 31 item 4), as `tests/xds.rs` proves the sidecar ones. istiod runs
//! for a primary of the test control plane in ambient multi-network mode
//! (`tests/istiod/`, `-ambient`) and is asked for workloads as ztunnel asks
//! (WDS: `istio.workload.Address` over delta xDS, `support::wds`). What a
//! ztunnel must get follows from mesh.toml alone: the pod IPs of every
//! cluster on istiod's network, and for each other network one coalesced
//! workload per global service whose `network_gateway` is that network's
//! east-west Gateway, at its status address and HBONE port 15008, and no pod
//! IP of it (istio/istio `pilot/pkg/serviceregistry/ambient/multicluster.go`,
//! the `CoalesedWorkloads` and `NetworkLocalWorkloads` collections; the
//! gateway from `networks.go`, `remoteK8sGatewayToNetworkGateways`).
//!
//! The ambient mesh has three primaries (ambient multicluster is
//! multi-primary only): `east1` and `east2` on `east`, `west1` on `west`.
//! istiod runs in `east1` and in `west1`, each asked by its cluster's ztunnel.
//! The `echo` Service is labelled `istio.io/global=true`, which the ambient
//! profile's `serviceScopeConfigs` make global: only global services of other
//! networks reach ztunnel (`services.go`, `matchServiceScope`).
//!
//! The last test is the sidecar rule with a Gateway API east-west gateway: a
//! labelled Gateway (class `istio`, auto-passthrough listener, spec address)
//! and no gateway Service; istiod's EDS sends that address across networks
//! (`pilot/pkg/serviceregistry/kube/controller/network.go`, `handleGatewayResource`).

mod support;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::json;
use support::ambient::{
    ambient_east_west, apply_gateway, gateway_resource, install_gateway_api, install_ztunnel, make_istiod_ambient,
    set_gateway_status_address, sidecar_east_west,
};
use support::controlplane::{Cluster, Clusters, ControlPlane};
use support::install::{Install, install_istio};
use support::istiod::{Istiod, IstiodConfig, RootCa, Snapshot};
use support::mesh::{Entry, Mesh, NAMESPACE};
use support::workload::{self, ECHO, SERVICE, TARGET_PORT, deploy_echo};

/// The ambient east-west Gateway `gen-eastwest-gateway.sh --ambient` names.
const GATEWAY: &str = "istio-eastwestgateway";
/// ztunnel's HBONE port on a gateway whose `HBONEPort` istiod leaves unset:
/// a remote Gateway's (`multicluster.go`, `createSplitHorizonWorkload`).
const HBONE_PORT: u32 = 15008;
/// `namespace/hostname` of `echo`, as WDS keys a workload's services.
const ECHO_KEY: &str = "sample/echo.sample.svc.cluster.local";

/// The ambient mesh: (cluster, network).
const CLUSTERS: [(&str, &str); 3] = [("east1", "east"), ("east2", "east"), ("west1", "west")];

fn index(name: &str) -> usize {
    CLUSTERS
        .iter()
        .position(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("{name} is not in the mesh"))
}

/// Each cluster's pod IPs: `10.<n>.0.1` and `10.<n>.0.2`.
fn pod_ips(name: &str) -> Vec<String> {
    let n = index(name) + 11;
    vec![format!("10.{n}.0.1"), format!("10.{n}.0.2")]
}

/// Each cluster's east-west Gateway status address.
fn gateway_address(name: &str) -> String {
    format!("192.0.2.{}", index(name) + 11)
}

/// Labels `echo` global in `cluster`, as the ambient multicluster guide does.
async fn label_global(cluster: &Cluster) {
    let patch = json!({ "metadata": { "labels": { "istio.io/global": "true" } } });
    Api::<Service>::namespaced(cluster.client(), workload::NAMESPACE)
        .patch(SERVICE, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("labelling echo global in {}: {e}", cluster.name()));
}

/// Removes the east-west Gateway's status addresses: its load balancer
/// lost or has not yet got an address.
async fn clear_gateway_status(cluster: &Cluster) {
    let status = json!({ "status": { "addresses": null } });
    Api::<DynamicObject>::namespaced_with(cluster.client(), NAMESPACE, &gateway_resource())
        .patch_status(GATEWAY, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap_or_else(|e| panic!("clearing the status of {GATEWAY} in {}: {e}", cluster.name()));
}

struct AmbientMesh {
    clusters: Clusters,
    mesh: Mesh,
    root: RootCa,
    /// Cluster → network, as mesh.toml says now.
    members: RefCell<BTreeMap<String, String>>,
}

impl AmbientMesh {
    /// The clusters with an ambient install (istiod ambient multi-network,
    /// ztunnel, the Gateway API), each network's east-west Gateway with a
    /// status address, and the global `echo` workload; mesh.toml written,
    /// not applied.
    async fn prepare() -> AmbientMesh {
        let names: Vec<&str> = CLUSTERS.iter().map(|(name, _)| *name).collect();
        let clusters = ControlPlane::shared().clusters(&names).await;
        let root = RootCa::generate();
        let under_test = AmbientMesh {
            mesh: Mesh::new(&[]),
            clusters,
            root,
            members: RefCell::new(CLUSTERS.iter().map(|(c, n)| (c.to_string(), n.to_string())).collect()),
        };
        for (name, network) in CLUSTERS {
            let cluster = under_test.cluster(name);
            under_test.install(name, network).await;
            set_gateway_status_address(cluster, GATEWAY, &gateway_address(name)).await;
            deploy_echo(cluster, &pod_ips(name)).await;
            label_global(cluster).await;
        }
        under_test.write();
        under_test
    }

    fn cluster(&self, name: &str) -> &Cluster {
        self.clusters.by_name(name)
    }

    /// What an ambient install on `network` leaves: Istio (istiod ambient,
    /// multi-network), ztunnel, and the sample's east-west Gateway labelled
    /// with the network (a status written once is kept: server-side apply of
    /// the spec does not touch it). Run again for a network move.
    async fn install(&self, name: &str, network: &str) {
        let cluster = self.cluster(name);
        install_istio(
            cluster,
            &Install {
                roots: self.root.cert(),
                ..Install::correct(name, network)
            },
        )
        .await;
        make_istiod_ambient(cluster, true).await;
        install_ztunnel(cluster, Some(name), Some(network)).await;
        install_gateway_api(cluster).await;
        apply_gateway(cluster, &ambient_east_west(network)).await;
    }

    fn write(&self) {
        let entries: Vec<Entry> = self
            .members
            .borrow()
            .iter()
            .map(|(name, network)| Entry::of(self.cluster(name)).network(network))
            .collect();
        self.mesh.write_with(&entries, "data_plane = \"ambient\"\n");
    }

    fn network_of(&self, name: &str) -> String {
        self.members.borrow()[name].clone()
    }

    /// istiod in `primary`, ambient, asked by `primary`'s ztunnel.
    fn istiod(&self, primary: &str) -> Istiod {
        let config =
            IstiodConfig::new(primary)
                .root(&self.root)
                .ambient()
                .ztunnel(primary, &self.network_of(primary), primary);
        Istiod::start(self.cluster(primary), &config)
    }

    /// What the rules give a ztunnel whose istiod is on `network`, by
    /// network: the pod IPs of every cluster on it; for each other network
    /// one coalesced workload through one of that network's gateways (istiod
    /// takes the first it finds when there are several), standing for all
    /// its pods. Each is a set of answers that satisfy the rule.
    fn expected(&self, network: &str, gateways: &BTreeMap<String, Vec<String>>) -> BTreeMap<String, Vec<Vec<String>>> {
        let members = self.members.borrow();
        let mut by_network: BTreeMap<String, Vec<&String>> = BTreeMap::new();
        for (name, on) in members.iter() {
            by_network.entry(on.clone()).or_default().push(name);
        }
        by_network
            .into_iter()
            .filter_map(|(on, names)| {
                let pods = names.iter().map(|n| pod_ips(n).len()).sum::<usize>();
                let answers = if on == network {
                    let mut ips: Vec<String> = names.iter().flat_map(|n| pod_ips(n)).collect();
                    ips.sort();
                    vec![ips]
                } else {
                    let on_network = gateways.get(&on)?;
                    on_network
                        .iter()
                        .map(|addr| vec![format!("via {on}/{addr}:{HBONE_PORT} for {pods}")])
                        .collect()
                };
                Some((on, answers))
            })
            .collect()
    }

    /// Each network's gateway addresses as mesh.toml's members have them,
    /// leaving out the clusters in `pending`.
    fn gateways(&self, pending: &[&str]) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, network) in self.members.borrow().iter() {
            if !pending.contains(&name.as_str()) {
                out.entry(network.clone()).or_default().push(gateway_address(name));
            }
        }
        out
    }

    /// Waits until `primary`'s ztunnel gets what the rules give it, with the
    /// Gateways of `pending` clusters without an address.
    async fn wait_for_rules(&self, istiod: &Istiod, primary: &str, pending: &[&str], when: &str) -> Snapshot {
        let network = self.network_of(primary);
        let expected = self.expected(&network, &self.gateways(pending));
        istiod
            .wait_for(
                &format!("{when}: {primary}'s ztunnel gets workloads by the rules {expected:?}"),
                |s| {
                    let z = s.ztunnel(primary);
                    let got = z.routes(ECHO_KEY, &network);
                    s.ready
                        && z.connected
                        && got.keys().eq(expected.keys())
                        && got.iter().all(|(n, routes)| expected[n].contains(routes))
                },
            )
            .await
    }

    async fn apply(&self, args: &[&str]) {
        self.mesh.apply(args).await;
        self.mesh.assert_converged(&self.clusters.all()).await;
    }

    async fn assert_no_token_leaked(&self, istiods: &[&Istiod]) {
        for istiod in istiods {
            self.mesh.record(&istiod.output());
        }
        let clusters: Vec<&Cluster> = self.clusters.iter().collect();
        self.mesh.assert_no_token_leaked(&clusters).await;
    }
}

/// The blockers of a fresh plan, as (cluster, code without the prefix).
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
                f["code"]
                    .as_str()
                    .unwrap_or_default()
                    .trim_start_matches("meshform::plan::")
                    .to_string(),
            )
        })
        .collect()
}

/// The failing checks of `meshform check` (which exits 1), as (owner, id).
async fn failing_checks(mesh: &Mesh) -> BTreeSet<(String, String)> {
    let check = mesh.run("check", &["--format", "json"]).await.expect(1).json();
    let failing = |checks: &serde_json::Value, owner: String| -> Vec<(String, String)> {
        checks
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["status"] == "fail")
            .map(|c| (owner.clone(), c["id"].as_str().unwrap_or_default().to_string()))
            .collect()
    };
    let mut out = BTreeSet::new();
    for cluster in check["clusters"].as_array().into_iter().flatten() {
        out.extend(failing(
            &cluster["checks"],
            cluster["cluster"].as_str().unwrap().to_string(),
        ));
    }
    for network in check["networks"].as_array().into_iter().flatten() {
        let name = format!("network {}", network["network"].as_str().unwrap());
        out.extend(failing(&network["checks"], name));
    }
    out.extend(failing(&check["mesh_checks"], "mesh".to_string()));
    out
}

/// One ambient mesh, two istiods, the whole story (istiod processes are
/// reused across the steps: each takes seconds to sync every remote):
/// the rules after apply; a Gateway without a status address; a network move
/// and back.
#[tokio::test]
async fn ztunnels_get_pod_ips_on_their_network_and_a_gateway_workload_across() {
    let under_test = AmbientMesh::prepare().await;
    let east = under_test.istiod("east1");
    let mut west = under_test.istiod("west1");
    // Before apply each istiod knows its own cluster only (on no network
    // yet: meshform labels the mesh namespace with it).
    east.wait_for("east1's own pods", |s| {
        let mut ips: Vec<String> = s
            .ztunnel("east1")
            .of_service(ECHO_KEY)
            .iter()
            .flat_map(|w| w.addresses.clone())
            .collect();
        ips.sort();
        s.ready && ips == pod_ips("east1")
    })
    .await;
    assert_eq!(
        blockers(&under_test.mesh).await,
        BTreeSet::new(),
        "an ambient mesh ready to apply"
    );

    under_test.apply(&[]).await;
    let from_east = under_test.wait_for_rules(&east, "east1", &[], "after apply").await;
    let from_west = under_test.wait_for_rules(&west, "west1", &[], "after apply").await;

    // Spelled out once, for the reader: east1's ztunnel gets east1's and
    // east2's pods at their IPs, and west as one workload through west1's
    // Gateway; west1's the reverse, east's four pods through one of east's
    // two Gateways.
    let z = from_east.ztunnel("east1");
    let mut east_ips: Vec<String> = pod_ips("east1").into_iter().chain(pod_ips("east2")).collect();
    east_ips.sort();
    assert_eq!(
        z.routes(ECHO_KEY, "east"),
        BTreeMap::from([
            ("east".to_string(), east_ips.clone()),
            ("west".to_string(), vec!["via west/192.0.2.13:15008 for 2".to_string()]),
        ])
    );
    let across: Vec<_> = z
        .of_service(ECHO_KEY)
        .into_iter()
        .filter(|w| w.network == "west")
        .collect();
    assert_eq!(across.len(), 1, "{z:#?}");
    assert!(across[0].addresses.is_empty(), "{:#?}", across[0]);
    assert_eq!(across[0].cluster, "west1", "the gateway's cluster");
    assert_eq!(
        across[0].uid,
        format!("west/SplitHorizonWorkload/{NAMESPACE}/{GATEWAY}/192.0.2.13/{ECHO_KEY}")
    );
    for w in z.of_service(ECHO_KEY).into_iter().filter(|w| w.network == "east") {
        assert_eq!(w.network_gateway, None, "a workload of ztunnel's network: {w:#?}");
        assert_eq!(w.addresses.len(), 1, "{w:#?}");
    }
    let routes = from_west.ztunnel("west1").routes(ECHO_KEY, "west");
    assert_eq!(routes["west"], pod_ips("west1"));
    assert!(
        routes["east"] == ["via east/192.0.2.11:15008 for 4"] || routes["east"] == ["via east/192.0.2.12:15008 for 4"],
        "{routes:#?}"
    );

    // west1's Gateway loses its status address (its load balancer's
    // address is gone): east1's istiod drops west's workloads ("No network
    // gateway found for network west", multicluster.go) and reports nothing
    // else; meshform's plan blocks on it at once, naming the Gateway, and
    // its check fails.
    clear_gateway_status(under_test.cluster("west1")).await;
    let dropped = under_test
        .wait_for_rules(&east, "east1", &["west1"], "west1's Gateway without an address")
        .await;
    assert!(dropped.ready, "istiod reports itself ready throughout");
    assert!(
        !dropped.ztunnel("east1").workloads.iter().any(|w| w.network == "west"),
        "{:#?}",
        dropped.ztunnel("east1")
    );
    east.wait_for_log("istiod's warning", "No network gateway found for network west")
        .await;
    assert_eq!(
        blockers(&under_test.mesh).await,
        BTreeSet::from([("west1".to_string(), "ambient_gateway_pending".to_string())])
    );
    let failing = failing_checks(&under_test.mesh).await;
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

    // The address comes back: the plan is clean, istiod sends west again.
    set_gateway_status_address(under_test.cluster("west1"), GATEWAY, &gateway_address("west1")).await;
    assert_eq!(blockers(&under_test.mesh).await, BTreeSet::new());
    under_test
        .wait_for_rules(&east, "east1", &[], "after the address came back")
        .await;

    // west1 moves onto east and back: Istio, ztunnel and the Gateway
    // reinstalled for the new network, then mesh.toml and apply (meshform
    // detaches, relabels the mesh namespace and re-attaches). west1's own
    // istiod is started afresh after each move, as the Deployment restarts:
    // the pinned istiod whose own network changes under it panicked in our
    // runs (nil AddressInfo in ambientindex.go AddressInformation, reached
    // from the WDS push, pilot/pkg/xds/workload.go), so it is not asked across
    // the change.
    let move_to = async |network: &str| {
        under_test.install("west1", network).await;
        under_test.members.borrow_mut().insert("west1".into(), network.into());
        under_test.write();
        under_test.apply(&["--allow-detach"]).await;
    };
    under_test.mesh.record(&west.output());
    drop(west);
    move_to("east").await;
    west = under_test.istiod("west1");
    let from_east = under_test
        .wait_for_rules(&east, "east1", &[], "after west1 moved to east")
        .await;
    let from_west = under_test
        .wait_for_rules(&west, "west1", &[], "after west1 moved to east")
        .await;
    // From the gateway to west1's pod IPs; west1's ztunnel now sees everything at pod IPs.
    let mut all: Vec<String> = CLUSTERS.iter().flat_map(|(n, _)| pod_ips(n)).collect();
    all.sort();
    assert_eq!(
        from_east.ztunnel("east1").routes(ECHO_KEY, "east"),
        BTreeMap::from([("east".to_string(), all.clone())])
    );
    assert_eq!(
        from_west.ztunnel("west1").routes(ECHO_KEY, "east"),
        BTreeMap::from([("east".to_string(), all)])
    );

    under_test.mesh.record(&west.output());
    drop(west);
    move_to("west").await;
    west = under_test.istiod("west1");
    let from_east = under_test
        .wait_for_rules(&east, "east1", &[], "after west1 moved back")
        .await;
    under_test
        .wait_for_rules(&west, "west1", &[], "after west1 moved back")
        .await;
    assert_eq!(
        from_east.ztunnel("east1").routes(ECHO_KEY, "east")["west"],
        ["via west/192.0.2.13:15008 for 2"]
    );
    under_test.assert_no_token_leaked(&[&east, &west]).await;
}

/// A sidecar mesh whose east-west gateways are labelled Gateway API Gateways
/// (class `istio`, an auto-passthrough listener on 15443, a spec address) and
/// no gateway Service: after apply, a sidecar's EDS holds its network's pod
/// IPs and, for each cluster of the other network, that cluster's Gateway
/// address and nothing else, as with a labelled Service (`tests/xds.rs`).
#[tokio::test]
async fn a_gateway_api_east_west_gateway_carries_a_sidecar_mesh_across_networks() {
    let clusters = ControlPlane::shared().clusters(&["east1", "east2", "west1"]).await;
    let root = RootCa::generate();
    for (name, network) in CLUSTERS {
        let cluster = clusters.by_name(name);
        install_istio(
            cluster,
            &Install {
                roots: root.cert(),
                ..Install::correct(name, network)
            },
        )
        .await;
        install_gateway_api(cluster).await;
        apply_gateway(
            cluster,
            &sidecar_east_west("eastwest", Some(network), &gateway_address(name)),
        )
        .await;
        deploy_echo(cluster, &pod_ips(name)).await;
    }
    let entries: Vec<Entry> = CLUSTERS
        .iter()
        .map(|(name, network)| Entry::of(clusters.by_name(name)).network(network))
        .collect();
    let mesh = Mesh::new(&entries);
    let istiod = Istiod::start(
        clusters.by_name("east1"),
        &IstiodConfig::new("east1")
            .root(&root)
            .service(ECHO)
            .proxy("east1", "east", "east1"),
    );
    mesh.apply(&[]).await;
    mesh.assert_converged(&clusters.all()).await;

    let gateway = |name: &str| format!("{}:15443", gateway_address(name));
    let pods = |name: &str| -> Vec<String> { pod_ips(name).iter().map(|ip| format!("{ip}:{TARGET_PORT}")).collect() };
    let expected = BTreeMap::from([
        ("east1".to_string(), pods("east1")),
        ("east2".to_string(), pods("east2")),
        ("west1".to_string(), vec![gateway("west1")]),
    ]);
    let done = istiod
        .wait_for("east's pods, and west1's pods through its Gateway", |s| {
            s.ready && s.proxy("east1").connected && s.proxy("east1").by_cluster(ECHO) == expected
        })
        .await;
    // istiod's own view: each Gateway a network gateway, from its cluster's registry.
    let gateways: Vec<(String, String, String, u32)> = done
        .gateways()
        .into_iter()
        .map(|g| (g.network, g.cluster, g.addr, g.port))
        .collect();
    for (name, network) in CLUSTERS {
        assert!(
            gateways.contains(&(network.into(), name.into(), gateway_address(name), 15443)),
            "{name}'s Gateway in {gateways:#?}"
        );
    }
    // No gateway Service anywhere: the Gateway API object alone carries it.
    for (name, _) in CLUSTERS {
        let services = Api::<Service>::namespaced(clusters.by_name(name).client(), NAMESPACE)
            .list(&Default::default())
            .await
            .expect("listing Services");
        assert!(
            !services.items.iter().any(|s| s
                .metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key("topology.istio.io/network"))),
            "a labelled Service in {name}"
        );
    }
    assert!(
        done.proxy("east1")
            .endpoints(ECHO)
            .iter()
            .all(|e| e.tls_mode == "istio"),
        "{:#?}",
        done.proxy("east1")
    );
    mesh.record(&istiod.output());
    mesh.assert_no_token_leaked(&clusters.all()).await;
}
