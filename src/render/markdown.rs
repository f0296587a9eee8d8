//! The plan as a pull-request comment (GitHub-flavoured markdown): a title
//! with the summary, a table of clusters, findings, a Mermaid diagram of the
//! mesh and one collapsible section of actions per cluster.
//!
//! The first line is a stable HTML comment ([`marker`]) so CI can find its
//! earlier comment and update it in place. Every name and reason is escaped
//! or put in a code span, so no value can break the table or the markup.

use std::io::{self, Write};

use super::graph::{MeshGraph, Seen};
use super::{change_symbol, count, restart_note, summary};
use crate::observe::model::Observed;
use crate::plan::{Action, ActionKind, Change, FindingKind, Phase, Plan};
use crate::topology::Topology;

/// The hidden first line of every plan comment for `mesh`.
pub fn marker(mesh: &str) -> String {
    // A DNS label cannot hold `>`, so the comment cannot be closed early;
    // the replace guards plans read from elsewhere.
    format!("<!-- meshform-plan mesh={} -->", mesh.replace('>', "&gt;"))
}

/// Writes the comment; see the module documentation for its layout.
pub fn plan(plan: &Plan, topology: &Topology, observed: Option<&Observed>, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "{}", marker(&plan.mesh))?;
    let tally = plan.tally();
    let headline = summary(&tally).unwrap_or_else(|| "no changes".to_string());
    writeln!(out, "## meshform plan for {}: {headline}", code(&plan.mesh))?;
    writeln!(out)?;

    let blockers = plan.blockers().count();
    if blockers > 0 {
        writeln!(
            out,
            "**Apply is blocked** until {} fixed (see Findings).",
            if blockers == 1 {
                "the blocker is".to_string()
            } else {
                format!("the {blockers} blockers are")
            }
        )?;
        writeln!(out)?;
    } else if tally == Default::default() && plan.findings.is_empty() && plan.deferred.is_empty() {
        writeln!(out, "No changes. The mesh matches mesh.toml.")?;
        writeln!(out)?;
    }

    // Each network's gateway as the observation found it, else as mesh.toml names it.
    let mut graph = MeshGraph::new(topology, observed);
    // The plan knows which clusters could not be read; show them so.
    for node in graph.networks.iter_mut().flat_map(|n| &mut n.clusters) {
        if plan.deferred.iter().any(|d| d.cluster == node.name) {
            node.seen = Seen::Unknown;
            if let Some(gateway) = &mut node.gateway {
                gateway.seen = Seen::Unknown;
            }
        }
    }
    table(plan, topology, &graph, out)?;
    findings(plan, out)?;
    if !plan.deferred.is_empty() {
        writeln!(out, "### Deferred clusters")?;
        writeln!(out)?;
        writeln!(
            out,
            "These clusters could not be read: nothing is planned for them or removed on their account."
        )?;
        writeln!(out)?;
        for deferred in &plan.deferred {
            writeln!(out, "- {}: {}", code(&deferred.cluster), text(&deferred.reason))?;
        }
        writeln!(out)?;
    }

    writeln!(out, "### Mesh")?;
    writeln!(out)?;
    writeln!(out, "```mermaid")?;
    write!(out, "{}", graph.mermaid())?;
    writeln!(out, "```")?;
    writeln!(out)?;

    if !plan.actions.is_empty() {
        writeln!(out, "### Actions by cluster")?;
        writeln!(out)?;
        for cluster in clusters(plan, topology) {
            if plan.actions_in(&cluster).next().is_some() {
                section(plan, &cluster, out)?;
            }
        }
    }

    let topology_hash = plan.topology_sha256.get(..12).unwrap_or_default();
    writeln!(
        out,
        "<sub>meshform {}, plan format {}, topology sha256 {}</sub>",
        html(&plan.meshform_version),
        plan.format_version,
        html(topology_hash)
    )
}

