//! Shared configuration: three running services (one per institution) keep a config tree in
//! memory with the tree-cache recipe; an operator edits it with `synodctl` and every service
//! reacts within milliseconds.
//!
//! Run `scripts/cluster.sh start 3`, then `cargo run -p synod-examples --bin shared_config`.
//! The edits are made by the `synodctl` binary when one is found (`$SYNODCTL`, or next to this
//! program, as after `cargo build -p synod-client`), else by this program's own client (the same
//! `set` request); each step prints the equivalent `synodctl` command.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use synod_client::recipe::cache::{CacheEvent, TreeCache};
use synod_client::recipe::ensure_path;
use synod_client::{Client, CreateMode};
use synod_examples::{connect, fail, finish, run_id, say, DEFAULT_SERVERS};
use tokio::sync::mpsc;

/// The services watching the configuration.
const SERVICES: [&str; 3] = ["hospital-portal", "lab-analyser", "imaging-router"];
/// How fast every service must see an edit for the example to pass.
const REACT_WITHIN: Duration = Duration::from_secs(2);

#[derive(Parser, Debug)]
#[command(about = "A config tree edited with synodctl while running services react")]
struct Args {
    /// The cluster to use.
    #[arg(long, env = "SYNOD_SERVERS", default_value = DEFAULT_SERVERS)]
    servers: String,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let outcome = match tokio::time::timeout(Duration::from_secs(60), run(&args.servers)).await {
        Ok(o) => o,
        Err(_) => Err("the example did not finish within 60s".into()),
    };
    finish("shared_config", outcome)
}

/// `synodctl`, if one can be found.
fn synodctl() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SYNODCTL") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [dir.join("synodctl"), dir.join("../synodctl")]
        .into_iter()
        .find(|p| p.is_file())
}

/// One service: caches the config subtree and reports (service, path, value, when) per change.
async fn service(
    zk: Client,
    name: &'static str,
    root: String,
    seen: mpsc::UnboundedSender<(&'static str, String, String, Instant)>,
) -> Result<(), String> {
    let cache = TreeCache::start(&zk, &root)
        .await
        .map_err(fail("start the cache"))?;
    let mut events = cache.subscribe();
    say(
        name,
        format!(
            "loaded {} config entries into memory",
            cache.snapshot().len() - 1
        ),
    );
    let _ = seen.send((name, String::new(), "ready".into(), Instant::now()));
    while let Some(ev) = events.recv().await {
        if let CacheEvent::Changed(path) | CacheEvent::Created(path) = ev {
            let value = cache
                .data(&path)
                .map(|d| String::from_utf8_lossy(&d).into_owned())
                .unwrap_or_default();
            if seen.send((name, path, value, Instant::now())).is_err() {
                break;
            }
        }
    }
    Ok(())
}

async fn run(servers: &str) -> Result<(), String> {
    let me = "operator";
    let zk = connect(servers, Duration::from_secs(10))
        .await
        .map_err(fail("connect to the cluster"))?;
    let root = format!("/shared-config/{}", run_id());
    ensure_path(&zk, &root)
        .await
        .map_err(fail("create the config root"))?;
    for (key, value) in [
        ("imaging/max-parallel-studies", "4"),
        ("lab/turnaround-hours", "24"),
        ("hospital/ai-triage", "off"),
    ] {
        let path = format!("{root}/{key}");
        if let Some((parent, _)) = path.rsplit_once('/') {
            ensure_path(&zk, parent)
                .await
                .map_err(fail("create config"))?;
        }
        zk.create(&path, value.as_bytes(), CreateMode::Persistent)
            .await
            .map_err(fail("write config"))?;
    }
    say(me, format!("initial configuration written under {root}"));

    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut services = Vec::new();
    for name in SERVICES {
        let c = connect(servers, Duration::from_secs(10))
            .await
            .map_err(fail("connect a service"))?;
        services.push(tokio::spawn(service(c, name, root.clone(), tx.clone())));
    }
    drop(tx);
    let mut ready = 0;
    while ready < SERVICES.len() {
        match rx.recv().await {
            Some((_, _, v, _)) if v == "ready" => ready += 1,
            Some(_) => {}
            None => return Err("a service stopped".into()),
        }
    }

    let ctl = synodctl();
    match &ctl {
        Some(p) => say(me, format!("editing with {}", p.display())),
        None => say(me, "synodctl not found; editing with this program's client"),
    }
    let mut worst = Duration::ZERO;
    for (key, value) in [
        ("imaging/max-parallel-studies", "8"),
        ("hospital/ai-triage", "on"),
        ("lab/turnaround-hours", "12"),
    ] {
        let path = format!("{root}/{key}");
        say(
            me,
            format!("$ synodctl --servers {servers} set {path} {value}"),
        );
        let sent = Instant::now();
        match &ctl {
            Some(bin) => {
                let out = tokio::process::Command::new(bin)
                    .arg("--servers")
                    .arg(servers)
                    .arg("set")
                    .arg(&path)
                    .arg(value)
                    .output()
                    .await
                    .map_err(fail("run synodctl"))?;
                if !out.status.success() {
                    return Err(format!(
                        "synodctl failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
            }
            None => {
                zk.set_data(&path, value.as_bytes(), None)
                    .await
                    .map_err(fail("set"))?;
            }
        }
        let mut pending: Vec<&str> = SERVICES.to_vec();
        while !pending.is_empty() {
            let got = tokio::time::timeout(REACT_WITHIN * 5, rx.recv())
                .await
                .map_err(|_| format!("{pending:?} never saw {path} = {value}"))?;
            let Some((name, p, v, at)) = got else {
                return Err("a service stopped".into());
            };
            if p == path && v == value {
                let took = at.saturating_duration_since(sent);
                worst = worst.max(took);
                say(
                    name,
                    format!(
                        "now uses {key} = {value} ({:.1} ms after the edit was sent)",
                        took.as_secs_f64() * 1e3
                    ),
                );
                pending.retain(|n| *n != name);
            }
        }
    }
    for s in services {
        s.abort();
    }
    say(
        me,
        format!(
            "every service saw every edit; slowest reaction {:.1} ms",
            worst.as_secs_f64() * 1e3
        ),
    );
    if worst > REACT_WITHIN {
        return Err(format!(
            "a service took {worst:?} to react (limit {REACT_WITHIN:?})"
        ));
    }
    zk.close().await.map_err(fail("close"))?;
    Ok(())
}
