//! The plan as JSON: the serde form of [`Plan`], and the JSON Schema
//! published as `schemas/plan.schema.json` for tools that read it. The
//! document carries `format_version`, bumped on any breaking change.

use std::io::{self, Write};

use crate::plan::Plan;

/// Writes the plan, pretty-printed, with a trailing newline.
pub fn plan(plan: &Plan, out: &mut dyn Write) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, plan)?;
    writeln!(out)
}

/// The JSON Schema of [`plan`]'s output, as published in `schemas/plan.schema.json`.
pub fn plan_schema() -> serde_json::Value {
    // Unlike mesh.toml, JSON has null and the plan writes it (`"previous":
    // null`), so the schema keeps schemars' nullable types.
    schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<Plan>()
        .to_value()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::scenarios;

    fn render(plan: &Plan) -> String {
        let mut out = Vec::new();
        super::plan(plan, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn snapshots() {
        for (name, (plan, _)) in scenarios::all() {
            scenarios::settings().bind(|| insta::assert_snapshot!(format!("json__{name}"), render(&plan)));
        }
    }

    #[test]
    fn round_trips() {
        for (name, (plan, _)) in scenarios::all() {
            let text = render(&plan);
            assert!(text.ends_with("}\n"), "{name}");
            let back: Plan = serde_json::from_str(&text).unwrap();
            assert_eq!(back, plan, "{name}");
        }
    }
}
