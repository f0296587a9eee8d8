//! `meshform import`: the mesh.toml that describes clusters already meshed
//! (by `istioctl create-remote-secret`, by hand, or by meshform), worked out
//! from what observe read of them.
//!
//! Pure: it takes the observation of provisional clusters (one per kubeconfig
//! context) and returns the file's text and what could not be described. It
//! reads nothing and writes nothing; `cli` does both. What cannot be told
//! from the clusters is reported, never guessed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::observe::model::{ClusterFacts, Observed, TokenFacts};
use crate::topology::names::Rule;

/// One kubeconfig context, read as a provisional cluster of `observed`.
#[derive(Debug, Clone)]
pub struct Context {
    /// The provisional cluster's key in the observation.
    pub key: String,
    pub context: String,
}

/// What import found.
#[derive(Debug, Default)]
pub struct Imported {
    /// mesh.toml, with a comment on where each value came from.
    pub text: String,
    /// Facts the file records that a reader should know of.
    pub notes: Vec<String>,
    /// What could not be described: the file is not to be trusted as it is.
    pub problems: Vec<String>,
}

/// Settings of the mesh as a whole, from the command line.
#[derive(Debug, Clone)]
pub struct Settings<'a> {
    /// `--mesh`; without it, the installs' `global.meshID`.
    pub mesh: Option<&'a str>,
    pub namespace: &'a str,
    /// The kubeconfig file to name in every `[[cluster]]`, when one was given.
    pub kubeconfig: Option<&'a str>,
}

struct Found<'a> {
    context: &'a Context,
    facts: &'a ClusterFacts,
    /// The cluster id of every remote secret aimed at it.
    claims: Vec<String>,
    /// Addresses peers' remote secrets use for it, other than the kubeconfig's.
    other_servers: Vec<String>,
}

