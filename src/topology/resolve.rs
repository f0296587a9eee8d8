//! Semantic checks of a well-shaped file, and the resolved topology with
//! every default filled in.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::diagnostic::{Code, Problem, elided, quoted};
use super::file::{DataPlane, MeshFile, Role, TokensSection};
use super::names::Rule;
use super::shape::{Spans, did_you_mean};
use super::{
    Cluster, DEFAULT_GATEWAY_PORT, DEFAULT_GATEWAY_SERVICE, DEFAULT_NAMESPACE, MAX_TOKEN_LIFETIME, MIN_TOKEN_LIFETIME,
    Mesh, Network, Tokens, Topology,
};

/// The prefix of the remote secret a primary holds for each peer, as istioctl
/// names it; a peer's name must fit in it.
pub const REMOTE_SECRET_PREFIX: &str = "istio-remote-secret-";

/// Resolves defaults and checks everything that needs more than one key to
/// see. Returns the topology only when no error was found.
pub fn resolve(file: &MeshFile, spans: &Spans) -> (Option<Topology>, Vec<Problem>) {
    let mut problems = Vec::new();
    let at = |path: &str| spans.nearest(path);

    let mesh = Mesh {
        name: file.mesh.name.clone(),
        namespace: file
            .mesh
            .namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
        tokens: resolve_tokens(file.mesh.tokens.as_ref(), &mut problems, &at),
        lock_cluster: file.mesh.lock_cluster.clone(),
        trust: super::trust::resolve(file.mesh.trust.as_ref(), &mut problems, &at),
    };
    check_name(
        &mut problems,
        Rule::Dns1123Label,
        &mesh.name,
        "mesh.name",
        at("mesh.name"),
        "the mesh name",
        format!("Lease \"meshform-{}\"", elided(&mesh.name)),
    );
    check_name(
        &mut problems,
        Rule::Dns1123Label,
        &mesh.namespace,
        "mesh.namespace",
        at("mesh.namespace"),
        "the mesh namespace",
        format!("Namespace \"{}\"", elided(&mesh.namespace)),
    );

    if file.clusters.is_empty() {
        problems.push(
            Problem::error(Code::EmptyMesh, "the mesh has no clusters")
                .at("cluster")
                .label(at("mesh"), "this mesh declares no `[[cluster]]`")
                .help("add one `[[cluster]]` table per cluster, e.g.\n[[cluster]]\nname = \"east\"\ncontext = \"kind-east\""),
        );
    }

    let mut clusters = Vec::with_capacity(file.clusters.len());
    for (i, entry) in file.clusters.iter().enumerate() {
        let path = format!("cluster[{i}]");
        let name = match (&entry.name, &entry.context) {
            (Some(name), _) => name.clone(),
            (None, Some(context)) => context.clone(),
            (None, None) => {
                problems.push(
                    Problem::error(Code::MissingKey, format!("`{path}` has neither `name` nor `context`"))
                        .at(format!("{path}.name"))
                        .label(at(&path), "this cluster needs a name")
                        .help(
                            "set `name` to the cluster's mesh name (and `context` when its kubeconfig context differs)",
                        ),
                );
                continue;
            }
        };
        let context = entry.context.clone().unwrap_or_else(|| name.clone());
        let network = entry.network.clone().unwrap_or_else(|| name.clone());
        check_cluster_name(
            &mut problems,
            spans,
            &path,
            entry.name.is_some(),
            entry.context.is_some(),
            &name,
            &context,
        );

        if let Some(explicit) = &entry.network {
            check_network_name(
                &mut problems,
                explicit,
                &format!("{path}.network"),
                at(&format!("{path}.network")),
            );
        }
        if let Some(api) = &entry.api_server {
            check_api_server(
                &mut problems,
                api,
                &format!("{path}.api_server"),
                at(&format!("{path}.api_server")),
            );
        }
        if let Some(kubeconfig) = &entry.kubeconfig {
            let kubeconfig_path = format!("{path}.kubeconfig");
            if kubeconfig.trim().is_empty() {
                problems.push(
                    Problem::error(Code::InvalidKubeconfig, "`kubeconfig` must be a file path")
                        .at(&kubeconfig_path)
                        .label(at(&kubeconfig_path), "not a usable path")
                        .help("remove the key to use $KUBECONFIG or ~/.kube/config"),
                );
            } else if let Some(hidden) = Hidden::find(kubeconfig) {
                problems.push(
                    Problem::error(Code::InvalidKubeconfig, format!("`kubeconfig` contains {hidden}"))
                        .at(&kubeconfig_path)
                        .label(at(&kubeconfig_path), "no kubeconfig path has one")
                        .help("write the path without control or invisible characters, as `ls` shows it"),
                );
            }
        }
        // The context is any string a kubeconfig may hold, and plans, logs
        // and pull-request comments print it: a terminal escape or a
        // right-to-left override there would make them show something else.
        if let Some(hidden) = entry.context.as_deref().and_then(Hidden::find) {
            let context_path = format!("{path}.context");
            problems.push(
                Problem::error(Code::InvalidValue, format!("`context` contains {hidden}"))
                    .at(&context_path)
                    .label(
                        at(&context_path),
                        "a control or invisible character would change how plans and logs show it",
                    )
                    .help("write the context as `kubectl config get-contexts` prints it, without such characters"),
            );
        }
        let data_plane = entry.data_plane.or(file.mesh.data_plane).unwrap_or_default();
        // Istio's ambient multicluster is multi-primary only: a remote's ztunnel
        // cannot reach istiod through the ambient east-west gateway (Istio's
        // ambient multicluster guide; `samples/multicluster/gen-eastwest-gateway.sh
        // --ambient` writes no istiod exposure).
        if data_plane == DataPlane::Ambient && entry.role == Some(Role::Remote) {
            let role_path = format!("{path}.role");
            let plane_at = if entry.data_plane.is_some() {
                at(&format!("{path}.data_plane"))
            } else {
                at("mesh.data_plane")
            };
            problems.push(
                Problem::error(
                    Code::AmbientRemote,
                    format!("{} is a remote on the ambient data plane", quoted(&name)),
                )
                .at(&role_path)
                .label(at(&role_path), "a remote")
                .label(plane_at, "on the ambient data plane")
                .help(format!(
                    "Istio's ambient multicluster is multi-primary only: install istiod on {} and remove `role = \"remote\"`, or set `data_plane = \"sidecar\"` on it",
                    quoted(&name)
                )),
            );
        }
        clusters.push((
            i,
            Cluster {
                name,
                context,
                kubeconfig: entry.kubeconfig.clone(),
                network,
                role: entry.role.unwrap_or_default(),
                api_server: entry.api_server.clone(),
                control_plane: None,
                allow_insecure_transport: entry.allow_insecure_transport.unwrap_or(false),
                data_plane,
            },
        ));
    }

    // Duplicates: the same mesh name twice, or two entries reaching the same
    // kubeconfig context (and so, most likely, the same cluster).
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    let mut by_context: HashMap<(&str, Option<&str>), usize> = HashMap::new();
    // By file index; a lookup rather than a scan keeps a file of thousands of
    // clusters on one context from taking quadratic time.
    let names: HashMap<usize, &str> = clusters.iter().map(|(i, c)| (*i, c.name.as_str())).collect();
    for (i, cluster) in &clusters {
        let name_span = |i: usize| {
            spans
                .value(&format!("cluster[{i}].name"))
                .unwrap_or_else(|| at(&format!("cluster[{i}].context")))
        };
        if let Some(&first) = by_name.get(cluster.name.as_str()) {
            problems.push(
                Problem::error(
                    Code::DuplicateCluster,
                    format!("two clusters are named {}", quoted(&cluster.name)),
                )
                .at(format!("cluster[{i}].name"))
                .label(name_span(first), "first used here")
                .label(name_span(*i), "used again here")
                .help(
                    "every cluster needs its own mesh name; the Istio cluster id and remote secret names come from it",
                ),
            );
        } else {
            by_name.insert(&cluster.name, *i);
        }
        let key = (cluster.context.as_str(), cluster.kubeconfig.as_deref());
        // Two clusters with the same name and no context collide on both;
        // the duplicate name is the one worth reporting.
        let same_name = |first: usize| names.get(&first) == Some(&cluster.name.as_str());
        if let Some(&first) = by_context.get(&key).filter(|&&first| !same_name(first)) {
            let context_span = |i: usize| {
                spans
                    .value(&format!("cluster[{i}].context"))
                    .unwrap_or_else(|| name_span(i))
            };
            problems.push(
                Problem::error(
                    Code::DuplicateContext,
                    format!("two clusters use the kubeconfig context {}", quoted(&cluster.context)),
                )
                .at(format!("cluster[{i}].context"))
                .label(context_span(first), "first used here")
                .label(context_span(*i), "used again here")
                .help("each `[[cluster]]` must reach a different cluster: fix its `context`, or remove the duplicate"),
            );
        } else {
            by_context.insert(key, *i);
        }
    }

    // Remote clusters are read by primaries; with no primary nothing would
    // ever hold their remote secrets.
    if clusters.iter().all(|(_, c)| c.role == Role::Remote) && !clusters.is_empty() {
        let mut problem = Problem::error(Code::NoPrimary, "the mesh has remote clusters but no primary")
            .at("cluster")
            .help("set `role = \"primary\"` on at least one cluster (clusters are primaries unless told otherwise)");
        for (i, _) in &clusters {
            problem = problem.label(at(&format!("cluster[{i}].role")), "remote");
        }
        problems.push(problem);
    }

    resolve_control_planes(file, &mut clusters, &mut problems, &at);
    check_lock_cluster(file, &clusters, &mut problems, &at);

    // Networks: every network a cluster is on, with gateway settings from its
    // table or Istio's defaults.
    let used: BTreeSet<&str> = clusters.iter().map(|(_, c)| c.network.as_str()).collect();
    let mut networks = BTreeMap::new();
    for name in &used {
        let entry = file.networks.get(*name).cloned().unwrap_or_default();
        let base = format!("network.{}", quote_key(name));
        let service = entry
            .gateway_service
            .unwrap_or_else(|| DEFAULT_GATEWAY_SERVICE.to_string());
        check_name(
            &mut problems,
            Rule::Dns1035Label,
            &service,
            &format!("{base}.gateway_service"),
            at(&format!("{base}.gateway_service")),
            "the gateway service",
            format!("Service \"{}\"", elided(&service)),
        );
        networks.insert(
            name.to_string(),
            Network {
                gateway_service: service,
                gateway_port: entry.gateway_port.unwrap_or(DEFAULT_GATEWAY_PORT),
            },
        );
    }
    for name in file.networks.keys() {
        let path = format!("network.{}", quote_key(name));
        let span = spans.key(&path).unwrap_or_else(|| at("network"));
        if Rule::LabelValue.check(name).is_err() {
            check_network_name(&mut problems, name, &path, span);
        } else if !used.contains(name.as_str()) {
            let mut problem = Problem::warning(
                Code::UnusedNetwork,
                format!("no cluster is on network {}", quoted(name)),
            )
            .at(&path)
            .label(span, "settings for a network no cluster uses");
            problem = match did_you_mean(name, used.iter().copied()) {
                Some(close) => problem.help(format!("did you mean network {close:?}?")),
                None => problem.help(format!(
                    "set `network = {}` on the clusters it is for, or remove the table",
                    quoted(name)
                )),
            };
            problems.push(problem);
        }
    }

    let has_errors = problems.iter().any(Problem::is_error);
    let topology = Topology {
        mesh,
        clusters: clusters.into_iter().map(|(_, c)| c).collect(),
        networks,
    };
    (if has_errors { None } else { Some(topology) }, problems)
}

