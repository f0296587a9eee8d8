//! Redaction (issue 7, item 3): on a three-cluster mesh of the test control
//! plane, every command and output format runs at `-vvv` (tracing at its
//! most verbose, kube's and hyper's debug logs included), and everything
//! written (stdout, stderr, every file) is scanned for every secret the run
//! could have seen: each reader token in the remote secrets (as text, its
//! JWT signature, in base64, and the base64 of the whole kubeconfig inside
//! the secret), every token of every rotation, and the admin bearer token
//! of the plane's kubeconfig (the plane's kubeconfigs carry tokens, no
//! client keys). Zero hits.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use kube::config::Kubeconfig;
use secrecy::ExposeSecret;
use support::controlplane::{Cluster, ControlPlane};
use support::install::{Install, install_istio};
use support::mesh::{Entry, Mesh, NAMESPACE, Outcome, eventually, install_eastwest_gateway, remote_secrets, token_of};
use support::trust::{Root as TestRoot, publish};

/// Every secret value to look for, in each form it could leak in.
#[derive(Default)]
struct Secrets(BTreeSet<String>);

impl Secrets {
    fn add(&mut self, value: &str) {
        let b64 = base64::engine::general_purpose::STANDARD;
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        for form in [value.to_string(), b64.encode(value), url.encode(value)] {
            // Shorter strings would match by chance.
            if form.len() >= 16 {
                self.0.insert(form);
            }
        }
        // A JWT's signature is the part that makes it a credential.
        if value.matches('.').count() == 2
            && let Some(signature) = value.rsplit('.').next()
            && signature.len() >= 16
        {
            self.0.insert(signature.to_string());
        }
    }

    /// The reader tokens (and the whole kubeconfig) of every remote secret now in `clusters`.
    async fn collect_remote_secrets(&mut self, clusters: &[&Cluster]) -> usize {
        let mut tokens = 0;
        for cluster in clusters {
            for (_, secret) in remote_secrets(cluster).await {
                for value in secret.data.iter().flat_map(|d| d.values()) {
                    self.0
                        .insert(base64::engine::general_purpose::STANDARD.encode(&value.0));
                    if let Some(token) = token_of(&value.0) {
                        self.add(&token);
                        tokens += 1;
                    }
                }
            }
        }
        tokens
    }

    /// The credentials of every user of a kubeconfig file.
    fn collect_kubeconfig(&mut self, path: &Path) -> usize {
        let config = Kubeconfig::read_from(path).expect("the plane's kubeconfig parses");
        let mut found = 0;
        for auth in config.auth_infos.iter().filter_map(|a| a.auth_info.as_ref()) {
            for secret in [&auth.token, &auth.password, &auth.client_key_data]
                .into_iter()
                .flatten()
            {
                self.add(secret.expose_secret());
                found += 1;
            }
        }
        found
    }
}

/// `-vvv` on every run: the most verbose logs are the likeliest to leak.
async fn run(mesh: &Mesh, command: &str, args: &[&str]) -> Outcome {
    let mut all = vec!["-vvv"];
    all.extend_from_slice(args);
    mesh.run(command, &all).await
}

