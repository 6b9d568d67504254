//! Two-phase commit across participants that share nothing but the tree ([`Coordinator`],
//! [`Participant`]).
//!
//! # Layout
//!
//! ```text
//! root/<txid>               header: deadline, participants, coordinator, then the payload
//! root/<txid>/vote-<name>   one per participant: "pending" (v0) → "commit"|"abort" (v1)
//!                                                 → "applied:commit"|"applied:abort" (v2)
//! root/<txid>/decision      "commit" | "abort\n<reason>"; created once, never changed
//! ```
//!
//! # State machine
//!
//! ```text
//!  begin: one multi creates the header and every vote node ("pending")
//!    │
//!    ▼
//!  VOTING ── a participant writes its vote once: set_data(vote-p, v, version 0)
//!    │
//!    ├─ some vote is "abort" ─────────────────────▶ create decision = abort
//!    ├─ deadline passed, a vote still pending ─────▶ create decision = abort
//!    └─ every vote "commit" ──▶ multi[check(vote-p, 1) for every p, create decision = commit]
//!    ▼
//!  DECIDED ── participants learn it by a watch on `decision`, apply it, then
//!    │        set_data(vote-p, "applied:<outcome>", version 1)
//!    ▼
//!  DONE (every vote node applied; the nodes stay as the record of the transaction)
//! ```
//!
//! # Invariants
//!
//! 1. **One outcome.** The decision is the creation of one znode: a second create fails with
//!    `NodeExists`, whoever tries it, so a transaction never has two outcomes.
//! 2. **Commit needs every yes.** A commit is written in the same multi that checks every vote
//!    node at version 1 (its single vote) after reading "commit" in each: no vote can change
//!    between the read and the decision.
//! 3. **Votes are final.** A vote is written once (conditioned on version 0); after the decision a
//!    vote node only moves to `"applied:<the decision>"`.
//! 4. **Anyone can finish.** [`Coordinator::try_decide`] is a pure function of the tree and the
//!    clock (for the deadline), so a new coordinator (the next elected one, see
//!    [`super::election`]) finishes every open transaction from the tree alone, reaching the
//!    decision already written if there is one, never a different one. A coordinator crash at any
//!    point is therefore harmless: before votes, after some, after the decision, after some
//!    participants applied it.
//! 5. **No blocking forever.** A transaction whose votes do not all arrive before its deadline
//!    aborts. Participants waiting for a decision resolve the transaction themselves once the
//!    deadline plus a grace period has passed, so while a majority of the cluster is up every
//!    transaction ends even if no coordinator ever comes back.
//!
//! Clocks: the deadline is compared with the local wall clock of whoever resolves. Skew only moves
//! *when* an abort happens, never whether two outcomes are possible (invariant 1).
//!
//! # Who may act ([`Coordinator::begin_guarded`])
//!
//! A transaction begun with its parties' identities ([`Party`], and the coordinator's own,
//! [`Coordinator::identity`]) records them in its header (`identities=`) and creates:
//!
//! ```text
//! root/<txid>               coordinator: read, write, create, admin; each party: read, create
//! root/<txid>/vote-<name>   that party: read, write; the coordinator and the others: read
//! root/<txid>/decision      the coordinator and every party: read (nobody may change it)
//! ```
//!
//! Observers ([`Coordinator::observers`]: an auditor, the workflow's orchestrator) may read all
//! three and nothing more.
//!
//! So an identity that is not a party can neither read the transaction nor vote nor decide; a
//! party can write only its own vote; nobody can delete a vote or the decision (no one has
//! DELETE on the transaction node), nor change the decision once written. A party may still
//! create the decision itself — the protocol needs that after the deadline (invariant 5) — so
//! the parties trust each other to run this recipe, and nobody else is trusted at all.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::future::select_all;
use tokio::time::Instant;

use super::{ensure_path, grant, retry, text};
use crate::{perms, Acl, Client, CreateMode, Error, EventType, Id, OneshotWatch, Op, Result};
use synod_proto::path::child as child_path;

/// Name of the decision node.
const DECISION: &str = "decision";
/// Prefix of vote node names.
const VOTE_PREFIX: &str = "vote-";
/// How long a waiting participant lets a coordinator act after the deadline before it resolves
/// the transaction itself.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(2);
/// Longest single wait between two looks at the tree (a safety net beside the watches).
const RECHECK: Duration = Duration::from_secs(1);

