//! `--floor DIR`: the machine's floor that a replicated write cannot beat, measured in the same
//! run as the servers: the loopback TCP round trip (a small request and its reply between two
//! threads, Nagle off) and an append of 4 KiB to a file in DIR followed by `fdatasync`. A serial
//! write through a follower needs about two round trips and one such sync on its critical path.
//!
//! Two more syncs say what that floor is made of. An append makes the file longer, so its
//! `fdatasync` must also make the new length durable: a journal commit on a journalling file
//! system, a synchronous write of the inode on one without a journal (such as ext4 made without
//! one). Rewriting 4 KiB of a file whose blocks are already written changes no length and
//! allocates nothing, so its sync writes the data alone (`floor_fsync_overwrite`: what a log kept
//! in pre-written segments would pay). And three appenders on the same file system at once
//! (`floor_fsync_3way`) is what each node of a 3-node cluster on one machine pays while all three
//! sync: their writes and cache flushes queue on the one disk.
//!
//! One more round trip says what a hop of a serial write costs: the same ping and pong 1 ms
//! after the last (`floor_rtt_idle`), when both threads were asleep. Back-to-back round trips
//! keep the CPUs busy; the processes of a serial write sleep between its steps, and on a virtual
//! machine waking an idle CPU is part of each hop.

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::{new_histogram, Fatal};

/// Bytes of each ping and pong (about a small ZooKeeper request).
const PING_BYTES: usize = 64;
/// Bytes of each appended block.
const BLOCK_BYTES: usize = 4096;
/// Appenders of `floor_fsync_3way`: the nodes of a 3-node cluster on one machine.
const APPENDERS: u32 = 3;

