//! The leader keeps `/zookeeper/config` showing the applied membership: after a change made on
//! the admin port (or by a reconfig that failed half-way), after an election, and once the
//! cluster version first allows it, it writes the membership there with a [`Command::Config`]
//! entry of its own. It never runs while another holds the node's right to change the
//! membership (a reconfig, an admin request: [`super::ChangeRight`]).
//!
//! It also leaves a joint configuration nobody is finishing. openraft changes the membership
//! in two entries (the joint configuration, then the new one alone) from the leader that was
//! asked; a leader that dies or loses its office between them leaves the cluster in the joint
//! configuration, where it would stay: every later change (`/members/...`, `reconfig`) waits
//! for it to end, and `/zookeeper/config` is not rewritten. A leader that finds a committed
//! joint configuration still in effect after [`JOINT_GRACE`] proposes its second half (the new
//! voters alone; a node only the old configuration had stays as a learner, for the operator to
//! remove), as etcd's raft leaves a joint configuration on its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use synod_raft_store::state_machine::lock;
use synod_raft_store::tree::CONFIG_NODE;
use synod_raft_store::types::CONFIG_NODE_SINCE;
use synod_raft_store::Command;

use super::spec;
use crate::node::Node;

/// How often the leader compares `/zookeeper/config` with the membership.
const INTERVAL: Duration = Duration::from_millis(250);

/// How long a committed joint configuration may stay in effect before the leader ends it: the
/// leader that proposed it proposes the second half as soon as the first commits, so only a
/// change whose leader is gone lasts this long.
const JOINT_GRACE: Duration = Duration::from_secs(2);

/// How long the leader waits for the second half of a joint change it finishes to commit.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the leader waits for its rewrite of `/zookeeper/config` to be applied, holding the
/// right to change the membership (a later tick tries again).
const CONFIG_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs until the node stops.
pub async fn config_sync_loop(node: Arc<Node>) {
    let mut stopping = node.stopping.subscribe();
    // The committed joint configuration in effect, by the index of its entry, and since when
    // this node has seen it while leading.
    let mut joint_since: Option<(u64, Instant)> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        if let Err(e) = leave_joint_once(&node, &mut joint_since).await {
            tracing::warn!(error = %e, "could not leave the joint configuration");
        }
        if let Err(e) = sync_once(&node).await {
            tracing::warn!(error = %e, "could not write /zookeeper/config");
        }
    }
}

/// Proposes the second half of a committed joint configuration this leader has seen in effect
/// for [`JOINT_GRACE`] (see the module documentation); `since` is the loop's memory of it.
async fn leave_joint_once(
    node: &Arc<Node>,
    since: &mut Option<(u64, Instant)>,
) -> Result<(), crate::error::ReconfigError> {
    // The last membership entry in the log (openraft's effective one) must be the committed
    // (applied) joint one: once the second half is proposed, by its leader or by this loop,
    // there is nothing to do, committed or not.
    let effective = *node.raft.metrics().borrow().membership_config.log_id();
    let joint = {
        let r = lock(&node.replica);
        let membership = r.membership.membership();
        match membership.get_joint_config().last() {
            Some(last)
                if membership.get_joint_config().len() > 1
                    && *r.membership.log_id() == effective =>
            {
                let index = effective.as_ref().map_or(0, |l| l.index);
                Some((index, last.clone()))
            }
            _ => None,
        }
    };
    let Some((index, voters)) = joint.filter(|_| node.is_leader()) else {
        *since = None;
        return Ok(());
    };
    let first_seen = match *since {
        Some((i, at)) if i == index => at,
        _ => {
            *since = Some((index, Instant::now()));
            return Ok(());
        }
    };
    if first_seen.elapsed() < JOINT_GRACE {
        return Ok(());
    }
    // Not while another change of this node's is under way: it finishes its own.
    let Some(right) = node.try_claim_membership() else {
        return Ok(());
    };
    tracing::warn!(
        index,
        ?voters,
        "a joint configuration was left unfinished (its leader is gone): proposing the new \
         voters alone"
    );
    let change = openraft::ChangeMembers::ReplaceAllVoters(voters);
    let failed = match tokio::time::timeout(
        LEAVE_TIMEOUT,
        node.change_membership(change, true, right),
    )
    .await
    {
        Ok(Ok(_)) => {
            *since = None;
            tracing::info!(index, "left the joint configuration");
            return Ok(());
        }
        Ok(Err(e)) => format!("membership change: {e}"),
        Err(_) => format!("the change did not commit within {LEAVE_TIMEOUT:?}"),
    };
    // The next attempt after another grace period, not on the next tick.
    *since = Some((index, Instant::now()));
    Err(crate::error::ReconfigError::Failed(failed))
}

/// One comparison; writes `/zookeeper/config` if it shows another membership than the
/// applied one.
async fn sync_once(node: &Arc<Node>) -> Result<(), crate::error::ReconfigError> {
    if !node.is_leader() || crate::upgrade::cluster_version(node) < CONFIG_NODE_SINCE {
        return Ok(());
    }
    let Some(_right) = node.try_claim_membership() else {
        return Ok(());
    };
    let (mut desired, shown) = {
        let r = lock(&node.replica);
        let membership = r.membership.membership();
        if membership.get_joint_config().len() > 1
            || membership.nodes().next().is_none()
            || r.tree.node(CONFIG_NODE).is_none()
        {
            return Ok(());
        }
        let (shown, _) = spec::parse_config(r.tree.config_text());
        (super::members_of(membership), shown)
    };
    node.fill_client_addrs(&mut desired, &shown).await;
    let members = spec::render(&desired);
    if members == spec::render(&shown) {
        return Ok(());
    }
    tracing::info!(config = %members.trim_end().replace('\n', ", "), "writing /zookeeper/config");
    let cmd = Command::Config {
        origin: None,
        time_ms: crate::clock::now_ms(),
        members,
        request: None,
        session_id: 0,
        auth: Vec::new(),
    };
    node.propose_config(cmd, CONFIG_TIMEOUT).await
}
