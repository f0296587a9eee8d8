//! One apply per mesh at a time: a `coordination.k8s.io` Lease, held and
//! renewed while apply runs, that others take only once its holder stopped
//! renewing it. It is given a client ([`crate::access`]) for the one cluster
//! the topology names for it ([`crate::topology::Topology::lock_cluster`]);
//! it never looks for the lock anywhere else.
//!
//! Expiry is judged as client-go's leader election judges it
//! (k8s.io/client-go `tools/leaderelection/leaderelection.go`:
//! `tryAcquireOrRenew`, `isLeaseValid`, `setObservedRecord`): the times in
//! the Lease were written by the holder's clock and are never compared with
//! ours. A lease is free once this process has watched its record stay the
//! same for the lease's duration, by the local monotonic clock; every
//! renewal changes the record and starts the watch again. A holder with a
//! skewed clock therefore keeps its lock as long as it renews it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams, Preconditions};
use miette::Diagnostic;
use thiserror::Error;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::objects;

#[derive(Debug, Error, Diagnostic)]
pub enum LockError {
    /// Another apply holds the lock.
    #[error("another apply of mesh {mesh:?} is running: lock held by {holder} since {since}, until at least {until}")]
    #[diagnostic(
        code(meshform::apply::lock),
        help(
            "wait for the other apply, or pass --lock-timeout 5m to wait for it; a lock whose holder \
             died is taken once meshform has seen it go unrenewed for its duration ({seconds}s)"
        )
    )]
    Held {
        mesh: String,
        holder: String,
        /// When the holder says it took the lock, by its own clock.
        since: String,
        /// This process's clock: now plus what is left of the lease's
        /// duration since its record last changed here.
        until: String,
        seconds: i32,
    },
    /// The lock lives in the mesh namespace, which the lock cluster does not
    /// have yet (a create there is refused with 404, whatever else exists).
    #[error("cannot take the apply lock: namespace {namespace} does not exist in cluster {cluster}")]
    #[diagnostic(
        code(meshform::apply::lock_namespace),
        help(
            "the lock is a Lease in the mesh namespace of cluster {cluster} (`[mesh] lock_cluster` in mesh.toml, by default the first primary by name): create the \
             namespace there first (`kubectl create namespace {namespace}`), as Istio's multi-cluster \
             install does before it labels it, or install Istio there"
        )
    )]
    NoNamespace { cluster: String, namespace: String },
    /// The lock cluster cannot be reached: no client, or no answer.
    #[error("cannot take the apply lock: cluster {cluster}, which holds it, cannot be reached: {reason}")]
    #[diagnostic(
        code(meshform::apply::lock_unreachable),
        help(
            "every apply of this mesh locks cluster {cluster} (`[mesh] lock_cluster` in mesh.toml, by default the first primary by name) and no other, so that two \
             applies never lock different clusters; nothing was written. Fix access to {cluster}, or \
             name a cluster every apply can reach in `lock_cluster` (change it only while no apply runs)"
        )
    )]
    Unreachable { cluster: String, reason: String },
    /// Asked to stop (SIGINT, SIGTERM) while waiting for the lock.
    #[error("stopped by {0} while waiting for the apply lock; nothing was written")]
    #[diagnostic(code(meshform::apply::stopped))]
    Stopped(super::Stop),
    /// The server refused to read or write the lock.
    #[error("cannot take the apply lock Lease {namespace}/{name} in cluster {cluster}: {reason}")]
    #[diagnostic(
        code(meshform::apply::lock),
        help("meshform needs to get, create and update Leases in {namespace} of {cluster}; check its access there")
    )]
    Api {
        cluster: String,
        namespace: String,
        name: String,
        reason: String,
    },
}

/// A held lock; renewed in the background until released.
pub struct Lock {
    api: Api<Lease>,
    name: String,
    lost: Arc<AtomicBool>,
    stop: watch::Sender<bool>,
    renewer: tokio::task::JoinHandle<Option<Lease>>,
}

pub struct LockSettings {
    /// Who holds it, as shown to a second apply.
    pub holder: String,
    /// How long the lease lasts without renewal.
    pub duration: Duration,
    /// How long to wait for a held lock before giving up.
    pub wait: Duration,
}

