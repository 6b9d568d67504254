//! Opening a peer connection, on both ends: TCP, then mutual TLS (unless the node runs
//! `--insecure`) in which each side's certificate names its node id, then the hello — the
//! protocol version, the caller's node id (which must be the one its certificate names) and
//! each side's cluster id, so that nodes of two clusters never talk. Whatever fails here closes
//! the connection before a single request is read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use synod_client::tls::{TlsConnector, TlsOptions};
use synod_raft_store::types::NodeId;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

use super::frame::{codec, decode_frame, encode_frame, BatchWriter};
use crate::data_dir::{ClusterId, ClusterIdCell, ClusterIdError};
use crate::error::ServerError;
use crate::tls::identity::CertIdentity;
use crate::tls::{ClientAuth, TlsFiles};

/// How long data sent on a peer connection may stay unacknowledged before the kernel aborts the
/// connection (`TCP_USER_TIMEOUT`). Without it, a connection that outlived a network cut keeps
/// retransmitting with exponential backoff (200 ms, 400 ms, ... 3.2 s), and its next try may
/// come seconds after the heal. The fault suite's host-partition showed the effect: the new
/// leader could not reach the old one for 2.5 s after the heal, and that node, hearing no
/// leader, started a second election. Once the connection is aborted, the next call dials
/// afresh. A busy peer still acknowledges at the TCP level, so a slow answer (a follower
/// installing a snapshot) is not cut.
pub const UNACKED_LIMIT: Duration = Duration::from_secs(2);

/// Tunes a peer connection's socket, on either end: no Nagle delay (frames are small and
/// latency-bound), and [`UNACKED_LIMIT`]. A failure is logged; the connection works without it.
pub fn tune_socket(stream: &TcpStream, peer: &dyn std::fmt::Display) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::warn!(%peer, error = %e, "cannot set TCP_NODELAY on peer connection");
    }
    if let Err(e) = set_user_timeout(stream, UNACKED_LIMIT) {
        tracing::warn!(%peer, error = %e, "cannot set TCP_USER_TIMEOUT on peer connection");
    }
}

/// Sets `TCP_USER_TIMEOUT` on `stream` (Linux).
fn set_user_timeout(stream: &TcpStream, limit: Duration) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let ms = libc::c_uint::try_from(limit.as_millis()).unwrap_or(libc::c_uint::MAX);
    // SAFETY: the descriptor is the stream's open socket for the whole call, and the option
    // value points to a c_uint that outlives it, with its size passed alongside.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            (&ms as *const libc::c_uint).cast(),
            std::mem::size_of::<libc::c_uint>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The peer protocol version this build speaks; raised whenever a message's encoding changes or
/// the build can apply a higher cluster version. The hello's version is also the highest
/// cluster version ([`synod_raft_store::types::CLUSTER_VERSION`]) the sender applies: that is how
/// the leader learns that every member can read a higher one. Version 2 (release 0.2) has the
/// messages of version 1; version 3 (release 0.3) adds the forwarded group
/// (`PeerRequest::ForwardGroup`, sent only once the cluster version is 3); version 4 (release
/// 0.4) adds the follower's read-point request with its vote (`PeerRequest::ReadIndexFollowing`,
/// sent only once the cluster version is 4); version 5 (release 0.5) adds the leader's question
/// for a follower's saved vote (`PeerRequest::SavedVote`, sent only once the cluster version is
/// 5).
pub const PROTOCOL_VERSION: u32 = 5;

/// The oldest version still spoken (release 0.1's): a hello of any version from this one to
/// [`PROTOCOL_VERSION`] is accepted, and a node that refuses our version because it is older
/// is dialled again in its own, so adjacent releases interoperate during a rolling upgrade.
pub const OLDEST_PROTOCOL_VERSION: u32 = 1;

// A build's protocol version names the cluster version it applies (see above).
const _: () = assert!(PROTOCOL_VERSION == synod_raft_store::types::CLUSTER_VERSION);

/// How long the TLS handshake and the hello may take together, on either end.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest hello or hello reply accepted (they are a few dozen bytes).
const MAX_HELLO_LEN: usize = 4096;

/// A connection's read half, plaintext or TLS.
pub(crate) type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
/// A connection's write half, plaintext or TLS.
pub(crate) type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// The TLS side of the peer port: one certificate for both directions (it is the server's
/// certificate when accepting and the client certificate when dialling), re-read by
/// [`PeerTls::reload`]; connections already open keep the material they were opened with.
pub struct PeerTls {
    /// Where the material is read from (again on every reload).
    files: TlsFiles,
    /// The node the certificate must name (`None`: not checked, for tests playing impostors).
    node_id: Option<NodeId>,
    /// What new connections use.
    current: RwLock<PeerTlsConfig>,
}

