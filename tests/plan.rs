//! The planner's rules, one named case each, and properties over random
//! topologies and observations.
//!
//! Table cases build the prior state the way it happens in a real mesh: an
//! earlier topology is planned against freshly installed clusters and its
//! plan's effect simulated; the new topology is then planned against that.
//! Each case asserts the exact actions in order (phase, cluster written to,
//! kind, peer), the changes and the findings.

#[path = "support/plan_fixtures.rs"]
mod plan_fixtures;

use jiff::SignedDuration;
use meshform::objects::ReaderScope;
use meshform::observe::model::{BindingFacts, InstallFacts, ObjectFacts, Observed, TokenFacts};
use meshform::plan::{ActionKind, Change, Options, PlanError, WriteMode};
use plan_fixtures::*;

const HEADER: &str = "[mesh]\nname = \"mesh1\"\n";

/// A topology of `[[cluster]]` tables given as TOML bodies.
fn mesh(clusters: &[&str]) -> String {
    let mut text = HEADER.to_string();
    for body in clusters {
        text.push_str("\n[[cluster]]\n");
        text.push_str(body);
        text.push('\n');
    }
    text
}

fn mesh_topology(clusters: &[&str]) -> meshform::topology::Topology {
    topology(&mesh(clusters))
}

/// The observation after applying `before`, re-keyed for `after` (clusters
/// absent from `after` are no longer observed).
fn after_converging(before: &meshform::topology::Topology, after: &meshform::topology::Topology) -> Observed {
    let mut observed = converge(before, &fresh(before));
    observed.clusters.retain(|name, _| after.cluster(name).is_some());
    observed
}

