//! Read-only mode (`--read-only-mode`, ZooKeeper's `readonlymode.enabled`): a node cut off from
//! the quorum ([`crate::cut_off`]) keeps serving reads of its last applied tree to the clients
//! that asked for it (`canBeReadOnly` in their ConnectRequest), and only to them:
//! - such a client gets a *local* session, known to this node alone and never replicated (a
//!   negative id, [`is_local_session`]), and a ConnectResponse with `readOnly` set;
//! - its writes, `sync` and `reconfig` are answered `NotReadOnly`; its reads are served without a
//!   read point (the client asked for possibly stale data); its `closeSession` just ends it;
//! - a client that did not ask, or that brings an existing session, is refused (the connection is
//!   closed without an answer, as ZooKeeper does), so nobody else's reads lose linearizability;
//! - once the quorum is back, every read-only connection is closed: its client reconnects
//!   and gets a real session (ZooKeeper's clients, and synod's, then send session id 0).
//!
//! `isro` answers `ro` and `srvr`'s mode is `read-only` meanwhile.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

/// Whether a session id is a read-only (local) session's: global ids are zxids, never negative.
pub fn is_local_session(session_id: i64) -> bool {
    session_id < 0
}

/// A node's read-only state.
#[derive(Default)]
pub struct ReadOnly {
    /// Serving read-only clients now.
    active: AtomicBool,
    /// The last local session number handed out (ids are `-(node id << 40 | number)`).
    last_local: AtomicI64,
}

impl ReadOnly {
    /// Whether the node serves read-only clients now.
    pub fn active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Starts or ends read-only mode ([`crate::cut_off::cut_off_loop`] does); returns whether
    /// it was on.
    pub(crate) fn set_active(&self, on: bool) -> bool {
        self.active.swap(on, Ordering::AcqRel)
    }

    /// A new local session id of node `node_id`: negative, unique on this node, and unlike any
    /// other node's.
    pub fn new_local_session(&self, node_id: u64) -> i64 {
        let n = self.last_local.fetch_add(1, Ordering::Relaxed) + 1;
        -(((node_id as i64) << 40) | (n & ((1 << 40) - 1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_sessions_are_negative_distinct_and_per_node() {
        let (a, b) = (ReadOnly::default(), ReadOnly::default());
        let ids: Vec<i64> = (0..3).map(|_| a.new_local_session(1)).collect();
        assert!(ids.iter().all(|id| is_local_session(*id)), "{ids:?}");
        assert_eq!(
            ids.iter().collect::<std::collections::BTreeSet<_>>().len(),
            3
        );
        assert!(!ids.contains(&b.new_local_session(2)));
        // Global session ids are zxids: never local.
        assert!(!is_local_session(synod_raft_store::types::session_id(
            1 << 40,
            7
        )));
    }
}
