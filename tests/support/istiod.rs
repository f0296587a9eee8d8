//! A real istiod, run for one primary of the test control plane by the Go
//! program in `tests/istiod/`, and asked through xDS, as sidecars of given
//! networks and clusters, for the endpoints of given Services.
//!
//! This module builds that program once per source change (cached under
//! `target/tmp/istiod/` by [`gobuild`], like the control plane), starts it
//! for a primary ([`Reporter`]), and waits for what istiod answers to meet a condition. It
//! only reads istiod's answers: EDS as each proxy last received it, and
//! istiod's own `/debug/networkz` and `/debug/clusterz`. It never decides for
//! istiod which endpoint a proxy should get; the tests do, from mesh.toml.
//! The program stops when its stdin closes, which happens when the
//! [`Istiod`] drops or this process exits.
//!
//! ```ignore
//! let root = RootCa::generate();
//! let istiod = Istiod::start(east1, &IstiodConfig::new("east1").root(&root).proxy("p", "east", "east1").service(ECHO));
//! istiod.wait_for("east1's pods", |s| s.proxy("p").endpoints(ECHO).len() == 2).await;
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize;

use super::controlplane::Cluster;
use super::gobuild;
use super::mesh::{MESH, NAMESPACE};
use super::reporter::Reporter;
use super::wds::ZtunnelView;

/// The Go program's sources.
const GO_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/istiod");

/// How long a condition may take: istiod syncs every remote cluster (its
/// remote-cluster timeout is 30s), debounces changes (100ms by default) and
/// pushes; a network move detaches and re-attaches a cluster on the way.
pub const ISTIOD_TIMEOUT: Duration = Duration::from_secs(120);

/// One line of the program's output: istiod's answers at that moment.
#[derive(Debug, Clone, Deserialize)]
pub struct Snapshot {
    /// istiod's readiness (its `/ready` answers 200).
    pub ready: bool,
    pub cluster_id: String,
    /// The root certificate istiod's CA signs under (public).
    pub root_cert: String,
    pub proxies: Vec<ProxyView>,
    /// The ztunnels asking an ambient istiod (`support::wds`).
    #[serde(default)]
    pub ztunnels: Vec<ZtunnelView>,
    /// `/debug/networkz`: the cross-network gateways istiod knows.
    pub networkz: Option<Vec<NetworkGateway>>,
    /// `/debug/clusterz`: the clusters istiod reads, its own included.
    pub clusterz: Option<Vec<ClusterStatus>>,
    /// Every request other than a read istiod sent to the cluster it serves.
    pub writes: Vec<Write>,
    /// What istiod's CA answered a sidecar ([`IstiodConfig::workload_cert`]).
    #[serde(default)]
    pub workload: Option<WorkloadCert>,
}

/// A workload certificate istiod's CA issued to a sidecar's CSR, or why not yet.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkloadCert {
    /// The SPIFFE identity asked for.
    pub identity: String,
    /// PEM, leaf first and istiod's root last, as `CreateCertificate` answered.
    #[serde(default)]
    pub chain: Vec<String>,
    /// The last attempt's error.
    pub error: Option<String>,
}

/// One asking sidecar and the endpoints istiod last pushed to it.
#[derive(Debug, Clone, Deserialize)]
pub struct ProxyView {
    pub name: String,
    pub network: String,
    pub cluster: String,
    pub connected: bool,
    pub error: Option<String>,
    /// By `HOST:PORT`; absent until istiod has answered for the service.
    pub endpoints: BTreeMap<String, Vec<Endpoint>>,
}

/// One endpoint of istiod's EDS answer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub struct Endpoint {
    pub address: String,
    pub port: u32,
    /// The cluster istiod gives the endpoint (a gateway's is the gateway's cluster).
    pub cluster: String,
    /// `istio` when the proxy is to use mTLS to it.
    pub tls_mode: String,
    pub weight: u32,
}

/// A gateway as `/debug/networkz` shows it (Istio's `model.NetworkGateway`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub struct NetworkGateway {
    #[serde(rename = "Network")]
    pub network: String,
    #[serde(rename = "Cluster")]
    pub cluster: String,
    #[serde(rename = "Addr")]
    pub addr: String,
    #[serde(rename = "Port")]
    pub port: u32,
}

/// A cluster as `/debug/clusterz` shows it (Istio's `cluster.DebugInfo`).
#[derive(Debug, Clone, Deserialize)]
pub struct ClusterStatus {
    pub id: String,
    /// `namespace/name` of the remote secret; empty for istiod's own cluster.
    #[serde(rename = "secretName")]
    pub secret_name: String,
    /// `syncing`, `synced`, `timeout` or `closed`.
    #[serde(rename = "syncStatus")]
    pub sync_status: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Write {
    pub method: String,
    pub path: String,
    pub count: u32,
}

impl Snapshot {
    pub fn proxy(&self, name: &str) -> &ProxyView {
        self.proxies
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no proxy {name:?} asks this istiod"))
    }

