//! The request pipeline: everything between a client's bytes and its replies. See the map in
//! the crate documentation (`lib.rs`) for the order in which a read and a write pass through
//! these files.

pub mod apply;
pub mod conn;
pub mod connection;
pub mod handshake;
pub mod ordered;
pub mod outbox;
pub mod pending;
pub mod proposer;
pub mod read;
pub mod read_audit;
pub mod read_index;
pub mod reader;
pub mod write_order;
pub mod writer;
