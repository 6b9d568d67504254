//! The admin HTTP endpoints (axum): `/health` (the process is up) and `/status` (this node's view
//! of the cluster and its state, as JSON).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use synod_raft_store::state_machine::lock;

use crate::node::Node;

/// `/status`.
#[derive(Debug, Serialize)]
pub struct Status {
    pub id: u64,
    pub role: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub last_log_index: u64,
    pub committed_index: u64,
    pub applied_index: u64,
    pub znodes: usize,
    pub data_bytes: u64,
    pub sessions: usize,
    pub watches: usize,
    pub connections: usize,
    pub members: Vec<u64>,
    pub client_addr: String,
    pub uptime_ms: u64,
}

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
            r.observer.connection_count(),
        )
    };
    let role = match m.state {
        openraft::ServerState::Leader => "leader",
        openraft::ServerState::Follower => "follower",
        openraft::ServerState::Candidate => "candidate",
        openraft::ServerState::Learner => "learner",
        openraft::ServerState::Shutdown => "shutdown",
    };
    Status {
        id: node.id,
        role: role.to_string(),
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
        client_addr: node.cfg.client_addr.to_string(),
        uptime_ms: node.started.elapsed().as_millis() as u64,
    }
}

pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route(
            "/status",
            get(|State(node): State<Arc<Node>>| async move { Json(status(&node).await) }),
        )
        .with_state(node)
}
