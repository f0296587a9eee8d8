//! What `meshform apply` prints while and after it runs: the executor's
//! [`Event`]s as they happen, then the [`Report`], as plain lines for people
//! or one JSON object per line for machines.
//!
//! It words what apply reports and decides nothing: which action ran, failed
//! or was skipped, and why, all come from apply. The only thing it draws
//! beyond its writer is the terminal's progress bar (indicatif, on stderr),
//! and only when the CLI says there is a terminal to draw it on.

use std::cell::RefCell;
use std::io::{self, Write};
use std::time::Duration;

use crate::apply::{Event, Progress, Report};
use crate::plan::Plan;

/// The views of apply's output (`apply --format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Lines for a terminal or a CI log.
    Text,
    /// One JSON object per event, then one for the summary.
    Json,
}

/// Prints progress as it happens: plain lines for people, JSON lines for machines.
pub struct Printer<'a> {
    format: Format,
    namespace: &'a str,
    out: RefCell<&'a mut dyn Write>,
    /// A bar per phase, on a terminal only; pipes and CI logs get plain lines.
    bar: RefCell<Option<indicatif::ProgressBar>>,
}

impl<'a> Printer<'a> {
    /// `terminal`: stdout and stderr are a terminal and nothing asked for
    /// quiet, so text output gets a bar per phase as well as its lines.
    pub fn new(format: Format, namespace: &'a str, out: &'a mut dyn Write, terminal: bool) -> Self {
        let bar = (format == Format::Text && terminal).then(indicatif::ProgressBar::hidden);
        Printer {
            format,
            namespace,
            out: RefCell::new(out),
            bar: RefCell::new(bar),
        }
    }

    /// Clears the last bar; call once the run is over, before the summary.
    pub fn finish(&self) {
        if let Some(bar) = self.bar.borrow().as_ref() {
            bar.finish_and_clear();
        }
    }

    fn start_bar(&self, title: &'static str, actions: usize) {
        if let Some(bar) = self.bar.borrow_mut().as_mut() {
            bar.finish_and_clear();
            *bar = indicatif::ProgressBar::new(actions as u64)
                .with_style(
                    indicatif::ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                )
                .with_message(title);
            bar.enable_steady_tick(Duration::from_millis(120));
        }
    }
}

