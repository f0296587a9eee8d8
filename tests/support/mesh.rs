//! A mesh.toml for clusters of the test control plane, and the real
//! `meshform` binary run against it.
//!
//! [`Mesh`] owns a temporary directory holding `mesh.toml` (each cluster with
//! `kubeconfig = "<path>"` of the plane), runs the binary through
//! [`super::cli::meshform`] and remembers every output, so that a test can
//! check at the end that no token ever reached a terminal or a file
//! ([`Mesh::assert_no_token_leaked`]). It also reads what meshform wrote,
//! for assertions: the remote secrets and the tokens inside them.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::core::v1::{Secret, Service, ServicePort, ServiceSpec};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::config::Kubeconfig;
use meshform::access::{Connections, Sources};
use meshform::topology::Topology;
use secrecy::ExposeSecret;

use super::controlplane::Cluster;
use super::state::object_state;

/// The mesh every test uses; the namespace is Istio's default.
pub const MESH: &str = "mesh1";
pub const NAMESPACE: &str = "istio-system";

/// One `[[cluster]]` entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub context: String,
    pub kubeconfig: PathBuf,
    pub network: Option<String>,
    pub role: Option<&'static str>,
    /// A remote's `control_plane`.
    pub control_plane: Option<String>,
    /// `data_plane` of this cluster, overriding the mesh's.
    pub data_plane: Option<&'static str>,
}

impl Entry {
    /// The plane's cluster under its context name, default network and role.
    pub fn of(cluster: &Cluster) -> Entry {
        Entry {
            name: cluster.name().to_string(),
            context: cluster.name().to_string(),
            kubeconfig: cluster.kubeconfig().to_path_buf(),
            network: None,
            role: None,
            control_plane: None,
            data_plane: None,
        }
    }

    /// The cluster runs `data_plane` (`sidecar` or `ambient`), whatever the mesh's default.
    pub fn data_plane(mut self, data_plane: &'static str) -> Entry {
        self.data_plane = Some(data_plane);
        self
    }

    pub fn network(mut self, network: &str) -> Entry {
        self.network = Some(network.to_string());
        self
    }

    pub fn remote(mut self) -> Entry {
        self.role = Some("remote");
        self
    }

    /// A remote served by `primary`'s istiod.
    pub fn served_by(mut self, primary: &str) -> Entry {
        self.role = Some("remote");
        self.control_plane = Some(primary.to_string());
        self
    }

    /// A mesh name other than the context's.
    pub fn named(mut self, name: &str) -> Entry {
        self.name = name.to_string();
        self
    }

    pub fn kubeconfig(mut self, path: &Path) -> Entry {
        self.kubeconfig = path.to_path_buf();
        self
    }
}

/// What one run of the binary gave.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// Panics with the whole output unless the exit code is `code`.
    #[track_caller]
    pub fn expect(self, code: i32) -> Outcome {
        assert_eq!(self.code, code, "unexpected exit code:\n{self}");
        self
    }

    /// stdout lines that are JSON objects (`apply --format json` events).
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// stdout parsed as one JSON document.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit_code: {}\n----- stdout -----\n{}\n----- stderr -----\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A mesh.toml in a temporary directory, and every output of the binary run on it.
pub struct Mesh {
    dir: tempfile::TempDir,
    outputs: RefCell<Vec<String>>,
}

impl Mesh {
    pub fn new(entries: &[Entry]) -> Mesh {
        let mesh = Mesh {
            dir: tempfile::tempdir().expect("a temporary directory"),
            outputs: RefCell::new(Vec::new()),
        };
        mesh.write(entries);
        mesh
    }

    /// The standard flat mesh: every cluster a primary on the one network
    /// `flat`, so that no east-west gateway is needed.
    pub fn flat(clusters: &[&Cluster]) -> Mesh {
        let entries: Vec<Entry> = clusters.iter().map(|c| Entry::of(c).network("flat")).collect();
        Mesh::new(&entries)
    }

    /// Rewrites mesh.toml with these clusters.
    pub fn write(&self, entries: &[Entry]) {
        self.write_with(entries, "");
    }

