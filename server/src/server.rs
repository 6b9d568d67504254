//! Runs a node: the client, peer and admin listeners (separate ports, firewalled differently),
//! with bounded client connections (in total and per address), until a shutdown signal; then
//! shuts down gracefully (see [`run`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::error::ServerError;
use crate::node::Node;

/// Counts connections per client address; a guard releases its count on drop.
#[derive(Default)]
struct PerIp {
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

/// How long a shutdown waits for connections to answer what they have read and close.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a shutting-down leader waits for its followers to match its last log entry.
const REPLICATION_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds every listener, starts the node and serves until `shutdown` resolves. Then, in order:
/// stops accepting clients; lets every connection answer the requests it has read (it reads no
/// more) and close, bounded by [`DRAIN_TIMEOUT`]; if leading, waits (bounded) until every
/// follower has matched the last log entry, so none needs a catch-up after the leader is gone
/// (openraft 0.9 cannot hand leadership over: the followers elect a new leader after an
/// election timeout); then stops the peer and admin listeners and Raft.
pub async fn run(
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServerError> {
    let client = TcpListener::bind(cfg.client_addr).await?;
    let peer = TcpListener::bind(cfg.peer_addr).await?;
    let admin = TcpListener::bind(cfg.admin_addr).await?;
    crate::metrics::install();
    tracing::info!(
        id = cfg.id,
        client = %cfg.client_addr,
        peer = %cfg.peer_addr,
        admin = %cfg.admin_addr,
        data_dir = %cfg.data_dir.display(),
        members = ?cfg.members,
        read_consistency = ?cfg.read_consistency,
        join = cfg.join,
        snapshot_entries = cfg.snapshot_entries,
        "synod starting"
    );
    let node = Node::start(cfg.clone()).await?;
    crate::metrics::spawn_background(node.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (client_stop_tx, client_stop_rx) = tokio::sync::watch::channel(false);
    let total = Arc::new(Semaphore::new(node.cfg.max_connections));

    let peer_task = {
        let node = node.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            crate::peer::serve(peer, node, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
        })
    };
    let admin_task = {
        let mut stop = stop_rx.clone();
        let app = crate::admin::router(node.clone()).merge(crate::control::router(node.clone()));
        tokio::spawn(async move {
            axum::serve(admin, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        })
    };
    let client_task = {
        let node = node.clone();
        let mut stop = client_stop_rx;
        let total = total.clone();
        tokio::spawn(async move {
            let per_ip = Arc::new(PerIp::default());
            loop {
                let (stream, addr) = tokio::select! {
                    r = client.accept() => match r {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::warn!(%e, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
                };
                let Ok(permit) = total.clone().try_acquire_owned() else {
                    tracing::warn!(%addr, "refusing connection: --max-connections reached");
                    continue;
                };
                let Some(guard) = per_ip.admit(addr.ip(), node.cfg.max_connections_per_ip) else {
                    tracing::warn!(%addr, "refusing connection: --max-connections-per-ip reached");
                    continue;
                };
                let node = node.clone();
                tokio::spawn(async move {
                    crate::connection::serve(node, stream, addr).await;
                    drop(guard);
                    drop(permit);
                });
            }
        })
    };

    shutdown.await;
    tracing::info!("shutting down: no new connections; answering what was read");
    let _ = client_stop_tx.send(true);
    let _ = client_task.await;
    node.stopping.send_replace(true);
    let max = u32::try_from(node.cfg.max_connections).unwrap_or(u32::MAX);
    match tokio::time::timeout(DRAIN_TIMEOUT, total.acquire_many(max)).await {
        Ok(_) => tracing::info!("every client connection closed"),
        Err(_) => tracing::warn!(
            open = node.cfg.max_connections - total.available_permits(),
            "connections still open after {DRAIN_TIMEOUT:?}; closing them"
        ),
    }
    if node.is_leader() {
        let caught_up = wait_followers_match(&node, REPLICATION_DRAIN_TIMEOUT).await;
        tracing::info!(
            caught_up,
            "leader exiting; followers elect a new leader after an election timeout \
             (openraft 0.9 has no leadership transfer)"
        );
    }
    let _ = stop_tx.send(true);
    let _ = admin_task.await;
    peer_task.abort();
    if let Err(e) = node.raft.shutdown().await {
        tracing::warn!(%e, "raft shutdown");
    }
    Ok(())
}

/// Waits (bounded) until every follower and learner has matched the leader's last log entry.
async fn wait_followers_match(node: &Node, timeout: Duration) -> bool {
    let mut rx = node.raft.metrics();
    tokio::time::timeout(timeout, async move {
        loop {
            let done = {
                let m = rx.borrow();
                let last = m.last_log_index;
                match &m.replication {
                    Some(r) => r
                        .iter()
                        .filter(|(id, _)| **id != node.id)
                        .all(|(_, matched)| matched.map(|l| l.index) >= last),
                    None => true,
                }
            };
            if done || rx.changed().await.is_err() {
                return;
            }
        }
    })
    .await
    .is_ok()
}
