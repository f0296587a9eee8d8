//! Root rotation on real API servers (issue 32 item 3): `previous_root_cert`
//! beside a new `root_cert` moves the mesh in three applies, each planned
//! only once `check` verifies the stage before it in every cluster; a stage
//! interrupted mid-apply converges when run again; no stage starts while a
//! cluster cannot be read. And a `cacerts` meshform did not write: left
//! alone until `apply --adopt`, which also drops the copies of its key that
//! tools keep in annotations.
//!
//! The plane runs no istiod: once a primary's `cacerts` changes, the test
//! does what istiod does when restarted on it (publishes `istio-ca-root-cert`,
//! in its remotes too) with [`publish`].

mod support;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::json;
use support::controlplane::{Cluster, ControlPlane};
use support::mesh::{Entry, Mesh, NAMESPACE};
use support::trust::{Root, ca_certs, ca_keys, held, manage, pairs, planned, publish, rotate};

/// `check`'s JSON, which words the rotation's stage.
async fn check(mesh: &Mesh) -> String {
    mesh.run("check", &["--format", "json"]).await.stdout
}

fn assert_says(text: &str, words: &str) {
    assert!(text.contains(words), "{words:?} not in:\n{text}");
}

/// A mesh of two primaries and a remote of east's, its intermediates of
/// `old`, every cluster publishing `old`: where a rotation starts.
async fn mesh_on(clusters: [&Cluster; 3], old: &Root) -> (Mesh, [Entry; 3]) {
    let [east, west, north] = clusters;
    let entries = [
        Entry::of(east).network("flat"),
        Entry::of(west).network("flat"),
        Entry::of(north).network("flat").served_by(east.name()),
    ];
    let mesh = Mesh::new(&entries);
    manage(&mesh, &entries, old, "");
    mesh.apply(&[]).await;
    for cluster in clusters {
        publish(cluster, &[old]).await;
    }
    mesh.assert_converged(&clusters).await;
    (mesh, entries)
}

#[tokio::test]
async fn a_root_rotation_runs_as_three_applies_each_verified_by_check_before_the_next() {
    let clusters = ControlPlane::shared().clusters(&["east", "west", "north"]).await;
    let all @ [east, west, north] = clusters.by_names(["east", "west", "north"]);
    let (old, new) = (Root::new("old root"), Root::new("new root"));
    let (mesh, entries) = mesh_on(all, &old).await;
    let before = [held(east).await, held(west).await];
    rotate(&mesh, &entries, &old, &new);

    // Stage 1: both roots in every cacerts, the intermediates and their keys kept.
    assert_says(&check(&mesh).await, "stage 1 of 3 (trust both roots) under way");
    assert_eq!(planned(&mesh).await, pairs(&["east", "west"], "trust_both"));
    let plan = mesh.run("plan", &[]).await.expect(0);
    assert_says(
        &plan.stdout,
        "stage 1 of 3 (trust both roots): keeps intermediate sha256:",
    );
    mesh.apply(&["--diff"]).await;
    for (cluster, before) in [east, west].into_iter().zip(&before) {
        let now = held(cluster).await;
        assert_eq!(
            now.intermediate,
            before.intermediate,
            "{}: intermediate kept",
            cluster.name()
        );
        assert_eq!(now.key, before.key, "{}: its key kept", cluster.name());
        assert_eq!(now.chain, before.chain);
        assert_eq!(now.roots, [old.der(), new.der()], "{}: both roots", cluster.name());
    }
    // Written, not yet verified: no istiod publishes both roots yet.
    assert_eq!(planned(&mesh).await, []);
    assert_says(&check(&mesh).await, "stage 1 of 3 (trust both roots) under way");
    for cluster in [east, west] {
        publish(cluster, &[&old, &new]).await;
    }
    // north's (from east's istiod) still shows the old root alone.
    assert_eq!(planned(&mesh).await, []);
    assert_says(&check(&mesh).await, "istio-ca-root-cert of north shows it");
    publish(north, &[&old, &new]).await;
    let verified = check(&mesh).await;
    assert_says(
        &verified,
        "stage 1 of 3 (trust both roots) verified in every cluster; stage 2 of 3 (sign with the new root) is planned",
    );

    // Stage 2: intermediates of the new root, both roots still trusted.
    assert_eq!(planned(&mesh).await, pairs(&["east", "west"], "sign_with_new"));
    mesh.apply(&[]).await;
    for cluster in [east, west] {
        let now = held(cluster).await;
        assert!(
            std::ptr::eq(now.signed_by(&[&old, &new]).unwrap(), &new),
            "{}",
            cluster.name()
        );
        assert_eq!(now.roots, [old.der(), new.der()], "root-cert.pem unchanged in stage 2");
        assert_eq!(now.chain, [now.intermediate.clone(), new.der()]);
    }
    assert_says(
        &check(&mesh).await,
        "stage 2 of 3 (sign with the new root) verified in every cluster; stage 3 of 3 (drop the previous root) is planned",
    );

    // Stage 3: the new root alone.
    assert_eq!(planned(&mesh).await, pairs(&["east", "west"], "drop_previous"));
    mesh.apply(&[]).await;
    for cluster in [east, west] {
        let now = held(cluster).await;
        assert!(std::ptr::eq(now.signed_by(&[&old, &new]).unwrap(), &new));
        assert_eq!(now.roots, [new.der()]);
    }
    assert_says(&check(&mesh).await, "stage 3 of 3 (drop the previous root) under way");
    for cluster in all {
        publish(cluster, &[&new]).await;
    }
    assert_says(&check(&mesh).await, "complete, every cluster trusts the new root alone");
    assert_eq!(planned(&mesh).await, []);
    // The rotation's end: the new root alone in mesh.toml.
    manage(&mesh, &entries, &new, "");
    mesh.assert_converged(&all).await;
    let mut keys = ca_keys(&[east, west]).await;
    keys.extend(before.into_iter().map(|h| h.key));
    assert_no_key_in_outputs(&mesh, &keys, &[&old, &new]);
}

