//! The clients of a fault scenario, each recording what it did into the shared [`Load`]:
//! register clients (getData / setData / conditional setData on a few znodes), a multi client
//! (all-or-nothing transactions and multi-reads over three znodes), a sequential-create client,
//! lock contenders (the client's lock recipe), a persistent recursive watcher, and ephemeral
//! owners whose sessions end (closed, or abandoned to expire) while an observer watches their
//! nodes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rand::Rng;
use synod_client::recipe::lock::Lock;
use synod_client::{
    AddWatchMode, Client, ConnectOptions, CreateMode, Error, EventType, Op, OpResult, SessionState,
};
use synod_faults::checks::{
    Change, ChangeKind, ClientStates, ClientView, Drained, EphemeralNode, Observation, SessionLife,
    WatchDrain,
};
use synod_faults::history::{History, Outcome};
use synod_faults::model::{
    MultiOp, MultiRet, RegisterOp, RegisterRet, TxnError, TxnOp, TxnOpRet, Value, Znode, ZnodeOp,
};
use synod_proto::frame::encode_frame;
use synod_proto::records::{ConnectRequest, ConnectRequestBase, ConnectResponse, CreateRequest};
use synod_proto::{Decode, ErrorCode, Reader, Request, RequestPacket};

/// How long a client waits for one answer; after that the operation's outcome is unknown.
pub const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// The session timeout the clients ask for.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(6);
/// The register znodes.
pub const REGISTER_ROOT: &str = "/lin";
/// The multi znodes.
pub const MULTI_KEYS: [&str; 3] = ["/m/a", "/m/b", "/m/c"];
/// Where sequential nodes are created.
pub const SEQ_PARENT: &str = "/seq";
/// The lock's parent.
pub const LOCK_ROOT: &str = "/lock";
/// The node every lock holder writes its token to (a fenced write).
pub const LOCK_RESOURCE: &str = "/lock-resource";
/// Where ephemeral owners put their nodes.
pub const EPHEMERAL_ROOT: &str = "/eph";

/// A lock contender's steps, recorded in [`Load::locks`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LockOp {
    /// Acquired (the result is the fencing token: the lock node's czxid).
    Acquire,
    /// Stopped holding: released, or learned the session was lost.
    Release,
}

pub fn plock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Everything the clients of one scenario record.
#[derive(Default)]
pub struct Load {
    pub registers: History<ZnodeOp, RegisterRet>,
    pub multis: History<MultiOp, MultiRet>,
    /// Sequential creates: the result is the name the server gave.
    pub seqs: History<(), String>,
    pub locks: History<LockOp, u64>,
    /// Events of the recursive watcher on [`REGISTER_ROOT`], in arrival order.
    pub events: Mutex<Vec<Change>>,
    /// Ephemerals created by the owners, with their sessions.
    pub ephemerals: Mutex<Vec<(EphemeralNode, SessionLife)>>,
    /// Reads of the ephemerals' paths by the observer.
    pub observations: Mutex<Vec<Observation>>,
    /// What the idle session's client was told ([`idle_session`]).
    pub idle: Mutex<Vec<ClientStates>>,
    /// Acknowledged changes under [`REGISTER_ROOT`], for the watch check.
    pub acked_changes: Mutex<Vec<Change>>,
    /// The zxid of each acknowledged register write, by (path, version after it).
    pub acked_versions: Mutex<HashMap<(String, i32), u64>>,
    /// One entry per write under [`REGISTER_ROOT`] whose outcome is unknown.
    pub unknown_paths: Mutex<Vec<String>>,
    /// How the clients speak TLS to the cluster (`None`: plaintext).
    pub tls: Option<synod_client::tls::TlsConnector>,
    /// Tells every client to stop.
    pub stop: AtomicBool,
    /// Every client but the watcher has stopped: no change is acknowledged any more, so the
    /// watcher knows the last event it must wait for.
    pub writers_done: AtomicBool,
}

/// How long the watcher waits, after the writers stopped, for the events of the changes they
/// were told succeeded: the server it is on may apply the last entries a heartbeat or more
/// after the leader acknowledged them (more on a loaded machine). An event still missing then
/// is reported as missed.
pub const WATCH_DRAIN: Duration = Duration::from_secs(15);

/// Register key `i`.
pub fn register_key(i: usize) -> String {
    format!("{REGISTER_ROOT}/k{i}")
}

