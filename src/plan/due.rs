//! When a plan made later would hold an action that one made now does not,
//! with nothing changed in the clusters: a reader token's rotation falls due,
//! or a replaced token's grace period ends. A controller sleeps until then
//! (kube-rs's requeue-after) instead of polling. Pure, like the planner: the
//! same facts and the same arithmetic the planner judges those times by.

use jiff::Timestamp;

use super::{Options, secret_target};
use crate::observe::model::{Observed, TokenFacts};
use crate::topology::{TokenMode, Topology};

/// The second at which a bound token issued at `issued` and expiring at
/// `expires` is rotated, `percent` of its life in.
pub(super) fn rotation_second(issued: Timestamp, expires: Timestamp, percent: u8) -> i64 {
    let life = expires.as_second() - issued.as_second();
    issued.as_second() + life * i64::from(percent) / 100
}

/// The earliest moment after the observation at which planning again would
/// find something new to do: a rotation or the end of a grace period. `None`
/// when nothing is waiting on the clock.
pub fn next_due(desired: &Topology, observed: &Observed, options: &Options) -> Option<Timestamp> {
    let now = observed.observed_at.as_second();
    let percent = desired.mesh.tokens.rotate_at_percent;
    let mut due: Option<i64> = None;
    let mut consider = |second: i64| {
        if second > now {
            due = Some(due.map_or(second, |d| d.min(second)));
        }
    };
    for holder in desired.primaries() {
        let Some(facts) = observed.facts(&holder.name) else {
            continue;
        };
        for secret in facts.remote_secrets.values().filter(|s| s.object.managed) {
            let TokenFacts::Bound { issued_at, expires_at } = secret.token else {
                continue;
            };
            if desired.mesh.tokens.mode == TokenMode::Request {
                consider(rotation_second(issued_at, expires_at, percent));
            }
            // A binding of this holder in the peer that this token is not
            // bound to is a replaced token's: revoked once the grace ends
            // (plan/revocation.rs).
            let Some(peer) = secret_target(secret).and_then(|p| observed.facts(p)) else {
                continue;
            };
            let replaced = peer.reader_bindings.values().any(|b| {
                b.object.managed
                    && b.holder.as_deref() == Some(holder.name.as_str())
                    && secret.token_binding_uid.as_deref() != Some(b.object.uid.as_str())
            });
            if replaced {
                consider(issued_at.as_second() + options.revoke_grace_seconds);
            }
        }
    }
    due.and_then(|s| Timestamp::from_second(s).ok())
}
