//! A linearizability checker for recorded histories, in the style of Wing & Gong with Lowe's
//! memoization ("Testing for linearizability", 2017; the same algorithm as Porcupine).
//!
//! # Algorithm
//!
//! The history's call and return events are put in one list ordered by logical time (calls
//! before returns on a tie, i.e. ties count as concurrent). A depth-first search walks the list
//! from its head:
//!
//! - at a **call** of operation `o`, it tries to linearize `o` now: the model must accept `o`'s
//!   result in the current state ([`Model::step`]; for an `Unknown` outcome, any state of
//!   [`Model::step_unknown`]). If it does, and the configuration (set of linearized operations,
//!   new state) was never reached before, `o`'s call and return are lifted out of the list, the
//!   choice is pushed on a stack, and the walk restarts from the head. Otherwise the walk moves to
//!   the next event (another operation concurrent with `o` may go first);
//! - at a **return** of an operation that is not linearized yet, the current prefix cannot be
//!   extended: the search backtracks (pops the last choice, puts its events back, tries its other
//!   successor states, then continues after it). An empty stack means no linearization exists;
//! - reaching the end of the list means every acknowledged operation is linearized: the history is
//!   linearizable. What remains are calls of operations with unknown outcome, which are taken
//!   never to have happened.
//!
//! The memo set of (linearized-set bitset, state) pairs (Lowe) prunes every configuration already
//! shown to be a dead end; with P-compositionality ([`Model::partition`]: the register model
//! checks each znode separately) this keeps realistic histories fast — the cost grows with the
//! number of operations *concurrent with each other on the same part*, not with history length.
//!
//! Outcomes: `Failed` operations are dropped (they did not happen). `Unknown` operations have an
//! infinite return: they may be linearized anywhere after their call, or not at all; read-only
//! ones are dropped since they constrain nothing.
//!
//! When a part is not linearizable, the checker looks for the **shortest failing prefix**: the
//! history cut at the return of some acknowledged operation, operations still pending at the cut
//! being treated as unknown (linearizability is prefix-closed, so failure is monotone and a binary
//! search over the cut finds it). The counter-example shows the longest linearization the search
//! found for that prefix and the operations that could not be placed after it.
//!
//! # Limits
//!
//! - The search is exponential in the worst case (the problem is NP-complete). Many concurrent
//!   operations on one part — notably many `Unknown` writes, which stay candidates until the end —
//!   can make it slow; every run is bounded by a [`Budget`] (steps and wall-clock time) and
//!   answers [`Verdict::GaveUp`] rather than hang. A non-linearizable history usually costs more
//!   than a linearizable one, since the whole search space must be exhausted.
//! - The result is only as good as the recorded intervals: the driver must invoke before sending
//!   and complete after receiving (see [`crate::history`]), and record as `Unknown` anything whose
//!   effect it cannot rule out.
//! - Memory: the memo set holds every configuration visited (bitset + state per entry); it is
//!   bounded by [`Budget::max_memo_bytes`].
//! - Unknown outcomes are the expensive part. An unknown write never leaves the candidate list,
//!   so a *failing* search must try it at every position of the prefix: the work grows
//!   exponentially with the number of unknown writes pending on one part. Measured (release,
//!   this machine, `tests/bench_checker.rs`): a 2,000-op single-znode history from 8 clients is
//!   decided in 50-90 ms with 2% unknown writes whether or not it is linearizable, but with 5%
//!   unknown writes a corrupted one exhausts a 64 MiB memo in 0.4 s and is reported undecided.
//!   Spread the load over many znodes (each is checked alone) so that each carries few unknown
//!   writes, and resolve unknowns where the driver can (e.g. a later read of a unique value).

use std::collections::HashSet;
use std::fmt;
use std::time::{Duration, Instant};

use crate::history::{Operation, Outcome};
use crate::model::Model;

/// Limits on one [`check`] call (shared by all its partitions).
#[derive(Debug, Clone)]
pub struct Budget {
    /// Maximum number of search steps (one step = one event looked at).
    pub max_steps: u64,
    /// Maximum wall-clock time.
    pub timeout: Duration,
    /// Maximum (estimated) memory of one search's memo set, in bytes.
    pub max_memo_bytes: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            max_steps: 200_000_000,
            timeout: Duration::from_secs(30),
            max_memo_bytes: 512 << 20,
        }
    }
}

