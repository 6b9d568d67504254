//! Real N-node clusters on 127.0.0.1 (Apache ZooKeeper or synod), or an external server list, for
//! tests.
//!
//! Test suites and benchmarks talk to an [`Ensemble`]: [`from_env`] returns an [`External`] list when
//! `SYNOD_TEST_SERVERS="host:port,..."` is set (e.g. a synod cluster, or `scripts/zk-ensemble.sh`),
//! and otherwise starts a 3-node [`ZkEnsemble`] from the Debian `zookeeper` package
//! (`/usr/share/java/zookeeper.jar`, java 17). The ZooKeeper configuration matches
//! `scripts/zk-ensemble.sh`. [`SynodEnsemble`] runs the same kind of cluster from a `synod` binary.
//!
//! Both local kinds share one machinery, [`Local`]: free loopback ports per node, a temporary
//! directory with one sub-directory (configuration, data, log) per node, processes forked from one
//! long-lived thread and tied to the test process with `PR_SET_PDEATHSIG`, SIGKILL on drop, and
//! bounded waits for a single leader. A [`Kind`] supplies what differs: how a node is configured,
//! started and asked for its role.
//!
//! [`SynodEnsemble`] also serves the operations tests, which pick each node's membership
//! themselves: [`Local::unstarted`] lays nodes out without starting any, and
//! [`Local::spawn_with`] starts one with the `--members` and flags a test chooses (initial voters,
//! `--join`, restored data directories).
//!
//! Linux only.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::http::AdminHttp;

/// The `synod` server binary for tests outside the server crate: `$SYNOD_BIN` if set, else
/// `<directory of the running test executable>/../synod` (in `cargo test --workspace` the server's
/// binary is built into `target/<profile>/synod` before any test runs).
pub fn synod_bin() -> io::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("SYNOD_BIN") {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("SYNOD_BIN={} is not a file", bin.display()),
            ))
        };
    }
    let exe = std::env::current_exe()?;
    let guess = exe
        .parent()
        .and_then(Path::parent)
        .map(|profile| profile.join("synod"));
    match guess {
        Some(bin) if bin.is_file() => Ok(bin),
        other => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no synod binary at {}; build it with `cargo build -p synod-server` (same target \
                 directory and profile) or set SYNOD_BIN to its path",
                other.map_or_else(|| "<unknown>".to_string(), |p| p.display().to_string())
            ),
        )),
    }
}

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

/// The password of the super identity every test ensemble grants (ZooKeeper's superDigest,
/// synod's `--super-digest`): a client that sends `addauth digest super:<this>` is `super`.
pub const SUPER_PASSWORD: &str = "conformance-super";
/// [`SUPER_PASSWORD`]'s digest, as both servers are configured with it.
pub const SUPER_DIGEST: &str = "super:vwF3b39JxzrgKUNiFet8/1LxKxY=";

/// JVM arguments for every node. `extendedTypesEnabled` turns on TTL nodes (off by default in
/// ZooKeeper, where creating one fails with `UNIMPLEMENTED`); the container check interval makes an
/// empty container node vanish within ~1 s instead of 60 s; the AdminServer (Jetty, port 8080) would
/// make N nodes collide on one port and nothing here uses it; `enforceQuota` makes hard quota
/// limits refuse writes (synod always does); the super digest is [`SUPER_DIGEST`]; the
/// simpleLogger options timestamp the log lines. `-XX:-UsePerfData`: the JVM keeps no
/// `/tmp/hsperfdata_<user>/<pid>` file, which a node killed by SIGKILL (as dropping an ensemble
/// kills every node) never removes: each run of the suite left one per node behind.
pub const JVM_ARGS: &[&str] = &[
    "-Xmx512m",
    "-XX:-UsePerfData",
    "-Dzookeeper.extendedTypesEnabled=true",
    "-Dznode.container.checkIntervalMs=1000",
    "-Dzookeeper.admin.enableServer=false",
    "-Dzookeeper.enforceQuota=true",
    "-Dzookeeper.DigestAuthenticationProvider.superDigest=super:vwF3b39JxzrgKUNiFet8/1LxKxY=",
    "-Dorg.slf4j.simpleLogger.showDateTime=true",
    "-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS",
];

/// How long starting an ensemble (and [`Local::start_all`]) waits for every node to serve under one
/// leader. A JVM starts in 1-2 s on a 2-core machine, a synod node in well under one, and election
/// takes about a second, so this only bites when something is wrong (or the machine is badly
/// overloaded).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`Ensemble::restart`] waits for the restarted node to rejoin as leader or follower.
pub const RESTART_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two rounds of role polling while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Per-connection bound on a four-letter-word or admin HTTP exchange, so a hung (or paused) node
/// cannot stall a test.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on an admin request that may take long (a snapshot, a membership change).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(150);
/// How many lines [`Local::log_tail`] returns.
const LOG_TAIL_LINES: usize = 100;
/// How many lines of each node's log a start-up or wait error quotes.
const ERROR_LOG_LINES: usize = 40;
/// How many times starting an ensemble retries with fresh ports when a node could not bind one
/// (ports are picked free, then released, so another process may grab one in between).
const START_ATTEMPTS: usize = 3;

/// A set of servers a test can talk to and, for a local ensemble, kill and restart.
pub trait Ensemble: Send + Sync {
    /// A short label for messages: `"zookeeper"`, `"synod"` or `"external"`.
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

    /// How clients speak TLS to these servers (`None`: plaintext). Tests put it into every
    /// `ConnectOptions` they connect with ([`Ensemble::connect_options`]).
    fn tls(&self) -> Option<synod_client::tls::TlsConnector> {
        None
    }

    /// Like [`Ensemble::tls`], presenting no client certificate (for servers that admit
    /// certificate-less TLS clients: `--client-auth optional`).
    fn anonymous_tls(&self) -> Option<synod_client::tls::TlsConnector> {
        None
    }

    /// Default connect options for these servers: TLS where they need it.
    fn connect_options(&self) -> synod_client::ConnectOptions {
        synod_client::ConnectOptions {
            tls: self.tls(),
            ..Default::default()
        }
    }

    /// The index of the node leading now, if known (`None` for servers out of reach).
    fn leader(&self) -> Option<usize> {
        None
    }

    /// Whether [`Ensemble::kill`] and [`Ensemble::restart`] work; tests that need fault injection
    /// skip themselves when this is false.
    fn can_kill(&self) -> bool;

    /// Whether a session may live on its server alone (ZooKeeper's `localSessionsEnabled`), so
    /// that an election its server takes part in can end it (`SessionExpired` on the next
    /// request). `false` for synod, which opens every session through Raft, and for servers
    /// out of reach (nothing known: a test must not excuse a lost session there).
    fn local_sessions(&self) -> bool {
        false
    }

    /// SIGKILLs node `idx` and waits for the process to exit. A node that is already down is left
    /// alone (`Ok`).
    fn kill(&self, idx: usize) -> io::Result<()>;

    /// Starts node `idx` again on the same ports and data, and waits (bounded) until it serves
    /// clients as leader or follower. Fails if the node is still running.
    fn restart(&self, idx: usize) -> io::Result<()>;

    /// Freezes node `idx` (SIGSTOP) until [`Ensemble::resume`]; only where [`Ensemble::can_kill`].
    fn pause(&self, idx: usize) -> io::Result<()> {
        let _ = idx;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{} servers cannot be paused from here", self.name()),
        ))
    }

    /// Continues node `idx` after [`Ensemble::pause`].
    fn resume(&self, idx: usize) -> io::Result<()> {
        let _ = idx;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{} servers cannot be resumed from here", self.name()),
        ))
    }
}

/// Returns [`External`] for `SYNOD_TEST_SERVERS="host:port,..."` if that is set and non-empty,
/// otherwise starts a local 3-node [`ZkEnsemble`].
pub fn from_env() -> io::Result<Box<dyn Ensemble>> {
    match std::env::var(SERVERS_ENV) {
        Ok(list) if !list.trim().is_empty() => Ok(Box::new(External::from_list(&list)?)),
        _ => Ok(Box::new(ZkEnsemble::start(3)?)),
    }
}