#[tokio::test]
async fn a_stage_does_not_start_while_a_cluster_cannot_be_read() {
    let clusters = ControlPlane::shared().clusters(&["east", "west", "north"]).await;
    let all @ [east, west, _] = clusters.by_names(["east", "west", "north"]);
    let (old, new) = (Root::new("old root"), Root::new("new root"));
    let (mesh, entries) = mesh_on(all, &old).await;
    rotate(&mesh, &entries, &old, &new);
    let before = held(east).await;
    west.stop().await;
    let blocked = mesh.run("plan", &["--skip-unreachable", "--timeout", "5s"]).await;
    assert_says(&blocked.to_string(), "trust_rotation_blocked");
    assert_says(
        &blocked.to_string(),
        "stage 1 of 3 (trust both roots) waits, for west could not be read",
    );
    let refused = mesh
        .run("apply", &["--auto-approve", "--skip-unreachable", "--timeout", "5s"])
        .await;
    assert_says(&refused.to_string(), "trust_rotation_blocked");
    assert_eq!(
        held(east).await.roots,
        before.roots,
        "east was not moved while west was unknown"
    );
    west.start().await;
    assert_eq!(planned(&mesh).await, pairs(&["east", "west"], "trust_both"));
    mesh.apply(&[]).await;
    assert_eq!(held(east).await.roots, [old.der(), new.der()]);
    assert_eq!(held(west).await.roots, [old.der(), new.der()]);
}

// A write whose answer is lost (the API server commits it, then answers 504)
// ends the apply with an error mid-stage; run again, the stage completes and
// the next is planned as if nothing had happened.
#[tokio::test]
async fn a_stage_interrupted_mid_apply_converges_when_run_again() {
    let clusters = ControlPlane::shared().clusters(&["east", "west", "north"]).await;
    let all @ [east, west, north] = clusters.by_names(["east", "west", "north"]);
    let (old, new) = (Root::new("old root"), Root::new("new root"));
    let (mesh, entries) = mesh_on(all, &old).await;
    rotate(&mesh, &entries, &old, &new);
    let lose_answer = || {
        json!({
            "kind": "commit_then_timeout",
            "method": "PATCH",
            "path": format!("/api/v1/namespaces/{NAMESPACE}/secrets/cacerts"),
        })
    };
    for (stage, mode) in [(1, "trust_both"), (2, "sign_with_new"), (3, "drop_previous")] {
        assert_eq!(planned(&mesh).await, pairs(&["east", "west"], mode), "stage {stage}");
        west.add_http_fault(lose_answer()).await;
        let interrupted = mesh.run("apply", &["--auto-approve"]).await;
        // The plane counts the faults fired since it started: one a stage.
        assert_eq!(
            west.clear_http_faults().await,
            stage,
            "west's write lost its answer:\n{interrupted}"
        );
        assert_ne!(interrupted.code, 0, "stage {stage}: {interrupted}");
        // The lost answer's write is there: nothing of the stage is planned
        // twice. Stage 2 changes no istio-ca-root-cert, so it is verified as
        // written and stage 3 is what comes next (the run that applies it is
        // the next loop's); stages 1 and 3 wait for every istiod's bundle,
        // and a run again writes nothing.
        let next = if stage == 2 {
            pairs(&["east", "west"], "drop_previous")
        } else {
            Vec::new()
        };
        assert_eq!(planned(&mesh).await, next, "stage {stage} converged");
        if stage != 2 {
            mesh.apply(&[]).await;
            assert_eq!(planned(&mesh).await, next, "stage {stage} run again");
        }
        let roots: Vec<&Root> = if stage == 3 { vec![&new] } else { vec![&old, &new] };
        for cluster in [east, west] {
            let now = held(cluster).await;
            assert_eq!(
                now.roots,
                roots.iter().map(|r| r.der()).collect::<Vec<_>>(),
                "stage {stage}"
            );
            let signer = if stage == 1 { &old } else { &new };
            assert!(
                std::ptr::eq(now.signed_by(&[&old, &new]).unwrap(), signer),
                "stage {stage}"
            );
        }
        // istiod restarted on the stage's cacerts.
        for cluster in [east, west, north] {
            publish(cluster, &roots).await;
        }
    }
    assert_says(&check(&mesh).await, "complete, every cluster trusts the new root alone");
}

