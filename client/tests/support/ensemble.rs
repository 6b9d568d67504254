//! A real N-node Apache ZooKeeper ensemble on 127.0.0.1 (or an external server list) for tests.
//!
//! Test suites and benchmarks talk to an [`Ensemble`]: [`from_env`] returns an [`External`] list when
//! `SYNOD_TEST_SERVERS="host:port,..."` is set (e.g. a synod cluster, or `scripts/zk-ensemble.sh`),
//! and otherwise starts a 3-node [`ZkEnsemble`] from the Debian `zookeeper` package
//! (`/usr/share/java/zookeeper.jar`, java 17). The ZooKeeper configuration matches
//! `scripts/zk-ensemble.sh`.
//!
//! Linux only: children are tied to the test process with `PR_SET_PDEATHSIG`.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// The ZooKeeper server jar; its manifest `Class-Path` names the Debian jars it depends on.
pub const ZK_JAR: &str = "/usr/share/java/zookeeper.jar";
/// An SLF4J binding for ZooKeeper's logging. The jar's manifest names only `slf4j-api`, and without a
/// binding ZooKeeper logs nothing at all; slf4j-simple writes to stderr, which goes to the node's log.
pub const SLF4J_SIMPLE_JAR: &str = "/usr/share/java/slf4j-simple.jar";
/// The JVM that runs the nodes (Debian's OpenJDK 17).
pub const JAVA: &str = "/usr/bin/java";
/// The ZooKeeper server entry point, for standalone and replicated mode alike.
pub const MAIN_CLASS: &str = "org.apache.zookeeper.server.quorum.QuorumPeerMain";
/// Environment variable naming an external server list; see [`from_env`].
pub const SERVERS_ENV: &str = "SYNOD_TEST_SERVERS";

/// JVM arguments for every node. `extendedTypesEnabled` turns on TTL nodes (off by default in
/// ZooKeeper, where creating one fails with `UNIMPLEMENTED`); the container check interval makes an
/// empty container node vanish within ~1 s instead of 60 s; the AdminServer (Jetty, port 8080) would
/// make N nodes collide on one port and nothing here uses it; the simpleLogger options timestamp the
/// log lines.
pub const JVM_ARGS: &[&str] = &[
    "-Xmx512m",
    "-Dzookeeper.extendedTypesEnabled=true",
    "-Dznode.container.checkIntervalMs=1000",
    "-Dzookeeper.admin.enableServer=false",
    "-Dorg.slf4j.simpleLogger.showDateTime=true",
    "-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS",
];

/// How long [`ZkEnsemble::start`] waits for every node to serve under one leader. A JVM starts in
/// 1-2 s on a 2-core machine and election takes well under a second, so this only bites when
/// something is wrong (or the machine is badly overloaded).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`Ensemble::restart`] waits for the restarted node to rejoin as leader or follower.
pub const RESTART_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two rounds of `srvr` polling while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Per-connection bound on a four-letter-word exchange, so a hung node cannot stall a test.
const FOUR_LETTER_TIMEOUT: Duration = Duration::from_secs(2);
/// How many lines [`ZkEnsemble::log_tail`] returns.
const LOG_TAIL_LINES: usize = 100;
/// How many times [`ZkEnsemble::start`] retries with fresh ports when a node could not bind one
/// (ports are picked free, then released, so another process may grab one in between).
const START_ATTEMPTS: usize = 3;

/// A set of servers a test can talk to and, for a local ensemble, kill and restart.
pub trait Ensemble: Send + Sync {
    /// A short label for messages: `"zookeeper"` or `"external"`.
    fn name(&self) -> &str;

    /// The client addresses, in node order (index `i` here is node `i` for [`Ensemble::kill`]).
    fn addrs(&self) -> Vec<SocketAddr>;

