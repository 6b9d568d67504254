//! `synod audit`: the offline side of the audit trail. `verify` checks a stopped node's trail
//! (`--data-dir`) against the replicated head in its snapshot, or an export (`--export`, the
//! JSON lines of `GET /audit?format=jsonl` or `synod audit export`) on its own, and names the
//! first record that does not follow; `export` writes a stopped node's trail as JSON lines.
//! A running node answers the same on its admin port (`GET /audit`, `GET /audit/verify`).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use synod_raft_store::audit::{
    self, Anchor, AuditHead, AuditStore, ExportedRecord, StoredRecord, Verified,
};
use synod_raft_store::error::StoreError;

use crate::error::ServerError;

#[derive(Debug, Parser)]
#[command(
    name = "synod audit",
    about = "Verify or export the audit trail of a stopped node"
)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub action: AuditCmd,
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Recompute the hash chain and name the first record that does not follow.
    Verify {
        /// A stopped node's data directory: its trail, checked against its snapshot's head.
        #[arg(long, conflicts_with = "export")]
        data_dir: Option<PathBuf>,
        /// An export (JSON lines, with its anchors first: `synodctl audit -o`, `synod audit
        /// export`).
        #[arg(long)]
        export: Option<PathBuf>,
        /// With --export: a backup (`synodctl backup`) whose replicated head the export must
        /// reach, so that the backup and the trail vouch for each other.
        #[arg(long, requires = "export")]
        backup: Option<PathBuf>,
    },
    /// Write a stopped node's trail as JSON lines (anchors first).
    Export {
        #[arg(long)]
        data_dir: PathBuf,
        /// Where to write (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Runs `synod audit ...`; returns what to print.
pub fn run(args: AuditArgs) -> Result<String, ServerError> {
    match args.action {
        AuditCmd::Verify {
            data_dir: Some(dir),
            ..
        } => verify_data_dir(&dir).map(|v| describe(&v)),
        AuditCmd::Verify {
            export: Some(file),
            backup,
            ..
        } => {
            let head = backup.as_deref().map(backup_head).transpose()?;
            let v = verify_export(&file, head.as_ref())?;
            if head.is_some_and(|h| h.count > 0) && !v.head_matched {
                return Err(ServerError::Storage(format!(
                    "the export ends before the backup's replicated head (zxid {:#x})",
                    head.map(|h| h.zxid).unwrap_or_default()
                )));
            }
            Ok(describe(&v))
        }
        AuditCmd::Verify { .. } => Err(ServerError::Config(
            "synod audit verify needs --data-dir or --export".into(),
        )),
        AuditCmd::Export { data_dir, out } => export(&data_dir, out.as_deref()),
    }
}

fn storage(e: StoreError) -> ServerError {
    ServerError::Storage(e.to_string())
}

fn describe(v: &Verified) -> String {
    let range = match (v.first, v.last) {
        (Some(a), Some(b)) => format!("zxids {a:#x}..={b:#x}"),
        _ => "no records".into(),
    };
    format!(
        "audit trail verified: {} records ({range}) in {} stretch(es){}",
        v.records,
        v.stretches,
        if v.head_matched {
            "; the replicated head matches"
        } else {
            "; the replicated head is beyond these records"
        }
    )
}

fn open(dir: &Path) -> Result<AuditStore, ServerError> {
    let path = dir.join("audit");
    if !path.is_dir() {
        return Err(ServerError::Config(format!(
            "{} has no audit trail (no {})",
            dir.display(),
            path.display()
        )));
    }
    AuditStore::open(&path).map_err(|e| {
        ServerError::Storage(format!(
            "{e} (a running node holds its trail: ask it with GET /audit/verify)"
        ))
    })
}

/// Verifies a stopped node's trail against the head in its snapshot (if it has one).
pub fn verify_data_dir(dir: &Path) -> Result<Verified, ServerError> {
    let store = open(dir)?;
    let snapshot = dir
        .join("state")
        .join(synod_raft_store::state_machine::SNAPSHOT_FILE);
    let head = match std::fs::File::open(&snapshot) {
        Ok(file) => Some(
            *synod_raft_store::state_machine::read_snapshot_from(file)
                .map_err(storage)?
                .tree
                .audit_head(),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let anchors = store.anchors().map_err(storage)?;
    audit::verify(store.all(), &anchors, head.as_ref()).map_err(storage)
}

/// The replicated audit head recorded in a backup file (checked whole first).
fn backup_head(path: &Path) -> Result<AuditHead, ServerError> {
    let contents = synod_raft_store::state_machine::read_backup_from(std::fs::File::open(path)?)
        .map_err(storage)?;
    Ok(*contents.tree.audit_head())
}

/// Verifies an export, against `head` (a backup's) if given.
pub fn verify_export(file: &Path, head: Option<&AuditHead>) -> Result<Verified, ServerError> {
    let f = std::fs::File::open(file)?;
    let mut anchors = Vec::new();
    let mut records = Vec::new();
    for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |e: String| ServerError::Storage(format!("{}:{}: {e}", file.display(), n + 1));
        let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        if let Some(hash) = v.get("anchor_hash").and_then(|h| h.as_str()) {
            let zxid = v
                .get("anchor_zxid")
                .and_then(|z| z.as_i64())
                .ok_or_else(|| bad("an anchor without anchor_zxid".into()))?;
            let hash = audit::unhex(hash).map_err(|e| bad(e.to_string()))?;
            anchors.push(Anchor { zxid, hash });
            continue;
        }
        let e: ExportedRecord = serde_json::from_value(v).map_err(|e| bad(e.to_string()))?;
        records.push(StoredRecord::try_from(e).map_err(|e| bad(e.to_string())));
    }
    let records = records
        .into_iter()
        .map(|r| r.map_err(|e| StoreError::Audit(e.to_string())));
    audit::verify(records, &anchors, head).map_err(storage)
}

/// Writes a stopped node's trail as JSON lines; returns a summary.
fn export(dir: &Path, out: Option<&Path>) -> Result<String, ServerError> {
    let store = open(dir)?;
    let mut w: Box<dyn Write> = match out {
        Some(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(p)?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    for a in store.anchors().map_err(storage)? {
        let line = serde_json::json!({"anchor_zxid": a.zxid, "anchor_hash": audit::hex(&a.hash)});
        writeln!(w, "{line}")?;
    }
    let mut n = 0u64;
    for r in store.all() {
        let r = r.map_err(storage)?;
        let line = serde_json::to_string(&ExportedRecord::from(&r))
            .map_err(|e| ServerError::Storage(e.to_string()))?;
        writeln!(w, "{line}")?;
        n += 1;
    }
    w.flush()?;
    Ok(format!("exported {n} audit records"))
}
