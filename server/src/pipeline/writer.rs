//! The writer: sends a connection's queued replies and events to the client in queue order,
//! gathering small frames into one write, and returns their room to the outbox.

use bytes::BytesMut;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

use crate::pipeline::outbox::{Kind, OutboxReceiver, Queued};
use crate::tls::stream::WriteHalf;

/// Frames at least this large are written as they are instead of being copied into the batch
/// buffer (which therefore never grows much beyond [`WRITE_BATCH`]).
const DIRECT_WRITE: usize = 64 * 1024;
/// The writer stops gathering queued frames into one batch at this many bytes.
const WRITE_BATCH: usize = 256 * 1024;
/// A batch buffer that grew past this (a burst of replies or events) is given back after its
/// write, so an idle connection does not keep its busiest moment's buffer for life.
const BATCH_KEEP: usize = 16 * 1024;

/// Writes queued frames to the client in order, gathering small ones into one write, and returns
/// their room to the outbox after each batch.
pub async fn write_loop(
    mut wr: WriteHalf,
    mut rx: OutboxReceiver,
    stats: Arc<crate::stats::ConnStats>,
) {
    let mut buf = BytesMut::new();
    while let Some(first) = rx.recv().await {
        let (mut frames, mut reply_bytes, mut event_bytes, mut batch) = (0, 0, 0, 0);
        let mut next = Some(first);
        while let Some(q) = next.take() {
            frames += 1;
            match q {
                Queued::Frame { frame, kind } => {
                    let len = frame.len();
                    if len >= DIRECT_WRITE {
                        if !buf.is_empty() && wr.write_all(&buf).await.is_err() {
                            return;
                        }
                        buf.clear();
                        if wr.write_all(&frame).await.is_err() {
                            return;
                        }
                    } else {
                        buf.extend_from_slice(&frame);
                    }
                    match kind {
                        Kind::Reply => reply_bytes += len,
                        Kind::Event => event_bytes += len,
                    }
                    stats.sent();
                    batch += len;
                }
                Queued::Replay(replay) => {
                    // Encoded a batch at a time: the replay never exists as one buffer.
                    for frame in replay.frames() {
                        buf.extend_from_slice(&frame);
                        stats.sent();
                        if buf.len() >= WRITE_BATCH {
                            if wr.write_all(&buf).await.is_err() {
                                return;
                            }
                            buf.clear();
                        }
                    }
                    batch = WRITE_BATCH;
                }
            }
            if batch < WRITE_BATCH {
                next = rx.try_recv();
            }
        }
        if !buf.is_empty() && wr.write_all(&buf).await.is_err() {
            return;
        }
        // TLS holds records back until flushed; for TCP the flush is free.
        if wr.flush().await.is_err() {
            return;
        }
        if buf.capacity() > BATCH_KEEP {
            buf = BytesMut::new();
        } else {
            buf.clear();
        }
        rx.release(frames, reply_bytes, event_bytes);
    }
    let _ = wr.shutdown().await;
}
