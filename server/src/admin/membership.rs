//! Membership changes on the admin port: add a learner, promote it to voter, remove a member,
//! through openraft's joint consensus, guarded against losing quorum by mistake. Each answers
//! with the resulting membership ([`crate::admin::views::membership`]).
//!
//! One change at a time: a request waits (within its `timeout_ms`) for the leader's right to
//! change the membership, which a ZooKeeper `reconfig` or another request may hold
//! ([`crate::reconfig::ChangeRight`]), and answers `409` if it is still held then. A change of
//! the voters, once proposed, runs to its end on a task of its own while this node leads
//! ([`Node::change_membership`]): a request that times out (`504`) or whose client goes away
//! leaves it going, not half-done. (Adding a learner is one entry: nothing to leave half-done.)
//!
//! Membership changes must run on the leader: any other node answers `421 Misdirected Request`
//! naming the leader (id and peer address). openraft 0.9 has no leadership transfer, so there is
//! no endpoint for it: removing the leader makes it step down once the new membership commits,
//! and the remaining voters elect a new leader after an election timeout.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};
use serde::Deserialize;
use serde_json::json;
use synod_raft_store::NodeId;
use tokio::time::Instant as Deadline;

use crate::admin::views::{self, matched_index, CAUGHT_UP_LAG};
use crate::node::Node;
use crate::peer::PeerRequest;
use crate::reconfig::ChangeRight;

/// How long a reachability probe of a member may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Default bound on waiting for a learner to catch up or a change to commit.
const DEFAULT_CHANGE_TIMEOUT: Duration = Duration::from_secs(60);

/// An admin API error: a status and a message, optionally naming the leader.
pub struct ApiError {
    status: StatusCode,
    message: String,
    leader: Option<(NodeId, String)>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            leader: None,
        }
    }

    /// The HTTP status it answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    fn not_leader(node: &Node) -> ApiError {
        let leader = node.leader();
        let message = match &leader {
            Some((id, addr)) => format!(
                "node {} is not the leader; send this to node {id} (peer address {addr})",
                node.id
            ),
            None => format!("node {} is not the leader and no leader is known", node.id),
        };
        ApiError {
            status: StatusCode::MISDIRECTED_REQUEST,
            message,
            leader,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.leader {
            Some((id, addr)) => {
                json!({"error": self.message, "leader": {"id": id, "peer_addr": addr}})
            }
            None => json!({"error": self.message}),
        };
        (self.status, Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Maps an error of a membership call; a lost leadership names the new leader.
fn change_error(
    node: &Node,
    e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
) -> ApiError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => ApiError::not_leader(node),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => ApiError::new(
            StatusCode::CONFLICT,
            format!("membership change refused: {e}"),
        ),
        e => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("raft: {e}")),
    }
}

/// The members of `ids` that are reachable over the peer port and caught up (leader's view);
/// this node counts as both. The members are probed at once, so the answer takes at most one
/// [`PROBE_TIMEOUT`], however many are down.
pub(crate) async fn healthy(node: &Node, ids: &BTreeSet<NodeId>) -> BTreeSet<NodeId> {
    let m = node.raft.metrics().borrow().clone();
    let last = m.last_log_index.unwrap_or(0);
    let membership = m.membership_config.membership().clone();
    let mut out = BTreeSet::new();
    let mut probes = Vec::new();
    for id in ids {
        if *id == node.id {
            out.insert(*id);
            continue;
        }
        let matched = matched_index(&m, *id).unwrap_or(0);
        if last.saturating_sub(matched) > CAUGHT_UP_LAG {
            continue;
        }
        let Some(addr) = membership.get_node(id).map(|n| n.addr.clone()) else {
            continue;
        };
        probes.push(async move {
            let touch = PeerRequest::Touch(Vec::new());
            let reached = node.pool.call(*id, &addr, touch, PROBE_TIMEOUT).await;
            (*id, reached.is_ok())
        });
    }
    for (id, reached) in futures_util::future::join_all(probes).await {
        if reached {
            out.insert(id);
        }
    }
    out
}

/// Refuses (409) a change from `old` to `new` voters that could not commit or would leave the
/// cluster without a working majority: each of the two configurations of the joint change needs
/// a majority of healthy (reachable and caught-up) voters.
async fn check_quorum(
    node: &Node,
    old: &BTreeSet<NodeId>,
    new: &BTreeSet<NodeId>,
) -> ApiResult<()> {
    if new.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "refused: the cluster would have no voter left",
        ));
    }
    let all: BTreeSet<NodeId> = old.union(new).copied().collect();
    let ok = healthy(node, &all).await;
    for (name, set) in [("current", old), ("new", new)] {
        let up = set.intersection(&ok).count();
        let need = set.len() / 2 + 1;
        if up < need {
            let down: Vec<NodeId> = set.difference(&ok).copied().collect();
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "refused: only {up} of the {name} {} voters {set:?} are reachable and caught up \
                     (unhealthy: {down:?}), a majority needs {need}; pass force=true to do it anyway",
                    set.len()
                ),
            ));
        }
    }
    Ok(())
}

