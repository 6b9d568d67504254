//! `synodctl`: a command-line client for synod and for any ZooKeeper 3.5+ ensemble.
//!
//! One invocation opens one session, runs one command and closes the session again. Output is
//! plain text shaped like ZooKeeper's `zkCli`, or one JSON object per result with `--json`.
//!
//! Exit codes: 0 on success, 1 when the server answered with a ZooKeeper error (`NoNode`,
//! `BadVersion`, `NodeExists`, ...), 2 for usage errors (bad arguments, invalid paths) and
//! connection problems (no server reachable, connection lost, session expired, timeouts),
//! 130 when interrupted with Ctrl-C.

mod admin;

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use serde_json::{json, Value};
use synod_client::{
    AddWatchMode, Client, ConnectOptions, CreateMode, Error, EventType, KeeperState, Stat,
};

/// Exit code for an error the ZooKeeper server answered with.
const EXIT_ZK: u8 = 1;
/// Exit code for usage errors and connection problems.
const EXIT_USAGE: u8 = 2;
/// Exit code after Ctrl-C / SIGTERM (128 + SIGINT, as shells report it).
const EXIT_INTERRUPTED: u8 = 130;
/// How many requests `rmr` keeps in flight at once.
const RMR_CONCURRENCY: usize = 128;

/// Extra `--help` text: exit codes, session and ephemeral semantics, logging.
const AFTER_HELP: &str = "\
Exit status: 0 on success; 1 when the server answered with a ZooKeeper error (the code is printed as
`Error: <Name>: <path>`, e.g. `Error: NoNode: /a`; with --json also as {\"error\":...,\"path\":...} on
stdout); 2 for usage and connection errors; 130 when interrupted.

Each invocation is one ZooKeeper session, closed when synodctl exits: ephemeral znodes created with
`create -e` are deleted by the server as soon as the command returns. That is ordinary ZooKeeper
behaviour; use a long-lived client if an ephemeral must outlive the command.

Set RUST_LOG (e.g. RUST_LOG=synod_client=debug) to see the client's connection log on stderr.";

