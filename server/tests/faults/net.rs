//! Fault-injecting TCP proxies on the peer links: node `i` dials node `j` through its own proxy
//! (`--peer-route j=<proxy>`), so each direction of each link can be cut on its own.
//!
//! A cut direction stops being pumped: the proxy neither reads nor writes those bytes, the kernel
//! buffers fill and the sender's writes stall, as on a real network that drops every packet.
//! Nothing is lost or reordered: when the cut heals the stalled bytes flow again (as TCP
//! retransmission would deliver them), so the peers see delay, timeouts and stale messages, never
//! a corrupted stream.
//!
//! A [`Wan`] profile delays every chunk by a latency with jitter, and holds a share of them for a
//! retransmission timeout, in order: what TCP makes of a lossy, jittery link between
//! institutions, as the application sees it (this kernel has no `netem` qdisc, so packets cannot
//! be delayed, lost, reordered or duplicated below TCP; TCP would hide the last two anyway).

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::workload::plock;

/// Node ids as the cluster numbers them (1-based).
pub type NodeId = usize;

/// A wide-area link's behaviour, applied to every proxied direction while set.
#[derive(Debug, Clone, Copy)]
pub struct Wan {
    /// One-way latency.
    pub delay: Duration,
    /// Uniform jitter around it (±).
    pub jitter: Duration,
    /// Share of chunks held for a retransmission timeout (TCP's answer to a lost segment).
    pub loss: f64,
    /// How long a lost chunk is held (and everything behind it: TCP delivers in order).
    pub rto: Duration,
}

impl Wan {
    /// 50 ms ± 20 ms one way, 2% loss with a 200 ms retransmission timeout.
    pub const PROFILE: Wan = Wan {
        delay: Duration::from_millis(50),
        jitter: Duration::from_millis(20),
        loss: 0.02,
        rto: Duration::from_millis(200),
    };

    /// How long the chunk read now waits before it may be written.
    fn sample(&self) -> Duration {
        use rand::Rng;
        let mut rng = rand::rng();
        let jitter = self.jitter.as_secs_f64();
        let d = self.delay.as_secs_f64() + rng.random_range(-jitter..=jitter);
        let lost = rng.random_bool(self.loss.clamp(0.0, 1.0));
        Duration::from_secs_f64(d.max(0.0)) + if lost { self.rto } else { Duration::ZERO }
    }
}

/// The proxies of one cluster and the directions currently cut.
pub struct FaultNet {
    /// Runs the proxies; its own runtime, so links can be made from the synchronous code that
    /// spawns nodes. Shut down (in the background) on drop.
    rt: Option<tokio::runtime::Runtime>,
    /// What the pumps consult.
    cuts: Arc<Cuts>,
    /// The proxy of each (from, to, target) made so far: a restarted node gets the same one.
    links: Mutex<HashMap<(NodeId, NodeId, SocketAddr), SocketAddr>>,
}

/// The directions that are cut, and a generation counter that wakes stalled pumps on change.
struct Cuts {
    /// (sender, receiver) pairs whose bytes do not flow.
    blocked: Mutex<HashSet<(NodeId, NodeId)>>,
    /// Bumped on every change.
    generation: watch::Sender<u64>,
    /// The WAN profile every link follows now, if any.
    wan: Mutex<Option<Wan>>,
}

impl Cuts {
    fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        plock(&self.blocked).contains(&(from, to))
    }

    /// Returns once bytes from `from` to `to` may flow.
    async fn wait_open(&self, from: NodeId, to: NodeId) {
        let mut changes = self.generation.subscribe();
        while self.is_cut(from, to) {
            if changes.changed().await.is_err() {
                return;
            }
        }
    }

    fn update(&self, f: impl FnOnce(&mut HashSet<(NodeId, NodeId)>)) {
        f(&mut plock(&self.blocked));
        self.generation.send_modify(|g| *g += 1);
    }
}

