//! The proposer: every command this node proposes, and every write a follower forwards to it,
//! in arrival order. On the leader, queued commands go out as batch entries (group commit: one
//! entry, one fsync for many writes); on a follower what is queued is forwarded to the leader as
//! one group over the one peer connection, written in order. ZooKeeper's
//! ProposalRequestProcessor / SyncRequestProcessor pair plays this part.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use synod_raft_store::state_machine::lock;
use synod_raft_store::{Command, Origin};
use tokio::sync::{mpsc, oneshot};

use crate::admin::metrics::{stage, Stage};
use crate::node::{Node, Proposal};
use crate::peer::{ForwardError, PeerRequest, PeerResponse};
use crate::pipeline::pending::Completion;

/// Timeout for calls to the leader on behalf of clients (forwarded writes).
pub const LEADER_CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl Node {
    /// waiter registered for its origin (see [`crate::pipeline::pending::Pending`]).
    pub fn propose(&self, cmd: Command) {
        let origin = cmd.origin();
        if self.proposals.send(Proposal::local(cmd)).is_err() {
            if let Some(o) = origin {
                lock(&self.replica)
                    .observer
                    .pending
                    .fail(o.request, "node shutting down".into());
            }
        }
    }

    /// Registers a waiter for `origin` and proposes `cmd`.
    pub fn propose_and_wait(&self, origin: Origin, cmd: Command) -> oneshot::Receiver<Completion> {
        let (tx, rx) = oneshot::channel();
        lock(&self.replica).observer.pending.add(origin.request, tx);
        self.propose(cmd);
        rx
    }

    /// Fails the waiter of a command whose proposal or forward failed.
    fn fail(&self, origin: Option<Origin>, why: String) {
        if let Some(o) = origin {
            lock(&self.replica).observer.pending.fail(o.request, why);
        }
    }
}

/// Batch entries the leader keeps in flight (proposed, not yet applied). While they are being
/// written and replicated, new writes queue up and go out together in the next entry: group
/// commit, one fsync for many writes (openraft 0.9 writes and syncs one entry per proposal).
const MAX_INFLIGHT_BATCHES: usize = 2;
/// Upper bound on the client bytes of one batch entry.
const MAX_BATCH_BYTES: usize = 8 << 20;

/// Where a forwarded command's outcome goes (None for this node's own commands).
type RemoteReply = Option<oneshot::Sender<Result<(), ForwardError>>>;
type Waiter = (Option<Origin>, RemoteReply);

fn command_bytes(cmd: &Command) -> usize {
    match cmd {
        Command::Write { body, .. } => body.len() + 64,
        _ => 64,
    }
}

