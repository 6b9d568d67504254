//! The authorization sweep (testkit/src/authz.rs) against the Apache ZooKeeper of this machine
//! (a local 3-node ensemble of the Debian package), to list where it differs from synod. Every
//! difference must be one of [`KNOWN`], each with its reason; a new one fails the test, and so
//! does a known one that went away (the list would be stale).

use std::sync::Arc;

use synod_testkit::{authz, Ensemble, ZkEnsemble};

/// Where ZooKeeper 3.8.0 (Debian's 3.8.0-11+deb12u2, which carries the CVE-2024-23944 fix:
/// watch events are checked against the node's ACL at delivery) answers otherwise than synod.
const KNOWN: &[(&str, &str)] = &[
    (
        "exists",
        "exists needs READ on an existing node only since ZooKeeper 3.8.4 / 3.9.2: 3.8.0 returns \
         its Stat to anyone",
    ),
    (
        "exists watch on the node",
        "the same: 3.8.0 answers and sets the watch (its events are then filtered at delivery)",
    ),
    (
        "that watch, still set after the owner's creation",
        "ZooKeeper uses up a one-shot watch whose event it withholds, so removeWatches (or \
         checkWatches) tells of a change the watcher may not see; synod keeps the watch",
    ),
];

fn main() -> std::process::ExitCode {
    let ens: Arc<dyn Ensemble> = match ZkEnsemble::start(3) {
        Ok(ens) => Arc::new(ens),
        Err(e) => {
            eprintln!("cannot start the ZooKeeper ensemble: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let rt = synod_testkit::runtime();
    // Without the reconnect probe: ZooKeeper replays no missed event of a persistent watch, so
    // what its client hears across a reconnect depends on how fast it reconnects.
    let findings = match rt.block_on(authz::sweep(ens.clone(), "/authz-sweep", false)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("the sweep could not run against ZooKeeper: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    eprintln!(
        "authorization sweep against ZooKeeper:\n{}",
        authz::table(&findings)
    );
    let differs: std::collections::BTreeSet<&str> = findings
        .iter()
        .filter(|f| !f.holds())
        .map(|f| f.door.as_str())
        .collect();
    let known: std::collections::BTreeSet<&str> = KNOWN.iter().map(|(d, _)| *d).collect();
    let mut ok = true;
    for d in differs.difference(&known) {
        eprintln!("UNLISTED difference from synod: {d}");
        ok = false;
    }
    for d in known.difference(&differs) {
        eprintln!("listed difference that ZooKeeper no longer shows: {d}");
        ok = false;
    }
    for (door, why) in KNOWN {
        eprintln!("known difference: {door}: {why}");
    }
    drop(rt);
    drop(ens);
    if ok {
        println!("test result: ok. authorization sweep: ZooKeeper differs from synod in exactly the {} listed doors", KNOWN.len());
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