fn lines(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn attach(cluster: &str, network: &str) -> Change {
    Change::Attach {
        cluster: cluster.to_string(),
        network: network.to_string(),
    }
}

fn unmanaged(uid: &str) -> ObjectFacts {
    ObjectFacts {
        uid: uid.to_string(),
        resource_version: "3".to_string(),
        managed: false,
        spec_hash: None,
        content_sha256: None,
        content_owners: Vec::new(),
    }
}

// ---------------------------------------------------------------------------
// Networks and gateways

#[test]
fn default_network_is_the_cluster_name_and_needs_gateways_in_both() {
    let t = mesh_topology(&["name = \"a\"", "name = \"b\""]);
    assert_eq!(t.clusters[0].network, "a");
    assert_eq!(t.clusters[1].network, "b");
    let plan = plan_ok(&t, &fresh(&t));
    assert_eq!(
        actions(&plan),
        lines(&[
            "network a set_network none->a",
            "network a ensure_reader",
            "network a ensure_gateway/create",
            "network b set_network none->b",
            "network b ensure_reader",
            "network b ensure_gateway/create",
            "attach a write_remote_secret/create b",
            "attach b write_remote_secret/create a",
        ])
    );
    assert_eq!(plan.changes, vec![attach("a", "a"), attach("b", "b")]);
    assert_eq!(findings(&plan), Vec::<String>::new());
    let gateway = plan
        .actions
        .iter()
        .find_map(|a| match &a.kind {
            ActionKind::EnsureGateway { network, port, .. } => Some((a.cluster.as_str(), network.as_str(), *port)),
            _ => None,
        })
        .expect("a gateway is planned");
    assert_eq!(gateway, ("a", "a", 15443));
}

#[test]
fn missing_gateway_service_is_a_blocker_naming_cluster_and_service() {
    let t = topology(&format!(
        "{}\n[network.nb]\ngateway_service = \"eastwest-nb\"\n",
        mesh(&["name = \"a\"", "name = \"b\"\nnetwork = \"nb\""])
    ));
    let mut observed = fresh(&t);
    facts_mut(&mut observed, "b").gateway_service = None;
    let plan = plan_ok(&t, &observed);
    assert_eq!(findings(&plan), lines(&["blocker b gateway_service_missing"]));
    let finding = &plan.findings[0];
    assert!(
        finding.message.contains("istio-system/eastwest-nb"),
        "{}",
        finding.message
    );
    assert!(
        finding.message.contains("b has peers on other networks"),
        "{}",
        finding.message
    );
    // The gateway itself is still planned: the blocker stops apply, not the plan.
    assert!(actions(&plan).contains(&"network b ensure_gateway/create".to_string()));
}

#[test]
fn flat_network_needs_no_gateway() {
    let t = mesh_topology(&["name = \"a\"\nnetwork = \"flat\"", "name = \"b\"\nnetwork = \"flat\""]);
    let mut observed = fresh(&t);
    // Without cross-network peers the gateway Service does not matter.
    facts_mut(&mut observed, "a").gateway_service = None;
    let plan = plan_ok(&t, &observed);
    assert_eq!(
        actions(&plan),
        lines(&[
            "network a set_network none->flat",
            "network a ensure_reader",
            "network b set_network none->flat",
            "network b ensure_reader",
            "attach a write_remote_secret/create b",
            "attach b write_remote_secret/create a",
        ])
    );
    assert_eq!(plan.changes, vec![attach("a", "flat"), attach("b", "flat")]);
    assert!(plan.findings.is_empty(), "{:?}", findings(&plan));
}

#[test]
fn managed_gateway_is_deleted_when_the_last_cross_network_peer_leaves() {
    let before = mesh_topology(&[
        "name = \"a\"\nnetwork = \"flat\"",
        "name = \"b\"\nnetwork = \"flat\"",
        "name = \"c\"\nnetwork = \"other\"\nrole = \"remote\"\ncontrol_plane = \"a\"",
    ]);
    let after = mesh_topology(&["name = \"a\"\nnetwork = \"flat\"", "name = \"b\"\nnetwork = \"flat\""]);
    let observed = after_converging(&before, &after);
    let gateway_uid = observed
        .facts("a")
        .unwrap()
        .gateway
        .clone()
        .expect("a gateway was written")
        .uid;
    let plan = plan_ok(&after, &observed);
    assert_eq!(
        actions(&plan),
        lines(&[
            "detach a delete_remote_secret c",
            "detach b delete_remote_secret c",
            "network a delete_gateway",
            // c, its only remote, left, and no install reaches it any more.
            "network a delete_istiod_exposure",
            "network b delete_gateway",
        ])
    );
    let precondition = plan
        .actions
        .iter()
        .find_map(|a| match &a.kind {
            ActionKind::DeleteGateway { precondition } if a.cluster == "a" => Some(precondition.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(precondition.uid, gateway_uid);
    assert_eq!(
        plan.changes,
        vec![Change::Detach {
            cluster: "c".to_string()
        }]
    );
}

#[test]
fn unmanaged_gateway_is_never_deleted_nor_replaced() {
    // Flat: an unmanaged gateway stays.
    let t = mesh_topology(&["name = \"a\"\nnetwork = \"flat\"", "name = \"b\"\nnetwork = \"flat\""]);
    let mut observed = converge(&t, &fresh(&t));
    facts_mut(&mut observed, "a").gateway = Some(unmanaged("gw-by-hand"));
    let plan = plan_ok(&t, &observed);
    assert_eq!(actions(&plan), Vec::<String>::new());

    // Cross-network: it is used as it is, with a warning.
    let t = mesh_topology(&["name = \"a\"", "name = \"b\""]);
    let mut observed = fresh(&t);
    facts_mut(&mut observed, "a").gateway = Some(unmanaged("gw-by-hand"));
    let plan = plan_ok(&t, &observed);
    assert!(!actions(&plan).iter().any(|a| a.starts_with("network a ensure_gateway")));
    assert_eq!(findings(&plan), lines(&["warning a gateway_unmanaged"]));
}

/// The `istio-eastwestgateway` meshform wrote in ambient cluster `cluster` of `observed`.
fn own_ambient_gateway(observed: &Observed, cluster: &str) -> meshform::observe::model::K8sGatewayFacts {
    observed.facts(cluster).unwrap().k8s_gateways.as_ref().unwrap()[meshform::objects::AMBIENT_EAST_WEST_GATEWAY]
        .clone()
}

#[test]
fn ambient_gateway_meshform_wrote_is_deleted_when_no_peer_is_on_another_network() {
    let before = mesh_topology(&[
        "name = \"a\"\nnetwork = \"n1\"\ndata_plane = \"ambient\"",
        "name = \"b\"\nnetwork = \"n2\"\ndata_plane = \"ambient\"",
    ]);
    let after = mesh_topology(&["name = \"a\"\nnetwork = \"n1\"\ndata_plane = \"ambient\""]);
    let observed = after_converging(&before, &after);
    let written = own_ambient_gateway(&observed, "a");
    assert!(written.object.managed);
    let plan = plan_ok(&after, &observed);
    assert_eq!(
        actions(&plan),
        lines(&[
            "detach a delete_remote_secret b",
            "detach a revoke_reader_tokens/detach b",
            "network a delete_ambient_gateway",
        ])
    );
    let action = plan
        .actions
        .iter()
        .find(|a| a.cluster == "a" && a.phase == meshform::plan::Phase::Network)
        .unwrap();
    match &action.kind {
        ActionKind::DeleteAmbientGateway { precondition } => {
            assert_eq!(
                (&precondition.uid, &precondition.resource_version),
                (&written.object.uid, &written.object.resource_version)
            );
        }
        other => panic!("{other:?}"),
    }
    // A delete waits for a person, as the classic Gateway's does.
    assert!(!action.kind.unattended());
    assert_eq!(
        action.object("istio-system"),
        "Gateway.gateway.networking.k8s.io istio-system/istio-eastwestgateway"
    );
    // Simulated, it is gone, and nothing more is planned for it.
    let done = meshform::plan::simulate::simulate(&observed, &plan, SignedDuration::from_hours(1));
    assert!(done.facts("a").unwrap().k8s_gateways.as_ref().unwrap().is_empty());
    assert_eq!(actions(&plan_ok(&after, &done)), Vec::<String>::new());
}

#[test]
fn an_east_west_gateway_not_meshforms_is_never_deleted() {
    let before = mesh_topology(&[
        "name = \"a\"\nnetwork = \"n1\"\ndata_plane = \"ambient\"",
        "name = \"b\"\nnetwork = \"n2\"\ndata_plane = \"ambient\"",
    ]);
    let after = mesh_topology(&["name = \"a\"\nnetwork = \"n1\"\ndata_plane = \"ambient\""]);
    let converged = after_converging(&before, &after);
    let written = own_ambient_gateway(&converged, "a");
    let kept = lines(&[
        "detach a delete_remote_secret b",
        "detach a revoke_reader_tokens/detach b",
    ]);
    // The user's, of that name: no meshform labels.
    let mut users = converged.clone();
    let gateway = facts_mut(&mut users, "a").k8s_gateways.as_mut().unwrap();
    gateway
        .get_mut(meshform::objects::AMBIENT_EAST_WEST_GATEWAY)
        .unwrap()
        .object = unmanaged("by-hand");
    assert_eq!(actions(&plan_ok(&after, &users)), kept);
    // meshform's labels on a Gateway of another class: not one meshform writes.
    let mut other_class = converged.clone();
    let gateways = facts_mut(&mut other_class, "a").k8s_gateways.as_mut().unwrap();
    gateways
        .get_mut(meshform::objects::AMBIENT_EAST_WEST_GATEWAY)
        .unwrap()
        .class = "istio".to_string();
    assert_eq!(actions(&plan_ok(&after, &other_class)), kept);
    // Another name, meshform's labels and class: not meshform's ambient Gateway either.
    let mut renamed = converged;
    let gateways = facts_mut(&mut renamed, "a").k8s_gateways.as_mut().unwrap();
    let own = gateways.remove(meshform::objects::AMBIENT_EAST_WEST_GATEWAY).unwrap();
    gateways.insert("eastwest".to_string(), own);
    assert!(written.object.managed);
    assert_eq!(actions(&plan_ok(&after, &renamed)), kept);
}

#[test]
fn ambient_gateway_meshform_wrote_is_deleted_once_the_cluster_runs_sidecars() {
    let ambient = mesh_topology(&[
        "name = \"a\"\nnetwork = \"n1\"\ndata_plane = \"ambient\"",
        "name = \"b\"\nnetwork = \"n2\"\ndata_plane = \"ambient\"",
    ]);
    let sidecar = mesh_topology(&["name = \"a\"\nnetwork = \"n1\"", "name = \"b\"\nnetwork = \"n2\""]);
    let converged = converge(&ambient, &fresh(&ambient));
    // Both reinstalled with the default profile: the east-west Service is
    // there, and meshform's ambient Gateway is left over.
    let mut observed = converge(&sidecar, &fresh(&sidecar));
    for cluster in ["a", "b"] {
        let gateways = converged.facts(cluster).unwrap().k8s_gateways.clone();
        facts_mut(&mut observed, cluster).k8s_gateways = gateways;
    }
    let plan = plan_ok(&sidecar, &observed);
    assert_eq!(
        actions(&plan),
        lines(&["network a delete_ambient_gateway", "network b delete_ambient_gateway"])
    );
    assert_eq!(findings(&plan), Vec::<String>::new());
}

// ---------------------------------------------------------------------------
// Primaries and remotes

#[test]
fn primaries_hold_a_secret_for_every_other_cluster_and_remotes_none() {
    let t = mesh_topology(&[
        "name = \"a\"\nnetwork = \"n\"",
        "name = \"b\"\nnetwork = \"n\"\nrole = \"remote\"\ncontrol_plane = \"a\"",
        "name = \"c\"\nnetwork = \"n\"\nrole = \"remote\"\ncontrol_plane = \"a\"",
        "name = \"d\"\nnetwork = \"n\"",
    ]);
    let plan = plan_ok(&t, &fresh(&t));
    assert_eq!(
        actions(&plan),
        lines(&[
            "network a set_network none->n",
            "network a ensure_reader",
            "network b set_network none->n",
            "network b ensure_reader",
            "network b ensure_reader/control_plane",
            "network c set_network none->n",
            "network c ensure_reader",
            "network c ensure_reader/control_plane",
            "network d set_network none->n",
            "network d ensure_reader",
            "attach a write_remote_secret/create b",
            "attach a write_remote_secret/create c",
            "attach a write_remote_secret/create d",
            "attach d write_remote_secret/create a",
            "attach d write_remote_secret/create b",
            "attach d write_remote_secret/create c",
        ])
    );
}

#[test]
fn reader_account_only_where_a_primary_peer_reads_it_and_not_replanned() {
    let t = mesh_topology(&[
        "name = \"a\"\nnetwork = \"n\"",
        "name = \"b\"\nnetwork = \"n\"\nrole = \"remote\"",
    ]);
    let plan = plan_ok(&t, &fresh(&t));
    assert_eq!(
        actions(&plan),
        lines(&[
            "network a set_network none->n",
            "network b set_network none->n",
            "network b ensure_reader",
            "network b ensure_reader/control_plane",
            "attach a write_remote_secret/create b",
        ])
    );
    let observed = converge(&t, &fresh(&t));
    let again = plan_ok(&t, &observed);
    assert_eq!(actions(&again), Vec::<String>::new());
    assert!(again.is_empty());
}

#[test]
fn primary_turned_remote_loses_its_managed_secrets() {
    let before = mesh_topology(&[
        "name = \"a\"\nnetwork = \"n\"",
        "name = \"b\"\nnetwork = \"n\"",
        "name = \"c\"\nnetwork = \"n\"",
    ]);
    let after = mesh_topology(&[
        "name = \"a\"\nnetwork = \"n\"",
        "name = \"b\"\nnetwork = \"n\"\nrole = \"remote\"\ncontrol_plane = \"a\"",
        "name = \"c\"\nnetwork = \"n\"",
    ]);
    let mut observed = after_converging(&before, &after);
    // A secret istioctl made in b is not meshform's to delete.
    facts_mut(&mut observed, "b")
        .remote_secrets
        .insert("by-hand".to_string(), unmanaged_secret(&["x"]));
    let plan = plan_ok(&after, &observed);
    // b's istiod goes, and so do the tokens it held: revoked in every peer.
    assert_eq!(
        actions(&plan),
        lines(&[
            "detach a revoke_reader_tokens/detach b",
            "detach b delete_remote_secret a",
            "detach b delete_remote_secret c",
            "detach c revoke_reader_tokens/detach b",
            // Its namespace names its control plane a, whose secret for it
            // gets a new token so that istiod reads the annotation.
            "network b set_network n->n",
            "network b ensure_reader/control_plane",
            "update a write_remote_secret/rotate b",
        ])
    );
    let reader = &plan.actions[5];
    let detach = &plan.actions[..4];
    assert!(detach.iter().all(|a| a.reason.contains("b is now a remote cluster")));
    // Its control plane, a, now writes there through an account of its own;
    // b's reader account stays read-only.
    assert!(
        matches!(
            reader.kind,
            ActionKind::EnsureReader {
                scope: ReaderScope::ControlPlane,
                update: false,
                ..
            }
        ),
        "{reader:?}"
    );
    assert!(
        matches!(
            plan.actions[6].kind,
            ActionKind::WriteRemoteSecret {
                account: ReaderScope::ControlPlane,
                ..
            }
        ),
        "a's new token for b is the control-plane account's: {:?}",
        plan.actions[6]
    );
    assert!(reader.reason.contains("istio-ca-root-cert"), "{}", reader.reason);
    assert_eq!(
        plan.changes,
        vec![Change::BecameRemote {
            cluster: "b".to_string()
        }]
    );
}

#[test]
fn a_mesh_of_remotes_only_is_refused_by_validation() {
    let error = topology_error(&mesh(&[
        "name = \"a\"\nrole = \"remote\"",
        "name = \"b\"\nrole = \"remote\"",
    ]));
    assert!(error.contains("NoPrimary"), "{error}");
}

// ---------------------------------------------------------------------------
// Network changes, renames, detaches

/// a (primary, n1), b (primary, n2), c (remote, n3); c then moves to n2.
fn network_change_case() -> (meshform::topology::Topology, Observed) {
    let before = mesh_topology(&[
        "name = \"a\"\nnetwork = \"n1\"",
        "name = \"b\"\nnetwork = \"n2\"",
        "name = \"c\"\nnetwork = \"n3\"\nrole = \"remote\"\ncontext = \"kind-c\"\ncontrol_plane = \"b\"",
    ]);
    let after = mesh_topology(&[
        "name = \"a\"\nnetwork = \"n1\"",
        "name = \"b\"\nnetwork = \"n2\"",
        "name = \"c\"\nnetwork = \"n2\"\nrole = \"remote\"\ncontext = \"kind-c\"",
    ]);
    let observed = after_converging(&before, &after);
    (after, observed)
}

#[test]
fn network_change_of_an_attached_cluster_is_detach_relabel_reattach_restart() {
    let (t, observed) = network_change_case();
    let plan = plan_ok(&t, &observed);
    assert_eq!(
        actions(&plan),
        lines(&[
            "detach a delete_remote_secret c",
            "detach b delete_remote_secret c",
            "network c set_network n3->n2",
            "network c set_gateway_network n3->n2",
            "attach a write_remote_secret/create c",
            "attach b write_remote_secret/create c",
            "update c restart_workloads/shown",
        ])
    );
    assert_eq!(
        plan.changes,
        vec![Change::NetworkChange {
            cluster: "c".to_string(),
            from: "n3".to_string(),
            to: "n2".to_string()
        }]
    );
    let reasons = reasons(&plan);
    assert!(
        reasons[0].contains("c moves from network \"n3\" to \"n2\""),
        "{}",
        reasons[0]
    );
    assert!(
        reasons[2].contains("network changes from \"n3\" to \"n2\""),
        "{}",
        reasons[2]
    );
    // The gateway Service moves with the namespace label (issue 13).
    assert!(
        reasons[3].contains("label is \"n3\", the topology says \"n2\""),
        "{}",
        reasons[3]
    );
    assert!(reasons[4].contains("re-attach c on network \"n2\""), "{}", reasons[4]);
    assert!(reasons[6].contains("keep network \"n3\""), "{}", reasons[6]);
    assert!(plan.actions[..2].iter().all(|a| a.is_destructive()));
    match &plan.actions[6].kind {
        ActionKind::RestartWorkloads { enabled, command, owed } => {
            assert!(!enabled);
            assert!(!owed, "relabelled by this plan, not owed by an earlier one");
            // Run by hand, it clears the record of the restart owed too.
            assert_eq!(
                command,
                "for ns in $(kubectl --context kind-c get namespaces -l istio-injection=enabled -o name) \
                 $(kubectl --context kind-c get namespaces -l istio.io/rev -o name); do \
                 kubectl --context kind-c -n \"${ns#namespace/}\" rollout restart deployment,statefulset,daemonset; done \
                 && kubectl --context kind-c annotate namespace istio-system meshform.io/restart-owed-from-"
            );
        }
        other => panic!("expected a restart, got {other:?}"),
    }
    // A disabled restart writes nothing.
    assert!(!plan.actions[6].writes());
}

#[test]
fn network_change_restart_runs_with_restart_workloads() {
    let (t, observed) = network_change_case();
    let options = Options {
        restart_workloads: true,
        ..Options::default()
    };
    let plan = plan_with(&t, &observed, &options);
    assert_eq!(actions(&plan).last().unwrap(), "update c restart_workloads/enabled");
    assert!(plan.actions.last().unwrap().writes());
}

#[test]
fn relabel_of_an_unattached_cluster_is_relabel_and_attach_without_detach() {
    let before = mesh_topology(&["name = \"a\"", "name = \"b\""]);
    let after = mesh_topology(&[
        "name = \"a\"",
        "name = \"b\"",
        "name = \"c\"\nrole = \"remote\"\ncontrol_plane = \"a\"",
    ]);
    let mut observed = converge(&before, &fresh(&before));
    let mut c = fresh(&after).clusters.remove("c").unwrap();
    if let meshform::observe::model::ClusterState::Reachable(facts) = &mut c.state {
        facts.namespace.as_mut().unwrap().network = Some("old".to_string());
    }
    observed.clusters.insert("c".to_string(), c);
    let plan = plan_ok(&after, &observed);
    assert_eq!(
        actions(&plan),
        lines(&[
            // c, on its own network, reaches its control plane a through a's gateway.
            "network a ensure_istiod_exposure",
            "network c set_network old->c",
            "network c ensure_reader",
            "network c ensure_reader/control_plane",
            "network c ensure_gateway/create",
            "attach a write_remote_secret/create c",
            "attach b write_remote_secret/create c",
            // Sidecars started under "old" keep it until restarted.
            "update c restart_workloads/shown",
        ])
    );
    assert_eq!(plan.changes, vec![attach("c", "c")]);
}

#[test]
fn rename_is_detach_of_the_old_name_and_attach_of_the_new() {
    let before = mesh_topology(&[
        "name = \"a\"\nnetwork = \"n\"",
        "name = \"b\"\nnetwork = \"n\"\ncontext = \"ctx-b\"",
    ]);
    let after = mesh_topology(&[
        "name = \"a\"\nnetwork = \"n\"",
        "name = \"b2\"\nnetwork = \"n\"\ncontext = \"ctx-b\"",
    ]);
    let mut observed = converge(&before, &fresh(&before));
    // The same cluster (kube-system UID), now under the mesh name b2.
    let b = observed.clusters.remove("b").unwrap();
    observed.clusters.insert("b2".to_string(), b);
    let plan = plan_ok(&after, &observed);
    assert_eq!(
        actions(&plan),
        lines(&[
            "detach a delete_remote_secret b",
            "attach a write_remote_secret/create b2"
        ])
    );
    assert_eq!(
        plan.changes,
        vec![Change::Rename {
            from: "b".to_string(),
            to: "b2".to_string()
        }]
    );
    assert!(reasons(&plan)[0].contains("b is renamed to b2"), "{:?}", reasons(&plan));
}

/// Regression (property: creates find no object): deleting a stale copy of
/// a remote secret under another name made the planner think the peer's own
/// secret was gone, and plan a create over it.
#[test]
fn stale_copy_under_another_name_is_deleted_and_the_current_secret_kept() {
    let t = two_flat_primaries();
    let mut observed = converge(&t, &fresh(&t));
    let facts = facts_mut(&mut observed, "a");
    let mut copy = facts.remote_secrets["istio-remote-secret-b"].clone();
    copy.object.uid = "older-copy".to_string();
    facts.remote_secrets.insert("b-old".to_string(), copy);
    let plan = plan_ok(&t, &observed);
    assert_eq!(actions(&plan), lines(&["detach a delete_remote_secret b"]));
    assert!(
        reasons(&plan)[0].contains("not in the form meshform writes"),
        "{:?}",
        reasons(&plan)
    );
}

#[test]
fn cluster_removed_from_the_file_is_detached_from_every_primary() {
    let before = mesh_topology(&["name = \"a\"", "name = \"b\"", "name = \"c\""]);
    let after = mesh_topology(&["name = \"a\"", "name = \"b\""]);
    let observed = after_converging(&before, &after);
    let plan = plan_ok(&after, &observed);
    // c is gone: its secret leaves every primary, and the tokens c holds are revoked in every peer.
    assert_eq!(
        actions(&plan),
        lines(&[
            "detach a delete_remote_secret c",
            "detach a revoke_reader_tokens/detach c",
            "detach b delete_remote_secret c",
            "detach b revoke_reader_tokens/detach c",
        ])
    );
    assert!(plan.actions.iter().all(|a| a.is_destructive()));
    assert_eq!(findings(&plan), lines(&["warning c detached_holder"]));
    assert!(
        reasons(&plan)
            .iter()
            .all(|r| r.contains("c is no longer in the topology"))
    );
    assert_eq!(
        plan.changes,
        vec![Change::Detach {
            cluster: "c".to_string()
        }]
    );
}

// ---------------------------------------------------------------------------
// Unknown clusters and planning errors

fn three_primaries() -> meshform::topology::Topology {
    mesh_topology(&["name = \"a\"", "name = \"b\"", "name = \"c\""])
}

#[test]
fn unknown_cluster_fails_the_plan_without_skip_unreachable() {
    let t = three_primaries();
    let mut observed = converge(&t, &fresh(&t));
    make_unknown(&mut observed, "c");
    let error = plan_err(&t, &observed, &Options::default());
    assert_eq!(
        error,
        PlanError::Unreachable(vec![("c".to_string(), "connection refused".to_string())])
    );
}

#[test]
fn unknown_cluster_is_deferred_and_never_touched_or_detached() {
    let before = three_primaries();
    // c moves network and its secret in a is old: neither may lead to an action while c is unknown.
    let after = mesh_topology(&["name = \"a\"", "name = \"b\"", "name = \"c\"\nnetwork = \"elsewhere\""]);
    let mut observed = converge(&before, &fresh(&before));
    make_unknown(&mut observed, "c");
    set_token(
        &mut observed,
        "a",
        "istio-remote-secret-c",
        bound_token(SignedDuration::from_hours(24 * 300), TOKEN_LIFETIME),
    );
    let options = Options {
        skip_unreachable: true,
        ..Options::default()
    };
    let plan = plan_with(&after, &observed, &options);
    assert_eq!(actions(&plan), Vec::<String>::new());
    assert_eq!(
        plan.deferred.iter().map(|d| d.cluster.as_str()).collect::<Vec<_>>(),
        ["c"]
    );
    assert!(plan.changes.is_empty(), "{:?}", plan.changes);
}

#[test]
fn unknown_cluster_keeps_its_secrets_even_when_a_new_cluster_joins() {
    let before = three_primaries();
    let after = mesh_topology(&["name = \"a\"", "name = \"b\"", "name = \"c\"", "name = \"d\""]);
    let mut observed = converge(&before, &fresh(&before));
    let d = fresh(&after).clusters.remove("d").unwrap();
    observed.clusters.insert("d".to_string(), d);
    make_unknown(&mut observed, "c");
    let options = Options {
        skip_unreachable: true,
        ..Options::default()
    };
    let plan = plan_with(&after, &observed, &options);
    assert_eq!(
        actions(&plan),
        lines(&[
            "network d set_network none->d",
            "network d ensure_reader",
            "network d ensure_gateway/create",
            "attach a write_remote_secret/create d",
            "attach b write_remote_secret/create d",
            "attach d write_remote_secret/create a",
            "attach d write_remote_secret/create b",
        ])
    );
}

/// Regression (property e): a primary turned remote deleted its secret for
/// an unknown cluster, an action about a deferred cluster.
#[test]
fn primary_turned_remote_keeps_its_secret_for_an_unknown_cluster() {
    let before = mesh_topology(&["name = \"a\"", "name = \"b\""]);
    let after = mesh_topology(&["name = \"a\"\nrole = \"remote\"", "name = \"b\""]);
    let mut observed = converge(&before, &fresh(&before));
    make_unknown(&mut observed, "b");
    let options = Options {
        skip_unreachable: true,
        ..Options::default()
    };
    let plan = plan_with(&after, &observed, &options);
    // Only a's own namespace, now naming its control plane b, and the
    // account that control plane's token comes from.
    assert_eq!(
        actions(&plan),
        ["network a set_network a->a", "network a ensure_reader/control_plane"]
    );
    assert!(plan.changes.is_empty(), "{:?}", plan.changes);
    assert_eq!(plan.deferred.len(), 1);
}

#[test]
fn two_entries_reaching_one_cluster_are_refused() {
    let t = mesh_topology(&["name = \"a\"", "name = \"b\""]);
    let mut observed = fresh(&t);
    facts_mut(&mut observed, "b").identity = "kube-system-a".to_string();
    assert_eq!(
        plan_err(&t, &observed, &Options::default()),
        PlanError::SameCluster {
            first: "a".to_string(),
            second: "b".to_string(),
            identity: "kube-system-a".to_string()
        }
    );
}

#[test]
fn observation_of_another_mesh_is_refused() {
    let t = mesh_topology(&["name = \"a\"", "name = \"b\""]);
    let mut observed = fresh(&t);
    observed.mesh = "mesh2".to_string();
    assert!(matches!(
        plan_err(&t, &observed, &Options::default()),
        PlanError::ObservedMismatch(_)
    ));
    let mut observed = fresh(&t);
    observed.clusters.remove("b");
    assert!(matches!(
        plan_err(&t, &observed, &Options::default()),
        PlanError::ObservedMismatch(m) if m.contains("\"b\"")
    ));
}

#[test]
fn unknown_target_is_refused() {
    let t = three_primaries();
    let options = Options {
        targets: vec!["zz".to_string()],
        ..Options::default()
    };
    assert_eq!(
        plan_err(&t, &fresh(&t), &options),
        PlanError::UnknownTarget("zz".to_string())
    );
}

#[test]
fn target_keeps_only_actions_about_that_cluster() {
    let t = three_primaries();
    let options = Options {
        targets: vec!["b".to_string()],
        ..Options::default()
    };
    let plan = plan_with(&t, &fresh(&t), &options);
    assert_eq!(
        actions(&plan),
        lines(&[
            "network b set_network none->b",
            "network b ensure_reader",
            "network b ensure_gateway/create",
            "attach a write_remote_secret/create b",
            "attach b write_remote_secret/create a",
            "attach b write_remote_secret/create c",
            "attach c write_remote_secret/create b",
        ])
    );
    assert_eq!(plan.changes, vec![attach("b", "b")]);

    // A cluster gone from the file can still be targeted, to detach it alone.
    let after = mesh_topology(&["name = \"a\"", "name = \"b\""]);
    let observed = after_converging(&t, &after);
    let options = Options {
        targets: vec!["c".to_string()],
        ..Options::default()
    };
    let plan = plan_with(&after, &observed, &options);
    assert_eq!(
        actions(&plan),
        lines(&[
            "detach a delete_remote_secret c",
            "detach a revoke_reader_tokens/detach c",
            "detach b delete_remote_secret c",
            "detach b revoke_reader_tokens/detach c",
        ])
    );
}

// ---------------------------------------------------------------------------
// Objects meshform does not own

#[test]
fn istioctl_secret_of_our_name_is_a_conflict_and_left_alone() {
    let t = mesh_topology(&["name = \"a\"\nnetwork = \"n\"", "name = \"b\"\nnetwork = \"n\""]);
    let mut observed = converge(&t, &fresh(&t));
    facts_mut(&mut observed, "a")
        .remote_secrets
        .insert("istio-remote-secret-b".to_string(), unmanaged_secret(&["b"]));
    let plan = plan_ok(&t, &observed);
    assert_eq!(actions(&plan), Vec::<String>::new());
    assert_eq!(findings(&plan), lines(&["conflict a remote_secret_unmanaged"]));
    assert!(plan.findings[0].message.contains("istio-system/istio-remote-secret-b"));

    // Even when b leaves the mesh, the unmanaged secret is not deleted.
    let after = mesh_topology(&["name = \"a\"\nnetwork = \"n\"", "name = \"c\"\nnetwork = \"n\""]);
    let mut gone = observed.clone();
    gone.clusters.remove("b");
    let c = fresh(&after).clusters.remove("c").unwrap();
    gone.clusters.insert("c".to_string(), c);
    let plan = plan_ok(&after, &gone);
    assert!(
        !plan
            .actions
            .iter()
            .any(|a| a.peer() == Some("b") && matches!(a.kind, ActionKind::DeleteRemoteSecret { .. })),
        "{:?}",
        actions(&plan)
    );
    // The tokens b held are meshform's own: they are revoked.
    assert!(actions(&plan).contains(&"detach a revoke_reader_tokens/detach b".to_string()));
}

#[test]
fn adopt_takes_over_an_istioctl_secret_of_our_name() {
    let t = mesh_topology(&["name = \"a\"\nnetwork = \"n\"", "name = \"b\"\nnetwork = \"n\""]);
    let mut observed = fresh(&t);
    facts_mut(&mut observed, "a")
        .remote_secrets
        .insert("istio-remote-secret-b".to_string(), unmanaged_secret(&["b"]));
    let options = Options {
        adopt: true,
        ..Options::default()
    };
    let plan = plan_with(&t, &observed, &options);
    assert_eq!(
        actions(&plan),
        lines(&[
            "network a set_network none->n",
            "network a ensure_reader",
            "network b set_network none->n",
            "network b ensure_reader",
            "attach a write_remote_secret/adopt b",
            "attach b write_remote_secret/create a",
        ])
    );
    match &plan.actions[4].kind {
        ActionKind::WriteRemoteSecret {
            mode: WriteMode::Adopt,
            precondition: Some(p),
            ..
        } => assert_eq!(p.uid, "istioctl-b"),
        other => panic!("expected an adopt, got {other:?}"),
    }
    // istioctl's never-expiring token outlives the adoption until its token Secret in b is deleted.
    assert_eq!(findings(&plan), ["warning b adopted_token_outlives"]);
}

#[test]
fn second_secret_for_the_same_cluster_id_is_a_conflict_never_a_duplicate() {
    let t = mesh_topology(&["name = \"a\"\nnetwork = \"n\"", "name = \"b\"\nnetwork = \"n\""]);
    let mut observed = fresh(&t);
    facts_mut(&mut observed, "a")
        .remote_secrets
        .insert("b-by-hand".to_string(), unmanaged_secret(&["b"]));
    for adopt in [false, true] {
        let options = Options {
            adopt,
            ..Options::default()
        };
        let plan = plan_with(&t, &observed, &options);
        assert_eq!(
            actions(&plan),
            lines(&[
                "network a set_network none->n",
                "network a ensure_reader",
                "network b set_network none->n",
                "network b ensure_reader",
                "attach b write_remote_secret/create a",
            ]),
            "adopt: {adopt}"
        );
        assert_eq!(findings(&plan), lines(&["conflict a remote_secret_duplicate"]));
        assert!(plan.findings[0].message.contains("b-by-hand"));
    }
}

/// Regression (property a): with --adopt, istioctl's secret of our name was
/// adopted while a secret of another name already registered the peer, so
/// meshform ended up owning the second secret for one cluster id.
#[test]
fn adopt_is_refused_while_another_secret_registers_the_peer() {
    let t = mesh_topology(&["name = \"a\"\nnetwork = \"n\"", "name = \"b\"\nnetwork = \"n\""]);
    let mut observed = fresh(&t);
    let secrets = &mut facts_mut(&mut observed, "a").remote_secrets;
    secrets.insert("istio-remote-secret-b".to_string(), unmanaged_secret(&["b"]));
    secrets.insert("b-by-hand".to_string(), unmanaged_secret(&["b"]));
    let options = Options {
        adopt: true,
        ..Options::default()
    };
    let plan = plan_with(&t, &observed, &options);
    assert!(
        !actions(&plan).iter().any(|a| a.starts_with("attach a ")),
        "{:?}",
        actions(&plan)
    );
    assert_eq!(findings(&plan), lines(&["conflict a remote_secret_duplicate"]));
}

/// Regression (property a): with --adopt, istioctl's `istio-remote-secret-b`
/// whose data key is another cluster (c) was adopted and rewritten for b,
/// silently detaching c from that primary.
#[test]
fn adopt_leaves_a_secret_of_our_name_that_registers_another_cluster() {
    let t = mesh_topology(&[
        "name = \"a\"\nnetwork = \"n\"",
        "name = \"b\"\nnetwork = \"n\"",
        "name = \"c\"\nnetwork = \"n\"",
    ]);
    let mut observed = converge(&t, &fresh(&t));
    let secrets = &mut facts_mut(&mut observed, "a").remote_secrets;
    secrets.remove("istio-remote-secret-c");
    secrets.insert("istio-remote-secret-b".to_string(), unmanaged_secret(&["c"]));
    let options = Options {
        adopt: true,
        ..Options::default()
    };
    let plan = plan_with(&t, &observed, &options);
    assert_eq!(actions(&plan), Vec::<String>::new());
    assert_eq!(
        findings(&plan),
        lines(&[
            "conflict a remote_secret_duplicate",
            "conflict a remote_secret_unmanaged"
        ])
    );
    assert!(
        plan.findings[1].message.contains("registers cluster id \"c\", not b"),
        "{}",
        plan.findings[1].message
    );
}

#[test]
fn unmanaged_reader_role_is_a_conflict_unless_adopted() {
    let t = mesh_topology(&["name = \"a\"\nnetwork = \"n\"", "name = \"b\"\nnetwork = \"n\""]);
    let mut observed = fresh(&t);
    facts_mut(&mut observed, "b").reader.cluster_role = Some(unmanaged("role-by-hand"));
    let plan = plan_ok(&t, &observed);
    assert!(!actions(&plan).contains(&"network b ensure_reader".to_string()));
    assert_eq!(findings(&plan), lines(&["conflict b reader_unmanaged"]));
    let options = Options {
        adopt: true,
        ..Options::default()
    };
    let plan = plan_with(&t, &observed, &options);
    assert!(actions(&plan).contains(&"network b ensure_reader".to_string()));
    assert!(plan.findings.is_empty());
}

// Issue 19: the reader role and binding are judged by what they hold.
fn reader_role_of<'a>(observed: &'a mut Observed, cluster: &str) -> &'a mut ObjectFacts {
    facts_mut(observed, cluster)
        .reader
        .cluster_role
        .as_mut()
        .expect("a reader role")
}

#[test]
fn reader_rules_edited_by_hand_are_written_back_saying_what_changed() {
    let t = mesh_topology(&["name = \"a\"\nnetwork = \"n\"", "name = \"b\"\nnetwork = \"n\""]);
    let mut observed = converge(&t, &fresh(&t));
    // As observe reads it after meshform's write: the same rules, in another order.
    let mut rules = meshform::objects::reader_rules(ReaderScope::Read);
    rules.reverse();
    let core = rules
        .iter_mut()
        .find(|r| r.resources.as_ref().is_some_and(|r| r.iter().any(|r| r == "pods")))
        .unwrap();
    core.verbs.reverse();
    reader_role_of(&mut observed, "b").content_sha256 = Some(meshform::objects::rules_sha256(&rules));
    assert_eq!(actions(&plan_ok(&t, &observed)), Vec::<String>::new());

    // A verb taken away (kubectl edit): the spec-hash annotation still says meshform's.
    let core = rules
        .iter_mut()
        .find(|r| r.resources.as_ref().is_some_and(|r| r.iter().any(|r| r == "pods")))
        .unwrap();
    core.verbs.retain(|v| v != "watch");
    reader_role_of(&mut observed, "b").content_sha256 = Some(meshform::objects::rules_sha256(&rules));
    let plan = plan_ok(&t, &observed);
    assert_eq!(actions(&plan), lines(&["network b ensure_reader"]));
    assert_eq!(
        reasons(&plan),
        [
            "the rules of ClusterRole meshform-istio-reader-istio-system changed in the cluster; meshform writes back what primaries need to read this cluster"
        ]
    );
    assert!(
        matches!(
            plan.actions[0].kind,
            ActionKind::EnsureReader {
                update: true,
                force: false,
                ..
            }
        ),
        "{:?}",
        plan.actions[0]
    );
    assert_eq!(findings(&plan), Vec::<String>::new());

    // A subject added to the binding as well.
    let mut subjects = meshform::objects::reader_subjects("istio-system", ReaderScope::Read);
    subjects.push(k8s_openapi::api::rbac::v1::Subject {
        kind: "User".into(),
        name: "someone".into(),
        ..Default::default()
    });
    facts_mut(&mut observed, "b")
        .reader
        .cluster_role_binding
        .as_mut()
        .unwrap()
        .content_sha256 = Some(meshform::objects::subjects_sha256(&subjects));
    assert_eq!(
        reasons(&plan_ok(&t, &observed)),
        [
            "the rules of ClusterRole meshform-istio-reader-istio-system and the subjects of ClusterRoleBinding meshform-istio-reader-istio-system changed in the cluster; meshform writes back what primaries need to read this cluster"
        ]
    );
}

#[test]
fn a_remotes_reader_is_read_only_and_its_control_plane_account_carries_the_writes() {
    // The control plane's writes on the reader role of a remote are drift
    // (every primary's token comes from it); on the control-plane account's
    // role they are its own rules.
    let topology = topology(PRIMARY_REMOTE);
    let mut observed = converge(&topology, &fresh(&topology));
    let writes = meshform::objects::rules_sha256(&meshform::objects::reader_rules(ReaderScope::ControlPlane));
    facts_mut(&mut observed, "r")
        .control_plane_account
        .cluster_role
        .as_mut()
        .expect("r has a control-plane account")
        .content_sha256 = Some(writes.clone());
    assert_eq!(actions(&plan_ok(&topology, &observed)), Vec::<String>::new());
    reader_role_of(&mut observed, "r").content_sha256 = Some(writes);
    let plan = plan_ok(&topology, &observed);
    assert_eq!(actions(&plan), lines(&["network r ensure_reader"]));
    assert!(
        matches!(
            plan.actions[0].kind,
            ActionKind::EnsureReader {
                scope: ReaderScope::Read,
                ..
            }
        ),
        "{:?}",
        plan.actions[0]
    );
    assert!(
        plan.actions[0].reason.contains("changed in the cluster"),
        "{:?}",
        plan.actions[0]
    );
}

#[test]
fn reader_rules_another_manager_owns_block_unless_forced() {
    let t = mesh_topology(&["name = \"a\"\nnetwork = \"n\"", "name = \"b\"\nnetwork = \"n\""]);
    let mut observed = converge(&t, &fresh(&t));
    let role = reader_role_of(&mut observed, "b");
    role.content_sha256 = Some("edited".into());
    role.content_owners = vec!["kubectl-edit".into()];
    let plan = plan_ok(&t, &observed);
    assert_eq!(findings(&plan), ["blocker b field_conflict"]);
    assert_eq!(
        plan.findings[0].message,
        "the rules list of ClusterRole meshform-istio-reader-istio-system in b is owned by kubectl-edit, not meshform: server-side apply would refuse to write it back"
    );
    assert!(plan.findings[0].help.as_deref().unwrap().contains("--force-conflicts"));
    let forced = plan_with(
        &t,
        &observed,
        &Options {
            force_conflicts: true,
            ..Options::default()
        },
    );
    assert_eq!(findings(&forced), Vec::<String>::new());
    assert!(forced.actions[0].forces(), "{:?}", forced.actions[0]);

    // Owning rules that are meshform's own (kubectl apply of the same) is no conflict.
    reader_role_of(&mut observed, "b").content_sha256 = Some(meshform::objects::rules_sha256(
        &meshform::objects::reader_rules(ReaderScope::Read),
    ));
    assert_eq!(findings(&plan_ok(&t, &observed)), Vec::<String>::new());
}

#[test]
fn a_reader_role_written_by_an_older_meshform_is_no_hand_edit() {
    // New rules change the spec-hash as well as the content: an update, not drift made by hand.
    let t = mesh_topology(&["name = \"a\"\nnetwork = \"n\"", "name = \"b\"\nnetwork = \"n\""]);
    let mut observed = converge(&t, &fresh(&t));
    let role = reader_role_of(&mut observed, "b");
    role.spec_hash = Some("older".into());
    role.content_sha256 = Some("older rules".into());
    let plan = plan_ok(&t, &observed);
    assert_eq!(actions(&plan), lines(&["network b ensure_reader"]));
    assert_eq!(
        reasons(&plan),
        ["the reader account's role is not what meshform writes"]
    );
}

#[test]
fn a_reader_role_or_binding_deleted_by_hand_is_recreated_saying_so() {
    let t = mesh_topology(&["name = \"a\"\nnetwork = \"n\"", "name = \"b\"\nnetwork = \"n\""]);
    let converged = converge(&t, &fresh(&t));
    let mut deleted = converged.clone();
    facts_mut(&mut deleted, "b").reader.cluster_role = None;
    let plan = plan_ok(&t, &deleted);
    assert_eq!(actions(&plan), lines(&["network b ensure_reader"]));
    assert_eq!(
        reasons(&plan),
        [
            "the ClusterRole meshform-istio-reader-istio-system is missing; without it primaries cannot read this cluster"
        ]
    );
    assert!(matches!(
        plan.actions[0].kind,
        ActionKind::EnsureReader { update: false, .. }
    ));
    let mut deleted = converged;
    facts_mut(&mut deleted, "b").reader.cluster_role_binding = None;
    assert_eq!(
        reasons(&plan_ok(&t, &deleted)),
        [
            "the ClusterRoleBinding meshform-istio-reader-istio-system is missing; without it primaries cannot read this cluster"
        ]
    );
}

#[test]
fn adopting_a_reader_role_made_by_hand_takes_its_fields_over() {
    let t = mesh_topology(&["name = \"a\"\nnetwork = \"n\"", "name = \"b\"\nnetwork = \"n\""]);
    let mut observed = fresh(&t);
    facts_mut(&mut observed, "b").reader.cluster_role = Some(ObjectFacts {
        content_sha256: Some("other rules".into()),
        content_owners: vec!["kubectl-create".into()],
        ..unmanaged("role-by-hand")
    });
    let options = Options {
        adopt: true,
        ..Options::default()
    };
    let plan = plan_with(&t, &observed, &options);
    // --adopt is the consent: no field_conflict, and the write forces.
    assert_eq!(findings(&plan), Vec::<String>::new());
    let reader = plan
        .actions
        .iter()
        .find(|a| a.cluster == "b" && matches!(a.kind, ActionKind::EnsureReader { .. }))
        .expect("b's reader adopted");
    assert!(reader.forces(), "{reader:?}");
}

#[test]
fn a_gateway_port_changed_in_mesh_toml_is_no_hand_edit() {
    let before = mesh_topology(&["name = \"a\"", "name = \"b\""]);
    let observed = converge(&before, &fresh(&before));
    let after = topology(&format!(
        "{}\n[network.a]\ngateway_port = 16443\n",
        mesh(&["name = \"a\"", "name = \"b\""])
    ));
    let plan = plan_ok(&after, &observed);
    let gateway = plan
        .actions
        .iter()
        .find(|a| a.cluster == "a" && matches!(a.kind, ActionKind::EnsureGateway { .. }))
        .expect("a's gateway updated");
    assert_eq!(gateway.reason, "the gateway is not what meshform writes");
}

#[test]
fn a_gateway_made_by_hand_with_another_spec_is_left_alone_saying_so() {
    let t = mesh_topology(&["name = \"a\"", "name = \"b\""]);
    let mut observed = converge(&t, &fresh(&t));
    facts_mut(&mut observed, "a").gateway = Some(ObjectFacts {
        content_sha256: Some("port 443".into()),
        ..unmanaged("gw-by-hand")
    });
    let plan = plan_ok(&t, &observed);
    assert!(
        !actions(&plan).iter().any(|a| a.contains("a ensure_gateway")),
        "{plan:?}"
    );
    assert_eq!(findings(&plan), lines(&["conflict a gateway_unmanaged"]));
    assert_eq!(
        plan.findings[0].message,
        "Gateway istio-system/cross-network-gateway exists and is not managed by meshform, and its spec is not what meshform writes (port 15443, TLS AUTO_PASSTHROUGH, hosts *.local); it is used as it is"
    );
}

// ---------------------------------------------------------------------------
// Updates and token rotation

fn two_flat_primaries() -> meshform::topology::Topology {
    mesh_topology(&["name = \"a\"\nnetwork = \"n\"", "name = \"b\"\nnetwork = \"n\""])
}

#[test]
fn peer_address_change_updates_the_secret_with_old_and_new_address() {
    let before = two_flat_primaries();
    let after = mesh_topology(&[
        "name = \"a\"\nnetwork = \"n\"",
        "name = \"b\"\nnetwork = \"n\"\napi_server = \"https://b.api.example.net:443\"",
    ]);
    let observed = converge(&before, &fresh(&before));
    let plan = plan_ok(&after, &observed);
    assert_eq!(actions(&plan), lines(&["update a write_remote_secret/update b"]));
    assert!(
        plan.actions[0]
            .reason
            .contains("from https://b.clusters.example.com:6443 to https://b.api.example.net:443"),
        "{}",
        plan.actions[0].reason
    );
    assert!(plan.changes.is_empty());
}

#[test]
fn ca_change_updates_the_secret() {
    let t = two_flat_primaries();
    let mut observed = converge(&t, &fresh(&t));
    facts_mut(&mut observed, "b").ca_sha256 = Some("new-ca".to_string());
    let plan = plan_ok(&t, &observed);
    assert_eq!(actions(&plan), lines(&["update a write_remote_secret/update b"]));
    assert!(plan.actions[0].reason.contains("the CA of b has changed"));
}

#[test]
fn token_rotation_follows_the_token_kind_and_age() {
    let t = two_flat_primaries();
    let converged = converge(&t, &fresh(&t));
    let day = SignedDuration::from_hours(24);
    let cases: [(&str, TokenFacts, bool, &[&str]); 7] = [
        (
            "bound, past half its life",
            bound_token(day * 200, day * 365),
            false,
            &["update a write_remote_secret/rotate b"],
        ),
        (
            "bound, before half its life",
            bound_token(day * 100, day * 365),
            false,
            &[],
        ),
        (
            "bound, expired",
            bound_token(day * 400, day * 365),
            false,
            &["update a write_remote_secret/rotate b"],
        ),
        (
            "unknown token",
            TokenFacts::Unknown,
            false,
            &["update a write_remote_secret/rotate b"],
        ),
        ("unbounded token", TokenFacts::Unbounded, false, &[]),
        (
            "unbounded token, --rotate-tokens",
            TokenFacts::Unbounded,
            true,
            &[
                "update a write_remote_secret/rotate b",
                "update b write_remote_secret/rotate a",
            ],
        ),
        (
            "fresh token, --rotate-tokens",
            bound_token(day, day * 365),
            true,
            &[
                "update a write_remote_secret/rotate b",
                "update b write_remote_secret/rotate a",
            ],
        ),
    ];
    for (name, token, rotate_tokens, expected) in cases {
        let mut observed = converged.clone();
        set_token(&mut observed, "a", "istio-remote-secret-b", token);
        let options = Options {
            rotate_tokens,
            ..Options::default()
        };
        let plan = plan_with(&t, &observed, &options);
        assert_eq!(actions(&plan), lines(expected), "{name}");
    }
}

// Regression: deleting a peer's reader account revokes the token in every remote secret for it, and the
// plan only recreated the account, leaving the revoked token in place.
#[test]
fn a_token_of_a_deleted_or_recreated_reader_account_is_rotated() {
    let t = two_flat_primaries();
    let mut converged = converge(&t, &fresh(&t));
    let account_uid = facts_mut(&mut converged, "b")
        .reader
        .service_account
        .as_ref()
        .expect("b has a reader account")
        .uid
        .clone();
    facts_mut(&mut converged, "a")
        .remote_secrets
        .get_mut("istio-remote-secret-b")
        .expect("a holds b's secret")
        .token_account_uid = Some(account_uid.as_str().into());
    assert_eq!(
        actions(&plan_ok(&t, &converged)),
        lines(&[]),
        "the account the token names is there"
    );

    let mut deleted = converged.clone();
    facts_mut(&mut deleted, "b").reader.service_account = None;
    let plan = plan_ok(&t, &deleted);
    assert_eq!(
        actions(&plan),
        lines(&["network b ensure_reader", "update a write_remote_secret/rotate b"])
    );
    // Regression: the account's absence was reported as "the reader account's role is not what meshform writes".
    assert_eq!(
        plan.actions[0].reason,
        "the reader account istio-reader-service-account is missing"
    );
    let rotation = plan.actions.iter().find(|a| a.cluster == "a").expect("the rotation");
    assert!(
        rotation.reason.contains("revoked") && rotation.reason.contains("was deleted"),
        "{}",
        rotation.reason
    );

    let mut recreated = converged.clone();
    facts_mut(&mut recreated, "b")
        .reader
        .service_account
        .as_mut()
        .expect("b has a reader account")
        .uid = "another-uid".to_string();
    let plan = plan_ok(&t, &recreated);
    assert_eq!(actions(&plan), lines(&["update a write_remote_secret/rotate b"]));
    assert!(
        plan.actions[0].reason.contains("re-created"),
        "{}",
        plan.actions[0].reason
    );
}

#[test]
fn rotate_after_sets_the_share_of_life_that_triggers_rotation() {
    let t = two_flat_primaries();
    let mut observed = converge(&t, &fresh(&t));
    let day = SignedDuration::from_hours(24);
    set_token(
        &mut observed,
        "a",
        "istio-remote-secret-b",
        bound_token(day * 100, day * 365),
    );
    // Past a quarter of its life, not yet half: the default leaves it alone.
    assert!(plan_ok(&t, &observed).is_empty());
    let mut early = t.clone();
    early.mesh.tokens.rotate_at_percent = 25;
    let plan = plan_ok(&early, &observed);
    assert_eq!(actions(&plan), lines(&["update a write_remote_secret/rotate b"]));
    assert!(
        plan.actions[0].reason.contains("25% of its life"),
        "{}",
        plan.actions[0].reason
    );
}

// ---------------------------------------------------------------------------
// Peer addresses

#[test]
fn peer_address_only_reachable_inside_its_network_is_a_warning() {
    let cases = [
        ("https://127.0.0.1:6443", true),
        ("https://[::1]:6443", true),
        ("https://localhost:6443", true),
        ("https://api.internal:6443", true),
        ("https://kubernetes:6443", true),
        ("https://b.api.example.net", false),
        ("https://203.0.113.40:443", false),
    ];
    for (address, warned) in cases {
        let t = mesh_topology(&[
            "name = \"a\"\nnetwork = \"n\"",
            &format!("name = \"b\"\nnetwork = \"n\"\napi_server = \"{address}\""),
        ]);
        let plan = plan_ok(&t, &fresh(&t));
        let expected: &[&str] = if warned { &["warning b peer_address"] } else { &[] };
        assert_eq!(findings(&plan), lines(expected), "{address}");
    }
}

#[test]
fn address_of_a_cluster_no_primary_reads_is_not_checked() {
    // a is the only primary: nobody dials a's API server.
    let t = mesh_topology(&[
        "name = \"a\"\nnetwork = \"n\"\napi_server = \"https://127.0.0.1:6443\"",
        "name = \"b\"\nnetwork = \"n\"\nrole = \"remote\"",
    ]);
    let plan = plan_ok(&t, &fresh(&t));
    assert_eq!(findings(&plan), Vec::<String>::new());
}

// ---------------------------------------------------------------------------
// Determinism

fn permutations<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut out = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut tail in permutations(&rest) {
            tail.insert(0, first.clone());
            out.push(tail);
        }
    }
    out
}

