//! The DataTree: the znode tree and the replicated session table. It applies write transactions
//! deterministically — the zxid (the entry's Raft log index × 65536 + the write's position in its
//! entry, see [`crate::types::zxid`]), the time (stamped by the proposer) and the caller's session
//! and identities are passed in — and returns the reply and the watch events the change caused. No async, no I/O, no clock: every replica that applies the same entries holds the
//! same tree.
//!
//! Persistent maps (`imbl`) make a clone O(1): snapshots copy the tree without stopping apply, and a
//! failing `multi` restores the state it started from.
//!
//! Layout, for memory (about 320 heap bytes for a znode of 100 bytes, see
//! `tests/tree_memory.rs`): one ordered map from full path to node, so that a node's children
//! are the keys right after `path/` and need no set of their own; each node counts its children
//! and holds its metadata and data in one allocation of its own size ([`crate::znode`]).

use std::ops::Bound;

use bytes::Bytes;
use sha1::{Digest, Sha1};
use synod_proto::mode::perms;
use synod_proto::path::{parent, validate_path};
use synod_proto::records::*;
use synod_proto::{
    Acl, CreateMode, ErrorCode, EventType, Id, MultiOp, MultiResult, OpCode, Request, Response,
    Stat,
};

use crate::acl::{self, SharedAcl};
use crate::audit::AuditHead;
use crate::error::StoreError;
use crate::quota::{self, StatsTrack};
use crate::tenants::{self, Tenant, Tenants};
use crate::znode::MAX_CHILDREN;
pub use crate::znode::{Node, NodeKind, NodeMeta};

/// A path, shared between the tree's key, the events about the node and the sets that name it
/// (a session's ephemerals, the reap set, the watch tables), and a tenant's name. A thin
/// pointer (8 bytes; `Arc<str>` is 16): the tree's map holds one per znode, and at imbl's leaf
/// size that made a znode 18 bytes dearer in jemalloc's size classes (335 against 317 at
/// 100,000 znodes of 100 bytes in release 0.5.14, `tests/tree_memory.rs`). Never serialized: snapshots and
/// messages carry paths and tenant names as strings.
pub type Name = arcstr::ArcStr;

/// The path P whose quota tree node `path` is (`/zookeeper/quota<P>`, or P's limits or stats
/// node), if it is one below the quota root.
fn mirrored(path: &str) -> Option<&str> {
    let rest = path.strip_prefix(quota::QUOTA_ROOT)?;
    if !rest.starts_with('/') {
        return None;
    }
    Some(quota::quota_node(path).map_or(rest, |(p, _)| p))
}

/// What every path below `path` starts with: `path/`, or `/` for the root (whose own key it is
/// too, which [`DataTree::children`] and the descendants skip).
fn descendants_prefix(path: &str) -> String {
    if path == "/" {
        "/".to_string()
    } else {
        format!("{path}/")
    }
}

/// The names of one node's children, in byte order ([`DataTree::children`]). The tree's keys
/// run through the node's whole subtree in byte order; where a key is a grandchild or deeper,
/// the iterator seeks past that child's subtree (`prefix + child + "0"`, `'0'` being the byte
/// after `'/'`) instead of walking it.
pub struct Children<'a> {
    /// The tree's map, for the seeks.
    nodes: &'a imbl::OrdMap<Name, Node>,
    /// The parent's path and a `/` (just `/` for the root).
    prefix: String,
    /// Where the walk stands.
    iter: imbl::ordmap::RangedIter<'a, Name, Node, imbl::shared_ptr::DefaultSharedPtr>,
}

impl<'a> Iterator for Children<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        loop {
            let (key, _) = self.iter.next()?;
            let rest = key.strip_prefix(self.prefix.as_str())?;
            match rest.find('/') {
                // The root itself, under its own prefix.
                None if rest.is_empty() => continue,
                None => return Some(rest),
                Some(end) => {
                    let past = format!("{}{}0", self.prefix, &rest[..end]);
                    self.iter = self
                        .nodes
                        .range::<_, str>((Bound::Included(&*past), Bound::Unbounded));
                }
            }
        }
    }
}

/// The largest TTL ZooKeeper accepts (40 bits of milliseconds).
pub const MAX_TTL_MS: i64 = 0x00ff_ffff_ffff;

/// ZooKeeper's configuration node: the membership as `server.N=...` lines and a `version=`
/// line (the zxid, in hex, of the change that wrote it), readable by everyone, written only by
/// [`DataTree::set_config`].
pub const CONFIG_NODE: &str = "/zookeeper/config";

/// A session in the replicated table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The negotiated timeout: the leader expires the session after this long without a touch.
    pub timeout_ms: i32,
    /// The password a client must show to resume the session on another connection.
    pub passwd: Bytes,
    /// Paths of the ephemerals this session owns; deleted with it.
    pub ephemerals: imbl::OrdSet<Name>,
    /// The tenant its identities resolved to when it was opened: charged for it until it ends.
    pub tenant: Option<Name>,
}

/// Who is asking: the session and the identities its connection authenticated (stamped into the
/// entry by the proposer; `ip:<addr>` is always among them for a client connection).
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The caller's session: owner of the ephemerals it creates (0: no session, an internal
    /// write, which may create no ephemeral).
    pub session_id: i64,
    /// The identities ACLs are checked against.
    pub auth: &'a [Id],
}

/// Everything a transaction is applied with.
#[derive(Debug, Clone, Copy)]
pub struct Txn<'a> {
    /// The zxid of every change the write makes: the entry's Raft log index × 65536 + the
    /// write's position in its entry ([`crate::types::zxid`]), so the writes of one batch entry
    /// have distinct, increasing zxids. All ops of one `multi` share it.
    pub zxid: i64,
    /// Milliseconds since the epoch, as stamped by the proposer.
    pub time: i64,
    /// Who writes: ACL checks and ephemeral ownership.
    pub caller: Caller<'a>,
}

/// A change a watch may be waiting for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What happened (created, deleted, data or children changed).
    pub event_type: EventType,
    /// The node it happened to: the watches on this path fire.
    pub path: Name,
    /// That node's ACL as of the change (the deleted node's last one; the parent's for a change
    /// of its children): a watcher is told only if this lets it READ the node, checked at
    /// delivery and again when the event is replayed (ZooKeeper's fix of CVE-2024-23944).
    pub acl: SharedAcl,
    /// For a node of ZooKeeper's quota tree, what the watcher must also be allowed as of the
    /// change ([`DataTree::quota_guard`]); `None` elsewhere.
    pub guard: Option<QuotaGuard>,
}

impl Event {
    /// `event_type` on `path`, whose ACL at the time was `acl` (no guard: not a node of the
    /// quota tree).
    pub fn new(event_type: EventType, path: impl Into<Name>, acl: SharedAcl) -> Event {
        Event {
            event_type,
            path: path.into(),
            acl,
            guard: None,
        }
    }

    /// Whether identities `auth` (tenants resolved) may be told of this event: READ on the
    /// node, and for a node of the quota tree its guard's permission.
    pub fn may_hear(&self, auth: &[Id]) -> bool {
        acl::check(&self.acl, perms::READ, auth)
            && self
                .guard
                .as_ref()
                .is_none_or(|g| acl::check(&g.acl, g.perm, auth))
    }
}

/// What reading a node of ZooKeeper's quota tree (`/zookeeper/quota<P>`, and P's
/// `zookeeper_limits` and `zookeeper_stats`) needs besides READ on the node itself: READ on P,
/// or, while P does not exist, ADMIN on its nearest existing ancestor (what setting a quota on
/// P needs). Those nodes are made by clients (zkCli's `setquota`) with ZooKeeper's open ACL,
/// and their paths and stats name and measure P's subtree: without the guard, anyone could
/// list the names of another tenant's nodes under `/zookeeper/quota/tenants/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaGuard {
    /// P's ACL, or its nearest existing ancestor's.
    pub acl: SharedAcl,
    /// [`perms::READ`] on P itself, [`perms::ADMIN`] on an ancestor.
    pub perm: i32,
}

/// The outcome of applying one write: the reply's error code and body, and the events caused
/// (none when the write failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The reply's error code (`Ok` also for a failed `multi`, whose ops carry their codes).
    pub err: ErrorCode,
    /// The reply's body (`Empty` on error).
    pub response: Response,
    /// The watch events, in the order the changes happened.
    pub events: Vec<Event>,
}

impl Applied {
    fn ok(response: Response, events: Vec<Event>) -> Self {
        Applied {
            err: ErrorCode::Ok,
            response,
            events,
        }
    }

    /// A failed write: the code, no body, no events.
    pub fn error(err: ErrorCode) -> Self {
        Applied {
            err,
            response: Response::Empty,
            events: Vec::new(),
        }
    }
}

type OpResult<T> = Result<T, ErrorCode>;

/// The znode tree and session table.
#[derive(Debug, Clone)]
pub struct DataTree {
    /// Every node by full path, in byte order: a node's descendants are the keys that start
    /// with `path/` ([`DataTree::descendants`]), its children those of them without a further
    /// `/`. A B-tree, not a hash map: at 100,000 nodes imbl's HAMT cost 160 bytes per entry,
    /// this about 45 (leaves of up to 16 entries of 16 bytes, and the branches' copies of keys).
    /// Values are pointers ([`Node`]) so the map's chunks stay small and a snapshot shares
    /// nodes: a write copies only the node it changes ([`Node::change`]). The keys are the
    /// paths apart from the nodes: a branch of the B-tree holds copies of keys, and a copy of
    /// a node there would keep that version of the node (and its data) alive.
    nodes: imbl::OrdMap<Name, Node>,
    /// Live sessions by id.
    sessions: imbl::HashMap<i64, Session>,
    /// Paths of container and TTL nodes: the candidates for reaping.
    reapable: imbl::OrdSet<Name>,
    /// Total bytes of node data (for status and metrics).
    data_bytes: u64,
    /// The open ACL, shared by every node that uses it.
    open_acl: SharedAcl,
    /// The declared tenants and what each uses; empty in a cluster that behaves as ZooKeeper.
    tenants: Tenants,
    /// The audit chain's head as of the last applied entry (zero with auditing off): the state
    /// machine appends to it, snapshots and the digest carry it, so replicas agree on it.
    audit: AuditHead,
    /// The paths with a ZooKeeper quota (a `/zookeeper/quota<P>/zookeeper_limits` node):
    /// derived from the tree, rebuilt on load. Empty: no write pays for quotas.
    quota_roots: imbl::OrdSet<Name>,
    /// Which formats the replicated state may use ([`crate::types::CLUSTER_VERSION`]):
    /// [`crate::types::BASE_CLUSTER_VERSION`] in a new tree, raised by a
    /// `Command::ClusterVersion` entry, never lowered. Replicated: in snapshots and the digest.
    cluster_version: u32,
}

impl Default for DataTree {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether `auth` may set `n`'s data at `version`: `NoAuth` before `BadVersion`, as ZooKeeper
/// checks them.
fn may_set_data(n: &Node, version: i32, auth: &[Id]) -> OpResult<()> {
    if !acl::check(&n.acl, perms::WRITE, auth) {
        return Err(ErrorCode::NoAuth);
    }
    version_matches(version, n.version)
}

fn version_matches(expected: i32, actual: i32) -> OpResult<()> {
    if expected == -1 || expected == actual {
        Ok(())
    } else {
        Err(ErrorCode::BadVersion)
    }
}

impl DataTree {
    /// An empty tree: `/` and ZooKeeper's system nodes `/zookeeper`, `/zookeeper/quota` and
    /// `/zookeeper/config`, all at zxid 0.
    pub fn new() -> Self {
        let open_acl: SharedAcl = Acl::open_unsafe().into();
        let mut t = DataTree {
            nodes: imbl::OrdMap::new(),
            sessions: imbl::HashMap::new(),
            reapable: imbl::OrdSet::new(),
            data_bytes: 0,
            open_acl: open_acl.clone(),
            tenants: Tenants::default(),
            audit: AuditHead::default(),
            quota_roots: imbl::OrdSet::new(),
            cluster_version: crate::types::BASE_CLUSTER_VERSION,
        };
        let mk = |children: u32| {
            let mut m = NodeMeta::new(0, 0, open_acl.clone(), None);
            m.set_num_children(children);
            m
        };
        let persistent = |m: NodeMeta| Node::new(m, NodeKind::Persistent, b"");
        t.nodes.insert("/".into(), persistent(mk(1)));
        t.nodes.insert("/zookeeper".into(), persistent(mk(2)));
        t.nodes.insert("/zookeeper/quota".into(), persistent(mk(0)));
        let mut config = mk(0);
        config.acl = Acl::read_unsafe().into();
        t.nodes.insert(CONFIG_NODE.into(), persistent(config));
        t
    }

