//! The proposer: every command this node proposes, and every write a follower forwards to it,
//! in arrival order. On the leader, queued commands go out as batch entries (group commit: one
//! entry, one fsync for many writes); on a follower what is queued is forwarded to the leader
//! over one peer connection (a [`crate::peer::CallStream`]), in order, as groups of commands
//! that the leader keeps together in one entry (one frame and one answer per group). Each client
//! connection's writes are admitted in its [`crate::pipeline::write_order::WriteOrder`], and on
//! the leader the writes a follower forwards in the order of the peer connection they came on.
//! ZooKeeper's ProposalRequestProcessor / SyncRequestProcessor pair plays this part.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use synod_raft_store::state_machine::lock;
use synod_raft_store::types::{FORWARD_GROUP_SINCE, MAX_BATCH};
use synod_raft_store::{Command, NodeId, Origin};
use tokio::sync::{mpsc, oneshot};

use crate::admin::metrics::{stage, Stage};
use crate::error::OutOfOrder;
use crate::node::{Node, Proposal, Proposed};
use crate::peer::{CallStream, ForwardError, PeerRequest, PeerResponse};
use crate::pipeline::pending::Completion;
use crate::pipeline::write_order::{InFlight, Route, WriteOrder};

/// Timeout for calls to the leader on behalf of clients (forwarded writes).
pub const LEADER_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The counter of writes refused to keep their connection's order: a client connection's on
/// this node, or a peer connection's forwards on the leader.
const REFUSED_OUT_OF_ORDER: &str = "synod_writes_refused_out_of_order_total";

impl Node {
    /// waiter registered for its origin (see [`crate::pipeline::pending::Pending`]).
    pub fn propose(&self, cmd: Command) {
        self.submit(Proposal::local(cmd));
    }

    /// Queues a proposal of this node's own for the proposer; if the proposer is gone (the node
    /// is shutting down), fails its waiter and breaks its connection's order.
    fn submit(&self, p: Proposal) {
        if let Err(mpsc::error::SendError(p)) = self.proposals.send(p) {
            if let Some(queued) = &p.order {
                queued.order().break_off();
            }
            if let Proposed::One(cmd) = &p.what {
                self.fail(cmd.origin(), "node shutting down".into());
            }
        }
    }

    /// Proposes a duty this node decided as the leader of `term` (a session expiry, a reap, a
    /// raise of the cluster version): dropped, never forwarded, once this node no longer leads
    /// in that term (see [`Proposal::duty_of_term`]). Such a command has no waiter.
    pub fn propose_duty(&self, cmd: Command, term: u64) {
        debug_assert!(cmd.origin().is_none(), "a duty has no waiter");
        let _ = self.proposals.send(Proposal::duty(cmd, term));
    }

    /// Whether `cmd` is a leader's duty, which only the leader that decided it proposes: an
    /// expiry, a reap, a raise of the cluster version. A leader refuses it forwarded (a
    /// follower of release 0.5.0 or earlier could forward its own as it lost office).
    pub fn is_leader_duty(cmd: &Command) -> bool {
        matches!(
            cmd,
            Command::CloseSession { origin: None, .. }
                | Command::Reap { .. }
                | Command::ClusterVersion { .. }
        )
    }

    /// Registers a waiter for `origin` and proposes `cmd`; a client connection's command comes
    /// with the connection's `order`, which keeps its writes in order across leaders.
    pub fn propose_and_wait(
        &self,
        origin: Origin,
        cmd: Command,
        order: Option<&Arc<WriteOrder>>,
    ) -> oneshot::Receiver<Completion> {
        let (tx, rx) = oneshot::channel();
        lock(&self.replica).observer.pending.add(origin.request, tx);
        self.submit(match order {
            Some(order) => Proposal::in_order(cmd, order),
            None => Proposal::local(cmd),
        });
        rx
    }

