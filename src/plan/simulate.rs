//! The effect a plan is expected to have, applied to an observation.
//!
//! Used to check the planner against itself (after its plan, the next plan
//! is empty) and to show what apply will leave behind.

use jiff::SignedDuration;

use super::{ActionKind, Plan};
use crate::observe::model::{
    BindingFacts, ClusterState, NamespaceFacts, ObjectFacts, Observed, ReaderFacts, RemoteSecretFacts, SharedStrings,
    TokenFacts,
};

fn object(tag: &str, spec_hash: Option<&str>) -> ObjectFacts {
    ObjectFacts {
        uid: format!("simulated-{tag}"),
        resource_version: "simulated".to_string(),
        managed: true,
        spec_hash: spec_hash.map(Into::into),
        content_sha256: None,
        content_owners: Vec::new(),
    }
}

/// The observation as it should be after `plan` is applied, with tokens of
/// `token_lifetime` issued at the observation's time.
pub fn simulate(observed: &Observed, plan: &Plan, token_lifetime: SignedDuration) -> Observed {
    let mut after = observed.clone();
    let now = observed.observed_at;
    // (peer, holder, holder identity) of the binding Secrets the writes create.
    let mut bindings = Vec::new();
    // What every primary's secret for a peer repeats is held once, as
    // observe holds it.
    let mut strings = SharedStrings::default();
    for action in &plan.actions {
        // The peer's facts are read from before the plan: its identity and CA
        // do not change. Borrowed, not cloned: a primary's facts hold a
        // remote secret per peer, and this runs once per action.
        let peer_facts = action.peer().and_then(|p| observed.facts(p));
        let Some(cluster) = after.clusters.get_mut(&action.cluster) else {
            continue;
        };
        let ClusterState::Reachable(facts) = &mut cluster.state else {
            continue;
        };
        match &action.kind {
            ActionKind::DeleteRemoteSecret { name, .. } => {
                facts.remote_secrets.remove(name);
            }
            ActionKind::SetNetwork {
                network,
                control_plane,
                restart_owed,
                ..
            } => {
                let ns = facts.namespace.get_or_insert_with(|| NamespaceFacts {
                    object: ObjectFacts {
                        managed: false,
                        ..object("namespace", None)
                    },
                    network: None,
                    control_planes: None,
                    network_owners: Vec::new(),
                    control_planes_by_meshform: false,
                    restart_owed: None,
                });
                ns.network = Some(network.clone());
                ns.restart_owed.clone_from(restart_owed);
                // One apply of both fields: an annotation meshform applied
                // before and leaves out now is taken off.
                match control_plane {
                    Some(primary) => {
                        ns.control_planes = Some(primary.clone());
                        ns.control_planes_by_meshform = true;
                    }
                    None if ns.control_planes_by_meshform => {
                        ns.control_planes = None;
                        ns.control_planes_by_meshform = false;
                    }
                    None => {}
                }
            }
            ActionKind::EnsureReader { spec_hash, scope, .. } => {
                // Content left unread (None), as in an older snapshot: the
                // rules meshform writes may depend on the cluster's place in
                // the topology, which this function is not given. The
                // planner then judges the role by its spec-hash alone.
                let account = facts.account_mut(*scope);
                let tag = match scope {
                    crate::objects::ReaderScope::Read => "sa",
                    crate::objects::ReaderScope::ControlPlane => "control-plane-sa",
                };
                *account = ReaderFacts {
                    service_account: account.service_account.clone().or(Some(object(tag, None))),
                    cluster_role: Some(object("role", Some(spec_hash.as_str()))),
                    cluster_role_binding: Some(object("binding", Some(spec_hash.as_str()))),
                    // Written in `secret` mode only; the planner ignores it otherwise.
                    token_secret: Some(object("token", None)),
                };
            }
            ActionKind::EnsureGateway { spec_hash, port, .. } => {
                facts.gateway = Some(ObjectFacts {
                    content_sha256: Some(crate::objects::content_sha256(&crate::objects::gateway_spec(*port))),
                    ..object("gateway", Some(spec_hash.as_str()))
                });
            }
            ActionKind::DeleteGateway { .. } => facts.gateway = None,
            ActionKind::EnsureIstiodExposure {
                revision, spec_hash, ..
            } => {
                facts.istiod_gateway = Some(ObjectFacts {
                    content_sha256: Some(crate::objects::content_sha256(&crate::objects::istiod_gateway_spec())),
                    ..object("istiod-gateway", Some(spec_hash.as_str()))
                });
                facts.istiod_virtual_service = Some(ObjectFacts {
                    content_sha256: Some(crate::objects::content_sha256(
                        &crate::objects::istiod_virtual_service_spec(&plan.namespace, revision.as_deref()),
                    )),
                    ..object("istiod-vs", Some(spec_hash.as_str()))
                });
            }
            ActionKind::DeleteIstiodExposure { .. } => {
                facts.istiod_gateway = None;
                facts.istiod_virtual_service = None;
            }
            ActionKind::WriteRemoteSecret {
                peer,
                name,
                server,
                spec_hash,
                ..
            } => {
                facts.remote_secrets.insert(
                    name.clone(),
                    RemoteSecretFacts {
                        object: ObjectFacts {
                            spec_hash: Some(strings.get(spec_hash)),
                            ..object(name, None)
                        },
                        cluster_ids: vec![peer.clone()],
                        annotated_cluster: Some(strings.get(peer)),
                        server: Some(strings.get(server)),
                        ca_sha256: peer_facts.and_then(|f| f.ca_sha256.as_deref()).map(|c| strings.get(c)),
                        tls_server_name: peer_facts
                            .and_then(|f| f.tls_server_name.as_deref())
                            .map(|n| strings.get(n)),
                        peer_identity: peer_facts.map(|f| strings.get(&f.identity)),
                        token: TokenFacts::Bound {
                            issued_at: now,
                            expires_at: now.checked_add(token_lifetime).unwrap_or(now),
                        },
                        token_account_uid: None,
                        token_binding_uid: Some(format!("simulated-binding-{}-{peer}", action.cluster)),
                        token_secret: None,
                        object_copies: Vec::new(),
                    },
                );
                bindings.push((peer.clone(), action.cluster.clone(), facts.identity.clone()));
            }
            // A rotation's first stage keeps the intermediate and adds the root.
            ActionKind::WriteCaCerts {
                mode: crate::plan::CaCertsMode::TrustBoth,
                root_sha256,
                previous_root_sha256,
                ..
            } => {
                if let Some(ca_certs) = facts.ca_certs.as_mut() {
                    ca_certs.roots = previous_root_sha256.iter().chain([root_sha256]).cloned().collect();
                    ca_certs.roots.sort();
                    ca_certs.object.resource_version = format!("simulated-{}", action.cluster);
                }
            }
            ActionKind::WriteCaCerts {
                subject,
                root_sha256,
                previous_root_sha256,
                expires_about,
                ..
            } => {
                let mut roots: Vec<String> = previous_root_sha256.iter().chain([root_sha256]).cloned().collect();
                roots.sort();
                facts.ca_certs = Some(crate::observe::model::CaCertsFacts {
                    object: object("cacerts", None),
                    ca_cert: Some(crate::observe::model::CertFacts {
                        sha256: format!("simulated-intermediate-{}", action.cluster),
                        subject: format!("CN={subject}"),
                        common_name: Some(subject.clone()),
                        not_after: *expires_about,
                        ca: true,
                        issued_by: Some(root_sha256.clone()),
                    }),
                    roots,
                    complete: true,
                });
            }
            // Restarted, istiod publishes the root of its cacerts.
            ActionKind::RestartIstiod { enabled, .. } => {
                if let (true, Some(ca_certs)) = (*enabled, &facts.ca_certs) {
                    facts.root_certs = Some(ca_certs.roots.clone());
                }
            }
            // Run, it takes off the record of the restart owed; shown only, it leaves it.
            ActionKind::RestartWorkloads { enabled, .. } => {
                if *enabled && let Some(ns) = facts.namespace.as_mut() {
                    ns.restart_owed = None;
                }
            }
            ActionKind::SetGatewayNetwork { network, .. } => {
                if let Some(east_west) = &mut facts.east_west {
                    east_west.network = Some(network.clone());
                }
            }
            ActionKind::SetK8sGatewayNetwork { gateway, network, .. } => {
                if let Some(g) = facts.k8s_gateways.as_mut().and_then(|g| g.get_mut(gateway)) {
                    g.network = Some(network.clone());
                }
            }
            // Written whole; its status address comes from Istio's gateway
            // controller later, as it does for an east-west Service's.
            ActionKind::EnsureAmbientGateway { network, spec_hash, .. } => {
                let gateways = facts.k8s_gateways.get_or_insert_default();
                let previous = gateways.remove(crate::objects::AMBIENT_EAST_WEST_GATEWAY);
                let spec = crate::objects::ambient_gateway_spec();
                gateways.insert(
                    crate::objects::AMBIENT_EAST_WEST_GATEWAY.to_string(),
                    crate::observe::model::K8sGatewayFacts {
                        object: ObjectFacts {
                            content_sha256: Some(crate::objects::content_sha256(
                                &crate::objects::ambient_gateway_content(&spec),
                            )),
                            ..object("ambient-gateway", Some(spec_hash.as_str()))
                        },
                        class: crate::objects::EAST_WEST_GATEWAY_CLASS.to_string(),
                        network: Some(network.clone()),
                        port_label: None,
                        listeners: vec![crate::observe::model::ListenerFacts {
                            name: crate::objects::AMBIENT_LISTENER.to_string(),
                            port: crate::objects::HBONE_GATEWAY_PORT,
                            protocol: "HBONE".to_string(),
                            tls_mode: Some("Terminate".to_string()),
                            listener_mode: None,
                        }],
                        spec_addresses: Vec::new(),
                        status_addresses: previous.map(|p| p.status_addresses).unwrap_or_default(),
                        network_owners: Vec::new(),
                    },
                );
            }
            ActionKind::DeleteAmbientGateway { .. } => {
                if let Some(gateways) = facts.k8s_gateways.as_mut() {
                    gateways.remove(crate::objects::AMBIENT_EAST_WEST_GATEWAY);
                }
            }
            ActionKind::RevokeReaderTokens { name, .. } => {
                facts.reader_bindings.remove(name);
            }
        }
    }
    for (peer, holder, identity) in bindings {
        if let Some(facts) = after.facts_mut(&peer) {
            let name = format!("{}simulated", crate::objects::reader_binding_prefix(&holder));
            let binding = BindingFacts {
                object: object(&format!("binding-{holder}-{peer}"), None),
                holder: Some(strings.get(&holder)),
                holder_identity: Some(strings.get(&identity)),
            };
            facts.reader_bindings.insert(name, binding);
        }
    }
    after
}
