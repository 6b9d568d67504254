//! `synod-bench`: a closed-loop load generator for synod and any ZooKeeper 3.5+ ensemble.
//!
//! It opens `--sessions` clients (spread round robin over the servers of the connect string) and
//! runs `--inflight` request loops spread over them, each loop sending its next request as soon as
//! the previous one is answered. After `--warmup-secs` it records every request's latency (in
//! microseconds, in one HdrHistogram per loop, merged at the end) for `--duration-secs`, then
//! prints one line per workload:
//!
//! ```text
//! workload=set ops=123456 secs=10.0 ops/s=12345.6 p50_us=... p99_us=... p999_us=... max_us=... errors=0
//! ```
//!
//! Every run works below a fresh `/synod-bench-<random>` znode that it removes again at the end.
//! Failed requests are counted (`errors=`), never fatal; their latency is not recorded.
//!
//! With `--tls-ca` (and a client certificate) the sessions speak TLS. `--handshakes SECS`
//! instead measures how many new connections the first server accepts per second: each loop
//! opens a TCP connection, completes the TLS handshake and closes it (without `--tls-ca`: closes
//! its side and waits for the server to close the connection, [`handshakes`]).
//! `--floor DIR` measures the machine's floor instead ([`floor`]); `--server-pid` adds the
//! servers' CPU time per request to each workload's line ([`server_cpu`]).

mod floor;
mod hold;
mod server_cpu;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use futures_util::stream::{self, StreamExt};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use synod_client::connect_string::ConnectString;
use synod_client::tls::{TlsConnector, TlsOptions};
use synod_client::{Client, ConnectOptions, CreateMode, Error};
use tokio::time::Instant;

/// Highest latency the histograms track (larger values are recorded as this): 60 s.
const MAX_LATENCY_US: u64 = 60_000_000;
/// Children of the znode that the mixed workload lists.
const LIST_CHILDREN: usize = 100;
/// Requests in flight during setup and cleanup.
const SETUP_CONCURRENCY: usize = 256;

/// Extra `--help` text: the workloads and the run's life cycle.
const AFTER_HELP: &str = "\
Workloads:
  create  create unique persistent znodes (data: --value-size bytes) below the bench root; they are
          removed in a cleanup phase after the measurement
  set     setData (any version) on one of --keys pre-created znodes, chosen uniformly at random
  get     getData on one of --keys pre-created znodes
  mixed   per request: create 1%, setData 8%, getData 45%, getChildren of a znode with 100 children
          45%, delete 1% (of a znode this loop created earlier; a create when it has none)

Several workloads may be given, comma separated; they run one after another on the same sessions.
Ctrl-C stops the measurement early, reports what was measured and still cleans up (a second Ctrl-C
exits at once, leaving /synod-bench-* behind).";

/// Closed-loop benchmark for ZooKeeper-protocol servers.
#[derive(Debug, Parser)]
#[command(name = "synod-bench", version, after_help = AFTER_HELP)]
struct Args {
    /// Connect string: comma-separated host:port list with an optional /chroot suffix.
    #[arg(long, env = "SYNOD_SERVERS", default_value = "127.0.0.1:2181")]
    servers: String,

    /// The workload(s) to run, comma separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "mixed")]
    workload: Vec<Workload>,

    /// Number of client sessions (connections).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    sessions: u32,

    /// Total requests in flight: this many request loops, spread round robin over the sessions.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    inflight: u32,

    /// Length of the measurement, in seconds, after the warmup.
    #[arg(long, default_value_t = 10.0, value_parser = positive_secs)]
    duration_secs: f64,

    /// Load applied before measuring, in seconds; its requests are not recorded.
    #[arg(long, default_value_t = 2.0, value_parser = non_negative_secs)]
    warmup_secs: f64,

    /// Size in bytes of the data written by create and set.
    #[arg(long, default_value_t = 256)]
    value_size: usize,

    /// Number of pre-created znodes that set, get and mixed address.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    keys: u32,

    /// Session timeout to ask for, in milliseconds.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    session_timeout_ms: u64,

    /// Print each result as one JSON object per line instead of text.
    #[arg(long)]
    json: bool,

    /// Speak TLS, trusting this CA bundle (PEM).
    #[arg(long, env = "SYNOD_TLS_CA")]
    tls_ca: Option<std::path::PathBuf>,

