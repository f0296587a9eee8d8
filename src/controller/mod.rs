//! `meshform controller`: the one reconcile ([`crate::reconcile`]) run until
//! stopped. It owns when to reconcile (on start, when mesh.toml changes,
//! when a watch sees a change in a cluster ([`watch`], debounced), on a
//! periodic resync, at the next moment something falls due, soon after a
//! round that wrote, and again with backoff after a round that could not
//! finish), how it stops (SIGTERM ends a round between actions, then the
//! lock and the Lease are released) and what an unattended
//! round may write: with `--auto=safe` the plan is made
//! [`crate::plan::Plan::unattended`], so apply itself holds back what waits
//! for a person; with `--auto=none` nothing is written.
//!
//! It must not print: what happens is handed to a [`Watch`] as [`Event`]s,
//! which `render::controller` words and `status/` turns into metrics,
//! Kubernetes Events and a status object. Reading and validating mesh.toml
//! is `source.rs`.

mod election;
mod source;
pub mod status;
mod watch;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

pub use self::election::Election;
pub use self::source::{Read, Source};
use self::watch::{Debounce, Watches};
use crate::access::Sources;
use crate::apply::{self, Event as ApplyEvent, Progress, lock};
use crate::observe::model::Observed;
use crate::plan::{self, Options, Plan};
use crate::reconcile::{self, Outcome, Planning, Request};
use crate::topology::{Problems, Topology};

/// What the controller may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Auto {
    /// What is safe with no person watching ([`crate::plan::ActionKind::unattended`]).
    Safe,
    /// Nothing: plan and report, as a drift check does.
    None,
}

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub file: PathBuf,
    /// Kubeconfig for clusters whose `[[cluster]]` names none.
    pub kubeconfig: Option<PathBuf>,
    pub timeout: Duration,
    pub keepalive: Duration,
    pub auto: Auto,
    /// Reconcile at least this often, whatever else happens.
    pub resync: Duration,
    /// How often mesh.toml is read for changes.
    pub poll: Duration,
    /// The first wait after a round that could not finish; doubled each
    /// time, up to `resync`.
    pub retry: Duration,
    pub revoke_grace_seconds: i64,
    pub concurrency: usize,
    /// Who holds the apply lock while a round writes, as a person's apply shows it.
    pub lock_holder: String,
    /// How long the apply lock lasts without renewal.
    pub lock_duration: Duration,
    /// Replicas elect one leader, which alone reconciles; none: this one does.
    pub election: Option<Election>,
    /// A change seen by a watch is reconciled once no other came for
    /// `quiet`, or `max` after the first, whichever is sooner.
    pub debounce: (Duration, Duration),
}

/// Why a round ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Start,
    /// mesh.toml changed to a valid topology.
    Config,
    /// A watch saw a change in a cluster (the round's `changes` name it).
    Change,
    Resync,
    /// A token's rotation or a grace period's end.
    Due,
    /// The last round could not finish.
    Retry,
    /// The last round wrote: this one confirms it, and learns the times of
    /// the tokens it wrote.
    AfterWrite,
}

/// How a round ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// Nothing to do.
    Converged,
    /// Every write it could make unattended was made; `held` waits.
    Applied,
    /// `--auto=none`: what a run would do, not done.
    Reported,
    /// Something failed, or the round could not start (the lock is held,
    /// the plan refused); retried with backoff.
    Failed,
    /// SIGTERM: what was in flight finished, nothing after was started.
    Stopped,
}

/// One action of a round, as reported: never its data.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub cluster: String,
    pub object: String,
    pub why: String,
}

