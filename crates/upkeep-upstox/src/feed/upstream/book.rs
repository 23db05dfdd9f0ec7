//! The subscription book: what every consumer asked for, the union streamed upstream,
//! and which connection carries each key. Pure (no I/O); the pool holds it in a mutex.
//!
//! - A key is streamed in the **richest** mode any consumer wants (ltpc < option_greeks
//!   < full < full_d30; a richer frame carries everything a poorer mode shows), so the
//!   local side may have to reshape a frame for a consumer that asked for less.
//! - Each consumer's wish is kept separately, so one consumer's `unsub` drops a key
//!   upstream only when no other consumer still wants it.
//! - New keys go to the least-loaded connection on which they fit the per-connection key
//!   limits (reference 7.4); a request that cannot fit anywhere changes nothing and is
//!   refused with [`SubscribeError::Overflow`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{ConsumerId, KeysPerMode, SubscribeError};
use crate::feed::SubscriptionMode;

/// Order of richness (a richer mode's frame holds the poorer one's fields).
pub(crate) fn rank(mode: SubscriptionMode) -> u8 {
    match mode {
        SubscriptionMode::Ltpc => 0,
        SubscriptionMode::OptionGreeks => 1,
        SubscriptionMode::Full => 2,
        SubscriptionMode::FullD30 => 3,
    }
}

fn richest(modes: impl Iterator<Item = SubscriptionMode>) -> Option<SubscriptionMode> {
    modes.max_by_key(|m| rank(*m))
}

/// Per-connection key limits (reference 7.4): `(alone, combined)`. "Alone" applies when
/// the connection streams only that mode, "combined" when it streams several.
pub fn key_limits(mode: SubscriptionMode) -> (usize, usize) {
    match mode {
        SubscriptionMode::Ltpc => (5_000, 2_000),
        SubscriptionMode::OptionGreeks => (3_000, 2_000),
        SubscriptionMode::Full => (2_000, 1_500),
        SubscriptionMode::FullD30 => (50, 1_500),
    }
}

