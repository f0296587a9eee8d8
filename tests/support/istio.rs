//! Istio's own multi-cluster secret controller, run against one primary of
//! the test control plane by the Go program in `tests/istiocheck/`.
//!
//! This module builds that program once per source change (cached under
//! `target/tmp/istiocheck/` like the control plane, by the same source hash and
//! under a file lock), starts it for a primary ([`Reporter`]), and waits for what Istio
//! reports to meet a condition. It only reads what Istio reports: it does not
//! decide for Istio what a remote secret means. The program stops when its
//! stdin closes, which happens when the [`IstioCheck`] drops or this process
//! exits.
//!
//! ```ignore
//! let istio = IstioCheck::start(clusters.by_name("a"), "a", "istio-system");
//! istio.wait_for("both peers synced", |s| s.synced_ids() == ["b", "c"]).await;
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize;

use super::controlplane::Cluster;
use super::gobuild;
use super::reporter::Reporter;

/// The Go program's sources.
const GO_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/istiocheck");

/// How long a condition may take: Istio builds a client, starts its informers
/// and syncs them (its own remote-cluster timeout is 30s).
pub const ISTIO_TIMEOUT: Duration = Duration::from_secs(90);

/// One line of the program's output: everything Istio knows at that moment.
#[derive(Debug, Clone, Deserialize)]
pub struct Snapshot {
    /// The primary's own cluster id, as passed to the program.
    pub config_cluster: String,
    pub namespace: String,
    /// The controller's `HasSynced`: the secrets present at start are processed
    /// and every remote cluster has synced or timed out.
    pub synced: bool,
    /// Istio's remote clusters (the controller's `ListRemoteClusters`), by id.
    pub clusters: Vec<Remote>,
    /// Cluster ids whose kubeconfig Istio's client builder refused, with its error.
    pub rejected: Vec<Rejection>,
}

/// One remote cluster as Istio sees it.
#[derive(Debug, Clone, Deserialize)]
pub struct Remote {
    pub id: String,
    /// `namespace/name` of the remote secret it came from.
    pub secret: String,
    /// Istio's sync status: `syncing`, `synced`, `timeout` or `closed`.
    pub status: String,
    /// A namespace list through the client Istio built succeeded on the latest probe.
    pub client_ok: bool,
    pub client_error: Option<String>,
    /// The `topology.istio.io/network` label of the mesh namespace in that
    /// cluster, read as istiod's kube registry reads it; `None` until seen.
    pub network: Option<String>,
    /// How often Istio built a client for this id (one per distinct kubeconfig).
    pub builds: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Rejection {
    pub cluster: String,
    pub error: String,
}

impl Snapshot {
    pub fn cluster(&self, id: &str) -> Option<&Remote> {
        self.clusters.iter().find(|c| c.id == id)
    }

    /// Ids of remote clusters Istio has synced and whose client works, sorted.
    pub fn synced_ids(&self) -> Vec<&str> {
        self.clusters
            .iter()
            .filter(|c| c.is_healthy())
            .map(|c| c.id.as_str())
            .collect()
    }

    /// Ids of every remote cluster Istio holds, whatever its state, sorted.
    pub fn ids(&self) -> Vec<&str> {
        self.clusters.iter().map(|c| c.id.as_str()).collect()
    }

    pub fn rejection(&self, id: &str) -> Option<&str> {
        self.rejected.iter().find(|r| r.cluster == id).map(|r| r.error.as_str())
    }
}

impl Remote {
    /// Synced by Istio, and its Istio-built client reads the cluster.
    pub fn is_healthy(&self) -> bool {
        self.status == "synced" && self.client_ok
    }
}

/// A running istiocheck for one primary.
pub struct IstioCheck {
    reports: Reporter<Snapshot>,
}

impl IstioCheck {
    /// Starts Istio's secret controller against `primary` (its kubeconfig
    /// context), as istiod with `CLUSTER_ID=cluster_id` in `namespace`.
    pub fn start(primary: &Cluster, cluster_id: &str, namespace: &str) -> IstioCheck {
        let mut cmd = Command::new(binary());
        cmd.arg("-kubeconfig").arg(primary.kubeconfig()).args([
            "-context",
            primary.name(),
            "-cluster-id",
            cluster_id,
            "-namespace",
            namespace,
        ]);
        IstioCheck {
            reports: Reporter::spawn(cmd, "istiocheck", cluster_id),
        }
    }

    /// The latest snapshot, if any arrived.
    pub fn latest(&self) -> Option<Snapshot> {
        self.reports.latest()
    }

    /// The program's stderr: Istio's own log.
    pub fn log(&self) -> &Path {
        self.reports.log()
    }

    /// Waits until Istio's report meets `condition`, for at most
    /// [`ISTIO_TIMEOUT`]; panics with the last report and Istio's log otherwise.
    pub async fn wait_for(&self, what: &str, condition: impl Fn(&Snapshot) -> bool) -> Snapshot {
        self.wait_for_within(what, ISTIO_TIMEOUT, condition).await
    }

    pub async fn wait_for_within(
        &self,
        what: &str,
        timeout: Duration,
        condition: impl Fn(&Snapshot) -> bool,
    ) -> Snapshot {
        self.reports
            .wait_for(what, timeout, condition, |s| format!("{s:#?}"))
            .await
    }
}

/// The program, built on first use in this process and whenever its sources
/// change.
fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    // A cold build compiles a large part of istio.io/istio and client-go: minutes.
    BINARY.get_or_init(|| gobuild::build_cached("istiocheck", Path::new(GO_DIR), &["-trimpath", "-ldflags", "-s -w"]))
}