/// Counts steps against a [`Budget`].
struct Meter {
    /// Steps taken so far.
    steps: u64,
    /// Step limit.
    max_steps: u64,
    /// Wall-clock limit.
    deadline: Instant,
    /// Set once a limit was hit; every later search gives up at once.
    exhausted: bool,
    /// Memo memory limit per search.
    max_memo_bytes: usize,
}

impl Meter {
    fn new(budget: &Budget) -> Self {
        Self {
            steps: 0,
            max_steps: budget.max_steps,
            deadline: Instant::now() + budget.timeout,
            exhausted: false,
            max_memo_bytes: budget.max_memo_bytes,
        }
    }

    /// Takes one step; false once the budget is spent.
    fn tick(&mut self) -> bool {
        if self.exhausted {
            return false;
        }
        self.steps += 1;
        if self.steps >= self.max_steps
            || (self.steps.is_multiple_of(1024) && Instant::now() >= self.deadline)
        {
            self.exhausted = true;
            return false;
        }
        true
    }
}

/// The overall answer of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every part has a linearization.
    Linearizable,
    /// At least one part has none (see the counter-examples).
    NotLinearizable,
    /// No violation found, but the budget ran out before every part was decided.
    GaveUp,
}

/// One step of a linearization: an operation and the model state right after it.
#[derive(Debug, Clone)]
pub struct Step<O, R, S> {
    /// The operation linearized.
    pub op: Operation<O, R>,
    /// The model state after it.
    pub state: S,
}

/// Why a part of the history is not linearizable, for humans.
#[derive(Debug, Clone)]
pub struct CounterExample<O, R, S> {
    /// The logical time the failing prefix was cut at (the return of its last operation).
    pub cut: u64,
    /// How many operations of this part were invoked up to the cut.
    pub prefix_ops: usize,
    /// Whether the prefix is the shortest failing one (false if the budget ran out while looking).
    pub minimized: bool,
    /// The longest linearization of the prefix the search found.
    pub linearized: Vec<Step<O, R, S>>,
    /// The model state after it.
    pub state: S,
    /// The prefix's operations that could not be placed after it, with whether each was treated
    /// as unknown (true: it was unknown or still pending at the cut).
    pub unplaced: Vec<(Operation<O, R>, bool)>,
}

/// A part the checker could not decide within the budget.
#[derive(Debug, Clone)]
pub struct Undecided {
    /// The id of the part's first operation (to name it).
    pub first_op: usize,
    /// The part's operation count.
    pub ops: usize,
}

/// The result of [`check`].
#[derive(Debug, Clone)]
pub struct Report<O, R, S> {
    /// Operations in the history.
    pub operations: usize,
    /// Independent parts it was split into.
    pub partitions: usize,
    /// Search steps taken (including the counter-example minimization).
    pub steps: u64,
    /// Wall-clock time taken.
    pub elapsed: Duration,
    /// One counter-example per part found not linearizable.
    pub counter_examples: Vec<CounterExample<O, R, S>>,
    /// The parts left undecided when the budget ran out.
    pub undecided: Vec<Undecided>,
}

impl<O, R, S> Report<O, R, S> {
    /// The overall verdict: any counter-example makes it `NotLinearizable`.
    pub fn verdict(&self) -> Verdict {
        if !self.counter_examples.is_empty() {
            Verdict::NotLinearizable
        } else if !self.undecided.is_empty() {
            Verdict::GaveUp
        } else {
            Verdict::Linearizable
        }
    }

    /// Whether the whole history was shown linearizable.
    pub fn is_linearizable(&self) -> bool {
        self.verdict() == Verdict::Linearizable
    }
}

/// Writes an operation on one line: `#id p<process> [call,ret] op -> result`.
fn fmt_op<O: fmt::Debug, R: fmt::Debug>(
    f: &mut fmt::Formatter<'_>,
    o: &Operation<O, R>,
    unknown: bool,
) -> fmt::Result {
    let ret = match (unknown, o.effective_ret()) {
        (false, Some(t)) => t.to_string(),
        _ => "∞".to_string(),
    };
    write!(
        f,
        "#{} p{} [{},{}] {:?} -> ",
        o.id, o.process, o.call, ret, o.op
    )?;
    match (&o.outcome, unknown) {
        (Outcome::Ok(r), false) => write!(f, "{r:?}"),
        (Outcome::Ok(r), true) => write!(f, "? (pending at the cut; answered {r:?} later)"),
        _ => write!(f, "?"),
    }
}

