//! One znode in one allocation: what ZooKeeper's Stat and ACL say about it ([`NodeMeta`]) and
//! its data, behind one reference-counted pointer ([`Node`]). Its path is the tree's key.
//!
//! Why one allocation: the tree holds 100,000 znodes in tens of MiB (design.md §10). Kept apart
//! (the metadata in an `Arc`, the data in a `Bytes` of its own), a znode of 100 bytes cost about
//! 360 heap bytes in three allocations, with its path and its share of the tree's map; together,
//! and behind thin pointers, about 320 in two (`tests/tree_memory.rs`). A node is immutable once
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

/// Everything a znode holds but its path and data. The zxid and time fields are ZooKeeper's
/// Stat fields, which clients read and compare. Its children are not stored here: they are the
/// tree's paths under `path/` ([`crate::tree::DataTree::children`]).
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// How the node ends (and, for an ephemeral, its owner).
    pub kind: NodeKind,
    /// The data is null, not empty: it was created or last set with null data (jute length
    /// -1), which ZooKeeper keeps apart and clients tell apart. Only from cluster version 2
    /// ([`crate::types::NULL_DATA_SINCE`]); the data is then empty.
    pub null_data: bool,
    /// Who may do what; nodes with the open ACL share one allocation.
    pub acl: SharedAcl,
    /// How many children the node has: `numChildren`, and what a delete checks for emptiness.
    /// Invariant: equals the number of names [`crate::tree::DataTree::children`] lists (kept
    /// by create and remove, recounted by [`crate::tree::TreeLoader`]).
    pub num_children: u32,
    /// The tenant its creator belonged to ([`crate::tenants::Tenants::owner_of`]), charged for
    /// it and its data until it is deleted; `None` outside every tenant (always, in a cluster
    /// without tenants).
    pub owner: Option<Name>,
}

/// One znode: its [`NodeMeta`] (which it dereferences to) and its data. Clones are cheap (a
/// reference count); a node that is shared never changes.
#[derive(Clone)]
pub struct Node(
    /// The metadata, the data's length, the data's bytes. A thin pointer: the tree's map holds
    /// 8 bytes per node instead of 16, which at imbl's chunk sizes saves about 24 bytes per
    /// znode in jemalloc's size classes (16 as requested); the allocation of a node of 100
    /// bytes (8 + 96 + 8 + 100 = 212) is in jemalloc's 224-byte class.
    ThinArc<NodeMeta, u8>,
);

impl Node {
    /// A node holding `meta` and `data`, in one allocation of its own size: the request's
    /// buffer the data came in (path, ACL, and in a batch every other write) is not kept alive.
    pub fn new(meta: NodeMeta, data: &[u8]) -> Node {
        Node(ThinArc::from_header_and_slice(meta, data))
    }

    /// The node's data (empty when null, see [`NodeMeta::null_data`]).
    pub fn data(&self) -> &[u8] {
        &self.0.slice
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
            ephemeral_owner: match self.kind {
                NodeKind::Ephemeral(owner) => owner,
                _ => 0,
            },
            data_length: self.data().len() as i32,
            num_children: self.num_children as i32,
            pzxid: self.pzxid,
        }
    }

    /// This node's metadata.
    pub fn meta(&self) -> &NodeMeta {
        &self.0.header.header
    }

    /// Applies `change` to the metadata: in place if nothing else holds this node, else to a
    /// copy (of the metadata and the data) that this handle then holds, as `Arc::make_mut`
    /// does.
    pub fn change(&mut self, change: impl FnOnce(&mut NodeMeta)) {
        let copied = self.0.with_arc_mut(|a| match triomphe::Arc::get_mut(a) {
            Some(inner) => {
                change(inner.header_mut());
                None
            }
            None => {
                let mut meta = a.header().clone();
                change(&mut meta);
                Some(meta)
            }
        });
        if let Some(meta) = copied {
            *self = Node::new(meta, self.data());
        }
    }

    /// A copy of this node's metadata holding `data` instead.
    pub fn with_data(&self, data: &[u8]) -> Node {
        Node::new(self.meta().clone(), data)
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
        self.meta() == other.meta() && self.data() == other.data()
    }
}

impl Eq for Node {}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("meta", self.meta())
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
        NodeMeta {
            czxid: 1,
            mzxid: 1,
            pzxid: 1,
            ctime: 5,
            mtime: 5,
            version: 0,
            cversion: 0,
            aversion: 0,
            kind: NodeKind::Persistent,
            null_data: false,
            acl: Acl::open_unsafe().into(),
            num_children: 0,
            owner: None,
        }
    }

    /// The layout the tree's memory figures rest on: the map holds two thin pointers, the
    /// path's and the node's, and the node's allocation is a reference count, the metadata, the
    /// data's length and the data (8 + 96 + 8 + 100 bytes for a node of 100 bytes: jemalloc's
    /// 224-byte class).
    #[test]
    fn a_node_is_its_metadata_and_data_behind_one_pointer() {
        assert_eq!(std::mem::size_of::<Node>(), 8);
        assert_eq!(std::mem::size_of::<Name>(), 8);
        assert!(std::mem::size_of::<NodeMeta>() <= 96);
        let n = Node::new(meta(), &[7; 100]);
        assert_eq!(n.data(), &[7; 100][..]);
        assert_eq!(n.stat().data_length, 100);
        let shared = n.shared_data();
        assert_eq!(
            shared.as_ptr(),
            n.data().as_ptr(),
            "a reply shares the node's bytes"
        );
        assert!(Node::new(meta(), b"").shared_data().is_empty());
    }

    /// A node nothing else holds changes in place; a shared one is copied, and whoever shares
    /// it (a snapshot, a reply) keeps seeing it as it was.
    #[test]
    fn changing_a_shared_node_copies_it() {
        let mut n = Node::new(meta(), b"abc");
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