/// Proposes in arrival order. On the leader, queued commands go out as batch entries, at most
/// [`MAX_INFLIGHT_BATCHES`] at a time; on a follower what is queued is forwarded as one group
/// over the one peer connection to the leader ([`crate::peer::PeerPool::call_all`]), each
/// command in its own frame, written in order.
pub async fn proposer_loop(node: Arc<Node>, mut rx: mpsc::UnboundedReceiver<Proposal>) {
    let mut queue: std::collections::VecDeque<Proposal> = Default::default();
    let mut batches: FuturesUnordered<BoxFuture<'static, ()>> = FuturesUnordered::new();
    let mut forwards: FuturesUnordered<BoxFuture<'static, ()>> = FuturesUnordered::new();
    let mut open = true;
    loop {
        tokio::select! {
            p = rx.recv(), if open => match p {
                Some(p) => queue.push_back(p),
                None => open = false,
            },
            Some(()) = batches.next(), if !batches.is_empty() => {}
            Some(()) = forwards.next(), if !forwards.is_empty() => {}
            else => break,
        }
        while let Ok(p) = rx.try_recv() {
            queue.push_back(p);
        }
        if queue.is_empty() {
            continue;
        }
        match node.leader() {
            Some((id, _)) if id == node.id => {
                while batches.len() < MAX_INFLIGHT_BATCHES && !queue.is_empty() {
                    let mut cmds = Vec::new();
                    // A due raise of the cluster version goes before any write (applying it
                    // twice changes nothing).
                    if crate::upgrade::raise_due(&node) {
                        cmds.push(Command::ClusterVersion {
                            version: synod_raft_store::types::CLUSTER_VERSION,
                        });
                    }
                    let mut waiters: Vec<Waiter> = Vec::new();
                    let mut bytes = 0;
                    while let Some(p) = queue.front() {
                        if !cmds.is_empty()
                            && (cmds.len() >= synod_raft_store::types::MAX_BATCH
                                || bytes >= MAX_BATCH_BYTES)
                        {
                            break;
                        }
                        bytes += command_bytes(&p.cmd);
                        let Some(p) = queue.pop_front() else {
                            break;
                        };
                        stage(Stage::ProposeQueue, p.at);
                        waiters.push((p.cmd.origin(), p.reply));
                        cmds.push(p.cmd);
                    }
                    let proposed = Instant::now();
                    match node.raft.client_write_ff(Command::Batch(cmds.into())).await {
                        Ok(responder) => {
                            let node = node.clone();
                            batches.push(
                                async move {
                                    let applied = responder.await;
                                    stage(Stage::Commit, proposed);
                                    let res = match applied {
                                        Ok(Ok(_)) => Ok(()),
                                        Ok(Err(e)) => Err(ForwardError::Failed(e.to_string())),
                                        Err(e) => Err(ForwardError::Failed(e.to_string())),
                                    };
                                    for (origin, remote) in waiters {
                                        finish(&node, origin, remote, res.clone());
                                    }
                                }
                                .boxed(),
                            );
                        }
                        Err(e) => {
                            for (origin, remote) in waiters {
                                finish(
                                    &node,
                                    origin,
                                    remote,
                                    Err(ForwardError::Failed(e.to_string())),
                                );
                            }
                        }
                    }
                }
            }
            Some((id, addr)) => {
                // Everything queued goes to the leader as one group of forwards: written in
                // order, back to back, awaited together (one task and one timer per group).
                let mut origins = Vec::with_capacity(queue.len());
                let mut requests = Vec::with_capacity(queue.len());
                while let Some(Proposal {
                    cmd,
                    reply: remote,
                    at,
                }) = queue.pop_front()
                {
                    let origin = cmd.origin();
                    if remote.is_some() {
                        // Forwarded to us, but we no longer lead: the follower will retry elsewhere.
                        finish(
                            &node,
                            origin,
                            remote,
                            Err(ForwardError::NotLeader { leader: Some(id) }),
                        );
                        continue;
                    }
                    stage(Stage::ProposeQueue, at);
                    origins.push(origin);
                    requests.push(PeerRequest::Forward(cmd));
                }
                if requests.is_empty() {
                    continue;
                }
                let pool = node.pool.clone();
                let sent = Instant::now();
                let mut call = Box::pin(async move {
                    pool.call_all(id, &addr, requests, LEADER_CALL_TIMEOUT)
                        .await
                });
                // The first poll enqueues the frames: do it now, so forwards keep their order.
                let first = futures_util::poll!(&mut call);
                let node2 = node.clone();
                forwards.push(
                    async move {
                        let answers = match first {
                            std::task::Poll::Ready(r) => r,
                            std::task::Poll::Pending => call.await,
                        };
                        stage(Stage::Forward, sent);
                        debug_assert_eq!(answers.len(), origins.len(), "one answer per forward");
                        for (origin, answer) in origins.into_iter().zip(answers) {
                            let res = match answer {
                                Ok(PeerResponse::Forward(r)) => r,
                                Ok(other) => Err(ForwardError::Failed(format!(
                                    "unexpected reply {}",
                                    other.variant_name()
                                ))),
                                Err(e) => Err(ForwardError::Failed(e.to_string())),
                            };
                            finish(&node2, origin, None, res);
                        }
                    }
                    .boxed(),
                );
            }
            None => {
                while let Some(p) = queue.pop_front() {
                    finish(
                        &node,
                        p.cmd.origin(),
                        p.reply,
                        Err(ForwardError::NotLeader { leader: None }),
                    );
                }
            }
        }
    }
}

fn finish(
    node: &Node,
    origin: Option<Origin>,
    remote: Option<oneshot::Sender<Result<(), ForwardError>>>,
    res: Result<(), ForwardError>,
) {
    match remote {
        Some(tx) => {
            let _ = tx.send(res);
        }
        None => {
            if let Err(e) = res {
                node.fail(origin, e.to_string());
            }
        }
    }
}
