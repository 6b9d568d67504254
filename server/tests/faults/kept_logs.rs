//! The node logs of a scenario that failed (an anomaly, an error, a timeout), kept after its
//! cluster's directory is removed, so that a failure seen once can still be read: in
//! `$SYNOD_FAULT_LOGS`, else `<temp dir>/synod-fault-logs`, one directory per failed run, the
//! newest [`KEPT_RUNS`] kept.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use synod_testkit::SynodEnsemble;

/// How many failed runs' logs are kept (older ones are removed as new ones are kept).
pub const KEPT_RUNS: usize = 10;

/// Keeps the node logs of `ens` when dropped, unless [`LogsOnFailure::passed`] was called: a
/// scenario that returns early with an error, or is cancelled at its timeout, drops it armed.
pub struct LogsOnFailure {
    /// The scenario's cluster (its logs are in its nodes' directories).
    ens: Arc<SynodEnsemble>,
    /// The scenario's name, the start of the kept directory's.
    scenario: &'static str,
    /// Set once the scenario found nothing wrong.
    passed: bool,
}

impl LogsOnFailure {
    pub fn new(ens: Arc<SynodEnsemble>, scenario: &'static str) -> Self {
        LogsOnFailure {
            ens,
            scenario,
            passed: false,
        }
    }

    /// The scenario passed: nothing is kept.
    pub fn passed(&mut self) {
        self.passed = true;
    }
}

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if self.passed {
            return;
        }
        let root = std::env::var_os("SYNOD_FAULT_LOGS")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("synod-fault-logs"));
        match keep(&self.ens, self.scenario, &root) {
            Ok(dir) => eprintln!("  node logs kept in {}", dir.display()),
            Err(e) => eprintln!("  could not keep the node logs in {}: {e}", root.display()),
        }
    }
}

/// Writes every node's log to a new directory under `root` and removes the oldest kept runs
/// beyond [`KEPT_RUNS`]; returns the new directory.
fn keep(ens: &SynodEnsemble, scenario: &str, root: &Path) -> std::io::Result<PathBuf> {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let dir = root.join(format!("{stamp}-{scenario}"));
    std::fs::create_dir_all(&dir)?;
    for idx in 0..ens.nodes().len() {
        std::fs::write(dir.join(format!("node{}.log", idx + 1)), ens.log(idx))?;
    }
    // Names start with the time in milliseconds: sorted by name, the oldest come first.
    let mut runs: Vec<PathBuf> = std::fs::read_dir(root)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    runs.sort();
    let excess = runs.len().saturating_sub(KEPT_RUNS);
    for old in &runs[..excess] {
        std::fs::remove_dir_all(old)?;
    }
    Ok(dir)
}
