//! The crate's storage error: what can go wrong below openraft (RocksDB, bincode, the file
//! system, a stored value that makes no sense), and its mapping to openraft's [`StorageError`].
//!
//! Code in this crate works with `Result<_, StoreError>` and converts at the openraft trait
//! boundary, naming what was being read or written (with [`StoreError::to_storage`] or one of
//! [`StorageIOError`]'s constructors, such as `read_snapshot`); openraft then treats the error as
//! fatal for the node (it stops rather than act on a state it cannot trust).

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageError, StorageIOError};

use crate::types::NodeId;

/// Everything that can fail in synod's durable storage (log store, state machine, snapshots).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB refused to open, read or write (I/O error, corruption it detected, lock held by
    /// another process, ...).
    #[error("rocksdb: {0}")]
    Rocksdb(#[from] rocksdb::Error),

    /// A value could not be serialized (in practice: a serde impl that refuses the value).
    #[error("encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),

    /// A stored value (log entry, vote, snapshot file, backup) could not be deserialized: it is
    /// corrupt or was written by an incompatible version. Never turned into "absent".
    #[error("decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),

    /// A file-system operation failed (snapshot files, directories).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),

    /// The store decoded but contradicts itself or its layout: a key of the wrong size, an entry
    /// stored under another index than its own, a missing column family, a snapshot whose tree no
    /// sequence of writes produces (a node without its parent, ...) or that covers no entry.
    #[error("corrupt store: {0}")]
    Corrupt(String),

    /// A file given as a backup is not one this version reads: no backup header, another
    /// format version, or a checksum that does not match (the file is damaged).
    #[error("backup: {0}")]
    Backup(String),

    /// A tenant declaration that breaks a rule of the table (its name, its identities, one
    /// identity in two tenants, too many tenants): the message names the rule.
    #[error("{0}")]
    Tenant(String),

    /// The audit trail does not verify: the message names the first record that does not
    /// follow (edited, removed, reordered) or the replicated head it does not reach.
    #[error("audit trail: {0}")]
    Audit(String),
}

impl StoreError {
    /// Maps this error to openraft's [`StorageError`], saying what (`subject`) was being done
    /// (`verb`) — e.g. `(ErrorSubject::Vote, ErrorVerb::Read)` is what
    /// `StorageIOError::read_vote` builds. The message and the source chain are kept.
    pub fn to_storage(
        &self,
        subject: ErrorSubject<NodeId>,
        verb: ErrorVerb,
    ) -> StorageError<NodeId> {
        StorageIOError::new(subject, verb, AnyError::new(self)).into()
    }
}
