//! The data directory's free space: a background probe of the file system holding it, and the
//! rule it feeds ([`DiskGuard::refuses`]): below `--min-free-space-mb`, writes that grow the
//! tree are refused with a clear error, while reads, deletes, session opens and closes go on —
//! so that clients can free space, and a node never reaches the point where RocksDB's own write
//! fails (which stops the node: an append it cannot make durable is never acknowledged).
//!
//! The reserve is per node and checked where a client's write enters (its own disk), as etcd's
//! space quota is. A node whose disk fills while the others still accept writes stops on the
//! first failed append (fail-stop, [`crate::bootstrap`] watches for it) and the cluster goes on
//! without it. `/ready` and `/metrics` say when a node refuses writes and why.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use synod_proto::{MultiOp, Request};

/// The default reserve, in MiB: room for the log to go on a while, and for a snapshot of a
/// moderate tree. An operator with a large tree sets at least twice the snapshot's size.
pub const DEFAULT_MIN_FREE_MB: u64 = 128;

/// How often the file system is asked (one `statvfs`, microseconds).
const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// The free space of the data directory's file system, as last probed, and whether writes are
/// refused because of it. Shared by every connection (an atomic read per write) and the admin
/// port.
#[derive(Debug)]
pub struct DiskGuard {
    /// The data directory (any path on the file system to watch).
    dir: PathBuf,
    /// The reserve in bytes; 0 disables the check.
    min_free: u64,
    /// Bytes available to this process on that file system at the last probe (`u64::MAX`
    /// before the first one).
    free: AtomicU64,
    /// `free < min_free` at the last probe: writes that grow the tree are refused.
    low: AtomicBool,
    /// Writes refused since start (for `/metrics`).
    refused: AtomicU64,
}

impl DiskGuard {
    /// A guard of `dir`'s file system with a reserve of `min_free` bytes, probed once now.
    pub fn new(dir: &Path, min_free: u64) -> Arc<DiskGuard> {
        let g = Arc::new(DiskGuard {
            dir: dir.to_path_buf(),
            min_free,
            free: AtomicU64::new(u64::MAX),
            low: AtomicBool::new(false),
            refused: AtomicU64::new(0),
        });
        g.probe();
        g
    }

    /// Asks the file system for its free space once and updates the state; logs a change.
    pub fn probe(&self) {
        let Some(free) = available_bytes(&self.dir) else {
            // An unanswerable probe changes nothing: RocksDB's own error is the backstop.
            return;
        };
        self.free.store(free, Relaxed);
        let low = self.min_free > 0 && free < self.min_free;
        if self.low.swap(low, Relaxed) != low {
            if low {
                tracing::error!(
                    free_bytes = free,
                    min_free_bytes = self.min_free,
                    dir = %self.dir.display(),
                    "the data directory's disk is almost full: refusing writes that grow the tree \
                     (deletes, session closes and reads go on) until space returns"
                );
            } else {
                tracing::warn!(
                    free_bytes = free,
                    "disk space is back: accepting writes again"
                );
            }
        }
    }

    /// Probes every [`PROBE_INTERVAL`] until the process ends.
    pub fn spawn(self: &Arc<Self>) {
        let g = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(PROBE_INTERVAL);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let g = g.clone();
                // statvfs is a syscall that can block on a sick disk: not on a runtime thread.
                if tokio::task::spawn_blocking(move || g.probe())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }

    /// Whether writes that grow the tree are refused now.
    pub fn is_low(&self) -> bool {
        self.low.load(Relaxed)
    }

    /// Free bytes at the last probe.
    pub fn free_bytes(&self) -> u64 {
        self.free.load(Relaxed)
    }

    /// The reserve in bytes (0: no check).
    pub fn min_free_bytes(&self) -> u64 {
        self.min_free
    }

    /// Writes refused since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Relaxed)
    }

    /// Whether `request` (a write) must be refused now: the disk is low and the request could
    /// grow what is stored. Deletes, checks, session closes, and a multi of nothing else, shrink
    /// or keep it and are let through. Counts a refusal.
    pub fn refuses(&self, request: &Request) -> bool {
        if !self.is_low() || !grows(request) {
            return false;
        }
        self.refused.fetch_add(1, Relaxed);
        true
    }

    /// Why the node refuses writes, for `/ready` (`None` when it does not).
    pub fn reason(&self) -> Option<String> {
        self.is_low().then(|| {
            format!(
                "disk almost full: {} bytes free in {}, below --min-free-space-mb ({} bytes): \
                 writes that grow the tree are refused",
                self.free_bytes(),
                self.dir.display(),
                self.min_free
            )
        })
    }
}

/// Whether a write request can grow the stored state (the rule of [`DiskGuard::refuses`]).
fn grows(request: &Request) -> bool {
    match request {
        Request::Delete(_) | Request::Check(_) | Request::CloseSession => false,
        Request::Multi(ops) => ops
            .iter()
            .any(|op| !matches!(op, MultiOp::Delete(_) | MultiOp::Check(_))),
        _ => true,
    }
}

/// Bytes available to an unprivileged user on the file system holding `dir` (`statvfs`'s
/// `f_bavail`: root's reserved blocks are not ours to count on); `None` if it cannot be asked.
fn available_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is a NUL-terminated string that outlives the call, and `st` points to
    // writable memory of the right type; statvfs writes only into it.
    let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the struct (which was zeroed anyway).
    let st = unsafe { st.assume_init() };
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_proto::records::{DeleteRequest, SetDataRequest};

    #[test]
    fn only_writes_that_grow_are_refused_and_only_when_low() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let free = available_bytes(dir.path()).expect("statvfs");
        assert!(free > 0);
        let set = Request::SetData(SetDataRequest {
            path: "/a".into(),
            data: Some(bytes::Bytes::from_static(b"x")),
            version: -1,
        });
        let delete = DeleteRequest {
            path: "/a".into(),
            version: -1,
        };
        let roomy = DiskGuard::new(dir.path(), 1);
        assert!(!roomy.is_low() && !roomy.refuses(&set));
        let off = DiskGuard::new(dir.path(), 0);
        assert!(!off.is_low());
        let full = DiskGuard::new(dir.path(), u64::MAX);
        assert!(full.is_low());
        assert!(full.refuses(&set));
        assert!(!full.refuses(&Request::Delete(delete.clone())));
        assert!(!full.refuses(&Request::CloseSession));
        assert!(!full.refuses(&Request::Multi(vec![MultiOp::Delete(delete.clone())])));
        assert!(full.refuses(&Request::Multi(vec![
            MultiOp::Delete(delete),
            MultiOp::SetData(SetDataRequest {
                path: "/b".into(),
                data: None,
                version: -1,
            }),
        ])));
        assert_eq!(full.refused(), 2);
        assert!(full.reason().is_some_and(|r| r.contains("min-free-space")));
    }
}
