//! A saved plan against the plan made again when it is applied. Apply writes
//! a saved plan only when planning again, under the lock, from what the
//! clusters hold now and with the choices the plan records, gives the same
//! actions (Terraform's "saved plan is stale"); it then executes the plan
//! made now, whose findings and preconditions are current. This file only
//! compares two plans; it reads nothing and decides nothing else.
//!
//! Why format 1's fingerprints of what the plan saw (a `uid@resourceVersion`
//! per object) went: they were never enough and always too much. Not
//! enough, because a plan depends on more than they held (Istio installs,
//! roots of trust, injector ConfigMaps) and on the clock (a rotation falls
//! due, a revocation's grace passes), so matching fingerprints proved
//! nothing and apply must plan again whatever they say: they cannot be a
//! cheap first check. Too much, because any write to an object (an
//! annotation another tool adds) refused a plan whose actions it did not
//! change. And they cost more than the planning they would spare (at 1,000
//! clusters a million entries, a third of the planner's work). The
//! topology's hash stays: apply reads from mesh.toml what no action carries.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use super::{Action, ActionKind, Hold, Phase, Plan, Precondition};

/// What differs between a saved plan and the plan made now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// mesh.toml resolves to another topology than the plan was made from.
    Topology,
    /// Planning again gives an action the saved plan does not have.
    Added(Row),
    /// The saved plan has an action planning again does not give.
    Removed(Row),
    /// The same object in the same cluster and phase, acted on otherwise.
    Changed { action: Row, fields: Vec<Field> },
}

/// One action as the comparison names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub cluster: String,
    /// The action's name in the plan's JSON (`write_remote_secret`).
    pub action: String,
    /// The object acted on, as the plan shows it.
    pub object: String,
    /// Display only: why the plan it comes from has it.
    pub reason: String,
}

/// A field of an action with its value in the saved plan and now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub saved: String,
    pub now: String,
}

/// The differences between `saved` and `fresh`, mesh.toml first, then by
/// phase, cluster and object; none when apply may execute `fresh` as the
/// saved plan's approval. Reasons are for display and resourceVersions
/// change with any write to an object, so neither counts; an object's UID
/// does (another object of that name is not the one the plan was made
/// for), and so does whether apply holds the action back ([`Plan::holds`]).
pub fn compare(saved: &Plan, fresh: &Plan) -> Vec<Difference> {
    let mut out = Vec::new();
    if saved.topology_sha256 != fresh.topology_sha256 {
        out.push(Difference::Topology);
    }
    let (mut before, mut after) = (entries(saved), entries(fresh));
    let keys: std::collections::BTreeSet<Key> = before.keys().chain(after.keys()).cloned().collect();
    for key in keys {
        let mut was = before.remove(&key).unwrap_or_default().into_iter();
        let mut now = after.remove(&key).unwrap_or_default().into_iter();
        loop {
            match (was.next(), now.next()) {
                (None, None) => break,
                (Some(was), None) => out.push(Difference::Removed(row(&was, &saved.namespace))),
                (None, Some(now)) => out.push(Difference::Added(row(&now, &fresh.namespace))),
                // Equal actions (the common case, a million at 1,000
                // primaries) are told apart without building their fields.
                (Some(was), Some(now)) if same(&was, &now) => {}
                (Some(was), Some(now)) => {
                    let fields = changed_fields(&fields(&was), &fields(&now));
                    if !fields.is_empty() {
                        out.push(Difference::Changed {
                            action: row(&now, &fresh.namespace),
                            fields,
                        });
                    }
                }
            }
        }
    }
    out
}

/// Where an action acts: the same key in both plans pairs two actions.
type Key<'a> = (Phase, &'a str, String);

struct Entry<'a> {
    action: &'a Action,
    /// Why apply holds it back, if it does.
    hold: Option<Hold>,
}

fn entries(plan: &Plan) -> BTreeMap<Key<'_>, Vec<Entry<'_>>> {
    let holds = plan.holds();
    let mut out: BTreeMap<Key, Vec<Entry>> = BTreeMap::new();
    for action in &plan.actions {
        out.entry((action.phase, &action.cluster, action.object(&plan.namespace)))
            .or_default()
            .push(Entry {
                action,
                hold: holds.of(action),
            });
    }
    out
}

fn same(was: &Entry, now: &Entry) -> bool {
    was.hold.is_some() == now.hold.is_some() && without_versions(&was.action.kind) == without_versions(&now.action.kind)
}

