//! Managed trust in tests: roots made for a test, mesh.toml's `[mesh.trust]`
//! for them (a rotation included), what a primary's `cacerts` holds, and
//! what istiod does once restarted on it (publish `istio-ca-root-cert`),
//! which the test control plane has no istiod to do.

use std::os::unix::fs::PermissionsExt;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::controlplane::Cluster;
use super::mesh::{Entry, Mesh, NAMESPACE};

/// A root CA made for the test: its certificate and key (PEM).
pub struct Root {
    pub cert: String,
    pub key: String,
}

impl Root {
    pub fn new(name: &str) -> Root {
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

    /// The root certificate's DER.
    pub fn der(&self) -> Vec<u8> {
        pem_ders(self.cert.as_bytes()).remove(0)
    }
}

/// Writes `root` into the mesh's directory (its key only its owner may
/// read) and `[mesh.trust]` managed by it into mesh.toml, with `extra` keys.
pub fn manage(mesh: &Mesh, entries: &[Entry], root: &Root, extra: &str) {
    write_root(mesh, root, "root");
    mesh.write_with(
        entries,
        &format!(
            "[mesh.trust]\nmode = \"managed\"\nroot_cert = \"root-cert.pem\"\nroot_key = \"root-key.pem\"\n{extra}"
        ),
    );
}

/// Declares a rotation from `previous` onto `next`: `next` as the root,
/// `previous` (its certificate only) as `previous_root_cert`.
pub fn rotate(mesh: &Mesh, entries: &[Entry], previous: &Root, next: &Root) {
    std::fs::write(mesh.dir().join("previous-root-cert.pem"), &previous.cert).unwrap();
    manage(mesh, entries, next, "previous_root_cert = \"previous-root-cert.pem\"\n");
}

fn write_root(mesh: &Mesh, root: &Root, stem: &str) {
    std::fs::write(mesh.dir().join(format!("{stem}-cert.pem")), &root.cert).unwrap();
    let key = mesh.dir().join(format!("{stem}-key.pem"));
    std::fs::write(&key, &root.key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
}

pub async fn ca_certs(cluster: &Cluster) -> Option<Secret> {
    Api::<Secret>::namespaced(cluster.client(), NAMESPACE)
        .get_opt("cacerts")
        .await
        .unwrap_or_else(|e| panic!("reading cacerts in {}: {e}", cluster.name()))
}

pub fn pem_ders(pem: &[u8]) -> Vec<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(pem)
        .map(|c| c.expect("a PEM certificate").to_vec())
        .collect()
}

/// A `cacerts` as istiod reads it: its files' certificates, by key.
pub struct Held {
    /// `ca-cert.pem`'s certificate (DER).
    pub intermediate: Vec<u8>,
    /// `root-cert.pem`'s certificates (DER), in order.
    pub roots: Vec<Vec<u8>>,
    /// `cert-chain.pem`'s certificates (DER), in order.
    pub chain: Vec<Vec<u8>>,
    /// `ca-key.pem`, PEM.
    pub key: String,
}

impl Held {
    /// The root among `roots` whose key signed the intermediate.
    pub fn signed_by<'r>(&self, roots: &[&'r Root]) -> Option<&'r Root> {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let (_, intermediate) = X509Certificate::from_der(&self.intermediate).unwrap();
        roots.iter().copied().find(|root| {
            let der = root.der();
            let (_, root_cert) = X509Certificate::from_der(&der).unwrap();
            intermediate.verify_signature(Some(root_cert.public_key())).is_ok()
        })
    }
}

/// What `cluster`'s `cacerts` holds; panics when it is absent or lacks a file.
pub async fn held(cluster: &Cluster) -> Held {
    let secret = ca_certs(cluster)
        .await
        .unwrap_or_else(|| panic!("no cacerts in {}", cluster.name()));
    let data = secret.data.expect("cacerts has data");
    let get = |key: &str| data.get(key).unwrap_or_else(|| panic!("cacerts lacks {key}")).0.clone();
    let intermediate = pem_ders(&get("ca-cert.pem"));
    assert_eq!(intermediate.len(), 1, "ca-cert.pem holds the intermediate alone");
    Held {
        intermediate: intermediate[0].clone(),
        roots: pem_ders(&get("root-cert.pem")),
        chain: pem_ders(&get("cert-chain.pem")),
        key: String::from_utf8(get("ca-key.pem")).unwrap(),
    }
}

/// What istiod does once it starts on a `cacerts`: it publishes the
/// certificates of its `root-cert.pem` as `istio-ca-root-cert` in each
/// namespace, its remotes' included (pilot/pkg/serviceregistry/kube/
/// controller/namespacecontroller.go). Only the mesh namespace's is read.
pub async fn publish(cluster: &Cluster, roots: &[&Root]) {
    let pem: String = roots.iter().map(|r| r.cert.as_str()).collect();
    let configmap = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "istio-ca-root-cert", "namespace": NAMESPACE},
        "data": {"root-cert.pem": pem},
    });
    Api::<ConfigMap>::namespaced(cluster.client(), NAMESPACE)
        .patch(
            "istio-ca-root-cert",
            &PatchParams::apply("istiod").force(),
            &Patch::Apply(&configmap),
        )
        .await
        .unwrap_or_else(|e| panic!("publishing roots in {}: {e}", cluster.name()));
}

/// Every private key (PEM) in the `cacerts` of `clusters`.
pub async fn ca_keys(clusters: &[&Cluster]) -> Vec<String> {
    let mut keys = Vec::new();
    for cluster in clusters {
        if let Some(secret) = ca_certs(cluster).await
            && let Some(key) = secret.data.as_ref().and_then(|d| d.get("ca-key.pem"))
        {
            keys.push(String::from_utf8_lossy(&key.0).into_owned());
        }
    }
    keys
}

/// The `cacerts` writes a fresh plan makes (`--skip-unreachable`, so a
/// stopped cluster's are left out): (cluster, mode), sorted.
pub async fn planned(mesh: &Mesh) -> Vec<(String, String)> {
    let plan = mesh
        .run("plan", &["--format", "json", "--skip-unreachable"])
        .await
        .json();
    let mut writes: Vec<(String, String)> = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "write_ca_certs")
        .map(|a| {
            (
                a["cluster"].as_str().unwrap().to_string(),
                a["mode"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    writes.sort();
    writes
}

pub fn pairs(clusters: &[&str], mode: &str) -> Vec<(String, String)> {
    clusters.iter().map(|c| (c.to_string(), mode.to_string())).collect()
}