/// One reading of the peer port's material.
#[derive(Clone)]
struct PeerTlsConfig {
    /// Accepts peers whose certificate the peer CA signed (a certificate is required).
    acceptor: TlsAcceptor,
    /// Dials peers, presenting this node's certificate, trusting only the peer CA.
    connector: TlsConnector,
}

impl PeerTls {
    /// Reads this node's peer-port PEM files, refusing a certificate that does not name
    /// `node_id`: a node whose own certificate every peer would refuse should not start.
    pub fn for_node(files: &TlsFiles, node_id: NodeId) -> Result<PeerTls, ServerError> {
        Ok(PeerTls {
            files: files.clone(),
            node_id: Some(node_id),
            current: RwLock::new(read_peer_tls(files, Some(node_id))?),
        })
    }

    /// Reads PEM files as they are, whatever node (if any) the certificate names (the tests
    /// use it to play peers that must be refused).
    pub fn new(files: &TlsFiles) -> Result<PeerTls, ServerError> {
        Ok(PeerTls {
            files: files.clone(),
            node_id: None,
            current: RwLock::new(read_peer_tls(files, None)?),
        })
    }

    /// Re-reads the files (with the same check); on an error the material in force stays.
    pub fn reload(&self) -> Result<(), ServerError> {
        let fresh = read_peer_tls(&self.files, self.node_id)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(())
    }

    /// The material for the next connection.
    fn current(&self) -> PeerTlsConfig {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Reads the peer port's material; with `node_id`, the certificate must name that node.
fn read_peer_tls(files: &TlsFiles, node_id: Option<NodeId>) -> Result<PeerTlsConfig, ServerError> {
    if let Some(node_id) = node_id {
        let leaf = synod_client::tls::load_certs(&files.cert)?;
        let named = leaf
            .first()
            .map(|der| CertIdentity::from_der(der.as_ref()))
            .transpose()
            .map_err(|e| ServerError::Config(format!("{}: {e}", files.cert.display())))?
            .and_then(|identity| identity.node_id);
        if named != Some(node_id) {
            return Err(ServerError::Config(format!(
                "{} names node {named:?}, not this node ({node_id}): the peer port needs a \
                 node certificate (synod certs create-node --id {node_id})",
                files.cert.display()
            )));
        }
    }
    let acceptor = TlsAcceptor::from(crate::tls::server_config(files, ClientAuth::Required)?);
    let connector = TlsOptions::new(&files.ca)
        .identity(&files.cert, &files.key)
        .connector()?;
    Ok(PeerTlsConfig {
        acceptor,
        connector,
    })
}

/// What this node is on the peer port, shared by its peer server and its peer pool.
pub struct LocalPeer {
    /// Its node id, sent in every hello.
    pub node_id: NodeId,
    /// Its cluster id, checked (or adopted) in every hello.
    pub cluster: Arc<ClusterIdCell>,
    /// Mutual TLS, or `None` under `--insecure` (a peer's node id is then only claimed).
    pub tls: Option<PeerTls>,
    /// The protocol version each peer spoke in its latest handshake with this node.
    pub versions: PeerVersions,
}

/// The protocol version each peer spoke in its latest handshake with this node, at either end:
/// the leader raises the cluster version from them ([`crate::node`]). A peer restarted with
/// another build reconnects, so the entry follows it.
#[derive(Debug, Default)]
pub struct PeerVersions(Mutex<HashMap<NodeId, u32>>);

impl PeerVersions {
    /// Records the version `node` spoke in a handshake that succeeded.
    fn record(&self, node: NodeId, version: u32) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(node, version);
    }

    /// The version `node` spoke in its latest handshake, if it had one with this node.
    pub fn get(&self, node: NodeId) -> Option<u32> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&node)
            .copied()
    }
}

impl LocalPeer {
    /// A plaintext identity with an in-memory cluster id (tests of the peer layer).
    pub fn insecure(node_id: NodeId) -> Arc<LocalPeer> {
        Arc::new(LocalPeer {
            node_id,
            cluster: Arc::new(ClusterIdCell::in_memory(node_id)),
            tls: None,
            versions: PeerVersions::default(),
        })
    }
}