/// Like [`from_env`], the local ensemble in read-only mode ([`ZkEnsemble::start_read_only`]):
/// the conformance suite's.
pub fn from_env_read_only() -> io::Result<Box<dyn Ensemble>> {
    match std::env::var(SERVERS_ENV) {
        Ok(list) if !list.trim().is_empty() => Ok(Box::new(External::from_list(&list)?)),
        _ => Ok(Box::new(ZkEnsemble::start_read_only(3)?)),
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

// ---------------------------------------------------------------------------------------------
// The two kinds of local cluster
// ---------------------------------------------------------------------------------------------

/// A real Apache ZooKeeper ensemble of N JVMs on 127.0.0.1, killed and deleted on drop.
///
/// Each node runs with tickTime=500 (so the negotiated session timeout is clamped to 1-10 s),
/// initLimit=20, syncLimit=10, unlimited connections per client, all four-letter words, TTL nodes
/// and a 1 s container check. Kept in a `static`, the ensemble is never dropped: its JVMs still die
/// with the process, but its temporary directory stays behind.
pub type ZkEnsemble = Local<ZooKeeper>;

/// A synod cluster of N `synod` processes on 127.0.0.1, killed and deleted on drop. A node serves
/// once it reports role `leader`, or role `follower` naming the node that leads, on `GET /status`.
pub type SynodEnsemble = Local<Synod>;

/// What one kind of server needs from [`Local`]: its configuration, its command line and its role.
pub trait Kind: Send + Sync + 'static {
    /// The ensemble's [`Ensemble::name`]: `"zookeeper"` or `"synod"`.
    const NAME: &'static str;
    /// The log file (the process's stdout and stderr) inside a node's directory.
    const LOG_FILE: &'static str;

    /// Fails with a helpful message when what the nodes run is not installed or built.
    fn check_installed(&self) -> io::Result<()>;

    /// Writes the configuration of every node (fresh, empty directories; called again with new
    /// ports when a start attempt is retried).
    fn configure(&self, nodes: &[Node]) -> io::Result<()>;

    /// The command that runs `node`; [`Local`] adds stdio, the working directory and the tie to the
    /// test process.
    fn command(&self, node: &Node, nodes: &[Node]) -> Command;

    /// What `node` says about its role right now.
    fn probe(&self, node: &Node) -> Probe;

    /// The TLS options a client of these nodes needs (files under the ensemble's `root`), if
    /// they serve clients over TLS.
    fn client_tls(&self, _root: &Path) -> Option<synod_client::tls::TlsOptions> {
        None
    }

    /// Whether the nodes keep sessions on one server alone ([`Ensemble::local_sessions`]).
    fn local_sessions(&self) -> bool {
        false
    }
}

/// Where one node listens and keeps its files; fixed for the ensemble's life (after start-up), so
/// restarts reuse them.
#[derive(Debug, Clone)]
pub struct Node {
    /// The server id (ZooKeeper's `myid`, synod's `--id`), 1-based: node index + 1.
    pub id: usize,
    /// Where clients connect.
    pub client_port: u16,
    /// Where the other nodes connect: ZooKeeper's quorum port, synod's Raft peer port.
    pub peer_port: u16,
    /// The third port: ZooKeeper's leader-election port, synod's admin HTTP port.
    pub aux_port: u16,
    /// The node's directory: configuration, `data/` and the log file.
    pub dir: PathBuf,
    /// The address it listens on: 127.0.0.1, or its host's on a [`crate::netns::Netns`].
    pub host: IpAddr,
    /// The network namespace it runs in (`ip netns exec`), if not the test's own.
    pub netns: Option<String>,
}

impl Node {
    /// The data directory (snapshots and logs of the replicated state); survives restarts.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Where clients connect.
    pub fn client_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.client_port)
    }

    /// Where the other nodes connect (ZooKeeper's quorum port, synod's Raft peer port).
    pub fn peer_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.peer_port)
    }

    /// The third address: ZooKeeper's leader-election port, synod's admin HTTP port.
    pub fn aux_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.aux_port)
    }
}

/// A node's answer to [`Kind::probe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// No answer: the process is down, paused, or not listening yet.
    Down,
    /// It answers but does not serve (yet): looking for a leader, or a state named here.
    NotServing(String),
    /// It serves as a follower; synod says which node id leads (ZooKeeper's `srvr` does not).
    Follower(Option<usize>),
    /// It serves as the leader.
    Leader,
}

/// Apache ZooKeeper from the Debian package; see [`ZkEnsemble`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ZooKeeper {
    /// Read-only mode (`readonlymode.enabled`, with the local sessions it needs:
    /// `localSessionsEnabled`, upgraded to global ones by an ephemeral): the conformance suite's
    /// ensemble ([`ZkEnsemble::start_read_only`]). Local sessions let a client connect to a
    /// follower before an election has ended, so other tests run without.
    pub read_only_mode: bool,
}

impl Kind for ZooKeeper {
    const NAME: &'static str = "zookeeper";
    const LOG_FILE: &'static str = "zookeeper.log";

    fn check_installed(&self) -> io::Result<()> {
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
        Ok(())
    }

    fn configure(&self, nodes: &[Node]) -> io::Result<()> {
        let mut servers = String::new();
        for node in nodes {
            let _ = writeln!(
                servers,
                "server.{}=127.0.0.1:{}:{};127.0.0.1:{}",
                node.id, node.peer_port, node.aux_port, node.client_port
            );
        }
        for node in nodes {
            fs::create_dir_all(node.data_dir())?;
            fs::write(node.data_dir().join("myid"), format!("{}\n", node.id))?;
            let cfg = format!(
                "# written by testkit/src/ensemble.rs: node {id} of {n}\n\
                 tickTime=500\n\
                 initLimit=20\n\
                 syncLimit=10\n\
                 dataDir={data}\n\
                 clientPort={client}\n\
                 clientPortAddress=127.0.0.1\n\
                 maxClientCnxns=0\n\
                 4lw.commands.whitelist=*\n\
                 reconfigEnabled=true\n\
                 {read_only}
                 admin.enableServer=false\n\
                 standaloneEnabled=false\n\
                 {servers}",
                id = node.id,
                n = nodes.len(),
                data = node.data_dir().display(),
                client = node.client_port,
                read_only = if self.read_only_mode {
                    "localSessionsEnabled=true\nlocalSessionsUpgradingEnabled=true\n"
                } else {
                    ""
                },
            );
            let mut f = File::create(zk_cfg_path(node))?;
            f.write_all(cfg.as_bytes())?;
        }
        Ok(())
    }

    fn command(&self, node: &Node, _nodes: &[Node]) -> Command {
        let mut classpath = ZK_JAR.to_string();
        if Path::new(SLF4J_SIMPLE_JAR).exists() {
            classpath.push(':');
            classpath.push_str(SLF4J_SIMPLE_JAR);
        }
        let mut cmd = Command::new(JAVA);
        cmd.args(JVM_ARGS);
        if self.read_only_mode {
            cmd.arg("-Dreadonlymode.enabled=true");
        }
        cmd.arg("-cp")
            .arg(classpath)
            .arg(MAIN_CLASS)
            .arg(zk_cfg_path(node));
        cmd
    }

    fn probe(&self, node: &Node) -> Probe {
        match srvr_mode(node.client_addr()).as_deref() {
            None => Probe::Down,
            Some("leader") => Probe::Leader,
            Some("follower") => Probe::Follower(None),
            Some(other) => Probe::NotServing(other.to_string()),
        }
    }

    fn local_sessions(&self) -> bool {
        self.read_only_mode
    }
}

/// A node's `zoo.cfg`, passed to `QuorumPeerMain`.
fn zk_cfg_path(node: &Node) -> PathBuf {
    node.dir.join("zoo.cfg")
}

