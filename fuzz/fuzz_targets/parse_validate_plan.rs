//! Fuzzes the offline pipeline: topology bytes → `topology::check` → the
//! diagnostics rendered → `plan` against a synthetic observation (as
//! `observe::synthetic::fresh` makes it), mutated by the bytes after the
//! first `\n#--\n` separator → every renderer of the plan → the simulated
//! apply → a second plan. Anything but a panic (or an abort) is fine.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshform::observe::model::{ClusterState, ObjectFacts, RemoteSecretFacts, TokenFacts, UnknownReason};
use meshform::observe::synthetic;
use meshform::plan::{self, Options};
use meshform::render::{self, Style};
use meshform::topology;

const SEPARATOR: &[u8] = b"\n#--\n";

fn object(seed: u8) -> ObjectFacts {
    ObjectFacts {
        uid: format!("uid-{seed}"),
        resource_version: seed.to_string(),
        managed: seed % 2 == 0,
        spec_hash: (seed % 3 == 0).then(|| format!("hash-{}", seed % 5)),
        content_sha256: None,
        content_owners: Vec::new(),
    }
}

fuzz_target!(|data: &[u8]| {
    let (text, ops) = match data.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
        Some(at) => (&data[..at], &data[at + SEPARATOR.len()..]),
        None => (data, &[][..]),
    };
    let checked = topology::check("fuzz.toml", text);
    let mut sink = Vec::new();
    let _ = render::diagnostics::text(&checked.problems, Style::PLAIN, &mut sink);
    let _ = render::diagnostics::json(&checked.problems, checked.topology.as_ref(), &mut sink);
    let Some(topology) = checked.topology else { return };

    let now = jiff::Timestamp::from_second(1_700_000_000).expect("a valid time");
    let mut observed = synthetic::fresh(&topology, now);
    let names: Vec<String> = topology.clusters.iter().map(|c| c.name.clone()).collect();
    let mut options = Options::default();
    // Each pair of bytes: an operation and its argument.
    for pair in ops.chunks(2) {
        let (op, arg) = (pair[0], pair.get(1).copied().unwrap_or(0));
        let cluster = &names[usize::from(arg) % names.len()];
        let other = &names[usize::from(arg / 7) % names.len()];
        let state = &mut observed.clusters.get_mut(cluster).expect("observed").state;
        match (op % 16, state) {
            (0, state) => {
                *state = ClusterState::Unknown {
                    reason: UnknownReason::Unreachable,
                    detail: "fuzz".into(),
                }
            }
            (1, ClusterState::Reachable(f)) => {
                if let Some(ns) = f.namespace.as_mut() {
                    ns.network = Some(format!("net{}", arg % 4));
                }
            }
            (2, ClusterState::Reachable(f)) => f.namespace = None,
            (3, ClusterState::Reachable(f)) => {
                let name = meshform::objects::remote_secret_name(other);
                f.remote_secrets.insert(
                    name,
                    RemoteSecretFacts {
                        object: object(arg),
                        cluster_ids: vec![other.clone()],
                        annotated_cluster: Some(other.as_str().into()),
                        server: Some(format!("https://{other}.clusters.example.com:6443").into()),
                        ca_sha256: None,
                        tls_server_name: None,
                        peer_identity: Some(format!("kube-system-{other}").into()),
                        token: match arg % 3 {
                            0 => TokenFacts::Unbounded,
                            1 => TokenFacts::Unknown,
                            _ => TokenFacts::Bound {
                                issued_at: now - jiff::SignedDuration::from_hours(i64::from(arg)),
                                expires_at: now + jiff::SignedDuration::from_hours(i64::from(arg) - 100),
                            },
                        },
                        // A token of a reader account that is gone or was re-created.
                        token_account_uid: (arg % 5 == 0).then(|| format!("sa-{arg}").into()),
                        token_binding_uid: (arg % 3 == 0).then(|| format!("binding-{arg}")),
                        token_secret: None,
                        object_copies: Vec::new(),
                    },
                );
            }
            (4, ClusterState::Reachable(f)) => f.remote_secrets.clear(),
            (5, ClusterState::Reachable(f)) => f.gateway = Some(object(arg)),
            (6, ClusterState::Reachable(f)) => f.gateway_service = None,
            (7, ClusterState::Reachable(f)) => f.reader.service_account = Some(object(arg)),
            (8, ClusterState::Reachable(f)) => f.reader.cluster_role = Some(object(arg)),
            (9, ClusterState::Reachable(f)) => f.reader.cluster_role_binding = Some(object(arg)),
            // Two entries reaching one cluster.
            (10, ClusterState::Reachable(f)) => f.identity = format!("kube-system-{other}"),
            (11, ClusterState::Reachable(f)) => f.server = format!("https://{}:6443", arg),
            (12, _) => options.adopt = !options.adopt,
            (13, _) => options.rotate_tokens = !options.rotate_tokens,
            (14, _) => options.skip_unreachable = !options.skip_unreachable,
            (15, _) => options.targets.push(cluster.clone()),
            _ => {}
        }
    }

    let Ok(plan) = plan::plan(&topology, &observed, &options) else {
        return;
    };
    for format in [render::Format::Text, render::Format::Markdown, render::Format::Json] {
        let _ = render::plan(format, &plan, &topology, Style::PLAIN, &mut sink);
    }
    let lifetime = jiff::SignedDuration::from_secs(topology.mesh.tokens.lifetime_seconds as i64);
    let after = plan::simulate::simulate(&observed, &plan, lifetime);
    let _ = plan::plan(&topology, &after, &options);
});
