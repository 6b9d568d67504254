//! The audit trail: one record per replicated change — every client write (refused ones too),
//! session opened or closed, reap, tenant change and membership change — made in apply from the
//! entry itself, so it is identical on every replica and ordered with the change. The records
//! form a SHA-256 hash chain; the chain's head is part of the replicated state (the tree's
//! [`AuditHead`], in snapshots and in the digest), so a replica whose trail diverges, or a
//! record edited or removed afterwards, is detected. The records live in their own RocksDB
//! database beside the Raft log (`<data-dir>/audit`), with their own retention.
//!
//! # Durability
//!
//! Records are written when their entry is applied, to the memtable only (no write-ahead log,
//! no fsync): a crash loses at most records whose entries are still in the Raft log, and
//! replaying the log after the latest snapshot writes them again, byte for byte (apply is
//! deterministic). Before a snapshot is persisted (after which the log before it may be
//! purged), [`AuditStore::sync`] flushes them to a synced table file.
//!
//! # Layout
//!
//! The records of one log entry (one index, `zxid >> 16`) are stored as one value under the
//! first one's zxid: their stored forms ([`Encoded`]) one after another. Under write load an
//! entry holds a batch of writes, and one key for the batch instead of one per record is what
//! RocksDB's memtable, flushes and index blocks pay for (release 0.5.5; before it every record
//! had a key of its own). A value of one record is that record's stored form, as before, so a
//! reader handles both: see [`Runs`]. Apply is deterministic, so a replayed entry is stored
//! again with the same bytes; where an older build had stored that entry a record per key, the
//! keys after the first still hold single records that the new value repeats, and readers skip
//! a record whose zxid they have passed.
//!
//! # Gaps
//!
//! A replica that catches up by installing a leader's snapshot does not apply the entries the
//! snapshot covers, so it has no records for them: it notes an *anchor* (the snapshot's head)
//! and its trail goes on from there. Retention deletes the oldest records and keeps the last
//! deleted record's hash as the *start* anchor. [`verify`] checks each stretch of the chain and
//! names the first record that does not follow.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, Direction, IteratorMode, Options,
    ReadOptions, WriteBatch, DB,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use synod_proto::{Id, MultiResult, Request, Response};

use crate::error::StoreError;
use crate::rocks_memory::RocksMemory;
use crate::tree::Applied;
use crate::types::{decode, encode, zxid_index, POSITION_BITS};

/// Column family of the records: each log entry's records under the zxid of its first (8 bytes,
/// big-endian: scans go in zxid order). See the module documentation, "Layout".
const CF_RECORDS: &str = "records";
/// Column family of the anchors.
const CF_META: &str = "meta";
/// Key of the anchors in [`CF_META`].
const KEY_ANCHORS: &[u8] = b"anchors";
/// Key (in [`CF_META`]) of the store's format version: [`AUDIT_FORMAT`].
const KEY_FORMAT: &[u8] = b"format";

/// The trail's format version (its layout; the records' encoding follows the cluster version).
/// 1: a record per key (releases before 0.5.5, which wrote no version); 2: an entry's records
/// as one value (the module documentation, "Layout"). This build reads both, and records 2 at
/// open; a store of a later version is refused with both named.
pub const AUDIT_FORMAT: u32 = 2;

/// The records' block cache, which also holds their table files' index blocks. The trail is only
/// ever read in scans that go through it once (`GET /audit`, verification, export, retention),
/// which bypass the cache ([`scan_options`]), so it holds little more than the index blocks.
/// Left to RocksDB's default (32 MiB), one `GET /audit/verify` of a trail of 950,000 records
/// filled it, and the node's RSS went from 55 to 123 MiB and stayed above 110.
const RECORDS_BLOCK_CACHE: usize = 1 << 20;

/// Read options of a scan of the records: what it reads is not kept in the block cache (each
/// scan reads each block once; keeping them would fill the cache with the whole trail), and it
/// reads ahead, as it goes forward through consecutive blocks.
fn scan_options() -> ReadOptions {
    let mut opts = ReadOptions::default();
    opts.fill_cache(false);
    opts.set_readahead_size(256 << 10);
    opts
}

/// The identity scheme a session's opening record names its client certificate by
/// (`x509-sha256:<hex of the certificate's SHA-256>`): stamped only into the session's opening,
/// never an ACL id.
pub const CERT_FINGERPRINT_SCHEME: &str = "x509-sha256";

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// The chain's head as of the last applied entry: part of the replicated state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    /// How many records the chain holds since the cluster began.
    pub count: u64,
    /// The zxid of the last record (0 before any).
    pub zxid: i64,
    /// The hash of the last record (zeros before any).
    pub hash: Hash,
}

impl AuditHead {
    /// Appends `record` (whose zxid must follow the head's): returns it as stored.
    pub fn append(&mut self, record: AuditRecord) -> Result<StoredRecord, StoreError> {
        let prev = self.hash;
        self.append_encoded(&record)?;
        Ok(StoredRecord {
            prev,
            hash: self.hash,
            record,
        })
    }

    /// Appends `record` and returns it encoded for the store: the record is encoded once, for
    /// its hash and its value alike, straight into the value (one allocation, which a client
    /// write's record fits without growing).
    pub fn append_encoded(&mut self, record: &AuditRecord) -> Result<Encoded, StoreError> {
        self.append_alone(record.zxid, record)
    }

    /// Appends the record at `zxid` whose body `record` encodes, stored alone.
    fn append_alone<R: Serialize>(&mut self, zxid: i64, record: &R) -> Result<Encoded, StoreError> {
        let mut value = Vec::with_capacity(RECORD_CAPACITY);
        self.append_body(zxid, record, &mut value)?;
        Ok(Encoded { zxid, value })
    }

    /// Appends the record at `zxid` whose body `record` encodes, its stored form
    /// (`prev ‖ hash ‖ body`) at the end of `out`; on an error `out` is as it was.
    fn append_body<R: Serialize>(
        &mut self,
        zxid: i64,
        record: &R,
        out: &mut Vec<u8>,
    ) -> Result<(), StoreError> {
        // The first record may be at zxid 0: the initial membership is log entry 0.
        debug_assert!(
            zxid > self.zxid || self.count == 0,
            "audit records out of zxid order"
        );
        let start = out.len();
        out.extend_from_slice(&self.hash);
        out.extend_from_slice(&[0; 32]); // the record's hash, once the body is there
        if let Err(e) = crate::types::encode_into(record, out) {
            out.truncate(start);
            return Err(e.into());
        }
        let hash = chain_bytes(&self.hash, &out[start + 64..]);
        out[start + 32..start + 64].copy_from_slice(&hash);
        self.count += 1;
        self.zxid = zxid;
        self.hash = hash;
        Ok(())
    }
}

/// The records apply made, waiting for [`AuditStore::append`]: their stored forms one after
/// another in one buffer, as the store keeps an entry's (the module documentation, "Layout"),
/// so that an entry's value is a slice of it (copied only into RocksDB's write batch) and a
/// record costs no allocation of its own. Kept and reused by the state machine across applies.
#[derive(Debug, Default)]
pub struct RecordBuffer {
    /// The stored forms, in zxid order.
    bytes: Vec<u8>,
    /// Each record's zxid and where its stored form ends in `bytes`. Invariant: zxids grow,
    /// ends grow, the last end is `bytes.len()`.
    ends: Vec<(i64, usize)>,
}

/// The most room a [`RecordBuffer`] keeps between applies: about one full batch entry's
/// records (4,096 writes of a few hundred bytes); what a larger apply (several full entries, a
/// catch-up) grew beyond it is given back.
const RECORD_BUFFER_RETAINED: usize = 1 << 20;

impl RecordBuffer {
    /// Appends `record` to `head`'s chain and its stored form here.
    pub fn append_borrowed(
        &mut self,
        head: &mut AuditHead,
        record: &AuditRecordRef<'_>,
    ) -> Result<(), StoreError> {
        head.append_body(record.zxid, record, &mut self.bytes)?;
        self.ends.push((record.zxid, self.bytes.len()));
        Ok(())
    }

