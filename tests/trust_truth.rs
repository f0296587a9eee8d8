//! Truth for managed trust (issue 32 item 5): the real istiod of the test
//! harness (`tests/istiod/`), started on the `cacerts` Secret meshform wrote
//! for its cluster, issues workload certificates that verify against every
//! other cluster's `istio-ca-root-cert`, the roots sidecars there trust.
//!
//! Each istiod is asked as a sidecar asks: a CSR for
//! `spiffe://cluster.local/ns/sample/sa/default` to istiod's CA
//! (`istio.v1.auth.IstioCertificateService/CreateCertificate`) over TLS on
//! its secure gRPC port, with a token of that ServiceAccount from the
//! plane's TokenRequest API, which istiod reviews with the API server
//! (security/pkg/server/ca/server.go, authenticate/kubeauth/kube_jwt.go).
//! Chains are verified with webpki, as a peer's proxy would: leaf and
//! intermediates against the other cluster's roots only.
//!
//! A cluster left on its own root (istiod's self-signed CA,
//! pilot/pkg/bootstrap/istio_ca.go) fails that verification both ways, and
//! `meshform check` reports it under `root_of_trust`.

mod support;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};
use support::controlplane::{Cluster, ControlPlane};
use support::istiod::{ISTIOD_TIMEOUT, Istiod, IstiodConfig, Snapshot};
use support::mesh::{Entry, Mesh, NAMESPACE, eventually};

/// The workload every istiod is asked for a certificate as.
const WORKLOAD_NAMESPACE: &str = "sample";
const WORKLOAD: &str = "sample/default";
const IDENTITY: &str = "spiffe://cluster.local/ns/sample/sa/default";

/// A root CA made for the test: its certificate and key (PEM).
struct Root {
    cert: String,
    key: String,
}

fn make_root(name: &str) -> Root {
    let key = rcgen::KeyPair::generate().expect("a key");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).expect("a root");
    Root {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// mesh.toml for `entries`, with managed trust of `root` when given.
fn write_mesh(mesh: &Mesh, entries: &[Entry], root: Option<&Root>) {
    let Some(root) = root else {
        mesh.write(entries);
        return;
    };
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(mesh.dir().join("root-cert.pem"), &root.cert).unwrap();
    let key = mesh.dir().join("root-key.pem");
    std::fs::write(&key, &root.key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    mesh.write_with(
        entries,
        "[mesh.trust]\nmode = \"managed\"\nroot_cert = \"root-cert.pem\"\nroot_key = \"root-key.pem\"\n",
    );
}

fn ders(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.expect("a PEM certificate"))
        .collect()
}

/// Starts istiod for `cluster`, asked for a workload certificate; on the
/// cluster's `cacerts` when `cacerts`, else on its own self-signed CA.
fn start_istiod(cluster: &Cluster, cacerts: bool) -> Istiod {
    let mut config = IstiodConfig::new(cluster.name()).workload_cert(WORKLOAD);
    if cacerts {
        config = config.cacerts();
    }
    Istiod::start(cluster, &config)
}

/// The chain istiod's CA issued (leaf first, root last), once it has.
async fn issued(istiod: &Istiod) -> Vec<CertificateDer<'static>> {
    let has_chain = |s: &Snapshot| s.workload.as_ref().is_some_and(|w| !w.chain.is_empty());
    let snapshot = istiod.wait_for("a workload certificate", has_chain).await;
    let workload = snapshot.workload.unwrap();
    assert_eq!(workload.identity, IDENTITY);
    let chain: Vec<_> = workload.chain.iter().flat_map(|pem| ders(pem)).collect();
    assert!(chain.len() >= 2, "leaf and root at least: {} certificates", chain.len());
    chain
}

/// `istio-ca-root-cert` of the mesh namespace of `cluster`, once its istiod
/// has published its root there.
async fn published_roots(cluster: &Cluster, istiod: &Istiod) -> Vec<CertificateDer<'static>> {
    let root = istiod
        .wait_for("istiod's root", |s| !s.root_cert.is_empty())
        .await
        .root_cert;
    let root = ders(&root).remove(0);
    let configmaps: Api<ConfigMap> = Api::namespaced(cluster.client(), NAMESPACE);
    eventually(
        &format!("{}'s istio-ca-root-cert holds its istiod's root", cluster.name()),
        ISTIOD_TIMEOUT,
        async || {
            let bundle = configmaps.get_opt("istio-ca-root-cert").await.ok()??;
            let roots = ders(bundle.data?.get("root-cert.pem")?);
            roots.contains(&root).then_some(roots)
        },
    )
    .await
}

