//! Published JSON Schemas must match the types they are generated from.
//! Refresh with `UPDATE_SCHEMAS=1 cargo test --test schemas`.

use std::fs;

fn check(path: &str, generated: serde_json::Value) {
    let expected = serde_json::to_string_pretty(&generated).unwrap() + "\n";
    if std::env::var_os("UPDATE_SCHEMAS").is_some() {
        fs::write(path, &expected).unwrap();
        return;
    }
    let on_disk = fs::read_to_string(path).unwrap_or_default();
    assert!(
        on_disk == expected,
        "{path} is out of date with the Rust types; run `UPDATE_SCHEMAS=1 cargo test --test schemas` and commit it"
    );
}

#[test]
fn mesh_schema_is_up_to_date() {
    check("schemas/mesh.schema.json", meshform::topology::schema());
}

#[test]
fn plan_schema_is_up_to_date() {
    check("schemas/plan.schema.json", meshform::render::json::plan_schema());
}

#[test]
fn plan_schema_describes_the_json_plan() {
    // The published schema must name every action and change the JSON view writes.
    let schema = serde_json::to_string(&meshform::render::json::plan_schema()).unwrap();
    for tag in [
        "delete_remote_secret",
        "set_network",
        "ensure_reader",
        "ensure_gateway",
        "delete_gateway",
        "delete_ambient_gateway",
        "write_remote_secret",
        "restart_workloads",
        "revoke_reader_tokens",
        "network_change",
        "became_remote",
        "format_version",
    ] {
        assert!(
            schema.contains(&format!("\"{tag}\"")),
            "{tag} is missing from the plan schema"
        );
    }
}

#[test]
fn schema_rejects_what_validate_rejects() {
    // The shape check walks this very schema: an unknown key in [[cluster]] must be refused by both.
    let schema = meshform::topology::schema();
    let cluster = &schema["$defs"]["ClusterEntry"];
    assert_eq!(cluster["additionalProperties"], serde_json::json!(false));
    let checked = meshform::topology::check(
        "t.toml",
        b"[mesh]\nname = \"m\"\n[[cluster]]\nname = \"a\"\nzone = \"x\"\n",
    );
    assert!(checked.topology.is_none());
    assert_eq!(checked.problems.problems[0].code, meshform::topology::Code::UnknownKey);
}
