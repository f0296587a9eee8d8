//! A root rotation (`previous_root_cert` set beside the new `root_cert`), in
//! three stages, each planned only once the one before it is verified in
//! every cluster, as `check` shows it:
//!
//! 1. trust both roots: every primary's `cacerts` gets `root-cert.pem` with
//!    both roots (its intermediate, of the previous root, kept), and istiod
//!    restarts; verified when every cluster's `istio-ca-root-cert` holds both;
//! 2. sign with the new root: every intermediate is issued anew by the new
//!    root, `root-cert.pem` unchanged; verified by the `cacerts` themselves;
//! 3. drop the previous root: `root-cert.pem` the new root alone, istiod
//!    restarts; verified when every `istio-ca-root-cert` holds the new root alone.
//!
//! The stage is derived from what is observed, never recorded: which roots
//! each `cacerts` holds, which root signed its intermediate, and what each
//! cluster's `istio-ca-root-cert` shows. Nothing is planned while a cluster
//! of the mesh could not be read: its roots are unknown, so no stage can be
//! verified there.
//!
//! Restarts, from Istio's source: istiod reads `cacerts` when it starts and
//! afterwards takes in a changed `root-cert.pem` only with
//! `ISTIO_MULTIROOT_MESH` (pilot/pkg/bootstrap/istio_ca.go, `handleEvent`),
//! so stages 1 and 3 restart it; a new intermediate under the same
//! `root-cert.pem` bytes it reloads itself (stage 2). It publishes
//! `root-cert.pem` as every namespace's `istio-ca-root-cert`, its remotes'
//! included (pilot/pkg/bootstrap/certcontroller.go,
//! `updateRootCertAndGenKeyCert`; pilot/pkg/serviceregistry/kube/controller/
//! namespacecontroller.go, started for each remote by multicluster.go).

use super::trust::short;
use super::*;
use crate::observe::model::CertFacts;
use crate::topology::ManagedTrust;

/// Where one primary's `cacerts` stands in the rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Held {
    /// The previous root alone, its intermediate of that root.
    Before,
    /// Both roots, the intermediate still of the previous root (stage 1 done).
    Trusting,
    /// Both roots, the intermediate of the new root (stage 2 done).
    Signing,
    /// The new root alone, its intermediate (stage 3 done).
    Done,
}

impl Held {
    /// The state a primary is in once `stage` is done there.
    fn after(stage: RotationStage) -> Held {
        match stage {
            RotationStage::TrustBoth => Held::Trusting,
            RotationStage::SignWithNew => Held::Signing,
            RotationStage::DropPrevious => Held::Done,
        }
    }
}

