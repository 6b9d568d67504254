//! The one registry of this node's client connections: which session each carries, where its
//! frames go (events are delivered through it), how to close it, and its request counters (what
//! `cons`, `stat`, `mntr`, `/status` and `/sessions` list). Kept under the replica lock, beside
//! the watches, because apply delivers events and ends sessions through it.

use std::collections::HashMap;
use std::sync::Arc;

use synod_proto::Id;
use tokio::sync::Notify;

use crate::pipeline::outbox::Outbox;
use crate::stats::{ConnSnapshot, ConnStats};

/// Identifies a client connection on this node.
pub type ConnId = u64;

/// A client connection with an established session.
pub struct ConnEntry {
    /// The session the connection carries.
    pub session_id: i64,
    /// Frames to write to the client (events go here; replies share the queue, so order holds).
    pub out: Outbox,
    /// Tells the connection to close (session ended, too slow, snapshot installed).
    pub kill: Arc<Notify>,
    /// Its request counters, shared with its tasks.
    pub stats: Arc<ConnStats>,
    /// The identities it has authenticated (`ip`, `x509`, `digest`, `super`): an event reaches
    /// it only if these may READ the node the event is about (see [`Connections::set_auth`]).
    pub auth: Arc<Vec<Id>>,
}

/// Every connection with an established session, and which one carries each session.
#[derive(Default)]
pub struct Connections {
    /// The connections, by id.
    conns: HashMap<ConnId, ConnEntry>,
    /// Which connection carries each session (at most one, as in ZooKeeper). Invariant: every
    /// value is a key of `conns` whose entry has that session.
    session_conn: HashMap<i64, ConnId>,
}

impl Connections {
    /// Registers `entry` as `id`; returns the connection that carried its session until now, if
    /// another (the session moved: the caller closes that one).
    pub fn add(&mut self, id: ConnId, entry: ConnEntry) -> Option<ConnId> {
        let old = self
            .session_conn
            .insert(entry.session_id, id)
            .filter(|old| *old != id);
        self.conns.insert(id, entry);
        old
    }

    /// The connection `conn` no longer carries `session_id` (it sent closeSession): the close's
    /// apply then ends any other connection of that session, but not this one.
    pub fn detach_session(&mut self, session_id: i64, conn: ConnId) {
        if self.session_conn.get(&session_id) == Some(&conn) {
            self.session_conn.remove(&session_id);
        }
    }

    /// Forgets a connection; its entry, if it was registered.
    pub fn remove(&mut self, id: ConnId) -> Option<ConnEntry> {
        let e = self.conns.remove(&id)?;
        if self.session_conn.get(&e.session_id) == Some(&id) {
            self.session_conn.remove(&e.session_id);
        }
        debug_assert!(self
            .session_conn
            .values()
            .all(|c| self.conns.contains_key(c)));
        Some(e)
    }

    /// The connection `id` authenticated more identities (`addauth`): events from now on are
    /// checked against `auth`.
    pub fn set_auth(&mut self, id: ConnId, auth: Arc<Vec<Id>>) {
        if let Some(e) = self.conns.get_mut(&id) {
            e.auth = auth;
        }
    }

    /// The connection `id`.
    pub fn get(&self, id: ConnId) -> Option<&ConnEntry> {
        self.conns.get(&id)
    }

    /// The connection carrying `session_id` on this node, if any.
    pub fn of_session(&self, session_id: i64) -> Option<ConnId> {
        self.session_conn.get(&session_id).copied()
    }

    /// Every connection id.
    pub fn ids(&self) -> Vec<ConnId> {
        self.conns.keys().copied().collect()
    }

    /// How many connections are registered.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Every connection's counters (copy them outside the replica lock), by connection id.
    pub fn stats(&self) -> Vec<Arc<ConnStats>> {
        let mut v: Vec<Arc<ConnStats>> = self.conns.values().map(|e| e.stats.clone()).collect();
        v.sort_by_key(|s| s.conn);
        v
    }

    /// Connection id → session id of every connection.
    pub fn sessions_by_conn(&self) -> HashMap<ConnId, i64> {
        self.conns
            .iter()
            .map(|(id, e)| (*id, e.session_id))
            .collect()
    }
}

/// Copies of `stats`, in the same order.
pub fn snapshots(stats: &[Arc<ConnStats>]) -> Vec<ConnSnapshot> {
    stats.iter().map(|s| s.snapshot()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::ServerStats;

    fn entry(stats: &Arc<ServerStats>, id: ConnId, session_id: i64) -> ConnEntry {
        let (out, _rx) = crate::pipeline::outbox::outbox(10, 1000);
        ConnEntry {
            session_id,
            out,
            kill: Arc::new(Notify::new()),
            stats: stats.connection(id, "127.0.0.1:5000".parse().expect("addr"), session_id, 1),
            auth: Arc::new(Vec::new()),
        }
    }

    #[test]
    fn a_session_is_carried_by_one_connection() {
        let s = Arc::new(ServerStats::default());
        let mut c = Connections::default();
        assert_eq!(c.add(1, entry(&s, 1, 0x42)), None);
        assert_eq!(c.add(2, entry(&s, 2, 0x42)), Some(1), "the session moved");
        assert_eq!(c.of_session(0x42), Some(2));
        assert!(c.remove(1).is_some());
        assert_eq!(
            c.of_session(0x42),
            Some(2),
            "removing the old one keeps the new"
        );
        c.detach_session(0x42, 2);
        assert_eq!(c.of_session(0x42), None);
        assert_eq!(c.sessions_by_conn().get(&2), Some(&0x42));
        assert_eq!(snapshots(&c.stats()).len(), 1);
        assert!(c.remove(2).is_some());
        assert!(c.is_empty());
    }
}
