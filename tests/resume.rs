//! A partial run resumes (issue 29, item 2): what a network change still
//! owes is recorded on the cluster, in the same write as the relabel, and
//! stays in the plan until it is done; SIGINT and SIGTERM stop `meshform
//! apply` between actions, release the lock and say what is left.
//!
//! The planner's side is checked on simulated observations (pure, no
//! cluster); the rest on the test control plane through the binary.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use meshform::objects::RESTART_OWED_ANNOTATION;
use meshform::plan::simulate::simulate;
use meshform::plan::{ActionKind, Options, Phase, Plan};
use serde_json::Value;
use support::controlplane::{Cluster, ControlPlane};
use support::mesh::{Entry, Mesh, NAMESPACE, install_eastwest_gateway};
use support::plan_fixtures::*;
use support::workload::{injected_deployment, restarted_at};

// ---------------------------------------------------------------------------
// The planner

/// a (primary, n1), b (primary, n2), c (remote of b, n3); c then moves to n2.
fn moving_c() -> (meshform::topology::Topology, meshform::observe::model::Observed) {
    let before = topology(&c_on("n3"));
    (topology(&c_on("n2")), converge(&before, &fresh(&before)))
}

/// The mesh of [`moving_c`] with c on `network`.
fn c_on(network: &str) -> String {
    format!(
        "[mesh]\nname = \"mesh1\"\n\n[[cluster]]\nname = \"a\"\nnetwork = \"n1\"\n\n[[cluster]]\nname = \"b\"\nnetwork = \"n2\"\n\n\
         [[cluster]]\nname = \"c\"\ncontext = \"kind-c\"\nrole = \"remote\"\ncontrol_plane = \"b\"\nnetwork = \"{network}\"\n"
    )
}

/// What `plan` leaves behind when the run stops after `last` (a failure,
/// a lost lock, a signal): only the actions of the phases up to it ran.
fn cut_after(
    observed: &meshform::observe::model::Observed,
    plan: &Plan,
    last: Phase,
) -> meshform::observe::model::Observed {
    let ran = Plan {
        actions: plan.actions.iter().filter(|a| a.phase <= last).cloned().collect(),
        ..plan.clone()
    };
    simulate(observed, &ran, TOKEN_LIFETIME)
}

fn restart(plan: &Plan) -> (&meshform::plan::Action, bool, bool) {
    let action = plan
        .actions
        .iter()
        .find(|a| matches!(a.kind, ActionKind::RestartWorkloads { .. }))
        .unwrap_or_else(|| panic!("no restart in {:#?}", actions(plan)));
    let ActionKind::RestartWorkloads { enabled, owed, .. } = action.kind else {
        unreachable!()
    };
    (action, enabled, owed)
}

#[test]
fn the_relabel_records_the_restart_it_owes_in_the_same_write() {
    let (t, observed) = moving_c();
    let plan = plan_ok(&t, &observed);
    let relabel = plan
        .actions
        .iter()
        .find(|a| a.cluster == "c" && matches!(a.kind, ActionKind::SetNetwork { .. }))
        .expect("c is relabelled");
    let ActionKind::SetNetwork { restart_owed, .. } = &relabel.kind else {
        unreachable!()
    };
    assert_eq!(restart_owed.as_deref(), Some("n3"), "{relabel:#?}");
    let (_, enabled, owed) = restart(&plan);
    assert!(!enabled && !owed, "planned by this relabel, shown only");
}

// Regression (issue 29, reproduced): after a network move applied without
// --restart-workloads, apply said "plan or apply with --restart-workloads",
// but the next plan had no restart (it was planned only while the label differed).
#[test]
fn a_move_applied_without_the_restart_still_owes_it_until_it_runs() {
    let (t, observed) = moving_c();
    let applied = simulate(&observed, &plan_ok(&t, &observed), TOKEN_LIFETIME);

    let next = plan_ok(&t, &applied);
    assert_eq!(actions(&next), ["update c restart_workloads/shown"]);
    let (action, enabled, owed) = restart(&next);
    assert!(!enabled && owed);
    for words in [
        "an earlier apply moved c from network \"n3\" to \"n2\"",
        RESTART_OWED_ANNOTATION,
        "running sidecars keep network \"n3\"",
    ] {
        assert!(action.reason.contains(words), "{words:?} in {:?}", action.reason);
    }
    assert!(next.is_empty(), "a restart not enabled writes nothing");

    let with_restart = plan_with(
        &t,
        &applied,
        &Options {
            restart_workloads: true,
            ..Options::default()
        },
    );
    assert_eq!(actions(&with_restart), ["update c restart_workloads/enabled"]);
    let restarted = simulate(&applied, &with_restart, TOKEN_LIFETIME);
    assert!(
        plan_ok(&t, &restarted).actions.is_empty(),
        "nothing is owed once it ran"
    );
}

