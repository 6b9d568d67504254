//! The peer RPC client: one persistent, pipelined connection per peer address, made lazily
//! (TCP, then [`super::transport::dial`]: TLS and the hello) and remade on the next call after it
//! breaks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use synod_raft_store::types::NodeId;

use super::frame::{clamp_max_frame_len, decode_frame, encode_frame, BatchWriter};
use super::transport::{self, BoxRead, BoxWrite, LocalPeer};
use super::{AbortOnDrop, PeerError, PeerRequest, PeerResponse, DEFAULT_MAX_FRAME_LEN};

/// Frames queued for a connection's writer; when full, callers wait (within their timeout) for
/// the writer, so a peer that stops reading cannot make us buffer without end.
const QUEUE_LEN: usize = 1024;

/// A pool of peer connections, one per target address. Cheap to clone; clones share the
/// connections. Dropping the last clone closes every connection.
///
/// Each connection is opened by the first call to its address and reused by every later call,
/// which are pipelined on it and matched to their responses by id. When it breaks, the calls in
/// flight on it fail ([`PeerError::Closed`] or [`PeerError::Codec`]) and the next call opens a new
/// one. A failed call is never retried by the pool.
///
/// Ordering guarantee: the calls to one address are written to its connection in the order in
/// which they are enqueued. A call enqueues on its first poll unless another call to that address
/// is ahead of it (still connecting, or waiting for room in the queue); then it waits in a FIFO
/// line (tokio's fair mutex) and enqueues in its turn. So calls made from one task in order
/// (awaited one by one, or created in order and polled by `join_all`, which first polls them in
/// order) are written in that order, and the remote server hands them to
/// [`super::PeerService::handle`] in that order. Calls from different tasks are ordered by the
/// moment each first reaches the pool. The guarantee holds per connection: a call that fails
/// because the connection broke may or may not have been delivered, and the calls after it may
/// travel on a new connection — unless they are calls of one [`CallStream`], which fail instead.
#[derive(Clone)]
pub struct PeerPool {
    /// Shared by the clones.
    inner: Arc<PoolInner>,
}

/// The state every clone of a [`PeerPool`] shares.
struct PoolInner {
    /// Who this node is on the peer port: its id, cluster id and TLS material.
    local: Arc<LocalPeer>,
    /// Largest request payload sent (and response payload accepted), the length prefix excluded.
    max_frame_len: usize,
    /// Source of request ids: unique in the pool, hence unique on each connection.
    next_id: AtomicU64,
    /// Peers dialed at another address than the one callers name (`--peer-route`): NAT,
    /// tunnels, the fault-injection suite's proxies.
    routes: HashMap<NodeId, String>,
    /// The connection slot of each address called so far. The async lock around a slot is what
    /// orders the calls to that address and makes concurrent callers share one connect.
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Conn>>>>>,
}

impl Default for PeerPool {
    /// A plaintext pool of node 0 (tests of the peer layer).
    fn default() -> Self {
        PeerPool::new(LocalPeer::insecure(0), DEFAULT_MAX_FRAME_LEN)
    }
}

impl std::fmt::Debug for PeerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerPool")
            .field("max_frame_len", &self.inner.max_frame_len)
            .finish()
    }
}

impl PeerPool {
    /// A pool whose frames (requests sent, responses accepted) are at most `max_frame_len` bytes
    /// after the length prefix ([`DEFAULT_MAX_FRAME_LEN`] is the usual choice).
    /// Connections are opened as `local`.
    pub fn new(local: Arc<LocalPeer>, max_frame_len: usize) -> Self {
        Self::with_routes(local, max_frame_len, HashMap::new())
    }

