//! Client-side watches: the events handed to the application, the one-shot watch future, the
//! persistent watch stream, and the registry that routes each server notification to every local
//! watcher it concerns (the server sends one notification per path and type per session; the
//! client fans it out, as ZooKeeper's `ZKWatchManager` does).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use synod_proto::records::SetWatches2;
use synod_proto::{EventType, KeeperState, WatcherType};
use tokio::sync::{mpsc, oneshot};

/// A watch notification as the application sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedEvent {
    pub event_type: EventType,
    /// `SyncConnected` for node events; `Expired` / `Closed` when the watch ends with the session.
    pub state: KeeperState,
    /// The znode path, relative to the client's chroot (empty for session events).
    pub path: String,
    /// The zxid of the change that caused the event, as the server reported it; -1 for session
    /// events, locally generated ones (watch removed) and servers that do not send it.
    pub zxid: i64,
}

impl WatchedEvent {
    pub(crate) fn session(state: KeeperState) -> Self {
        WatchedEvent {
            event_type: EventType::None,
            state,
            path: String::new(),
            zxid: -1,
        }
    }
}

/// A one-shot watch (from `get_data_watch`, `exists_watch`, `get_children_watch`): resolves
/// with the first event on its path. It survives reconnects (the client re-registers it); if the
/// session ends first, it resolves with an event of type `None` and state `Expired` or `Closed`.
#[derive(Debug)]
pub struct OneshotWatch {
    /// Fed by the session task when the watch fires.
    rx: oneshot::Receiver<WatchedEvent>,
}

impl OneshotWatch {
    pub(crate) fn new() -> (oneshot::Sender<WatchedEvent>, Self) {
        let (tx, rx) = oneshot::channel();
        (tx, OneshotWatch { rx })
    }
}

impl Future for OneshotWatch {
    type Output = WatchedEvent;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<WatchedEvent> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or_else(|_| WatchedEvent::session(KeeperState::Closed)))
    }
}

/// A persistent (or persistent-recursive) watch from `add_watch`: a stream of every event on its
/// path (and, recursive, below it) until it is removed or the session ends.
#[derive(Debug)]
pub struct PersistentWatch {
    /// Fed by the session task; closed when the watch is removed or the session ends.
    rx: mpsc::UnboundedReceiver<WatchedEvent>,
}

impl PersistentWatch {
    pub(crate) fn new() -> (mpsc::UnboundedSender<WatchedEvent>, Self) {
        let (tx, rx) = mpsc::unbounded_channel();
        (tx, PersistentWatch { rx })
    }

    /// The next event; `None` once the watch has ended.
    pub async fn next(&mut self) -> Option<WatchedEvent> {
        self.rx.recv().await
    }
}

impl futures_core::Stream for PersistentWatch {
    type Item = WatchedEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WatchedEvent>> {
        self.rx.poll_recv(cx)
    }
}

/// What a request asks the session task to register once its reply arrives.
#[derive(Debug)]
pub(crate) enum WatchRegistration {
    /// getData with watch: a data watch if the node exists.
    Data(oneshot::Sender<WatchedEvent>),
    /// exists with watch: a data watch if the node exists, an exist watch if it does not.
    Exists(oneshot::Sender<WatchedEvent>),
    /// getChildren with watch.
    Child(oneshot::Sender<WatchedEvent>),
    /// addWatch.
    Persistent {
        recursive: bool,
        tx: mpsc::UnboundedSender<WatchedEvent>,
    },
    /// removeWatches: drop the local watchers of this type once the server agreed.
    Remove(WatcherType),
}

type Oneshots = HashMap<String, Vec<oneshot::Sender<WatchedEvent>>>;
type Streams = HashMap<String, Vec<mpsc::UnboundedSender<WatchedEvent>>>;

/// Every watch this session holds, keyed by the server-side (chrooted) path, so that re-registration
/// after a reconnect sends the keys as they are.
#[derive(Debug, Default)]
pub(crate) struct WatchRegistry {
    data: Oneshots,
    exist: Oneshots,
    child: Oneshots,
    persistent: Streams,
    recursive: Streams,
}

fn fire(map: &mut Oneshots, path: &str, ev: &WatchedEvent) {
    for tx in map.remove(path).into_iter().flatten() {
        let _ = tx.send(ev.clone());
    }
}