/// Every cluster the plan or the topology names: the topology's in file
/// order, then those leaving it.
fn clusters(plan: &Plan, topology: &Topology) -> Vec<String> {
    let mut names: Vec<String> = topology.clusters.iter().map(|c| c.name.clone()).collect();
    let mentioned = plan
        .changes
        .iter()
        .flat_map(|c| match c {
            Change::Rename { from, to } => vec![from, to],
            Change::Attach { cluster, .. }
            | Change::Detach { cluster }
            | Change::NetworkChange { cluster, .. }
            | Change::BecameRemote { cluster } => vec![cluster],
        })
        .chain(plan.actions.iter().map(|a| &a.cluster));
    for name in mentioned {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

fn table(plan: &Plan, topology: &Topology, graph: &MeshGraph, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "| Cluster | Network | Role | Data plane | Gateway | Actions | Change |"
    )?;
    writeln!(out, "| --- | --- | --- | --- | --- | ---: | --- |")?;
    for name in clusters(plan, topology) {
        let (network, role, data_plane) = match topology.cluster(&name) {
            Some(c) => (cell_code(&c.network), c.role.as_str(), c.data_plane.as_str()),
            None => ("—".to_string(), "not in mesh.toml", "—"),
        };
        // The kind of the network's gateway, where peers on other networks use one.
        let gateway = graph
            .networks
            .iter()
            .flat_map(|n| &n.clusters)
            .find(|c| c.name == name)
            .and_then(|c| c.gateway.as_ref())
            .map_or("—".to_string(), |g| {
                let seen = match g.seen {
                    Seen::Missing => " (missing)",
                    Seen::Unknown => " (not read)",
                    Seen::Found | Seen::NotObserved => "",
                };
                format!("{} {}{seen}", g.kind.describe(), cell_code(&g.service))
            });
        let mut change: Vec<String> = plan
            .changes
            .iter()
            .filter(|c| c.concerns(&name))
            .map(|c| format!("{} {}", cell_code(change_symbol(c)), table_change(c, &name)))
            .collect();
        if plan.deferred.iter().any(|d| d.cluster == name) {
            change.push("deferred (not read)".to_string());
        }
        let change = if change.is_empty() {
            "—".to_string()
        } else {
            change.join("; ")
        };
        writeln!(
            out,
            "| {} | {network} | {role} | {data_plane} | {gateway} | {} | {change} |",
            cell_code(&name),
            plan.actions_in(&name).count()
        )?;
    }
    writeln!(out)
}

/// A change as seen from one of the clusters it concerns, for a table cell.
fn table_change(change: &Change, cluster: &str) -> String {
    match change {
        Change::Attach { .. } => "attach".to_string(),
        Change::Detach { .. } => "detach".to_string(),
        Change::NetworkChange { from, to, .. } => {
            format!("network {} to {} (detach + re-attach)", cell_code(from), cell_code(to))
        }
        Change::Rename { from, to } if from == cluster => format!("renamed to {} (detach)", cell_code(to)),
        Change::Rename { from, .. } => format!("renamed from {} (attach)", cell_code(from)),
        Change::BecameRemote { .. } => "becomes remote".to_string(),
    }
}

fn findings(plan: &Plan, out: &mut dyn Write) -> io::Result<()> {
    if plan.findings.is_empty() {
        return Ok(());
    }
    writeln!(out, "### Findings")?;
    writeln!(out)?;
    for (kind, word) in [
        (FindingKind::Blocker, "blocker"),
        (FindingKind::Conflict, "conflict"),
        (FindingKind::Warning, "warning"),
    ] {
        for finding in plan.findings_of(kind) {
            let place = finding
                .cluster
                .as_deref()
                .map(|c| format!(" in {}", code(c)))
                .unwrap_or_default();
            writeln!(
                out,
                "- **{word}**{place}: {} ({})",
                text(&finding.message),
                code(&finding.code)
            )?;
            if let Some(help) = &finding.help {
                // A line break inside the same list item.
                writeln!(out, "  <br/>help: {}", text(help))?;
            }
        }
    }
    writeln!(out)
}

fn section(plan: &Plan, cluster: &str, out: &mut dyn Write) -> io::Result<()> {
    let actions: Vec<&Action> = plan.actions_in(cluster).collect();
    let destructive = actions.iter().filter(|a| a.is_destructive()).count();
    let mut title = format!(
        "<code>{}</code>: {}",
        html(cluster),
        count(actions.len(), "action", "actions")
    );
    if destructive > 0 {
        title += &format!(", {destructive} destructive");
    }
    writeln!(out, "<details>")?;
    writeln!(out, "<summary>{title}</summary>")?;
    writeln!(out)?;
    for phase in Phase::ALL {
        let in_phase: Vec<&&Action> = actions.iter().filter(|a| a.phase == phase).collect();
        if in_phase.is_empty() {
            continue;
        }
        writeln!(out, "**{}**", text(phase.title()))?;
        writeln!(out)?;
        for action in in_phase {
            let head = format!("{} {}", action.effect().symbol(), action.object(&plan.namespace));
            let mut line = format!("- {}: {}", code(&head), text(&action.reason));
            if action.forces() {
                line += " **forces**: takes the field over from its other manager (`--force-conflicts`)";
            }
            if action.is_destructive() {
                line += " **destructive**: needs `apply --allow-detach`";
            }
            writeln!(out, "{line}")?;
            if let Some(note) = super::ca_certs_note(&action.kind) {
                writeln!(out, "  {}", text(&note))?;
            }
            if let ActionKind::RestartWorkloads { enabled, command, .. }
            | ActionKind::RestartIstiod { enabled, command, .. } = &action.kind
            {
                writeln!(out)?;
                writeln!(out, "  {}", restart_note(*enabled))?;
                writeln!(out)?;
                let fence = fence(command);
                writeln!(out, "  {fence}sh")?;
                writeln!(out, "  {command}")?;
                writeln!(out, "  {fence}")?;
            }
        }
        writeln!(out)?;
    }
    writeln!(out, "</details>")?;
    writeln!(out)
}

/// A code span that holds any text: the fence is longer than any run of
/// backticks inside.
fn code(text: &str) -> String {
    let fence = "`".repeat(longest_backtick_run(text) + 1);
    let pad = if text.starts_with('`') || text.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{text}{pad}{fence}")
}

/// A code span inside a table cell, where GFM splits on `|` even in code.
fn cell_code(text: &str) -> String {
    code(text).replace('|', "\\|")
}

fn fence(block: &str) -> String {
    "`".repeat((longest_backtick_run(block) + 1).max(3))
}

fn longest_backtick_run(text: &str) -> usize {
    text.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

/// Prose with markdown's inline syntax escaped: reasons quote names and
/// addresses, which may hold `_`, `*` or `|`. Balanced backticks (help
/// texts write `api_server`) stay code spans.
fn text(prose: &str) -> String {
    let pieces: Vec<&str> = prose.split('`').collect();
    if pieces.len().is_multiple_of(2) {
        return escape(prose);
    }
    pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| if i % 2 == 1 { code(piece) } else { escape(piece) })
        .collect()
}

fn escape(prose: &str) -> String {
    let mut out = String::with_capacity(prose.len());
    for c in prose.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '~' | '#' | '&' | '!' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn html(raw: &str) -> String {
    raw.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::scenarios;

    fn render(plan: &Plan, topology: &Topology) -> String {
        let mut out = Vec::new();
        super::plan(plan, topology, None, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn snapshots() {
        for (name, (plan, topology)) in scenarios::all() {
            scenarios::settings()
                .bind(|| insta::assert_snapshot!(format!("markdown__{name}"), render(&plan, &topology)));
        }
    }

    #[test]
    fn starts_with_the_marker_ci_looks_for() {
        let (plan, topology) = scenarios::fresh();
        assert!(render(&plan, &topology).starts_with("<!-- meshform-plan mesh=mesh1 -->\n"));
    }

    #[test]
    fn values_cannot_break_the_markup() {
        assert_eq!(code("a`b"), "``a`b``");
        assert_eq!(code("`x"), "`` `x ``");
        assert_eq!(cell_code("a|b"), "`a\\|b`");
        assert_eq!(text("eu_flat *x* | <b> [l](u)"), r"eu\_flat \*x\* \| \<b\> \[l\](u)");
        assert_eq!(text("set `api_server` of a_b"), r"set `api_server` of a\_b");
        assert_eq!(text("one ` tick_"), r"one \` tick\_");
        assert_eq!(html("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
        assert_eq!(fence("```x```"), "````");
        assert_eq!(marker("m"), "<!-- meshform-plan mesh=m -->");
    }

    #[test]
    fn table_has_a_row_per_cluster_including_leavers() {
        let (plan, topology) = scenarios::detach();
        let markdown = render(&plan, &topology);
        assert!(
            markdown.contains("| `apac` | — | not in mesh.toml | — | — | 0 | `-` detach |"),
            "{markdown}"
        );
    }
}
