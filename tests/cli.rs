//! The CLI's shared surface through the real binary: `graph`, `completions`,
//! `--help` of every command, colour (`--color`, `NO_COLOR`), `-q`/`-v`, and
//! the exit status of usage errors.

mod support;

use clap::CommandFactory;
use meshform::cli::Cli;
use support::cli::{exit_code, meshform, run};

/// The stdout section of a [`run`] output.
fn stdout(out: &str) -> &str {
    out.split("----- stdout -----\n")
        .nth(1)
        .unwrap()
        .split("\n----- stderr -----\n")
        .next()
        .unwrap()
}

/// The stderr section of a [`run`] output.
fn stderr(out: &str) -> &str {
    out.split("\n----- stderr -----\n").nth(1).unwrap()
}

const PLAN_EXAMPLE: [&str; 5] = [
    "plan",
    "-f",
    "mesh.toml.example",
    "--observed",
    "examples/observed.json",
];

#[test]
fn graph_draws_the_declared_mesh_in_mermaid() {
    let out = run(meshform().args(["graph", "-f", "mesh.toml.example"]));
    assert_eq!(exit_code(&out), Some(0), "{out}");
    insta::assert_snapshot!("graph_example_mermaid", out);
}

#[test]
fn graph_draws_dot() {
    let out = run(meshform().args(["graph", "-f", "examples/flat-network/mesh.toml", "--format", "dot"]));
    insta::assert_snapshot!(out, @r#"
    success: true
    exit_code: 0
    ----- stdout -----
    digraph "prod" {
      rankdir=LR;
      node [fontname="Helvetica"];
      subgraph cluster_n0 {
        label="network vpc-prod";
        c0 [label="prod-a\nprimary, sidecar", shape=box, style="bold"];
        c1 [label="prod-b\nprimary, sidecar", shape=box, style="bold"];
        c2 [label="prod-c\nremote, sidecar", shape=box, style="rounded"];
      }
      c0 -> c1 [dir=both];
      c0 -> c2 [dir=both];
      c1 -> c2 [dir=both];
    }

    ----- stderr -----
    "#);
}

#[test]
fn graph_with_a_snapshot_marks_a_network_label_that_differs() {
    // network-move's snapshot has eu-central still labelled with its old network.
    let out = run(meshform().args([
        "graph",
        "-f",
        "examples/network-move/mesh.toml",
        "--observed",
        "examples/network-move/observed.json",
    ]));
    assert_eq!(exit_code(&out), Some(0), "{out}");
    assert!(
        stdout(&out).contains("eu-central<br/>primary, sidecar<br/>(labelled eu-central)"),
        "{out}"
    );
    assert!(stdout(&out).contains("classDef relabel"), "{out}");
}

#[test]
fn graph_refuses_a_file_that_is_not_a_snapshot() {
    let out = run(meshform().args(["graph", "-f", "mesh.toml.example", "--observed", "mesh.toml.example"]));
    assert_eq!(exit_code(&out), Some(1), "{out}");
    assert!(stderr(&out).contains("is not a meshform snapshot"), "{out}");
}

#[test]
fn pull_request_markdown_embeds_the_same_diagram_as_graph() {
    // Of the same observation: the markdown draws each gateway as observed.
    let graph = run(meshform().args([
        "graph",
        "-f",
        "mesh.toml.example",
        "--observed",
        "examples/observed.json",
    ]));
    let markdown = run(meshform().args(PLAN_EXAMPLE).args(["--format", "markdown"]));
    let fenced = format!("```mermaid\n{}```", stdout(&graph));
    assert!(stdout(&markdown).contains(&fenced), "{markdown}\n\n{graph}");
}

#[test]
fn completions_for_every_shell() {
    for (shell, sign) in [
        ("bash", "complete -F _meshform"),
        ("zsh", "#compdef meshform"),
        ("fish", "complete -c meshform"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = run(meshform().args(["completions", shell]));
        assert_eq!(exit_code(&out), Some(0), "{shell}: {out}");
        let script = stdout(&out);
        assert!(script.contains(sign), "{shell}: {script}");
        for command in ["validate", "plan", "apply", "snapshot", "graph", "completions"] {
            assert!(script.contains(command), "{shell} completes {command}");
        }
    }
    let out = run(meshform().args(["completions", "tcsh"]));
    assert_eq!(exit_code(&out), Some(1), "{out}");
}

#[test]
fn every_command_has_help_with_examples() {
    let commands: Vec<String> = Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    assert!(commands.len() >= 7, "{commands:?}");
    let top = run(meshform().arg("--help"));
    assert_eq!(exit_code(&top), Some(0));
    assert!(stdout(&top).contains("Examples:"), "{top}");
    for command in commands {
        let out = run(meshform().args([&command, "--help"]));
        assert_eq!(exit_code(&out), Some(0), "{command}: {out}");
        let help = stdout(&out);
        assert!(
            help.contains(&format!("meshform {command}")),
            "{command} --help: {help}"
        );
        assert!(help.contains("Example"), "{command} --help has no examples:\n{help}");
        // The global flags are on every command.
        for flag in ["--color", "--quiet", "--verbose"] {
            assert!(help.contains(flag), "{command} --help lacks {flag}");
        }
    }
}

// Regression: clap exits 2 on a usage error, which `plan --detailed-exitcode` uses for
// "changes"; a mistyped flag in a drift check must not read as drift.
#[test]
fn usage_errors_exit_1_not_2() {
    let out = run(meshform().args(["plan", "--detailed-exitcod"]));
    assert_eq!(exit_code(&out), Some(1), "{out}");
    assert!(stderr(&out).contains("unexpected argument"), "{out}");
    let out = run(meshform().args(["--quiet", "--verbose", "schema"]));
    assert_eq!(exit_code(&out), Some(1), "{out}");
    assert!(stderr(&out).contains("cannot be used with"), "{out}");
}

#[test]
fn colour_follows_color_and_no_color() {
    const ESC: char = '\x1b';
    // The helper sets NO_COLOR=1: auto means none, `always` overrides it.
    let plain = run(meshform().args(PLAN_EXAMPLE));
    assert!(!plain.contains(ESC), "{plain}");
    let always = run(meshform().arg("--color=always").args(PLAN_EXAMPLE));
    assert!(stdout(&always).contains(ESC), "{always}");
    let never = run(meshform()
        .args(["--color", "never"])
        .args(PLAN_EXAMPLE)
        .env_remove("NO_COLOR"));
    assert!(!never.contains(ESC), "{never}");
    // Without NO_COLOR, auto colours only a terminal, and a test's pipes are not one.
    let auto = run(meshform().args(PLAN_EXAMPLE).env_remove("NO_COLOR"));
    assert!(!auto.contains(ESC), "{auto}");

    // Diagnostics on stderr, and clap's own usage errors, follow the same switch.
    let invalid = ["validate", "-f", "tests/fixtures/invalid/cluster_name_underscores.toml"];
    assert!(!run(meshform().args(invalid)).contains(ESC));
    assert!(stderr(&run(meshform().arg("--color=always").args(invalid))).contains(ESC));
    assert!(!run(meshform().args(["plan", "--bogus"])).contains(ESC));
    assert!(stderr(&run(meshform().args(["--color", "always", "plan", "--bogus"]))).contains(ESC));
}

#[test]
fn verbose_logs_to_stderr_and_quiet_keeps_it_clean() {
    let quiet = run(meshform().arg("-q").args(PLAN_EXAMPLE));
    assert_eq!(stderr(&quiet), "", "{quiet}");
    let normal = run(meshform().args(PLAN_EXAMPLE));
    assert_eq!(stderr(&normal), "", "{normal}");
    let verbose = run(meshform().arg("-v").args(PLAN_EXAMPLE));
    assert_eq!(stdout(&verbose), stdout(&normal), "logs never go to stdout");
    assert!(stderr(&verbose).contains("read snapshot"), "{verbose}");
    assert!(stderr(&verbose).contains("planned actions=22"), "{verbose}");
    // RUST_LOG wins over -v.
    let filtered = run(meshform().arg("-vv").args(PLAN_EXAMPLE).env("RUST_LOG", "error"));
    assert_eq!(stderr(&filtered), "", "{filtered}");
    // -v works after the subcommand too.
    let after = run(meshform().args(PLAN_EXAMPLE).arg("-v"));
    assert!(stderr(&after).contains("planned"), "{after}");
}

// Regression: `apply --restart-workloads` once ran the restart while its plan
// said "not run by apply", because the flag reached apply but not the plan.
#[test]
fn restart_workloads_is_a_planning_choice_the_plan_shows() {
    let network_move = [
        "plan",
        "-f",
        "examples/network-move/mesh.toml",
        "--observed",
        "examples/network-move/observed.json",
    ];
    let shown = run(meshform().args(network_move));
    assert!(stdout(&shown).contains("(not run by apply)"), "{shown}");
    let enabled = run(meshform().args(network_move).arg("--restart-workloads"));
    assert_eq!(exit_code(&enabled), Some(0), "{enabled}");
    assert!(stdout(&enabled).contains("restart"), "{enabled}");
    assert!(!stdout(&enabled).contains("(not run by apply)"), "{enabled}");
}

// A saved plan was made with its planning choices; apply must not pretend to
// change them afterwards.
#[test]
fn a_saved_plan_takes_no_planning_flags() {
    for flag in [
        "--restart-workloads",
        "--adopt",
        "--rotate-tokens",
        "--skip-unreachable",
        "--revoke-grace=0",
    ] {
        let out = run(meshform().args(["apply", "plan.json", flag]));
        assert_eq!(exit_code(&out), Some(1), "{flag}: {out}");
        assert!(stderr(&out).contains("cannot be used with"), "{flag}: {out}");
    }
}

/// Issue 13 bumped the snapshot format (to 2 for the installs, to 3 for
/// istiod's exposure), issue 31 to 4 (Gateway API gateways, ztunnel): an old snapshot is refused with the reason and the
/// command that makes a new one, not a serde error.
#[test]
fn an_old_snapshot_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("observed.json");
    let text = std::fs::read_to_string("examples/observed.json").unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value["format_version"] = 3.into();
    std::fs::write(&old, value.to_string()).unwrap();
    let out = run(meshform()
        .env("COLUMNS", "400")
        .args(["plan", "-f", "mesh.toml.example", "--observed"])
        .arg(&old));
    assert_eq!(exit_code(&out), Some(1), "{out}");
    let err = stderr(&out);
    assert!(
        err.contains("its format_version is 3, this meshform reads version 4 (it was taken by an older meshform"),
        "{err}"
    );
    assert!(err.contains("make one with `meshform snapshot -o"), "{err}");
}
