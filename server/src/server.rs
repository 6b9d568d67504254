//! Runs a node: binds the client, peer and admin listeners (separate ports, firewalled
//! differently), serves until a shutdown signal, then shuts down deliberately (see [`run`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::admin::listener::AdminListener;
use crate::config::Config;
use crate::error::ServerError;
use crate::listener::{Listener, PerIp, RefusalLog};
use crate::node::Node;
use crate::tls::{ClientAuth, ServerTls};

/// How long a shutdown waits for connections to answer what they have read and close.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a shutting-down leader waits for its followers to match its last log entry.
const REPLICATION_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a shutdown waits for the admin port's requests in flight (a backup being
/// downloaded, a membership change waiting for its commit, up to the `timeout_ms` its caller
/// chose) before it drops them.
const ADMIN_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a shutdown waits for the Raft core to stop (it finishes the command under way, such
/// as a log sync) before the process exits without it: every acknowledged entry is already
/// durable, and what the core had not finished is not acknowledged.
const RAFT_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds every listener, starts the node and serves until `shutdown` resolves. Then, in order:
/// stops accepting clients; lets every connection answer the requests it has read (it reads no
/// more) and close, bounded by [`DRAIN_TIMEOUT`]; if leading, waits (bounded) until every
/// follower has matched the last log entry, so none needs a catch-up after the leader is gone
/// (openraft 0.9 cannot hand leadership over: the followers elect a new leader after an
/// election timeout); then stops the admin listener, letting its requests in flight finish
/// within [`ADMIN_DRAIN_TIMEOUT`], the peer listener and Raft.
pub async fn run(
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServerError> {
    // TLS material is read before anything is bound: a node with unusable certificates does
    // not start.
    let tls = match (&cfg.secure_client_addr, &cfg.tls) {
        (Some(_), Some(files)) => Some(ServerTls::load(files, cfg.client_auth)?),
        _ => None,
    };
    // The admin port asks for a client certificate but lets probes in without one; what needs
    // an operator is decided per endpoint (crate::admin::access).
    let admin_tls = cfg
        .tls
        .as_ref()
        .map(|files| ServerTls::load(files, ClientAuth::Optional))
        .transpose()?;
    let client = match cfg.client_addr {
        Some(a) => Some(TcpListener::bind(a).await?),
        None => None,
    };
    let secure_client = match cfg.secure_client_addr {
        Some(a) => Some(TcpListener::bind(a).await?),
        None => None,
    };
    let peer = TcpListener::bind(cfg.peer_addr).await?;
    let admin = TcpListener::bind(cfg.admin_addr).await?;
    crate::admin::metrics::install();
    if cfg.insecure {
        tracing::warn!(
            "INSECURE: --insecure given: every port is plaintext; peers, clients and operators \
             are not authenticated by certificate. Never run this across a network."
        );
    }
    tracing::info!(
        id = cfg.id,
        insecure = cfg.insecure,
        client = ?cfg.client_addr,
        secure_client = ?cfg.secure_client_addr,
        client_auth = ?cfg.client_auth,
        peer = %cfg.peer_addr,
        admin = %cfg.admin_addr,
        data_dir = %cfg.data_dir.display(),
        members = ?cfg.members,
        read_consistency = ?cfg.read_consistency,
        join = cfg.join,
        snapshot_entries = cfg.snapshot_entries,
        "synod starting"
    );
    let node = crate::bootstrap::start(cfg.clone()).await?;
    crate::admin::metrics::spawn_background(node.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (client_stop_tx, client_stop_rx) = tokio::sync::watch::channel(false);
    let total = Arc::new(Semaphore::new(node.cfg.max_connections));

    let peer_task = {
        let node = node.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            crate::peer::serve(peer, node.local.clone(), node, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
        })
    };
    let admin_task = {
        let app = crate::admin::router(node.clone());
        let admin = AdminListener::new(admin, admin_tls.clone())?;
        tokio::spawn(crate::admin::serve::serve(admin, app, stop_rx.clone()))
    };
    let reloader = tokio::spawn(reload_on_sighup(
        [tls.clone(), admin_tls].into_iter().flatten().collect(),
        node.clone(),
    ));
    let per_ip = Arc::new(PerIp::default());
    let refusals = Arc::new(RefusalLog::default());
    let client_tasks: Vec<_> = [(client, None), (secure_client, tls)]
        .into_iter()
        .filter_map(|(listener, tls)| Some((listener?, tls)))
        .map(|(listener, tls)| {
            let listener = Listener::new(
                listener,
                node.clone(),
                total.clone(),
                per_ip.clone(),
                refusals.clone(),
                tls,
            );
            tokio::spawn(listener.run(client_stop_rx.clone()))
        })
        .collect();
    crate::notify::ready(&format!(
        "serving: node {}, clients on {}",
        node.id,
        [node.cfg.secure_client_addr, node.cfg.client_addr]
            .iter()
            .flatten()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" and ")
    ));

    shutdown.await;
    crate::notify::stopping();
    tracing::info!("shutting down: no new connections; answering what was read");
    let _ = client_stop_tx.send(true);
    for task in client_tasks {
        let _ = task.await;
    }
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
    reloader.abort();
    let _ = stop_tx.send(true);
    let mut admin_task = admin_task;
    if tokio::time::timeout(ADMIN_DRAIN_TIMEOUT, &mut admin_task)
        .await
        .is_err()
    {
        // The requests' own tasks end with the runtime (`main` bounds its shutdown too).
        tracing::warn!(
            "admin requests still in flight after {ADMIN_DRAIN_TIMEOUT:?}; dropping them"
        );
        admin_task.abort();
    }
    peer_task.abort();
    // The Raft core sees the request between commands: one stuck in a sync on a stalled disk
    // would hold it, and the process, until killed.
    match tokio::time::timeout(RAFT_STOP_TIMEOUT, node.raft.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(%e, "raft shutdown"),
        Err(_) => tracing::warn!("raft did not stop within {RAFT_STOP_TIMEOUT:?}; exiting anyway"),
    }
    Ok(())
}

/// Re-reads every port's TLS material on each SIGHUP (operators rotate certificates without a
/// restart): new connections use the new material, open ones keep theirs. A file that cannot be
/// used leaves that port's material as it was, and says why.
async fn reload_on_sighup(ports: Vec<Arc<ServerTls>>, node: Arc<Node>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%e, "cannot watch SIGHUP: certificates reload only on restart");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        let mut failed = 0;
        for port in &ports {
            if let Err(e) = port.reload() {
                failed += 1;
                tracing::error!(%e, "certificate reload failed; keeping the old material");
            }
        }
        if let Some(peer) = &node.local.tls {
            if let Err(e) = peer.reload() {
                failed += 1;
                tracing::error!(%e, "peer certificate reload failed; keeping the old material");
            }
        }
        if failed == 0 {
            tracing::info!("certificates reloaded (SIGHUP)");
        }
    }
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
