//! Peer RPC (being written).
