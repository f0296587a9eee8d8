//! The workload restart a network change needs: every Deployment,
//! StatefulSet and DaemonSet of the injected namespaces gets a new pod
//! template annotation, as `kubectl rollout restart` does; then the record
//! of the restart owed on the mesh namespace goes.

use super::*;

impl Run<'_> {
    /// What `kubectl rollout restart` sends: a merge patch of the pod
    /// template's `restartedAt`, one stamp for the whole run.
    pub(super) fn rollout_restart(&self) -> (Value, PatchParams) {
        let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": self.restart_stamp
        }}}}});
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            dry_run: self.settings.dry_run,
            ..PatchParams::default()
        };
        (patch, params)
    }

    /// `kubectl rollout restart` for every injected workload: a new
    /// pod-template annotation makes the controllers replace the pods.
    pub(super) async fn restart(&self, cluster: &str, client: kube::Client) -> Result<Option<String>, String> {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let mut injected = BTreeSet::new();
        for selector in ["istio-injection=enabled", "istio.io/rev"] {
            let list = namespaces
                .list(&ListParams::default().labels(selector))
                .await
                .map_err(|e| describe(cluster, &e))?;
            for ns in list.items {
                if let Some(name) = ns.metadata.name {
                    injected.insert(name);
                }
            }
        }
        let (patch, params) = self.rollout_restart();
        let mut restarted = Vec::new();
        for ns in &injected {
            restarted.extend(restart_all::<Deployment>(cluster, &client, ns, &patch, &params).await?);
            restarted.extend(restart_all::<StatefulSet>(cluster, &client, ns, &patch, &params).await?);
            restarted.extend(restart_all::<DaemonSet>(cluster, &client, ns, &patch, &params).await?);
        }
        if !self.settings.dry_run {
            self.restart_done(cluster, &namespaces).await?;
        }
        Ok(Some(if restarted.is_empty() {
            "no injected workloads to restart".to_string()
        } else {
            format!("restarted {}", restarted.join(", "))
        }))
    }

    /// Takes off the record of the restart owed, now that it ran: only
    /// after it, so a run that stops before or during the restart leaves it
    /// for the next plan. A merge patch of that one annotation, so the
    /// label and the control-plane annotation stay as they are; absent, it
    /// changes nothing.
    async fn restart_done(&self, cluster: &str, namespaces: &Api<Namespace>) -> Result<(), String> {
        let patch = serde_json::json!({"metadata": {"annotations": {objects::RESTART_OWED_ANNOTATION: null}}});
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        namespaces
            .patch(self.ns(), &params, &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|e| {
                format!(
                    "the workloads were restarted, but annotation {} on Namespace {} could not be taken off, so the next plan asks for the restart again: {}",
                    objects::RESTART_OWED_ANNOTATION,
                    self.ns(),
                    describe(cluster, &e)
                )
            })
    }
}

pub(super) async fn restart_all<K>(
    cluster: &str,
    client: &kube::Client,
    ns: &str,
    patch: &Value,
    params: &PatchParams,
) -> Result<Vec<String>, String>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let mut names = Vec::new();
    for object in api
        .list(&ListParams::default())
        .await
        .map_err(|e| describe(cluster, &e))?
        .items
    {
        let name = object.meta().name.clone().unwrap_or_default();
        api.patch(&name, params, &Patch::Merge(patch))
            .await
            .map_err(|e| describe(cluster, &e))?;
        names.push(format!("{}/{ns}/{name}", K::kind(&())));
    }
    Ok(names)
}
