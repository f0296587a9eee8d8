//! The README's set-up commands are a promise to new users; keep them true.

use std::fs;

fn readme_commands() -> Vec<String> {
    let readme = fs::read_to_string("README.md").expect("README.md");
    let block = readme
        .split("```sh")
        .nth(1)
        .expect("README starts with a ```sh block")
        .split("```")
        .next()
        .unwrap();
    block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

#[test]
fn readme_has_two_setup_commands() {
    let commands = readme_commands();
    assert_eq!(
        commands.len(),
        2,
        "expected the main job and the test command, found {commands:?}"
    );
    assert!(commands[0].starts_with("cargo run"), "{commands:?}");
    assert!(commands[1].starts_with("cargo test"), "{commands:?}");
}

#[test]
fn ci_runs_the_readme_test_command() {
    let test_command = readme_commands().pop().unwrap();
    let ci = fs::read_to_string(".ci/run").expect(".ci/run");
    assert!(
        ci.lines().any(|l| l.trim() == test_command),
        ".ci/run must run the README's test command {test_command:?} on a line of its own"
    );
}

#[test]
fn readme_main_job_runs_on_shipped_files() {
    // The main job must name only files that are in the repository.
    let main_job = readme_commands().remove(0);
    for word in main_job.split_whitespace() {
        if word.contains(".toml") || word.contains(".json") {
            assert!(
                fs::metadata(word).is_ok(),
                "README main job names {word}, which is not shipped"
            );
        }
    }
}
