//! ZooKeeper's four-letter words: answered raw on the client port before any handshake (a client
//! that sends `ruok` instead of a frame length gets `imok`), and as JSON on the admin port under
//! `/commands/<name>` (ZooKeeper AdminServer style, `?format=text` for the raw form). Output
//! formats follow ZooKeeper 3.8 wherever synod has the figure, so existing monitoring scripts work.
//!
//! Words: `ruok srvr stat mntr cons envi conf wchs wchc wchp dump isro srst crst`. Lists (`cons`,
//! `wchc`, `wchp`, `dump`) stop after [`MAX_ITEMS`] entries and say how many were left out.
//!
//! The client port answers only the words of `--four-letter-words` ([`Allowed`], ZooKeeper's
//! `4lw.commands.whitelist`; default `srvr,ruok,mntr,isro`); the admin port decides per word and
//! identity (`crate::admin::access`).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde_json::{json, Map, Value};
use synod_raft_store::state_machine::lock;

use crate::admin::views::{self, CAUGHT_UP_LAG};
use crate::node::Node;
use crate::session::registry::snapshots;
use crate::stats::ConnSnapshot;
use crate::watch::manager::{self, WatchIndex};

/// Entries a list-shaped word shows at most (the admin API's paged endpoints show the rest).
pub const MAX_ITEMS: usize = 10_000;

/// ZooKeeper's answer when the server is not part of a working quorum.
pub const NOT_SERVING: &str = "This ZooKeeper instance is not currently serving requests\n";

/// The version string shown by `srvr`, `stat`, `mntr`, `envi`: the ZooKeeper protocol level synod
/// speaks, then synod's own version (scripts that parse a leading `3.x` keep working).
pub fn version() -> String {
    format!("3.8.0-synod-{}", env!("CARGO_PKG_VERSION"))
}

/// A four-letter word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Word {
    Ruok,
    Srvr,
    Stat,
    Mntr,
    Cons,
    Envi,
    Conf,
    Wchs,
    Wchc,
    Wchp,
    Dump,
    Isro,
    Srst,
    Crst,
}

/// Every word with its AdminServer command name, in the order `/commands` lists them.
pub const WORDS: &[(Word, &str, &str)] = &[
    (Word::Ruok, "ruok", "ruok"),
    (Word::Srvr, "srvr", "server_stats"),
    (Word::Stat, "stat", "stats"),
    (Word::Mntr, "mntr", "monitor"),
    (Word::Cons, "cons", "connections"),
    (Word::Envi, "envi", "environment"),
    (Word::Conf, "conf", "configuration"),
    (Word::Wchs, "wchs", "watch_summary"),
    (Word::Wchc, "wchc", "watches"),
    (Word::Wchp, "wchp", "watches_by_path"),
    (Word::Dump, "dump", "dump"),
    (Word::Isro, "isro", "is_read_only"),
    (Word::Srst, "srst", "stat_reset"),
    (Word::Crst, "crst", "connection_stat_reset"),
];

impl Word {
    /// A word by its four letters or its AdminServer name.
    /// Whether the word changes state (`srst`, `crst`): only an operator may ask for it, on
    /// the admin port.
    pub fn resets(self) -> bool {
        matches!(self, Word::Srst | Word::Crst)
    }

    pub fn parse(name: &str) -> Option<Word> {
        WORDS
            .iter()
            .find(|(_, short, long)| *short == name || *long == name)
            .map(|(w, _, _)| *w)
    }

    /// The four letters.
    pub fn short(self) -> &'static str {
        WORDS
            .iter()
            .find(|(w, _, _)| *w == self)
            .map(|(_, s, _)| *s)
            .unwrap_or("ruok")
    }

    /// The AdminServer command name (`"command"` in the JSON answer).
    pub fn long(self) -> &'static str {
        WORDS
            .iter()
            .find(|(w, _, _)| *w == self)
            .map(|(_, _, l)| *l)
            .unwrap_or("ruok")
    }
}

/// Which four-letter words the client port answers (`--four-letter-words`, as ZooKeeper's
/// `4lw.commands.whitelist`): none of them needs a session or a credential, so each one allowed
/// there is open to anyone who can reach the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// `*`: every word.
    All,
    /// Only these.
    Only(Vec<Word>),
}