/// Command-line client for synod and any ZooKeeper 3.5+ server.
#[derive(Debug, Parser)]
#[command(name = "synodctl", version, after_help = AFTER_HELP)]
struct Cli {
    /// Connect string: comma-separated host:port list with an optional /chroot suffix that every
    /// path is relative to, e.g. `10.0.0.1:2181,10.0.0.2:2181/app`.
    #[arg(
        long,
        env = "SYNOD_SERVERS",
        default_value = "127.0.0.1:2181",
        global = true
    )]
    servers: String,

    /// Print results (and errors) as JSON objects on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,

    /// How long to wait, in milliseconds, for a session to be established and for the reply to
    /// each request.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    timeout_ms: u64,

    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The commands (see each one's `--help`).
#[derive(Debug, Subcommand)]
enum Command {
    /// List the children of a znode, sorted, one per line.
    Ls {
        /// The znode whose children to list.
        path: String,
        /// Also print the znode's Stat after the children.
        #[arg(short = 's', long = "stat")]
        stat: bool,
    },
    /// Print a znode's data to stdout, byte for byte (no newline is added).
    ///
    /// With --json: {"path","data","encoding","stat"}; `data` is the data as a string when it is
    /// valid UTF-8 (`"encoding":"utf-8"`), else its base64 encoding (`"encoding":"base64"`).
    Get {
        /// The znode to read.
        path: String,
    },
    /// Print a znode's Stat (zxids, times, versions, owner, sizes).
    Stat {
        /// The znode to describe.
        path: String,
    },
    /// Create a znode and print its path (with the sequence suffix for -s).
    ///
    /// The data is DATA when given; otherwise, when stdin is not a terminal, everything read from
    /// stdin (so `synodctl create /cfg < file` stores the file as is, trailing newline included);
    /// otherwise empty. An ephemeral znode (-e) belongs to synodctl's own session and is
    /// deleted when synodctl exits, right after this command.
    Create {
        /// Ephemeral: deleted when the session that created it ends (i.e. when synodctl exits).
        #[arg(short = 'e', long)]
        ephemeral: bool,
        /// Sequential: the server appends a 10-digit, monotonically increasing counter to PATH.
        #[arg(short = 's', long)]
        sequential: bool,
        /// Container: deleted by the server once its last child is deleted. Not combinable with
        /// -e or -s.
        #[arg(short = 'c', long, conflicts_with_all = ["ephemeral", "sequential"])]
        container: bool,
        /// The znode to create; its parent must exist.
        path: String,
        /// The znode's data (see above for stdin).
        data: Option<String>,
    },
    /// Replace a znode's data.
    ///
    /// The data is DATA when given; otherwise, when stdin is not a terminal, everything read from
    /// stdin; otherwise empty.
    Set {
        /// Only if the znode's data version is VERSION (fails with BadVersion otherwise); -1 or
        /// absent matches any version.
        #[arg(short = 'v', long, allow_negative_numbers = true)]
        version: Option<i32>,
        /// Print the znode's new Stat.
        #[arg(short = 's', long = "stat")]
        stat: bool,
        /// The znode to update.
        path: String,
        /// The new data (see above for stdin).
        data: Option<String>,
    },
    /// Delete a znode that has no children.
    Delete {
        /// Only if the znode's data version is VERSION (fails with BadVersion otherwise); -1 or
        /// absent matches any version.
        #[arg(short = 'v', long, allow_negative_numbers = true)]
        version: Option<i32>,
        /// The znode to delete.
        path: String,
    },
    /// Delete a znode and everything below it, deepest first.
    ///
    /// Not atomic: another client may see part of the subtree gone. Refuses to delete `/`.
    Rmr {
        /// The root of the subtree to delete.
        path: String,
    },
    /// Watch a znode and print one line per event (`NodeDataChanged /path`) until Ctrl-C.
    ///
    /// Adds a persistent watch (addWatch), which reports NodeCreated, NodeDeleted,
    /// NodeDataChanged and NodeChildrenChanged on PATH itself; with -r a persistent recursive
    /// watch, which reports NodeCreated, NodeDeleted and NodeDataChanged on PATH and every
    /// znode below it. PATH need not exist. "watching PATH" is printed to stderr once the watch
    /// is in place. With --json each event is {"type","path"}.
    Watch {
        /// The znode to watch.
        path: String,
        /// Watch the whole subtree (persistent recursive watch).
        #[arg(short = 'r', long)]
        recursive: bool,
        /// Exit after this many events.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Cluster membership through the admin HTTP port: list, add-learner, promote, remove.
    ///
    /// Changes go to the leader: synodctl tries each --admin address until the leader answers.
    Cluster {
        /// Admin HTTP addresses (host:port), comma-separated; include the leader's.
        #[arg(
            long,
            env = "SYNOD_ADMIN",
            default_value = "127.0.0.1:8081",
            value_delimiter = ',',
            global = true
        )]
        admin: Vec<String>,
        /// What to do.
        #[command(subcommand)]
        action: admin::ClusterCmd,
    },
    /// Take a snapshot now on a node (admin port) and print its metadata.
    Snapshot {
        /// Admin HTTP addresses (host:port), comma-separated; the first reachable one is used.
        #[arg(
            long,
            env = "SYNOD_ADMIN",
            default_value = "127.0.0.1:8081",
            value_delimiter = ','
        )]
        admin: Vec<String>,
    },
    /// Download a fresh, consistent snapshot of the tree (a backup) from a node's admin port;
    /// restore it into a new cluster with `synod restore`.
    Backup {
        /// Admin HTTP addresses (host:port), comma-separated; the first reachable one is used.
        #[arg(
            long,
            env = "SYNOD_ADMIN",
            default_value = "127.0.0.1:8081",
            value_delimiter = ','
        )]
        admin: Vec<String>,
        /// Where to write the backup.
        #[arg(short = 'o', long)]
        out: std::path::PathBuf,
    },
}

