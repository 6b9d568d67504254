//! `--floor DIR`: the machine's floor that a replicated write cannot beat, measured in the same
//! run as the servers: the loopback TCP round trip (a small request and its reply between two
//! threads, Nagle off) and an append of 4 KiB to a file in DIR followed by `fdatasync`. A serial
//! write through a follower needs about two round trips and one such sync on its critical path.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Instant;

use hdrhistogram::Histogram;

use crate::{new_histogram, Fatal};

/// Bytes of each ping and pong (about a small ZooKeeper request).
const PING_BYTES: usize = 64;
/// Bytes of each appended block.
const BLOCK_BYTES: usize = 4096;

/// One floor measurement: its name and the latency of each round, in µs.
pub struct Floor {
    /// `floor_rtt` or `floor_fsync`.
    pub name: &'static str,
    /// Latency of every measured round.
    pub rounds: Histogram<u64>,
}

impl Floor {
    /// The line bench.sh reads, in the workloads' format.
    pub fn text(&self) -> String {
        let h = &self.rounds;
        format!(
            "workload={} ops={} p50_us={} p99_us={} max_us={} errors=0",
            self.name,
            h.len(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.max()
        )
    }
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> Fatal {
    move |e| Fatal(format!("floor: {what}: {e}"))
}

/// `rounds` loopback round trips after `warmup` unrecorded ones, between this thread and an
/// echo thread.
pub fn loopback_rtt(warmup: u32, rounds: u32) -> Result<Floor, Fatal> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io("bind"))?;
    let addr = listener.local_addr().map_err(io("local address"))?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = [0u8; PING_BYTES];
        loop {
            match s.read_exact(&mut buf) {
                Ok(()) => s.write_all(&buf)?,
                // The measuring side closed: done.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    });
    let mut s = TcpStream::connect(addr).map_err(io("connect"))?;
    s.set_nodelay(true).map_err(io("nodelay"))?;
    let mut h = new_histogram(3)?;
    let mut buf = [7u8; PING_BYTES];
    for i in 0..warmup + rounds {
        let t0 = Instant::now();
        s.write_all(&buf).map_err(io("ping"))?;
        s.read_exact(&mut buf).map_err(io("pong"))?;
        if i >= warmup {
            h.saturating_record(t0.elapsed().as_micros().max(1) as u64);
        }
    }
    drop(s);
    echo.join()
        .map_err(|_| Fatal("floor: the echo thread panicked".into()))?
        .map_err(io("echo"))?;
    Ok(Floor {
        name: "floor_rtt",
        rounds: h,
    })
}

/// `rounds` appends of 4 KiB + `fdatasync` to a new file in `dir` (removed afterwards), after
/// `warmup` unrecorded ones.
pub fn append_fdatasync(dir: &Path, warmup: u32, rounds: u32) -> Result<Floor, Fatal> {
    let path = dir.join(format!(".synod-bench-floor-{}", std::process::id()));
    let measured = (|| -> Result<Histogram<u64>, Fatal> {
        let mut f = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io("create the file"))?;
        let block = vec![0x5au8; BLOCK_BYTES];
        let mut h = new_histogram(3)?;
        for i in 0..warmup + rounds {
            let t0 = Instant::now();
            f.write_all(&block).map_err(io("append"))?;
            f.sync_data().map_err(io("fdatasync"))?;
            if i >= warmup {
                h.saturating_record(t0.elapsed().as_micros().max(1) as u64);
            }
        }
        Ok(h)
    })();
    let _ = std::fs::remove_file(&path);
    Ok(Floor {
        name: "floor_fsync",
        rounds: measured?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_measure_every_round() {
        let rtt = loopback_rtt(2, 20).unwrap();
        assert_eq!(rtt.rounds.len(), 20);
        assert!(rtt.text().starts_with("workload=floor_rtt ops=20 "));
        let dir = tempfile::tempdir().unwrap();
        let sync = append_fdatasync(dir.path(), 1, 5).unwrap();
        assert_eq!(sync.rounds.len(), 5);
        // The file is gone afterwards.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
