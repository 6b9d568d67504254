//! The crate's storage error: what can go wrong below openraft (RocksDB, bincode, the file
//! system, a stored value that makes no sense), and its mapping to openraft's [`StorageError`].
//!
//! Code in this crate works with `Result<_, StoreError>` and converts at the openraft trait
//! boundary, naming what was being read or written (with [`StoreError::to_storage`] or one of
//! [`StorageIOError`]'s constructors, such as `read_snapshot`); openraft then treats the error as
//! fatal for the node (it stops rather than act on a state it cannot trust).

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageError, StorageIOError};

use crate::types::NodeId;

/// `version 2`, or `versions 1 to 2`: the format versions of `supported`.
fn versions(supported: &std::ops::RangeInclusive<u32>) -> String {
    if supported.start() == supported.end() {
        format!("version {}", supported.start())
    } else {
        format!("versions {} to {}", supported.start(), supported.end())
    }
}

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

    /// A file synod writes whole (snapshot file, backup: [`crate::envelope`]) does not start
    /// with its kind's magic: it is not such a file (or of a format older than envelopes).
    #[error("not a synod {what} (it does not start with {magic})")]
    NotThisKind {
        /// What the file was expected to be ("backup", "snapshot file").
        what: &'static str,
        /// The magic it should start with.
        magic: String,
    },

    /// A file (or a peer) of another format version than this synod reads; names both.
    #[error(
        "{what} format version {found}; this synod reads {}",
        versions(supported)
    )]
    FormatVersion {
        /// What it is.
        what: &'static str,
        /// The version it says it is.
        found: u32,
        /// The versions this synod reads (one, for most formats).
        supported: std::ops::RangeInclusive<u32>,
    },

    /// An enveloped file is shorter or longer than its header says.
    #[error(
        "the {what} is {actual} bytes, its header says {expected}: it is truncated or damaged"
    )]
    Length {
        /// What the file is.
        what: &'static str,
        /// Its length.
        actual: u64,
        /// The length its header implies.
        expected: u64,
    },

    /// An enveloped file's checksum does not match its contents: it is damaged.
    #[error("checksum mismatch: the {what} is damaged")]
    Checksum {
        /// What the file is.
        what: &'static str,
    },

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
    /// Whether this error says that a stored value or file is damaged or not one this version
    /// reads (as opposed to a failing disk or a refused write): refusing the file, and rebuilding
    /// or restoring the node, is the remedy; retrying is not.
    pub fn is_damaged_file(&self) -> bool {
        matches!(
            self,
            StoreError::Rocksdb(e) if e.kind() == rocksdb::ErrorKind::Corruption
        ) || matches!(
            self,
            StoreError::Decode(_)
                | StoreError::Corrupt(_)
                | StoreError::NotThisKind { .. }
                | StoreError::FormatVersion { .. }
                | StoreError::Length { .. }
                | StoreError::Checksum { .. }
        )
    }

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