/// Describes the observed clusters as a topology file.
pub fn describe(settings: &Settings<'_>, contexts: &[Context], observed: &Observed) -> Imported {
    let mut out = Imported::default();
    let mut found: Vec<Found<'_>> = Vec::new();
    for context in contexts {
        match observed.clusters.get(&context.key).and_then(|c| c.facts()) {
            Some(facts) => found.push(Found {
                context,
                facts,
                claims: Vec::new(),
                other_servers: Vec::new(),
            }),
            None => out.problems.push(format!(
                "context {:?} could not be read, so it is left out; fix access to it and import again",
                context.context
            )),
        }
    }

    // Every remote secret names the cluster it reaches by its data key (the id
    // Istio uses) and by the API server in its kubeconfig.
    let mut unmanaged = Vec::new();
    let mut legacy_tokens = 0usize;
    let mut bound_tokens = 0usize;
    let mut claims: Vec<(usize, String, Option<String>)> = Vec::new();
    for holder in &found {
        for (name, secret) in &holder.facts.remote_secrets {
            if !secret.object.managed {
                unmanaged.push(format!("{name} in {}", holder.context.context));
            }
            match secret.token {
                TokenFacts::Unbounded => legacy_tokens += 1,
                TokenFacts::Bound { .. } => bound_tokens += 1,
                _ => {}
            }
            let target = found.iter().position(|t| {
                secret.peer_identity.as_deref() == Some(t.facts.identity.as_str())
                    || secret
                        .server
                        .as_deref()
                        .is_some_and(|s| same_server(s, &t.facts.server))
            });
            let id = secret.cluster_ids.first().cloned().unwrap_or_else(|| name.clone());
            match target {
                Some(t) => claims.push((t, id, secret.server.as_deref().map(str::to_string))),
                None => out.problems.push(format!(
                    "{} holds remote secret {name} for cluster id {id:?} at {}, which none of the contexts reach; \
                     import with that cluster's context too, or remove the secret",
                    holder.context.context,
                    secret.server.as_deref().unwrap_or("an unknown address")
                )),
            }
        }
    }
    for (target, id, server) in claims {
        let t = &mut found[target];
        t.claims.push(id);
        if let Some(server) = server.filter(|s| !same_server(s, &t.facts.server))
            && !t.other_servers.contains(&server)
        {
            t.other_servers.push(server);
        }
    }

    // Names: the id the peers' secrets agree on, else istiod's own, else the context's.
    let mut names: Vec<String> = Vec::new();
    let mut name_notes: Vec<String> = Vec::new();
    for t in &found {
        let mut ids: Vec<&str> = t.claims.iter().map(String::as_str).collect();
        ids.sort_unstable();
        ids.dedup();
        // istiod's own id (CLUSTER_ID, else the injector's clusterName); the
        // default `Kubernetes` names no cluster.
        let own = t
            .facts
            .installs
            .values()
            .find_map(|i| i.cluster_id.as_deref().or(i.injected_cluster_id.as_deref()))
            .filter(|id| *id != crate::objects::DEFAULT_CLUSTER_ID);
        if let (Some(own), [id]) = (own, ids.as_slice())
            && own != *id
        {
            out.problems.push(format!(
                "istiod in context {:?} runs as cluster id {own:?}, but its peers' remote secrets call it {id:?}; \
                 Istio needs the two equal (reinstall with --set values.global.multiCluster.clusterName={id}, \
                 or re-create the peers' secrets)",
                t.context.context
            ));
        }
        let name = match (ids.as_slice(), own) {
            ([], Some(id)) => {
                name_notes.push(format!(
                    "istiod's cluster id {id:?} (no peer holds a remote secret for it)"
                ));
                id.to_string()
            }
            ([id], _) => {
                name_notes.push(format!("cluster id {id:?} (the data key of its peers' remote secrets)"));
                (*id).to_string()
            }
            ([], None) => match Rule::Dns1123Label.check(&t.context.context) {
                Ok(()) => {
                    name_notes.push("the context's name (no peer holds a remote secret for it)".into());
                    t.context.context.clone()
                }
                Err(why) => {
                    let suggested = Rule::Dns1123Label
                        .suggest(&t.context.context)
                        .unwrap_or_else(|| "cluster".into());
                    out.notes.push(format!(
                        "context {:?} is not a valid mesh name ({why}); it is named {suggested:?}",
                        t.context.context
                    ));
                    name_notes.push(format!("made from the context's name ({why})"));
                    suggested
                }
            },
            (several, _) => {
                out.problems.push(format!(
                    "the remote secrets for context {:?} disagree on its cluster id ({}); \
                     make every primary's secret use one id",
                    t.context.context,
                    several.iter().map(|i| format!("{i:?}")).collect::<Vec<_>>().join(", ")
                ));
                name_notes.push("one of the ids its peers disagree on".into());
                several[0].to_string()
            }
        };
        names.push(name);
    }
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, t) in names.iter().zip(&found) {
        if let Some(other) = seen.insert(name, &t.context.context) {
            out.problems.push(format!(
                "contexts {other:?} and {:?} both claim cluster id {name:?}; give one of them another id",
                t.context.context
            ));
        }
    }
    if !unmanaged.is_empty() {
        out.notes.push(format!(
            "{} remote secret(s) were not made by meshform ({}); `meshform plan --adopt` shows taking them over",
            unmanaged.len(),
            unmanaged.join(", ")
        ));
    }

    // A mesh whose secrets all carry never-expiring tokens was made the way
    // istioctl makes it; keep that until the team chooses bounded tokens.
    let secret_mode = legacy_tokens > 0 && bound_tokens == 0;
    let holders = found.iter().filter(|t| !t.facts.remote_secrets.is_empty()).count();

    let mut mesh_ids: Vec<&str> = found
        .iter()
        .flat_map(|t| t.facts.installs.values().filter_map(|i| i.mesh_id.as_deref()))
        .collect();
    mesh_ids.sort_unstable();
    mesh_ids.dedup();
    let (mesh, mesh_note) = match (settings.mesh, mesh_ids.as_slice()) {
        (Some(mesh), _) => (mesh.to_string(), "from --mesh".to_string()),
        (None, [id]) => (id.to_string(), "the installs' global.meshID".to_string()),
        (None, []) => (
            DEFAULT_MESH.to_string(),
            "no install says its meshID; Istio's multi-cluster guides use this one (or pass --mesh)".to_string(),
        ),
        (None, several) => {
            out.problems.push(format!(
                "the installs disagree on the mesh id ({}); pass --mesh, and reinstall the others with it",
                several.iter().map(|i| format!("{i:?}")).collect::<Vec<_>>().join(", ")
            ));
            (
                several[0].to_string(),
                "one of the mesh ids the installs disagree on".to_string(),
            )
        }
    };
    // The data plane: ambient where istiod runs ambient (`PILOT_ENABLE_AMBIENT`)
    // or ztunnel is installed; said once in [mesh] when every cluster agrees.
    let ambient: Vec<bool> = found.iter().map(|t| runs_ambient(t.facts)).collect();
    let all_ambient = !ambient.is_empty() && ambient.iter().all(|a| *a);
    let text = &mut out.text;
    let _ = writeln!(text, "# Written by `meshform import` from what the clusters hold.");
    let _ = writeln!(text, "[mesh]");
    let _ = writeln!(text, "name = {}   # {mesh_note}", quote(&mesh));
    if settings.namespace != crate::topology::DEFAULT_NAMESPACE {
        let _ = writeln!(text, "namespace = {}", quote(settings.namespace));
    }
    if all_ambient {
        let _ = writeln!(
            text,
            "data_plane = \"ambient\"   # every istiod runs ambient, or ztunnel is installed"
        );
    }
    if secret_mode {
        let _ = writeln!(
            text,
            "\n[mesh.tokens]\n# The remote secrets hold tokens that never expire, as istioctl makes them.\n\
             # \"request\" (the default) gives bounded tokens that meshform rotates.\nmode = \"secret\""
        );
    }
    let mut unlabelled = 0usize;
    for (((t, name), name_note), ambient) in found.iter().zip(&names).zip(&name_notes).zip(&ambient) {
        let _ = writeln!(text, "\n[[cluster]]");
        let _ = writeln!(text, "# name: {name_note}");
        let _ = writeln!(text, "name = {}", quote(name));
        if t.context.context != *name {
            let _ = writeln!(text, "context = {}", quote(&t.context.context));
        }
        if let Some(path) = settings.kubeconfig {
            let _ = writeln!(text, "kubeconfig = {}", quote(path));
        }
        let label = t.facts.namespace.as_ref().and_then(|n| n.network.as_deref());
        let injected = t.facts.installs.values().find_map(|i| i.injected_network.as_deref());
        if let (Some(label), Some(injected)) = (label, injected)
            && label != injected
        {
            out.problems.push(format!(
                "context {:?}: the {} label says network {label:?}, the install's global.network {injected:?}; \
                 make them one (sidecars take the install's, istiod the label's)",
                t.context.context,
                crate::objects::NETWORK_LABEL
            ));
        }
        match label {
            Some(network) => {
                let _ = writeln!(
                    text,
                    "network = {}   # the {} label of {}",
                    quote(network),
                    crate::objects::NETWORK_LABEL,
                    settings.namespace
                );
            }
            None => {
                // Istio puts every cluster without the label on one network (the
                // empty one): flat. meshform names networks, so it gets one.
                let _ = writeln!(
                    text,
                    "network = {}   # no {} label: Istio's one unnamed network, which meshform will label",
                    quote(UNLABELLED_NETWORK),
                    crate::objects::NETWORK_LABEL
                );
                unlabelled += 1;
            }
        }
        // A primary holds remote secrets for its peers; a remote holds none.
        let runs_istiod = t.facts.installs.values().any(|i| i.istiod.is_some());
        if holders > 0 && t.facts.remote_secrets.is_empty() && !runs_istiod {
            let _ = writeln!(text, "role = \"remote\"   # holds no remote secret");
            // The istiod that serves it, as its namespace names it for Istio.
            let ids = t.facts.namespace.as_ref().and_then(|n| n.control_planes.as_deref());
            // Else the primary whose east-west gateway the install's pilot
            // address is: with several primaries, a remote that names none
            // is not a valid mesh.toml.
            let pilot = t
                .facts
                .installs
                .values()
                .find_map(|i| i.remote_pilot_address.as_deref());
            let mut by_gateway = found.iter().zip(&names).filter(|(o, _)| {
                o.facts.installs.values().any(|i| i.istiod.is_some())
                    && o.facts
                        .east_west
                        .as_ref()
                        .is_some_and(|e| e.addresses.iter().any(|a| Some(a.as_str()) == pilot))
            });
            if let Some(ids) = ids.filter(|ids| !ids.contains(',') && *ids != "*") {
                let _ = writeln!(
                    text,
                    "control_plane = {}   # the {} annotation of {}",
                    quote(ids),
                    crate::objects::CONTROL_PLANE_ANNOTATION,
                    settings.namespace
                );
            } else if let (Some((_, primary)), None) = (by_gateway.next(), by_gateway.next()) {
                let _ = writeln!(
                    text,
                    "control_plane = {}   # its install's global.remotePilotAddress is this primary's east-west gateway",
                    quote(primary)
                );
            }
        }
        if *ambient && !all_ambient {
            let _ = writeln!(
                text,
                "data_plane = \"ambient\"   # its istiod runs ambient, or ztunnel is installed"
            );
        }
        match t.other_servers.as_slice() {
            [] => {}
            [server] => {
                let _ = writeln!(
                    text,
                    "api_server = {}   # the address its peers' secrets use",
                    quote(server)
                );
            }
            several => out.problems.push(format!(
                "peers reach {name:?} at different addresses ({}); make them use one",
                several.join(", ")
            )),
        }
    }
    if unlabelled > 0 {
        out.notes.push(format!(
            "{unlabelled} cluster(s) have no {} label; Istio treats them as one network, imported as {:?} \
             (the first apply labels them)",
            crate::objects::NETWORK_LABEL,
            UNLABELLED_NETWORK
        ));
    }
    out
}