/// Whether `chain` (leaf first; its last certificate, the issuing root, is
/// not trusted by itself) verifies to one of `roots` for mTLS both ways, and
/// names the workload.
fn verifies(chain: &[CertificateDer<'static>], roots: &[CertificateDer<'static>]) -> Result<(), String> {
    let anchors: Vec<_> = roots
        .iter()
        .map(|r| webpki::anchor_from_trusted_cert(r).map(|a| a.to_owned()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("a root is no trust anchor: {e:?}"))?;
    let leaf = webpki::EndEntityCert::try_from(&chain[0]).map_err(|e| format!("the leaf: {e:?}"))?;
    let intermediates = &chain[1..chain.len() - 1];
    for usage in [webpki::KeyUsage::client_auth(), webpki::KeyUsage::server_auth()] {
        leaf.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            intermediates,
            UnixTime::now(),
            usage,
            None,
            None,
        )
        .map_err(|e| format!("{e:?}"))?;
    }
    let (_, cert) = x509_parser::parse_x509_certificate(&chain[0]).map_err(|e| e.to_string())?;
    let sans = cert
        .subject_alternative_name()
        .map_err(|e| e.to_string())?
        .map(|san| format!("{:?}", san.value.general_names))
        .unwrap_or_default();
    if !sans.contains(IDENTITY) {
        return Err(format!("the leaf does not name {IDENTITY}: {sans}"));
    }
    Ok(())
}

/// Every cluster's chain against every cluster's roots: `trusted(a, b)`
/// says whether a's workload must verify against b's roots.
fn assert_trust(
    names: &[&str],
    chains: &[Vec<CertificateDer<'static>>],
    roots: &[Vec<CertificateDer<'static>>],
    trusted: impl Fn(&str, &str) -> bool,
) {
    let mut wrong = Vec::new();
    for (i, issuer) in names.iter().enumerate() {
        for (j, verifier) in names.iter().enumerate() {
            let result = verifies(&chains[i], &roots[j]);
            let want = trusted(issuer, verifier);
            if result.is_ok() != want {
                wrong.push(format!(
                    "{issuer}'s workload against {verifier}'s istio-ca-root-cert: want {}, got {result:?}",
                    if want { "verified" } else { "refused" }
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// The `root_of_trust` line of `meshform check --format json`.
async fn root_of_trust(mesh: &Mesh) -> serde_json::Value {
    let check = mesh.run("check", &["--format", "json"]).await;
    let json = check.json();
    json["mesh_checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "root_of_trust")
        .cloned()
        .unwrap_or_else(|| panic!("no root_of_trust check:\n{check}"))
}

#[tokio::test]
async fn istiod_on_meshforms_cacerts_issues_workload_certificates_every_other_cluster_trusts() {
    let clusters = ControlPlane::shared().clusters(&["east", "west", "north"]).await;
    let [east, west, north] = clusters.by_names(["east", "west", "north"]);
    for cluster in [east, west, north] {
        cluster.create_namespace(WORKLOAD_NAMESPACE).await;
    }
    let root = make_root("mesh root");
    let managed = [Entry::of(east).network("flat"), Entry::of(west).network("flat")];
    let mesh = Mesh::new(&managed);
    write_mesh(&mesh, &managed, Some(&root));
    mesh.apply(&[]).await;

    // east and west on the cacerts meshform wrote; north left on its own root.
    let istiods = [
        start_istiod(east, true),
        start_istiod(west, true),
        start_istiod(north, false),
    ];
    let names = ["east", "west", "north"];
    let mut chains = Vec::new();
    let mut roots = Vec::new();
    for (cluster, istiod) in [east, west, north].into_iter().zip(&istiods) {
        chains.push(issued(istiod).await);
        roots.push(published_roots(cluster, istiod).await);
    }
    let mesh_root = ders(&root.cert).remove(0);
    for (name, chain) in names.iter().zip(&chains).take(2) {
        assert_eq!(chain.last(), Some(&mesh_root), "{name}'s chain ends at the mesh's root");
    }
    assert_ne!(chains[2].last(), Some(&mesh_root));
    // Each workload verifies at home (the harness works) and in the other
    // managed cluster; north's and the others' refuse each other.
    assert_trust(&names, &chains, &roots, |a, b| a == b || (a != "north" && b != "north"));

    // meshform check of the three, trust only checked: north's root is a blocker.
    let all = [managed[0].clone(), managed[1].clone(), Entry::of(north).network("flat")];
    write_mesh(&mesh, &all, None);
    let line = root_of_trust(&mesh).await;
    assert_eq!(line["status"], "fail", "{line:#}");
    let message = line["problems"][0]["message"].as_str().unwrap_or_default();
    assert_eq!(line["problems"][0]["code"], "meshform::plan::root_of_trust", "{line:#}");
    assert!(
        message.contains("east, west (root") && message.contains("north (root"),
        "north apart: {line:#}"
    );

    // Managed, apply writes north's cacerts; istiod restarted on it is trusted everywhere.
    write_mesh(&mesh, &all, Some(&root));
    mesh.apply(&[]).await;
    let [east_istiod, west_istiod, north_istiod] = istiods;
    drop(north_istiod);
    let north_istiod = start_istiod(north, true);
    chains[2] = issued(&north_istiod).await;
    roots[2] = published_roots(north, &north_istiod).await;
    assert_eq!(chains[2].last(), Some(&mesh_root));
    assert_trust(&names, &chains, &roots, |_, _| true);
    let line = root_of_trust(&mesh).await;
    assert_eq!(line["status"], "pass", "{line:#}");
    for istiod in [&east_istiod, &west_istiod, &north_istiod] {
        mesh.record(&istiod.output());
    }
    mesh.assert_no_token_leaked(&[east, west, north]).await;
}