/// Why a command failed: printed as `Error: <name>[: <path>][ (<detail>)]`.
#[derive(Debug)]
struct Failure {
    /// The ZooKeeper code name (`NoNode`) or a local error name.
    name: String,
    /// The path the failing request was about.
    path: Option<String>,
    /// Extra explanation for errors whose name alone says too little.
    detail: Option<String>,
    /// The process exit code.
    exit: u8,
}

impl Failure {
    /// A client error on a request for `path`.
    fn zk(err: Error, path: &str) -> Self {
        let exit = match &err {
            Error::ConnectionLoss
            | Error::SessionExpired
            | Error::SessionMoved
            | Error::OperationTimeout
            | Error::RequestTimeout
            | Error::AuthFailed
            | Error::Closed
            | Error::ConnectTimeout(_)
            | Error::InvalidConnectString(_)
            | Error::Protocol(_)
            | Error::InvalidPath(_) => EXIT_USAGE,
            _ => EXIT_ZK,
        };
        let detail = match &err {
            Error::InvalidPath(_)
            | Error::ConnectTimeout(_)
            | Error::InvalidConnectString(_)
            | Error::Protocol(_)
            | Error::Unknown(_)
            | Error::Multi { .. }
            | Error::Closed => Some(err.to_string()),
            _ => None,
        };
        Failure {
            name: err.name(),
            path: Some(path.to_string()),
            detail,
            exit,
        }
    }

    /// An error found before anything was sent.
    fn usage(path: Option<&str>, msg: impl Into<String>) -> Self {
        Failure {
            name: "BadArguments".into(),
            path: path.map(str::to_string),
            detail: Some(msg.into()),
            exit: EXIT_USAGE,
        }
    }

    /// No reply within `--timeout-ms`.
    fn timeout(path: &str, timeout: Duration) -> Self {
        Failure {
            name: "OperationTimeout".into(),
            path: Some(path.to_string()),
            detail: Some(format!("no reply within {} ms", timeout.as_millis())),
            exit: EXIT_USAGE,
        }
    }

    /// Ctrl-C or SIGTERM before the command finished.
    fn interrupted() -> Self {
        Failure {
            name: "Interrupted".into(),
            path: None,
            detail: None,
            exit: EXIT_INTERRUPTED,
        }
    }

    /// Prints the error on stderr, and as JSON on stdout with `--json`.
    fn report(&self, json: bool) {
        let mut line = format!("Error: {}", self.name);
        if let Some(p) = &self.path {
            line.push_str(": ");
            line.push_str(p);
        }
        if let Some(d) = &self.detail {
            line.push_str(&format!(" ({d})"));
        }
        eprintln!("{line}");
        if json {
            let mut obj = json!({ "error": self.name, "path": self.path });
            if let Some(d) = &self.detail {
                obj["message"] = json!(d);
            }
            // Nothing more can be done if stdout is gone; the exit code still tells.
            let _ = print_json(&obj);
        }
    }
}

/// The result of a command step.
type CmdResult<T = ()> = Result<T, Failure>;

