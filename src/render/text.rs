//! The plan as text for a terminal, in Terraform's manner: the cluster-level
//! changes, then every action by phase with its symbol and reason, then what
//! stands in the way (findings, deferred clusters) and a one-line summary.
//! Colour is decoration only: the plain text says everything.

use std::io::{self, Write};

use super::{Style, ca_certs_note, change_symbol, count, restart_note, summary};
use crate::plan::{Action, ActionKind, Change, Effect, FindingKind, Phase, Plan};
use crate::topology::Topology;

/// SGR colours. No dependency: these few ECMA-48 codes are all a plan needs.
#[derive(Debug, Clone, Copy)]
pub(super) enum Tone {
    Bold,
    Dim,
    Red,
    Green,
    Yellow,
    Cyan,
    Magenta,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Paint(pub(super) bool);

impl Paint {
    pub(super) fn paint(self, tone: Tone, text: &str) -> String {
        if !self.0 || text.is_empty() {
            return text.to_string();
        }
        let code = match tone {
            Tone::Bold => "1",
            Tone::Dim => "2",
            Tone::Red => "31",
            Tone::Green => "32",
            Tone::Yellow => "33",
            Tone::Cyan => "36",
            Tone::Magenta => "35",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }

    fn symbol(self, symbol: &str) -> String {
        let tone = match symbol {
            "+" => Tone::Green,
            "~" => Tone::Yellow,
            "-" => Tone::Red,
            "-/+" => Tone::Magenta,
            _ => Tone::Cyan,
        };
        self.paint(tone, symbol)
    }
}

/// Writes the plan; see the module documentation for its layout.
pub fn plan(plan: &Plan, topology: &Topology, style: Style, out: &mut dyn Write) -> io::Result<()> {
    let p = Paint(style.color);
    writeln!(
        out,
        "{} for mesh {:?} (namespace {}): {} on {}",
        p.paint(Tone::Bold, "meshform plan"),
        plan.mesh,
        plan.namespace,
        count(topology.clusters.len(), "cluster", "clusters"),
        count(topology.networks.len(), "network", "networks"),
    )?;

    if !plan.actions.is_empty() {
        writeln!(out)?;
        legend(plan, p, out)?;
    }
    if !plan.changes.is_empty() {
        writeln!(out)?;
        writeln!(out, "{}", p.paint(Tone::Bold, "Changes:"))?;
        let width = plan.changes.iter().map(|c| change_symbol(c).len()).max().unwrap_or(1);
        for change in &plan.changes {
            let symbol = change_symbol(change);
            let pad = " ".repeat(width - symbol.len());
            writeln!(out, "  {}{pad} {}", p.symbol(symbol), describe_change(change))?;
        }
    }
    for (number, phase) in Phase::ALL.into_iter().enumerate() {
        let mut actions = plan.phase(phase).peekable();
        if actions.peek().is_none() {
            continue;
        }
        writeln!(out)?;
        let title = format!("Phase {} of {}: {}", number + 1, Phase::ALL.len(), phase.title());
        writeln!(out, "{}", p.paint(Tone::Bold, &title))?;
        for action in actions {
            self::action(action, &plan.namespace, p, out)?;
        }
    }

    findings(plan, p, out)?;
    if !plan.deferred.is_empty() {
        writeln!(out)?;
        let title = "Deferred clusters (could not be read; nothing is planned for them or removed on their account):";
        writeln!(out, "{}", p.paint(Tone::Bold, title))?;
        for deferred in &plan.deferred {
            writeln!(
                out,
                "  {}: {}",
                p.paint(Tone::Magenta, &deferred.cluster),
                deferred.reason
            )?;
        }
    }

    writeln!(out)?;
    let tally = plan.tally();
    match summary(&tally) {
        Some(line) => writeln!(out, "{}", p.paint(Tone::Bold, &format!("Plan: {line}.")))?,
        None if plan.findings.iter().all(|f| f.kind == FindingKind::Warning) && plan.deferred.is_empty() => writeln!(
            out,
            "{}",
            p.paint(Tone::Green, "No changes. The mesh matches mesh.toml.")
        )?,
        None => writeln!(
            out,
            "No changes planned, but the mesh does not match mesh.toml yet: see the findings and deferred clusters above."
        )?,
    }
    let blockers = plan.blockers().count();
    if blockers > 0 {
        let until = if blockers == 1 {
            "the blocker is".to_string()
        } else {
            format!("the {blockers} blockers are")
        };
        let line = match plan.free_writes() {
            0 => format!("Apply refuses this plan until {until} fixed."),
            free => format!(
                "Until {until} fixed, apply makes only the {free} write(s) of maintenance no blocker concerns and holds back the rest."
            ),
        };
        writeln!(out, "{}", p.paint(Tone::Red, &line))?;
    }
    Ok(())
}

/// One change in words; cluster names are DNS labels and go bare, network
/// names are quoted as in the actions' reasons.
fn describe_change(change: &Change) -> String {
    match change {
        Change::Attach { cluster, network } => format!("attach {cluster} on network {network:?}"),
        Change::Detach { cluster } => format!("detach {cluster} (it is no longer in the topology)"),
        Change::NetworkChange { cluster, from, to } if from.is_empty() => {
            format!("{cluster} moves from the default network (no label) to {to:?} (detach + re-attach)")
        }
        Change::NetworkChange { cluster, from, to } => {
            format!("{cluster} moves from network {from:?} to {to:?} (detach + re-attach)")
        }
        Change::Rename { from, to } => format!("rename {from} to {to} (detach + attach)"),
        Change::BecameRemote { cluster } => format!("{cluster} becomes a remote (its remote secrets are removed)"),
    }
}

/// Terraform's symbol legend, for the symbols this plan uses.
fn legend(plan: &Plan, p: Paint, out: &mut dyn Write) -> io::Result<()> {
    let used: Vec<Effect> = plan.actions.iter().map(Action::effect).collect();
    let mut items = Vec::new();
    for (effect, meaning) in [
        (Effect::Create, "create"),
        (Effect::Update, "update"),
        (Effect::Delete, "delete"),
        (Effect::Run, "run a step"),
    ] {
        if used.contains(&effect) {
            items.push(format!("{} {meaning}", p.symbol(effect.symbol())));
        }
    }
    if plan.changes.iter().any(|c| change_symbol(c) == "-/+") {
        items.push(format!("{} detach and attach again", p.symbol("-/+")));
    }
    writeln!(out, "Symbols: {}", items.join(", "))
}

fn action(action: &Action, namespace: &str, p: Paint, out: &mut dyn Write) -> io::Result<()> {
    let mut line = format!(
        "  {} {} in {}",
        p.symbol(action.effect().symbol()),
        action.object(namespace),
        action.cluster
    );
    if action.forces() {
        line += &format!(
            " {}",
            p.paint(
                Tone::Yellow,
                "(takes the field over from its other manager: --force-conflicts)"
            )
        );
    }
    if action.is_destructive() {
        line += &format!(" {}", p.paint(Tone::Red, "(destructive: needs apply --allow-detach)"));
    }
    if let ActionKind::RestartWorkloads { enabled: false, .. } | ActionKind::RestartIstiod { enabled: false, .. } =
        action.kind
    {
        line += &format!(" {}", p.paint(Tone::Yellow, "(not run by apply)"));
    }
    writeln!(out, "{line}")?;
    writeln!(out, "      {}", p.paint(Tone::Dim, &action.reason))?;
    if let Some(note) = ca_certs_note(&action.kind) {
        writeln!(out, "      {}", p.paint(Tone::Dim, &note))?;
    }
    if let ActionKind::RestartWorkloads { enabled, command, .. } | ActionKind::RestartIstiod { enabled, command, .. } =
        &action.kind
    {
        writeln!(out, "      {}", restart_note(*enabled))?;
        // Never wrapped: it is meant to be copied and pasted.
        writeln!(out, "        {command}")?;
    }
    Ok(())
}

fn findings(plan: &Plan, p: Paint, out: &mut dyn Write) -> io::Result<()> {
    let blockers = if plan.blockers().next().is_some() && plan.free_writes() > 0 {
        "Blockers (apply holds back what they concern, and every change, until they are fixed):"
    } else {
        "Blockers (apply refuses the plan until they are fixed):"
    };
    for (kind, title, word, tone) in [
        (FindingKind::Blocker, blockers, "blocker", Tone::Red),
        (
            FindingKind::Conflict,
            "Conflicts (objects meshform does not manage; left as they are):",
            "conflict",
            Tone::Yellow,
        ),
        (FindingKind::Warning, "Warnings:", "warning", Tone::Yellow),
    ] {
        let mut found = plan.findings_of(kind).peekable();
        if found.peek().is_none() {
            continue;
        }
        writeln!(out)?;
        writeln!(out, "{}", p.paint(Tone::Bold, title))?;
        for finding in found {
            let place = finding
                .cluster
                .as_deref()
                .map(|c| format!(" in {c}"))
                .unwrap_or_default();
            writeln!(out, "  {}{place}: {}", p.paint(tone, word), finding.message)?;
            if let Some(help) = &finding.help {
                writeln!(out, "      help: {help}")?;
            }
            writeln!(out, "      {}", p.paint(Tone::Dim, &format!("code: {}", finding.code)))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{Style, scenarios};

    fn render(plan: &Plan, topology: &Topology, style: Style) -> String {
        let mut out = Vec::new();
        super::plan(plan, topology, style, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn snapshots() {
        for (name, (plan, topology)) in scenarios::all() {
            scenarios::settings()
                .bind(|| insta::assert_snapshot!(format!("text__{name}"), render(&plan, &topology, Style::PLAIN)));
        }
    }

    // Issue 29: a blocker about apac alone leaves the other pairs'
    // rotations free; the plan says so instead of "apply refuses".
    #[test]
    fn a_plan_whose_blockers_leave_maintenance_free_says_what_apply_makes() {
        let (plan, topology) = scenarios::blocked_rotation();
        let text = render(&plan, &topology, Style::PLAIN);
        assert!(
            text.contains("Blockers (apply holds back what they concern, and every change, until they are fixed):"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "Until the blocker is fixed, apply makes only the 4 write(s) of maintenance no blocker concerns and holds back the rest.\n"
            ),
            "{text}"
        );
        let (plan, topology) = scenarios::findings();
        let text = render(&plan, &topology, Style::PLAIN);
        assert!(
            text.ends_with("Apply refuses this plan until the blocker is fixed.\n"),
            "{text}"
        );
    }

    #[test]
    fn converged_mesh_has_no_changes() {
        let (plan, topology) = scenarios::converged();
        let text = render(&plan, &topology, Style::PLAIN);
        assert!(text.ends_with("\nNo changes. The mesh matches mesh.toml.\n"), "{text}");
    }

    #[test]
    fn network_change_runs_detach_relabel_reattach_then_restart() {
        let (plan, topology) = scenarios::network_change();
        let text = render(&plan, &topology, Style::PLAIN);
        let at = |needle: &str| {
            text.find(needle)
                .unwrap_or_else(|| panic!("{needle:?} missing from\n{text}"))
        };
        let detach = at("  - Secret istio-system/istio-remote-secret-us-east in eu-west");
        let relabel = at("  ~ Namespace istio-system in us-east");
        let attach = at("  + Secret istio-system/istio-remote-secret-us-east in eu-west");
        let restart = at("  ! injected workloads in us-east");
        assert!(detach < relabel && relabel < attach && attach < restart, "{text}");
        assert!(text.contains("runs only with `apply --restart-workloads`"));
        assert!(text.contains("rollout restart deployment,statefulset,daemonset"));
        assert!(text.contains("(detach + re-attach)"));
    }

    #[test]
    fn colour_only_when_asked() {
        let (plan, topology) = scenarios::network_change();
        let plain = render(&plan, &topology, Style::PLAIN);
        assert!(!plain.contains('\x1b'));
        let coloured = render(
            &plan,
            &topology,
            Style {
                color: true,
                ..Style::PLAIN
            },
        );
        assert!(coloured.contains("\x1b[31m-\x1b[0m Secret"));
        // Colour adds codes and nothing else.
        let stripped = regex_free_strip(&coloured);
        assert_eq!(stripped, plain);
    }

    fn regex_free_strip(text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("\x1b[") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('m').unwrap();
            rest = &rest[start + end + 1..];
        }
        out + rest
    }
}
