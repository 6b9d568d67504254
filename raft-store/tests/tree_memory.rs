//! What a znode costs in memory: the heap bytes a DataTree holds per znode of 100 bytes, and the
//! most a snapshot of such a tree holds at once while it is built, loaded, sent or backed up,
//! counted by a global allocator that tracks live bytes (this test binary only), with the nodes
//! created as the state machine creates them (the request decoded from the entry's jute body).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, LogId};
use sha2::{Digest, Sha256};
use synod_proto::jute::Reader;
use synod_proto::records::{CreateRequest, SetDataRequest};
use synod_proto::{Acl, CreateMode, OpCode, Request};
use synod_raft_store::state_machine::{lock, StateMachine, SNAPSHOT_FILE};
use synod_raft_store::{Caller, DataTree, Txn};

/// Counts the bytes the program holds, as the allocator was asked for them.
struct Counting;

/// Live heap bytes (requested sizes, without the allocator's own overhead).
static LIVE: AtomicIsize = AtomicIsize::new(0);
/// The most live heap bytes at any moment since [`peak_above`] last reset it.
static PEAK: AtomicIsize = AtomicIsize::new(0);
/// Live allocations.
static COUNT: AtomicIsize = AtomicIsize::new(0);
/// Held by each test for its whole run: each measures the whole process's heap.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
/// Live heap bytes as the server's allocator (jemalloc) holds them: each allocation rounded up
/// to its size class ([`size_class`]). This test runs on the system allocator, so this is what
/// the same allocations would cost in the server.
static CLASSED: AtomicIsize = AtomicIsize::new(0);