    /// Present this client certificate (PEM; with --tls-ca and --tls-key).
    #[arg(
        long,
        env = "SYNOD_TLS_CERT",
        requires = "tls_ca",
        requires = "tls_key"
    )]
    tls_cert: Option<std::path::PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "SYNOD_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,

    /// Instead of a workload: open connections to the first server for this many seconds, --inflight
    /// at a time, each closed right after its TLS handshake (without --tls-ca: after its TCP
    /// connect, once the server has closed it too), and report connections per second and the
    /// handshake latency (`workload=handshake`).
    #[arg(long, value_parser = positive_secs)]
    handshakes: Option<f64>,

    /// Instead of a workload: create this many znodes of --value-size bytes under /synod-fill
    /// (children n0, n1, ...) and leave them, for measuring a server's memory with a known tree.
    #[arg(long)]
    fill: Option<u32>,

    /// With --fill: put at most this many znodes under one parent (/synod-fill/p0/n0, ...,
    /// /synod-fill/p1/n1000, ...; the parents are created first, empty). 0: all directly under
    /// /synod-fill.
    #[arg(long, default_value_t = 0)]
    fill_fanout: u32,

    /// Instead of a workload: open this many sessions (round robin over --servers, --inflight
    /// connecting at a time), register --watches watches spread over them, report how long
    /// each took, hold everything for --hold-secs and close the sessions.
    #[arg(long)]
    hold_sessions: Option<u32>,

    /// With --hold-sessions: how many watches to register (exists watches on paths that do not
    /// exist, /synod-hold/w0, w1, ...; each a watch the servers keep).
    #[arg(long, default_value_t = 0)]
    watches: u32,

    /// With --hold-sessions: how long to hold the sessions and watches open, so that the
    /// servers' memory can be read meanwhile.
    #[arg(long, default_value_t = 10.0, value_parser = positive_secs)]
    hold_secs: f64,

    /// Instead of a workload: measure the machine's floor, the loopback round trip and a 4 KiB
    /// append + fdatasync to a file in this directory (`workload=floor_rtt`, `floor_fsync`);
    /// then, to show what that sync is made of, a 4 KiB rewrite of already written blocks +
    /// fdatasync (`floor_fsync_overwrite`) and three appenders syncing at once
    /// (`floor_fsync_3way`); and a round trip to a thread that was asleep, 1 ms after the last
    /// (`floor_rtt_idle`: what each hop of a serial write pays on a machine whose CPUs idle).
    #[arg(long)]
    floor: Option<std::path::PathBuf>,

    /// A server process on this machine whose CPU time (user + system) during each measurement
    /// window is added up and divided by the requests measured (`server_cpu_us_per_op=`).
    /// Repeat for every server of the ensemble.
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
}

/// The TLS connector `--tls-*` asks for, if any.
fn tls(args: &Args) -> Result<Option<TlsConnector>, Fatal> {
    let Some(ca) = &args.tls_ca else {
        return Ok(None);
    };
    let mut options = TlsOptions::new(ca);
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        options = options.identity(cert, key);
    }
    options
        .connector()
        .map(Some)
        .map_err(|e| Fatal(format!("TLS: {e}")))
}

/// The connect options of every session: plaintext or TLS as `--tls-*` says.
fn connect_options(args: &Args) -> Result<ConnectOptions, Fatal> {
    Ok(ConnectOptions {
        tls: tls(args)?,
        ..ConnectOptions::default()
    })
}

/// How long a plaintext `--handshakes` connection waits for the server to close it.
const HANDSHAKE_CLOSE_WAIT: Duration = Duration::from_secs(5);

/// `--handshakes SECS`: new connections per second the first server accepts, each completing
/// its TLS handshake and closing at once. Without --tls-ca, each connects, closes its sending
/// side and waits (at most [`HANDSHAKE_CLOSE_WAIT`]) for the server to close its own: a bare TCP
/// connect completes in the kernel before the server accepts it, so loops of them only fill the
/// listen queue, and what they would count is SYN retransmissions after it overflows.
async fn handshakes(args: &Args, secs: f64) -> Result<(), Fatal> {
    let cs = ConnectString::parse(&args.servers).map_err(|e| Fatal(e.to_string()))?;
    let (host, port) = cs
        .hosts
        .first()
        .cloned()
        .ok_or_else(|| Fatal("no server given".into()))?;
    let tls = tls(args)?;
    let warm_end = Instant::now() + Duration::from_secs_f64(args.warmup_secs);
    let end = warm_end + Duration::from_secs_f64(secs);
    let loops: Vec<_> = (0..args.inflight)
        .map(|_| {
            let (host, tls) = (host.clone(), tls.clone());
            tokio::spawn(async move {
                let mut h = new_histogram(3)?;
                let mut errors = 0u64;
                while Instant::now() < end {
                    let t0 = Instant::now();
                    let done = async {
                        let mut tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
                        tcp.set_nodelay(true)?;
                        match &tls {
                            Some(tls) => drop(tls.connect(&host, tcp).await?),
                            None => {
                                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                                tcp.shutdown().await?;
                                let closed = tokio::time::timeout(
                                    HANDSHAKE_CLOSE_WAIT,
                                    tcp.read(&mut [0u8; 64]),
                                )
                                .await
                                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?;
                                if closed? != 0 {
                                    return Err(std::io::Error::other("server sent bytes"));
                                }
                            }
                        }
                        Ok::<(), std::io::Error>(())
                    }
                    .await;
                    let t1 = Instant::now();
                    if t0 >= warm_end && t1 <= end {
                        match done {
                            Ok(()) => h.saturating_record((t1 - t0).as_micros().max(1) as u64),
                            Err(_) => errors += 1,
                        }
                    }
                }
                Ok::<_, Fatal>((h, errors))
            })
        })
        .collect();
    let mut all = new_histogram(3)?;
    let mut errors = 0;
    for l in loops {
        let (h, e) = l
            .await
            .map_err(|e| Fatal(format!("a handshake loop failed: {e}")))??;
        all.add(&h)?;
        errors += e;
    }
    println!(
        "workload=handshake tls={} ops={} secs={secs:.1} ops/s={:.1} p50_us={} p99_us={} p999_us={} max_us={} errors={errors}",
        tls.is_some(),
        all.len(),
        all.len() as f64 / secs,
        all.value_at_quantile(0.5),
        all.value_at_quantile(0.99),
        all.value_at_quantile(0.999),
        all.max(),
    );
    Ok(())
}

