//! Recording of a concurrent run: every operation's invocation and completion, stamped with a
//! logical clock shared by all clients (and the wall-clock offset, for unavailability figures).
//!
//! A [`History`] is shared by all client tasks/threads (`&History` is `Sync`). A client calls
//! [`History::invoke`] immediately *before* it sends a request and [`History::complete`]
//! immediately *after* it has the answer, so that the recorded interval `[call, ret]` contains
//! the instant the request took effect on the servers. The logical clock is a single counter
//! advanced under the history's lock, so the order of stamps is a real-time order: if `a.ret <
//! b.call` then `a` really finished before `b` started.
//!
//! Completions ([`Outcome`]):
//! - `Ok(result)` — the server answered. Answers that are ZooKeeper errors but are *results of the
//!   model* (BadVersion, NoNode, NodeExists of a register op) should be recorded as `Ok` with the
//!   model's result value, so the checker verifies them too.
//! - `Failed` — the operation definitely did not take effect (a connection error before the request
//!   was written, a request the server refused before proposing it). The checker ignores it.
//! - `Unknown` — a timeout or connection loss after the request may have been sent. The operation
//!   may take effect at any point after its invocation, or never; its completion is +infinity.
//!
//! An operation still pending when [`History::operations`] is called is reported as `Unknown`.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::FaultsError;

/// Index of an operation in its history, handed out by [`History::invoke`].
pub type OpId = usize;

/// How an operation ended, as far as its client knows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome<R> {
    /// The server answered with this result.
    Ok(R),
    /// The operation definitely did not take effect.
    Failed,
    /// The operation may or may not have taken effect (timeout, connection loss after sending,
    /// or never completed).
    Unknown,
}

/// One recorded operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation<O, R> {
    /// Its index in the history (also its [`OpId`]).
    pub id: OpId,
    /// The client (process, session, thread) that issued it; informational for the checker.
    pub process: u64,
    /// What was asked.
    pub op: O,
    /// Logical time of the invocation.
    pub call: u64,
    /// Logical time of the completion, if it completed (also set for `Failed` and `Unknown`
    /// completions; the checker uses it only for `Ok`).
    pub ret: Option<u64>,
    /// How it ended.
    pub outcome: Outcome<R>,
    /// Wall-clock offset of the invocation from the history's creation.
    pub call_at: Duration,
    /// Wall-clock offset of the completion, if it completed.
    pub ret_at: Option<Duration>,
}

impl<O, R> Operation<O, R> {
    /// Whether the server acknowledged it (`Outcome::Ok`).
    pub fn is_ok(&self) -> bool {
        matches!(self.outcome, Outcome::Ok(_))
    }

    /// The result if acknowledged.
    pub fn result(&self) -> Option<&R> {
        match &self.outcome {
            Outcome::Ok(r) => Some(r),
            _ => None,
        }
    }

    /// Logical completion time as the checker sees it: `None` (infinity) unless acknowledged.
    pub fn effective_ret(&self) -> Option<u64> {
        match self.outcome {
            Outcome::Ok(_) => self.ret,
            _ => None,
        }
    }
}

/// The mutable part of a history, behind its lock.
#[derive(Debug)]
struct Inner<O, R> {
    /// The logical clock: the next stamp to hand out.
    clock: u64,
    /// Every operation invoked so far, indexed by [`OpId`].
    ops: Vec<Operation<O, R>>,
    /// Which operations have been completed (an op completed `Unknown` still counts).
    completed: Vec<bool>,
}

/// A thread-safe recorder of operation invocations and completions.
#[derive(Debug)]
pub struct History<O, R> {
    /// Wall-clock origin of the `*_at` offsets.
    start: Instant,
    /// Clock and operations; one lock so that stamps follow real time.
    inner: Mutex<Inner<O, R>>,
}

