//! `meshform apply`: arguments in, one [`reconcile::apply`], output out. The
//! reconcile connects, locks, plans (or re-checks a saved plan) and
//! executes; this shell shows the plan, asks, and hands apply's events and
//! report to [`render::apply`]. Of the run it words only the question before it.
//! It installs the SIGINT and SIGTERM handlers, which only ask the run to stop
//! ([`crate::apply::Cancel`]); how the run stops is the library's.

use std::io::{self, BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::plan::{PlanArgs, read_plan, render_plan};
use super::{CliError, ClusterArgs, Context, Exit, TopologyArg, parse_duration, validate};
use crate::access::Sources;
use crate::apply::{Cancel, Settings, Stop, lock};
use crate::plan::Plan;
use crate::reconcile::{self, Outcome, Planning, Request};
use crate::render;
use crate::topology::Topology;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A plan saved with `meshform plan --out`; without it, apply plans first.
    /// Planning choices were made when it was saved, so they cannot be given again here.
    #[arg(value_name = "PLAN", conflicts_with_all = ["targets", "skip_unreachable", "adopt", "rotate_tokens", "restart_workloads", "force_conflicts", "revoke_grace"])]
    pub saved: Option<PathBuf>,

    #[command(flatten)]
    pub topology: TopologyArg,

    #[command(flatten)]
    pub clusters: ClusterArgs,

    #[command(flatten)]
    pub plan: PlanArgs,

    /// Send every write with dryRun=All: the API servers check everything, nothing persists.
    #[arg(long)]
    pub dry_run: bool,

    /// Show a unified diff of every object written (secret data redacted).
    #[arg(long)]
    pub diff: bool,

    /// Allow plans that detach clusters (remove their remote secrets from primaries).
    #[arg(long)]
    pub allow_detach: bool,

    /// Apply without asking for confirmation.
    #[arg(long)]
    pub auto_approve: bool,

    /// Actions of one phase in flight at once.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub concurrency: usize,

    /// Wait this long for another apply of the mesh to finish (0s: fail at once).
    #[arg(long, default_value = "0s", value_parser = parse_duration, value_name = "DURATION")]
    pub lock_timeout: Duration,

    /// How long the apply lock lasts without renewal, should meshform die holding it.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION", hide = true)]
    pub lock_duration: Duration,

    /// `text` shows the plan and progress; `json` prints one event per line.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

pub fn run(args: &Args, cx: &mut Context<'_>) -> Result<Exit, CliError> {
    let (topology, _warnings) = validate::load(&args.topology.file, cx)?;
    // Read before anything else: a plan file that is not one fails here,
    // before a cluster is touched.
    let planning = match &args.saved {
        Some(path) => Planning::Saved(Box::new(read_plan(path)?)),
        None => Planning::Fresh(args.plan.options()),
    };
    let sources = Sources {
        base_dir: args.topology.file.parent().map(Path::to_path_buf).unwrap_or_default(),
        kubeconfig: args.clusters.kubeconfig.clone(),
        timeout: args.clusters.timeout,
        keepalive: args.clusters.keepalive,
    };
    let request = Request {
        topology: &topology,
        sources: &sources,
        planning,
        allow_detach: args.allow_detach,
        settings: Settings {
            dry_run: args.dry_run,
            diff: args.diff,
            concurrency: args.concurrency,
        },
        lock: lock::LockSettings {
            holder: lock::process_holder(),
            duration: args.lock_duration,
            wait: args.lock_timeout,
        },
        cancel: Cancel::new(),
    };
    let format = match args.format {
        Format::Text => render::apply::Format::Text,
        Format::Json => render::apply::Format::Json,
    };
    let mut shell = Terminal {
        args,
        topology: &topology,
        format,
        cx,
        cancel: request.cancel.clone(),
    };
    let outcome = super::runtime()?.block_on(async {
        let signals = on_signals(request.cancel.clone())?;
        let outcome = reconcile::apply(&request, &mut shell).await;
        signals.abort();
        outcome
    })?;
    match outcome {
        Outcome::Converged => Ok(Exit::Success),
        Outcome::Executed { plan, report } => {
            render::apply::summary(format, &plan, &report, args.dry_run, shell.cx.out)?;
            Ok(match report.stopped {
                Some(stop) => Exit::stopped(stop),
                None if report.succeeded() => Exit::Success,
                None => Exit::Error,
            })
        }
    }
}

/// SIGINT and SIGTERM ask the run to stop between actions (the library's
/// [`Cancel`]); the run then releases the lock and reports what is left. A
/// second signal ends the process at once, leaving the lock to expire.
fn on_signals(cancel: Cancel) -> Result<tokio::task::JoinHandle<()>, CliError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt()).map_err(CliError::Runtime)?;
        let mut terminate = signal(SignalKind::terminate()).map_err(CliError::Runtime)?;
        Ok(tokio::spawn(async move {
            loop {
                let stop = tokio::select! {
                    _ = interrupt.recv() => Stop::Interrupt,
                    _ = terminate.recv() => Stop::Terminate,
                };
                if cancel.stopped().is_some() {
                    eprintln!("\n{stop} again: exiting now; the apply lock expires once unrenewed for its duration");
                    std::process::exit(Exit::stopped(stop) as i32);
                }
                eprintln!(
                    "\n{stop}: stopping once the actions in flight finish, then releasing the apply lock \
                     ({stop} again exits at once)"
                );
                cancel.stop(stop);
            }
        }))
    }
    #[cfg(not(unix))]
    {
        Ok(tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                cancel.stop(Stop::Interrupt);
            }
        }))
    }
}