impl Allowed {
    /// ZooKeeper's default since 3.5.3 keeps `srvr`; synod adds the health checks and `mntr`
    /// (counters only: no session, path, address or host detail).
    pub const DEFAULT: &'static str = "srvr,ruok,mntr,isro";

    /// Parses `*` or a comma-separated list of words (four letters or AdminServer names).
    /// `srst` and `crst` change state: they are operators' words, on the admin port only, and
    /// listing them here is an error rather than silently ignored.
    pub fn parse(list: &str) -> Result<Allowed, String> {
        if list.trim() == "*" {
            return Ok(Allowed::All);
        }
        list.split(',')
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .map(|w| match Word::parse(w) {
                None => Err(format!("unknown four-letter word {w:?}")),
                Some(word) if word.resets() => Err(format!(
                    "{} resets counters: it is an operator's word, served on the admin port \
                     only (/commands/{})",
                    word.short(),
                    word.long()
                )),
                Some(word) => Ok(word),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Allowed::Only)
    }

    /// The list as [`Allowed::parse`] reads it back (`*`, or the short names).
    pub fn list(&self) -> String {
        match self {
            Allowed::All => "*".to_string(),
            Allowed::Only(words) => words
                .iter()
                .map(|w| w.short())
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    /// Whether the client port answers `word` (never `srst` or `crst`, even under `*`).
    pub fn allows(&self, word: Word) -> bool {
        !word.resets()
            && match self {
                Allowed::All => true,
                Allowed::Only(words) => words.contains(&word),
            }
    }
}

/// The raw answer to a four-letter word on the client port, or None if `head` is not one (it is
/// then a frame length). A word not in `--four-letter-words` gets ZooKeeper's refusal text.
pub fn answer(node: &Node, head: &[u8; 4]) -> Option<String> {
    let word = Word::parse(std::str::from_utf8(head).ok()?)?;
    if word.resets() {
        return Some(format!(
            "{} is not executed on the client port: an operator asks for it on the admin port \
             (/commands/{}).\n",
            word.short(),
            word.long()
        ));
    }
    if !node.cfg.four_letter_words.allows(word) {
        return Some(format!(
            "{} is not executed because it is not in the whitelist.\n",
            word.short()
        ));
    }
    Some(text(node, word))
}

/// Whether this node is in a working cluster (knows a leader, and is not cut off from the
/// quorum: [`crate::cut_off`]), as ZooKeeper's "serving".
fn serving(node: &Node) -> bool {
    node.raft.metrics().borrow().current_leader.is_some() && !node.cut_off.active()
}

/// ZooKeeper's mode name of this node: `leader`, `follower`, `observer` (a Raft learner).
fn mode(node: &Node) -> &'static str {
    if node.read_only.active() {
        return "read-only";
    }
    let m = node.raft.metrics().borrow().clone();
    match m.state {
        openraft::ServerState::Leader => "leader",
        openraft::ServerState::Learner => "observer",
        _ => "follower",
    }
}

/// ZooKeeper's Java rendering of a double with at most 4 decimals (`5.6667`, `0.0`, `12.5`).
fn java_double(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0');
    if s.ends_with('.') {
        format!("{s}0")
    } else {
        s.to_string()
    }
}

/// The figures `srvr`, `stat` and `mntr` share.
struct Summary {
    zxid: u64,
    znodes: usize,
    /// Paths plus data, as ZooKeeper's approximate data size counts it.
    approximate_data_size: u64,
    ephemerals: usize,
    sessions: usize,
    watches: usize,
    connections: usize,
    server: crate::stats::ServerSnapshot,
}

fn summary(node: &Node) -> Summary {
    let (tree, zxid, watches) = {
        let r = lock(&node.replica);
        // An O(1) copy: the counting below runs outside the lock.
        (
            r.tree.clone(),
            r.applied_zxid() as u64,
            r.observer.watches.count(),
        )
    };
    let paths: u64 = tree.nodes().map(|(p, _)| p.len() as u64).sum();
    Summary {
        zxid,
        znodes: tree.node_count(),
        approximate_data_size: paths + tree.data_bytes(),
        ephemerals: tree.sessions().map(|(_, s)| s.ephemerals.len()).sum(),
        sessions: tree.session_count(),
        watches,
        connections: node.connections().len(),
        server: node.stats.snapshot(),
    }
}

/// The raw text answer of a word.
pub fn text(node: &Node, word: Word) -> String {
    match word {
        Word::Ruok => "imok".into(),
        Word::Isro if node.read_only.active() => "ro".into(),
        Word::Isro => "rw".into(),
        Word::Envi => envi_text(),
        Word::Conf => conf_text(node),
        Word::Srst => {
            node.stats.reset();
            "Server stats reset.\n".into()
        }
        Word::Crst => {
            for c in node.connections() {
                c.reset();
            }
            "Connection stats reset.\n".into()
        }
        _ if !serving(node) && !node.read_only.active() => NOT_SERVING.into(),
        Word::Srvr => srvr_text(node, false),
        Word::Stat => srvr_text(node, true),
        Word::Mntr => mntr(node).into_iter().fold(String::new(), |mut s, (k, v)| {
            let v = match v {
                Value::String(s) => s,
                Value::Number(n) if n.is_f64() => java_double(n.as_f64().unwrap_or(0.0)),
                other => other.to_string(),
            };
            let _ = writeln!(s, "zk_{k}\t{v}");
            s
        }),
        Word::Cons => {
            let mut s = String::new();
            for c in snapshots(&node.connections()).iter().take(MAX_ITEMS) {
                let _ = writeln!(s, "{}", cons_line(c, true));
            }
            s.push('\n');
            s
        }
        Word::Wchs => {
            let w = watch_tables(node);
            format!(
                "{} connections watching {} paths\nTotal watches:{}\n",
                w.conns_watching, w.paths, w.total
            )
        }
        Word::Wchc => {
            let mut s = String::new();
            let by_session = watches_by_session(node);
            for (sid, paths) in by_session.iter().take(MAX_ITEMS) {
                let _ = writeln!(s, "{sid:#x}");
                for p in paths {
                    let _ = writeln!(s, "\t{p}");
                }
            }
            more(&mut s, by_session.len());
            s.push('\n');
            s
        }
        Word::Wchp => {
            let mut s = String::new();
            let by_path = watches_by_path(node);
            for (path, sids) in by_path.iter().take(MAX_ITEMS) {
                let _ = writeln!(s, "{path}");
                for sid in sids {
                    let _ = writeln!(s, "\t{sid:#x}");
                }
            }
            more(&mut s, by_path.len());
            s.push('\n');
            s
        }
        Word::Dump => dump_text(node),
    }
}

/// Notes how many entries a capped list left out.
fn more(s: &mut String, total: usize) {
    if total > MAX_ITEMS {
        let _ = writeln!(s, "... {} more", total - MAX_ITEMS);
    }
}

fn srvr_text(node: &Node, with_clients: bool) -> String {
    let sum = summary(node);
    let l = sum.server.latency;
    let mut s = format!("Zookeeper version: {}\n", version());
    if node.read_only.active() {
        s.push_str("READ-ONLY mode; serving only read-only clients\n");
    }
    if with_clients {
        s.push_str("Clients:\n");
        for c in snapshots(&node.connections()).iter().take(MAX_ITEMS) {
            let _ = writeln!(s, "{}", cons_line(c, false));
        }
        s.push('\n');
    }
    let _ = write!(
        s,
        "Latency min/avg/max: {}/{}/{}\nReceived: {}\nSent: {}\nConnections: {}\nOutstanding: {}\n\
         Zxid: {:#x}\nMode: {}\nNode count: {}\n",
        l.min_ms(),
        java_double(l.avg_ms()),
        l.max_ms(),
        sum.server.packets_received,
        sum.server.packets_sent,
        sum.connections,
        sum.server.outstanding,
        sum.zxid,
        mode(node),
        sum.znodes,
    );
    s
}

/// One `cons` line (or, short, one `stat` client line), ZooKeeper's format.
fn cons_line(c: &ConnSnapshot, full: bool) -> String {
    let mut s = format!(
        " /{}[1](queued={},recved={},sent={}",
        c.peer, c.outstanding, c.received, c.sent
    );
    if full {
        let _ = write!(
            s,
            ",sid={:#x},lop={},est={},to={},lcxid={:#x},lzxid={:#x},lresp={},llat={},minlat={},avglat={},maxlat={}",
            c.session_id,
            c.last_op,
            c.established_ms,
            c.timeout_ms,
            c.last_cxid,
            c.last_zxid,
            c.last_response_ms,
            c.last_latency_us / 1000,
            c.latency.min_ms(),
            c.latency.avg_ms() as u64,
            c.latency.max_ms(),
        );
    }
    s.push(')');
    s
}

/// A number of open file descriptors of this process, and its soft limit.
fn file_descriptors() -> (Option<u64>, Option<u64>) {
    let open = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as u64);
    let max = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok())
        });
    (open, max)
}

