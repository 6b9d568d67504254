//! A connection's outbound queue: replies and watch events in one order, bounded both in frames
//! (`--max-queued-per-connection`) and in bytes (`--max-queued-bytes-per-connection`).
//!
//! Replies and events are bounded separately, because they can be treated differently: a reply
//! may wait for room (the processor stops, the reader stops at `--max-outstanding`, and a client
//! that does not read stalls only itself), while an event is queued under the replica lock,
//! where nothing may wait, so an event that finds no room means the client is not reading and
//! the connection is dropped. Keeping the two budgets apart means a client that reads, but has
//! a few large replies in its queue, is not dropped for the event that arrives behind them.
//!
//! Memory per connection is at most the two byte budgets plus one frame of each kind (a frame
//! larger than a whole budget passes when its side of the queue is empty). A replay to a
//! resuming session ([`Outbox::replay`]) is queued as one item and encoded by the writer a
//! batch at a time, so it takes one write batch of memory rather than a copy of every event
//! it carries; its events stay shared with the node's bounded event history.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

use crate::watch::resume::Replay;

/// Which budget a queued frame is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Reply,
    Event,
}

/// One item of the queue.
#[derive(Debug)]
pub enum Queued {
    /// A reply or event frame.
    Frame {
        frame: Bytes,
        /// The budget it was charged to, and is returned to once written.
        kind: Kind,
    },
    /// The events replayed to a resuming session, encoded as they are written; counted as one
    /// frame.
    Replay(Box<Replay>),
}

impl Queued {
    /// The frame, if this is one (tests read queues with it).
    pub fn frame(self) -> Option<Bytes> {
        match self {
            Queued::Frame { frame, .. } => Some(frame),
            Queued::Replay(_) => None,
        }
    }
}

/// What the senders and the writer share.
#[derive(Debug)]
struct Budget {
    /// Frames queued and not yet written. Invariant: the number of frames in the channel plus
    /// those the writer has taken but not yet released.
    frames: AtomicUsize,
    /// Bytes of queued replies; replies wait while this is at or over `bytes_limit`.
    reply_bytes: AtomicUsize,
    /// Bytes of queued events; an event that would take this over `bytes_limit` is refused.
    event_bytes: AtomicUsize,
    /// Limit on `frames` (replies wait, events are refused).
    frames_limit: usize,
    /// Limit on each of `reply_bytes` and `event_bytes`.
    bytes_limit: usize,
    /// Woken (all waiters) whenever the writer releases frames.
    room: Notify,
    /// Set when the connection stops receiving events ([`Outbox::seal`]); nothing is queued
    /// after it. Invariant: what the client receives is a prefix of the queue in which no event
    /// of the session's watches is missing, so a zxid it reads never runs ahead of an event it
    /// did not get (it would resume its watches after that zxid and lose the event for good).
    sealed: AtomicBool,
}

impl Budget {
    /// The byte count `kind` is charged to.
    fn bytes(&self, kind: Kind) -> &AtomicUsize {
        match kind {
            Kind::Reply => &self.reply_bytes,
            Kind::Event => &self.event_bytes,
        }
    }

    fn charge(&self, kind: Kind, len: usize) {
        self.frames.fetch_add(1, Ordering::AcqRel);
        self.bytes(kind).fetch_add(len, Ordering::AcqRel);
    }

    fn refund(&self, kind: Kind, len: usize) {
        self.frames.fetch_sub(1, Ordering::AcqRel);
        self.bytes(kind).fetch_sub(len, Ordering::AcqRel);
    }
}

/// The sending side; cloned into the connection's processor and into the node's table of
/// connections (for events).
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Queued>,
    budget: Arc<Budget>,
}

/// The writer's side.
#[derive(Debug)]
pub struct OutboxReceiver {
    rx: mpsc::UnboundedReceiver<Queued>,
    budget: Arc<Budget>,
}

/// A queue of at most `frames` frames and `bytes` bytes of replies plus `bytes` bytes of events
/// (both at least 1).
pub fn outbox(frames: usize, bytes: usize) -> (Outbox, OutboxReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let budget = Arc::new(Budget {
        frames: AtomicUsize::new(0),
        reply_bytes: AtomicUsize::new(0),
        event_bytes: AtomicUsize::new(0),
        frames_limit: frames.max(1),
        bytes_limit: bytes.max(1),
        room: Notify::new(),
        sealed: AtomicBool::new(false),
    });
    (
        Outbox {
            tx,
            budget: budget.clone(),
        },
        OutboxReceiver { rx, budget },
    )
}

