//! The client listeners ([`Listener`]): accept client connections on the plaintext and the
//! secure (TLS) client port and bound them — in total (`--max-connections`, both ports
//! together) and per client address (`--max-connections-per-ip`) — before anything is read
//! from them; a secure connection's TLS handshake (bounded in time) verifies its certificate;
//! each admitted one goes to [`crate::pipeline::connection::serve`]. A refused connection, or
//! a failed accept, is counted in `/metrics` and logged at most once per interval and reason
//! ([`RefusalLog`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::node::Node;
use crate::tls::stream::ServerStream;
use crate::tls::ServerTls;

/// Counts connections per client address; a guard releases its count on drop. One table serves
/// both client ports; the admin port keeps one of its own (`crate::admin::listener`).
#[derive(Default)]
pub struct PerIp {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's count in a [`PerIp`] table, released on drop.
pub(crate) struct IpGuard {
    /// The table the count is in.
    table: Arc<PerIp>,
    /// The address counted.
    ip: IpAddr,
}

impl Drop for IpGuard {
    fn drop(&mut self) {
        let mut c = self.table.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = c.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.remove(&self.ip);
            }
        }
    }
}

impl PerIp {
    /// Counts a connection from `ip`, unless `limit` (0: none) are open from it already.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<IpGuard> {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = c.entry(ip).or_insert(0);
        if limit > 0 && *n >= limit {
            return None;
        }
        *n += 1;
        Some(IpGuard {
            table: self.clone(),
            ip,
        })
    }
}

/// Why a client connection was turned away before it was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// `--max-connections` connections were open (both client ports together).
    MaxConnections,
    /// `--max-connections-per-ip` connections from the client's address were open.
    MaxConnectionsPerIp,
    /// The secure port's TLS handshake failed (no certificate, one that does not verify, a
    /// timeout, not TLS at all).
    TlsHandshake,
    /// The port could not take a connection from its queue: `accept` failed (out of file
    /// descriptors, most often). The client is not known; the connection waits in the queue.
    AcceptFailed,
}

impl Refusal {
    /// How many reasons there are: the length of [`RefusalLog`]'s windows, which `Refusal as
    /// usize` indexes.
    const COUNT: usize = 4;

    /// The `reason` label of `synod_client_connections_refused_total`.
    fn label(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::MaxConnectionsPerIp => "max_connections_per_ip",
            Refusal::TlsHandshake => "tls_handshake",
            Refusal::AcceptFailed => "accept_failed",
        }
    }
}

/// The shortest time between two log lines about refused connections of one reason.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// One kind of refusal's log line, at most once per [`REFUSAL_LOG_INTERVAL`]: when the last
/// line was logged (`None`: never), and the refusals since then that got none. Used by the
/// client ports ([`RefusalLog`]) and the admin port (`crate::admin::listener`).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct LogWindow {
    /// When the last line was logged; `None`: never.
    last: Option<Instant>,
    /// Refusals since that line that got none of their own.
    unlogged: u64,
}

impl LogWindow {
    /// Whether a refusal at `now` gets a log line: `Some(unlogged)`, the refusals since the
    /// last line, if that line is at least [`REFUSAL_LOG_INTERVAL`] old (or there was none);
    /// otherwise `None`, and this one is counted as unlogged.
    pub(crate) fn admit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < REFUSAL_LOG_INTERVAL => {
                self.unlogged += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.unlogged))
            }
        }
    }
}

/// Refused client connections: every one is counted in `/metrics`
/// (`synod_client_connections_refused_total{reason}`), but the log says so at most once per
/// [`REFUSAL_LOG_INTERVAL`] and reason, with how many went unlogged since its last line, so that a
/// client flooding a port cannot grow the node's log at its own pace. One serves both client
/// ports.
#[derive(Default)]
pub struct RefusalLog {
    /// Per reason (indexed by `Refusal as usize`, below [`Refusal::COUNT`]).
    windows: Mutex<[LogWindow; Refusal::COUNT]>,
}

impl RefusalLog {
    /// Whether a refusal for `why` at `now` gets a log line ([`LogWindow::admit`], per reason).
    fn admit(&self, why: Refusal, now: Instant) -> Option<u64> {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let Some(window) = windows.get_mut(why as usize) else {
            // A reason added without raising `Refusal::COUNT`: log it rather than fail.
            debug_assert!(false, "{why:?} has no window: raise Refusal::COUNT");
            return Some(0);
        };
        window.admit(now)
    }

