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
//! [`SnapshotMeta`]: last log id, membership, id) followed by that data as a byte string (its
//! length, then its bytes). A file whose checksum does not match is refused at start, never
//! loaded; a file written by v0.1.0 (the body alone, before envelopes) is still read. A backup
//! wraps the same body in an envelope of its own ([`crate::backup`]). The data sent to a peer is
//! checked by decoding it whole before it is installed; on the wire it is protected by TLS.
//!
//! # Memory
//!
//! The data is hundreds of MB at a million znodes, so no path holds a second image of the tree,
//! and no path holds the data whole:
//! - a build encodes the image from the tree's own nodes ([`NodeImages`]) straight into the file
//!   ([`TreeEncoding`]: counted first, since the file's header announces its length), and
//!   openraft is handed a window of the file ([`SnapshotData`]), not the data;
//! - the data sent to a lagging peer is read from the file a chunk at a time as it is sent
//!   ([`open_current`] checks the file's checksum reading it in pieces);
//! - the data received from the leader is written to a file as its chunks arrive, then decoded
//!   from it and copied from it into the snapshot file ([`FilePiece`]);
//! - a load or an install decodes the image from the file a window at a time
//!   ([`ValueReader`]), node by node, each straight into its [`Node`] and the tree's map
//!   ([`TreeLoader`]), never as an owned image or a list of every node; every length in it is
//!   checked against the bytes there before anything is allocated for it
//!   ([`crate::in_place`]: the data comes from a leader, or a backup from another institution);
//! - a backup rewrites only the sessions ([`sessions_in`]), copying the rest from the file a
//!   piece at a time.
//!
//! [`SnapshotData`]: crate::snapshot_data::SnapshotData
//!
//! The bytes are those of serde's encoding of the whole structs ([`TreeImage`] of owned nodes,
//! a struct of the metadata and the data), which is how release 0.1 wrote them; the tests check
//! each path against it.
//!
//! # Durability
//!
//! The file is only ever replaced whole: written to a temp file, fsynced, renamed over the old
//! one, and the directory fsynced, so a crash leaves either the old snapshot or the new one (and
//! perhaps a temp file, removed at the next start). A snapshot is written only if it is newer
//! than the one in the file (see [`Persisted`]): openraft
//! may purge the log up to a snapshot as soon as it is built or installed, so the file must never
//! go back to an older one whose following entries are gone.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
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
use crate::tree::{DataTree, Name, TreeLoader};
use crate::types::{decode_prefix, encode, encode_into, NodeId};
use crate::value_reader::ValueReader;
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
    Ok(&file[snapshot_body_range(file)?])
}

/// Where [`snapshot_body`] is in `file`.
fn snapshot_body_range(file: &[u8]) -> Result<Range<usize>, StoreError> {
    if SNAPSHOT.is_enveloped(file) {
        SNAPSHOT.body_range(file)
    } else {
        Ok(0..file.len())
    }
}

type Meta = SnapshotMeta<NodeId, BasicNode>;

/// A snapshot file (or a backup) opened and checked: its metadata, the file, and where the
/// snapshot's data is in it.
pub(crate) type Opened = (Meta, File, Range<u64>);
type Membership = StoredMembership<NodeId, BasicNode>;

/// A snapshot file's body as one serde struct, the way release 0.1 wrote it: the tests' oracle
/// of the bytes [`write_snapshot_file`] writes in pieces.
#[cfg(test)]
#[derive(Serialize, Deserialize)]
pub(crate) struct SnapshotFile {
    pub(crate) meta: Meta,
    pub(crate) data: Vec<u8>,
}

/// The start of a snapshot file's body, before its data: the metadata, then the data's length
/// (as bincode writes a byte string's).
pub(crate) fn body_head(meta: &Meta, data_len: usize) -> Result<Vec<u8>, StoreError> {
    let mut head = encode(meta)?;
    encode_into(&(data_len as u64), &mut head)?;
    Ok(head)
}

/// A snapshot file's body split: its metadata, and where its data is in the body. An error
/// (`Decode`) if the metadata does not decode or the data's length is not what is left.
pub(crate) fn split_body(body: &[u8]) -> Result<(Meta, Range<usize>), StoreError> {
    let (meta, data) = split_head(body, body.len() as u64)?;
    Ok((meta, data.start as usize..body.len()))
}

/// The head of a snapshot file's body from its first bytes, `prefix`: the metadata, the data's
/// length as announced, and where the data starts. A prefix shorter than the head is `Decode`
/// (`UnexpectedEnd`).
fn decode_head(prefix: &[u8]) -> Result<(Meta, u64, u64), StoreError> {
    let (meta, meta_len): (Meta, usize) = decode_prefix(prefix)?;
    let (data_len, len_len): (u64, usize) = decode_prefix(&prefix[meta_len..])?;
    Ok((meta, data_len, (meta_len + len_len) as u64))
}

/// [`split_body`] from `prefix`, the first bytes of a body of `body_len` bytes (at least its
/// head, or it does not decode: `Decode`, `UnexpectedEnd`).
fn split_head(prefix: &[u8], body_len: u64) -> Result<(Meta, Range<u64>), StoreError> {
    let (meta, data_len, start) = decode_head(prefix)?;
    debug_assert!(start <= prefix.len() as u64 && prefix.len() as u64 <= body_len);
    let left = body_len - start;
    if data_len > left {
        return Err(bincode::error::DecodeError::UnexpectedEnd {
            additional: (data_len - left) as usize,
        }
        .into());
    }
    if data_len < left {
        return Err(bincode::error::DecodeError::OtherString(format!(
            "{} trailing bytes after the snapshot's data",
            left - data_len
        ))
        .into());
    }
    Ok((meta, start..body_len))
}