    /// A ZooKeeper connect string, `"127.0.0.1:p1,127.0.0.1:p2,..."`.
    fn connect_string(&self) -> String {
        self.addrs()
            .iter()
            .map(SocketAddr::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether [`Ensemble::kill`] and [`Ensemble::restart`] work; tests that need fault injection
    /// skip themselves when this is false.
    fn can_kill(&self) -> bool;

    /// SIGKILLs node `idx` and waits for the process to exit. A node that is already down is left
    /// alone (`Ok`).
    fn kill(&self, idx: usize) -> io::Result<()>;

    /// Starts node `idx` again on the same ports and data, and waits (bounded) until it serves
    /// clients as leader or follower. Fails if the node is still running.
    fn restart(&self, idx: usize) -> io::Result<()>;
}

/// Returns [`External`] for `SYNOD_TEST_SERVERS="host:port,..."` if that is set and non-empty,
/// otherwise starts a local 3-node [`ZkEnsemble`].
pub fn from_env() -> io::Result<Box<dyn Ensemble>> {
    match std::env::var(SERVERS_ENV) {
        Ok(list) if !list.trim().is_empty() => Ok(Box::new(External::from_list(&list)?)),
        _ => Ok(Box::new(ZkEnsemble::start(3)?)),
    }
}

/// Servers the test did not start and cannot kill: a synod cluster, a ZooKeeper started by
/// `scripts/zk-ensemble.sh`, anything speaking the protocol.
#[derive(Debug, Clone)]
pub struct External {
    /// The entries as given (trimmed), so `connect_string` keeps host names rather than resolved
    /// addresses.
    entries: Vec<String>,
    /// Each entry resolved to its first socket address, for tests that open raw connections.
    addrs: Vec<SocketAddr>,
}

impl External {
    /// Parses a comma-separated `host:port` list; empty entries are skipped, and each host must
    /// resolve. Fails with `InvalidInput` if the list is empty or an entry does not resolve.
    pub fn from_list(list: &str) -> io::Result<External> {
        let mut entries = Vec::new();
        let mut addrs = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let addr = entry
                .to_socket_addrs()
                .map_err(|e| invalid_input(format!("server {entry:?}: {e}")))?
                .next()
                .ok_or_else(|| invalid_input(format!("server {entry:?} resolves to no address")))?;
            entries.push(entry.to_string());
            addrs.push(addr);
        }
        if entries.is_empty() {
            return Err(invalid_input(format!("empty server list {list:?}")));
        }
        Ok(External { entries, addrs })
    }
}

impl Ensemble for External {
    fn name(&self) -> &str {
        "external"
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        self.addrs.clone()
    }

    fn connect_string(&self) -> String {
        self.entries.join(",")
    }

    fn can_kill(&self) -> bool {
        false
    }

    fn kill(&self, _idx: usize) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "cannot kill a node of an external ensemble",
        ))
    }

    fn restart(&self, _idx: usize) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "cannot restart a node of an external ensemble",
        ))
    }
}

/// The fixed facts about one node: where it listens and where its files are.
#[derive(Debug, Clone)]
struct Node {
    /// The ZooKeeper server id (`myid`, `server.<id>=`), 1-based: node index + 1.
    id: usize,
    /// Where clients (and four-letter words) connect.
    client_port: u16,
    /// Where followers connect to this node when it leads.
    quorum_port: u16,
    /// Where peers connect for leader election.
    election_port: u16,
    /// The node's directory: `zoo.cfg`, `zookeeper.log` and `data/`.
    dir: PathBuf,
}

impl Node {
    /// The node's `zoo.cfg`, passed to `QuorumPeerMain`.
    fn cfg_path(&self) -> PathBuf {
        self.dir.join("zoo.cfg")
    }

    /// `dataDir`: `myid`, snapshots and the transaction log; survives restarts.
    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The JVM's stdout and stderr, appended to across restarts.
    fn log_path(&self) -> PathBuf {
        self.dir.join("zookeeper.log")
    }

    /// Where clients connect.
    fn client_addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.client_port))
    }
}

/// A real Apache ZooKeeper ensemble of N JVMs on 127.0.0.1, killed and deleted on drop.
///
/// Each node runs with tickTime=500 (so the negotiated session timeout is clamped to 1-10 s),
/// initLimit=20, syncLimit=10, unlimited connections per client, all four-letter words, TTL nodes
/// and a 1 s container check. Nodes die with the test process (`PR_SET_PDEATHSIG`), even one killed
/// by a signal. Kept in a `static`, the ensemble is never dropped: its JVMs still die with the
/// process, but its temporary directory stays behind.
pub struct ZkEnsemble {
    /// Ports and paths per node, in node order; fixed for the ensemble's life so restarts reuse them.
    nodes: Vec<Node>,
    /// The running JVM per node (`None` while killed); a mutex because the trait is `&self` and
    /// tests share ensembles across threads.
    children: Mutex<Vec<Option<Child>>>,
    /// Root of every node's files; deleted when the ensemble is dropped (after the children are
    /// killed, since `Drop::drop` runs before fields are dropped).
    root: tempfile::TempDir,
}

