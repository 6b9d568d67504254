//! The coordination recipes against real clusters: every case runs on a 3-node synod cluster and
//! on a 3-node Apache ZooKeeper 3.8 ensemble (the behavioural oracle), under contention, session
//! loss, dropped connections and leader changes. Each case on each backend is a trial of its own
//! (`synod::election`, `zookeeper::election`, ...), so one failure does not hide the others.
//!
//! The synod binary comes from `synod_testkit::synod_bin()` (`SYNOD_BIN`, or the workspace's
//! `target/<profile>/synod`).

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use libtest_mimic::{Arguments, Failed, Trial};
use synod_client::recipe::barrier::{Barrier, DoubleBarrier};
use synod_client::recipe::cache::{CacheEvent, TreeCache};
use synod_client::recipe::counter::SharedCounter;
use synod_client::recipe::election::{LeaderLatch, Leadership};
use synod_client::recipe::lock::{Lock, ReadWriteLock, Semaphore};
use synod_client::recipe::queue::Queue;
use synod_client::recipe::twophase::{
    self, Coordinator, Outcome, Participant, Party, Vote, VoteState,
};
use synod_client::tls::TlsConnector;
use synod_client::{digest_id, Client, ConnectOptions, CreateMode, Error, Id, SessionState};
use synod_testkit::{
    blocking, synod_bin, Ensemble, Kind, Local, Synod, SynodEnsemble, ZkEnsemble, ZooKeeper,
};

/// Upper bound of one backend's whole run.
const BACKEND_TIMEOUT: Duration = Duration::from_secs(150);
/// Upper bound of any single wait inside a case.
const WAIT: Duration = Duration::from_secs(30);
/// Lock contention: clients, and acquisitions per client (8 × 63 = 504 per backend, sized so that
/// this file stays within about two minutes on a 2-core machine).
const LOCK_CLIENTS: usize = 8;
const LOCK_ROUNDS: usize = 63;

type Case<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// The cases, in the order they run on each backend.
const CASES: [&str; 17] = [
    "lock_contention",
    "lock_guarded",
    "lock_timeouts",
    "rwlock_and_semaphore",
    "lock_session_loss",
    "election",
    "election_suspended",
    "barriers",
    "queue_exactly_once",
    "counter",
    "cache_convergence",
    "twophase_crashes",
    "twophase_deadline",
    "twophase_races",
    "twophase_guarded",
    "guarded_election_barrier_queue",
    "leader_change",
];

/// The future of case `case` on `ens` (whose connect string is `cs`).
fn case<'a, K: Kind>(case: &str, ens: &'a Local<K>, cs: &'a Servers) -> Case<'a> {
    match case {
        "lock_contention" => Box::pin(lock_contention(cs)),
        "lock_guarded" => Box::pin(lock_guarded(cs)),
        "lock_timeouts" => Box::pin(lock_timeouts(cs)),
        "rwlock_and_semaphore" => Box::pin(rwlock_and_semaphore(cs)),
        "lock_session_loss" => Box::pin(lock_session_loss(cs)),
        "election" => Box::pin(election(cs)),
        "election_suspended" => Box::pin(election_suspended(ens)),
        "barriers" => Box::pin(barriers(cs)),
        "queue_exactly_once" => Box::pin(queue_exactly_once(cs)),
        "counter" => Box::pin(counter(cs)),
        "cache_convergence" => Box::pin(cache_convergence(ens)),
        "twophase_crashes" => Box::pin(twophase_crashes(cs)),
        "twophase_deadline" => Box::pin(twophase_deadline(cs)),
        "twophase_races" => Box::pin(twophase_races(cs)),
        "twophase_guarded" => Box::pin(twophase_guarded(cs)),
        "guarded_election_barrier_queue" => Box::pin(guarded_election_barrier_queue(cs)),
        "leader_change" => Box::pin(leader_change(ens)),
        other => unreachable!("no recipe case {other}"),
    }
}

/// One backend's cluster, the runtime its cases run on, and when its cases started.
struct Backend<K: Kind> {
    name: &'static str,
    ens: Local<K>,
    rt: tokio::runtime::Runtime,
    started: Instant,
}

impl<K: Kind> Backend<K> {
    fn new(name: &'static str, ens: Local<K>) -> Backend<K> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("tokio runtime");
        Backend {
            name,
            ens,
            rt,
            started: Instant::now(),
        }
    }

    /// Runs case `name`, printing its time. All of a backend's cases together must finish within
    /// [`BACKEND_TIMEOUT`] of its first one starting.
    fn run(&self, name: &str) {
        let left = BACKEND_TIMEOUT.saturating_sub(self.started.elapsed());
        let cs = Servers::of(&self.ens);
        let t = Instant::now();
        eprintln!("{}: {name} ...", self.name);
        self.rt.block_on(async {
            tokio::time::timeout(left, case(name, &self.ens, &cs))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{}: recipes did not finish within {BACKEND_TIMEOUT:?}",
                        self.name
                    )
                })
        });
        eprintln!("{}: {name} ok in {:.1?}", self.name, t.elapsed());
    }
}

/// The backend whose cluster is up: one at a time, since both are timing-sensitive and the
/// machine is small. Started by the first case that needs it; the other one is stopped first.
enum Active {
    None,
    Synod(Backend<Synod>),
    ZooKeeper(Backend<ZooKeeper>),
}

impl Active {
    fn synod(&mut self) -> &Backend<Synod> {
        if !matches!(self, Active::Synod(_)) {
            *self = Active::None; // stops the other backend's cluster first
            let bin = synod_bin().expect("the synod binary");
            let ens =
                SynodEnsemble::start_tls(&bin, 3, &[]).expect("start a 3-node synod cluster (TLS)");
            *self = Active::Synod(Backend::new("synod", ens));
        }
        match self {
            Active::Synod(b) => b,
            _ => unreachable!(),
        }
    }

    fn zookeeper(&mut self) -> &Backend<ZooKeeper> {
        if !matches!(self, Active::ZooKeeper(_)) {
            *self = Active::None;
            let ens = ZkEnsemble::start(3).expect("start a 3-node ZooKeeper ensemble");
            *self = Active::ZooKeeper(Backend::new("zookeeper", ens));
        }
        match self {
            Active::ZooKeeper(b) => b,
            _ => unreachable!(),
        }
    }
}