/// Checks one connection's per-mode counts against the limits; the first mode over its
/// limit and that limit on failure.
pub(crate) fn check_counts(counts: &KeysPerMode) -> Result<(), (SubscriptionMode, usize)> {
    let used: Vec<(SubscriptionMode, usize)> = counts.iter().filter(|(_, n)| *n > 0).collect();
    let alone = used.len() == 1;
    for (mode, n) in used {
        let (a, c) = key_limits(mode);
        let max = if alone { a } else { c };
        if n > max {
            return Err((mode, max));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Book {
    /// key -> consumer -> the mode that consumer asked for.
    wants: HashMap<String, BTreeMap<ConsumerId, SubscriptionMode>>,
    /// What each connection should stream: key -> mode.
    conns: Vec<BTreeMap<String, SubscriptionMode>>,
    /// key -> the connection that carries it.
    placed: HashMap<String, usize>,
    /// Keys wanted but on no connection: they did not fit when the allowance shrank
    /// (placed again as soon as room frees).
    unplaced: BTreeSet<String>,
    /// Connections the plan allows now (`conns[..allowed]` may carry keys).
    allowed: usize,
}

impl Book {
    pub(crate) fn new(max_connections: usize, allowed: usize) -> Self {
        Self {
            conns: vec![BTreeMap::new(); max_connections],
            allowed: allowed.clamp(1, max_connections.max(1)),
            ..Self::default()
        }
    }

    /// Connections keys may be placed on now.
    pub(crate) fn allowed(&self) -> usize {
        self.allowed
    }

    /// Wanted keys that are on no connection (see [`Book::rebalance`]).
    pub(crate) fn unplaced(&self) -> usize {
        self.unplaced.len()
    }

    /// Adopts a new allowance (the plan changed) and spreads the keys over it: keys on
    /// connections beyond it move to the allowed ones, and the allowed ones are evened
    /// out (no connection carries more than one key over another's count, limits
    /// permitting). A key that fits nowhere any more is left unplaced (and placed as
    /// soon as room frees). Returns the connections whose keys changed.
    pub(crate) fn rebalance(&mut self, allowed: usize) -> Vec<usize> {
        let allowed = allowed.clamp(1, self.conns.len().max(1));
        self.allowed = allowed;
        let mut touched = Vec::new();
        let mut moving: Vec<(String, SubscriptionMode)> = Vec::new();
        for i in allowed..self.conns.len() {
            if !self.conns[i].is_empty() {
                touched.push(i);
                moving.extend(std::mem::take(&mut self.conns[i]));
            }
        }
        // Even out: take keys off the fullest connections until none is more than one
        // over the mean.
        let total: usize = self.conns[..allowed]
            .iter()
            .map(BTreeMap::len)
            .sum::<usize>()
            + moving.len();
        let share = total.div_ceil(allowed);
        for i in 0..allowed {
            while self.conns[i].len() > share {
                let Some((k, m)) = self.conns[i].pop_last() else {
                    break;
                };
                touched.push(i);
                moving.push((k, m));
            }
        }
        let unplaced = std::mem::take(&mut self.unplaced);
        for k in unplaced {
            if let Some(m) = self
                .wants
                .get(&k)
                .and_then(|w| richest(w.values().copied()))
            {
                moving.push((k, m));
            }
        }
        for (k, m) in moving {
            self.placed.remove(&k);
            match self.least_loaded(m, allowed) {
                Some(i) => {
                    self.conns[i].insert(k.clone(), m);
                    self.placed.insert(k, i);
                    touched.push(i);
                }
                None => {
                    self.unplaced.insert(k);
                }
            }
        }
        touched.sort_unstable();
        touched.dedup();
        touched
    }

    /// The least-loaded of the first `allowed` connections where one more key in `mode`
    /// fits the limits.
    fn least_loaded(&self, mode: SubscriptionMode, allowed: usize) -> Option<usize> {
        let mut order: Vec<usize> = (0..allowed.min(self.conns.len())).collect();
        order.sort_by_key(|i| (self.conns[*i].len(), *i));
        order.into_iter().find(|i| {
            let mut c = self.counts(*i);
            c.add(mode, 1);
            check_counts(&c).is_ok()
        })
    }

    /// Places unplaced keys where room has freed.
    fn place_unplaced(&mut self, touched: &mut Vec<usize>) {
        let waiting: Vec<String> = self.unplaced.iter().cloned().collect();
        for k in waiting {
            let Some(m) = self
                .wants
                .get(&k)
                .and_then(|w| richest(w.values().copied()))
            else {
                self.unplaced.remove(&k);
                continue;
            };
            if let Some(i) = self.least_loaded(m, self.allowed) {
                self.unplaced.remove(&k);
                self.conns[i].insert(k.clone(), m);
                self.placed.insert(k, i);
                touched.push(i);
            }
        }
    }

    /// What connection `i` should stream now.
    pub(crate) fn desired(&self, i: usize) -> Option<&BTreeMap<String, SubscriptionMode>> {
        self.conns.get(i)
    }

    pub(crate) fn counts(&self, i: usize) -> KeysPerMode {
        let mut k = KeysPerMode::default();
        if let Some(c) = self.conns.get(i) {
            for m in c.values() {
                k.add(*m, 1);
            }
        }
        k
    }

    /// The keys a consumer asked for, with its modes.
    pub(crate) fn of_consumer(&self, who: ConsumerId) -> BTreeMap<String, SubscriptionMode> {
        self.wants
            .iter()
            .filter_map(|(k, w)| w.get(&who).map(|m| (k.clone(), *m)))
            .collect()
    }

    /// Number of distinct keys streamed upstream.
    pub(crate) fn total_keys(&self) -> usize {
        self.placed.len()
    }

    /// `sub` for one consumer (a key it already has changes to `mode`), using at most
    /// `allowed` connections. All or nothing.
    pub(crate) fn subscribe(
        &mut self,
        who: ConsumerId,
        mode: SubscriptionMode,
        keys: &[String],
        allowed: usize,
        plus: bool,
    ) -> Result<Vec<usize>, SubscribeError> {
        if mode == SubscriptionMode::FullD30 && !plus {
            return Err(SubscribeError::PlusOnly);
        }
        let mut next = self.clone();
        for k in keys {
            next.wants.entry(k.clone()).or_default().insert(who, mode);
        }
        let touched = next.settle(keys, allowed)?;
        *self = next;
        Ok(touched)
    }

    /// `change_mode` for one consumer: only keys it already has change.
    pub(crate) fn change_mode(
        &mut self,
        who: ConsumerId,
        mode: SubscriptionMode,
        keys: &[String],
        allowed: usize,
        plus: bool,
    ) -> Result<Vec<usize>, SubscribeError> {
        let mine: Vec<String> = keys
            .iter()
            .filter(|k| self.wants.get(*k).is_some_and(|w| w.contains_key(&who)))
            .cloned()
            .collect();
        self.subscribe(who, mode, &mine, allowed, plus)
    }

    /// `unsub` for one consumer. Never fails: a key no one wants any more leaves its
    /// connection; a key others still want keeps streaming (in a poorer mode if that
    /// fits, else as it was).
    pub(crate) fn unsubscribe(&mut self, who: ConsumerId, keys: &[String]) -> Vec<usize> {
        for k in keys {
            if let Some(w) = self.wants.get_mut(k) {
                w.remove(&who);
                if w.is_empty() {
                    self.wants.remove(k);
                }
            }
        }
        let mut touched = self.settle_lenient(keys);
        if !self.unplaced.is_empty() {
            self.place_unplaced(&mut touched);
            touched.sort_unstable();
            touched.dedup();
        }
        touched
    }

    /// Drops everything a consumer asked for.
    pub(crate) fn release(&mut self, who: ConsumerId) -> Vec<usize> {
        let keys: Vec<String> = self
            .wants
            .iter()
            .filter(|(_, w)| w.contains_key(&who))
            .map(|(k, _)| k.clone())
            .collect();
        self.unsubscribe(who, &keys)
    }

    /// Places `keys` after their wishes changed; fails if a connection would break a limit.
    fn settle(&mut self, keys: &[String], allowed: usize) -> Result<Vec<usize>, SubscribeError> {
        let allowed = allowed.clamp(1, self.conns.len().max(1));
        let mut touched = Vec::new();
        for k in keys {
            let want = self.wants.get(k).and_then(|w| richest(w.values().copied()));
            match (want, self.placed.get(k).copied()) {
                (None, Some(i)) => {
                    self.conns[i].remove(k);
                    self.placed.remove(k);
                    touched.push(i);
                }
                (None, None) => {
                    self.unplaced.remove(k);
                }
                (Some(mode), Some(i)) => {
                    if self.conns[i].insert(k.clone(), mode) != Some(mode) {
                        touched.push(i);
                    }
                }
                (Some(mode), None) => {
                    let Some(i) = self.least_loaded(mode, allowed) else {
                        let (_, limit) = key_limits(mode);
                        return Err(SubscribeError::Overflow {
                            mode,
                            connections: allowed,
                            limit,
                            streamed: self.placed.len(),
                        });
                    };
                    self.conns[i].insert(k.clone(), mode);
                    self.placed.insert(k.clone(), i);
                    self.unplaced.remove(k);
                    touched.push(i);
                }
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for i in &touched {
            if let Err((mode, limit)) = check_counts(&self.counts(*i)) {
                return Err(SubscribeError::Overflow {
                    mode,
                    connections: allowed,
                    limit,
                    streamed: self.placed.len(),
                });
            }
        }
        Ok(touched)
    }

    /// Like [`Book::settle`] for removals: a mode change that would break a limit is not
    /// made (the key keeps its richer mode).
    fn settle_lenient(&mut self, keys: &[String]) -> Vec<usize> {
        let mut touched = Vec::new();
        for k in keys {
            let want = self.wants.get(k).and_then(|w| richest(w.values().copied()));
            let Some(i) = self.placed.get(k).copied() else {
                if want.is_none() {
                    self.unplaced.remove(k);
                }
                continue;
            };
            match want {
                None => {
                    self.conns[i].remove(k);
                    self.placed.remove(k);
                    touched.push(i);
                }
                Some(mode) => {
                    let old = self.conns[i].insert(k.clone(), mode);
                    if old == Some(mode) {
                        continue;
                    }
                    if check_counts(&self.counts(i)).is_err() {
                        if let Some(old) = old {
                            self.conns[i].insert(k.clone(), old);
                        }
                        continue;
                    }
                    touched.push(i);
                }
            }
        }
        touched.sort_unstable();
        touched.dedup();
        touched
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SubscriptionMode::*;

    fn keys(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("NSE_EQ|{prefix}{i}")).collect()
    }

    #[test]
    fn one_consumers_unsub_keeps_a_key_another_still_wants() {
        let mut b = Book::new(2, 2);
        let k = keys("A", 1);
        b.subscribe(ConsumerId(1), Ltpc, &k, 2, false).unwrap();
        b.subscribe(ConsumerId(2), Ltpc, &k, 2, false).unwrap();
        b.unsubscribe(ConsumerId(1), &k);
        assert_eq!(b.total_keys(), 1);
        b.unsubscribe(ConsumerId(2), &k);
        assert_eq!(b.total_keys(), 0);
    }

    #[test]
    fn a_key_streams_in_the_richest_mode_wanted_and_falls_back_when_that_consumer_leaves() {
        let mut b = Book::new(2, 2);
        let k = keys("A", 1);
        b.subscribe(ConsumerId(1), Ltpc, &k, 2, false).unwrap();
        b.subscribe(ConsumerId(2), Full, &k, 2, false).unwrap();
        let i = b.placed[&k[0]];
        assert_eq!(b.desired(i).unwrap()[&k[0]], Full);
        b.release(ConsumerId(2));
        assert_eq!(b.desired(i).unwrap()[&k[0]], Ltpc);
    }

    #[test]
    fn keys_spread_over_the_allowed_connections() {
        let mut b = Book::new(5, 5);
        b.subscribe(ConsumerId(1), Ltpc, &keys("A", 10), 2, false)
            .unwrap();
        assert_eq!(b.counts(0).total(), 5);
        assert_eq!(b.counts(1).total(), 5);
        assert_eq!(b.counts(2).total(), 0);
    }

    #[test]
    fn overflow_is_refused_whole_and_changes_nothing() {
        let mut b = Book::new(2, 2);
        b.subscribe(ConsumerId(1), Full, &keys("A", 4_000), 2, false)
            .unwrap();
        let err = b
            .subscribe(ConsumerId(2), Full, &keys("B", 1), 2, false)
            .unwrap_err();
        assert!(matches!(err, SubscribeError::Overflow { mode: Full, .. }));
        assert_eq!(b.total_keys(), 4_000);
        assert!(b.of_consumer(ConsumerId(2)).is_empty());
    }

    #[test]
    fn full_d30_needs_plus() {
        let mut b = Book::new(5, 5);
        assert_eq!(
            b.subscribe(ConsumerId(1), FullD30, &keys("A", 1), 2, false),
            Err(SubscribeError::PlusOnly)
        );
        assert!(
            b.subscribe(ConsumerId(1), FullD30, &keys("A", 1), 5, true)
                .is_ok()
        );
    }

    #[test]
    fn change_mode_touches_only_the_consumers_own_keys() {
        let mut b = Book::new(2, 2);
        let k = keys("A", 2);
        b.subscribe(ConsumerId(1), Ltpc, &k[..1], 2, false).unwrap();
        b.subscribe(ConsumerId(2), Ltpc, &k[1..], 2, false).unwrap();
        b.change_mode(ConsumerId(1), Full, &k, 2, false).unwrap();
        assert_eq!(b.of_consumer(ConsumerId(1))[&k[0]], Full);
        assert!(!b.of_consumer(ConsumerId(1)).contains_key(&k[1]));
        assert_eq!(b.of_consumer(ConsumerId(2))[&k[1]], Ltpc);
    }

    #[test]
    fn a_larger_allowance_spreads_the_keys_and_a_smaller_one_gathers_them() {
        let mut b = Book::new(5, 2);
        b.subscribe(ConsumerId(1), Ltpc, &keys("A", 10), b.allowed(), false)
            .unwrap();
        assert_eq!((b.counts(0).total(), b.counts(1).total()), (5, 5));
        let touched = b.rebalance(5);
        assert_eq!(touched, vec![0, 1, 2, 3, 4]);
        assert!((0..5).all(|i| b.counts(i).total() == 2));
        // New keys go on the least-loaded of all five.
        b.subscribe(ConsumerId(2), Ltpc, &keys("B", 5), b.allowed(), false)
            .unwrap();
        assert!((0..5).all(|i| b.counts(i).total() == 3));
        b.rebalance(2);
        assert_eq!(b.counts(0).total() + b.counts(1).total(), 15);
        assert!((2..5).all(|i| b.counts(i).total() == 0));
        assert_eq!(b.total_keys(), 15);
        assert_eq!(b.unplaced(), 0);
    }

    #[test]
    fn keys_that_fit_nowhere_after_a_shrink_wait_unplaced_until_room_frees() {
        let mut b = Book::new(5, 5);
        b.subscribe(ConsumerId(1), Full, &keys("A", 5_000), 5, false)
            .unwrap();
        b.rebalance(2);
        // Two connections take 2,000 full keys each.
        assert_eq!(b.total_keys(), 4_000);
        assert_eq!(b.unplaced(), 1_000);
        assert!((2..5).all(|i| b.counts(i).total() == 0));
        // A consumer leaving frees room: the waiting keys are placed.
        b.unsubscribe(ConsumerId(1), &keys("A", 5_000)[..1_500]);
        assert_eq!(b.unplaced(), 0);
        assert_eq!(b.total_keys(), 3_500);
    }
}