/// jemalloc's size class of an allocation of `size` bytes (its defaults on x86-64: multiples of
/// 16 up to 128, then four classes per doubling: 160, 192, 224, 256, 320, ...).
fn size_class(size: usize) -> usize {
    if size <= 8 {
        return 8;
    }
    if size <= 128 {
        return size.div_ceil(16) * 16;
    }
    let spacing = size.next_power_of_two() / 8;
    size.div_ceil(spacing) * spacing
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let size = layout.size() as isize;
        PEAK.fetch_max(
            LIVE.fetch_add(size, Ordering::Relaxed) + size,
            Ordering::Relaxed,
        );
        CLASSED.fetch_add(size_class(layout.size()) as isize, Ordering::Relaxed);
        COUNT.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        CLASSED.fetch_sub(size_class(layout.size()) as isize, Ordering::Relaxed);
        COUNT.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let grown = new_size as isize - layout.size() as isize;
        PEAK.fetch_max(
            LIVE.fetch_add(grown, Ordering::Relaxed) + grown,
            Ordering::Relaxed,
        );
        CLASSED.fetch_add(
            size_class(new_size) as isize - size_class(layout.size()) as isize,
            Ordering::Relaxed,
        );
        // SAFETY: forwarded with the caller's pointer, layout and size.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Runs `f`; returns what it returned, the most heap it held above the live bytes at its start
/// (its peak), and what it left held (what it returned, mostly).
fn peak_above<R>(f: impl FnOnce() -> R) -> (R, isize, isize) {
    let before = live();
    PEAK.store(before, Ordering::Relaxed);
    let r = f();
    (r, PEAK.load(Ordering::Relaxed) - before, live() - before)
}

/// Applies `request` the way the state machine does: from its encoded jute body, so that the
/// data the tree keeps comes out of a decoded entry, not out of a test literal.
fn apply(tree: &mut DataTree, zxid: i64, op: OpCode, request: Request) {
    let mut body = BytesMut::new();
    request.encode_body(&mut body);
    let body: Bytes = body.to_vec().into();
    let decoded = match Request::decode_body(op, &mut Reader::new(body)) {
        Ok(r) => r,
        Err(e) => panic!("request does not decode: {e}"),
    };
    let txn = Txn {
        zxid,
        time: 1_700_000_000_000,
        caller: Caller {
            session_id: 0,
            auth: &[],
        },
    };
    let applied = tree.apply(txn, &decoded);
    assert_eq!(
        applied.err,
        synod_proto::ErrorCode::Ok,
        "{zxid}: {request:?}"
    );
}

fn create(path: String, data: &[u8]) -> Request {
    Request::Create(CreateRequest {
        path,
        data: Some(Bytes::copy_from_slice(data)),
        acl: Acl::open_unsafe(),
        flags: CreateMode::Persistent.flags(),
    })
}

/// Fills a tree as `synod-bench --fill N --fill-fanout 1000` does; returns the heap bytes per
/// znode it holds (as requested, and in jemalloc's size classes), and the tree.
fn fill(count: u32) -> (f64, f64, DataTree) {
    let before = live();
    let classed_before = CLASSED.load(Ordering::Relaxed);
    let count_before = COUNT.load(Ordering::Relaxed);
    let mut tree = DataTree::new();
    let value = [b'v'; 100];
    let mut zxid = 1;
    let mut next = || {
        zxid += 1;
        zxid
    };
    apply(
        &mut tree,
        next(),
        OpCode::Create,
        create("/synod-fill".into(), b""),
    );
    for p in 0..count.div_ceil(1000) {
        let path = format!("/synod-fill/p{p}");
        apply(&mut tree, next(), OpCode::Create, create(path, b""));
    }
    for i in 0..count {
        let path = format!("/synod-fill/p{}/n{i}", i / 1000);
        apply(&mut tree, next(), OpCode::Create, create(path, &value));
    }
    let bytes = (live() - before) as f64;
    let allocations = (COUNT.load(Ordering::Relaxed) - count_before) as f64 / f64::from(count);
    let classed = (CLASSED.load(Ordering::Relaxed) - classed_before) as f64 / f64::from(count);
    println!(
        "{count} znodes of 100 B: {allocations:.2} allocations per znode, \
         {classed:.0} bytes per znode in jemalloc's size classes"
    );
    (bytes / f64::from(count), classed, tree)
}

/// §10's target is 50 MiB of RSS per server at 100,000 znodes of 100 bytes, about 25 MiB of it
/// the process without a tree: the tree may hold about 250 bytes per znode, of which 100 are the
/// data. This bounds the heap the tree holds (what RSS adds beyond it is the allocator's) close
/// above where it stands (271: the node with its data 188, its path 40, the map's share about
/// 43), so that no change gives the gain back unnoticed.
const MAX_BYTES_PER_ZNODE: f64 = 281.0;

/// The same in jemalloc's size classes (285: 192, 48, about 45), where a field more in a
/// node's metadata would cost 32 (its allocation would move to the 224-byte class, where it
/// was up to release 0.5.14: 317).
const MAX_CLASSED_BYTES_PER_ZNODE: f64 = 295.0;

#[test]
fn a_znode_of_100_bytes_costs_a_bounded_number_of_heap_bytes() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (per_znode, classed, mut tree) = fill(100_000);
    println!("100000 znodes of 100 B: {per_znode:.0} heap bytes per znode");
    // Overwriting every value once (data changes, copy-on-write of every node) leaves the same
    // cost: nothing of the old version is kept.
    let before = live();
    let value = [b'w'; 100];
    for i in 0..100_000u32 {
        let set = Request::SetData(SetDataRequest {
            path: format!("/synod-fill/p{}/n{i}", i / 1000),
            data: Some(Bytes::copy_from_slice(&value)),
            version: -1,
        });
        apply(&mut tree, 200_000 + i64::from(i), OpCode::SetData, set);
    }
    let grown = (live() - before) as f64 / 100_000.0;
    println!("after a set of every znode: {grown:+.0} heap bytes per znode");
    // A read shares the node's data with the reply (the reply's `Bytes` own a reference to
    // the node, released with them): no read keeps anything.
    let before = live();
    for _ in 0..2 {
        for i in 0..100_000u32 {
            let path = format!("/synod-fill/p{}/n{i}", i / 1000);
            assert!(tree.get_data(&path, &[]).is_ok_and(|(d, _)| d.is_some()));
        }
    }
    let read = (live() - before) as f64 / 100_000.0;
    println!("after two reads of every znode: {read:+.0} heap bytes per znode");
    assert!(
        per_znode <= MAX_BYTES_PER_ZNODE,
        "{per_znode:.0} heap bytes per znode of 100 bytes, more than {MAX_BYTES_PER_ZNODE}"
    );
    assert!(
        classed <= MAX_CLASSED_BYTES_PER_ZNODE,
        "{classed:.0} bytes per znode of 100 bytes in jemalloc's size classes, more than \
         {MAX_CLASSED_BYTES_PER_ZNODE}"
    );
    assert!(
        grown.abs() <= 16.0,
        "a set of every znode changed the heap by {grown:.0} bytes per znode"
    );
    assert!(
        read.abs() <= 1.0,
        "reading every znode twice grew the heap by {read:.0} bytes per znode"
    );
    drop(tree);
}

