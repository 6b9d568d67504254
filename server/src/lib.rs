//! The synod server: a node of a Raft-replicated coordination service speaking the ZooKeeper
//! client protocol. `node` wires storage, Raft and the background duties; `connection` serves
//! clients; `peer` carries Raft and node-to-node requests; `local` and `watches` hold the
//! node-local state that apply updates; `admin` serves HTTP; `server` runs the listeners.

pub mod admin;
pub mod backup;
pub mod clock;
pub mod config;
pub mod connection;
pub mod control;
pub mod error;
pub mod fourletter;
pub mod local;
pub mod metrics;
pub mod node;
pub mod outbox;
pub mod peer;
pub mod server;
pub mod stats;
pub mod ui;
pub mod watches;
