//! Median latency of a synced log append of 1 and of 64 entries (256-byte client writes) on a
//! current-thread runtime (the write runs inline) and on a multi-threaded one (the write runs
//! under `block_in_place`, as in the server), next to a raw 256-byte write + fdatasync on the
//! same file system. Prints the numbers; asserts nothing (timings do not belong in tests). Run
//! alone for clean numbers: `cargo bench -p synod-raft-store --bench append_latency`.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use openraft::storage::RaftLogStorageExt;
use openraft::testing::log_id;
use openraft::{Entry, EntryPayload, StorageError};
use synod_raft_store::log_store::LogStore;
use synod_raft_store::{Command, NodeId, Origin, TypeConfig};

type SErr = StorageError<NodeId>;

const ROUNDS: usize = 200;

/// A client write of `body_len` bytes at `index`, like the ones the server proposes.
fn write_entry(term: u64, index: u64, body_len: usize) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(term, 1, index),
        payload: EntryPayload::Normal(Command::Write {
            origin: Origin {
                node: 1,
                request: index,
            },
            session_id: 0x1000 + index as i64,
            time_ms: 1_700_000_000_000,
            auth: vec![("digest".into(), "alice:x".into())],
            opcode: 5,
            body: Bytes::from(vec![index as u8; body_len]),
        }),
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Medians of ROUNDS synced appends of `batch` entries each, for each batch size.
async fn medians(dir: &Path, batches: &[u64]) -> Result<Vec<Duration>, SErr> {
    let mut store = LogStore::open(dir).expect("open");
    let mut next = 1u64;
    let mut entries = |batch: u64| {
        let v: Vec<_> = (next..next + batch)
            .map(|i| write_entry(1, i, 256))
            .collect();
        next += batch;
        v
    };
    for _ in 0..20 {
        store.blocking_append(entries(1)).await?; // warm up
    }
    let mut out = Vec::new();
    for &batch in batches {
        let mut samples = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let e = entries(batch);
            let t = Instant::now();
            store.blocking_append(e).await?;
            samples.push(t.elapsed());
        }
        out.push(median(samples));
    }
    Ok(out)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo test --benches` runs bench targets too; measure only under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let dir = tempfile::TempDir::new().expect("tempdir");
    let inline = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(medians(&dir.path().join("inline"), &[1, 64]))?;
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let in_place = multi.block_on(async {
        let path = dir.path().join("in-place");
        // On a worker thread, as the Raft core is.
        tokio::spawn(async move { medians(&path, &[1, 64]).await })
            .await
            .expect("join")
    })?;

    let mut raw = Vec::with_capacity(ROUNDS);
    {
        use std::io::Write;
        let mut f = std::fs::File::create(dir.path().join("raw")).expect("create");
        let block = [0x5au8; 256];
        for _ in 0..ROUNDS {
            let t = Instant::now();
            f.write_all(&block).expect("write");
            f.sync_data().expect("fdatasync");
            raw.push(t.elapsed());
        }
    }
    println!(
        "synced append, median of {ROUNDS}: current-thread runtime: 1 entry {:?}, 64 entries \
         {:?}; multi-thread runtime (block_in_place): 1 entry {:?}, 64 entries {:?}; raw \
         256 B write+fdatasync {:?}",
        inline[0],
        inline[1],
        in_place[0],
        in_place[1],
        median(raw),
    );
    Ok(())
}
