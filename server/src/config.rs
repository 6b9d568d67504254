//! Node configuration: command-line flags, optionally layered over a TOML file, validated with
//! clear messages before anything starts.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::{Deserialize, Serialize};

use crate::admin::fourletter::Allowed;
use crate::error::ServerError;
use crate::tls::{ClientAuth, TlsFiles};

/// The largest `--max-frame-bytes` accepted: a quarter of the peer port's frame limit
/// ([`crate::peer::DEFAULT_MAX_FRAME_LEN`]), so that a write a follower forwards (the client's
/// request, its identities, a group's framing) always fits in one peer frame.
pub const MAX_CLIENT_FRAME_BYTES: usize = crate::peer::DEFAULT_MAX_FRAME_LEN / 4;

/// How the node writes its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// How reads are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ReadConsistency {
    /// Every read reflects every write acknowledged before it was sent (read index via the leader).
    Linearizable,
    /// ZooKeeper-style: local reads, ordered after the session's own writes, never going back in time.
    Session,
}

/// Whether the replicated audit trail is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AuditMode {
    /// Every change is recorded (the default).
    On,
    /// No record is made: only for measuring what auditing costs. Every member must agree, or
    /// their digests differ.
    Off,
}

/// Which reads the audit trail records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AuditReads {
    /// Reads of a tenant's nodes by callers outside that tenant, allowed or refused.
    CrossTenant,
    /// None.
    Off,
}