/// `--fill`: creates `count` znodes under /synod-fill (under parents of at most --fill-fanout
/// children, if set) with up to --inflight creates in flight.
async fn fill(args: &Args, count: u32) -> Result<(), Fatal> {
    let zk = Client::connect(&args.servers, connect_options(args)?)
        .await
        .map_err(|e| Fatal(format!("connect: {e}")))?;
    let started = std::time::Instant::now();
    let clients = [zk];
    let empty = Arc::new(Vec::new());
    create_all(&clients, vec!["/synod-fill".to_string()], empty.clone()).await?;
    let fanout = args.fill_fanout;
    if fanout > 0 {
        let parents = (0..count.div_ceil(fanout)).map(|p| format!("/synod-fill/p{p}"));
        create_all(&clients, parents.collect(), empty).await?;
    }
    let path = |i: u32| match fanout {
        0 => format!("/synod-fill/n{i}"),
        f => format!("/synod-fill/p{}/n{i}", i / f),
    };
    let value = Arc::new(vec![b'v'; args.value_size]);
    create_all(&clients, (0..count).map(path).collect(), value).await?;
    let [zk] = clients;
    println!(
        "fill={count} fanout={fanout} value_size={} secs={:.1}",
        args.value_size,
        started.elapsed().as_secs_f64()
    );
    let _ = zk.close().await;
    Ok(())
}

/// Parses a positive number of seconds (`--duration-secs`).
fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

/// Parses a non-negative number of seconds (`--warmup-secs`).
fn non_negative_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a non-negative number of seconds")),
    }
}

/// What the request loops send (see `--help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// Create unique persistent znodes.
    Create,
    /// setData on the pre-created keys.
    Set,
    /// getData on the pre-created keys.
    Get,
    /// The 1/8/45/45/1 create/set/get/getChildren/delete mix.
    Mixed,
}

impl Workload {
    /// The name printed in results (`workload=...`).
    fn name(self) -> &'static str {
        match self {
            Workload::Create => "create",
            Workload::Set => "set",
            Workload::Get => "get",
            Workload::Mixed => "mixed",
        }
    }

    /// Whether the workload addresses the pre-created keys (and the listed znode).
    fn needs_keys(self) -> bool {
        matches!(self, Workload::Set | Workload::Get | Workload::Mixed)
    }
}

/// The kinds of request a loop sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    /// create of a persistent znode.
    Create,
    /// setData of a key.
    Set,
    /// getData of a key.
    Get,
    /// getChildren of the znode with 100 children.
    Children,
    /// delete of a znode the loop created.
    Delete,
}

/// Every request kind, in [`OpKind::index`] order.
const OP_KINDS: [OpKind; 5] = [
    OpKind::Create,
    OpKind::Set,
    OpKind::Get,
    OpKind::Children,
    OpKind::Delete,
];

impl OpKind {
    /// The name used in per-request-kind results.
    fn name(self) -> &'static str {
        match self {
            OpKind::Create => "create",
            OpKind::Set => "set",
            OpKind::Get => "get",
            OpKind::Children => "get_children",
            OpKind::Delete => "delete",
        }
    }

    /// Position in [`OP_KINDS`] and in per-kind histogram vectors.
    fn index(self) -> usize {
        self as usize
    }
}

/// A fatal problem (setup, connection); the run stops with exit code 1.
#[derive(Debug)]
struct Fatal(String);

impl From<hdrhistogram::CreationError> for Fatal {
    fn from(e: hdrhistogram::CreationError) -> Self {
        Fatal(format!("cannot create a histogram: {e:?}"))
    }
}