fn stream(map: &mut Streams, path: &str, ev: &WatchedEvent) {
    if let Some(v) = map.get_mut(path) {
        v.retain(|tx| tx.send(ev.clone()).is_ok());
        if v.is_empty() {
            map.remove(path);
        }
    }
}

impl WatchRegistry {
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
            && self.exist.is_empty()
            && self.child.is_empty()
            && self.persistent.is_empty()
            && self.recursive.is_empty()
    }

    /// Registers what `reg` asks for after the reply to its request came back with `err`.
    pub fn register(
        &mut self,
        server_path: &str,
        client_path: &str,
        reg: WatchRegistration,
        ok: bool,
        no_node: bool,
    ) {
        let key = server_path.to_string();
        match reg {
            WatchRegistration::Data(tx) if ok => self.data.entry(key).or_default().push(tx),
            WatchRegistration::Exists(tx) if ok => self.data.entry(key).or_default().push(tx),
            WatchRegistration::Exists(tx) if no_node => self.exist.entry(key).or_default().push(tx),
            WatchRegistration::Child(tx) if ok => self.child.entry(key).or_default().push(tx),
            WatchRegistration::Persistent { recursive, tx } if ok => {
                let map = if recursive {
                    &mut self.recursive
                } else {
                    &mut self.persistent
                };
                map.entry(key).or_default().push(tx);
            }
            WatchRegistration::Remove(kind) if ok => {
                self.remove_local(server_path, client_path, kind)
            }
            _ => {}
        }
    }

    /// Drops the local watchers of `kind` on `path`, telling each it was removed.
    fn remove_local(&mut self, path: &str, client_path: &str, kind: WatcherType) {
        let ev = |t| WatchedEvent {
            event_type: t,
            state: KeeperState::SyncConnected,
            path: client_path.to_string(),
            zxid: -1,
        };
        let data = matches!(kind, WatcherType::Data | WatcherType::Any);
        let child = matches!(kind, WatcherType::Children | WatcherType::Any);
        let pers = matches!(kind, WatcherType::Persistent | WatcherType::Any);
        let rec = matches!(kind, WatcherType::PersistentRecursive | WatcherType::Any);
        if data {
            fire(&mut self.data, path, &ev(EventType::DataWatchRemoved));
            fire(&mut self.exist, path, &ev(EventType::DataWatchRemoved));
        }
        if child {
            fire(&mut self.child, path, &ev(EventType::ChildWatchRemoved));
        }
        for (on, map) in [(pers, &mut self.persistent), (rec, &mut self.recursive)] {
            if on {
                for tx in map.remove(path).into_iter().flatten() {
                    let _ = tx.send(ev(EventType::PersistentWatchRemoved));
                }
            }
        }
    }

    /// Routes one server notification (path as the server sent it) to every local watcher.
    /// `client_path` is the same path with the chroot stripped, as the application sees it.
    pub fn dispatch(
        &mut self,
        event_type: EventType,
        zxid: i64,
        server_path: &str,
        client_path: &str,
    ) {
        let ev = WatchedEvent {
            event_type,
            state: KeeperState::SyncConnected,
            path: client_path.to_string(),
            zxid,
        };
        match event_type {
            EventType::NodeCreated | EventType::NodeDataChanged => {
                fire(&mut self.data, server_path, &ev);
                fire(&mut self.exist, server_path, &ev);
            }
            EventType::NodeDeleted => {
                fire(&mut self.data, server_path, &ev);
                fire(&mut self.exist, server_path, &ev);
                fire(&mut self.child, server_path, &ev);
            }
            EventType::NodeChildrenChanged => fire(&mut self.child, server_path, &ev),
            _ => return,
        }
        stream(&mut self.persistent, server_path, &ev);
        if event_type != EventType::NodeChildrenChanged {
            for p in synod_proto::path::ancestors_or_self(server_path) {
                stream(&mut self.recursive, p, &ev);
            }
        }
    }

    /// Ends every watch with a session event (expiry, close, auth failure).
    pub fn end_all(&mut self, state: KeeperState) {
        let ev = WatchedEvent::session(state);
        for map in [&mut self.data, &mut self.exist, &mut self.child] {
            for (_, txs) in map.drain() {
                for tx in txs {
                    let _ = tx.send(ev.clone());
                }
            }
        }
        for map in [&mut self.persistent, &mut self.recursive] {
            for (_, txs) in map.drain() {
                for tx in txs {
                    let _ = tx.send(ev.clone());
                }
            }
        }
    }

    /// The setWatches2 records that re-register every watch after a reconnect, split so that
    /// no record carries more than about `max_bytes` of paths (as ZooKeeper's client does).
    pub fn set_watches(&mut self, relative_zxid: i64, max_bytes: usize) -> Vec<SetWatches2> {
        // Drop watchers whose application side has gone away before re-registering them.
        for map in [&mut self.data, &mut self.exist, &mut self.child] {
            map.retain(|_, v| {
                v.retain(|tx| !tx.is_closed());
                !v.is_empty()
            });
        }
        for map in [&mut self.persistent, &mut self.recursive] {
            map.retain(|_, v| {
                v.retain(|tx| !tx.is_closed());
                !v.is_empty()
            });
        }
        let lists = [
            self.data.keys().cloned().collect::<Vec<_>>(),
            self.exist.keys().cloned().collect(),
            self.child.keys().cloned().collect(),
            self.persistent.keys().cloned().collect(),
            self.recursive.keys().cloned().collect(),
        ];
        let fresh = || SetWatches2 {
            relative_zxid,
            ..Default::default()
        };
        let mut out = Vec::new();
        let mut cur = fresh();
        let mut size = 0;
        for (kind, paths) in lists.into_iter().enumerate() {
            for p in paths {
                if size > 0 && size + p.len() + 4 > max_bytes {
                    out.push(std::mem::replace(&mut cur, fresh()));
                    size = 0;
                }
                size += p.len() + 4;
                let field = match kind {
                    0 => &mut cur.data_watches,
                    1 => &mut cur.exist_watches,
                    2 => &mut cur.child_watches,
                    3 => &mut cur.persistent_watches,
                    _ => &mut cur.persistent_recursive_watches,
                };
                field.push(p);
            }
        }
        if size > 0 {
            out.push(cur);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_fans_out_to_every_matching_watcher() {
        let mut reg = WatchRegistry::default();
        let (d, mut dw) = OneshotWatch::new();
        let (c, mut cw) = OneshotWatch::new();
        let (r, mut rw) = PersistentWatch::new();
        reg.register("/a/b", "/a/b", WatchRegistration::Data(d), true, false);
        reg.register("/a/b", "/a/b", WatchRegistration::Child(c), true, false);
        reg.register(
            "/a",
            "/a",
            WatchRegistration::Persistent {
                recursive: true,
                tx: r,
            },
            true,
            false,
        );
        reg.dispatch(EventType::NodeDataChanged, 7, "/a/b", "/a/b");
        assert_eq!(
            dw.rx.try_recv().unwrap().event_type,
            EventType::NodeDataChanged
        );
        assert!(
            cw.rx.try_recv().is_err(),
            "child watch must not fire on data change"
        );
        assert_eq!(rw.rx.try_recv().unwrap().path, "/a/b");
        reg.dispatch(EventType::NodeChildrenChanged, 7, "/a/b", "/a/b");
        assert!(
            rw.rx.try_recv().is_err(),
            "recursive watches get no child events"
        );
        assert_eq!(
            cw.rx.try_recv().unwrap().event_type,
            EventType::NodeChildrenChanged
        );
        assert_eq!(
            reg.set_watches(5, 1 << 20)[0].persistent_recursive_watches,
            vec!["/a"]
        );
    }

    #[test]
    fn exists_on_missing_node_registers_an_exist_watch() {
        let mut reg = WatchRegistry::default();
        let (e, mut ew) = OneshotWatch::new();
        reg.register("/x", "/x", WatchRegistration::Exists(e), false, true);
        let sw = reg.set_watches(9, 1 << 20);
        assert_eq!(sw[0].exist_watches, vec!["/x"]);
        reg.dispatch(EventType::NodeCreated, 7, "/x", "/x");
        assert_eq!(ew.rx.try_recv().unwrap().event_type, EventType::NodeCreated);
        assert!(reg.is_empty());
    }

    #[test]
    fn set_watches_splits_large_sets() {
        let mut reg = WatchRegistry::default();
        let mut keep = Vec::new();
        for i in 0..100 {
            let (tx, w) = OneshotWatch::new();
            keep.push(w);
            let p = format!("/node-{i:04}");
            reg.register(&p, &p, WatchRegistration::Data(tx), true, false);
        }
        let sw = reg.set_watches(1, 200);
        assert!(sw.len() > 1);
        assert_eq!(sw.iter().map(|s| s.data_watches.len()).sum::<usize>(), 100);
    }
}
