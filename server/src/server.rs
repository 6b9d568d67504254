//! Runs a node: the client, peer and admin listeners (separate ports, firewalled differently),
//! with bounded client connections (in total and per address), until a shutdown signal.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

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

/// Binds every listener, starts the node and serves until `shutdown` resolves.
pub async fn run(
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServerError> {
    let client = TcpListener::bind(cfg.client_addr).await?;
    let peer = TcpListener::bind(cfg.peer_addr).await?;
    let admin = TcpListener::bind(cfg.admin_addr).await?;
    tracing::info!(
        id = cfg.id,
        client = %cfg.client_addr,
        peer = %cfg.peer_addr,
        admin = %cfg.admin_addr,
        data_dir = %cfg.data_dir.display(),
        members = ?cfg.members,
        read_consistency = ?cfg.read_consistency,
        "synod starting"
    );
    let node = Node::start(cfg.clone()).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

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
        let app = crate::admin::router(node.clone());
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
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let total = Arc::new(Semaphore::new(node.cfg.max_connections));
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
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    client_task.abort();
    let _ = admin_task.await;
    peer_task.abort();
    if let Err(e) = node.raft.shutdown().await {
        tracing::warn!(%e, "raft shutdown");
    }
    Ok(())
}
