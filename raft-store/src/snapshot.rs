//! Snapshots on disk and on the wire: the image of the tree a snapshot holds and its encoding,
//! the snapshot file of a state-machine directory (written atomically, loaded at start-up, served
//! to lagging peers, and inside a backup: [`crate::backup`]), and restoring a backup into a new
//! directory (`synod restore`).
//!
//! # Format
//!
//! A snapshot's data (what openraft sends to a peer in `InstallSnapshot`) is the bincode
//! ([`crate::types::encode`]) of a [`TreeImage`]: every znode with its stored fields, and every
//! session. What the tree derives from those (children sets, each session's ephemerals, the reap
//! set, the data size, each tenant's usage) is rebuilt on load, so each fact is stored once.
//! A tree with tenants, an audit trail or a cluster version above the base one appends an
//! [`ExtensionImage`] (the tenant table, the owner of every node that has one, the audit chain's
//! head, the cluster version); a tree without any is encoded exactly as release 0.1 encoded it,
//! so that a 0.1 member can install it during a rolling upgrade.
//!
//! The file [`SNAPSHOT_FILE`] is an envelope ([`crate::envelope`]: magic `SYNODSNP`, format
//! version, length, SHA-256) around its body: the bincode of the snapshot's metadata (openraft's
//! [`SnapshotMeta`]: last log id, membership, id) followed by that data as a byte string. A file
//! whose checksum does not match is refused at start, never loaded; a file written by v0.1.0
//! (the body alone, before envelopes) is still read. A backup wraps the same body in an envelope
//! of its own ([`crate::backup`]). The data sent to a peer is checked by decoding it whole
//! before it is installed; on the wire it is protected by TLS.
//!
//! # Durability
//!
//! The file is only ever replaced whole: written to a temp file, fsynced, renamed over the old
//! one, and the directory fsynced, so a crash leaves either the old snapshot or the new one. A
//! snapshot is written only if it is newer than the one in the file (see [`Persisted`]): openraft
//! may purge the log up to a snapshot as soon as it is built or installed, so the file must never
//! go back to an older one whose following entries are gone.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use openraft::{BasicNode, LogId, SnapshotMeta, StoredMembership};
use serde::{Deserialize, Serialize};
use synod_proto::path::parent;
use synod_proto::{Acl, Id};

use crate::audit::AuditHead;
use crate::envelope::Kind;
use crate::error::StoreError;
use crate::tenants::Tenant;
use crate::tree::DataTree;
use crate::types::{decode, encode, NodeId};
use crate::znode::{Node, NodeKind, NodeMeta};

/// The current snapshot's file name in the state machine's directory.
pub const SNAPSHOT_FILE: &str = "snapshot.bin";

/// The snapshot file's envelope: magic `SYNODSNP`, format version 1.
pub const SNAPSHOT: Kind = Kind {
    magic: b"SYNODSNP",
    version: 1,
    what: "snapshot file",
};

/// The body of a snapshot file (its metadata and data, bincode): checked and unwrapped if it is
/// enveloped, as is if it predates envelopes (v0.1.0 wrote the body alone; its first byte is
/// bincode's `Option` tag, never the `S` of the magic).
pub(crate) fn snapshot_body(file: &[u8]) -> Result<&[u8], StoreError> {
    if SNAPSHOT.is_enveloped(file) {
        SNAPSHOT.open(file)
    } else {
        Ok(file)
    }
}

type Meta = SnapshotMeta<NodeId, BasicNode>;
type Membership = StoredMembership<NodeId, BasicNode>;

/// The snapshot file's layout: metadata, then the snapshot's data (an encoded [`TreeImage`]).
/// Nothing of a snapshot stays in memory: [`SNAPSHOT_FILE`] is the current snapshot, read when a
/// peer needs it.
#[derive(Serialize, Deserialize)]
pub(crate) struct SnapshotFile {
    pub(crate) meta: Meta,
    pub(crate) data: Vec<u8>,
}

