//! Node-local state kept under the replica lock and updated by apply: the WatchManager, the client
//! connections (where events and session ends are delivered), and the requests this node proposed
//! that wait for their entry to be applied here.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use synod_proto::frame::encode_frame;
use synod_proto::records::WatcherEvent;
use synod_proto::response::NotificationPacket;
use synod_proto::{ErrorCode, KeeperState, Response};
use synod_raft_store::state_machine::{ApplyObserver, Outcome};
use synod_raft_store::{Command, DataTree, Event, NodeId};
use tokio::sync::{oneshot, Notify};

use crate::watches::{persistent_match, ConnId, WatchKind, WatchManager};

/// How many recent events a node keeps to replay to reconnecting persistent watchers (about
/// 100 bytes each). A client away for longer than this many events may miss some.
pub const WATCH_HISTORY: usize = 65_536;

/// How a proposed command ended, as seen by the connection that waits for it.
#[derive(Debug)]
pub enum Completion {
    /// CreateSession applied: the new session's id.
    Session { session_id: i64 },
    /// A write (or CloseSession) applied at `zxid` with this result.
    Write {
        zxid: i64,
        err: ErrorCode,
        response: Response,
    },
    /// The command's fate is unknown (leader lost, forward failed): the connection must close.
    Failed(String),
}

/// A client connection as apply sees it.
pub struct ConnEntry {
    /// The session the connection carries.
    pub session_id: i64,
    /// Frames to write to the client (events go here; replies share the queue, so order holds).
    pub out: crate::outbox::Outbox,
    /// Tells the connection to close (session ended, too slow, snapshot installed).
    pub kill: Arc<Notify>,
}

/// See the module documentation.
pub struct Local {
    node_id: NodeId,
    pub watches: WatchManager,
    conns: HashMap<ConnId, ConnEntry>,
    /// Which local connection carries each session (at most one, as in ZooKeeper).
    session_conn: HashMap<i64, ConnId>,
    /// Requests proposed by this node, by request number, waiting for apply (or failure).
    pending: HashMap<u64, oneshot::Sender<Completion>>,
    /// Completions of the entry being applied, released when the whole entry is applied (see
    /// [`ApplyObserver::on_entry_applied`]).
    deferred: Vec<(oneshot::Sender<Completion>, Completion)>,
    /// The last [`WATCH_HISTORY`] events applied here, in zxid order: a persistent watcher that
    /// reconnects gets what it missed since its last zxid (ZooKeeper drops those; DESIGN.md §1.5
    /// promises none is lost).
    history: VecDeque<(i64, Event)>,
    /// Every event with a zxid above this is in `history` (None until this node has applied an
    /// entry, or since a snapshot replaced the tree: nothing is known then).
    history_floor: Option<i64>,
}

/// Encodes one watch notification for the change at `zxid` as a complete frame.
pub fn notification_frame(zxid: i64, event_type: synod_proto::EventType, path: &str) -> Bytes {
    let mut b = BytesMut::new();
    let event = WatcherEvent {
        event_type: event_type.as_i32(),
        state: KeeperState::SyncConnected.as_i32(),
        path: path.to_string(),
    };
    encode_frame(&NotificationPacket { zxid, event }, &mut b);
    b.freeze()
}

impl Local {
    pub fn new(node_id: NodeId) -> Self {
        Local {
            node_id,
            watches: WatchManager::default(),
            conns: HashMap::new(),
            session_conn: HashMap::new(),
            pending: HashMap::new(),
            deferred: Vec::new(),
            history: VecDeque::new(),
            history_floor: None,
        }
    }

    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Registers a connection for `session_id`; an older local connection of the same session is
    /// closed (the session moved to the new one).
    pub fn add_conn(&mut self, id: ConnId, entry: ConnEntry) {
        if let Some(old) = self.session_conn.insert(entry.session_id, id) {
            if old != id {
                self.kill_conn(old, "session reattached on a new connection");
            }
        }
        self.conns.insert(id, entry);
    }

    /// A connection that sent closeSession stops carrying its session: apply of the close will
    /// then end every other connection of that session, but let this one send its reply.
    pub fn detach_session(&mut self, session_id: i64, conn: ConnId) {
        if self.session_conn.get(&session_id) == Some(&conn) {
            self.session_conn.remove(&session_id);
        }
    }

    /// Forgets a closed connection and its watches.
    pub fn remove_conn(&mut self, id: ConnId) {
        if let Some(e) = self.conns.remove(&id) {
            // From here on the connection misses events: nothing more may reach its client.
            e.out.seal();
            if self.session_conn.get(&e.session_id) == Some(&id) {
                self.session_conn.remove(&e.session_id);
            }
        }
        self.watches.remove_conn(id);
    }

    fn kill_conn(&mut self, id: ConnId, why: &str) {
        if let Some(e) = self.conns.get(&id) {
            tracing::debug!(
                conn = id,
                session = format_args!("{:#x}", e.session_id),
                why,
                "closing connection"
            );
            e.kill.notify_one();
        }
        self.remove_conn(id);
    }

