//! One client connection: the ZooKeeper handshake (new or resumed session), then a reader that
//! decodes requests and proposes writes at once (so a session's writes pipeline, in order), an
//! ordered processor that answers every request in the order received (reads wait for the
//! session's earlier writes and, by default, for a linearizable read point), and a writer that
//! sends replies and watch events from one queue.
//!
//! Ordering: events are queued by apply under the replica lock, before the entry is visible to
//! any reader; replies to reads that leave a watch are queued under the same lock, so a watch's
//! event can never precede the reply that set it, and a reply never precedes the event of a
//! change it reflects.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use sha1::{Digest, Sha1};
use synod_proto::frame::encode_frame;
use synod_proto::jute::{Decode, Reader};
use synod_proto::records::*;
use synod_proto::response::ReplyPacket;
use synod_proto::{
    xid, AddWatchMode, ErrorCode, EventType, FrameCodec, Id, MultiOp, MultiResult, Request,
    RequestPacket, Response, WatcherType,
};
use synod_raft_store::state_machine::{lock, Replica};
use synod_raft_store::types::{applied_zxid, zxid_index};
use synod_raft_store::Command;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::FramedRead;

use crate::config::ReadConsistency;
use crate::local::{notification_frame, Completion, ConnEntry, Local};
use crate::node::Node;
use crate::outbox::{outbox, Kind, Outbox, OutboxReceiver, ReplyRoom};
use crate::watches::{ConnId, WatchKind};

/// How long a client has to send its ConnectRequest.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new session may take to be committed before the connection gives up.
const SESSION_CREATE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a resuming client waits for this server to catch up with what it has seen.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(5);

/// The reader's reason when it stopped after a request that ends the connection (closeSession,
/// a rejected credential): the processor still has to send that request's reply.
const CLOSING: &str = "closing after a final request";

/// What a request holds until answered: its place under --max-outstanding and in the
/// outstanding-requests gauge.
type Held = (OwnedSemaphorePermit, crate::metrics::InFlight);

/// A request's place in the connection's reply order.
enum Slot {
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
        request: Request,
        auth: Arc<Vec<Id>>,
        arrived: Instant,
    },
    /// A ping: answered with the current applied zxid.
    Ping,
    /// A reply decided when the request was read (auth, unimplemented ops); `close` ends the
    /// connection after it is sent.
    Ready { frame: Bytes, close: bool },
}

