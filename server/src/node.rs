//! A synod node: wires storage, Raft, the peer RPC service and the node-local state, and runs the
//! background duties: the ordered proposer (leader: propose; follower: forward to the leader),
//! batched read-index rounds, the session tracker (leader: expire; follower: report activity),
//! container/TTL reaping, and the cluster's one-time bootstrap.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, Raft, ServerState};
use synod_raft_store::log_store::LogStore;
use synod_raft_store::state_machine::{lock, SharedReplica, StateMachine};
use synod_raft_store::{Command, NodeId, Origin, TypeConfig};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::Config;
use crate::error::ServerError;
use crate::local::{Completion, Local};
use crate::peer::{
    ForwardError, PeerNetwork, PeerPool, PeerRequest, PeerResponse, PeerService, SessionTouch,
};

/// A command to propose, from this node's connections or forwarded by a follower.
enum Proposal {
    Local(Command),
    Remote(Command, oneshot::Sender<Result<(), ForwardError>>),
}

type ReadWaiter = oneshot::Sender<Result<u64, String>>;

/// Everything a connection or background task needs from its node.
pub struct Node {
    pub cfg: Config,
    pub id: NodeId,
    pub raft: Raft<TypeConfig>,
    /// The applied tree and node-local state (watches, connections, waiting requests).
    pub replica: SharedReplica<Local>,
    /// The last applied index, for readers waiting to catch up.
    pub applied: watch::Receiver<u64>,
    pub pool: PeerPool,
    proposals: mpsc::UnboundedSender<Proposal>,
    read_waiters: mpsc::UnboundedSender<ReadWaiter>,
    /// Sessions with client activity since the last tick, each with when its latest activity
    /// was (reported to, or applied by, the leader).
    touches: Mutex<HashMap<i64, Instant>>,
    next_request: AtomicU64,
    next_conn: AtomicU64,
    /// When this process started, for uptime and restart-time reporting.
    pub started: Instant,
    /// Client request counters and the live-connection registry (`srvr`, `cons`, admin API).
    pub stats: Arc<crate::stats::ServerStats>,
    /// Becomes true when the node shuts down: connections stop reading, answer what they have
    /// read and close.
    pub stopping: watch::Sender<bool>,
}

/// Timeout for calls to the leader on behalf of clients (forwarded writes, read index).
const LEADER_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node waits for another member to say how far back its event history reaches
/// (a resuming client waits meanwhile; a member that does not answer is taken as unable).
const HISTORY_CALL_TIMEOUT: Duration = Duration::from_secs(2);

impl Node {
    /// Opens storage, starts Raft and the background tasks. Listening sockets are the caller's.
    pub async fn start(cfg: Config) -> Result<Arc<Node>, ServerError> {
        let started = Instant::now();
        std::fs::create_dir_all(&cfg.data_dir)?;
        let log_store = LogStore::open(&cfg.data_dir.join("raft-log"))
            .map_err(|e| ServerError::Storage(e.to_string()))?;
        let sm = StateMachine::open(&cfg.data_dir.join("state"), Local::new(cfg.id))
            .map_err(|e| ServerError::Storage(e.to_string()))?;
        let replica = sm.replica();
        let applied = sm.applied();
        let raft_cfg = openraft::Config {
            cluster_name: "synod".into(),
            heartbeat_interval: cfg.heartbeat.as_millis() as u64,
            election_timeout_min: cfg.election_timeout.as_millis() as u64,
            election_timeout_max: 2 * cfg.election_timeout.as_millis() as u64,
            install_snapshot_timeout: 10_000,
            max_payload_entries: 1024,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_entries),
            replication_lag_threshold: cfg.snapshot_entries * 2,
            max_in_snapshot_log_to_keep: 1000,
            purge_batch_size: 256,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ServerError::Config(e.to_string()))?;
        let routes = cfg
            .peer_routes
            .iter()
            .map(|(id, a)| (*id, a.clone()))
            .collect();
        let pool = PeerPool::with_routes(crate::peer::DEFAULT_MAX_FRAME_LEN, routes);
        let raft = Raft::new(
            cfg.id,
            Arc::new(raft_cfg),
            PeerNetwork::new(cfg.id, pool.clone()),
            log_store,
            sm,
        )
        .await
        .map_err(|e| ServerError::Raft(e.to_string()))?;
        let (ptx, prx) = mpsc::unbounded_channel();
        let (rtx, rrx) = mpsc::unbounded_channel();
        let node = Arc::new(Node {
            id: cfg.id,
            cfg,
            raft,
            replica,
            applied,
            pool,
            proposals: ptx,
            read_waiters: rtx,
            touches: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            next_conn: AtomicU64::new(1),
            started,
            stats: Arc::new(crate::stats::ServerStats::default()),
            stopping: watch::channel(false).0,
        });
        tokio::spawn(proposer_loop(node.clone(), prx));
        tokio::spawn(read_index_loop(node.clone(), rrx));
        tokio::spawn(session_loop(node.clone()));
        tokio::spawn(bootstrap(node.clone()));
        tokio::spawn(report_replay(node.clone()));
        Ok(node)
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