/// Every case on synod, then every case on ZooKeeper, each a trial of its own
/// (`synod::lock_contention`, ..., `zookeeper::leader_change`), run one at a time.
fn main() -> ExitCode {
    let mut args = Arguments::from_args();
    args.test_threads = Some(1);
    let active = Arc::new(Mutex::new(Active::None));
    let mut trials = Vec::new();
    for backend in ["synod", "zookeeper"] {
        for name in CASES {
            let active = active.clone();
            trials.push(Trial::test(format!("{backend}::{name}"), move || {
                let mut active = active.lock().unwrap_or_else(PoisonError::into_inner);
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match backend {
                        "synod" => active.synod().run(name),
                        _ => active.zookeeper().run(name),
                    }));
                outcome.map_err(|panic| {
                    let msg = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panicked".to_string());
                    Failed::from(msg)
                })
            }));
        }
    }
    let conclusion = libtest_mimic::run(&args, trials);
    // Stop the last cluster (and remove its files) before exiting.
    *active.lock().unwrap_or_else(PoisonError::into_inner) = Active::None;
    conclusion.exit_code()
}

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

/// A cluster's connect string and how to speak TLS to it (synod runs with TLS on).
#[derive(Clone)]
struct Servers {
    cs: String,
    tls: Option<TlsConnector>,
}

impl Servers {
    fn of(ens: &dyn Ensemble) -> Servers {
        Servers {
            cs: ens.connect_string(),
            tls: ens.tls(),
        }
    }

    /// Options for these servers: TLS where they need it.
    fn options(&self) -> ConnectOptions {
        ConnectOptions {
            tls: self.tls.clone(),
            ..ConnectOptions::default()
        }
    }
}

impl std::fmt::Display for Servers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.cs)
    }
}

async fn connect(cs: &Servers) -> Client {
    Client::connect(&cs.cs, cs.options().session_timeout(Duration::from_secs(4)))
        .await
        .expect("connect")
}

/// A session authenticated as the digest user `user` (password `pw`): an institution of the
/// guarded cases. (Over TLS every test session also carries the test certificate's identity,
/// which the guarded recipes never grant to.)
async fn institution(cs: &Servers, user: &str) -> Client {
    let zk = connect(cs).await;
    zk.add_auth("digest", format!("{user}:pw").as_bytes())
        .await
        .expect("addauth");
    zk
}

/// The identity of [`institution`] `user`.
fn id_of(user: &str) -> Id {
    digest_id(user, "pw")
}

/// Makes `zk`'s server apply every write acknowledged so far, before `zk` reads what another
/// session wrote: a rogue's read must find the node and be refused (NoAuth), not miss it
/// (NoNode). ZooKeeper serves a read from the session's own server, which may not have applied
/// another client's acknowledged write yet; its guide says a client that must see it syncs
/// first. On synod every read is linearizable already.
async fn caught_up(zk: &Client, path: &str) {
    zk.sync(path).await.expect("sync");
}

/// Asserts that `r` is refused with NoAuth.
fn refused<T: std::fmt::Debug>(what: &str, r: Result<T, Error>) {
    assert!(
        matches!(r, Err(Error::NoAuth)),
        "{what}: expected NoAuth, got {r:?}"
    );
}

/// Ends `victim`'s session from outside, as an expiry would: another connection resumes the
/// session and closes it (its ephemerals go, the victim learns `Expired` on its next contact).
async fn expire(cs: &Servers, victim: &Client) {
    let other = Client::connect(
        &cs.cs,
        cs.options()
            .session_timeout(Duration::from_secs(4))
            .resume(victim.session_id(), &victim.session_password()),
    )
    .await
    .expect("resume the victim's session");
    other.close().await.expect("close the victim's session");
}

/// Waits (bounded) until `cond` holds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The node index `client` is connected to.
fn node_of<K: Kind>(ens: &Local<K>, client: &Client) -> usize {
    let addr = client.connected_server().expect("connected");
    ens.addrs()
        .iter()
        .position(|a| *a == addr)
        .expect("connected to a node of the ensemble")
}

// ---------------------------------------------------------------------------------------------
// locks
// ---------------------------------------------------------------------------------------------

/// The protected resource: refuses a second holder and any token not above the last one.
#[derive(Default)]
struct Resource {
    /// Holders inside the critical section now (must never exceed 1).
    holders: AtomicUsize,
    /// The highest fencing token accepted so far.
    last_token: AtomicI64,
    /// Completed critical sections.
    entries: AtomicUsize,
}

