//! One cluster's kubeconfig, read into a client: the file (shared by
//! clusters that name the same one), the context, its address and CA bundle.
//!
//! Errors name files and contexts; a kubeconfig's content (tokens, keys, and
//! with a hostile path any file's lines) never reaches one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use thiserror::Error;

use super::{Connection, Sources, transport};
use crate::topology::Cluster;

/// Why a cluster's kubeconfig could not be used. Messages name files and
/// contexts, never their content.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConnectError {
    /// The file is missing, unreadable or not a kubeconfig.
    #[error("cannot read kubeconfig {path}: {reason}")]
    ReadKubeconfig { path: String, reason: String },
    /// The cluster's `context` is not in the file.
    #[error("kubeconfig {path} has no context {context:?}")]
    NoContext { path: String, context: String },
    /// The context turns TLS verification off or uses `http://`, and mesh.toml
    /// does not allow it for the cluster.
    #[error(
        "context {context:?} in {path} {what}: meshform would send the cluster's credentials and mint reader tokens \
         over a connection nobody verifies; give the context the cluster's CA (certificate-authority-data) and an \
         https:// server, or set `allow_insecure_transport = true` on cluster {cluster:?} in mesh.toml to accept the risk"
    )]
    InsecureTransport {
        path: String,
        context: String,
        cluster: String,
        what: &'static str,
    },
    /// No client can be built from the context (its cluster, user or TLS
    /// settings), or it needs a proxy.
    #[error("context {context:?} in {path} cannot be used: {reason}")]
    BadContext {
        path: String,
        context: String,
        reason: String,
    },
}

/// Parsed kubeconfig files, read once each however many clusters use them.
#[derive(Default)]
pub(super) struct KubeconfigCache {
    files: HashMap<PathBuf, Result<Kubeconfig, String>>,
}

impl KubeconfigCache {
    fn load(&mut self, path: Option<&Path>) -> Result<(Kubeconfig, String), ConnectError> {
        let key = path.map(Path::to_path_buf).unwrap_or_default();
        let shown = path.map_or_else(
            || "$KUBECONFIG or ~/.kube/config".to_string(),
            |p| p.display().to_string(),
        );
        let entry = self.files.entry(key).or_insert_with(|| {
            let loaded = match path {
                Some(p) => Kubeconfig::read_from(p),
                None => Kubeconfig::read(),
            };
            loaded.map_err(|e| reason_without_content(&e))
        });
        match entry {
            Ok(config) => Ok((config.clone(), shown)),
            Err(reason) => Err(ConnectError::ReadKubeconfig {
                path: shown,
                reason: reason.clone(),
            }),
        }
    }
}

/// Why a kubeconfig file cannot be used, in words that quote nothing of it.
/// The YAML parser's message quotes the line it stopped at, and a
/// kubeconfig's lines hold tokens and keys (or, with a hostile `kubeconfig`
/// path, any file's lines); the reason ends up in plans, snapshots and logs.
fn reason_without_content(error: &KubeconfigError) -> String {
    match error {
        KubeconfigError::ReadConfig(source, _) => source.to_string(),
        KubeconfigError::Parse(_) => {
            let text = error.to_string();
            let number_after = |word: &str| -> Option<u64> {
                let at = text.find(word)? + word.len();
                let digits: String = text[at..].chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            };
            match (number_after("line "), number_after(" column ")) {
                (Some(line), Some(column)) => {
                    format!("it is not a valid kubeconfig (YAML error at line {line}, column {column})")
                }
                _ => "it is not a valid kubeconfig".to_string(),
            }
        }
        KubeconfigError::FindPath | KubeconfigError::KindMismatch | KubeconfigError::ApiVersionMismatch => {
            error.to_string()
        }
        _ => "it cannot be used as a kubeconfig".to_string(),
    }
}

