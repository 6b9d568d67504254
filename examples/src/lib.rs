//! Helpers shared by the example programs: the server list, connecting, and printing each step
//! with the time and the speaker, so that the output reads as a story of the workflow.

use std::io::Write;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use synod_client::tls::TlsOptions;
use synod_client::{digest_id, Acl, Client, ConnectOptions, Id};

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

/// Environment variable carrying the run's secret to child processes: the password of every
/// party's digest identity when the cluster gives them no certificates of their own.
pub const SECRET_ENV: &str = "SYNOD_EXAMPLE_SECRET";

/// The run's secret (see [`SECRET_ENV`]): inherited, else 16 random bytes, hex.
fn secret() -> &'static str {
    static SECRET: OnceLock<String> = OnceLock::new();
    SECRET.get_or_init(|| {
        std::env::var(SECRET_ENV).unwrap_or_else(|_| {
            use std::io::Read;
            let mut b = [0u8; 16];
            if std::fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut b))
                .is_err()
            {
                // No /dev/urandom: the time and pid are a weak secret, but a unique one.
                b[..8].copy_from_slice(&(now_ms() as u64).to_be_bytes());
                b[8..12].copy_from_slice(&std::process::id().to_be_bytes());
            }
            b.iter().map(|x| format!("{x:02x}")).collect()
        })
    })
}

/// The run's secret, to hand to child processes in [`SECRET_ENV`].
pub fn run_secret() -> String {
    secret().to_string()
}

/// How one party of a workflow (an institution, the orchestrator) is known to the cluster.
#[derive(Debug, Clone)]
pub struct Party {
    /// Its name (`hospital`, `lab`, ...).
    pub name: String,
    /// The identity ACLs name it by: `x509:<name>` when it has a certificate of its own, else
    /// the digest id of `<name>:<run secret>`.
    pub id: Id,
    /// How its session speaks TLS (its own certificate, or the environment's).
    tls: Option<TlsOptions>,
    /// The digest credential it adds to its session, when it has no certificate.
    digest: Option<String>,
}

/// Party `name`: with its own certificate if the directory of the cluster's CA holds
/// `<name>.crt` and `<name>.key` (`synod certs create-client --name <name>`; scripts/cluster.sh
/// issues them for the examples' institutions), else with the TLS the environment gives every
/// example and a digest identity.
pub fn party(name: &str) -> Party {
    let base = TlsOptions::from_env();
    let own = base.as_ref().and_then(|t| {
        let dir = t.ca.parent()?;
        let (cert, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        (cert.is_file() && key.is_file()).then(|| TlsOptions::new(&t.ca).identity(cert, key))
    });
    match own {
        Some(tls) => Party {
            name: name.to_string(),
            id: Id {
                scheme: "x509".into(),
                id: name.to_string(),
            },
            tls: Some(tls),
            digest: None,
        },
        None => Party {
            name: name.to_string(),
            id: digest_id(name, secret()),
            tls: base,
            digest: Some(format!("{name}:{}", secret())),
        },
    }
}

impl Party {
    /// How it proves who it is: `certificate` or `digest`.
    pub fn proof(&self) -> &'static str {
        if self.digest.is_some() {
            "digest"
        } else {
            "certificate"
        }
    }

    /// Connects a session as this party; every znode it creates without naming an ACL gets
    /// `default_acl`.
    pub async fn connect(
        &self,
        servers: &str,
        session_timeout: Duration,
        default_acl: Vec<Acl>,
    ) -> Result<Client, synod_client::Error> {
        let tls = self.tls.as_ref().map(|t| t.connector()).transpose()?;
        let zk = Client::connect(
            servers,
            ConnectOptions {
                tls,
                ..ConnectOptions::default()
            }
            .session_timeout(session_timeout)
            .connect_timeout(Duration::from_secs(10))
            .default_acl(default_acl),
        )
        .await?;
        if let Some(cred) = &self.digest {
            zk.add_auth("digest", cred.as_bytes()).await?;
        }
        Ok(zk)
    }
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
