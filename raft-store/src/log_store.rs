//! The durable Raft log: owns the RocksDB database that holds the log entries, the vote, the
//! committed hint and the purge point, and implements openraft's [`RaftLogStorage`] on it.
//!
//! # Layout
//!
//! One RocksDB database per node (its own directory, separate from the state machine's), with two
//! column families that share one write-ahead log:
//!
//! - `logs`: key = the entry's index as a big-endian `u64` (so RocksDB's byte order is log
//!   order), value = the bincode [`Entry<TypeConfig>`] ([`crate::types::encode`]).
//! - `meta`: `vote` → [`Vote`], `committed` → [`LogId`], `last_purged` → [`LogId`],
//!   `format` → the store's format version ([`LOG_FORMAT`]; refused if another).
//!
//! # The durability contract (DESIGN.md §5)
//!
//! - [`append`](RaftLogStorage::append) writes all its entries in **one** `WriteBatch` with
//!   `sync = true` and tells openraft the entries are durable (`log_io_completed(Ok)`) only after
//!   that write returned; on failure it reports the error to the callback *and* returns it.
//! - [`save_vote`](RaftLogStorage::save_vote) returns only after its write is synced.
//! - [`truncate`](RaftLogStorage::truncate) and [`purge`](RaftLogStorage::purge) are each one
//!   synced `WriteBatch`; `purge` moves `last_purged` and deletes the entries atomically.
//! - [`save_committed`](RaftLogStorage::save_committed) is a hint, kept in memory and written
//!   in the next synced batch (see there why a stale value is safe).
//! - A stored value that fails to decode is a storage error, never "absent".
//!
//! "Synced" means the WAL was written and `fdatasync`ed (`use_fsync = false`: the WAL's data and
//! size are what recovery needs, not its timestamps). Recovery replays the WAL and tolerates only
//! an incomplete last record (a write that was never synced); what survives a crash is a prefix
//! of the writes.
//!
//! # Damage
//!
//! A damaged log is refused at open, never served: a WAL record whose checksum fails is
//! corruption (RocksDB's recovery fails), and [`LogStore::open`] reads every stored record once
//! (block checksums verified, each value decoded, none at or below the purge point). The node
//! then does not start; docs/operations.md says how to rebuild it from its peers.
//!
//! The newest entries are also kept decoded in memory ([`TailCache`], a few MiB), so that
//! replication and apply, which read each entry back right after it was appended, need neither
//! an iterator nor a decode; everything else is read from RocksDB.
//!
//! All calls do their RocksDB work synchronously on the calling task and never hold an iterator
//! or a write option across an `.await` (openraft 0.9 awaits each storage call before the next,
//! which also serialises every write as openraft requires). Synced writes run under
//! `block_in_place` on a multi-threaded runtime, so a slow fdatasync stalls only the Raft core,
//! not the other tasks of its worker thread.

use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, ErrorSubject, ErrorVerb, LogId, LogState, OptionalSend, RaftLogReader, StorageError,
    Vote,
};
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, DBRecoveryMode, Direction,
    IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions, DB,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::StoreError;
use crate::log_cache::TailCache;
use crate::rocks_memory::RocksMemory;
use crate::types::{decode, encode, with_encoded, NodeId, TypeConfig};

/// Column family of the log entries (big-endian index → bincode entry).
const CF_LOGS: &str = "logs";
/// Column family of the log's metadata (vote, committed, last purged).
const CF_META: &str = "meta";
/// `meta` key of the last saved [`Vote`].
const KEY_VOTE: &[u8] = b"vote";
/// `meta` key of the last saved committed [`LogId`] (absent = none saved).
const KEY_COMMITTED: &[u8] = b"committed";
/// `meta` key of the [`LogId`] of the last purged entry (absent = nothing purged yet).
const KEY_LAST_PURGED: &[u8] = b"last_purged";
/// Key (in `meta`) of the store's format version: [`LOG_FORMAT`].
const KEY_FORMAT: &[u8] = b"format";

/// The log store's format version (its layout and the encoding of what it stores, the entries'
/// commands aside: those follow the cluster version, [`crate::types::CLUSTER_VERSION`]). A store
/// without one was made by release 0.1, whose format is 1, and gets it at its first open; a
/// store of another version is refused with both named.
pub const LOG_FORMAT: u32 = 1;

