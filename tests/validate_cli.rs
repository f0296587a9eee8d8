//! `meshform validate` as users run it: the real binary, its exit status,
//! stdout and stderr, through the one helper in `support::cli`.

mod support;

use std::fs;
use std::process::Stdio;

use support::cli::{exit_code, meshform, run, settings};

fn validate(args: &[&str]) -> String {
    run(meshform().arg("validate").args(args))
}

#[test]
fn the_example_is_valid() {
    insta::assert_snapshot!(validate(&["-f", "mesh.toml.example"]), @r#"
    success: true
    exit_code: 0
    ----- stdout -----
    mesh.toml.example is valid: mesh "mesh1", 4 clusters on 3 networks

    ----- stderr -----
    "#);
}

#[test]
fn an_invalid_file_exits_1_with_its_diagnostics_on_stderr() {
    let out = validate(&["-f", "tests/fixtures/invalid/cluster_name_underscores.toml"]);
    assert_eq!(exit_code(&out), Some(1));
    insta::assert_snapshot!("validate_invalid", out);
}

#[test]
fn several_problems_are_reported_in_one_run() {
    let out = validate(&["-f", "tests/fixtures/invalid/several_problems.toml"]);
    assert_eq!(exit_code(&out), Some(1));
    insta::assert_snapshot!("validate_several_problems", out);
}

#[test]
fn warnings_are_shown_and_the_file_is_still_valid() {
    let out = validate(&["-f", "tests/fixtures/invalid/unused_network_typo.toml"]);
    assert_eq!(exit_code(&out), Some(0));
    insta::assert_snapshot!("validate_warnings", out);
}

#[test]
fn quiet_keeps_warnings_but_drops_the_summary() {
    let out = run(meshform().args([
        "--quiet",
        "validate",
        "-f",
        "tests/fixtures/invalid/unused_network.toml",
    ]));
    assert_eq!(exit_code(&out), Some(0));
    let stdout = out
        .split("----- stdout -----\n")
        .nth(1)
        .unwrap()
        .split("----- stderr -----")
        .next()
        .unwrap();
    assert_eq!(stdout.trim(), "");
    assert!(out.contains("no cluster is on network \"us\""), "{out}");
}

#[test]
fn a_missing_file_names_the_path_and_how_to_start() {
    insta::assert_snapshot!(validate(&["-f", "does/not/exist.toml"]), @r"
    success: false
    exit_code: 1
    ----- stdout -----

    ----- stderr -----
    meshform::cli::read

      x cannot read does/not/exist.toml
      `-> No such file or directory (os error 2)
      help: create does/not/exist.toml (mesh.toml.example is a commented start), or point at another
            file with -f PATH
    ");
}

#[test]
fn the_default_file_is_mesh_toml_in_the_current_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(meshform().current_dir(dir.path()).arg("validate"));
    insta::assert_snapshot!(out, @r"
    success: false
    exit_code: 1
    ----- stdout -----

    ----- stderr -----
    meshform::cli::read

      x cannot read mesh.toml
      `-> No such file or directory (os error 2)
      help: create mesh.toml (mesh.toml.example is a commented start), or point at another file with
            -f PATH
    ");

    fs::write(
        dir.path().join("mesh.toml"),
        "[mesh]\nname = \"m\"\n\n[[cluster]]\nname = \"east\"\n",
    )
    .unwrap();
    let out = run(meshform().current_dir(dir.path()).arg("validate"));
    assert_eq!(exit_code(&out), Some(0), "{out}");
}

#[test]
fn a_directory_is_not_a_topology_file() {
    insta::assert_snapshot!(validate(&["-f", "tests/fixtures"]), @r"
    success: false
    exit_code: 1
    ----- stdout -----

    ----- stderr -----
    meshform::cli::read

      x cannot read tests/fixtures
      `-> it is a directory
      help: pass the path of a topology file
    ");
}

#[test]
fn a_ten_megabyte_file_is_refused_without_reading_it_all() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mesh.toml");
    let mut text = "[mesh]\nname = \"m\"\n".to_string();
    text.push_str(&"# filler\n".repeat(10 * 1024 * 1024 / 9));
    fs::write(&path, text).unwrap();
    let out = validate(&["-f", path.to_str().unwrap()]);
    assert_eq!(exit_code(&out), Some(1));
    settings(&[dir.path()]).bind(|| insta::assert_snapshot!("validate_too_large", out));
}

#[test]
fn credentials_in_api_server_never_reach_the_terminal() {
    for format in ["text", "json"] {
        let out = validate(&[
            "-f",
            "tests/fixtures/invalid/api_server_credentials_next_to_bad_name.toml",
            "--format",
            format,
        ]);
        assert_eq!(exit_code(&out), Some(1), "{out}");
        assert!(out.contains("must not carry credentials"), "{out}");
        assert!(!out.contains("hunter2") && !out.contains("admin:"), "{format}:\n{out}");
    }
}

// --- JSON

#[test]
fn json_carries_the_resolved_topology_with_defaults() {
    let out = validate(&["-f", "mesh.toml.example", "--format", "json"]);
    assert_eq!(exit_code(&out), Some(0));
    insta::assert_snapshot!("validate_json_example", out);

    let json = out
        .split("----- stdout -----\n")
        .nth(1)
        .unwrap()
        .split("\n----- stderr -----")
        .next()
        .unwrap();
    let report: serde_json::Value = serde_json::from_str(json).unwrap();
    let topology = &report["topology"];
    assert_eq!(topology["mesh"]["namespace"], "istio-system");
    let us_east = &topology["clusters"][2];
    assert_eq!(us_east["name"], "us-east");
    assert_eq!(us_east["network"], "us-east", "network defaults to the cluster name");
    assert_eq!(us_east["role"], "primary");
    assert_eq!(
        topology["networks"]["us-east"]["gateway_service"],
        "istio-eastwestgateway"
    );
    assert_eq!(topology["networks"]["us-east"]["gateway_port"], 15443);
}

#[test]
fn json_fills_in_every_default_of_a_minimal_file() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("mesh.toml"),
        "[mesh]\nname = \"m\"\n\n[[cluster]]\nname = \"east\"\n",
    )
    .unwrap();
    let out = run(meshform()
        .current_dir(dir.path())
        .args(["validate", "--format", "json"]));
    insta::assert_snapshot!(out, @r#"
    success: true
    exit_code: 0
    ----- stdout -----
    {
      "format_version": 1,
      "file": "mesh.toml",
      "valid": true,
      "errors": 0,
      "warnings": 0,
      "diagnostics": [],
      "topology": {
        "mesh": {
          "name": "m",
          "namespace": "istio-system",
          "tokens": {
            "mode": "request",
            "lifetime_seconds": 604800,
            "rotate_at_percent": 50
          }
        },
        "clusters": [
          {
            "name": "east",
            "context": "east",
            "kubeconfig": null,
            "network": "east",
            "role": "primary",
            "api_server": null
          }
        ],
        "networks": {
          "east": {
            "gateway_service": "istio-eastwestgateway",
            "gateway_port": 15443
          }
        }
      }
    }

    ----- stderr -----
    "#);
}

#[test]
fn json_of_an_invalid_file_lists_every_problem_and_no_topology() {
    let out = validate(&["-f", "tests/fixtures/invalid/several_problems.toml", "--format", "json"]);
    assert_eq!(exit_code(&out), Some(1));
    insta::assert_snapshot!("validate_json_invalid", out);
}

// --- closed pipes: `meshform validate | head` must keep validate's verdict

/// A pipe whose reading end is already closed: every write to it fails
/// with EPIPE, deterministically.
fn closed_pipe() -> Stdio {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer.into()
}

#[test]
fn a_closed_stdout_does_not_change_the_exit_status() {
    for (file, expected) in [
        ("mesh.toml.example", 0),
        ("tests/fixtures/invalid/unused_network.toml", 0),
        ("tests/fixtures/invalid/several_problems.toml", 1),
    ] {
        for format in ["text", "json"] {
            let out = run(meshform()
                .args(["validate", "-f", file, "--format", format])
                .stdout(closed_pipe()));
            assert_eq!(exit_code(&out), Some(expected), "{file} {format}:\n{out}");
            assert!(!out.contains("cannot write"), "a closed pipe is not an error:\n{out}");
        }
    }
}

#[test]
fn a_closed_stderr_does_not_change_the_exit_status() {
    for (file, expected) in [
        ("tests/fixtures/invalid/unused_network.toml", 0),
        ("tests/fixtures/invalid/several_problems.toml", 1),
    ] {
        let out = run(meshform().args(["validate", "-f", file]).stderr(closed_pipe()));
        assert_eq!(exit_code(&out), Some(expected), "{file}:\n{out}");
    }
}