impl<O: Clone, R: Clone> Default for History<O, R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<O: Clone, R: Clone> History<O, R> {
    /// An empty history whose wall clock starts now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            inner: Mutex::new(Inner {
                clock: 0,
                ops: Vec::new(),
                completed: Vec::new(),
            }),
        }
    }

    /// The wall-clock origin of this history.
    pub fn start(&self) -> Instant {
        self.start
    }

    fn lock(&self) -> MutexGuard<'_, Inner<O, R>> {
        // A client task that panicked while holding the lock left the data consistent (every
        // mutation below is a single push or assignment), so recover it.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records that `process` is about to send `op`; call right before sending.
    pub fn invoke(&self, process: u64, op: O) -> OpId {
        let now = self.start.elapsed();
        let mut inner = self.lock();
        let call = inner.clock;
        inner.clock += 1;
        let id = inner.ops.len();
        inner.ops.push(Operation {
            id,
            process,
            op,
            call,
            ret: None,
            outcome: Outcome::Unknown,
            call_at: now,
            ret_at: None,
        });
        inner.completed.push(false);
        id
    }

    /// Records how operation `id` ended; call right after the answer (or the error) arrived.
    pub fn complete(&self, id: OpId, outcome: Outcome<R>) -> Result<(), FaultsError> {
        let now = self.start.elapsed();
        let mut inner = self.lock();
        match inner.completed.get(id) {
            None => return Err(FaultsError::UnknownOperation(id)),
            Some(true) => return Err(FaultsError::AlreadyCompleted(id)),
            Some(false) => {}
        }
        let ret = inner.clock;
        inner.clock += 1;
        inner.completed[id] = true;
        let op = &mut inner.ops[id];
        op.ret = Some(ret);
        op.ret_at = Some(now);
        op.outcome = outcome;
        Ok(())
    }

    /// Number of operations invoked so far.
    pub fn len(&self) -> usize {
        self.lock().ops.len()
    }

    /// Whether nothing was invoked yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of every operation recorded so far; pending ones appear as `Unknown`.
    pub fn operations(&self) -> Vec<Operation<O, R>> {
        self.lock().ops.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn stamps_follow_call_order_and_completion_is_recorded() {
        let h: History<&str, u32> = History::new();
        let a = h.invoke(1, "a");
        let b = h.invoke(2, "b");
        h.complete(b, Outcome::Ok(7)).expect("b was invoked");
        h.complete(a, Outcome::Failed).expect("a was invoked");
        let c = h.invoke(1, "c");
        let ops = h.operations();
        assert_eq!(ops.len(), 3);
        assert_eq!((ops[a].call, ops[a].ret), (0, Some(3)));
        assert_eq!((ops[b].call, ops[b].ret), (1, Some(2)));
        assert_eq!(ops[b].result(), Some(&7));
        assert_eq!(ops[a].outcome, Outcome::Failed);
        assert_eq!(ops[a].effective_ret(), None);
        assert_eq!(ops[c].outcome, Outcome::Unknown, "pending reads as unknown");
        assert!(ops[c].ret.is_none());
    }

    #[test]
    fn completing_twice_or_unknown_id_is_an_error() {
        let h: History<u8, u8> = History::new();
        let a = h.invoke(0, 1);
        h.complete(a, Outcome::Unknown).expect("first completion");
        assert_eq!(
            h.complete(a, Outcome::Ok(1)),
            Err(FaultsError::AlreadyCompleted(a))
        );
        assert_eq!(
            h.complete(9, Outcome::Ok(1)),
            Err(FaultsError::UnknownOperation(9))
        );
    }

    #[test]
    fn concurrent_recording_gives_unique_consistent_stamps() {
        let h: Arc<History<u64, u64>> = Arc::new(History::new());
        let threads: Vec<_> = (0..4u64)
            .map(|p| {
                let h = Arc::clone(&h);
                std::thread::spawn(move || {
                    for i in 0..500 {
                        let id = h.invoke(p, i);
                        h.complete(id, Outcome::Ok(i)).expect("own op");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("recorder thread");
        }
        let ops = h.operations();
        assert_eq!(ops.len(), 2000);
        let mut stamps: Vec<u64> = ops
            .iter()
            .flat_map(|o| [o.call, o.ret.expect("done")])
            .collect();
        assert!(ops.iter().all(|o| o.call < o.ret.expect("done")));
        stamps.sort_unstable();
        stamps.dedup();
        assert_eq!(stamps.len(), 4000, "every stamp is unique");
        // Per process, operations are sequential.
        for p in 0..4 {
            let mine: Vec<_> = ops.iter().filter(|o| o.process == p).collect();
            assert!(mine.windows(2).all(|w| w[0].ret < Some(w[1].call)));
        }
    }
}
