//! Plan JSON of a few hundred synthetic cases, written to a directory, so
//! that a change to the planner can be shown to leave every plan byte for
//! byte the same: run it before and after, and `diff -r` the two.
//!
//! `MESHFORM_PLAN_CORPUS=DIR cargo bench --bench plan_corpus` (`bench/plan-corpus`
//! runs it into `target/bench/plan-corpus/<commit>`).
//!
//! The cases: the benchmark's meshes (`support/meshes.rs`: primaries, and
//! remotes served across networks) of 2 to 120 primaries, fresh, converged,
//! a tenth moved, a tenth removed, and a mixed mesh (hand-made secrets, an
//! unreachable cluster, a rename, a private address, a primary turned
//! remote, an old token, tokens replaced by a rotation, a deleted binding
//! and reader account), each with
//! several options and token settings. A plan that fails gives its error.

#[path = "support/meshes.rs"]
#[allow(dead_code)] // the timed scenarios are not used here
mod meshes;

use std::path::PathBuf;

use jiff::SignedDuration;
use meshform::observe::model::{ClusterState, Observed, RemoteSecretFacts, TokenFacts, UnknownReason};
use meshform::plan::{Options, plan};
use meshform::topology::{Role, TokenMode, Topology};

fn facts_mut<'a>(observed: &'a mut Observed, cluster: &str) -> Option<&'a mut meshform::observe::model::ClusterFacts> {
    observed.facts_mut(cluster)
}

/// The converged mesh of `topology`, with a bit of everything the planner
/// must notice. Edits that need a cluster the mesh does not have are skipped.
fn mixed(topology: &Topology) -> (Topology, Observed) {
    let mut topology = topology.clone();
    let mut observed = meshes::converged(&topology);
    // A hand-made duplicate of c0001's secret for c0002, and istioctl's
    // secret of meshform's name for c0003 (adoptable).
    if let Some(facts) = facts_mut(&mut observed, "c0001") {
        let by_hand = |ids: &[&str]| RemoteSecretFacts {
            object: meshform::observe::model::ObjectFacts {
                uid: format!("istioctl-{}", ids.join("-")),
                resource_version: "7".to_string(),
                managed: false,
                spec_hash: None,
                content_sha256: None,
                content_owners: Vec::new(),
            },
            cluster_ids: ids.iter().map(|s| s.to_string()).collect(),
            annotated_cluster: ids.first().map(|s| (*s).into()),
            server: Some("https://somewhere.example.com:6443".into()),
            ca_sha256: None,
            tls_server_name: None,
            peer_identity: None,
            token: TokenFacts::Unbounded,
            token_account_uid: None,
            token_binding_uid: None,
            token_secret: None,
            object_copies: Vec::new(),
        };
        facts.remote_secrets.insert("by-hand".to_string(), by_hand(&["c0002"]));
        if facts.remote_secrets.contains_key("istio-remote-secret-c0003") {
            facts
                .remote_secrets
                .insert("istio-remote-secret-c0003".to_string(), by_hand(&["c0003"]));
        }
    }
    // c0000's token for c0002 is old: rotated.
    if let Some(secret) =
        facts_mut(&mut observed, "c0000").and_then(|f| f.remote_secrets.get_mut("istio-remote-secret-c0002"))
    {
        let issued_at = meshes::now()
            .checked_sub(SignedDuration::from_hours(24 * 400))
            .expect("in range");
        secret.token = TokenFacts::Bound {
            issued_at,
            expires_at: issued_at
                .checked_add(SignedDuration::from_hours(24 * 365))
                .expect("in range"),
        };
    }
    // c0002 lost one binding Secret, c0003 its reader account.
    if let Some(facts) = facts_mut(&mut observed, "c0002") {
        let first = facts.reader_bindings.keys().next().cloned();
        if let Some(first) = first {
            facts.reader_bindings.remove(&first);
        }
    }
    if let Some(facts) = facts_mut(&mut observed, "c0003") {
        facts.reader.service_account = None;
    }
    // Tokens replaced by a rotation: c0001 still holds the bindings of
    // c0000's and c0002's old tokens for it; c0002's new token is a legacy
    // one (no issue time).
    if let Some(secret) =
        facts_mut(&mut observed, "c0002").and_then(|f| f.remote_secrets.get_mut("istio-remote-secret-c0001"))
    {
        secret.token = TokenFacts::Unbounded;
    }
    if let Some(facts) = facts_mut(&mut observed, "c0001") {
        for holder in ["c0000", "c0002"] {
            let old = meshform::observe::model::BindingFacts {
                object: meshform::observe::model::ObjectFacts {
                    uid: format!("old-binding-{holder}"),
                    resource_version: "3".to_string(),
                    managed: true,
                    spec_hash: None,
                    content_sha256: None,
                    content_owners: Vec::new(),
                },
                holder: Some(holder.into()),
                holder_identity: Some(format!("kube-system-{holder}").into()),
            };
            facts
                .reader_bindings
                .insert(format!("meshform-reader-binding-{holder}-old"), old);
        }
    }
    // c0004 cannot be read.
    if let Some(cluster) = observed.clusters.get_mut("c0004") {
        cluster.state = ClusterState::Unknown {
            reason: UnknownReason::Unreachable,
            detail: "connection refused".to_string(),
        };
    }
    // c0005 is renamed x0005 (same cluster, same identity).
    if let Some(cluster) = observed.clusters.remove("c0005") {
        observed.clusters.insert("x0005".to_string(), cluster);
        for c in topology.clusters.iter_mut().filter(|c| c.name == "c0005") {
            c.name = "x0005".to_string();
            c.context = "x0005".to_string();
        }
    }
    // c0006 has an address its peers cannot reach.
    for c in topology.clusters.iter_mut().filter(|c| c.name == "c0006") {
        c.api_server = Some("https://c0006.internal:6443".to_string());
    }
    // c0007 becomes a remote of c0000.
    for c in topology.clusters.iter_mut().filter(|c| c.name == "c0007") {
        c.role = Role::Remote;
        c.control_plane = Some("c0000".to_string());
    }
    (topology, observed)
}

