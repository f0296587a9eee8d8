//! Istio's own code reads what meshform writes: after `meshform apply`,
//! Istio's multi-cluster secret controller (run by `tests/istiocheck/` against
//! a primary, see `support::istio`) syncs every peer with a working client and
//! sees each cluster on the network mesh.toml gives it; after detach, network
//! changes and token rotation it follows. Remote secrets meshform would never
//! write are refused by the API server or by Istio, and meshform's validation
//! refuses the topology that would lead to them before any write.

mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Output;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use secrecy::ExposeSecret;
use support::controlplane::{Cluster, ControlPlane};
use support::istio::{IstioCheck, Snapshot};
use support::mesh::install_eastwest_gateway;

const MESH: &str = "mesh1";
const NAMESPACE: &str = "istio-system";
const NETWORK_LABEL: &str = "topology.istio.io/network";

/// A mesh.toml in a temporary directory, for clusters of the test control plane.
struct MeshToml {
    dir: tempfile::TempDir,
}

impl MeshToml {
    fn new() -> MeshToml {
        MeshToml {
            dir: tempfile::tempdir().expect("creating a temporary directory"),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("mesh.toml")
    }

    /// Writes the mesh: each cluster under its context name, on `network`, a primary.
    fn write(&self, clusters: &[(&Cluster, &str)]) {
        let mut text = format!("[mesh]\nname = \"{MESH}\"\nnamespace = \"{NAMESPACE}\"\n");
        for (cluster, network) in clusters {
            write!(
                text,
                "\n[[cluster]]\nname = \"{name}\"\ncontext = \"{name}\"\nkubeconfig = \"{kubeconfig}\"\nnetwork = \"{network}\"\n",
                name = cluster.name(),
                kubeconfig = cluster.kubeconfig().display(),
            )
            .expect("writing to a string");
        }
        std::fs::write(self.path(), text).expect("writing mesh.toml");
    }

    /// Runs the real binary with `-f mesh.toml` after `args`.
    async fn meshform(&self, args: &[&str]) -> Output {
        let mut cmd = support::cli::meshform();
        cmd.args(args).arg("-f").arg(self.path());
        tokio::task::spawn_blocking(move || cmd.output())
            .await
            .expect("the meshform thread")
            .expect("running meshform")
    }

    /// `meshform apply --auto-approve` plus `extra`, which must succeed.
    async fn apply(&self, extra: &[&str]) {
        let mut args = vec!["apply", "--auto-approve"];
        args.extend_from_slice(extra);
        let output = self.meshform(&args).await;
        assert!(
            output.status.success(),
            "meshform {args:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}\n--- mesh.toml\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(self.path()).unwrap_or_default(),
        );
    }
}

/// Istio in a primary holds exactly `peers`, each synced with a working
/// client and on the network given.
fn sees(snapshot: &Snapshot, peers: &[(&str, &str)]) -> bool {
    snapshot.ids().len() == peers.len()
        && peers.iter().all(|(id, network)| {
            snapshot
                .cluster(id)
                .is_some_and(|c| c.is_healthy() && c.network.as_deref() == Some(network))
        })
}

/// Waits until Istio in `primary` sees exactly `peers` (id, network), healthy.
async fn wait_for_peers(istio: &IstioCheck, primary: &str, peers: &[(&str, &str)]) -> Snapshot {
    istio
        .wait_for(&format!("{primary} holding exactly {peers:?}, synced"), |s| {
            sees(s, peers)
        })
        .await
}

#[tokio::test]
async fn istio_syncs_every_peer_on_its_network_after_apply() {
    let clusters = ControlPlane::shared().clusters(&["a", "b", "c"]).await;
    for cluster in clusters.iter() {
        install_eastwest_gateway(cluster).await;
    }
    let (a, b, c) = (clusters.by_name("a"), clusters.by_name("b"), clusters.by_name("c"));
    let mesh = MeshToml::new();
    mesh.write(&[(a, "net-a"), (b, "net-b"), (c, "net-c")]);
    mesh.apply(&[]).await;

    // Every cluster is a primary: each runs istiod, and each istiod must
    // reach the two others through the secrets meshform wrote.
    let istio: Vec<IstioCheck> = clusters
        .iter()
        .map(|cluster| IstioCheck::start(cluster, cluster.name(), NAMESPACE))
        .collect();
    let a_sees = wait_for_peers(&istio[0], "a", &[("b", "net-b"), ("c", "net-c")]).await;
    wait_for_peers(&istio[1], "b", &[("a", "net-a"), ("c", "net-c")]).await;
    wait_for_peers(&istio[2], "c", &[("a", "net-a"), ("b", "net-b")]).await;

    assert_eq!(
        a_sees.cluster("b").unwrap().secret,
        "istio-system/istio-remote-secret-b"
    );
    assert!(
        a_sees.rejected.is_empty(),
        "Istio refused a kubeconfig: {:?}",
        a_sees.rejected
    );
    // The controller as a whole is ready: what istiod's readiness waits for.
    istio[0].wait_for("the secret controller synced", |s| s.synced).await;
}

#[tokio::test]
async fn detached_peer_is_dropped_by_istio() {
    let clusters = ControlPlane::shared().clusters(&["a", "b", "c"]).await;
    for cluster in clusters.iter() {
        install_eastwest_gateway(cluster).await;
    }
    let (a, b, c) = (clusters.by_name("a"), clusters.by_name("b"), clusters.by_name("c"));
    let mesh = MeshToml::new();
    mesh.write(&[(a, "net-a"), (b, "net-b"), (c, "net-c")]);
    mesh.apply(&[]).await;
    let istio = IstioCheck::start(a, "a", NAMESPACE);
    wait_for_peers(&istio, "a", &[("b", "net-b"), ("c", "net-c")]).await;

    mesh.write(&[(a, "net-a"), (b, "net-b")]);
    mesh.apply(&["--allow-detach"]).await;
    wait_for_peers(&istio, "a", &[("b", "net-b")]).await;
}

#[tokio::test]
async fn network_change_is_seen_by_istio_after_every_apply() {
    let clusters = ControlPlane::shared().clusters(&["a", "b", "c"]).await;
    for cluster in clusters.iter() {
        install_eastwest_gateway(cluster).await;
    }
    let (a, b, c) = (clusters.by_name("a"), clusters.by_name("b"), clusters.by_name("c"));
    let mesh = MeshToml::new();
    mesh.write(&[(a, "net-a"), (b, "net-b"), (c, "net-c")]);
    mesh.apply(&[]).await;
    let istio = IstioCheck::start(a, "a", NAMESPACE);
    let before = wait_for_peers(&istio, "a", &[("b", "net-b"), ("c", "net-c")]).await;
    let builds_before = before.cluster("b").unwrap().builds;

    // b moves onto c's network: meshform detaches b, relabels it and re-attaches it.
    mesh.write(&[(a, "net-a"), (b, "net-c"), (c, "net-c")]);
    mesh.apply(&["--allow-detach"]).await;
    let after = wait_for_peers(&istio, "a", &[("b", "net-c"), ("c", "net-c")]).await;
    assert!(
        after.cluster("b").unwrap().builds > builds_before,
        "Istio never rebuilt b's client, so it never saw the re-attach: {after:#?}"
    );

    // And back, for the network of every cluster after a second change.
    mesh.write(&[(a, "net-a"), (b, "net-b"), (c, "net-c")]);
    mesh.apply(&["--allow-detach"]).await;
    wait_for_peers(&istio, "a", &[("b", "net-b"), ("c", "net-c")]).await;
    // The primary's own view of its peers' labels is not all: b and c see a too.
    let from_b = IstioCheck::start(b, "b", NAMESPACE);
    wait_for_peers(&from_b, "b", &[("a", "net-a"), ("c", "net-c")]).await;
}

#[tokio::test]
async fn token_rotation_keeps_istio_synced() {
    let clusters = ControlPlane::shared().clusters(&["a", "b", "c"]).await;
    let (a, b, c) = (clusters.by_name("a"), clusters.by_name("b"), clusters.by_name("c"));
    let mesh = MeshToml::new();
    // One flat network: no gateway needed.
    mesh.write(&[(a, "flat"), (b, "flat"), (c, "flat")]);
    mesh.apply(&[]).await;
    let istio = IstioCheck::start(a, "a", NAMESPACE);
    let before = wait_for_peers(&istio, "a", &[("b", "flat"), ("c", "flat")]).await;
    let old = tokens_in(a).await;

    mesh.apply(&["--rotate-tokens"]).await;
    // The replaced tokens stay valid for the grace period: an immediate
    // re-run revokes nothing while Istio may still be on them.
    mesh.apply(&[]).await;
    for (peer, token) in &old {
        assert!(
            accepts(clusters.by_name(peer), token).await,
            "{peer}: revoked within the grace period"
        );
    }
    // Istio builds a new client from each new kubeconfig and swaps it in once synced.
    let after = istio
        .wait_for("new clients for b and c, synced", |s| {
            sees(s, &[("b", "flat"), ("c", "flat")])
                && ["b", "c"]
                    .iter()
                    .all(|id| s.cluster(id).unwrap().builds > before.cluster(id).unwrap().builds)
        })
        .await;
    assert!(after.rejected.is_empty(), "{:?}", after.rejected);

    // Past the grace (0 here, as Istio has moved), the replaced tokens are
    // revoked: b and c refuse them, and Istio, on the new ones, keeps reading.
    mesh.apply(&["--revoke-grace", "0"]).await;
    for (peer, token) in &old {
        support::mesh::eventually(
            &format!("{peer} refusing a replaced token"),
            std::time::Duration::from_secs(30),
            async || (!accepts(clusters.by_name(peer), token).await).then_some(()),
        )
        .await;
    }
    // Istio probes its clients once a second: three probes after the revocation.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let revoked = istio.latest().expect("a report");
    assert!(sees(&revoked, &[("b", "flat"), ("c", "flat")]), "{revoked:#?}");
    for id in ["b", "c"] {
        assert_eq!(
            revoked.cluster(id).unwrap().builds,
            after.cluster(id).unwrap().builds,
            "Istio rebuilt {id}'s client: it was left on a revoked token"
        );
    }
}

/// The reader tokens in `primary`'s remote secrets, by peer.
async fn tokens_in(primary: &Cluster) -> BTreeMap<String, String> {
    support::mesh::remote_secrets(primary)
        .await
        .into_values()
        .map(|s| {
            let (peer, kubeconfig) = s.data.expect("data").into_iter().next().expect("one key");
            (peer, support::mesh::token_of(&kubeconfig.0).expect("a token"))
        })
        .collect()
}

/// Whether `peer` accepts `token`; a refusal must be a 401.
async fn accepts(peer: &Cluster, token: &str) -> bool {
    match Api::<Namespace>::all(peer.client_with_token(token).await)
        .get(NAMESPACE)
        .await
    {
        Ok(_) => true,
        Err(kube::Error::Api(status)) if status.code == 401 => false,
        Err(e) => panic!("reading {} with a reader token: {e}", peer.name()),
    }
}

/// A remote secret as istioctl and meshform write it, by hand.
fn remote_secret(name: &str, cluster_id: &str, kubeconfig: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(NAMESPACE.to_string()),
            labels: Some(BTreeMap::from([("istio/multiCluster".into(), "true".into())])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            cluster_id.to_string(),
            ByteString(kubeconfig.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

/// A kubeconfig for `server` authenticating with `user` (a kubeconfig `user` map).
fn kubeconfig(server: &str, user: serde_json::Value) -> String {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "x", "cluster": { "server": server, "insecure-skip-tls-verify": true } }],
        "users": [{ "name": "x", "user": user }],
        "contexts": [{ "name": "x", "context": { "cluster": "x", "user": "x" } }],
        "current-context": "x",
    })
    .to_string()
}

