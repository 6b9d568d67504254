//! Request counters of this server, ZooKeeper's `ServerStats` and per-connection `ServerCnxn`
//! statistics: packets received and sent, request latency (min / avg / max), outstanding
//! requests. Updated lock-free from the connection pipeline; `srst` / `crst` reset them. The
//! connections themselves are listed by the one registry, [`crate::session::registry`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::session::registry::ConnId;

/// Latency figures in microseconds: count, total, min, max.
#[derive(Debug)]
struct Latency {
    /// Requests answered since the last reset.
    count: AtomicU64,
    /// Sum of their latencies.
    total_us: AtomicU64,
    /// Smallest latency (`u64::MAX` before the first request).
    min_us: AtomicU64,
    /// Largest latency.
    max_us: AtomicU64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            count: AtomicU64::new(0),
            total_us: AtomicU64::new(0),
            min_us: AtomicU64::new(u64::MAX),
            max_us: AtomicU64::new(0),
        }
    }
}

impl Latency {
    fn record(&self, us: u64) {
        self.count.fetch_add(1, Relaxed);
        self.total_us.fetch_add(us, Relaxed);
        // Loaded first: `fetch_min`/`fetch_max` are compare-and-swap loops that take the cache
        // line for writing even when the extreme does not move, which it rarely does; every
        // connection records into the server-wide figures.
        if us < self.min_us.load(Relaxed) {
            self.min_us.fetch_min(us, Relaxed);
        }
        if us > self.max_us.load(Relaxed) {
            self.max_us.fetch_max(us, Relaxed);
        }
    }

    fn reset(&self) {
        self.count.store(0, Relaxed);
        self.total_us.store(0, Relaxed);
        self.min_us.store(u64::MAX, Relaxed);
        self.max_us.store(0, Relaxed);
    }

    fn snapshot(&self) -> LatencySnapshot {
        let min = self.min_us.load(Relaxed);
        LatencySnapshot {
            count: self.count.load(Relaxed),
            total_us: self.total_us.load(Relaxed),
            min_us: if min == u64::MAX { 0 } else { min },
            max_us: self.max_us.load(Relaxed),
        }
    }
}

/// A copy of latency figures (microseconds).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct LatencySnapshot {
    /// Requests answered.
    pub count: u64,
    /// Sum of their latencies.
    pub total_us: u64,
    /// Smallest latency (0 before any request).
    pub min_us: u64,
    /// Largest latency.
    pub max_us: u64,
}

impl LatencySnapshot {
    /// Mean latency in milliseconds (0.0 before any request).
    pub fn avg_ms(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.total_us as f64 / self.count as f64 / 1000.0
        }
    }

    /// Smallest latency in whole milliseconds, as ZooKeeper reports it.
    pub fn min_ms(&self) -> u64 {
        self.min_us / 1000
    }

    /// Largest latency in whole milliseconds, as ZooKeeper reports it.
    pub fn max_ms(&self) -> u64 {
        self.max_us / 1000
    }
}

/// One client connection's figures (ZooKeeper's `cons` line).
#[derive(Debug)]
pub struct ConnStats {
    /// The connection's id on this node (watches are keyed by it).
    pub conn: ConnId,
    /// The client's address.
    pub peer: SocketAddr,
    /// The session the connection carries.
    pub session_id: i64,
    /// The negotiated session timeout.
    pub timeout_ms: u64,
    /// When the session was established on this connection (ms since the epoch).
    pub established_ms: i64,
    /// The same moment on the monotonic clock: a reply's wall time is `established_ms` plus
    /// the time since, from the one clock read that also times the reply.
    established_at: Instant,
    /// Frames received from the client (requests, pings).
    received: AtomicU64,
    /// Frames queued for the client (replies, events).
    sent: AtomicU64,
    /// The opcode of the last request (`i32::MIN` before any).
    last_op: AtomicI32,
    /// The xid of the last request.
    last_cxid: AtomicI32,
    /// The zxid of the last reply.
    last_zxid: AtomicI64,
    /// When the last reply left (ms since the epoch).
    last_response_ms: AtomicI64,
    /// Latency of the last reply.
    last_latency_us: AtomicU64,
    /// Latency figures of this connection.
    latency: Latency,
    /// Arrival times of the requests not answered yet, in order (replies leave in request
    /// order, so the front is the next one answered); its length is the outstanding count.
    arrivals: Mutex<VecDeque<Instant>>,
    /// The server-wide figures, updated along.
    server: Arc<ServerStats>,
}

