//! The client listeners ([`Listener`]): accept client connections on the plaintext and the
//! secure (TLS) client port and bound them — in total (`--max-connections`, both ports
//! together) and per client address (`--max-connections-per-ip`) — before anything is read
//! from them; a secure connection's TLS handshake (bounded in time) verifies its certificate;
//! each admitted one goes to [`crate::pipeline::connection::serve`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::node::Node;
use crate::tls::stream::ServerStream;
use crate::tls::ServerTls;

/// Counts connections per client address; a guard releases its count on drop. One table serves
/// both client ports.
#[derive(Default)]
pub struct PerIp {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

struct IpGuard {
    table: Arc<PerIp>,
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
    fn admit(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<IpGuard> {
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
}

/// How long the accept loop pauses after a failed accept (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

impl Listener {
    /// A listener sharing the connection bounds `total` and `per_ip` with the node's other
    /// client port; `tls`: this is the secure port.
    pub fn new(
        listener: TcpListener,
        node: Arc<Node>,
        total: Arc<Semaphore>,
        per_ip: Arc<PerIp>,
        tls: Option<Arc<ServerTls>>,
    ) -> Self {
        Listener {
            listener,
            node,
            total,
            per_ip,
            tls,
        }
    }

    /// Accepts until `stop` becomes true; connections already admitted go on.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            let (stream, addr) = tokio::select! {
                r = self.listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(%e, "accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
                _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
            };
            let Ok(permit) = self.total.clone().try_acquire_owned() else {
                tracing::warn!(%addr, "refusing connection: --max-connections reached");
                continue;
            };
            let Some(guard) = self
                .per_ip
                .admit(addr.ip(), self.node.cfg.max_connections_per_ip)
            else {
                tracing::warn!(%addr, "refusing connection: --max-connections-per-ip reached");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let node = self.node.clone();
            let tls = self.tls.clone();
            tokio::spawn(async move {
                let admitted = match tls {
                    None => Some((ServerStream::Plain(stream), None)),
                    Some(tls) => match crate::tls::stream::accept(&tls.acceptor(), stream).await {
                        Ok(admitted) => Some(admitted),
                        Err(e) => {
                            tracing::info!(%addr, %e, "refusing client");
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
