//! The mesh as a graph: networks containing clusters, each cluster with
//! cross-network peers behind its east-west gateway, and the paths traffic
//! takes between clusters. One model ([`MeshGraph`]) drawn two ways, Mermaid
//! (for markdown) and Graphviz `dot`; it is derived from the topology (and,
//! when given, an observation) and decides nothing about the plan.
//!
//! Node ids are generated (`n0`, `c0`, `g0`), never taken from names: names
//! may contain `.` or `_`, or be a word such as `end` that Mermaid reserves.
//! Names appear only inside quoted, escaped labels.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::observe::model::{ClusterState, Observed};
use crate::topology::{DataPlane, Role, Topology};

/// What an observation says of a node; `NotObserved` when none was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    NotObserved,
    Found,
    /// Read, and absent (a gateway Service that is not installed).
    Missing,
    /// Its cluster could not be read.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshGraph {
    pub mesh: String,
    /// By network name.
    pub networks: Vec<NetworkGroup>,
    /// Sorted, each pair once.
    pub paths: Vec<Path>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkGroup {
    pub name: String,
    /// In topology file order.
    pub clusters: Vec<ClusterNode>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    pub name: String,
    pub role: Role,
    /// The data plane mesh.toml declares: it decides which kind of gateway
    /// istiod of other networks looks for here.
    pub data_plane: DataPlane,
    pub seen: Seen,
    /// The `topology.istio.io/network` label found on the mesh namespace,
    /// when it is set and differs from the declared network: the cluster is
    /// still where it was, and moving it takes a detach and re-attach.
    pub labelled: Option<String>,
    /// Present when some peer is on another network: they reach this
    /// cluster's services only through it.
    pub gateway: Option<GatewayNode>,
    /// When the observed clusters hold more than one root of trust: the
    /// first root of this cluster's group (clusters of other groups cannot
    /// talk to it over mTLS).
    pub trust: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayNode {
    /// The Service, or the Gateway API Gateway, by name.
    pub service: String,
    pub port: u16,
    pub kind: GatewayKind,
    /// Whether the network's gateway Service exists in the cluster.
    pub seen: Seen,
    /// Where istiod sends other networks (the Service's first address and
    /// istiod's gateway port), when the Service was read and has one.
    pub address: Option<String>,
}

/// What a network's gateway is, as istiod of its data plane finds it
/// (`plan/ambient.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayKind {
    /// The east-west gateway Service labelled with the network (sidecar).
    Service,
    /// A labelled Gateway API Gateway with an auto-passthrough listener (sidecar).
    GatewayApi,
    /// The ambient `istio-east-west` Gateway (HBONE on 15008).
    AmbientEastWest,
}

impl GatewayKind {
    /// How the graph names it before its name.
    pub fn describe(self) -> &'static str {
        match self {
            GatewayKind::Service => "Service",
            GatewayKind::GatewayApi => "Gateway API",
            GatewayKind::AmbientEastWest => "istio-east-west",
        }
    }
}

/// How traffic gets from one cluster to another.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Path {
    /// Same network: pods reach each other directly, both ways.
    Direct { a: String, b: String },
    /// Other networks: `from` reaches `to` only through `to`'s gateway.
    ViaGateway { from: String, to: String },
}

