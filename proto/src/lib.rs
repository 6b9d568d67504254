//! The ZooKeeper client wire protocol (3.8/3.9): jute records, opcodes, error codes, watch types,
//! path validation and a bounded length-prefixed frame codec. This crate does no I/O; the server
//! decodes requests and encodes replies with it, the client does the reverse.
//!
//! A frame is a 4-byte big-endian length followed by one record. The handshake is a bare
//! [`records::ConnectRequest`] / [`records::ConnectResponse`]; after it every request is a
//! [`records::RequestHeader`] followed by a body chosen by its opcode ([`request::Request`]), and
//! every reply a [`records::ReplyHeader`] followed by a body chosen by the opcode of the request
//! it answers ([`response::Response`]).

pub mod code;
pub mod error;
pub mod frame;
pub mod jute;
pub mod mode;
pub mod opcode;
pub mod path;
pub mod records;
pub mod request;
pub mod response;
pub mod watch;

pub use code::ErrorCode;
pub use error::ProtoError;
pub use frame::FrameCodec;
pub use jute::{Decode, Encode, Reader};
pub use mode::CreateMode;
pub use opcode::OpCode;
pub use records::{Acl, Id, Stat};
pub use request::{MultiOp, Request, RequestPacket};
pub use response::{MultiResult, Response};
pub use watch::{AddWatchMode, EventType, KeeperState, WatcherType};

/// Special xids of the protocol (DESIGN.md §3).
pub mod xid {
    /// A watch notification sent by the server.
    pub const NOTIFICATION: i32 = -1;
    /// A ping (heartbeat) request and its reply.
    pub const PING: i32 = -2;
    /// An auth request and its reply.
    pub const AUTH: i32 = -4;
    /// A setWatches / setWatches2 request and its reply.
    pub const SET_WATCHES: i32 = -8;
}

/// The default maximum frame length: ZooKeeper's `jute.maxbuffer` (0xfffff) plus room for the
/// request header and the record framing, so that a maximal znode value still fits.
pub const DEFAULT_MAX_FRAME: usize = 0xfffff + 1024;
