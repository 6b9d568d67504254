//! Checks over recorded data other than linearizability — lost writes, sequential node names,
//! lock holders, watch delivery, ephemeral lifetimes, what an idle session's client was told —
//! and the per-scenario [`Summary`] row.
//!
//! Each check is a pure function of what the driver recorded and returns the [`Anomaly`]s it
//! found (empty = the guarantee held). Logical times (`u64`) are the stamps of
//! [`crate::history::History`]; wall-clock times (`Duration`) are offsets from the history's
//! start ([`crate::history::Operation::call_at`]) and are used where the guarantee itself is
//! about real time (session timeouts).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use crate::history::Operation;
use crate::model::Value;
use crate::FaultsError;

/// A violated guarantee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anomaly {
    /// An acknowledged write is neither present nor superseded in the final tree.
    LostWrite {
        /// The znode written.
        path: String,
        /// The zxid the write was acknowledged with.
        zxid: u64,
        /// What the final read showed instead.
        found: String,
    },
    /// Two acknowledged sequential creates under one parent got the same counter.
    DuplicateSequential {
        /// The name both got.
        name: String,
    },
    /// A sequential create that started after another one finished got a smaller counter.
    SequentialNotIncreasing {
        /// The earlier create's name.
        earlier: String,
        /// The later create's name (counter not greater).
        later: String,
    },
    /// Two clients held the lock at the same time.
    TwoLockHolders {
        /// (client, token) of the holder that acquired first.
        first: (u64, u64),
        /// (client, token) of the holder that acquired while the first still held it.
        second: (u64, u64),
    },
    /// Fencing tokens did not strictly increase in acquisition order.
    TokenNotIncreasing {
        /// (client, token) of the earlier acquisition.
        earlier: (u64, u64),
        /// (client, token) of the later acquisition.
        later: (u64, u64),
    },
    /// An acknowledged change under the watched path produced no event.
    MissedEvent {
        /// The change.
        change: Change,
    },
    /// The same event was delivered twice.
    DuplicateEvent {
        /// The event.
        change: Change,
    },
    /// An event arrived after one with a larger zxid.
    EventOutOfOrder {
        /// The event received earlier.
        before: Change,
        /// The event received after it, with a smaller zxid.
        after: Change,
    },
    /// An event matches no acknowledged change and no unknown write can explain it.
    UnexpectedEvent {
        /// The event.
        change: Change,
    },
    /// An event for a path outside the watched subtree.
    EventOutsideSubtree {
        /// The event.
        change: Change,
    },
    /// An ephemeral was observed absent (or owned by another session) while its session lived.
    EphemeralVanished {
        /// The ephemeral.
        path: String,
        /// Its session.
        session: u64,
        /// When the observing read was sent.
        at: Duration,
    },
    /// An ephemeral was observed present after its session's end + timeout + tick.
    EphemeralOutlived {
        /// The ephemeral.
        path: String,
        /// Its session.
        session: u64,
        /// When the observing read was sent.
        at: Duration,
        /// The latest instant it could legitimately still exist.
        deadline: Duration,
    },
    /// A session ended while its client had been told, for a whole session timeout before it
    /// learned so, that it was connected: a lock holder would have gone on as if it held the
    /// lock while the quorum released it.
    SessionEndedWhileConnected {
        /// The session.
        session: u64,
        /// When its client last became connected, before the end.
        connected_at: Duration,
        /// When its client learned that the session had ended.
        ended_at: Duration,
    },
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Anomaly::LostWrite { path, zxid, found } => {
                write!(f, "lost write: {path} acknowledged at zxid {zxid}, final read: {found}")
            }
            Anomaly::DuplicateSequential { name } => {
                write!(f, "sequential name {name} handed out twice")
            }
            Anomaly::SequentialNotIncreasing { earlier, later } => {
                write!(f, "sequential {later} created after {earlier} finished, not greater")
            }
            Anomaly::TwoLockHolders { first, second } => write!(
                f,
                "two lock holders: client {} (token {}) and client {} (token {})",
                first.0, first.1, second.0, second.1
            ),
            Anomaly::TokenNotIncreasing { earlier, later } => write!(
                f,
                "fencing token {} of client {} not above token {} of earlier holder {}",
                later.1, later.0, earlier.1, earlier.0
            ),
            Anomaly::MissedEvent { change } => write!(f, "missed watch event {change}"),
            Anomaly::DuplicateEvent { change } => write!(f, "watch event {change} delivered twice"),
            Anomaly::EventOutOfOrder { before, after } => {
                write!(f, "watch event {after} arrived after {before}")
            }
            Anomaly::UnexpectedEvent { change } => {
                write!(f, "watch event {change} matches no write")
            }
            Anomaly::EventOutsideSubtree { change } => {
                write!(f, "watch event {change} outside the watched path")
            }
            Anomaly::EphemeralVanished { path, session, at } => write!(
                f,
                "ephemeral {path} of live session {session:#x} missing at {at:.3?}"
            ),
            Anomaly::EphemeralOutlived { path, session, at, deadline } => write!(
                f,
                "ephemeral {path} of session {session:#x} still present at {at:.3?} (deadline {deadline:.3?})"
            ),
            Anomaly::SessionEndedWhileConnected {
                session,
                connected_at,
                ended_at,
            } => write!(
                f,
                "session {session:#x} ended (its client learned so at {ended_at:.3?}) while its \
                 client was told it was connected, without a break since {connected_at:.3?}"
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Lost writes
// ---------------------------------------------------------------------------------------------

/// An acknowledged write (create or setData) and the stamp its reply carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckedWrite {
    /// The znode written.
    pub path: String,
    /// The data written.
    pub value: Value,
    /// The zxid of the write (`Stat.mzxid` of the reply; `czxid` for a create).
    pub zxid: u64,
    /// The data version after the write (0 for a create). Orders writes sharing a zxid (one
    /// multi, or one group-committed entry).
    pub version: i32,
}

/// A delete whose effect may explain a missing znode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteRecord {
    /// The znode deleted.
    pub path: String,
    /// The zxid of an acknowledged delete; `None` if its outcome is unknown.
    pub zxid: Option<u64>,
}

