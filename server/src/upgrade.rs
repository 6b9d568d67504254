//! Rolling upgrades: the cluster version (which formats the replicated state may use), raised by
//! the leader once every member's build has it, and the gates that keep a node from writing
//! what a member of the previous release could not read before then.
//!
//! A build applies cluster versions up to [`CLUSTER_VERSION`] and says so in every peer
//! handshake (its protocol version: [`crate::peer::transport::PROTOCOL_VERSION`]). The tree
//! starts at [`BASE_CLUSTER_VERSION`] (release 0.1's formats). While any member's latest
//! handshake names an older version, this node writes only what that version reads: sessions
//! are opened without identities (`CreateSession`), tenants cannot be declared, no read audit is
//! proposed, and apply keeps no audit chain. Once every voter and learner has spoken
//! [`CLUSTER_VERSION`], the leader proposes `Command::ClusterVersion`; from that entry on, every
//! replica uses the new formats. The version never goes down: a member of an older release
//! cannot rejoin a cluster that has left its version behind (docs/operations.md, "Upgrades").

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use synod_raft_store::state_machine::lock;
use synod_raft_store::types::{BASE_CLUSTER_VERSION, CLUSTER_VERSION};
use synod_raft_store::{Command, NodeId};

use crate::node::Node;

/// How often the leader checks whether every member can read a higher cluster version.
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// The cluster version of this node's applied state.
pub fn cluster_version(node: &Node) -> u32 {
    if node.version_current.load(Ordering::Relaxed) {
        return CLUSTER_VERSION;
    }
    let version = lock(&node.replica).tree.cluster_version();
    if version >= CLUSTER_VERSION {
        node.version_current.store(true, Ordering::Relaxed);
    }
    version
}

/// Whether the leader should raise the cluster version now: it is below this build's and every
/// member has spoken this build's protocol. The proposer puts the raise first in the next entry
/// it writes, so that no write after that point is applied at the old version (and so escapes
/// the audit trail); [`cluster_version_loop`] raises it in an idle cluster.
pub fn raise_due(node: &Node) -> bool {
    cluster_version(node) < CLUSTER_VERSION && holding_back(node).is_empty()
}

/// Whether the cluster version has reached `version`: what a node must check before it writes
/// something that only builds of `version` read.
pub fn cluster_has(node: &Node, version: u32) -> bool {
    cluster_version(node) >= version
}

/// What keeps the cluster version where it is, as the leader sees it: the members whose latest
/// handshake with this node named an older protocol version (`Some(v)`) or that it has not yet
/// spoken with (`None`).
pub fn holding_back(node: &Node) -> Vec<(NodeId, Option<u32>)> {
    let members: Vec<NodeId> = {
        let metrics = node.raft.metrics();
        let m = metrics.borrow();
        m.membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect()
    };
    members
        .into_iter()
        .filter(|id| *id != node.id)
        .map(|id| (id, node.local.versions.get(id)))
        .filter(|(_, v)| v.is_none_or(|v| v < CLUSTER_VERSION))
        .collect()
}

/// Runs until the process ends: on the leader, proposes [`CLUSTER_VERSION`] as soon as every
/// member has spoken it, and warns (once per change) about a member of an older release in a
/// cluster whose version it cannot read.
pub async fn cluster_version_loop(node: Arc<Node>) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported: Vec<(NodeId, Option<u32>)> = Vec::new();
    loop {
        tick.tick().await;
        if *node.stopping.borrow() {
            return;
        }
        let Some(term) = node.leading_term() else {
            continue;
        };
        let current = cluster_version(&node);
        debug_assert!((BASE_CLUSTER_VERSION..=CLUSTER_VERSION).contains(&current));
        let behind = holding_back(&node);
        if behind != reported {
            for (id, version) in &behind {
                match (version, current >= CLUSTER_VERSION) {
                    (Some(v), true) => tracing::error!(
                        node = id,
                        protocol = v,
                        cluster_version = current,
                        "a member runs an older release than the cluster's version: it cannot \
                         read the log; run this release on it"
                    ),
                    (Some(v), false) => tracing::info!(
                        node = id,
                        protocol = v,
                        cluster_version = current,
                        "a member runs an older release: the cluster version stays until it is \
                         upgraded"
                    ),
                    (None, _) => {}
                }
            }
            reported = behind.clone();
        }
        if current < CLUSTER_VERSION && behind.is_empty() {
            tracing::info!(
                from = current,
                to = CLUSTER_VERSION,
                "every member runs this release: raising the cluster version"
            );
            let raise = Command::ClusterVersion {
                version: CLUSTER_VERSION,
            };
            node.propose_duty(raise, term);
            // Wait for it to apply before proposing again.
            let mut applied = node.applied.clone();
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while cluster_version(&node) < CLUSTER_VERSION {
                    if applied.changed().await.is_err() {
                        return;
                    }
                }
            })
            .await;
        }
    }
}
