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
}

/// This node's status.
pub async fn status(node: &Node) -> Status {
    let committed = node
        .raft
        .with_raft_state(|s| s.committed.map(|l| l.index))
        .await
        .ok()
        .flatten();
    let m = node.raft.metrics().borrow().clone();
    let (applied, znodes, data_bytes, sessions, watches, connections) = {
        let r = lock(&node.replica);
        (
            r.applied_index(),
            r.tree.node_count(),
            r.tree.data_bytes(),
            r.tree.session_count(),
            r.observer.watches.count(),
            r.observer.conns.len(),
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
        },
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
    /// Its admin address, when this node knows it (its own only).
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
                admin_addr: (*id == node.id).then(|| node.cfg.admin_addr.to_string()),
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
