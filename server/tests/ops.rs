//! Operations tests with real `synod` processes: `/metrics` scraped from a live node and parsed
//! with a Prometheus text-format parser; a backup (`GET /snapshot`) restored with `synod restore`
//! into a fresh cluster with another membership (same tree and Stats, writes continue after the
//! backup's zxid); snapshot trigger and log purge; graceful shutdown of a leader under load; C++'s
//! `operator new` and `delete` bound to synod's (RocksDB on jemalloc).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use synod_client::{Client, ConnectOptions, CreateMode, Error, Stat, CONFIG_NODE};
use synod_testkit::{blocking, runtime, SynodEnsemble};

/// `n` nodes of the `synod` binary under test on free ports, none started yet.
fn new_cluster(n: usize) -> SynodEnsemble {
    SynodEnsemble::unstarted(Path::new(env!("CARGO_BIN_EXE_synod")), n).expect("lay out a cluster")
}

const START: Duration = Duration::from_secs(30);

/// Starts nodes 0..3 of `c` as a fresh 3-voter cluster; returns the leader's index.
fn start3(c: &SynodEnsemble, extra: &[&str]) -> usize {
    let m = c.members(&[0, 1, 2]);
    for i in 0..3 {
        c.spawn_with(i, &m, extra).expect("spawn synod");
    }
    c.wait_leader_among(&[0, 1, 2], START)
}

async fn connect(cs: &str) -> Client {
    Client::connect(
        cs,
        ConnectOptions::default().connect_timeout(Duration::from_secs(10)),
    )
    .await
    .expect("connect")
}

fn scrape(c: &SynodEnsemble, idx: usize) -> prometheus_parse::Scrape {
    let (status, body) = c.http(idx, "GET", "/metrics", None).expect("GET /metrics");
    assert_eq!(status, 200);
    let text = String::from_utf8(body).expect("utf-8");
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parse")
}

/// The value of a counter or gauge sample with `labels` (all must match).
fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .find_map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
}

/// The sample count of a histogram with `labels`.
fn histogram_count(
    s: &prometheus_parse::Scrape,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .find_map(|x| match &x.value {
            prometheus_parse::Value::Histogram(buckets) => buckets
                .iter()
                .find(|b| b.less_than.is_infinite())
                .map(|b| b.count),
            _ => None,
        })
}

