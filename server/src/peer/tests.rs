//! Peer RPC over loopback against fake services: pipelining, ordering, failures, limits, and the
//! openraft error mapping.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::{self, BoxFuture, FutureExt};
use openraft::error::{Fatal, RPCError, RaftError};
use openraft::network::{RPCOption, RPCTypes};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest, VoteResponse};
use openraft::testing::log_id;
use openraft::{BasicNode, Entry, EntryPayload, RaftNetwork, RaftNetworkFactory, Vote};
use synod_raft_store::types::{encode, Command, NodeId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::frame::{decode_frame, Frame};
use super::*;

/// No test may run longer than this.
const TEST_LIMIT: Duration = Duration::from_secs(20);

/// A generous per-call timeout for calls that are expected to succeed.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs a test body, failing it if it takes longer than [`TEST_LIMIT`].
async fn bounded<F: Future>(body: F) -> F::Output {
    tokio::time::timeout(TEST_LIMIT, body)
        .await
        .expect("test exceeded its time limit")
}

/// A pseudo-random delay of 0–5 ms derived from `n` (reproducible, but scattered enough that
/// responses complete out of order).
fn jitter(n: u64) -> Duration {
    let mut x = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    Duration::from_micros(x % 5000)
}

/// A fake node that records what it is handed.
#[derive(Default)]
struct Fake {
    /// The source addresses of the connections requests came in on.
    peers: Mutex<HashSet<SocketAddr>>,
    /// The `time_ms` of each forwarded `Reap`, in the order `handle` saw them.
    forwards: Mutex<Vec<i64>>,
    /// The marker of each Touch / Vote, in the order their responses completed.
    completed: Arc<Mutex<Vec<u64>>>,
}

impl PeerService for Fake {
    /// Where the connection comes from.
    type Conn = SocketAddr;

    fn open(&self, from: SocketAddr, _node: NodeId) -> SocketAddr {
        from
    }

    fn handle(&self, from: &SocketAddr, req: PeerRequest) -> BoxFuture<'static, PeerResponse> {
        self.peers.lock().expect("peers").insert(*from);
        let completed = self.completed.clone();
        match req {
            // Echoes the request, so the caller can check it got its own response.
            PeerRequest::Vote(v) => {
                let marker = v.last_log_id.map_or(0, |l| l.index);
                async move {
                    tokio::time::sleep(jitter(marker)).await;
                    completed.lock().expect("completed").push(marker);
                    PeerResponse::Vote(Ok(VoteResponse {
                        vote: v.vote,
                        vote_granted: true,
                        last_log_id: v.last_log_id,
                    }))
                }
                .boxed()
            }
            PeerRequest::Touch(sessions) => {
                let marker = sessions.first().map_or(0, |s| s.session_id as u64);
                async move {
                    tokio::time::sleep(jitter(marker)).await;
                    completed.lock().expect("completed").push(marker);
                    PeerResponse::Touch(None)
                }
                .boxed()
            }
            PeerRequest::Forward(Command::Reap { time_ms, .. }) => {
                self.forwards.lock().expect("forwards").push(time_ms);
                future::ready(PeerResponse::Forward(Ok(()))).boxed()
            }
            PeerRequest::Forward(_) => future::ready(PeerResponse::Forward(Err(
                ForwardError::Failed("unexpected command".to_string()),
            )))
            .boxed(),
            PeerRequest::ForwardGroup(cmds) => {
                let mut forwards = self.forwards.lock().expect("forwards");
                for cmd in cmds {
                    match cmd {
                        Command::Reap { time_ms, .. } => forwards.push(time_ms),
                        _ => {
                            return future::ready(PeerResponse::ForwardGroup(Err(
                                ForwardError::Failed("unexpected command".to_string()),
                            )))
                            .boxed()
                        }
                    }
                }
                future::ready(PeerResponse::ForwardGroup(Ok(()))).boxed()
            }
            // Never answered.
            PeerRequest::ReadIndex
            | PeerRequest::ReadIndexFollowing { .. }
            | PeerRequest::SavedVote => future::pending().boxed(),
            // The remote Raft refuses.
            PeerRequest::AppendEntries(_) => future::ready(PeerResponse::AppendEntries(Err(
                RaftError::Fatal(Fatal::Stopped),
            )))
            .boxed(),
            // A response of the wrong kind.
            PeerRequest::InstallSnapshot(_) => future::ready(PeerResponse::Touch(None)).boxed(),
            PeerRequest::HistoryFloor => future::ready(PeerResponse::HistoryFloor(None)).boxed(),
            PeerRequest::Describe | PeerRequest::Reconfig(_) => future::pending().boxed(),
        }
    }
}

/// A node that never answers anything.
struct Silent;

impl PeerService for Silent {
    /// Nothing to keep.
    type Conn = ();

    fn open(&self, _from: SocketAddr, _node: NodeId) {}

