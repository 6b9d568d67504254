//! The handshake: reads a connection's first frame — a four-letter word, answered raw, or the
//! ConnectRequest — and creates the session through Raft or resumes it (only on a server that
//! has applied everything the client has seen, and only with its password).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use synod_proto::frame::encode_frame;
use synod_proto::jute::{Decode, Reader};
use synod_proto::records::*;
use synod_proto::Id;
use synod_raft_store::state_machine::lock;
use synod_raft_store::types::{zxid_index, TENANTS_SINCE};
use synod_raft_store::Command;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::node::Node;
use crate::pipeline::conn::COMMIT_TIMEOUT;
use crate::pipeline::pending::Completion;
use crate::tls::stream::ServerStream;

/// How long a client has to send its ConnectRequest.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a resuming client waits for this server to catch up with what it has seen.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads the connection's first frame: a four-letter word is answered raw and the connection
/// closed; otherwise the ConnectRequest (None: the connection is to be closed).
pub async fn read_connect_request(
    node: &Node,
    stream: &mut ServerStream,
    peer: SocketAddr,
) -> Option<ConnectRequest> {
    let mut head = [0u8; 4];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut head)).await {
        Ok(Ok(_)) => {}
        _ => return None,
    }
    if let Some(answer) = crate::admin::fourletter::answer(node, &head) {
        // Bounded: a client that never reads a large answer (`cons`, `dump`, `wchp`) must not
        // keep its connection slot.
        let send = async {
            stream.write_all(answer.as_bytes()).await?;
            stream.flush().await?;
            stream.shutdown().await
        };
        if tokio::time::timeout(HANDSHAKE_TIMEOUT, send).await.is_err() {
            tracing::info!(%peer, "closing: the four-letter word's answer was not read in time");
        }
        return None;
    }
    let len = i32::from_be_bytes(head);
    if len < 0 || len as usize > node.cfg.max_frame_bytes {
        tracing::info!(%peer, len, "closing: handshake frame length out of range");
        return None;
    }
    let mut body = vec![0u8; len as usize];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut body)).await {
        Ok(Ok(_)) => {}
        _ => return None,
    }
    match ConnectRequest::decode(&mut Reader::new(Bytes::from(body))) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::info!(%peer, %e, "closing: malformed ConnectRequest");
            None
        }
    }
}

/// The local session a read-only node gives a client that asked for one
/// ([`crate::read_only`]): Some((id, timeout, password)), or None to close without an answer —
/// a client that did not ask for read-only, that brings a session to resume, or that has seen
/// more than this node has applied.
pub fn read_only_session(
    node: &Node,
    req: &ConnectRequest,
    peer: SocketAddr,
) -> Option<(i64, Duration, Bytes)> {
    let b = &req.base;
    let applied = lock(&node.replica).applied_index();
    if !req.read_only || b.session_id != 0 || zxid_index(b.last_zxid_seen) > applied {
        tracing::info!(
            %peer,
            can_be_read_only = req.read_only,
            session = format_args!("{:#x}", b.session_id),
            last_zxid_seen = format_args!("{:#x}", b.last_zxid_seen),
            "closing: this node is cut off from the quorum and serves only new read-only \
             sessions of clients that allow them and have not seen more than it has applied"
        );
        return None;
    }
    let timeout = node.cfg.negotiate_timeout(b.timeout);
    let passwd = Bytes::from(rand::random::<[u8; 16]>().to_vec());
    Some((node.read_only.new_local_session(node.id), timeout, passwd))
}

