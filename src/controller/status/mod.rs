//! The controller's status, for people and tools: Prometheus metrics and
//! the probes over HTTP (`server.rs`, `metrics.rs`), Kubernetes Events on
//! the transitions that matter and the status ConfigMap (`report.rs`). All of
//! it is a view of the controller's [`Event`]s and of what each round
//! observed and planned, made once per round into a [`view::MeshView`]; it
//! decides nothing about the mesh, reads no cluster, and never holds or
//! shows Secret data.

mod metrics;
mod report;
mod server;
pub mod view;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::runtime::events::{Event as KubeEvent, EventType};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use self::metrics::{Metrics, RoundResult};
use self::report::Note;
pub use self::report::{MANAGER, status_name};
use self::view::MeshView;
use super::{Ending, Event, Round};
use crate::access::Sources;

/// How the status is served and where it is written.
#[derive(Debug, Clone)]
pub struct Settings {
    pub address: SocketAddr,
    /// Where Events and the status object go (the election's cluster and
    /// namespace, Events about its Lease); none: neither is written.
    pub home: Option<super::Election>,
    pub sources: Sources,
    /// Replicas elect a leader: until this one leads, it is a standby.
    pub election: bool,
    /// The liveness probe fails once the loop has not come round for this long.
    pub wedged_after: Duration,
}

/// State the HTTP server reads.
struct Shared {
    metrics: Metrics,
    health: Mutex<Health>,
}

impl Shared {
    fn health(&self) -> MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

struct Health {
    loaded: bool,
    election: bool,
    leading: bool,
    /// A round has ended since this replica began to lead (or started).
    rounds: u64,
    tick: Instant,
    wedged_after: Duration,
}

impl Health {
    /// Alive unless the loop has stopped coming round while it should: a
    /// standby waits for the lease inside one turn of the loop.
    fn live(&self) -> Result<&'static str, String> {
        if self.election && !self.leading {
            return Ok("standby");
        }
        let quiet = self.tick.elapsed();
        if quiet > self.wedged_after {
            return Err(format!(
                "the controller loop has not come round for {}s (limit {}s)",
                quiet.as_secs(),
                self.wedged_after.as_secs()
            ));
        }
        Ok("the controller loop is running")
    }

    /// Ready once mesh.toml is loaded and, when leading, a round has ended:
    /// a rollout's new replica that cannot load mesh.toml is never ready.
    fn ready(&self) -> Result<&'static str, String> {
        if !self.loaded {
            return Err("no valid mesh.toml loaded yet".into());
        }
        if self.election && !self.leading {
            return Ok("standby, mesh.toml loaded");
        }
        if self.rounds == 0 {
            return Err("the first round has not ended yet".into());
        }
        Ok("leading, a round has ended")
    }
}

/// The controller's status: feed it every [`Event`] and [`Status::tick`].
pub struct Status {
    shared: Arc<Shared>,
    notes: Option<mpsc::UnboundedSender<Note>>,
    address: SocketAddr,
    /// When each cluster was last read.
    last_observed: BTreeMap<String, Timestamp>,
    /// What the last round's view said, to find transitions.
    last: Option<MeshView>,
    last_ending: Option<Ending>,
}

