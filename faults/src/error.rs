//! The crate's one error type: misuse of the recorder and malformed recorded data.

/// What went wrong while recording or analysing a run (anomalies found in a run are not errors:
/// they are reported by the checks).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FaultsError {
    /// `complete` was called with an id the history never handed out.
    #[error("operation {0} was never invoked")]
    UnknownOperation(usize),
    /// `complete` was called twice for the same operation.
    #[error("operation {0} was already completed")]
    AlreadyCompleted(usize),
    /// A sequential node name did not end in ZooKeeper's 10-digit counter.
    #[error("sequential node name {0:?} has no 10-digit counter suffix")]
    BadSequentialName(String),
    /// A lock holder interval was released before it was acquired.
    #[error("lock interval of client {client} is released at {released} before its acquisition at {acquired}")]
    BadInterval {
        /// The client whose interval is malformed.
        client: u64,
        /// When it says it acquired the lock.
        acquired: u64,
        /// When it says it released it.
        released: u64,
    },
}