/// One floor measurement: its name and the latency of each round, in µs.
pub struct Floor {
    /// `floor_rtt`, `floor_rtt_idle`, `floor_fsync`, `floor_fsync_overwrite` or
    /// `floor_fsync_3way`.
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

/// How long the measuring thread rests between the round trips of `floor_rtt_idle`: long
/// enough for both threads to sleep and their CPUs to go idle, as they do between the steps of
/// a serial write (an fdatasync takes a few hundred µs), short enough to be done in seconds.
const IDLE_PAUSE: Duration = Duration::from_millis(1);

/// `rounds` loopback round trips after `warmup` unrecorded ones, between this thread and an
/// echo thread, back to back (`floor_rtt`).
pub fn loopback_rtt(warmup: u32, rounds: u32) -> Result<Floor, Fatal> {
    ping_pong("floor_rtt", None, warmup, rounds)
}

/// [`loopback_rtt`], with [`IDLE_PAUSE`] before each round trip (`floor_rtt_idle`): what a
/// message costs to a process that was asleep. Each hop of a serial write (client, follower,
/// leader, followers and back) wakes such a process; on a virtual machine an idle CPU's wake-up
/// is part of that cost, which back-to-back round trips, never idle, do not pay.
pub fn loopback_rtt_idle(warmup: u32, rounds: u32) -> Result<Floor, Fatal> {
    ping_pong("floor_rtt_idle", Some(IDLE_PAUSE), warmup, rounds)
}

/// Round trips between this thread and an echo thread, resting `pause` before each.
fn ping_pong(
    name: &'static str,
    pause: Option<Duration>,
    warmup: u32,
    rounds: u32,
) -> Result<Floor, Fatal> {
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
        if let Some(pause) = pause {
            std::thread::sleep(pause);
        }
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
    Ok(Floor { name, rounds: h })
}

/// Where each timed block of a sync floor goes.
#[derive(Clone, Copy)]
enum Placement {
    /// At the end of the file, which grows by a block each round.
    Append,
    /// Over a block written (and synced) before the timing starts: the file's length and its
    /// block map never change while it is timed.
    Overwrite,
}

/// `rounds` writes of 4 KiB + `fdatasync` to a new file at `path` (removed afterwards), after
/// `warmup` unrecorded ones, each block placed as `placement` says.
fn sync_rounds(
    path: &Path,
    placement: Placement,
    warmup: u32,
    rounds: u32,
) -> Result<Histogram<u64>, Fatal> {
    let measured = (|| -> Result<Histogram<u64>, Fatal> {
        let mut f = std::fs::OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(path)
            .map_err(io("create the file"))?;
        let block = vec![0x5au8; BLOCK_BYTES];
        if let Placement::Overwrite = placement {
            for _ in 0..warmup + rounds {
                f.write_all(&block).map_err(io("pre-write"))?;
            }
            f.sync_all().map_err(io("fsync the pre-written file"))?;
            f.seek(SeekFrom::Start(0)).map_err(io("seek"))?;
        }
        let mut h = new_histogram(3)?;
        for i in 0..warmup + rounds {
            let t0 = Instant::now();
            f.write_all(&block).map_err(io("write"))?;
            f.sync_data().map_err(io("fdatasync"))?;
            if i >= warmup {
                h.saturating_record(t0.elapsed().as_micros().max(1) as u64);
            }
        }
        Ok(h)
    })();
    let _ = std::fs::remove_file(path);
    measured
}

/// The file a sync floor writes in `dir`: unique to this process and `what`.
fn floor_file(dir: &Path, what: &str) -> PathBuf {
    dir.join(format!(".synod-bench-{what}-{}", std::process::id()))
}

/// `rounds` appends of 4 KiB + `fdatasync` to a new file in `dir` (removed afterwards), after
/// `warmup` unrecorded ones.
pub fn append_fdatasync(dir: &Path, warmup: u32, rounds: u32) -> Result<Floor, Fatal> {
    Ok(Floor {
        name: "floor_fsync",
        rounds: sync_rounds(
            &floor_file(dir, "append"),
            Placement::Append,
            warmup,
            rounds,
        )?,
    })
}

/// `rounds` rewrites of 4 KiB + `fdatasync`, in order, of a file in `dir` written and synced
/// whole beforehand (removed afterwards), after `warmup` unrecorded ones.
pub fn overwrite_fdatasync(dir: &Path, warmup: u32, rounds: u32) -> Result<Floor, Fatal> {
    Ok(Floor {
        name: "floor_fsync_overwrite",
        rounds: sync_rounds(
            &floor_file(dir, "overwrite"),
            Placement::Overwrite,
            warmup,
            rounds,
        )?,
    })
}

/// [`append_fdatasync`] on [`APPENDERS`] threads at once, each to its own file in `dir`; every
/// thread's rounds in one histogram.
pub fn concurrent_append_fdatasync(dir: &Path, warmup: u32, rounds: u32) -> Result<Floor, Fatal> {
    let threads: Vec<_> = (0..APPENDERS)
        .map(|w| {
            let path = floor_file(dir, &format!("append{w}"));
            std::thread::spawn(move || sync_rounds(&path, Placement::Append, warmup, rounds))
        })
        .collect();
    let mut all = new_histogram(3)?;
    for t in threads {
        let h = t
            .join()
            .map_err(|_| Fatal("floor: a sync thread panicked".into()))??;
        all.add(&h)
            .map_err(|e| Fatal(format!("floor: merging histograms: {e}")))?;
    }
    Ok(Floor {
        name: "floor_fsync_3way",
        rounds: all,
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
        let idle = loopback_rtt_idle(1, 5).unwrap();
        assert_eq!(idle.rounds.len(), 5);
        assert!(idle.text().starts_with("workload=floor_rtt_idle ops=5 "));
        let dir = tempfile::tempdir().unwrap();
        let sync = append_fdatasync(dir.path(), 1, 5).unwrap();
        assert_eq!(sync.rounds.len(), 5);
        let over = overwrite_fdatasync(dir.path(), 1, 5).unwrap();
        assert_eq!(over.rounds.len(), 5);
        assert!(over
            .text()
            .starts_with("workload=floor_fsync_overwrite ops=5 "));
        let three = concurrent_append_fdatasync(dir.path(), 1, 5).unwrap();
        assert_eq!(three.rounds.len(), 15);
        assert!(three
            .text()
            .starts_with("workload=floor_fsync_3way ops=15 "));
        // The file is gone afterwards.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
