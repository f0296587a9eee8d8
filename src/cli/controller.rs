//! `meshform controller`: arguments in, [`controller::run`] until SIGTERM or
//! Ctrl-C (a round then stops between actions), its events out as JSON lines
//! on stdout and into its [`controller::status::Status`] (metrics, probes,
//! Events, status object).

use std::net::SocketAddr;
use std::time::Duration;

use super::{CliError, ClusterArgs, Context, Exit, TopologyArg, parse_duration};
use crate::apply::lock;
use crate::controller::status::{self, Status};
use crate::controller::{self, Auto, Event, Settings, Stop};
use crate::plan;
use crate::render;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub topology: TopologyArg,

    #[command(flatten)]
    pub clusters: ClusterArgs,

    /// What to apply with no person watching: `safe` repairs meshform's objects and labels, writes new and
    /// updated remote secrets, rotates tokens and revokes replaced ones; detaches, network moves and
    /// revoking a departed primary's tokens wait for `meshform apply --allow-detach`. `none` only reports.
    #[arg(long, value_enum, default_value_t = AutoArg::Safe)]
    pub auto: AutoArg,

    /// Reconcile at least this often, besides on start, on a change of mesh.toml, on a change a watch sees
    /// in a cluster (a second after the last of a burst) and when a token's rotation or a replaced token's
    /// revocation falls due.
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    pub resync: Duration,

    /// How often mesh.toml is read for changes (a mounted ConfigMap swaps a symlink).
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub poll: Duration,

    /// The wait before the round that confirms one that wrote, and the first wait before retrying a round
    /// that could not finish (a cluster out of reach, the apply lock held); doubled each time, up to --resync.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub retry: Duration,

    /// Seconds a replaced reader token stays valid after its successor was written.
    #[arg(long, value_name = "SECONDS", default_value_t = plan::DEFAULT_REVOKE_GRACE_SECONDS as u32)]
    pub revoke_grace: u32,

    /// Actions of one phase in flight at once.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub concurrency: usize,

    /// Elect one leader among replicas with a Lease `meshform-controller-<mesh>` in this cluster of
    /// mesh.toml (the one the controller runs in); only the leader reconciles.
    #[arg(long, value_name = "CLUSTER", requires = "leader_election_namespace")]
    pub leader_election_cluster: Option<String>,

    /// The namespace of the leader-election Lease: the controller's own.
    #[arg(
        long,
        value_name = "NAMESPACE",
        env = "POD_NAMESPACE",
        requires = "leader_election_cluster"
    )]
    pub leader_election_namespace: Option<String>,

    /// How long a leader's lease lasts unrenewed: a dead leader is replaced after about this long.
    #[arg(long, default_value = "15s", value_parser = parse_duration, value_name = "DURATION")]
    pub leader_election_duration: Duration,

    /// Where to serve Prometheus metrics (`/metrics`) and the probes (`/healthz`, `/readyz`); port 0
    /// picks a free one (its address is the first line of output).
    #[arg(long, default_value = "0.0.0.0:8080", value_name = "ADDRESS")]
    pub metrics_address: SocketAddr,

    /// How long the apply lock lasts without renewal, should the controller die holding it.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION", hide = true)]
    pub lock_duration: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AutoArg {
    Safe,
    None,
}

pub fn run(args: &Args, cx: &mut Context<'_>) -> Result<Exit, CliError> {
    let settings = Settings {
        file: args.topology.file.clone(),
        kubeconfig: args.clusters.kubeconfig.clone(),
        timeout: args.clusters.timeout,
        keepalive: args.clusters.keepalive,
        auto: match args.auto {
            AutoArg::Safe => Auto::Safe,
            AutoArg::None => Auto::None,
        },
        resync: args.resync,
        poll: args.poll,
        retry: args.retry.min(args.resync),
        revoke_grace_seconds: i64::from(args.revoke_grace),
        concurrency: args.concurrency,
        lock_holder: lock::process_holder(),
        lock_duration: args.lock_duration,
        election: args
            .leader_election_cluster
            .clone()
            .zip(args.leader_election_namespace.clone())
            .map(|(cluster, namespace)| controller::Election {
                cluster,
                namespace,
                duration: args.leader_election_duration,
            }),
        // A burst of changes (an apply's dozens of writes) is one round; a
        // single hand edit is repaired within about a second of it.
        debounce: (Duration::from_secs(1), Duration::from_secs(10)),
    };
    let status_settings = status::Settings {
        address: args.metrics_address,
        // Events and the status object live beside the election's Lease,
        // in the controller's own namespace.
        home: settings.election.clone(),
        sources: controller::sources(&settings),
        election: settings.election.is_some(),
        // A round may wait for the apply lock and read every cluster with
        // its timeouts; a loop quiet much longer than that is stuck.
        wedged_after: (settings.resync * 2).max(Duration::from_secs(600)),
    };
    let runtime = super::runtime()?;
    let stop = runtime.block_on(async {
        let shutdown = shutdown()?;
        let status = Status::start(status_settings).await.map_err(|source| CliError::Serve {
            address: args.metrics_address,
            source,
        })?;
        render::controller::serving(status.address(), cx.out)?;
        let mut out = Lines {
            cx: &mut *cx,
            status,
            error: None,
        };
        let stop = controller::run(&settings, &mut out, shutdown).await;
        Ok::<_, CliError>((stop, out.error))
    });
    let (stop, error) = stop?;
    match (error, stop) {
        (Some(e), _) => Err(e.into()),
        (None, Stop::Shutdown) => Ok(Exit::Success),
        // Restarted (by its Deployment) as a follower.
        (None, Stop::LostLeadership) => Ok(Exit::Error),
    }
}

/// SIGTERM (a pod's deletion) or Ctrl-C; registered before the first round,
/// so neither is lost while one runs.
fn shutdown() -> Result<impl std::future::Future<Output = ()>, CliError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(CliError::Runtime)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(CliError::Runtime)?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

/// Events as JSON lines on stdout, and into the status; the first write
/// error is kept for the exit status, and later lines are dropped.
struct Lines<'c, 'x> {
    cx: &'c mut Context<'x>,
    status: Status,
    error: Option<std::io::Error>,
}

impl controller::Watch for Lines<'_, '_> {
    fn event(&mut self, event: Event<'_>) {
        self.status.event(&event);
        if self.error.is_some() {
            return;
        }
        if let Err(e) = render::controller::event(&event, self.cx.out) {
            self.error = Some(e);
        }
    }

    fn tick(&mut self) {
        self.status.tick();
    }
}
