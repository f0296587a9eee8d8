//! `meshform check`: reads the clusters (or a snapshot), plans with the
//! unreachable ones deferred, and shows the mesh's readiness as a checklist.

use std::path::PathBuf;

use super::{CliError, ClusterArgs, Context, Exit, TopologyArg, plan, validate};
use crate::plan::Options;
use crate::render;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub topology: TopologyArg,

    #[command(flatten)]
    pub clusters: ClusterArgs,

    /// Check a saved snapshot (`meshform snapshot`) instead of the clusters: fully offline.
    #[arg(long, value_name = "PATH")]
    pub observed: Option<PathBuf>,

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
    let observed = plan::snapshot_or_observe(args.observed.as_deref(), &topology, &args.topology.file, &args.clusters)?;
    // Every cluster gets its lines: one that cannot be read fails its own
    // check instead of stopping the plan.
    let options = Options {
        skip_unreachable: true,
        ..Options::default()
    };
    let plan = crate::plan::plan(&topology, &observed, &options)?;
    let checklist = crate::check::check(&topology, &observed, &plan);
    match args.format {
        Format::Text => render::check::text(&checklist, cx.style, cx.out)?,
        Format::Json => render::check::json(&checklist, cx.out)?,
    }
    Ok(if checklist.passed() { Exit::Success } else { Exit::Error })
}
