//! One client connection from accept to close: the handshake, then three stages that run at
//! once — the reader (decodes, proposes writes in order), the ordered processor (answers in
//! request order) and the writer (sends replies and events from one queue) — and a deliberate
//! end: after a final request (closeSession) or at server shutdown, what was read is answered
//! before the connection closes.
//!
//! Ordering: events are queued by apply under the replica lock, before the entry is visible to
//! any reader; replies to reads that leave a watch are queued under the same lock, so a watch's
//! event can never precede the reply that set it, and a reply never precedes the event of a
//! change it reflects. Once a connection is removed from the registry its queue is sealed, so
//! its client never receives a zxid past an event it was not sent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use synod_proto::Id;
use synod_raft_store::audit::CERT_FINGERPRINT_SCHEME;
use synod_raft_store::state_machine::lock;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, Notify};

use crate::node::Node;
use crate::pipeline::conn::{Conn, COMMIT_TIMEOUT};
use crate::pipeline::handshake::{
    connect_response, expired_response, handshake, read_connect_request, read_only_session,
};
use crate::pipeline::ordered::{Held, Slot};
use crate::pipeline::outbox::outbox;
use crate::pipeline::reader::{certificate_identities, initial_identities, ReaderEnd};
use crate::pipeline::write_order::WriteOrder;
use crate::pipeline::writer::write_loop;
use crate::session::registry::ConnEntry;
use crate::tls::identity::CertIdentity;
use crate::tls::stream::ServerStream;

/// Serves one client connection until it closes. `identity`: what the client's verified
/// certificate names (secure port only); it becomes the connection's `x509` identity.
pub async fn serve(
    node: Arc<Node>,
    mut stream: ServerStream,
    peer: SocketAddr,
    identity: Option<CertIdentity>,
) {
    let Some(req) = read_connect_request(&node, &mut stream, peer).await else {
        return;
    };
    node.stats.handshake_received();
    let (rd, mut wr) = stream.into_split();
    // The session's opening record names the very certificate (its fingerprint); the
    // session's later records name the session.
    let mut stamped = certificate_identities(peer, identity.as_ref());
    if let Some(id) = &identity {
        stamped.push(Id {
            scheme: CERT_FINGERPRINT_SCHEME.into(),
            id: id.fingerprint.clone(),
        });
    }
    // Cut off from the quorum: no replicated session (`crate::cut_off`), and with read-only
    // mode only new read-only sessions (`crate::read_only`).
    let read_only = node.read_only.active();
    let session = if read_only {
        match read_only_session(&node, &req, peer) {
            Some(s) => Some(s),
            None => return,
        }
    } else if node.cut_off.active() {
        tracing::debug!(
            %peer,
            session = format_args!("{:#x}", req.base.session_id),
            "closing: this node is cut off from the quorum and serves no session"
        );
        return;
    } else {
        handshake(&node, &req, peer, &stamped).await
    };
    let Some((session_id, timeout, passwd)) = session else {
        // Tell an expired (or refused) session so, as ZooKeeper does: the client stops.
        let _ = wr.write_all(&expired_response()).await;
        let _ = wr.flush().await;
        return;
    };
    if session_id == 0 {
        return;
    }

    let conn_id = node.next_conn_id();
    let stats = node
        .stats
        .connection(conn_id, peer, session_id, timeout.as_millis() as u64);
    let (out_tx, out_rx) = outbox(
        node.cfg.max_queued_per_connection,
        node.cfg.max_queued_bytes_per_connection,
    );
    let kill = Arc::new(Notify::new());
    let auth = Arc::new(initial_identities(
        &node,
        peer,
        session_id,
        identity.as_ref(),
    ));
    let (accepted, refused) = {
        let mut r = lock(&node.replica);
        // Checked in the same hold as the registration: a session closed after the handshake
        // looked it up would otherwise leave this connection unknown to its close, never told.
        // A read-only session lives while the node is cut off, a replicated one while it is
        // not (the end of read-only mode, and the start of a cut-off, close the connections
        // under this lock: checked again here).
        let refused = if read_only {
            !node.read_only.active()
        } else {
            node.cut_off.active()
        };
        let alive = !refused && (read_only || r.tree.session(session_id).is_some());
        if alive {
            r.observer.add_conn(
                conn_id,
                ConnEntry {
                    session_id,
                    out: out_tx.clone(),
                    kill: kill.clone(),
                    stats: stats.clone(),
                    auth: auth.clone(),
                },
            );
            // The handshake reply is the first frame of the queue.
            let _ = out_tx.push_reply(connect_response(
                timeout.as_millis() as i32,
                session_id,
                passwd,
                read_only,
            ));
        }
        (alive, refused)
    };
    if refused {
        // Closed without an answer: the client tries another server.
        return;
    }
    if !accepted {
        let _ = wr.write_all(&expired_response()).await;
        let _ = wr.flush().await;
        return;
    }
    node.touch(session_id);
    tracing::debug!(%peer, conn = conn_id, session = format_args!("{session_id:#x}"), "session established");

    let mut writer = tokio::spawn(write_loop(wr, out_rx, stats.clone()));
    let (slot_tx, slot_rx) = mpsc::unbounded_channel::<(Slot, Held)>();
    let conn = Conn {
        node: node.clone(),
        id: conn_id,
        session_id,
        read_only,
        idle_limit: read_only.then_some(timeout),
        out: out_tx,
        stats: stats.clone(),
        order: WriteOrder::new(),
    };
    let mut processor = tokio::spawn(conn.clone().process(slot_rx));
    let reader = conn.read_loop(rd, peer, auth, slot_tx);
    let mut closing = false;
    tokio::select! {
        why = reader => {
            tracing::debug!(conn = conn_id, ?why, "connection reader ended");
            closing = why == ReaderEnd::Closing;
        }
        _ = &mut processor => tracing::debug!(conn = conn_id, "connection closed after close or failure"),
        _ = &mut writer => tracing::debug!(conn = conn_id, "write to client failed"),
        _ = kill.notified() => tracing::debug!(conn = conn_id, "connection closed by the server"),
        _ = async { let _ = node.stopping.subscribe().wait_for(|s| *s).await; } => {
            // Server shutdown: read no more, answer what was read, then close.
            closing = true;
        }
    }
    if closing && !processor.is_finished() {
        // Let the final request be answered (closeSession waits for its entry to commit).
        tokio::select! {
            _ = tokio::time::timeout(COMMIT_TIMEOUT, &mut processor) => {}
            _ = kill.notified() => {}
        }
    }
    lock(&node.replica).observer.remove_conn(conn_id);
    processor.abort();
    // The last senders of the queue go now, so the writer ends as soon as it has drained it.
    drop(conn);
    // Let queued replies (e.g. the closeSession reply) drain briefly before closing the socket.
    if !writer.is_finished() {
        let _ = tokio::time::timeout(Duration::from_millis(200), &mut writer).await;
    }
    writer.abort();
}
