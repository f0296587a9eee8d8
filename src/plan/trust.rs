//! One root of trust: Istio's plug-in CA Secret `cacerts` in every primary
//! (managed trust), istiod restarts that make it take up a new root, and
//! warnings ahead of an intermediate's expiry (either mode).
//!
//! Pure like the rest of the planner: the root comes as public facts in the
//! observation; keys are made and signed in apply, never here.

use super::*;
use crate::observe::model::{CertFacts, TrustRoot};

/// Check mode warns this long before a plugged-in intermediate expires.
const CHECK_MODE_WARNING_SECONDS: i64 = 30 * 24 * 3600;

impl<'a> Planner<'a> {
    /// Managed trust: every reachable primary holds a complete `cacerts`
    /// of meshform's with an intermediate named for it, signed by the
    /// mesh's root, and far enough from its end; its istiod serves that root.
    pub(super) fn ca_certs(&mut self) {
        self.expiry_warnings();
        let Some(managed) = self.desired.mesh.trust.managed() else {
            return;
        };
        let primaries: Vec<(&Cluster, &ClusterFacts)> =
            self.reachable().filter(|(c, _)| c.role == Role::Primary).collect();
        let root = match &self.observed.trust_root {
            Some(TrustRoot::Read(root)) => root,
            other => {
                let detail = match other {
                    Some(TrustRoot::Unreadable { detail }) => detail.clone(),
                    _ => "it was not read with the clusters (a snapshot taken without [mesh.trust])".to_string(),
                };
                self.findings.push(Finding {
                    kind: FindingKind::Blocker,
                    code: "meshform::plan::trust_root_unreadable".to_string(),
                    cluster: None,
                    concerns: primaries.iter().map(|(c, _)| c.name.clone()).collect(),
                    message: format!("the mesh's root certificate cannot be used: {detail}"),
                    help: Some(
                        "fix `root_cert` in [mesh.trust] (a PEM CA certificate, relative to mesh.toml), or take a new snapshot"
                            .to_string(),
                    ),
                });
                return;
            }
        };
        let now = self.observed.observed_at;
        let renew = jiff::SignedDuration::from_secs(managed.renew_before_seconds as i64);
        let lifetime = jiff::SignedDuration::from_secs(managed.intermediate_lifetime_seconds as i64);
        // An intermediate issued now would be cut short at the root's end.
        if root.not_after.duration_since(now) < lifetime {
            self.findings.push(Finding {
                kind: FindingKind::Warning,
                code: "meshform::plan::trust_root_expiring".to_string(),
                cluster: None,
                concerns: Vec::new(),
                message: format!(
                    "the mesh's root certificate ({}) ends at {}: intermediates it signs end there too",
                    short(&root.sha256),
                    root.not_after
                ),
                help: Some("make a new root and rotate the mesh onto it (Istio's plug-in CA guide)".to_string()),
            });
        }
        match &self.observed.trust_previous_root {
            None => {}
            Some(TrustRoot::Read(previous)) => {
                let previous = previous.clone();
                let root = root.clone();
                return self.rotation(managed, &root, &previous);
            }
            Some(TrustRoot::Unreadable { detail }) => {
                self.findings.push(Finding {
                    kind: FindingKind::Blocker,
                    code: "meshform::plan::trust_root_unreadable".to_string(),
                    cluster: None,
                    concerns: primaries.iter().map(|(c, _)| c.name.clone()).collect(),
                    message: format!("the previous root certificate cannot be used: {detail}"),
                    help: Some(
                        "fix `previous_root_cert` in [mesh.trust] (the PEM certificate of the root the mesh rotates away from)"
                            .to_string(),
                    ),
                });
                return;
            }
        }
        for (cluster, facts) in primaries {
            let subject = crate::trust::intermediate_name(&self.desired.mesh.name, &cluster.name);
            let current = facts.ca_certs.as_ref();
            let fits = |ca: &CertFacts| {
                ca.ca
                    && ca.issued_by.as_deref() == Some(root.sha256.as_str())
                    && ca.common_name.as_deref() == Some(&subject)
            };
            let mode = match current {
                None => Some(CaCertsMode::Create),
                Some(c) if !c.object.managed => {
                    if self.options.adopt {
                        Some(CaCertsMode::Adopt)
                    } else {
                        self.finding(
                            FindingKind::Conflict,
                            "ca_certs_unmanaged",
                            &cluster.name,
                            format!(
                                "Secret {}/{} in {} was not written by meshform; it was left as it is",
                                self.ns(),
                                objects::CA_CERTS_SECRET,
                                cluster.name
                            ),
                            "pass --adopt to replace it with an intermediate of the mesh's root (istiod must restart if it is not of that root), or delete it".to_string(),
                        );
                        None
                    }
                }
                Some(c) => match c.ca_cert.as_ref().filter(|ca| fits(ca)) {
                    Some(ca) if c.complete && c.roots == [root.sha256.clone()] => {
                        (ca.not_after.duration_since(now) < renew).then_some(CaCertsMode::Renew)
                    }
                    _ => Some(CaCertsMode::Reissue),
                },
            };
            if let Some(mode) = mode {
                let replaces = current.and_then(|c| c.ca_cert.as_ref()).map(|ca| Replaced {
                    sha256: ca.sha256.clone(),
                    not_after: ca.not_after,
                });
                let reason = match mode {
                    CaCertsMode::Create => {
                        format!("{} has no plug-in CA: an intermediate of the mesh's root", cluster.name)
                    }
                    CaCertsMode::Renew => format!(
                        "its intermediate ends at {}, within renew_before",
                        replaces.as_ref().map_or(now, |r| r.not_after)
                    ),
                    CaCertsMode::Reissue => {
                        "its cacerts is not a complete intermediate of the mesh's root for this cluster".to_string()
                    }
                    CaCertsMode::Adopt => "take over the plug-in CA (--adopt)".to_string(),
                    CaCertsMode::TrustBoth | CaCertsMode::SignWithNew | CaCertsMode::DropPrevious => {
                        unreachable!("planned by the rotation")
                    }
                };
                let precondition = current.map(|c| Precondition {
                    uid: c.object.uid.clone(),
                    resource_version: c.object.resource_version.clone(),
                });
                let expires_about = now.checked_add(lifetime).unwrap_or(now).min(root.not_after);
                self.push(
                    Phase::Network,
                    &cluster.name,
                    ActionKind::WriteCaCerts {
                        mode,
                        subject,
                        root_sha256: root.sha256.clone(),
                        previous_root_sha256: None,
                        lifetime_seconds: managed.intermediate_lifetime_seconds,
                        expires_about,
                        replaces,
                        precondition,
                    },
                    reason,
                );
            }
            if !facts.root_certs.as_ref().is_some_and(|r| r.contains(&root.sha256)) {
                let reason = format!(
                    "istiod in {} does not serve the mesh's root yet (istio-ca-root-cert): it reads a new root of cacerts when it starts",
                    cluster.name
                );
                self.istiod_restart(cluster, facts, reason);
            }
        }
    }