#[test]
fn a_run_cut_short_after_the_relabel_owes_the_reattach_and_the_restart() {
    let (t, observed) = moving_c();
    let plan = plan_ok(&t, &observed);
    let cut = cut_after(&observed, &plan, Phase::Network);

    let next = plan_ok(&t, &cut);
    assert_eq!(
        actions(&next),
        [
            "attach a write_remote_secret/create c",
            "attach b write_remote_secret/create c",
            "update c restart_workloads/shown",
        ]
    );
    let (_, _, owed) = restart(&next);
    assert!(owed, "the relabel is done: the restart is owed by the earlier run");

    // Moved again before the restart ran: the record keeps the network the
    // sidecars still have, the first one, in the write that relabels again.
    let again = topology(&c_on("n1"));
    let replanned = plan_ok(&again, &cut);
    let relabel = replanned
        .actions
        .iter()
        .find(|a| a.cluster == "c" && matches!(a.kind, ActionKind::SetNetwork { .. }))
        .expect("c is relabelled again");
    let ActionKind::SetNetwork { restart_owed, .. } = &relabel.kind else {
        unreachable!()
    };
    assert_eq!(restart_owed.as_deref(), Some("n3"));
    assert!(restart(&replanned).0.reason.contains("keep network \"n3\""));
}

// ---------------------------------------------------------------------------
// On the test control plane

/// The record of a restart owed, on the mesh namespace.
async fn owed(cluster: &Cluster) -> Option<String> {
    let ns = Api::<Namespace>::all(cluster.client())
        .get(NAMESPACE)
        .await
        .expect("the mesh namespace");
    ns.metadata.annotations?.get(RESTART_OWED_ANNOTATION).cloned()
}

async fn lease(cluster: &Cluster) -> Option<k8s_openapi::api::coordination::v1::Lease> {
    Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(cluster.client(), NAMESPACE)
        .get_opt(&meshform::objects::lock_lease(support::mesh::MESH))
        .await
        .expect("reading the lease")
}

/// east and west on network n1, a workload injected in west; then west
/// moves to n2 in mesh.toml.
async fn west_moving(east: &Cluster, west: &Cluster) -> Mesh {
    for c in [east, west] {
        install_eastwest_gateway(c).await;
    }
    injected_deployment(west).await;
    let mesh = Mesh::new(&[Entry::of(east).network("n1"), Entry::of(west).network("n1")]);
    mesh.apply(&[]).await;
    mesh.write(&[Entry::of(east).network("n1"), Entry::of(west).network("n2")]);
    mesh
}

/// `plan --format json`'s actions, as `cluster action [peer]`, and the restart's.
async fn planned(mesh: &Mesh) -> (Vec<String>, Option<Value>) {
    let plan = mesh.run("plan", &["--format", "json"]).await.expect(0).json();
    let actions = plan["actions"].as_array().expect("actions").clone();
    let lines = actions
        .iter()
        .map(|a| {
            let peer = a["peer"].as_str().map(|p| format!(" {p}")).unwrap_or_default();
            format!(
                "{} {}{peer}",
                a["cluster"].as_str().unwrap_or("?"),
                a["action"].as_str().unwrap_or("?")
            )
        })
        .collect();
    let restart = actions.into_iter().find(|a| a["action"] == "restart_workloads");
    (lines, restart)
}

// Regression (issue 29, reproduced): apply said "not run: plan or apply with
// --restart-workloads", and the next plan had no restart, so the advice
// could not work and sidecars kept the old network.
#[tokio::test]
async fn a_restart_left_undone_stays_in_the_plan_until_apply_runs_it() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let [east, west] = clusters.by_names(["east", "west"]);
    let mesh = west_moving(east, west).await;
    mesh.apply(&["--allow-detach"]).await;
    assert_eq!(restarted_at(west).await, None);
    assert_eq!(
        owed(west).await.as_deref(),
        Some("n1"),
        "the relabel recorded the restart"
    );

    let (actions, restart) = planned(&mesh).await;
    assert_eq!(actions, ["west restart_workloads"]);
    let restart = restart.expect("a restart");
    assert_eq!(restart["owed"], true, "{restart:#}");
    assert_eq!(restart["enabled"], false, "{restart:#}");
    let reason = restart["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("an earlier apply moved west from network \"n1\" to \"n2\""),
        "{reason}"
    );
    // The text plan says why too, and how to run it by hand.
    let text = mesh.run("plan", &[]).await.expect(0);
    for words in [
        reason,
        RESTART_OWED_ANNOTATION,
        "runs only with `apply --restart-workloads`",
    ] {
        assert!(text.stdout.contains(words), "{words:?} in:\n{text}");
    }

    let out = mesh.apply(&["--restart-workloads", "--format", "json"]).await;
    assert!(
        out.events()
            .iter()
            .any(|e| e["event"] == "done" && e["action"]["action"] == "restart_workloads"),
        "{out}"
    );
    assert!(restarted_at(west).await.is_some(), "the workload was restarted");
    assert_eq!(owed(west).await, None, "the record goes once the restart ran");
    assert_eq!(planned(&mesh).await.0, Vec::<String>::new());
    mesh.assert_converged(&[east, west]).await;
    mesh.assert_no_token_leaked(&[east, west]).await;
}

fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

// Issue 29: a run cut short after the relabel (here by SIGTERM, as a
// cancelled CI job is) stops between actions, releases the lock and says
// what is left; the next plan owes the re-attach and the restart.
#[tokio::test]
async fn sigterm_after_the_relabel_stops_between_actions_and_the_next_plan_owes_the_rest() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let [east, west] = clusters.by_names(["east", "west"]);
    let mesh = west_moving(east, west).await;
    // Slow west, so that its writes after the relabel (its Gateway, the
    // label of its gateway Service) are still in flight when the signal comes.
    west.set_latency(Duration::from_millis(1500)).await;
    let mut run = mesh.stream("apply", &["--auto-approve", "--allow-detach", "--format", "json"]);
    loop {
        let line = run
            .next_line(Duration::from_secs(180))
            .await
            .expect("apply ended before it relabelled west");
        let event: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if event["event"] == "done"
            && event["action"]["action"] == "set_network"
            && event["action"]["cluster"] == "west"
        {
            break;
        }
    }
    signal(run.id(), "TERM");
    let out = run.finish(&mesh).await;
    west.set_latency(Duration::ZERO).await;
    assert_eq!(out.code, 143, "{out}");
    assert!(
        out.stderr
            .contains("SIGTERM: stopping once the actions in flight finish"),
        "{out}"
    );

    let events = out.events();
    // Nothing started after the signal: no re-attach, and it is said to be left.
    assert!(
        !events
            .iter()
            .any(|e| e["event"] == "started" && e["action"]["action"] == "write_remote_secret"),
        "{out}"
    );
    let left = events
        .iter()
        .find(|e| e["event"] == "skipped" && e["action"]["action"] == "write_remote_secret")
        .unwrap_or_else(|| panic!("the re-attach is not said to be left:\n{out}"));
    assert!(
        left["why"].as_str().is_some_and(|w| w.contains("stopped by SIGTERM")),
        "{left:#}"
    );
    let summary = events.last().expect("a summary");
    assert_eq!(summary["event"], "summary", "{out}");
    assert_eq!(summary["stopped"], "SIGTERM", "{out}");
    // What was in flight finished: no failure.
    assert_eq!(summary["failed"], serde_json::json!([]), "{out}");

    // The lock was released: it is gone, and an apply that does not wait takes it.
    assert!(lease(east).await.is_none(), "the lock was left behind");
    assert_eq!(owed(west).await.as_deref(), Some("n1"));

    let (actions, restart) = planned(&mesh).await;
    assert!(
        actions.contains(&"east write_remote_secret west".to_string()),
        "{actions:?}"
    );
    assert!(actions.contains(&"west restart_workloads".to_string()), "{actions:?}");
    assert_eq!(restart.expect("a restart")["owed"], true);

    mesh.run("apply", &["--auto-approve", "--allow-detach", "--restart-workloads"])
        .await
        .expect(0);
    assert!(restarted_at(west).await.is_some());
    assert_eq!(owed(west).await, None);
    mesh.assert_converged(&[east, west]).await;
    mesh.assert_no_token_leaked(&[east, west]).await;
}

// Issue 29: Ctrl-C at the question ends the run there: nothing written,
// the lock released at once.
#[tokio::test]
async fn sigint_at_the_question_writes_nothing_and_releases_the_lock() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let all @ [east, west] = clusters.by_names(["east", "west"]);
    let mesh = Mesh::flat(&all);
    let (run, _terminal) = mesh.stream_asking("apply", &[]);
    run.wait_for_stderr("Only 'yes' will be accepted", Duration::from_secs(180))
        .await;
    assert!(lease(east).await.is_some(), "the lock is held while apply asks");
    // Everything but the lock itself, which goes.
    let state = async || {
        let mut state = support::state::object_state(&[east, west]).await;
        state.retain(|key, _| !key.contains("/Lease/"));
        state
    };
    let before = state().await;
    signal(run.id(), "INT");
    let out = run.finish(&mesh).await;
    assert_eq!(out.code, 130, "{out}");
    assert!(out.stderr.contains("meshform::apply::stopped"), "{out}");
    assert!(lease(east).await.is_none(), "the lock was left behind");
    assert_eq!(before, state().await, "a stopped apply wrote");
    mesh.apply(&[]).await;
    mesh.assert_converged(&all).await;
}
