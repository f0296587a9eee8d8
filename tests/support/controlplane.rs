//! The test control plane: real kube-apiservers on loopback, run by the Go
//! program in `tests/controlplane/` (one process, one embedded etcd, one
//! apiserver plus its controllers per cluster).
//!
//! This module builds that program once per source change (cached under
//! `target/tmp/controlplane/`, guarded by a file lock so parallel test
//! binaries do not build it twice), starts it, and hands out clusters. It must
//! not outlive the test process: the plane stops when its stdin closes, which
//! happens when this process exits however it exits, and clusters a test asked
//! for are deleted when their [`Clusters`] guard drops, panics included.
//!
//! Typical use, one fresh set of clusters per test from one shared plane:
//!
//! ```ignore
//! let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
//! let east = clusters.by_name("east");
//! let namespaces: Api<Namespace> = Api::all(east.client());
//! ```

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use serde::Deserialize;

use super::gobuild;
use serde_json::{Value, json};

/// The Go program's sources.
const GO_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/controlplane");

/// A cold `go build` of kube-apiserver takes minutes on a small machine; a
/// plane's start after that takes seconds per cluster.
const READY_TIMEOUT: Duration = Duration::from_secs(600);

/// Starting clusters through the control endpoint waits for every earlier
/// start in the plane (they are serialised), so allow for a queue.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(600);

/// One running control-plane process.
pub struct ControlPlane {
    control: SocketAddr,
    kubeconfig: PathBuf,
    initial: Vec<ClusterInfo>,
    log: PathBuf,
    /// Holding stdin open keeps the plane alive; closing it stops the plane.
    process: Mutex<Option<(Child, ChildStdin)>>,
}

/// What the plane reports about one cluster.
#[derive(Debug, Clone, Deserialize)]
pub struct ClusterInfo {
    /// The kubeconfig context name, as asked for.
    pub name: String,
    /// Unique within the plane; fault controls address clusters by it.
    pub id: String,
    /// `https://127.0.0.1:PORT`; the port stays the same across stop and start.
    pub server: String,
    pub kube_system_uid: String,
    /// A kubeconfig with one context per cluster started together with this one.
    pub kubeconfig: PathBuf,
    pub running: bool,
    pub latency_ms: u64,
}

#[derive(Deserialize)]
struct ReadyLine {
    ready: bool,
    kubeconfig: PathBuf,
    control: SocketAddr,
    clusters: BTreeMap<String, ClusterInfo>,
}

impl ControlPlane {
    /// Starts a plane of its own with these clusters (kubeconfig contexts named
    /// as given), blocking until all serve. Dropping it stops the process.
    pub fn start(names: &[&str]) -> ControlPlane {
        let binary = binary();
        let log_dir = out_dir().join("logs");
        fs::create_dir_all(&log_dir).expect("creating the control-plane log directory");
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let log = log_dir.join(format!(
            "plane-{}-{}.log",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let stderr = File::create(&log).expect("creating the control-plane log");

        let mut child = Command::new(binary)
            .args(names)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");

        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent && let Ok(ready) = serde_json::from_str::<ReadyLine>(&line) {
                    sent = tx.send(ready).is_ok();
                }
            }
        });

