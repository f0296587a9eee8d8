//! The order and the gating of a run, apart from what an action does:
//! phases one after another, a phase's actions concurrently up to the limit,
//! what lives in the mesh namespace after the write that may create it, and
//! no phase started after a failure or a lost lock. It owns no kube client:
//! each action runs through a [`Runner`] (the real one is in `mod.rs`), so
//! its tests, and render's, drive it without clusters.

use std::collections::HashMap;

use futures::StreamExt;

use super::{Cancel, Event, Progress, Report, Settings};
use crate::plan::{Action, ActionKind, Phase, Plan};

/// Runs one action on the clusters: what [`sequence`] calls for each action
/// it starts. Its tests run the real sequencer over one that touches nothing.
pub(crate) trait Runner {
    /// The action's redacted diff when asked for one, or what went wrong.
    async fn run(&self, action: &Action) -> Result<Option<String>, String>;
}

/// The order and the gating of a run, apart from what an action does:
/// phase by phase, actions of one phase concurrently up to the limit, no
/// phase started after a failure or once `lock_lost` says the lease could
/// not be renewed, restarts the plan does not enable skipped; once `cancel`
/// asks, no action is started (those in flight finish).
pub(crate) async fn sequence(
    plan: &Plan,
    runner: &impl Runner,
    lock_lost: &dyn Fn() -> bool,
    cancel: &Cancel,
    settings: &Settings,
    progress: &dyn Progress,
) -> Report {
    let mut report = Report::default();
    let holds = plan.holds();
    for phase in Phase::ALL {
        let actions: Vec<(usize, &Action)> = plan
            .actions
            .iter()
            .enumerate()
            .filter(|(_, a)| a.phase == phase)
            .collect();
        if actions.is_empty() {
            continue;
        }
        // Once the lease could not be renewed another apply may hold it:
        // writing on would race it.
        if !report.halted() && lock_lost() {
            report.lock_lost = true;
        }
        if !report.halted() {
            report.stopped = cancel.stopped();
        }
        if report.halted() {
            let why = if report.lock_lost {
                "the apply lock was lost (another apply may hold it)".to_string()
            } else if let Some(stop) = report.stopped {
                stopped(stop)
            } else {
                "an earlier phase failed".to_string()
            };
            for (index, action) in actions {
                progress.event(Event::Skipped {
                    index,
                    action,
                    why: why.clone(),
                });
                report.skipped.push(index);
            }
            continue;
        }
        progress.event(Event::Phase {
            phase,
            actions: actions.len(),
        });
        // A restart the plan shows without running (planned without
        // --restart-workloads) is reported as skipped, not as done.
        let (actions, held): (Vec<_>, Vec<_>) = actions
            .into_iter()
            .map(|(index, action)| (index, action, holds.of(action)))
            .partition(|(.., hold)| hold.is_none());
        for (index, action, hold) in held {
            let why = hold.map(|h| h.to_string()).unwrap_or_default();
            progress.event(Event::Skipped {
                index,
                action,
                why: why.clone(),
            });
            report.held.push((index, why));
        }
        let (actions, shown): (Vec<_>, Vec<_>) = actions
            .into_iter()
            .map(|(index, action, _)| (index, action))
            .partition(|(_, a)| a.writes());
        for (index, action) in shown {
            progress.event(Event::Skipped {
                index,
                action,
                why: "not run: plan or apply with --restart-workloads to restart the injected workloads".into(),
            });
            report.skipped.push(index);
        }
        let phase_started = std::time::Instant::now();
        tracing::info!(?phase, actions = actions.len(), "phase started");
        let namespaces = NamespaceGates::of(&actions);
        let namespaces = &namespaces;
        let results: Vec<(usize, Outcome)> = futures::stream::iter(actions)
            .map(|(index, action)| async move {
                let ready = namespaces.ready(action).await;
                // Asked to stop: what started goes on, nothing more starts
                // (a namespace write not started leaves what waits on it unstarted too).
                if let Some(stop) = cancel.stopped() {
                    progress.event(Event::Skipped {
                        index,
                        action,
                        why: stopped(stop),
                    });
                    namespaces.written(action, false);
                    return (index, Outcome::Stopped(stop));
                }
                if !ready {
                    let why = format!(
                        "not run: the write of the mesh namespace in {} failed, and this lives in it",
                        action.cluster
                    );
                    progress.event(Event::Skipped { index, action, why });
                    return (index, Outcome::Skipped);
                }
                progress.event(Event::Started { index, action });
                let started = std::time::Instant::now();
                let result = runner.run(action).await;
                // The object's name and the outcome only: diffs and errors go to the report.
                tracing::debug!(
                    cluster = %action.cluster,
                    object = %action.object(&plan.namespace),
                    ok = result.is_ok(),
                    elapsed_ms = started.elapsed().as_millis(),
                    "action"
                );
                match &result {
                    Ok(diff) => progress.event(Event::Done {
                        index,
                        action,
                        dry_run: settings.dry_run,
                        diff: diff.clone(),
                    }),
                    Err(error) => progress.event(Event::Failed {
                        index,
                        action,
                        error: error.clone(),
                    }),
                }
                namespaces.written(action, result.is_ok());
                (index, Outcome::Ran(result))
            })
            .buffer_unordered(settings.concurrency.max(1))
            .collect()
            .await;
        for (index, result) in results {
            match result {
                Outcome::Ran(Ok(_)) => report.done.push(index),
                Outcome::Ran(Err(e)) => report.failed.push((index, e)),
                Outcome::Skipped => report.skipped.push(index),
                Outcome::Stopped(stop) => {
                    report.stopped = Some(stop);
                    report.skipped.push(index);
                }
            }
        }
        tracing::info!(?phase, elapsed_ms = phase_started.elapsed().as_millis(), "phase done");
    }
    report.done.sort_unstable();
    report.failed.sort_unstable();
    report.skipped.sort_unstable();
    report.held.sort_unstable();
    report
}