/// Room for what a snapshot path holds besides the images it is measured against: the file's
/// write buffers (1 MiB, and 64 KiB before the checksum), the checksum's read buffer (1 MiB),
/// tokio's buffer of a file (at most 2 MiB), the decoder's window (1 MiB), the loader's nodes
/// waiting to go in after the others (two pointers for every other znode: 0.8 MB here, with
/// the vector's spare room at most 1.6), the metadata, the sessions.
const SLACK: isize = 4 << 20;

/// How much less map a tree loaded from a snapshot holds than the same tree built by writes in
/// path order (its leaves full, not half full: `TreeLoader`), per znode; about 20 bytes.
const LOADED_SAVES_PER_ZNODE: isize = 15;

/// What openraft reads a snapshot's data in to send it, and what a peer receives it in: its
/// default `snapshot_max_chunk_size` (3 MiB), which synod keeps.
const CHUNK: usize = 3 << 20;

/// A snapshot of 100,000 znodes holds no second image of the tree at any point, and the paths
/// that only move its data never hold the data whole:
/// - built: encoded straight into the file (openraft is handed a window of the file), holding
///   the file's write buffers only;
/// - sent to a lagging peer: the file checked against its checksum in pieces, then its data read
///   a chunk at a time, as openraft sends it;
/// - received and installed: the chunks written to a file, then decoded from it a window at a
///   time into the new tree, and copied from it into the snapshot file;
/// - backed up (`GET /snapshot`): the snapshot file read a window at a time into the backup's
///   file, the tree never decoded;
/// - loaded at start: the tree the file becomes, decoded from it a window at a time, each node
///   straight into its `Node` and the map: neither the file, nor an owned image of every node
///   (about 350 bytes a znode), nor a list of the nodes or their paths; and the tree loaded
///   is smaller than the one built, its map's leaves full.
#[test]
fn a_snapshot_is_built_sent_installed_backed_up_and_loaded_without_a_second_image() {
    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let n = 100_000;
    let (built_per_znode, _, tree) = fill(n);
    let znodes = tree.node_count();
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("temp dir: {e}"),
    };
    let state = dir.path().join("sm");
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    let mut sm = match StateMachine::open(&state, (), None) {
        Ok(sm) => sm,
        Err(e) => panic!("open: {e}"),
    };
    {
        let replica = sm.replica();
        let mut r = lock(&replica);
        r.tree = tree;
        r.last_applied = Some(LogId::new(CommittedLeaderId::new(1, 1), 100_102));
    }

    let (built, build_peak, _) = peak_above(|| {
        rt.block_on(async { sm.get_snapshot_builder().await.build_snapshot().await })
            .map_err(|e| e.to_string())
    });
    let (meta, data_len) = match built {
        Ok(s) => (
            s.meta.clone(),
            s.snapshot.data_len().unwrap_or_default() as isize,
        ),
        Err(e) => panic!("build: {e}"),
    };
    let file = match std::fs::read(state.join(SNAPSHOT_FILE)) {
        Ok(f) => f,
        Err(e) => panic!("read the snapshot file: {e}"),
    };
    let file_len = file.len() as isize;
    // The data is the file's last bytes before its checksum (32 bytes).
    let data = file[file.len() - 32 - data_len as usize..file.len() - 32].to_vec();
    println!("snapshot of {n} znodes: {data_len} bytes of data, built with a peak of {build_peak} heap bytes");

    // What openraft's sender does: the data's end, then each chunk from its offset.
    let (sent, send_peak, _) = peak_above(|| {
        rt.block_on(async {
            let Some(mut s) = sm.get_current_snapshot().await.map_err(|e| e.to_string())? else {
                return Err("no current snapshot".to_string());
            };
            let io = |e: std::io::Error| e.to_string();
            let end = s
                .snapshot
                .seek(std::io::SeekFrom::End(0))
                .await
                .map_err(io)?;
            let (mut offset, mut sum) = (0, Sha256::new());
            while offset < end {
                s.snapshot
                    .seek(std::io::SeekFrom::Start(offset))
                    .await
                    .map_err(io)?;
                let mut chunk = Vec::with_capacity(CHUNK);
                while chunk.capacity() > chunk.len() {
                    if s.snapshot.read_buf(&mut chunk).await.map_err(io)? == 0 {
                        break;
                    }
                }
                offset += chunk.len() as u64;
                sum.update(&chunk);
            }
            Ok(sum.finalize())
        })
    });
    match sent {
        Ok(sum) => assert_eq!(
            sum,
            Sha256::digest(&data),
            "the data sent is the data built"
        ),
        Err(e) => panic!("the current snapshot: {e}"),
    }
    println!("sent to a peer with a peak of {send_peak} heap bytes");

    let mut learner = match StateMachine::open(&dir.path().join("learner"), (), None) {
        Ok(sm) => sm,
        Err(e) => panic!("open: {e}"),
    };
    let (installed, install_peak, _) = peak_above(|| {
        rt.block_on(async {
            let mut received = learner
                .begin_receiving_snapshot()
                .await
                .map_err(|e| e.to_string())?;
            for chunk in data.chunks(CHUNK) {
                received.write_all(chunk).await.map_err(|e| e.to_string())?;
            }
            received.shutdown().await.map_err(|e| e.to_string())?;
            learner
                .install_snapshot(&meta, received)
                .await
                .map_err(|e| e.to_string())
        })
    });
    if let Err(e) = installed {
        panic!("install: {e}");
    }
    assert_eq!(lock(&learner.replica()).tree.node_count(), znodes);
    drop(learner);
    println!("received and installed with a peak of {install_peak} heap bytes");

    let (backup, backup_peak, _) = peak_above(|| {
        let snapshot = std::fs::File::open(state.join(SNAPSHOT_FILE))?;
        synod_raft_store::backup::seal_file(snapshot, |_| tempfile::tempfile())
    });
    let backup_len = match backup.map_err(|e| e.to_string()).and_then(|(mut out, _)| {
        use std::io::{Read, Seek};
        let mut sealed = Vec::new();
        out.rewind().map_err(|e| e.to_string())?;
        out.read_to_end(&mut sealed).map_err(|e| e.to_string())?;
        let whole = synod_raft_store::backup::seal(&file).map_err(|e| e.to_string())?;
        Ok((sealed == whole, sealed.len()))
    }) {
        Ok((true, len)) => len as isize,
        Ok((false, _)) => panic!("the backup of the file differs from the backup in memory"),
        Err(e) => panic!("backup: {e}"),
    };
    drop((file, data));
    println!("backed up ({backup_len} bytes) with a peak of {backup_peak} heap bytes");

    drop(sm);
    let (loaded, load_peak, tree_bytes) = peak_above(|| StateMachine::open(&state, (), None));
    match &loaded {
        Ok(sm) => assert_eq!(lock(&sm.replica()).tree.node_count(), znodes),
        Err(e) => panic!("load: {e}"),
    }
    let (load_beyond, install_beyond) = (load_peak - tree_bytes, install_peak - tree_bytes);
    println!(
        "loaded ({tree_bytes} heap bytes) with a peak of {load_peak} heap bytes: \
         {load_beyond} bytes beyond the tree, for {file_len} bytes of file \
         (installed: {install_beyond} beyond the tree)"
    );

    assert!(
        build_peak <= SLACK,
        "building held {build_peak} bytes for {data_len} bytes of data"
    );
    assert!(
        send_peak <= CHUNK as isize + SLACK,
        "sending held {send_peak} bytes for {data_len} bytes of data"
    );
    assert!(
        backup_peak <= SLACK,
        "backing up held {backup_peak} bytes for a backup of {backup_len}"
    );
    assert!(
        load_beyond <= SLACK,
        "loading held {load_beyond} bytes beyond the tree"
    );
    assert!(
        install_beyond <= SLACK,
        "installing held {install_beyond} bytes beyond the tree"
    );
    let built = (built_per_znode * n as f64) as isize;
    assert!(
        tree_bytes <= built - LOADED_SAVES_PER_ZNODE * n as isize,
        "the tree loaded holds {tree_bytes} heap bytes, the tree built {built}"
    );
}
