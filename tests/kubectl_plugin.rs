//! meshform as a kubectl plugin: installed as `kubectl-meshform` (krew links it
//! so, `.krew.yaml`), run through the real `kubectl`, it takes the same
//! arguments, says `kubectl meshform` in its usage lines, and finds clusters
//! through `$KUBECONFIG` as kubectl does (a list of files, merged).

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::controlplane::ControlPlane;

/// A directory holding `kubectl-meshform`, a symlink to the test binary.
fn plugin_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_meshform"), dir.path().join("kubectl-meshform")).unwrap();
    dir
}

/// `kubectl ARGS` with `dir` first on PATH and no kubeconfig of the person running the tests.
fn kubectl(dir: &Path) -> Command {
    let path = std::env::join_paths(
        std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .unwrap();
    let mut cmd = Command::new("kubectl");
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("PATH", path)
        .env("NO_COLOR", "1")
        .env("COLUMNS", "100")
        .env_remove("KUBECONFIG");
    cmd
}

fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e} (kubectl: apt-get install kubernetes-client; ./test installs it)")
    })
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout.clone()).unwrap()
}

const PLAN: [&str; 5] = [
    "plan",
    "-f",
    "mesh.toml.example",
    "--observed",
    "examples/observed.json",
];

fn meshform_plan() -> String {
    stdout(&output(
        support::cli::meshform().args(PLAN).stdout(std::process::Stdio::piped()),
    ))
}

/// The plugin binary run directly, in the fixed environment of every CLI test.
fn plugin(dir: &Path) -> Command {
    let template = support::cli::meshform();
    let mut cmd = Command::new(dir.join("kubectl-meshform"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    for (key, value) in template.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    cmd
}

#[test]
fn the_binary_named_kubectl_meshform_is_meshform() {
    let dir = plugin_dir();
    let run = |args: &[&str]| output(plugin(dir.path()).args(args));
    assert_eq!(
        stdout(&run(&["--version"])),
        format!("meshform {}\n", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(stdout(&run(&PLAN)), meshform_plan());

    // Usage lines name the command a kubectl user types.
    let usage = run(&["plan", "--bogus"]);
    assert_eq!(usage.status.code(), Some(1), "a usage error is an error, not drift");
    let stderr = String::from_utf8_lossy(&usage.stderr);
    assert!(stderr.contains("Usage: kubectl meshform plan [OPTIONS]"), "{stderr}");
    let help = stdout(&run(&["--help"]));
    assert!(help.contains("Usage: kubectl meshform [OPTIONS] <COMMAND>"), "{help}");
}

#[test]
fn kubectl_runs_meshform_as_its_plugin() {
    let dir = plugin_dir();
    let version = stdout(&output(kubectl(dir.path()).args(["meshform", "--version"])));
    assert_eq!(version, format!("meshform {}\n", env!("CARGO_PKG_VERSION")));

    let listed = stdout(&output(kubectl(dir.path()).args(["plugin", "list", "--name-only"])));
    assert!(listed.lines().any(|l| l == "kubectl-meshform"), "{listed}");

    // Every argument after the plugin's name reaches meshform unchanged.
    let plan = stdout(&output(kubectl(dir.path()).arg("meshform").args(PLAN)));
    assert_eq!(plan, meshform_plan());

    // kubectl's --context has no single meaning for a mesh of many clusters: refused with the fix.
    let refused = output(kubectl(dir.path()).args(["meshform", "plan", "--context", "east"]));
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("meshform takes no --context") && stderr.contains("--target CLUSTER"),
        "{stderr}"
    );
}

#[tokio::test]
async fn kubectl_meshform_reads_clusters_through_kubeconfig_as_kubectl_does() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    // No `kubeconfig` in mesh.toml: each cluster's context is looked up in $KUBECONFIG,
    // a list of files merged as kubectl merges them.
    let dir = plugin_dir();
    let mesh = dir.path().join("mesh.toml");
    std::fs::write(
        &mesh,
        "[mesh]\nname = \"mesh1\"\n\n[[cluster]]\ncontext = \"east\"\nnetwork = \"flat\"\n\n\
         [[cluster]]\ncontext = \"west\"\nnetwork = \"flat\"\n",
    )
    .unwrap();
    let kubeconfig = std::env::join_paths([east.kubeconfig(), west.kubeconfig()]).unwrap();
    let mut snapshot = kubectl(dir.path());
    snapshot
        .env("KUBECONFIG", &kubeconfig)
        .args(["meshform", "snapshot", "-f"])
        .arg(&mesh)
        .args(["--timeout", "10s"]);
    let out = tokio::task::spawn_blocking(move || output(&mut snapshot))
        .await
        .unwrap();
    let snapshot: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    for cluster in [east, west] {
        let observed = &snapshot["clusters"][cluster.name()];
        assert_eq!(observed["state"], "reachable", "{observed:#}");
        assert_eq!(observed["identity"], cluster.kube_system_uid(), "{observed:#}");
    }
}

/// `.krew.yaml` as krew-release-bot renders it for the tag `tag`: `{{ .TagName }}` is the tag,
/// and each `{{addURIAndSha "URL" .TagName }}` becomes `uri: URL` and `sha256:` of that file.
fn krew_manifest(tag: &str) -> serde_json::Value {
    let template = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".krew.yaml")).unwrap();
    let mut rendered = String::new();
    for line in template.lines() {
        let line = line.replace("{{ .TagName }}", tag);
        match line.trim_start().strip_prefix("{{addURIAndSha \"") {
            Some(rest) => {
                let indent = &line[..line.len() - line.trim_start().len()];
                let (uri, end) = rest.split_once('"').expect("addURIAndSha \"URL\"");
                assert_eq!(end.trim(), ".TagName }}", "addURIAndSha takes the tag: {line}");
                rendered += &format!("{indent}uri: {uri}\n{indent}sha256: {}\n", "0".repeat(64));
            }
            None => rendered += &(line + "\n"),
        }
    }
    assert!(!rendered.contains("{{"), "a template action left over:\n{rendered}");
    serde_yaml_ng::from_str(&rendered).unwrap_or_else(|e| panic!(".krew.yaml renders to invalid YAML: {e}\n{rendered}"))
}

