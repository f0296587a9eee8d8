//! istiod exposed to remotes on other networks: a remote reaches its control
//! plane's istiod only through that primary's east-west gateway (Istio's
//! primary-remote on different networks guide), which routes istiod's ports
//! only with the `istiod-gateway` Gateway and `istiod-vs` VirtualService of
//! `samples/multicluster/expose-istiod.yaml`. meshform writes them while a
//! remote needs them and removes its own after; objects of those names it
//! does not own are used as they are.

use super::owned::Owned;
use super::{Planner, hashes};
use crate::objects::{self, ISTIOD_GATEWAY, ISTIOD_VIRTUAL_SERVICE};
use crate::observe::model::{ClusterFacts, ObjectFacts};
use crate::plan::{ActionKind, FindingKind, Phase, Precondition};
use crate::topology::{Cluster, Role};

impl<'a> Planner<'a> {
    pub(super) fn istiod_exposure(&mut self) {
        let primaries: Vec<_> = self.reachable().filter(|(c, _)| c.role == Role::Primary).collect();
        for (primary, facts) in primaries {
            let remote = self
                .clusters
                .iter()
                .find(|r| {
                    r.role == Role::Remote
                        && r.control_plane.as_deref() == Some(primary.name.as_str())
                        && r.network != primary.network
                })
                .map(|r| r.name.clone());
            match remote {
                Some(remote) => self.expose(primary, facts, &remote),
                None => self.unexpose(primary, facts),
            }
        }
    }

    fn expose(&mut self, primary: &Cluster, facts: &ClusterFacts, remote: &str) {
        let revision = istiod_revision(facts);
        let gateway_spec = objects::istiod_gateway_spec();
        let route_spec = objects::istiod_virtual_service_spec(self.ns(), revision.as_deref());
        let hash = hashes::istiod_exposure_hash(revision.as_deref());
        let judged = [
            (&facts.istiod_gateway, "Gateway", ISTIOD_GATEWAY, &gateway_spec),
            (
                &facts.istiod_virtual_service,
                "VirtualService",
                ISTIOD_VIRTUAL_SERVICE,
                &route_spec,
            ),
        ]
        .map(|(object, kind, name, spec)| {
            let owned = Owned::judge(object.as_ref(), &hash, &objects::content_sha256(spec));
            (owned, kind, name)
        });
        if let Some((_, kind, name)) = judged.iter().find(|(o, ..)| matches!(o, Owned::Unmanaged { .. })) {
            self.finding(
                FindingKind::Warning,
                "istiod_exposure_unmanaged",
                &primary.name,
                format!(
                    "{kind} {}/{name} exists and is not managed by meshform; it is used as it is to expose istiod to {remote}",
                    self.ns()
                ),
                format!("delete it to let meshform manage it (kubectl delete -n {} {kind} {name})", self.ns()),
            );
            return;
        }
        if judged.iter().all(|(o, ..)| *o == Owned::Current) {
            return;
        }
        let edited = judged.iter().any(|(o, ..)| *o == Owned::Edited);
        let present = judged.iter().all(|(o, ..)| *o != Owned::Absent);
        let update = facts.istiod_gateway.is_some() || facts.istiod_virtual_service.is_some();
        let owners: Vec<String> = [&facts.istiod_gateway, &facts.istiod_virtual_service]
            .into_iter()
            .flatten()
            .flat_map(|o| o.content_owners.iter().cloned())
            .collect();
        let what = format!(
            "the spec of Gateway {ns}/{ISTIOD_GATEWAY} or VirtualService {ns}/{ISTIOD_VIRTUAL_SERVICE}",
            ns = self.ns()
        );
        let force = update && self.conflict(primary, &what, &owners);
        let reason = if edited {
            "its spec was changed in the cluster; meshform writes it back".to_string()
        } else if update && present {
            "it is not what meshform writes".to_string()
        } else {
            format!(
                "remote {remote} is on another network and reaches this cluster's istiod only through its east-west gateway"
            )
        };
        let kind = ActionKind::EnsureIstiodExposure {
            revision,
            spec_hash: hash,
            update,
            force,
        };
        self.push(Phase::Network, &primary.name, kind, reason);
    }

    fn unexpose(&mut self, primary: &Cluster, facts: &ClusterFacts) {
        let ours = |o: &Option<ObjectFacts>| {
            o.as_ref().filter(|o| o.managed).map(|o| Precondition {
                uid: o.uid.clone(),
                resource_version: o.resource_version.clone(),
            })
        };
        let (gateway, virtual_service) = (ours(&facts.istiod_gateway), ours(&facts.istiod_virtual_service));
        if gateway.is_none() && virtual_service.is_none() {
            return;
        }
        let kind = ActionKind::DeleteIstiodExposure {
            gateway,
            virtual_service,
        };
        let reason = "no remote on another network has its control plane here any more".to_string();
        self.push(Phase::Network, &primary.name, kind, reason);
    }
}

/// The revision whose istiod the route goes to: the install's, when the
/// cluster has one install and it has a revision; else the default `istiod`.
fn istiod_revision(facts: &ClusterFacts) -> Option<String> {
    let mut with_istiod = facts.installs.iter().filter(|(_, i)| i.istiod.is_some());
    match (with_istiod.next(), with_istiod.next()) {
        (Some((revision, _)), None) if revision != "default" => Some(revision.clone()),
        _ => None,
    }
}
