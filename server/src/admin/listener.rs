//! The admin port's listener ([`AdminListener`]): accepts connections (at most
//! [`MAX_ADMIN_CONNECTIONS`] open at once, [`MAX_ADMIN_CONNECTIONS_PER_IP`] from one address),
//! runs each TLS handshake in a task of its own so that a slow or hostile client never stalls
//! the accept loop, and hands [`super::serve`] the established stream together with
//! [`AdminPeer`] — its address and the identity its certificate names — which handlers and
//! [`super::access`] read as `ConnectInfo<AdminPeer>`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::listener::{IpGuard, LogWindow, PerIp, REFUSAL_LOG_INTERVAL};
use crate::peer::AbortOnDrop;
use crate::tls::identity::CertIdentity;
use crate::tls::stream::ServerStream;
use crate::tls::ServerTls;

/// Open admin connections, handshaking ones included; a connection beyond it is closed at once.
pub const MAX_ADMIN_CONNECTIONS: usize = 256;

/// Open admin connections from one address: one client (a script looping, or sending nothing)
/// cannot take every slot from the probes and the operators.
pub const MAX_ADMIN_CONNECTIONS_PER_IP: usize = 32;

/// Established connections waiting for [`super::serve`] to take them.
const READY_QUEUE: usize = 64;

/// How long a write to an admin client may stay blocked because the client reads nothing
/// before the connection is closed: a download no longer read, or answers never read, do not
/// keep a connection slot (or the backup download's turn) for ever.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// After a failed accept (e.g. out of file descriptors) the loop waits this long.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Who is on the other end of an admin connection.
#[derive(Debug, Clone)]
pub struct AdminPeer {
    /// The client's address, for logs.
    pub addr: SocketAddr,
    /// What its verified client certificate names; `None` without one (or under `--insecure`).
    pub identity: Option<CertIdentity>,
}

/// An admin connection: the stream, who is on it, and its slot among the open connections.
pub struct AdminStream {
    /// Plaintext under `--insecure`, TLS otherwise.
    inner: ServerStream,
    /// Who is on the other end, for the handlers ([`AdminStream::peer`]).
    peer: AdminPeer,
    /// Released when the connection closes.
    _slot: OwnedSemaphorePermit,
    /// Its address's count, released when the connection closes.
    _ip: IpGuard,
    /// Armed while a write waits for the client to read, dropped at any progress
    /// ([`WRITE_STALL_TIMEOUT`]).
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl AdminStream {
    /// Who is on the other end.
    pub fn peer(&self) -> &AdminPeer {
        &self.peer
    }

    /// Passes on a write's outcome, unless it has been blocked for [`WRITE_STALL_TIMEOUT`]:
    /// then an error, which ends the connection.
    fn unless_stalled<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_STALL_TIMEOUT)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the admin client read nothing for {WRITE_STALL_TIMEOUT:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// See the module documentation.
pub struct AdminListener {
    /// Connections past their handshake.
    ready: mpsc::Receiver<AdminStream>,
    /// The accept loop; stops with the listener.
    _accepting: AbortOnDrop,
}

impl AdminListener {
    /// Starts accepting on `listener`; `tls`: HTTPS (a client certificate is optional at this
    /// level; [`super::access`] decides what needs one).
    pub fn new(listener: TcpListener, tls: Option<Arc<ServerTls>>) -> std::io::Result<Self> {
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let accepting = AbortOnDrop(tokio::spawn(accept_loop(listener, tls, tx)));
        Ok(AdminListener {
            ready,
            _accepting: accepting,
        })
    }
}

/// Why an admin connection was closed before it was served.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// [`MAX_ADMIN_CONNECTIONS`] were open.
    MaxConnections,
    /// [`MAX_ADMIN_CONNECTIONS_PER_IP`] were open from the client's address.
    MaxConnectionsPerIp,
    /// The TLS handshake failed or timed out.
    TlsHandshake,
}

impl Refusal {
    /// How many reasons there are: the length of [`Refusals`]' windows.
    const COUNT: usize = 3;

    /// The `reason` label of `synod_admin_connections_refused_total`.
    fn label(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::MaxConnectionsPerIp => "max_connections_per_ip",
            Refusal::TlsHandshake => "tls_handshake",
        }
    }
}

/// Refused admin connections: each counted in `/metrics`, logged at most once per
/// [`REFUSAL_LOG_INTERVAL`] and reason (a client looping on the port cannot grow the log at
/// its own pace), as the client ports do.
#[derive(Default)]
struct Refusals {
    /// Per reason, indexed by `Refusal as usize` (below [`Refusal::COUNT`]).
    windows: Mutex<[LogWindow; Refusal::COUNT]>,
}

impl Refusals {
    /// Counts a connection from `addr` refused for `why` and logs it, if its reason's window
    /// lets it ([`LogWindow::admit`]); `error`: what failed (a TLS handshake's error).
    fn refused(&self, why: Refusal, addr: SocketAddr, error: Option<&dyn std::fmt::Display>) {
        metrics::counter!("synod_admin_connections_refused_total", "reason" => why.label())
            .increment(1);
        let admitted = {
            let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
            match windows.get_mut(why as usize) {
                Some(window) => window.admit(Instant::now()),
                None => {
                    // A reason added without raising `Refusal::COUNT`: log it rather than fail.
                    debug_assert!(false, "{why:?} has no window: raise Refusal::COUNT");
                    Some(0)
                }
            }
        };
        let Some(unlogged) = admitted else {
            return;
        };
        let every = REFUSAL_LOG_INTERVAL.as_secs();
        let error = error.map_or_else(|| "-".to_string(), |e| e.to_string());
        tracing::warn!(
            %addr,
            reason = why.label(),
            %error,
            unlogged,
            "admin connection refused (logged at most every {every} s per reason; `unlogged`: \
             refusals since the last line)"
        );
    }
}

/// Accepts connections and hands each to a handshake task.
async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    tx: mpsc::Sender<AdminStream>,
) {
    let open = Arc::new(Semaphore::new(MAX_ADMIN_CONNECTIONS));
    let per_ip = Arc::new(PerIp::default());
    let refusals = Arc::new(Refusals::default());
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let Ok(slot) = open.clone().try_acquire_owned() else {
            refusals.refused(Refusal::MaxConnections, addr, None);
            continue;
        };
        let Some(ip) = per_ip.admit(addr.ip(), MAX_ADMIN_CONNECTIONS_PER_IP) else {
            refusals.refused(Refusal::MaxConnectionsPerIp, addr, None);
            continue;
        };
        let tx = tx.clone();
        let tls = tls.clone();
        let refusals = refusals.clone();
        tokio::spawn(async move {
            let (inner, identity) = match tls {
                None => (ServerStream::Plain(stream), None),
                Some(tls) => match crate::tls::stream::accept(&tls.acceptor(), stream).await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        refusals.refused(Refusal::TlsHandshake, addr, Some(&e));
                        return;
                    }
                },
            };
            let conn = AdminStream {
                inner,
                peer: AdminPeer { addr, identity },
                _slot: slot,
                _ip: ip,
                stalled: None,
            };
            // Fails only when the listener is gone (shutdown): the connection just closes.
            let _ = tx.send(conn).await;
        });
    }
}

impl AdminListener {
    /// The next connection past its handshake.
    pub async fn accept(&mut self) -> AdminStream {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop never ends on its own; if it is gone, nothing more will come.
            None => std::future::pending().await,
        }
    }
}

impl AsyncRead for AdminStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for AdminStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.unless_stalled(cx, poll)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.unless_stalled(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.unless_stalled(cx, poll)
    }
}
