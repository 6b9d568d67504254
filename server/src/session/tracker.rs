//! The session tracker, ZooKeeper's SessionTracker: the leader's deadline for every live
//! session, and the activity reports it keeps them alive with. [`SessionTracker::check`] is the
//! whole policy, a pure step given the time, the role and the sessions; the reaper drives it
//! ([`crate::session::reaper`]).
//!
//! The bound users may rely on (docs/design.md §6): a session whose client went silent at `t`
//! is expired by `t + timeout` plus one check period, unless the leader changed before that; a
//! new leader restarts every deadline from its takeover (no session expires for the election's
//! pause), so the bound is then the takeover + timeout plus one check period. Activity earns
//! timeout from when it happened, never from when its report arrived: a report held up by a
//! pause (of a follower, or of a deposed leader that then reports as a follower) cannot carry a
//! session past that bound.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long the leader waits before proposing the close of an expired session again (its
/// first proposal failed, e.g. lost with a leader change).
pub const CLOSE_RETRY: Duration = Duration::from_secs(5);

/// Client activity on this node since the last check: each session's latest activity.
#[derive(Debug, Default)]
pub struct Touches(Mutex<HashMap<i64, Instant>>);

impl Touches {
    /// Notes activity on `session_id` at `at` (the latest activity of a session counts).
    pub fn touch(&self, session_id: i64, at: Instant) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        note(&mut t, session_id, at);
    }

    /// The activity noted since the last call.
    pub fn take(&self) -> HashMap<i64, Instant> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Notes again activity [`Touches::take`] returned that could not be reported (the latest
    /// of each session counts, as ever).
    pub fn keep(&self, touched: HashMap<i64, Instant>) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for (session_id, at) in touched {
            note(&mut t, session_id, at);
        }
    }
}

/// Notes activity on `session_id` at `at` in `touched`: the latest of a session's counts.
fn note(touched: &mut HashMap<i64, Instant>, session_id: i64, at: Instant) {
    let latest = touched.entry(session_id).or_insert(at);
    *latest = (*latest).max(at);
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct SessionTracker {
    /// When each live session expires (leader only).
    deadlines: HashMap<i64, Instant>,
    /// Sessions whose close was proposed, and when.
    closing: HashMap<i64, Instant>,
    /// Whether this node led at the previous check.
    was_leader: bool,
}

impl SessionTracker {
    /// One check at `now`. `leading`: whether this node leads now; `sessions`: every live
    /// session with its timeout; `touched`: activity since the last check (latest per session).
    /// Returns the sessions whose close the leader must propose now (none on a follower).
    pub fn check(
        &mut self,
        now: Instant,
        leading: bool,
        sessions: &HashMap<i64, Duration>,
        touched: &HashMap<i64, Instant>,
    ) -> Vec<i64> {
        let took_over = leading && !self.was_leader;
        self.was_leader = leading;
        if !leading {
            return Vec::new();
        }
        if took_over {
            self.deadlines.clear();
            self.closing.clear();
        }
        self.deadlines.retain(|id, _| sessions.contains_key(id));
        self.closing.retain(|id, _| sessions.contains_key(id));
        for (id, t) in sessions {
            self.deadlines.entry(*id).or_insert(now + *t);
        }
        for (id, at) in touched {
            if let Some(t) = sessions.get(id) {
                let earned = *at + *t;
                let dl = self.deadlines.entry(*id).or_insert(earned);
                *dl = (*dl).max(earned);
            }
        }
        let mut expired = Vec::new();
        for (id, dl) in &self.deadlines {
            let retry = self
                .closing
                .get(id)
                .is_none_or(|at| now.duration_since(*at) > CLOSE_RETRY);
            if *dl <= now && retry {
                expired.push(*id);
            }
        }
        expired.sort_unstable();
        for id in &expired {
            self.closing.insert(*id, now);
        }
        expired
    }

    /// Whether the previous check found this node leading (it has just taken over if the next
    /// one finds it leading and this is false).
    pub fn was_leader(&self) -> bool {
        self.was_leader
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn sessions(ids: &[i64]) -> HashMap<i64, Duration> {
        ids.iter().map(|id| (*id, 2 * S)).collect()
    }

    #[test]
    fn activity_kept_after_a_failed_report_merges_with_newer_activity() {
        let t0 = Instant::now();
        let touches = Touches::default();
        touches.touch(1, t0 + S);
        // A report of session 1 at t0 and session 2 at t0 + 2 s failed: kept, and the latest
        // activity of each session wins.
        touches.keep(HashMap::from([(1, t0), (2, t0 + 2 * S)]));
        let taken = touches.take();
        assert_eq!(taken, HashMap::from([(1, t0 + S), (2, t0 + 2 * S)]));
        assert!(touches.take().is_empty());
    }

    #[test]
    fn a_silent_session_expires_at_its_deadline_and_is_proposed_once() {
        let t0 = Instant::now();
        let mut t = SessionTracker::default();
        let none = HashMap::new();
        assert!(t.check(t0, true, &sessions(&[1]), &none).is_empty());
        assert!(t.check(t0 + S, true, &sessions(&[1]), &none).is_empty());
        assert_eq!(t.check(t0 + 2 * S, true, &sessions(&[1]), &none), [1]);
        assert!(
            t.check(t0 + 3 * S, true, &sessions(&[1]), &none).is_empty(),
            "proposed once until the retry period"
        );
        assert_eq!(t.check(t0 + 8 * S, true, &sessions(&[1]), &none), [1]);
    }

    #[test]
    fn activity_extends_from_when_it_happened() {
        let t0 = Instant::now();
        let mut t = SessionTracker::default();
        let none = HashMap::new();
        t.check(t0, true, &sessions(&[1]), &none);
        let touched: HashMap<i64, Instant> = [(1, t0 + S)].into();
        assert!(t
            .check(t0 + 2 * S, true, &sessions(&[1]), &touched)
            .is_empty());
        assert_eq!(t.check(t0 + 3 * S, true, &sessions(&[1]), &none), [1]);
    }

    /// The race behind issue 11's "ephemeral still present" in pause-leader: a report of
    /// activity from before the takeover, delivered after it (by a leader that was paused and
    /// now reports as a follower), moved the session's deadline to "now + timeout".
    #[test]
    fn a_stale_touch_does_not_extend_a_session_past_the_takeover_deadline() {
        let t0 = Instant::now();
        let mut t = SessionTracker::default();
        let none = HashMap::new();
        // Not leading, then taking over at t0 + 3 s: deadlines restart there.
        assert!(t.check(t0, false, &sessions(&[1]), &none).is_empty());
        assert!(t.check(t0 + 3 * S, true, &sessions(&[1]), &none).is_empty());
        // At t0 + 4 s a report arrives of activity at t0 (before the pause).
        let stale: HashMap<i64, Instant> = [(1, t0)].into();
        assert!(t
            .check(t0 + 4 * S, true, &sessions(&[1]), &stale)
            .is_empty());
        assert_eq!(
            t.check(t0 + 5 * S, true, &sessions(&[1]), &none),
            [1],
            "expired at takeover + timeout"
        );
    }

    #[test]
    fn closed_sessions_are_forgotten_and_followers_expire_nothing() {
        let t0 = Instant::now();
        let mut t = SessionTracker::default();
        let none = HashMap::new();
        assert!(t
            .check(t0 + 10 * S, false, &sessions(&[1]), &none)
            .is_empty());
        t.check(t0, true, &sessions(&[1, 2]), &none);
        assert_eq!(t.check(t0 + 2 * S, true, &sessions(&[2]), &none), [2]);
    }
}
