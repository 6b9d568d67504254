//! Prometheus metrics: owns the process's `metrics` recorder (metrics-exporter-prometheus, without
//! its own HTTP listener), the cheap hot-path hooks the request pipeline calls (per-operation
//! counts and latency, errors per ZooKeeper code, requests in flight), the gauges sampled from the
//! node at scrape time (with the standard `process_*` series and what the allocator holds), and
//! the `/metrics` route that renders it all in the text format.
//!
//! Recorded elsewhere through the `metrics` facade: Raft log append and fsync latency
//! (`raft-store` log store), apply time and snapshot build time and size (`raft-store` state
//! machine).
//!
//! `synod_stage_seconds{stage}` breaks a request's time on this node into the stages of
//! [`Stage`], so that where the time goes is read off a running cluster (docs/operations.md,
//! "Where a request's time goes"). It and `synod_request_duration_seconds{op}`, recorded for
//! every request, are synod's own fixed-bucket histograms ([`crate::admin::histogram`]),
//! rendered after the exporter's series.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use metrics::Counter;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use synod_proto::{ErrorCode, OpCode};

use crate::admin::histogram::{Family, Histogram, LATENCY_BUCKETS};
use crate::admin::views::Role;
use crate::node::Node;

/// The operations of [`OpCode::ALL`]; `op as usize` is an operation's place in it.
const OPS: usize = OpCode::ALL.len();

/// `synod_request_duration_seconds{op}`, indexed by `op as usize`.
static OP_LATENCY: [Histogram; OPS] = [const { Histogram::new() }; OPS];

/// `synod_stage_seconds{stage}`, indexed by [`Stage::index`].
static STAGE_LATENCY: [Histogram; Stage::ALL.len()] =
    [const { Histogram::new() }; Stage::ALL.len()];

/// A stage of a request's way through this node, timed into `synod_stage_seconds{stage}`. A
/// write through a follower passes `propose_queue`, `forward` (which contains the leader's
/// `propose_queue` and `commit`), then waits here until its entry is applied: `write_applied`
/// spans all of that from the moment the request was read. A linearizable read passes
/// `read_index` and `read_wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// A command in the proposer's queue: from being proposed to its batch entry being handed
    /// to openraft (leader) or its forward frame being queued to the leader (follower) — the
    /// group-commit wait.
    ProposeQueue,
    /// Follower: one forwarded write's round trip to the leader, until the leader applied it.
    Forward,
    /// Leader: one batch entry from `client_write` to applied on the leader — its append and
    /// fdatasync here, replication to a quorum (their appends and fdatasyncs), commit, apply.
    Commit,
    /// Leader: one AppendEntries round trip to a follower, its append and fdatasync included.
    Replicate,
    /// Follower: handling one AppendEntries that carries entries, from its decoded request to
    /// its answer (the append and fdatasync here, mostly); `replicate` less this is the
    /// transport's and the two Raft cores' share.
    AppendEntries,
    /// A write from being read off its connection to its entry applied on this node (the whole
    /// way to its reply, less queueing the reply).
    WriteApplied,
    /// One read-index round: the leader confirming its leadership with a quorum (forwarded to
    /// it from a follower).
    ReadIndex,
    /// A linearizable read waiting for this node to apply up to its read point.
    ReadWait,
}

impl Stage {
    /// Every stage, in the order of [`Stage::index`].
    const ALL: [Stage; 8] = [
        Stage::ProposeQueue,
        Stage::Forward,
        Stage::Commit,
        Stage::Replicate,
        Stage::AppendEntries,
        Stage::WriteApplied,
        Stage::ReadIndex,
        Stage::ReadWait,
    ];

