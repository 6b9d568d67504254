//! synod's test harnesses, shared by the tests of every crate (dev-only, never published).
//!
//! - [`ensemble`]: real N-node clusters on 127.0.0.1 — synod ([`SynodEnsemble`]) or Apache
//!   ZooKeeper from the Debian package ([`ZkEnsemble`]) — or an external server list
//!   (`SYNOD_TEST_SERVERS`, [`External`]), with kill/restart/pause/resume, per-node membership for
//!   the operations tests, peer routes for fault proxies, logs and data directories; the `synod`
//!   binary ([`synod_bin`]); free ports.
//! - [`mod@http`]: the admin-port client ([`AdminHttp`]): plaintext, or HTTPS with a certificate.
//! - [`authz`]: the authorization sweep, run against synod and ZooKeeper alike.
//! - [`inject`]: faults of the machine under a node: fsyncs delayed or failed by `strace`, a
//!   small tmpfs, a flipped byte, a clock moved by libfaketime.
//! - [`netns`]: machines for tests — network namespaces with their own addresses and host names
//!   on one bridge, partitioned by blackhole routes.
//! - [`load`]: write load whose every acknowledgement is recorded, to show nothing was lost.
//! - [`conformance`]: the client-visible ZooKeeper behaviour every server must show, run by
//!   testkit/tests/conformance.rs against ZooKeeper and by server/tests/conformance.rs against
//!   synod.
//!
//! This crate depends on the client library (the conformance cases drive it) and on nothing of
//! the server: server tests start the `synod` binary. So the client's tests that need a cluster
//! live in this crate's `tests/` (a `synod-client` dev-dependency on this crate would be a cycle).
//!
//! Linux only.

use std::time::{Duration, Instant};

pub mod authz;
pub mod conformance;
pub mod ensemble;
pub mod http;
pub mod inject;
pub mod load;
pub mod netns;

pub use ensemble::{
    free_ports, from_env, http, http_get, http_post, members_arg, synod_bin, synod_certs, Ensemble,
    External, Kind, Local, Node, NodeArgs, Probe, Synod, SynodEnsemble, ZkEnsemble, ZooKeeper,
};
pub use http::AdminHttp;

/// Runs a blocking harness call (kill, restart, leader polling, admin HTTP) from async code on a
/// multi-threaded tokio runtime.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// A tokio runtime for tests: two workers, like the 2-core machines the tests run on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Polls `f` every 50 ms until it returns true; panics with `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `f` every 50 ms until it returns `Some`; panics with `what` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
