//! Serving the admin port: each connection from [`AdminListener`] is HTTP/1.1 answered by the
//! admin router, with the bound axum's own `serve` does not set — a client must send each
//! request's head within [`HEADER_READ_TIMEOUT`] (of the connection, or of the last answer on a
//! kept-alive one), or the connection closes — so that connections sending nothing, or a
//! head a byte at a time, do not keep the port's slots ([`super::listener`]). Shutdown is
//! graceful: no new connection, each open one finishes what it answers and closes.

use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::{Extension, Router};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::{mpsc, watch};

use super::listener::{AdminListener, AdminStream};

/// How long a client may take to send a request's head, counted from the connection's start
/// or from the end of the previous answer: also how long an idle kept-alive connection stays
/// open. Longer than the idle time synod's HTTP clients keep pooled connections for (15 s:
/// synodctl's reqwest pool, set so, and the tests' ureq agent), so that the client, not the
/// server, closes an idle one and no request is sent on a connection being closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `listener`'s connections with `app` until `stop` becomes true, then waits until every
/// open connection has finished its answer and closed (the caller bounds that wait).
pub async fn serve(mut listener: AdminListener, app: Router, mut stop: watch::Receiver<bool>) {
    // Every connection's task holds a sender: the receiver sees the channel closed once all
    // are gone.
    let (open, mut all_closed) = mpsc::channel::<()>(1);
    loop {
        let conn = tokio::select! {
            conn = listener.accept() => conn,
            _ = stop.wait_for(|s| *s) => break,
        };
        tokio::spawn(connection(conn, app.clone(), stop.clone(), open.clone()));
    }
    drop(listener);
    drop(open);
    let _ = all_closed.recv().await;
}

/// Serves one connection; on `stop`, finishes the answer under way and closes. `_open` is held
/// until the connection is done ([`serve`] waits for all of them).
async fn connection(
    stream: AdminStream,
    app: Router,
    mut stop: watch::Receiver<bool>,
    _open: mpsc::Sender<()>,
) {
    let peer = stream.peer().clone();
    let addr = peer.addr;
    let service = TowerToHyperService::new(app.layer(Extension(ConnectInfo(peer))));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    // (The watch's guard must not live into the arm, across its await: hence the block.)
    let stopping = async {
        let _ = stop.wait_for(|s| *s).await;
    };
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stopping => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%addr, error = %e, "admin connection ended");
    }
}