    /// The `stage` label.
    pub fn name(self) -> &'static str {
        match self {
            Stage::ProposeQueue => "propose_queue",
            Stage::Forward => "forward",
            Stage::Commit => "commit",
            Stage::Replicate => "replicate",
            Stage::AppendEntries => "append_entries",
            Stage::WriteApplied => "write_applied",
            Stage::ReadIndex => "read_index",
            Stage::ReadWait => "read_wait",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The installed recorder and the per-operation handles, resolved once.
struct Installed {
    /// Renders the registry in the Prometheus text format.
    handle: PrometheusHandle,
    /// `synod_requests_total{op}`, indexed by `op as usize`, so that a request completes
    /// without a registry lookup.
    ops: Vec<Counter>,
    /// The standard `process_*` series (resident memory, CPU seconds, open fds, threads), read
    /// from `/proc` at each scrape.
    process: metrics_process::Collector,
}

/// What the process's allocator holds, in bytes, as its own counters tell (jemalloc's
/// `stats.*`). A program that embeds the node with another allocator reports none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocatorStats {
    /// Bytes the program has allocated and not freed: the live heap.
    pub allocated: u64,
    /// Bytes in the pages that hold those allocations (`allocated` plus the unused rest of
    /// those pages).
    pub active: u64,
    /// Bytes of the allocator's memory that are resident: the heap's share of the process's
    /// RSS, freed pages not yet given back included.
    pub resident: u64,
    /// Bytes the allocator keeps mapped but has given back to the OS (not resident).
    pub retained: u64,
    /// Bytes of the allocator's own bookkeeping.
    pub metadata: u64,
}

/// Reads [`AllocatorStats`]; set once by the binary that chose the allocator.
static ALLOCATOR_STATS: OnceLock<fn() -> Option<AllocatorStats>> = OnceLock::new();

/// Makes `/metrics` report the allocator's counters as `synod_allocator_bytes{kind}`, read
/// by `read` at each scrape (`None`: nothing to report this time). Later calls do nothing.
pub fn set_allocator_stats(read: fn() -> Option<AllocatorStats>) {
    let _ = ALLOCATOR_STATS.set(read);
}

static INSTALLED: OnceLock<Option<Installed>> = OnceLock::new();
/// Client requests read and not yet answered, over all connections.
static IN_FLIGHT: AtomicI64 = AtomicI64::new(0);

/// Installs the Prometheus recorder for this process (once; later calls do nothing). Call it
/// before the node opens its storage, so that the storage's histograms register with it. If
/// another recorder is already installed (an embedding program's), synod records into that one
/// and `/metrics` says so.
pub fn install() {
    INSTALLED.get_or_init(|| {
        let builder = match PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
        {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(%e, "metrics: cannot configure histogram buckets");
                return None;
            }
        };
        let handle = match builder.install_recorder() {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(%e, "metrics: a recorder is already installed; /metrics is off");
                return None;
            }
        };
        describe();
        build_info();
        let process = metrics_process::Collector::default();
        process.describe();
        let ops = OpCode::ALL
            .iter()
            .map(|&op| metrics::counter!("synod_requests_total", "op" => op.name()))
            .collect();
        Some(Installed {
            handle,
            ops,
            process,
        })
    });
}