    fn handle(&self, _conn: &(), _req: PeerRequest) -> BoxFuture<'static, PeerResponse> {
        future::pending().boxed()
    }
}

/// A peer server running in a task; aborted if the test drops it without stopping it.
struct TestServer {
    /// Where it listens.
    addr: SocketAddr,
    /// Dropping or sending on it shuts the server down.
    stop: Option<oneshot::Sender<()>>,
    /// The `serve` task.
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Node 2 (the tests call it as target 2).
    async fn start<S: PeerService>(addr: SocketAddr, service: Arc<S>, limits: PeerLimits) -> Self {
        Self::start_as(2, addr, service, limits).await
    }

    async fn start_as<S: PeerService>(
        node: NodeId,
        addr: SocketAddr,
        service: Arc<S>,
        limits: PeerLimits,
    ) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_with_limits(
            listener,
            LocalPeer::insecure(node),
            service,
            limits,
            async move {
                let _ = stopped.await;
            },
        ));
        TestServer {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn any_port<S: PeerService>(service: Arc<S>) -> Self {
        Self::start(loopback(), service, PeerLimits::default()).await
    }

    /// Shuts the server down and waits until its listener and connections are closed.
    async fn stop(mut self) {
        drop(self.stop.take());
        if let Some(task) = self.task.take() {
            task.await.expect("server task");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A loopback address nothing listens on (bound, then released).
async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind(loopback()).await.expect("bind loopback");
    l.local_addr().expect("local addr")
}

fn vote_req(marker: u64) -> VoteRequest<NodeId> {
    VoteRequest::new(Vote::new(marker, 1), Some(log_id(marker, 1, marker)))
}

fn reap(marker: i64) -> Command {
    Command::Reap {
        time_ms: marker,
        paths: Vec::new(),
    }
}

/// (a) 1,000 concurrent calls share one connection and each gets its own response, although the
/// responses complete out of order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_pipelines_concurrent_calls_on_one_connection() {
    bounded(async {
        let fake = Arc::new(Fake::default());
        let server = TestServer::any_port(fake.clone()).await;
        let addr = server.addr.to_string();
        let pool = PeerPool::default();
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..1000u64 {
            let (pool, addr) = (pool.clone(), addr.clone());
            calls.spawn(async move {
                let req = if i % 2 == 0 {
                    PeerRequest::Vote(vote_req(i))
                } else {
                    touch(&[i as i64])
                };
                (i, pool.call(2, &addr, req, CALL_TIMEOUT).await)
            });
        }
        let mut answered = 0;
        while let Some(joined) = calls.join_next().await {
            let (i, result) = joined.expect("call task");
            match result.expect("call") {
                PeerResponse::Vote(Ok(v)) => {
                    assert_eq!(i % 2, 0, "call {i} got a vote response");
                    assert_eq!(
                        v.vote,
                        Vote::new(i, 1),
                        "call {i} got another call's response"
                    );
                    assert_eq!(v.last_log_id, Some(log_id(i, 1, i)));
                }
                PeerResponse::Touch(_) => assert_eq!(i % 2, 1, "call {i} got a touch response"),
                other => panic!("call {i}: unexpected response {other:?}"),
            }
            answered += 1;
        }
        assert_eq!(answered, 1000);
        assert_eq!(
            fake.peers.lock().expect("peers").len(),
            1,
            "all calls share one connection"
        );
        let completed = fake.completed.lock().expect("completed").clone();
        assert_eq!(completed.len(), 1000);
        assert!(
            completed.windows(2).any(|w| w[0] > w[1]),
            "responses completed out of order"
        );
        assert_eq!(pool.pending_calls(&addr).await, 0);
        server.stop().await;
    })
    .await
}

/// (b) Calls created in order and driven concurrently by `join_all` from one task reach
/// `handle` in that order, both while the connection is being opened and once it is open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_forwards_reach_the_service_in_call_order() {
    bounded(async {
        let fake = Arc::new(Fake::default());
        let server = TestServer::any_port(fake.clone()).await;
        let addr = server.addr.to_string();
        let pool = PeerPool::default();
        for round in 0..2i64 {
            let calls: Vec<_> = (0..500i64)
                .map(|i| {
                    pool.call(
                        2,
                        &addr,
                        PeerRequest::Forward(reap(round * 1000 + i)),
                        CALL_TIMEOUT,
                    )
                })
                .collect();
            for result in future::join_all(calls).await {
                assert!(
                    matches!(result, Ok(PeerResponse::Forward(Ok(())))),
                    "{result:?}"
                );
            }
        }
        let expected: Vec<i64> = (0..500).chain(1000..1500).collect();
        assert_eq!(*fake.forwards.lock().expect("forwards"), expected);
        server.stop().await;
    })
    .await
}