#[tokio::test]
async fn hand_written_bad_remote_secrets_are_refused_as_istio_would() {
    let bad_context = "gke_acme_europe-west1_prod";
    let clusters = ControlPlane::shared().clusters(&["a", bad_context]).await;
    let (a, bad) = (clusters.by_name("a"), clusters.by_name(bad_context));
    let secrets: Api<Secret> = Api::namespaced(a.client(), NAMESPACE);
    let istio = IstioCheck::start(a, "a", NAMESPACE);
    istio.wait_for("the secret controller synced", |s| s.synced).await;

    // A secret named after a kubeconfig context such as GKE's is not a valid
    // object name: the API server refuses it, so istiod never sees it.
    let refused = secrets
        .create(
            &PostParams::default(),
            &remote_secret(
                &format!("istio-remote-secret-{bad_context}"),
                bad_context,
                &kubeconfig(bad.server(), serde_json::json!({ "token": "t" })),
            ),
        )
        .await
        .expect_err("the API server accepted an invalid secret name");
    match &refused {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 422, "{status:?}");
            assert!(status.message.contains("metadata.name"), "{status:?}");
        }
        other => panic!("expected an API error, got {other}"),
    }

    // Kubeconfigs istiod refuses to build a client from: credentials that
    // run a command or read a file on istiod's host, and text that is not a
    // kubeconfig. Istio's own ClientBuilder says why.
    let refusals = [
        (
            "exec",
            kubeconfig(
                bad.server(),
                serde_json::json!({ "exec": {
                    "apiVersion": "client.authentication.k8s.io/v1",
                    "command": "gke-gcloud-auth-plugin",
                    "interactiveMode": "Never",
                } }),
            ),
            "exec is not allowed",
        ),
        (
            "token-file",
            kubeconfig(
                bad.server(),
                serde_json::json!({ "tokenFile": "/var/run/secrets/token" }),
            ),
            "tokenFile is not allowed",
        ),
        ("garbage", "this is not a kubeconfig".to_string(), "kubeconfig"),
    ];
    for (id, config, _) in &refusals {
        secrets
            .create(
                &PostParams::default(),
                &remote_secret(&format!("istio-remote-secret-{id}"), id, config),
            )
            .await
            .unwrap_or_else(|e| panic!("writing the {id} secret: {e}"));
    }
    let report = istio
        .wait_for("every bad kubeconfig refused", |s| {
            refusals.iter().all(|(id, _, _)| s.rejection(id).is_some())
        })
        .await;
    for (id, _, reason) in &refusals {
        let error = report.rejection(id).unwrap();
        assert!(
            error.contains(reason),
            "{id}: Istio said {error:?}, expected it to mention {reason:?}"
        );
        assert!(
            report.cluster(id).is_none(),
            "Istio kept a cluster for {id}: {report:#?}"
        );
    }

    // A well-formed kubeconfig with a token the peer does not accept: Istio
    // takes it, cannot sync the cluster, and gives up on it after its remote
    // cluster timeout (30s by default) so that istiod can become ready.
    secrets
        .create(
            &PostParams::default(),
            &remote_secret(
                "istio-remote-secret-bad-token",
                "bad-token",
                &kubeconfig(bad.server(), serde_json::json!({ "token": "not-a-token" })),
            ),
        )
        .await
        .expect("writing the bad-token secret");
    let report = istio
        .wait_for("the bad-token cluster timed out", |s| {
            s.cluster("bad-token").is_some_and(|c| c.status == "timeout")
        })
        .await;
    let bad_token = report.cluster("bad-token").unwrap();
    assert!(!bad_token.client_ok, "{bad_token:#?}");
    assert!(
        bad_token
            .client_error
            .as_deref()
            .unwrap_or_default()
            .contains("Unauthorized"),
        "{bad_token:#?}"
    );
    assert!(
        report.synced,
        "a timed-out cluster must not hold istiod back: {report:#?}"
    );

    // Istio does not check the cluster id (the data key) itself: under a
    // valid secret name, with working credentials, a GKE-style id is synced
    // as it is. Only the secret's name is checked, by the API server; keeping
    // ids DNS-1123 labels is left to whoever writes the secret, hence
    // meshform's validation.
    let admin = bad.config().await;
    let token = admin.auth_info.token.as_ref().expect("the plane's admin token");
    secrets
        .create(
            &PostParams::default(),
            &remote_secret(
                "istio-remote-secret-gke-acme",
                bad_context,
                &kubeconfig(bad.server(), serde_json::json!({ "token": token.expose_secret() })),
            ),
        )
        .await
        .expect("writing a secret for a GKE-style cluster id");
    istio
        .wait_for("the GKE-style cluster id synced", |s| {
            s.cluster(bad_context).is_some_and(|c| c.is_healthy())
        })
        .await;
}