/// Establishes or resumes the session: Some((id, timeout, password)); Some with id 0 to close
/// without an answer (the client tries another server); None to answer that the session has
/// expired (a resumed session that is gone, or a new one its tenant's quota refuses).
/// `identities` are the connection's
/// ([`certificate_identities`](crate::pipeline::reader::certificate_identities)), stamped into a
/// new session.
pub async fn handshake(
    node: &Arc<Node>,
    req: &ConnectRequest,
    peer: SocketAddr,
    identities: &[Id],
) -> Option<(i64, Duration, Bytes)> {
    let b = &req.base;
    if b.session_id == 0 {
        let timeout = node.cfg.negotiate_timeout(b.timeout);
        let passwd = Bytes::from(rand::random::<[u8; 16]>().to_vec());
        let origin = node.origin();
        let timeout_ms = timeout.as_millis() as i32;
        // A cluster still at release 0.1's version gets the session as 0.1 opened it (no
        // identities: no tenant can exist yet to charge it to).
        let cmd = if crate::upgrade::cluster_has(node, TENANTS_SINCE) {
            Command::OpenSession {
                origin,
                timeout_ms,
                passwd: passwd.clone(),
                auth: identities
                    .iter()
                    .map(|id| (id.scheme.clone(), id.id.clone()))
                    .collect(),
            }
        } else {
            Command::CreateSession {
                origin,
                timeout_ms,
                passwd: passwd.clone(),
            }
        };
        let done = node.propose_and_wait(origin, cmd, None);
        return match tokio::time::timeout(COMMIT_TIMEOUT, done).await {
            Ok(Ok(Completion::Session { session_id })) => Some((session_id, timeout, passwd)),
            Ok(Ok(Completion::SessionRefused { err })) => {
                tracing::info!(%peer, ?err, "session refused: its tenant's session quota is used up");
                None
            }
            other => {
                tracing::info!(%peer, ?other, "could not create a session");
                lock(&node.replica)
                    .observer
                    .pending
                    .fail(origin.request, "gave up".into());
                Some((0, timeout, passwd))
            }
        };
    }
    // A resuming client must never see this server behind what it has already seen.
    if let Err(e) = node
        .wait_applied(zxid_index(b.last_zxid_seen), CATCH_UP_TIMEOUT)
        .await
    {
        tracing::info!(%peer, %e, "refusing session: this server is behind the client");
        return Some((0, Duration::ZERO, Bytes::new()));
    }
    let lookup = |node: &Node| {
        let r = lock(&node.replica);
        r.tree
            .session(b.session_id)
            .map(|s| (s.timeout_ms, s.passwd.clone()))
    };
    // A session restored from a backup has no password (backups leave them out): nobody can
    // resume it, whatever they send.
    let resumable = |found: &Option<(i32, Bytes)>| {
        found
            .as_ref()
            .is_some_and(|(_, passwd)| !passwd.is_empty() && *passwd == b.passwd)
    };
    let mut found = lookup(node);
    if !resumable(&found) {
        // Not here (it may have been created moments ago through another server), or not with
        // this password: catch up, then look again. Both wait alike, so that how soon a resume
        // is refused does not tell a guesser whether the session exists.
        if node.sync_barrier().await.is_err() {
            return Some((0, Duration::ZERO, Bytes::new()));
        }
        found = lookup(node);
    }
    if !resumable(&found) {
        return None;
    }
    found.map(|(timeout_ms, passwd)| {
        let timeout = Duration::from_millis(timeout_ms.max(0) as u64);
        (b.session_id, timeout, passwd)
    })
}

/// An encoded ConnectResponse granting `session_id` for `timeout_ms`; `read_only` for a
/// read-only node's local session ([`crate::read_only`]).
pub fn connect_response(timeout_ms: i32, session_id: i64, passwd: Bytes, read_only: bool) -> Bytes {
    let resp = ConnectResponse {
        base: ConnectResponseBase {
            protocol_version: 0,
            timeout: timeout_ms,
            session_id,
            passwd,
        },
        read_only,
    };
    let mut b = BytesMut::new();
    encode_frame(&resp, &mut b);
    b.freeze()
}

/// The ConnectResponse that tells a client its session has expired (timeout 0), as ZooKeeper
/// sends it.
pub fn expired_response() -> Bytes {
    connect_response(0, 0, Bytes::from(vec![0; 16]), false)
}
