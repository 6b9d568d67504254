//! The peer RPC server: accepts peer connections (a bounded number), authenticates each
//! ([`super::transport::accept`]), hands its requests to the [`PeerService`] in arrival order once
//! the service has authorized them, and writes the responses back as they complete.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use synod_raft_store::types::NodeId;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::frame::{clamp_max_frame_len, decode_frame, encode_frame, BatchWriter};
use super::transport::{self, BoxWrite, LocalPeer, Refusal};
use super::{AbortOnDrop, PeerRequest, PeerResponse, DEFAULT_MAX_FRAME_LEN};

/// The default bound on requests of one connection that are being handled or whose responses
/// are not yet written.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;

/// The default bound on open peer connections (a member keeps one to each other member; admin
/// probes and reconnects add a few).
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// How long a spent connection ([`PeerService::spent`]) still waits for the handlers of the
/// requests it had read, to write their answers, before it closes: the peer's pool sends all
/// its traffic to this node on the connection (Raft's messages, read points, touches), and an
/// answer it gets is one it need not retry or give up as unknown.
const SPENT_DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// After a failed accept (e.g. out of file descriptors) the server waits this long before the
/// next one instead of spinning.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// What answers peer requests (the node; a fake in tests).
pub trait PeerService: Send + Sync + 'static {
    /// What the service keeps about one connection, from its handshake to its close (the node:
    /// the order of the writes forwarded on it).
    type Conn: Send + Sync + 'static;

    /// Called once a connection from `from`, authenticated as node `node`, has passed its
    /// handshake, before any of its requests.
    fn open(&self, from: SocketAddr, node: NodeId) -> Self::Conn;

    /// Called in arrival order for each request of a connection; whatever it does before returning
    /// (e.g. enqueueing a forwarded write) happens in that order. The returned future produces the
    /// response. It is dropped unfinished if the connection closes first.
    fn handle(&self, conn: &Self::Conn, req: PeerRequest) -> BoxFuture<'static, PeerResponse>;

    /// Whether the connection is spent: checked each time responses have been written. If so,
    /// the server reads no more requests, writes the answers of those it had taken (for at
    /// most [`SPENT_DRAIN_LIMIT`]; handlers not done by then are dropped) and closes the
    /// connection, so that the peer's later requests go on a new one. The node's is spent once
    /// a write forwarded on it failed ([`crate::pipeline::write_order`]).
    fn spent(&self, conn: &Self::Conn) -> bool {
        let _ = conn;
        false
    }

    /// Whether node `from` (authenticated by the connection's handshake) may send `req`; called
    /// before [`PeerService::handle`]. A refusal closes the connection, and `req` is not handled.
    fn authorize(&self, from: NodeId, req: &PeerRequest) -> Result<(), Refusal> {
        let _ = (from, req);
        Ok(())
    }
}

/// The server's per-connection limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLimits {
    /// Largest frame payload accepted (the length prefix excluded); a longer announced frame
    /// closes the connection before any of it is buffered.
    pub max_frame_len: usize,
    /// Requests of one connection being handled or waiting for their response to be written;
    /// when reached, the connection is not read until one completes, so a peer cannot make us
    /// buffer without end.
    pub max_in_flight: usize,
    /// Open connections (handshaking ones included); a connection beyond it is closed at once.
    pub max_connections: usize,
}

