//! The plan: plain, serialisable data that apply executes and renderers show.
//!
//! The action vocabulary lives here: [`ActionKind`] with its order in a
//! phase ([`ActionKind::rank`]), its [`Effect`] and symbol, the object it
//! names, whether it is destructive or forces, and the peer it concerns
//! (whether it is maintenance or safe unattended is `holds.rs`). A
//! new action is added here first; the compiler then points at the rest: the
//! planner phase that plans it (`plan/`), its effect on an observation
//! (`plan/simulate.rs`), its execution (`apply/`), its line in `check`
//! (`check/cluster.rs`), and the tests' labels and ownership property
//! (`tests/support/plan_fixtures.rs`, `tests/plan.rs`). One thing it
//! cannot point at: the published schema (`UPDATE_SCHEMAS=1 cargo test
//! --test schemas`, which `tests/schemas.rs` enforces).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Options;

/// Version of the plan's JSON form; bumped on any breaking change. 2: the
/// plan records its planning choices ([`Plan::options`]) instead of
/// fingerprints of what it saw, since apply plans a saved plan again.
pub const PLAN_FORMAT_VERSION: u32 = 2;

/// An ordered list of actions that takes the clusters from what was
/// observed to what the topology declares, with what the planner noticed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Plan {
    pub format_version: u32,
    /// The meshform version that made the plan.
    pub meshform_version: String,
    pub mesh: String,
    pub namespace: String,
    /// In execution order: by phase, then by cluster and object.
    pub actions: Vec<Action>,
    /// Per-cluster summary of what the actions amount to.
    pub changes: Vec<Change>,
    /// Blockers, conflicts and warnings.
    pub findings: Vec<Finding>,
    /// Clusters that could not be read (`--skip-unreachable`): nothing is
    /// planned for them or removed on their account.
    pub deferred: Vec<Deferred>,
    /// SHA-256 of the resolved topology the plan was made from (comments
    /// and layout do not count): a saved plan is stale once it changes, as
    /// apply also reads what no action carries from it (token lifetimes).
    pub topology_sha256: String,
    /// The planning choices (command-line flags) the plan was made with:
    /// apply of a saved plan plans again with these and no others, and
    /// refuses unless the same actions come out (`plan/compare.rs`).
    pub options: Options,
}

/// Phases run one after another; a failure stops before the next phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Remove the remote secrets of leaving and re-networked clusters from
    /// every primary, so no istiod keeps a stale view.
    Detach,
    /// Network labels, cross-network gateways and reader accounts: what a
    /// cluster needs in place before its peers attach it.
    Network,
    /// Write remote secrets of new and re-networked clusters into primaries.
    Attach,
    /// Refresh remote secrets (address, CA, token) and restart workloads.
    Update,
}

impl Phase {
    pub const ALL: [Phase; 4] = [Phase::Detach, Phase::Network, Phase::Attach, Phase::Update];

    pub fn title(self) -> &'static str {
        match self {
            Phase::Detach => "detach",
            Phase::Network => "network labels, gateways and reader accounts",
            Phase::Attach => "attach",
            Phase::Update => "updates",
        }
    }
}

/// One write (or delete) in one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Action {
    pub phase: Phase,
    /// The cluster the action writes to.
    pub cluster: String,
    #[serde(flatten)]
    pub kind: ActionKind,
    /// Display only: why the action is planned.
    pub reason: String,
}

/// Preconditions for deleting or replacing an object exactly as observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Precondition {
    pub uid: String,
    pub resource_version: String,
}