/// Followers as the leader sees them: (learners, synced voters, synced non-voters). A member is
/// synced when it has acknowledged entries in this term and is at most [`CAUGHT_UP_LAG`] behind.
fn follower_counts(node: &Node) -> Option<(usize, usize, usize)> {
    let members = views::membership(node);
    if !members.is_leader_view {
        return None;
    }
    let others: Vec<_> = members.members.iter().filter(|m| m.id != node.id).collect();
    let synced = |voter: bool| {
        others
            .iter()
            .filter(|m| m.voter == voter && m.lag.is_some_and(|l| l <= CAUGHT_UP_LAG))
            .count()
    };
    Some((others.len(), synced(true), synced(false)))
}

/// `mntr`: ZooKeeper's key names (without the `zk_` prefix), in ZooKeeper 3.4's familiar order.
/// Only figures synod really has are listed.
fn mntr(node: &Node) -> Vec<(&'static str, Value)> {
    let sum = summary(node);
    let l = sum.server.latency;
    let (open_fds, max_fds) = file_descriptors();
    let mut v: Vec<(&'static str, Value)> = vec![
        ("version", json!(version())),
        ("avg_latency", json!(l.avg_ms())),
        ("max_latency", json!(l.max_ms())),
        ("min_latency", json!(l.min_ms())),
        ("packets_received", json!(sum.server.packets_received)),
        ("packets_sent", json!(sum.server.packets_sent)),
        ("num_alive_connections", json!(sum.connections)),
        ("outstanding_requests", json!(sum.server.outstanding)),
        ("server_state", json!(mode(node))),
        ("znode_count", json!(sum.znodes)),
        ("watch_count", json!(sum.watches)),
        ("ephemerals_count", json!(sum.ephemerals)),
        ("approximate_data_size", json!(sum.approximate_data_size)),
    ];
    if let Some(n) = open_fds {
        v.push(("open_file_descriptor_count", json!(n)));
    }
    if let Some(n) = max_fds {
        v.push(("max_file_descriptor_count", json!(n)));
    }
    v.push(("uptime", json!(node.started.elapsed().as_millis() as u64)));
    v.push(("global_sessions", json!(sum.sessions)));
    v.push(("local_sessions", json!(0)));
    if let Some((learners, synced, synced_non_voting)) = follower_counts(node) {
        // `followers` is the 3.4 name many scripts still read; 3.8 calls it `learners`.
        v.push(("followers", json!(learners)));
        v.push(("learners", json!(learners)));
        v.push(("synced_followers", json!(synced)));
        v.push(("synced_non_voting_followers", json!(synced_non_voting)));
        v.push(("synced_observers", json!(0)));
    }
    v
}