/// (b1) Forwarded groups, one frame each, interleaved with single forwards: every command
/// reaches `handle` in the order sent, and each group gets one answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_forwarded_groups_keep_the_order_of_their_commands() {
    bounded(async {
        let fake = Arc::new(Fake::default());
        let server = TestServer::any_port(fake.clone()).await;
        let addr = server.addr.to_string();
        let pool = PeerPool::default();
        let requests: Vec<PeerRequest> = (0..50i64)
            .map(|g| {
                if g % 5 == 4 {
                    PeerRequest::Forward(reap(g * 100))
                } else {
                    PeerRequest::ForwardGroup((0..=g).map(|i| reap(g * 100 + i)).collect())
                }
            })
            .collect();
        let answers = pool.call_all(2, &addr, requests, CALL_TIMEOUT).await;
        assert_eq!(answers.len(), 50, "one answer per request");
        for (g, answer) in answers.iter().enumerate() {
            if g % 5 == 4 {
                assert!(
                    matches!(answer, Ok(PeerResponse::Forward(Ok(())))),
                    "{answer:?}"
                );
            } else {
                assert!(
                    matches!(answer, Ok(PeerResponse::ForwardGroup(Ok(())))),
                    "{answer:?}"
                );
            }
        }
        let expected: Vec<i64> = (0..50i64)
            .flat_map(|g| {
                let n = if g % 5 == 4 { 1 } else { g + 1 };
                (0..n).map(move |i| g * 100 + i)
            })
            .collect();
        assert_eq!(*fake.forwards.lock().expect("forwards"), expected);
        server.stop().await;
    })
    .await
}

/// (b2) Groups of calls (`call_all`), created in order and driven concurrently from one task,
/// reach `handle` in order, while the connection is being opened and once it is open; each
/// request gets its own answer, in its place: a refused one (too large) and an unanswered one
/// (timed out) do not hold back or stop the others, and nothing stays pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_call_groups_reach_the_service_in_order_with_an_answer_each() {
    bounded(async {
        let fake = Arc::new(Fake::default());
        let server = TestServer::any_port(fake.clone()).await;
        let addr = server.addr.to_string();
        let pool = PeerPool::new(LocalPeer::insecure(1), 512);
        for round in 0..2i64 {
            let groups: Vec<_> = (0..50i64)
                .map(|g| {
                    let reqs = (0..10i64)
                        .map(|i| PeerRequest::Forward(reap(round * 1000 + g * 10 + i)))
                        .collect();
                    pool.call_all(2, &addr, reqs, CALL_TIMEOUT)
                })
                .collect();
            for answers in future::join_all(groups).await {
                assert_eq!(answers.len(), 10);
                for answer in answers {
                    assert!(
                        matches!(answer, Ok(PeerResponse::Forward(Ok(())))),
                        "{answer:?}"
                    );
                }
            }
        }
        let expected: Vec<i64> = (0..500).chain(1000..1500).collect();
        assert_eq!(*fake.forwards.lock().expect("forwards"), expected);

        let timeout = Duration::from_millis(200);
        let answers = pool
            .call_all(
                2,
                &addr,
                vec![
                    PeerRequest::Forward(reap(7)),
                    touch(&[1; 300]), // over the pool's 512 bytes
                    PeerRequest::ReadIndex,
                    PeerRequest::Vote(vote_req(9)),
                ],
                timeout,
            )
            .await;
        assert_eq!(answers.len(), 4);
        assert!(
            matches!(answers[0], Ok(PeerResponse::Forward(Ok(())))),
            "{:?}",
            answers[0]
        );
        assert!(
            matches!(answers[1], Err(PeerError::TooLarge { max: 512, .. })),
            "{:?}",
            answers[1]
        );
        assert_eq!(
            answers[2].as_ref().err(),
            Some(&PeerError::Timeout(timeout))
        );
        match &answers[3] {
            Ok(PeerResponse::Vote(Ok(v))) => assert_eq!(v.vote, Vote::new(9, 1)),
            other => panic!("the vote's answer: {other:?}"),
        }
        assert_eq!(fake.forwards.lock().expect("forwards").last(), Some(&7));
        assert_eq!(pool.pending_calls(&addr).await, 0, "nothing left pending");

        // A group to a port nothing listens on: every request is Unreachable.
        let dead = dead_addr().await.to_string();
        let answers = pool
            .call_all(2, &dead, vec![touch(&[1]), touch(&[2])], CALL_TIMEOUT)
            .await;
        assert_eq!(answers.len(), 2);
        for answer in answers {
            assert!(
                matches!(answer, Err(PeerError::Unreachable(_))),
                "{answer:?}"
            );
        }
        server.stop().await;
    })
    .await
}

/// (c) A call to a port nothing listens on fails at once with Unreachable: the connection is
/// refused, the call does not wait out its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_call_to_closed_port_is_unreachable() {
    bounded(async {
        let addr = dead_addr().await.to_string();
        let pool = PeerPool::default();
        let result = pool.call(2, &addr, touch(&[1]), CALL_TIMEOUT).await;
        assert!(
            matches!(&result, Err(PeerError::Unreachable(why)) if !why.contains("timed out")),
            "{result:?}"
        );
        // And again: a failed connect leaves nothing behind that would change the outcome.
        let result = pool.call(2, &addr, touch(&[1]), CALL_TIMEOUT).await;
        assert!(
            matches!(result, Err(PeerError::Unreachable(_))),
            "{result:?}"
        );
    })
    .await
}