/// The `synod` command line. Every flag may also be set as an environment variable (`SYNOD_`
/// and its name in capitals, `-` as `_`: `SYNOD_DATA_DIR`) or in the TOML file given with
/// `--config` (same names, with `_` for `-`); a flag wins over its variable, which wins over the
/// file.
#[derive(Debug, Parser)]
#[command(
    name = "synod",
    version,
    about = "A Raft-replicated coordination service speaking the ZooKeeper protocol"
)]
pub struct Args {
    /// TOML file with any of the settings below.
    #[arg(long, env = "SYNOD_CONFIG")]
    pub config: Option<PathBuf>,
    /// This node's id (a key of --members).
    #[arg(long, env = "SYNOD_ID")]
    pub id: Option<u64>,
    /// Cluster members and their peer addresses: `1=127.0.0.1:7001,2=127.0.0.1:7002,...`.
    #[arg(long, env = "SYNOD_MEMBERS")]
    pub members: Option<String>,
    /// Plaintext client (ZooKeeper protocol) listen address. With --secure-client-addr it is
    /// optional (then only given so that clients can migrate to TLS).
    #[arg(long, env = "SYNOD_CLIENT_ADDR")]
    pub client_addr: Option<SocketAddr>,
    /// TLS client listen address (ZooKeeper's secureClientPort): the same protocol inside TLS
    /// 1.3; needs --tls-ca, --tls-cert and --tls-key.
    #[arg(long, env = "SYNOD_SECURE_CLIENT_ADDR")]
    pub secure_client_addr: Option<SocketAddr>,
    /// CA bundle (PEM) that client certificates are verified against.
    #[arg(long, env = "SYNOD_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This node's certificate chain (PEM; `synod certs create-node`).
    #[arg(long, env = "SYNOD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long, env = "SYNOD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Whether clients of the secure client port must present a certificate: `required`
    /// (default) or `optional`.
    #[arg(long, env = "SYNOD_CLIENT_AUTH", value_enum)]
    pub client_auth: Option<ClientAuth>,
    /// CA bundle (PEM) that peers' certificates are verified against (default: --tls-ca), for
    /// sites that issue peer certificates from a cluster-internal CA.
    #[arg(long, env = "SYNOD_PEER_TLS_CA")]
    pub peer_tls_ca: Option<PathBuf>,
    /// This node's peer certificate (PEM; default: --tls-cert). It must name this node's id.
    #[arg(long, env = "SYNOD_PEER_TLS_CERT")]
    pub peer_tls_cert: Option<PathBuf>,
    /// The peer certificate's private key (PEM; default: --tls-key).
    #[arg(long, env = "SYNOD_PEER_TLS_KEY")]
    pub peer_tls_key: Option<PathBuf>,
    /// The operators: subject CNs of client certificates that may use the admin endpoints that
    /// reveal data or change state (comma-separated; default `admin`).
    #[arg(long, env = "SYNOD_ADMIN_IDENTITIES", value_delimiter = ',')]
    pub admin_identities: Option<Vec<String>>,
    /// Super users by certificate: subject CNs whose connections on the client port also get
    /// the identity `super` (every ACL check passes; every use is logged). Comma-separated;
    /// default none.
    #[arg(long, env = "SYNOD_SUPER_IDENTITIES", value_delimiter = ',')]
    pub super_identities: Option<Vec<String>>,
    /// ZooKeeper's superDigest: `super:<base64 sha1>` (as `DigestAuthenticationProvider`
    /// computes it); a client that authenticates with `addauth digest super:<password>` gets the
    /// identity `super`. Default none.
    #[arg(long, env = "SYNOD_SUPER_DIGEST")]
    pub super_digest: Option<String>,
    /// The four-letter words the client port answers, comma-separated, or `*` for all (as
    /// ZooKeeper's `4lw.commands.whitelist`). Default `srvr,ruok,mntr,isro`. Never `srst` or
    /// `crst`: an operator resets counters on the admin port.
    #[arg(long, env = "SYNOD_FOUR_LETTER_WORDS")]
    pub four_letter_words: Option<String>,
    /// Serve every port in plaintext, with no authentication of peers or operators. For local
    /// experiments only: synod refuses to start without TLS material otherwise.
    /// (`SYNOD_INSECURE` may be `1`/`0`, `true`/`false`, `yes`/`no`, `on`/`off`.)
    #[arg(
        long,
        env = "SYNOD_INSECURE",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub insecure: bool,
    /// Peer (Raft) listen address; defaults to this node's address in --members.
    #[arg(long, env = "SYNOD_PEER_ADDR")]
    pub peer_addr: Option<SocketAddr>,
    /// Dial some peers at another address than the one they are known by (`2=10.0.0.9:7002,...`):
    /// for NAT and tunnels, and for the fault-injection suite's proxies.
    #[arg(long, env = "SYNOD_PEER_ROUTE")]
    pub peer_route: Option<String>,
    /// Admin HTTP listen address.
    #[arg(long, env = "SYNOD_ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,
    /// Data directory (Raft log and snapshots).
    #[arg(long, env = "SYNOD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The session tick in milliseconds: session timeouts are clamped to [2, 20] ticks unless the
    /// bounds below are set, and followers report session activity to the leader every tick.
    #[arg(long, env = "SYNOD_TICK_MS")]
    pub tick_ms: Option<u64>,
    /// Smallest session timeout granted (default 2 ticks).
    #[arg(long, env = "SYNOD_MIN_SESSION_TIMEOUT_MS")]
    pub min_session_timeout_ms: Option<u64>,
    /// Largest session timeout granted (default 20 ticks).
    #[arg(long, env = "SYNOD_MAX_SESSION_TIMEOUT_MS")]
    pub max_session_timeout_ms: Option<u64>,
    /// Raft heartbeat interval in milliseconds (also the replication RPC timeout).
    #[arg(long, env = "SYNOD_HEARTBEAT_MS")]
    pub heartbeat_ms: Option<u64>,
    /// Raft election timeout (minimum; the maximum is twice this) in milliseconds.
    #[arg(long, env = "SYNOD_ELECTION_TIMEOUT_MS")]
    pub election_timeout_ms: Option<u64>,
    /// Take a snapshot after this many entries since the last one.
    #[arg(long, env = "SYNOD_SNAPSHOT_ENTRIES")]
    pub snapshot_entries: Option<u64>,
    /// How reads are served.
    #[arg(long, env = "SYNOD_READ_CONSISTENCY", value_enum)]
    pub read_consistency: Option<ReadConsistency>,
    /// Largest client frame accepted, in bytes (ZooKeeper's jute.maxbuffer plus header room).
    #[arg(long, env = "SYNOD_MAX_FRAME_BYTES")]
    pub max_frame_bytes: Option<usize>,
    /// Requests a connection may have outstanding before the server stops reading from it.
    #[arg(long, env = "SYNOD_MAX_OUTSTANDING")]
    pub max_outstanding: Option<usize>,
    /// Connections allowed from one client IP address (0 = unlimited), like maxClientCnxns.
    #[arg(long, env = "SYNOD_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Connections allowed in total.
    #[arg(long, env = "SYNOD_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Replies and events queued for one connection before it is dropped as too slow.
    #[arg(long, env = "SYNOD_MAX_QUEUED_PER_CONNECTION")]
    pub max_queued_per_connection: Option<usize>,
    /// Bytes of replies, and separately of watch events, queued for one connection: replies
    /// wait for room (the connection stops being read), an event with no room drops it.
    #[arg(long, env = "SYNOD_MAX_QUEUED_BYTES_PER_CONNECTION")]
    pub max_queued_bytes_per_connection: Option<usize>,
    /// Log format: `text` or `json`.
    #[arg(long, env = "SYNOD_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Join an existing cluster instead of bootstrapping one: the node never initializes a
    /// cluster and waits until a leader adds it (`synodctl cluster add-learner`). --members then
    /// needs only this node's own entry.
    #[arg(long, env = "SYNOD_JOIN")]
    pub join: bool,
    /// Let clients change the membership with ZooKeeper's `reconfig` (as ZooKeeper's
    /// `reconfigEnabled=true`); it still needs the super identity. Off by default: then
    /// `reconfig` answers ReconfigDisabled and membership changes go through the admin port.
    /// Every member should agree.
    #[arg(long, env = "SYNOD_RECONFIG_ENABLED")]
    pub reconfig_enabled: bool,
    /// Read-only mode (ZooKeeper's `readonlymode.enabled`): cut off from the quorum (no leader,
    /// no quorum's acknowledgement or no majority heard, for 2 s), serve possibly stale reads to clients that ask for read-only sessions
    /// (`canBeReadOnly`), answering their writes NotReadOnly; other clients are refused as
    /// always. Off by default.
    #[arg(long, env = "SYNOD_READ_ONLY_MODE")]
    pub read_only_mode: bool,
    /// Keep the replicated audit trail (`on`, the default) or not (`off`: for measuring its
    /// cost only; every member must agree).
    #[arg(long, env = "SYNOD_AUDIT", value_enum)]
    pub audit: Option<AuditMode>,
    /// Days an audit record is kept (0: forever).
    #[arg(long, env = "SYNOD_AUDIT_RETENTION_DAYS")]
    pub audit_retention_days: Option<u64>,
    /// Audit reads of a tenant's nodes by callers outside it (`cross-tenant`, the default;
    /// batched, best-effort) or not (`off`).
    #[arg(long, env = "SYNOD_AUDIT_READS", value_enum)]
    pub audit_reads: Option<AuditReads>,
    /// Free space (MiB) the data directory's file system must keep: below it, writes that
    /// grow the tree are refused (deletes, session closes and reads are still served) until
    /// space returns. 0 disables the check.
    #[arg(long, env = "SYNOD_MIN_FREE_SPACE_MB")]
    pub min_free_space_mb: Option<u64>,
    /// Where clients reach this node (`host:port`), as `/members` and `conf` show it. Default:
    /// the client listen address (the secure one if both), with this node's host from
    /// --members in place of an unspecified address (0.0.0.0 or ::).
    #[arg(long, env = "SYNOD_ADVERTISE_CLIENT_ADDR")]
    pub advertise_client_addr: Option<String>,
    /// Where operators reach this node's admin port (`host:port`), as `/members` and `conf`
    /// show it. Default: as for --advertise-client-addr, from --admin-addr.
    #[arg(long, env = "SYNOD_ADVERTISE_ADMIN_ADDR")]
    pub advertise_admin_addr: Option<String>,
    /// Print the effective configuration (flags, environment and file merged, defaults filled
    /// in, secrets redacted) as a TOML file and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// The TOML file: the same settings as the flags (also what `--print-config` prints).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    id: Option<u64>,
    members: Option<BTreeMap<String, String>>,
    client_addr: Option<SocketAddr>,
    secure_client_addr: Option<SocketAddr>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    client_auth: Option<ClientAuth>,
    peer_tls_ca: Option<PathBuf>,
    peer_tls_cert: Option<PathBuf>,
    peer_tls_key: Option<PathBuf>,
    insecure: Option<bool>,
    admin_identities: Option<Vec<String>>,
    super_identities: Option<Vec<String>>,
    four_letter_words: Option<String>,
    super_digest: Option<String>,
    peer_addr: Option<SocketAddr>,
    peer_route: Option<BTreeMap<String, String>>,
    admin_addr: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    tick_ms: Option<u64>,
    min_session_timeout_ms: Option<u64>,
    max_session_timeout_ms: Option<u64>,
    heartbeat_ms: Option<u64>,
    election_timeout_ms: Option<u64>,
    snapshot_entries: Option<u64>,
    read_consistency: Option<ReadConsistency>,
    max_frame_bytes: Option<usize>,
    max_outstanding: Option<usize>,
    max_connections_per_ip: Option<usize>,
    max_connections: Option<usize>,
    max_queued_per_connection: Option<usize>,
    max_queued_bytes_per_connection: Option<usize>,
    log_format: Option<LogFormat>,
    join: Option<bool>,
    reconfig_enabled: Option<bool>,
    read_only_mode: Option<bool>,
    audit: Option<AuditMode>,
    audit_retention_days: Option<u64>,
    audit_reads: Option<AuditReads>,
    min_free_space_mb: Option<u64>,
    advertise_client_addr: Option<String>,
    advertise_admin_addr: Option<String>,
}

