//! Facts about a remote secret, drawn from its content and then forgotten.
//!
//! The secret's kubeconfig carries a bearer token. This module reads the
//! address, the CA and the token's validity period out of it and returns
//! only those; the token itself never leaves [`facts`].

use base64::Engine;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::config::Kubeconfig;
use secrecy::ExposeSecret;

use super::model::{ObjectFacts, RemoteSecretFacts, TokenFacts};
use crate::objects;
use crate::objects::sha256_hex;

pub fn facts(secret: &Secret, object: ObjectFacts) -> RemoteSecretFacts {
    let annotations = secret.metadata.annotations.as_ref();
    let mut cluster_ids: Vec<String> = secret.data.iter().flat_map(|d| d.keys().cloned()).collect();
    cluster_ids.extend(secret.string_data.iter().flat_map(|d| d.keys().cloned()));
    cluster_ids.sort();
    cluster_ids.dedup();
    // Istio reads one kubeconfig per data key; meshform writes exactly one.
    let kubeconfig = secret
        .data
        .as_ref()
        .and_then(|d| d.values().next())
        .and_then(|bytes| std::str::from_utf8(&bytes.0).ok())
        .and_then(|text| Kubeconfig::from_yaml(text).ok());
    let cluster = kubeconfig
        .as_ref()
        .and_then(|k| k.clusters.first())
        .and_then(|c| c.cluster.as_ref());
    let claims = kubeconfig
        .as_ref()
        .and_then(|k| k.auth_infos.first())
        .and_then(|a| a.auth_info.as_ref())
        .and_then(|a| a.token.as_ref())
        .and_then(|t| claims(t.expose_secret()));
    RemoteSecretFacts {
        object,
        cluster_ids,
        annotated_cluster: annotations
            .and_then(|a| a.get(objects::CLUSTER_ANNOTATION))
            .map(|id| id.as_str().into()),
        server: cluster
            .and_then(|c| c.server.as_deref())
            .map(|s| s.trim_end_matches('/').into()),
        ca_sha256: cluster
            .and_then(|c| c.certificate_authority_data.as_ref())
            .and_then(|data| base64::engine::general_purpose::STANDARD.decode(data.trim()).ok())
            .map(|pem| sha256_hex(&pem).into()),
        tls_server_name: cluster.and_then(|c| c.tls_server_name.as_deref()).map(Into::into),
        peer_identity: annotations
            .and_then(|a| a.get(objects::PEER_IDENTITY_ANNOTATION))
            .map(|id| id.as_str().into()),
        token: claims.as_ref().map_or(TokenFacts::Unknown, token_facts),
        token_account_uid: claims.as_ref().and_then(account_uid),
        token_binding_uid: claims
            .as_ref()
            .and_then(|c| c.pointer("/kubernetes.io/secret/uid"))
            .and_then(|v| v.as_str())
            .map(str::to_string),
        token_secret: claims
            .as_ref()
            .and_then(|c| c.get("kubernetes.io/serviceaccount/secret.name"))
            .and_then(|v| v.as_str())
            .map(str::to_string),
        object_copies: objects::OBJECT_COPY_ANNOTATIONS
            .iter()
            .filter(|a| annotations.is_some_and(|m| m.contains_key(**a)))
            .map(|a| a.to_string())
            .collect(),
    }
}

/// The claims of a JWT, unverified: only the payload, never the signature.
fn claims(token: &str) -> Option<serde_json::Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The service account's UID: TokenRequest tokens carry it under
/// `kubernetes.io.serviceaccount.uid`, legacy token Secrets' tokens under
/// `kubernetes.io/serviceaccount/service-account.uid`.
fn account_uid(claims: &serde_json::Value) -> Option<std::sync::Arc<str>> {
    claims
        .pointer("/kubernetes.io/serviceaccount/uid")
        .or_else(|| claims.get("kubernetes.io/serviceaccount/service-account.uid"))
        .and_then(|v| v.as_str())
        .map(Into::into)
}

