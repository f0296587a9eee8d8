//! Plans the renderer snapshots are taken of, all built from
//! `mesh.toml.example` and synthetic observations at a fixed time, so every
//! view is tested on the same handful of situations.

use jiff::{SignedDuration, Timestamp};

use crate::observe::model::{
    ClusterFacts, ClusterState, ObjectFacts, Observed, RemoteSecretFacts, TokenFacts, UnknownReason,
};
use crate::observe::synthetic;
use crate::plan::{self, Options, Plan, simulate::simulate};
use crate::topology::{self, Topology};

const EXAMPLE: &str = include_str!("../../mesh.toml.example");

/// Tests never read the clock.
pub fn now() -> Timestamp {
    "2026-03-01T12:00:00Z".parse().unwrap()
}

pub fn topology(text: &str) -> Topology {
    let (topology, _) = topology::check("mesh.toml", text.as_bytes())
        .into_result()
        .unwrap_or_else(|problems| panic!("invalid test topology: {problems:?}"));
    topology
}

pub fn example() -> Topology {
    topology(EXAMPLE)
}

fn plan_of(topology: &Topology, observed: &Observed, options: &Options) -> Plan {
    plan::plan(topology, observed, options).unwrap()
}

/// The example's clusters as Istio installed them, meshform not run yet.
pub fn fresh() -> (Plan, Topology) {
    let topology = example();
    let observed = synthetic::fresh(&topology, now());
    (plan_of(&topology, &observed, &Options::default()), topology)
}

/// The example's clusters after the fresh plan was applied.
fn converged_observation(topology: &Topology) -> Observed {
    let observed = synthetic::fresh(topology, now());
    let first = plan_of(topology, &observed, &Options::default());
    simulate(&observed, &first, SignedDuration::from_hours(24 * 365))
}

pub fn converged() -> (Plan, Topology) {
    let topology = example();
    let observed = converged_observation(&topology);
    (plan_of(&topology, &observed, &Options::default()), topology)
}

/// us-east, attached on its own network, joins apac on network "asia".
pub fn network_change() -> (Plan, Topology) {
    let observed = converged_observation(&example());
    let moved = EXAMPLE.replace(
        "context = \"kind-us-east\"\n",
        "context = \"kind-us-east\"\nnetwork = \"asia\"\n",
    );
    let topology = topology(&moved);
    assert_eq!(topology.cluster("us-east").unwrap().network, "asia");
    let mut observed = observed;
    synthetic::reinstall_for(&mut observed, &topology);
    (plan_of(&topology, &observed, &Options::default()), topology)
}

/// apac is taken out of mesh.toml after it was attached.
pub fn detach() -> (Plan, Topology) {
    let mut observed = converged_observation(&example());
    observed.clusters.remove("apac");
    let start = EXAMPLE.find("# The kubeconfig context `gke_").unwrap();
    let end = EXAMPLE.find("# Gateway settings").unwrap();
    let without = format!(
        "{}{}",
        &EXAMPLE[..start],
        EXAMPLE[end..].split("[network.asia]").next().unwrap()
    );
    let topology = topology(&without);
    assert!(topology.cluster("apac").is_none());
    (plan_of(&topology, &observed, &Options::default()), topology)
}

/// A fresh mesh with a blocker (us-east has no east-west gateway Service),
/// a conflict (a remote secret for us-east made by hand in eu-west), a
/// warning (eu-central's API address is on loopback) and a deferred cluster
/// (apac cannot be read, `--skip-unreachable`).
pub fn findings() -> (Plan, Topology) {
    let topology = example();
    let mut observed = synthetic::fresh(&topology, now());
    facts(&mut observed, "us-east").gateway_service = None;
    facts(&mut observed, "eu-west").remote_secrets.insert(
        "istio-remote-secret-us-east".to_string(),
        RemoteSecretFacts {
            object: ObjectFacts {
                uid: "by-hand".to_string(),
                resource_version: "7".to_string(),
                managed: false,
                spec_hash: None,
                content_sha256: None,
                content_owners: Vec::new(),
            },
            cluster_ids: vec!["us-east".to_string()],
            annotated_cluster: Some("us-east".into()),
            server: Some("https://us-east.clusters.example.com:6443".into()),
            ca_sha256: None,
            tls_server_name: None,
            peer_identity: None,
            token: TokenFacts::Unbounded,
            token_account_uid: None,
            token_binding_uid: None,
            token_secret: None,
            object_copies: Vec::new(),
        },
    );
    facts(&mut observed, "eu-central").server = "https://127.0.0.1:6443".to_string();
    observed.clusters.get_mut("apac").unwrap().state = ClusterState::Unknown {
        reason: UnknownReason::Unreachable,
        detail: "connection refused (203.0.113.40:443)".to_string(),
    };
    let options = Options {
        skip_unreachable: true,
        ..Options::default()
    };
    (plan_of(&topology, &observed, &options), topology)
}

fn facts<'a>(observed: &'a mut Observed, cluster: &str) -> &'a mut ClusterFacts {
    match &mut observed.clusters.get_mut(cluster).unwrap().state {
        ClusterState::Reachable(facts) => facts,
        ClusterState::Unknown { .. } => panic!("{cluster} is not reachable"),
    }
}

/// The converged example, tokens due for rotation everywhere, and apac's
/// east-west gateway load balancer pending: a blocker about apac alone.
pub fn blocked_rotation() -> (Plan, Topology) {
    let topology = example();
    let mut observed = converged_observation(&topology);
    if let Some(east_west) = facts(&mut observed, "apac").east_west.as_mut() {
        east_west.addresses.clear();
    }
    let options = Options {
        rotate_tokens: true,
        ..Options::default()
    };
    (plan_of(&topology, &observed, &options), topology)
}

/// Every scenario, by snapshot name.
pub fn all() -> Vec<(&'static str, (Plan, Topology))> {
    vec![
        ("fresh", fresh()),
        ("converged", converged()),
        ("network_change", network_change()),
        ("detach", detach()),
        ("findings", findings()),
    ]
}

/// Snapshots must not change with the crate's version.
pub fn settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r#""meshform_version": "[^"]+""#, r#""meshform_version": "[VERSION]""#);
    settings.add_filter(r"meshform \d+\.\d+\.\d+", "meshform [VERSION]");
    settings.set_prepend_module_to_snapshot(false);
    settings
}
