//! `meshform plan` and `meshform snapshot`.

use std::path::{Path, PathBuf};

use super::{CliError, ClusterArgs, Context, Exit, TopologyArg, files, validate};
use crate::access::Sources;
use crate::observe::model::{Observed, SNAPSHOT_FORMAT_VERSION};
use crate::plan::{self, Options, Plan};
use crate::render;
use crate::topology::Topology;

/// Snapshots of even a thousand clusters stay well below this.
const MAX_SNAPSHOT_BYTES: usize = 256 * 1024 * 1024;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub topology: TopologyArg,

    #[command(flatten)]
    pub clusters: ClusterArgs,

    /// Plan against a saved snapshot (`meshform snapshot`) instead of the clusters: fully offline.
    #[arg(long, value_name = "PATH")]
    pub observed: Option<PathBuf>,

    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Also save the plan, with the planning choices it was made with, for `meshform apply PLAN`.
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,

    /// Exit 2 when there are changes, 0 when there are none.
    #[arg(long)]
    pub detailed_exitcode: bool,

    #[command(flatten)]
    pub plan: PlanArgs,
}

/// Planning choices shared by `plan` and `apply`.
#[derive(Debug, Clone, clap::Args)]
pub struct PlanArgs {
    /// Plan only actions that write to, or are about, this cluster (repeatable).
    #[arg(long = "target", value_name = "CLUSTER")]
    pub targets: Vec<String>,

    /// Plan the clusters that can be read and defer the others, instead of failing.
    #[arg(long)]
    pub skip_unreachable: bool,

    /// Take over remote secrets (and, with managed trust, a `cacerts`) meshform would write that
    /// exist but are not its own.
    #[arg(long)]
    pub adopt: bool,

    /// Plan a new reader token in every remote secret.
    #[arg(long)]
    pub rotate_tokens: bool,

    /// Take over fields meshform writes that another field manager owns (a label changed with
    /// `kubectl label`), as server-side apply's force does; otherwise such a change is a blocker.
    #[arg(long)]
    pub force_conflicts: bool,

    /// Let apply restart injected workloads after a network change, and istiod until it serves the
    /// mesh's root (managed trust); otherwise the step is shown, not run. A plan saved with it records
    /// the decision.
    #[arg(long)]
    pub restart_workloads: bool,

    /// Seconds a replaced reader token stays valid after its successor was
    /// written, before a later run revokes it (every istiod must have moved on).
    #[arg(long, value_name = "SECONDS", default_value_t = plan::DEFAULT_REVOKE_GRACE_SECONDS as u32)]
    pub revoke_grace: u32,
}

