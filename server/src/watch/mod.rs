//! Watches, node-local and never replicated: which connections watch what ([`manager`]), the
//! recent events a resuming session is replayed from ([`history`]), and resuming a session's
//! watches after a reconnect ([`resume`]). Apply delivers events
//! ([`crate::pipeline::apply`]).

pub mod history;
pub mod manager;
pub mod resume;