/// [`SnapshotFile`] borrowed, for writing without copying the data (same bincode bytes: a
/// slice and a `Vec` of `u8` both serialize as a length and the bytes).
#[derive(Serialize)]
struct SnapshotFileRef<'a> {
    meta: &'a Meta,
    data: &'a [u8],
}

/// The `last_log_id` of the snapshot in [`SNAPSHOT_FILE`] (`None`: no file yet), shared by the
/// state machine (which installs snapshots) and its builders (which openraft runs in tasks of
/// their own, so a build may finish during or after an install). A writer holds the lock for the
/// whole write: two writes never overlap on the temp file, and an older snapshot never replaces a
/// newer one (whose log may already be purged).
pub(crate) type Persisted = Arc<Mutex<Option<LogId<NodeId>>>>;

/// The whole replicated state as a snapshot stores it.
#[derive(Serialize, Deserialize)]
pub(crate) struct TreeImage {
    /// Every znode, in no particular order.
    nodes: Vec<NodeImage>,
    /// Every live session (their ephemerals are found from the nodes' owners).
    pub(crate) sessions: Vec<SessionImage>,
}

/// One znode: its path and the fields of [`Node`] that are not derived from other nodes
/// (children are rebuilt from the paths).
#[derive(Serialize, Deserialize)]
struct NodeImage {
    path: String,
    czxid: i64,
    mzxid: i64,
    pzxid: i64,
    ctime: i64,
    mtime: i64,
    version: i32,
    cversion: i32,
    aversion: i32,
    /// Serialized by its derive: the variant's index, then its argument if it has one.
    kind: NodeKind,
    data: Bytes,
    acl: Vec<AclImage>,
}

/// What a tree with tenants, an audit trail or a raised cluster version adds after its
/// [`TreeImage`].
#[derive(Serialize, Deserialize, Default)]
pub(crate) struct ExtensionImage {
    /// The declared tenants, by name.
    tenants: Vec<(String, Tenant)>,
    /// `(i, tenant)`: the node at position `i` of [`TreeImage::nodes`] is owned by `tenant`.
    owners: Vec<(u64, String)>,
    /// The audit chain's head.
    audit: AuditHead,
    /// `(session id, tenant)` of every session charged to a tenant.
    session_tenants: Vec<(i64, String)>,
    /// The tree's cluster version (0, as a missing extension decodes: the base version).
    cluster_version: u32,
    /// Positions in [`TreeImage::nodes`] of the nodes whose data is null (their image holds
    /// empty data, as release 0.1 reads it).
    null_data: Vec<u64>,
}

/// One ACL entry ([`Acl`] is a jute record of the wire protocol, without serde).
#[derive(Serialize, Deserialize)]
struct AclImage {
    perms: i32,
    scheme: String,
    id: String,
}

/// One session of the replicated session table.
#[derive(Serialize, Deserialize)]
pub(crate) struct SessionImage {
    id: i64,
    timeout_ms: i32,
    /// What a client must show to resume the session; empty in a backup (see
    /// [`crate::backup`]), where no client can resume it.
    pub(crate) passwd: Bytes,
}

/// [`TreeImage`] borrowed from the tree, for encoding a snapshot without a copy of every node:
/// the same bincode bytes, field by field (a path as a string, the data as a byte string, each
/// ACL entry's strings). The owned image of 1,000,000 znodes took about 300 MB while it was
/// encoded, on top of the tree and the encoded data.
#[derive(Serialize)]
struct TreeImageRef<'a> {
    nodes: NodeImages<'a>,
    sessions: Vec<SessionImage>,
}

/// Every node of a tree, serialized as [`TreeImage::nodes`] is.
struct NodeImages<'a>(&'a DataTree);

