//! One reconcile of a mesh: connect → lock → observe → plan (or re-check a
//! saved plan) → judge → execute. `meshform apply` runs it; `plan`, `check`,
//! `snapshot` and a drift check read the clusters through [`observe`]; a
//! controller would call [`apply`] on every round.
//!
//! It owns the order of those steps and the apply lock's life around them:
//! the lock is taken before anything the plan depends on is read and
//! released on every way out, success or not (a stop asked for through
//! [`Request::cancel`] included: before execution it ends the run at once,
//! during execution between actions). It must not print or ask, and reads
//! no file itself (the root of trust's key, when a plan signs, is loaded
//! through [`crate::trust`]): showing the plan, asking for consent and showing progress belong to
//! the caller, through [`Shell`]; what went wrong comes back as an [`Error`]
//! (or the caller's own) for the caller to render.

use miette::Diagnostic;
use thiserror::Error;

use crate::access::{Connections, Sources};
use crate::apply::{self, Cancel, Progress, Refusal, Report, Settings, Stop, Target, lock};
use crate::observe::{self, model::Observed};
use crate::plan::{self, Options, Plan, PlanError};
use crate::topology::Topology;

/// Why a reconcile stopped before it wrote anything.
#[derive(Debug, Error, Diagnostic)]
pub enum Error {
    /// The apply lock is held or cannot be taken.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Lock(#[from] lock::LockError),
    /// The plan could not be made.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Plan(#[from] PlanError),
    /// The plan was made but may not be applied (blockers, detaches without
    /// consent, a saved plan gone stale).
    #[error(transparent)]
    #[diagnostic(transparent)]
    Refused(#[from] Refusal),
    /// Asked to stop (SIGINT, SIGTERM) before anything was written.
    #[error("stopped by {0} before anything was written; no apply lock is left held")]
    #[diagnostic(
        code(meshform::apply::stopped),
        help("run apply again: nothing of this run needs undoing")
    )]
    Stopped(Stop),
    /// The root of trust could not be loaded for the plan's `cacerts`.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Trust(#[from] crate::trust::TrustError),
}

/// What to reconcile, and how.
pub struct Request<'a> {
    pub topology: &'a Topology,
    /// Where the clusters' kubeconfigs are.
    pub sources: &'a Sources,
    pub planning: Planning,
    /// Consent to plans that detach clusters.
    pub allow_detach: bool,
    /// How to execute; a dry run takes no lock.
    pub settings: Settings,
    /// Who takes the lock, for how long, and how long to wait for it.
    pub lock: lock::LockSettings,
    /// Asks the run to stop: before anything is written, it stops at once
    /// (the lock released); while executing, between actions.
    pub cancel: Cancel,
}

/// Where the plan comes from.
pub enum Planning {
    /// Planned now, from what is observed under the lock.
    Fresh(Options),
    /// Saved earlier (`plan --out`): planned again with the choices it
    /// records, and refused unless the same actions come out.
    Saved(Box<Plan>),
}

/// What the caller does between the steps: show, ask, show progress.
pub trait Shell {
    /// The caller's error: a reconcile's own errors convert into it, and
    /// [`Shell::planned`] and [`Shell::approve`] may return it to stop the run.
    type Error: From<Error>;
    /// Receives apply's events while the plan executes.
    type Progress<'p>: Progress
    where
        Self: 'p;

    /// The plan to be applied, shown before it is judged, so a refused plan
    /// is seen with its reasons.
    fn planned(&mut self, plan: &Plan) -> Result<(), Self::Error>;

    /// Consent to write `plan`, which passed preflight and has something to
    /// do; an error stops the run with nothing written.
    fn approve(&mut self, plan: &Plan) -> Result<(), Self::Error>;

    /// Where apply's events go while `plan` executes.
    fn progress<'p>(&'p mut self, plan: &'p Plan) -> Self::Progress<'p>;

    /// What was read under the lock, before it is planned: a controller
    /// works out from it when to reconcile next ([`plan::next_due`]).
    fn observed(&mut self, _observed: &Observed) {}
}

/// How a reconcile ended that got as far as a plan it could apply.
#[derive(Debug)]
pub enum Outcome {
    /// The plan has nothing to do.
    Converged,
    /// The plan was executed (or dry-run); the report says how each action ended.
    Executed { plan: Box<Plan>, report: Report },
}

/// Reads every cluster of `topology` through a fresh connection each, with
/// no lock: what `plan`, `check`, `snapshot` and a drift check start from.
pub async fn observe(topology: &Topology, sources: &Sources) -> Observed {
    let connections = Connections::open(topology, sources).await;
    observe::observe(topology, &connections).await
}