fn main() {
    let Ok(dir) = std::env::var("MESHFORM_PLAN_CORPUS") else {
        eprintln!("set MESHFORM_PLAN_CORPUS to the directory to write plans to");
        return;
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("the corpus directory can be made");
    let options: Vec<(&str, Options)> = vec![
        ("default", Options::default()),
        (
            "adopt",
            Options {
                adopt: true,
                ..Options::default()
            },
        ),
        (
            "rotate",
            Options {
                rotate_tokens: true,
                ..Options::default()
            },
        ),
        (
            "target",
            Options {
                targets: vec!["c0001".to_string()],
                ..Options::default()
            },
        ),
        (
            "force-restart",
            Options {
                force_conflicts: true,
                restart_workloads: true,
                ..Options::default()
            },
        ),
        (
            "grace0",
            Options {
                revoke_grace_seconds: 0,
                ..Options::default()
            },
        ),
    ];
    let mut written = 0;
    for clusters in [2, 3, 5, 8, 13, 30, 60, 120] {
        let topology = meshes::topology(clusters, meshes::networks(clusters));
        let converged = meshes::converged(&topology);
        let (fewer, fewer_observed) = meshes::removed(&topology, &converged);
        let (mixed, mixed_observed) = mixed(&topology);
        let cases: Vec<(&str, Topology, Observed)> = vec![
            ("fresh", topology.clone(), meshes::fresh(&topology)),
            ("converged", topology.clone(), converged.clone()),
            ("moved", meshes::moved(&topology), converged.clone()),
            ("removed", fewer, fewer_observed),
            ("mixed", mixed, mixed_observed),
        ];
        for (scenario, topology, observed) in cases {
            let mut rotating = topology.clone();
            rotating.mesh.tokens.rotate_at_percent = 0;
            let mut legacy = topology.clone();
            legacy.mesh.tokens.mode = TokenMode::Secret;
            for (tokens, topology) in [("request", topology), ("rotate0", rotating), ("secret", legacy)] {
                for (name, options) in &options {
                    // The largest meshes only with the defaults: their plans are large.
                    if clusters > 60 && (tokens != "request" || *name != "default") {
                        continue;
                    }
                    for skip in [false, true] {
                        let options = Options {
                            skip_unreachable: skip,
                            ..options.clone()
                        };
                        let out = match plan(&topology, &observed, &options) {
                            Ok(plan) => serde_json::to_string_pretty(&plan).expect("a plan serialises"),
                            Err(error) => format!("error: {error:?}\n"),
                        };
                        let file = format!("{clusters:03}-{scenario}-{tokens}-{name}-skip{}.json", skip as u8);
                        std::fs::write(dir.join(file), out).expect("a plan file can be written");
                        written += 1;
                    }
                }
            }
        }
    }
    println!("{written} plans written to {}", dir.display());
}
