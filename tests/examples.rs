//! The example scenarios under `examples/` cannot rot: every directory with a
//! `mesh.toml` has its snapshot and expected plans, the snapshots are what
//! `cargo run --example scenarios` writes, and the plans are what the real
//! binary prints for them, offline.
//!
//! After a deliberate change to meshform's output, rewrite them all with
//! `UPDATE_EXAMPLES=1 cargo test --test examples` and review the diff.

mod support;

#[allow(dead_code)]
#[path = "../examples/scenarios.rs"]
mod scenarios;

use std::fs;
use std::path::{Path, PathBuf};

use support::cli::meshform;

/// Every scenario directory holds these; `observed.json` first, as the plans are made from it.
const FILES: [&str; 5] = ["mesh.toml", "observed.json", "plan.txt", "plan.md", "check.txt"];

/// The scenarios issue 6 asks for; more may be added.
const REQUIRED: [&str; 5] = [
    "flat-network",
    "network-per-cluster",
    "mixed",
    "network-move",
    "gke-context",
];

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn updating() -> bool {
    std::env::var_os("UPDATE_EXAMPLES").is_some_and(|v| !v.is_empty() && v != "0")
}

/// The directories under `examples/` that are not scenarios by design.
const NOT_SCENARIOS: [&str; 2] = ["ci", "rbac"];

#[test]
fn every_scenario_directory_has_all_its_files() {
    let mut problems = Vec::new();
    for entry in fs::read_dir(examples()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !path.is_dir() || NOT_SCENARIOS.contains(&name.as_str()) {
            continue;
        }
        for file in FILES {
            // With UPDATE_EXAMPLES the generated files are about to be written.
            let generated = file != "mesh.toml" && updating();
            if !path.join(file).is_file() && !generated {
                problems.push(format!("examples/{name} has no {file}"));
            }
        }
    }
    for name in REQUIRED {
        if !examples().join(name).join("mesh.toml").is_file() {
            problems.push(format!("the {name} scenario is missing (examples/{name}/mesh.toml)"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// What `meshform --color never plan` prints on stdout for a scenario.
fn plan(dir: &Path, format: &str) -> String {
    let output = meshform()
        .args(["--color", "never", "plan", "--format", format, "-f"])
        .arg(dir.join("mesh.toml"))
        .arg("--observed")
        .arg(dir.join("observed.json"))
        .output()
        .expect("meshform runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The mesh that is not ready shows why, and its plan is blocked: exit 1.
    let expected = if dir.ends_with("not-ready") { Some(1) } else { Some(0) };
    assert!(
        output.status.code() == expected && stderr.is_empty(),
        "meshform plan of {} exited {:?}; stderr:\n{stderr}",
        dir.display(),
        output.status.code()
    );
    String::from_utf8(output.stdout).expect("plans are UTF-8")
}

/// What `meshform --color never check` prints for a scenario. Snapshots of
/// clusters meshform has not written to yet fail their checks (exit 1) as
/// the mesh that is not ready does.
fn check_output(dir: &Path) -> String {
    let output = meshform()
        .args(["--color", "never", "check", "-f"])
        .arg(dir.join("mesh.toml"))
        .arg("--observed")
        .arg(dir.join("observed.json"))
        .output()
        .expect("meshform runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8(output.stdout).expect("checks are UTF-8");
    let failed = stdout.contains("[FAIL]");
    assert!(
        output.status.code() == Some(i32::from(failed)) && stderr.is_empty(),
        "meshform check of {} exited {:?}; stderr:\n{stderr}",
        dir.display(),
        output.status.code()
    );
    stdout
}

/// Compares `actual` with the checked-in file, or rewrites it with UPDATE_EXAMPLES.
fn check(path: &Path, actual: &str, stale: &mut Vec<String>) {
    let expected = fs::read_to_string(path).unwrap_or_default();
    if expected == actual {
        return;
    }
    if updating() {
        fs::write(path, actual).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    } else {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(e, a)| e != a)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        stale.push(format!(
            "{} differs from meshform's output from line {}:\n  checked in: {:?}\n  now:        {:?}",
            path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap_or(path).display(),
            first + 1,
            expected.lines().nth(first).unwrap_or("<end of file>"),
            actual.lines().nth(first).unwrap_or("<end of file>"),
        ));
    }
}

// One test, in order: a rewritten snapshot must be in place before the plans made from it.
#[test]
fn scenarios_match_generator_and_binary() {
    let mut stale = Vec::new();
    let dirs = scenarios::scenario_dirs(&examples());
    assert!(dirs.len() >= REQUIRED.len(), "{dirs:?}");
    for dir in &dirs {
        let snapshot = scenarios::scenario_snapshot(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        check(&dir.join("observed.json"), &snapshot, &mut stale);
        check(&dir.join("plan.txt"), &plan(dir, "text"), &mut stale);
        check(&dir.join("plan.md"), &plan(dir, "markdown"), &mut stale);
        check(&dir.join("check.txt"), &check_output(dir), &mut stale);
    }
    // The README's main command plans mesh.toml.example against this one.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let snapshot = scenarios::fresh_snapshot(&manifest.join("mesh.toml.example")).unwrap();
    check(&examples().join("observed.json"), &snapshot, &mut stale);
    assert!(
        stale.is_empty(),
        "{}\n\nIf the change is intended, run `UPDATE_EXAMPLES=1 cargo test --test examples` and review the diff.",
        stale.join("\n")
    );
}

#[test]
fn network_move_detaches_relabels_reattaches_and_restarts() {
    let plan = fs::read_to_string(examples().join("network-move/plan.txt")).unwrap();
    let at = |needle: &str| {
        plan.find(needle)
            .unwrap_or_else(|| panic!("network-move/plan.txt has no {needle:?}:\n{plan}"))
    };
    let detach = at("Phase 1 of 4: detach");
    let relabel = at("~ Namespace istio-system in eu-central");
    let attach = at("+ Secret istio-system/istio-remote-secret-eu-central in eu-west");
    let restart = at("rollout restart");
    assert!(detach < relabel && relabel < attach && attach < restart, "{plan}");
    at("1 network change (detach + re-attach)");
}

#[test]
fn flat_network_writes_no_gateway() {
    let plan = fs::read_to_string(examples().join("flat-network/plan.txt")).unwrap();
    assert!(!plan.contains("Gateway"), "{plan}");
    assert!(plan.contains("Plan: 3 attach"), "{plan}");
}

#[test]
fn gke_contexts_keep_their_name_and_the_mesh_uses_the_explicit_one() {
    let mesh = fs::read_to_string(examples().join("gke-context/mesh.toml")).unwrap();
    assert!(mesh.contains("context = \"gke_"), "{mesh}");
    let plan = fs::read_to_string(examples().join("gke-context/plan.txt")).unwrap();
    assert!(plan.contains("istio-remote-secret-payments"), "{plan}");
    assert!(!plan.contains("istio-remote-secret-gke_"), "{plan}");
}
