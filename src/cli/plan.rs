//! `meshform plan` and `meshform snapshot`.

use std::path::{Path, PathBuf};

use super::{ClusterArgs, CliError, Context, Exit, TopologyArg, files, validate};
use crate::observe::connect::Sources;
use crate::observe::model::{Observed, SNAPSHOT_FORMAT_VERSION};
use crate::plan::{self, Options, Plan};
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

    /// Also save the plan, with fingerprints of what it was made from, for `meshform apply PLAN`.
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,

    /// Exit 2 when there are changes, 0 when there are none.
    #[arg(long)]
    pub detailed_exitcode: bool,

    /// Plan only actions that write to, or are about, this cluster (repeatable).
    #[arg(long = "target", value_name = "CLUSTER")]
    pub targets: Vec<String>,

    /// Plan the clusters that can be read and defer the others, instead of failing.
    #[arg(long)]
    pub skip_unreachable: bool,

    /// Take over remote secrets meshform would write that exist but are not its own.
    #[arg(long)]
    pub adopt: bool,

    /// Plan a new reader token in every remote secret.
    #[arg(long)]
    pub rotate_tokens: bool,
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
    let observed = match &args.observed {
        Some(path) => read_snapshot(path)?,
        None => observe(&topology, &args.topology.file, &args.clusters)?,
    };
    let options = Options {
        skip_unreachable: args.skip_unreachable,
        adopt: args.adopt,
        rotate_tokens: args.rotate_tokens,
        targets: args.targets.clone(),
        ..Options::default()
    };
    let plan = plan::plan(&topology, &observed, &options)?;
    if let Some(path) = &args.out {
        files::write_atomic(path, &plan_json(&plan))?;
    }
    match args.format {
        Format::Json => cx.out.write_all(&plan_json(&plan))?,
        Format::Text | Format::Markdown => cx.out.write_all(&plan_json(&plan))?,
    }
    Ok(exit_status(&plan, args.detailed_exitcode))
}

/// Blocking problems fail the run: the topology cannot be reached as it stands.
fn exit_status(plan: &Plan, detailed: bool) -> Exit {
    if plan.blockers().next().is_some() {
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

/// Reads every cluster of the topology.
pub fn observe(topology: &Topology, file: &Path, clusters: &ClusterArgs) -> Result<Observed, CliError> {
    let sources = Sources {
        base_dir: file.parent().map(Path::to_path_buf).unwrap_or_default(),
        kubeconfig: clusters.kubeconfig.clone(),
        timeout: clusters.timeout,
    };
    let runtime = super::runtime()?;
    Ok(runtime.block_on(async {
        let connections = crate::observe::connect_all(topology, &sources).await;
        crate::observe::observe(topology, &connections).await
    }))
}

fn read_snapshot(path: &Path) -> Result<Observed, CliError> {
    let bytes = files::read_limited(path, MAX_SNAPSHOT_BYTES, "snapshot")?;
    let bad = |reason: String| CliError::BadSnapshot { path: path.to_path_buf(), reason };
    if bytes.len() > MAX_SNAPSHOT_BYTES {
        return Err(bad(format!("it is larger than {MAX_SNAPSHOT_BYTES} bytes")));
    }
    // Check the version first, so an old or future format gets a clear message.
    let version = serde_json::from_slice::<serde_json::Value>(&bytes)
        .map_err(|e| bad(e.to_string()))?
        .get("format_version")
        .and_then(serde_json::Value::as_u64);
    if version != Some(u64::from(SNAPSHOT_FORMAT_VERSION)) {
        return Err(bad(format!(
            "its format_version is {}, this meshform reads version {SNAPSHOT_FORMAT_VERSION}",
            version.map_or_else(|| "missing".to_string(), |v| v.to_string())
        )));
    }
    serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))
}