impl Serialize for NodeImages<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.node_count()))?;
        for (path, n) in self.0.nodes() {
            seq.serialize_element(&NodeImageRef {
                path,
                czxid: n.czxid,
                mzxid: n.mzxid,
                pzxid: n.pzxid,
                ctime: n.ctime,
                mtime: n.mtime,
                version: n.version,
                cversion: n.cversion,
                aversion: n.aversion,
                kind: n.kind,
                data: ByteString(n.data()),
                acl: AclImages(&n.acl),
            })?;
        }
        seq.end()
    }
}

/// [`NodeImage`] borrowed from a node.
#[derive(Serialize)]
struct NodeImageRef<'a> {
    path: &'a str,
    czxid: i64,
    mzxid: i64,
    pzxid: i64,
    ctime: i64,
    mtime: i64,
    version: i32,
    cversion: i32,
    aversion: i32,
    kind: NodeKind,
    data: ByteString<'a>,
    acl: AclImages<'a>,
}

/// Bytes serialized as `Bytes` serializes them (a byte string).
struct ByteString<'a>(&'a [u8]);

impl Serialize for ByteString<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// An ACL serialized as a `Vec<AclImage>`.
struct AclImages<'a>(&'a [Acl]);

impl Serialize for AclImages<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for a in self.0 {
            seq.serialize_element(&AclImageRef {
                perms: a.perms,
                scheme: &a.id.scheme,
                id: &a.id.id,
            })?;
        }
        seq.end()
    }
}

/// [`AclImage`] borrowed from an ACL entry.
#[derive(Serialize)]
struct AclImageRef<'a> {
    perms: i32,
    scheme: &'a str,
    id: &'a str,
}

impl<'a> TreeImageRef<'a> {
    /// The image of `tree`, and its extension if the tree needs one.
    fn of(tree: &'a DataTree) -> (Self, Option<ExtensionImage>) {
        let sessions = tree
            .sessions()
            .map(|(id, s)| SessionImage {
                id,
                timeout_ms: s.timeout_ms,
                passwd: s.passwd.clone(),
            })
            .collect();
        let image = TreeImageRef {
            nodes: NodeImages(tree),
            sessions,
        };
        (image, ExtensionImage::of(tree))
    }
}

impl ExtensionImage {
    /// What `tree` adds after its image, `None` if nothing (a tree without tenants, audit
    /// trail, raised cluster version or null data is encoded as release 0.1 encoded it).
    fn of(tree: &DataTree) -> Option<ExtensionImage> {
        let mut ext = ExtensionImage {
            tenants: tree
                .tenants()
                .iter()
                .map(|(n, t)| (n.to_string(), t.clone()))
                .collect(),
            owners: Vec::new(),
            audit: *tree.audit_head(),
            session_tenants: tree
                .sessions()
                .filter_map(|(id, s)| s.tenant.as_ref().map(|t| (id, t.to_string())))
                .collect(),
            cluster_version: tree.cluster_version(),
            null_data: Vec::new(),
        };
        // In the order of the image's nodes: the tree's.
        for (i, (_, n)) in tree.nodes().enumerate() {
            if let Some(o) = &n.owner {
                ext.owners.push((i as u64, o.to_string()));
            }
            if n.null_data {
                ext.null_data.push(i as u64);
            }
        }
        (!ext.tenants.is_empty()
            || !ext.owners.is_empty()
            || !ext.session_tenants.is_empty()
            || ext.audit.count > 0
            || ext.cluster_version > crate::types::BASE_CLUSTER_VERSION
            || !ext.null_data.is_empty())
        .then_some(ext)
    }
}

