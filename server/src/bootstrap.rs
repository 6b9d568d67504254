//! Starting a node: opens its storage, starts Raft, builds the [`Node`] and spawns its
//! background duties (proposer, read-index batcher, session tracker); a fresh cluster is
//! initialized by its lowest-id member (which generates the cluster id) once a majority of the
//! configured members answers, and a restart logs how long restoring its state took.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, Raft};
use synod_raft_store::audit::AuditStore;
use synod_raft_store::log_store::LogStore;
use synod_raft_store::state_machine::{lock, StateMachine};
use synod_raft_store::NodeId;
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::data_dir::ClusterIdCell;
use crate::error::ServerError;
use crate::node::Node;
use crate::peer::{LocalPeer, PeerNetwork, PeerPool, PeerRequest, PeerResponse, PeerTls};
use crate::pipeline::apply::Applier;
use crate::pipeline::read_index::VoteAsking;
use crate::session::tracker::Touches;

/// Opens storage, starts Raft and the background tasks. Listening sockets are the caller's.
pub async fn start(cfg: Config) -> Result<Arc<Node>, ServerError> {
    let started = Instant::now();
    crate::data_dir::make_private(&cfg.data_dir)?;
    // Before any storage is opened: a data dir of another node is refused untouched.
    let cluster = Arc::new(ClusterIdCell::open(&cfg.data_dir, cfg.id)?);
    let local = Arc::new(LocalPeer {
        node_id: cfg.id,
        cluster,
        tls: cfg
            .peer_tls
            .as_ref()
            .map(|files| PeerTls::for_node(files, cfg.id))
            .transpose()?,
        versions: Default::default(),
    });
    let log_store = LogStore::open(&cfg.data_dir.join("raft-log"))
        .map_err(|e| storage_error(&cfg, "the raft log (raft-log)", e))?;
    let audit = match cfg.audit {
        crate::config::AuditMode::On => Some(
            AuditStore::open(&cfg.data_dir.join("audit"))
                .map_err(|e| ServerError::Storage(format!("audit trail: {e}")))?,
        ),
        crate::config::AuditMode::Off => {
            tracing::warn!("--audit off: no change is recorded (for measuring only)");
            None
        }
    };
    let sm = StateMachine::open(
        &cfg.data_dir.join("state"),
        Applier::new(cfg.id),
        audit.clone(),
    )
    .map_err(|e| storage_error(&cfg, "the state machine (state)", e))?;
    let replica = sm.replica();
    let applied = sm.applied();
    let snapshot_installs = lock(&replica).observer.installs.subscribe();
    let raft_cfg = openraft::Config {
        cluster_name: "synod".into(),
        heartbeat_interval: cfg.heartbeat.as_millis() as u64,
        election_timeout_min: cfg.election_timeout.as_millis() as u64,
        election_timeout_max: 2 * cfg.election_timeout.as_millis() as u64,
        install_snapshot_timeout: 10_000,
        // At most 128 entries per AppendEntries: an entry is a whole group-commit batch (up
        // to 20 KiB at 100 writes of 100 bytes), so 1,024 made a catch-up message of ~20 MiB,
        // held decoded and encoded at once. Measured on a 3-node cluster holding 100,000
        // znodes, bringing an empty learner up: 1,024 peaked at 240-251 MiB RSS on the leader
        // and 256-274 MiB on the learner and took 1.5 s; 128 peaked at 119-124 and 120-134 MiB
        // and took 0.7-0.9 s. Live replication sends what is new, far fewer than 128.
        max_payload_entries: 128,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_entries),
        replication_lag_threshold: cfg.snapshot_entries * 2,
        max_in_snapshot_log_to_keep: 1000,
        purge_batch_size: 256,
        ..Default::default()
    }
    .validate()
    .map_err(|e| ServerError::Config(e.to_string()))?;
    let saved_vote = log_store.saved_vote();
    let log_memory = log_store.memory();
    let routes = cfg
        .peer_routes
        .iter()
        .map(|(id, a)| (*id, a.clone()))
        .collect();
    let pool = PeerPool::with_routes(local.clone(), crate::peer::DEFAULT_MAX_FRAME_LEN, routes);
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
    let disk = crate::disk::DiskGuard::new(&cfg.data_dir, cfg.min_free_space);
    disk.spawn();
    let node = Arc::new_cyclic(|this| Node {
        this: this.clone(),
        id: cfg.id,
        cfg,
        raft,
        saved_vote,
        log_memory,
        replica,
        applied,
        snapshot_installs,
        audit,
        pool,
        local,
        proposals: ptx,
        read_waiters: rtx,
        vote_asking: VoteAsking::default(),
        touches: Touches::default(),
        next_request: AtomicU64::new(1),
        next_conn: AtomicU64::new(1),
        started,
        stats: Arc::new(crate::stats::ServerStats::default()),
        disk,
        stopping: watch::channel(false).0,
        version_current: Default::default(),
        reconfigs: Default::default(),
        backup_download: Arc::new(tokio::sync::Semaphore::new(1)),
        read_only: Default::default(),
        cut_off: Default::default(),
    });
    tokio::spawn(crate::pipeline::proposer::proposer_loop(node.clone(), prx));
    tokio::spawn(crate::pipeline::read_index::read_index_loop(
        node.clone(),
        rrx,
    ));
    tokio::spawn(crate::session::reaper::session_loop(node.clone()));
    tokio::spawn(initialize_cluster(node.clone()));
    tokio::spawn(report_replay(node.clone()));
    tokio::spawn(stop_on_fatal(node.clone()));
    tokio::spawn(crate::admin::audit::retention_loop(node.clone()));
    tokio::spawn(crate::pipeline::read_audit::flush_loop(node.clone()));
    tokio::spawn(crate::upgrade::cluster_version_loop(node.clone()));
    tokio::spawn(crate::reconfig::sync::config_sync_loop(node.clone()));
    tokio::spawn(crate::cut_off::cut_off_loop(node.clone()));
    tokio::spawn(crate::cut_off::probe_loop(node.clone()));
    Ok(node)
}