impl Resource {
    fn enter(&self, token: i64) {
        assert_eq!(
            self.holders.fetch_add(1, Ordering::SeqCst),
            0,
            "two holders"
        );
        let prev = self.last_token.fetch_max(token, Ordering::SeqCst);
        assert!(
            token > prev,
            "fencing token {token} not above previous {prev}"
        );
        self.entries.fetch_add(1, Ordering::SeqCst);
    }
    fn leave(&self) {
        self.holders.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn lock_contention(cs: &Servers) {
    let res = Arc::new(Resource::default());
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..LOCK_CLIENTS {
        let zk = connect(cs).await;
        let res = res.clone();
        tasks.push(tokio::spawn(async move {
            let lock = Lock::new(&zk, "/locks/contended");
            for _ in 0..LOCK_ROUNDS {
                let g = lock.acquire().await.expect("acquire");
                res.enter(g.fencing_token());
                tokio::task::yield_now().await;
                res.leave();
                g.release().await.expect("release");
            }
            zk.close().await.expect("close");
        }));
    }
    for t in tasks {
        t.await.expect("contender panicked");
    }
    let n = res.entries.load(Ordering::SeqCst);
    assert_eq!(n, LOCK_CLIENTS * LOCK_ROUNDS);
    eprintln!(
        "  {n} acquisitions by {LOCK_CLIENTS} clients in {:.1?} ({:.0}/s)",
        t.elapsed(),
        n as f64 / t.elapsed().as_secs_f64()
    );
    let zk = connect(cs).await;
    assert!(
        zk.get_children("/locks/contended")
            .await
            .expect("children")
            .is_empty(),
        "lock nodes left behind"
    );
    zk.close().await.expect("close");
}

/// A lock whose contenders are named: an unrelated institution can neither see who holds it nor
/// contend nor delete the holder's node; the contenders take turns as usual.
async fn lock_guarded(cs: &Servers) {
    let dir = "/locks/guarded-case-17";
    let (hospital, lab, rogue) = (
        institution(cs, "hospital").await,
        institution(cs, "lab").await,
        institution(cs, "rogue").await,
    );
    let contenders = [id_of("hospital"), id_of("lab")];
    let held = Lock::new(&hospital, dir)
        .contenders(&contenders)
        .acquire()
        .await
        .expect("the hospital takes the lock");
    caught_up(&rogue, dir).await;
    refused("the rogue lists the lock", rogue.get_children(dir).await);
    refused(
        "the rogue reads the holder",
        rogue.get_data(held.path()).await,
    );
    refused(
        "the rogue deletes the holder",
        rogue.delete(held.path(), None).await,
    );
    refused(
        "the rogue contends",
        Lock::new(&rogue, dir).try_acquire().await,
    );
    let lab_lock = Lock::new(&lab, dir).contenders(&contenders);
    assert!(
        lab_lock.try_acquire().await.expect("try").is_none(),
        "the lab got a held lock"
    );
    let token = held.fencing_token();
    held.release().await.expect("release");
    let next = lab_lock
        .acquire_timeout(WAIT)
        .await
        .expect("acquire")
        .expect("the lab takes the released lock");
    assert!(next.fencing_token() > token);
    next.release().await.expect("release");
    for zk in [hospital, lab, rogue] {
        zk.close().await.expect("close");
    }
}

async fn lock_timeouts(cs: &Servers) {
    let a = connect(cs).await;
    let b = connect(cs).await;
    let held = Lock::new(&a, "/locks/timeouts")
        .acquire()
        .await
        .expect("acquire");
    let lock_b = Lock::new(&b, "/locks/timeouts");
    assert!(lock_b.try_acquire().await.expect("try").is_none());
    let t = Instant::now();
    assert!(lock_b
        .acquire_timeout(Duration::from_millis(300))
        .await
        .expect("timed acquire")
        .is_none());
    assert!(t.elapsed() >= Duration::from_millis(300));
    // Abandoned attempts left no node: only the holder's remains.
    let children = a.get_children("/locks/timeouts").await.expect("children");
    assert_eq!(children.len(), 1, "{children:?}");
    let waiter = tokio::spawn(async move { lock_b.acquire_timeout(WAIT).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let token = held.fencing_token();
    held.verify().await.expect("holder verifies");
    held.release().await.expect("release");
    let g = waiter
        .await
        .expect("waiter")
        .expect("acquire")
        .expect("acquired after release");
    assert!(g.fencing_token() > token);
    g.release().await.expect("release");
    a.close().await.expect("close");
    b.close().await.expect("close");
}

async fn rwlock_and_semaphore(cs: &Servers) {
    let (r1, r2, w) = (connect(cs).await, connect(cs).await, connect(cs).await);
    let g1 = ReadWriteLock::new(&r1, "/locks/rw")
        .read(Some(WAIT))
        .await
        .expect("read 1");
    let g2 = ReadWriteLock::new(&r2, "/locks/rw")
        .read(Some(WAIT))
        .await
        .expect("read 2");
    let rw = ReadWriteLock::new(&w, "/locks/rw");
    let err = rw.write(Some(Duration::from_millis(200))).await;
    assert!(matches!(err, Err(Error::WaitTimeout(_))), "{err:?}");
    let writer = tokio::spawn(async move { rw.write(Some(WAIT)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!writer.is_finished(), "writer got in beside readers");
    g1.release().await.expect("release");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!writer.is_finished(), "writer got in beside a reader");
    g2.release().await.expect("release");
    let wg = writer.await.expect("writer").expect("write lock");
    // A reader queued behind the writer waits for it.
    let late = ReadWriteLock::new(&r1, "/locks/rw");
    let err = late.read(Some(Duration::from_millis(200))).await;
    assert!(matches!(err, Err(Error::WaitTimeout(_))), "{err:?}");
    wg.release().await.expect("release");
    for c in [r1, r2, w] {
        c.close().await.expect("close");
    }

    // Semaphore: 5 clients, 2 leases, never more than 2 inside, and 2 reached.
    let inside = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let zk = connect(cs).await;
        let (inside, peak) = (inside.clone(), peak.clone());
        tasks.push(tokio::spawn(async move {
            let sem = Semaphore::new(&zk, "/locks/sem", 2);
            for _ in 0..4 {
                let g = sem.acquire(Some(WAIT)).await.expect("lease");
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                assert!(now <= 2, "{now} holders of 2 leases");
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                g.release().await.expect("release");
            }
            zk.close().await.expect("close");
        }));
    }
    for t in tasks {
        t.await.expect("semaphore user panicked");
    }
    assert_eq!(
        peak.load(Ordering::SeqCst),
        2,
        "two leases never used at once"
    );
}

async fn lock_session_loss(cs: &Servers) {
    let a = connect(cs).await;
    let b = connect(cs).await;
    let ga = Lock::new(&a, "/locks/loss")
        .acquire()
        .await
        .expect("a acquires");
    let lock_b = Lock::new(&b, "/locks/loss");
    let waiter = tokio::spawn(async move { lock_b.acquire_timeout(WAIT).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished(), "b acquired while a holds");
    expire(cs, &a).await;
    let gb = waiter
        .await
        .expect("waiter")
        .expect("b acquires")
        .expect("b acquires after a's session ended");
    assert!(gb.fencing_token() > ga.fencing_token());
    // A learns it lost the lock: suspended at once, expired once it reconnects.
    let _ = a.exists("/").await;
    eventually("a's session to end", || a.state() == SessionState::Expired).await;
    assert!(ga.is_suspended());
    assert!(ga.verify().await.is_err());
    ga.release()
        .await
        .expect("releasing a lost lock is a no-op");
    gb.release().await.expect("release");
    b.close().await.expect("close");
}

// ---------------------------------------------------------------------------------------------
// election
// ---------------------------------------------------------------------------------------------

async fn election(cs: &Servers) {
    let mut clients = Vec::new();
    let mut latches = Vec::new();
    for i in 0..3 {
        let zk = connect(cs).await;
        latches.push(
            LeaderLatch::start(&zk, "/election/e1", &format!("c{i}"))
                .await
                .expect("join"),
        );
        clients.push(zk);
    }
    latches[0].wait_leadership(WAIT).await.expect("first leads");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        latches.iter().map(|l| l.is_leader()).collect::<Vec<_>>(),
        [true, false, false]
    );
    assert_eq!(
        latches[1]
            .current_leader()
            .await
            .expect("leader")
            .as_deref(),
        Some("c0")
    );
    let mut s1 = latches[1].subscribe();
    let mut s2 = latches[2].subscribe();
    // The leader leaves: exactly the next one takes over.
    let first = latches.remove(0);
    first.close().await.expect("close latch");
    latches[0]
        .wait_leadership(WAIT)
        .await
        .expect("second leads");
    assert_eq!(s1.next().await, Some(Leadership::Gained));
    assert!(!latches[1].is_leader());
    // The new leader's session ends: the last candidate takes over; the stream says so.
    expire(cs, &clients[1]).await;
    let _ = clients[1].exists("/").await;
    latches[1].wait_leadership(WAIT).await.expect("third leads");
    assert_eq!(s2.next().await, Some(Leadership::Gained));
    eventually("the expired leader to step down", || {
        !latches[0].is_leader()
    })
    .await;
    assert_eq!(s1.next().await, Some(Leadership::Lost));
    drop(latches);
    for c in clients {
        let _ = c.close().await;
    }
}

/// Leadership is lost as soon as the connection breaks (before any expiry), and regained on
/// reconnect while the session lives.
async fn election_suspended<K: Kind>(ens: &Local<K>) {
    let cs = Servers::of(ens);
    let zk = Client::connect(&cs.cs, cs.options().session_timeout(Duration::from_secs(8)))
        .await
        .expect("connect");
    let mut latch = LeaderLatch::start(&zk, "/election/e2", "only")
        .await
        .expect("join");
    latch.wait_leadership(WAIT).await.expect("leads");
    let mut stream = latch.subscribe();
    let node = node_of(ens, &zk);
    let t = Instant::now();
    blocking(|| ens.kill(node)).expect("kill the leader's server");
    let lost = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("bounded");
    assert_eq!(lost, Some(Leadership::Lost));
    eprintln!(
        "  leadership lost {:.1?} after its server died",
        t.elapsed()
    );
    let gained = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("bounded");
    assert_eq!(gained, Some(Leadership::Gained), "regained after reconnect");
    assert!(latch.is_leader());
    blocking(|| {
        ens.restart(node).expect("restart");
        ens.wait_for_leader(WAIT).expect("leader");
    });
    latch.close().await.expect("close");
    zk.close().await.expect("close");
}

// ---------------------------------------------------------------------------------------------
// barriers, queue, counter
// ---------------------------------------------------------------------------------------------

async fn barriers(cs: &Servers) {
    let a = connect(cs).await;
    let gate = Barrier::new(&a, "/barriers/gate");
    gate.set().await.expect("set");
    let err = gate.wait(Duration::from_millis(200)).await;
    assert!(matches!(err, Err(Error::WaitTimeout(_))), "{err:?}");
    let b = connect(cs).await;
    let waiter = {
        let gate = Barrier::new(&b, "/barriers/gate");
        tokio::spawn(async move { gate.wait(WAIT).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished());
    gate.remove().await.expect("remove");
    waiter.await.expect("waiter").expect("released");

    // Double barrier of 4: nobody gets past `enter` before all 4 arrived, nor past `leave`
    // before all 4 left.
    let arrived = Arc::new(AtomicUsize::new(0));
    let leaving = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..4 {
        let zk = connect(cs).await;
        let (arrived, leaving) = (arrived.clone(), leaving.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50 * i)).await;
            let db = DoubleBarrier::new(&zk, "/barriers/double", &format!("p{i}"), 4);
            arrived.fetch_add(1, Ordering::SeqCst);
            db.enter(WAIT).await.expect("enter");
            assert_eq!(
                arrived.load(Ordering::SeqCst),
                4,
                "entered before all arrived"
            );
            tokio::time::sleep(Duration::from_millis(30 * (4 - i))).await;
            leaving.fetch_add(1, Ordering::SeqCst);
            db.leave(WAIT).await.expect("leave");
            assert_eq!(leaving.load(Ordering::SeqCst), 4, "left before all left");
            zk.close().await.expect("close");
        }));
    }
    for t in tasks {
        t.await.expect("barrier participant panicked");
    }
    a.close().await.expect("close");
    b.close().await.expect("close");
}

async fn queue_exactly_once(cs: &Servers) {
    const ITEMS: usize = 200;
    let producer = connect(cs).await;
    let q = Queue::open(&producer, "/queues/studies", "producer")
        .await
        .expect("open");
    let taken = Arc::new(Mutex::new(Vec::<(usize, String)>::new()));
    let mut consumers = Vec::new();
    for c in 0..4 {
        let zk = connect(cs).await;
        let taken = taken.clone();
        consumers.push(tokio::spawn(async move {
            let q = Queue::open(&zk, "/queues/studies", &format!("worker-{c}"))
                .await
                .expect("open");
            let mut mine = Vec::new();
            loop {
                match q.take(Duration::from_millis(1500)).await {
                    Ok(item) => {
                        let payload = String::from_utf8(item.data.to_vec()).expect("utf8");
                        mine.push(payload.clone());
                        taken
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push((c, payload));
                        q.ack(&item).await.expect("ack");
                    }
                    Err(Error::WaitTimeout(_)) => break,
                    Err(e) => panic!("take: {e}"),
                }
            }
            zk.close().await.expect("close");
            mine
        }));
    }
    for i in 0..ITEMS {
        q.put(format!("study-{i:04}").as_bytes())
            .await
            .expect("put");
    }
    let mut per_consumer = Vec::new();
    for c in consumers {
        per_consumer.push(c.await.expect("consumer panicked"));
    }
    let all = taken.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let distinct: HashSet<&String> = all.iter().map(|(_, p)| p).collect();
    assert_eq!(all.len(), ITEMS, "items delivered (duplicates or losses)");
    assert_eq!(distinct.len(), ITEMS, "an item was delivered twice");
    for mine in &per_consumer {
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "FIFO broken within a consumer"
        );
    }
    eprintln!(
        "  {ITEMS} items split {:?} over 4 consumers",
        per_consumer.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert!(q.is_empty().await.expect("len"));
    assert!(q.unacked().await.expect("unacked").is_empty());
    // A consumer that dies before acking leaves a visible claim that can be requeued.
    let dying = connect(cs).await;
    let dq = Queue::open(&dying, "/queues/studies", "dying")
        .await
        .expect("open");
    q.put(b"orphan").await.expect("put");
    let item = dq.take(WAIT).await.expect("take");
    dying.close().await.expect("close");
    assert_eq!(
        q.unacked().await.expect("unacked"),
        [(item.name.clone(), "dying".to_string())]
    );
    assert_eq!(q.requeue_unacked("dying").await.expect("requeue"), 1);
    let again = q.take(WAIT).await.expect("take the requeued item");
    assert_eq!(again, item);
    q.ack(&again).await.expect("ack");
    producer.close().await.expect("close");
}

async fn counter(cs: &Servers) {
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let zk = connect(cs).await;
        tasks.push(tokio::spawn(async move {
            let c = SharedCounter::open(&zk, "/counters/c", 0)
                .await
                .expect("open");
            for _ in 0..25 {
                c.add(1).await.expect("add");
            }
            zk.close().await.expect("close");
        }));
    }
    for t in tasks {
        t.await.expect("counter user panicked");
    }
    let zk = connect(cs).await;
    let c = SharedCounter::open(&zk, "/counters/c", 0)
        .await
        .expect("open");
    let v = c.get().await.expect("get");
    assert_eq!(v.value, 100);
    assert!(
        c.compare_and_set(v, 7).await.expect("cas"),
        "CAS at the current version failed"
    );
    let stale = c.compare_and_set(v, 8).await.expect("cas");
    assert!(!stale, "CAS with a stale version succeeded");
    assert_eq!(c.get().await.expect("get").value, 7);
    zk.close().await.expect("close");
}

// ---------------------------------------------------------------------------------------------
// tree cache
// ---------------------------------------------------------------------------------------------

/// The subtree at `root` as read directly (path → data).
async fn read_tree(zk: &Client, root: &str) -> BTreeMap<String, Bytes> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_string()];
    while let Some(p) = todo.pop() {
        if let Ok((data, _)) = zk.get_data(&p).await {
            for c in zk.get_children(&p).await.unwrap_or_default() {
                todo.push(format!("{p}/{c}"));
            }
            out.insert(p, data);
        }
    }
    out
}