/// (d) After the server goes away and comes back on the same port, the next call reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_pool_reconnects_after_server_restart() {
    bounded(async {
        let fake = Arc::new(Fake::default());
        let server = TestServer::any_port(fake.clone()).await;
        let sock = server.addr;
        let addr = sock.to_string();
        let pool = PeerPool::default();
        let r = pool.call(2, &addr, touch(&[1]), CALL_TIMEOUT).await;
        assert!(matches!(r, Ok(PeerResponse::Touch(_))), "{r:?}");
        assert!(pool.is_connected(&addr).await);

        server.stop().await;
        // The pool notices the close by itself (its reader sees the end of the stream).
        while pool.is_connected(&addr).await {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let r = pool.call(2, &addr, touch(&[2]), CALL_TIMEOUT).await;
        assert!(matches!(r, Err(PeerError::Unreachable(_))), "{r:?}");

        let server = TestServer::start(sock, fake.clone(), PeerLimits::default()).await;
        let r = pool.call(2, &addr, touch(&[3]), CALL_TIMEOUT).await;
        assert!(matches!(r, Ok(PeerResponse::Touch(_))), "{r:?}");
        assert_eq!(
            fake.peers.lock().expect("peers").len(),
            2,
            "a second connection was made"
        );
        server.stop().await;
    })
    .await
}

/// (d2) The calls of a [`CallStream`] travel only on the connection its first call went on:
/// after that connection broke (the server went away and came back), the stream's next call
/// fails unsent, and so does every later one, while a plain call, or a new stream, reconnects.
/// A request of a stream that cannot be encoded, a first call that finds no connection, or one
/// given up on before it was sent, stops the stream the same way: nothing after it is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_stream_never_moves_to_another_connection() {
    bounded(async {
        let fake = Arc::new(Fake::default());
        let server = TestServer::any_port(fake.clone()).await;
        let sock = server.addr;
        let addr = sock.to_string();
        let pool = PeerPool::new(LocalPeer::insecure(1), 512);
        let forward = |marker| PeerRequest::Forward(reap(marker));
        let forwarded = |answers: &[Result<PeerResponse, PeerError>]| {
            answers
                .iter()
                .map(|a| matches!(a, Ok(PeerResponse::Forward(Ok(())))))
                .collect::<Vec<bool>>()
        };

        let stream = CallStream::new();
        let answers = pool
            .call_all_in(&stream, 2, &addr, vec![forward(1)], CALL_TIMEOUT)
            .await;
        assert_eq!(forwarded(&answers), [true]);
        assert!(pool.is_usable(&stream));

        server.stop().await;
        while pool.is_connected(&addr).await {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!pool.is_usable(&stream), "its connection broke");
        let server = TestServer::start(sock, fake.clone(), PeerLimits::default()).await;
        for marker in [2, 3] {
            let answers = pool
                .call_all_in(&stream, 2, &addr, vec![forward(marker)], CALL_TIMEOUT)
                .await;
            assert!(
                matches!(answers[..], [Err(PeerError::Closed(_))]),
                "{answers:?}"
            );
        }
        let answers = pool
            .call_all(2, &addr, vec![forward(4)], CALL_TIMEOUT)
            .await;
        assert_eq!(forwarded(&answers), [true], "a plain call reconnects");
        let fresh = CallStream::new();
        let answers = pool
            .call_all_in(&fresh, 2, &addr, vec![forward(5)], CALL_TIMEOUT)
            .await;
        assert_eq!(forwarded(&answers), [true], "so does a new stream");
        assert_eq!(*fake.forwards.lock().expect("forwards"), vec![1, 4, 5]);

        // A request too large to send: the one before it goes, the one after it does not.
        let answers = pool
            .call_all_in(
                &fresh,
                2,
                &addr,
                vec![forward(6), touch(&[1; 300]), forward(7)],
                CALL_TIMEOUT,
            )
            .await;
        assert_eq!(forwarded(&answers), [true, false, false]);
        assert!(
            matches!(answers[1], Err(PeerError::TooLarge { max: 512, .. })),
            "{:?}",
            answers[1]
        );
        let answers = pool
            .call_all_in(&fresh, 2, &addr, vec![forward(8)], CALL_TIMEOUT)
            .await;
        assert_eq!(forwarded(&answers), [false], "the stream stopped");
        assert_eq!(*fake.forwards.lock().expect("forwards"), vec![1, 4, 5, 6]);

        // A first call that finds no connection stops its stream too.
        let dead = dead_addr().await.to_string();
        let unreachable = CallStream::new();
        let answers = pool
            .call_all_in(&unreachable, 2, &dead, vec![forward(9)], CALL_TIMEOUT)
            .await;
        assert!(
            matches!(answers[..], [Err(PeerError::Unreachable(_))]),
            "{answers:?}"
        );
        assert!(!pool.is_usable(&unreachable));

        // A first call given up on while it still connects (a listener that never answers the
        // hello) stops its stream as well.
        let mute = TcpListener::bind(loopback()).await.expect("bind");
        let mute_addr = mute.local_addr().expect("addr").to_string();
        let dropped = CallStream::new();
        let gave_up = tokio::time::timeout(
            Duration::from_millis(200),
            pool.call_all_in(&dropped, 2, &mute_addr, vec![forward(10)], CALL_TIMEOUT),
        )
        .await;
        assert!(gave_up.is_err(), "the hello is never answered: {gave_up:?}");
        assert!(!pool.is_usable(&dropped));
        server.stop().await;
    })
    .await
}

