//! The alert rules, `deploy/meshform/alerts.yaml`: every expr parses with
//! Prometheus's own PromQL parser and names only metrics the controller
//! exports; every alert says what happened and names a meshform command that
//! parses.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use clap::Parser;
use meshform::cli::Cli;
use serde::Deserialize;

use super::{ALERTS, chartcheck, text, yaml_file};

/// The metrics `meshform controller` exports (issue 30, item 3), the only
/// names an alert may use. A histogram's series carry their suffixes.
const METRICS: &[&str] = &[
    "meshform_cluster_reachable",
    "meshform_cluster_last_observed_timestamp_seconds",
    "meshform_pair_attached",
    "meshform_reader_token_expiry_timestamp_seconds",
    "meshform_pending_actions",
    "meshform_blockers",
    "meshform_check_results",
    "meshform_reconcile_duration_seconds_bucket",
    "meshform_reconcile_duration_seconds_count",
    "meshform_reconcile_duration_seconds_sum",
    "meshform_last_success_timestamp_seconds",
    "meshform_leader",
];

/// One line of `chartcheck rules`: a rule and its metrics, or a problem.
#[derive(Debug, Deserialize)]
struct Parsed {
    #[serde(default)]
    alert: String,
    #[serde(default)]
    metrics: Vec<String>,
    #[serde(default)]
    error: Option<String>,
}

/// Checks a rules document as `promtool check rules` does (Prometheus's
/// rulefmt: the format, every expr, every annotation's template).
fn check_rules(rules: &str) -> Vec<Parsed> {
    let mut child = Command::new(chartcheck())
        .arg("rules")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running chartcheck rules");
    child.stdin.take().unwrap().write_all(rules.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "chartcheck rules:\n{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn alert_exprs_parse_and_name_only_the_controller_s_metrics() {
    let rules = std::fs::read_to_string(ALERTS).unwrap();
    let parsed = check_rules(&rules);
    let problems: Vec<_> = parsed.iter().filter_map(|p| p.error.as_deref()).collect();
    assert!(problems.is_empty(), "alerts.yaml: {problems:#?}");
    let names: BTreeSet<&str> = parsed.iter().map(|p| p.alert.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "MeshformAbsent",
            "MeshformBlocked",
            "MeshformClusterUnreachable",
            "MeshformDestructiveActionsWaiting",
            "MeshformNoLeader",
            "MeshformPairDetached",
            "MeshformReaderTokenExpiringSoon",
            "MeshformReconcileStale",
        ])
    );
    for rule in &parsed {
        assert_eq!(rule.error, None, "{}", rule.alert);
        assert!(!rule.metrics.is_empty(), "{} names no metric", rule.alert);
        for metric in &rule.metrics {
            assert!(
                METRICS.contains(&metric.as_str()),
                "{}: {metric} is not a metric of meshform's",
                rule.alert
            );
        }
    }
    // The check can fail: a broken expr, a broken template, an unknown key.
    for broken in [
        "groups:\n- name: x\n  rules:\n  - alert: Broken\n    expr: max by (holder meshform_leader\n",
        "groups:\n- name: x\n  rules:\n  - alert: Broken\n    expr: up\n    annotations: {summary: '{{ $labels.x '}\n",
        "groups:\n- name: x\n  rules:\n  - alert: Broken\n    expr: up\n    runbook: x\n",
    ] {
        let reported = check_rules(broken);
        assert!(reported.iter().any(|p| p.error.is_some()), "{broken}: {reported:?}");
    }
}

#[test]
fn every_alert_says_what_happened_and_which_meshform_command_helps() {
    let rules = yaml_file(ALERTS);
    let mut seen = 0;
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            seen += 1;
            let name = rule["alert"].as_str().unwrap();
            let annotations = &rule["annotations"];
            for key in ["summary", "description", "runbook"] {
                assert!(annotations[key].is_string(), "{name}: no {key}");
            }
            assert!(rule["labels"]["severity"].is_string(), "{name}: severity");
            assert!(
                rule["for"].is_string(),
                "{name}: `for` keeps one bad scrape from paging"
            );
            // `meshform ...` spans in backquotes are commands; each parses.
            let runbook = annotations["runbook"].as_str().unwrap();
            let commands: Vec<&str> = runbook
                .split('`')
                .skip(1)
                .step_by(2)
                .filter(|c| c.starts_with("meshform "))
                .collect();
            assert!(
                !commands.is_empty(),
                "{name}: the runbook names no meshform command: {runbook}"
            );
            for command in commands {
                let mut words: Vec<&str> = command.split_whitespace().collect();
                let help = words.contains(&"--help");
                words.retain(|w| *w != "--help");
                let parsed = Cli::try_parse_from(&words);
                assert!(
                    parsed.is_ok() || help,
                    "{name}: `{command}` does not parse: {}",
                    parsed.unwrap_err()
                );
                if help {
                    // `meshform controller --help`: the subcommand exists.
                    let cli = <Cli as clap::CommandFactory>::command();
                    assert!(cli.find_subcommand(words[1]).is_some(), "{name}: {command}");
                }
            }
        }
    }
    assert!(seen >= 6, "{seen} rules");
}