    /// Rewrites mesh.toml with these clusters and `extra` TOML at the end of `[mesh]`.
    pub fn write_with(&self, entries: &[Entry], extra: &str) {
        let mut text = format!("[mesh]\nname = \"{MESH}\"\nnamespace = \"{NAMESPACE}\"\n{extra}");
        for e in entries {
            let _ = write!(
                text,
                "\n[[cluster]]\nname = \"{}\"\ncontext = \"{}\"\nkubeconfig = \"{}\"\n",
                e.name,
                e.context,
                e.kubeconfig.display()
            );
            if let Some(network) = &e.network {
                let _ = writeln!(text, "network = \"{network}\"");
            }
            if let Some(role) = e.role {
                let _ = writeln!(text, "role = \"{role}\"");
            }
            if let Some(primary) = &e.control_plane {
                let _ = writeln!(text, "control_plane = \"{primary}\"");
            }
            if let Some(data_plane) = e.data_plane {
                let _ = writeln!(text, "data_plane = \"{data_plane}\"");
            }
        }
        std::fs::write(self.file(), text).expect("writing mesh.toml");
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self) -> PathBuf {
        self.dir.path().join("mesh.toml")
    }

    /// Reads mesh.toml and connects to every cluster the way the CLI does,
    /// for tests that drive the library's pipeline step by step.
    pub async fn connect(&self) -> (Topology, Connections) {
        let text = std::fs::read(self.file()).expect("reading mesh.toml");
        let (topology, _) = meshform::topology::check("mesh.toml", &text)
            .into_result()
            .expect("a valid mesh.toml");
        let sources = Sources {
            base_dir: self.dir().to_path_buf(),
            kubeconfig: None,
            timeout: Duration::from_secs(30),
            keepalive: meshform::access::DEFAULT_KEEPALIVE,
        };
        let connections = Connections::open(&topology, &sources).await;
        if let Some((name, e)) = connections.failures().next() {
            panic!("connecting to {name}: {e}");
        }
        (topology, connections)
    }