/// The first frame a dialling node sends.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Hello {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u32,
    /// Who the sender is (with TLS, it must be the id its certificate names).
    pub node_id: NodeId,
    /// The sender's cluster, if it knows it yet.
    pub cluster_id: Option<ClusterId>,
}

/// The accepting node's answer to a [`Hello`]; a refusal is followed by the close.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum HelloReply {
    /// Go ahead: who the server is and its cluster id after the check.
    Welcome {
        /// The server's node id.
        node_id: NodeId,
        /// The server's cluster id, if known.
        cluster_id: Option<ClusterId>,
    },
    /// The connection is refused, and why (logged by the dialling node).
    Refused(String),
}

/// Why a peer connection, or one request on it, was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The TLS handshake failed (no certificate, another CA, expired, not TLS at all).
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// The certificate is valid but names no node (a client certificate).
    #[error("the peer's certificate names no node id (not a node certificate)")]
    NotANode,
    /// The peer claims, or answers as, another node than its certificate names.
    #[error("the peer's certificate names node {certified} but it speaks as node {claimed}")]
    WrongNode {
        /// The id the certificate names.
        certified: NodeId,
        /// The id it claims.
        claimed: NodeId,
    },
    /// The node dialled answered as another node (a wrong address or route).
    #[error("dialled node {expected}, but node {answered} answered")]
    UnexpectedNode {
        /// The node dialled.
        expected: NodeId,
        /// The node that answered.
        answered: NodeId,
    },
    /// The node is not a member of this node's cluster configuration.
    #[error("node {0} is not a member")]
    NotAMember(NodeId),
    /// A forwarded command that no member forwards (a batch), or that claims to come from
    /// another node than its sender.
    #[error("node {from} forwarded a command it may not: {what}")]
    BadForward {
        /// The sender.
        from: NodeId,
        /// What was wrong.
        what: &'static str,
    },
    /// Cluster ids do not match, or an adopted one could not be recorded.
    #[error(transparent)]
    Cluster(#[from] ClusterIdError),
    /// The peer speaks a protocol version this node does not. The words up to the number
    /// after "this node speaks" are what release 0.1 says too: a dialling node reads them
    /// ([`older_speaker`]) to dial again in the refuser's version.
    #[error(
        "peer protocol version {theirs}, this node speaks {PROTOCOL_VERSION} (and down to \
         {OLDEST_PROTOCOL_VERSION}): upgrade one release at a time"
    )]
    Version {
        /// The peer's.
        theirs: u32,
    },
    /// The node dialled refused our version and speaks an older one we also speak: dial it
    /// again in that one.
    #[error("the peer speaks protocol version {speaks}, older than {PROTOCOL_VERSION}")]
    Older {
        /// The version to dial it in.
        speaks: u32,
    },
    /// The other end refused us (its reason).
    #[error("refused by the peer: {0}")]
    ByPeer(String),
    /// The handshake broke, timed out, or sent something that is not a hello.
    #[error("peer handshake failed: {0}")]
    Handshake(String),
}

/// A connection past its handshake: who is at the other end, and its framed halves.
pub(crate) struct Established {
    /// The node at the other end (certified under TLS, claimed under `--insecure`).
    pub remote: NodeId,
    /// Frames from the other end.
    pub frames: FramedRead<BoxRead, LengthDelimitedCodec>,
    /// Frames to the other end.
    pub writer: BatchWriter<BoxWrite>,
}

/// The node id a verified certificate chain names (its leaf's `urn:synod:node:` URI SAN).
fn certified_node(
    chain: Option<&[rustls_pki_types::CertificateDer<'_>]>,
) -> Result<NodeId, Refusal> {
    let leaf = chain.and_then(|c| c.first()).ok_or(Refusal::NotANode)?;
    CertIdentity::from_der(leaf.as_ref())
        .map_err(|e| Refusal::Tls(e.to_string()))?
        .node_id
        .ok_or(Refusal::NotANode)
}

/// Splits a stream into boxed halves with the frame codec on the read side.
fn framed<S: AsyncRead + AsyncWrite + Send + 'static>(
    stream: S,
    max_frame_len: usize,
) -> (
    FramedRead<BoxRead, LengthDelimitedCodec>,
    BatchWriter<BoxWrite>,
) {
    let (rd, wr) = tokio::io::split(stream);
    let rd: BoxRead = Box::new(rd);
    let wr: BoxWrite = Box::new(wr);
    (
        FramedRead::new(rd, codec(max_frame_len)),
        BatchWriter::new(wr),
    )
}

