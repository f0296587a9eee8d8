//! Cluster access: from a topology's clusters to ready kube clients, and what
//! a failed request means. observe (reads), apply (writes) and the apply lock
//! all reach clusters through it, so it belongs to none of them.
//!
//! It owns kubeconfig files, contexts, addresses, CA bundles, the client's
//! transport and the classification of kube errors. It sends no request of
//! its own (clients connect on first use) and knows nothing of the objects
//! meshform reads or writes. Credentials stay inside the `kube::Config` and
//! never reach an error message or a `Debug` output of this module.

mod error;
mod kubeconfig;
mod transport;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use self::error::{error_chain, is_timeout};
pub use self::kubeconfig::ConnectError;
use crate::topology::Topology;

/// Where to find kubeconfig files for clusters that do not name one.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Directory of mesh.toml: relative `kubeconfig` paths start here.
    pub base_dir: PathBuf,
    /// `--kubeconfig`: overrides $KUBECONFIG and ~/.kube/config.
    pub kubeconfig: Option<PathBuf>,
    /// Per-request timeout: connecting, and each whole request (response
    /// body included).
    pub timeout: Duration,
    /// TCP and HTTP/2 keepalive: a connection silent this long is pinged,
    /// and dropped when the ping is not answered in half that time; zero
    /// sends no keepalive.
    pub keepalive: Duration,
}

/// client-go's HTTP/2 read-idle timeout and TCP keepalive (30 s).
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(30);

/// [`Connection::insecure`] of a kubeconfig with `insecure-skip-tls-verify`.
pub const SKIPS_TLS_VERIFY: &str = "sets insecure-skip-tls-verify";

/// A ready client for one cluster, with the facts peers need about it.
pub struct Connection {
    pub cluster: String,
    pub context: String,
    /// API server address from the kubeconfig.
    pub server: String,
    /// The CA bundle (PEM) that verifies `server`, when the kubeconfig has one.
    pub ca_pem: Option<Vec<u8>>,
    /// The name `server`'s certificate is verified against, when the
    /// kubeconfig says (`tls-server-name`): peers must verify it the same way.
    pub tls_server_name: Option<String>,
    /// Why the connection is unverified (`insecure-skip-tls-verify`, an
    /// `http://` server), when mesh.toml allows that for the cluster.
    pub insecure: Option<&'static str>,
    pub client: kube::Client,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("cluster", &self.cluster)
            .field("context", &self.context)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// Every cluster of a topology: a ready client for each one whose kubeconfig
/// could be used, and why not for the others. A failure here is no error of
/// the run: observe reports such a cluster as unknown, apply skips it.
#[derive(Debug, Default)]
pub struct Connections {
    ready: BTreeMap<String, Connection>,
    failed: BTreeMap<String, ConnectError>,
    /// mesh.toml's directory: where `[mesh.trust]` paths start.
    base_dir: PathBuf,
}

impl Connections {
    /// Builds a client for every cluster of `topology`, in its order.
    pub async fn open(topology: &Topology, sources: &Sources) -> Connections {
        // Kubeconfig files are parsed once; an exec plugin runs once per
        // cluster, as kube builds the client's auth layer.
        let mut cache = kubeconfig::KubeconfigCache::default();
        let mut connections = Connections {
            base_dir: sources.base_dir.clone(),
            ..Connections::default()
        };
        for cluster in &topology.clusters {
            match kubeconfig::connect(cluster, sources, &mut cache).await {
                Ok(connection) => {
                    connections.ready.insert(cluster.name.clone(), connection);
                }
                Err(error) => {
                    connections.failed.insert(cluster.name.clone(), error);
                }
            }
        }
        connections
    }

    /// The ready client of `cluster`.
    /// mesh.toml's directory.
    pub fn base_dir(&self) -> &std::path::Path {
        &self.base_dir
    }

    pub fn get(&self, cluster: &str) -> Option<&Connection> {
        self.ready.get(cluster)
    }

    /// `cluster`'s client, or why it has none; `None` for a cluster these
    /// connections were not opened for.
    pub fn cluster(&self, cluster: &str) -> Option<Result<&Connection, &ConnectError>> {
        match self.ready.get(cluster) {
            Some(connection) => Some(Ok(connection)),
            None => self.failed.get(cluster).map(Err),
        }
    }

    /// The ready clients, by cluster name.
    pub fn ready(&self) -> impl Iterator<Item = &Connection> {
        self.ready.values()
    }

    /// The clusters without a client, by name, and why.
    pub fn failures(&self) -> impl Iterator<Item = (&str, &ConnectError)> {
        self.failed.iter().map(|(name, error)| (name.as_str(), error))
    }

    /// The ready clients, by cluster name; tests wrap them in layers of their own.
    pub fn ready_mut(&mut self) -> impl Iterator<Item = &mut Connection> {
        self.ready.values_mut()
    }
}
