//! What the stages of one client connection share: the [`Conn`] (its node, ids, outbound queue
//! and counters) and the framing of replies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use synod_proto::frame::encode_frame;
use synod_proto::records::ReplyHeader;
use synod_proto::response::ReplyPacket;
use synod_proto::{ErrorCode, Response};
use synod_raft_store::types::applied_zxid;

use tokio::sync::oneshot;

use crate::node::Node;
use crate::pipeline::outbox::Outbox;
use crate::pipeline::pending::Completion;
use crate::pipeline::write_order::WriteOrder;
use crate::session::registry::ConnId;

/// How long a proposed session change (create, close) may take to be committed before the
/// connection gives up on it.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// A reply frame; its body is dropped unless `err` is `Ok` (ZooKeeper sends none with errors).
pub fn reply_frame(xid: i32, zxid: i64, err: ErrorCode, response: Response) -> Bytes {
    let response = if err == ErrorCode::Ok {
        response
    } else {
        Response::Empty
    };
    let mut b = BytesMut::new();
    encode_frame(
        &ReplyPacket {
            header: ReplyHeader {
                xid,
                zxid,
                err: err.as_i32(),
            },
            response,
        },
        &mut b,
    );
    b.freeze()
}

/// What the reader and the processor share.
#[derive(Clone)]
pub struct Conn {
    /// The node it is served by.
    pub node: Arc<Node>,
    /// Its id on this node (watches and the registry are keyed by it).
    pub id: ConnId,
    /// The session it carries.
    pub session_id: i64,
    /// A read-only node's local session ([`crate::read_only`]): reads without a read point,
    /// `NotReadOnly` for writes.
    pub read_only: bool,
    /// How long the client may stay silent before the connection closes: a read-only session's
    /// timeout (no leader expires it); `None` for a replicated session (the leader does).
    pub idle_limit: Option<std::time::Duration>,
    /// The connection's outbound queue (bounded: replies wait for room, and a client whose
    /// events find none is dropped).
    pub out: Outbox,
    /// This connection's request counters (`cons`), answered in request order.
    pub stats: Arc<crate::stats::ConnStats>,
    /// Keeps its writes in order across a change of leader: the proposer refuses a write that
    /// would go to another leader than earlier ones still in flight, or follow a failed one.
    pub order: Arc<WriteOrder>,
}

impl Conn {
    /// Proposes the close of this connection's session: (its origin, the waiter of its outcome).
    pub fn propose_close(&self) -> (synod_raft_store::Origin, oneshot::Receiver<Completion>) {
        let origin = self.node.origin();
        let done = self.node.propose_and_wait(
            origin,
            synod_raft_store::Command::CloseSession {
                origin: Some(origin),
                session_id: self.session_id,
            },
            Some(&self.order),
        );
        (origin, done)
    }

    /// The zxid reflecting everything this node has applied (pings and errors carry it).
    pub fn applied(&self) -> i64 {
        applied_zxid(*self.node.applied.borrow())
    }

    /// Queues a reply, waiting for room: a client that does not read stalls only itself (the
    /// reader stops at --max-outstanding); it is dropped when its events overflow the queue.
    pub async fn send(&self, frame: Bytes) -> bool {
        let ok = self.out.send_reply(frame).await;
        self.stats.answered(self.applied());
        ok
    }

    /// [`Conn::send`] for a reply whose request's time ends at `answered` (read from the
    /// clock as the reply was made; a wait for room in the queue is the client's own).
    pub async fn send_answer(&self, frame: Bytes, answered: Instant) -> bool {
        let ok = self.out.send_reply(frame).await;
        self.stats.answered_at(self.applied(), answered);
        ok
    }
}
