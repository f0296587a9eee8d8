//! Writes the observed snapshot of every example scenario under `examples/`,
//! and `examples/observed.json` for `mesh.toml.example`, from made-up
//! clusters at a fixed time, so the files (and the plans made from them)
//! only change when meshform does.
//!
//! `cargo run --example scenarios` (from the crate root)
//!
//! A scenario is a directory with a `mesh.toml`. The clusters are as Istio
//! installs them (`observe::synthetic::fresh`), or, when the directory has a
//! `before.toml`, as they are after applying that file: the "before" of a
//! before/after change, made by simulating the plan of `before.toml` rather
//! than by hand. `tests/examples.rs` checks that the files are what this
//! program writes, and runs every scenario through `meshform plan`.

use std::path::{Path, PathBuf};

use jiff::{SignedDuration, Timestamp};
use meshform::observe::model::Observed;
use meshform::topology::Topology;

/// When the example clusters were observed.
pub const OBSERVED_AT: &str = "2026-01-01T00:00:00Z";

/// The reader-token lifetime assumed when simulating an apply (apply's default).
const TOKEN_LIFETIME: SignedDuration = SignedDuration::from_hours(168);

/// Every scenario directory under `examples/`, sorted: those with a `mesh.toml`.
pub fn scenario_dirs(examples: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(examples)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", examples.display()))
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| path.join("mesh.toml").is_file())
        .collect();
    dirs.sort();
    dirs
}

/// The snapshot of a scenario directory, as `meshform snapshot` would write it.
pub fn scenario_snapshot(dir: &Path) -> Result<String, String> {
    let after = load(&dir.join("mesh.toml"))?;
    let before_path = dir.join("before.toml");
    let observed = if before_path.is_file() {
        let before = load(&before_path)?;
        applied(&before, &after)?
    } else {
        meshform::observe::synthetic::fresh(&after, observed_at())
    };
    let mut observed = observed;
    if dir.file_name().is_some_and(|n| n == "not-ready") {
        not_ready(&mut observed);
    }
    if dir.file_name().is_some_and(|n| n == "ambient") {
        ambient(&mut observed);
    }
    Ok(to_json(&observed))
}

/// The breakage `examples/not-ready/mesh.toml` describes, one per cluster.
fn not_ready(observed: &mut Observed) {
    use meshform::observe::model::{ClusterFacts, ClusterState};
    let mut edit = |cluster: &str, change: &dyn Fn(&mut ClusterFacts)| {
        if let Some(ClusterState::Reachable(facts)) = observed.clusters.get_mut(cluster).map(|c| &mut c.state) {
            if let Some(east_west) = &mut facts.east_west {
                east_west.network = None;
            }
            change(facts);
        }
    };
    edit("us-east", &|f| {
        if let Some(east_west) = &mut f.east_west {
            east_west.addresses.clear();
        }
    });
    edit("us-west", &|f| {
        if let Some(install) = f.installs.get_mut("default") {
            install.cluster_id = Some("Kubernetes".to_string());
            install.injected_cluster_id = None;
        }
    });
    edit("eu-west", &|f| {
        f.root_certs = Some(vec![meshform::objects::sha256_hex(b"eu-west's own root")]);
    });
    edit("eu-central", &|f| {
        f.installs.clear();
        f.root_certs = None;
    });
}

/// `examples/ambient`: west's user applied Istio's ambient sample without
/// its network label, and Istio's gateway controller gave it an address.
fn ambient(observed: &mut Observed) {
    use meshform::observe::model::{K8sGatewayFacts, ListenerFacts, ObjectFacts};
    let Some(facts) = observed.facts_mut("west") else {
        return;
    };
    facts.k8s_gateways.get_or_insert_default().insert(
        meshform::objects::AMBIENT_EAST_WEST_GATEWAY.to_string(),
        K8sGatewayFacts {
            object: ObjectFacts {
                uid: "gateway-west".to_string(),
                resource_version: "1".to_string(),
                managed: false,
                spec_hash: None,
                content_sha256: Some(meshform::objects::content_sha256(
                    &meshform::objects::ambient_gateway_content(&meshform::objects::ambient_gateway_spec()),
                )),
                content_owners: vec!["kubectl".to_string()],
            },
            class: meshform::objects::EAST_WEST_GATEWAY_CLASS.to_string(),
            network: None,
            port_label: None,
            listeners: vec![ListenerFacts {
                name: "mesh".to_string(),
                port: meshform::objects::HBONE_GATEWAY_PORT,
                protocol: "HBONE".to_string(),
                tls_mode: Some("Terminate".to_string()),
                listener_mode: None,
            }],
            spec_addresses: Vec::new(),
            status_addresses: vec!["192.0.2.80".to_string()],
            network_owners: Vec::new(),
        },
    );
}

/// The snapshot of a freshly installed mesh of `mesh_toml`.
pub fn fresh_snapshot(mesh_toml: &Path) -> Result<String, String> {
    Ok(to_json(&meshform::observe::synthetic::fresh(
        &load(mesh_toml)?,
        observed_at(),
    )))
}

/// The clusters of `after` once `before` has been applied to them.
fn applied(before: &Topology, after: &Topology) -> Result<Observed, String> {
    let fresh = meshform::observe::synthetic::fresh(before, observed_at());
    let plan = meshform::plan::plan(before, &fresh, &Default::default()).map_err(|e| e.to_string())?;
    let mut observed = meshform::plan::simulate::simulate(&fresh, &plan, TOKEN_LIFETIME);
    // The snapshot is of the new file's mesh: same clusters, read under its names.
    observed.mesh = after.mesh.name.clone();
    observed.namespace = after.mesh.namespace.clone();
    // A network move starts with Istio reinstalled for the new network
    // (`global.network`); meshform then relabels and re-attaches.
    meshform::observe::synthetic::reinstall_for(&mut observed, after);
    Ok(observed)
}

fn observed_at() -> Timestamp {
    OBSERVED_AT.parse().expect("a valid timestamp")
}

fn load(path: &Path) -> Result<Topology, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let name = path.display().to_string();
    meshform::topology::check(&name, &text)
        .into_result()
        .map(|(topology, _warnings)| topology)
        .map_err(|problems| format!("{:?}", miette::Report::new(problems)))
}

fn to_json(observed: &Observed) -> String {
    let mut json = serde_json::to_string_pretty(observed).expect("an observation serialises");
    json.push('\n');
    json
}

fn main() -> Result<(), String> {
    let examples = Path::new("examples");
    for dir in scenario_dirs(examples) {
        let path = dir.join("observed.json");
        std::fs::write(&path, scenario_snapshot(&dir)?).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    let path = examples.join("observed.json");
    std::fs::write(&path, fresh_snapshot(Path::new("mesh.toml.example"))?)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
