//! The server crate's errors: what can stop a node from starting or running (bad
//! configuration, I/O, storage, Raft). Client-visible failures are ZooKeeper codes decided by the
//! DataTree in apply; a write whose outcome is unknown closes the client's connection instead.

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("config: {0}")]
    Config(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage: {0}")]
    Storage(String),
    #[error("raft: {0}")]
    Raft(String),
    /// TLS material that cannot be loaded or used.
    #[error("tls: {0}")]
    Tls(#[from] synod_client::tls::TlsError),
    /// A certificate could not be issued (`synod certs`).
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
}

/// Why no linearizable read point could be had, or this node did not catch up with one: the
/// read (or the resuming session) is then refused and its connection closed, since its client
/// cannot be answered without risking a stale read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadIndexError {
    /// This node is shutting down.
    #[error("node shutting down")]
    ShuttingDown,
    /// No leader is known.
    #[error("no leader")]
    NoLeader,
    /// The leader's Raft could not confirm its leadership with a quorum.
    #[error("leader could not confirm a read point: {0}")]
    Raft(String),
    /// The node asked was not the leader, or failed.
    #[error("read index from the leader: {0}")]
    Leader(#[from] crate::peer::ForwardError),
    /// The leader could not be asked.
    #[error("read index from the leader: {0}")]
    Peer(#[from] crate::peer::PeerError),
    /// The leader answered something else.
    #[error("unexpected reply to a read-index request: {0}")]
    UnexpectedReply(&'static str),
    /// This node did not apply the read point in time.
    #[error("not caught up to log index {index} within {timeout:?}")]
    NotCaughtUp {
        /// The read point.
        index: u64,
        /// How long it waited.
        timeout: std::time::Duration,
    },
}
