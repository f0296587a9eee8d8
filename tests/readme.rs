//! The README's set-up commands are a promise to new users; keep them true.

use std::fs;

fn readme_commands() -> Vec<String> {
    let readme = fs::read_to_string("README.md").expect("README.md");
    // The first ```sh block after "## Working on meshform" (the Install section before it
    // has commands for users, not for working on meshform).
    let block = readme
        .split("\n## Working on meshform\n")
        .nth(1)
        .expect("README has a section \"## Working on meshform\"")
        .split("```sh")
        .nth(1)
        .expect("that section starts with a ```sh block")
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
    assert_eq!(commands[1], "./test", "{commands:?}");
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

#[test]
fn readme_says_how_to_install_before_anything_else() {
    let readme = fs::read_to_string("README.md").expect("README.md");
    let headings: Vec<&str> = readme.lines().filter(|l| l.starts_with("## ")).collect();
    assert_eq!(headings[..2], ["## Install", "## Working on meshform"], "{headings:?}");
    let install = readme
        .split("## Install\n")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    let version = env!("CARGO_PKG_VERSION");
    for way in [
        "**Release binary.**",
        "**Container image.**",
        "**GitHub Action.**",
        "**cargo.**",
        "**kubectl plugin.**",
    ] {
        assert!(install.contains(way), "the Install section covers {way}");
    }
    for pinned in [
        format!("ghcr.io/meshform/meshform:{version}"),
        format!("meshform/meshform@v{version}"),
        format!("cargo install --locked meshform --version {version}"),
    ] {
        assert!(install.contains(&pinned), "the Install section pins {pinned}");
    }
}

#[test]
fn the_test_command_runs_every_binary_after_installing_what_it_needs() {
    use std::os::unix::fs::PermissionsExt;
    let script = fs::read_to_string("test").expect("./test");
    let mode = fs::metadata("test").unwrap().permissions().mode();
    assert!(mode & 0o111 != 0, "./test must be executable");
    // A failing binary must not hide the others.
    assert!(
        script
            .lines()
            .any(|l| l.trim() == r#"exec cargo test --locked --no-fail-fast "$@""#),
        "./test must end in cargo test --locked --no-fail-fast"
    );
    // What the release and plugin tests need, installed before any build.
    for need in [
        "x86_64-unknown-linux-musl",
        "musl-tools",
        "buildah",
        "kubernetes-client",
    ] {
        assert!(script.contains(need), "./test does not install {need}");
    }
}