impl ZkEnsemble {
    /// Starts an `n`-node ensemble and waits (at most [`START_TIMEOUT`]) until every node answers
    /// `srvr` as leader or follower with exactly one leader. One node works too: it runs as a
    /// one-voter quorum (`standaloneEnabled=false`) and reports `leader`.
    pub fn start(n: usize) -> io::Result<ZkEnsemble> {
        if n == 0 {
            return Err(invalid_input("an ensemble needs at least one node".into()));
        }
        for file in [ZK_JAR, JAVA] {
            if !Path::new(file).exists() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "{file} not found; install ZooKeeper with `apt-get install zookeeper` \
                             (or set {SERVERS_ENV} to test against running servers)"
                    ),
                ));
            }
        }
        let root = tempfile::Builder::new().prefix("synod-zk-").tempdir()?;
        let mut ensemble = ZkEnsemble {
            nodes: prepare_nodes(root.path(), n)?,
            children: Mutex::new((0..n).map(|_| None).collect()),
            root,
        };
        let mut attempt = 1;
        loop {
            match ensemble.boot() {
                Ok(()) => return Ok(ensemble),
                Err(BootError {
                    bind_failure: true, ..
                }) if attempt < START_ATTEMPTS => {
                    // Another process took one of the ports between picking and binding: start
                    // over in the same directory with fresh ports.
                    attempt += 1;
                    ensemble.kill_all();
                    ensemble.nodes = prepare_nodes(ensemble.root.path(), n)?;
                }
                Err(e) => return Err(e.error), // `ensemble` drops here: children killed, files gone
            }
        }
    }

    /// The mode node `idx` reports via the `srvr` four-letter word: `"leader"`, `"follower"`,
    /// `"observer"`, `"standalone"`; `None` if it is down, unreachable, or not serving (e.g. during an
    /// election). Also works on nodes this ensemble does not consider running.
    pub fn mode(&self, idx: usize) -> Option<String> {
        srvr_mode(self.nodes.get(idx)?.client_addr())
    }

    /// The index of the node currently reporting `leader`, if exactly one does.
    pub fn leader(&self) -> Option<usize> {
        let leaders: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.mode(i).as_deref() == Some("leader"))
            .collect();
        match leaders[..] {
            [one] => Some(one),
            _ => None,
        }
    }

    /// Waits (at most `timeout`) until exactly one node leads and every running node reports leader
    /// or follower, e.g. after killing the leader; returns the leader's index. Fails with `TimedOut`
    /// (including each node's mode) otherwise.
    pub fn wait_for_leader(&self, timeout: Duration) -> io::Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let running = self.running();
            let modes: Vec<Option<String>> = (0..self.nodes.len())
                .map(|i| if running[i] { self.mode(i) } else { None })
                .collect();
            let leaders: Vec<usize> = (0..modes.len())
                .filter(|&i| modes[i].as_deref() == Some("leader"))
                .collect();
            let all_serving = (0..modes.len())
                .filter(|&i| running[i])
                .all(|i| matches!(modes[i].as_deref(), Some("leader" | "follower")));
            if let ([leader], true) = (&leaders[..], all_serving) {
                return Ok(*leader);
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no single leader after {timeout:?}; modes {modes:?} (running {running:?})"
                    ),
                ));
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Whether this ensemble has a live process for each node (false after [`Ensemble::kill`] or if
    /// the JVM exited by itself).
    pub fn running(&self) -> Vec<bool> {
        let mut children = self.lock_children();
        children
            .iter_mut()
            .map(|slot| match slot {
                Some(child) => matches!(child.try_wait(), Ok(None)),
                None => false,
            })
            .collect()
    }

    /// The last lines of node `idx`'s log (ZooKeeper's output across all its runs), for failure
    /// messages. Never fails: problems reading the log are described in the returned text.
    pub fn log_tail(&self, idx: usize) -> String {
        match self.nodes.get(idx) {
            Some(node) => tail(&node.log_path(), LOG_TAIL_LINES),
            None => format!("(no node {idx}; the ensemble has {})", self.nodes.len()),
        }
    }

    /// The directory holding node `idx`'s `zoo.cfg`, `zookeeper.log` and `data/`.
    pub fn node_dir(&self, idx: usize) -> Option<&Path> {
        self.nodes.get(idx).map(|n| n.dir.as_path())
    }

    /// Spawns every node and waits until they serve under one leader.
    fn boot(&self) -> Result<(), BootError> {
        for idx in 0..self.nodes.len() {
            self.spawn_node(idx).map_err(BootError::other)?;
        }
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let modes: Vec<Option<String>> = (0..self.nodes.len()).map(|i| self.mode(i)).collect();
            let leaders = modes
                .iter()
                .filter(|m| m.as_deref() == Some("leader"))
                .count();
            let serving = modes
                .iter()
                .filter(|m| matches!(m.as_deref(), Some("leader" | "follower")))
                .count();
            if leaders == 1 && serving == self.nodes.len() {
                return Ok(());
            }
            if let Some(idx) = self.running().iter().position(|r| !r) {
                let log = fs::read_to_string(self.nodes[idx].log_path()).unwrap_or_default();
                return Err(BootError {
                    bind_failure: log.contains("Address already in use")
                        || log.contains("BindException"),
                    error: io::Error::other(format!(
                        "ZooKeeper node {idx} exited during start-up\n{}",
                        self.all_log_tails(40)
                    )),
                });
            }
            if Instant::now() >= deadline {
                return Err(BootError::other(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "ZooKeeper ensemble not serving after {START_TIMEOUT:?}: modes {modes:?}\n{}",
                        self.all_log_tails(40)
                    ),
                )));
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Starts node `idx`'s JVM (appending to its log) and records the child.
    fn spawn_node(&self, idx: usize) -> io::Result<()> {
        let node = &self.nodes[idx];
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.log_path())?;
        let mut classpath = ZK_JAR.to_string();
        if Path::new(SLF4J_SIMPLE_JAR).exists() {
            classpath.push(':');
            classpath.push_str(SLF4J_SIMPLE_JAR);
        }
        let mut cmd = Command::new(JAVA);
        cmd.args(JVM_ARGS)
            .arg("-cp")
            .arg(classpath)
            .arg(MAIN_CLASS)
            .arg(node.cfg_path())
            .current_dir(&node.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs in the forked child before exec; it only makes async-signal-safe
        // system calls (prctl, getppid, getpid, kill) and allocates nothing on success.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl; then nobody would signal us.
                if libc::getppid() != parent {
                    libc::kill(libc::getpid(), libc::SIGKILL);
                }
                Ok(())
            });
        }
        let child = spawn_from_immortal_thread(cmd)?;
        self.lock_children()[idx] = Some(child);
        Ok(())
    }

    /// SIGKILLs and reaps every live child.
    fn kill_all(&self) {
        for slot in self.lock_children().iter_mut() {
            if let Some(mut child) = slot.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// The last `lines` lines of every node's log, labelled, for start-up errors (after which the
    /// caller has no ensemble to ask and the directory is gone).
    fn all_log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for (idx, node) in self.nodes.iter().enumerate() {
            let _ = writeln!(
                out,
                "--- node {idx} ({}) ---\n{}",
                node.log_path().display(),
                tail(&node.log_path(), lines)
            );
        }
        out
    }

    /// The children, even if a panicking thread poisoned the lock (the data stays consistent).
    fn lock_children(&self) -> MutexGuard<'_, Vec<Option<Child>>> {
        self.children.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `InvalidInput` unless `idx` names a node.
    fn check_idx(&self, idx: usize) -> io::Result<()> {
        if idx < self.nodes.len() {
            Ok(())
        } else {
            Err(invalid_input(format!(
                "no node {idx}; the ensemble has {}",
                self.nodes.len()
            )))
        }
    }
}

