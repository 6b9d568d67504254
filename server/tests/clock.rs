//! Clock faults on real `synod` processes (a secure 3-node cluster) with libfaketime: each node
//! runs with its own libfaketime control file, which the test rewrites to move that node's clock
//! while it runs.
//!
//! 1. The leader's wall clock jumps 5 minutes ahead, runs at twice the rate, then jumps back
//!    (what an NTP step or an operator does; the monotonic clock is untouched, as on Linux).
//! 2. A follower restarted with both its wall and monotonic clocks running at twice the rate
//!    (a fast clock), with clients connected to it.
//!
//! Throughout: no live session expires (its ephemeral stays), every read reflects every write
//! acknowledged before it began (no stale read), and a TTL node is reaped neither before its TTL
//! has passed in real time nor long after. A killed node leaves nothing of libfaketime's behind
//! in `/dev/shm`.

use std::path::Path;
use std::time::{Duration, Instant};

use synod_client::{Client, CreateMode};
use synod_testkit::{blocking, inject, runtime, Ensemble, SynodEnsemble};

const BIN: &str = env!("CARGO_BIN_EXE_synod");
const START: Duration = Duration::from_secs(60);
const TTL: Duration = Duration::from_secs(20);

fn set_clock(c: &SynodEnsemble, idx: usize, spec: &str) {
    let dir = c.node_dir(idx).expect("node dir");
    inject::set_clock(dir, spec).expect("write the faketime file");
}

fn spawn_faked(c: &SynodEnsemble, idx: usize, monotonic: bool) {
    let env = inject::faketime_env(monotonic);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    c.spawn_with_env(idx, &env)
        .expect("spawn synod under libfaketime");
}

async fn connect(c: &SynodEnsemble, idxs: &[usize], timeout: Duration) -> Client {
    let opts = c
        .connect_options()
        .connect_timeout(Duration::from_secs(10))
        .session_timeout(timeout);
    Client::connect(&c.connect_string_of(idxs), opts)
        .await
        .expect("connect")
}

