//! Peer frame encoding and decoding, and the batching frame writer both sides use.

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use synod_raft_store::types::{decode_bounded, encode};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::codec::LengthDelimitedCodec;

use super::PeerError;

/// The default maximum length of a frame's payload (the bytes after the length prefix), and the
/// most a pool or a server may be configured with ([`clamp_max_frame_len`]).
pub const DEFAULT_MAX_FRAME_LEN: usize = 64 * 1024 * 1024;

/// What decoding one frame may claim ([`decode_bounded`]): 16 bytes for each byte of a payload of
/// the largest length, since one byte of varint decodes into at most 16 bytes (a `u128`). No frame
/// a peer may send is refused for it, and none can make this node allocate more than 1 GiB for
/// its lengths, however large the lengths it announces.
const FRAME_CLAIM_LIMIT: usize = 16 * DEFAULT_MAX_FRAME_LEN;

/// Bytes of the length prefix.
const HEADER_LEN: usize = 4;

/// A writer stops draining its queue into the current batch once the batch is this large, so one
/// write is not unboundedly large; a single bigger frame still goes out whole.
const BATCH_SOFT_LIMIT: usize = 1024 * 1024;

/// A batch buffer that grew beyond this (for a large frame) is released after the write instead
/// of being kept for the life of the connection.
const RETAINED_BUF_CAP: usize = 4 * 1024 * 1024;

/// One frame's payload: a request or response body and the id that matches them.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Frame<B> {
    /// Chosen by the caller, echoed by the server, so pipelined responses find their calls.
    pub id: u64,
    /// A `PeerRequest` or `PeerResponse`.
    pub body: B,
}

/// Clamps a configured maximum frame length to [`DEFAULT_MAX_FRAME_LEN`] (so that no frame
/// reaches [`FRAME_CLAIM_LIMIT`]; it is also below what the 4-byte prefix can express), and to at
/// least one byte, so a zero does not reject every frame.
pub(crate) fn clamp_max_frame_len(max: usize) -> usize {
    max.clamp(1, DEFAULT_MAX_FRAME_LEN)
}

/// The decoder for incoming frames: a frame whose prefix announces more than `max_frame_len`
/// bytes is an error as soon as the prefix is read, before anything of it is buffered.
pub(crate) fn codec(max_frame_len: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_offset(0)
        .length_field_length(HEADER_LEN)
        .length_adjustment(0)
        .num_skip(HEADER_LEN)
        .big_endian()
        .max_frame_length(max_frame_len)
        .new_codec()
}

/// Encodes a frame's payload (without the length prefix), refusing one longer than `max`.
pub(crate) fn encode_frame<B: Serialize>(id: u64, body: B, max: usize) -> Result<Bytes, PeerError> {
    let payload = encode(&Frame { id, body })
        .map_err(|e| PeerError::Codec(format!("cannot encode frame: {e}")))?;
    if payload.len() > max {
        return Err(PeerError::TooLarge {
            len: payload.len(),
            max,
        });
    }
    Ok(Bytes::from(payload))
}

/// Decodes a frame's payload; the value must fill it exactly. A length inside it that a frame
/// cannot hold is an error before anything is allocated for it ([`FRAME_CLAIM_LIMIT`]): the peer
/// loses its connection, the node nothing.
pub(crate) fn decode_frame<B: DeserializeOwned>(
    payload: &[u8],
) -> Result<Frame<B>, bincode::error::DecodeError> {
    decode_bounded::<_, FRAME_CLAIM_LIMIT>(payload)
}

/// Writes length-prefixed frames, several per write: the owner pushes what is queued, then
/// flushes once.
pub(crate) struct BatchWriter<W> {
    /// The socket's write half.
    wr: W,
    /// The frames pushed since the last flush, prefixes included.
    buf: BytesMut,
}

impl<W: AsyncWrite + Unpin> BatchWriter<W> {
    pub(crate) fn new(wr: W) -> Self {
        BatchWriter {
            wr,
            buf: BytesMut::new(),
        }
    }