    pub fn node(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// The node at `path` for changing (its metadata with [`Node::change`], which copies it
    /// first if a snapshot still shares it; its data by replacing it).
    fn node_mut(&mut self, path: &str) -> Option<&mut Node> {
        self.nodes.get_mut(path)
    }

    /// Applies `change` to the metadata of the node at `path`; returns the tree's key of the
    /// node and the node as changed. An event about the node names it by that key and so
    /// shares its allocation (the watch event history keeps 65,536).
    fn change_node(
        &mut self,
        path: &str,
        change: impl FnOnce(&mut NodeMeta),
    ) -> Option<(Name, &Node)> {
        let (name, node) = self.nodes.get_key_value_mut(path)?;
        node.change(change);
        Some((name.clone(), node))
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    pub fn session(&self, id: i64) -> Option<&Session> {
        self.sessions.get(&id)
    }

    pub fn sessions(&self) -> impl Iterator<Item = (i64, &Session)> {
        self.sessions.iter().map(|(id, s)| (*id, s))
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The tenant table and usage.
    pub fn tenants(&self) -> &Tenants {
        &self.tenants
    }

    /// The cluster version of the replicated state ([`crate::types::CLUSTER_VERSION`]).
    pub fn cluster_version(&self) -> u32 {
        self.cluster_version
    }

    /// Raises the cluster version to `version`; a lower or equal one changes nothing. Returns
    /// whether it rose.
    pub fn raise_cluster_version(&mut self, version: u32) -> bool {
        let rose = version > self.cluster_version;
        self.cluster_version = self.cluster_version.max(version);
        debug_assert!(self.cluster_version >= crate::types::BASE_CLUSTER_VERSION);
        rose
    }

    /// Rewrites [`CONFIG_NODE`] with `members` (one `server.N=...` line each, newline-ended)
    /// and the line `version=<zxid in hex>`, as ZooKeeper's reconfig does: data version -1 (as
    /// ZooKeeper leaves it), mzxid and mtime of this change, a `NodeDataChanged` event. The response is what a
    /// `reconfig` returns: the new data and the node's stat.
    pub fn set_config(&mut self, zxid: i64, time: i64, members: &str) -> Applied {
        let data = Bytes::from(format!("{members}version={zxid:x}"));
        let Some(n) = self.node_mut(CONFIG_NODE) else {
            // Every tree has it from `new` on, and no request can delete it (it has no
            // children, but its ACL lets nobody but `super` write; see `delete`).
            debug_assert!(false, "{CONFIG_NODE} is missing");
            return Applied::error(ErrorCode::SystemError);
        };
        let old_len = n.data().len() as u64;
        *n = n.with_data(&data);
        n.change(|m| {
            // ZooKeeper writes it with version -1 and keeps that as its data version.
            m.version = -1;
            m.mzxid = zxid;
            m.mtime = time;
            m.set_null_data(false);
        });
        let stat = n.stat();
        let acl = n.acl.clone();
        self.data_bytes = self.data_bytes - old_len + data.len() as u64;
        let event = Event::new(EventType::NodeDataChanged, CONFIG_NODE, acl);
        Applied::ok(
            Response::GetData(GetDataResponse {
                data: Some(data),
                stat,
            }),
            vec![event],
        )
    }

    /// The text of [`CONFIG_NODE`] (empty until the first [`DataTree::set_config`]).
    pub fn config_text(&self) -> &str {
        self.node(CONFIG_NODE)
            .and_then(|n| std::str::from_utf8(n.data()).ok())
            .unwrap_or("")
    }

    /// The audit chain's head.
    pub fn audit_head(&self) -> &AuditHead {
        &self.audit
    }

    /// The audit chain's head, for the state machine to append to (and a snapshot to restore).
    pub fn audit_head_mut(&mut self) -> &mut AuditHead {
        &mut self.audit
    }

    /// Every node, in byte order of the paths (snapshots, digests).
    pub fn nodes(&self) -> impl Iterator<Item = (&Name, &Node)> {
        self.nodes.iter()
    }

    /// The names of `path`'s children, in byte order (none for a missing node). O(1) per child
    /// without children of its own; a child with descendants costs one O(log n) seek past them.
    pub fn children<'a>(&'a self, path: &str) -> Children<'a> {
        let prefix = descendants_prefix(path);
        let iter = self
            .nodes
            .range::<_, str>((Bound::Included(&*prefix), Bound::Unbounded));
        Children {
            nodes: &self.nodes,
            prefix,
            iter,
        }
    }

    /// The paths of every node below `path` (not `path` itself), in byte order.
    fn descendants<'a>(&'a self, path: &str) -> impl Iterator<Item = (&'a Name, &'a Node)> {
        let prefix = descendants_prefix(path);
        self.nodes
            .range::<_, str>((Bound::Included(&*prefix), Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(&*prefix))
            .filter(|(k, _)| &***k != "/")
    }

    fn acl_arc(&self, acl: Vec<Acl>) -> SharedAcl {
        if *acl == *self.open_acl {
            self.open_acl.clone()
        } else {
            acl.into()
        }
    }

    // ------------------------------------------------------------------------------------------
    // Reads (served locally once the read is known to be up to date)
    // ------------------------------------------------------------------------------------------

    /// Whether the caller with raw identities `auth` has `perm` under `acl`: [`acl::check`]
    /// against the identities resolved by the tenant table as this tree holds it. Every read
    /// and every watch delivery of the server asks this (or resolves once with
    /// [`Tenants::resolve`] for many checks).
    pub fn may(&self, acl: &[Acl], perm: i32, auth: &[Id]) -> bool {
        acl::check(acl, perm, &self.tenants.resolve(auth))
    }

    /// Whether identities `auth` (tenants resolved: [`Tenants::resolve`]) may `perm` the node
    /// `n` at `path`: by its ACL, and for a node of the quota tree by its guard too
    /// ([`QuotaGuard`]). Every read of a node asks this.
    pub fn may_read_node(&self, path: &str, n: &Node, perm: i32, auth: &[Id]) -> bool {
        acl::check(&n.acl, perm, auth)
            && self
                .quota_guard(path)
                .is_none_or(|g| acl::check(&g.acl, g.perm, auth))
    }

    /// [`may_read_node`](Self::may_read_node) with raw identities.
    fn may_read(&self, path: &str, n: &Node, perm: i32, auth: &[Id]) -> bool {
        self.may_read_node(path, n, perm, &self.tenants.resolve(auth))
    }

    /// The guard of `path` if it is a node of ZooKeeper's quota tree below its root
    /// (`/zookeeper/quota<P>`, or P's limits or stats node), as the tree is now.
    pub fn quota_guard(&self, path: &str) -> Option<QuotaGuard> {
        let mut p = mirrored(path)?;
        // A quota on a node of the quota tree itself counts that node's subtree: it is guarded
        // by the path that node mirrors in turn, the first one outside the quota tree.
        while let Some(outer) = mirrored(p) {
            p = outer;
        }
        if let Some(n) = self.nodes.get(p) {
            return Some(QuotaGuard {
                acl: n.acl.clone(),
                perm: perms::READ,
            });
        }
        let ancestor = synod_proto::path::ancestors_or_self(p).find_map(|a| self.nodes.get(a))?;
        Some(QuotaGuard {
            acl: ancestor.acl.clone(),
            perm: perms::ADMIN,
        })
    }

    /// An event on `path`, whose ACL as of the change is `acl`, with the guard it has if it is
    /// a node of the quota tree.
    fn event(&self, event_type: EventType, path: Name, acl: SharedAcl) -> Event {
        let guard = self.quota_guard(&path);
        Event {
            event_type,
            path,
            acl,
            guard,
        }
    }

    pub fn stat(&self, path: &str) -> Option<Stat> {
        self.nodes.get(path).map(|n| n.stat())
    }

    /// The node's data (`None`: null) and Stat.
    pub fn get_data(&self, path: &str, auth: &[Id]) -> OpResult<(Option<Bytes>, Stat)> {
        let n = self.nodes.get(path).ok_or(ErrorCode::NoNode)?;
        if !self.may_read(path, n, perms::READ, auth) {
            return Err(ErrorCode::NoAuth);
        }
        let data = (!n.null_data()).then(|| n.shared_data());
        Ok((data, n.stat()))
    }

    /// Data as a write stores it, and whether it is null: null stays null only at a cluster
    /// version that has null data (before it, as release 0.1 stored it: empty). The node
    /// copies the bytes into its own allocation ([`Node::new`]).
    fn stored_data<'d>(&self, data: Option<&'d Bytes>) -> (&'d [u8], bool) {
        match data {
            Some(d) => (d, false),
            None => (&[], self.cluster_version >= crate::types::NULL_DATA_SINCE),
        }
    }

    pub fn get_children(&self, path: &str, auth: &[Id]) -> OpResult<(Vec<String>, Stat)> {
        let n = self.nodes.get(path).ok_or(ErrorCode::NoNode)?;
        if !self.may_read(path, n, perms::READ, auth) {
            return Err(ErrorCode::NoAuth);
        }
        let children = self.children(path).map(str::to_string).collect();
        Ok((children, n.stat()))
    }

    /// exists: the node's Stat if `auth` may READ it (ZooKeeper 3.8.4 / 3.9.2 check this; a
    /// missing node is `NoNode` for anyone, as there is nothing to protect).
    pub fn exists(&self, path: &str, auth: &[Id]) -> OpResult<Stat> {
        let n = self.nodes.get(path).ok_or(ErrorCode::NoNode)?;
        if !self.may_read(path, n, perms::READ, auth) {
            return Err(ErrorCode::NoAuth);
        }
        Ok(n.stat())
    }

    /// getACL, as ZooKeeper answers it since CVE-2019-0201: the caller needs READ or ADMIN on
    /// the node, and without ADMIN the password hash of every `digest` id is masked
    /// (`user:x`), so that nobody can take a hash away to crack it.
    pub fn get_acl(&self, path: &str, auth: &[Id]) -> OpResult<(Vec<Acl>, Stat)> {
        let n = self.nodes.get(path).ok_or(ErrorCode::NoNode)?;
        if !self.may_read(path, n, perms::READ | perms::ADMIN, auth) {
            return Err(ErrorCode::NoAuth);
        }
        let acl = if self.may(&n.acl, perms::ADMIN, auth) {
            n.acl.to_vec()
        } else {
            n.acl.iter().map(acl::masked).collect()
        };
        Ok((acl, n.stat()))
    }

    /// The number of descendants of `path` that `auth` could find by listing children from
    /// `path` down: each one whose ancestors below `path` it may all READ (a node's name shows
    /// in its parent's children, whatever the node's own ACL). ZooKeeper counts every
    /// descendant, which tells a reader of a shared node how many nodes another tenant keeps
    /// private below it; the two agree wherever the caller may read the whole subtree.
    pub fn all_children_number(&self, path: &str, auth: &[Id]) -> OpResult<i32> {
        let n = self.nodes.get(path).ok_or(ErrorCode::NoNode)?;
        if !self.may_read(path, n, perms::READ, auth) {
            return Err(ErrorCode::NoAuth);
        }
        let auth = self.tenants.resolve(auth);
        // Most nodes share a few ACLs: the last one's answer is kept (the quota tree's nodes
        // have a guard of their own, so they are always asked).
        let mut last: Option<(SharedAcl, bool)> = None;
        let mut listable = |k: &str, n: &Node| match &last {
            _ if k.starts_with(quota::QUOTA_ROOT) => self.may_read_node(k, n, perms::READ, &auth),
            Some((acl, may)) if SharedAcl::ptr_eq(acl, &n.acl) => *may,
            _ => {
                let may = acl::check(&n.acl, perms::READ, &auth);
                last = Some((n.acl.clone(), may));
                may
            }
        };
        // The subtrees of counted nodes the caller may not list, not reached yet: each its
        // keys' range, from `node/` to `node0` (`'0'` is the byte after `'/'`). The ranges are
        // disjoint, and the walk skips each with one seek when it reaches it.
        let mut out_of_sight: std::collections::BTreeMap<String, String> = Default::default();
        let prefix = descendants_prefix(path);
        let from = |key: &str| {
            self.nodes
                .range::<_, str>((Bound::Included(key), Bound::Unbounded))
        };
        let mut keys = from(&prefix);
        let mut count: u64 = 0;
        while let Some((k, node)) = keys.next() {
            if !k.starts_with(&*prefix) {
                break;
            }
            if &**k == "/" {
                continue;
            }
            // A range the walk has passed without a key in it was an empty subtree.
            while out_of_sight
                .first_key_value()
                .is_some_and(|(_, past)| **k >= **past)
            {
                out_of_sight.pop_first();
            }
            if let Some((_, past)) = out_of_sight
                .first_key_value()
                .filter(|(start, _)| k.starts_with(start.as_str()))
            {
                keys = from(past);
                out_of_sight.pop_first();
                continue;
            }
            count += 1;
            if !listable(k, node) {
                out_of_sight.insert(format!("{k}/"), format!("{k}0"));
            }
        }
        Ok(i32::try_from(count).unwrap_or(i32::MAX))
    }