    /// Proposes a command in order with every other proposal of this node. The outcome reaches the
    /// waiter registered for its origin (see [`Local::add_pending`]).
    pub fn propose(&self, cmd: Command) {
        let origin = cmd.origin();
        if self.proposals.send(Proposal::Local(cmd)).is_err() {
            if let Some(o) = origin {
                lock(&self.replica)
                    .observer
                    .fail_pending(o.request, "node shutting down".into());
            }
        }
    }

    /// Registers a waiter for `origin` and proposes `cmd`.
    pub fn propose_and_wait(&self, origin: Origin, cmd: Command) -> oneshot::Receiver<Completion> {
        let (tx, rx) = oneshot::channel();
        lock(&self.replica).observer.add_pending(origin.request, tx);
        self.propose(cmd);
        rx
    }

    /// Notes client activity on a session (kept alive by the leader).
    pub fn touch(&self, session_id: i64) {
        self.touched_at(session_id, Instant::now());
    }

    /// Notes activity on a session at `at` (the latest activity of a session is what counts).
    fn touched_at(&self, session_id: i64, at: Instant) {
        let mut touches = self.touches.lock().unwrap_or_else(|p| p.into_inner());
        let latest = touches.entry(session_id).or_insert(at);
        *latest = (*latest).max(at);
    }

    /// Another member whose watch-event history holds every event after `since`, if one
    /// answers within a short bound (see [`crate::local::Local::history_floor`]).
    pub async fn member_with_history(&self, since: i64) -> Option<NodeId> {
        let members: Vec<(NodeId, String)> = {
            let m = self.raft.metrics().borrow().clone();
            m.membership_config
                .membership()
                .nodes()
                .filter(|(id, _)| **id != self.id)
                .map(|(id, n)| (*id, n.addr.clone()))
                .collect()
        };
        let mut asks: FuturesUnordered<_> = members
            .into_iter()
            .map(|(id, addr)| async move {
                let r = self
                    .pool
                    .call(id, &addr, PeerRequest::HistoryFloor, HISTORY_CALL_TIMEOUT)
                    .await;
                (id, r)
            })
            .collect();
        while let Some((id, r)) = asks.next().await {
            if let Ok(PeerResponse::HistoryFloor(Some(floor))) = r {
                if floor <= since {
                    return Some(id);
                }
            }
        }
        None
    }

