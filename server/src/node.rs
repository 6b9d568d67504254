//! A synod node ([`Node`]): what every connection, background duty and admin view shares —
//! configuration, Raft, the replica (the applied tree and this node's [`Applier`] state), the
//! peer pool, and the inputs of the proposer, the read-index batcher and the session tracker.
//! [`crate::bootstrap::start`] wires it and spawns the duties; each duty lives in its own file
//! (see the map in `lib.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use openraft::{Raft, ServerState, Vote};
use synod_raft_store::log_store::{LogMemory, SavedVote};
use synod_raft_store::state_machine::{lock, SharedReplica};
use synod_raft_store::{Command, NodeId, Origin, TypeConfig};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::Config;
use crate::error::ReadIndexError;
use crate::peer::{ForwardError, LocalPeer, PeerPool, PeerRequest, PeerResponse};
use crate::pipeline::apply::Applier;
use crate::pipeline::write_order::{Queued, Route, WriteOrder};
use crate::session::tracker::Touches;
use crate::stats::ConnStats;

/// A command for the proposer, from this node's connections or forwarded by a follower.
pub struct Proposal {
    /// What to propose.
    pub what: Proposed,
    /// Where the outcome goes: `None` for this node's own commands (it reaches the waiter
    /// registered for the command's origin in [`crate::pipeline::pending::Pending`]), the
    /// follower's answer channel for a forwarded one or group.
    pub reply: Option<oneshot::Sender<Result<(), ForwardError>>>,
    /// When it was proposed: the start of its `propose_queue` stage.
    pub at: std::time::Instant,
    /// A leader's duty (a session expiry, a reap, a raise of the cluster version): the term in
    /// which this node led when it decided it. It is proposed only while this node leads in
    /// that term, and never forwarded: a deposed leader's expiry rests on deadlines that its
    /// successor restarted at its takeover (docs/design.md §6, "Sessions"), so it is dropped.
    /// `None` for everything else.
    pub duty_of_term: Option<u64>,
    /// The order it is kept in ([`crate::pipeline::write_order`]), counting it as queued until
    /// the proposer admits or refuses it: for one of this node's own commands, the order of
    /// the client connection that sent it; for a forwarded one, the order of the peer
    /// connection it came on. `None` for a command no connection sent.
    pub order: Option<Queued>,
}

/// What a [`Proposal`] carries.
pub enum Proposed {
    /// One command: this node's own, or one a follower forwarded alone
    /// ([`crate::peer::PeerRequest::Forward`]).
    One(Command),
    /// The commands a follower forwarded together
    /// ([`crate::peer::PeerRequest::ForwardGroup`]): the leader puts them in one batch entry,
    /// in this order, so that the entry's outcome is the answer for all of them.
    /// Invariant: 1 ..= [`synod_raft_store::types::MAX_BATCH`] commands, none a batch (the peer
    /// service refuses any other group before it gets here).
    Group(Vec<Command>),
}

impl Proposed {
    /// How many commands it holds.
    pub fn count(&self) -> usize {
        match self {
            Proposed::One(_) => 1,
            Proposed::Group(cmds) => cmds.len(),
        }
    }
}

impl Proposal {
    /// A command of this node's own.
    pub fn local(cmd: Command) -> Proposal {
        Proposal {
            what: Proposed::One(cmd),
            reply: None,
            at: std::time::Instant::now(),
            duty_of_term: None,
            order: None,
        }
    }

    /// A command a client connection of this node sent, kept in that connection's `order`.
    pub fn in_order(cmd: Command, order: &Arc<WriteOrder>) -> Proposal {
        Proposal {
            order: Some(order.queue()),
            ..Proposal::local(cmd)
        }
    }

    /// A duty this node decided as the leader of `term` (see [`Proposal::duty_of_term`]).
    pub fn duty(cmd: Command, term: u64) -> Proposal {
        Proposal {
            duty_of_term: Some(term),
            ..Proposal::local(cmd)
        }
    }

    /// A command the leader proposes for a task of its own that waits for it (a `reconfig`'s
    /// new configuration), in no connection's order; the outcome goes to `reply`.
    pub fn remote(cmd: Command, reply: oneshot::Sender<Result<(), ForwardError>>) -> Proposal {
        Proposal {
            what: Proposed::One(cmd),
            reply: Some(reply),
            at: std::time::Instant::now(),
            duty_of_term: None,
            order: None,
        }
    }

