//! Views. Renderers take data (problems, a plan) and write text to any
//! writer; they never decide anything and never do I/O of their own.

pub mod diagnostics;

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