/// This process as a lock holder: meshform's version, user, host and pid,
/// so that a second apply can say whom it waits for.
pub fn process_holder() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "unknown-host".into());
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    format!(
        "meshform {} ({user}@{host}, pid {})",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    )
}

fn micro(t: Timestamp) -> MicroTime {
    MicroTime(t)
}

/// What a lease says, as client-go's `LeaderElectionRecord` holds it: any
/// change of it is a renewal (or a new holder), whatever its times say.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    holder: Option<String>,
    duration_seconds: Option<i32>,
    acquired: Option<Timestamp>,
    renewed: Option<Timestamp>,
    transitions: Option<i32>,
}

impl Record {
    fn of(lease: &Lease) -> Record {
        let spec = lease.spec.clone().unwrap_or_default();
        Record {
            holder: spec.holder_identity,
            duration_seconds: spec.lease_duration_seconds,
            acquired: spec.acquire_time.map(|t| t.0),
            renewed: spec.renew_time.map(|t| t.0),
            transitions: spec.lease_transitions,
        }
    }

    /// How long the record must be seen unchanged before it is free.
    fn duration(&self) -> Duration {
        Duration::from_secs(self.duration_seconds.unwrap_or(0).max(0).unsigned_abs().into())
    }

    fn held(&self) -> bool {
        self.holder.as_deref().is_some_and(|h| !h.is_empty())
    }
}

/// The record last seen and when this process first saw it (its
/// `observedRecord` and `observedTime` in client-go).
struct Observation {
    record: Record,
    since: Instant,
}

impl Observation {
    /// Notes `record`, read now; the watch restarts when it changed.
    fn see(seen: &mut Option<Observation>, record: Record) -> &Observation {
        if seen.as_ref().is_none_or(|o| o.record != record) {
            *seen = Some(Observation {
                record,
                since: Instant::now(),
            });
        }
        seen.as_ref().expect("just set")
    }

    /// When the lease is free to take, by the local clock: never before its
    /// record has been seen unchanged for its duration (client-go's
    /// `isLeaseValid`), at once when nobody holds it.
    fn free_at(&self) -> Instant {
        if self.record.held() {
            self.since + self.record.duration()
        } else {
            self.since
        }
    }
}

/// Takes the lock of `mesh` in `namespace` of `cluster`, waiting up to
/// `settings.wait` while another apply holds it.
pub async fn acquire(
    client: kube::Client,
    cluster: &str,
    namespace: &str,
    mesh: &str,
    settings: &LockSettings,
    cancel: &super::Cancel,
) -> Result<Lock, LockError> {
    acquire_named(
        client,
        cluster,
        namespace,
        &objects::lock_lease(mesh),
        mesh,
        settings,
        cancel,
    )
    .await
}

