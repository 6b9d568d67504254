//! The crate's one error type: why a frame or record could not be decoded.

/// A decoding or framing failure. Every variant means the peer sent bytes that are not a valid
/// ZooKeeper record; the receiver should drop the connection with this as the logged reason.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The record needs more bytes than the frame holds.
    #[error("truncated record: needed {needed} more bytes, {left} left")]
    Truncated { needed: usize, left: usize },
    /// A length or count field is negative (other than -1 where null is allowed).
    #[error("negative length {0}")]
    NegativeLength(i32),
    /// A length or element count is larger than the bytes left in the frame.
    #[error("length {len} exceeds the {left} bytes left in the frame")]
    LengthTooLarge { len: usize, left: usize },
    /// A frame's length prefix is over the configured maximum (or negative).
    #[error("frame length {len} outside 0..={max}")]
    FrameTooLarge { len: i64, max: usize },
    /// A string field is not UTF-8.
    #[error("string is not valid utf-8")]
    InvalidUtf8,
    /// A request carries an opcode this protocol does not define.
    #[error("unknown opcode {0}")]
    UnknownOpcode(i32),
    /// A field holds a value outside its domain (e.g. a multi op that a multi may not contain).
    #[error("invalid {what}: {value}")]
    InvalidValue { what: &'static str, value: i64 },
    /// An I/O error surfaced through the tokio-util codec traits.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}
