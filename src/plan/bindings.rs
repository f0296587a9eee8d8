//! The binding Secrets observed, placed by the (holder, peer) pair whose
//! token they stand for, and which of them a token that stays is bound to.
//!
//! A mesh of N primaries holds a binding per remote secret, about N². A table
//! of every binding's UID, built for every plan and looked up once per remote
//! secret by attach and again by revocation, was a third of a converged
//! plan's walk. Here a binding is placed once at its pair, and a remote secret
//! is checked against the binding of its own pair, found by position, as
//! attach walks the pairs: no string is hashed. What that misses (a token
//! bound elsewhere, a binding whose holder is not a reachable primary) falls
//! back to sets of UIDs, exact but only as large as what they hold. Nothing
//! here is iterated in hash order. It judges nothing: attach and revocation
//! say what a match means.

use std::cell::OnceCell;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use crate::observe::model::{BindingFacts, ClusterFacts, Observed};

pub(super) struct Bindings<'a> {
    /// Peers per primary in `pairs` (the reachable clusters).
    peers: usize,
    /// Primary position × `peers` + peer position → 1 + the index (in walk
    /// order) of the first binding placed at that pair; 0 for none. Empty
    /// when the mesh has too few bindings for a dense table to pay.
    pairs: Vec<u32>,
    /// Bindings after the first at a pair (a replaced token's, until it is
    /// revoked), by pair.
    more: HashMap<usize, Vec<u32>>,
    /// UID of each binding in the reachable clusters, in walk order (cluster
    /// by name, binding by name).
    uids: Vec<&'a str>,
    /// Whether a token in a remote secret that stays was matched to it at
    /// its pair, by the same index.
    referenced: Vec<bool>,
    /// Binding UIDs of tokens in remote secrets that stay and were not
    /// matched at their pair: a binding is referenced too when its UID is here.
    stray: HashSet<&'a str>,
    /// Every binding UID observed, in any cluster; built only when a token
    /// was not matched at its pair and the question is whether it is bound.
    every: OnceCell<HashSet<&'a str>>,
    observed: &'a Observed,
    /// How many bindings were observed, in any cluster.
    pub(super) count: usize,
}

/// How a token in a remote secret that stays was matched to its binding.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Matched {
    /// To a binding at its own pair: the binding exists.
    AtPair,
    /// Not at its pair: whether it exists is for [`Bindings::observed`].
    Elsewhere,
    /// It is bound to nothing.
    Unbound,
}

impl<'a> Bindings<'a> {
    /// `reachable`: the reachable clusters in walk order, each with the
    /// bindings to place; `holder` gives a binding's holder's position among
    /// the reachable primaries (`primaries` of them), when it is one.
    pub(super) fn new(
        observed: &'a Observed,
        reachable: &[&'a ClusterFacts],
        primaries: usize,
        mut holder: impl FnMut(&'a BindingFacts) -> Option<usize>,
    ) -> Self {
        let count = observed
            .clusters
            .values()
            .filter_map(|c| c.facts())
            .map(|f| f.reader_bindings.len())
            .sum();
        let peers = reachable.len();
        let walked: usize = reachable.iter().map(|f| f.reader_bindings.len()).sum();
        // Dense while it is about the size of the bindings themselves: a mesh
        // of many clusters and few bindings places none, and every token
        // takes the sets' way.
        let dense = primaries.saturating_mul(peers) <= 4 * walked + 4096 && walked < u32::MAX as usize;
        let mut pairs = if dense {
            vec![0u32; primaries * peers]
        } else {
            Vec::new()
        };
        let mut more: HashMap<usize, Vec<u32>> = HashMap::new();
        let mut uids = Vec::with_capacity(walked);
        for (at, facts) in reachable.iter().enumerate() {
            for binding in facts.reader_bindings.values() {
                let index = uids.len() as u32;
                uids.push(binding.object.uid.as_str());
                if !dense {
                    continue;
                }
                if let Some(primary) = holder(binding) {
                    let pair = primary * peers + at;
                    match pairs[pair] {
                        0 => pairs[pair] = index + 1,
                        _ => more.entry(pair).or_default().push(index),
                    }
                }
            }
        }
        Bindings {
            peers,
            pairs,
            more,
            referenced: vec![false; uids.len()],
            uids,
            stray: HashSet::new(),
            every: OnceCell::new(),
            observed,
            count,
        }
    }

    /// A token that stays, in the remote secret of the primary at `primary`
    /// for the peer at `peer` (positions as given to [`Bindings::new`]),
    /// bound to `uid`: the binding it matches is marked referenced.
    pub(super) fn token_at(&mut self, primary: usize, peer: usize, uid: Option<&'a str>) -> Matched {
        let Some(uid) = uid else { return Matched::Unbound };
        if let Some(&first) = self.pairs.get(primary * self.peers + peer) {
            let pair = primary * self.peers + peer;
            let extra = || self.more.get(&pair).into_iter().flatten().copied();
            let found = std::iter::once(first)
                .filter(|i| *i > 0)
                .map(|i| i - 1)
                .chain(extra())
                .find(|i| self.uids[*i as usize] == uid);
            if let Some(index) = found {
                self.referenced[index as usize] = true;
                return Matched::AtPair;
            }
        }
        self.stray.insert(uid);
        Matched::Elsewhere
    }

    /// A token that stays in a remote secret not at a pair (another name, a
    /// remote's, the primary's own): whatever it is bound to is referenced.
    pub(super) fn token_elsewhere(&mut self, uid: Option<&'a str>) {
        if let Some(uid) = uid {
            self.stray.insert(uid);
        }
    }

    /// Some cluster holds a binding of this UID.
    pub(super) fn observed(&self, uid: &str) -> bool {
        self.every
            .get_or_init(|| {
                let facts = || self.observed.clusters.values().filter_map(|c| c.facts());
                let mut every = HashSet::with_capacity(self.count);
                every.extend(
                    facts()
                        .flat_map(|f| f.reader_bindings.values())
                        .map(|b| b.object.uid.as_str()),
                );
                every
            })
            .contains(uid)
    }

    /// Whether a token that stays is bound to the binding at `index` (walk order).
    pub(super) fn referenced(&self, index: usize) -> bool {
        self.referenced[index] || (!self.stray.is_empty() && self.stray.contains(self.uids[index]))
    }
}
