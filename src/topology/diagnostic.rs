//! Problems found in a topology file, as miette diagnostics.
//!
//! Every problem carries a stable code, the TOML path it is about, labelled
//! byte spans into the file and, where one exists, the fix. Nothing here
//! renders: the binary picks miette's graphical handler, `--format json`
//! serialises [`Problem`]s directly.

use std::fmt;
use std::ops::Range;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceCode};
use serde::Serialize;

/// Stable identifiers for every kind of topology problem. The string form
/// (`meshform::topology::<name>`) is part of meshform's interface: scripts
/// match on it in `validate --format json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(into = "String")]
pub enum Code {
    /// The file is larger than meshform reads.
    TooLarge,
    /// The file is not UTF-8.
    NotUtf8,
    /// The file has no content.
    Empty,
    /// The file is not valid TOML.
    Syntax,
    /// A key meshform does not know.
    UnknownKey,
    /// A required key is missing.
    MissingKey,
    /// A value of the wrong TOML type.
    WrongType,
    /// A value outside what the key accepts (an enum, a number range).
    InvalidValue,
    /// A name that the Kubernetes API server would reject.
    InvalidName,
    /// Two clusters with the same mesh name.
    DuplicateCluster,
    /// Two clusters on the same kubeconfig context and file.
    DuplicateContext,
    /// A network name that is not a valid label value.
    InvalidNetwork,
    /// Remote clusters but no primary to hold their remote secrets.
    NoPrimary,
    /// No clusters at all.
    EmptyMesh,
    /// A `[network.*]` table that no cluster uses.
    UnusedNetwork,
    /// An `api_server` that is not an https URL.
    InvalidApiServer,
    /// A `kubeconfig` path meshform will not follow.
    InvalidKubeconfig,
    /// A remote cluster on the ambient data plane, which Istio does not support.
    AmbientRemote,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::TooLarge => "meshform::topology::too_large",
            Code::NotUtf8 => "meshform::topology::not_utf8",
            Code::Empty => "meshform::topology::empty",
            Code::Syntax => "meshform::topology::syntax",
            Code::UnknownKey => "meshform::topology::unknown_key",
            Code::MissingKey => "meshform::topology::missing_key",
            Code::WrongType => "meshform::topology::wrong_type",
            Code::InvalidValue => "meshform::topology::invalid_value",
            Code::InvalidName => "meshform::topology::invalid_name",
            Code::DuplicateCluster => "meshform::topology::duplicate_cluster",
            Code::DuplicateContext => "meshform::topology::duplicate_context",
            Code::InvalidNetwork => "meshform::topology::invalid_network",
            Code::NoPrimary => "meshform::topology::no_primary",
            Code::EmptyMesh => "meshform::topology::empty_mesh",
            Code::UnusedNetwork => "meshform::topology::unused_network",
            Code::InvalidApiServer => "meshform::topology::invalid_api_server",
            Code::InvalidKubeconfig => "meshform::topology::invalid_kubeconfig",
            Code::AmbientRemote => "meshform::topology::ambient_remote",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Code> for String {
    fn from(code: Code) -> String {
        code.as_str().to_string()
    }
}

/// How bad a problem is. Warnings never fail `validate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// Values longer than this are shortened where a message quotes them.
const MAX_QUOTED: usize = 80;

/// `value` for a message: as Rust quotes it (so control and invisible
/// characters show as escapes), shortened when long. A hostile file's
/// 300 000-character name must not come back three times per problem.
pub fn quoted(value: &str) -> String {
    format!("{:?}", Elided(value))
}

/// `value` shortened like [`quoted`], without the quotes.
pub fn elided(value: &str) -> String {
    format!("{}", Elided(value))
}

struct Elided<'a>(&'a str);

impl Elided<'_> {
    fn parts(&self) -> (&str, Option<usize>) {
        let count = self.0.chars().count();
        if count <= MAX_QUOTED {
            return (self.0, None);
        }
        let cut = self
            .0
            .char_indices()
            .nth(MAX_QUOTED - 20)
            .map_or(self.0.len(), |(i, _)| i);
        (&self.0[..cut], Some(count))
    }
}

