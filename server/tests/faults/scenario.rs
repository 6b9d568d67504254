//! One fault scenario end to end: start a cluster whose peer links run through a [`FaultNet`],
//! run every client of [`workload`] against it, inject the scenario's fault, heal, let the nodes
//! converge, then check the recorded history and the replicas' digests.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use synod_client::{Client, ConnectOptions, Op, OpResult};
use synod_faults::checker::{check, Budget, Verdict};
use synod_faults::checks::{
    ephemeral_lifetime, lock_never_two_holders, max_unavailability, no_lost_writes,
    sequential_names_unique_increasing, session_end_bound, session_ended_while_connected,
    watch_events_exactly_once_in_order, AckedWrite, FinalNode, HoldInterval, LeaderFault,
    SeqCreate, Summary,
};
use synod_faults::history::{Operation, Outcome as HOutcome};
use synod_faults::model::{
    MultiModel, MultiOp, MultiRet, RegisterModel, RegisterOp, RegisterRet, TxnOp, TxnOpRet, Value,
    Znode, ZnodeOp,
};

use crate::kept_logs::LogsOnFailure;
use crate::net::{FaultNet, Wan};
use crate::workload::{self, plock, Load, LockOp, MULTI_KEYS, OP_TIMEOUT};
use synod_testkit::inject::{flip_middle, free_bytes, record_files, set_clock, Strace, Tmpfs};
use synod_testkit::netns::Netns;
use synod_testkit::{blocking, members_arg, Ensemble, Node, NodeArgs, SynodEnsemble};

/// The session tick the nodes run with (`--tick-ms` default): the ephemeral check's slack.
const TICK: Duration = Duration::from_millis(500);
/// How many register znodes the register clients share.
const REGISTERS: usize = 6;

/// What goes wrong in a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL the leader, restart it.
    KillLeader,
    /// SIGKILL a follower, restart it.
    KillFollower,
    /// SIGKILL the server the watcher (and a share of the clients) is connected to.
    KillConnected,
    /// SIGKILL every node, restart them all.
    KillAll,
    /// SIGSTOP the leader for longer than the election timeout, then SIGCONT.
    PauseLeader,
    /// Cut every peer link of the leader, both ways, then heal.
    PartitionLeader,
    /// Five voters: the leader and a follower with clients cut from the other three, both
    /// ways, for longer than a session's timeout, then healed. The follower keeps hearing the
    /// old leader; it must close its clients' connections, or the majority expires their
    /// sessions while they see themselves connected.
    MinorityPartition,
    /// Drop everything the leader sends to its peers (it still hears them), then heal.
    OneWayLeader,
    /// A follower down while the others write past a snapshot and purge their logs: it must
    /// catch up by snapshot, and is killed again during that catch-up.
    SnapshotCatchUp,
    /// Add a fourth and a fifth node as learners, promote them, remove the leader (joint
    /// consensus at each step).
    Membership,
    /// A fourth node joins as a learner; its promotion (joint consensus) is proposed by a
    /// leader that hears no acknowledgement (its peers' replies are cut), so the joint
    /// configuration reaches the others uncommitted; the leader is killed. The new leader
    /// (elected under the joint configuration: the newcomer votes) must carry the change on,
    /// and the promotion, asked again of it, completes.
    MembershipFailover,
    /// All of the above that keep a majority, one after the other.
    Mixed,
    /// Every peer link becomes a WAN link ([`Wan::PROFILE`]) for the hold: no election may
    /// happen; the p99 latency is reported.
    Wan,
    /// On hosts of their own (network namespaces): the leader is cut from the other nodes and
    /// so is the clients' host: the clients are on the old leader's side of the partition.
    ClientPartition,
    /// On hosts of their own (network namespaces): the leader's host is cut from the others by
    /// blackhole routes, whatever the port and whoever dials, then healed.
    HostPartition,
    /// Every node's fdatasync/fsync is delayed by 20 ms (strace) for the hold.
    SlowFsync,
    /// The leader's fdatasync/fsync fail with EIO (strace): it must stop (fail-stop) and be
    /// restarted on a healthy disk.
    FsyncEio,
    /// A follower's data directory moves to a small tmpfs filled to below its free-space
    /// reserve: it refuses its clients' writes; the ballast is removed after the hold.
    DiskFull,
    /// A stopped follower's write-ahead log gets a flipped byte: it must refuse to start, and is
    /// rebuilt from its peers under load (removed, started empty with --join, added, promoted).
    Corruption,
    /// The leader's wall clock jumps 5 minutes ahead, runs at twice the rate, jumps back; then a
    /// follower's (libfaketime).
    ClockJump,
}

/// A scenario: a name for the table, its fault, how long the fault lasts.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub name: &'static str,
    pub fault: Fault,
    /// How long the fault is held before healing.
    pub hold: Duration,
}

/// Every scenario of the full suite.
pub const FULL: &[Spec] = &[
    Spec {
        name: "kill-leader",
        fault: Fault::KillLeader,
        hold: Duration::from_secs(3),
    },
    Spec {
        name: "kill-follower",
        fault: Fault::KillFollower,
        hold: Duration::from_secs(3),
    },
    Spec {
        name: "kill-connected-server",
        fault: Fault::KillConnected,
        hold: Duration::from_secs(3),
    },
    Spec {
        name: "kill-all-restart",
        fault: Fault::KillAll,
        hold: Duration::from_secs(2),
    },
    Spec {
        name: "pause-leader",
        fault: Fault::PauseLeader,
        hold: Duration::from_secs(3),
    },
    Spec {
        name: "partition-leader",
        fault: Fault::PartitionLeader,
        hold: Duration::from_secs(4),
    },
    Spec {
        name: "one-way-partition",
        fault: Fault::OneWayLeader,
        hold: Duration::from_secs(4),
    },
    // Longer than a session's timeout after the majority's takeover.
    Spec {
        name: "minority-partition",
        fault: Fault::MinorityPartition,
        hold: Duration::from_secs(12),
    },
    Spec {
        name: "snapshot-catch-up",
        fault: Fault::SnapshotCatchUp,
        hold: Duration::from_secs(8),
    },
    Spec {
        name: "membership-change",
        fault: Fault::Membership,
        hold: Duration::from_secs(1),
    },
    Spec {
        name: "membership-failover",
        fault: Fault::MembershipFailover,
        hold: Duration::from_secs(2),
    },
    Spec {
        name: "mixed",
        fault: Fault::Mixed,
        hold: Duration::from_secs(2),
    },
    Spec {
        name: "wan",
        fault: Fault::Wan,
        hold: Duration::from_secs(10),
    },
    Spec {
        name: "client-partition",
        fault: Fault::ClientPartition,
        hold: Duration::from_secs(3),
    },
    Spec {
        name: "host-partition",
        fault: Fault::HostPartition,
        hold: Duration::from_secs(4),
    },
    Spec {
        name: "slow-fsync",
        fault: Fault::SlowFsync,
        hold: Duration::from_secs(5),
    },
    Spec {
        name: "fsync-eio",
        fault: Fault::FsyncEio,
        hold: Duration::from_secs(2),
    },
    Spec {
        name: "disk-full",
        fault: Fault::DiskFull,
        hold: Duration::from_secs(4),
    },
    Spec {
        name: "corruption",
        fault: Fault::Corruption,
        hold: Duration::from_secs(1),
    },
    Spec {
        name: "clock-jump",
        fault: Fault::ClockJump,
        hold: Duration::from_secs(3),
    },
];