#[test]
fn plan_does_not_depend_on_the_order_of_clusters_in_the_file() {
    let bodies = [
        "name = \"eu-west\"\nnetwork = \"eu-flat\"",
        "name = \"eu-central\"\nnetwork = \"eu-flat\"\nrole = \"remote\"",
        "name = \"us-east\"",
        "name = \"apac\"\nnetwork = \"asia\"\napi_server = \"https://203.0.113.40:443\"",
    ];
    let reference = mesh_topology(&bodies);
    let mut observed = fresh(&reference);
    facts_mut(&mut observed, "us-east").gateway_service = None;
    make_unknown(&mut observed, "eu-west");
    make_unknown(&mut observed, "apac");
    let options = Options {
        skip_unreachable: true,
        ..Options::default()
    };
    let expected = serde_json::to_string_pretty(&plan_with(&reference, &observed, &options)).unwrap();
    for order in permutations(&bodies) {
        let t = mesh_topology(&order);
        let json = serde_json::to_string_pretty(&plan_with(&t, &observed, &options)).unwrap();
        assert_eq!(json, expected, "order: {order:?}");
    }
}

// ---------------------------------------------------------------------------
// Revoking reader tokens (issue 15)

/// A binding Secret in `peer` for tokens `holder` held before a rotation:
/// nothing references it any more.
fn replaced_binding(observed: &mut Observed, peer: &str, holder: &str) {
    let holder_identity = facts_mut(observed, holder).identity.clone();
    facts_mut(observed, peer).reader_bindings.insert(
        format!("meshform-reader-binding-{holder}-old"),
        BindingFacts {
            object: ObjectFacts {
                uid: format!("old-{holder}-{peer}"),
                resource_version: "3".to_string(),
                managed: true,
                spec_hash: None,
                content_sha256: None,
                content_owners: Vec::new(),
            },
            holder: Some(holder.into()),
            holder_identity: Some(holder_identity.into()),
        },
    );
}

