//! Decoding values one after another from a reader (a snapshot's data in a file) through a
//! window of it, so that data of hundreds of MB is decoded holding about a MiB of it.
//!
//! Each value is decoded in place from the window ([`crate::types::decode_prefix`]: every
//! length it holds is checked against the bytes there before anything is allocated for it).
//! A value cut short by the window's end (`UnexpectedEnd`) is decoded again once more bytes are
//! read; the window grows past [`WINDOW`] only as far as one value needs (doubling, so that a
//! value is decoded again only a logarithmic number of times), and never past what is left to
//! read: a length that claims more than the input holds is `UnexpectedEnd` before anything is
//! allocated or read for it, whatever the input's size. A long sequence is decoded an element at
//! a time ([`ValueReader::sequence`]), so that the window holds one element, not the sequence.

use std::io::Read;

use bincode::error::DecodeError;
use serde::de::DeserializeOwned;

use crate::error::StoreError;
use crate::types::decode_prefix;

/// How many bytes a [`ValueReader`] reads at a time: a value is decoded once more each time the
/// window cuts it, so the window is large against the values it holds (about 200 bytes a znode)
/// and small against the data.
pub(crate) const WINDOW: usize = 1 << 20;

/// Values decoded one after another from the bytes of a reader (see the module).
pub(crate) struct ValueReader<R> {
    /// What is left to read of the input.
    source: std::io::Take<R>,
    /// The window: bytes read and not yet decoded are `buf[at..]`.
    buf: Vec<u8>,
    /// Where the next value starts in `buf`. Invariant: `at <= buf.len()`.
    at: usize,
    /// How many bytes of the input were decoded: where the next value starts in it.
    position: u64,
    /// How many times the window was read into: the tests bound it (each is a value decoded
    /// again).
    refills: u64,
}

impl<R: Read> ValueReader<R> {
    /// Reads the `len` bytes of `source` (a source that ends before them is `Io`,
    /// `UnexpectedEof`, where it ends).
    pub(crate) fn new(source: R, len: u64) -> Self {
        ValueReader {
            source: source.take(len),
            buf: Vec::new(),
            at: 0,
            position: 0,
            refills: 0,
        }
    }

    /// Where the next value starts in the input (the bytes decoded so far).
    pub(crate) fn position(&self) -> u64 {
        self.position
    }

