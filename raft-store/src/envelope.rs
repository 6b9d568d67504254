//! The checksummed, versioned envelope around every file synod writes whole — the snapshot file
//! ([`crate::snapshot`]) and the backup ([`crate::backup`]) — so that a damaged file or a file of
//! another format is refused by name instead of being decoded into a wrong tree:
//!
//! ```text
//! magic                    8 bytes, what the file is ("SYNODSNP", "SYNODBAK")
//! format version           u32, big-endian
//! body length              u64, big-endian
//! body                     the file's contents
//! SHA-256                  32 bytes, of everything before it
//! ```
//!
//! A large file is written in pieces ([`Kind::sealer`]): the header first, the body as it is
//! produced, the checksum last, so that no copy of the body is made to wrap it.
//!
//! SHA-256 rather than a CRC: the same digest guards a backup that travels between institutions,
//! where a deliberate edit must not go unnoticed either, and at the sizes of a snapshot (hundreds
//! of MB at a million znodes) it costs well under a second, off the apply path.

use std::fs::File;
use std::io::{self, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

use crate::error::StoreError;

/// Bytes before the body: magic, version, body length (where the body starts in the file).
pub(crate) const HEADER: usize = 8 + 4 + 8;
/// Bytes after the body: the checksum.
const TRAILER: usize = 32;

/// One kind of enveloped file: its magic and the format version this synod writes and reads.
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    /// The first eight bytes of every such file.
    pub magic: &'static [u8; 8],
    /// The format version this synod writes, and the only one it reads.
    pub version: u32,
    /// What the file is, for messages ("snapshot file", "backup").
    pub what: &'static str,
}

impl Kind {
    /// Whether `bytes` starts with this kind's magic (an enveloped file of this kind, whole or
    /// damaged, as opposed to a file of an older, unenveloped format).
    pub fn is_enveloped(&self, bytes: &[u8]) -> bool {
        bytes.starts_with(self.magic)
    }

    /// The bytes before a body of `body_len` bytes: magic, version, length.
    fn header(&self, body_len: u64) -> [u8; HEADER] {
        let mut header = [0; HEADER];
        header[..8].copy_from_slice(self.magic);
        header[8..12].copy_from_slice(&self.version.to_be_bytes());
        header[12..].copy_from_slice(&body_len.to_be_bytes());
        header
    }

    /// Wraps `body` into an envelope of this kind, at once: the tests' reference for the bytes
    /// [`Kind::sealer`] writes in pieces.
    #[cfg(test)]
    pub fn seal(&self, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + body.len() + TRAILER);
        out.extend_from_slice(&self.header(body.len() as u64));
        out.extend_from_slice(body);
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        out
    }

    /// Starts an envelope of this kind around a body of exactly `body_len` bytes, written to
    /// `out` piece by piece: the header now, the body through the [`Sealer`]'s `Write`, the
    /// checksum at [`Sealer::finish`]: the layout above, whatever the pieces. An error if `out`
    /// fails.
    pub fn sealer<W: Write>(&self, mut out: W, body_len: u64) -> io::Result<Sealer<W>> {
        let header = self.header(body_len);
        out.write_all(&header)?;
        let mut hash = Sha256::new();
        hash.update(header);
        Ok(Sealer {
            out,
            hash,
            remaining: body_len,
            what: self.what,
        })
    }

    /// How many bytes an envelope around a body of `body_len` bytes takes.
    pub fn sealed_len(body_len: usize) -> usize {
        HEADER + body_len + TRAILER
    }

    /// The body of an envelope of this kind, once its magic, version, length and checksum are
    /// checked.
    pub fn open<'a>(&self, bytes: &'a [u8]) -> Result<&'a [u8], StoreError> {
        Ok(&bytes[self.body_range(bytes)?])
    }

    /// Where the body of an envelope of this kind is in `bytes`, once its magic, version,
    /// length and checksum are checked.
    pub fn body_range(&self, bytes: &[u8]) -> Result<Range<usize>, StoreError> {
        let body = self.check_header(bytes, bytes.len() as u64)?;
        let (sealed, sum) = bytes.split_at(bytes.len() - TRAILER);
        if Sha256::digest(sealed).as_slice() != sum {
            return Err(StoreError::Checksum { what: self.what });
        }
        Ok(body.start as usize..body.end as usize)
    }

    /// Where the body of an envelope of this kind is in `file`, once its magic, version, length
    /// and checksum are checked, reading the file in pieces (1 MiB at a time, whatever its
    /// size). Blocking.
    pub fn body_range_in_file(&self, file: &File) -> Result<Range<u64>, StoreError> {
        let len = file.metadata()?.len();
        let mut header = [0; HEADER];
        let head = usize::try_from(len).map_or(HEADER, |len| len.min(HEADER));
        file.read_exact_at(&mut header[..head], 0)?;
        let body = self.check_header(&header[..head], len)?;
        let mut hash = Sha256::new();
        let mut piece = vec![0; 1 << 20];
        let mut at = 0;
        while at < body.end {
            let n = piece
                .len()
                .min(usize::try_from(body.end - at).unwrap_or(usize::MAX));
            file.read_exact_at(&mut piece[..n], at)?;
            hash.update(&piece[..n]);
            at += n as u64;
        }
        let mut sum = [0; TRAILER];
        file.read_exact_at(&mut sum, body.end)?;
        if hash.finalize().as_slice() != sum {
            return Err(StoreError::Checksum { what: self.what });
        }
        Ok(body)
    }

    /// Checks an envelope's header (its first bytes, `header`) against this kind and the whole
    /// envelope's length `len`; where its body is.
    fn check_header(&self, header: &[u8], len: u64) -> Result<Range<u64>, StoreError> {
        let what = self.what;
        if len < (HEADER + TRAILER) as u64 || header.len() < HEADER || !self.is_enveloped(header) {
            return Err(StoreError::NotThisKind {
                what,
                magic: String::from_utf8_lossy(self.magic).into_owned(),
            });
        }
        let word = |range: std::ops::Range<usize>| -> u64 {
            header[range]
                .iter()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
        };
        let found = word(8..12) as u32;
        if found != self.version {
            return Err(StoreError::FormatVersion {
                what,
                found,
                supported: self.version..=self.version,
            });
        }
        let expected = ((HEADER + TRAILER) as u64).saturating_add(word(12..20));
        if len != expected {
            return Err(StoreError::Length {
                what,
                actual: len,
                expected,
            });
        }
        Ok(HEADER as u64..len - TRAILER as u64)
    }
}