/// Whether a cluster's install runs the ambient data plane.
fn runs_ambient(facts: &ClusterFacts) -> bool {
    facts.ztunnel.is_some() || facts.installs.values().any(|i| i.ambient())
}

/// The mesh id of Istio's multi-cluster guides, when no install names one.
pub const DEFAULT_MESH: &str = "mesh1";

/// The network of clusters without a network label.
pub const UNLABELLED_NETWORK: &str = "unlabelled";

/// Whether two API server URLs name the same endpoint (a trailing slash or
/// the default port aside).
fn same_server(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        url::Url::parse(s).ok().map(|u| {
            (
                u.scheme().to_string(),
                u.host_str().map(str::to_string),
                u.port_or_known_default(),
            )
        })
    };
    match (norm(a), norm(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a.trim_end_matches('/') == b.trim_end_matches('/'),
    }
}

fn quote(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_match_with_or_without_the_default_port() {
        assert!(same_server("https://a.example:443", "https://a.example/"));
        assert!(!same_server("https://a.example:6443", "https://a.example"));
        assert!(!same_server("https://127.0.0.1:1000", "https://127.0.0.1:1001"));
    }

    #[test]
    fn quoted_values_read_back_as_written() {
        for text in ["a\"b", "it's", "back\\slash", "gke_p_r_c"] {
            let doc: toml::Table = toml::from_str(&format!("x = {}", quote(text))).unwrap();
            assert_eq!(doc["x"].as_str(), Some(text));
        }
    }
}
