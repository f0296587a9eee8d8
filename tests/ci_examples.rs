//! The CI examples under `examples/ci/` are valid YAML with the keys GitHub
//! Actions and Kubernetes need, every `meshform` command in them parses with
//! meshform's own CLI definition, and the drift check's RBAC grants exactly
//! the reads observe makes, no more.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use clap::Parser;
use meshform::cli::Cli;
use serde::Deserialize;
use serde_json::Value;

fn ci_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ci")
}

/// Every document of a YAML file, as JSON values.
fn documents(name: &str) -> Vec<Value> {
    let path = ci_dir().join(name);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{name} is not valid YAML: {e}")))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn workflow(name: &str) -> Value {
    let mut docs = documents(name);
    assert_eq!(docs.len(), 1, "{name}: one document");
    docs.remove(0)
}

/// A `run:` script's meshform command lines, split into words as the shell
/// would (quotes removed, line continuations joined), up to the first
/// redirection, pipe or list operator.
fn meshform_commands(script: &str) -> Vec<Vec<String>> {
    script
        .replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("meshform "))
        .map(|line| {
            let mut words = Vec::new();
            for word in shell_words(line) {
                if [">", ">>", "|", "&&", "||", ";", "2>", "2>&1"].contains(&word.as_str()) {
                    break;
                }
                words.push(word);
            }
            words
        })
        .collect()
}

fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quote, mut started) = (Vec::new(), String::new(), None, false);
    for c in line.chars() {
        match (quote, c) {
            (None, '"' | '\'') => {
                quote = Some(c);
                started = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            (_, c) => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(word);
    }
    words
}

/// Parses `words` (starting with `meshform`) with the real CLI definition.
fn parse(words: &[String], origin: &str) -> Cli {
    Cli::try_parse_from(words).unwrap_or_else(|e| panic!("{origin}: `{}` does not parse:\n{e}", words.join(" ")))
}

/// Every step of every job, checked for the keys a workflow needs.
fn steps(workflow: &Value, name: &str) -> Vec<Value> {
    assert!(workflow["name"].is_string(), "{name}: name");
    assert!(workflow["on"].is_object(), "{name}: `on` must be a map of triggers");
    let jobs = workflow["jobs"].as_object().unwrap_or_else(|| panic!("{name}: jobs"));
    assert!(!jobs.is_empty(), "{name}: jobs");
    let mut all = Vec::new();
    for (job_name, job) in jobs {
        assert!(job["runs-on"].is_string(), "{name}: jobs.{job_name}.runs-on");
        let steps = job["steps"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: jobs.{job_name}.steps"));
        assert!(!steps.is_empty(), "{name}: jobs.{job_name}.steps");
        for step in steps {
            assert!(
                step["uses"].is_string() != step["run"].is_string(),
                "{name}: a step has either `uses` or `run`: {step}"
            );
        }
        all.extend(steps.iter().cloned());
    }
    all
}

/// The meshform commands of a workflow's `run` steps, parsed, in order.
fn workflow_commands(steps: &[Value], name: &str) -> Vec<(Vec<String>, Cli)> {
    steps
        .iter()
        .filter_map(|s| s["run"].as_str())
        .flat_map(meshform_commands)
        .map(|words| {
            let cli = parse(&words, name);
            (words, cli)
        })
        .collect()
}

fn script_of<'a>(steps: &'a [Value], needle: &str) -> &'a str {
    steps
        .iter()
        .filter_map(|s| s["with"]["script"].as_str())
        .find(|s| s.contains(needle))
        .unwrap_or_else(|| panic!("no github-script step mentions {needle:?}"))
}

#[test]
fn every_ci_file_is_checked_here() {
    let mut names: Vec<String> = fs::read_dir(ci_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["cronjob.yaml", "drift-check.yml", "pull-request.yml", "rbac.yaml"],
        "a new file under examples/ci/ needs a test here"
    );
}