    /// The records `encoded` made, in this buffer (for tests, which build records one by one).
    #[cfg(test)]
    pub fn of(encoded: &[Encoded]) -> RecordBuffer {
        let mut buffer = RecordBuffer::default();
        for e in encoded {
            debug_assert!(buffer.ends.last().is_none_or(|&(z, _)| z < e.zxid));
            buffer.bytes.extend_from_slice(&e.value);
            buffer.ends.push((e.zxid, buffer.bytes.len()));
        }
        buffer
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Each entry's records (those whose zxids share an index): the first one's zxid and the
    /// stored forms of all, one after another.
    fn entries(&self) -> impl Iterator<Item = (i64, &[u8])> + '_ {
        let mut start = 0;
        self.ends
            .chunk_by(|a, b| zxid_index(a.0) == zxid_index(b.0))
            .map(move |run| {
                let end = run[run.len() - 1].1;
                let bytes = &self.bytes[start..end];
                start = end;
                (run[0].0, bytes)
            })
    }

    /// Empties the buffer for the next apply, keeping its room up to a bound.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
        self.bytes.shrink_to(RECORD_BUFFER_RETAINED);
        self.ends
            .shrink_to(RECORD_BUFFER_RETAINED / RECORD_CAPACITY);
    }
}

/// Room first reserved for a stored record: the two hashes and the body of a client write's
/// record with a path of a hundred bytes or so (a longer one grows the buffer once).
const RECORD_CAPACITY: usize = 256;

/// A record as the store keeps it: `prev ‖ hash ‖ bincode(record)`, alone or after the records
/// before it in its entry (the module documentation, "Layout").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub zxid: i64,
    pub value: Vec<u8>,
}

impl Encoded {
    /// `r` as the store keeps it.
    pub fn of(r: &StoredRecord) -> Result<Encoded, StoreError> {
        let mut value = Vec::with_capacity(128);
        value.extend_from_slice(&r.prev);
        value.extend_from_slice(&r.hash);
        value.extend(encode(&r.record)?);
        Ok(Encoded {
            zxid: r.record.zxid,
            value,
        })
    }
}

fn chain_bytes(prev: &Hash, body: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(body);
    h.finalize().into()
}

/// `SHA-256(prev ‖ bincode(record))`.
pub fn chain(prev: &Hash, record: &AuditRecord) -> Result<Hash, StoreError> {
    Ok(chain_bytes(prev, &encode(record)?))
}

/// Who made a change, what it was, when, and what came of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The change's zxid (the entry's log index and the command's position in it).
    pub zxid: i64,
    /// The proposer's wall-clock time (ms since the epoch), if the entry carries one (session
    /// opens and closes do not).
    pub time_ms: Option<i64>,
    /// The caller's session (0: none — an operator's or the leader's own action).
    pub session: i64,
    /// The caller's identities as stamped by the proposer (`ip:<client address>`,
    /// `x509:<CN>`, `org:<O>`, `digest:<user>:<hash>`).
    pub identities: Vec<String>,
    /// The tenant the identities resolved to, as of the entry.
    pub tenant: Option<String>,
    /// What was done.
    pub action: AuditAction,
}

/// An [`AuditRecord`] borrowed from what apply has at hand: it encodes to the owned record's
/// bytes (field for field, in the same order), so the chain and the store cannot tell them
/// apart, without first building a string per identity.
#[derive(Debug, Serialize)]
pub struct AuditRecordRef<'a> {
    /// [`AuditRecord::zxid`].
    pub zxid: i64,
    /// [`AuditRecord::time_ms`].
    pub time_ms: Option<i64>,
    /// [`AuditRecord::session`].
    pub session: i64,
    /// [`AuditRecord::identities`], from the stamped identities themselves.
    pub identities: Identities<'a>,
    /// [`AuditRecord::tenant`].
    pub tenant: Option<&'a str>,
    /// [`AuditRecord::action`].
    pub action: &'a AuditAction,
}

/// Identities as a record names them (`scheme:id`), encoded as a `Vec<String>` of those.
#[derive(Debug)]
pub struct Identities<'a>(pub &'a [Id]);

impl Serialize for Identities<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        // One buffer for them all: a record usually names one or two.
        let mut name = String::new();
        for id in self.0 {
            name.clear();
            name.push_str(&id.scheme);
            name.push(':');
            name.push_str(&id.id);
            seq.serialize_element(name.as_str())?;
        }
        seq.end()
    }
}

/// What an audited change did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditAction {
    /// A client write (a multi lists each op): the outcome's ZooKeeper error code (0: done).
    Write {
        /// The opcode's name (`create`, `setData`, `multi`, ...).
        op: String,
        /// The reply's error code.
        err: i32,
        /// Each op's path, name and own error code (one for a single write).
        ops: Vec<AuditOp>,
    },
    /// A session was opened.
    SessionOpened { timeout_ms: i32 },
    /// A session ended: closed by its client, or expired (`expired`).
    SessionClosed { expired: bool },
    /// The leader deleted container or TTL nodes that were due.
    Reaped { paths: Vec<String> },
    /// An operator changed the tenant table; `refused` says why it changed nothing.
    Tenant {
        change: String,
        refused: Option<String>,
    },
    /// The cluster's membership changed (voters and learners after the change).
    Membership {
        voters: Vec<u64>,
        learners: Vec<u64>,
    },
    /// A session was refused: the ZooKeeper code of why (`QuotaExceeded`).
    SessionRefused { err: i32 },
    /// Reads of tenants' nodes by callers of another tenant (or of none), as one node served
    /// them: batched, best-effort ([`ReadAccess`]); `dropped` counts those its buffer could not
    /// hold.
    Reads {
        node: u64,
        reads: Vec<ReadAccess>,
        dropped: u64,
    },
    /// The cluster version rose: every member runs a release that has it, with the membership
    /// at that point. The first record of a cluster's trail (release 0.1 kept none), and one
    /// more at each later rise.
    ClusterVersion {
        version: u32,
        voters: Vec<u64>,
        learners: Vec<u64>,
    },
    /// `/zookeeper/config` was rewritten: by a client's `reconfig` (`request`, as sent), or by
    /// the leader after a membership change on the admin port (`None`). `config` is the new
    /// content.
    Config {
        request: Option<String>,
        config: String,
    },
}

/// One read of a tenant's node by a caller outside that tenant, allowed or refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadAccess {
    /// When the serving node answered it (ms since the epoch).
    pub time_ms: i64,
    pub session: i64,
    /// The caller's identities (`scheme:id`), as its connection holds them.
    pub identities: Vec<String>,
    /// The caller's tenant, if any.
    pub tenant: Option<String>,
    /// The tenant that owns the node read.
    pub owner: String,
    pub op: String,
    pub path: String,
    /// The answer's ZooKeeper code (0: served; -102: NoAuth).
    pub err: i32,
}

/// The path a single (not multi) write names, as the client sent it; `None` for a request that
/// is not one of the audited single writes.
fn requested_path(req: &Request) -> Option<&str> {
    match req {
        Request::Create(r) | Request::Create2(r) | Request::CreateContainer(r) => Some(&r.path),
        Request::CreateTtl(r) => Some(&r.path),
        Request::Delete(r) => Some(&r.path),
        Request::SetData(r) => Some(&r.path),
        Request::SetAcl(r) => Some(&r.path),
        Request::Check(r) => Some(&r.path),
        _ => None,
    }
}

impl AuditAction {
    /// The data version of each path `req` writes (one per op), as the tree holds them before
    /// the write is applied: what [`AuditAction::of_write`] records as `version_before`.
    pub fn versions_before(tree: &crate::tree::DataTree, req: &Request) -> Vec<Option<i32>> {
        let version = |p: &str| tree.node(p).map(|n| n.version);
        match req {
            Request::Multi(ops) => ops.iter().map(|op| version(op.path())).collect(),
            single => requested_path(single)
                .map(|p| vec![version(p)])
                .unwrap_or_default(),
        }
    }

