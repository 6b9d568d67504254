//! The conformance suite against the oracle: a real 3-node Apache ZooKeeper 3.8 ensemble started
//! by the harness (in read-only mode, for the case about it), or the servers in `SYNOD_TEST_SERVERS=h:p,...` (cases that must kill a server
//! are reported as ignored for an external list). The cases live in `testkit/src/conformance.rs`.

use std::sync::Arc;

fn main() -> std::process::ExitCode {
    match synod_testkit::ensemble::from_env_read_only() {
        Ok(ens) => synod_testkit::conformance::run(Arc::from(ens)),
        Err(e) => {
            eprintln!("cannot start the servers for the conformance suite: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