#[test]
fn a_converged_mesh_binds_every_token_and_revokes_nothing() {
    let t = three_primaries();
    let observed = converge(&t, &fresh(&t));
    for (holder, facts) in &observed.clusters {
        let facts = facts.facts().unwrap();
        for secret in facts.remote_secrets.values() {
            let peer = &secret.cluster_ids[0];
            let bindings = &observed.facts(peer).unwrap().reader_bindings;
            assert!(
                bindings
                    .values()
                    .any(|b| Some(&b.object.uid) == secret.token_binding_uid.as_ref()
                        && b.holder.as_deref() == Some(holder.as_str())),
                "{holder}'s token for {peer} is bound to none of {bindings:?}"
            );
        }
    }
    assert_eq!(actions(&plan_ok(&t, &observed)), Vec::<String>::new());
}

#[test]
fn a_replaced_token_is_revoked_only_once_its_successor_has_been_in_place_for_the_grace_period() {
    let t = three_primaries();
    let mut observed = converge(&t, &fresh(&t));
    replaced_binding(&mut observed, "b", "a");
    // The successor was issued at the observation's time: within the grace period.
    assert_eq!(actions(&plan_ok(&t, &observed)), Vec::<String>::new());
    let grace = meshform::plan::DEFAULT_REVOKE_GRACE_SECONDS;
    observed.observed_at += SignedDuration::from_secs(grace - 1);
    assert_eq!(actions(&plan_ok(&t, &observed)), Vec::<String>::new());
    observed.observed_at += SignedDuration::from_secs(1);
    let plan = plan_ok(&t, &observed);
    assert_eq!(actions(&plan), lines(&["update b revoke_reader_tokens/replaced a"]));
    // Not a detach: a scheduled run needs no --allow-detach for it.
    assert!(!plan.actions[0].is_destructive());
    assert!(plan.changes.is_empty());

    // A grace of 0 revokes on the next run.
    let mut observed = converge(&t, &fresh(&t));
    replaced_binding(&mut observed, "b", "a");
    let options = Options {
        revoke_grace_seconds: 0,
        ..Options::default()
    };
    assert_eq!(
        actions(&plan_with(&t, &observed, &options)),
        lines(&["update b revoke_reader_tokens/replaced a"])
    );
}

#[test]
fn no_token_is_revoked_while_its_successor_is_being_written_or_its_holder_cannot_be_read() {
    let t = three_primaries();
    let options = Options {
        revoke_grace_seconds: 0,
        ..Options::default()
    };
    // a's secret for b is rewritten in this run: the old binding waits for the next.
    let mut observed = converge(&t, &fresh(&t));
    replaced_binding(&mut observed, "b", "a");
    facts_mut(&mut observed, "a")
        .remote_secrets
        .remove("istio-remote-secret-b");
    assert_eq!(
        actions(&plan_with(&t, &observed, &options)),
        lines(&["attach a write_remote_secret/create b"])
    );
    // Someone else's secret in the way: meshform's binding is left alone.
    facts_mut(&mut observed, "a")
        .remote_secrets
        .insert("istio-remote-secret-b".to_string(), unmanaged_secret(&["b"]));
    assert_eq!(actions(&plan_with(&t, &observed, &options)), Vec::<String>::new());

    // A holder that could not be read may still depend on every token it holds.
    let mut observed = converge(&t, &fresh(&t));
    replaced_binding(&mut observed, "b", "a");
    make_unknown(&mut observed, "a");
    let options = Options {
        skip_unreachable: true,
        ..options
    };
    assert_eq!(actions(&plan_with(&t, &observed, &options)), Vec::<String>::new());
}

#[test]
fn a_renamed_holder_keeps_its_tokens_and_a_departed_one_loses_them_even_unreachable() {
    let before = three_primaries();
    let observed = converge(&before, &fresh(&before));
    // c is renamed d: the same cluster (its identity), so the tokens it holds stay.
    let after = mesh_topology(&["name = \"a\"", "name = \"b\"", "name = \"d\"\ncontext = \"c\""]);
    let mut renamed = observed.clone();
    let c = renamed.clusters.remove("c").unwrap();
    renamed.clusters.insert("d".to_string(), c);
    let plan = plan_ok(&after, &renamed);
    assert!(
        !plan
            .actions
            .iter()
            .any(|a| matches!(a.kind, ActionKind::RevokeReaderTokens { .. })),
        "{:?}",
        actions(&plan)
    );

    // c leaves the mesh and is not even observed: the tokens it holds are revoked in a and b all the same.
    let after = mesh_topology(&["name = \"a\"", "name = \"b\""]);
    let plan = plan_ok(&after, &after_converging(&before, &after));
    let revoked: Vec<&meshform::plan::Action> = plan
        .actions
        .iter()
        .filter(|a| matches!(a.kind, ActionKind::RevokeReaderTokens { .. }))
        .collect();
    assert_eq!(revoked.len(), 2);
    assert!(revoked.iter().all(|a| a.is_destructive() && a.peer() == Some("c")));
    let finding = &plan.findings[0];
    assert_eq!(finding.code, "meshform::plan::detached_holder");
    assert!(
        finding.message.contains("no longer authenticate"),
        "{}",
        finding.message
    );
}

// Deleting a binding by hand revokes the tokens bound to it: no expiry shows that.
#[test]
fn a_token_whose_binding_was_deleted_is_replaced() {
    let t = three_primaries();
    let mut observed = converge(&t, &fresh(&t));
    facts_mut(&mut observed, "b")
        .reader_bindings
        .retain(|_, binding| binding.holder.as_deref() != Some("a"));
    let plan = plan_ok(&t, &observed);
    assert_eq!(actions(&plan), lines(&["update a write_remote_secret/rotate b"]));
    assert!(
        reasons(&plan)[0].contains("binding Secret in b"),
        "{:?}",
        reasons(&plan)
    );
}

#[test]
fn secret_mode_says_that_a_detach_revokes_nothing() {
    let legacy = "[mesh.tokens]\nmode = \"secret\"\n";
    let before = topology(&format!(
        "{HEADER}{legacy}{}",
        &mesh(&["name = \"a\"", "name = \"b\"", "name = \"c\""])[HEADER.len()..]
    ));
    let after = topology(&format!(
        "{HEADER}{legacy}{}",
        &mesh(&["name = \"a\"", "name = \"b\""])[HEADER.len()..]
    ));
    let mut observed = after_converging(&before, &after);
    // Legacy tokens are bound to nothing: apply makes no binding Secrets in this mode.
    for cluster in ["a", "b"] {
        facts_mut(&mut observed, cluster).reader_bindings.clear();
    }
    let plan = plan_ok(&after, &observed);
    assert_eq!(findings(&plan), lines(&["warning c detach_not_revoked"]));
    assert!(
        plan.findings[0]
            .help
            .as_deref()
            .unwrap()
            .contains("tokens.mode = \"request\"")
    );
}

// ---------------------------------------------------------------------------
// Properties over random topologies and observations

// A remote's mesh namespace names the primary whose istiod serves it
// (topology.istio.io/controlPlaneClusters), written beside the network label.
const PRIMARY_REMOTE: &str = r#"
[mesh]
name = "m"
[[cluster]]
name = "a"
network = "n1"
[[cluster]]
name = "b"
network = "n2"
[[cluster]]
name = "r"
network = "n1"
role = "remote"
"#;

#[test]
fn a_remote_is_labelled_with_its_network_and_annotated_with_its_control_plane() {
    let topology = topology(PRIMARY_REMOTE);
    let plan = plan_ok(&topology, &fresh(&topology));
    let namespaces: Vec<String> = actions(&plan)
        .into_iter()
        .filter(|a| a.contains("set_network"))
        .collect();
    assert_eq!(
        namespaces,
        [
            "network a set_network none->n1",
            "network b set_network none->n2",
            "network r set_network none->n1",
        ]
    );
    let control_planes: Vec<Option<&str>> = plan
        .actions
        .iter()
        .filter_map(|a| match &a.kind {
            ActionKind::SetNetwork { control_plane, .. } => Some(control_plane.as_deref()),
            _ => None,
        })
        .collect();
    assert_eq!(control_planes, [None, None, Some("a")]);
    // Converged, nothing more; an annotation that lists the primary among
    // others, or `*`, is Istio's way of saying the same.
    let mut observed = converge(&topology, &fresh(&topology));
    assert_eq!(actions(&plan_ok(&topology, &observed)), Vec::<String>::new());
    for ids in ["b,a", "*"] {
        facts_mut(&mut observed, "r").namespace.as_mut().unwrap().control_planes = Some(ids.into());
        assert_eq!(actions(&plan_ok(&topology, &observed)), Vec::<String>::new(), "{ids}");
    }
    // Taken off by hand (or never there): written again, and said why; a's
    // istiod reads it only when it adds r, so a's secret for r gets a new
    // token (b is no control plane of r: its secret stays).
    facts_mut(&mut observed, "r").namespace.as_mut().unwrap().control_planes = None;
    let plan = plan_ok(&topology, &observed);
    assert_eq!(
        actions(&plan),
        ["network r set_network n1->n1", "update a write_remote_secret/rotate r"]
    );
    assert!(
        reasons(&plan)[0].contains("name a's istiod as the remote's control plane"),
        "{:?}",
        reasons(&plan)
    );
    assert!(
        reasons(&plan)[1].contains("reads r's control-plane annotation only when it adds the cluster"),
        "{:?}",
        reasons(&plan)
    );
}

#[test]
fn a_remote_install_that_cannot_reach_its_control_plane_blocks() {
    // r on n2, served by a on n1: its sidecars reach a's istiod only through
    // a's east-west gateway.
    let topology = topology(&PRIMARY_REMOTE.replace(
        "name = \"r\"\nnetwork = \"n1\"",
        "name = \"r\"\nnetwork = \"n2\"\ncontrol_plane = \"a\"",
    ));
    let mut observed = converge(&topology, &fresh(&topology));
    assert_eq!(findings(&plan_ok(&topology, &observed)), Vec::<String>::new());
    // A remote install: no istiod of its own.
    assert_eq!(facts_mut(&mut observed, "r").installs["default"].istiod, None);
    fn install(observed: &mut Observed) -> &mut meshform::observe::model::InstallFacts {
        facts_mut(observed, "r").installs.get_mut("default").unwrap()
    }
    install(&mut observed).remote_pilot_address = Some("10.0.0.7".into());
    let plan = plan_ok(&topology, &observed);
    assert_eq!(findings(&plan), ["blocker r remote_pilot_address"]);
    assert!(
        plan.findings[0]
            .message
            .contains("only a's east-west gateway (a.gateways.example.com)"),
        "{:?}",
        plan.findings
    );
    assert!(
        plan.findings[0]
            .help
            .as_deref()
            .unwrap()
            .contains("--set values.global.remotePilotAddress=a.gateways.example.com"),
        "{:?}",
        plan.findings
    );
    // Istio's remote profile: its istiod Service without the EndpointSlice
    // holding the address, then installed without one (no istiod Service at
    // all, only Helm's values ConfigMap shows the install).
    install(&mut observed).remote_pilot_address = None;
    let plan = plan_ok(&topology, &observed);
    assert_eq!(findings(&plan), ["blocker r remote_pilot_address"]);
    assert!(
        plan.findings[0]
            .message
            .contains("Service istiod in remote r has no EndpointSlice with an address"),
        "{:?}",
        plan.findings
    );
    install(&mut observed).remote_istiod = None;
    let plan = plan_ok(&topology, &observed);
    assert_eq!(findings(&plan), ["blocker r remote_pilot_address"]);
    assert!(
        plan.findings[0]
            .message
            .contains("(ConfigMap values) without global.remotePilotAddress"),
        "{:?}",
        plan.findings
    );
    // An install that writes the injector ConfigMap says so there.
    install(&mut observed).injector = Some("istio-sidecar-injector".into());
    let plan = plan_ok(&topology, &observed);
    assert!(
        plan.findings.iter().any(|f| f
            .message
            .contains("injector ConfigMap istio-sidecar-injector in remote r has no global.remotePilotAddress")),
        "{:?}",
        plan.findings
    );
}

