//! Command-line definitions and dispatch: turns arguments into calls of the
//! pipeline (topology → access → observe → plan → apply → render) and their outcome into
//! an exit status. Reading and writing files happens here, not below.

mod apply;
mod check;
mod controller;
mod files;
mod graph;
mod import;
mod plan;
mod validate;

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, CommandFactory, Parser, Subcommand, ValueEnum};
use miette::Diagnostic;
use thiserror::Error;

use crate::render::Style;

/// meshform keeps a multi-cluster Istio mesh in the shape declared in mesh.toml.
#[derive(Debug, Parser)]
#[command(name = "meshform", version, about, long_about = None, propagate_version = true)]
#[command(after_help = "Examples:
  meshform validate -f mesh.toml
  meshform plan --observed examples/observed.json
  meshform plan --format markdown > plan.md
  meshform graph --format dot | dot -Tsvg > mesh.svg
  meshform -vv plan                    # log cluster reads and timings to stderr")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// When to colour output; NO_COLOR in the environment means never, unless `always`.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,

    /// Print only errors and requested output.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Log what meshform does to stderr: -v for progress, -vv for each cluster's
    /// reads and timings, -vvv for everything. RUST_LOG, when set, overrides it.
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a topology file and report every problem in it.
    #[command(after_help = "Exit status: 0 valid (warnings allowed), 1 invalid.

Examples:
  meshform validate
  meshform validate -f mesh.toml.example --format json")]
    Validate(validate::Args),
    /// Compare mesh.toml with the clusters and show the actions that would reconcile them.
    #[command(
        after_help = "Exit status: 0 no changes (or changes, without --detailed-exitcode), 1 error or a
blocking problem, 2 changes (with --detailed-exitcode).

Examples:
  meshform plan
  meshform plan --observed observed.json --format markdown
  meshform plan --out plan.json --detailed-exitcode"
    )]
    Plan(plan::Args),
    /// Execute a plan: write remote secrets, network labels, gateways and reader accounts.
    #[command(after_help = "Exit status: 0 applied (or nothing to do), 1 refused or failed.

Examples:
  meshform apply --dry-run --diff
  meshform apply --allow-detach --auto-approve
  meshform plan --out plan.json && meshform apply plan.json")]
    Apply(apply::Args),
    /// Show whether the mesh can carry traffic: per cluster, per network and mesh-wide, each check
    /// with pass or fail and its fix.
    #[command(
        after_help = "Checks what Istio needs beyond meshform's objects (network labels, east-west gateways
istiod can use, cluster ids, one root of trust), and what apply would still change. Clusters
that cannot be read fail their own line; the others are still checked.

Exit status: 0 every check passes (warnings allowed), 1 a check fails.

Examples:
  meshform check
  meshform check --observed observed.json --format json"
    )]
    Check(check::Args),
    /// Read the clusters and save what was found, without secrets, for offline plans.
    #[command(after_help = "Example:
  meshform snapshot -o observed.json && meshform plan --observed observed.json")]
    Snapshot(plan::SnapshotArgs),
    /// Draw the mesh: networks as groups, clusters inside, cross-network gateway paths.
    #[command(
        after_help = "Clusters of other networks reach a cluster only through its east-west gateway
(dashed arrows); clusters on one network reach each other directly. With --observed,
clusters that could not be read, missing gateway Services and network labels that differ
from mesh.toml are marked.

Examples:
  meshform graph > mesh.mmd
  meshform graph --format dot | dot -Tsvg > mesh.svg
  meshform graph --observed observed.json"
    )]
    Graph(graph::Args),
    /// Write the mesh.toml of clusters that are already meshed (by istioctl, by hand or by meshform).
    #[command(
        after_help = "Each cluster's name comes from the cluster id its peers' remote secrets use, its
network from the topology.istio.io/network label, its role from whether it holds remote
secrets. What cannot be told is reported (exit 1), never guessed.

Examples:
  meshform import                                   # every context of $KUBECONFIG
  meshform import --kubeconfig all.yaml east west -o mesh.toml
  meshform import -o mesh.toml && meshform plan --adopt"
    )]
    Import(import::Args),
    /// Reconcile continuously: on start, when mesh.toml changes, on a resync and when a token falls due,
    /// applying only what is safe with no person watching.
    #[command(
        after_help = "Runs until SIGTERM or Ctrl-C, printing one JSON object per event on stdout: mesh.toml loaded or
refused (an invalid edit keeps the last good topology), and each round with what it did, what
it held back for a person (detaches, network moves) and why. It takes the mesh's apply lock
while it writes, as `meshform apply` does.

Examples:
  meshform controller -f /etc/meshform/mesh.toml
  meshform controller --auto=none --resync 10m     # report drift, write nothing"
    )]
    Controller(controller::Args),
    /// Print the JSON Schema of mesh.toml (the same as schemas/mesh.schema.json).
    #[command(after_help = "Example:\n  meshform schema > mesh.schema.json")]
    Schema,
    /// Print a shell completion script.
    #[command(after_help = "Examples:
  meshform completions bash > ~/.local/share/bash-completion/completions/meshform
  meshform completions zsh > \"${fpath[1]}/_meshform\"
  meshform completions fish > ~/.config/fish/completions/meshform.fish
  meshform completions powershell >> $PROFILE")]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `-f mesh.toml`, shared by every command that reads a topology.