/// A znode as read back at the end of a run (after healing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalNode {
    /// Its data.
    pub value: Value,
    /// `Stat.mzxid`.
    pub mzxid: u64,
    /// `Stat.version`.
    pub version: i32,
}

/// Every acknowledged write must be present in the final tree or superseded by a later change:
/// the final `(mzxid, version)` of its path is at least the write's (equal: same data), or the
/// path is gone and an acknowledged delete at or after the write's zxid, or a delete of unknown
/// outcome, explains it. `final_tree` maps each written path to what the final read returned
/// (`None` = NoNode); a written path missing from it counts as lost ("never read back").
pub fn no_lost_writes(
    acked: &[AckedWrite],
    deletes: &[DeleteRecord],
    final_tree: &BTreeMap<String, Option<FinalNode>>,
) -> Vec<Anomaly> {
    let mut anomalies = Vec::new();
    for w in acked {
        let lost = |found: String| Anomaly::LostWrite {
            path: w.path.clone(),
            zxid: w.zxid,
            found,
        };
        match final_tree.get(&w.path) {
            None => anomalies.push(lost("never read back".into())),
            Some(Some(node)) => {
                let ord = (node.mzxid, node.version).cmp(&(w.zxid, w.version));
                if ord.is_lt() || (ord.is_eq() && node.value != w.value) {
                    anomalies.push(lost(format!(
                        "{:?} at zxid {} version {}",
                        node.value, node.mzxid, node.version
                    )));
                }
            }
            Some(None) => {
                let explained = deletes
                    .iter()
                    .any(|d| d.path == w.path && d.zxid.is_none_or(|z| z >= w.zxid));
                if !explained {
                    anomalies.push(lost("NoNode and no delete after the write".into()));
                }
            }
        }
    }
    anomalies
}

// ---------------------------------------------------------------------------------------------
// Sequential names
// ---------------------------------------------------------------------------------------------

/// An acknowledged sequential create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqCreate {
    /// The path the server returned (parent + prefix + 10-digit counter).
    pub name: String,
    /// Logical time of the invocation.
    pub call: u64,
    /// Logical time of the acknowledgement.
    pub ret: u64,
}

/// Splits a sequential name into (parent, counter).
fn split_sequential(name: &str) -> Result<(&str, i64), FaultsError> {
    let bad = || FaultsError::BadSequentialName(name.to_string());
    let parent = name.rfind('/').map(|i| &name[..i]).ok_or_else(bad)?;
    let suffix = name
        .len()
        .checked_sub(10)
        .and_then(|i| name.get(i..))
        .ok_or_else(bad)?;
    if !suffix.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        return Err(bad());
    }
    Ok((parent, suffix.parse().map_err(|_| bad())?))
}

/// Per parent, acknowledged sequential names are unique, and a create invoked after another was
/// acknowledged gets a greater counter (real-time order).
pub fn sequential_names_unique_increasing(
    creates: &[SeqCreate],
) -> Result<Vec<Anomaly>, FaultsError> {
    let mut by_parent: BTreeMap<&str, Vec<(i64, &SeqCreate)>> = BTreeMap::new();
    for c in creates {
        let (parent, counter) = split_sequential(&c.name)?;
        by_parent.entry(parent).or_default().push((counter, c));
    }
    let mut anomalies = Vec::new();
    for list in by_parent.values() {
        let mut seen = HashSet::new();
        for (counter, c) in list {
            if !seen.insert(*counter) {
                anomalies.push(Anomaly::DuplicateSequential {
                    name: c.name.clone(),
                });
            }
        }
        // Sweep: for each create in call order, the largest counter among creates acknowledged
        // before its call must be smaller than its own.
        let mut by_ret: Vec<&(i64, &SeqCreate)> = list.iter().collect();
        by_ret.sort_by_key(|(_, c)| c.ret);
        let mut by_call: Vec<&(i64, &SeqCreate)> = list.iter().collect();
        by_call.sort_by_key(|(_, c)| c.call);
        let mut done = 0;
        let mut max_done: Option<&(i64, &SeqCreate)> = None;
        for later in by_call {
            while done < by_ret.len() && by_ret[done].1.ret < later.1.call {
                if max_done.is_none_or(|m| by_ret[done].0 > m.0) {
                    max_done = Some(by_ret[done]);
                }
                done += 1;
            }
            if let Some(earlier) = max_done {
                if earlier.0 >= later.0 {
                    anomalies.push(Anomaly::SequentialNotIncreasing {
                        earlier: earlier.1.name.clone(),
                        later: later.1.name.clone(),
                    });
                }
            }
        }
    }
    Ok(anomalies)
}

// ---------------------------------------------------------------------------------------------
// Locks
// ---------------------------------------------------------------------------------------------

/// The time a client believed it held the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldInterval {
    /// The holder.
    pub client: u64,
    /// Its fencing token (e.g. the counter of its lock node, or its czxid).
    pub token: u64,
    /// Logical time its acquire completed.
    pub acquired: u64,
    /// Logical time it started releasing, or learned it lost the lock (session lost); `None`:
    /// held to the end of the run.
    pub released: Option<u64>,
}

/// No two holder intervals overlap, and tokens strictly increase in acquisition order.
pub fn lock_never_two_holders(intervals: &[HoldInterval]) -> Result<Vec<Anomaly>, FaultsError> {
    for i in intervals {
        if let Some(r) = i.released {
            if r < i.acquired {
                return Err(FaultsError::BadInterval {
                    client: i.client,
                    acquired: i.acquired,
                    released: r,
                });
            }
        }
    }
    let mut sorted: Vec<&HoldInterval> = intervals.iter().collect();
    sorted.sort_by_key(|i| i.acquired);
    let mut anomalies = Vec::new();
    // The interval reaching furthest so far (None end = forever).
    let mut longest: Option<&HoldInterval> = None;
    for pair in sorted.windows(2) {
        if pair[1].token <= pair[0].token {
            anomalies.push(Anomaly::TokenNotIncreasing {
                earlier: (pair[0].client, pair[0].token),
                later: (pair[1].client, pair[1].token),
            });
        }
    }
    for cur in sorted {
        if let Some(holder) = longest {
            if holder.released.is_none_or(|r| cur.acquired < r) {
                anomalies.push(Anomaly::TwoLockHolders {
                    first: (holder.client, holder.token),
                    second: (cur.client, cur.token),
                });
            }
        }
        let reaches_further = match (longest.map(|h| h.released), cur.released) {
            (None, _) => true,
            (Some(None), _) => false,
            (Some(Some(_)), None) => true,
            (Some(Some(a)), Some(b)) => b > a,
        };
        if reaches_further {
            longest = Some(cur);
        }
    }
    Ok(anomalies)
}