impl From<hdrhistogram::AdditionError> for Fatal {
    fn from(e: hdrhistogram::AdditionError) -> Self {
        Fatal(format!("cannot merge histograms: {e:?}"))
    }
}

/// A latency histogram from 1 µs to [`MAX_LATENCY_US`] with `sigfig` significant digits.
fn new_histogram(sigfig: u8) -> Result<Histogram<u64>, Fatal> {
    Ok(Histogram::new_with_bounds(1, MAX_LATENCY_US, sigfig)?)
}

/// What every request loop of a workload shares.
struct Plan {
    /// The workload being run.
    workload: Workload,
    /// The pre-created znodes set/get/mixed address.
    keys: Arc<Vec<String>>,
    /// The znode with [`LIST_CHILDREN`] children (mixed).
    list: String,
    /// Parent of this workload's created znodes; loop `i` creates below `<parent>/t<i>`.
    create_parent: String,
    /// The data written by create and setData.
    value: Arc<Vec<u8>>,
    /// Requests sent before this instant are warmup and not recorded.
    warm_end: Instant,
    /// No request is sent after this instant; only those answered by it are recorded.
    end: Instant,
    /// Set on Ctrl-C: the loops stop after their current request.
    stop: Arc<AtomicBool>,
}

/// What one request loop measured.
struct LoopStats {
    /// Latency of every successful measured request, in µs.
    all: Histogram<u64>,
    /// Per request kind (mixed only), with 2 significant digits to keep memory small.
    by_kind: Option<Vec<Histogram<u64>>>,
    /// Measured requests that failed.
    errors: u64,
    /// Failed requests by `<request kind>:<error name>`.
    error_kinds: BTreeMap<String, u64>,
}

/// The chosen request for the next iteration of a mixed loop.
fn choose_mixed(rng: &mut StdRng, have_created: bool) -> OpKind {
    let x: u32 = rng.random_range(0..100);
    match x {
        0 => OpKind::Create,
        1..=8 => OpKind::Set,
        9..=53 => OpKind::Get,
        54..=98 => OpKind::Children,
        _ if have_created => OpKind::Delete,
        _ => OpKind::Create,
    }
}

