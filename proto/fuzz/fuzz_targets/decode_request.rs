//! Feeds arbitrary bytes to the server's side of the protocol: the frame codec, then the
//! handshake record for the first frame and request packets for the rest. Nothing may panic or
//! allocate beyond the frame limit.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use synod_proto::jute::from_bytes;
use synod_proto::records::ConnectRequest;
use synod_proto::{FrameCodec, RequestPacket};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut codec = FrameCodec::new(64 * 1024);
    let mut buf = BytesMut::from(data);
    let mut first = true;
    while let Ok(Some(frame)) = codec.decode(&mut buf) {
        if first {
            let _ = from_bytes::<ConnectRequest>(frame);
            first = false;
        } else {
            let _ = from_bytes::<RequestPacket>(frame);
        }
    }
});
