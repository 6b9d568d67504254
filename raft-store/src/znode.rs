//! One znode in one allocation: what ZooKeeper's Stat and ACL say about it ([`NodeMeta`]) and
//! its data, behind one reference-counted pointer ([`Node`]). Its path is the tree's key.
//!
//! Why one allocation: the tree holds 100,000 znodes in tens of MiB (design.md §10). Kept apart
//! (the metadata in an `Arc`, the data in a `Bytes` of its own), a znode of 100 bytes cost about
//! 360 heap bytes in three allocations, with its path and its share of the tree's map; together,
//! and behind thin pointers, about 285 in two (`tests/tree_memory.rs`). A node is immutable once
//! shared: a change makes a copy ([`Node::change`], [`Node::with_data`]), so a snapshot that
//! shares the tree keeps seeing the node as it was.

use std::ops::Deref;

use bytes::Bytes;
use synod_proto::Stat;
use triomphe::ThinArc;

use crate::acl::SharedAcl;
use crate::tree::Name;

/// How a node ends. Snapshots serialize it by its derive (the variant's index, then its
/// argument): add variants at the end only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum NodeKind {
    /// Lives until deleted.
    Persistent,
    /// Deleted with its owning session.
    Ephemeral(i64),
    /// Deleted by the leader once it has had children and has none.
    Container,
    /// Deleted by the leader once childless and unmodified for this many milliseconds.
    Ttl(i64),
}

/// The most children a znode can have: the count shares a 32-bit word with the node's kind and
/// its null-data flag ([`NodeMeta`]). A create under a node that has this many is refused
/// (`QuotaExceeded`); a tree this wide would take about 160 GB of memory before it got there.
pub const MAX_CHILDREN: u32 = (1 << KIND_SHIFT) - 1;

/// Where [`NodeMeta::packed`] keeps the kind's variant (two bits: [`NodeKind::tag`]).
const KIND_SHIFT: u32 = 29;
/// [`NodeMeta::packed`]'s bits of the kind's variant.
const KIND_MASK: u32 = 0b11 << KIND_SHIFT;
/// [`NodeMeta::packed`]'s bit that says the data is null.
const NULL_DATA: u32 = 1 << 31;
/// The bytes of a kind's argument (the ephemeral's session, the TTL) ahead of the data in a
/// [`Node`]'s allocation.
const ARG_BYTES: usize = 8;

/// [`NodeKind::tag`]'s values, one per variant.
const PERSISTENT: u32 = 0;
const EPHEMERAL: u32 = 1;
const CONTAINER: u32 = 2;
const TTL: u32 = 3;

impl NodeKind {
    /// The variant as [`NodeMeta::packed`] stores it.
    fn tag(self) -> u32 {
        match self {
            NodeKind::Persistent => PERSISTENT,
            NodeKind::Ephemeral(_) => EPHEMERAL,
            NodeKind::Container => CONTAINER,
            NodeKind::Ttl(_) => TTL,
        }
    }

    /// The argument a [`Node`] stores ahead of its data, if the variant has one.
    fn arg(self) -> Option<i64> {
        match self {
            NodeKind::Ephemeral(v) | NodeKind::Ttl(v) => Some(v),
            NodeKind::Persistent | NodeKind::Container => None,
        }
    }
}