        let ready = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(ready) if ready.ready => ready,
            outcome => {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "control plane did not become ready ({}; exit {status:?}); log {}:\n{}",
                    if outcome.is_err() {
                        "no ready line"
                    } else {
                        "ready=false"
                    },
                    log.display(),
                    log_tail(&log),
                );
            }
        };
        let mut initial: Vec<ClusterInfo> = ready.clusters.into_values().collect();
        initial.sort_by_key(|c| names.iter().position(|n| *n == c.name));
        ControlPlane {
            control: ready.control,
            kubeconfig: ready.kubeconfig,
            initial,
            log,
            process: Mutex::new(Some((child, stdin))),
        }
    }

    /// The process-wide plane, started (without clusters) on first use. Tests
    /// share the process but not clusters: each asks for its own with
    /// [`ControlPlane::clusters`]. It stops when the test process exits.
    pub fn shared() -> &'static ControlPlane {
        static SHARED: OnceLock<ControlPlane> = OnceLock::new();
        SHARED.get_or_init(|| ControlPlane::start(&[]))
    }

    /// The kubeconfig of the clusters named in [`ControlPlane::start`].
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The clusters named in [`ControlPlane::start`], in that order.
    pub fn initial(&self) -> &[ClusterInfo] {
        &self.initial
    }

    /// One request to the plane's own endpoints (`/gc`, `/memstats`,
    /// `/profile/...`: what the benchmarks use), as the reply's status and body.
    pub async fn control(&self, method: &'static str, path: &'static str) -> (u16, Vec<u8>) {
        let control = self.control;
        blocking(move || control_raw(control, method, path, None))
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// The plane's log (its stderr): apiserver and controller logs of every cluster.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Connects to the clusters named in [`ControlPlane::start`]. They live as
    /// long as the plane, so the guard does not delete them.
    pub async fn initial_clusters(&self) -> Clusters {
        let mut clusters = Vec::new();
        for info in &self.initial {
            clusters.push(Cluster::connect(info.clone(), self.control).await);
        }
        Clusters {
            kubeconfig: self.kubeconfig.clone(),
            clusters,
            control: self.control,
            delete_on_drop: false,
        }
    }

    /// Starts fresh clusters with these context names (unique within the call)
    /// and connects to them. Dropping the guard deletes them and their data.
    pub async fn clusters(&self, names: &[&str]) -> Clusters {
        let control = self.control;
        let body = json!({ "names": names });
        let reply = blocking(move || control_request(control, "POST", "/clusters", Some(&body)))
            .await
            .unwrap_or_else(|e| panic!("starting clusters {names:?}: {e}; log {}", self.log.display()));
        let kubeconfig: PathBuf = serde_json::from_value(reply["kubeconfig"].clone()).expect("kubeconfig path");
        let infos: Vec<ClusterInfo> = serde_json::from_value(reply["clusters"].clone()).expect("cluster list");
        // Delete what was made even if connecting below panics.
        let mut guard = Clusters {
            kubeconfig,
            clusters: Vec::new(),
            control,
            delete_on_drop: true,
        };
        let mut pending_ids: Vec<String> = infos.iter().map(|i| i.id.clone()).collect();
        for info in infos {
            pending_ids.retain(|id| *id != info.id);
            let cluster = Cluster::connect(info, control);
            match tokio::time::timeout(Duration::from_secs(60), cluster).await {
                Ok(cluster) => guard.clusters.push(cluster),
                Err(_) => {
                    for id in &pending_ids {
                        let _ = control_request(control, "DELETE", &format!("/clusters/{id}"), None);
                    }
                    panic!("connecting to a fresh cluster timed out");
                }
            }
        }
        guard
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let Some((mut child, stdin)) = self.process.lock().map(|mut p| p.take()).unwrap_or(None) else {
            return;
        };
        // Closing stdin is the plane's orderly stop: it removes its files and ports.
        drop(stdin);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// One cluster, with an admin client for it.
pub struct Cluster {
    info: ClusterInfo,
    client: kube::Client,
    control: SocketAddr,
}

impl Cluster {
    async fn connect(info: ClusterInfo, control: SocketAddr) -> Cluster {
        let config = kube_config(&info.kubeconfig, &info.name).await;
        let client = kube::Client::try_from(config).expect("building a kube client");
        Cluster { info, client, control }
    }

    /// The kubeconfig context name.
    pub fn name(&self) -> &str {
        &self.info.name
    }

    pub fn id(&self) -> &str {
        &self.info.id
    }

    /// `https://127.0.0.1:PORT`.
    pub fn server(&self) -> &str {
        &self.info.server
    }

    /// `127.0.0.1:PORT`, for raw connection checks.
    pub fn address(&self) -> SocketAddr {
        self.info
            .server
            .trim_start_matches("https://")
            .parse()
            .expect("server is https://IP:PORT")
    }

    pub fn kube_system_uid(&self) -> &str {
        &self.info.kube_system_uid
    }

    /// The kubeconfig holding this cluster's context (named [`Cluster::name`]).
    pub fn kubeconfig(&self) -> &Path {
        &self.info.kubeconfig
    }

    /// A client with cluster-admin (`system:masters`) credentials.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// Creates an empty namespace, as `kubectl create namespace` does.
    pub async fn create_namespace(&self, name: &str) {
        use k8s_openapi::api::core::v1::Namespace;
        let namespace = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_owned()),
                ..Default::default()
            },
            ..Namespace::default()
        };
        kube::Api::<Namespace>::all(self.client())
            .create(&kube::api::PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name} in {}: {e}", self.name()));
    }

    /// The admin configuration, for tests that build their own clients.
    pub async fn config(&self) -> kube::Config {
        kube_config(&self.info.kubeconfig, &self.info.name).await
    }

    /// A client that authenticates with this bearer token instead of the admin's.
    pub async fn client_with_token(&self, token: &str) -> kube::Client {
        let mut config = self.config().await;
        config.auth_info = serde_json::from_value::<AuthInfo>(json!({ "token": token })).expect("auth info");
        kube::Client::try_from(config).expect("building a kube client")
    }

    /// Stops the apiserver: its port refuses connections, open ones are cut.
    pub async fn stop(&self) {
        self.fault("POST", "stop", None).await;
    }

    /// Starts the apiserver again on the same port with the same data.
    pub async fn start(&self) {
        self.fault("POST", "start", None).await;
    }

    /// Delays every request to this cluster by at least `delay` (zero clears it).
    pub async fn set_latency(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).expect("latency fits in u64 milliseconds");
        self.fault("PUT", "latency", Some(json!({ "ms": ms }))).await;
    }

    /// Adds an HTTP fault in front of the apiserver (tests/controlplane/faults.go):
    /// `{"kind", "method", "path", "body_contains"?, "times"?}`.
    pub async fn add_http_fault(&self, fault: Value) {
        self.fault("POST", "faults", Some(fault)).await;
    }

    /// Clears the HTTP faults; answers how many requests they hit in all.
    pub async fn clear_http_faults(&self) -> u64 {
        let control = self.control;
        let path = format!("/clusters/{}/faults", self.info.id);
        let answer = blocking(move || control_request(control, "DELETE", &path, None))
            .await
            .unwrap_or_else(|e| panic!("clearing the faults of {}: {e}", self.info.name));
        answer["fired"].as_u64().expect("a count of fired faults")
    }

    async fn fault(&self, method: &'static str, action: &str, body: Option<Value>) {
        let control = self.control;
        let path = format!("/clusters/{}/{action}", self.info.id);
        let shown = path.clone();
        blocking(move || control_request(control, method, &path, body.as_ref()))
            .await
            .unwrap_or_else(|e| panic!("{method} {shown}: {e}"));
    }
}

