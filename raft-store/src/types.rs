//! The openraft type configuration and the log entry payload. An entry carries everything `apply`
//! needs to decide the outcome on every replica alike: the proposer stamps the wall-clock time,
//! the caller's session and identities, and the request itself (as its jute bytes); the state
//! decides the rest.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::in_place::Decoded;
use crate::tenants::Tenant;

/// A node's id in the cluster (1-based, from the configuration).
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// synod's openraft types: the log entries carry [`Command`]s; `apply` answers each with a
    /// [`CommandResult`]; nodes are reached at their peer address ([`openraft::BasicNode::addr`]).
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = crate::snapshot_data::SnapshotData,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The proposing node and its request number: `apply` on that node hands the outcome to the
/// waiting client connection. Deterministic data, ignored by the other replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Origin {
    /// The node that proposed the command (the only one where a client waits for it).
    pub node: NodeId,
    /// That node's number for the waiting request.
    pub request: u64,
}

/// A replicated command (the payload of a normal log entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Open a session; its id is derived from the entry's log index and the command's position
    /// in it (see [`session_id`]).
    CreateSession {
        /// The connection waiting for the new session.
        origin: Origin,
        /// The timeout negotiated with the client.
        timeout_ms: i32,
        /// The password, chosen by the proposer, that the client needs to resume the session.
        passwd: Bytes,
    },
    /// End a session and delete its ephemerals (client close or leader-detected expiry).
    CloseSession {
        /// The closing client's request; `None` for an expiry.
        origin: Option<Origin>,
        session_id: i64,
    },
    /// A client write: the request's opcode and jute body, as the client sent them.
    Write {
        /// The connection waiting for the reply.
        origin: Origin,
        /// The caller's session (ephemeral owner; a write from an ended session fails).
        session_id: i64,
        /// Milliseconds since the epoch at the proposer: ctime/mtime of what the write changes.
        time_ms: i64,
        /// The caller's identities (scheme, id), for ACL checks in `apply`.
        auth: Vec<(String, String)>,
        /// The request's opcode, as the client sent it (decoded in `apply`).
        opcode: i32,
        /// The request's jute body (one that does not decode fails with `MarshallingError`).
        body: Bytes,
    },
    /// Delete container / TTL nodes that the leader found due at `time_ms`; `apply` re-checks.
    Reap { time_ms: i64, paths: Vec<String> },
    /// Group commit: the commands the leader had queued while its previous entry was being
    /// written, applied in order as independent commands (not all-or-nothing). Each command gets
    /// its own zxid ([`zxid`] of the entry's index and its position). Never nested.
    ///
    /// Shared, not owned: openraft clones every entry it reads back (once per follower it
    /// replicates to, once to apply it), and a clone of a batch is then one reference count,
    /// not a copy of every command. Encoded exactly as a `Vec` (a length, then the commands).
    Batch(Arc<[Command]>),
    /// An operator declares, changes or removes a tenant (admin port). Ordered with the writes:
    /// every write applied after it resolves `tenant:` ACLs and quotas with the new table.
    Tenant {
        /// The admin request waiting for the outcome.
        origin: Origin,
        /// The proposer's time: ctime of a home it creates.
        time_ms: i64,
        change: TenantChange,
    },
    /// Open a session for a client with these identities, charged to its tenant's session
    /// quota (refused past it). What the handshake proposes; [`Command::CreateSession`], without
    /// identities, is what older log entries carry.
    OpenSession {
        /// The connection waiting for the new session.
        origin: Origin,
        /// The timeout negotiated with the client.
        timeout_ms: i32,
        /// The password, chosen by the proposer, that the client needs to resume the session.
        passwd: Bytes,
        /// The connection's identities (scheme, id), stamped by the proposer.
        auth: Vec<(String, String)>,
    },
    /// Reads across tenants that `node` served, for the audit trail (changes nothing else).
    AuditReads {
        /// The proposer's time.
        time_ms: i64,
        node: NodeId,
        reads: Vec<crate::audit::ReadAccess>,
        /// Reads the node's buffer had no room for.
        dropped: u64,
    },
    /// The leader raises the cluster version once every member runs a release that reads and
    /// writes its state (see [`CLUSTER_VERSION`]). Never lowers it.
    ClusterVersion {
        /// The new cluster version.
        version: u32,
    },
    /// ZooKeeper's view of the membership goes into `/zookeeper/config` (see
    /// [`crate::tree::CONFIG_NODE`]): the leader writes it after every membership change, and a
    /// client's `reconfig` ends with it. Applied from [`CONFIG_NODE_SINCE`] only.
    Config {
        /// The `reconfig` request waiting for the new configuration (`None`: the leader's own
        /// update after a change made on the admin port).
        origin: Option<Origin>,
        /// The proposer's time: mtime of the config node.
        time_ms: i64,
        /// One `server.N=...` line per member, in ZooKeeper's dynamic-config format, each
        /// ending in a newline; apply adds the `version=` line.
        members: String,
        /// For the audit trail: the `reconfig` request as the client sent it (`None` for the
        /// leader's own update), its session and its identities.
        request: Option<String>,
        session_id: i64,
        auth: Vec<(String, String)>,
    },
}