    pub fn ztunnel(&self, name: &str) -> &ZtunnelView {
        self.ztunnels
            .iter()
            .find(|z| z.name == name)
            .unwrap_or_else(|| panic!("no ztunnel {name:?} asks this istiod"))
    }

    /// `/debug/networkz`, sorted.
    pub fn gateways(&self) -> Vec<NetworkGateway> {
        let mut gateways = self.networkz.clone().unwrap_or_default();
        gateways.sort();
        gateways
    }

    /// Cluster id → sync status, from `/debug/clusterz`.
    pub fn clusters(&self) -> BTreeMap<String, String> {
        self.clusterz
            .iter()
            .flatten()
            .map(|c| (c.id.clone(), c.sync_status.clone()))
            .collect()
    }
}

impl ProxyView {
    /// The endpoints of `service`, empty until istiod answered for it.
    pub fn endpoints(&self, service: &str) -> &[Endpoint] {
        self.endpoints.get(service).map(Vec::as_slice).unwrap_or_default()
    }

    /// `address:port` of the endpoints of `service`, by the cluster istiod gives each.
    pub fn by_cluster(&self, service: &str) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for e in self.endpoints(service) {
            out.entry(e.cluster.clone())
                .or_default()
                .push(format!("{}:{}", e.address, e.port));
        }
        for addresses in out.values_mut() {
            addresses.sort();
        }
        out
    }
}

/// A root CA shared by the istiods of a mesh (Istio's multi-cluster installs
/// begin with one: every primary gets an intermediate CA signed by it, the
/// `cacerts` Secret). Its key is test material in a temporary directory.
pub struct RootCa {
    dir: tempfile::TempDir,
}