fn envi_pairs() -> Vec<(&'static str, String)> {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "<NA>".into())
    };
    let os = match std::env::consts::OS {
        "linux" => "Linux".to_string(),
        other => other.to_string(),
    };
    vec![
        ("zookeeper.version", version()),
        ("host.name", read("/proc/sys/kernel/hostname")),
        ("os.name", os),
        ("os.arch", std::env::consts::ARCH.to_string()),
        ("os.version", read("/proc/sys/kernel/osrelease")),
        (
            "user.name",
            std::env::var("USER").unwrap_or_else(|_| "<NA>".into()),
        ),
        (
            "user.home",
            std::env::var("HOME").unwrap_or_else(|_| "<NA>".into()),
        ),
        (
            "user.dir",
            std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_else(|_| "<NA>".into()),
        ),
        ("process.id", std::process::id().to_string()),
    ]
}

fn envi_text() -> String {
    envi_pairs()
        .into_iter()
        .fold("Environment:\n".to_string(), |mut s, (k, v)| {
            let _ = writeln!(s, "{k}={v}");
            s
        })
}

/// `conf`: ZooKeeper's keys where synod has the setting, then synod's own, then the membership.
fn conf_pairs(node: &Node) -> Vec<(String, Value)> {
    let c = &node.cfg;
    let mut v: Vec<(String, Value)> = Vec::new();
    // ZooKeeper's keys for its two client ports, each only where it is configured.
    if let Some(a) = c.client_addr {
        v.push(("clientPort".into(), json!(a.port())));
        v.push(("clientPortAddress".into(), json!(a.ip().to_string())));
    }
    if let Some(a) = c.secure_client_addr {
        v.push(("secureClientPort".into(), json!(a.port())));
        v.push(("secureClientPortAddress".into(), json!(a.ip().to_string())));
    }
    v.extend([
        ("dataDir".into(), json!(c.data_dir.display().to_string())),
        ("dataLogDir".into(), json!(c.data_dir.display().to_string())),
        ("tickTime".into(), json!(c.tick.as_millis() as u64)),
        ("maxClientCnxns".into(), json!(c.max_connections_per_ip)),
        (
            "minSessionTimeout".into(),
            json!(c.min_session_timeout.as_millis() as u64),
        ),
        (
            "maxSessionTimeout".into(),
            json!(c.max_session_timeout.as_millis() as u64),
        ),
        ("serverId".into(), json!(c.id)),
        ("quorumPort".into(), json!(c.peer_addr.port())),
        ("peerType".into(), json!(0)),
        ("adminAddress".into(), json!(c.admin_addr.to_string())),
        // Where clients and operators reach this node (synod's keys; /members shows every
        // member's).
        (
            "advertisedClientAddress".into(),
            json!(c.advertise_client_addr),
        ),
        (
            "advertisedAdminAddress".into(),
            json!(c.advertise_admin_addr),
        ),
        ("heartbeatMs".into(), json!(c.heartbeat.as_millis() as u64)),
        (
            "electionTimeoutMs".into(),
            json!(c.election_timeout.as_millis() as u64),
        ),
        ("snapshotEntries".into(), json!(c.snapshot_entries)),
        (
            "readConsistency".into(),
            json!(format!("{:?}", c.read_consistency).to_lowercase()),
        ),
        ("maxFrameBytes".into(), json!(c.max_frame_bytes)),
        ("maxOutstanding".into(), json!(c.max_outstanding)),
        ("maxConnections".into(), json!(c.max_connections)),
        (
            "maxQueuedPerConnection".into(),
            json!(c.max_queued_per_connection),
        ),
        (
            "maxQueuedBytesPerConnection".into(),
            json!(c.max_queued_bytes_per_connection),
        ),
    ]);
    let m = node.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership().clone();
    let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
    for (id, n) in membership.nodes() {
        let role = if voters.contains(id) {
            "participant"
        } else {
            "observer"
        };
        v.push((format!("server.{id}"), json!(format!("{}:{role}", n.addr))));
    }
    v
}

