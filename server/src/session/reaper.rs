//! The reaper: the session duty that runs [`SESSION_CHECKS`] times per tick. On the leader it
//! runs the [`SessionTracker`] and proposes `CloseSession` for every expired session (its
//! ephemerals go in the same entry), and once per tick proposes the deletion of due container
//! and TTL nodes; on a follower it reports its sessions' activity to the leader, each with how
//! long ago it happened.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use synod_raft_store::state_machine::lock;
use synod_raft_store::tree::Name;
use synod_raft_store::Command;

use crate::node::Node;
use crate::peer::{PeerRequest, SessionTouch};
use crate::session::tracker::SessionTracker;
use crate::session::ttl::TtlClock;

/// How many times per session tick the leader checks deadlines and followers send touches, so
/// that an idle session ends within its timeout plus a fraction of a tick, not up to two ticks.
pub const SESSION_CHECKS: u32 = 4;

/// Container and TTL nodes reaped per proposal, at most.
const REAP_BATCH: usize = 1000;

/// Runs until the process ends.
pub async fn session_loop(node: Arc<Node>) {
    let mut tracker = SessionTracker::default();
    let mut ttl_clock = TtlClock::default();
    let mut tick = tokio::time::interval(node.cfg.tick / SESSION_CHECKS);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round: u32 = 0;
    // `CutOff::times` at the previous round: a cut-off that began and ended between two rounds
    // still counts.
    let mut cut_offs_seen = node.cut_off.times();
    loop {
        tick.tick().await;
        round = round.wrapping_add(1);
        let touched = node.touches.take();
        let leading = node.leading_term();
        let cut_offs = node.cut_off.times();
        let cut_off = node.cut_off.active() || cut_offs != cut_offs_seen;
        cut_offs_seen = cut_offs;
        // A leader cut off from the quorum decides nothing: it has closed its clients'
        // connections (with no other leader they have nowhere to keep their sessions alive),
        // and when the quorum is back it restarts every deadline, as a new leader does
        // (`crate::cut_off`; ZooKeeper's leader goes back to an election).
        let term = match leading {
            Some(term) if !cut_off => term,
            _ => {
                tracker.check(Instant::now(), false, &HashMap::new(), &HashMap::new());
                ttl_clock.check(Instant::now(), false, Vec::new());
                if leading.is_none() {
                    report_touches(&node, touched);
                }
                continue;
            }
        };
        if !tracker.was_leader() {
            tracing::info!("leading: every session's deadline restarts now");
        }
        let reap_now = round.is_multiple_of(SESSION_CHECKS);
        let (sessions, due, ttl_nodes) = {
            let r = lock(&node.replica);
            let s: HashMap<i64, Duration> = r
                .tree
                .sessions()
                .map(|(id, s)| (id, Duration::from_millis(s.timeout_ms.max(0) as u64)))
                .collect();
            let (due, ttl_nodes) = if reap_now {
                (
                    r.tree.reap_candidates(crate::clock::now_ms(), REAP_BATCH),
                    r.tree.ttl_nodes(),
                )
            } else {
                (Vec::new(), Vec::new())
            };
            (s, due, ttl_nodes)
        };
        // A TTL node due by the wall clock goes only if this leader's monotonic clock agrees.
        let due: Vec<String> = if reap_now {
            let ttl_paths: HashSet<Name> = ttl_nodes.iter().map(|(p, _, _)| p.clone()).collect();
            let ttl_due = ttl_clock.check(Instant::now(), true, ttl_nodes);
            due.into_iter()
                .filter(|p| !ttl_paths.contains(p.as_str()) || ttl_due.contains(p.as_str()))
                .collect()
        } else {
            due
        };
        for id in tracker.check(Instant::now(), true, &sessions, &touched) {
            tracing::info!(session = format_args!("{id:#x}"), "session expired");
            node.propose_duty(
                Command::CloseSession {
                    origin: None,
                    session_id: id,
                },
                term,
            );
        }
        if !due.is_empty() {
            let reap = Command::Reap {
                time_ms: crate::clock::now_ms(),
                paths: due,
            };
            node.propose_duty(reap, term);
        }
    }
}

/// A follower reports its sessions' activity to the leader. A report that cannot be sent (no
/// leader known) or that fails is kept for the next one: in an outage shorter than the
/// sessions' timeout, the activity in it would otherwise be lost and a session whose client
/// kept pinging could end after the heal. Kept activity still counts from when it happened.
fn report_touches(node: &Arc<Node>, touched: HashMap<i64, Instant>) {
    if touched.is_empty() {
        return;
    }
    let Some((id, addr)) = node.leader() else {
        node.touches.keep(touched);
        return;
    };
    let now = Instant::now();
    let report: Vec<SessionTouch> = touched
        .iter()
        .map(|(&session_id, &at)| SessionTouch {
            session_id,
            idle_ms: now
                .saturating_duration_since(at)
                .as_millis()
                .min(u128::from(u32::MAX)) as u32,
        })
        .collect();
    let node = node.clone();
    let tick = node.cfg.tick;
    tokio::spawn(async move {
        if let Err(e) = node
            .pool
            .call(id, &addr, PeerRequest::Touch(report), tick * 4)
            .await
        {
            tracing::debug!(%e, "session touch to the leader failed: kept for the next report");
            node.touches.keep(touched);
        }
    });
}
