//! Resuming a session's watches after a reconnect (setWatches / setWatches2): one-shot watches
//! fire at once for what changed since the zxid the client had seen (as ZooKeeper's
//! DataTree.setWatches does); persistent watches are replayed every event they missed from the
//! node's [`crate::watch::history`], in zxid order, before any later event. A node that cannot
//! replay them all never resumes them with a gap: the client is sent to a member that can, or,
//! if none can, its session is expired (see [`Conn::cannot_replay`]).

use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use synod_proto::records::SetWatches2;
use synod_proto::{EventType, Request};
use synod_raft_store::state_machine::lock;
use synod_raft_store::NodeId;

use crate::node::Node;
use crate::peer::{PeerRequest, PeerResponse};
use crate::pipeline::apply::{notification_frame, Applier};
use crate::pipeline::conn::{Conn, COMMIT_TIMEOUT};
use crate::pipeline::pending::Completion;
use crate::watch::manager::WatchKind;

/// How long a node waits for another member to say how far back its event history reaches
/// (a resuming client waits meanwhile; a member that does not answer is taken as unable).
const HISTORY_CALL_TIMEOUT: Duration = Duration::from_secs(2);

impl Conn {
    /// A resuming session's persistent watches missed events that this node's history no longer
    /// holds (it restarted from a snapshot, installed one, or the session was away for more
    /// than [`crate::watch::history::WATCH_HISTORY`] events). Resuming anyway would lose those events
    /// silently, so the connection closes instead: if another member's history reaches back
    /// far enough, the client's next server can replay them; if none does, the session is
    /// expired first, so that the client learns `SessionExpired` on its next connect and
    /// rebuilds its state, as every ZooKeeper client does.
    pub async fn cannot_replay(&self, since: i64) {
        let conn = self.id;
        let since_hex = format!("{since:#x}");
        if let Some(member) = member_with_history(&self.node, since).await {
            tracing::info!(
                conn,
                relative_zxid = %since_hex,
                member,
                "closing connection: its persistent watches missed events this node's history \
                 no longer holds; another member can replay them"
            );
            return;
        }
        tracing::warn!(
            conn,
            session = format_args!("{:#x}", self.session_id),
            relative_zxid = %since_hex,
            "expiring session: its persistent watches missed events that no member's history \
             holds any more"
        );
        let (origin, done) = self.propose_close();
        if !matches!(
            tokio::time::timeout(COMMIT_TIMEOUT, done).await,
            Ok(Ok(Completion::Write { .. }))
        ) {
            // Its fate is unknown: the client reconnects, resumes and meets this check again.
            lock(&self.node.replica)
                .observer
                .pending
                .fail(origin.request, "gave up".into());
        }
    }

    /// Re-registers a reconnecting session's watches, firing at once what changed after the
    /// zxid the client had seen: one event per one-shot watch (as ZooKeeper's
    /// DataTree.setWatches does), and every missed event of a persistent watch, in zxid order,
    /// from this node's recent history (ZooKeeper sends those none). Missed events go first, all
    /// of it under the replica lock, so later events follow them.
    pub fn set_watches(
        &self,
        tree: &synod_raft_store::DataTree,
        observer: &mut Applier,
        w: SetWatches2,
    ) -> bool {
        let rel = w.relative_zxid;
        let conn = self.id;
        let mut fired = Vec::new();
        for p in w.data_watches {
            match tree.node(&p) {
                None => fired.push((EventType::NodeDeleted, p)),
                Some(n) if n.mzxid > rel => fired.push((EventType::NodeDataChanged, p)),
                Some(_) => observer.watches.add(conn, WatchKind::Data, &p),
            }
        }
        for p in w.exist_watches {
            match tree.node(&p) {
                Some(_) => fired.push((EventType::NodeCreated, p)),
                None => observer.watches.add(conn, WatchKind::Data, &p),
            }
        }
        for p in w.child_watches {
            match tree.node(&p) {
                None => fired.push((EventType::NodeDeleted, p)),
                Some(n) if n.pzxid > rel => fired.push((EventType::NodeChildrenChanged, p)),
                Some(_) => observer.watches.add(conn, WatchKind::Child, &p),
            }
        }
        let persistent = w
            .persistent_watches
            .into_iter()
            .map(|p| (WatchKind::Persistent, p));
        let recursive = w
            .persistent_recursive_watches
            .into_iter()
            .map(|p| (WatchKind::Recursive, p));
        let resumed: Vec<(WatchKind, String)> = persistent.chain(recursive).collect();
        // One pass over the history: each missed event once (even when several of the
        // session's watches match it), in the order it happened.
        let mut missed = Vec::new();
        if rel > 0 && !resumed.is_empty() && !observer.history.missed(rel, &resumed, &mut missed) {
            // Checked before (see `cannot_replay`), but the history may have moved on since:
            // resuming without the missed events would lose them silently, so the client goes
            // elsewhere (and meets that check) instead.
            tracing::info!(
                conn,
                relative_zxid = format_args!("{rel:#x}"),
                "closing connection: its persistent watches resume from before this node's event \
                 history"
            );
            return false;
        }
        for (kind, p) in &resumed {
            observer.watches.add(conn, *kind, p);
        }
        let missed = missed
            .into_iter()
            .map(|(z, ev)| notification_frame(z, ev.event_type, &ev.path));
        // A one-shot watch fires from the current state, not from one change: no zxid (-1).
        let fired = fired
            .into_iter()
            .map(|(t, p)| notification_frame(-1, t, &p));
        // Bounded by the request and the node's event history, not by the event budget: a
        // resuming client refused its replay would be dropped again on every reconnect.
        missed.chain(fired).all(|frame| self.out.replay(frame))
    }
}

/// The zxid after which a setWatches request resumes persistent watches, if it resumes any: their
/// missed events must be replayed from the node's event history.
pub fn resumes_persistent_watches(r: &Request) -> Option<i64> {
    match r {
        Request::SetWatches2(w)
            if w.relative_zxid > 0
                && !(w.persistent_watches.is_empty()
                    && w.persistent_recursive_watches.is_empty()) =>
        {
            Some(w.relative_zxid)
        }
        _ => None,
    }
}

/// Another member whose watch-event history holds every event after `since`, if one answers
/// within [`HISTORY_CALL_TIMEOUT`] (see [`crate::watch::history::EventHistory::floor`]).
pub async fn member_with_history(node: &Node, since: i64) -> Option<NodeId> {
    let members: Vec<(NodeId, String)> = {
        let m = node.raft.metrics().borrow().clone();
        m.membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != node.id)
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect()
    };
    let mut asks: FuturesUnordered<_> = members
        .into_iter()
        .map(|(id, addr)| async move {
            let r = node
                .pool
                .call(id, &addr, PeerRequest::HistoryFloor, HISTORY_CALL_TIMEOUT)
                .await;
            (id, r)
        })
        .collect();
    while let Some((id, r)) = asks.next().await {
        if let Ok(PeerResponse::HistoryFloor(Some(floor))) = r {
            if floor <= since {
                return Some(id);
            }
        }
    }
    None
}