/// Runs `for_how_long` of traffic: `writer` increments `/counter` through its node, and after
/// each acknowledged write `reader` (another session, on another node) reads it and must see
/// at least that version. Returns the number of rounds.
async fn no_stale_reads(writer: &Client, reader: &Client, for_how_long: Duration) -> u32 {
    let started = Instant::now();
    let mut rounds = 0;
    while started.elapsed() < for_how_long {
        let stat = writer
            .set_data("/counter", format!("{rounds}").as_bytes(), None)
            .await
            .expect("set /counter");
        let (_, seen) = reader.get_data("/counter").await.expect("get /counter");
        assert!(
            seen.version >= stat.version,
            "stale read: version {} read after version {} was acknowledged",
            seen.version,
            stat.version
        );
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rounds
}

/// Real wall-clock time in milliseconds since the epoch (this process is not faked).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[test]
fn clock_jumps_and_fast_clocks_expire_nothing_early() {
    let c = SynodEnsemble::unstarted_tls(Path::new(BIN), 3).expect("lay out a cluster");
    for i in 0..3 {
        set_clock(&c, i, "+0");
        spawn_faked(&c, i, false);
    }
    let leader = c.wait_leader_among(&[0, 1, 2], START);
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    runtime().block_on(async {
        let session_timeout = Duration::from_secs(6);
        let writer = connect(&c, &[leader], session_timeout).await;
        let reader = connect(&c, &[follower], session_timeout).await;
        let owner = connect(&c, &[other], session_timeout).await;
        writer
            .create("/counter", b"", CreateMode::Persistent)
            .await
            .expect("create /counter");
        owner
            .create("/alive", b"", CreateMode::Ephemeral)
            .await
            .expect("create the ephemeral");
        let created = Instant::now();
        writer
            .create_full(
                "/ttl",
                b"",
                writer.default_acl(),
                CreateMode::PersistentWithTtl,
                Some(TTL),
            )
            .await
            .expect("create the TTL node");

        // 1. The leader's wall clock: 5 minutes ahead, then twice the rate, then back.
        for (i, spec) in ["+300", "+300 x2", "+0"].into_iter().enumerate() {
            set_clock(&c, leader, spec);
            let rounds = no_stale_reads(&writer, &reader, Duration::from_secs(4)).await;
            // The leader stamps its (moved) wall clock into what it proposes: proof that the
            // fault is in effect.
            let (_, stat) = writer
                .create_full(
                    &format!("/stamp-{i}"),
                    b"",
                    writer.default_acl(),
                    CreateMode::Persistent,
                    None,
                )
                .await
                .expect("create a stamp");
            let ahead_ms = stat.mtime - now_ms();
            eprintln!("  a write through the leader is stamped {ahead_ms} ms ahead of real time");
            if spec.starts_with("+300") {
                assert!(
                    ahead_ms > 250_000,
                    "the leader's clock did not move: {ahead_ms} ms"
                );
            } else {
                assert!(
                    ahead_ms.abs() < 60_000,
                    "the leader's clock did not come back"
                );
            }
            eprintln!("leader's clock {spec:?}: {rounds} write/read rounds, no stale read");
            assert!(
                owner.exists("/alive").await.expect("exists").is_some(),
                "a live session's ephemeral vanished with the leader's clock at {spec:?}"
            );
            if created.elapsed() < TTL {
                assert!(
                    writer.exists("/ttl").await.expect("exists").is_some(),
                    "the TTL node was reaped {:?} after its creation, before its {TTL:?} TTL \
                     (leader's clock {spec:?})",
                    created.elapsed()
                );
            }
        }

        // 2. A follower with a fast clock (wall and monotonic at twice the rate).
        c.kill(follower).expect("stop the follower");
        set_clock(&c, follower, "+0 x2");
        spawn_faked(&c, follower, true);
        blocking(|| c.wait_caught_up(follower, START)).expect("the follower rejoins");
        let fast_reader = connect(&c, &[follower], session_timeout).await;
        let fast_owner = connect(&c, &[follower], session_timeout).await;
        fast_owner
            .create("/alive-fast", b"", CreateMode::Ephemeral)
            .await
            .expect("create the ephemeral");
        let rounds = no_stale_reads(&writer, &fast_reader, Duration::from_secs(12)).await;
        eprintln!("follower's clock at x2: {rounds} write/read rounds, no stale read");
        // A write through the follower is stamped with its clock, which has run fast since its
        // start: proof that the fault is in effect.
        let (_, stat) = fast_owner
            .create_full(
                "/stamp-fast",
                b"",
                fast_owner.default_acl(),
                CreateMode::Persistent,
                None,
            )
            .await
            .expect("create a stamp");
        let ahead_ms = stat.mtime - now_ms();
        eprintln!("  a write through the fast follower is stamped {ahead_ms} ms ahead");
        assert!(
            ahead_ms > 5_000,
            "the follower's clock does not run fast: {ahead_ms} ms"
        );
        for (zk, path) in [(&owner, "/alive"), (&fast_owner, "/alive-fast")] {
            assert!(
                zk.exists(path).await.expect("exists").is_some(),
                "a live session's ephemeral {path} vanished with a follower's clock at x2"
            );
        }

        // The TTL node goes once its TTL has passed (real time), within a few ticks.
        let deadline = created + TTL + Duration::from_secs(30);
        while writer.exists("/ttl").await.expect("exists").is_some() {
            assert!(
                Instant::now() < deadline,
                "the TTL node outlived its TTL by 30 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let gone = created.elapsed();
        assert!(gone >= TTL, "the TTL node was reaped after {gone:?}");
        eprintln!("TTL node ({TTL:?}) reaped {gone:?} after its creation");
        assert!(
            owner.exists("/alive").await.expect("exists").is_some(),
            "a live session's ephemeral vanished"
        );
    });

    // libfaketime made a semaphore and a shared-memory object for each node; a SIGKILLed node
    // cannot remove them, so the ensemble does once it has reaped the node.
    let pids: Vec<u32> = (0..3).filter_map(|i| c.pid(i)).collect();
    assert_eq!(pids.len(), 3, "a node is down before the end");
    for &pid in &pids {
        assert!(
            faketime_objects(pid).iter().all(|p| p.exists()),
            "libfaketime made no objects for node pid {pid}: {:?}",
            faketime_objects(pid)
        );
    }
    c.kill(leader).expect("SIGKILL the leader");
    drop(c); // SIGKILLs the other two
    for &pid in &pids {
        let left: Vec<_> = faketime_objects(pid)
            .into_iter()
            .filter(|p| p.exists())
            .collect();
        assert!(left.is_empty(), "a killed node left {left:?}");
    }
}

/// Where libfaketime keeps the semaphore and shared memory it makes for the process `pid`.
fn faketime_objects(pid: u32) -> [std::path::PathBuf; 2] {
    [
        format!("/dev/shm/sem.faketime_sem_{pid}").into(),
        format!("/dev/shm/faketime_shm_{pid}").into(),
    ]
}
