//! The admin HTTP API and the four-letter words, with real requests against a 3-node synod
//! cluster (real processes, [`SynodEnsemble`]): every endpoint and every word, on the leader and a
//! follower; `/ready` turning 503 when the quorum is gone; `/digest` agreeing across replicas and
//! moving with a write; and the `mntr` / `srvr` / `stat` formats compared with a real Apache
//! ZooKeeper 3.8 ensemble.
//!
//! Tests run one at a time (a global lock: clusters on a 2-core machine), each bounded.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use synod_client::{AddWatchMode, Client, ConnectOptions, CreateMode};
use synod_testkit::{Ensemble, SynodEnsemble, ZkEnsemble};

/// Bound of one HTTP or four-letter-word exchange.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound of waits for the cluster to converge.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);

static SERIAL: Mutex<()> = Mutex::new(());

fn synod_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_synod"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Sends `request` and reads until the server closes, bounded.
fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s.write_all(request).expect("send");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read reply");
    String::from_utf8(out).expect("utf-8 reply")
}

/// Every four-letter word on the client port (the test ZooKeeper ensemble is configured with
/// `4lw.commands.whitelist=*` as well).
fn all_words() -> Vec<String> {
    vec!["--four-letter-words".into(), "*".into()]
}

/// A raw four-letter word on a client port.
fn four(addr: SocketAddr, word: &str) -> String {
    exchange(addr, word.as_bytes())
}

/// `GET path`: (status code, body).
fn http(addr: SocketAddr, path: &str) -> (u16, String) {
    let reply = exchange(
        addr,
        format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP reply");
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (code, body.to_string())
}

/// `GET path` that must answer 200 with JSON.
fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (code, body) = http(addr, path);
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
}

/// Polls `f` every 100 ms until it returns Some, at most `timeout`.
fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `key` names of `key\tvalue` lines (mntr), checking the format of every line.
fn mntr_keys(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(|l| {
            let (k, v) = l
                .split_once('\t')
                .unwrap_or_else(|| panic!("mntr line without a tab: {l:?}"));
            assert!(
                k.starts_with("zk_")
                    && k[3..]
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "mntr key {k:?}"
            );
            assert!(!v.is_empty(), "mntr {k} has no value");
            k.to_string()
        })
        .collect()
}

/// The label part (before `:`) of `Label: value` lines, in order (srvr, stat).
fn labels(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with(' ') && !l.is_empty())
        .map(|l| l.split(':').next().unwrap_or_default().to_string())
        .collect()
}

fn hex(id: i64) -> String {
    format!("{id:#x}")
}