/// At most this many lines per list in a printed counter-example.
const PRINT_LIMIT: usize = 30;

impl<O: fmt::Debug, R: fmt::Debug, S: fmt::Debug> fmt::Display for CounterExample<O, R, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "the {} operations invoked up to t={} have no linearization{}",
            self.prefix_ops,
            self.cut,
            if self.minimized {
                " (shortest failing prefix)"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "  longest linearization found ({} ops):",
            self.linearized.len()
        )?;
        let skip = self.linearized.len().saturating_sub(PRINT_LIMIT);
        if skip > 0 {
            writeln!(f, "    ... {skip} earlier ops")?;
        }
        for s in &self.linearized[skip..] {
            write!(f, "    ")?;
            fmt_op(f, &s.op, false)?;
            writeln!(f, "   => {:?}", s.state)?;
        }
        writeln!(f, "  state then: {:?}", self.state)?;
        writeln!(f, "  operations that cannot follow it:")?;
        for (o, unknown) in self.unplaced.iter().take(PRINT_LIMIT) {
            write!(f, "    ")?;
            fmt_op(f, o, *unknown)?;
            writeln!(f)?;
        }
        if self.unplaced.len() > PRINT_LIMIT {
            writeln!(f, "    ... {} more", self.unplaced.len() - PRINT_LIMIT)?;
        }
        Ok(())
    }
}

