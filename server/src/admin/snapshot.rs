//! Snapshots on the admin port: `POST /snapshot` triggers one covering everything applied on
//! this node; `GET /snapshot` downloads the current snapshot as a backup (a consistent one,
//! checksummed and without session passwords: [`synod_raft_store::backup`]), restorable with
//! `synod restore`; `HEAD /snapshot` says which snapshot that would be, without making it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use synod_raft_store::state_machine::SNAPSHOT_FILE;

use crate::admin::membership::{ApiError, ApiResult};
use crate::node::Node;

/// Bound on waiting for a triggered snapshot.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(120);

/// `POST /snapshot`'s answer and the metadata of `GET /snapshot`.
#[derive(Debug, Serialize)]
pub struct SnapshotInfo {
    /// Last log index (zxid) the snapshot covers.
    last_log_index: u64,
    /// Term of that entry.
    last_log_term: u64,
    /// Size of the snapshot file.
    file_bytes: u64,
    /// Last index purged from the Raft log so far.
    purged_index: Option<u64>,
    /// How long the call waited for the snapshot.
    elapsed_ms: u64,
}

/// Triggers a snapshot and waits (bounded) until one covering at least `index` exists.
async fn snapshot_at_least(node: &Node, index: u64) -> ApiResult<SnapshotInfo> {
    let started = Instant::now();
    let covered = |n: &Node| {
        n.raft
            .metrics()
            .borrow()
            .snapshot
            .is_some_and(|l| l.index >= index)
    };
    if !covered(node) {
        node.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("raft: {e}")))?;
        let mut rx = node.raft.metrics();
        let waited = tokio::time::timeout(SNAPSHOT_TIMEOUT, async {
            loop {
                if rx.borrow().snapshot.is_some_and(|l| l.index >= index) {
                    return true;
                }
                // A snapshot already in progress may end below `index`: ask again after it.
                match tokio::time::timeout(Duration::from_secs(1), rx.changed()).await {
                    Ok(Err(_)) => return false,
                    Ok(Ok(())) => {}
                    Err(_) => {
                        let _ = node.raft.trigger().snapshot().await;
                    }
                }
            }
        })
        .await;
        if !matches!(waited, Ok(true)) {
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!("no snapshot at index >= {index} within {SNAPSHOT_TIMEOUT:?}"),
            ));
        }
    }
    let m = node.raft.metrics().borrow().clone();
    let snap = m
        .snapshot
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "snapshot vanished"))?;
    let file_bytes = std::fs::metadata(snapshot_path(node))
        .map(|m| m.len())
        .unwrap_or(0);
    Ok(SnapshotInfo {
        last_log_index: snap.index,
        last_log_term: snap.leader_id.term,
        file_bytes,
        purged_index: m.purged.map(|l| l.index),
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

/// A `500` saying what failed.
fn internal(message: String) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
}

fn snapshot_path(node: &Node) -> std::path::PathBuf {
    node.cfg.data_dir.join("state").join(SNAPSHOT_FILE)
}

/// `POST /snapshot`: a snapshot of everything applied on this node now.
pub async fn trigger_snapshot(State(node): State<Arc<Node>>) -> ApiResult<Json<SnapshotInfo>> {
    let applied = *node.applied.borrow();
    Ok(Json(snapshot_at_least(&node, applied).await?))
}

/// `GET /snapshot`: the current snapshot file (built first if there is none), as a backup.
///
/// The backup is written from the snapshot file, a window of it at a time, to a file of its own,
/// with no name (gone when the download ends or is dropped), in the state directory, and
/// streamed from it: the node holds neither file in memory (at 1,000,000 znodes, 178 MB each).
/// One download at a time: another meanwhile is answered `429`.
pub async fn download_snapshot(State(node): State<Arc<Node>>) -> ApiResult<Response> {
    let permit = node
        .backup_download
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "a backup is being downloaded from this node already (each holds a copy of the \
             snapshot on its disk until it ends); retry when it has ended",
            )
        })?;
    let info = snapshot_at_least(&node, 1).await?;
    let path = snapshot_path(&node);
    // The permit goes with the copy (the blocking work goes on if this request is dropped),
    // then with the body that streams it.
    let read = tokio::task::spawn_blocking(move || {
        let permit = permit;
        // Open, the file is read whole as it is now, even if a newer snapshot replaces it.
        let snapshot = std::fs::File::open(&path)
            .map_err(|e| internal(format!("cannot read the snapshot file: {e}")))?;
        let dir = path.parent().unwrap_or(&path);
        let (backup, log_id) = synod_raft_store::backup::seal_file(snapshot, |len| {
            let file = tempfile::tempfile_in(dir)?;
            Ok(std::io::BufWriter::with_capacity(len.min(1 << 20), file))
        })
        .and_then(|(out, log_id)| {
            let mut file = out.into_inner().map_err(|e| e.into_error())?;
            std::io::Seek::rewind(&mut file)?;
            Ok((file, log_id))
        })
        .map_err(|e| internal(format!("cannot make a backup of the snapshot file: {e}")))?;
        let len = backup
            .metadata()
            .map_err(|e| internal(format!("cannot read the backup's length: {e}")))?
            .len();
        Ok::<_, ApiError>((backup, len, log_id, permit))
    })
    .await
    .map_err(|e| internal(format!("the backup's copy did not finish: {e}")))?;
    let (backup, len, log_id, permit) = read?;
    let chunks =
        tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(backup), 256 << 10);
    // The permit goes with the body: released when the download ends or is dropped.
    let body = axum::body::Body::from_stream(futures_util::StreamExt::map(chunks, move |chunk| {
        let _held = &permit;
        chunk
    }));
    let (index, term) = log_id
        .map(|l| (l.index, l.leader_id.term))
        .unwrap_or((info.last_log_index, info.last_log_term));
    let mut response = (backup_headers(index, term), body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, header::HeaderValue::from(len));
    Ok(response)
}

/// `HEAD /snapshot`: which snapshot `GET /snapshot` would download now (its index and term,
/// built first if there is none), without making the backup: no copy on the disk, no turn
/// among the downloads, and so no length (known only once the backup is made).
pub async fn describe_snapshot(State(node): State<Arc<Node>>) -> ApiResult<Response> {
    let info = snapshot_at_least(&node, 1).await?;
    // A body of no known length: an empty one would be announced as `content-length: 0`.
    let unknown_length = axum::body::Body::from_stream(futures_util::stream::empty::<
        Result<bytes::Bytes, std::io::Error>,
    >());
    Ok((
        backup_headers(info.last_log_index, info.last_log_term),
        unknown_length,
    )
        .into_response())
}

/// The headers of a backup of the snapshot at `index` in `term`, but its length.
fn backup_headers(index: u64, term: u64) -> [(header::HeaderName, String); 4] {
    [
        (header::CONTENT_TYPE, "application/octet-stream".to_string()),
        (
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"synod-backup-{index}.bin\""),
        ),
        (
            header::HeaderName::from_static("x-synod-snapshot-index"),
            index.to_string(),
        ),
        (
            header::HeaderName::from_static("x-synod-snapshot-term"),
            term.to_string(),
        ),
    ]
}
