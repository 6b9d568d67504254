//! A connection accepted on one of the node's ports ([`ServerStream`]: plaintext TCP or TLS over
//! it) and the server side of a TLS handshake ([`accept`]), bounded in time, that yields the
//! identity the client's certificate names. The client listener and the admin listener share
//! both.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::tls::identity::{CertIdentity, IdentityError};

/// How long a client has to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a TLS handshake gave no connection.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The handshake failed: no certificate where one is required, one the CA did not sign, an
    /// expired one, not TLS at all.
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    /// The client did not complete the handshake within [`HANDSHAKE_TIMEOUT`].
    #[error("no TLS handshake within {HANDSHAKE_TIMEOUT:?}")]
    Timeout,
    /// The certificate is valid but names no identity.
    #[error("the certificate names no identity: {0}")]
    Identity(#[from] IdentityError),
}

/// The TLS handshake of an accepted connection, bounded by [`HANDSHAKE_TIMEOUT`]: the stream and
/// the identity its client certificate names (`None`: it presented none, where that is allowed).
pub async fn accept(
    tls: &TlsAcceptor,
    stream: TcpStream,
) -> Result<(ServerStream, Option<CertIdentity>), AcceptError> {
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream))
        .await
        .map_err(|_| AcceptError::Timeout)?
        .map_err(AcceptError::Handshake)?;
    let identity = CertIdentity::of_session(stream.get_ref().1).transpose()?;
    Ok((ServerStream::Tls(Box::new(stream)), identity))
}

/// A connection accepted on one of the node's ports: plaintext TCP, or TLS over it.
pub enum ServerStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// The reading half of a [`ServerStream`].
pub type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// The writing half of a [`ServerStream`]; a TLS half holds records back until flushed.
pub type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

impl ServerStream {
    /// Splits the stream for the reader and the writer (plaintext without a lock between them).
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            ServerStream::Plain(s) => {
                let (rd, wr) = s.into_split();
                (Box::new(rd), Box::new(wr))
            }
            ServerStream::Tls(s) => {
                let (rd, wr) = tokio::io::split(*s);
                (Box::new(rd), Box::new(wr))
            }
        }
    }
}

impl AsyncRead for ServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
