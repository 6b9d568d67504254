//! The openraft state machine. Entries are applied to the [`DataTree`] under one lock, the
//! [`Replica`] lock, which the server shares for its node-local state (watches, waiting requests)
//! through an [`ApplyObserver`]: a read and the watch it leaves are atomic with respect to apply,
//! and the events of an entry reach connections before anyone can see the entry as applied.
//!
//! Snapshots are built from an O(1) copy of the persistent tree, so apply never waits for one;
//! their format, file and restore are [`crate::snapshot`]'s. The tree itself lives in memory: a
//! restart loads the latest snapshot and openraft replays the committed log after it.

// openraft's StorageError is the error type its traits require; boxing it here would only move
// the size elsewhere.
#![allow(clippy::result_large_err)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use synod_proto::jute::Reader;
use synod_proto::{ErrorCode, Id, OpCode, Request};
use tokio::sync::watch;

use crate::audit::{AuditAction, AuditRecordRef, AuditStore, Identities, RecordBuffer};
use crate::error::StoreError;
use crate::snapshot::{self, Persisted};
use crate::snapshot_data::SnapshotData;
use crate::tenants::Tenants;
use crate::tree::{Applied, Caller, DataTree, Event, Txn};
use crate::types::{Command, CommandResult, NodeId, TenantChange, TypeConfig};

// The snapshot API's former home: server/ and tools name these through this module.
pub use crate::snapshot::{
    read_backup_from, read_snapshot_file, read_snapshot_from, restore_snapshot_file,
    snapshot_file_log_id, SnapshotContents, SNAPSHOT_FILE,
};

type Membership = StoredMembership<NodeId, BasicNode>;
type SErr = StorageError<NodeId>;