    /// Whether applying `req` may change what [`AuditAction::versions_before`] reads, so that
    /// it must be read before the apply: a delete (its node is gone after) and a multi (its
    /// ops may change one path several times). For any other write
    /// [`AuditAction::versions_before_applied`] derives the same versions after the apply,
    /// without a lookup for a set or create that succeeded (the common case).
    pub fn versions_change_in_apply(req: &Request) -> bool {
        matches!(req, Request::Multi(_) | Request::Delete(_))
    }

    /// [`AuditAction::versions_before`] of `req`, derived from `tree` as the apply of `req`
    /// left it and from the apply's outcome `applied`, for a `req` that
    /// [`AuditAction::versions_change_in_apply`] does not name. Exactly the versions the tree
    /// held before, because a single op either fails and changes nothing, or succeeds and:
    /// a set raised its node's version by one (wrapping, like the tree); a create found no
    /// node at the path it created (a sequential create's requested path is another one,
    /// which it left alone); a setACL or a check left the data version as it was.
    pub fn versions_before_applied(
        tree: &crate::tree::DataTree,
        req: &Request,
        applied: &Applied,
    ) -> Vec<Option<i32>> {
        debug_assert!(
            !Self::versions_change_in_apply(req),
            "read before the apply"
        );
        let version = |p: &str| tree.node(p).map(|n| n.version);
        let done = applied.err == synod_proto::ErrorCode::Ok;
        let Some(requested) = requested_path(req) else {
            return Vec::new();
        };
        let before = match &applied.response {
            Response::Stat(s) if done && matches!(req, Request::SetData(_)) => {
                Some(s.version.wrapping_sub(1))
            }
            Response::Create(r) if done && r.path == requested => None,
            Response::Create2(r) if done && r.path == requested => None,
            _ => version(requested),
        };
        vec![before]
    }

    /// The audit of client write `req` that apply answered with `applied`; `before` is
    /// [`AuditAction::versions_before`] of it.
    pub fn of_write(req: &Request, applied: &Applied, before: &[Option<i32>]) -> AuditAction {
        let err = applied.err.as_i32();
        let ops = match (req, &applied.response) {
            (Request::Multi(ops), Response::Multi(results)) => ops
                .iter()
                .zip(results)
                .map(|(op, res)| {
                    let (path, err, version) = match res {
                        MultiResult::Create { path, stat } => {
                            (path.clone(), 0, stat.map(|s| s.version))
                        }
                        MultiResult::SetData { stat } => {
                            (op.path().to_string(), 0, Some(stat.version))
                        }
                        MultiResult::Error(code) => (op.path().to_string(), code.as_i32(), None),
                        _ => (op.path().to_string(), 0, None),
                    };
                    AuditOp {
                        op: op.opcode().name().to_string(),
                        path,
                        err,
                        version,
                        version_before: None,
                    }
                })
                .collect(),
            (Request::Multi(ops), _) => ops
                .iter()
                .map(|op| AuditOp {
                    op: op.opcode().name().to_string(),
                    path: op.path().to_string(),
                    err,
                    version: None,
                    version_before: None,
                })
                .collect(),
            (req, response) => {
                let requested = requested_path(req).unwrap_or("");
                let (path, version) = match response {
                    Response::Create(r) => (r.path.clone(), Some(0)),
                    Response::Create2(r) => (r.path.clone(), Some(r.stat.version)),
                    Response::Stat(s) if matches!(req, Request::SetData(_)) => {
                        (requested.to_string(), Some(s.version))
                    }
                    _ => (requested.to_string(), None),
                };
                vec![AuditOp {
                    op: req.opcode().name().to_string(),
                    path,
                    err,
                    version,
                    version_before: None,
                }]
            }
        };
        let ops = ops
            .into_iter()
            .enumerate()
            .map(|(i, op)| AuditOp {
                version_before: before.get(i).copied().flatten(),
                ..op
            })
            .collect();
        AuditAction::Write {
            op: req.opcode().name().to_string(),
            err,
            ops,
        }
    }
}

/// One op of an audited write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditOp {
    pub op: String,
    pub path: String,
    /// Its own error code (in a failed multi: 0 before the failing op, -2 after it).
    pub err: i32,
    /// The node's data version after the op, where the reply says it.
    pub version: Option<i32>,
    /// The node's data version before the write (the whole write: in a multi, before its
    /// first op); `None` where the node did not exist.
    pub version_before: Option<i32>,
}

/// A record with the hash of the one before it and its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRecord {
    pub prev: Hash,
    pub hash: Hash,
    pub record: AuditRecord,
}

impl StoredRecord {
    /// Decodes a stored record that fills `v` exactly; a short, undecodable or longer one is an
    /// error (for tests: the store reads values with [`StoredRecord::decode_run`]).
    #[cfg(test)]
    pub fn decode_value(v: &[u8]) -> Result<StoredRecord, StoreError> {
        let (record, used) = Self::decode_prefix(v)?;
        if used != v.len() {
            return Err(StoreError::Audit(format!(
                "{} bytes after a stored record",
                v.len() - used
            )));
        }
        Ok(record)
    }

    /// Decodes the records of one stored value (an entry's, one after another; see the module
    /// documentation, "Layout"): one at least, each after the one before it in the same entry.
    pub fn decode_run(mut v: &[u8]) -> Result<Vec<StoredRecord>, StoreError> {
        let mut out: Vec<StoredRecord> = Vec::new();
        loop {
            let (record, used) = Self::decode_prefix(v)?;
            if let Some(before) = out.last() {
                let (before, zxid) = (before.record.zxid, record.record.zxid);
                if before >= zxid || zxid_index(before) != zxid_index(zxid) {
                    return Err(StoreError::Audit(format!(
                        "a stored value of records not of one entry in zxid order, at {zxid:#x}"
                    )));
                }
            }
            out.push(record);
            v = &v[used..];
            if v.is_empty() {
                return Ok(out);
            }
        }
    }

    /// Decodes the stored record at the start of `v`: it and how many bytes it took.
    fn decode_prefix(v: &[u8]) -> Result<(StoredRecord, usize), StoreError> {
        if v.len() < 64 {
            return Err(StoreError::Audit(format!(
                "a stored record of {} bytes",
                v.len()
            )));
        }
        let mut prev = [0u8; 32];
        let mut hash = [0u8; 32];
        prev.copy_from_slice(&v[..32]);
        hash.copy_from_slice(&v[32..64]);
        let (record, used) = crate::types::decode_prefix(&v[64..])?;
        Ok((StoredRecord { prev, hash, record }, 64 + used))
    }
}

/// A record as exported (JSON lines: `GET /audit`, `synod audit export`) and read back by
/// `synod audit verify --export`: the record's fields, with the hashes in hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedRecord {
    pub prev: String,
    pub hash: String,
    #[serde(flatten)]
    pub record: AuditRecord,
}

impl From<&StoredRecord> for ExportedRecord {
    fn from(r: &StoredRecord) -> Self {
        ExportedRecord {
            prev: hex(&r.prev),
            hash: hex(&r.hash),
            record: r.record.clone(),
        }
    }
}

impl TryFrom<ExportedRecord> for StoredRecord {
    type Error = StoreError;

    fn try_from(e: ExportedRecord) -> Result<Self, StoreError> {
        Ok(StoredRecord {
            prev: unhex(&e.prev)?,
            hash: unhex(&e.hash)?,
            record: e.record,
        })
    }
}