/// What one round did.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub trigger: Trigger,
    /// What the watches saw change since the last round began (a few, by
    /// cluster, kind and name).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
    pub ending: Ending,
    /// Actions done.
    pub done: usize,
    pub failed: Vec<Line>,
    /// Written by a person, not the controller: held back by the plan's
    /// blockers or as not safe unattended, or (`--auto=none`) every action.
    pub held: Vec<Line>,
    /// Codes of the plan's blockers.
    pub blockers: Vec<String>,
    /// Clusters that could not be read: retried with backoff, the rest kept.
    pub deferred: Vec<String>,
    /// Why the round stopped before executing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When something falls due next, as the observation says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due: Option<jiff::Timestamp>,
    pub duration_ms: u128,
}

impl Round {
    /// The next round comes sooner than the resync: retried with backoff.
    fn unfinished(&self) -> bool {
        self.ending == Ending::Failed || !self.deferred.is_empty()
    }
}

/// What the controller reports, as it happens.
#[derive(Debug)]
pub enum Event<'a> {
    /// mesh.toml was read and is valid; the controller now reconciles it.
    Loaded {
        file: &'a Path,
        topology: &'a Topology,
        warnings: &'a Problems,
    },
    /// mesh.toml changed and is invalid: the last good topology stays.
    Invalid {
        file: &'a Path,
        problems: &'a Problems,
        kept: bool,
    },
    /// mesh.toml cannot be read.
    Unreadable {
        file: &'a Path,
        reason: &'a str,
        kept: bool,
    },
    /// A round ended; `seen` is what it observed and planned, when it got
    /// that far (status views are made of it, never recomputed).
    Round {
        round: &'a Round,
        topology: &'a Topology,
        seen: Option<&'a Seen>,
    },
    /// Leader election could not be run (its cluster out of reach, no
    /// access to Leases there); tried again after `retry`.
    ElectionFailed { reason: String },
    /// This replica leads now, and reconciles.
    Leading { lease: &'a str },
    /// The leader's lease could not be renewed: another replica may lead
    /// now, so this one stops (as client-go's leader election has its
    /// callers do) and is restarted as a follower.
    LostLeadership,
    /// Stopping: the last round has finished and released the lock.
    Stopped,
}

/// Why [`run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Asked to (SIGTERM).
    Shutdown,
    /// See [`Event::LostLeadership`].
    LostLeadership,
}

/// What a round observed and planned, and which of the plan's actions it did.
#[derive(Debug)]
pub struct Seen {
    pub observed: Observed,
    pub plan: Plan,
    /// Indices into `plan.actions`.
    pub done: Vec<usize>,
}

