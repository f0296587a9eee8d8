//! Command-line definitions and dispatch: turns arguments into calls of the
//! pipeline (topology → observe → plan → apply → render) and their outcome into
//! an exit status. Reading and writing files happens here, not below.

use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};
use miette::Diagnostic;
use thiserror::Error;

use crate::render::{self, Style};
use crate::topology::{self, MAX_FILE_BYTES};

/// meshform keeps a multi-cluster Istio mesh in the shape declared in mesh.toml.
#[derive(Debug, Parser)]
#[command(name = "meshform", version, about, long_about = None, propagate_version = true)]
#[command(after_help = "Examples:\n  meshform validate -f mesh.toml\n  meshform validate --format json | jq .topology")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// When to colour output; NO_COLOR in the environment means never, unless `always`.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,

    /// Print only errors and requested output.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a topology file and report every problem in it.
    #[command(
        after_help = "Exit status: 0 valid (warnings allowed), 1 invalid.\n\nExamples:\n  meshform validate\n  meshform validate -f mesh.toml.example --format json"
    )]
    Validate(ValidateArgs),
    /// Print the JSON Schema of mesh.toml (the same as schemas/mesh.schema.json).
    #[command(after_help = "Example:\n  meshform schema > mesh.schema.json")]
    Schema,
}

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// The topology file.
    #[arg(short = 'f', long = "file", default_value = "mesh.toml", value_name = "PATH")]
    pub file: PathBuf,

    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// meshform's exit statuses; documented in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success; for `plan`, no changes.
    Success = 0,
    /// An error: invalid input, an unreachable cluster, a failed action.
    Error = 1,
    /// `plan --detailed-exitcode` found changes.
    Changes = 2,
}

/// Errors the CLI reports itself; topology problems are rendered separately.
#[derive(Debug, Error, Diagnostic)]
pub enum CliError {
    /// The topology file could not be read.
    #[error("cannot read {}", path.display())]
    #[diagnostic(code(meshform::cli::read), help("{hint}"))]
    Read {
        path: PathBuf,
        hint: String,
        #[source]
        source: io::Error,
    },
    /// Writing output failed for a reason other than a closed pipe.
    #[error("cannot write output")]
    #[diagnostic(code(meshform::cli::write))]
    Write(#[source] io::Error),
}

impl Cli {
    pub fn style(&self) -> Style {
        let color = match self.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && io::stderr().is_terminal()
            }
        };
        let width = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(100);
        Style { color, width }
    }
}

/// Runs one command. Output goes to `out` (stdout) and `err` (stderr) so that
/// tests can run the CLI in-process.
pub fn run(cli: &Cli, out: &mut dyn Write, err: &mut dyn Write) -> Result<Exit, CliError> {
    let style = cli.style();
    let result = match &cli.command {
        Command::Validate(args) => validate(args, cli.quiet, style, out, err),
        Command::Schema => serde_json::to_writer_pretty(&mut *out, &topology::schema())
            .map_err(io::Error::from)
            .and_then(|()| writeln!(out))
            .map(|()| Exit::Success)
            .map_err(Outcome::Io),
    };
    match result {
        Ok(exit) => Ok(exit),
        // A closed pipe (`meshform ... | head`) is the reader's choice, not an error.
        Err(Outcome::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(Exit::Success),
        Err(Outcome::Io(e)) => Err(CliError::Write(e)),
        Err(Outcome::Cli(e)) => Err(e),
    }
}

/// Internal: separates write failures (maybe a closed pipe) from real errors.
enum Outcome {
    Io(io::Error),
    Cli(CliError),
}

impl From<io::Error> for Outcome {
    fn from(e: io::Error) -> Self {
        Outcome::Io(e)
    }
}

impl From<CliError> for Outcome {
    fn from(e: CliError) -> Self {
        Outcome::Cli(e)
    }
}

fn validate(
    args: &ValidateArgs,
    quiet: bool,
    style: Style,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Exit, Outcome> {
    let bytes = read_topology(&args.file)?;
    let name = args.file.display().to_string();
    let checked = topology::check(&name, &bytes);
    let valid = checked.topology.is_some();
    let mut write = || -> io::Result<()> {
        match args.format {
            Format::Json => render::diagnostics::json(&checked.problems, checked.topology.as_ref(), out),
            Format::Text => {
                render::diagnostics::text(&checked.problems, style, err)?;
                if let (Some(t), false) = (&checked.topology, quiet) {
                    let networks = t.networks.len();
                    writeln!(
                        out,
                        "{name} is valid: mesh {:?}, {} cluster{} on {networks} network{}",
                        t.mesh.name,
                        t.clusters.len(),
                        if t.clusters.len() == 1 { "" } else { "s" },
                        if networks == 1 { "" } else { "s" },
                    )?;
                }
                Ok(())
            }
        }
    };
    let written = write();
    // The verdict stands even when the reader closed the pipe early.
    match written {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => return Err(Outcome::Io(e)),
        _ => {}
    }
    Ok(if valid { Exit::Success } else { Exit::Error })
}

/// Reads a topology file, refusing to read more than meshform would accept.
fn read_topology(path: &Path) -> Result<Vec<u8>, CliError> {
    let fail = |source: io::Error| {
        let hint = match source.kind() {
            io::ErrorKind::NotFound => format!(
                "create {} (mesh.toml.example is a commented start), or point at another file with -f PATH",
                path.display()
            ),
            io::ErrorKind::PermissionDenied => "check the file's permissions".to_string(),
            _ => "pass the path of a mesh.toml file with -f PATH".to_string(),
        };
        CliError::Read {
            path: path.to_path_buf(),
            hint,
            source,
        }
    };
    let file = std::fs::File::open(path).map_err(fail)?;
    if file.metadata().map_err(fail)?.is_dir() {
        return Err(fail(io::Error::other("it is a directory")));
    }
    let mut bytes = Vec::new();
    // One byte more than the limit is enough for check() to report the size.
    file.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(fail)?;
    Ok(bytes)
}