/// What applying one command did, handed to the [`ApplyObserver`].
#[derive(Debug)]
pub enum Outcome<'a> {
    /// A session was opened with this id (the zxid of the command that opened it,
    /// [`crate::types::session_id`]).
    SessionCreated { session_id: i64 },
    /// A session was refused with this code (its tenant's session quota).
    SessionRefused { err: ErrorCode },
    /// A session ended; its ephemerals' deletion caused these events.
    SessionClosed {
        session_id: i64,
        events: &'a [Event],
    },
    /// A client write's result and events.
    Write { applied: &'a Applied },
    /// Container / TTL nodes were reaped.
    Reaped { events: &'a [Event] },
    /// A tenant change: the events of the home it created, or why it was refused (then
    /// nothing changed).
    Tenant {
        events: &'a [Event],
        refused: Option<&'a str>,
    },
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
    /// The znodes and sessions as of `last_applied`.
    pub tree: DataTree,
    /// The last entry applied; the tree reflects exactly the entries up to it.
    pub last_applied: Option<LogId<NodeId>>,
    /// The membership as of the last applied membership entry.
    pub membership: Membership,
    /// The server's node-local state (watches, waiting requests), told of every change under
    /// the same lock as the tree.
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

/// The audit records made while applying entries.
struct Trail<'a> {
    /// Their stored forms, written to the [`AuditStore`] once the entries are applied; dropped
    /// then when auditing is off, where the chain's head advances all the same (encoding the
    /// records here spares it an allocation per record).
    records: &'a mut RecordBuffer,
    /// Whether this node keeps a trail (`--audit on`): what a record holds depends on it.
    kept: bool,
}

/// Appends the record of the change at `zxid` to the tree's chain and to `trail`.
fn audit(
    tree: &mut DataTree,
    trail: &mut Trail<'_>,
    zxid: i64,
    time_ms: Option<i64>,
    session: i64,
    auth: &[Id],
    action: AuditAction,
) {
    // The chain's head is replicated state: it advances on every replica whatever its
    // `--audit` setting; only storing the record is up to the node. It starts when the cluster
    // version reaches the one that has it (release 0.1 had no trail), at the same entry on
    // every replica: the one that raised the version.
    if tree.cluster_version() < crate::types::AUDIT_SINCE {
        return;
    }
    let resolved = tree.tenants().resolve(auth);
    let record = AuditRecordRef {
        zxid,
        time_ms,
        session,
        identities: Identities(auth),
        tenant: Tenants::owner_name(&resolved),
        action: &action,
    };
    // Deterministic (the same bytes fail alike everywhere), and never expected.
    if let Err(e) = trail
        .records
        .append_borrowed(tree.audit_head_mut(), &record)
    {
        tracing::error!(%e, zxid, "audit: cannot encode a record");
    }
}

/// Stamped `(scheme, id)` pairs as identities.
fn ids(auth: &[(String, String)]) -> Vec<Id> {
    auth.iter()
        .map(|(s, i)| Id {
            scheme: s.clone(),
            id: i.clone(),
        })
        .collect()
}

/// Applies one command to the tree; returns the result for openraft and tells the observer.
/// `position` is the command's place in its batch (0 for a lone command).
fn apply_command<X: ApplyObserver>(
    r: &mut Replica<X>,
    index: u64,
    position: usize,
    cmd: &Command,
    trail: &mut Trail<'_>,
) -> CommandResult {
    let zxid = crate::types::zxid(index, position);
    if let Command::Batch(cmds) = cmd {
        debug_assert!(cmds.len() <= crate::types::MAX_BATCH, "oversized batch");
        for (i, c) in cmds.iter().enumerate() {
            debug_assert!(!matches!(c, Command::Batch(_)), "nested batch");
            apply_command(r, index, i, c, trail);
        }
        return CommandResult::None;
    }
    let Replica {
        tree,
        observer,
        membership,
        ..
    } = r;
    match cmd {
        Command::CreateSession {
            timeout_ms, passwd, ..
        } => {
            let session_id = crate::types::session_id(index, position);
            tree.create_session(session_id, *timeout_ms, passwd.clone());
            let action = AuditAction::SessionOpened {
                timeout_ms: *timeout_ms,
            };
            audit(tree, trail, zxid, None, session_id, &[], action);
            observer.on_apply(tree, zxid, cmd, Outcome::SessionCreated { session_id });
            CommandResult::Session { session_id }
        }
        Command::OpenSession {
            timeout_ms,
            passwd,
            auth,
            ..
        } => {
            let auth = ids(auth);
            let session_id = crate::types::session_id(index, position);
            match tree.open_session(session_id, *timeout_ms, passwd.clone(), &auth) {
                Ok(()) => {
                    let action = AuditAction::SessionOpened {
                        timeout_ms: *timeout_ms,
                    };
                    audit(tree, trail, zxid, None, session_id, &auth, action);
                    observer.on_apply(tree, zxid, cmd, Outcome::SessionCreated { session_id });
                    CommandResult::Session { session_id }
                }
                Err(err) => {
                    let action = AuditAction::SessionRefused { err: err.as_i32() };
                    audit(tree, trail, zxid, None, 0, &auth, action);
                    observer.on_apply(tree, zxid, cmd, Outcome::SessionRefused { err });
                    CommandResult::SessionRefused
                }
            }
        }
        Command::CloseSession { session_id, origin } => {
            // A close of a session already gone (an expiry racing the client's close) changes
            // nothing and is not recorded.
            if tree.session(*session_id).is_some() {
                let action = AuditAction::SessionClosed {
                    expired: origin.is_none(),
                };
                audit(tree, trail, zxid, None, *session_id, &[], action);
            }
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
            let auth = ids(auth);
            let request = OpCode::from_i32(*opcode)
                .and_then(|op| Request::decode_body(op, &mut Reader::new(body.clone())).ok());
            // Read before the apply only where the apply may change it (see there); a node
            // that keeps no trail records none (every member runs alike: operations.md).
            let read_before = match (&request, trail.kept) {
                (Some(req), true) if AuditAction::versions_change_in_apply(req) => {
                    Some(AuditAction::versions_before(tree, req))
                }
                _ => None,
            };
            let applied = match &request {
                Some(req) => {
                    let txn = Txn {
                        zxid,
                        time: *time_ms,
                        caller: Caller {
                            session_id: *session_id,
                            auth: &auth,
                        },
                    };
                    tree.apply(txn, req)
                }
                None => Applied::error(ErrorCode::MarshallingError),
            };
            let before = match (&request, trail.kept, read_before) {
                (_, _, Some(read)) => read,
                (Some(req), true, None) => {
                    AuditAction::versions_before_applied(tree, req, &applied)
                }
                _ => Vec::new(),
            };
            let action = match &request {
                Some(req) => AuditAction::of_write(req, &applied, &before),
                None => AuditAction::Write {
                    op: format!("opcode {opcode}"),
                    err: applied.err.as_i32(),
                    ops: Vec::new(),
                },
            };
            audit(
                tree,
                trail,
                zxid,
                Some(*time_ms),
                *session_id,
                &auth,
                action,
            );
            observer.on_apply(tree, zxid, cmd, Outcome::Write { applied: &applied });
            CommandResult::Write {
                err: applied.err.as_i32(),
            }
        }
        Command::Reap { time_ms, paths } => {
            let mut events = Vec::new();
            let mut reaped = Vec::new();
            for p in paths {
                let deleted = tree.reap(zxid, *time_ms, p);
                if !deleted.is_empty() {
                    reaped.push(p.clone());
                }
                events.extend(deleted);
            }
            if !reaped.is_empty() {
                let action = AuditAction::Reaped { paths: reaped };
                audit(tree, trail, zxid, Some(*time_ms), 0, &[], action);
            }
            observer.on_apply(tree, zxid, cmd, Outcome::Reaped { events: &events });
            CommandResult::None
        }
        Command::Tenant {
            time_ms, change, ..
        } => {
            let result = match change {
                TenantChange::Declare { name, tenant } => tree
                    .declare_tenant(zxid, *time_ms, name, tenant.clone())
                    .map_err(|e| e.to_string()),
                TenantChange::Remove { name } => match tree.remove_tenant(name) {
                    true => Ok(Vec::new()),
                    false => Err(format!("no tenant {name:?} is declared")),
                },
            };
            let (events, refused) = match &result {
                Ok(events) => (&events[..], None),
                Err(why) => (&[][..], Some(why.as_str())),
            };
            let action = AuditAction::Tenant {
                change: change.to_string(),
                refused: refused.map(str::to_string),
            };
            audit(tree, trail, zxid, Some(*time_ms), 0, &[], action);
            observer.on_apply(tree, zxid, cmd, Outcome::Tenant { events, refused });
            CommandResult::None
        }
        Command::AuditReads {
            time_ms,
            node,
            reads,
            dropped,
        } => {
            let action = AuditAction::Reads {
                node: *node,
                reads: reads.clone(),
                dropped: *dropped,
            };
            audit(tree, trail, zxid, Some(*time_ms), 0, &[], action);
            CommandResult::None
        }
        Command::ClusterVersion { version } => {
            if tree.raise_cluster_version(*version) {
                // The trail's first record (or a later rise): it also says who the members are.
                let m = membership.membership();
                let action = AuditAction::ClusterVersion {
                    version: *version,
                    voters: m.voter_ids().collect(),
                    learners: m.learner_ids().collect(),
                };
                audit(tree, trail, zxid, None, 0, &[], action);
            }
            CommandResult::None
        }
        Command::Config {
            time_ms,
            members,
            request,
            session_id,
            auth,
            ..
        } => {
            if tree.cluster_version() < crate::types::CONFIG_NODE_SINCE {
                return CommandResult::None;
            }
            let applied = tree.set_config(zxid, *time_ms, members);
            let action = AuditAction::Config {
                request: request.clone(),
                config: tree.config_text().to_string(),
            };
            audit(
                tree,
                trail,
                zxid,
                Some(*time_ms),
                *session_id,
                &ids(auth),
                action,
            );
            observer.on_apply(tree, zxid, cmd, Outcome::Write { applied: &applied });
            CommandResult::Write {
                err: applied.err.as_i32(),
            }
        }
        Command::Batch(_) => CommandResult::None,
    }
}

/// The openraft state machine over a shared [`Replica`].
pub struct StateMachine<X> {
    /// The applied state, shared with the server, which reads it and keeps its watches there.
    replica: SharedReplica<X>,
    /// Publishes the last applied index after each batch, for readers waiting to catch up.
    applied_tx: Arc<watch::Sender<u64>>,
    /// Where the current snapshot file lives (the latest snapshot, built here or installed from
    /// the leader, served to lagging peers).
    dir: PathBuf,
    /// See [`Persisted`].
    persisted: Persisted,
    /// Where audit records go (`None`: auditing is off, and no record is stored; each is still
    /// made, for the chain's head, then dropped).
    audit: Option<AuditStore>,
    /// The audit records of the `apply` under way, empty between applies: kept so that its
    /// room is reused (it holds a few hundred bytes per write of a batch), with auditing off
    /// too.
    records: RecordBuffer,
    /// `synod_apply_seconds`: one `apply` call (a run of committed entries, their audit
    /// records included), resolved once so that apply records without a registry lookup.
    apply_time: metrics::Histogram,
}

impl<X: ApplyObserver> StateMachine<X> {
    /// Opens the state machine in `dir`, loading the latest snapshot if there is one
    /// ([`snapshot::load_latest`]: a snapshot file that does not decode is an error, not an empty
    /// tree). The time the load took is logged; openraft then replays the committed log after
    /// the snapshot.
    pub fn open(
        dir: &Path,
        observer: X,
        audit: Option<AuditStore>,
    ) -> Result<Self, crate::error::StoreError> {
        std::fs::create_dir_all(dir)?;
        snapshot::remove_temp_files(dir)?;
        let (tree, last_applied, membership) = match snapshot::load_latest(dir)? {
            Some(c) => (c.tree, c.last_log_id, c.membership),
            None => (DataTree::new(), None, Membership::default()),
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
            audit,
            records: RecordBuffer::default(),
            apply_time: {
                metrics::describe_histogram!(
                    "synod_apply_seconds",
                    metrics::Unit::Seconds,
                    "duration of applying one run of committed entries to the tree (with their \
                     audit records)"
                );
                metrics::histogram!("synod_apply_seconds")
            },
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

/// Builds a snapshot from the view captured when it was created.
pub struct SnapshotBuilder {
    /// An O(1) copy of the tree at `last_applied`: apply goes on while it is encoded.
    tree: DataTree,
    /// The last entry `tree` reflects: the snapshot's last log id.
    last_applied: Option<LogId<NodeId>>,
    /// The membership as of `last_applied`, recorded in the snapshot.
    membership: Membership,
    /// The state machine's directory, where the snapshot file is written.
    dir: PathBuf,
    /// Shared with the state machine; see [`Persisted`].
    persisted: Persisted,
    /// The audit trail, made durable up to the snapshot before the snapshot is (the log
    /// before it may be purged once it is).
    audit: Option<AuditStore>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SErr> {
        let started = Instant::now();
        let tree = self.tree.clone();
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
        let audit = self.audit.clone();
        // The tree is encoded straight into the file (counted first: the file's header announces
        // its length), and openraft is handed the file, never the encoded data.
        let (wrote, data) = tokio::task::spawn_blocking(move || {
            let sig = Some(to_write.signature());
            let written = || -> Result<_, StoreError> {
                if let Some(a) = &audit {
                    a.sync()?;
                }
                let encoding = snapshot::TreeEncoding::of(&tree)?;
                let (wrote, file, range) =
                    match snapshot::persist(&dir, &persisted, &to_write, &encoding)? {
                        Some(written) => written,
                        None => {
                            let (file, range) =
                                snapshot::write_unnamed(&dir, &to_write, &encoding)?;
                            (false, file, range)
                        }
                    };
                Ok((wrote, SnapshotData::window(file, range)?))
            };
            written().map_err(|e| StorageIOError::write_snapshot(sig, &e))
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(None, &e))??;
        let bytes = data.data_len().unwrap_or_default();
        let elapsed = started.elapsed();
        metrics::histogram!("synod_snapshot_build_seconds").record(elapsed.as_secs_f64());
        metrics::gauge!("synod_snapshot_bytes").set(bytes as f64);
        metrics::counter!("synod_snapshots_built_total").increment(1);
        tracing::info!(
            last_applied = ?meta.last_log_id,
            bytes,
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
            snapshot: Box::new(data),
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
        let started = std::time::Instant::now();
        let mut results = Vec::new();
        let last = {
            let mut trail = Trail {
                records: &mut self.records,
                kept: self.audit.is_some(),
            };
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
                        let action = AuditAction::Membership {
                            voters: m.voter_ids().collect(),
                            learners: m.learner_ids().collect(),
                        };
                        let zxid = crate::types::zxid(entry.log_id.index, 0);
                        audit(&mut r.tree, &mut trail, zxid, None, 0, &[], action);
                        CommandResult::None
                    }
                    EntryPayload::Normal(cmd) => {
                        let result = apply_command(&mut r, entry.log_id.index, 0, cmd, &mut trail);
                        r.observer.on_entry_applied(entry.log_id.index);
                        result
                    }
                };
                results.push(result);
            }
            r.applied_index()
        };
        // Before the entries are published as applied: a reader of the trail (GET /audit)
        // that has seen an entry's effect finds its record.
        let stored = self.audit.as_ref().map(|store| store.append(&self.records));
        self.records.clear();
        if let Some(stored) = stored {
            stored.map_err(|e| {
                e.to_storage(
                    openraft::ErrorSubject::StateMachine,
                    openraft::ErrorVerb::Write,
                )
            })?;
        }
        self.apply_time.record(started.elapsed().as_secs_f64());
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
            audit: self.audit.clone(),
        }
    }

    /// The chunks from the leader are written to a file of their own, with no name (gone when
    /// closed, whether the snapshot is installed or abandoned), in the state machine's directory.
    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, SErr> {
        let dir = self.dir.clone();
        let file = tokio::task::spawn_blocking(move || tempfile::tempfile_in(dir))
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(Box::new(SnapshotData::receiving(file)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<SnapshotData>,
    ) -> Result<(), SErr> {
        let sig = Some(meta.signature());
        let (file, start, end) = snapshot
            .into_file()
            .await
            .map_err(|e| StorageIOError::write_snapshot(sig.clone(), &e))?;
        // Reading and decoding the tree and writing the file block: off the async workers.
        let (dir, persisted, to_write) = (self.dir.clone(), self.persisted.clone(), meta.clone());
        let audit = self.audit.clone();
        let tree = tokio::task::spawn_blocking(move || -> Result<DataTree, SErr> {
            let sig = Some(to_write.signature());
            let end = match end {
                Some(end) => end,
                None => file
                    .metadata()
                    .map_err(|e| StorageIOError::read_snapshot(sig.clone(), &e))?
                    .len(),
            };
            // Decoded from the file a window at a time, and copied from it into the snapshot
            // file: never held whole.
            let data = snapshot::FilePiece::new(&file, start..end);
            let tree = snapshot::decode_tree_from(data.clone(), data.len())
                .map_err(|e| StorageIOError::read_snapshot(sig.clone(), &e))?;
            // The entries the snapshot covers are not applied here: the trail goes on from
            // the snapshot's head (see `crate::audit`).
            if let Some(a) = &audit {
                a.anchor(tree.audit_head())
                    .map_err(|e| StorageIOError::write_snapshot(sig.clone(), &e))?;
            }
            snapshot::persist_snapshot(&dir, &persisted, &to_write, &data)
                .map_err(|e| StorageIOError::write_snapshot(sig, &e))?;
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
        let dir = self.dir.clone();
        let current = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
            let Some((meta, file, data)) = snapshot::open_current(&dir)? else {
                return Ok(None);
            };
            Ok(Some(Snapshot {
                meta,
                snapshot: Box::new(SnapshotData::window(file, data)?),
            }))
        })
        .await
        .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        current.map_err(|e| StorageIOError::read_snapshot(None, &e).into())
    }
}