#[test]
fn admin_endpoints_and_four_letter_words() {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let started = Instant::now();
    let rt = runtime();
    let ens =
        SynodEnsemble::start(synod_bin(), 3, &all_words()).expect("start a 3-node synod cluster");
    let leader = ens.wait_for_leader(CONVERGE_TIMEOUT).expect("a leader");
    let follower = (leader + 1) % 3;
    let admin = |i: usize| ens.admin_addr(i).expect("admin address");
    let client_addr = |i: usize| ens.addrs()[i];
    let leader_id = (leader + 1) as u64;
    let follower_id = (follower + 1) as u64;

    // A session on the follower with data, an ephemeral, and watches.
    let zk = rt
        .block_on(Client::connect(
            &client_addr(follower).to_string(),
            ConnectOptions::default().connect_timeout(Duration::from_secs(20)),
        ))
        .expect("connect to the follower");
    let sid = zk.session_id();
    let _watches = rt.block_on(async {
        zk.create("/admin-test", b"hello", CreateMode::Persistent)
            .await
            .expect("create");
        zk.create_null("/admin-null", CreateMode::Persistent)
            .await
            .expect("create with null data");
        zk.create(
            "/admin-test/bin",
            &[0xff, 0x00, 0x01],
            CreateMode::Persistent,
        )
        .await
        .expect("create");
        zk.create("/admin-test/eph", b"e", CreateMode::Ephemeral)
            .await
            .expect("create");
        let (_, _, w) = zk.get_data_watch("/admin-test").await.expect("get + watch");
        let p = zk
            .add_watch("/admin-test", AddWatchMode::PersistentRecursive)
            .await
            .expect("addWatch");
        (w, p)
    });
    for i in 0..3 {
        ens.wait_caught_up(i, CONVERGE_TIMEOUT).expect("caught up");
    }

    // /health, /ready, /status.
    for i in 0..3 {
        assert_eq!(http(admin(i), "/health"), (200, "ok\n".to_string()));
        let r = get_json(admin(i), "/ready");
        assert_eq!(r["ready"], true, "{r}");
        assert_eq!(r["leader"], leader_id);
        assert!(r["applied_index"].as_u64() >= r["read_index"].as_u64());
        let s = get_json(admin(i), "/status");
        assert_eq!(s["admin_addr"], admin(i).to_string());
        assert!(s["requests"]["latency"]["count"].is_u64());
    }
    let s = get_json(admin(follower), "/status");
    assert!(s["requests"]["packets_received"].as_u64() >= Some(6), "{s}");

    // /members: the leader knows everyone's progress, a follower names the leader.
    let m = get_json(admin(leader), "/members");
    assert_eq!(m["is_leader_view"], true);
    let members = m["members"].as_array().expect("members");
    assert_eq!(members.len(), 3, "{m}");
    for x in members {
        assert_eq!(x["voter"], true);
        assert!(x["peer_addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")));
        assert!(x["matched_index"].is_u64(), "{m}");
        assert!(x["lag"].as_u64().is_some_and(|l| l < 100), "{m}");
    }
    assert_eq!(
        members.iter().filter(|x| x["role"] == "leader").count(),
        1,
        "{m}"
    );
    let m = get_json(admin(follower), "/members");
    assert_eq!(
        (m["is_leader_view"].clone(), m["leader"].clone()),
        (false.into(), leader_id.into())
    );
    assert!(m["members"][0]["lag"].is_null());

    // /sessions: owned by the follower the client is connected to.
    let page = get_json(admin(follower), "/sessions?limit=10");
    let ours = page["sessions"]
        .as_array()
        .and_then(|v| v.iter().find(|s| s["id"] == hex(sid)))
        .unwrap_or_else(|| panic!("session {} missing: {page}", hex(sid)))
        .clone();
    assert_eq!(ours["ephemerals"], 1);
    assert_eq!(ours["owner"], follower_id);
    assert!(ours["timeout_ms"].as_u64().is_some_and(|t| t > 0));
    let on_leader = get_json(admin(leader), "/sessions");
    assert!(on_leader["sessions"][0]["owner"].is_null(), "{on_leader}");
    let empty = get_json(admin(leader), "/sessions?offset=1000");
    assert_eq!(empty["sessions"].as_array().map(Vec::len), Some(0));

    // /watches by path and by session, paged; only where the connection is.
    let w = get_json(admin(follower), "/watches?by=path");
    assert_eq!(w["total"], 1, "{w}");
    assert_eq!(w["watches"][0]["path"], "/admin-test");
    assert_eq!(w["watches"][0]["sessions"][0], hex(sid));
    assert!(w["total_watches"].as_u64() >= Some(2), "{w}");
    let w = get_json(admin(follower), "/watches?by=session&limit=1");
    assert_eq!(w["watches"][0]["session"], hex(sid));
    assert_eq!(w["watches"][0]["paths"][0], "/admin-test");
    assert_eq!(get_json(admin(leader), "/watches")["total"], 0);
    assert_eq!(http(admin(leader), "/watches?by=nothing").0, 400);

    // /tree: UTF-8 and base64 data, stat, children, bounds, errors.
    let t = get_json(admin(leader), "/tree?path=/admin-test&depth=1");
    let root = &t["tree"];
    assert_eq!(
        (root["data"].clone(), root["data_encoding"].clone()),
        ("hello".into(), "utf8".into())
    );
    assert_eq!(root["stat"]["num_children"], 2);
    let kids = root["children"].as_array().expect("children");
    let bin = kids.iter().find(|k| k["name"] == "bin").expect("bin child");
    assert_eq!(
        (bin["data"].clone(), bin["data_encoding"].clone()),
        ("/wAB".into(), "base64".into())
    );
    let eph = kids.iter().find(|k| k["name"] == "eph").expect("eph child");
    assert_eq!(eph["kind"], "ephemeral");
    assert_eq!(eph["stat"]["ephemeral_owner"], hex(sid));
    let t = get_json(admin(leader), "/tree?path=/admin-null&depth=0");
    assert!(t["tree"]["data"].is_null(), "null data shows as null: {t}");
    let t = get_json(admin(leader), "/tree?path=/&depth=10&limit=2");
    assert_eq!(
        (t["truncated"].clone(), t["count"].clone()),
        (true.into(), 2.into())
    );
    let t = get_json(admin(leader), "/tree?path=/admin-test&depth=0&max_data=2");
    assert_eq!(
        (
            t["tree"]["data"].clone(),
            t["tree"]["data_truncated"].clone()
        ),
        ("he".into(), true.into())
    );
    assert!(t["tree"]["children"].is_null());
    assert_eq!(http(admin(leader), "/tree?path=/nope").0, 404);
    assert_eq!(http(admin(leader), "/tree?path=nope").0, 400);

    // /digest: replicas at the same index agree; a write moves it.
    let digests = || -> Vec<(u64, String, u64)> {
        (0..3)
            .map(|i| {
                let d = get_json(admin(i), "/digest");
                (
                    d["applied_index"].as_u64().expect("applied_index"),
                    d["digest"].as_str().expect("digest").to_string(),
                    d["znodes"].as_u64().expect("znodes"),
                )
            })
            .collect()
    };
    let agreed = wait_for("equal digests", CONVERGE_TIMEOUT, || {
        let d = digests();
        (d.iter().all(|x| x.0 == d[0].0) && d.iter().all(|x| x.1 == d[0].1)).then(|| d[0].clone())
    });
    assert_eq!(agreed.1.len(), 40);
    assert_eq!(
        agreed.2, 8,
        "/, /zookeeper (+2), /admin-test (+2 children), /admin-null"
    );
    rt.block_on(zk.set_data("/admin-test", b"changed", None))
        .expect("set");
    let after = wait_for("digests after the write", CONVERGE_TIMEOUT, || {
        let d = digests();
        (d.iter().all(|x| x.0 == d[0].0 && x.1 == d[0].1) && d[0].0 > agreed.0)
            .then(|| d[0].clone())
    });
    assert_ne!(after.1, agreed.1, "a write must change the digest");

    // The four-letter words, raw on the client port.
    let f = client_addr(follower);
    let l = client_addr(leader);
    assert_eq!(four(f, "ruok"), "imok");
    assert_eq!(four(f, "isro"), "rw");
    let srvr_labels = [
        "Zookeeper version",
        "Latency min/avg/max",
        "Received",
        "Sent",
        "Connections",
        "Outstanding",
        "Zxid",
        "Mode",
        "Node count",
    ];
    assert_eq!(labels(&four(f, "srvr")), srvr_labels);
    assert!(four(f, "srvr").contains("Mode: follower\n"));
    assert!(four(l, "srvr").contains("Mode: leader\n"));
    let stat = four(f, "stat");
    assert!(
        stat.starts_with("Zookeeper version: 3.8.0-synod-"),
        "{stat}"
    );
    assert!(stat.contains("\nClients:\n /127.0.0.1:"), "{stat}");
    assert!(stat.contains("\nNode count: 8\n"), "{stat}");
    let mntr = four(l, "mntr");
    let keys = mntr_keys(&mntr);
    for k in [
        "zk_version",
        "zk_avg_latency",
        "zk_max_latency",
        "zk_min_latency",
        "zk_packets_received",
        "zk_packets_sent",
        "zk_num_alive_connections",
        "zk_outstanding_requests",
        "zk_server_state",
        "zk_znode_count",
        "zk_watch_count",
        "zk_ephemerals_count",
        "zk_approximate_data_size",
        "zk_open_file_descriptor_count",
        "zk_max_file_descriptor_count",
        "zk_followers",
        "zk_synced_followers",
    ] {
        assert!(keys.contains(k), "mntr lacks {k}:\n{mntr}");
    }
    assert!(mntr.contains("zk_server_state\tleader\n"), "{mntr}");
    assert!(mntr.contains("zk_followers\t2\n"), "{mntr}");
    assert!(mntr.contains("zk_synced_followers\t2\n"), "{mntr}");
    assert!(mntr.contains("zk_znode_count\t8\n"), "{mntr}");
    assert!(mntr.contains("zk_ephemerals_count\t1\n"), "{mntr}");
    let fm = four(f, "mntr");
    assert!(
        fm.contains("zk_server_state\tfollower\n") && !fm.contains("zk_followers"),
        "{fm}"
    );
    assert!(fm.contains("zk_num_alive_connections\t1\n"), "{fm}");
    let cons = four(f, "cons");
    assert!(cons.contains(&format!(",sid={},lop=", hex(sid))), "{cons}");
    assert!(
        cons.starts_with(" /127.0.0.1:") && cons.ends_with(")\n\n"),
        "{cons:?}"
    );
    let envi = four(f, "envi");
    assert!(
        envi.starts_with("Environment:\nzookeeper.version=3.8.0-synod-"),
        "{envi}"
    );
    let conf = four(f, "conf");
    assert!(
        conf.contains(&format!("clientPort={}\n", f.port())),
        "{conf}"
    );
    assert!(
        conf.contains(&format!("serverId={follower_id}\n")),
        "{conf}"
    );
    assert_eq!(conf.matches("server.").count(), 3, "{conf}");
    let wchs = four(f, "wchs");
    assert!(
        wchs.starts_with("1 connections watching 1 paths\nTotal watches:"),
        "{wchs}"
    );
    assert_eq!(four(f, "wchc"), format!("{}\n\t/admin-test\n\n", hex(sid)));
    assert_eq!(four(f, "wchp"), format!("/admin-test\n\t{}\n\n", hex(sid)));
    let dump = four(f, "dump");
    assert!(
        dump.contains(&format!(
            "Sessions with Ephemerals (1):\n{}:\n\t/admin-test/eph\n",
            hex(sid)
        )),
        "{dump}"
    );
    // Resetting counters is an operator's word: the client port refuses it even under `*`.
    assert_eq!(
        four(f, "srst"),
        "srst is not executed on the client port: an operator asks for it on the admin port \
         (/commands/stat_reset).\n"
    );
    assert_eq!(
        http(admin(follower), "/commands/srst?format=text").1,
        "Server stats reset.\n"
    );
    assert!(four(f, "srvr").contains("\nReceived: 0\n"));

    // The same words on the admin port: JSON by both names, and the raw text.
    for (short, long) in [
        ("ruok", "ruok"),
        ("srvr", "server_stats"),
        ("stat", "stats"),
        ("mntr", "monitor"),
        ("cons", "connections"),
        ("envi", "environment"),
        ("conf", "configuration"),
        ("wchs", "watch_summary"),
        ("wchc", "watches"),
        ("wchp", "watches_by_path"),
        ("dump", "dump"),
        ("isro", "is_read_only"),
    ] {
        for name in [short, long] {
            let j = get_json(admin(follower), &format!("/commands/{name}"));
            assert_eq!(j["command"], long, "{j}");
            assert!(j["error"].is_null(), "{j}");
        }
        let (code, text) = http(admin(follower), &format!("/commands/{short}?format=text"));
        assert_eq!(code, 200);
        assert!(!text.is_empty() || short == "wchc", "{short}");
    }
    assert_eq!(
        http(admin(follower), "/commands/ruok?format=text").1,
        "imok"
    );
    assert_eq!(http(admin(follower), "/commands/conf?format=text").1, conf);
    let j = get_json(admin(leader), "/commands/mntr");
    assert_eq!(
        (j["server_state"].clone(), j["followers"].clone()),
        ("leader".into(), 2.into())
    );
    assert!(j["avg_latency"].is_f64(), "{j}");
    let j = get_json(admin(follower), "/commands/wchp");
    assert_eq!(j["path_to_session_ids"]["/admin-test"][0], sid);
    let j = get_json(admin(follower), "/commands/dump");
    assert_eq!(
        j["session_id_to_ephemeral_paths"][sid.to_string()][0],
        "/admin-test/eph"
    );
    let j = get_json(admin(follower), "/commands/cons");
    assert_eq!(j["connections"][0]["session_id"], hex(sid));
    assert_eq!(http(admin(follower), "/commands/nope").0, 404);
    assert_eq!(
        get_json(admin(follower), "/commands")["commands"]
            .as_array()
            .map(Vec::len),
        Some(14)
    );

    // The dashboard's files.
    let (code, html) = http(admin(follower), "/ui");
    assert_eq!(code, 200);
    assert!(html.contains("<title>synod dashboard</title>"));
    for asset in ["/ui/app.js", "/ui/style.css"] {
        assert_eq!(http(admin(follower), asset).0, 200, "{asset}");
    }

    // No quorum: /ready says why, within its timeout; and recovers.
    let others: Vec<usize> = (0..3).filter(|&i| i != follower).collect();
    for &i in &others {
        ens.pause(i).expect("pause");
    }
    // Answered (the request's read timeout, IO_TIMEOUT, bounds the wait), and with the wait
    // asked for, not the default 2 s.
    let (code, body) = http(admin(follower), "/ready?timeout_ms=1000");
    // Seen once (a fresh-clone CI run, 2026-12-04): 200 at once, with both others paused. Not
    // reproduced since; the logs say which node answered the read index.
    assert_eq!(
        code,
        503,
        "{body}\nleader at the start: node {leader_id}; follower asked: node {follower_id}\n{}",
        ens.logs()
    );
    let r: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(r["ready"], false);
    // One of the reasons a node without a quorum gives; the one of a read index that did not
    // come names the wait asked for, not the default 2 s.
    let reason = r["reason"].as_str().unwrap_or_default();
    let no_read_index = reason.starts_with("no read index from leader");
    assert!(
        no_read_index || reason == "no leader known" || reason.starts_with("not caught up"),
        "{r}"
    );
    assert!(
        !no_read_index || !reason.contains("within") || reason.ends_with("within 1s"),
        "{r}"
    );
    eprintln!("/ready without a quorum: {body}");
    for &i in &others {
        ens.resume(i).expect("resume");
    }
    wait_for("/ready again", CONVERGE_TIMEOUT, || {
        (http(admin(follower), "/ready?timeout_ms=1000").0 == 200).then_some(())
    });
    drop(rt);
    eprintln!(
        "admin_endpoints_and_four_letter_words: {:.1?}",
        started.elapsed()
    );
}

