//! Helpers shared by the example programs: the server list, connecting, and printing each step
//! with the time and the speaker, so that the output reads as a story of the workflow.

use std::io::Write;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use synod_client::tls::TlsOptions;
use synod_client::{Client, ConnectOptions};

/// The local cluster started by `scripts/cluster.sh start 3`.
pub const DEFAULT_SERVERS: &str = "127.0.0.1:2181,127.0.0.1:2182,127.0.0.1:2183";

/// Environment variable carrying the start of the whole run (Unix milliseconds) to child
/// processes, so that every process prints times on one clock.
pub const T0_ENV: &str = "SYNOD_EXAMPLE_T0_MS";

/// The run's start in Unix milliseconds: inherited from [`T0_ENV`], else this process's start.
static STARTED: OnceLock<u128> = OnceLock::new();

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// The run's start (see [`T0_ENV`]); pass it to child processes.
pub fn started_ms() -> u128 {
    *STARTED.get_or_init(|| {
        std::env::var(T0_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(now_ms)
    })
}

/// Prints one step: `[  1.234s] who: what`, flushed at once (the output is read live, and by
/// the parent process when this one runs as a child).
pub fn say(who: &str, what: impl std::fmt::Display) {
    let t = now_ms().saturating_sub(started_ms()) as f64 / 1e3;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "[{t:>7.3}s] {who}: {what}");
    let _ = out.flush();
}

/// Connects a new session to `servers` with the given session timeout, over TLS as the
/// environment says (`SYNOD_TLS_*`, `SYNOD_INSECURE`, else the local cluster's certificates:
/// [`TlsOptions::from_env`]).
pub async fn connect(
    servers: &str,
    session_timeout: Duration,
) -> Result<Client, synod_client::Error> {
    let tls = TlsOptions::from_env().map(|t| t.connector()).transpose()?;
    Client::connect(
        servers,
        ConnectOptions {
            tls,
            ..ConnectOptions::default()
        }
        .session_timeout(session_timeout)
        .connect_timeout(Duration::from_secs(10)),
    )
    .await
}

/// A name unique to this run (so repeated runs against one cluster do not collide).
pub fn run_id() -> String {
    format!("run-{}", now_ms())
}

/// The outcome of an example: `Ok` if its own check passed, else a message for stderr.
pub type Outcome = Result<(), String>;

/// Exits with 0 if `outcome` is `Ok`, else prints the failure and exits with 1.
pub fn finish(program: &str, outcome: Outcome) -> ! {
    match outcome {
        Ok(()) => {
            say(program, "OUTCOME OK");
            std::process::exit(0)
        }
        Err(why) => {
            say(program, format!("OUTCOME FAILED: {why}"));
            eprintln!("{program}: {why}");
            std::process::exit(1)
        }
    }
}

/// Turns any displayable error into the example's failure message.
pub fn fail<E: std::fmt::Display>(context: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{context}: {e}")
}