impl<'a> Planner<'a> {
    pub(super) fn rotation(&mut self, managed: &ManagedTrust, root: &CertFacts, previous: &CertFacts) {
        let (new, old) = (root.sha256.as_str(), previous.sha256.as_str());
        let heading = format!("root rotation {} → {}", short(old), short(new));
        if new == old {
            self.rotation_finding(
                FindingKind::Blocker,
                "trust_rotation_blocked",
                format!("{heading}: `previous_root_cert` and `root_cert` are the same certificate"),
                "set `root_cert` and `root_key` to the new root, or remove `previous_root_cert`",
                self.clusters.iter().map(|c| c.name.clone()).collect(),
            );
            return;
        }
        let both: BTreeSet<&str> = BTreeSet::from([old, new]);
        let alone: BTreeSet<&str> = BTreeSet::from([new]);
        let primaries: Vec<(&Cluster, &ClusterFacts)> =
            self.reachable().filter(|(c, _)| c.role == Role::Primary).collect();

        // Each primary's state; one that is none of them stops the rotation.
        let mut held: Vec<(&Cluster, &ClusterFacts, Held)> = Vec::new();
        let mut strays = Vec::new();
        for &(cluster, facts) in &primaries {
            match held_by(facts, old, new, &both, &alone) {
                Ok(state) => held.push((cluster, facts, state)),
                Err(why) => strays.push((cluster.name.clone(), why)),
            }
        }
        for (cluster, why) in &strays {
            self.finding(
                FindingKind::Blocker,
                "trust_rotation_blocked",
                cluster,
                format!(
                    "{heading}: Secret {}/{} in {cluster} {why}, so the rotation cannot tell its stage there",
                    self.ns(),
                    objects::CA_CERTS_SECRET
                ),
                format!(
                    "a rotation moves primaries whose cacerts meshform wrote from the previous root: apply once without `previous_root_cert` (the previous root as `root_cert`) to bring {cluster} onto it, then declare the rotation again"
                ),
            );
        }
        if !strays.is_empty() {
            return;
        }
        let states: BTreeSet<Held> = held.iter().map(|(_, _, s)| *s).collect();
        // The latest stage any primary has reached is the one under way;
        // the earlier stages were verified before it was planned.
        let stage = if states.contains(&Held::Done) {
            RotationStage::DropPrevious
        } else if states.contains(&Held::Signing) {
            RotationStage::SignWithNew
        } else {
            RotationStage::TrustBoth
        };
        // A primary two stages behind was moved back by someone.
        let behind: Vec<String> = held
            .iter()
            .filter(|(_, _, s)| match stage {
                RotationStage::TrustBoth => false,
                RotationStage::SignWithNew => *s == Held::Before,
                RotationStage::DropPrevious => matches!(s, Held::Before | Held::Trusting),
            })
            .map(|(c, _, _)| c.name.clone())
            .collect();
        if !behind.is_empty() {
            self.rotation_finding(
                FindingKind::Blocker,
                "trust_rotation_blocked",
                format!(
                    "{heading}: a primary is at {} while {} is not: their cacerts were changed outside the rotation",
                    stage.label(),
                    behind.join(", ")
                ),
                "restore their cacerts from the rotation's previous stage, or delete them and let meshform issue them again",
                behind,
            );
            return;
        }
        let unread: Vec<String> = self
            .clusters
            .iter()
            .filter(|c| self.facts(&c.name).is_none())
            .map(|c| c.name.clone())
            .collect();
        let published = |facts: &ClusterFacts, want: &BTreeSet<&str>| {
            facts
                .root_certs
                .as_ref()
                .is_some_and(|r| r.iter().map(String::as_str).collect::<BTreeSet<_>>() == *want)
        };
        let want_for = |stage: RotationStage| match stage {
            RotationStage::DropPrevious => &alone,
            _ => &both,
        };
        // What every cluster, remotes included, publishes (istio-ca-root-cert).
        let reachable: Vec<(&Cluster, &ClusterFacts)> = self.reachable().collect();
        let lagging = |stage: RotationStage| -> Vec<String> {
            reachable
                .iter()
                .filter(|(_, f)| !published(f, want_for(stage)))
                .map(|(c, _)| c.name.clone())
                .collect()
        };
        let written = |stage: RotationStage| held.iter().all(|(_, _, s)| *s == Held::after(stage));
        let mut stage = stage;
        if written(stage) && lagging(stage).is_empty() && unread.is_empty() {
            let Some(next) = stage.next() else {
                self.rotation_finding(
                    FindingKind::Warning,
                    "trust_rotation",
                    format!("{heading}: complete, every cluster trusts the new root alone"),
                    "remove `previous_root_cert` from [mesh.trust]",
                    Vec::new(),
                );
                return;
            };
            self.rotation_finding(
                FindingKind::Warning,
                "trust_rotation",
                format!(
                    "{heading}: {} verified in every cluster; {} is planned",
                    stage.label(),
                    next.label()
                ),
                "meshform apply, then meshform check before the next stage",
                Vec::new(),
            );
            stage = next;
        }
        if !unread.is_empty() {
            self.rotation_finding(
                FindingKind::Blocker,
                "trust_rotation_blocked",
                format!(
                    "{heading}: {} waits, for {} could not be read: no stage is written or verified while a cluster's roots are unknown",
                    stage.label(),
                    unread.join(", ")
                ),
                "fix access to the cluster and plan again (the rotation goes on where it stopped)",
                unread,
            );
            return;
        }
        let want = want_for(stage).clone();
        let lifetime = jiff::SignedDuration::from_secs(managed.intermediate_lifetime_seconds as i64);
        let now = self.observed.observed_at;
        let (n, name) = stage.numbered();
        for (cluster, facts, state) in &held {
            if *state == Held::after(stage) {
                continue;
            }
            let current = facts.ca_certs.as_ref().expect("held_by found a cacerts");
            let intermediate = current.ca_cert.as_ref().expect("held_by found an intermediate");
            let (mode, what) = match stage {
                RotationStage::TrustBoth => (
                    CaCertsMode::TrustBoth,
                    "root-cert.pem gets the new root beside the previous one; the intermediate is kept",
                ),
                RotationStage::SignWithNew => (
                    CaCertsMode::SignWithNew,
                    "a new intermediate of the new root; root-cert.pem keeps both roots",
                ),
                RotationStage::DropPrevious => (
                    CaCertsMode::DropPrevious,
                    "a new intermediate of the new root; root-cert.pem holds the new root alone",
                ),
            };
            let kept = mode == CaCertsMode::TrustBoth;
            self.push(
                Phase::Network,
                &cluster.name,
                ActionKind::WriteCaCerts {
                    mode,
                    subject: crate::trust::intermediate_name(&self.desired.mesh.name, &cluster.name),
                    root_sha256: new.to_string(),
                    previous_root_sha256: (stage != RotationStage::DropPrevious).then(|| old.to_string()),
                    lifetime_seconds: managed.intermediate_lifetime_seconds,
                    expires_about: if kept {
                        intermediate.not_after
                    } else {
                        now.checked_add(lifetime).unwrap_or(now).min(root.not_after)
                    },
                    replaces: Some(Replaced {
                        sha256: intermediate.sha256.clone(),
                        not_after: intermediate.not_after,
                    }),
                    precondition: Some(Precondition {
                        uid: current.object.uid.clone(),
                        resource_version: current.object.resource_version.clone(),
                    }),
                },
                format!("{heading}, stage {n} of 3 ({name}): {what}"),
            );
        }
        // istiod takes up a changed root-cert.pem only when it starts.
        if stage != RotationStage::SignWithNew {
            for (cluster, facts, _) in &held {
                if !published(facts, &want) {
                    let reason = format!(
                        "{heading}, stage {n} of 3 ({name}): istiod in {} publishes the roots of its cacerts (istio-ca-root-cert) only once restarted",
                        cluster.name
                    );
                    self.istiod_restart(cluster, facts, reason);
                }
            }
        }
        let lagging = lagging(stage);
        let remotes: Vec<&String> = lagging
            .iter()
            .filter(|c| !held.iter().any(|(p, _, _)| p.name == **c))
            .collect();
        let waiting = if remotes.is_empty() {
            String::new()
        } else {
            format!(
                "; istio-ca-root-cert of {} shows it once its primary's istiod is restarted",
                remotes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            )
        };
        let next = match stage.next() {
            Some(next) => format!("{} starts once it is verified in every cluster", next.label()),
            None => "the rotation is complete once it is verified in every cluster".to_string(),
        };
        self.rotation_finding(
            FindingKind::Warning,
            "trust_rotation",
            format!("{heading}: {} under way{waiting}; {next}", stage.label()),
            "meshform apply --restart-workloads (istiod restarts), then meshform check",
            Vec::new(),
        );
    }