    /// Registers a request waiting for its entry.
    pub fn add_pending(&mut self, request: u64, tx: oneshot::Sender<Completion>) {
        self.pending.insert(request, tx);
    }

    /// Fails a waiting request (its proposal or forward failed); no-op if already completed.
    pub fn fail_pending(&mut self, request: u64, why: String) {
        if let Some(tx) = self.pending.remove(&request) {
            let _ = tx.send(Completion::Failed(why));
        }
    }

    fn complete(&mut self, origin: Option<synod_raft_store::Origin>, c: Completion) {
        if let Some(o) = origin.filter(|o| o.node == self.node_id) {
            if let Some(tx) = self.pending.remove(&o.request) {
                self.deferred.push((tx, c));
            }
        }
    }

    /// Delivers one event of the change at `zxid` to every watching connection; a connection
    /// whose queue is full is closed rather than buffered without end.
    pub fn notify(&mut self, zxid: i64, ev: &Event) {
        debug_assert!(
            self.history.back().is_none_or(|(z, _)| *z <= zxid),
            "events out of zxid order"
        );
        if self.history.len() == WATCH_HISTORY {
            if let Some((z, _)) = self.history.pop_front() {
                self.history_floor = self.history_floor.map(|f| f.max(z));
            }
        }
        self.history.push_back((zxid, ev.clone()));
        let mut targets = Vec::new();
        self.watches.trigger(ev.event_type, &ev.path, &mut targets);
        if targets.is_empty() {
            return;
        }
        let frame = notification_frame(zxid, ev.event_type, &ev.path);
        let mut slow = Vec::new();
        for c in targets {
            if let Some(e) = self.conns.get(&c) {
                if !e.out.try_send_event(frame.clone()) {
                    slow.push(c);
                }
            }
        }
        for c in slow {
            self.kill_conn(c, "too slow: its queue of replies and events is full");
        }
    }

    /// Whether every event after `since` is in this node's history (a persistent watch resumed
    /// from `since` can be replayed here).
    pub fn history_reaches(&self, since: i64) -> bool {
        self.history_floor.is_some_and(|f| f <= since)
    }

    /// Every event with a zxid above this is in the history; `None` if nothing is known (no
    /// entry applied since start-up or since a snapshot replaced the tree).
    pub fn history_floor(&self) -> Option<i64> {
        self.history_floor
    }

    /// The events after `since` that any of the persistent `watches` (kind, path) would have
    /// been sent, each once, as (zxid, event) in the order they happened, appended to `out`.
    /// Returns false if some may be missing: this node's history does not reach back to `since`.
    pub fn missed_events(
        &self,
        since: i64,
        watches: &[(WatchKind, String)],
        out: &mut Vec<(i64, Event)>,
    ) -> bool {
        let complete = self.history_reaches(since);
        let start = self.history.partition_point(|(z, _)| *z <= since);
        out.extend(
            self.history
                .range(start..)
                .filter(|(_, ev)| {
                    watches
                        .iter()
                        .any(|(k, p)| persistent_match(*k, p, ev.event_type, &ev.path))
                })
                .cloned(),
        );
        complete
    }
}

impl ApplyObserver for Local {
    fn on_apply(&mut self, _tree: &DataTree, zxid: i64, command: &Command, outcome: Outcome<'_>) {
        match (command, outcome) {
            (Command::CreateSession { origin, .. }, Outcome::SessionCreated { session_id }) => {
                self.complete(Some(*origin), Completion::Session { session_id });
            }
            (
                Command::CloseSession { origin, .. },
                Outcome::SessionClosed { session_id, events },
            ) => {
                for ev in events {
                    self.notify(zxid, ev);
                }
                let done = Completion::Write {
                    zxid,
                    err: ErrorCode::Ok,
                    response: Response::Empty,
                };
                self.complete(*origin, done);
                // The connection that asked for the close has detached itself and closes after
                // its reply; any connection still carrying the session is told now.
                if let Some(conn) = self.session_conn.get(&session_id).copied() {
                    self.kill_conn(conn, "session closed");
                }
            }
            (Command::Write { origin, .. }, Outcome::Write { applied }) => {
                for ev in &applied.events {
                    self.notify(zxid, ev);
                }
                let done = Completion::Write {
                    zxid,
                    err: applied.err,
                    response: applied.response.clone(),
                };
                self.complete(Some(*origin), done);
            }
            (_, Outcome::Reaped { events }) => {
                for ev in events {
                    self.notify(zxid, ev);
                }
            }
            _ => {}
        }
    }

    fn on_entry_applied(&mut self, index: u64) {
        if self.history_floor.is_none() {
            // The first entry applied since start-up or a snapshot: the history starts here.
            self.history_floor = Some(synod_raft_store::types::applied_zxid(
                index.saturating_sub(1),
            ));
        }
        for (tx, c) in self.deferred.drain(..) {
            let _ = tx.send(c);
        }
    }