#[tokio::test]
async fn validate_refuses_a_bad_cluster_name_before_any_write() {
    let bad_context = "gke_acme_asia-east1_apac";
    let clusters = ControlPlane::shared().clusters(&["a", bad_context]).await;
    let (a, bad) = (clusters.by_name("a"), clusters.by_name(bad_context));
    let mesh = MeshToml::new();
    // The context doubles as the mesh name here: not a DNS-1123 label, so
    // neither a secret name nor a sensible Istio cluster id.
    mesh.write(&[(a, "flat"), (bad, "flat")]);

    let validate = mesh.meshform(&["validate"]).await;
    let stderr = String::from_utf8_lossy(&validate.stderr);
    assert_eq!(validate.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("invalid_name"), "{stderr}");
    let apply = mesh.meshform(&["apply", "--auto-approve"]).await;
    assert_eq!(
        apply.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&apply.stderr)
    );

    // Nothing was written anywhere, and Istio in a has nothing to read.
    for cluster in [a, bad] {
        let secrets = Api::<Secret>::namespaced(cluster.client(), NAMESPACE)
            .list(&ListParams::default().labels("istio/multiCluster=true"))
            .await
            .expect("listing remote secrets");
        assert!(secrets.items.is_empty(), "{} holds remote secrets", cluster.name());
        let namespace = Api::<Namespace>::all(cluster.client())
            .get(NAMESPACE)
            .await
            .expect("reading the mesh namespace");
        let labels = namespace.metadata.labels.unwrap_or_default();
        assert!(!labels.contains_key(NETWORK_LABEL), "{} was labelled", cluster.name());
    }
    let istio = IstioCheck::start(a, "a", NAMESPACE);
    let report = istio.wait_for("the secret controller synced", |s| s.synced).await;
    assert!(report.clusters.is_empty() && report.rejected.is_empty(), "{report:#?}");
}