/// Random-ish writes under `root` by one client.
async fn churn(zk: Client, root: String, seed: usize, ops: usize) {
    for i in 0..ops {
        let a = (seed * 7 + i * 13) % 6;
        let b = (seed + i * 5) % 4;
        let dir = format!("{root}/d{a}");
        let leaf = format!("{dir}/n{b}");
        let r = match i % 4 {
            0 => zk
                .create(&dir, b"dir", CreateMode::Persistent)
                .await
                .map(drop),
            1 => zk
                .create(
                    &leaf,
                    format!("{seed}:{i}").as_bytes(),
                    CreateMode::Persistent,
                )
                .await
                .map(drop),
            2 => zk
                .set_data(&leaf, format!("{seed}:{i}").as_bytes(), None)
                .await
                .map(drop),
            _ => zk.delete(&leaf, None).await,
        };
        match r {
            Ok(()) | Err(Error::NodeExists) | Err(Error::NoNode) | Err(Error::NotEmpty) => {}
            Err(Error::ConnectionLoss) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("churn: {e}"),
        }
    }
}

async fn converged(cache: &TreeCache, zk: &Client, root: &str) {
    let until = Instant::now() + WAIT;
    loop {
        let want = read_tree(zk, root).await;
        if cache.snapshot() == want {
            return;
        }
        assert!(
            Instant::now() < until,
            "cache did not converge:\n cache {:?}\n tree  {:?}",
            cache.snapshot(),
            want
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn cache_convergence<K: Kind>(ens: &Local<K>) {
    let cs = Servers::of(ens);
    let zk = connect(&cs).await;
    zk.create("/cache", b"root", CreateMode::Persistent)
        .await
        .expect("create root");
    zk.create("/cache/pre", b"before start", CreateMode::Persistent)
        .await
        .expect("create");
    let cache = TreeCache::start(&zk, "/cache").await.expect("start cache");
    assert_eq!(
        cache.data("/cache/pre").as_deref(),
        Some(&b"before start"[..])
    );
    let mut events = cache.subscribe();
    // A change shows up as an event within a bound.
    let t = Instant::now();
    zk.set_data("/cache/pre", b"changed", None)
        .await
        .expect("set");
    loop {
        let ev = tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("event in time")
            .expect("stream open");
        if ev == CacheEvent::Changed("/cache/pre".into()) {
            break;
        }
    }
    eprintln!(
        "  change seen by the cache {:.1?} after the write",
        t.elapsed()
    );
    // Concurrent writers.
    let mut writers = Vec::new();
    for w in 0..3 {
        let c = connect(&cs).await;
        writers.push(tokio::spawn(churn(c, "/cache".into(), w, 80)));
    }
    for w in writers {
        w.await.expect("writer panicked");
    }
    converged(&cache, &zk, "/cache").await;
    // The cache's own server dies while writes go on: it resyncs after the reconnect.
    let node = node_of(ens, &zk);
    let writer = connect(&cs).await;
    let w = tokio::spawn(churn(writer, "/cache".into(), 9, 60));
    blocking(|| ens.kill(node)).expect("kill the cache's server");
    w.await.expect("writer panicked");
    converged(&cache, &zk, "/cache").await;
    assert!(cache.is_live());
    assert!(cache.zxid() > 0);
    blocking(|| {
        ens.restart(node).expect("restart");
        ens.wait_for_leader(WAIT).expect("leader");
    });
    cache.close();
    zk.close().await.expect("close");
}

// ---------------------------------------------------------------------------------------------
// two-phase commit
// ---------------------------------------------------------------------------------------------

/// Where the coordinator crashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Crash {
    /// After `begin`, before any vote.
    BeforeVotes,
    /// After one of three votes.
    AfterSomeVotes,
    /// After writing the decision, before any participant learned it.
    AfterDecision,
    /// After one participant applied the decision.
    AfterSomeApplied,
}

const PARTICIPANTS: [&str; 3] = ["hospital", "lab", "imaging"];

/// A participant that votes `vote` (unless `voted` already), waits for the decision, applies it
/// and acks; returns the outcome it learned.
async fn participant_flow(
    cs: Servers,
    root: String,
    txid: String,
    name: &'static str,
    vote: Option<Vote>,
) -> Outcome {
    let zk = connect(&cs).await;
    let p = Participant::new(&zk, &root, name).with_grace(Duration::from_millis(500));
    if let Some(v) = vote {
        p.vote(&txid, v).await.expect("vote");
    }
    let outcome = p.await_decision(&txid, WAIT).await.expect("decision");
    p.ack(&txid, outcome).await.expect("ack");
    zk.close().await.expect("close");
    outcome
}

async fn twophase_crashes(cs: &Servers) {
    for (n, crash) in [
        Crash::BeforeVotes,
        Crash::AfterSomeVotes,
        Crash::AfterDecision,
        Crash::AfterSomeApplied,
    ]
    .into_iter()
    .enumerate()
    {
        for abort in [false, true] {
            let root = "/2pc/crash";
            let txid = format!("tx-{n}-{abort}");
            let c1 = connect(cs).await;
            let c2 = connect(cs).await;
            let mut l1 = LeaderLatch::start(&c1, "/2pc/coordinators", "c1")
                .await
                .expect("latch");
            l1.wait_leadership(WAIT).await.expect("c1 leads");
            let mut l2 = LeaderLatch::start(&c2, "/2pc/coordinators", "c2")
                .await
                .expect("latch");
            let coord = Coordinator::new(&c1, root, "c1");
            let deadline = SystemTime::now() + Duration::from_secs(20);
            coord
                .begin(&txid, &PARTICIPANTS, b"joint diagnosis", deadline)
                .await
                .expect("begin");
            let mut early = Vec::new();
            let last_vote = if abort { Vote::Abort } else { Vote::Commit };
            let expected = if abort {
                Outcome::Abort
            } else {
                Outcome::Commit
            };
            let votes = |i: usize| if i == 2 { last_vote } else { Vote::Commit };
            // Steps the crashed coordinator got through, with its participants.
            match crash {
                Crash::BeforeVotes => {}
                Crash::AfterSomeVotes => {
                    let zk = connect(cs).await;
                    Participant::new(&zk, root, PARTICIPANTS[0])
                        .vote(&txid, votes(0))
                        .await
                        .expect("vote");
                    zk.close().await.expect("close");
                }
                Crash::AfterDecision | Crash::AfterSomeApplied => {
                    for (i, p) in PARTICIPANTS.iter().enumerate() {
                        let zk = connect(cs).await;
                        Participant::new(&zk, root, p)
                            .vote(&txid, votes(i))
                            .await
                            .expect("vote");
                        zk.close().await.expect("close");
                    }
                    assert_eq!(
                        coord.try_decide(&txid).await.expect("decide"),
                        Some(expected)
                    );
                    if crash == Crash::AfterSomeApplied {
                        early.push(
                            participant_flow(
                                cs.clone(),
                                root.into(),
                                txid.clone(),
                                PARTICIPANTS[0],
                                None,
                            )
                            .await,
                        );
                    }
                }
            }
            // Crash: the coordinator's session ends without any cleanup of the transaction.
            expire(cs, &c1).await;
            drop(l1);
            // The next coordinator is elected and finishes what is open, from the tree alone.
            l2.wait_leadership(WAIT).await.expect("c2 takes over");
            let coord2 = Coordinator::new(&c2, root, "c2");
            let mut flows = Vec::new();
            for (i, p) in PARTICIPANTS.iter().enumerate() {
                let already_voted = match crash {
                    Crash::BeforeVotes => false,
                    Crash::AfterSomeVotes => i == 0,
                    Crash::AfterDecision | Crash::AfterSomeApplied => true,
                };
                if crash == Crash::AfterSomeApplied && i == 0 {
                    continue;
                }
                let vote = (!already_voted).then(|| votes(i));
                flows.push(tokio::spawn(participant_flow(
                    cs.clone(),
                    root.into(),
                    txid.clone(),
                    p,
                    vote,
                )));
            }
            let recovered = coord2.recover(WAIT).await.expect("recover");
            let outcomes: Vec<Outcome> =
                futures_join(flows).await.into_iter().chain(early).collect();
            assert!(
                outcomes.iter().all(|o| *o == expected),
                "{crash:?}: participants learned {outcomes:?}, expected {expected:?}"
            );
            if matches!(crash, Crash::BeforeVotes | Crash::AfterSomeVotes) {
                assert_eq!(recovered, [(txid.clone(), expected)], "{crash:?}");
            }
            let st = coord2.status(&txid).await.expect("status");
            assert_eq!(st.decision.as_ref().map(|d| d.0), Some(expected));
            assert!(st.is_done(), "{crash:?}: {st:?}");
            assert!(coord2.open_transactions().await.expect("open").is_empty());
            l2.close().await.expect("close latch");
            c2.close().await.expect("close");
        }
    }
}

async fn futures_join<T: Send + 'static>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("task panicked"));
    }
    out
}

