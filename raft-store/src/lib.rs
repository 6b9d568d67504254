//! synod's replicated state: the znode [`tree::DataTree`] and session table, applied
//! deterministically from log entries, and its znodes ([`znode`]); the openraft type
//! configuration ([`types`]); the RocksDB log store ([`log_store`]); the state machine
//! ([`state_machine`]) and its snapshots' format, file and restore ([`snapshot`]), the snapshot
//! data openraft moves as a window of a file ([`snapshot_data`]), the backup file around it
//! ([`backup`]), the checksummed envelope of both ([`envelope`]); how every decode reads its
//! strings in place ([`in_place`]) and how a snapshot's data is decoded a window at a time
//! ([`value_reader`]); the tenant table ([`tenants`]), the audit trail ([`audit`])
//! and what RocksDB holds in memory for the log and the trail ([`rocks_memory`]).
//! No sockets: time, zxid and caller are inputs.

// The crate's documentation is for its developers: `scripts/test.sh` builds it with
// `--document-private-items` (warnings are errors), where links to private items resolve.
#![allow(rustdoc::private_intra_doc_links)]

pub mod acl;
pub mod audit;
pub mod backup;
pub mod envelope;
pub mod error;
mod in_place;
pub mod log_cache;
pub mod log_store;
pub mod quota;
pub mod rocks_memory;
pub mod snapshot;
pub mod snapshot_data;
pub mod state_machine;
pub mod tenants;
pub mod tree;
pub mod types;
mod value_reader;
pub mod znode;

pub use tenants::{Quota, Tenant, Tenants, Usage};
pub use tree::{Applied, Caller, DataTree, Event, Session, Txn};
pub use types::{Command, CommandResult, NodeId, Origin, TenantChange, TypeConfig};
pub use znode::{Node, NodeKind, NodeMeta};