/// Everything a znode holds but its path, its data and its kind's argument (which its [`Node`]
/// holds). The zxid and time fields are ZooKeeper's Stat fields, which clients read and
/// compare. Its children are not stored here: they are the tree's paths under `path/`
/// ([`crate::tree::DataTree::children`]).
///
/// Why 72 bytes: a node's allocation is a reference count, this, the data's length and the
/// data; for a node of 100 bytes 8 + 72 + 8 + 100 = 188 bytes, in jemalloc's 192-byte class
/// (with the 96 bytes this was up to release 0.5.14, 212 in the 224-byte class). So the
/// children count, the kind's variant and the null-data flag share one word, and the kind's
/// argument, which only ephemeral and TTL nodes have, is stored with the data.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeMeta {
    /// zxid of the write that created the node.
    pub czxid: i64,
    /// zxid of the last change to its data (its creation if none).
    pub mzxid: i64,
    /// zxid of the last change to the set of children.
    pub pzxid: i64,
    /// Proposer's time (ms since the epoch) of the creation.
    pub ctime: i64,
    /// Proposer's time of the last data change: a TTL node is due this long after it.
    pub mtime: i64,
    /// Number of data changes: what a conditional setData or delete compares.
    pub version: i32,
    /// Bumped on every child create and delete; the sequential suffix of a new child.
    pub cversion: i32,
    /// Number of ACL changes: what a conditional setACL compares.
    pub aversion: i32,
    /// Three facts in one word (why: the type's comment), read and written only through
    /// methods:
    /// - bits 0–28, how many children the node has ([`NodeMeta::num_children`]): `numChildren`,
    ///   and what a delete checks for emptiness. Invariant: at most [`MAX_CHILDREN`], and equal
    ///   to the number of names [`crate::tree::DataTree::children`] lists (kept by create and
    ///   remove, recounted by [`crate::tree::TreeLoader`]);
    /// - bits 29–30, the kind's variant ([`NodeKind::tag`]): set by [`Node::new`] only, so that
    ///   it always agrees with the argument the node stores ahead of its data;
    /// - bit 31, the data is null, not empty ([`NodeMeta::null_data`]).
    packed: u32,
    /// Who may do what; nodes with the open ACL share one allocation.
    pub acl: SharedAcl,
    /// The tenant its creator belonged to ([`crate::tenants::Tenants::owner_of`]), charged for
    /// it and its data until it is deleted; `None` outside every tenant (always, in a cluster
    /// without tenants).
    pub owner: Option<Name>,
}

impl NodeMeta {
    /// The metadata of a node created at `zxid` and `time` and unchanged since: no children,
    /// versions 0, data not null, under `acl` and charged to `owner`. Its kind is the one
    /// [`Node::new`] is given.
    pub fn new(zxid: i64, time: i64, acl: SharedAcl, owner: Option<Name>) -> NodeMeta {
        NodeMeta {
            czxid: zxid,
            mzxid: zxid,
            pzxid: zxid,
            ctime: time,
            mtime: time,
            version: 0,
            cversion: 0,
            aversion: 0,
            packed: 0,
            acl,
            owner,
        }
    }

    /// How many children the node has: `numChildren`, and what a delete checks for emptiness.
    pub fn num_children(&self) -> u32 {
        self.packed & MAX_CHILDREN
    }

    /// Sets the children count to `n`, which must be at most [`MAX_CHILDREN`] (a debug build
    /// asserts it; a release build stores `MAX_CHILDREN` for more). The tree never asks for
    /// more: a create under a node that has that many is refused, and the loader stops
    /// counting there.
    pub fn set_num_children(&mut self, n: u32) {
        debug_assert!(n <= MAX_CHILDREN, "{n} children");
        self.packed = (self.packed & !MAX_CHILDREN) | n.min(MAX_CHILDREN);
    }

    /// The data is null, not empty: it was created or last set with null data (jute length
    /// -1), which ZooKeeper keeps apart and clients tell apart. Only from cluster version 2
    /// ([`crate::types::NULL_DATA_SINCE`]); the data is then empty.
    pub fn null_data(&self) -> bool {
        self.packed & NULL_DATA != 0
    }

    /// Says whether the data is null ([`NodeMeta::null_data`]).
    pub fn set_null_data(&mut self, null: bool) {
        if null {
            self.packed |= NULL_DATA;
        } else {
            self.packed &= !NULL_DATA;
        }
    }

    /// The kind's variant ([`NodeKind::tag`]).
    fn kind_tag(&self) -> u32 {
        (self.packed & KIND_MASK) >> KIND_SHIFT
    }

    /// Sets the kind's variant: [`Node`]'s business only, which stores the argument to match.
    fn set_kind_tag(&mut self, tag: u32) {
        self.packed = (self.packed & !KIND_MASK) | ((tag << KIND_SHIFT) & KIND_MASK);
    }

    /// Whether the kind has an argument the node stores ahead of its data.
    fn has_arg(&self) -> bool {
        matches!(self.kind_tag(), EPHEMERAL | TTL)
    }
}