/// A TCP relay on another loopback address, 127.0.0.2, to `target`: TLS
/// passes through, so a client sees the apiserver's own certificate at an
/// address that certificate does not name (it names 127.0.0.1, ::1,
/// localhost and kubernetes*). Runs until the test ends.
async fn relay_on_another_address(target: std::net::SocketAddr) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0")
        .await
        .expect("binding 127.0.0.2 (loopback)");
    let address = listener.local_addr().expect("the relay's address");
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    address
}

// Regression (issue 29): the remote secret copied only the CA, so a peer whose kubeconfig verifies its API server
// by `tls-server-name` worked for meshform and failed for istiod (certificate not valid for the address).
#[tokio::test]
async fn a_peer_verified_by_tls_server_name_is_verified_so_by_istio_too() {
    let clusters = ControlPlane::shared().clusters(&["tls-a", "tls-b"]).await;
    let (a, b) = (clusters.by_name("tls-a"), clusters.by_name("tls-b"));
    let relay = relay_on_another_address(b.address()).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    // b's kubeconfig, at the relay's address, verified as `kubernetes`: a name its certificate holds.
    let mut config = kube::config::Kubeconfig::read_from(b.kubeconfig()).expect("b's kubeconfig");
    for named in &mut config.clusters {
        if let Some(cluster) = named.cluster.as_mut().filter(|_| named.name == b.name()) {
            cluster.server = Some(format!("https://{relay}"));
            cluster.tls_server_name = Some("kubernetes".into());
        }
    }
    let b_kubeconfig = dir.path().join("b.yaml");
    std::fs::write(&b_kubeconfig, serde_json::to_string(&config).expect("kubeconfig")).expect("writing it");
    let mesh = dir.path().join("mesh.toml");
    std::fs::write(
        &mesh,
        format!(
            "[mesh]\nname = \"{MESH}\"\nnamespace = \"{NAMESPACE}\"\n\n[[cluster]]\nname = \"tls-a\"\nkubeconfig = \"{}\"\nnetwork = \"n\"\n\n\
             [[cluster]]\nname = \"tls-b\"\nkubeconfig = \"{}\"\nnetwork = \"n\"\n",
            a.kubeconfig().display(),
            b_kubeconfig.display()
        ),
    )
    .expect("writing mesh.toml");
    // Through tokio: the relay runs on this test's runtime.
    let output = tokio::process::Command::from(support::cli::meshform())
        .args(["apply", "--auto-approve", "-f"])
        .arg(&mesh)
        .output()
        .await
        .expect("running meshform");
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let secret = Api::<Secret>::namespaced(a.client(), NAMESPACE)
        .get("istio-remote-secret-tls-b")
        .await
        .expect("a's secret for b");
    let kubeconfig = support::mesh::secret_kubeconfig(&secret);
    let cluster = kubeconfig.clusters[0].cluster.as_ref().expect("a cluster");
    assert_eq!(cluster.server.as_deref(), Some(format!("https://{relay}").as_str()));
    assert_eq!(cluster.tls_server_name.as_deref(), Some("kubernetes"));
    // Istio's own client builder reads b through the relay, verifying the name.
    let istio = IstioCheck::start(a, "tls-a", NAMESPACE);
    istio
        .wait_for("tls-b synced with a working client", |s| {
            s.cluster("tls-b").is_some_and(|c| c.is_healthy())
        })
        .await;
    // The plan is converged: the name is part of what meshform compares.
    let plan = tokio::process::Command::from(support::cli::meshform())
        .args(["plan", "--detailed-exitcode", "-f"])
        .arg(&mesh)
        .output()
        .await
        .expect("running meshform");
    assert_eq!(plan.status.code(), Some(0), "{}", String::from_utf8_lossy(&plan.stdout));
}