/// Receives the controller's events.
pub trait Watch {
    fn event(&mut self, event: Event<'_>);

    /// The loop came round (it does at least every `poll`, between rounds):
    /// a liveness probe's sign that it is not wedged.
    fn tick(&mut self) {}
}

/// Runs until `shutdown` completes. A round in progress when it does stops
/// between actions (those in flight finish), so nothing is cut off half-way,
/// and then the lock and the leader's Lease are released.
pub async fn run(settings: &Settings, watch: &mut impl Watch, shutdown: impl Future<Output = ()>) -> Stop {
    tokio::pin!(shutdown);
    let mut source = Source::new(&settings.file);
    let mut topology: Option<Box<Topology>> = None;
    let mut next = (Instant::now(), Trigger::Start);
    let mut backoff = settings.retry;
    let mut leader: Option<lock::Lock> = None;
    // Started for the topology in force once this replica reconciles.
    let mut watches: Option<Watches> = None;
    let mut debounce = Debounce::new(settings.debounce.0, settings.debounce.1);
    let stop = loop {
        watch.tick();
        match source.poll().await {
            Some(Read::Valid(new, warnings)) => {
                watch.event(Event::Loaded {
                    file: source.path(),
                    topology: &new,
                    warnings: &warnings,
                });
                let first = topology.is_none();
                topology = Some(new);
                next = (Instant::now(), if first { Trigger::Start } else { Trigger::Config });
                backoff = settings.retry;
                watches = None;
            }
            Some(Read::Invalid(problems)) => watch.event(Event::Invalid {
                file: source.path(),
                problems: &problems,
                kept: topology.is_some(),
            }),
            Some(Read::Unreadable(reason)) => watch.event(Event::Unreadable {
                file: source.path(),
                reason: &reason,
                kept: topology.is_some(),
            }),
            None => {}
        }
        if let (Some(election), Some(topology), None) = (&settings.election, &topology, &leader) {
            let sources = sources(settings);
            let lead = election::lead(topology, &sources, election, &settings.lock_holder);
            tokio::select! {
                () = &mut shutdown => break Stop::Shutdown,
                led = lead => match led {
                    Ok(lock) => {
                        watch.event(Event::Leading { lease: &election.lease(&topology.mesh.name) });
                        leader = Some(lock);
                        next = (Instant::now(), Trigger::Start);
                    }
                    Err(e) => {
                        watch.event(Event::ElectionFailed { reason: e.to_string() });
                        tokio::select! {
                            () = &mut shutdown => break Stop::Shutdown,
                            () = tokio::time::sleep(settings.retry) => continue,
                        }
                    }
                },
            }
        }
        if leader.as_ref().is_some_and(lock::Lock::lost) {
            watch.event(Event::LostLeadership);
            break Stop::LostLeadership;
        }
        let reconciling = topology
            .as_ref()
            .filter(|_| settings.election.is_none() || leader.is_some());
        if let Some(topology) = reconciling
            && watches.is_none()
        {
            watches = Some(Watches::start(topology, &sources(settings)).await);
        }
        // A round owed to a change comes before a later one (a resync, a
        // retry's backoff); one that confirms a write is soon and sees it too.
        if let Some(due) = debounce.due()
            && due < next.0
            && next.1 != Trigger::AfterWrite
        {
            next = (due, Trigger::Change);
        }
        if let Some(topology) = reconciling
            && Instant::now() >= next.0
        {
            let changes = debounce.take();
            let cancel = apply::Cancel::new();
            let running = reconcile_once(topology, settings, next.1, &cancel);
            tokio::pin!(running);
            let mut stopping = false;
            let (mut round, seen) = tokio::select! {
                round = &mut running => round,
                () = &mut shutdown => {
                    stopping = true;
                    cancel.stop(apply::Stop::Terminate);
                    running.await
                }
            };
            round.changes = changes;
            watch.event(Event::Round {
                round: &round,
                topology,
                seen: seen.as_ref(),
            });
            if stopping {
                break Stop::Shutdown;
            }
            next = if round.unfinished() {
                let retry = (Instant::now() + backoff, Trigger::Retry);
                backoff = (backoff * 2).min(settings.resync);
                retry
            } else if round.done > 0 {
                backoff = settings.retry;
                (Instant::now() + settings.retry, Trigger::AfterWrite)
            } else {
                backoff = settings.retry;
                let resync = (Instant::now() + settings.resync, Trigger::Resync);
                match round.due.and_then(until) {
                    Some(due) if due < settings.resync => (Instant::now() + due, Trigger::Due),
                    _ => resync,
                }
            };
            // A cluster that had no client (its kubeconfig unusable) is
            // watched once it has one: tried again at each resync.
            if round.trigger == Trigger::Resync
                && watches.as_ref().is_some_and(|w| w.watched() < topology.clusters.len())
            {
                watches = None;
            }
        }
        // Until the next round, mesh.toml's next read, or the end of a burst
        // of changes, whichever is first.
        let poll = Instant::now() + settings.poll;
        let woken = loop {
            let mut wake = next.0.min(poll);
            if let Some(due) = debounce.due()
                && next.1 != Trigger::AfterWrite
            {
                wake = wake.min(due);
            }
            let change = async {
                match &mut watches {
                    Some(watches) => watches.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut shutdown => break Some(Stop::Shutdown),
                () = tokio::time::sleep_until(wake) => break None,
                change = change => {
                    tracing::debug!(%change, "changed");
                    debounce.record(&change, Instant::now());
                }
            }
        };
        if let Some(stop) = woken {
            break stop;
        }
    };
    drop(watches);
    if let Some(lease) = leader {
        lease.release().await;
    }
    if stop == Stop::Shutdown {
        watch.event(Event::Stopped);
    }
    stop
}

/// Where the clusters' kubeconfigs are, for `settings`.
pub fn sources(settings: &Settings) -> Sources {
    Sources {
        base_dir: settings.file.parent().map(Path::to_path_buf).unwrap_or_default(),
        kubeconfig: settings.kubeconfig.clone(),
        timeout: settings.timeout,
        keepalive: settings.keepalive,
    }
}

/// How long until `at`, plus a second: the planner compares whole seconds
/// of the observation's time (`plan/attach.rs`, `plan/revocation.rs`).
fn until(at: jiff::Timestamp) -> Option<Duration> {
    let left = at.duration_since(jiff::Timestamp::now()) + jiff::SignedDuration::from_secs(1);
    Some(Duration::try_from(left).unwrap_or(Duration::ZERO))
}

fn options(settings: &Settings) -> Options {
    Options {
        // One cluster out of reach must not stop the rest of the mesh from
        // being kept: its changes are deferred and it is retried.
        skip_unreachable: true,
        revoke_grace_seconds: settings.revoke_grace_seconds,
        unattended: settings.auto == Auto::Safe,
        ..Options::default()
    }
}

async fn reconcile_once(
    topology: &Topology,
    settings: &Settings,
    trigger: Trigger,
    cancel: &apply::Cancel,
) -> (Round, Option<Seen>) {
    let started = std::time::Instant::now();
    let sources = sources(settings);
    let options = options(settings);
    let mut round = Round {
        trigger,
        changes: Vec::new(),
        ending: Ending::Converged,
        done: 0,
        failed: Vec::new(),
        held: Vec::new(),
        blockers: Vec::new(),
        deferred: Vec::new(),
        error: None,
        due: None,
        duration_ms: 0,
    };
    let mut seen = None;
    match settings.auto {
        Auto::None => {
            // Reads only: a stop drops them.
            let observed = tokio::select! {
                observed = reconcile::observe(topology, &sources) => observed,
                stop = cancel.wait() => {
                    round.ending = Ending::Stopped;
                    round.error = Some(format!("stopped by {stop} before anything was read"));
                    round.duration_ms = started.elapsed().as_millis();
                    return (round, None);
                }
            };
            round.due = plan::next_due(topology, &observed, &options);
            match plan::plan(topology, &observed, &options) {
                Ok(plan) => {
                    summarise(&mut round, &plan);
                    round.held = plan
                        .actions
                        .iter()
                        .filter(|a| a.writes())
                        .map(|a| line(&plan, a, "reported only (--auto=none)".into()))
                        .collect();
                    if !round.held.is_empty() {
                        round.ending = Ending::Reported;
                    }
                    seen = Some(Seen {
                        observed,
                        plan,
                        done: Vec::new(),
                    });
                }
                Err(e) => fail(&mut round, &e),
            }
        }
        Auto::Safe => {
            let request = Request {
                topology,
                sources: &sources,
                planning: Planning::Fresh(options.clone()),
                allow_detach: false,
                settings: apply::Settings {
                    dry_run: false,
                    diff: false,
                    concurrency: settings.concurrency,
                },
                // SIGTERM: before execution the round ends at once, during
                // it between actions; the lock is released either way.
                cancel: cancel.clone(),
                lock: lock::LockSettings {
                    holder: settings.lock_holder.clone(),
                    duration: settings.lock_duration,
                    // Long enough to see a lock stay unrenewed for its whole
                    // duration: each acquire starts that watch afresh, so
                    // with no wait a lock left by a killed holder (a leader
                    // SIGKILLed mid-round) would never be judged free. A
                    // live holder (a person's apply) outlasts it: the round
                    // is then retried with backoff.
                    wait: settings.lock_duration + Duration::from_secs(2),
                },
            };
            let mut shell = Unattended {
                topology,
                options: &options,
                round: &mut round,
                observed: None,
                plan: None,
            };
            let outcome = reconcile::apply(&request, &mut shell).await;
            let (observed, planned) = (shell.observed.take(), shell.plan.take());
            let done = match &outcome {
                Ok(Outcome::Executed { report, .. }) => report.done.clone(),
                _ => Vec::new(),
            };
            seen = observed
                .zip(planned)
                .map(|(observed, plan)| Seen { observed, plan, done });
            match outcome {
                Ok(Outcome::Converged) => {}
                Ok(Outcome::Executed { plan, report }) => {
                    round.done = report.done.len();
                    let at = |i: usize, why: &str| line(&plan, &plan.actions[i], why.to_string());
                    round.failed = report.failed.iter().map(|(i, why)| at(*i, why)).collect();
                    round.held = report.held.iter().map(|(i, why)| at(*i, why)).collect();
                    round.ending = if report.halted() {
                        Ending::Failed
                    } else {
                        Ending::Applied
                    };
                }
                Err(e) => fail(&mut round, &e),
            }
        }
    }
    if cancel.stopped().is_some() && round.ending != Ending::Converged {
        round.ending = Ending::Stopped;
    }
    round.duration_ms = started.elapsed().as_millis();
    (round, seen)
}

fn summarise(round: &mut Round, plan: &Plan) {
    round.blockers = plan.blockers().map(|f| f.code.clone()).collect();
    round.deferred = plan.deferred.iter().map(|d| d.cluster.clone()).collect();
}

fn fail(round: &mut Round, error: &dyn std::error::Error) {
    round.ending = Ending::Failed;
    round.error = Some(error.to_string());
}

fn line(plan: &Plan, action: &plan::Action, why: String) -> Line {
    Line {
        cluster: action.cluster.clone(),
        object: action.object(&plan.namespace),
        why,
    }
}

/// The reconcile's shell with no person: approves what the plan leaves free
/// (apply holds back the rest), logs progress, and keeps what the round
/// reports, and what it observed and planned for the status views.
struct Unattended<'a> {
    topology: &'a Topology,
    options: &'a Options,
    round: &'a mut Round,
    observed: Option<Observed>,
    plan: Option<Plan>,
}

impl reconcile::Shell for Unattended<'_> {
    type Error = reconcile::Error;
    type Progress<'p>
        = Logged<'p>
    where
        Self: 'p;