#[test]
fn a_primary_named_as_served_by_another_istiod_is_a_warning() {
    let topology = topology(PRIMARY_REMOTE);
    let mut observed = converge(&topology, &fresh(&topology));
    facts_mut(&mut observed, "b").namespace.as_mut().unwrap().control_planes = Some("a".into());
    let plan = plan_ok(&topology, &observed);
    assert_eq!(findings(&plan), ["warning b control_plane_on_primary"]);
    assert!(
        plan.findings[0]
            .help
            .as_deref()
            .unwrap()
            .contains("topology.istio.io/controlPlaneClusters-")
    );
    assert_eq!(
        actions(&plan),
        Vec::<String>::new(),
        "meshform does not take the annotation off"
    );
}

#[test]
fn a_label_another_manager_owns_blocks_unless_forced() {
    let before = mesh_topology(&["name = \"a\"\nnetwork = \"n\"", "name = \"b\"\nnetwork = \"n\""]);
    let mut observed = converge(&before, &fresh(&before));
    let ns = facts_mut(&mut observed, "b").namespace.as_mut().unwrap();
    ns.network = Some("by-hand".into());
    ns.network_owners = vec!["kubectl-label".into()];
    let plan = plan_ok(&before, &observed);
    assert_eq!(findings(&plan), ["blocker b field_conflict"]);
    let forced = plan_with(
        &before,
        &observed,
        &Options {
            force_conflicts: true,
            ..Options::default()
        },
    );
    assert_eq!(findings(&forced), Vec::<String>::new());
    let relabel = forced
        .actions
        .iter()
        .find(|a| a.cluster == "b" && matches!(a.kind, ActionKind::SetNetwork { .. }))
        .expect("b relabelled");
    assert!(
        matches!(relabel.kind, ActionKind::SetNetwork { force: true, .. }),
        "{relabel:?}"
    );
    // Owners of a label meshform leaves as it is are no conflict.
    let mut calm = converge(&before, &fresh(&before));
    facts_mut(&mut calm, "b").namespace.as_mut().unwrap().network_owners = vec!["kubectl-label".into()];
    assert_eq!(findings(&plan_ok(&before, &calm)), Vec::<String>::new());
}

mod properties {
    use std::collections::{BTreeMap, BTreeSet};

    use jiff::SignedDuration;
    use meshform::observe::model::{Observed, TokenFacts};
    use meshform::plan::simulate::simulate;
    use meshform::plan::{ActionKind, Change, FindingKind, Options, Plan, WriteMode, plan};
    use meshform::topology::{Role, Topology};
    use proptest::prelude::*;

    use super::plan_fixtures::*;
    use super::unmanaged;

    const NETWORKS: [&str; 3] = ["n0", "n1", "n2"];

    /// One `[[cluster]]`: its network (`None`: the default, its own name),
    /// role and peer-facing address.
    #[derive(Debug, Clone)]
    struct ClusterSpec {
        network: Option<usize>,
        remote: bool,
        api_server: Option<usize>,
    }

    fn cluster_spec() -> impl Strategy<Value = ClusterSpec> {
        (
            prop::option::weighted(0.75, 0..NETWORKS.len()),
            prop::bool::weighted(0.4),
            prop::option::weighted(0.3, 0..3usize),
        )
            .prop_map(|(network, remote, api_server)| ClusterSpec {
                network,
                remote,
                api_server,
            })
    }

    fn body(name: &str, spec: &ClusterSpec) -> String {
        let mut text = format!("name = \"{name}\"\n");
        if let Some(n) = spec.network {
            text.push_str(&format!("network = \"{}\"\n", NETWORKS[n]));
        }
        if spec.remote {
            text.push_str("role = \"remote\"\n");
        }
        if let Some(a) = spec.api_server {
            let address = match a {
                0 => format!("https://{name}.api.example.net:443"),
                1 => "https://127.0.0.1:6443".to_string(),
                _ => format!("https://{name}.internal:6443"),
            };
            text.push_str(&format!("api_server = \"{address}\"\n"));
        }
        text
    }

    /// Topology text of `(name, spec)` pairs, in the given order; the first
    /// cluster is made primary when none is (a mesh needs one).
    fn toml(clusters: &[(String, ClusterSpec)], order: &[usize], legacy_tokens: bool, rotate_at_percent: u8) -> String {
        let mut clusters = clusters.to_vec();
        if clusters.iter().all(|(_, s)| s.remote) {
            clusters[0].1.remote = false;
        }
        // A remote with several primaries to choose from must name one
        // (a validation error otherwise): the first primary by name.
        let network =
            |(name, spec): &(String, ClusterSpec)| spec.network.map_or(name.clone(), |n| NETWORKS[n].to_string());
        let mut primaries: Vec<&(String, ClusterSpec)> = clusters.iter().filter(|(_, s)| !s.remote).collect();
        primaries.sort_by(|a, b| a.0.cmp(&b.0));
        let control_plane = |remote: &(String, ClusterSpec)| {
            let here = primaries.iter().filter(|p| network(p) == network(remote)).count();
            if remote.1.remote && here != 1 && primaries.len() > 1 {
                format!("control_plane = \"{}\"\n", primaries[0].0)
            } else {
                String::new()
            }
        };
        let bodies: Vec<String> = order
            .iter()
            .map(|&i| body(&clusters[i].0, &clusters[i].1) + &control_plane(&clusters[i]))
            .collect();
        let text = super::mesh(&bodies.iter().map(String::as_str).collect::<Vec<_>>());
        let mode = if legacy_tokens { "secret" } else { "request" };
        text.replacen(
            super::HEADER,
            &format!(
                "{}\n[mesh.tokens]\nmode = \"{mode}\"\nrotate_at_percent = {rotate_at_percent}\n",
                super::HEADER
            ),
            1,
        )
    }

    /// What the clusters looked like before: the state an earlier topology
    /// of the same clusters left, some under an old name, some since removed.
    #[derive(Debug, Clone)]
    struct Prior {
        specs: Vec<ClusterSpec>,
        /// `[mesh.tokens] mode = "secret"` then.
        legacy_tokens: bool,
        /// Cluster i was called `old<i>` then.
        renamed: Vec<bool>,
        /// Clusters of the earlier topology no longer in the file.
        removed: Vec<ClusterSpec>,
    }

    /// Changes to the observation no plan makes: what operators and istioctl do.
    #[derive(Debug, Clone)]
    struct Drift {
        prior: Option<Prior>,
        no_gateway_service: Vec<bool>,
        unknown: Vec<bool>,
        unmanaged_gateway: Vec<bool>,
        unmanaged_reader: Vec<bool>,
        /// (holder, peer, kind): 0 istioctl's name for the peer, 1 another
        /// name with the peer's id, 2 istioctl's name for the peer holding
        /// another cluster's id.
        unmanaged_secrets: Vec<(usize, usize, u8)>,
        /// (holder, which secret, kind): 0 old bound, 1 unknown, 2 unbounded, 3 expired.
        tokens: Vec<(usize, usize, u8)>,
        /// (holder, which secret): a copy of a meshform secret under another
        /// name, as an older meshform might have left it.
        stale_copies: Vec<(usize, usize)>,
    }

    #[derive(Debug, Clone)]
    struct Case {
        specs: Vec<ClusterSpec>,
        legacy_tokens: bool,
        drift: Drift,
        order: Vec<usize>,
        adopt: bool,
        restart_workloads: bool,
        rotate_tokens: bool,
        rotate_at_percent: u8,
    }

    fn case() -> impl Strategy<Value = Case> {
        (2..=8usize)
            .prop_flat_map(|n| {
                let prior = (
                    prop::collection::vec(cluster_spec(), n),
                    prop::collection::vec(prop::bool::weighted(0.15), n),
                    prop::collection::vec(cluster_spec(), 0..=2),
                    prop::bool::weighted(0.2),
                )
                    .prop_map(|(specs, renamed, removed, legacy_tokens)| Prior {
                        specs,
                        legacy_tokens,
                        renamed,
                        removed,
                    });
                let drift = (
                    prop::option::weighted(0.8, prior),
                    prop::collection::vec(prop::bool::weighted(0.15), n),
                    prop::collection::vec(prop::bool::weighted(0.1), n),
                    prop::collection::vec(prop::bool::weighted(0.1), n),
                    prop::collection::vec(prop::bool::weighted(0.1), n),
                    prop::collection::vec((0..n, 0..n + 2, 0..3u8), 0..3),
                    prop::collection::vec((0..n, 0..8usize, 0..4u8), 0..4),
                    prop::collection::vec((0..n, 0..8usize), 0..2),
                )
                    .prop_map(
                        |(
                            prior,
                            no_gateway_service,
                            unknown,
                            unmanaged_gateway,
                            unmanaged_reader,
                            secrets,
                            tokens,
                            stale_copies,
                        )| {
                            Drift {
                                prior,
                                no_gateway_service,
                                unknown,
                                unmanaged_gateway,
                                unmanaged_reader,
                                unmanaged_secrets: secrets,
                                tokens,
                                stale_copies,
                            }
                        },
                    );
                (
                    prop::collection::vec(cluster_spec(), n),
                    drift,
                    Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
                    any::<bool>(),
                    any::<bool>(),
                    prop::bool::weighted(0.2),
                    10..=90u8,
                    prop::bool::weighted(0.2),
                )
            })
            .prop_map(
                |(specs, drift, order, adopt, restart_workloads, rotate_tokens, rotate_at_percent, legacy_tokens)| {
                    Case {
                        specs,
                        legacy_tokens,
                        drift,
                        order,
                        adopt,
                        restart_workloads,
                        rotate_tokens,
                        rotate_at_percent,
                    }
                },
            )
    }

    fn name(i: usize) -> String {
        format!("c{i}")
    }

    impl Case {
        fn named(&self) -> Vec<(String, ClusterSpec)> {
            self.specs
                .iter()
                .enumerate()
                .map(|(i, s)| (name(i), s.clone()))
                .collect()
        }

        fn topology(&self) -> Topology {
            let identity: Vec<usize> = (0..self.specs.len()).collect();
            topology(&toml(
                &self.named(),
                &identity,
                self.legacy_tokens,
                self.rotate_at_percent,
            ))
        }

        fn shuffled(&self) -> Topology {
            topology(&toml(
                &self.named(),
                &self.order,
                self.legacy_tokens,
                self.rotate_at_percent,
            ))
        }

        fn options(&self) -> Options {
            Options {
                skip_unreachable: true,
                adopt: self.adopt,
                restart_workloads: self.restart_workloads,
                rotate_tokens: self.rotate_tokens,
                force_conflicts: false,
                targets: Vec::new(),
                revoke_grace_seconds: meshform::plan::DEFAULT_REVOKE_GRACE_SECONDS,
                unattended: false,
            }
        }

        fn observed(&self, desired: &Topology) -> Observed {
            let n = self.specs.len();
            let drift = &self.drift;
            let mut observed = fresh(desired);
            if let Some(prior) = &drift.prior {
                let old_name = |i: usize| if prior.renamed[i] { format!("old{i}") } else { name(i) };
                let mut clusters: Vec<(String, ClusterSpec)> =
                    (0..n).map(|i| (old_name(i), prior.specs[i].clone())).collect();
                clusters.extend(
                    prior
                        .removed
                        .iter()
                        .enumerate()
                        .map(|(j, s)| (format!("gone{j}"), s.clone())),
                );
                let order: Vec<usize> = (0..clusters.len()).collect();
                let before = topology(&toml(&clusters, &order, prior.legacy_tokens, 50));
                let mut start = fresh(&before);
                for i in 0..n {
                    // A renamed cluster is the same cluster: same kube-system UID.
                    facts_mut(&mut start, &old_name(i)).identity = format!("kube-system-{}", name(i));
                }
                let after = converge(&before, &start);
                for i in 0..n {
                    let mut observation = after.clusters[&old_name(i)].clone();
                    observation.context = name(i);
                    observed.clusters.insert(name(i), observation);
                }
                // Renames and network moves start with Istio reinstalled for them.
                meshform::observe::synthetic::reinstall_for(&mut observed, desired);
            }
            for i in 0..n {
                let facts = facts_mut(&mut observed, &name(i));
                if drift.no_gateway_service[i] {
                    facts.gateway_service = None;
                }
                if drift.unmanaged_gateway[i] {
                    facts.gateway = Some(unmanaged(&format!("gw-{i}")));
                }
                if drift.unmanaged_reader[i] {
                    facts.reader.cluster_role = Some(unmanaged(&format!("role-{i}")));
                }
            }
            let peer_name = |p: usize| if p < n { name(p) } else { format!("gone{}", p - n) };
            for &(holder, peer, kind) in &drift.unmanaged_secrets {
                let peer = peer_name(peer);
                let (secret_name, id) = match kind {
                    0 => (format!("istio-remote-secret-{peer}"), peer.clone()),
                    1 => (format!("{peer}-by-hand"), peer.clone()),
                    _ => (format!("istio-remote-secret-{peer}"), name((holder + 1) % n)),
                };
                facts_mut(&mut observed, &name(holder))
                    .remote_secrets
                    .insert(secret_name, unmanaged_secret(&[&id]));
            }
            for &(holder, which) in &drift.stale_copies {
                let facts = facts_mut(&mut observed, &name(holder));
                let copy = facts
                    .remote_secrets
                    .iter()
                    .filter(|(_, s)| s.object.managed)
                    .nth(which)
                    .map(|(n, s)| (format!("{n}-old"), s.clone()));
                if let Some((copy_name, mut secret)) = copy {
                    secret.object.uid = format!("uid-{copy_name}");
                    facts.remote_secrets.insert(copy_name, secret);
                }
            }
            let day = SignedDuration::from_hours(24);
            for &(holder, which, kind) in &drift.tokens {
                let facts = facts_mut(&mut observed, &name(holder));
                let Some(secret) = facts
                    .remote_secrets
                    .values_mut()
                    .filter(|s| s.object.managed)
                    .nth(which)
                else {
                    continue;
                };
                secret.token = match kind {
                    0 => bound_token(day * 300, day * 365),
                    1 => TokenFacts::Unknown,
                    2 => TokenFacts::Unbounded,
                    _ => bound_token(day * 400, day * 365),
                };
            }
            for i in 0..n {
                if drift.unknown[i] {
                    make_unknown(&mut observed, &name(i));
                }
            }
            observed
        }
    }

