//! Unified diffs of the objects apply writes, with secret data redacted.
//!
//! Made here rather than in render, where the other views live: the objects
//! hold tokens, and making the diff beside the write keeps them inside
//! apply. Events carry only this redacted text.
//!
//! Only the fields a person would compare are shown: server-managed
//! metadata (managedFields, resourceVersion, uid, timestamps) is dropped.
//! Secret `data`/`stringData` values never appear: each becomes a marker
//! that says whether it changed. Nor do a Secret's annotations, except those
//! known to hold no secret: tools keep whole copies of the objects they
//! apply in annotations (`kubectl apply` in
//! `kubectl.kubernetes.io/last-applied-configuration`, kapp in
//! `kapp.k14s.io/original`, Rancher in `objectset.rio.cattle.io/applied`),
//! and of a Secret such a copy is its data in plain sight. An allowlist, not
//! a list of those tools: the next tool's copy is hidden too.

use serde_json::Value;

use crate::objects;

const SENSITIVE: &str = "(sensitive value)";
const SENSITIVE_CHANGED: &str = "(sensitive value changed)";

/// The annotations of a Secret whose values the diff shows: meshform's own,
/// Istio's cluster id and the service-account token controller's, none of
/// which holds secret data.
const SHOWN_SECRET_ANNOTATIONS: [&str; 6] = [
    objects::SPEC_HASH_ANNOTATION,
    objects::PEER_IDENTITY_ANNOTATION,
    objects::CLUSTER_ANNOTATION,
    objects::HOLDER_ANNOTATION,
    objects::HOLDER_IDENTITY_ANNOTATION,
    "kubernetes.io/service-account.name",
];

fn strip(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        for key in [
            "managedFields",
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "selfLink",
        ] {
            meta.remove(key);
        }
    }
    object.as_object_mut().map(|o| o.remove("status"));
    object
}

/// Replaces secret values in `object` by markers. On the new side (`other`
/// is the old object), a value that differs says so; the old side only ever
/// says that a value is there.
fn redact(object: &mut Value, other: Option<&Value>, new_side: bool) {
    let is_secret = object.get("kind").and_then(Value::as_str) == Some("Secret")
        || other.and_then(|o| o.get("kind")).and_then(Value::as_str) == Some("Secret");
    if !is_secret {
        return;
    }
    for path in ["/data", "/stringData", "/metadata/annotations"] {
        let Some(values) = object.pointer_mut(path).and_then(Value::as_object_mut) else {
            continue;
        };
        for (key, value) in values.iter_mut() {
            if path == "/metadata/annotations" && SHOWN_SECRET_ANNOTATIONS.contains(&key.as_str()) {
                continue;
            }
            let same = other.and_then(|o| o.pointer(path)).and_then(|d| d.get(key)) == Some(&*value);
            let marker = if same || other.is_none() || !new_side {
                SENSITIVE
            } else {
                SENSITIVE_CHANGED
            };
            *value = Value::String(marker.to_string());
        }
    }
}

fn lines(object: Option<&Value>) -> String {
    object
        .map(|o| serde_json::to_string_pretty(o).unwrap_or_default() + "\n")
        .unwrap_or_default()
}

/// A unified diff from `before` to `after` (either may be absent: a create
/// or a delete). Empty when nothing a person would compare changed.
pub fn unified(before: Option<&Value>, after: Option<&Value>) -> String {
    let mut before = before.map(strip);
    let mut after = after.map(strip);
    // Redact each side against the other's *original* values, then compare.
    let (before_orig, after_orig) = (before.clone(), after.clone());
    if let Some(b) = before.as_mut() {
        redact(b, after_orig.as_ref(), false);
    }
    if let Some(a) = after.as_mut() {
        redact(a, before_orig.as_ref(), true);
    }
    let (old, new) = (lines(before.as_ref()), lines(after.as_ref()));
    if old == new {
        return String::new();
    }
    let name = after.as_ref().or(before.as_ref()).map(describe).unwrap_or_default();
    similar::TextDiff::from_lines(&old, &new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("live {name}"), &format!("planned {name}"))
        .to_string()
}