async fn twophase_deadline(cs: &Servers) {
    let root = "/2pc/deadline";
    let zk = connect(cs).await;
    let coord = Coordinator::new(&zk, root, "c");
    // A vote missing at the deadline aborts, with the coordinator driving.
    let deadline = SystemTime::now() + Duration::from_millis(800);
    coord
        .begin("late", &PARTICIPANTS, b"x", deadline)
        .await
        .expect("begin");
    Participant::new(&zk, root, "hospital")
        .vote("late", Vote::Commit)
        .await
        .expect("vote");
    let t = Instant::now();
    assert_eq!(
        coord.drive("late", WAIT).await.expect("drive"),
        Outcome::Abort
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "abort took {:?}",
        t.elapsed()
    );
    let st = coord.status("late").await.expect("status");
    assert!(
        st.decision
            .as_ref()
            .is_some_and(|d| d.1.contains("deadline")),
        "{st:?}"
    );
    // A late vote does not change anything.
    let late = Participant::new(&zk, root, "lab");
    late.vote("late", Vote::Commit)
        .await
        .expect("late vote is recorded");
    assert_eq!(
        late.await_decision("late", WAIT).await.expect("decision"),
        Outcome::Abort
    );
    // Without any coordinator, a waiting participant resolves after deadline + grace.
    let deadline = SystemTime::now() + Duration::from_millis(500);
    coord
        .begin("orphan", &PARTICIPANTS, b"y", deadline)
        .await
        .expect("begin");
    let p = Participant::new(&zk, root, "imaging").with_grace(Duration::from_millis(300));
    p.vote("orphan", Vote::Commit).await.expect("vote");
    let t = Instant::now();
    assert_eq!(
        p.await_decision("orphan", WAIT).await.expect("decision"),
        Outcome::Abort
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    // And with every vote in but no coordinator, the participants commit on their own.
    let deadline = SystemTime::now() + Duration::from_millis(300);
    coord
        .begin("lonely", &PARTICIPANTS, b"z", deadline)
        .await
        .expect("begin");
    for p in PARTICIPANTS {
        Participant::new(&zk, root, p)
            .vote("lonely", Vote::Commit)
            .await
            .expect("vote");
    }
    let p = Participant::new(&zk, root, "lab").with_grace(Duration::from_millis(200));
    assert_eq!(
        p.await_decision("lonely", WAIT).await.expect("decision"),
        Outcome::Commit
    );
    // Votes are final.
    let err = Participant::new(&zk, root, "lab")
        .vote("lonely", Vote::Abort)
        .await;
    assert!(matches!(err, Err(Error::Recipe(_))), "{err:?}");
    // `begin` is idempotent for the same transaction, refuses a different one.
    coord
        .begin("lonely", &PARTICIPANTS, b"z", deadline)
        .await
        .expect("same begin");
    let err = coord
        .begin("lonely", &PARTICIPANTS, b"other", deadline)
        .await;
    assert_eq!(err.map(|_| ()), Err(Error::NodeExists));
    zk.close().await.expect("close");
}

/// Many resolvers race on transactions whose last vote lands around the deadline: every one of
/// them reports the same outcome, and the tree has one decision.
async fn twophase_races(cs: &Servers) {
    let root = "/2pc/races";
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(connect(cs).await);
    }
    let mut seen = [0usize; 2];
    for round in 0..8 {
        let txid = format!("race-{round}");
        let deadline = SystemTime::now() + Duration::from_millis(300);
        Coordinator::new(&clients[0], root, "c0")
            .begin(&txid, &PARTICIPANTS, b"r", deadline)
            .await
            .expect("begin");
        for p in &PARTICIPANTS[..2] {
            Participant::new(&clients[0], root, p)
                .vote(&txid, Vote::Commit)
                .await
                .expect("vote");
        }
        let mut racers = Vec::new();
        for (i, zk) in clients.iter().enumerate() {
            let (zk, txid) = (zk.clone(), txid.clone());
            racers.push(tokio::spawn(async move {
                let c = Coordinator::new(&zk, root, &format!("c{i}"));
                if i == 1 {
                    // The last vote, landing near the deadline.
                    tokio::time::sleep(Duration::from_millis(250 + 15 * round)).await;
                    let _ = Participant::new(&zk, root, "imaging")
                        .vote(&txid, Vote::Commit)
                        .await;
                }
                c.drive(&txid, WAIT).await.expect("drive")
            }));
        }
        let outcomes = futures_join(racers).await;
        assert!(
            outcomes.windows(2).all(|w| w[0] == w[1]),
            "two outcomes: {outcomes:?}"
        );
        let st = twophase::status(&clients[0], root, &txid)
            .await
            .expect("status");
        assert_eq!(st.decision.map(|d| d.0), Some(outcomes[0]));
        if outcomes[0] == Outcome::Commit {
            assert!(st
                .votes
                .values()
                .all(|v| *v == VoteState::Voted(Vote::Commit)));
        }
        seen[(outcomes[0] == Outcome::Commit) as usize] += 1;
    }
    eprintln!(
        "  8 racing rounds: {} aborted, {} committed",
        seen[0], seen[1]
    );
    for c in clients {
        c.close().await.expect("close");
    }
}