/// [`acquire`] for the Lease `name`: the controller's leader election is
/// the same lease, held and judged the same way, under another name.
pub async fn acquire_named(
    client: kube::Client,
    cluster: &str,
    namespace: &str,
    name: &str,
    mesh: &str,
    settings: &LockSettings,
    cancel: &super::Cancel,
) -> Result<Lock, LockError> {
    let name = name.to_string();
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let fail = |e: kube::Error| match e {
        // The server answered and refused: its words say why (RBAC, mostly).
        kube::Error::Api(_) => LockError::Api {
            cluster: cluster.to_string(),
            namespace: namespace.to_string(),
            name: name.clone(),
            reason: crate::access::error_chain(&e),
        },
        // No answer: the lock is here or nowhere, so apply stops.
        e => LockError::Unreachable {
            cluster: cluster.to_string(),
            reason: crate::access::error_chain(&e),
        },
    };
    let deadline = Instant::now() + settings.wait;
    let seconds = i32::try_from(settings.duration.as_secs().max(1)).unwrap_or(i32::MAX);
    let mut seen: Option<Observation> = None;
    // Mostly no lease exists: try to create it before reading it, one
    // request fewer. A refused create reads the lease as before, so a held
    // lock is still reported as held, whatever the create said.
    let mut unread = true;
    loop {
        let now = Timestamp::now();
        let spec = LeaseSpec {
            holder_identity: Some(settings.holder.clone()),
            lease_duration_seconds: Some(seconds),
            acquire_time: Some(micro(now)),
            renew_time: Some(micro(now)),
            ..LeaseSpec::default()
        };
        let blind = std::mem::take(&mut unread);
        let current = if blind {
            None
        } else {
            api.get_opt(&name).await.map_err(fail)?
        };
        let creating = current.is_none();
        // The holding starts, for the renewer's reckoning, when the write that took it was sent.
        let sent = Instant::now();
        let attempt = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        labels: Some(objects::managed_labels(mesh)),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec),
                };
                api.create(&PostParams::default(), &lease).await
            }
            Some(current) => {
                let observation = Observation::see(&mut seen, Record::of(&current));
                let free_at = observation.free_at();
                if Instant::now() >= free_at {
                    // Replace carries the resourceVersion: of two takers, one
                    // wins, and a renewal since our read fails the write.
                    let transitions = current.spec.as_ref().and_then(|s| s.lease_transitions).unwrap_or(0);
                    let lease = Lease {
                        metadata: current.metadata.clone(),
                        spec: Some(LeaseSpec {
                            lease_transitions: Some(transitions.saturating_add(1)),
                            ..spec
                        }),
                    };
                    api.replace(&name, &PostParams::default(), &lease).await
                } else {
                    let waited_out = Instant::now() >= deadline;
                    if waited_out {
                        let record = &observation.record;
                        let left = free_at.saturating_duration_since(Instant::now());
                        let until = jiff::SignedDuration::try_from(left)
                            .map_or_else(|_| "?".to_string(), |left| (now + left).to_string());
                        return Err(LockError::Held {
                            mesh: mesh.to_string(),
                            holder: record.holder.clone().unwrap_or_default(),
                            since: record.acquired.map_or_else(|| "?".to_string(), |t| t.to_string()),
                            until,
                            seconds: record.duration_seconds.unwrap_or(0),
                        });
                    }
                    // Look again soon: a renewal restarts the watch, a
                    // release frees the lease at once.
                    let next = (Instant::now() + Duration::from_millis(500)).min(free_at).min(deadline);
                    // Asked to stop while waiting: give up the wait, never a
                    // request in flight (a create cut off could leave a lease
                    // nobody releases).
                    tokio::select! {
                        () = tokio::time::sleep_until(next) => {}
                        stop = cancel.wait() => return Err(LockError::Stopped(stop)),
                    }
                    continue;
                }
            }
        };
        match attempt {
            Ok(lease) => return Ok(start_renewing(api, name, lease, settings.duration, sent)),
            // The server answered (it exists, or this client may not create
            // it): what the lease says decides. A cluster that did not
            // answer is not asked twice.
            Err(kube::Error::Api(_)) if blind => continue,
            // Someone else took or renewed it between our read and our write: look again.
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            // A create is refused with 404 only when its namespace does not
            // exist. A replace's 404 is a lease deleted since it was read
            // (its holder released it): look again.
            Err(kube::Error::Api(status)) if status.code == 404 && !creating => continue,
            Err(kube::Error::Api(status)) if status.code == 404 => {
                return Err(LockError::NoNamespace {
                    cluster: cluster.to_string(),
                    namespace: namespace.to_string(),
                });
            }
            Err(e) => return Err(fail(e)),
        }
    }
}

/// Whether `current` is still the holding `ours` started: same holder, same acquisition.
fn same_holding(current: &Lease, ours: &Lease) -> bool {
    let key = |l: &Lease| {
        l.spec
            .as_ref()
            .map(|s| (s.holder_identity.clone(), s.acquire_time.clone()))
    };
    key(current).is_some() && key(current) == key(ours)
}