impl MeshGraph {
    pub fn new(topology: &Topology, observed: Option<&Observed>) -> MeshGraph {
        let labelled = |cluster: &crate::topology::Cluster| {
            let facts = observed?.facts(&cluster.name)?;
            let label = facts.namespace.as_ref()?.network.as_ref()?;
            (*label != cluster.network).then(|| label.clone())
        };
        let facts = |cluster: &str| observed.map(|o| o.clusters.get(cluster).map(|c| &c.state));
        let seen = |cluster: &str| match facts(cluster) {
            None => Seen::NotObserved,
            Some(Some(ClusterState::Reachable(_))) => Seen::Found,
            Some(_) => Seen::Unknown,
        };
        // The gateway of the cluster's network as its data plane's istiod
        // of other networks finds it, what was seen of it and its address.
        let gateway = |cluster: &crate::topology::Cluster| {
            let network = &topology.networks[&cluster.network];
            let reachable = match facts(&cluster.name) {
                Some(Some(ClusterState::Reachable(facts))) => Some(facts),
                _ => None,
            };
            let unread = match seen(&cluster.name) {
                Seen::Found => Seen::Missing,
                other => other,
            };
            if cluster.data_plane == DataPlane::Ambient {
                let found = reachable.and_then(|f| f.ambient_gateway(&cluster.network));
                return GatewayNode {
                    service: found
                        .map_or(crate::objects::AMBIENT_EAST_WEST_GATEWAY, |(n, _)| n)
                        .to_string(),
                    port: crate::objects::HBONE_GATEWAY_PORT,
                    kind: GatewayKind::AmbientEastWest,
                    seen: if found.is_some() { Seen::Found } else { unread },
                    address: found.and_then(|(_, g)| {
                        g.status_addresses
                            .first()
                            .map(|a| format!("{a}:{}", crate::objects::HBONE_GATEWAY_PORT))
                    }),
                };
            }
            let k8s = reachable
                .filter(|f| f.gateway_service.is_none())
                .and_then(|f| f.sidecar_k8s_gateway(&cluster.network));
            if let Some((name, g)) = k8s {
                let address = g.sidecar_gateways().into_iter().next();
                let port = address
                    .as_deref()
                    .and_then(|a| a.rsplit(':').next()?.parse().ok())
                    .unwrap_or(network.gateway_port);
                return GatewayNode {
                    service: name.to_string(),
                    port,
                    kind: GatewayKind::GatewayApi,
                    seen: Seen::Found,
                    address,
                };
            }
            GatewayNode {
                service: network.gateway_service.clone(),
                port: network.gateway_port,
                kind: GatewayKind::Service,
                seen: match reachable {
                    Some(f) if f.gateway_service.is_some() => Seen::Found,
                    _ => unread,
                },
                address: reachable
                    .filter(|f| f.gateway_service.is_some())
                    .and_then(|f| f.east_west.as_ref()?.istiod_address()),
            }
        };
        let groups = observed.map(|o| o.trust_groups(topology.clusters.iter().map(|c| c.name.as_str())));
        let trust = |cluster: &str| {
            let groups = groups.as_ref().filter(|g| g.len() > 1)?;
            let (_, roots) = groups.iter().find(|(names, _)| names.contains(cluster))?;
            roots.first().map(|r| format!("root {}", &r[..r.len().min(8)]))
        };
        let mut networks: BTreeMap<&str, Vec<ClusterNode>> = BTreeMap::new();
        let mut paths = Vec::new();
        for cluster in &topology.clusters {
            let cluster_seen = seen(&cluster.name);
            let cross_network = topology.clusters.iter().any(|c| c.network != cluster.network);
            let gateway = cross_network.then(|| gateway(cluster));
            networks.entry(&cluster.network).or_default().push(ClusterNode {
                name: cluster.name.clone(),
                role: cluster.role,
                data_plane: cluster.data_plane,
                seen: cluster_seen,
                labelled: labelled(cluster),
                gateway,
                trust: trust(&cluster.name),
            });
            for peer in &topology.clusters {
                if peer.name == cluster.name {
                    continue;
                }
                if peer.network != cluster.network {
                    paths.push(Path::ViaGateway {
                        from: cluster.name.clone(),
                        to: peer.name.clone(),
                    });
                } else if cluster.name < peer.name {
                    paths.push(Path::Direct {
                        a: cluster.name.clone(),
                        b: peer.name.clone(),
                    });
                }
            }
        }
        paths.sort();
        MeshGraph {
            mesh: topology.mesh.name.clone(),
            networks: networks
                .into_iter()
                .map(|(name, clusters)| NetworkGroup {
                    name: name.to_string(),
                    clusters,
                })
                .collect(),
            paths,
        }
    }

    /// Generated node ids by cluster name: `c<i>` for the cluster, `g<i>`
    /// for its gateway, numbered in drawing order.
    fn ids(&self) -> BTreeMap<&str, usize> {
        self.networks
            .iter()
            .flat_map(|n| &n.clusters)
            .enumerate()
            .map(|(i, c)| (c.name.as_str(), i))
            .collect()
    }