/// A validated node configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub id: u64,
    /// Every voter of the initial cluster: id → peer address.
    pub members: BTreeMap<u64, String>,
    /// The plaintext client port, if any (at least one of it and `secure_client_addr` is set).
    pub client_addr: Option<SocketAddr>,
    /// The TLS client port, if any; `tls` is then set.
    pub secure_client_addr: Option<SocketAddr>,
    /// This node's TLS material for the client and admin ports; `None` exactly when `insecure`.
    pub tls: Option<TlsFiles>,
    /// The peer port's TLS material (defaults to `tls`); `None` exactly when `insecure`.
    pub peer_tls: Option<TlsFiles>,
    /// Started with `--insecure`: every port plaintext, nobody authenticated by certificate.
    pub insecure: bool,
    /// Whether the secure client port requires client certificates.
    pub client_auth: ClientAuth,
    /// Subject CNs of the operators allowed the protected admin endpoints.
    pub admin_identities: BTreeSet<String>,
    /// Subject CNs whose client connections also get the identity `super`.
    pub super_identities: BTreeSet<String>,
    /// The digest id (`super:<base64 sha1>`) whose `addauth digest` gives the identity `super`.
    pub super_digest: Option<String>,
    /// The four-letter words the client port answers.
    pub four_letter_words: Allowed,
    pub peer_addr: SocketAddr,
    /// Peers dialed at another address than their membership address: id → address.
    pub peer_routes: BTreeMap<u64, String>,
    pub admin_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub tick: Duration,
    pub min_session_timeout: Duration,
    pub max_session_timeout: Duration,
    pub heartbeat: Duration,
    pub election_timeout: Duration,
    pub snapshot_entries: u64,
    pub read_consistency: ReadConsistency,
    pub max_frame_bytes: usize,
    pub max_outstanding: usize,
    pub max_connections_per_ip: usize,
    pub max_connections: usize,
    pub max_queued_per_connection: usize,
    pub max_queued_bytes_per_connection: usize,
    pub log_format: LogFormat,
    /// Started with --join: never bootstraps a cluster; waits to be added by a leader.
    pub join: bool,
    /// Whether clients may `reconfig` ([`crate::reconfig`]).
    pub reconfig_enabled: bool,
    /// Whether a node cut off from the quorum serves read-only clients ([`crate::read_only`]).
    pub read_only_mode: bool,
    /// Whether the audit trail is kept (`<data-dir>/audit`).
    pub audit: AuditMode,
    /// How long an audit record is kept (`None`: forever).
    pub audit_retention: Option<Duration>,
    /// Whether reads across tenants are audited.
    pub audit_reads: bool,
    /// Free bytes the data directory's file system keeps in reserve (0: no check); see
    /// [`crate::disk`].
    pub min_free_space: u64,
    /// Where clients reach this node (`host:port`), for `/members` and `conf`.
    pub advertise_client_addr: String,
    /// Where operators reach this node's admin port (`host:port`), for `/members` and `conf`.
    pub advertise_admin_addr: String,
}

/// Where others reach a listener at `listen`: itself, unless it listens on every interface;
/// then this node's host as its entry in the members names it (a name or an address), at the
/// listener's port.
fn advertised(listen: SocketAddr, own_entry: Option<&String>) -> String {
    let host = own_entry
        .and_then(|e| e.rsplit_once(':'))
        .map(|(host, _)| host);
    match host {
        Some(host) if listen.ip().is_unspecified() => format!("{host}:{}", listen.port()),
        _ => listen.to_string(),
    }
}