/// The action vocabulary of meshform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ActionKind {
    /// Delete the remote secret for `peer` (a detach from this primary).
    DeleteRemoteSecret {
        peer: String,
        name: String,
        precondition: Precondition,
    },
    /// Label the mesh namespace `topology.istio.io/network=<network>`,
    /// creating the namespace when it is missing; on a remote, also annotate
    /// it `topology.istio.io/controlPlaneClusters=<control_plane>`. Both
    /// fields are meshform's, written together.
    SetNetwork {
        network: String,
        previous: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        control_plane: Option<String>,
        /// Take the fields from the other field managers that own them
        /// (`--force-conflicts`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
        /// The network the running sidecars have, while their restart is
        /// owed: written with the label as the `meshform.io/restart-owed-from`
        /// annotation, in the same write, so no run cut short after the
        /// relabel loses the restart (kept in every later write of the
        /// namespace until apply has run the restart).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        restart_owed: Option<String>,
    },
    /// Service account, ClusterRole and binding that primaries use to read
    /// this cluster: the reader account, or on a remote the account its
    /// control plane alone holds a token of.
    EnsureReader {
        spec_hash: String,
        /// The read-only reader account, or (on a remote) the control
        /// plane's, which also writes what istiod writes there.
        #[serde(default, skip_serializing_if = "crate::objects::ReaderScope::is_read")]
        scope: crate::objects::ReaderScope,
        /// The role exists already and is brought up to date.
        #[serde(default)]
        update: bool,
        /// As for `SetNetwork`: the role's rules and the binding's subjects
        /// (an adoption always takes them over).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
    },
    /// The `cross-network-gateway` Gateway exposing this cluster's services
    /// to other networks through the east-west gateway.
    EnsureGateway {
        network: String,
        port: u16,
        spec_hash: String,
        update: bool,
        /// As for `SetNetwork`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
    },
    DeleteGateway {
        precondition: Precondition,
    },
    /// Write the remote secret for `peer` into this primary.
    WriteRemoteSecret {
        peer: String,
        name: String,
        /// The address this primary's istiod will use for the peer's API.
        server: String,
        /// The account in the peer the token comes from: the control plane
        /// of a remote holds the control-plane account's, every other
        /// primary the read-only reader's.
        #[serde(default, skip_serializing_if = "crate::objects::ReaderScope::is_read")]
        account: crate::objects::ReaderScope,
        mode: WriteMode,
        spec_hash: String,
        /// Present when replacing an existing object.
        precondition: Option<Precondition>,
        /// The `--force-conflicts` consent to take fields other managers own.
        /// Apply forces every write of an existing secret regardless: a
        /// create's fields sit in meshform's own "Update" entry.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
    },
    /// The `istiod-gateway` Gateway and `istiod-vs` VirtualService that
    /// expose this primary's istiod on its east-west gateway, for the remotes
    /// on other networks whose control plane it is.
    EnsureIstiodExposure {
        /// The istiod revision routed to; none for the default `istiod`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        revision: Option<String>,
        spec_hash: String,
        update: bool,
        /// As for `SetNetwork`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
    },
    /// Remove them once no remote needs them; each only as observed.
    DeleteIstiodExposure {
        gateway: Option<Precondition>,
        virtual_service: Option<Precondition>,
    },
    /// Restart injected workloads so their sidecars pick up a new network.
    RestartWorkloads {
        /// Only with `apply --restart-workloads`; otherwise shown as a step to run.
        enabled: bool,
        /// Display only: the equivalent command.
        command: String,
        /// Owed by an earlier run's relabel (the namespace's
        /// `meshform.io/restart-owed-from` annotation), not by one this plan makes.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        owed: bool,
    },
    /// Label the network's east-west gateway Service
    /// `topology.istio.io/network=<network>` (that field only): istiod takes
    /// a Service as a network's gateway by this label alone.
    SetGatewayNetwork {
        service: String,
        network: String,
        previous: Option<String>,
        /// As for `SetNetwork`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
    },
    /// Label a Gateway API Gateway of the user's install
    /// `topology.istio.io/network=<network>` (that field only): istiod takes
    /// it as the network's gateway by this label (a sidecar cluster's
    /// auto-passthrough Gateway, or an ambient cluster's `istio-east-west` one).
    SetK8sGatewayNetwork {
        gateway: String,
        network: String,
        previous: Option<String>,
        /// As for `SetNetwork`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
    },
    /// The ambient east-west Gateway `istio-eastwestgateway` (Gateway API),
    /// as Istio's `gen-eastwest-gateway.sh --ambient` renders it, labelled
    /// with the network: meshform's own object, written back when edited.
    EnsureAmbientGateway {
        network: String,
        spec_hash: String,
        update: bool,
        /// As for `SetNetwork`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
    },
    /// Remove meshform's own `istio-eastwestgateway` once no peer is on
    /// another network, or the cluster is no longer ambient.
    DeleteAmbientGateway {
        precondition: Precondition,
    },
    /// Write Istio's plug-in CA Secret `cacerts`: a new intermediate CA for
    /// this primary, its key made by apply and signed by the mesh's root.
    /// The plan carries no key: what is issued is known only in apply.
    WriteCaCerts {
        mode: CaCertsMode,
        /// The common name of the intermediate to issue.
        subject: String,
        /// SHA-256 of the root that signs it: apply refuses another root.
        root_sha256: String,
        /// A rotation's first two stages: SHA-256 of the root being rotated
        /// away from, which `root-cert.pem` holds beside `root_sha256`;
        /// apply refuses another previous root.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous_root_sha256: Option<String>,
        /// Lifetime of the intermediate, from when apply signs it.
        lifetime_seconds: u64,
        /// Display only: when the intermediate would expire, issued at the
        /// observation's time.
        #[schemars(with = "String")]
        expires_about: jiff::Timestamp,
        /// Display only: the intermediate it replaces, and its end.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replaces: Option<Replaced>,
        /// Present when replacing an existing Secret.
        precondition: Option<Precondition>,
    },
    /// Restart istiod so that it takes up the root of `cacerts`: istiod reads
    /// the Secret's files when it starts and afterwards only takes in a new
    /// intermediate under the root it started with.
    RestartIstiod {
        /// Only with `apply --restart-workloads`; otherwise shown as a step to run.
        enabled: bool,
        /// The istiod Deployments of the cluster.
        deployments: Vec<String>,
        /// Display only: the equivalent command.
        command: String,
    },
    /// Delete a binding Secret in this cluster: the API server refuses every
    /// reader token bound to it from then on, wherever that token is.
    RevokeReaderTokens {
        /// The primary that holds (or held) the tokens.
        holder: String,
        name: String,
        /// The holder leaves the mesh (destructive, `--allow-detach`); else
        /// the tokens were replaced and nothing depends on them any more.
        detach: bool,
        precondition: Precondition,
    },
}

