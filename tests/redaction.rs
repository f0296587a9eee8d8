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

use base64::Engine;
use kube::config::Kubeconfig;
use secrecy::ExposeSecret;
use support::controlplane::{Cluster, ControlPlane};
use support::install::{Install, install_istio};
use support::mesh::{Entry, Mesh, Outcome, install_eastwest_gateway, remote_secrets, token_of};

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

    let mut haystacks: Vec<(String, String)> = outcomes
        .iter()
        .enumerate()
        .map(|(i, o)| (format!("run {i}"), o.to_string()))
        .collect();
    // What meshform wrote; the test's own inputs (a kubeconfig with the
    // admin token in it) are not output.
    for file in files(mesh.dir())
        .into_iter()
        .filter(|f| f != &unreachable && f != &mesh.file())
    {
        let bytes = std::fs::read(&file).expect("reading a written file");
        haystacks.push((file.display().to_string(), String::from_utf8_lossy(&bytes).into_owned()));
    }
    assert!(haystacks.iter().any(|(name, _)| name.ends_with("plan.json")));
    assert!(haystacks.iter().any(|(name, _)| name.ends_with("observed.json")));
    assert!(secrets.0.len() >= 3 * 4 * 3, "{} needles", secrets.0.len());
    let mut leaks = Vec::new();
    for (name, hay) in &haystacks {
        for needle in &secrets.0 {
            if hay.contains(needle.as_str()) {
                leaks.push(format!("{name}: {}…", &needle[..8]));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets leaked: {leaks:#?}");
}
