//! The openraft state machine. Entries are applied to the [`DataTree`] under one lock, the
//! [`Replica`] lock, which the server shares for its node-local state (watches, waiting requests)
//! through an [`ApplyObserver`]: a read and the watch it leaves are atomic with respect to apply,
//! and the events of an entry reach connections before anyone can see the entry as applied.
//!
//! Snapshots are serialized from an O(1) copy of the persistent tree, so apply never waits for
//! one, and written atomically (temp file, fsync, rename, directory fsync). The tree itself lives
//! in memory: a restart loads the latest snapshot and openraft replays the committed log after it.

// openraft's StorageError is the error type its traits require; boxing it here would only move
// the size elsewhere.
#![allow(clippy::result_large_err)]

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use synod_proto::jute::Reader;
use synod_proto::{Acl, ErrorCode, Id, OpCode, Request};
use tokio::sync::watch;

use crate::tree::{Applied, Caller, DataTree, Event, Node, NodeKind, Txn};
use crate::types::{decode, encode, Command, CommandResult, NodeId, TypeConfig};

type Membership = StoredMembership<NodeId, BasicNode>;
type SErr = StorageError<NodeId>;

/// What applying one command did, handed to the [`ApplyObserver`].
#[derive(Debug)]
pub enum Outcome<'a> {
    /// A session was opened with this id (the entry's index).
    SessionCreated { session_id: i64 },
    /// A session ended; its ephemerals' deletion caused these events.
    SessionClosed {
        session_id: i64,
        events: &'a [Event],
    },
    /// A client write's result and events.
    Write { applied: &'a Applied },
    /// Container / TTL nodes were reaped.
    Reaped { events: &'a [Event] },
}

/// The server's hook into apply: runs under the replica lock, after the tree has changed and
/// before the entry is published as applied. It must not block.
pub trait ApplyObserver: Send + 'static {
    fn on_apply(&mut self, tree: &DataTree, zxid: i64, command: &Command, outcome: Outcome<'_>);

    /// Every command of the entry at log index `index` has been applied (a batch entry carries
    /// many). Replies to its commands must not leave before this: then a client that has seen one
    /// of its zxids has also been sent every event of that entry.
    fn on_entry_applied(&mut self, _index: u64) {}

    /// The whole tree was replaced by a snapshot from the leader.
    fn on_install(&mut self, _tree: &DataTree) {}
}

/// No observer (tests, tools).
impl ApplyObserver for () {
    fn on_apply(&mut self, _: &DataTree, _: i64, _: &Command, _: Outcome<'_>) {}
}

/// The applied state of this replica and the server's node-local state, behind one lock.
pub struct Replica<X> {
    pub tree: DataTree,
    /// The last entry applied; the tree reflects exactly the entries up to it.
    pub last_applied: Option<LogId<NodeId>>,
    /// The membership as of the last applied membership entry.
    pub membership: Membership,
    pub observer: X,
}

impl<X> Replica<X> {
    /// The log index of the last applied entry (0 before any).
    pub fn applied_index(&self) -> u64 {
        self.last_applied.map(|l| l.index).unwrap_or(0)
    }

    /// The zxid that reflects every applied entry ([`crate::types::applied_zxid`]).
    pub fn applied_zxid(&self) -> i64 {
        crate::types::applied_zxid(self.applied_index())
    }
}

/// The shared handle to a replica.
pub type SharedReplica<X> = Arc<Mutex<Replica<X>>>;

/// Locks a replica, recovering from poisoning (apply leaves no half-done state behind a panic
/// that matters more than stopping would).
pub fn lock<X>(r: &SharedReplica<X>) -> MutexGuard<'_, Replica<X>> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}

/// The snapshot file's layout (bincode): metadata, then the tree. Nothing of a snapshot stays
/// in memory: [`SNAPSHOT_FILE`], replaced atomically, is the current snapshot, read when a peer
/// needs it.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

/// [`SnapshotFile`] borrowed, for writing without copying the data (same bincode bytes: a
/// slice and a `Vec` of `u8` both serialize as a length and the bytes).
#[derive(Serialize)]
struct SnapshotFileRef<'a> {
    meta: &'a SnapshotMeta<NodeId, BasicNode>,
    data: &'a [u8],
}

/// The `last_log_id` of the snapshot in [`SNAPSHOT_FILE`], shared by the state machine (which
/// installs snapshots) and its builders (which openraft runs in tasks of their own, so a build
/// may finish during or after an install). A writer holds it for the whole write: two writes
/// never overlap on the temp file, and an older snapshot never replaces a newer one (whose log
/// may already be purged).
type Persisted = Arc<Mutex<Option<LogId<NodeId>>>>;

/// One node in a snapshot; children and derived sets are rebuilt on load.
#[derive(Serialize, Deserialize)]
struct SnapNode {
    path: String,
    czxid: i64,
    mzxid: i64,
    pzxid: i64,
    ctime: i64,
    mtime: i64,
    version: i32,
    cversion: i32,
    aversion: i32,
    /// 0 persistent, 1 ephemeral (arg = owner), 2 container, 3 TTL (arg = ttl ms).
    kind: (u8, i64),
    data: Bytes,
    acl: Vec<(i32, String, String)>,
}

#[derive(Serialize, Deserialize)]
struct TreeImage {
    nodes: Vec<SnapNode>,
    sessions: Vec<(i64, i32, Bytes)>,
}

fn tree_to_image(tree: &DataTree) -> TreeImage {
    let nodes = tree
        .nodes()
        .map(|(path, n)| SnapNode {
            path: path.to_string(),
            czxid: n.czxid,
            mzxid: n.mzxid,
            pzxid: n.pzxid,
            ctime: n.ctime,
            mtime: n.mtime,
            version: n.version,
            cversion: n.cversion,
            aversion: n.aversion,
            kind: match n.kind {
                NodeKind::Persistent => (0, 0),
                NodeKind::Ephemeral(o) => (1, o),
                NodeKind::Container => (2, 0),
                NodeKind::Ttl(t) => (3, t),
            },
            data: n.data.clone(),
            acl: n
                .acl
                .iter()
                .map(|a| (a.perms, a.id.scheme.clone(), a.id.id.clone()))
                .collect(),
        })
        .collect();
    let sessions = tree
        .sessions()
        .map(|(id, s)| (id, s.timeout_ms, s.passwd.clone()))
        .collect();
    TreeImage { nodes, sessions }
}

fn image_to_tree(img: TreeImage) -> Result<DataTree, String> {
    let mut nodes = Vec::with_capacity(img.nodes.len());
    for n in img.nodes {
        let kind = match n.kind {
            (0, _) => NodeKind::Persistent,
            (1, o) => NodeKind::Ephemeral(o),
            (2, _) => NodeKind::Container,
            (3, t) => NodeKind::Ttl(t),
            (k, _) => return Err(format!("unknown node kind {k} at {}", n.path)),
        };
        let acl: Vec<Acl> = n
            .acl
            .into_iter()
            .map(|(perms, scheme, id)| Acl {
                perms,
                id: Id { scheme, id },
            })
            .collect();
        nodes.push((
            n.path,
            Node {
                czxid: n.czxid,
                mzxid: n.mzxid,
                pzxid: n.pzxid,
                ctime: n.ctime,
                mtime: n.mtime,
                version: n.version,
                cversion: n.cversion,
                aversion: n.aversion,
                kind,
                data: n.data,
                acl: acl.into(),
                children: Default::default(),
            },
        ));
    }
    Ok(DataTree::from_parts(nodes, img.sessions))
}

/// Applies one command to the tree; returns the result for openraft and tells the observer.
/// `position` is the command's place in its batch (0 for a lone command).
fn apply_command<X: ApplyObserver>(
    r: &mut Replica<X>,
    index: u64,
    position: usize,
    cmd: &Command,
) -> CommandResult {
    let zxid = crate::types::zxid(index, position);
    if let Command::Batch(cmds) = cmd {
        debug_assert!(cmds.len() <= crate::types::MAX_BATCH, "oversized batch");
        for (i, c) in cmds.iter().enumerate() {
            debug_assert!(!matches!(c, Command::Batch(_)), "nested batch");
            apply_command(r, index, i, c);
        }
        return CommandResult::None;
    }
    let Replica { tree, observer, .. } = r;
    match cmd {
        Command::CreateSession {
            timeout_ms, passwd, ..
        } => {
            let session_id = crate::types::session_id(index, position);
            tree.create_session(session_id, *timeout_ms, passwd.clone());
            observer.on_apply(tree, zxid, cmd, Outcome::SessionCreated { session_id });
            CommandResult::Session { session_id }
        }
        Command::CloseSession { session_id, .. } => {
            let events = tree.close_session(zxid, *session_id);
            observer.on_apply(
                tree,
                zxid,
                cmd,
                Outcome::SessionClosed {
                    session_id: *session_id,
                    events: &events,
                },
            );
            CommandResult::None
        }
        Command::Write {
            session_id,
            time_ms,
            auth,
            opcode,
            body,
            ..
        } => {
            let auth: Vec<Id> = auth
                .iter()
                .map(|(s, i)| Id {
                    scheme: s.clone(),
                    id: i.clone(),
                })
                .collect();
            let applied = match OpCode::from_i32(*opcode)
                .and_then(|op| Request::decode_body(op, &mut Reader::new(body.clone())).ok())
            {
                Some(req) => {
                    let txn = Txn {
                        zxid,
                        time: *time_ms,
                        caller: Caller {
                            session_id: *session_id,
                            auth: &auth,
                        },
                    };
                    tree.apply(txn, &req)
                }
                None => Applied::error(ErrorCode::MarshallingError),
            };
            observer.on_apply(tree, zxid, cmd, Outcome::Write { applied: &applied });
            CommandResult::Write {
                err: applied.err.as_i32(),
            }
        }
        Command::Reap { time_ms, paths } => {
            let mut events = Vec::new();
            for p in paths {
                events.extend(tree.reap(zxid, *time_ms, p));
            }
            observer.on_apply(tree, zxid, cmd, Outcome::Reaped { events: &events });
            CommandResult::None
        }
        Command::Batch(_) => CommandResult::None,
    }
}

/// The openraft state machine over a shared [`Replica`].
pub struct StateMachine<X> {
    replica: SharedReplica<X>,
    /// Publishes the last applied index after each batch, for readers waiting to catch up.
    applied_tx: Arc<watch::Sender<u64>>,
    /// Where the current snapshot file lives (the latest snapshot, built here or installed from
    /// the leader, served to lagging peers).
    dir: PathBuf,
    /// See [`Persisted`].
    persisted: Persisted,
}

impl<X: ApplyObserver> StateMachine<X> {
    /// Opens the state machine in `dir`, loading the latest snapshot if there is one. The time the
    /// load took is logged; openraft then replays the committed log after the snapshot.
    pub fn open(dir: &Path, observer: X) -> Result<Self, SErr> {
        std::fs::create_dir_all(dir).map_err(|e| StorageIOError::read_state_machine(&e))?;
        let started = Instant::now();
        let path = dir.join(SNAPSHOT_FILE);
        let (tree, last_applied, membership) = match std::fs::read(&path) {
            Ok(bytes) => {
                let file: SnapshotFile =
                    decode(&bytes).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
                let img: TreeImage =
                    decode(&file.data).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
                let tree = image_to_tree(img).map_err(|e| {
                    StorageIOError::read_snapshot(None, openraft::AnyError::error(e))
                })?;
                tracing::info!(
                    nodes = tree.node_count(),
                    last_applied = ?file.meta.last_log_id,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "loaded snapshot"
                );
                (tree, file.meta.last_log_id, file.meta.last_membership)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (DataTree::new(), None, Membership::default())
            }
            Err(e) => return Err(StorageIOError::read_snapshot(None, &e).into()),
        };
        let applied = last_applied.map(|l| l.index).unwrap_or(0);
        Ok(StateMachine {
            replica: Arc::new(Mutex::new(Replica {
                tree,
                last_applied,
                membership,
                observer,
            })),
            applied_tx: Arc::new(watch::channel(applied).0),
            dir: dir.to_path_buf(),
            persisted: Arc::new(Mutex::new(last_applied)),
        })
    }

    /// The shared replica (the server reads the tree and keeps its watches there).
    pub fn replica(&self) -> SharedReplica<X> {
        self.replica.clone()
    }

    /// A receiver of the last applied index.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied_tx.subscribe()
    }
}

