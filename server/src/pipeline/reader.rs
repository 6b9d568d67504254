//! The reader: decodes a connection's requests as they arrive and turns each into its place in
//! the reply order ([`Slot`]). Writes are proposed right here, in arrival order, so a session's
//! writes pipeline; credentials (`addauth`) are checked here too. ZooKeeper's
//! PrepRequestProcessor plays this part.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt;
use sha1::{Digest, Sha1};
use synod_proto::jute::{Decode, Reader};
use synod_proto::{ErrorCode, FrameCodec, Id, Request, RequestPacket, Response};
use synod_raft_store::state_machine::lock;
use synod_raft_store::Command;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::codec::FramedRead;

/// A connection's read buffer to begin with: most requests are a few hundred bytes, and an idle
/// session should cost little (10,000 of them are a normal day); it grows for a larger request.
const READ_BUFFER: usize = 1024;
/// A read buffer that grew past this for a large request is given back once it is empty, so a
/// connection does not keep the largest request it ever sent (up to the frame limit) for life.
const READ_BUFFER_KEEP: usize = 64 * 1024;

use crate::pipeline::conn::{reply_frame, Conn};
use crate::pipeline::ordered::{Held, Slot};
use crate::tls::identity::CertIdentity;

/// Why a connection's reader stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReaderEnd {
    /// The client closed its side.
    ClientClosed,
    /// A frame over the size limit, or a broken length prefix.
    BadFrame,
    /// A frame that is no valid request.
    Malformed,
    /// It read a request that ends the connection (closeSession, a rejected credential): the
    /// processor still has to send that request's reply.
    Closing,
    /// The connection's processor is gone: nothing more can be answered.
    Stopped,
}

fn digest_id(auth: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(auth).ok()?;
    let (user, _) = text.split_once(':')?;
    let hash = Sha1::digest(text.as_bytes());
    Some(format!(
        "{user}:{}",
        base64::engine::general_purpose::STANDARD.encode(hash)
    ))
}

/// The identities a new connection starts with: `ip:<address>`, and `x509:<name>` for a
/// verified client certificate (as ZooKeeper's X509AuthenticationProvider makes it) with
/// `org:<O>` if the certificate names its organisation, plus the
/// super identity if that name is one of `--super-identities` (logged: break-glass).
pub fn initial_identities(
    node: &crate::node::Node,
    peer: SocketAddr,
    session_id: i64,
    identity: Option<&CertIdentity>,
) -> Vec<Id> {
    let mut ids = certificate_identities(peer, identity);
    if let Some(identity) = identity {
        if node.cfg.super_identities.contains(&identity.name) {
            tracing::warn!(%peer, session = session_id, identity = %identity.name, "break-glass: certificate grants the super identity");
            ids.push(Id {
                scheme: "super".into(),
                id: identity.name.clone(),
            });
        }
    }
    ids
}

/// What a connection is before any `addauth` and without the super identity: `ip:<address>`,
/// and for a verified certificate `x509:<CN>` and `org:<O>` (the institution, for `tenant:`
/// ACLs; never an ACL id itself). A new session is opened with these (its tenant's quota).
pub fn certificate_identities(peer: SocketAddr, identity: Option<&CertIdentity>) -> Vec<Id> {
    let mut ids = vec![Id {
        scheme: "ip".into(),
        id: peer.ip().to_string(),
    }];
    if let Some(identity) = identity {
        ids.push(Id {
            scheme: "x509".into(),
            id: identity.name.clone(),
        });
        if let Some(org) = &identity.institution {
            ids.push(Id {
                scheme: synod_raft_store::tenants::ORG_SCHEME.into(),
                id: org.clone(),
            });
        }
    }
    ids
}

