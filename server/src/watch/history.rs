//! The event history: the last [`WATCH_HISTORY`] watch events applied on this node, in zxid
//! order, from which a session that resumes persistent watches after a reconnect is replayed
//! what it missed (ZooKeeper sends those none; DESIGN.md §1.5 promises none is lost). What this
//! node cannot replay, it never pretends to: see [`crate::watch::resume`].
//!
//! The events are a persistent vector (`imbl`): a replay takes the part after its zxid in
//! O(log n) under the replica lock and filters and encodes it later, off the lock, as its
//! connection's writer sends it (see [`crate::watch::resume::Replay`]).

use synod_raft_store::Event;

/// How many recent events a node keeps to replay to reconnecting persistent watchers (about
/// 100 bytes each).
pub const WATCH_HISTORY: usize = 65_536;

/// Events as (zxid, event), in non-decreasing zxid order; clones share their structure.
pub type Events = imbl::Vector<(i64, Event)>;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct EventHistory {
    /// The last [`WATCH_HISTORY`] events applied here. Invariant: in non-decreasing zxid order.
    events: Events,
    /// Every event with a zxid above this is in `events` (`None` until this node has applied an
    /// entry since start-up or since a snapshot replaced the tree: nothing is known then).
    floor: Option<i64>,
}

impl EventHistory {
    /// Records an event of the change at `zxid` (apply calls it in zxid order).
    pub fn record(&mut self, zxid: i64, ev: &synod_raft_store::Event) {
        debug_assert!(
            self.events.back().is_none_or(|(z, _)| *z <= zxid),
            "events out of zxid order"
        );
        if self.events.len() == WATCH_HISTORY {
            if let Some((z, _)) = self.events.pop_front() {
                self.floor = self.floor.map(|f| f.max(z));
            }
        }
        self.events.push_back((zxid, ev.clone()));
    }

    /// An entry was applied at `index`: the first since start-up or a snapshot starts the
    /// history (its events and every later one are recorded).
    pub fn entry_applied(&mut self, index: u64) {
        if self.floor.is_none() {
            self.floor = Some(synod_raft_store::types::applied_zxid(
                index.saturating_sub(1),
            ));
        }
    }

    /// A snapshot replaced the tree: the events it covers were never applied here.
    pub fn clear(&mut self) {
        self.events.clear();
        self.floor = None;
    }

    /// Whether every event after `since` is here (a persistent watch resumed from `since` can
    /// be replayed).
    pub fn reaches(&self, since: i64) -> bool {
        self.floor.is_some_and(|f| f <= since)
    }

    /// Every event with a zxid above this is here; `None` if nothing is known.
    pub fn floor(&self) -> Option<i64> {
        self.floor
    }

    /// Every event after `since`, in the order applied, as a copy that shares the history's
    /// structure (O(log n)); `None` if some may be missing: the history does not reach back to
    /// `since`.
    pub fn after(&self, since: i64) -> Option<Events> {
        if !self.reaches(since) {
            return None;
        }
        let start = self
            .events
            .binary_search_by(|(z, _)| {
                if *z <= since {
                    std::cmp::Ordering::Less
                } else {
                    std::cmp::Ordering::Greater
                }
            })
            .unwrap_or_else(|i| i);
        Some(self.events.clone().split_off(start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_proto::EventType;

    #[test]
    fn history_reaches_back_only_as_far_as_it_was_kept() {
        let mut h = EventHistory::default();
        assert!(!h.reaches(0), "nothing is known before an entry is applied");
        // The first entry applied is index 4: events of index 3 and before are unknown.
        h.entry_applied(4);
        assert_eq!(h.floor(), Some(synod_raft_store::types::applied_zxid(3)));
        assert!(!h.reaches(3 << 16));
        assert!(h.reaches(synod_raft_store::types::applied_zxid(3)));
        assert!(h.reaches(4 << 16));
        h.clear();
        assert!(!h.reaches(4 << 16), "a snapshot install forgets it all");
    }

    #[test]
    fn after_gives_the_events_past_a_zxid_in_order() {
        let mut h = EventHistory::default();
        h.entry_applied(1);
        let open: synod_raft_store::acl::SharedAcl = synod_proto::Acl::open_unsafe().into();
        // One multi (one zxid) deletes two children; then another change.
        h.record(
            10,
            &Event::new(EventType::NodeDeleted, "/a/b", open.clone()),
        );
        h.record(
            10,
            &Event::new(EventType::NodeDeleted, "/a/c", open.clone()),
        );
        h.record(11, &Event::new(EventType::NodeDataChanged, "/a/b2", open));
        let paths = |since| -> Vec<(i64, String)> {
            h.after(since)
                .expect("reaches")
                .iter()
                .map(|(z, e)| (*z, e.path.to_string()))
                .collect()
        };
        assert_eq!(paths(5).len(), 3);
        assert_eq!(paths(10), [(11, "/a/b2".to_string())]);
        assert!(paths(11).is_empty());
    }
}