/// The cluster version of the replicated state a tree starts with, and that a tree loaded from
/// a snapshot without one has: the formats of release 0.1 (log entries, snapshot data). A
/// cluster at this version writes nothing that a 0.1 node cannot read.
pub const BASE_CLUSTER_VERSION: u32 = 1;

/// The highest cluster version this build can apply and write: 2 since release 0.2 (tenants,
/// sessions opened with their identities, the audit trail, the cluster version in snapshots),
/// 3 since release 0.3 (see below).
///
/// Contract: what changes the replicated state's encoding (a new [`Command`] variant, a field a
/// snapshot carries) is written only once the tree's cluster version has it, and the leader
/// raises that version (by a [`Command::ClusterVersion`] entry) only once every member has
/// said, in its peer handshake, that its build reads it. A member whose build is older than the
/// cluster version cannot join. Adjacent releases interoperate: release N reads every entry
/// and snapshot that release N-1 writes.
///
/// Version 3 (release 0.3) changes nothing in the replicated state: it is the point from which
/// followers forward writes in groups ([`FORWARD_GROUP_SINCE`]), a message only release 0.3
/// reads, and the cluster version is how a node knows that every member does. Version 4
/// (release 0.4) changes nothing in it either: from it, a follower asks for a read point
/// saying that its own vote names the leader ([`READ_INDEX_FOLLOWING_SINCE`]). Nor does
/// version 5 (release 0.5): from it, a leader asks a follower for its saved vote instead of a
/// heartbeat round for its own reads ([`LEADER_READ_ON_FOLLOWER_VOTE_SINCE`]).
pub const CLUSTER_VERSION: u32 = 5;

/// The cluster version from which every replica keeps the audit trail's chain.
pub const AUDIT_SINCE: u32 = 2;

/// The cluster version from which a follower forwards its clients' writes to the leader in
/// groups, one peer message and one answer for many (the server's `PeerRequest::ForwardGroup`);
/// before it, one message per write, as releases 0.1 and 0.2 read them. Not a format of the
/// replicated state: the leader puts a group's writes in an ordinary batch entry.
pub const FORWARD_GROUP_SINCE: u32 = 3;

/// The cluster version from which a follower asks the leader for a read point with its own vote
/// (the server's `PeerRequest::ReadIndexFollowing`), as its log store saved it after the reads
/// it serves began, and a leader of three voters answers it without a heartbeat round (design.md
/// §6); before it, every follower's read point costs a round (`PeerRequest::ReadIndex`), as
/// release 0.3 reads them. Not a format of the replicated state.
pub const READ_INDEX_FOLLOWING_SINCE: u32 = 4;

/// The cluster version from which a leader confirms a read point for its own reads on the saved
/// votes of as many followers as make a majority with its own (the server's
/// `PeerRequest::SavedVote`, asked after those reads began) instead of a heartbeat round
/// (design.md §6); before it, the leader's every read point costs a round, as release 0.4's.
/// Release 0.5.0 did so only with three voters (one follower's vote); 0.5.2 with any number.
/// Not a format of the replicated state.
pub const LEADER_READ_ON_FOLLOWER_VOTE_SINCE: u32 = 5;

/// The cluster version from which every member answers `PeerRequest::SavedVote`: the leader's
/// question above, and, from release 0.5.2, the probe by which a follower or learner learns
/// whether it hears from a majority of the voters (design.md §6, "Sessions").
pub const SAVED_VOTE_SINCE: u32 = LEADER_READ_ON_FOLLOWER_VOTE_SINCE;

/// The cluster version from which tenants can be declared ([`Command::Tenant`]) and sessions
/// are opened with their caller's identities ([`Command::OpenSession`], which a tenant's session
/// quota needs); before it a session is opened as release 0.1 opened it
/// ([`Command::CreateSession`]).
pub const TENANTS_SINCE: u32 = 2;