    /// Like [`PeerPool::new`], but calls to a node in `routes` dial the address given there
    /// instead of the one the caller names.
    pub fn with_routes(
        local: Arc<LocalPeer>,
        max_frame_len: usize,
        routes: HashMap<NodeId, String>,
    ) -> Self {
        PeerPool {
            inner: Arc::new(PoolInner {
                local,
                max_frame_len: clamp_max_frame_len(max_frame_len),
                next_id: AtomicU64::new(1),
                routes,
                slots: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The maximum frame length this pool sends and accepts.
    pub fn max_frame_len(&self) -> usize {
        self.inner.max_frame_len
    }

    /// Whether the next calls of `stream` may still go: it has not stopped, and the connection
    /// its calls went on, if any yet, is still open and would not be replaced by the next call.
    pub fn is_usable(&self, stream: &CallStream) -> bool {
        stream.is_usable(self.inner.local.cluster.get())
    }

    /// Sends `req` to node `target` at `addr` and waits at most `timeout` for its response.
    ///
    /// Errors: [`PeerError::Unreachable`] if no connection could be made (nothing was sent);
    /// [`PeerError::TooLarge`] or [`PeerError::Codec`] if the request cannot be encoded (nothing
    /// was sent); [`PeerError::Timeout`] if no response came in time; [`PeerError::Closed`] or
    /// [`PeerError::Codec`] if the connection broke first. In the last two cases the request may
    /// have been handled.
    pub async fn call(
        &self,
        target: NodeId,
        addr: &str,
        req: PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse, PeerError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let payload = encode_frame(id, &req, self.inner.max_frame_len)?;
        drop(req);
        // Connecting gives up at this deadline (as Unreachable), no later than the call's timeout.
        let connect_deadline = Instant::now().checked_add(timeout);
        let sent = async {
            let mut pending = self
                .enqueue(
                    None,
                    target,
                    addr,
                    vec![(id, payload)],
                    connect_deadline,
                    None,
                )
                .await;
            match pending.pop() {
                Some(Ok(call)) => call.wait().await,
                Some(Err(e)) => Err(e),
                None => Err(PeerError::Closed("the call was not enqueued".to_string())),
            }
        };
        match tokio::time::timeout(timeout, sent).await {
            Ok(result) => result,
            Err(_) => Err(PeerError::Timeout(timeout)),
        }
    }

    /// Sends `reqs` to node `target` at `addr` as [`PeerPool::call`] would send each, but as one
    /// group: encoded together, written in order and back to back (one turn in the address's
    /// line, see the ordering guarantee above), their responses awaited together within one
    /// `timeout`. Returns one result per request, in order, each with the errors of
    /// [`PeerPool::call`]. One group costs one timer and one task where as many calls would
    /// cost one each: a follower forwards what its clients wrote meanwhile this way.
    pub async fn call_all(
        &self,
        target: NodeId,
        addr: &str,
        reqs: Vec<PeerRequest>,
        timeout: Duration,
    ) -> Vec<Result<PeerResponse, PeerError>> {
        self.call_group(None, target, addr, reqs, timeout).await
    }

    /// [`PeerPool::call_all`] as the next calls of `stream`: they are sent only on the
    /// connection that carried the stream's earlier calls (or, for its first, on any), and a
    /// request that cannot be sent (not encodable, no connection, the stream's connection broke
    /// or was replaced) fails every later request of the group and of the stream, unsent.
    pub async fn call_all_in(
        &self,
        stream: &CallStream,
        target: NodeId,
        addr: &str,
        reqs: Vec<PeerRequest>,
        timeout: Duration,
    ) -> Vec<Result<PeerResponse, PeerError>> {
        self.call_group(Some(stream), target, addr, reqs, timeout)
            .await
    }

    /// [`PeerPool::call_all`], in `stream` if given ([`PeerPool::call_all_in`]).
    async fn call_group(
        &self,
        stream: Option<&CallStream>,
        target: NodeId,
        addr: &str,
        reqs: Vec<PeerRequest>,
        timeout: Duration,
    ) -> Vec<Result<PeerResponse, PeerError>> {
        let mut results: Vec<Option<Result<PeerResponse, PeerError>>> = Vec::new();
        let mut payloads = Vec::with_capacity(reqs.len());
        // In a stream, nothing after a request that cannot be encoded may be sent.
        let mut unsendable: Option<PeerError> = None;
        for req in reqs {
            if let Some(e) = &unsendable {
                results.push(Some(Err(e.clone())));
                continue;
            }
            let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
            match encode_frame(id, &req, self.inner.max_frame_len) {
                Ok(payload) => {
                    payloads.push((id, payload));
                    results.push(None);
                }
                Err(e) => {
                    if stream.is_some() {
                        unsendable = Some(e.clone());
                    }
                    results.push(Some(Err(e)));
                }
            }
        }
        let connect_deadline = Instant::now().checked_add(timeout);
        let slots: Vec<usize> = (0..results.len())
            .filter(|&i| results[i].is_none())
            .collect();
        let waiting = async {
            // A stream's call that times out or is dropped before its frames are enqueued
            // (waiting for the connection, or behind other calls) stops the stream: a later
            // call must not go where this one did not.
            let unqueued = stream.map(|stream| StopOnDrop {
                stream,
                why: "an earlier call of this stream timed out or was dropped before it was sent",
            });
            let pending = self
                .enqueue(stream, target, addr, payloads, connect_deadline, unsendable)
                .await;
            if let Some(guard) = unqueued {
                guard.disarm();
            }
            // Each answer is kept as it arrives: one that never comes does not cost the others.
            let mut answers: FuturesUnordered<_> = slots
                .iter()
                .zip(pending)
                .map(|(&slot, call)| async move {
                    match call {
                        Ok(call) => (slot, call.wait().await),
                        Err(e) => (slot, Err(e)),
                    }
                })
                .collect();
            while let Some((slot, answer)) = answers.next().await {
                results[slot] = Some(answer);
            }
        };
        // On timeout the responses not yet in stay `None` and become the timeout below.
        let _ = tokio::time::timeout(timeout, waiting).await;
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(PeerError::Timeout(timeout))))
            .collect()
    }

    /// Enqueues the frames, in order, on the address's connection (opening one if needed);
    /// returns a waiter per frame, in order. A frame that could not be enqueued (no connection,
    /// or it broke) gets the error instead, and so do the frames after it. Frames of `stream`
    /// go only on the stream's connection (see [`CallStream`]); `stop_after` stops the stream
    /// once these frames are enqueued, before any later call's (a request after them that
    /// could not be encoded).
    async fn enqueue(
        &self,
        stream: Option<&CallStream>,
        target: NodeId,
        addr: &str,
        payloads: Vec<(u64, Bytes)>,
        connect_deadline: Option<Instant>,
        stop_after: Option<PeerError>,
    ) -> Vec<Result<PendingCall, PeerError>> {
        let addr = self.inner.routes.get(&target).map_or(addr, String::as_str);
        let slot = self.slot(addr);
        let mut slot = slot.lock().await;
        // A stream's call dropped from here on (its caller gave up) before all its frames are
        // queued stops the stream while it still holds the address's turn (dropped before
        // `slot`), so that no later call of the stream is queued after the gap, whichever task
        // makes it.
        let unfinished = stream.map(|stream| StopOnDrop {
            stream,
            why: "an earlier call of this stream was dropped before all its frames were queued",
        });
        // A connection whose hello predates this node's cluster id is replaced, so that the
        // peer hears the id (it adopts it from the new hello).
        let reusable = slot.as_ref().filter(|conn| {
            conn.shared.is_open() && conn.shared.cluster_at_hello == self.inner.local.cluster.get()
        });
        if let Some(stream) = stream {
            if let Err(e) = stream.may_use(reusable.map(|conn| &conn.shared)) {
                return payloads.iter().map(|_| Err(e.clone())).collect();
            }
        }
        let reuse = reusable.is_some();
        let conn = match slot.take() {
            Some(conn) if reuse => Ok(conn),
            stale => {
                // A broken connection is dropped here (its tasks stop, its socket closes).
                drop(stale);
                Conn::connect(
                    &self.inner.local,
                    target,
                    addr,
                    self.inner.max_frame_len,
                    connect_deadline,
                )
                .await
            }
        };
        let conn = match conn {
            Ok(conn) => slot.insert(conn),
            Err(e) => {
                if let Some(stream) = stream {
                    stream.fail(e.clone());
                }
                return payloads.iter().map(|_| Err(e.clone())).collect();
            }
        };
        if let Some(stream) = stream {
            stream.bind(&conn.shared);
        }
        let mut pending = Vec::with_capacity(payloads.len());
        let mut failed: Option<PeerError> = None;
        for (id, payload) in payloads {
            if let Some(e) = &failed {
                pending.push(Err(e.clone()));
                continue;
            }
            let call = match conn.shared.register(id) {
                Ok(call) => call,
                Err(e) => {
                    if let Some(stream) = stream {
                        stream.fail(e.clone());
                    }
                    failed = Some(e.clone());
                    pending.push(Err(e));
                    continue;
                }
            };
            if conn.tx.send(payload).await.is_err() {
                let e = conn.shared.error().unwrap_or_else(|| {
                    PeerError::Closed("the connection's writer stopped".to_string())
                });
                if let Some(stream) = stream {
                    stream.fail(e.clone());
                }
                failed = Some(e.clone());
                pending.push(Err(e));
                continue;
            }
            pending.push(Ok(call));
        }
        if let Some(guard) = unfinished {
            guard.disarm();
        }
        if let (Some(stream), Some(e)) = (stream, stop_after) {
            stream.fail(e);
        }
        pending
    }

    /// The slot of `addr`, created empty on first use.
    fn slot(&self, addr: &str) -> Arc<tokio::sync::Mutex<Option<Conn>>> {
        let mut slots = lock(&self.inner.slots);
        match slots.get(addr) {
            Some(slot) => slot.clone(),
            None => {
                let slot = Arc::new(tokio::sync::Mutex::new(None));
                slots.insert(addr.to_string(), slot.clone());
                slot
            }
        }
    }

    /// Whether the pool holds an open connection to `addr`.
    #[cfg(test)]
    pub(crate) async fn is_connected(&self, addr: &str) -> bool {
        let slot = self.slot(addr);
        let slot = slot.lock().await;
        slot.as_ref().is_some_and(|c| c.shared.is_open())
    }

    /// How many calls on the connection to `addr` await their response.
    #[cfg(test)]
    pub(crate) async fn pending_calls(&self, addr: &str) -> usize {
        let slot = self.slot(addr);
        let slot = slot.lock().await;
        slot.as_ref()
            .map_or(0, |c| lock(&c.shared.state).pending.len())
    }
}

/// A sequence of calls to one node that must reach it in order or not at all: a follower's
/// forwards of client writes ([`crate::pipeline::write_order`]). The pool's ordering guarantee
/// holds per connection, and a call after one that failed because its connection broke may
/// travel on a new connection, overtaking what the broken one lost. A stream's calls all go on
/// the connection that carried its first; once a call of the stream could not be sent (not
/// encodable, no connection, timed out or dropped before it was queued) or that connection broke
/// or was replaced, every later call of the stream fails unsent. A caller that still has calls
/// to make starts a new stream ([`PeerPool::is_usable`] says when).
#[derive(Default)]
pub struct CallStream {
    state: Mutex<StreamState>,
}

/// Stops `stream` when dropped, saying `why`, unless disarmed: a call that got past the point
/// it guards disarms it.
struct StopOnDrop<'a> {
    stream: &'a CallStream,
    why: &'static str,
}

impl StopOnDrop<'_> {
    fn disarm(self) {
        // Nothing to release: it only borrows the stream.
        std::mem::forget(self);
    }
}

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.stream.fail(PeerError::Closed(self.why.to_string()));
    }
}

