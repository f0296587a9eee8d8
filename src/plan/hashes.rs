//! Content hashes of what meshform writes. The hash goes into the
//! spec-hash annotation on write; the planner compares it with what was
//! observed to see drift without reading (or keeping) any secret data.

use sha2::{Digest, Sha256};

use crate::objects::ReaderScope;
use crate::topology::{TokenMode, Topology};

/// Bump when the reader ClusterRole's rules change, so existing ones update.
const READER_RULES_VERSION: &str = "reader-v2";
/// Bump when the Gateway's shape changes.
const GATEWAY_VERSION: &str = "gateway-v1";
const REMOTE_SECRET_VERSION: &str = "remote-secret-v1";
const ISTIOD_EXPOSURE_VERSION: &str = "istiod-exposure-v1";
/// Bump when the ambient east-west Gateway's shape changes.
const AMBIENT_GATEWAY_VERSION: &str = "ambient-gateway-v1";

fn digest(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        // Length-prefixed so that ("ab","c") and ("a","bc") differ.
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    let out = hasher.finalize();
    out.iter().take(10).map(|b| format!("{b:02x}")).collect()
}

/// An account's role and binding, and in `secret` mode its token Secret.
/// The reader keeps the hash it had before scopes existed.
pub fn reader_hash(namespace: &str, mode: TokenMode, scope: ReaderScope) -> String {
    match scope {
        ReaderScope::Read => digest(&[READER_RULES_VERSION, namespace, mode.as_str()]),
        ReaderScope::ControlPlane => digest(&[READER_RULES_VERSION, namespace, mode.as_str(), "control-plane-account"]),
    }
}

/// What a remote's reader role was written with before the control plane
/// had an account of its own: the reader account carried the control
/// plane's writes (`reader_rules(ControlPlane)`), for every primary.
pub fn shared_remote_reader_hash(namespace: &str, mode: TokenMode) -> String {
    digest(&[READER_RULES_VERSION, namespace, mode.as_str(), "control-plane"])
}

pub fn gateway_hash(port: u16) -> String {
    digest(&[GATEWAY_VERSION, &port.to_string()])
}

/// The ambient east-west Gateway of `network`.
pub fn ambient_gateway_hash(network: &str) -> String {
    digest(&[AMBIENT_GATEWAY_VERSION, network])
}

/// The `istiod-gateway` and `istiod-vs` for the istiod of `revision`.
pub fn istiod_exposure_hash(revision: Option<&str>) -> String {
    digest(&[ISTIOD_EXPOSURE_VERSION, revision.unwrap_or("")])
}

/// Hash of a remote secret's non-secret content: who it is for, where it
/// points and which CA it trusts. The token is deliberately not part of it.
pub fn remote_secret_hash(
    peer: &str,
    server: &str,
    ca_sha256: Option<&str>,
    tls_server_name: Option<&str>,
    insecure_transport: Option<&str>,
    peer_identity: &str,
    mode: TokenMode,
) -> String {
    let mut parts = vec![
        REMOTE_SECRET_VERSION,
        peer,
        server,
        ca_sha256.unwrap_or(""),
        peer_identity,
        mode.as_str(),
    ];
    // Only when set: the secrets written before it was carried keep their hash.
    if let Some(name) = tls_server_name {
        parts.push(name);
    }
    if let Some(insecure) = insecure_transport {
        parts.push(insecure);
    }
    digest(&parts)
}

/// SHA-256 of the resolved topology's canonical JSON. Clusters are taken by
/// name: moving a `[[cluster]]` table changes no plan, so it must not make a
/// saved plan stale.
pub fn topology_hash(topology: &Topology) -> String {
    let mut canonical = topology.clone();
    canonical.clusters.sort_by(|a, b| a.name.cmp(&b.name));
    crate::objects::sha256_hex(&serde_json::to_vec(&canonical).unwrap_or_default())
}