    /// Appends one frame (its payload was checked against the maximum when it was encoded).
    pub(crate) fn push(&mut self, payload: &[u8]) -> std::io::Result<()> {
        let len = u32::try_from(payload.len()).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "frame longer than u32::MAX",
            )
        })?;
        self.buf.reserve(HEADER_LEN + payload.len());
        self.buf.put_u32(len);
        self.buf.extend_from_slice(payload);
        Ok(())
    }

    /// Whether the batch is large enough to be written without draining more of the queue.
    pub(crate) fn is_full(&self) -> bool {
        self.buf.len() >= BATCH_SOFT_LIMIT
    }

    /// Writes the batch in one go, and returns once it is all on the socket: a TLS stream
    /// accepts the last bytes of a write into its own buffer when the socket would block, and
    /// sends them only when polled again, so it is flushed as well (for TCP that is free).
    /// Without it, a request or response could wait there until the next frame on the
    /// connection, which for an AppendEntries awaiting its response never comes.
    pub(crate) async fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.wr.write_all(&self.buf).await?;
        self.wr.flush().await?;
        self.buf.clear();
        if self.buf.capacity() > RETAINED_BUF_CAP {
            self.buf = BytesMut::new();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::StreamExt;
    use rustls_pki_types::ServerName;
    use synod_client::tls::TlsOptions;
    use tokio_util::codec::FramedRead;

    use super::{codec, decode_frame, BatchWriter, Frame};
    use crate::peer::transport::BoxWrite;
    use crate::tls::certs::{create_ca, issue, Subject, Validity};
    use crate::tls::{server_config, ClientAuth, TlsFiles};

    /// A frame whose string announces 2^60 bytes is a decode error before anything is allocated
    /// for it (bincode allocates a string's bytes before it reads them, and an allocation of that
    /// size aborts the process); a frame of the largest length still decodes.
    #[test]
    fn a_length_no_frame_can_hold_is_refused_before_it_is_allocated() {
        let mut hostile = vec![0u8]; // the id, 0
        hostile.push(0xfd); // bincode's varint: a u64 follows, little-endian
        hostile.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(matches!(
            decode_frame::<String>(&hostile),
            Err(bincode::error::DecodeError::LimitExceeded)
        ));
        // The largest frame of the smallest values claims the most: 8 bytes per byte.
        let body = vec![1u64; super::DEFAULT_MAX_FRAME_LEN - 16];
        let payload = synod_raft_store::types::encode(&Frame { id: 7, body }).expect("encode");
        assert!(payload.len() <= super::DEFAULT_MAX_FRAME_LEN);
        let back = decode_frame::<Vec<u64>>(&payload).expect("decode");
        assert_eq!(
            (back.id, back.body.len()),
            (7, super::DEFAULT_MAX_FRAME_LEN - 16)
        );
    }

    /// A frame written over TLS onto a link that is full (a peer that reads slower than we
    /// write) reaches the other end whole once the other end reads, with nothing written after
    /// it: the writer's flush leaves nothing in the TLS stream's buffer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_frame_over_tls_arrives_whole_with_nothing_written_after_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = create_ca("test CA", Validity::days(1)).expect("CA");
        let (ca_crt, _) = ca.write(dir.path(), "ca").expect("write");
        let node = Subject::Node {
            id: 1,
            hosts: vec!["127.0.0.1".into()],
        };
        let (crt, key) = issue(&ca, &node, Validity::days(1))
            .expect("node cert")
            .write(dir.path(), "node1")
            .expect("write");
        let files = TlsFiles {
            ca: ca_crt.clone(),
            cert: crt.clone(),
            key: key.clone(),
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(
            server_config(&files, ClientAuth::Required).expect("server config"),
        );
        let connector = tokio_rustls::TlsConnector::from(
            TlsOptions::new(&ca_crt)
                .identity(&crt, &key)
                .client_config()
                .expect("client config"),
        );
        // A link of 4 KiB: a write of more blocks until the other end reads.
        let (near, far) = tokio::io::duplex(4096);
        let name = ServerName::try_from("127.0.0.1").expect("name");
        let (client, server) = tokio::join!(connector.connect(name, near), acceptor.accept(far));
        let (client, server) = (client.expect("client handshake"), server.expect("accept"));

        let frame: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let sent = frame.clone();
        let writer = tokio::spawn(async move {
            let (_read, write) = tokio::io::split(client);
            let write: BoxWrite = Box::new(write);
            let mut w = BatchWriter::new(write);
            w.push(&sent).expect("push");
            w.flush().await.expect("flush");
            // Kept open (and idle) until the reader is done: nothing else is ever written.
            std::future::pending::<()>().await;
        });
        // Let the writer fill the link first.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (read, _write) = tokio::io::split(server);
        let mut frames = FramedRead::new(read, codec(2 << 20));
        let got = tokio::time::timeout(Duration::from_secs(10), frames.next())
            .await
            .expect("the whole frame arrives without another write")
            .expect("a frame")
            .expect("read");
        assert_eq!(got.len(), frame.len());
        assert!(got[..] == frame[..], "the frame arrives intact");
        writer.abort();
    }
}