/// The current snapshot's file name in the state machine's directory.
pub const SNAPSHOT_FILE: &str = "snapshot.bin";

/// Writes `bytes` to `dir/name` atomically: temp file, fsync, rename, directory fsync.
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

/// Writes the snapshot `meta` + `data` as [`SNAPSHOT_FILE`] unless the file already holds one
/// at least as new; returns whether it wrote. Blocking.
fn persist_snapshot(
    dir: &Path,
    persisted: &Persisted,
    meta: &SnapshotMeta<NodeId, BasicNode>,
    data: &[u8],
) -> Result<bool, SErr> {
    let mut current = persisted.lock().unwrap_or_else(|p| p.into_inner());
    if current.is_some() && *current >= meta.last_log_id {
        return Ok(false);
    }
    let sig = Some(meta.signature());
    let bytes = encode(&SnapshotFileRef { meta, data })
        .map_err(|e| StorageIOError::write_snapshot(sig.clone(), &e))?;
    write_atomically(dir, SNAPSHOT_FILE, &bytes)
        .map_err(|e| StorageIOError::write_snapshot(sig, &e))?;
    *current = meta.last_log_id;
    Ok(true)
}

/// Builds a snapshot from the view captured when it was created.
pub struct SnapshotBuilder {
    tree: DataTree,
    last_applied: Option<LogId<NodeId>>,
    membership: Membership,
    dir: PathBuf,
    /// Shared with the state machine; see [`Persisted`].
    persisted: Persisted,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SErr> {
        let started = Instant::now();
        let tree = self.tree.clone();
        let data = tokio::task::spawn_blocking(move || encode(&tree_to_image(&tree)))
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, std::process::id()),
            None => format!("0-0-{}", std::process::id()),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        let (dir, persisted, to_write) = (self.dir.clone(), self.persisted.clone(), meta.clone());
        let (wrote, data) = tokio::task::spawn_blocking(move || {
            persist_snapshot(&dir, &persisted, &to_write, &data).map(|wrote| (wrote, data))
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(None, &e))??;
        let elapsed = started.elapsed();
        metrics::histogram!("synod_snapshot_build_seconds").record(elapsed.as_secs_f64());
        metrics::gauge!("synod_snapshot_bytes").set(data.len() as f64);
        metrics::counter!("synod_snapshots_built_total").increment(1);
        tracing::info!(
            last_applied = ?meta.last_log_id,
            bytes = data.len(),
            elapsed_ms = elapsed.as_millis() as u64,
            "snapshot built"
        );
        if !wrote {
            tracing::info!(
                last_applied = ?meta.last_log_id,
                "a newer snapshot was installed meanwhile: the one built is not kept"
            );
        }
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl<X: ApplyObserver> RaftStateMachine<TypeConfig> for StateMachine<X> {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId<NodeId>>, Membership), SErr> {
        let r = lock(&self.replica);
        Ok((r.last_applied, r.membership.clone()))
    }

    /// Applies every entry, exactly one result each, under one hold of the replica lock; the new
    /// applied index is published only after the observer has seen every entry.
    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut results = Vec::new();
        let last = {
            let mut r = lock(&self.replica);
            for entry in entries {
                debug_assert!(
                    r.last_applied.is_none_or(|l| l.index < entry.log_id.index),
                    "entries must be applied in log order"
                );
                r.last_applied = Some(entry.log_id);
                let result = match &entry.payload {
                    EntryPayload::Blank => CommandResult::None,
                    EntryPayload::Membership(m) => {
                        r.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                        CommandResult::None
                    }
                    EntryPayload::Normal(cmd) => {
                        let result = apply_command(&mut r, entry.log_id.index, 0, cmd);
                        r.observer.on_entry_applied(entry.log_id.index);
                        result
                    }
                };
                results.push(result);
            }
            r.applied_index()
        };
        self.applied_tx.send_replace(last);
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let r = lock(&self.replica);
        SnapshotBuilder {
            tree: r.tree.clone(),
            last_applied: r.last_applied,
            membership: r.membership.clone(),
            dir: self.dir.clone(),
            persisted: self.persisted.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, SErr> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), SErr> {
        let sig = Some(meta.signature());
        let data = snapshot.into_inner();
        // Decoding the tree and writing the file block: off the async workers.
        let (dir, persisted, to_write) = (self.dir.clone(), self.persisted.clone(), meta.clone());
        let tree = tokio::task::spawn_blocking(move || -> Result<DataTree, SErr> {
            let sig = Some(to_write.signature());
            let img: TreeImage =
                decode(&data).map_err(|e| StorageIOError::read_snapshot(sig.clone(), &e))?;
            let tree = image_to_tree(img)
                .map_err(|e| StorageIOError::read_snapshot(sig, openraft::AnyError::error(e)))?;
            persist_snapshot(&dir, &persisted, &to_write, &data)?;
            Ok(tree)
        })
        .await
        .map_err(|e| StorageIOError::read_snapshot(sig, &e))??;
        let last = {
            let mut r = lock(&self.replica);
            r.tree = tree;
            r.last_applied = meta.last_log_id;
            r.membership = meta.last_membership.clone();
            let Replica { tree, observer, .. } = &mut *r;
            observer.on_install(tree);
            r.applied_index()
        };
        self.applied_tx.send_replace(last);
        tracing::info!(last_applied = ?meta.last_log_id, "installed snapshot from the leader");
        Ok(())
    }

    /// The snapshot in [`SNAPSHOT_FILE`], whichever is there now: a build or an install may have
    /// replaced the one openraft last heard of, and the newer one serves a lagging peer as well.
    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SErr> {
        let bytes = match std::fs::read(self.dir.join(SNAPSHOT_FILE)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StorageIOError::read_snapshot(None, &e).into()),
        };
        let file: SnapshotFile =
            decode(&bytes).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(Some(Snapshot {
            meta: file.meta,
            snapshot: Box::new(Cursor::new(file.data)),
        }))
    }
}

