//! Cluster tests of the synod server with real `synod` processes on 127.0.0.1 ([`SynodEnsemble`]):
//! a leader SIGKILLed under write load (no acknowledged write lost, bounded unavailability), a full
//! cluster restart (the tree and its Stats survive, also through a snapshot plus log replay), a
//! paused follower catching up, reads through followers (each sees the write acknowledged before
//! it, and costs the leader no heartbeat round), requests that end a connection being answered first, and Apache
//! ZooKeeper's own command-line client (Debian's, over TLS with a client certificate) against
//! synod. Every cluster is secure (TLS on every port), as synod is by default.
//!
//! Each test starts its own cluster, runs alone (a global lock: on a 2-core machine, parallel
//! clusters would distort the timings) and is bounded by [`TEST_TIMEOUT`]. The cluster is killed
//! and its directory removed when the test ends, also when it fails.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use synod_client::{Acl, Client, CreateMode, Error, Stat};
use synod_proto::frame::encode_frame;
use synod_proto::records::{
    AuthPacket, ConnectRequest, ConnectRequestBase, ReplyHeader, SetWatches2,
};
use synod_proto::{Decode, ErrorCode, Reader, Request, RequestPacket};
use synod_testkit::{blocking, Ensemble, SynodEnsemble};

/// The election timeout a node runs with unless told otherwise (`--election-timeout-ms`, see
/// server/src/config.rs).
const ELECTION_TIMEOUT: Duration = Duration::from_millis(600);
/// Upper bound of every test body (cluster start and teardown included).
const TEST_TIMEOUT: Duration = Duration::from_secs(150);
/// Upper bound of a single client operation in the tests; a write without an answer by then has
/// an unknown outcome.
const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a node may take to catch up with the leader after a restart or resume.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// Debian's ZooKeeper client library and command-line client (`zkCli.sh` runs its
/// `ZooKeeperMain`).
const ZK_JAR: &str = "/usr/share/java/zookeeper.jar";
/// Its class path, plus the two Netty jars its manifest omits although its TLS client socket
/// (`ClientCnxnSocketNetty`) needs them: Debian's `zkCli.sh` fixes the class path to the first
/// two entries, so it cannot speak TLS; the same class run with this class path can.
const ZK_CLASSPATH: &str = "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar:\
                            /usr/share/java/netty-resolver.jar:/usr/share/java/netty-codec.jar";
/// Upper bound of one zkCli run (one JVM, one command).
const ZKCLI_TIMEOUT: Duration = Duration::from_secs(30);

/// The `synod` binary of this package.
fn synod_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_synod"))
}

/// Runs `body` on a multi-threaded runtime, one test at a time, and fails the test if it takes
/// longer than [`TEST_TIMEOUT`] (dropping the body, and with it its cluster).
fn run_test<F, Fut>(name: &str, body: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    static SERIAL: Mutex<()> = Mutex::new(());
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    rt.block_on(async {
        tokio::time::timeout(TEST_TIMEOUT, body())
            .await
            .unwrap_or_else(|_| panic!("{name} did not finish within {TEST_TIMEOUT:?}"))
    });
    eprintln!("{name}: finished in {:.1?}", started.elapsed());
}

/// Starts a 3-node cluster, secure (TLS on every port, the default), with `extra_args` for
/// every node.
fn start_cluster(extra_args: &[&str]) -> SynodEnsemble {
    let args: Vec<String> = extra_args.iter().map(|a| a.to_string()).collect();
    let t = Instant::now();
    let ens = blocking(|| SynodEnsemble::start_tls(synod_bin(), 3, &args))
        .expect("start a 3-node synod cluster");
    eprintln!(
        "cluster {} {args:?} serving after {:.1?}",
        ens.connect_string(),
        t.elapsed()
    );
    ens
}

/// The index of the node leading now (bounded wait).
fn leader_of(ens: &SynodEnsemble) -> usize {
    blocking(|| ens.wait_for_leader(Duration::from_secs(30))).expect("a leader")
}

/// A session that tries the servers in order, starting with node `first` (so sessions can be
/// spread over the nodes and still fail over).
async fn connect_preferring(ens: &SynodEnsemble, first: usize) -> Client {
    let addrs = ens.addrs();
    let list: Vec<String> = (0..addrs.len())
        .map(|i| addrs[(first + i) % addrs.len()].to_string())
        .collect();
    Client::connect(
        &list.join(","),
        ens.connect_options()
            .shuffle_hosts(false)
            .connect_timeout(Duration::from_secs(20)),
    )
    .await
    .unwrap_or_else(|e| panic!("connect to {list:?}: {e}"))
}

/// A session on node `idx` only, so that every read is answered by that server.
async fn connect_only(ens: &SynodEnsemble, idx: usize) -> Client {
    let addr = ens.addrs()[idx];
    Client::connect(
        &addr.to_string(),
        ens.connect_options()
            .connect_timeout(Duration::from_secs(20)),
    )
    .await
    .unwrap_or_else(|e| panic!("connect to node {idx} ({addr}): {e}"))
}

/// Awaits a client operation with [`OP_TIMEOUT`], failing the test with `what` if it errs or
/// hangs.
async fn must<T>(what: impl std::fmt::Display, op: impl Future<Output = Result<T, Error>>) -> T {
    match tokio::time::timeout(OP_TIMEOUT, op).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => panic!("{what}: {e:?}"),
        Err(_) => panic!("{what}: no answer within {OP_TIMEOUT:?}"),
    }
}

/// Creates an empty persistent node, failing the test if that fails.
async fn create_empty(zk: &Client, path: &str) {
    let what = format!("create {path}");
    must(what, zk.create(path, b"", CreateMode::Persistent)).await;
}

// ---------------------------------------------------------------------------------------------
// Leader killed under write load
// ---------------------------------------------------------------------------------------------

/// How the client saw one write end.
#[derive(Debug, Clone)]
enum Outcome {
    /// The server acknowledged it: it must survive.
    Acked,
    /// A ZooKeeper error that says it was not applied (e.g. `NodeExists`).
    Failed(Error),
    /// The client cannot know: connection lost, session gone, no answer in time.
    Unknown(String),
}

/// One create of the load.
#[derive(Debug, Clone)]
struct Write {
    /// The node created (unique per write).
    path: String,
    /// When the request was handed to the client.
    sent: Instant,
    /// When its answer (or the timeout) came.
    done: Instant,
    /// How it ended.
    outcome: Outcome,
    /// The new node's czxid, if acknowledged.
    czxid: Option<i64>,
}

/// What the load's writers share with the test.
struct LoadClock {
    /// When the leader was SIGKILLed (set once).
    killed_at: OnceLock<Instant>,
    /// Whether a write sent after the kill was acknowledged.
    acked_after_kill: AtomicBool,
    /// Tells the writers to stop.
    stop: AtomicBool,
}

/// The outcome of a create, classified: only ZooKeeper errors that say "not applied" count as
/// failures; anything that loses the answer is unknown.
fn classify<T>(result: Result<Result<T, Error>, tokio::time::error::Elapsed>) -> Outcome {
    match result {
        Ok(Ok(_)) => Outcome::Acked,
        Ok(Err(
            e @ (Error::ConnectionLoss
            | Error::Closed
            | Error::OperationTimeout
            | Error::RequestTimeout
            | Error::SessionExpired
            | Error::SessionMoved
            | Error::Protocol(_)
            | Error::ConnectTimeout(_)),
        )) => Outcome::Unknown(format!("{e:?}")),
        Ok(Err(e)) => Outcome::Failed(e),
        Err(_) => Outcome::Unknown(format!("no answer within {OP_TIMEOUT:?}")),
    }
}

/// One writer: creates `/load/w<id>-<n>` one after the other until told to stop; replaces its
/// session if it ends (expired or closed).
async fn writer(ens: Arc<SynodEnsemble>, id: usize, clock: Arc<LoadClock>) -> Vec<Write> {
    let mut zk = connect_preferring(&ens, id % 3).await;
    let value = vec![b'x'; 64];
    let acl = Acl::open_unsafe();
    let mut writes = Vec::new();
    for n in 0.. {
        if clock.stop.load(Ordering::Relaxed) {
            break;
        }
        if zk.state().is_terminal() {
            eprintln!(
                "writer {id}: session {:#x} ended ({:?}); new session",
                zk.session_id(),
                zk.state()
            );
            zk = connect_preferring(&ens, id % 3).await;
        }
        let path = format!("/load/w{id}-{n:06}");
        let sent = Instant::now();
        let create = zk.create_full(&path, &value, &acl, CreateMode::Persistent, None);
        let result = tokio::time::timeout(OP_TIMEOUT, create).await;
        let done = Instant::now();
        let czxid = match &result {
            Ok(Ok((_, stat))) => Some(stat.czxid),
            _ => None,
        };
        let outcome = classify(result);
        if matches!(outcome, Outcome::Acked) && clock.killed_at.get().is_some_and(|k| sent >= *k) {
            clock.acked_after_kill.store(true, Ordering::Relaxed);
        }
        writes.push(Write {
            path,
            sent,
            done,
            outcome,
            czxid,
        });
    }
    writes
}

