//! Plain-data views of this node that every admin surface renders — the JSON API, the
//! four-letter words, the Prometheus gauges and the dashboard — so that each figure is computed
//! once: the node's [`Status`], its Raft [`Role`], the cluster's [`Membership`] (voters,
//! learners, and each member's replication progress as the leader sees it).

use std::collections::BTreeSet;

use openraft::{RaftMetrics, ServerState};
use serde::Serialize;
use synod_raft_store::state_machine::lock;
use synod_raft_store::NodeId;

use crate::node::Node;
use crate::stats::ServerSnapshot;

/// How many entries behind the leader's log a member may be and still count as caught up
/// (`mntr`'s synced followers; membership changes refuse to depend on members further behind).
pub const CAUGHT_UP_LAG: u64 = 1000;

/// A node's Raft role, as every admin surface names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    Learner,
    Shutdown,
}

impl Role {
    /// The role of a node in `state`.
    pub fn of(state: ServerState) -> Role {
        match state {
            ServerState::Leader => Role::Leader,
            ServerState::Follower => Role::Follower,
            ServerState::Candidate => Role::Candidate,
            ServerState::Learner => Role::Learner,
            ServerState::Shutdown => Role::Shutdown,
        }
    }

    /// Its name (`leader`, `follower`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Shutdown => "shutdown",
        }
    }
}

/// The last log index the leader knows member `id` holds: `None` unless `m` is a leader's
/// metrics (only the leader tracks replication); the leader itself holds its whole log.
pub fn matched_index(m: &RaftMetrics<NodeId, openraft::BasicNode>, id: NodeId) -> Option<u64> {
    let replication = m.replication.as_ref()?;
    if id == m.id {
        return Some(m.last_log_index.unwrap_or(0));
    }
    Some(
        replication
            .get(&id)
            .copied()
            .flatten()
            .map(|l| l.index)
            .unwrap_or(0),
    )
}

/// `/status`.
#[derive(Debug, Serialize)]
pub struct Status {
    /// This node's id.
    pub id: u64,
    /// Raft role.
    pub role: Role,
    /// Raft term.
    pub term: u64,
    /// The leader this node knows, if any.
    pub leader: Option<u64>,
    /// Last index in this node's Raft log.
    pub last_log_index: u64,
    /// Raft's commit index as this node knows it.
    pub committed_index: u64,
    /// Last entry applied to this node's tree (its zxid).
    pub applied_index: u64,
    /// Znodes in the tree.
    pub znodes: usize,
    /// Bytes of znode data.
    pub data_bytes: u64,
    /// Live sessions (cluster-wide, replicated).
    pub sessions: usize,
    /// Watches held by this node's connections.
    pub watches: usize,
    /// Client connections on this node.
    pub connections: usize,
    /// Voter ids.
    pub members: Vec<u64>,
    /// The cluster this node belongs to (32 hex digits), once generated or adopted.
    pub cluster_id: Option<String>,
    /// Whether this node runs `--insecure` (every port plaintext).
    pub insecure: bool,
    /// Where clients connect to this node in plaintext, if they may.
    pub client_addr: Option<String>,
    /// Where clients connect to this node over TLS, if they may.
    pub secure_client_addr: Option<String>,
    /// Where peers connect to this node (Raft).
    pub peer_addr: String,
    /// Where this admin API listens.
    pub admin_addr: String,
    /// Milliseconds since the process started.
    pub uptime_ms: u64,
    /// Server version (see `srvr`).
    pub version: String,
    /// The versions of what this node speaks and writes.
    pub formats: Formats,
    /// The cluster version of the replicated state this node has applied: which formats the
    /// cluster writes (1: release 0.1's; raised once every member runs a release that has a
    /// higher one; see docs/operations.md, "Upgrades").
    pub cluster_version: u32,
    /// On a leader whose cluster version is below its build's: the members that keep it there
    /// (they run an older release, or have not connected since this node took over). `None`
    /// elsewhere.
    pub cluster_version_held_by: Option<Vec<u64>>,
    /// On a leader: whether `/zookeeper/config` does not show the applied membership yet
    /// (the leader is about to rewrite it; a `reconfig` meanwhile gets ReconfigInProgress).
    pub zookeeper_config_pending: bool,
    /// Whether this node is cut off from the quorum (no leader known, as leader no quorum's
    /// acknowledgement, or as follower or learner no answer from a majority of the voters, for
    /// 2 s or more): it has closed its replicated sessions' connections and accepts none
    /// ([`crate::cut_off`]).
    pub cut_off: bool,
    /// Whether this node, cut off from the quorum, serves read-only clients now
    /// (`--read-only-mode`).
    pub read_only: bool,
    /// Client request counters of this node (rates and latency are derived from two samples).
    pub requests: ServerSnapshot,
}