/// Connects (bounded), retrying until `load.stop`, to the servers in a shuffled order.
async fn connect(servers: &str, load: &Load) -> Option<Client> {
    connect_in_order(servers, load, true).await
}

/// [`connect`], trying the servers in the order given unless `shuffle`.
async fn connect_in_order(servers: &str, load: &Load, shuffle: bool) -> Option<Client> {
    while !load.stop.load(Ordering::Relaxed) {
        let opts = ConnectOptions {
            tls: load.tls.clone(),
            ..ConnectOptions::default()
        }
        .shuffle_hosts(shuffle)
        .session_timeout(SESSION_TIMEOUT)
        .connect_timeout(Duration::from_secs(5));
        if let Ok(c) = Client::connect(servers, opts).await {
            return Some(c);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// A client with a live session: reconnects (new session) after expiry.
async fn live(client: &mut Option<Client>, servers: &str, load: &Load) -> bool {
    let dead = client.as_ref().is_none_or(|c| {
        matches!(
            c.state(),
            SessionState::Expired | SessionState::Closed | SessionState::AuthFailed
        )
    });
    if dead {
        *client = connect(servers, load).await;
    }
    // Wait (bounded) for a connection: a request issued while disconnected fails at once, and
    // its outcome could only be recorded as unknown.
    for _ in 0..50 {
        match client.as_ref().map(Client::state) {
            Some(SessionState::Connected) => return true,
            Some(SessionState::Disconnected | SessionState::Connecting) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            _ => break,
        }
    }
    client.is_some()
}

/// An answer that may take effect without the client knowing: connection trouble, timeouts.
fn ambiguous(e: &Error) -> bool {
    !matches!(
        e,
        Error::BadVersion | Error::NoNode | Error::NodeExists | Error::InvalidPath(_)
    )
}

/// How long a client pauses after an operation whose outcome is unknown.
const UNKNOWN_BACKOFF: Duration = Duration::from_millis(250);

/// After an answer that never came, a client pauses before its next operation: its connection is
/// usually being re-established (or the cluster is electing), and every operation sent meanwhile
/// would end unknown too, each one widening the linearizability checker's search.
async fn back_off_if_unknown<R>(outcome: &Outcome<R>) {
    if matches!(outcome, Outcome::Unknown) {
        tokio::time::sleep(UNKNOWN_BACKOFF).await;
    }
}

/// Runs `op` with [`OP_TIMEOUT`]; `None` means no answer in time.
async fn timed<T>(
    op: impl std::future::Future<Output = Result<T, Error>>,
) -> Option<Result<T, Error>> {
    tokio::time::timeout(OP_TIMEOUT, op).await.ok()
}

/// Creates the znodes the clients use, recording the register and multi creates (their models
/// start from "no znode").
pub async fn setup(client: &Client, load: &Load, registers: usize) -> Result<(), Error> {
    for p in [REGISTER_ROOT, "/m", SEQ_PARENT, LOCK_ROOT, EPHEMERAL_ROOT] {
        client.create(p, b"", CreateMode::Persistent).await?;
    }
    client
        .create(LOCK_RESOURCE, b"0", CreateMode::Persistent)
        .await?;
    for i in 0..registers {
        let key = register_key(i);
        let id = load.registers.invoke(
            0,
            ZnodeOp::new(&key, RegisterOp::Create(Value(b"init".to_vec()))),
        );
        client.create(&key, b"init", CreateMode::Persistent).await?;
        let _ = load
            .registers
            .complete(id, Outcome::Ok(RegisterRet::Created));
    }
    for k in MULTI_KEYS {
        client.create(k, b"init", CreateMode::Persistent).await?;
    }
    Ok(())
}

/// One register client: random reads, blind writes and conditional writes on `keys` znodes.
pub async fn register_client(id: u64, servers: String, keys: usize, load: Arc<Load>) {
    let mut client = None;
    let mut versions: HashMap<String, i32> = HashMap::new();
    let mut n = 0u64;
    while !load.stop.load(Ordering::Relaxed) {
        if !live(&mut client, &servers, &load).await {
            break;
        }
        let Some(c) = client.as_ref() else { break };
        let (key, roll) = {
            let mut rng = rand::rng();
            (
                register_key(rng.random_range(0..keys)),
                rng.random_range(0..10),
            )
        };
        n += 1;
        let value = format!("c{id}-{n}").into_bytes();
        match roll {
            0..=3 => {
                let op = load
                    .registers
                    .invoke(id, ZnodeOp::new(&key, RegisterOp::Read));
                let outcome = match timed(c.get_data(&key)).await {
                    Some(Ok((data, stat))) => {
                        versions.insert(key.clone(), stat.version);
                        Outcome::Ok(RegisterRet::Value {
                            value: Value(data.to_vec()),
                            version: stat.version,
                        })
                    }
                    Some(Err(Error::NoNode)) => Outcome::Ok(RegisterRet::NoNode),
                    _ => Outcome::Failed, // a read that did not answer changed nothing
                };
                back_off_if_unknown(&outcome).await;
                let _ = load.registers.complete(op, outcome);
            }
            _ => {
                let expected = (roll >= 6).then(|| versions.get(&key).copied().unwrap_or(0));
                let rop = match expected {
                    Some(v) => RegisterOp::CasWrite {
                        value: Value(value.clone()),
                        expected_version: v,
                    },
                    None => RegisterOp::Write(Value(value.clone())),
                };
                let op = load.registers.invoke(id, ZnodeOp::new(&key, rop));
                let outcome = match timed(c.set_data(&key, &value, expected)).await {
                    Some(Ok(stat)) => {
                        versions.insert(key.clone(), stat.version);
                        load_change(&load, &key, stat.mzxid, ChangeKind::DataChanged);
                        plock(&load.acked_versions)
                            .insert((key.clone(), stat.version), stat.mzxid as u64);
                        Outcome::Ok(RegisterRet::Written {
                            version: stat.version,
                        })
                    }
                    Some(Err(Error::BadVersion)) => Outcome::Ok(RegisterRet::BadVersion),
                    Some(Err(Error::NoNode)) => Outcome::Ok(RegisterRet::NoNode),
                    Some(Err(e)) if !ambiguous(&e) => Outcome::Failed,
                    _ => {
                        plock(&load.unknown_paths).push(key.clone());
                        Outcome::Unknown
                    }
                };
                back_off_if_unknown(&outcome).await;
                let _ = load.registers.complete(op, outcome);
            }
        }
    }
    if let Some(c) = client {
        let _ = timed(c.close()).await;
    }
}

fn load_change(load: &Load, path: &str, zxid: i64, kind: ChangeKind) {
    plock(&load.acked_changes).push(Change {
        path: path.to_string(),
        zxid: zxid as u64,
        kind,
    });
}

/// The multi client: transactions that check /m/a's version and set all three znodes, and
/// multi-reads of all three.
pub async fn multi_client(id: u64, servers: String, load: Arc<Load>) {
    let mut client = None;
    let mut version_a = 0;
    let mut n = 0u64;
    let paths: Vec<String> = MULTI_KEYS.iter().map(|s| s.to_string()).collect();
    while !load.stop.load(Ordering::Relaxed) {
        if !live(&mut client, &servers, &load).await {
            break;
        }
        let Some(c) = client.as_ref() else { break };
        n += 1;
        if rand::rng().random_bool(0.5) {
            let op = load.multis.invoke(id, MultiOp::Read(paths.clone()));
            let reads = MULTI_KEYS.iter().map(|p| Op::get_data(p)).collect();
            let outcome = match timed(c.multi_read(reads)).await {
                Some(Ok(results)) => {
                    let mut out = Vec::new();
                    for r in results {
                        out.push(match r {
                            OpResult::GetData { data, stat } => Some(Znode {
                                value: Value(data.unwrap_or_default().to_vec()),
                                version: stat.version,
                            }),
                            _ => None,
                        });
                    }
                    if let Some(Some(a)) = out.first() {
                        version_a = a.version;
                    }
                    Outcome::Ok(MultiRet::Read(out))
                }
                _ => Outcome::Failed,
            };
            back_off_if_unknown(&outcome).await;
            let _ = load.multis.complete(op, outcome);
        } else {
            let value = format!("m{id}-{n}").into_bytes();
            let mut txn = vec![TxnOp::Check {
                path: MULTI_KEYS[0].to_string(),
                version: version_a,
            }];
            let mut ops = vec![Op::check(MULTI_KEYS[0], version_a)];
            for k in MULTI_KEYS {
                txn.push(TxnOp::Set {
                    path: k.to_string(),
                    value: Value(value.clone()),
                    version: -1,
                });
                ops.push(Op::set_data(k, Bytes::from(value.clone()), None));
            }
            let len = txn.len();
            let op = load.multis.invoke(id, MultiOp::Txn(txn));
            let outcome = match timed(c.multi(ops)).await {
                Some(Ok(results)) => {
                    let mut out = Vec::new();
                    for r in results {
                        out.push(match r {
                            OpResult::Check => TxnOpRet::Checked,
                            OpResult::SetData { stat } => {
                                version_a = version_a.max(stat.version);
                                TxnOpRet::Set {
                                    version: stat.version,
                                }
                            }
                            _ => TxnOpRet::Skipped,
                        });
                    }
                    if let Some(TxnOpRet::Set { version }) = out.get(1) {
                        version_a = *version;
                    }
                    Outcome::Ok(MultiRet::Txn(out))
                }
                Some(Err(Error::Multi { index, code, .. })) => {
                    let err = match code {
                        ErrorCode::BadVersion => Some(TxnError::BadVersion),
                        ErrorCode::NoNode => Some(TxnError::NoNode),
                        ErrorCode::NodeExists => Some(TxnError::NodeExists),
                        _ => None,
                    };
                    match err {
                        Some(err) => Outcome::Ok(MultiRet::Txn(
                            (0..len)
                                .map(|i| match i.cmp(&index) {
                                    std::cmp::Ordering::Less => TxnOpRet::RolledBack,
                                    std::cmp::Ordering::Equal => TxnOpRet::Error(err),
                                    std::cmp::Ordering::Greater => TxnOpRet::Skipped,
                                })
                                .collect(),
                        )),
                        None => Outcome::Unknown,
                    }
                }
                Some(Err(e)) if !ambiguous(&e) => Outcome::Failed,
                _ => Outcome::Unknown,
            };
            if matches!(outcome, Outcome::Ok(MultiRet::Txn(ref r)) if r.first() == Some(&TxnOpRet::Error(TxnError::BadVersion)))
            {
                // Learn the current version for the next try.
                if let Some(Ok((_, stat))) = timed(c.get_data(MULTI_KEYS[0])).await {
                    version_a = stat.version;
                }
            }
            back_off_if_unknown(&outcome).await;
            let _ = load.multis.complete(op, outcome);
        }
    }
    if let Some(c) = client {
        let _ = timed(c.close()).await;
    }
}

/// The sequential-create client.
pub async fn seq_client(id: u64, servers: String, load: Arc<Load>) {
    let mut client = None;
    let prefix = format!("{SEQ_PARENT}/n-");
    while !load.stop.load(Ordering::Relaxed) {
        if !live(&mut client, &servers, &load).await {
            break;
        }
        let Some(c) = client.as_ref() else { break };
        let op = load.seqs.invoke(id, ());
        let outcome = match timed(c.create(&prefix, b"", CreateMode::PersistentSequential)).await {
            Some(Ok(name)) => Outcome::Ok(name),
            Some(Err(e)) if !ambiguous(&e) => Outcome::Failed,
            _ => Outcome::Unknown,
        };
        back_off_if_unknown(&outcome).await;
        let _ = load.seqs.complete(op, outcome);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if let Some(c) = client {
        let _ = timed(c.close()).await;
    }
}

/// A lock contender using the client's lock recipe (`synod_client::recipe::Lock`: ephemeral
/// sequential nodes, each contender watching its predecessor; the fencing token is the lock
/// node's czxid). It writes its token to [`LOCK_RESOURCE`] in a multi fenced by its lock node,
/// holds the lock briefly, and releases it.
pub async fn lock_client(id: u64, servers: String, load: Arc<Load>) {
    let mut client = None;
    while !load.stop.load(Ordering::Relaxed) {
        if !live(&mut client, &servers, &load).await {
            break;
        }
        let Some(c) = client.as_ref() else { break };
        // The recipe cleans up its node when it gives up; it is not cancelled from outside,
        // which could leave a contender node blocking the others until the session ends.
        let guard = match Lock::new(c, LOCK_ROOT)
            .acquire_timeout(Duration::from_secs(2))
            .await
        {
            Ok(Some(g)) => g,
            Ok(None) => continue,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(token) = u64::try_from(guard.fencing_token()) else {
            continue;
        };
        let mine = guard.path().to_string();
        let op = load.locks.invoke(id, LockOp::Acquire);
        let _ = load.locks.complete(op, Outcome::Ok(token));
        // The fenced write: only while our lock node exists.
        let fenced = vec![
            Op::check(&mine, 0),
            Op::set_data(LOCK_RESOURCE, Bytes::from(token.to_string()), None),
        ];
        let _ = timed(c.multi(fenced)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let op = load.locks.invoke(id, LockOp::Release);
        let outcome = match tokio::time::timeout(OP_TIMEOUT, guard.release()).await {
            Ok(Ok(())) => Outcome::Ok(token),
            _ => Outcome::Unknown,
        };
        let _ = load.locks.complete(op, outcome);
    }
    if let Some(c) = client {
        let _ = timed(c.close()).await;
    }
}

/// The recursive watcher on [`REGISTER_ROOT`]: records every event until stopped (reconnects
/// are the client library's business; a session expiry ends the recording).
pub async fn watcher(servers: String, load: Arc<Load>, ready: tokio::sync::oneshot::Sender<()>) {
    let Some(c) = connect(&servers, &load).await else {
        return;
    };
    let Ok(mut w) = c
        .add_watch(REGISTER_ROOT, AddWatchMode::PersistentRecursive)
        .await
    else {
        return;
    };
    let _ = ready.send(());
    let mut drain = WatchDrain::new(WATCH_DRAIN);
    loop {
        if load.stop.load(Ordering::Relaxed) {
            drain.stop(Instant::now());
        }
        let next = tokio::time::timeout(Duration::from_millis(200), w.next()).await;
        match next {
            Ok(Some(ev)) => {
                drain.event(ev.zxid);
                let kind = match ev.event_type {
                    EventType::NodeCreated => ChangeKind::Created,
                    EventType::NodeDataChanged => ChangeKind::DataChanged,
                    EventType::NodeDeleted => ChangeKind::Deleted,
                    _ => continue,
                };
                plock(&load.events).push(Change {
                    path: ev.path,
                    zxid: ev.zxid as u64,
                    kind,
                });
            }
            Ok(None) => {
                // Every acknowledged change after this is reported missed: say why.
                eprintln!(
                    "  watcher: its session {:#x} ended ({:?}) before the watcher was done",
                    c.session_id(),
                    c.state()
                );
                break;
            }
            Err(_) => {
                let last_acked = plock(&load.acked_changes)
                    .iter()
                    .map(|c| c.zxid)
                    .max()
                    .unwrap_or(0);
                let writers_done = load.writers_done.load(Ordering::Relaxed);
                match drain.lull(Instant::now(), writers_done, last_acked) {
                    None => {}
                    Some(Drained::Complete { after_lull }) => {
                        eprintln!(
                            "  watcher: saw the last acknowledged change ({last_acked:#x}); \
                             {after_lull} events came after a 200 ms lull"
                        );
                        break;
                    }
                    Some(Drained::GaveUp) => {
                        eprintln!(
                            "  watcher: gave up waiting for {last_acked:#x} after {WATCH_DRAIN:?}"
                        );
                        break;
                    }
                }
            }
        }
    }
    let _ = timed(c.close()).await;
}

/// A raw ZooKeeper session on `addr` that creates an ephemeral `path` and then goes silent (no
/// pings, socket dropped): the server must expire it. Returns (session id, negotiated timeout).
pub fn abandoned_ephemeral(addr: SocketAddr, path: &str) -> std::io::Result<(u64, Duration)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, OP_TIMEOUT)?;
    s.set_read_timeout(Some(OP_TIMEOUT))?;
    let mut out = BytesMut::new();
    let hello = ConnectRequest {
        base: ConnectRequestBase {
            timeout: 2_000,
            passwd: vec![0u8; 16].into(),
            ..Default::default()
        },
        read_only: false,
    };
    encode_frame(&hello, &mut out);
    s.write_all(&out)?;
    let read_frame = |s: &mut std::net::TcpStream| -> std::io::Result<Bytes> {
        let mut len = [0u8; 4];
        s.read_exact(&mut len)?;
        let mut body = vec![0u8; i32::from_be_bytes(len).clamp(0, 1 << 20) as usize];
        s.read_exact(&mut body)?;
        Ok(body.into())
    };
    let reply = ConnectResponse::decode(&mut Reader::new(read_frame(&mut s)?))
        .map_err(|e| std::io::Error::other(format!("bad handshake reply: {e}")))?;
    if reply.base.session_id == 0 {
        return Err(std::io::Error::other("session refused"));
    }
    out.clear();
    let create = CreateRequest {
        path: path.to_string(),
        data: Some(Bytes::new()),
        acl: synod_client::Acl::open_unsafe(),
        flags: CreateMode::Ephemeral.flags(),
    };
    encode_frame(
        &RequestPacket {
            xid: 1,
            request: Request::Create(create),
        },
        &mut out,
    );
    s.write_all(&out)?;
    let frame = read_frame(&mut s)?;
    let header = synod_proto::records::ReplyHeader::decode(&mut Reader::new(frame))
        .map_err(|e| std::io::Error::other(format!("bad reply: {e}")))?;
    if header.err != 0 {
        return Err(std::io::Error::other(format!(
            "create {path}: error {}",
            header.err
        )));
    }
    Ok((
        reply.base.session_id as u64,
        Duration::from_millis(reply.base.timeout.max(0) as u64),
    ))
}

/// The ephemeral owners and their observer: every `period`, one owner session creates an
/// ephemeral and is then either closed or abandoned (left to expire); meanwhile the observer
/// reads every ephemeral's path.
pub async fn ephemerals(servers: String, addrs: Vec<SocketAddr>, load: Arc<Load>) {
    let Some(observer) = connect(&servers, &load).await else {
        return;
    };
    let mut n = 0usize;
    let mut next_owner = tokio::time::Instant::now();
    let start = load.registers.start();
    let mut paths: Vec<String> = Vec::new();
    while !load.stop.load(Ordering::Relaxed) {
        if tokio::time::Instant::now() >= next_owner {
            next_owner += Duration::from_millis(1500);
            n += 1;
            let path = format!("{EPHEMERAL_ROOT}/e{n}");
            let addr = addrs[n % addrs.len()];
            let p = path.clone();
            let made = tokio::task::spawn_blocking(move || abandoned_ephemeral(addr, &p)).await;
            if let Ok(Ok((session, timeout))) = made {
                // The socket is gone when abandoned_ephemeral returns: the session's last sign
                // of life is now.
                let now = start.elapsed();
                plock(&load.ephemerals).push((
                    EphemeralNode {
                        path: path.clone(),
                        session,
                        created: now,
                        deleted: None,
                    },
                    SessionLife {
                        session,
                        timeout,
                        alive_until: Some(now),
                        must_end_by: None,
                    },
                ));
                paths.push(path);
            }
        }
        for p in paths.clone() {
            let call = start.elapsed();
            if let Some(Ok(stat)) = timed(observer.exists(&p)).await {
                let ret = start.elapsed();
                plock(&load.observations).push(Observation {
                    path: p,
                    call,
                    ret,
                    owner: stat.map(|s| s.ephemeral_owner as u64).filter(|o| *o != 0),
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = timed(observer.close()).await;
}

/// An idle session, as a lock holder's between its acquisition and its release, on the first of
/// `servers` (the others in order after it): it creates an ephemeral under [`EPHEMERAL_ROOT`],
/// then only pings, and notes every state change its client is told, until the scenario stops
/// (its own closing is not noted). A new session after one ends.
pub async fn idle_session(servers: String, load: Arc<Load>) {
    let start = load.registers.start();
    let mut n = 0;
    while !load.stop.load(Ordering::Relaxed) {
        let Some(c) = connect_in_order(&servers, &load, false).await else {
            return;
        };
        n += 1;
        let mut states = c.state_changes();
        let mut seen = ClientStates {
            session: c.session_id() as u64,
            timeout: c.session_timeout(),
            changes: vec![(start.elapsed(), ClientView::Connected)],
        };
        // A change between the connection and the subscription would not be in the stream.
        if c.state() != SessionState::Connected {
            seen.changes
                .push((start.elapsed(), ClientView::Disconnected));
        }
        let path = format!("{EPHEMERAL_ROOT}/idle{n}");
        let _ = timed(c.create(&path, b"", CreateMode::Ephemeral)).await;
        let mut ended = false;
        while !ended && !load.stop.load(Ordering::Relaxed) {
            let Ok(next) = tokio::time::timeout(Duration::from_millis(200), states.next()).await
            else {
                continue;
            };
            let view = match next {
                Some(SessionState::Connected | SessionState::ConnectedReadOnly) => {
                    ClientView::Connected
                }
                Some(SessionState::Disconnected | SessionState::Connecting) => {
                    ClientView::Disconnected
                }
                Some(_) | None => ClientView::Ended,
            };
            ended = view == ClientView::Ended;
            seen.changes.push((start.elapsed(), view));
        }
        plock(&load.idle).push(seen);
        if !ended {
            let _ = timed(c.close()).await;
        }
    }
}