    /// istiod takes up plugged-in certificates when it starts; afterwards it
    /// reloads `cacerts` only when it started on them, and only for a new
    /// intermediate under the same root (pilot/pkg/bootstrap/istio_ca.go:
    /// `createIstioCA` watches /etc/cacerts only for a plugged-in CA, and
    /// `handleEvent` refuses a new root unless MultiRootMesh). Until then its
    /// `istio-ca-root-cert` does not hold the mesh's root: that is what is
    /// judged, so a restart is planned until istiod serves the root.
    pub(super) fn istiod_restart(&mut self, cluster: &Cluster, facts: &ClusterFacts, reason: String) {
        let deployments: Vec<String> = facts.installs.values().filter_map(|i| i.istiod.clone()).collect();
        if deployments.is_empty() {
            return;
        }
        let command = format!(
            "kubectl --context {} -n {} rollout restart {}",
            cluster.context,
            self.ns(),
            deployments
                .iter()
                .map(|d| format!("deployment/{d}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        self.push(
            Phase::Update,
            &cluster.name,
            ActionKind::RestartIstiod {
                enabled: self.options.restart_workloads,
                deployments,
                command,
            },
            reason,
        );
    }

    /// A plugged-in intermediate near its end, in either mode: workloads
    /// of a cluster whose CA has expired get no certificates.
    fn expiry_warnings(&mut self) {
        let now = self.observed.observed_at;
        let managed = self.desired.mesh.trust.managed();
        let ahead = managed.map_or(CHECK_MODE_WARNING_SECONDS, |m| m.renew_before_seconds as i64);
        let reachable: Vec<_> = self.reachable().collect();
        for (cluster, facts) in reachable {
            let Some(ca) = facts.ca_certs.as_ref().and_then(|c| c.ca_cert.as_ref()) else {
                continue;
            };
            let left = ca.not_after.duration_since(now);
            if left.as_secs() >= ahead {
                continue;
            }
            let when = if left.is_negative() {
                format!("ended at {}", ca.not_after)
            } else {
                format!("ends at {} (in {} h)", ca.not_after, left.as_hours())
            };
            let help = if managed.is_some() {
                "apply renews it (meshform's managed trust); run meshform on a schedule so that it does in time"
                    .to_string()
            } else {
                format!(
                    "issue a new intermediate from the mesh's root and replace Secret {}/{} in {}, as in Istio's plug-in CA guide; or let meshform do it ([mesh.trust] mode = \"managed\")",
                    self.ns(),
                    objects::CA_CERTS_SECRET,
                    cluster.name
                )
            };
            self.finding(
                FindingKind::Warning,
                "ca_cert_expiring",
                &cluster.name,
                format!(
                    "the intermediate CA in Secret {}/{} of {} {when}",
                    self.ns(),
                    objects::CA_CERTS_SECRET,
                    cluster.name
                ),
                help,
            );
        }
    }
}

pub(super) fn short(sha: &str) -> String {
    format!("sha256:{}", &sha[..sha.len().min(16)])
}
