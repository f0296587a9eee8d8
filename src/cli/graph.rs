//! `meshform graph`: the declared mesh as a Mermaid or Graphviz diagram,
//! optionally marked with what a snapshot found. Reads files only; it never
//! contacts a cluster (take a snapshot for that).

use std::path::PathBuf;

use super::{CliError, Context, Exit, TopologyArg, plan, validate};
use crate::render::graph::MeshGraph;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub topology: TopologyArg,

    #[arg(long, value_enum, default_value_t = Format::Mermaid)]
    pub format: Format,

    /// Mark what a snapshot (`meshform snapshot`) found: clusters that could not be read,
    /// missing gateway Services, network labels that differ from mesh.toml.
    #[arg(long, value_name = "PATH")]
    pub observed: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A Mermaid flowchart (GitHub renders it in a ```mermaid block).
    Mermaid,
    /// A Graphviz digraph, for `dot -Tsvg`.
    Dot,
}

pub fn run(args: &Args, cx: &mut Context<'_>) -> Result<Exit, CliError> {
    let (topology, _warnings) = validate::load(&args.topology.file, cx)?;
    let observed = args.observed.as_deref().map(plan::read_snapshot).transpose()?;
    let graph = MeshGraph::new(&topology, observed.as_ref());
    let text = match args.format {
        Format::Mermaid => graph.mermaid(),
        Format::Dot => graph.dot(),
    };
    cx.out.write_all(text.as_bytes())?;
    Ok(Exit::Success)
}