/// The reconcile's shell on a terminal or in CI: shows the plan (as text),
/// asks unless told not to, prints progress in the chosen format.
struct Terminal<'a, 'c, 'x> {
    args: &'a Args,
    topology: &'a Topology,
    format: render::apply::Format,
    cx: &'c mut Context<'x>,
    /// A signal while the question waits ends the run there.
    cancel: Cancel,
}

impl reconcile::Shell for Terminal<'_, '_, '_> {
    type Error = CliError;
    type Progress<'p>
        = render::apply::Printer<'p>
    where
        Self: 'p;

    fn planned(&mut self, plan: &Plan) -> Result<(), CliError> {
        if self.args.format == Format::Text {
            render_plan(plan, self.topology, None, super::plan::Format::Text, self.cx)?;
        }
        Ok(())
    }

    fn approve(&mut self, plan: &Plan) -> Result<(), CliError> {
        if self.args.auto_approve || self.args.dry_run {
            return Ok(());
        }
        confirm(plan, self.cx, &self.cancel)
    }

    fn progress<'p>(&'p mut self, plan: &'p Plan) -> render::apply::Printer<'p> {
        // A bar per phase only where a person watches, and not under -q.
        let terminal = !self.cx.quiet && io::stdout().is_terminal() && io::stderr().is_terminal();
        render::apply::Printer::new(self.format, &plan.namespace, &mut *self.cx.out, terminal)
    }
}

/// Asks on the terminal; refuses when there is none to ask on.
fn confirm(plan: &Plan, cx: &mut Context<'_>, cancel: &Cancel) -> Result<(), CliError> {
    if !io::stdin().is_terminal() {
        return Err(CliError::NotConfirmed(
            "stdin is not a terminal; pass --auto-approve to apply without asking".into(),
        ));
    }
    // What the plan's blockers hold back is not asked about: it will not run.
    let writes = plan.free_writes();
    write!(
        cx.err,
        "\nApply {writes} change(s) to mesh {:?}? Only 'yes' will be accepted: ",
        plan.mesh
    )?;
    cx.err.flush()?;
    // Read aside, so that a signal (Ctrl-C at the question) ends the run
    // at once, the lock released, instead of waiting for a line.
    let (line, answered) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut answer = String::new();
        let read = io::stdin().lock().read_line(&mut answer).map(|_| answer);
        let _ = line.send(read);
    });
    let answer = loop {
        match answered.recv_timeout(Duration::from_millis(50)) {
            Ok(read) => break read?,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if let Some(stop) = cancel.stopped() {
                    writeln!(cx.err)?;
                    return Err(reconcile::Error::Stopped(stop).into());
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(CliError::NotConfirmed("apply cancelled".into()));
            }
        }
    };
    if answer.trim() == "yes" {
        Ok(())
    } else {
        Err(CliError::NotConfirmed("apply cancelled".into()))
    }
}
