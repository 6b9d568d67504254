//! A node cut off from the quorum serves no replicated session, as ZooKeeper's server serves
//! none once it stops LEADING or FOLLOWING.
//!
//! Cut off: for [`cut_off_after`] on end (2 s, longer with slow heartbeats or elections) it has
//! seen no leader; or, as leader, no quorum's acknowledgement within that time (so about twice
//! that after the last one: a leader just resumed from a pause rides out its first stale look);
//! or, as follower or learner, it has heard from no majority of the voters (itself counted if
//! it is one: [`probe_loop`]) — a follower on the minority side of a partition together with
//! the old leader keeps hearing that leader's heartbeats (openraft 0.9 does not step a leader
//! down), and a learner never holds an election, so neither would ever find itself leaderless.
//! It then closes the connection of every replicated session, and closes new ones without an
//! answer until the quorum is back (the client tries another server). So its clients learn at
//! once that they are disconnected, as ZooKeeper's clients do — a lock holder must not go on as
//! if it held the lock, for the quorum may expire its session meanwhile — and move on to a
//! server that reaches the quorum, where their sessions live on. A cut-off leader decides no
//! session expiry, and restarts every deadline once the quorum is back, as a new leader does
//! ([`crate::session::reaper`]). With `--read-only-mode` it serves read-only sessions meanwhile
//! ([`crate::read_only`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use synod_raft_store::state_machine::lock;
use synod_raft_store::types::LEADER_READ_ON_FOLLOWER_VOTE_SINCE;
use synod_raft_store::NodeId;

use crate::node::Node;
use crate::peer::{PeerRequest, PeerResponse};
use crate::read_only::is_local_session;

/// How long a node must know no leader (or, as leader, have no quorum's acknowledgement; as
/// follower or learner, hear from no majority of the voters) before it counts as cut off, at
/// least (ZooKeeper's follower waits syncLimit ticks for its leader; its
/// read-only server starts after max(2 s, tickTime) in LOOKING). Longer with slow heartbeats or
/// elections: [`cut_off_after`].
pub const CUT_OFF_AFTER: Duration = Duration::from_secs(2);

/// [`CUT_OFF_AFTER`], or longer where the configuration's heartbeats or elections are slow
/// enough that a working leader or follower could look cut off for that long: four heartbeat
/// intervals (a leader hears its quorum's acknowledgements once per heartbeat when idle) or two
/// election timeouts (a follower knows no leader for up to one election).
pub fn cut_off_after(cfg: &crate::config::Config) -> Duration {
    CUT_OFF_AFTER
        .max(cfg.heartbeat * 4)
        .max(cfg.election_timeout * 2)
}

/// How often the node looks.
const INTERVAL: Duration = Duration::from_millis(100);

/// Whether a node is cut off from the quorum now.
#[derive(Default)]
pub struct CutOff {
    /// Set by [`cut_off_loop`] before it closes the replicated sessions' connections (under the
    /// replica lock), and read under that lock where a connection registers: a connection
    /// registered after the closing sees it set and is refused.
    cut_off: AtomicBool,
    /// How many times the node has been found cut off since it started: a duty that looks only
    /// now and then (the reaper) learns of a cut-off that began and ended between two looks.
    times: AtomicU64,
    /// When each voter last answered this node's probe ([`probe_loop`]); only the voters the
    /// last probe asked are kept, so it holds at most one entry per voter.
    heard: Mutex<HashMap<NodeId, Instant>>,
}

impl CutOff {
    /// Whether the node is cut off from the quorum now: it serves no replicated session.
    pub fn active(&self) -> bool {
        self.cut_off.load(Ordering::Acquire)
    }

    /// How many times the node has been found cut off since it started.
    pub fn times(&self) -> u64 {
        self.times.load(Ordering::Acquire)
    }
}

/// Why a node counts as cut off from the quorum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isolation {
    /// It knows no leader (it is campaigning, or has heard of none).
    NoLeader,
    /// It leads, but no quorum acknowledged it lately (an openraft 0.9 leader cut off from its
    /// followers does not step down by itself).
    NoQuorumAck,
    /// It follows (or learns from) a leader, but hears from no majority of the voters: it is on
    /// a minority's side, perhaps with an old leader that keeps heartbeating it.
    MinorityHeard,
}

impl Isolation {
    /// What the node's log says about it.
    fn describe(self) -> &'static str {
        match self {
            Isolation::NoLeader => "no leader known",
            Isolation::NoQuorumAck => "leading without a quorum's acknowledgement",
            Isolation::MinorityHeard => "following, but hearing from no majority of the voters",
        }
    }
}

