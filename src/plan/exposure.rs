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
                .map(|r| format!(
                    "remote {} is on another network and reaches this cluster's istiod only through its east-west gateway",
                    r.name
                ));
            // A remote's install keeps reaching istiod where it was installed
            // to (its pilot address and injection webhook), whatever mesh.toml
            // now says: meshform's exposure stays while one still goes
            // through this primary's gateway (issue 29).
            let ours = [&facts.istiod_gateway, &facts.istiod_virtual_service]
                .into_iter()
                .flatten()
                .any(|o| o.managed);
            // Asked only of meshform's own exposure: every primary asking every cluster showed at 1,000.
            let user = ours.then(|| self.pilot_users(facts).next()).flatten().map(|(remote, address)| {
                format!("remote {remote}'s Istio install still reaches istiod at {address}, this cluster's east-west gateway")
            });
            match remote.or(user) {
                Some(reason) => self.expose(primary, facts, &reason),
                // A remote that could not be read may still go through it.
                None if ours && self.unread_remote() => {}
                None => self.unexpose(primary, facts),
            }
        }
    }

    /// Reachable clusters whose remote install (no istiod of its own) sends
    /// sidecars and the injection webhook to an address of this primary's
    /// east-west gateway, with that address.
    pub(super) fn pilot_users<'s>(
        &'s self,
        primary: &'s ClusterFacts,
    ) -> impl Iterator<Item = (&'s str, &'s str)> + 's {
        let gateway = primary
            .east_west
            .as_ref()
            .map(|e| e.addresses.as_slice())
            .unwrap_or_default();
        self.reachable().flat_map(move |(cluster, facts)| {
            facts
                .installs
                .values()
                .filter(|i| i.istiod.is_none())
                .filter_map(|i| i.remote_pilot_address.as_deref())
                .filter(move |address| gateway.iter().any(|g| g == address))
                .map(move |address| (cluster.name.as_str(), address))
        })
    }

    /// A remote of the topology could not be read (`--skip-unreachable`).
    fn unread_remote(&self) -> bool {
        self.clusters
            .iter()
            .any(|c| c.role == Role::Remote && self.facts(&c.name).is_none())
    }

    fn expose(&mut self, primary: &Cluster, facts: &ClusterFacts, why: &str) {
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
                    "{kind} {}/{name} exists and is not managed by meshform; it is used as it is to expose istiod ({why})",
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
            why.to_string()
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
        let reason =
            "no remote on another network has its control plane here, and no remote's install reaches istiod through this gateway any more"
                .to_string();
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
