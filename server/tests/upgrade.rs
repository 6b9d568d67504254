//! A rolling upgrade from the previous release to this one, under load: a secure 3-node
//! cluster of release 0.4 (built from its git tag by `scripts/previous-release.sh`) is
//! upgraded one node at a time — followers first, the leader last, each stopped with SIGTERM
//! and started again on its own data by this build; in between, the 0.4 leader is paused until a
//! 0.5 node leads, so that entries, forwarded writes and read points flow both ways between the
//! releases. Checked: no acknowledged write is lost, a read through every node succeeds after
//! every step, a session opened before the upgrade and its ephemeral survive and its watch
//! fires after it, a tenant declared on 0.4 survives, the cluster version stays at 4 while a
//! 0.4 node remains (so a leader confirms its own reads with heartbeat rounds, as 0.4 does) and
//! rises to 5 once the last node runs this release (from then on neither a follower's read
//! point nor the leader's own needs a heartbeat round: the leader counts them), after which
//! every replica agrees on the digest and the audit trail, which began with 0.4's version
//! change, still verifies.
//!
//! The first run builds release 0.4 (about 15 minutes on 2 cores: RocksDB); later runs reuse
//! `$HOME/.cache/synod/releases/v0.4.0`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use synod_client::{Client, CreateMode, EventType};
use synod_testkit::load::WriteLoad;
use synod_testkit::{blocking, wait_for, Ensemble, SynodEnsemble};

const BIN: &str = env!("CARGO_BIN_EXE_synod");
const START: Duration = Duration::from_secs(60);
const WRITERS: usize = 4;
/// The previous release's tag, and the cluster versions before and after the upgrade.
const PREVIOUS_TAG: &str = "v0.4.0";
const PREVIOUS: &str = "0.4";
const THIS: &str = "0.5";
const PREVIOUS_VERSION: u64 = 4;
const THIS_VERSION: u64 = synod_raft_store::types::CLUSTER_VERSION as u64;

/// The previous release's `synod`, built (once) by `scripts/previous-release.sh`.
fn previous_release() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/previous-release.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(PREVIOUS_TAG)
        .output()
        .expect("run scripts/previous-release.sh");
    assert!(
        out.status.success(),
        "scripts/previous-release.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout.lines().last().expect("the release's directory");
    PathBuf::from(dir.trim()).join("synod")
}

/// `GET path` on node `idx` as the operator, answered 200.
fn admin_get(c: &SynodEnsemble, idx: usize, path: &str) -> Value {
    let (status, v) = c.admin_json(idx, "GET", path, None);
    assert_eq!(status, 200, "GET {path} on node {idx}: {v}");
    v
}

/// The cluster version node `idx` reports (`None`: no answer).
fn cluster_version(c: &SynodEnsemble, idx: usize) -> Option<u64> {
    c.status_json(idx)?.get("cluster_version")?.as_u64()
}

/// Reads `/upgrade/config` through each node on its own (a linearizable read: through a
/// follower, a read point from the leader, whichever releases the two run).
fn read_through_each(c: &SynodEnsemble, rt: &tokio::runtime::Runtime, step: &str) {
    for i in 0..3 {
        rt.block_on(async {
            let zk = Client::connect(&c.connect_string_of(&[i]), c.connect_options())
                .await
                .unwrap_or_else(|e| panic!("{step}: connect to node {i}: {e}"));
            zk.get_data("/upgrade/config")
                .await
                .unwrap_or_else(|e| panic!("{step}: read through node {i}: {e}\n{}", c.logs()));
            let _ = zk.close().await;
        });
    }
}

/// The `synod_read_points_total{how="follower_vote"}` count node `idx` reports (0 if none).
fn follower_vote_read_points(c: &SynodEnsemble, idx: usize) -> u64 {
    c.metric(idx, "synod_read_points_total{how=\"follower_vote\"} ")
        .map_or(0, |v| v as u64)
}

/// Waits (30 s at most) until every node reports cluster version `version`.
fn wait_cluster_version(c: &SynodEnsemble, version: u64) {
    wait_for(
        Duration::from_secs(30),
        &format!("cluster version {version} on every node"),
        || {
            (0..3)
                .all(|i| cluster_version(c, i) == Some(version))
                .then_some(())
        },
    );
}