/// Body of `POST /members/add-learner`.
#[derive(Debug, Deserialize)]
pub struct AddLearner {
    id: NodeId,
    peer_addr: String,
    /// How long to wait for the learner to catch up (default 60000).
    timeout_ms: Option<u64>,
}

/// Body of `POST /members/promote` and `POST /members/remove`.
#[derive(Debug, Deserialize)]
pub struct ChangeOne {
    id: NodeId,
    /// Skip the quorum safety checks.
    #[serde(default)]
    force: bool,
    /// How long to wait for the change to commit (default 60000).
    timeout_ms: Option<u64>,
}

fn leader_only(node: &Node) -> ApiResult<()> {
    if node.is_leader() {
        Ok(())
    } else {
        Err(ApiError::not_leader(node))
    }
}

/// When a request's waits end: `timeout_ms` (default [`DEFAULT_CHANGE_TIMEOUT`]) from now; a
/// `timeout_ms` too large for the clock means a year.
fn deadline_of(ms: Option<u64>) -> Deadline {
    const FAR: Duration = Duration::from_secs(365 * 24 * 3600);
    let timeout = ms
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_CHANGE_TIMEOUT);
    let now = Deadline::now();
    now.checked_add(timeout.min(FAR))
        .unwrap_or(now + DEFAULT_CHANGE_TIMEOUT)
}

/// The leader's right to change the membership, waited for until `deadline`; `409` if another
/// change still holds it then.
async fn claim(node: &Node, deadline: Deadline) -> ApiResult<ChangeRight> {
    let right = node.claim_membership(deadline).await.ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "another membership change (a reconfig, another /members request, the leader ending \
             a joint configuration or rewriting /zookeeper/config) is still under way; retry \
             once GET /membership shows it done (a change that cannot commit, as without a \
             quorum, holds it until it commits or this node stops leading)",
        )
    })?;
    // Leadership may have moved while this waited.
    leader_only(node)?;
    Ok(right)
}

/// Waits briefly until this node's metrics show the membership entry at `index` or later, so
/// that the view returned reflects the change just made.
async fn settle(node: &Node, index: u64) {
    let mut rx = node.raft.metrics();
    let _ = tokio::time::timeout(Duration::from_secs(5), async move {
        while rx.borrow().membership_config.log_id().map(|l| l.index) < Some(index) {
            if rx.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
}

/// Waits for a membership call until `deadline`; then `504` (the change goes on: see the
/// module documentation).
async fn bounded<T>(
    node: &Node,
    deadline: Deadline,
    what: &str,
    call: impl std::future::Future<
        Output = Result<T, RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>>,
    >,
) -> ApiResult<T> {
    match tokio::time::timeout_at(deadline, call).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(change_error(node, e)),
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "{what} did not complete in time; it goes on (unless this node stops leading): \
                 see GET /membership"
            ),
        )),
    }
}

/// Refuses a new member whose release cannot read the cluster's state: one handshake tells its
/// protocol version, which must reach the cluster version (an unreachable node is left to
/// `add_learner` to report).
async fn refuse_older_release(node: &Node, id: u64, peer_addr: &str) -> ApiResult<()> {
    let probe = PeerRequest::Touch(Vec::new());
    if let Err(e) = node.pool.call(id, peer_addr, probe, PROBE_TIMEOUT).await {
        tracing::debug!(node = id, error = %e, "probe of a new member failed");
    }
    let cluster = crate::upgrade::cluster_version(node);
    match node.local.versions.get(id) {
        Some(speaks) if speaks < cluster => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "node {id} runs an older release (peer protocol {speaks}) than the cluster \
                 version ({cluster}): it could not read the log; run this release on it"
            ),
        )),
        _ => Ok(()),
    }
}

