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
//!
//! Through a root rotation's three applies, istiod restarted on each stage's
//! `cacerts` issues certificates every other cluster trusts, and publishes
//! the `istio-ca-root-cert` that lets `check` move the rotation on.

mod support;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};
use support::controlplane::{Cluster, ControlPlane};
use support::istiod::{ISTIOD_TIMEOUT, Istiod, IstiodConfig, Snapshot};
use support::mesh::{Entry, Mesh, NAMESPACE, eventually};
use support::trust::{Root, held, manage, pairs, planned, rotate};

/// The workload every istiod is asked for a certificate as.
const WORKLOAD_NAMESPACE: &str = "sample";
const WORKLOAD: &str = "sample/default";
const IDENTITY: &str = "spiffe://cluster.local/ns/sample/sa/default";

/// mesh.toml for `entries`, with managed trust of `root` when given.
fn write_mesh(mesh: &Mesh, entries: &[Entry], root: Option<&Root>) {
    match root {
        Some(root) => manage(mesh, entries, root, ""),
        None => mesh.write(entries),
    }
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

/// A workload certificate as istiod's CA answered a sidecar: the leaf and
/// the chain under it, and apart the root bundle, the answer's last element
/// ("the root cert is the last element", security/pkg/server/ca/server.go),
/// which a peer does not take as trusted.
struct Issued {
    /// Leaf first, then `cert-chain.pem`'s certificates.
    chain: Vec<CertificateDer<'static>>,
    /// istiod's `root-cert.pem`, every root of it.
    roots: Vec<CertificateDer<'static>>,
}

/// The certificate istiod's CA issued, once it has.
async fn issued(istiod: &Istiod) -> Issued {
    let has_chain = |s: &Snapshot| s.workload.as_ref().is_some_and(|w| !w.chain.is_empty());
    let snapshot = istiod.wait_for("a workload certificate", has_chain).await;
    let workload = snapshot.workload.unwrap();
    assert_eq!(workload.identity, IDENTITY);
    let (root_bundle, chain) = workload.chain.split_last().expect("a chain");
    let issued = Issued {
        chain: chain.iter().flat_map(|pem| ders(pem)).collect(),
        roots: ders(root_bundle),
    };
    assert!(
        !issued.chain.is_empty() && !issued.roots.is_empty(),
        "a leaf and a root at least"
    );
    issued
}

/// `istio-ca-root-cert` of the mesh namespace of `cluster`, once its istiod
/// has published its root bundle there, all of it.
async fn published_roots(cluster: &Cluster, istiod: &Istiod) -> Vec<CertificateDer<'static>> {
    let bundle = istiod
        .wait_for("istiod's root", |s| !s.root_cert.is_empty())
        .await
        .root_cert;
    let want = ders(&bundle);
    let configmaps: Api<ConfigMap> = Api::namespaced(cluster.client(), NAMESPACE);
    eventually(
        &format!("{}'s istio-ca-root-cert holds its istiod's roots", cluster.name()),
        ISTIOD_TIMEOUT,
        async || {
            let bundle = configmaps.get_opt("istio-ca-root-cert").await.ok()??;
            let roots = ders(bundle.data?.get("root-cert.pem")?);
            (roots == want).then_some(roots)
        },
    )
    .await
}