/// The action without the resourceVersions of its preconditions.
fn without_versions(kind: &ActionKind) -> ActionKind {
    let mut kind = kind.clone();
    let clear = |p: &mut Precondition| p.resource_version.clear();
    match &mut kind {
        ActionKind::DeleteRemoteSecret { precondition, .. }
        | ActionKind::DeleteGateway { precondition }
        | ActionKind::DeleteAmbientGateway { precondition }
        | ActionKind::RevokeReaderTokens { precondition, .. } => clear(precondition),
        ActionKind::WriteRemoteSecret { precondition, .. } => precondition.iter_mut().for_each(clear),
        // The expected end is display only, worked out from the observation's
        // time: the plan made again under the lock is made later.
        ActionKind::WriteCaCerts {
            precondition,
            expires_about,
            ..
        } => {
            precondition.iter_mut().for_each(clear);
            *expires_about = jiff::Timestamp::UNIX_EPOCH;
        }
        ActionKind::DeleteIstiodExposure {
            gateway,
            virtual_service,
        } => gateway.iter_mut().chain(virtual_service.iter_mut()).for_each(clear),
        ActionKind::SetNetwork { .. }
        | ActionKind::EnsureReader { .. }
        | ActionKind::EnsureGateway { .. }
        | ActionKind::EnsureIstiodExposure { .. }
        | ActionKind::RestartWorkloads { .. }
        | ActionKind::RestartIstiod { .. }
        | ActionKind::SetGatewayNetwork { .. }
        | ActionKind::SetK8sGatewayNetwork { .. }
        | ActionKind::EnsureAmbientGateway { .. } => {}
    }
    kind
}

/// The action's fields as its JSON has them, without the reason and
/// resourceVersions, and whether apply runs it (`apply`).
fn fields(entry: &Entry) -> BTreeMap<String, String> {
    let mut value = serde_json::to_value(&entry.action.kind).expect("an action serialises");
    strip_resource_versions(&mut value);
    let mut fields: BTreeMap<String, String> = match value {
        Value::Object(map) => map.into_iter().map(|(k, v)| (k, v.to_string())).collect(),
        _ => BTreeMap::new(),
    };
    fields.insert("apply".to_string(), held(entry.hold.clone()));
    fields
}

fn row(entry: &Entry, namespace: &str) -> Row {
    let action = entry.action;
    let name = serde_json::to_value(&action.kind)
        .ok()
        .and_then(|v| v.get("action").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default();
    Row {
        cluster: action.cluster.clone(),
        action: name,
        object: action.object(namespace),
        reason: action.reason.clone(),
    }
}

/// Whether apply runs an action, without the counts a hold's wording
/// carries: two plans that both hold it back agree.
fn held(hold: Option<Hold>) -> String {
    match hold {
        None => "runs it".to_string(),
        Some(Hold::Blocker { code, cluster }) => format!(
            "holds it back (blocker {} concerns {cluster})",
            code.trim_start_matches("meshform::plan::")
        ),
        Some(Hold::Change { .. }) => "holds it back (the plan has blockers)".to_string(),
        Some(Hold::Person { .. }) => "holds it back (not safe unattended)".to_string(),
    }
}

fn strip_resource_versions(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("resource_version");
            map.values_mut().for_each(strip_resource_versions);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_resource_versions),
        _ => {}
    }
}