fn reply_frame(xid: i32, zxid: i64, err: ErrorCode, response: Response) -> Bytes {
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

fn digest_id(auth: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(auth).ok()?;
    let (user, _) = text.split_once(':')?;
    let hash = Sha1::digest(text.as_bytes());
    Some(format!(
        "{user}:{}",
        base64::engine::general_purpose::STANDARD.encode(hash)
    ))
}

/// Serves one client connection until it closes.
pub async fn serve(node: Arc<Node>, mut stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let mut head = [0u8; 4];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut head)).await {
        Ok(Ok(_)) => {}
        _ => return,
    }
    if let Some(answer) = crate::fourletter::answer(&node, &head) {
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
        return;
    }
    let len = i32::from_be_bytes(head);
    if len < 0 || len as usize > node.cfg.max_frame_bytes {
        tracing::info!(%peer, len, "closing: handshake frame length out of range");
        return;
    }
    let mut body = vec![0u8; len as usize];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut body)).await {
        Ok(Ok(_)) => {}
        _ => return,
    }
    let req = match ConnectRequest::decode(&mut Reader::new(Bytes::from(body))) {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(%peer, %e, "closing: malformed ConnectRequest");
            return;
        }
    };
    node.stats.handshake_received();
    let (rd, mut wr) = stream.into_split();
    let Some((session_id, timeout, passwd)) = handshake(&node, &req, peer).await else {
        // Tell an expired session so, as ZooKeeper does; refuse others silently (the client moves on).
        if req.base.session_id != 0 {
            let _ = wr.write_all(&expired_response()).await;
        }
        return;
    };
    if session_id == 0 {
        return;
    }

    let conn_id = node.next_conn_id();
    let registered = node
        .stats
        .register(conn_id, peer, session_id, timeout.as_millis() as u64);
    let (out_tx, out_rx) = outbox(
        node.cfg.max_queued_per_connection,
        node.cfg.max_queued_bytes_per_connection,
    );
    let kill = Arc::new(Notify::new());
    let accepted = {
        let mut r = lock(&node.replica);
        // Checked in the same hold as the registration: a session closed after the handshake
        // looked it up would otherwise leave this connection unknown to its close, never told.
        let alive = r.tree.session(session_id).is_some();
        if alive {
            r.observer.add_conn(
                conn_id,
                ConnEntry {
                    session_id,
                    out: out_tx.clone(),
                    kill: kill.clone(),
                },
            );
            // The handshake reply is the first frame of the queue.
            let _ = out_tx.push_reply(connect_response(
                timeout.as_millis() as i32,
                session_id,
                passwd,
            ));
        }
        alive
    };
    if !accepted {
        let _ = wr.write_all(&expired_response()).await;
        return;
    }
    node.touch(session_id);
    tracing::debug!(%peer, conn = conn_id, session = format_args!("{session_id:#x}"), "session established");

    let mut writer = tokio::spawn(write_loop(wr, out_rx, registered.stats.clone()));
    let (slot_tx, slot_rx) = mpsc::unbounded_channel::<(Slot, Held)>();
    let conn = Conn {
        node: node.clone(),
        id: conn_id,
        session_id,
        out: out_tx,
        stats: registered.stats.clone(),
    };
    let mut processor = tokio::spawn(conn.clone().process(slot_rx));
    let reader = conn.read_loop(rd, peer, slot_tx);
    let mut closing = false;
    tokio::select! {
        why = reader => {
            tracing::debug!(conn = conn_id, why, "connection reader ended");
            closing = why == CLOSING;
        }
        _ = &mut processor => tracing::debug!(conn = conn_id, "connection closed after close or failure"),
        _ = &mut writer => tracing::debug!(conn = conn_id, "write to client failed"),
        _ = kill.notified() => tracing::debug!(conn = conn_id, "connection closed by the server"),
        _ = async { let _ = node.stopping.subscribe().wait_for(|s| *s).await; } => {
            // Server shutdown: read no more, answer what was read, then close.
            closing = true;
        }
    }
    if closing && !processor.is_finished() {
        // Let the final request be answered (closeSession waits for its entry to commit).
        tokio::select! {
            _ = tokio::time::timeout(SESSION_CREATE_TIMEOUT, &mut processor) => {}
            _ = kill.notified() => {}
        }
    }
    lock(&node.replica).observer.remove_conn(conn_id);
    processor.abort();
    // The last senders of the queue go now, so the writer ends as soon as it has drained it.
    drop(conn);
    // Let queued replies (e.g. the closeSession reply) drain briefly before closing the socket.
    if !writer.is_finished() {
        let _ = tokio::time::timeout(Duration::from_millis(200), &mut writer).await;
    }
    writer.abort();
}

/// Establishes or resumes the session: Some((id, timeout, password)), or None to refuse.
async fn handshake(
    node: &Arc<Node>,
    req: &ConnectRequest,
    peer: SocketAddr,
) -> Option<(i64, Duration, Bytes)> {
    let b = &req.base;
    if b.session_id == 0 {
        let timeout = node.cfg.negotiate_timeout(b.timeout);
        let passwd = Bytes::from(rand::random::<[u8; 16]>().to_vec());
        let origin = node.origin();
        let cmd = Command::CreateSession {
            origin,
            timeout_ms: timeout.as_millis() as i32,
            passwd: passwd.clone(),
        };
        let done = node.propose_and_wait(origin, cmd);
        return match tokio::time::timeout(SESSION_CREATE_TIMEOUT, done).await {
            Ok(Ok(Completion::Session { session_id })) => Some((session_id, timeout, passwd)),
            other => {
                tracing::info!(%peer, ?other, "could not create a session");
                lock(&node.replica)
                    .observer
                    .fail_pending(origin.request, "gave up".into());
                Some((0, timeout, passwd))
            }
        };
    }
    // A resuming client must never see this server behind what it has already seen.
    if let Err(e) = node
        .wait_applied(zxid_index(b.last_zxid_seen), CATCH_UP_TIMEOUT)
        .await
    {
        tracing::info!(%peer, %e, "refusing session: this server is behind the client");
        return Some((0, Duration::ZERO, Bytes::new()));
    }
    let lookup = |node: &Node| {
        let r = lock(&node.replica);
        r.tree
            .session(b.session_id)
            .map(|s| (s.timeout_ms, s.passwd.clone()))
    };
    let mut found = lookup(node);
    if found.is_none() {
        // It may have been created moments ago through another server: catch up, then look again.
        if node.sync_barrier().await.is_err() {
            return Some((0, Duration::ZERO, Bytes::new()));
        }
        found = lookup(node);
    }
    match found {
        Some((timeout_ms, passwd)) if passwd == b.passwd => Some((
            b.session_id,
            Duration::from_millis(timeout_ms.max(0) as u64),
            passwd,
        )),
        _ => None,
    }
}