    /// A Mermaid `flowchart`, without the surrounding code fence.
    pub fn mermaid(&self) -> String {
        let ids = self.ids();
        let mut out = String::from("flowchart LR\n");
        let mut classes: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (n, network) in self.networks.iter().enumerate() {
            let _ = writeln!(out, "  subgraph n{n}[\"network {}\"]", mermaid_label(&network.name));
            for cluster in &network.clusters {
                let i = ids[cluster.name.as_str()];
                let mut label = format!(
                    "{}<br/>{}, {}",
                    mermaid_label(&cluster.name),
                    cluster.role.as_str(),
                    cluster.data_plane.as_str()
                );
                if let Some(network) = &cluster.labelled {
                    let _ = write!(label, "<br/>(labelled {})", mermaid_label(network));
                    classes.entry("relabel").or_default().push(format!("c{i}"));
                }
                if let Some(root) = &cluster.trust {
                    let _ = write!(label, "<br/>({})", mermaid_label(root));
                    classes.entry("trust").or_default().push(format!("c{i}"));
                }
                // Primaries run istiod: a box with side bars; remotes a rounded box.
                let shape = match cluster.role {
                    Role::Primary => format!("c{i}[[\"{label}{}\"]]", seen_note(cluster.seen)),
                    Role::Remote => format!("c{i}(\"{label}{}\")", seen_note(cluster.seen)),
                };
                let _ = writeln!(out, "    {shape}");
                classes.entry(cluster.role.as_str()).or_default().push(format!("c{i}"));
                if cluster.seen == Seen::Unknown {
                    classes.entry("unknown").or_default().push(format!("c{i}"));
                }
                if let Some(gateway) = &cluster.gateway {
                    let _ = writeln!(
                        out,
                        "    g{i}{{{{\"gateway {} {}:{}{}\"}}}}",
                        gateway.kind.describe(),
                        mermaid_label(&gateway.service),
                        gateway.port,
                        gateway_note(gateway)
                    );
                    let class = if gateway.seen == Seen::Missing || gateway_unaddressed(gateway) {
                        "missing"
                    } else {
                        "gateway"
                    };
                    classes.entry(class).or_default().push(format!("g{i}"));
                }
            }
            out.push_str("  end\n");
        }
        for cluster in self.networks.iter().flat_map(|n| &n.clusters) {
            if cluster.gateway.is_some() {
                let i = ids[cluster.name.as_str()];
                let _ = writeln!(out, "  g{i} --> c{i}");
            }
        }
        for path in &self.paths {
            let _ = match path {
                Path::Direct { a, b } => writeln!(out, "  c{} <--> c{}", ids[a.as_str()], ids[b.as_str()]),
                Path::ViaGateway { from, to } => {
                    writeln!(out, "  c{} -.-> g{}", ids[from.as_str()], ids[to.as_str()])
                }
            };
        }
        // Colours a reader can tell apart in GitHub's light and dark themes.
        for (class, style) in [
            ("primary", "fill:#dbeafe,stroke:#1d4ed8,stroke-width:2px,color:#000"),
            ("remote", "fill:#f1f5f9,stroke:#64748b,color:#000"),
            ("gateway", "fill:#fef3c7,stroke:#b45309,color:#000"),
            ("missing", "fill:#fee2e2,stroke:#b91c1c,stroke-dasharray:4 3,color:#000"),
            ("unknown", "stroke-dasharray:4 3"),
            ("relabel", "stroke:#b45309,stroke-width:3px"),
            ("trust", "stroke:#b91c1c,stroke-width:3px,stroke-dasharray:2 2"),
        ] {
            if let Some(nodes) = classes.get(class) {
                let _ = writeln!(out, "  classDef {class} {style}");
                let _ = writeln!(out, "  class {} {class}", nodes.join(","));
            }
        }
        out
    }