/// A call in flight when the server goes away fails with Closed, not at its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_calls_in_flight_fail_when_the_connection_breaks() {
    bounded(async {
        let server = TestServer::any_port(Arc::new(Silent)).await;
        let addr = server.addr.to_string();
        let pool = PeerPool::default();
        let call = {
            let (pool, addr) = (pool.clone(), addr.clone());
            tokio::spawn(async move {
                pool.call(2, &addr, PeerRequest::ReadIndex, Duration::from_secs(15))
                    .await
            })
        };
        while pool.pending_calls(&addr).await == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.stop().await;
        // Closed, not the Timeout of its 15 s: it did not wait for its timeout.
        let r = call.await.expect("call task");
        assert!(matches!(r, Err(PeerError::Closed(_))), "{r:?}");
    })
    .await
}

/// A node whose connections are spent once one of their forwards failed (as the node's are
/// once a forwarded write failed): a forwarded group holding a `Reap` of negative time fails;
/// one whose first `Reap` has a time of 1000 + N is answered N ms late.
#[derive(Default)]
struct SpentOnFailure {
    /// Connections opened so far.
    opened: AtomicUsize,
}

impl PeerService for SpentOnFailure {
    /// Whether a forward of the connection failed.
    type Conn = AtomicBool;

    fn open(&self, _from: SocketAddr, _node: NodeId) -> Self::Conn {
        self.opened.fetch_add(1, Ordering::SeqCst);
        Default::default()
    }

    fn handle(&self, failed: &Self::Conn, req: PeerRequest) -> BoxFuture<'static, PeerResponse> {
        let answer = match req {
            PeerRequest::ForwardGroup(cmds)
                if cmds
                    .iter()
                    .any(|c| matches!(c, Command::Reap { time_ms, .. } if *time_ms < 0)) =>
            {
                failed.store(true, Ordering::SeqCst);
                Err(ForwardError::Failed("refused".to_string()))
            }
            PeerRequest::ForwardGroup(cmds) => match cmds.first() {
                Some(Command::Reap { time_ms, .. }) if *time_ms >= 1000 => {
                    let late = Duration::from_millis((*time_ms - 1000) as u64);
                    return async move {
                        tokio::time::sleep(late).await;
                        PeerResponse::ForwardGroup(Ok(()))
                    }
                    .boxed();
                }
                _ => Ok(()),
            },
            _ => return future::pending().boxed(),
        };
        future::ready(PeerResponse::ForwardGroup(answer)).boxed()
    }

    fn spent(&self, failed: &Self::Conn) -> bool {
        failed.load(Ordering::SeqCst)
    }
}

/// A connection its service calls spent is closed once the answer that spent it is written, and
/// those of the requests it had taken before (the peer gets them, then the close); the others
/// stay open, and a new connection is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_server_closes_a_spent_connection_after_its_answer() {
    bounded(async {
        let service = Arc::new(SpentOnFailure::default());
        let server = TestServer::any_port(service.clone()).await;
        let group = |time_ms| PeerRequest::ForwardGroup(vec![reap(time_ms)]);

        let mut kept = TcpStream::connect(server.addr).await.expect("connect");
        say_hello(&mut kept).await;
        let mut conn = TcpStream::connect(server.addr).await.expect("connect");
        say_hello(&mut conn).await;
        write_frame(&mut conn, 1, group(1)).await;
        let reply: Frame<PeerResponse> = read_frame(&mut conn).await;
        assert!(
            matches!(reply.body, PeerResponse::ForwardGroup(Ok(()))),
            "{:?}",
            reply.body
        );
        // A slow request, then the one that spends the connection: its answer comes first, the
        // slow one's after it, then the close.
        write_frame(&mut conn, 2, group(1300)).await;
        write_frame(&mut conn, 3, group(-1)).await;
        let reply: Frame<PeerResponse> = read_frame(&mut conn).await;
        assert_eq!(reply.id, 3);
        assert!(
            matches!(reply.body, PeerResponse::ForwardGroup(Err(_))),
            "{:?}",
            reply.body
        );
        let reply: Frame<PeerResponse> = read_frame(&mut conn).await;
        assert_eq!(reply.id, 2);
        assert!(
            matches!(reply.body, PeerResponse::ForwardGroup(Ok(()))),
            "{:?}",
            reply.body
        );
        expect_closed(&mut conn).await;

        // The other connection is still served, and so is a new one.
        write_frame(&mut kept, 4, group(3)).await;
        let reply: Frame<PeerResponse> = read_frame(&mut kept).await;
        assert!(matches!(reply.body, PeerResponse::ForwardGroup(Ok(()))));
        let pool = PeerPool::default();
        let r = pool
            .call(2, &server.addr.to_string(), group(4), CALL_TIMEOUT)
            .await;
        assert!(matches!(r, Ok(PeerResponse::ForwardGroup(Ok(())))), "{r:?}");
        assert_eq!(service.opened.load(Ordering::SeqCst), 3);
        drop((kept, pool));
        server.stop().await;
    })
    .await
}