#[derive(Debug, Clone, clap::Args)]
pub struct TopologyArg {
    /// The topology file.
    #[arg(short = 'f', long = "file", default_value = "mesh.toml", value_name = "PATH")]
    pub file: PathBuf,
}

/// How to reach the clusters.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Kubeconfig for clusters whose [[cluster]] names none (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Timeout of each API request, response included, e.g. 10s or 1m.
    #[arg(long, default_value = "15s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,

    /// Ping a connection to an API server silent this long, and drop it when the ping is not answered in
    /// half that time (HTTP/2 and TCP keepalive, as client-go); 0s sends none.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub keepalive: Duration,

    /// kubectl's `--context`, refused with the fix: people who run meshform as
    /// `kubectl meshform` type it, but a mesh spans many contexts, one per cluster.
    #[arg(long, hide = true, value_name = "CONTEXT", value_parser = refuse_context)]
    pub context: Option<String>,
}

fn refuse_context(_: &str) -> Result<String, String> {
    Err(
        "meshform takes no --context: each [[cluster]] of mesh.toml names its kubeconfig context \
         (`context = \"...\"`, default its `name`); to plan for one cluster, pass --target CLUSTER"
            .to_string(),
    )
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let span: jiff::Span = text
        .parse()
        .map_err(|e| format!("{e}; write a duration such as 30s, 5m or 1h"))?;
    let duration = jiff::SignedDuration::try_from(span).map_err(|e| e.to_string())?;
    Duration::try_from(duration).map_err(|_| "the duration must not be negative".to_string())
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
    /// An error: invalid input, an unreachable cluster, a blocking problem.
    Error = 1,
    /// `plan --detailed-exitcode` found changes.
    Changes = 2,
    /// `apply` stopped by SIGINT (128 + 2, as shells report a process
    /// ended by the signal) with actions left undone, or before writing.
    Interrupted = 130,
    /// `apply` stopped by SIGTERM (128 + 15), likewise.
    Terminated = 143,
}

impl Exit {
    /// The status of a run stopped by `stop`.
    pub fn stopped(stop: crate::apply::Stop) -> Exit {
        match stop {
            crate::apply::Stop::Interrupt => Exit::Interrupted,
            crate::apply::Stop::Terminate => Exit::Terminated,
        }
    }
}

/// Errors the CLI reports; topology problems are rendered as they are found.
#[derive(Debug, Error, Diagnostic)]
pub enum CliError {
    /// An input file could not be read.
    #[error("cannot read {}", path.display())]
    #[diagnostic(code(meshform::cli::read), help("{hint}"))]
    Read {
        path: PathBuf,
        hint: String,
        #[source]
        source: io::Error,
    },
    /// An output file could not be written.
    #[error("cannot write {}", path.display())]
    #[diagnostic(code(meshform::cli::write_file))]
    WriteFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `import` cannot start: no kubeconfig, an unknown context, a file in the way.
    #[error("{0}")]
    #[diagnostic(code(meshform::cli::import))]
    Import(String),
    /// Writing to stdout or stderr failed for a reason other than a closed pipe.
    #[error("cannot write output")]
    #[diagnostic(code(meshform::cli::write))]
    Write(#[from] io::Error),
    /// A saved observation that is not one.
    #[error("{} is not a meshform snapshot: {reason}", path.display())]
    #[diagnostic(code(meshform::cli::bad_snapshot), help("make one with `meshform snapshot -o {}`", path.display()))]
    BadSnapshot { path: PathBuf, reason: String },
    /// A saved plan that is not one.
    #[error("{} is not a meshform plan: {reason}", path.display())]
    #[diagnostic(code(meshform::cli::bad_plan), help("save one with `meshform plan --out {}`, with the planning flags it is to be made with", path.display()))]
    BadPlan { path: PathBuf, reason: String },
    /// A reconcile (apply) stopped: the lock, the plan, or a refusal.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Reconcile(#[from] crate::reconcile::Error),
    /// The user did not confirm.
    #[error("{0}")]
    #[diagnostic(code(meshform::apply::not_confirmed))]
    NotConfirmed(String),
    /// The topology is invalid; its problems were already shown.
    #[error("{0} is not a valid topology")]
    #[diagnostic(code(meshform::topology::invalid))]
    InvalidTopology(String),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Plan(#[from] crate::plan::PlanError),
    /// `meshform controller` cannot serve its metrics and probes.
    #[error("cannot serve metrics on {address}")]
    #[diagnostic(
        code(meshform::cli::serve),
        help("another process may use the port: pick a free one with --metrics-address (port 0 picks any)")
    )]
    Serve {
        address: std::net::SocketAddr,
        #[source]
        source: io::Error,
    },
    /// The async runtime could not start.
    #[error("cannot start the runtime")]
    #[diagnostic(code(meshform::cli::runtime))]
    Runtime(#[source] io::Error),
}

impl CliError {
    /// The exit status it ends the process with.
    pub fn exit(&self) -> Exit {
        match self {
            CliError::Reconcile(crate::reconcile::Error::Stopped(stop)) => Exit::stopped(*stop),
            _ => Exit::Error,
        }
    }
}

impl Cli {
    /// How to write to stderr (diagnostics, logs, prompts).
    pub fn style(&self) -> Style {
        self.style_for(io::stderr().is_terminal())
    }

