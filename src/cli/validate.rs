//! `meshform validate`.

use std::path::Path;

use super::{Context, Exit, TopologyArg, files};
use crate::render;
use crate::topology::{self, MAX_FILE_BYTES, Problems, Topology};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub topology: TopologyArg,

    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

pub fn run(args: &Args, cx: &mut Context<'_>) -> Result<Exit, super::CliError> {
    let (name, checked) = check_file(&args.topology.file)?;
    match args.format {
        Format::Json => render::diagnostics::json(&checked.problems, checked.topology.as_ref(), cx.out)?,
        Format::Text => {
            render::diagnostics::text(&checked.problems, cx.err_style, cx.err)?;
            if let (Some(t), false) = (&checked.topology, cx.quiet) {
                let plural = |n: usize| if n == 1 { "" } else { "s" };
                let (clusters, networks) = (t.clusters.len(), t.networks.len());
                writeln!(
                    cx.out,
                    "{name} is valid: mesh {:?}, {clusters} cluster{} on {networks} network{}",
                    t.mesh.name,
                    plural(clusters),
                    plural(networks),
                )?;
            }
        }
    }
    Ok(if checked.topology.is_some() {
        Exit::Success
    } else {
        Exit::Error
    })
}

/// Reads and checks a topology file; `name` is how diagnostics show it.
pub fn check_file(path: &Path) -> Result<(String, topology::Checked), super::CliError> {
    let bytes = files::read_limited(path, MAX_FILE_BYTES, "topology")?;
    let name = path.display().to_string();
    let checked = topology::check(&name, &bytes);
    Ok((name, checked))
}

/// Loads a valid topology for commands that go on to plan: problems are
/// shown on stderr, warnings included; errors stop the command.
pub fn load(path: &Path, cx: &mut Context<'_>) -> Result<(Topology, Problems), super::CliError> {
    let (name, checked) = check_file(path)?;
    render::diagnostics::text(&checked.problems, cx.err_style, cx.err)?;
    checked
        .into_result()
        .map_err(|_| super::CliError::InvalidTopology(name))
}
