//! The `synod` binary: parses the configuration, sets up logging and runs the node until SIGINT or
//! SIGTERM; `synod restore ...` prepares a data directory from a backup instead,
//! `synod certs ...` issues a CA and node and client certificates, `synod audit ...`
//! verifies or exports a stopped node's audit trail, and `synod check-config ...` checks a
//! configuration (and `--print-config` prints the effective one) without starting.

use clap::Parser;
use synod_server::admin::metrics::AllocatorStats;
use synod_server::config::{Args, Config};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// RocksDB's C++ allocations go to the same jemalloc (`cxx_alloc.rs` says why; the C library's
/// `malloc` is left with little: RocksDB's C interface copies values and names with it).
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
mod cxx_alloc;

/// jemalloc's options, read before `main` (the C string `malloc_conf` of a jemalloc built with
/// the `_rjem_` prefix). `background_thread`: freed pages go back to the OS after
/// `dirty_decay_ms` even while the process is idle; without it jemalloc purges only when it is
/// called, so a burst (sending a snapshot and the log to a new member) left its peak resident:
/// measured on a 3-node cluster holding 100,000 znodes, a leader that had just brought a learner
/// up stayed at 243 MiB, and returned to 113 MiB with it. `dirty_decay_ms:3000` (jemalloc's
/// default is 10 s): a flush frees a memtable's blocks 8 MiB at a time (RocksDB allocates from
/// this jemalloc, `cxx_alloc.rs`), which write load reuses within a second; kept 10 s, they
/// held 2–7 MiB more resident after a burst, and 3 s cost no CPU measurably
/// (docs/operations.md, "What a node's memory holds").
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
static malloc_conf: &[u8; 43] = b"background_thread:true,dirty_decay_ms:3000\0";

/// jemalloc's counters, refreshed (its `epoch`) at each read; `None` if it cannot tell.
fn allocator_stats() -> Option<AllocatorStats> {
    use tikv_jemalloc_ctl::{epoch, stats};
    epoch::advance().ok()?;
    Some(AllocatorStats {
        allocated: stats::allocated::read().ok()? as u64,
        active: stats::active::read().ok()? as u64,
        resident: stats::resident::read().ok()? as u64,
        retained: stats::retained::read().ok()? as u64,
        metadata: stats::metadata::read().ok()? as u64,
    })
}

/// The x86-64 features this build's RocksDB is compiled for (`.cargo/config.toml`: its CRC32C)
/// that this CPU lacks.
#[cfg(target_arch = "x86_64")]
fn missing_cpu_features() -> Vec<&'static str> {
    let mut missing = Vec::new();
    if !std::arch::is_x86_feature_detected!("sse4.2") {
        missing.push("SSE4.2");
    }
    if !std::arch::is_x86_feature_detected!("pclmulqdq") {
        missing.push("PCLMULQDQ");
    }
    missing
}

#[cfg(not(target_arch = "x86_64"))]
fn missing_cpu_features() -> Vec<&'static str> {
    Vec::new()
}

