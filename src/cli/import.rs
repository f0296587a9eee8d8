//! `meshform import`: reads the clusters of kubeconfig contexts and writes the
//! mesh.toml that describes them (the inference itself is `crate::import`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::config::Kubeconfig;

use super::{CliError, Context, Exit, files, parse_duration};
use crate::access::Sources;
use crate::import::{self, Settings};
use crate::topology::names::Rule;
use crate::topology::{self, Cluster, Mesh, Network, Role, Topology};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kubeconfig contexts to import (default: every context of the kubeconfig).
    #[arg(value_name = "CONTEXT")]
    pub contexts: Vec<String>,

    /// The kubeconfig to read (default: $KUBECONFIG, then ~/.kube/config); named in every [[cluster]].
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// The mesh's name, Istio's meshID ([mesh].name); default: the installs' global.meshID, else mesh1.
    #[arg(long, value_name = "NAME")]
    pub mesh: Option<String>,

    /// The namespace Istio runs in.
    #[arg(long, default_value = topology::DEFAULT_NAMESPACE, value_name = "NAMESPACE")]
    pub namespace: String,

    /// Write mesh.toml here instead of stdout.
    #[arg(short = 'o', long = "out", value_name = "PATH")]
    pub out: Option<PathBuf>,

    /// Overwrite the file given with -o.
    #[arg(long, requires = "out")]
    pub force: bool,

    /// Timeout of each API request, response included, e.g. 10s or 1m.
    #[arg(long, default_value = "15s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,

    /// Ping a connection to an API server silent this long, and drop it when the ping is not answered in
    /// half that time (HTTP/2 and TCP keepalive, as client-go); 0s sends none.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub keepalive: Duration,
}

pub fn run(args: &Args, cx: &mut Context<'_>) -> Result<Exit, CliError> {
    if let Some(out) = args.out.as_deref().filter(|p| p.exists() && !args.force) {
        return Err(CliError::Import(format!(
            "{} exists; pass --force to overwrite it",
            out.display()
        )));
    }
    let kubeconfig = match &args.kubeconfig {
        Some(path) => Kubeconfig::read_from(path),
        None => Kubeconfig::read(),
    }
    .map_err(|_| {
        CliError::Import(format!(
            "cannot read the kubeconfig {}; name one with --kubeconfig",
            args.kubeconfig.as_deref().map_or_else(
                || "($KUBECONFIG or ~/.kube/config)".to_string(),
                |p| p.display().to_string()
            )
        ))
    })?;
    let known: Vec<&str> = kubeconfig.contexts.iter().map(|c| c.name.as_str()).collect();
    let contexts: Vec<String> = if args.contexts.is_empty() {
        known.iter().map(|c| c.to_string()).collect()
    } else {
        for c in &args.contexts {
            if !known.contains(&c.as_str()) {
                return Err(CliError::Import(format!(
                    "the kubeconfig has no context {c:?}; it has {}",
                    known.join(", ")
                )));
            }
        }
        args.contexts.clone()
    };
    if contexts.is_empty() {
        return Err(CliError::Import("the kubeconfig has no context to import".into()));
    }

    // Observe reads clusters of a topology: one provisional cluster per
    // context, under a key that is a valid name, each alone on its network.
    let keyed: Vec<import::Context> = contexts
        .iter()
        .enumerate()
        .map(|(i, context)| import::Context {
            key: format!("c{i}-{}", Rule::Dns1123Label.suggest(context).unwrap_or_default())
                .chars()
                .take(60)
                .collect::<String>()
                .trim_end_matches('-')
                .to_string(),
            context: context.clone(),
        })
        .collect();
    let provisional = Topology {
        mesh: Mesh {
            name: args.mesh.clone().unwrap_or_else(|| import::DEFAULT_MESH.to_string()),
            namespace: args.namespace.clone(),
            tokens: Default::default(),
            lock_cluster: None,
            trust: Default::default(),
        },
        clusters: keyed
            .iter()
            .map(|c| Cluster {
                name: c.key.clone(),
                context: c.context.clone(),
                kubeconfig: args.kubeconfig.as_deref().map(|p| p.display().to_string()),
                network: c.key.clone(),
                role: Role::Primary,
                api_server: None,
                control_plane: None,
                allow_insecure_transport: false,
                data_plane: Default::default(),
            })
            .collect(),
        networks: keyed
            .iter()
            .map(|c| {
                (
                    c.key.clone(),
                    Network {
                        gateway_service: topology::DEFAULT_GATEWAY_SERVICE.to_string(),
                        gateway_port: topology::DEFAULT_GATEWAY_PORT,
                    },
                )
            })
            .collect::<BTreeMap<_, _>>(),
    };
    let sources = Sources {
        base_dir: PathBuf::new(),
        kubeconfig: args.kubeconfig.clone(),
        timeout: args.timeout,
        keepalive: args.keepalive,
    };
    let observed = super::runtime()?.block_on(crate::reconcile::observe(&provisional, &sources));
    let kubeconfig_key = args.kubeconfig.as_deref().map(absolute);
    let imported = import::describe(
        &Settings {
            mesh: args.mesh.as_deref(),
            namespace: &args.namespace,
            kubeconfig: kubeconfig_key.as_deref(),
        },
        &keyed,
        &observed,
    );
    for note in &imported.notes {
        writeln!(cx.err, "note: {note}")?;
    }
    for problem in &imported.problems {
        writeln!(cx.err, "problem: {problem}")?;
    }
    if !imported.problems.is_empty() {
        // Nothing is written that would misdescribe the mesh.
        writeln!(
            cx.err,
            "meshform import: {} problem(s) above; the mesh cannot be described as it stands",
            imported.problems.len()
        )?;
        if args.out.is_none() {
            cx.out.write_all(imported.text.as_bytes())?;
        }
        return Ok(Exit::Error);
    }
    match &args.out {
        Some(path) => files::write_atomic(path, imported.text.as_bytes())?,
        None => cx.out.write_all(imported.text.as_bytes())?,
    }
    Ok(Exit::Success)
}

/// mesh.toml resolves relative kubeconfig paths against its own directory;
/// an absolute path means the same wherever the file is written.
fn absolute(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}