/// A znode's Stat as `--json` prints it (field names as zkCli prints them).
#[derive(Debug, Serialize)]
struct StatJson {
    /// Zxid of the change that created the znode.
    #[serde(rename = "cZxid")]
    czxid: i64,
    /// Creation time, ms since the epoch.
    ctime: i64,
    /// Zxid of the last change to the data.
    #[serde(rename = "mZxid")]
    mzxid: i64,
    /// Time of the last data change, ms since the epoch.
    mtime: i64,
    /// Zxid of the last change to the children.
    #[serde(rename = "pZxid")]
    pzxid: i64,
    /// Number of changes to the children.
    cversion: i32,
    /// Number of changes to the data.
    #[serde(rename = "dataVersion")]
    data_version: i32,
    /// Number of changes to the ACL.
    #[serde(rename = "aclVersion")]
    acl_version: i32,
    /// Session id owning the znode if it is ephemeral, else 0.
    #[serde(rename = "ephemeralOwner")]
    ephemeral_owner: i64,
    /// Length of the data in bytes.
    #[serde(rename = "dataLength")]
    data_length: i32,
    /// Number of children.
    #[serde(rename = "numChildren")]
    num_children: i32,
}

impl From<&Stat> for StatJson {
    fn from(s: &Stat) -> Self {
        StatJson {
            czxid: s.czxid,
            ctime: s.ctime,
            mzxid: s.mzxid,
            mtime: s.mtime,
            pzxid: s.pzxid,
            cversion: s.cversion,
            data_version: s.version,
            acl_version: s.aversion,
            ephemeral_owner: s.ephemeral_owner,
            data_length: s.data_length,
            num_children: s.num_children,
        }
    }
}

/// The Stat as a JSON object (see [`StatJson`]).
fn stat_json(s: &Stat) -> Value {
    serde_json::to_value(StatJson::from(s)).unwrap_or(Value::Null)
}

/// The Stat as zkCli's `stat` prints it (times in UTC).
fn stat_text(s: &Stat) -> String {
    format!(
        "cZxid = {:#x}\nctime = {}\nmZxid = {:#x}\nmtime = {}\npZxid = {:#x}\ncversion = {}\ndataVersion = {}\n\
         aclVersion = {}\nephemeralOwner = {:#x}\ndataLength = {}\nnumChildren = {}\n",
        s.czxid,
        java_date(s.ctime),
        s.mzxid,
        java_date(s.mtime),
        s.pzxid,
        s.cversion,
        s.version,
        s.aversion,
        s.ephemeral_owner,
        s.data_length,
        s.num_children
    )
}

/// Milliseconds since the epoch formatted like Java's `Date.toString()`, in UTC:
/// `Thu Jan 01 00:00:00 UTC 1970`.
fn java_date(ms: i64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = (days + 4).rem_euclid(7); // 1970-01-01 was a Thursday
    format!(
        "{} {} {:02} {:02}:{:02}:{:02} UTC {}",
        DAYS[weekday as usize],
        MONTHS[(month - 1) as usize],
        day,
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        year
    )
}

/// Standard base64 (RFC 4648, with padding).
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Writes `bytes` to stdout and flushes; a closed stdout (e.g. `| head`) is not an error.
fn write_stdout(bytes: &[u8]) -> CmdResult {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure {
            name: "IoError".into(),
            path: None,
            detail: Some(format!("writing to stdout: {e}")),
            exit: EXIT_USAGE,
        }),
    }
}

/// Prints one JSON value and a newline on stdout.
fn print_json(v: &Value) -> CmdResult {
    write_stdout(format!("{v}\n").as_bytes())
}

/// The data for `create` / `set`: the argument, else stdin when it is not a terminal, else empty.
fn read_data(arg: Option<String>) -> CmdResult<Vec<u8>> {
    if let Some(s) = arg {
        return Ok(s.into_bytes());
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Ok(Vec::new());
    }
    let mut buf = Vec::new();
    stdin.lock().read_to_end(&mut buf).map_err(|e| Failure {
        name: "IoError".into(),
        path: None,
        detail: Some(format!("reading data from stdin: {e}")),
        exit: EXIT_USAGE,
    })?;
    Ok(buf)
}