/// An encoded ConnectResponse granting `session_id` for `timeout_ms`.
fn connect_response(timeout_ms: i32, session_id: i64, passwd: Bytes) -> Bytes {
    let resp = ConnectResponse {
        base: ConnectResponseBase {
            protocol_version: 0,
            timeout: timeout_ms,
            session_id,
            passwd,
        },
        read_only: false,
    };
    let mut b = BytesMut::new();
    encode_frame(&resp, &mut b);
    b.freeze()
}

/// The ConnectResponse that tells a client its session has expired (timeout 0), as ZooKeeper
/// sends it.
fn expired_response() -> Bytes {
    connect_response(0, 0, Bytes::from(vec![0; 16]))
}

/// Frames at least this large are written as they are instead of being copied into the batch
/// buffer (which therefore never grows much beyond [`WRITE_BATCH`]).
const DIRECT_WRITE: usize = 64 * 1024;
/// The writer stops gathering queued frames into one batch at this many bytes.
const WRITE_BATCH: usize = 256 * 1024;

/// Writes queued frames to the client in order, gathering small ones into one write, and returns
/// their room to the outbox after each batch.
async fn write_loop(
    mut wr: OwnedWriteHalf,
    mut rx: OutboxReceiver,
    stats: Arc<crate::stats::ConnStats>,
) {
    let mut buf = BytesMut::new();
    while let Some(first) = rx.recv().await {
        let (mut frames, mut reply_bytes, mut event_bytes, mut batch) = (0, 0, 0, 0);
        let mut next = Some(first);
        while let Some(q) = next.take() {
            let len = q.frame.len();
            if len >= DIRECT_WRITE {
                if !buf.is_empty() && wr.write_all(&buf).await.is_err() {
                    return;
                }
                buf.clear();
                if wr.write_all(&q.frame).await.is_err() {
                    return;
                }
            } else {
                buf.extend_from_slice(&q.frame);
            }
            match q.kind {
                Kind::Reply => reply_bytes += len,
                Kind::Event => event_bytes += len,
                Kind::Replay => {}
            }
            frames += usize::from(q.kind != Kind::Replay);
            stats.sent();
            batch += len;
            if batch < WRITE_BATCH {
                next = rx.try_recv();
            }
        }
        if !buf.is_empty() && wr.write_all(&buf).await.is_err() {
            return;
        }
        buf.clear();
        rx.release(frames, reply_bytes, event_bytes);
    }
    let _ = wr.shutdown().await;
}

/// What the reader and the processor share.
#[derive(Clone)]
struct Conn {
    node: Arc<Node>,
    id: ConnId,
    session_id: i64,
    /// The connection's outbound queue (bounded: replies wait for room, and a client whose
    /// events find none is dropped).
    out: Outbox,
    /// This connection's request counters (`cons`), answered in request order.
    stats: Arc<crate::stats::ConnStats>,
}

