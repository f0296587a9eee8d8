//! Revoking reader tokens (issue 15), on real API servers: every token
//! meshform issues is bound to a data-less Secret in the peer that stands
//! for the primary holding it; deleting that Secret makes the peer refuse
//! the token. A detach revokes every token the leaving cluster holds,
//! whether it is running or stopped; a rotation revokes the token it
//! replaced once the grace period is over, and nothing else stops working.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ListParams};
use support::controlplane::{Cluster, ControlPlane};
use support::mesh::{Entry, Mesh, NAMESPACE, eventually, remote_secrets, token_of};

const BINDINGS: &str = "meshform.io/reader-binding=true";

/// Whether `peer` accepts `token`: a read the reader role allows. A
/// refusal must be a 401, not some other error.
async fn accepted(peer: &Cluster, token: &str) -> bool {
    let namespaces: Api<Namespace> = Api::all(peer.client_with_token(token).await);
    match namespaces.get(NAMESPACE).await {
        Ok(_) => true,
        Err(kube::Error::Api(status)) if status.code == 401 => false,
        Err(e) => panic!("reading {} with a reader token: {e}", peer.name()),
    }
}

/// The tokens `holder` holds, by the peer they are for.
async fn tokens_held(holder: &Cluster) -> BTreeMap<String, String> {
    remote_secrets(holder)
        .await
        .into_values()
        .map(|s| {
            let (peer, kubeconfig) = s.data.expect("data").into_iter().next().expect("one key");
            (peer, token_of(&kubeconfig.0).expect("a token"))
        })
        .collect()
}

/// The binding Secrets in `peer`, as (name, holder annotation).
async fn bindings(peer: &Cluster) -> Vec<(String, String)> {
    Api::<Secret>::namespaced(peer.client(), NAMESPACE)
        .list(&ListParams::default().labels(BINDINGS))
        .await
        .expect("listing bindings")
        .items
        .into_iter()
        .map(|s| {
            assert!(s.data.unwrap_or_default().is_empty(), "a binding Secret holds no data");
            let holder = s.metadata.annotations.unwrap_or_default()["meshform.io/holder"].clone();
            (s.metadata.name.unwrap_or_default(), holder)
        })
        .collect()
}

async fn assert_refused(peer: &Cluster, token: &str, what: &str) {
    eventually(what, Duration::from_secs(30), async || {
        (!accepted(peer, token).await).then_some(())
    })
    .await;
}

/// Attach three clusters, then detach `north` with it stopped or running:
/// every token north held is refused by its peer, east and west keep
/// reading each other.
async fn detach_revokes(stop: bool) {
    let names = if stop {
        ["east", "west", "north"]
    } else {
        ["east", "west", "south"]
    };
    let clusters = ControlPlane::shared().clusters(&names).await;
    let (east, west, north) = (
        clusters.by_name(names[0]),
        clusters.by_name(names[1]),
        clusters.by_name(names[2]),
    );
    let all = [east, west, north];
    let mesh = Mesh::flat(&all);
    mesh.apply(&[]).await;
    // One binding per (holder, peer), for that holder.
    for peer in all {
        let mut holders: Vec<String> = bindings(peer).await.into_iter().map(|(_, h)| h).collect();
        holders.sort();
        let mut expected: Vec<String> = all
            .iter()
            .filter(|c| c.name() != peer.name())
            .map(|c| c.name().to_string())
            .collect();
        expected.sort();
        assert_eq!(holders, expected, "bindings in {}", peer.name());
    }
    let held = tokens_held(north).await;
    assert_eq!(held.len(), 2, "{held:?}");
    for (peer, token) in &held {
        assert!(
            accepted(clusters.by_name(peer), token).await,
            "{peer} refuses a live token"
        );
    }
    let kept: Vec<(&Cluster, String)> = vec![
        (west, tokens_held(east).await[west.name()].clone()),
        (east, tokens_held(west).await[east.name()].clone()),
    ];

    if stop {
        north.stop().await;
    }
    mesh.write(&[Entry::of(east).network("flat"), Entry::of(west).network("flat")]);
    let refused = mesh.run("apply", &["--auto-approve"]).await.expect(1);
    assert!(
        refused.stderr.contains(&format!("detaches {}", north.name())),
        "{refused}"
    );
    for (peer, token) in &held {
        assert!(
            accepted(clusters.by_name(peer), token).await,
            "a refused apply revoked a token"
        );
    }
    let out = mesh.apply(&["--allow-detach"]).await;
    assert!(
        out.stdout.contains("no longer authenticate"),
        "the plan says what is left in the detached cluster:\n{out}"
    );
    for (peer, token) in &held {
        assert_refused(
            clusters.by_name(peer),
            token,
            &format!("{peer} refusing {}'s token", north.name()),
        )
        .await;
    }
    for (peer, token) in &kept {
        assert!(
            accepted(peer, token).await,
            "{} refuses a token it should keep",
            peer.name()
        );
    }
    if !stop {
        // Left where meshform cannot reach it any more (it is not in mesh.toml), but dead.
        assert_eq!(tokens_held(north).await, held);
    }
    for peer in [east, west] {
        assert!(
            bindings(peer).await.iter().all(|(_, h)| h != north.name()),
            "{}: {:?}",
            peer.name(),
            bindings(peer).await
        );
    }
    // North may be stopped: only what is left of the mesh is read.
    mesh.assert_converged(&[east, west]).await;
    mesh.assert_no_token_leaked(&[east, west]).await;
    if stop {
        north.start().await;
    }
}

