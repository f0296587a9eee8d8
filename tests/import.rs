//! `meshform import` on the test control plane: the promise is that the file
//! it writes describes the mesh as it is, so planning with it changes nothing
//! (a mesh meshform built), or only takes over what istioctl made (`--adopt`).

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;
use serde_json::Value;
use support::controlplane::{Cluster, ControlPlane};
use support::install::{Install, install_istio};
use support::mesh::{Entry, MESH, Mesh, NAMESPACE, eventually, install_eastwest_gateway};

/// `meshform import --kubeconfig K <contexts> -o <dir>/imported.toml`.
fn import(kubeconfig: &Path, contexts: &[&str], out: &Path) -> std::process::Output {
    support::cli::meshform()
        .arg("import")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(contexts)
        .arg("-o")
        .arg(out)
        .output()
        .expect("running meshform import")
}

fn plan(file: &Path, args: &[&str]) -> (i32, Value) {
    let out = support::cli::meshform()
        .args(["plan", "--format", "json", "-f"])
        .arg(file)
        .args(args)
        .output()
        .expect("running meshform plan");
    let text = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .filter_map(Result::ok)
        .find(|v| v.get("actions").is_some())
        .unwrap_or_else(|| panic!("no plan in {text}\n{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), json)
}

fn actions(plan: &Value) -> Vec<String> {
    plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            format!(
                "{} {} {}",
                a["action"].as_str().unwrap(),
                a["cluster"].as_str().unwrap(),
                a["mode"].as_str().unwrap_or("")
            )
            .trim_end()
            .to_string()
        })
        .collect()
}

#[tokio::test]
async fn a_mesh_meshform_built_imports_to_a_file_that_plans_nothing() {
    let clusters = ControlPlane::shared().clusters(&["east", "west", "north"]).await;
    for c in clusters.iter() {
        install_eastwest_gateway(c).await;
    }
    let (east, west, north) = (
        clusters.by_name("east"),
        clusters.by_name("west"),
        clusters.by_name("north"),
    );
    let mesh = Mesh::new(&[
        Entry::of(east).network("n1"),
        Entry::of(west).network("n1"),
        Entry::of(north).network("n2").served_by("west"),
    ]);
    mesh.apply(&[]).await;

    let file = mesh.dir().join("imported.toml");
    let out = import(clusters.kubeconfig(), &["east", "west", "north"], &file);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&file).unwrap();
    let topology = meshform::topology::check("imported.toml", text.as_bytes())
        .into_result()
        .unwrap_or_else(|p| panic!("{p:?}\n{text}"));
    let described: Vec<_> = topology
        .0
        .clusters
        .iter()
        .map(|c| {
            (
                c.name.as_str(),
                c.network.as_str(),
                format!("{:?}", c.role),
                c.control_plane.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        described,
        [
            ("east", "n1", "Primary".to_string(), None),
            ("west", "n1", "Primary".to_string(), None),
            // From the annotation apply wrote on north's namespace.
            ("north", "n2", "Remote".to_string(), Some("west"))
        ],
        "{text}"
    );
    assert_eq!(topology.0.mesh.name, MESH);
    let (code, plan) = plan(&file, &["--detailed-exitcode"]);
    assert_eq!(code, 0, "the imported file plans no change: {plan:#}");
    mesh.assert_no_token_leaked(&[east, west, north]).await;
}

/// What `istioctl create-remote-secret --name <peer> | kubectl apply` leaves
/// in `primary`: a Secret of Istio's name, label and annotation holding a
/// kubeconfig with the peer's never-expiring reader token.
async fn istioctl_remote_secret(primary: &Cluster, peer: &Cluster, kubeconfig: &Kubeconfig, token: &str) {
    let ca = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == peer.name())
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.certificate_authority_data.clone())
        .expect("the peer's CA in the plane's kubeconfig");
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: {}\n  name: {peer}\n\
         contexts:\n- context:\n    cluster: {peer}\n    user: {peer}\n  name: {peer}\ncurrent-context: {peer}\n\
         users:\n- name: {peer}\n  user:\n    token: {token}\n",
        peer.server(),
        peer = peer.name()
    );
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(format!("istio-remote-secret-{}", peer.name())),
            labels: Some(BTreeMap::from([("istio/multiCluster".into(), "true".into())])),
            annotations: Some(BTreeMap::from([(
                "networking.istio.io/cluster".into(),
                peer.name().into(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            peer.name().to_string(),
            ByteString(config.into_bytes()),
        )])),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(primary.client(), NAMESPACE)
        .create(&PostParams::default(), &secret)
        .await
        .expect("creating the istioctl-style remote secret");
}