// ---------------------------------------------------------------------------------------------
// Watches
// ---------------------------------------------------------------------------------------------

/// What happened to a znode (the event types a persistent recursive watch delivers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChangeKind {
    /// NodeCreated.
    Created,
    /// NodeDataChanged.
    DataChanged,
    /// NodeDeleted.
    Deleted,
}

/// A change to a znode: an acknowledged write, or the watch event it caused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Change {
    /// The znode.
    pub path: String,
    /// The zxid of the change (the reply's / the event's).
    pub zxid: u64,
    /// What happened.
    pub kind: ChangeKind,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {} @{}", self.kind, self.path, self.zxid)
    }
}

/// Whether `path` is `root` or under it.
fn in_subtree(root: &str, path: &str) -> bool {
    root == "/"
        || path == root
        || (path.starts_with(root) && path.as_bytes().get(root.len()) == Some(&b'/'))
}

/// When a recording watcher may stop. Its server can apply the last acknowledged changes
/// well after the leader acknowledged them (a follower learns the commit index with the next
/// heartbeat or later on a loaded machine), so "no event for a while after the clients were
/// told to stop" is no proof that nothing is left to come: a watcher that stopped at the first
/// such lull reported the last changes' events as missed (issue 11). It may stop once every
/// client that could be told of a success has stopped and it has seen the event of the last
/// acknowledged change, or when `limit` has passed since the stop (what is missing then is
/// missing).
#[derive(Debug, Clone)]
pub struct WatchDrain {
    /// Give up waiting this long after the stop.
    limit: Duration,
    /// The highest zxid of an event received.
    last_seen: u64,
    /// When the watcher first saw the stop.
    stopped_at: Option<std::time::Instant>,
    /// Whether a lull has been seen since the stop.
    lull: bool,
    /// Events received after such a lull (what a stop-at-first-lull watcher would have missed).
    after_lull: usize,
}

/// Why a [`WatchDrain`] let its watcher stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// It had seen the event of the last acknowledged change.
    Complete {
        /// Events that arrived after a lull since the stop.
        after_lull: usize,
    },
    /// The limit passed first.
    GaveUp,
}

impl WatchDrain {
    /// A watcher that waits at most `limit` after the stop.
    pub fn new(limit: Duration) -> Self {
        WatchDrain {
            limit,
            last_seen: 0,
            stopped_at: None,
            lull: false,
            after_lull: 0,
        }
    }

    /// The clients were told to stop (the first call counts).
    pub fn stop(&mut self, now: std::time::Instant) {
        self.stopped_at.get_or_insert(now);
    }

    /// An event with `zxid` arrived.
    pub fn event(&mut self, zxid: i64) {
        self.last_seen = self.last_seen.max(zxid.max(0) as u64);
        self.after_lull += usize::from(self.lull);
    }

    /// No event came for a while: `Some` if the watcher may stop now. `writers_done`: no client
    /// can be told of another success; `last_acked`: the zxid of the last acknowledged change.
    pub fn lull(
        &mut self,
        now: std::time::Instant,
        writers_done: bool,
        last_acked: u64,
    ) -> Option<Drained> {
        let since = self.stopped_at?;
        self.lull = true;
        if writers_done && self.last_seen >= last_acked {
            Some(Drained::Complete {
                after_lull: self.after_lull,
            })
        } else if now.duration_since(since) > self.limit {
            Some(Drained::GaveUp)
        } else {
            None
        }
    }
}

/// A persistent recursive watcher on `root` received (`received`, in arrival order) every
/// acknowledged change under `root` exactly once, in non-decreasing zxid order (changes of one
/// multi share a zxid); events matching no acknowledged change are allowed at most once each and
/// at most as many per path as there were writes of unknown outcome on it (`unknown_paths`, one
/// entry per such write). The caller passes only the changes made while the watch was in place
/// (zxid above the one current when it was added).
pub fn watch_events_exactly_once_in_order(
    root: &str,
    received: &[Change],
    acked: &[Change],
    unknown_paths: &[String],
) -> Vec<Anomaly> {
    let mut anomalies = Vec::new();
    for pair in received.windows(2) {
        if pair[1].zxid < pair[0].zxid {
            anomalies.push(Anomaly::EventOutOfOrder {
                before: pair[0].clone(),
                after: pair[1].clone(),
            });
        }
    }
    let mut seen: HashSet<&Change> = HashSet::new();
    let mut unexplained: Vec<&Change> = Vec::new();
    let expected: HashSet<&Change> = acked.iter().filter(|c| in_subtree(root, &c.path)).collect();
    for e in received {
        if !in_subtree(root, &e.path) {
            anomalies.push(Anomaly::EventOutsideSubtree { change: e.clone() });
        } else if !seen.insert(e) {
            anomalies.push(Anomaly::DuplicateEvent { change: e.clone() });
        } else if !expected.contains(e) {
            unexplained.push(e);
        }
    }
    let mut acked_sorted: Vec<&&Change> = expected.iter().collect();
    acked_sorted.sort();
    for c in acked_sorted {
        if !seen.contains(*c) {
            anomalies.push(Anomaly::MissedEvent {
                change: (*c).clone(),
            });
        }
    }
    let mut allowance: HashMap<&str, usize> = HashMap::new();
    for p in unknown_paths {
        *allowance.entry(p.as_str()).or_default() += 1;
    }
    for e in unexplained {
        match allowance.get_mut(e.path.as_str()) {
            Some(n) if *n > 0 => *n -= 1,
            _ => anomalies.push(Anomaly::UnexpectedEvent { change: e.clone() }),
        }
    }
    anomalies
}

// ---------------------------------------------------------------------------------------------
// Ephemerals
// ---------------------------------------------------------------------------------------------