/// A joint diagnosis as three institutions that trust nobody else: a fourth can neither read
/// the transaction nor forge a vote nor write the decision first; a party writes only its own
/// vote; once written, the decision can be changed or removed by nobody, the coordinator included.
async fn twophase_guarded(cs: &Servers) {
    let root = "/2pc/guarded";
    let txid = "case-17";
    let tx = format!("{root}/{txid}");
    let (coord, hospital, lab, imaging, rogue) = (
        institution(cs, "coordinator").await,
        institution(cs, "hospital").await,
        institution(cs, "lab").await,
        institution(cs, "imaging").await,
        institution(cs, "rogue").await,
    );
    let parties: Vec<Party> = PARTICIPANTS
        .iter()
        .map(|p| Party {
            name: p.to_string(),
            id: id_of(p),
        })
        .collect();
    let coordinator = Coordinator::new(&coord, root, "coordinator").identity(id_of("coordinator"));
    let deadline = SystemTime::now() + Duration::from_secs(60);
    let proposal = coordinator
        .begin_guarded(txid, &parties, b"joint diagnosis", deadline)
        .await
        .expect("begin");
    assert_eq!(proposal.identities.len(), 4);
    // The rogue institution: nothing.
    caught_up(&rogue, &tx).await;
    refused("the rogue reads the proposal", rogue.get_data(&tx).await);
    refused("the rogue lists the votes", rogue.get_children(&tx).await);
    refused(
        "the rogue forges the lab's vote",
        rogue
            .set_data(&format!("{tx}/vote-lab"), b"commit", Some(0))
            .await,
    );
    refused(
        "the rogue votes through the recipe",
        Participant::new(&rogue, root, "lab")
            .vote(txid, Vote::Abort)
            .await,
    );
    refused(
        "the rogue writes the decision first",
        rogue
            .create(&format!("{tx}/decision"), b"commit", CreateMode::Persistent)
            .await,
    );
    refused(
        "the rogue deletes a vote",
        rogue.delete(&format!("{tx}/vote-lab"), None).await,
    );
    // A party writes only its own vote.
    refused(
        "the lab writes the hospital's vote",
        lab.set_data(&format!("{tx}/vote-hospital"), b"abort", Some(0))
            .await,
    );
    for (zk, name) in [
        (&hospital, "hospital"),
        (&lab, "lab"),
        (&imaging, "imaging"),
    ] {
        Participant::new(zk, root, name)
            .vote(txid, Vote::Commit)
            .await
            .expect("vote");
    }
    let outcome = coordinator.drive(txid, WAIT).await.expect("drive");
    assert_eq!(outcome, Outcome::Commit);
    let decision = format!("{tx}/decision");
    for (zk, name) in [
        (&hospital, "hospital"),
        (&lab, "lab"),
        (&imaging, "imaging"),
    ] {
        let p = Participant::new(zk, root, name);
        assert_eq!(
            p.await_decision(txid, WAIT).await.expect("decision"),
            Outcome::Commit
        );
        p.ack(txid, Outcome::Commit).await.expect("ack");
    }
    caught_up(&rogue, &decision).await;
    refused(
        "the rogue reads the decision",
        rogue.get_data(&decision).await,
    );
    refused(
        "a party changes the decision",
        lab.set_data(&decision, b"abort", None).await,
    );
    refused(
        "the coordinator changes the decision",
        coord.set_data(&decision, b"abort", None).await,
    );
    refused(
        "the coordinator removes the decision",
        coord.delete(&decision, None).await,
    );
    assert!(coordinator.status(txid).await.expect("status").is_done());
    for zk in [coord, hospital, lab, imaging, rogue] {
        zk.close().await.expect("close");
    }
}