#[test]
fn krew_manifest_installs_the_release_archives_as_kubectl_meshform() {
    let version = env!("CARGO_PKG_VERSION");
    let tag = format!("v{version}");
    let manifest = krew_manifest(&tag);
    assert_eq!(manifest["apiVersion"], "krew.googlecontainertools.github.com/v1alpha2");
    assert_eq!(manifest["kind"], "Plugin");
    // krew links the plugin as kubectl-<metadata.name>.
    assert_eq!(manifest["metadata"]["name"], "meshform");
    let spec = &manifest["spec"];
    assert_eq!(spec["version"], tag.as_str());
    assert_eq!(spec["homepage"], env!("CARGO_PKG_REPOSITORY"));
    assert!(spec["shortDescription"].as_str().is_some_and(|d| d.len() <= 80));
    let mut platforms: Vec<(String, String)> = Vec::new();
    for platform in spec["platforms"].as_array().unwrap() {
        let labels = &platform["selector"]["matchLabels"];
        let (os, arch) = (labels["os"].as_str().unwrap(), labels["arch"].as_str().unwrap());
        // The release workflow's targets, and the names it publishes.
        let target = match (os, arch) {
            ("linux", "amd64") => "x86_64-unknown-linux-musl",
            ("linux", "arm64") => "aarch64-unknown-linux-musl",
            ("darwin", "amd64") => "x86_64-apple-darwin",
            ("darwin", "arm64") => "aarch64-apple-darwin",
            other => panic!("no release binary for {other:?}"),
        };
        assert_eq!(
            platform["uri"],
            format!(
                "{}/releases/download/{tag}/meshform-{tag}-{target}.tar.gz",
                env!("CARGO_PKG_REPOSITORY")
            )
        );
        assert_eq!(platform["sha256"].as_str().unwrap().len(), 64);
        // The archive holds `meshform` at its top (upload-rust-binary-action, no leading directory).
        assert_eq!(platform["bin"], "meshform");
        platforms.push((os.into(), arch.into()));
    }
    assert_eq!(platforms.len(), 4, "{platforms:?}");
    let release =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".github/workflows/release.yml")).unwrap();
    assert!(
        release.contains("uses: rajatjindal/krew-release-bot@"),
        "release.yml renders .krew.yaml"
    );
    for target in [
        "x86_64-unknown-linux-musl",
        "aarch64-unknown-linux-musl",
        "x86_64-apple-darwin",
        "aarch64-apple-darwin",
    ] {
        assert!(
            release.contains(&format!("target: {target}")),
            "release.yml builds {target}"
        );
    }
}