fn main() -> std::process::ExitCode {
    let missing = missing_cpu_features();
    if !missing.is_empty() {
        eprintln!(
            "synod: this build needs a CPU with {} (x86-64 server CPUs since 2010–2011 have \
             them); this one lacks them. Build without them by removing the CXXFLAGS line of \
             .cargo/config.toml (RocksDB then checksums without the CRC32 instruction).",
            missing.join(" and ")
        );
        return std::process::ExitCode::from(2);
    }
    match std::env::args().nth(1).as_deref() {
        Some("restore") => {
            private_files();
            return restore(std::env::args().skip(1));
        }
        // Certificates are written with their own modes (keys 0600, certificates 0644).
        Some("certs") => return certs(std::env::args().skip(1)),
        Some("audit") => {
            private_files();
            return audit(std::env::args().skip(1));
        }
        Some("check-config") => return check_config(std::env::args().skip(1)),
        _ => private_files(),
    }
    let args = Args::parse();
    let print = args.print_config;
    let cfg = match Config::load(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("synod: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if print {
        return match cfg.to_toml() {
            Ok(t) => {
                print!("{t}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("synod: {e}");
                std::process::ExitCode::from(2)
            }
        };
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    if cfg.log_format == synod_server::config::LogFormat::Json {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .init();
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("synod: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    synod_server::admin::metrics::set_allocator_stats(allocator_stats);
    let result = rt.block_on(synod_server::server::run(cfg, shutdown_signal()));
    // What is left (requests the admin port dropped, work on the blocking pool such as a
    // backup's copy) gets this long, not for ever: dropping the runtime would wait for the
    // blocking pool.
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(%e, "synod stopped");
            eprintln!("synod: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// `synod restore --from F --data-dir D --id N --members ...`.
fn restore(args: impl Iterator<Item = String>) -> std::process::ExitCode {
    let args = synod_server::backup::RestoreArgs::parse_from(args);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("synod restore: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(synod_server::backup::restore(&args)) {
        Ok(r) => {
            println!(
                "restored {} znodes at zxid {:#x} (term {}) into {} as node {}",
                r.znodes,
                r.last_log_id.index,
                r.last_log_id.leader_id.term,
                args.data_dir.display(),
                args.id
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("synod restore: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

/// `synod certs [--dir D] create-ca | create-node --id N --host H | create-client --name X`.
fn certs(args: impl Iterator<Item = String>) -> std::process::ExitCode {
    let args = synod_server::tls::certs::CertsArgs::parse_from(args);
    match synod_server::tls::certs::run(&args) {
        Ok(written) => {
            for p in written {
                println!("wrote {}", p.display());
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("synod certs: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

/// `synod audit verify --data-dir D | --export F`, `synod audit export --data-dir D`.
fn audit(args: impl Iterator<Item = String>) -> std::process::ExitCode {
    let args = synod_server::audit::AuditArgs::parse_from(args);
    match synod_server::audit::run(args) {
        Ok(summary) => {
            eprintln!("{summary}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("synod audit: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

/// Every file and directory the node creates from here on (RocksDB's, snapshots, the identity
/// file) is readable by the service's user only: patients' data stays out of other users' reach
/// whatever the umask the service was started with.
fn private_files() {
    // SAFETY: umask only sets the process's file-creation mask; it cannot fail and touches no
    // memory. It runs before any thread is started.
    unsafe {
        libc::umask(0o077);
    }
}

/// `synod check-config <the flags synod would start with>`: loads the configuration (flags,
/// `SYNOD_*` variables, `--config` file) as a start would, checks that its TLS material loads
/// (certificates, keys, the CA; the peer certificate naming this node), and prints the effective
/// configuration with secrets redacted. Exit status 0 if a start would get past configuration,
/// 2 otherwise, with the reason. Nothing is started, bound or written.
fn check_config(args: impl Iterator<Item = String>) -> std::process::ExitCode {
    let args = match Args::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return std::process::ExitCode::from(2);
        }
    };
    let checked = Config::load(args).and_then(|cfg| {
        if let Some(files) = &cfg.tls {
            synod_server::tls::server_config(files, cfg.client_auth)?;
        }
        if let Some(files) = &cfg.peer_tls {
            synod_server::peer::PeerTls::for_node(files, cfg.id)?;
            synod_server::tls::server_config(files, synod_server::tls::ClientAuth::Required)?;
        }
        cfg.to_toml().map(|t| (cfg, t))
    });
    match checked {
        Ok((cfg, toml)) => {
            print!("{toml}");
            eprintln!(
                "synod: configuration ok: node {} of {} member(s), data in {}{}",
                cfg.id,
                cfg.members.len(),
                cfg.data_dir.display(),
                if cfg.insecure {
                    " (INSECURE: every port in plaintext)"
                } else {
                    ""
                }
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("synod check-config: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