/// The election, the double barrier and the queue among named members: an unrelated
/// institution can neither see nor join any of them, the members work as usual.
async fn guarded_election_barrier_queue(cs: &Servers) {
    let root = "/guarded-recipes";
    let (hospital, lab, rogue) = (
        institution(cs, "hospital").await,
        institution(cs, "lab").await,
        institution(cs, "rogue").await,
    );
    let members = [id_of("hospital"), id_of("lab")];

    let election = format!("{root}/election");
    let mut latch = LeaderLatch::start_among(&hospital, &election, "hospital", &members)
        .await
        .expect("the hospital stands");
    latch
        .wait_leadership(WAIT)
        .await
        .expect("the only candidate leads");
    let second = LeaderLatch::start_among(&lab, &election, "lab", &members)
        .await
        .expect("the lab stands");
    assert!(!second.is_leader());
    caught_up(&rogue, &election).await;
    refused(
        "the rogue lists the election",
        rogue.get_children(&election).await,
    );
    refused(
        "the rogue reads the leader",
        rogue.get_data(latch.path()).await,
    );
    refused(
        "the rogue stands",
        LeaderLatch::start(&rogue, &election, "rogue").await,
    );
    refused(
        "the rogue unseats the leader",
        rogue.delete(latch.path(), None).await,
    );
    latch.close().await.expect("close");
    second.close().await.expect("close");

    let meeting = format!("{root}/meeting");
    let enter = |zk: Client, id: &'static str| {
        let meeting = meeting.clone();
        let members = members.clone();
        tokio::spawn(async move {
            DoubleBarrier::new(&zk, &meeting, id, 2)
                .participants(&members)
                .enter(WAIT)
                .await
        })
    };
    let (a, b) = (
        enter(hospital.clone(), "hospital"),
        enter(lab.clone(), "lab"),
    );
    a.await.expect("task").expect("the hospital enters");
    b.await.expect("task").expect("the lab enters");
    caught_up(&rogue, &meeting).await;
    refused(
        "the rogue lists the meeting",
        rogue.get_children(&meeting).await,
    );
    refused(
        "the rogue opens the barrier",
        rogue.delete(&format!("{meeting}/ready"), None).await,
    );

    let dir = format!("{root}/queue");
    let producer = Queue::open_among(&hospital, &dir, "hospital", &members)
        .await
        .expect("open");
    producer.put(b"study 1").await.expect("put");
    caught_up(&rogue, &dir).await;
    refused(
        "the rogue reads the items",
        rogue.get_children(&format!("{dir}/items")).await,
    );
    refused(
        "the rogue adds an item",
        rogue
            .create(
                &format!("{dir}/items/item-"),
                b"forged",
                CreateMode::PersistentSequential,
            )
            .await,
    );
    // (ZooKeeper 3.8.0 lets the rogue's open see that the directories exist; the take is
    // refused on both.)
    let taken = match Queue::open(&rogue, &dir, "rogue").await {
        Ok(q) => q.try_take().await.map(|_| ()),
        Err(e) => Err(e),
    };
    refused("the rogue takes an item", taken);
    let consumer = Queue::open_among(&lab, &dir, "lab", &members)
        .await
        .expect("open");
    let item = consumer.take(WAIT).await.expect("the lab takes the item");
    assert_eq!(&item.data[..], b"study 1");
    consumer.ack(&item).await.expect("ack");
    for zk in [hospital, lab, rogue] {
        zk.close().await.expect("close");
    }
}

