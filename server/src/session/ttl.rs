//! The leader's own clock for TTL nodes ([`TtlClock`]): a TTL node is reaped only once it has
//! been unmodified for its TTL by the wall clock (ZooKeeper's rule, on the node's mtime) *and*
//! by this leader's monotonic clock, counted from when the leader first saw the node's current
//! version (or took over). A step of the leader's wall clock (NTP, an operator, a VM resumed) can
//! then delay a reap but never bring one forward: five minutes ahead, a 60 s TTL node still lives
//! its 60 s. A new leader restarts every TTL from its takeover, as it does session deadlines.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use synod_raft_store::tree::Name;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct TtlClock {
    /// Each childless TTL node's mzxid when first seen at that version, and when.
    seen: HashMap<Name, (i64, Instant)>,
    /// Whether this node led at the previous check.
    was_leader: bool,
}

impl TtlClock {
    /// One check at `now` of every childless TTL node `(path, mzxid, ttl_ms)`; returns those
    /// whose TTL has passed on this clock. `leading`: whether this node leads now (a follower
    /// forgets everything, so that its leadership starts every TTL afresh).
    pub fn check(
        &mut self,
        now: Instant,
        leading: bool,
        ttl_nodes: Vec<(Name, i64, i64)>,
    ) -> HashSet<Name> {
        let took_over = leading && !self.was_leader;
        self.was_leader = leading;
        if !leading || took_over {
            self.seen.clear();
        }
        if !leading {
            return HashSet::new();
        }
        let mut due = HashSet::new();
        let mut seen = HashMap::with_capacity(ttl_nodes.len());
        for (path, mzxid, ttl_ms) in ttl_nodes {
            let since = match self.seen.get(&path) {
                Some((z, at)) if *z == mzxid => *at,
                _ => now,
            };
            if now.saturating_duration_since(since) > Duration::from_millis(ttl_ms.max(0) as u64) {
                due.insert(path.clone());
            }
            seen.insert(path, (mzxid, since));
        }
        // Deleted or modified-to-childful nodes drop out; the map never outgrows the tree.
        self.seen = seen;
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(path: &str, mzxid: i64, ttl: i64) -> (Name, i64, i64) {
        (Name::from(path), mzxid, ttl)
    }

    #[test]
    fn a_ttl_counts_from_when_the_leader_saw_the_version() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut c = TtlClock::default();
        assert!(c.check(t0, true, vec![node("/a", 5, 1000)]).is_empty());
        assert!(c.check(ms(900), true, vec![node("/a", 5, 1000)]).is_empty());
        assert!(c
            .check(ms(1001), true, vec![node("/a", 5, 1000)])
            .contains("/a"));
        // Modified: counts again from now.
        assert!(c
            .check(ms(1100), true, vec![node("/a", 9, 1000)])
            .is_empty());
        assert!(c
            .check(ms(2000), true, vec![node("/a", 9, 1000)])
            .is_empty());
        assert!(c
            .check(ms(2101), true, vec![node("/a", 9, 1000)])
            .contains("/a"));
    }

    #[test]
    fn a_takeover_restarts_every_ttl() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut c = TtlClock::default();
        c.check(t0, true, vec![node("/a", 5, 1000)]);
        assert!(c
            .check(ms(500), false, vec![node("/a", 5, 1000)])
            .is_empty());
        assert!(c
            .check(ms(1500), true, vec![node("/a", 5, 1000)])
            .is_empty());
        assert!(c
            .check(ms(2400), true, vec![node("/a", 5, 1000)])
            .is_empty());
        assert!(c
            .check(ms(2501), true, vec![node("/a", 5, 1000)])
            .contains("/a"));
    }
}
