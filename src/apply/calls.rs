//! The thin kube layer apply writes through: server-side apply, create,
//! read-live and delete with preconditions, each honouring `--dry-run` and
//! returning the redacted diff when asked, and API errors in the report's
//! words. Nothing here decides what to write.

use super::*;

impl Run<'_> {
    pub(super) fn apply_params(&self, force: bool) -> PatchParams {
        let mut params = PatchParams::apply(FIELD_MANAGER);
        params.force = force;
        params.dry_run = self.settings.dry_run;
        params
    }

    pub(super) fn delete_params(&self, precondition: &Precondition) -> DeleteParams {
        DeleteParams {
            dry_run: self.settings.dry_run,
            ..preconditions(precondition)
        }
    }

    /// Server-side apply of one object, returning the diff when asked for.
    pub(super) async fn ssa<K>(
        &self,
        cluster: &str,
        api: &Api<K>,
        name: &str,
        object: &K,
        force: bool,
    ) -> Result<Option<String>, String>
    where
        K: kube::Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    {
        let before = self.live(cluster, api, name).await?;
        let after = api
            .patch(name, &self.apply_params(force), &Patch::Apply(object))
            .await
            .map_err(|e| describe(cluster, &e))?;
        Ok(self
            .wants_diff()
            .then(|| diff::unified(before.as_ref(), serde_json::to_value(&after).ok().as_ref())))
    }

    /// Takes over a Secret someone else made (a remote secret, `cacerts`):
    /// first removes `copies`, the annotations in which tools keep a whole
    /// copy of what they applied, then applies meshform's Secret, forced,
    /// over what is left.
    ///
    /// Server-side apply cannot do the first part: it removes only fields
    /// its own manager applied before, and the annotation belongs to
    /// `kubectl-client-side-apply` (an Update entry in managedFields), so it
    /// outlives an apply that omits it. A JSON merge patch setting it to null
    /// removes it whoever owns it; the resourceVersion in the patch makes it
    /// conditional on the Secret being as observed, and the apply then
    /// carries the resourceVersion the patch left. Removed first, so that a
    /// failed apply leaves an unmanaged secret without the copy, which the
    /// next plan adopts again, rather than meshform's secret with the copy.
    pub(super) async fn adopt(
        &self,
        cluster: &str,
        api: &Api<Secret>,
        name: &str,
        mut secret: Secret,
        copies: &[String],
    ) -> Result<Option<String>, String> {
        let before = self.live(cluster, api, name).await?;
        if !copies.is_empty() {
            let annotations: serde_json::Map<String, Value> = copies.iter().map(|a| (a.clone(), Value::Null)).collect();
            let patch = serde_json::json!({"metadata": {
                "resourceVersion": secret.metadata.resource_version,
                "annotations": annotations,
            }});
            let params = PatchParams {
                dry_run: self.settings.dry_run,
                field_manager: Some(FIELD_MANAGER.to_string()),
                ..PatchParams::default()
            };
            let patched = api
                .patch(name, &params, &Patch::Merge(&patch))
                .await
                .map_err(|e| describe(cluster, &e))?;
            secret.metadata.resource_version = patched.metadata.resource_version;
        }
        let mut after = api
            .patch(name, &self.apply_params(true), &Patch::Apply(&secret))
            .await
            .map_err(|e| describe(cluster, &e))?;
        // A dry run persisted no removal for the apply to start from: show
        // the result both requests make together.
        if self.settings.dry_run
            && let Some(annotations) = after.metadata.annotations.as_mut()
        {
            annotations.retain(|key, _| !copies.contains(key));
        }
        Ok(self
            .wants_diff()
            .then(|| diff::unified(before.as_ref(), serde_json::to_value(&after).ok().as_ref())))
    }

    /// A JSON merge patch: only the fields `patch` names change, the rest
    /// is left unread and unsent. A `metadata.resourceVersion` in it makes
    /// the API server refuse it (409) when the object changed since.
    pub(super) async fn merge<K>(
        &self,
        cluster: &str,
        api: &Api<K>,
        name: &str,
        patch: &Value,
    ) -> Result<Option<String>, String>
    where
        K: kube::Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    {
        let before = self.live(cluster, api, name).await?;
        let params = PatchParams {
            dry_run: self.settings.dry_run,
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        let after = api
            .patch(name, &params, &Patch::Merge(patch))
            .await
            .map_err(|e| describe(cluster, &e))?;
        Ok(self
            .wants_diff()
            .then(|| diff::unified(before.as_ref(), serde_json::to_value(&after).ok().as_ref())))
    }

    /// Creates `object` unless something of its name exists: one request
    /// where a read and then a write would take two. When the API server
    /// answers that the name is taken, or answers so that the create may or
    /// may not have committed (a 5xx, a timeout, a connection lost: the
    /// transport sends no write again on those), what holds the name is
    /// read back and returned: the caller judges whose it is, and whether it
    /// is the object just sent.
    pub(super) async fn create<K>(&self, cluster: &str, api: &Api<K>, object: &K) -> Result<Created<K>, String>
    where
        K: kube::Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    {
        let params = PostParams {
            dry_run: self.settings.dry_run,
            field_manager: Some(FIELD_MANAGER.to_string()),
        };
        let name = object.meta().name.as_deref().unwrap_or_default();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let error = match api.create(&params, object).await {
                Ok(after) => {
                    return Ok(Created::New(
                        self.wants_diff()
                            .then(|| diff::unified(None, serde_json::to_value(&after).ok().as_ref())),
                    ));
                }
                Err(error) => error,
            };
            let taken = matches!(&error, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists");
            if !taken && !outcome_unknown(&error) {
                return Err(describe(cluster, &error));
            }
            tracing::debug!(%cluster, %name, taken, "create answered without the object; reading it back");
            match api.get_opt(name).await.map_err(|e| describe(cluster, &e))? {
                Some(existing) => return Ok(Created::Existing(existing)),
                // Not there after an answer that left it open: the name makes
                // another create safe, as it either makes the object or
                // meets the one an earlier attempt committed.
                None if !taken && attempts < CREATE_ATTEMPTS => {}
                None => return Err(describe(cluster, &error)),
            }
        }
    }

    /// The object as it is now, for the diff; nothing is read without one.
    pub(super) async fn live<K>(&self, cluster: &str, api: &Api<K>, name: &str) -> Result<Before, String>
    where
        K: kube::Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    {
        if !self.wants_diff() {
            return Ok(None);
        }
        Ok(to_value(&api.get_opt(name).await.map_err(|e| describe(cluster, &e))?))
    }

    pub(super) async fn delete<K>(
        &self,
        cluster: &str,
        api: &Api<K>,
        name: &str,
        precondition: &Precondition,
    ) -> Result<Option<String>, String>
    where
        K: kube::Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    {
        let before = self.live(cluster, api, name).await?;
        match api.delete(name, &self.delete_params(precondition)).await {
            Ok(_) => {}
            // Already gone is what a delete wants.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => return Err(describe(cluster, &e)),
        }
        Ok(self.wants_diff().then(|| diff::unified(before.as_ref(), None)))
    }

    pub(super) fn wants_diff(&self) -> bool {
        self.settings.diff || self.settings.dry_run
    }
}