fn conf_text(node: &Node) -> String {
    conf_pairs(node)
        .into_iter()
        .fold(String::new(), |mut s, (k, v)| {
            let v = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            let _ = writeln!(s, "{k}={v}");
            s
        })
}

/// `wchs` figures.
struct WatchTables {
    conns_watching: usize,
    paths: usize,
    total: usize,
}

/// The watches of this node and which session each connection carries, copied under the
/// replica lock in O(1) and O(connections): everything else is done outside it.
fn watch_index(node: &Node) -> (WatchIndex, HashMap<u64, i64>) {
    let r = lock(&node.replica);
    (
        r.observer.watches.index(),
        r.observer.conns.sessions_by_conn(),
    )
}

fn watch_tables(node: &Node) -> WatchTables {
    let (index, _) = watch_index(node);
    let by_path = manager::by_path(&index);
    WatchTables {
        conns_watching: index.len(),
        paths: by_path.len(),
        total: index.values().map(|w| w.len()).sum(),
    }
}

/// `wchc`: session id → watched paths, for this node's connections, by session id.
pub fn watches_by_session(node: &Node) -> Vec<(i64, Vec<String>)> {
    let (index, sessions) = watch_index(node);
    let mut out: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for (conn, sid) in &sessions {
        let paths = manager::paths_of(&index, *conn);
        if !paths.is_empty() {
            out.entry(*sid).or_default().extend(paths);
        }
    }
    out.into_iter()
        .map(|(sid, mut p)| {
            p.sort();
            p.dedup();
            (sid, p)
        })
        .collect()
}

