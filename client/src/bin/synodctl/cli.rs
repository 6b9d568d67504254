//! synodctl's command line: the global options and the one command enum (clap derive).

use clap::{Parser, Subcommand};

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
pub struct Cli {
    /// Connect string: comma-separated host:port list with an optional /chroot suffix that every
    /// path is relative to, e.g. `10.0.0.1:2181,10.0.0.2:2181/app`.
    #[arg(
        long,
        env = "SYNOD_SERVERS",
        default_value = "127.0.0.1:2181",
        global = true
    )]
    pub servers: String,

    /// Speak TLS to the servers' secure client port, trusting this CA bundle (PEM).
    #[arg(long, env = "SYNOD_TLS_CA", global = true)]
    pub tls_ca: Option<std::path::PathBuf>,

    /// Present this client certificate (PEM; needs --tls-ca and --tls-key): the servers know
    /// the session as `x509:<the certificate's CN>`.
    #[arg(
        long,
        env = "SYNOD_TLS_CERT",
        global = true,
        requires = "tls_ca",
        requires = "tls_key"
    )]
    pub tls_cert: Option<std::path::PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "SYNOD_TLS_KEY", global = true, requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

    /// Speak plaintext to the client and admin ports (a cluster started `--insecure`). Without
    /// it and without --tls-ca, synodctl uses the certificates of the local cluster that
    /// scripts/cluster.sh made (`$SYNOD_CLUSTER_DIR/certs`, default `target/synod-cluster/certs`)
    /// if they exist.
    /// (`SYNOD_INSECURE` may be `1`/`0`, `true`/`false`, `yes`/`no`, `on`/`off`: `scripts/
    /// cluster.sh env` sets it to `1`.)
    #[arg(
        long,
        env = "SYNOD_INSECURE",
        global = true,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub insecure: bool,

    /// Authenticate the session with ZooKeeper's digest scheme (`addauth digest USER:PASSWORD`)
    /// before the command runs; ACLs may then grant to `digest:USER:<hash>`. Prefer the
    /// environment over the command line, where other users of the machine can see it.
    #[arg(long, env = "SYNOD_AUTH", global = true, hide_env_values = true)]
    pub auth: Option<String>,

    /// Print results (and errors) as JSON objects on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// How long to wait, in milliseconds, for a session to be established and for the reply to
    /// each request.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub timeout_ms: u64,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands (see each one's `--help`).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the children of a znode, sorted, one per line.
    Ls {
        /// The znode whose children to list.
        path: String,
        /// Also print the znode's Stat after the children.
        #[arg(short = 's', long = "stat")]
        stat: bool,
    },
    /// Print a znode's data to stdout, byte for byte.
    ///
    /// When stdout is a terminal and the data does not end with a newline, one is added so that
    /// the shell prompt starts on a line of its own; piped or redirected, the bytes are exactly
    /// the znode's data.
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
        /// The new znode's ACL, one `scheme:id:perms` entry per --acl (as for setacl), e.g.
        /// `--acl x509:hospital-1:cdrwa --acl x509:lab-3:r`; `auth::cdrwa` grants every
        /// identity of this session. Default: open to anyone (`world:anyone:cdrwa`), as
        /// ZooKeeper's zkCli creates.
        #[arg(long = "acl", value_name = "ENTRY")]
        acl: Vec<String>,
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
    /// Print the identities the server knows this session by, one `scheme:id` per line
    /// (`ip:...`, `x509:<certificate CN>`, `digest:<user>` after --auth, `super:...`).
    Whoami,
    /// Print a znode's ACL, one `scheme:id:perms` entry per line (perms as `cdrwa` letters).
    Getacl {
        /// The znode whose ACL to print.
        path: String,
    },
    /// Replace a znode's ACL with the given entries, each `scheme:id:perms`: e.g.
    /// `x509:alice:cdrwa`, `digest:bob:<base64 sha1>:r`, `world:anyone:r`, `auth::cdrwa`
    /// (every identity of this session).
    Setacl {
        /// Only if the znode's ACL version is VERSION (fails with BadVersion otherwise); -1 or
        /// absent matches any version.
        #[arg(short = 'v', long, allow_negative_numbers = true)]
        version: Option<i32>,
        /// The znode whose ACL to replace.
        path: String,
        /// The new ACL's entries.
        #[arg(required = true)]
        acl: Vec<String>,
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
        action: ClusterCmd,
    },
    /// Tenants (institutions) through the admin HTTP port: list, add (or change), remove.
    /// Operator only. See docs/tenants.md.
    Tenant {
        /// Admin HTTP addresses (host:port), comma-separated; the first reachable one is used.
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
        action: TenantCmd,
    },
    /// Query a node's audit trail (admin port, operator only), or export it as JSON lines
    /// (`-o FILE`: every matching record, page by page; `synod audit verify --export FILE`
    /// checks it, with `--backup B` against a backup's replicated head).
    Audit {
        /// Admin HTTP addresses (host:port), comma-separated; the first reachable one is used.
        #[arg(
            long,
            env = "SYNOD_ADMIN",
            default_value = "127.0.0.1:8081",
            value_delimiter = ','
        )]
        admin: Vec<String>,
        /// Records of ops on this path or below it.
        #[arg(long)]
        path: Option<String>,
        /// Records made by this identity (`x509:<CN>`, `org:<O>`, `digest:<user>:<hash>`, `ip:<addr>`).
        #[arg(long)]
        identity: Option<String>,
        /// Records of callers of this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// From this zxid on (decimal or 0x hex).
        #[arg(long)]
        since: Option<String>,
        /// Up to this zxid.
        #[arg(long)]
        until: Option<String>,
        /// At most this many records (printing; an export takes them all).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Export every matching record to this file as JSON lines.
        #[arg(short = 'o', long)]
        out: Option<std::path::PathBuf>,
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