/// `[mesh] lock_cluster` must name a cluster of the file: the lock is taken
/// there or not at all.
fn check_lock_cluster(
    file: &MeshFile,
    clusters: &[(usize, Cluster)],
    problems: &mut Vec<Problem>,
    at: &dyn Fn(&str) -> std::ops::Range<usize>,
) {
    let Some(named) = &file.mesh.lock_cluster else { return };
    if clusters.iter().any(|(_, c)| &c.name == named) {
        return;
    }
    let names = clusters.iter().map(|(_, c)| c.name.as_str());
    let problem = Problem::error(
        Code::InvalidValue,
        format!("`lock_cluster` {} is not a cluster of the mesh", quoted(named)),
    )
    .at("mesh.lock_cluster")
    .label(at("mesh.lock_cluster"), "no `[[cluster]]` has this name");
    problems.push(match did_you_mean(named, names.clone()) {
        Some(close) => problem.help(format!("did you mean {close:?}?")),
        None => problem.help(format!(
            "name the cluster whose mesh namespace holds the apply lock, one of: {}; or remove the key for the first primary by name",
            names.collect::<Vec<_>>().join(", ")
        )),
    });
}

/// Each remote's control plane: the primary named by `control_plane`, else
/// the one primary on its network, else the mesh's one primary; several to
/// choose from is an error. istiod
/// (with `EXTERNAL_ISTIOD`) manages a remote's namespaces only when the
/// remote's mesh namespace names it (istio/istio
/// `pilot/pkg/serviceregistry/kube/controller/multicluster.go`,
/// `checkShouldLead`), so a remote cannot go without one.
fn resolve_control_planes(
    file: &MeshFile,
    clusters: &mut [(usize, Cluster)],
    problems: &mut Vec<Problem>,
    at: &dyn Fn(&str) -> std::ops::Range<usize>,
) {
    let primaries: Vec<(String, String)> = clusters
        .iter()
        .filter(|(_, c)| c.role == Role::Primary)
        .map(|(_, c)| (c.name.clone(), c.network.clone()))
        .collect();
    let names = || primaries.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ");
    for (i, cluster) in clusters.iter_mut() {
        let path = format!("cluster[{i}].control_plane");
        let explicit = file.clusters[*i].control_plane.as_ref();
        match (cluster.role, explicit) {
            (Role::Primary, Some(_)) => problems.push(
                Problem::error(
                    Code::InvalidValue,
                    format!("primary {} has a `control_plane`", quoted(&cluster.name)),
                )
                .at(&path)
                .label(at(&path), "only a remote is served by another cluster's istiod")
                .help("remove the key, or set `role = \"remote\"` if this cluster runs no istiod of its own"),
            ),
            (Role::Primary, None) => {}
            (Role::Remote, Some(named)) => {
                if primaries.iter().any(|(n, _)| n == named) {
                    cluster.control_plane = Some(named.clone());
                } else {
                    let mut problem = Problem::error(
                        Code::InvalidValue,
                        format!(
                            "`control_plane` of {} names no primary of the mesh",
                            quoted(&cluster.name)
                        ),
                    )
                    .at(&path)
                    .label(at(&path), "not a primary of this file");
                    problem = match did_you_mean(named, primaries.iter().map(|(n, _)| n.as_str())) {
                        Some(close) => problem.help(format!("did you mean {close:?}?")),
                        None => problem.help(format!("name one of the primaries: {}", names())),
                    };
                    problems.push(problem);
                }
            }
            (Role::Remote, None) => {
                let on_network: Vec<&str> = primaries
                    .iter()
                    .filter(|(_, network)| *network == cluster.network)
                    .map(|(n, _)| n.as_str())
                    .collect();
                let only = match (on_network.as_slice(), primaries.as_slice()) {
                    ([one], _) => Some(one.to_string()),
                    ([], [(one, _)]) => Some(one.clone()),
                    _ => None,
                };
                match only {
                    Some(primary) => cluster.control_plane = Some(primary),
                    // No primary at all is reported on its own.
                    None if primaries.is_empty() => {}
                    // An error, not a guess: the remote's install reaches one
                    // istiod (its pilot address and injection webhook), and the
                    // plan keeps that istiod exposed and names it in the
                    // remote's namespace. A default that silently became
                    // "none" when a primary was added left the remote unserved.
                    None => problems.push(
                        Problem::error(
                            Code::MissingKey,
                            format!(
                                "remote {} has no `control_plane`, and several primaries could serve it",
                                quoted(&cluster.name)
                            ),
                        )
                        .at(&path)
                        .label(
                            at(&format!("cluster[{i}].role")),
                            "no primary shares its network and the mesh has more than one",
                        )
                        .help(format!(
                            "set `control_plane` to the primary whose istiod serves it (one of {}): the one its install's global.remotePilotAddress reaches",
                            names()
                        )),
                    ),
                }
            }
        }
    }
}

