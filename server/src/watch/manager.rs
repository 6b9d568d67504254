//! The WatchManager: which connections watch which paths, node-local and never replicated. Apply
//! hands it each change; it answers which connections must be told, consuming one-shot watches and
//! keeping persistent ones, as ZooKeeper's server does (exist watches live in the data table; a
//! recursive watch sees every change below it except child-list changes).

use std::collections::{HashMap, HashSet};

use synod_proto::{EventType, WatcherType};
use synod_raft_store::tree::Name;

/// Identifies a client connection on this node.
pub type ConnId = u64;

/// The tables a watch can live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WatchKind {
    /// One-shot data watch (getData, or exists on an existing or missing node).
    Data,
    /// One-shot child watch (getChildren).
    Child,
    /// addWatch PERSISTENT: data, child and existence events of one node.
    Persistent,
    /// addWatch PERSISTENT_RECURSIVE: data and existence events of a subtree.
    Recursive,
}

type Table = HashMap<Name, HashSet<ConnId>>;

/// Whether a persistent watch of `kind` on `watch_path` is sent `event_type` on `path` (the rule
/// [`WatchManager::trigger`] applies to the persistent tables; one-shot kinds never match here).
pub fn persistent_match(
    kind: WatchKind,
    watch_path: &str,
    event_type: EventType,
    path: &str,
) -> bool {
    match kind {
        WatchKind::Persistent => path == watch_path,
        WatchKind::Recursive => {
            event_type != EventType::NodeChildrenChanged
                && synod_proto::path::ancestors_or_self(path).any(|p| p == watch_path)
        }
        WatchKind::Data | WatchKind::Child => false,
    }
}

/// Each connection's watches, as (kind, path). A persistent map: [`WatchManager::index`] copies
/// it in O(1) under the replica lock, and the listings (`wchc`, `wchp`, `wchs`) walk the copy
/// outside it, so that listing every watch never stalls apply (ZooKeeper's CVE-2017-5637 class).
pub type WatchIndex = imbl::HashMap<ConnId, imbl::HashSet<(WatchKind, Name)>>;

/// Every watch on this node.
#[derive(Debug, Default)]
pub struct WatchManager {
    data: Table,
    child: Table,
    persistent: Table,
    recursive: Table,
    /// The reverse index, so that a closing connection drops its watches without a scan, and
    /// what the listings copy. Invariant: holds exactly the (conn, kind, path) of the tables.
    by_conn: WatchIndex,
    /// How many (connection, kind, path) watches there are: the sum of `by_conn`'s set sizes.
    total: usize,
    /// The tenant each connection's watches are charged to ([`WatchManager::assign`]); absent:
    /// none.
    conn_tenant: std::collections::HashMap<ConnId, Name>,
    /// Watches per tenant on this node, for the tenant's watch quota. Invariant: for each
    /// tenant, the sum of its connections' `by_conn` set sizes.
    tenant_watches: std::collections::HashMap<Name, usize>,
}

fn table_remove(t: &mut Table, path: &str, conn: ConnId) -> bool {
    let Some(set) = t.get_mut(path) else {
        return false;
    };
    let removed = set.remove(&conn);
    if set.is_empty() {
        t.remove(path);
    }
    removed
}

impl WatchManager {
    fn table(&mut self, kind: WatchKind) -> &mut Table {
        match kind {
            WatchKind::Data => &mut self.data,
            WatchKind::Child => &mut self.child,
            WatchKind::Persistent => &mut self.persistent,
            WatchKind::Recursive => &mut self.recursive,
        }
    }

    pub fn add(&mut self, conn: ConnId, kind: WatchKind, path: &str) {
        let name: Name = path.into();
        self.table(kind)
            .entry(name.clone())
            .or_default()
            .insert(conn);
        if self
            .by_conn
            .entry(conn)
            .or_default()
            .insert((kind, name))
            .is_none()
        {
            self.total += 1;
            self.count_for_tenant(conn, 1);
        }
    }

    /// Charges `conn`'s watches (those it holds and those it will add) to `tenant` from now on.
    pub fn assign(&mut self, conn: ConnId, tenant: Option<Name>) {
        if self.conn_tenant.get(&conn) == tenant.as_ref() {
            return;
        }
        let held = self.by_conn.get(&conn).map_or(0, imbl::HashSet::len) as isize;
        self.count_for_tenant(conn, -held);
        match tenant {
            Some(t) => self.conn_tenant.insert(conn, t),
            None => self.conn_tenant.remove(&conn),
        };
        self.count_for_tenant(conn, held);
    }

    /// The watches charged to `tenant` on this node.
    pub fn tenant_watches(&self, tenant: &str) -> usize {
        self.tenant_watches.get(tenant).copied().unwrap_or(0)
    }

