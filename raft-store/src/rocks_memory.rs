//! What RocksDB holds in memory for one of a node's databases (the Raft log, the audit trail),
//! read from RocksDB's own properties; `/metrics` reports it as `synod_rocksdb_memory_bytes`. In
//! the `synod` binary RocksDB's C++ allocates from the same jemalloc as the node's Rust heap
//! (`server/src/cxx_alloc.rs`), so this is the part of the allocator's figures that is
//! RocksDB's.

use rocksdb::DB;

use crate::error::StoreError;

/// Bytes RocksDB holds in memory for one database, summed over the column families named.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RocksMemory {
    /// Memtables: the one being written, and those flushed or still to flush that are kept
    /// (`rocksdb.size-all-mem-tables`). Bounded by the column family's write buffers.
    pub memtables: u64,
    /// Index and filter blocks of the open table files, outside the block cache
    /// (`rocksdb.estimate-table-readers-mem`).
    pub table_readers: u64,
    /// Blocks of table files cached for reads (`rocksdb.block-cache-usage`). Each column family
    /// of the log and the trail is opened with options of its own, so each has a cache of its
    /// own and the sum counts nothing twice (column families that shared one table factory
    /// would share its cache, and would be counted once each).
    pub block_cache: u64,
}

/// Reads [`RocksMemory`] of `db` over the column families `cfs` (one missing is an error: the
/// stores open every one they name).
pub(crate) fn of(db: &DB, cfs: &[&str]) -> Result<RocksMemory, StoreError> {
    let mut total = RocksMemory::default();
    for name in cfs {
        let cf = db
            .cf_handle(name)
            .ok_or_else(|| StoreError::Corrupt(format!("missing column family {name}")))?;
        let prop = |p: &str| -> Result<u64, StoreError> {
            Ok(db.property_int_value_cf(cf, p)?.unwrap_or(0))
        };
        total.memtables += prop("rocksdb.size-all-mem-tables")?;
        total.table_readers += prop("rocksdb.estimate-table-readers-mem")?;
        total.block_cache += prop("rocksdb.block-cache-usage")?;
    }
    Ok(total)
}