#[tokio::test]
async fn a_detach_revokes_every_token_a_stopped_cluster_holds() {
    detach_revokes(true).await;
}

#[tokio::test]
async fn a_detach_revokes_every_token_a_running_cluster_holds() {
    detach_revokes(false).await;
}

#[tokio::test]
async fn a_rotation_revokes_the_replaced_token_once_the_grace_period_is_over() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    let mesh = Mesh::flat(&[east, west]);
    mesh.apply(&[]).await;
    let old = tokens_held(east).await["west"].clone();

    mesh.apply(&["--rotate-tokens"]).await;
    let new = tokens_held(east).await["west"].clone();
    assert_ne!(old, new);
    // Within the grace period both work: an istiod may not have moved yet.
    assert!(accepted(west, &old).await && accepted(west, &new).await);
    assert_eq!(bindings(west).await.len(), 2);
    mesh.assert_converged(&clusters.all()).await;

    // Once it is over, the next run revokes the old one, without --allow-detach.
    let out = mesh.apply(&["--revoke-grace", "0"]).await;
    assert!(out.stdout.contains("replaced one is revoked"), "{out}");
    assert_refused(west, &old, "west refusing the replaced token").await;
    assert!(accepted(west, &new).await, "the current token was revoked");
    assert!(accepted(east, &tokens_held(west).await["east"]).await);
    assert_eq!(bindings(west).await.len(), 1);
    mesh.run("plan", &["--detailed-exitcode", "--revoke-grace", "0"])
        .await
        .expect(0);
    mesh.assert_no_token_leaked(&[east, west]).await;
}

#[tokio::test]
async fn a_saved_plan_that_revokes_is_refused_once_a_binding_changed() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    let mesh = Mesh::flat(&[east, west]);
    mesh.apply(&[]).await;
    mesh.apply(&["--rotate-tokens"]).await;
    let plan = mesh.dir().join("p.json");
    let plan = plan.to_str().expect("utf-8 path");
    mesh.run("plan", &["--revoke-grace", "0", "--out", plan])
        .await
        .expect(0);
    let saved = std::fs::read_to_string(plan).expect("the plan");
    assert!(saved.contains("revoke_reader_tokens"), "{saved}");

    // Someone deletes one of the bindings the plan saw.
    let (name, _) = bindings(west).await.into_iter().next().expect("a binding");
    Api::<Secret>::namespaced(west.client(), NAMESPACE)
        .delete(&name, &Default::default())
        .await
        .expect("deleting a binding");
    let stale = mesh.run("apply", &["--auto-approve", plan]).await.expect(1);
    assert!(stale.stderr.contains("plan is stale"), "{stale}");
    // Planned again: the revocation of the deleted binding is gone, or the
    // token bound to it is replaced.
    assert!(
        stale
            .stderr
            .contains(&format!("removed west: revoke_reader_tokens Secret {NAMESPACE}/{name}"))
            || stale.stderr.contains(&format!(
                "east: write_remote_secret Secret {NAMESPACE}/istio-remote-secret-west"
            )),
        "the message names what differs:\n{stale}"
    );
    // Re-runs converge, whichever binding went: a token bound to the deleted
    // one is replaced, and the binding it leaves behind goes on the run after
    // (never in the run that writes its successor).
    mesh.apply(&["--revoke-grace", "0"]).await;
    assert!(accepted(west, &tokens_held(east).await["west"]).await);
    mesh.apply(&["--revoke-grace", "0"]).await;
    assert!(accepted(west, &tokens_held(east).await["west"]).await);
    assert_eq!(bindings(west).await.len(), 1);
    mesh.run("plan", &["--detailed-exitcode", "--revoke-grace", "0"])
        .await
        .expect(0);
    mesh.assert_no_token_leaked(&[east, west]).await;
}