pub async fn add_learner(
    State(node): State<Arc<Node>>,
    Json(req): Json<AddLearner>,
) -> ApiResult<Json<views::Membership>> {
    leader_only(&node)?;
    let deadline = deadline_of(req.timeout_ms);
    if req
        .peer_addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .is_none()
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("peer_addr {:?} is not host:port", req.peer_addr),
        ));
    }
    let right = claim(&node, deadline).await?;
    {
        let m = node.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        if membership.voter_ids().any(|v| v == req.id) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("node {} is already a voter", req.id),
            ));
        }
        if let Some(n) = membership.get_node(&req.id) {
            if n.addr != req.peer_addr {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "node {} is already a learner at {}; remove it first to change its address",
                        req.id, n.addr
                    ),
                ));
            }
        }
    }
    refuse_older_release(&node, req.id, &req.peer_addr).await?;
    let started = Instant::now();
    // One entry (no joint configuration): committed, the right goes back before the catch-up,
    // which may take long.
    bounded(
        &node,
        deadline,
        "adding the learner",
        node.raft
            .add_learner(req.id, BasicNode::new(req.peer_addr.clone()), false),
    )
    .await?;
    drop(right);
    let target = node.raft.metrics().borrow().last_log_index.unwrap_or(0);
    let left = deadline.saturating_duration_since(Deadline::now());
    if !learner_caught_up(&node, req.id, left).await {
        return Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "node {} was added as a learner but has not caught up to index {target} in time; \
                 see GET /membership",
                req.id
            ),
        ));
    }
    tracing::info!(id = req.id, addr = %req.peer_addr, elapsed_ms = started.elapsed().as_millis() as u64, "learner added and caught up");
    Ok(Json(views::membership(&node)))
}

/// Waits (up to `timeout`) until learner `id` has every entry the leader had when called:
/// openraft's own "caught up" allows a lag of `replication_lag_threshold` entries (large here,
/// for snapshot transfer).
pub(crate) async fn learner_caught_up(node: &Node, id: NodeId, timeout: Duration) -> bool {
    let target = node.raft.metrics().borrow().last_log_index.unwrap_or(0);
    let mut rx = node.raft.metrics();
    let caught_up = tokio::time::timeout(timeout, async {
        loop {
            let matched = rx
                .borrow()
                .replication
                .as_ref()
                .and_then(|r| r.get(&id).copied().flatten())
                .map(|l| l.index);
            if matched >= Some(target) {
                return true;
            }
            if rx.changed().await.is_err() {
                return false;
            }
        }
    })
    .await;
    matches!(caught_up, Ok(true))
}

/// The current voters, and whether `id` is a learner.
fn voters_and_is_learner(node: &Node, id: NodeId) -> (BTreeSet<NodeId>, bool) {
    let m = node.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters = membership.voter_ids().collect();
    let is_learner = membership.learner_ids().any(|l| l == id);
    (voters, is_learner)
}

pub async fn promote(
    State(node): State<Arc<Node>>,
    Json(req): Json<ChangeOne>,
) -> ApiResult<Json<views::Membership>> {
    leader_only(&node)?;
    let deadline = deadline_of(req.timeout_ms);
    let right = claim(&node, deadline).await?;
    let (old, is_learner) = voters_and_is_learner(&node, req.id);
    if old.contains(&req.id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("node {} is already a voter", req.id),
        ));
    }
    if !is_learner {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "node {} is not a learner; add it first (POST /members/add-learner)",
                req.id
            ),
        ));
    }
    if !req.force {
        let mut new = old.clone();
        new.insert(req.id);
        if !healthy(&node, &BTreeSet::from([req.id]))
            .await
            .contains(&req.id)
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("refused: learner {} is not reachable and caught up; pass force=true to promote it anyway", req.id),
            ));
        }
        check_quorum(&node, &old, &new).await?;
    }
    let change = ChangeMembers::AddVoterIds(BTreeSet::from([req.id]));
    let done = bounded(
        &node,
        deadline,
        "the promotion",
        node.change_membership(change, false, right),
    )
    .await
    .map(|r| r.log_id.index)?;
    settle(&node, done).await;
    tracing::info!(id = req.id, "learner promoted to voter");
    Ok(Json(views::membership(&node)))
}

pub async fn remove(
    State(node): State<Arc<Node>>,
    Json(req): Json<ChangeOne>,
) -> ApiResult<Json<views::Membership>> {
    leader_only(&node)?;
    let deadline = deadline_of(req.timeout_ms);
    let right = claim(&node, deadline).await?;
    let (old, is_learner) = voters_and_is_learner(&node, req.id);
    if is_learner {
        let change = ChangeMembers::RemoveNodes(BTreeSet::from([req.id]));
        let done = bounded(
            &node,
            deadline,
            "the removal",
            node.change_membership(change, false, right),
        )
        .await?
        .log_id
        .index;
        settle(&node, done).await;
        tracing::info!(id = req.id, "learner removed");
        return Ok(Json(views::membership(&node)));
    }
    if !old.contains(&req.id) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("node {} is not a member", req.id),
        ));
    }
    let mut new = old.clone();
    new.remove(&req.id);
    if new.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "refused: the cluster would have no voter left",
        ));
    }
    if !req.force {
        check_quorum(&node, &old, &new).await?;
    }
    let change = ChangeMembers::RemoveVoters(BTreeSet::from([req.id]));
    let done = bounded(
        &node,
        deadline,
        "the removal",
        node.change_membership(change, false, right),
    )
    .await?
    .log_id
    .index;
    settle(&node, done).await;
    tracing::info!(id = req.id, "voter removed");
    Ok(Json(views::membership(&node)))
}