/// The versions of the formats a node speaks and writes (a peer or a file of another version is
/// refused with both named).
#[derive(Debug, Clone, Serialize)]
pub struct Formats {
    /// The peer protocol (its handshake carries it).
    pub peer_protocol: u32,
    /// The snapshot file's envelope.
    pub snapshot: u32,
    /// The backup's envelope.
    pub backup: u32,
    /// The Raft log store's layout.
    pub log: u32,
    /// The highest cluster version (log entries, snapshot data) this build applies.
    pub cluster_version: u32,
}

/// How long `/status` waits for the Raft core's answer (its committed index).
const CORE_QUESTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// This node's status.
pub async fn status(node: &Node) -> Status {
    // Asked of the Raft core, which may be inside a sync of a stalled disk: `/status` and
    // `/metrics` answer without it then (the committed index shown is the applied one) rather
    // than hang with the disk.
    let committed = tokio::time::timeout(
        CORE_QUESTION_TIMEOUT,
        node.raft.with_raft_state(|s| s.committed.map(|l| l.index)),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .flatten();
    let m = node.raft.metrics().borrow().clone();
    let (applied, znodes, data_bytes, sessions, watches, connections, cluster_version) = {
        let r = lock(&node.replica);
        (
            r.applied_index(),
            r.tree.node_count(),
            r.tree.data_bytes(),
            r.tree.session_count(),
            r.observer.watches.count(),
            r.observer.conns.len(),
            r.tree.cluster_version(),
        )
    };
    Status {
        id: node.id,
        role: Role::of(m.state),
        term: m.current_term,
        leader: m.current_leader,
        last_log_index: m.last_log_index.unwrap_or(0),
        // Raft's own commit index (ahead of `applied_index` while entries wait to be applied).
        committed_index: committed.unwrap_or(0).max(applied),
        applied_index: applied,
        znodes,
        data_bytes,
        sessions,
        watches,
        connections,
        members: m.membership_config.membership().voter_ids().collect(),
        cluster_id: node.local.cluster.get().map(|c| c.to_string()),
        insecure: node.cfg.insecure,
        client_addr: node.cfg.client_addr.map(|a| a.to_string()),
        secure_client_addr: node.cfg.secure_client_addr.map(|a| a.to_string()),
        peer_addr: node.cfg.peer_addr.to_string(),
        admin_addr: node.cfg.admin_addr.to_string(),
        uptime_ms: node.started.elapsed().as_millis() as u64,
        version: crate::admin::fourletter::version(),
        formats: Formats {
            peer_protocol: crate::peer::transport::PROTOCOL_VERSION,
            snapshot: synod_raft_store::snapshot::SNAPSHOT.version,
            backup: synod_raft_store::backup::BACKUP.version,
            log: synod_raft_store::log_store::LOG_FORMAT,
            cluster_version: synod_raft_store::types::CLUSTER_VERSION,
        },
        cluster_version,
        cluster_version_held_by: (node.is_leader()
            && cluster_version < synod_raft_store::types::CLUSTER_VERSION)
            .then(|| {
                crate::upgrade::holding_back(node)
                    .into_iter()
                    .map(|(id, _)| id)
                    .collect()
            }),
        zookeeper_config_pending: node.is_leader() && crate::reconfig::config_pending(node),
        cut_off: node.cut_off.active(),
        read_only: node.read_only.active(),
        requests: node.stats.snapshot(),
    }
}

/// One member of the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    /// The member's node id.
    pub id: u64,
    /// Its peer (Raft) address.
    pub peer_addr: String,
    /// Where its clients reach it (its `--advertise-client-addr`), when known: the answering
    /// node's own, and every other member's that answered a description request in time.
    pub client_addr: Option<String>,
    /// Where operators reach its admin port (its `--advertise-admin-addr`), when known (as
    /// `client_addr`).
    pub admin_addr: Option<String>,
    /// Voter (true) or learner (false).
    pub voter: bool,
    /// `leader`, `follower` (a voter) or `learner`, as this node sees the cluster.
    pub role: Role,
    /// Whether this entry is the node answering.
    pub this_node: bool,
    /// The last log index the leader knows this member holds (leader's view only).
    pub matched_index: Option<u64>,
    /// How many entries the member is behind the leader's log (leader's view only).
    pub lag: Option<u64>,
    /// The peer protocol version it spoke in its latest handshake with the answering node
    /// (the answering node's own for itself; `None`: none yet). Below the cluster version, it
    /// runs a release that cannot read the log.
    pub protocol: Option<u32>,
}