/// Room for one reply, obtained by [`Outbox::reserve_reply`]: the reply's size is often known
/// only once it is evaluated, under the replica lock, where waiting is not allowed.
#[must_use]
pub struct ReplyRoom<'a> {
    outbox: &'a Outbox,
}

impl ReplyRoom<'_> {
    /// Queues the reply; false if the connection's writer has gone.
    pub fn send(self, frame: Bytes) -> bool {
        self.outbox.push(Kind::Reply, frame)
    }
}

impl Outbox {
    fn push(&self, kind: Kind, frame: Bytes) -> bool {
        if self.budget.sealed.load(Ordering::Acquire) {
            return false;
        }
        let len = frame.len();
        self.budget.charge(kind, len);
        if self.tx.send(Queued::Frame { frame, kind }).is_err() {
            self.budget.refund(kind, len);
            return false;
        }
        true
    }

    /// Waits until a reply may be queued: fewer frames than the limit and reply bytes under
    /// theirs. Returns `None` once the writer has gone (the connection is closing).
    pub async fn reserve_reply(&self) -> Option<ReplyRoom<'_>> {
        let b = &self.budget;
        loop {
            let room = b.room.notified();
            tokio::pin!(room);
            // Registered before the check, so a release between the check and the await wakes us.
            room.as_mut().enable();
            if self.tx.is_closed() || b.sealed.load(Ordering::Acquire) {
                return None;
            }
            if b.frames.load(Ordering::Acquire) < b.frames_limit
                && b.reply_bytes.load(Ordering::Acquire) < b.bytes_limit
            {
                return Some(ReplyRoom { outbox: self });
            }
            room.await;
        }
    }

    /// Queues a reply, waiting for room; false if the writer has gone.
    pub async fn send_reply(&self, frame: Bytes) -> bool {
        match self.reserve_reply().await {
            Some(room) => room.send(frame),
            None => false,
        }
    }

    /// Queues a reply without waiting (the handshake's, the first frame of the queue).
    pub fn push_reply(&self, frame: Bytes) -> bool {
        self.push(Kind::Reply, frame)
    }

    /// Queues an event if there is room for it; false means the client is not keeping up (or
    /// the writer has gone), and the caller drops the connection.
    pub fn try_send_event(&self, frame: Bytes) -> bool {
        let b = &self.budget;
        let queued = b.event_bytes.load(Ordering::Acquire);
        if b.frames.load(Ordering::Acquire) >= b.frames_limit
            || (queued > 0 && queued + frame.len() > b.bytes_limit)
        {
            return false;
        }
        self.push(Kind::Event, frame)
    }

    /// Accepts nothing more: called, under the replica lock, when the connection stops receiving
    /// events (it is closed, too slow, or its session moved or ended). What is already queued is
    /// still written; a reply or event offered later is refused, because it could carry a zxid
    /// past an event this connection will never deliver (see [`Budget::sealed`]).
    pub fn seal(&self) {
        self.budget.sealed.store(true, Ordering::Release);
        // A reply waiting for room gives up now.
        self.budget.room.notify_waiters();
    }

    /// Queues the replay to a resuming session, whatever the room: it is one frame of the
    /// budget, and it takes one write batch of memory as it is written (see the module
    /// documentation); refusing it would drop the client on every reconnect. False if the
    /// connection is sealed or its writer has gone.
    pub fn replay(&self, replay: Box<Replay>) -> bool {
        if self.budget.sealed.load(Ordering::Acquire) {
            return false;
        }
        self.budget.frames.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(Queued::Replay(replay)).is_err() {
            self.budget.frames.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }
}

impl OutboxReceiver {
    /// The next frame, once one is queued; `None` when every sender has gone.
    pub async fn recv(&mut self) -> Option<Queued> {
        self.rx.recv().await
    }

    /// A frame already queued, if any.
    pub fn try_recv(&mut self) -> Option<Queued> {
        self.rx.try_recv().ok()
    }

    /// Returns written frames' room to the budget (a replay counts as one frame) and wakes a
    /// waiting reply.
    pub fn release(&self, frames: usize, reply_bytes: usize, event_bytes: usize) {
        let b = &self.budget;
        debug_assert!(
            b.frames.load(Ordering::Acquire) >= frames,
            "frames released twice"
        );
        b.frames.fetch_sub(frames, Ordering::AcqRel);
        b.reply_bytes.fetch_sub(reply_bytes, Ordering::AcqRel);
        b.event_bytes.fetch_sub(event_bytes, Ordering::AcqRel);
        b.room.notify_waiters();
    }
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        // Wake a reply waiting for room: it sees the channel closed and gives up.
        self.rx.close();
        self.budget.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn frame(n: usize) -> Bytes {
        Bytes::from(vec![0u8; n])
    }

