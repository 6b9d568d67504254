//! The leader keeps `/zookeeper/config` showing the applied membership: after a change made on
//! the admin port (or by a reconfig that failed half-way), after an election, and once the
//! cluster version first allows it, it writes the membership there with a [`Command::Config`]
//! entry of its own. It never runs while a reconfig holds the node's reconfig lock.

use std::sync::Arc;
use std::time::Duration;

use synod_raft_store::state_machine::lock;
use synod_raft_store::tree::CONFIG_NODE;
use synod_raft_store::types::CONFIG_NODE_SINCE;
use synod_raft_store::Command;

use super::spec;
use crate::node::Node;

/// How often the leader compares `/zookeeper/config` with the membership.
const INTERVAL: Duration = Duration::from_millis(250);

/// Runs until the node stops.
pub async fn config_sync_loop(node: Arc<Node>) {
    let mut stopping = node.stopping.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        if let Err(e) = sync_once(&node).await {
            tracing::warn!(error = %e, "could not write /zookeeper/config");
        }
    }
}

/// One comparison; writes `/zookeeper/config` if it shows another membership than the
/// applied one.
async fn sync_once(node: &Arc<Node>) -> Result<(), crate::error::ReconfigError> {
    if !node.is_leader() || crate::upgrade::cluster_version(node) < CONFIG_NODE_SINCE {
        return Ok(());
    }
    let Ok(_one) = node.reconfigs.one_at_a_time.try_lock() else {
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
    node.propose_config(cmd).await
}
