//! Auditing reads across tenants (`--audit-reads cross-tenant`, the default): a read of a
//! tenant's node by a caller outside that tenant — served or refused — is noted here under the
//! replica lock, and every [`FLUSH_EVERY`] the notes go into the audit trail as one replicated
//! entry ([`Command::AuditReads`]). Best effort, by design: reads are not entries, so the notes
//! of a node that dies before its next flush are lost, and past [`MAX_PENDING`] notes between
//! two flushes only their number is kept. One entry per flush, not one per read.

use std::sync::Arc;
use std::time::Duration;

use synod_proto::{ErrorCode, Id, MultiOp, MultiResult, Request, Response};
use synod_raft_store::audit::ReadAccess;
use synod_raft_store::state_machine::lock;
use synod_raft_store::{Command, DataTree, Tenants};

use crate::node::Node;

/// How often noted reads are proposed.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// The most reads noted between two flushes; more are only counted.
pub const MAX_PENDING: usize = 10_000;

/// The reads noted since the last flush.
#[derive(Debug, Default)]
pub struct ReadAudit {
    reads: Vec<ReadAccess>,
    /// Reads past [`MAX_PENDING`] since the last flush.
    dropped: u64,
}

impl ReadAudit {
    /// Notes the reads of `request` (answered `err` / `response`) whose node belongs to a
    /// tenant the caller (identities `auth`, session `session`) is not in. Costs nothing in a
    /// cluster without tenants.
    pub fn note(
        &mut self,
        tree: &DataTree,
        session: i64,
        auth: &[Id],
        request: &Request,
        err: ErrorCode,
        response: &Response,
    ) {
        if tree.tenants().is_empty() {
            return;
        }
        let mut paths: Vec<(&str, ErrorCode)> = Vec::new();
        match request {
            Request::Exists(q) => paths.push((&q.path, err)),
            Request::GetData(q) => paths.push((&q.path, err)),
            Request::GetChildren(q) => paths.push((&q.path, err)),
            Request::GetChildren2(q) => paths.push((&q.path, err)),
            Request::GetAcl(q) => paths.push((&q.path, err)),
            Request::GetAllChildrenNumber(q) => paths.push((&q.path, err)),
            Request::MultiRead(ops) => {
                let results: &[MultiResult] = match response {
                    Response::Multi(r) => r,
                    _ => &[],
                };
                for (i, op) in ops.iter().enumerate() {
                    let code = match results.get(i) {
                        Some(MultiResult::Error(c)) => *c,
                        Some(_) => ErrorCode::Ok,
                        None => err,
                    };
                    if matches!(op, MultiOp::GetData(_) | MultiOp::GetChildren(_)) {
                        paths.push((op.path(), code));
                    }
                }
            }
            _ => return,
        }
        let mut caller: Option<Option<synod_raft_store::tree::Name>> = None;
        for (path, code) in paths {
            // A node's owner is its creator's tenant; a home (made by the declaration) is its
            // tenant's.
            let Some(owner) = tree.node(path).and_then(|n| {
                n.owner.clone().or_else(|| {
                    let name = path.strip_prefix(synod_raft_store::tenants::TENANTS_ROOT)?;
                    let name = name.strip_prefix('/')?;
                    tree.tenants().get(name).map(|_| name.into())
                })
            }) else {
                continue;
            };
            let tenant = caller
                .get_or_insert_with(|| Tenants::owner_of(&tree.tenants().resolve(auth)))
                .clone();
            if tenant.as_deref() == Some(&*owner) {
                continue;
            }
            if self.reads.len() >= MAX_PENDING {
                self.dropped += 1;
                continue;
            }
            self.reads.push(ReadAccess {
                time_ms: crate::clock::now_ms(),
                session,
                identities: auth
                    .iter()
                    .map(|id| format!("{}:{}", id.scheme, id.id))
                    .collect(),
                tenant: tenant.map(|t| t.to_string()),
                owner: owner.to_string(),
                op: request.opcode().name().to_string(),
                path: path.to_string(),
                err: code.as_i32(),
            });
        }
    }

    fn take(&mut self) -> (Vec<ReadAccess>, u64) {
        (
            std::mem::take(&mut self.reads),
            std::mem::take(&mut self.dropped),
        )
    }
}

/// Proposes the noted reads every [`FLUSH_EVERY`] until the node stops (a last flush then).
pub async fn flush_loop(node: Arc<Node>) {
    if node.audit.is_none() || !node.cfg.audit_reads {
        return;
    }
    let mut stopping = node.stopping.subscribe();
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    loop {
        let stop = tokio::select! {
            _ = tick.tick() => false,
            _ = stopping.wait_for(|s| *s) => true,
        };
        let (reads, dropped) = lock(&node.replica).observer.read_audit.take();
        // Before the cluster version has the trail, no tenant exists: nothing to record.
        let trail = crate::upgrade::cluster_has(&node, synod_raft_store::types::AUDIT_SINCE);
        if trail && (!reads.is_empty() || dropped > 0) {
            node.propose(Command::AuditReads {
                time_ms: crate::clock::now_ms(),
                node: node.id,
                reads,
                dropped,
            });
        }
        if stop {
            return;
        }
    }
}
