//! The controller's Prometheus metrics: a prometheus-client registry, filled
//! from a round's [`MeshView`] and its ending. The gauges that describe the
//! mesh are replaced whole each round, so a pair or a blocker that went away
//! is gone from the next scrape; a scrape never sees a half-replaced set.
//! Names are fixed: alert rules and dashboards are written against them.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::sync::atomic::AtomicU64;

use jiff::Timestamp;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::view::MeshView;

/// What a scrape's Content-Type says the body is (OpenMetrics 1.0, as
/// prometheus-client writes it).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    cluster: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PairLabels {
    holder: String,
    peer: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PendingLabels {
    kind: String,
    destructive: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    scope: String,
    check: String,
    result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

type Seconds = Gauge<f64, AtomicU64>;

/// How a round ended, for the duration histogram's `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundResult {
    /// Finished with every cluster read (what waits for a person may remain).
    Success,
    /// Finished, but some cluster could not be read.
    Incomplete,
    /// Could not finish: an action failed, the lock was held, no plan.
    Failed,
}

impl RoundResult {
    fn label(self) -> &'static str {
        match self {
            RoundResult::Success => "success",
            RoundResult::Incomplete => "incomplete",
            RoundResult::Failed => "failed",
        }
    }
}

pub struct Metrics {
    /// Writers (a round's update) hold it exclusively, readers (a scrape)
    /// shared: one round's figures are seen together.
    gate: RwLock<Registry>,
    cluster_reachable: Family<ClusterLabels, Gauge>,
    cluster_last_observed: Family<ClusterLabels, Seconds>,
    pair_attached: Family<PairLabels, Gauge>,
    token_expiry: Family<PairLabels, Seconds>,
    pending: Family<PendingLabels, Gauge>,
    blockers: Family<CodeLabels, Gauge>,
    checks: Family<CheckLabels, Gauge>,
    duration: Family<ResultLabels, Histogram, fn() -> Histogram>,
    last_success: Seconds,
    leader: Gauge,
}

fn duration_histogram() -> Histogram {
    // 0.1 s to about 7 min: a converged round of a small mesh to a big
    // mesh's round that waited for the apply lock.
    Histogram::new(exponential_buckets(0.1, 2.0, 13))
}

impl Default for Metrics {
    fn default() -> Self {
        let metrics = Metrics {
            gate: RwLock::new(Registry::default()),
            cluster_reachable: Family::default(),
            cluster_last_observed: Family::default(),
            pair_attached: Family::default(),
            token_expiry: Family::default(),
            pending: Family::default(),
            blockers: Family::default(),
            checks: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            last_success: Seconds::default(),
            leader: Gauge::default(),
        };
        {
            let mut r = metrics.gate.write().expect("a fresh lock");
            r.register(
                "meshform_cluster_reachable",
                "Whether the cluster could be read in the last round (1) or not (0)",
                metrics.cluster_reachable.clone(),
            );
            r.register(
                "meshform_cluster_last_observed_timestamp_seconds",
                "When the cluster was last read (Unix seconds)",
                metrics.cluster_last_observed.clone(),
            );
            r.register(
                "meshform_pair_attached",
                "Whether the holder primary's istiod has a remote secret for the peer (1) or not (0)",
                metrics.pair_attached.clone(),
            );
            r.register(
                "meshform_reader_token_expiry_timestamp_seconds",
                "When the reader token in the holder's remote secret for the peer expires (Unix seconds; bounded tokens only)",
                metrics.token_expiry.clone(),
            );
            r.register(
                "meshform_pending_actions",
                "Writes the last round's plan left undone, by action and whether it needs apply --allow-detach",
                metrics.pending.clone(),
            );
            r.register(
                "meshform_blockers",
                "Blockers of the last round's plan, by code",
                metrics.blockers.clone(),
            );
            r.register(
                "meshform_check_results",
                "Lines of meshform check for the last round, by scope, check and result",
                metrics.checks.clone(),
            );
            r.register(
                "meshform_reconcile_duration_seconds",
                "How long rounds took, by how they ended",
                metrics.duration.clone(),
            );
            r.register(
                "meshform_last_success_timestamp_seconds",
                "When a round last finished with every cluster read (Unix seconds; 0: never)",
                metrics.last_success.clone(),
            );
            r.register(
                "meshform_leader",
                "Whether this replica reconciles (1: it leads, or runs without election) or waits (0)",
                metrics.leader.clone(),
            );
        }
        metrics
    }
}