/// (e) A call that is never answered times out; the connection stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_call_without_answer_times_out() {
    bounded(async {
        let server = TestServer::any_port(Arc::new(Fake::default())).await;
        let addr = server.addr.to_string();
        let pool = PeerPool::default();
        let timeout = Duration::from_millis(200);
        let started = Instant::now();
        let r = pool.call(2, &addr, PeerRequest::ReadIndex, timeout).await;
        let took = started.elapsed();
        assert_eq!(r.err(), Some(PeerError::Timeout(timeout)));
        assert!(took >= timeout, "timed out early, after {took:?}");
        assert_eq!(
            pool.pending_calls(&addr).await,
            0,
            "the timed-out call was forgotten"
        );
        let r = pool.call(2, &addr, touch(&[1]), CALL_TIMEOUT).await;
        assert!(matches!(r, Ok(PeerResponse::Touch(_))), "{r:?}");
        server.stop().await;
    })
    .await
}

/// Reads until the server closes the connection; fails the test if it stays open.
async fn expect_closed(conn: &mut TcpStream) {
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept the connection open");
}

/// (f) A frame announced longer than the maximum closes the connection as soon as its length
/// prefix is read (the server does not wait for, or buffer, its body); so do a frame just over
/// the limit and a malformed frame. A valid frame on a fresh connection is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_server_rejects_oversized_and_malformed_frames() {
    bounded(async {
        let limits = PeerLimits {
            max_frame_len: 1024,
            ..PeerLimits::default()
        };
        let server = TestServer::start(loopback(), Arc::new(Fake::default()), limits).await;

        // 1 GiB announced, nothing sent after the prefix: if the server tried to read it, it
        // would wait; it closes instead. (Before the hello, and after it.)
        for hello in [false, true] {
            let mut conn = TcpStream::connect(server.addr).await.expect("connect");
            if hello {
                say_hello(&mut conn).await;
            }
            conn.write_all(&(1u32 << 30).to_be_bytes())
                .await
                .expect("write prefix");
            expect_closed(&mut conn).await;
        }

        // One byte over the limit, body included.
        let mut conn = TcpStream::connect(server.addr).await.expect("connect");
        say_hello(&mut conn).await;
        let mut frame = 1025u32.to_be_bytes().to_vec();
        frame.extend_from_slice(&[0u8; 1025]);
        // The server may close before it has read everything; a failed write is fine too.
        let _ = conn.write_all(&frame).await;
        expect_closed(&mut conn).await;

        // Within the limit but not a request.
        let mut conn = TcpStream::connect(server.addr).await.expect("connect");
        say_hello(&mut conn).await;
        conn.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff])
            .await
            .expect("write frame");
        expect_closed(&mut conn).await;

        // A valid request is answered with its id.
        let mut conn = TcpStream::connect(server.addr).await.expect("connect");
        say_hello(&mut conn).await;
        write_frame(&mut conn, 77, touch(&[5])).await;
        let reply: Frame<PeerResponse> = read_frame(&mut conn).await;
        assert_eq!(reply.id, 77);
        assert!(matches!(reply.body, PeerResponse::Touch(_)));
        drop(conn);
        server.stop().await;
    })
    .await
}

/// Writes one frame of `body` with the 4-byte prefix.
async fn write_frame<B: serde::Serialize>(conn: &mut TcpStream, id: u64, body: B) {
    let payload = encode(&Frame { id, body }).expect("encode");
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&payload);
    conn.write_all(&frame).await.expect("write frame");
}

/// Reads one frame of type `B`.
async fn read_frame<B: serde::de::DeserializeOwned>(conn: &mut TcpStream) -> Frame<B> {
    let mut len = [0u8; 4];
    conn.read_exact(&mut len).await.expect("read prefix");
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    conn.read_exact(&mut body).await.expect("read body");
    decode_frame(&body).expect("decode frame")
}