/// A copy of one connection's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnSnapshot {
    /// The connection's id on this node.
    pub conn: ConnId,
    /// The client's address.
    pub peer: SocketAddr,
    /// The session id.
    pub session_id: i64,
    /// The negotiated session timeout.
    pub timeout_ms: u64,
    /// When the connection's session was established (ms since the epoch).
    pub established_ms: i64,
    /// Frames received.
    pub received: u64,
    /// Frames sent.
    pub sent: u64,
    /// Requests not answered yet.
    pub outstanding: u64,
    /// ZooKeeper's name for the last operation (`NA` before any).
    pub last_op: &'static str,
    /// The xid of the last request.
    pub last_cxid: i32,
    /// The zxid of the last reply (-1 before any).
    pub last_zxid: i64,
    /// When the last reply left (ms since the epoch, 0 before any).
    pub last_response_ms: i64,
    /// Latency of the last reply.
    pub last_latency_us: u64,
    /// Latency figures.
    pub latency: LatencySnapshot,
}

/// ZooKeeper's short name of the operation `op` as `cons` shows it (`lop=`): `NA` before any.
fn op_name(op: i32) -> &'static str {
    match synod_proto::OpCode::from_i32(op) {
        Some(op) => op.short_name(),
        None if op == i32::MIN => "NA",
        None => "OTHR",
    }
}

impl Drop for ConnStats {
    fn drop(&mut self) {
        // Requests the connection never answered are no longer outstanding anywhere.
        let left = self.arrivals().len() as u64;
        self.server.outstanding.fetch_sub(left, Relaxed);
    }
}

impl ConnStats {
    /// A request arrived at `arrived` (`op` is its opcode, `xid` its xid).
    pub fn request(&self, op: i32, xid: i32, arrived: Instant) {
        self.received.fetch_add(1, Relaxed);
        self.server.packets_received.fetch_add(1, Relaxed);
        self.last_op.store(op, Relaxed);
        // ZooKeeper's lcxid ignores the special xids (pings, watch re-registration).
        if xid >= 0 {
            self.last_cxid.store(xid, Relaxed);
        }
        self.arrivals().push_back(arrived);
        self.server.outstanding.fetch_add(1, Relaxed);
    }

    /// The oldest outstanding request was answered with `zxid`, now.
    pub fn answered(&self, zxid: i64) {
        self.answered_at(zxid, Instant::now());
    }

    /// The oldest outstanding request was answered with `zxid` at `now`, a moment just read
    /// from the clock.
    pub fn answered_at(&self, zxid: i64, now: Instant) {
        let Some(arrived) = self.arrivals().pop_front() else {
            return;
        };
        self.server.outstanding.fetch_sub(1, Relaxed);
        let us = now.saturating_duration_since(arrived).as_micros() as u64;
        self.latency.record(us);
        self.server.latency.record(us);
        self.last_latency_us.store(us, Relaxed);
        self.last_zxid.store(zxid, Relaxed);
        let since = now
            .saturating_duration_since(self.established_at)
            .as_millis();
        let since = i64::try_from(since).unwrap_or(i64::MAX);
        self.last_response_ms
            .store(self.established_ms.saturating_add(since), Relaxed);
    }

    /// A frame (reply or event) went to the client.
    pub fn sent(&self) {
        self.sent.fetch_add(1, Relaxed);
        self.server.packets_sent.fetch_add(1, Relaxed);
    }

    fn arrivals(&self) -> MutexGuard<'_, VecDeque<Instant>> {
        self.arrivals.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `crst`: resets this connection's counters (not its outstanding requests).
    pub fn reset(&self) {
        self.received.store(0, Relaxed);
        self.sent.store(0, Relaxed);
        self.last_op.store(i32::MIN, Relaxed);
        self.last_cxid.store(0, Relaxed);
        self.last_zxid.store(-1, Relaxed);
        self.last_response_ms.store(0, Relaxed);
        self.last_latency_us.store(0, Relaxed);
        self.latency.reset();
    }