impl std::fmt::Debug for NodeMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeMeta")
            .field("czxid", &self.czxid)
            .field("mzxid", &self.mzxid)
            .field("pzxid", &self.pzxid)
            .field("ctime", &self.ctime)
            .field("mtime", &self.mtime)
            .field("version", &self.version)
            .field("cversion", &self.cversion)
            .field("aversion", &self.aversion)
            .field("num_children", &self.num_children())
            .field("kind_tag", &self.kind_tag())
            .field("null_data", &self.null_data())
            .field("acl", &self.acl)
            .field("owner", &self.owner)
            .finish()
    }
}

/// One znode: its [`NodeMeta`] (which it dereferences to), its kind's argument and its data.
/// Clones are cheap (a reference count); a node that is shared never changes.
#[derive(Clone)]
pub struct Node(
    /// The metadata, the length of what follows, then the kind's argument ([`ARG_BYTES`],
    /// little-endian, for an ephemeral or TTL node only) and the data's bytes. A thin pointer:
    /// the tree's map holds 8 bytes per node instead of 16, which at imbl's chunk sizes saves
    /// about 24 bytes per znode in jemalloc's size classes (16 as requested).
    ThinArc<NodeMeta, u8>,
);

impl Node {
    /// A node of kind `kind` holding `meta` and `data`, in one allocation of its own size: the
    /// request's buffer the data came in (path, ACL, and in a batch every other write) is not
    /// kept alive.
    pub fn new(mut meta: NodeMeta, kind: NodeKind, data: &[u8]) -> Node {
        meta.set_kind_tag(kind.tag());
        debug_assert_eq!(meta.has_arg(), kind.arg().is_some());
        match kind.arg() {
            None => Node(ThinArc::from_header_and_slice(meta, data)),
            Some(arg) => {
                // One copy more for an ephemeral or a TTL node (triomphe fills a slice from
                // one slice, or from an iterator a byte at a time).
                let mut bytes = Vec::with_capacity(ARG_BYTES + data.len());
                bytes.extend_from_slice(&arg.to_le_bytes());
                bytes.extend_from_slice(data);
                Node(ThinArc::from_header_and_slice(meta, &bytes))
            }
        }
    }

    /// The node's data (empty when null, see [`NodeMeta::null_data`]).
    pub fn data(&self) -> &[u8] {
        let skip = if self.meta().has_arg() { ARG_BYTES } else { 0 };
        self.0.slice.get(skip..).unwrap_or_default()
    }

    /// How the node ends (and, for an ephemeral, its owner).
    pub fn kind(&self) -> NodeKind {
        let arg = || {
            self.0
                .slice
                .first_chunk::<ARG_BYTES>()
                .map_or(0, |b| i64::from_le_bytes(*b))
        };
        match self.meta().kind_tag() {
            EPHEMERAL => NodeKind::Ephemeral(arg()),
            CONTAINER => NodeKind::Container,
            TTL => NodeKind::Ttl(arg()),
            _ => NodeKind::Persistent,
        }
    }

    /// The data as `Bytes` that share this node's allocation: a reply holds them without a
    /// copy (the node version stays alive until the reply is written).
    pub fn shared_data(&self) -> Bytes {
        if self.data().is_empty() {
            return Bytes::new();
        }
        Bytes::from_owner(DataOf(self.clone()))
    }

    /// The Stat clients see (container and TTL markers are not shown in ephemeralOwner).
    pub fn stat(&self) -> Stat {
        Stat {
            czxid: self.czxid,
            mzxid: self.mzxid,
            ctime: self.ctime,
            mtime: self.mtime,
            version: self.version,
            cversion: self.cversion,
            aversion: self.aversion,
            ephemeral_owner: match self.kind() {
                NodeKind::Ephemeral(owner) => owner,
                _ => 0,
            },
            data_length: self.data().len() as i32,
            num_children: self.num_children() as i32,
            pzxid: self.pzxid,
        }
    }

    /// This node's metadata.
    pub fn meta(&self) -> &NodeMeta {
        &self.0.header.header
    }

