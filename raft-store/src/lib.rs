//! synod's replicated state: the znode [`tree::DataTree`] and session table, applied
//! deterministically from log entries. No sockets and no clock: time, zxid and caller are inputs.

pub mod acl;
pub mod tree;

pub use tree::{Applied, Caller, DataTree, Event, Node, NodeKind, Session, Txn};