impl PlanArgs {
    /// Planner options.
    pub fn options(&self) -> Options {
        Options {
            skip_unreachable: self.skip_unreachable,
            adopt: self.adopt,
            rotate_tokens: self.rotate_tokens,
            restart_workloads: self.restart_workloads,
            force_conflicts: self.force_conflicts,
            targets: self.targets.clone(),
            revoke_grace_seconds: i64::from(self.revoke_grace),
            unattended: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Markdown,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub topology: TopologyArg,

    #[command(flatten)]
    pub clusters: ClusterArgs,

    /// Where to write the snapshot; `-` for stdout.
    #[arg(short = 'o', long = "out", default_value = "-", value_name = "PATH")]
    pub out: PathBuf,
}

pub fn run(args: &Args, cx: &mut Context<'_>) -> Result<Exit, CliError> {
    let (topology, _warnings) = validate::load(&args.topology.file, cx)?;
    let observed = snapshot_or_observe(args.observed.as_deref(), &topology, &args.topology.file, &args.clusters)?;
    let plan = plan::plan(&topology, &observed, &args.plan.options())?;
    tracing::info!(actions = plan.actions.len(), findings = plan.findings.len(), "planned");
    if let Some(path) = &args.out {
        files::write_atomic(path, &plan_json(&plan))?;
    }
    render_plan(&plan, &topology, Some(&observed), args.format, cx)?;
    Ok(exit_status(&plan, args.detailed_exitcode))
}

/// Shows a plan in the chosen format on stdout.
pub fn render_plan(
    plan: &Plan,
    topology: &Topology,
    observed: Option<&crate::observe::model::Observed>,
    format: Format,
    cx: &mut Context<'_>,
) -> Result<(), CliError> {
    let format = match format {
        Format::Text => render::Format::Text,
        Format::Markdown => render::Format::Markdown,
        Format::Json => render::Format::Json,
    };
    render::plan(format, plan, topology, observed, cx.style, cx.out)?;
    Ok(())
}

/// Blocking problems fail the run: the topology cannot be reached as it
/// stands. One kind is drift all the same: a field meshform owns that a hand
/// edit took over (`field_conflict`), which the plan corrects with
/// `--force-conflicts`; a drift check (`--detailed-exitcode`) reports a plan
/// blocked only by those as drift (2), so the issue it files carries the
/// plan and the fix. Conflicts and warnings leave the status alone: apply has
/// nothing to do about them until `--adopt` or a fix by hand, and they are in
/// the plan printed.
fn exit_status(plan: &Plan, detailed: bool) -> Exit {
    let mut blockers = plan.blockers().peekable();
    let blocked = blockers.peek().is_some();
    let only_taken_fields = blockers.all(|b| b.code == "meshform::plan::field_conflict");
    if blocked && !(detailed && only_taken_fields) {
        Exit::Error
    } else if detailed && !plan.is_empty() {
        Exit::Changes
    } else {
        Exit::Success
    }
}

fn plan_json(plan: &Plan) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(plan).expect("a plan serialises");
    bytes.push(b'\n');
    bytes
}

pub fn snapshot(args: &SnapshotArgs, cx: &mut Context<'_>) -> Result<Exit, CliError> {
    let (topology, _warnings) = validate::load(&args.topology.file, cx)?;
    let observed = observe(&topology, &args.topology.file, &args.clusters)?;
    let mut bytes = serde_json::to_vec_pretty(&observed).expect("an observation serialises");
    bytes.push(b'\n');
    if args.out == Path::new("-") {
        cx.out.write_all(&bytes)?;
    } else {
        files::write_atomic(&args.out, &bytes)?;
    }
    Ok(Exit::Success)
}

/// The saved snapshot at `path` when one is given (fully offline), else the clusters, read now.
pub fn snapshot_or_observe(
    path: Option<&Path>,
    topology: &Topology,
    file: &Path,
    clusters: &ClusterArgs,
) -> Result<Observed, CliError> {
    match path {
        Some(path) => {
            let observed = read_snapshot(path)?;
            tracing::info!(path = %path.display(), observed_at = %observed.observed_at, "read snapshot");
            Ok(observed)
        }
        None => observe(topology, file, clusters),
    }
}

/// Reads every cluster of the topology.
pub fn observe(topology: &Topology, file: &Path, clusters: &ClusterArgs) -> Result<Observed, CliError> {
    let sources = Sources {
        base_dir: file.parent().map(Path::to_path_buf).unwrap_or_default(),
        kubeconfig: clusters.kubeconfig.clone(),
        timeout: clusters.timeout,
        keepalive: clusters.keepalive,
    };
    Ok(super::runtime()?.block_on(crate::reconcile::observe(topology, &sources)))
}

/// Reads a plan saved with `plan --out`.
pub fn read_plan(path: &Path) -> Result<Plan, CliError> {
    let bytes = files::read_limited(path, MAX_SNAPSHOT_BYTES, "plan")?;
    let bad = |reason: String| CliError::BadPlan {
        path: path.to_path_buf(),
        reason,
    };
    let version = serde_json::from_slice::<serde_json::Value>(&bytes)
        .map_err(|e| bad(e.to_string()))?
        .get("format_version")
        .and_then(serde_json::Value::as_u64);
    if version != Some(u64::from(plan::PLAN_FORMAT_VERSION)) {
        // Version 2 records the planning choices apply plans a saved plan
        // again with: an older plan cannot be checked.
        let older = version.is_some_and(|v| v < u64::from(plan::PLAN_FORMAT_VERSION));
        return Err(bad(format!(
            "its format_version is {}, this meshform reads version {}{}",
            version.map_or_else(|| "missing".to_string(), |v| v.to_string()),
            plan::PLAN_FORMAT_VERSION,
            if older {
                " (it was saved by an older meshform and does not record the planning choices apply must plan it again with)"
            } else {
                ""
            }
        )));
    }
    serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))
}