/// How often a create whose outcome the API server left open is sent.
const CREATE_ATTEMPTS: u32 = 3;

/// What a create found.
pub(super) enum Created<K> {
    /// Made now; its diff when asked for.
    New(Option<String>),
    /// Something of the name was there: what the API server holds. It may
    /// be the object this create sent, committed by an attempt whose answer
    /// was lost or was a timeout.
    Existing(K),
}

/// Whether a failed write may still have been done: the API server answered
/// 5xx (a 504 of kube-apiserver's timeout filter leaves the handler running,
/// k8s.io/apiserver/pkg/server/filters/timeout.go), or no answer came.
fn outcome_unknown(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// What an API call left behind, for the diff.
type Before = Option<Value>;

pub(super) fn to_value<T: Serialize>(object: &Option<T>) -> Before {
    object.as_ref().and_then(|o| serde_json::to_value(o).ok())
}

pub(super) fn preconditions(p: &Precondition) -> DeleteParams {
    DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(p.uid.clone()),
            resource_version: Some(p.resource_version.clone()),
        }),
        ..DeleteParams::default()
    }
}

/// A failed API call in the report's words. kube's text of an API error
/// ends in a debug dump of the whole Status; two cases get words of their own:
/// a server-side apply conflict names the fields and the field manager that
/// owns them, with what to do (meshform never forces a field another manager
/// applied), and a timeout says which cluster did not answer, and which flag
/// sets how long meshform waits.
pub(super) fn describe(cluster: &str, error: &kube::Error) -> String {
    if let kube::Error::Api(status) = error {
        let conflicts: Vec<String> = status
            .details
            .iter()
            .flat_map(|d| &d.causes)
            .filter(|c| c.reason == "FieldManagerConflict")
            .map(|c| format!("{} ({})", c.field, c.message))
            .collect();
        if status.code == 409 && !conflicts.is_empty() {
            return format!(
                "another field manager owns what meshform would write: {}; meshform does not take fields over \
                 from other managers: have that manager stop setting the field (or remove it there), then apply again",
                conflicts.join(", ")
            );
        }
    }
    if is_timeout(error) {
        return format!(
            "timed out: the API server of {cluster} did not answer within --timeout ({})",
            error_chain(error)
        );
    }
    error_chain(error)
}