fn describe(object: &Value) -> String {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("object");
    let meta = object.get("metadata");
    let name = meta.and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or("?");
    match meta.and_then(|m| m.get("namespace")).and_then(Value::as_str) {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn secret(value: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "istio-system",
               "resourceVersion": "7", "managedFields": [{"manager": "meshform"}]},
               "data": {"b": value}})
    }

    #[test]
    fn secret_values_never_appear_only_whether_they_changed() {
        let diff = unified(Some(&secret("T0xEVE9LRU4=")), Some(&secret("TkVXVE9LRU4=")));
        assert!(
            !diff.contains("T0xEVE9LRU4=") && !diff.contains("TkVXVE9LRU4="),
            "{diff}"
        );
        assert!(diff.contains(SENSITIVE_CHANGED), "{diff}");
        assert!(diff.contains("--- live Secret istio-system/s"), "{diff}");
        assert!(
            !diff.contains("managedFields") && !diff.contains("resourceVersion"),
            "{diff}"
        );
    }

    #[test]
    fn unchanged_objects_have_no_diff_and_creates_show_every_line() {
        assert_eq!(unified(Some(&secret("QQ==")), Some(&secret("QQ=="))), "");
        let created = unified(None, Some(&secret("QQ==")));
        assert!(created.contains(&format!("+    \"b\": \"{SENSITIVE}\"")), "{created}");
        assert!(!created.contains("QQ=="), "{created}");
        let deleted = unified(Some(&secret("QQ==")), None);
        assert!(
            deleted
                .lines()
                .filter(|l| l.starts_with('-') && !l.starts_with("---"))
                .count()
                > 3,
            "{deleted}"
        );
        assert!(!deleted.contains("QQ=="), "{deleted}");
    }

    // Regression (issue 29): adopting a remote secret made by `istioctl create-remote-secret | kubectl apply`
    // printed its never-expiring token, kept by kubectl in the last-applied-configuration annotation.
    #[test]
    fn a_secrets_annotations_are_hidden_unless_known_to_hold_no_secret() {
        let copy = r#"{"kind":"Secret","stringData":{"b":"users:\n- user:\n    token: eyJTOKENCOPY"}}"#;
        let mut before = secret("T0xEVE9LRU4=");
        before["metadata"]["annotations"] = json!({
            "kubectl.kubernetes.io/last-applied-configuration": copy,
            "kapp.k14s.io/original": copy,
            "networking.istio.io/cluster": "b",
        });
        let mut after = secret("TkVXVE9LRU4=");
        after["metadata"]["annotations"] = json!({
            "meshform.io/spec-hash": "h1",
            "networking.istio.io/cluster": "b",
        });
        let diff = unified(Some(&before), Some(&after));
        assert!(!diff.contains("TOKENCOPY"), "{diff}");
        assert!(
            diff.contains(&format!(
                "-      \"kubectl.kubernetes.io/last-applied-configuration\": \"{SENSITIVE}\""
            )),
            "{diff}"
        );
        assert!(
            diff.contains(&format!("-      \"kapp.k14s.io/original\": \"{SENSITIVE}\"")),
            "{diff}"
        );
        assert!(diff.contains("+      \"meshform.io/spec-hash\": \"h1\""), "{diff}");
        assert!(diff.contains("       \"networking.istio.io/cluster\": \"b\""), "{diff}");
        // The same annotation on both sides is no change; a changed one says so.
        let mut kept = after.clone();
        kept["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = json!(copy);
        let mut changed = kept.clone();
        changed["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = json!("{}");
        assert_eq!(unified(Some(&kept), Some(&kept)), "");
        let diff = unified(Some(&kept), Some(&changed));
        assert!(
            diff.contains(SENSITIVE_CHANGED) && !diff.contains("TOKENCOPY"),
            "{diff}"
        );
    }

    #[test]
    fn other_kinds_show_values() {
        let before = json!({"kind": "Namespace", "metadata": {"name": "istio-system", "labels": {"topology.istio.io/network": "a"}}});
        let after = json!({"kind": "Namespace", "metadata": {"name": "istio-system", "labels": {"topology.istio.io/network": "b"}}});
        let diff = unified(Some(&before), Some(&after));
        assert!(diff.contains("-      \"topology.istio.io/network\": \"a\""), "{diff}");
        assert!(diff.contains("+      \"topology.istio.io/network\": \"b\""), "{diff}");
    }
}