    /// Fails the waiter of a command its connection's [`WriteOrder`] refused (and counts it).
    pub(crate) fn refuse_out_of_order(&self, origin: Option<Origin>, e: OutOfOrder) {
        metrics::counter!(REFUSED_OUT_OF_ORDER).increment(1);
        self.fail(origin, e.to_string());
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
/// Upper bound on the client bytes of one batch entry (exceeded only by a single proposal
/// larger than it: a command, or a forwarded group, which its follower bounds the same way).
const MAX_BATCH_BYTES: usize = 8 << 20;

/// Where a forwarded command's outcome goes (None for this node's own commands).
type RemoteReply = Option<oneshot::Sender<Result<(), ForwardError>>>;

/// Who learns how a proposed command (or a forwarded group) ended.
struct Waiter {
    /// The command's origin: its waiter in [`crate::pipeline::pending::Pending`] learns a
    /// failure (success reaches it from apply). `None` for a duty, or a forwarded group (its
    /// commands' waiters are on the follower).
    origin: Option<Origin>,
    /// The follower's answer channel, for a command or group it forwarded here.
    remote: RemoteReply,
    /// The place of the command in its connection's order, settled with its outcome.
    in_flight: Option<InFlight>,
}

impl Waiter {
    /// Delivers the outcome.
    fn finish(self, node: &Node, res: Result<(), ForwardError>) {
        if let Some(in_flight) = self.in_flight {
            in_flight.settle(res.is_ok());
        }
        finish(node, self.origin, self.remote, res);
    }
}

/// Whether a proposal may go out by a route (see [`admit`]).
enum Admission {
    /// Yes: in no connection's order (a duty, a session's creation, a `reconfig`'s new
    /// configuration).
    Untracked,
    /// Yes, in its connection's order.
    Admitted(InFlight),
    /// No: its connection's order refused it, and its waiter (or the follower) was told.
    Refused,
}

impl Admission {
    /// The place in its connection's order of an admitted proposal.
    fn in_flight(self) -> Option<InFlight> {
        match self {
            Admission::Admitted(in_flight) => Some(in_flight),
            Admission::Untracked | Admission::Refused => None,
        }
    }
}

/// Admits a proposal for `route` in its connection's order (see
/// [`crate::pipeline::write_order`]): one of this node's own commands in its client
/// connection's, a forwarded one in its peer connection's. If the order refuses it, its waiter
/// (or the follower) is told, and it is counted.
fn admit(node: &Node, p: &mut Proposal, route: Route) -> Admission {
    let Some(queued) = &p.order else {
        return Admission::Untracked;
    };
    match queued.order().admit(route) {
        Ok(in_flight) => Admission::Admitted(in_flight),
        Err(e) => {
            match (p.reply.take(), &p.what) {
                (Some(reply), what) => {
                    metrics::counter!(REFUSED_OUT_OF_ORDER).increment(what.count() as u64);
                    let _ = reply.send(Err(ForwardError::Failed(e.to_string())));
                }
                (None, Proposed::One(cmd)) => node.refuse_out_of_order(cmd.origin(), e),
                (None, Proposed::Group(_)) => {
                    debug_assert!(false, "only a forwarded proposal holds a group")
                }
            }
            Admission::Refused
        }
    }
}

/// About how many bytes a command adds to an entry or a frame (its client bytes and a
/// little for the rest).
fn command_bytes(cmd: &Command) -> usize {
    match cmd {
        Command::Write { body, .. } => body.len() + 64,
        _ => 64,
    }
}

/// [`command_bytes`] of all a proposal holds.
fn proposed_bytes(what: &Proposed) -> usize {
    match what {
        Proposed::One(cmd) => command_bytes(cmd),
        Proposed::Group(cmds) => cmds.iter().map(command_bytes).sum(),
    }
}

/// What a follower sends the leader for the commands it has queued, as it builds it: the
/// requests, in order, and for each the waiters of its commands (whom its answer settles).
#[derive(Default)]
struct ForwardGroups {
    /// The requests complete so far.
    requests: Vec<PeerRequest>,
    /// Per request, its commands' waiters, in order.
    waiters: Vec<Vec<Waiter>>,
    /// The group being filled (not yet in `requests`).
    open: Vec<Command>,
    /// Its commands' waiters.
    open_waiters: Vec<Waiter>,
    /// Its [`command_bytes`].
    open_bytes: usize,
}

/// The waiter of a command this node forwards.
fn forwarded(cmd: &Command, in_flight: Option<InFlight>) -> Waiter {
    Waiter {
        origin: cmd.origin(),
        remote: None,
        in_flight,
    }
}

impl ForwardGroups {
    /// Adds `cmd` to the open group, first closing it if `cmd` would take it past
    /// [`MAX_BATCH`] commands or `max_bytes` (a command larger than that goes alone).
    fn add(&mut self, cmd: Command, in_flight: Option<InFlight>, max_bytes: usize) {
        let size = command_bytes(&cmd);
        if !self.open.is_empty()
            && (self.open.len() >= MAX_BATCH || self.open_bytes + size > max_bytes)
        {
            self.close();
        }
        self.open_bytes += size;
        self.open_waiters.push(forwarded(&cmd, in_flight));
        self.open.push(cmd);
    }

    /// Adds `cmd` as a request of its own ([`PeerRequest::Forward`], what a leader of protocol
    /// 1 or 2 reads).
    fn add_alone(&mut self, cmd: Command, in_flight: Option<InFlight>) {
        self.close();
        self.waiters.push(vec![forwarded(&cmd, in_flight)]);
        self.requests.push(PeerRequest::Forward(cmd));
    }

    /// Ends the open group, if any, as a request.
    fn close(&mut self) {
        if self.open.is_empty() {
            return;
        }
        self.open_bytes = 0;
        self.waiters.push(std::mem::take(&mut self.open_waiters));
        self.requests
            .push(PeerRequest::ForwardGroup(std::mem::take(&mut self.open)));
    }

    /// The requests and, per request, its commands' waiters.
    fn finish(mut self) -> (Vec<PeerRequest>, Vec<Vec<Waiter>>) {
        self.close();
        (self.requests, self.waiters)
    }
}

/// Proposes in arrival order. On the leader, queued commands go out as batch entries, at most
/// [`MAX_INFLIGHT_BATCHES`] at a time (a forwarded group whole, in one entry); on a follower
/// what is queued is forwarded to the leader on a [`CallStream`] (one peer connection,
/// [`crate::peer::PeerPool::call_all_in`]), written in order: as [`ForwardGroups`] once the
/// cluster version has them, before that each command in its own frame.
pub async fn proposer_loop(node: Arc<Node>, mut rx: mpsc::UnboundedReceiver<Proposal>) {
    let mut queue: VecDeque<Proposal> = Default::default();
    let mut batches: FuturesUnordered<BoxFuture<'static, ()>> = FuturesUnordered::new();
    let mut forwards: FuturesUnordered<BoxFuture<'static, ()>> = FuturesUnordered::new();
    let mut open = true;
    // At least the number of duties in `queue` (rare: expiries, reaps): while it is 0 the
    // queue is not scanned for stale ones, which would cost a pass over every queued write.
    let mut duties = 0usize;
    // As a follower: the stream its forwards go to the leader on (the leader, the stream's
    // number, the stream), replaced when the leader changes or the stream's connection broke.
    let mut link: Option<(NodeId, u64, Arc<CallStream>)> = None;
    let mut links = 0u64;
    loop {
        tokio::select! {
            p = rx.recv(), if open => match p {
                Some(p) => {
                    duties += usize::from(p.duty_of_term.is_some());
                    queue.push_back(p);
                }
                None => open = false,
            },
            Some(()) = batches.next(), if !batches.is_empty() => {}
            Some(()) = forwards.next(), if !forwards.is_empty() => {}
            else => break,
        }
        while let Ok(p) = rx.try_recv() {
            duties += usize::from(p.duty_of_term.is_some());
            queue.push_back(p);
        }
        if queue.is_empty() {
            duties = 0;
            continue;
        }
        if duties > 0 {
            duties = drop_stale_duties(&mut queue, node.leading_term());
        }
        // The batches and forwards already answered are settled first (`select!` may have
        // taken a proposal before one): a failed one breaks its connections' orders before any
        // write queued behind it is admitted.
        while let Some(Some(())) = batches.next().now_or_never() {}
        while let Some(Some(())) = forwards.next().now_or_never() {}
        match node.leader_route() {
            Some((route, _)) if route.leader == node.id => {
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
                        let size = proposed_bytes(&p.what);
                        if !cmds.is_empty()
                            && (cmds.len() + p.what.count() > MAX_BATCH
                                || bytes + size > MAX_BATCH_BYTES)
                        {
                            break;
                        }
                        let Some(mut p) = queue.pop_front() else {
                            break;
                        };
                        stage(Stage::ProposeQueue, p.at);
                        let in_flight = match admit(&node, &mut p, route) {
                            Admission::Refused => continue,
                            admitted => admitted.in_flight(),
                        };
                        bytes += size;
                        match p.what {
                            Proposed::One(cmd) => {
                                waiters.push(Waiter {
                                    origin: cmd.origin(),
                                    remote: p.reply,
                                    in_flight,
                                });
                                cmds.push(cmd);
                            }
                            // The whole group goes into this entry: its outcome is the one
                            // answer the follower waits for.
                            Proposed::Group(group) => {
                                waiters.push(Waiter {
                                    origin: None,
                                    remote: p.reply,
                                    in_flight,
                                });
                                cmds.extend(group);
                            }
                        }
                    }
                    if cmds.is_empty() {
                        // Every proposal taken was refused.
                        continue;
                    }
                    debug_assert!(
                        cmds.len() <= MAX_BATCH,
                        "a batch entry of {} commands",
                        cmds.len()
                    );
                    let proposed = Instant::now();
                    // Seen now: only a snapshot installed after the proposal fails the batch.
                    let mut installs = node.snapshot_installs.clone();
                    installs.mark_unchanged();
                    match node.raft.client_write_ff(Command::Batch(cmds.into())).await {
                        Ok(responder) => {
                            let node = node.clone();
                            batches.push(
                                async move {
                                    let res = tokio::select! {
                                        biased;
                                        applied = responder => {
                                            stage(Stage::Commit, proposed);
                                            match applied {
                                                Ok(Ok(_)) => Ok(()),
                                                Ok(Err(e)) => {
                                                    Err(ForwardError::Failed(e.to_string()))
                                                }
                                                Err(e) => Err(ForwardError::Failed(e.to_string())),
                                            }
                                        }
                                        _ = installs.changed() => Err(ForwardError::Failed(
                                            "a snapshot replaced this node's state while the \
                                             entry was in flight: its outcome is unknown"
                                                .to_string(),
                                        )),
                                    };
                                    for waiter in waiters {
                                        waiter.finish(&node, res.clone());
                                    }
                                }
                                .boxed(),
                            );
                        }
                        Err(e) => {
                            for waiter in waiters {
                                waiter.finish(&node, Err(ForwardError::Failed(e.to_string())));
                            }
                        }
                    }
                }
            }
            Some((mut route, addr)) => {
                let id = route.leader;
                // What the last stream carried may have been lost with its connection: the
                // writes after it go on a new one, as another route.
                let stream = match &link {
                    Some((leader, number, stream))
                        if *leader == id && node.pool.is_usable(stream) =>
                    {
                        route.link = *number;
                        stream.clone()
                    }
                    _ => {
                        links += 1;
                        let stream = CallStream::new();
                        link = Some((id, links, stream.clone()));
                        route.link = links;
                        stream
                    }
                };
                // A duty is never forwarded, whatever the metrics said a moment ago.
                if duties > 0 {
                    duties = drop_stale_duties(&mut queue, None);
                }
                // Everything queued goes to the leader, in order, back to back, awaited together
                // (one task and one timer for all of it): in groups of commands, one frame and
                // one answer each, once every member speaks them; before that one frame per
                // command.
                let grouped = crate::upgrade::cluster_has(&node, FORWARD_GROUP_SINCE);
                let max_group_bytes = MAX_BATCH_BYTES.min(node.pool.max_frame_len() / 2);
                let mut groups = ForwardGroups::default();
                while let Some(mut p) = queue.pop_front() {
                    if p.reply.is_some() {
                        // Forwarded to us, but we no longer lead: the follower's clients retry
                        // elsewhere, and nothing more of that peer connection is admitted.
                        if let Some(queued) = &p.order {
                            queued.order().break_off();
                        }
                        finish(
                            &node,
                            None,
                            p.reply,
                            Err(ForwardError::NotLeader { leader: Some(id) }),
                        );
                        continue;
                    }
                    let admission = admit(&node, &mut p, route);
                    let Proposal { what, at, .. } = p;
                    let Proposed::One(cmd) = what else {
                        debug_assert!(false, "only a forwarded proposal holds a group");
                        continue;
                    };
                    stage(Stage::ProposeQueue, at);
                    let in_flight = match admission {
                        Admission::Refused => continue,
                        admitted => admitted.in_flight(),
                    };
                    if grouped {
                        groups.add(cmd, in_flight, max_group_bytes);
                    } else {
                        groups.add_alone(cmd, in_flight);
                    }
                }
                let (requests, waiters) = groups.finish();
                if requests.is_empty() {
                    continue;
                }
                let pool = node.pool.clone();
                let sent = Instant::now();
                let mut call = Box::pin(async move {
                    pool.call_all_in(&stream, id, &addr, requests, LEADER_CALL_TIMEOUT)
                        .await
                });
                // The first poll enqueues the frames: do it now, so forwards keep their order.
                let first = futures_util::poll!(&mut call);
                // A leader that stops answering once its host has the frames (paused, cut off)
                // would hold these writes, and every later reply of their connections, until
                // it answers or the call times out: they are abandoned once another leads.
                let another_leader = node.another_leader_than(id);
                let node2 = node.clone();
                forwards.push(
                    async move {
                        let answers = match first {
                            std::task::Poll::Ready(r) => r,
                            std::task::Poll::Pending => tokio::select! {
                                biased;
                                r = call => r,
                                () = another_leader => {
                                    abandon(&node2, id, waiters);
                                    return;
                                }
                            },
                        };
                        stage(Stage::Forward, sent);
                        debug_assert_eq!(answers.len(), waiters.len(), "one answer per request");
                        for (waiters, answer) in waiters.into_iter().zip(answers) {
                            let res = match answer {
                                Ok(PeerResponse::Forward(r) | PeerResponse::ForwardGroup(r)) => r,
                                Ok(other) => Err(ForwardError::Failed(format!(
                                    "unexpected reply {}",
                                    other.variant_name()
                                ))),
                                Err(e) => Err(ForwardError::Failed(e.to_string())),
                            };
                            for waiter in waiters {
                                waiter.finish(&node2, res.clone());
                            }
                        }
                    }
                    .boxed(),
                );
            }
            None => {
                if duties > 0 {
                    duties = drop_stale_duties(&mut queue, None);
                }
                while let Some(p) = queue.pop_front() {
                    if let Some(queued) = &p.order {
                        queued.order().break_off();
                    }
                    let origin = match &p.what {
                        Proposed::One(cmd) => cmd.origin(),
                        Proposed::Group(_) => None,
                    };
                    finish(
                        &node,
                        origin,
                        p.reply,
                        Err(ForwardError::NotLeader { leader: None }),
                    );
                }
            }
        }
    }
}