    /// A command, or commands together, that a follower forwarded on a peer connection whose
    /// forwards keep `order`; the one outcome goes to `reply`.
    pub fn forwarded(
        what: Proposed,
        reply: oneshot::Sender<Result<(), ForwardError>>,
        order: &Arc<WriteOrder>,
    ) -> Proposal {
        debug_assert!(
            (1..=synod_raft_store::types::MAX_BATCH).contains(&what.count()),
            "a forwarded group holds 1 ..= MAX_BATCH commands"
        );
        Proposal {
            what,
            reply: Some(reply),
            at: std::time::Instant::now(),
            duty_of_term: None,
            order: Some(order.queue()),
        }
    }
}

/// Where a read-index round's result goes.
pub type ReadWaiter = oneshot::Sender<Result<u64, ReadIndexError>>;

/// Everything a connection or background task needs from its node.
pub struct Node {
    /// This node itself, for work a peer request starts that outlives the call
    /// ([`Node::self_arc`]).
    pub(crate) this: std::sync::Weak<Node>,
    /// The configuration it was started with.
    pub cfg: Config,
    /// Its Raft id.
    pub id: NodeId,
    /// Its Raft instance.
    pub raft: Raft<TypeConfig>,
    /// The vote its log store last made durable: what this node, as a follower, offers the
    /// leader as the witness of a linearizable read (with its own read-point request, or when
    /// the leader asks for it), read without a trip into the Raft core
    /// ([`crate::pipeline::read_index`]).
    pub saved_vote: SavedVote,
    /// What the log's RocksDB holds in memory, for `/metrics` (it does not keep the log open).
    pub log_memory: LogMemory,
    /// The applied tree and node-local state (watches, connections, waiting requests, event
    /// history), under one lock that apply holds for a whole batch of entries.
    pub replica: SharedReplica<Applier>,
    /// The last applied index, for readers waiting to catch up.
    pub applied: watch::Receiver<u64>,
    /// How many snapshots replaced this node's state ([`Applier::installs`]). A batch entry this
    /// node proposed as leader and a snapshot then covered may never be answered: openraft
    /// answers an entry's proposer when it applies the entry or truncates it, and a deposed
    /// leader that installs a snapshot past its log's end does neither. So the proposer fails
    /// its batches in flight at each install (their outcome unknown), or they would hold its
    /// places for batches in flight for good.
    pub snapshot_installs: watch::Receiver<u64>,
    /// The audit trail's records (`None` with `--audit off`); apply writes them, the admin
    /// port reads them.
    pub audit: Option<synod_raft_store::audit::AuditStore>,
    /// Connections to the other members.
    pub pool: PeerPool,
    /// Who this node is on the peer port (id, cluster id, TLS), shared with `pool`.
    pub local: Arc<LocalPeer>,
    /// The proposer's input ([`crate::pipeline::proposer`]).
    pub(crate) proposals: mpsc::UnboundedSender<Proposal>,
    /// The read-index batcher's input ([`crate::pipeline::read_index`]).
    pub(crate) read_waiters: mpsc::UnboundedSender<ReadWaiter>,
    /// As the leader, which followers to ask first for their saved votes, and how long to wait
    /// for them before asking the rest ([`crate::pipeline::read_index`]).
    pub(crate) vote_asking: crate::pipeline::read_index::VoteAsking,
    /// Client activity since the last tick, for the session tracker ([`crate::session`]).
    pub(crate) touches: Touches,
    /// The next request number of a command this node proposes (its [`Origin`]).
    pub(crate) next_request: AtomicU64,
    /// The next client connection id.
    pub(crate) next_conn: AtomicU64,
    /// When this process started, for uptime and restart-time reporting.
    pub started: Instant,
    /// Client request counters (`srvr`, `mntr`, admin API).
    pub stats: Arc<crate::stats::ServerStats>,
    /// The data directory's free space and whether writes are refused for it.
    pub disk: Arc<crate::disk::DiskGuard>,
    /// Becomes true when the node shuts down: connections stop reading, answer what they have
    /// read and close.
    pub stopping: watch::Sender<bool>,
    /// Set once the applied state has reached this build's cluster version (it never goes
    /// back): from then on nothing of [`crate::upgrade`] is checked on the write path.
    pub(crate) version_current: std::sync::atomic::AtomicBool,
    /// One membership change at a time, and members' client addresses ([`crate::reconfig`]).
    pub(crate) reconfigs: crate::reconfig::Reconfigs,
    /// One backup download at a time (`GET /snapshot`): each writes a copy of the snapshot to
    /// the state directory, held until its download ends, so retried or parallel downloads
    /// could fill the data disk ([`crate::admin::snapshot`]).
    pub(crate) backup_download: Arc<tokio::sync::Semaphore>,
    /// Whether this node, cut off from the quorum, serves read-only clients
    /// ([`crate::read_only`]).
    pub read_only: crate::read_only::ReadOnly,
    /// Whether this node is cut off from the quorum, and so serves no replicated session
    /// ([`crate::cut_off`]).
    pub cut_off: crate::cut_off::CutOff,
}