    /// Applies `change` to the metadata: in place if nothing else holds this node, else to a
    /// copy (of the metadata, the kind's argument and the data) that this handle then holds,
    /// as `Arc::make_mut` does. The kind stays what it was, whatever `change` does (even
    /// replacing the whole metadata), so that it keeps agreeing with the argument stored.
    pub fn change(&mut self, change: impl FnOnce(&mut NodeMeta)) {
        let tag = self.meta().kind_tag();
        let copied = self.0.with_arc_mut(|a| match triomphe::Arc::get_mut(a) {
            Some(inner) => {
                let meta = inner.header_mut();
                change(meta);
                meta.set_kind_tag(tag);
                None
            }
            None => {
                let mut meta = a.header().clone();
                change(&mut meta);
                meta.set_kind_tag(tag);
                Some(meta)
            }
        });
        if let Some(meta) = copied {
            *self = Node(ThinArc::from_header_and_slice(meta, &self.0.slice));
        }
    }

    /// A copy of this node's metadata and kind holding `data` instead.
    pub fn with_data(&self, data: &[u8]) -> Node {
        Node::new(self.meta().clone(), self.kind(), data)
    }

    /// Whether `a` and `b` are the same allocation (one version of one node).
    pub fn ptr_eq(a: &Node, b: &Node) -> bool {
        a.0.ptr() == b.0.ptr()
    }
}

impl Deref for Node {
    type Target = NodeMeta;

    fn deref(&self) -> &NodeMeta {
        self.meta()
    }
}

impl PartialEq for Node {
    fn eq(&self, other: &Node) -> bool {
        // The slice is the kind's argument (whose variant the metadata holds) and the data.
        self.meta() == other.meta() && self.0.slice == other.0.slice
    }
}

impl Eq for Node {}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("meta", self.meta())
            .field("kind", &self.kind())
            .field("data", &self.data())
            .finish()
    }
}

/// A node as the owner of `Bytes` of its data ([`Node::shared_data`]).
struct DataOf(Node);

impl AsRef<[u8]> for DataOf {
    fn as_ref(&self) -> &[u8] {
        self.0.data()
    }
}

#[cfg(test)]
mod tests {
    use synod_proto::Acl;

    use super::*;

    fn meta() -> NodeMeta {
        NodeMeta::new(1, 5, Acl::open_unsafe().into(), None)
    }

    /// The layout the tree's memory figures rest on: the map holds two thin pointers, the
    /// path's and the node's, and the node's allocation is a reference count, the metadata, the
    /// data's length and the data (8 + 72 + 8 + 100 bytes for a persistent node of 100 bytes:
    /// jemalloc's 192-byte class; an ephemeral's or a TTL node's 8 more).
    #[test]
    fn a_node_is_its_metadata_and_data_behind_one_pointer() {
        assert_eq!(std::mem::size_of::<Node>(), 8);
        assert_eq!(std::mem::size_of::<Name>(), 8);
        assert_eq!(std::mem::size_of::<NodeMeta>(), 72);
        let n = Node::new(meta(), NodeKind::Persistent, &[7; 100]);
        assert_eq!(n.data(), &[7; 100][..]);
        assert_eq!(n.stat().data_length, 100);
        let shared = n.shared_data();
        assert_eq!(
            shared.as_ptr(),
            n.data().as_ptr(),
            "a reply shares the node's bytes"
        );
        assert!(Node::new(meta(), NodeKind::Persistent, b"")
            .shared_data()
            .is_empty());
    }