/// Per-node flags for [`Local::start_custom`]: given a node and every node, the flags after
/// `--id`, `--client-addr`, `--admin-addr` and `--data-dir` — `--members` included.
pub type NodeArgs = Arc<dyn Fn(&Node, &[Node]) -> Vec<String> + Send + Sync>;

/// The synod server binary; see [`SynodEnsemble`].
#[derive(Clone)]
pub struct Synod {
    /// The `synod` executable (in tests, `env!("CARGO_BIN_EXE_synod")`).
    pub bin: PathBuf,
    /// Flags added to every node's command line, after the ones the ensemble sets. Without
    /// `tls` and without a `--tls-ca` here, the nodes run `--insecure`.
    pub extra_args: Vec<String>,
    /// Replaces `--members` (every node as a voter) with flags of its own per node: other
    /// member lists, `--peer-route`s through fault proxies, `--join`.
    pub node_args: Option<NodeArgs>,
    /// Serve clients over TLS only: each node's client port is its `--secure-client-addr`, with
    /// a CA and certificates issued by `synod certs` under the ensemble's `certs/` directory
    /// (`ca.crt`, `node<id>.{crt,key}`, and `tester.{crt,key}` for the tests' clients).
    pub tls: bool,
    /// The admin-port client, made on first use (after the certificates exist).
    pub admin: Arc<OnceLock<AdminHttp>>,
    /// Environment variables added to every node's process (e.g. [`crate::inject::faketime_env`]).
    pub env: Vec<(String, String)>,
}

/// The name of the client certificate a TLS ensemble issues for the tests (`x509:tester`).
pub const TEST_CLIENT: &str = "tester";

/// The name of the operator certificate a TLS ensemble issues for the tests' admin requests
/// (the nodes' default `--admin-identities`).
pub const TEST_OPERATOR: &str = "admin";

impl Synod {
    /// The admin-port client for these nodes (`node_dir`: any node's directory): HTTPS as the
    /// ensemble's operator for a TLS ensemble, plaintext otherwise. A TLS ensemble whose
    /// certificates cannot be read gets a plaintext client, whose requests then fail.
    pub fn admin_http(&self, node_dir: &Path) -> AdminHttp {
        self.admin
            .get_or_init(|| {
                if !self.tls {
                    return AdminHttp::plain();
                }
                let dir = Synod::certs_dir(node_dir);
                let (cert, key) = (
                    dir.join(format!("{TEST_OPERATOR}.crt")),
                    dir.join(format!("{TEST_OPERATOR}.key")),
                );
                AdminHttp::https(&dir.join("ca.crt"), Some((&cert, &key))).unwrap_or_else(|e| {
                    eprintln!("testkit: no HTTPS admin client ({e}); using plaintext");
                    AdminHttp::plain()
                })
            })
            .clone()
    }

    /// The flags of `node`'s client port and its security: the secure port with the ensemble's
    /// certificates, or the plaintext one and `--insecure` (unless `extra` brings TLS material
    /// of its own).
    fn client_args<S: AsRef<str>>(&self, node: &Node, extra: &[S]) -> Vec<String> {
        let client = node.client_addr().to_string();
        if self.tls {
            let dir = Synod::certs_dir(&node.dir);
            let file = |f: String| dir.join(f).display().to_string();
            vec![
                "--secure-client-addr".into(),
                client,
                "--tls-ca".into(),
                file("ca.crt".into()),
                "--tls-cert".into(),
                file(format!("node{}.crt", node.id)),
                "--tls-key".into(),
                file(format!("node{}.key", node.id)),
            ]
        } else if brings_tls(extra) {
            vec!["--client-addr".into(), client]
        } else {
            vec!["--client-addr".into(), client, "--insecure".into()]
        }
    }

    /// Where a TLS ensemble keeps its CA and certificates: beside the node directories.
    fn certs_dir(node_dir: &Path) -> PathBuf {
        node_dir
            .parent()
            .map(|root| root.join("certs"))
            .unwrap_or_else(|| node_dir.join("certs"))
    }

    /// Runs `synod certs --dir <dir> <args>`.
    fn certs(&self, dir: &Path, args: &[&str]) -> io::Result<()> {
        synod_certs(&self.bin, dir, args)
    }
}

/// Runs `<bin> certs --dir <dir> <args>` (`synod certs`: a CA, node and client certificates);
/// an error carries what it printed.
pub fn synod_certs(bin: &Path, dir: &Path, args: &[&str]) -> io::Result<()> {
    let out = Command::new(bin)
        .arg("certs")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "synod certs {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Whether a plaintext ensemble's flags bring TLS material of their own (a test of TLS with its
/// own certificates); otherwise the ensemble runs its nodes `--insecure`.
fn brings_tls<S: AsRef<str>>(args: &[S]) -> bool {
    args.iter().any(|a| a.as_ref() == "--tls-ca")
}

/// `--members` naming `nodes` as voters at their peer ports.
pub fn members_arg(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| format!("{}={}", n.id, n.peer_addr()))
        .collect::<Vec<_>>()
        .join(",")
}

impl Kind for Synod {
    const NAME: &'static str = "synod";
    const LOG_FILE: &'static str = "synod.log";