/// Writes a whole snapshot file (the envelope around [`body_head`] and `data`) to `out`, in
/// pieces: `data` is not copied (nor, for a tree, held encoded). Returns where the data is in
/// the file.
pub(crate) fn write_snapshot_file(
    out: &mut impl Write,
    meta: &Meta,
    data: &(impl Data + ?Sized),
) -> Result<Range<u64>, StoreError> {
    let head = body_head(meta, data.len())?;
    let mut sealer = SNAPSHOT.sealer(out, (head.len() + data.len()) as u64)?;
    sealer.write_all(&head)?;
    data.write_to(&mut sealer)?;
    sealer.finish()?;
    let start = (crate::envelope::HEADER + head.len()) as u64;
    Ok(start..start + data.len() as u64)
}

/// A snapshot's data as a file is written from it: its length is known first (the file's
/// header announces it), then its bytes are written.
pub(crate) trait Data {
    /// How many bytes [`Data::write_to`] writes.
    fn len(&self) -> usize;
    /// Writes the data to `out`.
    fn write_to(&self, out: &mut dyn Write) -> Result<(), StoreError>;
}

/// Data already encoded (received from the leader, or read from a backup).
impl Data for [u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    fn write_to(&self, out: &mut dyn Write) -> Result<(), StoreError> {
        Ok(out.write_all(self)?)
    }
}

/// A range of a file, read by position (the file's offset is neither used nor moved): a
/// snapshot's data on disk, read or copied a piece at a time. Reading it advances its start,
/// and what it gives ([`Data`], [`DataSource::range`]) is what is left of it: the callers read
/// a clone.
#[derive(Clone, Debug)]
pub(crate) struct FilePiece<'a> {
    /// The file.
    file: &'a File,
    /// What is left to read of it.
    range: Range<u64>,
}

impl<'a> FilePiece<'a> {
    /// The bytes of `file` in `range`.
    pub(crate) fn new(file: &'a File, range: Range<u64>) -> Self {
        FilePiece { file, range }
    }

    /// How many bytes are left to read (those past the file's end included: reading them is
    /// `UnexpectedEof`).
    pub(crate) fn len(&self) -> u64 {
        self.range.end.saturating_sub(self.range.start)
    }
}

impl Read for FilePiece<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf
            .len()
            .min(usize::try_from(self.len()).unwrap_or(usize::MAX));
        let n = self.file.read_at(&mut buf[..n], self.range.start)?;
        self.range.start += n as u64;
        Ok(n)
    }
}

/// Data on disk (received from the leader): copied a piece at a time. Its bytes, not a prefix:
/// a file shorter than the range is an error.
impl Data for FilePiece<'_> {
    fn len(&self) -> usize {
        usize::try_from(FilePiece::len(self)).unwrap_or(usize::MAX)
    }

    fn write_to(&self, out: &mut dyn Write) -> Result<(), StoreError> {
        let copied = std::io::copy(&mut self.clone(), out)?;
        if copied != FilePiece::len(self) {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        Ok(())
    }
}

/// A snapshot's data that can be read a range at a time: in a buffer, or on disk.
pub(crate) trait DataSource: Data {
    /// A reader of the bytes in `range` (positions in the data, within `0..len`).
    fn range(&self, range: Range<u64>) -> Box<dyn Read + '_>;
}

impl DataSource for [u8] {
    fn range(&self, range: Range<u64>) -> Box<dyn Read + '_> {
        debug_assert!(range.start <= range.end && range.end <= self.len() as u64);
        let (start, end) = (range.start as usize, range.end as usize);
        Box::new(self.get(start..end).unwrap_or_default())
    }
}

impl DataSource for FilePiece<'_> {
    fn range(&self, range: Range<u64>) -> Box<dyn Read + '_> {
        debug_assert!(range.start <= range.end && range.end <= FilePiece::len(self));
        let start = self.range.start;
        Box::new(FilePiece::new(
            self.file,
            start.saturating_add(range.start)..start.saturating_add(range.end),
        ))
    }
}

/// The `last_log_id` of the snapshot in [`SNAPSHOT_FILE`] (`None`: no file yet), shared by the
/// state machine (which installs snapshots) and its builders (which openraft runs in tasks of
/// their own, so a build may finish during or after an install). A writer holds the lock while
/// it compares its snapshot with this one and renames its file into place ([`persist`]), so an
/// older snapshot never replaces a newer one (whose log may already be purged).
pub(crate) type Persisted = Arc<Mutex<Option<LogId<NodeId>>>>;

/// The whole replicated state as a snapshot stores it. `N` is how its nodes are held: owned
/// [`NodeImage`]s (the tests' form, and the oracle of the bytes), or borrowed from a tree
/// ([`NodeImages`], for encoding); loading reads the same bytes one node at a time
/// ([`decode_tree_from`]), so that neither encoding nor loading holds an image of every node
/// (about 300 bytes a znode at 1,000,000 znodes, on top of the tree).
#[derive(Serialize, Deserialize)]
pub(crate) struct TreeImage<N = Vec<NodeImage>> {
    /// Every znode, in no particular order.
    nodes: N,
    /// Every live session (their ephemerals are found from the nodes' owners).
    pub(crate) sessions: Vec<SessionImage>,
}

/// One znode: its path and the fields of [`Node`] that are not derived from other nodes
/// (children are rebuilt from the paths). The path, the data and the ACL are owned as decoded
/// (the defaults), or borrowed from a node for encoding ([`NodeImages`]): one field list, the
/// same bytes.
#[derive(Serialize, Deserialize)]
pub(crate) struct NodeImage<P = String, D = Bytes, A = Vec<AclImage>> {
    path: P,
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
    data: D,
    acl: A,
}