/// The plaintext hello of node 1, which the test server (node 2) welcomes.
async fn say_hello(conn: &mut TcpStream) {
    let hello = transport::Hello {
        version: transport::PROTOCOL_VERSION,
        node_id: 1,
        cluster_id: None,
    };
    write_frame(conn, 0, hello).await;
    let reply: Frame<transport::HelloReply> = read_frame(conn).await;
    assert!(
        matches!(
            reply.body,
            transport::HelloReply::Welcome { node_id: 2, .. }
        ),
        "{:?}",
        reply.body
    );
}

/// A request longer than the pool's maximum is refused before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_pool_refuses_oversized_requests() {
    bounded(async {
        let fake = Arc::new(Fake::default());
        let server = TestServer::any_port(fake.clone()).await;
        let addr = server.addr.to_string();
        let pool = PeerPool::new(LocalPeer::insecure(1), 256);
        let r = pool.call(2, &addr, touch(&[1; 300]), CALL_TIMEOUT).await;
        assert!(
            matches!(r, Err(PeerError::TooLarge { max: 256, .. })),
            "{r:?}"
        );
        assert!(
            fake.peers.lock().expect("peers").is_empty(),
            "nothing was sent"
        );
        let r = pool.call(2, &addr, touch(&[1; 10]), CALL_TIMEOUT).await;
        assert!(matches!(r, Ok(PeerResponse::Touch(_))), "{r:?}");
        server.stop().await;
    })
    .await
}

/// The server reads no more of a connection while `max_in_flight` of its requests are unanswered,
/// and resumes when they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_server_bounds_requests_in_flight() {
    bounded(async {
        let fake = Arc::new(Fake::default());
        let limits = PeerLimits {
            max_in_flight: 4,
            ..PeerLimits::default()
        };
        let server = TestServer::start(loopback(), fake.clone(), limits).await;
        let addr = server.addr.to_string();
        let pool = PeerPool::default();
        // Four never-answered calls take every permit...
        let stuck: Vec<_> = (0..4)
            .map(|_| {
                let (pool, addr) = (pool.clone(), addr.clone());
                tokio::spawn(async move {
                    pool.call(2, &addr, PeerRequest::ReadIndex, Duration::from_millis(400))
                        .await
                })
            })
            .collect();
        while pool.pending_calls(&addr).await < 4 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // ...so a fifth request is not even read while they hold them.
        let r = pool
            .call(
                2,
                &addr,
                PeerRequest::Forward(reap(1)),
                Duration::from_millis(100),
            )
            .await;
        assert!(matches!(r, Err(PeerError::Timeout(_))), "{r:?}");
        assert!(fake.forwards.lock().expect("forwards").is_empty());
        for call in stuck {
            let r = call.await.expect("call task");
            assert!(matches!(r, Err(PeerError::Timeout(_))), "{r:?}");
        }
        // Still nothing frees them: the handlers never finish. Closing the connection does.
        drop(pool);
        let pool = PeerPool::default();
        let r = pool
            .call(2, &addr, PeerRequest::Forward(reap(2)), CALL_TIMEOUT)
            .await;
        assert!(matches!(r, Ok(PeerResponse::Forward(Ok(())))), "{r:?}");
        server.stop().await;
    })
    .await
}

/// The openraft glue maps each outcome as openraft expects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_network_maps_errors_for_openraft() {
    bounded(async {
        let server = TestServer::any_port(Arc::new(Fake::default())).await;
        let silent =
            TestServer::start_as(3, loopback(), Arc::new(Silent), PeerLimits::default()).await;
        let dead = dead_addr().await;
        let mut network = PeerNetwork::new(1, PeerPool::default());
        let option = RPCOption::new(Duration::from_secs(5));

        let mut conn = network
            .new_client(2, &BasicNode::new(server.addr.to_string()))
            .await;
        let v = conn.vote(vote_req(3), option.clone()).await.expect("vote");
        assert_eq!(v.vote, Vote::new(3, 1));

        let append = AppendEntriesRequest {
            vote: Vote::new(3, 1),
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        };
        match conn.append_entries(append.clone(), option.clone()).await {
            Err(RPCError::RemoteError(e)) => {
                assert_eq!(e.target, 2);
                assert!(matches!(e.source, RaftError::Fatal(Fatal::Stopped)));
            }
            other => panic!("expected a remote error, got {other:?}"),
        }

        let snapshot = InstallSnapshotRequest {
            vote: Vote::new(3, 1),
            meta: Default::default(),
            offset: 0,
            data: Vec::new(),
            done: true,
        };
        match conn.install_snapshot(snapshot, option.clone()).await {
            Err(RPCError::Network(_)) => {}
            other => panic!("expected a network error for a wrong response, got {other:?}"),
        }

        let mut conn = network
            .new_client(3, &BasicNode::new(silent.addr.to_string()))
            .await;
        let ttl = Duration::from_millis(100);
        match conn.vote(vote_req(3), RPCOption::new(ttl)).await {
            Err(RPCError::Timeout(t)) => {
                assert_eq!(
                    (t.action, t.id, t.target, t.timeout),
                    (RPCTypes::Vote, 1, 3, ttl)
                );
            }
            other => panic!("expected a timeout, got {other:?}"),
        }

        let mut conn = network
            .new_client(4, &BasicNode::new(dead.to_string()))
            .await;
        match conn.append_entries(append, option.clone()).await {
            Err(RPCError::Unreachable(_)) => {}
            other => panic!("expected unreachable, got {other:?}"),
        }

        silent.stop().await;
        server.stop().await;
    })
    .await
}