impl Conn {
    async fn read_loop(
        &self,
        rd: tokio::net::tcp::OwnedReadHalf,
        peer: SocketAddr,
        slots: mpsc::UnboundedSender<(Slot, Held)>,
    ) -> &'static str {
        let mut frames = FramedRead::new(rd, FrameCodec::new(self.node.cfg.max_frame_bytes));
        let permits = Arc::new(Semaphore::new(self.node.cfg.max_outstanding));
        let mut auth: Arc<Vec<Id>> = Arc::new(vec![Id {
            scheme: "ip".into(),
            id: peer.ip().to_string(),
        }]);
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return "closed";
            };
            let frame = match frames.next().await {
                Some(Ok(f)) => f,
                Some(Err(e)) => {
                    tracing::info!(%peer, %e, "closing connection: bad frame");
                    return "bad frame";
                }
                None => return "client closed the connection",
            };
            let packet = match RequestPacket::decode(&mut Reader::new(frame.clone())) {
                Ok(p) => p,
                Err(e) => {
                    tracing::info!(%peer, %e, "closing connection: malformed request");
                    return "malformed request";
                }
            };
            self.node.touch(self.session_id);
            self.stats
                .request(packet.request.opcode().as_i32(), packet.xid);
            let (slot, stop) = self.dispatch(packet, frame, &mut auth);
            if slots
                .send((slot, (permit, crate::metrics::InFlight::new())))
                .is_err()
            {
                return "stopped reading";
            }
            if stop {
                return CLOSING;
            }
        }
    }

    /// Turns one request into its slot; writes are proposed here, in arrival order.
    fn dispatch(&self, p: RequestPacket, frame: Bytes, auth: &mut Arc<Vec<Id>>) -> (Slot, bool) {
        let xid = p.xid;
        let ready = |err: ErrorCode, close: bool| {
            (
                Slot::Ready {
                    frame: reply_frame(xid, self.applied(), err, Response::Empty),
                    close,
                },
                close,
            )
        };
        let op = p.request.opcode();
        match p.request {
            Request::Ping => (Slot::Ping, false),
            Request::Auth(a) => {
                let id = match a.scheme.as_str() {
                    "digest" => digest_id(&a.auth).map(|id| Id {
                        scheme: "digest".into(),
                        id,
                    }),
                    _ => None,
                };
                match id {
                    Some(id) => {
                        if !auth.contains(&id) {
                            Arc::make_mut(auth).push(id);
                        }
                        ready(ErrorCode::Ok, false)
                    }
                    None => ready(ErrorCode::AuthFailed, true),
                }
            }
            Request::Reconfig(_) | Request::Sasl(_) => ready(ErrorCode::Unimplemented, false),
            Request::CloseSession => {
                lock(&self.node.replica)
                    .observer
                    .detach_session(self.session_id, self.id);
                let origin = self.node.origin();
                let done = self.node.propose_and_wait(
                    origin,
                    Command::CloseSession {
                        origin: Some(origin),
                        session_id: self.session_id,
                    },
                );
                (
                    Slot::Write {
                        xid,
                        done,
                        close_after: true,
                        op,
                        arrived: Instant::now(),
                    },
                    true,
                )
            }
            _ if op.is_write() => {
                let origin = self.node.origin();
                let cmd = Command::Write {
                    origin,
                    session_id: self.session_id,
                    time_ms: crate::clock::now_ms(),
                    auth: auth
                        .iter()
                        .map(|i| (i.scheme.clone(), i.id.clone()))
                        .collect(),
                    opcode: op.as_i32(),
                    // An exact-size copy: a slice would pin the whole read buffer it came from
                    // for as long as the tree keeps the value.
                    body: Bytes::copy_from_slice(&frame[8..]),
                };
                let done = self.node.propose_and_wait(origin, cmd);
                (
                    Slot::Write {
                        xid,
                        done,
                        close_after: false,
                        op,
                        arrived: Instant::now(),
                    },
                    false,
                )
            }
            request => (
                Slot::Read {
                    xid,
                    request,
                    auth: auth.clone(),
                    arrived: Instant::now(),
                },
                false,
            ),
        }
    }

    /// The zxid reflecting everything this node has applied (pings and errors carry it).
    fn applied(&self) -> i64 {
        applied_zxid(*self.node.applied.borrow())
    }

    /// Queues a reply, waiting for room: a client that does not read stalls only itself (the
    /// reader stops at --max-outstanding); it is dropped when its events overflow the queue.
    async fn send(&self, frame: Bytes) -> bool {
        let ok = self.out.send_reply(frame).await;
        self.stats.answered(self.applied());
        ok
    }

    /// Answers slots strictly in order.
    async fn process(self, mut slots: mpsc::UnboundedReceiver<(Slot, Held)>) {
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
                    let frame = match done.await {
                        Ok(Completion::Write {
                            zxid,
                            err,
                            response,
                        }) => {
                            crate::metrics::request_done(op, arrived, err);
                            reply_frame(xid, zxid, err, response)
                        }
                        Ok(Completion::Session { .. }) => return,
                        Ok(Completion::Failed(why)) => {
                            tracing::info!(conn = self.id, %why, "closing connection: write outcome unknown");
                            return;
                        }
                        Err(_) => return,
                    };
                    if !self.send(frame).await || close_after {
                        return;
                    }
                }
                Slot::Read {
                    xid,
                    request,
                    auth,
                    arrived,
                } => {
                    let needs_point = matches!(request, Request::Sync(_))
                        || (self.node.cfg.read_consistency == ReadConsistency::Linearizable
                            && is_data_read(&request));
                    if needs_point {
                        let idx = match read_point {
                            Some((started, idx)) if started > arrived => idx,
                            _ => {
                                let started = Instant::now();
                                match self.node.read_index().await {
                                    Ok(idx) => {
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
                        if let Err(e) = self.node.wait_applied(idx, Duration::from_secs(30)).await {
                            tracing::info!(conn = self.id, %e, "closing connection");
                            return;
                        }
                    }
                    if let Some(since) = resumes_persistent_watches(&request) {
                        let reaches = lock(&self.node.replica).observer.history_reaches(since);
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
                    let mut r = lock(&self.node.replica);
                    if !self.evaluate(&mut r, xid, request, &auth, room, arrived) {
                        return;
                    }
                    drop(r);
                    self.stats.answered(self.applied());
                }
            }
        }
    }

    /// A resuming session's persistent watches missed events that this node's history no longer
    /// holds (it restarted from a snapshot, installed one, or the session was away for more
    /// than [`crate::local::WATCH_HISTORY`] events). Resuming anyway would lose those events
    /// silently, so the connection closes instead: if another member's history reaches back
    /// far enough, the client's next server can replay them; if none does, the session is
    /// expired first, so that the client learns `SessionExpired` on its next connect and
    /// rebuilds its state, as every ZooKeeper client does.
    async fn cannot_replay(&self, since: i64) {
        let conn = self.id;
        let since_hex = format!("{since:#x}");
        if let Some(member) = self.node.member_with_history(since).await {
            tracing::info!(
                conn,
                relative_zxid = %since_hex,
                member,
                "closing connection: its persistent watches missed events this node's history \
                 no longer holds; another member can replay them"
            );
            return;
        }
        tracing::warn!(
            conn,
            session = format_args!("{:#x}", self.session_id),
            relative_zxid = %since_hex,
            "expiring session: its persistent watches missed events that no member's history \
             holds any more"
        );
        let origin = self.node.origin();
        let done = self.node.propose_and_wait(
            origin,
            Command::CloseSession {
                origin: Some(origin),
                session_id: self.session_id,
            },
        );
        if !matches!(
            tokio::time::timeout(SESSION_CREATE_TIMEOUT, done).await,
            Ok(Ok(Completion::Write { .. }))
        ) {
            // Its fate is unknown: the client reconnects, resumes and meets this check again.
            lock(&self.node.replica)
                .observer
                .fail_pending(origin.request, "gave up".into());
        }
    }

    /// Evaluates a read against the applied tree and queues its reply, under the replica lock.
    fn evaluate(
        &self,
        r: &mut Replica<Local>,
        xid: i32,
        request: Request,
        auth: &[Id],
        room: ReplyRoom<'_>,
        arrived: Instant,
    ) -> bool {
        let zxid = r.applied_zxid();
        let op = request.opcode();
        let Replica { tree, observer, .. } = r;
        let conn = self.id;
        let mut xid = xid;
        let (err, resp) = match request {
            Request::Exists(q) => {
                if q.watch {
                    observer.watches.add(conn, WatchKind::Data, &q.path);
                }
                match tree.stat(&q.path) {
                    Some(s) => (ErrorCode::Ok, Response::Stat(s)),
                    None => (ErrorCode::NoNode, Response::Empty),
                }
            }
            Request::GetData(q) => match tree.get_data(&q.path, auth) {
                Ok((data, stat)) => {
                    if q.watch {
                        observer.watches.add(conn, WatchKind::Data, &q.path);
                    }
                    (
                        ErrorCode::Ok,
                        Response::GetData(GetDataResponse { data, stat }),
                    )
                }
                Err(e) => (e, Response::Empty),
            },
            Request::GetChildren(q) => match tree.get_children(&q.path, auth) {
                Ok((children, _)) => {
                    if q.watch {
                        observer.watches.add(conn, WatchKind::Child, &q.path);
                    }
                    (
                        ErrorCode::Ok,
                        Response::GetChildren(GetChildrenResponse { children }),
                    )
                }
                Err(e) => (e, Response::Empty),
            },
            Request::GetChildren2(q) => match tree.get_children(&q.path, auth) {
                Ok((children, stat)) => {
                    if q.watch {
                        observer.watches.add(conn, WatchKind::Child, &q.path);
                    }
                    (
                        ErrorCode::Ok,
                        Response::GetChildren2(GetChildren2Response { children, stat }),
                    )
                }
                Err(e) => (e, Response::Empty),
            },
            Request::GetAcl(q) => match tree.get_acl(&q.path) {
                Ok((acl, stat)) => (
                    ErrorCode::Ok,
                    Response::GetAcl(GetAclResponse { acl, stat }),
                ),
                Err(e) => (e, Response::Empty),
            },
            Request::GetAllChildrenNumber(q) => match tree.all_children_number(&q.path, auth) {
                Ok(n) => (
                    ErrorCode::Ok,
                    Response::GetAllChildrenNumber(GetAllChildrenNumberResponse {
                        total_number: n,
                    }),
                ),
                Err(e) => (e, Response::Empty),
            },
            Request::GetEphemerals(q) => (
                ErrorCode::Ok,
                Response::GetEphemerals(GetEphemeralsResponse {
                    ephemerals: tree.ephemerals(self.session_id, &q.prefix_path),
                }),
            ),
            Request::Sync(q) => (ErrorCode::Ok, Response::Sync(SyncResponse { path: q.path })),
            Request::MultiRead(ops) => {
                let results = ops
                    .into_iter()
                    .map(|op| match op {
                        MultiOp::GetData(q) => match tree.get_data(&q.path, auth) {
                            Ok((data, stat)) => MultiResult::GetData { data, stat },
                            Err(e) => MultiResult::Error(e),
                        },
                        MultiOp::GetChildren(q) => match tree.get_children(&q.path, auth) {
                            Ok((children, _)) => MultiResult::GetChildren { children },
                            Err(e) => MultiResult::Error(e),
                        },
                        _ => MultiResult::Error(ErrorCode::BadArguments),
                    })
                    .collect();
                (ErrorCode::Ok, Response::Multi(results))
            }
            Request::CheckWatches(q) => match WatcherType::from_i32(q.watcher_type) {
                Some(t) if observer.watches.has(conn, &q.path, t) => {
                    (ErrorCode::Ok, Response::Empty)
                }
                Some(_) => (ErrorCode::NoWatcher, Response::Empty),
                None => (ErrorCode::BadArguments, Response::Empty),
            },
            Request::RemoveWatches(q) => match WatcherType::from_i32(q.watcher_type) {
                Some(t) if observer.watches.remove(conn, &q.path, t) => {
                    (ErrorCode::Ok, Response::Empty)
                }
                Some(_) => (ErrorCode::NoWatcher, Response::Empty),
                None => (ErrorCode::BadArguments, Response::Empty),
            },
            Request::AddWatch(q) => match AddWatchMode::from_i32(q.mode) {
                Some(mode) => {
                    let kind = match mode {
                        AddWatchMode::Persistent => WatchKind::Persistent,
                        AddWatchMode::PersistentRecursive => WatchKind::Recursive,
                    };
                    observer.watches.add(conn, kind, &q.path);
                    (ErrorCode::Ok, Response::Error(ErrorResponse { err: 0 }))
                }
                None => (ErrorCode::BadArguments, Response::Empty),
            },
            Request::SetWatches(w) => {
                xid = xid::SET_WATCHES;
                let w = SetWatches2 {
                    relative_zxid: w.relative_zxid,
                    data_watches: w.data_watches,
                    exist_watches: w.exist_watches,
                    child_watches: w.child_watches,
                    ..Default::default()
                };
                if !self.set_watches(tree, observer, w) {
                    return false;
                }
                (ErrorCode::Ok, Response::Empty)
            }
            Request::SetWatches2(w) => {
                xid = xid::SET_WATCHES;
                if !self.set_watches(tree, observer, w) {
                    return false;
                }
                (ErrorCode::Ok, Response::Empty)
            }
            Request::WhoAmI => {
                let client_info = auth
                    .iter()
                    .map(|id| ClientInfo {
                        auth_scheme: id.scheme.clone(),
                        user: id.id.split(':').next().unwrap_or_default().to_string(),
                    })
                    .collect();
                (
                    ErrorCode::Ok,
                    Response::WhoAmI(WhoAmIResponse { client_info }),
                )
            }
            _ => (ErrorCode::Unimplemented, Response::Empty),
        };
        crate::metrics::request_done(op, arrived, err);
        room.send(reply_frame(xid, zxid, err, resp))
    }

    /// Re-registers a reconnecting session's watches, firing at once what changed after the
    /// zxid the client had seen: one event per one-shot watch (as ZooKeeper's
    /// DataTree.setWatches does), and every missed event of a persistent watch, in zxid order,
    /// from this node's recent history (ZooKeeper sends those none). Missed events go first, all
    /// of it under the replica lock, so later events follow them.
    fn set_watches(
        &self,
        tree: &synod_raft_store::DataTree,
        observer: &mut Local,
        w: SetWatches2,
    ) -> bool {
        let rel = w.relative_zxid;
        let conn = self.id;
        let mut fired = Vec::new();
        for p in w.data_watches {
            match tree.node(&p) {
                None => fired.push((EventType::NodeDeleted, p)),
                Some(n) if n.mzxid > rel => fired.push((EventType::NodeDataChanged, p)),
                Some(_) => observer.watches.add(conn, WatchKind::Data, &p),
            }
        }
        for p in w.exist_watches {
            match tree.node(&p) {
                Some(_) => fired.push((EventType::NodeCreated, p)),
                None => observer.watches.add(conn, WatchKind::Data, &p),
            }
        }
        for p in w.child_watches {
            match tree.node(&p) {
                None => fired.push((EventType::NodeDeleted, p)),
                Some(n) if n.pzxid > rel => fired.push((EventType::NodeChildrenChanged, p)),
                Some(_) => observer.watches.add(conn, WatchKind::Child, &p),
            }
        }
        let persistent = w
            .persistent_watches
            .into_iter()
            .map(|p| (WatchKind::Persistent, p));
        let recursive = w
            .persistent_recursive_watches
            .into_iter()
            .map(|p| (WatchKind::Recursive, p));
        let resumed: Vec<(WatchKind, String)> = persistent.chain(recursive).collect();
        // One pass over the history: each missed event once (even when several of the
        // session's watches match it), in the order it happened.
        let mut missed = Vec::new();
        if rel > 0 && !resumed.is_empty() && !observer.missed_events(rel, &resumed, &mut missed) {
            // Checked before (see `cannot_replay`), but the history may have moved on since:
            // resuming without the missed events would lose them silently, so the client goes
            // elsewhere (and meets that check) instead.
            tracing::info!(
                conn,
                relative_zxid = format_args!("{rel:#x}"),
                "closing connection: its persistent watches resume from before this node's event \
                 history"
            );
            return false;
        }
        for (kind, p) in &resumed {
            observer.watches.add(conn, *kind, p);
        }
        let missed = missed
            .into_iter()
            .map(|(z, ev)| notification_frame(z, ev.event_type, &ev.path));
        // A one-shot watch fires from the current state, not from one change: no zxid (-1).
        let fired = fired
            .into_iter()
            .map(|(t, p)| notification_frame(-1, t, &p));
        // Bounded by the request and the node's event history, not by the event budget: a
        // resuming client refused its replay would be dropped again on every reconnect.
        missed.chain(fired).all(|frame| self.out.replay(frame))
    }
}

/// The zxid after which a setWatches request resumes persistent watches, if it resumes any: their
/// missed events must be replayed from the node's event history.
fn resumes_persistent_watches(r: &Request) -> Option<i64> {
    match r {
        Request::SetWatches2(w)
            if w.relative_zxid > 0
                && !(w.persistent_watches.is_empty()
                    && w.persistent_recursive_watches.is_empty()) =>
        {
            Some(w.relative_zxid)
        }
        _ => None,
    }
}

/// Reads that must see every write acknowledged before them (linearizable mode).
fn is_data_read(r: &Request) -> bool {
    matches!(
        r,
        Request::Exists(_)
            | Request::GetData(_)
            | Request::GetChildren(_)
            | Request::GetChildren2(_)
            | Request::GetAcl(_)
            | Request::GetAllChildrenNumber(_)
            | Request::GetEphemerals(_)
            | Request::MultiRead(_)
            | Request::SetWatches(_)
            | Request::SetWatches2(_)
    )
}