/// The cluster version from which a znode's data may be null (kept apart from empty, as
/// ZooKeeper does); before it a null write stores empty data, as release 0.1 did.
pub const NULL_DATA_SINCE: u32 = 2;

/// The cluster version from which `/zookeeper/config` holds the membership
/// ([`Command::Config`]); before it the node stays empty, as release 0.1 kept it.
pub const CONFIG_NODE_SINCE: u32 = 2;

/// What a [`Command::Tenant`] does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TenantChange {
    /// Declare `name` (or replace its identities and quota) and make its home private to it.
    Declare { name: String, tenant: Tenant },
    /// Forget `name`; its nodes stay.
    Remove { name: String },
}

impl std::fmt::Display for TenantChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TenantChange::Declare { name, tenant } => {
                let members: Vec<String> = tenant
                    .members
                    .iter()
                    .map(|(s, i)| format!("{s}:{i}"))
                    .collect();
                let q = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
                write!(
                    f,
                    "declare {name} members=[{}] quota znodes={} bytes={} ephemerals={} sessions={} \
                     watches={}",
                    members.join(","),
                    q(tenant.quota.znodes),
                    q(tenant.quota.bytes),
                    q(tenant.quota.ephemerals),
                    q(tenant.quota.sessions),
                    q(tenant.quota.watches)
                )
            }
            TenantChange::Remove { name } => write!(f, "remove {name}"),
        }
    }
}

/// The most commands one batch entry carries; it also bounds a session id's position bits.
pub const MAX_BATCH: usize = 4096;

/// How many low bits of a zxid (and of a session id) hold the command's position in its entry.
pub const POSITION_BITS: u32 = 16;

/// The zxid of the command at `position` of the entry at log index `index` (0 for a lone
/// command): `index << 16 | position`. Unique and growing with the log, like ZooKeeper's
/// epoch/counter zxids, and the log index is `zxid >> 16` ([`zxid_index`]). Two commands of one
/// batch entry never share a zxid, so watch events and Stat fields stay totally ordered.
pub fn zxid(index: u64, position: usize) -> i64 {
    debug_assert!(position < 1 << POSITION_BITS, "batch position out of range");
    debug_assert!(
        index < 1 << (63 - POSITION_BITS),
        "log index out of zxid range"
    );
    ((index << POSITION_BITS) | position as u64) as i64
}

/// The log index of the entry that produced `zxid` (0 for zxids at or below 0).
pub fn zxid_index(zxid: i64) -> u64 {
    (zxid.max(0) as u64) >> POSITION_BITS
}

/// The zxid a replica reports once it has applied every entry up to `index` (the last position
/// of that entry): replies to reads and pings carry it, so a client that saw it is never served
/// by a replica that has applied less.
pub fn applied_zxid(index: u64) -> i64 {
    if index == 0 {
        return 0;
    }
    zxid(index, (1 << POSITION_BITS) - 1)
}

/// The session id a CreateSession at `position` of the entry at `index` gets: unique, derived
/// from the log alone, never reused (the zxid of the command that created it).
pub fn session_id(index: u64, position: usize) -> i64 {
    zxid(index, position)
}

impl Command {
    /// The proposing node's request, if a client waits for this command.
    pub fn origin(&self) -> Option<Origin> {
        match self {
            Command::CreateSession { origin, .. }
            | Command::Write { origin, .. }
            | Command::Tenant { origin, .. }
            | Command::OpenSession { origin, .. } => Some(*origin),
            Command::CloseSession { origin, .. } | Command::Config { origin, .. } => *origin,
            Command::Reap { .. }
            | Command::Batch(_)
            | Command::AuditReads { .. }
            | Command::ClusterVersion { .. } => None,
        }
    }
}

/// What applying a command produced, as returned to openraft (the connection that waits for it is
/// completed through the apply observer, see `state_machine`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    /// Blank and membership entries, session closes, reaps and batches (each command of a
    /// batch is answered through the apply observer).
    #[default]
    None,
    /// A session was opened with this id.
    Session { session_id: i64 },
    /// A session was refused (its tenant's session quota is used up).
    SessionRefused,
    /// A client write's ZooKeeper error code (0 for success).
    Write { err: i32 },
}