impl Node {
    /// This node as an `Arc` (`None` once it is being dropped).
    pub fn self_arc(&self) -> Option<Arc<Node>> {
        self.this.upgrade()
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// A fresh origin for a command this node proposes.
    pub fn origin(&self) -> Origin {
        Origin {
            node: self.id,
            request: self.next_request.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Notes client activity on a session now (kept alive by the leader).
    pub fn touch(&self, session_id: i64) {
        self.touch_at(session_id, Instant::now());
    }

    /// Notes client activity on a session at `at`, a moment just read from the clock.
    pub fn touch_at(&self, session_id: i64, at: Instant) {
        self.touches.touch(session_id, at);
    }

    /// The current leader and its peer address.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        self.leader_route()
            .map(|(route, addr)| (route.leader, addr))
    }

    /// The current leader with the term the metrics show it leading in (the route's `link` 0:
    /// the proposer sets a follower's), and its peer address.
    pub fn leader_route(&self) -> Option<(Route, String)> {
        // Read in place (the proposer asks once per batch): a clone of the metrics would copy
        // their replication map.
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let leader = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())?;
        let route = Route {
            leader,
            term: m.current_term,
            link: 0,
        };
        Some((route, addr))
    }

    /// Completes once this node's Raft metrics name a leader other than `id` (never while they
    /// name none, or `id`): a call to `id` raced against it is abandoned once another leads.
    /// The future borrows nothing.
    pub fn another_leader_than(
        &self,
        id: NodeId,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut metrics = self.raft.metrics();
        async move {
            // Err: the Raft instance is gone, and with it any other leader.
            if metrics
                .wait_for(|m| m.current_leader.is_some_and(|l| l != id))
                .await
                .is_err()
            {
                std::future::pending::<()>().await;
            }
        }
    }

    /// The voters of the configuration the metrics show — one set, or two while a change is
    /// joint — each with its peer address (a voter the membership names no address for is left
    /// out). The metrics may lag behind the Raft core: a shortcut's guide, never a safety check.
    pub fn voters_seen(&self) -> Vec<Vec<(NodeId, String)>> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        membership
            .get_joint_config()
            .iter()
            .map(|voters| {
                voters
                    .iter()
                    .filter_map(|id| Some((*id, membership.get_node(id)?.addr.clone())))
                    .collect()
            })
            .collect()
    }

    /// Asks node `id` at `addr` for the vote its log store last made durable
    /// ([`PeerRequest::SavedVote`], answered without its Raft core, which may be syncing an
    /// append), within `timeout`: `Some(vote)` once it answered (`vote` is `None` if it never
    /// saved one), `None` if it did not. The future borrows nothing.
    pub fn ask_saved_vote(
        &self,
        id: NodeId,
        addr: String,
        timeout: std::time::Duration,
    ) -> impl std::future::Future<Output = Option<Option<Vote<NodeId>>>> + Send + 'static {
        let pool = self.pool.clone();
        async move {
            match pool.call(id, &addr, PeerRequest::SavedVote, timeout).await {
                Ok(PeerResponse::SavedVote(vote)) => Some(vote),
                _ => None,
            }
        }
    }

    pub fn is_leader(&self) -> bool {
        self.leading_term().is_some()
    }

    /// The term in which this node leads now; `None` unless it leads.
    pub fn leading_term(&self) -> Option<u64> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        (m.state == ServerState::Leader && m.current_leader == Some(self.id))
            .then_some(m.current_term)
    }

    /// The counters of every client connection on this node, by connection id (copied outside
    /// the replica lock).
    pub fn connections(&self) -> Vec<Arc<ConnStats>> {
        lock(&self.replica).observer.conns.stats()
    }
}