/// Token settings with defaults; a lifetime must parse and be one that
/// TokenRequest grants.
fn resolve_tokens(
    section: Option<&TokensSection>,
    problems: &mut Vec<Problem>,
    at: &dyn Fn(&str) -> std::ops::Range<usize>,
) -> Tokens {
    let mut tokens = Tokens::default();
    let Some(section) = section else { return tokens };
    tokens.mode = section.mode.unwrap_or_default();
    tokens.rotate_at_percent = section.rotate_at_percent.unwrap_or(tokens.rotate_at_percent);
    if let Some(text) = &section.lifetime {
        let path = "mesh.tokens.lifetime";
        let seconds = super::duration_seconds(text);
        match seconds {
            Some(s) if (MIN_TOKEN_LIFETIME as i64..=MAX_TOKEN_LIFETIME as i64).contains(&s) => {
                tokens.lifetime_seconds = s as u64;
            }
            Some(_) => problems.push(
                Problem::error(
                    Code::InvalidValue,
                    format!("token lifetime {} is out of range", quoted(text)),
                )
                .at(path)
                .label(at(path), "TokenRequest grants from 10 minutes to a year")
                .help("use a lifetime such as \"24h\" or \"168h\""),
            ),
            None => problems.push(
                Problem::error(
                    Code::InvalidValue,
                    format!("token lifetime {} is not a duration", quoted(text)),
                )
                .at(path)
                .label(at(path), "expected a duration such as \"168h\"")
                .help("write hours, minutes or days: \"168h\", \"90m\", \"7d\""),
            ),
        }
    }
    tokens
}

