//! What a failed kube request means, in terms every caller needs: whether
//! it timed out, and the whole chain of causes in one line.

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
pub fn error_chain(error: &dyn std::error::Error) -> String {
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