fn start_renewing(api: Api<Lease>, name: String, lease: Lease, duration: Duration, taken: Instant) -> Lock {
    let lost = Arc::new(AtomicBool::new(false));
    let (stop, mut stopped) = watch::channel(false);
    let renewer = {
        let (api, name, lost) = (api.clone(), name.clone(), lost.clone());
        tokio::spawn(async move {
            let mut lease = lease;
            let every = (duration / 3).max(Duration::from_millis(200));
            // Another apply may take the lease once it has seen it unchanged
            // for `duration`, timed from a read it made after our last
            // renewal reached the server. Timing ours from when that renewal
            // was sent, and giving up at two thirds of it (client-go's
            // RenewDeadline beside its LeaseDuration), keeps the two apart.
            let deadline = duration * 2 / 3;
            let mut renewed_at = taken;
            let mut wait = every;
            loop {
                tokio::select! {
                    _ = stopped.changed() => return Some(lease),
                    () = tokio::time::sleep(wait) => {}
                }
                let mut next = lease.clone();
                if let Some(spec) = next.spec.as_mut() {
                    spec.renew_time = Some(micro(Timestamp::now()));
                }
                let sent = Instant::now();
                let outcome = match api.replace(&name, &PostParams::default(), &next).await {
                    Ok(renewed) => Ok(renewed),
                    // A renewal whose answer was lost may have gone through:
                    // the lease is still ours if it still names our holder and
                    // acquisition, whatever its resourceVersion now is.
                    Err(kube::Error::Api(status)) if status.code == 409 => match api.get_opt(&name).await {
                        Ok(Some(current)) if same_holding(&current, &lease) => Ok(current),
                        Ok(_) => Err(true),
                        Err(_) => Err(false),
                    },
                    Err(_) => Err(false),
                };
                match outcome {
                    Ok(current) => {
                        lease = current;
                        renewed_at = sent;
                        wait = every;
                    }
                    // A slow or briefly unreachable API server is not a lost
                    // lock: retry soon, and give up only once the lease may
                    // soon be taken by others (or another holder took it).
                    Err(taken) if taken || renewed_at.elapsed() >= deadline => {
                        // Another apply may now take it; stop at the next phase.
                        lost.store(true, Ordering::SeqCst);
                        return None;
                    }
                    Err(_) => wait = (every / 4).max(Duration::from_millis(100)),
                }
            }
        })
    };
    Lock {
        api,
        name,
        lost,
        stop,
        renewer,
    }
}

impl Lock {
    /// The lock could not be renewed: another apply may hold it now.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Stops renewing and deletes the lease, if it is still ours.
    pub async fn release(self) {
        let _ = self.stop.send(true);
        if let Ok(Some(lease)) = self.renewer.await {
            let preconditions = Preconditions {
                uid: lease.metadata.uid.clone(),
                resource_version: lease.metadata.resource_version.clone(),
            };
            let params = DeleteParams {
                preconditions: Some(preconditions),
                ..DeleteParams::default()
            };
            // A busy API server may time one request out; a lock left
            // behind would block the next apply until it expires, so try a
            // few times. Gone (404) or changed (409) means it is not ours.
            for attempt in 0..3u32 {
                match self.api.delete(&self.name, &params).await {
                    Ok(_) => return,
                    Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => return,
                    Err(_) => tokio::time::sleep(Duration::from_millis(250 << attempt)).await,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed: Timestamp, seconds: i32) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(seconds),
                acquire_time: Some(micro(renewed)),
                renew_time: Some(micro(renewed)),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn a_lease_is_free_once_seen_unchanged_for_its_duration_whatever_its_times_say() {
        // By its own times this lease ended an hour ago; that counts for nothing.
        let an_hour_ago = Timestamp::now() - jiff::SignedDuration::from_hours(1);
        let mut seen = None;
        let since = Observation::see(&mut seen, Record::of(&lease("a", an_hour_ago, 30))).since;
        let first = seen.as_ref().expect("seen");
        assert_eq!(first.free_at(), since + Duration::from_secs(30));

        // Seen again unchanged: the watch goes on from the first sight.
        let again = Observation::see(&mut seen, Record::of(&lease("a", an_hour_ago, 30)));
        assert_eq!(again.since, since);

        // Renewed, even to a time further in the past (a clock set back): the watch restarts.
        std::thread::sleep(Duration::from_millis(2));
        let earlier = an_hour_ago - jiff::SignedDuration::from_secs(1);
        let renewed = Observation::see(&mut seen, Record::of(&lease("a", earlier, 30)));
        assert!(renewed.since > since);
        assert_eq!(renewed.free_at(), renewed.since + Duration::from_secs(30));
    }

    #[test]
    fn a_lease_nobody_holds_is_free_at_once() {
        let mut seen = None;
        let released = Observation::see(&mut seen, Record::of(&lease("", Timestamp::now(), 30)));
        assert_eq!(released.free_at(), released.since);
    }
}
