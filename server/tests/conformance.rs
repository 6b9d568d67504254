//! The conformance suite (testkit/src/conformance.rs), unchanged, against a 3-node synod
//! cluster started from the `synod` binary of this package, its clients speaking TLS 1.3 with a
//! client certificate to the secure client port (none for the cases about unauthenticated
//! clients, with `--client-auth optional`; the super digest and reconfig enabled, as the
//! oracle runs, and read-only mode): every case that passes against Apache
//! ZooKeeper (plaintext, testkit/tests/conformance.rs) must pass here too.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use synod_testkit::{Ensemble, SynodEnsemble};

fn main() -> ExitCode {
    // Optional client certificates: the cases about unauthenticated clients connect without
    // one (a certificate is an identity); every other client presents the harness's.
    // The super identity and reconfig, as the ZooKeeper oracle runs with them.
    let args: Vec<String> = [
        "--client-auth",
        "optional",
        "--super-digest",
        synod_testkit::ensemble::SUPER_DIGEST,
        "--reconfig-enabled",
        "--read-only-mode",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let ens = match SynodEnsemble::start_tls(Path::new(env!("CARGO_BIN_EXE_synod")), 3, &args) {
        Ok(ens) => Arc::new(ens),
        Err(e) => {
            eprintln!("cannot start the synod cluster for the conformance suite: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = synod_testkit::conformance::run(ens.clone());
    if code != ExitCode::SUCCESS {
        // Diagnostic: what the servers said, since their directory goes away with the ensemble.
        for idx in 0..ens.addrs().len() {
            eprintln!(
                "--- synod node {idx} ({}), last lines ---\n{}",
                ens.addrs()[idx],
                ens.log_tail(idx)
            );
        }
        if let Ok(dir) = std::env::var("SYNOD_TEST_LOG_DIR") {
            for idx in 0..ens.addrs().len() {
                let to = Path::new(&dir).join(format!("conformance-node{idx}.log"));
                if let Err(e) = std::fs::write(&to, ens.log(idx)) {
                    eprintln!("cannot write {}: {e}", to.display());
                }
            }
        }
    }
    code
}