/// `synod_build_info` (always 1): this binary's version and the versions of what it speaks and
/// writes — the peer protocol, the snapshot file, the backup — so that a mixed-version cluster
/// shows what each member runs.
fn build_info() {
    let v = |n: u32| n.to_string();
    metrics::gauge!(
        "synod_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "peer_protocol" => v(crate::peer::transport::PROTOCOL_VERSION),
        "snapshot_format" => v(synod_raft_store::snapshot::SNAPSHOT.version),
        "backup_format" => v(synod_raft_store::backup::BACKUP.version),
        "log_format" => v(synod_raft_store::log_store::LOG_FORMAT),
        "cluster_version" => v(synod_raft_store::types::CLUSTER_VERSION)
    )
    .set(1.0);
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        "synod_build_info",
        "1, labelled with this binary's version and the versions of the peer protocol, the \
         snapshot file and the backup it speaks and writes"
    );
    describe_counter!(
        "synod_requests_total",
        "client requests answered, by operation"
    );
    describe_counter!(
        "synod_request_errors_total",
        "client requests answered with a ZooKeeper error, by code"
    );
    describe_gauge!(
        "synod_outstanding_requests",
        "client requests read and not yet answered"
    );
    describe_gauge!("synod_raft_term", "current Raft term");
    describe_counter!(
        "synod_raft_leader_changes_total",
        "times this node saw the leader change (including to none)"
    );
    describe_gauge!(
        "synod_raft_is_leader",
        "1 if this node is the leader, else 0"
    );
    describe_gauge!("synod_raft_last_log_index", "last index in the Raft log");
    describe_gauge!("synod_raft_commit_index", "Raft commit index");
    describe_gauge!("synod_raft_applied_index", "last applied index (zxid)");
    describe_gauge!(
        "synod_raft_snapshot_index",
        "last index covered by the current snapshot"
    );
    describe_gauge!(
        "synod_raft_purged_index",
        "last index purged from the Raft log"
    );
    describe_gauge!("synod_raft_voters", "voters in the current membership");
    describe_gauge!("synod_raft_learners", "learners in the current membership");
    describe_histogram!(
        "synod_snapshot_build_seconds",
        Unit::Seconds,
        "time to serialize and persist one snapshot"
    );
    describe_gauge!(
        "synod_snapshot_bytes",
        Unit::Bytes,
        "size of the last snapshot built"
    );
    describe_counter!(
        "synod_snapshots_built_total",
        "snapshots built by this node"
    );
    describe_gauge!("synod_sessions", "open sessions (cluster-wide)");
    describe_gauge!(
        "synod_disk_free_bytes",
        Unit::Bytes,
        "bytes free on the data directory's file system"
    );
    describe_gauge!(
        "synod_disk_writes_refused",
        "1 while writes that grow the tree are refused: free space below --min-free-space-mb"
    );
    describe_counter!(
        "synod_read_points_total",
        "linearizable read points this node confirmed as leader, by how: quorum_round (a \
         heartbeat round to a quorum, shared by every read queued meanwhile) or follower_vote \
         (no round: on the saved votes of as many followers as make a majority with this \
         leader's, read after the reads began)"
    );
    describe_counter!(
        "synod_read_point_leader_changes_total",
        "read-point requests this follower abandoned because it learned of another leader \
         while the one it had asked did not answer (the round then asked the new leader)"
    );
    describe_counter!(
        "synod_forward_leader_changes_total",
        "forwards of client writes this follower abandoned because it learned of another leader \
         while the one it had sent them to did not answer (their connections closed)"
    );
    describe_counter!(
        "synod_writes_refused_out_of_order_total",
        "client writes refused to keep a connection's writes in order: an earlier one was in \
         flight to another leader, or had failed (the connection closes); on the leader also a \
         follower's forwards, for their peer connection's order"
    );
    describe_counter!(
        "synod_peer_connections_spent_total",
        "peer connections this node closed because a write forwarded on them failed (this node \
         stepped down with it in flight, or no longer led when it came) or was refused: none \
         after it may take effect, so the follower's next forwards go on a new connection"
    );
    describe_counter!(
        "synod_read_point_hedges_total",
        "read-point rounds in which this leader, the followers it asked first for their saved \
         votes being late, asked the others too (a follower down, paused or slow)"
    );
    describe_counter!(
        "synod_client_connections_refused_total",
        "client connections turned away before being served, by reason (max_connections, \
         max_connections_per_ip, tls_handshake, accept_failed)"
    );
    describe_counter!(
        "synod_admin_connections_refused_total",
        "admin connections turned away before being served, by reason (max_connections, \
         max_connections_per_ip, tls_handshake)"
    );
    describe_counter!(
        "synod_disk_refused_writes_total",
        "client writes refused because the data directory's disk was almost full"
    );
    describe_gauge!("synod_watches", "watches registered on this node");
    describe_gauge!("synod_znodes", "znodes in the tree");
    describe_gauge!(
        "synod_cluster_version",
        "the cluster version of the applied state (which formats the cluster writes)"
    );
    describe_gauge!(
        "synod_tree_data_bytes",
        Unit::Bytes,
        "bytes of znode data in the tree"
    );
    describe_gauge!("synod_connections", "client connections on this node");
    describe_gauge!(
        "synod_allocator_bytes",
        Unit::Bytes,
        "what the allocator (jemalloc: synod's heap and RocksDB's) holds: kind=allocated (live \
         heap), active, resident, retained, metadata"
    );
    describe_gauge!(
        "synod_rocksdb_memory_bytes",
        Unit::Bytes,
        "what RocksDB holds in memory (part of synod_allocator_bytes): store=log|audit, \
         kind=memtables|table_readers|block_cache"
    );
}

/// A request read from a client and not yet answered; counted in `synod_outstanding_requests`
/// until dropped (answered, or its connection gone).
pub struct InFlight(());