    #[tokio::test]
    async fn events_are_refused_past_their_byte_budget_but_one_always_fits() {
        let (out, mut rx) = outbox(100, 1000);
        assert!(
            out.try_send_event(frame(5000)),
            "a lone oversized event passes"
        );
        assert!(!out.try_send_event(frame(1)), "nothing fits behind it");
        let q = rx.recv().await.expect("queued");
        assert!(matches!(q, Queued::Frame { kind: Kind::Event, ref frame } if frame.len() == 5000));
        rx.release(1, 0, 5000);
        assert!(out.try_send_event(frame(600)));
        assert!(!out.try_send_event(frame(600)));
        assert!(out.try_send_event(frame(400)));
    }

    #[tokio::test]
    async fn replies_wait_for_room_and_do_not_use_the_event_budget() {
        let (out, mut rx) = outbox(100, 1000);
        assert!(out.send_reply(frame(1500)).await);
        // The reply budget is spent: the next reply waits...
        let waiting = tokio::time::timeout(Duration::from_millis(50), out.send_reply(frame(10)));
        assert!(waiting.await.is_err(), "a reply was queued past the budget");
        // ...but an event still fits: a reading client is not dropped behind a large reply.
        assert!(out.try_send_event(frame(900)));
        let q = rx.recv().await.expect("queued");
        assert!(matches!(
            q,
            Queued::Frame {
                kind: Kind::Reply,
                ..
            }
        ));
        let out2 = out.clone();
        let pending = tokio::spawn(async move { out2.send_reply(frame(10)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        rx.release(1, 1500, 0);
        let sent = tokio::time::timeout(Duration::from_secs(5), pending)
            .await
            .expect("woken by the release")
            .expect("task");
        assert!(sent);
    }

    /// A replay of `n` one-shot firings.
    fn replay(n: usize) -> Box<Replay> {
        let fired = (0..n)
            .map(|i| (synod_proto::EventType::NodeDeleted, format!("/n{i}")))
            .collect();
        Box::new(Replay::new(
            Default::default(),
            Vec::new(),
            Vec::new(),
            fired,
        ))
    }

    #[tokio::test]
    async fn a_live_event_behind_a_long_replay_is_not_refused() {
        let (out, mut rx) = outbox(10, 1000);
        assert!(out.replay(replay(1000)));
        assert!(out.try_send_event(frame(500)), "refused behind a replay");
        match rx.try_recv() {
            Some(Queued::Replay(r)) => assert_eq!(r.frames().count(), 1000),
            other => panic!("expected the replay first, got {other:?}"),
        }
        assert!(
            matches!(
                rx.try_recv(),
                Some(Queued::Frame {
                    kind: Kind::Event,
                    ..
                })
            ),
            "the live event comes after the replay"
        );
    }

    #[tokio::test]
    async fn a_sealed_outbox_accepts_nothing_but_delivers_what_it_had() {
        let (out, mut rx) = outbox(100, 1 << 20);
        assert!(out.try_send_event(frame(1)));
        assert!(out.push_reply(frame(2)));
        let waiting = out.clone();
        let waiter = tokio::spawn(async move { waiting.send_reply(frame(3)).await });
        out.seal();
        assert!(!out.try_send_event(frame(4)), "an event after the seal");
        assert!(!out.push_reply(frame(5)), "a reply after the seal");
        assert!(!out.replay(replay(1)), "a replay after the seal");
        assert!(out.reserve_reply().await.is_none(), "room after the seal");
        let late = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("a waiting reply gives up")
            .expect("task");
        // The waiter either got in before the seal or was refused; nothing after the seal.
        let lens: Vec<usize> =
            std::iter::from_fn(|| rx.try_recv().and_then(Queued::frame).map(|f| f.len())).collect();
        if late {
            assert_eq!(lens, [1, 2, 3]);
        } else {
            assert_eq!(lens, [1, 2]);
        }
    }

    #[tokio::test]
    async fn the_frame_limit_bounds_both_and_replay_ignores_it() {
        let (out, rx) = outbox(2, 1 << 20);
        assert!(out.try_send_event(frame(1)));
        assert!(out.push_reply(frame(1)));
        assert!(!out.try_send_event(frame(1)), "third frame");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), out.reserve_reply())
                .await
                .is_err(),
            "a reply got room past the frame limit"
        );
        assert!(
            out.replay(replay(1)),
            "a replay is queued whatever the room"
        );
        assert!(!out.try_send_event(frame(1)), "a replay makes no room");
        drop(rx);
        assert!(out.reserve_reply().await.is_none(), "writer gone");
        assert!(!out.try_send_event(frame(1)));
    }
}