/// A participant's vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vote {
    /// Ready to commit.
    Commit,
    /// Refuses.
    Abort,
}

/// The decision of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every participant voted commit in time.
    Commit,
    /// A participant voted abort, or the deadline passed first.
    Abort,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Commit => "commit",
            Outcome::Abort => "abort",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one participant stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteState {
    /// Not voted yet.
    Pending,
    /// Voted, decision not applied yet.
    Voted(Vote),
    /// Applied the decision.
    Applied(Outcome),
}

/// What a transaction proposes (its header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// The transaction id (its node name).
    pub txid: String,
    /// Participant names, in the order given to `begin`.
    pub participants: Vec<String>,
    /// When votes stop counting (milliseconds since the Unix epoch).
    pub deadline_ms: u64,
    /// Who began it.
    pub coordinator: String,
    /// What is being decided.
    pub payload: Bytes,
    /// For a guarded transaction: the coordinator's identity, then each participant's, in the
    /// order of `participants` (empty when unguarded).
    pub identities: Vec<Id>,
    /// For a guarded transaction: identities that may read it and do nothing else (an
    /// auditor, the workflow's orchestrator; [`Coordinator::observers`]).
    pub observers: Vec<Id>,
}

/// A participant of a guarded transaction: its name there, and the identity it authenticates
/// as (e.g. `x509:<its certificate's CN>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    /// Its name in the transaction (a valid node name).
    pub name: String,
    /// The identity its session has.
    pub id: Id,
}

impl Party {
    /// Participant `name`, authenticated as `scheme:id`.
    pub fn new(name: &str, scheme: &str, id: &str) -> Party {
        Party {
            name: name.to_string(),
            id: Id {
                scheme: scheme.to_string(),
                id: id.to_string(),
            },
        }
    }
}

/// The ACL of the decision node: readable by the coordinator and every party, changeable by
/// none; the client's default for an unguarded transaction.
fn decision_acl(p: &Proposal) -> Vec<Acl> {
    let mut acl = grant(&p.identities, perms::READ);
    acl.extend(grant(&p.observers, perms::READ));
    acl
}

/// A create with `acl`, or with the client's default ACL if it is empty (an unguarded
/// transaction).
fn create_op(path: &str, data: impl Into<Bytes>, acl: &[Acl], mode: CreateMode) -> Op {
    if acl.is_empty() {
        Op::create(path, data, mode)
    } else {
        Op::create_with_acl(path, data, acl, mode)
    }
}

/// `ids` as a header value: `scheme:id,scheme:id,...`.
fn ids_text(ids: &[Id]) -> String {
    ids.iter()
        .map(|i| format!("{}:{}", i.scheme, i.id))
        .collect::<Vec<_>>()
        .join(",")
}

/// The identities of a header value written by [`ids_text`]; `None` if one is malformed.
fn parse_ids(v: &str) -> Option<Vec<Id>> {
    v.split(',')
        .map(|i| {
            i.split_once(':').map(|(scheme, id)| Id {
                scheme: scheme.to_string(),
                id: id.to_string(),
            })
        })
        .collect()
}

/// Everything the tree says about a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxStatus {
    /// The header.
    pub proposal: Proposal,
    /// Each participant's state.
    pub votes: BTreeMap<String, VoteState>,
    /// The decision and its reason, once written.
    pub decision: Option<(Outcome, String)>,
}