impl InFlight {
    pub fn new() -> InFlight {
        IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
        InFlight(())
    }
}

impl Default for InFlight {
    fn default() -> Self {
        InFlight::new()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Records one answered client request: its operation, how long it took from being read to
/// its reply, its result.
pub fn request_done(op: OpCode, took: Duration, err: ErrorCode) {
    let Some(Some(m)) = INSTALLED.get() else {
        return;
    };
    let op = op as usize;
    if let (Some(count), Some(latency)) = (m.ops.get(op), OP_LATENCY.get(op)) {
        count.increment(1);
        latency.record(took);
    }
    if err != ErrorCode::Ok {
        metrics::counter!("synod_request_errors_total", "code" => err.name()).increment(1);
    }
}

/// Records that a request (or batch) spent the time since `since` in `stage`.
pub fn stage(stage: Stage, since: Instant) {
    stage_took(stage, since.elapsed());
}

/// Records that a request (or batch) spent `took` in `stage`.
pub fn stage_took(stage: Stage, took: Duration) {
    if let Some(h) = STAGE_LATENCY.get(stage.index()) {
        h.record(took);
    }
}

/// Appends synod's own histograms ([`OP_LATENCY`], [`STAGE_LATENCY`]) to `out`.
fn render_histograms(out: &mut String) {
    Family {
        name: "synod_request_duration_seconds",
        help: "time from reading a client request to queueing its reply, by operation",
        label: "op",
        series: OpCode::ALL
            .iter()
            .zip(&OP_LATENCY)
            .map(|(op, h)| (op.name(), h))
            .collect(),
    }
    .render(out);
    Family {
        name: "synod_stage_seconds",
        help: "time a request spent in one stage on this node (propose_queue, forward, commit, \
               replicate, append_entries, write_applied, read_index, read_wait)",
        label: "stage",
        series: Stage::ALL
            .iter()
            .zip(&STAGE_LATENCY)
            .map(|(s, h)| (s.name(), h))
            .collect(),
    }
    .render(out);
}

/// Samples the node's state into the gauges.
async fn sample(node: &Node) {
    let s = crate::admin::views::status(node).await;
    let m = node.raft.metrics().borrow().clone();
    let g = |name: &'static str, v: f64| metrics::gauge!(name).set(v);
    g("synod_raft_term", s.term as f64);
    g(
        "synod_raft_is_leader",
        f64::from(u8::from(s.role == Role::Leader)),
    );
    g("synod_raft_last_log_index", s.last_log_index as f64);
    g("synod_raft_commit_index", s.committed_index as f64);
    g("synod_raft_applied_index", s.applied_index as f64);
    g(
        "synod_raft_snapshot_index",
        m.snapshot.map(|l| l.index).unwrap_or(0) as f64,
    );
    g(
        "synod_raft_purged_index",
        m.purged.map(|l| l.index).unwrap_or(0) as f64,
    );
    let membership = m.membership_config.membership();
    g("synod_raft_voters", membership.voter_ids().count() as f64);
    g(
        "synod_raft_learners",
        membership.learner_ids().count() as f64,
    );
    g("synod_sessions", s.sessions as f64);
    g("synod_cluster_version", f64::from(s.cluster_version));
    g("synod_disk_free_bytes", node.disk.free_bytes() as f64);
    g(
        "synod_disk_writes_refused",
        f64::from(u8::from(node.disk.is_low())),
    );
    metrics::counter!("synod_disk_refused_writes_total").absolute(node.disk.refused());
    g("synod_watches", s.watches as f64);
    g("synod_znodes", s.znodes as f64);
    g("synod_tree_data_bytes", s.data_bytes as f64);
    g("synod_connections", s.connections as f64);
    g(
        "synod_outstanding_requests",
        IN_FLIGHT.load(Ordering::Relaxed).max(0) as f64,
    );
    if let Some(Some(m)) = INSTALLED.get() {
        m.process.collect();
    }
    if let Some(stats) = ALLOCATOR_STATS.get().and_then(|read| read()) {
        let kinds = [
            ("allocated", stats.allocated),
            ("active", stats.active),
            ("resident", stats.resident),
            ("retained", stats.retained),
            ("metadata", stats.metadata),
        ];
        for (kind, bytes) in kinds {
            metrics::gauge!("synod_allocator_bytes", "kind" => kind).set(bytes as f64);
        }
    }
    let stores = [
        ("log", node.log_memory.read()),
        ("audit", node.audit.as_ref().map(|a| a.memory())),
    ];
    for (store, memory) in stores {
        match memory {
            Some(Ok(m)) => {
                let kinds = [
                    ("memtables", m.memtables),
                    ("table_readers", m.table_readers),
                    ("block_cache", m.block_cache),
                ];
                for (kind, bytes) in kinds {
                    metrics::gauge!("synod_rocksdb_memory_bytes", "store" => store, "kind" => kind)
                        .set(bytes as f64);
                }
            }
            Some(Err(e)) => tracing::debug!(%e, store, "cannot read RocksDB's memory"),
            None => {}
        }
    }
    for t in crate::admin::tenants::views(node) {
        let usage = [
            ("znodes", t.usage.znodes, t.quota.znodes),
            ("bytes", t.usage.bytes, t.quota.bytes),
            ("ephemerals", t.usage.ephemerals, t.quota.ephemerals),
            ("sessions", t.usage.sessions, t.quota.sessions),
            ("watches", t.watches_here as u64, t.quota.watches),
        ];
        for (resource, used, limit) in usage {
            let labels = [
                ("tenant", t.name.clone()),
                ("resource", resource.to_string()),
            ];
            metrics::gauge!("synod_tenant_usage", &labels).set(used as f64);
            // -1: unlimited.
            let limit = limit.map_or(-1.0, |l| l as f64);
            metrics::gauge!("synod_tenant_quota", &labels).set(limit);
        }
    }
}

/// Counts leader changes and drains histogram buckets now and then (the exporter needs its
/// upkeep even when nobody scrapes). Runs until the node's Raft stops.
pub fn spawn_background(node: Arc<Node>) {
    let mut rx = node.raft.metrics();
    tokio::spawn(async move {
        let changes = metrics::counter!("synod_raft_leader_changes_total");
        let mut leader = rx.borrow().current_leader;
        let mut upkeep = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                r = rx.changed() => {
                    if r.is_err() {
                        return;
                    }
                    let now = rx.borrow().current_leader;
                    if now != leader {
                        changes.increment(1);
                        leader = now;
                    }
                }
                _ = upkeep.tick() => {
                    if let Some(Some(m)) = INSTALLED.get() {
                        m.handle.run_upkeep();
                    }
                }
            }
        }
    });
}