fn quote_key(key: &str) -> String {
    if !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        key.to_string()
    } else {
        format!("{key:?}")
    }
}

/// Checks one name and reports it with the object the API server would
/// have refused.
fn check_name(
    problems: &mut Vec<Problem>,
    rule: Rule,
    name: &str,
    path: &str,
    span: std::ops::Range<usize>,
    what: &str,
    object: String,
) {
    if let Err(why) = rule.check(name) {
        let mut problem = Problem::error(
            Code::InvalidName,
            format!("{what} {} is not a valid Kubernetes name", quoted(name)),
        )
        .at(path)
        .label(span, format!("{why}; the API server would reject {object}"));
        problem = match rule.suggest(name) {
            Some(suggestion) => problem.help(format!("use {suggestion:?} ({})", rule.describe())),
            None => problem.help(rule.describe()),
        };
        problems.push(problem);
    }
}

fn check_cluster_name(
    problems: &mut Vec<Problem>,
    spans: &Spans,
    path: &str,
    has_name: bool,
    has_context: bool,
    name: &str,
    context: &str,
) {
    let Err(why) = Rule::Dns1123Label.check(name) else {
        return;
    };
    let secret = format!("Secret \"{REMOTE_SECRET_PREFIX}{}\"", elided(name));
    let suggestion = Rule::Dns1123Label.suggest(name);
    let mut problem = Problem::error(
        Code::InvalidName,
        format!("cluster name {} is not a valid Kubernetes name", quoted(name)),
    )
    .at(format!("{path}.name"));
    let fix = suggestion.as_deref().map_or_else(
        || "a name of lower case letters, digits and '-'".to_string(),
        |s| format!("name = {s:?}"),
    );
    problem = if has_name {
        problem = problem.label(
            spans.nearest(&format!("{path}.name")),
            format!("{why}; the API server would reject {secret}"),
        );
        if has_context {
            problem.help(format!("set {fix}; the kubeconfig context can stay as it is"))
        } else {
            // `context` defaults to `name`: renaming alone would also change
            // which kubeconfig context meshform uses.
            problem.help(format!(
                "set {fix} and context = {}: the context defaults to the name, so keep the old value as the context",
                quoted(context)
            ))
        }
    } else {
        problem
            .label(
                spans.nearest(&format!("{path}.context")),
                format!("the mesh name defaults to the context, and {why}; the API server would reject {secret}"),
            )
            .help(format!("add {fix} to this `[[cluster]]`; the context stays as it is"))
    };
    problems.push(problem);
}