/// An envelope being written ([`Kind::sealer`]): everything written to it is body, passed on to
/// the file and hashed; [`Sealer::finish`] appends the checksum.
pub struct Sealer<W: Write> {
    /// Where the envelope goes (a file, usually behind a `BufWriter`).
    out: W,
    /// The SHA-256 of everything written to `out` so far, header included.
    hash: Sha256,
    /// How many body bytes the header announced that are still to come: a body longer or
    /// shorter than announced would make a file that [`Kind::open`] refuses, so it is an error
    /// here, before the file is used.
    remaining: u64,
    /// The kind's name, for errors.
    what: &'static str,
}

impl<W: Write> Sealer<W> {
    /// Appends the checksum and returns the writer (which the caller flushes and syncs). An
    /// error if the body was shorter than announced, or if the writer fails.
    pub fn finish(mut self) -> io::Result<W> {
        if self.remaining != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: the body ended {} bytes short of the length in its header",
                    self.what, self.remaining
                ),
            ));
        }
        self.out.write_all(&self.hash.finalize())?;
        Ok(self.out)
    }
}

impl<W: Write> Write for Sealer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() as u64 > self.remaining {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: the body is longer than the length in its header",
                    self.what
                ),
            ));
        }
        let n = self.out.write(buf)?;
        self.hash.update(&buf[..n]);
        self.remaining -= n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST: Kind = Kind {
        magic: b"SYNODTST",
        version: 3,
        what: "test file",
    };

    #[test]
    fn a_sealed_body_opens_and_every_flipped_bit_is_refused() {
        let body: Vec<u8> = (0..200u8).collect();
        let sealed = TEST.seal(&body);
        assert_eq!(TEST.open(&sealed).ok(), Some(&body[..]));
        for i in 0..sealed.len() {
            for bit in [0x01u8, 0x80] {
                let mut damaged = sealed.clone();
                damaged[i] ^= bit;
                assert!(
                    TEST.open(&damaged).is_err(),
                    "byte {i} bit {bit:#x} unnoticed"
                );
            }
        }
        assert!(matches!(
            TEST.open(&sealed[..sealed.len() - 1]),
            Err(StoreError::Length { .. })
        ));
        let mut longer = sealed.clone();
        longer.push(0);
        assert!(matches!(TEST.open(&longer), Err(StoreError::Length { .. })));
        assert!(matches!(
            TEST.open(&body),
            Err(StoreError::NotThisKind { .. })
        ));
        let newer = Kind { version: 4, ..TEST }.seal(&body);
        let err = TEST.open(&newer).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("test file format version 4; this synod reads version 3")
        );
    }

    #[test]
    fn a_body_sealed_in_pieces_is_the_same_envelope() -> io::Result<()> {
        let body: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        for piece in [1, 7, 4096, 10_000] {
            let mut sealer = TEST.sealer(Vec::new(), body.len() as u64)?;
            for chunk in body.chunks(piece) {
                sealer.write_all(chunk)?;
            }
            assert_eq!(sealer.finish()?, TEST.seal(&body), "pieces of {piece}");
        }
        let mut short = TEST.sealer(Vec::new(), 3)?;
        short.write_all(b"ab")?;
        assert_eq!(
            short.finish().err().map(|e| e.kind()),
            Some(io::ErrorKind::InvalidInput)
        );
        let mut long = TEST.sealer(Vec::new(), 3)?;
        assert_eq!(
            long.write_all(b"abcd").err().map(|e| e.kind()),
            Some(io::ErrorKind::InvalidInput)
        );
        Ok(())
    }

    #[test]
    fn an_empty_body_is_a_valid_envelope() {
        assert_eq!(TEST.open(&TEST.seal(&[])).ok(), Some(&[][..]));
    }
}
