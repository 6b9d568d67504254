//! Reads: evaluates a read or watch request against the applied tree and queues its reply, all
//! under the replica lock (so a watch it leaves can never miss, nor precede, an event of a change
//! the reply reflects). ZooKeeper answers these in its FinalRequestProcessor.

use synod_proto::records::*;
use synod_proto::{
    xid, AddWatchMode, ErrorCode, Id, MultiOp, MultiResult, Request, Response, WatcherType,
};
use synod_raft_store::state_machine::Replica;

use crate::pipeline::apply::Applier;
use crate::pipeline::conn::{reply_frame, Conn};
use crate::pipeline::outbox::ReplyRoom;
use crate::watch::manager::WatchKind;

/// How many watches `request` may register (what a tenant's watch quota counts; a
/// setWatches counts every path it names, so that re-registering cannot grow past the quota).
fn leaves_watch(request: &Request) -> usize {
    match request {
        Request::Exists(q) => usize::from(q.watch),
        Request::GetData(q) => usize::from(q.watch),
        Request::GetChildren(q) => usize::from(q.watch),
        Request::GetChildren2(q) => usize::from(q.watch),
        Request::AddWatch(_) => 1,
        Request::SetWatches(w) => {
            w.data_watches.len() + w.exist_watches.len() + w.child_watches.len()
        }
        Request::SetWatches2(w) => {
            w.data_watches.len()
                + w.exist_watches.len()
                + w.child_watches.len()
                + w.persistent_watches.len()
                + w.persistent_recursive_watches.len()
        }
        _ => 0,
    }
}

/// Charges the connection's watches to its tenant (as the table says now) and says whether
/// `more` watches stay within the tenant's watch quota on this node.
fn may_watch(
    tree: &synod_raft_store::DataTree,
    observer: &mut Applier,
    conn: u64,
    auth: &[Id],
    more: usize,
) -> bool {
    if tree.tenants().is_empty() {
        return true;
    }
    let tenant = synod_raft_store::Tenants::owner_of(&tree.tenants().resolve(auth));
    observer.watches.assign(conn, tenant.clone());
    let limit = tenant
        .as_deref()
        .and_then(|t| tree.tenants().get(t))
        .and_then(|t| t.quota.watches);
    match (tenant, limit) {
        (Some(t), Some(limit)) => (observer.watches.tenant_watches(&t) + more) as u64 <= limit,
        _ => true,
    }
}

