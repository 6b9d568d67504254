//! `synod restore`: prepares an empty data directory from a backup (downloaded with `GET
//! /snapshot` / `synodctl backup`: a snapshot in a checksummed envelope, see
//! [`synod_raft_store::backup`]) so that a fresh cluster started on such directories serves the
//! backed-up tree, with a new membership. A damaged backup is refused before anything is written.
//!
//! Each node of the new cluster gets the same backup, its own `--id` and the same `--members`.
//! The restored state machine starts at the backup's last log index (its zxid), with the new
//! membership recorded there; the Raft log is marked purged up to that index and the vote kept at
//! its term, so the new cluster's first entries continue the zxid sequence instead of reusing it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::Parser;
use openraft::storage::RaftLogStorage;
use openraft::{BasicNode, LogId, Membership, Vote};
use synod_raft_store::log_store::LogStore;
use synod_raft_store::state_machine::restore_snapshot_file;
use synod_raft_store::NodeId;

use crate::error::ServerError;

/// `synod restore`: the data directory of one node of a cluster restored from a backup.
#[derive(Debug, Parser)]
#[command(
    name = "synod restore",
    about = "Prepare an empty data directory from a backup (synodctl backup) for a new cluster"
)]
pub struct RestoreArgs {
    /// The backup file (a snapshot downloaded from GET /snapshot).
    #[arg(long)]
    pub from: PathBuf,
    /// The data directory to create (must not exist or be empty).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// This node's id in the new cluster (a key of --members).
    #[arg(long)]
    pub id: NodeId,
    /// The new cluster's voters and their peer addresses: `1=127.0.0.1:7001,2=...`.
    #[arg(long)]
    pub members: String,
}

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    /// The backup's last log id: the restored tree's zxid.
    pub last_log_id: LogId<NodeId>,
    /// Znodes in the restored tree.
    pub znodes: usize,
}

/// Restores `args.from` into `args.data_dir` (see the module documentation).
pub async fn restore(args: &RestoreArgs) -> Result<Restored, ServerError> {
    let bad = |m: String| ServerError::Config(m);
    let members: BTreeMap<NodeId, BasicNode> = crate::config::parse_members(&args.members)?
        .into_iter()
        .map(|(id, addr)| (id, BasicNode::new(addr)))
        .collect();
    if !members.contains_key(&args.id) {
        return Err(bad(format!("--id {} is not among --members", args.id)));
    }
    if !is_empty_dir(&args.data_dir)? {
        return Err(bad(format!(
            "--data-dir {} is not empty; restore only into a new directory",
            args.data_dir.display()
        )));
    }
    let backup = std::fs::File::open(&args.from)
        .map_err(|e| bad(format!("cannot read {}: {e}", args.from.display())))?;
    // Opening a directory succeeds; reading it would fail with a bare "Is a directory".
    if backup.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(bad(format!(
            "--from {} is a directory: give the backup file (what synodctl backup or GET \
             /snapshot wrote), not a data directory",
            args.from.display()
        )));
    }
    let voters: BTreeSet<NodeId> = members.keys().copied().collect();
    let membership = Membership::new(vec![voters], members);
    let (last, tree) = restore_snapshot_file(&args.data_dir.join("state"), backup, membership)
        .map_err(|e| match e {
            e if e.is_damaged_file() => bad(format!(
                "{} is not a usable synod backup: {e}",
                args.from.display()
            )),
            other => ServerError::Storage(other.to_string()),
        })?;
    let mut log = LogStore::open(&args.data_dir.join("raft-log"))
        .map_err(|e| ServerError::Storage(e.to_string()))?;
    // Elections of the new cluster start above the backup's term, and its log continues after
    // the backup's last index: new entries never reuse a zxid of the backed-up tree.
    log.save_vote(&Vote::new(last.leader_id.term, args.id))
        .await
        .map_err(|e| ServerError::Storage(e.to_string()))?;
    log.purge(last)
        .await
        .map_err(|e| ServerError::Storage(e.to_string()))?;
    // The new cluster's audit trail starts at the backup's head: its first record follows it.
    synod_raft_store::audit::AuditStore::open(&args.data_dir.join("audit"))
        .and_then(|a| a.anchor(tree.audit_head()))
        .map_err(|e| ServerError::Storage(format!("audit trail: {e}")))?;
    Ok(Restored {
        last_log_id: last,
        znodes: tree.node_count(),
    })
}

fn is_empty_dir(p: &Path) -> Result<bool, ServerError> {
    match std::fs::read_dir(p) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(ServerError::Config(format!(
            "cannot read --data-dir {}: {e}",
            p.display()
        ))),
    }
}
