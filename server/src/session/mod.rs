//! Sessions on this node: the one registry of client connections ([`registry`]), the leader's
//! deadlines and the activity that extends them ([`tracker`]), and the periodic duty that
//! expires sessions and reaps container/TTL nodes ([`reaper`], with the leader's own clock for
//! TTLs: [`ttl`]). Sessions themselves (their
//! timeouts, passwords, ephemerals) are replicated state in the DataTree.

pub mod reaper;
pub mod registry;
pub mod tracker;
pub mod ttl;