/// A command with its arguments checked and its data read, ready to run against a session.
#[derive(Debug)]
enum Job {
    /// `ls`.
    Ls {
        /// The znode whose children to list.
        path: String,
        /// Also print the Stat.
        stat: bool,
    },
    /// `get`.
    Get {
        /// The znode to read.
        path: String,
    },
    /// `stat`.
    Stat {
        /// The znode to describe.
        path: String,
    },
    /// `create`.
    Create {
        /// The znode to create.
        path: String,
        /// Its data.
        data: Vec<u8>,
        /// Persistent, ephemeral, sequential or container.
        mode: CreateMode,
    },
    /// `set`.
    Set {
        /// The znode to update.
        path: String,
        /// The new data.
        data: Vec<u8>,
        /// The expected data version; `None` for any.
        version: Option<i32>,
        /// Print the new Stat.
        stat: bool,
    },
    /// `delete`.
    Delete {
        /// The znode to delete.
        path: String,
        /// The expected data version; `None` for any.
        version: Option<i32>,
    },
    /// `rmr`.
    Rmr {
        /// The root of the subtree to delete.
        path: String,
    },
    /// `watch`.
    Watch {
        /// The znode to watch.
        path: String,
        /// Watch the subtree too.
        recursive: bool,
        /// Exit after this many events.
        count: Option<u64>,
    },
}

impl Job {
    /// Checks the arguments and reads stdin, before any connection is made.
    fn prepare(cmd: Command) -> CmdResult<Job> {
        Ok(match cmd {
            Command::Ls { path, stat } => Job::Ls { path, stat },
            Command::Get { path } => Job::Get { path },
            Command::Stat { path } => Job::Stat { path },
            Command::Create {
                ephemeral,
                sequential,
                container,
                path,
                data,
            } => {
                let mode = match (ephemeral, sequential, container) {
                    (false, false, false) => CreateMode::Persistent,
                    (true, false, false) => CreateMode::Ephemeral,
                    (false, true, false) => CreateMode::PersistentSequential,
                    (true, true, false) => CreateMode::EphemeralSequential,
                    (false, false, true) => CreateMode::Container,
                    _ => {
                        return Err(Failure::usage(
                            Some(&path),
                            "-c cannot be combined with -e or -s",
                        ))
                    }
                };
                Job::Create {
                    data: read_data(data)?,
                    path,
                    mode,
                }
            }
            Command::Set {
                version,
                stat,
                path,
                data,
            } => Job::Set {
                data: read_data(data)?,
                path,
                version,
                stat,
            },
            Command::Delete { version, path } => Job::Delete { path, version },
            Command::Rmr { path } => {
                if path == "/" {
                    return Err(Failure::usage(
                        Some("/"),
                        "refusing to delete the root znode",
                    ));
                }
                Job::Rmr { path }
            }
            Command::Watch {
                path,
                recursive,
                count,
            } => Job::Watch {
                path,
                recursive,
                count,
            },
            Command::Cluster { .. } | Command::Snapshot { .. } | Command::Backup { .. } => {
                return Err(Failure::usage(
                    None,
                    "admin commands run without a ZooKeeper session",
                ))
            }
        })
    }

    /// The path the command is about.
    fn path(&self) -> &str {
        match self {
            Job::Ls { path, .. }
            | Job::Get { path }
            | Job::Stat { path }
            | Job::Create { path, .. }
            | Job::Set { path, .. }
            | Job::Delete { path, .. }
            | Job::Rmr { path }
            | Job::Watch { path, .. } => path,
        }
    }

    /// Whether Ctrl-C is the normal way to end the command.
    fn is_watch(&self) -> bool {
        matches!(self, Job::Watch { .. })
    }
}

/// A connected session plus the output settings.
struct Ctx {
    /// The session.
    zk: Client,
    /// Print JSON instead of text.
    json: bool,
    /// The per-request timeout (`--timeout-ms`).
    timeout: Duration,
}