fn check_network_name(problems: &mut Vec<Problem>, network: &str, path: &str, span: std::ops::Range<usize>) {
    if let Err(why) = Rule::LabelValue.check(network) {
        let mut problem = Problem::error(
            Code::InvalidNetwork,
            format!("network name {} is not a valid label value", quoted(network)),
        )
        .at(path)
        .label(
            span,
            format!(
                "{why}; the API server would reject the label topology.istio.io/network={}",
                quoted(network)
            ),
        );
        let rule = Rule::LabelValue.describe();
        problem = match Rule::LabelValue.suggest(network) {
            Some(suggestion) => problem.help(format!("use {suggestion:?} ({rule})")),
            None => problem.help(rule),
        };
        problems.push(problem);
    }
}

/// A control character (including NUL and escape) or an invisible
/// formatting character (zero-width, bidirectional override, byte-order
/// mark): text that shows as something else than it is.
struct Hidden {
    ch: char,
    index: usize,
}

impl Hidden {
    fn find(text: &str) -> Option<Hidden> {
        let invisible = |c: char| {
            matches!(c, '\u{00ad}' | '\u{061c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}' | '\u{feff}')
        };
        text.chars()
            .enumerate()
            .find(|&(_, c)| c.is_control() || invisible(c))
            .map(|(index, ch)| Hidden { ch, index })
    }
}