/// The bincode configuration of everything synod stores or sends (entries, votes, snapshots,
/// peer messages).
pub fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes a serde value with [`bincode_config`], into a buffer of exactly its size.
///
/// The bytes are first written into this thread's scratch buffer, which keeps its room between
/// calls: a value encoded into a fresh `Vec` would grow it step by step (a frame of a few
/// hundred bytes took seven reallocations), and one copy into an allocation of the right size
/// costs less. A value larger than the scratch keeps is returned in the buffer it grew in.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, bincode::error::EncodeError> {
    let mut buf = scratch::take();
    if let Err(e) = encode_into(value, &mut buf) {
        scratch::give_back(buf);
        return Err(e);
    }
    if buf.capacity() > scratch::RETAINED {
        return Ok(buf);
    }
    let exact = buf.as_slice().to_vec();
    scratch::give_back(buf);
    Ok(exact)
}

/// Encodes a serde value with [`bincode_config`] and hands its bytes to `f`, without a buffer
/// of their own (they are in this thread's scratch buffer, see [`encode`]): for a caller that
/// copies them somewhere anyway, such as a RocksDB write batch.
pub fn with_encoded<T: Serialize, R>(
    value: &T,
    f: impl FnOnce(&[u8]) -> R,
) -> Result<R, bincode::error::EncodeError> {
    let mut buf = scratch::take();
    let out = encode_into(value, &mut buf).map(|()| f(&buf));
    scratch::give_back(buf);
    out
}

/// Each thread's buffer for [`encode`] and [`with_encoded`]. It is taken out of its slot while
/// in use (a `Serialize` that encodes something itself gets an empty one, never a borrow
/// error), and put back only while it is at most [`scratch::RETAINED`] bytes large, so a thread
/// keeps at most that much after a large value.
mod scratch {
    use std::cell::Cell;

    /// The most room a thread keeps between encodes: a forwarded write, a response or a
    /// batch entry fits; a large AppendEntries or a snapshot gets a buffer of its own.
    pub(super) const RETAINED: usize = 256 << 10;

    thread_local! {
        /// Empty while a value is being encoded on this thread.
        static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    }

    /// This thread's scratch buffer, empty (its room kept).
    pub(super) fn take() -> Vec<u8> {
        let mut buf = SCRATCH.with(Cell::take);
        buf.clear();
        buf
    }

    /// Returns `buf` to this thread's slot, unless it grew past [`RETAINED`].
    pub(super) fn give_back(buf: Vec<u8>) {
        if buf.capacity() <= RETAINED {
            SCRATCH.with(|s| s.set(buf));
        }
    }
}

/// Encodes a serde value with [`bincode_config`] at the end of `out` (a `Vec`, or any writer):
/// the same bytes as [`encode`], without a buffer of their own (a caller that reserved room
/// copies nothing).
pub fn encode_into<T: Serialize, W: std::io::Write>(
    value: &T,
    out: &mut W,
) -> Result<(), bincode::error::EncodeError> {
    bincode::serde::encode_into_std_write(value, out, bincode_config()).map(|_| ())
}

/// Decodes a serde value that must fill `bytes` exactly; a short or trailing input is an error.
///
/// Every decode here reads strings and byte strings in place ([`crate::in_place`]): a length
/// that claims more than the input holds is an error (`UnexpectedEnd`) before anything is
/// allocated for it, so no input, whoever wrote it, can make a decode abort the process.
pub fn decode<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, bincode::error::DecodeError> {
    decode_exact(bytes, bincode_config())
}

/// Decodes, as [`decode`] does, an input from outside this node (a peer's frame), with what it
/// may make this node allocate bounded as well: every length inside it (of a string, a byte
/// string, a vector) and every fixed-size value, counted by its size in memory, is claimed
/// against `CLAIM` bytes before anything is allocated for it, and a claim beyond is
/// `LimitExceeded`. Reading in place already refuses a length beyond the input; the bound also
/// caps what a valid input may claim in all (16 bytes of `u128` per byte of varint).
pub fn decode_bounded<T: serde::de::DeserializeOwned, const CLAIM: usize>(
    bytes: &[u8],
) -> Result<T, bincode::error::DecodeError> {
    decode_exact(bytes, bincode_config().with_limit::<CLAIM>())
}

/// [`decode`] with the given configuration (the same encoding; only the decoder's limit differs).
fn decode_exact<T: serde::de::DeserializeOwned, C: bincode::config::Config>(
    bytes: &[u8],
    config: C,
) -> Result<T, bincode::error::DecodeError> {
    let (Decoded(v), used) = bincode::serde::decode_from_slice(bytes, config)?;
    if used != bytes.len() {
        return Err(bincode::error::DecodeError::OtherString(format!(
            "{} trailing bytes after the value",
            bytes.len() - used
        )));
    }
    Ok(v)
}