/// `GET /metrics`: the Prometheus text format, gauges sampled now.
pub async fn render(State(node): State<Arc<Node>>) -> axum::response::Response {
    let Some(Some(m)) = INSTALLED.get() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed in this process\n",
        )
            .into_response();
    };
    sample(&node).await;
    let mut text = m.handle.render();
    if !text.is_empty() && !text.ends_with("\n\n") {
        text.push('\n');
    }
    render_histograms(&mut text);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_has_its_own_histogram_slot_and_label() {
        let mut names = std::collections::HashSet::new();
        for (i, s) in Stage::ALL.iter().enumerate() {
            assert_eq!(s.index(), i, "{s:?} is out of place in Stage::ALL");
            assert!(names.insert(s.name()), "{s:?} repeats a label");
        }
    }

    #[test]
    fn an_operation_is_at_its_place_in_all() {
        for (i, &op) in OpCode::ALL.iter().enumerate() {
            assert_eq!(op as usize, i, "{op:?}");
        }
    }

    #[test]
    fn the_request_histograms_render_every_operation_and_stage() {
        stage(Stage::ReadWait, Instant::now());
        let mut out = String::new();
        render_histograms(&mut out);
        for op in OpCode::ALL {
            let line = format!(
                "synod_request_duration_seconds_count{{op=\"{}\"}} ",
                op.name()
            );
            assert!(out.contains(&line), "no {line}");
        }
        for s in Stage::ALL {
            let line = format!(
                "synod_stage_seconds_bucket{{stage=\"{}\",le=\"+Inf\"}} ",
                s.name()
            );
            assert!(out.contains(&line), "no {line}");
        }
        assert!(!out.contains("synod_stage_seconds_count{stage=\"read_wait\"} 0\n"));
    }
}