/// Clusters handed to one test; deleted on drop when they were made for it.
pub struct Clusters {
    kubeconfig: PathBuf,
    clusters: Vec<Cluster>,
    control: SocketAddr,
    delete_on_drop: bool,
}

impl Clusters {
    /// One kubeconfig with a context per cluster, named as asked.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Every cluster handed to the test, for checks over all of them.
    pub fn all(&self) -> Vec<&Cluster> {
        self.clusters.iter().collect()
    }

    /// The clusters of these names, in this order.
    pub fn by_names<const N: usize>(&self, names: [&str; N]) -> [&Cluster; N] {
        names.map(|name| self.by_name(name))
    }

    pub fn by_name(&self, name: &str) -> &Cluster {
        self.clusters
            .iter()
            .find(|c| c.name() == name)
            .unwrap_or_else(|| panic!("no cluster named {name:?}"))
    }
}

impl Deref for Clusters {
    type Target = [Cluster];

    fn deref(&self) -> &[Cluster] {
        &self.clusters
    }
}

impl Drop for Clusters {
    fn drop(&mut self) {
        if !self.delete_on_drop {
            return;
        }
        for c in &self.clusters {
            // Best effort: if the plane is already gone, so are the clusters.
            let _ = control_request(self.control, "DELETE", &format!("/clusters/{}", c.id()), None);
        }
    }
}