enum Outcome {
    Ran(Result<Option<String>, String>),
    Skipped,
    /// Not started: the run was asked to stop.
    Stopped(super::Stop),
}

/// Why an action was not started once the run was asked to stop.
fn stopped(stop: super::Stop) -> String {
    format!("not run: apply was stopped by {stop} before it started")
}

/// A phase's actions run concurrently, but what lives in the mesh namespace
/// cannot be written before the namespace exists: the `SetNetwork` that may
/// create it goes first in its cluster ([`ActionKind::rank`]), and the
/// cluster's other actions of the phase wait for it. The plan lists it first
/// in its cluster, so it is started before anything waits on it and the
/// concurrency limit cannot starve it.
struct NamespaceGates<'a> {
    gates: HashMap<&'a str, tokio::sync::watch::Sender<Option<bool>>>,
}

impl<'a> NamespaceGates<'a> {
    fn of(actions: &[(usize, &'a Action)]) -> Self {
        let gates = actions
            .iter()
            .filter(|(_, a)| matches!(a.kind, ActionKind::SetNetwork { .. }))
            .map(|(_, a)| (a.cluster.as_str(), tokio::sync::watch::Sender::new(None)))
            .collect();
        NamespaceGates { gates }
    }

    /// Waits for the namespace write of `action`'s cluster, if the phase has
    /// one and `action` is not it; false when that write failed.
    async fn ready(&self, action: &Action) -> bool {
        if matches!(action.kind, ActionKind::SetNetwork { .. }) {
            return true;
        }
        let Some(gate) = self.gates.get(action.cluster.as_str()) else {
            return true;
        };
        let mut written = gate.subscribe();
        // The sender lives as long as `self`, so the wait cannot fail.
        written
            .wait_for(Option::is_some)
            .await
            .map(|ok| ok.unwrap_or(false))
            .unwrap_or(false)
    }

    fn written(&self, action: &Action, ok: bool) {
        if matches!(action.kind, ActionKind::SetNetwork { .. })
            && let Some(gate) = self.gates.get(action.cluster.as_str())
        {
            gate.send_replace(Some(ok));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::plan::Phase;
    use crate::render::scenarios;

    /// Records when each action starts and ends; a `SetNetwork` yields once
    /// before it ends, as a real write does, so that anything not waiting for
    /// it would end first. Fails the `SetNetwork` of `failing`.
    struct Recorder<'a> {
        log: RefCell<Vec<String>>,
        failing: Option<&'a str>,
    }

    impl Runner for Recorder<'_> {
        async fn run(&self, action: &Action) -> Result<Option<String>, String> {
            let name = format!("{} {}", action.cluster, action.kind.rank());
            self.log.borrow_mut().push(format!("start {name}"));
            let set_network = matches!(action.kind, ActionKind::SetNetwork { .. });
            if set_network {
                tokio::task::yield_now().await;
            }
            self.log.borrow_mut().push(format!("end {name}"));
            match self.failing {
                Some(cluster) if set_network && action.cluster == cluster => Err("refused".into()),
                _ => Ok(None),
            }
        }
    }

    struct Quiet;
    impl Progress for Quiet {
        fn event(&self, _: Event<'_>) {}
    }

    fn run(failing: Option<&str>) -> (Report, Vec<String>, crate::plan::Plan) {
        let (plan, _) = scenarios::fresh();
        let recorder = Recorder {
            log: RefCell::default(),
            failing,
        };
        let settings = Settings {
            dry_run: false,
            diff: false,
            concurrency: 16,
        };
        let report =
            futures::executor::block_on(sequence(&plan, &recorder, &|| false, &Cancel::new(), &settings, &Quiet));
        (report, recorder.log.into_inner(), plan)
    }

    // Regression: a phase ran its actions all at once, so a reader account
    // could be created before the namespace it lives in ("namespaces ... not
    // found"), now and then, on a cluster without the mesh namespace.
    #[test]
    fn what_lives_in_the_mesh_namespace_waits_for_its_write() {
        let (report, log, plan) = run(None);
        assert!(report.succeeded(), "{report:?}");
        let waiting: Vec<_> = plan
            .actions
            .iter()
            .filter(|a| a.phase == Phase::Network && !matches!(a.kind, ActionKind::SetNetwork { .. }))
            .filter(|a| {
                plan.actions.iter().any(|s| {
                    s.phase == Phase::Network
                        && s.cluster == a.cluster
                        && matches!(s.kind, ActionKind::SetNetwork { .. })
                })
            })
            .collect();
        assert!(
            !waiting.is_empty(),
            "the fresh plan writes namespaces and what lives in them"
        );
        let at = |what: &str| {
            log.iter()
                .position(|l| l == what)
                .unwrap_or_else(|| panic!("{what} in {log:?}"))
        };
        for action in waiting {
            assert!(
                at(&format!("end {} 1", action.cluster))
                    < at(&format!("start {} {}", action.cluster, action.kind.rank())),
                "{} started before its namespace was written: {log:?}",
                action.cluster
            );
        }
    }

    /// Asks the run to stop while its first action is in flight.
    struct StopsDuringFirst {
        cancel: Cancel,
        started: RefCell<Vec<usize>>,
        plan: crate::plan::Plan,
    }

    impl Runner for StopsDuringFirst {
        async fn run(&self, action: &Action) -> Result<Option<String>, String> {
            let index = self.plan.actions.iter().position(|a| std::ptr::eq(a, action)).unwrap();
            self.started.borrow_mut().push(index);
            self.cancel.stop(super::super::Stop::Terminate);
            tokio::task::yield_now().await;
            Ok(None)
        }
    }

    // Issue 29: SIGINT and SIGTERM stop a run between actions.
    #[test]
    fn a_stop_lets_the_action_in_flight_finish_and_starts_nothing_after_it() {
        let (plan, _) = scenarios::fresh();
        let runner = StopsDuringFirst {
            cancel: Cancel::new(),
            started: RefCell::default(),
            plan: plan.clone(),
        };
        let settings = Settings {
            dry_run: false,
            diff: false,
            concurrency: 1,
        };
        let report = futures::executor::block_on(sequence(
            &runner.plan,
            &runner,
            &|| false,
            &runner.cancel,
            &settings,
            &Quiet,
        ));
        assert_eq!(runner.started.into_inner(), [0], "only the first action started");
        assert_eq!(report.done, [0], "the action in flight finished: {report:?}");
        assert_eq!(report.stopped, Some(super::super::Stop::Terminate));
        assert!(report.halted() && !report.succeeded());
        let skipped: Vec<usize> = (1..plan.actions.len()).collect();
        assert_eq!(report.skipped, skipped, "every other action is left, and said to be");
        assert!(report.failed.is_empty());
    }

    #[test]
    fn a_failed_namespace_write_skips_what_lives_in_it_and_nothing_else() {
        let (plan, _) = scenarios::fresh();
        let first = plan
            .actions
            .iter()
            .find(|a| a.phase == Phase::Network && matches!(a.kind, ActionKind::SetNetwork { .. }))
            .expect("a namespace write")
            .cluster
            .clone();
        let (report, log, plan) = run(Some(&first));
        assert_eq!(report.failed.len(), 1, "{report:?}");
        let skipped: Vec<_> = report.skipped.iter().map(|&i| &plan.actions[i]).collect();
        assert!(
            skipped
                .iter()
                .filter(|a| a.phase == Phase::Network)
                .all(|a| a.cluster == first),
            "only {first}'s actions wait on its namespace: {skipped:?}"
        );
        assert!(skipped.iter().any(|a| a.phase == Phase::Network), "{report:?}");
        // The other clusters' actions of the phase ran.
        assert!(
            log.iter()
                .any(|l| l.starts_with("end ") && !l.starts_with(&format!("end {first} "))),
            "{log:?}"
        );
    }
}
