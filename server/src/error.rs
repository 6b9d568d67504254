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

/// Why the proposer refused a connection's write to keep its writes in order across leaders
/// ([`crate::pipeline::write_order`]): the write is failed (outcome: not applied) and its
/// connection closes, as for any write whose outcome is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OutOfOrder {
    /// An earlier write of the connection failed or was refused.
    #[error("an earlier write of this connection failed; its outcome is unknown")]
    EarlierFailed,
    /// The leader changed while earlier writes of the connection were in flight to the old one.
    #[error(
        "the leader or the link to it changed (now node {} in term {}, link {}) while earlier \
         writes of this connection were in flight to node {} in term {} (link {}); their outcome \
         is unknown",
        now.leader, now.term, now.link, was.leader, was.term, was.link
    )]
    LeaderChanged {
        /// Where the writes in flight went.
        was: crate::pipeline::write_order::Route,
        /// Where this one would have gone.
        now: crate::pipeline::write_order::Route,
    },
    /// A `reconfig`, which goes to the leader apart from the connection's other writes, was
    /// sent while another write of the connection was in flight, or a write while it was.
    #[error(
        "a reconfig and another write of this connection were in flight together: their order \
         could not be kept"
    )]
    NotAlone,
}

/// Why a client's `reconfig` changed nothing. [`ReconfigError::code`] is where each becomes the
/// ZooKeeper code the client gets; a follower receives the leader's as it is (peer port).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ReconfigError {
    /// `--reconfig-enabled` is off (ZooKeeper's `reconfigEnabled=false`), or the cluster
    /// version does not have it yet.
    #[error("reconfig is disabled: {0}")]
    Disabled(String),
    /// The caller may not write `/zookeeper/config` (only `super` may).
    #[error("reconfig needs the super identity")]
    NoAuth,
    /// A spec or id list that does not parse, or a change that leaves no voter.
    #[error("bad reconfig arguments: {0}")]
    BadArguments(String),
    /// The request's `fromConfig` is not the current configuration's version.
    #[error("configuration version {given:x} is not the current {current:x}")]
    BadVersion { given: i64, current: i64 },
    /// Another membership change is under way.
    #[error("a reconfiguration is in progress")]
    InProgress,
    /// A majority of the new (or the current) voters is not reachable and caught up.
    #[error("the new configuration has no quorum: {0}")]
    NoQuorum(String),
    /// Raft refused or failed the change (lost leadership, shutting down): its outcome is
    /// unknown, so the client's connection closes as for any write.
    #[error("reconfig failed: {0}")]
    Failed(String),
}

impl ReconfigError {
    /// The ZooKeeper error code a client gets; `None` for an unknown outcome (the connection
    /// closes).
    pub fn code(&self) -> Option<synod_proto::ErrorCode> {
        use synod_proto::ErrorCode;
        Some(match self {
            ReconfigError::Disabled(_) => ErrorCode::ReconfigDisabled,
            ReconfigError::NoAuth => ErrorCode::NoAuth,
            ReconfigError::BadArguments(_) => ErrorCode::BadArguments,
            ReconfigError::BadVersion { .. } => ErrorCode::BadVersion,
            ReconfigError::InProgress => ErrorCode::ReconfigInProgress,
            ReconfigError::NoQuorum(_) => ErrorCode::NewConfigNoQuorum,
            ReconfigError::Failed(_) => return None,
        })
    }
}