pub(super) fn join_diffs(diffs: Vec<Option<String>>) -> Option<String> {
    let parts: Vec<String> = diffs.into_iter().flatten().filter(|d| !d.is_empty()).collect();
    (!parts.is_empty()).then(|| parts.join("\n"))
}

#[cfg(test)]
mod tests {
    use kube::core::Status;
    use kube::core::response::{StatusCause, StatusDetails};

    use super::*;

    // Regression: a 409 from server-side apply read "ApiError: Apply failed with 1 conflict: ... (Status { ... })",
    // a debug dump, with no word on what to do.
    #[test]
    fn a_field_manager_conflict_names_the_field_the_manager_and_the_fix() {
        let status = Status {
            code: 409,
            reason: "Conflict".into(),
            message: "Apply failed with 1 conflict: conflict with \"helm\": .metadata.labels.topology.istio.io/network"
                .into(),
            details: Some(StatusDetails {
                name: String::new(),
                group: String::new(),
                kind: String::new(),
                uid: String::new(),
                causes: vec![StatusCause {
                    reason: "FieldManagerConflict".into(),
                    message: "conflict with \"helm\"".into(),
                    field: ".metadata.labels.topology.istio.io/network".into(),
                }],
                retry_after_seconds: 0,
            }),
            ..Status::default()
        };
        let text = describe("west", &kube::Error::Api(Box::new(status)));
        assert_eq!(
            text,
            "another field manager owns what meshform would write: .metadata.labels.topology.istio.io/network \
             (conflict with \"helm\"); meshform does not take fields over from other managers: have that manager \
             stop setting the field (or remove it there), then apply again"
        );
        assert!(!text.contains("Status {"), "{text}");
    }

    // Regression: a request slower than --timeout failed with "ServiceError: client error (SendRequest):
    // connection error: timed out", which did not say which setting had run out.
    #[test]
    fn a_timeout_says_so_and_names_the_flag() {
        let timed_out = std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out");
        let text = describe("north", &kube::Error::Service(Box::new(timed_out)));
        assert_eq!(
            text,
            "timed out: the API server of north did not answer within --timeout (ServiceError: timed out)"
        );
    }

    #[test]
    fn other_errors_keep_their_chain() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        assert_eq!(
            describe("north", &kube::Error::Service(Box::new(refused))),
            "ServiceError: connection refused"
        );
    }
}
