//! Views. Renderers take data (problems, a plan, a topology, apply's events)
//! and write text to any writer; they never decide anything and never do I/O
//! of their own (apply's progress bar, drawn when the CLI says there is a
//! terminal, is the one exception).
//! What a plan means (counts, groupings) comes from methods on
//! [`Plan`]; this module only words it.

pub mod apply;
pub mod check;
pub mod controller;
pub mod diagnostics;
pub mod graph;
pub mod json;
pub mod markdown;
pub mod text;

#[cfg(test)]
pub(crate) mod scenarios;

use std::io::{self, Write};

use crate::plan::{Change, Plan, Tally};
use crate::topology::Topology;

/// How text output should look; decided once by the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    pub color: bool,
    /// Terminal width for wrapping diagnostics.
    pub width: usize,
}

impl Style {
    /// No colour, 100 columns: what tests and pipes get.
    pub const PLAIN: Style = Style {
        color: false,
        width: 100,
    };
}

/// The views of a plan (`plan --format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Terraform-like text for a terminal.
    Text,
    /// A pull-request comment, with a Mermaid diagram of the mesh.
    Markdown,
    /// The plan itself, as in `schemas/plan.schema.json`.
    Json,
}

/// Writes `plan` in `format`. `topology` is the one the plan was made from:
/// views take roles and networks from it, and markdown each network's
/// gateway from `observed` when given. Only text uses `style`; markdown
/// and JSON are never coloured.
pub fn plan(
    format: Format,
    plan: &Plan,
    topology: &Topology,
    observed: Option<&crate::observe::model::Observed>,
    style: Style,
    out: &mut dyn Write,
) -> io::Result<()> {
    match format {
        Format::Text => text::plan(plan, topology, style, out),
        Format::Markdown => markdown::plan(plan, topology, observed, out),
        Format::Json => json::plan(plan, out),
    }
}

/// `n thing` or `n things`.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The plan in one line without the leading "Plan: ", e.g. `2 attach, 1
/// detach, 1 network change (detach + re-attach), 7 writes`; `None` when the
/// plan does nothing at all.
fn summary(tally: &Tally) -> Option<String> {
    let mut parts = Vec::new();
    // Attach and detach read as verbs ("2 attach"), as Terraform's "2 to add".
    if tally.attach > 0 {
        parts.push(format!("{} attach", tally.attach));
    }
    if tally.detach > 0 {
        parts.push(format!("{} detach", tally.detach));
    }
    if tally.network_changes > 0 {
        parts.push(count(tally.network_changes, "network change", "network changes") + " (detach + re-attach)");
    }
    if tally.renames > 0 {
        parts.push(count(tally.renames, "rename", "renames") + " (detach + attach)");
    }
    if tally.became_remote > 0 {
        parts.push(count(
            tally.became_remote,
            "primary becomes remote",
            "primaries become remote",
        ));
    }
    if tally.writes == 0 && tally.manual_steps == 0 {
        return None;
    }
    parts.push(count(tally.writes, "write", "writes"));
    if tally.manual_steps > 0 {
        parts.push(count(tally.manual_steps, "step to run by hand", "steps to run by hand"));
    }
    Some(parts.join(", "))
}

/// The symbol of a cluster-level change, in the same vocabulary as actions.
fn change_symbol(change: &Change) -> &'static str {
    match change {
        Change::Attach { .. } => "+",
        Change::Detach { .. } => "-",
        Change::NetworkChange { .. } | Change::Rename { .. } => "-/+",
        Change::BecameRemote { .. } => "~",
    }
}

/// What apply does with a workload restart, for every view that shows one.
fn restart_note(enabled: bool) -> &'static str {
    if enabled {
        "apply runs it (--restart-workloads):"
    } else {
        "runs only with `apply --restart-workloads`; otherwise run it yourself after apply:"
    }
}

/// What a `cacerts` write issues: subject, root, expiry (never a key: the
/// plan has none), for every view that shows one; a rotation's writes name
/// their stage and the roots `root-cert.pem` holds.
fn ca_certs_note(kind: &crate::plan::ActionKind) -> Option<String> {
    let crate::plan::ActionKind::WriteCaCerts {
        mode,
        subject,
        root_sha256: root,
        previous_root_sha256: previous,
        expires_about,
        replaces,
        ..
    } = kind
    else {
        return None;
    };
    let short = |sha: &str| format!("sha256:{}", &sha[..sha.len().min(16)]);
    let at = |t: &jiff::Timestamp| t.strftime("%Y-%m-%d %H:%M UTC").to_string();
    let mut note = match mode.rotation_stage() {
        Some((n, name)) => format!("stage {n} of 3 ({name}): "),
        None => String::new(),
    };
    if *mode == crate::plan::CaCertsMode::TrustBoth {
        if let Some(kept) = replaces {
            note += &format!(
                "keeps intermediate {} (ends {})",
                short(&kept.sha256),
                at(&kept.not_after)
            );
        }
    } else {
        note += &format!(
            "issues \"{subject}\" signed by root {}, valid until about {}",
            short(root),
            at(expires_about)
        );
        if let Some(old) = replaces {
            note += &format!("; replaces {} (ends {})", short(&old.sha256), at(&old.not_after));
        }
    }
    match previous {
        Some(previous) => note += &format!("; trusts roots {} and {}", short(previous), short(root)),
        None if mode.rotation_stage().is_some() => note += &format!("; trusts root {} alone", short(root)),
        None => {}
    }
    Some(note)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_words_every_count() {
        let tally = Tally {
            attach: 2,
            detach: 1,
            network_changes: 1,
            renames: 2,
            became_remote: 1,
            writes: 7,
            manual_steps: 1,
        };
        assert_eq!(
            summary(&tally).unwrap(),
            "2 attach, 1 detach, 1 network change (detach + re-attach), 2 renames (detach + attach), \
             1 primary becomes remote, 7 writes, 1 step to run by hand"
        );
        assert_eq!(summary(&Tally::default()), None);
        let one = Tally {
            writes: 1,
            ..Tally::default()
        };
        assert_eq!(summary(&one).unwrap(), "1 write");
    }
}
