//! Builds the Go test programs (`tests/controlplane/`, `tests/istiocheck/`,
//! `tests/istiod/`) once per source change and shares the binary between
//! test processes.
//!
//! The binary's file name carries a hash of the sources, so a changed program
//! is rebuilt and an unchanged one never is; a file lock lets the first of
//! several test binaries running at once build while the others wait.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Where builds of `name` live: under cargo's scratch directory for tests.
pub fn out_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

/// Builds the Go program in `src` as `<out_dir>/<name>-<hash>` unless that
/// binary exists, with `args` between `go build` and `-o`.
pub fn build_cached(name: &str, src: &Path, args: &[&str]) -> PathBuf {
    let out = out_dir(name);
    fs::create_dir_all(&out).unwrap_or_else(|e| panic!("creating {}: {e}", out.display()));
    let bin = out.join(format!("{name}-{:016x}", source_hash(src)));
    if bin.exists() {
        return bin;
    }
    // Test binaries run in parallel; the first to get here builds, the others wait.
    let lock = File::create(out.join("build.lock")).expect("creating the build lock");
    lock.lock().expect("taking the build lock");
    if bin.exists() {
        return bin;
    }
    let tmp = out.join(format!("{name}.{}.tmp", std::process::id()));
    let started = Instant::now();
    let output = Command::new(go())
        .current_dir(src)
        .args(["build", "-buildvcs=false"])
        .args(args)
        .arg("-o")
        .arg(&tmp)
        .arg(".")
        .output()
        .unwrap_or_else(|e| panic!("running go build in {}: {e}", src.display()));
    assert!(
        output.status.success(),
        "go build of {name} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    fs::rename(&tmp, &bin).unwrap_or_else(|e| panic!("moving the built {name} into place: {e}"));
    // Builds of older sources are dead weight (~130 MB each). Keep those built
    // within the hour: a test process started from older sources may still
    // want to spawn its copy.
    let prefix = format!("{name}-");
    for entry in fs::read_dir(&out).into_iter().flatten().flatten() {
        let path = entry.path();
        let old_build = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(&prefix));
        let age = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .unwrap_or_default();
        if old_build && path != bin && age > Duration::from_secs(3600) {
            let _ = fs::remove_file(path);
        }
    }
    eprintln!("built {name} in {:.0?}", started.elapsed());
    bin
}

/// The `go` command: `$GO`, else `go` on PATH, else the usual install path.
pub fn go() -> PathBuf {
    if let Some(go) = std::env::var_os("GO") {
        return go.into();
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("go").is_file()))
        .unwrap_or(false);
    if on_path {
        "go".into()
    } else {
        "/usr/local/go/bin/go".into()
    }
}

/// FNV-1a over the sources' relative paths and contents: stable across Rust
/// releases, unlike `DefaultHasher`, and enough to tell builds apart.
pub fn source_hash(src: &Path) -> u64 {
    let mut files = Vec::new();
    collect_sources(src, &mut files);
    files.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for file in files {
        let rel = file.strip_prefix(src).expect("source under its directory");
        feed(rel.to_string_lossy().as_bytes());
        feed(&[0]);
        feed(&fs::read(&file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display())));
        feed(&[0]);
    }
    hash
}

fn collect_sources(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "bin") {
                collect_sources(&path, files);
            }
        } else if path
            .extension()
            .is_some_and(|e| e == "go" || e == "yaml" || e == "mod" || e == "sum")
        {
            files.push(path);
        }
    }
}
