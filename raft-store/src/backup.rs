//! The backup file: what `GET /snapshot` serves (and `synodctl backup` saves) and `synod
//! restore` reads. It is a snapshot file ([`crate::snapshot`]) in an envelope that says what it
//! is and whether it is whole:
//!
//! ```text
//! "SYNODBAK"               8 bytes, the magic
//! format version           u32, big-endian (BACKUP_VERSION)
//! body length              u64, big-endian
//! body                     the snapshot file: metadata, then the tree image
//! SHA-256                  32 bytes, of everything before it
//! ```
//!
//! The body leaves out every session's password: a restored cluster is a new cluster, whose
//! sessions no client can resume (they expire, with their ephemerals, once their timeout passes),
//! and a password in a backup would only be a secret more to keep.

use sha2::{Digest, Sha256};

use crate::error::StoreError;
use crate::snapshot::{decode_image, SnapshotFile};
use crate::types::{decode, encode};

/// The first bytes of every backup.
pub const MAGIC: &[u8; 8] = b"SYNODBAK";

/// The backup format this version writes and reads.
pub const BACKUP_VERSION: u32 = 1;

/// Bytes before the body: magic, version, body length.
const HEADER: usize = 8 + 4 + 8;
/// Bytes after the body: the checksum.
const TRAILER: usize = 32;

/// Wraps a snapshot file (as stored in a state directory) into a backup, without its sessions'
/// passwords. Blocking: O(size of the snapshot).
pub fn seal(snapshot_file: &[u8]) -> Result<Vec<u8>, StoreError> {
    let mut file: SnapshotFile = decode(snapshot_file)?;
    let (mut image, rest) = decode_image(&file.data)?;
    for s in &mut image.sessions {
        s.passwd = bytes::Bytes::new();
    }
    let mut data = encode(&image)?;
    data.extend_from_slice(rest);
    file.data = data;
    let body = encode(&file)?;
    let mut out = Vec::with_capacity(HEADER + body.len() + TRAILER);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&BACKUP_VERSION.to_be_bytes());
    out.extend_from_slice(&(body.len() as u64).to_be_bytes());
    out.extend_from_slice(&body);
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    Ok(out)
}

/// The snapshot file inside a backup, once its header, version and checksum are checked; a
/// `Backup` error says which failed.
pub fn open(backup: &[u8]) -> Result<&[u8], StoreError> {
    let bad = |m: String| Err(StoreError::Backup(m));
    if backup.len() < HEADER + TRAILER || &backup[..8] != MAGIC {
        return bad("no synod backup header (a backup starts with SYNODBAK)".into());
    }
    let version = u32::from_be_bytes(backup[8..12].try_into().unwrap_or_default());
    if version != BACKUP_VERSION {
        return bad(format!(
            "backup format version {version}; this synod reads version {BACKUP_VERSION}"
        ));
    }
    let len = u64::from_be_bytes(backup[12..20].try_into().unwrap_or_default());
    let expected = (HEADER + TRAILER) as u64 + len;
    if backup.len() as u64 != expected {
        return bad(format!(
            "the file is {} bytes, its header says {expected}: it is truncated or damaged",
            backup.len()
        ));
    }
    let (sealed, sum) = backup.split_at(backup.len() - TRAILER);
    if Sha256::digest(sealed).as_slice() != sum {
        return bad("checksum mismatch: the file is damaged".into());
    }
    Ok(&sealed[HEADER..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::SnapshotFile;
    use crate::DataTree;
    use bytes::Bytes;
    use openraft::{CommittedLeaderId, LogId, SnapshotMeta, StoredMembership};

    fn snapshot_file() -> Result<Vec<u8>, StoreError> {
        let mut t = DataTree::new();
        t.create_session(0x42, 10_000, Bytes::from_static(&[7; 16]));
        let file = SnapshotFile {
            meta: SnapshotMeta {
                last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), 9)),
                last_membership: StoredMembership::default(),
                snapshot_id: "s-9".into(),
            },
            data: crate::snapshot::encode_tree(&t)?,
        };
        Ok(encode(&file)?)
    }

    #[test]
    fn a_backup_opens_to_its_snapshot_without_session_passwords() -> Result<(), StoreError> {
        let backup = seal(&snapshot_file()?)?;
        let inner: SnapshotFile = decode(open(&backup)?)?;
        let tree = crate::snapshot::decode_tree(&inner.data)?;
        let s = tree
            .session(0x42)
            .ok_or(StoreError::Corrupt("session".into()))?;
        assert!(s.passwd.is_empty(), "a password in a backup");
        assert_eq!(s.timeout_ms, 10_000);
        Ok(())
    }

    #[test]
    fn every_flipped_byte_is_detected() -> Result<(), StoreError> {
        let backup = seal(&snapshot_file()?)?;
        for i in 0..backup.len() {
            let mut damaged = backup.clone();
            damaged[i] ^= 0x01;
            assert!(
                matches!(open(&damaged), Err(StoreError::Backup(_))),
                "byte {i} flipped unnoticed"
            );
        }
        assert!(open(&backup[..backup.len() - 1]).is_err(), "truncated");
        let raw = snapshot_file()?;
        assert!(
            matches!(open(&raw), Err(StoreError::Backup(m)) if m.contains("SYNODBAK")),
            "a bare snapshot file is no backup"
        );
        let mut newer = backup.clone();
        newer[11] = 2;
        assert!(
            matches!(open(&newer), Err(StoreError::Backup(m)) if m.contains("version 2")),
            "another format version is named"
        );
        Ok(())
    }
}