/// Lowercase hex of a hash.
pub fn hex(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// A hash from its hex; anything else is an `Audit` error.
pub fn unhex(s: &str) -> Result<Hash, StoreError> {
    let bad = || StoreError::Audit(format!("{s:?} is not a SHA-256 hash in hex"));
    if s.len() != 64 || !s.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// Where the chain restarts: after a snapshot install (records before it were never applied
/// here) or a retention prune (records up to it were deleted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// The zxid of the last record the anchor stands for.
    pub zxid: i64,
    /// That record's hash: the next record here must chain from it.
    pub hash: Hash,
}

/// The records of one replica. Cheap to clone (shared database).
#[derive(Clone)]
pub struct AuditStore {
    db: Arc<DB>,
    /// Held by [`AuditStore::anchor`] and [`AuditStore::prune`]: each rewrites the start anchor
    /// and deletes records, and the retention task may run while a snapshot is installed.
    anchor_lock: Arc<std::sync::Mutex<()>>,
}

impl AuditStore {
    /// Opens (creating if missing) the trail in `dir`.
    pub fn open(dir: &Path) -> Result<AuditStore, StoreError> {
        std::fs::create_dir_all(dir)?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(1);
        opts.set_keep_log_file_num(2);
        opts.set_max_log_file_size(4 << 20);
        opts.set_max_total_wal_size(16 << 20);
        let mut records = Options::default();
        records.set_write_buffer_size(4 << 20);
        records.set_max_write_buffer_number(2);
        records.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&Cache::new_lru_cache(RECORDS_BLOCK_CACHE));
        // The table files' index blocks live in that cache too, not beside it: held beside it
        // (RocksDB's default) they took 719,454 bytes for 50 MB of trail (about 1.4%) for as long
        // as it is kept — a year's trail by default, so memory that grows with the trail's size.
        table.set_cache_index_and_filter_blocks(true);
        records.set_block_based_table_factory(&table);
        let db = DB::open_cf_descriptors(
            &opts,
            dir,
            [
                ColumnFamilyDescriptor::new(CF_RECORDS, records),
                ColumnFamilyDescriptor::new(CF_META, Options::default()),
            ],
        )?;
        let store = AuditStore {
            db: Arc::new(db),
            anchor_lock: Default::default(),
        };
        store.cf(CF_RECORDS)?;
        store.check_format()?;
        Ok(store)
    }

    /// Refuses a store of a later format version than [`AUDIT_FORMAT`]; records that version in
    /// one of an earlier one (or none), synced, before this build writes to it.
    fn check_format(&self) -> Result<(), StoreError> {
        let found = match self.db.get_cf(self.cf(CF_META)?, KEY_FORMAT)? {
            Some(bytes) => decode::<u32>(&bytes)?,
            None => 1,
        };
        if found > AUDIT_FORMAT {
            return Err(StoreError::FormatVersion {
                what: "audit trail",
                found,
                supported: 1..=AUDIT_FORMAT,
            });
        }
        if found < AUDIT_FORMAT {
            let mut opts = rocksdb::WriteOptions::default();
            opts.set_sync(true);
            self.db
                .put_cf_opt(self.cf(CF_META)?, KEY_FORMAT, encode(&AUDIT_FORMAT)?, &opts)?;
        }
        Ok(())
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, StoreError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StoreError::Corrupt(format!("audit: missing column family {name}")))
    }

    /// Writes records (every entry's whole: apply's) in one batch, each entry's as one value
    /// (the module documentation, "Layout"), neither logged nor synced (see the module
    /// documentation: replaying the Raft log rewrites what a crash loses, and
    /// [`AuditStore::sync`] runs before a snapshot). An entry stored before is stored again with
    /// the same bytes (over the single record that a build before 0.5.5 kept under its first
    /// zxid; its later ones stay, and readers pass over them).
    pub fn append(&self, records: &RecordBuffer) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let cf = self.cf(CF_RECORDS)?;
        let mut batch = WriteBatch::default();
        for (first, value) in records.entries() {
            batch.put_cf(cf, key(first), value);
        }
        let mut opts = rocksdb::WriteOptions::default();
        opts.disable_wal(true);
        self.db.write_opt(batch, &opts)?;
        Ok(())
    }

    /// Makes every record written so far durable: flushes the records' memtable to a synced
    /// table file.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.db.flush_cf(self.cf(CF_RECORDS)?)?;
        Ok(())
    }

    /// The anchors, oldest first.
    pub fn anchors(&self) -> Result<Vec<Anchor>, StoreError> {
        match self.db.get_cf(self.cf(CF_META)?, KEY_ANCHORS)? {
            Some(bytes) => Ok(decode(&bytes)?),
            None => Ok(Vec::new()),
        }
    }

    /// Notes that the chain goes on from `head` (a snapshot was installed), durably.
    pub fn anchor(&self, head: &AuditHead) -> Result<(), StoreError> {
        let _one_at_a_time = self.anchor_lock.lock().unwrap_or_else(|p| p.into_inner());
        if head.count == 0 {
            return Ok(());
        }
        // The trail restarts at the snapshot's head: a trail is one unbroken chain from its
        // start anchor, so that an anchor can never hide a gap in the middle. Records after the
        // head were made by a history this replica has left; records before it are held by the
        // replicas that applied those entries.
        let anchors = vec![Anchor {
            zxid: head.zxid,
            hash: head.hash,
        }];
        let cf = self.cf(CF_RECORDS)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, key(0), key(i64::MAX));
        batch.put_cf(self.cf(CF_META)?, KEY_ANCHORS, encode(&anchors)?);
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts)?;
        Ok(())
    }

    /// Up to `limit` records with zxid ≥ `since` and ≤ `until`, in zxid order, that `keep`
    /// accepts, reading at most `scan_limit` records from `since` on (the records of `since`'s
    /// entry before it are decoded too, and passed over); and where to go on from (the zxid
    /// after the last record read) if the range was not read to its end — a page is full, or
    /// the scan limit cut it short — so that a caller paging through never misses records.
    pub fn scan(
        &self,
        since: i64,
        until: i64,
        limit: usize,
        scan_limit: usize,
        mut keep: impl FnMut(&StoredRecord) -> bool,
    ) -> Result<(Vec<StoredRecord>, Option<i64>), StoreError> {
        // From the first key of `since`'s entry: its record may be inside that entry's value.
        let since = since.max(0);
        let start = key(since & !((1 << POSITION_BITS) - 1));
        let mut out = Vec::new();
        let mut read = 0;
        if scan_limit == 0 || limit == 0 {
            return Ok((out, None));
        }
        for run in self.runs(IteratorMode::From(&start, Direction::Forward))? {
            for r in run? {
                let zxid = r.record.zxid;
                if zxid < since {
                    continue;
                }
                if zxid > until {
                    return Ok((out, None));
                }
                read += 1;
                if keep(&r) {
                    out.push(r);
                }
                if read >= scan_limit || out.len() >= limit {
                    return Ok((out, Some(zxid + 1)));
                }
            }
        }
        Ok((out, None))
    }

    /// Deletes records whose time is before `cutoff_ms` (a record without a time goes with the
    /// one before it), an entry's records all or none (they are stored together: the module
    /// documentation, "Layout"), at most `max` at a time (or one entry's, if that has more),
    /// keeping the last deleted one's hash as the start anchor. Returns how many were deleted.
    pub fn prune(&self, cutoff_ms: i64, max: usize) -> Result<usize, StoreError> {
        let _one_at_a_time = self.anchor_lock.lock().unwrap_or_else(|p| p.into_inner());
        let cf = self.cf(CF_RECORDS)?;
        let mut last: Option<StoredRecord> = None;
        let mut n = 0;
        let mut time = None;
        'runs: for run in self.runs(IteratorMode::Start)? {
            let run = run?;
            if max == 0 || (n > 0 && n + run.len() > max) {
                break;
            }
            let mut run_time = time;
            for r in &run {
                // A record without a time is as old as the timed one before it; with none
                // before it, it is kept (its age is unknown).
                run_time = r.record.time_ms.or(run_time);
                if run_time.is_none_or(|t| t >= cutoff_ms) {
                    break 'runs;
                }
            }
            time = run_time;
            n += run.len();
            last = run.into_iter().last();
        }
        let Some(last) = last else {
            return Ok(0);
        };
        let anchors = vec![Anchor {
            zxid: last.record.zxid,
            hash: last.hash,
        }];
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META)?, KEY_ANCHORS, encode(&anchors)?);
        batch.delete_range_cf(cf, key(0), key(last.record.zxid + 1));
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts)?;
        Ok(n)
    }

    /// What this trail's RocksDB holds in memory ([`crate::rocks_memory`]).
    pub fn memory(&self) -> Result<RocksMemory, StoreError> {
        crate::rocks_memory::of(&self.db, &[CF_RECORDS, CF_META])
    }

    /// Every record, in zxid order (for `synod audit verify` and export).
    pub fn all(&self) -> impl Iterator<Item = Result<StoredRecord, StoreError>> + '_ {
        let (runs, missing) = match self.runs(IteratorMode::Start) {
            Ok(runs) => (Some(runs), None),
            Err(e) => (None, Some(Err(e))),
        };
        missing
            .into_iter()
            .chain(runs.into_iter().flatten().flat_map(
                |run| -> Vec<Result<StoredRecord, StoreError>> {
                    match run {
                        Ok(records) => records.into_iter().map(Ok).collect(),
                        Err(e) => vec![Err(e)],
                    }
                },
            ))
    }

    /// The stored records from `from` on, an entry at a time ([`Runs`]).
    fn runs(&self, from: IteratorMode<'_>) -> Result<Runs<'_>, StoreError> {
        Ok(Runs {
            iter: self
                .db
                .iterator_cf_opt(self.cf(CF_RECORDS)?, scan_options(), from),
            passed: Vec::new(),
        })
    }
}

