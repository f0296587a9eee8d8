//! What a failed kube request means, in terms every caller needs: whether
//! it timed out, and the whole chain of causes in one line, with nothing in
//! it that a kubeconfig's credentials could have put there.

use kube::client::AuthError;

/// Whether `error` (or any of its causes) is a timeout: of the connect, of
/// the TLS handshake, or of a request past its deadline.
pub fn is_timeout(error: &kube::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(e) = source {
        // A connect timeout (TLS handshake included) surfaces as an io::Error
        // of kind TimedOut that reads "deadline has elapsed".
        let io_timeout = e
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
        let text = e.to_string().to_ascii_lowercase();
        if io_timeout
            || e.is::<tokio::time::error::Elapsed>()
            || text.contains("timed out")
            || text.contains("timeout")
            || text.contains("deadline has elapsed")
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// kube's errors hide the useful part (connection refused, TLS) in sources.
///
/// A failure to get credentials (an exec plugin's or auth provider's) is
/// told in [`auth_error`]'s words alone: kube's text of it, and of every
/// error wrapping it, holds the plugin's command line, environment and
/// output, where OIDC client secrets, cloud keys and tokens are.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(auth) = e.downcast_ref::<AuthError>() {
            return auth_error(auth);
        }
        if let Some(kube::Error::Auth(auth)) = e.downcast_ref::<kube::Error>() {
            return auth_error(auth);
        }
        source = e.source();
    }
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

/// A failure to get credentials, in words that quote nothing the kubeconfig
/// or the plugin supplied: kube's own text of `AuthExecRun` holds the
/// plugin's command line and environment (`{cmd:?}`) and its whole stdout and
/// stderr; `AuthExec` quotes commands and their errors; a parse error quotes
/// the output it could not read, a token perhaps. What is kept is what a
/// person needs to go on: which step failed, the exit status, and how to
/// see the rest (kubectl runs the same plugin and prints its output).
fn auth_error(error: &AuthError) -> String {
    const BY_HAND: &str = "its command line and output are not shown, as they may hold credentials; \
                           run `kubectl --context CONTEXT get namespaces` to see them";
    match error {
        AuthError::AuthExecRun { cmd, out } => format!(
            "the kubeconfig's exec plugin {} failed ({}); {BY_HAND}",
            exec_program(cmd),
            out.status
        ),
        AuthError::AuthExecStart(io) => format!(
            "the kubeconfig's exec plugin could not be started ({}); check its `command` and PATH",
            io.kind()
        ),
        AuthError::AuthExecParse(_) => {
            format!("the kubeconfig's exec plugin printed something other than an ExecCredential; {BY_HAND}")
        }
        AuthError::AuthExec(_) | AuthError::AuthExecSerialize(_) => {
            format!("the kubeconfig's exec plugin or auth provider failed; {BY_HAND}")
        }
        AuthError::ExecPluginFailed => "the kubeconfig's exec plugin returned no credential status".to_string(),
        AuthError::InvalidBearerToken(_) | AuthError::InvalidBasicAuth(_) => {
            "the kubeconfig's credentials are not valid in an HTTP header (a stray character?)".to_string()
        }
        AuthError::ReadTokenFile(io, path) => {
            format!("cannot read token file {}: {}", path.display(), io.kind())
        }
        // The rest carry no text from the kubeconfig or a plugin.
        other => other.to_string(),
    }
}

/// The program of a command as std's `Debug` prints it (`KEY="v" "prog"
/// "arg"`, each value a Rust string literal): its file name only, never its
/// arguments or environment; a placeholder when it cannot be told apart.
fn exec_program(cmd: &str) -> String {
    // The first string literal not bound to a `KEY=`.
    let mut chars = cmd.chars();
    let mut previous = ' ';
    let mut program = None;
    while let Some(c) = chars.next() {
        if c != '"' {
            previous = c;
            continue;
        }
        let mut literal = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => literal.extend(chars.next()),
                '"' => break,
                c => literal.push(c),
            }
        }
        if previous != '=' {
            program = Some(literal);
            break;
        }
        previous = '"';
    }
    let name = program
        .as_deref()
        .map(std::path::Path::new)
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let plain = name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c));
    if name.is_empty() || name.len() > 64 || !plain {
        "(its command)".to_string()
    } else {
        format!("`{name}`")
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, ExitStatus, Output};

    use super::*;

    // Regression (issue 29): kube's text of a failed exec plugin holds its arguments, environment and output.
    #[test]
    fn a_failed_exec_plugin_is_named_with_its_status_and_nothing_it_was_given_or_said() {
        let mut cmd = Command::new("/usr/local/bin/kubelogin");
        cmd.args(["get-token", "--oidc-client-secret=HUNTER2-ARG"])
            .env(
                "KUBERNETES_EXEC_INFO",
                r#"{"kind":"ExecCredential","x":"HUNTER2-INFO"}"#,
            )
            .env("OIDC_SECRET", "HUNTER2-ENV");
        let error = kube::Error::Auth(AuthError::AuthExecRun {
            cmd: format!("{cmd:?}"),
            out: Box::new(Output {
                status: ExitStatus::from_raw(1 << 8),
                stdout: b"HUNTER2-STDOUT".to_vec(),
                stderr: b"error: invalid_client HUNTER2-STDERR".to_vec(),
            }),
        });
        assert!(
            error.to_string().contains("HUNTER2"),
            "kube's own text leaks: the test would prove nothing"
        );
        let wrapped = kube::Error::Service(Box::new(error));
        for text in [error_chain(&wrapped), error_chain(wrapped.source().unwrap())] {
            assert!(!text.contains("HUNTER2"), "{text}");
            assert!(
                text.contains("exec plugin `kubelogin` failed (exit status: 1)"),
                "{text}"
            );
            assert!(text.contains("kubectl --context"), "{text}");
        }
        let parse = serde_json::from_str::<serde_json::Value>("x").unwrap_err();
        let other = kube::Error::Auth(AuthError::AuthExec(format!(
            "Executing cmd --secret=HUNTER2 failed: {parse}"
        )));
        assert!(!error_chain(&other).contains("HUNTER2"));
    }

    #[test]
    fn a_program_is_told_apart_from_the_environment_or_not_named() {
        let debug = |cmd: &Command| format!("{cmd:?}");
        let mut cmd = Command::new("gke-gcloud-auth-plugin");
        cmd.env("A", r#"x" "fake"#);
        assert_eq!(exec_program(&debug(&cmd)), "`gke-gcloud-auth-plugin`");
        assert_eq!(exec_program(&debug(&Command::new("/opt/my tool"))), "(its command)");
        assert_eq!(exec_program(""), "(its command)");
    }
}
