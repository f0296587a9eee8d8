//! What a release ships, built here as the release workflow builds it
//! (`.github/workflows/release.yml`): the static x86_64 Linux binary from the
//! `dist` profile, and the container image of `Containerfile` around it.
//!
//! The binary is built once per run, with the profile that ships (`dist`: thin
//! LTO, stripped), into a target directory of its own (the outer `cargo test`
//! holds the lock of the usual one). On the 2-core machine, shared: a cold build
//! took 9.5 min (8.3 min of CPU), a rebuild after a change to src/ 6 min, the
//! tests themselves 10 s (README, "Testing"). The image is built with buildah, rootful, on vfs storage in
//! a temporary directory, and run with chroot isolation: this machine's cgroup
//! setup refuses OCI runtimes (crun: "cgroups in hybrid mode not supported").

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const TARGET: &str = "x86_64-unknown-linux-musl";
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `cmd`, panicking with its output unless it succeeds; returns stdout.
fn succeed(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The release binary, built on first use.
fn release_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dist-build");
        let mut build = Command::new(env!("CARGO"));
        build
            .current_dir(root())
            .args([
                "build",
                "--locked",
                "--profile",
                "dist",
                "--target",
                TARGET,
                "--bin",
                "meshform",
            ])
            .arg("--target-dir")
            .arg(&target_dir);
        let out = output(&mut build);
        assert!(
            out.status.success(),
            "the release build failed; it needs the target and a musl C compiler (for ring and \
             mimalloc): `rustup target add {TARGET}` and `apt-get install musl-tools` (./test \
             installs both):\n{}",
            text(&out.stderr)
        );
        target_dir.join(TARGET).join("dist").join("meshform")
    })
}

#[test]
fn release_binary_reports_the_version_of_cargo_toml() {
    let stdout = succeed(Command::new(release_binary()).arg("--version"));
    assert_eq!(stdout, format!("meshform {VERSION}\n"));
}

/// `ldd` of a binary, as (success, everything it printed).
fn ldd(binary: &Path) -> (bool, String) {
    let out = output(Command::new("ldd").arg(binary));
    (out.status.success(), text(&out.stdout) + &text(&out.stderr))
}

#[test]
fn release_binary_links_nothing_dynamically() {
    // The check can fail: the test build of the same crate links glibc.
    let (ok, listed) = ldd(Path::new(env!("CARGO_BIN_EXE_meshform")));
    assert!(ok && listed.contains("libc.so"), "{listed}");

    // A static-pie binary is "statically linked" (exit 0), a plain static one
    // "not a dynamic executable" (exit 1); either way, no library is listed.
    let (_, listed) = ldd(release_binary());
    assert!(
        (listed.contains("not a dynamic executable") || listed.contains("statically linked"))
            && !listed.contains(".so"),
        "the release binary loads shared libraries at run time:\n{listed}"
    );
}

/// The offline plan of the shipped example mesh (the README's main job).
const OFFLINE_PLAN: [&str; 5] = [
    "plan",
    "-f",
    "mesh.toml.example",
    "--observed",
    "examples/observed.json",
];

/// What `binary` prints for [`OFFLINE_PLAN`], run from the repository root.
fn offline_plan(binary: &Path) -> String {
    succeed(
        Command::new(binary)
            .current_dir(root())
            .env("NO_COLOR", "1")
            .args(OFFLINE_PLAN),
    )
}

/// The offline plan as the test build prints it.
fn example_plan() -> String {
    offline_plan(Path::new(env!("CARGO_BIN_EXE_meshform")))
}

#[test]
fn release_binary_plans_as_the_test_build_does() {
    let plan = offline_plan(release_binary());
    assert!(plan.contains("istio-remote-secret-"), "{plan}");
    assert_eq!(plan, example_plan());
}

/// buildah, with its storage in a temporary directory of its own.
struct Buildah {
    dir: tempfile::TempDir,
}