/// The records of a scan of the store, a stored value (an entry's records) at a time, each
/// record once. A record whose zxid the scan has passed is one that an older build stored
/// under a key of its own and that a replay stored again in its entry's value (the module
/// documentation, "Layout"): it is skipped, and must be that record — the same `prev` and
/// `hash`, and contents that match its hash. Anything else (a copy that differs, a record out
/// of order, a value not under its first record's zxid or holding records of two entries) is a
/// trail edited or diverged: an error.
struct Runs<'a> {
    /// Over the records' column family, in key (zxid) order.
    iter: rocksdb::DBIteratorWithThreadMode<'a, DB>,
    /// The zxids and hashes (`prev`, own) of the last records yielded (the last value's that had
    /// any): what a record must come after, and what a repeated one must match.
    passed: Vec<(i64, Hash, Hash)>,
}

impl Runs<'_> {
    /// Whether `r`, whose zxid the scan has passed, is the record yielded at that zxid.
    fn is_repeat(&self, r: &StoredRecord) -> Result<bool, StoreError> {
        let Ok(i) = self
            .passed
            .binary_search_by_key(&r.record.zxid, |&(z, _, _)| z)
        else {
            return Ok(false);
        };
        let (_, prev, hash) = self.passed[i];
        Ok(r.prev == prev && r.hash == hash && chain(&r.prev, &r.record)? == r.hash)
    }

    /// The next stored value's records, checked against its key.
    fn next_value(&mut self) -> Option<Result<Vec<StoredRecord>, StoreError>> {
        let (k, value) = match self.iter.next()? {
            Ok(kv) => kv,
            Err(e) => return Some(Err(e.into())),
        };
        let run = match StoredRecord::decode_run(&value) {
            Ok(run) => run,
            Err(e) => return Some(Err(e)),
        };
        let first = run[0].record.zxid;
        if *k != key(first) {
            return Some(Err(StoreError::Audit(format!(
                "the records from zxid {first:#x} are stored under another key"
            ))));
        }
        Some(Ok(run))
    }
}

impl Iterator for Runs<'_> {
    type Item = Result<Vec<StoredRecord>, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let mut run = match self.next_value()? {
                Ok(run) => run,
                Err(e) => return Some(Err(e)),
            };
            if let Some(&(last, _, _)) = self.passed.last() {
                let repeated = run.partition_point(|r| r.record.zxid <= last);
                for r in &run[..repeated] {
                    match self.is_repeat(r) {
                        Ok(true) => {}
                        Ok(false) => {
                            return Some(Err(StoreError::Audit(format!(
                                "the record of zxid {:#x} is out of order, or stored twice \
                                 with different contents",
                                r.record.zxid
                            ))))
                        }
                        Err(e) => return Some(Err(e)),
                    }
                }
                run.drain(..repeated);
            }
            if !run.is_empty() {
                self.passed.clear();
                self.passed
                    .extend(run.iter().map(|r| (r.record.zxid, r.prev, r.hash)));
                return Some(Ok(run));
            }
        }
    }
}

fn key(zxid: i64) -> [u8; 8] {
    (zxid.max(0) as u64).to_be_bytes()
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Records checked.
    pub records: u64,
    /// The first and last zxid checked.
    pub first: Option<i64>,
    pub last: Option<i64>,
    /// Stretches the chain was checked in (1 + the gaps crossed at anchors).
    pub stretches: u64,
    /// Whether the chain reached the replicated head given to [`verify`] and matched it.
    pub head_matched: bool,
}