/// The scenarios the test command runs (`cargo test`): one crash, one partition, one snapshot
/// catch-up, one failing disk, one leader lost during a membership change.
pub const SHORT: &[Spec] = &[
    Spec {
        name: "kill-leader",
        fault: Fault::KillLeader,
        hold: Duration::from_secs(2),
    },
    Spec {
        name: "partition-leader",
        fault: Fault::PartitionLeader,
        hold: Duration::from_secs(3),
    },
    // Snapshots every 200 entries while a follower catches up: a leader once died here (its
    // snapshot file was replaced between openraft's two looks at it).
    Spec {
        name: "snapshot-catch-up",
        fault: Fault::SnapshotCatchUp,
        hold: Duration::from_secs(6),
    },
    // A disk that fails under the leader: it must stop without acknowledging what it could not
    // persist.
    Spec {
        name: "fsync-eio",
        fault: Fault::FsyncEio,
        hold: Duration::from_secs(2),
    },
    // A leader lost between the two halves of a membership change: its successor must end the
    // joint configuration (it once stayed forever).
    Spec {
        name: "membership-failover",
        fault: Fault::MembershipFailover,
        hold: Duration::from_secs(2),
    },
];

impl Fault {
    /// Whether the scenario runs its nodes and clients on hosts of their own (network
    /// namespaces, [`Netns`]) instead of 127.0.0.1 with proxies on the peer links.
    pub fn on_hosts(self) -> bool {
        matches!(self, Fault::ClientPartition | Fault::HostPartition)
    }
}

/// The host (of a scenario's [`Netns`]) the clients run on: after the three nodes'.
pub const CLIENT_HOST: usize = 3;

/// What a scenario found: its table row and a description of every anomaly.
pub struct Outcome_ {
    pub summary: Summary,
    pub details: Vec<String>,
}

/// Every node's flags: the first `voters` are the initial voters, later ones join (`--join`);
/// each dials the others through its own proxy of `net`.
fn node_args(net: Arc<FaultNet>, voters: usize) -> NodeArgs {
    Arc::new(move |node: &Node, nodes: &[Node]| {
        let initial = &nodes[..nodes.len().min(voters)];
        let mut routes = Vec::new();
        for other in nodes.iter().filter(|o| o.id != node.id) {
            let target: SocketAddr = ([127, 0, 0, 1], other.peer_port).into();
            match net.link(node.id, other.id, target) {
                Ok(proxy) => routes.push(format!("{}={proxy}", other.id)),
                Err(e) => eprintln!("fault net: no proxy {}->{}: {e}", node.id, other.id),
            }
        }
        let mut args = vec!["--peer-route".into(), routes.join(",")];
        if node.id <= voters {
            args.extend(["--members".into(), members_arg(initial)]);
        } else {
            let own = std::slice::from_ref(node);
            args.extend(["--join".into(), "--members".into(), members_arg(own)]);
        }
        args
    })
}

/// The connect string of all nodes, starting with node `first`. Only the idle session keeps that
/// order (`workload::idle_session`); the other clients shuffle it, as ZooKeeper's do, so their
/// sessions land on any node.
fn servers_from(addrs: &[SocketAddr], first: usize) -> String {
    (0..addrs.len())
        .map(|i| addrs[(first + i) % addrs.len()].to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Sets [`Load::stop`] when dropped.
struct StopOnDrop(Arc<Load>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Relaxed);
    }
}

