//! A subtree kept in memory ([`TreeCache`], like Curator's `CuratorCache`).
//!
//! The cache registers **one persistent recursive watch** on its root, then loads the subtree, then
//! applies every event by re-reading the node it names (events carry no data). Because a
//! session's events arrive in zxid order and before any reply that reflects them, a re-read after
//! an event sees that change or a later one: the cache converges to the server's tree and never
//! goes back in time.
//!
//! Connection states: on `Disconnected` the cache keeps serving its (possibly stale) contents and
//! emits [`CacheEvent::Suspended`]; on reconnect it reloads the whole subtree (persistent watches
//! do not replay what was missed) and emits the differences, then [`CacheEvent::Resynced`]; on
//! `Expired` it emits [`CacheEvent::Ended`] and stops (its contents are frozen).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use super::retry;
use crate::{AddWatchMode, Client, Error, EventType, Result, SessionState, Stat};
use synod_proto::path::child as child_path;

/// One cached znode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedNode {
    /// Its data.
    pub data: Bytes,
    /// Its Stat as last read.
    pub stat: Stat,
}

/// A change to the cache, in the order applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheEvent {
    /// The first load finished.
    Initialized,
    /// A node appeared.
    Created(String),
    /// A node's data (or Stat) changed.
    Changed(String),
    /// A node disappeared.
    Deleted(String),
    /// The connection broke; contents may be stale until `Resynced`.
    Suspended,
    /// Reloaded after a reconnect.
    Resynced,
    /// The session ended; the cache is frozen.
    Ended,
}

/// State shared by the cache handle and its task.
#[derive(Debug)]
struct Shared {
    /// The cached nodes by full path.
    nodes: RwLock<BTreeMap<String, CachedNode>>,
    /// Subscribers to changes.
    subscribers: Mutex<Vec<mpsc::UnboundedSender<CacheEvent>>>,
    /// Highest zxid seen in a cached Stat.
    zxid: std::sync::atomic::AtomicI64,
}