/// Runs one reconcile of `request.topology`: the lock (unless a dry run),
/// the observation, the plan, the caller's look and consent, the execution.
pub async fn apply<S: Shell>(request: &Request<'_>, shell: &mut S) -> Result<Outcome, S::Error> {
    let topology = request.topology;
    let connections = Connections::open(topology, request.sources).await;
    // The lock comes first, as in Terraform: the clusters are read, planned,
    // confirmed and written with no other apply in between. A dry run
    // writes nothing and takes no lock. Beside the lock, each cluster's
    // connection is opened with the one read that may come before it
    // (the cluster's identity, which never changes).
    let (held, opened) = if request.settings.dry_run {
        (None, observe::open(&connections).await)
    } else {
        let (held, opened) = tokio::join!(
            take_lock(topology, &connections, &request.lock, &request.cancel),
            observe::open(&connections)
        );
        (Some(held?), opened)
    };
    let result = plan_and_execute(request, shell, &connections, opened, held.as_ref()).await;
    if let Some(lock) = held {
        lock.release().await;
    }
    result
}

/// The lock lives in the one cluster the topology names for it, and only
/// there: were it taken wherever it could be, two applies that reach
/// different clusters would lock different ones and write at once.
async fn take_lock(
    topology: &Topology,
    connections: &Connections,
    settings: &lock::LockSettings,
    cancel: &Cancel,
) -> Result<lock::Lock, Error> {
    let cluster = topology
        .lock_cluster()
        .expect("a valid topology has a primary to hold the lock");
    let connection = match connections.cluster(cluster) {
        Some(Ok(connection)) => connection,
        Some(Err(error)) => {
            return Err(lock::LockError::Unreachable {
                cluster: cluster.to_string(),
                reason: error.to_string(),
            }
            .into());
        }
        None => unreachable!("connections are opened for every cluster of the topology"),
    };
    match lock::acquire(
        connection.client.clone(),
        cluster,
        &topology.mesh.namespace,
        &topology.mesh.name,
        settings,
        cancel,
    )
    .await
    {
        Ok(lock) => Ok(lock),
        Err(lock::LockError::Stopped(stop)) => Err(Error::Stopped(stop)),
        Err(e) => Err(e.into()),
    }
}

async fn plan_and_execute<S: Shell>(
    request: &Request<'_>,
    shell: &mut S,
    connections: &Connections,
    opened: observe::Opened,
    held: Option<&lock::Lock>,
) -> Result<Outcome, S::Error> {
    let topology = request.topology;
    let cancel = &request.cancel;
    // Reads only, until execution: a stop drops them and ends the run.
    let observed = tokio::select! {
        observed = observe::observe_opened(topology, connections, opened) => observed,
        stop = cancel.wait() => return Err(Error::Stopped(stop).into()),
    };
    shell.observed(&observed);
    let plan = match &request.planning {
        // Planned again, under the lock, with the choices the plan was made
        // with; written only if the same actions come out, and then as
        // planned now (current findings, current preconditions).
        Planning::Saved(saved) => {
            let fresh = plan::plan(topology, &observed, &saved.options).map_err(Error::from)?;
            let differences = plan::compare(saved, &fresh);
            if !differences.is_empty() {
                let flags = saved.options.flags();
                let fix = format!(
                    "plan again from what the clusters hold now (`meshform plan --out PLAN{}{flags}`), review the new plan and apply it",
                    if flags.is_empty() { "" } else { " " }
                );
                return Err(Error::from(Refusal::Stale { differences, fix }).into());
            }
            fresh
        }
        Planning::Fresh(options) => plan::plan(topology, &observed, options).map_err(Error::from)?,
    };
    shell.planned(&plan)?;
    apply::preflight(&plan, request.allow_detach).map_err(Error::from)?;
    if plan.is_empty() {
        return Ok(Outcome::Converged);
    }
    shell.approve(&plan)?;
    // The question may have waited long; a stop asked meanwhile wins.
    if let Some(stop) = cancel.stopped() {
        return Err(Error::Stopped(stop).into());
    }
    // The root's key is loaded only when the plan signs, after consent, and
    // lives until the run ends; a key that cannot be loaded stops the run
    // before anything is written.
    let holds = plan.holds();
    let signs = plan
        .actions
        .iter()
        .any(|a| matches!(a.kind, crate::plan::ActionKind::WriteCaCerts { .. }) && holds.of(a).is_none());
    let signer = match topology.mesh.trust.managed() {
        Some(managed) if signs => Some(
            crate::trust::Signer::load(managed, connections.base_dir())
                .await
                .map_err(Error::from)?,
        ),
        _ => None,
    };
    let target = Target {
        plan: &plan,
        topology,
        observed: &observed,
        connections,
        lock: held,
        signer: signer.as_ref(),
    };
    let report = {
        let progress = shell.progress(&plan);
        apply::execute_until(&target, &request.settings, &progress, cancel).await
    };
    Ok(Outcome::Executed {
        plan: Box::new(plan),
        report,
    })
}
