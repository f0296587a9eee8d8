//! The CI examples under `examples/ci/` and the GitHub Action they use
//! (`action.yml`) are valid YAML with the keys GitHub Actions and Kubernetes
//! need, every `meshform` command in them parses with meshform's own CLI
//! definition, they pin the release of Cargo.toml's version, and the drift
//! check's RBAC grants exactly the reads observe makes, no more.

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

/// `action.yml`, the composite action the example workflows use.
fn action() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("action.yml");
    let text = fs::read_to_string(&path).unwrap();
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("action.yml is not valid YAML: {e}"))
}

/// The action's steps that run in `mode` (those without a condition run in both), checked for
/// the keys a composite action's steps need.
fn action_steps(mode: &str) -> Vec<Value> {
    let action = action();
    assert_eq!(action["runs"]["using"], "composite", "action.yml");
    let steps = action["runs"]["steps"].as_array().expect("action.yml: runs.steps");
    for step in steps {
        assert!(
            step["uses"].is_string() != step["run"].is_string(),
            "action.yml: a step has either `uses` or `run`: {step}"
        );
        if step["run"].is_string() {
            assert_eq!(
                step["shell"], "bash",
                "action.yml: a run step of a composite action names its shell: {step}"
            );
        }
    }
    steps
        .iter()
        .filter(|s| {
            s["if"]
                .as_str()
                .is_none_or(|c| c.contains(&format!("inputs.mode == '{mode}'")))
        })
        .cloned()
        .collect()
}

/// The `with:` of the workflow step that uses the meshform action, checked to pin the
/// release of Cargo.toml's version.
fn action_use(steps: &[Value], name: &str) -> Value {
    let step = steps
        .iter()
        .find(|s| s["uses"].as_str().is_some_and(|u| u.starts_with("meshform/meshform@")))
        .unwrap_or_else(|| panic!("{name}: a step uses the meshform action"));
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(step["uses"], format!("meshform/meshform@v{version}"), "{name}");
    assert_eq!(step["with"]["version"], version, "{name}");
    // Every input given is one the action declares.
    let inputs = action()["inputs"].as_object().unwrap().clone();
    for key in step["with"].as_object().unwrap().keys() {
        assert!(inputs.contains_key(key), "{name}: the action has no input {key:?}");
    }
    step["with"].clone()
}

#[test]
fn action_inputs_are_declared_and_the_version_is_cargo_toml_s() {
    let action = action();
    let inputs = action["inputs"].as_object().expect("action.yml: inputs");
    for input in ["mode", "mesh-file", "snapshot", "kubeconfig", "version", "sha256"] {
        assert!(inputs.contains_key(input), "action.yml: input {input}");
    }
    assert_eq!(inputs["version"]["default"], env!("CARGO_PKG_VERSION"));
    // A typo in `inputs.NAME` is an empty string at run time, not an error: catch it here.
    let text = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("action.yml")).unwrap();
    for used in text.split("inputs.").skip(1) {
        let name: String = used
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        assert!(inputs.contains_key(&name), "action.yml uses undeclared inputs.{name}");
    }
    // Step outputs read are those of steps with that id.
    let ids: Vec<&str> = action["runs"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    for used in text.split("steps.").skip(1) {
        let id: String = used.chars().take_while(|c| *c != '.').collect();
        assert!(
            ids.contains(&id.as_str()),
            "action.yml reads steps.{id}, which no step is: {ids:?}"
        );
    }
}

