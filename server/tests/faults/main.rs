//! The fault-injection suite: real `synod` processes (3 nodes, peer links through
//! fault-injecting proxies), concurrent clients recording every operation, faults injected
//! (crashes, pauses, partitions, snapshot catch-up), then the history checked — linearizability
//! of registers and multi transactions (WGL, `synod-faults`), no lost acknowledged write, unique
//! increasing sequential names, never two lock holders, ephemerals living exactly as long as
//! their sessions, a recursive watcher seeing every change once in zxid order, and every replica
//! converging to the same digest. Prints one table row per scenario.
//!
//! `cargo test -p synod-server --test faults` runs the short version (four scenarios);
//! `scripts/faults.sh` (or `-- --full`) runs every scenario; `-- --scenario NAME` runs one.
//! Exits non-zero if any scenario finds an anomaly or cannot run.

mod kept_logs;
mod net;
mod scenario;
mod workload;

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use synod_faults::checks::Summary;

/// Upper bound of one scenario, cluster start and checks included.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(240);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let full = args.iter().any(|a| a == "--full") || std::env::var_os("FAULTS_FULL").is_some();
    let only = args
        .iter()
        .position(|a| a == "--scenario")
        .and_then(|i| args.get(i + 1).cloned());
    let specs: Vec<scenario::Spec> = match &only {
        Some(name) => scenario::FULL
            .iter()
            .filter(|s| s.name == name)
            .copied()
            .collect(),
        None if full => scenario::FULL.to_vec(),
        None => scenario::SHORT.to_vec(),
    };
    if specs.is_empty() {
        eprintln!("no scenario named {only:?}");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bin = Path::new(env!("CARGO_BIN_EXE_synod"));
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut failed = false;
    for spec in specs {
        let t = Instant::now();
        eprintln!("== scenario {}", spec.name);
        let result = if spec.fault.on_hosts() {
            on_hosts(bin, spec)
        } else {
            rt.block_on(async {
                tokio::time::timeout(SCENARIO_TIMEOUT, scenario::run(bin, spec, None)).await
            })
            .map_err(|_| format!("did not finish within {SCENARIO_TIMEOUT:?}"))
        };
        match result {
            Ok(Ok(out)) => {
                for d in &out.details {
                    eprintln!("  ANOMALY {}: {d}", spec.name);
                }
                failed |= out.summary.anomalies > 0 || !out.details.is_empty();
                eprintln!("  {} ({:.1?})", out.summary, t.elapsed());
                rows.push(out.summary);
            }
            Ok(Err(e)) => {
                eprintln!("  {} could not run: {e}", spec.name);
                failed = true;
            }
            Err(e) => {
                eprintln!("  {} {e}", spec.name);
                failed = true;
            }
        }
    }
    println!("\n{}", Summary::header());
    for r in &rows {
        println!("{r}");
    }
    println!("({} scenarios in {:.1?})", rows.len(), started.elapsed());
    // Bounded: a client task stuck in a blocking call must not keep the process alive.
    rt.shutdown_timeout(Duration::from_secs(10));
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Runs a scenario whose nodes and clients are on hosts of their own: four network namespaces
/// (three nodes, the clients), made here and removed afterwards. The scenario runs on a thread
/// of its own that enters the clients' host first, with a runtime of its own, so that every
/// socket its clients and probes open is the clients' host's (threads and processes it starts
/// inherit the namespace; the nodes move to theirs with `ip netns exec`).
fn on_hosts(
    bin: &Path,
    spec: scenario::Spec,
) -> Result<Result<scenario::Outcome_, String>, String> {
    let hosts = synod_testkit::netns::Netns::create(scenario::CLIENT_HOST + 1)
        .map_err(|e| format!("could not make its hosts (network namespaces): {e}"))?;
    let bin = bin.to_path_buf();
    std::thread::scope(|s| {
        s.spawn(|| {
            hosts
                .enter(scenario::CLIENT_HOST)
                .map_err(|e| format!("could not enter the clients' host: {e}"))?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(4)
                .enable_all()
                .build()
                .map_err(|e| format!("tokio runtime: {e}"))?;
            let out = rt
                .block_on(async {
                    tokio::time::timeout(SCENARIO_TIMEOUT, scenario::run(&bin, spec, Some(&hosts)))
                        .await
                })
                .map_err(|_| format!("did not finish within {SCENARIO_TIMEOUT:?}"));
            rt.shutdown_timeout(Duration::from_secs(10));
            out
        })
        .join()
        .map_err(|_| "its thread panicked".to_string())?
    })
}
