//! Snapshots of what the binary printed ([`Outcome`]), with what differs
//! from run to run redacted, for tests that check apply's and plan's text.

use super::mesh::Outcome;

/// Snapshots `outcome` (exit code, stdout, stderr) as `<test file>__<name>`.
///
/// apply runs the actions of a phase concurrently and prints each as it
/// ends, so the lines of a phase (an action with its diff below it) are
/// sorted here; the phases, the plan and the summary keep their order.
#[track_caller]
pub fn assert_outcome(name: &str, outcome: &Outcome) {
    let text = format!(
        "exit_code: {}\n----- stdout -----\n{}\n----- stderr -----\n{}",
        outcome.code,
        sort_phases(&outcome.stdout),
        outcome.stderr
    );
    let name = format!("{}__{name}", env!("CARGO_CRATE_NAME"));
    settings().bind(|| insta::assert_snapshot!(name, text));
}

/// Redactions of every value that varies between runs.
pub fn settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    settings.set_snapshot_path("../snapshots");
    settings.add_filter(r"(/private)?/tmp/[^\s:'\x22`]+", "[TMP]");
    settings.add_filter(r"https://127\.0\.0\.1:\d+", "[SERVER]");
    settings.add_filter(r"127\.0\.0\.1:\d+", "[ADDR]");
    // The API server completes the binding Secret's generateName.
    settings.add_filter(r"(meshform-reader-binding-[a-z0-9-]+?-)[a-z0-9]{5}\b", "${1}[RANDOM]");
    // A stale plan names an object as uid@resourceVersion.
    settings.add_filter(
        r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(@\d+)?",
        "[UID]",
    );
    // Secrets' hashes cover the peer's server URL and CA.
    settings.add_filter(r#"("meshform.io/spec-hash": )"[0-9a-f]+""#, r#"$1"[HASH]""#);
    // How a stopped cluster refuses a connection is up to the OS.
    settings.add_filter(r"(?m)ServiceError: [^\n]*?(\(os error \d+\)|$)", "[CONNECTION ERROR]");
    settings.add_filter(r#"("resourceVersion": )"\d+""#, r#"$1"[RV]""#);
    settings.add_filter(r"(resourceVersion )\d+", "$1[RV]");
    settings.add_filter(
        r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})?",
        "[TIME]",
    );
    settings.add_filter(r"\b\d+(\.\d+)?(ns|µs|us|ms|s|m|h)\b", "[DURATION]");
    // The lock holder: meshform's version, user, host and pid.
    settings.add_filter(r"meshform \S+ \([^)]*, pid \d+\)", "[HOLDER]");
    settings
}

/// Sorts the action lines within each phase of apply's text output.
fn sort_phases(stdout: &str) -> String {
    let mut out = Vec::new();
    let mut items: Vec<Vec<&str>> = Vec::new();
    let flush = |items: &mut Vec<Vec<&str>>, out: &mut Vec<String>| {
        items.sort();
        out.extend(items.drain(..).flatten().map(str::to_string));
    };
    let mut in_phase = false;
    let mut lines = stdout.lines().peekable();
    while let Some(line) = lines.next() {
        let action = ["  done ", "  FAILED ", "  skipped "]
            .iter()
            .any(|p| line.starts_with(p));
        // An action's diffs (one per object, blank lines between) are under it.
        let diff = !line.is_empty() || lines.peek().is_some_and(|next| next.starts_with("--- "));
        if in_phase && action {
            items.push(vec![line]);
        } else if in_phase && diff && !items.is_empty() {
            items.last_mut().expect("an item").push(line);
        } else {
            flush(&mut items, &mut out);
            in_phase = line.ends_with(" action(s))");
            out.push(line.to_string());
        }
    }
    flush(&mut items, &mut out);
    out.join("\n")
}
