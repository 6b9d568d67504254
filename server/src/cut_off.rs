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
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use synod_raft_store::state_machine::lock;
use synod_raft_store::types::SAVED_VOTE_SINCE;
use synod_raft_store::NodeId;

use crate::node::Node;
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
    /// The voters as this node's probe knows them ([`probe_loop`]): only the voters of the
    /// configuration last seen are kept, so it holds at most one entry per voter.
    probes: Mutex<HashMap<NodeId, Probe>>,
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

    /// The probe's view of the voters, locked (a panic elsewhere left no half-made entry).
    fn probes(&self) -> MutexGuard<'_, HashMap<NodeId, Probe>> {
        self.probes.lock().unwrap_or_else(|p| p.into_inner())
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

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Isolation::NoLeader => "no leader known",
            Isolation::NoQuorumAck => "leading without a quorum's acknowledgement",
            Isolation::MinorityHeard => "following, but hearing from no majority of the voters",
        })
    }
}

/// Whether this node is in touch with a working quorum now (`Err`: why not, for this look).
fn quorum_reachable(node: &Node, after: Duration) -> Result<(), Isolation> {
    {
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
            Some(_) => {}
        }
    }
    if !probing(node) || majority_heard(node, after) {
        Ok(())
    } else {
        Err(Isolation::MinorityHeard)
    }
}

/// Whether this node probes the voters now: it does not lead, and every member answers the
/// probe ([`SavedVote`](crate::peer::PeerRequest::SavedVote), read since cluster version 5).
fn probing(node: &Node) -> bool {
    !node.is_leader() && crate::upgrade::cluster_has(node, SAVED_VOTE_SINCE)
}

/// Whether, in every configuration the metrics show (two while joint), a majority of the voters
/// answered this node's probe within `after` — this node counted as answering if it is one.
fn majority_heard(node: &Node, after: Duration) -> bool {
    let configs = node.voters_seen();
    let probes = node.cut_off.probes();
    configs.iter().all(|voters| {
        let reached = voters
            .iter()
            .filter(|(id, _)| {
                *id == node.id
                    || probes
                        .get(id)
                        .and_then(|p| p.answered)
                        .is_some_and(|at| at.elapsed() < after)
            })
            .count();
        reached > voters.len() / 2
    })
}

/// A voter as this node's probe knows it.
#[derive(Debug, Default)]
struct Probe {
    /// When it last answered.
    answered: Option<Instant>,
    /// A probe of it is in flight (at most one per voter).
    asking: bool,
}

/// How often a follower or learner probes the voters: four times within the 2 s a majority's
/// answers may lapse before the node counts as cut off. (Each probe costs the two nodes about
/// 0.1 ms of CPU here; at 250 ms an idle 3-node cluster spent 2-6 ms of CPU a second on them.)
const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// Runs until the node stops: while this node does not lead (a follower, a candidate or a
/// learner), asks every other voter for its saved vote every [`PROBE_INTERVAL`]
/// ([`SavedVote`](crate::peer::PeerRequest::SavedVote), answered without the Raft core: an
/// answer says the voter is up and reachable, whatever its disk is doing) and notes when each
/// answered, as each answer arrives. At most one probe per voter is in flight, bounded by half
/// of [`cut_off_after`]: a voter that answers is heard from every [`PROBE_INTERVAL`] or so,
/// whatever the others do.
pub async fn probe_loop(node: Arc<Node>) {
    let mut stopping = node.stopping.subscribe();
    let timeout = cut_off_after(&node.cfg) / 2;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        if !probing(&node) {
            continue;
        }
        let mut voters: Vec<(NodeId, String)> = node.voters_seen().into_iter().flatten().collect();
        voters.sort_unstable();
        voters.dedup();
        voters.retain(|(id, _)| *id != node.id);
        let mut probes = node.cut_off.probes();
        probes.retain(|id, _| voters.iter().any(|(v, _)| v == id));
        for (id, addr) in voters {
            let probe = probes.entry(id).or_default();
            if probe.asking {
                continue;
            }
            probe.asking = true;
            let answer = node.ask_saved_vote(id, addr, timeout);
            let node = node.clone();
            tokio::spawn(async move {
                let answered = answer.await.is_some();
                let mut probes = node.cut_off.probes();
                if let Some(probe) = probes.get_mut(&id) {
                    probe.asking = false;
                    if answered {
                        probe.answered = Some(Instant::now());
                    }
                }
            });
        }
    }
}

/// Runs until the node stops: notices when the node is cut off and when the quorum is back.
pub async fn cut_off_loop(node: Arc<Node>) {
    let mut stopping = node.stopping.subscribe();
    // Since when the node has been isolated, for one reason on end: a follower whose election
    // ends (no leader known) does not carry that time into a lapse of its probe's answers.
    let mut isolated: Option<(Isolation, Instant)> = None;
    let after = cut_off_after(&node.cfg);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        let isolation = match quorum_reachable(&node, after) {
            Ok(()) => {
                isolated = None;
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
        let since = match isolated {
            Some((reason, since)) if reason == isolation => since,
            _ => isolated.insert((isolation, Instant::now())).1,
        };
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
            why = %isolation,
            "cut off from the quorum: closed every client connection; their clients resume their \
             sessions on a server that reaches it, and this node accepts none until it reaches the \
             quorum again"
        );
        if node.cfg.read_only_mode && !node.read_only.set_active(true) {
            tracing::warn!("read-only mode: serving reads to clients that allow read-only");
        }
    }
}
