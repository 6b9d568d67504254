//! Disk faults on real `synod` processes (secure 3-node clusters): an fdatasync made slow by
//! `strace --inject` shows that an acknowledgement waits for fsync; an fdatasync that fails with
//! EIO stops the node (fail-stop, exit status 74) without losing an acknowledged write while the
//! cluster goes on; a data directory on a small tmpfs that fills up refuses writes that grow the
//! tree with a clear error while reads, deletes and session opens and closes are served, and
//! takes writes again once space returns; a damaged snapshot file or Raft log is refused at
//! start, and the node is rebuilt from its peers.
//!
//! Needs root (ptrace of the nodes, mounting a tmpfs) and `strace`; `scripts/test.sh` installs it.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use synod_client::{Client, CreateMode, Error, ErrorCode, Op};
use synod_testkit::inject::{flip_middle, record_files, Strace, Tmpfs};
use synod_testkit::{blocking, runtime, Ensemble, SynodEnsemble};

const BIN: &str = env!("CARGO_BIN_EXE_synod");
const START: Duration = Duration::from_secs(60);

/// A secure 3-node cluster started with `extra` flags; returns it and its leader's index.
fn cluster(extra: &[&str], before_start: impl FnOnce(&SynodEnsemble)) -> (SynodEnsemble, usize) {
    let c = SynodEnsemble::unstarted_tls(Path::new(BIN), 3).expect("lay out a cluster");
    before_start(&c);
    let m = c.members(&[0, 1, 2]);
    for i in 0..3 {
        c.spawn_with(i, &m, extra).expect("spawn synod");
    }
    let leader = c.wait_leader_among(&[0, 1, 2], START);
    (c, leader)
}

async fn connect(c: &SynodEnsemble, idxs: &[usize]) -> Client {
    let opts = c.connect_options().connect_timeout(Duration::from_secs(10));
    Client::connect(&c.connect_string_of(idxs), opts)
        .await
        .expect("connect")
}

/// Time of one acknowledged create.
async fn timed_create(zk: &Client, path: &str) -> Duration {
    let t = Instant::now();
    zk.create(path, b"x", CreateMode::Persistent)
        .await
        .unwrap_or_else(|e| panic!("create {path}: {e}"));
    t.elapsed()
}

/// With every node's fdatasync and fsync delayed by 150 ms, no write is acknowledged sooner
/// than that: the acknowledgement waits for a majority's fsync (a log entry reported durable
/// before its sync returned would be acknowledged in about a millisecond here). Without the
/// delay the same writes are fast again.
#[test]
fn an_acknowledgement_waits_for_fsync() {
    const DELAY: Duration = Duration::from_millis(150);
    let (c, leader) = cluster(&[], |_| {});
    let follower = (leader + 1) % 3;
    runtime().block_on(async {
        let zk = connect(&c, &[follower]).await;
        zk.create("/acks", b"", CreateMode::Persistent)
            .await
            .expect("create /acks");
        let mut before = Vec::new();
        for i in 0..10 {
            before.push(timed_create(&zk, &format!("/acks/before-{i}")).await);
        }
        let tracers: Vec<Strace> = (0..3)
            .map(|i| {
                let pid = c.pid(i).expect("node running");
                Strace::attach(
                    pid,
                    &format!("fdatasync,fsync:delay_enter={}", DELAY.as_micros()),
                    c.root().join(format!("strace-{i}.txt")),
                )
                .expect("attach strace (scripts/test.sh installs it)")
            })
            .collect();
        let mut during = Vec::new();
        for i in 0..10 {
            during.push(timed_create(&zk, &format!("/acks/slow-{i}")).await);
        }
        let delayed: Vec<usize> = tracers.iter().map(|t| t.count("DELAYED")).collect();
        drop(tracers);
        let mut after = Vec::new();
        for i in 0..10 {
            after.push(timed_create(&zk, &format!("/acks/after-{i}")).await);
        }
        let ms = |v: &[Duration]| -> Vec<u128> { v.iter().map(|d| d.as_millis()).collect() };
        eprintln!(
            "serial create latency (ms) through a follower: before {:?}; with fsync +{}ms on \
             every node {:?} (delayed syncs per node {delayed:?}); after {:?}",
            ms(&before),
            DELAY.as_millis(),
            ms(&during),
            ms(&after)
        );
        assert!(
            delayed.iter().filter(|n| **n > 0).count() >= 2,
            "strace delayed no fsync on a majority: {delayed:?}"
        );
        for (i, d) in during.iter().enumerate() {
            assert!(
                *d >= DELAY,
                "write {i} was acknowledged after {d:?}, before the {DELAY:?} fsync it needs"
            );
        }
        assert_eq!(
            zk.get_children("/acks").await.expect("children").len(),
            30,
            "every acknowledged create is there"
        );
    });
}