/// Why a `cacerts` is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CaCertsMode {
    /// None is there.
    Create,
    /// meshform's intermediate nears its end (`renew_before`).
    Renew,
    /// meshform's `cacerts` is not an intermediate of the mesh's root for
    /// this cluster, or is incomplete.
    Reissue,
    /// Replace a `cacerts` meshform did not write (`--adopt`).
    Adopt,
    /// A root rotation's stage 1: `root-cert.pem` gets the new root beside
    /// the previous one; the intermediate (of the previous root) and its key
    /// are left as they are, unread.
    TrustBoth,
    /// Stage 2: a new intermediate of the new root; `root-cert.pem` keeps
    /// both roots.
    SignWithNew,
    /// Stage 3: a new intermediate of the new root, and `root-cert.pem` the
    /// new root alone.
    DropPrevious,
}

impl CaCertsMode {
    /// The root rotation stage the write belongs to: number and name.
    pub fn rotation_stage(self) -> Option<(u8, &'static str)> {
        match self {
            CaCertsMode::TrustBoth => Some(RotationStage::TrustBoth.numbered()),
            CaCertsMode::SignWithNew => Some(RotationStage::SignWithNew.numbered()),
            CaCertsMode::DropPrevious => Some(RotationStage::DropPrevious.numbered()),
            CaCertsMode::Create | CaCertsMode::Renew | CaCertsMode::Reissue | CaCertsMode::Adopt => None,
        }
    }
}

/// The stages of a root rotation, in order; each is planned only once
/// `check` verifies the one before it everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RotationStage {
    /// Every `cacerts` and every cluster's `istio-ca-root-cert` trusts both roots.
    TrustBoth,
    /// Every intermediate is of the new root.
    SignWithNew,
    /// Every `cacerts` and `istio-ca-root-cert` holds the new root alone.
    DropPrevious,
}

