//! The length-prefixed frame codec: a 4-byte big-endian length, then that many bytes. The length
//! is checked against the configured maximum before anything is buffered, so a peer cannot make
//! the receiver allocate more than `max_frame` bytes for one frame.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::ProtoError;
use crate::jute::Encode;

/// Splits a byte stream into frames, and writes records as frames.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    /// The largest frame body accepted, in bytes. Larger frames are a decoding error.
    max_frame: usize,
}

impl FrameCodec {
    pub fn new(max_frame: usize) -> Self {
        Self { max_frame }
    }

    pub fn max_frame(&self) -> usize {
        self.max_frame
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new(crate::DEFAULT_MAX_FRAME)
    }
}

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = ProtoError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, ProtoError> {
        if src.len() < 4 {
            return Ok(None);
        }
        let len = i32::from_be_bytes([src[0], src[1], src[2], src[3]]);
        if len < 0 || len as usize > self.max_frame {
            return Err(ProtoError::FrameTooLarge {
                len: len.into(),
                max: self.max_frame,
            });
        }
        let len = len as usize;
        if src.len() < 4 + len {
            src.reserve(4 + len - src.len());
            return Ok(None);
        }
        src.advance(4);
        Ok(Some(src.split_to(len).freeze()))
    }
}

/// Appends `value` to `dst` as one frame (length prefix patched in after encoding).
pub fn encode_frame<T: Encode + ?Sized>(value: &T, dst: &mut BytesMut) {
    let start = dst.len();
    dst.put_i32(0);
    value.encode(dst);
    let len = (dst.len() - start - 4) as i32;
    dst[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

impl<T: Encode> Encoder<&T> for FrameCodec {
    type Error = ProtoError;

    fn encode(&mut self, item: &T, dst: &mut BytesMut) -> Result<(), ProtoError> {
        encode_frame(item, dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::RequestHeader;
    use proptest::prelude::*;

    #[test]
    fn frames_round_trip_and_wait_for_more() {
        let mut codec = FrameCodec::new(64);
        let mut buf = BytesMut::new();
        codec
            .encode(&RequestHeader { xid: 7, op: 4 }, &mut buf)
            .unwrap();
        assert_eq!(buf.len(), 12);
        let mut partial = BytesMut::from(&buf[..6]);
        assert!(codec.decode(&mut partial).unwrap().is_none());
        partial.extend_from_slice(&buf[6..]);
        let frame = codec.decode(&mut partial).unwrap().unwrap();
        assert_eq!(&frame[..], &buf[4..]);
        assert!(partial.is_empty());
    }

    #[test]
    fn bad_lengths_are_refused_before_buffering() {
        for len in [-1i32, i32::MAX, 65] {
            let mut codec = FrameCodec::new(64);
            let mut buf = BytesMut::from(&len.to_be_bytes()[..]);
            assert!(
                matches!(
                    codec.decode(&mut buf),
                    Err(ProtoError::FrameTooLarge { .. })
                ),
                "{len}"
            );
            assert!(buf.capacity() < 1024);
        }
        let mut codec = FrameCodec::new(64);
        let mut buf = BytesMut::from(&64i32.to_be_bytes()[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
    }

    proptest! {
        #[test]
        fn arbitrary_streams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut codec = FrameCodec::new(128);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(frame)) = codec.decode(&mut buf) {
                let _ = crate::jute::from_bytes::<crate::request::RequestPacket>(frame);
            }
        }
    }
}
