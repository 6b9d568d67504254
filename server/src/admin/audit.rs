//! The audit trail on the admin port: `GET /audit` queries this node's records (by path prefix,
//! identity, tenant, session and zxid range; JSON, or JSON lines with `format=jsonl` for
//! export), `GET /audit/verify` checks the whole chain against the replicated head. Operator
//! only. Also the retention task that prunes records older than `--audit-retention-days`.
//! The records themselves are made in apply ([`synod_raft_store::audit`]).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use synod_raft_store::audit::{self, AuditHead, AuditStore, ExportedRecord, StoredRecord};
use synod_raft_store::state_machine::lock;

use crate::admin::http::error;
use crate::node::Node;

/// The most records one query returns.
const MAX_LIMIT: usize = 10_000;
/// The most records one query reads while filtering.
const MAX_SCAN: usize = 1_000_000;
/// The JSON-lines answer's header saying from which zxid to go on (absent: the range was read
/// to its end); the JSON answer says it as `next_since`.
const NEXT_HEADER: &str = "x-synod-audit-next";
/// How often the retention task prunes.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Records pruned per round (the rest wait for the next).
const PRUNE_BATCH: usize = 100_000;

/// Query of `GET /audit`.
#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    /// Records of ops on this path or below it.
    path: Option<String>,
    /// Records made by this identity (`scheme:id`, e.g. `x509:nurse`, `org:St Mary`).
    identity: Option<String>,
    /// Records of callers of this tenant.
    tenant: Option<String>,
    /// Records of this session (decimal or `0x` hex).
    session: Option<String>,
    /// From this zxid on (decimal or `0x` hex; default: the first record).
    since: Option<String>,
    /// Up to this zxid.
    until: Option<String>,
    /// At most this many records (default 100, at most 10,000).
    limit: Option<usize>,
    /// `json` (default) or `jsonl` (one record per line, as `synod audit verify --export`
    /// reads it).
    format: Option<String>,
}

fn number(s: &Option<String>, default: i64) -> Result<i64, String> {
    match s.as_deref() {
        None | Some("") => Ok(default),
        Some(v) => match v.strip_prefix("0x") {
            Some(hex) => i64::from_str_radix(hex, 16),
            None => v.parse(),
        }
        .map_err(|_| format!("{v:?} is not a number (decimal or 0x hex)")),
    }
}

/// The node's trail; `None` (answer [`audit_off`]) with `--audit off`.
fn store(node: &Node) -> Option<AuditStore> {
    node.audit.clone()
}

fn audit_off() -> Response {
    error(StatusCode::NOT_FOUND, "this node runs with --audit off")
}

/// `GET /audit`. A batch of audited reads (`Reads`) matches the filters if one of its reads
/// does (`tenant` matches the reader's tenant or the owner's).
pub async fn query(State(node): State<Arc<Node>>, Query(q): Query<AuditQuery>) -> Response {
    let Some(store) = store(&node) else {
        return audit_off();
    };
    let (since, until, session) = match (
        number(&q.since, 0),
        number(&q.until, i64::MAX),
        q.session
            .as_ref()
            .map(|_| number(&q.session, 0))
            .transpose(),
    ) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            return error(StatusCode::BAD_REQUEST, e)
        }
    };
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_LIMIT);
    let keep = move |r: &StoredRecord| {
        let rec = &r.record;
        if let audit::AuditAction::Reads { reads, .. } = &rec.action {
            // A batch of reads matches if one of its reads does.
            return reads.iter().any(|a| {
                q.identity
                    .as_ref()
                    .is_none_or(|i| a.identities.iter().any(|x| x == i))
                    && q.tenant
                        .as_ref()
                        .is_none_or(|t| a.tenant.as_ref() == Some(t) || &a.owner == t)
                    && session.is_none_or(|s| a.session == s)
                    && q.path.as_ref().is_none_or(|p| under(&a.path, p))
            });
        }
        q.identity
            .as_ref()
            .is_none_or(|i| rec.identities.iter().any(|x| x == i))
            && q.tenant
                .as_ref()
                .is_none_or(|t| rec.tenant.as_ref() == Some(t))
            && session.is_none_or(|s| rec.session == s)
            && q.path.as_ref().is_none_or(|p| touches(rec, p))
    };
    let jsonl = q.format.as_deref() == Some("jsonl");
    let found = tokio::task::spawn_blocking(move || {
        let (records, next) = store.scan(since, until, limit, MAX_SCAN, keep)?;
        Ok::<_, synod_raft_store::error::StoreError>((records, next, store.anchors()?))
    })
    .await;
    let (records, next, anchors) = match found {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let exported: Vec<ExportedRecord> = records.iter().map(ExportedRecord::from).collect();
    if jsonl {
        let mut body = String::new();
        for a in &anchors {
            body.push_str(
                &json!({"anchor_zxid": a.zxid, "anchor_hash": audit::hex(&a.hash)}).to_string(),
            );
            body.push('\n');
        }
        for r in &exported {
            body.push_str(&serde_json::to_string(r).unwrap_or_default());
            body.push('\n');
        }
        let mut response = ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response();
        if let Some(next) = next {
            if let Ok(v) = header::HeaderValue::from_str(&next.to_string()) {
                response.headers_mut().insert(NEXT_HEADER, v);
            }
        }
        return response;
    }
    let head = *lock(&node.replica).tree.audit_head();
    Json(json!({
        "records": exported,
        "next_since": next,
        "head": head_view(&head),
        "anchors": anchors.iter().map(|a| json!({"zxid": a.zxid, "hash": audit::hex(&a.hash)})).collect::<Vec<_>>(),
    }))
    .into_response()
}