/// `/members` (and its older name `/membership`): the effective membership as this node sees
/// it, with replication progress from the leader's view.
#[derive(Debug, Clone, Serialize)]
pub struct Membership {
    /// The node answering.
    pub node: u64,
    /// The leader it knows.
    pub leader: Option<u64>,
    /// Whether the answering node leads: only then are `matched_index` and `lag` known.
    pub is_leader_view: bool,
    /// The answering node's last log index.
    pub last_log_index: u64,
    /// Log index of the membership entry in effect.
    pub log_index: Option<u64>,
    /// Milliseconds since a quorum last acknowledged the leader (leader only).
    pub millis_since_quorum_ack: Option<u64>,
    /// Whether a membership change (joint consensus) is in progress.
    pub joint: bool,
    /// Every member (voters and learners), by id.
    pub members: Vec<Member>,
}

/// How long `/members` waits for another member's description.
const DESCRIBE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// [`membership`], with every other member's advertised client and admin addresses, asked of it
/// over the peer port (all at once, each bounded by [`DESCRIBE_TIMEOUT`]; a member of a release
/// without descriptions, or one that does not answer, is left without them).
pub async fn membership_described(node: &Node) -> Membership {
    use crate::peer::{PeerRequest, PeerResponse};
    let mut m = membership(node);
    let asks = m.members.iter().enumerate().filter_map(|(i, member)| {
        let describes = member.protocol.is_some_and(|p| p >= 2);
        (!member.this_node && describes).then(|| {
            let (id, addr) = (member.id, member.peer_addr.clone());
            async move {
                let answer = node
                    .pool
                    .call(id, &addr, PeerRequest::Describe, DESCRIBE_TIMEOUT)
                    .await;
                (i, answer)
            }
        })
    });
    for (i, answer) in futures_util::future::join_all(asks).await {
        if let (Ok(PeerResponse::Describe(d)), Some(member)) = (answer, m.members.get_mut(i)) {
            member.client_addr = Some(d.client_addr);
            member.admin_addr = Some(d.admin_addr);
        }
    }
    m
}

/// The cluster's members as this node sees them.
pub fn membership(node: &Node) -> Membership {
    let m = node.raft.metrics().borrow().clone();
    let stored = m.membership_config.clone();
    let membership = stored.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let last = m.last_log_index.unwrap_or(0);
    let members = membership
        .nodes()
        .map(|(id, n)| {
            let voter = voters.contains(id);
            let matched = matched_index(&m, *id);
            Member {
                id: *id,
                peer_addr: n.addr.clone(),
                client_addr: (*id == node.id).then(|| node.cfg.advertise_client_addr.clone()),
                admin_addr: (*id == node.id).then(|| node.cfg.advertise_admin_addr.clone()),
                voter,
                role: if m.current_leader == Some(*id) {
                    Role::Leader
                } else if voter {
                    Role::Follower
                } else {
                    Role::Learner
                },
                this_node: *id == node.id,
                matched_index: matched,
                lag: matched.map(|i| last.saturating_sub(i)),
                protocol: if *id == node.id {
                    Some(crate::peer::transport::PROTOCOL_VERSION)
                } else {
                    node.local.versions.get(*id)
                },
            }
        })
        .collect();
    Membership {
        node: node.id,
        leader: m.current_leader,
        is_leader_view: m.replication.is_some(),
        last_log_index: last,
        log_index: stored.log_id().map(|l| l.index),
        millis_since_quorum_ack: m.millis_since_quorum_ack,
        joint: membership.get_joint_config().len() > 1,
        members,
    }
}
