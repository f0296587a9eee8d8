//! Managed trust on real API servers (issue 32): `[mesh.trust] mode =
//! "managed"` writes Istio's plug-in CA Secret `cacerts` into every primary,
//! with an intermediate that verifies to the mesh's root; a second apply
//! writes nothing; an intermediate near its end is renewed; istiod is
//! restarted until it serves the root; a root key others may read is
//! refused, as ssh refuses one. No key reaches any output.

mod support;

use std::os::unix::fs::PermissionsExt;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use support::controlplane::{Cluster, ControlPlane};
use support::mesh::{Entry, Mesh, NAMESPACE};
use support::trust::{Root, ca_certs, manage, pem_ders};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Checks `cacerts` of `cluster` as istiod loads it: all four files, the
/// intermediate a CA named for the cluster and signed by `root`, its key the
/// intermediate's, the chain the intermediate then the root. Returns the
/// intermediate's DER and its end (Unix seconds).
async fn assert_ca_certs(cluster: &Cluster, root: &Root) -> (Vec<u8>, i64) {
    let secret = ca_certs(cluster)
        .await
        .unwrap_or_else(|| panic!("no cacerts in {}", cluster.name()));
    let labels = secret.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("app.kubernetes.io/managed-by").map(String::as_str),
        Some("meshform")
    );
    let data = secret.data.expect("cacerts has data");
    let get = |key: &str| data.get(key).unwrap_or_else(|| panic!("cacerts lacks {key}")).0.clone();
    let root_der = pem_ders(root.cert.as_bytes()).remove(0);
    assert_eq!(
        pem_ders(&get("root-cert.pem")),
        std::slice::from_ref(&root_der),
        "root-cert.pem"
    );
    let ca = pem_ders(&get("ca-cert.pem"));
    assert_eq!(ca.len(), 1, "ca-cert.pem holds the intermediate alone");
    assert_eq!(
        pem_ders(&get("cert-chain.pem")),
        [ca[0].clone(), root_der.clone()],
        "cert-chain.pem"
    );
    let (_, root_cert) = X509Certificate::from_der(&root_der).unwrap();
    let (_, intermediate) = X509Certificate::from_der(&ca[0]).unwrap();
    intermediate
        .verify_signature(Some(root_cert.public_key()))
        .unwrap_or_else(|e| {
            panic!(
                "the intermediate of {} does not verify to the root: {e}",
                cluster.name()
            )
        });
    assert_eq!(intermediate.issuer(), root_cert.subject());
    assert!(intermediate.is_ca(), "the intermediate is a CA");
    let cn = intermediate
        .subject()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        cn.starts_with(&format!("{} ", cluster.name())),
        "named for the cluster: {cn}"
    );
    let key = rcgen::KeyPair::from_pem(std::str::from_utf8(&get("ca-key.pem")).unwrap()).expect("ca-key.pem");
    assert_eq!(
        rcgen::PublicKeyData::subject_public_key_info(&key),
        intermediate.public_key().raw,
        "ca-key.pem is the intermediate's key"
    );
    (ca[0].clone(), intermediate.validity().not_after.timestamp())
}

/// No byte of any key (the root's, each `cacerts`') in what meshform printed
/// or left in the mesh's directory, bar the root key file itself.
async fn assert_no_key_leaked(mesh: &Mesh, outputs: &[String], clusters: &[&Cluster], root: &Root) {
    let mut needles: Vec<String> = Vec::new();
    let body = |pem: &str| -> Vec<String> {
        pem.lines()
            .filter(|l| !l.starts_with("-----") && l.len() >= 32)
            .map(str::to_string)
            .collect()
    };
    needles.extend(body(&root.key));
    for cluster in clusters {
        if let Some(secret) = ca_certs(cluster).await {
            let key = &secret.data.unwrap()["ca-key.pem"].0;
            needles.extend(body(std::str::from_utf8(key).unwrap()));
            use base64::Engine;
            needles.push(base64::engine::general_purpose::STANDARD.encode(key));
        }
    }
    assert!(!needles.is_empty());
    let mut haystacks = outputs.to_vec();
    for entry in std::fs::read_dir(mesh.dir()).unwrap().flatten() {
        if entry.file_name() != "root-key.pem"
            && let Ok(text) = std::fs::read_to_string(entry.path())
        {
            haystacks.push(text);
        }
    }
    for hay in &haystacks {
        for needle in &needles {
            assert!(!hay.contains(needle.as_str()), "key material leaked:\n{hay}");
        }
    }
}