/// A client session's life as the driver controlled it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionLife {
    /// The session id.
    pub session: u64,
    /// The negotiated session timeout.
    pub timeout: Duration,
    /// When it stopped being kept alive (close sent, client killed, paused or cut off); `None`:
    /// alive to the end of the run.
    pub alive_until: Option<Duration>,
    /// By when it must have ended, where faults moved that bound (a new leader restarts every
    /// deadline from its takeover; no session ends while no leader can commit: DESIGN.md §6);
    /// `None`: `alive_until` + timeout + tick.
    pub must_end_by: Option<Duration>,
}

/// A fault of the leader (killed, paused, cut off, removed): from `start` until `end` (its
/// restart, resume or heal) no leader may have been able to commit, unless another took over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderFault {
    /// When the fault was injected.
    pub start: Duration,
    /// When it was healed.
    pub end: Duration,
}

/// How long into a fault a leader may first count as cut off from the quorum (the server's
/// `cut_off.rs`: 2 s without a quorum's acknowledgement, seen for 2 s on end; it can be a
/// little less, from an acknowledgement up to a heartbeat before the fault, which the suite's
/// whole-second holds leave room for).
pub const LEADER_CUT_OFF: Duration = Duration::from_secs(4);

/// By when a session whose client went silent at `until` must have ended (DESIGN.md §6,
/// "Sessions"): `timeout` + `tick` after `until`, moved later by
/// - every takeover after `until` and before the bound: to the takeover + `timeout` + `tick` (a
///   new leader restarts every deadline from its takeover);
/// - every leader fault under way before the bound: to the first takeover after the fault's
///   start + `timeout` + `tick` (the fault's election may end after the old bound), and to the
///   fault's end + `tick` (no session ends while no leader can commit; a leader that kept its
///   office through the fault ends what fell due within one check after it); and, for a fault
///   longer than [`LEADER_CUT_OFF`] with no takeover during it, to its end + `timeout` +
///   `tick` (a leader cut off from the quorum for that long restarts every deadline when the
///   quorum is back, as a new leader does: the server's `cut_off.rs`).
///
/// `faults` in start order, `takeovers` sorted.
pub fn session_end_bound(
    until: Duration,
    timeout: Duration,
    tick: Duration,
    faults: &[LeaderFault],
    takeovers: &[Duration],
) -> Duration {
    let mut bound = until + timeout + tick;
    // Each pass can only move the bound later, and it moves only to one of finitely many
    // points: repeat until it settles.
    loop {
        let before = bound;
        for fault in faults.iter().filter(|f| f.end >= until) {
            if fault.start > bound {
                break;
            }
            if let Some(takeover) = takeovers.iter().find(|t| **t >= fault.start) {
                bound = bound.max(*takeover + timeout + tick);
            }
            bound = bound.max(fault.end + tick);
            let kept_office = !takeovers
                .iter()
                .any(|t| *t >= fault.start && *t <= fault.end + tick);
            if kept_office && fault.end.saturating_sub(fault.start) > LEADER_CUT_OFF {
                bound = bound.max(fault.end + timeout + tick);
            }
        }
        for takeover in takeovers.iter().filter(|t| **t >= until) {
            if *takeover > bound {
                break;
            }
            bound = bound.max(*takeover + timeout + tick);
        }
        if bound == before {
            return bound;
        }
    }
}

/// An ephemeral znode created by the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EphemeralNode {
    /// Its path.
    pub path: String,
    /// Its owner session.
    pub session: u64,
    /// When its create was acknowledged.
    pub created: Duration,
    /// When the driver sent an explicit delete of it, if it did.
    pub deleted: Option<Duration>,
}

/// A read of an ephemeral's path (`exists`/`getData`), with the owner the Stat showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The path read.
    pub path: String,
    /// When the read was sent.
    pub call: Duration,
    /// When its answer arrived.
    pub ret: Duration,
    /// `Stat.ephemeralOwner` if the znode existed, `None` for NoNode.
    pub owner: Option<u64>,
}

/// An ephemeral must exist (owned by its session) while its session is alive and not deleted,
/// and be gone once `session end + timeout + tick` has passed. A read counts only if its whole
/// interval falls inside the period it is judged against.
pub fn ephemeral_lifetime(
    sessions: &[SessionLife],
    ephemerals: &[EphemeralNode],
    observations: &[Observation],
    tick: Duration,
) -> Vec<Anomaly> {
    let by_id: HashMap<u64, &SessionLife> = sessions.iter().map(|s| (s.session, s)).collect();
    let mut by_path: HashMap<&str, Vec<&Observation>> = HashMap::new();
    for o in observations {
        by_path.entry(o.path.as_str()).or_default().push(o);
    }
    let mut anomalies = Vec::new();
    for e in ephemerals {
        let life = by_id.get(&e.session);
        let alive_until = life.and_then(|l| l.alive_until);
        let must_exist_until = match (alive_until, e.deleted) {
            (Some(a), Some(d)) => Some(a.min(d)),
            (a, d) => a.or(d),
        };
        let deadline = life.and_then(|l| {
            l.must_end_by
                .or(l.alive_until.map(|a| a + l.timeout + tick))
        });
        for o in by_path.get(e.path.as_str()).into_iter().flatten() {
            let inside_life = o.call >= e.created && must_exist_until.is_none_or(|u| o.ret <= u);
            if inside_life && o.owner != Some(e.session) {
                anomalies.push(Anomaly::EphemeralVanished {
                    path: e.path.clone(),
                    session: e.session,
                    at: o.call,
                });
            }
            if let Some(deadline) = deadline {
                if o.owner == Some(e.session) && o.call > deadline {
                    anomalies.push(Anomaly::EphemeralOutlived {
                        path: e.path.clone(),
                        session: e.session,
                        at: o.call,
                        deadline,
                    });
                }
            }
        }
    }
    anomalies
}

// ---------------------------------------------------------------------------------------------
// Summary
// ---------------------------------------------------------------------------------------------