#[test]
fn leader_killed_under_write_load() {
    run_test("leader_killed_under_write_load", || async {
        const WRITERS: usize = 8;
        const LOAD: Duration = Duration::from_secs(4);
        const KILL_AFTER: Duration = Duration::from_millis(1500);
        /// If no write sent after the kill has been acknowledged by then, stop anyway.
        const LOAD_CAP: Duration = Duration::from_secs(25);

        let ens = Arc::new(start_cluster(&[]));
        let setup = connect_preferring(&ens, 0).await;
        create_empty(&setup, "/load").await;
        setup.close().await.ok();

        let clock = Arc::new(LoadClock {
            killed_at: OnceLock::new(),
            acked_after_kill: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let t0 = Instant::now();
        let writers: Vec<_> = (0..WRITERS)
            .map(|id| tokio::spawn(writer(ens.clone(), id, clock.clone())))
            .collect();

        tokio::time::sleep(KILL_AFTER).await;
        let victim = leader_of(&ens);
        let killed_at = Instant::now();
        blocking(|| ens.kill(victim)).expect("kill the leader");
        clock
            .killed_at
            .set(killed_at)
            .expect("kill time is set once");
        eprintln!(
            "SIGKILLed the leader, node {victim}, {:.2?} into the load",
            killed_at - t0
        );
        let new_leader = leader_of(&ens);
        eprintln!(
            "node {new_leader} leads {:.2?} after the kill (seen via /status)",
            killed_at.elapsed()
        );

        while t0.elapsed() < LOAD_CAP
            && (t0.elapsed() < LOAD || !clock.acked_after_kill.load(Ordering::Relaxed))
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        clock.stop.store(true, Ordering::Relaxed);
        let mut writes = Vec::new();
        for w in writers {
            writes.extend(w.await.expect("writer task"));
        }
        let load_time = t0.elapsed();

        // Unavailability: from the kill until the first acknowledged write sent after it. (A
        // write sent before the kill may be answered after it without any new leader.)
        let acked: Vec<&Write> = writes
            .iter()
            .filter(|w| matches!(w.outcome, Outcome::Acked))
            .collect();
        let first_ack_after = |sent_after: bool| {
            acked
                .iter()
                .filter(|w| w.done >= killed_at && (!sent_after || w.sent >= killed_at))
                .map(|w| w.done - killed_at)
                .min()
        };
        let unavailable = first_ack_after(true);
        let unknown: Vec<&Write> = writes
            .iter()
            .filter(|w| matches!(w.outcome, Outcome::Unknown(_)))
            .collect();
        let failed: Vec<&Write> = writes
            .iter()
            .filter(|w| matches!(w.outcome, Outcome::Failed(_)))
            .collect();
        // How many writes ended each way other than acknowledged.
        let mut endings: BTreeMap<String, usize> = BTreeMap::new();
        for w in &writes {
            let ending = match &w.outcome {
                Outcome::Acked => continue,
                Outcome::Unknown(why) => format!("unknown: {why}"),
                Outcome::Failed(e) => format!("failed: {}", e.name()),
            };
            *endings.entry(ending).or_default() += 1;
        }
        let slowest = writes.iter().map(|w| w.done - w.sent).max();
        eprintln!(
            "load: {} writes in {load_time:.1?} by {WRITERS} sessions: {} acknowledged ({} \
             before the kill), {} unknown, {} failed {endings:?}; slowest answer {slowest:.2?}",
            writes.len(),
            acked.len(),
            acked.iter().filter(|w| w.done < killed_at).count(),
            unknown.len(),
            failed.len(),
        );
        eprintln!(
            "unavailability after the leader kill: {unavailable:.2?} until the first \
             acknowledged write sent after it (first acknowledgement of any write: {:.2?}); \
             bound {:?}",
            first_ack_after(false),
            10 * ELECTION_TIMEOUT
        );

        // DESIGN.md §1.4: zxids are unique, also for writes that group commit put in one entry.
        let mut by_zxid: BTreeMap<i64, usize> = BTreeMap::new();
        for z in acked.iter().filter_map(|w| w.czxid) {
            *by_zxid.entry(z).or_default() += 1;
        }
        let with_czxid = acked.iter().filter(|w| w.czxid.is_some()).count();
        assert_eq!(
            by_zxid.len(),
            with_czxid,
            "acknowledged creates share czxids (largest group {})",
            by_zxid.values().max().copied().unwrap_or(0)
        );

        // Bring the victim back and let it catch up, then read every write through each node.
        let t = Instant::now();
        blocking(|| ens.restart(victim)).expect("restart the killed leader");
        let applied = blocking(|| ens.wait_caught_up(victim, CATCH_UP_TIMEOUT))
            .expect("the restarted node catches up");
        eprintln!(
            "node {victim} restarted and caught up (applied {applied}) in {:.1?}",
            t.elapsed()
        );

        let mut lost: BTreeSet<String> = BTreeSet::new();
        let mut unknown_applied = BTreeSet::new();
        for idx in 0..3 {
            let zk = connect_only(&ens, idx).await;
            must("sync /load", zk.sync("/load")).await;
            let children: BTreeSet<String> = must("ls /load", zk.get_children("/load"))
                .await
                .into_iter()
                .map(|c| format!("/load/{c}"))
                .collect();
            // Each acknowledged node must also answer `exists` on this server (pipelined).
            let missing = exists_all(&zk, acked.iter().map(|w| w.path.as_str())).await;
            for w in &acked {
                if !children.contains(&w.path) || missing.contains(&w.path) {
                    lost.insert(format!("{} (missing on node {idx})", w.path));
                }
            }
            for w in &failed {
                assert!(
                    !children.contains(&w.path),
                    "{} failed with {:?} but exists on node {idx}",
                    w.path,
                    w.outcome
                );
            }
            unknown_applied.extend(
                unknown
                    .iter()
                    .filter(|w| children.contains(&w.path))
                    .map(|w| w.path.clone()),
            );
            zk.close().await.ok();
        }
        eprintln!(
            "after recovery: acknowledged {}, unknown {} (of which {} applied), lost {}",
            acked.len(),
            unknown.len(),
            unknown_applied.len(),
            lost.len()
        );
        assert!(
            failed.is_empty(),
            "writes failed with a ZooKeeper error: {:?}",
            failed.iter().take(5).collect::<Vec<_>>()
        );
        assert!(
            lost.is_empty(),
            "{} acknowledged writes lost, e.g. {:?}\n{}",
            lost.len(),
            lost.iter().take(10).collect::<Vec<_>>(),
            all_log_tails(&ens)
        );
        let unavailable = unavailable.unwrap_or_else(|| {
            panic!("no write sent after the kill was acknowledged within {LOAD_CAP:?}")
        });
        assert!(
            unavailable < 10 * ELECTION_TIMEOUT,
            "unavailable for {unavailable:?} after the leader was killed (bound {:?})\n{}",
            10 * ELECTION_TIMEOUT,
            all_log_tails(&ens)
        );
        // An election is no isolation: the two nodes left heard each other, a majority,
        // throughout, so neither closed its clients' connections as cut off.
        for idx in (0..3).filter(|&i| i != victim) {
            assert!(
                !ens.log(idx).contains("cut off from the quorum"),
                "node {idx} counted itself cut off during the failover:\n{}",
                ens.log_tail(idx)
            );
        }
    });
}

/// Every node's log tail, labelled, for failure messages.
fn all_log_tails(ens: &SynodEnsemble) -> String {
    (0..ens.addrs().len())
        .map(|i| format!("--- node {i} ---\n{}\n", ens.log_tail(i)))
        .collect()
}

/// Sends `exists` for every path at once (the session pipelines them) and returns the paths
/// that do not exist; fails the test if a request errs or hangs.
async fn exists_all<'a>(zk: &Client, paths: impl Iterator<Item = &'a str>) -> BTreeSet<String> {
    let paths: Vec<&str> = paths.collect();
    let mut missing = BTreeSet::new();
    for chunk in paths.chunks(256) {
        let answers =
            futures_util::future::join_all(chunk.iter().map(|p| must(p, zk.exists(p)))).await;
        missing.extend(
            chunk
                .iter()
                .zip(answers)
                .filter(|(_, stat)| stat.is_none())
                .map(|(p, _)| p.to_string()),
        );
    }
    missing
}

// ---------------------------------------------------------------------------------------------
// Full restart
// ---------------------------------------------------------------------------------------------

/// Everything a client sees of one znode.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    /// Its data.
    data: Bytes,
    /// Its Stat, as `getData` returns it.
    stat: Stat,
    /// Its ACL.
    acl: Vec<Acl>,
}

/// Reads every znode under (and including) `root` through `zk`, depth first.
async fn read_tree(zk: &Client, root: &str) -> BTreeMap<String, Seen> {
    let mut tree = BTreeMap::new();
    let mut todo = vec![root.to_string()];
    while let Some(path) = todo.pop() {
        let (data, stat) = must(format!("get {path}"), zk.get_data(&path)).await;
        let (acl, _) = must(format!("getAcl {path}"), zk.get_acl(&path)).await;
        for child in must(format!("ls {path}"), zk.get_children(&path)).await {
            todo.push(format!("{path}/{child}"));
        }
        tree.insert(path, Seen { data, stat, acl });
    }
    tree
}

/// The first difference between two trees, described, or `None` if they are equal.
fn tree_diff(want: &BTreeMap<String, Seen>, got: &BTreeMap<String, Seen>) -> Option<String> {
    for (path, w) in want {
        match got.get(path) {
            None => return Some(format!("{path} is missing")),
            Some(g) if g != w => return Some(format!("{path}: {g:?}, expected {w:?}")),
            Some(_) => {}
        }
    }
    got.keys()
        .find(|p| !want.contains_key(*p))
        .map(|p| format!("{p} appeared"))
}

/// The user and password of the digest-protected node.
const DIGEST_AUTH: &[u8] = b"alice:secret";

/// Builds `/tree`: nested nodes with data, five sequential nodes, a digest-ACL node, a node set
/// three times, a node whose ACL was set, a deleted child; plus `bulk` extra nodes (each set
/// once more every tenth). Returns the number of writes.
async fn build_tree(zk: &Client, bulk: usize) -> usize {
    let mut writes = 0;
    for (path, data) in [
        ("/tree", "root"),
        ("/tree/a", "a"),
        ("/tree/a/b", "ab"),
        ("/tree/a/b/c", "abc"),
        ("/tree/seq", ""),
        ("/tree/v", "v0"),
        ("/tree/gone", ""),
        ("/tree/bulk", ""),
    ] {
        let what = format!("create {path}");
        must(
            what,
            zk.create(path, data.as_bytes(), CreateMode::Persistent),
        )
        .await;
        writes += 1;
    }
    for i in 0..5 {
        let data = format!("s{i}");
        let seq = zk.create(
            "/tree/seq/s-",
            data.as_bytes(),
            CreateMode::PersistentSequential,
        );
        assert_eq!(
            must("create sequential", seq).await,
            format!("/tree/seq/s-{i:010}")
        );
        writes += 1;
    }
    for (i, v) in ["v1", "v2", "v3"].iter().enumerate() {
        let set = zk.set_data("/tree/v", v.as_bytes(), Some(i as i32));
        assert_eq!(must("set /tree/v", set).await.version, i as i32 + 1);
        writes += 1;
    }
    must("delete /tree/gone", zk.delete("/tree/gone", Some(0))).await;
    must(
        "setAcl /tree/a",
        zk.set_acl("/tree/a", &Acl::open_unsafe(), Some(0)),
    )
    .await;
    must("addauth", zk.add_auth("digest", DIGEST_AUTH)).await;
    let creator_all = Acl::creator_all();
    let secret = zk.create_full(
        "/tree/secret",
        b"classified",
        &creator_all,
        CreateMode::Persistent,
        None,
    );
    must("create /tree/secret", secret).await;
    writes += 3;
    for i in 0..bulk {
        let p = format!("/tree/bulk/n-{i:04}");
        let data = i.to_string();
        must(
            "create bulk",
            zk.create(&p, data.as_bytes(), CreateMode::Persistent),
        )
        .await;
        writes += 1;
        if i % 10 == 0 {
            must("set bulk", zk.set_data(&p, b"changed", Some(0))).await;
            writes += 1;
        }
    }
    writes
}