/// What a tree with tenants, an audit trail or a raised cluster version adds after its
/// [`TreeImage`]. Loading decodes it field by field, in this order ([`decode_tree_from`]: serde
/// encodes a struct as its fields), so that a list of every node's owner is never held.
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
pub(crate) struct AclImage {
    perms: i32,
    scheme: String,
    id: String,
}

/// The sessions of a snapshot's data (`len` bytes read from `data`), and where they are in it.
/// The nodes before them are decoded one at a time and dropped (only where they end is needed):
/// a backup rewrites the sessions of data of any size holding a window of it.
pub(crate) fn sessions_in(
    data: impl Read,
    len: u64,
) -> Result<(Vec<SessionImage>, Range<u64>), StoreError> {
    let mut input = ValueReader::new(data, len);
    input.sequence(|_: NodeImage| Ok(()))?;
    let start = input.position();
    let sessions = read_sessions(&mut input)?;
    Ok((sessions, start..input.position()))
}

/// The sessions of an image, each decoded as it is read (a backup of 100,000 sessions is a few
/// MiB: more than the window).
fn read_sessions<R: Read>(input: &mut ValueReader<R>) -> Result<Vec<SessionImage>, StoreError> {
    let mut sessions = Vec::new();
    input.sequence(|s| {
        sessions.push(s);
        Ok(())
    })?;
    Ok(sessions)
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

/// Every node of a tree, serialized as the owned [`TreeImage::nodes`] is, field by field (a
/// path as a string, the data as a byte string, each ACL entry's strings), without a copy.
struct NodeImages<'a>(&'a DataTree);

impl Serialize for NodeImages<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.node_count()))?;
        for (path, n) in self.0.nodes() {
            seq.serialize_element(&NodeImage {
                path: &**path,
                czxid: n.czxid,
                mzxid: n.mzxid,
                pzxid: n.pzxid,
                ctime: n.ctime,
                mtime: n.mtime,
                version: n.version,
                cversion: n.cversion,
                aversion: n.aversion,
                kind: n.kind(),
                data: ByteString(n.data()),
                acl: AclImages(&n.acl),
            })?;
        }
        seq.end()
    }
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

impl<'a> TreeImage<NodeImages<'a>> {
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
        let image = TreeImage {
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
            if n.null_data() {
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

impl NodeImage {
    /// The path and the node this image restores, without what the extension adds (its owner,
    /// whether its data is null).
    fn into_entry(self) -> (String, Node) {
        let acl: Vec<Acl> = self
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
        let mut meta = NodeMeta::new(self.czxid, self.ctime, acl.into(), None);
        meta.mzxid = self.mzxid;
        meta.pzxid = self.pzxid;
        meta.mtime = self.mtime;
        meta.version = self.version;
        meta.cversion = self.cversion;
        meta.aversion = self.aversion;
        (self.path, Node::new(meta, self.kind, &self.data))
    }
}

/// Decodes the [`ExtensionImage`] at `input`'s position field by field: the nodes' owners and
/// null data are set on `loader`'s nodes as they are read (an owner out of order or out of
/// range is `Corrupt`), the rest is returned, and bytes after it are an error (`Decode`).
fn read_extension<R: Read>(
    input: &mut ValueReader<R>,
    loader: &mut TreeLoader,
) -> Result<ExtensionImage, StoreError> {
    let mut ext = ExtensionImage {
        tenants: input.next()?,
        ..ExtensionImage::default()
    };
    let mut next = 0;
    // One allocation per tenant name, shared by every node it owns (as the live tree does).
    let mut names: std::collections::HashSet<Name> = std::collections::HashSet::new();
    input.sequence(|(at, owner): (u64, String)| {
        let owner = match names.get(owner.as_str()) {
            Some(name) => name.clone(),
            None => {
                let name = Name::from(owner);
                names.insert(name.clone());
                name
            }
        };
        let set = at >= next
            && usize::try_from(at).is_ok_and(|i| loader.change_at(i, |m| m.owner = Some(owner)));
        if !set {
            return Err(StoreError::Corrupt(format!(
                "snapshot: an owner for node {at}, out of order or out of range"
            )));
        }
        next = at.saturating_add(1);
        Ok(())
    })?;
    ext.audit = input.next()?;
    ext.session_tenants = input.next()?;
    ext.cluster_version = input.next()?;
    // In increasing order, as written (so that finding them walks the tree once); one out of
    // range names no node and is passed over, as it always was.
    let mut next = 0;
    input.sequence(|at: u64| {
        if at < next {
            return Err(StoreError::Corrupt(format!(
                "snapshot: null data for node {at}, out of order"
            )));
        }
        if let Ok(i) = usize::try_from(at) {
            loader.change_at(i, |m| m.set_null_data(true));
        }
        next = at.saturating_add(1);
        Ok(())
    })?;
    if !input.at_end()? {
        return Err(bincode::error::DecodeError::OtherString(
            "trailing bytes after the snapshot's extension".into(),
        )
        .into());
    }
    Ok(ext)
}

/// Finishes the tree whose nodes `loader` holds with the sessions and extension that follow
/// them (the owners and null data of the extension already set on the nodes); an image that no
/// tree produces (a path twice, no root, a node without its parent, an ephemeral without its
/// session) is `Corrupt`.
fn into_tree(
    loader: TreeLoader,
    sessions: Vec<SessionImage>,
    ext: ExtensionImage,
) -> Result<DataTree, StoreError> {
    let corrupt = |what: String| Err(StoreError::Corrupt(format!("snapshot: {what}")));
    let count = loader.len();
    let session_tenants: std::collections::HashMap<i64, String> =
        ext.session_tenants.into_iter().collect();
    let sessions = sessions
        .into_iter()
        .map(|s| {
            let tenant = session_tenants.get(&s.id).map(|t| t.as_str().into());
            (s.id, s.timeout_ms, s.passwd, tenant)
        })
        .collect();
    let tenants = ext.tenants.len();
    let mut tree = loader.finish(sessions, ext.tenants);
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
        if let NodeKind::Ephemeral(owner) = node.kind() {
            if tree.session(owner).is_none() {
                return corrupt(format!("{path} is owned by no session ({owner:#x})"));
            }
        }
    }
    Ok(tree)
}

/// A tree's image ready to be written as a snapshot's data, its length counted (a build writes
/// it into the file as it encodes it, and never holds it encoded).
///
/// The image is encoded twice: first only counted, then into the file (or, for the tests, into
/// a buffer of the size counted). A buffer grown by doubling would hold up to twice the data,
/// and the encoded data whole is as large as the file (178 MB at 1,000,000 znodes); counting
/// costs a pass over the tree without a copy.
pub(crate) struct TreeEncoding<'a> {
    /// The image, borrowed from the tree's nodes.
    image: TreeImage<NodeImages<'a>>,
    /// What the tree adds after its image, if anything.
    ext: Option<ExtensionImage>,
    /// How many bytes `image` and `ext` encode into.
    len: usize,
}

impl<'a> TreeEncoding<'a> {
    /// `tree`'s image, counted. Blocking: O(size of the tree).
    pub(crate) fn of(tree: &'a DataTree) -> Result<Self, StoreError> {
        let (image, ext) = TreeImage::<NodeImages>::of(tree);
        let mut counted = Counted::default();
        encode_into(&image, &mut counted)?;
        if let Some(ext) = &ext {
            encode_into(ext, &mut counted)?;
        }
        Ok(TreeEncoding {
            image,
            ext,
            len: counted.0,
        })
    }
}

/// The tree encoded as it is written. Blocking: O(size of the tree).
impl Data for TreeEncoding<'_> {
    fn len(&self) -> usize {
        self.len
    }