/// The longest wall-clock stretch without a single acknowledged operation, from the first
/// invocation to the last event of the history (the first and last stretches included).
pub fn max_unavailability<O, R>(ops: &[Operation<O, R>]) -> Duration {
    let Some(start) = ops.iter().map(|o| o.call_at).min() else {
        return Duration::ZERO;
    };
    let end = ops
        .iter()
        .map(|o| o.ret_at.unwrap_or(o.call_at).max(o.call_at))
        .max()
        .unwrap_or(start);
    let mut acks: Vec<Duration> = ops
        .iter()
        .filter(|o| o.is_ok())
        .filter_map(|o| o.ret_at)
        .collect();
    acks.sort_unstable();
    let mut last = start;
    let mut worst = Duration::ZERO;
    for t in acks.into_iter().chain(std::iter::once(end)) {
        worst = worst.max(t.saturating_sub(last));
        last = last.max(t);
    }
    worst
}

// ---------------------------------------------------------------------------------------------
// What an idle session's client was told
// ---------------------------------------------------------------------------------------------

/// A client's view of its session, as its state changes told it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientView {
    /// Connected to a server, the session alive as far as the client knows.
    Connected,
    /// The connection broke; the client is looking for a server.
    Disconnected,
    /// The session ended (expired, or closed).
    Ended,
}

/// The state changes an idle session's client saw, at offsets from the history's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientStates {
    /// The session.
    pub session: u64,
    /// Its negotiated timeout.
    pub timeout: Duration,
    /// Each change of view, in order; the first is the connection at the start.
    pub changes: Vec<(Duration, ClientView)>,
}

/// How long a client may take to learn that its session ended once its server knows (the
/// server closes the connection; the client reconnects and is told, within milliseconds): a
/// change of view within this before the end does not count as a warning. Well under a third
/// of the timeouts the fault suite uses: a client whose server stopped answering is
/// `Disconnected` after two thirds of its timeout, and that must count as a warning.
pub const END_NOTICE: Duration = Duration::from_secs(1);

/// A client told that it is connected holds a live session (ZooKeeper's promise, on which the
/// lock and election recipes rest): its server stops answering it before its quorum can expire
/// the session, so the client sees `Disconnected` first. So a session must not end while its
/// client saw itself connected without a break over the whole `timeout` before it learned of
/// the end (less [`END_NOTICE`], the time the news takes to reach it).
pub fn session_ended_while_connected(clients: &[ClientStates]) -> Vec<Anomaly> {
    let mut anomalies = Vec::new();
    for c in clients {
        let Some(end) = c.changes.iter().position(|(_, v)| *v == ClientView::Ended) else {
            continue;
        };
        let ended_at = c.changes[end].0;
        let before = &c.changes[..end];
        // The last change at or before the window's start must be a connection, and no change
        // may fall inside the window.
        let window_start = ended_at.saturating_sub(c.timeout);
        let window_end = ended_at.saturating_sub(END_NOTICE);
        let Some(&(connected_at, ClientView::Connected)) =
            before.iter().rev().find(|(at, _)| *at <= window_start)
        else {
            continue;
        };
        let broken = before
            .iter()
            .any(|(at, _)| *at > window_start && *at <= window_end);
        if !broken && window_end > window_start {
            anomalies.push(Anomaly::SessionEndedWhileConnected {
                session: c.session,
                connected_at,
                ended_at,
            });
        }
    }
    anomalies
}

/// One row of the fault suite's result table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Summary {
    /// The scenario's name.
    pub scenario: String,
    /// Operations invoked.
    pub operations: usize,
    /// Operations acknowledged (`Ok`).
    pub acknowledged: usize,
    /// Acknowledged writes lost.
    pub lost: usize,
    /// Anomalies of every kind (lost writes included, plus one per non-linearizable part).
    pub anomalies: usize,
    /// The longest stretch without an acknowledged operation.
    pub max_unavailability: Duration,
}

impl Summary {
    /// A row for `scenario` with counts and unavailability taken from `ops`; add `lost` and
    /// `anomalies` from the checks.
    pub fn from_operations<O, R>(scenario: impl Into<String>, ops: &[Operation<O, R>]) -> Self {
        Self {
            scenario: scenario.into(),
            operations: ops.len(),
            acknowledged: ops.iter().filter(|o| o.is_ok()).count(),
            lost: 0,
            anomalies: 0,
            max_unavailability: max_unavailability(ops),
        }
    }

    /// Adds more operations (another history of the same scenario).
    pub fn add_operations<O, R>(&mut self, ops: &[Operation<O, R>]) {
        self.operations += ops.len();
        self.acknowledged += ops.iter().filter(|o| o.is_ok()).count();
        self.max_unavailability = self.max_unavailability.max(max_unavailability(ops));
    }

    /// Adds the anomalies of a check, counting lost writes as lost too.
    pub fn add_anomalies(&mut self, anomalies: &[Anomaly]) {
        self.anomalies += anomalies.len();
        self.lost += anomalies
            .iter()
            .filter(|a| matches!(a, Anomaly::LostWrite { .. }))
            .count();
    }

    /// The table header matching the [`fmt::Display`] rows.
    pub fn header() -> String {
        format!(
            "{:<28} {:>10} {:>12} {:>6} {:>10} {:>18}",
            "scenario", "operations", "acknowledged", "lost", "anomalies", "max unavailability"
        )
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<28} {:>10} {:>12} {:>6} {:>10} {:>16}ms",
            self.scenario,
            self.operations,
            self.acknowledged,
            self.lost,
            self.anomalies,
            self.max_unavailability.as_millis()
        )
    }
}

#[cfg(test)]
mod drain_tests {
    use super::*;
    use std::time::Instant;

    const MS: Duration = Duration::from_millis(1);

    /// The race behind issue 11's "missed watch event" in kill-connected-server: the last two
    /// acknowledged changes reached the watcher's server (a follower) after a lull of 200 ms
    /// since the stop. A watcher that stopped at that lull lost them; this one waits.
    #[test]
    fn a_lull_before_the_last_acknowledged_events_does_not_end_the_recording() {
        let t0 = Instant::now();
        let mut d = WatchDrain::new(Duration::from_secs(15));
        d.event(10 << 16);
        assert_eq!(
            d.lull(t0 + 100 * MS, false, 10 << 16),
            None,
            "not stopped yet"
        );
        d.stop(t0 + 150 * MS);
        // The writers are done and were told of zxids 0x...b and 0x...c; the follower has not
        // applied them yet: 200 ms without an event.
        assert_eq!(d.lull(t0 + 350 * MS, true, 12 << 16), None);
        d.event(11 << 16);
        d.event(12 << 16);
        assert_eq!(
            d.lull(t0 + 600 * MS, true, 12 << 16),
            Some(Drained::Complete { after_lull: 2 })
        );
    }