impl RotationStage {
    pub fn numbered(self) -> (u8, &'static str) {
        match self {
            RotationStage::TrustBoth => (1, "trust both roots"),
            RotationStage::SignWithNew => (2, "sign with the new root"),
            RotationStage::DropPrevious => (3, "drop the previous root"),
        }
    }

    pub fn next(self) -> Option<RotationStage> {
        match self {
            RotationStage::TrustBoth => Some(RotationStage::SignWithNew),
            RotationStage::SignWithNew => Some(RotationStage::DropPrevious),
            RotationStage::DropPrevious => None,
        }
    }

    /// "stage 2 of 3 (sign with the new root)".
    pub fn label(self) -> String {
        let (n, name) = self.numbered();
        format!("stage {n} of 3 ({name})")
    }
}

/// An intermediate CA a write replaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Replaced {
    pub sha256: String,
    #[schemars(with = "String")]
    pub not_after: jiff::Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    Create,
    /// Address, CA or content changed.
    Update,
    /// Same content, fresh token.
    Rotate,
    /// Take over an unmanaged secret of the same name (`--adopt`).
    Adopt,
}

impl ActionKind {
    /// Order within a phase and cluster: a namespace before what lives in
    /// it, a Gateway's objects together, remote secrets after the reader
    /// accounts they carry tokens of, revocations last.
    pub fn rank(&self) -> u8 {
        match self {
            ActionKind::DeleteRemoteSecret { .. } => 0,
            ActionKind::SetNetwork { .. } => 1,
            ActionKind::EnsureReader { .. } => 2,
            ActionKind::EnsureGateway { .. }
            | ActionKind::DeleteGateway { .. }
            | ActionKind::SetGatewayNetwork { .. }
            | ActionKind::SetK8sGatewayNetwork { .. }
            | ActionKind::EnsureAmbientGateway { .. }
            | ActionKind::DeleteAmbientGateway { .. }
            | ActionKind::EnsureIstiodExposure { .. }
            | ActionKind::DeleteIstiodExposure { .. } => 3,
            ActionKind::WriteCaCerts { .. } => 4,
            ActionKind::WriteRemoteSecret { .. } => 4,
            ActionKind::RestartIstiod { .. } => 5,
            ActionKind::RestartWorkloads { .. } => 6,
            ActionKind::RevokeReaderTokens { .. } => 7,
        }
    }
}

/// What kind of change an action makes, for its symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Create,
    Update,
    Delete,
    /// A step that changes no object (a restart).
    Run,
}

impl Effect {
    pub fn symbol(self) -> &'static str {
        match self {
            Effect::Create => "+",
            Effect::Update => "~",
            Effect::Delete => "-",
            Effect::Run => "!",
        }
    }
}

impl Action {
    pub fn effect(&self) -> Effect {
        match &self.kind {
            ActionKind::DeleteRemoteSecret { .. }
            | ActionKind::DeleteGateway { .. }
            | ActionKind::DeleteAmbientGateway { .. }
            | ActionKind::DeleteIstiodExposure { .. }
            | ActionKind::RevokeReaderTokens { .. } => Effect::Delete,
            ActionKind::EnsureIstiodExposure { update: true, .. } => Effect::Update,
            ActionKind::EnsureIstiodExposure { update: false, .. } => Effect::Create,
            ActionKind::SetNetwork { previous: None, .. } => Effect::Create,
            ActionKind::SetNetwork { .. } | ActionKind::EnsureReader { update: true, .. } => Effect::Update,
            ActionKind::EnsureReader { update: false, .. } => Effect::Create,
            ActionKind::EnsureGateway { update, .. } => {
                if *update {
                    Effect::Update
                } else {
                    Effect::Create
                }
            }
            ActionKind::WriteRemoteSecret {
                mode: WriteMode::Create,
                ..
            } => Effect::Create,
            ActionKind::WriteRemoteSecret { .. } => Effect::Update,
            ActionKind::RestartWorkloads { .. } | ActionKind::RestartIstiod { .. } => Effect::Run,
            ActionKind::WriteCaCerts {
                mode: CaCertsMode::Create,
                ..
            } => Effect::Create,
            ActionKind::WriteCaCerts { .. } => Effect::Update,
            ActionKind::SetGatewayNetwork { previous: None, .. }
            | ActionKind::SetK8sGatewayNetwork { previous: None, .. }
            | ActionKind::EnsureAmbientGateway { update: false, .. } => Effect::Create,
            ActionKind::SetGatewayNetwork { .. }
            | ActionKind::SetK8sGatewayNetwork { .. }
            | ActionKind::EnsureAmbientGateway { update: true, .. } => Effect::Update,
        }
    }

