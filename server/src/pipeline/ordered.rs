//! The ordered processor: answers a connection's requests strictly in the order they were read
//! (ZooKeeper's per-session ordering). A write's reply waits for its entry to be applied here; a
//! read waits for the session's earlier writes and, by default, for a linearizable read point
//! (one read-index round serves every read that arrived before it started).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use synod_proto::{xid, ErrorCode, Id, Request, Response};
use synod_raft_store::state_machine::lock;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};

use crate::admin::metrics::{stage, stage_took, Stage};
use crate::config::ReadConsistency;
use crate::pipeline::conn::{reply_frame, Conn};
use crate::pipeline::pending::Completion;
use crate::pipeline::read::is_data_read;
use crate::watch::resume::resumes_persistent_watches;

/// What a request holds until answered: its place under --max-outstanding and in the
/// outstanding-requests gauge.
pub type Held = (OwnedSemaphorePermit, crate::admin::metrics::InFlight);

/// A request's place in the connection's reply order.
pub enum Slot {
    /// A proposed write (or closeSession): the reply comes when its entry is applied here.
    Write {
        xid: i32,
        done: oneshot::Receiver<Completion>,
        close_after: bool,
        /// For metrics: the operation and when it was read.
        op: synod_proto::OpCode,
        arrived: Instant,
    },
    /// A read or watch operation, evaluated in order against the applied tree.
    Read {
        xid: i32,
        /// Boxed: `Request` is 128 bytes (`SetWatches2`'s five lists), which sized every slot
        /// and the futures that hold one, and tokio allocates a connection's channel 32 slots at
        /// a time. Boxed, 5,000 idle connections to one server added 58–59 MiB of RSS instead
        /// of 79–80 (16.3 → 12.1 KiB each), for one allocation per read.
        request: Box<Request>,
        auth: Arc<Vec<Id>>,
        arrived: Instant,
    },
    /// A ping: answered with the current applied zxid.
    Ping,
    /// A reply decided when the request was read (auth, unimplemented ops); `close` ends the
    /// connection after it is sent.
    Ready { frame: Bytes, close: bool },
}

impl Slot {
    /// A proposed write, read at `arrived`, whose reply comes from `done`; `close_after` ends
    /// the connection after its reply (closeSession).
    pub fn write(
        xid: i32,
        op: synod_proto::OpCode,
        done: oneshot::Receiver<Completion>,
        close_after: bool,
        arrived: Instant,
    ) -> Slot {
        Slot::Write {
            xid,
            done,
            close_after,
            op,
            arrived,
        }
    }
}

impl Conn {
    /// Answers slots strictly in order.
    pub async fn process(self, mut slots: mpsc::UnboundedReceiver<(Slot, Held)>) {
        // The last read point obtained, and when its round started: reads that arrived before
        // that may share it.
        let mut read_point: Option<(Instant, u64)> = None;
        while let Some((slot, _permit)) = slots.recv().await {
            match slot {
                Slot::Ready { frame, close } => {
                    if !self.send(frame).await || close {
                        return;
                    }
                }
                Slot::Ping => {
                    if !self
                        .send(reply_frame(
                            xid::PING,
                            self.applied(),
                            ErrorCode::Ok,
                            Response::Empty,
                        ))
                        .await
                    {
                        return;
                    }
                }
                Slot::Write {
                    xid,
                    done,
                    close_after,
                    op,
                    arrived,
                } => {
                    let (frame, answered) = match done.await {
                        Ok(Completion::Write {
                            zxid,
                            err,
                            response,
                        }) => {
                            // One clock read for the request's metrics and the connection's
                            // figures.
                            let now = Instant::now();
                            let took = now.saturating_duration_since(arrived);
                            stage_took(Stage::WriteApplied, took);
                            crate::admin::metrics::request_done(op, took, err);
                            (reply_frame(xid, zxid, err, response), now)
                        }
                        // A client's write never completes as a session or a tenant change.
                        Ok(
                            Completion::Session { .. }
                            | Completion::SessionRefused { .. }
                            | Completion::Tenant { .. },
                        ) => return,
                        Ok(Completion::Failed(why)) => {
                            tracing::info!(conn = self.id, %why, "closing connection: write outcome unknown");
                            return;
                        }
                        Err(_) => return,
                    };
                    if !self.send_answer(frame, answered).await || close_after {
                        return;
                    }
                }
                Slot::Read {
                    xid,
                    request,
                    auth,
                    arrived,
                } => {
                    let request = *request;
                    // A read-only session asked for possibly stale reads: no read point
                    // (there is no quorum to give one).
                    let needs_point = !self.read_only
                        && (matches!(request, Request::Sync(_))
                            || (self.node.cfg.read_consistency == ReadConsistency::Linearizable
                                && is_data_read(&request)));
                    if needs_point {
                        let idx = match read_point {
                            Some((started, idx)) if started > arrived => idx,
                            _ => {
                                let started = Instant::now();
                                match self.node.read_index().await {
                                    Ok(idx) => {
                                        stage(Stage::ReadIndex, started);
                                        read_point = Some((started, idx));
                                        idx
                                    }
                                    Err(e) => {
                                        tracing::info!(conn = self.id, %e, "closing connection: no read point");
                                        return;
                                    }
                                }
                            }
                        };
                        if self.node.has_applied(idx) {
                            // Already there (the common case): no wait, and no clock read.
                            stage_took(Stage::ReadWait, Duration::ZERO);
                        } else {
                            let waiting = Instant::now();
                            if let Err(e) =
                                self.node.wait_applied(idx, Duration::from_secs(30)).await
                            {
                                tracing::info!(conn = self.id, %e, "closing connection");
                                return;
                            }
                            stage(Stage::ReadWait, waiting);
                        }
                    }
                    if let Some(since) = resumes_persistent_watches(&request) {
                        let reaches = lock(&self.node.replica).observer.history.reaches(since);
                        if !reaches {
                            self.cannot_replay(since).await;
                            return;
                        }
                    }
                    // Room for the reply first: it must be queued under the lock (see the module
                    // documentation), where waiting is not allowed.
                    let Some(room) = self.out.reserve_reply().await else {
                        return;
                    };
                    let op = request.opcode();
                    let mut r = lock(&self.node.replica);
                    let Some(err) = self.evaluate(&mut r, xid, request, &auth, room) else {
                        return;
                    };
                    drop(r);
                    // One clock read for the request's metrics and the connection's figures.
                    let now = Instant::now();
                    crate::admin::metrics::request_done(
                        op,
                        now.saturating_duration_since(arrived),
                        err,
                    );
                    self.stats.answered_at(self.applied(), now);
                }
            }
        }
    }
}