/// Reads `/tree` through each server alone (after a `sync`, with the digest credentials) and fails
/// the test, naming the first difference, unless it equals `want`.
async fn check_every_server(ens: &SynodEnsemble, want: &BTreeMap<String, Seen>, when: &str) {
    for idx in 0..ens.addrs().len() {
        let c = connect_only(ens, idx).await;
        must("addauth", c.add_auth("digest", DIGEST_AUTH)).await;
        must("sync", c.sync("/tree")).await;
        let seen = read_tree(&c, "/tree").await;
        if let Some(d) = tree_diff(want, &seen) {
            panic!("node {idx} differs {when}: {d}\n{}", ens.log_tail(idx));
        }
        c.close().await.ok();
    }
}

/// Builds a tree, SIGKILLs the whole cluster, starts it again and checks that every server shows
/// the same tree (data, Stat, ACL) and that sequential numbering and zxids continue. Returns the
/// cluster and what each node logged since the restart (which includes its "state restored"
/// line).
async fn full_restart(snapshot_every: Option<u64>, bulk: usize) -> (SynodEnsemble, Vec<String>) {
    let every = snapshot_every.map(|n| n.to_string());
    let extra_args: Vec<&str> = match &every {
        Some(n) => vec!["--snapshot-entries", n],
        None => Vec::new(),
    };
    let ens = start_cluster(&extra_args);
    let zk = connect_preferring(&ens, 0).await;
    let t = Instant::now();
    let writes = build_tree(&zk, bulk).await;
    let before = read_tree(&zk, "/tree").await;
    eprintln!(
        "built /tree: {writes} writes, {} znodes in {:.1?}",
        before.len(),
        t.elapsed()
    );
    assert_eq!(before["/tree/v"].stat.version, 3);
    assert_eq!(before["/tree/a"].stat.aversion, 1);
    assert_eq!(before["/tree/seq"].stat.cversion, 5);
    // `auth` expands to every identity of the session: its digest and its certificate's x509.
    assert!(
        before["/tree/secret"]
            .acl
            .iter()
            .any(|a| a.id.scheme == "digest"),
        "{:?}",
        before["/tree/secret"].acl
    );
    let max_zxid = before
        .values()
        .map(|s| s.stat.mzxid.max(s.stat.pzxid))
        .max();
    // Every server agrees before the restart, too.
    check_every_server(&ens, &before, "before the restart").await;
    zk.close().await.ok();
    if let Some(every) = snapshot_every {
        leave_a_log_tail(&ens, every).await;
    }

    let log_len: Vec<usize> = (0..3).map(|i| ens.log(i).len()).collect();
    blocking(|| ens.stop_all());
    let t = Instant::now();
    let leader = blocking(|| ens.start_all()).expect("the cluster restarts");
    eprintln!(
        "full restart: node {leader} leads {:.1?} after starting the killed cluster",
        t.elapsed()
    );

    check_every_server(&ens, &before, "after the restart").await;
    // Sequential numbering continues from the parent's cversion, through every server, with
    // zxids beyond every earlier one.
    for idx in 0..3 {
        let c = connect_only(&ens, idx).await;
        let (path, stat) = must(
            "create sequential after restart",
            c.create_full(
                "/tree/seq/s-",
                b"after",
                &Acl::open_unsafe(),
                CreateMode::PersistentSequential,
                None,
            ),
        )
        .await;
        assert_eq!(
            path,
            format!("/tree/seq/s-{:010}", 5 + idx),
            "via node {idx}"
        );
        assert!(
            Some(stat.czxid) > max_zxid,
            "zxid {} after the restart is not beyond {max_zxid:?}",
            stat.czxid
        );
        c.close().await.ok();
    }

    // Each node logs how long restoring its state took; give the line a moment to appear.
    let mut since_restart = Vec::new();
    for (idx, &from) in log_len.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(10);
        let log = loop {
            let log = ens.log(idx).get(from..).unwrap_or_default().to_string();
            match restored_line(&log) {
                Some(_) => break log,
                None if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                None => panic!(
                    "node {idx} logged no \"state restored\" line after the restart\n{}",
                    ens.log_tail(idx)
                ),
            }
        };
        let line = restored_line(&log).unwrap_or_default();
        eprintln!("node {idx}: {}", line.trim());
        assert!(
            field_after(line, "elapsed_ms=").is_some(),
            "no elapsed time in {line:?}"
        );
        since_restart.push(log);
    }
    (ens, since_restart)
}

/// The log index of the latest snapshot node `idx` has built (0 if none).
fn latest_snapshot(ens: &SynodEnsemble, idx: usize) -> u64 {
    ens.log(idx)
        .lines()
        .rfind(|l| l.contains("snapshot built"))
        .and_then(|l| field_after(&l[l.rfind("index: ")?..], "index: "))
        .unwrap_or(0)
}

