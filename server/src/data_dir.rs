//! Whom a data directory belongs to: the node id it was created for and the id of the cluster
//! it joined, recorded in its `identity` file. A node refuses to start on another node's data,
//! and its peer connections carry the cluster id so that two clusters never mix
//! ([`crate::peer::transport`]).
//!
//! The cluster id is generated once, at bootstrap, by the member that initializes the cluster
//! (the lowest id of `--members`), and persisted before Raft is initialized. Every other node
//! adopts it from the first authenticated member that presents one, and persists it before it
//! answers that member; from then on a peer presenting another cluster id is refused.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use serde::{Deserialize, Serialize};
use synod_raft_store::NodeId;

use crate::error::ServerError;

/// The file, in the data directory, that records its node id and cluster id.
pub const IDENTITY_FILE: &str = "identity";

/// A cluster's id: 128 random bits, shown as 32 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClusterId(pub u128);

impl ClusterId {
    /// A fresh random id.
    pub fn generate() -> ClusterId {
        ClusterId(rand::random())
    }
}

impl std::fmt::Display for ClusterId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl std::str::FromStr for ClusterId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u128::from_str_radix(s, 16).map(ClusterId)
    }
}

/// Creates `dir` if needed and makes it and everything in it private to the service's user:
/// directories 0700, files 0600 (a data directory written by an older version, or copied in
/// with looser modes, is tightened at every start). The process's umask (see `main`) keeps what
/// is created later — RocksDB's files, snapshots — the same.
pub fn make_private(dir: &Path) -> Result<(), ServerError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))?;
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    Ok(())
}

/// The identity file's contents.
#[derive(Debug, Serialize, Deserialize)]
struct IdentityFile {
    /// The node the directory was created for.
    node_id: NodeId,
    /// The cluster it belongs to, once known (32 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cluster_id: Option<String>,
}

/// Why two nodes' cluster ids do not allow them to talk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterIdError {
    /// Both know their cluster, and they differ.
    #[error("cluster id mismatch: this node belongs to cluster {ours}, the peer to {theirs}")]
    Mismatch {
        /// This node's.
        ours: ClusterId,
        /// The peer's.
        theirs: ClusterId,
    },
    /// Adopting the peer's cluster id could not be persisted (the connection is refused: an id
    /// adopted but not recorded could be replaced by another after a restart).
    #[error("cannot record cluster id {id}: {reason}")]
    Persist {
        /// The id that was to be adopted.
        id: ClusterId,
        /// The I/O error.
        reason: String,
    },
}

/// This node's knowledge of its cluster id, shared by the peer server and the peer pool, and
/// kept in step with the identity file.
#[derive(Debug)]
pub struct ClusterIdCell {
    /// This node's id (written into the file beside the cluster id).
    node_id: NodeId,
    /// The identity file; `None` keeps the id in memory only (tests of the peer layer).
    file: Option<PathBuf>,
    /// The cluster id, once generated or adopted; set at most once, read without a lock (the
    /// peer pool compares it on every call). Invariant: when `file` is set, the file holds the
    /// same value (it is written, and synced, before this is set).
    id: OnceLock<ClusterId>,
    /// Serializes generating or adopting an id, so the file and `id` are set by one thread.
    setting: Mutex<()>,
}

impl ClusterIdCell {
    /// An id kept in memory only, unknown at first.
    pub fn in_memory(node_id: NodeId) -> ClusterIdCell {
        ClusterIdCell {
            node_id,
            file: None,
            id: OnceLock::new(),
            setting: Mutex::new(()),
        }
    }