    /// Counts a refused connection from `addr` (`None`: not known, a failed accept) and logs it
    /// if [`RefusalLog::admit`] lets it; `error`: what failed (a TLS handshake's or `accept`'s
    /// error).
    fn refused(
        &self,
        why: Refusal,
        addr: Option<SocketAddr>,
        error: Option<&dyn std::fmt::Display>,
    ) {
        metrics::counter!("synod_client_connections_refused_total", "reason" => why.label())
            .increment(1);
        let Some(unlogged) = self.admit(why, Instant::now()) else {
            return;
        };
        let every = REFUSAL_LOG_INTERVAL.as_secs();
        let addr = addr.map_or_else(|| "-".to_string(), |a| a.to_string());
        let error = error.map_or_else(|| "-".to_string(), |e| e.to_string());
        match why {
            Refusal::MaxConnections => tracing::warn!(
                %addr,
                unlogged,
                "refusing connection: --max-connections reached (logged at most every {every} s; \
                 `unlogged`: refusals since the last line)"
            ),
            Refusal::MaxConnectionsPerIp => tracing::warn!(
                %addr,
                unlogged,
                "refusing connection: --max-connections-per-ip reached (logged at most every \
                 {every} s; `unlogged`: refusals since the last line)"
            ),
            Refusal::TlsHandshake => tracing::info!(
                %addr,
                %error,
                unlogged,
                "refusing client: TLS handshake failed (logged at most every {every} s; \
                 `unlogged`: refusals since the last line)"
            ),
            Refusal::AcceptFailed => tracing::warn!(
                %error,
                unlogged,
                "accept failed; retrying in {} ms (logged at most every {every} s; `unlogged`: \
                 failures since the last line)",
                ACCEPT_BACKOFF.as_millis()
            ),
        }
    }
}

/// See the module documentation.
pub struct Listener {
    /// The bound client port.
    listener: TcpListener,
    /// The node the connections are served by.
    node: Arc<Node>,
    /// One permit per open connection (`--max-connections`); shutdown waits for all of them.
    total: Arc<Semaphore>,
    /// Open connections per client address.
    per_ip: Arc<PerIp>,
    /// The secure port's TLS configuration (re-read on reload); `None`: plaintext.
    tls: Option<Arc<ServerTls>>,
    /// Where refusals are counted and (rate-limited) logged; shared with the other client port.
    refusals: Arc<RefusalLog>,
}

/// How long the accept loop pauses after a failed accept (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

impl Listener {
    /// A listener sharing the connection bounds `total` and `per_ip`, and the log of refusals,
    /// with the node's other client port; `tls`: this is the secure port.
    pub fn new(
        listener: TcpListener,
        node: Arc<Node>,
        total: Arc<Semaphore>,
        per_ip: Arc<PerIp>,
        refusals: Arc<RefusalLog>,
        tls: Option<Arc<ServerTls>>,
    ) -> Self {
        Listener {
            listener,
            node,
            total,
            per_ip,
            tls,
            refusals,
        }
    }

    /// Accepts until `stop` becomes true; connections already admitted go on.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            let (stream, addr) = tokio::select! {
                r = self.listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        self.refusals.refused(Refusal::AcceptFailed, None, Some(&e));
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
                _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
            };
            let Ok(permit) = self.total.clone().try_acquire_owned() else {
                self.refusals
                    .refused(Refusal::MaxConnections, Some(addr), None);
                continue;
            };
            let Some(guard) = self
                .per_ip
                .admit(addr.ip(), self.node.cfg.max_connections_per_ip)
            else {
                self.refusals
                    .refused(Refusal::MaxConnectionsPerIp, Some(addr), None);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let node = self.node.clone();
            let tls = self.tls.clone();
            let refusals = self.refusals.clone();
            tokio::spawn(async move {
                let admitted = match tls {
                    None => Some((ServerStream::Plain(stream), None)),
                    Some(tls) => match crate::tls::stream::accept(&tls.acceptor(), stream).await {
                        Ok(admitted) => Some(admitted),
                        Err(e) => {
                            refusals.refused(Refusal::TlsHandshake, Some(addr), Some(&e));
                            None
                        }
                    },
                };
                if let Some((stream, identity)) = admitted {
                    crate::pipeline::connection::serve(node, stream, addr, identity).await;
                }
                drop(guard);
                drop(permit);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_of_one_reason_get_one_line_per_interval_with_the_count_of_the_rest() {
        let log = RefusalLog::default();
        let t0 = Instant::now();
        let half = REFUSAL_LOG_INTERVAL / 2;
        assert_eq!(log.admit(Refusal::MaxConnectionsPerIp, t0), Some(0));
        for _ in 0..100 {
            assert_eq!(log.admit(Refusal::MaxConnectionsPerIp, t0 + half), None);
        }
        // Another reason has a window of its own.
        assert_eq!(log.admit(Refusal::MaxConnections, t0 + half), Some(0));
        assert_eq!(log.admit(Refusal::TlsHandshake, t0 + half), Some(0));
        assert_eq!(log.admit(Refusal::AcceptFailed, t0 + half), Some(0));
        // Once the interval has passed: one line, saying how many went unlogged.
        let later = t0 + REFUSAL_LOG_INTERVAL;
        assert_eq!(log.admit(Refusal::MaxConnectionsPerIp, later), Some(100));
        assert_eq!(log.admit(Refusal::MaxConnectionsPerIp, later), None);
        assert_eq!(
            log.admit(Refusal::MaxConnectionsPerIp, later + REFUSAL_LOG_INTERVAL),
            Some(1)
        );
        // A clock read before the last line (another thread's `now`) is inside the interval.
        assert_eq!(log.admit(Refusal::MaxConnections, t0), None);
        for why in [
            Refusal::MaxConnections,
            Refusal::MaxConnectionsPerIp,
            Refusal::TlsHandshake,
            Refusal::AcceptFailed,
        ] {
            assert!((why as usize) < Refusal::COUNT, "{why:?} has no window");
        }
    }
}
