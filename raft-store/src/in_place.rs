//! Decoding that reads every string and byte string in place in its input, so that no length an
//! input claims is allocated before its bytes are there ([`Decoded`], used by every decode of
//! [`crate::types`]).
//!
//! bincode 2 decodes a serde `String`, `Vec<u8>` buffer or `Bytes` (`deserialize_string`,
//! `deserialize_byte_buf`) by reading its length and allocating that many bytes before it reads
//! one: ten bytes announcing a string of 2^60 bytes make the process ask for 2^60 bytes, and a
//! failed allocation aborts it, whatever the input's own length. Its borrowed forms
//! (`deserialize_str`, `deserialize_bytes`) instead take the bytes from the input slice, and a
//! length beyond what is left is `UnexpectedEnd`. [`InPlace`] wraps bincode's deserializer and
//! asks for the borrowed form wherever the owned one is asked for, at every depth: a `String` or
//! `Bytes` is then copied from its bytes in the input (serde's visitors accept a borrowed string
//! for an owned one), never larger than the input. The bytes decoded are the same.
//!
//! What else a length can size is already bounded: serde preallocates a sequence or a map for
//! at most 1 MiB of elements whatever length is announced (`size_hint::cautious`), and grows it
//! as elements are actually read. What no length sizes, how deep values nest in one another, is
//! bounded here too ([`MAX_DEPTH`]).

use std::fmt;

use serde::de::{
    DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};
use serde::Deserialize;

/// How deep one value may nest in another (a sequence's elements, a struct's fields, an enum's
/// payload, an option's value: one level each) before decoding stops with an error. A type that
/// holds itself (a batch of commands, an error and its source) could otherwise be nested by its
/// input until the decoder's recursion overflows the stack, which aborts the process: about two
/// bytes a level, millions of levels in one peer frame. synod's deepest value, an
/// AppendEntries of a batch of writes, nests under 20; serde_json's limit is the same 128.
pub(crate) const MAX_DEPTH: u32 = 128;

/// A value decoded through [`InPlace`]: decoding `Decoded<T>` decodes a `T` from the same bytes.
pub(crate) struct Decoded<T>(pub(crate) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Decoded<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(InPlace { inner: d, depth: 0 }).map(Decoded)
    }
}

/// A deserializer, visitor, access or seed of serde's, wrapped so that whatever it hands on is
/// wrapped too, every owned string or byte string is asked for borrowed (see the module), and
/// nesting deeper than [`MAX_DEPTH`] is an error.
struct InPlace<X> {
    /// What is wrapped.
    inner: X,
    /// How deep the value it decodes is nested: checked against [`MAX_DEPTH`] wherever a nested
    /// value's deserializer is made (a seed's `deserialize`, `visit_some`,
    /// `visit_newtype_struct`: the only ways serde recurses).
    depth: u32,
}

impl<X> InPlace<X> {
    /// `inner` at this one's depth.
    fn same<Y>(&self, inner: Y) -> InPlace<Y> {
        InPlace {
            inner,
            depth: self.depth,
        }
    }

    /// `inner` one level deeper than this one.
    fn deeper<Y>(&self, inner: Y) -> InPlace<Y> {
        InPlace {
            inner,
            depth: self.depth + 1,
        }
    }

    /// An error if this one is deeper than [`MAX_DEPTH`].
    fn check<E: serde::de::Error>(&self) -> Result<(), E> {
        match self.depth > MAX_DEPTH {
            true => Err(E::custom(format_args!(
                "a value nested more than {MAX_DEPTH} levels deep"
            ))),
            false => Ok(()),
        }
    }
}