/// One closed request loop: send, await the reply, record, repeat until the end of the run.
async fn request_loop(
    zk: Client,
    plan: Arc<Plan>,
    id: usize,
    seed: u64,
) -> Result<LoopStats, Fatal> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut stats = LoopStats {
        all: new_histogram(3)?,
        by_kind: if plan.workload == Workload::Mixed {
            Some(
                OP_KINDS
                    .iter()
                    .map(|_| new_histogram(2))
                    .collect::<Result<_, _>>()?,
            )
        } else {
            None
        },
        errors: 0,
        error_kinds: BTreeMap::new(),
    };
    let parent = format!("{}/t{id}", plan.create_parent);
    let mut created: Vec<String> = Vec::new();
    let mut seq: u64 = 0;
    let n_keys = plan.keys.len();
    loop {
        if plan.stop.load(Ordering::Relaxed) || Instant::now() >= plan.end {
            break;
        }
        let kind = match plan.workload {
            Workload::Create => OpKind::Create,
            Workload::Set => OpKind::Set,
            Workload::Get => OpKind::Get,
            Workload::Mixed => choose_mixed(&mut rng, !created.is_empty()),
        };
        let key = &plan.keys[rng.random_range(0..n_keys)];
        let t0 = Instant::now();
        let result = match kind {
            OpKind::Create => {
                let path = format!("{parent}/n{seq:010}");
                seq += 1;
                match zk.create(&path, &plan.value, CreateMode::Persistent).await {
                    Ok(p) => {
                        if plan.workload == Workload::Mixed {
                            created.push(p);
                        }
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            OpKind::Set => zk.set_data(key, &plan.value, None).await.map(drop),
            OpKind::Get => zk.get_data(key).await.map(drop),
            OpKind::Children => zk.get_children(&plan.list).await.map(drop),
            OpKind::Delete => {
                let i = rng.random_range(0..created.len());
                let path = created.swap_remove(i);
                zk.delete(&path, None).await
            }
        };
        let done = Instant::now();
        let us = (done.saturating_duration_since(t0).as_micros() as u64).max(1);
        // Measured: requests sent after the warmup and answered before the end of the run.
        if t0 >= plan.warm_end && done <= plan.end {
            match &result {
                Ok(()) => {
                    stats.all.saturating_record(us);
                    if let Some(h) = stats.by_kind.as_mut() {
                        h[kind.index()].saturating_record(us);
                    }
                }
                Err(e) => {
                    stats.errors += 1;
                    *stats
                        .error_kinds
                        .entry(format!("{}:{}", kind.name(), e.name()))
                        .or_default() += 1;
                }
            }
        }
        match result {
            // The session is gone for good: this loop can do nothing more.
            Err(Error::SessionExpired | Error::Closed | Error::AuthFailed) => {
                eprintln!("synod-bench: loop {id}: session ended; the loop stops");
                break;
            }
            // Reconnecting: don't spin on requests that fail at once.
            Err(Error::ConnectionLoss) => tokio::time::sleep(Duration::from_millis(5)).await,
            _ => {}
        }
    }
    Ok(stats)
}

/// One workload's merged result.
struct Report {
    /// The workload measured.
    workload: Workload,
    /// Length of the measurement window in seconds.
    secs: f64,
    /// Latency of every successful measured request, in µs.
    all: Histogram<u64>,
    /// Per request kind, for the mixed workload.
    by_kind: Option<Vec<Histogram<u64>>>,
    /// Measured requests that failed.
    errors: u64,
    /// Failed requests by `<request kind>:<error name>`.
    error_kinds: BTreeMap<String, u64>,
    /// CPU time the `--server-pid` processes spent in the measurement window, summed (µs).
    server_cpu_us: Option<u64>,
}

impl Report {
    /// Successful measured requests per second.
    fn ops_per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            self.all.len() as f64 / self.secs
        } else {
            0.0
        }
    }

    /// Server CPU time per successful measured request, in µs (with `--server-pid`).
    fn server_cpu_us_per_op(&self) -> Option<f64> {
        let n = self.all.len();
        self.server_cpu_us
            .filter(|_| n > 0)
            .map(|us| us as f64 / n as f64)
    }

    /// The one-line text result.
    fn text(&self) -> String {
        let h = &self.all;
        let mut line = format!(
            "workload={} ops={} secs={:.1} ops/s={:.1} p50_us={} p99_us={} p999_us={} max_us={} errors={}",
            self.workload.name(),
            h.len(),
            self.secs,
            self.ops_per_sec(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
            self.errors
        );
        if let Some(cpu) = self.server_cpu_us_per_op() {
            line.push_str(&format!(" server_cpu_us_per_op={cpu:.1}"));
        }
        if let Some(kinds) = &self.by_kind {
            for (k, h) in OP_KINDS.iter().zip(kinds) {
                line.push_str(&format!(
                    " {}:ops={},p50_us={},p99_us={}",
                    k.name(),
                    h.len(),
                    h.value_at_quantile(0.5),
                    h.value_at_quantile(0.99)
                ));
            }
        }
        line
    }

    /// The result as a JSON object, with the run's settings.
    fn json(&self, args: &Args) -> Value {
        let h = &self.all;
        let mut obj = json!({
            "workload": self.workload.name(),
            "ops": h.len(),
            "secs": self.secs,
            "ops_per_sec": self.ops_per_sec(),
            "p50_us": h.value_at_quantile(0.5),
            "p90_us": h.value_at_quantile(0.9),
            "p99_us": h.value_at_quantile(0.99),
            "p999_us": h.value_at_quantile(0.999),
            "max_us": h.max(),
            "mean_us": h.mean(),
            "errors": self.errors,
            "error_kinds": self.error_kinds,
            "server_cpu_us_per_op": self.server_cpu_us_per_op(),
            "sessions": args.sessions,
            "inflight": args.inflight,
            "value_size": args.value_size,
            "keys": args.keys,
            "warmup_secs": args.warmup_secs,
            "servers": args.servers,
        });
        if let Some(kinds) = &self.by_kind {
            let mut by = serde_json::Map::new();
            for (k, h) in OP_KINDS.iter().zip(kinds) {
                by.insert(
                    k.name().into(),
                    json!({
                        "ops": h.len(),
                        "p50_us": h.value_at_quantile(0.5),
                        "p99_us": h.value_at_quantile(0.99),
                        "max_us": h.max(),
                    }),
                );
            }
            obj["by_op"] = Value::Object(by);
        }
        obj
    }
}

/// The connect string with its host list rotated left by `by`, so that session `i` starts
/// with server `i mod n` and the sessions spread evenly over the servers.
fn rotated(cs: &ConnectString, by: usize) -> String {
    let n = cs.hosts.len();
    let hosts: Vec<String> = (0..n)
        .map(|i| {
            let (h, p) = &cs.hosts[(i + by) % n];
            if h.contains(':') {
                format!("[{h}]:{p}")
            } else {
                format!("{h}:{p}")
            }
        })
        .collect();
    format!("{}{}", hosts.join(","), cs.chroot.as_deref().unwrap_or(""))
}

/// Runs `f` over `items` with [`SETUP_CONCURRENCY`] requests in flight, spread over `clients`;
/// returns how many succeeded, or the first failure once all requests have finished.
async fn for_all<F, Fut>(
    clients: &[Client],
    items: Vec<String>,
    f: F,
) -> Result<usize, (String, Error)>
where
    F: Fn(Client, String) -> Fut,
    Fut: std::future::Future<Output = (String, Result<(), Error>)>,
{
    let results: Vec<(String, Result<(), Error>)> = stream::iter(items.into_iter().enumerate())
        .map(|(i, p)| f(clients[i % clients.len()].clone(), p))
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect()
        .await;
    let mut ok = 0;
    for (p, r) in results {
        match r {
            Ok(()) => ok += 1,
            Err(e) => return Err((p, e)),
        }
    }
    Ok(ok)
}

/// Creates every path (parents before children must be ensured by the caller), ignoring
/// `NodeExists`.
async fn create_all(
    clients: &[Client],
    paths: Vec<String>,
    value: Arc<Vec<u8>>,
) -> Result<usize, Fatal> {
    for_all(clients, paths, |zk, p| {
        let value = value.clone();
        async move {
            let r = match zk.create(&p, &value, CreateMode::Persistent).await {
                Ok(_) | Err(Error::NodeExists) => Ok(()),
                Err(e) => Err(e),
            };
            (p, r)
        }
    })
    .await
    .map_err(|(p, e)| Fatal(format!("creating {p}: {}", e.name())))
}

/// Deletes `root` and its whole subtree, leaves first, many requests in flight.
async fn rmr(clients: &[Client], root: &str) -> Result<usize, Fatal> {
    let mut deleted = 0;
    for attempt in 1..=5 {
        let mut levels: Vec<Vec<String>> = vec![vec![root.to_string()]];
        while let Some(last) = levels.last() {
            let listed: Vec<(String, Result<Vec<String>, Error>)> =
                stream::iter(last.clone().into_iter().enumerate())
                    .map(|(i, p)| {
                        let zk = clients[i % clients.len()].clone();
                        async move {
                            let r = zk.get_children(&p).await;
                            (p, r)
                        }
                    })
                    .buffer_unordered(SETUP_CONCURRENCY)
                    .collect()
                    .await;
            let mut next = Vec::new();
            for (p, r) in listed {
                match r {
                    Ok(children) => next.extend(children.into_iter().map(|c| format!("{p}/{c}"))),
                    Err(Error::NoNode) => {}
                    Err(e) => return Err(Fatal(format!("listing {p}: {}", e.name()))),
                }
            }
            if next.is_empty() {
                break;
            }
            levels.push(next);
        }
        let mut retry = false;
        for level in levels.into_iter().rev() {
            let r = for_all(clients, level, |zk, p| async move {
                let r = match zk.delete(&p, None).await {
                    Ok(()) | Err(Error::NoNode) => Ok(()),
                    Err(e) => Err(e),
                };
                (p, r)
            })
            .await;
            match r {
                Ok(n) => deleted += n,
                Err((_, Error::NotEmpty)) if attempt < 5 => {
                    retry = true;
                    break;
                }
                Err((p, e)) => return Err(Fatal(format!("deleting {p}: {}", e.name()))),
            }
        }
        if !retry {
            break;
        }
    }
    Ok(deleted)
}

/// The shared state of a benchmark run.
struct Bench {
    /// The command line.
    args: Args,
    /// One client (session) per `--sessions`.
    clients: Vec<Client>,
    /// The unique root every znode of this run lives below.
    root: String,
    /// The data written by create and setData (`--value-size` bytes).
    value: Arc<Vec<u8>>,
    /// The pre-created keys, once created.
    keys: Option<Arc<Vec<String>>>,
    /// The znode with [`LIST_CHILDREN`] children.
    list: String,
    /// Set on Ctrl-C.
    stop: Arc<AtomicBool>,
}

impl Bench {
    /// Opens every session (session `i` starting with server `i mod n`).
    async fn connect(args: Args, stop: Arc<AtomicBool>) -> Result<Bench, Fatal> {
        let cs = ConnectString::parse(&args.servers).map_err(|e| Fatal(e.to_string()))?;
        let options = connect_options(&args)?
            .session_timeout(Duration::from_millis(args.session_timeout_ms))
            .shuffle_hosts(false);
        let connects =
            (0..args.sessions as usize).map(|i| connect_owned(rotated(&cs, i), options.clone()));
        let results = futures_util::future::join_all(connects).await;
        let mut clients = Vec::with_capacity(results.len());
        for r in results {
            clients.push(r.map_err(|e| Fatal(format!("connecting to {}: {e}", args.servers)))?);
        }
        let root = format!("/synod-bench-{:016x}", rand::random::<u64>());
        let value = Arc::new(vec![b'x'; args.value_size]);
        let list = format!("{root}/list");
        Ok(Bench {
            args,
            clients,
            root,
            value,
            keys: None,
            list,
            stop,
        })
    }

    /// Creates the root znode.
    async fn setup(&mut self) -> Result<(), Fatal> {
        let t0 = Instant::now();
        self.clients[0]
            .create(&self.root, b"", CreateMode::Persistent)
            .await
            .map_err(|e| Fatal(format!("creating {}: {}", self.root, e.name())))?;
        eprintln!(
            "synod-bench: {} sessions, {} requests in flight, root {} (connected and set up in {:.1?})",
            self.clients.len(),
            self.args.inflight,
            self.root,
            t0.elapsed()
        );
        Ok(())
    }

    /// Creates the keys and the listed znode with its children, once.
    async fn ensure_keys(&mut self) -> Result<Arc<Vec<String>>, Fatal> {
        if let Some(k) = &self.keys {
            return Ok(k.clone());
        }
        let t0 = Instant::now();
        let keys_parent = format!("{}/keys", self.root);
        create_all(
            &self.clients,
            vec![keys_parent.clone(), self.list.clone()],
            Arc::new(Vec::new()),
        )
        .await?;
        let keys: Vec<String> = (0..self.args.keys)
            .map(|i| format!("{keys_parent}/k{i:07}"))
            .collect();
        create_all(&self.clients, keys.clone(), self.value.clone()).await?;
        let children: Vec<String> = (0..LIST_CHILDREN)
            .map(|i| format!("{}/c{i:03}", self.list))
            .collect();
        create_all(&self.clients, children, Arc::new(Vec::new())).await?;
        eprintln!(
            "synod-bench: created {} keys of {} bytes in {:.1?}",
            keys.len(),
            self.args.value_size,
            t0.elapsed()
        );
        let keys = Arc::new(keys);
        self.keys = Some(keys.clone());
        Ok(keys)
    }

    /// Runs one workload: its setup, the warmup and measurement, and its cleanup.
    async fn run(&mut self, workload: Workload) -> Result<Report, Fatal> {
        let keys = if workload.needs_keys() {
            self.ensure_keys().await?
        } else {
            Arc::new(vec![format!("{}/keys", self.root)])
        };
        let inflight = self.args.inflight as usize;
        let create_parent = format!("{}/{}", self.root, workload.name());
        if matches!(workload, Workload::Create | Workload::Mixed) {
            create_all(
                &self.clients,
                vec![create_parent.clone()],
                Arc::new(Vec::new()),
            )
            .await?;
            let parents: Vec<String> = (0..inflight)
                .map(|i| format!("{create_parent}/t{i}"))
                .collect();
            create_all(&self.clients, parents, Arc::new(Vec::new())).await?;
        }
        let start = Instant::now();
        let warm_end = start + Duration::from_secs_f64(self.args.warmup_secs);
        let plan = Arc::new(Plan {
            workload,
            keys,
            list: self.list.clone(),
            create_parent: create_parent.clone(),
            value: self.value.clone(),
            warm_end,
            end: warm_end + Duration::from_secs_f64(self.args.duration_secs),
            stop: self.stop.clone(),
        });
        let seed: u64 = rand::random();
        let handles: Vec<_> = (0..inflight)
            .map(|i| {
                let zk = self.clients[i % self.clients.len()].clone();
                tokio::spawn(request_loop(
                    zk,
                    plan.clone(),
                    i,
                    seed.wrapping_add(i as u64),
                ))
            })
            .collect();
        let mut report = Report {
            workload,
            secs: 0.0,
            all: new_histogram(3)?,
            by_kind: None,
            errors: 0,
            error_kinds: BTreeMap::new(),
            server_cpu_us: None,
        };
        // The servers' CPU time over the measurement window (warmup end to the last reply).
        let cpu_at_start = if self.args.server_pids.is_empty() {
            None
        } else {
            tokio::time::sleep_until(warm_end).await;
            Some(server_cpu::cpu_us(&self.args.server_pids)?)
        };
        let mut failure = None;
        for h in handles {
            match h.await {
                Ok(Ok(stats)) => {
                    report.all.add(&stats.all)?;
                    if let Some(kinds) = stats.by_kind {
                        match report.by_kind.as_mut() {
                            None => report.by_kind = Some(kinds),
                            Some(acc) => {
                                for (a, k) in acc.iter_mut().zip(&kinds) {
                                    a.add(k)?;
                                }
                            }
                        }
                    }
                    report.errors += stats.errors;
                    for (k, n) in stats.error_kinds {
                        *report.error_kinds.entry(k).or_default() += n;
                    }
                }
                Ok(Err(f)) => failure = Some(f),
                Err(e) => failure = Some(Fatal(format!("a request loop failed: {e}"))),
            }
        }
        if let Some(start) = cpu_at_start {
            let end = server_cpu::cpu_us(&self.args.server_pids)?;
            report.server_cpu_us = Some(end.saturating_sub(start));
        }
        // The measurement window: warmup end to run end, or to the interruption.
        let finished = Instant::now().min(plan.end);
        report.secs = finished.saturating_duration_since(warm_end).as_secs_f64();
        if let Some(f) = failure {
            return Err(f);
        }
        if workload == Workload::Create {
            // Keep the tree bounded between workloads: drop what the measurement created.
            let t0 = Instant::now();
            let n = rmr(&self.clients, &create_parent).await?;
            eprintln!(
                "synod-bench: cleanup of {create_parent}: deleted {n} znodes in {:.1?}",
                t0.elapsed()
            );
        }
        Ok(report)
    }

    /// Removes the bench root and closes every session.
    async fn teardown(&self) -> Result<(), Fatal> {
        let t0 = Instant::now();
        let result = rmr(&self.clients, &self.root).await;
        if let Ok(n) = &result {
            eprintln!(
                "synod-bench: removed {} ({n} znodes) in {:.1?}",
                self.root,
                t0.elapsed()
            );
        }
        for zk in &self.clients {
            let _ = zk.close().await;
        }
        result.map(drop)
    }
}

/// [`Client::connect`] with an owned connect string, so the futures can be collected.
async fn connect_owned(cs: String, options: ConnectOptions) -> Result<Client, Error> {
    Client::connect(&cs, options).await
}

/// Prints a result on stdout (text or JSON) and an error summary on stderr.
fn print_report(report: &Report, args: &Args) {
    if args.json {
        println!("{}", report.json(args));
    } else {
        println!("{}", report.text());
    }
    if report.errors > 0 {
        eprintln!(
            "synod-bench: {} errors: {:?}",
            report.errors, report.error_kinds
        );
    }
}

/// The whole run: connect, set up, run each workload, clean up. `Ok(false)` if interrupted.
async fn bench(args: Args) -> Result<bool, Fatal> {
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            eprintln!("synod-bench: interrupted; stopping the measurement and cleaning up (Ctrl-C again to quit now)");
            stop.store(true, Ordering::Relaxed);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        });
    }
    let workloads = args.workload.clone();
    let mut b = Bench::connect(args, stop.clone()).await?;
    let result = async {
        b.setup().await?;
        for w in workloads {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let report = b.run(w).await?;
            print_report(&report, &b.args);
        }
        Ok::<(), Fatal>(())
    }
    .await;
    let cleanup = b.teardown().await;
    result?;
    cleanup?;
    Ok(!stop.load(Ordering::Relaxed))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("synod-bench: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = if let Some(secs) = args.handshakes {
        runtime.block_on(handshakes(&args, secs)).map(|()| true)
    } else if let Some(dir) = &args.floor {
        floor::loopback_rtt(200, 5_000)
            .and_then(|rtt| {
                Ok([
                    rtt,
                    floor::loopback_rtt_idle(20, 1_000)?,
                    floor::append_fdatasync(dir, 20, 500)?,
                    floor::overwrite_fdatasync(dir, 20, 500)?,
                    floor::concurrent_append_fdatasync(dir, 20, 300)?,
                ])
            })
            .map(|floors| {
                for f in floors {
                    println!("{}", f.text());
                }
                true
            })
    } else if let Some(n) = args.fill {
        runtime.block_on(fill(&args, n)).map(|()| true)
    } else if let Some(n) = args.hold_sessions {
        runtime.block_on(hold::hold(&args, n)).map(|()| true)
    } else {
        runtime.block_on(bench(args))
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(130),
        Err(Fatal(msg)) => {
            eprintln!("synod-bench: {msg}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_spreads_sessions_over_servers() {
        let cs = ConnectString::parse("a:1,b:2,[::1]:3/app").expect("parse");
        assert_eq!(rotated(&cs, 0), "a:1,b:2,[::1]:3/app");
        assert_eq!(rotated(&cs, 1), "b:2,[::1]:3,a:1/app");
        assert_eq!(rotated(&cs, 5), "[::1]:3,a:1,b:2/app");
    }

    #[test]
    fn mixed_distribution_is_as_documented() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = [0u32; 5];
        for _ in 0..100_000 {
            counts[choose_mixed(&mut rng, true).index()] += 1;
        }
        let pct: Vec<u32> = counts.iter().map(|c| (c + 500) / 1000).collect();
        assert_eq!(pct, vec![1, 8, 45, 45, 1]);
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Args::command().debug_assert();
        let a = Args::try_parse_from([
            "synod-bench",
            "--workload",
            "set,get",
            "--duration-secs",
            "1",
        ])
        .expect("parse");
        assert_eq!(a.workload, vec![Workload::Set, Workload::Get]);
    }
}