/// A CA, certificate and key given together (all three or none) under flags named `prefix`.
fn tls_files(
    prefix: &str,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Result<Option<TlsFiles>, ServerError> {
    match (ca, cert, key) {
        (Some(ca), Some(cert), Some(key)) => Ok(Some(TlsFiles { ca, cert, key })),
        (None, None, None) => Ok(None),
        _ => Err(ServerError::Config(format!(
            "{prefix}-ca, {prefix}-cert and {prefix}-key go together: give all three"
        ))),
    }
}

/// A list of certificate names (`--admin-identities`, `--super-identities`), trimmed, empty
/// entries dropped.
fn names(list: Vec<String>) -> BTreeSet<String> {
    list.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// A TOML table of `id = "address"` with numeric keys.
fn id_map(m: &BTreeMap<String, String>) -> Result<BTreeMap<u64, String>, ServerError> {
    let mut out = BTreeMap::new();
    for (k, v) in m {
        let id: u64 = k
            .parse()
            .map_err(|_| ServerError::Config(format!("member id {k:?} is not a number")))?;
        out.insert(id, v.clone());
    }
    Ok(out)
}

pub(crate) fn parse_members(s: &str) -> Result<BTreeMap<u64, String>, ServerError> {
    let mut m = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| ServerError::Config(format!("member {part:?} is not id=host:port")))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| ServerError::Config(format!("member id {id:?} is not a number")))?;
        m.insert(id, addr.trim().to_string());
    }
    Ok(m)
}