/// A run's last bar goes with its printer, however the run ended.
impl Drop for Printer<'_> {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Progress for Printer<'_> {
    // Progress cannot fail the run: a line that cannot be written is lost.
    fn event(&self, event: Event<'_>) {
        let mut out = self.out.borrow_mut();
        if self.format == Format::Json {
            let _ = serde_json::to_writer(&mut **out, &event);
            let _ = writeln!(out);
            return;
        }
        if let Event::Phase { phase, actions } = &event {
            self.start_bar(phase.title(), *actions);
        }
        let Some(line) = line(&event, self.namespace) else {
            return;
        };
        let finished = !matches!(event, Event::Phase { .. });
        match self.bar.borrow().as_ref() {
            Some(bar) => {
                bar.suspend(|| {
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                });
                if finished {
                    bar.inc(1);
                }
            }
            None => {
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
        }
    }
}

/// An event as text; `None` for one that shows nothing (an action starting).
fn line(event: &Event<'_>, ns: &str) -> Option<String> {
    Some(match event {
        Event::Phase { phase, actions } => format!("\n{} ({actions} action(s))", phase.title()),
        Event::Started { .. } => return None,
        Event::Done {
            action, dry_run, diff, ..
        } => {
            let mut line = format!(
                "  done {} {} in {}{}",
                action.effect().symbol(),
                action.object(ns),
                action.cluster,
                if *dry_run { " (dry run)" } else { "" }
            );
            if let Some(diff) = diff.as_ref().filter(|d| !d.is_empty()) {
                line.push('\n');
                line.push_str(diff.trim_end());
            }
            line
        }
        Event::Failed { action, error, .. } => format!(
            "  FAILED {} {} in {}: {error}",
            action.effect().symbol(),
            action.object(ns),
            action.cluster
        ),
        Event::Skipped { action, why, .. } => format!(
            "  skipped {} {} in {}: {why}",
            action.effect().symbol(),
            action.object(ns),
            action.cluster
        ),
    })
}

/// Writes how the run ended, after its last event.
pub fn summary(format: Format, plan: &Plan, report: &Report, dry_run: bool, out: &mut dyn Write) -> io::Result<()> {
    match format {
        Format::Text => summary_text(plan, report, dry_run, out),
        Format::Json => summary_json(report, dry_run, out),
    }
}

fn summary_json(report: &Report, dry_run: bool, out: &mut dyn Write) -> io::Result<()> {
    let mut line = serde_json::json!({
        "event": "summary",
        "dry_run": dry_run,
        "done": report.done,
        "failed": report.failed.iter().map(|(i, e)| serde_json::json!({"index": i, "error": e})).collect::<Vec<_>>(),
        "skipped": report.skipped,
        "held": report.held.iter().map(|(i, why)| serde_json::json!({"index": i, "why": why})).collect::<Vec<_>>(),
        "lock_lost": report.lock_lost,
    });
    if let Some(stop) = report.stopped {
        line["stopped"] = serde_json::json!(stop.to_string());
    }
    writeln!(out, "{line}")
}

fn summary_text(plan: &Plan, report: &Report, dry_run: bool, out: &mut dyn Write) -> io::Result<()> {
    let stopped = report.stopped.map(|stop| {
        if dry_run {
            format!("Dry run stopped by {stop}")
        } else {
            format!("Apply stopped by {stop}")
        }
    });
    let verb = match (report.halted(), report.held.is_empty(), dry_run) {
        _ if stopped.is_some() => stopped.as_deref().unwrap_or_default(),
        (false, true, true) => "Dry run complete",
        (false, true, false) => "Apply complete",
        (false, false, true) => "Dry run incomplete",
        (false, false, false) => "Apply incomplete",
        (true, _, true) => "Dry run failed",
        (true, _, false) => "Apply failed",
    };
    let held = match report.held.len() {
        0 => String::new(),
        n => format!(", {n} held back"),
    };
    writeln!(
        out,
        "\n{verb}: {} done, {} failed, {} skipped{held} (of {} actions).",
        report.done.len(),
        report.failed.len(),
        report.skipped.len(),
        plan.actions.len()
    )?;
    for (index, error) in &report.failed {
        let action = &plan.actions[*index];
        writeln!(
            out,
            "  failed: {} in {}: {error}",
            action.object(&plan.namespace),
            action.cluster
        )?;
    }
    if report.lock_lost {
        writeln!(
            out,
            "  the apply lock could not be renewed: another apply may hold it now"
        )?;
    }
    // Grouped by why: one line per blocker (or for the changes that wait).
    let mut held: Vec<(&str, usize)> = Vec::new();
    for (_, why) in &report.held {
        match held.iter_mut().find(|(w, _)| w == why) {
            Some((_, n)) => *n += 1,
            None => held.push((why, 1)),
        }
    }
    for (why, n) in &held {
        writeln!(out, "  {n} action(s) {why}")?;
    }
    if !held.is_empty() && !report.halted() {
        writeln!(
            out,
            "The rest of the mesh was kept alive. Apply again once the blockers the plan lists are fixed."
        )?;
    }
    if let Some(stop) = report.stopped {
        // What is left, by name: the run stopped by request, so nothing
        // else in the output says why these did not happen.
        for &index in &report.skipped {
            let action = &plan.actions[index];
            writeln!(
                out,
                "  left: {} {} in {}",
                action.effect().symbol(),
                action.object(&plan.namespace),
                action.cluster
            )?;
        }
        writeln!(
            out,
            "Stopped by {stop} between actions: every action that started finished, nothing was started after, and the apply lock was released. Run apply again to do what is left; the clusters record what a network change still owes, so the next plan has it."
        )?;
    } else if report.halted() {
        writeln!(
            out,
            "Nothing after the failed phase was started. Run apply again once the cause is fixed; it picks up where this run stopped."
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Action, ActionKind, Phase};
    use crate::render::scenarios;

    /// How a run goes: apply's own sequencer over actions that touch nothing.
    #[derive(Default)]
    struct Run {
        dry_run: bool,
        /// Actions that fail, by index, with the error apply would report.
        failing: Vec<(usize, &'static str)>,
        /// The lock is found lost before this phase starts.
        lock_lost_before: Option<Phase>,
        /// The diff each action that is done reports.
        diff: Option<fn(&Action) -> Option<String>>,
        /// SIGTERM arrives while this action (by index) is in flight.
        stop_during: Option<usize>,
    }

    /// Ends each action as `Run` says, and notes the phases it ran.
    struct Fake<'r> {
        plan: &'r Plan,
        run: &'r Run,
        ran: RefCell<Vec<Phase>>,
        cancel: crate::apply::Cancel,
    }

    impl crate::apply::Runner for Fake<'_> {
        async fn run(&self, action: &Action) -> Result<Option<String>, String> {
            self.ran.borrow_mut().push(action.phase);
            let index = self.plan.actions.iter().position(|a| std::ptr::eq(a, action)).unwrap();
            if self.run.stop_during == Some(index) {
                self.cancel.stop(crate::apply::Stop::Terminate);
            }
            match self.run.failing.iter().find(|(i, _)| *i == index) {
                Some((_, error)) => Err(error.to_string()),
                None => Ok(self.run.diff.and_then(|diff| diff(action))),
            }
        }
    }

    /// Everything apply prints for the run, without a terminal.
    fn print(format: Format, plan: &Plan, run: &Run) -> String {
        let fake = Fake {
            plan,
            run,
            ran: RefCell::default(),
            cancel: crate::apply::Cancel::new(),
        };
        // Lost once an action of a phase before `lock_lost_before` has run.
        let lock_lost = || {
            run.lock_lost_before
                .is_some_and(|before| fake.ran.borrow().iter().any(|p| *p < before))
        };
        let settings = crate::apply::Settings {
            dry_run: run.dry_run,
            diff: run.diff.is_some(),
            concurrency: 1,
        };
        let mut out = Vec::new();
        let printer = Printer::new(format, &plan.namespace, &mut out, false);
        let report = futures::executor::block_on(crate::apply::sequence(
            plan,
            &fake,
            &lock_lost,
            &fake.cancel,
            &settings,
            &printer,
        ));
        printer.finish();
        drop(printer);
        summary(format, plan, &report, run.dry_run, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn first_in(plan: &Plan, phase: Phase) -> usize {
        plan.actions.iter().position(|a| a.phase == phase).unwrap()
    }

    fn snapshot(name: &str, text: String) {
        scenarios::settings().bind(|| insta::assert_snapshot!(name, text));
    }

    #[test]
    fn text_of_a_run_that_completes() {
        let (plan, _) = scenarios::fresh();
        snapshot("apply_text__fresh", print(Format::Text, &plan, &Run::default()));
    }

    /// The diffs apply makes of a network label and of a new remote secret,
    /// of the objects its builders make.
    fn diff_of(action: &Action) -> Option<String> {
        use crate::apply::build;
        fn value(object: &impl serde::Serialize) -> serde_json::Value {
            serde_json::to_value(object).unwrap()
        }
        let ns = "istio-system";
        let (before, after) = match &action.kind {
            ActionKind::SetNetwork { network, previous, .. } => (
                previous
                    .as_deref()
                    .map(|p| value(&build::network_label(ns, p, None, None))),
                value(&build::network_label(ns, network, None, None)),
            ),
            ActionKind::WriteRemoteSecret {
                name,
                peer,
                server,
                spec_hash,
                ..
            } => {
                let token = secrecy::SecretString::from("a-token");
                let endpoint = build::PeerEndpoint {
                    server,
                    ca_pem: None,
                    tls_server_name: None,
                    skip_tls_verify: false,
                };
                let kubeconfig = build::peer_kubeconfig(peer, &endpoint, &token);
                let secret = build::RemoteSecret {
                    namespace: ns,
                    mesh: "mesh1",
                    name,
                    peer,
                    peer_identity: "uid-of-the-peer",
                    spec_hash,
                    resource_version: None,
                }
                .build(&kubeconfig);
                (None, value(&secret))
            }
            _ => return None,
        };
        Some(crate::apply::diff::unified(before.as_ref(), Some(&after)))
    }

    #[test]
    fn text_of_a_dry_run_shows_each_diff_under_its_action() {
        let (plan, _) = scenarios::network_change();
        let run = Run {
            dry_run: true,
            diff: Some(diff_of),
            ..Run::default()
        };
        let text = print(Format::Text, &plan, &run);
        // The token stays redacted however the renderer words the diff.
        assert!(text.contains("\"us-east\": \"(sensitive value)\""), "{text}");
        snapshot("apply_text__dry_run", text);
    }

    // A failed action ends its phase; the next phases are skipped and the
    // summary says what to do.
    #[test]
    fn text_of_a_failed_run_names_the_failure_and_what_was_skipped() {
        let (plan, _) = scenarios::fresh();
        let run = Run {
            failing: vec![(
                first_in(&plan, Phase::Network),
                "timed out: the API server of apac did not answer within --timeout (ServiceError: timed out)",
            )],
            ..Run::default()
        };
        snapshot("apply_text__failed", print(Format::Text, &plan, &run));
    }

    // Issue 29: a run stopped by a signal says what it did and, by name, what is left.
    #[test]
    fn text_and_json_of_a_run_stopped_by_a_signal() {
        let (plan, _) = scenarios::fresh();
        let during = first_in(&plan, Phase::Network);
        let run = Run {
            stop_during: Some(during),
            ..Run::default()
        };
        let text = print(Format::Text, &plan, &run);
        assert!(text.contains("Apply stopped by SIGTERM"), "{text}");
        let left = plan.actions.len() - during - 1;
        assert_eq!(text.matches("\n  left: ").count(), left, "{text}");
        assert!(text.contains("not run: apply was stopped by SIGTERM"), "{text}");
        let json = print(Format::Json, &plan, &run);
        let summary: serde_json::Value = serde_json::from_str(json.lines().last().unwrap()).unwrap();
        assert_eq!(summary["stopped"], "SIGTERM", "{json}");
        assert_eq!(summary["skipped"].as_array().unwrap().len(), left, "{json}");
        assert_eq!(summary["done"].as_array().unwrap().len(), during + 1, "{json}");
    }

    #[test]
    fn text_of_a_run_that_lost_its_lock() {
        let (plan, _) = scenarios::fresh();
        let run = Run {
            lock_lost_before: Some(Phase::Attach),
            ..Run::default()
        };
        snapshot("apply_text__lock_lost", print(Format::Text, &plan, &run));
    }

    // A blocker about one cluster: the other pairs rotate; what touches it
    // is held back, each with why, and the summary says the run is incomplete.
    #[test]
    fn text_and_json_of_a_run_held_back_by_a_blocker() {
        let (plan, _) = scenarios::blocked_rotation();
        assert_eq!(plan.blockers().count(), 1);
        let text = print(Format::Text, &plan, &Run::default());
        assert!(text.contains("Apply incomplete"), "{text}");
        snapshot("apply_text__held", text);
        let json = print(Format::Json, &plan, &Run::default());
        let summary: serde_json::Value = serde_json::from_str(json.lines().last().unwrap()).unwrap();
        let held = summary["held"].as_array().unwrap();
        assert!(!held.is_empty(), "{json}");
        assert!(
            held.iter().all(|h| h["why"]
                .as_str()
                .unwrap()
                .contains("blocker gateway_address_missing concerns apac")),
            "{json}"
        );
    }

    #[test]
    fn json_is_one_object_per_event_then_the_summary() {
        let (plan, _) = scenarios::detach();
        let run = Run {
            failing: vec![(
                0,
                "timed out: the API server of eu-central did not answer within --timeout (ServiceError: timed out)",
            )],
            ..Run::default()
        };
        let text = print(Format::Json, &plan, &run);
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        }
        snapshot("apply_json__failed", text);
    }
}