/// Fails the writes of a forward to `leader` that was abandoned because another node leads now:
/// their outcome is unknown (the old leader may have replicated them, and then its successor
/// commits them), so their connections close, as for a forward that timed out.
fn abandon(node: &Node, leader: NodeId, waiters: Vec<Vec<Waiter>>) {
    metrics::counter!("synod_forward_leader_changes_total").increment(1);
    let why = ForwardError::Failed(format!(
        "leader {leader} stopped answering and another node leads now: the outcome is unknown"
    ));
    for waiter in waiters.into_iter().flatten() {
        waiter.finish(node, Err(why.clone()));
    }
}

/// Drops the queued duties of a term in which this node does not lead (`leading`: the term it
/// leads in now, if it does), and says so: a deposed leader's session expiry or reap is not its
/// to make any more, and forwarding it would have its successor carry it out (the new leader
/// restarted every session's deadline at its takeover and decides its own duties). Returns how
/// many duties are left.
fn drop_stale_duties(queue: &mut VecDeque<Proposal>, leading: Option<u64>) -> usize {
    let mut left = 0;
    queue.retain(|p| match p.duty_of_term {
        Some(term) if leading != Some(term) => {
            let duty = match &p.what {
                Proposed::One(Command::CloseSession { session_id, .. }) => {
                    format!("the expiry of session {session_id:#x}")
                }
                Proposed::One(Command::Reap { paths, .. }) => {
                    format!("a reap of {} znodes", paths.len())
                }
                Proposed::One(Command::ClusterVersion { version }) => {
                    format!("a raise of the cluster version to {version}")
                }
                Proposed::One(_) | Proposed::Group(_) => "a command".to_string(),
            };
            tracing::info!(
                decided_in_term = term,
                leading_term = ?leading,
                "dropping {duty}, decided as leader: this node no longer leads in that term"
            );
            false
        }
        Some(_) => {
            left += 1;
            true
        }
        None => true,
    });
    left
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// A forwarded write of `len` body bytes (its [`command_bytes`] is `len + 64`).
    fn write(request: u64, len: usize) -> Command {
        Command::Write {
            origin: Origin { node: 2, request },
            session_id: 1,
            time_ms: 0,
            auth: Vec::new(),
            opcode: 5,
            body: Bytes::from(vec![0u8; len]),
        }
    }

    /// Per request: its kind (`true` for a group) and its commands' request numbers, checked
    /// against the origins of the waiters recorded for it.
    fn shape(requests: &[PeerRequest], waiters: &[Vec<Waiter>]) -> Vec<(bool, Vec<u64>)> {
        assert_eq!(requests.len(), waiters.len(), "waiters for every request");
        requests
            .iter()
            .zip(waiters)
            .map(|(req, waiters)| {
                let (group, cmds) = match req {
                    PeerRequest::ForwardGroup(cmds) => (true, cmds.iter().collect::<Vec<_>>()),
                    PeerRequest::Forward(cmd) => (false, vec![cmd]),
                    other => panic!("not a forward: {other:?}"),
                };
                let numbers: Vec<u64> = cmds
                    .iter()
                    .map(|c| c.origin().expect("a write has an origin").request)
                    .collect();
                let recorded: Vec<u64> = waiters
                    .iter()
                    .map(|w| w.origin.expect("recorded origin").request)
                    .collect();
                assert_eq!(numbers, recorded, "origins in the order of the commands");
                (group, numbers)
            })
            .collect()
    }

    /// What is left of `queue`, by request number (duties: 1000 + session id).
    fn left(queue: &VecDeque<Proposal>) -> Vec<u64> {
        queue
            .iter()
            .map(|p| match &p.what {
                Proposed::One(Command::CloseSession { session_id, .. }) => {
                    1000 + *session_id as u64
                }
                Proposed::One(cmd) => cmd.origin().expect("a write has an origin").request,
                Proposed::Group(_) => panic!("no groups here"),
            })
            .collect()
    }

    fn expiry(session_id: i64, term: u64) -> Proposal {
        let cmd = Command::CloseSession {
            origin: None,
            session_id,
        };
        Proposal::duty(cmd, term)
    }

    #[test]
    fn a_leader_refuses_only_duties_forwarded_to_it() {
        let close = |origin| Command::CloseSession {
            origin,
            session_id: 7,
        };
        let reap = Command::Reap {
            time_ms: 0,
            paths: vec!["/c".into()],
        };
        let raise = Command::ClusterVersion { version: 5 };
        for duty in [close(None), reap, raise] {
            assert!(Node::is_leader_duty(&duty), "{duty:?}");
        }
        let audit = Command::AuditReads {
            time_ms: 0,
            node: 2,
            reads: Vec::new(),
            dropped: 1,
        };
        let own_close = close(Some(Origin {
            node: 2,
            request: 1,
        }));
        for forwarded in [write(1, 10), own_close, audit] {
            assert!(!Node::is_leader_duty(&forwarded), "{forwarded:?}");
        }
    }

    #[test]
    fn a_duty_is_proposed_only_by_the_leader_of_the_term_that_decided_it() {
        let queue = || {
            VecDeque::from(vec![
                Proposal::local(write(1, 10)),
                expiry(7, 3),
                Proposal::local(write(2, 10)),
                expiry(8, 4),
            ])
        };
        // Leading in term 4: the expiry decided in term 3 goes, the one of term 4 stays, and so
        // does every client write, in order.
        let mut q = queue();
        assert_eq!(drop_stale_duties(&mut q, Some(4)), 1);
        assert_eq!(left(&q), vec![1, 2, 1008]);
        // Deposed (a follower now): no duty is left to forward; the writes are forwarded.
        let mut q = queue();
        assert_eq!(drop_stale_duties(&mut q, None), 0);
        assert_eq!(left(&q), vec![1, 2]);
        // Still leading in term 3: its own duty stays.
        let mut q = queue();
        assert_eq!(drop_stale_duties(&mut q, Some(3)), 1);
        assert_eq!(left(&q), vec![1, 1007, 2]);
    }

    #[test]
    fn forward_groups_close_at_max_batch_commands() {
        let mut groups = ForwardGroups::default();
        let n = MAX_BATCH as u64 + 10;
        for r in 0..n {
            groups.add(write(r, 10), None, usize::MAX);
        }
        let (requests, waiters) = groups.finish();
        let shape = shape(&requests, &waiters);
        assert_eq!(shape.len(), 2);
        assert_eq!(shape[0], (true, (0..MAX_BATCH as u64).collect()));
        assert_eq!(shape[1], (true, (MAX_BATCH as u64..n).collect()));
    }

    #[test]
    fn forward_groups_close_at_their_byte_bound_and_a_larger_write_goes_alone() {
        let mut groups = ForwardGroups::default();
        // 74 bytes each against a bound of 1,000: 13 to a group.
        for r in 0..30 {
            groups.add(write(r, 10), None, 1000);
        }
        groups.add(write(30, 2000), None, 1000);
        groups.add(write(31, 10), None, 1000);
        let (requests, waiters) = groups.finish();
        assert_eq!(
            shape(&requests, &waiters),
            vec![
                (true, (0..13).collect()),
                (true, (13..26).collect()),
                (true, (26..30).collect()),
                (true, vec![30]),
                (true, vec![31]),
            ]
        );
    }

    #[test]
    fn a_write_forwarded_alone_closes_the_open_group_first() {
        let mut groups = ForwardGroups::default();
        groups.add(write(0, 10), None, usize::MAX);
        groups.add(write(1, 10), None, usize::MAX);
        groups.add_alone(write(2, 10), None);
        groups.add_alone(write(3, 10), None);
        groups.add(write(4, 10), None, usize::MAX);
        let (requests, waiters) = groups.finish();
        assert_eq!(
            shape(&requests, &waiters),
            vec![
                (true, vec![0, 1]),
                (false, vec![2]),
                (false, vec![3]),
                (true, vec![4]),
            ]
        );
        let (requests, waiters) = ForwardGroups::default().finish();
        assert!(
            requests.is_empty() && waiters.is_empty(),
            "nothing queued, nothing sent"
        );
    }
}
