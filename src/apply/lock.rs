//! One apply per mesh at a time: a `coordination.k8s.io` Lease, held and
//! renewed while apply runs, that expires on its own if its holder dies.
//! It is given a client ([`crate::access`]); which primary holds it is the
//! caller's choice.

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

use crate::objects;

#[derive(Debug, Error, Diagnostic)]
pub enum LockError {
    /// Another apply holds the lock.
    #[error("another apply of mesh {mesh:?} is running: lock held by {holder} since {since}, until at least {until}")]
    #[diagnostic(
        code(meshform::apply::lock),
        help("wait for the other apply, or pass --lock-timeout 5m to wait for it")
    )]
    Held {
        mesh: String,
        holder: String,
        since: String,
        until: String,
    },
    /// The lock lives in the mesh namespace, which this cluster does not
    /// have yet (a create there is refused with 404, whatever else exists).
    #[error("cannot take the apply lock: namespace {namespace} does not exist in cluster {cluster}")]
    #[diagnostic(
        code(meshform::apply::lock_namespace),
        help(
            "the lock is a Lease in the mesh namespace of a primary: create the namespace on \
             {cluster} first (`kubectl create namespace {namespace}`), as Istio's multi-cluster \
             install does before it labels it, or install Istio there"
        )
    )]
    NoNamespace { cluster: String, namespace: String },
    /// The lock could not be read or written.
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

fn expired(lease: &Lease, now: Timestamp) -> bool {
    let Some(spec) = &lease.spec else { return true };
    if spec.holder_identity.as_deref().is_none_or(str::is_empty) {
        return true;
    }
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()).map(|t| t.0);
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    renewed.is_none_or(|t| t.as_second() + duration < now.as_second())
}

/// Takes the lock of `mesh` in `namespace` of the lock cluster, waiting up
/// to `settings.wait` while another apply holds it.
pub async fn acquire(
    client: kube::Client,
    cluster: &str,
    namespace: &str,
    mesh: &str,
    settings: &LockSettings,
) -> Result<Lock, LockError> {
    let name = objects::lock_lease(mesh);
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let fail = |e: kube::Error| LockError::Api {
        cluster: cluster.to_string(),
        namespace: namespace.to_string(),
        name: name.clone(),
        reason: crate::access::error_chain(&e),
    };
    let deadline = tokio::time::Instant::now() + settings.wait;
    let seconds = i32::try_from(settings.duration.as_secs().max(1)).unwrap_or(i32::MAX);
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
            Some(current) if expired(&current, now) => {
                // Replace carries the resourceVersion: of two takers, one wins.
                let lease = Lease {
                    metadata: current.metadata.clone(),
                    spec: Some(spec),
                };
                api.replace(&name, &PostParams::default(), &lease).await
            }
            Some(current) => {
                if tokio::time::Instant::now() >= deadline {
                    let spec = current.spec.unwrap_or_default();
                    let since = spec.acquire_time.map_or_else(|| "?".to_string(), |t| t.0.to_string());
                    let until = spec.renew_time.map_or_else(
                        || "?".to_string(),
                        |t| {
                            let secs = i64::from(spec.lease_duration_seconds.unwrap_or(0));
                            (t.0 + jiff::SignedDuration::from_secs(secs)).to_string()
                        },
                    );
                    return Err(LockError::Held {
                        mesh: mesh.to_string(),
                        holder: spec.holder_identity.unwrap_or_default(),
                        since,
                        until,
                    });
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        match attempt {
            Ok(lease) => return Ok(start_renewing(api, name, lease, settings.duration)),
            // The server answered (it exists, or this client may not create
            // it): what the lease says decides. A cluster that did not
            // answer is not asked twice.
            Err(kube::Error::Api(_)) if blind => continue,
            // Someone else took it between our read and our write: look again.
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

fn start_renewing(api: Api<Lease>, name: String, lease: Lease, duration: Duration) -> Lock {
    let lost = Arc::new(AtomicBool::new(false));
    let (stop, mut stopped) = watch::channel(false);
    let renewer = {
        let (api, name, lost) = (api.clone(), name.clone(), lost.clone());
        tokio::spawn(async move {
            let mut lease = lease;
            let every = (duration / 3).max(Duration::from_millis(200));
            let mut renewed_at = tokio::time::Instant::now();
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
                        renewed_at = tokio::time::Instant::now();
                        wait = every;
                    }
                    // A slow or briefly unreachable API server is not a lost
                    // lock: retry soon, and give up only once the lease may
                    // have expired for others (or another holder took it).
                    Err(taken) if taken || renewed_at.elapsed() >= duration => {
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
