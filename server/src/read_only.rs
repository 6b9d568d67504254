//! Read-only mode (`--read-only-mode`, ZooKeeper's `readonlymode.enabled`): a node cut off from
//! the quorum — no leader known, or as leader no quorum's acknowledgement, for
//! [`CUT_OFF_AFTER`] — keeps serving reads of its last applied
//! tree to the clients that asked for it (`canBeReadOnly` in their ConnectRequest), and only to
//! them:
//! - such a client gets a *local* session, known to this node alone and never replicated (a
//!   negative id, [`is_local_session`]), and a ConnectResponse with `readOnly` set;
//! - its writes, `sync` and `reconfig` are answered `NotReadOnly`; its reads are served without a
//!   read point (the client asked for possibly stale data); its `closeSession` just ends it;
//! - a client that did not ask, or that brings an existing session, is refused (the connection is
//!   closed without an answer, as ZooKeeper does), so nobody else's reads lose linearizability;
//! - once a leader is known again, every read-only connection is closed: its client reconnects
//!   and gets a real session (ZooKeeper's clients, and synod's, then send session id 0).
//!
//! `isro` answers `ro` and `srvr`'s mode is `read-only` meanwhile.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use synod_raft_store::state_machine::lock;

use crate::node::Node;

/// How long a node must know no leader before it serves read-only clients (ZooKeeper waits
/// max(2 s, tickTime) in LOOKING).
pub const CUT_OFF_AFTER: Duration = Duration::from_secs(2);
/// How often the node looks.
const INTERVAL: Duration = Duration::from_millis(100);

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

    /// A new local session id of node `node_id`: negative, unique on this node, and unlike any
    /// other node's.
    pub fn new_local_session(&self, node_id: u64) -> i64 {
        let n = self.last_local.fetch_add(1, Ordering::Relaxed) + 1;
        -(((node_id as i64) << 40) | (n & ((1 << 40) - 1)))
    }
}

/// Whether this node knows a working leader: a follower one it follows, a leader that a
/// quorum acknowledged within [`CUT_OFF_AFTER`] (an openraft 0.9 leader cut off from its
/// followers does not step down by itself).
fn quorum_reachable(node: &Node) -> bool {
    let m = node.raft.metrics().borrow().clone();
    match m.current_leader {
        None => false,
        Some(l) if l == node.id => m
            .millis_since_quorum_ack
            .is_some_and(|ms| ms < CUT_OFF_AFTER.as_millis() as u64),
        Some(_) => true,
    }
}

/// Runs until the node stops (returns at once without `--read-only-mode`).
pub async fn read_only_loop(node: Arc<Node>) {
    if !node.cfg.read_only_mode {
        return;
    }
    let mut stopping = node.stopping.subscribe();
    let mut leaderless_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        let has_leader = quorum_reachable(&node);
        let active = node.read_only.active();
        if has_leader {
            leaderless_since = None;
            if active {
                node.read_only.active.store(false, Ordering::Release);
                let closed = lock(&node.replica)
                    .observer
                    .kill_conns_where(|e| is_local_session(e.session_id), "the quorum is back");
                tracing::warn!(
                    closed,
                    "read-only mode ends: a leader is known again; read-only clients reconnect"
                );
            }
            continue;
        }
        let since = *leaderless_since.get_or_insert_with(Instant::now);
        if !active && since.elapsed() >= CUT_OFF_AFTER {
            node.read_only.active.store(true, Ordering::Release);
            tracing::warn!(
                after_ms = since.elapsed().as_millis() as u64,
                "read-only mode: no leader known; serving reads to clients that allow read-only"
            );
        }
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
