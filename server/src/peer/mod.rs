//! Peer RPC: the messages nodes exchange on the peer port (Raft messages, forwarded writes,
//! read-index requests, session touches), their framing, the server that answers them, the
//! client pool that sends them over persistent pipelined connections, and the openraft network
//! glue on top of that pool.
//!
//! Handshake ([`transport`]): mutual TLS in which each certificate names its node id (unless
//! `--insecure`), then a hello with the protocol version, the caller's node id and both cluster
//! ids. After it, [`PeerService::authorize`] checks each request against the sender's id.
//!
//! Wire format: every frame is a 4-byte big-endian length followed by that many bytes of bincode
//! ([`synod_raft_store::types::encode`]) of `{ id: u64, body }`, where `body` is a
//! [`PeerRequest`] from client to server and a [`PeerResponse`] from server to client. Requests
//! are pipelined; a response carries the id of its request and may arrive out of order.
//!
//! Ordering: the server hands the requests of one connection to [`PeerService::handle`] in
//! arrival order, and [`PeerPool::call`] writes the calls to one address in the order they reach
//! its connection's queue (see [`PeerPool`] for exactly what that means for callers).

mod client;
mod frame;
mod network;
mod server;
mod service;
#[cfg(test)]
mod tests;
pub mod transport;

use std::time::Duration;

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use synod_raft_store::types::{Command, NodeId, TypeConfig};

pub use client::{CallStream, PeerPool};
pub use frame::DEFAULT_MAX_FRAME_LEN;
pub use network::{PeerConn, PeerNetwork};
pub use server::{
    serve, serve_with_limits, PeerLimits, PeerService, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_IN_FLIGHT,
};
pub use transport::{LocalPeer, PeerTls, Refusal};

/// A request from one node to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Raft log replication and heartbeats, leader to follower.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// A candidate asks for a vote.
    Vote(VoteRequest<NodeId>),
    /// One chunk of a snapshot, leader to a lagging follower.
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A client write forwarded by a follower; the leader proposes forwards in arrival order.
    Forward(Command),
    /// A follower asks the leader for a linearizable read point (a log index).
    ReadIndex,
    /// Sessions with client activity on the sender since its previous touch, each with how long
    /// ago its latest activity was (a touch delayed by a pause must not extend a session past
    /// the deadline that activity earned it).
    Touch(Vec<SessionTouch>),
    /// How far back the receiver's watch-event history reaches (see
    /// [`crate::watch::history::EventHistory::floor`]): a node that cannot replay a resuming session's
    /// missed events asks whether another member can.
    HistoryFloor,
    /// Where the receiver's clients and operators reach it (`/members`). Since protocol
    /// version 2: sent only to a peer whose handshake named 2 or later.
    Describe,
    /// A client's `reconfig`, checked by the follower it is connected to, for the leader to
    /// carry out ([`crate::reconfig`]). Since protocol version 2 (sent only once the cluster
    /// version is 2: every member speaks it).
    Reconfig(crate::reconfig::ReconfigOrder),
    /// Client writes a follower forwards together, in the order its clients sent them: the
    /// leader proposes them in one batch entry, in this order, so that one answer
    /// ([`PeerResponse::ForwardGroup`]) serves them all. Never empty; at most
    /// [`synod_raft_store::types::MAX_BATCH`] commands, none of them a batch. Since protocol
    /// version 3 (sent only once the cluster version is
    /// [`synod_raft_store::types::FORWARD_GROUP_SINCE`]: every member speaks it); before it
    /// each write goes in a [`PeerRequest::Forward`] of its own.
    ForwardGroup(Vec<Command>),
    /// A follower asks the leader for a read point, saying that its vote, as its log store had
    /// made it durable after every read this point serves began, names the receiver as leader. A leader of
    /// three voters then needs no heartbeat round (`crate::pipeline::read_index`); otherwise
    /// it answers as [`PeerRequest::ReadIndex`]. Since protocol version 4 (sent only once the
    /// cluster version is [`synod_raft_store::types::READ_INDEX_FOLLOWING_SINCE`]: every
    /// member speaks it).
    ReadIndexFollowing {
        /// The sender (it must be the node its connection's hello and certificate name).
        follower: NodeId,
        /// The sender's vote, naming the receiver.
        vote: openraft::Vote<NodeId>,
    },
    /// Asks a node for the vote its log store last made durable
    /// ([`synod_raft_store::log_store::SavedVote`]), answered without its Raft core. The leader
    /// asks its followers after the reads the answers serve began: once the votes naming it make
    /// a majority with its own, it needs no heartbeat round for those reads
    /// (`crate::pipeline::read_index`). A follower or learner asks every voter to learn whether
    /// it hears from a majority (`crate::cut_off`). Since protocol version 5 (sent only once the
    /// cluster version is [`synod_raft_store::types::SAVED_VOTE_SINCE`]: every member speaks
    /// it).
    SavedVote,
}