/// A store that does not open: a damaged one says so and how to recover (never by deleting the
/// damaged file: a voter must not come back with less than it acknowledged).
fn storage_error(cfg: &Config, what: &str, e: synod_raft_store::error::StoreError) -> ServerError {
    if e.is_damaged_file() {
        ServerError::Storage(format!(
            "{what} in {} is damaged: {e}. This node will not start on it; rebuild it from its \
             peers (docs/operations.md, \"Disk faults and damaged data\")",
            cfg.data_dir.display()
        ))
    } else {
        ServerError::Storage(format!("{what}: {e}"))
    }
}

/// The exit status of a node that stopped because its storage failed (sysexits' EX_IOERR): a
/// service manager restarts it (`Restart=on-failure`), and it starts again from what is on disk.
pub const EXIT_STORAGE_FAILED: i32 = 74;

/// Fail-stop. When Raft stops by itself — its storage failed: an append, a vote or a snapshot
/// could not be made durable (fsync's EIO, a full disk) or a stored value did not read back —
/// the process exits at once with [`EXIT_STORAGE_FAILED`] instead of lingering without Raft.
/// Nothing is acknowledged past the failure: openraft reports an append done only once it is
/// synced ([`synod_raft_store::log_store`]), and the entry the failed write held was never
/// acknowledged by this node. A deliberate shutdown (`Fatal::Stopped`) is not a failure.
async fn stop_on_fatal(node: Arc<Node>) {
    let mut metrics = node.raft.metrics();
    loop {
        let failed = match &metrics.borrow_and_update().running_state {
            Err(openraft::error::Fatal::Stopped) | Ok(()) => None,
            Err(fatal) => Some(fatal.to_string()),
        };
        if let Some(why) = failed {
            tracing::error!(error = %why, "raft stopped on a storage failure: exiting (fail-stop)");
            eprintln!("synod: raft stopped on a storage failure: {why}");
            std::process::exit(EXIT_STORAGE_FAILED);
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// A fresh cluster is initialized by its lowest-id configured member once a majority of the
/// members answers (as `cockroach init` is run on one node): that member generates the cluster
/// id and records it before it probes the others, then initializes Raft; the others adopt the
/// id from its first connection (its probes) and are brought in by its first election. A node
/// that has any Raft state (a restart) never initializes again; if its cluster has no id yet (it
/// was restored from a backup, or its data predates cluster ids), see [`name_cluster`].
async fn initialize_cluster(node: Arc<Node>) {
    if node.cfg.join {
        tracing::info!("--join: waiting to be added to a cluster (never initializing one)");
        return;
    }
    match node.raft.is_initialized().await {
        Ok(true) => return name_cluster(node).await,
        Ok(false) => {}
        Err(e) => {
            tracing::error!(%e, "cannot read raft state");
            return;
        }
    }
    let first = node.cfg.members.keys().next().copied();
    if first != Some(node.id) {
        tracing::debug!(bootstrapper = ?first, "waiting for the lowest-id member to initialize the cluster");
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
    // Recorded before the first probe, so that every connection from here on carries it.
    match node.local.cluster.get_or_generate() {
        Ok(id) => tracing::info!(cluster_id = %id, "bootstrapping a cluster"),
        Err(e) => {
            tracing::error!(%e, "cannot record a cluster id; not initializing");
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

/// How often a member of a cluster without an id asks the others for theirs.
const NAMING_INTERVAL: Duration = Duration::from_secs(1);

/// Gives an initialized cluster that has no cluster id one (a cluster restored from a backup, or
/// whose data predates cluster ids). Every member without an id asks the others every
/// [`NAMING_INTERVAL`] and adopts an id one of them answers with; once every other member has
/// answered without one, the lowest-id member of the current configuration generates it, and
/// the others adopt it from their next round. While a member is unreachable nothing is generated, so that an id it may
/// already hold is not contradicted.
async fn name_cluster(node: Arc<Node>) {
    while node.local.cluster.get().is_none() {
        let members: Vec<(NodeId, String)> = {
            let metrics = node.raft.metrics();
            let m = metrics.borrow();
            m.membership_config
                .membership()
                .nodes()
                .map(|(id, n)| (*id, n.addr.clone()))
                .collect()
        };
        let mut answered = 0;
        for (id, addr) in members.iter().filter(|(id, _)| *id != node.id) {
            let probe = node
                .pool
                .call(*id, addr, PeerRequest::Touch(Vec::new()), NAMING_INTERVAL)
                .await;
            // A member that knows the id tells it in its answer (its connection's hello may
            // predate the id, so the hello alone does not carry it).
            if let Ok(PeerResponse::Touch(Some(theirs))) = &probe {
                if let Err(e) = node.local.cluster.accept(Some(*theirs)) {
                    tracing::warn!(%e, "cannot adopt the cluster id");
                }
            }
            answered += usize::from(probe.is_ok());
        }
        let lowest = members.iter().map(|(id, _)| *id).min();
        if node.local.cluster.get().is_none()
            && lowest == Some(node.id)
            && answered + 1 == members.len()
        {
            match node.local.cluster.get_or_generate() {
                // The pool replaces the connections whose hello said "no id".
                Ok(id) => tracing::info!(cluster_id = %id, "named a cluster that had no id"),
                Err(e) => tracing::warn!(%e, "cannot name the cluster"),
            }
        }
        tokio::time::sleep(NAMING_INTERVAL).await;
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