    /// Deletes something a primary relies on: refused without `--allow-detach`.
    pub fn is_destructive(&self) -> bool {
        matches!(
            self.kind,
            ActionKind::DeleteRemoteSecret { .. } | ActionKind::RevokeReaderTokens { detach: true, .. }
        )
    }

    /// Takes fields over from another field manager (`--force-conflicts`).
    pub fn forces(&self) -> bool {
        matches!(
            self.kind,
            ActionKind::SetNetwork { force: true, .. }
                | ActionKind::SetGatewayNetwork { force: true, .. }
                | ActionKind::SetK8sGatewayNetwork { force: true, .. }
                | ActionKind::EnsureAmbientGateway { force: true, .. }
                | ActionKind::EnsureReader { force: true, .. }
                | ActionKind::EnsureGateway { force: true, .. }
                | ActionKind::EnsureIstiodExposure { force: true, .. }
                | ActionKind::WriteRemoteSecret { force: true, .. }
        )
    }

    /// The peer cluster a remote-secret action is about; for a revocation,
    /// the primary holding the tokens.
    pub fn peer(&self) -> Option<&str> {
        match &self.kind {
            ActionKind::DeleteRemoteSecret { peer, .. } | ActionKind::WriteRemoteSecret { peer, .. } => Some(peer),
            ActionKind::RevokeReaderTokens { holder, .. } => Some(holder),
            _ => None,
        }
    }

    /// Whether executing it writes to a cluster (a disabled restart does not).
    pub fn writes(&self) -> bool {
        !matches!(
            self.kind,
            ActionKind::RestartWorkloads { enabled: false, .. } | ActionKind::RestartIstiod { enabled: false, .. }
        )
    }

    /// A short description of the object acted on, e.g.
    /// `Secret istio-system/istio-remote-secret-b`.
    pub fn object(&self, namespace: &str) -> String {
        match &self.kind {
            ActionKind::DeleteRemoteSecret { name, .. }
            | ActionKind::WriteRemoteSecret { name, .. }
            | ActionKind::RevokeReaderTokens { name, .. } => {
                format!("Secret {namespace}/{name}")
            }
            ActionKind::SetNetwork { .. } => format!("Namespace {namespace}"),
            ActionKind::EnsureReader { scope, .. } => {
                format!("{} {namespace}/{}", scope.describe(), scope.service_account())
            }
            ActionKind::EnsureGateway { .. } | ActionKind::DeleteGateway { .. } => {
                format!("Gateway {namespace}/{}", crate::objects::CROSS_NETWORK_GATEWAY)
            }
            ActionKind::EnsureIstiodExposure { .. } | ActionKind::DeleteIstiodExposure { .. } => format!(
                "Gateway and VirtualService {namespace}/{}, {}",
                crate::objects::ISTIOD_GATEWAY,
                crate::objects::ISTIOD_VIRTUAL_SERVICE
            ),
            ActionKind::RestartWorkloads { .. } => "injected workloads".to_string(),
            ActionKind::WriteCaCerts { .. } => format!("Secret {namespace}/{}", crate::objects::CA_CERTS_SECRET),
            ActionKind::RestartIstiod { deployments, .. } => {
                format!("Deployment {namespace}/{}", deployments.join(", "))
            }
            ActionKind::SetGatewayNetwork { service, .. } => format!("Service {namespace}/{service}"),
            ActionKind::SetK8sGatewayNetwork { gateway, .. } => {
                format!("Gateway.gateway.networking.k8s.io {namespace}/{gateway}")
            }
            ActionKind::EnsureAmbientGateway { .. } | ActionKind::DeleteAmbientGateway { .. } => format!(
                "Gateway.gateway.networking.k8s.io {namespace}/{}",
                crate::objects::AMBIENT_EAST_WEST_GATEWAY
            ),
        }
    }
}