impl Default for PeerLimits {
    fn default() -> Self {
        PeerLimits {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Serves peer RPC on `listener` as `local`, with the default [`PeerLimits`], until `shutdown`
/// completes.
pub async fn serve<S: PeerService>(
    listener: TcpListener,
    local: Arc<LocalPeer>,
    service: Arc<S>,
    shutdown: impl Future<Output = ()>,
) {
    serve_with_limits(listener, local, service, PeerLimits::default(), shutdown).await
}

/// Serves peer RPC on `listener` until `shutdown` completes. On return the listener and every
/// connection are closed; handlers still in progress are dropped (their tasks end as soon as they
/// are next polled, and hold no socket).
pub async fn serve_with_limits<S: PeerService>(
    listener: TcpListener,
    local: Arc<LocalPeer>,
    service: Arc<S>,
    limits: PeerLimits,
    shutdown: impl Future<Output = ()>,
) {
    let limits = PeerLimits {
        max_frame_len: clamp_max_frame_len(limits.max_frame_len),
        max_in_flight: limits.max_in_flight.clamp(1, Semaphore::MAX_PERMITS),
        max_connections: limits.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    };
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    let stop = CancellationToken::new();
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            done = conns.join_next(), if !conns.is_empty() => {
                if let Some(Err(e)) = done {
                    if e.is_panic() {
                        error!(error = %e, "peer connection task panicked");
                    }
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, from)) => match open.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let conn = connection(stream, from, local.clone(), service.clone(), limits, stop.clone());
                        conns.spawn(async move {
                            conn.await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        warn!(peer = %from, max = limits.max_connections, "peer connection refused: too many open");
                        drop(stream);
                    }
                },
                Err(e) => {
                    warn!(error = %e, "peer accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
        }
    }
    drop(listener);
    // Each connection closes its socket and stops its writer before its task ends.
    stop.cancel();
    while let Some(done) = conns.join_next().await {
        if let Err(e) = done {
            if e.is_panic() {
                error!(error = %e, "peer connection task panicked");
            }
        }
    }
    debug!("peer server stopped");
}

/// A request being handled: its id, the handler's future, and its in-flight permit, released
/// once the response is written.
struct InFlight {
    /// The request's id, which its response carries.
    id: u64,
    /// The service's handler for it, already polled once by the reader.
    response: BoxFuture<'static, PeerResponse>,
    /// The request's place under [`PeerLimits::max_in_flight`].
    permit: OwnedSemaphorePermit,
}

/// A response on its way to the socket.
struct Outgoing {
    /// The encoded response frame, or why it could not be encoded (the writer then closes the
    /// connection, since the peer's call would otherwise never be answered).
    payload: Result<Bytes, String>,
    /// The request's in-flight permit, released once the response is written.
    _permit: OwnedSemaphorePermit,
}

/// One connection: this task reads requests and starts their handlers; the writer task drives
/// the handlers to completion and writes their responses (no task per request, and a response
/// goes from its handler to the socket without another hop).
async fn connection<S: PeerService>(
    stream: TcpStream,
    from: SocketAddr,
    local: Arc<LocalPeer>,
    service: Arc<S>,
    limits: PeerLimits,
    stop: CancellationToken,
) {
    transport::tune_socket(&stream, &from);
    let established = tokio::select! {
        e = transport::accept(&local, stream, limits.max_frame_len) => e,
        () = stop.cancelled() => return,
    };
    let transport::Established {
        remote,
        mut frames,
        writer,
    } = match established {
        Ok(e) => e,
        Err(refusal) => {
            warn!(peer = %from, %refusal, "peer connection refused");
            return;
        }
    };
    debug!(peer = %from, node = remote, "peer connection accepted");
    let conn = Arc::new(service.open(from, remote));
    let spent = {
        let (service, conn) = (service.clone(), conn.clone());
        move || service.spent(&conn)
    };
    // Unbounded, but never holding more than `max_in_flight` requests: each carries a permit.
    let (tx, rx) = mpsc::unbounded_channel::<InFlight>();
    let writer = AbortOnDrop(tokio::spawn(write_responses(
        writer,
        rx,
        from,
        limits.max_frame_len,
        spent,
    )));
    let permits = Arc::new(Semaphore::new(limits.max_in_flight));
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // never closed; nothing sensible to do but stop
            },
            () = tx.closed() => break,
            () = stop.cancelled() => break,
        };
        let next = tokio::select! {
            next = frames.next() => next,
            () = tx.closed() => break,
            () = stop.cancelled() => break,
        };
        let payload = match next {
            None => {
                debug!(peer = %from, "peer connection closed by the peer");
                break;
            }
            Some(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                warn!(peer = %from, error = %e, "closing peer connection: bad frame");
                break;
            }
            Some(Err(e)) => {
                debug!(peer = %from, error = %e, "peer connection read failed");
                break;
            }
            Some(Ok(payload)) => payload,
        };
        let frame = match decode_frame::<PeerRequest>(&payload) {
            Ok(frame) => frame,
            Err(e) => {
                warn!(peer = %from, error = %e, "closing peer connection: malformed request frame");
                break;
            }
        };
        drop(payload);
        if let Err(refusal) = service.authorize(remote, &frame.body) {
            warn!(peer = %from, node = remote, %refusal, "closing peer connection: request refused");
            break;
        }
        let mut response = service.handle(&conn, frame.body);
        // The first poll starts the work (e.g. hands an AppendEntries to the Raft core) now,
        // from this task, instead of after the hop to the writer.
        let response = match futures_util::poll!(&mut response) {
            std::task::Poll::Ready(r) => futures_util::future::ready(r).boxed(),
            std::task::Poll::Pending => response,
        };
        let started = InFlight {
            id: frame.id,
            response,
            permit,
        };
        // Fails only when the writer closed the channel (see below); this request, handed to
        // the service already, goes unanswered.
        if tx.send(started).is_err() {
            break;
        }
    }
    drop(frames);
    // A closed channel means the writer ended by itself: it failed, or the connection is spent
    // and it is writing the answers of the requests already handed to it.
    if tx.is_closed() {
        // Dropped unfinished (and so aborted) if the server stops meanwhile.
        tokio::select! {
            () = writer.join_within(SPENT_DRAIN_LIMIT + Duration::from_secs(1)) => {}
            () = stop.cancelled() => {}
        }
    } else {
        writer.stop().await;
    }
    debug!(peer = %from, "peer connection closed");
}

