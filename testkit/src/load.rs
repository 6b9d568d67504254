//! Write load whose every acknowledgement is recorded, for tests that must show that no
//! acknowledged write was lost across restarts, upgrades or replaced machines: writers create
//! numbered znodes in a loop, each on a session of its own that reconnects by itself.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use synod_client::{Client, ConnectOptions, CreateMode};

use crate::{Ensemble, SynodEnsemble};

/// What the writers have done so far; shared between them and the test.
#[derive(Debug, Default)]
pub struct WriteLoad {
    /// Every acknowledged create, by path.
    acknowledged: Mutex<Vec<String>>,
    /// Creates that failed (not acknowledged: they may or may not have taken effect).
    failed: AtomicU64,
    /// Set to make the writers finish.
    stop: AtomicBool,
}

impl WriteLoad {
    /// The paths acknowledged so far.
    pub fn acknowledged(&self) -> Vec<String> {
        self.lock().clone()
    }

    /// How many creates have been acknowledged so far.
    pub fn acknowledged_count(&self) -> usize {
        self.lock().len()
    }

    /// How many creates failed.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Tells the writers to finish after their current create.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.acknowledged.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates `<parent>/w<k>-<n>` for n = 1, 2, ... on a session of its own (connected to
    /// `connect` with `options`) until [`WriteLoad::stop`], recording each acknowledged path;
    /// after a failed create (its server restarts) it pauses 50 ms and goes on with the next
    /// number. `parent` must exist. Panics if it cannot connect at all.
    pub async fn writer(
        self: Arc<Self>,
        connect: String,
        options: ConnectOptions,
        parent: String,
        k: usize,
    ) {
        let zk = Client::connect(&connect, options)
            .await
            .expect("connect a writer");
        let mut n = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            n += 1;
            let path = format!("{parent}/w{k}-{n}");
            match zk.create(&path, b"v", CreateMode::Persistent).await {
                Ok(_) => self.lock().push(path),
                Err(_) => {
                    self.failed.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        let _ = zk.close().await;
    }

    /// Every acknowledged path missing on one of the nodes `idxs` of `ens` (asked one by one,
    /// each after a `sync`), with the node's index: none, unless an acknowledged write was lost.
    pub async fn missing_on(
        &self,
        ens: &SynodEnsemble,
        idxs: &[usize],
        parent: &str,
    ) -> Vec<(usize, String)> {
        let mut missing = Vec::new();
        for &i in idxs {
            let zk = Client::connect(&ens.connect_string_of(&[i]), ens.connect_options())
                .await
                .expect("connect");
            missing.extend(self.missing(&zk, parent).await.into_iter().map(|p| (i, p)));
            let _ = zk.close().await;
        }
        missing
    }

    /// The acknowledged paths missing from `parent`'s children as `zk` sees them after a
    /// `sync` (none, unless an acknowledged write was lost).
    pub async fn missing(&self, zk: &Client, parent: &str) -> Vec<String> {
        zk.sync(parent).await.expect("sync");
        let children: HashSet<String> = zk
            .get_children(parent)
            .await
            .expect("list the writes")
            .into_iter()
            .collect();
        self.acknowledged()
            .into_iter()
            .filter(|p| !children.contains(p.rsplit('/').next().unwrap_or_default()))
            .collect()
    }
}
