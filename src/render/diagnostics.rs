//! Topology problems as text (miette's graphical report) and as JSON.

use std::io::{self, Write};

use miette::{GraphicalReportHandler, GraphicalTheme};
use serde::Serialize;

use super::Style;
use crate::topology::{Problem, Problems, Topology};

/// At most this many problems are rendered as text; JSON has them all.
/// Rendering quotes the source around each label, and a hostile file of
/// tens of thousands of bad names otherwise took minutes and megabytes.
pub const MAX_SHOWN: usize = 100;

/// Writes the problems (the first [`MAX_SHOWN`]), each with its code,
/// labelled source lines and help.
pub fn text(problems: &Problems, style: Style, out: &mut dyn Write) -> io::Result<()> {
    if problems.problems.is_empty() {
        return Ok(());
    }
    if problems.problems.len() > MAX_SHOWN {
        let shown = Problems {
            source: miette::NamedSource::new(problems.source.name(), problems.source.inner().clone()),
            problems: problems.problems[..MAX_SHOWN].to_vec(),
        };
        text(&shown, style, out)?;
        return writeln!(
            out,
            "{} has {} problems ({} errors); the first {MAX_SHOWN} are shown, \
             `meshform validate --format json` lists them all",
            problems.source.name(),
            problems.problems.len(),
            problems.errors()
        );
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