    fn write_to(&self, out: &mut dyn Write) -> Result<(), StoreError> {
        // Many small fields: gathered before they reach the checksum and the file.
        let mut out = BufWriter::with_capacity(64 << 10, out);
        encode_into(&self.image, &mut out)?;
        if let Some(ext) = &self.ext {
            encode_into(ext, &mut out)?;
        }
        Ok(out.flush()?)
    }
}

/// Encodes `tree` as a snapshot's data, into a buffer of exactly its size: the tests' view of
/// the data a build writes.
#[cfg(test)]
pub(crate) fn encode_tree(tree: &DataTree) -> Result<Vec<u8>, StoreError> {
    let encoding = TreeEncoding::of(tree)?;
    let mut data = Vec::with_capacity(encoding.len);
    encoding.write_to(&mut data)?;
    debug_assert_eq!(
        data.len(),
        encoding.len,
        "the image encodes as it was counted"
    );
    Ok(data)
}

/// A `Write` that keeps nothing and counts the bytes written to it.
#[derive(Default)]
struct Counted(usize);

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Decodes a snapshot's data (as [`TreeEncoding`] writes it) into a tree, each node as it is read.
/// Blocking.
pub(crate) fn decode_tree(data: &[u8]) -> Result<DataTree, StoreError> {
    decode_tree_from(data, data.len() as u64)
}

/// [`decode_tree`] of the `len` bytes read from `data` (a file), a window at a time
/// ([`ValueReader`]): what it holds beyond the tree is the window ([`TreeLoader`] keeps no list
/// of the nodes for an image in the tree's order, as every image synod writes). Blocking.
pub(crate) fn decode_tree_from(data: impl Read, len: u64) -> Result<DataTree, StoreError> {
    let mut input = ValueReader::new(data, len);
    let mut loader = TreeLoader::new();
    input.sequence(|n: NodeImage| {
        let (path, node) = n.into_entry();
        loader.push(path, node);
        Ok(())
    })?;
    let sessions = read_sessions(&mut input)?;
    let ext = match input.at_end()? {
        true => ExtensionImage::default(),
        false => read_extension(&mut input, &mut loader)?,
    };
    into_tree(loader, sessions, ext)
}

/// Splits a snapshot's data into its owned [`TreeImage`] and the bytes after it (an encoded
/// [`ExtensionImage`], or nothing): the tests' view of what a peer decodes.
#[cfg(test)]
pub(crate) fn decode_image(data: &[u8]) -> Result<(TreeImage, &[u8]), StoreError> {
    let (image, used): (TreeImage, usize) = decode_prefix(data)?;
    Ok((image, &data[used..]))
}

/// Writes a new snapshot file to a temp file of its own in `dir` ([`TEMP_PREFIX`]), through a
/// buffer, and fsyncs it: `fill` writes the contents. Returns the temp file (removed if it is
/// dropped, as on an error here) and what `fill` returned. Blocking.
fn write_temp<T>(
    dir: &Path,
    fill: impl FnOnce(&mut BufWriter<&mut File>) -> Result<T, StoreError>,
) -> Result<(tempfile::NamedTempFile, T), StoreError> {
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .suffix(TEMP_SUFFIX)
        .tempfile_in(dir)?;
    let filled = {
        let mut out = BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        let filled = fill(&mut out)?;
        out.flush()?;
        filled
    };
    tmp.as_file().sync_all()?;
    Ok((tmp, filled))
}