    /// A Graphviz `dot` digraph with one `cluster_` subgraph per network.
    pub fn dot(&self) -> String {
        let ids = self.ids();
        let mut out = format!("digraph {} {{\n", dot_string(&self.mesh));
        out.push_str("  rankdir=LR;\n  node [fontname=\"Helvetica\"];\n");
        for (n, network) in self.networks.iter().enumerate() {
            let _ = writeln!(out, "  subgraph cluster_n{n} {{");
            let _ = writeln!(out, "    label={};", dot_string(&format!("network {}", network.name)));
            for cluster in &network.clusters {
                let i = ids[cluster.name.as_str()];
                let mut label = format!(
                    "{}\n{}, {}{}",
                    cluster.name,
                    cluster.role.as_str(),
                    cluster.data_plane.as_str(),
                    seen_note(cluster.seen).replace("<br/>", "\n")
                );
                if let Some(network) = &cluster.labelled {
                    let _ = write!(label, "\n(labelled {network})");
                }
                if let Some(root) = &cluster.trust {
                    let _ = write!(label, "\n({root})");
                }
                let style = match (cluster.role, cluster.seen) {
                    (Role::Primary, Seen::Unknown) => "bold,dashed",
                    (Role::Primary, _) => "bold",
                    (Role::Remote, Seen::Unknown) => "rounded,dashed",
                    (Role::Remote, _) => "rounded",
                };
                let _ = writeln!(
                    out,
                    "    c{i} [label={}, shape=box, style=\"{style}\"];",
                    dot_string(&label)
                );
                if let Some(gateway) = &cluster.gateway {
                    let label = format!(
                        "gateway {} {}:{}{}",
                        gateway.kind.describe(),
                        gateway.service,
                        gateway.port,
                        gateway_note(gateway).replace("<br/>", "\n")
                    );
                    let style = if gateway.seen == Seen::Missing || gateway_unaddressed(gateway) {
                        "dashed"
                    } else {
                        "solid"
                    };
                    let _ = writeln!(
                        out,
                        "    g{i} [label={}, shape=hexagon, style=\"{style}\"];",
                        dot_string(&label)
                    );
                }
            }
            out.push_str("  }\n");
        }
        for cluster in self.networks.iter().flat_map(|n| &n.clusters) {
            if cluster.gateway.is_some() {
                let i = ids[cluster.name.as_str()];
                let _ = writeln!(out, "  g{i} -> c{i};");
            }
        }
        for path in &self.paths {
            let _ = match path {
                Path::Direct { a, b } => {
                    writeln!(out, "  c{} -> c{} [dir=both];", ids[a.as_str()], ids[b.as_str()])
                }
                Path::ViaGateway { from, to } => {
                    writeln!(
                        out,
                        "  c{} -> g{} [style=dashed];",
                        ids[from.as_str()],
                        ids[to.as_str()]
                    )
                }
            };
        }
        out.push_str("}\n");
        out
    }
}

/// Under a gateway: what was seen of it, and where istiod sends other networks.
fn gateway_note(gateway: &GatewayNode) -> String {
    match (&gateway.address, gateway.seen) {
        (Some(address), _) => format!("<br/>at {address}"),
        (None, Seen::Found) => "<br/>(no address)".to_string(),
        (None, seen) => seen_note(seen).to_string(),
    }
}

/// Read, present, and without an address: other networks cannot use it.
fn gateway_unaddressed(gateway: &GatewayNode) -> bool {
    gateway.seen == Seen::Found && gateway.address.is_none()
}

/// A note under a node's name; Mermaid's line break, replaced for dot.
fn seen_note(seen: Seen) -> &'static str {
    match seen {
        Seen::NotObserved | Seen::Found => "",
        Seen::Missing => "<br/>(missing)",
        Seen::Unknown => "<br/>(not read)",
    }
}

