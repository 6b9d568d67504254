//! A work queue of imaging studies: the imaging centre queues studies; radiologists at the
//! hospital and at a partner clinic (each its own session) read every study exactly once. One
//! reader crashes holding a study it never finished; the queue hands that study to another.
//!
//! Run `scripts/cluster.sh start 3`, then `cargo run -p synod-examples --bin work_queue`.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Parser;
use synod_client::recipe::queue::Queue;
use synod_client::Error;
use synod_examples::{connect, fail, finish, run_id, say, DEFAULT_SERVERS};

/// Studies queued by the imaging centre.
const STUDIES: usize = 12;
/// The readers.
const READERS: [&str; 3] = ["hospital-radiology", "partner-clinic", "teleradiology"];

#[derive(Parser, Debug)]
#[command(
    about = "Imaging studies queued once, read exactly once by workers at other institutions"
)]
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
    finish("work_queue", outcome)
}

/// One reader: takes studies until the queue stays empty, "reads" each, acknowledges it.
async fn reader(servers: String, dir: String, name: &'static str) -> Result<Vec<String>, String> {
    let zk = connect(&servers, Duration::from_secs(10))
        .await
        .map_err(fail("connect"))?;
    let q = Queue::open(&zk, &dir, name)
        .await
        .map_err(fail("open the queue"))?;
    let mut read = Vec::new();
    loop {
        match q.take(Duration::from_secs(2)).await {
            Ok(item) => {
                let study = String::from_utf8_lossy(&item.data).into_owned();
                say(name, format!("reading {study}"));
                tokio::time::sleep(Duration::from_millis(60)).await;
                q.ack(&item).await.map_err(fail("acknowledge"))?;
                read.push(study);
            }
            Err(Error::WaitTimeout(_)) => break,
            Err(e) => return Err(format!("take: {e}")),
        }
    }
    say(name, format!("queue empty; read {} studies", read.len()));
    zk.close().await.map_err(fail("close"))?;
    Ok(read)
}

async fn run(servers: &str) -> Result<(), String> {
    let dir = format!("/work-queue/{}", run_id());
    let imaging = connect(servers, Duration::from_secs(10))
        .await
        .map_err(fail("connect to the cluster"))?;
    let q = Queue::open(&imaging, &dir, "imaging-centre")
        .await
        .map_err(fail("open the queue"))?;

    // A reader that takes one study and crashes before finishing it.
    let crasher = connect(servers, Duration::from_secs(10))
        .await
        .map_err(fail("connect"))?;
    let cq = Queue::open(&crasher, &dir, "night-shift")
        .await
        .map_err(fail("open the queue"))?;

    let mut queued = Vec::new();
    for i in 1..=STUDIES {
        let study = format!("CT-{i:03} (patient {})", 4700 + i);
        q.put(study.as_bytes())
            .await
            .map_err(fail("queue a study"))?;
        queued.push(study);
    }
    say(
        "imaging-centre",
        format!("queued {STUDIES} studies under {dir}"),
    );

    let lost = cq
        .take(Duration::from_secs(5))
        .await
        .map_err(fail("take"))?;
    say(
        "night-shift",
        format!(
            "took {} and crashes before reading it",
            String::from_utf8_lossy(&lost.data)
        ),
    );
    crasher.close().await.map_err(fail("close"))?;
    let unacked = q.unacked().await.map_err(fail("list claims"))?;
    say(
        "imaging-centre",
        format!("unfinished claims: {unacked:?}; putting the night shift's back"),
    );
    let requeued = q
        .requeue_unacked("night-shift")
        .await
        .map_err(fail("requeue"))?;
    if requeued != 1 {
        return Err(format!("expected to requeue 1 study, requeued {requeued}"));
    }

    let readers: Vec<_> = READERS
        .iter()
        .map(|name| tokio::spawn(reader(servers.to_string(), dir.clone(), name)))
        .collect();
    let mut read_by: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (name, task) in READERS.iter().zip(readers) {
        for study in task.await.map_err(fail("reader task"))?? {
            read_by.entry(study).or_default().push(name);
        }
    }
    let twice: Vec<_> = read_by.iter().filter(|(_, r)| r.len() > 1).collect();
    let missing: Vec<_> = queued
        .iter()
        .filter(|s| !read_by.contains_key(*s))
        .collect();
    say(
        "imaging-centre",
        format!(
            "{} of {STUDIES} studies read; read twice: {}; never read: {}",
            read_by.len(),
            twice.len(),
            missing.len()
        ),
    );
    if !twice.is_empty() || !missing.is_empty() || read_by.len() != STUDIES {
        return Err(format!(
            "not exactly once: twice {twice:?}, missing {missing:?}"
        ));
    }
    if !q.unacked().await.map_err(fail("list claims"))?.is_empty() {
        return Err("claims left unacknowledged".into());
    }
    say("imaging-centre", "every study was read exactly once");
    imaging.close().await.map_err(fail("close"))?;
    Ok(())
}
