//! What this node answers on the peer port ([`PeerService`] for [`Node`]), and whom: a request is
//! authorized only from a member of the current configuration (the last one in the log, or the last
//! one applied; any authenticated node while this one has none yet), and only as itself — a Raft
//! message's vote names its sender, a forwarded command's origin is its sender's (every command's,
//! in a forwarded group). Then Raft's messages go to Raft; a forwarded write or group goes to the
//! proposer; a read-index request is answered if this node leads (one with the follower's vote
//! names its sender); touches feed the session tracker; a history-floor request says how far back
//! this node's watch-event history reaches.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use synod_raft_store::state_machine::lock;
use tokio::sync::{mpsc, oneshot};

use crate::admin::metrics::{stage, Stage};
use crate::node::{Node, Proposal, Proposed};
use crate::pipeline::write_order::WriteOrder;
use synod_raft_store::types::MAX_BATCH;
use synod_raft_store::{Command, NodeId};

use crate::peer::{ForwardError, PeerRequest, PeerResponse, PeerService, Refusal};

impl PeerService for Node {
    /// The order of the writes the peer forwards on the connection: once one of them failed,
    /// every later one is refused and the connection is closed (see [`Node::forwarded`]).
    type Conn = Arc<WriteOrder>;

    fn open(&self, _from: SocketAddr, _node: NodeId) -> Arc<WriteOrder> {
        WriteOrder::new()
    }

    fn spent(&self, forwards: &Arc<WriteOrder>) -> bool {
        forwards.is_broken()
    }

    fn authorize(&self, from: NodeId, req: &PeerRequest) -> Result<(), Refusal> {
        let effective = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            // A node with no configuration yet is being bootstrapped or added by a member it
            // cannot know: it accepts any authenticated node (whose certificate the peer CA
            // signed), until the configuration arrives.
            membership.get_node(&from).is_some() || membership.nodes().next().is_none()
        };
        // The effective configuration is the last one in this node's log, committed or not. A
        // leader that removes itself appends a configuration without itself and leads until
        // it commits it: its followers must still take its entries and heartbeats once they
        // hold that configuration, or it never hears a quorum acknowledge it (openraft counts
        // only the acknowledgements of replication started under the new configuration), its
        // removal never completes, and it goes on leading a cluster that refuses it. So a
        // member of the configuration this node last applied (committed) is a member too,
        // until the configuration that removes it is applied here. Asked only when the
        // effective configuration refuses: it takes the replica's lock.
        let member = effective
            || lock(&self.replica)
                .membership
                .membership()
                .get_node(&from)
                .is_some();
        if !member {
            return Err(Refusal::NotAMember(from));
        }
        let speaks_as = match req {
            PeerRequest::AppendEntries(r) => r.vote.leader_id().voted_for(),
            PeerRequest::Vote(r) => r.vote.leader_id().voted_for(),
            PeerRequest::InstallSnapshot(r) => r.vote.leader_id().voted_for(),
            PeerRequest::Forward(cmd) => forwarded_as(from, cmd)?,
            PeerRequest::ForwardGroup(cmds) => {
                if cmds.is_empty() || cmds.len() > MAX_BATCH {
                    return Err(Refusal::BadForward {
                        from,
                        what: "a group of no commands or of more than MAX_BATCH",
                    });
                }
                // Every write of the group must be the sender's own: the first that is not
                // is the claim refused below.
                let mut claimed = None;
                for cmd in cmds {
                    if let Some(other) = forwarded_as(from, cmd)?.filter(|n| *n != from) {
                        claimed = Some(other);
                        break;
                    }
                }
                claimed
            }
            PeerRequest::Reconfig(order) => Some(order.origin.node),
            PeerRequest::ReadIndexFollowing { follower, .. } => Some(*follower),
            PeerRequest::ReadIndex
            | PeerRequest::Touch(_)
            | PeerRequest::HistoryFloor
            | PeerRequest::Describe
            | PeerRequest::SavedVote => None,
        };
        match speaks_as {
            Some(claimed) if claimed != from => Err(Refusal::WrongNode {
                certified: from,
                claimed,
            }),
            _ => Ok(()),
        }
    }

    fn handle(
        &self,
        forwards: &Arc<WriteOrder>,
        req: PeerRequest,
    ) -> BoxFuture<'static, PeerResponse> {
        let raft = self.raft.clone();
        match req {
            PeerRequest::AppendEntries(r) => {
                let timed = !r.entries.is_empty();
                async move {
                    let started = Instant::now();
                    let answer = raft.append_entries(r).await;
                    if timed {
                        stage(Stage::AppendEntries, started);
                    }
                    PeerResponse::AppendEntries(answer)
                }
                .boxed()
            }
            PeerRequest::Vote(r) => async move { PeerResponse::Vote(raft.vote(r).await) }.boxed(),
            PeerRequest::InstallSnapshot(r) => {
                async move { PeerResponse::InstallSnapshot(raft.install_snapshot(r).await) }.boxed()
            }
            PeerRequest::Forward(cmd) if Node::is_leader_duty(&cmd) => {
                refused_duties(1);
                futures_util::future::ready(PeerResponse::Forward(Err(ForwardError::Failed(
                    "a leader's duty is proposed by the leader that decided it, never forwarded"
                        .into(),
                ))))
                .boxed()
            }
            PeerRequest::Forward(cmd) => self
                .forwarded(Proposed::One(cmd), forwards)
                .map(PeerResponse::Forward)
                .boxed(),
            PeerRequest::ForwardGroup(mut cmds) => {
                let before = cmds.len();
                cmds.retain(|c| !Node::is_leader_duty(c));
                refused_duties(before - cmds.len());
                if cmds.is_empty() {
                    // Nobody waits for a duty: the group's answer settles nothing else.
                    return futures_util::future::ready(PeerResponse::ForwardGroup(Ok(()))).boxed();
                }
                self.forwarded(Proposed::Group(cmds), forwards)
                    .map(PeerResponse::ForwardGroup)
                    .boxed()
            }
            PeerRequest::ReadIndex | PeerRequest::ReadIndexFollowing { .. } => {
                if !self.is_leader() {
                    let current = self.leader().map(|l| l.0);
                    return futures_util::future::ready(PeerResponse::ReadIndex(Err(
                        ForwardError::NotLeader { leader: current },
                    )))
                    .boxed();
                }
                // The followers' read points share the leader's own rounds (one heartbeat
                // round serves every read queued while the previous one was in flight),
                // rather than each request starting a round of its own; a follower whose
                // vote names this leader may need none.
                let point = match req {
                    PeerRequest::ReadIndexFollowing { follower, vote } => {
                        self.read_index_following(follower, vote).boxed()
                    }
                    _ => self.read_index().boxed(),
                };
                async move {
                    PeerResponse::ReadIndex(
                        point.await.map_err(|e| ForwardError::Failed(e.to_string())),
                    )
                }
                .boxed()
            }
            PeerRequest::Touch(touches) => {
                let now = Instant::now();
                for t in touches {
                    let idle = Duration::from_millis(u64::from(t.idle_ms));
                    self.touches
                        .touch(t.session_id, now.checked_sub(idle).unwrap_or(self.started));
                }
                futures_util::future::ready(PeerResponse::Touch(self.local.cluster.get())).boxed()
            }
            PeerRequest::HistoryFloor => {
                let floor = lock(&self.replica).observer.history.floor();
                futures_util::future::ready(PeerResponse::HistoryFloor(floor)).boxed()
            }
            // On a task of its own: a reconfig is several steps, and the peer connection that
            // asked may close before they are done (a request future here is dropped with its
            // connection); cut short, the steps after the one under way would never run.
            PeerRequest::Reconfig(order) => match self.self_arc() {
                Some(node) => {
                    let run = tokio::spawn(async move { node.execute_reconfig(order).await });
                    async move {
                        PeerResponse::Reconfig(run.await.unwrap_or_else(|e| {
                            Err(crate::error::ReconfigError::Failed(format!(
                                "the reconfig's task ended: {e}"
                            )))
                        }))
                    }
                    .boxed()
                }
                None => futures_util::future::ready(PeerResponse::Reconfig(Err(
                    crate::error::ReconfigError::Failed("node shutting down".into()),
                )))
                .boxed(),
            },
            // Read without the Raft core, which may be syncing an append (see `SavedVote`).
            PeerRequest::SavedVote => {
                futures_util::future::ready(PeerResponse::SavedVote(self.saved_vote.get())).boxed()
            }
            PeerRequest::Describe => {
                let description = super::NodeDescription {
                    client_addr: self.cfg.advertise_client_addr.clone(),
                    admin_addr: self.cfg.advertise_admin_addr.clone(),
                };
                futures_util::future::ready(PeerResponse::Describe(description)).boxed()
            }
        }
    }
}

