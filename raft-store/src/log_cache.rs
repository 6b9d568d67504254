//! The tail of the Raft log in memory: the entries appended most recently, so that replication
//! (one read per follower) and apply read them back without a RocksDB iterator and a decode per
//! read. The log store ([`crate::log_store`]) owns it and keeps it a faithful copy of the log's
//! tail; RocksDB stays the only source of truth (whatever the cache does not hold is read there).

use std::collections::VecDeque;

use openraft::Entry;

use crate::types::TypeConfig;

/// See the module documentation. Bounded by [`TailCache::max_bytes`] of encoded entries.
#[derive(Debug)]
pub struct TailCache {
    /// Consecutive entries of the log's tail with their encoded sizes.
    /// Invariant: `entries[i].0.log_id.index == entries[0].0.log_id.index + i`.
    entries: VecDeque<(Entry<TypeConfig>, usize)>,
    /// Sum of the encoded sizes in `entries`.
    bytes: usize,
    /// Upper bound on `bytes`, except that the newest entry is kept even if it alone is larger
    /// (it is bounded by the largest entry a proposal may make).
    max_bytes: usize,
}

impl TailCache {
    /// An empty cache holding at most `max_bytes` of encoded entries.
    pub fn new(max_bytes: usize) -> TailCache {
        TailCache {
            entries: VecDeque::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// Index of the first entry held, if any.
    fn first(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    /// Index one past the last entry held, if any.
    fn end(&self) -> Option<u64> {
        self.entries.back().map(|(e, _)| e.log_id.index + 1)
    }

    /// `entry` (of `size` encoded bytes) was appended to the log, durably. An entry that does
    /// not follow the tail held (the first after opening, after a hole, or after a truncation
    /// that removed everything) starts the cache over; one that overwrites a cached entry (never
    /// on openraft's contract: a conflicting suffix is truncated first) does too, so the cache
    /// never disagrees with the log. The entry at `u64::MAX` is never held (no index follows it).
    pub fn appended(&mut self, entry: Entry<TypeConfig>, size: usize) {
        let index = entry.log_id.index;
        if index == u64::MAX {
            self.clear();
            return;
        }
        if self.end() != Some(index) {
            debug_assert!(
                self.end().is_none_or(|end| index > end),
                "appended entry {index} overlaps the cached tail (ends before {:?}); truncate first",
                self.end()
            );
            self.clear();
        }
        self.entries.push_back((entry, size));
        self.bytes += size;
        while self.bytes > self.max_bytes && self.entries.len() > 1 {
            if let Some((_, s)) = self.entries.pop_front() {
                self.bytes -= s;
            }
        }
    }

    /// The entries with index in `[start, end)`, if the cache holds all of them; `None` if the
    /// log must be read instead. (Ranges open at the end are the log's to answer: the cache does
    /// not know whether the log holds entries past its own.)
    pub fn get(&self, start: u64, end: u64) -> Option<Vec<Entry<TypeConfig>>> {
        let (first, tail_end) = (self.first()?, self.end()?);
        if start < first || end > tail_end {
            return None;
        }
        if end <= start {
            return Some(Vec::new());
        }
        let from = usize::try_from(start - first).ok()?;
        let to = usize::try_from(end - first).ok()?;
        Some(
            self.entries
                .range(from..to)
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }

    /// Every entry from `index` on was deleted from the log (a conflicting suffix).
    pub fn truncate(&mut self, index: u64) {
        while self.end().is_some_and(|end| end > index) {
            if let Some((_, s)) = self.entries.pop_back() {
                self.bytes -= s;
            }
        }
    }

    /// Every entry up to `index` (inclusive) was purged from the log.
    pub fn purge(&mut self, index: u64) {
        while self.first().is_some_and(|first| first <= index) {
            if let Some((_, s)) = self.entries.pop_front() {
                self.bytes -= s;
            }
        }
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::log_id;
    use openraft::EntryPayload;

    use super::*;

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: log_id(1, 1, index),
            payload: EntryPayload::Blank,
        }
    }

    fn indexes(v: Option<Vec<Entry<TypeConfig>>>) -> Option<Vec<u64>> {
        v.map(|v| v.iter().map(|e| e.log_id.index).collect())
    }

    fn filled(range: std::ops::Range<u64>, max_bytes: usize) -> TailCache {
        let mut c = TailCache::new(max_bytes);
        for i in range {
            c.appended(entry(i), 10);
        }
        c
    }

    #[test]
    fn serves_only_ranges_it_holds_whole() {
        let c = filled(5..10, 1000);
        assert_eq!(indexes(c.get(5, 10)), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(indexes(c.get(7, 10)), Some(vec![7, 8, 9]));
        assert_eq!(indexes(c.get(10, 10)), Some(vec![]));
        assert_eq!(indexes(c.get(8, 8)), Some(vec![]));
        // Before the first entry held, or past the tail: the log must answer.
        assert_eq!(indexes(c.get(4, 6)), None);
        assert_eq!(indexes(c.get(9, 11)), None);
        assert_eq!(indexes(TailCache::new(1000).get(0, 1)), None);
    }

    #[test]
    fn stays_within_its_bound_keeping_the_newest() {
        let c = filled(0..100, 55);
        assert_eq!(indexes(c.get(95, 100)), Some(vec![95, 96, 97, 98, 99]));
        assert_eq!(indexes(c.get(94, 100)), None);
        let mut big = TailCache::new(5);
        big.appended(entry(1), 50);
        assert_eq!(indexes(big.get(1, 2)), Some(vec![1]));
        big.appended(entry(2), 50);
        assert_eq!(indexes(big.get(1, 3)), None);
        assert_eq!(indexes(big.get(2, 3)), Some(vec![2]));
    }

    #[test]
    fn truncate_and_purge_follow_the_log() {
        let mut c = filled(1..10, 1000);
        c.truncate(7);
        assert_eq!(indexes(c.get(1, 7)), Some((1..7).collect()));
        assert_eq!(indexes(c.get(1, 8)), None);
        c.appended(entry(7), 10);
        assert_eq!(indexes(c.get(6, 8)), Some(vec![6, 7]));
        c.purge(3);
        assert_eq!(indexes(c.get(3, 8)), None);
        assert_eq!(indexes(c.get(4, 8)), Some(vec![4, 5, 6, 7]));
        c.truncate(0);
        assert_eq!(indexes(c.get(4, 5)), None);
        // After everything went, the next append starts the tail afresh.
        c.appended(entry(20), 10);
        assert_eq!(indexes(c.get(20, 21)), Some(vec![20]));
        c.purge(100);
        assert_eq!(indexes(c.get(20, 21)), None);
    }

    #[test]
    fn an_append_that_skips_ahead_starts_over() {
        let mut c = filled(1..4, 1000);
        c.appended(entry(10), 10);
        assert_eq!(indexes(c.get(1, 4)), None);
        assert_eq!(indexes(c.get(10, 11)), Some(vec![10]));
        // The last index of all is never held.
        c.appended(entry(11), 10);
        c.appended(entry(u64::MAX), 10);
        assert_eq!(indexes(c.get(10, 12)), None);
    }
}
