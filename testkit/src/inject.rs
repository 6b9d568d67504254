//! Faults of the machine under a running node, for the disk, clock and fault-suite tests:
//! `strace` attached to a node to delay or fail its fsyncs ([`Strace`]), a small tmpfs to fill
//! ([`Tmpfs`]), a flipped byte in a file ([`flip_middle`]), and libfaketime to move a node's
//! clock ([`faketime_env`], [`set_clock`], [`remove_faketime_objects`]). Each undoes itself when
//! dropped or reaped. Needs root (ptrace, mount), `strace` and `faketime` (scripts/test.sh
//! installs both).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `strace` attached to a running process, injecting a fault into its `fdatasync` and `fsync`
/// calls; detached (and reaped) when dropped, after which the process runs on untraced.
pub struct Strace {
    /// The strace process.
    child: Child,
    /// Where strace writes the traced calls (each injected one is marked).
    out: PathBuf,
}

impl Strace {
    /// Attaches to every thread of `pid` and applies `inject` (strace's `-e inject=` value, e.g.
    /// `fdatasync,fsync:delay_enter=200000` or `fdatasync,fsync:error=EIO`); returns once strace
    /// traces the process (at most 10 s), or an error.
    pub fn attach(pid: u32, inject: &str, out: PathBuf) -> std::io::Result<Strace> {
        let mut child = Command::new("strace")
            .args(["-f", "-qq", "-e", "trace=fdatasync,fsync", "-e"])
            .arg(format!("inject={inject}"))
            .arg("-o")
            .arg(&out)
            .arg("-p")
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while tracer_of(pid) != Some(child.id()) {
            let exited = !matches!(child.try_wait(), Ok(None));
            // An injected error can stop the process at once, and strace with it.
            if exited && has_exited(pid) {
                break;
            }
            if exited || Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(std::io::Error::other(format!(
                    "strace did not attach to {pid}"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Strace { child, out })
    }

    /// How many calls strace has logged with `marker` (`DELAYED`, `INJECTED`).
    pub fn count(&self, marker: &str) -> usize {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(marker))
            .count()
    }
}

impl Drop for Strace {
    fn drop(&mut self) {
        // SIGINT: strace detaches from every thread and exits.
        // SAFETY: kill(2) on our own unreaped child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `pid` has ended (gone, or a zombie its parent has not reaped yet).
fn has_exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(status) => status
            .lines()
            .find_map(|l| l.strip_prefix("State:"))
            .is_some_and(|s| matches!(s.trim().chars().next(), Some('Z' | 'X'))),
        Err(_) => true,
    }
}

/// The pid tracing `pid` (`TracerPid` in its status), if any.
fn tracer_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .and_then(|v| v.trim().parse().ok())
        .filter(|p| *p != 0)
}

/// A tmpfs mounted for a test; unmounted (lazily: a node may still hold files open) on drop.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size_mib` MiB at `at` (created if needed), private to its owner.
    pub fn mount(at: &Path, size_mib: u64) -> std::io::Result<Tmpfs> {
        std::fs::create_dir_all(at)?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size_mib}m,mode=0700"))
            .arg("tmpfs")
            .arg(at)
            .status()?;
        if !status.success() {
            return Err(std::io::Error::other(format!(
                "mount a tmpfs at {} failed (needs root)",
                at.display()
            )));
        }
        Ok(Tmpfs(at.to_path_buf()))
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Flips one bit of the byte in the middle of `file`.
pub fn flip_middle(file: &Path) -> std::io::Result<()> {
    let mut bytes = std::fs::read(file)?;
    if bytes.is_empty() {
        return Err(std::io::Error::other(format!(
            "{} is empty",
            file.display()
        )));
    }
    let i = bytes.len() / 2;
    bytes[i] ^= 0x10;
    std::fs::write(file, bytes)
}

/// The files of a RocksDB database in `dir` that hold its records: write-ahead logs (`*.log`,
/// not the `LOG` info file) with more than a header, and table files (`*.sst`) — where a
/// flipped byte hits a record (after a restart, the log's entries are in table files).
pub fn record_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    let len = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
                    match p.extension().and_then(|x| x.to_str()) {
                        Some("log") => len > 4096,
                        Some("sst") => len > 0,
                        _ => false,
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// libfaketime's multi-threaded library (Debian package `faketime`).
pub const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// The name of the libfaketime control file in a node's directory (its working directory).
pub const CLOCK_FILE: &str = "faketime";

/// The environment that runs a process under libfaketime, controlled by the file [`CLOCK_FILE`]
/// in its working directory (re-read every second; missing: the real time). `monotonic`:
/// whether the monotonic clock moves too (on Linux an NTP step moves only the wall clock).
pub fn faketime_env(monotonic: bool) -> Vec<(String, String)> {
    vec![
        ("LD_PRELOAD".into(), FAKETIME_LIB.into()),
        ("FAKETIME_TIMESTAMP_FILE".into(), CLOCK_FILE.into()),
        ("FAKETIME_CACHE_DURATION".into(), "1".into()),
        (
            "FAKETIME_DONT_FAKE_MONOTONIC".into(),
            if monotonic { "0" } else { "1" }.into(),
        ),
        ("FAKETIME_DONT_RESET".into(), "1".into()),
    ]
}

/// Removes the semaphore and shared-memory object that libfaketime made for the process `pid`
/// (`/faketime_sem_<pid>` and `/faketime_shm_<pid>`, in `/dev/shm`), once that process has been
/// reaped. libfaketime makes them in every process it is preloaded into and unlinks them in its
/// destructor, which a SIGKILLed process never runs: without this, every killed node of the
/// fault suite left two files in `/dev/shm` until the machine restarted. Absent objects (a
/// process that exited by itself, or one that never ran under libfaketime) are no error. Only
/// ever called with the pid of a child already waited for: if the pid has since been reused by
/// another process under libfaketime, that process holds its objects open, and unlinking their
/// names takes nothing from it.
pub fn remove_faketime_objects(pid: u32) {
    let sem = std::ffi::CString::new(format!("/faketime_sem_{pid}"));
    let shm = std::ffi::CString::new(format!("/faketime_shm_{pid}"));
    if let (Ok(sem), Ok(shm)) = (sem, shm) {
        // SAFETY: both are NUL-terminated names that outlive the calls, which only remove a name
        // (ENOENT when there is none: the common case, ignored).
        unsafe {
            libc::sem_unlink(sem.as_ptr());
            libc::shm_unlink(shm.as_ptr());
        }
    }
}

/// Sets the clock of the process running in `node_dir` under [`faketime_env`], in libfaketime's
/// syntax: `+300` is five minutes ahead, `+0 x2` runs at twice the rate, `+0` is real time. It
/// takes effect within a second.
pub fn set_clock(node_dir: &Path, spec: &str) -> std::io::Result<()> {
    std::fs::write(node_dir.join(CLOCK_FILE), format!("{spec}\n"))
}

/// Bytes available to an unprivileged user on the file system holding `path` (`statvfs`).
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is NUL-terminated and outlives the call; `st` is writable memory of the type.
    if unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0 and filled it (it was zeroed anyway).
    let st = unsafe { st.assume_init() };
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}
