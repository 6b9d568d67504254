//! `synodctl`: a command-line client for synod and for any ZooKeeper 3.5+ ensemble.
//!
//! One invocation opens one session, runs one command and closes the session again. Output is
//! plain text shaped like ZooKeeper's `zkCli`, or one JSON object per result with `--json`.
//!
//! Exit codes: 0 on success, 1 when the server answered with a ZooKeeper error (`NoNode`,
//! `BadVersion`, `NodeExists`, ...), 2 for usage errors (bad arguments, invalid paths) and
//! connection problems (no server reachable, connection lost, session expired, timeouts),
//! 130 when interrupted with Ctrl-C.

mod admin;
mod cli;
mod output;
mod znode;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde_json::json;
use synod_client::tls::TlsOptions;
use synod_client::{Client, ConnectOptions, Error};

use cli::{Cli, Command};
use output::print_json;
use znode::{Ctx, Job};

/// Exit code for an error the ZooKeeper server answered with.
pub const EXIT_ZK: u8 = 1;
/// Exit code for usage errors and connection problems.
pub const EXIT_USAGE: u8 = 2;
/// Exit code after Ctrl-C / SIGTERM (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: u8 = 130;

/// Why a command failed: printed as `Error: <name>[: <path>][ (<detail>)]`.
#[derive(Debug)]
pub struct Failure {
    /// The ZooKeeper code name (`NoNode`) or a local error name.
    pub name: String,
    /// The path the failing request was about.
    pub path: Option<String>,
    /// Extra explanation for errors whose name alone says too little.
    pub detail: Option<String>,
    /// The process exit code.
    pub exit: u8,
}

impl Failure {
    /// A client error on a request for `path`.
    pub fn zk(err: Error, path: &str) -> Self {
        let exit = match &err {
            Error::ConnectionLoss
            | Error::SessionExpired
            | Error::SessionMoved
            | Error::OperationTimeout
            | Error::RequestTimeout
            | Error::AuthFailed
            | Error::Closed
            | Error::ConnectTimeout(_)
            | Error::InvalidConnectString(_)
            | Error::Protocol(_)
            | Error::InvalidPath(_) => EXIT_USAGE,
            _ => EXIT_ZK,
        };
        let detail = match &err {
            Error::InvalidPath(_)
            | Error::ConnectTimeout(_)
            | Error::InvalidConnectString(_)
            | Error::Protocol(_)
            | Error::Unknown(_)
            | Error::Multi { .. }
            | Error::Closed => Some(err.to_string()),
            _ => None,
        };
        Failure {
            name: err.name(),
            path: Some(path.to_string()),
            detail,
            exit,
        }
    }

    /// An error found before anything was sent.
    pub fn usage(path: Option<&str>, msg: impl Into<String>) -> Self {
        Failure {
            name: "BadArguments".into(),
            path: path.map(str::to_string),
            detail: Some(msg.into()),
            exit: EXIT_USAGE,
        }
    }

    /// No reply within `--timeout-ms`.
    pub fn timeout(path: &str, timeout: Duration) -> Self {
        Failure {
            name: "OperationTimeout".into(),
            path: Some(path.to_string()),
            detail: Some(format!("no reply within {} ms", timeout.as_millis())),
            exit: EXIT_USAGE,
        }
    }

    /// Ctrl-C or SIGTERM before the command finished.
    pub fn interrupted() -> Self {
        Failure {
            name: "Interrupted".into(),
            path: None,
            detail: None,
            exit: EXIT_INTERRUPTED,
        }
    }

    /// Prints the error on stderr, and as JSON on stdout with `--json`.
    pub fn report(&self, json: bool) {
        let mut line = format!("Error: {}", self.name);
        if let Some(p) = &self.path {
            line.push_str(": ");
            line.push_str(p);
        }
        if let Some(d) = &self.detail {
            line.push_str(&format!(" ({d})"));
        }
        eprintln!("{line}");
        if json {
            let mut obj = json!({ "error": self.name, "path": self.path });
            if let Some(d) = &self.detail {
                obj["message"] = json!(d);
            }
            // Nothing more can be done if stdout is gone; the exit code still tells.
            let _ = print_json(&obj);
        }
    }
}

/// The result of a command step.
pub type CmdResult<T = ()> = Result<T, Failure>;

/// Resolves on Ctrl-C (or SIGTERM on Unix); never, if no handler could be installed.
async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = async {
            match signal(SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        let int = async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await
            }
        };
        tokio::select! {
            _ = term => {}
            _ = int => {}
        }
    }
    #[cfg(not(unix))]
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await
    }
}

