//! Running the real `meshform` binary for snapshot tests.
//!
//! Every CLI test goes through [`run`], which prints the exit code, stdout and
//! stderr in fixed sections, and snapshots under [`settings`], which redacts
//! what changes from run to run (temporary paths, times, UIDs,
//! resourceVersions). The binary runs from the crate root with no colour and
//! 100 columns, whatever the terminal of the person running the tests.

use std::path::Path;
use std::process::{Command, Stdio};

/// The `meshform` binary with a fixed environment; add arguments and pass it to [`run`].
pub fn meshform() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshform"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .env("COLUMNS", "100")
        .env_remove("CLICOLOR_FORCE")
        .env_remove("FORCE_COLOR")
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null());
    cmd
}

/// Runs `cmd` to completion and formats its outcome in fixed sections:
///
/// ```text
/// success: false
/// exit_code: 1
/// ----- stdout -----
/// ...
/// ----- stderr -----
/// ...
/// ```
///
/// A stream the command was not given a pipe for (see the broken-pipe
/// tests) shows as empty.
pub fn run(cmd: &mut Command) -> String {
    let output = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let code = match output.status.code() {
        Some(code) => code.to_string(),
        None => format!("none ({})", output.status),
    };
    format!(
        "success: {}\nexit_code: {code}\n----- stdout -----\n{}\n----- stderr -----\n{}",
        output.status.success(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    )
}

/// The exit code `run` printed, for tests that assert it beside a snapshot.
pub fn exit_code(run_output: &str) -> Option<i32> {
    run_output.lines().nth(1)?.strip_prefix("exit_code: ")?.parse().ok()
}

/// insta settings with the shared redactions; bind snapshots to them:
/// `support::cli::settings(&[dir.path()]).bind(|| insta::assert_snapshot!(out))`.
/// `paths` are replaced by `[TEMP]`, `[TEMP1]`, ... in order.
pub fn settings(paths: &[&Path]) -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    for (i, path) in paths.iter().enumerate() {
        let name = if i == 0 {
            "[TEMP]".to_string()
        } else {
            format!("[TEMP{i}]")
        };
        settings.add_filter(&escape(&path.display().to_string()), name);
    }
    // Whatever temporary directory a test did not name.
    settings.add_filter(
        &format!(
            r"{}/\.tmp[A-Za-z0-9]+",
            escape(std::env::temp_dir().display().to_string().trim_end_matches('/'))
        ),
        "[TEMP]",
    );
    settings.add_filter(
        r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})",
        "[TIME]",
    );
    settings.add_filter(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "[UID]");
    settings.add_filter(r#"("resourceVersion": ?)"\d+""#, r#"$1"[RV]""#);
    settings.add_filter(r"(resourceVersion[ =:]+)\d+", "$1[RV]");
    settings
}

/// `text` as a regex matching itself.
fn escape(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '/' || c == '_' || c == '-' || c == ' ' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}