/// The `logs` key of the entry at `index`: big-endian, so that key order is index order.
fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// The index a `logs` key stands for; a key that is not 8 bytes long means a corrupt store.
fn key_index(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("log key of {} bytes, not 8", key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

/// Runs `f`, which blocks on the disk (an fdatasync: from ~50 µs on an idle disk to milliseconds
/// on a busy one). On a multi-threaded tokio runtime it runs under
/// [`tokio::task::block_in_place`], so that the worker's other tasks (peer and client I/O) move
/// to another thread instead of waiting behind the sync; the caller still waits for `f`, in
/// order. Elsewhere (current-thread runtime, no runtime) `f` just runs.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The background compaction thread of a [`LogStore`] and whether it runs.
#[derive(Default)]
struct Compactor {
    /// True while a compaction runs.
    running: std::sync::atomic::AtomicBool,
    /// The last compaction thread started.
    handle: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Compactor {
    /// Waits for a running compaction: it holds the database open.
    fn drop(&mut self) {
        let slot = self.handle.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = slot.take() {
            let _ = h.join();
        }
    }
}

/// The durable Raft log store of one node (see the [module docs](self) for its layout and
/// durability contract).
///
/// Cloning is cheap (two `Arc`s) and every clone sees the same database: openraft's log readers
/// ([`RaftLogStorage::LogReader`]) are clones.
#[derive(Clone)]
pub struct LogStore {
    /// The database with the `logs` and `meta` column families, shared by every clone.
    db: Arc<DB>,
    /// Write counters for metrics, shared by every clone so that all report the same numbers.
    counters: Arc<Counters>,
    /// The background compaction of purged entries (at most one at a time); joined when the
    /// last clone drops, so that the database is closed when the store is gone.
    compactor: Arc<Compactor>,
    /// Latency histograms in the process's `metrics` recorder, resolved once at open so that the
    /// write path records without a registry lookup.
    timings: Arc<Timings>,
    /// The newest entries, decoded, shared by every clone: replication and apply read them from
    /// here. Updated after an append is durable and before a truncation or purge is written, so
    /// it never holds an entry the log does not.
    tail: Arc<Mutex<TailCache>>,
    /// The committed hint openraft saved last and no synced batch has written yet (`None`:
    /// nothing pending; `Some(None)`: delete the key). [`LogStore::write_synced`] takes it into
    /// its batch, so that a commit costs no write of its own.
    committed: Arc<Mutex<Option<Option<LogId<NodeId>>>>>,
    /// The vote this store last made durable, shared by every clone and readable without the
    /// Raft core ([`LogStore::saved_vote`]).
    saved_vote: SavedVote,
}

/// The vote a [`LogStore`] last made durable (read at open, then set by each `save_vote` after
/// its synced write and before the call returns). Cheap to clone; clones share it.
///
/// **What a reader may conclude:** openraft saves a vote before it acts on it — before it
/// grants it to a candidate, and before it accepts a leader's entries under it (0.9.25 queues
/// `SaveVote` before the response and runs its commands in order; check again on an upgrade)
/// — and votes only grow. So while [`get`](SavedVote::get) returns `v`, this node has granted and accepted
/// no greater vote, even if its Raft core already holds one whose save is under way. That
/// makes it a vote a follower may offer a leader as a witness for a linearizable read
/// (docs/design.md §6), without a trip into its Raft core, which waits behind the fdatasync
/// of every append.
#[derive(Clone, Debug, Default)]
pub struct SavedVote(Arc<Mutex<Option<Vote<NodeId>>>>);

impl SavedVote {
    /// The vote last made durable; `None` if none ever was.
    pub fn get(&self) -> Option<Vote<NodeId>> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `vote` as durable (only ever a vote at least as great as the last: openraft's
    /// votes grow).
    fn set(&self, vote: Vote<NodeId>) {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        debug_assert!(
            !matches!(*held, Some(v) if vote < v),
            "saved vote went back from {held:?} to {vote}"
        );
        *held = Some(vote);
    }
}

/// Reads what the log's RocksDB holds in memory ([`crate::rocks_memory`]) for as long as the
/// store is open: it does not keep the database open itself (a node's metrics hold one, and a
/// store is closed when its last clone drops).
#[derive(Clone, Debug)]
pub struct LogMemory(
    /// The store's database; gone once every clone of the store has dropped.
    std::sync::Weak<DB>,
);

impl LogMemory {
    /// The log's memory now; `None` once the store is closed.
    pub fn read(&self) -> Option<Result<RocksMemory, StoreError>> {
        let db = self.0.upgrade()?;
        Some(crate::rocks_memory::of(&db, &[CF_LOGS, CF_META]))
    }
}

/// Encoded bytes of the newest entries kept in memory ([`TailCache`]; decoded they take about
/// 1.6 times as much). Replication and apply read an entry within milliseconds of its append:
/// at 50,000 writes a second, 1 MiB is about 60 ms of log, and under that load every read was
/// a hit (`synod_log_reads_total{from="disk"}` stayed 0, as with 4 MiB). A follower further
/// behind is served from RocksDB. Memory is the scarcer resource (DESIGN.md §10): at 4 MiB the
/// cache was a third of the heap a write burst left behind.
const TAIL_CACHE_BYTES: usize = 1 << 20;

/// Handles of the log store's latency histograms (seconds), registered with whatever `metrics`
/// recorder is installed when the store is opened (none: recording is a no-op).
struct Timings {
    /// One synced (fdatasync'd) write of any kind: the disk's durable-write latency.
    fsync: metrics::Histogram,
    /// One `append` call: encoding its entries plus their synced write.
    append: metrics::Histogram,
    /// Range reads the tail cache answered.
    cache_hits: metrics::Counter,
    /// Range reads that went to RocksDB (older entries, or ranges open at the end).
    cache_misses: metrics::Counter,
}

impl Timings {
    fn register() -> Timings {
        metrics::describe_histogram!(
            "synod_log_fsync_seconds",
            metrics::Unit::Seconds,
            "duration of one synced write of the raft log (append, vote, truncate, purge)"
        );
        metrics::describe_histogram!(
            "synod_log_append_seconds",
            metrics::Unit::Seconds,
            "duration of one raft log append (encode + synced write of its entries)"
        );
        metrics::describe_counter!(
            "synod_log_reads_total",
            "raft log range reads (replication, apply), by where they were answered: \
             cache (the decoded tail in memory) or disk (RocksDB)"
        );
        Timings {
            fsync: metrics::histogram!("synod_log_fsync_seconds"),
            append: metrics::histogram!("synod_log_append_seconds"),
            cache_hits: metrics::counter!("synod_log_reads_total", "from" => "cache"),
            cache_misses: metrics::counter!("synod_log_reads_total", "from" => "disk"),
        }
    }
}

/// Live counters behind [`LogStore::stats`]; relaxed atomics, since each is read on its own.
#[derive(Debug, Default)]
struct Counters {
    /// Number of `append` calls that wrote at least one entry (one synced batch each).
    appends: AtomicU64,
    /// Number of entries written by `append`; with `appends`, the mean batch size.
    entries_appended: AtomicU64,
    /// Bytes of encoded entries written by `append` (the log's write volume).
    bytes_appended: AtomicU64,
    /// Number of synced writes of any kind (append, vote, truncate, purge).
    synced_writes: AtomicU64,
    /// Sum of the durations of those writes in µs; with `synced_writes`, the mean latency.
    synced_write_micros_total: AtomicU64,
    /// Duration of the most recent synced write in µs (a gauge of the disk right now).
    synced_write_micros_last: AtomicU64,
}

/// A snapshot of the log store's write counters, for the server's metrics endpoint. Counters
/// only grow (from zero at [`LogStore::open`]); `synced_write_micros_last` is a gauge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Number of `append` calls that wrote entries; each is one synced write.
    pub appends: u64,
    /// Number of entries appended; `entries_appended / appends` is the mean group-commit size.
    pub entries_appended: u64,
    /// Bytes of encoded entries appended: the log's write volume.
    pub bytes_appended: u64,
    /// Number of synced (fdatasync'd) writes of any kind: appends, votes, truncates, purges.
    pub synced_writes: u64,
    /// Total time spent in synced writes, in microseconds; divide by `synced_writes` for the
    /// mean latency of a durable write.
    pub synced_write_micros_total: u64,
    /// Duration of the most recent synced write, in microseconds.
    pub synced_write_micros_last: u64,
}

impl LogStore {
    /// Opens the log store in `dir` (the RocksDB directory itself), creating the directory, the
    /// database and its column families if missing. Fails if another process holds the
    /// database, or if RocksDB finds it corrupt.
    pub fn open(dir: &Path) -> Result<LogStore, StoreError> {
        std::fs::create_dir_all(dir)?;

        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        // fdatasync, not fsync: the WAL's contents and length matter, its mtime does not.
        db_opts.set_use_fsync(false);
        // After a crash, replay the WAL and tolerate only an incomplete last record (a write
        // that was never synced, so never acknowledged); a record whose checksum fails anywhere
        // is corruption and the open fails. RocksDB's default (point-in-time) would instead stop
        // at a damaged record and silently drop it and every synced write after it.
        db_opts.set_wal_recovery_mode(DBRecoveryMode::TolerateCorruptedTailRecords);
        // Check every file's metadata and every block read (the default; relied upon).
        db_opts.set_paranoid_checks(true);
        // `meta` is written rarely and in tiny amounts, so its memtable would pin old WAL files
        // forever; bounding the WAL makes RocksDB flush it and recycle the files.
        db_opts.set_max_total_wal_size(32 << 20);
        // 2-core machine: one flush and one compaction at a time are plenty for a log.
        db_opts.set_max_background_jobs(2);
        // RocksDB's own info log: keep a little history, not an unbounded pile.
        db_opts.set_keep_log_file_num(4);
        db_opts.set_max_log_file_size(8 << 20);

        let mut logs_opts = Options::default();
        // Recent entries are read from the memtable; a small block cache covers the rest.
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_block_cache(&rocksdb::Cache::new_lru_cache(4 << 20));
        logs_opts.set_block_based_table_factory(&table);
        // Entries are appended, read back soon (replication, apply) and deleted by purge. The
        // memtable serves those reads; it is kept small because memory is the scarcer resource
        // (DESIGN.md §10 budgets 50 MiB per server) and a flushed entry is still one read away.
        logs_opts.set_write_buffer_size(8 << 20);
        logs_opts.set_max_write_buffer_number(2);
        // Entries are mostly client payloads that compress poorly, and CPU is scarce.
        logs_opts.set_compression_type(DBCompressionType::None);

        let mut meta_opts = Options::default();
        meta_opts.set_write_buffer_size(1 << 20);
        meta_opts.set_compression_type(DBCompressionType::None);

        let db = DB::open_cf_descriptors(
            &db_opts,
            dir,
            [
                ColumnFamilyDescriptor::new(CF_LOGS, logs_opts),
                ColumnFamilyDescriptor::new(CF_META, meta_opts),
            ],
        )?;
        let store = LogStore {
            db: Arc::new(db),
            counters: Arc::new(Counters::default()),
            timings: Arc::new(Timings::register()),
            compactor: Arc::new(Compactor::default()),
            tail: Arc::new(Mutex::new(TailCache::new(TAIL_CACHE_BYTES))),
            committed: Arc::new(Mutex::new(None)),
            saved_vote: SavedVote::default(),
        };
        // Fail at open, not at the first call, if the layout is not ours or a record is damaged.
        store.check_format()?;
        store.verify()?;
        if let Some(vote) = store.get_meta(KEY_VOTE)? {
            store.saved_vote.set(vote);
        }
        Ok(store)
    }

    /// Refuses a store of another format version than [`LOG_FORMAT`]; records the version in a
    /// store that has none (new, or made by release 0.1), synced.
    fn check_format(&self) -> Result<(), StoreError> {
        match self.get_meta::<u32>(KEY_FORMAT)? {
            Some(found) if found != LOG_FORMAT => Err(StoreError::FormatVersion {
                what: "raft log",
                found,
                supported: LOG_FORMAT..=LOG_FORMAT,
            }),
            Some(_) => Ok(()),
            None => {
                let mut opts = WriteOptions::default();
                opts.set_sync(true);
                let mut batch = WriteBatch::default();
                batch.put_cf(self.cf(CF_META)?, KEY_FORMAT, encode(&LOG_FORMAT)?);
                self.db.write_opt(batch, &opts)?;
                Ok(())
            }
        }
    }

    /// Reads every stored record once, so that a damaged log is refused at open rather than
    /// served: RocksDB checks the checksum of every block read, each value must decode, each
    /// entry must sit under its own index, and none may be at or below the purge point (a purge
    /// deletes them in the same batch that moves it). (The WAL's records were checked when it was replayed, in tolerate-corrupted-tail
    /// mode.) O(entries kept): at most `--snapshot-entries` + 1000 or so. Logs what it read.
    fn verify(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        let mut opts = ReadOptions::default();
        opts.set_verify_checksums(true);
        opts.fill_cache(false);
        let meta = self.cf(CF_META)?;
        let _: Option<Vote<NodeId>> = self.get_meta(KEY_VOTE)?;
        let _: Option<LogId<NodeId>> = self.get_meta(KEY_COMMITTED)?;
        let purged: Option<LogId<NodeId>> = self.get_meta(KEY_LAST_PURGED)?;
        for item in self
            .db
            .iterator_cf_opt(meta, ReadOptions::default(), IteratorMode::Start)
        {
            item?;
        }
        let (mut first, mut last, mut count) = (None, None::<u64>, 0u64);
        for item in self
            .db
            .iterator_cf_opt(self.cf(CF_LOGS)?, opts, IteratorMode::Start)
        {
            let (key, value) = item?;
            let index = Self::decode_entry(&key, &value)?.log_id.index;
            first.get_or_insert(index);
            last = Some(index);
            count += 1;
        }
        if let (Some(first), Some(purged)) = (first, purged) {
            if first <= purged.index {
                return Err(StoreError::Corrupt(format!(
                    "entry {first} is kept though the log is purged up to {}",
                    purged.index
                )));
            }
        }
        tracing::info!(
            entries = count,
            first = ?first,
            last = ?last,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "raft log verified"
        );
        Ok(())
    }

    /// The current write counters (appends, entries, bytes, synced-write latency), for metrics.
    pub fn stats(&self) -> LogStats {
        let c = &self.counters;
        LogStats {
            appends: c.appends.load(Relaxed),
            entries_appended: c.entries_appended.load(Relaxed),
            bytes_appended: c.bytes_appended.load(Relaxed),
            synced_writes: c.synced_writes.load(Relaxed),
            synced_write_micros_total: c.synced_write_micros_total.load(Relaxed),
            synced_write_micros_last: c.synced_write_micros_last.load(Relaxed),
        }
    }

    /// The tail cache, locked. A panic while it was held may have left it half updated: it is
    /// then emptied (the log is read instead) rather than trusted.
    fn tail(&self) -> std::sync::MutexGuard<'_, TailCache> {
        self.tail.lock().unwrap_or_else(|poisoned| {
            self.tail.clear_poison();
            let mut tail = poisoned.into_inner();
            tail.clear();
            tail
        })
    }

    /// The handle of column family `name`; its absence means the store is not ours.
    fn cf(&self, name: &str) -> Result<&ColumnFamily, StoreError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StoreError::Corrupt(format!("missing column family {name}")))
    }

    /// Writes `batch` atomically and returns only after the WAL is fdatasync'd; records the
    /// latency. `WriteOptions` is made per call: it is not `Sync`, so it cannot live in `self`.
    ///
    /// A pending committed hint ([`LogStore::committed`]) goes into the same batch. It never
    /// refers past what the log holds once the batch is written: openraft saves a committed id
    /// only after the entries it covers were appended (synced), and a truncation never reaches
    /// a committed entry.
    fn write_synced(&self, mut batch: WriteBatch) -> Result<(), StoreError> {
        let pending = self.pending_committed().take();
        if let Some(committed) = pending {
            let cf = self.cf(CF_META)?;
            match committed {
                Some(log_id) => batch.put_cf(cf, KEY_COMMITTED, encode(&log_id)?),
                None => batch.delete_cf(cf, KEY_COMMITTED),
            }
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        let started = Instant::now();
        blocking(|| self.db.write_opt(batch, &opts))?;
        let elapsed = started.elapsed();
        self.timings.fsync.record(elapsed.as_secs_f64());
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let c = &self.counters;
        c.synced_writes.fetch_add(1, Relaxed);
        c.synced_write_micros_total.fetch_add(micros, Relaxed);
        c.synced_write_micros_last.store(micros, Relaxed);
        Ok(())
    }

    /// Reads and decodes `meta/key`; `None` only if the key is absent.
    fn get_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.db.get_pinned_cf(self.cf(CF_META)?, key)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Adds to `batch` the deletion of every entry with index in `[from, to]`.
    fn delete_entries(&self, batch: &mut WriteBatch, from: u64, to: u64) -> Result<(), StoreError> {
        let cf = self.cf(CF_LOGS)?;
        if from > to {
            return Ok(());
        }
        // `delete_range` excludes its end; the key u64::MAX has no exclusive end, so it is
        // deleted on its own.
        if to == u64::MAX {
            batch.delete_range_cf(cf, log_key(from), log_key(u64::MAX));
            batch.delete_cf(cf, log_key(u64::MAX));
        } else {
            batch.delete_range_cf(cf, log_key(from), log_key(to + 1));
        }
        Ok(())
    }

    /// Decodes a `logs` record and checks that the entry is stored under its own index.
    fn decode_entry(key: &[u8], value: &[u8]) -> Result<Entry<TypeConfig>, StoreError> {
        let index = key_index(key)?;
        let entry: Entry<TypeConfig> = decode(value)?;
        if entry.log_id.index != index {
            return Err(StoreError::Corrupt(format!(
                "entry {} stored under index {index}",
                entry.log_id
            )));
        }
        Ok(entry)
    }

    /// The entries whose index is in `range`, in order, skipping indexes that have none.
    /// Collected before returning: no iterator outlives this call.
    fn read_entries<RB: RangeBounds<u64>>(
        &self,
        range: &RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StoreError> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => match s.checked_add(1) {
                Some(s) => s,
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => 0,
        };
        // Exclusive end, if it fits in a u64 (it does not for `..=u64::MAX`).
        let end = match range.end_bound() {
            Bound::Included(&e) => e.checked_add(1),
            Bound::Excluded(&e) => Some(e),
            Bound::Unbounded => None,
        };
        if let Some(cached) = end.and_then(|end| self.tail().get(start, end)) {
            self.timings.cache_hits.increment(1);
            return Ok(cached);
        }
        self.timings.cache_misses.increment(1);
        let mut read_opts = ReadOptions::default();
        let mut out = Vec::new();
        if let Some(end) = end {
            if end <= start {
                return Ok(out);
            }
            // Let RocksDB stop at the end of the range too, instead of reading one entry more.
            read_opts.set_iterate_upper_bound(log_key(end));
            out.reserve(usize::try_from(end - start).unwrap_or(usize::MAX).min(1024));
        }
        let iter = self.db.iterator_cf_opt(
            self.cf(CF_LOGS)?,
            read_opts,
            IteratorMode::From(&log_key(start), Direction::Forward),
        );
        for item in iter {
            let (key, value) = item?;
            if !range.contains(&key_index(&key)?) {
                break;
            }
            out.push(Self::decode_entry(&key, &value)?);
        }
        Ok(out)
    }

    /// The log id of the entry with the greatest index, if any.
    fn last_entry_id(&self) -> Result<Option<LogId<NodeId>>, StoreError> {
        let mut iter = self.db.iterator_cf(self.cf(CF_LOGS)?, IteratorMode::End);
        match iter.next() {
            Some(item) => {
                let (key, value) = item?;
                Ok(Some(Self::decode_entry(&key, &value)?.log_id))
            }
            None => Ok(None),
        }
    }

    /// Writes every entry in one batch, synced; returns after the WAL is on disk.
    fn write_entries<I: IntoIterator<Item = Entry<TypeConfig>>>(
        &self,
        entries: I,
    ) -> Result<(), StoreError> {
        let started = Instant::now();
        let cf = self.cf(CF_LOGS)?;
        let mut batch = WriteBatch::default();
        let (mut count, mut bytes) = (0u64, 0u64);
        let mut written = Vec::new();
        for entry in entries {
            let size = with_encoded(&entry, |value| {
                batch.put_cf(cf, log_key(entry.log_id.index), value);
                value.len()
            })?;
            bytes += size as u64;
            count += 1;
            written.push((entry, size));
        }
        if count == 0 {
            return Ok(());
        }
        self.write_synced(batch)?;
        let mut tail = self.tail();
        for (entry, size) in written {
            tail.appended(entry, size);
        }
        drop(tail);
        self.timings.append.record(started.elapsed().as_secs_f64());
        let c = &self.counters;
        c.appends.fetch_add(1, Relaxed);
        c.entries_appended.fetch_add(count, Relaxed);
        c.bytes_appended.fetch_add(bytes, Relaxed);
        Ok(())
    }

    /// Puts one encoded `meta` value in its own synced batch.
    fn put_meta_synced<T: Serialize>(&self, key: &[u8], value: &T) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META)?, key, encode(value)?);
        self.write_synced(batch)
    }

    /// The committed hint waiting for the next synced batch (see [`LogStore::committed`]).
    fn pending_committed(&self) -> std::sync::MutexGuard<'_, Option<Option<LogId<NodeId>>>> {
        self.committed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Deletes the entries from `log_id.index` on, in one synced batch.
    fn truncate_from(&self, log_id: LogId<NodeId>) -> Result<(), StoreError> {
        // First out of the cache: until the write below, readers find the old entries in the
        // log, as they would without a cache; never after it.
        self.tail().truncate(log_id.index);
        let mut batch = WriteBatch::default();
        self.delete_entries(&mut batch, log_id.index, u64::MAX)?;
        self.write_synced(batch)
    }

    /// Records `log_id` as purged and deletes the entries up to it, in one synced batch.
    fn purge_upto(&self, log_id: LogId<NodeId>) -> Result<(), StoreError> {
        self.tail().purge(log_id.index);
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META)?, KEY_LAST_PURGED, encode(&log_id)?);
        self.delete_entries(&mut batch, 0, log_id.index)?;
        self.write_synced(batch)?;
        self.compact_in_background(log_id.index);
        Ok(())
    }

    /// Compacts the `logs` key range up to `upto` (inclusive) now, so that the space of purged
    /// entries is returned to the file system instead of lingering behind range tombstones until
    /// RocksDB happens to compact those files. Blocks for the duration of the compaction.
    pub fn compact_purged(&self, upto: u64) -> Result<(), StoreError> {
        let end = log_key(upto.saturating_add(1));
        self.db
            .compact_range_cf(self.cf(CF_LOGS)?, None::<&[u8]>, Some(&end[..]));
        Ok(())
    }

    /// Runs [`compact_purged`](Self::compact_purged) on its own thread (never on the Raft core),
    /// unless one is already running: the next purge covers what this one skips.
    fn compact_in_background(&self, upto: u64) {
        let compactor = &self.compactor;
        if compactor.running.swap(true, Relaxed) {
            return;
        }
        // The thread holds the database, not the store: the store's last clone joins it.
        let db = self.db.clone();
        let running = Arc::downgrade(compactor);
        let spawned = std::thread::Builder::new()
            .name("log-compact".into())
            .spawn(move || {
                let end = log_key(upto.saturating_add(1));
                match db.cf_handle(CF_LOGS) {
                    Some(cf) => db.compact_range_cf(cf, None::<&[u8]>, Some(&end[..])),
                    None => tracing::warn!("compacting the purged raft log: no logs family"),
                }
                if let Some(c) = running.upgrade() {
                    c.running.store(false, Relaxed);
                }
            });
        match spawned {
            Ok(handle) => {
                let mut slot = compactor.handle.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(done) = slot.replace(handle) {
                    let _ = done.join(); // finished: `running` was false
                }
            }
            Err(e) => {
                tracing::warn!(%e, "cannot start the log compaction thread");
                compactor.running.store(false, Relaxed);
            }
        }
    }

    /// The vote this store last made durable, as a handle that stays current ([`SavedVote`]).
    pub fn saved_vote(&self) -> SavedVote {
        self.saved_vote.clone()
    }

    /// A handle that reads what this store's RocksDB holds in memory, without keeping the
    /// database open ([`LogMemory`]).
    pub fn memory(&self) -> LogMemory {
        LogMemory(Arc::downgrade(&self.db))
    }

    /// The total size of the `logs` column family's table files, in bytes (what purge and
    /// compaction shrink).
    pub fn sst_bytes(&self) -> Result<u64, StoreError> {
        Ok(self
            .db
            .property_int_value_cf(self.cf(CF_LOGS)?, "rocksdb.total-sst-files-size")?
            .unwrap_or(0))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    /// Returns the entries that exist with an index in `range`, in index order, stopping at the
    /// end of the range; missing indexes (purged, truncated, never written) are skipped, not an
    /// error. An entry that fails to decode is an error (`ErrorSubject::Logs`, read).
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        self.read_entries(&range)
            .map_err(|e| e.to_storage(ErrorSubject::Logs, ErrorVerb::Read))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    /// A clone of the store: reads go straight to the shared database.
    type LogReader = LogStore;

    /// `last_log_id` is the id of the entry with the greatest index, or `last_purged` when no
    /// entry is left. Reads only; an undecodable entry or purge point is an error.
    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let read = || -> Result<LogState<TypeConfig>, StoreError> {
            let last_purged_log_id: Option<LogId<NodeId>> = self.get_meta(KEY_LAST_PURGED)?;
            let last_log_id = self.last_entry_id()?.or(last_purged_log_id);
            Ok(LogState {
                last_purged_log_id,
                last_log_id,
            })
        };
        read().map_err(|e| e.to_storage(ErrorSubject::Logs, ErrorVerb::Read))
    }

    /// A clone of this store (cheap: it shares the database).
    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    /// **Durable on return:** the vote is written in its own batch with `sync = true`, so it is
    /// in the fdatasync'd WAL before openraft acts on it (a vote that could be forgotten would
    /// let this node vote twice in one term).
    /// [`LogStore::saved_vote`] shows it from then on, before this call returns.
    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.put_meta_synced(KEY_VOTE, vote)
            .map_err(|e| e.to_storage(ErrorSubject::Vote, ErrorVerb::Write))?;
        self.saved_vote.set(*vote);
        Ok(())
    }

    /// The last saved vote; `None` only if none was ever saved. A stored vote that does not
    /// decode is an error (`ErrorSubject::Vote`, read), never `None`.
    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.get_meta(KEY_VOTE)
            .map_err(|e| e.to_storage(ErrorSubject::Vote, ErrorVerb::Read))
    }

    /// **Kept in memory, persisted with the next synced write.** The committed log id is a
    /// hint: openraft reads it only at startup, to re-apply `(last_applied, committed]` before
    /// the leader repeats it. A stale value is safe: it only re-applies less at startup, and the
    /// rest is applied when the leader's next heartbeat brings the commit index again. So it
    /// costs no write of its own (openraft awaits this call before every apply): the next
    /// append, vote, truncation or purge carries it in its batch ([`LogStore::write_synced`]).
    /// It is never ahead of the log it refers to: openraft saves it after the entries it covers
    /// were appended with sync. `None` deletes the key.
    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        *self.pending_committed() = Some(committed);
        Ok(())
    }

    /// The last saved committed log id (possibly stale, see `save_committed`); an undecodable
    /// value is an error.
    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        let pending = *self.pending_committed();
        if let Some(committed) = pending {
            return Ok(committed);
        }
        self.get_meta(KEY_COMMITTED)
            .map_err(|e| e.to_storage(ErrorSubject::Store, ErrorVerb::Read))
    }

    /// **Durable before the callback:** all `entries` go into one `WriteBatch` (atomic: all or
    /// none survive a crash) written with `sync = true`; `callback.log_io_completed(Ok(()))` is
    /// called only after that write returned, i.e. after the WAL was fdatasync'd. The entries
    /// are readable when this returns. On failure the callback gets the error and it is also
    /// returned (`ErrorSubject::Logs`, write), which stops the node.
    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        match self.write_entries(entries) {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let err = e.to_storage(ErrorSubject::Logs, ErrorVerb::Write);
                callback.log_io_completed(Err(io::Error::other(e)));
                Err(err)
            }
        }
    }

    /// **Durable on return:** deletes every entry from `log_id.index` on (inclusive) in one
    /// batch written with `sync = true`, so a conflicting suffix cannot reappear after a crash.
    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.truncate_from(log_id)
            .map_err(|e| e.to_storage(ErrorSubject::Logs, ErrorVerb::Delete))
    }

    /// **Durable and atomic on return:** one batch, written with `sync = true`, both records
    /// `last_purged = log_id` and deletes every entry up to `log_id.index` (inclusive), so the
    /// log never shows a gap that `last_purged` does not explain. Purging past the last entry is
    /// allowed (after a snapshot install); `last_purged` is recorded even if nothing is deleted.
    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.purge_upto(log_id)
            .map_err(|e| e.to_storage(ErrorSubject::Logs, ErrorVerb::Delete))
    }
}

