//! Writes a made-up observation of a topology: every cluster as Istio
//! installs it, before meshform has written anything. Handy for trying
//! `meshform plan --observed` without clusters.
//!
//! `cargo run --example synthetic_snapshot -- mesh.toml.example > observed.json`

fn main() -> miette::Result<()> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "mesh.toml".to_string());
    let text = std::fs::read(&path).map_err(|e| miette::miette!("cannot read {path}: {e}"))?;
    let (topology, _warnings) = meshform::topology::check(&path, &text)
        .into_result()
        .map_err(miette::Report::new)?;
    let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().expect("a valid timestamp");
    let observed = meshform::observe::synthetic::fresh(&topology, now);
    println!(
        "{}",
        serde_json::to_string_pretty(&observed).expect("an observation serialises")
    );
    Ok(())
}