/// `wchp`: watched path → the sessions watching it, by path.
pub fn watches_by_path(node: &Node) -> Vec<(String, Vec<i64>)> {
    let (index, sessions) = watch_index(node);
    manager::by_path(&index)
        .into_iter()
        .map(|(p, conns)| {
            let mut sids: Vec<i64> = conns
                .iter()
                .filter_map(|c| sessions.get(c).copied())
                .collect();
            sids.sort_unstable();
            sids.dedup();
            (p, sids)
        })
        .collect()
}

/// Sessions with their timeout and ephemerals, by id.
fn sessions_with_ephemerals(node: &Node) -> Vec<(i64, i32, Vec<String>)> {
    let tree = lock(&node.replica).tree.clone();
    let mut v: Vec<(i64, i32, Vec<String>)> = tree
        .sessions()
        .map(|(id, s)| {
            (
                id,
                s.timeout_ms,
                s.ephemerals.iter().map(|p| p.to_string()).collect(),
            )
        })
        .collect();
    v.sort_unstable_by_key(|(id, _, _)| *id);
    v
}

fn dump_text(node: &Node) -> String {
    let sessions = sessions_with_ephemerals(node);
    let mut s = String::from("SessionTracker dump:\n");
    let _ = writeln!(s, "Global Sessions({}):", sessions.len());
    for (id, timeout, _) in sessions.iter().take(MAX_ITEMS) {
        let _ = writeln!(s, "{id:#x}\t{timeout}ms");
    }
    more(&mut s, sessions.len());
    let with: Vec<_> = sessions.iter().filter(|(_, _, e)| !e.is_empty()).collect();
    s.push_str("ephemeral nodes dump:\n");
    let _ = writeln!(s, "Sessions with Ephemerals ({}):", with.len());
    for (id, _, eph) in with.iter().take(MAX_ITEMS) {
        let _ = writeln!(s, "{id:#x}:");
        for p in eph {
            let _ = writeln!(s, "\t{p}");
        }
    }
    more(&mut s, with.len());
    let conns = snapshots(&node.connections());
    s.push_str("Connections dump:\n");
    let _ = writeln!(s, "Connections Sets (1)/({}):", conns.len());
    for c in conns.iter().take(MAX_ITEMS) {
        let _ = writeln!(s, "\tip: /{} sessionId: {:#x}", c.peer, c.session_id);
    }
    more(&mut s, conns.len());
    s
}

/// The `connections` list of `stat` and `cons` (JSON form), bounded by [`MAX_ITEMS`].
fn insert_connections(node: &Node, out: &mut Map<String, Value>) {
    let conns: Vec<Value> = snapshots(&node.connections())
        .iter()
        .take(MAX_ITEMS)
        .map(cons_json)
        .collect();
    out.insert("connections".into(), Value::Array(conns));
    out.insert("secure_connections".into(), json!([]));
}

fn cons_json(c: &ConnSnapshot) -> Value {
    json!({
        "remote_socket_address": c.peer.to_string(),
        "interest_ops": 1,
        "outstanding_requests": c.outstanding,
        "packets_received": c.received,
        "packets_sent": c.sent,
        "session_id": format!("{:#x}", c.session_id),
        "last_operation": c.last_op,
        "session_timeout": c.timeout_ms,
        "last_cxid": format!("{:#x}", c.last_cxid),
        "last_zxid": format!("{:#x}", c.last_zxid),
        "last_response_time": c.last_response_ms,
        "last_latency": c.last_latency_us / 1000,
        "min_latency": c.latency.min_ms(),
        "avg_latency": c.latency.avg_ms() as u64,
        "max_latency": c.latency.max_ms(),
        "established": c.established_ms,
    })
}

fn server_stats_json(node: &Node) -> (Value, usize) {
    let sum = summary(node);
    let l = sum.server.latency;
    let stats = json!({
        "packets_sent": sum.server.packets_sent,
        "packets_received": sum.server.packets_received,
        "max_latency": l.max_ms(),
        "min_latency": l.min_ms(),
        "avg_latency": l.avg_ms(),
        "outstanding_requests": sum.server.outstanding,
        "last_processed_zxid": sum.zxid,
        "num_alive_client_connections": sum.connections,
        "server_state": mode(node),
        "uptime": node.started.elapsed().as_millis() as u64,
        "provider_null": false,
    });
    (stats, sum.znodes)
}