#[test]
fn action_installs_the_release_archive_and_checks_its_sha256() {
    let install = &action_steps("pull-request")[0];
    assert!(install["if"].is_null(), "the install step runs in every mode");
    let script = install["run"].as_str().unwrap();
    // The archive names the release workflow publishes ($bin-$tag-$target, and a .sha256 file).
    let release =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".github/workflows/release.yml")).unwrap();
    assert!(
        release.contains("archive: $bin-$tag-$target"),
        "release.yml archive names"
    );
    assert!(
        release.contains("checksum: sha256"),
        "release.yml publishes SHA-256 files"
    );
    assert!(script.contains(r#"archive="meshform-v$VERSION-$target""#), "{script}");
    assert!(
        script.contains(&format!("{}/releases/download/v$VERSION", env!("CARGO_PKG_REPOSITORY"))),
        "{script}"
    );
    for needle in ["$archive.sha256", "sha256sum", "exit 1", "$PIN", "GITHUB_PATH"] {
        assert!(script.contains(needle), "install step: {needle}");
    }
    // The check comes before the archive is unpacked.
    assert!(script.find("sha256sum").unwrap() < script.find("tar -xzf").unwrap());
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
    let with = action_use(&steps(&workflow, name), name);
    assert_eq!(with["mode"], "pull-request", "{name}");
    // Never credentials on pull-request runners.
    assert!(with.get("kubeconfig").is_none(), "{name}");

    let steps = action_steps("pull-request");
    let commands = workflow_commands(&steps, "action.yml");
    assert_eq!(
        commands.len(),
        2,
        "action.yml: runs meshform validate and plan: {commands:?}"
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
                .is_some_and(|c| c.contains("steps.pr-plan.outputs.status != '0'"))
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
    let with = action_use(&steps(&workflow, name), name);
    assert_eq!(with["mode"], "drift-check", "{name}");
    // The kubeconfig comes from a secret, never from the repository.
    assert_eq!(with["kubeconfig"], "${{ secrets.MESHFORM_KUBECONFIG }}", "{name}");

    let steps = action_steps("drift-check");
    let commands = workflow_commands(&steps, "action.yml");
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
    assert!(
        !commands.iter().any(|(w, _)| w.contains(&"validate".to_string())),
        "the pull-request steps do not run in drift-check mode"
    );
    let on_drift = steps
        .iter()
        .find(|s| s["if"] == "inputs.mode == 'drift-check' && steps.drift-plan.outputs.status == '2'")
        .unwrap_or_else(|| panic!("{name}: a step handles exit 2"));
    assert!(
        on_drift["with"]["script"].as_str().unwrap().contains("issues.create"),
        "{on_drift}"
    );
    // The kubeconfig file lives only for the plan.
    let run = steps
        .iter()
        .filter_map(|s| s["run"].as_str())
        .find(|r| r.contains("--detailed-exitcode"))
        .unwrap();
    assert!(
        run.contains("umask 077") && run.contains("rm -f \"$kubeconfig\""),
        "{run}"
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
    // The release image (Containerfile), pinned to Cargo.toml's version.
    assert_eq!(
        container["image"],
        format!("ghcr.io/meshform/meshform:{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(pod["securityContext"]["runAsUser"], 65532, "the image's USER");
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
    let control_plane_role = meshform::objects::control_plane_cluster_role(ns);
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
        get("", "rbac.authorization.k8s.io", "clusterroles", &control_plane_role),
        get(
            "",
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
            &control_plane_role,
        ),
        get(
            ns,
            "",
            "serviceaccounts",
            meshform::objects::CONTROL_PLANE_SERVICE_ACCOUNT,
        ),
        get(ns, "", "secrets", meshform::objects::READER_TOKEN_SECRET),
        (ns, String::new(), "secrets".into(), "list".into(), String::new()),
        get(
            ns,
            "networking.istio.io",
            "gateways",
            meshform::objects::CROSS_NETWORK_GATEWAY,
        ),
        get(ns, "networking.istio.io", "gateways", meshform::objects::ISTIOD_GATEWAY),
        get(
            ns,
            "networking.istio.io",
            "virtualservices",
            meshform::objects::ISTIOD_VIRTUAL_SERVICE,
        ),
        (ns, String::new(), "services".into(), "list".into(), String::new()),
        (
            ns,
            "discovery.k8s.io".into(),
            "endpointslices".into(),
            "list".into(),
            String::new(),
        ),
        (ns, "apps".into(), "deployments".into(), "list".into(), String::new()),
        (ns, String::new(), "configmaps".into(), "list".into(), String::new()),
        get(ns, "", "configmaps", meshform::objects::ROOT_CERT_CONFIGMAP),
        (
            ns,
            "gateway.networking.k8s.io".into(),
            "gateways".into(),
            "list".into(),
            String::new(),
        ),
        get(ns, "apps", "daemonsets", meshform::objects::ZTUNNEL),
        get(ns, "", "secrets", meshform::objects::CA_CERTS_SECRET),
    ]);
    assert_eq!(granted, expected);
    // A new read in observe changes this count: grant it in rbac.yaml too. The
    // LIST of the token bindings (issue 15) is one more LIST of secrets, under the
    // grant the others use.
    assert_eq!(expected.len() + 1, meshform::observe::REQUESTS_PER_CLUSTER);

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
                assert!(
                    matches!(
                        e.kind(),
                        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
                    ),
                    "README.md: `{span}`:\n{e}"
                );
            }
        }
    }
}
