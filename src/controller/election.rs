//! Leader election among controller replicas: a Lease in the controller's
//! own namespace, taken, renewed and judged exactly as the apply lock is
//! (`apply/lock.rs`, client-go's `tools/leaderelection` semantics: a lease is
//! free once seen unrenewed for its duration by the local clock). Only the
//! leader reconciles; the apply lock still guards every write, so even two
//! leaders at once (a partition) could not write together. It decides
//! nothing about the mesh and prints nothing.

use std::time::Duration;

use crate::access::{Connections, Sources};
use crate::apply::Cancel;
use crate::apply::lock::{self, Lock, LockError};
use crate::topology::Topology;

/// Where the election's Lease lives: a cluster of mesh.toml (reached through
/// its kubeconfig, as every round reaches it) and a namespace there.
#[derive(Debug, Clone)]
pub struct Election {
    pub cluster: String,
    pub namespace: String,
    /// How long the lease lasts unrenewed: a dead leader is replaced after
    /// about this long.
    pub duration: Duration,
}

impl Election {
    /// The Lease's name: one per mesh, beside the apply lock's `meshform-<mesh>`.
    pub fn lease(&self, mesh: &str) -> String {
        format!("meshform-controller-{mesh}")
    }
}

/// Waits until this replica leads; an error (the cluster out of reach, no
/// access to Leases there) is returned for the caller to report and retry.
pub async fn lead(
    topology: &Topology,
    sources: &Sources,
    election: &Election,
    holder: &str,
) -> Result<Lock, LockError> {
    let connections = Connections::open(topology, sources).await;
    let client = match connections.cluster(&election.cluster) {
        Some(Ok(connection)) => connection.client.clone(),
        Some(Err(error)) => {
            return Err(LockError::Unreachable {
                cluster: election.cluster.clone(),
                reason: error.to_string(),
            });
        }
        None => {
            return Err(LockError::Unreachable {
                cluster: election.cluster.clone(),
                reason: "it is not a cluster of mesh.toml (--leader-election-cluster)".into(),
            });
        }
    };
    let settings = lock::LockSettings {
        holder: holder.to_string(),
        duration: election.duration,
        // Held by the leader: look again, for as long as it takes.
        wait: Duration::from_secs(3600),
    };
    let name = election.lease(&topology.mesh.name);
    loop {
        match lock::acquire_named(
            client.clone(),
            &election.cluster,
            &election.namespace,
            &name,
            &topology.mesh.name,
            &settings,
            // Shutdown drops the wait instead (controller/mod.rs).
            &Cancel::new(),
        )
        .await
        {
            Err(LockError::Held { .. }) => continue,
            other => return other,
        }
    }
}