pub(super) fn read_snapshot(path: &Path) -> Result<Observed, CliError> {
    let bytes = files::read_limited(path, MAX_SNAPSHOT_BYTES, "snapshot")?;
    let bad = |reason: String| CliError::BadSnapshot {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() > MAX_SNAPSHOT_BYTES {
        return Err(bad(format!("it is larger than {MAX_SNAPSHOT_BYTES} bytes")));
    }
    // Check the version first, so an old or future format gets a clear message.
    let version = serde_json::from_slice::<serde_json::Value>(&bytes)
        .map_err(|e| bad(e.to_string()))?
        .get("format_version")
        .and_then(serde_json::Value::as_u64);
    if version != Some(u64::from(SNAPSHOT_FORMAT_VERSION)) {
        // Version 2 added what the Istio installs hold (gateway address,
        // cluster id, roots of trust), 4 the Gateway API gateways, the
        // ambient data plane and a remote-profile install's istiod Service
        // and pilot address: an older snapshot cannot be judged.
        let older = version.is_some_and(|v| v < u64::from(SNAPSHOT_FORMAT_VERSION));
        return Err(bad(format!(
            "its format_version is {}, this meshform reads version {SNAPSHOT_FORMAT_VERSION}{}",
            version.map_or_else(|| "missing".to_string(), |v| v.to_string()),
            if older {
                " (it was taken by an older meshform and lacks what the Istio installs hold)"
            } else {
                ""
            }
        )));
    }
    serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::model::ObjectFacts;
    use crate::observe::synthetic;
    use crate::plan::simulate::simulate;

    const MESH: &str = "[mesh]\nname = \"m\"\n[[cluster]]\nname = \"a\"\nnetwork = \"n\"\n[[cluster]]\nname = \"b\"\nnetwork = \"n\"\n";

    fn converged() -> (Topology, Observed) {
        let (topology, _) = crate::topology::check("mesh.toml", MESH.as_bytes())
            .into_result()
            .expect("a valid topology");
        let fresh = synthetic::fresh(&topology, "2025-06-01T12:00:00Z".parse().unwrap());
        let first = plan::plan(&topology, &fresh, &Options::default()).unwrap();
        let observed = simulate(&fresh, &first, jiff::SignedDuration::from_hours(24));
        (topology, observed)
    }

    fn status(topology: &Topology, observed: &Observed, detailed: bool) -> Exit {
        exit_status(&plan::plan(topology, observed, &Options::default()).unwrap(), detailed)
    }

    #[test]
    fn a_blocked_plan_exits_1_drift_2_and_conflicts_alone_0() {
        let (topology, converged) = converged();
        assert_eq!(status(&topology, &converged, true), Exit::Success);

        // Drift: b's label changed by hand; apply would correct it.
        let mut drifted = converged.clone();
        let ns = drifted.facts_mut("b").unwrap().namespace.as_mut().unwrap();
        ns.network = Some("by-hand".into());
        assert_eq!(status(&topology, &drifted, true), Exit::Changes);
        assert_eq!(status(&topology, &drifted, false), Exit::Success);

        // The same drift, but the label is owned by another manager: apply is
        // blocked (1), a drift check still reports drift (2).
        let mut taken = drifted.clone();
        let ns = taken.facts_mut("b").unwrap().namespace.as_mut().unwrap();
        ns.network_owners = vec!["kubectl-label".into()];
        assert_eq!(status(&topology, &taken, true), Exit::Changes);
        assert_eq!(status(&topology, &taken, false), Exit::Error);

        // Any other blocker beside it is an error for a drift check too.
        let mut blocked = taken.clone();
        blocked.facts_mut("a").unwrap().installs.values_mut().for_each(|i| {
            i.mesh_id = Some("another-mesh".into());
        });
        let plan = plan::plan(&topology, &blocked, &Options::default()).unwrap();
        assert!(
            plan.blockers().any(|b| b.code.ends_with("mesh_id")),
            "{:?}",
            plan.findings
        );
        assert_eq!(exit_status(&plan, true), Exit::Error);

        // A reader role made by hand: a conflict, nothing for apply to do.
        let mut conflict = converged;
        conflict.facts_mut("b").unwrap().reader.cluster_role = Some(ObjectFacts {
            uid: "by-hand".into(),
            resource_version: "1".into(),
            managed: false,
            spec_hash: None,
            content_sha256: None,
            content_owners: Vec::new(),
        });
        let conflicted = plan::plan(&topology, &conflict, &Options::default()).unwrap();
        assert!(conflicted.findings.iter().any(|f| f.code.ends_with("reader_unmanaged")));
        assert_eq!(exit_status(&conflicted, true), Exit::Success);
    }
}