/// Renames `tmp` (written by [`write_temp`]) over `dir/`[`SNAPSHOT_FILE`], calls `renamed`, and
/// fsyncs the directory. A crash at any point leaves the old file or the new one, whole (and
/// perhaps the temp file, removed at the next start: [`remove_temp_files`]). An
/// error before the rename leaves the old one (and removes the temp file); after it (the
/// directory's fsync), the new one is in place but may not be durable: `renamed` was called
/// (the caller knows which file is there, so that an older one never replaces it), and the
/// error says it may not be durable. Returns the file, open for reading and writing. Blocking.
fn rename_into_place(
    dir: &Path,
    tmp: tempfile::NamedTempFile,
    renamed: impl FnOnce(),
) -> Result<File, StoreError> {
    let file = tmp
        .persist(dir.join(SNAPSHOT_FILE))
        .map_err(|e| StoreError::Io(e.error))?;
    renamed();
    File::open(dir)?.sync_all()?;
    Ok(file)
}

/// Writes the snapshot `meta` + `data` as `dir/`[`SNAPSHOT_FILE`] unless the file holds one at
/// least as new, before or once it is written; returns whether the file holds it now (durable
/// then). Blocking.
pub(crate) fn persist_snapshot(
    dir: &Path,
    persisted: &Persisted,
    meta: &Meta,
    data: &(impl Data + ?Sized),
) -> Result<bool, StoreError> {
    Ok(matches!(
        persist(dir, persisted, meta, data)?,
        Some((true, ..))
    ))
}

/// The temp files a snapshot is written to before it is renamed into place ([`write_temp`]):
/// `snapshot.bin.<random>.tmp` (and `snapshot.bin.tmp`, up to release 0.5.12). What a crash
/// leaves of them is removed when the state machine opens ([`remove_temp_files`]).
const TEMP_PREFIX: &str = "snapshot.bin.";
const TEMP_SUFFIX: &str = ".tmp";

/// [`persist_snapshot`], returning the file written (open, whatever replaces it later), where
/// its data is in it, and whether it is [`SNAPSHOT_FILE`] now; `None` if a snapshot at least as
/// new was already there, and nothing was written.
///
/// The snapshot is written to a temp file of its own, without the [`Persisted`] lock, which is
/// taken only to compare and rename: an install never waits for a build's encoding of a large
/// tree, and two writes never share a temp file. A newer snapshot that replaced the file while
/// this one was written wins: this one is not renamed, and its file is returned without a
/// name (gone when closed; a build still hands openraft its data), not written again.
pub(crate) fn persist(
    dir: &Path,
    persisted: &Persisted,
    meta: &Meta,
    data: &(impl Data + ?Sized),
) -> Result<Option<(bool, File, Range<u64>)>, StoreError> {
    let lock = || persisted.lock().unwrap_or_else(|p| p.into_inner());
    let newer = |current: &Option<LogId<NodeId>>| current.is_some() && *current >= meta.last_log_id;
    if newer(&lock()) {
        return Ok(None);
    }
    let (tmp, data_range) = write_temp(dir, |out| write_snapshot_file(out, meta, data))?;
    let mut current = lock();
    if newer(&current) {
        return Ok(Some((false, tmp.into_file(), data_range)));
    }
    let file = rename_into_place(dir, tmp, || *current = meta.last_log_id)?;
    Ok(Some((true, file, data_range)))
}

