//! Topology problems as text (miette's graphical report) and as JSON.

use std::io::{self, Write};

use miette::{GraphicalReportHandler, GraphicalTheme};
use serde::Serialize;

use super::Style;
use crate::topology::{Problem, Problems, Topology};

/// Writes every problem, each with its code, labelled source lines and help.
pub fn text(problems: &Problems, style: Style, out: &mut dyn Write) -> io::Result<()> {
    if problems.problems.is_empty() {
        return Ok(());
    }
    let theme = if style.color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(style.width)
        .with_links(false);
    let mut rendered = String::new();
    handler
        .render_report(&mut rendered, problems)
        .map_err(|e| io::Error::other(format!("cannot render diagnostics: {e}")))?;
    out.write_all(rendered.as_bytes())
}

/// The `validate --format json` document.
#[derive(Debug, Serialize)]
pub struct ValidationReport<'a> {
    /// Bumped on any breaking change to this document.
    pub format_version: u32,
    pub file: &'a str,
    pub valid: bool,
    pub errors: usize,
    pub warnings: usize,
    pub diagnostics: &'a [Problem],
    /// The topology with every default filled in; absent when invalid.
    pub topology: Option<&'a Topology>,
}

pub fn json(problems: &Problems, topology: Option<&Topology>, out: &mut dyn Write) -> io::Result<()> {
    let report = ValidationReport {
        format_version: 1,
        file: problems.source.name(),
        valid: topology.is_some(),
        errors: problems.errors(),
        warnings: problems.warnings(),
        diagnostics: &problems.problems,
        topology,
    };
    serde_json::to_writer_pretty(&mut *out, &report)?;
    writeln!(out)
}
