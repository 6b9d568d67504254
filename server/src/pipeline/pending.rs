//! The requests this node proposed that wait for their entry to be applied here: a connection
//! registers a waiter before proposing, apply completes it — only once the whole entry is
//! applied, so a reply never overtakes an event of the same entry — and a failed proposal or
//! forward fails it (the outcome is then unknown: the connection closes).

use std::collections::HashMap;

use synod_proto::{ErrorCode, Response};
use synod_raft_store::Origin;
use tokio::sync::oneshot;

/// How a proposed command ended, as seen by the connection that waits for it.
#[derive(Debug)]
pub enum Completion {
    /// CreateSession applied: the new session's id.
    Session { session_id: i64 },
    /// A write (or CloseSession) applied at `zxid` with this result.
    Write {
        zxid: i64,
        err: ErrorCode,
        response: Response,
    },
    /// A session was refused (`QuotaExceeded`: its tenant's session quota is used up).
    SessionRefused { err: ErrorCode },
    /// A tenant change applied at `zxid`, or refused (and changed nothing) for this reason.
    Tenant { zxid: i64, refused: Option<String> },
    /// The command's fate is unknown (leader lost, forward failed): the connection must close.
    Failed(String),
}

/// See the module documentation.
pub struct Pending {
    /// This node's id: only commands it proposed have waiters here.
    node_id: synod_raft_store::NodeId,
    /// Waiters by request number (the `request` of the command's [`Origin`]).
    waiting: HashMap<u64, oneshot::Sender<Completion>>,
    /// Completions of the entry being applied, released by [`Pending::entry_applied`].
    deferred: Vec<(oneshot::Sender<Completion>, Completion)>,
}

impl Pending {
    pub fn new(node_id: synod_raft_store::NodeId) -> Self {
        Pending {
            node_id,
            waiting: HashMap::new(),
            deferred: Vec::new(),
        }
    }

    /// Registers a request waiting for its entry.
    pub fn add(&mut self, request: u64, tx: oneshot::Sender<Completion>) {
        self.waiting.insert(request, tx);
    }

    /// Whether `request` still waits for its outcome.
    pub fn is_waiting(&self, request: u64) -> bool {
        self.waiting.contains_key(&request)
    }

    /// Fails a waiting request (its proposal or forward failed); no-op if already completed.
    pub fn fail(&mut self, request: u64, why: String) {
        if let Some(tx) = self.waiting.remove(&request) {
            let _ = tx.send(Completion::Failed(why));
        }
    }

    /// Answers a waiting request now, without an entry (a `reconfig` refused before it was
    /// proposed); no-op if already completed.
    pub fn answer(&mut self, request: u64, c: Completion) {
        if let Some(tx) = self.waiting.remove(&request) {
            let _ = tx.send(c);
        }
    }

    /// The command from `origin` was applied with outcome `c`: its waiter (if this node
    /// proposed it) learns it once the whole entry is applied.
    pub fn complete(&mut self, origin: Option<Origin>, c: Completion) {
        if let Some(o) = origin.filter(|o| o.node == self.node_id) {
            if let Some(tx) = self.waiting.remove(&o.request) {
                self.deferred.push((tx, c));
            }
        }
    }

    /// The entry is applied: release its completions.
    pub fn entry_applied(&mut self) {
        for (tx, c) in self.deferred.drain(..) {
            let _ = tx.send(c);
        }
    }

    /// A snapshot replaced the tree: the entries it covers are never applied here one by one,
    /// so the outcome of every waiting request is unknown to this node.
    pub fn fail_all(&mut self, why: &str) {
        for (_, tx) in self.waiting.drain() {
            let _ = tx.send(Completion::Failed(why.into()));
        }
    }
}