impl Conn {
    /// Evaluates a read against the applied tree and queues its reply, under the replica lock.
    /// Returns the reply's error code, or `None` if the connection is ending (the reply could
    /// not be queued).
    pub fn evaluate(
        &self,
        r: &mut Replica<Applier>,
        xid: i32,
        request: Request,
        auth: &[Id],
        room: ReplyRoom<'_>,
    ) -> Option<ErrorCode> {
        let zxid = r.applied_zxid();
        let Replica { tree, observer, .. } = r;
        let conn = self.id;
        let mut xid = xid;
        let watches = leaves_watch(&request);
        if watches > 0 && !may_watch(tree, observer, conn, auth, watches) {
            if matches!(request, Request::SetWatches(_) | Request::SetWatches2(_)) {
                xid = xid::SET_WATCHES;
            }
            let frame = reply_frame(xid, zxid, ErrorCode::QuotaExceeded, Response::Empty);
            return room.send(frame).then_some(ErrorCode::QuotaExceeded);
        }
        // Reads across tenants are audited (`--audit-reads`): the request is kept for that.
        let audited =
            (self.node.cfg.audit_reads && self.node.audit.is_some() && !tree.tenants().is_empty())
                .then(|| request.clone());
        let (err, resp) = match request {
            // A watch is left only where the caller may see the answer: on a missing node, or
            // on one it may READ (ZooKeeper 3.8.4); nothing for a path that is not one.
            Request::Exists(q) if !valid(&q.path) => (ErrorCode::BadArguments, Response::Empty),
            Request::Exists(q) => match tree.exists(&q.path, auth) {
                Ok(stat) => {
                    if q.watch {
                        observer.watches.add(conn, WatchKind::Data, &q.path);
                    }
                    (ErrorCode::Ok, Response::Stat(stat))
                }
                Err(ErrorCode::NoNode) => {
                    if q.watch {
                        observer.watches.add(conn, WatchKind::Data, &q.path);
                    }
                    (ErrorCode::NoNode, Response::Empty)
                }
                Err(e) => (e, Response::Empty),
            },
            Request::GetData(q) => match tree.get_data(&q.path, auth) {
                Ok((data, stat)) => {
                    if q.watch {
                        observer.watches.add(conn, WatchKind::Data, &q.path);
                    }
                    (
                        ErrorCode::Ok,
                        Response::GetData(GetDataResponse { data, stat }),
                    )
                }
                Err(e) => (e, Response::Empty),
            },
            Request::GetChildren(q) => match tree.get_children(&q.path, auth) {
                Ok((children, _)) => {
                    if q.watch {
                        observer.watches.add(conn, WatchKind::Child, &q.path);
                    }
                    (
                        ErrorCode::Ok,
                        Response::GetChildren(GetChildrenResponse { children }),
                    )
                }
                Err(e) => (e, Response::Empty),
            },
            Request::GetChildren2(q) => match tree.get_children(&q.path, auth) {
                Ok((children, stat)) => {
                    if q.watch {
                        observer.watches.add(conn, WatchKind::Child, &q.path);
                    }
                    (
                        ErrorCode::Ok,
                        Response::GetChildren2(GetChildren2Response { children, stat }),
                    )
                }
                Err(e) => (e, Response::Empty),
            },
            Request::GetAcl(q) => match tree.get_acl(&q.path, auth) {
                Ok((acl, stat)) => (
                    ErrorCode::Ok,
                    Response::GetAcl(GetAclResponse { acl, stat }),
                ),
                Err(e) => (e, Response::Empty),
            },
            Request::GetAllChildrenNumber(q) => match tree.all_children_number(&q.path, auth) {
                Ok(n) => (
                    ErrorCode::Ok,
                    Response::GetAllChildrenNumber(GetAllChildrenNumberResponse {
                        total_number: n,
                    }),
                ),
                Err(e) => (e, Response::Empty),
            },
            Request::GetEphemerals(q) => (
                ErrorCode::Ok,
                Response::GetEphemerals(GetEphemeralsResponse {
                    ephemerals: tree.ephemerals(self.session_id, &q.prefix_path),
                }),
            ),
            Request::Sync(q) => (ErrorCode::Ok, Response::Sync(SyncResponse { path: q.path })),
            Request::MultiRead(ops) => {
                let results = ops
                    .into_iter()
                    .map(|op| match op {
                        MultiOp::GetData(q) => match tree.get_data(&q.path, auth) {
                            Ok((data, stat)) => MultiResult::GetData { data, stat },
                            Err(e) => MultiResult::Error(e),
                        },
                        MultiOp::GetChildren(q) => match tree.get_children(&q.path, auth) {
                            Ok((children, _)) => MultiResult::GetChildren { children },
                            Err(e) => MultiResult::Error(e),
                        },
                        _ => MultiResult::Error(ErrorCode::BadArguments),
                    })
                    .collect();
                (ErrorCode::Ok, Response::Multi(results))
            }
            Request::CheckWatches(q) => match WatcherType::from_i32(q.watcher_type) {
                Some(t) if observer.watches.has(conn, &q.path, t) => {
                    (ErrorCode::Ok, Response::Empty)
                }
                Some(_) => (ErrorCode::NoWatcher, Response::Empty),
                None => (ErrorCode::BadArguments, Response::Empty),
            },
            Request::RemoveWatches(q) => match WatcherType::from_i32(q.watcher_type) {
                Some(t) if observer.watches.remove(conn, &q.path, t) => {
                    (ErrorCode::Ok, Response::Empty)
                }
                Some(_) => (ErrorCode::NoWatcher, Response::Empty),
                None => (ErrorCode::BadArguments, Response::Empty),
            },
            Request::AddWatch(q) if !valid(&q.path) => (ErrorCode::BadArguments, Response::Empty),
            Request::AddWatch(q) => match AddWatchMode::from_i32(q.mode) {
                Some(mode) => {
                    let kind = match mode {
                        AddWatchMode::Persistent => WatchKind::Persistent,
                        AddWatchMode::PersistentRecursive => WatchKind::Recursive,
                    };
                    observer.watches.add(conn, kind, &q.path);
                    (ErrorCode::Ok, Response::Error(ErrorResponse { err: 0 }))
                }
                None => (ErrorCode::BadArguments, Response::Empty),
            },
            Request::SetWatches(w) => {
                xid = xid::SET_WATCHES;
                let w = SetWatches2 {
                    relative_zxid: w.relative_zxid,
                    data_watches: w.data_watches,
                    exist_watches: w.exist_watches,
                    child_watches: w.child_watches,
                    ..Default::default()
                };
                if !self.set_watches(tree, observer, w, auth) {
                    return None;
                }
                (ErrorCode::Ok, Response::Empty)
            }
            Request::SetWatches2(w) => {
                xid = xid::SET_WATCHES;
                if !self.set_watches(tree, observer, w, auth) {
                    return None;
                }
                (ErrorCode::Ok, Response::Empty)
            }
            Request::WhoAmI => {
                let client_info = auth
                    .iter()
                    .map(|id| ClientInfo {
                        auth_scheme: id.scheme.clone(),
                        user: id.id.split(':').next().unwrap_or_default().to_string(),
                    })
                    .collect();
                (
                    ErrorCode::Ok,
                    Response::WhoAmI(WhoAmIResponse { client_info }),
                )
            }
            _ => (ErrorCode::Unimplemented, Response::Empty),
        };
        if let Some(req) = audited {
            observer
                .read_audit
                .note(tree, self.session_id, auth, &req, err, &resp);
        }
        room.send(reply_frame(xid, zxid, err, resp)).then_some(err)
    }
}

/// Whether `path` is one ZooKeeper would let a node have: a watch on anything else could
/// never fire, and is refused rather than kept.
fn valid(path: &str) -> bool {
    synod_proto::path::validate_path(path, false).is_ok()
}

/// Reads that must see every write acknowledged before them (linearizable mode).
pub fn is_data_read(r: &Request) -> bool {
    matches!(
        r,
        Request::Exists(_)
            | Request::GetData(_)
            | Request::GetChildren(_)
            | Request::GetChildren2(_)
            | Request::GetAcl(_)
            | Request::GetAllChildrenNumber(_)
            | Request::GetEphemerals(_)
            | Request::MultiRead(_)
            | Request::SetWatches(_)
            | Request::SetWatches2(_)
    )
}
