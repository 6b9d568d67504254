//! The openraft network on top of the peer pool: Raft RPCs become [`PeerPool::call`]s, and their
//! failures become the [`RPCError`]s openraft acts on (back off, retry, shrink, give up).

use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Timeout as RpcTimeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};
use synod_raft_store::types::{NodeId, TypeConfig};

use super::{PeerError, PeerPool, PeerRequest, PeerResponse};

/// The error type of a Raft RPC with remote error `E`.
type RpcResult<T, E = RaftError<NodeId>> = Result<T, RPCError<NodeId, BasicNode, E>>;

/// openraft's network factory: hands out a [`PeerConn`] per target, all sharing one pool.
#[derive(Debug, Clone)]
pub struct PeerNetwork {
    /// This node's id: openraft's timeout errors name both ends.
    local: NodeId,
    /// The connections every [`PeerConn`] sends through.
    pool: PeerPool,
}

impl PeerNetwork {
    /// The network of node `local`, sending through `pool` (which the node may share with its
    /// other peer traffic: forwards, read-index requests, touches).
    pub fn new(local: NodeId, pool: PeerPool) -> Self {
        PeerNetwork { local, pool }
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerConn;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerConn {
        PeerConn {
            local: self.local,
            target,
            addr: node.addr.clone(),
            pool: self.pool.clone(),
        }
    }
}

/// openraft's client for one target; connects lazily through the pool.
#[derive(Debug, Clone)]
pub struct PeerConn {
    /// This node's id, for openraft's timeout errors.
    local: NodeId,
    /// The node this client sends to.
    target: NodeId,
    /// The target's peer address, from its membership entry.
    addr: String,
    /// Where the connection to `addr` lives.
    pool: PeerPool,
}

impl PeerConn {
    /// Maps a failed call: no connection → Unreachable (openraft backs off); no answer in time →
    /// Timeout; a broken connection or a bad frame → Network (openraft retries).
    fn rpc_error<E: std::error::Error>(
        &self,
        action: RPCTypes,
        ttl: Duration,
        e: PeerError,
    ) -> RPCError<NodeId, BasicNode, E> {
        match e {
            PeerError::Unreachable(_) | PeerError::Refused(_) => {
                RPCError::Unreachable(Unreachable::new(&e))
            }
            PeerError::Timeout(_) => RPCError::Timeout(RpcTimeout {
                action,
                id: self.local,
                target: self.target,
                timeout: ttl,
            }),
            PeerError::Closed(_) | PeerError::Codec(_) | PeerError::TooLarge { .. } => {
                RPCError::Network(NetworkError::new(&e))
            }
        }
    }

    /// A response of another kind than the request's is a broken exchange.
    fn unexpected<E: std::error::Error>(
        &self,
        action: RPCTypes,
        got: &PeerResponse,
    ) -> RPCError<NodeId, BasicNode, E> {
        let e = PeerError::Codec(format!(
            "unexpected response to {action} from node {}: {}",
            self.target,
            got.variant_name()
        ));
        RPCError::Network(NetworkError::new(&e))
    }
}

impl RaftNetwork<TypeConfig> for PeerConn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let action = RPCTypes::AppendEntries;
        let entries = rpc.entries.len() as u64;
        let ttl = option.hard_ttl();
        let sent = std::time::Instant::now();
        let answer = self
            .pool
            .call(
                self.target,
                &self.addr,
                PeerRequest::AppendEntries(rpc),
                ttl,
            )
            .await;
        if entries > 0 {
            crate::admin::metrics::stage(crate::admin::metrics::Stage::Replicate, sent);
        }
        match answer {
            Ok(PeerResponse::AppendEntries(r)) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(other) => Err(self.unexpected(action, &other)),
            // Ask openraft to send fewer entries; a single entry too large cannot shrink, so it
            // is a plain network error (openraft retries later, not in a tight loop).
            Err(e @ PeerError::TooLarge { .. }) if entries > 1 => Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(entries / 2).with_source_error(&e),
            )),
            Err(e) => Err(self.rpc_error(action, ttl, e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        let action = RPCTypes::InstallSnapshot;
        let ttl = option.hard_ttl();
        match self
            .pool
            .call(
                self.target,
                &self.addr,
                PeerRequest::InstallSnapshot(rpc),
                ttl,
            )
            .await
        {
            Ok(PeerResponse::InstallSnapshot(r)) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(other) => Err(self.unexpected(action, &other)),
            Err(e) => Err(self.rpc_error(action, ttl, e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        let action = RPCTypes::Vote;
        let ttl = option.hard_ttl();
        match self
            .pool
            .call(self.target, &self.addr, PeerRequest::Vote(rpc), ttl)
            .await
        {
            Ok(PeerResponse::Vote(r)) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(other) => Err(self.unexpected(action, &other)),
            Err(e) => Err(self.rpc_error(action, ttl, e)),
        }
    }
}