impl Buildah {
    fn new() -> Buildah {
        let found = Command::new("buildah").arg("--version").output();
        assert!(
            found.is_ok_and(|o| o.status.success()),
            "the image test needs buildah (`apt-get install buildah`; ./test installs it)"
        );
        Buildah {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    fn cmd(&self) -> Command {
        let mut cmd = Command::new("buildah");
        cmd.arg("--root")
            .arg(self.dir.path().join("storage"))
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .args(["--storage-driver", "vfs"])
            // No registry is consulted: the base is `scratch`.
            .env("BUILDAH_ISOLATION", "chroot")
            .env("REGISTRIES_CONFIG_PATH", self.dir.path().join("registries.conf"));
        cmd
    }

    fn run(&self, args: &[&str]) -> String {
        succeed(self.cmd().args(args)).trim_end().to_string()
    }

    /// `buildah run ARGS`: a command in a container. Buildah 1.28's chroot isolation
    /// once lost a command's whole stdout (exit 0, nothing printed) on this machine
    /// at a load of 14; a command here always prints, so empty output is retried.
    fn run_in(&self, args: &[&str]) -> String {
        for _ in 0..2 {
            let out = succeed(self.cmd().arg("run").args(args));
            if !out.is_empty() {
                return out;
            }
            eprintln!("buildah run {args:?} printed nothing; trying again");
        }
        succeed(self.cmd().arg("run").args(args))
    }
}

impl Drop for Buildah {
    fn drop(&mut self) {
        // vfs layers are plain directories; buildah unmounts what it mounted.
        let _ = self.cmd().args(["rm", "--all"]).output();
        let _ = self.cmd().args(["rmi", "--all", "--force"]).output();
    }
}

/// The build context the Containerfile expects: the binary and a CA bundle.
fn image_context(dir: &Path) -> PathBuf {
    let context = dir.join("context");
    fs::create_dir_all(&context).unwrap();
    fs::copy(release_binary(), context.join("meshform")).unwrap();
    let bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
    fs::copy(bundle, context.join("ca-certificates.crt"))
        .unwrap_or_else(|e| panic!("{}: {e} (apt-get install ca-certificates)", bundle.display()));
    context
}

#[test]
fn image_is_the_static_binary_and_ca_roots_run_as_non_root() {
    let buildah = Buildah::new();
    fs::write(buildah.dir.path().join("registries.conf"), "").unwrap();
    let context = image_context(buildah.dir.path());
    let tag = format!("localhost/meshform:{VERSION}");
    let containerfile = root().join("Containerfile");
    buildah.run(&[
        "bud",
        "--quiet",
        "--pull=never",
        "--build-arg",
        &format!("VERSION={VERSION}"),
        "-t",
        &tag,
        "-f",
        containerfile.to_str().unwrap(),
        context.to_str().unwrap(),
    ]);

    let inspect: serde_json::Value = serde_json::from_str(&buildah.run(&["inspect", "--type", "image", &tag])).unwrap();
    let config = &inspect["OCIv1"]["config"];
    assert_eq!(config["User"], "65532:65532", "{config}");
    assert_eq!(config["Entrypoint"], serde_json::json!(["/usr/local/bin/meshform"]));
    assert!(
        config["Env"]
            .as_array()
            .unwrap()
            .contains(&"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt".into()),
        "{config}"
    );
    let labels = &config["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], VERSION);
    assert_eq!(labels["org.opencontainers.image.source"], env!("CARGO_PKG_REPOSITORY"));
    assert_eq!(labels["org.opencontainers.image.licenses"], env!("CARGO_PKG_LICENSE"));
    assert_eq!(labels["org.opencontainers.image.title"], "meshform");

    // Nothing but the binary and the bundle: no shell, no libc, no package manager.
    let container = buildah.run(&["from", "--pull=never", &tag]);
    let mount = PathBuf::from(buildah.run(&["mount", &container]));
    let mut files = Vec::new();
    let mut dirs = vec![mount.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                dirs.push(entry.path());
            } else {
                files.push(entry.path().strip_prefix(&mount).unwrap().display().to_string());
            }
        }
    }
    files.sort();
    assert_eq!(
        files,
        ["etc/ssl/certs/ca-certificates.crt", "usr/local/bin/meshform"],
        "the image holds more than the binary and the CA roots"
    );
    let bundle = fs::read_to_string(mount.join("etc/ssl/certs/ca-certificates.crt")).unwrap();
    assert!(bundle.matches("BEGIN CERTIFICATE").count() > 100, "a full CA bundle");
    buildah.run(&["umount", &container]);

    // The image's user runs the binary: `--version`, and an offline plan of the
    // shipped example mounted read-only, as the CronJob mounts mesh.toml.
    let version = buildah.run_in(&[&container, "--", "/usr/local/bin/meshform", "--version"]);
    assert_eq!(version, format!("meshform {VERSION}\n"));
    let volume = format!("{}:/work:ro", root().display());
    let mut run = vec![
        "--env",
        "NO_COLOR=1",
        "--volume",
        &volume,
        "--workingdir",
        "/work",
        &container,
        "--",
        "/usr/local/bin/meshform",
    ];
    run.extend(OFFLINE_PLAN);
    let plan = buildah.run_in(&run);
    assert_eq!(plan, example_plan());
}