impl FaultNet {
    pub fn new() -> io::Result<Arc<FaultNet>> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fault-net")
            .enable_all()
            .build()?;
        let (generation, _) = watch::channel(0);
        Ok(Arc::new(FaultNet {
            rt: Some(rt),
            cuts: Arc::new(Cuts {
                blocked: Mutex::new(HashSet::new()),
                generation,
                wan: Mutex::new(None),
            }),
            links: Mutex::new(HashMap::new()),
        }))
    }

    /// The address node `from` must dial to reach node `to`, whose peer port is `target`.
    pub fn link(&self, from: NodeId, to: NodeId, target: SocketAddr) -> io::Result<SocketAddr> {
        let mut links = plock(&self.links);
        if let Some(a) = links.get(&(from, to, target)) {
            return Ok(*a);
        }
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| io::Error::other("fault net shut down"))?;
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let _guard = rt.enter();
        let listener = TcpListener::from_std(std_listener)?;
        let cuts = self.cuts.clone();
        rt.spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let cuts = cuts.clone();
                tokio::spawn(async move {
                    let connect = TcpStream::connect(target);
                    let Ok(Ok(outbound)) =
                        tokio::time::timeout(Duration::from_secs(1), connect).await
                    else {
                        return; // target down: the dialer sees its connection closed
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (ir, iw) = inbound.into_split();
                    let (or, ow) = outbound.into_split();
                    tokio::spawn(pump(cuts.clone(), from, to, ir, ow));
                    tokio::spawn(pump(cuts, to, from, or, iw));
                });
            }
        });
        links.insert((from, to, target), addr);
        Ok(addr)
    }

    /// Cuts every link of `node`, both ways.
    pub fn isolate(&self, node: NodeId, all: &[NodeId]) {
        self.split(&[node], all);
    }

    /// Cuts every link between the nodes of `side` and the other nodes of `all`, both ways.
    pub fn split(&self, side: &[NodeId], all: &[NodeId]) {
        self.cuts.update(|b| {
            for &n in side {
                for &o in all.iter().filter(|o| !side.contains(o)) {
                    b.insert((n, o));
                    b.insert((o, n));
                }
            }
        });
    }

    /// Cuts what `node` sends to every other node; what they send still reaches it.
    pub fn mute(&self, node: NodeId, all: &[NodeId]) {
        self.cuts.update(|b| {
            for &o in all.iter().filter(|&&o| o != node) {
                b.insert((node, o));
            }
        });
    }

    /// Cuts what every other node sends to `node`; what it sends still reaches them.
    pub fn deafen(&self, node: NodeId, all: &[NodeId]) {
        self.cuts.update(|b| {
            for &o in all.iter().filter(|&&o| o != node) {
                b.insert((o, node));
            }
        });
    }

    /// Makes every link follow `wan` (`None`: a local network again) from the next chunk on.
    pub fn set_wan(&self, wan: Option<Wan>) {
        *plock(&self.cuts.wan) = wan;
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.cuts.update(HashSet::clear);
    }
}

impl Drop for FaultNet {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Copies `r` to `w` while bytes from `from` to `to` may flow; stalls (holding what it has read)
/// while they may not. Under a [`Wan`] profile each chunk is written once its delay has passed,
/// never before the chunk ahead of it (a reader and a writer task, so that chunks are in flight
/// together, as segments are).
async fn pump(
    cuts: Arc<Cuts>,
    from: NodeId,
    to: NodeId,
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(64);
    let reader = {
        let cuts = cuts.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut last = tokio::time::Instant::now();
            loop {
                cuts.wait_open(from, to).await;
                let n = match r.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let wan = *plock(&cuts.wan);
                let now = tokio::time::Instant::now();
                let due = wan.map_or(now, |w| (now + w.sample()).max(last));
                last = due;
                if tx.send((due, buf[..n].to_vec())).await.is_err() {
                    break;
                }
            }
        })
    };
    while let Some((due, chunk)) = rx.recv().await {
        tokio::time::sleep_until(due).await;
        cuts.wait_open(from, to).await;
        if w.write_all(&chunk).await.is_err() {
            break;
        }
    }
    reader.abort();
    let _ = w.shutdown().await;
}