#[test]
fn a_rolling_upgrade_from_the_previous_release_loses_nothing() {
    let old = previous_release();
    let c = Arc::new(SynodEnsemble::unstarted_tls(Path::new(BIN), 3).expect("lay out a cluster"));
    let members = c.members(&[0, 1, 2]);
    for i in 0..3 {
        c.spawn_binary(i, &old, &members, &[])
            .expect("start the previous release");
    }
    let first_leader = c.wait_leader_among(&[0, 1, 2], START);
    // A new cluster of the previous release raises its version to that release's.
    wait_cluster_version(&c, PREVIOUS_VERSION);
    let (status, v) = c.admin_json(
        first_leader,
        "POST",
        "/tenants",
        Some(json!({"name": "lab", "members": ["x509:lab"]})),
    );
    assert!(
        status / 100 == 2,
        "declare a tenant on {PREVIOUS}: {status} {v}"
    );

    let rt = synod_testkit::runtime();
    let (watcher, watch, session) = rt.block_on(async {
        let opts = c
            .connect_options()
            .connect_timeout(Duration::from_secs(10))
            .session_timeout(Duration::from_secs(30));
        let zk = Client::connect(&c.connect_string_of(&[0, 1, 2]), opts)
            .await
            .expect("connect");
        zk.create("/upgrade", b"", CreateMode::Persistent)
            .await
            .expect("create /upgrade");
        zk.create("/upgrade/load", b"", CreateMode::Persistent)
            .await
            .expect("create /upgrade/load");
        zk.create("/upgrade/config", b"v1", CreateMode::Persistent)
            .await
            .expect("create /upgrade/config");
        zk.create("/upgrade/alive", b"", CreateMode::Ephemeral)
            .await
            .expect("create the ephemeral");
        let (_, _, watch) = zk
            .get_data_watch("/upgrade/config")
            .await
            .expect("watch /upgrade/config");
        let session = zk.session_id();
        (zk, watch, session)
    });
    // A snapshot on every old node: this build must load the previous release's snapshot file.
    for i in 0..3 {
        let (status, v) = c.admin_json(i, "POST", "/snapshot", None);
        assert_eq!(status, 200, "POST /snapshot on node {i}: {v}");
    }

    let load = Arc::new(WriteLoad::default());
    let writers: Vec<_> = (0..WRITERS)
        .map(|k| {
            let options = c
                .connect_options()
                .connect_timeout(Duration::from_secs(10))
                .session_timeout(Duration::from_secs(30));
            let connect = c.connect_string_of(&[0, 1, 2]);
            rt.spawn(
                load.clone()
                    .writer(connect, options, "/upgrade/load".into(), k),
            )
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));

    let mut rows = vec![format!(
        "{:<28} {:>9} {:>8} {:>15} {:>12} {:>10}",
        "step", "releases", "leader", "cluster version", "acknowledged", "took"
    )];
    let mut releases = [PREVIOUS; 3];
    let row = |step: &str, releases: &[&str; 3], took: Duration, rows: &mut Vec<String>| {
        let leader = c
            .leader()
            .map_or("-".to_string(), |l| format!("node {}", l + 1));
        let version = (0..3)
            .filter_map(|i| cluster_version(&c, i))
            .max()
            .map_or("-".to_string(), |v| v.to_string());
        rows.push(format!(
            "{:<28} {:>9} {:>8} {:>15} {:>12} {:>9.1}s",
            step,
            releases.join("/"),
            leader,
            version,
            load.acknowledged_count(),
            took.as_secs_f64()
        ));
    };
    row(
        &format!("release {PREVIOUS}, under load"),
        &releases,
        Duration::ZERO,
        &mut rows,
    );

    // Followers first, the leader last (what docs/operations.md tells operators).
    let mut order: Vec<usize> = (0..3).filter(|&i| i != first_leader).collect();
    order.push(first_leader);
    for (step, &idx) in order.iter().enumerate() {
        let t = Instant::now();
        let status = c.terminate(idx, Duration::from_secs(20));
        assert!(
            status.is_some_and(|s| s.success()),
            "node {idx} (release {PREVIOUS}) did not stop cleanly on SIGTERM: {status:?}\n{}",
            c.log_tail(idx)
        );
        c.spawn_with(idx, &members, &[])
            .expect("start this release");
        c.wait_leader_among(&[0, 1, 2], START);
        c.wait_caught_up(idx, START)
            .unwrap_or_else(|e| panic!("node {idx} after its upgrade: {e}\n{}", c.logs()));
        releases[idx] = THIS;
        row(
            &format!("node {} upgraded", idx + 1),
            &releases,
            t.elapsed(),
            &mut rows,
        );
        read_through_each(&c, &rt, &format!("node {} upgraded", idx + 1));
        if step < 2 {
            // An old node remains: the version stays.
            for i in 0..3 {
                if let Some(v) = cluster_version(&c, i) {
                    assert_eq!(
                        v, PREVIOUS_VERSION,
                        "node {i} raised the version with a {PREVIOUS} member left"
                    );
                }
            }
        }
        if step == 1 {
            // Two new nodes and the old leader: pause the leader until a new node leads, so
            // that an old follower takes entries from, and forwards writes to, a new leader.
            let t = Instant::now();
            let old_leader = order[2];
            let others: Vec<usize> = order[..2].to_vec();
            c.pause(old_leader).expect("pause the old leader");
            let new_leader = c.wait_leader_among(&others, START);
            c.resume(old_leader).expect("resume the old node");
            assert_eq!(c.wait_leader_among(&[0, 1, 2], START), new_leader);
            // The new leader names the old member that holds the version back.
            let held = c
                .status_json(new_leader)
                .map(|s| s["cluster_version_held_by"].clone());
            assert_eq!(
                held,
                Some(json!([old_leader + 1])),
                "the leader's /status names the old member"
            );
            std::thread::sleep(Duration::from_secs(2));
            c.wait_caught_up(old_leader, START)
                .unwrap_or_else(|e| panic!("the old node under a new leader: {e}\n{}", c.logs()));
            read_through_each(&c, &rt, "a new leader");
            row(
                &format!("{THIS} node {} leads {PREVIOUS}", new_leader + 1),
                &releases,
                t.elapsed(),
                &mut rows,
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    assert!(
        c.running().iter().all(|r| *r),
        "a node stopped during the upgrade\n{}",
        c.logs()
    );

    let t = Instant::now();
    wait_cluster_version(&c, THIS_VERSION);
    row("cluster version raised", &releases, t.elapsed(), &mut rows);
    // Now every read point, the leader's own too, is confirmed on a follower's vote instead of
    // a heartbeat round: one read through each node counts three.
    let leader = c.leader().expect("a leader");
    let before = follower_vote_read_points(&c, leader);
    read_through_each(&c, &rt, "cluster version raised");
    let leader_after = c.leader().expect("a leader");
    if leader_after == leader {
        let counted = follower_vote_read_points(&c, leader).saturating_sub(before);
        assert!(
            counted >= 3,
            "{counted} of 3 reads through each node took no heartbeat round after the version \
             was raised"
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    load.stop();
    rt.block_on(async {
        for w in writers {
            w.await.expect("writer task");
        }
    });

    // The session and its watch lived through three restarts.
    rt.block_on(async {
        assert_eq!(watcher.session_id(), session, "the session changed");
        let alive = watcher
            .exists("/upgrade/alive")
            .await
            .expect("exists /upgrade/alive");
        assert!(
            alive.is_some_and(|s| s.ephemeral_owner == session),
            "the session's ephemeral is gone"
        );
        let writer = Client::connect(&c.connect_string_of(&[0, 1, 2]), c.connect_options())
            .await
            .expect("connect");
        writer
            .set_data("/upgrade/config", b"v2", None)
            .await
            .expect("set /upgrade/config");
        let event = tokio::time::timeout(Duration::from_secs(10), watch)
            .await
            .expect("the watch set before the upgrade fired");
        assert_eq!(event.event_type, EventType::NodeDataChanged);
        let _ = writer.close().await;
    });

    // Every acknowledged write is on every node.
    let acknowledged = load.acknowledged_count();
    assert!(
        acknowledged > 100,
        "too little load to show anything: {acknowledged} writes"
    );
    let missing = rt.block_on(load.missing_on(&c, &[0, 1, 2], "/upgrade/load"));
    for (i, p) in &missing {
        eprintln!("node {i} lacks acknowledged {p}");
    }
    let lost = missing.len();
    rows.push(format!(
        "writes acknowledged {acknowledged}, failed (not acknowledged) {}, lost {lost}",
        load.failed()
    ));
    println!("\nrolling upgrade {PREVIOUS} -> {THIS}, 3 nodes, {WRITERS} writers:");
    for r in &rows {
        println!("  {r}");
    }
    assert_eq!(lost, 0, "acknowledged writes lost in the upgrade");

    // The replicas agree, the tenant is still declared, and the trail (which began with the
    // previous release's version change) verifies.
    let digest = c.agreed_digest(&[0, 1, 2], Duration::from_secs(20));
    assert!(!digest.is_empty());
    for i in 0..3 {
        let trail = admin_get(&c, i, "/audit?limit=1");
        let first = trail
            .get("records")
            .and_then(|r| r.get(0))
            .cloned()
            .unwrap_or(Value::Null);
        assert!(
            first.to_string().contains("cluster_version")
                || first.to_string().contains("ClusterVersion"),
            "node {i}'s trail does not begin with the version change: {trail}"
        );
        let tenants = admin_get(&c, i, "/tenants");
        assert!(
            tenants.to_string().contains("\"lab\""),
            "node {i} lost the tenant: {tenants}"
        );
        let verified = admin_get(&c, i, "/audit/verify");
        assert_eq!(verified["ok"], true, "node {i}: {verified}");
    }
    blocking(|| drop(watcher));
}
