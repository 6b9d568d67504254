//! Bad input and overload against a real 3-node cluster (DESIGN.md §1.7 and §8; issue 4): random
//! and mutated bytes on live connections, 1,000 connections from one address, 1,000 live sessions
//! watching one node, 10,000 pipelined writes, a 10,000-op multi, a node with 100,000 children,
//! data over the limit, and fifty clients that never read while their watches fire.
//!
//! Each phase must end with a clear error or a closed connection for the offender. Meanwhile a
//! bystander session on another node keeps writing: every write it had acknowledged is read back
//! at the end, and its worst latency per phase is bounded. A sampler thread reads every node's
//! resident memory (`VmRSS`) every 50 ms; each phase's growth and the whole run's peak are
//! bounded, and every node must still be alive and serving afterwards. One table row per phase
//! is printed (`cargo test -p synod-server --test overload -- --nocapture`).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use futures_util::stream::{self, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use synod_client::{AddWatchMode, Client, ConnectOptions, CreateMode, Error, ErrorCode, Op};
use synod_proto::frame::encode_frame;
use synod_proto::records::{
    AddWatchRequest, AuthPacket, CheckVersionRequest, ConnectRequest, ConnectRequestBase,
    CreateRequest, DeleteRequest, ExistsRequest, GetChildrenRequest, GetDataRequest, SetAclRequest,
    SetDataRequest, SetWatches2,
};
use synod_proto::{Acl, MultiOp, Request, RequestPacket};
use synod_testkit::{runtime, Ensemble, SynodEnsemble};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// `n` nodes of the `synod` binary under test on free ports, none started yet.
fn new_cluster(n: usize) -> SynodEnsemble {
    SynodEnsemble::unstarted(Path::new(env!("CARGO_BIN_EXE_synod")), n).expect("lay out a cluster")
}

/// The node every phase abuses (default limits: 60 connections per address, 1 MiB frames).
const TARGET: usize = 0;
/// The bystander's node.
const BYSTANDER: usize = 1;
/// Started with a per-address cap of 1,100, so one address can hold 1,000 live sessions.
const FANOUT: usize = 2;

/// No node's resident memory may ever exceed this (debug build: an idle node holds ~35 MiB; the
/// run stores ~130,000 znodes and 16 MiB of values, and peaked at ~240 MiB when measured).
const RSS_CEILING_KIB: u64 = 512 * 1024;
/// Phases that store nothing may not grow any node's resident memory by more than this.
const TRANSIENT_GROWTH_KIB: u64 = 64 * 1024;
/// The bystander's slowest write in any phase.
const BYSTANDER_MAX_LATENCY: Duration = Duration::from_secs(5);

/// `VmRSS` of a live process in KiB; `None` once it has exited (a zombie has no `VmRSS`).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Samples every node's RSS every 50 ms and keeps the maximum since the last [`Sampler::take`].
struct Sampler {
    pids: Vec<u32>,
    peak: Arc<Mutex<Vec<u64>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(pids: Vec<u32>) -> Sampler {
        let peak = Arc::new(Mutex::new(vec![0; pids.len()]));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s, ids) = (peak.clone(), stop.clone(), pids.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let now: Vec<u64> = ids.iter().map(|&id| rss_kib(id).unwrap_or(0)).collect();
                let mut peak = p.lock().unwrap_or_else(PoisonError::into_inner);
                for (m, n) in peak.iter_mut().zip(now) {
                    *m = (*m).max(n);
                }
                drop(peak);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Sampler {
            pids,
            peak,
            stop,
            thread: Some(thread),
        }
    }

    /// The current RSS of every node; panics if one has died.
    fn now(&self) -> Vec<u64> {
        self.pids
            .iter()
            .enumerate()
            .map(|(i, &pid)| rss_kib(pid).unwrap_or_else(|| panic!("node {} died", i + 1)))
            .collect()
    }

