//! The controller's events as JSON lines, one object per event, for log
//! pipelines (`kubectl logs` piped to jq, Loki, Cloud Logging). Topology
//! problems keep their codes, messages and help; rounds name clusters and
//! objects and say why, and carry no object data.

use std::io::{self, Write};

use serde_json::json;

use crate::controller::Event;

/// The first line: where metrics and probes are served.
pub fn serving(address: std::net::SocketAddr, out: &mut dyn Write) -> io::Result<()> {
    serde_json::to_writer(&mut *out, &json!({"event": "serving", "address": address.to_string()}))?;
    writeln!(out)?;
    out.flush()
}

/// Writes `event` as one line of JSON.
pub fn event(event: &Event<'_>, out: &mut dyn Write) -> io::Result<()> {
    let value = match event {
        Event::Loaded {
            file,
            topology,
            warnings,
        } => json!({
            "event": "loaded",
            "file": file.display().to_string(),
            "mesh": topology.mesh.name,
            "clusters": topology.clusters.len(),
            "warnings": warnings.problems,
        }),
        Event::Invalid { file, problems, kept } => json!({
            "event": "invalid",
            "file": file.display().to_string(),
            "message": problems.to_string(),
            "kept_last_good": kept,
            "diagnostics": problems.problems,
        }),
        Event::Unreadable { file, reason, kept } => json!({
            "event": "unreadable",
            "file": file.display().to_string(),
            "message": format!("cannot read {}: {reason}", file.display()),
            "kept_last_good": kept,
        }),
        Event::Round { round, .. } => {
            let mut value = serde_json::to_value(round).map_err(io::Error::other)?;
            value["event"] = "round".into();
            value
        }
        Event::ElectionFailed { reason } => json!({"event": "election_failed", "message": reason}),
        Event::Leading { lease } => json!({"event": "leading", "lease": lease}),
        Event::LostLeadership => json!({"event": "lost_leadership"}),
        Event::Stopped => json!({"event": "stopped"}),
    };
    serde_json::to_writer(&mut *out, &value)?;
    writeln!(out)?;
    out.flush()
}