impl TreeImage {
    /// Rebuilds the tree; an image that no tree produces (a path twice, no root, a node without
    /// its parent, an ephemeral without its session) is `Corrupt`.
    fn into_tree(self, ext: ExtensionImage) -> Result<DataTree, StoreError> {
        let count = self.nodes.len();
        let mut owners = ext.owners.into_iter().peekable();
        let null_data: std::collections::HashSet<u64> = ext.null_data.into_iter().collect();
        let nodes = self
            .nodes
            .into_iter()
            .enumerate()
            .map(|(i, n)| {
                let owner = owners
                    .next_if(|(at, _)| *at == i as u64)
                    .map(|(_, o)| o.into());
                let acl: Vec<Acl> = n
                    .acl
                    .into_iter()
                    .map(|a| Acl {
                        perms: a.perms,
                        id: Id {
                            scheme: a.scheme,
                            id: a.id,
                        },
                    })
                    .collect();
                let meta = NodeMeta {
                    czxid: n.czxid,
                    mzxid: n.mzxid,
                    pzxid: n.pzxid,
                    ctime: n.ctime,
                    mtime: n.mtime,
                    version: n.version,
                    cversion: n.cversion,
                    aversion: n.aversion,
                    kind: n.kind,
                    null_data: null_data.contains(&(i as u64)),
                    acl: acl.into(),
                    num_children: 0,
                    owner,
                };
                (n.path, Node::new(meta, &n.data))
            })
            .collect();
        let session_tenants: std::collections::HashMap<i64, String> =
            ext.session_tenants.into_iter().collect();
        let sessions = self
            .sessions
            .into_iter()
            .map(|s| {
                let tenant = session_tenants.get(&s.id).map(|t| t.as_str().into());
                (s.id, s.timeout_ms, s.passwd, tenant)
            })
            .collect();
        let corrupt = |what: String| Err(StoreError::Corrupt(format!("snapshot: {what}")));
        if let Some((at, _)) = owners.next() {
            return corrupt(format!(
                "an owner for node {at}, out of order or out of range"
            ));
        }
        let tenants = ext.tenants.len();
        let mut tree = DataTree::from_parts(nodes, sessions, ext.tenants);
        *tree.audit_head_mut() = ext.audit;
        tree.raise_cluster_version(ext.cluster_version);
        if tree.tenants().iter().count() != tenants {
            return corrupt(format!("{tenants} tenants for fewer distinct names"));
        }
        if tree.node_count() != count {
            return corrupt(format!(
                "{} znodes for {} distinct paths",
                count,
                tree.node_count()
            ));
        }
        if tree.node("/").is_none() {
            return corrupt("no root znode".into());
        }
        for (path, node) in tree.nodes() {
            if &**path != "/" && tree.node(parent(path)).is_none() {
                return corrupt(format!("{path} has no parent"));
            }
            if let NodeKind::Ephemeral(owner) = node.kind {
                if tree.session(owner).is_none() {
                    return corrupt(format!("{path} is owned by no session ({owner:#x})"));
                }
            }
        }
        Ok(tree)
    }
}

/// Encodes `tree` as a snapshot's data. Blocking: O(size of the tree).
pub(crate) fn encode_tree(tree: &DataTree) -> Result<Vec<u8>, StoreError> {
    let (image, ext) = TreeImageRef::of(tree);
    let mut bytes = encode(&image)?;
    if let Some(ext) = ext {
        bytes.extend(encode(&ext)?);
    }
    Ok(bytes)
}

/// Decodes a snapshot's data (as [`encode_tree`] made it) into a tree. Blocking.
pub(crate) fn decode_tree(data: &[u8]) -> Result<DataTree, StoreError> {
    let (image, rest) = decode_image(data)?;
    let ext = match rest {
        [] => ExtensionImage::default(),
        rest => decode::<ExtensionImage>(rest)?,
    };
    image.into_tree(ext)
}

/// Splits a snapshot's data into its [`TreeImage`] and the bytes after it (an encoded
/// [`ExtensionImage`], or nothing).
pub(crate) fn decode_image(data: &[u8]) -> Result<(TreeImage, &[u8]), StoreError> {
    let (image, used): (TreeImage, usize) =
        bincode::serde::decode_from_slice(data, crate::types::bincode_config())?;
    Ok((image, &data[used..]))
}