    fn count_for_tenant(&mut self, conn: ConnId, by: isize) {
        let Some(t) = self.conn_tenant.get(&conn) else {
            return;
        };
        let n = self.tenant_watches.entry(t.clone()).or_default();
        *n = n.saturating_add_signed(by);
        if *n == 0 {
            self.tenant_watches.remove(t);
        }
    }

    /// Takes (kind, path) out of `conn`'s reverse-index entry.
    fn unindex(&mut self, conn: ConnId, key: &(WatchKind, Name)) {
        if let Some(set) = self.by_conn.get_mut(&conn) {
            if set.remove(key).is_some() {
                self.total -= 1;
                self.count_for_tenant(conn, -1);
            }
            if self.by_conn.get(&conn).is_some_and(|s| s.is_empty()) {
                self.by_conn.remove(&conn);
            }
        }
    }

    fn remove_one(&mut self, conn: ConnId, kind: WatchKind, path: &str) -> bool {
        let removed = table_remove(self.table(kind), path, conn);
        if removed {
            self.unindex(conn, &(kind, Name::from(path)));
        }
        removed
    }

    /// removeWatches: drops `conn`'s watches of `kind` on `path`; false if it had none.
    /// `Any` removes every kind, persistent ones included.
    pub fn remove(&mut self, conn: ConnId, path: &str, kind: WatcherType) -> bool {
        let kinds: &[WatchKind] = match kind {
            WatcherType::Data => &[WatchKind::Data],
            WatcherType::Children => &[WatchKind::Child],
            WatcherType::Persistent => &[WatchKind::Persistent],
            WatcherType::PersistentRecursive => &[WatchKind::Recursive],
            WatcherType::Any => &[
                WatchKind::Data,
                WatchKind::Child,
                WatchKind::Persistent,
                WatchKind::Recursive,
            ],
        };
        let mut any = false;
        for &k in kinds {
            any |= self.remove_one(conn, k, path);
        }
        any
    }

    /// checkWatches: whether `conn` holds a watch of `kind` on `path`.
    pub fn has(&self, conn: ConnId, path: &str, kind: WatcherType) -> bool {
        let holds = |t: &Table| t.get(path).is_some_and(|s| s.contains(&conn));
        match kind {
            WatcherType::Data => holds(&self.data),
            WatcherType::Children => holds(&self.child),
            WatcherType::Persistent => holds(&self.persistent),
            WatcherType::PersistentRecursive => holds(&self.recursive),
            WatcherType::Any => {
                holds(&self.data)
                    || holds(&self.child)
                    || holds(&self.persistent)
                    || holds(&self.recursive)
            }
        }
    }

    /// Drops every watch of a closed connection.
    pub fn remove_conn(&mut self, conn: ConnId) {
        for (kind, path) in self.by_conn.remove(&conn).into_iter().flatten() {
            table_remove(self.table(kind), &path, conn);
            self.total -= 1;
            self.count_for_tenant(conn, -1);
        }
        self.conn_tenant.remove(&conn);
    }

    /// The connections to tell of `event_type` on `path` (each once): those watching it that
    /// `hears` lets hear it. A one-shot watch is used up only by a connection that hears the
    /// event; one that may not keeps its watch, so that the watch's fate does not tell it of a
    /// change it may not see (ZooKeeper uses it up all the same, and `checkWatches` then says
    /// so).
    pub fn trigger(
        &mut self,
        event_type: EventType,
        path: &str,
        hears: impl Fn(ConnId) -> bool,
        out: &mut Vec<ConnId>,
    ) {
        let start = out.len();
        // One-shot watches are consumed; a connection left with no watch leaves `by_conn` here,
        // so an event costs only the connections it fires for.
        let mut fire = |this: &mut Self, kind: WatchKind| {
            if let Some((name, conns)) = this.table(kind).remove_entry(path) {
                let key = (kind, name);
                let mut kept = HashSet::new();
                for c in conns {
                    if hears(c) {
                        this.unindex(c, &key);
                        out.push(c);
                    } else {
                        kept.insert(c);
                    }
                }
                if !kept.is_empty() {
                    this.table(kind).insert(key.1, kept);
                }
            }
        };
        match event_type {
            EventType::NodeCreated | EventType::NodeDataChanged => fire(self, WatchKind::Data),
            EventType::NodeChildrenChanged => fire(self, WatchKind::Child),
            EventType::NodeDeleted => {
                fire(self, WatchKind::Data);
                fire(self, WatchKind::Child);
            }
            _ => return,
        }
        if let Some(conns) = self.persistent.get(path) {
            out.extend(conns.iter().copied().filter(|c| hears(*c)));
        }
        if event_type != EventType::NodeChildrenChanged {
            for p in synod_proto::path::ancestors_or_self(path) {
                if let Some(conns) = self.recursive.get(p) {
                    out.extend(conns.iter().copied().filter(|c| hears(*c)));
                }
            }
        }
        let mut fired = out.split_off(start);
        fired.sort_unstable();
        fired.dedup();
        out.extend(fired);
    }