fn changed_fields(was: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> Vec<Field> {
    let none = "none".to_string();
    let names: std::collections::BTreeSet<&String> = was.keys().chain(now.keys()).collect();
    names
        .into_iter()
        .filter_map(|name| {
            let (saved, now) = (was.get(name).unwrap_or(&none), now.get(name).unwrap_or(&none));
            // Both held back, for other reasons: apply runs it in neither.
            let both_held = name == "apply" && saved.starts_with("holds") && now.starts_with("holds");
            (saved != now && !both_held).then(|| Field {
                name: name.clone(),
                saved: saved.clone(),
                now: now.clone(),
            })
        })
        .collect()
}

impl fmt::Display for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} {}", self.cluster, self.action, self.object)
    }
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::Topology => write!(f, "mesh.toml has changed since the plan was made"),
            Difference::Added(row) => write!(f, "added   {row} ({})", row.reason),
            Difference::Removed(row) => write!(f, "removed {row} (it was planned: {})", row.reason),
            Difference::Changed { action, fields } => {
                write!(f, "changed {action}: ")?;
                let fields: Vec<String> = fields
                    .iter()
                    .map(|c| format!("{} {} → {}", c.name, c.saved, c.now))
                    .collect();
                write!(f, "{}", fields.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Finding, FindingKind, WriteMode};
    use crate::render::scenarios;

    fn lines(saved: &Plan, fresh: &Plan) -> Vec<String> {
        compare(saved, fresh).iter().map(ToString::to_string).collect()
    }

    fn write_secret(plan: &mut Plan) -> &mut ActionKind {
        &mut plan
            .actions
            .iter_mut()
            .find(|a| matches!(a.kind, ActionKind::WriteRemoteSecret { .. }))
            .expect("a remote secret written")
            .kind
    }

    #[test]
    fn the_same_plan_made_again_does_not_differ() {
        for (name, (plan, _)) in scenarios::all() {
            assert_eq!(lines(&plan, &plan.clone()), Vec::<String>::new(), "{name}");
        }
    }

    #[test]
    fn reasons_and_resource_versions_do_not_count_uids_do() {
        let (saved, _) = scenarios::network_change();
        let mut fresh = saved.clone();
        for action in &mut fresh.actions {
            action.reason.push_str(" (planned again)");
            if let ActionKind::DeleteRemoteSecret { precondition, .. } = &mut action.kind {
                precondition.resource_version.push('9');
            }
        }
        assert_eq!(lines(&saved, &fresh), Vec::<String>::new());

        let delete = fresh
            .actions
            .iter_mut()
            .find_map(|a| match &mut a.kind {
                ActionKind::DeleteRemoteSecret { precondition, .. } => Some(precondition),
                _ => None,
            })
            .expect("a network change detaches");
        delete.uid = "another-object".into();
        let [line] = lines(&saved, &fresh).try_into().unwrap();
        assert!(line.starts_with("changed "), "{line}");
        assert!(line.contains("delete_remote_secret Secret istio-system/"), "{line}");
        assert!(line.contains(r#"→ {"uid":"another-object"}"#), "{line}");
    }

    #[test]
    fn added_removed_and_changed_actions_are_named_by_cluster_and_kind() {
        let (saved, _) = scenarios::fresh();
        let mut fresh = saved.clone();
        if let ActionKind::WriteRemoteSecret { server, mode, .. } = write_secret(&mut fresh) {
            *server = "https://203.0.113.99:6443".into();
            *mode = WriteMode::Update;
        }
        let removed = fresh.actions.pop().expect("an action");
        fresh.actions.push(Action {
            cluster: "elsewhere".into(),
            ..removed.clone()
        });
        let differences = compare(&saved, &fresh);
        let changed: Vec<&Difference> = differences
            .iter()
            .filter(|d| matches!(d, Difference::Changed { .. }))
            .collect();
        let [Difference::Changed { fields, .. }] = changed.as_slice() else {
            panic!("{differences:?}")
        };
        let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["mode", "server"]);
        assert_eq!(fields[0].saved, r#""create""#);
        assert_eq!(fields[0].now, r#""update""#);
        assert!(differences.contains(&Difference::Removed(Row {
            cluster: removed.cluster.clone(),
            action: lines_action(&removed),
            object: removed.object(&saved.namespace),
            reason: removed.reason.clone(),
        })));
        assert!(
            differences
                .iter()
                .any(|d| matches!(d, Difference::Added(row) if row.cluster == "elsewhere")),
            "{differences:?}"
        );
        assert_eq!(differences.len(), 3, "{differences:?}");
    }

    fn lines_action(action: &Action) -> String {
        serde_json::to_value(&action.kind).unwrap()["action"]
            .as_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn an_action_now_held_back_by_a_blocker_differs() {
        let (mut saved, _) = scenarios::fresh();
        saved.findings.clear();
        let mut fresh = saved.clone();
        let cluster = fresh.actions[0].cluster.clone();
        fresh.findings.push(Finding {
            kind: FindingKind::Blocker,
            code: "meshform::plan::root_of_trust".into(),
            cluster: None,
            message: "two roots".into(),
            help: None,
            concerns: vec![cluster.clone()],
        });
        let differences = lines(&saved, &fresh);
        assert!(!differences.is_empty());
        let by_blocker = format!("apply runs it → holds it back (blocker root_of_trust concerns {cluster})");
        let by_change = "apply runs it → holds it back (the plan has blockers)";
        assert!(
            differences
                .iter()
                .all(|d| d.ends_with(&by_blocker) || d.ends_with(by_change)),
            "{differences:#?}"
        );
        assert!(differences.iter().any(|d| d.ends_with(&by_blocker)), "{differences:#?}");
        // Held back in both plans, for whatever reason: no difference.
        saved.findings = fresh.findings.clone();
        saved.findings[0].concerns = vec!["another".into()];
        assert_eq!(lines(&saved, &fresh), Vec::<String>::new());
    }

    #[test]
    fn a_changed_topology_comes_first() {
        let (saved, _) = scenarios::converged();
        let mut fresh = saved.clone();
        fresh.topology_sha256 = "changed".into();
        assert_eq!(lines(&saved, &fresh), ["mesh.toml has changed since the plan was made"]);
    }
}