    /// The current leader and its peer address.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())?;
        Some((id, addr))
    }

    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        m.state == ServerState::Leader && m.current_leader == Some(self.id)
    }

    /// A linearizable read point: an index such that every write acknowledged before this call is
    /// at or below it. Calls made while a round is in flight share the next round.
    pub async fn read_index(&self) -> Result<u64, String> {
        let (tx, rx) = oneshot::channel();
        self.read_waiters
            .send(tx)
            .map_err(|_| "node shutting down".to_string())?;
        rx.await.map_err(|_| "node shutting down".to_string())?
    }

    /// Waits until this node has applied `index` (bounded).
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), String> {
        let mut rx = self.applied.clone();
        let res = tokio::time::timeout(timeout, async move {
            rx.wait_for(|a| *a >= index).await.map(|_| ())
        })
        .await;
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err("node shutting down".into()),
            Err(_) => Err(format!(
                "not caught up to log index {index} within {timeout:?}"
            )),
        }
    }

    /// A linearizable barrier: waits until this node has applied everything acknowledged before.
    pub async fn sync_barrier(&self) -> Result<(), String> {
        let idx = self.read_index().await?;
        self.wait_applied(idx, LEADER_CALL_TIMEOUT).await
    }

    async fn read_index_round(&self) -> Result<u64, String> {
        match self.leader() {
            Some((id, _)) if id == self.id => leader_read_index(&self.raft).await,
            Some((id, addr)) => match self
                .pool
                .call(id, &addr, PeerRequest::ReadIndex, LEADER_CALL_TIMEOUT)
                .await
            {
                Ok(PeerResponse::ReadIndex(Ok(i))) => Ok(i),
                Ok(PeerResponse::ReadIndex(Err(e))) => Err(e.to_string()),
                Ok(other) => Err(format!("unexpected reply to ReadIndex: {other:?}")),
                Err(e) => Err(e.to_string()),
            },
            None => Err("no leader".into()),
        }
    }

    fn fail(&self, origin: Option<Origin>, why: String) {
        if let Some(o) = origin {
            lock(&self.replica).observer.fail_pending(o.request, why);
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
/// [`MAX_INFLIGHT_BATCHES`] at a time; on a follower each is forwarded over the one peer
/// connection to the leader, written in order.
async fn proposer_loop(node: Arc<Node>, mut rx: mpsc::UnboundedReceiver<Proposal>) {
    let mut queue: std::collections::VecDeque<(Command, RemoteReply)> = Default::default();
    let mut batches: FuturesUnordered<BoxFuture<'static, ()>> = FuturesUnordered::new();
    let mut forwards: FuturesUnordered<BoxFuture<'static, ()>> = FuturesUnordered::new();
    let mut open = true;
    let split = |p: Proposal| match p {
        Proposal::Local(c) => (c, None),
        Proposal::Remote(c, tx) => (c, Some(tx)),
    };
    loop {
        tokio::select! {
            p = rx.recv(), if open => match p {
                Some(p) => queue.push_back(split(p)),
                None => open = false,
            },
            Some(()) = batches.next(), if !batches.is_empty() => {}
            Some(()) = forwards.next(), if !forwards.is_empty() => {}
            else => break,
        }
        while let Ok(p) = rx.try_recv() {
            queue.push_back(split(p));
        }
        if queue.is_empty() {
            continue;
        }
        match node.leader() {
            Some((id, _)) if id == node.id => {
                while batches.len() < MAX_INFLIGHT_BATCHES && !queue.is_empty() {
                    let mut cmds = Vec::new();
                    let mut waiters: Vec<Waiter> = Vec::new();
                    let mut bytes = 0;
                    while let Some((cmd, _)) = queue.front() {
                        if !cmds.is_empty()
                            && (cmds.len() >= synod_raft_store::types::MAX_BATCH
                                || bytes >= MAX_BATCH_BYTES)
                        {
                            break;
                        }
                        bytes += command_bytes(cmd);
                        let Some((cmd, remote)) = queue.pop_front() else {
                            break;
                        };
                        waiters.push((cmd.origin(), remote));
                        cmds.push(cmd);
                    }
                    match node.raft.client_write_ff(Command::Batch(cmds)).await {
                        Ok(responder) => {
                            let node = node.clone();
                            batches.push(
                                async move {
                                    let res = match responder.await {
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
                while let Some((cmd, remote)) = queue.pop_front() {
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
                    let pool = node.pool.clone();
                    let addr = addr.clone();
                    let mut call = Box::pin(async move {
                        pool.call(id, &addr, PeerRequest::Forward(cmd), LEADER_CALL_TIMEOUT)
                            .await
                    });
                    // The first poll enqueues the frame: do it now, so forwards keep their order.
                    let first = futures_util::poll!(&mut call);
                    let node2 = node.clone();
                    forwards.push(
                        async move {
                            let r = match first {
                                std::task::Poll::Ready(r) => r,
                                std::task::Poll::Pending => call.await,
                            };
                            let res = match r {
                                Ok(PeerResponse::Forward(r)) => r,
                                Ok(other) => {
                                    Err(ForwardError::Failed(format!("unexpected reply {other:?}")))
                                }
                                Err(e) => Err(ForwardError::Failed(e.to_string())),
                            };
                            finish(&node2, origin, None, res);
                        }
                        .boxed(),
                    );
                }
            }
            None => {
                while let Some((cmd, remote)) = queue.pop_front() {
                    finish(
                        &node,
                        cmd.origin(),
                        remote,
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

/// One read-index round at a time; waiters queued during a round share the next one.
async fn read_index_loop(node: Arc<Node>, mut rx: mpsc::UnboundedReceiver<ReadWaiter>) {
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
async fn leader_read_index(raft: &Raft<TypeConfig>) -> Result<u64, String> {
    raft.get_read_log_id()
        .await
        .map(|(read, _)| read.map(|l| l.index).unwrap_or(0))
        .map_err(|e| e.to_string())
}

/// Every tick. Leader: keeps each session's deadline (restarted for all sessions when it takes
/// over, so no session expires for the election's pause), extends it on activity reported by any
/// node, proposes CloseSession for the expired, and proposes the deletion of due container and
/// TTL nodes. Follower: reports its sessions' activity to the leader.
/// How many times per session tick the leader checks deadlines and followers send touches.
const SESSION_CHECKS: u32 = 4;

async fn session_loop(node: Arc<Node>) {
    let mut deadlines: HashMap<i64, Instant> = HashMap::new();
    let mut closing: HashMap<i64, Instant> = HashMap::new();
    let mut was_leader = false;
    // Sessions are checked (leader) and touched (followers) SESSION_CHECKS times per tick, so an
    // idle session ends within its timeout plus a fraction of a tick, not up to two ticks.
    let mut tick = tokio::time::interval(node.cfg.tick / SESSION_CHECKS);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round: u32 = 0;
    loop {
        tick.tick().await;
        round = round.wrapping_add(1);
        let touched: HashMap<i64, Instant> =
            std::mem::take(&mut *node.touches.lock().unwrap_or_else(|p| p.into_inner()));
        let leader = node.is_leader();
        if leader {
            let now = Instant::now();
            if !was_leader {
                deadlines.clear();
                closing.clear();
                tracing::info!("leading: every session's deadline restarts now");
            }
            let (sessions, due) = {
                let r = lock(&node.replica);
                let s: HashMap<i64, Duration> = r
                    .tree
                    .sessions()
                    .map(|(id, s)| (id, Duration::from_millis(s.timeout_ms.max(0) as u64)))
                    .collect();
                let due = if round.is_multiple_of(SESSION_CHECKS) {
                    r.tree.reap_candidates(crate::clock::now_ms(), 1000)
                } else {
                    Vec::new()
                };
                (s, due)
            };
            deadlines.retain(|id, _| sessions.contains_key(id));
            closing.retain(|id, _| sessions.contains_key(id));
            for (id, t) in &sessions {
                deadlines.entry(*id).or_insert(now + *t);
            }
            for (id, at) in touched {
                if let Some(t) = sessions.get(&id) {
                    // Activity earns timeout from when it happened, never from when its report
                    // arrived: a touch held up by a pause (of this node or of the follower that
                    // sent it) must not carry a session past the deadline a takeover restarted.
                    let earned = at + *t;
                    let dl = deadlines.entry(id).or_insert(earned);
                    *dl = (*dl).max(earned);
                }
            }
            for (id, dl) in &deadlines {
                let retry = closing
                    .get(id)
                    .is_none_or(|at| now.duration_since(*at) > Duration::from_secs(5));
                if *dl <= now && retry {
                    tracing::info!(session = format_args!("{id:#x}"), "session expired");
                    closing.insert(*id, now);
                    node.propose(Command::CloseSession {
                        origin: None,
                        session_id: *id,
                    });
                }
            }
            if !due.is_empty() && round.is_multiple_of(SESSION_CHECKS) {
                node.propose(Command::Reap {
                    time_ms: crate::clock::now_ms(),
                    paths: due,
                });
            }
        } else if !touched.is_empty() {
            if let Some((id, addr)) = node.leader() {
                let now = Instant::now();
                let touched: Vec<SessionTouch> = touched
                    .into_iter()
                    .map(|(session_id, at)| SessionTouch {
                        session_id,
                        idle_ms: now
                            .saturating_duration_since(at)
                            .as_millis()
                            .min(u32::MAX as u128) as u32,
                    })
                    .collect();
                let node = node.clone();
                let tick = node.cfg.tick;
                tokio::spawn(async move {
                    if let Err(e) = node
                        .pool
                        .call(id, &addr, PeerRequest::Touch(touched), tick * 4)
                        .await
                    {
                        tracing::debug!(%e, "session touch to the leader failed");
                    }
                });
            }
        }
        was_leader = leader;
    }
}

/// A fresh cluster initializes itself once a majority of its configured members answers; a node
/// that has any Raft state (a restart) never initializes again.
async fn bootstrap(node: Arc<Node>) {
    if node.cfg.join {
        tracing::info!("--join: waiting to be added to a cluster (never initializing one)");
        return;
    }
    match node.raft.is_initialized().await {
        Ok(true) => return,
        Ok(false) => {}
        Err(e) => {
            tracing::error!(%e, "cannot read raft state");
            return;
        }
    }
    let members: BTreeMap<NodeId, BasicNode> = node
        .cfg
        .members
        .iter()
        .map(|(id, addr)| (*id, BasicNode::new(addr.clone())))
        .collect();
    let majority = members.len() / 2 + 1;
    loop {
        let mut up = 1;
        for (id, addr) in node.cfg.members.iter().filter(|(id, _)| **id != node.id) {
            let probe = node
                .pool
                .call(
                    *id,
                    addr,
                    PeerRequest::Touch(Vec::new()),
                    Duration::from_millis(500),
                )
                .await;
            if probe.is_ok() {
                up += 1;
            }
        }
        if matches!(node.raft.is_initialized().await, Ok(true)) {
            return;
        }
        if up >= majority {
            match node.raft.initialize(members.clone()).await {
                Ok(()) => tracing::info!(members = members.len(), "cluster initialized"),
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => tracing::error!(%e, "cluster initialization failed"),
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Logs how long the restart took: snapshot load plus replay of the committed log.
async fn report_replay(node: Arc<Node>) {
    let committed = {
        let m = node.raft.metrics().borrow().clone();
        m.last_log_index.unwrap_or(0)
    };
    let mut rx = node.applied.clone();
    let caught_up = async move { rx.wait_for(|a| *a >= committed).await.is_ok() };
    if tokio::time::timeout(Duration::from_secs(600), caught_up)
        .await
        .unwrap_or(false)
    {
        tracing::info!(
            applied = *node.applied.borrow(),
            elapsed_ms = node.started.elapsed().as_millis() as u64,
            "state restored (snapshot + log replay)"
        );
    }
}

impl PeerService for Node {
    fn handle(&self, _from: SocketAddr, req: PeerRequest) -> BoxFuture<'static, PeerResponse> {
        let raft = self.raft.clone();
        match req {
            PeerRequest::AppendEntries(r) => {
                async move { PeerResponse::AppendEntries(raft.append_entries(r).await) }.boxed()
            }
            PeerRequest::Vote(r) => async move { PeerResponse::Vote(raft.vote(r).await) }.boxed(),
            PeerRequest::InstallSnapshot(r) => {
                async move { PeerResponse::InstallSnapshot(raft.install_snapshot(r).await) }.boxed()
            }
            PeerRequest::Forward(cmd) => {
                let (tx, rx) = oneshot::channel();
                if self.proposals.send(Proposal::Remote(cmd, tx)).is_err() {
                    return futures_util::future::ready(PeerResponse::Forward(Err(
                        ForwardError::Failed("node shutting down".into()),
                    )))
                    .boxed();
                }
                async move {
                    PeerResponse::Forward(
                        rx.await.unwrap_or_else(|_| {
                            Err(ForwardError::Failed("node shutting down".into()))
                        }),
                    )
                }
                .boxed()
            }
            PeerRequest::ReadIndex => {
                let leader = self.is_leader();
                let current = self.leader().map(|l| l.0);
                async move {
                    if !leader {
                        return PeerResponse::ReadIndex(Err(ForwardError::NotLeader {
                            leader: current,
                        }));
                    }
                    PeerResponse::ReadIndex(
                        leader_read_index(&raft).await.map_err(ForwardError::Failed),
                    )
                }
                .boxed()
            }
            PeerRequest::Touch(touches) => {
                let now = Instant::now();
                for t in touches {
                    let idle = Duration::from_millis(u64::from(t.idle_ms));
                    self.touched_at(t.session_id, now.checked_sub(idle).unwrap_or(self.started));
                }
                futures_util::future::ready(PeerResponse::Touch).boxed()
            }
            PeerRequest::HistoryFloor => {
                let floor = lock(&self.replica).observer.history_floor();
                futures_util::future::ready(PeerResponse::HistoryFloor(floor)).boxed()
            }
        }
    }
}