    /// Number of (connection, path, kind) watches.
    pub fn count(&self) -> usize {
        debug_assert_eq!(
            self.total,
            self.by_conn.values().map(imbl::HashSet::len).sum::<usize>()
        );
        self.total
    }

    /// A copy of every connection's watches, O(1): take it under the replica lock, list it
    /// outside (see [`WatchIndex`]).
    pub fn index(&self) -> WatchIndex {
        self.by_conn.clone()
    }
}

/// Watched paths with the connections watching each (`wchp`), sorted by path.
pub fn by_path(index: &WatchIndex) -> Vec<(String, Vec<ConnId>)> {
    let mut m: std::collections::BTreeMap<&str, Vec<ConnId>> = Default::default();
    for (conn, watches) in index {
        for (_, p) in watches {
            m.entry(p).or_default().push(*conn);
        }
    }
    m.into_iter()
        .map(|(p, mut c)| {
            c.sort_unstable();
            c.dedup();
            (p.to_string(), c)
        })
        .collect()
}

/// The paths `conn` watches (`wchc`), sorted.
pub fn paths_of(index: &WatchIndex, conn: ConnId) -> Vec<String> {
    let mut v: Vec<String> = index
        .get(&conn)
        .into_iter()
        .flatten()
        .map(|(_, p)| p.to_string())
        .collect();
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fired(w: &mut WatchManager, t: EventType, p: &str) -> Vec<ConnId> {
        let mut out = Vec::new();
        w.trigger(t, p, |_| true, &mut out);
        out
    }

    #[test]
    fn watches_are_counted_for_their_connections_tenant() {
        let mut w = WatchManager::default();
        w.add(1, WatchKind::Data, "/before");
        w.assign(1, Some("lab".into()));
        w.add(1, WatchKind::Child, "/a");
        w.add(1, WatchKind::Recursive, "/a");
        w.add(1, WatchKind::Recursive, "/a");
        w.add(2, WatchKind::Data, "/a");
        assert_eq!(
            w.tenant_watches("lab"),
            3,
            "its watches from before the assignment too"
        );
        fired(&mut w, EventType::NodeChildrenChanged, "/a");
        assert_eq!(w.tenant_watches("lab"), 2, "a fired one-shot");
        assert!(w.remove(1, "/before", WatcherType::Data));
        assert_eq!(w.tenant_watches("lab"), 1);
        w.assign(1, Some("clinic".into()));
        assert_eq!(
            (w.tenant_watches("lab"), w.tenant_watches("clinic")),
            (0, 1)
        );
        w.remove_conn(1);
        assert_eq!(w.tenant_watches("clinic"), 0);
        assert_eq!(w.count(), 1);
    }

    #[test]
    fn one_shot_watches_fire_once() {
        let mut w = WatchManager::default();
        w.add(1, WatchKind::Data, "/a");
        w.add(2, WatchKind::Data, "/a");
        w.add(1, WatchKind::Child, "/a");
        assert_eq!(fired(&mut w, EventType::NodeDataChanged, "/a"), vec![1, 2]);
        assert!(fired(&mut w, EventType::NodeDataChanged, "/a").is_empty());
        assert_eq!(fired(&mut w, EventType::NodeDeleted, "/a"), vec![1]);
        assert_eq!(w.count(), 0);
    }

    #[test]
    fn persistent_and_recursive_watches_stay_and_dedupe() {
        let mut w = WatchManager::default();
        w.add(1, WatchKind::Persistent, "/a");
        w.add(1, WatchKind::Recursive, "/");
        w.add(1, WatchKind::Data, "/a");
        w.add(2, WatchKind::Recursive, "/a");
        assert_eq!(fired(&mut w, EventType::NodeDataChanged, "/a"), vec![1, 2]);
        assert_eq!(fired(&mut w, EventType::NodeChildrenChanged, "/a"), vec![1]);
        assert_eq!(fired(&mut w, EventType::NodeCreated, "/a/b/c"), vec![1, 2]);
        assert_eq!(w.count(), 3);
        assert!(w.remove(1, "/a", WatcherType::Any));
        assert!(!w.remove(1, "/a", WatcherType::Any));
        w.remove_conn(2);
        assert_eq!(by_path(&w.index()), vec![("/".to_string(), vec![1])]);
        assert_eq!(paths_of(&w.index(), 1), vec!["/".to_string()]);
    }
}