/// Reads `iat` and `exp` from a service-account JWT's claims. Legacy token
/// Secrets carry no `exp`: they never expire.
fn token_facts(claims: &serde_json::Value) -> TokenFacts {
    let time = |claim: &str| {
        claims
            .get(claim)
            .and_then(|v| v.as_i64())
            .and_then(|s| Timestamp::from_second(s).ok())
    };
    match (time("iat"), time("exp")) {
        (Some(issued_at), Some(expires_at)) => TokenFacts::Bound { issued_at, expires_at },
        (_, None) if claims.get("sub").is_some() => TokenFacts::Unbounded,
        _ => TokenFacts::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;

    const TOKEN_SECRET_PART: &str = "c2lnbmF0dXJlLW5vdC1jaGVja2Vk";

    fn jwt(claims: serde_json::Value) -> String {
        let enc = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.{TOKEN_SECRET_PART}",
            enc(br#"{"alg":"RS256"}"#),
            enc(claims.to_string().as_bytes())
        )
    }

    fn secret(token: &str) -> Secret {
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: b\n  cluster:\n    server: https://b.example.com:6443/\n    certificate-authority-data: {}\nusers:\n- name: b\n  user:\n    token: {token}\ncontexts:\n- name: b\n  context:\n    cluster: b\n    user: b\ncurrent-context: b\n",
            base64::engine::general_purpose::STANDARD.encode("PEM")
        );
        Secret {
            data: Some(BTreeMap::from([("b".to_string(), ByteString(kubeconfig.into_bytes()))])),
            ..Secret::default()
        }
    }

    fn object() -> ObjectFacts {
        ObjectFacts {
            uid: "u".into(),
            resource_version: "1".into(),
            managed: true,
            spec_hash: None,
            content_sha256: None,
            content_owners: Vec::new(),
        }
    }

    #[test]
    fn bound_token_gives_its_validity_and_nothing_else() {
        let token = jwt(serde_json::json!({"iat": 1000, "exp": 4600, "sub": "system:serviceaccount:x:y"}));
        let facts = facts(&secret(&token), object());
        assert_eq!(facts.cluster_ids, ["b"]);
        assert_eq!(facts.server.as_deref(), Some("https://b.example.com:6443"));
        assert_eq!(facts.ca_sha256.as_deref(), Some(sha256_hex(b"PEM").as_str()));
        assert_eq!(
            facts.token,
            TokenFacts::Bound {
                issued_at: Timestamp::from_second(1000).unwrap(),
                expires_at: Timestamp::from_second(4600).unwrap()
            }
        );
        // Redacted by construction: no part of the token survives.
        let json = serde_json::to_string(&facts).unwrap();
        assert!(!json.contains(TOKEN_SECRET_PART), "{json}");
        assert!(!json.contains(token.split('.').nth(1).unwrap()), "{json}");
    }

    #[test]
    fn copies_of_the_object_in_annotations_are_named() {
        let mut with_copy = secret("not-a-jwt");
        with_copy.metadata.annotations = Some(BTreeMap::from([
            (objects::OBJECT_COPY_ANNOTATIONS[0].to_string(), "{}".to_string()),
            (objects::CLUSTER_ANNOTATION.to_string(), "b".to_string()),
        ]));
        assert_eq!(
            facts(&with_copy, object()).object_copies,
            [objects::OBJECT_COPY_ANNOTATIONS[0]]
        );
        assert!(facts(&secret("not-a-jwt"), object()).object_copies.is_empty());
    }

    #[test]
    fn legacy_token_never_expires_and_garbage_is_unknown() {
        let legacy = jwt(serde_json::json!({"sub": "system:serviceaccount:x:y"}));
        assert_eq!(facts(&secret(&legacy), object()).token, TokenFacts::Unbounded);
        assert_eq!(facts(&secret("not-a-jwt"), object()).token, TokenFacts::Unknown);
        assert_eq!(facts(&Secret::default(), object()).token, TokenFacts::Unknown);
    }

    // Regression: a token whose service account was deleted (revoked) looked as good as new to the planner.
    #[test]
    fn the_tokens_service_account_uid_is_kept_for_both_token_kinds() {
        let bound = jwt(serde_json::json!({
            "iat": 1000, "exp": 4600, "sub": "system:serviceaccount:x:y",
            "kubernetes.io": {"namespace": "x", "serviceaccount": {"name": "y", "uid": "sa-uid-1"}},
        }));
        assert_eq!(
            facts(&secret(&bound), object()).token_account_uid.as_deref(),
            Some("sa-uid-1")
        );
        let legacy = jwt(serde_json::json!({
            "sub": "system:serviceaccount:x:y",
            "kubernetes.io/serviceaccount/service-account.uid": "sa-uid-2",
            "kubernetes.io/serviceaccount/secret.name": "y-token",
        }));
        let legacy_facts = facts(&secret(&legacy), object());
        assert_eq!(legacy_facts.token_account_uid.as_deref(), Some("sa-uid-2"));
        // Legacy tokens name the Secret whose deletion revokes them.
        assert_eq!(legacy_facts.token_secret.as_deref(), Some("y-token"));
        assert_eq!(facts(&secret("not-a-jwt"), object()).token_account_uid, None);
    }
}