/// See [`CallStream`].
#[derive(Default)]
struct StreamState {
    /// The connection that carried the stream's calls (`None` before the first was enqueued).
    /// Weak: the pool owns connections; a stream only recognises its own.
    conn: Option<Weak<ConnShared>>,
    /// Why the stream stopped, once it has: every later call fails with it.
    failed: Option<PeerError>,
}

impl CallStream {
    pub fn new() -> Arc<CallStream> {
        Arc::new(CallStream::default())
    }

    /// Whether later calls may still go, for a pool whose node now has cluster id `cluster`:
    /// the stream has not failed, and its connection, if it has one yet, is still open and
    /// not about to be replaced ([`PeerPool::is_usable`]).
    fn is_usable(&self, cluster: Option<crate::data_dir::ClusterId>) -> bool {
        let s = lock(&self.state);
        s.failed.is_none()
            && s.conn.as_ref().is_none_or(|conn| {
                conn.upgrade()
                    .is_some_and(|c| c.is_open() && c.cluster_at_hello == cluster)
            })
    }

    /// Stops the stream (the first reason stays).
    fn fail(&self, e: PeerError) {
        lock(&self.state).failed.get_or_insert(e);
    }

    /// Whether the stream's next call may go on `reusable` (the address's open connection, if
    /// any; `None`: a new one would be made): yes if the stream has not failed and it is the
    /// stream's connection, or the stream has none yet. A refusal stops the stream.
    fn may_use(&self, reusable: Option<&Arc<ConnShared>>) -> Result<(), PeerError> {
        let mut s = lock(&self.state);
        if let Some(e) = &s.failed {
            return Err(e.clone());
        }
        let Some(own) = &s.conn else {
            return Ok(());
        };
        if reusable.is_some_and(|conn| std::ptr::eq(own.as_ptr(), Arc::as_ptr(conn))) {
            return Ok(());
        }
        let e = PeerError::Closed(
            "the connection that carried the earlier calls of this stream broke or was replaced"
                .to_string(),
        );
        s.failed = Some(e.clone());
        Err(e)
    }