/// `mesh.toml` for `a` (the plane's kubeconfig) and `b` (the kubeconfig at
/// `b_kubeconfig`), one network, `b_extra` added to b's table.
fn two_cluster_mesh(
    dir: &std::path::Path,
    a: &Cluster,
    b: &Cluster,
    b_kubeconfig: &std::path::Path,
    b_extra: &str,
) -> PathBuf {
    let mesh = dir.join("mesh.toml");
    std::fs::write(
        &mesh,
        format!(
            "[mesh]\nname = \"{MESH}\"\nnamespace = \"{NAMESPACE}\"\n\n[[cluster]]\nname = \"{}\"\nkubeconfig = \"{}\"\nnetwork = \"n\"\n\n\
             [[cluster]]\nname = \"{}\"\nkubeconfig = \"{}\"\nnetwork = \"n\"\n{b_extra}",
            a.name(),
            a.kubeconfig().display(),
            b.name(),
            b_kubeconfig.display()
        ),
    )
    .expect("writing mesh.toml");
    mesh
}

fn run_meshform(mesh: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let output = support::cli::meshform()
        .env("COLUMNS", "400")
        .args(args)
        .arg("-f")
        .arg(mesh)
        .output()
        .expect("running meshform");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

// Regression (issue 29): a kubeconfig with insecure-skip-tls-verify was used silently, and reader tokens minted
// and sent over the unverified connection. Refused now unless mesh.toml allows it for the cluster; then warned
// about, and the remote secret carries the setting so that istiod reaches the peer as meshform does.
#[tokio::test]
async fn an_unverified_peer_is_refused_unless_allowed_and_then_reached_by_istio_the_same_way() {
    let clusters = ControlPlane::shared().clusters(&["ins-a", "ins-b"]).await;
    let (a, b) = (clusters.by_name("ins-a"), clusters.by_name("ins-b"));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut config = kube::config::Kubeconfig::read_from(b.kubeconfig()).expect("b's kubeconfig");
    for named in &mut config.clusters {
        if let Some(cluster) = named.cluster.as_mut().filter(|_| named.name == b.name()) {
            cluster.certificate_authority_data = None;
            cluster.insecure_skip_tls_verify = Some(true);
        }
    }
    let b_kubeconfig = dir.path().join("b.yaml");
    std::fs::write(&b_kubeconfig, serde_json::to_string(&config).expect("kubeconfig")).expect("writing it");

    let mesh = two_cluster_mesh(dir.path(), a, b, &b_kubeconfig, "");
    let (code, text) = run_meshform(&mesh, &["plan"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("sets insecure-skip-tls-verify")
            && text.contains("`allow_insecure_transport = true` on cluster \"ins-b\""),
        "{text}"
    );
    let (code, text) = run_meshform(&mesh, &["apply", "--auto-approve"]);
    assert_eq!(code, Some(1), "{text}");
    // Nothing written, no token minted for b (each would have a binding Secret in b).
    for cluster in [a, b] {
        let secrets = Api::<Secret>::namespaced(cluster.client(), NAMESPACE)
            .list(&ListParams::default().labels("app.kubernetes.io/managed-by=meshform"))
            .await
            .expect("listing meshform's Secrets");
        assert!(secrets.items.is_empty(), "{} holds {:?}", cluster.name(), secrets.items);
    }

    let mesh = two_cluster_mesh(dir.path(), a, b, &b_kubeconfig, "allow_insecure_transport = true\n");
    let (code, text) = run_meshform(&mesh, &["plan"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("insecure_transport") && text.contains("without verifying who answers"),
        "{text}"
    );
    let (code, text) = run_meshform(&mesh, &["check"]);
    assert!(
        text.contains("without verifying who answers"),
        "check warns too: {text}"
    );
    assert_eq!(code, Some(1), "the secrets are not written yet: {text}");
    let (code, text) = run_meshform(&mesh, &["apply", "--auto-approve"]);
    assert_eq!(code, Some(0), "{text}");
    let secret = Api::<Secret>::namespaced(a.client(), NAMESPACE)
        .get(&format!("istio-remote-secret-{}", b.name()))
        .await
        .expect("a's secret for b");
    let kubeconfig = support::mesh::secret_kubeconfig(&secret);
    let cluster = kubeconfig.clusters[0].cluster.as_ref().expect("a cluster");
    assert_eq!(cluster.insecure_skip_tls_verify, Some(true));
    assert_eq!(cluster.certificate_authority_data, None);
    let istio = IstioCheck::start(a, a.name(), NAMESPACE);
    istio
        .wait_for("ins-b synced with a working client", |s| {
            s.cluster("ins-b").is_some_and(|c| c.is_healthy())
        })
        .await;
    let (code, text) = run_meshform(&mesh, &["plan", "--detailed-exitcode"]);
    assert_eq!(code, Some(0), "converged, with the warning: {text}");
}
