//! A node cut off from the quorum serves no replicated session, as ZooKeeper's server serves
//! none once it stops LEADING or FOLLOWING.
//!
//! Cut off: for [`cut_off_after`] on end (2 s, longer with slow heartbeats or elections) it has
//! seen no leader, or, as leader, no quorum's acknowledgement within that time (so about twice
//! that after the last one: a leader just resumed from a pause rides out its first stale look).
//! It then closes the connection of every replicated session, and closes new ones without an
//! answer until a leader is known again (the client tries another server). So its clients learn at once that they are
//! disconnected, as ZooKeeper's clients do — a lock holder must not go on as if it held the
//! lock, for the quorum may expire its session meanwhile — and move on to a server that reaches
//! the quorum, where their sessions live on. A cut-off leader decides no session expiry, and
//! restarts every deadline once the quorum is back, as a new leader does
//! ([`crate::session::reaper`]). With `--read-only-mode` it serves read-only sessions meanwhile
//! ([`crate::read_only`]). A learner is never found cut off (it keeps naming its leader).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use synod_raft_store::state_machine::lock;

use crate::node::Node;
use crate::read_only::is_local_session;

/// How long a node must know no leader (or, as leader, no quorum's acknowledgement) before it
/// counts as cut off, at least (ZooKeeper's follower waits syncLimit ticks for its leader; its
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

/// Whether this node knows a working leader: a follower one it follows, a leader that a
/// quorum acknowledged within `after` (an openraft 0.9 leader cut off from its followers does
/// not step down by itself). A learner that lost its leader keeps naming it (it holds no
/// elections): it is never found cut off.
fn quorum_reachable(node: &Node, after: Duration) -> bool {
    let metrics = node.raft.metrics();
    let m = metrics.borrow();
    match m.current_leader {
        None => false,
        Some(l) if l == node.id => m
            .millis_since_quorum_ack
            .is_some_and(|ms| ms < after.as_millis() as u64),
        Some(_) => true,
    }
}

/// Runs until the node stops: notices when the node is cut off and when the quorum is back.
pub async fn cut_off_loop(node: Arc<Node>) {
    let mut stopping = node.stopping.subscribe();
    let mut leaderless_since: Option<Instant> = None;
    let after = cut_off_after(&node.cfg);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        if quorum_reachable(&node, after) {
            leaderless_since = None;
            if node.cut_off.cut_off.swap(false, Ordering::AcqRel) {
                tracing::warn!("the quorum is back: this node accepts sessions again");
            }
            if node.read_only.set_active(false) {
                let closed = lock(&node.replica)
                    .observer
                    .kill_conns_where(|e| is_local_session(e.session_id), "the quorum is back");
                tracing::warn!(
                    closed,
                    "read-only mode ends: a leader is known again; read-only clients reconnect"
                );
            }
            continue;
        }
        let since = *leaderless_since.get_or_insert_with(Instant::now);
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
            "cut off from the quorum: closed every client connection; their clients resume their \
             sessions on a server that reaches it, and this node accepts none until a leader is \
             known again"
        );
        if node.cfg.read_only_mode && !node.read_only.set_active(true) {
            tracing::warn!("read-only mode: serving reads to clients that allow read-only");
        }
    }
}
