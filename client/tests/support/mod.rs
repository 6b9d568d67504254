//! Shared helpers for the client's integration tests; include with `mod support;`.
#![allow(dead_code)]

pub mod conformance;
pub mod ensemble;