/// Says that `n` forwarded duties were not proposed ([`Node::is_leader_duty`]).
fn refused_duties(n: usize) {
    if n > 0 {
        tracing::warn!(
            n,
            "not proposing a leader's duty that a follower forwarded (a deposed leader's expiry, \
             reap or version raise): the leader decides its own"
        );
    }
}

/// The node a forwarded command says it comes from (`None`: it names none); a batch is
/// refused, since only a leader builds them.
fn forwarded_as(from: NodeId, cmd: &Command) -> Result<Option<NodeId>, Refusal> {
    match cmd {
        Command::Batch(_) => Err(Refusal::BadForward {
            from,
            what: "a batch (only a leader builds them)",
        }),
        cmd => Ok(cmd.origin().map(|o| o.node)),
    }
}

impl Node {
    /// Hands a follower's forwarded write (or group) to the proposer, in arrival order and in
    /// the order of the connection's forwards (`forwards`); the future is its outcome. If the
    /// proposer is gone, the proposal (and with it the answer's sender) is dropped, the
    /// connection's order broken, and the outcome says the node is shutting down.
    ///
    /// Why the connection's order: the follower's clients pipeline their writes, and a write
    /// failed here (its outcome unknown: this node stepped down with it in flight) must not be
    /// followed by a later one that takes effect, which a leader deposed and re-elected could
    /// otherwise accept if it arrived after the re-election. The follower keeps each client
    /// connection's writes on one route, but it cannot see a change of term it has not heard of
    /// yet; this node can. So a connection's forwards are admitted only in the term of those
    /// still in flight, and after a failure none is: the connection is then closed, and the
    /// follower's next forwards go on a new one, as after any broken connection.
    fn forwarded(
        &self,
        what: Proposed,
        forwards: &Arc<WriteOrder>,
    ) -> impl std::future::Future<Output = Result<(), ForwardError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError(p)) =
            self.proposals.send(Proposal::forwarded(what, tx, forwards))
        {
            // Shutting down: nothing after it is proposed either, as for a client connection.
            if let Some(queued) = &p.order {
                queued.order().break_off();
            }
        }
        async move {
            rx.await
                .unwrap_or_else(|_| Err(ForwardError::Failed("node shutting down".into())))
        }
    }
}