#[test]
fn metrics_are_prometheus_text_and_move() {
    let c = new_cluster(3);
    let leader = start3(&c, &[]);
    runtime().block_on(async {
        let zk = connect(&c.nodes()[leader].client_addr().to_string()).await;
        zk.create("/m", b"x", CreateMode::Persistent)
            .await
            .expect("create");
        let before = blocking(|| scrape(&c, leader));
        for i in 0..20 {
            zk.set_data("/m", format!("v{i}").as_bytes(), None)
                .await
                .expect("set");
            zk.get_data("/m").await.expect("get");
        }
        assert!(matches!(zk.get_data("/nope").await, Err(Error::NoNode)));
        let after = blocking(|| scrape(&c, leader));

        let ops = [("op", "setData")];
        let set_before = value(&before, "synod_requests_total", &ops).unwrap_or(0.0);
        let set_after = value(&after, "synod_requests_total", &ops).expect("setData count");
        assert!(
            set_after >= set_before + 20.0,
            "{set_before} -> {set_after}"
        );
        let get = histogram_count(
            &after,
            "synod_request_duration_seconds",
            &[("op", "getData")],
        )
        .expect("getData latency histogram");
        assert!(get >= 21.0, "getData latency samples {get}");
        assert!(
            value(&after, "synod_request_errors_total", &[("code", "NoNode")]).expect("NoNode")
                >= 1.0
        );
        assert!(value(&after, "synod_raft_term", &[]).expect("term") >= 1.0);
        // What this node runs and speaks, for a mixed-version cluster.
        let build = [
            ("version", env!("CARGO_PKG_VERSION")),
            ("peer_protocol", "5"),
            ("snapshot_format", "1"),
            ("backup_format", "1"),
            ("log_format", "1"),
            ("cluster_version", "5"),
        ];
        assert_eq!(value(&after, "synod_build_info", &build), Some(1.0));
        // A cluster of this release alone runs at its cluster version.
        assert_eq!(value(&after, "synod_cluster_version", &[]), Some(5.0));
        let (_, status) = blocking(|| c.json(leader, "GET", "/status", None)).expect("/status");
        assert_eq!(
            status["formats"],
            serde_json::json!({"peer_protocol": 5, "snapshot": 1, "backup": 1, "log": 1, "cluster_version": 5})
        );
        assert_eq!(status["cluster_version"], 5);
        assert_eq!(value(&after, "synod_raft_is_leader", &[]), Some(1.0));
        assert_eq!(value(&after, "synod_raft_voters", &[]), Some(3.0));
        let applied = value(&after, "synod_raft_applied_index", &[]).expect("applied");
        assert!(applied > value(&before, "synod_raft_applied_index", &[]).expect("applied before"));
        assert!(value(&after, "synod_raft_commit_index", &[]).expect("commit") >= applied);
        assert!(value(&after, "synod_znodes", &[]).expect("znodes") >= 2.0);
        assert!(value(&after, "synod_tree_data_bytes", &[]).expect("bytes") >= 2.0);
        assert!(value(&after, "synod_sessions", &[]).expect("sessions") >= 1.0);
        assert!(value(&after, "synod_connections", &[]).expect("connections") >= 1.0);
        assert!(value(&after, "synod_outstanding_requests", &[]).is_some());
        // What the node's memory holds: the process's resident set, and the allocator's live
        // heap within it (jemalloc's counters), each a plausible size.
        let rss = value(&after, "process_resident_memory_bytes", &[]).expect("process RSS");
        let heap = |kind| value(&after, "synod_allocator_bytes", &[("kind", kind)]);
        let allocated = heap("allocated").expect("allocated bytes");
        let resident = heap("resident").expect("allocator's resident bytes");
        assert!(rss > 1e6, "RSS {rss}");
        assert!(
            0.0 < allocated && allocated <= resident && resident <= rss,
            "allocated {allocated} <= resident {resident} <= RSS {rss}"
        );
        // What RocksDB holds, within that heap (its C++ allocates from the same jemalloc:
        // server/src/cxx_alloc.rs): the log's memtable holds what was just written; the audit
        // trail's is reported too.
        let rocks = |store, kind| {
            value(
                &after,
                "synod_rocksdb_memory_bytes",
                &[("store", store), ("kind", kind)],
            )
        };
        let log_memtables = rocks("log", "memtables").expect("log memtables");
        assert!(
            0.0 < log_memtables && log_memtables < rss,
            "log memtables {log_memtables} within RSS {rss}"
        );
        let mut rocksdb = 0.0;
        for store in ["log", "audit"] {
            for kind in ["memtables", "table_readers", "block_cache"] {
                rocksdb += rocks(store, kind).unwrap_or_else(|| panic!("{store} {kind}"));
            }
        }
        assert!(
            rocksdb <= allocated,
            "RocksDB's {rocksdb} bytes are part of the allocated {allocated}"
        );
        // Whole seconds (a counter of integers): present, not necessarily past 0 yet.
        assert!(value(&after, "process_cpu_seconds_total", &[]).is_some());
        assert!(value(&after, "process_threads", &[]).expect("threads") >= 2.0);
        assert!(value(&after, "synod_watches", &[]).is_some());
        assert!(
            value(&after, "synod_raft_leader_changes_total", &[]).expect("leader changes") >= 1.0
        );
        let fsyncs =
            histogram_count(&after, "synod_log_fsync_seconds", &[]).expect("fsync histogram");
        assert!(fsyncs > histogram_count(&before, "synod_log_fsync_seconds", &[]).unwrap_or(0.0));
        assert!(histogram_count(&after, "synod_log_append_seconds", &[]).expect("append") > 0.0);
        assert!(histogram_count(&after, "synod_apply_seconds", &[]).expect("apply") > 0.0);
        // Replication and apply read what was just appended from the decoded tail in memory.
        let from_cache = |m: &prometheus_parse::Scrape| {
            value(m, "synod_log_reads_total", &[("from", "cache")]).unwrap_or(0.0)
        };
        assert!(
            from_cache(&after) >= from_cache(&before) + 20.0,
            "log reads answered from the tail cache: {} -> {}",
            from_cache(&before),
            from_cache(&after)
        );
        assert!(value(&after, "synod_log_reads_total", &[("from", "disk")]).is_some());
        // Where the time went: every stage a write and a linearizable read pass on the leader
        // counted them (at least once each: a batch entry may carry several writes).
        let stage = |m: &prometheus_parse::Scrape, s: &str| {
            histogram_count(m, "synod_stage_seconds", &[("stage", s)]).unwrap_or(0.0)
        };
        for (name, at_least) in [
            ("propose_queue", 20.0),
            ("write_applied", 20.0),
            ("commit", 1.0),
            ("replicate", 1.0),
            ("read_index", 1.0),
            ("read_wait", 1.0),
        ] {
            let moved = stage(&after, name) - stage(&before, name);
            assert!(moved >= at_least, "stage {name} counted {moved} passes");
        }
        // A follower counted the AppendEntries it handled.
        let follower = (leader + 1) % 3;
        let f = blocking(|| scrape(&c, follower));
        assert!(stage(&f, "append_entries") >= 1.0, "follower append_entries");
        assert!(
            after.docs.contains_key("synod_requests_total"),
            "HELP lines present"
        );

        // A manual snapshot shows up in the snapshot series.
        let (st, snap) =
            blocking(|| c.json(leader, "POST", "/snapshot", None)).expect("POST /snapshot");
        assert_eq!(st, 200, "{snap}");
        let m = blocking(|| scrape(&c, leader));
        assert!(value(&m, "synod_snapshots_built_total", &[]).expect("snapshots") >= 1.0);
        assert!(value(&m, "synod_snapshot_bytes", &[]).expect("bytes") > 0.0);
        assert!(histogram_count(&m, "synod_snapshot_build_seconds", &[]).expect("build") >= 1.0);
        assert!(value(&m, "synod_raft_snapshot_index", &[]).expect("snapshot index") >= applied);
    });
}