// ---------------------------------------------------------------------------------------------
// leader change
// ---------------------------------------------------------------------------------------------

/// Lock contention and a 2PC while the cluster's leader is killed: never two holders, tokens
/// still increase, work resumes, and the transaction finishes.
async fn leader_change<K: Kind>(ens: &Local<K>) {
    let cs = Servers::of(ens);
    let res = Arc::new(Resource::default());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let zk = connect(&cs).await;
        let (res, stop) = (res.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let lock = Lock::new(&zk, "/locks/failover");
            let mut done = 0;
            while !stop.load(Ordering::SeqCst) {
                let g = match lock.acquire_timeout(WAIT).await {
                    Ok(Some(g)) => g,
                    Ok(None) => panic!("no progress within {WAIT:?}"),
                    Err(e) => panic!("acquire: {e}"),
                };
                if g.is_suspended() {
                    // Acting while suspended is exactly what fencing is for; don't.
                    g.release().await.expect("release");
                    continue;
                }
                res.enter(g.fencing_token());
                tokio::time::sleep(Duration::from_millis(2)).await;
                res.leave();
                g.release().await.expect("release");
                done += 1;
            }
            zk.close().await.expect("close");
            done
        }));
    }
    let zk = connect(&cs).await;
    let coord = Coordinator::new(&zk, "/2pc/failover", "c");
    coord
        .begin(
            "tx",
            &PARTICIPANTS,
            b"across a leader change",
            SystemTime::now() + Duration::from_secs(20),
        )
        .await
        .expect("begin");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = res.entries.load(Ordering::SeqCst);
    let leader = blocking(|| ens.wait_for_leader(WAIT)).expect("leader");
    let t = Instant::now();
    blocking(|| ens.kill(leader)).expect("kill the leader");
    let new_leader = blocking(|| ens.wait_for_leader(WAIT)).expect("a new leader");
    eprintln!(
        "  leader {leader} killed, {new_leader} leads after {:.1?}",
        t.elapsed()
    );
    let flows: Vec<_> = PARTICIPANTS
        .iter()
        .map(|p| {
            tokio::spawn(participant_flow(
                cs.clone(),
                "/2pc/failover".into(),
                "tx".into(),
                p,
                Some(Vote::Commit),
            ))
        })
        .collect();
    assert_eq!(
        coord.drive("tx", WAIT).await.expect("drive"),
        Outcome::Commit
    );
    let outcomes = futures_join(flows).await;
    assert!(
        outcomes.iter().all(|o| *o == Outcome::Commit),
        "{outcomes:?}"
    );
    let target = res.entries.load(Ordering::SeqCst) + 20;
    eventually("lock progress after the leader change", || {
        res.entries.load(Ordering::SeqCst) >= target
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let done: usize = futures_join(tasks).await.into_iter().sum();
    eprintln!("  {before} acquisitions before the kill, {done} in all");
    blocking(|| {
        ens.restart(leader).expect("restart");
        ens.wait_for_leader(WAIT).expect("leader");
    });
    zk.close().await.expect("close");
}