/// Checks a trail: one unbroken chain from its start. Every record's hash is
/// `SHA-256(prev ‖ record)`, each record's `prev` is the hash of the record before it — of the
/// start anchor for the first record, if there is one — and zxids grow. A trail has at most one
/// anchor, at its start (where retention pruned it, or where this replica installed a
/// snapshot): an anchor can never stand for a gap in the middle. If `head` (the replicated head
/// from a snapshot or a live tree) is covered by the trail, the record (or the anchor) at its
/// zxid has its hash. The error names the first record that does not follow.
pub fn verify(
    records: impl IntoIterator<Item = Result<StoredRecord, StoreError>>,
    anchors: &[Anchor],
    head: Option<&AuditHead>,
) -> Result<Verified, StoreError> {
    let broken = |zxid: i64, why: &str| {
        Err(StoreError::Audit(format!(
            "the chain breaks at the record of zxid {zxid:#x}: {why}"
        )))
    };
    if anchors.len() > 1 {
        return Err(StoreError::Audit(format!(
            "{} anchors: a trail has one start, so an anchor cannot stand for a gap in the middle",
            anchors.len()
        )));
    }
    let start = anchors.first();
    let mut out = Verified {
        records: 0,
        first: None,
        last: None,
        stretches: 1,
        head_matched: head.is_none_or(|h| h.count == 0)
            || head
                .zip(start)
                .is_some_and(|(h, a)| h.zxid == a.zxid && h.hash == a.hash),
    };
    if let (Some(h), Some(a)) = (head, start) {
        if h.zxid == a.zxid && h.hash != a.hash {
            return broken(a.zxid, "the trail's start is not the replicated head");
        }
    }
    let mut prev: Option<Hash> = start.map(|a| a.hash);
    let mut last_zxid = start.map_or(i64::MIN, |a| a.zxid);
    for r in records {
        let r = r?;
        let zxid = r.record.zxid;
        if zxid <= last_zxid {
            return broken(
                zxid,
                "zxids do not grow (or it lies before the trail's start)",
            );
        }
        if let Some(p) = prev {
            if r.prev != p {
                return broken(
                    zxid,
                    "it does not follow the record (or the start) before it",
                );
            }
        }
        if chain(&r.prev, &r.record)? != r.hash {
            return broken(zxid, "its contents do not match its hash");
        }
        if let Some(h) = head {
            if h.zxid == zxid {
                if h.hash != r.hash {
                    return broken(zxid, "it is not the replicated head");
                }
                out.head_matched = true;
            }
        }
        prev = Some(r.hash);
        last_zxid = zxid;
        out.first.get_or_insert(zxid);
        out.last = Some(zxid);
        out.records += 1;
    }
    if let Some(h) = head {
        if !out.head_matched && out.last.is_some_and(|l| l >= h.zxid) {
            return broken(h.zxid, "the replicated head's record is missing");
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::zxid;

    fn record(zxid: i64, path: &str) -> AuditRecord {
        AuditRecord {
            zxid,
            time_ms: Some(1000 + zxid),
            session: 7,
            identities: vec!["ip:127.0.0.1".into()],
            tenant: None,
            action: AuditAction::Write {
                op: "create".into(),
                err: 0,
                ops: vec![AuditOp {
                    op: "create".into(),
                    path: path.into(),
                    err: 0,
                    version: Some(0),
                    version_before: None,
                }],
            },
        }
    }

    /// Writes `records` to `store` in batches of `batch` (as apply does, one batch per run of
    /// entries) and makes them durable, in table files.
    fn store_synced(
        store: &AuditStore,
        records: &[StoredRecord],
        batch: usize,
    ) -> Result<(), StoreError> {
        for chunk in records.chunks(batch) {
            let encoded = chunk
                .iter()
                .map(Encoded::of)
                .collect::<Result<Vec<_>, _>>()?;
            store.append(&RecordBuffer::of(&encoded))?;
        }
        store.sync()
    }

    fn trail(n: i64) -> (Vec<StoredRecord>, AuditHead) {
        let mut head = AuditHead::default();
        let records = (1..=n)
            .map(|z| head.append(record(z, &format!("/n{z}"))).expect("append"))
            .collect();
        (records, head)
    }

    #[test]
    fn an_intact_trail_verifies_and_any_edit_is_found() -> Result<(), StoreError> {
        let (records, head) = trail(5);
        let ok = verify(records.iter().cloned().map(Ok), &[], Some(&head))?;
        assert_eq!((ok.records, ok.stretches, ok.head_matched), (5, 1, true));
        // An edited record, a removed one, swapped ones, a forged head.
        let mut edited = records.clone();
        if let AuditAction::Write { ops, .. } = &mut edited[2].record.action {
            ops[0].path = "/other".into();
        }
        assert!(verify(edited.into_iter().map(Ok), &[], Some(&head)).is_err());
        let mut removed = records.clone();
        removed.remove(2);
        assert!(verify(removed.into_iter().map(Ok), &[], Some(&head)).is_err());
        let mut swapped = records.clone();
        swapped.swap(1, 2);
        assert!(verify(swapped.into_iter().map(Ok), &[], None).is_err());
        let forged = AuditHead {
            hash: [9; 32],
            ..head
        };
        assert!(verify(records.iter().cloned().map(Ok), &[], Some(&forged)).is_err());
        // Recomputing every later hash does not help against the replicated head.
        let mut rewritten = AuditHead::default();
        let redone: Vec<StoredRecord> = records
            .iter()
            .map(|r| {
                let mut rec = r.record.clone();
                rec.session = 8;
                rewritten.append(rec).expect("append")
            })
            .collect();
        assert!(verify(redone.into_iter().map(Ok), &[], Some(&head)).is_err());
        Ok(())
    }

    /// A record borrowed from apply's identities is stored as the owned record with those
    /// identities named `scheme:id`: the same value, the same chain.
    #[test]
    fn a_borrowed_record_is_stored_as_the_owned_one() -> Result<(), StoreError> {
        let id = |scheme: &str, id: &str| Id {
            scheme: scheme.into(),
            id: id.into(),
        };
        let cases: [(&[Id], Option<&str>); 4] = [
            (&[], None),
            (&[id("ip", "127.0.0.1")], None),
            (
                &[id("x509", "CN=lab-7,O=Lab"), id("org", "Lab")],
                Some("lab"),
            ),
            (
                &[id("digest", "ann:x1/y2+=="), id("", ""), id("é", ":")],
                Some(""),
            ),
        ];
        let (mut owned_head, mut borrowed_head) = (AuditHead::default(), AuditHead::default());
        let mut buffer = RecordBuffer::default();
        for (zxid, (ids, tenant)) in (1..).zip(cases) {
            let owned = AuditRecord {
                identities: ids
                    .iter()
                    .map(|i| format!("{}:{}", i.scheme, i.id))
                    .collect(),
                tenant: tenant.map(str::to_string),
                ..record(zxid, "/a")
            };
            let borrowed = AuditRecordRef {
                zxid,
                time_ms: owned.time_ms,
                session: owned.session,
                identities: Identities(ids),
                tenant,
                action: &owned.action,
            };
            let start = buffer.bytes.len();
            buffer.append_borrowed(&mut borrowed_head, &borrowed)?;
            assert_eq!(
                buffer.bytes[start..],
                owned_head.append_encoded(&owned)?.value[..],
                "{ids:?} {tenant:?}"
            );
        }
        assert_eq!(borrowed_head, owned_head);
        Ok(())
    }

    #[test]
    fn exported_records_read_back_exactly() -> Result<(), StoreError> {
        let (records, _) = trail(2);
        for r in &records {
            let back = StoredRecord::try_from(ExportedRecord::from(r))?;
            assert_eq!(&back, r);
        }
        assert!(unhex("zz").is_err());
        Ok(())
    }

    #[test]
    fn a_trail_starts_at_its_anchor_and_an_anchor_hides_no_gap() -> Result<(), StoreError> {
        let (records, head) = trail(9);
        // Pruned (or a snapshot installed) up to 3: the trail starts there.
        let at3 = Anchor {
            zxid: 3,
            hash: records[2].hash,
        };
        let ok = verify(records[3..].iter().cloned().map(Ok), &[at3], Some(&head))?;
        assert_eq!((ok.records, ok.first), (6, Some(4)));
        assert!(verify(records[4..].iter().cloned().map(Ok), &[at3], Some(&head)).is_err());
        // A record edited and an anchor forged right after it, to restart the chain there:
        // refused, a trail has one start.
        let mut edited = records.clone();
        edited[5].record.session = 99;
        edited[5].hash = chain(&edited[5].prev, &edited[5].record)?;
        let forged = Anchor {
            zxid: 6,
            hash: records[5].hash,
        };
        assert!(verify(edited.iter().cloned().map(Ok), &[forged], Some(&head)).is_err());
        assert!(verify(edited.into_iter().map(Ok), &[at3, forged], Some(&head)).is_err());
        // A replica that installed the snapshot at the head itself and has applied nothing
        // since: its trail is the anchor alone, and matches.
        let at_head = Anchor {
            zxid: head.zxid,
            hash: head.hash,
        };
        assert!(verify(std::iter::empty(), &[at_head], Some(&head))?.head_matched);
        Ok(())
    }

    /// `n` records, one per log entry (entries 1 to `n`, as serial writes make them), timed
    /// 1001 to 1000 + `n`.
    fn one_per_entry(n: u64) -> (Vec<StoredRecord>, AuditHead) {
        let mut head = AuditHead::default();
        let records = (1..=n)
            .map(|i| {
                let r = AuditRecord {
                    time_ms: Some(1000 + i as i64),
                    ..record(zxid(i, 0), &format!("/n{i}"))
                };
                head.append(r).expect("append")
            })
            .collect();
        (records, head)
    }

    #[test]
    fn the_store_keeps_scans_prunes_and_anchors() -> Result<(), StoreError> {
        let dir = tempfile::tempdir()?;
        let store = AuditStore::open(dir.path())?;
        let (records, head) = one_per_entry(6);
        store_synced(&store, &records, 6)?;
        let (got, next) = store.scan(zxid(3, 0), i64::MAX, 2, 100, |_| true)?;
        assert_eq!((got, next), (records[2..4].to_vec(), Some(zxid(4, 0) + 1)));
        // A scan cut short by its read limit says where to go on, even with nothing kept.
        let (got, next) = store.scan(0, i64::MAX, 10, 3, |r| r.record.zxid > zxid(5, 0))?;
        assert_eq!((got.len(), next), (0, Some(zxid(3, 0) + 1)));
        let (_, next) = store.scan(0, i64::MAX, 10, 100, |_| true)?;
        assert_eq!(next, None, "read to the end");
        // Prune the records before time 1003 (entries 1 and 2).
        assert_eq!(store.prune(1003, 100)?, 2);
        let anchors = store.anchors()?;
        assert_eq!(
            anchors,
            [Anchor {
                zxid: zxid(2, 0),
                hash: records[1].hash
            }]
        );
        let ok = verify(store.all(), &anchors, Some(&head))?;
        assert_eq!((ok.records, ok.first), (4, Some(zxid(3, 0))));
        // An installed snapshot at entry 4: the trail restarts there, every local record
        // dropped.
        let mut at4 = AuditHead::default();
        for r in &records[..4] {
            at4.append(r.record.clone())?;
        }
        store.anchor(&at4)?;
        assert_eq!(store.all().count(), 0);
        assert!(verify(store.all(), &store.anchors()?, Some(&at4))?.head_matched);
        // Records untimed (a session's opening) go with the timed one before them, and are
        // kept when none is before them.
        let untimed = |zxid: i64| AuditRecord {
            time_ms: None,
            ..record(zxid, "/s")
        };
        let mut head = at4;
        let next = [
            untimed(zxid(5, 0)),
            record(zxid(6, 0), "/t"),
            untimed(zxid(7, 0)),
        ];
        let encoded = next
            .iter()
            .map(|r| head.append_encoded(r))
            .collect::<Result<Vec<_>, _>>()?;
        store.append(&RecordBuffer::of(&encoded))?;
        assert_eq!(
            store.prune(i64::MAX, 100)?,
            0,
            "an untimed first record is kept"
        );
        Ok(())
    }

    /// `entries` log entries (1 to `entries`) of `per_entry` records each, as apply makes them
    /// under write load; an entry's records share its time, 1000 + its index.
    fn batched(entries: u64, per_entry: usize) -> (Vec<Encoded>, Vec<StoredRecord>, AuditHead) {
        let mut head = AuditHead::default();
        let (mut encoded, mut stored) = (Vec::new(), Vec::new());
        for i in 1..=entries {
            for p in 0..per_entry {
                let r = AuditRecord {
                    time_ms: Some(1000 + i as i64),
                    ..record(zxid(i, p), &format!("/e{i}/r{p}"))
                };
                let prev = head.hash;
                encoded.push(head.append_encoded(&r).expect("append"));
                stored.push(StoredRecord {
                    prev,
                    hash: head.hash,
                    record: r,
                });
            }
        }
        (encoded, stored, head)
    }

    /// A key and its value, as stored.
    type Stored = (Vec<u8>, Vec<u8>);

    /// The keys and values of the records' column family, in order.
    fn raw(store: &AuditStore) -> Result<Vec<Stored>, StoreError> {
        let cf = store.cf(CF_RECORDS)?;
        store
            .db
            .iterator_cf(cf, IteratorMode::Start)
            .map(|kv| {
                let (k, v) = kv?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }

    /// An entry's records are one value under the first one's zxid; a lone record's value is
    /// its stored form alone, as every record's was before release 0.5.5. Scans, paging,
    /// verification and retention see the records one by one, wherever a value starts.
    #[test]
    fn an_entrys_records_are_one_value_and_read_one_by_one() -> Result<(), StoreError> {
        let dir = tempfile::tempdir()?;
        let store = AuditStore::open(dir.path())?;
        let (encoded, records, head) = batched(4, 3);
        let (lone, lone_record, _) = {
            let mut h = head;
            let r = record(zxid(5, 0), "/lone");
            let prev = h.hash;
            let e = h.append_encoded(&r)?;
            let s = StoredRecord {
                prev,
                hash: h.hash,
                record: r,
            };
            (e, s, h)
        };
        // One apply of entries 1 to 4, then one of entry 5.
        store.append(&RecordBuffer::of(&encoded))?;
        store.append(&RecordBuffer::of(std::slice::from_ref(&lone)))?;
        let stored = raw(&store)?;
        let keys: Vec<Vec<u8>> = stored.iter().map(|(k, _)| k.clone()).collect();
        let expected: Vec<Vec<u8>> = [1, 2, 3, 4, 5]
            .iter()
            .map(|&i| key(zxid(i, 0)).to_vec())
            .collect();
        assert_eq!(keys, expected, "one key per entry");
        let concatenated: Vec<u8> = encoded[3..6].iter().flat_map(|e| e.value.clone()).collect();
        assert_eq!(stored[1].1, concatenated);
        assert_eq!(stored[4].1, lone.value, "a lone record is stored as before");
        assert_eq!(StoredRecord::decode_value(&stored[4].1)?, lone_record);
        let mut all = records.clone();
        all.push(lone_record);
        assert_eq!(store.all().collect::<Result<Vec<_>, _>>()?, all);
        assert!(verify(store.all(), &[], None)?.head_matched);
        // A scan from the middle of an entry, a page of two: the next page starts after it.
        let (got, next) = store.scan(zxid(2, 1), i64::MAX, 2, 100, |_| true)?;
        assert_eq!((got, next), (records[4..6].to_vec(), Some(zxid(2, 2) + 1)));
        // Paging one record at a time reads the whole trail once, in order.
        let (mut paged, mut since) = (Vec::new(), Some(0));
        while let Some(from) = since {
            let (page, next) = store.scan(from, i64::MAX, 1, 100, |_| true)?;
            paged.extend(page);
            since = next;
        }
        assert_eq!(paged, all);
        // Up to a zxid inside an entry.
        let (got, next) = store.scan(0, zxid(1, 1), 100, 100, |_| true)?;
        assert_eq!((got, next), (records[..2].to_vec(), None));
        // Retention deletes whole entries: a cutoff inside entry 3's time keeps entry 3, and a
        // limit smaller than an entry still deletes one entry.
        assert_eq!(store.prune(1003, 1)?, 3, "one entry, though over the limit");
        assert_eq!(
            store.prune(1003, 4)?,
            3,
            "entry 2; entry 3 is over the limit"
        );
        assert_eq!(store.prune(1003, 100)?, 0, "entry 3 is not due");
        assert_eq!(
            store.anchors()?,
            [Anchor {
                zxid: zxid(2, 2),
                hash: records[5].hash
            }]
        );
        let ok = verify(store.all(), &store.anchors()?, None)?;
        assert_eq!((ok.records, ok.first), (7, Some(zxid(3, 0))));
        Ok(())
    }

    /// A trail that an older build stored a record per key, whose entries are replayed after
    /// the upgrade (stored again as one value per entry): every record is read once. A record
    /// stored twice with different hashes is an error, not a choice.
    #[test]
    fn records_stored_one_per_key_read_once_after_their_entry_is_stored_again(
    ) -> Result<(), StoreError> {
        let dir = tempfile::tempdir()?;
        let store = AuditStore::open(dir.path())?;
        let (encoded, records, head) = batched(3, 3);
        // The older build: a key per record.
        let cf = store.cf(CF_RECORDS)?;
        for e in &encoded {
            store.db.put_cf(cf, key(e.zxid), &e.value)?;
        }
        assert_eq!(store.all().collect::<Result<Vec<_>, _>>()?, records);
        // Entries 2 and 3 replayed by this build.
        store.append(&RecordBuffer::of(&encoded[3..]))?;
        let stored = raw(&store)?;
        assert_eq!(stored.len(), 9, "the singles after an entry's first stay");
        let run: Vec<u8> = encoded[3..6].iter().flat_map(|e| e.value.clone()).collect();
        assert_eq!(stored[3], (key(zxid(2, 0)).to_vec(), run));
        assert_eq!(store.all().collect::<Result<Vec<_>, _>>()?, records);
        assert!(verify(store.all(), &[], Some(&head))?.head_matched);
        let (got, next) = store.scan(zxid(2, 2), i64::MAX, 2, 100, |_| true)?;
        assert_eq!((got, next), (records[5..7].to_vec(), Some(zxid(3, 0) + 1)));
        assert_eq!(store.prune(1003, 100)?, 6);
        assert_eq!(store.all().collect::<Result<Vec<_>, _>>()?, records[6..]);
        // A single left behind that differs from its entry's run: in its hash, or in its
        // contents under the same hashes.
        let genuine = StoredRecord::decode_value(&encoded[7].value)?;
        let mut forged_hash = genuine.clone();
        forged_hash.hash = [7; 32];
        let mut forged_body = genuine.clone();
        forged_body.record.session = 99;
        for forged in [forged_hash, forged_body] {
            store
                .db
                .put_cf(cf, key(genuine.record.zxid), Encoded::of(&forged)?.value)?;
            assert!(store.all().any(|r| r.is_err()), "{forged:?}");
        }
        store
            .db
            .put_cf(cf, key(genuine.record.zxid), &encoded[7].value)?;
        assert_eq!(store.all().collect::<Result<Vec<_>, _>>()?, records[6..]);
        // A value under a key other than its first record's zxid.
        store.db.put_cf(cf, key(zxid(9, 0)), &encoded[8].value)?;
        assert!(store.all().any(|r| r.is_err()));
        Ok(())
    }

    /// A trail records its format version at open; one of a later version is refused.
    #[test]
    fn a_trail_of_a_later_format_is_refused() -> Result<(), StoreError> {
        let dir = tempfile::tempdir()?;
        let store = AuditStore::open(dir.path())?;
        let meta = store.cf(CF_META)?;
        assert_eq!(
            store.db.get_cf(meta, KEY_FORMAT)?,
            Some(encode(&AUDIT_FORMAT)?)
        );
        store
            .db
            .put_cf(meta, KEY_FORMAT, encode(&(AUDIT_FORMAT + 1))?)?;
        drop(store);
        match AuditStore::open(dir.path()) {
            Err(e @ StoreError::FormatVersion { found, .. }) if found == AUDIT_FORMAT + 1 => {
                assert_eq!(
                    e.to_string(),
                    "audit trail format version 3; this synod reads versions 1 to 2"
                );
            }
            other => panic!(
                "a trail of format {}: {:?}",
                AUDIT_FORMAT + 1,
                other.map(|_| "opened")
            ),
        }
        Ok(())
    }

    /// A stored value is one record or more, each after the one before; anything else is an
    /// error.
    #[test]
    fn a_stored_value_is_records_in_zxid_order() -> Result<(), StoreError> {
        let (encoded, records, _) = batched(1, 2);
        let two: Vec<u8> = encoded.iter().flat_map(|e| e.value.clone()).collect();
        assert_eq!(StoredRecord::decode_run(&two)?, records);
        assert!(StoredRecord::decode_value(&two).is_err(), "two are not one");
        let swapped: Vec<u8> = encoded.iter().rev().flat_map(|e| e.value.clone()).collect();
        assert!(StoredRecord::decode_run(&swapped).is_err());
        let (two_entries, _, _) = batched(2, 1);
        let across: Vec<u8> = two_entries.iter().flat_map(|e| e.value.clone()).collect();
        assert!(
            StoredRecord::decode_run(&across).is_err(),
            "one value, one entry"
        );
        let mut trailing = two.clone();
        trailing.push(0);
        assert!(StoredRecord::decode_run(&trailing).is_err());
        assert!(StoredRecord::decode_run(&[]).is_err());
        Ok(())
    }

    /// Reading the whole trail (verification, export, retention, a filtered `GET /audit`)
    /// keeps none of it in the block cache: a node's memory does not grow with the trail's size
    /// each time an operator reads it.
    #[test]
    fn scans_of_the_whole_trail_leave_the_block_cache_empty() -> Result<(), StoreError> {
        let dir = tempfile::tempdir()?;
        let store = AuditStore::open(dir.path())?;
        // About 6 MiB of records in table files: several times the records' cache.
        let (records, head) = one_per_entry(30_000);
        store_synced(&store, &records, 1_000)?;
        assert!(verify(store.all(), &[], Some(&head))?.head_matched);
        let (kept, _) = store.scan(0, i64::MAX, 10, usize::MAX, |r| r.record.zxid < 0)?;
        assert!(kept.is_empty());
        assert_eq!(
            store.prune(0, usize::MAX)?,
            0,
            "nothing is older than time 0"
        );
        let cached = store.memory()?.block_cache;
        assert!(
            cached <= RECORDS_BLOCK_CACHE as u64 / 4,
            "{cached} bytes of the trail left in the block cache"
        );
        Ok(())
    }

    #[test]
    fn a_record_is_stored_as_its_hash_chain_says() -> Result<(), StoreError> {
        // One path short, one longer than the room first reserved: the buffer grows once.
        let long = format!("/{}", "x".repeat(2 * RECORD_CAPACITY));
        let mut head = AuditHead::default();
        for (zxid, path) in [(1, "/a"), (2, long.as_str()), (3, "/b")] {
            let prev = head.hash;
            let r = record(zxid, path);
            let value = head.append_encoded(&r)?.value;
            let body = encode(&r)?;
            assert_eq!(&value[..32], &prev);
            assert_eq!(&value[32..64], &chain(&prev, &r)?);
            assert_eq!(&value[64..], &body[..]);
            assert_eq!(head.hash, chain(&prev, &r)?);
        }
        Ok(())
    }

    /// The single writes the proptest below applies: `(kind, path, version)`.
    fn write(kind: u8, path: &str, version: i32) -> Request {
        use synod_proto::records::{
            CheckVersionRequest, CreateRequest, CreateTtlRequest, DeleteRequest, SetAclRequest,
            SetDataRequest,
        };
        use synod_proto::{Acl, CreateMode};
        let create = |mode: CreateMode| CreateRequest {
            path: path.into(),
            data: Some(bytes::Bytes::from_static(b"d")),
            acl: Acl::open_unsafe(),
            flags: mode.flags(),
        };
        match kind {
            0 => Request::Create(create(CreateMode::Persistent)),
            1 => Request::Create2(create(CreateMode::PersistentSequential)),
            2 => Request::CreateContainer(create(CreateMode::Container)),
            3 => Request::CreateTtl(CreateTtlRequest {
                path: path.into(),
                data: None,
                acl: Acl::open_unsafe(),
                flags: CreateMode::PersistentWithTtl.flags(),
                ttl: 60_000,
            }),
            4 | 5 => Request::SetData(SetDataRequest {
                path: path.into(),
                data: Some(bytes::Bytes::from_static(b"set")),
                version,
            }),
            // Read-only for everyone: later writes of the node fail with NoAuth.
            6 => Request::SetAcl(SetAclRequest {
                path: path.into(),
                acl: Acl::read_unsafe(),
                version,
            }),
            7 => Request::Check(CheckVersionRequest {
                path: path.into(),
                version,
            }),
            _ => Request::Delete(DeleteRequest {
                path: path.into(),
                version,
            }),
        }
    }

    proptest::proptest! {
        /// What apply derives after a single write is what the tree held before it, for any
        /// outcome: done, NoNode, NodeExists, BadVersion, NoAuth, a sequential create.
        #[test]
        fn versions_before_derived_after_the_apply_are_those_read_before(
            ops in proptest::collection::vec((0u8..9, 0usize..4, -1i32..3), 1..60),
        ) {
            use crate::tree::{Caller, DataTree, Txn};
            let paths = ["/a", "/a/b", "/b", "/a-"];
            let mut tree = DataTree::new();
            for (i, (kind, p, version)) in ops.into_iter().enumerate() {
                let req = write(kind, paths[p], version);
                let read = AuditAction::versions_before(&tree, &req);
                let txn = Txn {
                    zxid: i as i64 + 1,
                    time: 1000,
                    caller: Caller { session_id: 0, auth: &[] },
                };
                let applied = tree.apply(txn, &req);
                if !AuditAction::versions_change_in_apply(&req) {
                    let derived = AuditAction::versions_before_applied(&tree, &req, &applied);
                    proptest::prop_assert_eq!(&derived, &read, "{:?} -> {:?}", req, applied.err);
                }
            }
        }
    }
}