/// The AdminServer JSON answer of a word: the word's fields plus `"command"` and `"error"`.
pub fn json(node: &Node, word: Word) -> Value {
    let mut out = Map::new();
    // A read-only node answers, as in the text form.
    let is_serving = serving(node) || node.read_only.active();
    match word {
        Word::Ruok | Word::Srst | Word::Crst => {
            // The side effect (for the resets) is the text form's.
            if word != Word::Ruok {
                text(node, word);
            }
        }
        Word::Isro => {
            out.insert("read_only".into(), json!(node.read_only.active()));
        }
        Word::Envi => {
            for (k, v) in envi_pairs() {
                out.insert(k.into(), json!(v));
            }
        }
        Word::Conf => {
            for (k, v) in conf_pairs(node) {
                out.insert(k, v);
            }
        }
        _ if !is_serving => {}
        Word::Srvr | Word::Stat => {
            let (stats, znodes) = server_stats_json(node);
            out.insert("version".into(), json!(version()));
            out.insert("read_only".into(), json!(node.read_only.active()));
            out.insert("server_stats".into(), stats);
            out.insert("node_count".into(), json!(znodes));
            if word == Word::Stat {
                insert_connections(node, &mut out);
            }
        }
        Word::Mntr => {
            for (k, v) in mntr(node) {
                out.insert(k.into(), v);
            }
        }
        Word::Cons => insert_connections(node, &mut out),
        Word::Wchs => {
            let w = watch_tables(node);
            out.insert("num_connections".into(), json!(w.conns_watching));
            out.insert("num_paths".into(), json!(w.paths));
            out.insert("num_total_watches".into(), json!(w.total));
        }
        Word::Wchc => {
            let m: Map<String, Value> = watches_by_session(node)
                .into_iter()
                .take(MAX_ITEMS)
                .map(|(sid, paths)| (sid.to_string(), json!(paths)))
                .collect();
            out.insert("session_id_to_watched_paths".into(), Value::Object(m));
        }
        Word::Wchp => {
            let m: Map<String, Value> = watches_by_path(node)
                .into_iter()
                .take(MAX_ITEMS)
                .map(|(p, sids)| (p, json!(sids)))
                .collect();
            out.insert("path_to_session_ids".into(), Value::Object(m));
        }
        Word::Dump => {
            let m: Map<String, Value> = sessions_with_ephemerals(node)
                .into_iter()
                .filter(|(_, _, e)| !e.is_empty())
                .take(MAX_ITEMS)
                .map(|(sid, _, e)| (sid.to_string(), json!(e)))
                .collect();
            out.insert("session_id_to_ephemeral_paths".into(), Value::Object(m));
        }
    }
    out.insert("command".into(), json!(word.long()));
    let needs_serving = !matches!(
        word,
        Word::Ruok | Word::Isro | Word::Envi | Word::Conf | Word::Srst | Word::Crst
    );
    let error = if needs_serving && !is_serving {
        json!(NOT_SERVING.trim_end())
    } else {
        Value::Null
    };
    out.insert("error".into(), error);
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_style_doubles() {
        assert_eq!(java_double(0.0), "0.0");
        assert_eq!(java_double(5.666_666), "5.6667");
        assert_eq!(java_double(12.5), "12.5");
        assert_eq!(java_double(1.0), "1.0");
    }

    #[test]
    fn words_parse_by_both_names() {
        for (w, short, long) in WORDS {
            assert_eq!(Word::parse(short), Some(*w));
            assert_eq!(Word::parse(long), Some(*w));
            assert_eq!(w.short(), *short);
            assert_eq!(w.long(), *long);
        }
        assert_eq!(Word::parse("nope"), None);
    }

    #[test]
    fn the_client_port_never_resets_counters() {
        assert!(Allowed::parse("srvr,srst").is_err());
        assert!(Allowed::parse("connection_stat_reset").is_err());
        let all = Allowed::parse("*").expect("*");
        assert!(all.allows(Word::Dump) && !all.allows(Word::Srst) && !all.allows(Word::Crst));
    }
}