    /// How to write to stdout (plans). Decided apart from stderr, so that
    /// `meshform plan > plan.txt` on a terminal writes no colour codes to the file.
    pub fn out_style(&self) -> Style {
        self.style_for(io::stdout().is_terminal())
    }

    fn style_for(&self, terminal: bool) -> Style {
        let color = match self.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && terminal,
        };
        let width = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(100);
        Style { color, width }
    }

    /// The tracing filter for `-q`/`-v`, in `RUST_LOG` syntax. Other crates
    /// (kube, hyper) stay at warnings until -vvv: their debug output is
    /// request plumbing, and meshform's own lines already say which cluster
    /// took how long.
    pub fn log_filter(&self) -> &'static str {
        match (self.quiet, self.verbose) {
            (true, _) => "error",
            (false, 0) => "warn",
            (false, 1) => "warn,meshform=info",
            (false, 2) => "warn,meshform=debug",
            (false, _) => "debug,meshform=trace",
        }
    }
}

/// The colour clap should use for help and usage errors, read from the raw
/// arguments (they are printed before, or instead of, a parsed [`Cli`]).
pub fn clap_color(args: impl IntoIterator<Item = std::ffi::OsString>) -> clap::ColorChoice {
    let mut choice = None;
    let mut args = args.into_iter().skip(1);
    while let Some(arg) = args.next() {
        let value = match arg.to_str() {
            Some("--") => break,
            Some("--color") => args.next(),
            Some(a) => a.strip_prefix("--color=").map(Into::into),
            None => None,
        };
        if let Some(value) = value {
            choice = ColorChoice::from_str(&value.to_string_lossy(), false).ok();
        }
    }
    match choice {
        Some(ColorChoice::Always) => clap::ColorChoice::Always,
        Some(ColorChoice::Never) => clap::ColorChoice::Never,
        // clap's auto mode already honours NO_COLOR and checks the terminal.
        Some(ColorChoice::Auto) | None => clap::ColorChoice::Auto,
    }
}

/// The name usage lines give meshform when kubectl runs it as a plugin: kubectl
/// finds plugins as `kubectl-NAME` on PATH (krew installs meshform so) and
/// passes every argument after `kubectl meshform` unchanged, so only the
/// usage lines need to say `kubectl meshform` instead of `kubectl-meshform`.
pub fn plugin_bin_name(argv0: Option<&std::ffi::OsStr>) -> Option<&'static str> {
    let name = std::path::Path::new(argv0?).file_stem()?;
    (name == "kubectl-meshform").then_some("kubectl meshform")
}

/// What a command gets: its output streams and the global settings.
pub struct Context<'a> {
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
    /// How to write to `out`.
    pub style: Style,
    /// How to write to `err`.
    pub err_style: Style,
    pub quiet: bool,
}

/// Runs one command. Output goes to `out` (stdout) and `err` (stderr) so that
/// tests can run the CLI in-process.
pub fn run(cli: &Cli, out: &mut dyn Write, err: &mut dyn Write) -> Result<Exit, CliError> {
    // A closed pipe (`meshform ... | head`) is the reader's choice, not an
    // error: output stops, the exit status stays what the command decided.
    let (mut out, mut err) = (PipeSafe(out), PipeSafe(err));
    let mut cx = Context {
        out: &mut out,
        err: &mut err,
        style: cli.out_style(),
        err_style: cli.style(),
        quiet: cli.quiet,
    };
    match &cli.command {
        Command::Validate(args) => validate::run(args, &mut cx),
        Command::Plan(args) => plan::run(args, &mut cx),
        Command::Apply(args) => apply::run(args, &mut cx),
        Command::Snapshot(args) => plan::snapshot(args, &mut cx),
        Command::Graph(args) => graph::run(args, &mut cx),
        Command::Check(args) => check::run(args, &mut cx),
        Command::Import(args) => import::run(args, &mut cx),
        Command::Controller(args) => controller::run(args, &mut cx),
        Command::Schema => {
            serde_json::to_writer_pretty(&mut *cx.out, &crate::topology::schema()).map_err(io::Error::from)?;
            writeln!(cx.out)?;
            Ok(Exit::Success)
        }
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "meshform", &mut *cx.out);
            Ok(Exit::Success)
        }
    }
}

/// A writer that treats a closed pipe as the end of output.
struct PipeSafe<'a>(&'a mut dyn Write);

impl Write for PipeSafe<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.write(buf) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(buf.len()),
            other => other,
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.0.flush() {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            other => other,
        }
    }
}

/// A multi-threaded runtime for commands that talk to clusters.
fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
}