/// Client activity on a session, as reported to the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionTouch {
    /// The session.
    pub session_id: i64,
    /// Milliseconds between the session's latest activity and the sending of the touch.
    pub idle_ms: u32,
}

/// The answer to a [`PeerRequest`]; the variant matches the request's.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    /// What the remote Raft answered to [`PeerRequest::AppendEntries`].
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    /// What the remote Raft answered to [`PeerRequest::Vote`].
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// What the remote Raft answered to [`PeerRequest::InstallSnapshot`].
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    /// The forwarded write was proposed (and, as the service defines, committed or applied).
    Forward(Result<(), ForwardError>),
    /// The read point: the log index the follower must have applied before it reads.
    ReadIndex(Result<u64, ForwardError>),
    /// The touches were recorded; the receiver's cluster id, if it knows one (a member of a
    /// cluster that has no id yet learns it from its probes: `bootstrap::name_cluster`).
    Touch(Option<crate::data_dir::ClusterId>),
    /// The receiver's answer to [`PeerRequest::HistoryFloor`]: every event with a zxid above
    /// this is in its history (`None`: it knows of none).
    HistoryFloor(Option<i64>),
    /// The receiver's answer to [`PeerRequest::Describe`].
    Describe(NodeDescription),
    /// The reconfig was carried out (its [`synod_raft_store::Command::Config`] entry applied
    /// on the leader), or why not.
    Reconfig(Result<(), crate::error::ReconfigError>),
    /// The outcome of a [`PeerRequest::ForwardGroup`], the same for every write in it (they
    /// are in one entry): applied on the leader, or why not.
    ForwardGroup(Result<(), ForwardError>),
    /// The receiver's answer to [`PeerRequest::SavedVote`] (`None`: it never saved one).
    SavedVote(Option<openraft::Vote<NodeId>>),
}

/// Where a node's clients and operators reach it, as it advertises them
/// (`--advertise-client-addr`, `--advertise-admin-addr`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDescription {
    /// Its client port (`host:port`).
    pub client_addr: String,
    /// Its admin port (`host:port`).
    pub admin_addr: String,
}

impl PeerResponse {
    /// The name of its variant (not its contents, which may be large), for errors and logs.
    pub fn variant_name(&self) -> &'static str {
        match self {
            PeerResponse::AppendEntries(_) => "AppendEntries",
            PeerResponse::Vote(_) => "Vote",
            PeerResponse::InstallSnapshot(_) => "InstallSnapshot",
            PeerResponse::Forward(_) => "Forward",
            PeerResponse::ReadIndex(_) => "ReadIndex",
            PeerResponse::Touch(_) => "Touch",
            PeerResponse::HistoryFloor(_) => "HistoryFloor",
            PeerResponse::Describe(_) => "Describe",
            PeerResponse::Reconfig(_) => "Reconfig",
            PeerResponse::ForwardGroup(_) => "ForwardGroup",
            PeerResponse::SavedVote(_) => "SavedVote",
        }
    }
}

/// Why the leader did not carry out a forwarded write or read-index request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ForwardError {
    /// The receiver is not the leader; `leader` is the one it knows of, if any.
    #[error("not the leader (known leader: {leader:?})")]
    NotLeader {
        /// Where the sender should go instead, if the receiver knows.
        leader: Option<NodeId>,
    },
    /// The leader tried and failed.
    #[error("forwarded request failed: {0}")]
    Failed(String),
}

/// Why a [`PeerPool::call`] produced no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// No connection could be made (refused, unresolvable, or connecting took the whole
    /// timeout). Nothing was sent.
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    /// No response within the call's timeout. The request may or may not have been handled.
    #[error("peer call timed out after {0:?}")]
    Timeout(Duration),
    /// The connection broke while the call was queued or in flight. The request may or may not
    /// have been handled.
    #[error("peer connection closed: {0}")]
    Closed(String),
    /// A frame could not be encoded, or the peer sent a frame we could not decode (the
    /// connection is then closed).
    #[error("peer frame codec error: {0}")]
    Codec(String),
    /// The connection was refused during its handshake (TLS, node id, cluster id, version);
    /// nothing was sent.
    #[error("peer connection refused: {0}")]
    Refused(String),
    /// The encoded request exceeds the maximum frame length; nothing was sent.
    #[error("peer request of {len} bytes exceeds the maximum frame length of {max}")]
    TooLarge {
        /// The encoded request's length.
        len: usize,
        /// The pool's maximum frame length.
        max: usize,
    },
}

/// Aborts a task when dropped, so a connection's helper task dies with its owner.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl AbortOnDrop {
    /// Aborts the task and waits until it is gone (and with it whatever it owned).
    pub(crate) async fn stop(mut self) {
        self.0.abort();
        let _ = (&mut self.0).await;
    }

    /// Waits for the task to end by itself, for at most `limit`; then aborts it as [`stop`].
    ///
    /// [`stop`]: AbortOnDrop::stop
    pub(crate) async fn join_within(mut self, limit: Duration) {
        if tokio::time::timeout(limit, &mut self.0).await.is_err() {
            self.stop().await;
        }
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