/// The TLS material to use: none with `--insecure`; the `--tls-*` flags (or `SYNOD_TLS_*`) if
/// given; else the local cluster's certificates, if scripts/cluster.sh made them.
fn tls_options(cli: &Cli) -> Option<TlsOptions> {
    if cli.insecure {
        return None;
    }
    if let Some(ca) = &cli.tls_ca {
        let tls = TlsOptions::new(ca);
        return Some(match (&cli.tls_cert, &cli.tls_key) {
            (Some(cert), Some(key)) => tls.identity(cert, key),
            _ => tls,
        });
    }
    TlsOptions::local_cluster()
}

/// Checks the command, connects, runs the command and closes the session.
async fn run(cli: Cli) -> CmdResult {
    let admin_failure = |e: String| Failure {
        name: "AdminError".into(),
        path: None,
        detail: Some(e),
        exit: EXIT_ZK,
    };
    let tls = tls_options(&cli);
    let command = match cli.command {
        Command::Cluster { admin, action } => {
            let http = admin::Admin::new(tls.as_ref()).map_err(admin_failure)?;
            let done = admin::cluster(&http, &admin, action, cli.json).await;
            return done.map_err(admin_failure);
        }
        Command::Tenant { admin, action } => {
            let http = admin::Admin::new(tls.as_ref()).map_err(admin_failure)?;
            let done = admin::tenant(&http, &admin, action, cli.json).await;
            return done.map_err(admin_failure);
        }
        Command::Audit {
            admin,
            path,
            identity,
            tenant,
            since,
            until,
            limit,
            out,
        } => {
            let http = admin::Admin::new(tls.as_ref()).map_err(admin_failure)?;
            let query = admin::AuditQuery {
                path,
                identity,
                tenant,
                since,
                until,
            };
            let done = admin::audit(&http, &admin, &query, limit, out.as_deref(), cli.json).await;
            return done.map_err(admin_failure);
        }
        Command::Snapshot { admin } => {
            let http = admin::Admin::new(tls.as_ref()).map_err(admin_failure)?;
            return admin::snapshot(&http, &admin).await.map_err(admin_failure);
        }
        Command::Backup { admin, out } => {
            let http = admin::Admin::new(tls.as_ref()).map_err(admin_failure)?;
            return admin::backup(&http, &admin, &out)
                .await
                .map_err(admin_failure);
        }
        other => other,
    };
    let timeout = Duration::from_millis(cli.timeout_ms);
    let job = Job::prepare(command)?;
    let is_watch = job.is_watch();
    let mut options = ConnectOptions::default().connect_timeout(timeout);
    if let Some(tls) = &tls {
        let connector = tls
            .connector()
            .map_err(|e| Failure::usage(None, e.to_string()))?;
        options = options.tls(connector);
    }
    let connect = Client::connect(&cli.servers, options);
    let zk = tokio::select! {
        r = tokio::time::timeout(timeout + Duration::from_secs(1), connect) => match r {
            Ok(Ok(zk)) => zk,
            Ok(Err(e)) => {
                let mut f = Failure::zk(e, job.path());
                f.exit = EXIT_USAGE;
                if f.detail.is_none() {
                    f.detail = Some(format!("connecting to {}", cli.servers));
                }
                return Err(f);
            }
            Err(_) => return Err(Failure {
                name: "ConnectionLoss".into(),
                path: Some(job.path().to_string()),
                detail: Some(format!("no session established with {} within {} ms", cli.servers, timeout.as_millis())),
                exit: EXIT_USAGE,
            }),
        },
        _ = interrupted() => return Err(Failure::interrupted()),
    };
    if let Some(auth) = &cli.auth {
        let added = tokio::time::timeout(timeout, zk.add_auth("digest", auth.as_bytes())).await;
        match added {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Failure::zk(e, job.path())),
            Err(_) => return Err(Failure::timeout(job.path(), timeout)),
        }
    }
    let ctx = Ctx {
        zk,
        json: cli.json,
        timeout,
    };
    let result = tokio::select! {
        r = ctx.run(job) => r,
        _ = interrupted() => if is_watch { Ok(()) } else { Err(Failure::interrupted()) },
    };
    // Close the session so the server drops it (and its ephemerals) now rather than after the
    // session timeout. A failure here does not change the command's outcome.
    match tokio::time::timeout(timeout, ctx.zk.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "closing the session failed"),
        Err(_) => tracing::debug!("closing the session timed out"),
    }
    result
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let json = cli.json;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            f.report(json);
            ExitCode::from(f.exit)
        }
    }
}