/// Text for inside a double-quoted Mermaid label. Mermaid decodes `#name;`
/// and `#code;` entities there; `"` would end the label and `<` `>` `&` would
/// be read as HTML.
fn mermaid_label(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '#' => out.push_str("#35;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '&' => out.push_str("#amp;"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A double-quoted dot string; `\n` becomes dot's centred line break.
fn dot_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::model::Observed;
    use crate::observe::synthetic;
    use crate::render::scenarios;

    #[test]
    fn example_mesh() {
        let graph = MeshGraph::new(&scenarios::example(), None);
        scenarios::settings().bind(|| {
            insta::assert_snapshot!("graph__example_mermaid", graph.mermaid());
            insta::assert_snapshot!("graph__example_dot", graph.dot());
        });
    }

    #[test]
    fn same_network_is_direct_other_networks_go_through_the_gateway() {
        let graph = MeshGraph::new(&scenarios::example(), None);
        assert!(graph.paths.contains(&Path::Direct {
            a: "eu-central".into(),
            b: "eu-west".into()
        }));
        assert!(graph.paths.contains(&Path::ViaGateway {
            from: "eu-west".into(),
            to: "apac".into()
        }));
        assert!(graph.paths.contains(&Path::ViaGateway {
            from: "apac".into(),
            to: "eu-west".into()
        }));
        // 1 same-network pair, 10 ordered cross-network pairs.
        assert_eq!(graph.paths.len(), 11);
    }

    #[test]
    fn one_network_needs_no_gateway() {
        let topology = scenarios::topology(
            "[mesh]\nname = \"m\"\n[[cluster]]\nname = \"a\"\nnetwork = \"flat\"\n[[cluster]]\nname = \"b\"\nnetwork = \"flat\"\nrole = \"remote\"\n",
        );
        let graph = MeshGraph::new(&topology, None);
        assert!(graph.networks[0].clusters.iter().all(|c| c.gateway.is_none()));
        insta::assert_snapshot!(graph.mermaid(), @r#"
        flowchart LR
          subgraph n0["network flat"]
            c0[["a<br/>primary, sidecar"]]
            c1("b<br/>remote, sidecar")
          end
          c0 <--> c1
          classDef primary fill:#dbeafe,stroke:#1d4ed8,stroke-width:2px,color:#000
          class c0 primary
          classDef remote fill:#f1f5f9,stroke:#64748b,color:#000
          class c1 remote
        "#);
    }

    // Regression guard: names with `.`, `_` or a Mermaid keyword must not
    // become node ids or break out of their labels.
    #[test]
    fn names_never_break_the_diagram() {
        let topology = scenarios::topology(
            "[mesh]\nname = \"m\"\n[[cluster]]\nname = \"end\"\nnetwork = \"eu.flat_1\"\n[[cluster]]\nname = \"subgraph\"\nnetwork = \"us_2.x\"\n[network.\"us_2.x\"]\ngateway_service = \"gw-x\"\n",
        );
        let graph = MeshGraph::new(&topology, None);
        let mermaid = graph.mermaid();
        assert!(mermaid.contains("subgraph n0[\"network eu.flat_1\"]"), "{mermaid}");
        assert!(mermaid.contains("c0[[\"end<br/>primary, sidecar\"]]"), "{mermaid}");
        assert!(mermaid.contains("g1{{\"gateway Service gw-x:15443\"}}"), "{mermaid}");
        // The only bare `end`s close the subgraphs.
        let ends = mermaid.lines().filter(|l| l.trim() == "end").count();
        assert_eq!(ends, graph.networks.len(), "{mermaid}");
        assert_eq!(mermaid_label("a\"b<c>&#d"), "a#quot;b#lt;c#gt;#amp;#35;d");
        assert_eq!(dot_string("a\"b\\c\nd"), r#""a\"b\\c\nd""#);
        let dot = graph.dot();
        assert!(dot.contains("label=\"network eu.flat_1\";"), "{dot}");
    }

    #[test]
    fn observation_marks_missing_gateways_and_unread_clusters() {
        let topology = scenarios::example();
        let mut observed = synthetic::fresh(&topology, scenarios::now());
        if let ClusterState::Reachable(facts) = &mut observed.clusters.get_mut("us-east").unwrap().state {
            facts.gateway_service = None;
        }
        observed.clusters.get_mut("apac").unwrap().state = ClusterState::Unknown {
            reason: crate::observe::model::UnknownReason::Timeout,
            detail: "timed out".into(),
        };
        let graph = MeshGraph::new(&topology, Some(&observed));
        let node = |name: &str| {
            graph
                .networks
                .iter()
                .flat_map(|n| &n.clusters)
                .find(|c| c.name == name)
                .unwrap()
                .clone()
        };
        assert_eq!(node("us-east").gateway.unwrap().seen, Seen::Missing);
        assert_eq!(node("apac").seen, Seen::Unknown);
        assert_eq!(node("eu-west").seen, Seen::Found);
        let mermaid = graph.mermaid();
        assert!(mermaid.contains("(missing)\"}}"), "{mermaid}");
        assert!(mermaid.contains("classDef missing"), "{mermaid}");
        assert!(mermaid.contains("(not read)"), "{mermaid}");
    }

    #[test]
    fn observation_marks_a_network_label_that_differs() {
        let topology = scenarios::example();
        let mut observed = synthetic::fresh(&topology, scenarios::now());
        for (name, label) in [("us-east", "old-net"), ("eu-west", "eu-flat")] {
            if let ClusterState::Reachable(facts) = &mut observed.clusters.get_mut(name).unwrap().state {
                facts.namespace.as_mut().unwrap().network = Some(label.into());
            }
        }
        let graph = MeshGraph::new(&topology, Some(&observed));
        let labelled: Vec<_> = graph
            .networks
            .iter()
            .flat_map(|n| &n.clusters)
            .filter_map(|c| Some((c.name.as_str(), c.labelled.as_deref()?)))
            .collect();
        // eu-west carries the label it should; unlabelled clusters are simply not attached yet.
        assert_eq!(labelled, [("us-east", "old-net")]);
        let mermaid = graph.mermaid();
        assert!(
            mermaid.contains("us-east<br/>primary, sidecar<br/>(labelled old-net)"),
            "{mermaid}"
        );
        assert!(mermaid.contains("classDef relabel"), "{mermaid}");
        assert!(
            graph.dot().contains("us-east\\nprimary, sidecar\\n(labelled old-net)"),
            "{}",
            graph.dot()
        );
    }

    #[test]
    fn observation_shows_gateway_addresses_and_separate_roots_of_trust() {
        let topology = scenarios::example();
        let mut observed = synthetic::fresh(&topology, scenarios::now());
        let facts = |observed: &mut Observed, name: &str| match &mut observed.clusters.get_mut(name).unwrap().state {
            ClusterState::Reachable(facts) => facts.as_mut().clone(),
            ClusterState::Unknown { .. } => unreachable!(),
        };
        let mut apac = facts(&mut observed, "apac");
        apac.root_certs = Some(vec!["ab".repeat(32)]);
        apac.east_west.as_mut().unwrap().port_label = Some("15444".into());
        let mut us_east = facts(&mut observed, "us-east");
        us_east.east_west.as_mut().unwrap().addresses.clear();
        for (name, f) in [("apac", apac), ("us-east", us_east)] {
            observed.clusters.get_mut(name).unwrap().state = ClusterState::Reachable(Box::new(f));
        }
        let graph = MeshGraph::new(&topology, Some(&observed));
        let node = |name: &str| {
            graph
                .networks
                .iter()
                .flat_map(|n| &n.clusters)
                .find(|c| c.name == name)
                .unwrap()
                .clone()
        };
        // istiod's port comes from the Service's label, not from gateway_port.
        assert_eq!(
            node("apac").gateway.unwrap().address.as_deref(),
            Some("apac.gateways.example.com:15444")
        );
        assert_eq!(node("us-east").gateway.unwrap().address, None);
        assert_eq!(node("apac").trust.as_deref(), Some("root abababab"));
        let shared = crate::objects::sha256_hex(b"shared root");
        assert_eq!(node("eu-west").trust, Some(format!("root {}", &shared[..8])));
        let mermaid = graph.mermaid();
        assert!(
            mermaid.contains("<br/>at apac.gateways.example.com:15444\"}}"),
            "{mermaid}"
        );
        assert!(mermaid.contains("<br/>(no address)\"}}"), "{mermaid}");
        assert!(
            mermaid.contains("apac<br/>primary, sidecar<br/>(root abababab)"),
            "{mermaid}"
        );
        assert!(mermaid.contains("classDef trust"), "{mermaid}");
        assert!(graph.dot().contains("(root abababab)"), "{}", graph.dot());

        // One root everywhere: nothing to mark.
        let one = MeshGraph::new(&topology, Some(&synthetic::fresh(&topology, scenarios::now())));
        assert!(one.networks.iter().flat_map(|n| &n.clusters).all(|c| c.trust.is_none()));
    }

    /// Each network's gateway is shown as its data plane's istiod finds it:
    /// ambient's istio-east-west Gateway at its status address, a sidecar
    /// network's Gateway API Gateway standing in for the Service.
    #[test]
    fn each_network_shows_its_data_plane_and_the_kind_of_its_gateway() {
        use crate::observe::model::{K8sGatewayFacts, ListenerFacts, ObjectFacts};
        let topology = scenarios::topology(
            "[mesh]\nname = \"m\"\n[[cluster]]\nname = \"a\"\nnetwork = \"n1\"\ndata_plane = \"ambient\"\n[[cluster]]\nname = \"b\"\nnetwork = \"n2\"\n[[cluster]]\nname = \"c\"\nnetwork = \"n3\"\n",
        );
        let mut observed = synthetic::fresh(&topology, scenarios::now());
        let gateway =
            |class: &str, network: &str, listener: ListenerFacts, spec: &[&str], status: &[&str]| K8sGatewayFacts {
                object: ObjectFacts {
                    uid: "u".into(),
                    resource_version: "1".into(),
                    managed: false,
                    spec_hash: None,
                    content_sha256: None,
                    content_owners: Vec::new(),
                },
                class: class.into(),
                network: Some(network.into()),
                port_label: None,
                listeners: vec![listener],
                spec_addresses: spec.iter().map(|a| a.to_string()).collect(),
                status_addresses: status.iter().map(|a| a.to_string()).collect(),
                network_owners: Vec::new(),
            };
        let hbone = ListenerFacts {
            name: "mesh".into(),
            port: 15008,
            protocol: "HBONE".into(),
            tls_mode: Some("Terminate".into()),
            listener_mode: None,
        };
        let passthrough = ListenerFacts {
            name: "tls".into(),
            port: 15443,
            protocol: "TLS".into(),
            tls_mode: Some("Passthrough".into()),
            listener_mode: None,
        };
        let a = observed.facts_mut("a").unwrap();
        a.k8s_gateways.get_or_insert_default().insert(
            "istio-eastwestgateway".into(),
            gateway("istio-east-west", "n1", hbone, &[], &["192.0.2.1"]),
        );
        let b = observed.facts_mut("b").unwrap();
        b.gateway_service = None;
        b.east_west = None;
        b.k8s_gateways = Some(
            [(
                "ew".to_string(),
                gateway("istio", "n2", passthrough, &["192.0.2.2"], &[]),
            )]
            .into_iter()
            .collect(),
        );
        let graph = MeshGraph::new(&topology, Some(&observed));
        let mermaid = graph.mermaid();
        assert!(mermaid.contains("a<br/>primary, ambient"), "{mermaid}");
        assert!(
            mermaid.contains("gateway istio-east-west istio-eastwestgateway:15008<br/>at 192.0.2.1:15008"),
            "{mermaid}"
        );
        assert!(
            mermaid.contains("gateway Gateway API ew:15443<br/>at 192.0.2.2:15443"),
            "{mermaid}"
        );
        assert!(
            mermaid.contains("gateway Service istio-eastwestgateway:15443"),
            "{mermaid}"
        );
        assert!(
            graph
                .dot()
                .contains("gateway istio-east-west istio-eastwestgateway:15008")
        );
        // Not yet written: ambient's Gateway is missing, not a Service.
        observed.facts_mut("a").unwrap().k8s_gateways = Some(Default::default());
        let graph = MeshGraph::new(&topology, Some(&observed));
        let a = graph.networks[0].clusters[0].gateway.clone().unwrap();
        assert_eq!((a.kind, a.seen), (GatewayKind::AmbientEastWest, Seen::Missing));
    }
}