    /// The stream's calls go on `conn` (the first call's; later ones pass [`Self::may_use`]).
    fn bind(&self, conn: &Arc<ConnShared>) {
        let mut s = lock(&self.state);
        debug_assert!(
            s.conn
                .as_ref()
                .is_none_or(|own| std::ptr::eq(own.as_ptr(), Arc::as_ptr(conn))),
            "a stream changed connections"
        );
        s.conn = Some(Arc::downgrade(conn));
    }
}

/// Locks a std mutex; a panic elsewhere while holding it leaves plain data that is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One connection to a peer, as the pool holds it.
struct Conn {
    /// What the connection's tasks and its callers share.
    shared: Arc<ConnShared>,
    /// Frames for the writer task, in the order they are to be written.
    tx: mpsc::Sender<Bytes>,
    /// The task that reads responses; aborted with the connection.
    _reader: AbortOnDrop,
    /// The task that writes requests; aborted with the connection.
    _writer: AbortOnDrop,
}

/// The state of a connection shared by its pool slot, its tasks and its pending calls.
struct ConnShared {
    /// The cluster id this node sent in the connection's hello: the pool replaces a connection
    /// whose hello predates this node's cluster id.
    cluster_at_hello: Option<crate::data_dir::ClusterId>,
    /// The node at the other end, for logs.
    target: NodeId,
    /// The address dialled, for logs.
    addr: String,
    /// The calls awaiting a response, and whether the connection has failed.
    state: Mutex<ConnState>,
    /// Cancelled when the connection fails, so both of its tasks stop and the socket closes.
    closed: CancellationToken,
}