/// Commands without `--timeout` (they read no cluster), run the same way.
fn offline(mesh: &Mesh, command: &str, args: &[&str]) -> Outcome {
    let output = support::cli::meshform()
        .env("COLUMNS", "400")
        .args(["-vvv", command, "-f"])
        .arg(mesh.file())
        .args(args)
        .output()
        .expect("running meshform");
    let outcome = Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    mesh.record(&outcome.to_string());
    outcome
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("listing").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn no_command_or_format_writes_a_token_or_credential() {
    let clusters = ControlPlane::shared().clusters(&["red", "green", "blue"]).await;
    let (red, green, blue) = (
        clusters.by_name("red"),
        clusters.by_name("green"),
        clusters.by_name("blue"),
    );
    let all = [red, green, blue];
    for (c, network) in all.into_iter().zip(["n1", "n1", "n2"]) {
        install_eastwest_gateway(c).await;
        // The install's objects are read too; none of them may leak either.
        install_istio(c, &Install::correct(c.name(), network)).await;
    }
    // red and green share a network (green a remote), blue is across: every
    // kind of object meshform writes is written.
    let entries = [
        Entry::of(red).network("n1"),
        Entry::of(green).network("n1").remote(),
        Entry::of(blue).network("n2"),
    ];
    let mesh = Mesh::new(&entries);
    let mut secrets = Secrets::default();
    for c in all {
        assert!(
            secrets.collect_kubeconfig(c.kubeconfig()) > 0,
            "the plane's kubeconfig has no credential to look for"
        );
    }
    let out = |name: &str| mesh.dir().join(name).display().to_string();
    let (plan_file, snapshot_file) = (out("plan.json"), out("observed.json"));

    let mut outcomes = Vec::new();
    // Before anything exists, and the first apply (JSON events).
    outcomes.push(offline(&mesh, "validate", &[]).expect(0));
    outcomes.push(offline(&mesh, "validate", &["--format", "json"]).expect(0));
    outcomes.push(run(&mesh, "apply", &["--dry-run", "--diff"]).await.expect(0));
    outcomes.push(
        run(&mesh, "apply", &["--auto-approve", "--diff", "--format", "json"])
            .await
            .expect(0),
    );
    let first = secrets.collect_remote_secrets(&all).await;
    assert_eq!(first, 4, "two primaries hold a secret for each of two peers");

    // Plans in every format, saved, and the saved plan applied.
    outcomes.push(run(&mesh, "plan", &["--rotate-tokens"]).await.expect(0));
    outcomes.push(
        run(&mesh, "plan", &["--rotate-tokens", "--format", "markdown"])
            .await
            .expect(0),
    );
    outcomes.push(
        run(
            &mesh,
            "plan",
            &["--rotate-tokens", "--format", "json", "--out", &plan_file],
        )
        .await
        .expect(0),
    );
    outcomes.push(
        run(&mesh, "apply", &["--auto-approve", "--diff", &plan_file])
            .await
            .expect(0),
    );
    secrets.collect_remote_secrets(&all).await;
    // Rotations with a text diff and with JSON events.
    outcomes.push(
        run(&mesh, "apply", &["--auto-approve", "--diff", "--rotate-tokens"])
            .await
            .expect(0),
    );
    secrets.collect_remote_secrets(&all).await;
    outcomes.push(
        run(
            &mesh,
            "apply",
            &["--auto-approve", "--format", "json", "--rotate-tokens"],
        )
        .await
        .expect(0),
    );
    secrets.collect_remote_secrets(&all).await;
    outcomes.push(
        run(&mesh, "apply", &["--dry-run", "--diff", "--rotate-tokens"])
            .await
            .expect(0),
    );
    outcomes.push(run(&mesh, "plan", &["--detailed-exitcode"]).await.expect(0));

    // Snapshots (file and stdout) and graphs.
    outcomes.push(run(&mesh, "snapshot", &["-o", &snapshot_file]).await.expect(0));
    outcomes.push(run(&mesh, "snapshot", &[]).await.expect(0));
    outcomes.push(run(&mesh, "plan", &["--observed", &snapshot_file]).await.expect(0));
    outcomes.push(offline(&mesh, "graph", &[]).expect(0));
    outcomes.push(offline(&mesh, "graph", &["--observed", &snapshot_file, "--format", "dot"]).expect(0));

    // Errors: a cluster that cannot be reached (its kubeconfig, admin token
    // and all, points at a closed port) and a kubeconfig without the context.
    let unreachable = mesh.dir().join("unreachable.yaml");
    let text = std::fs::read_to_string(blue.kubeconfig()).expect("reading the kubeconfig");
    std::fs::write(&unreachable, text.replace(blue.server(), "https://127.0.0.1:9")).unwrap();
    mesh.write(&[
        entries[0].clone(),
        entries[1].clone(),
        entries[2].clone().kubeconfig(&unreachable),
    ]);
    outcomes.push(run(&mesh, "plan", &[]).await.expect(1));
    outcomes.push(run(&mesh, "plan", &["--skip-unreachable", "--format", "json"]).await);
    outcomes.push(run(&mesh, "apply", &["--auto-approve", "--diff"]).await.expect(1));
    outcomes.push(run(&mesh, "snapshot", &[]).await.expect(0));
    let mut renamed = entries[2].clone();
    renamed.context = "no-such-context".into();
    mesh.write(&[entries[0].clone(), entries[1].clone(), renamed]);
    outcomes.push(run(&mesh, "plan", &["--format", "markdown"]).await.expect(1));
    outcomes.push(
        run(&mesh, "apply", &["--auto-approve", "--format", "json"])
            .await
            .expect(1),
    );

    // The logs really were at their most verbose: kube's own debug lines too.
    let logs: String = outcomes.iter().map(|o| o.stderr.as_str()).collect();
    assert!(
        logs.contains("DEBUG") && logs.contains("kube_client"),
        "not verbose:\n{logs}"
    );

    let written = assert_no_leak(&secrets, &outcomes, mesh.dir(), &[&unreachable, &mesh.file()]);
    assert!(written.iter().any(|name| name.ends_with("plan.json")));
    assert!(written.iter().any(|name| name.ends_with("observed.json")));
    assert!(secrets.0.len() >= 3 * 4 * 3, "{} needles", secrets.0.len());
}

/// Scans every outcome and every file under `dir` (but the test's own
/// inputs) for every needle of `secrets`; returns the files scanned.
fn assert_no_leak(secrets: &Secrets, outcomes: &[Outcome], dir: &Path, inputs: &[&Path]) -> Vec<String> {
    let mut haystacks: Vec<(String, String)> = outcomes
        .iter()
        .enumerate()
        .map(|(i, o)| (format!("run {i}"), o.to_string()))
        .collect();
    for file in files(dir).into_iter().filter(|f| !inputs.contains(&f.as_path())) {
        let bytes = std::fs::read(&file).expect("reading a written file");
        haystacks.push((file.display().to_string(), String::from_utf8_lossy(&bytes).into_owned()));
    }
    let mut leaks = Vec::new();
    for (name, hay) in &haystacks {
        for needle in &secrets.0 {
            if hay.contains(needle.as_str()) {
                leaks.push(format!("{name}: {}…", &needle[..8]));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets leaked: {leaks:#?}");
    haystacks.into_iter().map(|(name, _)| name).collect()
}

/// `meshform <command>` at `RUST_LOG=debug` (which overrides `-v`), the
/// other way a person turns the logs up.
async fn run_debug(mesh: &Mesh, command: &str, args: &[&str]) -> Outcome {
    let output = tokio::process::Command::from(support::cli::meshform())
        .env("RUST_LOG", "debug")
        .env("COLUMNS", "400")
        .args([command, "-f"])
        .arg(mesh.file())
        .args(["--timeout", "10s"])
        .args(args)
        .output()
        .await
        .expect("running meshform");
    let outcome = Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    mesh.record(&outcome.to_string());
    outcome
}

/// istioctl's token Secret for the reader account in `peer`, as
/// `istioctl create-remote-secret` makes it, and the never-expiring token
/// the token controller puts in it.
async fn istioctl_token(peer: &Cluster) -> String {
    use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
    use kube::api::{Api, ObjectMeta, PostParams};
    let accounts: Api<ServiceAccount> = Api::namespaced(peer.client(), NAMESPACE);
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("istio-reader-service-account".into()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    accounts.create(&PostParams::default(), &account).await.ok();
    let secrets: Api<Secret> = Api::namespaced(peer.client(), NAMESPACE);
    let token_secret = Secret {
        metadata: ObjectMeta {
            name: Some(ISTIOCTL_TOKEN_SECRET.into()),
            annotations: Some(
                [(
                    "kubernetes.io/service-account.name".to_string(),
                    "istio-reader-service-account".to_string(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/service-account-token".into()),
        ..Secret::default()
    };
    secrets
        .create(&PostParams::default(), &token_secret)
        .await
        .expect("istioctl's token Secret");
    eventually(
        "the token controller to fill istioctl's token",
        Duration::from_secs(30),
        async || {
            let secret = secrets.get(ISTIOCTL_TOKEN_SECRET).await.ok()?;
            let token = secret.data?.get("token")?.0.clone();
            String::from_utf8(token).ok()
        },
    )
    .await
}

/// The name `istioctl create-remote-secret` gives the reader's token Secret
/// (`tokenSecretName` in istioctl/pkg/multicluster/remote_secret.go).
const ISTIOCTL_TOKEN_SECRET: &str = "istio-reader-service-account-istio-remote-secret-token";

/// `istioctl create-remote-secret --name <peer> | kubectl apply -f -` run
/// against `primary`: istioctl prints the kubeconfig under `stringData`, and
/// kubectl's client-side apply keeps the whole object it was given, token
/// included, in `kubectl.kubernetes.io/last-applied-configuration`. Returns
/// the kubeconfig istioctl wrote.
fn kubectl_apply_istioctl_secret(primary: &Cluster, peer: &Cluster, token: &str) -> String {
    let config = Kubeconfig::read_from(peer.kubeconfig()).expect("the plane's kubeconfig");
    let ca = config
        .clusters
        .iter()
        .find(|c| c.name == peer.name())
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.certificate_authority_data.clone())
        .expect("the peer's CA");
    let kubeconfig = format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: {server}\n  name: {peer}\n\
         contexts:\n- context:\n    cluster: {peer}\n    user: {peer}\n  name: {peer}\ncurrent-context: {peer}\nkind: Config\n\
         preferences: {{}}\nusers:\n- name: {peer}\n  user:\n    token: {token}\n",
        server = peer.server(),
        peer = peer.name()
    );
    let manifest = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {
            "name": format!("istio-remote-secret-{}", peer.name()),
            "namespace": NAMESPACE,
            "labels": {"istio/multiCluster": "true"},
            "annotations": {"networking.istio.io/cluster": peer.name()},
        },
        "stringData": {peer.name(): &kubeconfig},
    });
    let mut child = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(primary.kubeconfig())
        .args(["--context", primary.name(), "apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running kubectl (./test installs it)");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(manifest.to_string().as_bytes())
        .expect("writing the manifest");
    let output = child.wait_with_output().expect("kubectl apply");
    assert!(
        output.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    kubeconfig
}

async fn remote_secret(primary: &Cluster, peer: &Cluster) -> k8s_openapi::api::core::v1::Secret {
    remote_secrets(primary).await[&format!("istio-remote-secret-{}", peer.name())].clone()
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

// Regression (issue 29): adopting a remote secret made by `istioctl create-remote-secret | kubectl apply -f -`
// printed its never-expiring token in `apply --adopt --diff`, text and JSON, from the copy kubectl keeps in the
// last-applied-configuration annotation; adoption left that copy on the Secret.
#[tokio::test]
async fn adopting_a_kubectl_applied_istioctl_secret_prints_no_token_and_removes_its_copy() {
    let clusters = ControlPlane::shared().clusters(&["amber", "olive"]).await;
    let (amber, olive) = (clusters.by_name("amber"), clusters.by_name("olive"));
    let token = istioctl_token(olive).await;
    let kubeconfig = kubectl_apply_istioctl_secret(amber, olive, &token);
    let made = remote_secret(amber, olive).await;
    let copy = &made.metadata.annotations.as_ref().expect("annotations")[LAST_APPLIED];
    assert!(
        copy.contains(&token),
        "kubectl keeps the token in its annotation: the test would prove nothing"
    );

    let mesh = Mesh::flat(&[amber, olive]);
    let mut secrets = Secrets::default();
    secrets.add(&token);
    secrets
        .0
        .insert(base64::engine::general_purpose::STANDARD.encode(&kubeconfig));
    for c in [amber, olive] {
        secrets.collect_kubeconfig(c.kubeconfig());
    }
    let out = |name: &str| mesh.dir().join(name).display().to_string();
    let (plan_file, snapshot_file) = (out("plan.json"), out("observed.json"));

    let mut outcomes = Vec::new();
    outcomes.push(run(&mesh, "snapshot", &["-o", &snapshot_file]).await.expect(0));
    outcomes.push(run_debug(&mesh, "snapshot", &[]).await.expect(0));
    outcomes.push(run(&mesh, "check", &["--format", "json"]).await);
    let text = run(&mesh, "plan", &["--adopt"]).await.expect(0);
    // The plan says what adoption does to the copy, and that the old token outlives it, with the command.
    assert!(
        text.stdout.contains(&format!(
            "remove the copy of it (token included) kept in annotation {LAST_APPLIED}"
        )),
        "{text}"
    );
    let revoke = format!("kubectl --context olive -n {NAMESPACE} delete secret {ISTIOCTL_TOKEN_SECRET}");
    assert!(
        text.stdout.contains("never expires") && text.stdout.contains(&revoke),
        "{text}"
    );
    outcomes.push(text);
    outcomes.push(run(&mesh, "plan", &["--adopt", "--format", "markdown"]).await.expect(0));
    outcomes.push(
        run_debug(&mesh, "plan", &["--adopt", "--format", "json", "--out", &plan_file])
            .await
            .expect(0),
    );
    outcomes.push(
        run(&mesh, "plan", &["--observed", &snapshot_file, "--adopt"])
            .await
            .expect(0),
    );
    let dry = run(&mesh, "apply", &["--adopt", "--dry-run", "--diff"]).await.expect(0);
    assert!(
        dry.stdout
            .contains(&format!("-      \"{LAST_APPLIED}\": \"(sensitive value)\"")),
        "{dry}"
    );
    outcomes.push(dry);
    assert_eq!(
        remote_secret(amber, olive).await.metadata.resource_version,
        made.metadata.resource_version
    );
    // The real adoption, as JSON events with diffs (the saved plan), at RUST_LOG=debug.
    outcomes.push(
        run_debug(
            &mesh,
            "apply",
            &["--auto-approve", "--diff", "--format", "json", &plan_file],
        )
        .await
        .expect(0),
    );

    // Gone on the API server, and the Secret is meshform's with meshform's token.
    let adopted = remote_secret(amber, olive).await;
    assert_eq!(adopted.metadata.uid, made.metadata.uid, "adopted, not replaced");
    let annotations = adopted.metadata.annotations.clone().unwrap_or_default();
    assert!(!annotations.contains_key(LAST_APPLIED), "{annotations:#?}");
    let new_token = token_of(&adopted.data.as_ref().unwrap()[olive.name()].0).expect("a token");
    assert_ne!(new_token, token);
    secrets.collect_remote_secrets(&[amber, olive]).await;
    mesh.assert_converged(&[amber, olive]).await;

    // Again, with a text diff: kubectl applies istioctl's secret anew in place of meshform's.
    use k8s_openapi::api::core::v1::Secret;
    kube::Api::<Secret>::namespaced(amber.client(), NAMESPACE)
        .delete(&format!("istio-remote-secret-{}", olive.name()), &Default::default())
        .await
        .expect("deleting meshform's secret");
    kubectl_apply_istioctl_secret(amber, olive, &token);
    let diff = run(&mesh, "apply", &["--auto-approve", "--adopt", "--diff"])
        .await
        .expect(0);
    assert!(
        diff.stdout
            .contains(&format!("-      \"{LAST_APPLIED}\": \"(sensitive value)\"")),
        "{diff}"
    );
    outcomes.push(diff);
    assert!(
        !remote_secret(amber, olive)
            .await
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key(LAST_APPLIED)
    );
    secrets.collect_remote_secrets(&[amber, olive]).await;

    // What the plan said: istioctl's token still reads olive until its Secret goes, then it is refused.
    use k8s_openapi::api::core::v1::Namespace;
    let old = olive.client_with_token(&token).await;
    kube::Api::<Namespace>::all(old.clone())
        .list(&Default::default())
        .await
        .expect("the old token still works after adoption");
    let deleted = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{revoke} --kubeconfig {}", olive.kubeconfig().display()))
        .output()
        .expect("running the plan's command");
    assert!(deleted.status.success(), "{}", String::from_utf8_lossy(&deleted.stderr));
    // kube-apiserver caches a token's authentication for 10 s.
    eventually(
        "the old token to be refused",
        Duration::from_secs(30),
        async || match kube::Api::<Namespace>::all(old.clone()).list(&Default::default()).await {
            Err(kube::Error::Api(status)) if status.code == 401 => Some(()),
            _ => None,
        },
    )
    .await;

    assert_no_leak(&secrets, &outcomes, mesh.dir(), &[&mesh.file()]);
    mesh.assert_no_token_leaked(&[amber, olive]).await;
}

/// A kubeconfig for `cluster` whose user is an exec plugin: a script that
/// fails with the credentials it was given (an OIDC client secret in its
/// arguments and environment) in its output, as a misconfigured OIDC plugin
/// does. With `succeed_once`, each meshform run's first call succeeds with
/// a token about to expire (so kube calls it again at the first request) and
/// the second fails: the failure then comes from a request, not the client's
/// construction.
fn exec_kubeconfig(dir: &Path, cluster: &Cluster, succeed_once: bool, secret: &str) -> PathBuf {
    let name = if succeed_once { "refresh" } else { "connect" };
    let script = dir.join(format!("oidc-login-{name}"));
    let admin = Kubeconfig::read_from(cluster.kubeconfig()).expect("kubeconfig");
    let admin_token = admin
        .auth_infos
        .iter()
        .find_map(|a| a.auth_info.as_ref()?.token.as_ref())
        .expect("the plane's admin token")
        .expose_secret()
        .to_string();
    let marker = dir.join(format!("{name}.called"));
    let succeed = if succeed_once {
        format!(
            "if [ ! -e {m} ]; then touch {m}; exp=$(date -u -d '+30 seconds' +%Y-%m-%dT%H:%M:%SZ); \
             printf '{{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{{\"token\":\"{admin_token}\",\"expirationTimestamp\":\"%s\"}}}}' \"$exp\"; exit 0; fi\nrm -f {m}\n",
            m = marker.display()
        )
    } else {
        String::new()
    };
    let body = format!(
        "#!/bin/sh\n{succeed}echo \"oidc: invalid_client for client secret $2 ($OIDC_CLIENT_SECRET)\" >&2\necho 'partial {secret}-STDOUT'\nexit 3\n"
    );
    std::fs::write(&script, body).expect("writing the plugin");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let ca = admin
        .clusters
        .iter()
        .find(|c| c.name == cluster.name())
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.certificate_authority_data.clone())
        .expect("CA");
    let path = dir.join(format!("exec-{name}.yaml"));
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\n\
         users:\n- name: u\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: {script}\n\
         \u{20}     args: [get-token, \"--oidc-client-secret={secret}-ARG\"]\n      env: [{{name: OIDC_CLIENT_SECRET, value: \"{secret}-ENV\"}}]\n\
         \u{20}     interactiveMode: Never\ncontexts:\n- name: {context}\n  context: {{cluster: c, user: u}}\n",
        server = cluster.server(),
        script = script.display(),
        context = cluster.name(),
    );
    std::fs::write(&path, text).expect("writing the kubeconfig");
    path
}

// Regression (issue 29): kube formats a failed exec plugin with its command line, environment and output (an
// OIDC client secret), and that text reached plans, snapshots, check and logs.
#[tokio::test]
async fn a_failing_exec_plugin_reaches_no_output_with_what_it_was_given_or_printed() {
    let clusters = ControlPlane::shared().clusters(&["coral", "slate"]).await;
    let (coral, slate) = (clusters.by_name("coral"), clusters.by_name("slate"));
    let secret = "OIDC-CLIENT-SECRET-8d1f4a7c93";
    let mut secrets = Secrets::default();
    for suffix in ["ARG", "ENV", "STDOUT"] {
        secrets.add(&format!("{secret}-{suffix}"));
    }
    for c in [coral, slate] {
        secrets.collect_kubeconfig(c.kubeconfig());
    }
    let mesh = Mesh::flat(&[coral, slate]);
    let mut outcomes = Vec::new();
    let mut inputs = vec![mesh.file()];
    for succeed_once in [false, true] {
        let kubeconfig = exec_kubeconfig(mesh.dir(), slate, succeed_once, secret);
        inputs.push(kubeconfig.clone());
        inputs.push(mesh.dir().join(if succeed_once {
            "oidc-login-refresh"
        } else {
            "oidc-login-connect"
        }));
        mesh.write(&[
            Entry::of(coral).network("flat"),
            Entry::of(slate).network("flat").kubeconfig(&kubeconfig),
        ]);
        let out = |name: &str| mesh.dir().join(format!("{name}-{succeed_once}")).display().to_string();
        let plan = run(&mesh, "plan", &[]).await.expect(1);
        // What is left says which plugin failed, how, and where to look.
        assert!(
            plan.stdout.contains("exec plugin `oidc-login-") || plan.stderr.contains("exec plugin `oidc-login-"),
            "{plan}"
        );
        assert!(plan.to_string().contains("exit status: 3"), "{plan}");
        outcomes.push(plan);
        outcomes.push(run(&mesh, "plan", &["--format", "markdown"]).await.expect(1));
        outcomes.push(
            run_debug(
                &mesh,
                "plan",
                &["--skip-unreachable", "--format", "json", "--out", &out("plan.json")],
            )
            .await,
        );
        outcomes.push(run(&mesh, "snapshot", &["-o", &out("observed.json")]).await.expect(0));
        outcomes.push(run_debug(&mesh, "snapshot", &[]).await.expect(0));
        outcomes.push(run(&mesh, "check", &[]).await.expect(1));
        outcomes.push(run(&mesh, "apply", &["--auto-approve", "--diff"]).await.expect(1));
        outcomes.push(
            run_debug(&mesh, "apply", &["--auto-approve", "--format", "json"])
                .await
                .expect(1),
        );
    }
    let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    assert_no_leak(&secrets, &outcomes, mesh.dir(), &inputs);
}

/// Managed trust (issue 32): the root's key, every intermediate's key
/// (`ca-key.pem` of each `cacerts`, first and renewed) and what the key
/// command was given or printed to stderr reach no output of any command or
/// format, no plan file and no snapshot, at the most verbose logs.
#[tokio::test]
async fn no_root_or_intermediate_key_reaches_any_output() {
    let clusters = ControlPlane::shared().clusters(&["red", "green"]).await;
    let (red, green) = (clusters.by_name("red"), clusters.by_name("green"));
    let all = [red, green];
    let entries = [Entry::of(red).network("flat"), Entry::of(green).network("flat")];
    let mesh = Mesh::new(&entries);
    let key = rcgen::KeyPair::generate().expect("a key");
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "redaction root");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let root = params.self_signed(&key).expect("a root");
    std::fs::write(mesh.dir().join("root-cert.pem"), root.pem()).unwrap();
    // Outside the mesh's directory: the key file is the test's input, not output.
    let key_dir = tempfile::tempdir().unwrap();
    let key_file = key_dir.path().join("root-key.pem");
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let trust = |lifetimes: &str| {
        format!(
            "[mesh.trust]\nmode = \"managed\"\nroot_cert = \"root-cert.pem\"\nroot_key_command = [\"sh\", \"-c\", \"echo quiet-argument-marker >/dev/null; echo stderr-marker-of-the-key-command >&2; cat {}\"]\n{lifetimes}",
            key_file.display()
        )
    };
    mesh.write_with(&entries, &trust(""));
    let mut secrets = Secrets::default();
    let pem_secrets = |secrets: &mut Secrets, pem: &str| {
        secrets.add(pem);
        for line in pem.lines().filter(|l| !l.starts_with("-----")) {
            secrets.add(line);
        }
    };
    pem_secrets(&mut secrets, &key.serialize_pem());
    secrets.add("quiet-argument-marker");
    secrets.add("stderr-marker-of-the-key-command");
    let out = |name: &str| mesh.dir().join(name).display().to_string();
    let (plan_file, snapshot_file) = (out("plan.json"), out("observed.json"));

    let mut outcomes = Vec::new();
    outcomes.push(offline(&mesh, "validate", &[]).expect(0));
    outcomes.push(offline(&mesh, "validate", &["--format", "json"]).expect(0));
    outcomes.push(
        run(&mesh, "plan", &["--format", "json", "--out", &plan_file])
            .await
            .expect(0),
    );
    outcomes.push(run(&mesh, "apply", &["--dry-run", "--diff"]).await.expect(0));
    outcomes.push(
        run(&mesh, "apply", &["--auto-approve", "--diff", &plan_file])
            .await
            .expect(0),
    );
    for pem in ca_keys(&all).await {
        pem_secrets(&mut secrets, &pem);
    }
    outcomes.push(run(&mesh, "plan", &["--format", "markdown"]).await.expect(0));
    outcomes.push(run(&mesh, "check", &[]).await);
    outcomes.push(run(&mesh, "snapshot", &["-o", &snapshot_file]).await.expect(0));
    outcomes.push(run(&mesh, "plan", &["--observed", &snapshot_file]).await.expect(0));
    // Renewed (a window as long as the lifetime): new keys, with a diff and JSON events.
    mesh.write_with(
        &entries,
        &trust("intermediate_lifetime = \"8761h\"\nrenew_before = \"8760h\"\n"),
    );
    outcomes.push(
        run(&mesh, "apply", &["--auto-approve", "--diff", "--format", "json"])
            .await
            .expect(0),
    );
    for pem in ca_keys(&all).await {
        pem_secrets(&mut secrets, &pem);
    }
    // Each renewal window a little longer than the last intermediate's life, so each apply renews.
    mesh.write_with(
        &entries,
        &trust("intermediate_lifetime = \"8762h\"\nrenew_before = \"8761h\"\n"),
    );
    outcomes.push(run_debug(&mesh, "apply", &["--auto-approve", "--diff"]).await.expect(0));
    for pem in ca_keys(&all).await {
        pem_secrets(&mut secrets, &pem);
    }
    // A root rotation's three stages (issue 32): a second root, the first as
    // `previous_root_cert`; each stage's keys are looked for in everything after.
    let next_key = rcgen::KeyPair::generate().expect("a key");
    let mut next_params = rcgen::CertificateParams::default();
    next_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "redaction next root");
    next_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let next = next_params.self_signed(&next_key).expect("a root");
    std::fs::write(mesh.dir().join("next-root-cert.pem"), next.pem()).unwrap();
    let next_key_file = key_dir.path().join("next-root-key.pem");
    std::fs::write(&next_key_file, next_key.serialize_pem()).unwrap();
    pem_secrets(&mut secrets, &next_key.serialize_pem());
    mesh.write_with(
        &entries,
        &format!(
            "[mesh.trust]\nmode = \"managed\"\nroot_cert = \"next-root-cert.pem\"\nprevious_root_cert = \"root-cert.pem\"\nroot_key_command = [\"sh\", \"-c\", \"echo stderr-marker-of-the-key-command >&2; cat {}\"]\n",
            next_key_file.display()
        ),
    );
    let (old_root, next_root) = (
        TestRoot {
            cert: root.pem(),
            key: key.serialize_pem(),
        },
        TestRoot {
            cert: next.pem(),
            key: next_key.serialize_pem(),
        },
    );
    outcomes.push(run(&mesh, "plan", &["--format", "json"]).await.expect(0));
    outcomes.push(run(&mesh, "apply", &["--auto-approve", "--diff"]).await.expect(0));
    for c in all {
        publish(c, &[&old_root, &next_root]).await;
    }
    outcomes.push(run(&mesh, "check", &["--format", "json"]).await);
    outcomes.push(
        run(&mesh, "apply", &["--auto-approve", "--diff", "--format", "json"])
            .await
            .expect(0),
    );
    for pem in ca_keys(&all).await {
        pem_secrets(&mut secrets, &pem);
    }
    outcomes.push(run(&mesh, "plan", &["--format", "markdown"]).await.expect(0));
    outcomes.push(run_debug(&mesh, "apply", &["--auto-approve", "--diff"]).await.expect(0));
    for pem in ca_keys(&all).await {
        pem_secrets(&mut secrets, &pem);
    }
    outcomes.push(run(&mesh, "check", &[]).await);
    // A failing key command: its status, not what it printed.
    mesh.write_with(
        &entries,
        &trust("intermediate_lifetime = \"8763h\"\nrenew_before = \"8762h\"\n").replace("; cat ", "; exit 7; cat "),
    );
    let failed = run(&mesh, "apply", &["--auto-approve"]).await.expect(1);
    assert!(failed.stderr.contains("exited with status 7"), "{failed}");
    outcomes.push(failed);
    assert_no_leak(&secrets, &outcomes, mesh.dir(), &[&mesh.file()]);
    assert!(secrets.0.len() >= 40, "{} needles", secrets.0.len());
}

/// `ca-key.pem` of `cacerts` in each of `clusters`.
async fn ca_keys(clusters: &[&Cluster]) -> Vec<String> {
    let mut keys = Vec::new();
    for cluster in clusters {
        let secret = kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(cluster.client(), NAMESPACE)
            .get("cacerts")
            .await
            .unwrap_or_else(|e| panic!("cacerts in {}: {e}", cluster.name()));
        keys.push(String::from_utf8(secret.data.unwrap()["ca-key.pem"].0.clone()).unwrap());
    }
    assert_eq!(keys.len(), clusters.len());
    keys
}