/// `mntr`, `srvr` and `stat` against a real ZooKeeper 3.8 ensemble: synod's mntr keys are
/// ZooKeeper's (plus `zk_followers`, the 3.4 name of `zk_learners` that many scripts read), and
/// the srvr/stat lines come in ZooKeeper's order, on the leader and on a follower.
#[test]
fn four_letter_formats_match_zookeeper() {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let rt = runtime();
    let zk = ZkEnsemble::start(3).expect("start a 3-node ZooKeeper ensemble");
    let synod =
        SynodEnsemble::start(synod_bin(), 3, &all_words()).expect("start a 3-node synod cluster");
    let zl = zk.wait_for_leader(CONVERGE_TIMEOUT).expect("zk leader");
    let sl = synod
        .wait_for_leader(CONVERGE_TIMEOUT)
        .expect("synod leader");
    // One session on each follower, so that stat lists a client.
    let zf = (zl + 1) % 3;
    let sf = (sl + 1) % 3;
    let _clients: Vec<Client> = [zk.addrs()[zf], synod.addrs()[sf]]
        .iter()
        .map(|a| {
            rt.block_on(Client::connect(
                &a.to_string(),
                ConnectOptions::default().connect_timeout(Duration::from_secs(20)),
            ))
            .expect("connect")
        })
        .collect();
    for (z, s, role) in [(zl, sl, "leader"), (zf, sf, "follower")] {
        let zm = four(zk.addrs()[z], "mntr");
        let sm = four(synod.addrs()[s], "mntr");
        let zkeys = mntr_keys(&zm);
        let skeys = mntr_keys(&sm);
        let extra: Vec<&String> = skeys
            .iter()
            .filter(|k| !zkeys.contains(*k) && k.as_str() != "zk_followers")
            .collect();
        assert!(
            extra.is_empty(),
            "{role}: synod mntr keys ZooKeeper lacks: {extra:?}"
        );
        assert!(zm.contains(&format!("zk_server_state\t{role}\n")));
        assert!(sm.contains(&format!("zk_server_state\t{role}\n")));
        eprintln!(
            "{role}: synod mntr has {} of ZooKeeper's {} keys",
            skeys.len(),
            zkeys.len()
        );
        let zs = four(zk.addrs()[z], "srvr");
        let ss = four(synod.addrs()[s], "srvr");
        // ZooKeeper's leader adds a proposal-size line synod does not have.
        let zlabels: Vec<String> = labels(&zs)
            .into_iter()
            .filter(|l| l != "Proposal sizes last/min/max")
            .collect();
        assert_eq!(labels(&ss), zlabels, "srvr on the {role}:\n{zs}\n---\n{ss}");
    }
    let zs = four(zk.addrs()[zf], "stat");
    let ss = four(synod.addrs()[sf], "stat");
    assert_eq!(labels(&zs), labels(&ss), "stat:\n{zs}\n---\n{ss}");
    let client_line = |s: &str| {
        s.lines()
            .find(|l| l.starts_with(" /127.0.0.1:") && l.contains("recved="))
            .map(|l| {
                l.split_once('(')
                    .map(|(_, r)| r.split('=').next().unwrap_or_default().to_string())
            })
    };
    assert_eq!(
        client_line(&zs),
        client_line(&ss),
        "stat client lines:\n{zs}\n---\n{ss}"
    );
    for word in ["wchs", "ruok", "isro"] {
        let z = four(zk.addrs()[zf], word);
        let s = four(synod.addrs()[sf], word);
        let shape = |t: &str| {
            t.chars()
                .filter(|c| !c.is_ascii_digit())
                .collect::<String>()
        };
        assert_eq!(shape(&z), shape(&s), "{word}:\n{z}\n---\n{s}");
    }
    drop(rt);
}

/// By default the client port answers only `srvr`, `ruok`, `mntr` and `isro`; any other word
/// gets ZooKeeper's refusal and reveals nothing (as ZooKeeper's default `4lw.commands.whitelist`).
#[test]
fn only_whitelisted_four_letter_words_are_answered_by_default() {
    let ens = SynodEnsemble::start(synod_bin(), 1, &[]).expect("start a 1-node synod cluster");
    let addr = ens.addrs()[0];
    assert_eq!(four(addr, "ruok"), "imok");
    assert!(four(addr, "srvr").contains("Mode: "), "srvr is answered");
    assert!(
        four(addr, "mntr").contains("zk_version"),
        "mntr is answered"
    );
    for word in [
        "dump", "cons", "envi", "conf", "stat", "wchc", "wchp", "wchs",
    ] {
        assert_eq!(
            four(addr, word),
            format!("{word} is not executed because it is not in the whitelist.\n"),
            "{word}"
        );
    }
    for word in ["srst", "crst"] {
        assert!(
            four(addr, word).starts_with(&format!("{word} is not executed on the client port")),
            "{word}"
        );
    }
}