impl Status {
    /// Binds the HTTP endpoint (an error names the address) and starts
    /// serving it, and the writer of Events and the status object.
    pub async fn start(settings: Settings) -> std::io::Result<Status> {
        let listener = TcpListener::bind(settings.address).await?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            metrics: Metrics::default(),
            health: Mutex::new(Health {
                loaded: false,
                election: settings.election,
                leading: false,
                rounds: 0,
                tick: Instant::now(),
                wedged_after: settings.wedged_after,
            }),
        });
        shared.metrics.leading(!settings.election);
        tokio::spawn(server::serve(listener, shared.clone()));
        Ok(Status {
            shared,
            notes: settings.home.map(|home| report::spawn(home, settings.sources)),
            address,
            last_observed: BTreeMap::new(),
            last: None,
            last_ending: None,
        })
    }

    /// Where it serves (the port chosen, for `:0`).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn tick(&mut self) {
        self.shared.health().tick = Instant::now();
    }

    pub fn event(&mut self, event: &Event<'_>) {
        let leads = {
            let h = self.shared.health();
            !h.election || h.leading
        };
        match event {
            Event::Loaded { topology, .. } => {
                self.shared.health().loaded = true;
                self.note(Note::Topology(Box::new((*topology).clone())));
            }
            Event::Invalid { problems, kept, .. } if leads => {
                let first = problems
                    .problems
                    .iter()
                    .find(|p| p.is_error())
                    .map(|p| format!(" (first: {}: {})", String::from(p.code), p.message))
                    .unwrap_or_default();
                let kept = if *kept {
                    "the last good mesh.toml is still reconciled"
                } else {
                    "nothing is reconciled until it is fixed"
                };
                self.publish(
                    EventType::Warning,
                    "InvalidTopology",
                    "Load",
                    format!("mesh.toml is invalid{first}; {kept}"),
                );
            }
            Event::Unreadable { reason, .. } if leads => {
                self.publish(
                    EventType::Warning,
                    "UnreadableTopology",
                    "Load",
                    format!("mesh.toml cannot be read: {reason}"),
                );
            }
            Event::Leading { lease } => {
                {
                    let mut h = self.shared.health();
                    h.leading = true;
                    h.rounds = 0;
                }
                self.shared.metrics.leading(true);
                self.publish(
                    EventType::Normal,
                    "LeaderElected",
                    "Elect",
                    format!("this replica leads with Lease {lease} and reconciles the mesh"),
                );
            }
            Event::LostLeadership => {
                self.shared.health().leading = false;
                self.shared.metrics.leading(false);
                self.publish(
                    EventType::Warning,
                    "LeadershipLost",
                    "Elect",
                    "the Lease could not be renewed; this replica stops and restarts as a standby".into(),
                );
            }
            Event::Round { round, topology, seen } => {
                let view = seen.map(|seen| MeshView::of(topology, seen));
                self.round(round, topology, view);
            }
            Event::Invalid { .. } | Event::Unreadable { .. } | Event::ElectionFailed { .. } | Event::Stopped => {}
        }
    }

    fn round(&mut self, round: &Round, topology: &crate::topology::Topology, view: Option<MeshView>) {
        let result = match round.ending {
            Ending::Failed => RoundResult::Failed,
            // SIGTERM cut it short: what it left undone is the next run's.
            Ending::Stopped => RoundResult::Incomplete,
            _ if !round.deferred.is_empty() => RoundResult::Incomplete,
            _ => RoundResult::Success,
        };
        if let Some(view) = &view {
            self.last_observed.retain(|c, _| topology.cluster(c).is_some());
            for c in view.clusters.iter().filter(|c| c.reachable) {
                self.last_observed.insert(c.cluster.clone(), view.observed_at);
            }
        }
        self.shared.metrics.round(
            result,
            round.duration_ms as f64 / 1000.0,
            view.as_ref(),
            &self.last_observed,
        );
        self.shared.health().rounds += 1;
        self.transitions(round, view.as_ref());
        if let Some(view) = &view {
            self.note(Note::Status {
                mesh: view.mesh.clone(),
                data: status_data(round, view),
            });
        }
        self.last_ending = Some(round.ending);
        if view.is_some() {
            self.last = view;
        }
    }

    /// Events for what changed since the last round: a cluster out of reach
    /// or back, blockers appearing, changing or gone, writes made or failed,
    /// rounds starting to fail.
    fn transitions(&self, round: &Round, view: Option<&MeshView>) {
        if let Some(view) = view {
            let was = |cluster: &str| {
                self.last
                    .as_ref()
                    .and_then(|l| l.clusters.iter().find(|c| c.cluster == cluster))
                    .is_none_or(|c| c.reachable)
            };
            let changed: Vec<_> = view
                .clusters
                .iter()
                .filter(|c| c.reachable != was(&c.cluster))
                .cloned()
                .collect();
            for c in changed {
                match c.unreachable {
                    None => self.publish(
                        EventType::Normal,
                        "ClusterReachable",
                        "Observe",
                        format!("cluster {} can be read again", c.cluster),
                    ),
                    Some(reason) => self.publish(
                        EventType::Warning,
                        "ClusterUnreachable",
                        "Observe",
                        format!(
                            "cluster {} cannot be read ({}); its changes wait and nothing of it is removed",
                            c.cluster,
                            serde_json::to_value(reason)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_string))
                                .unwrap_or_default()
                        ),
                    ),
                }
            }
            let codes = |v: &MeshView| v.blockers.iter().map(|b| b.code.clone()).collect::<Vec<_>>();
            let before = self.last.as_ref().map(codes).unwrap_or_default();
            let now = codes(view);
            if now != before {
                if now.is_empty() {
                    self.publish(
                        EventType::Normal,
                        "Unblocked",
                        "Plan",
                        "the plan has no blockers any more".into(),
                    );
                } else {
                    self.publish(
                        EventType::Warning,
                        "Blocked",
                        "Plan",
                        format!(
                            "the plan has {} blocker(s): {}; see `meshform check`",
                            now.len(),
                            now.join(", ")
                        ),
                    );
                }
            }
        }
        if round.done > 0 {
            self.publish(
                EventType::Normal,
                "Applied",
                "Apply",
                format!(
                    "a round ({}) wrote {} change(s); {} wait for a person",
                    snake(&round.trigger),
                    round.done,
                    round.held.len()
                ),
            );
        }
        if !round.failed.is_empty() {
            let objects: Vec<String> = round
                .failed
                .iter()
                .take(10)
                .map(|l| format!("{} {}", l.cluster, l.object))
                .collect();
            self.publish(
                EventType::Warning,
                "ApplyFailed",
                "Apply",
                format!("{} action(s) failed: {}", round.failed.len(), objects.join("; ")),
            );
        } else if round.ending == Ending::Failed && self.last_ending != Some(Ending::Failed) {
            let why = round.error.as_deref().unwrap_or("see the controller's log");
            self.publish(
                EventType::Warning,
                "ReconcileFailed",
                "Reconcile",
                format!("a round could not finish: {why}"),
            );
        }
    }

    fn publish(&self, type_: EventType, reason: &str, action: &str, note: String) {
        self.note(Note::Event(KubeEvent {
            type_,
            reason: reason.into(),
            note: Some(cut(note, 1000)),
            action: action.into(),
            secondary: None,
        }));
    }

    fn note(&self, note: Note) {
        if let Some(notes) = &self.notes {
            // The writer lives as long as the runtime.
            let _ = notes.send(note);
        }
    }
}

