//! The admin port's inspection handlers, JSON unless said otherwise: `/ready`, `/sessions`,
//! `/watches`, `/tree`, `/digest`, the four-letter words under `/commands/<name>`, and the
//! dashboard's assets (the routes are listed in [`crate::admin::router`]). Every answer is
//! bounded: lists are paged, the tree view is limited in depth, node count and data shown, waits
//! have a timeout. docs/admin-api.md documents each endpoint with an example.

use std::time::{Duration, Instant};

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};
use synod_proto::path::child as child_path;
use synod_raft_store::state_machine::lock;
use synod_raft_store::tree::{digest_hex, NodeKind};

use crate::admin::fourletter::{self, Word};
use crate::node::Node;

/// An error answer: `{"error": "..."}` with a status code.
pub fn error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(json!({ "error": msg.into() }))).into_response()
}

/// Query of `/ready`.
#[derive(Debug, Deserialize)]
pub struct ReadyQuery {
    /// How long to wait for a read index and for applying up to it (default 2000, at most 30000).
    timeout_ms: Option<u64>,
}

/// Default and largest wait of `/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(2);
const READY_TIMEOUT_MAX: Duration = Duration::from_secs(30);

/// `/ready`: 200 when this node knows a leader and has applied everything committed as of a
/// fresh read index (obtained through the node's batched read-index path); 503 with the reason
/// otherwise, within the timeout.
pub async fn ready(node: &Node, q: ReadyQuery) -> Response {
    let timeout = q
        .timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(READY_TIMEOUT)
        .min(READY_TIMEOUT_MAX);
    let started = Instant::now();
    let applied = || *node.applied.borrow();
    let not_ready = |reason: String, read_index: Option<u64>| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "ready": false,
                "reason": reason,
                "node": node.id,
                "leader": node.leader().map(|l| l.0),
                "read_index": read_index,
                "applied_index": applied(),
            })),
        )
            .into_response()
    };
    if let Some(reason) = node.disk.reason() {
        return not_ready(reason, None);
    }
    let Some((leader, _)) = node.leader() else {
        return not_ready("no leader known".into(), None);
    };
    let idx = match tokio::time::timeout(timeout, node.read_index()).await {
        Ok(Ok(i)) => i,
        Ok(Err(e)) => return not_ready(format!("no read index from leader {leader}: {e}"), None),
        Err(_) => {
            return not_ready(
                format!("no read index from leader {leader} within {timeout:?}"),
                None,
            )
        }
    };
    let left = timeout.saturating_sub(started.elapsed());
    if let Err(e) = node.wait_applied(idx, left).await {
        return not_ready(format!("not caught up: {e}"), Some(idx));
    }
    Json(json!({
        "ready": true,
        "node": node.id,
        "leader": leader,
        "read_index": idx,
        "applied_index": applied(),
        "elapsed_ms": started.elapsed().as_millis() as u64,
    }))
    .into_response()
}

/// Paging of list endpoints.
#[derive(Debug, Deserialize)]
pub struct Page {
    /// Entries to return (default 100, at most 1000).
    limit: Option<usize>,
    /// Entries to skip.
    offset: Option<usize>,
    /// `/watches` only: `path` (default) or `session`.
    by: Option<String>,
}

/// Default and largest page.
const PAGE_DEFAULT: usize = 100;
const PAGE_MAX: usize = 1000;
/// Inner lists of `/watches` (paths of one session, sessions of one path) are cut here.
const INNER_MAX: usize = 1000;

impl Page {
    fn bounds(&self) -> (usize, usize) {
        (
            self.offset.unwrap_or(0),
            self.limit.unwrap_or(PAGE_DEFAULT).clamp(1, PAGE_MAX),
        )
    }
}

/// `/sessions`: every live session (replicated), by id, with where it is connected if here.
pub fn sessions(node: &Node, page: &Page) -> Value {
    let (offset, limit) = page.bounds();
    // An O(1) copy under the lock; the listing walks it outside.
    let tree = lock(&node.replica).tree.clone();
    let mut all: Vec<(i64, i32, usize)> = tree
        .sessions()
        .map(|(id, s)| (id, s.timeout_ms, s.ephemerals.len()))
        .collect();
    all.sort_unstable_by_key(|s| s.0);
    let conns = crate::session::registry::snapshots(&node.connections());
    let items: Vec<Value> = all
        .iter()
        .skip(offset)
        .take(limit)
        .map(|(id, timeout, eph)| {
            let here = conns.iter().find(|c| c.session_id == *id);
            json!({
                "id": format!("{id:#x}"),
                "timeout_ms": timeout,
                "ephemerals": eph,
                "owner": here.map(|_| node.id),
                "client": here.map(|c| c.peer.to_string()),
            })
        })
        .collect();
    json!({
        "node": node.id,
        "total": all.len(),
        "offset": offset,
        "limit": limit,
        "sessions": items,
    })
}