/// `op`, again while it fails with ConnectionLoss (for at most 30 s): a freshly started
/// cluster's first reads may find the connection closed while its members' peer connections are
/// still being set up; a ZooKeeper client retries a read then.
async fn retried<T, F, Fut>(mut op: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match op().await {
            Err(Error::ConnectionLoss) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            r => return r,
        }
    }
}

/// Every znode under (and including) `root` with its data and Stat.
async fn dump(zk: &Client, root: &str) -> BTreeMap<String, (Vec<u8>, Stat)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_string()];
    while let Some(p) = todo.pop() {
        let (data, stat) = retried(|| zk.get_data(&p)).await.expect("get_data");
        for child in retried(|| zk.get_children(&p)).await.expect("children") {
            todo.push(if p == "/" {
                format!("/{child}")
            } else {
                format!("{p}/{child}")
            });
        }
        out.insert(p, (data.to_vec(), stat));
    }
    out
}

#[test]
fn backup_restores_into_a_new_cluster() {
    let a = new_cluster(3);
    let leader = start3(&a, &["--snapshot-entries", "50"]);
    let rt = runtime();
    let (before, backup_index, owner_session) = rt.block_on(async {
        let zk = connect(&a.connect_string_of(&[0, 1, 2])).await;
        zk.create("/app", b"root", CreateMode::Persistent)
            .await
            .expect("create");
        // A session with an ephemeral: the backup keeps both, but not the session's password.
        zk.create("/app-eph", b"", CreateMode::Ephemeral)
            .await
            .expect("ephemeral");
        for i in 0..120 {
            let p = zk
                .create(
                    "/app/n-",
                    format!("value {i}").as_bytes(),
                    CreateMode::PersistentSequential,
                )
                .await
                .expect("create seq");
            if i % 3 == 0 {
                zk.set_data(&p, b"changed", None).await.expect("set");
            }
        }
        zk.delete("/app/n-0000000001", None).await.expect("delete");
        zk.create("/cfg", &[0xff, 0, 1], CreateMode::Persistent)
            .await
            .expect("binary");
        // Backup from a follower: let it apply every write above first (sync), then snapshot
        // and download. (Without the sync the snapshot could miss the last writes while the
        // dump below, taken after a sync, has them.)
        let follower = (leader + 1) % 3;
        let zk2 = connect(&a.nodes()[follower].client_addr().to_string()).await;
        zk2.sync("/").await.expect("sync");
        let (st, info) =
            blocking(|| a.json(follower, "POST", "/snapshot", None)).expect("POST /snapshot");
        assert_eq!(st, 200, "{info}");
        let (st, bytes) =
            blocking(|| a.http(follower, "GET", "/snapshot", None)).expect("GET /snapshot");
        assert_eq!(st, 200);
        let file = a.root().join("backup.bin");
        std::fs::write(&file, &bytes).expect("write backup");
        // The purge behind the snapshots left the log short.
        let status = blocking(|| a.status_json(follower)).expect("status");
        let index = info["last_log_index"].as_u64().expect("index");
        assert!(
            index >= status["applied_index"].as_u64().unwrap_or(0) - 5,
            "{info} vs {status}"
        );
        // Reads through the follower that took the backup.
        let tree = dump(&zk2, "/").await;
        (tree, index, zk.session_id())
    });
    let file = a.root().join("backup.bin");

    // A new cluster on other ports, with ids 1..3 in a different order of addresses.
    let b = new_cluster(3);
    let members = b.members(&[0, 1, 2]);
    let restore = |from: &std::path::Path, data_dir: &std::path::Path, id: usize| {
        std::process::Command::new(env!("CARGO_BIN_EXE_synod"))
            .args(["restore", "--from"])
            .arg(from)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--id", &id.to_string(), "--members", &members])
            .output()
            .expect("synod restore")
    };
    let left_empty =
        |dir: &std::path::Path| std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none());
    for i in 0..3 {
        let out = restore(&file, &b.nodes()[i].data_dir(), b.nodes()[i].id);
        assert!(
            out.status.success(),
            "restore: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.contains("restored"), "{said}");
    }
    // A damaged backup (one flipped byte) is refused before anything is written.
    let damaged = a.root().join("damaged.bin");
    let mut bytes = std::fs::read(&file).expect("read the backup");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&damaged, &bytes).expect("write the damaged copy");
    let scratch = a.root().join("scratch-restore");
    let refused = restore(&damaged, &scratch, 1);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "a damaged backup was restored");
    assert!(said.contains("checksum mismatch"), "{said}");
    assert!(left_empty(&scratch), "a refused restore wrote something");
    // A directory given as the backup (a node's data directory, say) is refused by name,
    // before anything is written.
    let not_a_file = restore(a.root(), &scratch, 1);
    let said = String::from_utf8_lossy(&not_a_file.stderr);
    assert!(!not_a_file.status.success(), "a directory was restored");
    assert!(
        said.contains("is a directory: give the backup file"),
        "{said}"
    );
    assert!(left_empty(&scratch), "a refused restore wrote something");
    // Restoring onto a non-empty directory is refused.
    let again = restore(&file, &b.nodes()[0].data_dir(), 1);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));

    for i in 0..3 {
        b.spawn_with(i, &members, &[]).expect("spawn synod");
    }
    let b_leader = b.wait_leader_among(&[0, 1, 2], START);
    assert!(
        !b.log(b_leader).contains("cluster initialized"),
        "a restored node must not bootstrap"
    );
    rt.block_on(async {
        let zk = connect(&b.connect_string_of(&[0, 1, 2])).await;
        let after = dump(&zk, "/").await;
        assert_eq!(before.len(), after.len());
        for (path, (data, stat)) in &before {
            if path == CONFIG_NODE {
                // Derived from the membership, not restored: the new cluster's leader writes
                // its own members there (checked below).
                continue;
            }
            let (d2, s2) = after
                .get(path)
                .unwrap_or_else(|| panic!("{path} missing after restore"));
            assert_eq!((data, stat), (d2, s2), "{path} differs after restore");
        }
        let members: Vec<String> = (0..3)
            .map(|i| format!(";{}", b.nodes()[i].client_addr()))
            .collect();
        let deadline = Instant::now() + START;
        loop {
            let (data, _) = retried(|| zk.get_data(CONFIG_NODE))
                .await
                .expect("get the config node");
            let config = String::from_utf8_lossy(&data).into_owned();
            if members.iter().all(|m| config.contains(m.as_str())) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{CONFIG_NODE} does not list the restored cluster's members {members:?}: {config}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The backed-up session cannot be resumed in the new cluster, even by a client that
        // sends the empty password the backup left it.
        let resumed = Client::connect(
            &b.connect_string_of(&[0, 1, 2]),
            ConnectOptions::default()
                .resume(owner_session, b"")
                .connect_timeout(Duration::from_secs(10)),
        )
        .await;
        assert!(resumed.is_err(), "a restored session was resumed");
        // Writes work and continue the zxid sequence after the backup.
        zk.create("/after-restore", b"new", CreateMode::Persistent)
            .await
            .expect("write after restore");
        let (_, s) = zk.get_data("/after-restore").await.expect("read back");
        assert!(
            s.czxid as u64 > backup_index,
            "czxid {:#x} after backup {backup_index:#x}",
            s.czxid
        );
        let (_, s) = zk.get_data("/app").await.expect("old node");
        assert!(zk.set_data("/app", b"v2", Some(s.version)).await.is_ok());
        let m = blocking(|| b.json(b_leader, "GET", "/membership", None))
            .expect("membership")
            .1;
        let addrs: Vec<&str> = m["members"]
            .as_array()
            .expect("members")
            .iter()
            .filter_map(|x| x["peer_addr"].as_str())
            .collect();
        assert_eq!(addrs.len(), 3);
        for s in b.nodes() {
            assert!(addrs.contains(&s.peer_addr().to_string().as_str()), "{m}");
        }
    });
    // The restored cluster is a new cluster: its members agree on a fresh cluster id.
    let deadline = std::time::Instant::now() + START;
    loop {
        let ids: std::collections::BTreeSet<Option<String>> = (0..3)
            .map(|i| {
                b.status_json(i)
                    .and_then(|st| st["cluster_id"].as_str().map(str::to_string))
            })
            .collect();
        if ids.len() == 1 && !ids.contains(&None) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no common cluster id on the restored nodes ({ids:?})\n{}",
            b.logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // Data at rest: every data dir of both clusters (snapshots, RocksDB files, the identity
    // file, a restored one) is its user's alone.
    for c in [&a, &b] {
        for n in c.nodes() {
            assert_private(&n.data_dir());
        }
    }
}

/// Asserts that `dir` and everything below it gives nothing to group or others.
fn assert_private(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![dir.to_path_buf()];
    let mut files = 0;
    while let Some(d) = stack.pop() {
        let mode = std::fs::metadata(&d).expect("stat").permissions().mode();
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", d.display());
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let e = e.expect("entry");
            let mode = e.metadata().expect("stat").permissions().mode();
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", e.path().display());
            if e.file_type().expect("type").is_dir() {
                stack.push(e.path());
            } else {
                files += 1;
            }
        }
    }
    assert!(files > 3, "{} holds only {files} files", dir.display());
}