impl RootCa {
    pub fn generate() -> RootCa {
        let dir = tempfile::tempdir().expect("a directory for the root CA");
        let output = Command::new(binary())
            .arg("-make-root")
            .arg(dir.path())
            .output()
            .expect("running istiod -make-root");
        assert!(
            output.status.success(),
            "istiod -make-root failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        RootCa { dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `root-cert.pem`: what every cluster's `istio-ca-root-cert` holds.
    pub fn cert(&self) -> String {
        fs::read_to_string(self.dir.path().join("root-cert.pem")).expect("reading the root certificate")
    }
}

/// How to run one istiod and whom to ask it as.
#[derive(Debug, Clone)]
pub struct IstiodConfig {
    cluster_id: String,
    root_ca: Option<PathBuf>,
    cacerts: bool,
    workload_cert: Option<String>,
    proxies: Vec<(String, String, String)>,
    services: Vec<String>,
    external: bool,
    ambient: bool,
    ztunnels: Vec<(String, String, String)>,
}

impl IstiodConfig {
    /// istiod with `CLUSTER_ID=cluster_id`, in the tests' mesh and namespace.
    pub fn new(cluster_id: &str) -> IstiodConfig {
        IstiodConfig {
            cluster_id: cluster_id.to_string(),
            root_ca: None,
            cacerts: false,
            workload_cert: None,
            proxies: Vec::new(),
            services: Vec::new(),
            external: false,
            ambient: false,
            ztunnels: Vec::new(),
        }
    }

    /// `EXTERNAL_ISTIOD`: istiod also manages the remotes whose mesh
    /// namespace names it as their control plane.
    pub fn external(mut self) -> IstiodConfig {
        self.external = true;
        self
    }

    /// Ambient multi-network istiod (`PILOT_ENABLE_AMBIENT`,
    /// `AMBIENT_ENABLE_MULTI_NETWORK`), Services labelled `istio.io/global=true`
    /// global, as the ambient profile makes them.
    pub fn ambient(mut self) -> IstiodConfig {
        self.ambient = true;
        self
    }

    /// Ask for workloads as a ztunnel named `name` on `network` in `cluster` (needs [`IstiodConfig::ambient`]).
    pub fn ztunnel(mut self, name: &str, network: &str, cluster: &str) -> IstiodConfig {
        self.ztunnels
            .push((name.to_string(), network.to_string(), cluster.to_string()));
        self
    }

    /// Plug in an intermediate CA signed by `root`; without, istiod's own self-signed CA.
    pub fn root(mut self, root: &RootCa) -> IstiodConfig {
        self.root_ca = Some(root.dir().to_path_buf());
        self
    }

    /// Plug in the cluster's own `cacerts` Secret (as meshform's managed
    /// trust writes it), where its volume would be mounted.
    pub fn cacerts(mut self) -> IstiodConfig {
        self.cacerts = true;
        self
    }

    /// Ask istiod's CA for a workload certificate as a sidecar of
    /// `namespace/account` does (over TLS on istiod's secure gRPC port, with
    /// a token of that ServiceAccount); see [`Snapshot::workload`].
    pub fn workload_cert(mut self, namespace_account: &str) -> IstiodConfig {
        self.workload_cert = Some(namespace_account.to_string());
        self
    }

    /// Ask as a sidecar named `name` on `network` in cluster `cluster`.
    pub fn proxy(mut self, name: &str, network: &str, cluster: &str) -> IstiodConfig {
        self.proxies
            .push((name.to_string(), network.to_string(), cluster.to_string()));
        self
    }

    /// Ask for the endpoints of `HOST:PORT`.
    pub fn service(mut self, service: &str) -> IstiodConfig {
        self.services.push(service.to_string());
        self
    }
}

/// A running istiod for one primary, and the sidecars asking it.
pub struct Istiod {
    reports: Reporter<Snapshot>,
}

impl Istiod {
    /// Starts istiod against `primary` (its kubeconfig context).
    pub fn start(primary: &Cluster, config: &IstiodConfig) -> Istiod {
        let mut cmd = Command::new(binary());
        cmd.arg("-kubeconfig")
            .arg(primary.kubeconfig())
            .args(["-context", primary.name()])
            .args(["-cluster-id", &config.cluster_id])
            .args(["-mesh-id", MESH, "-namespace", NAMESPACE]);
        if let Some(root) = &config.root_ca {
            cmd.arg("-root-ca").arg(root);
        }
        if config.cacerts {
            cmd.arg("-cacerts");
        }
        if let Some(account) = &config.workload_cert {
            cmd.args(["-workload-cert", account]);
        }
        for (name, network, cluster) in &config.proxies {
            cmd.arg("-proxy").arg(format!("{name}={network},{cluster}"));
        }
        for service in &config.services {
            cmd.args(["-service", service]);
        }
        if config.external {
            cmd.arg("-external-istiod");
        }
        if config.ambient {
            cmd.arg("-ambient");
        }
        for (name, network, cluster) in &config.ztunnels {
            cmd.arg("-ztunnel").arg(format!("{name}={network},{cluster}"));
        }
        Istiod {
            reports: Reporter::spawn(cmd, "istiod", &config.cluster_id),
        }
    }

    /// The latest snapshot, if any arrived.
    pub fn latest(&self) -> Option<Snapshot> {
        self.reports.latest()
    }

    /// How many snapshots arrived so far: a mark for [`Istiod::since`].
    pub fn mark(&self) -> usize {
        self.reports.mark()
    }

    /// Every snapshot that arrived after `mark`.
    pub fn since(&self, mark: usize) -> Vec<Snapshot> {
        self.reports.since(mark)
    }

    /// Everything istiod and its proxies printed and logged so far, for the
    /// leak check ([`super::mesh::Mesh::record`]).
    pub fn output(&self) -> String {
        self.reports.output()
    }

    /// istiod's log (the program's stderr).
    pub fn log(&self) -> &Path {
        self.reports.log()
    }

    /// Waits until istiod's answers meet `condition`, for at most
    /// [`ISTIOD_TIMEOUT`]; panics with the last snapshot and istiod's log otherwise.
    pub async fn wait_for(&self, what: &str, condition: impl Fn(&Snapshot) -> bool) -> Snapshot {
        let shown = |s: &Snapshot| {
            let mut s = s.clone();
            s.root_cert = format!("({} bytes)", s.root_cert.len());
            format!("{s:#?}")
        };
        self.reports.wait_for(what, ISTIOD_TIMEOUT, condition, shown).await
    }

    /// Waits until istiod's log holds `text` (for events istiod reports in
    /// no answer, such as swapping in a rebuilt cluster).
    pub async fn wait_for_log(&self, what: &str, text: &str) {
        self.reports.wait_for_log(what, text, ISTIOD_TIMEOUT).await;
    }
}

/// The program, built on first use in this process and whenever its sources
/// change. The same flags as `tests/istiocheck/`, so that the two share
/// compiled packages in the Go build cache.
fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    // A cold build compiles most of istio.io/istio's pilot: minutes.
    BINARY.get_or_init(|| gobuild::build_cached("istiod", Path::new(GO_DIR), &["-trimpath", "-ldflags", "-s -w"]))
}
