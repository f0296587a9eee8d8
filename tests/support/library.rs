//! Drives meshform's library the way the CLI does, for tests that act
//! between its steps (a change made after observe) or count its requests.
//! Owns no cluster set-up: that is `controlplane` and `mesh`.

use std::sync::Mutex;

use meshform::access::Connections;
use meshform::apply::{self, Event, Progress, Settings, Target};
use meshform::observe::model::Observed;
use meshform::plan::Plan;
use meshform::topology::Topology;

/// An action apply reported as failed.
#[derive(Debug)]
pub struct Failure {
    pub cluster: String,
    /// The action's kind, as `Debug` shows it.
    pub kind: String,
    pub error: String,
}

#[derive(Default)]
struct Failures(Mutex<Vec<Failure>>);

impl Progress for Failures {
    fn event(&self, event: Event<'_>) {
        if let Event::Failed { action, error, .. } = event {
            self.0.lock().expect("failures").push(Failure {
                cluster: action.cluster.clone(),
                kind: format!("{:?}", action.kind),
                error: error.to_string(),
            });
        }
    }
}

/// Executes `plan` like `meshform apply --auto-approve`, without the lock.
/// Returns whether the run succeeded, and each failure it reported.
pub async fn execute(
    plan: &Plan,
    topology: &Topology,
    observed: &Observed,
    connections: &Connections,
    concurrency: usize,
) -> (bool, Vec<Failure>) {
    let target = Target {
        plan,
        topology,
        observed,
        connections,
        lock: None,
        signer: None,
    };
    let settings = Settings {
        dry_run: false,
        diff: false,
        concurrency,
    };
    let failures = Failures::default();
    let report = apply::execute(&target, &settings, &failures).await;
    (report.succeeded(), failures.0.into_inner().expect("failures"))
}