/// What a snapshot file (a backup) holds: its metadata and the tree it restores.
pub struct SnapshotContents {
    /// The last entry the snapshot reflects: the zxid the restored tree is at.
    pub last_log_id: Option<LogId<NodeId>>,
    /// The membership recorded in the snapshot (the backed-up cluster's).
    pub membership: Membership,
    /// The tree as of `last_log_id`.
    pub tree: DataTree,
}

/// Decodes a snapshot file as written to [`SNAPSHOT_FILE`] (and served as a backup); a file that
/// does not decode completely, or whose tree makes no sense, is an error.
pub fn read_snapshot_file(bytes: &[u8]) -> Result<SnapshotContents, crate::error::StoreError> {
    let file: SnapshotFile = decode(bytes)?;
    let img: TreeImage = decode(&file.data)?;
    let tree = image_to_tree(img).map_err(crate::error::StoreError::Corrupt)?;
    Ok(SnapshotContents {
        last_log_id: file.meta.last_log_id,
        membership: file.meta.last_membership,
        tree,
    })
}

/// The last log id a snapshot file covers, without decoding its tree.
pub fn snapshot_file_log_id(
    bytes: &[u8],
) -> Result<Option<LogId<NodeId>>, crate::error::StoreError> {
    let file: SnapshotFile = decode(bytes)?;
    Ok(file.meta.last_log_id)
}