/// Writes `bytes` to `dir/name` atomically: temp file, fsync, rename, directory fsync. A crash
/// at any point leaves the old file or the new one, whole.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Writes the snapshot `meta` + `data` as `dir/`[`SNAPSHOT_FILE`] unless the file already holds
/// one at least as new; returns whether it wrote. Durable when it returns `Ok(true)`. Blocking.
pub(crate) fn persist_snapshot(
    dir: &Path,
    persisted: &Persisted,
    meta: &Meta,
    data: &[u8],
) -> Result<bool, StoreError> {
    let mut current = persisted.lock().unwrap_or_else(|p| p.into_inner());
    if current.is_some() && *current >= meta.last_log_id {
        return Ok(false);
    }
    let bytes = SNAPSHOT.seal(&encode(&SnapshotFileRef { meta, data })?);
    write_atomically(dir, SNAPSHOT_FILE, &bytes)?;
    *current = meta.last_log_id;
    Ok(true)
}

/// Reads `dir/`[`SNAPSHOT_FILE`] as it is now: its metadata and data, not decoded into a tree
/// (what a lagging peer is sent). `None` if there is no snapshot yet. Blocking.
pub(crate) fn read_current(dir: &Path) -> Result<Option<(Meta, Vec<u8>)>, StoreError> {
    let bytes = match std::fs::read(dir.join(SNAPSHOT_FILE)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let file: SnapshotFile = decode(snapshot_body(&bytes)?)?;
    Ok(Some((file.meta, file.data)))
}

/// Loads the latest snapshot of a state-machine directory at start-up (openraft then replays the
/// committed log after it); `None` if there is none. A file that does not decode is an error,
/// never "no snapshot": starting empty would reapply a log whose beginning may be purged.
/// Logs the time the load took. Blocking.
pub(crate) fn load_latest(dir: &Path) -> Result<Option<SnapshotContents>, StoreError> {
    let started = Instant::now();
    let bytes = match std::fs::read(dir.join(SNAPSHOT_FILE)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let contents = read_snapshot_file(&bytes)?;
    tracing::info!(
        nodes = contents.tree.node_count(),
        last_applied = ?contents.last_log_id,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "loaded snapshot"
    );
    Ok(Some(contents))
}

/// What a snapshot file holds: its metadata and the tree it restores.
pub struct SnapshotContents {
    /// The last entry the snapshot reflects: the tree's zxids are at most
    /// [`applied_zxid`](crate::types::applied_zxid) of its index.
    pub last_log_id: Option<LogId<NodeId>>,
    /// The membership recorded in the snapshot (the backed-up cluster's).
    pub membership: Membership,
    /// The tree as of `last_log_id`.
    pub tree: DataTree,
}

/// Decodes a snapshot file as written to [`SNAPSHOT_FILE`] (or a snapshot file's body, as a
/// backup holds it); a damaged envelope (`Checksum`, `Length`, `FormatVersion`), a body that
/// does not decode completely (`Decode`), or a tree that makes no sense (`Corrupt`), is an error.
pub fn read_snapshot_file(bytes: &[u8]) -> Result<SnapshotContents, StoreError> {
    let file: SnapshotFile = decode(snapshot_body(bytes)?)?;
    let tree = decode_tree(&file.data)?;
    Ok(SnapshotContents {
        last_log_id: file.meta.last_log_id,
        membership: file.meta.last_membership,
        tree,
    })
}

/// The last log id a snapshot file covers, from its metadata (the data, which may be large, is
/// checksummed but not decoded). An error if the file is damaged or its metadata does not decode.
pub fn snapshot_file_log_id(bytes: &[u8]) -> Result<Option<LogId<NodeId>>, StoreError> {
    // The metadata is the body's first field: bincode writes a struct as its fields in order.
    let (meta, _): (Meta, usize) =
        bincode::serde::decode_from_slice(snapshot_body(bytes)?, crate::types::bincode_config())?;
    Ok(meta.last_log_id)
}

/// Restores a backup ([`crate::backup`]) into a fresh state-machine directory: checks its
/// format version and checksum, then writes its snapshot to `state_dir/`[`SNAPSHOT_FILE`] with
/// the membership replaced by `membership` (recorded at the snapshot's last log id), so that a
/// node opened on it starts from the backed-up tree as a member of the new cluster. Returns the
/// snapshot's last log id and its number of znodes; the caller must mark the Raft log as purged
/// up to it (and keep the vote's term at least its term), so that new entries continue after it.
/// Refuses, before writing anything, a file that is no backup of this format, a damaged one
/// (`Backup`), a snapshot of an empty log (`Corrupt`) and anything that does not decode as a
/// snapshot (`Decode` or `Corrupt`); a failed write is `Io` or `Encode`.
pub fn restore_snapshot_file(
    state_dir: &Path,
    backup: &[u8],
    membership: openraft::Membership<NodeId, BasicNode>,
) -> Result<(LogId<NodeId>, usize), StoreError> {
    let file: SnapshotFile = decode(crate::backup::open(backup)?)?;
    // Check that the tree decodes before anything is written.
    let znodes = decode_tree(&file.data)?.node_count();
    let last = file
        .meta
        .last_log_id
        .ok_or_else(|| StoreError::Corrupt("the snapshot holds no applied entry".into()))?;
    let meta = SnapshotMeta {
        last_log_id: Some(last),
        last_membership: StoredMembership::new(Some(last), membership),
        snapshot_id: format!("restored-{}-{}", last.leader_id.term, last.index),
    };
    std::fs::create_dir_all(state_dir)?;
    let restored = SNAPSHOT.seal(&encode(&SnapshotFileRef {
        meta: &meta,
        data: &file.data,
    })?);
    write_atomically(state_dir, SNAPSHOT_FILE, &restored)?;
    Ok((last, znodes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;
    use synod_proto::records::{CreateRequest, CreateTtlRequest};
    use synod_proto::{CreateMode, ErrorCode, Request};

    use crate::tree::{Caller, Txn};

    fn meta(index: u64) -> SnapshotMeta<NodeId, BasicNode> {
        SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), index)),
            last_membership: StoredMembership::default(),
            snapshot_id: format!("s-{index}"),
        }
    }

    /// The file is enveloped: a flipped byte anywhere is refused by name at load; a file of
    /// v0.1.0 (the body alone) is still read.
    #[test]
    fn a_damaged_snapshot_file_is_refused_and_an_unenveloped_one_read() -> Result<(), StoreError> {
        let dir = tempfile::tempdir()?;
        let persisted: Persisted = Arc::new(Mutex::new(None));
        let data = encode_tree(&DataTree::new())?;
        assert!(persist_snapshot(dir.path(), &persisted, &meta(7), &data)?);
        let path = dir.path().join(SNAPSHOT_FILE);
        let good = std::fs::read(&path)?;
        assert!(SNAPSHOT.is_enveloped(&good));
        assert!(load_latest(dir.path())?.is_some());
        for i in [0, 9, 15, good.len() / 2, good.len() - 1] {
            let mut bad = good.clone();
            bad[i] ^= 0x04;
            std::fs::write(&path, &bad)?;
            let err = load_latest(dir.path()).err().map(|e| e.to_string());
            assert!(err.is_some(), "byte {i} flipped unnoticed");
            assert!(snapshot_file_log_id(&bad).is_err(), "byte {i}: log id read");
        }
        std::fs::write(&path, SNAPSHOT.open(&good)?)?;
        let legacy = load_latest(dir.path())?.map(|c| c.last_log_id);
        assert_eq!(legacy, Some(meta(7).last_log_id));
        Ok(())
    }

    #[test]
    fn an_older_snapshot_never_replaces_a_newer_one() -> Result<(), StoreError> {
        let dir = tempfile::tempdir()?;
        let persisted: Persisted = Arc::new(Mutex::new(None));
        assert!(persist_snapshot(
            dir.path(),
            &persisted,
            &meta(20),
            b"newer"
        )?);
        // A build that started before an install finishes after it: not written.
        assert!(!persist_snapshot(
            dir.path(),
            &persisted,
            &meta(10),
            b"older"
        )?);
        assert!(!persist_snapshot(
            dir.path(),
            &persisted,
            &meta(20),
            b"same"
        )?);
        let bytes = std::fs::read(dir.path().join(SNAPSHOT_FILE))?;
        let file: SnapshotFile = decode(snapshot_body(&bytes)?)?;
        assert_eq!(
            (file.meta.snapshot_id.as_str(), &file.data[..]),
            ("s-20", &b"newer"[..])
        );
        assert!(persist_snapshot(
            dir.path(),
            &persisted,
            &meta(30),
            b"newest"
        )?);
        Ok(())
    }

    /// A tree with one node of each kind and a session, as apply builds it.
    fn sample_tree() -> DataTree {
        let mut t = DataTree::new();
        let session = crate::types::session_id(1, 0);
        t.create_session(session, 10_000, Bytes::from_static(&[7; 16]));
        let creates = [
            ("/p", CreateMode::Persistent),
            ("/p/e", CreateMode::Ephemeral),
            ("/c", CreateMode::Container),
            ("/t", CreateMode::PersistentWithTtl),
        ];
        for (i, (path, mode)) in creates.into_iter().enumerate() {
            let r = CreateRequest {
                path: path.into(),
                data: Some(Bytes::from_static(b"d")),
                acl: Acl::open_unsafe(),
                flags: mode.flags(),
            };
            let req = match mode {
                CreateMode::Container => Request::CreateContainer(r),
                CreateMode::PersistentWithTtl => Request::CreateTtl(CreateTtlRequest {
                    path: r.path,
                    data: r.data,
                    acl: r.acl,
                    flags: r.flags,
                    ttl: 500,
                }),
                _ => Request::Create2(r),
            };
            let txn = Txn {
                zxid: crate::types::zxid(2, i),
                time: 1000,
                caller: Caller {
                    session_id: session,
                    auth: &[],
                },
            };
            assert_eq!(t.apply(txn, &req).err, ErrorCode::Ok, "creating {path}");
        }
        t
    }

    #[test]
    fn a_tree_survives_its_image() -> Result<(), StoreError> {
        let tree = sample_tree();
        let back = decode_tree(&encode_tree(&tree)?)?;
        assert_eq!(back.digest(), tree.digest());
        assert_eq!(back.data_bytes(), tree.data_bytes());
        assert_eq!(back.reap_candidates(i64::MAX, 10), vec!["/t".to_string()]);
        let owner = crate::types::session_id(1, 0);
        assert_eq!(back.ephemerals(owner, "/"), vec!["/p/e".to_string()]);
        Ok(())
    }

    /// The owned image of `tree` and its extension, as a peer decodes them.
    fn image_of(tree: &DataTree) -> Result<(TreeImage, Option<ExtensionImage>), StoreError> {
        let data = encode_tree(tree)?;
        let (image, rest) = decode_image(&data)?;
        let ext = match rest {
            [] => None,
            rest => Some(decode::<ExtensionImage>(rest)?),
        };
        Ok((image, ext))
    }

    #[test]
    fn tenants_and_owners_survive_the_image_and_a_tenantless_image_is_unchanged(
    ) -> Result<(), StoreError> {
        let tree = sample_tree();
        let plain = encode_tree(&tree)?;
        let (image, ext) = image_of(&tree)?;
        assert!(ext.is_none(), "no extension without tenants");
        assert_eq!(plain, encode(&image)?, "the owned image encodes the same");
        let mut tree = tree;
        let lab = Tenant {
            members: vec![("org".into(), "Lab".into())],
            quota: crate::tenants::Quota {
                znodes: Some(5),
                ..Default::default()
            },
        };
        tree.declare_tenant(crate::types::zxid(3, 0), 1000, "lab", lab)?;
        let auth = [Id {
            scheme: "org".into(),
            id: "Lab".into(),
        }];
        let r = synod_proto::Request::Create2(synod_proto::records::CreateRequest {
            path: "/tenants/lab/x".into(),
            data: Some(Bytes::from_static(b"four")),
            acl: Acl::open_unsafe(),
            flags: 0,
        });
        let txn = crate::tree::Txn {
            zxid: crate::types::zxid(4, 0),
            time: 1000,
            caller: crate::tree::Caller {
                session_id: 0,
                auth: &auth,
            },
        };
        assert_eq!(tree.apply(txn, &r).err, synod_proto::ErrorCode::Ok);
        let back = decode_tree(&encode_tree(&tree)?)?;
        assert_eq!(back.digest(), tree.digest());
        assert_eq!(back.tenants(), tree.tenants());
        assert_eq!(back.tenants().usage("lab").bytes, 4);
        assert_eq!(
            back.node("/tenants/lab/x").and_then(|n| n.owner.as_deref()),
            Some("lab")
        );
        // With null data and an ACL of two entries as well, the image encoded from the tree has
        // the bytes of the owned image a peer decodes from it, its extension included (and the
        // round trip above keeps every field: the borrowed and the owned types agree).
        tree.raise_cluster_version(crate::types::CLUSTER_VERSION);
        let r = synod_proto::Request::Create2(synod_proto::records::CreateRequest {
            path: "/n".into(),
            data: None,
            acl: vec![
                Acl::new(synod_proto::mode::perms::ALL, "digest", "alice:h"),
                Acl::new(synod_proto::mode::perms::READ, "world", "anyone"),
            ],
            flags: 0,
        });
        let txn = crate::tree::Txn {
            zxid: crate::types::zxid(5, 0),
            ..txn
        };
        assert_eq!(tree.apply(txn, &r).err, synod_proto::ErrorCode::Ok);
        assert!(tree
            .node("/n")
            .is_some_and(|n| n.null_data && n.acl.len() == 2));
        let (image, ext) = image_of(&tree)?;
        let mut owned = encode(&image)?;
        owned.extend(encode(
            &ext.ok_or(StoreError::Corrupt("no extension".into()))?,
        )?);
        assert_eq!(encode_tree(&tree)?, owned);
        Ok(())
    }

    #[test]
    fn an_image_no_tree_produces_is_corrupt() -> Result<(), StoreError> {
        let tree = sample_tree();
        let broken = |f: &dyn Fn(&mut TreeImage)| -> Result<bool, StoreError> {
            let mut img = image_of(&tree)?.0;
            f(&mut img);
            Ok(matches!(
                decode_tree(&encode(&img)?),
                Err(StoreError::Corrupt(_))
            ))
        };
        assert!(broken(&|img| img.sessions.clear())?, "orphan ephemeral");
        assert!(
            broken(&|img| img.nodes.retain(|n| n.path != "/p"))?,
            "node without parent"
        );
        assert!(
            broken(&|img| img.nodes.retain(|n| n.path != "/"))?,
            "no root"
        );
        assert!(
            broken(&|img| {
                if let Ok((mut again, _)) = image_of(&tree) {
                    img.nodes.push(again.nodes.swap_remove(0));
                }
            })?,
            "a path twice"
        );
        Ok(())
    }

    #[test]
    fn the_log_id_is_read_from_the_metadata_alone() -> Result<(), StoreError> {
        let data = encode_tree(&sample_tree())?;
        let bytes = encode(&SnapshotFileRef {
            meta: &meta(42),
            data: &data,
        })?;
        assert_eq!(snapshot_file_log_id(&bytes)?.map(|l| l.index), Some(42));
        let read = read_snapshot_file(&bytes)?;
        assert_eq!(read.last_log_id.map(|l| l.index), Some(42));
        assert!(read_snapshot_file(&bytes[..bytes.len() - 1]).is_err());
        Ok(())
    }
}