/// The kubeconfig file a cluster uses, if not the default chain.
fn kubeconfig_path(cluster: &Cluster, sources: &Sources) -> Option<PathBuf> {
    match &cluster.kubeconfig {
        Some(path) => {
            let path = match path.strip_prefix("~/") {
                Some(rest) => std::env::home_dir().unwrap_or_default().join(rest),
                None => PathBuf::from(path),
            };
            Some(if path.is_absolute() {
                path
            } else {
                sources.base_dir.join(path)
            })
        }
        None => sources.kubeconfig.clone(),
    }
}

/// Builds a client for `cluster`; no request is sent yet.
pub(super) async fn connect(
    cluster: &Cluster,
    sources: &Sources,
    cache: &mut KubeconfigCache,
) -> Result<Connection, ConnectError> {
    let path = kubeconfig_path(cluster, sources);
    let (kubeconfig, shown) = cache.load(path.as_deref())?;
    let context = cluster.context.clone();
    let Some(named) = kubeconfig.contexts.iter().find(|c| c.name == context) else {
        return Err(ConnectError::NoContext { path: shown, context });
    };
    let cluster_name = named.context.as_ref().map(|c| c.cluster.clone()).unwrap_or_default();
    let entry = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.clone());
    let ca_pem = match entry.as_ref() {
        Some(c) => match (&c.certificate_authority_data, &c.certificate_authority) {
            (Some(data), _) => base64::engine::general_purpose::STANDARD.decode(data.trim()).ok(),
            (None, Some(file)) => {
                let file = Path::new(file);
                let file = match path.as_deref().and_then(Path::parent) {
                    Some(dir) if file.is_relative() => dir.join(file),
                    _ => file.to_path_buf(),
                };
                std::fs::read(file).ok()
            }
            (None, None) => None,
        },
        None => None,
    };
    let options = KubeConfigOptions {
        context: Some(context.clone()),
        cluster: None,
        user: None,
    };
    let bad = |reason: String| ConnectError::BadContext {
        path: shown.clone(),
        context: context.clone(),
        reason,
    };
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| bad(e.to_string()))?;
    // Judged before the client is built: building it runs an exec plugin,
    // and a refused cluster is neither read nor sent a token.
    let insecure = insecure_transport(&config);
    if let Some(what) = insecure
        && !cluster.allow_insecure_transport
    {
        return Err(ConnectError::InsecureTransport {
            path: shown,
            context,
            cluster: cluster.name.clone(),
            what,
        });
    }
    config.connect_timeout = Some(sources.timeout);
    config.read_timeout = Some(sources.timeout);
    let server = config.cluster_url.to_string().trim_end_matches('/').to_string();
    let tls_server_name = config.tls_server_name.clone();
    let keepalive = (!sources.keepalive.is_zero()).then_some(sources.keepalive);
    let client = transport::client(config, keepalive).map_err(bad)?;
    Ok(Connection {
        cluster: cluster.name.clone(),
        context,
        server,
        ca_pem,
        tls_server_name,
        insecure,
        client,
    })
}

