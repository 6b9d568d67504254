//! Jute, ZooKeeper's serialization: big-endian `int`/`long`, one-byte `boolean`, length-prefixed
//! `ustring`/`buffer` (length -1 is null) and count-prefixed `vector`. Decoding is bounded: a
//! length or count is checked against the bytes left before anything is allocated.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::ProtoError;

/// Writes a value in jute form. Encoding cannot fail: every value of these types has a form.
pub trait Encode {
    fn encode(&self, buf: &mut BytesMut);
}

/// Reads a value in jute form from a bounded [`Reader`].
pub trait Decode: Sized {
    fn decode(r: &mut Reader) -> Result<Self, ProtoError>;
}

/// A cursor over one frame's bytes. Buffers are split off without copying.
#[derive(Debug, Clone)]
pub struct Reader {
    /// The bytes not yet consumed; never grows, so every length check is against this frame only.
    buf: Bytes,
}

impl Reader {
    pub fn new(buf: Bytes) -> Self {
        Self { buf }
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// True when the whole frame has been consumed.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn need(&self, n: usize) -> Result<(), ProtoError> {
        if self.buf.len() < n {
            Err(ProtoError::Truncated {
                needed: n,
                left: self.buf.len(),
            })
        } else {
            Ok(())
        }
    }

    pub fn read_i32(&mut self) -> Result<i32, ProtoError> {
        self.need(4)?;
        Ok(self.buf.get_i32())
    }

    pub fn read_i64(&mut self) -> Result<i64, ProtoError> {
        self.need(8)?;
        Ok(self.buf.get_i64())
    }

    pub fn read_bool(&mut self) -> Result<bool, ProtoError> {
        self.need(1)?;
        Ok(self.buf.get_u8() != 0)
    }

    /// Reads a length prefix: `None` for null (-1), an error for other negatives or a length
    /// larger than what is left, so that no allocation is ever sized by an untrusted number.
    fn read_len(&mut self, unit: usize) -> Result<Option<usize>, ProtoError> {
        let len = self.read_i32()?;
        if len == -1 {
            return Ok(None);
        }
        if len < 0 {
            return Err(ProtoError::NegativeLength(len));
        }
        let len = len as usize;
        if len.saturating_mul(unit) > self.buf.len() {
            return Err(ProtoError::LengthTooLarge {
                len,
                left: self.buf.len(),
            });
        }
        Ok(Some(len))
    }

    /// A jute `buffer`; null decodes as empty.
    pub fn read_buffer(&mut self) -> Result<Bytes, ProtoError> {
        match self.read_len(1)? {
            None => Ok(Bytes::new()),
            Some(n) => Ok(self.buf.split_to(n)),
        }
    }

    /// A jute `ustring`; null decodes as empty.
    pub fn read_string(&mut self) -> Result<String, ProtoError> {
        let b = self.read_buffer()?;
        String::from_utf8(b.to_vec()).map_err(|_| ProtoError::InvalidUtf8)
    }

    /// A jute `vector`; null decodes as empty. Every element takes at least one byte, so the
    /// count is bounded by the bytes left before the vector is allocated.
    pub fn read_vec<T: Decode>(&mut self) -> Result<Vec<T>, ProtoError> {
        match self.read_len(1)? {
            None => Ok(Vec::new()),
            Some(n) => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(T::decode(self)?);
                }
                Ok(v)
            }
        }
    }
}

pub fn write_buffer(buf: &mut BytesMut, b: &[u8]) {
    buf.put_i32(b.len() as i32);
    buf.put_slice(b);
}

impl Encode for i32 {
    fn encode(&self, buf: &mut BytesMut) {
        buf.put_i32(*self);
    }
}
impl Decode for i32 {
    fn decode(r: &mut Reader) -> Result<Self, ProtoError> {
        r.read_i32()
    }
}
impl Encode for i64 {
    fn encode(&self, buf: &mut BytesMut) {
        buf.put_i64(*self);
    }
}
impl Decode for i64 {
    fn decode(r: &mut Reader) -> Result<Self, ProtoError> {
        r.read_i64()
    }
}
impl Encode for bool {
    fn encode(&self, buf: &mut BytesMut) {
        buf.put_u8(u8::from(*self));
    }
}
impl Decode for bool {
    fn decode(r: &mut Reader) -> Result<Self, ProtoError> {
        r.read_bool()
    }
}
impl Encode for String {
    fn encode(&self, buf: &mut BytesMut) {
        write_buffer(buf, self.as_bytes());
    }
}
impl Decode for String {
    fn decode(r: &mut Reader) -> Result<Self, ProtoError> {
        r.read_string()
    }
}
impl Encode for Bytes {
    fn encode(&self, buf: &mut BytesMut) {
        write_buffer(buf, self);
    }
}
impl Decode for Bytes {
    fn decode(r: &mut Reader) -> Result<Self, ProtoError> {
        r.read_buffer()
    }
}
/// A jute `buffer` that may be null (length -1): a znode's data, which ZooKeeper keeps
/// distinct from an empty one.
impl Encode for Option<Bytes> {
    fn encode(&self, buf: &mut BytesMut) {
        match self {
            Some(b) => write_buffer(buf, b),
            None => buf.put_i32(-1),
        }
    }
}
impl Decode for Option<Bytes> {
    fn decode(r: &mut Reader) -> Result<Self, ProtoError> {
        Ok(r.read_len(1)?.map(|n| r.buf.split_to(n)))
    }
}
/// A jute `ustring` that may be null (length -1): ZooKeeper tells an absent argument from an
/// empty one (a `reconfig`'s server lists).
impl Encode for Option<String> {
    fn encode(&self, buf: &mut BytesMut) {
        match self {
            Some(s) => write_buffer(buf, s.as_bytes()),
            None => buf.put_i32(-1),
        }
    }
}
impl Decode for Option<String> {
    fn decode(r: &mut Reader) -> Result<Self, ProtoError> {
        match r.read_len(1)? {
            None => Ok(None),
            Some(n) => String::from_utf8(r.buf.split_to(n).to_vec())
                .map(Some)
                .map_err(|_| ProtoError::InvalidUtf8),
        }
    }
}
impl<T: Encode> Encode for Vec<T> {
    fn encode(&self, buf: &mut BytesMut) {
        buf.put_i32(self.len() as i32);
        for x in self {
            x.encode(buf);
        }
    }
}
impl<T: Decode> Decode for Vec<T> {
    fn decode(r: &mut Reader) -> Result<Self, ProtoError> {
        r.read_vec()
    }
}