#[test]
fn leader_shuts_down_gracefully_under_load() {
    let c = new_cluster(3);
    let leader = start3(&c, &[]);
    let rt = runtime();
    rt.block_on(async {
        let zk = connect(&c.nodes()[leader].client_addr().to_string()).await;
        zk.create("/g", b"", CreateMode::Persistent)
            .await
            .expect("create");
        // Pipelined writes in flight while SIGTERM arrives.
        let mut acked = Vec::new();
        let writes: Vec<_> = (0..200)
            .map(|i| {
                let zk = zk.clone();
                tokio::spawn(async move {
                    let p = format!("/g/w{i}");
                    zk.create(&p, b"x", CreateMode::Persistent).await.map(|_| p)
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let started = Instant::now();
        let exit = blocking(|| c.terminate(leader, Duration::from_secs(30)))
            .expect("leader exited in time");
        assert!(exit.success(), "exit status {exit:?}\n{}", c.log(leader));
        let took = started.elapsed();
        for w in writes {
            if let Ok(Ok(p)) = w.await {
                acked.push(p);
            }
        }
        let log = c.log(leader);
        assert!(log.contains("shutting down"), "{log}");
        assert!(log.contains("leader exiting"), "{log}");
        let rest: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
        blocking(|| c.wait_leader_among(&rest, START));
        let zk2 = connect(&c.connect_string_of(&rest)).await;
        zk2.sync("/").await.expect("sync");
        for p in &acked {
            assert!(
                zk2.exists(p).await.expect("exists").is_some(),
                "acknowledged {p} lost"
            );
        }
        eprintln!(
            "graceful shutdown took {took:?}; {} of 200 writes acknowledged",
            acked.len()
        );
    });
}

/// One backup download at a time: each holds a copy of the snapshot on the node's disk until
/// it ends, so a second one meanwhile is answered 429. The snapshot (about 27 MB) is larger
/// than the socket buffers, so the first download cannot end while its client reads nothing;
/// the node ends it after 60 s of that (`WRITE_STALL_TIMEOUT`), and serves the next one.
#[test]
fn one_backup_download_at_a_time() {
    use std::io::{Read, Write};
    let c = new_cluster(3);
    let leader = start3(&c, &[]);
    let rt = runtime();
    rt.block_on(async {
        let zk = connect(&c.connect_string_of(&[0, 1, 2])).await;
        let value = vec![7u8; 900_000];
        for i in 0..30 {
            zk.create(&format!("/big-{i}"), &value, CreateMode::Persistent)
                .await
                .expect("create");
        }
    });
    let (st, info) = c
        .json(leader, "POST", "/snapshot", None)
        .expect("POST /snapshot");
    assert_eq!(st, 200, "{info}");
    let addr = c.admin_addr(leader).expect("admin address");
    let mut slow = std::net::TcpStream::connect(addr).expect("connect");
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    slow.write_all(b"GET /snapshot HTTP/1.1\r\nhost: synod\r\n\r\n")
        .expect("send the request");
    let mut head = [0u8; 12];
    slow.read_exact(&mut head).expect("the response starts");
    assert_eq!(&head, b"HTTP/1.1 200", "{}", String::from_utf8_lossy(&head));

    let (st, body) = c
        .json(leader, "GET", "/snapshot", None)
        .expect("a second GET /snapshot");
    assert_eq!(st, 429, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("already"),
        "{body}"
    );
    // A HEAD says which snapshot a download would be, meanwhile: it makes no backup, so it
    // needs no turn.
    let mut head = std::net::TcpStream::connect(addr).expect("connect");
    head.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    head.write_all(b"HEAD /snapshot HTTP/1.1\r\nhost: synod\r\nconnection: close\r\n\r\n")
        .expect("send the request");
    let mut answer = String::new();
    head.read_to_string(&mut answer).expect("the answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let index = format!("x-synod-snapshot-index: {}\r\n", info["last_log_index"]);
    assert!(answer.contains(&index), "{index:?} in {answer}");

    // The first client stays connected, reading nothing.
    synod_testkit::wait_until(
        Duration::from_secs(120),
        "a download served once the node gave up on the stalled one",
        || {
            c.http(leader, "GET", "/snapshot", None)
                .is_some_and(|(st, bytes)| st == 200 && bytes.len() > 27_000_000)
        },
    );
    drop(slow);
}

/// A shutdown lets the admin port's requests in flight finish only within a bound: here a
/// removal that cannot commit (both followers frozen) would wait two minutes, its `timeout_ms`.
/// Before release 0.5.17 the node waited for it, until systemd (or this test) killed it.
#[test]
fn shutdown_does_not_wait_for_an_admin_request_in_flight() {
    let c = new_cluster(3);
    let leader = start3(&c, &[]);
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    for &f in &followers {
        c.pause(f).expect("freeze a follower");
    }
    let removed = c.nodes()[followers[0]].id;
    std::thread::scope(|s| {
        let pending = s.spawn(|| {
            let body = serde_json::json!({"id": removed, "force": true, "timeout_ms": 120_000});
            c.json(leader, "POST", "/members/remove", Some(&body))
        });
        synod_testkit::wait_until(START, "the removal under way", || {
            c.json(leader, "GET", "/membership", None)
                .is_some_and(|(_, m)| m["joint"] == true)
        });
        let exit = c.terminate(leader, Duration::from_secs(60));
        let answer = pending.join().expect("the request's thread");
        let log = c.log(leader);
        let exit = exit.unwrap_or_else(|| panic!("still running 60 s after SIGTERM\n{log}"));
        assert!(exit.success(), "exit status {exit:?}\n{log}");
        assert!(log.contains("admin requests still in flight"), "{log}");
        assert!(
            answer.as_ref().is_none_or(|(status, _)| *status != 200),
            "the removal cannot have succeeded: {answer:?}"
        );
    });
}

/// RocksDB's C++ allocates from synod's jemalloc (`server/src/cxx_alloc.rs`), and every
/// `operator new` and `delete` of the process is synod's: `libstdc++`'s own calls too, which the
/// dynamic linker binds to the executable's definitions only if it exports them. Were one of
/// them bound inside `libstdc++`, a block allocated by one allocator could be freed by the
/// other. Read from the dynamic linker itself (`LD_DEBUG=bindings`, every symbol bound at
/// start).
#[test]
fn every_cxx_new_and_delete_is_synods() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_synod"))
        .arg("--version")
        .env("LD_DEBUG", "bindings")
        .env("LD_BIND_NOW", "1")
        .output()
        .expect("run synod --version");
    assert!(out.status.success(), "synod --version failed: {out:?}");
    let log = String::from_utf8_lossy(&out.stderr);
    // "binding file /lib/.../libstdc++.so.6 [0] to /.../synod [0]: normal symbol `_Znwm' [...]"
    let bindings: Vec<(&str, &str, &str)> = log
        .lines()
        .filter_map(|l| {
            let rest = l.split_once("binding file ")?.1;
            let (from, rest) = rest.split_once(" to ")?;
            let (to, rest) = rest.split_once(": normal symbol `")?;
            let symbol = rest.split_once('\'')?.0;
            Some((from, to, symbol))
        })
        .collect();
    assert!(
        !bindings.is_empty(),
        "no bindings in LD_DEBUG's output: {log}"
    );
    let operator = |s: &str| {
        s.starts_with("_Znw")
            || s.starts_with("_Zna")
            || s.starts_with("_Zdl")
            || s.starts_with("_Zda")
    };
    let stdcxx: Vec<_> = bindings
        .iter()
        .filter(|(from, _, s)| from.contains("libstdc++") && operator(s))
        .collect();
    if stdcxx.is_empty() {
        // libstdc++ linked statically (or not at all): its calls are bound at link time.
        return;
    }
    for (_, to, symbol) in &stdcxx {
        assert!(
            !to.contains("libstdc++"),
            "libstdc++'s {symbol} is bound to its own, not synod's: {stdcxx:?}"
        );
    }
    for needed in ["_Znwm", "_ZdlPv"] {
        assert!(
            stdcxx.iter().any(|(_, _, s)| *s == needed),
            "libstdc++'s {needed} is not bound at all: {stdcxx:?}"
        );
    }
}