/// What makes the connection unverified, in the kubeconfig's words.
fn insecure_transport(config: &kube::Config) -> Option<&'static str> {
    if config.cluster_url.scheme_str() == Some("http") {
        Some("uses an http:// server")
    } else if config.accept_invalid_certs {
        Some(super::SKIPS_TLS_VERIFY)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const KUBECONFIG: &str = "apiVersion: v1
kind: Config
clusters:
- name: direct
  cluster:
    server: https://127.0.0.1:6443
- name: proxied
  cluster:
    server: https://127.0.0.1:6443
    proxy-url: http://proxy.example.com:3128
- name: proxied-with-password
  cluster:
    server: https://127.0.0.1:6443
    proxy-url: http://user:hunter2@proxy.example.com:3128
- name: unverified
  cluster:
    server: https://127.0.0.1:6443
    insecure-skip-tls-verify: true
- name: plain-http
  cluster:
    server: http://127.0.0.1:6443
- name: named
  cluster:
    server: https://127.0.0.1:6443
    tls-server-name: apiserver.internal
users:
- name: u
  user:
    token: not-a-real-token
contexts:
- name: direct
  context: {cluster: direct, user: u}
- name: proxied
  context: {cluster: proxied, user: u}
- name: proxied-with-password
  context: {cluster: proxied-with-password, user: u}
- name: unverified
  context: {cluster: unverified, user: u}
- name: plain-http
  context: {cluster: plain-http, user: u}
- name: named
  context: {cluster: named, user: u}
";

    async fn connect_to(context: &str) -> Result<Connection, ConnectError> {
        connect_with(context, "").await
    }

    async fn connect_with(context: &str, extra: &str) -> Result<Connection, ConnectError> {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, KUBECONFIG).expect("kubeconfig written");
        let text = format!(
            "[mesh]\nname = \"m\"\n\n[[cluster]]\nname = \"c\"\ncontext = \"{context}\"\nkubeconfig = \"{}\"\n{extra}",
            path.display()
        );
        let topology = crate::topology::check("mesh.toml", text.as_bytes())
            .into_result()
            .expect("a valid topology")
            .0;
        let sources = Sources {
            timeout: Duration::from_secs(1),
            ..Sources::default()
        };
        connect(&topology.clusters[0], &sources, &mut KubeconfigCache::default()).await
    }

    #[tokio::test]
    async fn a_context_without_a_proxy_connects_lazily() {
        let connection = connect_to("direct").await.expect("a client, no request made yet");
        assert_eq!(connection.server, "https://127.0.0.1:6443");
    }

    // meshform's own client builder must not quietly bypass a proxy that kube would have used.
    #[tokio::test]
    async fn a_proxy_url_is_refused_by_name() {
        let error = connect_to("proxied").await.expect_err("a proxy is not supported");
        let text = error.to_string();
        assert!(matches!(error, ConnectError::BadContext { .. }), "{text}");
        assert!(
            text.contains("proxy-url http://proxy.example.com:3128 is not supported"),
            "{text}"
        );
        assert!(!text.contains("not-a-real-token"), "{text}");
    }

    // A proxy URL may carry credentials; the refusal must not print them.
    #[tokio::test]
    async fn a_proxy_password_is_not_shown() {
        let error = connect_to("proxied-with-password")
            .await
            .expect_err("a proxy is not supported");
        let text = error.to_string();
        assert!(
            text.contains("proxy-url http://proxy.example.com:3128 is not supported"),
            "{text}"
        );
        assert!(!text.contains("hunter2") && !text.contains("user:"), "{text}");
    }

    // Regression (issue 29): insecure-skip-tls-verify and http:// servers were used silently, tokens minted over them.
    #[tokio::test]
    async fn an_unverified_connection_is_refused_unless_mesh_toml_allows_it() {
        for (context, what) in [
            ("unverified", "sets insecure-skip-tls-verify"),
            ("plain-http", "uses an http:// server"),
        ] {
            let error = connect_to(context).await.expect_err("refused");
            let text = error.to_string();
            assert!(matches!(error, ConnectError::InsecureTransport { .. }), "{text}");
            assert!(text.contains(what), "{text}");
            assert!(
                text.contains("allow_insecure_transport = true") && text.contains("certificate-authority-data"),
                "{text}"
            );
            let allowed = connect_with(context, "allow_insecure_transport = true\n")
                .await
                .expect("allowed for this cluster");
            assert_eq!(allowed.insecure, Some(what));
        }
        assert_eq!(connect_to("direct").await.expect("verified").insecure, None);
    }

    // The remote secret must carry what meshform's own client verifies the server by.
    #[tokio::test]
    async fn the_tls_server_name_is_kept_for_the_peers() {
        let connection = connect_to("named").await.expect("a client");
        assert_eq!(connection.tls_server_name.as_deref(), Some("apiserver.internal"));
        assert_eq!(connect_to("direct").await.expect("a client").tls_server_name, None);
    }
}