#[cfg(test)]
// The tests speak openraft's `StorageError` (large, but it is what the traits return) so that `?`
// works on every call.
#[allow(clippy::result_large_err)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use bytes::Bytes;
    use openraft::storage::RaftLogStorageExt;
    use openraft::testing::log_id;
    use openraft::{EntryPayload, Membership};

    use super::*;
    use crate::types::{Command, Origin};

    type SErr = StorageError<NodeId>;

    // ---- helpers ----

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    }

    /// A client write of `body_len` bytes at `index`, like the ones the server proposes.
    fn write_entry(term: u64, index: u64, body_len: usize) -> Entry<TypeConfig> {
        Entry {
            log_id: log_id(term, 1, index),
            payload: EntryPayload::Normal(Command::Write {
                origin: Origin {
                    node: 1,
                    request: index,
                },
                session_id: 0x1000 + index as i64,
                time_ms: 1_700_000_000_000,
                auth: vec![("digest".into(), "alice:x".into())],
                opcode: 5,
                body: Bytes::from(vec![index as u8; body_len]),
            }),
        }
    }

    /// Entries 1..=n: a membership entry, a blank one, then client writes.
    fn sample_entries(n: u64) -> Vec<Entry<TypeConfig>> {
        (1..=n)
            .map(|i| match i {
                1 => Entry {
                    log_id: log_id(1, 1, 1),
                    payload: EntryPayload::Membership(Membership::new(
                        vec![BTreeSet::from([1, 2, 3])],
                        None,
                    )),
                },
                2 => Entry {
                    log_id: log_id(1, 1, 2),
                    payload: EntryPayload::Blank,
                },
                i => write_entry(1, i, 100),
            })
            .collect()
    }

    fn indexes(entries: &[Entry<TypeConfig>]) -> Vec<u64> {
        entries.iter().map(|e| e.log_id.index).collect()
    }

    /// Flips one byte at `at` (a fraction of its length) of every file in `dir` whose name ends
    /// with `suffix`; returns how many files it damaged.
    fn flip_byte(dir: &Path, suffix: &str, at: f64) -> usize {
        let mut damaged = 0;
        for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
            let path = entry.path();
            if !path.to_string_lossy().ends_with(suffix) {
                continue;
            }
            let mut bytes = std::fs::read(&path).expect("read");
            if bytes.is_empty() {
                continue;
            }
            let i = ((bytes.len() as f64 * at) as usize).min(bytes.len() - 1);
            bytes[i] ^= 0x20;
            std::fs::write(&path, bytes).expect("write");
            damaged += 1;
        }
        damaged
    }

    /// A flipped byte in the middle of the write-ahead log, or in a table file, is refused when
    /// the log is opened: never a log with the damaged entry (or those after it) silently gone.
    #[test]
    fn a_flipped_byte_in_the_wal_or_a_table_is_refused_at_open() -> Result<(), SErr> {
        for (what, flush) in [("wal", false), ("table", true)] {
            for at in [0.3, 0.5, 0.8] {
                let dir = tempfile::TempDir::new().expect("tempdir");
                runtime().block_on(async {
                    let mut store = LogStore::open(dir.path()).expect("open");
                    for chunk in sample_entries(60).chunks(6) {
                        store.blocking_append(chunk.to_vec()).await?;
                    }
                    if flush {
                        store
                            .db
                            .flush_cf(store.cf(CF_LOGS).expect("cf"))
                            .expect("flush");
                    }
                    Ok::<_, SErr>(())
                })?;
                let suffix = if flush { ".sst" } else { ".log" };
                assert!(flip_byte(dir.path(), suffix, at) > 0, "no {what} file");
                match LogStore::open(dir.path()) {
                    Err(e) => assert!(e.to_string().contains("orrupt"), "{what} at {at}: {e}"),
                    Ok(store) => panic!(
                        "{what} damaged at {at} opened: {} entries",
                        store.read_entries(&(0..)).map(|e| e.len()).unwrap_or(0)
                    ),
                }
            }
        }
        Ok(())
    }

    /// A write-ahead log cut inside its last record (a crash during a write that was never
    /// synced, so never acknowledged) still opens, with every earlier entry.
    #[test]
    fn a_torn_last_record_is_tolerated() -> Result<(), SErr> {
        let dir = tempfile::TempDir::new().expect("tempdir");
        runtime().block_on(async {
            let mut store = LogStore::open(dir.path()).expect("open");
            for chunk in sample_entries(30).chunks(6) {
                store.blocking_append(chunk.to_vec()).await?;
            }
            Ok::<_, SErr>(())
        })?;
        let wal: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
            .collect();
        assert_eq!(wal.len(), 1, "{wal:?}");
        let len = std::fs::metadata(&wal[0]).expect("len").len();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&wal[0])
            .expect("open wal");
        f.set_len(len - 20).expect("truncate");
        drop(f);
        let store = LogStore::open(dir.path()).expect("a torn tail opens");
        let kept = store.read_entries(&(0..)).expect("read");
        assert_eq!(indexes(&kept), (1..=24).collect::<Vec<u64>>());
        Ok(())
    }

    // ---- durability ----

    /// Writes a known state: entries 1..=10, vote, committed 7, purge up to 3.
    async fn write_known_state(store: &mut LogStore) -> Result<(), SErr> {
        store.blocking_append(sample_entries(10)).await?;
        store.save_vote(&Vote::new_committed(4, 2)).await?;
        store.save_committed(Some(log_id(1, 1, 7))).await?;
        store.purge(log_id(1, 1, 3)).await?;
        Ok(())
    }

    /// Checks the state `write_known_state` wrote, in a freshly opened store.
    async fn check_known_state(store: &mut LogStore) -> Result<(), SErr> {
        let expected = sample_entries(10).split_off(3); // 4..=10
        assert_eq!(store.try_get_log_entries(0..100).await?, expected);
        assert_eq!(store.read_vote().await?, Some(Vote::new_committed(4, 2)));
        assert_eq!(store.read_committed().await?, Some(log_id(1, 1, 7)));
        let state = store.get_log_state().await?;
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 3)));
        assert_eq!(state.last_log_id, Some(log_id(1, 1, 10)));
        Ok(())
    }

    /// Drop the store without any shutdown step (there is none: the DB is not flushed, only
    /// closed), reopen, and everything is there: recovery is WAL replay.
    #[test]
    fn reopen_after_drop_keeps_everything() -> Result<(), SErr> {
        let dir = tempfile::TempDir::new().expect("tempdir");
        runtime().block_on(async {
            let mut store = LogStore::open(dir.path()).expect("open");
            write_known_state(&mut store).await?;
            drop(store);

            let mut store = LogStore::open(dir.path()).expect("reopen");
            check_known_state(&mut store).await?;
            // And the log goes on from there.
            store.blocking_append([write_entry(2, 11, 10)]).await?;
            assert_eq!(
                store.get_log_state().await?.last_log_id,
                Some(log_id(2, 1, 11))
            );
            Ok(())
        })
    }

    /// Set in the child process of `survives_process_abort`: the directory to write into.
    const CRASH_DIR_ENV: &str = "SYNOD_LOG_STORE_CRASH_DIR";
    /// Printed by the child after its writes returned, just before it aborts.
    const CRASH_MARKER: &str = "crash-child: writes returned, aborting";

    /// The child half of `survives_process_abort`; a no-op unless `CRASH_DIR_ENV` is set.
    #[test]
    fn crash_child_writer() {
        let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
            return;
        };
        let mut store = LogStore::open(Path::new(&dir)).expect("open");
        runtime()
            .block_on(write_known_state(&mut store))
            .expect("write");
        println!("{CRASH_MARKER}");
        // No destructor, no close, no flush: the process dies holding the DB open.
        std::process::abort();
    }

    /// A process that dies (SIGABRT) right after its calls returned loses nothing.
    #[test]
    fn survives_process_abort() -> Result<(), SErr> {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let exe = std::env::current_exe().expect("test binary");
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "log_store::tests::crash_child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_DIR_ENV, dir.path())
            .output()
            .expect("run the child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(CRASH_MARKER),
            "child did not finish its writes: {out:?}"
        );
        assert!(!out.status.success(), "child was meant to abort: {out:?}");

        runtime().block_on(async {
            let mut store = LogStore::open(dir.path()).expect("reopen after abort");
            check_known_state(&mut store).await
        })
    }

    // ---- purge frees the space ----

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn purge_deletes_and_compacts() -> Result<(), SErr> {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let mut store = LogStore::open(dir.path()).expect("open");
        let entries: Vec<_> = (1..=3000).map(|i| write_entry(1, i, 4096)).collect();
        store.blocking_append(entries).await?;
        store
            .db
            .flush_cf(store.cf(CF_LOGS).expect("cf"))
            .expect("flush");
        let before = store.sst_bytes().expect("size");
        assert!(before > 3000 * 4096, "flushed {before} bytes");
        store.purge(log_id(1, 1, 2900)).await?;
        // The purge compacts in the background; wait for it (bounded).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while store.compactor.running.load(Relaxed) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let after = store.sst_bytes().expect("size");
        assert!(
            after < before / 10,
            "purged log still holds {after} of {before} bytes"
        );
        let left = store.try_get_log_entries(..).await?;
        assert_eq!(left.len(), 100);
        assert_eq!(left[0].log_id.index, 2901);
        Ok(())
    }

    // ---- corruption is an error, never "absent" ----

    fn assert_read_error<T: std::fmt::Debug>(r: Result<T, SErr>, subject: &str) {
        match r {
            Err(StorageError::IO { source }) => {
                let text = source.to_string();
                assert!(text.contains(subject) && text.contains("Read"), "{text}");
                assert!(
                    text.contains("decode") || text.contains("corrupt"),
                    "{text}"
                );
            }
            other => panic!("expected a storage read error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn corrupt_vote_is_an_error() -> Result<(), SErr> {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let mut store = LogStore::open(dir.path()).expect("open");
        let db = Arc::clone(&store.db); // write behind the store's back
                                        // ... and past its tail cache, which only the store's own writes keep current: forget
                                        // it, so that the reads below reach the damaged records (as after a reopen).
        store.tail().clear();
        let meta = db.cf_handle(CF_META).expect("meta");

        db.put_cf(meta, KEY_VOTE, [0xff, 0xfe, 0x00, 0x13, 0x37])
            .expect("put");
        assert_read_error(store.read_vote().await, "Vote");

        // A valid vote followed by trailing garbage is corrupt too.
        let mut bytes = encode(&Vote::new(3, 1)).expect("encode");
        bytes.push(0);
        db.put_cf(meta, KEY_VOTE, &bytes).expect("put");
        assert_read_error(store.read_vote().await, "Vote");

        // And the log is refused when it is opened again, as damaged.
        drop(store);
        drop(db);
        match LogStore::open(dir.path()) {
            Err(e) => assert!(e.is_damaged_file(), "{e}"),
            Ok(_) => panic!("a log with a corrupt vote opened"),
        }
        Ok(())
    }

    #[tokio::test]
    async fn corrupt_meta_and_entries_are_errors() -> Result<(), SErr> {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let mut store = LogStore::open(dir.path()).expect("open");
        store.blocking_append(sample_entries(5)).await?;
        let db = Arc::clone(&store.db); // write behind the store's back
                                        // ... and past its tail cache, which only the store's own writes keep current: forget
                                        // it, so that the reads below reach the damaged records (as after a reopen).
        store.tail().clear();
        let meta = db.cf_handle(CF_META).expect("meta");
        let logs = db.cf_handle(CF_LOGS).expect("logs");

        db.put_cf(meta, KEY_COMMITTED, [0xff]).expect("put");
        assert_read_error(store.read_committed().await, "Store");
        db.put_cf(meta, KEY_LAST_PURGED, [0xff]).expect("put");
        assert_read_error(store.get_log_state().await, "Logs");
        db.delete_cf(meta, KEY_LAST_PURGED).expect("delete");

        // Garbage as the last entry: both the range read and the log state fail.
        db.put_cf(logs, log_key(5), [1, 2, 3]).expect("put");
        assert_read_error(store.try_get_log_entries(4..6).await, "Logs");
        assert_read_error(store.get_log_state().await, "Logs");
        // An entry stored under another index than its own.
        let moved = encode(&write_entry(1, 9, 1)).expect("encode");
        db.put_cf(logs, log_key(5), moved).expect("put");
        assert_read_error(store.try_get_log_entries(5..=5).await, "Logs");
        // A key that is not a u64.
        db.put_cf(logs, [0u8; 3], [0u8]).expect("put");
        assert_read_error(store.try_get_log_entries(..).await, "Logs");
        Ok(())
    }

    #[tokio::test]
    async fn a_store_of_another_format_is_refused_and_one_without_gets_this_one() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        {
            let store = LogStore::open(dir.path()).expect("open");
            let found: Option<u32> = store.get_meta(KEY_FORMAT).expect("read the format");
            assert_eq!(found, Some(LOG_FORMAT), "a new store records its format");
            // As release 0.1 left it: no format key.
            let meta = store.db.cf_handle(CF_META).expect("meta");
            store.db.delete_cf(meta, KEY_FORMAT).expect("delete");
        }
        {
            let store = LogStore::open(dir.path()).expect("a store of release 0.1 opens");
            let found: Option<u32> = store.get_meta(KEY_FORMAT).expect("read the format");
            assert_eq!(found, Some(LOG_FORMAT), "and gets this format");
            let meta = store.db.cf_handle(CF_META).expect("meta");
            let next = encode(&(LOG_FORMAT + 1)).expect("encode");
            store.db.put_cf(meta, KEY_FORMAT, next).expect("put");
        }
        let err = LogStore::open(dir.path())
            .err()
            .expect("another format is refused");
        assert!(
            err.to_string()
                .contains(&format!("raft log format version {}", LOG_FORMAT + 1)),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains(&format!("reads version {LOG_FORMAT}")),
            "{err}"
        );
    }

    // ---- semantics beyond the Suite ----

    #[tokio::test]
    async fn range_reads_return_existing_entries_in_order() -> Result<(), SErr> {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let mut store = LogStore::open(dir.path()).expect("open");
        // Entries 5..=9 and u64::MAX - 1 ..= u64::MAX (to exercise the end of the key space).
        store
            .blocking_append((5..=9).map(|i| write_entry(1, i, 8)))
            .await?;
        store
            .blocking_append([write_entry(1, u64::MAX - 1, 1), write_entry(1, u64::MAX, 1)])
            .await?;

        assert_eq!(indexes(&store.try_get_log_entries(0..7).await?), [5, 6]);
        assert_eq!(indexes(&store.try_get_log_entries(6..=8).await?), [6, 7, 8]);
        let r = (Bound::Excluded(6), Bound::Included(9));
        assert_eq!(indexes(&store.try_get_log_entries(r).await?), [7, 8, 9]);
        assert!(store.try_get_log_entries(10..100).await?.is_empty());
        assert!(store.try_get_log_entries(8..8).await?.is_empty());
        assert_eq!(
            indexes(&store.try_get_log_entries(9..).await?),
            [9, u64::MAX - 1, u64::MAX]
        );
        assert_eq!(
            indexes(&store.try_get_log_entries(u64::MAX..=u64::MAX).await?),
            [u64::MAX]
        );
        let r = (Bound::Excluded(u64::MAX), Bound::Unbounded);
        assert!(store.try_get_log_entries(r).await?.is_empty());

        // Truncating at u64::MAX - 1 removes both ends of the key space, nothing else.
        store.truncate(log_id(1, 1, u64::MAX - 1)).await?;
        assert_eq!(
            indexes(&store.try_get_log_entries(..).await?),
            [5, 6, 7, 8, 9]
        );
        store.truncate(log_id(1, 1, 8)).await?;
        assert_eq!(indexes(&store.try_get_log_entries(..).await?), [5, 6, 7]);
        store.purge(log_id(1, 1, 6)).await?;
        assert_eq!(indexes(&store.try_get_log_entries(..).await?), [7]);
        let state = store.get_log_state().await?;
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 6)));
        assert_eq!(state.last_log_id, Some(log_id(1, 1, 7)));

        // committed can be cleared again.
        store.save_committed(Some(log_id(1, 1, 7))).await?;
        store.save_committed(None).await?;
        assert_eq!(store.read_committed().await?, None);
        Ok(())
    }

    /// A committed hint costs no write of its own: it is read back at once, and reaches the
    /// disk with the next synced write (here an append), never before.
    #[test]
    fn a_committed_hint_rides_the_next_synced_write() -> Result<(), SErr> {
        let dir = tempfile::TempDir::new().expect("tempdir");
        runtime().block_on(async {
            let mut store = LogStore::open(dir.path()).expect("open");
            store.blocking_append(sample_entries(5)).await?;
            store.save_committed(Some(log_id(1, 1, 4))).await?;
            assert_eq!(store.read_committed().await?, Some(log_id(1, 1, 4)));
            assert_eq!(
                store.stats().synced_writes,
                1,
                "saving the hint wrote nothing"
            );
            let on_disk: Option<LogId<NodeId>> = store.get_meta(KEY_COMMITTED).expect("meta");
            assert_eq!(on_disk, None, "not on disk before a synced write");

            store.blocking_append([write_entry(1, 6, 10)]).await?;
            let on_disk: Option<LogId<NodeId>> = store.get_meta(KEY_COMMITTED).expect("meta");
            assert_eq!(on_disk, Some(log_id(1, 1, 4)), "the append carried it");

            // A later hint that no synced write follows is lost with the process: the store
            // reopens with the last one written (stale, which is safe).
            store.save_committed(Some(log_id(1, 1, 6))).await?;
            drop(store);
            let mut store = LogStore::open(dir.path()).expect("reopen");
            assert_eq!(store.read_committed().await?, Some(log_id(1, 1, 4)));

            // Clearing rides along the same way.
            store.save_committed(None).await?;
            store.save_vote(&Vote::new(2, 1)).await?;
            drop(store);
            let mut store = LogStore::open(dir.path()).expect("reopen");
            assert_eq!(store.read_committed().await?, None);
            Ok(())
        })
    }

    #[tokio::test]
    async fn the_tail_cache_answers_what_the_log_holds() -> Result<(), SErr> {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let mut store = LogStore::open(dir.path()).expect("open");
        store
            .blocking_append((1..=20).map(|i| write_entry(1, i, 100)))
            .await?;
        store.truncate(log_id(1, 1, 15)).await?;
        store
            .blocking_append((15..=18).map(|i| write_entry(2, i, 50)))
            .await?;
        store.purge(log_id(1, 1, 3)).await?;
        let ranges = [
            (1, 19),
            (4, 19),
            (4, 10),
            (14, 17),
            (18, 19),
            (18, 25),
            (19, 30),
        ];
        let mut cached = Vec::new();
        for (from, to) in ranges {
            cached.push(store.try_get_log_entries(from..to).await?);
        }
        store.tail().clear();
        for ((from, to), from_cache) in ranges.into_iter().zip(cached) {
            let from_log = store.try_get_log_entries(from..to).await?;
            assert_eq!(from_cache, from_log, "entries {from}..{to}");
        }
        assert_eq!(
            indexes(&store.try_get_log_entries(14..17).await?),
            [14, 15, 16]
        );
        Ok(())
    }

    #[tokio::test]
    async fn the_saved_vote_is_shown_once_durable_and_again_after_reopening() -> Result<(), SErr> {
        let dir = tempfile::TempDir::new().expect("tempdir");
        {
            let mut store = LogStore::open(dir.path()).expect("open");
            let seen = store.saved_vote();
            assert_eq!(seen.get(), None);
            store.save_vote(&Vote::new(3, 2)).await?;
            // A handle taken before the save shows it, as does one of a clone.
            assert_eq!(seen.get(), Some(Vote::new(3, 2)));
            store.save_vote(&Vote::new_committed(3, 2)).await?;
            let reader = store.get_log_reader().await;
            assert_eq!(reader.saved_vote().get(), Some(Vote::new_committed(3, 2)));
        }
        let store = LogStore::open(dir.path()).expect("reopen");
        assert_eq!(store.saved_vote().get(), Some(Vote::new_committed(3, 2)));
        Ok(())
    }

    #[tokio::test]
    async fn stats_count_appends_and_synced_writes() -> Result<(), SErr> {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let mut store = LogStore::open(dir.path()).expect("open");
        let reader = store.get_log_reader().await;
        assert_eq!(store.stats(), LogStats::default());
        store.blocking_append(sample_entries(4)).await?;
        store.blocking_append([write_entry(1, 5, 10)]).await?;
        store.blocking_append([]).await?; // nothing to write: no write at all
        store.save_vote(&Vote::new(1, 1)).await?;
        store.save_committed(Some(log_id(1, 1, 5))).await?; // kept for the next synced write
        let stats = reader.stats(); // clones share the counters
        assert_eq!(stats.appends, 2);
        assert_eq!(stats.entries_appended, 5);
        assert!(stats.bytes_appended > 100);
        assert_eq!(stats.synced_writes, 3);
        assert!(stats.synced_write_micros_total >= stats.synced_write_micros_last);
        Ok(())
    }
}