/// The `deserialize_*` methods that hand the visitor on, wrapped, to the same method.
macro_rules! forward {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, Self::Error> {
            let visitor = self.same(visitor);
            self.inner.$method($($arg,)* visitor)
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for InPlace<D> {
    type Error = D::Error;

    forward! {
        deserialize_any();
        deserialize_bool();
        deserialize_i8();
        deserialize_i16();
        deserialize_i32();
        deserialize_i64();
        deserialize_i128();
        deserialize_u8();
        deserialize_u16();
        deserialize_u32();
        deserialize_u64();
        deserialize_u128();
        deserialize_f32();
        deserialize_f64();
        deserialize_char();
        deserialize_str();
        deserialize_bytes();
        deserialize_option();
        deserialize_unit();
        deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str);
        deserialize_seq();
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map();
        deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_identifier();
        deserialize_ignored_any();
    }

    /// Borrowed from the input, then copied by the visitor at its real length.
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        let visitor = self.same(visitor);
        self.inner.deserialize_str(visitor)
    }

    /// Borrowed from the input, then copied by the visitor at its real length.
    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        let visitor = self.same(visitor);
        self.inner.deserialize_bytes(visitor)
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// The `visit_*` methods of values that hold no deserializer: handed on as they are.
macro_rules! visit {
    ($($method:ident($ty:ty);)*) => {$(
        fn $method<E: serde::de::Error>(self, v: $ty) -> Result<Self::Value, E> {
            self.inner.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for InPlace<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.inner.expecting(f)
    }

    visit! {
        visit_bool(bool);
        visit_i8(i8);
        visit_i16(i16);
        visit_i32(i32);
        visit_i64(i64);
        visit_i128(i128);
        visit_u8(u8);
        visit_u16(u16);
        visit_u32(u32);
        visit_u64(u64);
        visit_u128(u128);
        visit_f32(f32);
        visit_f64(f64);
        visit_char(char);
        visit_str(&str);
        visit_borrowed_str(&'de str);
        visit_string(String);
        visit_bytes(&[u8]);
        visit_borrowed_bytes(&'de [u8]);
        visit_byte_buf(Vec<u8>);
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let d = self.deeper(d);
        d.check()?;
        self.inner.visit_some(d)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let d = self.deeper(d);
        d.check()?;
        self.inner.visit_newtype_struct(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let seq = self.same(seq);
        self.inner.visit_seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let map = self.same(map);
        self.inner.visit_map(map)
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        let data = self.same(data);
        self.inner.visit_enum(data)
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for InPlace<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.check()?;
        let d = self.same(d);
        self.inner.deserialize(d)
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for InPlace<A> {
    type Error = A::Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, Self::Error> {
        let seed = self.deeper(seed);
        self.inner.next_element_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for InPlace<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let seed = self.deeper(seed);
        self.inner.next_key_seed(seed)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let seed = self.deeper(seed);
        self.inner.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for InPlace<A> {
    type Error = A::Error;
    type Variant = InPlace<A::Variant>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), Self::Error> {
        let seed = self.deeper(seed);
        let depth = self.depth;
        let (value, variant) = self.inner.variant_seed(seed)?;
        let variant = InPlace {
            inner: variant,
            depth,
        };
        Ok((value, variant))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for InPlace<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), Self::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<S::Value, Self::Error> {
        let seed = self.deeper(seed);
        self.inner.newtype_variant_seed(seed)
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let visitor = self.same(visitor);
        self.inner.tuple_variant(len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let visitor = self.same(visitor);
        self.inner.struct_variant(fields, visitor)
    }
}

#[cfg(test)]
/// The tests' hostile input: `bytes` with the one-byte length before `marker` replaced by a varint claiming 2^60.
pub(crate) fn claiming_2_pow_60(bytes: &[u8], marker: &str) -> Vec<u8> {
    let mut needle = vec![marker.len() as u8];
    needle.extend_from_slice(marker.as_bytes());
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{marker} is in the encoding"));
    assert_eq!(
        bytes.windows(needle.len()).filter(|w| *w == needle).count(),
        1,
        "{marker} is there once"
    );
    let mut out = bytes[..at].to_vec();
    out.push(0xFD); // bincode's varint: a u64 follows, little-endian
    out.extend_from_slice(&(1u64 << 60).to_le_bytes());
    out.extend_from_slice(&bytes[at + 1..]);
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use serde::{Deserialize, Serialize};

    use super::claiming_2_pow_60;
    use crate::types::{bincode_config, decode, decode_prefix, encode};

    /// Every way a string or a byte string sits in a value: at the top, in an option, a
    /// sequence, a map's key and value, a newtype, a tuple, and in each kind of enum variant.
    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Everywhere {
        plain: String,
        bytes: Bytes,
        maybe: Option<String>,
        many: Vec<Bytes>,
        map: BTreeMap<String, String>,
        newtype: Name,
        tuple: (u8, String),
        variants: Vec<Variant>,
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Name(String);

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    enum Variant {
        Unit,
        Newtype(String),
        Tuple(u32, Bytes),
        Struct { id: i64, name: String },
    }

    /// A distinct marker for each place, of one length (its length prefix is one byte).
    const MARKERS: [&str; 11] = [
        "plain-mark",
        "bytes-mark",
        "maybe-mark",
        "many--mark",
        "mkey--mark",
        "mval--mark",
        "newty-mark",
        "tuple-mark",
        "ntvar-mark",
        "stvar-mark",
        "tpvar-mark",
    ];

    fn everywhere() -> Everywhere {
        let m = |i: usize| MARKERS[i].to_string();
        Everywhere {
            plain: m(0),
            bytes: Bytes::from(m(1)),
            maybe: Some(m(2)),
            many: vec![Bytes::new(), Bytes::from(m(3))],
            map: BTreeMap::from([(m(4), m(5))]),
            newtype: Name(m(6)),
            tuple: (7, m(7)),
            variants: vec![
                Variant::Unit,
                Variant::Newtype(m(8)),
                Variant::Tuple(3, Bytes::from(m(10))),
                Variant::Struct { id: -1, name: m(9) },
            ],
        }
    }

    #[test]
    fn the_bytes_decoded_in_place_are_the_value_bincode_decodes(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let value = everywhere();
        let bytes = encode(&value)?;
        let (plain, used): (Everywhere, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode_config())?;
        assert_eq!(used, bytes.len());
        assert_eq!(plain, value);
        assert_eq!(decode::<Everywhere>(&bytes)?, value);
        assert_eq!(decode_prefix::<Everywhere>(&bytes)?, (value, bytes.len()));
        Ok(())
    }

    /// A type that holds itself, as a batch of commands or an error and its source do, in
    /// every way a value can hold another: an enum's payload, an option, a sequence, a struct
    /// variant's field.
    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    enum Nest {
        End,
        In(Box<Nest>),
        Maybe(Option<Box<Nest>>),
        Many(Vec<Nest>),
        Field { inner: Box<Nest> },
    }

    /// Values nest 40 deep each way (synod's deepest nests under 20, about 2 levels each);
    /// a million levels of each (one to two bytes a level) are an error, where the decoder's
    /// recursion overflowed the stack and aborted the test binary.
    #[test]
    fn values_nested_past_the_limit_are_refused_not_recursed_into(
    ) -> Result<(), Box<dyn std::error::Error>> {
        /// One level of a way to nest, and its bytes.
        type Way = (fn(Nest) -> Nest, &'static [u8]);
        let ways: [Way; 4] = [
            (|n| Nest::In(Box::new(n)), &[1]),
            (|n| Nest::Maybe(Some(Box::new(n))), &[2, 1]),
            (|n| Nest::Many(vec![n]), &[3, 1]),
            (|n| Nest::Field { inner: Box::new(n) }, &[4]),
        ];
        for (wrap, level) in ways {
            let nest = (0..40).fold(Nest::End, |inner, _| wrap(inner));
            let bytes = encode(&nest)?;
            assert_eq!(decode::<Nest>(&bytes)?, nest);
            assert_eq!(bytes, [level.repeat(40), vec![0]].concat(), "{level:?}");
            let mut hostile = level.repeat(1_000_000);
            hostile.push(0);
            match decode::<Nest>(&hostile) {
                Err(e) => assert!(e.to_string().contains("nested more than"), "{level:?}: {e}"),
                Ok(_) => panic!("{level:?}: a million levels decoded"),
            }
        }
        Ok(())
    }

    /// Without reading in place, each of these inputs made bincode allocate 2^60 bytes, which
    /// aborts the test binary; here each is an error that names the bytes missing.
    #[test]
    fn a_length_beyond_the_input_is_refused_wherever_it_is(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let bytes = encode(&everywhere())?;
        for marker in MARKERS {
            let hostile = claiming_2_pow_60(&bytes, marker);
            match decode::<Everywhere>(&hostile) {
                Err(bincode::error::DecodeError::UnexpectedEnd { additional }) => {
                    assert!(additional > 1 << 59, "{marker}: {additional} bytes missing")
                }
                other => panic!("{marker}: {other:?}"),
            }
            assert!(decode_prefix::<Everywhere>(&hostile).is_err(), "{marker}");
        }
        Ok(())
    }
}