/// Whether this node is in touch with a working quorum now (`Err`: why not, for this look).
fn quorum_reachable(node: &Node, after: Duration) -> Result<(), Isolation> {
    let leader = {
        let metrics = node.raft.metrics();
        let m = metrics.borrow();
        match m.current_leader {
            None => return Err(Isolation::NoLeader),
            Some(l) if l == node.id => {
                let acked = m
                    .millis_since_quorum_ack
                    .is_some_and(|ms| ms < after.as_millis() as u64);
                return if acked {
                    Ok(())
                } else {
                    Err(Isolation::NoQuorumAck)
                };
            }
            Some(l) => l,
        }
    };
    if !probing(node, leader) || majority_heard(node, after) {
        Ok(())
    } else {
        Err(Isolation::MinorityHeard)
    }
}

/// Whether this node probes the voters now: it follows or learns from `leader`, another node,
/// and every member answers the probe ([`PeerRequest::SavedVote`], read since cluster version
/// 5).
fn probing(node: &Node, leader: NodeId) -> bool {
    leader != node.id && crate::upgrade::cluster_has(node, LEADER_READ_ON_FOLLOWER_VOTE_SINCE)
}

/// Whether, in every configuration the metrics show (two while joint), a majority of the voters
/// answered this node's probe within `after` — this node counted as answering if it is one.
fn majority_heard(node: &Node, after: Duration) -> bool {
    let configs = node.voters_seen();
    let heard = node.cut_off.heard.lock().unwrap_or_else(|p| p.into_inner());
    configs.iter().all(|voters| {
        let reached = voters
            .iter()
            .filter(|(id, _)| {
                *id == node.id || heard.get(id).is_some_and(|at| at.elapsed() < after)
            })
            .count();
        reached > voters.len() / 2
    })
}

/// How often a follower or learner probes the voters.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// Runs until the node stops: while this node follows or learns, asks every other voter for its
/// saved vote ([`PeerRequest::SavedVote`], answered without the Raft core: an answer says the
/// voter is up and reachable, whatever its disk is doing) and notes who answered when. One
/// round at a time, each call bounded by half of [`cut_off_after`], so a voter is heard from
/// at least twice per threshold while it answers.
pub async fn probe_loop(node: Arc<Node>) {
    let mut stopping = node.stopping.subscribe();
    let timeout = cut_off_after(&node.cfg) / 2;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        let Some((leader, _)) = node.leader() else {
            continue;
        };
        if !probing(&node, leader) {
            continue;
        }
        let mut voters: Vec<(NodeId, String)> = node.voters_seen().into_iter().flatten().collect();
        voters.sort_unstable();
        voters.dedup();
        voters.retain(|(id, _)| *id != node.id);
        let answers = futures_util::future::join_all(voters.iter().map(|(id, addr)| {
            let pool = node.pool.clone();
            async move {
                let answer = pool.call(*id, addr, PeerRequest::SavedVote, timeout).await;
                matches!(answer, Ok(PeerResponse::SavedVote(_))).then(|| (*id, Instant::now()))
            }
        }))
        .await;
        let mut heard = node.cut_off.heard.lock().unwrap_or_else(|p| p.into_inner());
        heard.retain(|id, _| voters.iter().any(|(v, _)| v == id));
        heard.extend(answers.into_iter().flatten());
    }
}

/// Runs until the node stops: notices when the node is cut off and when the quorum is back.
pub async fn cut_off_loop(node: Arc<Node>) {
    let mut stopping = node.stopping.subscribe();
    let mut isolated_since: Option<Instant> = None;
    let after = cut_off_after(&node.cfg);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        let isolation = match quorum_reachable(&node, after) {
            Ok(()) => {
                isolated_since = None;
                if node.cut_off.cut_off.swap(false, Ordering::AcqRel) {
                    tracing::warn!("the quorum is back: this node accepts sessions again");
                }
                if node.read_only.set_active(false) {
                    let closed = lock(&node.replica)
                        .observer
                        .kill_conns_where(|e| is_local_session(e.session_id), "the quorum is back");
                    tracing::warn!(
                        closed,
                        "read-only mode ends: the quorum is back; read-only clients reconnect"
                    );
                }
                continue;
            }
            Err(why) => why,
        };
        let since = *isolated_since.get_or_insert_with(Instant::now);
        if node.cut_off.active() || since.elapsed() < after {
            continue;
        }
        // Set before the closing, under the lock the registration holds (see `CutOff::cut_off`).
        node.cut_off.cut_off.store(true, Ordering::Release);
        node.cut_off.times.fetch_add(1, Ordering::AcqRel);
        let closed = lock(&node.replica).observer.kill_conns_where(
            |e| !is_local_session(e.session_id),
            "this node is cut off from the quorum",
        );
        tracing::warn!(
            after_ms = since.elapsed().as_millis() as u64,
            closed,
            why = isolation.describe(),
            "cut off from the quorum: closed every client connection; their clients resume their \
             sessions on a server that reaches it, and this node accepts none until it reaches the \
             quorum again"
        );
        if node.cfg.read_only_mode && !node.read_only.set_active(true) {
            tracing::warn!("read-only mode: serving reads to clients that allow read-only");
        }
    }
}
