//! Resuming a session's watches after a reconnect (setWatches / setWatches2): one-shot watches
//! fire at once for what changed since the zxid the client had seen (as ZooKeeper's
//! DataTree.setWatches does); persistent watches are replayed every event they missed from the
//! node's [`crate::watch::history`], in zxid order, before any later event. A node that cannot
//! replay them all never resumes them with a gap: the client is sent to a member that can, or,
//! if none can, its session is expired (see [`Conn::cannot_replay`]).

use std::time::Duration;

use bytes::Bytes;

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use synod_proto::mode::perms;
use synod_proto::records::SetWatches2;
use synod_proto::{EventType, Id, Request};
use synod_raft_store::state_machine::lock;
use synod_raft_store::NodeId;

use crate::node::Node;
use crate::peer::{PeerRequest, PeerResponse};
use crate::pipeline::apply::{may_hear, notification_frame, Applier};
use crate::pipeline::conn::{Conn, COMMIT_TIMEOUT};
use crate::pipeline::pending::Completion;
use crate::watch::history::Events;
use crate::watch::manager::{persistent_match, WatchKind};

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
    /// from this node's recent history (ZooKeeper sends those none). Only what `auth` may READ
    /// is told, and a one-shot watch is left only where `exists` and `getData` would leave one:
    /// on a missing node or one `auth` may READ (ZooKeeper registers every one; used up
    /// untold by the owner's next change, as ZooKeeper's are, such a watch let `checkWatches`
    /// time another tenant's changes). Under the replica lock this costs O(log n) plus the
    /// request's own paths: the missed events are queued as one [`Replay`], filtered and encoded
    /// by the connection's writer, ahead of any later event.
    pub fn set_watches(
        &self,
        tree: &synod_raft_store::DataTree,
        observer: &mut Applier,
        w: SetWatches2,
        auth: &[Id],
    ) -> bool {
        let rel = w.relative_zxid;
        let conn = self.id;
        // Tenants as of now: the replay is filtered with them off the lock.
        let auth = tree.tenants().resolve(auth);
        let readable =
            |p: &str, n: &synod_raft_store::Node| tree.may_read_node(p, n, perms::READ, &auth);
        let mut fired = Vec::new();
        for p in w.data_watches {
            match tree.node(&p) {
                None => fired.push((EventType::NodeDeleted, p)),
                Some(n) if !readable(&p, n) => {}
                Some(n) if n.mzxid > rel => fired.push((EventType::NodeDataChanged, p)),
                Some(_) => observer.watches.add(conn, WatchKind::Data, &p),
            }
        }
        for p in w.exist_watches {
            match tree.node(&p) {
                None => observer.watches.add(conn, WatchKind::Data, &p),
                Some(n) if !readable(&p, n) => {}
                Some(_) => fired.push((EventType::NodeCreated, p)),
            }
        }
        for p in w.child_watches {
            match tree.node(&p) {
                None => fired.push((EventType::NodeDeleted, p)),
                Some(n) if !readable(&p, n) => {}
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
        let mut missed = Events::new();
        if rel > 0 && !resumed.is_empty() {
            match observer.history.after(rel) {
                Some(events) => missed = events,
                None => {
                    // Checked before (see `cannot_replay`), but the history may have moved on
                    // since: resuming without the missed events would lose them silently, so
                    // the client goes elsewhere (and meets that check) instead.
                    tracing::info!(
                        conn,
                        relative_zxid = format_args!("{rel:#x}"),
                        "closing connection: its persistent watches resume from before this \
                         node's event history"
                    );
                    return false;
                }
            }
        }
        for (kind, p) in &resumed {
            observer.watches.add(conn, *kind, p);
        }
        if missed.is_empty() && fired.is_empty() {
            return true;
        }
        self.out
            .replay(Box::new(Replay::new(missed, resumed, auth.to_vec(), fired)))
    }
}

/// What a resuming session is told before any later event, built lazily: the writer takes one
/// frame at a time ([`Replay::frames`]), so a replay holds no encoded copy of its events and no
/// lock, only a shared slice of the history, whose size [`WATCH_HISTORY`] bounds.
///
/// [`WATCH_HISTORY`]: crate::watch::history::WATCH_HISTORY
#[derive(Debug)]
pub struct Replay {
    /// The history's events after the session's last zxid (shared with the history).
    missed: Events,
    /// The persistent watches resumed: which of `missed` they would have been sent.
    watches: Vec<(WatchKind, String)>,
    /// The connection's identities, tenants resolved when the session resumed: an event it may
    /// not READ is left out.
    auth: Vec<Id>,
    /// One-shot watches that fire at once, from the current state (no zxid), after the missed
    /// events; bounded by the request that resumed them.
    fired: Vec<(EventType, String)>,
}

impl Replay {
    /// `missed` events filtered by `watches` and `auth`, then the one-shot `fired` ones.
    pub fn new(
        missed: Events,
        watches: Vec<(WatchKind, String)>,
        auth: Vec<Id>,
        fired: Vec<(EventType, String)>,
    ) -> Replay {
        Replay {
            missed,
            watches,
            auth,
            fired,
        }
    }

    /// The frames to send, in order: each missed event once (even when several watches match
    /// it) if the connection may READ its node as of the change, then the one-shot firings.
    pub fn frames(&self) -> impl Iterator<Item = Bytes> + '_ {
        let missed = self
            .missed
            .iter()
            .filter(|(_, ev)| {
                self.watches
                    .iter()
                    .any(|(k, p)| persistent_match(*k, p, ev.event_type, &ev.path))
                    && may_hear(ev, &self.auth)
            })
            .map(|(z, ev)| notification_frame(*z, ev.event_type, &ev.path));
        // A one-shot watch fires from the current state, not from one change: no zxid (-1).
        let fired = self
            .fired
            .iter()
            .map(|(t, p)| notification_frame(-1, *t, p));
        missed.chain(fired)
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

#[cfg(test)]
mod tests {
    use super::*;
    use synod_proto::Acl;
    use synod_raft_store::Event;

    /// A replay tells of what the resuming connection may read, by each node's ACL as of the
    /// change, and only what its watches would have been sent.
    #[test]
    fn a_replay_leaves_out_what_the_connection_may_not_read() {
        let open: synod_raft_store::acl::SharedAcl = Acl::open_unsafe().into();
        let private: synod_raft_store::acl::SharedAcl =
            vec![Acl::new(perms::ALL, "digest", "alice:h")].into();
        let mut missed = Events::new();
        missed.push_back((
            10,
            Event::new(EventType::NodeDataChanged, "/a/secret", private),
        ));
        missed.push_back((11, Event::new(EventType::NodeCreated, "/a/x", open.clone())));
        missed.push_back((12, Event::new(EventType::NodeCreated, "/b/y", open)));
        let watches = vec![(WatchKind::Recursive, "/a".to_string())];
        let anonymous = Replay::new(missed.clone(), watches.clone(), Vec::new(), Vec::new());
        assert_eq!(
            anonymous.frames().collect::<Vec<_>>(),
            [notification_frame(11, EventType::NodeCreated, "/a/x")]
        );
        let alice = Id {
            scheme: "digest".into(),
            id: "alice:h".into(),
        };
        let fired = vec![(EventType::NodeDeleted, "/gone".to_string())];
        let owner = Replay::new(missed, watches, vec![alice], fired);
        assert_eq!(
            owner.frames().collect::<Vec<_>>(),
            [
                notification_frame(10, EventType::NodeDataChanged, "/a/secret"),
                notification_frame(11, EventType::NodeCreated, "/a/x"),
                notification_frame(-1, EventType::NodeDeleted, "/gone"),
            ]
        );
    }
}
