//! Plans the shipped example topology against a fresh synthetic observation
//! and prints the plan as JSON: a runnable tour of the planner API.
//!
//! `cargo run --example plan_synthetic`

fn main() -> miette::Result<()> {
    let text = std::fs::read("mesh.toml.example").map_err(|e| miette::miette!("cannot read mesh.toml.example: {e}"))?;
    let (topology, _warnings) = meshform::topology::check("mesh.toml.example", &text)
        .into_result()
        .map_err(miette::Report::new)?;
    let observed = meshform::observe::synthetic::fresh(&topology, jiff::Timestamp::UNIX_EPOCH);
    let plan = meshform::plan::plan(&topology, &observed, &Default::default())?;
    println!("{}", serde_json::to_string_pretty(&plan).expect("a plan serialises"));
    Ok(())
}