    /// The peak of every node since the last call, and a fresh start for the next phase.
    fn take(&self) -> Vec<u64> {
        let now = self.now();
        let mut peak = self.peak.lock().unwrap_or_else(PoisonError::into_inner);
        let out = peak.iter().zip(&now).map(|(a, b)| (*a).max(*b)).collect();
        *peak = now;
        out
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A session on the bystander's node that keeps creating sequential nodes under `/by`, and
/// remembers which it was told succeeded, with the slowest answer of the current phase.
struct Bystander {
    acked: Mutex<BTreeMap<String, Vec<u8>>>,
    worst: Mutex<Duration>,
    failures: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Bystander {
    async fn run(self: Arc<Self>, c: Client) {
        let mut i = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            let data = format!("bystander {i}").into_bytes();
            let t = Instant::now();
            let r = tokio::time::timeout(
                Duration::from_secs(30),
                c.create("/by/n-", &data, CreateMode::PersistentSequential),
            )
            .await;
            let took = t.elapsed();
            {
                let mut w = self.worst.lock().unwrap_or_else(PoisonError::into_inner);
                *w = (*w).max(took);
            }
            match r {
                Ok(Ok(path)) => {
                    self.acked
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(path, data);
                }
                Ok(Err(e)) => self.fail(format!("write {i}: {e}")),
                Err(_) => self.fail(format!("write {i}: no answer in 30 s")),
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = c.close().await;
    }

    fn fail(&self, what: String) {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(what);
    }

    fn take_worst(&self) -> Duration {
        std::mem::take(&mut *self.worst.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Everything a phase needs.
struct Ctx {
    cluster: SynodEnsemble,
    addrs: Vec<SocketAddr>,
}

impl Ctx {
    async fn client(&self, idx: usize) -> Client {
        Client::connect(
            &self.addrs[idx].to_string(),
            ConnectOptions::default().connect_timeout(Duration::from_secs(10)),
        )
        .await
        .expect("connect")
    }

    /// Four sessions spread over the three nodes, for load from several directions.
    async fn writers(&self) -> [Client; 4] {
        [
            self.client(TARGET).await,
            self.client(TARGET).await,
            self.client(BYSTANDER).await,
            self.client(FANOUT).await,
        ]
    }

    /// A fresh client on node `idx` creates, reads and deletes an ephemeral: the node serves.
    async fn serves(&self, idx: usize) {
        let c = self.client(idx).await;
        let p = format!("/serves-{idx}");
        c.create(&p, b"ok", CreateMode::Ephemeral)
            .await
            .expect("create on a node that must still serve");
        assert_eq!(&c.get_data(&p).await.expect("read back").0[..], b"ok");
        c.close().await.expect("close");
    }
}

/// Reads one frame from `s`: `Ok(Some(body))`, `Ok(None)` on a clean close.
async fn read_frame(s: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<Option<BytesMut>> {
    loop {
        if buf.len() >= 4 {
            let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
            assert!(
                (0..=(8 << 20)).contains(&len),
                "the server sent a frame of length {len}"
            );
            if buf.len() >= 4 + len as usize {
                buf.advance(4);
                return Ok(Some(buf.split_to(len as usize)));
            }
        }
        if s.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

/// `(xid, err)` of a reply frame.
fn reply_header(frame: &[u8]) -> (i32, i32) {
    assert!(
        frame.len() >= 16,
        "short reply header: {} bytes",
        frame.len()
    );
    let xid = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
    let err = i32::from_be_bytes([frame[12], frame[13], frame[14], frame[15]]);
    (xid, err)
}

fn connect_request(timeout: i32, session_id: i64, passwd: Vec<u8>) -> ConnectRequest {
    ConnectRequest {
        base: ConnectRequestBase {
            timeout,
            session_id,
            passwd: passwd.into(),
            ..Default::default()
        },
        read_only: false,
    }
}

/// Connects from `from` (any loopback address) and performs the handshake of a new session.
/// `None` if the server refused the connection (closed it) before answering.
async fn raw_session(from: [u8; 4], to: SocketAddr) -> Option<TcpStream> {
    let sock = TcpSocket::new_v4().expect("socket");
    sock.bind(SocketAddr::from((from, 0))).expect("bind source");
    let mut s = sock.connect(to).await.ok()?;
    let mut b = BytesMut::new();
    encode_frame(&connect_request(10_000, 0, vec![0; 16]), &mut b);
    s.write_all(&b).await.ok()?;
    let mut buf = BytesMut::new();
    match read_frame(&mut s, &mut buf).await {
        Ok(Some(_)) => Some(s),
        _ => None,
    }
}

fn send(req: Request, xid: i32, out: &mut BytesMut) {
    encode_frame(&RequestPacket { xid, request: req }, out);
}

fn open_acl() -> Vec<Acl> {
    vec![Acl::new(0x1f, "world", "anyone")]
}

/// A valid request of a random kind, for mutation.
fn valid_request(rng: &mut StdRng) -> Request {
    let path = format!("/fz/{}", rng.random_range(0..4));
    let data: Vec<u8> = (0..rng.random_range(0..64)).map(|_| rng.random()).collect();
    let create = CreateRequest {
        path: path.clone(),
        data: Some(data.clone().into()),
        acl: open_acl(),
        flags: rng.random_range(0..4),
    };
    match rng.random_range(0..12) {
        0 => Request::Create(create),
        1 => Request::SetData(SetDataRequest {
            path,
            data: Some(data.into()),
            version: -1,
        }),
        2 => Request::Multi(vec![
            MultiOp::Create(create),
            MultiOp::SetData(SetDataRequest {
                path: path.clone(),
                data: Some(data.into()),
                version: -1,
            }),
            MultiOp::Check(CheckVersionRequest { path, version: 3 }),
        ]),
        3 => Request::GetChildren(GetChildrenRequest { path, watch: true }),
        4 => Request::Exists(ExistsRequest { path, watch: true }),
        5 => Request::GetData(GetDataRequest { path, watch: true }),
        6 => Request::Delete(DeleteRequest { path, version: -1 }),
        7 => Request::SetAcl(SetAclRequest {
            path,
            acl: open_acl(),
            version: -1,
        }),
        8 => Request::SetWatches2(SetWatches2 {
            relative_zxid: rng.random(),
            data_watches: vec![path.clone()],
            exist_watches: vec![path.clone()],
            child_watches: vec!["/fz".into()],
            persistent_watches: vec![path],
            persistent_recursive_watches: vec!["/fz".into()],
        }),
        9 => Request::AddWatch(AddWatchRequest {
            path,
            mode: rng.random_range(0..3),
        }),
        10 => Request::Auth(AuthPacket {
            auth_type: 0,
            scheme: "digest".into(),
            auth: data.into(),
        }),
        _ => Request::Check(CheckVersionRequest { path, version: 0 }),
    }
}

/// What the server did with one piece of bad input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// It closed the connection.
    Closed,
    /// It answered (an error or, for a mutation that stayed valid, a result), then answered a
    /// ping on the same connection.
    Answered,
    /// Raw garbage whose length prefix announced more than was sent: the server waits for the
    /// rest, as ZooKeeper does, and the test hung up.
    Waiting,
}

/// Sends one piece of bad input on a fresh connection and classifies the server's reaction.
async fn one_bad_input(to: SocketAddr, kind: u32, seed: u64) -> Outcome {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut s = match kind {
        // Garbage, or a mutated ConnectRequest, before the handshake.
        0 | 4 => TcpStream::connect(to).await.expect("connect"),
        _ => match raw_session([127, 0, 0, 1], to).await {
            Some(s) => s,
            None => panic!("kind {kind} seed {seed}: handshake refused"),
        },
    };
    let mut out = BytesMut::new();
    match kind {
        0 | 1 => {
            let n = rng.random_range(1..2048);
            out.extend((0..n).map(|_| rng.random::<u8>()));
        }
        2 => {
            // A well-framed record with a random header and body.
            let n = rng.random_range(0..512);
            let mut body = BytesMut::new();
            body.extend_from_slice(&rng.random::<i32>().to_be_bytes());
            let op: i32 = *[
                1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 100,
                101, 103, 104, 105, 106, 107, -11, 77, -1,
            ]
            .get(rng.random_range(0..31))
            .unwrap_or(&1);
            body.extend_from_slice(&op.to_be_bytes());
            body.extend((0..n).map(|_| rng.random::<u8>()));
            out.extend_from_slice(&(body.len() as i32).to_be_bytes());
            out.extend_from_slice(&body);
        }
        _ => {
            // A valid record, mutated: bytes flipped, cut short or extended; the length prefix
            // still matches what is sent, so the record decoder sees it.
            let mut frame = BytesMut::new();
            if kind == 4 {
                let passwd_len = rng.random_range(0..40);
                let req = connect_request(
                    rng.random(),
                    rng.random(),
                    (0..passwd_len).map(|_| rng.random()).collect(),
                );
                encode_frame(&req, &mut frame);
            } else {
                send(
                    valid_request(&mut rng),
                    rng.random_range(1..1000),
                    &mut frame,
                );
            }
            let mut body = frame.split_off(4).to_vec();
            match rng.random_range(0..3) {
                0 => {
                    for _ in 0..rng.random_range(1..6) {
                        let i = rng.random_range(0..body.len());
                        body[i] = rng.random();
                    }
                }
                1 => body.truncate(rng.random_range(0..body.len())),
                _ => body.extend((0..rng.random_range(1..64)).map(|_| rng.random::<u8>())),
            }
            out.extend_from_slice(&(body.len() as i32).to_be_bytes());
            out.extend_from_slice(&body);
        }
    }
    if s.write_all(&out).await.is_err() {
        return Outcome::Closed;
    }
    // A ping after it: answered only if the connection is still in a sane state.
    let ping_sent = kind != 0 && kind != 4 && {
        let mut p = BytesMut::new();
        send(Request::Ping, -2, &mut p);
        s.write_all(&p).await.is_ok()
    };
    let wait = if kind <= 1 { 2 } else { 10 };
    let mut buf = BytesMut::new();
    let r = tokio::time::timeout(Duration::from_secs(wait), async {
        loop {
            match read_frame(&mut s, &mut buf).await {
                Ok(Some(f)) if ping_sent && f.len() >= 16 && reply_header(&f).0 == -2 => {
                    return Outcome::Answered
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return Outcome::Closed,
            }
        }
    })
    .await;
    match r {
        Ok(o) => o,
        Err(_) if kind <= 1 => Outcome::Waiting,
        Err(_) => panic!(
            "kind {kind} seed {seed}: neither answered nor closed within {wait} s ({} bytes sent)",
            out.len()
        ),
    }
}

/// Phase: 1,200 pieces of random and mutated input (`SYNOD_FUZZ_CASES`; `SYNOD_FUZZ_SEED`
/// replays a run), 16 connections at a time.
async fn random_bytes(ctx: &Ctx) -> String {
    let seed: u64 = std::env::var("SYNOD_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    let cases: u64 = std::env::var("SYNOD_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1200);
    println!("random-bytes: SYNOD_FUZZ_SEED={seed} SYNOD_FUZZ_CASES={cases}");
    let to = ctx.addrs[TARGET];
    let outcomes: Vec<(u32, Outcome)> = stream::iter(0..cases)
        .map(|i| async move {
            let kind = (i % 5) as u32;
            (kind, one_bad_input(to, kind, seed.wrapping_add(i)).await)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut by_kind: BTreeMap<(u32, Outcome), usize> = BTreeMap::new();
    for o in outcomes {
        *by_kind.entry(o).or_default() += 1;
    }
    for kind in 2..5 {
        assert!(
            !by_kind.contains_key(&(kind, Outcome::Waiting)),
            "framed input left waiting"
        );
    }
    let count = |o: Outcome| {
        by_kind
            .iter()
            .filter(|((_, x), _)| *x == o)
            .map(|(_, n)| n)
            .sum::<usize>()
    };
    format!(
        "{} closed, {} answered, {} waiting for the rest of a frame",
        count(Outcome::Closed),
        count(Outcome::Answered),
        count(Outcome::Waiting)
    )
}

/// Phase: 1,000 connections at once from 127.0.0.1 to a node that allows 60 per address.
async fn thousand_connections(ctx: &Ctx) -> String {
    let to = ctx.addrs[TARGET];
    let attempts: Vec<Option<TcpStream>> = stream::iter(0..1000)
        .map(|_| async move {
            tokio::time::timeout(Duration::from_secs(10), raw_session([127, 0, 0, 1], to))
                .await
                .expect("a connection beyond the cap was neither served nor closed in 10 s")
        })
        .buffer_unordered(1000)
        .collect()
        .await;
    let held: Vec<TcpStream> = attempts.into_iter().flatten().collect();
    assert!(
        (50..=60).contains(&held.len()),
        "{} of 1,000 connections from one address got a session (cap 60)",
        held.len()
    );
    // While they are held: another address still gets in and is served.
    let mut other = raw_session([127, 0, 0, 2], to)
        .await
        .expect("a session from 127.0.0.2 while 127.0.0.1 is at its cap");
    let mut p = BytesMut::new();
    send(Request::Ping, -2, &mut p);
    other.write_all(&p).await.expect("ping");
    let mut buf = BytesMut::new();
    let f = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut other, &mut buf))
        .await
        .expect("ping answered in time")
        .expect("read")
        .expect("a frame");
    assert_eq!(reply_header(&f).0, -2);
    let n = held.len();
    drop(held);
    // Once they are gone, the address gets in again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_secs(2), raw_session([127, 0, 0, 1], to)).await
        {
            break;
        }
        assert!(Instant::now() < deadline, "127.0.0.1 never got back in");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    format!("{n} got a session, {} refused (closed)", 1000 - n)
}

/// Phase: 1,000 live sessions from one address (cap raised) each watch `/fan`; one write fires
/// 1,000 notifications; every session then closes.
async fn thousand_sessions(ctx: &Ctx) -> String {
    let to = ctx.addrs[FANOUT];
    let writer = ctx.client(BYSTANDER).await;
    writer
        .create("/fan", b"0", CreateMode::Persistent)
        .await
        .expect("create /fan");
    writer.sync("/fan").await.expect("sync");
    let sessions: Vec<TcpStream> = stream::iter(0..1000)
        .map(|_| async move {
            let mut s =
                tokio::time::timeout(Duration::from_secs(30), raw_session([127, 0, 0, 1], to))
                    .await
                    .expect("session in time")
                    .expect("a session under the raised cap");
            let mut b = BytesMut::new();
            let req = Request::Exists(ExistsRequest {
                path: "/fan".into(),
                watch: true,
            });
            send(req, 1, &mut b);
            s.write_all(&b).await.expect("exists");
            let mut buf = BytesMut::new();
            let f = read_frame(&mut s, &mut buf)
                .await
                .expect("read")
                .expect("exists answered");
            assert_eq!(reply_header(&f), (1, 0));
            s
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let t = Instant::now();
    writer
        .set_data("/fan", b"1", None)
        .await
        .expect("fire the watches");
    let notified: Vec<TcpStream> = stream::iter(sessions)
        .map(|mut s| async move {
            let mut buf = BytesMut::new();
            let f = tokio::time::timeout(Duration::from_secs(20), read_frame(&mut s, &mut buf))
                .await
                .expect("notification in time")
                .expect("read")
                .expect("a notification");
            assert_eq!(reply_header(&f).0, -1, "expected a watch notification");
            s
        })
        .buffer_unordered(1000)
        .collect()
        .await;
    let fanout = t.elapsed();
    let n = notified.len();
    let before = ctx.cluster.status_json(FANOUT).expect("status")["sessions"]
        .as_u64()
        .unwrap_or(0);
    stream::iter(notified)
        .for_each_concurrent(64, |mut s| async move {
            let mut b = BytesMut::new();
            send(Request::CloseSession, 2, &mut b);
            if s.write_all(&b).await.is_ok() {
                let mut buf = BytesMut::new();
                let _ = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut s, &mut buf))
                    .await;
            }
        })
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        let now = ctx.cluster.status_json(FANOUT).expect("status")["sessions"]
            .as_u64()
            .unwrap_or(u64::MAX);
        if now + 1000 <= before || Instant::now() > deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        after + 1000 <= before,
        "sessions after closing 1,000: {after} (before: {before})"
    );
    writer.close().await.expect("close");
    format!(
        "{n} sessions notified within {} ms of the write; all closed",
        fanout.as_millis()
    )
}

/// Phase: 10,000 creates pipelined on one connection, all answered in order and all present.
async fn pipelined_writes(ctx: &Ctx) -> String {
    let c = ctx.client(TARGET).await;
    c.create("/pw", b"", CreateMode::Persistent)
        .await
        .expect("create /pw");
    c.close().await.expect("close");
    let mut s = raw_session([127, 0, 0, 1], ctx.addrs[TARGET])
        .await
        .expect("session");
    let mut out = BytesMut::new();
    for xid in 1..=10_000 {
        let req = Request::Create(CreateRequest {
            path: format!("/pw/n{xid:05}"),
            data: Some(format!("{xid}").into_bytes().into()),
            acl: open_acl(),
            flags: 0,
        });
        send(req, xid, &mut out);
    }
    let t = Instant::now();
    let (mut rd, mut wr) = s.split();
    let writer = async { wr.write_all(&out).await.expect("write requests") };
    let reader = async {
        let mut buf = BytesMut::new();
        let mut next = 1;
        while next <= 10_000 {
            assert!(
                rd.read_buf(&mut buf).await.expect("read replies") > 0,
                "closed after {next} replies"
            );
            while buf.len() >= 4 {
                let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                if buf.len() < 4 + len {
                    break;
                }
                buf.advance(4);
                let f = buf.split_to(len);
                assert_eq!(reply_header(&f), (next, 0), "reply {next}");
                next += 1;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), async {
        tokio::join!(writer, reader)
    })
    .await
    .expect("10,000 pipelined creates answered in 120 s");
    let took = t.elapsed();
    let check = ctx.client(FANOUT).await;
    assert_eq!(
        check.get_all_children_number("/pw").await.expect("count"),
        10_000
    );
    check.close().await.expect("close");
    format!(
        "10,000 answered in order in {} ms; all present on another node",
        took.as_millis()
    )
}

/// Phase: multis of 10,000 ops — one that succeeds, one whose last op fails (nothing applied),
/// and one larger than the frame limit (connection closed, nothing applied).
async fn big_multi(ctx: &Ctx) -> String {
    let c = ctx.client(TARGET).await;
    let other = ctx.client(FANOUT).await;
    c.create("/mx", b"", CreateMode::Persistent)
        .await
        .expect("create /mx");
    let names: Vec<String> = (0..10_000).map(|i| format!("/mx/c{i:05}")).collect();
    let t = Instant::now();
    let results = c
        .multi(
            names
                .iter()
                .map(|p| Op::create(p, &b"v"[..], CreateMode::Persistent))
                .collect(),
        )
        .await
        .expect("a 10,000-op multi");
    let ok_ms = t.elapsed().as_millis();
    assert_eq!(results.len(), 10_000);
    for (r, p) in results.iter().zip(&names) {
        assert!(
            matches!(r, synod_client::MultiResult::Create { path, .. } if path == p),
            "result for {p}: {r:?}"
        );
    }
    assert_eq!(
        other.get_all_children_number("/mx").await.expect("count"),
        10_000
    );
    // 9,999 setData and a failing check: all or nothing.
    let mut ops: Vec<Op> = names[..9_999]
        .iter()
        .map(|p| Op::set_data(p, &b"changed"[..], None))
        .collect();
    ops.push(Op::check(&names[0], 99));
    match c.multi(ops).await {
        Err(Error::Multi {
            index,
            code,
            results,
        }) => {
            assert_eq!((index, code), (9_999, ErrorCode::BadVersion));
            assert_eq!(results.len(), 10_000);
        }
        other => panic!("a multi with a failing last op: {other:?}"),
    }
    for p in [&names[0], &names[5_000], &names[9_998]] {
        let (data, stat) = other.get_data(p).await.expect("read");
        assert_eq!((&data[..], stat.version), (&b"v"[..], 0), "{p} changed");
    }
    // 10,000 setData of 200 bytes: over 2 MiB, beyond the 1 MiB frame limit.
    let ops: Vec<Op> = names
        .iter()
        .map(|p| Op::set_data(p, vec![b'x'; 200], None))
        .collect();
    let r = c.multi(ops).await;
    assert!(
        matches!(r, Err(Error::ConnectionLoss)),
        "an oversized multi: {r:?}"
    );
    let (data, stat) = other.get_data(&names[1]).await.expect("read");
    assert_eq!((&data[..], stat.version), (&b"v"[..], 0));
    // The session survived its connection; its next multi works.
    c.multi(vec![Op::delete(&names[0], None)])
        .await
        .expect("the same session after the oversized multi");
    c.close().await.expect("close");
    other.close().await.expect("close");
    format!("10,000 creates in {ok_ms} ms; failing multi applied nothing; 2 MiB multi closed")
}

/// Phase: a node with 100,000 children, created by 100 multis of 1,000 from 4 sessions.
async fn wide_node(ctx: &Ctx) -> String {
    let c = ctx.client(TARGET).await;
    c.create("/wide", b"", CreateMode::Persistent)
        .await
        .expect("create /wide");
    let writers = ctx.writers().await;
    let t = Instant::now();
    stream::iter(0..100usize)
        .for_each_concurrent(4, |batch| {
            let w = &writers[batch % 4];
            async move {
                let ops = (0..1000)
                    .map(|i| {
                        let p = format!("/wide/c{:06}", batch * 1000 + i);
                        Op::create(&p, &b""[..], CreateMode::Persistent)
                    })
                    .collect();
                w.multi(ops).await.expect("a batch of 1,000 children");
            }
        })
        .await;
    let create_ms = t.elapsed().as_millis();
    for w in writers {
        w.close().await.expect("close");
    }
    let reader = ctx.client(FANOUT).await;
    let (children, stat) = reader.get_children2("/wide").await.expect("getChildren2");
    assert_eq!((children.len(), stat.num_children), (100_000, 100_000));
    let set: HashSet<&str> = children.iter().map(String::as_str).collect();
    assert_eq!(set.len(), 100_000);
    assert!(set.contains("c000000") && set.contains("c099999"));
    assert_eq!(
        reader
            .get_all_children_number("/wide")
            .await
            .expect("count"),
        100_000
    );
    // A child watch on it fires; a sequential child takes the next cversion; it cannot be
    // deleted while it has children.
    let (_, _, watch) = reader
        .get_children_watch("/wide")
        .await
        .expect("watch children");
    let seq = c
        .create("/wide/s-", b"", CreateMode::PersistentSequential)
        .await
        .expect("sequential child");
    assert_eq!(seq, "/wide/s-0000100000");
    let ev = tokio::time::timeout(Duration::from_secs(10), watch)
        .await
        .expect("child watch fired in time");
    assert_eq!(ev.event_type, synod_client::EventType::NodeChildrenChanged);
    assert!(matches!(
        c.delete("/wide", None).await,
        Err(Error::NotEmpty)
    ));
    reader.close().await.expect("close");
    c.close().await.expect("close");
    format!("100,000 children created in {create_ms} ms; listed, counted, watched")
}

/// Phase: data over the limit is refused by closing the connection and leaves nothing behind;
/// data of exactly 1 MiB is stored, replicated and read back; sixteen such values at once go
/// through group commit and replication.
async fn data_over_limit(ctx: &Ctx) -> String {
    let c = ctx.client(TARGET).await;
    let other = ctx.client(FANOUT).await;
    // The limit is on the whole request frame (`--max-frame-bytes`, default 1 MiB + 1 KiB, so a
    // full MiB of data still fits with its path); ZooKeeper 3.8 closes at jute.maxbuffer.
    let over = vec![b'o'; synod_proto::DEFAULT_MAX_FRAME + 1];
    let r = c.create("/big", &over, CreateMode::Persistent).await;
    assert!(matches!(r, Err(Error::ConnectionLoss)), "create: {r:?}");
    assert_eq!(other.exists("/big").await.expect("exists"), None);
    c.create("/big", b"small", CreateMode::Persistent)
        .await
        .expect("the same session, after");
    let r = c.set_data("/big", &over, None).await;
    assert!(matches!(r, Err(Error::ConnectionLoss)), "setData: {r:?}");
    let (data, stat) = other.get_data("/big").await.expect("read");
    assert_eq!((&data[..], stat.version), (&b"small"[..], 0));
    let half = vec![b'h'; 600 * 1024];
    let r = c
        .multi(vec![
            Op::create("/big/a", half.clone(), CreateMode::Persistent),
            Op::create("/big/b", half, CreateMode::Persistent),
        ])
        .await;
    assert!(matches!(r, Err(Error::ConnectionLoss)), "multi: {r:?}");
    assert_eq!(other.exists("/big/a").await.expect("exists"), None);
    // Just under the limit, sixteen at once from four sessions on three nodes.
    let writers = ctx.writers().await;
    let t = Instant::now();
    stream::iter(0..16usize)
        .for_each_concurrent(16, |i| {
            let w = &writers[i % 4];
            async move {
                let v = vec![i as u8; 1 << 20];
                w.create(&format!("/big/v{i:02}"), &v, CreateMode::Persistent)
                    .await
                    .expect("a value of exactly 1 MiB");
            }
        })
        .await;
    let ms = t.elapsed().as_millis();
    for node in 0..3 {
        let r = ctx.client(node).await;
        for i in 0..16usize {
            let (data, _) = r.get_data(&format!("/big/v{i:02}")).await.expect("read");
            assert!(
                data.len() == 1 << 20 && data.iter().all(|&b| b == i as u8),
                "value {i} on node {}",
                node + 1
            );
        }
        r.close().await.expect("close");
    }
    for w in writers {
        w.close().await.expect("close");
    }
    c.close().await.expect("close");
    other.close().await.expect("close");
    format!("3 oversized requests closed, nothing applied; 16 MiB stored in {ms} ms, same on all")
}

/// Phase: fifty sessions set a recursive watch and then never read while 16,000 events of ~1 KiB
/// fire (over 15 MiB, beyond the 8 MiB event budget); each is disconnected as too slow (its session lives on: it resumes on a new
/// connection, so it was not expiry that closed it). Then one session pipelines 3,000 reads of
/// a 1 MiB value and never reads: the server stops reading its requests instead of buffering
/// gigabytes of replies.
async fn never_readers(ctx: &Ctx) -> String {
    let writer = ctx.client(BYSTANDER).await;
    writer
        .create("/flood", b"", CreateMode::Persistent)
        .await
        .expect("create /flood");
    let mut slow = Vec::new();
    for i in 0..50u8 {
        let sock = TcpSocket::new_v4().expect("socket");
        sock.set_recv_buffer_size(4096).expect("small buffer");
        sock.bind(SocketAddr::from(([127, 0, 3, i + 1], 0)))
            .expect("bind");
        let mut s = sock.connect(ctx.addrs[TARGET]).await.expect("connect");
        let mut b = BytesMut::new();
        encode_frame(&connect_request(30_000, 0, vec![0; 16]), &mut b);
        s.write_all(&b).await.expect("handshake");
        let mut buf = BytesMut::new();
        let reply = read_frame(&mut s, &mut buf)
            .await
            .expect("read")
            .expect("handshake reply");
        let session = resumable(&reply);
        let mut b = BytesMut::new();
        let req = Request::AddWatch(AddWatchRequest {
            path: "/flood".into(),
            mode: AddWatchMode::PersistentRecursive.as_i32(),
        });
        send(req, 1, &mut b);
        s.write_all(&b).await.expect("addWatch");
        slow.push((s, session));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Long names make each event large; each node is created and deleted again, so the tree
    // does not grow and what the server holds is only what it queues for the never-readers.
    let long = "n".repeat(900);
    let t = Instant::now();
    for round in 0..80 {
        let names: Vec<String> = (0..100)
            .map(|i| format!("/flood/{long}{round}-{i}"))
            .collect();
        let creates = names
            .iter()
            .map(|p| Op::create(p, &b""[..], CreateMode::Persistent));
        let deletes = names.iter().map(|p| Op::delete(p, None));
        writer
            .multi(creates.chain(deletes).collect())
            .await
            .expect("multi create and delete");
    }
    let to = ctx.addrs[TARGET];
    let resumed = stream::iter(slow)
        .map(|(mut s, session)| async move {
            let mut buf = vec![0u8; 1 << 16];
            let closed = tokio::time::timeout(Duration::from_secs(30), async {
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
            .await
            .is_ok();
            assert!(closed, "a never-reading client is still connected");
            resume_and_close(to, session).await
        })
        .buffer_unordered(50)
        .filter(|&alive| std::future::ready(alive))
        .count()
        .await;
    let dropped_ms = t.elapsed().as_millis();
    assert_eq!(
        resumed, 50,
        "sessions of dropped never-readers expired instead of being disconnected"
    );
    let (_, stat) = writer.get_data("/flood").await.expect("read");
    assert_eq!((stat.num_children, stat.cversion), (0, 16_000));
    // Replies: 3,000 pipelined reads of 1 MiB, never read.
    writer
        .create("/flood-big", &vec![b'b'; 1 << 20], CreateMode::Persistent)
        .await
        .expect("a 1 MiB value");
    writer.close().await.expect("close");
    let before = rss_kib(ctx.cluster.pid(TARGET).expect("running")).expect("alive");
    let mut s = raw_session([127, 0, 0, 1], ctx.addrs[TARGET])
        .await
        .expect("session");
    let mut out = BytesMut::new();
    for xid in 1..=3_000 {
        let req = Request::GetData(GetDataRequest {
            path: "/flood-big".into(),
            watch: false,
        });
        send(req, xid, &mut out);
    }
    // The server stops reading at its bounds, so the write may not complete: bound it.
    let _ = tokio::time::timeout(Duration::from_secs(3), s.write_all(&out)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = rss_kib(ctx.cluster.pid(TARGET).expect("running")).expect("alive");
    ctx.serves(TARGET).await;
    drop(s);
    format!(
        "50 dropped {dropped_ms} ms after the flood began, sessions alive; 3,000 unread 1 MiB \
         replies held {} MiB",
        held.saturating_sub(before) / 1024
    )
}

/// Session id and password from a ConnectResponse frame.
fn resumable(reply: &[u8]) -> (i64, Vec<u8>) {
    let mut r = synod_proto::Reader::new(bytes::Bytes::copy_from_slice(reply));
    let _protocol = r.read_i32().expect("protocol version");
    let timeout = r.read_i32().expect("timeout");
    assert!(timeout > 0, "session refused");
    let id = r.read_i64().expect("session id");
    let passwd = r.read_buffer().expect("password");
    (id, passwd.to_vec())
}

/// Reconnects to `session` and closes it; `true` if it was still alive.
async fn resume_and_close(to: SocketAddr, (id, passwd): (i64, Vec<u8>)) -> bool {
    let mut s = TcpStream::connect(to).await.expect("connect");
    let mut b = BytesMut::new();
    encode_frame(&connect_request(30_000, id, passwd), &mut b);
    s.write_all(&b).await.expect("handshake");
    let mut buf = BytesMut::new();
    let reply = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut s, &mut buf))
        .await
        .expect("handshake answered")
        .expect("read")
        .expect("handshake reply");
    let timeout = i32::from_be_bytes([reply[4], reply[5], reply[6], reply[7]]);
    if timeout <= 0 {
        return false;
    }
    let mut b = BytesMut::new();
    send(Request::CloseSession, 1, &mut b);
    if s.write_all(&b).await.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut s, &mut buf)).await;
    }
    true
}

struct Row {
    phase: &'static str,
    secs: f64,
    worst: Duration,
    start_kib: Vec<u64>,
    peak_kib: Vec<u64>,
    summary: String,
}

#[test]
fn bad_input_and_overload_leave_the_cluster_serving() {
    // One address will hold over a thousand sockets here and in the servers.
    // SAFETY: plain getrlimit/setrlimit on this process (children inherit the limit).
    unsafe {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max.min(65_536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
    let cluster = new_cluster(3);
    let members = cluster.members(&[0, 1, 2]);
    // The never-readers' sessions (30 s asked) must outlive the flood that gets them dropped
    // (about 9 s in a debug build on an idle 2-core machine, more on a loaded one): with the
    // default cap of 20 ticks (10 s) whether they expired first was a race with the machine.
    const SESSION_CAP: [&str; 2] = ["--max-session-timeout-ms", "30000"];
    for i in 0..3 {
        let extra: &[&str] = if i == FANOUT {
            &[
                "--max-connections-per-ip",
                "1100",
                SESSION_CAP[0],
                SESSION_CAP[1],
            ]
        } else {
            &SESSION_CAP
        };
        cluster.spawn_with(i, &members, extra).expect("spawn synod");
    }
    let leader = cluster.wait_leader_among(&[0, 1, 2], Duration::from_secs(30));
    let pids: Vec<u32> = (0..3).map(|i| cluster.pid(i).expect("running")).collect();
    let addrs = cluster.addrs();
    let ctx = Ctx { cluster, addrs };
    println!("leader: node {}; target: node {}", leader + 1, TARGET + 1);
    let rt = runtime();
    let mut rows: Vec<Row> = Vec::new();
    let sampler = Sampler::start(pids);
    rt.block_on(async {
        let setup = ctx.client(BYSTANDER).await;
        for p in ["/by", "/fz"] {
            setup
                .create(p, b"", CreateMode::Persistent)
                .await
                .expect("create");
        }
        setup.close().await.expect("close");
        let bystander = Arc::new(Bystander {
            acked: Mutex::new(BTreeMap::new()),
            worst: Mutex::new(Duration::ZERO),
            failures: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let task = tokio::spawn(bystander.clone().run(ctx.client(BYSTANDER).await));
        sampler.take();
        macro_rules! phase {
            ($name:literal, $f:expr) => {{
                let start_kib = sampler.now();
                bystander.take_worst();
                let t = Instant::now();
                let summary = $f.await;
                let secs = t.elapsed().as_secs_f64();
                let peak_kib = sampler.take();
                ctx.serves(TARGET).await;
                rows.push(Row {
                    phase: $name,
                    secs,
                    worst: bystander.take_worst(),
                    start_kib,
                    peak_kib,
                    summary,
                });
            }};
        }
        phase!("random-bytes", random_bytes(&ctx));
        phase!("1000-connections", thousand_connections(&ctx));
        phase!("1000-sessions", thousand_sessions(&ctx));
        phase!("10000-pipelined", pipelined_writes(&ctx));
        phase!("10000-op-multi", big_multi(&ctx));
        phase!("100000-children", wide_node(&ctx));
        phase!("data-over-limit", data_over_limit(&ctx));
        phase!("never-reading", never_readers(&ctx));
        bystander.stop.store(true, Ordering::Relaxed);
        tokio::time::timeout(Duration::from_secs(40), task)
            .await
            .expect("bystander stops")
            .expect("bystander task");
        let failures = bystander
            .failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        assert!(failures.is_empty(), "bystander failures: {failures:?}");
        // Every write the bystander was told succeeded is on every node.
        let acked = bystander
            .acked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for node in 0..3 {
            let c = ctx.client(node).await;
            let present: BTreeSet<String> = c
                .get_children("/by")
                .await
                .expect("children")
                .into_iter()
                .map(|n| format!("/by/{n}"))
                .collect();
            for p in acked.keys() {
                assert!(
                    present.contains(p),
                    "acknowledged {p} lost on node {}",
                    node + 1
                );
            }
            for p in acked.keys().step_by(97) {
                assert_eq!(&c.get_data(p).await.expect("read").0[..], &acked[p][..]);
            }
            c.close().await.expect("close");
        }
        println!(
            "bystander: {} acknowledged writes, all present on every node",
            acked.len()
        );
    });
    drop(sampler);
    for node in 0..3 {
        let log = ctx.cluster.log(node);
        assert!(
            !log.contains("panicked"),
            "node {} panicked:\n{}",
            node + 1,
            ctx.cluster.logs()
        );
    }
    println!(
        "\n{:<18} {:>7} {:>9}  {:<26} {:<26}  result",
        "phase", "secs", "worst", "rss before (MiB)", "rss peak (MiB)"
    );
    let mib = |v: &[u64]| {
        v.iter()
            .map(|k| format!("{:>4}", k / 1024))
            .collect::<Vec<_>>()
            .join(" ")
    };
    for r in &rows {
        println!(
            "{:<18} {:>7.1} {:>7}ms  {:<26} {:<26}  {}",
            r.phase,
            r.secs,
            r.worst.as_millis(),
            mib(&r.start_kib),
            mib(&r.peak_kib),
            r.summary
        );
    }
    for r in &rows {
        assert!(
            r.worst <= BYSTANDER_MAX_LATENCY,
            "{}: the bystander waited {:?}",
            r.phase,
            r.worst
        );
        for (node, (&start, &peak)) in r.start_kib.iter().zip(&r.peak_kib).enumerate() {
            assert!(
                peak <= RSS_CEILING_KIB,
                "{}: node {} reached {} MiB",
                r.phase,
                node + 1,
                peak / 1024
            );
            let stores = matches!(
                r.phase,
                "10000-pipelined" | "10000-op-multi" | "100000-children" | "data-over-limit"
            );
            assert!(
                stores || peak.saturating_sub(start) <= TRANSIENT_GROWTH_KIB,
                "{}: node {} grew by {} MiB while storing nothing",
                r.phase,
                node + 1,
                (peak - start) / 1024
            );
        }
    }
}
