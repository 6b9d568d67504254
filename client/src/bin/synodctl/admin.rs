//! synodctl's admin-port commands (`cluster ...`, `snapshot`, `backup`): a minimal HTTP/1.1 client
//! over a tokio `TcpStream` (one request per connection, `Connection: close`), so that the client
//! crate needs no HTTP library, and the commands built on it.

use std::path::Path;
use std::time::Duration;

use clap::Subcommand;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound on one admin request: membership changes wait for a learner to catch up (the server's
/// own bound is 60 s) and snapshots for a build (120 s).
const HTTP_TIMEOUT: Duration = Duration::from_secs(150);
/// Largest reply accepted (a backup is a whole snapshot).
const MAX_REPLY: usize = 4 << 30;

/// `synodctl cluster ...`.
#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// List the members as a node sees them (the leader's view, with replication lag, if the
    /// leader is among --admin).
    List,
    /// Add a node (started with `synod --join`) as a learner and wait until it has caught up.
    AddLearner {
        /// The new node's id.
        #[arg(long)]
        id: u64,
        /// The new node's peer (Raft) address, host:port.
        #[arg(long)]
        peer_addr: String,
    },
    /// Promote a caught-up learner to voter (joint consensus).
    Promote {
        /// The learner's id.
        #[arg(long)]
        id: u64,
        /// Skip the safety checks (a majority of voters reachable and caught up).
        #[arg(long)]
        force: bool,
    },
    /// Remove a voter or learner (the leader too: it steps down once the change commits).
    Remove {
        /// The member's id.
        #[arg(long)]
        id: u64,
        /// Skip the safety checks (a majority of the remaining voters reachable and caught up).
        #[arg(long)]
        force: bool,
    },
}