/// Encodes a value into a fresh buffer (tests, one-off records).
pub fn to_bytes<T: Encode + ?Sized>(v: &T) -> Bytes {
    let mut b = BytesMut::new();
    v.encode(&mut b);
    b.freeze()
}

/// Decodes one value that must fill `bytes` exactly.
pub fn from_bytes<T: Decode>(bytes: Bytes) -> Result<T, ProtoError> {
    let mut r = Reader::new(bytes);
    T::decode(&mut r)
}

/// Declares a jute record: a struct whose fields are encoded in declaration order.
macro_rules! jute_record {
    ($(#[$m:meta])* pub struct $name:ident { $( $(#[$fm:meta])* pub $f:ident : $t:ty ),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name { $( $(#[$fm])* pub $f: $t ),* }

        impl $crate::jute::Encode for $name {
            #[allow(unused_variables)]
            fn encode(&self, buf: &mut bytes::BytesMut) {
                $( $crate::jute::Encode::encode(&self.$f, buf); )*
            }
        }

        impl $crate::jute::Decode for $name {
            #[allow(unused_variables)]
            fn decode(r: &mut $crate::jute::Reader) -> Result<Self, $crate::error::ProtoError> {
                Ok(Self { $( $f: <$t as $crate::jute::Decode>::decode(r)? ),* })
            }
        }

        #[cfg(test)]
        impl $crate::jute::arb::Arb for $name {
            fn arb() -> proptest::strategy::BoxedStrategy<Self> {
                use proptest::strategy::Strategy;
                ( $( <$t as $crate::jute::arb::Arb>::arb(), )* )
                    .prop_map(|( $( $f, )* )| Self { $( $f ),* })
                    .boxed()
            }
        }
    };
}
pub(crate) use jute_record;

/// Strategies for property tests: every jute type can produce arbitrary values of itself.
#[cfg(test)]
pub(crate) mod arb {
    use bytes::Bytes;
    use proptest::prelude::*;

    pub trait Arb: Sized + std::fmt::Debug {
        fn arb() -> BoxedStrategy<Self>;
    }
    impl Arb for i32 {
        fn arb() -> BoxedStrategy<Self> {
            any::<i32>().boxed()
        }
    }
    impl Arb for i64 {
        fn arb() -> BoxedStrategy<Self> {
            any::<i64>().boxed()
        }
    }
    impl Arb for bool {
        fn arb() -> BoxedStrategy<Self> {
            any::<bool>().boxed()
        }
    }
    impl Arb for String {
        fn arb() -> BoxedStrategy<Self> {
            ".{0,12}".boxed()
        }
    }
    impl Arb for Bytes {
        fn arb() -> BoxedStrategy<Self> {
            proptest::collection::vec(any::<u8>(), 0..24)
                .prop_map(Bytes::from)
                .boxed()
        }
    }
    impl Arb for Option<Bytes> {
        fn arb() -> BoxedStrategy<Self> {
            proptest::option::of(Bytes::arb()).boxed()
        }
    }
    impl Arb for Option<String> {
        fn arb() -> BoxedStrategy<Self> {
            proptest::option::of(String::arb()).boxed()
        }
    }
    impl<T: Arb + 'static> Arb for Vec<T> {
        fn arb() -> BoxedStrategy<Self> {
            proptest::collection::vec(T::arb(), 0..4).boxed()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_buffer_and_vector_decode_as_empty() {
        let mut b = BytesMut::new();
        b.put_i32(-1);
        b.put_i32(-1);
        let mut r = Reader::new(b.freeze());
        assert!(r.read_buffer().unwrap().is_empty());
        assert!(r.read_vec::<i32>().unwrap().is_empty());
        assert!(r.is_empty());
    }

    #[test]
    fn oversized_lengths_are_errors_not_allocations() {
        for len in [i32::MAX, 5, -2] {
            let mut b = BytesMut::new();
            b.put_i32(len);
            b.put_slice(b"abcd");
            let mut r = Reader::new(b.freeze());
            assert!(r.read_buffer().is_err(), "len {len}");
            let mut b = BytesMut::new();
            b.put_i32(len);
            let mut r = Reader::new(b.freeze());
            assert!(r.read_vec::<String>().is_err(), "count {len}");
        }
    }

    #[test]
    fn truncated_int_is_an_error() {
        let mut r = Reader::new(Bytes::from_static(&[0, 0, 1]));
        assert!(matches!(
            r.read_i32(),
            Err(ProtoError::Truncated { needed: 4, left: 3 })
        ));
    }
}
