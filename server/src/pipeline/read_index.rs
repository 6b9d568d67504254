//! Linearizable reads: a read point is an index such that every write acknowledged before it
//! was asked for is at or below it (openraft's read index: a heartbeat round to a quorum, on
//! the leader). Reads queued while a round is in flight share the next round; a follower asks
//! the leader over the peer port. A reader then waits until its node has applied the point.

use std::sync::Arc;
use std::time::Duration;

use openraft::Raft;
use synod_raft_store::TypeConfig;
use tokio::sync::{mpsc, oneshot};

use crate::error::ReadIndexError;
use crate::node::{Node, ReadWaiter};
use crate::peer::{PeerRequest, PeerResponse};
use crate::pipeline::proposer::LEADER_CALL_TIMEOUT;

impl Node {
    /// A linearizable read point: an index such that every write acknowledged before this call is
    /// at or below it. Calls made while a round is in flight share the next round. The call is
    /// queued when made, not when the future is first polled, and the future borrows nothing.
    pub fn read_index(
        &self,
    ) -> impl std::future::Future<Output = Result<u64, ReadIndexError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let queued = self.read_waiters.send(tx);
        async move {
            queued.map_err(|_| ReadIndexError::ShuttingDown)?;
            rx.await.map_err(|_| ReadIndexError::ShuttingDown)?
        }
    }

    /// Waits until this node has applied `index` (bounded).
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), ReadIndexError> {
        let mut rx = self.applied.clone();
        let res = tokio::time::timeout(timeout, async move {
            rx.wait_for(|a| *a >= index).await.map(|_| ())
        })
        .await;
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(ReadIndexError::ShuttingDown),
            Err(_) => Err(ReadIndexError::NotCaughtUp { index, timeout }),
        }
    }

    /// A linearizable barrier: waits until this node has applied everything acknowledged before.
    pub async fn sync_barrier(&self) -> Result<(), ReadIndexError> {
        let idx = self.read_index().await?;
        self.wait_applied(idx, LEADER_CALL_TIMEOUT).await
    }

    async fn read_index_round(&self) -> Result<u64, ReadIndexError> {
        match self.leader() {
            Some((id, _)) if id == self.id => leader_read_index(&self.raft).await,
            Some((id, addr)) => match self
                .pool
                .call(id, &addr, PeerRequest::ReadIndex, LEADER_CALL_TIMEOUT)
                .await
            {
                Ok(PeerResponse::ReadIndex(Ok(i))) => Ok(i),
                Ok(PeerResponse::ReadIndex(Err(e))) => Err(e.into()),
                Ok(other) => Err(ReadIndexError::UnexpectedReply(other.variant_name())),
                Err(e) => Err(e.into()),
            },
            None => Err(ReadIndexError::NoLeader),
        }
    }
}

/// One read-index round at a time; waiters queued during a round share the next one.
pub async fn read_index_loop(node: Arc<Node>, mut rx: mpsc::UnboundedReceiver<ReadWaiter>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(w) = rx.try_recv() {
            batch.push(w);
        }
        let r = node.read_index_round().await;
        for w in batch {
            let _ = w.send(r.clone());
        }
    }
}

/// On the leader: a read point confirmed by a heartbeat round to a quorum (openraft's read index:
/// the commit index, or this term's first entry if later).
pub async fn leader_read_index(raft: &Raft<TypeConfig>) -> Result<u64, ReadIndexError> {
    raft.get_read_log_id()
        .await
        .map(|(read, _)| read.map(|l| l.index).unwrap_or(0))
        .map_err(|e| ReadIndexError::Raft(e.to_string()))
}