    fn config() -> ProptestConfig {
        // Minimal failures become named regression tests above, not
        // persistence files in the tree.
        ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// Findings that stay after apply because they are about objects
    /// meshform does not touch, or about something only the operator can fix.
    fn persists(code: &str) -> bool {
        [
            "meshform::plan::gateway_service_missing",
            "meshform::plan::remote_secret_unmanaged",
            "meshform::plan::remote_secret_duplicate",
            "meshform::plan::reader_unmanaged",
            "meshform::plan::gateway_unmanaged",
            "meshform::plan::peer_address",
            // The remote's install, and an annotation another manager wrote.
            "meshform::plan::remote_pilot_address",
            "meshform::plan::remote_pilot_previous",
            "meshform::plan::control_plane_on_primary",
        ]
        .contains(&code)
    }

    fn json(plan: &Plan) -> String {
        serde_json::to_string_pretty(plan).expect("a plan serialises")
    }

    proptest! {
        #![proptest_config(config())]

        /// (a) Applying a plan reaches the topology: the next plan writes nothing.
        #[test]
        fn a_plan_applied_leaves_nothing_to_do(case in case()) {
            let desired = case.topology();
            let observed = case.observed(&desired);
            // --rotate-tokens rotates every time by design; it is not a state to converge to.
            let options = Options { rotate_tokens: false, ..case.options() };
            let first = plan(&desired, &observed, &options).expect("plans");
            let after = simulate(&observed, &first, TOKEN_LIFETIME);
            let second = plan(&desired, &after, &options).expect("plans again");
            prop_assert!(second.is_empty(), "second plan: {:#?}\nfirst: {:#?}", actions(&second), actions(&first));
            // A restart shown but not run stays owed (issue 29): it is all that
            // is left, for exactly the clusters whose restart was not run.
            let shown = |plan: &Plan| -> Vec<String> {
                plan.actions
                    .iter()
                    .filter(|a| matches!(a.kind, ActionKind::RestartWorkloads { enabled: false, .. }))
                    .map(|a| a.cluster.clone())
                    .collect()
            };
            let left: Vec<String> = actions(&second)
                .into_iter()
                .filter(|a| !a.ends_with(" restart_workloads/shown"))
                .collect();
            prop_assert_eq!(left, Vec::<String>::new());
            prop_assert_eq!(shown(&second), shown(&first));
            // Only findings about what meshform leaves alone persist, and they are the same ones.
            for finding in &second.findings {
                prop_assert!(persists(&finding.code), "unexpected finding after apply: {:?}", finding);
            }
            // A warning about this run's network change or detach goes once the change is made.
            let lasting = |plan: &meshform::plan::Plan| -> Vec<String> {
                findings(plan)
                    .into_iter()
                    .filter(|f| !["network_change_partial", "detached_holder", "detach_not_revoked", "adopted_token_outlives"].iter().any(|c| f.ends_with(c)))
                    .collect()
            };
            prop_assert_eq!(lasting(&second), lasting(&first));
            prop_assert_eq!(&second.deferred, &first.deferred);
            check_converged(&desired, &first, &after, &second)?;
        }

        /// (b) Same inputs, same plan; the order of clusters in the file does not matter.
        #[test]
        fn plans_are_deterministic(case in case()) {
            let desired = case.topology();
            let observed = case.observed(&desired);
            let options = case.options();
            let one = plan(&desired, &observed, &options).expect("plans");
            let two = plan(&desired, &observed, &options).expect("plans");
            prop_assert_eq!(json(&one), json(&two));
            let shuffled = plan(&case.shuffled(), &observed, &options).expect("plans");
            prop_assert_eq!(json(&one), json(&shuffled));
        }

        /// (c) Unmanaged objects are never written or deleted, except an adopt
        /// with `--adopt`; (d) ordering; (e) nothing about deferred clusters.
        #[test]
        fn plans_respect_ownership_order_and_deferral(case in case()) {
            let desired = case.topology();
            let observed = case.observed(&desired);
            let options = case.options();
            let plan = plan(&desired, &observed, &options).expect("plans");
            check_ownership(&observed, &plan, &options)?;
            check_lifecycle(&observed, &plan)?;
            check_order(&observed, &plan)?;
            let deferred: BTreeSet<&str> = plan.deferred.iter().map(|d| d.cluster.as_str()).collect();
            for action in &plan.actions {
                prop_assert!(!deferred.contains(action.cluster.as_str()), "writes to deferred: {:?}", action);
                prop_assert!(
                    !action.peer().is_some_and(|p| deferred.contains(p)),
                    "about a deferred cluster: {:?}", action
                );
            }
        }
    }

    /// The state after apply is the topology's, wherever nothing unmanaged
    /// and no unknown cluster is in the way.
    fn check_converged(desired: &Topology, first: &Plan, after: &Observed, plan: &Plan) -> Result<(), TestCaseError> {
        let written: BTreeSet<(&str, &str)> = first
            .actions
            .iter()
            .filter_map(|a| match &a.kind {
                ActionKind::WriteRemoteSecret { name, .. } => Some((a.cluster.as_str(), name.as_str())),
                _ => None,
            })
            .collect();
        let conflicted: BTreeSet<&str> = plan
            .findings
            .iter()
            .filter(|f| f.kind == FindingKind::Conflict)
            .filter_map(|f| f.cluster.as_deref())
            .collect();
        for cluster in &desired.clusters {
            let Some(facts) = after.facts(&cluster.name) else {
                continue;
            };
            let ns = facts.namespace.as_ref().and_then(|n| n.network.as_deref());
            prop_assert_eq!(ns, Some(cluster.network.as_str()), "network label of {}", cluster.name);
            let managed: BTreeMap<&str, &str> = facts
                .remote_secrets
                .iter()
                .filter(|(_, s)| s.object.managed)
                .map(|(n, s)| (n.as_str(), s.cluster_ids[0].as_str()))
                .collect();
            if cluster.role == Role::Remote {
                // Except for unknown clusters: their detach waits until they are read.
                let kept: Vec<&&str> = managed
                    .values()
                    .filter(|p| !(desired.cluster(p).is_some() && after.facts(p).is_none()))
                    .collect();
                prop_assert!(kept.is_empty(), "remote {} holds secrets for {:?}", cluster.name, kept);
                continue;
            }
            let want: BTreeSet<&str> = desired
                .clusters
                .iter()
                .filter(|p| p.name != cluster.name && after.facts(&p.name).is_some())
                .map(|p| p.name.as_str())
                .collect();
            let have: BTreeSet<&str> = managed.values().copied().filter(|p| want.contains(p)).collect();
            if !conflicted.contains(cluster.name.as_str()) {
                prop_assert_eq!(&have, &want, "secrets of primary {}", cluster.name);
            }
            for (name, peer) in &managed {
                // Secrets for clusters gone from the file go, even while another is unknown.
                prop_assert!(
                    desired.cluster(peer).is_some(),
                    "primary {} still holds {} for {}, which left the mesh",
                    cluster.name,
                    name,
                    peer
                );
                // Those for unknown clusters stay as they were, whatever their form.
                if after.facts(peer).is_some() {
                    prop_assert_eq!(*name, format!("istio-remote-secret-{peer}"));
                }
            }
            // Never a second secret for a cluster id: what this apply wrote
            // shares its id with no other secret.
            for (name, secret) in &facts.remote_secrets {
                if !written.contains(&(cluster.name.as_str(), name.as_str())) {
                    continue;
                }
                let others: Vec<&String> = facts
                    .remote_secrets
                    .iter()
                    .filter(|(n, s)| *n != name && s.cluster_ids.iter().any(|id| secret.cluster_ids.contains(id)))
                    .map(|(n, _)| n)
                    .collect();
                prop_assert!(
                    others.is_empty(),
                    "{} in {} duplicates {:?}",
                    name,
                    cluster.name,
                    others
                );
            }
        }
        Ok(())
    }

    /// Deletes, updates and adopts find their object; creates find none
    /// (after the plan's own earlier deletes).
    fn check_lifecycle(observed: &Observed, plan: &Plan) -> Result<(), TestCaseError> {
        let mut present: BTreeSet<(String, String)> = observed
            .clusters
            .iter()
            .filter_map(|(c, o)| o.facts().map(|f| (c, f)))
            .flat_map(|(c, f)| f.remote_secrets.keys().map(move |n| (c.clone(), n.clone())))
            .collect();
        for action in &plan.actions {
            match &action.kind {
                ActionKind::DeleteRemoteSecret { name, .. } => {
                    let key = (action.cluster.clone(), name.clone());
                    prop_assert!(present.remove(&key), "deletes an absent secret: {:?}", action);
                }
                ActionKind::WriteRemoteSecret { name, mode, .. } => {
                    let key = (action.cluster.clone(), name.clone());
                    let existed = !present.insert(key);
                    prop_assert_eq!(existed, *mode != WriteMode::Create, "{:?}", action);
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn check_ownership(observed: &Observed, plan: &Plan, options: &Options) -> Result<(), TestCaseError> {
        for action in &plan.actions {
            let Some(facts) = observed.facts(&action.cluster) else {
                prop_assert!(false, "action on a cluster not read: {:?}", action);
                unreachable!()
            };
            match &action.kind {
                ActionKind::DeleteRemoteSecret { name, .. } => {
                    let secret = &facts.remote_secrets[name];
                    prop_assert!(secret.object.managed, "deletes unmanaged {}: {:?}", name, action);
                }
                ActionKind::WriteRemoteSecret { name, mode, .. } => match facts.remote_secrets.get(name) {
                    Some(s) if !s.object.managed => prop_assert!(
                        *mode == WriteMode::Adopt && options.adopt,
                        "writes unmanaged {}: {:?}",
                        name,
                        action
                    ),
                    _ => prop_assert!(
                        *mode != WriteMode::Adopt,
                        "adopts a managed or absent secret: {:?}",
                        action
                    ),
                },
                ActionKind::EnsureGateway { .. } | ActionKind::DeleteGateway { .. } => {
                    prop_assert!(
                        facts.gateway.as_ref().is_none_or(|g| g.managed),
                        "touches an unmanaged gateway: {:?}",
                        action
                    );
                }
                ActionKind::EnsureReader { scope, .. } => {
                    let account = facts.account(*scope);
                    let foreign = [&account.cluster_role, &account.cluster_role_binding]
                        .into_iter()
                        .flatten()
                        .any(|o| !o.managed);
                    prop_assert!(
                        !foreign || options.adopt,
                        "writes an unmanaged reader role: {:?}",
                        action
                    );
                }
                ActionKind::SetGatewayNetwork { service, .. } => {
                    prop_assert!(
                        facts.gateway_service.is_some() && facts.east_west.is_some(),
                        "labels a gateway Service {} that was not found: {:?}",
                        service,
                        action
                    );
                }
                ActionKind::RevokeReaderTokens { name, .. } => {
                    let binding = &facts.reader_bindings[name];
                    prop_assert!(
                        binding.object.managed,
                        "revokes an unmanaged binding {}: {:?}",
                        name,
                        action
                    );
                }
                ActionKind::EnsureIstiodExposure { .. } | ActionKind::DeleteIstiodExposure { .. } => {
                    prop_assert!(
                        [&facts.istiod_gateway, &facts.istiod_virtual_service]
                            .into_iter()
                            .flatten()
                            .all(|o| o.managed),
                        "touches an unmanaged istiod exposure: {:?}",
                        action
                    );
                }
                ActionKind::WriteCaCerts { .. } => {
                    prop_assert!(
                        facts.ca_certs.as_ref().is_none_or(|c| c.object.managed),
                        "writes over an unmanaged cacerts: {:?}",
                        action
                    );
                }
                ActionKind::SetK8sGatewayNetwork { gateway, .. } => {
                    prop_assert!(
                        facts.k8s_gateways.as_ref().is_some_and(|g| g.contains_key(gateway)),
                        "labels a Gateway {} that was not found: {:?}",
                        gateway,
                        action
                    );
                }
                ActionKind::EnsureAmbientGateway { .. } => {
                    prop_assert!(
                        facts
                            .k8s_gateways
                            .as_ref()
                            .and_then(|g| g.get(meshform::objects::AMBIENT_EAST_WEST_GATEWAY))
                            .is_none_or(|g| g.object.managed),
                        "writes over an unmanaged east-west Gateway: {:?}",
                        action
                    );
                }
                ActionKind::DeleteAmbientGateway { .. } => {
                    let gateway = facts
                        .k8s_gateways
                        .as_ref()
                        .and_then(|g| g.get(meshform::objects::AMBIENT_EAST_WEST_GATEWAY));
                    prop_assert!(
                        gateway
                            .is_some_and(|g| g.object.managed && g.class == meshform::objects::EAST_WEST_GATEWAY_CLASS),
                        "deletes an east-west Gateway not meshform's: {:?}",
                        action
                    );
                }
                ActionKind::SetNetwork { .. }
                | ActionKind::RestartWorkloads { .. }
                | ActionKind::RestartIstiod { .. } => {}
            }
        }
        Ok(())
    }

    fn check_order(observed: &Observed, plan: &Plan) -> Result<(), TestCaseError> {
        let at = |pred: &dyn Fn(&meshform::plan::Action) -> bool| -> Vec<usize> {
            plan.actions
                .iter()
                .enumerate()
                .filter(|(_, a)| pred(a))
                .map(|(i, _)| i)
                .collect()
        };
        let is_delete = |a: &meshform::plan::Action| matches!(a.kind, ActionKind::DeleteRemoteSecret { .. });
        let is_create = |a: &meshform::plan::Action| {
            matches!(
                a.kind,
                ActionKind::WriteRemoteSecret {
                    mode: WriteMode::Create,
                    ..
                }
            )
        };
        for (i, a) in plan.actions.iter().enumerate() {
            if !is_delete(a) {
                continue;
            }
            for (j, b) in plan.actions.iter().enumerate() {
                if is_create(b) && b.cluster == a.cluster && b.peer() == a.peer() {
                    prop_assert!(i < j, "delete after create for {} / {:?}", a.cluster, a.peer());
                }
            }
        }
        // A cluster is attached when some primary holds meshform's secret for it.
        let attached = |cluster: &str| {
            observed.clusters.values().filter_map(|c| c.facts()).any(|f| {
                f.remote_secrets
                    .values()
                    .any(|s| s.object.managed && s.cluster_ids.iter().any(|id| id == cluster))
            })
        };
        for action in &plan.actions {
            let ActionKind::SetNetwork {
                previous: Some(previous),
                network,
                ..
            } = &action.kind
            else {
                continue;
            };
            // Not a relabel: a remote's control plane named beside its label.
            if !attached(&action.cluster) || previous == network {
                continue;
            }
            let cluster = action.cluster.as_str();
            // Never a relabel alone.
            let change = Change::NetworkChange {
                cluster: cluster.to_string(),
                from: previous.clone(),
                to: network.clone(),
            };
            prop_assert!(
                plan.changes.contains(&change),
                "relabel of attached {} without a network change",
                cluster
            );
            let set = at(&|a| a.cluster == cluster && matches!(a.kind, ActionKind::SetNetwork { .. }));
            let detaches = at(&|a| is_delete(a) && a.peer() == Some(cluster));
            let attaches = at(&|a| is_create(a) && a.peer() == Some(cluster));
            prop_assert!(!detaches.is_empty(), "network change of {} without detach", cluster);
            prop_assert!(
                detaches.iter().all(|&d| d < set[0]),
                "detach after relabel of {}",
                cluster
            );
            prop_assert!(
                attaches.iter().all(|&w| w > set[0]),
                "re-attach before relabel of {}",
                cluster
            );
            // Every reachable holder of a managed secret for it is detached.
            for (holder, obs) in &observed.clusters {
                let Some(facts) = obs.facts() else { continue };
                for secret in facts.remote_secrets.values() {
                    if secret.object.managed && secret.cluster_ids.iter().any(|id| id == cluster) {
                        prop_assert!(
                            plan.actions
                                .iter()
                                .any(|a| is_delete(a) && &a.cluster == holder && a.peer() == Some(cluster)),
                            "{} keeps its secret for re-networked {}",
                            holder,
                            cluster
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Network changes at the edges

#[test]
fn attached_cluster_without_a_network_label_is_a_network_change_from_the_default_network() {
    // Istio puts an unlabelled cluster on its default network: giving it a
    // network is a move like any other, never a relabel alone.
    let t = three_primaries();
    let mut observed = after_converging(&t, &t);
    facts_mut(&mut observed, "c").namespace.as_mut().unwrap().network = None;
    let plan = plan_ok(&t, &observed);
    assert_eq!(
        actions(&plan),
        lines(&[
            "detach a delete_remote_secret c",
            "detach b delete_remote_secret c",
            "network c set_network none->c",
            "attach a write_remote_secret/create c",
            "attach b write_remote_secret/create c",
            "update c restart_workloads/shown",
        ])
    );
    assert_eq!(
        plan.changes,
        vec![Change::NetworkChange {
            cluster: "c".into(),
            from: String::new(),
            to: "c".into()
        }]
    );
    assert!(
        reasons(&plan)[5].contains("keep the default network"),
        "{}",
        reasons(&plan)[5]
    );
}

#[test]
fn network_change_with_an_unreadable_primary_warns_that_it_keeps_the_old_view() {
    let before = mesh_topology(&[
        "name = \"a\"\nnetwork = \"n1\"",
        "name = \"b\"\nnetwork = \"n1\"",
        "name = \"c\"\nnetwork = \"n1\"",
    ]);
    let after = mesh_topology(&[
        "name = \"a\"\nnetwork = \"n1\"",
        "name = \"b\"\nnetwork = \"n1\"",
        "name = \"c\"\nnetwork = \"n2\"",
    ]);
    let mut observed = after_converging(&before, &after);
    make_unknown(&mut observed, "b");
    let options = Options {
        skip_unreachable: true,
        ..Options::default()
    };
    let plan = plan_with(&after, &observed, &options);
    let warning = plan
        .findings
        .iter()
        .find(|f| f.code == "meshform::plan::network_change_partial")
        .expect("a warning");
    assert_eq!(warning.cluster.as_deref(), Some("c"));
    assert!(warning.message.contains("b could not be read"), "{}", warning.message);
    // What can be done is done; b's secret for c is left for a later run.
    assert!(actions(&plan).contains(&"detach a delete_remote_secret c".to_string()));
    assert!(!actions(&plan).iter().any(|a| a.starts_with("detach b")));
}

#[test]
fn targeting_a_primary_takes_in_the_whole_network_change() {
    // Detach and re-attach in a alone, without the relabel in c, would churn
    // for nothing: a network change is all of its steps or none.
    let (t, observed) = network_change_case();
    let options = Options {
        targets: vec!["a".to_string()],
        ..Options::default()
    };
    let plan = plan_with(&t, &observed, &options);
    assert_eq!(
        actions(&plan),
        lines(&[
            "detach a delete_remote_secret c",
            "detach b delete_remote_secret c",
            "network c set_network n3->n2",
            "network c set_gateway_network n3->n2",
            "attach a write_remote_secret/create c",
            "attach b write_remote_secret/create c",
            "update c restart_workloads/shown",
        ])
    );
}

// Readiness beyond meshform's own objects (issue 13): what an Istio install
// must get right for traffic to flow, judged as Istio judges it.

fn two_networks() -> (meshform::topology::Topology, Observed) {
    let t = mesh_topology(&["name = \"a\"\nnetwork = \"n1\"", "name = \"b\"\nnetwork = \"n2\""]);
    let observed = converge(&t, &fresh(&t));
    (t, observed)
}

#[test]
fn a_correct_install_is_converged_with_no_findings() {
    let (t, observed) = two_networks();
    let plan = plan_with(&t, &observed, &Options::default());
    assert!(plan.is_empty(), "{:?}", actions(&plan));
    assert_eq!(findings(&plan), Vec::<String>::new());
}

#[test]
fn an_unlabelled_gateway_service_is_labelled_with_its_network_and_only_that() {
    let (t, mut observed) = two_networks();
    facts_mut(&mut observed, "b").east_west.as_mut().unwrap().network = None;
    let plan = plan_with(&t, &observed, &Options::default());
    assert_eq!(actions(&plan), lines(&["network b set_gateway_network none->n2"]));
    assert_eq!(findings(&plan), Vec::<String>::new());
    assert_eq!(
        plan.actions[0].kind,
        ActionKind::SetGatewayNetwork {
            service: "istio-eastwestgateway".to_string(),
            network: "n2".to_string(),
            previous: None,
            force: false,
        }
    );
    // On one network no gateway is needed, and its label is not meshform's business.
    let flat = mesh_topology(&["name = \"a\"\nnetwork = \"n\"", "name = \"b\"\nnetwork = \"n\""]);
    let mut observed = converge(&flat, &fresh(&flat));
    facts_mut(&mut observed, "b").east_west.as_mut().unwrap().network = None;
    assert!(plan_with(&flat, &observed, &Options::default()).is_empty());
}

#[test]
fn a_gateway_service_without_the_port_istiod_uses_blocks() {
    let (t, mut observed) = two_networks();
    facts_mut(&mut observed, "b").east_west.as_mut().unwrap().ports = vec![443];
    let plan = plan_with(&t, &observed, &Options::default());
    assert_eq!(findings(&plan), lines(&["blocker b gateway_port_missing"]));
    assert!(plan.findings[0].message.contains("istio-system/istio-eastwestgateway"));
    // The HBONE port is enough for istiod.
    facts_mut(&mut observed, "b").east_west.as_mut().unwrap().ports = vec![15008];
    assert_eq!(
        findings(&plan_with(&t, &observed, &Options::default())),
        Vec::<String>::new()
    );
    // A port label moves istiod's port away from the one the Gateway listens on.
    let ew = facts_mut(&mut observed, "b").east_west.as_mut().unwrap();
    ew.ports = vec![15443, 16443];
    ew.port_label = Some("16443".to_string());
    let plan = plan_with(&t, &observed, &Options::default());
    assert_eq!(findings(&plan), lines(&["blocker b gateway_port_mismatch"]));
    assert!(
        plan.findings[0]
            .help
            .as_deref()
            .unwrap()
            .contains("gateway_port = 16443")
    );
}

#[test]
fn a_pending_load_balancer_blocks_naming_the_service() {
    let (t, mut observed) = two_networks();
    facts_mut(&mut observed, "a")
        .east_west
        .as_mut()
        .unwrap()
        .addresses
        .clear();
    let plan = plan_with(&t, &observed, &Options::default());
    assert_eq!(findings(&plan), lines(&["blocker a gateway_address_missing"]));
    assert!(plan.findings[0].message.contains("istio-system/istio-eastwestgateway"));
    assert!(plan.findings[0].message.contains("pending"));
    // NodePort with Istio's node selector annotation: istiod uses node addresses.
    let ew = facts_mut(&mut observed, "a").east_west.as_mut().unwrap();
    ew.service_type = Some("NodePort".to_string());
    ew.node_selector = true;
    assert_eq!(
        findings(&plan_with(&t, &observed, &Options::default())),
        Vec::<String>::new()
    );
}

#[test]
fn an_install_with_another_identity_blocks_with_the_setting_to_fix() {
    let (t, mut observed) = two_networks();
    let install = facts_mut(&mut observed, "a").installs.get_mut("default").unwrap();
    install.cluster_id = None; // the chart's default, `Kubernetes`
    install.injected_cluster_id = None;
    install.injected_network = Some("n2".to_string());
    install.mesh_id = Some("other".to_string());
    let plan = plan_with(&t, &observed, &Options::default());
    assert_eq!(
        findings(&plan),
        lines(&[
            "blocker a injection_network",
            "blocker a istiod_cluster_id",
            "blocker a mesh_id"
        ])
    );
    let text = |code: &str| {
        let f = plan.findings.iter().find(|f| f.code.ends_with(code)).unwrap();
        format!("{} / {}", f.message, f.help.as_deref().unwrap())
    };
    assert!(
        text("istiod_cluster_id").contains("\"Kubernetes\""),
        "{}",
        text("istiod_cluster_id")
    );
    assert!(text("istiod_cluster_id").contains("values.global.multiCluster.clusterName=a"));
    assert!(text("injection_network").contains("values.global.network=n1"));
    assert!(text("mesh_id").contains("values.global.meshID=mesh1"));
}

#[test]
fn a_revisioned_install_is_judged_too() {
    let (t, mut observed) = two_networks();
    let installs = &mut facts_mut(&mut observed, "b").installs;
    let mut canary = installs["default"].clone();
    canary.istiod = Some("istiod-canary".to_string());
    canary.cluster_id = Some("Kubernetes".to_string());
    installs.insert("canary".to_string(), canary);
    let plan = plan_with(&t, &observed, &Options::default());
    assert_eq!(findings(&plan), lines(&["blocker b istiod_cluster_id"]));
    assert!(plan.findings[0].message.contains("istiod-canary"));
    assert!(
        plan.findings[0]
            .help
            .as_deref()
            .unwrap()
            .contains("--set revision=canary")
    );
}

#[test]
fn a_cluster_without_istio_is_a_warning_not_a_blocker() {
    let (t, mut observed) = two_networks();
    facts_mut(&mut observed, "b").installs.clear();
    let plan = plan_with(&t, &observed, &Options::default());
    assert_eq!(findings(&plan), lines(&["warning b istio_not_installed"]));
    assert_eq!(plan.blockers().count(), 0);
}

#[test]
fn roots_of_trust_that_share_no_certificate_block_but_a_rotation_does_not() {
    let t = mesh_topology(&["name = \"a\"", "name = \"b\"", "name = \"c\""]);
    let mut observed = converge(&t, &fresh(&t));
    let roots = |prints: &[&str]| Some(prints.iter().map(|p| p.repeat(16)).collect::<Vec<_>>());
    // b rotates from the old root to a new one and holds both: still one group.
    facts_mut(&mut observed, "a").root_certs = roots(&["aa"]);
    facts_mut(&mut observed, "b").root_certs = roots(&["aa", "bb"]);
    facts_mut(&mut observed, "c").root_certs = roots(&["bb"]);
    assert_eq!(
        findings(&plan_with(&t, &observed, &Options::default())),
        Vec::<String>::new()
    );
    // c has its own self-signed root: two groups.
    facts_mut(&mut observed, "b").root_certs = roots(&["aa"]);
    facts_mut(&mut observed, "c").root_certs = roots(&["cc"]);
    let plan = plan_with(&t, &observed, &Options::default());
    assert_eq!(findings(&plan), lines(&["blocker - root_of_trust"]));
    let message = &plan.findings[0].message;
    assert!(message.contains("a, b (root sha256:aaaaaaaaaaaaaaaa)"), "{message}");
    assert!(message.contains("c (root sha256:cccccccccccccccc)"), "{message}");
}

/// Only a remote's control plane holds a token of the remote's
/// control-plane account, which alone carries what istiod writes there; the
/// reader account every other primary's token comes from is read-only on a
/// remote too (issue 29 item 9).
#[test]
fn only_a_remotes_control_plane_holds_a_token_that_writes_there() {
    let topology = mesh_topology(&[
        "name = \"a\"",
        "name = \"b\"\nrole = \"remote\"\ncontrol_plane = \"a\"",
        "name = \"c\"",
    ]);
    let plan = plan_ok(&topology, &fresh(&topology));
    let scopes: Vec<(&str, ReaderScope)> = plan
        .actions
        .iter()
        .filter_map(|a| match &a.kind {
            ActionKind::EnsureReader { scope, .. } => Some((a.cluster.as_str(), *scope)),
            _ => None,
        })
        .collect();
    assert_eq!(
        scopes,
        [
            ("a", ReaderScope::Read),
            ("b", ReaderScope::Read),
            ("b", ReaderScope::ControlPlane),
            ("c", ReaderScope::Read)
        ]
    );
    let tokens: Vec<(&str, &str, ReaderScope)> = plan
        .actions
        .iter()
        .filter_map(|a| match &a.kind {
            ActionKind::WriteRemoteSecret { peer, account, .. } => Some((a.cluster.as_str(), peer.as_str(), *account)),
            _ => None,
        })
        .collect();
    assert_eq!(
        tokens,
        [
            ("a", "b", ReaderScope::ControlPlane),
            ("a", "c", ReaderScope::Read),
            ("c", "a", ReaderScope::Read),
            ("c", "b", ReaderScope::Read)
        ]
    );
    // Converged (tokens read back as issued), and stays so.
    let mut observed = converge(&topology, &fresh(&topology));
    meshform::observe::synthetic::as_read(&mut observed, &topology);
    assert_eq!(actions(&plan_ok(&topology, &observed)), Vec::<String>::new());

    // A token of the wrong account is replaced by one of the right one.
    let reader = |o: &mut Observed| facts_mut(o, "b").reader.service_account.as_ref().unwrap().uid.clone();
    let mut wrong = observed.clone();
    let uid = reader(&mut wrong);
    facts_mut(&mut wrong, "c")
        .remote_secrets
        .get_mut("istio-remote-secret-b")
        .unwrap()
        .token_account_uid = facts_mut(&mut observed, "b")
        .control_plane_account
        .service_account
        .as_ref()
        .map(|a| a.uid.as_str().into());
    let plan = plan_ok(&topology, &wrong);
    assert_eq!(actions(&plan), lines(&["update c write_remote_secret/rotate b"]));
    assert!(
        plan.actions[0].reason.contains("c is not b's control plane"),
        "{}",
        plan.actions[0].reason
    );
    // The other way round is the layout the next test migrates; a token of
    // an account that is gone is revoked, as before.
    facts_mut(&mut wrong, "c")
        .remote_secrets
        .get_mut("istio-remote-secret-b")
        .unwrap()
        .token_account_uid = Some(uid.into());
    assert_eq!(actions(&plan_ok(&topology, &wrong)), Vec::<String>::new());

    // b made a primary: a's token for it moves to the reader account.
    let back = mesh_topology(&["name = \"a\"", "name = \"b\"", "name = \"c\""]);
    let plan = plan_ok(&back, &observed);
    let rotation = plan
        .actions
        .iter()
        .find(|a| a.cluster == "a" && a.peer() == Some("b"))
        .expect("a's secret for b is written");
    assert!(
        matches!(
            rotation.kind,
            ActionKind::WriteRemoteSecret {
                account: ReaderScope::Read,
                mode: WriteMode::Rotate,
                ..
            }
        ),
        "{rotation:?}"
    );
    assert!(
        rotation.reason.contains("a is not b's control plane"),
        "{}",
        rotation.reason
    );
}

/// A remote attached before its control plane had an account of its own
/// (its reader role carried the control plane's writes, and every
/// primary's token came from it) moves on the next apply: the control
/// plane's token is replaced by one of its own account while the reader
/// keeps the writes, so istiod is never refused; the apply after makes the
/// reader read-only and revokes the replaced token.
#[test]
fn a_remote_with_one_shared_reader_moves_its_control_plane_to_its_own_account() {
    let t = mesh_topology(&[
        "name = \"a\"",
        "name = \"b\"\nrole = \"remote\"\ncontrol_plane = \"a\"",
        "name = \"c\"",
    ]);
    let mut observed = converge(&t, &fresh(&t));
    meshform::observe::synthetic::as_read(&mut observed, &t);
    // The layout meshform wrote before: no control-plane account, the
    // reader's role with the writes, a's token issued to the reader.
    let shared =
        meshform::plan::hashes::shared_remote_reader_hash("istio-system", meshform::topology::TokenMode::Request);
    let writes = meshform::objects::rules_sha256(&meshform::objects::reader_rules(ReaderScope::ControlPlane));
    let b = facts_mut(&mut observed, "b");
    b.control_plane_account = Default::default();
    let role = b.reader.cluster_role.as_mut().unwrap();
    role.spec_hash = Some(shared.as_str().into());
    role.content_sha256 = Some(writes);
    b.reader.cluster_role_binding.as_mut().unwrap().spec_hash = Some(shared.into());
    let reader_uid = b.reader.service_account.as_ref().unwrap().uid.clone();
    let holder = b.reader_bindings.keys().find(|k| k.contains("-a-")).unwrap().clone();
    let mut binding = b.reader_bindings.remove(&holder).unwrap();
    binding.object.uid = "old-a-b".into();
    b.reader_bindings
        .insert("meshform-reader-binding-a-old".into(), binding);
    let secret = facts_mut(&mut observed, "a")
        .remote_secrets
        .get_mut("istio-remote-secret-b")
        .unwrap();
    secret.token_account_uid = Some(reader_uid.into());
    secret.token_binding_uid = Some("old-a-b".into());

    let plan = plan_ok(&t, &observed);
    assert_eq!(
        actions(&plan),
        lines(&[
            "network b ensure_reader/control_plane",
            "update a write_remote_secret/rotate b"
        ])
    );
    assert!(
        matches!(
            plan.actions[0].kind,
            ActionKind::EnsureReader {
                scope: ReaderScope::ControlPlane,
                update: false,
                ..
            }
        ),
        "{:?}",
        plan.actions[0]
    );
    assert!(
        matches!(
            plan.actions[1].kind,
            ActionKind::WriteRemoteSecret {
                account: ReaderScope::ControlPlane,
                ..
            }
        ),
        "{:?}",
        plan.actions[1]
    );
    assert!(
        plan.actions[1].reason.contains("through a token of the reader account")
            && plan.actions[1].reason.contains("meshform-control-plane"),
        "{}",
        plan.actions[1].reason
    );

    // The next apply: the reader becomes read-only, the replaced token goes.
    let mut after = meshform::plan::simulate::simulate(&observed, &plan, TOKEN_LIFETIME);
    meshform::observe::synthetic::as_read(&mut after, &t);
    let options = Options {
        revoke_grace_seconds: 0,
        ..Options::default()
    };
    let next = plan_with(&t, &after, &options);
    assert_eq!(
        actions(&next),
        lines(&["network b ensure_reader", "update b revoke_reader_tokens/replaced a"])
    );
    assert!(
        matches!(
            next.actions[0].kind,
            ActionKind::EnsureReader {
                scope: ReaderScope::Read,
                update: true,
                ..
            }
        ),
        "{:?}",
        next.actions[0]
    );
    assert!(
        next.actions[0].reason.contains("becomes read-only"),
        "{}",
        next.actions[0].reason
    );
    let mut done = meshform::plan::simulate::simulate(&after, &next, TOKEN_LIFETIME);
    meshform::observe::synthetic::as_read(&mut done, &t);
    assert_eq!(actions(&plan_with(&t, &done, &options)), Vec::<String>::new());
}

/// A remote on another network than its control plane reaches istiod only
/// through that primary's east-west gateway: meshform exposes istiod there
/// (Istio's `expose-istiod.yaml`) while a remote needs it, and removes its
/// own objects after.
#[test]
fn a_remote_on_another_network_gets_istiod_exposed_on_its_control_planes_gateway() {
    let across = mesh_topology(&[
        "name = \"a\"\nnetwork = \"n1\"",
        "name = \"b\"\nnetwork = \"n2\"\nrole = \"remote\"\ncontrol_plane = \"a\"",
        "name = \"c\"\nnetwork = \"n2\"",
    ]);
    let plan = plan_ok(&across, &fresh(&across));
    let exposures: Vec<_> = plan
        .actions
        .iter()
        .filter(|a| matches!(a.kind, ActionKind::EnsureIstiodExposure { .. }))
        .collect();
    assert_eq!(exposures.len(), 1, "{:#?}", plan.actions);
    assert_eq!(exposures[0].cluster, "a");
    assert_eq!(exposures[0].phase, meshform::plan::Phase::Network);
    assert!(exposures[0].reason.contains("remote b"), "{}", exposures[0].reason);
    assert_eq!(
        exposures[0].object("istio-system"),
        "Gateway and VirtualService istio-system/istiod-gateway, istiod-vs"
    );

    // Converged, it stays; edited by hand, it is written back.
    let mut observed = converge(&across, &fresh(&across));
    assert!(plan_ok(&across, &observed).actions.is_empty());
    facts_mut(&mut observed, "a")
        .istiod_virtual_service
        .as_mut()
        .unwrap()
        .content_sha256 = Some("edited".to_string());
    let plan = plan_ok(&across, &observed);
    assert_eq!(actions(&plan), ["network a ensure_istiod_exposure"]);
    assert!(
        plan.actions[0].reason.contains("changed in the cluster"),
        "{}",
        plan.actions[0].reason
    );

    // The remote joins its control plane's network: the exposure stays
    // while its install still reaches istiod through a's gateway (issue 29),
    // and goes once it is reinstalled to reach istiod another way.
    let mut observed = converge(&across, &fresh(&across));
    let flat = mesh_topology(&[
        "name = \"a\"\nnetwork = \"n1\"",
        "name = \"b\"\nnetwork = \"n1\"\nrole = \"remote\"\ncontrol_plane = \"a\"",
        "name = \"c\"\nnetwork = \"n2\"",
    ]);
    assert!(
        !actions(&plan_ok(&flat, &observed))
            .iter()
            .any(|a| a.contains("istiod_exposure")),
        "{:?}",
        actions(&plan_ok(&flat, &observed))
    );
    facts_mut(&mut observed, "b")
        .installs
        .get_mut("default")
        .unwrap()
        .remote_pilot_address = Some("istiod.a.example.com".into());
    let plan = plan_ok(&flat, &observed);
    let removals: Vec<_> = plan
        .actions
        .iter()
        .filter(|a| matches!(a.kind, ActionKind::DeleteIstiodExposure { .. }))
        .map(|a| a.cluster.as_str())
        .collect();
    assert_eq!(removals, ["a"]);
    // A remote on its control plane's network needs none.
    assert!(
        !plan_ok(&flat, &fresh(&flat))
            .actions
            .iter()
            .any(|a| matches!(a.kind, ActionKind::EnsureIstiodExposure { .. }))
    );
}

/// Objects of those names meshform does not own are used as they are, and
/// never removed; a revision's istiod gets the route to `istiod-<rev>`.
#[test]
fn istiod_exposure_leaves_foreign_objects_alone_and_follows_the_revision() {
    let across = mesh_topology(&[
        "name = \"a\"\nnetwork = \"n1\"",
        "name = \"b\"\nnetwork = \"n2\"\nrole = \"remote\"",
    ]);
    let mut observed = fresh(&across);
    facts_mut(&mut observed, "a").istiod_gateway = Some(unmanaged("by-hand"));
    let plan = plan_ok(&across, &observed);
    assert!(
        !actions(&plan).iter().any(|a| a.contains("istiod_exposure")),
        "{:?}",
        actions(&plan)
    );
    assert!(
        findings(&plan).contains(&"warning a istiod_exposure_unmanaged".to_string()),
        "{:?}",
        findings(&plan)
    );
    // Not needed any more: still not meshform's to delete.
    let alone = mesh_topology(&["name = \"a\"\nnetwork = \"n1\""]);
    let mut observed = converge(&alone, &fresh(&alone));
    facts_mut(&mut observed, "a").istiod_gateway = Some(unmanaged("by-hand"));
    assert!(plan_ok(&alone, &observed).actions.is_empty());

    let mut observed = fresh(&across);
    let install = facts_mut(&mut observed, "a")
        .installs
        .remove("default")
        .expect("a default install");
    facts_mut(&mut observed, "a").installs.insert(
        "1-24".to_string(),
        InstallFacts {
            istiod: Some("istiod-1-24".to_string()),
            ..install
        },
    );
    let plan = plan_ok(&across, &observed);
    let revision = plan.actions.iter().find_map(|a| match &a.kind {
        ActionKind::EnsureIstiodExposure { revision, .. } => Some(revision.clone()),
        _ => None,
    });
    assert_eq!(revision, Some(Some("1-24".to_string())));
}

/// Issue 29, item 3: a remote's install keeps reaching the istiod it was
/// installed against, whatever mesh.toml says now. Moving its control plane
/// to another primary exposes the new one, names it in the remote's
/// namespace, and keeps the old one's exposure (with a warning saying how
/// to finish) until the remote is reinstalled; only then does it go.
#[test]
fn a_remotes_control_plane_moves_without_leaving_it_unserved() {
    let before = mesh_topology(&[
        "name = \"a\"\nnetwork = \"n1\"",
        "name = \"b\"\nnetwork = \"n3\"",
        "name = \"r\"\nnetwork = \"n2\"\nrole = \"remote\"\ncontrol_plane = \"a\"",
    ]);
    let after = mesh_topology(&[
        "name = \"a\"\nnetwork = \"n1\"",
        "name = \"b\"\nnetwork = \"n3\"",
        "name = \"r\"\nnetwork = \"n2\"\nrole = \"remote\"\ncontrol_plane = \"b\"",
    ]);
    let mut observed = converge(&before, &fresh(&before));
    assert_eq!(
        facts_mut(&mut observed, "r").installs["default"]
            .remote_pilot_address
            .as_deref(),
        Some("a.gateways.example.com")
    );
    let plan = plan_ok(&after, &observed);
    let exposure: Vec<String> = actions(&plan)
        .into_iter()
        .filter(|a| a.contains("istiod_exposure"))
        .collect();
    assert_eq!(exposure, ["network b ensure_istiod_exposure"], "{:?}", actions(&plan));
    assert!(
        actions(&plan).contains(&"network r set_network n2->n2".to_string()),
        "{:?}",
        actions(&plan)
    );
    assert_eq!(findings(&plan), ["warning r remote_pilot_previous"]);
    let finding = &plan.findings[0];
    assert!(
        finding.message.contains("the east-west gateway of a"),
        "{}",
        finding.message
    );
    assert!(
        finding
            .help
            .as_deref()
            .unwrap()
            .contains("values.global.remotePilotAddress=b.gateways.example.com"),
        "{finding:?}"
    );
    // a's exposure edited by hand meanwhile: repaired, since r uses it.
    let mut applied = simulate_plan(&observed, &plan);
    facts_mut(&mut applied, "a")
        .istiod_gateway
        .as_mut()
        .unwrap()
        .content_sha256 = Some("edited".into());
    let repair = plan_ok(&after, &applied);
    assert_eq!(actions(&repair), ["network a ensure_istiod_exposure"]);
    assert!(
        repair.actions[0].reason.contains("changed in the cluster"),
        "{}",
        repair.actions[0].reason
    );
    // Reinstalled for b: a's exposure goes, and nothing is left to warn about.
    let mut applied = simulate_plan(&observed, &plan);
    facts_mut(&mut applied, "r")
        .installs
        .get_mut("default")
        .unwrap()
        .remote_pilot_address = Some("b.gateways.example.com".into());
    let plan = plan_ok(&after, &applied);
    assert_eq!(actions(&plan), ["network a delete_istiod_exposure"]);
    assert_eq!(findings(&plan), Vec::<String>::new());
}

/// Issue 29, item 3: the remote could not be read, so whether it still
/// goes through a primary's exposure is unknown: the exposure stays.
#[test]
fn an_exposure_is_not_removed_on_account_of_a_remote_that_could_not_be_read() {
    let across = mesh_topology(&[
        "name = \"a\"\nnetwork = \"n1\"",
        "name = \"r\"\nnetwork = \"n2\"\nrole = \"remote\"\ncontrol_plane = \"a\"",
    ]);
    let flat = mesh_topology(&[
        "name = \"a\"\nnetwork = \"n1\"",
        "name = \"r\"\nnetwork = \"n1\"\nrole = \"remote\"\ncontrol_plane = \"a\"",
    ]);
    let mut observed = converge(&across, &fresh(&across));
    make_unknown(&mut observed, "r");
    let options = Options {
        skip_unreachable: true,
        ..Options::default()
    };
    let plan = plan_with(&flat, &observed, &options);
    assert!(
        !actions(&plan).iter().any(|a| a.contains("istiod_exposure")),
        "{:?}",
        actions(&plan)
    );
}

fn simulate_plan(observed: &Observed, plan: &meshform::plan::Plan) -> Observed {
    meshform::plan::simulate::simulate(observed, plan, TOKEN_LIFETIME)
}

/// The lines of the actions apply runs, and of those it holds back with why.
fn held(plan: &meshform::plan::Plan) -> (Vec<String>, Vec<String>) {
    let holds = plan.holds();
    let (mut run, mut held) = (Vec::new(), Vec::new());
    for action in &plan.actions {
        match holds.of(action) {
            None => run.push(action_line(action)),
            Some(hold) => held.push(format!("{} ({hold})", action_line(action))),
        }
    }
    (run, held)
}

/// Issue 29, item 6: one cluster's blocker holds back what touches that
/// cluster; every other pair's tokens still rotate.
#[test]
fn a_blocker_in_one_cluster_holds_back_only_its_pairs() {
    let t = mesh_topology(&["name = \"a\"", "name = \"b\"", "name = \"c\""]);
    let mut observed = converge(&t, &fresh(&t));
    let rotate = Options {
        rotate_tokens: true,
        ..Options::default()
    };
    // Nothing blocks: nothing is held.
    let (run, held_back) = held(&plan_with(&t, &observed, &rotate));
    assert_eq!(run.len(), 6);
    assert!(held_back.is_empty());
    // b's load balancer is pending.
    facts_mut(&mut observed, "b")
        .east_west
        .as_mut()
        .unwrap()
        .addresses
        .clear();
    let plan = plan_with(&t, &observed, &rotate);
    assert_eq!(findings(&plan), ["blocker b gateway_address_missing"]);
    let (run, held_back) = held(&plan);
    assert_eq!(
        run,
        [
            "update a write_remote_secret/rotate c",
            "update c write_remote_secret/rotate a"
        ]
    );
    assert_eq!(held_back.len(), 4, "{held_back:#?}");
    for line in &held_back {
        assert!(line.contains(" b") || line.starts_with("update b"), "{line}");
        assert!(
            line.ends_with("(held back: blocker gateway_address_missing concerns b; fix it and apply again)"),
            "{line}"
        );
    }
    assert_eq!(meshform::apply::preflight(&plan, false), Ok(()));
}

/// Issue 29, item 6: while blockers stand, only maintenance runs: changes
/// of the mesh's shape (an attach, a detach, a relabel, a delete) wait,
/// even in clusters no blocker concerns; replaced tokens are still revoked.
#[test]
fn while_blockers_stand_only_maintenance_runs() {
    let before = mesh_topology(&["name = \"a\"", "name = \"b\"", "name = \"c\""]);
    let after = mesh_topology(&["name = \"a\"", "name = \"b\"", "name = \"c\"", "name = \"d\""]);
    let mut observed = converge(&before, &fresh(&before));
    let d = fresh(&after).clusters["d"].clone();
    observed.clusters.insert("d".to_string(), d);
    facts_mut(&mut observed, "b")
        .east_west
        .as_mut()
        .unwrap()
        .addresses
        .clear();
    let rotate = Options {
        rotate_tokens: true,
        ..Options::default()
    };
    let plan = plan_with(&after, &observed, &rotate);
    let (run, held_back) = held(&plan);
    assert_eq!(
        run,
        [
            "update a write_remote_secret/rotate c",
            "update c write_remote_secret/rotate a"
        ]
    );
    // d joins: every action of it waits, as a change, not as maintenance.
    assert!(
        held_back
            .iter()
            .filter(|l| l.contains(" d") && !l.contains(" b"))
            .all(|l| l.contains("the plan has 1 blocker(s)")),
        "{held_back:#?}"
    );
    assert!(
        held_back
            .iter()
            .any(|l| l.starts_with("attach a write_remote_secret/create d")),
        "{held_back:#?}"
    );
    // With every write held, apply refuses as before.
    let plan = plan_with(&after, &observed, &Options::default());
    assert!(held(&plan).0.is_empty());
    assert_eq!(
        meshform::apply::preflight(&plan, false),
        Err(meshform::apply::Refusal::Blocked(1))
    );
}

/// The pure rule, action kind by action kind: what is maintenance.
#[test]
fn maintenance_is_writes_of_meshforms_own_objects_and_revocations_of_replaced_tokens() {
    let t = mesh_topology(&["name = \"a\"\nnetwork = \"n1\"", "name = \"b\"\nnetwork = \"n2\""]);
    let plan = plan_ok(&t, &fresh(&t));
    let maintains: Vec<(String, bool)> = plan.actions.iter().map(|a| (action_line(a), a.maintains())).collect();
    assert_eq!(
        maintains,
        [
            ("network a set_network none->n1".to_string(), true),
            ("network a ensure_reader".to_string(), true),
            ("network a ensure_gateway/create".to_string(), true),
            ("network b set_network none->n2".to_string(), true),
            ("network b ensure_reader".to_string(), true),
            ("network b ensure_gateway/create".to_string(), true),
            ("attach a write_remote_secret/create b".to_string(), true),
            ("attach b write_remote_secret/create a".to_string(), true),
        ]
    );
    // Yet an attach is a change: with a blocker about c only, nothing of
    // a's and b's attach runs either.
    let t = mesh_topology(&["name = \"a\"", "name = \"b\"", "name = \"c\""]);
    let mut observed = fresh(&t);
    facts_mut(&mut observed, "c").root_certs = Some(vec!["c".repeat(64)]);
    let plan = plan_ok(&t, &observed);
    assert_eq!(plan.findings[0].concerns, ["c"]);
    let (run, held_back) = held(&plan);
    assert!(run.is_empty(), "{run:?}");
    assert!(
        held_back.contains(&"network a ensure_reader (held back: the plan has 1 blocker(s), and while it does apply only keeps the mesh alive (token rotation, revocation of replaced tokens, repairs of meshform's objects))".to_string()),
        "{held_back:#?}"
    );
}

/// Issue 29, item 6: a mesh-wide finding names the clusters it concerns:
/// the one outside the root most of the mesh shares. `--target` keeps it
/// only for them, and apply holds back only their actions.
#[test]
fn a_root_of_trust_blocker_concerns_the_clusters_outside_the_shared_root() {
    let t = mesh_topology(&["name = \"a\"", "name = \"b\"", "name = \"c\""]);
    let mut observed = converge(&t, &fresh(&t));
    facts_mut(&mut observed, "c").root_certs = Some(vec!["c".repeat(64)]);
    let rotate = Options {
        rotate_tokens: true,
        ..Options::default()
    };
    let plan = plan_with(&t, &observed, &rotate);
    assert_eq!(findings(&plan), ["blocker - root_of_trust"]);
    assert_eq!(plan.findings[0].concerns, ["c"]);
    let (run, held_back) = held(&plan);
    assert_eq!(
        run,
        [
            "update a write_remote_secret/rotate b",
            "update b write_remote_secret/rotate a"
        ]
    );
    assert_eq!(held_back.len(), 4, "{held_back:#?}");
    let only = |target: &str| Options {
        targets: vec![target.to_string()],
        ..Options::default()
    };
    assert_eq!(
        findings(&plan_with(&t, &observed, &only("c"))),
        ["blocker - root_of_trust"]
    );
    assert_eq!(findings(&plan_with(&t, &observed, &only("a"))), Vec::<String>::new());
    // Two against two: no side can be told wrong, so the blocker concerns all.
    let t = mesh_topology(&["name = \"a\"", "name = \"b\""]);
    let mut observed = converge(&t, &fresh(&t));
    facts_mut(&mut observed, "b").root_certs = Some(vec!["b".repeat(64)]);
    let plan = plan_with(&t, &observed, &Options::default());
    assert_eq!(plan.findings[0].concerns, ["a", "b"]);
}

/// Issue 30: a controller's plan (`unattended`) repairs what was deleted by
/// hand and holds back for a person the detach of a cluster that left
/// mesh.toml and the revocation of the tokens it holds; preflight then lets
/// it run without --allow-detach.
#[test]
fn an_unattended_plan_repairs_and_leaves_a_detach_to_a_person() {
    let before = three_primaries();
    let mut observed = converge(&before, &fresh(&before));
    facts_mut(&mut observed, "a")
        .remote_secrets
        .remove("istio-remote-secret-b");
    let after = mesh_topology(&["name = \"a\"", "name = \"b\""]);
    let unattended = Options {
        unattended: true,
        ..Options::default()
    };
    let plan = plan_with(&after, &observed, &unattended);
    let (run, held_back) = held(&plan);
    assert_eq!(run, ["attach a write_remote_secret/create b"], "{held_back:#?}");
    assert!(
        held_back
            .iter()
            .any(|l| l.starts_with("detach a delete_remote_secret c"))
            && held_back.iter().any(|l| l.contains("revoke_reader_tokens/detach c")),
        "{held_back:#?}"
    );
    for line in &held_back {
        assert!(
            line.ends_with(
                "(held back: not safe unattended; a person applies it with `meshform apply --allow-detach`)"
            ),
            "{line}"
        );
    }
    assert_eq!(meshform::apply::preflight(&plan, false), Ok(()));
    // The same plan made for a person holds nothing back, and needs consent.
    let attended = plan_ok(&after, &observed);
    assert!(held(&attended).1.is_empty());
    assert!(meshform::apply::preflight(&attended, false).is_err());
}

/// Issue 30: a relabel to another network is a move, and waits; the label
/// put back where it was removed from a cluster not yet attached does not.
#[test]
fn unattended_safety_is_decided_by_the_action() {
    let relabel = ActionKind::SetNetwork {
        network: "n2".into(),
        previous: Some("n1".into()),
        control_plane: None,
        force: false,
        restart_owed: None,
    };
    let put_back = ActionKind::SetNetwork {
        network: "n2".into(),
        previous: None,
        control_plane: None,
        force: false,
        restart_owed: None,
    };
    assert!(!relabel.unattended());
    assert!(put_back.unattended());
}

/// Issue 30: the controller wakes when a plan would change on the clock
/// alone: the earliest token rotation, or the end of a replaced token's grace.
#[test]
fn the_next_due_moment_is_the_earliest_rotation_or_grace_end() {
    let t = three_primaries();
    let mut observed = converge(&t, &fresh(&t));
    let due = |observed: &Observed| meshform::plan::next_due(&t, observed, &Options::default());
    // Every token was just issued: each rotates half-way through its life.
    assert_eq!(due(&observed), now().checked_add(TOKEN_LIFETIME / 2).ok());
    let days = |d: i64| SignedDuration::from_hours(24 * d);
    set_token(
        &mut observed,
        "a",
        "istio-remote-secret-b",
        bound_token(days(10), days(30)),
    );
    assert_eq!(due(&observed), now().checked_add(days(5)).ok());
    // a's token for c replaced one a minute ago: revoked 300 s after its successor.
    set_token(
        &mut observed,
        "a",
        "istio-remote-secret-c",
        bound_token(SignedDuration::from_secs(60), days(30)),
    );
    replaced_binding(&mut observed, "c", "a");
    assert_eq!(due(&observed), now().checked_add(SignedDuration::from_secs(240)).ok());
}
