//! Test support for the operations tests: `synod` processes on free 127.0.0.1 ports with
//! per-test membership (initial voters, nodes started with `--join`, restored data directories),
//! a blocking HTTP/1.0 client for the admin port, and bounded waits. Every process is SIGKILLed
//! when the [`Cluster`] is dropped (also on panic) and dies with the test process
//! (`PR_SET_PDEATHSIG`); the directory is removed afterwards.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `synod` binary under test.
pub fn synod_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_synod"))
}

/// Where one node listens and keeps its data.
#[derive(Debug, Clone)]
pub struct Spec {
    pub id: u64,
    pub client: SocketAddr,
    pub peer: SocketAddr,
    pub admin: SocketAddr,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

/// Up to `n` nodes (ids 1..=n) on free ports; which of them run, and with which membership, is
/// up to the test.
pub struct Cluster {
    pub specs: Vec<Spec>,
    procs: Mutex<Vec<Option<Child>>>,
    root: tempfile::TempDir,
}

fn free_ports(n: usize) -> Vec<u16> {
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    ls.iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

impl Cluster {
    pub fn new(n: usize) -> Cluster {
        let root = tempfile::Builder::new()
            .prefix("synod-ops-")
            .tempdir()
            .expect("tempdir");
        let ports = free_ports(3 * n);
        let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let specs = (0..n)
            .map(|i| Spec {
                id: i as u64 + 1,
                client: addr(ports[3 * i]),
                peer: addr(ports[3 * i + 1]),
                admin: addr(ports[3 * i + 2]),
                data_dir: root.path().join(format!("node{}", i + 1)),
                log: root.path().join(format!("node{}.log", i + 1)),
            })
            .collect();
        Cluster {
            specs,
            procs: Mutex::new((0..n).map(|_| None).collect()),
            root,
        }
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// `--members` naming the nodes at `idxs`.
    pub fn members(&self, idxs: &[usize]) -> String {
        idxs.iter()
            .map(|&i| format!("{}={}", self.specs[i].id, self.specs[i].peer))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Client connect string of the nodes at `idxs`.
    pub fn connect_string(&self, idxs: &[usize]) -> String {
        idxs.iter()
            .map(|&i| self.specs[i].client.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts node `idx` with `--members members` and `extra` flags.
    pub fn spawn(&self, idx: usize, members: &str, extra: &[&str]) {
        let s = &self.specs[idx];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&s.log)
            .expect("log file");
        let mut cmd = Command::new(synod_bin());
        cmd.arg("--id")
            .arg(s.id.to_string())
            .arg("--members")
            .arg(members)
            .arg("--client-addr")
            .arg(s.client.to_string())
            .arg("--peer-addr")
            .arg(s.peer.to_string())
            .arg("--admin-addr")
            .arg(s.admin.to_string())
            .arg("--data-dir")
            .arg(&s.data_dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; nothing is allocated in the child.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                );
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn synod");
        let old = self.lock()[idx].replace(child);
        if let Some(mut c) = old {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<Child>>> {
        self.procs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn kill(&self, idx: usize) {
        if let Some(mut c) = self.lock()[idx].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn pid(&self, idx: usize) -> Option<u32> {
        self.lock()[idx].as_ref().map(Child::id)
    }

    /// Sends SIGTERM to node `idx` and waits (bounded) for it to exit.
    pub fn terminate(&self, idx: usize, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.lock()[idx].take()?;
        // SAFETY: kill(2) on our own unreaped child.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self, idx: usize) -> String {
        std::fs::read_to_string(&self.specs[idx].log).unwrap_or_default()
    }

    /// The last lines of every node's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (i, _) in self.specs.iter().enumerate() {
            let log = self.log(i);
            let lines: Vec<&str> = log.lines().collect();
            out.push_str(&format!("--- node {} ---\n", i + 1));
            out.push_str(&lines[lines.len().saturating_sub(25)..].join("\n"));
            out.push('\n');
        }
        out
    }

    /// One admin request to node `idx`: (status, body).
    pub fn http(
        &self,
        idx: usize,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Option<(u16, Vec<u8>)> {
        http(self.specs[idx].admin, method, path, body)
    }

    pub fn json(
        &self,
        idx: usize,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Option<(u16, Value)> {
        let (st, b) = self.http(idx, method, path, body)?;
        Some((st, serde_json::from_slice(&b).unwrap_or(Value::Null)))
    }

    pub fn status(&self, idx: usize) -> Option<Value> {
        match self.json(idx, "GET", "/status", None)? {
            (200, v) => Some(v),
            _ => None,
        }
    }

    /// Waits until one of `idxs` is leader and all of `idxs` name it; returns its index.
    pub fn wait_leader(&self, idxs: &[usize], timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let st: Vec<Option<Value>> = idxs.iter().map(|&i| self.status(i)).collect();
            let leaders: Vec<usize> = idxs
                .iter()
                .zip(&st)
                .filter(|(_, s)| s.as_ref().and_then(|s| s["role"].as_str()) == Some("leader"))
                .map(|(&i, _)| i)
                .collect();
            if let [l] = leaders[..] {
                let id = self.specs[l].id;
                if st
                    .iter()
                    .all(|s| s.as_ref().and_then(|s| s["leader"].as_u64()) == Some(id))
                {
                    return l;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no leader among {idxs:?} within {timeout:?}: {st:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.lock().iter_mut() {
            if let Some(mut c) = c.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// A blocking HTTP/1.0 request with a JSON body; `None` if the node does not answer.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Option<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(150))).ok()?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{payload}",
        payload.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, raw[end + 4..].to_vec()))
}

/// The tests' tokio runtime: two workers, like the machine's two cores.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Polls `f` every 50 ms until it returns true; panics with `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