impl Ctx {
    /// Awaits one request with the per-request timeout, mapping its error to a [`Failure`].
    async fn req<T>(
        &self,
        path: &str,
        fut: impl std::future::Future<Output = Result<T, Error>>,
    ) -> CmdResult<T> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Failure::zk(e, path)),
            Err(_) => Err(Failure::timeout(path, self.timeout)),
        }
    }

    /// Runs one command.
    async fn run(&self, job: Job) -> CmdResult {
        match job {
            Job::Ls { path, stat } => self.ls(&path, stat).await,
            Job::Get { path } => self.get(&path).await,
            Job::Stat { path } => self.stat(&path).await,
            Job::Create { path, data, mode } => self.create(&path, &data, mode).await,
            Job::Set {
                path,
                data,
                version,
                stat,
            } => self.set(&path, &data, version, stat).await,
            Job::Delete { path, version } => self.delete(&path, version).await,
            Job::Rmr { path } => self.rmr(&path).await,
            Job::Watch {
                path,
                recursive,
                count,
            } => self.watch(&path, recursive, count).await,
        }
    }

    /// `ls [-s] PATH`: sorted children, optionally followed by the Stat.
    async fn ls(&self, path: &str, with_stat: bool) -> CmdResult {
        let (mut children, stat) = if with_stat {
            let (c, s) = self.req(path, self.zk.get_children2(path)).await?;
            (c, Some(s))
        } else {
            (self.req(path, self.zk.get_children(path)).await?, None)
        };
        children.sort();
        if self.json {
            let mut obj = json!({ "path": path, "children": children });
            if let Some(s) = &stat {
                obj["stat"] = stat_json(s);
            }
            return print_json(&obj);
        }
        let mut out = String::new();
        for c in &children {
            out.push_str(c);
            out.push('\n');
        }
        if let Some(s) = &stat {
            out.push_str(&stat_text(s));
        }
        write_stdout(out.as_bytes())
    }

    /// `get PATH`: the raw data, or a JSON object with the data as UTF-8 or base64.
    async fn get(&self, path: &str) -> CmdResult {
        let (data, stat) = self.req(path, self.zk.get_data(path)).await?;
        if !self.json {
            return write_stdout(&data);
        }
        let (data, encoding) = match std::str::from_utf8(&data) {
            Ok(s) => (s.to_string(), "utf-8"),
            Err(_) => (base64(&data), "base64"),
        };
        print_json(
            &json!({ "path": path, "data": data, "encoding": encoding, "stat": stat_json(&stat) }),
        )
    }

    /// `stat PATH`: the Stat, zkCli style.
    async fn stat(&self, path: &str) -> CmdResult {
        let stat = self
            .req(path, self.zk.exists(path))
            .await?
            .ok_or_else(|| Failure::zk(Error::NoNode, path))?;
        if self.json {
            let mut obj = stat_json(&stat);
            obj["path"] = json!(path);
            return print_json(&obj);
        }
        write_stdout(stat_text(&stat).as_bytes())
    }

    /// `create [-e] [-s] [-c] PATH [DATA]`: prints the created path.
    async fn create(&self, path: &str, data: &[u8], mode: CreateMode) -> CmdResult {
        let acl = synod_client::Acl::open_unsafe();
        let (created, stat) = self
            .req(path, self.zk.create_full(path, data, &acl, mode, None))
            .await?;
        if self.json {
            return print_json(&json!({ "path": created, "stat": stat_json(&stat) }));
        }
        write_stdout(format!("{created}\n").as_bytes())
    }

    /// `set [-v VERSION] [-s] PATH [DATA]`.
    async fn set(
        &self,
        path: &str,
        data: &[u8],
        version: Option<i32>,
        with_stat: bool,
    ) -> CmdResult {
        let stat = self
            .req(path, self.zk.set_data(path, data, version))
            .await?;
        if self.json {
            return print_json(&json!({ "path": path, "stat": stat_json(&stat) }));
        }
        if with_stat {
            return write_stdout(stat_text(&stat).as_bytes());
        }
        Ok(())
    }

    /// `delete [-v VERSION] PATH`.
    async fn delete(&self, path: &str, version: Option<i32>) -> CmdResult {
        self.req(path, self.zk.delete(path, version)).await?;
        if self.json {
            return print_json(&json!({ "path": path, "deleted": 1 }));
        }
        Ok(())
    }

    /// `rmr PATH`: the subtree, deepest znodes first.
    async fn rmr(&self, path: &str) -> CmdResult {
        // A child created under a node while the subtree is being removed makes its delete fail
        // with NotEmpty; list again and retry a few times before giving up.
        let mut deleted = 0;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.rmr_once(path).await {
                Ok(n) => {
                    deleted += n;
                    break;
                }
                Err((n, f)) if f.name == "NotEmpty" && attempt < 5 => deleted += n,
                Err((_, f)) => return Err(f),
            }
        }
        if self.json {
            return print_json(&json!({ "path": path, "deleted": deleted }));
        }
        Ok(())
    }

    /// Lists the subtree level by level, then deletes the levels deepest first, many requests in
    /// flight at a time. Returns how many znodes it deleted (also on failure, with the failure).
    async fn rmr_once(&self, root: &str) -> Result<usize, (usize, Failure)> {
        let mut levels: Vec<Vec<String>> = vec![vec![root.to_string()]];
        while let Some(last) = levels.last() {
            let listed: Vec<(String, Result<Vec<String>, Failure>)> =
                stream::iter(last.iter().cloned())
                    .map(|p| async move {
                        let r = self.req(&p, self.zk.get_children(&p)).await;
                        (p, r)
                    })
                    .buffer_unordered(RMR_CONCURRENCY)
                    .collect()
                    .await;
            let mut next = Vec::new();
            for (p, r) in listed {
                match r {
                    Ok(children) => {
                        next.extend(children.iter().map(|c| synod_proto::path::child(&p, c)))
                    }
                    // Deleted by someone else meanwhile: nothing left to do below it. For the
                    // root itself that is the command's answer.
                    Err(f) if f.name == "NoNode" && p != root => {}
                    Err(f) => return Err((0, f)),
                }
            }
            if next.is_empty() {
                break;
            }
            levels.push(next);
        }
        let mut deleted = 0;
        for level in levels.iter().rev() {
            let results: Vec<CmdResult> = stream::iter(level.iter())
                .map(|p| async move {
                    match self.req(p, self.zk.delete(p, None)).await {
                        // Gone already (deleted concurrently, or a container the server removed).
                        Err(f) if f.name == "NoNode" && p != root => Ok(()),
                        other => other,
                    }
                })
                .buffer_unordered(RMR_CONCURRENCY)
                .collect()
                .await;
            for r in results {
                match r {
                    Ok(()) => deleted += 1,
                    Err(f) => return Err((deleted, f)),
                }
            }
        }
        Ok(deleted)
    }

    /// `watch PATH [-r] [--count N]`: one line per event until Ctrl-C, `--count` events or the end of the session.
    async fn watch(&self, path: &str, recursive: bool, count: Option<u64>) -> CmdResult {
        let mode = if recursive {
            AddWatchMode::PersistentRecursive
        } else {
            AddWatchMode::Persistent
        };
        let mut events = self.req(path, self.zk.add_watch(path, mode)).await?;
        eprintln!(
            "watching {path}{}",
            if recursive { " (recursive)" } else { "" }
        );
        let mut seen = 0u64;
        if count == Some(0) {
            return Ok(());
        }
        while let Some(ev) = events.next().await {
            if ev.event_type == EventType::None {
                // The watch ended with the session.
                let err = match ev.state {
                    KeeperState::Expired => Error::SessionExpired,
                    KeeperState::AuthFailed => Error::AuthFailed,
                    _ => Error::ConnectionLoss,
                };
                return Err(Failure::zk(err, path));
            }
            if self.json {
                print_json(&json!({ "type": format!("{:?}", ev.event_type), "path": ev.path }))?;
            } else {
                write_stdout(format!("{:?} {}\n", ev.event_type, ev.path).as_bytes())?;
            }
            seen += 1;
            if count.is_some_and(|n| seen >= n) {
                break;
            }
        }
        Ok(())
    }
}