impl Config {
    /// Merges flags over the file (if any) and validates the result.
    pub fn load(args: Args) -> Result<Config, ServerError> {
        let file: FileConfig = match &args.config {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    ServerError::Config(format!("cannot read {}: {e}", p.display()))
                })?;
                toml::from_str(&text)
                    .map_err(|e| ServerError::Config(format!("{}: {e}", p.display())))?
            }
            None => FileConfig::default(),
        };
        let bad = |m: String| ServerError::Config(m);
        let id = args
            .id
            .or(file.id)
            .ok_or_else(|| bad("--id is required".into()))?;
        let members = match (&args.members, &file.members) {
            (Some(s), _) => parse_members(s)?,
            (None, Some(m)) => id_map(m)?,
            (None, None) => {
                return Err(bad("--members is required (e.g. 1=127.0.0.1:7001)".into()))
            }
        };
        let peer_routes = match (&args.peer_route, &file.peer_route) {
            (Some(s), _) => parse_members(s)?,
            (None, Some(m)) => id_map(m)?,
            (None, None) => BTreeMap::new(),
        };
        let own = members
            .get(&id)
            .ok_or_else(|| bad(format!("--id {id} is not among --members")))?;
        let peer_addr = match args.peer_addr.or(file.peer_addr) {
            Some(a) => a,
            // A host name (`zk1.lab.example:7001`): listen on every interface at its port. Peers
            // dial members by name, resolving it at every connection attempt.
            None => match own.parse::<SocketAddr>() {
                Ok(a) => a,
                Err(_) => own
                    .rsplit_once(':')
                    .and_then(|(_, port)| port.parse::<u16>().ok())
                    .map(|port| SocketAddr::from(([0, 0, 0, 0], port)))
                    .ok_or_else(|| {
                        bad(format!("member {id}'s address {own:?} is not host:port"))
                    })?,
            },
        };
        let client_addr = args.client_addr.or(file.client_addr);
        let secure_client_addr = args.secure_client_addr.or(file.secure_client_addr);
        if client_addr.is_none() && secure_client_addr.is_none() {
            return Err(bad(
                "--client-addr or --secure-client-addr (or both) is required".into(),
            ));
        }
        let insecure = args.insecure || file.insecure.unwrap_or(false);
        let tls = tls_files(
            "--tls",
            args.tls_ca.or(file.tls_ca),
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
        )?;
        let peer_tls = tls_files(
            "--peer-tls",
            args.peer_tls_ca.or(file.peer_tls_ca),
            args.peer_tls_cert.or(file.peer_tls_cert),
            args.peer_tls_key.or(file.peer_tls_key),
        )?;
        if insecure {
            if tls.is_some() || peer_tls.is_some() || secure_client_addr.is_some() {
                return Err(bad(
                    "--insecure serves every port in plaintext: drop it, or drop \
                     --tls-*, --peer-tls-* and --secure-client-addr"
                        .into(),
                ));
            }
        } else {
            if tls.is_none() {
                return Err(bad(
                    "synod is secure by default: give --tls-ca, --tls-cert and \
                     --tls-key (`synod certs` makes them), or --insecure to serve every port \
                     in plaintext"
                        .into(),
                ));
            }
            if secure_client_addr.is_none() {
                return Err(bad(
                    "--secure-client-addr is required (a plaintext --client-addr \
                     may be kept beside it while clients migrate), unless --insecure"
                        .into(),
                ));
            }
        }
        let peer_tls = peer_tls.or_else(|| tls.clone());
        let admin_addr = args
            .admin_addr
            .or(file.admin_addr)
            .ok_or_else(|| bad("--admin-addr is required".into()))?;
        let data_dir = args
            .data_dir
            .or(file.data_dir)
            .ok_or_else(|| bad("--data-dir is required".into()))?;
        let tick_ms = args.tick_ms.or(file.tick_ms).unwrap_or(500);
        let min_st = args
            .min_session_timeout_ms
            .or(file.min_session_timeout_ms)
            .unwrap_or(2 * tick_ms);
        let max_st = args
            .max_session_timeout_ms
            .or(file.max_session_timeout_ms)
            .unwrap_or(20 * tick_ms);
        let heartbeat_ms = args.heartbeat_ms.or(file.heartbeat_ms).unwrap_or(100);
        let election_ms = args
            .election_timeout_ms
            .or(file.election_timeout_ms)
            .unwrap_or(600);
        let log_format = args.log_format.or(file.log_format).unwrap_or_default();
        let cfg = Config {
            id,
            client_addr,
            secure_client_addr,
            tls,
            peer_tls,
            insecure,
            admin_identities: names(
                args.admin_identities
                    .or(file.admin_identities)
                    .unwrap_or_else(|| vec!["admin".to_string()]),
            ),
            super_identities: names(
                args.super_identities
                    .or(file.super_identities)
                    .unwrap_or_default(),
            ),
            super_digest: args.super_digest.or(file.super_digest),
            four_letter_words: Allowed::parse(
                args.four_letter_words
                    .as_deref()
                    .or(file.four_letter_words.as_deref())
                    .unwrap_or(Allowed::DEFAULT),
            )
            .map_err(|e| bad(format!("--four-letter-words: {e}")))?,
            client_auth: args.client_auth.or(file.client_auth).unwrap_or_default(),
            peer_addr,
            admin_addr,
            data_dir,
            tick: Duration::from_millis(tick_ms),
            min_session_timeout: Duration::from_millis(min_st),
            max_session_timeout: Duration::from_millis(max_st),
            heartbeat: Duration::from_millis(heartbeat_ms),
            election_timeout: Duration::from_millis(election_ms),
            snapshot_entries: args
                .snapshot_entries
                .or(file.snapshot_entries)
                .unwrap_or(10_000),
            read_consistency: args
                .read_consistency
                .or(file.read_consistency)
                .unwrap_or(ReadConsistency::Linearizable),
            max_frame_bytes: args
                .max_frame_bytes
                .or(file.max_frame_bytes)
                .unwrap_or(synod_proto::DEFAULT_MAX_FRAME),
            max_outstanding: args
                .max_outstanding
                .or(file.max_outstanding)
                .unwrap_or(1000),
            max_connections_per_ip: args
                .max_connections_per_ip
                .or(file.max_connections_per_ip)
                .unwrap_or(60),
            max_connections: args
                .max_connections
                .or(file.max_connections)
                .unwrap_or(10_000),
            max_queued_per_connection: args
                .max_queued_per_connection
                .or(file.max_queued_per_connection)
                .unwrap_or(10_000),
            max_queued_bytes_per_connection: args
                .max_queued_bytes_per_connection
                .or(file.max_queued_bytes_per_connection)
                .unwrap_or(8 << 20),
            log_format,
            join: args.join || file.join.unwrap_or(false),
            reconfig_enabled: args.reconfig_enabled || file.reconfig_enabled.unwrap_or(false),
            read_only_mode: args.read_only_mode || file.read_only_mode.unwrap_or(false),
            audit: args.audit.or(file.audit).unwrap_or(AuditMode::On),
            audit_reads: args
                .audit_reads
                .or(file.audit_reads)
                .unwrap_or(AuditReads::CrossTenant)
                == AuditReads::CrossTenant,
            audit_retention: match args
                .audit_retention_days
                .or(file.audit_retention_days)
                .unwrap_or(365)
            {
                0 => None,
                days => Some(Duration::from_secs(days.saturating_mul(86_400))),
            },
            min_free_space: args
                .min_free_space_mb
                .or(file.min_free_space_mb)
                .unwrap_or(crate::disk::DEFAULT_MIN_FREE_MB)
                .saturating_mul(1 << 20),
            advertise_client_addr: match args.advertise_client_addr.or(file.advertise_client_addr) {
                Some(a) => a,
                None => advertised(
                    secure_client_addr.or(client_addr).unwrap_or(admin_addr),
                    members.get(&id),
                ),
            },
            advertise_admin_addr: match args.advertise_admin_addr.or(file.advertise_admin_addr) {
                Some(a) => a,
                None => advertised(admin_addr, members.get(&id)),
            },
            members,
            peer_routes,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The effective configuration as a TOML file `--config` reads (every setting, defaults
    /// filled in), with the secret redacted: the super digest prints as `(set)`.
    pub fn to_toml(&self) -> Result<String, ServerError> {
        let ids = |m: &BTreeMap<u64, String>| -> BTreeMap<String, String> {
            m.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
        };
        let ms = |d: Duration| d.as_millis() as u64;
        let file = FileConfig {
            id: Some(self.id),
            members: Some(ids(&self.members)),
            client_addr: self.client_addr,
            secure_client_addr: self.secure_client_addr,
            tls_ca: self.tls.as_ref().map(|t| t.ca.clone()),
            tls_cert: self.tls.as_ref().map(|t| t.cert.clone()),
            tls_key: self.tls.as_ref().map(|t| t.key.clone()),
            client_auth: Some(self.client_auth),
            peer_tls_ca: self.peer_tls.as_ref().map(|t| t.ca.clone()),
            peer_tls_cert: self.peer_tls.as_ref().map(|t| t.cert.clone()),
            peer_tls_key: self.peer_tls.as_ref().map(|t| t.key.clone()),
            insecure: Some(self.insecure),
            admin_identities: Some(self.admin_identities.iter().cloned().collect()),
            super_identities: Some(self.super_identities.iter().cloned().collect()),
            four_letter_words: Some(self.four_letter_words.list()),
            super_digest: self.super_digest.as_ref().map(|_| "(set)".to_string()),
            peer_addr: Some(self.peer_addr),
            peer_route: (!self.peer_routes.is_empty()).then(|| ids(&self.peer_routes)),
            admin_addr: Some(self.admin_addr),
            data_dir: Some(self.data_dir.clone()),
            tick_ms: Some(ms(self.tick)),
            min_session_timeout_ms: Some(ms(self.min_session_timeout)),
            max_session_timeout_ms: Some(ms(self.max_session_timeout)),
            heartbeat_ms: Some(ms(self.heartbeat)),
            election_timeout_ms: Some(ms(self.election_timeout)),
            snapshot_entries: Some(self.snapshot_entries),
            read_consistency: Some(self.read_consistency),
            max_frame_bytes: Some(self.max_frame_bytes),
            max_outstanding: Some(self.max_outstanding),
            max_connections_per_ip: Some(self.max_connections_per_ip),
            max_connections: Some(self.max_connections),
            max_queued_per_connection: Some(self.max_queued_per_connection),
            max_queued_bytes_per_connection: Some(self.max_queued_bytes_per_connection),
            log_format: Some(self.log_format),
            join: Some(self.join),
            reconfig_enabled: Some(self.reconfig_enabled),
            read_only_mode: Some(self.read_only_mode),
            audit: Some(self.audit),
            audit_retention_days: Some(
                self.audit_retention
                    .map(|d| d.as_secs() / 86_400)
                    .unwrap_or(0),
            ),
            audit_reads: Some(if self.audit_reads {
                AuditReads::CrossTenant
            } else {
                AuditReads::Off
            }),
            min_free_space_mb: Some(self.min_free_space >> 20),
            advertise_client_addr: Some(self.advertise_client_addr.clone()),
            advertise_admin_addr: Some(self.advertise_admin_addr.clone()),
        };
        toml::to_string(&file).map_err(|e| ServerError::Config(format!("print config: {e}")))
    }

    fn validate(&self) -> Result<(), ServerError> {
        let bad = |m: String| Err(ServerError::Config(m));
        if self.tick.is_zero() {
            return bad("--tick-ms must be > 0".into());
        }
        if let Some(d) = &self.super_digest {
            use base64::Engine;
            let hash = d
                .strip_prefix("super:")
                .map(|h| base64::engine::general_purpose::STANDARD.decode(h));
            if !matches!(hash, Some(Ok(ref h)) if h.len() == 20) {
                return bad(
                    "--super-digest must be super:<base64 of the SHA-1 of \"super:password\">, \
                     as ZooKeeper's superDigest"
                        .into(),
                );
            }
        }
        if self.heartbeat.is_zero() {
            return bad("--heartbeat-ms must be > 0".into());
        }
        if self.snapshot_entries == 0 {
            return bad("--snapshot-entries must be > 0".into());
        }
        let mut seen: BTreeMap<&str, u64> = BTreeMap::new();
        for (id, addr) in &self.members {
            let port = addr
                .rsplit_once(':')
                .map(|(host, port)| (host, port.parse::<u16>()));
            match port {
                Some((host, Ok(p))) if !host.is_empty() && p != 0 => {}
                _ => {
                    return bad(format!(
                        "member {id}'s address {addr:?} is not host:port (port 1-65535)"
                    ))
                }
            }
            if let Some(other) = seen.insert(addr.as_str(), *id) {
                return bad(format!("members {other} and {id} share the address {addr}"));
            }
        }
        let listeners = [
            ("--client-addr", self.client_addr),
            ("--secure-client-addr", self.secure_client_addr),
            ("--peer-addr", Some(self.peer_addr)),
            ("--admin-addr", Some(self.admin_addr)),
        ];
        let listeners: Vec<(&str, SocketAddr)> = listeners
            .into_iter()
            .filter_map(|(flag, addr)| Some((flag, addr?)))
            .collect();
        for (i, (a, x)) in listeners.iter().enumerate() {
            for (b, y) in &listeners[i + 1..] {
                if x == y {
                    return bad(format!("{a} and {b} are both {x}: each needs its own port"));
                }
            }
        }
        if self.data_dir.exists() && !self.data_dir.is_dir() {
            return bad(format!(
                "--data-dir {} exists and is not a directory",
                self.data_dir.display()
            ));
        }
        if self.min_session_timeout > self.max_session_timeout {
            return bad(format!(
                "--min-session-timeout-ms {:?} exceeds --max-session-timeout-ms {:?}",
                self.min_session_timeout, self.max_session_timeout
            ));
        }
        if self.election_timeout <= self.heartbeat * 2 {
            return bad(format!(
                "--election-timeout-ms ({:?}) must exceed twice --heartbeat-ms ({:?})",
                self.election_timeout, self.heartbeat
            ));
        }
        if self.max_frame_bytes < 1024 {
            return bad("--max-frame-bytes must be at least 1024".into());
        }
        // A forwarded write (the client's request and its identities) must fit in one peer
        // frame: one that does not could not be forwarded, and it would stop the follower's
        // ordered stream of forwards for every other client too.
        if self.max_frame_bytes > MAX_CLIENT_FRAME_BYTES {
            return bad(format!(
                "--max-frame-bytes must be at most {MAX_CLIENT_FRAME_BYTES} (a quarter of the \
                 peer port's frame limit, so that a forwarded write always fits in one frame)"
            ));
        }
        if self.max_outstanding == 0
            || self.max_queued_per_connection == 0
            || self.max_queued_bytes_per_connection == 0
            || self.max_connections == 0
        {
            return bad("--max-outstanding, --max-queued-per-connection, \
                 --max-queued-bytes-per-connection and --max-connections must be > 0"
                .into());
        }
        if self.max_queued_per_connection <= self.max_outstanding {
            return bad(
                "--max-queued-per-connection must exceed --max-outstanding (replies need room)"
                    .into(),
            );
        }
        Ok(())
    }

    /// Clamps a requested session timeout into the configured bounds.
    pub fn negotiate_timeout(&self, requested_ms: i32) -> Duration {
        Duration::from_millis(requested_ms.max(0) as u64)
            .clamp(self.min_session_timeout, self.max_session_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file that exists wherever the tests run: this test binary.
    fn a_file() -> PathBuf {
        std::env::current_exe().expect("the test binary's path")
    }

    /// A data directory that cannot exist, whatever else is on the machine: a path under a
    /// file. (A fixed path such as `/tmp/x` failed every test here once something else left a
    /// file there.)
    fn absent_dir() -> String {
        a_file().join("data").to_string_lossy().into_owned()
    }

    fn args(extra: &[&str]) -> Args {
        let data_dir = absent_dir();
        let mut v = vec![
            "synod",
            "--id",
            "2",
            "--members",
            "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003",
            "--client-addr",
            "127.0.0.1:2182",
            "--admin-addr",
            "127.0.0.1:8082",
            "--data-dir",
            &data_dir,
        ];
        v.extend_from_slice(extra);
        Args::parse_from(v)
    }

    /// The TLS flags of a secure node (the files are not read while the config loads).
    const TLS: &[&str] = &[
        "--secure-client-addr",
        "127.0.0.1:2282",
        "--tls-ca",
        "ca.crt",
        "--tls-cert",
        "n.crt",
        "--tls-key",
        "n.key",
    ];

    /// A plaintext node's flags.
    fn insecure(extra: &[&str]) -> Args {
        let mut a = args(extra);
        a.insecure = true;
        a
    }

    /// `--print-config` prints a file that loads back to the same configuration (with every
    /// default spelled out), and never the super digest.
    /// Members by host name: this node listens on every interface at its entry's port (no
    /// --peer-addr needed); the others are dialled by name.
    #[test]
    fn a_member_named_by_host_listens_on_every_interface_at_its_port() {
        let mut a = insecure(&[]);
        a.members =
            Some("1=zk1.lab.example:7001,2=zk2.lab.example:7002,3=zk3.lab.example:7003".into());
        let cfg = Config::load(a).expect("host names are members");
        assert_eq!(cfg.peer_addr, "0.0.0.0:7002".parse().expect("addr"));
        assert_eq!(cfg.members[&1], "zk1.lab.example:7001");
        let mut a = insecure(&[]);
        a.members = Some("1=zk1:7001,2=zk2,3=zk3:7003".into());
        assert!(Config::load(a).is_err(), "an entry without a port");
    }

    #[test]
    fn the_printed_config_loads_back_to_itself_without_its_secret() {
        let mut flags = TLS.to_vec();
        flags.extend([
            "--super-digest",
            "super:D/InIHSb7yEEbrWz8b9l71RjZJU=",
            "--peer-route",
            "3=127.0.0.1:9003",
            "--tick-ms",
            "250",
            "--audit-reads",
            "off",
            "--min-free-space-mb",
            "64",
        ]);
        let cfg = Config::load(args(&flags)).expect("valid");
        let printed = cfg.to_toml().expect("toml");
        assert!(!printed.contains("D/InIHSb7y"), "{printed}");
        assert!(printed.contains("super_digest = \"(set)\""), "{printed}");
        // Without the redacted secret, the printed file alone is the same configuration.
        let dir = tempfile::TempDir::new().expect("tempdir");
        let file = dir.path().join("synod.toml");
        let without_secret: String = printed
            .lines()
            .filter(|l| !l.starts_with("super_digest"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&file, without_secret).expect("write");
        let back = Config::load(Args::parse_from([
            "synod",
            "--config",
            file.to_str().expect("utf-8 path"),
        ]))
        .expect("the printed file loads");
        let mut expected = cfg.clone();
        expected.super_digest = None;
        assert_eq!(back.to_toml().ok(), expected.to_toml().ok());
        assert_eq!(back.tick, Duration::from_millis(250));
        assert_eq!(back.min_free_space, 64 << 20);
        assert!(!back.audit_reads);
    }

    #[test]
    fn secure_by_default() {
        // No TLS material and no --insecure: refused, saying how to fix it.
        let e = Config::load(args(&[])).unwrap_err().to_string();
        assert!(e.contains("secure by default"), "{e}");
        // TLS material but no secure client port.
        let e = Config::load(args(&TLS[2..])).unwrap_err().to_string();
        assert!(e.contains("--secure-client-addr is required"), "{e}");
        // --insecure with any TLS setting is ambiguous.
        for extra in [&TLS[..2], &TLS[2..]] {
            let e = Config::load(insecure(extra)).unwrap_err().to_string();
            assert!(
                e.contains("--insecure serves every port in plaintext"),
                "{e}"
            );
        }
        // The peer port's material defaults to the shared one, or is its own.
        let c = Config::load(args(TLS)).unwrap();
        assert!(!c.insecure);
        assert_eq!(c.peer_tls, c.tls);
        let mut own = TLS.to_vec();
        own.extend_from_slice(&[
            "--peer-tls-ca",
            "peer-ca.crt",
            "--peer-tls-cert",
            "p.crt",
            "--peer-tls-key",
            "p.key",
        ]);
        let c = Config::load(args(&own)).unwrap();
        assert_eq!(
            c.peer_tls.map(|f| f.ca),
            Some(std::path::PathBuf::from("peer-ca.crt"))
        );
        let e = Config::load(args(&[TLS, &["--peer-tls-ca", "x"]].concat()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--peer-tls-ca, --peer-tls-cert and --peer-tls-key go together"),
            "{e}"
        );
        let c = Config::load(insecure(&[])).unwrap();
        assert!(c.insecure && c.tls.is_none() && c.peer_tls.is_none());
        assert_eq!(c.admin_identities, BTreeSet::from(["admin".to_string()]));
        let c = Config::load(insecure(&[
            "--admin-identities",
            "ops-1, ops-2",
            "--super-identities",
            "breakglass",
            "--super-digest",
            "super:DyNYQEQvajljsxlhf5uS4PJ9R28=",
        ]))
        .unwrap();
        assert_eq!(
            c.admin_identities,
            BTreeSet::from(["ops-1".to_string(), "ops-2".to_string()])
        );
        assert!(c.super_identities.contains("breakglass"));
        assert!(c
            .four_letter_words
            .allows(crate::admin::fourletter::Word::Srvr));
        assert!(!c
            .four_letter_words
            .allows(crate::admin::fourletter::Word::Dump));
        let c = Config::load(insecure(&["--four-letter-words", "*"])).unwrap();
        assert!(c
            .four_letter_words
            .allows(crate::admin::fourletter::Word::Dump));
        let e = Config::load(insecure(&["--four-letter-words", "ruok,nope"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown four-letter word \"nope\""), "{e}");
        let e = Config::load(insecure(&["--super-digest", "super:nope"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--super-digest must be"), "{e}");
    }

    #[test]
    fn flags_load_with_defaults() {
        let c = Config::load(insecure(&[])).unwrap();
        assert_eq!(c.peer_addr, "127.0.0.1:7002".parse().unwrap());
        assert_eq!(c.members.len(), 3);
        assert_eq!(c.min_session_timeout, Duration::from_millis(1000));
        assert_eq!(c.negotiate_timeout(100_000), Duration::from_millis(10_000));
        assert_eq!(c.read_consistency, ReadConsistency::Linearizable);
        assert!(c.peer_routes.is_empty());
    }

    #[test]
    fn peer_routes_override_dial_addresses() {
        let c = Config::load(insecure(&[
            "--peer-route",
            "1=127.0.0.1:9001,3=127.0.0.1:9003",
        ]))
        .unwrap();
        assert_eq!(
            c.peer_routes.get(&1).map(String::as_str),
            Some("127.0.0.1:9001")
        );
        assert_eq!(
            c.peer_routes.get(&3).map(String::as_str),
            Some("127.0.0.1:9003")
        );
        assert!(Config::load(insecure(&["--peer-route", "x=1"])).is_err());
    }

    #[test]
    fn bad_configs_are_explained() {
        let mut a = insecure(&[]);
        a.id = Some(9);
        let e = Config::load(a).unwrap_err().to_string();
        assert!(e.contains("not among --members"), "{e}");
        let e = Config::load(insecure(&["--heartbeat-ms", "400"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("election-timeout"), "{e}");
        // A log format is a value enum: a bad one is refused while the flags are parsed.
        let e = <Args as clap::Parser>::try_parse_from(["synod", "--log-format", "xml"])
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(e.contains("xml"), "{e}");
    }

    #[test]
    fn more_bad_configs_are_explained() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--peer-addr", "127.0.0.1:2182"],
                "--client-addr and --peer-addr",
            ),
            (
                &["--peer-addr", "127.0.0.1:8082"],
                "--peer-addr and --admin-addr",
            ),
            (
                &["--snapshot-entries", "0"],
                "--snapshot-entries must be > 0",
            ),
            (&["--heartbeat-ms", "0"], "--heartbeat-ms must be > 0"),
            (&["--tick-ms", "0"], "--tick-ms must be > 0"),
            (&["--max-frame-bytes", "10"], "--max-frame-bytes"),
            (&["--max-frame-bytes", "16777217"], "--max-frame-bytes"),
            (
                &[
                    "--max-outstanding",
                    "100",
                    "--max-queued-per-connection",
                    "50",
                ],
                "must exceed --max-outstanding",
            ),
            (
                &[
                    "--min-session-timeout-ms",
                    "9000",
                    "--max-session-timeout-ms",
                    "100",
                ],
                "exceeds --max-session-timeout-ms",
            ),
            (
                &["--tls-ca", "ca.crt", "--tls-cert", "n.crt"],
                "go together: give all three",
            ),
        ];
        for (extra, want) in cases {
            let e = Config::load(insecure(extra)).unwrap_err().to_string();
            assert!(e.contains(want), "{extra:?}: {e}");
        }
        let mut clash = TLS.to_vec();
        clash[1] = "127.0.0.1:8082";
        let e = Config::load(args(&clash)).unwrap_err().to_string();
        assert!(e.contains("--secure-client-addr and --admin-addr"), "{e}");
        let mut a = insecure(&[]);
        a.data_dir = Some(a_file());
        let e = Config::load(a).unwrap_err().to_string();
        assert!(e.contains("is not a directory"), "{e}");
        let member_cases: &[(&str, &str)] = &[
            ("1=127.0.0.1:7001,2=127.0.0.1:7001", "share the address"),
            ("2=127.0.0.1", "is not host:port"),
            ("2=:7002", "is not host:port"),
            ("2=h:0", "is not host:port"),
            ("x=h:1", "is not a number"),
            ("2", "is not id=host:port"),
        ];
        for (members, want) in member_cases {
            let mut a = insecure(&["--peer-addr", "127.0.0.1:7002"]);
            a.members = Some(members.to_string());
            let e = Config::load(a).unwrap_err().to_string();
            assert!(e.contains(want), "{members}: {e}");
        }
        // With a secure client port, the plaintext one is optional; without either, refused.
        let mut a = args(TLS);
        a.client_addr = None;
        let c = Config::load(a).unwrap();
        assert_eq!(c.client_addr, None);
        assert_eq!(c.client_auth, ClientAuth::Required);
        let mut a = insecure(&[]);
        a.client_addr = None;
        let e = Config::load(a).unwrap_err().to_string();
        assert!(e.contains("--client-addr or --secure-client-addr"), "{e}");
        // A joining node needs only its own entry.
        let mut a = insecure(&["--join"]);
        a.members = Some("2=127.0.0.1:7002".into());
        let c = Config::load(a).unwrap();
        assert!(c.join);
        assert_eq!(c.members.len(), 1);
    }

    #[test]
    fn toml_file_is_layered_under_flags() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("synod.toml");
        std::fs::write(
            &p,
            format!(
                "id = 1\nclient_addr = \"127.0.0.1:2181\"\nadmin_addr = \"127.0.0.1:8081\"\n\
                 data_dir = {:?}\ntick_ms = 200\nread_consistency = \"session\"\n\
                 insecure = true\n[members]\n1 = \"127.0.0.1:7001\"\n",
                dir.path().join("data")
            ),
        )
        .unwrap();
        let a = Args::parse_from(["synod", "--config", p.to_str().unwrap(), "--tick-ms", "300"]);
        let c = Config::load(a).unwrap();
        assert_eq!(
            (c.id, c.tick, c.read_consistency),
            (1, Duration::from_millis(300), ReadConsistency::Session)
        );
        std::fs::write(&p, "bogus = 1\n").unwrap();
        let a = Args::parse_from(["synod", "--config", p.to_str().unwrap()]);
        assert!(Config::load(a).unwrap_err().to_string().contains("bogus"));
    }
}