/// Reads one small frame of type `T`.
async fn read_small<T: serde::de::DeserializeOwned>(
    frames: &mut FramedRead<BoxRead, LengthDelimitedCodec>,
) -> Result<T, Refusal> {
    let payload = frames
        .next()
        .await
        .ok_or_else(|| Refusal::Handshake("closed during the hello".into()))?
        .map_err(|e| Refusal::Handshake(e.to_string()))?;
    if payload.len() > MAX_HELLO_LEN {
        return Err(Refusal::Handshake(format!("{}-byte hello", payload.len())));
    }
    decode_frame::<T>(&payload)
        .map(|f| f.body)
        .map_err(|e| Refusal::Handshake(format!("not a hello: {e}")))
}

/// Writes one small frame.
async fn write_small<T: Serialize>(w: &mut BatchWriter<BoxWrite>, body: &T) -> Result<(), Refusal> {
    let payload =
        encode_frame(0, body, MAX_HELLO_LEN).map_err(|e| Refusal::Handshake(e.to_string()))?;
    w.push(&payload)
        .map_err(|e| Refusal::Handshake(e.to_string()))?;
    w.flush()
        .await
        .map_err(|e| Refusal::Handshake(e.to_string()))
}

/// `handshake`, refused if it takes longer than [`HANDSHAKE_TIMEOUT`].
async fn within_handshake_timeout(
    handshake: impl std::future::Future<Output = Result<Established, Refusal>>,
) -> Result<Established, Refusal> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .unwrap_or_else(|_| Err(Refusal::Handshake("timed out".into())))
}

/// The accepting end: TLS, then the hello; a refusal after TLS is told to the peer before the
/// connection closes. Bounded by [`HANDSHAKE_TIMEOUT`].
pub(crate) async fn accept(
    local: &LocalPeer,
    stream: TcpStream,
    max_frame_len: usize,
) -> Result<Established, Refusal> {
    within_handshake_timeout(async {
        let (certified, (mut frames, mut writer)) = match &local.tls {
            Some(tls) => {
                let stream = tls
                    .current()
                    .acceptor
                    .accept(stream)
                    .await
                    .map_err(|e| Refusal::Tls(e.to_string()))?;
                let certified = certified_node(stream.get_ref().1.peer_certificates());
                (Some(certified), framed(stream, max_frame_len))
            }
            None => (None, framed(stream, max_frame_len)),
        };
        let checked = async {
            let certified = certified.transpose()?;
            let hello: Hello = read_small(&mut frames).await?;
            if !(OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&hello.version) {
                return Err(Refusal::Version {
                    theirs: hello.version,
                });
            }
            if let Some(certified) = certified {
                if certified != hello.node_id {
                    return Err(Refusal::WrongNode {
                        certified,
                        claimed: hello.node_id,
                    });
                }
            }
            let cluster_id = local.cluster.accept(hello.cluster_id)?;
            Ok((hello.node_id, cluster_id, hello.version))
        }
        .await;
        match checked {
            Ok((remote, cluster_id, version)) => {
                let reply = HelloReply::Welcome {
                    node_id: local.node_id,
                    cluster_id,
                };
                write_small(&mut writer, &reply).await?;
                local.versions.record(remote, version);
                Ok(Established {
                    remote,
                    frames,
                    writer,
                })
            }
            Err(refusal) => {
                // Best effort: the dialling node logs why; the connection closes either way.
                let _ = write_small(&mut writer, &HelloReply::Refused(refusal.to_string())).await;
                Err(refusal)
            }
        }
    })
    .await
}

/// The dialling end: TLS (verifying the server's certificate for the host dialled and that it
/// names `target`), then the hello in protocol version `speak`. Bounded by
/// [`HANDSHAKE_TIMEOUT`] (the caller bounds it further by its own deadline). A node that
/// refuses `speak` because it speaks an older version we also speak is [`Refusal::Older`]: the
/// caller dials again in that version.
pub(crate) async fn dial(
    local: &LocalPeer,
    target: NodeId,
    addr: &str,
    stream: TcpStream,
    max_frame_len: usize,
    speak: u32,
) -> Result<Established, Refusal> {
    within_handshake_timeout(async {
        let (mut frames, mut writer) = match &local.tls {
            Some(tls) => {
                let stream = tls
                    .current()
                    .connector
                    .connect(host_of(addr), stream)
                    .await
                    .map_err(|e| Refusal::Tls(e.to_string()))?;
                let certified = certified_node(stream.get_ref().1.peer_certificates())?;
                if certified != target {
                    return Err(Refusal::UnexpectedNode {
                        expected: target,
                        answered: certified,
                    });
                }
                framed(stream, max_frame_len)
            }
            None => framed(stream, max_frame_len),
        };
        let hello = Hello {
            version: speak,
            node_id: local.node_id,
            cluster_id: local.cluster.get(),
        };
        write_small(&mut writer, &hello).await?;
        match read_small::<HelloReply>(&mut frames).await? {
            HelloReply::Refused(reason) => match older_speaker(&reason, speak) {
                Some(speaks) => Err(Refusal::Older { speaks }),
                None => Err(Refusal::ByPeer(reason)),
            },
            HelloReply::Welcome {
                node_id,
                cluster_id,
            } => {
                if node_id != target {
                    return Err(Refusal::UnexpectedNode {
                        expected: target,
                        answered: node_id,
                    });
                }
                local.cluster.accept(cluster_id)?;
                local.versions.record(node_id, speak);
                Ok(Established {
                    remote: node_id,
                    frames,
                    writer,
                })
            }
        }
    })
    .await
}