impl TxStatus {
    /// True once decided and every participant has applied the decision.
    pub fn is_done(&self) -> bool {
        self.decision.is_some()
            && self
                .votes
                .values()
                .all(|v| matches!(v, VoteState::Applied(_)))
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn encode_header(
    participants: &[String],
    deadline_ms: u64,
    coordinator: &str,
    guard: &Guarded,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = format!(
        "deadline={deadline_ms}\nparticipants={}\ncoordinator={coordinator}\n",
        participants.join(",")
    );
    if !guard.identities.is_empty() {
        out.push_str(&format!("identities={}\n", ids_text(&guard.identities)));
    }
    if !guard.observers.is_empty() {
        out.push_str(&format!("observers={}\n", ids_text(&guard.observers)));
    }
    out.push('\n');
    let mut out = out.into_bytes();
    out.extend_from_slice(payload);
    out
}

fn decode_header(txid: &str, data: &Bytes) -> Result<Proposal> {
    let bad = || Error::Recipe(format!("transaction {txid} has a malformed header"));
    let split = data.windows(2).position(|w| w == b"\n\n").ok_or_else(bad)?;
    let head = std::str::from_utf8(&data[..split]).map_err(|_| bad())?;
    let mut p = Proposal {
        txid: txid.to_string(),
        participants: Vec::new(),
        deadline_ms: 0,
        coordinator: String::new(),
        payload: data.slice(split + 2..),
        identities: Vec::new(),
        observers: Vec::new(),
    };
    for line in head.lines() {
        match line.split_once('=') {
            Some(("deadline", v)) => p.deadline_ms = v.parse().map_err(|_| bad())?,
            Some(("participants", v)) => {
                p.participants = v
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            }
            Some(("coordinator", v)) => p.coordinator = v.to_string(),
            Some(("identities", v)) => p.identities = parse_ids(v).ok_or_else(bad)?,
            Some(("observers", v)) => p.observers = parse_ids(v).ok_or_else(bad)?,
            _ => return Err(bad()),
        }
    }
    if p.participants.is_empty()
        || !(p.identities.is_empty() || p.identities.len() == p.participants.len() + 1)
    {
        return Err(bad());
    }
    Ok(p)
}

fn decode_vote(data: &Bytes) -> Option<VoteState> {
    Some(match &data[..] {
        b"pending" => VoteState::Pending,
        b"commit" => VoteState::Voted(Vote::Commit),
        b"abort" => VoteState::Voted(Vote::Abort),
        b"applied:commit" => VoteState::Applied(Outcome::Commit),
        b"applied:abort" => VoteState::Applied(Outcome::Abort),
        _ => return None,
    })
}

fn decode_decision(data: &Bytes) -> Option<(Outcome, String)> {
    let s = text(data);
    let (word, reason) = s.split_once('\n').unwrap_or((&s, ""));
    let outcome = match word {
        "commit" => Outcome::Commit,
        "abort" => Outcome::Abort,
        _ => return None,
    };
    Some((outcome, reason.to_string()))
}

/// Reads the decision of `tx_path`, if written.
async fn read_decision(client: &Client, tx_path: &str) -> Result<Option<(Outcome, String)>> {
    let path = child_path(tx_path, DECISION);
    let got = retry::RetryPolicy::default()
        .run(client, || client.get_data(&path))
        .await;
    match got {
        Ok((data, _)) => decode_decision(&data)
            .map(Some)
            .ok_or_else(|| Error::Recipe(format!("{path} holds no valid decision"))),
        Err(Error::NoNode) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads a transaction's whole state, with every vote node's version.
async fn read_status(
    client: &Client,
    root: &str,
    txid: &str,
) -> Result<(TxStatus, BTreeMap<String, i32>)> {
    let tx_path = child_path(root, txid);
    let policy = retry::RetryPolicy::default();
    let (header, _) = policy.run(client, || client.get_data(&tx_path)).await?;
    let proposal = decode_header(txid, &header)?;
    let mut votes = BTreeMap::new();
    let mut versions = BTreeMap::new();
    for p in &proposal.participants {
        let path = child_path(&tx_path, &format!("{VOTE_PREFIX}{p}"));
        let (data, stat) = policy.run(client, || client.get_data(&path)).await?;
        let state = decode_vote(&data)
            .ok_or_else(|| Error::Recipe(format!("{path} holds no valid vote")))?;
        votes.insert(p.clone(), state);
        versions.insert(p.clone(), stat.version);
    }
    let decision = read_decision(client, &tx_path).await?;
    Ok((
        TxStatus {
            proposal,
            votes,
            decision,
        },
        versions,
    ))
}

/// The state of transaction `txid` under `root`.
pub async fn status(client: &Client, root: &str, txid: &str) -> Result<TxStatus> {
    Ok(read_status(client, root, txid).await?.0)
}

/// One resolution pass (see the module invariants): the decision if there is or can now be one.
pub async fn try_decide(client: &Client, root: &str, txid: &str) -> Result<Option<Outcome>> {
    let tx_path = child_path(root, txid);
    let decision_path = child_path(&tx_path, DECISION);
    let policy = retry::RetryPolicy::default();
    let mut attempt = 0;
    loop {
        let (st, versions) = read_status(client, root, txid).await?;
        if let Some((o, _)) = st.decision {
            return Ok(Some(o));
        }
        let abort_voter = st
            .votes
            .iter()
            .find(|(_, v)| **v == VoteState::Voted(Vote::Abort))
            .map(|(p, _)| p.clone());
        let all_commit = st
            .votes
            .values()
            .all(|v| *v == VoteState::Voted(Vote::Commit));
        let acl = decision_acl(&st.proposal);
        let ops = if let Some(p) = abort_voter {
            vec![create_op(
                &decision_path,
                format!("abort\n{p} voted abort").into_bytes(),
                &acl,
                CreateMode::Persistent,
            )]
        } else if all_commit {
            let mut ops: Vec<Op> = versions
                .iter()
                .map(|(p, v)| Op::check(&child_path(&tx_path, &format!("{VOTE_PREFIX}{p}")), *v))
                .collect();
            ops.push(create_op(
                &decision_path,
                &b"commit"[..],
                &acl,
                CreateMode::Persistent,
            ));
            ops
        } else if now_ms() >= st.proposal.deadline_ms {
            let missing: Vec<&str> = st
                .votes
                .iter()
                .filter(|(_, v)| **v == VoteState::Pending)
                .map(|(p, _)| p.as_str())
                .collect();
            vec![create_op(
                &decision_path,
                format!(
                    "abort\ndeadline passed without a vote from {}",
                    missing.join(", ")
                )
                .into_bytes(),
                &acl,
                CreateMode::Persistent,
            )]
        } else {
            return Ok(None);
        };
        match client.multi(ops).await {
            Ok(_) => {}
            // Someone decided first, or a vote moved: look again (the decision wins).
            Err(Error::Multi { .. }) => {}
            Err(e) if retry::is_retryable(&e) => {
                attempt += 1;
                policy.backoff(client, attempt, e).await?;
            }
            Err(e) => return Err(e),
        }
        if let Some((o, _)) = read_decision(client, &tx_path).await? {
            return Ok(Some(o));
        }
    }
}

/// Waits until a watch fires, `until` passes, or [`RECHECK`] elapses; fails if the session ended.
async fn wait_any(client: &Client, watches: Vec<OneshotWatch>, until: Instant) -> Result<()> {
    let until = until.min(Instant::now() + RECHECK);
    if watches.is_empty() {
        tokio::time::sleep_until(until).await;
        return Ok(());
    }
    match tokio::time::timeout_at(until, select_all(watches)).await {
        Ok((ev, _, _)) if ev.event_type == EventType::None => {
            Err(retry::terminal_error(client.state()))
        }
        _ => Ok(()),
    }
}

/// The coordinator side: begins transactions and drives them to a decision.
#[derive(Debug, Clone)]
pub struct Coordinator {
    /// The coordinator's session.
    client: Client,
    /// Where transactions live.
    root: String,
    /// Recorded in the headers it writes.
    id: String,
    /// The identity its session has, for guarded transactions ([`Coordinator::identity`]).
    identity: Option<Id>,
    /// Who may read its guarded transactions besides their parties ([`Coordinator::observers`]).
    observers: Vec<Id>,
}

/// The identities a guarded transaction's ACLs name (both empty: unguarded).
#[derive(Debug, Default)]
struct Guarded {
    /// The coordinator's, then each participant's in order.
    identities: Vec<Id>,
    /// Readers that take no part.
    observers: Vec<Id>,
}

impl Coordinator {
    /// A coordinator named `id` for the transactions under `root`.
    pub fn new(client: &Client, root: &str, id: &str) -> Coordinator {
        Coordinator {
            client: client.clone(),
            root: root.to_string(),
            id: id.to_string(),
            identity: None,
            observers: Vec::new(),
        }
    }

    /// Identities that may read the guarded transactions this coordinator begins (their
    /// header, votes and decision) and do nothing else.
    pub fn observers(mut self, ids: &[Id]) -> Coordinator {
        self.observers = ids.to_vec();
        self
    }

    /// The identity the coordinator's session has (e.g. `x509:<its CN>`): what a guarded
    /// transaction lets it do ([`Coordinator::begin_guarded`]).
    pub fn identity(mut self, id: Id) -> Coordinator {
        self.identity = Some(id);
        self
    }

    /// Creates transaction `txid` for `participants` (valid node names) with `payload`, votes
    /// counting until `deadline`. Atomic (one multi). Repeating a `begin` that already happened
    /// (e.g. after a connection loss) succeeds; a different transaction with that id fails with
    /// `NodeExists`.
    pub async fn begin(
        &self,
        txid: &str,
        participants: &[&str],
        payload: &[u8],
        deadline: SystemTime,
    ) -> Result<Proposal> {
        let names: Vec<String> = participants.iter().map(|p| p.to_string()).collect();
        self.begin_with(txid, &names, Guarded::default(), payload, deadline)
            .await
    }

    /// [`Coordinator::begin`] for parties that must not trust anyone else: the transaction's
    /// nodes get the ACLs of the module documentation, so that only the coordinator
    /// ([`Coordinator::identity`], required: `BadArguments` without it) and the `parties` can
    /// see it, each party can write only its own vote, and nobody can change the decision.
    pub async fn begin_guarded(
        &self,
        txid: &str,
        parties: &[Party],
        payload: &[u8],
        deadline: SystemTime,
    ) -> Result<Proposal> {
        let coordinator = self.identity.clone().ok_or(Error::BadArguments)?;
        if parties
            .iter()
            .any(|p| p.id.scheme.contains([',', ':']) || p.id.id.contains(','))
        {
            return Err(Error::BadArguments);
        }
        let names: Vec<String> = parties.iter().map(|p| p.name.clone()).collect();
        let mut identities = vec![coordinator];
        identities.extend(parties.iter().map(|p| p.id.clone()));
        let guard = Guarded {
            identities,
            observers: self.observers.clone(),
        };
        self.begin_with(txid, &names, guard, payload, deadline)
            .await
    }

    /// Begins a transaction, guarded by `guard` (unguarded if it is empty: the client's
    /// default ACL).
    async fn begin_with(
        &self,
        txid: &str,
        names: &[String],
        guard: Guarded,
        payload: &[u8],
        deadline: SystemTime,
    ) -> Result<Proposal> {
        if names.is_empty() || names.iter().any(|p| p.contains([',', '/'])) {
            return Err(Error::BadArguments);
        }
        ensure_path(&self.client, &self.root).await?;
        let deadline_ms = deadline
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let header = encode_header(names, deadline_ms, &self.id, &guard, payload);
        let tx_path = child_path(&self.root, txid);
        // Unguarded, every list below is empty: the client's default ACL.
        let (coordinator, parties) = match guard.identities.split_first() {
            Some((c, ps)) => (std::slice::from_ref(c), ps),
            None => (&[][..], &[][..]),
        };
        let observers = grant(&guard.observers, perms::READ);
        let mut tx_acl = grant(
            coordinator,
            perms::READ | perms::WRITE | perms::CREATE | perms::ADMIN,
        );
        tx_acl.extend(grant(parties, perms::READ | perms::CREATE));
        tx_acl.extend(observers.iter().cloned());
        let mut ops = vec![create_op(
            &tx_path,
            header.clone(),
            &tx_acl,
            CreateMode::Persistent,
        )];
        for (i, p) in names.iter().enumerate() {
            let mut vote_acl = grant(coordinator, perms::READ);
            for (j, id) in parties.iter().enumerate() {
                let own = if i == j { perms::WRITE } else { 0 };
                vote_acl.extend(grant(std::slice::from_ref(id), perms::READ | own));
            }
            vote_acl.extend(observers.iter().cloned());
            ops.push(create_op(
                &child_path(&tx_path, &format!("{VOTE_PREFIX}{p}")),
                &b"pending"[..],
                &vote_acl,
                CreateMode::Persistent,
            ));
        }
        let policy = retry::RetryPolicy::default();
        let mut attempt = 0;
        loop {
            match self.client.multi(ops.clone()).await {
                Ok(_) => break,
                Err(Error::Multi {
                    index: 0,
                    code: crate::ErrorCode::NodeExists,
                    ..
                }) => {
                    // Ours from an earlier attempt, or someone else's?
                    let (data, _) = policy
                        .run(&self.client, || self.client.get_data(&tx_path))
                        .await?;
                    if data[..] == header[..] {
                        break;
                    }
                    return Err(Error::NodeExists);
                }
                Err(e) if retry::is_retryable(&e) => {
                    attempt += 1;
                    policy.backoff(&self.client, attempt, e).await?;
                }
                Err(e) => return Err(e),
            }
        }
        decode_header(txid, &Bytes::from(header))
    }

    /// One resolution pass over `txid`; see [`try_decide`].
    pub async fn try_decide(&self, txid: &str) -> Result<Option<Outcome>> {
        try_decide(&self.client, &self.root, txid).await
    }

    /// Drives `txid` to its decision: waits for votes (by watch) until all are in or the deadline
    /// passes, then decides. `WaitTimeout` if `max_wait` passes first (the transaction stays open
    /// and anyone can finish it later).
    pub async fn drive(&self, txid: &str, max_wait: Duration) -> Result<Outcome> {
        let until = Instant::now() + max_wait;
        let tx_path = child_path(&self.root, txid);
        loop {
            if let Some(o) = self.try_decide(txid).await? {
                return Ok(o);
            }
            if Instant::now() >= until {
                return Err(Error::WaitTimeout(format!("a decision on {txid}")));
            }
            let (st, _) = read_status(&self.client, &self.root, txid).await?;
            let mut watches = Vec::new();
            for (p, v) in &st.votes {
                if *v == VoteState::Pending {
                    let path = child_path(&tx_path, &format!("{VOTE_PREFIX}{p}"));
                    let (_, _, w) = retry::RetryPolicy::default()
                        .run(&self.client, || self.client.get_data_watch(&path))
                        .await?;
                    watches.push(w);
                }
            }
            let deadline = Instant::now()
                + Duration::from_millis(st.proposal.deadline_ms.saturating_sub(now_ms()));
            wait_any(&self.client, watches, deadline.min(until)).await?;
        }
    }

    /// Transactions under `root` without a decision.
    pub async fn open_transactions(&self) -> Result<Vec<String>> {
        let mut open = Vec::new();
        let children = match self.client.get_children(&self.root).await {
            Ok(c) => c,
            Err(Error::NoNode) => return Ok(open),
            Err(e) => return Err(e),
        };
        for txid in children {
            let decided = read_decision(&self.client, &child_path(&self.root, &txid)).await?;
            if decided.is_none() {
                open.push(txid);
            }
        }
        open.sort();
        Ok(open)
    }

    /// Finishes every open transaction (what a newly elected coordinator does first).
    pub async fn recover(&self, max_wait: Duration) -> Result<Vec<(String, Outcome)>> {
        let mut done = Vec::new();
        for txid in self.open_transactions().await? {
            let o = self.drive(&txid, max_wait).await?;
            done.push((txid, o));
        }
        Ok(done)
    }

    /// The state of `txid`.
    pub async fn status(&self, txid: &str) -> Result<TxStatus> {
        status(&self.client, &self.root, txid).await
    }
}

/// The participant side: votes, learns the decision, acknowledges it.
#[derive(Debug, Clone)]
pub struct Participant {
    /// The participant's session.
    client: Client,
    /// Where transactions live.
    root: String,
    /// Its name (as listed in transactions).
    name: String,
    /// How long after a deadline it waits for a coordinator before resolving itself.
    grace: Duration,
}

impl Participant {
    /// Participant `name` of the transactions under `root`.
    pub fn new(client: &Client, root: &str, name: &str) -> Participant {
        Participant {
            client: client.clone(),
            root: root.to_string(),
            name: name.to_string(),
            grace: DEFAULT_GRACE,
        }
    }

    /// Sets the grace period after a deadline (see [`DEFAULT_GRACE`]).
    pub fn with_grace(mut self, grace: Duration) -> Participant {
        self.grace = grace;
        self
    }

    fn vote_path(&self, txid: &str) -> String {
        child_path(
            &child_path(&self.root, txid),
            &format!("{VOTE_PREFIX}{}", self.name),
        )
    }

    /// The proposal of `txid`.
    pub async fn proposal(&self, txid: &str) -> Result<Proposal> {
        let path = child_path(&self.root, txid);
        let (data, _) = retry::RetryPolicy::default()
            .run(&self.client, || self.client.get_data(&path))
            .await?;
        decode_header(txid, &data)
    }

    /// Transactions that wait for this participant's vote, oldest name first.
    pub async fn pending(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let children = match self.client.get_children(&self.root).await {
            Ok(c) => c,
            Err(Error::NoNode) => return Ok(out),
            Err(e) => return Err(e),
        };
        for txid in children {
            match self.client.get_data(&self.vote_path(&txid)).await {
                Ok((data, _)) if decode_vote(&data) == Some(VoteState::Pending) => out.push(txid),
                Ok(_) | Err(Error::NoNode) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort();
        Ok(out)
    }

    /// Waits (at most `timeout`) until some transaction waits for this participant's vote.
    pub async fn wait_for_proposal(&self, timeout: Duration) -> Result<String> {
        let until = Instant::now() + timeout;
        ensure_path(&self.client, &self.root).await?;
        loop {
            let (_, _, watch) = retry::RetryPolicy::default()
                .run(&self.client, || self.client.get_children_watch(&self.root))
                .await?;
            if let Some(txid) = self.pending().await?.into_iter().next() {
                return Ok(txid);
            }
            if Instant::now() >= until {
                return Err(Error::WaitTimeout(format!("a proposal for {}", self.name)));
            }
            wait_any(&self.client, vec![watch], until).await?;
        }
    }

    /// Votes on `txid`, once. Repeating the same vote (e.g. after a connection loss) succeeds;
    /// changing it fails with a `Recipe` error.
    pub async fn vote(&self, txid: &str, vote: Vote) -> Result<()> {
        let path = self.vote_path(txid);
        let word: &[u8] = match vote {
            Vote::Commit => b"commit",
            Vote::Abort => b"abort",
        };
        let policy = retry::RetryPolicy::default();
        let mut attempt = 0;
        loop {
            match self.client.set_data(&path, word, Some(0)).await {
                Ok(_) => return Ok(()),
                Err(Error::BadVersion) => {
                    let (data, _) = policy
                        .run(&self.client, || self.client.get_data(&path))
                        .await?;
                    return match decode_vote(&data) {
                        Some(VoteState::Voted(v)) if v == vote => Ok(()),
                        other => Err(Error::Recipe(format!(
                            "{} already voted on {txid}: {other:?}",
                            self.name
                        ))),
                    };
                }
                Err(e) if retry::is_retryable(&e) => {
                    attempt += 1;
                    policy.backoff(&self.client, attempt, e).await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits for the decision on `txid` (by watch). After the deadline plus the grace period it
    /// resolves the transaction itself, so it returns while a majority of the cluster is up even
    /// if no coordinator does. `WaitTimeout` only if `timeout` is shorter than that.
    pub async fn await_decision(&self, txid: &str, timeout: Duration) -> Result<Outcome> {
        let until = Instant::now() + timeout;
        let tx_path = child_path(&self.root, txid);
        let decision_path = child_path(&tx_path, DECISION);
        let deadline_ms = self.proposal(txid).await?.deadline_ms;
        loop {
            let (stat, watch) = retry::RetryPolicy::default()
                .run(&self.client, || self.client.exists_watch(&decision_path))
                .await?;
            if stat.is_some() {
                if let Some((o, _)) = read_decision(&self.client, &tx_path).await? {
                    return Ok(o);
                }
            }
            let give_up_on_coordinator = deadline_ms + self.grace.as_millis() as u64;
            if now_ms() >= give_up_on_coordinator {
                if let Some(o) = try_decide(&self.client, &self.root, txid).await? {
                    return Ok(o);
                }
            }
            if Instant::now() >= until {
                return Err(Error::WaitTimeout(format!("the decision on {txid}")));
            }
            let wake = Instant::now()
                + Duration::from_millis(give_up_on_coordinator.saturating_sub(now_ms()));
            wait_any(&self.client, vec![watch], wake.min(until)).await?;
        }
    }

    /// Records that this participant applied `outcome` (which must be the decision).
    pub async fn ack(&self, txid: &str, outcome: Outcome) -> Result<()> {
        let decided = read_decision(&self.client, &child_path(&self.root, txid)).await?;
        if decided.map(|(o, _)| o) != Some(outcome) {
            return Err(Error::Recipe(format!(
                "{txid} is not decided {outcome}; refusing to record it as applied"
            )));
        }
        let path = self.vote_path(txid);
        let word = format!("applied:{outcome}");
        let policy = retry::RetryPolicy::default();
        policy
            .run(&self.client, || async {
                let (data, stat) = self.client.get_data(&path).await?;
                match decode_vote(&data) {
                    Some(VoteState::Applied(_)) => Ok(()),
                    _ => match self
                        .client
                        .set_data(&path, word.as_bytes(), Some(stat.version))
                        .await
                    {
                        Ok(_) => Ok(()),
                        // Changed under us (our own retried write): look again.
                        Err(Error::BadVersion) => Err(Error::ConnectionLoss),
                        Err(e) => Err(e),
                    },
                }
            })
            .await
    }
}