/// Drives the connection's handlers and writes each response as it completes, gathering the
/// responses that are ready together into one write. Ends when the reader stops (its handlers
/// still running are dropped, as the peer is gone or misbehaved), a write fails, or `spent`
/// says after a write that the connection is spent ([`PeerService::spent`]): it then takes no
/// more requests (the reader stops), and writes the answers of those it had within
/// [`SPENT_DRAIN_LIMIT`] ([`drain`]).
async fn write_responses(
    mut w: BatchWriter<BoxWrite>,
    mut rx: mpsc::UnboundedReceiver<InFlight>,
    from: SocketAddr,
    max_frame_len: usize,
    spent: impl Fn() -> bool + Send + 'static,
) {
    let mut handling: FuturesUnordered<BoxFuture<'static, Outgoing>> = FuturesUnordered::new();
    let mut written = Vec::new();
    loop {
        let first = tokio::select! {
            started = rx.recv() => match started {
                Some(f) => {
                    handling.push(respond(f, max_frame_len));
                    continue;
                }
                None => return,
            },
            Some(done) = handling.next(), if !handling.is_empty() => done,
        };
        let mut next = Some(first);
        while let Some(out) = next.take() {
            if let Err(reason) = push(&mut w, &out) {
                error!(peer = %from, reason = %reason, "closing peer connection: cannot send a response");
                return;
            }
            written.push(out);
            if !w.is_full() {
                // Requests that arrived meanwhile start; responses already done join this write.
                while let Ok(f) = rx.try_recv() {
                    handling.push(respond(f, max_frame_len));
                }
                next = handling.next().now_or_never().flatten();
            }
        }
        if let Err(e) = w.flush().await {
            debug!(peer = %from, error = %e, "peer connection write failed");
            return;
        }
        // Releases the permits of the responses just written.
        written.clear();
        if spent() {
            metrics::counter!("synod_peer_connections_spent_total").increment(1);
            info!(
                peer = %from,
                "closing peer connection: spent (on a node: a write forwarded on it failed, so \
                 none after it may take effect; the peer's next ones go on a new connection)"
            );
            rx.close();
            drain(w, rx, handling, from, max_frame_len).await;
            return;
        }
    }
}

/// Writes the answers of the requests a spent connection had taken (`rx` is closed: what it
/// holds is all), each as it completes, for at most [`SPENT_DRAIN_LIMIT`]; the handlers not
/// done by then are dropped.
async fn drain(
    mut w: BatchWriter<BoxWrite>,
    mut rx: mpsc::UnboundedReceiver<InFlight>,
    mut handling: FuturesUnordered<BoxFuture<'static, Outgoing>>,
    from: SocketAddr,
    max_frame_len: usize,
) {
    while let Ok(f) = rx.try_recv() {
        handling.push(respond(f, max_frame_len));
    }
    let drained = async {
        while let Some(out) = handling.next().await {
            if let Err(reason) = push(&mut w, &out) {
                debug!(peer = %from, reason = %reason, "spent peer connection: cannot send a response");
                return;
            }
            if let Err(e) = w.flush().await {
                debug!(peer = %from, error = %e, "spent peer connection: write failed");
                return;
            }
        }
    };
    if tokio::time::timeout(SPENT_DRAIN_LIMIT, drained)
        .await
        .is_err()
    {
        debug!(peer = %from, "spent peer connection: closing with requests unanswered");
    }
}

/// Adds a response to the next write, or says why it cannot go (it could not be encoded, or
/// the writer refused it); the connection then closes, since the peer's call would otherwise
/// never be answered.
fn push(w: &mut BatchWriter<BoxWrite>, out: &Outgoing) -> Result<(), String> {
    match &out.payload {
        Ok(payload) => w.push(payload).map_err(|e| e.to_string()),
        Err(reason) => Err(reason.clone()),
    }
}

/// Waits for a handler and encodes its response.
fn respond(f: InFlight, max_frame_len: usize) -> BoxFuture<'static, Outgoing> {
    async move {
        let InFlight {
            id,
            response,
            permit,
        } = f;
        let response = response.await;
        Outgoing {
            payload: encode_frame(id, &response, max_frame_len)
                .map_err(|e| format!("response to request {id}: {e}")),
            _permit: permit,
        }
    }
    .boxed()
}