/// A `cacerts` made by hand as Istio's plug-in CA guide makes it, applied
/// with kubectl: the key is also in the last-applied annotation.
async fn hand_made_ca_certs(cluster: &Cluster, root: &Root) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "hand-made intermediate");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    let issuer = rcgen::Issuer::from_ca_cert_pem(&root.cert, rcgen::KeyPair::from_pem(&root.key).unwrap()).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let key_pem = key.serialize_pem();
    let data = json!({
        "ca-cert.pem": cert.pem(),
        "ca-key.pem": key_pem,
        "root-cert.pem": root.cert,
        "cert-chain.pem": format!("{}{}", cert.pem(), root.cert),
    });
    let last_applied = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "cacerts", "namespace": NAMESPACE},
        "stringData": data,
    });
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {
            "name": "cacerts",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": last_applied.to_string()},
        },
        "stringData": data,
    }))
    .unwrap();
    Api::<Secret>::namespaced(cluster.client(), NAMESPACE)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    key_pem
}

#[tokio::test]
async fn a_cacerts_meshform_did_not_write_is_left_alone_until_adopted_and_its_key_copies_go() {
    let clusters = ControlPlane::shared().clusters(&["east"]).await;
    let east = clusters.by_name("east");
    let entries = [Entry::of(east).network("flat")];
    let mesh = Mesh::new(&entries);
    let root = Root::new("mesh root");
    let hand_key = hand_made_ca_certs(east, &Root::new("someone else's root")).await;
    manage(&mesh, &entries, &root, "");
    let conflict = check(&mesh).await;
    assert_says(&conflict, "ca_certs_unmanaged");
    assert_says(&conflict, "was not written by meshform");
    let before = ca_certs(east).await.unwrap().metadata.resource_version;
    let left = mesh.run("apply", &["--auto-approve"]).await;
    assert_says(&left.to_string(), "ca_certs_unmanaged");
    assert_eq!(
        ca_certs(east).await.unwrap().metadata.resource_version,
        before,
        "apply without --adopt left it as it is"
    );
    mesh.apply(&["--adopt", "--diff"]).await;
    let adopted = ca_certs(east).await.unwrap();
    let annotations = adopted.metadata.annotations.clone().unwrap_or_default();
    assert!(
        !annotations.contains_key("kubectl.kubernetes.io/last-applied-configuration"),
        "the annotation copy of the old key is gone: {annotations:?}"
    );
    assert_eq!(
        adopted
            .metadata
            .labels
            .unwrap_or_default()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("meshform")
    );
    let now = held(east).await;
    assert!(now.signed_by(&[&root]).is_some(), "an intermediate of the mesh's root");
    assert_eq!(now.roots, [root.der()]);
    assert_ne!(now.key, hand_key);
    publish(east, &[&root]).await;
    mesh.assert_converged(&[east]).await;
    let mut keys = ca_keys(&[east]).await;
    keys.push(hand_key);
    assert_no_key_in_outputs(&mesh, &keys, &[&root]);
}

/// No line of any key (the roots', the intermediates') in anything meshform
/// printed in this mesh's runs, or left in its directory bar the key files.
fn assert_no_key_in_outputs(mesh: &Mesh, keys: &[String], roots: &[&Root]) {
    let needles: Vec<&str> = keys
        .iter()
        .map(String::as_str)
        .chain(roots.iter().map(|r| r.key.as_str()))
        .flat_map(|pem| pem.lines())
        .filter(|l| !l.starts_with("-----") && l.len() >= 32)
        .collect();
    assert!(!needles.is_empty());
    let mut haystacks = mesh.outputs();
    for entry in std::fs::read_dir(mesh.dir()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with("-key.pem")
            && let Ok(text) = std::fs::read_to_string(entry.path())
        {
            haystacks.push(text);
        }
    }
    for hay in &haystacks {
        for needle in &needles {
            assert!(!hay.contains(needle), "key material leaked:\n{hay}");
        }
    }
}