    /// Every kind comes back as it was given, its argument apart from the data (which a reply
    /// still shares), whatever the data and the word it shares its variant with hold.
    #[test]
    fn a_node_keeps_its_kind_apart_from_its_data() {
        let kinds = [
            NodeKind::Persistent,
            NodeKind::Ephemeral(0x0102_0304_0506_0708),
            NodeKind::Ephemeral(-1),
            NodeKind::Container,
            NodeKind::Ttl(i64::MAX),
            NodeKind::Ttl(0),
        ];
        for kind in kinds {
            for data in [&b""[..], b"x", &[0xff; 300]] {
                let mut m = meta();
                m.set_num_children(MAX_CHILDREN);
                m.set_null_data(true);
                let n = Node::new(m, kind, data);
                assert_eq!((n.kind(), n.data()), (kind, data), "{kind:?}");
                assert_eq!((n.num_children(), n.null_data()), (MAX_CHILDREN, true));
                let owner = match kind {
                    NodeKind::Ephemeral(s) => s,
                    _ => 0,
                };
                assert_eq!(n.stat().ephemeral_owner, owner);
                assert_eq!(n.stat().data_length as usize, data.len());
                assert_eq!(&n.shared_data()[..], data);
                if !data.is_empty() {
                    assert_eq!(n.shared_data().as_ptr(), n.data().as_ptr());
                }
                let mut copy = n.with_data(b"new");
                assert_eq!((copy.kind(), copy.data()), (kind, &b"new"[..]));
                let held = copy.clone();
                copy.change(|m| {
                    m.set_num_children(0);
                    m.set_null_data(false);
                });
                assert_eq!((copy.kind(), copy.data()), (kind, &b"new"[..]));
                assert_eq!((copy.num_children(), copy.null_data()), (0, false));
                assert_eq!(
                    (held.num_children(), held.null_data()),
                    (MAX_CHILDREN, true)
                );
                assert_eq!(held.kind(), kind);
            }
        }
        // A change that puts another kind's metadata in keeps the node's kind, in place and
        // on a copy.
        let mut unique = Node::new(meta(), NodeKind::Persistent, b"p");
        let ephemeral = Node::new(meta(), NodeKind::Ephemeral(9), b"e");
        unique.change(|m| *m = ephemeral.meta().clone());
        assert_eq!(
            (unique.kind(), unique.data()),
            (NodeKind::Persistent, &b"p"[..])
        );
        let mut shared = ephemeral.clone();
        shared.change(|m| *m = unique.meta().clone());
        assert!(!Node::ptr_eq(&shared, &ephemeral), "copied");
        assert_eq!(
            (shared.kind(), shared.data()),
            (NodeKind::Ephemeral(9), &b"e"[..])
        );
        let ephemeral = Node::new(meta(), NodeKind::Ephemeral(7), b"");
        let ttl = Node::new(meta(), NodeKind::Ttl(7), b"");
        assert_ne!(ephemeral, ttl, "the same argument, another kind");
        assert_ne!(ephemeral, Node::new(meta(), NodeKind::Ephemeral(8), b""));
    }

    /// The children count never reaches into the kind's bits or the null-data flag.
    #[test]
    fn the_children_count_keeps_to_its_bits() {
        let mut m = meta();
        m.set_null_data(true);
        let mut n = Node::new(m, NodeKind::Ttl(3), b"d");
        n.change(|m| m.set_num_children(MAX_CHILDREN));
        n.change(|m| m.set_num_children(m.num_children().saturating_sub(1)));
        assert_eq!(n.num_children(), MAX_CHILDREN - 1);
        n.change(|m| m.set_null_data(false));
        assert_eq!(n.num_children(), MAX_CHILDREN - 1);
        assert_eq!(
            (n.kind(), n.null_data(), n.data()),
            (NodeKind::Ttl(3), false, &b"d"[..])
        );
    }

    /// A node nothing else holds changes in place; a shared one is copied, and whoever shares
    /// it (a snapshot, a reply) keeps seeing it as it was.
    #[test]
    fn changing_a_shared_node_copies_it() {
        let mut n = Node::new(meta(), NodeKind::Persistent, b"abc");
        let at = n.data().as_ptr();
        n.change(|m| m.version = 1);
        assert_eq!(n.data().as_ptr(), at, "unique: changed in place");
        let snapshot = n.clone();
        let reply = n.shared_data();
        n.change(|m| m.version = 2);
        assert!(!Node::ptr_eq(&n, &snapshot), "shared: copied");
        assert_eq!((snapshot.version, n.version), (1, 2));
        assert_eq!((n.data(), &reply[..]), (&b"abc"[..], &b"abc"[..]));
        let replaced = n.with_data(b"xy");
        assert_eq!((replaced.data(), replaced.meta()), (&b"xy"[..], n.meta()));
        assert_ne!(replaced, n);
        let mut again = snapshot.with_data(b"abc");
        again.change(|m| m.version = 2);
        assert_eq!(again, n, "equal: the same metadata and data");
    }
}