impl Command {
    /// The znode a ZooKeeper command is about; `None` for the admin-port commands.
    pub fn znode(&self) -> Option<&str> {
        match self {
            Command::Ls { path, .. }
            | Command::Get { path }
            | Command::Stat { path }
            | Command::Create { path, .. }
            | Command::Set { path, .. }
            | Command::Delete { path, .. }
            | Command::Rmr { path }
            | Command::Getacl { path }
            | Command::Setacl { path, .. }
            | Command::Watch { path, .. } => Some(path),
            Command::Whoami
            | Command::Cluster { .. }
            | Command::Tenant { .. }
            | Command::Audit { .. }
            | Command::Snapshot { .. }
            | Command::Backup { .. } => None,
        }
    }
}

/// `synodctl cluster ...`.
#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// List the members as a node sees them (the leader's view, with replication lag, if the
    /// leader is among --admin).
    List,
    /// Add a node (started with `synod --join`) as a learner and wait until it has caught up.
    AddLearner {
        /// The new node's id.
        #[arg(long)]
        id: u64,
        /// The new node's peer (Raft) address, host:port.
        #[arg(long)]
        peer_addr: String,
    },
    /// Promote a caught-up learner to voter (joint consensus).
    Promote {
        /// The learner's id.
        #[arg(long)]
        id: u64,
        /// Skip the safety checks (a majority of voters reachable and caught up).
        #[arg(long)]
        force: bool,
    },
    /// Remove a voter or learner (the leader too: it steps down once the change commits).
    Remove {
        /// The member's id.
        #[arg(long)]
        id: u64,
        /// Skip the safety checks (a majority of the remaining voters reachable and caught up).
        #[arg(long)]
        force: bool,
    },
    /// Rebuild a member whose data is damaged (or lost) from its peers: remove it from the
    /// membership if it is still in it (a voter must never come back with less than it
    /// acknowledged), wait until it runs again on an empty data directory with --join, add it
    /// as a learner (it gets the leader's snapshot and log) and promote it.
    Rebuild {
        /// The member's id.
        #[arg(long)]
        id: u64,
        /// Its peer (Raft) address, host:port.
        #[arg(long)]
        peer_addr: String,
        /// How long to wait for it to come back and catch up, in seconds.
        #[arg(long, default_value_t = 600)]
        wait_secs: u64,
    },
}

/// `synodctl tenant ...`.
#[derive(Debug, Subcommand)]
pub enum TenantCmd {
    /// List the tenants with their identities, quotas and usage.
    List,
    /// Declare a tenant, or replace a declared one's identities and quotas (what is not given
    /// is dropped: give the whole declaration). Its home /tenants/NAME becomes private to it.
    Add {
        /// The tenant's name (letters, digits, '-', '_', '.').
        name: String,
        /// A certificate organisation (subject O) whose certificates belong to it.
        #[arg(long = "org")]
        orgs: Vec<String>,
        /// A certificate common name (subject CN) that belongs to it.
        #[arg(long = "x509")]
        x509: Vec<String>,
        /// A digest identity `user:password` that belongs to it (only its hash is sent).
        #[arg(long = "digest")]
        digests: Vec<String>,
        /// Most znodes its identities may own.
        #[arg(long)]
        max_znodes: Option<u64>,
        /// Most bytes of data in those znodes.
        #[arg(long)]
        max_bytes: Option<u64>,
        /// Most ephemeral znodes among them.
        #[arg(long)]
        max_ephemerals: Option<u64>,
        /// Most sessions its identities may hold open.
        #[arg(long)]
        max_sessions: Option<u64>,
        /// Most watches its connections may hold on each node.
        #[arg(long)]
        max_watches: Option<u64>,
    },
    /// Forget a tenant; its home and nodes stay (reachable by super only).
    Remove {
        /// The tenant's name.
        name: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(cli.command.znode(), Some("/p"));
        assert!(Cli::try_parse_from(["synodctl", "create", "-c", "-e", "/p"]).is_err());
        let cli = Cli::try_parse_from([
            "synodctl", "cluster", "promote", "--id", "4", "--admin", "a:1,b:2",
        ])
        .expect("parse");
        match cli.command {
            Command::Cluster { admin, action } => {
                assert_eq!(admin, ["a:1", "b:2"]);
                assert!(matches!(
                    action,
                    ClusterCmd::Promote {
                        id: 4,
                        force: false
                    }
                ));
            }
            other => panic!("parsed as {other:?}"),
        }
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