/// Cluster-level meaning of the actions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// The cluster joins the mesh: its remote secret goes into every primary.
    Attach { cluster: String, network: String },
    /// The cluster leaves the mesh: its remote secrets are removed.
    Detach { cluster: String },
    /// Detach, relabel, re-attach: Istio does not pick up a relabel alone.
    NetworkChange { cluster: String, from: String, to: String },
    /// The same cluster (by identity) under a new mesh name: detach + attach.
    Rename { from: String, to: String },
    /// A primary became a remote: it no longer holds remote secrets.
    BecameRemote { cluster: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// Apply refuses the plan until it is fixed.
    Blocker,
    /// An object meshform does not own is in the way; it is left alone.
    Conflict,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Finding {
    pub kind: FindingKind,
    /// Stable identifier, e.g. `meshform::plan::gateway_service_missing`.
    pub code: String,
    pub cluster: Option<String>,
    pub message: String,
    pub help: Option<String>,
    /// A finding of no one cluster (`root_of_trust`): the clusters it
    /// concerns, which `--target` and apply's holds go by.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub concerns: Vec<String>,
}

impl Finding {
    /// The clusters the finding is about.
    pub fn clusters(&self) -> impl Iterator<Item = &str> {
        self.cluster.iter().chain(&self.concerns).map(String::as_str)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Deferred {
    pub cluster: String,
    pub reason: String,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.actions.iter().all(|a| !a.writes())
    }

    pub fn blockers(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.kind == FindingKind::Blocker)
    }

    pub fn phase(&self, phase: Phase) -> impl Iterator<Item = &Action> {
        self.actions.iter().filter(move |a| a.phase == phase)
    }

    /// Actions that write to (or run in) `cluster`, in execution order.
    pub fn actions_in<'a>(&'a self, cluster: &'a str) -> impl Iterator<Item = &'a Action> {
        self.actions.iter().filter(move |a| a.cluster == cluster)
    }

    pub fn findings_of(&self, kind: FindingKind) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.kind == kind)
    }

    /// The counts behind the plan's one-line summary.
    pub fn tally(&self) -> Tally {
        let mut tally = Tally::default();
        for change in &self.changes {
            match change {
                Change::Attach { .. } => tally.attach += 1,
                Change::Detach { .. } => tally.detach += 1,
                Change::NetworkChange { .. } => tally.network_changes += 1,
                Change::Rename { .. } => tally.renames += 1,
                Change::BecameRemote { .. } => tally.became_remote += 1,
            }
        }
        for action in &self.actions {
            if action.writes() {
                tally.writes += 1;
            } else {
                tally.manual_steps += 1;
            }
        }
        tally
    }
}

/// How many of each change a plan makes; see [`Plan::tally`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub attach: usize,
    pub detach: usize,
    pub network_changes: usize,
    pub renames: usize,
    pub became_remote: usize,
    /// Actions that write to a cluster.
    pub writes: usize,
    /// Actions apply will not run without a flag (a disabled workload restart).
    pub manual_steps: usize,
}

impl Change {
    /// Whether the change is about `cluster` (under either name, for a rename).
    pub fn concerns(&self, cluster: &str) -> bool {
        match self {
            Change::Attach { cluster: c, .. }
            | Change::Detach { cluster: c }
            | Change::NetworkChange { cluster: c, .. }
            | Change::BecameRemote { cluster: c } => c == cluster,
            Change::Rename { from, to } => from == cluster || to == cluster,
        }
    }
}