/// One HTTP reply.
pub struct Reply {
    pub status: u16,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Result<Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| {
            format!(
                "reply is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Sends one request to `addr` (host:port) and reads the whole reply.
pub async fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Reply, String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: */*\r\n"
        );
        if body.is_some() {
            head.push_str("Content-Type: application/json\r\n");
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", payload.len()));
        stream
            .write_all(head.as_bytes())
            .await
            .and(stream.write_all(payload.as_bytes()).await)
            .map_err(|e| format!("{addr}: write failed: {e}"))?;
        let mut raw = Vec::new();
        (&mut stream)
            .take(MAX_REPLY as u64 + 65536)
            .read_to_end(&mut raw)
            .await
            .map_err(|e| format!("{addr}: read failed: {e}"))?;
        parse_reply(&raw).map_err(|e| format!("{addr}: {e}"))
    };
    tokio::time::timeout(HTTP_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("{addr}: no reply within {HTTP_TIMEOUT:?}"))?
}

/// Parses a complete HTTP/1.x reply (Content-Length, chunked, or until close).
fn parse_reply(raw: &[u8]) -> Result<Reply, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("reply has no header end")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "reply header is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let reply = Reply {
        status,
        headers,
        body: Vec::new(),
    };
    let body = if reply
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        dechunk(rest)?
    } else if let Some(len) = reply.header("content-length") {
        let len: usize = len.parse().map_err(|_| "bad Content-Length")?;
        if rest.len() < len {
            return Err(format!("reply cut short: {} of {len} bytes", rest.len()));
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Reply { body, ..reply })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk header")?;
        let size_text = std::str::from_utf8(&data[..eol]).map_err(|_| "bad chunk size")?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| "bad chunk size")?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("reply cut short in a chunk".into());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// An error reply as one line: the server's `error` message and the leader it names, if any.
fn describe_error(addr: &str, r: &Reply) -> String {
    match r.json() {
        Ok(v) => {
            let msg = v
                .get("error")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            format!("{addr}: HTTP {}: {msg}", r.status)
        }
        Err(_) => format!(
            "{addr}: HTTP {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body).trim()
        ),
    }
}

/// Sends the request to each of `admins` in turn until one that is not "not the leader" (421)
/// answers; returns that node's address and reply.
async fn to_leader(
    admins: &[String],
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(String, Reply), String> {
    let mut errors = Vec::new();
    for addr in admins {
        match request(addr, method, path, body).await {
            Ok(r) if r.status == 421 => errors.push(describe_error(addr, &r)),
            Ok(r) => return Ok((addr.clone(), r)),
            Err(e) => errors.push(e),
        }
    }
    Err(format!(
        "no leader among --admin {}: {}",
        admins.join(","),
        errors.join("; ")
    ))
}

/// Runs `synodctl cluster ...`; prints the resulting membership.
pub async fn cluster(admins: &[String], cmd: ClusterCmd, json_out: bool) -> Result<(), String> {
    let (method, path, body) = match cmd {
        ClusterCmd::List => return list(admins, json_out).await,
        ClusterCmd::AddLearner { id, peer_addr } => (
            "POST",
            "/members/add-learner",
            json!({"id": id, "peer_addr": peer_addr}),
        ),
        ClusterCmd::Promote { id, force } => (
            "POST",
            "/members/promote",
            json!({"id": id, "force": force}),
        ),
        ClusterCmd::Remove { id, force } => {
            ("POST", "/members/remove", json!({"id": id, "force": force}))
        }
    };
    let (addr, reply) = to_leader(admins, method, path, Some(&body)).await?;
    if reply.status != 200 {
        return Err(describe_error(&addr, &reply));
    }
    print_membership(&reply.json()?, json_out);
    Ok(())
}

/// `cluster list`: the leader's view if the leader is among `admins`, else the first answer.
async fn list(admins: &[String], json_out: bool) -> Result<(), String> {
    let mut first = None;
    let mut errors = Vec::new();
    for addr in admins {
        match request(addr, "GET", "/membership", None).await {
            Ok(r) if r.status == 200 => {
                let v = r.json()?;
                if v.get("leader").is_some() && v.get("leader") == v.get("node") {
                    print_membership(&v, json_out);
                    return Ok(());
                }
                first.get_or_insert(v);
            }
            Ok(r) => errors.push(describe_error(addr, &r)),
            Err(e) => errors.push(e),
        }
    }
    match first {
        Some(v) => {
            print_membership(&v, json_out);
            Ok(())
        }
        None => Err(errors.join("; ")),
    }
}

fn print_membership(v: &Value, json_out: bool) {
    if json_out {
        println!("{v}");
        return;
    }
    let leader = v.get("leader").and_then(Value::as_u64);
    println!(
        "{:<6} {:<22} {:<8} {:<8} {:>10} {:>8}",
        "ID", "PEER ADDRESS", "ROLE", "LEADER", "MATCHED", "LAG"
    );
    let empty = Vec::new();
    for m in v.get("members").and_then(Value::as_array).unwrap_or(&empty) {
        let id = m.get("id").and_then(Value::as_u64).unwrap_or(0);
        let num = |k: &str| {
            m.get(k)
                .and_then(Value::as_u64)
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into())
        };
        println!(
            "{:<6} {:<22} {:<8} {:<8} {:>10} {:>8}",
            id,
            m.get("peer_addr").and_then(Value::as_str).unwrap_or("?"),
            m.get("role").and_then(Value::as_str).unwrap_or("?"),
            if leader == Some(id) { "*" } else { "" },
            num("matched"),
            num("lag"),
        );
    }
    if v.get("joint").and_then(Value::as_bool) == Some(true) {
        println!("(a joint configuration is in effect: a change is in progress)");
    }
}

/// `synodctl snapshot`: triggers a snapshot on the first reachable node; prints its metadata.
pub async fn snapshot(admins: &[String]) -> Result<(), String> {
    let mut errors = Vec::new();
    for addr in admins {
        match request(addr, "POST", "/snapshot", None).await {
            Ok(r) if r.status == 200 => {
                println!("{}", r.json()?);
                return Ok(());
            }
            Ok(r) => errors.push(describe_error(addr, &r)),
            Err(e) => errors.push(e),
        }
    }
    Err(errors.join("; "))
}

/// `synodctl backup -o FILE`: a fresh snapshot of the first reachable node, downloaded and
/// written atomically to `out` (temp file, fsync, rename).
pub async fn backup(admins: &[String], out: &Path) -> Result<(), String> {
    let mut errors = Vec::new();
    for addr in admins {
        let taken = match request(addr, "POST", "/snapshot", None).await {
            Ok(r) if r.status == 200 => r,
            Ok(r) => {
                errors.push(describe_error(addr, &r));
                continue;
            }
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let r = request(addr, "GET", "/snapshot", None).await?;
        if r.status != 200 {
            return Err(describe_error(addr, &r));
        }
        let tmp = out.with_extension("partial");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&r.body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, out)
        };
        write().map_err(|e| format!("cannot write {}: {e}", out.display()))?;
        let index = r
            .header("x-synod-snapshot-index")
            .and_then(|i| i.parse::<u64>().ok())
            .or_else(|| taken.json().ok()?.get("last_log_index")?.as_u64())
            .unwrap_or(0);
        println!(
            "backup of zxid {index:#x} from {addr} ({} bytes) written to {}",
            r.body.len(),
            out.display()
        );
        return Ok(());
    }
    Err(errors.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse() {
        let r =
            parse_reply(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nX-A: b\r\n\r\nhi").expect("ok");
        assert_eq!(
            (r.status, r.body.as_slice(), r.header("x-a")),
            (200, &b"hi"[..], Some("b"))
        );
        let r = parse_reply(b"HTTP/1.1 421 Misdirected\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n1\r\nd\r\n0\r\n\r\n")
            .expect("chunked");
        assert_eq!((r.status, r.body.as_slice()), (421, &b"abcd"[..]));
        assert!(parse_reply(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab").is_err());
        assert!(parse_reply(b"garbage").is_err());
    }
}