/// See [`ConnShared::state`].
struct ConnState {
    /// Where to deliver each awaited response, by request id.
    pending: HashMap<u64, oneshot::Sender<Result<PeerResponse, PeerError>>>,
    /// Set once, when the connection fails: later registrations fail with it at once instead of
    /// waiting for a response that cannot come.
    error: Option<PeerError>,
}

/// A call awaiting its response; dropping it (timeout, cancellation) forgets the call, so a late
/// response is ignored and the pending map does not grow.
struct PendingCall {
    /// The connection the call was sent on.
    shared: Arc<ConnShared>,
    /// The call's request id.
    id: u64,
    /// Receives the response or the connection's failure.
    rx: oneshot::Receiver<Result<PeerResponse, PeerError>>,
}

impl PendingCall {
    async fn wait(mut self) -> Result<PeerResponse, PeerError> {
        match (&mut self.rx).await {
            Ok(result) => result,
            Err(_) => Err(PeerError::Closed("the connection was dropped".to_string())),
        }
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        lock(&self.shared.state).pending.remove(&self.id);
    }
}

impl ConnShared {
    fn is_open(&self) -> bool {
        !self.closed.is_cancelled()
    }

    fn error(&self) -> Option<PeerError> {
        lock(&self.state).error.clone()
    }

    /// Registers a call about to be written.
    fn register(self: &Arc<Self>, id: u64) -> Result<PendingCall, PeerError> {
        let (tx, rx) = oneshot::channel();
        let mut state = lock(&self.state);
        if let Some(e) = &state.error {
            return Err(e.clone());
        }
        state.pending.insert(id, tx);
        Ok(PendingCall {
            shared: self.clone(),
            id,
            rx,
        })
    }

    /// Delivers a response to its call, if that still waits.
    fn complete(&self, id: u64, response: PeerResponse) {
        let tx = lock(&self.state).pending.remove(&id);
        match tx {
            // The caller may have just given up; then the response is dropped.
            Some(tx) => drop(tx.send(Ok(response))),
            None => debug!(
                node = self.target,
                id, "late or unknown peer response ignored"
            ),
        }
    }

    /// Marks the connection failed: every pending call fails with `err`, and the tasks stop.
    fn fail(&self, err: PeerError) {
        let drained = {
            let mut state = lock(&self.state);
            if state.error.is_some() {
                return;
            }
            state.error = Some(err.clone());
            std::mem::take(&mut state.pending)
        };
        debug!(node = self.target, addr = %self.addr, error = %err, calls = drained.len(), "peer connection failed");
        for tx in drained.into_values() {
            let _ = tx.send(Err(err.clone()));
        }
        self.closed.cancel();
    }
}