    /// `meshform <command> -f mesh.toml <args>`; `--timeout 5s` keeps
    /// runs against stopped clusters short, unless `args` set their own.
    fn std_command(&self, command: &str, args: &[&str]) -> std::process::Command {
        let mut cmd = super::cli::meshform();
        let timeout: &[&str] = if args.contains(&"--timeout") {
            &[]
        } else {
            &["--timeout", "5s"]
        };
        // Wide enough that no message wraps in the middle of a name or UID.
        cmd.env("COLUMNS", "400")
            .arg(command)
            .arg("-f")
            .arg(self.file())
            .args(timeout)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn command(&self, command: &str, args: &[&str]) -> tokio::process::Command {
        let mut cmd: tokio::process::Command = self.std_command(command, args).into();
        cmd.kill_on_drop(true);
        cmd
    }

    /// Runs `meshform <command> -f mesh.toml <args>` to completion.
    pub async fn run(&self, command: &str, args: &[&str]) -> Outcome {
        let output = self
            .command(command, args)
            .output()
            .await
            .unwrap_or_else(|e| panic!("running meshform {command}: {e}"));
        let outcome = Outcome {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        self.outputs.borrow_mut().push(outcome.to_string());
        outcome
    }

    /// `meshform plan --format json`, expected to exit with `code`: each
    /// finding as a `kind cluster code` line (code without its
    /// `meshform::plan::` prefix), and the findings themselves; never the
    /// warning that the test plane's API servers are on loopback.
    pub async fn findings(&self, code: i32) -> (Vec<String>, Vec<serde_json::Value>) {
        let plan = self.run("plan", &["--format", "json"]).await.expect(code).json();
        let all: Vec<serde_json::Value> = plan["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .filter(|f| f["code"] != "meshform::plan::peer_address")
            .cloned()
            .collect();
        let lines = all
            .iter()
            .map(|f| {
                format!(
                    "{} {} {}",
                    f["kind"].as_str().unwrap(),
                    f["cluster"].as_str().unwrap_or("-"),
                    f["code"].as_str().unwrap().trim_start_matches("meshform::plan::")
                )
            })
            .collect();
        (lines, all)
    }

    /// Starts `meshform <command> ...` and leaves it running; pass what it
    /// printed to [`Mesh::record`] so the leak check sees it.
    pub fn spawn(&self, command: &str, args: &[&str]) -> tokio::process::Child {
        self.command(command, args)
            .spawn()
            .unwrap_or_else(|e| panic!("starting meshform {command}: {e}"))
    }

    /// Starts `meshform <command> ...` and hands its stdout over line by
    /// line as it prints them; the whole output, stderr included, comes with
    /// the exit code once it ends. Everything is recorded for the leak check.
    pub fn stream(&self, command: &str, args: &[&str]) -> Streamed {
        Streamed::spawn(self.std_command(command, args), command)
    }

    /// [`Mesh::stream`] with a terminal on stdin, so that apply asks before it
    /// writes (it asks only on a terminal); the test answers through it.
    pub fn stream_asking(&self, command: &str, args: &[&str]) -> (Streamed, Terminal) {
        let (terminal, stdin) = Terminal::open();
        let mut cmd = self.std_command(command, args);
        cmd.stdin(stdin);
        (Streamed::spawn(cmd, command), terminal)
    }

    /// Adds output of a spawned run to what the leak check scans.
    /// Everything meshform printed in this mesh's runs so far.
    pub fn outputs(&self) -> Vec<String> {
        self.outputs.borrow().clone()
    }

    pub fn record(&self, output: &str) {
        self.outputs.borrow_mut().push(output.to_string());
    }

    /// `apply --auto-approve` plus `args`, expected to succeed.
    pub async fn apply(&self, args: &[&str]) -> Outcome {
        let mut all = vec!["--auto-approve"];
        all.extend_from_slice(args);
        self.run("apply", &all).await.expect(0)
    }

    /// After a successful apply the mesh is converged: a fresh plan has
    /// nothing to do, and a second apply acts nowhere and leaves
    /// [`object_state`] of `clusters` as it was (the resourceVersions prove
    /// it wrote nothing).
    pub async fn assert_converged(&self, clusters: &[&Cluster]) {
        self.assert_plan_empty().await;
        let before = object_state(clusters).await;
        let again = self.apply(&["--format", "json"]).await;
        let acted: Vec<_> = again.events().into_iter().filter(|e| e["event"] == "done").collect();
        assert!(acted.is_empty(), "a second apply acted: {acted:#?}");
        assert_eq!(
            before,
            object_state(clusters).await,
            "a second apply wrote to the clusters"
        );
    }

    /// Only the first part of [`Mesh::assert_converged`]: `plan
    /// --detailed-exitcode` finds nothing to do. For a test that must not
    /// run apply again.
    pub async fn assert_plan_empty(&self) {
        self.run("plan", &["--detailed-exitcode"]).await.expect(0);
    }

    /// No token of any remote secret in `clusters`, nor any secret data,
    /// appears in any output so far or in any file meshform wrote here.
    pub async fn assert_no_token_leaked(&self, clusters: &[&Cluster]) {
        let mut needles = Vec::new();
        for cluster in clusters {
            for (_, secret) in remote_secrets(cluster).await {
                for value in secret.data.iter().flat_map(|d| d.values()) {
                    needles.push(base64::engine::general_purpose::STANDARD.encode(&value.0));
                    if let Some(token) = token_of(&value.0) {
                        // The signature alone is the secret part of a JWT.
                        needles.push(token.rsplit('.').next().unwrap_or_default().to_string());
                        needles.push(token);
                    }
                }
            }
        }
        assert!(
            !needles.is_empty(),
            "no token to look for: the check would prove nothing"
        );
        let mut haystacks = self.outputs.borrow().clone();
        for entry in std::fs::read_dir(self.dir())
            .expect("listing the mesh directory")
            .flatten()
        {
            if let Ok(text) = std::fs::read_to_string(entry.path()) {
                haystacks.push(text);
            }
        }
        for hay in &haystacks {
            for needle in needles.iter().filter(|n| n.len() >= 16) {
                assert!(
                    !hay.contains(needle.as_str()),
                    "secret bytes leaked into output:\n{hay}"
                );
            }
        }
    }
}

/// Secrets labelled `istio/multiCluster=true` in the mesh namespace, by name.
pub async fn remote_secrets(cluster: &Cluster) -> BTreeMap<String, Secret> {
    Api::<Secret>::namespaced(cluster.client(), NAMESPACE)
        .list(&ListParams::default().labels("istio/multiCluster=true"))
        .await
        .unwrap_or_else(|e| panic!("listing remote secrets in {}: {e}", cluster.name()))
        .items
        .into_iter()
        .map(|s| (s.metadata.name.clone().unwrap_or_default(), s))
        .collect()
}

/// The kubeconfig inside a remote secret's single data value.
pub fn secret_kubeconfig(secret: &Secret) -> Kubeconfig {
    let data = secret.data.as_ref().expect("remote secret has data");
    assert_eq!(data.len(), 1, "a remote secret has one data key");
    let bytes = &data.values().next().expect("one value").0;
    Kubeconfig::from_yaml(std::str::from_utf8(bytes).expect("kubeconfig is text")).expect("kubeconfig parses")
}

/// The bearer token in a kubeconfig's bytes.
pub fn token_of(kubeconfig: &[u8]) -> Option<String> {
    let config = Kubeconfig::from_yaml(std::str::from_utf8(kubeconfig).ok()?).ok()?;
    let token = config.auth_infos.first()?.auth_info.as_ref()?.token.as_ref()?;
    Some(token.expose_secret().to_string())
}

/// Istio's east-west gateway Service, as its installer makes it (a
/// LoadBalancer with the status and mTLS ports), given an address by the
/// load balancer: without it a cluster with peers on other networks is a
/// blocking problem. It carries no network label: meshform writes that.
pub async fn install_eastwest_gateway(cluster: &Cluster) {
    install_pending_eastwest_gateway(cluster).await;
    super::install::set_gateway_address(cluster, "istio-eastwestgateway", "192.0.2.10").await;
}

/// The same Service while its load balancer is still pending: no address.
pub async fn install_pending_eastwest_gateway(cluster: &Cluster) {
    let port = |name: &str, port: i32| ServicePort {
        name: Some(name.into()),
        port,
        ..ServicePort::default()
    };
    let service = Service {
        metadata: ObjectMeta {
            name: Some("istio-eastwestgateway".into()),
            labels: Some(BTreeMap::from([("istio".into(), "eastwestgateway".into())])),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            selector: Some(BTreeMap::from([("istio".into(), "eastwestgateway".into())])),
            ports: Some(vec![port("status-port", 15021), port("tls", 15443)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    Api::<Service>::namespaced(cluster.client(), NAMESPACE)
        .create(&PostParams::default(), &service)
        .await
        .unwrap_or_else(|e| panic!("creating the east-west gateway Service in {}: {e}", cluster.name()));
}

/// Polls `check` every 100ms until it yields a value; panics after `limit`.
pub async fn eventually<T>(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A run of the binary in progress; see [`Mesh::stream`].
pub struct Streamed {
    child: Option<std::process::Child>,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    /// Stderr as far as it has been printed; complete once the reader ends.
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
    stdout: Vec<String>,
}

impl Streamed {
    fn spawn(mut cmd: std::process::Command, command: &str) -> Streamed {
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting meshform {command}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        // Threads, not tasks: the pipes are blocking ones.
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let printed = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let shared = printed.clone();
        // Chunks, not lines: a question on stderr ends without a newline.
        let stderr_reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = std::io::Read::read(&mut stderr, &mut buf) {
                shared
                    .lock()
                    .expect("stderr buffer")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Streamed {
            child: Some(child),
            lines,
            stderr: printed,
            stderr_reader: Some(stderr_reader),
            stdout: Vec::new(),
        }
    }

    /// Waits until stderr holds `text`. Panics after `limit`.
    pub async fn wait_for_stderr(&self, text: &str, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let printed = self.stderr.lock().expect("stderr buffer").clone();
            if printed.contains(text) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "meshform did not print {text:?} within {limit:?}; stderr so far:\n{printed}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The next line on stdout; `None` once stdout closes. Panics after `limit`.
    pub async fn next_line(&mut self, limit: Duration) -> Option<String> {
        let line = tokio::time::timeout(limit, self.lines.recv())
            .await
            .unwrap_or_else(|_| panic!("meshform printed nothing for {limit:?}:\n{}", self.stdout.join("\n")));
        self.stdout.extend(line.clone());
        line
    }

    /// The process id of the running meshform (for `kill -9`).
    pub fn id(&self) -> u32 {
        self.child.as_ref().expect("not finished yet").id()
    }

    /// Waits for the end; the outcome holds all of stdout, also the lines already read.
    pub async fn finish(mut self, mesh: &Mesh) -> Outcome {
        while self.next_line(Duration::from_secs(300)).await.is_some() {}
        let mut child = self.child.take().expect("not finished yet");
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .expect("waiting thread")
            .expect("waiting for meshform");
        self.stderr_reader
            .take()
            .expect("stderr reader")
            .join()
            .expect("stderr thread");
        let stderr = self.stderr.lock().expect("stderr buffer").clone();
        let outcome = Outcome {
            code: status.code().unwrap_or(-1),
            stdout: self.stdout.join("\n"),
            stderr,
        };
        mesh.record(&outcome.to_string());
        outcome
    }
}

impl Drop for Streamed {
    fn drop(&mut self) {
        // A test that panicked half-way leaves no meshform running.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The controlling side of a pseudo-terminal whose other side is a child's stdin.
pub struct Terminal {
    master: std::fs::File,
}

impl Terminal {
    fn open() -> (Terminal, Stdio) {
        use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("opening a pseudo-terminal");
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        let path = ptsname(&master, Vec::new()).expect("ptsname");
        let path = path.to_str().expect("a UTF-8 terminal path");
        let child_side = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| panic!("opening {path}: {e}"));
        (
            Terminal {
                master: std::fs::File::from(master),
            },
            Stdio::from(child_side),
        )
    }

    /// Types `line` and Enter.
    pub fn answer(&mut self, line: &str) {
        std::io::Write::write_all(&mut self.master, format!("{line}\n").as_bytes()).expect("writing to the terminal");
    }
}
