//! A Go test program that reports its state as JSON lines on stdout
//! (`tests/istiocheck/`, `tests/istiod/`), run as a child of the test.
//!
//! [`Reporter`] starts it with stderr (the program's log) in a file under
//! `target/tmp/<program>/logs/`, keeps the latest report and every report
//! so far, and waits, for a bounded time, until a report meets a condition.
//! The program stops when its stdin closes: when the [`Reporter`] drops, or
//! when this process exits however it exits.

use std::fmt::Debug;
use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::gobuild;

/// A running program and what it reported.
pub struct Reporter<T> {
    program: String,
    updates: watch::Receiver<Option<T>>,
    /// Every report so far, in order, with the line it was read from.
    history: Arc<Mutex<Vec<(String, T)>>>,
    log: PathBuf,
    /// Holding stdin open keeps the program alive; closing it stops it.
    process: Mutex<Option<(Child, ChildStdin)>>,
}

impl<T: DeserializeOwned + Clone + Debug + Send + Sync + 'static> Reporter<T> {
    /// Starts `cmd`, the build of `program`; `label` tells its log apart.
    pub fn spawn(mut cmd: Command, program: &str, label: &str) -> Reporter<T> {
        let log_dir = gobuild::out_dir(program).join("logs");
        fs::create_dir_all(&log_dir).unwrap_or_else(|e| panic!("creating the {program} log directory: {e}"));
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let log = log_dir.join(format!(
            "{program}-{}-{}-{label}.log",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let stderr = File::create(&log).unwrap_or_else(|e| panic!("creating the {program} log: {e}"));
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program} ({:?}): {e}", cmd.get_program()));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, updates) = watch::channel(None);
        let history = Arc::new(Mutex::new(Vec::new()));
        let kept = history.clone();
        let name = program.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<T>(&line) {
                    Ok(report) => {
                        kept.lock().expect("report history").push((line, report.clone()));
                        if tx.send(Some(report)).is_err() {
                            break;
                        }
                    }
                    Err(e) => eprintln!("{name}: unreadable line ({e}): {line}"),
                }
            }
        });
        Reporter {
            program: program.to_string(),
            updates,
            history,
            log,
            process: Mutex::new(Some((child, stdin))),
        }
    }

    /// The latest report, if any arrived.
    pub fn latest(&self) -> Option<T> {
        self.updates.borrow().clone()
    }

    /// How many reports arrived so far: a mark for [`Reporter::since`].
    pub fn mark(&self) -> usize {
        self.history.lock().expect("report history").len()
    }

    /// Every report that arrived after `mark`.
    pub fn since(&self, mark: usize) -> Vec<T> {
        self.history.lock().expect("report history")[mark..]
            .iter()
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// Everything the program printed and logged so far.
    pub fn output(&self) -> String {
        let history = self.history.lock().expect("report history");
        let mut text: String = history.iter().map(|(line, _)| format!("{line}\n")).collect();
        text.push_str(&self.log_text());
        text
    }

    /// The program's stderr.
    pub fn log(&self) -> &Path {
        &self.log
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until a report meets `condition`, for at most `timeout`; panics
    /// otherwise with the last report (as `shown` words it) and the log's end.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        condition: impl Fn(&T) -> bool,
        shown: impl Fn(&T) -> String,
    ) -> T {
        let deadline = Instant::now() + timeout;
        let mut updates = self.updates.clone();
        loop {
            if let Some(report) = updates.borrow_and_update().as_ref()
                && condition(report)
            {
                return report.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let exited = self.exit_status();
            if left.is_zero() || exited.is_some() {
                panic!(
                    "{} did not report {what} within {timeout:?}{}; last report:\n{}\nlog {}:\n{}",
                    self.program,
                    exited
                        .map(|s| format!(" ({} exited: {s})", self.program))
                        .unwrap_or_default(),
                    self.latest().as_ref().map_or("none".to_string(), &shown),
                    self.log.display(),
                    self.log_tail(),
                );
            }
            // Wake at least once a second to notice an exited program.
            let _ = tokio::time::timeout(left.min(Duration::from_secs(1)), updates.changed()).await;
        }
    }

    /// Waits until the program's log holds `text`, for at most `timeout`.
    pub async fn wait_for_log(&self, what: &str, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log_text().contains(text) {
            assert!(
                Instant::now() < deadline && self.exit_status().is_none(),
                "{} did not log {what} ({text:?}) within {timeout:?}; log {}:\n{}",
                self.program,
                self.log.display(),
                self.log_tail(),
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn exit_status(&self) -> Option<ExitStatus> {
        let mut process = self.process.lock().ok()?;
        let (child, _) = process.as_mut()?;
        child.try_wait().ok().flatten()
    }

    fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

impl<T> Drop for Reporter<T> {
    fn drop(&mut self) {
        let Some((mut child, stdin)) = self.process.lock().map(|mut p| p.take()).unwrap_or(None) else {
            return;
        };
        drop(stdin);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