impl Conn {
    /// Opens a connection (TCP, TLS and the hello, all before `deadline`) and starts its reader
    /// and writer tasks.
    async fn connect(
        local: &LocalPeer,
        target: NodeId,
        addr: &str,
        max_frame_len: usize,
        deadline: Option<Instant>,
    ) -> Result<Conn, PeerError> {
        let cluster_at_hello = local.cluster.get();
        let connecting = async {
            let mut speak = transport::PROTOCOL_VERSION;
            loop {
                let stream = TcpStream::connect(addr).await?;
                transport::tune_socket(&stream, &format_args!("node {target} at {addr}"));
                match transport::dial(local, target, addr, stream, max_frame_len, speak).await {
                    // An older release (a rolling upgrade): once more, in its version.
                    Err(transport::Refusal::Older { speaks }) if speaks < speak => {
                        debug!(node = target, addr, speaks, "peer speaks an older protocol");
                        speak = speaks;
                    }
                    dialled => return Ok::<_, std::io::Error>(dialled),
                }
            }
        };
        let connected = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, connecting)
                .await
                .map_err(|_| {
                    PeerError::Unreachable(format!(
                        "connecting to node {target} at {addr} timed out"
                    ))
                })?,
            None => connecting.await,
        };
        let established = connected
            .map_err(|e| {
                PeerError::Unreachable(format!("cannot connect to node {target} at {addr}: {e}"))
            })?
            .map_err(|refusal| {
                warn!(node = target, addr, %refusal, "peer connection refused");
                PeerError::Refused(refusal.to_string())
            })?;
        debug!(node = target, addr, "peer connection established");
        let shared = Arc::new(ConnShared {
            cluster_at_hello,
            target,
            addr: addr.to_string(),
            state: Mutex::new(ConnState {
                pending: HashMap::new(),
                error: None,
            }),
            closed: CancellationToken::new(),
        });
        let (tx, rx) = mpsc::channel(QUEUE_LEN);
        let reader = tokio::spawn(read_responses(established.frames, shared.clone()));
        let writer = tokio::spawn(write_requests(established.writer, rx, shared.clone()));
        Ok(Conn {
            shared,
            tx,
            _reader: AbortOnDrop(reader),
            _writer: AbortOnDrop(writer),
        })
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // The tasks are aborted with us; calls still waiting must not wait for their timeout.
        self.shared
            .fail(PeerError::Closed("the connection was dropped".to_string()));
    }
}

/// Reads responses and delivers them to their calls until the connection fails.
async fn read_responses(
    mut frames: FramedRead<BoxRead, LengthDelimitedCodec>,
    shared: Arc<ConnShared>,
) {
    let err = loop {
        let next = tokio::select! {
            next = frames.next() => next,
            () = shared.closed.cancelled() => return,
        };
        match next {
            None => break PeerError::Closed("connection closed by the peer".to_string()),
            Some(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                warn!(node = shared.target, addr = %shared.addr, error = %e, "closing peer connection: bad response frame");
                break PeerError::Codec(format!("bad response frame: {e}"));
            }
            Some(Err(e)) => break PeerError::Closed(format!("read failed: {e}")),
            Some(Ok(payload)) => match decode_frame::<PeerResponse>(&payload) {
                Ok(frame) => shared.complete(frame.id, frame.body),
                Err(e) => {
                    warn!(node = shared.target, addr = %shared.addr, error = %e, "closing peer connection: malformed response frame");
                    break PeerError::Codec(format!("malformed response frame: {e}"));
                }
            },
        }
    };
    shared.fail(err);
}

/// Writes queued requests, draining whatever is queued into one write, until the connection
/// fails or is dropped.
async fn write_requests(
    mut w: BatchWriter<BoxWrite>,
    mut rx: mpsc::Receiver<Bytes>,
    shared: Arc<ConnShared>,
) {
    loop {
        let first = tokio::select! {
            first = rx.recv() => first,
            () = shared.closed.cancelled() => return,
        };
        let Some(first) = first else { return };
        let mut next = Some(first);
        let mut pushed = Ok(());
        while let Some(payload) = next.take() {
            pushed = w.push(&payload);
            if pushed.is_err() {
                break;
            }
            if !w.is_full() {
                next = rx.try_recv().ok();
            }
        }
        let written = match pushed {
            Ok(()) => tokio::select! {
                written = w.flush() => written,
                () = shared.closed.cancelled() => return,
            },
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            shared.fail(PeerError::Closed(format!("write failed: {e}")));
            return;
        }
    }
}