#[tokio::test]
async fn managed_trust_writes_cacerts_that_verify_to_the_root_and_converges() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let [east, west] = clusters.by_names(["east", "west"]);
    let entries = [Entry::of(east).network("flat"), Entry::of(west).network("flat")];
    let mesh = Mesh::new(&entries);
    let root = Root::new("mesh root");
    manage(&mesh, &entries, &root, "");
    let mut outputs = Vec::new();
    let saved = mesh.dir().join("plan.json").display().to_string();
    let plan = mesh.run("plan", &["--out", &saved]).await.expect(0);
    assert!(plan.stdout.contains("+ Secret istio-system/cacerts"), "{plan}");
    assert!(plan.stdout.contains("east intermediate CA"), "{plan}");
    outputs.push(plan.to_string());
    // The saved plan, made again under the lock, is the same plan.
    let applied = mesh.apply(&["--diff", &saved]).await;
    outputs.push(applied.to_string());
    for cluster in [east, west] {
        let (_, not_after) = assert_ca_certs(cluster, &root).await;
        // The default lifetime: a year, from now.
        let year = jiff::Timestamp::now().as_second() + 365 * 24 * 3600;
        assert!((not_after - year).abs() < 3600, "{not_after} vs {year}");
    }
    let before = [ca_certs(east).await.unwrap(), ca_certs(west).await.unwrap()];
    mesh.assert_converged(&[east, west]).await;
    let after = [ca_certs(east).await.unwrap(), ca_certs(west).await.unwrap()];
    assert_eq!(
        before.map(|s| s.metadata.resource_version),
        after.map(|s| s.metadata.resource_version),
        "a second apply rewrote cacerts"
    );
    let observed = mesh.dir().join("observed.json").display().to_string();
    let snapshot = mesh.run("snapshot", &["--out", &observed]).await.expect(0);
    outputs.push(snapshot.to_string());
    assert_no_key_leaked(&mesh, &outputs, &[east, west], &root).await;
}

#[tokio::test]
async fn an_intermediate_near_its_end_is_renewed() {
    let clusters = ControlPlane::shared().clusters(&["east"]).await;
    let east = clusters.by_name("east");
    let entries = [Entry::of(east).network("flat")];
    let mesh = Mesh::new(&entries);
    let root = Root::new("mesh root");
    manage(
        &mesh,
        &entries,
        &root,
        "intermediate_lifetime = \"2h\"\nrenew_before = \"1h\"\n",
    );
    mesh.apply(&[]).await;
    let (first, _) = assert_ca_certs(east, &root).await;
    mesh.assert_plan_empty().await;
    // Two hours left is within a renewal window of 30 days.
    manage(&mesh, &entries, &root, "");
    let check = mesh.run("check", &[]).await;
    assert!(
        check.stdout.contains("ends at"),
        "check warns ahead of the end:\n{check}"
    );
    let plan = mesh.run("plan", &["--format", "json"]).await.expect(0).json();
    let writes: Vec<_> = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "write_ca_certs")
        .collect();
    assert_eq!(writes.len(), 1, "{plan:#}");
    assert_eq!(writes[0]["mode"], "renew");
    mesh.apply(&[]).await;
    let (renewed, not_after) = assert_ca_certs(east, &root).await;
    assert_ne!(first, renewed, "a new intermediate");
    assert!(not_after > jiff::Timestamp::now().as_second() + 300 * 24 * 3600);
    mesh.assert_converged(&[east]).await;
}