/// Whether `path` is `prefix` or below it.
fn under(path: &str, prefix: &str) -> bool {
    path == prefix
        || (path.starts_with(prefix)
            && (prefix.ends_with('/') || path[prefix.len()..].starts_with('/')))
}

/// Whether one of the record's ops is on `prefix` or below it.
fn touches(rec: &audit::AuditRecord, prefix: &str) -> bool {
    match &rec.action {
        audit::AuditAction::Write { ops, .. } => ops.iter().any(|o| under(&o.path, prefix)),
        audit::AuditAction::Reaped { paths } => paths.iter().any(|p| under(p, prefix)),
        audit::AuditAction::Reads { reads, .. } => reads.iter().any(|a| under(&a.path, prefix)),
        _ => false,
    }
}

fn head_view(h: &AuditHead) -> serde_json::Value {
    json!({"count": h.count, "zxid": h.zxid, "hash": audit::hex(&h.hash)})
}

/// `GET /audit/verify`: checks this node's whole trail against the replicated head.
pub async fn verify(State(node): State<Arc<Node>>) -> Response {
    let Some(store) = store(&node) else {
        return audit_off();
    };
    let (head, index) = {
        let r = lock(&node.replica);
        (*r.tree.audit_head(), r.applied_index())
    };
    // The records of the entries up to `index` are written before `index` is published.
    let mut applied = node.applied.clone();
    let _ = tokio::time::timeout(Duration::from_secs(5), applied.wait_for(|a| *a >= index)).await;
    let result = tokio::task::spawn_blocking(move || {
        let anchors = store.anchors()?;
        audit::verify(store.all(), &anchors, Some(&head))
    })
    .await;
    match result {
        Ok(Ok(v)) => Json(json!({
            "ok": true,
            "records": v.records,
            "first_zxid": v.first,
            "last_zxid": v.last,
            "stretches": v.stretches,
            "head": head_view(&head),
            "head_matched": v.head_matched,
        }))
        .into_response(),
        Ok(Err(e)) => (
            StatusCode::CONFLICT,
            Json(json!({"ok": false, "error": e.to_string(), "head": head_view(&head)})),
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Prunes records older than `--audit-retention-days`, every [`PRUNE_EVERY`], until the node
/// stops. Each replica prunes its own copy; the replicated head is not affected.
pub async fn retention_loop(node: Arc<Node>) {
    let (Some(store), Some(keep)) = (node.audit.clone(), node.cfg.audit_retention) else {
        return;
    };
    let mut stopping = node.stopping.subscribe();
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        let cutoff = crate::clock::now_ms().saturating_sub(keep.as_millis() as i64);
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.prune(cutoff, PRUNE_BATCH)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(
                records = n,
                cutoff_ms = cutoff,
                "audit: pruned records past retention"
            ),
            Ok(Err(e)) => tracing::warn!(%e, "audit: pruning failed"),
            Err(e) => tracing::warn!(%e, "audit: pruning task failed"),
        }
    }
}