#[test]
fn pull_request_workflow_validates_plans_offline_and_keeps_one_comment() {
    let name = "pull-request.yml";
    let workflow = workflow(name);
    assert!(
        workflow["on"]["pull_request"].is_object(),
        "{name}: runs on pull requests"
    );
    assert_eq!(workflow["permissions"]["pull-requests"], "write", "{name}: may comment");
    let steps = steps(&workflow, name);
    let commands = workflow_commands(&steps, name);
    assert!(
        commands.len() >= 2,
        "{name}: runs meshform validate and plan: {commands:?}"
    );

    let (validate, plan) = (&commands[0].0, &commands[1].0);
    assert!(
        validate.contains(&"validate".to_string()),
        "{name}: validates first: {commands:?}"
    );
    assert!(plan.contains(&"plan".to_string()), "{name}: then plans: {commands:?}");
    for flag in ["--observed", "--format"] {
        assert!(plan.contains(&flag.to_string()), "{name}: plan {flag}: {plan:?}");
    }
    assert!(plan.windows(2).any(|w| w == ["--format", "markdown"]), "{plan:?}");
    // No credentials on pull-request runners: the plan is made offline.
    assert!(!plan.contains(&"--kubeconfig".to_string()), "{plan:?}");

    // The comment is found by the marker the markdown view writes.
    let marker = meshform::render::markdown::marker("mesh1");
    let prefix = marker.split("mesh=").next().unwrap();
    let script = script_of(&steps, "createComment");
    assert!(script.contains(prefix.trim_end()), "{name}: looks for {prefix:?}");
    assert!(script.contains("updateComment"), "{name}: updates its comment");

    // A blocker or an invalid topology fails the check.
    let fail = steps
        .iter()
        .find(|s| {
            s["if"]
                .as_str()
                .is_some_and(|c| c.contains("steps.plan.outputs.status != '0'"))
        })
        .unwrap_or_else(|| panic!("{name}: a step fails on a non-zero plan status"));
    assert!(fail["run"].as_str().unwrap().contains("exit 1"), "{fail}");
    let validate_step = steps
        .iter()
        .find(|s| {
            s["run"]
                .as_str()
                .is_some_and(|r| r.contains("meshform --color never validate"))
        })
        .unwrap();
    assert!(
        validate_step.get("continue-on-error").is_none(),
        "{name}: an invalid topology fails the job"
    );
}

#[test]
fn drift_workflow_plans_against_the_clusters_and_reports_exit_2() {
    let name = "drift-check.yml";
    let workflow = workflow(name);
    let cron = workflow["on"]["schedule"][0]["cron"]
        .as_str()
        .unwrap_or_else(|| panic!("{name}: on.schedule[0].cron"));
    assert_eq!(cron.split_whitespace().count(), 5, "{name}: a five-field cron: {cron}");
    assert_eq!(workflow["permissions"]["issues"], "write", "{name}: may open issues");
    let steps = steps(&workflow, name);
    let commands = workflow_commands(&steps, name);
    let (plan, _) = commands
        .iter()
        .find(|(w, _)| w.contains(&"plan".to_string()))
        .unwrap_or_else(|| panic!("{name}: runs meshform plan"));
    for flag in ["--detailed-exitcode", "--kubeconfig"] {
        assert!(plan.contains(&flag.to_string()), "{name}: {flag}: {plan:?}");
    }
    assert!(
        !plan.contains(&"--observed".to_string()),
        "{name}: plans against the clusters"
    );
    // The kubeconfig comes from a secret, never from the repository.
    let text = fs::read_to_string(ci_dir().join(name)).unwrap();
    assert!(text.contains("${{ secrets.MESHFORM_KUBECONFIG }}"), "{name}");
    let on_drift = steps
        .iter()
        .find(|s| s["if"] == "steps.plan.outputs.status == '2'")
        .unwrap_or_else(|| panic!("{name}: a step handles exit 2"));
    assert!(
        on_drift["with"]["script"].as_str().unwrap().contains("issues.create"),
        "{on_drift}"
    );
}

/// One document of a manifest, by kind.
fn manifest<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

#[test]
fn every_manifest_has_api_version_kind_and_name() {
    for file in ["cronjob.yaml", "rbac.yaml"] {
        let docs = documents(file);
        assert!(!docs.is_empty(), "{file}");
        for doc in &docs {
            assert!(doc["apiVersion"].is_string(), "{file}: apiVersion in {doc}");
            assert!(doc["kind"].is_string(), "{file}: kind in {doc}");
            assert!(doc["metadata"]["name"].is_string(), "{file}: metadata.name in {doc}");
        }
    }
}

#[test]
fn cronjob_runs_a_drift_plan_without_rights_of_its_own() {
    let docs = documents("cronjob.yaml");
    let cronjobs = manifest(&docs, "CronJob");
    assert_eq!(cronjobs.len(), 1);
    let cronjob = cronjobs[0];
    assert_eq!(cronjob["apiVersion"], "batch/v1");
    assert_eq!(
        cronjob["spec"]["schedule"].as_str().unwrap().split_whitespace().count(),
        5
    );
    let job = &cronjob["spec"]["jobTemplate"]["spec"];
    // A drift (exit 2) must not be retried away.
    assert_eq!(job["backoffLimit"], 0);
    let pod = &job["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["automountServiceAccountToken"], false);
    let container = &pod["containers"][0];
    let mut words = vec!["meshform".to_string()];
    words.extend(
        container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string()),
    );
    parse(&words, "cronjob.yaml");
    assert!(words.contains(&"--detailed-exitcode".to_string()), "{words:?}");
    // The files the arguments name are the ones mounted.
    let mounts: Vec<&str> = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    for path in words.iter().filter(|w| w.starts_with('/')) {
        assert!(
            mounts.iter().any(|m| path.starts_with(m)),
            "{path} is not mounted: {mounts:?}"
        );
    }
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);
}