    /// The session's ephemerals whose path starts with `prefix` (`/` for all).
    pub fn ephemerals(&self, session_id: i64, prefix: &str) -> Vec<String> {
        self.sessions
            .get(&session_id)
            .map(|s| {
                s.ephemerals
                    .iter()
                    .filter(|p| prefix == "/" || p.starts_with(prefix))
                    .map(|p| p.to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    // ------------------------------------------------------------------------------------------
    // Sessions
    // ------------------------------------------------------------------------------------------

    pub fn create_session(&mut self, id: i64, timeout_ms: i32, passwd: Bytes) {
        self.sessions.insert(
            id,
            Session {
                timeout_ms,
                passwd,
                ephemerals: imbl::OrdSet::new(),
                tenant: None,
            },
        );
    }

    /// Opens a session for a client with identities `auth`, charged to its tenant:
    /// `QuotaExceeded` (and no session) if that takes the tenant over its session quota.
    pub fn open_session(
        &mut self,
        id: i64,
        timeout_ms: i32,
        passwd: Bytes,
        auth: &[Id],
    ) -> OpResult<()> {
        let tenant = self.tenants.owner_shared(&self.tenants.resolve(auth));
        if let Some(t) = &tenant {
            if !self.tenants.charge_session(t, true, true) {
                return Err(ErrorCode::QuotaExceeded);
            }
        }
        self.create_session(id, timeout_ms, passwd);
        if let Some(s) = self.sessions.get_mut(&id) {
            s.tenant = tenant;
        }
        Ok(())
    }

    /// Ends a session and deletes its ephemerals, all at `zxid`. Unknown sessions are a no-op.
    pub fn close_session(&mut self, zxid: i64, id: i64) -> Vec<Event> {
        let Some(session) = self.sessions.remove(&id) else {
            return Vec::new();
        };
        if let Some(t) = &session.tenant {
            self.tenants.charge_session(t, false, false);
        }
        let mut events = Vec::new();
        for path in session.ephemerals.iter() {
            self.remove_node(zxid, path, &mut events);
        }
        events
    }

    // ------------------------------------------------------------------------------------------
    // Writes
    // ------------------------------------------------------------------------------------------

    /// Applies a client write. Non-write requests are `BadArguments`. A write from a session the
    /// table does not hold (expired or closed) fails with `SessionExpired`.
    pub fn apply(&mut self, txn: Txn<'_>, request: &Request) -> Applied {
        if txn.caller.session_id != 0 && !self.sessions.contains_key(&txn.caller.session_id) {
            return Applied::error(ErrorCode::SessionExpired);
        }
        // Tenants are resolved as of this entry: a membership change orders with the writes.
        let resolved = self.tenants.resolve(txn.caller.auth);
        let txn = Txn {
            caller: Caller {
                auth: &resolved,
                ..txn.caller
            },
            ..txn
        };
        let mut events = Vec::new();
        let result = match request {
            Request::Create(r) => self
                .create(txn, OpCode::Create, with_ttl(r), &mut events)
                .map(|(p, _)| Response::Create(CreateResponse { path: p })),
            Request::Create2(r) | Request::CreateContainer(r) => {
                let op = if matches!(request, Request::Create2(_)) {
                    OpCode::Create2
                } else {
                    OpCode::CreateContainer
                };
                self.create(txn, op, with_ttl(r), &mut events)
                    .map(|(path, stat)| Response::Create2(Create2Response { path, stat }))
            }
            Request::CreateTtl(r) => self
                .create(txn, OpCode::CreateTtl, r.clone(), &mut events)
                .map(|(path, stat)| Response::Create2(Create2Response { path, stat })),
            Request::Delete(r) => self
                .delete(txn, &r.path, r.version, &mut events)
                .map(|_| Response::Empty),
            Request::SetData(r) => self.set_data(txn, r, &mut events).map(Response::Stat),
            Request::SetAcl(r) => self.set_acl(txn, r).map(Response::Stat),
            Request::Check(r) => self.check(txn, r).map(|_| Response::Empty),
            Request::Multi(ops) => return self.multi(txn, ops),
            _ => Err(ErrorCode::BadArguments),
        };
        match result {
            Ok(response) => Applied::ok(response, events),
            Err(code) => Applied::error(code),
        }
    }

    fn create(
        &mut self,
        txn: Txn<'_>,
        op: OpCode,
        r: CreateTtlRequest,
        events: &mut Vec<Event>,
    ) -> OpResult<(String, Stat)> {
        let mode = CreateMode::from_flags(r.flags).ok_or(ErrorCode::BadArguments)?;
        if mode.is_container() != (op == OpCode::CreateContainer)
            || mode.is_ttl() != (op == OpCode::CreateTtl)
        {
            return Err(ErrorCode::BadArguments);
        }
        if mode.is_ttl() && !(r.ttl > 0 && r.ttl <= MAX_TTL_MS) {
            return Err(ErrorCode::BadArguments);
        }
        if mode.is_ephemeral() && txn.caller.session_id == 0 {
            return Err(ErrorCode::BadArguments);
        }
        validate_path(&r.path, mode.is_sequential()).map_err(|_| ErrorCode::BadArguments)?;
        // ZooKeeper's order: a bad ACL is refused before a missing parent. An ACL that may be
        // inherited waits for the parent.
        let may_inherit = self.may_inherit(&r.acl);
        let given = if may_inherit {
            None
        } else {
            Some(self.fixup(&r.acl, txn.caller.auth)?)
        };
        if r.path == "/" {
            return Err(ErrorCode::NodeExists);
        }
        let parent_path = parent(&r.path);
        let p = self.nodes.get(parent_path).ok_or(ErrorCode::NoNode)?;
        let acl: SharedAcl = match given {
            Some(acl) => self.acl_arc(acl),
            None if tenanted(&p.acl) => p.acl.clone(),
            None => self.acl_arc(self.fixup(&r.acl, txn.caller.auth)?),
        };
        if !acl::check(&p.acl, perms::CREATE, txn.caller.auth) {
            return Err(ErrorCode::NoAuth);
        }
        let path: Name = if mode.is_sequential() {
            format!("{}{:010}", r.path, p.cversion).into()
        } else {
            r.path.as_str().into()
        };
        validate_path(&path, false).map_err(|_| ErrorCode::BadArguments)?;
        if self.nodes.contains_key(&path) {
            return Err(ErrorCode::NodeExists);
        }
        if matches!(p.kind(), NodeKind::Ephemeral(_)) {
            return Err(ErrorCode::NoChildrenForEphemerals);
        }
        if p.num_children() >= MAX_CHILDREN {
            return Err(ErrorCode::QuotaExceeded);
        }
        let kind = match mode {
            _ if mode.is_ephemeral() => NodeKind::Ephemeral(txn.caller.session_id),
            _ if mode.is_container() => NodeKind::Container,
            _ if mode.is_ttl() => NodeKind::Ttl(r.ttl),
            _ => NodeKind::Persistent,
        };
        let (data, null_data) = self.stored_data(r.data.as_ref());
        self.may_change_quota(&path, txn.caller.auth)?;
        let quota = self.quota_of(&path);
        if let Some(q) = &quota {
            self.check_quota(q, 1, data.len() as i64, txn.caller.auth)?;
        }
        let owner = self.tenants.owner_shared(txn.caller.auth);
        if let Some(o) = &owner {
            let bytes = data.len() as u64;
            if !self
                .tenants
                .charge(o, bytes, mode.is_ephemeral(), true, true)
            {
                return Err(ErrorCode::QuotaExceeded);
            }
        }
        let mut meta = NodeMeta::new(txn.zxid, txn.time, acl, owner);
        meta.set_null_data(null_data);
        let node = Node::new(meta, kind, data);
        let stat = node.stat();
        let node_acl = node.acl.clone();
        self.data_bytes += data.len() as u64;
        let mut parent_changed = None;
        let changed = self.change_node(parent_path, |p| {
            p.set_num_children(p.num_children() + 1);
            p.cversion += 1;
            p.pzxid = txn.zxid;
        });
        if let Some((parent_name, p)) = changed {
            parent_changed = Some((parent_name, p.acl.clone()));
        }
        match kind {
            NodeKind::Ephemeral(owner) => {
                if let Some(s) = self.sessions.get_mut(&owner) {
                    s.ephemerals.insert(path.clone());
                }
            }
            NodeKind::Container | NodeKind::Ttl(_) => {
                self.reapable.insert(path.clone());
            }
            NodeKind::Persistent => {}
        }
        let len = data.len() as i64;
        self.nodes.insert(path.clone(), node);
        if let Some(q) = &quota {
            self.count_in_quota(q, 1, len);
        }
        match quota::quota_node(&path) {
            Some((p, quota::LIMIT_NODE)) => {
                self.quota_roots.insert(p.into());
            }
            Some((p, _)) => self.recount_quota(p),
            None => {}
        }
        events.push(self.event(EventType::NodeCreated, path.clone(), node_acl));
        if let Some((parent_name, acl)) = parent_changed {
            events.push(self.event(EventType::NodeChildrenChanged, parent_name, acl));
        }
        Ok((path.to_string(), stat))
    }

    fn delete(
        &mut self,
        txn: Txn<'_>,
        path: &str,
        version: i32,
        events: &mut Vec<Event>,
    ) -> OpResult<()> {
        validate_path(path, false).map_err(|_| ErrorCode::BadArguments)?;
        if path == "/" {
            return Err(ErrorCode::BadArguments);
        }
        // ZooKeeper's special paths are never deleted (from the cluster version that keeps
        // the configuration there: before it, release 0.1's rules apply on every replica).
        if self.cluster_version >= crate::types::CONFIG_NODE_SINCE
            && matches!(path, "/zookeeper" | quota::QUOTA_ROOT | CONFIG_NODE)
        {
            return Err(ErrorCode::BadArguments);
        }
        let p = self.nodes.get(parent(path)).ok_or(ErrorCode::NoNode)?;
        let n = self.nodes.get(path).ok_or(ErrorCode::NoNode)?;
        if !acl::check(&p.acl, perms::DELETE, txn.caller.auth) {
            return Err(ErrorCode::NoAuth);
        }
        version_matches(version, n.version)?;
        if n.num_children() > 0 {
            return Err(ErrorCode::NotEmpty);
        }
        self.may_change_quota(path, txn.caller.auth)?;
        self.remove_node(txn.zxid, path, events);
        Ok(())
    }

    /// Removes a childless node and updates its parent, owner and the reap set.
    fn remove_node(&mut self, zxid: i64, path: &str, events: &mut Vec<Event>) {
        let Some((name, node)) = self.nodes.remove_with_key(path) else {
            return;
        };
        debug_assert!(node.num_children() == 0, "removing {path} with children");
        let len = node.data().len();
        self.data_bytes -= len as u64;
        if let Some(o) = &node.owner {
            let ephemeral = matches!(node.kind(), NodeKind::Ephemeral(_));
            self.tenants.charge(o, len as u64, ephemeral, false, false);
        }
        if let Some((p, quota::LIMIT_NODE)) = quota::quota_node(path) {
            self.quota_roots.remove(p);
        }
        if let Some(q) = self.quota_of(path) {
            self.count_in_quota(&q, -1, -(len as i64));
        }
        let parent_path = parent(path);
        let mut parent_changed = None;
        let changed = self.change_node(parent_path, |p| {
            debug_assert!(
                p.num_children() > 0,
                "{parent_path} lists no child to remove"
            );
            p.set_num_children(p.num_children().saturating_sub(1));
            p.cversion += 1;
            p.pzxid = zxid;
        });
        if let Some((parent_name, p)) = changed {
            parent_changed = Some((parent_name, p.acl.clone()));
        }
        match node.kind() {
            NodeKind::Ephemeral(owner) => {
                if let Some(s) = self.sessions.get_mut(&owner) {
                    s.ephemerals.remove(path);
                }
            }
            NodeKind::Container | NodeKind::Ttl(_) => {
                self.reapable.remove(path);
            }
            NodeKind::Persistent => {}
        }
        events.push(self.event(EventType::NodeDeleted, name, node.acl.clone()));
        if let Some((parent_name, acl)) = parent_changed {
            events.push(self.event(EventType::NodeChildrenChanged, parent_name, acl));
        }
    }

    fn set_data(
        &mut self,
        txn: Txn<'_>,
        r: &SetDataRequest,
        events: &mut Vec<Event>,
    ) -> OpResult<Stat> {
        validate_path(&r.path, false).map_err(|_| ErrorCode::BadArguments)?;
        let path = r.path.as_str();
        let auth = txn.caller.auth;
        let quota = self.quota_of(path);
        let (data, null_data) = self.stored_data(r.data.as_ref());
        let new_len = data.len() as u64;
        // Under a quota, or on a quota's own nodes, the checks read other nodes, so they run on
        // a lookup of their own before the write's; otherwise the write's lookup serves both.
        let apart = quota.is_some() || quota::quota_node(path).is_some();
        if apart {
            self.check_set_data(path, r.version, auth, quota.as_deref(), new_len)?;
        }
        let DataTree {
            nodes,
            tenants,
            data_bytes,
            ..
        } = self;
        // The key comes with the node: the event names the node by it, sharing the tree's
        // allocation (a watch event history of 65,536 changes holds one name per change).
        let (name, slot) = nodes.get_key_value_mut(path).ok_or(ErrorCode::NoNode)?;
        let name = name.clone();
        let old_len = slot.data().len() as u64;
        if !apart {
            may_set_data(slot, r.version, auth)?;
            if let Some(o) = &slot.owner {
                if !tenants.recharge_bytes(o, old_len, new_len) {
                    return Err(ErrorCode::QuotaExceeded);
                }
            }
        }
        *slot = slot.with_data(data);
        slot.change(|n| {
            n.version += 1;
            n.mzxid = txn.zxid;
            n.mtime = txn.time;
            n.set_null_data(null_data);
        });
        let stat = slot.stat();
        let acl = slot.acl.clone();
        *data_bytes = *data_bytes - old_len + new_len;
        if let Some(q) = &quota {
            self.count_in_quota(q, 0, new_len as i64 - old_len as i64);
        }
        events.push(self.event(EventType::NodeDataChanged, name, acl));
        Ok(stat)
    }

    /// set_data's checks for a node under a quota or of a quota, in ZooKeeper's order: the
    /// node exists, the caller may write it, the version matches, the caller may change the
    /// quota, the quota's hard limits hold, and the owning tenant's byte quota; the last
    /// charges the tenant with the new size.
    fn check_set_data(
        &mut self,
        path: &str,
        version: i32,
        auth: &[Id],
        quota: Option<&str>,
        new_len: u64,
    ) -> OpResult<()> {
        let n = self.nodes.get(path).ok_or(ErrorCode::NoNode)?;
        may_set_data(n, version, auth)?;
        let old_len = n.data().len() as u64;
        let owner = n.owner.clone();
        self.may_change_quota(path, auth)?;
        if let Some(q) = quota {
            self.check_quota(q, 0, new_len as i64 - old_len as i64, auth)?;
        }
        if let Some(o) = owner {
            if !self.tenants.recharge_bytes(&o, old_len, new_len) {
                return Err(ErrorCode::QuotaExceeded);
            }
        }
        Ok(())
    }

    fn set_acl(&mut self, txn: Txn<'_>, r: &SetAclRequest) -> OpResult<Stat> {
        validate_path(&r.path, false).map_err(|_| ErrorCode::BadArguments)?;
        let acl = self.fixup(&r.acl, txn.caller.auth)?;
        let n = self.nodes.get(r.path.as_str()).ok_or(ErrorCode::NoNode)?;
        if !acl::check(&n.acl, perms::ADMIN, txn.caller.auth) {
            return Err(ErrorCode::NoAuth);
        }
        version_matches(r.version, n.aversion)?;
        let acl = self.acl_arc(acl);
        let (_, n) = self
            .change_node(&r.path, |m| {
                m.aversion += 1;
                m.acl = acl;
            })
            .ok_or(ErrorCode::NoNode)?;
        Ok(n.stat())
    }

    /// Whether a create's `requested` ACL is one that inherit-at-create replaces by the
    /// parent's (if the parent's names a tenant): only in a cluster with tenants, and only the
    /// empty list (ZooKeeper's `InvalidACL`) or exactly the open ACL every ZooKeeper client
    /// sends by default. Any other ACL is the creator's deliberate choice.
    fn may_inherit(&self, requested: &[Acl]) -> bool {
        !self.tenants.is_empty() && (requested.is_empty() || *requested == *self.open_acl)
    }

    /// [`acl::fixup`], with `tenant:` entries valid only for a declared tenant (a misspelt name
    /// would lock a node away from everyone).
    fn fixup(&self, requested: &[Acl], auth: &[Id]) -> OpResult<Vec<Acl>> {
        let acl = acl::fixup(requested, auth).ok_or(ErrorCode::InvalidAcl)?;
        let undeclared = acl
            .iter()
            .any(|a| a.id.scheme == tenants::TENANT_SCHEME && self.tenants.get(&a.id.id).is_none());
        if undeclared {
            return Err(ErrorCode::InvalidAcl);
        }
        Ok(acl)
    }

    fn check(&self, txn: Txn<'_>, r: &CheckVersionRequest) -> OpResult<()> {
        validate_path(&r.path, false).map_err(|_| ErrorCode::BadArguments)?;
        let n = self.nodes.get(r.path.as_str()).ok_or(ErrorCode::NoNode)?;
        if !acl::check(&n.acl, perms::READ, txn.caller.auth) {
            return Err(ErrorCode::NoAuth);
        }
        version_matches(r.version, n.version)
    }

    /// All or nothing: on the first failing op the tree is restored and every op reports, as in
    /// ZooKeeper, `Ok` before the failure, the failure's code, `RuntimeInconsistency` after it.
    fn multi(&mut self, txn: Txn<'_>, ops: &[MultiOp]) -> Applied {
        let saved = self.clone();
        let mut events = Vec::new();
        let mut results = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            let r = match op {
                MultiOp::Create(r) => self
                    .create(txn, OpCode::Create, with_ttl(r), &mut events)
                    .map(|(path, _)| MultiResult::Create { path, stat: None }),
                MultiOp::Create2(r) => self
                    .create(txn, OpCode::Create2, with_ttl(r), &mut events)
                    .map(|(path, stat)| MultiResult::Create {
                        path,
                        stat: Some(stat),
                    }),
                MultiOp::CreateContainer(r) => self
                    .create(txn, OpCode::CreateContainer, with_ttl(r), &mut events)
                    .map(|(path, stat)| MultiResult::Create {
                        path,
                        stat: Some(stat),
                    }),
                MultiOp::CreateTtl(r) => self
                    .create(txn, OpCode::CreateTtl, r.clone(), &mut events)
                    .map(|(path, stat)| MultiResult::Create {
                        path,
                        stat: Some(stat),
                    }),
                MultiOp::Delete(r) => self
                    .delete(txn, &r.path, r.version, &mut events)
                    .map(|_| MultiResult::Delete),
                MultiOp::SetData(r) => self
                    .set_data(txn, r, &mut events)
                    .map(|stat| MultiResult::SetData { stat }),
                MultiOp::Check(r) => self.check(txn, r).map(|_| MultiResult::Check),
                MultiOp::GetData(_) | MultiOp::GetChildren(_) => Err(ErrorCode::BadArguments),
            };
            match r {
                Ok(res) => results.push(res),
                Err(code) => {
                    *self = saved;
                    let results = (0..ops.len())
                        .map(|j| {
                            MultiResult::Error(match j.cmp(&i) {
                                std::cmp::Ordering::Less => ErrorCode::Ok,
                                std::cmp::Ordering::Equal => code,
                                std::cmp::Ordering::Greater => ErrorCode::RuntimeInconsistency,
                            })
                        })
                        .collect();
                    return Applied::ok(Response::Multi(results), Vec::new());
                }
            }
        }
        Applied::ok(Response::Multi(results), events)
    }

    // ------------------------------------------------------------------------------------------
    // ZooKeeper's quotas (`/zookeeper/quota`, see `crate::quota`)
    // ------------------------------------------------------------------------------------------

    /// The nearest path at or above `path` with a quota (never `/`).
    fn quota_of(&self, path: &str) -> Option<Name> {
        if self.quota_roots.is_empty() {
            return None;
        }
        synod_proto::path::ancestors_or_self(path)
            .filter(|p| *p != "/")
            .find_map(|p| self.quota_roots.get(p).cloned())
    }

    /// `QuotaExceeded` if adding `count` znodes and `bytes` bytes under quota `q` passes one of
    /// its hard limits; a soft limit passed is only logged, as ZooKeeper does. The tree's own
    /// creates (a tenant's home) are never refused: no client can block a declaration.
    fn check_quota(&self, q: &str, count: i64, bytes: i64, auth: &[Id]) -> OpResult<()> {
        if auth == [system_identity()] {
            return Ok(());
        }
        let read =
            |p: String| StatsTrack::parse(self.nodes.get(p.as_str()).map_or(&[][..], |n| n.data()));
        let limits = read(quota::limit_path(q));
        let stats = read(quota::stat_path(q));
        if quota::over_hard_limit(&limits, &stats, count, bytes) {
            return Err(ErrorCode::QuotaExceeded);
        }
        if quota::over_soft_limit(&limits, &stats, count, bytes) {
            tracing::warn!(
                quota = q,
                count,
                bytes,
                "quota exceeded (soft limit): the change goes on"
            );
        }
        Ok(())
    }

    /// Adds `count` znodes and `bytes` bytes to quota `q`'s usage node (as ZooKeeper does: the
    /// node's data changes, not its version, and no watch fires).
    fn count_in_quota(&mut self, q: &str, count: i64, bytes: i64) {
        let path = quota::stat_path(q);
        let Some(n) = self.nodes.get(path.as_str()) else {
            return;
        };
        let now = StatsTrack::parse(n.data());
        let data = StatsTrack::usage(
            now.count().saturating_add(count),
            now.bytes().saturating_add(bytes),
        );
        self.replace_data_quietly(&path, &data);
    }

    /// Recounts the subtree at `p` into its quota's usage node (a new quota: ZooKeeper counts
    /// when `zookeeper_stats` is created). O(size of the subtree), once per `setquota`.
    fn recount_quota(&mut self, p: &str) {
        let (mut count, mut bytes) = (0i64, 0i64);
        let subtree = self.nodes.get(p).into_iter();
        for n in subtree.chain(self.descendants(p).map(|(_, n)| n)) {
            count += 1;
            bytes += n.data().len() as i64;
        }
        let path = quota::stat_path(p);
        self.replace_data_quietly(&path, &StatsTrack::usage(count, bytes));
    }

    /// Sets a node's data without a version, an mzxid or an event (the server's own quota
    /// bookkeeping), keeping the byte counts right.
    fn replace_data_quietly(&mut self, path: &str, data: &[u8]) {
        let Some(n) = self.node_mut(path) else {
            return;
        };
        let old = n.data().len() as u64;
        let new = data.len() as u64;
        *n = n.with_data(data);
        let owner = n.owner.clone();
        self.data_bytes = self.data_bytes - old + new;
        if let Some(o) = owner {
            self.tenants.adjust_bytes(&o, old, new);
        }
    }

    /// Setting, changing or removing the quota of an existing path P needs ADMIN on P (or
    /// `super`): otherwise one tenant could cap another's subtree. ZooKeeper does not check
    /// this (anyone who may write `/zookeeper/quota` may); with the open ACLs it ships, the
    /// outcome is the same.
    fn may_change_quota(&self, path: &str, auth: &[Id]) -> OpResult<()> {
        let Some((p, _)) = quota::quota_node(path) else {
            return Ok(());
        };
        // P itself, or (for a path not created yet) its nearest existing ancestor: nobody caps
        // a subtree they could not administer once it exists.
        let owner = synod_proto::path::ancestors_or_self(p).find_map(|a| self.nodes.get(a));
        match owner {
            Some(n) if !acl::check(&n.acl, perms::ADMIN, auth) => Err(ErrorCode::NoAuth),
            _ => Ok(()),
        }
    }

    // ------------------------------------------------------------------------------------------
    // Tenants (declared by an operator; the entry creates the tenant's home)
    // ------------------------------------------------------------------------------------------

    /// Declares tenant `name` (or replaces its identities and quota) at `zxid`, and makes its
    /// home `/tenants/<name>` (creating `/tenants`, readable by anyone, if missing) private to
    /// it: a new home gets `tenant:<name>:cdrwa`, an existing one has its ACL set to that. A
    /// declaration that breaks a rule of the table ([`tenants::validate`]) changes nothing.
    pub fn declare_tenant(
        &mut self,
        zxid: i64,
        time: i64,
        name: &str,
        mut tenant: Tenant,
    ) -> Result<Vec<Event>, StoreError> {
        tenant.members.sort();
        tenant.members.dedup();
        tenants::validate(&self.tenants, name, &tenant)?;
        let saved = self.clone();
        let made = self.declare_validated(zxid, time, name, tenant);
        if made.is_err() {
            *self = saved;
        }
        made
    }

    fn declare_validated(
        &mut self,
        zxid: i64,
        time: i64,
        name: &str,
        tenant: Tenant,
    ) -> Result<Vec<Event>, StoreError> {
        let home = format!("{}/{name}", tenants::TENANTS_ROOT);
        let declared = self.tenants.get(name).is_some();
        // A home a client made before the declaration, with nodes in it, would keep them (and
        // their ACLs) inside the tenant's private area: refused.
        if !declared
            && self
                .nodes
                .get(home.as_str())
                .is_some_and(|n| n.num_children() > 0)
        {
            return Err(StoreError::Tenant(format!(
                "tenant {name:?}: {home} already exists with nodes in it; remove them first"
            )));
        }
        self.tenants.put(name, tenant);
        let mut events = Vec::new();
        let system = [system_identity()];
        let txn = Txn {
            zxid,
            time,
            caller: Caller {
                session_id: 0,
                auth: &system,
            },
        };
        let home_acl = vec![Acl::new(perms::ALL, tenants::TENANT_SCHEME, name)];
        // `/tenants` is readable by anyone and writable by nobody (but `super`), whoever made it.
        let root_acl = Acl::read_unsafe();
        match self.node_mut(tenants::TENANTS_ROOT) {
            Some(n) if *n.acl != *root_acl => n.change(|m| {
                m.acl = root_acl.into();
                m.aversion += 1;
            }),
            Some(_) => {}
            None => self.internal_create(txn, tenants::TENANTS_ROOT, root_acl, &mut events)?,
        }
        match self.node_mut(&home) {
            Some(n) if *n.acl != *home_acl => n.change(|m| {
                m.acl = home_acl.into();
                m.aversion += 1;
            }),
            Some(_) => {}
            None => self.internal_create(txn, &home, home_acl, &mut events)?,
        }
        Ok(events)
    }

    /// Forgets tenant `name`; `false` if it was not declared. Its home and nodes stay, with
    /// ACLs that now name a tenant nobody belongs to (only `super` reaches them) and their
    /// owner (usage is kept, and found again if the name is declared again).
    pub fn remove_tenant(&mut self, name: &str) -> bool {
        self.tenants.remove(name)
    }

    /// A create on the tree's own behalf (no session, no quota, the given ACL).
    fn internal_create(
        &mut self,
        txn: Txn<'_>,
        path: &str,
        acl: Vec<Acl>,
        events: &mut Vec<Event>,
    ) -> Result<(), StoreError> {
        let r = CreateTtlRequest {
            path: path.to_string(),
            data: Some(Bytes::new()),
            acl,
            flags: CreateMode::Persistent.flags(),
            ttl: -1,
        };
        self.create(txn, OpCode::Create, r, events)
            .map(|_| ())
            .map_err(|code| StoreError::Tenant(format!("cannot create {path}: {code:?}")))
    }

    // ------------------------------------------------------------------------------------------
    // Reaping of container and TTL nodes (the leader proposes, apply re-checks)
    // ------------------------------------------------------------------------------------------

    fn reap_due(node: &Node, now: i64) -> bool {
        node.num_children() == 0
            && match node.kind() {
                NodeKind::Container => node.cversion > 0,
                NodeKind::Ttl(ttl) => now - node.mtime > ttl,
                _ => false,
            }
    }

    /// Container and TTL nodes that are due for deletion at `now` (at most `limit`).
    pub fn reap_candidates(&self, now: i64, limit: usize) -> Vec<String> {
        self.reapable
            .iter()
            .filter(|p| self.nodes.get(&**p).is_some_and(|n| Self::reap_due(n, now)))
            .take(limit)
            .map(|p| p.to_string())
            .collect()
    }

    /// Every childless TTL node: its path, its mzxid (which changes with every modification) and
    /// its TTL in milliseconds, for a reaper that also measures the TTL on a clock of its own
    /// (the leader's monotonic clock, which a step of the wall clock does not move).
    pub fn ttl_nodes(&self) -> Vec<(Name, i64, i64)> {
        self.reapable
            .iter()
            .filter_map(|p| {
                let n = self.nodes.get(&**p)?;
                match n.kind() {
                    NodeKind::Ttl(ttl) if n.num_children() == 0 => Some((p.clone(), n.mzxid, ttl)),
                    _ => None,
                }
            })
            .collect()
    }

    /// Deletes `path` if it is still due at `time` (it may have gained a child or data since it
    /// was proposed); returns the events, empty if nothing was deleted.
    pub fn reap(&mut self, zxid: i64, time: i64, path: &str) -> Vec<Event> {
        let mut events = Vec::new();
        if self
            .nodes
            .get(path)
            .is_some_and(|n| Self::reap_due(n, time))
        {
            self.remove_node(zxid, path, &mut events);
        }
        events
    }

    /// Rebuilds a tree from its nodes and sessions `(id, timeout_ms, passwd, tenant)` and its
    /// tenants, as [`TreeLoader`] does when they are pushed one by one.
    pub fn from_parts(
        nodes: Vec<(String, Node)>,
        sessions: Vec<(i64, i32, Bytes, Option<Name>)>,
        tenants: Vec<(String, Tenant)>,
    ) -> Self {
        let mut loader = TreeLoader::new();
        for (path, node) in nodes {
            loader.push(path, node);
        }
        loader.finish(sessions, tenants)
    }
}

/// Counts one more child on a node [`TreeLoader`] holds (at most [`MAX_CHILDREN`]: an image
/// with more under one node, which no tree writes, keeps that many).
fn add_child(m: &mut NodeMeta) {
    m.set_num_children(m.num_children().saturating_add(1).min(MAX_CHILDREN));
}

/// Rebuilds a tree from what a snapshot stores of it ([`crate::snapshot`]), a node at a time as
/// they are decoded, holding nothing but the tree and, until the last node is in, every other
/// node's two pointers: no copy of the nodes, nor (for an image in the tree's order, as every
/// snapshot synod writes) a list of their paths. Everything the tree derives
/// from its nodes (children counts, the reap set, the data size, the sessions' ephemeral sets,
/// the quota roots, the tenants' usage) is derived here, so a snapshot stores each fact once.
/// Nothing is checked: a node without its parent is kept but listed nowhere, a later duplicate
/// path replaces an earlier one (the snapshot module refuses such images as corrupt).
///
/// Why every other node waits ([`TreeLoader::deferred`]): the map's B-tree splits a full leaf
/// in two halves, so keys inserted in their order leave every leaf half full (the left half
/// never gets another key). Inserting the nodes at even positions first leaves 8 of them in a
/// leaf of 16, and each leaf then takes exactly the 8 nodes at odd positions that sort after
/// its first key and before the next leaf's: a tree loaded in order holds full leaves, about
/// 20 bytes of map per znode fewer (`tests/tree_memory.rs`).
pub struct TreeLoader {
    /// The tree so far, without [`TreeLoader::deferred`]'s nodes. Its nodes are held by nothing
    /// else (no snapshot, no clone of the tree), so [`Node::change`] changes them in place.
    /// Invariant: each node's `num_children` (here or deferred) counts its children pushed so
    /// far, whichever came first.
    tree: DataTree,
    /// The nodes pushed at odd positions while the paths come in order, to be inserted after
    /// the others ([`TreeLoader::settle`]). Invariant: in increasing path order, each greater
    /// than the node pushed before it, and empty once the paths are out of order.
    deferred: Vec<(Name, Node)>,
    /// The parent the last node pushed in order was looked up for, and where it is: its index
    /// in [`TreeLoader::deferred`], or `None` for the tree (or nowhere). Siblings come one after
    /// another in order, so this spares all but the first of them a search of the deferred
    /// nodes. Invariant: the index names that parent; `None` is cleared when that path is
    /// deferred.
    last_parent: Option<(Name, Option<usize>)>,
    /// How many nodes were pushed: the position of the next one.
    pushed: usize,
    /// What a position (how a snapshot's extension names a node) is the node of.
    positions: Positions,
    /// The last node [`TreeLoader::change_at`] found in a tree in order, and its position:
    /// changes at increasing positions walk the tree's keys once in all.
    cursor: Option<(usize, Name)>,
}

/// How [`TreeLoader`] finds the node pushed at a position.
enum Positions {
    /// Every path pushed was greater than the one before (the last one is kept): the node at
    /// position `i` is the tree's `i`-th, and no path needs to be kept.
    InOrder(Option<Name>),
    /// A path was not: the paths in the order pushed (each sharing its allocation with the
    /// tree's key).
    Pushed(Vec<Name>),
}

impl Default for TreeLoader {
    fn default() -> Self {
        Self::new()
    }
}

impl TreeLoader {
    /// An empty tree to load into: not even a root.
    pub fn new() -> Self {
        let mut tree = DataTree::new();
        tree.nodes = imbl::OrdMap::new();
        tree.data_bytes = 0;
        TreeLoader {
            tree,
            deferred: Vec::new(),
            last_parent: None,
            pushed: 0,
            positions: Positions::InOrder(None),
            cursor: None,
        }
    }

    /// How many nodes were pushed: the position of the next one.
    pub fn len(&self) -> usize {
        self.pushed
    }

    /// Whether no node was pushed.
    pub fn is_empty(&self) -> bool {
        self.pushed == 0
    }

    /// Adds the node at `path`, at position [`TreeLoader::len`], its children counted as they
    /// are pushed (no owner is charged yet: [`TreeLoader::finish`]).
    pub fn push(&mut self, path: String, mut node: Node) {
        let name: Name = path.into();
        match &mut self.positions {
            Positions::InOrder(last) if last.as_ref().is_none_or(|l| *l < name) => {
                *last = Some(name.clone());
            }
            Positions::InOrder(_) => {
                // Until now the keys were pushed in their order, once each.
                self.settle();
                let mut names: Vec<Name> = self.tree.nodes.keys().cloned().collect();
                names.push(name.clone());
                self.positions = Positions::Pushed(names);
            }
            Positions::Pushed(names) => names.push(name.clone()),
        }
        self.pushed += 1;
        let t = &mut self.tree;
        // In the tree's order a parent comes before its children; out of it, the children
        // already there are counted.
        let children = match self.positions {
            Positions::InOrder(_) => 0,
            Positions::Pushed(_) => t.children(&name).count().min(MAX_CHILDREN as usize) as u32,
        };
        let share_open = *node.acl == *t.open_acl && !SharedAcl::ptr_eq(&node.acl, &t.open_acl);
        if share_open || node.num_children() != children {
            node.change(|m| {
                if share_open {
                    m.acl = t.open_acl.clone();
                }
                m.set_num_children(children);
            });
        }
        t.data_bytes += node.data().len() as u64;
        if matches!(node.kind(), NodeKind::Container | NodeKind::Ttl(_)) {
            t.reapable.insert(name.clone());
        } else {
            t.reapable.remove(&name);
        }
        let in_order = matches!(self.positions, Positions::InOrder(_));
        if &*name != "/" {
            // Its parent is pushed (it comes before its children in order), or not yet.
            let p = parent(&name);
            let waiting = match (in_order, &self.last_parent) {
                (false, _) => None,
                (true, Some((last, at))) if last.as_str() == p => *at,
                (true, _) => {
                    let at = self
                        .deferred
                        .binary_search_by(|(n, _)| n.as_str().cmp(p))
                        .ok();
                    let key = at.map_or_else(|| p.into(), |i| self.deferred[i].0.clone());
                    self.last_parent = Some((key, at));
                    at
                }
            };
            match waiting {
                Some(i) => self.deferred[i].1.change(add_child),
                None => {
                    if let Some(p) = t.nodes.get_mut(p) {
                        p.change(add_child);
                    }
                }
            }
        }
        if in_order && self.pushed.is_multiple_of(2) {
            debug_assert!(self.deferred.last().is_none_or(|(l, _)| *l < name));
            // A parent looked up before it was pushed (only a path that sorts before its parent,
            // such as `.x` before `/`: not one synod writes) is found now.
            if self
                .last_parent
                .as_ref()
                .is_some_and(|(last, _)| *last == name)
            {
                self.last_parent = None;
            }
            self.deferred.push((name, node));
            return;
        }
        // A path pushed twice (out of order only): the tree derives its facts from the later
        // node only, and its parent counted it once.
        if let Some(replaced) = t.nodes.insert(name.clone(), node) {
            t.data_bytes -= replaced.data().len() as u64;
            if &*name != "/" {
                if let Some(p) = t.nodes.get_mut(parent(&name)) {
                    p.change(|m| m.set_num_children(m.num_children().saturating_sub(1)));
                }
            }
        }
    }

    /// Inserts the deferred nodes into the tree: after the last node is pushed (before its
    /// positions are looked up or the tree is finished), or when the paths stop coming in
    /// order.
    fn settle(&mut self) {
        self.last_parent = None;
        for (name, node) in self.deferred.drain(..) {
            let replaced = self.tree.nodes.insert(name, node);
            debug_assert!(replaced.is_none(), "a deferred path was pushed twice");
        }
        // Its room too (8 MB at 1,000,000 znodes): it only fills again if more are pushed.
        self.deferred = Vec::new();
    }

    /// Changes the node at the path pushed at `position` (what a snapshot's extension adds to
    /// it: its owner, data that is null; the later node if that path was pushed twice); `false`
    /// if no node was pushed there. Cheap for positions in increasing order; an earlier
    /// position than the last one walks the tree from its first key.
    pub fn change_at(&mut self, position: usize, f: impl FnOnce(&mut NodeMeta)) -> bool {
        self.settle();
        let name = match &self.positions {
            Positions::Pushed(names) => names.get(position).cloned(),
            Positions::InOrder(_) => self.key_at(position),
        };
        match name.and_then(|n| self.tree.nodes.get_mut(&n)) {
            Some(node) => {
                node.change(f);
                true
            }
            None => false,
        }
    }

    /// The `position`-th key of a tree pushed in order, from the cursor if it is not past it.
    fn key_at(&mut self, position: usize) -> Option<Name> {
        if position >= self.pushed {
            return None;
        }
        let (from, skip) = match &self.cursor {
            Some((at, key)) if *at <= position => (Bound::Included(&**key), position - at),
            _ => (Bound::Unbounded, position),
        };
        let key = self
            .tree
            .nodes
            .range::<_, str>((from, Bound::Unbounded))
            .nth(skip)
            .map(|(k, _)| k.clone())?;
        self.cursor = Some((position, key.clone()));
        Some(key)
    }

    /// The tree, with its sessions `(id, timeout_ms, passwd, tenant)` and its tenants, and
    /// everything derived from its nodes.
    pub fn finish(
        mut self,
        sessions: Vec<(i64, i32, Bytes, Option<Name>)>,
        tenants: Vec<(String, Tenant)>,
    ) -> DataTree {
        self.settle();
        let mut tree = self.tree;
        let t = &mut tree;
        t.sessions = sessions
            .into_iter()
            .map(|(id, timeout_ms, passwd, tenant)| {
                (
                    id,
                    Session {
                        timeout_ms,
                        passwd,
                        ephemerals: imbl::OrdSet::new(),
                        tenant,
                    },
                )
            })
            .collect();
        for s in t.sessions.values() {
            if let Some(tenant) = &s.tenant {
                t.tenants.charge_session(tenant, true, false);
            }
        }
        for (name, node) in t.nodes.iter() {
            let ephemeral = match node.kind() {
                NodeKind::Ephemeral(owner) => {
                    if let Some(s) = t.sessions.get_mut(&owner) {
                        s.ephemerals.insert(name.clone());
                    }
                    true
                }
                _ => false,
            };
            if let Some(o) = &node.owner {
                t.tenants
                    .charge(o, node.data().len() as u64, ephemeral, true, false);
            }
            if let Some((p, quota::LIMIT_NODE)) = quota::quota_node(name) {
                t.quota_roots.insert(p.into());
            }
        }
        for (name, tenant) in tenants {
            t.tenants.put(&name, tenant);
        }
        tree
    }
}

/// Feeds one field into a digest: fixed-width integers, length-prefixed byte strings, so that no
/// two different sequences of fields hash the same input.
struct DigestWriter(Sha1);

impl DigestWriter {
    fn int(&mut self, v: i64) {
        self.0.update(v.to_be_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        self.0.update((b.len() as u64).to_be_bytes());
        self.0.update(b);
    }
}

/// Hex of a digest (lowercase), as the admin API shows it.
pub fn digest_hex(d: &[u8; 20]) -> String {
    use std::fmt::Write as _;
    d.iter().fold(String::with_capacity(40), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

impl DataTree {
    /// A deterministic SHA-1 digest of the whole replicated state, for comparing replicas: two
    /// trees have equal digests exactly when (up to SHA-1 collisions) they hold the same znodes
    /// and sessions.
    ///
    /// Covered, in this order: every znode sorted by path (byte order) — its path, czxid, mzxid,
    /// pzxid, ctime, mtime, version, cversion, aversion, kind (persistent / ephemeral + owner /
    /// container / TTL + ttl), data and ACL list (perms, scheme, id, in stored order); then every
    /// session sorted by id — its id, timeout and password. What is derived from those facts
    /// (children counts, a session's ephemeral set, the reap set, the data size) is implied and not
    /// hashed again. Node-local state (watches, connections) is not replicated and not covered.
    /// The number of znodes and sessions is hashed first, every string is length-prefixed.
    ///
    /// Cost: O(n log n) in the number of znodes (a sort of the paths) plus the data bytes. Call it
    /// on a clone (O(1)) to keep the replica lock short.
    pub fn digest(&self) -> [u8; 20] {
        let mut w = DigestWriter(Sha1::new());
        let mut sessions: Vec<(i64, &Session)> = self.sessions().collect();
        sessions.sort_unstable_by_key(|(id, _)| *id);
        w.int(self.nodes.len() as i64);
        w.int(sessions.len() as i64);
        // The map iterates in byte order of the paths.
        for (path, n) in &self.nodes {
            w.bytes(path.as_bytes());
            for v in [n.czxid, n.mzxid, n.pzxid, n.ctime, n.mtime] {
                w.int(v);
            }
            for v in [n.version, n.cversion, n.aversion] {
                w.int(i64::from(v));
            }
            let (tag, arg) = match n.kind() {
                NodeKind::Persistent => (0, 0),
                NodeKind::Ephemeral(owner) => (1, owner),
                NodeKind::Container => (2, 0),
                NodeKind::Ttl(ttl) => (3, ttl),
            };
            w.int(tag);
            w.int(arg);
            w.bytes(n.data());
            // Only null data adds a field, so a tree without any hashes as it always did.
            if n.null_data() {
                w.int(-3);
            }
            w.int(n.acl.len() as i64);
            for a in n.acl.iter() {
                w.int(i64::from(a.perms));
                w.bytes(a.id.scheme.as_bytes());
                w.bytes(a.id.id.as_bytes());
            }
            // Only tenants' nodes add a field, so a tenantless tree hashes as it always did.
            if let Some(o) = &n.owner {
                w.int(-1);
                w.bytes(o.as_bytes());
            }
        }
        for (id, s) in sessions {
            w.int(id);
            w.int(i64::from(s.timeout_ms));
            w.bytes(&s.passwd);
            if let Some(t) = &s.tenant {
                w.int(-1);
                w.bytes(t.as_bytes());
            }
        }
        // A tree at the base version hashes as release 0.1's did.
        if self.cluster_version > crate::types::BASE_CLUSTER_VERSION {
            w.int(-2);
            w.int(i64::from(self.cluster_version));
        }
        if self.audit.count > 0 {
            w.int(self.audit.count as i64);
            w.int(self.audit.zxid);
            w.bytes(&self.audit.hash);
        }
        if !self.tenants.is_empty() {
            w.int(self.tenants.iter().count() as i64);
            for (name, t) in self.tenants.iter() {
                w.bytes(name.as_bytes());
                w.int(t.members.len() as i64);
                for (scheme, id) in &t.members {
                    w.bytes(scheme.as_bytes());
                    w.bytes(id.as_bytes());
                }
                for q in [
                    t.quota.znodes,
                    t.quota.bytes,
                    t.quota.ephemerals,
                    t.quota.sessions,
                    t.quota.watches,
                ] {
                    w.int(q.map_or(-1, |v| v.min(i64::MAX as u64) as i64));
                }
            }
        }
        w.0.finalize().into()
    }
}

/// Who the tree acts as for its own writes (a tenant's home): `super`, under a name no
/// certificate or digest can carry (it never leaves the tree).
fn system_identity() -> Id {
    Id {
        scheme: "super".into(),
        id: "\0synod".into(),
    }
}

/// Whether `acl` names a tenant: its nodes' children inherit it (see `may_inherit`).
fn tenanted(acl: &[Acl]) -> bool {
    acl.iter().any(|a| a.id.scheme == tenants::TENANT_SCHEME)
}

/// A plain create as a TTL create with no TTL, so one code path serves every create opcode.
fn with_ttl(r: &CreateRequest) -> CreateTtlRequest {
    CreateTtlRequest {
        path: r.path.clone(),
        data: r.data.clone(),
        acl: r.acl.clone(),
        flags: r.flags,
        ttl: -1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 0x100;

    fn tree() -> DataTree {
        let mut t = DataTree::new();
        t.create_session(S, 10_000, Bytes::from_static(&[7; 16]));
        t
    }

    fn txn(zxid: i64, auth: &[Id]) -> Txn<'_> {
        Txn {
            zxid,
            time: 1000 + zxid,
            caller: Caller {
                session_id: S,
                auth,
            },
        }
    }

    fn open() -> SharedAcl {
        Acl::open_unsafe().into()
    }

    /// Null data stays null from the cluster version that has it (snapshot and digest keep
    /// it apart from empty); before that version it is stored empty, as release 0.1 stored it.
    #[test]
    fn null_data_is_kept_apart_from_empty_from_its_cluster_version() {
        let create = |path: &str| {
            Request::Create2(CreateRequest {
                path: path.into(),
                data: None,
                acl: Acl::open_unsafe(),
                flags: 0,
            })
        };
        let mut old = tree();
        old.apply(txn(1, &[]), &create("/n"));
        assert_eq!(old.get_data("/n", &[]).map(|d| d.0), Ok(Some(Bytes::new())));

        let mut t = tree();
        assert!(t.raise_cluster_version(crate::types::NULL_DATA_SINCE));
        t.apply(txn(1, &[]), &create("/n"));
        t.apply(txn(2, &[]), &create("/e"));
        let set_empty = Request::SetData(SetDataRequest {
            path: "/e".into(),
            data: Some(Bytes::new()),
            version: -1,
        });
        t.apply(txn(3, &[]), &set_empty);
        assert_eq!(t.get_data("/n", &[]).map(|d| d.0), Ok(None));
        assert_eq!(t.get_data("/e", &[]).map(|d| d.0), Ok(Some(Bytes::new())));
        let copy = crate::snapshot::decode_tree(&crate::snapshot::encode_tree(&t).expect("encode"))
            .expect("decode");
        assert_eq!(copy.get_data("/n", &[]).map(|d| d.0), Ok(None));
        assert_eq!(
            copy.get_data("/e", &[]).map(|d| d.0),
            Ok(Some(Bytes::new()))
        );
        assert_eq!(copy.digest(), t.digest());
        let set_null = Request::SetData(SetDataRequest {
            path: "/e".into(),
            data: None,
            version: -1,
        });
        t.apply(txn(4, &[]), &set_null);
        assert_eq!(t.get_data("/e", &[]).map(|d| d.0), Ok(None));
        assert_ne!(copy.digest(), t.digest(), "null and empty hash apart");
    }

    /// Each event carries the ACL of the node it is about as of the change: a watcher's right
    /// to hear of it is decided against that, not against the tree when it is delivered.
    #[test]
    fn events_carry_the_acl_of_their_node_at_the_change() {
        let mut t = tree();
        let alice = [Id {
            scheme: "digest".into(),
            id: "alice:h".into(),
        }];
        let private = vec![Acl::new(perms::ALL, "digest", "alice:h")];
        let mk = Request::Create2(CreateRequest {
            path: "/p".into(),
            data: Some(Bytes::new()),
            acl: private.clone(),
            flags: 0,
        });
        let a = t.apply(txn(1, &alice), &mk);
        let acls: Vec<(EventType, Vec<Acl>)> = a
            .events
            .iter()
            .map(|e| (e.event_type, e.acl.to_vec()))
            .collect();
        assert_eq!(
            acls,
            [
                (EventType::NodeCreated, private.clone()),
                (EventType::NodeChildrenChanged, Acl::open_unsafe())
            ]
        );
        let child = Request::Create2(CreateRequest {
            path: "/p/c".into(),
            data: Some(Bytes::new()),
            acl: Acl::open_unsafe(),
            flags: 0,
        });
        let a = t.apply(txn(2, &alice), &child);
        assert_eq!(a.events[1].acl.to_vec(), private, "the parent's ACL");
        let del = delete("/p/c");
        let a = t.apply(txn(3, &alice), &del);
        assert_eq!(a.events[0].acl, open(), "the deleted node's last ACL");
        assert_eq!(a.events[1].acl.to_vec(), private);
    }

    fn id(scheme: &str, i: &str) -> Id {
        Id {
            scheme: scheme.into(),
            id: i.into(),
        }
    }

    /// Two institutions: the hospital's certificates (org "St Mary") and the lab's digest user.
    fn tenanted() -> DataTree {
        let mut t = tree();
        let hospital = Tenant {
            members: vec![("org".into(), "St Mary".into())],
            quota: Default::default(),
        };
        let lab = Tenant {
            members: vec![("digest".into(), "lab:h".into())],
            quota: tenants::Quota {
                znodes: Some(2),
                bytes: Some(10),
                ephemerals: Some(1),
                sessions: Some(1),
                watches: None,
            },
        };
        assert!(t.declare_tenant(1, 1000, "hospital", hospital).is_ok());
        assert!(t.declare_tenant(2, 1000, "lab", lab).is_ok());
        t
    }

    fn create_with(path: &str, data: &'static [u8], acl: Vec<Acl>, mode: CreateMode) -> Request {
        Request::Create2(CreateRequest {
            path: path.into(),
            data: Some(Bytes::from_static(data)),
            acl,
            flags: mode.flags(),
        })
    }

    #[test]
    fn a_declaration_makes_a_private_home_and_resolves_at_its_entry() {
        let mut t = tenanted();
        let home = t.node("/tenants/hospital").expect("home");
        assert_eq!(
            home.acl.to_vec(),
            [Acl::new(perms::ALL, "tenant", "hospital")]
        );
        assert_eq!(
            t.node("/tenants").expect("root").acl.to_vec(),
            Acl::read_unsafe()
        );
        let nurse = [id("x509", "nurse"), id("org", "St Mary")];
        let lab = [id("digest", "lab:h")];
        assert_eq!(t.get_data("/tenants/hospital", &nurse).map(|_| ()), Ok(()));
        assert_eq!(t.exists("/tenants/hospital", &lab), Err(ErrorCode::NoAuth));
        // Claiming the tenant outright does not work.
        let claim = [id("tenant", "hospital")];
        assert_eq!(
            t.exists("/tenants/hospital", &claim),
            Err(ErrorCode::NoAuth)
        );
        // A removed tenant's members lose it at the removal's entry.
        assert!(t.remove_tenant("hospital"));
        let a = t.apply(
            txn(9, &nurse),
            &create_with(
                "/tenants/hospital/x",
                b"",
                Acl::open_unsafe(),
                CreateMode::Persistent,
            ),
        );
        assert_eq!(a.err, ErrorCode::NoAuth);
        assert!(!t.remove_tenant("hospital"));
        // Declaring an identity that belongs to another tenant is refused; nothing changes.
        let before = t.digest();
        let steal = Tenant {
            members: vec![("digest".into(), "lab:h".into())],
            quota: Default::default(),
        };
        assert!(t.declare_tenant(10, 1000, "clinic", steal).is_err());
        assert_eq!(t.digest(), before);
    }

    #[test]
    fn a_lowered_session_quota_does_not_stop_creates() {
        let mut t = tenanted();
        let lab = [id("digest", "lab:h")];
        assert_eq!(t.open_session(0x200, 5000, Bytes::new(), &lab), Ok(()));
        let mut lowered = t.tenants().get("lab").expect("lab").clone();
        lowered.quota.sessions = Some(0);
        assert!(t.declare_tenant(9, 1000, "lab", lowered).is_ok());
        let a = t.apply(
            txn(10, &lab),
            &create_with("/x", b"", Acl::open_unsafe(), CreateMode::Persistent),
        );
        assert_eq!(a.err, ErrorCode::Ok);
    }

    /// Every znode a tenant owns names it with the one allocation the tenants' table holds, not
    /// a copy of its own (about 48 bytes a znode); so does a tree loaded from a snapshot.
    #[test]
    fn a_tenants_znodes_share_its_name() {
        let mut t = tenanted();
        let nurse = t.tenants().resolve(&[id("org", "St Mary")]).into_owned();
        for (i, path) in ["/tenants/hospital/a", "/tenants/hospital/b"]
            .iter()
            .enumerate()
        {
            let a = t.apply(
                txn(10 + i as i64, &nurse),
                &create_with(path, b"x", Vec::new(), CreateMode::Persistent),
            );
            assert_eq!(a.err, ErrorCode::Ok, "{path}");
        }
        let owner = |t: &DataTree, p: &str| t.node(p).and_then(|n| n.owner.clone());
        for tree in [
            t.clone(),
            crate::snapshot::decode_tree(&crate::snapshot::encode_tree(&t).expect("encode"))
                .expect("decode"),
        ] {
            let (a, b) = (
                owner(&tree, "/tenants/hospital/a"),
                owner(&tree, "/tenants/hospital/b"),
            );
            assert_eq!(a.as_deref(), Some("hospital"));
            assert!(a.zip(b).is_some_and(|(a, b)| Name::ptr_eq(&a, &b)));
        }
    }

    #[test]
    fn sessions_are_charged_to_their_tenant_until_they_end() {
        let mut t = tenanted();
        let lab = [id("digest", "lab:h")];
        assert_eq!(t.open_session(0x200, 5000, Bytes::new(), &lab), Ok(()));
        assert_eq!(
            t.open_session(0x201, 5000, Bytes::new(), &lab),
            Err(ErrorCode::QuotaExceeded)
        );
        assert!(t.session(0x201).is_none());
        assert_eq!(
            t.open_session(0x202, 5000, Bytes::new(), &[]),
            Ok(()),
            "no tenant"
        );
        assert_eq!(t.tenants().usage("lab").sessions, 1);
        t.close_session(10, 0x200);
        assert_eq!(t.tenants().usage("lab").sessions, 0);
        assert_eq!(t.open_session(0x203, 5000, Bytes::new(), &lab), Ok(()));
    }

    /// ZooKeeper's `/zookeeper/quota`: only who may administer a path may cap it, and its
    /// usage node follows every change below it (the cases against ZooKeeper itself are in
    /// the conformance suite).
    #[test]
    fn a_quota_is_set_by_the_paths_admin_and_counts_every_change_below_it() {
        let mut t = tenanted();
        let nurse = [id("org", "St Mary")];
        let lab = [id("digest", "lab:h")];
        let mk = |path: &str, data: &'static [u8]| {
            create_with(path, data, Acl::open_unsafe(), CreateMode::Persistent)
        };
        assert_eq!(
            t.apply(txn(10, &nurse), &mk("/tenants/hospital/q", b"abc"))
                .err,
            ErrorCode::Ok
        );
        let quota = "/zookeeper/quota/tenants/hospital/q";
        for (i, p) in [
            "/zookeeper/quota/tenants",
            "/zookeeper/quota/tenants/hospital",
            quota,
        ]
        .into_iter()
        .enumerate()
        {
            assert_eq!(
                t.apply(txn(11 + i as i64, &nurse), &mk(p, b"")).err,
                ErrorCode::Ok,
                "{p}"
            );
        }
        let limits = format!("{quota}/zookeeper_limits");
        let hard = b"count=-1,bytes=-1=;byteHardLimit=-1;countHardLimit=2";
        // The lab may not cap the hospital's subtree; the hospital may.
        assert_eq!(
            t.apply(txn(20, &lab), &mk(&limits, hard)).err,
            ErrorCode::NoAuth
        );
        assert_eq!(
            t.apply(txn(21, &nurse), &mk(&limits, hard)).err,
            ErrorCode::Ok
        );
        let stats = format!("{quota}/zookeeper_stats");
        assert_eq!(
            t.apply(txn(22, &nurse), &mk(&stats, b"")).err,
            ErrorCode::Ok
        );
        assert_eq!(t.node(&stats).expect("stats").data(), b"count=1,bytes=3");
        assert_eq!(
            t.apply(txn(23, &nurse), &mk("/tenants/hospital/q/a", b"12"))
                .err,
            ErrorCode::Ok
        );
        assert_eq!(
            t.apply(txn(24, &nurse), &mk("/tenants/hospital/q/b", b""))
                .err,
            ErrorCode::QuotaExceeded
        );
        assert_eq!(t.node(&stats).expect("stats").data(), b"count=2,bytes=5");
        let before = t.data_bytes();
        let del = delete("/tenants/hospital/q/a");
        assert_eq!(t.apply(txn(25, &nurse), &del).err, ErrorCode::Ok);
        assert_eq!(t.node(&stats).expect("stats").data(), b"count=1,bytes=3");
        assert_eq!(
            t.data_bytes(),
            before - 2,
            "the deleted node's 2 bytes; the stats node's length is the same"
        );
        // A tree rebuilt from its parts knows its quotas.
        let rebuilt = DataTree::from_parts(
            t.nodes().map(|(p, n)| (p.to_string(), n.clone())).collect(),
            Vec::new(),
            t.tenants()
                .iter()
                .map(|(n, x)| (n.to_string(), x.clone()))
                .collect(),
        );
        assert_eq!(
            rebuilt.quota_of("/tenants/hospital/q/x").as_deref(),
            Some("/tenants/hospital/q")
        );
    }

    #[test]
    fn nobody_squats_a_home_or_caps_a_subtree_they_could_not_administer() {
        let mut t = tree();
        let open = || Acl::open_unsafe();
        // Before any declaration, a client makes /tenants and a "home" with a node in it.
        for (i, p) in ["/tenants", "/tenants/clinic", "/tenants/clinic/inbox"]
            .into_iter()
            .enumerate()
        {
            let a = t.apply(
                txn(i as i64 + 1, &[]),
                &create_with(p, b"", open(), CreateMode::Persistent),
            );
            assert_eq!(a.err, ErrorCode::Ok, "{p}");
        }
        let clinic = Tenant {
            members: vec![("org".into(), "Clinic".into())],
            quota: Default::default(),
        };
        assert!(
            t.declare_tenant(10, 1000, "clinic", clinic.clone())
                .is_err(),
            "a home with nodes"
        );
        let hospital = Tenant {
            members: vec![("org".into(), "St Mary".into())],
            quota: Default::default(),
        };
        assert!(t.declare_tenant(11, 1000, "hospital", hospital).is_ok());
        assert_eq!(
            t.node("/tenants").expect("root").acl.to_vec(),
            Acl::read_unsafe(),
            "/tenants made read-only"
        );
        // A quota on a path that does not exist yet needs ADMIN on its nearest ancestor.
        let lab = [id("digest", "lab:h")];
        let nurse = [id("org", "St Mary")];
        for (i, p) in [
            "/zookeeper/quota/tenants",
            "/zookeeper/quota/tenants/hospital",
            "/zookeeper/quota/tenants/hospital/new",
        ]
        .into_iter()
        .enumerate()
        {
            assert_eq!(
                t.apply(
                    txn(20 + i as i64, &nurse),
                    &create_with(p, b"", open(), CreateMode::Persistent)
                )
                .err,
                ErrorCode::Ok
            );
        }
        let limits = "/zookeeper/quota/tenants/hospital/new/zookeeper_limits";
        let cap = b"count=-1,bytes=-1=;byteHardLimit=-1;countHardLimit=0";
        assert_eq!(
            t.apply(
                txn(30, &lab),
                &create_with(limits, cap, open(), CreateMode::Persistent)
            )
            .err,
            ErrorCode::NoAuth
        );
        assert_eq!(
            t.apply(
                txn(31, &nurse),
                &create_with(limits, cap, open(), CreateMode::Persistent)
            )
            .err,
            ErrorCode::Ok
        );
    }

    #[test]
    fn children_of_a_tenants_node_inherit_its_acl_unless_given_one() {
        let mut t = tenanted();
        let nurse = [id("org", "St Mary")];
        let lab = [id("digest", "lab:h")];
        let home_acl = vec![Acl::new(perms::ALL, "tenant", "hospital")];
        for (i, (path, acl)) in [
            ("/tenants/hospital/case", Acl::open_unsafe()),
            ("/tenants/hospital/empty", vec![]),
        ]
        .into_iter()
        .enumerate()
        {
            let a = t.apply(
                txn(10 + i as i64, &nurse),
                &create_with(path, b"x", acl, CreateMode::Persistent),
            );
            assert_eq!(a.err, ErrorCode::Ok, "{path}");
            assert_eq!(
                t.node(path).expect("created").acl.to_vec(),
                home_acl,
                "{path}"
            );
            assert_eq!(t.get_data(path, &lab).map(|_| ()), Err(ErrorCode::NoAuth));
        }
        // A deliberate ACL is kept: the hospital shares a case with the lab.
        let shared = vec![
            Acl::new(perms::ALL, "tenant", "hospital"),
            Acl::new(perms::READ | perms::WRITE, "tenant", "lab"),
        ];
        let a = t.apply(
            txn(20, &nurse),
            &create_with("/shared", b"", shared.clone(), CreateMode::Persistent),
        );
        assert_eq!(a.err, ErrorCode::Ok);
        assert_eq!(t.get_data("/shared", &lab).map(|_| ()), Ok(()));
        let set = Request::SetData(SetDataRequest {
            path: "/shared".into(),
            data: Some(Bytes::from_static(b"finding")),
            version: -1,
        });
        assert_eq!(t.apply(txn(21, &lab), &set).err, ErrorCode::Ok);
        // Outside tenant areas, and with a misspelt tenant, nothing is inherited or allowed.
        let a = t.apply(
            txn(22, &nurse),
            &create_with("/public", b"", Acl::open_unsafe(), CreateMode::Persistent),
        );
        assert_eq!(a.err, ErrorCode::Ok);
        assert_eq!(
            t.node("/public").expect("public").acl.to_vec(),
            Acl::open_unsafe()
        );
        let typo = vec![Acl::new(perms::ALL, "tenant", "hospitol")];
        let a = t.apply(
            txn(23, &nurse),
            &create_with("/t", b"", typo, CreateMode::Persistent),
        );
        assert_eq!(a.err, ErrorCode::InvalidAcl);
        let org = vec![Acl::new(perms::ALL, "org", "St Mary")];
        let a = t.apply(
            txn(24, &nurse),
            &create_with("/o", b"", org, CreateMode::Persistent),
        );
        assert_eq!(a.err, ErrorCode::InvalidAcl);
        // Without tenants an empty ACL is ZooKeeper's InvalidACL, as always.
        let mut plain = tree();
        let a = plain.apply(
            txn(1, &[]),
            &create_with("/e", b"", vec![], CreateMode::Persistent),
        );
        assert_eq!(a.err, ErrorCode::InvalidAcl);
    }

    #[test]
    fn quotas_refuse_exactly_past_the_limit_and_a_multi_changes_nothing() {
        let mut t = tenanted();
        let lab = [id("digest", "lab:h")];
        let open = Acl::open_unsafe;
        let ok = |a: Applied| a.err;
        assert_eq!(
            ok(t.apply(
                txn(10, &lab),
                &create_with("/a", b"12345", open(), CreateMode::Ephemeral)
            )),
            ErrorCode::Ok
        );
        assert_eq!(
            ok(t.apply(
                txn(11, &lab),
                &create_with("/b", b"", open(), CreateMode::Ephemeral)
            )),
            ErrorCode::QuotaExceeded,
            "a second ephemeral"
        );
        assert_eq!(
            ok(t.apply(
                txn(12, &lab),
                &create_with("/b", b"123456", open(), CreateMode::Persistent)
            )),
            ErrorCode::QuotaExceeded,
            "eleven bytes"
        );
        assert_eq!(
            ok(t.apply(
                txn(13, &lab),
                &create_with("/b", b"12345", open(), CreateMode::Persistent)
            )),
            ErrorCode::Ok
        );
        let usage = t.tenants().usage("lab");
        assert_eq!((usage.znodes, usage.bytes, usage.ephemerals), (2, 10, 1));
        let grow = Request::SetData(SetDataRequest {
            path: "/b".into(),
            data: Some(Bytes::from_static(b"123456")),
            version: -1,
        });
        assert_eq!(t.apply(txn(14, &lab), &grow).err, ErrorCode::QuotaExceeded);
        // A multi that frees room and then uses more than it freed fails whole.
        let before = t.digest();
        let multi = Request::Multi(vec![
            MultiOp::Delete(DeleteRequest {
                path: "/a".into(),
                version: -1,
            }),
            MultiOp::Create(CreateRequest {
                path: "/c".into(),
                data: Some(Bytes::from_static(b"12345")),
                acl: open(),
                flags: 0,
            }),
            MultiOp::Create(CreateRequest {
                path: "/d".into(),
                data: Some(Bytes::new()),
                acl: open(),
                flags: 0,
            }),
        ]);
        let a = t.apply(txn(15, &lab), &multi);
        assert_eq!(
            a.response,
            Response::Multi(vec![
                MultiResult::Error(ErrorCode::Ok),
                MultiResult::Error(ErrorCode::Ok),
                MultiResult::Error(ErrorCode::QuotaExceeded),
            ])
        );
        assert_eq!(t.digest(), before);
        assert_eq!(t.tenants().usage("lab"), usage);
        // The hospital (no quota) and callers outside every tenant are not limited; deleting
        // credits the owner, whoever deletes.
        let nurse = [id("org", "St Mary")];
        assert_eq!(
            ok(t.apply(
                txn(16, &nurse),
                &create_with("/h", b"123456789012", open(), CreateMode::Persistent)
            )),
            ErrorCode::Ok
        );
        let del = delete("/b");
        assert_eq!(t.apply(txn(17, &nurse), &del).err, ErrorCode::Ok);
        assert_eq!(t.tenants().usage("lab").znodes, 1);
        t.close_session(18, S);
        assert_eq!(t.tenants().usage("lab"), tenants::Usage::default());
    }

    /// getAllChildrenNumber counts what the caller could find by listing: a private node
    /// itself (its name shows in its readable parent's children), nothing below it.
    #[test]
    fn all_children_number_counts_only_what_the_caller_could_list() {
        let mut t = tree();
        let owner = [id("digest", "alice:h")];
        let private = vec![Acl::new(perms::ALL, "digest", "alice:h")];
        // Private: /s/p (with open nodes below it) and /s/e (empty). Their siblings /s/p-x and
        // /s/p0 sort around /s/p's subtree ('-' < '/' < '0').
        for (i, p) in [
            "/s", "/s/a", "/s/a/b", "/s/p", "/s/p/x", "/s/p/x/y", "/s/p-x", "/s/p-x/q", "/s/p0",
            "/s/e", "/s/f",
        ]
        .into_iter()
        .enumerate()
        {
            let mut req = create(p, CreateMode::Persistent);
            if let (Request::Create2(r), "/s/p" | "/s/e") = (&mut req, p) {
                r.acl = private.clone();
            }
            assert_eq!(
                t.apply(txn(i as i64 + 1, &owner), &req).err,
                ErrorCode::Ok,
                "{p}"
            );
        }
        assert_eq!(t.all_children_number("/s", &owner), Ok(10));
        assert_eq!(
            t.all_children_number("/s", &[]),
            Ok(8),
            "all but /s/p/x and /s/p/x/y"
        );
        // And /s, and the system nodes /zookeeper, /zookeeper/quota and /zookeeper/config.
        assert_eq!(t.all_children_number("/", &[]), Ok(8 + 1 + 3));
        // What listing children from the node down finds, one level at a time.
        fn listed(t: &DataTree, path: &str, auth: &[Id]) -> i32 {
            let children = t
                .get_children(path, auth)
                .map(|(c, _)| c)
                .unwrap_or_default();
            children
                .iter()
                .map(|c| 1 + listed(t, &synod_proto::path::child(path, c), auth))
                .sum()
        }
        for auth in [&owner[..], &[]] {
            for path in ["/", "/s", "/s/a", "/s/p-x"] {
                assert_eq!(
                    t.all_children_number(path, auth),
                    Ok(listed(&t, path, auth))
                );
            }
        }
        assert_eq!(t.all_children_number("/s/p", &[]), Err(ErrorCode::NoAuth));
    }

    /// A node of the quota tree is guarded by the path it mirrors (its limits and stats node by
    /// the path they count): READ on it, or ADMIN on its nearest ancestor while it is missing;
    /// nothing else is guarded, the quota root included.
    #[test]
    fn a_quota_node_is_guarded_by_the_path_it_mirrors() {
        let mut t = tree();
        t.apply(txn(1, &[]), &create("/a", CreateMode::Persistent));
        for unguarded in ["/a", "/zookeeper/quota", "/zookeeper/quotas", "/zookeeper"] {
            assert_eq!(t.quota_guard(unguarded), None, "{unguarded}");
        }
        let a_acl = t.node("/a").map(|n| n.acl.clone());
        for on_a in ["/zookeeper/quota/a", "/zookeeper/quota/a/zookeeper_stats"] {
            let g = t.quota_guard(on_a);
            assert_eq!(g.as_ref().map(|g| g.perm), Some(perms::READ), "{on_a}");
            assert_eq!(g.map(|g| g.acl), a_acl, "{on_a}");
        }
        let missing = t.quota_guard("/zookeeper/quota/a/b/zookeeper_limits");
        assert_eq!(missing.as_ref().map(|g| g.perm), Some(perms::ADMIN));
        assert_eq!(missing.map(|g| g.acl), a_acl);
        // A quota on /a's own mirror counts /a's quota nodes: guarded by /a too.
        let nested = t.quota_guard("/zookeeper/quota/zookeeper/quota/a/zookeeper_stats");
        assert_eq!(nested.as_ref().map(|g| g.perm), Some(perms::READ));
        assert_eq!(nested.map(|g| g.acl), a_acl);
    }

    fn create(path: &str, mode: CreateMode) -> Request {
        Request::Create2(CreateRequest {
            path: path.into(),
            data: Some(Bytes::from_static(b"d")),
            acl: Acl::open_unsafe(),
            flags: mode.flags(),
        })
    }

    /// An unconditional delete of `path`.
    fn delete(path: &str) -> Request {
        Request::Delete(DeleteRequest {
            path: path.into(),
            version: -1,
        })
    }

    fn created(a: &Applied) -> (String, Stat) {
        match &a.response {
            Response::Create2(r) => (r.path.clone(), r.stat),
            other => panic!("not a create2 reply: {other:?} ({:?})", a.err),
        }
    }

    #[test]
    fn create_sets_stat_and_parent() {
        let mut t = tree();
        let a = t.apply(txn(5, &[]), &create("/a", CreateMode::Persistent));
        let (path, stat) = created(&a);
        assert_eq!(path, "/a");
        assert_eq!(
            (
                stat.czxid,
                stat.mzxid,
                stat.pzxid,
                stat.ctime,
                stat.data_length
            ),
            (5, 5, 5, 1005, 1)
        );
        let root = t.stat("/").unwrap();
        assert_eq!((root.cversion, root.pzxid, root.num_children), (1, 5, 2));
        assert_eq!(
            a.events,
            vec![
                Event::new(EventType::NodeCreated, "/a", open()),
                Event::new(EventType::NodeChildrenChanged, "/", open())
            ]
        );
        assert_eq!(
            t.apply(txn(6, &[]), &create("/a", CreateMode::Persistent))
                .err,
            ErrorCode::NodeExists
        );
        assert_eq!(
            t.apply(txn(7, &[]), &create("/x/y", CreateMode::Persistent))
                .err,
            ErrorCode::NoNode
        );
        assert_eq!(
            t.apply(txn(8, &[]), &create("bad", CreateMode::Persistent))
                .err,
            ErrorCode::BadArguments
        );
    }

    #[test]
    fn sequential_names_follow_parent_cversion_including_deletes() {
        let mut t = tree();
        t.apply(txn(1, &[]), &create("/p", CreateMode::Persistent));
        let n0 = created(&t.apply(
            txn(2, &[]),
            &create("/p/n-", CreateMode::PersistentSequential),
        ))
        .0;
        t.apply(txn(3, &[]), &create("/p/x", CreateMode::Persistent));
        t.apply(txn(4, &[]), &delete("/p/x"));
        let n3 = created(&t.apply(
            txn(5, &[]),
            &create("/p/n-", CreateMode::EphemeralSequential),
        ))
        .0;
        assert_eq!(
            (n0.as_str(), n3.as_str()),
            ("/p/n-0000000000", "/p/n-0000000003")
        );
    }

    /// A node's children count shares a word with its kind and null-data flag, so it stops at
    /// `MAX_CHILDREN`: a create under a node that has that many is refused and changes
    /// nothing, and one child fewer makes room again.
    #[test]
    fn a_node_with_the_most_children_takes_no_more() {
        let mut t = tree();
        t.apply(txn(1, &[]), &create("/a", CreateMode::Persistent));
        t.apply(txn(2, &[]), &create("/a/x", CreateMode::Persistent));
        t.node_mut("/a")
            .expect("created")
            .change(|m| m.set_num_children(MAX_CHILDREN));
        let before = t.digest();
        for mode in [CreateMode::Persistent, CreateMode::EphemeralSequential] {
            let refused = t.apply(txn(3, &[]), &create("/a/y", mode));
            assert_eq!(refused.err, ErrorCode::QuotaExceeded);
            assert!(refused.events.is_empty());
        }
        assert_eq!(t.digest(), before, "nothing changed");
        assert!(t.stat("/a/y").is_none());
        let deleted = t.apply(txn(4, &[]), &delete("/a/x"));
        assert_eq!(deleted.err, ErrorCode::Ok);
        assert_eq!(
            t.stat("/a").map(|s| s.num_children),
            Some(MAX_CHILDREN as i32 - 1)
        );
        let (p, _) = created(&t.apply(txn(5, &[]), &create("/a/y", CreateMode::Ephemeral)));
        assert_eq!(p, "/a/y");
        assert_eq!(
            t.stat("/a").map(|s| s.num_children),
            Some(MAX_CHILDREN as i32)
        );
        assert_eq!(t.stat("/a/y").map(|s| s.ephemeral_owner), Some(S));
    }

    #[test]
    fn ephemerals_go_with_their_session_and_refuse_children() {
        let mut t = tree();
        let (p, st) = created(&t.apply(txn(1, &[]), &create("/e", CreateMode::Ephemeral)));
        assert_eq!(st.ephemeral_owner, S);
        assert_eq!(t.ephemerals(S, "/"), vec![p.clone()]);
        assert_eq!(
            t.apply(txn(2, &[]), &create("/e/c", CreateMode::Persistent))
                .err,
            ErrorCode::NoChildrenForEphemerals
        );
        let events = t.close_session(3, S);
        assert!(t.stat("/e").is_none());
        assert_eq!(events[0], Event::new(EventType::NodeDeleted, "/e", open()));
        assert_eq!(t.stat("/").unwrap().pzxid, 3);
        assert_eq!(
            t.apply(txn(4, &[]), &create("/f", CreateMode::Persistent))
                .err,
            ErrorCode::SessionExpired
        );
    }

    /// The events of a change name their nodes by the tree's own keys, not by copies: the watch
    /// event history keeps 65,536 events, and a copied name per event was half its memory.
    #[test]
    fn events_share_the_names_of_the_tree() {
        let mut t = tree();
        let key = |t: &DataTree, p: &str| -> Name {
            t.nodes.get_key_value(p).expect("node exists").0.clone()
        };
        let shares = |ev: &Event, name: &Name| Name::ptr_eq(&ev.path, name);
        let a = t.apply(txn(1, &[]), &create("/a", CreateMode::Persistent));
        assert!(shares(&a.events[0], &key(&t, "/a")), "created");
        assert!(shares(&a.events[1], &key(&t, "/")), "the parent");
        let b = t.apply(txn(2, &[]), &create("/a/b", CreateMode::Persistent));
        assert!(shares(&b.events[1], &key(&t, "/a")), "the parent");
        let set = Request::SetData(SetDataRequest {
            path: "/a/b".into(),
            data: Some(Bytes::from_static(b"x")),
            version: -1,
        });
        let s = t.apply(txn(3, &[]), &set);
        assert_eq!(s.err, ErrorCode::Ok);
        assert!(shares(&s.events[0], &key(&t, "/a/b")), "changed");
        let b_name = key(&t, "/a/b");
        let d = t.apply(txn(4, &[]), &delete("/a/b"));
        assert_eq!(d.err, ErrorCode::Ok);
        assert!(shares(&d.events[0], &b_name), "deleted");
        assert!(shares(&d.events[1], &key(&t, "/a")), "the parent");
    }

    #[test]
    fn set_data_delete_and_versions() {
        let mut t = tree();
        t.apply(txn(1, &[]), &create("/a", CreateMode::Persistent));
        let set = |v| {
            Request::SetData(SetDataRequest {
                path: "/a".into(),
                data: Some(Bytes::from_static(b"xyz")),
                version: v,
            })
        };
        assert_eq!(t.apply(txn(2, &[]), &set(3)).err, ErrorCode::BadVersion);
        let Response::Stat(st) = t.apply(txn(3, &[]), &set(0)).response else {
            panic!()
        };
        assert_eq!(
            (st.version, st.mzxid, st.czxid, st.data_length, st.mtime),
            (1, 3, 1, 3, 1003)
        );
        assert_eq!(t.data_bytes(), 3);
        t.apply(txn(4, &[]), &create("/a/b", CreateMode::Persistent));
        let del = |p: &str, v| {
            Request::Delete(DeleteRequest {
                path: p.into(),
                version: v,
            })
        };
        assert_eq!(
            t.apply(txn(5, &[]), &del("/a", -1)).err,
            ErrorCode::NotEmpty
        );
        assert_eq!(
            t.apply(txn(6, &[]), &del("/a/b", 4)).err,
            ErrorCode::BadVersion
        );
        assert_eq!(t.apply(txn(7, &[]), &del("/a/b", 0)).err, ErrorCode::Ok);
        assert_eq!(
            t.apply(txn(8, &[]), &del("/", -1)).err,
            ErrorCode::BadArguments
        );
        assert_eq!(
            t.apply(txn(9, &[]), &del("/nope", -1)).err,
            ErrorCode::NoNode
        );
    }

    #[test]
    fn failed_multi_changes_nothing_and_reports_like_zookeeper() {
        let mut t = tree();
        t.apply(txn(1, &[]), &create("/a", CreateMode::Persistent));
        let before = t.clone();
        let ops = vec![
            MultiOp::Create(CreateRequest {
                path: "/b".into(),
                data: Some(Bytes::new()),
                acl: Acl::open_unsafe(),
                flags: 0,
            }),
            MultiOp::Create(CreateRequest {
                path: "/a".into(),
                data: Some(Bytes::new()),
                acl: Acl::open_unsafe(),
                flags: 0,
            }),
            MultiOp::Delete(DeleteRequest {
                path: "/a".into(),
                version: -1,
            }),
        ];
        let a = t.apply(txn(2, &[]), &Request::Multi(ops));
        assert_eq!(a.err, ErrorCode::Ok);
        assert!(a.events.is_empty());
        assert_eq!(
            a.response,
            Response::Multi(vec![
                MultiResult::Error(ErrorCode::Ok),
                MultiResult::Error(ErrorCode::NodeExists),
                MultiResult::Error(ErrorCode::RuntimeInconsistency)
            ])
        );
        assert!(t.stat("/b").is_none());
        assert_eq!(t.stat("/"), before.stat("/"));
    }

    #[test]
    fn successful_multi_applies_in_order_at_one_zxid() {
        let mut t = tree();
        let ops = vec![
            MultiOp::Create(CreateRequest {
                path: "/s-".into(),
                data: Some(Bytes::new()),
                acl: Acl::open_unsafe(),
                flags: 2,
            }),
            MultiOp::Create(CreateRequest {
                path: "/s-".into(),
                data: Some(Bytes::new()),
                acl: Acl::open_unsafe(),
                flags: 2,
            }),
            MultiOp::SetData(SetDataRequest {
                path: "/s-0000000001".into(),
                data: Some(Bytes::new()),
                version: 0,
            }),
        ];
        let a = t.apply(txn(9, &[]), &Request::Multi(ops));
        let Response::Multi(r) = a.response else {
            panic!()
        };
        assert_eq!(
            r[0],
            MultiResult::Create {
                path: "/s-0000000000".into(),
                stat: None
            }
        );
        assert_eq!(
            r[1],
            MultiResult::Create {
                path: "/s-0000000001".into(),
                stat: None
            }
        );
        assert!(
            matches!(r[2], MultiResult::SetData { stat } if stat.version == 1 && stat.mzxid == 9)
        );
        assert_eq!(a.events.len(), 5);
    }

    #[test]
    fn acls_are_enforced_with_the_stamped_identities() {
        let mut t = tree();
        let alice = [Id {
            scheme: "digest".into(),
            id: "alice:h".into(),
        }];
        let req = Request::Create2(CreateRequest {
            path: "/s".into(),
            data: Some(Bytes::new()),
            acl: Acl::creator_all(),
            flags: 0,
        });
        assert_eq!(t.apply(txn(1, &[]), &req).err, ErrorCode::InvalidAcl);
        assert_eq!(t.apply(txn(2, &alice), &req).err, ErrorCode::Ok);
        assert_eq!(t.get_data("/s", &[]), Err(ErrorCode::NoAuth));
        assert!(t.get_data("/s", &alice).is_ok());
        let set = Request::SetData(SetDataRequest {
            path: "/s".into(),
            data: Some(Bytes::new()),
            version: -1,
        });
        assert_eq!(t.apply(txn(3, &[]), &set).err, ErrorCode::NoAuth);
        let setacl = Request::SetAcl(SetAclRequest {
            path: "/s".into(),
            acl: Acl::open_unsafe(),
            version: 0,
        });
        assert_eq!(t.apply(txn(4, &[]), &setacl).err, ErrorCode::NoAuth);
        let Response::Stat(st) = t.apply(txn(5, &alice), &setacl).response else {
            panic!()
        };
        assert_eq!(st.aversion, 1);
        assert!(t.get_data("/s", &[]).is_ok());
    }

    #[test]
    fn containers_and_ttl_nodes_are_reaped_only_when_due() {
        let mut t = tree();
        let c = Request::CreateContainer(CreateRequest {
            path: "/c".into(),
            data: Some(Bytes::new()),
            acl: Acl::open_unsafe(),
            flags: 4,
        });
        assert_eq!(t.apply(txn(1, &[]), &c).err, ErrorCode::Ok);
        assert_eq!(
            t.apply(txn(2, &[]), &create("/c2", CreateMode::Container))
                .err,
            ErrorCode::BadArguments
        );
        let ttl = Request::CreateTtl(CreateTtlRequest {
            path: "/t".into(),
            data: Some(Bytes::new()),
            acl: Acl::open_unsafe(),
            flags: 5,
            ttl: 100,
        });
        assert_eq!(t.apply(txn(3, &[]), &ttl).err, ErrorCode::Ok);
        assert!(
            t.reap_candidates(1010, 10).is_empty(),
            "fresh container and young TTL node are not due"
        );
        t.apply(txn(4, &[]), &create("/c/x", CreateMode::Persistent));
        t.apply(txn(5, &[]), &delete("/c/x"));
        assert_eq!(
            t.reap_candidates(5000, 10),
            vec!["/c".to_string(), "/t".to_string()]
        );
        assert_eq!(t.reap(6, 5000, "/c").len(), 2);
        assert!(
            t.reap(7, 1050, "/t").is_empty(),
            "not due at the entry's time"
        );
        assert_eq!(t.reap(8, 5000, "/t").len(), 2);
        assert_eq!(t.node_count(), 4);
    }

    #[test]
    fn clones_are_independent_snapshots() {
        let mut t = tree();
        t.apply(txn(1, &[]), &create("/a", CreateMode::Persistent));
        let snap = t.clone();
        t.apply(txn(2, &[]), &create("/b", CreateMode::Persistent));
        assert!(snap.stat("/b").is_none());
        assert_eq!(snap.stat("/").unwrap().num_children, 2);
        let rebuilt = DataTree::from_parts(
            t.nodes().map(|(p, n)| (p.to_string(), n.clone())).collect(),
            t.sessions()
                .map(|(id, s)| (id, s.timeout_ms, s.passwd.clone(), s.tenant.clone()))
                .collect(),
            Vec::new(),
        );
        assert_eq!(
            rebuilt.stat("/").map(|s| s.num_children),
            t.stat("/").map(|s| s.num_children)
        );
        assert_eq!(rebuilt.session(S), t.session(S));
        assert_eq!(rebuilt.stat("/b"), t.stat("/b"));
        assert_eq!(rebuilt.data_bytes(), t.data_bytes());
        assert_eq!(t.all_children_number("/", &[]), Ok(5));
    }

    /// Every node's children as the tree lists them, against the parents of all paths, and
    /// the counts the nodes keep.
    fn assert_children_consistent(t: &DataTree) {
        let mut expected: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for (path, _) in t.nodes() {
            expected.entry(path).or_default();
            if &**path != "/" {
                expected
                    .entry(parent(path))
                    .or_default()
                    .push(synod_proto::path::basename(path));
            }
        }
        for (path, mut names) in expected {
            names.sort_unstable();
            let listed: Vec<&str> = t.children(path).collect();
            assert_eq!(listed, names, "children of {path}");
            let count = t.node(path).map(|n| n.num_children() as usize);
            assert_eq!(count, Some(names.len()), "num_children of {path}");
        }
    }

    /// A snapshot's extension names nodes by their position in the image: the loader finds
    /// the node pushed there whether the image was in the tree's order or not, at increasing
    /// positions and at an earlier one.
    #[test]
    fn a_position_names_the_node_pushed_there_in_order_or_not() {
        let mut t = tree();
        for (i, path) in ["/a", "/a/b", "/a-b", "/c", "/c/d"].iter().enumerate() {
            t.apply(
                txn(2 + i as i64, &[]),
                &create(path, CreateMode::Persistent),
            );
        }
        let parts: Vec<(String, Node)> =
            t.nodes().map(|(p, n)| (p.to_string(), n.clone())).collect();
        for order in [parts.clone(), parts.iter().rev().cloned().collect()] {
            let mut loader = TreeLoader::new();
            for (p, n) in &order {
                loader.push(p.clone(), n.clone());
            }
            for i in (0..order.len()).step_by(2) {
                assert!(loader.change_at(i, |m| m.version = 1000 + i as i32));
            }
            assert!(
                loader.change_at(1, |m| m.aversion = 7),
                "an earlier position"
            );
            assert!(!loader.change_at(order.len(), |_| {}), "no node there");
            let rebuilt = loader.finish(Vec::new(), Vec::new());
            for (i, (p, _)) in order.iter().enumerate() {
                let node = rebuilt.node(p).expect("pushed");
                let version = if i % 2 == 0 { 1000 + i as i32 } else { 0 };
                assert_eq!((node.version, node.aversion == 7), (version, i == 1), "{p}");
            }
        }
    }

    /// A node's parent is counted on wherever it waits: in the map or among the nodes the
    /// loader inserts last (every other one, in order), also when an image that is not synod's
    /// puts a path before its parent (`.x`, whose parent is `/`, sorts before `/`) and the
    /// parent is looked up before it is pushed.
    #[test]
    fn a_loaded_parent_counts_its_children_wherever_it_waits() {
        let mut t = tree();
        for (i, path) in ["/a", "/a/b", "/a/c", "/b", "/b/x", "/b/x/y", "/c"]
            .iter()
            .enumerate()
        {
            t.apply(
                txn(2 + i as i64, &[]),
                &create(path, CreateMode::Persistent),
            );
        }
        let node = t.node("/a").expect("created").clone();
        let mut loader = TreeLoader::new();
        for (p, n) in t.nodes() {
            loader.push(p.to_string(), n.clone());
        }
        let rebuilt = loader.finish(Vec::new(), Vec::new());
        for (p, n) in t.nodes() {
            let count = rebuilt.node(p).map(|r| r.num_children());
            assert_eq!(count, Some(n.num_children()), "{p}");
            assert_eq!(count, Some(rebuilt.children(p).count() as u32), "{p}");
        }
        let mut loader = TreeLoader::new();
        for p in [".x", "/", "/a", "/b"] {
            loader.push(p.to_string(), node.clone());
        }
        let rebuilt = loader.finish(Vec::new(), Vec::new());
        assert_eq!(rebuilt.node("/").map(|r| r.num_children()), Some(2));
    }

    /// The children are the keys under `path/` without a further `/`: siblings that sort
    /// between a child and its own children (`b-x`, `b.y` before `b/c`) are listed, the
    /// grandchildren are skipped, and so are names that merely start like the parent.
    #[test]
    fn children_are_listed_in_byte_order_past_their_subtrees() {
        let mut t = tree();
        let paths = [
            "/a", "/a/b", "/a/b/c", "/a/b/c/d", "/a/b-x", "/a/b.y", "/a/b0", "/a/bb", "/a/c",
            "/a-z", "/a0", "/a/c/e",
        ];
        for (i, p) in paths.iter().enumerate() {
            let a = t.apply(txn(10 + i as i64, &[]), &create(p, CreateMode::Persistent));
            assert_eq!(a.err, ErrorCode::Ok, "{p}");
        }
        fn list(t: &DataTree, p: &str) -> Vec<String> {
            t.children(p).map(str::to_string).collect()
        }
        assert_eq!(list(&t, "/a"), ["b", "b-x", "b.y", "b0", "bb", "c"]);
        assert_eq!(list(&t, "/"), ["a", "a-z", "a0", "zookeeper"]);
        assert_eq!(list(&t, "/a/b"), ["c"]);
        assert!(list(&t, "/a/b/c/d").is_empty());
        assert!(list(&t, "/missing").is_empty());
        assert_eq!(t.stat("/a").map(|s| s.num_children), Some(6));
        assert_eq!(t.all_children_number("/a", &[]), Ok(9));
        assert_eq!(t.all_children_number("/a/b/c/d", &[]), Ok(0));
        assert_children_consistent(&t);
        assert_eq!(
            t.apply(txn(30, &[]), &delete("/a/b")).err,
            ErrorCode::NotEmpty
        );
        assert_eq!(t.apply(txn(31, &[]), &delete("/a/b-x")).err, ErrorCode::Ok);
        assert_eq!(list(&t, "/a"), ["b", "b.y", "b0", "bb", "c"]);
        assert_children_consistent(&t);
    }

    proptest::proptest! {
        /// Whatever is created and deleted, each node lists exactly the nodes whose parent it
        /// is and counts them, also once rebuilt from its parts as a snapshot loads it.
        #[test]
        fn children_and_counts_follow_any_creates_and_deletes(
            ops in proptest::collection::vec(
                (proptest::bool::weighted(0.7), proptest::collection::vec(0usize..5, 1..4)),
                1..60,
            )
        ) {
            // Names chosen to sort around `/`: '-' and '.' below it, '0' right above it.
            const NAMES: [&str; 5] = ["x", "x-", "x.", "x0", "y"];
            let mut t = tree();
            for (i, (is_create, parts)) in ops.iter().enumerate() {
                let path: String = parts.iter().map(|&p| format!("/{}", NAMES[p])).collect();
                let request = if *is_create {
                    create(&path, CreateMode::Persistent)
                } else {
                    Request::Delete(DeleteRequest { path, version: -1 })
                };
                t.apply(txn(10 + i as i64, &[]), &request);
            }
            assert_children_consistent(&t);
            let parts: Vec<(String, Node)> =
                t.nodes().map(|(p, n)| (p.to_string(), n.clone())).collect();
            // In the tree's order (as snapshots are written), in reverse (children before
            // their parents), and rotated with a node pushed twice (in order, then not).
            let half = parts.len() / 2;
            let mut rotated = parts[half..].to_vec();
            rotated.extend_from_slice(&parts[..half]);
            rotated.push(parts[parts.len() - 1].clone());
            for order in [parts.clone(), parts.iter().rev().cloned().collect(), rotated] {
                let sessions = t
                    .sessions()
                    .map(|(id, s)| (id, s.timeout_ms, s.passwd.clone(), s.tenant.clone()))
                    .collect();
                let rebuilt = DataTree::from_parts(order, sessions, Vec::new());
                assert_children_consistent(&rebuilt);
                proptest::prop_assert_eq!(rebuilt.digest(), t.digest());
                proptest::prop_assert_eq!(rebuilt.data_bytes(), t.data_bytes());
            }
        }
    }

    #[test]
    fn digest_is_equal_for_equal_trees_and_changes_with_any_field() {
        let build = || {
            let mut t = tree();
            t.apply(txn(2, &[]), &create("/a", CreateMode::Persistent));
            t.apply(txn(3, &[]), &create("/a/e", CreateMode::Ephemeral));
            t
        };
        let base = build();
        let d = base.digest();
        assert_eq!(d, build().digest(), "equal trees, equal digests");
        assert_eq!(d, base.clone().digest(), "a clone has the same digest");
        // Built in another order (as a snapshot load does): still the same state, same digest.
        let rebuilt = DataTree::from_parts(
            base.nodes()
                .map(|(p, n)| (p.to_string(), n.clone()))
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect(),
            base.sessions()
                .map(|(id, s)| (id, s.timeout_ms, s.passwd.clone(), s.tenant.clone()))
                .collect(),
            Vec::new(),
        );
        assert_eq!(d, rebuilt.digest(), "a tree rebuilt from its parts");
        assert_eq!(digest_hex(&d).len(), 40);

        // Each change, made on a fresh copy, must alter the digest.
        let change = |f: &dyn Fn(&mut DataTree)| {
            let mut t = build();
            f(&mut t);
            t.digest()
        };
        let node = |t: &mut DataTree, p: &str, f: &dyn Fn(&mut NodeMeta)| {
            t.node_mut(p).expect("node exists").change(f)
        };
        let kind = |t: &mut DataTree, p: &str, k: NodeKind| {
            let n = t.node_mut(p).expect("node exists");
            *n = Node::new(n.meta().clone(), k, n.data());
        };
        let variants: Vec<(&str, [u8; 20])> = vec![
            ("data", change(&|t| t.replace_data_quietly("/a", b"e"))),
            ("czxid", change(&|t| node(t, "/a", &|n| n.czxid += 1))),
            ("mzxid", change(&|t| node(t, "/a", &|n| n.mzxid += 1))),
            ("pzxid", change(&|t| node(t, "/a", &|n| n.pzxid += 1))),
            ("ctime", change(&|t| node(t, "/a", &|n| n.ctime += 1))),
            ("mtime", change(&|t| node(t, "/a", &|n| n.mtime += 1))),
            ("version", change(&|t| node(t, "/a", &|n| n.version += 1))),
            ("cversion", change(&|t| node(t, "/a", &|n| n.cversion += 1))),
            ("aversion", change(&|t| node(t, "/a", &|n| n.aversion += 1))),
            ("kind", change(&|t| kind(t, "/a", NodeKind::Container))),
            ("ttl", change(&|t| kind(t, "/a", NodeKind::Ttl(5)))),
            (
                "owner",
                change(&|t| kind(t, "/a/e", NodeKind::Ephemeral(S + 1))),
            ),
            (
                "acl",
                change(&|t| node(t, "/a", &|n| n.acl = Acl::read_unsafe().into())),
            ),
            (
                "new node",
                change(&|t| {
                    t.apply(txn(4, &[]), &create("/b", CreateMode::Persistent));
                }),
            ),
            (
                "session timeout",
                change(&|t| {
                    if let Some(s) = t.sessions.get_mut(&S) {
                        s.timeout_ms += 1;
                    }
                }),
            ),
            (
                "session password",
                change(&|t| {
                    if let Some(s) = t.sessions.get_mut(&S) {
                        s.passwd = Bytes::from_static(&[8; 16]);
                    }
                }),
            ),
            (
                "new session",
                change(&|t| t.create_session(S + 1, 10_000, Bytes::new())),
            ),
            (
                "path",
                change(&|t| {
                    let n = t.nodes.remove("/a/e").expect("node exists");
                    t.nodes.insert("/a/f".into(), n);
                }),
            ),
        ];
        let mut seen = std::collections::HashSet::new();
        seen.insert(d);
        for (what, v) in variants {
            assert_ne!(v, d, "changing the {what} must change the digest");
            assert!(
                seen.insert(v),
                "changing the {what} collides with another change"
            );
        }
    }
}