impl std::fmt::Display for Hidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the character {:?} at position {}", self.ch, self.index + 1)
    }
}

/// An `api_server` longer than this is not an address anyone typed.
const MAX_API_SERVER: usize = 2048;

fn check_api_server(problems: &mut Vec<Problem>, address: &str, path: &str, span: std::ops::Range<usize>) {
    // The URL parser drops surrounding spaces and any tab or newline, but
    // the address is written into remote secrets as it is in the file.
    if let Some(hidden) = Hidden::find(address).or_else(|| {
        let (index, ch) = address.chars().enumerate().find(|(_, c)| c.is_whitespace())?;
        Some(Hidden { ch, index })
    }) {
        let problem = Problem::error(Code::InvalidApiServer, format!("`api_server` contains {hidden}"))
            .label(span, "a URL has no whitespace, control or invisible characters")
            .help("write the address on its own, such as https://203.0.113.10:6443");
        problems.push(problem.at(path));
        return;
    }
    if address.len() > MAX_API_SERVER {
        let problem = Problem::error(
            Code::InvalidApiServer,
            format!(
                "`api_server` is {} bytes long, at most {MAX_API_SERVER} are allowed",
                address.len()
            ),
        )
        .label(span, "too long for an address")
        .help("write the address of the API server only, such as https://203.0.113.10:6443");
        problems.push(problem.at(path));
        return;
    }
    let problem = match url::Url::parse(address) {
        Ok(url) if url.scheme() == "https" && (url.query().is_some() || url.fragment().is_some()) => {
            // Kubernetes clients append API paths to the address; a query
            // would be dropped or, with a credential in it, carried into
            // every remote secret. Its value is not echoed.
            Problem::error(
                Code::InvalidApiServer,
                "`api_server` must not have a query or a fragment",
            )
            .label(span, "remove everything from the first '?' or '#'")
            .help(format!(
                "use https://{}{}",
                url.host_str().unwrap_or_default(),
                url.port().map(|p| format!(":{p}")).unwrap_or_default()
            ))
        }
        Ok(url) if url.scheme() == "https" && url.host_str().is_some_and(|h| !h.is_empty()) => {
            if url.username().is_empty() && url.password().is_none() {
                return;
            }
            // Never echo the credentials back.
            Problem::error(Code::InvalidApiServer, "`api_server` must not carry credentials")
                .label(span, "remove the user and password from this address")
                .help("peers authenticate with the reader token meshform writes into the remote secret")
        }
        Ok(url) => Problem::error(
            Code::InvalidApiServer,
            format!("`api_server` must be an https URL, not {}:", url.scheme()),
        )
        .label(span, "peers send a bearer token to this address, so it must use TLS")
        .help(format!("use https://{}", url.host_str().unwrap_or("api.example.com"))),
        Err(err) => Problem::error(Code::InvalidApiServer, format!("`api_server` is not a URL: {err}"))
            .label(span, "expected an address such as https://203.0.113.10:6443")
            .help("write the full address, with https:// and, when it is not 443, the port"),
    };
    problems.push(problem.at(path));
}