/// The version a peer that refused our hello in version `sent` speaks, if its reason says it
/// refused that version for an older one that we speak too (release 0.1 and later say "peer
/// protocol version SENT, this node speaks THEIRS").
fn older_speaker(reason: &str, sent: u32) -> Option<u32> {
    let rest = reason.strip_prefix(&format!("peer protocol version {sent}, this node speaks "))?;
    let digits = rest.split(|c: char| !c.is_ascii_digit()).next()?;
    let theirs: u32 = digits.parse().ok()?;
    (OLDEST_PROTOCOL_VERSION..sent)
        .contains(&theirs)
        .then_some(theirs)
}

/// The host part of `host:port` (an IPv6 literal without its brackets), as the server's
/// certificate must name it.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::host_of;

    /// Reads `TCP_USER_TIMEOUT` back, in milliseconds.
    fn user_timeout_ms(stream: &tokio::net::TcpStream) -> libc::c_uint {
        use std::os::fd::AsRawFd;
        let mut ms: libc::c_uint = 0;
        let mut len = std::mem::size_of::<libc::c_uint>() as libc::socklen_t;
        // SAFETY: the descriptor is the stream's open socket; `ms` and `len` outlive the call
        // and `len` holds the size of `ms`.
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_USER_TIMEOUT,
                (&mut ms as *mut libc::c_uint).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "getsockopt: {}", std::io::Error::last_os_error());
        ms
    }

    #[tokio::test]
    async fn a_tuned_peer_socket_gives_up_on_unacknowledged_data_within_the_limit() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (dialled, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let dialled = dialled.expect("connect");
        let (accepted, _) = accepted.expect("accept");
        for stream in [&dialled, &accepted] {
            assert_eq!(user_timeout_ms(stream), 0, "the kernel's default: no limit");
            super::tune_socket(stream, &"test");
            assert_eq!(
                u128::from(user_timeout_ms(stream)),
                super::UNACKED_LIMIT.as_millis()
            );
            assert!(stream.nodelay().expect("nodelay"));
        }
    }

    #[test]
    fn an_older_peer_is_dialled_again_in_its_version() {
        use super::{older_speaker, Refusal};
        // What release 0.1 answers to a hello of version 2, and release 0.2 to one of 3.
        assert_eq!(
            older_speaker("peer protocol version 2, this node speaks 1", 2),
            Some(1)
        );
        assert_eq!(
            older_speaker("peer protocol version 3, this node speaks 2", 3),
            Some(2)
        );
        // What this release answers to a hello of a version it does not speak.
        let next = super::PROTOCOL_VERSION + 1;
        let ours = Refusal::Version { theirs: next }.to_string();
        assert_eq!(older_speaker(&ours, next), Some(super::PROTOCOL_VERSION));
        // Nothing else is read as a version: another refusal, a newer or an unknown version.
        assert_eq!(older_speaker("node 4 is not a member", 2), None);
        assert_eq!(
            older_speaker("peer protocol version 2, this node speaks 3", 2),
            None
        );
        assert_eq!(
            older_speaker("peer protocol version 2, this node speaks 0", 2),
            None
        );
    }

    #[test]
    fn the_host_of_an_address() {
        assert_eq!(host_of("127.0.0.1:7001"), "127.0.0.1");
        assert_eq!(host_of("zk1.lab.example:7001"), "zk1.lab.example");
        assert_eq!(host_of("[::1]:7001"), "::1");
        assert_eq!(host_of("node"), "node");
    }
}