/// With a snapshot every `every` entries, writes (outside `/tree`) until every node has a few
/// applied entries after its latest snapshot and no new snapshot is due, so that a restart loads
/// a snapshot and then replays a log tail.
async fn leave_a_log_tail(ens: &SynodEnsemble, every: u64) {
    let zk = connect_preferring(ens, 0).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    for n in 0.. {
        let tails: Vec<Option<u64>> = blocking(|| {
            (0..3)
                .map(|i| Some(ens.status_u64(i, "applied_index")? - latest_snapshot(ens, i)))
                .collect()
        });
        if tails
            .iter()
            .all(|t| matches!(t, Some(t) if (3..every.saturating_sub(3)).contains(t)))
        {
            eprintln!("entries after each node's latest snapshot: {tails:?} ({n} tail writes)");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no log tail after the snapshots: {tails:?}"
        );
        create_empty(&zk, &format!("/tail-{n}")).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    zk.close().await.ok();
}

/// The line a node logs once it has restored its state (snapshot plus log replay) at start-up.
fn restored_line(log: &str) -> Option<&str> {
    log.lines().find(|l| l.contains("state restored"))
}

/// The number right after `key` in a log line (`elapsed_ms=12`, `index: 251`).
fn field_after(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[test]
fn full_restart_keeps_the_tree() {
    run_test("full_restart_keeps_the_tree", || async {
        full_restart(None, 0).await;
    });
}

#[test]
fn full_restart_keeps_the_tree_through_a_snapshot_and_log_replay() {
    run_test(
        "full_restart_keeps_the_tree_through_a_snapshot_and_log_replay",
        || async {
            let (_ens, logs) = full_restart(Some(50), 220).await;
            for (idx, log) in logs.iter().enumerate() {
                let loaded = log
                    .lines()
                    .find(|l| l.contains("loaded snapshot"))
                    .unwrap_or_else(|| panic!("node {idx} did not load a snapshot:\n{log}"));
                let snapshot_index = loaded
                    .rfind("index: ")
                    .and_then(|at| field_after(&loaded[at..], "index: "));
                let line = restored_line(log).unwrap_or_default();
                let applied = field_after(line, "applied=");
                eprintln!(
                    "node {idx}: restart loaded a snapshot up to {snapshot_index:?}, then \
                     replayed the log up to {applied:?}: restored in {:?} ms",
                    field_after(line, "elapsed_ms=")
                );
                assert!(
                    matches!((snapshot_index, applied), (Some(s), Some(a)) if a > s),
                    "node {idx}: no log replay after the snapshot: {loaded:?} / {line:?}"
                );
            }
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Paused follower
// ---------------------------------------------------------------------------------------------

#[test]
fn paused_follower_catches_up_after_resume() {
    run_test("paused_follower_catches_up_after_resume", || async {
        let ens = start_cluster(&[]);
        let leader = leader_of(&ens);
        let follower = (leader + 1) % 3;
        blocking(|| ens.pause(follower)).expect("pause a follower");
        assert_eq!(
            blocking(|| ens.status(follower)),
            None,
            "a paused node answers"
        );
        let zk = connect_preferring(&ens, leader).await;
        create_empty(&zk, "/paused").await;
        for i in 0..50 {
            create_empty(&zk, &format!("/paused/n-{i}")).await;
        }
        blocking(|| ens.resume(follower)).expect("resume the follower");
        let applied = blocking(|| ens.wait_caught_up(follower, CATCH_UP_TIMEOUT))
            .expect("the resumed follower catches up");
        eprintln!("node {follower} caught up to {applied} after resume");
        let c = connect_only(&ens, follower).await;
        assert_eq!(
            must("ls /paused", c.get_children("/paused")).await.len(),
            50
        );
    });
}

/// The series of read points a leader gave on followers' saved votes, without a heartbeat round.
const FOLLOWER_VOTE_READ_POINTS: &str = "synod_read_points_total{how=\"follower_vote\"} ";

/// Rounds in which a leader asked every follower for its saved vote because the ones it asked
/// first were late.
const READ_POINT_HEDGES: &str = "synod_read_point_hedges_total ";

/// Read-point requests a follower abandoned for a newly known leader.
const READ_POINT_LEADER_CHANGES: &str = "synod_read_point_leader_changes_total ";

/// Node `idx`'s count of the counter `series` of `/metrics` (0 before its first increment).
fn counter(ens: &SynodEnsemble, idx: usize, series: &str) -> u64 {
    blocking(|| ens.metric(idx, series)).map_or(0, |v| v as u64)
}

/// A linearizable read through any node of three voters sees every write acknowledged before
/// it, through another node, and costs the leader no heartbeat round: a follower sends its
/// saved vote, the leader asks a follower for its saved vote for its own reads, and gives its
/// commit index (design.md §6). With a follower paused, reads through the other follower and
/// the leader still see the last write, still without a heartbeat round, also when the paused
/// follower is the one the leader was asking.
#[test]
fn reads_through_any_node_see_the_last_write_without_a_heartbeat_round() {
    run_test(
        "reads_through_any_node_see_the_last_write_without_a_heartbeat_round",
        || async { reads_see_the_last_write_on_saved_votes(start_cluster(&[])).await },
    );
}

/// The same with five voters: every read point, a follower's too, is confirmed on the saved
/// votes of two followers (with the leader's, a majority of five), still with no heartbeat
/// round; with two followers paused (the two the leader was asking, the second time), the
/// other two are that majority.
#[test]
fn reads_through_any_node_of_five_see_the_last_write_without_a_heartbeat_round() {
    run_test(
        "reads_through_any_node_of_five_see_the_last_write_without_a_heartbeat_round",
        || async {
            let t = Instant::now();
            let ens = blocking(|| SynodEnsemble::start_tls(synod_bin(), 5, &[]))
                .expect("start a 5-node synod cluster");
            eprintln!("5-node cluster serving after {:.1?}", t.elapsed());
            reads_see_the_last_write_on_saved_votes(ens).await
        },
    );
}

/// Writes at the leader of `ens` and reads the value back through every node after each
/// write; every read must see it, and every read point must have been given on followers'
/// saved votes. Then pauses a minority of the followers (as many as the voters can lose), the
/// last ones and then the first: the leader and the other followers must still read the next
/// write, each read point still given on saved votes, and during the second pause the leader
/// must have stopped waiting for the followers it was asking first and asked the others.
async fn reads_see_the_last_write_on_saved_votes(ens: SynodEnsemble) {
    let n = ens.nodes().len();
    let leader = leader_of(&ens);
    let followers: Vec<usize> = (0..n).filter(|&i| i != leader).collect();
    let writer = connect_only(&ens, leader).await;
    create_empty(&writer, "/read-point").await;
    // A reader on each node, the leader first.
    let nodes: Vec<usize> = std::iter::once(leader)
        .chain(followers.iter().copied())
        .collect();
    let mut readers = Vec::with_capacity(n);
    for &node in &nodes {
        readers.push(connect_only(&ens, node).await);
    }
    let before = counter(&ens, leader, FOLLOWER_VOTE_READ_POINTS);
    const ROUNDS: u64 = 20;
    for i in 0..ROUNDS {
        let value = format!("v{i}");
        must(
            "set",
            writer.set_data("/read-point", value.as_bytes(), None),
        )
        .await;
        for (r, &node) in readers.iter().zip(&nodes) {
            let (data, _) = must("get", r.get_data("/read-point")).await;
            assert_eq!(
                data,
                value.as_bytes(),
                "node {node} missed the write acknowledged before the read"
            );
        }
    }
    let after = counter(&ens, leader, FOLLOWER_VOTE_READ_POINTS);
    let reads = n as u64 * ROUNDS;
    assert!(
        after.saturating_sub(before) >= reads,
        "{} of {reads} reads took no heartbeat round",
        after.saturating_sub(before)
    );
    // With a minority paused, reads still see the last write, on the votes of the followers
    // that answer. The leader asks first the followers that answered first last time, and the
    // others only once those are late: so a minority is paused twice, the last followers and
    // then the first, and one of the two is the minority it was asking first.
    let minority = (n - 1) / 2;
    let mut hedges_before_second = 0;
    for (phase, paused) in [
        &followers[followers.len() - minority..],
        &followers[..minority],
    ]
    .into_iter()
    .enumerate()
    {
        if phase == 1 {
            hedges_before_second = counter(&ens, leader, READ_POINT_HEDGES);
        }
        for &f in paused {
            blocking(|| ens.pause(f)).expect("pause a follower");
        }
        let value = format!("paused {phase}");
        must(
            "set",
            writer.set_data("/read-point", value.as_bytes(), None),
        )
        .await;
        let at_leader = counter(&ens, leader, FOLLOWER_VOTE_READ_POINTS);
        let serving: Vec<(&Client, usize)> = readers
            .iter()
            .zip(nodes.iter().copied())
            .filter(|(_, node)| !paused.contains(node))
            .collect();
        const PAUSED_ROUNDS: u64 = 5;
        for _ in 0..PAUSED_ROUNDS {
            for (r, node) in &serving {
                let (data, _) = must("get", r.get_data("/read-point")).await;
                assert_eq!(data, value.as_bytes(), "node {node} with {paused:?} paused");
            }
        }
        // Every read point, the leader's own reads' too, was still given on followers' votes:
        // none took a heartbeat round.
        let given = counter(&ens, leader, FOLLOWER_VOTE_READ_POINTS).saturating_sub(at_leader);
        let reads = PAUSED_ROUNDS * serving.len() as u64;
        assert!(
            given >= reads,
            "with {paused:?} paused, {given} of {reads} reads took no heartbeat round"
        );
        assert_eq!(
            leader_of(&ens),
            leader,
            "the leader changed during the test"
        );
        for &f in paused {
            blocking(|| ens.resume(f)).expect("resume the follower");
        }
    }
    // The second pause took the followers the leader had asked first while the first lasted
    // (the only ones that answered it): it had to ask the others once they were late.
    let hedges = counter(&ens, leader, READ_POINT_HEDGES).saturating_sub(hedges_before_second);
    assert!(
        hedges >= 1,
        "the leader never asked the other followers when the ones it asked first were paused"
    );
}

/// A linearizable read through a follower whose leader stops answering after it got the
/// follower's read-point request (SIGSTOP: its host still acknowledges the request) completes
/// once the others have elected a new leader, while the old one is still paused: the follower
/// abandons the request and asks the new leader. Before, the read, and every request the
/// session sent after it (pings included, answered in order), waited for the paused leader, or
/// the 30 s call timeout: here the client gave up on the connection after about 7 s.
#[test]
fn a_read_through_a_follower_moves_on_when_its_leader_stops_answering() {
    run_test(
        "a_read_through_a_follower_moves_on_when_its_leader_stops_answering",
        || async {
            let ens = start_cluster(&[]);
            let leader = leader_of(&ens);
            let follower = (leader + 1) % 3;
            let zk = connect_only(&ens, follower).await;
            must(
                "create",
                zk.create("/stuck-leader", b"before", CreateMode::Persistent),
            )
            .await;
            let moved_before = counter(&ens, follower, READ_POINT_LEADER_CHANGES);
            blocking(|| ens.pause(leader)).expect("pause the leader");
            // Well under the 30 s a call to the leader may take, well over an election.
            let read =
                tokio::time::timeout(Duration::from_secs(20), zk.get_data("/stuck-leader")).await;
            let moved =
                counter(&ens, follower, READ_POINT_LEADER_CHANGES).saturating_sub(moved_before);
            blocking(|| ens.resume(leader)).expect("resume the old leader");
            let (data, _) = read
                .expect("the read waited for the paused leader")
                .expect("the read through the follower failed");
            assert_eq!(&data[..], b"before");
            assert!(
                moved >= 1,
                "the follower never abandoned its request to the paused leader"
            );
        },
    );
}

/// Forwards of writes a follower abandoned for a newly known leader.
const FORWARD_LEADER_CHANGES: &str = "synod_forward_leader_changes_total ";

/// Peer connections a node closed after a write forwarded on one failed.
const PEER_CONNECTIONS_SPENT: &str = "synod_peer_connections_spent_total ";

/// A write through a follower whose leader stops answering after it got the forward (SIGSTOP:
/// its host still acknowledges the frames) fails once the others have elected a new leader, while
/// the old one is still paused: the follower abandons the forward, the write's outcome is
/// unknown, so its connection closes (ConnectionLoss), and the session's retry goes to the new
/// leader. Before, the write, and every later reply of its session (pings included), waited for
/// the paused leader or the 30 s call timeout, or until the client gave up on the connection.
/// Once resumed, the old leader reads the abandoned forward, fails it (it no longer leads, or
/// steps down with it in flight) and closes the follower's peer connection it came on
/// (design.md §6): the forward never takes effect after the retry that followed it.
#[test]
fn a_write_through_a_follower_moves_on_when_its_leader_stops_answering() {
    run_test(
        "a_write_through_a_follower_moves_on_when_its_leader_stops_answering",
        || async {
            // A session long enough that the client itself would wait longer than `limit`
            // before it gave up on a connection whose replies stopped (two thirds of it).
            let ens = start_cluster(&["--max-session-timeout-ms", "60000"]);
            let leader = leader_of(&ens);
            let follower = (leader + 1) % 3;
            let addr = ens.addrs()[follower].to_string();
            let options = ens
                .connect_options()
                .session_timeout(Duration::from_secs(45))
                .connect_timeout(Duration::from_secs(20));
            let zk = Client::connect(&addr, options)
                .await
                .unwrap_or_else(|e| panic!("connect to node {follower} ({addr}): {e}"));
            must(
                "create",
                zk.create("/stuck-write", b"before", CreateMode::Persistent),
            )
            .await;
            let abandoned_before = counter(&ens, follower, FORWARD_LEADER_CHANGES);
            // Read while the leader answers (a paused node's admin port does not).
            let spent_before = counter(&ens, leader, PEER_CONNECTIONS_SPENT);
            blocking(|| ens.pause(leader)).expect("pause the leader");
            // Well under the 30 s a call to the leader may take, well over an election.
            let limit = Duration::from_secs(20);
            let write =
                tokio::time::timeout(limit, zk.set_data("/stuck-write", b"during", None)).await;
            // The session resumes on the follower, which forwards to the new leader.
            let deadline = Instant::now() + limit;
            let retried = loop {
                match tokio::time::timeout(limit, zk.set_data("/stuck-write", b"retried", None))
                    .await
                {
                    Ok(Err(Error::ConnectionLoss)) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    other => break other,
                }
            };
            let abandoned =
                counter(&ens, follower, FORWARD_LEADER_CHANGES).saturating_sub(abandoned_before);
            blocking(|| ens.resume(leader)).expect("resume the old leader");
            match write.expect("the write waited for the paused leader") {
                Err(Error::ConnectionLoss) => {}
                other => panic!("the write's outcome is unknown, yet it ended {other:?}"),
            }
            retried
                .expect("the retry waited for the paused leader")
                .expect("the retry through the follower failed");
            assert!(
                abandoned >= 1,
                "the follower never abandoned its forward to the paused leader"
            );
            let (data, _) = must("read back", zk.get_data("/stuck-write")).await;
            assert_eq!(&data[..], b"retried");
            let deadline = Instant::now() + limit;
            while counter(&ens, leader, PEER_CONNECTIONS_SPENT) <= spent_before {
                assert!(
                    Instant::now() < deadline,
                    "the old leader never closed the connection of the forward it failed"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let (data, _) = must(
                "read back after the old leader",
                zk.get_data("/stuck-write"),
            )
            .await;
            assert_eq!(
                &data[..],
                b"retried",
                "the abandoned write took effect after its retry"
            );
            must(
                "a write through the follower after the old leader closed its connection",
                zk.set_data("/stuck-write", b"after", None),
            )
            .await;
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Last replies before the server closes a connection (wire level)
// ---------------------------------------------------------------------------------------------

/// The tests' client TLS configuration for `ens` (its CA, the `tester` certificate), for the
/// tests that speak the protocol's bytes themselves.
fn raw_tls(ens: &SynodEnsemble) -> Arc<rustls::ClientConfig> {
    let node_dir = &ens.nodes()[0].dir;
    let certs = node_dir.parent().unwrap_or(node_dir).join("certs");
    synod_client::tls::TlsOptions::new(certs.join("ca.crt"))
        .identity(certs.join("tester.crt"), certs.join("tester.key"))
        .client_config()
        .expect("the test client's TLS material loads")
}

/// A blocking TLS connection to a secure client port, reads bounded by `read_timeout`.
fn raw_connect(
    tls: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    read_timeout: Duration,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>> {
    let tcp = std::net::TcpStream::connect_timeout(&addr, OP_TIMEOUT)?;
    tcp.set_read_timeout(Some(read_timeout))?;
    tcp.set_write_timeout(Some(OP_TIMEOUT))?;
    let name = rustls_pki_types::ServerName::from(addr.ip());
    let conn = rustls::ClientConnection::new(tls.clone(), name).map_err(std::io::Error::other)?;
    Ok(rustls::StreamOwned::new(conn, tcp))
}

/// Opens a raw session on `addr`, sends `request` and returns the header of the first reply the
/// server sends before it closes the connection (`None`: it closed without replying).
fn last_reply(
    tls: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    request: Request,
    xid: i32,
) -> std::io::Result<Option<ReplyHeader>> {
    use std::io::Write as _;
    let mut s = raw_connect(tls, addr, OP_TIMEOUT)?;
    let mut out = BytesMut::new();
    let hello = ConnectRequest {
        base: ConnectRequestBase {
            timeout: 10_000,
            passwd: vec![0u8; 16].into(),
            ..Default::default()
        },
        read_only: false,
    };
    encode_frame(&hello, &mut out);
    s.write_all(&out)?;
    read_frame(&mut s)?.ok_or_else(|| std::io::Error::other("no handshake reply"))?;
    out.clear();
    encode_frame(&RequestPacket { xid, request }, &mut out);
    s.write_all(&out)?;
    match read_frame(&mut s)? {
        None => Ok(None),
        Some(frame) => ReplyHeader::decode(&mut Reader::new(frame))
            .map(Some)
            .map_err(|e| std::io::Error::other(format!("bad reply header: {e}"))),
    }
}

/// One length-prefixed frame, or `None` at end of stream.
fn read_frame(s: &mut impl Read) -> std::io::Result<Option<Bytes>> {
    let mut len = [0u8; 4];
    match s.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut body = vec![0u8; i32::from_be_bytes(len).clamp(0, 1 << 20) as usize];
    s.read_exact(&mut body)?;
    Ok(Some(body.into()))
}

/// A server that ends a connection because of a request answers that request first, as Apache
/// ZooKeeper 3.8 does (checked with the same bytes against the Debian package): `closeSession`
/// gets its reply (then EOF), and an `auth` packet with an unknown scheme gets `AuthFailed` on
/// xid -4. Without the closeSession reply, clients can only guess that the close went through.
#[test]
fn closing_requests_are_answered_before_the_connection_closes() {
    run_test(
        "closing_requests_are_answered_before_the_connection_closes",
        || async {
            let ens = start_cluster(&[]);
            let tls = raw_tls(&ens);
            let mut wrong = Vec::new();
            for (idx, addr) in ens.addrs().into_iter().enumerate() {
                let close = blocking(|| last_reply(&tls, addr, Request::CloseSession, 1))
                    .expect("closeSession exchange");
                if !matches!(close, Some(ReplyHeader { xid: 1, err: 0, .. })) {
                    wrong.push(format!("node {idx}: closeSession answered with {close:?}"));
                }
                let bogus = Request::Auth(AuthPacket {
                    auth_type: 0,
                    scheme: "bogus".into(),
                    auth: Bytes::from_static(b"x:y"),
                });
                let auth = blocking(|| last_reply(&tls, addr, bogus, synod_proto::xid::AUTH))
                    .expect("auth exchange");
                let auth_failed = ErrorCode::AuthFailed.as_i32();
                if !matches!(auth, Some(ReplyHeader { xid: -4, err, .. }) if err == auth_failed) {
                    wrong.push(format!("node {idx}: bad auth answered with {auth:?}"));
                }
            }
            assert!(
                wrong.is_empty(),
                "expected a reply before the connection closes (None = closed without one):\n{}",
                wrong.join("\n")
            );
        },
    );
}

// ---------------------------------------------------------------------------------------------
// zkCli (ZooKeeper's ZooKeeperMain) over TLS
// ---------------------------------------------------------------------------------------------

/// What one zkCli run printed.
struct CliRun {
    /// Whether the JVM exited with status 0.
    success: bool,
    /// Its standard output (the command's result among connection noise).
    stdout: String,
    /// Its standard error (SLF4J notes, error messages).
    stderr: String,
}

/// zkCli's TLS flags as the tests' client (x509:tester), for the certificates of `node_dir`'s
/// ensemble: its key and certificate written as a PEM key store into a temp dir, which the
/// caller keeps while zkCli runs.
fn zkcli_tester_tls(node_dir: &Path) -> (tempfile::TempDir, Vec<String>) {
    let certs = node_dir.parent().unwrap_or(node_dir).join("certs");
    let stores = tempfile::tempdir().expect("temp dir");
    let key_store = stores.path().join("tester.pem");
    let pem = |f: &str| std::fs::read(certs.join(f)).expect("read the test certificate");
    std::fs::write(&key_store, [pem("tester.key"), pem("tester.crt")].concat())
        .expect("write the key store");
    let flags = zkcli_tls_flags(&certs.join("ca.crt"), &key_store);
    (stores, flags)
}

/// zkCli's TLS settings: ZooKeeper's `zookeeper.client.secure` with the Netty socket, a PEM
/// key store (the client's key and certificate in one file) and a PEM trust store (the CA), TLS
/// 1.3 (synod speaks nothing older; ZooKeeper 3.8 defaults to 1.2).
fn zkcli_tls_flags(ca: &Path, key_store: &Path) -> Vec<String> {
    vec![
        "-Dzookeeper.client.secure=true".into(),
        "-Dzookeeper.clientCnxnSocket=org.apache.zookeeper.ClientCnxnSocketNetty".into(),
        format!("-Dzookeeper.ssl.keyStore.location={}", key_store.display()),
        "-Dzookeeper.ssl.keyStore.type=PEM".into(),
        format!("-Dzookeeper.ssl.trustStore.location={}", ca.display()),
        "-Dzookeeper.ssl.trustStore.type=PEM".into(),
        "-Dzookeeper.ssl.protocol=TLSv1.3".into(),
        "-Dzookeeper.ssl.enabledProtocols=TLSv1.3".into(),
    ]
}

/// Runs ZooKeeper's `ZooKeeperMain -server <server> <command...>` (one JVM, one command) with
/// `jvm_flags`, bounded by [`ZKCLI_TIMEOUT`]: on timeout the JVM (its own process group) is
/// SIGKILLed and the test fails.
fn zkcli(server: SocketAddr, jvm_flags: &[String], command: &[&str]) -> CliRun {
    let mut child = Command::new("java")
        .arg("-cp")
        .arg(ZK_CLASSPATH.replace(char::is_whitespace, ""))
        .args(jvm_flags)
        .arg("org.apache.zookeeper.ZooKeeperMain")
        .arg("-server")
        .arg(server.to_string())
        .args(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run java (ZooKeeperMain): {e}"));
    let pgid = child.id() as libc::pid_t;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut out = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut out);
            }
            out
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + ZKCLI_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => break None,
        }
    };
    let Some(status) = status else {
        // SAFETY: kill(2) on the process group this test created (the script and its JVM).
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = child.wait();
        panic!("zkCli {command:?} against {server} did not finish within {ZKCLI_TIMEOUT:?}");
    };
    CliRun {
        success: status.success(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// One zkCli command and what its output must show.
struct Step {
    /// The command and its arguments.
    command: &'static [&'static str],
    /// Checks the run's stdout and stderr together.
    expect: fn(&str) -> bool,
}

impl Step {
    fn new(command: &'static [&'static str], expect: fn(&str) -> bool) -> Step {
        Step { command, expect }
    }
}

#[test]
fn zkcli_works_against_synod_over_tls() {
    // Never skipped: the ZooKeeper oracle (conformance suite, recipes) needs the package too.
    assert!(
        Path::new(ZK_JAR).exists(),
        "{ZK_JAR} not installed (apt-get install zookeeper)"
    );
    run_test("zkcli_works_against_synod_over_tls", || async {
        let ens = start_cluster(&[]);
        let addrs = ens.addrs();
        // The tests' client certificate (x509:tester) as a PEM key store: key, then certificate.
        let (_stores, flags) = zkcli_tester_tls(&ens.nodes()[0].dir);
        // Each command runs against the next server, so the leader and both followers serve it.
        let steps = [
            Step::new(&["create", "/zkcli", "hello"], |out| {
                out.contains("Created /zkcli")
            }),
            Step::new(&["get", "/zkcli"], |out| out.lines().any(|l| l == "hello")),
            Step::new(&["ls", "/"], |out| {
                out.lines()
                    .any(|l| l.starts_with('[') && l.contains("zkcli"))
            }),
            Step::new(&["set", "/zkcli", "world"], |_| true),
            Step::new(&["get", "/zkcli"], |out| out.lines().any(|l| l == "world")),
            Step::new(&["stat", "/zkcli"], |out| {
                out.lines().any(|l| l.trim() == "dataVersion = 1")
            }),
            Step::new(&["delete", "/zkcli"], |_| true),
            Step::new(&["ls", "/"], |out| {
                out.lines()
                    .any(|l| l.starts_with('[') && !l.contains("zkcli"))
            }),
            // The certificate is zkCli's x509 identity: a node only x509:tester may use.
            Step::new(
                &["create", "/zkcli-x509", "mine", "x509:tester:cdrwa"],
                |out| out.contains("Created /zkcli-x509"),
            ),
            Step::new(&["get", "/zkcli-x509"], |out| {
                out.lines().any(|l| l == "mine")
            }),
            Step::new(&["getAcl", "/zkcli-x509"], |out| {
                out.contains("'x509,'tester")
            }),
            // ZooKeeper's quotas, as zkCli sets and lists them: a hard limit of 2 znodes.
            Step::new(&["create", "/zkq", "q"], |out| out.contains("Created /zkq")),
            Step::new(&["setquota", "-N", "2", "/zkq"], |_| true),
            Step::new(&["create", "/zkq/a", "x"], |out| {
                out.contains("Created /zkq/a")
            }),
            Step::new(&["listquota", "/zkq"], |out| {
                out.contains("countHardLimit=2") && out.contains("count=2,bytes=2")
            }),
        ];
        for (i, Step { command, expect }) in steps.iter().enumerate() {
            let server = addrs[i % addrs.len()];
            let t = Instant::now();
            let run = blocking(|| zkcli(server, &flags, command));
            // zkCli prints some results (e.g. "Created /zkcli") on stderr.
            let output = format!("{}\n{}", run.stdout, run.stderr);
            assert!(
                run.success && expect(&output),
                "zkCli {command:?} against node {} ({server}) printed unexpected output \
                 (success {}):\n--- stdout\n{}\n--- stderr\n{}",
                i % addrs.len(),
                run.success,
                run.stdout,
                run.stderr
            );
            eprintln!(
                "zkCli {command:?} via node {}: ok in {:.1?}",
                i % addrs.len(),
                t.elapsed()
            );
            if command[0] == "listquota" {
                // The third znode under the quota is refused, as ZooKeeper refuses it.
                let run = blocking(|| zkcli(server, &flags, &["create", "/zkq/b", "y"]));
                let output = format!("{}\n{}", run.stdout, run.stderr);
                assert!(
                    output.contains("Quota has exceeded"),
                    "zkCli create past the quota printed:\n{output}"
                );
            }
            if command[0] == "set" {
                // What zkCli wrote is what the Rust client reads, through another server.
                let zk = connect_only(&ens, (i + 1) % addrs.len()).await;
                let (data, stat) = must("get /zkcli", zk.get_data("/zkcli")).await;
                assert_eq!((&data[..], stat.version), (&b"world"[..], 1));
                zk.close().await.ok();
            }
        }
    });
}

/// zkCli's `config` and `reconfig -add/-remove` against synod: a fourth node started with
/// `--join` becomes a participant through ZooKeeper's API and leaves again; every step is read
/// back through another server. The tests' certificate (CN `tester`) is the super identity.
#[test]
fn zkcli_reconfig_adds_and_removes_a_server() {
    assert!(
        Path::new(ZK_JAR).exists(),
        "{ZK_JAR} not installed (apt-get install zookeeper)"
    );
    run_test("zkcli_reconfig_adds_and_removes_a_server", || async {
        let ens = SynodEnsemble::unstarted_tls(synod_bin(), 4).expect("lay out 4 nodes");
        let extra = ["--reconfig-enabled", "--super-identities", "tester"];
        let first = ens.members(&[0, 1, 2]);
        for i in 0..3 {
            ens.spawn_with(i, &first, &extra).expect("spawn synod");
        }
        ens.spawn_with(3, &ens.members(&[3]), &[&extra[..], &["--join"]].concat())
            .expect("spawn the joiner");
        blocking(|| ens.wait_leader_among(&[0, 1, 2], Duration::from_secs(60)));
        let addrs = ens.addrs();
        let (_stores, flags) = zkcli_tester_tls(&ens.nodes()[0].dir);
        let run = |idx: usize, command: Vec<String>| {
            let args: Vec<&str> = command.iter().map(String::as_str).collect();
            let run = zkcli(addrs[idx], &flags, &args);
            let output = format!("{}\n{}", run.stdout, run.stderr);
            assert!(
                run.success,
                "zkCli {command:?} via node {idx} failed:\n{output}"
            );
            eprintln!(
                "zkCli {command:?} via node {idx}:\n{}",
                run.stdout.trim_end()
            );
            output
        };
        let cmd = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // The three members, as ZooKeeper prints its configuration.
        let out = blocking(|| run(0, cmd(&["config"])));
        for (node, client) in ens.nodes().iter().zip(&addrs).take(3) {
            let line = format!(
                "server.{}={}:0:participant;{client}",
                node.id,
                node.peer_addr()
            );
            assert!(out.lines().any(|l| l == line), "no {line:?} in:\n{out}");
        }
        assert!(out.lines().any(|l| l.starts_with("version=")), "{out}");
        // Node 4 joins as a participant.
        let spec = format!(
            "server.4={}:0:participant;{}",
            ens.nodes()[3].peer_addr(),
            addrs[3]
        );
        let out = blocking(|| run(1, cmd(&["reconfig", "-add", &spec])));
        assert!(out.contains("Committed new configuration"), "{out}");
        assert!(out.lines().any(|l| l == spec), "{out}");
        let (_, members) = ens.admin_json(0, "GET", "/members", None);
        let voters = members["members"]
            .as_array()
            .map(|m| m.iter().filter(|m| m["voter"] == true).count());
        assert_eq!(voters, Some(4), "node 4 is no voter: {members}");
        // The new member serves clients and shows the same configuration.
        let out = blocking(|| run(3, cmd(&["config"])));
        assert!(out.lines().any(|l| l == spec), "{out}");
        // And leaves again.
        let out = blocking(|| run(2, cmd(&["reconfig", "-remove", "4"])));
        assert!(out.contains("Committed new configuration"), "{out}");
        assert!(!out.contains("server.4="), "{out}");
        let out = blocking(|| run(0, cmd(&["config"])));
        assert!(!out.contains("server.4="), "{out}");
    });
}

// ---------------------------------------------------------------------------------------------
// Read-only mode: a leader cut off from its followers
// ---------------------------------------------------------------------------------------------

/// The conformance suite cuts a follower off; here the leader is (openraft 0.9 does not make
/// a leader without a quorum step down): with both followers frozen it serves a read-only
/// client within seconds, says so in `/status`, refuses a write, and when the
/// followers continue its read-only connection is closed and the client gets a real session.
#[test]
fn a_leader_cut_off_serves_read_only_clients() {
    run_test("a_leader_cut_off_serves_read_only_clients", || async {
        let ens = start_cluster(&["--read-only-mode"]);
        let leader = leader_of(&ens);
        let zk = connect_only(&ens, leader).await;
        must("create", zk.create("/ro", b"kept", CreateMode::Persistent)).await;
        zk.close().await.ok();
        let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
        for i in &followers {
            ens.pause(*i).expect("pause a follower");
        }
        let became = Instant::now();
        let ro = loop {
            let opts = ens
                .connect_options()
                .can_be_read_only(true)
                .connect_timeout(Duration::from_secs(2));
            if let Ok(c) = Client::connect(&ens.addrs()[leader].to_string(), opts).await {
                if c.state() == synod_client::SessionState::ConnectedReadOnly {
                    break c;
                }
            }
            assert!(
                became.elapsed() < Duration::from_secs(30),
                "the cut-off leader never served a read-only session:\n{}",
                ens.log_tail(leader)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        eprintln!("read-only after {:.1?}", became.elapsed());
        let st = blocking(|| ens.status_json(leader)).expect("status");
        assert_eq!(st["read_only"], true, "{st}");
        let (data, _) = must("read-only get", ro.get_data("/ro")).await;
        assert_eq!(&data[..], b"kept");
        assert!(matches!(
            ro.set_data("/ro", b"x", None).await,
            Err(Error::NotReadOnly)
        ));
        let ro_session = ro.session_id();
        for i in &followers {
            ens.resume(*i).expect("resume a follower");
        }
        let back = Instant::now();
        while ro.state() != synod_client::SessionState::Connected {
            assert!(
                back.elapsed() < Duration::from_secs(60),
                "the read-only client never got a read-write session"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_ne!(ro.session_id(), ro_session);
        must("write after", ro.set_data("/ro", b"written", None)).await;
        let st = blocking(|| ens.status_json(leader)).expect("status");
        assert_eq!(st["read_only"], false, "{st}");
    });
}

/// Without read-only mode, a leader cut off from its followers closes its clients'
/// connections within seconds, as ZooKeeper's server does when it stops leading, and accepts
/// no session while cut off (`/status` says so); its client is disconnected meanwhile (not
/// answered pings: its session may end on the quorum's side), and when the followers continue
/// it resumes the same session — though it stayed away for longer than its timeout: the
/// cut-off leader expired nothing meanwhile (it restarts every deadline when the quorum is
/// back, as a new leader does).
#[test]
fn a_leader_cut_off_closes_its_clients_connections_until_the_quorum_is_back() {
    run_test(
        "a_leader_cut_off_closes_its_clients_connections_until_the_quorum_is_back",
        || async {
            let ens = start_cluster(&[]);
            let leader = leader_of(&ens);
            let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
            // Away for longer than the session's timeout and a tick.
            let away = CUT_OFF_SESSION_TIMEOUT * 2;
            cut_off_and_back(&ens, leader, &followers, away, |st| {
                assert_eq!(st["read_only"], false, "{st}");
            })
            .await;
            let st = blocking(|| ens.status_json(leader)).expect("status");
            assert_eq!(st["cut_off"], false, "{st}");
        },
    );
}

/// A follower left on the minority's side with its leader (three of five voters paused) keeps
/// hearing that leader's heartbeats, but hears from no majority of the voters: it is cut off
/// too, and closes its client's connection, as the leader does (ZooKeeper's leader steps down
/// and its followers drop their clients); the client resumes its session once the quorum is
/// back.
#[test]
fn a_follower_on_the_minority_side_with_its_leader_closes_its_clients_connections() {
    run_test(
        "a_follower_on_the_minority_side_with_its_leader_closes_its_clients_connections",
        || async {
            let t = Instant::now();
            let ens = blocking(|| SynodEnsemble::start_tls(synod_bin(), 5, &[]))
                .expect("start a 5-node synod cluster");
            eprintln!("5-node cluster serving after {:.1?}", t.elapsed());
            let leader = leader_of(&ens);
            let followers: Vec<usize> = (0..5).filter(|i| *i != leader).collect();
            let leader_id = ens.nodes()[leader].id;
            cut_off_and_back(&ens, followers[0], &followers[1..], Duration::ZERO, |st| {
                assert_eq!(st["leader"], leader_id, "it still hears its leader: {st}");
            })
            .await;
        },
    );
}

/// The session timeout of [`cut_off_and_back`]'s client.
const CUT_OFF_SESSION_TIMEOUT: Duration = Duration::from_secs(2);

/// Connects a client to node `on` alone and pauses the nodes `paused`, which cuts `on` off from
/// the quorum: `on` must close the client's connection (`Disconnected`, within 30 s), show
/// `cut_off` in `/status` (and whatever `status` checks there) and refuse new sessions. After
/// `away` the paused nodes resume, and the client must resume its session and write.
async fn cut_off_and_back(
    ens: &SynodEnsemble,
    on: usize,
    paused: &[usize],
    away: Duration,
    status: impl Fn(&serde_json::Value),
) {
    let opts = ens
        .connect_options()
        .session_timeout(CUT_OFF_SESSION_TIMEOUT);
    let zk = Client::connect(&ens.addrs()[on].to_string(), opts)
        .await
        .unwrap_or_else(|e| panic!("connect to node {on}: {e}"));
    assert_eq!(zk.session_timeout(), CUT_OFF_SESSION_TIMEOUT);
    must("create", zk.create("/cut", b"", CreateMode::Persistent)).await;
    let session = zk.session_id();
    let mut states = zk.state_changes();
    for i in paused {
        ens.pause(*i).expect("pause a node");
    }
    let cut = Instant::now();
    let first = tokio::time::timeout(Duration::from_secs(30), states.next()).await;
    assert_eq!(
        first,
        Ok(Some(synod_client::SessionState::Disconnected)),
        "node {on}, cut off, kept its client connected:\n{}",
        ens.log_tail(on)
    );
    eprintln!("disconnected after {:.1?}", cut.elapsed());
    let st = blocking(|| ens.status_json(on)).expect("status");
    assert_eq!(st["cut_off"], true, "{st}");
    status(&st);
    // Nobody gets a session there meanwhile (closed without an answer).
    let opts = ens
        .connect_options()
        .connect_timeout(Duration::from_secs(2));
    let other = Client::connect(&ens.addrs()[on].to_string(), opts).await;
    assert!(other.is_err(), "a session on cut-off node {on}: {other:?}");
    assert_eq!(zk.state(), synod_client::SessionState::Disconnected);
    tokio::time::sleep(away).await;
    for i in paused {
        ens.resume(*i).expect("resume a node");
    }
    let back = tokio::time::timeout(Duration::from_secs(60), states.next()).await;
    assert_eq!(back, Ok(Some(synod_client::SessionState::Connected)));
    assert_eq!(zk.session_id(), session, "the session was not resumed");
    // The nodes may elect a new leader as they continue: a write under way then loses its
    // connection, and the client resumes again (the write is idempotent).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout(OP_TIMEOUT, zk.set_data("/cut", b"back", None)).await {
            Ok(Ok(_)) => break,
            Ok(Err(Error::ConnectionLoss)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => panic!("write after the quorum is back: {other:?}"),
        }
    }
    assert_eq!(zk.session_id(), session, "the session did not survive");
}

// ---------------------------------------------------------------------------------------------
// Persistent recursive watch across a reconnect
// ---------------------------------------------------------------------------------------------

/// A recursive watcher whose server is SIGKILLed while another session keeps writing (many
/// writes in flight, so group commit puts several in one entry) reconnects elsewhere and still
/// sees every acknowledged change exactly once, in zxid order; every change has its own zxid.
#[test]
fn recursive_watch_sees_every_change_once_across_a_reconnect() {
    run_test(
        "recursive_watch_sees_every_change_once_across_a_reconnect",
        || async {
            let ens = start_cluster(&[]);
            let leader = leader_of(&ens);
            let watched = (leader + 1) % 3; // the watcher's server: a follower, killed mid-run
            let writer_node = (leader + 2) % 3;
            let setup = connect_only(&ens, leader).await;
            create_empty(&setup, "/rw").await;
            let watcher = connect_preferring(&ens, watched).await;
            let mut events = must(
                "addWatch /rw recursive",
                watcher.add_watch("/rw", synod_client::AddWatchMode::PersistentRecursive),
            )
            .await;
            let writer = Arc::new(connect_only(&ens, writer_node).await);

            // 8 tasks, each creating then updating its own keys until told to stop.
            let stop = Arc::new(AtomicBool::new(false));
            let mut tasks = Vec::new();
            for t in 0..8 {
                let (writer, stop) = (writer.clone(), stop.clone());
                tasks.push(tokio::spawn(async move {
                    let mut acked: Vec<(i64, String)> = Vec::new();
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let path = format!("/rw/t{t}-{i}");
                        let created = tokio::time::timeout(
                            OP_TIMEOUT,
                            writer.create_full(
                                &path,
                                b"v0",
                                &Acl::open_unsafe(),
                                CreateMode::Persistent,
                                None,
                            ),
                        )
                        .await;
                        if let Ok(Ok((_, stat))) = created {
                            acked.push((stat.czxid, path.clone()));
                            let set = tokio::time::timeout(
                                OP_TIMEOUT,
                                writer.set_data(&path, b"v1", None),
                            )
                            .await;
                            if let Ok(Ok(stat)) = set {
                                acked.push((stat.mzxid, path));
                            }
                        }
                        i += 1;
                    }
                    acked
                }));
            }
            tokio::time::sleep(Duration::from_millis(800)).await;
            blocking(|| ens.kill(watched)).expect("kill the watcher's server");
            tokio::time::sleep(Duration::from_millis(1500)).await;
            stop.store(true, Ordering::Relaxed);
            let mut acked = Vec::new();
            for t in tasks {
                acked.extend(t.await.expect("writer task"));
            }
            acked.sort();
            let distinct: BTreeSet<i64> = acked.iter().map(|(z, _)| *z).collect();
            assert_eq!(
                distinct.len(),
                acked.len(),
                "two acknowledged writes share a zxid"
            );
            assert!(
                acked.len() > 50,
                "too few writes to mean anything: {}",
                acked.len()
            );

            // Collect events until every acknowledged zxid has been seen (bounded).
            let want: BTreeMap<i64, String> = acked.into_iter().collect();
            let mut got: Vec<(i64, String)> = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            let max_want = *want.keys().last().expect("some writes");
            while got.last().is_none_or(|(z, _)| *z < max_want) {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, events.next()).await {
                    Ok(Some(ev)) => got.push((ev.zxid, ev.path)),
                    Ok(None) => panic!("the watch stream ended"),
                    Err(_) => break,
                }
            }
            let mut seen: BTreeMap<i64, usize> = BTreeMap::new();
            for w in got.windows(2) {
                assert!(
                    w[0].0 < w[1].0,
                    "events out of zxid order or repeated: {:?} then {:?}",
                    w[0],
                    w[1]
                );
            }
            for (z, _) in &got {
                *seen.entry(*z).or_default() += 1;
            }
            let missing: Vec<_> = want.iter().filter(|(z, _)| !seen.contains_key(z)).collect();
            assert!(
                missing.is_empty(),
                "{} of {} acknowledged changes never reached the watcher, e.g. {:?}",
                missing.len(),
                want.len(),
                &missing[..missing.len().min(5)]
            );
            for (z, p) in &got {
                if let Some(wp) = want.get(z) {
                    assert_eq!(wp, p, "event at zxid {z:#x} names the wrong node");
                }
            }
            eprintln!(
            "{} acknowledged changes, {} events, all once and in zxid order; watcher now on {:?}",
            want.len(),
            got.len(),
            watcher.connected_server()
        );
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Resuming persistent watches where their missed events are gone (wire level)
// ---------------------------------------------------------------------------------------------

/// What a server did with a resumed session's setWatches2.
#[derive(Debug, Default)]
struct Resumed {
    /// The ConnectResponse said the session has expired (timeout 0).
    expired: bool,
    /// The session granted (id, password).
    session: Option<(i64, Bytes)>,
    /// The setWatches2 reply arrived (the watches are in place).
    replied: bool,
    /// The notifications before that reply (or before the server closed the connection): the
    /// replayed events, as (zxid, path).
    events: Vec<(i64, String)>,
    /// The answers to the checkWatches asked after that reply, in order.
    checked: Vec<ErrorCode>,
}

/// Opens a session of 60 s on `addr` and drops the connection without closing the session:
/// (session id, password).
fn parked_session(
    tls: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
) -> std::io::Result<(i64, Bytes)> {
    let resumed = resume_watch(tls, addr, (0, &Bytes::from(vec![0u8; 16])), 0, "/")?;
    resumed
        .session
        .ok_or_else(|| std::io::Error::other("no session granted"))
}

/// Resumes `session` on `addr` as a client that has seen `last_zxid` and holds a persistent
/// recursive watch on `root`; reads until the setWatches2 reply or the end of the connection.
fn resume_watch(
    tls: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    session: (i64, &Bytes),
    last_zxid: i64,
    root: &str,
) -> std::io::Result<Resumed> {
    let watches = SetWatches2 {
        relative_zxid: last_zxid,
        persistent_recursive_watches: vec![root.to_string()],
        ..Default::default()
    };
    resume(tls, addr, session, watches, &[])
}

/// Resumes `session` on `addr` as a client that has seen `watches.relative_zxid` and holds
/// `watches`; reads until the setWatches2 reply or the end of the connection, then asks
/// checkWatches of each of `checks` in turn.
fn resume(
    tls: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    session: (i64, &Bytes),
    watches: SetWatches2,
    checks: &[(&str, synod_proto::WatcherType)],
) -> std::io::Result<Resumed> {
    use std::io::Write as _;
    use synod_proto::records::{CheckWatchesRequest, ConnectResponse, WatcherEvent};
    let last_zxid = watches.relative_zxid;
    let mut s = raw_connect(tls, addr, OP_TIMEOUT * 2)?;
    let mut out = BytesMut::new();
    let hello = ConnectRequest {
        base: ConnectRequestBase {
            last_zxid_seen: last_zxid,
            timeout: 60_000,
            session_id: session.0,
            passwd: session.1.clone(),
            ..Default::default()
        },
        read_only: false,
    };
    encode_frame(&hello, &mut out);
    s.write_all(&out)?;
    let mut resumed = Resumed::default();
    let Some(frame) = read_frame(&mut s)? else {
        return Err(std::io::Error::other("closed before the handshake reply"));
    };
    let reply = ConnectResponse::decode(&mut Reader::new(frame))
        .map_err(|e| std::io::Error::other(format!("bad ConnectResponse: {e}")))?;
    if reply.base.timeout <= 0 {
        resumed.expired = true;
        return Ok(resumed);
    }
    resumed.session = Some((reply.base.session_id, reply.base.passwd));
    if session.0 == 0 {
        return Ok(resumed);
    }
    out.clear();
    encode_frame(
        &RequestPacket {
            xid: synod_proto::xid::SET_WATCHES,
            request: Request::SetWatches2(watches),
        },
        &mut out,
    );
    s.write_all(&out)?;
    while let Some(frame) = read_frame(&mut s)? {
        let mut r = Reader::new(frame);
        let header = ReplyHeader::decode(&mut r)
            .map_err(|e| std::io::Error::other(format!("bad reply header: {e}")))?;
        match header.xid {
            synod_proto::xid::NOTIFICATION => {
                let ev = WatcherEvent::decode(&mut r)
                    .map_err(|e| std::io::Error::other(format!("bad notification: {e}")))?;
                resumed.events.push((header.zxid, ev.path));
            }
            synod_proto::xid::SET_WATCHES => {
                resumed.replied = header.err == 0;
                break;
            }
            other => return Err(std::io::Error::other(format!("unexpected xid {other}"))),
        }
    }
    for (xid, (path, kind)) in (1..).zip(checks) {
        out.clear();
        let check = CheckWatchesRequest {
            path: path.to_string(),
            watcher_type: kind.as_i32(),
        };
        encode_frame(
            &RequestPacket {
                xid,
                request: Request::CheckWatches(check),
            },
            &mut out,
        );
        s.write_all(&out)?;
        let frame = read_frame(&mut s)?
            .ok_or_else(|| std::io::Error::other("closed before a checkWatches reply"))?;
        let header = ReplyHeader::decode(&mut Reader::new(frame))
            .map_err(|e| std::io::Error::other(format!("bad reply header: {e}")))?;
        if header.xid != xid {
            return Err(std::io::Error::other(format!(
                "unexpected xid {}",
                header.xid
            )));
        }
        resumed.checked.push(ErrorCode::from_i32(header.err));
    }
    Ok(resumed)
}

/// A session's persistent watches resume only where every event they missed can be replayed
/// (DESIGN.md §1.5): a node whose history does not reach back to the session's last zxid (it
/// restarted from a snapshot taken after it) closes the connection while another member can
/// replay them, that member replays them all, and when no member can, the session is expired
/// (the client's cue to rebuild its state) instead of resumed with events silently missing.
#[test]
fn persistent_watches_resume_only_where_their_missed_events_can_be_replayed() {
    run_test(
        "persistent_watches_resume_only_where_their_missed_events_can_be_replayed",
        || async {
            // Snapshots every 10 entries, so that a restarted node's history starts after them.
            let ens = start_cluster(&[
                "--snapshot-entries",
                "10",
                "--max-session-timeout-ms",
                "60000",
            ]);
            let tls = raw_tls(&ens);
            let leader = leader_of(&ens);
            let zk = connect_only(&ens, leader).await;
            create_empty(&zk, "/gap").await;
            // The resuming session: created, then its client goes away without closing it.
            let (id, passwd) = blocking(|| parked_session(&tls, ens.addrs()[leader]))
                .expect("a session to resume");
            let (_, stat) = must("get /gap", zk.get_data("/gap")).await;
            let seen = stat.mzxid;
            let mut want = Vec::new();
            for i in 0..40 {
                let path = format!("/gap/c{i}");
                create_empty(&zk, &path).await;
                want.push(path);
            }
            for idx in 0..3 {
                blocking(|| ens.wait_caught_up(idx, CATCH_UP_TIMEOUT)).expect("caught up");
            }

            // A restarted node can replay nothing from before its snapshot; the others can.
            let restarted = (leader + 1) % 3;
            blocking(|| ens.kill(restarted)).expect("kill");
            blocking(|| ens.restart(restarted)).expect("restart");
            blocking(|| ens.wait_caught_up(restarted, CATCH_UP_TIMEOUT)).expect("caught up");
            let addrs = ens.addrs();
            let there =
                blocking(|| resume_watch(&tls, addrs[restarted], (id, &passwd), seen, "/gap"))
                    .expect("resume on the restarted node");
            assert!(
                !there.expired && !there.replied && there.events.is_empty(),
                "the restarted node must close the connection, not resume: {there:?}"
            );
            let other = (leader + 2) % 3;
            let here = blocking(|| resume_watch(&tls, addrs[other], (id, &passwd), seen, "/gap"))
                .expect("resume on a node that was not restarted");
            assert!(here.replied, "resumed: {here:?}");
            let paths: Vec<&str> = here.events.iter().map(|(_, p)| p.as_str()).collect();
            assert_eq!(paths, want, "every missed event, once, in order");

            // Once every node restarted from a snapshot, no member can replay them: expired.
            blocking(|| ens.stop_all());
            blocking(|| ens.start_all()).expect("start all");
            let leader = leader_of(&ens);
            for idx in 0..3 {
                blocking(|| ens.wait_caught_up(idx, CATCH_UP_TIMEOUT)).expect("caught up");
            }
            let nowhere =
                blocking(|| resume_watch(&tls, addrs[leader], (id, &passwd), seen, "/gap"))
                    .expect("resume after a full restart");
            assert!(
                !nowhere.replied && nowhere.events.is_empty(),
                "no member can replay: the connection must close: {nowhere:?}"
            );
            // The expiry is committed before the connection closes; let `other` apply it.
            blocking(|| ens.wait_caught_up(other, CATCH_UP_TIMEOUT)).expect("caught up");
            let after = blocking(|| resume_watch(&tls, addrs[other], (id, &passwd), seen, "/gap"))
                .expect("reconnect after the refusal");
            assert!(after.expired, "the session must have expired: {after:?}");
        },
    );
}

/// The ACL of a node only the digest user `alice` (password `secret`) may use.
fn alice_only() -> Vec<Acl> {
    vec![Acl::new(
        synod_client::perms::ALL,
        "digest",
        "alice:aYXlLOpEooaV1cRAvUL1fp9Qt7E=",
    )]
}

/// A secure cluster whose sessions live up to 60 s (for raw resumes), its client TLS
/// configuration, its leader, and a client of the leader authenticated as `alice`.
async fn cluster_with_alice() -> (SynodEnsemble, Arc<rustls::ClientConfig>, usize, Client) {
    let ens = start_cluster(&["--max-session-timeout-ms", "60000"]);
    let tls = raw_tls(&ens);
    let leader = leader_of(&ens);
    let owner = connect_only(&ens, leader).await;
    must("addauth", owner.add_auth("digest", b"alice:secret")).await;
    (ens, tls, leader, owner)
}

/// A resuming session's one-shot watches are left only where `exists` and `getData` would leave
/// them: on a missing node or one it may READ. A setWatches2 naming a node only its owner may
/// read leaves no watch there: left, it would be used up by the owner's next change, which
/// the session is not told of, and `checkWatches` would then tell it that something changed.
#[test]
fn a_resumed_watch_is_left_only_where_the_session_may_read() {
    run_test(
        "a_resumed_watch_is_left_only_where_the_session_may_read",
        || async {
            use synod_proto::WatcherType::{Children, Data};
            let (ens, tls, leader, owner) = cluster_with_alice().await;
            let private = alice_only();
            must(
                "create the private node",
                owner.create_full("/case", b"", &private, CreateMode::Persistent, None),
            )
            .await;
            create_empty(&owner, "/open").await;
            let (_, stat) = must("get /open", owner.get_data("/open")).await;
            let (id, passwd) = blocking(|| parked_session(&tls, ens.addrs()[leader]))
                .expect("a session to resume");
            let watches = SetWatches2 {
                relative_zxid: stat.mzxid,
                data_watches: vec!["/case".into(), "/open".into()],
                exist_watches: vec!["/case".into()],
                child_watches: vec!["/case".into(), "/open".into()],
                ..Default::default()
            };
            let checks = [
                ("/case", Data),
                ("/case", Children),
                ("/open", Data),
                ("/open", Children),
            ];
            let resumed =
                blocking(|| resume(&tls, ens.addrs()[leader], (id, &passwd), watches, &checks))
                    .expect("resume");
            assert!(resumed.replied, "resumed: {resumed:?}");
            assert!(resumed.events.is_empty(), "nothing changed: {resumed:?}");
            assert_eq!(
                resumed.checked,
                [
                    ErrorCode::NoWatcher,
                    ErrorCode::NoWatcher,
                    ErrorCode::Ok,
                    ErrorCode::Ok
                ],
                "watches on the private node, then on the open one"
            );
        },
    );
}

/// The events replayed to a resuming session are filtered like live ones (ZooKeeper's
/// CVE-2024-23944 class): a session that resumes a recursive watch on a shared parent is
/// replayed the changes of the nodes it may read, and none of a node only its owner may read —
/// judged by the ACL each node had when it changed.
#[test]
fn a_replay_tells_a_resuming_session_only_what_it_may_read() {
    run_test(
        "a_replay_tells_a_resuming_session_only_what_it_may_read",
        || async {
            let (ens, tls, leader, owner) = cluster_with_alice().await;
            create_empty(&owner, "/shared").await;
            // The resuming session (the test client's certificate, not the owner): parked.
            let (id, passwd) = blocking(|| parked_session(&tls, ens.addrs()[leader]))
                .expect("a session to resume");
            let (_, stat) = must("get /shared", owner.get_data("/shared")).await;
            let seen = stat.mzxid;
            // The owner's digest alone (its connection also carries the test certificate's
            // identity, which the resuming session shares: `creator_all` would grant it).
            let private = alice_only();
            must(
                "create the private node",
                owner.create_full(
                    "/shared/case",
                    b"diagnosis",
                    &private,
                    CreateMode::Persistent,
                    None,
                ),
            )
            .await;
            must("set it", owner.set_data("/shared/case", b"revised", None)).await;
            create_empty(&owner, "/shared/open").await;
            // Readable when it changed, private now: the change was the session's to hear.
            must("set open", owner.set_data("/shared/open", b"v2", None)).await;
            must(
                "make it private",
                owner.set_acl("/shared/open", &private, None),
            )
            .await;
            must(
                "delete the private node",
                owner.delete("/shared/case", None),
            )
            .await;
            for idx in 0..3 {
                blocking(|| ens.wait_caught_up(idx, CATCH_UP_TIMEOUT)).expect("caught up");
            }
            let other = (leader + 1) % 3;
            let addr = ens.addrs()[other];
            let resumed = blocking(|| resume_watch(&tls, addr, (id, &passwd), seen, "/shared"))
                .expect("resume");
            assert!(resumed.replied, "resumed: {resumed:?}");
            let paths: Vec<&str> = resumed.events.iter().map(|(_, p)| p.as_str()).collect();
            assert_eq!(
                paths,
                ["/shared/open", "/shared/open"],
                "only the open node's creation and change"
            );
        },
    );
}