/// Restores a backup into a fresh state-machine directory: writes the snapshot file `bytes` to
/// `state_dir/`[`SNAPSHOT_FILE`] with its membership replaced by `membership` (recorded at the
/// snapshot's last log id), so that a node opened on it starts from the backed-up tree as a member
/// of the new cluster. Returns the snapshot's last log id and its number of znodes; the caller
/// must mark the Raft log as purged up to it (and keep the vote's term at least its term), so that
/// new entries continue after it. Refuses a snapshot of an empty log, and anything that does not
/// decode as a snapshot (`Decode` or `Corrupt`) before writing.
pub fn restore_snapshot_file(
    state_dir: &Path,
    bytes: &[u8],
    membership: openraft::Membership<NodeId, BasicNode>,
) -> Result<(LogId<NodeId>, usize), crate::error::StoreError> {
    let file: SnapshotFile = decode(bytes)?;
    // Check that the tree decodes before anything is written.
    let img: TreeImage = decode(&file.data)?;
    let znodes = image_to_tree(img)
        .map_err(crate::error::StoreError::Corrupt)?
        .node_count();
    let last = file.meta.last_log_id.ok_or_else(|| {
        crate::error::StoreError::Corrupt("the snapshot holds no applied entry".into())
    })?;
    let meta = SnapshotMeta {
        last_log_id: Some(last),
        last_membership: StoredMembership::new(Some(last), membership),
        snapshot_id: format!("restored-{}-{}", last.leader_id.term, last.index),
    };
    std::fs::create_dir_all(state_dir)?;
    let restored = encode(&SnapshotFileRef {
        meta: &meta,
        data: &file.data,
    })?;
    write_atomically(state_dir, SNAPSHOT_FILE, &restored)?;
    Ok((last, znodes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn meta(index: u64) -> SnapshotMeta<NodeId, BasicNode> {
        SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), index)),
            last_membership: StoredMembership::default(),
            snapshot_id: format!("s-{index}"),
        }
    }

    #[test]
    fn an_older_snapshot_never_replaces_a_newer_one() -> Result<(), SErr> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::write_snapshot(None, &e))?;
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
        let bytes = std::fs::read(dir.path().join(SNAPSHOT_FILE))
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        let file: SnapshotFile =
            decode(&bytes).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
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
}
