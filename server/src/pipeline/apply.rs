//! What applying an entry does on this node beyond the tree, ZooKeeper's FinalRequestProcessor:
//! completes the requests this node proposed ([`Pending`]), records every watch event in the
//! history and delivers it to the watching connections ([`EventHistory`], [`WatchManager`],
//! [`Connections`]), and ends the connections of a closed session. A snapshot install resets it
//! all. The [`Applier`] is the state machine's observer: it lives under the replica lock, so
//! everything it does happens in apply order and before the entry is visible to any reader.

use bytes::{Bytes, BytesMut};
use synod_proto::frame::encode_frame;
use synod_proto::records::WatcherEvent;
use synod_proto::response::NotificationPacket;
use synod_proto::{ErrorCode, KeeperState, Response};
use synod_raft_store::state_machine::{ApplyObserver, Outcome};
use synod_raft_store::{Command, DataTree, Event, NodeId, Tenants};

use crate::pipeline::pending::{Completion, Pending};
use crate::session::registry::{ConnEntry, ConnId, Connections};
use crate::watch::history::EventHistory;
use crate::watch::manager::WatchManager;

/// See the module documentation.
pub struct Applier {
    /// Which connections watch which paths.
    pub watches: WatchManager,
    /// This node's client connections (where events go).
    pub conns: Connections,
    /// Requests proposed here, waiting for their entries.
    pub pending: Pending,
    /// Recent events, for resuming sessions.
    pub history: EventHistory,
    /// Reads across tenants noted for the audit trail, until the next flush.
    pub read_audit: crate::pipeline::read_audit::ReadAudit,
    /// How many snapshots replaced this node's state. The proposer fails its batch entries in
    /// flight at each one ([`crate::node::Node::snapshot_installs`]).
    pub installs: tokio::sync::watch::Sender<u64>,
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

/// Whether a connection with identities `auth` (tenants resolved: [`Tenants::resolve`]) may be
/// told of `ev`: it must be allowed to READ the node the event is about, by that node's ACL as
/// of the change (and, for a node of ZooKeeper's quota tree, its guard: [`Event::may_hear`]).
/// Used wherever an event leaves this node: live delivery and replays to resuming sessions.
pub fn may_hear(ev: &Event, auth: &[synod_proto::Id]) -> bool {
    ev.may_hear(auth)
}

impl Applier {
    pub fn new(node_id: NodeId) -> Self {
        Applier {
            watches: WatchManager::default(),
            conns: Connections::default(),
            pending: Pending::new(node_id),
            history: EventHistory::default(),
            read_audit: Default::default(),
            installs: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Registers a connection; an older local connection of the same session is closed (the
    /// session moved to the new one).
    pub fn add_conn(&mut self, id: ConnId, entry: ConnEntry) {
        if let Some(old) = self.conns.add(id, entry) {
            self.kill_conn(old, "session reattached on a new connection");
        }
    }

    /// Forgets a closed connection and its watches.
    pub fn remove_conn(&mut self, id: ConnId) {
        if let Some(e) = self.conns.remove(id) {
            // From here on the connection misses events: nothing more may reach its client.
            e.out.seal();
        }
        self.watches.remove_conn(id);
    }

    /// Closes every connection whose entry `which` selects; returns how many.
    pub fn kill_conns_where(
        &mut self,
        which: impl Fn(&crate::session::registry::ConnEntry) -> bool,
        why: &str,
    ) -> usize {
        let doomed: Vec<ConnId> = self
            .conns
            .ids()
            .into_iter()
            .filter(|id| self.conns.get(*id).is_some_and(&which))
            .collect();
        for id in &doomed {
            self.kill_conn(*id, why);
        }
        doomed.len()
    }

    /// Closes a connection and forgets it.
    fn kill_conn(&mut self, id: ConnId, why: &str) {
        if let Some(e) = self.conns.get(id) {
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

    /// Records one event of the change at `zxid` and delivers it to every watching connection
    /// that may READ the node it is about (as of the change: see [`Event::acl`]; a one-shot
    /// watch of a connection that may not stays, unlike ZooKeeper's: [`WatchManager::trigger`]);
    /// a connection whose queue is full is closed rather than buffered without end. `tenants`
    /// is the table as of the change.
    pub fn notify(&mut self, tenants: &Tenants, zxid: i64, ev: &Event) {
        self.history.record(zxid, ev);
        let mut targets = Vec::new();
        let conns = &self.conns;
        let hears = |c| {
            conns
                .get(c)
                .is_some_and(|e| may_hear(ev, &tenants.resolve(&e.auth)))
        };
        self.watches
            .trigger(ev.event_type, &ev.path, hears, &mut targets);
        if targets.is_empty() {
            return;
        }
        let frame = notification_frame(zxid, ev.event_type, &ev.path);
        let mut slow = Vec::new();
        for c in targets {
            if let Some(e) = self.conns.get(c) {
                if !e.out.try_send_event(frame.clone()) {
                    slow.push(c);
                }
            }
        }
        for c in slow {
            self.kill_conn(c, "too slow: its queue of replies and events is full");
        }
    }
}

impl ApplyObserver for Applier {
    fn on_apply(&mut self, tree: &DataTree, zxid: i64, command: &Command, outcome: Outcome<'_>) {
        let tenants = tree.tenants();
        match (command, outcome) {
            (
                Command::CreateSession { origin, .. } | Command::OpenSession { origin, .. },
                Outcome::SessionCreated { session_id },
            ) => {
                self.pending
                    .complete(Some(*origin), Completion::Session { session_id });
            }
            (Command::OpenSession { origin, .. }, Outcome::SessionRefused { err }) => {
                self.pending
                    .complete(Some(*origin), Completion::SessionRefused { err });
            }
            (
                Command::CloseSession { origin, .. },
                Outcome::SessionClosed { session_id, events },
            ) => {
                for ev in events {
                    self.notify(tenants, zxid, ev);
                }
                let done = Completion::Write {
                    zxid,
                    err: ErrorCode::Ok,
                    response: Response::Empty,
                };
                self.pending.complete(*origin, done);
                // The connection that asked for the close has detached itself and closes after
                // its reply; any connection still carrying the session is told now.
                if let Some(conn) = self.conns.of_session(session_id) {
                    self.kill_conn(conn, "session closed");
                }
            }
            (
                cmd @ (Command::Write { .. } | Command::Config { .. }),
                Outcome::Write { applied },
            ) => {
                for ev in &applied.events {
                    self.notify(tenants, zxid, ev);
                }
                let done = Completion::Write {
                    zxid,
                    err: applied.err,
                    response: applied.response.clone(),
                };
                self.pending.complete(cmd.origin(), done);
            }
            (_, Outcome::Reaped { events }) => {
                for ev in events {
                    self.notify(tenants, zxid, ev);
                }
            }
            (Command::Tenant { origin, .. }, Outcome::Tenant { events, refused }) => {
                for ev in events {
                    self.notify(tenants, zxid, ev);
                }
                let done = Completion::Tenant {
                    zxid,
                    refused: refused.map(str::to_string),
                };
                self.pending.complete(Some(*origin), done);
            }
            _ => {}
        }
    }

    fn on_entry_applied(&mut self, index: u64) {
        self.history.entry_applied(index);
        self.pending.entry_applied();
    }

    /// A snapshot replaced the tree: watches may have missed events, so every client reconnects
    /// and re-registers them with its last zxid (as ZooKeeper's followers do after a resync).
    fn on_install(&mut self, _tree: &DataTree) {
        self.history.clear();
        self.pending.fail_all("state replaced by a snapshot");
        self.installs.send_modify(|n| *n += 1);
        for id in self.conns.ids() {
            self.kill_conn(id, "state replaced by a snapshot");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::manager::WatchKind;
    use std::sync::Arc;
    use synod_proto::EventType;
    use tokio::sync::Notify;

    fn conn(session_id: i64, out: &crate::pipeline::outbox::Outbox) -> ConnEntry {
        let stats = Arc::new(crate::stats::ServerStats::default());
        ConnEntry {
            session_id,
            out: out.clone(),
            kill: Arc::new(Notify::new()),
            stats: stats.connection(1, "127.0.0.1:5000".parse().expect("addr"), session_id, 1),
            auth: Arc::new(Vec::new()),
        }
    }

    fn ev(t: EventType, path: &str) -> Event {
        Event::new(t, path, synod_proto::Acl::open_unsafe().into())
    }

    /// A watch anywhere tells a connection only of nodes it may read, judged by the ACL the
    /// node had at the change (ZooKeeper's CVE-2024-23944): a recursive watch on `/` does not
    /// reveal another tenant's paths.
    #[test]
    fn events_reach_only_connections_that_may_read_the_node() {
        use synod_proto::{mode::perms, Acl, Id};
        let mut applier = Applier::new(1);
        let (anon_out, mut anon_rx) = crate::pipeline::outbox::outbox(100, 1 << 20);
        let (alice_out, mut alice_rx) = crate::pipeline::outbox::outbox(100, 1 << 20);
        applier.add_conn(1, conn(0x10, &anon_out));
        let mut alice = conn(0x20, &alice_out);
        let alice_id = Id {
            scheme: "digest".into(),
            id: "alice:h".into(),
        };
        alice.auth = Arc::new(vec![alice_id.clone()]);
        applier.add_conn(2, alice);
        applier.watches.add(1, WatchKind::Recursive, "/");
        applier.watches.add(2, WatchKind::Recursive, "/");
        applier.watches.add(1, WatchKind::Data, "/secret");
        let private: synod_raft_store::acl::SharedAcl =
            vec![Acl::new(perms::ALL, "digest", "alice:h")].into();
        applier.notify(
            &Tenants::default(),
            5 << 16,
            &Event::new(EventType::NodeCreated, "/secret", private),
        );
        applier.notify(
            &Tenants::default(),
            6 << 16,
            &ev(EventType::NodeCreated, "/open"),
        );
        let paths = |rx: &mut crate::pipeline::outbox::OutboxReceiver| {
            std::iter::from_fn(|| rx.try_recv().and_then(|q| q.frame())).count()
        };
        assert_eq!(
            paths(&mut anon_rx),
            1,
            "only /open reaches the anonymous one"
        );
        assert_eq!(paths(&mut alice_rx), 2);
        assert!(
            applier
                .watches
                .has(1, "/secret", synod_proto::WatcherType::Data),
            "the one-shot watch stays: its fate would tell of the change"
        );
        // addauth: from now on the identity counts.
        applier.conns.set_auth(1, Arc::new(vec![alice_id]));
        let private: synod_raft_store::acl::SharedAcl =
            vec![Acl::new(perms::READ, "digest", "alice:h")].into();
        applier.notify(
            &Tenants::default(),
            7 << 16,
            &Event::new(EventType::NodeDeleted, "/secret", private),
        );
        assert_eq!(paths(&mut anon_rx), 1);
    }

    /// The race behind a lost event on a connection dropped as too slow: the event that found
    /// no room was never queued, but a reply evaluated after it (carrying a later zxid) still
    /// was, and the writer drained it before closing. The client then resumed its watches after
    /// that zxid and never saw the event. Now nothing is queued once an event is refused.
    #[test]
    fn a_connection_dropped_for_an_event_gets_nothing_after_it() {
        let mut applier = Applier::new(1);
        let (out, mut rx) = crate::pipeline::outbox::outbox(1, 1 << 20);
        applier.add_conn(7, conn(0x70, &out));
        applier.watches.add(7, WatchKind::Recursive, "/a");
        applier.notify(
            &Tenants::default(),
            10 << 16,
            &ev(EventType::NodeDataChanged, "/a/x"),
        );
        // The queue holds one frame: this event finds no room and the connection is dropped.
        applier.notify(
            &Tenants::default(),
            11 << 16,
            &ev(EventType::NodeDataChanged, "/a/y"),
        );
        assert!(applier.conns.is_empty(), "the slow connection is gone");
        // A reply to a read evaluated after zxid 11 (and a later event) must not follow.
        assert!(!out.push_reply(Bytes::from_static(b"reply at zxid 11")));
        applier.notify(
            &Tenants::default(),
            12 << 16,
            &ev(EventType::NodeDataChanged, "/a/z"),
        );
        let queued: Vec<Bytes> =
            std::iter::from_fn(|| rx.try_recv().and_then(|q| q.frame())).collect();
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
        let mut applier = Applier::new(1);
        let (out, mut rx) = crate::pipeline::outbox::outbox(100, 1 << 20);
        applier.add_conn(3, conn(0x30, &out));
        applier.watches.add(3, WatchKind::Recursive, "/");
        applier.notify(
            &Tenants::default(),
            5 << 16,
            &ev(EventType::NodeCreated, "/n"),
        );
        applier.remove_conn(3);
        applier.notify(
            &Tenants::default(),
            6 << 16,
            &ev(EventType::NodeDeleted, "/n"),
        );
        assert!(!out.push_reply(Bytes::from_static(b"reply at zxid 6")));
        let queued: Vec<Bytes> =
            std::iter::from_fn(|| rx.try_recv().and_then(|q| q.frame())).collect();
        assert_eq!(
            queued,
            [notification_frame(5 << 16, EventType::NodeCreated, "/n")]
        );
    }
}