/// Istio's install in `cluster`: the namespace with its network label and the
/// reader account with a legacy token Secret, as istioctl uses it.
async fn istio_install(cluster: &Cluster, network: &str) -> String {
    let namespaces: Api<Namespace> = Api::all(cluster.client());
    let ns = serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": NAMESPACE, "labels": {"topology.istio.io/network": network}}
    });
    namespaces
        .patch(NAMESPACE, &PatchParams::apply("kubectl-label"), &Patch::Apply(ns))
        .await
        .expect("labelling the namespace");
    let accounts: Api<ServiceAccount> = Api::namespaced(cluster.client(), NAMESPACE);
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("istio-reader-service-account".into()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    accounts.create(&PostParams::default(), &account).await.ok();
    let secrets: Api<Secret> = Api::namespaced(cluster.client(), NAMESPACE);
    let token_secret = Secret {
        metadata: ObjectMeta {
            name: Some(meshform::objects::READER_TOKEN_SECRET.into()),
            annotations: Some(BTreeMap::from([(
                "kubernetes.io/service-account.name".into(),
                "istio-reader-service-account".into(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/service-account-token".into()),
        ..Secret::default()
    };
    secrets
        .create(&PostParams::default(), &token_secret)
        .await
        .expect("the token Secret");
    eventually(
        "the token controller to fill the reader token",
        std::time::Duration::from_secs(30),
        async || {
            let s = secrets.get(meshform::objects::READER_TOKEN_SECRET).await.ok()?;
            s.data?.get("token").map(|t| String::from_utf8(t.0.clone()).unwrap())
        },
    )
    .await
}

#[tokio::test]
async fn a_mesh_istioctl_built_imports_and_plans_only_adoption() {
    let clusters = ControlPlane::shared().clusters(&["east", "west"]).await;
    let (east, west) = (clusters.by_name("east"), clusters.by_name("west"));
    let kubeconfig = Kubeconfig::read_from(clusters.kubeconfig()).unwrap();
    let east_token = istio_install(east, "flat").await;
    let west_token = istio_install(west, "flat").await;
    for (c, name) in [(east, "east"), (west, "west")] {
        let install = Install {
            mesh_id: Some("prod-mesh".into()),
            ..Install::correct(name, "flat")
        };
        install_istio(c, &install).await;
    }
    istioctl_remote_secret(east, west, &kubeconfig, &west_token).await;
    istioctl_remote_secret(west, east, &kubeconfig, &east_token).await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mesh.toml");
    // Half the mesh: east's secret for west points at no context given.
    let out = import(clusters.kubeconfig(), &["east"], &file);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("none of the contexts reach"), "{stderr}");
    assert!(!file.exists(), "nothing is written that misdescribes the mesh");

    let out = import(clusters.kubeconfig(), &["east", "west"], &file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--adopt"),
        "istioctl's secrets are named for adoption: {stderr}"
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("mode = \"secret\""),
        "istioctl's tokens never expire: {text}"
    );
    assert!(
        text.contains("name = \"prod-mesh\""),
        "the mesh is named by the installs' meshID: {text}"
    );
    for token in [&east_token, &west_token] {
        assert!(
            !text.contains(token.as_str()) && !stderr.contains(token.as_str()),
            "a token leaked"
        );
    }

    // Without --adopt, istioctl's secrets are conflicts left alone; with it,
    // taking them over (and meshform's own reader role) is all there is to do.
    let (_, plan_adopt) = plan(&file, &["--adopt"]);
    let mut planned = actions(&plan_adopt);
    planned.sort();
    assert_eq!(
        planned,
        [
            "ensure_reader east",
            "ensure_reader west",
            "write_remote_secret east adopt",
            "write_remote_secret west adopt"
        ],
        "{plan_adopt:#}"
    );
    let applied = support::cli::meshform()
        .args(["apply", "--auto-approve", "--adopt", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stdout));
    let (code, after) = plan(&file, &["--detailed-exitcode"]);
    assert_eq!(code, 0, "{after:#}");
    // Imported again, meshform's own mesh reads back the same.
    let again = dir.path().join("again.toml");
    assert!(
        import(clusters.kubeconfig(), &["east", "west"], &again)
            .status
            .success()
    );
    assert_eq!(std::fs::read_to_string(&again).unwrap(), text);

    // istiod running under another id than its peers use is reported, not guessed.
    let renamed = Install {
        cluster_id: Some("west-old".into()),
        mesh_id: Some("prod-mesh".into()),
        ..Install::correct("west", "flat")
    };
    install_istio(west, &renamed).await;
    let third = dir.path().join("third.toml");
    let out = import(clusters.kubeconfig(), &["east", "west"], &third);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("runs as cluster id \"west-old\""), "{stderr}");
    assert!(!third.exists());
}

#[tokio::test]
async fn import_refuses_to_overwrite_and_names_unknown_contexts() {
    let clusters = ControlPlane::shared().clusters(&["solo"]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mesh.toml");
    std::fs::write(&file, "keep me").unwrap();
    let out = import(clusters.kubeconfig(), &["solo"], &file);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"), "{out:?}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    let out = import(clusters.kubeconfig(), &["nowhere"], &dir.path().join("new.toml"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no context \"nowhere\""),
        "{out:?}"
    );
    assert!(!dir.path().join("new.toml").exists());
}
