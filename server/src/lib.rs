//! The synod server: a node of a Raft-replicated ZooKeeper-protocol coordination service.

pub mod peer;
pub mod watches;
