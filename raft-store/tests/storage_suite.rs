//! openraft's storage conformance suite (`openraft::testing::Suite`) on synod's real storage: the
//! RocksDB [`LogStore`] together with the real [`StateMachine`], each case in fresh directories.

use openraft::testing::{StoreBuilder, Suite};
use openraft::{ErrorSubject, ErrorVerb, StorageError};
use synod_raft_store::error::StoreError;
use synod_raft_store::log_store::LogStore;
use synod_raft_store::state_machine::StateMachine;
use synod_raft_store::{NodeId, TypeConfig};

/// Builds a fresh log store (`<tmp>/log`) and state machine (`<tmp>/sm`, no apply observer) in a
/// new temporary directory, which lives as long as the case (the Suite holds it as `G`).
struct SynodStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine<()>, tempfile::TempDir> for SynodStoreBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine<()>), StorageError<NodeId>> {
        let dir = tempfile::TempDir::new()
            .map_err(|e| StoreError::Io(e).to_storage(ErrorSubject::Store, ErrorVerb::Write))?;
        let log = LogStore::open(&dir.path().join("log"))
            .map_err(|e| e.to_storage(ErrorSubject::Store, ErrorVerb::Read))?;
        let sm = StateMachine::open(&dir.path().join("sm"), (), None)
            .map_err(|e| e.to_storage(ErrorSubject::Store, ErrorVerb::Read))?;
        Ok((dir, log, sm))
    }
}

/// A plain `#[test]`: the Suite starts its own tokio runtime for every case. (`StorageError` is
/// large, but it is what the Suite returns.)
#[allow(clippy::result_large_err)]
#[test]
fn openraft_storage_suite() -> Result<(), StorageError<NodeId>> {
    Suite::test_all(SynodStoreBuilder)
}