/// Whether `issued` verifies to one of `roots` for mTLS both ways, and
/// names the workload: its leaf with the chain under it, as a proxy
/// presents it; the answer's own roots are not trusted.
fn verifies(issued: &Issued, roots: &[CertificateDer<'static>]) -> Result<(), String> {
    let anchors: Vec<_> = roots
        .iter()
        .map(|r| webpki::anchor_from_trusted_cert(r).map(|a| a.to_owned()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("a root is no trust anchor: {e:?}"))?;
    let chain = &issued.chain;
    let leaf = webpki::EndEntityCert::try_from(&chain[0]).map_err(|e| format!("the leaf: {e:?}"))?;
    for usage in [webpki::KeyUsage::client_auth(), webpki::KeyUsage::server_auth()] {
        leaf.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &chain[1..],
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
    chains: &[Issued],
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
    let root = Root::new("mesh root");
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
    let mesh_root = ders(&root.cert);
    for (name, chain) in names.iter().zip(&chains).take(2) {
        assert_eq!(chain.roots, mesh_root, "{name}'s chain ends at the mesh's root");
    }
    assert_ne!(chains[2].roots, mesh_root);
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
    assert_eq!(chains[2].roots, mesh_root);
    assert_trust(&names, &chains, &roots, |_, _| true);
    let line = root_of_trust(&mesh).await;
    assert_eq!(line["status"], "pass", "{line:#}");
    for istiod in [&east_istiod, &west_istiod, &north_istiod] {
        mesh.record(&istiod.output());
    }
    mesh.assert_no_token_leaked(&[east, west, north]).await;
}

fn both(mode: &str) -> Vec<(String, String)> {
    pairs(&["east", "west"], mode)
}

/// `check`'s JSON holds `words`, which word the rotation's stage.
async fn check_says(mesh: &Mesh, words: &str) {
    let text = mesh.run("check", &["--format", "json"]).await.stdout;
    assert!(text.contains(words), "{words:?} not in:\n{text}");
}

/// Each primary's istiod restarted on its `cacerts` as it is now, as a
/// rollout restart after a write would (the harness reads `cacerts` at
/// start): the certificate each issues and the `istio-ca-root-cert` each
/// publishes. The old ones stop first: istiod's namespace controller puts
/// its own bundle back whenever the ConfigMap changes
/// (pilot/pkg/serviceregistry/kube/controller/namespacecontroller.go).
async fn restart(
    mesh: &Mesh,
    istiods: &mut Vec<Istiod>,
    primaries: [&Cluster; 2],
) -> (Vec<Issued>, Vec<Vec<CertificateDer<'static>>>) {
    for istiod in istiods.drain(..) {
        mesh.record(&istiod.output());
    }
    istiods.extend(primaries.map(|c| start_istiod(c, true)));
    let (mut chains, mut bundles) = (Vec::new(), Vec::new());
    for (cluster, istiod) in primaries.into_iter().zip(istiods.iter()) {
        chains.push(issued(istiod).await);
        bundles.push(published_roots(cluster, istiod).await);
    }
    (chains, bundles)
}

/// What each istiod issued and published is its `cacerts`: under the
/// intermediate signed by `signer`, the bundle `roots`.
async fn assert_on_ca_certs(
    primaries: [&Cluster; 2],
    chains: &[Issued],
    bundles: &[Vec<CertificateDer<'static>>],
    roots: &[&Root],
    signer: &Root,
) {
    let roots: Vec<Vec<u8>> = roots.iter().map(|r| r.der()).collect();
    for ((cluster, chain), bundle) in primaries.into_iter().zip(chains).zip(bundles) {
        let name = cluster.name();
        let held = held(cluster).await;
        assert_eq!(
            chain.chain[1].as_ref(),
            held.intermediate,
            "{name}: issued under cacerts' intermediate"
        );
        assert!(
            held.signed_by(&[signer]).is_some(),
            "{name}: the intermediate is not the stage's signer's"
        );
        assert_eq!(held.roots, roots, "{name}: cacerts' root-cert.pem");
        let as_der = |c: &[CertificateDer<'static>]| c.iter().map(|c| c.to_vec()).collect::<Vec<_>>();
        assert_eq!(as_der(&chain.roots), roots, "{name}: the roots istiod's CA answers");
        assert_eq!(as_der(bundle), roots, "{name}: the istio-ca-root-cert istiod published");
    }
}

// Issue 32 item 5, the rotation: at each stage each primary's istiod,
// restarted on its cacerts, issues certificates every other cluster trusts,
// and so do the certificates it issued the stage before, which workloads
// hold until they renew. Only a certificate under the old root, kept past
// stage 3, is refused. istiod takes a complete cacerts as its plugged-in CA
// (pilot/pkg/bootstrap/istio_ca.go, createIstioCA), every root of its
// root-cert.pem with it, answers a CSR with them last
// (security/pkg/server/ca/server.go) and publishes them all as
// istio-ca-root-cert (pilot/pkg/bootstrap/certcontroller.go, the bundle it
// hands the namespace controller): no `support::trust::publish` here.
#[tokio::test]
async fn istiod_restarted_at_each_stage_of_a_root_rotation_issues_certificates_every_other_cluster_trusts() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let primaries @ [east, west] = clusters.by_names(["east", "west"]);
    for cluster in primaries {
        cluster.create_namespace(WORKLOAD_NAMESPACE).await;
    }
    let (old, new) = (Root::new("old root"), Root::new("new root"));
    let entries = [Entry::of(east).network("flat"), Entry::of(west).network("flat")];
    let mesh = Mesh::new(&entries);
    manage(&mesh, &entries, &old, "");
    mesh.apply(&[]).await;
    let names = ["east", "west"];
    let everywhere = |_: &str, _: &str| true;
    let nowhere = |_: &str, _: &str| false;
    let mut istiods = Vec::new();

    // Before: the old root alone.
    let (before, old_bundles) = restart(&mesh, &mut istiods, primaries).await;
    assert_on_ca_certs(primaries, &before, &old_bundles, &[&old], &old).await;
    assert_trust(&names, &before, &old_bundles, everywhere);
    mesh.assert_converged(&primaries).await;
    rotate(&mesh, &entries, &old, &new);

    // Stage 1: both roots trusted, the old root's intermediates kept.
    assert_eq!(planned(&mesh).await, both("trust_both"));
    mesh.apply(&[]).await;
    // Written; the running istiods still publish the old root alone.
    check_says(&mesh, "stage 1 of 3 (trust both roots) under way").await;
    assert_eq!(planned(&mesh).await, []);
    let (stage1, bundles) = restart(&mesh, &mut istiods, primaries).await;
    assert_on_ca_certs(primaries, &stage1, &bundles, &[&old, &new], &old).await;
    assert_trust(&names, &stage1, &bundles, everywhere);
    assert_trust(&names, &before, &bundles, everywhere);
    check_says(
        &mesh,
        "stage 1 of 3 (trust both roots) verified in every cluster; stage 2 of 3 (sign with the new root) is planned",
    )
    .await;

    // Stage 2: intermediates of the new root under the same two roots.
    assert_eq!(planned(&mesh).await, both("sign_with_new"));
    mesh.apply(&[]).await;
    let (stage2, bundles) = restart(&mesh, &mut istiods, primaries).await;
    assert_on_ca_certs(primaries, &stage2, &bundles, &[&old, &new], &new).await;
    assert_trust(&names, &stage2, &bundles, everywhere);
    assert_trust(&names, &stage1, &bundles, everywhere);
    assert_trust(&names, &before, &bundles, everywhere);
    // Why stage 1 had to be verified first: the old root alone refuses them.
    assert_trust(&names, &stage2, &old_bundles, nowhere);
    check_says(
        &mesh,
        "stage 2 of 3 (sign with the new root) verified in every cluster; stage 3 of 3 (drop the previous root) is planned",
    )
    .await;

    // Stage 3: the new root alone.
    assert_eq!(planned(&mesh).await, both("drop_previous"));
    mesh.apply(&[]).await;
    check_says(&mesh, "stage 3 of 3 (drop the previous root) under way").await;
    let (stage3, bundles) = restart(&mesh, &mut istiods, primaries).await;
    assert_on_ca_certs(primaries, &stage3, &bundles, &[&new], &new).await;
    assert_trust(&names, &stage3, &bundles, everywhere);
    assert_trust(&names, &stage2, &bundles, everywhere);
    // A certificate under an old-root intermediate, kept from before: refused.
    assert_trust(&names, &before, &bundles, nowhere);
    assert_trust(&names, &stage1, &bundles, nowhere);
    assert_eq!(verifies(&before[0], &bundles[1]), Err("UnknownIssuer".to_string()));
    check_says(&mesh, "complete, every cluster trusts the new root alone").await;
    assert_eq!(planned(&mesh).await, []);

    for istiod in &istiods {
        mesh.record(&istiod.output());
    }
    mesh.assert_no_token_leaked(&primaries).await;
}