/// Loads one context of a kubeconfig.
pub async fn kube_config(kubeconfig: &Path, context: &str) -> kube::Config {
    let file = Kubeconfig::read_from(kubeconfig).unwrap_or_else(|e| panic!("reading {}: {e}", kubeconfig.display()));
    let options = KubeConfigOptions {
        context: Some(context.to_owned()),
        ..KubeConfigOptions::default()
    };
    kube::Config::from_custom_kubeconfig(file, &options)
        .await
        .unwrap_or_else(|e| panic!("context {context:?} of {}: {e}", kubeconfig.display()))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("control request thread")
}

/// One JSON request to the plane's control endpoint; a status outside 2xx is the error.
fn control_request(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let (status, payload) = control_raw(addr, method, path, body)?;
    let payload = String::from_utf8(payload).map_err(|e| e.to_string())?;
    let value: Value = serde_json::from_str(&payload).map_err(|e| format!("{e}: {payload}"))?;
    if (200..300).contains(&status) {
        Ok(value)
    } else {
        Err(format!(
            "status {status}: {}",
            value["error"].as_str().unwrap_or(&payload)
        ))
    }
}

/// One request to the plane's control endpoint: the reply's status and body.
/// HTTP/1.0 keeps the reply simple: no chunking, and the server closes the
/// connection when done.
fn control_raw(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Vec<u8>), String> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(CONTROL_TIMEOUT))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).map_err(|e| e.to_string())?;
    let split = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("malformed reply")?;
    let status: u16 = std::str::from_utf8(&reply[..split])
        .ok()
        .and_then(|head| head.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("malformed status line")?;
    Ok((status, reply.split_off(split + 4)))
}

fn out_dir() -> PathBuf {
    gobuild::out_dir("controlplane")
}

/// The plane's binary, built on first use in this process and whenever its
/// sources change (the file name carries a hash of them).
fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(build)
}

fn build() -> PathBuf {
    let src = Path::new(GO_DIR);
    let version = kubernetes_version(src);
    let minor = version
        .split('.')
        .nth(1)
        .expect("k8s.io/kubernetes version has a minor");
    // Without these the apiserver reports v0.0.0-master; kube clients read /version.
    // -s -w drop the symbol table and DWARF (the binary shrinks from ~190 MB);
    // stack traces still name functions.
    let ldflags = format!(
        "-s -w -X k8s.io/component-base/version.gitVersion={version} \
         -X k8s.io/component-base/version.gitMajor=1 \
         -X k8s.io/component-base/version.gitMinor={minor} \
         -X k8s.io/component-base/version.gitTreeState=clean"
    );
    // No -trimpath: upstream's apiserver code finds files through runtime.Caller.
    gobuild::build_cached("controlplane", src, &["-ldflags", &ldflags])
}

/// The pinned `k8s.io/kubernetes` version, from go.mod.
fn kubernetes_version(src: &Path) -> String {
    let gomod = fs::read_to_string(src.join("go.mod")).expect("reading go.mod");
    gomod
        .lines()
        .filter_map(|l| l.trim().strip_prefix("require ").or(Some(l.trim())))
        .find_map(|l| l.strip_prefix("k8s.io/kubernetes "))
        .map(|v| v.split_whitespace().next().unwrap_or(v).to_owned())
        .expect("go.mod requires k8s.io/kubernetes")
}

fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
