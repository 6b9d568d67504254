//! Opening a peer connection, on both ends: TCP, then mutual TLS (unless the node runs
//! `--insecure`) in which each side's certificate names its node id, then the hello — the
//! protocol version, the caller's node id (which must be the one its certificate names) and
//! each side's cluster id, so that nodes of two clusters never talk. Whatever fails here closes
//! the connection before a single request is read.

use std::sync::{Arc, PoisonError, RwLock};
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

/// The peer protocol's version; a peer speaking another is refused in the hello. Raised whenever
/// a message's encoding changes.
pub const PROTOCOL_VERSION: u32 = 1;

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
}

impl LocalPeer {
    /// A plaintext identity with an in-memory cluster id (tests of the peer layer).
    pub fn insecure(node_id: NodeId) -> Arc<LocalPeer> {
        Arc::new(LocalPeer {
            node_id,
            cluster: Arc::new(ClusterIdCell::in_memory(node_id)),
            tls: None,
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
    /// The peer speaks another protocol version.
    #[error("peer protocol version {theirs}, this node speaks {PROTOCOL_VERSION}")]
    Version {
        /// The peer's.
        theirs: u32,
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
            if hello.version != PROTOCOL_VERSION {
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
            Ok((hello.node_id, cluster_id))
        }
        .await;
        match checked {
            Ok((remote, cluster_id)) => {
                let reply = HelloReply::Welcome {
                    node_id: local.node_id,
                    cluster_id,
                };
                write_small(&mut writer, &reply).await?;
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
/// names `target`), then the hello. Bounded by [`HANDSHAKE_TIMEOUT`] (the caller bounds it
/// further by its own deadline).
pub(crate) async fn dial(
    local: &LocalPeer,
    target: NodeId,
    addr: &str,
    stream: TcpStream,
    max_frame_len: usize,
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
            version: PROTOCOL_VERSION,
            node_id: local.node_id,
            cluster_id: local.cluster.get(),
        };
        write_small(&mut writer, &hello).await?;
        match read_small::<HelloReply>(&mut frames).await? {
            HelloReply::Refused(reason) => Err(Refusal::ByPeer(reason)),
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

    #[test]
    fn the_host_of_an_address() {
        assert_eq!(host_of("127.0.0.1:7001"), "127.0.0.1");
        assert_eq!(host_of("zk1.lab.example:7001"), "zk1.lab.example");
        assert_eq!(host_of("[::1]:7001"), "::1");
        assert_eq!(host_of("node"), "node");
    }
}