    /// A snapshot replaced the tree: watches may have missed events, so every client reconnects
    /// and re-registers them with its last zxid (as ZooKeeper's followers do after a resync).
    fn on_install(&mut self, _tree: &DataTree) {
        self.history.clear();
        self.history_floor = None;
        // Writes forwarded from here whose entries the snapshot covers are never applied here
        // one by one: their outcome is unknown to this node.
        for (_, tx) in self.pending.drain() {
            let _ = tx.send(Completion::Failed("state replaced by a snapshot".into()));
        }
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.kill_conn(id, "state replaced by a snapshot");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_proto::EventType;

    fn event(event_type: EventType, path: &str) -> Event {
        Event {
            event_type,
            path: path.into(),
        }
    }

    /// The race behind a lost event on a connection dropped as too slow: the event that found
    /// no room was never queued, but a reply evaluated after it (carrying a later zxid) still
    /// was, and the writer drained it before closing. The client then resumed its watches after
    /// that zxid and never saw the event. Now nothing is queued once an event is refused.
    #[test]
    fn a_connection_dropped_for_an_event_gets_nothing_after_it() {
        let mut local = Local::new(1);
        let (out, mut rx) = crate::outbox::outbox(1, 1 << 20);
        let kill = Arc::new(Notify::new());
        local.add_conn(
            7,
            ConnEntry {
                session_id: 0x70,
                out: out.clone(),
                kill: kill.clone(),
            },
        );
        local.watches.add(7, WatchKind::Recursive, "/a");
        local.notify(10 << 16, &event(EventType::NodeDataChanged, "/a/x"));
        // The queue holds one frame: this event finds no room and the connection is dropped.
        local.notify(11 << 16, &event(EventType::NodeDataChanged, "/a/y"));
        assert_eq!(local.connection_count(), 0, "the slow connection is gone");
        // A reply to a read evaluated after zxid 11 (and a later event) must not follow.
        assert!(!out.push_reply(Bytes::from_static(b"reply at zxid 11")));
        local.notify(12 << 16, &event(EventType::NodeDataChanged, "/a/z"));
        let queued: Vec<Bytes> = std::iter::from_fn(|| rx.try_recv().map(|q| q.frame)).collect();
        assert_eq!(
            queued,
            [notification_frame(
                10 << 16,
                EventType::NodeDataChanged,
                "/a/x"
            )],
            "only what preceded the refused event reaches the client"
        );
    }

    /// A connection closed for any reason (its session moved, the server shuts down) queues
    /// nothing after it stopped receiving events.
    #[test]
    fn a_removed_connection_queues_nothing_more() {
        let mut local = Local::new(1);
        let (out, mut rx) = crate::outbox::outbox(100, 1 << 20);
        local.add_conn(
            3,
            ConnEntry {
                session_id: 0x30,
                out: out.clone(),
                kill: Arc::new(Notify::new()),
            },
        );
        local.watches.add(3, WatchKind::Recursive, "/");
        local.notify(5 << 16, &event(EventType::NodeCreated, "/n"));
        local.remove_conn(3);
        local.notify(6 << 16, &event(EventType::NodeDeleted, "/n"));
        assert!(!out.push_reply(Bytes::from_static(b"reply at zxid 6")));
        let queued: Vec<Bytes> = std::iter::from_fn(|| rx.try_recv().map(|q| q.frame)).collect();
        assert_eq!(
            queued,
            [notification_frame(5 << 16, EventType::NodeCreated, "/n")]
        );
    }

    #[test]
    fn history_reaches_back_only_as_far_as_it_was_kept() {
        let mut local = Local::new(1);
        assert!(
            !local.history_reaches(0),
            "nothing is known before an entry is applied"
        );
        // The first entry applied is index 4: events of index 3 and before are unknown.
        local.on_entry_applied(4);
        assert_eq!(
            local.history_floor(),
            Some(synod_raft_store::types::applied_zxid(3))
        );
        assert!(!local.history_reaches(3 << 16));
        assert!(local.history_reaches(synod_raft_store::types::applied_zxid(3)));
        assert!(local.history_reaches(4 << 16));
    }

    #[test]
    fn missed_events_come_once_each_in_history_order_when_several_watches_match() {
        let mut local = Local::new(1);
        // One multi (one zxid) deletes two children; then another change.
        local.notify(10, &event(EventType::NodeDeleted, "/a/b"));
        local.notify(10, &event(EventType::NodeDeleted, "/a/c"));
        local.notify(11, &event(EventType::NodeDataChanged, "/a/b2"));
        let watches = [
            (WatchKind::Recursive, "/a".to_string()),
            (WatchKind::Recursive, "/a/b".to_string()),
            (WatchKind::Persistent, "/a/c".to_string()),
        ];
        let mut out = Vec::new();
        local.missed_events(5, &watches, &mut out);
        let got: Vec<(i64, &str)> = out.iter().map(|(z, e)| (*z, &*e.path)).collect();
        assert_eq!(got, [(10, "/a/b"), (10, "/a/c"), (11, "/a/b2")]);
    }
}
