//! A request to stop a run between actions: SIGINT or SIGTERM to the CLI,
//! a controller shutting down. Whoever asks holds a [`Cancel`]; the
//! reconcile and the sequencer hold clones and look at it before each step
//! that could write (taking the lock, each phase, each action). It never
//! aborts a request in flight: an action that started finishes (or fails)
//! as it would have, so nothing is left half-written by the stop itself.
//! It installs no signal handler: the CLI does, and only the CLI.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::watch;

/// Why a run was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    /// SIGINT (Ctrl-C on a terminal).
    Interrupt,
    /// SIGTERM (a cancelled CI job, a pod being deleted, `kill`).
    Terminate,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stop::Interrupt => "SIGINT",
            Stop::Terminate => "SIGTERM",
        })
    }
}

/// Shared between the one who asks a run to stop and the run.
#[derive(Debug, Clone)]
pub struct Cancel(Arc<watch::Sender<Option<Stop>>>);

impl Default for Cancel {
    fn default() -> Self {
        Cancel::new()
    }
}

impl Cancel {
    /// Not asked to stop (yet).
    pub fn new() -> Self {
        Cancel(Arc::new(watch::Sender::new(None)))
    }

    /// Asks the run to stop; the first reason given is kept.
    pub fn stop(&self, why: Stop) {
        self.0.send_if_modified(|stop| {
            let first = stop.is_none();
            if first {
                *stop = Some(why);
            }
            first
        });
    }

    /// Whether, and why, the run was asked to stop.
    pub fn stopped(&self) -> Option<Stop> {
        *self.0.borrow()
    }

    /// Waits until the run is asked to stop.
    pub async fn wait(&self) -> Stop {
        let mut asked = self.0.subscribe();
        // The sender lives in `self`, so the wait cannot fail.
        match asked.wait_for(Option::is_some).await {
            Ok(stop) => stop.unwrap_or(Stop::Terminate),
            Err(_) => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_reason_is_kept_and_a_waiter_wakes() {
        let cancel = Cancel::new();
        assert_eq!(cancel.stopped(), None);
        let waiter = cancel.clone();
        let woken = std::thread::spawn(move || futures::executor::block_on(waiter.wait()));
        cancel.stop(Stop::Interrupt);
        cancel.stop(Stop::Terminate);
        assert_eq!(cancel.stopped(), Some(Stop::Interrupt));
        assert_eq!(woken.join().expect("the waiter"), Stop::Interrupt);
    }
}
