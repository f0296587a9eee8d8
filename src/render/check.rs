//! The checklist of `meshform check`: text for a terminal, in the manner of
//! `linkerd check` (a mark, the check, what was found or what is wrong and
//! its fix), and JSON for scripts.

use std::io::{self, Write};

use super::Style;
use super::text::{Paint, Tone};
use crate::check::{APPLY, Check, Checklist, Status};

/// Version of the JSON form; bumped on any breaking change.
pub const CHECK_FORMAT_VERSION: u32 = 1;

/// Wide enough for the longest check title.
const TITLE_WIDTH: usize = 18;

pub fn text(checklist: &Checklist, style: Style, out: &mut dyn Write) -> io::Result<()> {
    let p = Paint(style.color);
    writeln!(
        out,
        "{} for mesh {:?} (namespace {}), as read at {}",
        p.paint(Tone::Bold, "meshform check"),
        checklist.mesh,
        checklist.namespace,
        checklist.observed_at
    )?;
    for cluster in &checklist.clusters {
        writeln!(out)?;
        let heading = format!("cluster {}", cluster.cluster);
        writeln!(
            out,
            "{} ({}, network {:?})",
            p.paint(Tone::Bold, &heading),
            match cluster.role {
                crate::topology::Role::Primary => "primary",
                crate::topology::Role::Remote => "remote",
            },
            cluster.network
        )?;
        checks(&cluster.checks, p, out)?;
    }
    for network in checklist.networks.iter().filter(|n| !n.checks.is_empty()) {
        writeln!(out)?;
        let heading = format!("network {}", network.network);
        writeln!(
            out,
            "{} ({})",
            p.paint(Tone::Bold, &heading),
            network.clusters.join(", ")
        )?;
        checks(&network.checks, p, out)?;
    }
    writeln!(out)?;
    writeln!(out, "{}", p.paint(Tone::Bold, "mesh"))?;
    checks(&checklist.mesh_checks, p, out)?;

    writeln!(out)?;
    let (failed, warned, skipped, passed) = (
        checklist.count(Status::Fail),
        checklist.count(Status::Warn),
        checklist.count(Status::Skipped),
        checklist.count(Status::Pass),
    );
    let mut parts = vec![format!("{passed} passed")];
    if warned > 0 {
        parts.push(format!("{warned} with warnings"));
    }
    if skipped > 0 {
        parts.push(format!("{skipped} skipped"));
    }
    parts.push(format!("{failed} failed"));
    let verdict = if checklist.passed() {
        p.paint(Tone::Green, "The mesh is ready")
    } else {
        p.paint(Tone::Red, "The mesh is not ready")
    };
    writeln!(out, "{verdict}: {}.", parts.join(", "))?;
    let pending: Vec<&str> = checklist
        .checks()
        .flat_map(|c| &c.problems)
        .filter(|p| p.code == APPLY)
        .filter_map(|p| p.fix.as_deref())
        .collect();
    if !pending.is_empty() {
        let command = if pending.iter().any(|f| f.contains("--allow-detach")) {
            "meshform apply --allow-detach"
        } else {
            "meshform apply"
        };
        writeln!(
            out,
            "{} pending write(s): `meshform plan` shows them, `{command}` makes them.",
            pending.len()
        )?;
    }
    Ok(())
}

fn checks(checks: &[Check], p: Paint, out: &mut dyn Write) -> io::Result<()> {
    for check in checks {
        let title = check.id.title();
        let pad = " ".repeat(TITLE_WIDTH.saturating_sub(title.chars().count()));
        let summary = if check.summary.is_empty() {
            String::new()
        } else {
            format!("{pad}{}", check.summary)
        };
        writeln!(out, "  {} {title}{summary}", mark(check.status, p))?;
        for problem in &check.problems {
            let bullet = if problem.status == Status::Fail { "-" } else { "!" };
            if problem.code == APPLY {
                // One fix for all of them, in the footer.
                writeln!(out, "         {bullet} apply would write {}", problem.message)?;
                continue;
            }
            writeln!(out, "         {bullet} {}", problem.message)?;
            if let Some(fix) = &problem.fix {
                writeln!(out, "           {} {fix}", p.paint(Tone::Dim, "fix:"))?;
            }
        }
    }
    Ok(())
}

/// ASCII marks, so that a CI log or a pipe shows them as well as a terminal.
fn mark(status: Status, p: Paint) -> String {
    match status {
        Status::Pass => p.paint(Tone::Green, "[ok]  "),
        Status::Warn => p.paint(Tone::Yellow, "[warn]"),
        Status::Skipped => p.paint(Tone::Dim, "[skip]"),
        Status::Fail => p.paint(Tone::Red, "[FAIL]"),
    }
}

pub fn json(checklist: &Checklist, out: &mut dyn Write) -> io::Result<()> {
    let mut value = serde_json::to_value(checklist).expect("a checklist serialises");
    if let serde_json::Value::Object(map) = &mut value {
        map.insert("format_version".into(), CHECK_FORMAT_VERSION.into());
        map.insert("passed".into(), checklist.passed().into());
    }
    serde_json::to_writer_pretty(&mut *out, &value)?;
    writeln!(out)
}
