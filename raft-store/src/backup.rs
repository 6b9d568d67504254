//! The backup file: what `GET /snapshot` serves (and `synodctl backup` saves) and `synod
//! restore` reads. It is a snapshot file's body ([`crate::snapshot`]) in the envelope of
//! [`crate::envelope`], which says what it is and whether it is whole:
//!
//! ```text
//! "SYNODBAK"               8 bytes, the magic
//! format version           u32, big-endian (1: [`BACKUP`])
//! body length              u64, big-endian
//! body                     the snapshot file: metadata, then the tree image
//! SHA-256                  32 bytes, of everything before it
//! ```
//!
//! The body leaves out every session's password: a restored cluster is a new cluster, whose
//! sessions no client can resume (they expire, with their ephemerals, once their timeout passes),
//! and a password in a backup would only be a secret more to keep.

use std::io::Write;

use openraft::{BasicNode, LogId, SnapshotMeta};

use crate::envelope::Kind;
use crate::error::StoreError;
use crate::snapshot::{
    self, body_head, open_body, sessions_in, snapshot_body, split_body, DataSource, FilePiece,
    Opened,
};
use crate::types::{encode, NodeId};

/// The backup's envelope ([`crate::envelope`]): magic `SYNODBAK`, format version 1. The body is
/// a snapshot file's body (metadata, then the tree image) without session passwords.
pub const BACKUP: Kind = Kind {
    magic: b"SYNODBAK",
    version: 1,
    what: "backup",
};

/// Wraps a snapshot file (as stored in a state directory, checked on the way) into a backup,
/// without its sessions' passwords, in a buffer of its exact size.
pub fn seal(snapshot_file: &[u8]) -> Result<Vec<u8>, StoreError> {
    let body = snapshot_body(snapshot_file)?;
    let (meta, data) = split_body(body)?;
    seal_data(&meta, &body[data], |len| Ok(Vec::with_capacity(len)))
}

/// Wraps the snapshot file `snapshot_file` (open, read by position) into a backup, as [`seal`]
/// does, written to the writer `out` makes (given the backup's length, known before it is
/// written): a file, for a backup that is served from disk rather than held in memory.
/// Blocking: O(size of the snapshot), holding a window of it, never the tree or the file whole
/// (the file's checksum is checked reading it in pieces, then only the sessions are decoded and
/// encoded again). Returns the writer, not flushed, and the last log id the snapshot covers.
pub fn seal_file<W: Write>(
    snapshot_file: std::fs::File,
    out: impl FnOnce(usize) -> std::io::Result<W>,
) -> Result<(W, Option<LogId<NodeId>>), StoreError> {
    let (meta, file, data) = snapshot::open_file(snapshot_file)?;
    let sealed = seal_data(&meta, &FilePiece::new(&file, data), out)?;
    Ok((sealed, meta.last_log_id))
}

/// The backup of the snapshot of `meta` and `data`, written to the writer `out` makes.
fn seal_data<W: Write>(
    meta: &SnapshotMeta<NodeId, BasicNode>,
    data: &(impl DataSource + ?Sized),
    out: impl FnOnce(usize) -> std::io::Result<W>,
) -> Result<W, StoreError> {
    let len = data.len() as u64;
    let (mut sessions, at) = sessions_in(data.range(0..len), len)?;
    for s in &mut sessions {
        s.passwd = bytes::Bytes::new();
    }
    let sessions = encode(&sessions)?;
    let data_len = usize::try_from(at.start + (len - at.end))
        .map_err(|e| StoreError::Corrupt(format!("a snapshot of {len} bytes: {e}")))?
        + sessions.len();
    let head = body_head(meta, data_len)?;
    let body_len = head.len() + data_len;
    let out = out(Kind::sealed_len(body_len))?;
    let mut sealer = BACKUP.sealer(out, body_len as u64)?;
    sealer.write_all(&head)?;
    std::io::copy(&mut data.range(0..at.start), &mut sealer)?;
    sealer.write_all(&sessions)?;
    std::io::copy(&mut data.range(at.end..len), &mut sealer)?;
    Ok(sealer.finish()?)
}

/// The snapshot in an open backup file, its envelope checked reading it in pieces: the
/// snapshot's metadata, the file, and where the snapshot's data is in it. Blocking.
pub(crate) fn open_file(backup: std::fs::File) -> Result<Opened, StoreError> {
    let body = BACKUP.body_range_in_file(&backup)?;
    open_body(backup, body)
}

/// The snapshot file's body inside a backup, once its header, version and checksum are checked;
/// the error says which failed.
pub fn open(backup: &[u8]) -> Result<&[u8], StoreError> {
    BACKUP.open(backup)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{decode_image, SnapshotFile};
    use crate::types::decode;
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

    /// The backup is the bytes of decoding the whole snapshot file, clearing the passwords and
    /// encoding it again (as releases up to 0.5.10 made it), extension included.
    #[test]
    fn a_backup_in_pieces_is_the_file_decoded_and_encoded_again() -> Result<(), StoreError> {
        let mut t = DataTree::new();
        t.create_session(0x42, 10_000, Bytes::from_static(&[7; 16]));
        t.create_session(0x43, 20_000, Bytes::from_static(&[8; 16]));
        t.raise_cluster_version(crate::types::CLUSTER_VERSION);
        let mut file = SnapshotFile {
            meta: SnapshotMeta {
                last_log_id: Some(LogId::new(CommittedLeaderId::new(2, 1), 11)),
                last_membership: StoredMembership::default(),
                snapshot_id: "s-11".into(),
            },
            data: crate::snapshot::encode_tree(&t)?,
        };
        let snapshot = crate::snapshot::SNAPSHOT.seal(&encode(&file)?);
        let (mut image, rest) = decode_image(&file.data)?;
        assert!(!rest.is_empty(), "an extension");
        for s in &mut image.sessions {
            s.passwd = Bytes::new();
        }
        let mut data = encode(&image)?;
        data.extend_from_slice(rest);
        file.data = data;
        let sealed = seal(&snapshot)?;
        assert_eq!(sealed, BACKUP.seal(&encode(&file)?));
        assert_eq!(sealed.capacity(), sealed.len());
        Ok(())
    }

    #[test]
    fn every_flipped_byte_is_detected() -> Result<(), StoreError> {
        let backup = seal(&snapshot_file()?)?;
        for i in 0..backup.len() {
            let mut damaged = backup.clone();
            damaged[i] ^= 0x01;
            assert!(open(&damaged).is_err(), "byte {i} flipped unnoticed");
        }
        assert!(open(&backup[..backup.len() - 1]).is_err(), "truncated");
        let raw = snapshot_file()?;
        assert!(
            matches!(open(&raw), Err(e) if e.to_string().contains("SYNODBAK")),
            "a bare snapshot file is no backup"
        );
        let mut newer = backup.clone();
        newer[11] = 2;
        assert!(
            matches!(open(&newer), Err(e) if e.to_string().contains("version 2")),
            "another format version is named"
        );
        Ok(())
    }
}