impl Shared {
    fn emit(&self, ev: CacheEvent) {
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|s| s.send(ev.clone()).is_ok());
    }

    fn nodes(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, CachedNode>> {
        self.nodes.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn nodes_mut(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, CachedNode>> {
        self.nodes.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores a node read from the server; emits Created / Changed.
    fn put(&self, path: &str, node: CachedNode) {
        self.zxid.fetch_max(
            node.stat.mzxid.max(node.stat.pzxid),
            std::sync::atomic::Ordering::Relaxed,
        );
        let ev = {
            let mut nodes = self.nodes_mut();
            match nodes.insert(path.to_string(), node.clone()) {
                None => Some(CacheEvent::Created(path.to_string())),
                Some(old) if old != node => Some(CacheEvent::Changed(path.to_string())),
                Some(_) => None,
            }
        };
        if let Some(ev) = ev {
            self.emit(ev);
        }
    }

    /// Removes a node and everything below it; emits Deleted for each, deepest first.
    fn remove(&self, path: &str) {
        let gone: Vec<String> = {
            let mut nodes = self.nodes_mut();
            let prefix = format!("{}/", path.trim_end_matches('/'));
            let keys: Vec<String> = nodes
                .keys()
                .filter(|k| *k == path || k.starts_with(&prefix))
                .cloned()
                .collect();
            for k in &keys {
                nodes.remove(k);
            }
            keys
        };
        for k in gone.into_iter().rev() {
            self.emit(CacheEvent::Deleted(k));
        }
    }
}

/// An in-memory copy of a subtree, kept current by one persistent recursive watch.
#[derive(Debug)]
pub struct TreeCache {
    /// The subtree's root.
    root: String,
    /// Contents and subscribers.
    shared: Arc<Shared>,
    /// True once the first load is done (and while not ended).
    ready: watch::Receiver<bool>,
    /// Stops the task.
    stop: Option<oneshot::Sender<()>>,
}

impl TreeCache {
    /// Starts caching the subtree at `root` (which may not exist yet). Returns once the first
    /// load is done.
    pub async fn start(client: &Client, root: &str) -> Result<TreeCache> {
        let shared = Arc::new(Shared {
            nodes: RwLock::new(BTreeMap::new()),
            subscribers: Mutex::new(Vec::new()),
            zxid: std::sync::atomic::AtomicI64::new(0),
        });
        let watch = retry::RetryPolicy::default()
            .run(client, || {
                client.add_watch(root, AddWatchMode::PersistentRecursive)
            })
            .await?;
        reload(client, root, &shared).await?;
        let (ready_tx, ready) = watch::channel(true);
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(run(
            client.clone(),
            root.to_string(),
            shared.clone(),
            watch,
            stopped,
            ready_tx,
        ));
        Ok(TreeCache {
            root: root.to_string(),
            shared,
            ready,
            stop: Some(stop),
        })
    }

    /// The cached node at `path`.
    pub fn get(&self, path: &str) -> Option<CachedNode> {
        self.shared.nodes().get(path).cloned()
    }

    /// The cached data at `path`.
    pub fn data(&self, path: &str) -> Option<Bytes> {
        self.shared.nodes().get(path).map(|n| n.data.clone())
    }

    /// The names of the cached children of `path`, sorted.
    pub fn children(&self, path: &str) -> Vec<String> {
        let prefix = format!("{}/", path.trim_end_matches('/'));
        self.shared
            .nodes()
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter(|rest| !rest.is_empty() && !rest.contains('/'))
            .map(str::to_string)
            .collect()
    }

    /// A copy of every cached node (path → data).
    pub fn snapshot(&self) -> BTreeMap<String, Bytes> {
        self.shared
            .nodes()
            .iter()
            .map(|(k, v)| (k.clone(), v.data.clone()))
            .collect()
    }

    /// The highest zxid found in a cached Stat (mzxid or pzxid): every change to a cached node up
    /// to it is reflected.
    pub fn zxid(&self) -> i64 {
        self.shared.zxid.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The root of the cached subtree.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// Whether the cache is live (false once ended).
    pub fn is_live(&self) -> bool {
        *self.ready.borrow()
    }

    /// Every change from now on.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<CacheEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.shared
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(tx);
        rx
    }

    /// Stops following the tree (contents stay readable).
    pub fn close(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for TreeCache {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Re-reads one node after an event on it.
async fn refresh(client: &Client, path: &str, shared: &Shared) -> Result<()> {
    match client.get_data(path).await {
        Ok((data, stat)) => {
            shared.put(path, CachedNode { data, stat });
            Ok(())
        }
        Err(Error::NoNode) => {
            shared.remove(path);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Loads the whole subtree and replaces the cache's contents with it (emitting the differences).
async fn reload(client: &Client, root: &str, shared: &Shared) -> Result<()> {
    let mut seen = BTreeMap::new();
    let mut todo = vec![root.to_string()];
    while let Some(path) = todo.pop() {
        let got = retry::RetryPolicy::default()
            .run(client, || async {
                let (data, stat) = client.get_data(&path).await?;
                let children = client.get_children(&path).await?;
                Ok((data, stat, children))
            })
            .await;
        match got {
            Ok((data, stat, children)) => {
                for c in children {
                    todo.push(child_path(&path, &c));
                }
                seen.insert(path, CachedNode { data, stat });
            }
            Err(Error::NoNode) => {}
            Err(e) => return Err(e),
        }
    }
    let stale: Vec<String> = shared
        .nodes()
        .keys()
        .filter(|k| !seen.contains_key(*k))
        .cloned()
        .collect();
    for k in stale {
        shared.remove(&k);
    }
    for (path, node) in seen {
        shared.put(&path, node);
    }
    Ok(())
}

/// The cache task: applies watch events and handles session states.
async fn run(
    client: Client,
    root: String,
    shared: Arc<Shared>,
    mut events: crate::PersistentWatch,
    mut stopped: oneshot::Receiver<()>,
    ready: watch::Sender<bool>,
) {
    shared.emit(CacheEvent::Initialized);
    let mut states = client.state_changes();
    let mut suspended = false;
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            ev = events.next() => match ev {
                None => break,
                Some(ev) if ev.event_type == EventType::None => break,
                Some(ev) => {
                    if let Err(e) = refresh(&client, &ev.path, &shared).await {
                        tracing::debug!(path = %ev.path, error = %e, "cache refresh failed; resync");
                        suspended = true;
                        // Already back (the state change may have been seen before this
                        // failure): reload now rather than wait for the next change.
                        if client.state() == SessionState::Connected
                            && reload(&client, &root, &shared).await.is_ok()
                        {
                            suspended = false;
                            shared.emit(CacheEvent::Resynced);
                        }
                    }
                }
            },
            st = states.next() => match st {
                None => break,
                Some(s) if s.is_terminal() => break,
                Some(SessionState::Connected) => {
                    if suspended {
                        // Wait a moment so a flapping connection does not reload in a loop.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        match reload(&client, &root, &shared).await {
                            Ok(()) => {
                                suspended = false;
                                shared.emit(CacheEvent::Resynced);
                            }
                            Err(e) => tracing::debug!(error = %e, "cache resync failed"),
                        }
                    }
                }
                Some(_) => {
                    if !suspended {
                        suspended = true;
                        shared.emit(CacheEvent::Suspended);
                    }
                }
            },
        }
    }
    let _ = ready.send(false);
    shared.emit(CacheEvent::Ended);
    shared
        .subscribers
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
}
