//! `--hold-sessions N --watches M`: many idle sessions and watches at once, held open while the
//! servers' memory is read (the scale phases of scripts/bench.sh): how long opening them and
//! registering the watches took, and that every one was taken.

use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use synod_client::connect_string::ConnectString;
use synod_client::{Client, ConnectOptions};

use crate::{connect_options, connect_owned, rotated, Args, Fatal};

/// Opens `sessions` sessions, round robin over the servers, `--inflight` connecting at a time;
/// registers `--watches` exists watches spread over them; prints
/// `hold_sessions=N watches=M connect_secs= watch_secs=`; holds them for `--hold-secs`; closes.
pub async fn hold(args: &Args, sessions: u32) -> Result<(), Fatal> {
    let cs = ConnectString::parse(&args.servers).map_err(|e| Fatal(e.to_string()))?;
    let options = ConnectOptions {
        session_timeout: Duration::from_millis(args.session_timeout_ms),
        ..connect_options(args)?
    };
    let parallel = (args.inflight as usize).max(1);
    let started = Instant::now();
    let clients: Vec<Client> = stream::iter(0..sessions as usize)
        .map(|i| connect_owned(rotated(&cs, i), options.clone()))
        .buffer_unordered(parallel)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|e| Fatal(format!("connect: {e}")))?;
    let connect_secs = started.elapsed().as_secs_f64();
    if clients.is_empty() {
        return Err(Fatal("--hold-sessions 0: nothing to hold".into()));
    }

    let started = Instant::now();
    let n = clients.len();
    let watched: Vec<_> = stream::iter(0..args.watches as usize)
        .map(|w| {
            let zk = clients[w % n].clone();
            async move {
                zk.exists_watch(&format!("/synod-hold/w{w}"))
                    .await
                    .map(|(_, watch)| watch)
            }
        })
        .buffer_unordered(parallel)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|e| Fatal(format!("watch: {e}")))?;
    let watch_secs = started.elapsed().as_secs_f64();
    println!(
        "hold_sessions={n} watches={} connect_secs={connect_secs:.1} watch_secs={watch_secs:.1}",
        watched.len()
    );
    tokio::time::sleep(Duration::from_secs_f64(args.hold_secs)).await;
    drop(watched);
    stream::iter(clients)
        .for_each_concurrent(parallel, |zk| async move {
            let _ = zk.close().await;
        })
        .await;
    Ok(())
}
