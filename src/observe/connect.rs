//! From a topology's clusters to kube clients: kubeconfig files, contexts,
//! addresses and CA bundles. Shared by observe and apply.
//!
//! Credentials stay inside the `kube::Config` and never reach an error
//! message or a `Debug` output of this module.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use thiserror::Error;

use crate::topology::Cluster;

/// Where to find kubeconfig files for clusters that do not name one.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Directory of mesh.toml: relative `kubeconfig` paths start here.
    pub base_dir: PathBuf,
    /// `--kubeconfig`: overrides $KUBECONFIG and ~/.kube/config.
    pub kubeconfig: Option<PathBuf>,
    /// Per-request timeout (connect and read).
    pub timeout: Duration,
}

/// A ready client for one cluster, with the facts peers need about it.
pub struct Connection {
    pub cluster: String,
    pub context: String,
    /// API server address from the kubeconfig.
    pub server: String,
    /// The CA bundle (PEM) that verifies `server`, when the kubeconfig has one.
    pub ca_pem: Option<Vec<u8>>,
    pub client: kube::Client,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("cluster", &self.cluster)
            .field("context", &self.context)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// Why a cluster's kubeconfig could not be used. Messages name files and
/// contexts, never their content.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConnectError {
    #[error("cannot read kubeconfig {path}: {reason}")]
    ReadKubeconfig { path: String, reason: String },
    #[error("kubeconfig {path} has no context {context:?}")]
    NoContext { path: String, context: String },
    #[error("context {context:?} in {path} cannot be used: {reason}")]
    BadContext {
        path: String,
        context: String,
        reason: String,
    },
}

/// Parsed kubeconfig files, read once each however many clusters use them.
#[derive(Default)]
pub struct KubeconfigCache {
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
pub fn kubeconfig_path(cluster: &Cluster, sources: &Sources) -> Option<PathBuf> {
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

/// Builds a client for `cluster`.
pub async fn connect(
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
    config.connect_timeout = Some(sources.timeout);
    config.read_timeout = Some(sources.timeout);
    config.write_timeout = Some(sources.timeout);
    let server = config.cluster_url.to_string().trim_end_matches('/').to_string();
    let client = kube::Client::try_from(config).map_err(|e| bad(e.to_string()))?;
    Ok(Connection {
        cluster: cluster.name.clone(),
        context,
        server,
        ca_pem,
        client,
    })
}