impl fmt::Display for Elided<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.parts() {
            (text, None) => f.write_str(text),
            (text, Some(count)) => write!(f, "{text}… ({count} characters)"),
        }
    }
}

impl fmt::Debug for Elided<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.parts() {
            (text, None) => write!(f, "{text:?}"),
            (text, Some(count)) => write!(f, "{:?}… ({count} characters)", text),
        }
    }
}

/// A labelled byte range of the topology file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Label {
    pub message: String,
    /// Byte offset into the file.
    pub offset: usize,
    pub length: usize,
    /// 1-based line and column, filled in for JSON output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

/// One problem in a topology file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub code: Code,
    pub severity: Severity,
    pub message: String,
    /// TOML path of the key concerned, such as `cluster[2].name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub labels: Vec<Label>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

impl Problem {
    pub fn error(code: Code, message: impl Into<String>) -> Self {
        Problem {
            code,
            severity: Severity::Error,
            message: message.into(),
            path: None,
            labels: Vec::new(),
            help: None,
        }
    }

    pub fn warning(code: Code, message: impl Into<String>) -> Self {
        Problem {
            severity: Severity::Warning,
            ..Problem::error(code, message)
        }
    }

    pub fn at(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    pub fn label(mut self, span: Range<usize>, message: impl Into<String>) -> Self {
        self.labels.push(Label {
            message: message.into(),
            offset: span.start,
            length: span.end.saturating_sub(span.start),
            line: None,
            column: None,
        });
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Fills in line and column of each label from the file's text.
    pub(crate) fn locate(&mut self, text: &str) {
        self.locate_in(text, &LineStarts::of(text));
    }

    /// [`Problem::locate`] with the line index built once for all problems of
    /// a file: scanning the text from the start for every label made a file
    /// with tens of thousands of problems take minutes.
    pub(crate) fn locate_in(&mut self, text: &str, lines: &LineStarts) {
        for label in &mut self.labels {
            let offset = label.offset.min(text.len());
            let line = lines.0.partition_point(|&start| start <= offset);
            let line_start = lines.0[line - 1];
            let column = String::from_utf8_lossy(&text.as_bytes()[line_start..offset])
                .chars()
                .count()
                + 1;
            label.line = Some(line);
            label.column = Some(column);
        }
    }
}

/// Byte offsets at which the lines of a text start.
pub(crate) struct LineStarts(Vec<usize>);

impl LineStarts {
    pub(crate) fn of(text: &str) -> LineStarts {
        let starts = std::iter::once(0).chain(
            text.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i + 1),
        );
        LineStarts(starts.collect())
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Problem {}

impl Diagnostic for Problem {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.labels.is_empty() {
            return None;
        }
        Some(Box::new(self.labels.iter().map(|l| {
            LabeledSpan::new_with_span(Some(l.message.clone()), (l.offset, l.length))
        })))
    }
}

/// A topology file and every problem found in it; the file's text is the
/// source code all problems point into.
#[derive(Debug)]
pub struct Problems {
    pub source: NamedSource<String>,
    pub problems: Vec<Problem>,
}

impl Problems {
    pub fn errors(&self) -> usize {
        self.problems.iter().filter(|p| p.is_error()).count()
    }

    pub fn warnings(&self) -> usize {
        self.problems.len() - self.errors()
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (errors, warnings) = (self.errors(), self.warnings());
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        let name = self.source.name();
        match (errors, warnings) {
            (0, w) => write!(f, "{name}: {w} warning{}", plural(w)),
            (e, 0) => write!(f, "{name} is not a valid topology: {e} error{}", plural(e)),
            (e, w) => write!(
                f,
                "{name} is not a valid topology: {e} error{}, {w} warning{}",
                plural(e),
                plural(w)
            ),
        }
    }
}

impl std::error::Error for Problems {}

impl Diagnostic for Problems {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        // A file with only warnings is valid: no "invalid" code, no error mark.
        (self.errors() > 0).then(|| Box::new("meshform::topology::invalid") as Box<dyn fmt::Display>)
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(if self.errors() > 0 {
            miette::Severity::Error
        } else {
            miette::Severity::Warning
        })
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        Some(&self.source)
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        Some(Box::new(self.problems.iter().map(|p| p as &dyn Diagnostic)))
    }
}