/// The paths under /eio, read after a sync (so as of every write acknowledged before).
async fn eio_children(zk: &Client) -> BTreeSet<String> {
    zk.sync("/eio").await.expect("sync");
    zk.get_children("/eio")
        .await
        .expect("children")
        .into_iter()
        .map(|n| format!("/eio/{n}"))
        .collect()
}

/// An fdatasync that fails with EIO on the leader stops it (exit status 74, the reason in its
/// log) instead of acknowledging what it could not persist; the other two elect a leader and go
/// on; every acknowledged write is there; the stopped node, restarted on a healthy disk, catches
/// up and agrees.
#[test]
fn an_fsync_error_stops_the_node_and_loses_nothing() {
    let (c, leader) = cluster(&[], |_| {});
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    runtime().block_on(async {
        let zk = connect(&c, &others).await;
        zk.create("/eio", b"", CreateMode::Persistent)
            .await
            .expect("create /eio");
        let writer = {
            let zk = zk.clone();
            tokio::spawn(async move {
                let mut acked = BTreeSet::new();
                let started = Instant::now();
                let mut i = 0u32;
                while started.elapsed() < Duration::from_secs(12) {
                    let path = format!("/eio/n{i:05}");
                    if zk.create(&path, b"v", CreateMode::Persistent).await.is_ok() {
                        acked.insert(path);
                    }
                    i += 1;
                }
                (acked, i)
            })
        };
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let pid = c.pid(leader).expect("leader running");
        let strace = Strace::attach(
            pid,
            "fdatasync,fsync:error=EIO",
            c.root().join("strace-eio.txt"),
        )
        .expect("attach strace");
        let deadline = Instant::now() + Duration::from_secs(20);
        while c.running()[leader] {
            assert!(
                Instant::now() < deadline,
                "the node did not stop after its fsync failed:\n{}",
                c.log_tail(leader)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let injected = strace.count("INJECTED");
        drop(strace);
        let log = c.log(leader);
        assert!(
            log.contains("raft stopped on a storage failure"),
            "the stopped node says why:\n{}",
            c.log_tail(leader)
        );
        assert!(injected > 0, "strace injected no EIO");
        let (acked, tried) = writer.await.expect("writer");
        let new_leader = blocking(|| c.wait_leader_among(&others, START));
        eprintln!(
            "leader {leader} stopped after {injected} failed fsync(s); node {new_leader} leads; \
             {} of {tried} creates acknowledged",
            acked.len()
        );
        let present = eio_children(&zk).await;
        let lost: Vec<&String> = acked.difference(&present).collect();
        assert!(lost.is_empty(), "acknowledged creates lost: {lost:?}");
        assert!(acked.len() > 10, "too few writes to show anything");

        c.spawn(leader).expect("restart the stopped node");
        blocking(|| c.wait_caught_up(leader, START)).expect("it catches up");
        let back = connect(&c, &[leader]).await;
        let there = eio_children(&back).await;
        assert_eq!(there, present, "the restarted node agrees with the others");
    });
}

fn code<T>(r: Result<T, Error>) -> ErrorCode {
    match r {
        Ok(_) => ErrorCode::Ok,
        Err(Error::Multi { code, .. }) => code,
        Err(e) => e.code().unwrap_or(ErrorCode::SystemError),
    }
}

/// A node whose data directory is a 96 MiB tmpfs, with a 32 MiB ballast file and a 24 MiB
/// reserve: writes of 256 KiB through it fill the disk until it refuses them (NotReadOnly, and
/// `/ready` and `/metrics` say why) — before RocksDB ever fails a write, so the node keeps
/// running — while reads, a new session, deletes (alone and in a multi) and a session close
/// still work; once the ballast is removed, it takes writes again.
#[test]
fn a_full_disk_refuses_growing_writes_and_serves_the_rest() {
    let mut mount = None;
    let (c, _) = cluster(&["--min-free-space-mb", "24"], |c| {
        let data = c.nodes()[0].data_dir();
        mount = Some(Tmpfs::mount(&data, 96).expect("mount a tmpfs"));
        std::fs::write(data.join("ballast"), vec![0u8; 32 << 20]).expect("ballast");
    });
    let _mount = mount;
    let ballast = c.nodes()[0].data_dir().join("ballast");
    runtime().block_on(async {
        let zk = connect(&c, &[0]).await;
        zk.create("/full", b"", CreateMode::Persistent)
            .await
            .expect("create /full");
        let value = vec![7u8; 256 << 10];
        let mut written = 0;
        let refused = loop {
            assert!(written < 400, "400 writes of 256 KiB and still not refused");
            match zk
                .create(&format!("/full/n{written}"), &value, CreateMode::Persistent)
                .await
            {
                Ok(_) => written += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(
            refused.code(),
            Some(ErrorCode::NotReadOnly),
            "refused with a clear code, not {refused:?}"
        );
        assert!(
            written > 5,
            "only {written} writes before the disk was full"
        );
        assert!(c.running()[0], "the node still runs:\n{}", c.log_tail(0));
        let (status, ready) = c.admin_json(0, "GET", "/ready", None);
        assert_eq!(status, 503, "{ready}");
        assert!(
            ready["reason"].as_str().unwrap_or("").contains("disk"),
            "{ready}"
        );
        let (_, body) = c.http(0, "GET", "/metrics", None).expect("metrics");
        let metrics = String::from_utf8_lossy(&body).into_owned();
        assert!(
            metrics.contains("synod_disk_writes_refused 1"),
            "metrics say writes are refused"
        );

        // Refused: anything that grows the tree. Served: the rest.
        assert_eq!(
            code(zk.set_data("/full/n0", b"more", None).await),
            ErrorCode::NotReadOnly
        );
        let (data, _) = zk.get_data("/full/n0").await.expect("a read is served");
        assert_eq!(data.len(), value.len());
        assert!(zk.exists("/full/n1").await.expect("exists").is_some());
        let other = connect(&c, &[0]).await;
        other
            .delete("/full/n0", None)
            .await
            .expect("a delete is served, on a session opened while full");
        other
            .multi(vec![
                Op::Delete {
                    path: "/full/n1".into(),
                    version: None,
                },
                Op::Delete {
                    path: "/full/n2".into(),
                    version: None,
                },
            ])
            .await
            .expect("a multi of deletes is served");
        other.close().await.expect("a session close is served");
        assert_eq!(
            code(zk.create("/full/again", b"x", CreateMode::Persistent).await),
            ErrorCode::NotReadOnly,
            "deleting three nodes frees no disk space until a snapshot purges the log"
        );

        std::fs::remove_file(&ballast).expect("remove the ballast");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match zk.create("/full/again", b"x", CreateMode::Persistent).await {
                Ok(_) => break,
                Err(e) if e.code() == Some(ErrorCode::NotReadOnly) => {
                    assert!(
                        Instant::now() < deadline,
                        "still refused after space returned"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("create after space returned: {e}"),
            }
        }
        let (status, ready) = c.admin_json(0, "GET", "/ready", None);
        assert_eq!(status, 200, "{ready}");
        eprintln!("{written} writes of 256 KiB before the disk's reserve was reached");
    });
}

/// Waits (bounded) for node `idx`'s process to exit by itself.
fn wait_exit(c: &SynodEnsemble, idx: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.running()[idx] {
        assert!(
            Instant::now() < deadline,
            "node {idx} started on damaged data:\n{}",
            c.log_tail(idx)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A snapshot file with one flipped byte, and then a Raft log with one, are refused at start
/// with a message that names the damage; `synodctl cluster rebuild` (the member removed, then
/// started on an empty data directory with `--join`, added back and promoted) brings it back
/// with the others' data.
#[test]
fn a_damaged_snapshot_or_log_is_refused_at_start() {
    let (c, leader) = cluster(&[], |_| {});
    let victim = (leader + 1) % 3;
    runtime().block_on(async {
        let zk = connect(&c, &[leader]).await;
        for i in 0..50 {
            zk.create(&format!("/d{i}"), b"data", CreateMode::Persistent)
                .await
                .expect("create");
        }
        blocking(|| c.wait_caught_up(victim, START)).expect("caught up");
    });
    let (status, snap) = c.admin_json(victim, "POST", "/snapshot", None);
    assert_eq!(status, 200, "{snap}");
    c.terminate(victim, Duration::from_secs(10));

    let data = c.nodes()[victim].data_dir();
    let snapshot = data.join("state").join("snapshot.bin");
    let good = std::fs::read(&snapshot).expect("snapshot file");
    flip_middle(&snapshot).expect("damage the snapshot");
    c.spawn(victim).expect("spawn");
    wait_exit(&c, victim);
    let log = c.log_tail(victim);
    assert!(
        log.contains("checksum mismatch: the snapshot file is damaged"),
        "the refusal names the damage:\n{log}"
    );
    std::fs::write(&snapshot, &good).expect("restore the good snapshot");

    let files = record_files(&data.join("raft-log"));
    assert!(!files.is_empty(), "the log's record files");
    for f in &files {
        flip_middle(f).expect("damage the log");
    }
    c.spawn(victim).expect("spawn");
    wait_exit(&c, victim);
    let log = c.log_tail(victim);
    assert!(
        log.to_lowercase().contains("corrupt"),
        "the refusal names the damage:\n{log}"
    );

    // Rebuild from the peers with the one documented command: it takes the node out of the
    // membership (a voter must never come back with less than it acknowledged), waits for it to
    // run empty with --join, adds it back and promotes it.
    let synodctl = Path::new(BIN).with_file_name("synodctl");
    assert!(
        synodctl.exists(),
        "{} (built by cargo test --workspace)",
        synodctl.display()
    );
    let certs = c.root().join("certs");
    let admins: Vec<String> = (0..3)
        .filter(|i| *i != victim)
        .filter_map(|i| c.admin_addr(i).map(|a| a.to_string()))
        .collect();
    let mut rebuild = std::process::Command::new(&synodctl)
        .arg("--tls-ca")
        .arg(certs.join("ca.crt"))
        .arg("--tls-cert")
        .arg(certs.join("admin.crt"))
        .arg("--tls-key")
        .arg(certs.join("admin.key"))
        .args(["cluster", "rebuild", "--id"])
        .arg(c.nodes()[victim].id.to_string())
        .arg("--peer-addr")
        .arg(c.nodes()[victim].peer_addr().to_string())
        .args(["--wait-secs", "120", "--admin"])
        .arg(admins.join(","))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run synodctl cluster rebuild");
    // Once it is no voter any more (never before: a leader that still counts it as a voter
    // refuses a log that went back, and stops), the operator moves the damaged data aside and
    // starts the node empty, waiting to be added.
    let id = c.nodes()[victim].id as u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, m) = c.admin_json(leader, "GET", "/members", None);
        let voter = m["members"].as_array().is_some_and(|ms| {
            ms.iter()
                .any(|x| x["id"].as_u64() == Some(id) && x["voter"] == true)
        });
        if !voter {
            break;
        }
        assert!(Instant::now() < deadline, "node {id} stayed a voter: {m}");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::rename(&data, data.with_extension("damaged")).expect("move the damaged data aside");
    let m = c.members(&[victim]);
    c.spawn_with(victim, &m, &["--join"]).expect("spawn --join");
    let deadline = Instant::now() + Duration::from_secs(150);
    let status = loop {
        if let Some(s) = rebuild.try_wait().expect("wait for synodctl") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = rebuild.kill();
            panic!("synodctl cluster rebuild did not finish");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = rebuild.wait_with_output().expect("synodctl output");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        status.success(),
        "synodctl cluster rebuild: {said}\nthe leader's log:\n{}",
        c.log(leader)
    );
    eprintln!("synodctl cluster rebuild:\n{said}");
    blocking(|| c.wait_caught_up(victim, START)).expect("the rebuilt node catches up");
    runtime().block_on(async {
        let back = connect(&c, &[victim]).await;
        back.sync("/").await.expect("sync");
        let n = back
            .get_children("/")
            .await
            .expect("children")
            .into_iter()
            .filter(|n| n.starts_with('d'))
            .count();
        assert_eq!(n, 50, "the rebuilt node has the cluster's data");
    });
}