/// Resolves on Ctrl-C (or SIGTERM on Unix); never, if no handler could be installed.
async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = async {
            match signal(SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        let int = async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await
            }
        };
        tokio::select! {
            _ = term => {}
            _ = int => {}
        }
    }
    #[cfg(not(unix))]
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await
    }
}

/// Checks the command, connects, runs the command and closes the session.
async fn run(cli: Cli) -> CmdResult {
    let admin_failure = |e: String| Failure {
        name: "AdminError".into(),
        path: None,
        detail: Some(e),
        exit: EXIT_ZK,
    };
    let command = match cli.command {
        Command::Cluster { admin, action } => {
            return admin::cluster(&admin, action, cli.json)
                .await
                .map_err(admin_failure)
        }
        Command::Snapshot { admin } => return admin::snapshot(&admin).await.map_err(admin_failure),
        Command::Backup { admin, out } => {
            return admin::backup(&admin, &out).await.map_err(admin_failure)
        }
        other => other,
    };
    let timeout = Duration::from_millis(cli.timeout_ms);
    let job = Job::prepare(command)?;
    let is_watch = job.is_watch();
    let options = ConnectOptions::default().connect_timeout(timeout);
    let connect = Client::connect(&cli.servers, options);
    let zk = tokio::select! {
        r = tokio::time::timeout(timeout + Duration::from_secs(1), connect) => match r {
            Ok(Ok(zk)) => zk,
            Ok(Err(e)) => {
                let mut f = Failure::zk(e, job.path());
                f.exit = EXIT_USAGE;
                if f.detail.is_none() {
                    f.detail = Some(format!("connecting to {}", cli.servers));
                }
                return Err(f);
            }
            Err(_) => return Err(Failure {
                name: "ConnectionLoss".into(),
                path: Some(job.path().to_string()),
                detail: Some(format!("no session established with {} within {} ms", cli.servers, timeout.as_millis())),
                exit: EXIT_USAGE,
            }),
        },
        _ = interrupted() => return Err(Failure::interrupted()),
    };
    let ctx = Ctx {
        zk,
        json: cli.json,
        timeout,
    };
    let result = tokio::select! {
        r = ctx.run(job) => r,
        _ = interrupted() => if is_watch { Ok(()) } else { Err(Failure::interrupted()) },
    };
    // Close the session so the server drops it (and its ephemerals) now rather than after the
    // session timeout. A failure here does not change the command's outcome.
    match tokio::time::timeout(timeout, ctx.zk.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "closing the session failed"),
        Err(_) => tracing::debug!("closing the session timed out"),
    }
    result
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let json = cli.json;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            f.report(json);
            ExitCode::from(f.exit)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_like_java() {
        assert_eq!(java_date(0), "Thu Jan 01 00:00:00 UTC 1970");
        assert_eq!(java_date(951_782_400_000), "Tue Feb 29 00:00:00 UTC 2000");
        assert_eq!(java_date(1_700_000_000_123), "Tue Nov 14 22:13:20 UTC 2023");
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xff, 0xfe]), "//4=");
    }

    #[test]
    fn cli_parses() {
        let cli = Cli::try_parse_from([
            "synodctl",
            "--servers",
            "a:1/x",
            "set",
            "-v",
            "-1",
            "/p",
            "d",
        ])
        .expect("parse");
        assert!(matches!(
            cli.command,
            Command::Set {
                version: Some(-1),
                ..
            }
        ));
        assert!(Cli::try_parse_from(["synodctl", "create", "-c", "-e", "/p"]).is_err());
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