    fn observed(&mut self, observed: &Observed) {
        self.round.due = plan::next_due(self.topology, observed, self.options);
        self.observed = Some(observed.clone());
    }

    fn planned(&mut self, plan: &Plan) -> Result<(), reconcile::Error> {
        summarise(self.round, plan);
        self.plan = Some(plan.clone());
        Ok(())
    }

    fn approve(&mut self, _plan: &Plan) -> Result<(), reconcile::Error> {
        Ok(())
    }

    fn progress<'p>(&'p mut self, plan: &'p Plan) -> Logged<'p> {
        Logged { plan }
    }
}

/// Apply's events as log lines: objects and outcomes, never a diff.
struct Logged<'p> {
    plan: &'p Plan,
}

impl Progress for Logged<'_> {
    fn event(&self, event: ApplyEvent<'_>) {
        let ns = &self.plan.namespace;
        match event {
            ApplyEvent::Done { action, .. } => {
                tracing::info!(cluster = %action.cluster, object = %action.object(ns), "done");
            }
            ApplyEvent::Failed { action, error, .. } => {
                tracing::warn!(cluster = %action.cluster, object = %action.object(ns), %error, "failed");
            }
            ApplyEvent::Phase { .. } | ApplyEvent::Started { .. } | ApplyEvent::Skipped { .. } => {}
        }
    }
}