    #[test]
    fn the_drain_waits_for_the_writers_and_gives_up_at_its_limit() {
        let t0 = Instant::now();
        let mut d = WatchDrain::new(Duration::from_secs(1));
        d.stop(t0);
        d.event(5 << 16);
        assert_eq!(
            d.lull(t0 + 200 * MS, false, 5 << 16),
            None,
            "writers still running"
        );
        assert_eq!(d.lull(t0 + 900 * MS, true, 6 << 16), None);
        assert_eq!(d.lull(t0 + 1100 * MS, true, 6 << 16), Some(Drained::GaveUp));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Outcome;

    fn w(path: &str, value: &str, zxid: u64, version: i32) -> AckedWrite {
        AckedWrite {
            path: path.into(),
            value: value.into(),
            zxid,
            version,
        }
    }

    fn node(value: &str, mzxid: u64, version: i32) -> Option<FinalNode> {
        Some(FinalNode {
            value: value.into(),
            mzxid,
            version,
        })
    }

    #[test]
    fn lost_writes() {
        let acked = [
            w("/a", "1", 10, 1),
            w("/a", "2", 12, 2),
            w("/b", "x", 11, 0),
            w("/c", "y", 13, 4),
            w("/d", "z", 14, 0),
            w("/e", "q", 15, 0),
            w("/f", "g1", 16, 1),
            w("/f", "g2", 16, 2),
        ];
        let deletes = [
            DeleteRecord {
                path: "/c".into(),
                zxid: Some(20),
            },
            DeleteRecord {
                path: "/d".into(),
                zxid: Some(3),
            },
            DeleteRecord {
                path: "/e".into(),
                zxid: None,
            },
        ];
        let final_tree: BTreeMap<String, Option<FinalNode>> = [
            ("/a".to_string(), node("2", 12, 2)), // latest present, earlier superseded
            ("/b".to_string(), node("x", 9, 0)),  // older than the acknowledged write: lost
            ("/c".to_string(), None),             // deleted afterwards
            ("/d".to_string(), None),             // only deleted before the write: lost
            ("/e".to_string(), None),             // a delete of unknown outcome explains it
            ("/f".to_string(), node("g1", 16, 2)), // same stamp as g2 but other data: lost
        ]
        .into_iter()
        .collect();
        let mut anomalies = no_lost_writes(&acked, &deletes, &final_tree);
        anomalies.push(Anomaly::DuplicateSequential {
            name: "sentinel".into(),
        });
        let lost: Vec<&str> = anomalies
            .iter()
            .filter_map(|a| match a {
                Anomaly::LostWrite { path, .. } => Some(path.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(lost, ["/b", "/d", "/f"]);
        let never = no_lost_writes(&[w("/zz", "1", 1, 0)], &[], &final_tree);
        assert!(
            matches!(&never[..], [Anomaly::LostWrite { found, .. }] if found == "never read back")
        );
    }

    fn seq(name: &str, call: u64, ret: u64) -> SeqCreate {
        SeqCreate {
            name: name.into(),
            call,
            ret,
        }
    }

    #[test]
    fn sequential_names() {
        // Concurrent creates may get counters in any order; sequential ones must increase.
        let fine = [
            seq("/q/n-0000000001", 0, 3),
            seq("/q/n-0000000000", 1, 4),
            seq("/q/n-0000000002", 5, 6),
            seq("/r/n-0000000000", 7, 8), // another parent counts on its own
        ];
        assert_eq!(sequential_names_unique_increasing(&fine), Ok(vec![]));

        let bad = [
            seq("/q/n-0000000005", 0, 1),
            seq("/q/n-0000000004", 2, 3),
            seq("/q/n-0000000006", 4, 5),
            seq("/q/n-0000000006", 6, 7),
        ];
        let anomalies = sequential_names_unique_increasing(&bad).expect("well-formed names");
        assert!(anomalies.contains(&Anomaly::DuplicateSequential {
            name: "/q/n-0000000006".into()
        }));
        assert!(anomalies.contains(&Anomaly::SequentialNotIncreasing {
            earlier: "/q/n-0000000005".into(),
            later: "/q/n-0000000004".into()
        }));
        assert!(anomalies.iter().any(|a| matches!(a,
            Anomaly::SequentialNotIncreasing { later, .. } if later == "/q/n-0000000006")));
        assert_eq!(
            sequential_names_unique_increasing(&[seq("/q/n-12", 0, 1)]),
            Err(FaultsError::BadSequentialName("/q/n-12".into()))
        );
    }

    fn hold(client: u64, token: u64, acquired: u64, released: Option<u64>) -> HoldInterval {
        HoldInterval {
            client,
            token,
            acquired,
            released,
        }
    }

    #[test]
    fn lock_holders() {
        let fine = [
            hold(1, 10, 0, Some(5)),
            hold(2, 11, 6, Some(9)),
            hold(1, 14, 10, None),
        ];
        assert_eq!(lock_never_two_holders(&fine), Ok(vec![]));

        let overlap = [hold(1, 10, 0, Some(5)), hold(2, 11, 4, Some(9))];
        assert_eq!(
            lock_never_two_holders(&overlap),
            Ok(vec![Anomaly::TwoLockHolders {
                first: (1, 10),
                second: (2, 11)
            }])
        );
        // A holder that never released overlaps everyone after it, even past a short interval.
        let forever = [
            hold(1, 10, 0, None),
            hold(2, 11, 3, Some(4)),
            hold(3, 12, 6, Some(7)),
        ];
        let anomalies = lock_never_two_holders(&forever).expect("well-formed");
        assert_eq!(anomalies.len(), 2);
        assert!(anomalies
            .iter()
            .all(|a| matches!(a, Anomaly::TwoLockHolders { first: (1, 10), .. })));

        let tokens = [hold(1, 10, 0, Some(5)), hold(2, 10, 6, Some(9))];
        assert_eq!(
            lock_never_two_holders(&tokens),
            Ok(vec![Anomaly::TokenNotIncreasing {
                earlier: (1, 10),
                later: (2, 10)
            }])
        );
        assert_eq!(
            lock_never_two_holders(&[hold(1, 1, 5, Some(4))]),
            Err(FaultsError::BadInterval {
                client: 1,
                acquired: 5,
                released: 4
            })
        );
    }

    fn ch(path: &str, zxid: u64, kind: ChangeKind) -> Change {
        Change {
            path: path.into(),
            zxid,
            kind,
        }
    }

    #[test]
    fn watch_events() {
        use ChangeKind::*;
        let acked = [
            ch("/w/a", 5, Created),
            ch("/w/a", 7, DataChanged),
            ch("/w/b", 7, Created), // same multi as the previous
            ch("/w/a/x", 9, Deleted),
            ch("/other", 8, Created), // outside the watch: not expected
        ];
        let received = [
            ch("/w/a", 5, Created),
            ch("/w/b", 7, Created),
            ch("/w/a", 7, DataChanged),
            ch("/w/a/x", 9, Deleted),
        ];
        assert_eq!(
            watch_events_exactly_once_in_order("/w", &received, &acked, &[]),
            vec![]
        );

        // An unknown write on /w/b explains one extra event there, not two.
        let extra = [
            ch("/w/a", 5, Created),
            ch("/w/b", 6, DataChanged),
            ch("/w/b", 6, DataChanged),
        ];
        let anomalies =
            watch_events_exactly_once_in_order("/w", &extra, &acked[..1], &["/w/b".to_string()]);
        assert_eq!(
            anomalies,
            vec![Anomaly::DuplicateEvent {
                change: ch("/w/b", 6, DataChanged)
            }]
        );
        let anomalies = watch_events_exactly_once_in_order("/w", &extra[..2], &acked[..1], &[]);
        assert_eq!(
            anomalies,
            vec![Anomaly::UnexpectedEvent {
                change: ch("/w/b", 6, DataChanged)
            }]
        );

        let bad = [
            ch("/w/a", 7, DataChanged),
            ch("/w/a", 5, Created),
            ch("/wx", 10, Created),
        ];
        let anomalies = watch_events_exactly_once_in_order("/w", &bad, &acked, &[]);
        assert!(anomalies.contains(&Anomaly::EventOutOfOrder {
            before: ch("/w/a", 7, DataChanged),
            after: ch("/w/a", 5, Created)
        }));
        assert!(anomalies.contains(&Anomaly::EventOutsideSubtree {
            change: ch("/wx", 10, Created)
        }));
        assert!(anomalies.contains(&Anomaly::MissedEvent {
            change: ch("/w/b", 7, Created)
        }));
        assert!(anomalies.contains(&Anomaly::MissedEvent {
            change: ch("/w/a/x", 9, Deleted)
        }));
        assert_eq!(anomalies.len(), 4);
        // The root watches everything.
        assert_eq!(
            watch_events_exactly_once_in_order("/", &[ch("/other", 8, Created)], &acked[4..], &[]),
            vec![]
        );
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn obs(path: &str, call: u64, ret: u64, owner: Option<u64>) -> Observation {
        Observation {
            path: path.into(),
            call: ms(call),
            ret: ms(ret),
            owner,
        }
    }

    #[test]
    fn ephemeral_lifetimes() {
        let sessions = [
            SessionLife {
                session: 1,
                timeout: ms(1000),
                alive_until: Some(ms(5000)),
                must_end_by: None,
            },
            SessionLife {
                session: 2,
                timeout: ms(1000),
                alive_until: None,
                must_end_by: None,
            },
        ];
        let ephemerals = [
            EphemeralNode {
                path: "/e1".into(),
                session: 1,
                created: ms(100),
                deleted: None,
            },
            EphemeralNode {
                path: "/e2".into(),
                session: 2,
                created: ms(100),
                deleted: Some(ms(3000)),
            },
        ];
        let tick = ms(200);
        let fine = [
            obs("/e1", 50, 90, None),        // before it was created
            obs("/e1", 200, 210, Some(1)),   // alive
            obs("/e1", 4990, 5010, None),    // straddles the session's end: not judged
            obs("/e1", 5500, 5510, Some(1)), // within timeout + tick of the end
            obs("/e1", 6300, 6310, None),    // gone after the deadline
            obs("/e2", 2000, 2010, Some(2)),
            obs("/e2", 3100, 3110, None),    // explicitly deleted
            obs("/e1", 7000, 7010, Some(9)), // recreated by another session later
        ];
        assert_eq!(
            ephemeral_lifetime(&sessions, &ephemerals, &fine, tick),
            vec![]
        );

        let bad = [
            obs("/e1", 1000, 1010, None),
            obs("/e1", 6300, 6310, Some(1)),
            obs("/e2", 2000, 2010, Some(7)),
        ];
        assert_eq!(
            ephemeral_lifetime(&sessions, &ephemerals, &bad, tick),
            vec![
                Anomaly::EphemeralVanished {
                    path: "/e1".into(),
                    session: 1,
                    at: ms(1000)
                },
                Anomaly::EphemeralOutlived {
                    path: "/e1".into(),
                    session: 1,
                    at: ms(6300),
                    deadline: ms(6200)
                },
                Anomaly::EphemeralVanished {
                    path: "/e2".into(),
                    session: 2,
                    at: ms(2000)
                },
            ]
        );
    }

    #[test]
    fn session_end_bounds_move_with_leader_faults() {
        let (timeout, tick) = (ms(1000), ms(500));
        let fault = |start, end| LeaderFault {
            start: ms(start),
            end: ms(end),
        };
        // No fault: silent + timeout + tick.
        assert_eq!(
            session_end_bound(ms(5000), timeout, tick, &[], &[]),
            ms(6500)
        );
        // A fault before the session went silent, or after its bound, moves nothing.
        let far = [fault(1000, 2000), fault(9000, 9500)];
        assert_eq!(
            session_end_bound(ms(5000), timeout, tick, &far, &[ms(1800), ms(9400)]),
            ms(6500)
        );
        // A takeover restarts the countdown.
        let killed = [fault(5500, 8000)];
        assert_eq!(
            session_end_bound(ms(5000), timeout, tick, &killed, &[ms(7000)]),
            ms(8500)
        );
        // No takeover before the fault healed: the bound is the heal + one tick (the old
        // leader could not commit until then).
        let muted = [fault(6000, 8000)];
        assert_eq!(
            session_end_bound(ms(5000), timeout, tick, &muted, &[]),
            ms(8500)
        );
        // A leader cut off for longer than LEADER_CUT_OFF restarts the countdown when the
        // quorum is back, even without a takeover.
        let cut = [fault(6000, 10_500)];
        assert_eq!(
            session_end_bound(ms(5000), timeout, tick, &cut, &[]),
            ms(12_000)
        );
        // With a takeover during it, the old leader's restart does not matter: the new
        // leader's takeover and the heal bound it.
        assert_eq!(
            session_end_bound(ms(5000), timeout, tick, &cut, &[ms(8000)]),
            ms(11_000)
        );
        // A fault already under way when the client went silent counts too.
        let paused = [fault(4000, 7000)];
        assert_eq!(
            session_end_bound(ms(5000), timeout, tick, &paused, &[]),
            ms(7500)
        );
        // Chained: the first fault's takeover pushes the bound past the second's start.
        let two = [fault(6000, 6400), fault(7000, 9000)];
        assert_eq!(
            session_end_bound(ms(5000), timeout, tick, &two, &[ms(6300)]),
            ms(9500)
        );
        // A paused leader reads as leader for a moment after it resumes; the real takeover
        // comes later, and it is the one that restarts the deadline.
        let paused = [fault(2200, 5200)];
        assert_eq!(
            session_end_bound(ms(3000), timeout, tick, &paused, &[ms(5210), ms(5870)]),
            ms(7370)
        );
        // A takeover with no fault recorded (an election after a lost heartbeat) counts too,
        // but not one after the bound.
        assert_eq!(
            session_end_bound(ms(5000), timeout, tick, &[], &[ms(6000), ms(9000)]),
            ms(7500)
        );
    }

    #[test]
    fn a_moved_bound_replaces_the_default_deadline() {
        let sessions = [SessionLife {
            session: 1,
            timeout: ms(1000),
            alive_until: Some(ms(5000)),
            must_end_by: Some(ms(8000)),
        }];
        let ephemerals = [EphemeralNode {
            path: "/e".into(),
            session: 1,
            created: ms(100),
            deleted: None,
        }];
        let tick = ms(200);
        let within = [obs("/e", 7900, 7910, Some(1))];
        assert_eq!(
            ephemeral_lifetime(&sessions, &ephemerals, &within, tick),
            vec![]
        );
        let late = [obs("/e", 8100, 8110, Some(1))];
        assert_eq!(
            ephemeral_lifetime(&sessions, &ephemerals, &late, tick),
            vec![Anomaly::EphemeralOutlived {
                path: "/e".into(),
                session: 1,
                at: ms(8100),
                deadline: ms(8000)
            }]
        );
    }

    fn op(call: u64, ret: Option<u64>, ok: bool) -> Operation<(), ()> {
        Operation {
            id: 0,
            process: 0,
            op: (),
            call,
            ret,
            outcome: if ok {
                Outcome::Ok(())
            } else {
                Outcome::Unknown
            },
            call_at: ms(call),
            ret_at: ret.map(ms),
        }
    }

    #[test]
    fn unavailability_and_summary_row() {
        assert_eq!(max_unavailability::<(), ()>(&[]), Duration::ZERO);
        let ops = [
            op(0, Some(10), true),
            op(20, Some(30), true),
            op(40, Some(1040), false), // a timeout during an outage
            op(1040, Some(1500), true),
            op(1510, Some(1520), true),
            op(1530, Some(1700), false),
        ];
        assert_eq!(max_unavailability(&ops), ms(1470));
        let mut s = Summary::from_operations("kill-leader", &ops);
        assert_eq!((s.operations, s.acknowledged), (6, 4));
        s.add_anomalies(&[
            Anomaly::LostWrite {
                path: "/a".into(),
                zxid: 1,
                found: "NoNode".into(),
            },
            Anomaly::DuplicateSequential {
                name: "/q/n-0000000001".into(),
            },
        ]);
        s.add_operations(&ops[..1]);
        assert_eq!((s.operations, s.lost, s.anomalies), (7, 1, 2));
        let row = s.to_string();
        let header = Summary::header();
        assert_eq!(row.len(), header.len(), "{header}\n{row}");
        assert!(
            row.starts_with("kill-leader ") && row.ends_with("1470ms"),
            "{row}"
        );
        println!("{header}\n{row}");
    }
}

#[cfg(test)]
mod client_view_tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn states(changes: &[(u32, ClientView)]) -> ClientStates {
        ClientStates {
            session: 7,
            timeout: 6 * S,
            changes: changes.iter().map(|(at, v)| (*at * S, *v)).collect(),
        }
    }

    #[test]
    fn a_session_may_end_only_after_its_client_saw_a_break() {
        use ClientView::*;
        // Connected from 1 s to the end's news at 20 s (its server closed the connection and
        // told it at once): the quorum ended a session whose client was told all along that it
        // was connected.
        let told_connected = states(&[(1, Connected), (20, Disconnected), (20, Ended)]);
        assert_eq!(
            session_ended_while_connected(&[told_connected]),
            vec![Anomaly::SessionEndedWhileConnected {
                session: 7,
                connected_at: S,
                ended_at: 20 * S,
            }]
        );
        // Disconnected for the timeout before the end: the expiry is what the client expects.
        let away = states(&[(1, Connected), (10, Disconnected), (20, Ended)]);
        // Its server stopped answering 2 s before the end's news (a client gives up on a
        // silent server after two thirds of its timeout): warned.
        let silent = states(&[(1, Connected), (18, Disconnected), (20, Ended)]);
        // Back for a moment within the last timeout, then away again: warned.
        let warned = states(&[
            (1, Connected),
            (15, Disconnected),
            (16, Connected),
            (20, Ended),
        ]);
        // Closed soon after connecting, and never ended.
        let early = states(&[(1, Connected), (3, Ended)]);
        let alive = states(&[(1, Connected), (5, Disconnected), (6, Connected)]);
        assert_eq!(
            session_ended_while_connected(&[away, silent, warned, early, alive]),
            vec![]
        );
    }
}