    /// A finding about the whole rotation. A blocker concerns only `concerns`
    /// (an unread cluster, primaries moved back): elsewhere the mesh is kept
    /// alive as usual (`Plan::holds`).
    fn rotation_finding(&mut self, kind: FindingKind, code: &str, message: String, help: &str, concerns: Vec<String>) {
        self.findings.push(Finding {
            kind,
            code: format!("meshform::plan::{code}"),
            cluster: None,
            concerns,
            message,
            help: Some(help.to_string()),
        });
    }
}

/// The rotation state of a primary's `cacerts`, or why it has none.
fn held_by(
    facts: &ClusterFacts,
    old: &str,
    new: &str,
    both: &BTreeSet<&str>,
    alone: &BTreeSet<&str>,
) -> Result<Held, &'static str> {
    let Some(current) = facts.ca_certs.as_ref() else {
        return Err("is absent");
    };
    if !current.object.managed {
        return Err("was not written by meshform");
    }
    let Some(ca) = current.ca_cert.as_ref().filter(|ca| ca.ca && current.complete) else {
        return Err("is incomplete or holds no CA certificate");
    };
    let roots: BTreeSet<&str> = current.roots.iter().map(String::as_str).collect();
    let signer = ca.issued_by.as_deref();
    match (signer, &roots) {
        (Some(s), r) if s == old && r.len() == 1 && r.contains(old) => Ok(Held::Before),
        (Some(s), r) if s == old && r == both => Ok(Held::Trusting),
        (Some(s), r) if s == new && r == both => Ok(Held::Signing),
        (Some(s), r) if s == new && r == alone => Ok(Held::Done),
        _ => Err("holds neither root's intermediate as a rotation leaves it"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::model::{CaCertsFacts, ClusterState, TrustRoot, UnknownReason};

    const OLD: &str = "0000000000000000000000000000000000000000000000000000000000000001";
    const NEW: &str = "0000000000000000000000000000000000000000000000000000000000000002";

    fn root(sha: &str) -> CertFacts {
        CertFacts {
            sha256: sha.to_string(),
            subject: "CN=root".to_string(),
            common_name: Some("root".to_string()),
            not_after: jiff::Timestamp::from_second(4_000_000_000).unwrap(),
            ca: true,
            issued_by: Some(sha.to_string()),
        }
    }

    /// Two primaries and a remote of `a`, every cacerts of `OLD` and every
    /// cluster publishing it, with the rotation onto `NEW` declared.
    fn mesh() -> (Topology, Observed) {
        let text = "[mesh]\nname = \"m\"\n[mesh.trust]\nmode = \"managed\"\nroot_cert = \"n.pem\"\nroot_key = \"k.pem\"\nprevious_root_cert = \"o.pem\"\n[[cluster]]\nname = \"a\"\n[[cluster]]\nname = \"b\"\n[[cluster]]\nname = \"r\"\nrole = \"remote\"\ncontrol_plane = \"a\"\n";
        let (topology, _) = crate::topology::check("t", text.as_bytes()).into_result().unwrap();
        let mut observed =
            crate::observe::synthetic::fresh(&topology, jiff::Timestamp::from_second(1_800_000_000).unwrap());
        observed.trust_root = Some(TrustRoot::Read(root(NEW)));
        observed.trust_previous_root = Some(TrustRoot::Read(root(OLD)));
        for name in ["a", "b", "r"] {
            let facts = facts(&mut observed, name);
            facts.root_certs = Some(vec![OLD.to_string()]);
            if name != "r" {
                facts.ca_certs = Some(ca_certs(name, OLD, &[OLD]));
            }
        }
        (topology, observed)
    }

    fn ca_certs(cluster: &str, signer: &str, roots: &[&str]) -> CaCertsFacts {
        CaCertsFacts {
            object: ObjectFacts {
                uid: format!("uid-{cluster}"),
                resource_version: "1".to_string(),
                managed: true,
                spec_hash: None,
                content_sha256: None,
                content_owners: Vec::new(),
            },
            ca_cert: Some(CertFacts {
                sha256: format!("intermediate-{cluster}-{signer}"),
                common_name: Some(crate::trust::intermediate_name("m", cluster)),
                issued_by: Some(signer.to_string()),
                ..root(signer)
            }),
            roots: roots.iter().map(|r| r.to_string()).collect(),
            complete: true,
        }
    }

    fn facts<'o>(observed: &'o mut Observed, name: &str) -> &'o mut ClusterFacts {
        match &mut observed.clusters.get_mut(name).unwrap().state {
            ClusterState::Reachable(facts) => facts,
            ClusterState::Unknown { .. } => panic!("{name} unknown"),
        }
    }

    fn writes(topology: &Topology, observed: &Observed) -> (Vec<(String, CaCertsMode)>, Vec<String>) {
        let options = Options {
            skip_unreachable: true,
            ..Options::default()
        };
        let plan = super::super::plan(topology, observed, &options).unwrap();
        let writes = plan
            .actions
            .iter()
            .filter_map(|a| match &a.kind {
                ActionKind::WriteCaCerts { mode, .. } => Some((a.cluster.clone(), *mode)),
                _ => None,
            })
            .collect();
        let findings = plan
            .findings
            .iter()
            .filter(|f| f.code.contains("trust_rotation"))
            .map(|f| format!("{:?} {}", f.kind, f.message))
            .collect();
        (writes, findings)
    }

    fn both(mode: CaCertsMode) -> Vec<(String, CaCertsMode)> {
        vec![("a".to_string(), mode), ("b".to_string(), mode)]
    }

    #[test]
    fn each_stage_is_planned_once_the_one_before_is_verified_everywhere() {
        let (topology, mut observed) = mesh();
        let (w, f) = writes(&topology, &observed);
        assert_eq!(w, both(CaCertsMode::TrustBoth));
        assert!(f[0].contains("stage 1 of 3 (trust both roots) under way"), "{f:?}");
        // Stage 1 written; the remote still shows the old root alone.
        for name in ["a", "b"] {
            facts(&mut observed, name).ca_certs = Some(ca_certs(name, OLD, &[OLD, NEW]));
            facts(&mut observed, name).root_certs = Some(vec![OLD.into(), NEW.into()]);
        }
        let (w, f) = writes(&topology, &observed);
        assert_eq!(w, []);
        assert!(f[0].contains("istio-ca-root-cert of r shows it"), "{f:?}");
        facts(&mut observed, "r").root_certs = Some(vec![OLD.into(), NEW.into()]);
        let (w, f) = writes(&topology, &observed);
        assert_eq!(w, both(CaCertsMode::SignWithNew));
        assert!(f[0].contains("stage 1 of 3 (trust both roots) verified"), "{f:?}");
        // One primary signed by the new root: stage 2 goes on for the other.
        facts(&mut observed, "a").ca_certs = Some(ca_certs("a", NEW, &[OLD, NEW]));
        assert_eq!(
            writes(&topology, &observed).0,
            [("b".to_string(), CaCertsMode::SignWithNew)]
        );
        facts(&mut observed, "b").ca_certs = Some(ca_certs("b", NEW, &[OLD, NEW]));
        assert_eq!(writes(&topology, &observed).0, both(CaCertsMode::DropPrevious));
        for name in ["a", "b"] {
            facts(&mut observed, name).ca_certs = Some(ca_certs(name, NEW, &[NEW]));
        }
        let (w, f) = writes(&topology, &observed);
        assert_eq!(w, []);
        assert!(
            f[0].contains("stage 3 of 3 (drop the previous root) under way"),
            "{f:?}"
        );
        for name in ["a", "b", "r"] {
            facts(&mut observed, name).root_certs = Some(vec![NEW.into()]);
        }
        let (w, f) = writes(&topology, &observed);
        assert_eq!(w, []);
        assert!(f[0].contains("complete"), "{f:?}");
    }

    #[test]
    fn no_stage_starts_or_goes_on_while_a_cluster_cannot_be_read() {
        let (topology, mut observed) = mesh();
        observed.clusters.get_mut("r").unwrap().state = ClusterState::Unknown {
            reason: UnknownReason::Unreachable,
            detail: "connection refused".to_string(),
        };
        let (w, f) = writes(&topology, &observed);
        assert_eq!(w, []);
        assert!(
            f[0].starts_with("Blocker") && f[0].contains("waits, for r could not be read"),
            "{f:?}"
        );
    }

    #[test]
    fn a_primary_outside_the_rotation_blocks_it() {
        let (topology, mut observed) = mesh();
        facts(&mut observed, "b").ca_certs = None;
        let (w, f) = writes(&topology, &observed);
        assert_eq!(w, []);
        assert!(f[0].starts_with("Blocker") && f[0].contains("is absent"), "{f:?}");
        // Moved back by hand while the other is at stage 2.
        let (topology, mut observed) = mesh();
        facts(&mut observed, "a").ca_certs = Some(ca_certs("a", NEW, &[OLD, NEW]));
        let (w, f) = writes(&topology, &observed);
        assert_eq!(w, []);
        assert!(f[0].contains("b is not"), "{f:?}");
    }
}