/// Runs one scenario; `Err` if the harness itself could not run it (cluster did not start...).
/// Runs one scenario. `hosts`: the network namespaces of an [`Fault::on_hosts`] scenario (the
/// caller runs this in its [`CLIENT_HOST`]).
pub async fn run(bin: &Path, spec: Spec, hosts: Option<&Netns>) -> Result<Outcome_, String> {
    let net = FaultNet::new().map_err(|e| format!("fault net: {e}"))?;
    let mut extra: Vec<String> = Vec::new();
    if spec.fault == Fault::SnapshotCatchUp {
        extra.extend(["--snapshot-entries".to_string(), "200".to_string()]);
    }
    if spec.fault == Fault::DiskFull {
        extra.extend([
            "--min-free-space-mb".to_string(),
            DISK_RESERVE_MB.to_string(),
        ]);
    }
    // Every node reads its clock from a libfaketime file in its directory (real time until
    // the scenario writes one).
    let env = if spec.fault == Fault::ClockJump {
        synod_testkit::inject::faketime_env(false)
    } else {
        Vec::new()
    };
    // Nodes, and how many of them are the initial voters (the others join).
    let (total, voters) = match spec.fault {
        Fault::Membership => (5, 3),
        Fault::MembershipFailover => (4, 3),
        Fault::MinorityPartition => (5, 5),
        _ => (3, 3),
    };
    let ens = match hosts {
        Some(h) => {
            let on: Vec<_> = (0..total).map(|i| (h.addr(i), Some(h.name(i)))).collect();
            let members: NodeArgs =
                Arc::new(|_, all| vec!["--members".to_string(), members_arg(all)]);
            blocking(|| {
                SynodEnsemble::start_custom_on(bin, total, voters, &extra, members, env, on)
            })
        }
        None => blocking(|| {
            let args = node_args(net.clone(), voters);
            SynodEnsemble::start_custom_on(bin, total, voters, &extra, args, env, Vec::new())
        }),
    }
    .map_err(|e| format!("start cluster: {e}"))?;
    let ens = Arc::new(ens);
    // Its node logs outlive it if the scenario fails in any way (they go with its directory).
    let mut logs = LogsOnFailure::new(ens.clone(), spec.name);
    // Tmpfs mounts of the scenario, unmounted before the cluster is dropped.
    let mut mounts: Vec<Tmpfs> = Vec::new();
    let addrs = ens.addrs();
    let ids: Vec<usize> = (1..=voters).collect();

    let load = Arc::new(Load {
        tls: ens.tls(),
        ..Load::default()
    });
    // Every client and the monitor stop when this scenario ends, also on an early error return
    // (they hold the cluster; left running they would keep it, and the runtime, alive).
    let _stop_clients = StopOnDrop(load.clone());
    let leader = blocking(|| ens.wait_for_leader(Duration::from_secs(30)))
        .map_err(|e| format!("no leader: {e}"))?;
    let admin = Client::connect(
        &servers_from(&addrs, leader),
        ens.connect_options()
            .connect_timeout(Duration::from_secs(10)),
    )
    .await
    .map_err(|e| format!("connect: {e}"))?;
    workload::setup(&admin, &load, REGISTERS)
        .await
        .map_err(|e| format!("setup: {e}"))?;

    // The watcher first (its watch must be in place before any recorded change), on a follower.
    let watched = (leader + 1) % 3;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let mut tasks = vec![tokio::spawn(workload::watcher(
        servers_from(&addrs, watched),
        load.clone(),
        ready_tx,
    ))];
    tokio::time::timeout(Duration::from_secs(10), ready_rx)
        .await
        .map_err(|_| "the watcher did not start".to_string())?
        .map_err(|_| "the watcher failed to add its watch".to_string())?;
    for i in 0..4u64 {
        let s = servers_from(&addrs, (watched + i as usize) % 3);
        tasks.push(tokio::spawn(workload::register_client(
            i + 1,
            s,
            REGISTERS,
            load.clone(),
        )));
    }
    tasks.push(tokio::spawn(workload::multi_client(
        10,
        servers_from(&addrs, leader),
        load.clone(),
    )));
    tasks.push(tokio::spawn(workload::seq_client(
        20,
        servers_from(&addrs, watched),
        load.clone(),
    )));
    for i in 0..3u64 {
        let s = servers_from(&addrs, i as usize % 3);
        tasks.push(tokio::spawn(workload::lock_client(30 + i, s, load.clone())));
    }
    tasks.push(tokio::spawn(workload::ephemerals(
        servers_from(&addrs, leader),
        addrs.clone(),
        load.clone(),
    )));
    // An idle session (a lock holder's, between acquiring and releasing), on the watcher's
    // follower.
    tasks.push(tokio::spawn(workload::idle_session(
        servers_from(&addrs, watched),
        load.clone(),
    )));
    // Leader takeovers, as seen by polling every node: a node that reports itself leader after
    // not doing so (or not answering) at the previous poll — a new election, or a restarted
    // leader resuming its term. Either way its session deadlines restart (DESIGN.md §6).
    // One poller per node, so that a paused node (whose /status hangs until the probe times
    // out) does not delay seeing another node take over.
    let changes: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let monitors: Vec<_> = (0..ens.addrs().len())
        .map(|idx| {
            let (ens, load, changes) = (ens.clone(), load.clone(), changes.clone());
            tokio::task::spawn_blocking(move || {
                let mut was = None;
                while !load.stop.load(Ordering::Relaxed) {
                    let now = ens
                        .status_json(idx)
                        .is_some_and(|s| s["role"].as_str() == Some("leader"));
                    if now && was == Some(false) {
                        plock(&changes).push(load.registers.start().elapsed());
                    }
                    was = Some(now);
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut leader_faults: Vec<LeaderFault> = Vec::new();
    let injected = inject(
        &ens,
        &net,
        hosts,
        &ids,
        spec,
        watched,
        &load,
        &mut leader_faults,
        &mut mounts,
    )
    .await?;
    let (fault_log, members) = (injected.log, injected.members);
    tokio::time::sleep(Duration::from_secs(3)).await;
    load.stop.store(true, Ordering::Relaxed);
    // The writers first: once none can be told of another success, the watcher knows the last
    // event it must wait for (workload::WATCH_DRAIN).
    let watcher = tasks.remove(0);
    for t in tasks {
        let _ = tokio::time::timeout(OP_TIMEOUT * 4, t).await;
    }
    load.writers_done.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(workload::WATCH_DRAIN + OP_TIMEOUT, watcher).await;
    for monitor in monitors {
        let _ = tokio::time::timeout(Duration::from_secs(5), monitor).await;
    }

    // Converge: every node back, caught up, same digest.
    net.heal();
    if let Some(h) = hosts {
        h.heal().map_err(|e| format!("heal: {e}"))?;
    }
    let mut details = Vec::new();
    for &idx in &members {
        if !ens.running()[idx] {
            blocking(|| ens.restart(idx)).map_err(|e| format!("restart node {idx}: {e}"))?;
        }
    }
    let leader = blocking(|| ens.wait_for_leader(Duration::from_secs(30)))
        .map_err(|e| format!("no leader after healing: {e}"))?;
    if let Err(e) = converge(&ens, &members).await {
        details.push(e);
    } else if let Err(e) = blocking(|| audit_agrees(&ens, &members)) {
        details.push(e);
    }
    if spec.fault == Fault::SnapshotCatchUp && !fault_log.iter().any(|l| l.contains("snapshot")) {
        details.push(format!(
            "the lagging follower never installed a snapshot: {fault_log:?}"
        ));
    }

    let finals = final_reads(&servers_from(&addrs, leader), &load).await?;
    let mut summary = analyse(
        spec.name,
        &load,
        &changes,
        &leader_faults,
        &finals,
        &mut details,
    );
    if let Some((from, to)) = injected.wan {
        let elections = plock(&changes)
            .iter()
            .filter(|t| **t >= from && **t <= to)
            .count();
        let p99 = p99_latency(&load.registers.operations(), from, to);
        eprintln!(
            "  wan: {elections} elections during the {:?} WAN window; register p99 latency \
             {p99:?} there",
            to - from
        );
        if elections > 0 {
            details.push(format!(
                "{elections} election(s) under the WAN profile: an election storm"
            ));
        }
    }
    summary.anomalies = summary.anomalies.max(details.len());
    summary.max_unavailability = max_unavailability(&load.registers.operations());
    drop(mounts);
    // How the leaders confirmed read points (counted since each node's last start): reads
    // through a follower take none of the rounds when its vote stands in for one, and the
    // checker above holds them to linearizability like every other read.
    // And how often a follower gave up on a leader that stopped answering, how many client
    // writes were refused to keep their connection's writes in order, and how many peer
    // connections a leader closed after a forward on them failed (design.md §6).
    let summed = |series: &str| -> u64 {
        members
            .iter()
            .filter_map(|&i| ens.metric(i, series))
            .sum::<f64>() as u64
    };
    let read_points = |how: &str| summed(&format!("synod_read_points_total{{how=\"{how}\"}} "));
    let (by_vote, by_round, abandoned, refused, spent) = blocking(|| {
        (
            read_points("follower_vote"),
            read_points("quorum_round"),
            summed("synod_forward_leader_changes_total "),
            summed("synod_writes_refused_out_of_order_total "),
            summed("synod_peer_connections_spent_total "),
        )
    });
    eprintln!(
        "  {}: {} (leader faults at {:?}, new leaders seen at {:?}); read points: {by_vote} on \
         followers' votes, {by_round} heartbeat rounds; forwards abandoned for a new leader: \
         {abandoned}; writes refused to keep their connection's order: {refused}; peer \
         connections closed after a failed forward: {spent}",
        spec.name,
        fault_log.join("; "),
        leader_faults,
        plock(&changes)
    );
    if summary.anomalies == 0 && details.is_empty() {
        logs.passed();
    }
    Ok(Outcome_ { summary, details })
}

/// The 99th percentile of the latency of the acknowledged operations invoked in `[from, to]`.
fn p99_latency<O, R>(ops: &[Operation<O, R>], from: Duration, to: Duration) -> Option<Duration> {
    let mut l: Vec<Duration> = ops
        .iter()
        .filter(|o| o.is_ok() && o.call_at >= from && o.call_at <= to)
        .filter_map(|o| o.ret_at.map(|r| r.saturating_sub(o.call_at)))
        .collect();
    l.sort();
    l.get((l.len() * 99 / 100).min(l.len().saturating_sub(1)))
        .copied()
}

/// The free-space reserve (MiB) the disk-full scenario's nodes run with.
const DISK_RESERVE_MB: u64 = 16;

/// What [`inject`] did.
struct Injected {
    /// What was done, for the log.
    log: Vec<String>,
    /// The nodes that are members at the end.
    members: Vec<usize>,
    /// When the WAN profile was on (offsets from the history's start).
    wan: Option<(Duration, Duration)>,
}

/// Injects `spec.fault` and heals it.
#[allow(clippy::too_many_arguments)]
async fn inject(
    ens: &Arc<SynodEnsemble>,
    net: &FaultNet,
    hosts: Option<&Netns>,
    ids: &[usize],
    spec: Spec,
    watched: usize,
    load: &Load,
    leader_faults: &mut Vec<LeaderFault>,
    mounts: &mut Vec<Tmpfs>,
) -> Result<Injected, String> {
    let mut wan = None;
    let mut members = vec![0, 1, 2];
    let now = || load.registers.start().elapsed();
    let mut log = Vec::new();
    let leader =
        || blocking(|| ens.wait_for_leader(Duration::from_secs(30))).map_err(|e| e.to_string());
    let hold = spec.hold;
    let steps: Vec<Fault> = match spec.fault {
        Fault::Mixed => vec![
            Fault::KillFollower,
            Fault::PartitionLeader,
            Fault::PauseLeader,
            Fault::KillLeader,
            Fault::OneWayLeader,
        ],
        f => vec![f],
    };
    for step in steps {
        let l = leader()?;
        match step {
            Fault::KillLeader | Fault::KillFollower | Fault::KillConnected => {
                let victim = match step {
                    Fault::KillLeader => l,
                    Fault::KillFollower => (l + 1) % 3,
                    _ => watched,
                };
                let start = now();
                blocking(|| ens.kill(victim)).map_err(|e| e.to_string())?;
                log.push(format!("killed node {} (leader {})", victim + 1, l + 1));
                tokio::time::sleep(hold).await;
                blocking(|| ens.restart(victim)).map_err(|e| format!("restart: {e}"))?;
                log.push(format!("restarted node {}", victim + 1));
                if victim == l {
                    leader_faults.push(LeaderFault { start, end: now() });
                }
            }
            Fault::KillAll => {
                let start = now();
                blocking(|| ens.stop_all());
                log.push("killed all nodes".into());
                tokio::time::sleep(hold).await;
                blocking(|| ens.start_all()).map_err(|e| format!("start all: {e}"))?;
                log.push("restarted all nodes".into());
                leader_faults.push(LeaderFault { start, end: now() });
            }
            Fault::PauseLeader => {
                let start = now();
                blocking(|| ens.pause(l)).map_err(|e| e.to_string())?;
                log.push(format!("paused leader {}", l + 1));
                tokio::time::sleep(hold).await;
                blocking(|| ens.resume(l)).map_err(|e| e.to_string())?;
                log.push("resumed".into());
                leader_faults.push(LeaderFault { start, end: now() });
            }
            Fault::PartitionLeader => {
                let start = now();
                net.isolate(l + 1, ids);
                log.push(format!("isolated leader {}", l + 1));
                tokio::time::sleep(hold).await;
                net.heal();
                log.push("healed".into());
                leader_faults.push(LeaderFault { start, end: now() });
            }
            Fault::MinorityPartition => {
                // The follower the idle session and the watcher are on (another one if the
                // leadership moved there since).
                let follower = if watched != l {
                    watched
                } else {
                    (l + 1) % ids.len()
                };
                let minority = [l + 1, follower + 1];
                let start = now();
                net.split(&minority, ids);
                log.push(format!(
                    "cut leader {} and follower {} from the others",
                    l + 1,
                    follower + 1
                ));
                tokio::time::sleep(hold).await;
                net.heal();
                log.push("healed".into());
                leader_faults.push(LeaderFault { start, end: now() });
            }
            Fault::OneWayLeader => {
                let start = now();
                net.mute(l + 1, ids);
                log.push(format!("muted leader {} (one way)", l + 1));
                tokio::time::sleep(hold).await;
                net.heal();
                log.push("healed".into());
                leader_faults.push(LeaderFault { start, end: now() });
            }
            Fault::SnapshotCatchUp => {
                let victim = (l + 1) % 3;
                blocking(|| ens.kill(victim)).map_err(|e| e.to_string())?;
                log.push(format!("killed follower {}", victim + 1));
                tokio::time::sleep(hold).await;
                // Restart it and kill it again while it catches up, then let it finish.
                blocking(|| ens.spawn(victim)).map_err(|e| e.to_string())?;
                tokio::time::sleep(Duration::from_millis(300)).await;
                blocking(|| ens.kill(victim)).map_err(|e| e.to_string())?;
                log.push("killed it again during catch-up".into());
                blocking(|| ens.restart(victim)).map_err(|e| format!("restart: {e}"))?;
                blocking(|| ens.wait_caught_up(victim, Duration::from_secs(30)))
                    .map_err(|e| e.to_string())?;
                let installed = ens.log(victim).matches("installed snapshot").count();
                log.push(format!(
                    "caught up ({installed} snapshot installs in its log)"
                ));
            }
            Fault::Membership => {
                // Nodes 4 and 5 join as learners and become voters (5 voters), then the leader
                // is removed (4 voters), each step a joint-consensus change under load.
                let call = |path: &str, body: serde_json::Value| {
                    blocking(|| admin_post(ens, l, path, body))
                };
                for new in [3, 4] {
                    let id = new + 1;
                    blocking(|| join_as_learner(ens, l, new, &mut log))?;
                    let (code, reply) = call("/members/promote", serde_json::json!({"id": id}))?;
                    log.push(format!("promote {id}: {code}"));
                    if code != 200 {
                        return Err(format!("promote {id}: {code} {reply}"));
                    }
                }
                tokio::time::sleep(hold).await;
                let start = now();
                let (code, reply) = call("/members/remove", serde_json::json!({"id": l + 1}))?;
                log.push(format!("remove leader {}: {code}", l + 1));
                if code != 200 {
                    return Err(format!("remove: {code} {reply}"));
                }
                // The removed node is stopped, as an operator would after removing it.
                tokio::time::sleep(Duration::from_secs(1)).await;
                blocking(|| ens.kill(l)).map_err(|e| e.to_string())?;
                leader_faults.push(LeaderFault { start, end: now() });
                members = (0..5).filter(|&i| i != l).collect();
            }
            Fault::MembershipFailover => {
                let (newcomer, id) = (3, 4);
                blocking(|| join_as_learner(ens, l, newcomer, &mut log))?;
                let everyone: Vec<usize> = (1..=id).collect();
                net.deafen(l + 1, &everyone);
                log.push(format!("deafened leader {}", l + 1));
                // Forced: the leader's own checks would refuse (it hears no one), and the point
                // is a change its peers receive and it cannot commit.
                let asked = {
                    let ens = ens.clone();
                    let body = serde_json::json!({"id": id, "force": true});
                    tokio::task::spawn_blocking(move || {
                        ens.http(l, "POST", "/members/promote", Some(&body))
                    })
                };
                // Long enough for the joint configuration to reach the others.
                tokio::time::sleep(Duration::from_secs(1)).await;
                let start = now();
                blocking(|| ens.kill(l)).map_err(|e| e.to_string())?;
                let answer = asked.await.map_err(|e| e.to_string())?;
                log.push(format!(
                    "killed leader {} during the promotion (its answer: {})",
                    l + 1,
                    answer.map_or("none".to_string(), |(code, _)| code.to_string())
                ));
                net.heal();
                let view_of = |at: usize| {
                    blocking(|| ens.http(at, "GET", "/members", None))
                        .and_then(|(_, body)| {
                            serde_json::from_slice::<serde_json::Value>(&body).ok()
                        })
                        .unwrap_or_default()
                };
                // A follower received the joint configuration (in effect there, uncommitted):
                // the case this scenario is for.
                let follower = (l + 1) % 3;
                let view = view_of(follower);
                if view["joint"] != true {
                    return Err(format!(
                        "the joint configuration did not reach node {}: {view}",
                        follower + 1
                    ));
                }
                log.push(format!(
                    "joint configuration in effect on node {}",
                    follower + 1
                ));
                tokio::time::sleep(hold).await;
                // The new leader ends the joint configuration by itself, which made the
                // newcomer a voter (bounded).
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let at = leader()?;
                    let view = view_of(at);
                    let voter = view["members"]
                        .as_array()
                        .is_some_and(|m| m.iter().any(|m| m["id"] == id && m["voter"] == true));
                    if view["joint"] == false && voter {
                        log.push(format!(
                            "leader {} left the joint configuration: node {id} a voter",
                            at + 1
                        ));
                        break;
                    }
                    if view["joint"] == false && view["members"].is_array() {
                        return Err(format!(
                            "the joint configuration ended without node {id} a voter: {view}"
                        ));
                    }
                    if Instant::now() > deadline {
                        return Err(format!(
                            "still in the joint configuration 60 s after the failover: {view}"
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                blocking(|| ens.restart(l)).map_err(|e| format!("restart: {e}"))?;
                log.push(format!("restarted node {}", l + 1));
                leader_faults.push(LeaderFault { start, end: now() });
                members = (0..4).collect();
            }
            Fault::Wan => {
                let start = now();
                net.set_wan(Some(Wan::PROFILE));
                log.push(format!(
                    "WAN profile on every peer link: {:?}",
                    Wan::PROFILE
                ));
                tokio::time::sleep(hold).await;
                net.set_wan(None);
                log.push("local network again".into());
                wan = Some((start, now()));
            }
            Fault::ClientPartition | Fault::HostPartition => {
                let h = hosts.ok_or("this scenario runs on hosts of its own")?;
                let start = now();
                let others: Vec<usize> = (0..3).filter(|&i| i != l).collect();
                let mut side = vec![l];
                if step == Fault::ClientPartition {
                    side.push(CLIENT_HOST);
                }
                h.partition(&side, &others).map_err(|e| e.to_string())?;
                log.push(format!(
                    "cut host {} ({}){} from the others",
                    l + 1,
                    h.addr(l),
                    if step == Fault::ClientPartition {
                        " and the clients' host"
                    } else {
                        ""
                    }
                ));
                tokio::time::sleep(hold).await;
                h.heal().map_err(|e| e.to_string())?;
                log.push("healed".into());
                leader_faults.push(LeaderFault { start, end: now() });
            }
            Fault::SlowFsync => {
                let tracers = (0..3)
                    .map(|i| {
                        let pid = ens.pid(i).ok_or(format!("node {} not running", i + 1))?;
                        Strace::attach(
                            pid,
                            "fdatasync,fsync:delay_enter=20000",
                            ens.root().join(format!("strace-slow-{i}.txt")),
                        )
                        .map_err(|e| e.to_string())
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                log.push("fsync +20 ms on every node".into());
                tokio::time::sleep(hold).await;
                let delayed: Vec<usize> = tracers.iter().map(|t| t.count("DELAYED")).collect();
                blocking(|| drop(tracers));
                log.push(format!("delayed syncs per node: {delayed:?}"));
                if delayed.iter().filter(|n| **n > 0).count() < 2 {
                    return Err(format!(
                        "strace delayed no fsync on a majority: {delayed:?}"
                    ));
                }
            }
            Fault::FsyncEio => {
                let start = now();
                let pid = ens.pid(l).ok_or("the leader is not running")?;
                let strace = Strace::attach(
                    pid,
                    "fdatasync,fsync:error=EIO",
                    ens.root().join("strace-eio.txt"),
                )
                .map_err(|e| e.to_string())?;
                log.push(format!("fsync fails with EIO on leader {}", l + 1));
                let deadline = Instant::now() + Duration::from_secs(20);
                while ens.running()[l] {
                    if Instant::now() >= deadline {
                        return Err("the leader did not stop after its fsync failed".into());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let injected = strace.count("INJECTED");
                blocking(|| drop(strace));
                if !ens.log(l).contains("raft stopped on a storage failure") {
                    return Err(format!(
                        "node {} stopped without saying why:\n{}",
                        l + 1,
                        ens.log_tail(l)
                    ));
                }
                log.push(format!(
                    "it stopped (fail-stop) after {injected} failed sync(s)"
                ));
                leader()?;
                leader_faults.push(LeaderFault { start, end: now() });
                tokio::time::sleep(hold).await;
                blocking(|| ens.restart(l)).map_err(|e| format!("restart: {e}"))?;
                log.push(format!("restarted node {} on a healthy disk", l + 1));
            }
            Fault::DiskFull => {
                let victim = (l + 1) % 3;
                let data = ens
                    .node(victim)
                    .map(|n| n.data_dir())
                    .ok_or("no such node")?;
                blocking(|| ens.kill(victim)).map_err(|e| e.to_string())?;
                let aside = data.with_extension("moving");
                std::fs::rename(&data, &aside).map_err(|e| format!("move data: {e}"))?;
                mounts.push(Tmpfs::mount(&data, 64).map_err(|e| e.to_string())?);
                let copied = std::process::Command::new("cp")
                    .arg("-a")
                    .arg(aside.join("."))
                    .arg(&data)
                    .status()
                    .map_err(|e| format!("cp: {e}"))?;
                if !copied.success() {
                    return Err("copying the data directory into the tmpfs failed".into());
                }
                let _ = std::fs::remove_dir_all(&aside);
                let free = free_bytes(&data).map_err(|e| format!("statvfs: {e}"))?;
                let keep = (DISK_RESERVE_MB - 2) << 20;
                let ballast = data.join("ballast");
                std::fs::write(&ballast, vec![0u8; free.saturating_sub(keep) as usize])
                    .map_err(|e| format!("ballast: {e}"))?;
                blocking(|| ens.restart(victim)).map_err(|e| format!("restart: {e}"))?;
                let (code, ready) = blocking(|| ens.json(victim, "GET", "/ready", None))
                    .ok_or("GET /ready did not answer")?;
                log.push(format!(
                    "node {}'s disk filled to {} MiB free: /ready {code} {}",
                    victim + 1,
                    DISK_RESERVE_MB - 2,
                    ready["reason"]
                ));
                if code != 503 || !ready["reason"].to_string().contains("disk") {
                    return Err(format!("a node below its reserve is ready: {code} {ready}"));
                }
                // A client of that node only: growing writes refused, the rest served.
                let probe = Client::connect(
                    &ens.connect_string_of(&[victim]),
                    ens.connect_options()
                        .connect_timeout(Duration::from_secs(10)),
                )
                .await
                .map_err(|e| format!("connect to the full node: {e}"))?;
                let refused = probe
                    .create(
                        "/disk-full-probe",
                        b"x",
                        synod_client::CreateMode::Persistent,
                    )
                    .await;
                if !matches!(&refused, Err(e) if e.code() == Some(synod_client::ErrorCode::NotReadOnly))
                {
                    return Err(format!("a write through the full node: {refused:?}"));
                }
                probe
                    .get_children("/")
                    .await
                    .map_err(|e| format!("a read through the full node: {e}"))?;
                tokio::time::sleep(hold).await;
                let refused = blocking(|| ens.http(victim, "GET", "/metrics", None))
                    .map(|(_, b)| String::from_utf8_lossy(&b).into_owned())
                    .and_then(|m| {
                        m.lines()
                            .find_map(|l| l.strip_prefix("synod_disk_refused_writes_total "))
                            .map(str::to_string)
                    });
                std::fs::remove_file(&ballast).map_err(|e| format!("remove ballast: {e}"))?;
                log.push(format!(
                    "ballast removed (writes refused meanwhile: {}; node still running: {})",
                    refused.unwrap_or_else(|| "?".into()),
                    ens.running()[victim]
                ));
                let deadline = Instant::now() + Duration::from_secs(10);
                while let Err(e) = probe
                    .create(
                        "/disk-full-probe",
                        b"x",
                        synod_client::CreateMode::Persistent,
                    )
                    .await
                {
                    if Instant::now() >= deadline {
                        return Err(format!("still refused once space returned: {e}"));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let _ = probe.close().await;
                log.push("it takes writes again".into());
            }
            Fault::Corruption => {
                let victim = (l + 1) % 3;
                let node = ens.node(victim).ok_or("no such node")?.clone();
                let data = node.data_dir();
                blocking(|| ens.kill(victim)).map_err(|e| e.to_string())?;
                let files = record_files(&data.join("raft-log"));
                if files.is_empty() {
                    return Err("the follower's log has no record file to damage".into());
                }
                for f in &files {
                    flip_middle(f).map_err(|e| format!("damage {}: {e}", f.display()))?;
                }
                log.push(format!(
                    "flipped a byte in {} record file(s) of node {}'s log",
                    files.len(),
                    victim + 1
                ));
                blocking(|| ens.spawn(victim)).map_err(|e| e.to_string())?;
                let deadline = Instant::now() + Duration::from_secs(30);
                while ens.running()[victim] {
                    if Instant::now() >= deadline {
                        return Err(format!(
                            "node {} runs on a damaged log:\n{}",
                            victim + 1,
                            ens.log_tail(victim)
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                if !ens.log_tail(victim).contains("is damaged") {
                    return Err(format!(
                        "node {} did not say its data is damaged:\n{}",
                        victim + 1,
                        ens.log_tail(victim)
                    ));
                }
                log.push("it refused to start".into());
                tokio::time::sleep(hold).await;
                // Rebuild from the peers (docs/operations.md): out of the membership, then in
                // again on an empty directory.
                let call = |path: &str, body: serde_json::Value| -> Result<(), String> {
                    let (code, reply) = blocking(|| ens.http(l, "POST", path, Some(&body)))
                        .ok_or(format!("POST {path}: no answer"))?;
                    if code == 200 {
                        Ok(())
                    } else {
                        Err(format!(
                            "POST {path}: {code} {}",
                            String::from_utf8_lossy(&reply)
                        ))
                    }
                };
                call("/members/remove", serde_json::json!({"id": node.id}))?;
                std::fs::rename(&data, data.with_extension("damaged"))
                    .map_err(|e| format!("move the damaged data aside: {e}"))?;
                blocking(|| ens.spawn_with(victim, &ens.members(&[victim]), &["--join"]))
                    .map_err(|e| e.to_string())?;
                call(
                    "/members/add-learner",
                    serde_json::json!({"id": node.id, "peer_addr": node.peer_addr().to_string()}),
                )?;
                call("/members/promote", serde_json::json!({"id": node.id}))?;
                log.push(format!("node {} rebuilt from its peers", victim + 1));
            }
            Fault::ClockJump => {
                let follower = (l + 1) % 3;
                for (who, spec) in [
                    (l, "+300"),
                    (l, "+300 x2"),
                    (l, "+0"),
                    (follower, "+300"),
                    (follower, "+0 x2"),
                    (follower, "+0"),
                ] {
                    let dir = ens.node_dir(who).ok_or("no such node")?;
                    set_clock(dir, spec).map_err(|e| e.to_string())?;
                    log.push(format!("node {} clock {spec}", who + 1));
                    tokio::time::sleep(hold).await;
                }
            }
            Fault::Mixed => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(Injected { log, members, wan })
}

/// `POST path` of a JSON `body` to node `at`'s admin port: its status and body.
fn admin_post(
    ens: &SynodEnsemble,
    at: usize,
    path: &str,
    body: serde_json::Value,
) -> Result<(u16, String), String> {
    ens.http(at, "POST", path, Some(&body))
        .map(|(code, reply)| (code, String::from_utf8_lossy(&reply).into_owned()))
        .ok_or(format!("POST {path} to node {}: no answer", at + 1))
}

/// Starts node `newcomer` (it joins) and has the leader `at` add it as a learner, which answers
/// once it has caught up.
fn join_as_learner(
    ens: &SynodEnsemble,
    at: usize,
    newcomer: usize,
    log: &mut Vec<String>,
) -> Result<(), String> {
    let id = newcomer + 1;
    let peer = ens
        .node(newcomer)
        .map(|n| n.peer_port)
        .ok_or(format!("no node {id}"))?;
    ens.spawn(newcomer).map_err(|e| e.to_string())?;
    let body = serde_json::json!({"id": id, "peer_addr": format!("127.0.0.1:{peer}")});
    let (code, reply) = admin_post(ens, at, "/members/add-learner", body)?;
    log.push(format!("add-learner {id}: {code}"));
    if code != 200 {
        return Err(format!("add-learner {id}: {code} {reply}"));
    }
    Ok(())
}

/// Waits (bounded) until the nodes `members` have applied the same index and report the same
/// digest.
async fn converge(ens: &SynodEnsemble, members: &[usize]) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = Vec::new();
    while Instant::now() < deadline {
        last = members
            .iter()
            .map(|&i| {
                ens.json(i, "GET", "/digest", None)
                    .filter(|(code, _)| *code == 200)
                    .map(|(_, v)| {
                        (
                            v["applied_index"].as_u64(),
                            v["digest"].as_str().map(String::from),
                        )
                    })
            })
            .collect::<Vec<_>>();
        let first = last.first().cloned().flatten();
        if first.as_ref().is_some_and(|f| f.1.is_some()) && last.iter().all(|d| *d == first) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("replicas did not converge to one digest: {last:?}"))
}

/// Once the replicas have converged: every member's audit trail verifies up to the same
/// replicated head, and the records all of them hold (from the latest start among them, a
/// member that installed a snapshot starting later) are the same records.
fn audit_agrees(ens: &SynodEnsemble, members: &[usize]) -> Result<(), String> {
    let mut heads = Vec::new();
    let mut starts = Vec::new();
    for &i in members {
        let (code, v) = ens
            .json(i, "GET", "/audit/verify", None)
            .ok_or_else(|| format!("node {i}: GET /audit/verify did not answer"))?;
        if code != 200 || v["ok"] != true || v["head_matched"] != true {
            return Err(format!("node {i}: its audit trail does not verify: {v}"));
        }
        heads.push(v["head"].clone());
        // Where this member's records restart last (an installed snapshot), or begin.
        let (_, q) = ens
            .json(i, "GET", "/audit?limit=1", None)
            .ok_or_else(|| format!("node {i}: GET /audit did not answer"))?;
        let anchored = q["anchors"]
            .as_array()
            .and_then(|a| a.last())
            .and_then(|a| a["zxid"].as_i64())
            .map(|z| z + 1);
        let first = q["records"][0]["zxid"].as_i64();
        starts.push(anchored.or(first).unwrap_or(0));
    }
    if heads.iter().any(|h| *h != heads[0]) {
        return Err(format!("the replicas' audit heads differ: {heads:?}"));
    }
    let since = starts.iter().copied().max().unwrap_or(0);
    let trail = |i: usize| -> Result<Vec<(i64, String)>, String> {
        let (_, v) = ens
            .json(i, "GET", &format!("/audit?since={since}&limit=2000"), None)
            .ok_or_else(|| format!("node {i}: GET /audit did not answer"))?;
        Ok(v["records"]
            .as_array()
            .map(|r| {
                r.iter()
                    .map(|x| (x["zxid"].as_i64().unwrap_or(-1), x["hash"].to_string()))
                    .collect()
            })
            .unwrap_or_default())
    };
    let first = trail(members[0])?;
    if first.is_empty() {
        return Err(format!("no audit records after zxid {since:#x}"));
    }
    for &i in &members[1..] {
        if trail(i)? != first {
            return Err(format!(
                "node {i} holds other audit records after zxid {since:#x} than node {}",
                members[0]
            ));
        }
    }
    eprintln!(
        "  audit: {} replicas verify up to the same head {}; their first {} records from zxid \
         {since:#x} are equal",
        members.len(),
        heads[0],
        first.len()
    );
    Ok(())
}

/// The final state of the register znodes, read through the leader.
struct Finals {
    registers: BTreeMap<String, Option<FinalNode>>,
}

/// Reads the registers at the end (for the lost-write check) and multi-reads the multi znodes
/// into the multi history (so the linearizability check covers the final state).
async fn final_reads(servers: &str, load: &Load) -> Result<Finals, String> {
    let c = Client::connect(
        servers,
        ConnectOptions {
            tls: load.tls.clone(),
            ..ConnectOptions::default()
        }
        .connect_timeout(Duration::from_secs(10)),
    )
    .await
    .map_err(|e| format!("final connect: {e}"))?;
    let mut registers = BTreeMap::new();
    for i in 0..REGISTERS {
        let key = workload::register_key(i);
        let got = match tokio::time::timeout(OP_TIMEOUT, c.get_data(&key)).await {
            Ok(Ok((data, stat))) => Some(FinalNode {
                value: Value(data.to_vec()),
                mzxid: stat.mzxid as u64,
                version: stat.version,
            }),
            Ok(Err(synod_client::Error::NoNode)) => None,
            other => return Err(format!("final read of {key}: {other:?}")),
        };
        registers.insert(key, got);
    }
    let paths: Vec<String> = MULTI_KEYS.iter().map(|k| k.to_string()).collect();
    let op = load.multis.invoke(99, MultiOp::Read(paths));
    let reads = MULTI_KEYS.iter().map(|k| Op::get_data(k)).collect();
    let outcome = match tokio::time::timeout(OP_TIMEOUT, c.multi_read(reads)).await {
        Ok(Ok(results)) => HOutcome::Ok(MultiRet::Read(
            results
                .into_iter()
                .map(|r| match r {
                    OpResult::GetData { data, stat } => Some(Znode {
                        value: Value(data.unwrap_or_default().to_vec()),
                        version: stat.version,
                    }),
                    _ => None,
                })
                .collect(),
        )),
        other => return Err(format!("final multi-read: {other:?}")),
    };
    let _ = load.multis.complete(op, outcome);
    let _ = c.close().await;
    Ok(Finals { registers })
}

/// Runs every check over what the clients recorded.
fn analyse(
    name: &str,
    load: &Load,
    changes: &Mutex<Vec<Duration>>,
    leader_faults: &[LeaderFault],
    finals: &Finals,
    details: &mut Vec<String>,
) -> Summary {
    let budget = Budget {
        max_steps: 50_000_000,
        timeout: Duration::from_secs(20),
        ..Budget::default()
    };
    let mut regs = load.registers.operations();
    let mut summary = Summary::from_operations(name, &regs);
    let resolved = resolve_register_unknowns(&mut regs, &finals.registers);

    let report = check(&RegisterModel, &regs, &budget);
    match report.verdict() {
        Verdict::Linearizable => {}
        Verdict::NotLinearizable => {
            summary.anomalies += report.counter_examples.len();
            details.push(format!("registers not linearizable:\n{report}"));
        }
        Verdict::GaveUp => {
            let mut unknown: BTreeMap<&str, usize> = BTreeMap::new();
            for o in regs
                .iter()
                .filter(|o| matches!(o.outcome, HOutcome::Unknown))
            {
                *unknown.entry(o.op.path.as_str()).or_default() += 1;
            }
            details.push(format!(
                "register check gave up (unknown ops per znode {unknown:?}): {report}"
            ))
        }
    }

    let mut multis = load.multis.operations();
    let resolved_multi = resolve_multi_unknowns(&mut multis);
    if resolved + resolved_multi > 0 {
        eprintln!(
            "  {name}: {resolved} register and {resolved_multi} multi writes of unknown outcome \
             shown by the final versions never to have taken effect"
        );
    }
    summary.add_operations(&multis);
    let initial = MULTI_KEYS
        .iter()
        .map(|k| {
            (
                k.to_string(),
                Znode {
                    value: Value(b"init".to_vec()),
                    version: 0,
                },
            )
        })
        .collect();
    let report = check(&MultiModel::new(initial), &multis, &budget);
    match report.verdict() {
        Verdict::Linearizable => {}
        Verdict::NotLinearizable => {
            summary.anomalies += report.counter_examples.len();
            details.push(format!("multi transactions not linearizable:\n{report}"));
        }
        Verdict::GaveUp => details.push(format!("multi check gave up: {report}")),
    }

    // No acknowledged register write lost.
    let versions = plock(&load.acked_versions).clone();
    let acked: Vec<AckedWrite> = regs
        .iter()
        .filter_map(|o| {
            let value = match &o.op.op {
                RegisterOp::Write(v) | RegisterOp::CasWrite { value: v, .. } => v.clone(),
                _ => return None,
            };
            let Some(RegisterRet::Written { version }) = o.result() else {
                return None;
            };
            let zxid = *versions.get(&(o.op.path.clone(), *version))?;
            Some(AckedWrite {
                path: o.op.path.clone(),
                value,
                zxid,
                version: *version,
            })
        })
        .collect();
    let lost = no_lost_writes(&acked, &[], &finals.registers);
    summary.add_anomalies(&lost);
    details.extend(lost.iter().map(|a| a.to_string()));

    // Sequential names.
    let seqs = load.seqs.operations();
    summary.add_operations(&seqs);
    let creates: Vec<SeqCreate> = seqs
        .iter()
        .filter_map(|o| {
            Some(SeqCreate {
                name: o.result()?.clone(),
                call: o.call,
                ret: o.ret?,
            })
        })
        .collect();
    match sequential_names_unique_increasing(&creates) {
        Ok(a) => {
            summary.add_anomalies(&a);
            details.extend(a.iter().map(|a| a.to_string()));
        }
        Err(e) => details.push(format!("sequential check: {e}")),
    }

    // Lock holders.
    let locks = load.locks.operations();
    let mut intervals: Vec<HoldInterval> = Vec::new();
    let mut open: BTreeMap<u64, usize> = BTreeMap::new();
    for o in &locks {
        match (&o.op, &o.outcome) {
            (LockOp::Acquire, HOutcome::Ok(token)) => {
                open.insert(o.process, intervals.len());
                intervals.push(HoldInterval {
                    client: o.process,
                    token: *token,
                    acquired: o.ret.unwrap_or(o.call),
                    released: None,
                });
            }
            (LockOp::Release, _) => {
                if let Some(i) = open.remove(&o.process) {
                    intervals[i].released = Some(o.call);
                }
            }
            _ => {}
        }
    }
    // A run in which the lock never changed hands proves nothing about it.
    if intervals.len() < 2 {
        details.push(format!(
            "the lock was acquired {} times: too few to check",
            intervals.len()
        ));
    } else {
        eprintln!(
            "  {name}: the lock recipe was acquired {} times",
            intervals.len()
        );
    }
    match lock_never_two_holders(&intervals) {
        Ok(a) => {
            summary.add_anomalies(&a);
            details.extend(a.iter().map(|a| a.to_string()));
        }
        Err(e) => details.push(format!("lock check: {e}")),
    }

    // The recursive watcher.
    let events = plock(&load.events).clone();
    let acked_changes = plock(&load.acked_changes).clone();
    let unknown = plock(&load.unknown_paths).clone();
    let a = watch_events_exactly_once_in_order(
        workload::REGISTER_ROOT,
        &events,
        &acked_changes,
        &unknown,
    );
    summary.add_anomalies(&a);
    details.extend(a.iter().take(20).map(|a| format!("watch: {a}")));

    // Ephemerals. An ephemeral must exist while its session is alive (until its client went
    // silent), and be gone within timeout + tick of the session's deadline. Two things move that
    // "gone by" bound (DESIGN.md §6, "Sessions"):
    // - a leader that fails before the deadline never expires the session; the next leader
    //   restarts the deadline from its takeover;
    // - while no leader can commit (the leader paused, cut off or dead, no takeover yet), no
    //   session ends: a leader that kept its office through a fault shorter than an election
    //   ends what fell due during it within one tick of the fault's end.
    // Takeovers in time order (one poller per node records them).
    let mut changes = plock(changes).clone();
    changes.sort();
    let mut sessions = Vec::new();
    let mut nodes = Vec::new();
    for (node, life) in plock(&load.ephemerals).clone() {
        let mut moved = life.clone();
        if let Some(until) = life.alive_until {
            moved.must_end_by = Some(session_end_bound(
                until,
                life.timeout,
                TICK,
                leader_faults,
                &changes,
            ));
        }
        sessions.push(moved);
        nodes.push(node);
    }
    let observations = plock(&load.observations).clone();
    let a = ephemeral_lifetime(&sessions, &nodes, &observations, TICK);
    summary.add_anomalies(&a);
    details.extend(a.iter().take(20).map(|a| format!("ephemeral: {a}")));

    // The idle session: never ended while its client was told it was connected.
    let idle = plock(&load.idle).clone();
    for c in &idle {
        let seen: Vec<String> = c
            .changes
            .iter()
            .map(|(at, v)| format!("{v:?} at {:.1}s", at.as_secs_f64()))
            .collect();
        eprintln!(
            "  {name}: idle session {:#x} saw {}",
            c.session,
            seen.join(", ")
        );
    }
    let a = session_ended_while_connected(&idle);
    summary.add_anomalies(&a);
    details.extend(a.iter().map(|a| format!("idle session: {a}")));
    summary
}

/// The shared step of the two resolutions below: `took_effect` unknown writes (by version
/// counting) took effect; if the unknown writes among `ops` whose value (`value_of`) was observed
/// account for exactly that many, the others never took effect and become `Failed`. Returns how
/// many were resolved.
fn resolve_unknowns<O, R>(
    ops: &mut [Operation<O, R>],
    took_effect: usize,
    observed: &HashSet<Vec<u8>>,
    value_of: impl Fn(&Operation<O, R>) -> Option<Vec<u8>>,
) -> usize {
    let unknown = |o: &Operation<O, R>| matches!(o.outcome, HOutcome::Unknown);
    let seen = ops
        .iter()
        .filter(|o| unknown(o) && value_of(o).is_some_and(|v| observed.contains(&v)))
        .count();
    if seen != took_effect {
        return 0;
    }
    let mut resolved = 0;
    for o in ops.iter_mut() {
        if unknown(o) && value_of(o).is_some_and(|v| !observed.contains(&v)) {
            o.outcome = HOutcome::Failed;
            resolved += 1;
        }
    }
    resolved
}

/// Resolves register writes of unknown outcome by counting versions: every successful setData
/// bumps the znode's version (the workload never deletes), so the final version minus the
/// acknowledged writes is how many unknown writes took effect. Values are unique per write, so an
/// unknown write whose value nobody ever read is one that did not take effect whenever the
/// observed unknown writes already account for that count. Sound, and it keeps the checker's
/// search small after crashes. Returns how many were resolved.
fn resolve_register_unknowns(
    regs: &mut [Operation<ZnodeOp, RegisterRet>],
    finals: &BTreeMap<String, Option<FinalNode>>,
) -> usize {
    let mut resolved = 0;
    for (path, fin) in finals {
        let Some(fin) = fin else { continue };
        let on_path = |o: &Operation<ZnodeOp, RegisterRet>| &o.op.path == path;
        let acked = regs
            .iter()
            .filter(|o| on_path(o) && matches!(o.result(), Some(RegisterRet::Written { .. })))
            .count();
        let mut observed: HashSet<Vec<u8>> = regs
            .iter()
            .filter(|o| on_path(o))
            .filter_map(|o| match o.result() {
                Some(RegisterRet::Value { value, .. }) => Some(value.0.clone()),
                _ => None,
            })
            .collect();
        observed.insert(fin.value.0.clone());
        let took_effect = (fin.version.max(0) as usize).saturating_sub(acked);
        resolved += resolve_unknowns(regs, took_effect, &observed, |o| match &o.op.op {
            RegisterOp::Write(v) | RegisterOp::CasWrite { value: v, .. } if on_path(o) => {
                Some(v.0.clone())
            }
            _ => None,
        });
    }
    resolved
}

/// The same resolution for the multi client's transactions, counted on /m/a (every committed
/// transaction sets it once) against the final multi-read (the last operation recorded).
fn resolve_multi_unknowns(ops: &mut [Operation<MultiOp, MultiRet>]) -> usize {
    let Some(MultiRet::Read(last)) = ops.last().and_then(|o| o.result()).cloned() else {
        return 0;
    };
    let Some(Some(final_a)) = last.first().cloned() else {
        return 0;
    };
    let committed = ops
        .iter()
        .filter(|o| {
            matches!(o.result(), Some(MultiRet::Txn(r))
                if r.iter().all(|x| matches!(x, TxnOpRet::Checked | TxnOpRet::Set { .. })))
        })
        .count();
    let mut observed: HashSet<Vec<u8>> = ops
        .iter()
        .filter_map(|o| match o.result() {
            Some(MultiRet::Read(v)) => v.first().cloned().flatten().map(|z| z.value.0),
            _ => None,
        })
        .collect();
    observed.insert(final_a.value.0.clone());
    let took_effect = (final_a.version.max(0) as usize).saturating_sub(committed);
    resolve_unknowns(ops, took_effect, &observed, |o| match &o.op {
        MultiOp::Txn(t) => t.iter().find_map(|x| match x {
            TxnOp::Set { value, .. } => Some(value.0.clone()),
            _ => None,
        }),
        MultiOp::Read(_) => None,
    })
}