    /// Opens the identity of the data directory `dir` for node `node_id`: creates the file on
    /// first start; refuses a directory that belongs to another node, or whose file is not
    /// readable.
    pub fn open(dir: &Path, node_id: NodeId) -> Result<ClusterIdCell, ServerError> {
        let path = dir.join(IDENTITY_FILE);
        let id = match std::fs::read_to_string(&path) {
            Ok(text) => {
                let file: IdentityFile = toml::from_str(&text).map_err(|e| {
                    ServerError::Config(format!("{} is not readable: {e}", path.display()))
                })?;
                if file.node_id != node_id {
                    return Err(ServerError::Config(format!(
                        "data dir {} belongs to node {}, not to node {node_id}: \
                         give each node its own data dir",
                        dir.display(),
                        file.node_id
                    )));
                }
                file.cluster_id
                    .map(|s| {
                        s.parse().map_err(|e| {
                            ServerError::Config(format!(
                                "{}: cluster_id {s:?} is not 32 hex digits: {e}",
                                path.display()
                            ))
                        })
                    })
                    .transpose()?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_identity(&path, node_id, None)?;
                None
            }
            Err(e) => return Err(e.into()),
        };
        let cell = OnceLock::new();
        if let Some(id) = id {
            let _ = cell.set(id);
        }
        Ok(ClusterIdCell {
            node_id,
            file: Some(path),
            id: cell,
            setting: Mutex::new(()),
        })
    }

    /// The cluster id, if known.
    pub fn get(&self) -> Option<ClusterId> {
        self.id.get().copied()
    }

    /// Generates and records a cluster id if none is known (the bootstrapping member does this
    /// before it initializes Raft); returns the id now known.
    pub fn get_or_generate(&self) -> Result<ClusterId, ClusterIdError> {
        match self.get() {
            Some(id) => Ok(id),
            None => {
                let fresh = ClusterId::generate();
                // A peer's id adopted meanwhile makes this a mismatch: then the cluster exists.
                self.accept(Some(fresh)).map(|id| id.unwrap_or(fresh))
            }
        }
    }

    /// Checks a peer's cluster id against ours: equal, or one of them unknown, passes; an unknown
    /// id of ours becomes theirs (recorded first). Returns our id after the check.
    pub fn accept(&self, theirs: Option<ClusterId>) -> Result<Option<ClusterId>, ClusterIdError> {
        let _setting = self.setting.lock().unwrap_or_else(PoisonError::into_inner);
        match (self.get(), theirs) {
            (Some(o), Some(t)) if o != t => Err(ClusterIdError::Mismatch { ours: o, theirs: t }),
            (None, Some(t)) => {
                if let Some(path) = &self.file {
                    write_identity(path, self.node_id, Some(t)).map_err(|e| {
                        ClusterIdError::Persist {
                            id: t,
                            reason: e.to_string(),
                        }
                    })?;
                }
                tracing::info!(cluster_id = %t, "cluster id recorded");
                // Unset until now, and only set under `setting`.
                let _ = self.id.set(t);
                Ok(Some(t))
            }
            (o, _) => Ok(o),
        }
    }
}

/// Writes the identity file atomically: a temp file, synced, renamed over the old one, and the
/// directory synced.
fn write_identity(
    path: &Path,
    node_id: NodeId,
    cluster_id: Option<ClusterId>,
) -> Result<(), ServerError> {
    let contents = toml::to_string(&IdentityFile {
        node_id,
        cluster_id: cluster_id.map(|c| c.to_string()),
    })
    .map_err(|e| ServerError::Config(format!("cannot encode the identity file: {e}")))?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(b"# Written by synod: the node and cluster this data dir belongs to.\n")?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dir_remembers_its_node_and_cluster() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cell = ClusterIdCell::open(dir.path(), 2).expect("fresh dir");
        assert_eq!(cell.get(), None);
        let id = ClusterId::generate();
        assert_eq!(cell.accept(None), Ok(None));
        assert_eq!(cell.accept(Some(id)), Ok(Some(id)));
        let other = ClusterId(id.0 ^ 1);
        assert_eq!(
            cell.accept(Some(other)),
            Err(ClusterIdError::Mismatch {
                ours: id,
                theirs: other
            })
        );
        assert_eq!(cell.get_or_generate(), Ok(id));
        // Reopened: same cluster; another node's id is refused.
        let cell = ClusterIdCell::open(dir.path(), 2).expect("reopen");
        assert_eq!(cell.get(), Some(id));
        let e = ClusterIdCell::open(dir.path(), 3)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("belongs to node 2"), "{e}");
    }

    #[test]
    fn the_bootstrapping_member_generates_once() {
        let cell = ClusterIdCell::in_memory(1);
        let id = cell.get_or_generate().expect("generate");
        assert_eq!(cell.get_or_generate(), Ok(id));
        assert_eq!(id.to_string().parse::<ClusterId>(), Ok(id));
    }
}