/// An AppendEntries too large for one frame asks openraft for fewer entries; a single entry
/// too large is a plain network error (no tight retry loop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_network_reports_oversized_append_entries() {
    bounded(async {
        let server = TestServer::any_port(Arc::new(Fake::default())).await;
        let mut network = PeerNetwork::new(1, PeerPool::new(LocalPeer::insecure(1), 256));
        let mut conn = network
            .new_client(2, &BasicNode::new(server.addr.to_string()))
            .await;
        let entry = |i: u64| Entry {
            log_id: log_id(1, 1, i),
            payload: EntryPayload::Normal(Command::Reap {
                time_ms: 0,
                paths: vec!["x".repeat(100)],
            }),
        };
        let request = |entries: Vec<Entry<_>>| AppendEntriesRequest {
            vote: Vote::new(1, 1),
            prev_log_id: None,
            entries,
            leader_commit: None,
        };
        let option = RPCOption::new(CALL_TIMEOUT);
        match conn
            .append_entries(request((1..=4).map(entry).collect()), option.clone())
            .await
        {
            Err(RPCError::PayloadTooLarge(e)) => assert_eq!(e.entries_hint(), 2),
            other => panic!("expected payload too large, got {other:?}"),
        }
        let one = request(vec![Entry {
            log_id: log_id(1, 1, 1),
            payload: EntryPayload::Normal(Command::Reap {
                time_ms: 0,
                paths: vec!["x".repeat(300)],
            }),
        }]);
        match conn.append_entries(one, option).await {
            Err(RPCError::Network(_)) => {}
            other => panic!("expected a network error, got {other:?}"),
        }
        server.stop().await;
    })
    .await
}

/// The frame layout is bincode of `{ id, body }`, as the module documents.
#[test]
fn peer_frame_is_bincode_of_id_and_body() {
    let payload = frame::encode_frame(300, touch(&[1, -2]), 1024).expect("encode frame");
    let expected = encode(&Frame {
        id: 300u64,
        body: touch(&[1, -2]),
    })
    .expect("encode");
    assert_eq!(&payload[..], &expected[..]);
    let back: Frame<PeerRequest> = decode_frame(&payload).expect("decode");
    assert_eq!(back.id, 300);
    assert!(matches!(back.body, PeerRequest::Touch(v) if v == touches(&[1, -2])));
    assert!(decode_frame::<PeerRequest>(&payload[..payload.len() - 1]).is_err());
}

/// Touches of `sessions`, each just active.
fn touches(sessions: &[i64]) -> Vec<SessionTouch> {
    sessions
        .iter()
        .map(|&session_id| SessionTouch {
            session_id,
            idle_ms: 0,
        })
        .collect()
}

/// A touch request: the service's cheapest message, used here as a marker.
fn touch(sessions: &[i64]) -> PeerRequest {
    PeerRequest::Touch(touches(sessions))
}

/// The server bounds its open connections (handshaking ones included): one beyond the limit is
/// closed at once, and a slot frees when a connection ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_server_bounds_its_connections() {
    bounded(async {
        let limits = PeerLimits {
            max_connections: 2,
            ..PeerLimits::default()
        };
        let server = TestServer::start(loopback(), Arc::new(Fake::default()), limits).await;
        let mut first = TcpStream::connect(server.addr).await.expect("connect");
        say_hello(&mut first).await;
        // Accepted, still in its handshake (it has sent no hello).
        let second = TcpStream::connect(server.addr).await.expect("connect");
        let mut third = TcpStream::connect(server.addr).await.expect("connect");
        expect_closed(&mut third).await;
        // The first is still served.
        write_frame(&mut first, 9, touch(&[1])).await;
        let reply: Frame<PeerResponse> = read_frame(&mut first).await;
        assert_eq!(reply.id, 9);
        // Once one closes, a new connection is admitted.
        drop(second);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut next = TcpStream::connect(server.addr).await.expect("connect");
            let hello = transport::Hello {
                version: transport::PROTOCOL_VERSION,
                node_id: 1,
                cluster_id: None,
            };
            write_frame(&mut next, 0, hello).await;
            let mut len = [0u8; 4];
            match tokio::time::timeout(Duration::from_secs(1), next.read_exact(&mut len)).await {
                Ok(Ok(_)) => break,
                _ if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                other => panic!("no slot freed: {other:?}"),
            }
        }
        server.stop().await;
    })
    .await
}