    fn check_installed(&self) -> io::Result<()> {
        if self.bin.is_file() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "synod binary {} not found; build it with `cargo build -p synod-server`",
                    self.bin.display()
                ),
            ))
        }
    }

    fn configure(&self, nodes: &[Node]) -> io::Result<()> {
        // Everything else is on the command line; the node creates its data directory.
        if !self.tls {
            return Ok(());
        }
        let Some(first) = nodes.first() else {
            return Ok(());
        };
        // Issued once per ensemble (a retried start keeps them: they do not name ports).
        let dir = Synod::certs_dir(&first.dir);
        if !dir.join("ca.crt").exists() {
            self.certs(&dir, &["create-ca", "--name", "synod test CA"])?;
        }
        for node in nodes {
            if !dir.join(format!("node{}.crt", node.id)).exists() {
                let id = node.id.to_string();
                let host = node.host.to_string();
                let mut args = vec![
                    "create-node",
                    "--id",
                    &id,
                    "--host",
                    "127.0.0.1",
                    "--host",
                    "localhost",
                ];
                if !node.host.is_loopback() {
                    args.extend(["--host", &host]);
                }
                self.certs(&dir, &args)?;
            }
        }
        for name in [TEST_CLIENT, TEST_OPERATOR] {
            if !dir.join(format!("{name}.crt")).exists() {
                self.certs(
                    &dir,
                    &[
                        "create-client",
                        "--name",
                        name,
                        "--institution",
                        "synod-tests",
                    ],
                )?;
            }
        }
        Ok(())
    }

    fn client_tls(&self, root: &Path) -> Option<synod_client::tls::TlsOptions> {
        self.tls.then(|| {
            let dir = root.join("certs");
            synod_client::tls::TlsOptions::new(dir.join("ca.crt")).identity(
                dir.join(format!("{TEST_CLIENT}.crt")),
                dir.join(format!("{TEST_CLIENT}.key")),
            )
        })
    }

    fn command(&self, node: &Node, nodes: &[Node]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--id").arg(node.id.to_string());
        match &self.node_args {
            Some(f) => cmd.args(f(node, nodes)),
            None => cmd.arg("--members").arg(members_arg(nodes)),
        };
        cmd.args(self.client_args(node, &self.extra_args));
        cmd.arg("--admin-addr")
            .arg(node.aux_addr().to_string())
            .arg("--data-dir")
            .arg(node.data_dir())
            .args(&self.extra_args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd
    }

    fn probe(&self, node: &Node) -> Probe {
        let Some(status) = synod_status(&self.admin_http(&node.dir), node.aux_addr()) else {
            return Probe::Down;
        };
        let leader = status
            .get("leader")
            .and_then(serde_json::Value::as_u64)
            .map(|l| l as usize);
        match (status.get("role").and_then(|r| r.as_str()), leader) {
            (Some("leader"), Some(l)) if l == node.id => {
                let current = status
                    .get("cluster_version")
                    .and_then(serde_json::Value::as_u64);
                match cluster_version_due(&self.admin_http(&node.dir), node.aux_addr(), &status) {
                    // Raised already: the membership is still to be written there.
                    Some(due) if Some(due) == current => {
                        Probe::NotServing("/zookeeper/config still to be written".into())
                    }
                    Some(due) => Probe::NotServing(format!("raising the cluster version to {due}")),
                    None => Probe::Leader,
                }
            }
            (Some("follower"), Some(l)) => Probe::Follower(Some(l)),
            (role, _) => Probe::NotServing(format!("role {role:?}, leader {leader:?}")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The shared machinery
// ---------------------------------------------------------------------------------------------

/// A local cluster of `K` processes on 127.0.0.1; see [`ZkEnsemble`] and [`SynodEnsemble`].
///
/// Nodes die with the test process (`PR_SET_PDEATHSIG`), even one killed by a signal. Dropping the
/// ensemble SIGKILLs every node, then removes its directory.
pub struct Local<K: Kind> {
    /// How the nodes are configured, run and probed.
    kind: K,
    /// Ports and paths per node, in node order.
    nodes: Vec<Node>,
    /// The process per node; a mutex because the trait is `&self` and tests share ensembles
    /// across threads.
    slots: Mutex<Vec<Slot>>,
    /// Root of every node's files; deleted when the ensemble is dropped (after the processes are
    /// killed, since `Drop::drop` runs before fields are dropped).
    root: tempfile::TempDir,
    /// How clients reach the nodes over TLS (from [`Kind::client_tls`]); `None`: plaintext.
    tls: Option<synod_client::tls::TlsConnector>,
    /// The same trust without a client certificate.
    anonymous_tls: Option<synod_client::tls::TlsConnector>,
}

/// One node's process.
#[derive(Default)]
struct Slot {
    /// The running process (`None` while down; possibly exited by itself and not yet reaped).
    child: Option<Child>,
    /// Stopped with SIGSTOP by [`Local::pause`]: alive, but not expected to answer.
    paused: bool,
}

impl Local<ZooKeeper> {
    /// Starts an `n`-node ZooKeeper ensemble and waits (at most [`START_TIMEOUT`]) until every node
    /// answers `srvr` as leader or follower with exactly one leader. One node works too: it runs as
    /// a one-voter quorum (`standaloneEnabled=false`) and reports `leader`.
    pub fn start(n: usize) -> io::Result<ZkEnsemble> {
        Local::launch(ZooKeeper::default(), n, n, "synod-zk-")
    }

    /// Like [`ZkEnsemble::start`], in read-only mode (see [`ZooKeeper::read_only_mode`]).
    pub fn start_read_only(n: usize) -> io::Result<ZkEnsemble> {
        let kind = ZooKeeper {
            read_only_mode: true,
        };
        Local::launch(kind, n, n, "synod-zk-")
    }

    /// The mode node `idx` reports via the `srvr` four-letter word: `"leader"`, `"follower"`,
    /// `"observer"`, `"standalone"`; `None` if it is down, unreachable, or not serving (e.g. during an
    /// election). Also works on nodes this ensemble does not consider running.
    pub fn mode(&self, idx: usize) -> Option<String> {
        srvr_mode(self.nodes.get(idx)?.client_addr())
    }
}

impl Local<Synod> {
    /// Starts an `n`-node synod cluster from the binary `bin` (every node also gets `extra_args`)
    /// and waits (at most [`START_TIMEOUT`]) until exactly one node reports role `leader` on
    /// `GET /status` and every other reports that node as its leader.
    pub fn start(bin: &Path, n: usize, extra_args: &[String]) -> io::Result<SynodEnsemble> {
        let kind = Synod {
            bin: bin.to_path_buf(),
            extra_args: extra_args.to_vec(),
            node_args: None,
            tls: false,
            admin: Default::default(),
            env: Vec::new(),
        };
        Local::launch(kind, n, n, "synod-cluster-")
    }

    /// Like [`Local::start`], with clients served over TLS only (see [`Synod::tls`]); clients
    /// connect with [`Ensemble::connect_options`].
    pub fn start_tls(bin: &Path, n: usize, extra_args: &[String]) -> io::Result<SynodEnsemble> {
        let kind = Synod {
            bin: bin.to_path_buf(),
            extra_args: extra_args.to_vec(),
            node_args: None,
            tls: true,
            admin: Default::default(),
            env: Vec::new(),
        };
        Local::launch(kind, n, n, "synod-tls-cluster-")
    }

    /// Lays out `n` nodes but starts only the first `initial`, each with the flags `node_args`
    /// gives it (see [`NodeArgs`]; `extra_args` go to every node); waits like
    /// [`Local::start`]. The others wait for [`Local::spawn`] (e.g. nodes that join later).
    pub fn start_custom(
        bin: &Path,
        n: usize,
        initial: usize,
        extra_args: &[String],
        node_args: NodeArgs,
    ) -> io::Result<SynodEnsemble> {
        Self::start_custom_on(
            bin,
            n,
            initial,
            extra_args,
            node_args,
            Vec::new(),
            Vec::new(),
        )
    }

    /// Like [`Local::start_custom`], with `env` in every node's environment (whenever it is
    /// started), and node `i` on `hosts[i]` (none: 127.0.0.1): its address and the network
    /// namespace it runs in (e.g. a [`crate::netns::Netns`] host); the test must be able to
    /// reach those addresses.
    pub fn start_custom_on(
        bin: &Path,
        n: usize,
        initial: usize,
        extra_args: &[String],
        node_args: NodeArgs,
        env: Vec<(String, String)>,
        hosts: Vec<(IpAddr, Option<String>)>,
    ) -> io::Result<SynodEnsemble> {
        let kind = Synod {
            bin: bin.to_path_buf(),
            extra_args: extra_args.to_vec(),
            node_args: Some(node_args),
            tls: true,
            admin: Default::default(),
            env,
        };
        Local::launch_on(kind, n, initial, "synod-cluster-", hosts)
    }

    /// Lays out `n` nodes (ports, directories, certificates) of a secure cluster running `bin` and
    /// starts none of them: the test starts each with [`Local::spawn_with`], choosing its
    /// membership.
    pub fn unstarted_tls(bin: &Path, n: usize) -> io::Result<SynodEnsemble> {
        let kind = Synod {
            bin: bin.to_path_buf(),
            extra_args: Vec::new(),
            node_args: None,
            tls: true,
            admin: Default::default(),
            env: Vec::new(),
        };
        Local::launch(kind, n, 0, "synod-ops-tls-")
    }

    /// Like [`Local::unstarted_tls`], but the nodes run `--insecure` (unless the flags a test
    /// gives bring TLS material).
    pub fn unstarted(bin: &Path, n: usize) -> io::Result<SynodEnsemble> {
        let kind = Synod {
            bin: bin.to_path_buf(),
            extra_args: Vec::new(),
            node_args: None,
            tls: false,
            admin: Default::default(),
            env: Vec::new(),
        };
        Local::launch(kind, n, 0, "synod-ops-")
    }

    /// `--members` naming the nodes at `idxs` as voters at their peer ports.
    pub fn members(&self, idxs: &[usize]) -> String {
        idxs.iter()
            .map(|&i| format!("{}={}", self.nodes[i].id, self.nodes[i].peer_addr()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client connect string of the nodes at `idxs`.
    pub fn connect_string_of(&self, idxs: &[usize]) -> String {
        idxs.iter()
            .map(|&i| self.nodes[i].client_addr().to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts node `idx` (replacing a process it still has) with `--members members`, its own
    /// addresses (`--peer-addr` included) and data directory, and `extra` flags; does not wait for
    /// it to serve.
    pub fn spawn_with(&self, idx: usize, members: &str, extra: &[&str]) -> io::Result<()> {
        let bin = self.kind.bin.clone();
        self.spawn_binary(idx, &bin, members, extra)
    }

    /// Like [`Local::spawn_with`], running the executable `bin` instead of the ensemble's (the
    /// rolling-upgrade test runs the previous release's).
    pub fn spawn_binary(
        &self,
        idx: usize,
        bin: &Path,
        members: &str,
        extra: &[&str],
    ) -> io::Result<()> {
        self.check_idx(idx)?;
        let node = &self.nodes[idx];
        let mut cmd = Command::new(bin);
        cmd.arg("--id")
            .arg(node.id.to_string())
            .arg("--members")
            .arg(members)
            .args(self.kind.client_args(node, extra))
            .arg("--peer-addr")
            .arg(node.peer_addr().to_string())
            .arg("--admin-addr")
            .arg(node.aux_addr().to_string())
            .arg("--data-dir")
            .arg(node.data_dir())
            .args(extra);
        self.spawn_command(idx, cmd)
    }

    /// Sends SIGTERM to node `idx` and waits (at most `timeout`) for it to exit; SIGKILLs it after
    /// that. Returns its exit status, or `None` if it was not running or had to be killed.
    pub fn terminate(&self, idx: usize, timeout: Duration) -> Option<ExitStatus> {
        let mut child = std::mem::take(self.lock_slots().get_mut(idx)?).child?;
        // SAFETY: kill(2) on our own unreaped child.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                crate::inject::remove_faketime_objects(child.id());
                return Some(status);
            }
            if Instant::now() >= deadline {
                reap(child);
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// One admin HTTP request to node `idx` with an optional JSON body: (status, body); `None` if
    /// the node does not answer.
    pub fn http(
        &self,
        idx: usize,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Option<(u16, Vec<u8>)> {
        let body = body.map(serde_json::Value::to_string);
        self.kind
            .admin_http(&self.nodes.get(idx)?.dir)
            .request(
                self.admin_addr(idx)?,
                method,
                path,
                body.as_deref(),
                ADMIN_TIMEOUT,
            )
            .ok()
    }

    /// The value of the `/metrics` line of node `idx` that starts with `prefix` (a series' name
    /// and labels, then a space); `None` if the node does not answer or has no such line (a
    /// counter never incremented has none).
    pub fn metric(&self, idx: usize, prefix: &str) -> Option<f64> {
        let (status, body) = self.http(idx, "GET", "/metrics", None)?;
        if status != 200 {
            return None;
        }
        String::from_utf8_lossy(&body)
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse().ok())
    }

    /// [`Local::http`] with the answer parsed as JSON (`Null` if it is not JSON).
    pub fn json(
        &self,
        idx: usize,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Option<(u16, serde_json::Value)> {
        let (status, body) = self.http(idx, method, path, body)?;
        Some((
            status,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        ))
    }

    /// [`Local::json`] from a test: off the async workers ([`crate::blocking`]), and a node
    /// that does not answer fails the test, with the logs.
    pub fn admin_json(
        &self,
        idx: usize,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        crate::blocking(|| self.json(idx, method, path, body.as_ref()))
            .unwrap_or_else(|| panic!("{method} {path} on node {idx}: no answer\n{}", self.logs()))
    }

    /// The digest the nodes at `idxs` agree on (`GET /digest`: the same applied index and the
    /// same digest on each), once they do; panics after `timeout`.
    pub fn agreed_digest(&self, idxs: &[usize], timeout: Duration) -> String {
        crate::wait_for(timeout, "equal digests on every replica", || {
            let d: Vec<(u64, String)> = idxs
                .iter()
                .map(|&i| {
                    let (_, v) = self.admin_json(i, "GET", "/digest", None);
                    (
                        v["applied_index"].as_u64().unwrap_or(0),
                        v["digest"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect();
            d.iter().all(|x| *x == d[0]).then(|| d[0].1.clone())
        })
    }

    /// Waits until one of the nodes at `idxs` is leader and all of `idxs` name it on `/status`
    /// (other nodes, e.g. joiners not yet added, are not asked) and, in a fresh cluster whose
    /// members all run this build, the leader has raised the cluster version; returns its
    /// index. Panics with every asked node's status and the logs after `timeout`.
    pub fn wait_leader_among(&self, idxs: &[usize], timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let st: Vec<Option<serde_json::Value>> =
                idxs.iter().map(|&i| self.status_json(i)).collect();
            let leaders: Vec<usize> = idxs
                .iter()
                .zip(&st)
                .filter(|(_, s)| s.as_ref().and_then(|s| s["role"].as_str()) == Some("leader"))
                .map(|(&i, _)| i)
                .collect();
            if let [l] = leaders[..] {
                let id = self.nodes[l].id as u64;
                let named = st
                    .iter()
                    .all(|s| s.as_ref().and_then(|s| s["leader"].as_u64()) == Some(id));
                // A fresh cluster is formed once its version has risen (see
                // `cluster_version_due`).
                let formed = || {
                    let leader_status = idxs.iter().zip(&st).find(|(&i, _)| i == l);
                    leader_status.and_then(|(_, s)| s.as_ref()).is_none_or(|s| {
                        let admin = self.kind.admin_http(&self.nodes[l].dir);
                        cluster_version_due(&admin, self.nodes[l].aux_addr(), s).is_none()
                    })
                };
                if named && formed() {
                    return l;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no leader among {idxs:?} within {timeout:?}: {st:?}\n{}",
                self.logs()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts node `idx` (not running) without waiting for it to serve: a node joining the
    /// cluster serves only once the leader has added it.
    pub fn spawn(&self, idx: usize) -> io::Result<()> {
        self.check_idx(idx)?;
        if self.running()[idx] {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("synod node {idx} is already running"),
            ));
        }
        self.spawn_node(idx)
    }

    /// Starts node `idx` (not running) as [`Local::spawn`] does, with `env` added to its
    /// environment (e.g. libfaketime's `LD_PRELOAD` and `FAKETIME_*` to move its clock).
    pub fn spawn_with_env(&self, idx: usize, env: &[(&str, &str)]) -> io::Result<()> {
        self.check_idx(idx)?;
        if self.running()[idx] {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("synod node {idx} is already running"),
            ));
        }
        let mut cmd = self.kind.command(&self.nodes[idx], &self.nodes);
        cmd.envs(env.iter().copied());
        self.spawn_command(idx, cmd)
    }

    /// Node `idx`'s admin HTTP address (`/health`, `/status`).
    pub fn admin_addr(&self, idx: usize) -> Option<SocketAddr> {
        self.nodes.get(idx).map(Node::aux_addr)
    }

    /// The body of node `idx`'s `GET /status` (JSON), or `None` if it does not answer.
    pub fn status(&self, idx: usize) -> Option<String> {
        self.kind
            .admin_http(&self.nodes.get(idx)?.dir)
            .get(self.admin_addr(idx)?, "/status", PROBE_TIMEOUT)
            .ok()
    }

    /// Node `idx`'s `/status`, parsed; `None` if it does not answer with JSON.
    pub fn status_json(&self, idx: usize) -> Option<serde_json::Value> {
        synod_status(
            &self.kind.admin_http(&self.nodes.get(idx)?.dir),
            self.admin_addr(idx)?,
        )
    }

    /// A number field of node `idx`'s `/status` (e.g. `"applied_index"`, `"term"`).
    pub fn status_u64(&self, idx: usize, field: &str) -> Option<u64> {
        self.status_json(idx)?.get(field)?.as_u64()
    }

    /// Waits (at most `timeout`) until node `idx` has applied at least as much as the current
    /// leader (both read from `/status`, the leader's first), and returns its applied index.
    pub fn wait_caught_up(&self, idx: usize, timeout: Duration) -> io::Result<u64> {
        self.check_idx(idx)?;
        let mut last = (None, None);
        let waited = poll_until(timeout, || {
            let target = self
                .leader()
                .and_then(|l| self.status_u64(l, "applied_index"));
            let applied = self.status_u64(idx, "applied_index");
            last = (applied, target);
            Ok::<_, ()>(match (applied, target) {
                (Some(a), Some(t)) if a >= t => Some(a),
                _ => None,
            })
        });
        waited.map_err(|_| {
            timed_out(format!(
                "synod node {idx} not caught up after {timeout:?}: applied {:?}, leader's {:?}\n{}",
                last.0,
                last.1,
                self.log_tail(idx)
            ))
        })
    }
}

impl<K: Kind> Local<K> {
    /// Checks that `kind` is installed, lays out `n` nodes under a fresh temporary directory
    /// (named `prefix...`) and boots the first `initial`, retrying with fresh ports if a node
    /// could not bind one.
    fn launch(kind: K, n: usize, initial: usize, prefix: &str) -> io::Result<Local<K>> {
        Self::launch_on(kind, n, initial, prefix, Vec::new())
    }

    /// Like [`Local::launch`], node `i` on `hosts[i]` (its address and network namespace; a
    /// node without an entry runs on 127.0.0.1 in the test's own namespace).
    fn launch_on(
        kind: K,
        n: usize,
        initial: usize,
        prefix: &str,
        hosts: Vec<(IpAddr, Option<String>)>,
    ) -> io::Result<Local<K>> {
        if n == 0 || initial > n {
            return Err(invalid_input(format!(
                "cannot start {initial} of {n} nodes: an ensemble needs at least one"
            )));
        }
        kind.check_installed()?;
        let root = tempfile::Builder::new().prefix(prefix).tempdir()?;
        let nodes = layout(&kind, root.path(), n, &hosts)?;
        let connector = |options: synod_client::tls::TlsOptions| {
            options
                .connector()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("client TLS: {e}")))
        };
        let (tls, anonymous_tls) = match kind.client_tls(root.path()) {
            Some(options) => (
                Some(connector(options.clone())?),
                Some(connector(synod_client::tls::TlsOptions::new(options.ca))?),
            ),
            None => (None, None),
        };
        let mut ensemble = Local {
            nodes,
            slots: Mutex::new((0..n).map(|_| Slot::default()).collect()),
            kind,
            root,
            tls,
            anonymous_tls,
        };
        if initial == 0 {
            return Ok(ensemble); // the test starts the nodes itself
        }
        let mut attempt = 1;
        loop {
            match ensemble.boot(initial) {
                Ok(_) => return Ok(ensemble),
                Err(BootError {
                    bind_failure: true, ..
                }) if attempt < START_ATTEMPTS => {
                    // Another process took one of the ports between picking and binding: start
                    // over in the same directory with fresh ports (and no data).
                    attempt += 1;
                    ensemble.kill_all();
                    ensemble.nodes = layout(&ensemble.kind, ensemble.root.path(), n, &hosts)?;
                }
                Err(e) => return Err(e.error), // `ensemble` drops here: processes killed, files gone
            }
        }
    }

    /// The index of the node currently reporting itself leader, if exactly one does.
    pub fn leader(&self) -> Option<usize> {
        let leaders: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.kind.probe(&self.nodes[i]) == Probe::Leader)
            .collect();
        match leaders[..] {
            [one] => Some(one),
            _ => None,
        }
    }

    /// Waits (at most `timeout`) until exactly one node leads and every running, unpaused node
    /// serves under it, e.g. after killing the leader; returns the leader's index. Fails with
    /// `TimedOut` (including each node's role and log tail) otherwise.
    pub fn wait_for_leader(&self, timeout: Duration) -> io::Result<usize> {
        self.wait_serving(timeout, &[]).map_err(|e| e.error)
    }

    /// Whether this ensemble has a live process for each node (false after [`Ensemble::kill`] or if
    /// the process exited by itself; true while paused).
    pub fn running(&self) -> Vec<bool> {
        self.lock_slots()
            .iter_mut()
            .map(|slot| match &mut slot.child {
                Some(child) => matches!(child.try_wait(), Ok(None)),
                None => false,
            })
            .collect()
    }

    /// The process id of node `idx`, if it is running.
    pub fn pid(&self, idx: usize) -> Option<u32> {
        let mut slots = self.lock_slots();
        let child = slots.get_mut(idx)?.child.as_mut()?;
        match child.try_wait() {
            Ok(None) => Some(child.id()),
            _ => None,
        }
    }

    /// Stops node `idx` with SIGSTOP: its sockets stay open but it answers nothing until
    /// [`Local::resume`]. Fails if it is not running.
    pub fn pause(&self, idx: usize) -> io::Result<()> {
        self.signal(idx, libc::SIGSTOP, true)
    }

    /// Continues node `idx` after [`Local::pause`] (SIGCONT). Fails if it is not running.
    pub fn resume(&self, idx: usize) -> io::Result<()> {
        self.signal(idx, libc::SIGCONT, false)
    }

    /// Sends node `idx` SIGHUP (a synod node re-reads its certificates). Fails if it is not
    /// running.
    pub fn hangup(&self, idx: usize) -> io::Result<()> {
        self.signal(idx, libc::SIGHUP, false)
    }

    /// SIGKILLs every node and waits for them to exit; the data stays for [`Local::start_all`].
    pub fn stop_all(&self) {
        self.kill_all();
    }

    /// Starts every node that is not running, on the same ports and data, and waits (at most
    /// [`START_TIMEOUT`]) until they all serve under one leader; returns the leader's index.
    pub fn start_all(&self) -> io::Result<usize> {
        let running = self.running();
        for idx in (0..self.nodes.len()).filter(|&i| !running[i]) {
            self.spawn_node(idx)?;
        }
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        self.wait_serving(START_TIMEOUT, &all).map_err(|e| e.error)
    }

    /// The last lines of node `idx`'s log (its output across all its runs), for failure messages.
    /// Never fails: problems reading the log are described in the returned text.
    pub fn log_tail(&self, idx: usize) -> String {
        match self.nodes.get(idx) {
            Some(node) => tail(&self.log_path(node), LOG_TAIL_LINES),
            None => format!("(no node {idx}; the ensemble has {})", self.nodes.len()),
        }
    }

    /// The whole log of node `idx` (all its runs), e.g. to look for a line; empty if unreadable.
    pub fn log(&self, idx: usize) -> String {
        self.nodes
            .get(idx)
            .and_then(|node| fs::read(self.log_path(node)).ok())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The directory holding node `idx`'s configuration, log and `data/`.
    pub fn node_dir(&self, idx: usize) -> Option<&Path> {
        self.nodes.get(idx).map(|n| n.dir.as_path())
    }

    /// Where node `idx` listens and keeps its files.
    pub fn node(&self, idx: usize) -> Option<&Node> {
        self.nodes.get(idx)
    }

    /// Every node, in node order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The directory holding every node's directory (deleted with the ensemble); a place for a
    /// test's own files, e.g. a backup.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The last lines of every node's log, labelled, for failure messages.
    pub fn logs(&self) -> String {
        self.all_log_tails()
    }

    /// Spawns the first `initial` nodes and waits until they serve under one leader.
    fn boot(&self, initial: usize) -> Result<usize, BootError> {
        for idx in 0..initial {
            self.spawn_node(idx).map_err(BootError::other)?;
        }
        let started: Vec<usize> = (0..initial).collect();
        self.wait_serving(START_TIMEOUT, &started)
    }

    /// Waits (at most `timeout`) until the nodes in `must_run` are running and every running,
    /// unpaused node serves under exactly one leader; returns the leader's index. Fails at once if
    /// a node of `must_run` exits (saying whether it could not bind a port).
    fn wait_serving(&self, timeout: Duration, must_run: &[usize]) -> Result<usize, BootError> {
        let mut probes = Vec::new();
        let waited = poll_until(timeout, || {
            let running = self.running();
            if let Some(&idx) = must_run.iter().find(|&&i| !running[i]) {
                let log = self.log(idx);
                return Err(BootError {
                    bind_failure: log.contains("Address already in use")
                        || log.contains("BindException"),
                    error: io::Error::other(format!(
                        "{} node {idx} exited\n{}",
                        K::NAME,
                        self.all_log_tails()
                    )),
                });
            }
            let live = self.live(&running);
            probes = (0..self.nodes.len())
                .map(|i| {
                    if live[i] {
                        self.kind.probe(&self.nodes[i])
                    } else {
                        Probe::Down
                    }
                })
                .collect();
            let leaders: Vec<usize> = (0..probes.len())
                .filter(|&i| probes[i] == Probe::Leader)
                .collect();
            let [leader] = leaders[..] else {
                return Ok(None);
            };
            let all_serving = (0..probes.len())
                .filter(|&i| live[i])
                .all(|i| match probes[i] {
                    Probe::Leader => true,
                    Probe::Follower(named) => named.is_none_or(|l| l == self.nodes[leader].id),
                    _ => false,
                });
            Ok(all_serving.then_some(leader))
        });
        waited.map_err(|e| match e {
            Some(early) => early,
            None => BootError::other(timed_out(format!(
                "{} ensemble: no single leader served by every live node after {timeout:?}; \
                 roles {probes:?} (running {:?})\n{}",
                K::NAME,
                self.running(),
                self.all_log_tails()
            ))),
        })
    }

    /// Which nodes are expected to answer: running and not paused.
    fn live(&self, running: &[bool]) -> Vec<bool> {
        let slots = self.lock_slots();
        running
            .iter()
            .zip(slots.iter())
            .map(|(&r, slot)| r && !slot.paused)
            .collect()
    }

    /// Starts node `idx` (appending to its log), tied to the test process, and records it; reaps
    /// an earlier process of the node that exited by itself.
    fn spawn_node(&self, idx: usize) -> io::Result<()> {
        let cmd = self.kind.command(&self.nodes[idx], &self.nodes);
        self.spawn_command(idx, cmd)
    }

    /// Runs `cmd` as node `idx` (appending to its log), tied to the test process, and records it;
    /// SIGKILLs and reaps an earlier process of the node.
    fn spawn_command(&self, idx: usize, cmd: Command) -> io::Result<()> {
        let node = &self.nodes[idx];
        // A node on a host of its own runs in that host's namespace (`ip netns exec` execs it:
        // same pid, so signals and the tie to the test process reach the node itself).
        let mut cmd = match &node.netns {
            Some(ns) => {
                let mut wrapped = Command::new("ip");
                wrapped
                    .args(["netns", "exec", ns])
                    .arg(cmd.get_program())
                    .args(cmd.get_args());
                for (k, v) in cmd.get_envs() {
                    match v {
                        Some(v) => wrapped.env(k, v),
                        None => wrapped.env_remove(k),
                    };
                }
                wrapped
            }
            None => cmd,
        };
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(node))?;
        cmd.current_dir(&node.dir)
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
        let old = std::mem::replace(
            &mut self.lock_slots()[idx],
            Slot {
                child: Some(child),
                paused: false,
            },
        );
        if let Some(dead) = old.child {
            reap(dead);
        }
        Ok(())
    }

    /// Sends `sig` to node `idx` and records whether it is now paused.
    fn signal(&self, idx: usize, sig: libc::c_int, paused: bool) -> io::Result<()> {
        self.check_idx(idx)?;
        let pid = self.pid(idx).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} node {idx} is not running", K::NAME),
            )
        })?;
        // SAFETY: kill(2) with the pid of our own unreaped child (it cannot be recycled before we
        // wait for it) and a valid signal number.
        if unsafe { libc::kill(pid as libc::pid_t, sig) } != 0 {
            return Err(io::Error::last_os_error());
        }
        self.lock_slots()[idx].paused = paused;
        Ok(())
    }

    /// SIGKILLs and reaps every live process.
    fn kill_all(&self) {
        for slot in self.lock_slots().iter_mut() {
            if let Some(child) = slot.child.take() {
                reap(child);
            }
            slot.paused = false;
        }
    }

    /// The log file of `node`.
    fn log_path(&self, node: &Node) -> PathBuf {
        node.dir.join(K::LOG_FILE)
    }

    /// The last lines of every node's log, labelled, for start-up errors (after which the caller
    /// has no ensemble to ask and the directory is gone).
    fn all_log_tails(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let path = self.log_path(node);
            let _ = writeln!(
                out,
                "--- node {} ({}) ---\n{}",
                node.id - 1,
                path.display(),
                tail(&path, ERROR_LOG_LINES)
            );
        }
        out
    }

    /// The slots, even if a panicking thread poisoned the lock (the data stays consistent).
    fn lock_slots(&self) -> MutexGuard<'_, Vec<Slot>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
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

/// A failed start attempt or wait.
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

impl<K: Kind> Ensemble for Local<K> {
    fn name(&self) -> &str {
        K::NAME
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(Node::client_addr).collect()
    }

    fn tls(&self) -> Option<synod_client::tls::TlsConnector> {
        self.tls.clone()
    }

    fn anonymous_tls(&self) -> Option<synod_client::tls::TlsConnector> {
        self.anonymous_tls.clone()
    }

    fn can_kill(&self) -> bool {
        true
    }

    fn local_sessions(&self) -> bool {
        self.kind.local_sessions()
    }

    fn leader(&self) -> Option<usize> {
        Local::leader(self)
    }

    fn pause(&self, idx: usize) -> io::Result<()> {
        Local::pause(self, idx)
    }

    fn resume(&self, idx: usize) -> io::Result<()> {
        Local::resume(self, idx)
    }

    fn kill(&self, idx: usize) -> io::Result<()> {
        self.check_idx(idx)?;
        let taken = std::mem::take(&mut self.lock_slots()[idx]);
        if let Some(mut child) = taken.child {
            child.kill()?; // SIGKILL on Unix (works on a paused node); Ok if it already exited
            child.wait()?;
            crate::inject::remove_faketime_objects(child.id());
        }
        Ok(())
    }

    fn restart(&self, idx: usize) -> io::Result<()> {
        self.check_idx(idx)?;
        if self.running()[idx] {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} node {idx} is still running; kill it first", K::NAME),
            ));
        }
        self.spawn_node(idx)?;
        self.wait_serving(RESTART_TIMEOUT, &[idx])
            .map(|_| ())
            .map_err(|e| e.error)
    }
}

impl<K: Kind> Drop for Local<K> {
    /// Kills every node (also while unwinding from a failed test) before the directory is removed.
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Picks free ports for `n` nodes and gives each a fresh, empty directory under `root` (replacing
/// the files of an earlier attempt), configured by `kind`.
fn layout<K: Kind>(
    kind: &K,
    root: &Path,
    n: usize,
    hosts: &[(IpAddr, Option<String>)],
) -> io::Result<Vec<Node>> {
    let ports = free_ports(3 * n)?;
    let nodes: Vec<Node> = (0..n)
        .map(|i| {
            let (host, netns) = hosts
                .get(i)
                .cloned()
                .unwrap_or((IpAddr::V4(Ipv4Addr::LOCALHOST), None));
            Node {
                id: i + 1,
                client_port: ports[3 * i],
                peer_port: ports[3 * i + 1],
                aux_port: ports[3 * i + 2],
                dir: root.join(format!("node{}", i + 1)),
                host,
                netns,
            }
        })
        .collect();
    for node in &nodes {
        if node.dir.exists() {
            fs::remove_dir_all(&node.dir)?;
        }
        fs::create_dir_all(&node.dir)?;
    }
    kind.configure(&nodes)?;
    Ok(nodes)
}

/// Calls `step` every [`POLL_INTERVAL`] until it returns `Ok(Some(_))` (done) or `Err(_)` (give
/// up at once), or until `timeout` has passed (`Err(None)`).
fn poll_until<T, E>(
    timeout: Duration,
    mut step: impl FnMut() -> Result<Option<T>, E>,
) -> Result<T, Option<E>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(done) = step().map_err(Some)? {
            return Ok(done);
        }
        if Instant::now() >= deadline {
            return Err(None);
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// What [`free_ports`] remembers between calls in this process.
struct PortPicker {
    /// Ports handed out already. The kernel may offer a port again as soon as its probe
    /// listener is released, so without this record a test that takes one port for itself and
    /// then starts an ensemble could be given the same port twice (a node then refuses to
    /// start: "--client-addr and --secure-client-addr are both ...").
    handed_out: BTreeSet<u16>,
    /// State of the generator that draws candidate ports (splitmix64); 0 until first seeded.
    state: u64,
}

static PORT_PICKER: Mutex<PortPicker> = Mutex::new(PortPicker {
    handed_out: BTreeSet::new(),
    state: 0,
});

/// How many probe binds [`free_ports`] tries beyond `count` before it gives up.
const PORT_PROBES: usize = 4096;

/// The lowest port [`free_ports`] draws from; it draws below the kernel's ephemeral range.
const LOWEST_PORT: u16 = 16384;

impl PortPicker {
    /// The next candidate port, drawn from `range` (see [`free_ports`]).
    fn draw(&mut self, range: std::ops::Range<u16>) -> u16 {
        if self.state == 0 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            self.state = nanos ^ (u64::from(std::process::id()) << 32) | 1;
        }
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let span = u64::from(range.end - range.start);
        range.start + (z % span) as u16
    }
}

/// The ports below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`), from
/// [`LOWEST_PORT`]; `None` if that range starts too low to leave room.
fn below_ephemeral_range() -> Option<std::ops::Range<u16>> {
    let range = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let low: u16 = range.split_whitespace().next()?.parse().ok()?;
    (low >= LOWEST_PORT + 1024).then_some(LOWEST_PORT..low)
}

/// `count` distinct free loopback ports, none handed out before by this process: all are bound
/// at once (so none repeats within the call), then released for the caller to bind.
///
/// They are drawn at random below the kernel's ephemeral range where it leaves room, so no
/// outgoing connection can take one as its source port between this call and the caller's bind
/// (the kernel's own `bind(0)` choice lies inside that range); otherwise the kernel picks them.
pub fn free_ports(count: usize) -> io::Result<Vec<u16>> {
    let mut picker = PORT_PICKER.lock().unwrap_or_else(PoisonError::into_inner);
    let range = below_ephemeral_range();
    // Held until the end, so no port is offered twice in this call.
    let mut probes = Vec::new();
    let mut ports = Vec::with_capacity(count);
    for _ in 0..count + PORT_PROBES {
        if ports.len() == count {
            break;
        }
        let candidate = match &range {
            Some(range) => picker.draw(range.clone()),
            None => 0,
        };
        if candidate != 0 && picker.handed_out.contains(&candidate) {
            continue;
        }
        let probe = match TcpListener::bind((Ipv4Addr::LOCALHOST, candidate)) {
            Ok(probe) => probe,
            // Taken by someone else: draw again.
            Err(e) if candidate != 0 && e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(e),
        };
        let port = probe.local_addr()?.port();
        if !picker.handed_out.contains(&port) {
            ports.push(port);
        }
        probes.push(probe);
    }
    if ports.len() < count {
        return Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            format!("no {count} loopback ports free that this process has not used"),
        ));
    }
    picker.handed_out.extend(ports.iter().copied());
    Ok(ports)
}

/// `127.0.0.1:port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

/// Sends `srvr` to `addr` and returns the value of its `Mode:` line, if any.
fn srvr_mode(addr: SocketAddr) -> Option<String> {
    let reply = exchange(addr, b"srvr").ok()?;
    reply
        .lines()
        .find_map(|l| l.strip_prefix("Mode:"))
        .map(|m| m.trim().to_string())
}

/// A synod node's `GET /status`, parsed.
fn synod_status(http: &AdminHttp, admin: SocketAddr) -> Option<serde_json::Value> {
    serde_json::from_str(&http.get(admin, "/status", PROBE_TIMEOUT).ok()?).ok()
}

/// The cluster version a leader is about to raise its cluster to, if it is due: every member
/// has spoken the leader's protocol, but the version has not risen yet (a fresh cluster's first
/// moments), or it has risen and `/zookeeper/config` is still to be written. A cluster is not
/// formed until then: tenants, the audit trail and `reconfig` wait for it. `None` also for a
/// leader of a release without cluster versions, or with a member down or older.
fn cluster_version_due(
    http: &AdminHttp,
    admin: SocketAddr,
    status: &serde_json::Value,
) -> Option<u64> {
    let current = status.get("cluster_version")?.as_u64()?;
    let supported = status.pointer("/formats/cluster_version")?.as_u64()?;
    if current >= supported {
        // Raised; the leader then writes /zookeeper/config (formed once it has).
        let pending =
            status.get("zookeeper_config_pending") == Some(&serde_json::Value::Bool(true));
        return pending.then_some(current);
    }
    let members: serde_json::Value =
        serde_json::from_str(&http.get(admin, "/members", PROBE_TIMEOUT).ok()?).ok()?;
    let all_speak = members.get("members")?.as_array()?.iter().all(|m| {
        m.get("protocol")
            .and_then(serde_json::Value::as_u64)
            .is_some_and(|p| p >= supported)
    });
    all_speak.then_some(supported)
}

/// `GET path` over plaintext HTTP (an `--insecure` node): the body of a `200` answer; any other
/// status is an error.
pub fn http_get(addr: SocketAddr, path: &str) -> io::Result<String> {
    AdminHttp::plain().get(addr, path, PROBE_TIMEOUT)
}

/// `POST path` of a JSON `body` over plaintext HTTP, waiting at most `timeout`: (status, body).
pub fn http_post(
    addr: SocketAddr,
    path: &str,
    body: &str,
    timeout: Duration,
) -> io::Result<(u16, String)> {
    let (status, body) = AdminHttp::plain().request(addr, "POST", path, Some(body), timeout)?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// `method path` over plaintext HTTP with an optional JSON body, waiting at most 150 s for the
/// answer (a snapshot or a membership change can take long): (status, body), or `None` if the
/// node does not answer.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Option<(u16, Vec<u8>)> {
    let body = body.map(serde_json::Value::to_string);
    AdminHttp::plain()
        .request(addr, method, path, body.as_deref(), ADMIN_TIMEOUT)
        .ok()
}

/// Sends `request` on a fresh connection to `addr` and reads the reply until the server closes
/// the connection, each step bounded by [`PROBE_TIMEOUT`].
fn exchange(addr: SocketAddr, request: &[u8]) -> io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
    stream.write_all(request)?;
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

/// SIGKILLs `child` (a no-op if it already exited), waits for it, and removes what libfaketime
/// left behind for it (a killed process cannot remove it itself).
fn reap(mut child: Child) {
    let _ = child.kill();
    if child.wait().is_ok() {
        crate::inject::remove_faketime_objects(child.id());
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
            .name("ensemble-spawner".into())
            .spawn(move || {
                // The sender lives in a static, so this loop ends only with the process.
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("cannot start the ensemble spawner thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("ensemble spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("ensemble spawner thread is gone"))?
}

/// An `InvalidInput` error with `msg`.
fn invalid_input(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// A `TimedOut` error with `msg`.
fn timed_out(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_never_repeat_in_a_process_and_avoid_the_ephemeral_range() {
        let first = free_ports(200).expect("ports");
        let second = free_ports(200).expect("ports");
        let all: BTreeSet<u16> = first.iter().chain(&second).copied().collect();
        assert_eq!(all.len(), 400, "a port was handed out twice");
        for port in &all {
            // Each is free: the caller can bind it.
            TcpListener::bind((Ipv4Addr::LOCALHOST, *port)).expect("a handed-out port binds");
        }
        if let Some(range) = below_ephemeral_range() {
            assert!(
                all.iter().all(|p| range.contains(p)),
                "{all:?} not in {range:?}"
            );
        }
    }
}
