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
    let truncated = problems.problems.len() > MAX_SHOWN;
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
        .render_report(&mut rendered, &FirstProblems(problems))
        .map_err(|e| io::Error::other(format!("cannot render diagnostics: {e}")))?;
    out.write_all(rendered.as_bytes())?;
    if truncated {
        writeln!(
            out,
            "{} has {} problems; the first {MAX_SHOWN} are shown, `meshform validate --format json` lists them all",
            problems.source.name(),
            problems.problems.len(),
        )?;
    }
    Ok(())
}

/// [`Problems`] with only the first [`MAX_SHOWN`] related diagnostics; the
/// headline still counts them all.
#[derive(Debug)]
struct FirstProblems<'a>(&'a Problems);

impl std::fmt::Display for FirstProblems<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for FirstProblems<'_> {}

impl miette::Diagnostic for FirstProblems<'_> {
    fn code<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.0.code()
    }

    fn severity(&self) -> Option<miette::Severity> {
        self.0.severity()
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.0.source_code()
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        Some(Box::new(
            self.0
                .problems
                .iter()
                .take(MAX_SHOWN)
                .map(|p| p as &dyn miette::Diagnostic),
        ))
    }
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