impl<O: fmt::Debug, R: fmt::Debug, S: fmt::Debug> fmt::Display for Report<O, R, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:?}: {} operations in {} parts, {} steps, {:.3?}",
            self.verdict(),
            self.operations,
            self.partitions,
            self.steps,
            self.elapsed
        )?;
        for u in &self.undecided {
            writeln!(
                f,
                "undecided: the part of op #{} ({} ops)",
                u.first_op, u.ops
            )?;
        }
        for c in &self.counter_examples {
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

/// Checks that `ops` (a whole recorded history) is linearizable with respect to `model`,
/// part by part ([`Model::partition`]), within `budget`.
pub fn check<M: Model>(
    model: &M,
    ops: &[Operation<M::Op, M::Ret>],
    budget: &Budget,
) -> Report<M::Op, M::Ret, M::State> {
    let started = Instant::now();
    let mut meter = Meter::new(budget);
    let parts = model.partition(ops);
    let mut report = Report {
        operations: ops.len(),
        partitions: parts.len(),
        steps: 0,
        elapsed: Duration::ZERO,
        counter_examples: Vec::new(),
        undecided: Vec::new(),
    };
    for part in &parts {
        let part_ops: Vec<&Operation<M::Op, M::Ret>> =
            part.iter().filter_map(|&i| ops.get(i)).collect();
        match search(model, &part_ops, None, &mut meter) {
            Search::Linearizable => {}
            Search::GaveUp => report.undecided.push(Undecided {
                first_op: part_ops.first().map_or(0, |o| o.id),
                ops: part_ops.len(),
            }),
            Search::Illegal(failure) => report
                .counter_examples
                .push(minimize(model, &part_ops, failure, &mut meter)),
        }
    }
    report.steps = meter.steps;
    report.elapsed = started.elapsed();
    report
}

/// A failed search: what it got furthest with.
struct Failure<S> {
    /// The cut the search ran with (`None`: the whole part).
    cut: Option<u64>,
    /// Indexes (into the part) of the operations it considered, with whether each was unknown.
    considered: Vec<(usize, bool)>,
    /// The longest linearization: part indexes and the state after each.
    best: Vec<(usize, S)>,
    /// The state before anything.
    init: S,
}

/// How a search ended.
enum Search<S> {
    /// A linearization exists.
    Linearizable,
    /// None exists.
    Illegal(Failure<S>),
    /// The budget ran out.
    GaveUp,
}

/// Shrinks a failure to the shortest failing prefix (as far as the budget allows) and turns it
/// into a counter-example.
fn minimize<M: Model>(
    model: &M,
    ops: &[&Operation<M::Op, M::Ret>],
    failure: Failure<M::State>,
    meter: &mut Meter,
) -> CounterExample<M::Op, M::Ret, M::State> {
    let mut cuts: Vec<u64> = ops.iter().filter_map(|o| o.effective_ret()).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut failure = failure;
    let mut minimized = true;
    if !cuts.is_empty() {
        // Invariant: the prefix cut at cuts[hi] fails (the whole part is equivalent to the cut
        // at the last acknowledged return: later calls could only be left out).
        let (mut lo, mut hi) = (0, cuts.len() - 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match search(model, ops, Some(cuts[mid]), meter) {
                Search::Illegal(f) => {
                    failure = f;
                    hi = mid;
                }
                Search::Linearizable => lo = mid + 1,
                Search::GaveUp => {
                    minimized = false;
                    break;
                }
            }
        }
        if minimized && failure.cut != Some(cuts[hi]) {
            match search(model, ops, Some(cuts[hi]), meter) {
                Search::Illegal(f) => failure = f,
                _ => minimized = false,
            }
        }
    }
    let cut = failure.cut.or_else(|| cuts.last().copied()).unwrap_or(0);
    let placed: HashSet<usize> = failure.best.iter().map(|(i, _)| *i).collect();
    let state = failure
        .best
        .last()
        .map_or_else(|| failure.init.clone(), |(_, s)| s.clone());
    CounterExample {
        cut,
        prefix_ops: ops.iter().filter(|o| o.call <= cut).count(),
        minimized,
        linearized: failure
            .best
            .iter()
            .map(|(i, s)| Step {
                op: ops[*i].clone(),
                state: s.clone(),
            })
            .collect(),
        state,
        unplaced: failure
            .considered
            .iter()
            .filter(|(i, _)| !placed.contains(i))
            .map(|(i, unknown)| (ops[*i].clone(), *unknown))
            .collect(),
    }
}

/// End of the event list.
const NIL: usize = usize::MAX;
/// The list's head sentinel.
const HEAD: usize = 0;

/// An event of the list.
#[derive(Clone, Copy)]
enum Event {
    /// The head sentinel.
    Head,
    /// Invocation of the item.
    Call(usize),
    /// Return of the item.
    Return(usize),
}

/// A choice on the search stack.
struct Frame<S> {
    /// The call event lifted.
    node: usize,
    /// The item linearized.
    item: usize,
    /// The state before it.
    prev: S,
    /// Other successor states still to try (unknown outcomes of a nondeterministic model).
    alternatives: Vec<S>,
}

/// The DFS over one part, cut at `cut` (operations invoked after it are left out, those
/// returning after it are unknown).
fn search<M: Model>(
    model: &M,
    ops: &[&Operation<M::Op, M::Ret>],
    cut: Option<u64>,
    meter: &mut Meter,
) -> Search<M::State> {
    // The items: (part index, known return time or None for unknown).
    let mut items: Vec<(usize, Option<u64>)> = Vec::new();
    for (i, o) in ops.iter().enumerate() {
        if matches!(o.outcome, Outcome::Failed) || cut.is_some_and(|c| o.call > c) {
            continue;
        }
        let ret = o.effective_ret().filter(|r| match cut {
            Some(c) => *r <= c,
            None => true,
        });
        if ret.is_none() && model.is_read_only(&o.op) {
            continue;
        }
        items.push((i, ret));
    }
    let considered: Vec<(usize, bool)> = items.iter().map(|&(i, r)| (i, r.is_none())).collect();

    // Events in time order, calls before returns on ties.
    let mut order: Vec<(u64, u8, Event)> = Vec::with_capacity(items.len() * 2);
    for (k, &(i, ret)) in items.iter().enumerate() {
        order.push((ops[i].call, 0, Event::Call(k)));
        if let Some(r) = ret {
            order.push((r, 1, Event::Return(k)));
        }
    }
    order.sort_by_key(|&(t, tie, _)| (t, tie));
    let mut events = vec![Event::Head];
    events.extend(order.iter().map(|&(_, _, e)| e));
    let n = events.len();
    let mut next: Vec<usize> = (1..=n).map(|i| if i == n { NIL } else { i }).collect();
    let mut prev: Vec<usize> = (0..n).map(|i| if i == 0 { NIL } else { i - 1 }).collect();
    let mut return_node = vec![NIL; items.len()];
    for (node, e) in events.iter().enumerate() {
        if let Event::Return(k) = e {
            return_node[*k] = node;
        }
    }

    let remove = |next: &mut Vec<usize>, prev: &mut Vec<usize>, x: usize| {
        let (p, q) = (prev[x], next[x]);
        next[p] = q;
        if q != NIL {
            prev[q] = p;
        }
    };
    let restore = |next: &mut Vec<usize>, prev: &mut Vec<usize>, x: usize| {
        let (p, q) = (prev[x], next[x]);
        next[p] = x;
        if q != NIL {
            prev[q] = x;
        }
    };

    let words = items.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut memo: HashSet<(Box<[u64]>, M::State)> = HashSet::new();
    // Estimated bytes per memo entry: the bitset, the tuple, hash table overhead (heap data
    // inside the state is not counted).
    let entry_bytes = words * 8 + std::mem::size_of::<(Box<[u64]>, M::State)>() + 16;
    let max_memo = meter.max_memo_bytes / entry_bytes;
    let init = model.init();
    let mut state = init.clone();
    let mut stack: Vec<Frame<M::State>> = Vec::new();
    let mut best: Vec<(usize, M::State)> = Vec::new();

    // Takes the first candidate whose configuration is new; the rest are returned to try later.

    let mut node = next[HEAD];
    loop {
        if node == NIL {
            return Search::Linearizable;
        }
        // Out of memo memory gives up this search only; steps and time are shared by all.
        if !meter.tick() || memo.len() > max_memo {
            return Search::GaveUp;
        }
        match events[node] {
            Event::Head => node = next[node],
            Event::Call(k) => {
                let (i, ret) = items[k];
                let cands = match (ret, &ops[i].outcome) {
                    (Some(_), Outcome::Ok(r)) => {
                        model.step(&state, &ops[i].op, r).into_iter().collect()
                    }
                    _ => model.step_unknown(&state, &ops[i].op),
                };
                match choose(&mut memo, &mut linearized, k, cands) {
                    Some((s, alternatives)) => {
                        let prev_state = std::mem::replace(&mut state, s);
                        stack.push(Frame {
                            node,
                            item: k,
                            prev: prev_state,
                            alternatives,
                        });
                        remove(&mut next, &mut prev, node);
                        if return_node[k] != NIL {
                            remove(&mut next, &mut prev, return_node[k]);
                        }
                        if stack.len() > best.len() {
                            best = stack
                                .iter()
                                .enumerate()
                                .map(|(d, f)| {
                                    let after = stack.get(d + 1).map_or(&state, |g| &g.prev);
                                    (items[f.item].0, after.clone())
                                })
                                .collect();
                        }
                        node = next[HEAD];
                    }
                    None => node = next[node],
                }
            }
            Event::Return(_) => {
                let Some(frame) = stack.pop() else {
                    return Search::Illegal(Failure {
                        cut,
                        considered,
                        best,
                        init,
                    });
                };
                let k = frame.item;
                if return_node[k] != NIL {
                    restore(&mut next, &mut prev, return_node[k]);
                }
                restore(&mut next, &mut prev, frame.node);
                linearized[k / 64] &= !(1 << (k % 64));
                state = frame.prev;
                match choose(&mut memo, &mut linearized, k, frame.alternatives) {
                    Some((s, alternatives)) => {
                        let prev_state = std::mem::replace(&mut state, s);
                        stack.push(Frame {
                            node: frame.node,
                            item: k,
                            prev: prev_state,
                            alternatives,
                        });
                        remove(&mut next, &mut prev, frame.node);
                        if return_node[k] != NIL {
                            remove(&mut next, &mut prev, return_node[k]);
                        }
                        node = next[HEAD];
                    }
                    None => node = next[frame.node],
                }
            }
        }
    }
}

/// Marks item `k` linearized and takes the first candidate state whose configuration is new; the
/// rest are returned to try on backtracking. Leaves `k` unmarked if none is new.
fn choose<S: Clone + Eq + std::hash::Hash>(
    memo: &mut HashSet<(Box<[u64]>, S)>,
    linearized: &mut [u64],
    k: usize,
    mut cands: Vec<S>,
) -> Option<(S, Vec<S>)> {
    linearized[k / 64] |= 1 << (k % 64);
    while !cands.is_empty() {
        let s = cands.remove(0);
        if memo.insert((linearized.into(), s.clone())) {
            return Some((s, cands));
        }
    }
    linearized[k / 64] &= !(1 << (k % 64));
    None
}