    /// Decodes the next value. An input that ends inside it is `Decode` (`UnexpectedEnd`).
    pub(crate) fn next<T: DeserializeOwned>(&mut self) -> Result<T, StoreError> {
        loop {
            match decode_prefix::<T>(&self.buf[self.at..]) {
                Ok((value, used)) => {
                    debug_assert!(used <= self.buf.len() - self.at);
                    self.at += used;
                    self.position += used as u64;
                    return Ok(value);
                }
                Err(DecodeError::UnexpectedEnd { additional }) => self.read_more(additional)?,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Decodes a sequence as serde encodes one (its length, then its elements), handing each
    /// element to `f` as soon as it is read: the elements are never held together, and the
    /// window holds one of them at a time, however long the sequence.
    pub(crate) fn sequence<T: DeserializeOwned>(
        &mut self,
        mut f: impl FnMut(T) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let count: u64 = self.next()?;
        for _ in 0..count {
            f(self.next()?)?;
        }
        Ok(())
    }

    /// Whether every byte of the input was decoded. An input shorter than its length is `Io`
    /// (`UnexpectedEof`).
    pub(crate) fn at_end(&mut self) -> Result<bool, StoreError> {
        if self.at == self.buf.len() && self.source.limit() > 0 {
            self.read_more(1)?;
        }
        Ok(self.at == self.buf.len())
    }

    /// Reads at least `need` more bytes into the window, after dropping what was decoded: up to
    /// a [`WINDOW`] in all, or as many again as it holds if a value already fills it. Fewer than `need` left in the input is `UnexpectedEnd`, before
    /// anything is read or allocated for them.
    fn read_more(&mut self, need: usize) -> Result<(), StoreError> {
        let left = self.source.limit();
        if need as u64 > left {
            return Err(DecodeError::UnexpectedEnd {
                additional: usize::try_from(need as u64 - left).unwrap_or(usize::MAX),
            }
            .into());
        }
        self.buf.drain(..self.at);
        self.at = 0;
        let held = self.buf.len();
        let want = need
            .max(WINDOW.saturating_sub(held))
            .max(held)
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        self.refills += 1;
        self.buf.try_reserve_exact(want).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                format!("a value of {} bytes: {e}", held + need),
            )
        })?;
        let read = (&mut self.source)
            .take(want as u64)
            .read_to_end(&mut self.buf)?;
        if read < need {
            // The input is shorter than its length said.
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::encode;

    /// Values across many windows, some larger than a window, decode as they were encoded.
    #[test]
    fn values_cut_by_the_window_decode_whole() -> Result<(), StoreError> {
        let values: Vec<(u64, String)> = (0..5_000u64)
            .map(|i| {
                let len = if i % 1000 == 7 {
                    WINDOW + 3
                } else {
                    i as usize % 700
                };
                (i, "x".repeat(len))
            })
            .collect();
        let mut input = Vec::new();
        for v in &values {
            input.extend(encode(v)?);
        }
        let mut reader = ValueReader::new(&input[..], input.len() as u64);
        for v in &values {
            assert_eq!(&reader.next::<(u64, String)>()?, v);
        }
        assert_eq!(reader.position(), input.len() as u64);
        assert!(reader.at_end()?);
        assert!(
            reader.buf.capacity() < 3 * WINDOW,
            "the window held {} bytes",
            reader.buf.capacity()
        );
        Ok(())
    }

    /// A length beyond the input is an error before anything is read for it, and an input that
    /// ends early (or is shorter than announced) is an error, not a value.
    #[test]
    fn a_length_beyond_the_input_is_refused_without_reading_it() -> Result<(), StoreError> {
        let mut input = encode(&"short".to_string())?;
        // A string claiming 2^60 bytes (varint: 0xfd then the u64).
        input.push(0xfd);
        input.extend((1u64 << 60).to_le_bytes());
        input.extend([b'x'; 64]);
        let mut reader = ValueReader::new(&input[..], input.len() as u64);
        assert_eq!(reader.next::<String>()?, "short");
        assert!(matches!(
            reader.next::<String>(),
            Err(StoreError::Decode(DecodeError::UnexpectedEnd { .. }))
        ));
        assert!(reader.buf.capacity() <= WINDOW);

        let whole = encode(&"whole".to_string())?;
        let mut longer = ValueReader::new(&whole[..], whole.len() as u64 + 10);
        assert_eq!(longer.next::<String>()?, "whole");
        assert!(
            matches!(longer.at_end(), Err(StoreError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof),
            "an input shorter than announced is no end"
        );
        let mut cut = ValueReader::new(&whole[..], whole.len() as u64 - 1);
        assert!(cut.next::<String>().is_err());
        Ok(())
    }

    /// A value far larger than the window, made of many small parts, is decoded again only a
    /// logarithmic number of times (the window doubles), and a long sequence read an element
    /// at a time keeps the window at its size.
    #[test]
    fn a_large_value_is_decoded_again_a_few_times_and_a_sequence_element_by_element(
    ) -> Result<(), StoreError> {
        let small: Vec<u16> = (0..4 * WINDOW as u32).map(|i| (i % 200) as u16).collect();
        let input = encode(&small)?;
        let mut whole = ValueReader::new(&input[..], input.len() as u64);
        assert_eq!(whole.next::<Vec<u16>>()?, small);
        assert!(whole.refills <= 5, "{} refills", whole.refills);

        let mut elements = ValueReader::new(&input[..], input.len() as u64);
        let mut read = Vec::new();
        elements.sequence(|e: u16| {
            read.push(e);
            Ok(())
        })?;
        assert_eq!(read, small);
        assert!(elements.at_end()?);
        assert!(elements.buf.capacity() <= WINDOW + 16);
        Ok(())
    }
}