/// The status object's data: a one-line summary and the round's view as JSON.
fn status_data(round: &Round, view: &MeshView) -> BTreeMap<String, String> {
    #[derive(serde::Serialize)]
    struct Object<'a> {
        ending: Ending,
        deferred: &'a [String],
        #[serde(flatten)]
        view: &'a MeshView,
    }
    let reachable = view.clusters.iter().filter(|c| c.reachable).count();
    let attached = view.pairs.iter().filter(|p| p.attached).count();
    let summary = format!(
        "{}: {reachable}/{} clusters reachable, {attached}/{} pairs attached, {} pending ({} destructive), {} blocker(s)",
        snake(&round.ending),
        view.clusters.len(),
        view.pairs.len(),
        view.pending.len(),
        view.pending.iter().filter(|p| p.destructive).count(),
        view.blockers.len()
    );
    // The observation's time changes every round: left out, so the object
    // is written only when the mesh's status changes.
    let mut value = serde_json::to_value(Object {
        ending: round.ending,
        deferred: &round.deferred,
        view,
    })
    .unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.remove("observed_at");
    }
    BTreeMap::from([
        ("summary".to_string(), summary),
        (
            "status.json".to_string(),
            serde_json::to_string_pretty(&value).unwrap_or_default(),
        ),
    ])
}

fn snake<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// At most `max` bytes, cut at a character boundary: the Events API refuses
/// a longer note.
fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max - 3;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}