#[tokio::test]
async fn a_root_key_others_can_read_is_refused_and_a_key_command_is_used_quietly() {
    let clusters = ControlPlane::shared().clusters(&["east"]).await;
    let east = clusters.by_name("east");
    let entries = [Entry::of(east).network("flat")];
    let mesh = Mesh::new(&entries);
    let root = Root::new("mesh root");
    manage(&mesh, &entries, &root, "");
    let key = mesh.dir().join("root-key.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = mesh.run("apply", &["--auto-approve"]).await.expect(1);
    assert!(refused.stderr.contains("meshform::trust::key_permissions"), "{refused}");
    assert!(refused.stderr.contains("chmod 600"), "{refused}");
    assert!(ca_certs(east).await.is_none(), "nothing was written");

    // The same key from a command: its stderr and arguments are never shown.
    let command = |script: &str, lifetimes: &str| {
        format!(
            "[mesh.trust]\nmode = \"managed\"\nroot_cert = \"root-cert.pem\"\nroot_key_command = [\"sh\", \"-c\", \"{script}\"]\n{lifetimes}"
        )
    };
    mesh.write_with(&entries, &command("cat root-key.pem; echo whisper-in-stderr >&2", ""));
    let applied = mesh.apply(&[]).await;
    assert_ca_certs(east, &root).await;
    // A renewal window as long as the lifetime less an hour: the command runs again, and fails.
    mesh.write_with(
        &entries,
        &command(
            "echo whisper-in-stderr >&2; exit 3",
            "intermediate_lifetime = \"8761h\"\nrenew_before = \"8760h\"\n",
        ),
    );
    let failed = mesh.run("apply", &["--auto-approve"]).await.expect(1);
    assert!(failed.stderr.contains("meshform::trust::key_command"), "{failed}");
    assert!(failed.stderr.contains("exited with status 3"), "{failed}");
    for out in [&applied, &failed] {
        assert!(
            !out.to_string().contains("whisper"),
            "stderr of the key command shown:\n{out}"
        );
        assert!(!out.to_string().contains("root-key.pem"), "arguments shown:\n{out}");
    }
    assert_no_key_leaked(&mesh, &[applied.to_string(), failed.to_string()], &[east], &root).await;
}

#[tokio::test]
async fn istiod_is_restarted_until_it_serves_the_root() {
    let clusters = ControlPlane::shared().clusters(&["east"]).await;
    let east = clusters.by_name("east");
    support::install::install_istio(east, &support::install::Install::correct(east.name(), "flat")).await;
    let entries = [Entry::of(east).network("flat")];
    let mesh = Mesh::new(&entries);
    let root = Root::new("mesh root");
    manage(&mesh, &entries, &root, "");
    // Without consent the restart is only shown.
    let shown = mesh.apply(&[]).await;
    assert!(shown.stdout.contains("rollout restart deployment/istiod"), "{shown}");
    let istiods: Api<Deployment> = Api::namespaced(east.client(), NAMESPACE);
    let restarted = |d: &Deployment| {
        d.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default()
            .contains_key("kubectl.kubernetes.io/restartedAt")
    };
    assert!(!restarted(&istiods.get("istiod").await.unwrap()));
    mesh.apply(&["--restart-workloads"]).await;
    assert!(restarted(&istiods.get("istiod").await.unwrap()), "istiod restarted");
    // What istiod does once restarted on the new cacerts: publish its root.
    let configmaps: Api<ConfigMap> = Api::namespaced(east.client(), NAMESPACE);
    configmaps
        .patch(
            "istio-ca-root-cert",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"root-cert.pem": root.cert}})),
        )
        .await
        .unwrap();
    mesh.assert_converged(&[east]).await;
}
