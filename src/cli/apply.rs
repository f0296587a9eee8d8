//! `meshform apply`: wiring only. It connects, takes the lock, plans (or
//! reads a saved plan), asks, executes and hands apply's events and report
//! to [`render::apply`]; of the run it words only the question before it.

use std::io::{self, BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::plan::{PlanArgs, read_plan, render_plan};
use super::{CliError, ClusterArgs, Context, Exit, TopologyArg, parse_duration, validate};
use crate::access::{Connections, Sources};
use crate::apply::{self, Refusal, Settings, Target, lock};
use crate::plan::{self, Plan};
use crate::render;
use crate::topology::{Role, Topology};

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
    let sources = Sources {
        base_dir: args.topology.file.parent().map(Path::to_path_buf).unwrap_or_default(),
        kubeconfig: args.clusters.kubeconfig.clone(),
        timeout: args.clusters.timeout,
        keepalive: args.clusters.keepalive,
    };
    let runtime = super::runtime()?;
    runtime.block_on(async {
        let connections = Connections::open(&topology, &sources).await;
        // The lock comes first, as in Terraform: the clusters are read, planned,
        // confirmed and written with no other apply in between. A dry run
        // writes nothing and takes no lock. Beside the lock, each cluster's
        // connection is opened with the one read that may come before it
        // (the cluster's identity, which never changes).
        let (held, opened) = if args.dry_run {
            (None, crate::observe::open(&connections).await)
        } else {
            let (held, opened) = tokio::join!(
                take_lock(&topology, &connections, args),
                crate::observe::open(&connections)
            );
            (Some(held?), opened)
        };
        let result = plan_and_execute(args, cx, &topology, &connections, opened, held.as_ref()).await;
        if let Some(lock) = held {
            lock.release().await;
        }
        result
    })
}

/// The lock lives in the first primary, by name, that can hold it.
async fn take_lock(topology: &Topology, connections: &Connections, args: &Args) -> Result<lock::Lock, CliError> {
    let settings = lock::LockSettings {
        holder: holder(),
        duration: args.lock_duration,
        wait: args.lock_timeout,
    };
    let mut primaries: Vec<_> = topology
        .clusters
        .iter()
        .filter(|c| c.role == Role::Primary)
        .filter_map(|c| connections.get(&c.name))
        .collect();
    primaries.sort_unstable_by(|a, b| a.cluster.cmp(&b.cluster));
    let mut last = None;
    for primary in primaries {
        match lock::acquire(
            primary.client.clone(),
            &primary.cluster,
            &topology.mesh.namespace,
            &topology.mesh.name,
            &settings,
        )
        .await
        {
            Ok(lock) => return Ok(lock),
            // Held by another apply: that is the answer, whichever primary holds it.
            Err(held @ lock::LockError::Held { .. }) => return Err(held.into()),
            // This primary cannot be written to; the next one may.
            Err(error) => last = Some(error),
        }
    }
    Err(last.map_or(CliError::NoLockCluster, CliError::from))
}

async fn plan_and_execute(
    args: &Args,
    cx: &mut Context<'_>,
    topology: &Topology,
    connections: &Connections,
    opened: crate::observe::Opened,
    held: Option<&lock::Lock>,
) -> Result<Exit, CliError> {
    let observed = crate::observe::observe_opened(topology, connections, opened).await;
    let plan = match &args.saved {
        Some(path) => {
            let saved = read_plan(path)?;
            let stale = apply::staleness(&saved.fingerprints, &plan::fingerprints(topology, &observed));
            if !stale.is_empty() {
                return Err(Refusal::Stale(stale).into());
            }
            saved
        }
        None => plan::plan(topology, &observed, &args.plan.options())?,
    };
    if args.format == Format::Text {
        render_plan(&plan, topology, super::plan::Format::Text, cx)?;
    }
    apply::preflight(&plan, args.allow_detach)?;
    if plan.is_empty() {
        return Ok(Exit::Success);
    }
    if !args.auto_approve && !args.dry_run {
        confirm(&plan, cx)?;
    }

    let settings = Settings {
        dry_run: args.dry_run,
        diff: args.diff,
        concurrency: args.concurrency,
    };
    let format = match args.format {
        Format::Text => render::apply::Format::Text,
        Format::Json => render::apply::Format::Json,
    };
    // A bar per phase only where a person watches, and not under -q.
    let terminal = !cx.quiet && io::stdout().is_terminal() && io::stderr().is_terminal();
    let progress = render::apply::Printer::new(format, &plan.namespace, &mut *cx.out, terminal);
    let target = Target {
        plan: &plan,
        topology,
        observed: &observed,
        connections,
        lock: held,
    };
    let report = apply::execute(&target, &settings, &progress).await;
    progress.finish();
    render::apply::summary(format, &plan, &report, args.dry_run, cx.out)?;
    Ok(if report.succeeded() { Exit::Success } else { Exit::Error })
}

/// Asks on the terminal; refuses when there is none to ask on.
fn confirm(plan: &Plan, cx: &mut Context<'_>) -> Result<(), CliError> {
    if !io::stdin().is_terminal() {
        return Err(CliError::NotConfirmed(
            "stdin is not a terminal; pass --auto-approve to apply without asking".into(),
        ));
    }
    let writes = plan.actions.iter().filter(|a| a.writes()).count();
    write!(
        cx.err,
        "\nApply {writes} change(s) to mesh {:?}? Only 'yes' will be accepted: ",
        plan.mesh
    )?;
    cx.err.flush()?;
    let mut answer = String::new();
    io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() == "yes" {
        Ok(())
    } else {
        Err(CliError::NotConfirmed("apply cancelled".into()))
    }
}

fn holder() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "unknown-host".into());
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    format!(
        "meshform {} ({user}@{host}, pid {})",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    )
}