/// A failed start attempt.
struct BootError {
    /// A node exited complaining that a port was taken; worth retrying with fresh ports.
    bind_failure: bool,
    /// What went wrong, with the nodes' log tails.
    error: io::Error,
}

impl BootError {
    /// A failure that retrying with other ports would not fix.
    fn other(error: io::Error) -> BootError {
        BootError {
            bind_failure: false,
            error,
        }
    }
}

impl Ensemble for ZkEnsemble {
    fn name(&self) -> &str {
        "zookeeper"
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(Node::client_addr).collect()
    }

    fn can_kill(&self) -> bool {
        true
    }

    fn kill(&self, idx: usize) -> io::Result<()> {
        self.check_idx(idx)?;
        let taken = self.lock_children()[idx].take();
        if let Some(mut child) = taken {
            child.kill()?; // SIGKILL on Unix; Ok if it already exited but was not reaped
            child.wait()?;
        }
        Ok(())
    }

    fn restart(&self, idx: usize) -> io::Result<()> {
        self.check_idx(idx)?;
        if self.running()[idx] {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("ZooKeeper node {idx} is still running; kill it first"),
            ));
        }
        // Reap a JVM that exited by itself, so its slot can be reused.
        if let Some(mut dead) = self.lock_children()[idx].take() {
            let _ = dead.wait();
        }
        self.spawn_node(idx)?;
        let deadline = Instant::now() + RESTART_TIMEOUT;
        loop {
            if matches!(self.mode(idx).as_deref(), Some("leader" | "follower")) {
                return Ok(());
            }
            if !self.running()[idx] {
                return Err(io::Error::other(format!(
                    "ZooKeeper node {idx} exited after restart\n{}",
                    self.log_tail(idx)
                )));
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "ZooKeeper node {idx} not serving {RESTART_TIMEOUT:?} after restart\n{}",
                        self.log_tail(idx)
                    ),
                ));
            }
            thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for ZkEnsemble {
    /// Kills every node (also while unwinding from a failed test) before the directory is removed.
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Picks free ports and writes each node's `myid` and `zoo.cfg` under `root` (replacing files of an
/// earlier attempt, keeping nothing else).
fn prepare_nodes(root: &Path, n: usize) -> io::Result<Vec<Node>> {
    let ports = free_ports(3 * n)?;
    let nodes: Vec<Node> = (0..n)
        .map(|i| Node {
            id: i + 1,
            client_port: ports[3 * i],
            quorum_port: ports[3 * i + 1],
            election_port: ports[3 * i + 2],
            dir: root.join(format!("node{}", i + 1)),
        })
        .collect();
    let mut servers = String::new();
    for node in &nodes {
        let _ = writeln!(
            servers,
            "server.{}=127.0.0.1:{}:{};127.0.0.1:{}",
            node.id, node.quorum_port, node.election_port, node.client_port
        );
    }
    for node in &nodes {
        if node.dir.exists() {
            fs::remove_dir_all(&node.dir)?;
        }
        fs::create_dir_all(node.data_dir())?;
        fs::write(node.data_dir().join("myid"), format!("{}\n", node.id))?;
        let cfg = format!(
            "# written by client/tests/support/ensemble.rs: node {id} of {n}\n\
             tickTime=500\n\
             initLimit=20\n\
             syncLimit=10\n\
             dataDir={data}\n\
             clientPort={client}\n\
             clientPortAddress=127.0.0.1\n\
             maxClientCnxns=0\n\
             4lw.commands.whitelist=*\n\
             admin.enableServer=false\n\
             standaloneEnabled=false\n\
             {servers}",
            id = node.id,
            data = node.data_dir().display(),
            client = node.client_port,
        );
        let mut f = File::create(node.cfg_path())?;
        f.write_all(cfg.as_bytes())?;
    }
    Ok(nodes)
}

/// `count` distinct free loopback ports: all are bound at once (so none repeats), then released.
fn free_ports(count: usize) -> io::Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// Sends `srvr` to `addr` and returns the value of its `Mode:` line, if any.
fn srvr_mode(addr: SocketAddr) -> Option<String> {
    let reply = four_letter_word(addr, "srvr").ok()?;
    reply
        .lines()
        .find_map(|l| l.strip_prefix("Mode:"))
        .map(|m| m.trim().to_string())
}

/// Sends a four-letter word and reads the reply until the server closes the connection.
fn four_letter_word(addr: SocketAddr, word: &str) -> io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, FOUR_LETTER_TIMEOUT)?;
    stream.set_read_timeout(Some(FOUR_LETTER_TIMEOUT))?;
    stream.set_write_timeout(Some(FOUR_LETTER_TIMEOUT))?;
    stream.write_all(word.as_bytes())?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply)
}

/// The last `lines` lines of the file at `path`, or a note saying why it could not be read.
fn tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Spawns `cmd` from a thread that lives as long as the process.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process. Test
/// threads come and go (an ensemble in a `static` outlives the test that started it), so children
/// are forked from one thread that never exits, and die only with the process.
fn spawn_from_immortal_thread(cmd: Command) -> io::Result<Child> {
    type Job = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("zk-ensemble-spawner".into())
            .spawn(move || {
                // The sender lives in a static, so this loop ends only with the process.
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("cannot start the zk-ensemble spawner thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("zk-ensemble spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("zk-ensemble spawner thread is gone"))?
}

/// An `InvalidInput` error with `msg`.
fn invalid_input(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}