    /// A copy of the figures.
    pub fn snapshot(&self) -> ConnSnapshot {
        ConnSnapshot {
            conn: self.conn,
            peer: self.peer,
            session_id: self.session_id,
            timeout_ms: self.timeout_ms,
            established_ms: self.established_ms,
            received: self.received.load(Relaxed),
            sent: self.sent.load(Relaxed),
            outstanding: self.arrivals().len() as u64,
            last_op: op_name(self.last_op.load(Relaxed)),
            last_cxid: self.last_cxid.load(Relaxed),
            last_zxid: self.last_zxid.load(Relaxed),
            last_response_ms: self.last_response_ms.load(Relaxed),
            last_latency_us: self.last_latency_us.load(Relaxed),
            latency: self.latency.snapshot(),
        }
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct ServerStats {
    /// Frames received from clients (handshakes included).
    packets_received: AtomicU64,
    /// Frames sent to clients (handshake replies, replies, events).
    packets_sent: AtomicU64,
    /// Request latency, from the frame's arrival to its reply being queued.
    latency: Latency,
    /// Requests read and not answered yet, over every connection. Invariant: the sum of the
    /// live connections' outstanding counts.
    outstanding: AtomicU64,
    /// When the counters were last reset (or the server started).
    since: Mutex<Instant>,
}

impl Default for ServerStats {
    fn default() -> Self {
        ServerStats {
            packets_received: AtomicU64::new(0),
            packets_sent: AtomicU64::new(0),
            latency: Latency::default(),
            outstanding: AtomicU64::new(0),
            since: Mutex::new(Instant::now()),
        }
    }
}

/// A copy of the server-wide figures.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ServerSnapshot {
    /// Frames received from clients.
    pub packets_received: u64,
    /// Frames sent to clients.
    pub packets_sent: u64,
    /// Requests not answered yet, over every connection.
    pub outstanding: u64,
    /// Request latency.
    pub latency: LatencySnapshot,
    /// Milliseconds since the counters were last reset.
    pub since_reset_ms: u64,
}

impl ServerStats {
    /// A frame arrived before any session exists (the ConnectRequest).
    pub fn handshake_received(&self) {
        self.packets_received.fetch_add(1, Relaxed);
    }

    /// The counters of a newly established connection (the connection registry lists them:
    /// [`crate::session::registry::Connections`]).
    pub fn connection(
        self: &Arc<Self>,
        conn: ConnId,
        peer: SocketAddr,
        session_id: i64,
        timeout_ms: u64,
    ) -> Arc<ConnStats> {
        Arc::new(ConnStats {
            conn,
            peer,
            session_id,
            timeout_ms,
            established_ms: crate::clock::now_ms(),
            established_at: Instant::now(),
            // The ConnectRequest that established it.
            received: AtomicU64::new(1),
            sent: AtomicU64::new(0),
            last_op: AtomicI32::new(-10),
            last_cxid: AtomicI32::new(0),
            last_zxid: AtomicI64::new(-1),
            last_response_ms: AtomicI64::new(0),
            last_latency_us: AtomicU64::new(0),
            latency: Latency::default(),
            arrivals: Mutex::new(VecDeque::new()),
            server: self.clone(),
        })
    }

    /// `srst`: resets the server-wide counters.
    pub fn reset(&self) {
        self.packets_received.store(0, Relaxed);
        self.packets_sent.store(0, Relaxed);
        self.latency.reset();
        *self.since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// A copy of the server-wide figures.
    pub fn snapshot(&self) -> ServerSnapshot {
        ServerSnapshot {
            packets_received: self.packets_received.load(Relaxed),
            packets_sent: self.packets_sent.load(Relaxed),
            outstanding: self.outstanding.load(Relaxed),
            latency: self.latency.snapshot(),
            since_reset_ms: self
                .since
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .elapsed()
                .as_millis() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_keeps_the_extremes_whatever_the_order() {
        let l = Latency::default();
        assert_eq!(l.snapshot().min_us, 0, "no request yet");
        for us in [50, 10, 90, 40, 10, 90] {
            l.record(us);
        }
        let s = l.snapshot();
        assert_eq!((s.count, s.total_us, s.min_us, s.max_us), (6, 290, 10, 90));
        l.reset();
        l.record(70);
        let s = l.snapshot();
        assert_eq!((s.count, s.min_us, s.max_us), (1, 70, 70));
    }

    #[test]
    fn counts_latency_outstanding_and_resets() {
        let s = Arc::new(ServerStats::default());
        s.handshake_received();
        let g = s.connection(7, "127.0.0.1:5000".parse().expect("addr"), 0x42, 10_000);
        g.sent();
        g.request(4, 1, Instant::now());
        g.request(11, -2, Instant::now());
        assert_eq!(s.snapshot().outstanding, 2);
        g.answered(9);
        g.sent();
        let c = g.snapshot();
        assert_eq!((c.received, c.sent, c.outstanding), (3, 2, 1));
        assert_eq!((c.last_op, c.last_cxid, c.last_zxid), ("PING", 1, 9));
        assert_eq!(c.latency.count, 1);
        let srv = s.snapshot();
        assert_eq!((srv.packets_received, srv.packets_sent), (3, 2));
        assert_eq!(srv.latency.count, 1);
        assert!(srv.latency.min_us <= srv.latency.max_us);
        s.reset();
        g.reset();
        let srv = s.snapshot();
        assert_eq!((srv.packets_received, srv.latency.count), (0, 0));
        assert_eq!(g.snapshot().received, 0);
        assert_eq!(g.snapshot().last_op, "NA");
        drop(g);
        assert_eq!(
            s.snapshot().outstanding,
            0,
            "a closed connection's requests are not"
        );
    }
}