impl Conn {
    /// Reads, decodes and dispatches requests until the client closes, misbehaves, or sends a
    /// request that ends the connection. `auth` is the connection's identities so far (those of
    /// [`initial_identities`]); `addauth` adds to them.
    pub async fn read_loop(
        &self,
        rd: crate::tls::stream::ReadHalf,
        peer: SocketAddr,
        mut auth: Arc<Vec<Id>>,
        slots: mpsc::UnboundedSender<(Slot, Held)>,
    ) -> ReaderEnd {
        let mut frames = FramedRead::with_capacity(
            rd,
            FrameCodec::new(self.node.cfg.max_frame_bytes),
            READ_BUFFER,
        );
        let permits = Arc::new(Semaphore::new(self.node.cfg.max_outstanding));
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return ReaderEnd::Stopped;
            };
            let next = match self.idle_limit {
                None => frames.next().await,
                Some(limit) => match tokio::time::timeout(limit, frames.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        tracing::info!(%peer, ?limit, "closing read-only session: client silent");
                        return ReaderEnd::ClientClosed;
                    }
                },
            };
            let frame = match next {
                Some(Ok(f)) => f,
                Some(Err(e)) => {
                    tracing::info!(%peer, %e, "closing connection: bad frame");
                    return ReaderEnd::BadFrame;
                }
                None => return ReaderEnd::ClientClosed,
            };
            let buffer = frames.read_buffer_mut();
            if buffer.is_empty() && buffer.capacity() > READ_BUFFER_KEEP {
                *buffer = bytes::BytesMut::with_capacity(READ_BUFFER);
            }
            let packet = match RequestPacket::decode(&mut Reader::new(frame.clone())) {
                Ok(p) => p,
                Err(e) => {
                    tracing::info!(%peer, %e, "closing connection: malformed request");
                    return ReaderEnd::Malformed;
                }
            };
            // One clock read per request: the session's activity, the connection's latency
            // figures and the request's metrics all start here.
            let arrived = Instant::now();
            self.node.touch_at(self.session_id, arrived);
            self.stats
                .request(packet.request.opcode().as_i32(), packet.xid, arrived);
            if auth.iter().any(|id| id.scheme == "super") {
                tracing::warn!(%peer, session = self.session_id, op = packet.request.opcode().name(), "break-glass: request as super");
            }
            let (slot, stop) = self.dispatch(packet, frame, &mut auth, arrived);
            if slots
                .send((slot, (permit, crate::admin::metrics::InFlight::new())))
                .is_err()
            {
                return ReaderEnd::Stopped;
            }
            if stop {
                return ReaderEnd::Closing;
            }
        }
    }

    /// Turns one request, read at `arrived`, into its slot; writes are proposed here, in
    /// arrival order.
    pub fn dispatch(
        &self,
        p: RequestPacket,
        frame: Bytes,
        auth: &mut Arc<Vec<Id>>,
        arrived: Instant,
    ) -> (Slot, bool) {
        let xid = p.xid;
        let ready = |err: ErrorCode, close: bool| {
            (
                Slot::Ready {
                    frame: reply_frame(xid, self.applied(), err, Response::Empty),
                    close,
                },
                close,
            )
        };
        let op = p.request.opcode();
        match p.request {
            Request::Ping => (Slot::Ping, false),
            Request::Auth(a) => {
                let id = match a.scheme.as_str() {
                    "digest" => digest_id(&a.auth).map(|id| Id {
                        scheme: "digest".into(),
                        id,
                    }),
                    _ => None,
                };
                match id {
                    Some(id) => {
                        let is_super =
                            self.node.cfg.super_digest.as_deref() == Some(id.id.as_str());
                        if !auth.contains(&id) {
                            Arc::make_mut(auth).push(id);
                        }
                        // ZooKeeper's superDigest: the digest of `super:<password>` is `super`.
                        let sup = Id {
                            scheme: "super".into(),
                            id: String::new(),
                        };
                        if is_super && !auth.contains(&sup) {
                            tracing::warn!(
                                session = self.session_id,
                                "break-glass: addauth grants the super identity"
                            );
                            Arc::make_mut(auth).push(sup);
                        }
                        // Events delivered from now on are checked against the new identities.
                        lock(&self.node.replica)
                            .observer
                            .conns
                            .set_auth(self.id, auth.clone());
                        ready(ErrorCode::Ok, false)
                    }
                    None => ready(ErrorCode::AuthFailed, true),
                }
            }
            // A read-only session: nothing that needs the quorum (see `crate::read_only`).
            Request::CloseSession if self.read_only => ready(ErrorCode::Ok, true),
            _ if self.read_only && (op.is_write() || op == synod_proto::OpCode::Sync) => {
                ready(ErrorCode::NotReadOnly, false)
            }
            Request::Reconfig(r) => {
                let done = self
                    .node
                    .start_reconfig(self.session_id, auth, r, &self.order);
                (Slot::write(xid, op, done, false, arrived), false)
            }
            Request::Sasl(_) => ready(ErrorCode::Unimplemented, false),
            Request::CloseSession => {
                lock(&self.node.replica)
                    .observer
                    .conns
                    .detach_session(self.session_id, self.id);
                let (_, done) = self.propose_close();
                (Slot::write(xid, op, done, true, arrived), true)
            }
            // A disk in its reserve: only what frees space or ends sessions goes on.
            _ if op.is_write() && self.node.disk.refuses(&p.request) => {
                ready(ErrorCode::NotReadOnly, false)
            }
            _ if op.is_write() => {
                let origin = self.node.origin();
                let cmd = Command::Write {
                    origin,
                    session_id: self.session_id,
                    time_ms: crate::clock::now_ms(),
                    auth: auth
                        .iter()
                        .map(|i| (i.scheme.clone(), i.id.clone()))
                        .collect(),
                    opcode: op.as_i32(),
                    // An exact-size copy: a slice would pin the whole read buffer it came from
                    // for as long as the tree keeps the value.
                    body: Bytes::copy_from_slice(&frame[8..]),
                };
                let done = self.node.propose_and_wait(origin, cmd, Some(&self.order));
                (Slot::write(xid, op, done, false, arrived), false)
            }
            request => (
                Slot::Read {
                    xid,
                    request: Box::new(request),
                    auth: auth.clone(),
                    arrived,
                },
                false,
            ),
        }
    }
}