/// `/watches`: this node's watches by path (like `wchp`) or by session (like `wchc`).
pub fn watches(node: &Node, page: &Page) -> Response {
    let (offset, limit) = page.bounds();
    let total_watches = lock(&node.replica).observer.watches.count();
    let cut = |v: Vec<String>| {
        let n = v.len();
        (v.into_iter().take(INNER_MAX).collect::<Vec<_>>(), n)
    };
    let (total, items): (usize, Vec<Value>) = match page.by.as_deref().unwrap_or("path") {
        "path" => {
            let all = fourletter::watches_by_path(node);
            let items = all
                .iter()
                .skip(offset)
                .take(limit)
                .map(|(p, sids)| {
                    let (s, n) = cut(sids.iter().map(|s| format!("{s:#x}")).collect());
                    json!({"path": p, "sessions": s, "count": n})
                })
                .collect();
            (all.len(), items)
        }
        "session" => {
            let all = fourletter::watches_by_session(node);
            let items = all
                .iter()
                .skip(offset)
                .take(limit)
                .map(|(sid, paths)| {
                    let (p, n) = cut(paths.clone());
                    json!({"session": format!("{sid:#x}"), "paths": p, "count": n})
                })
                .collect();
            (all.len(), items)
        }
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("by must be `path` or `session`, not {other:?}"),
            )
        }
    };
    Json(json!({
        "node": node.id,
        "by": page.by.as_deref().unwrap_or("path"),
        "total": total,
        "total_watches": total_watches,
        "offset": offset,
        "limit": limit,
        "watches": items,
    }))
    .into_response()
}

/// Query of `/tree`.
#[derive(Debug, Deserialize)]
pub struct TreeQuery {
    /// The subtree's root (default `/`).
    path: Option<String>,
    /// Levels of children to include (default 1, at most 10; 0 = the node alone).
    depth: Option<usize>,
    /// Nodes to include at most (default 1000, at most 10000).
    limit: Option<usize>,
    /// Bytes of each node's data to show (default 4096, at most 1 MiB).
    max_data: Option<usize>,
}

const TREE_DEPTH_MAX: usize = 10;
const TREE_LIMIT_DEFAULT: usize = 1000;
const TREE_LIMIT_MAX: usize = 10_000;
const TREE_DATA_DEFAULT: usize = 4096;
const TREE_DATA_MAX: usize = 1 << 20;

/// Data as UTF-8 when it is valid UTF-8, base64 otherwise.
fn show_data(data: &[u8], max: usize) -> (String, &'static str, bool) {
    let truncated = data.len() > max;
    let mut shown = &data[..data.len().min(max)];
    if let Err(e) = std::str::from_utf8(shown) {
        // A cut through a multi-byte character is still UTF-8 up to the cut.
        if truncated && e.error_len().is_none() {
            shown = &shown[..e.valid_up_to()];
        }
    }
    match std::str::from_utf8(shown) {
        Ok(s) => (s.to_string(), "utf8", truncated),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(shown),
            "base64",
            truncated,
        ),
    }
}