/// Decodes the serde value at the start of `bytes`: it and how many bytes it took (what follows
/// is the caller's). A short input is an error.
pub fn decode_prefix<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    let (Decoded(v), used) = bincode::serde::decode_from_slice(bytes, bincode_config())?;
    Ok((v, used))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value that encodes another value while it is being encoded (as a `Serialize` that
    /// nests bytes of its own would).
    struct Nested(Vec<u8>);

    impl Serialize for Nested {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let inner = encode(&self.0).map_err(serde::ser::Error::custom)?;
            s.serialize_bytes(&inner)
        }
    }

    /// Encoding through the scratch buffer gives bincode's bytes, in a buffer of exactly their
    /// size for a small value; a large value is handed over whole, and the thread keeps no more
    /// than `RETAINED` afterwards; a value that encodes another while being encoded works.
    #[test]
    fn encoding_through_the_scratch_buffer_gives_bincode_bytes_of_exact_size(
    ) -> Result<(), Box<dyn std::error::Error>> {
        for len in [
            0usize,
            1,
            300,
            70_000,
            scratch::RETAINED + 1,
            3 * scratch::RETAINED,
        ] {
            let value: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let expected = bincode::serde::encode_to_vec(&value, bincode_config())?;
            let got = encode(&value)?;
            assert_eq!(got, expected, "{len} bytes");
            if got.len() <= scratch::RETAINED {
                assert_eq!(got.capacity(), got.len(), "{len} bytes: an exact buffer");
            }
            assert_eq!(
                with_encoded(&value, <[u8]>::to_vec)?,
                expected,
                "{len} bytes"
            );
            let kept = scratch::take();
            assert!(kept.is_empty() && kept.capacity() <= scratch::RETAINED);
            scratch::give_back(kept);
        }
        let nested = Nested(vec![7; 1000]);
        let expected = bincode::serde::encode_to_vec(
            serde_bytes_of(&bincode::serde::encode_to_vec(&nested.0, bincode_config())?),
            bincode_config(),
        )?;
        assert_eq!(encode(&nested)?, expected);
        assert_eq!(with_encoded(&nested, <[u8]>::to_vec)?, expected);
        Ok(())
    }

    /// What `serialize_bytes` of `b` encodes as.
    fn serde_bytes_of(b: &[u8]) -> impl Serialize + '_ {
        struct AsBytes<'a>(&'a [u8]);
        impl Serialize for AsBytes<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }
        AsBytes(b)
    }

    /// A batch is never nested, but its type could be: a peer's frame of a batch in a batch a
    /// million times over (two bytes a level) is a decode error, not a recursion that overflows
    /// the stack and aborts the node.
    #[test]
    fn a_batch_nested_a_million_times_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let empty = encode(&Command::Batch(Vec::new().into()))?;
        let [variant, 0] = empty[..] else {
            panic!("an empty batch encodes as {empty:?}");
        };
        let mut hostile = [variant, 1].repeat(1_000_000);
        hostile.extend([variant, 0]);
        for refused in [
            decode::<Command>(&hostile).err(),
            decode_bounded::<Command, { 1 << 30 }>(&hostile).err(),
        ] {
            let refused = refused.map(|e| e.to_string()).unwrap_or_default();
            assert!(refused.contains("nested more than"), "{refused}");
        }
        Ok(())
    }

    /// A batch is stored and sent as it was when it held a `Vec`: its variant's index (4), then
    /// the commands as a sequence. Logs and peers of earlier builds read it unchanged.
    #[test]
    fn a_shared_batch_encodes_as_a_sequence_of_commands() -> Result<(), Box<dyn std::error::Error>>
    {
        let write = |request: u64| Command::Write {
            origin: Origin { node: 2, request },
            session_id: 0x100,
            time_ms: 1_700_000_000_000,
            auth: vec![("ip".into(), "127.0.0.1".into())],
            opcode: 5,
            body: Bytes::from_static(b"\0\0\0\x02/a\0\0\0\x01x\xff\xff\xff\xff"),
        };
        let cmds = vec![
            write(1),
            write(2),
            Command::Reap {
                time_ms: 9,
                paths: vec!["/c".into()],
            },
        ];
        let shared = Command::Batch(cmds.clone().into());
        let mut expected = encode(&4u32)?;
        expected.extend(encode(&cmds)?);
        let bytes = encode(&shared)?;
        assert_eq!(bytes, expected);
        assert_eq!(decode::<Command>(&bytes)?, shared);
        // A clone shares the commands.
        let (Command::Batch(a), Command::Batch(b)) = (&shared, &shared.clone()) else {
            unreachable!()
        };
        assert!(Arc::ptr_eq(a, b));
        Ok(())
    }
}