/// Removes the temp files of snapshot writes a crash interrupted ([`TEMP_PREFIX`]) from `dir`.
/// Run before anything writes a snapshot there. Blocking.
pub(crate) fn remove_temp_files(dir: &Path) -> Result<(), StoreError> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(TEMP_PREFIX)
            && name.ends_with(TEMP_SUFFIX)
            && entry.file_type()?.is_file()
        {
            tracing::info!(file = %name, "removing a snapshot write a stop interrupted");
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Writes the snapshot `meta` + `data` to a file of its own in `dir`, with no name (gone when
/// closed): a build that a newer snapshot overtook before it was written still hands openraft
/// its data. Blocking.
pub(crate) fn write_unnamed(
    dir: &Path,
    meta: &Meta,
    data: &(impl Data + ?Sized),
) -> Result<(File, Range<u64>), StoreError> {
    let mut out = BufWriter::with_capacity(1 << 20, tempfile::tempfile_in(dir)?);
    let range = write_snapshot_file(&mut out, meta, data)?;
    Ok((out.into_inner().map_err(|e| e.into_error())?, range))
}

/// Opens `dir/`[`SNAPSHOT_FILE`] as it is now (what a lagging peer is sent): its metadata, the
/// file, and where the data is in it. The file is checked against its checksum and its head
/// decoded, reading it in pieces: the data is neither held in memory nor decoded. `None` if
/// there is no snapshot yet. Blocking.
pub(crate) fn open_current(dir: &Path) -> Result<Option<Opened>, StoreError> {
    match File::open(dir.join(SNAPSHOT_FILE)) {
        Ok(file) => open_file(file).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// [`open_current`] of a snapshot file already open (which a newer snapshot may have replaced
/// since: it is read whole as it was). Blocking.
pub(crate) fn open_file(file: File) -> Result<Opened, StoreError> {
    let len = file.metadata()?.len();
    let mut magic = [0; 8];
    let enveloped = len >= 8 && {
        file.read_exact_at(&mut magic, 0)?;
        SNAPSHOT.is_enveloped(&magic)
    };
    let body = match enveloped {
        true => SNAPSHOT.body_range_in_file(&file)?,
        false => 0..len,
    };
    open_body(file, body)
}

/// The snapshot file's body at `body` in `file` (checked already: a snapshot file's, or a
/// backup's): its metadata, the file, and where the data is in it. Blocking.
pub(crate) fn open_body(file: File, body: Range<u64>) -> Result<Opened, StoreError> {
    // The head is the metadata (a membership: small) and the data's length: read from a few
    // KiB of the body, more only if it does not fit.
    let body_len = body.end - body.start;
    let mut want: u64 = 4 << 10;
    loop {
        let read = want.min(body_len);
        let mut prefix = vec![0; usize::try_from(read).unwrap_or(usize::MAX)];
        file.read_exact_at(&mut prefix, body.start)?;
        // Only a head cut short by the prefix is read again, longer: a data length that does
        // not match the body is an error at once (`split_head`).
        match decode_head(&prefix) {
            Err(StoreError::Decode(bincode::error::DecodeError::UnexpectedEnd { .. }))
                if read < body_len =>
            {
                want = want.saturating_mul(2)
            }
            head => {
                head?;
                let (meta, data) = split_head(&prefix, body_len)?;
                let data = body.start + data.start..body.start + data.end;
                return Ok((meta, file, data));
            }
        }
    }
}

/// Loads the latest snapshot of a state-machine directory at start-up (openraft then replays the
/// committed log after it); `None` if there is none. A file that does not decode is an error,
/// never "no snapshot": starting empty would reapply a log whose beginning may be purged.
/// Logs the time the load took. Blocking.
pub(crate) fn load_latest(dir: &Path) -> Result<Option<SnapshotContents>, StoreError> {
    let started = Instant::now();
    let Some((meta, file, data)) = open_current(dir)? else {
        return Ok(None);
    };
    let contents = SnapshotContents::decode(meta, &file, data)?;
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

impl SnapshotContents {
    /// The snapshot of `meta` whose data is at `data` in `file`, decoded a window at a time.
    fn decode(meta: Meta, file: &File, data: Range<u64>) -> Result<Self, StoreError> {
        let data = FilePiece::new(file, data);
        Ok(SnapshotContents {
            tree: decode_tree_from(data.clone(), data.len())?,
            last_log_id: meta.last_log_id,
            membership: meta.last_membership,
        })
    }
}

/// [`read_snapshot_file`] of an open snapshot file, read a piece at a time (its checksum
/// checked first): what the file holds is never in memory whole. Blocking.
pub fn read_snapshot_from(file: File) -> Result<SnapshotContents, StoreError> {
    let (meta, file, data) = open_file(file)?;
    SnapshotContents::decode(meta, &file, data)
}

/// The snapshot in an open backup file ([`crate::backup`]), read as [`read_snapshot_from`]
/// reads a snapshot file. Blocking.
pub fn read_backup_from(file: File) -> Result<SnapshotContents, StoreError> {
    let (meta, file, data) = crate::backup::open_file(file)?;
    SnapshotContents::decode(meta, &file, data)
}

/// Decodes a snapshot file as written to [`SNAPSHOT_FILE`] (or a snapshot file's body, as a
/// backup holds it); a damaged envelope (`Checksum`, `Length`, `FormatVersion`), a body that
/// does not decode completely (`Decode`), or a tree that makes no sense (`Corrupt`), is an error.
pub fn read_snapshot_file(bytes: &[u8]) -> Result<SnapshotContents, StoreError> {
    let body = snapshot_body(bytes)?;
    let (meta, data) = split_body(body)?;
    let tree = decode_tree(&body[data])?;
    Ok(SnapshotContents {
        last_log_id: meta.last_log_id,
        membership: meta.last_membership,
        tree,
    })
}

/// The last log id a snapshot file covers, from its metadata (the data, which may be large, is
/// checksummed but not decoded). An error if the file is damaged or its metadata does not decode.
pub fn snapshot_file_log_id(bytes: &[u8]) -> Result<Option<LogId<NodeId>>, StoreError> {
    Ok(split_body(snapshot_body(bytes)?)?.0.last_log_id)
}

/// Restores a backup ([`crate::backup`]) into a fresh state-machine directory: checks its
/// format version and checksum, then writes its snapshot to `state_dir/`[`SNAPSHOT_FILE`] with
/// the membership replaced by `membership` (recorded at the snapshot's last log id), so that a
/// node opened on it starts from the backed-up tree as a member of the new cluster. Returns the
/// snapshot's last log id and the tree; the caller must mark the Raft log as purged up to it
/// (and keep the vote's term at least its term), so that new entries continue after it, and
/// start the audit trail at the tree's head.
/// Refuses, before writing anything, a file that is no backup of this format, a damaged one
/// (`Backup`), a snapshot of an empty log (`Corrupt`) and anything that does not decode as a
/// snapshot (`Decode` or `Corrupt`); a failed write is `Io` or `Encode`. The backup is read a
/// piece at a time, never held whole: its checksum checked, then its data copied into the new
/// snapshot file, and the tree decoded from that copy before it is renamed into place (so the
/// tree checked is the one the file holds). Blocking.
pub fn restore_snapshot_file(
    state_dir: &Path,
    backup: File,
    membership: openraft::Membership<NodeId, BasicNode>,
) -> Result<(LogId<NodeId>, DataTree), StoreError> {
    let (backed_up, backup, data) = crate::backup::open_file(backup)?;
    let data = FilePiece::new(&backup, data);
    let last = backed_up
        .last_log_id
        .ok_or_else(|| StoreError::Corrupt("the snapshot holds no applied entry".into()))?;
    let meta = SnapshotMeta {
        last_log_id: Some(last),
        last_membership: StoredMembership::new(Some(last), membership),
        snapshot_id: format!("restored-{}-{}", last.leader_id.term, last.index),
    };
    std::fs::create_dir_all(state_dir)?;
    let (tmp, tree) = write_temp(state_dir, |out| {
        let written = write_snapshot_file(out, &meta, &data)?;
        out.flush()?;
        let copy = FilePiece::new(out.get_ref(), written);
        decode_tree_from(copy.clone(), copy.len())
    })?;
    rename_into_place(state_dir, tmp, || ())?;
    Ok((last, tree))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::decode;
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

    /// What a lagging peer is sent: the current snapshot's metadata, and its data read from the
    /// window of the file.
    fn read_current(dir: &Path) -> Result<Option<(Meta, Vec<u8>)>, StoreError> {
        let Some((meta, file, range)) = open_current(dir)? else {
            return Ok(None);
        };
        let mut data = vec![0; (range.end - range.start) as usize];
        file.read_exact_at(&mut data, range.start)?;
        Ok(Some((meta, data)))
    }

    /// The file is enveloped: a flipped byte anywhere is refused by name at load; a file of
    /// v0.1.0 (the body alone) is still read.
    #[test]
    fn a_damaged_snapshot_file_is_refused_and_an_unenveloped_one_read() -> Result<(), StoreError> {
        let dir = tempfile::tempdir()?;
        let persisted: Persisted = Arc::new(Mutex::new(None));
        let data = encode_tree(&DataTree::new())?;
        assert!(persist_snapshot(
            dir.path(),
            &persisted,
            &meta(7),
            &data[..]
        )?);
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

    /// A directory whose snapshot file is the snapshot at index `index` holding `data`, and
    /// its [`Persisted`].
    fn with_snapshot(
        index: u64,
        data: &[u8],
    ) -> Result<(tempfile::TempDir, Persisted), StoreError> {
        let dir = tempfile::tempdir()?;
        let persisted: Persisted = Arc::new(Mutex::new(None));
        assert!(persist_snapshot(
            dir.path(),
            &persisted,
            &meta(index),
            data
        )?);
        Ok((dir, persisted))
    }

    /// The names of the files in `dir`, sorted.
    fn names_in(dir: &Path) -> Result<Vec<String>, StoreError> {
        let mut names = std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<Vec<_>, _>>()?;
        names.sort();
        Ok(names)
    }

    #[test]
    fn an_older_snapshot_never_replaces_a_newer_one() -> Result<(), StoreError> {
        let (dir, persisted) = with_snapshot(20, b"newer")?;
        // A build that started before an install finishes after it: not written.
        assert!(!persist_snapshot(
            dir.path(),
            &persisted,
            &meta(10),
            &b"older"[..]
        )?);
        assert!(!persist_snapshot(
            dir.path(),
            &persisted,
            &meta(20),
            &b"same"[..]
        )?);
        let (kept, data) = read_current(dir.path())?.ok_or(StoreError::Corrupt("none".into()))?;
        assert_eq!(
            (kept.snapshot_id.as_str(), &data[..]),
            ("s-20", &b"newer"[..])
        );
        assert!(persist_snapshot(
            dir.path(),
            &persisted,
            &meta(30),
            &b"newest"[..]
        )?);
        Ok(())
    }

    /// A snapshot is written without the lock (here a newer one is recorded while it is being
    /// written, which would deadlock if the lock were held), and, overtaken, is not renamed
    /// into place: its data comes back in a file without a name, and no temp file is left.
    #[test]
    fn a_snapshot_overtaken_while_it_is_written_is_not_kept() -> Result<(), StoreError> {
        /// Data that records a newer snapshot while it is written.
        struct Overtaken<'a>(&'a Persisted, &'a Path);
        impl Data for Overtaken<'_> {
            fn len(&self) -> usize {
                5
            }
            fn write_to(&self, out: &mut dyn Write) -> Result<(), StoreError> {
                assert!(persist_snapshot(self.1, self.0, &meta(50), &b"newer"[..])?);
                Ok(out.write_all(b"older")?)
            }
        }
        let (dir, persisted) = with_snapshot(20, b"first")?;
        let written = persist(
            dir.path(),
            &persisted,
            &meta(40),
            &Overtaken(&persisted, dir.path()),
        )?;
        let Some((false, file, range)) = written else {
            panic!("an overtaken snapshot was kept");
        };
        let mut data = Vec::new();
        FilePiece::new(&file, range).read_to_end(&mut data)?;
        assert_eq!(data, b"older");
        let (kept, data) = read_current(dir.path())?.ok_or(StoreError::Corrupt("none".into()))?;
        assert_eq!(
            (kept.snapshot_id.as_str(), &data[..]),
            ("s-50", &b"newer"[..])
        );
        assert_eq!(names_in(dir.path())?, [SNAPSHOT_FILE]);
        Ok(())
    }

    /// What a crash leaves of a snapshot's write (this release's temp files and 0.5.12's) is
    /// removed at start; the snapshot file and anything else stay.
    #[test]
    fn temp_files_a_crash_left_are_removed() -> Result<(), StoreError> {
        let (dir, _) = with_snapshot(20, b"kept")?;
        for name in ["snapshot.bin.tmp", "snapshot.bin.a1B2c3.tmp", "other.tmp"] {
            std::fs::write(dir.path().join(name), b"partial")?;
        }
        remove_temp_files(dir.path())?;
        assert_eq!(names_in(dir.path())?, ["other.tmp", SNAPSHOT_FILE]);
        let (kept, data) = read_current(dir.path())?.ok_or(StoreError::Corrupt("none".into()))?;
        assert_eq!(
            (kept.snapshot_id.as_str(), &data[..]),
            ("s-20", &b"kept"[..])
        );
        Ok(())
    }

    /// The file is written and read in pieces (head, data, checksum), with the bytes of the
    /// envelope around serde's encoding of the body as one struct, at every size of bincode's
    /// length prefix up to 5 bytes (one byte below 251, then 3, then 5; 9 from 4 GiB, written
    /// by the same varint of a `u64`).
    #[test]
    fn a_snapshot_file_in_pieces_is_the_file_as_one_struct() -> Result<(), StoreError> {
        let dir = tempfile::tempdir()?;
        for len in [0, 1, 250, 251, 65_535, 65_536, 300_000] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut pieces = Vec::new();
            write_snapshot_file(&mut pieces, &meta(9), &data[..])?;
            let whole = SNAPSHOT.seal(&encode(&SnapshotFile {
                meta: meta(9),
                data: data.clone(),
            })?);
            assert_eq!(pieces, whole, "{len} bytes of data");
            let body = snapshot_body(&pieces)?;
            let (read, range) = split_body(body)?;
            assert_eq!(
                (read.snapshot_id.as_str(), &body[range]),
                ("s-9", &data[..])
            );
            // What a lagging peer is sent: the window of the file.
            let persisted: Persisted = Arc::new(Mutex::new(None));
            let dir = dir.path().join(len.to_string());
            std::fs::create_dir(&dir)?;
            assert!(persist_snapshot(&dir, &persisted, &meta(9), &data[..])?);
            let current = read_current(&dir)?.map(|(m, d)| (m.snapshot_id, d));
            assert_eq!(current, Some(("s-9".to_string(), data)));
            assert_eq!(names_in(&dir)?, [SNAPSHOT_FILE], "no temp file is left");
        }
        // A body whose data is shorter or longer than its length says does not decode.
        let body = encode(&SnapshotFile {
            meta: meta(9),
            data: vec![1, 2, 3],
        })?;
        for wrong in [&body[..body.len() - 1], &[&body[..], &[0]].concat()[..]] {
            assert!(matches!(split_body(wrong), Err(StoreError::Decode(_))));
        }
        Ok(())
    }

    /// The data is encoded into a buffer of its exact size, with the bytes of one `encode` of
    /// the owned image.
    #[test]
    fn an_image_is_encoded_into_a_buffer_of_its_size() -> Result<(), StoreError> {
        let mut tree = DataTree::new();
        for i in 0..40 {
            let r = Request::Create(CreateRequest {
                path: format!("/n{i}"),
                data: Some(Bytes::from(vec![i as u8; 64 << 10])),
                acl: Acl::open_unsafe(),
                flags: 0,
            });
            let txn = Txn {
                zxid: crate::types::zxid(i + 1, 0),
                time: 1000,
                caller: Caller {
                    session_id: 0,
                    auth: &[],
                },
            };
            assert_eq!(tree.apply(txn, &r).err, ErrorCode::Ok);
        }
        let data = encode_tree(&tree)?;
        assert!(data.len() > 40 * (64 << 10));
        assert_eq!(data.capacity(), data.len());
        let (image, ext) = image_of(&tree)?;
        assert!(ext.is_none());
        assert_eq!(data, encode(&image)?);
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
            .is_some_and(|n| n.null_data() && n.acl.len() == 2));
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

    /// A snapshot from a leader or a backup from another institution is input from outside:
    /// a length in it that claims more than the bytes there (here 2^60, in each place a string
    /// or a byte string sits) is a decode error, for an install, a load and a restore alike,
    /// not an allocation that aborts the node (as it was before 0.5.12).
    #[test]
    fn a_length_beyond_a_snapshot_is_refused_before_it_is_allocated() -> Result<(), StoreError> {
        use crate::in_place::claiming_2_pow_60;
        let (mut img, _) = image_of(&sample_tree())?;
        let node = img
            .nodes
            .iter_mut()
            .find(|n| n.path == "/c")
            .ok_or(StoreError::Corrupt("no /c".into()))?;
        node.path = "/marked-path".into();
        node.data = Bytes::from_static(b"marked-data");
        node.acl[0].scheme = "marked-scheme".into();
        node.acl[0].id = "marked-id".into();
        img.sessions[0].passwd = Bytes::from_static(b"marked-passwd");
        let data = encode(&img)?;
        assert!(decode_tree(&data).is_ok(), "the marked image is a tree");
        let mut marked = meta(5);
        marked.snapshot_id = "marked-snapshot-id".into();
        let membership = marked.last_membership.membership().clone();
        let restore = |meta: &Meta, data: &[u8]| -> Result<(), StoreError> {
            let mut body = body_head(meta, data.len())?;
            body.extend_from_slice(data);
            let dir = tempfile::tempdir()?;
            let mut backup = tempfile::tempfile()?;
            backup.write_all(&crate::backup::BACKUP.seal(&body))?;
            restore_snapshot_file(dir.path(), backup, membership.clone()).map(|_| ())
        };
        restore(&marked, &data)?;
        for marker in [
            "/marked-path",
            "marked-data",
            "marked-scheme",
            "marked-id",
            "marked-passwd",
        ] {
            let hostile = claiming_2_pow_60(&data, marker);
            assert!(
                matches!(decode_tree(&hostile), Err(StoreError::Decode(_))),
                "{marker}: load and install"
            );
            assert!(
                matches!(restore(&meta(5), &hostile), Err(StoreError::Decode(_))),
                "{marker}: restore"
            );
        }
        let head = claiming_2_pow_60(&body_head(&marked, data.len())?, "marked-snapshot-id");
        assert!(
            matches!(split_body(&head), Err(StoreError::Decode(_))),
            "metadata"
        );
        Ok(())
    }

    #[test]
    fn the_log_id_is_read_from_the_metadata_alone() -> Result<(), StoreError> {
        let data = encode_tree(&sample_tree())?;
        let bytes = encode(&SnapshotFile {
            meta: meta(42),
            data,
        })?;
        assert_eq!(snapshot_file_log_id(&bytes)?.map(|l| l.index), Some(42));
        let read = read_snapshot_file(&bytes)?;
        assert_eq!(read.last_log_id.map(|l| l.index), Some(42));
        assert!(read_snapshot_file(&bytes[..bytes.len() - 1]).is_err());
        Ok(())
    }
}