/// `/tree`: a read-only view of a subtree from this node's applied state (breadth-first, so a
/// node limit cuts the deepest levels first).
pub fn tree(node: &Node, q: &TreeQuery) -> Response {
    let path = q.path.clone().unwrap_or_else(|| "/".into());
    if let Err(e) = synod_proto::path::validate_path(&path, false) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("invalid path {path:?}: {e}"),
        );
    }
    let depth = q.depth.unwrap_or(1).min(TREE_DEPTH_MAX);
    let limit = q
        .limit
        .unwrap_or(TREE_LIMIT_DEFAULT)
        .clamp(1, TREE_LIMIT_MAX);
    let max_data = q.max_data.unwrap_or(TREE_DATA_DEFAULT).min(TREE_DATA_MAX);
    let (t, applied) = {
        let r = lock(&node.replica);
        (r.tree.clone(), r.applied_index())
    };
    let Some(_) = t.node(&path) else {
        return error(StatusCode::NOT_FOUND, format!("no node {path}"));
    };
    // Breadth-first: (path, level); each node's JSON is built after its children.
    let mut order: Vec<(String, usize)> = vec![(path.clone(), 0)];
    let mut i = 0;
    let mut truncated = false;
    while i < order.len() {
        let (p, level) = order[i].clone();
        i += 1;
        if level >= depth {
            continue;
        }
        for c in t.children(&p) {
            if order.len() >= limit {
                truncated = true;
                break;
            }
            order.push((child_path(&p, c), level + 1));
        }
    }
    let included: std::collections::HashSet<&str> = order.iter().map(|(p, _)| p.as_str()).collect();
    let mut built: std::collections::HashMap<String, Value> = Default::default();
    for (p, _) in order.iter().rev() {
        let Some(n) = t.node(p) else { continue };
        let (data, encoding, data_truncated) = show_data(n.data(), max_data);
        let stat = n.stat();
        let kind = match n.kind() {
            NodeKind::Persistent => "persistent".to_string(),
            NodeKind::Ephemeral(_) => "ephemeral".to_string(),
            NodeKind::Container => "container".to_string(),
            NodeKind::Ttl(ms) => format!("ttl:{ms}"),
        };
        let mut v = json!({
            "path": p,
            "name": synod_proto::path::basename(p),
            "kind": kind,
            // Null data (ZooKeeper's, kept apart from empty) shows as null.
            "data": if n.null_data() { Value::Null } else { Value::String(data) },
            "data_encoding": encoding,
            "data_truncated": data_truncated,
            "stat": {
                "czxid": stat.czxid,
                "mzxid": stat.mzxid,
                "pzxid": stat.pzxid,
                "ctime": stat.ctime,
                "mtime": stat.mtime,
                "version": stat.version,
                "cversion": stat.cversion,
                "aversion": stat.aversion,
                "ephemeral_owner": format!("{:#x}", stat.ephemeral_owner),
                "data_length": stat.data_length,
                "num_children": stat.num_children,
            },
            "acl": n.acl.iter().map(|a| json!({
                "perms": a.perms, "scheme": a.id.scheme, "id": a.id.id,
            })).collect::<Vec<_>>(),
        });
        let children: Vec<Value> = t
            .children(p)
            .map(|c| child_path(p, c))
            .filter(|c| included.contains(c.as_str()))
            .filter_map(|c| built.remove(&c))
            .collect();
        if !children.is_empty() {
            v["children"] = Value::Array(children);
        }
        built.insert(p.clone(), v);
    }
    let root = built.remove(&path).unwrap_or(Value::Null);
    Json(json!({
        "node": node.id,
        "applied_index": applied,
        "depth": depth,
        "limit": limit,
        "count": order.len(),
        "truncated": truncated,
        "tree": root,
    }))
    .into_response()
}

/// `/digest`: the tree's digest at the applied index it was taken at. The tree is copied (O(1),
/// persistent maps) under the replica lock together with the index, so the pair is consistent;
/// the hashing runs off the lock on a blocking thread.
pub async fn digest(node: &Node) -> Response {
    let (t, applied) = {
        let r = lock(&node.replica);
        (r.tree.clone(), r.applied_index())
    };
    match tokio::task::spawn_blocking(move || (t.digest(), t.node_count())).await {
        Ok((d, znodes)) => Json(json!({
            "applied_index": applied,
            "digest": digest_hex(&d),
            "znodes": znodes,
        }))
        .into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("digest failed: {e}"),
        ),
    }
}

/// Query of `/commands/<name>`.
#[derive(Debug, Deserialize)]
pub struct CommandQuery {
    /// `text` for the raw four-letter-word answer instead of JSON.
    format: Option<String>,
}

pub fn command(node: &Node, name: &str, q: &CommandQuery) -> Response {
    let Some(word) = Word::parse(name) else {
        return error(StatusCode::NOT_FOUND, format!("unknown command {name:?}"));
    };
    match q.format.as_deref() {
        Some("text") => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            fourletter::text(node, word),
        )
            .into_response(),
        None | Some("json") => Json(fourletter::json(node, word)).into_response(),
        Some(other) => error(
            StatusCode::BAD_REQUEST,
            format!("format must be `json` or `text`, not {other:?}"),
        ),
    }
}

pub fn command_list() -> Value {
    let cmds: Vec<Value> = fourletter::WORDS
        .iter()
        .map(|(_, short, long)| json!({"name": long, "alias": short, "url": format!("/commands/{long}")}))
        .collect();
    json!({ "commands": cmds })
}

/// A static asset of the dashboard.
pub fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_shown_as_utf8_or_base64_and_cut() {
        assert_eq!(show_data(b"hello", 10), ("hello".into(), "utf8", false));
        assert_eq!(show_data(b"hello", 2), ("he".into(), "utf8", true));
        assert_eq!(
            show_data(&[0xff, 0x00], 10),
            ("/wA=".into(), "base64", false)
        );
        // "é" is two bytes: cutting through it keeps the valid prefix as text.
        assert_eq!(show_data("aé".as_bytes(), 2), ("a".into(), "utf8", true));
    }
}