impl Metrics {
    /// The registry as OpenMetrics text.
    pub fn encode(&self) -> String {
        let registry = self.gate.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    pub fn leading(&self, leading: bool) {
        let _gate = self.gate.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.leader.set(i64::from(leading));
    }

    /// A round ended: its duration always; the mesh's gauges when it got as
    /// far as a plan (`view`), each clusters' last read time carried from
    /// `last_observed`.
    pub fn round(
        &self,
        result: RoundResult,
        seconds: f64,
        view: Option<&MeshView>,
        last_observed: &BTreeMap<String, Timestamp>,
    ) {
        let _gate = self.gate.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.duration
            .get_or_create(&ResultLabels {
                result: result.label().into(),
            })
            .observe(seconds);
        if result == RoundResult::Success {
            self.last_success.set(unix(Timestamp::now()));
        }
        let Some(view) = view else { return };
        self.cluster_reachable.clear();
        self.cluster_last_observed.clear();
        for c in &view.clusters {
            let labels = ClusterLabels {
                cluster: c.cluster.clone(),
            };
            self.cluster_reachable
                .get_or_create(&labels)
                .set(i64::from(c.reachable));
            if let Some(at) = last_observed.get(&c.cluster) {
                self.cluster_last_observed.get_or_create(&labels).set(unix(*at));
            }
        }
        self.pair_attached.clear();
        self.token_expiry.clear();
        for p in &view.pairs {
            let labels = PairLabels {
                holder: p.holder.clone(),
                peer: p.peer.clone(),
            };
            self.pair_attached.get_or_create(&labels).set(i64::from(p.attached));
            if let Some(at) = p.token_expires_at {
                self.token_expiry.get_or_create(&labels).set(unix(at));
            }
        }
        self.pending.clear();
        for a in &view.pending {
            let labels = PendingLabels {
                kind: a.kind.clone(),
                destructive: a.destructive.to_string(),
            };
            self.pending.get_or_create(&labels).inc();
        }
        self.blockers.clear();
        for b in &view.blockers {
            self.blockers.get_or_create(&CodeLabels { code: b.code.clone() }).inc();
        }
        self.checks.clear();
        for c in &view.checks {
            let labels = CheckLabels {
                scope: c.scope.into(),
                check: c.check.clone(),
                result: c.result.clone(),
            };
            self.checks.get_or_create(&labels).inc();
        }
    }
}

fn unix(at: Timestamp) -> f64 {
    at.as_millisecond() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::status::view::PairView;

    fn view(pairs: &[(&str, &str)]) -> MeshView {
        MeshView {
            mesh: "mesh".into(),
            observed_at: Timestamp::UNIX_EPOCH,
            clusters: Vec::new(),
            pairs: pairs
                .iter()
                .map(|(holder, peer)| PairView {
                    holder: holder.to_string(),
                    peer: peer.to_string(),
                    attached: true,
                    token_expires_at: Some(Timestamp::from_second(1_800_000_000).unwrap()),
                })
                .collect(),
            pending: Vec::new(),
            blockers: Vec::new(),
            checks: Vec::new(),
        }
    }

    #[test]
    fn a_pair_that_went_away_is_gone_from_the_next_scrape() {
        let metrics = Metrics::default();
        let last = BTreeMap::new();
        metrics.round(RoundResult::Success, 0.5, Some(&view(&[("a", "b"), ("a", "c")])), &last);
        let text = metrics.encode();
        assert!(
            text.contains(r#"meshform_pair_attached{holder="a",peer="c"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"meshform_reader_token_expiry_timestamp_seconds{holder="a",peer="c"} 1800000000"#),
            "{text}"
        );
        metrics.round(RoundResult::Success, 0.5, Some(&view(&[("a", "b")])), &last);
        let text = metrics.encode();
        assert!(
            text.contains(r#"meshform_pair_attached{holder="a",peer="b"} 1"#),
            "{text}"
        );
        assert!(!text.contains(r#"peer="c""#), "{text}");
        // A round that saw nothing leaves the mesh's gauges, and counts itself.
        metrics.round(RoundResult::Failed, 2.0, None, &last);
        let text = metrics.encode();
        assert!(
            text.contains(r#"meshform_pair_attached{holder="a",peer="b"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"meshform_reconcile_duration_seconds_count{result="failed"} 1"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