#[test]
fn observer_rbac_grants_exactly_the_reads_of_observe() {
    let docs = documents("rbac.yaml");
    let ns = "istio-system";
    let mut granted = BTreeSet::new();
    for kind in ["ClusterRole", "Role"] {
        for role in manifest(&docs, kind) {
            for rule in role["rules"].as_array().unwrap() {
                let list = |key: &str| -> Vec<String> {
                    rule[key]
                        .as_array()
                        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
                        .unwrap_or_default()
                };
                let names = list("resourceNames");
                for group in list("apiGroups") {
                    for resource in list("resources") {
                        for verb in list("verbs") {
                            let scope = if kind == "Role" { ns } else { "" };
                            if names.is_empty() {
                                granted.insert((scope, group.clone(), resource.clone(), verb, String::new()));
                            } else {
                                for name in &names {
                                    granted.insert((
                                        scope,
                                        group.clone(),
                                        resource.clone(),
                                        verb.clone(),
                                        name.clone(),
                                    ));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    // The reads of observe::read_cluster, for the mesh namespace istio-system.
    let role = meshform::objects::reader_cluster_role(ns);
    let get = |scope, group: &str, resource: &str, name: &str| {
        (
            scope,
            group.to_string(),
            resource.to_string(),
            "get".to_string(),
            name.to_string(),
        )
    };
    let expected = BTreeSet::from([
        get("", "", "namespaces", "kube-system"),
        get("", "", "namespaces", ns),
        get("", "rbac.authorization.k8s.io", "clusterroles", &role),
        get("", "rbac.authorization.k8s.io", "clusterrolebindings", &role),
        get(ns, "", "serviceaccounts", meshform::objects::READER_SERVICE_ACCOUNT),
        get(ns, "", "secrets", meshform::objects::READER_TOKEN_SECRET),
        (ns, String::new(), "secrets".into(), "list".into(), String::new()),
        get(
            ns,
            "networking.istio.io",
            "gateways",
            meshform::objects::CROSS_NETWORK_GATEWAY,
        ),
        get(ns, "", "services", meshform::topology::DEFAULT_GATEWAY_SERVICE),
        (ns, "apps".into(), "deployments".into(), "list".into(), String::new()),
        (ns, String::new(), "configmaps".into(), "list".into(), String::new()),
        get(ns, "", "configmaps", meshform::objects::ROOT_CERT_CONFIGMAP),
    ]);
    assert_eq!(granted, expected);
    // A new read in observe changes this count: grant it in rbac.yaml too.
    assert_eq!(expected.len(), meshform::observe::REQUESTS_PER_CLUSTER);

    // Roles are bound to the observer account, and the bindings name roles that exist.
    for (binding, role) in [("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")] {
        let bindings = manifest(&docs, binding);
        assert_eq!(bindings.len(), 1, "{binding}");
        let b = bindings[0];
        assert_eq!(b["roleRef"]["kind"], role);
        assert!(
            manifest(&docs, role)
                .iter()
                .any(|r| r["metadata"]["name"] == b["roleRef"]["name"])
        );
        assert_eq!(b["subjects"][0]["kind"], "ServiceAccount");
        assert_eq!(b["subjects"][0]["name"], "meshform-observer");
    }
}

#[test]
fn shell_words_split_as_the_shell_does() {
    assert_eq!(
        meshform_commands(
            "set +e\nmeshform plan --kubeconfig \"$RUNNER_TEMP/kube config\" \\\n  --format markdown > plan.md\n"
        ),
        [[
            "meshform",
            "plan",
            "--kubeconfig",
            "$RUNNER_TEMP/kube config",
            "--format",
            "markdown"
        ]]
    );
}

#[test]
fn readme_names_the_ci_files_and_its_meshform_commands_parse() {
    let readme = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    for file in ["pull-request.yml", "drift-check.yml", "cronjob.yaml", "rbac.yaml"] {
        assert!(readme.contains(&format!("(examples/ci/{file})")), "README links {file}");
    }
    // Inline commands such as `meshform plan -f mesh.toml --observed observed.json`;
    // placeholders (`meshform COMMAND --help`, `meshform ... | head`) are not commands.
    let spans: Vec<&str> = readme
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|span| span.starts_with("meshform ") && !span.contains("...") && !span.contains("COMMAND"))
        .collect();
    assert!(spans.len() >= 10, "{spans:?}");
    for span in spans {
        // Usage lines in the commands table show choices as `a\|b` and options in brackets.
        if span.contains('[') || span.contains("\\|") {
            continue;
        }
        for words in meshform_commands(span) {
            if let Err(e) = Cli::try_parse_from(&words) {
                assert_eq!(
                    e.kind(),
                    clap::error::ErrorKind::DisplayHelp,
                    "README.md: `{span}`:\n{e}"
                );
            }
        }
    }
}
