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
//! SHA-256 rather than a CRC: the same digest guards a backup that travels between institutions,
//! where a deliberate edit must not go unnoticed either, and at the sizes of a snapshot (hundreds
//! of MB at a million znodes) it costs well under a second, off the apply path.

use sha2::{Digest, Sha256};

use crate::error::StoreError;

/// Bytes before the body: magic, version, body length.
const HEADER: usize = 8 + 4 + 8;
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

    /// Wraps `body` (which the caller has encoded) into an envelope of this kind.
    pub fn seal(&self, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + body.len() + TRAILER);
        out.extend_from_slice(self.magic);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&(body.len() as u64).to_be_bytes());
        out.extend_from_slice(body);
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        out
    }

    /// The body of an envelope of this kind, once its magic, version, length and checksum are
    /// checked.
    pub fn open<'a>(&self, bytes: &'a [u8]) -> Result<&'a [u8], StoreError> {
        let what = self.what;
        if bytes.len() < HEADER + TRAILER || !self.is_enveloped(bytes) {
            return Err(StoreError::NotThisKind {
                what,
                magic: String::from_utf8_lossy(self.magic).into_owned(),
            });
        }
        let word = |range: std::ops::Range<usize>| -> u64 {
            bytes[range]
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
        if bytes.len() as u64 != expected {
            return Err(StoreError::Length {
                what,
                actual: bytes.len() as u64,
                expected,
            });
        }
        let (sealed, sum) = bytes.split_at(bytes.len() - TRAILER);
        if Sha256::digest(sealed).as_slice() != sum {
            return Err(StoreError::Checksum { what });
        }
        Ok(&sealed[HEADER..])
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
    fn an_empty_body_is_a_valid_envelope() {
        assert_eq!(TEST.open(&TEST.seal(&[])).ok(), Some(&[][..]));
    }
}
