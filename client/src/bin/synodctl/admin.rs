//! synodctl's admin-port commands (`cluster ...`, `snapshot`, `backup`), sent to the nodes' admin
//! HTTP API with reqwest (HTTP/1.1, no proxy): HTTPS with the `--tls-*` material (the
//! certificate must be an operator's), plaintext without it (an `--insecure` cluster).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use reqwest::{Method, Response};
use serde_json::{json, Value};
use synod_client::tls::TlsOptions;

use crate::cli::{ClusterCmd, TenantCmd};
use crate::output::print_membership;

/// Bound on one admin request: membership changes wait for a learner to catch up (the server's
/// own bound is 60 s) and snapshots for a build (120 s).
const HTTP_TIMEOUT: Duration = Duration::from_secs(150);
/// Largest reply accepted (a backup is a whole snapshot).
const MAX_REPLY: u64 = 4 << 30;

/// The HTTP client for one synodctl run: every request bounded by [`HTTP_TIMEOUT`], connections
/// made directly to the `--admin` addresses (no `HTTP_PROXY` from the environment: these are
/// cluster-internal ports).
pub struct Admin {
    /// The connection pool (with the TLS configuration, if any).
    client: reqwest::Client,
    /// `https` with TLS material, `http` without.
    scheme: &'static str,
}

impl Admin {
    /// HTTPS with `tls` (trusting its CA, presenting its certificate), plaintext without.
    pub fn new(tls: Option<&TlsOptions>) -> Result<Admin, String> {
        // Idle connections are dropped after 15 s: a node closes one that sends no request
        // for 30 s, and a request sent on a connection being closed would fail.
        let builder = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .pool_idle_timeout(std::time::Duration::from_secs(15))
            .no_proxy();
        let (builder, scheme) = match tls {
            Some(tls) => {
                let config = tls.client_config().map_err(|e| e.to_string())?;
                (
                    builder.tls_backend_preconfigured(config.as_ref().clone()),
                    "https",
                )
            }
            // Plain HTTP never uses TLS, but reqwest (built without a crypto provider of its
            // own) sets up its TLS connector anyway: give it synod's, trusting nobody.
            None => {
                let config =
                    rustls::ClientConfig::builder_with_provider(synod_client::tls::provider())
                        .with_protocol_versions(synod_client::tls::PROTOCOL_VERSIONS)
                        .map_err(|e| format!("cannot set up the HTTP client: {e}"))?
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth();
                (builder.tls_backend_preconfigured(config), "http")
            }
        };
        let client = builder
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {}", chain(&e)))?;
        Ok(Admin { client, scheme })
    }
}

/// An error with its sources, `outer: inner: ...`.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.ends_with(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// A failed exchange with `addr` as one line.
fn http_error(addr: &str, e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return format!("{addr}: no reply within {HTTP_TIMEOUT:?}");
    }
    if e.is_connect() {
        // The innermost cause says why (e.g. "Connection refused (os error 111)").
        let mut cause: &dyn std::error::Error = e;
        while let Some(s) = cause.source() {
            cause = s;
        }
        return format!("cannot connect to {addr}: {cause}");
    }
    format!("{addr}: {}", chain(e))
}

/// One HTTP reply, read whole.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Result<Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| {
            format!(
                "reply is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Sends one request to `addr` (host:port) with `body` as JSON; returns the reply's head, its body
/// still to be read.
async fn send(
    http: &Admin,
    addr: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<Response, String> {
    let mut req = http
        .client
        .request(method, format!("{}://{addr}{path}", http.scheme));
    if let Some(b) = body {
        req = req.json(b);
    }
    req.send().await.map_err(|e| http_error(addr, &e))
}

/// Reads a reply's body chunk by chunk into `sink`, at most [`MAX_REPLY`] bytes; returns how
/// many bytes it read.
async fn read_body(
    addr: &str,
    mut reply: Response,
    mut sink: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<u64, String> {
    let mut len = 0u64;
    while let Some(chunk) = reply.chunk().await.map_err(|e| {
        if e.is_timeout() {
            http_error(addr, &e)
        } else {
            format!("{addr}: read failed: {}", chain(&e))
        }
    })? {
        len += chunk.len() as u64;
        if len > MAX_REPLY {
            return Err(format!("{addr}: reply larger than {MAX_REPLY} bytes"));
        }
        sink(&chunk)?;
    }
    Ok(len)
}

/// Sends one request to `addr` (host:port) and reads the whole reply.
pub async fn request(
    http: &Admin,
    addr: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<Reply, String> {
    let reply = send(http, addr, method, path, body).await?;
    let status = reply.status().as_u16();
    let mut data = Vec::new();
    read_body(addr, reply, |c| {
        data.extend_from_slice(c);
        Ok(())
    })
    .await?;
    Ok(Reply { status, body: data })
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
    http: &Admin,
    admins: &[String],
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<(String, Reply), String> {
    let mut errors = Vec::new();
    for addr in admins {
        match request(http, addr, method.clone(), path, body).await {
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
pub async fn cluster(
    http: &Admin,
    admins: &[String],
    cmd: ClusterCmd,
    json_out: bool,
) -> Result<(), String> {
    let (method, path, body) = match cmd {
        ClusterCmd::List => return list(http, admins, json_out).await,
        ClusterCmd::AddLearner { id, peer_addr } => (
            Method::POST,
            "/members/add-learner",
            json!({"id": id, "peer_addr": peer_addr}),
        ),
        ClusterCmd::Promote { id, force } => (
            Method::POST,
            "/members/promote",
            json!({"id": id, "force": force}),
        ),
        ClusterCmd::Remove { id, force } => (
            Method::POST,
            "/members/remove",
            json!({"id": id, "force": force}),
        ),
        ClusterCmd::Rebuild {
            id,
            peer_addr,
            wait_secs,
        } => {
            return rebuild(
                http,
                admins,
                id,
                &peer_addr,
                Duration::from_secs(wait_secs),
                json_out,
            )
            .await
        }
    };
    let (addr, reply) = to_leader(http, admins, method, path, Some(&body)).await?;
    if reply.status != 200 {
        return Err(describe_error(&addr, &reply));
    }
    print_membership(&reply.json()?, json_out);
    Ok(())
}

/// `cluster rebuild`: out of the membership, then in again once the node runs empty with
/// `--join` (retrying add-learner until it answers and catches up), then promoted.
async fn rebuild(
    http: &Admin,
    admins: &[String],
    id: u64,
    peer_addr: &str,
    wait: Duration,
    json_out: bool,
) -> Result<(), String> {
    let (addr, reply) = to_leader(http, admins, Method::GET, "/members", None).await?;
    if reply.status != 200 {
        return Err(describe_error(&addr, &reply));
    }
    let member = reply.json()?["members"]
        .as_array()
        .is_some_and(|m| m.iter().any(|x| x["id"].as_u64() == Some(id)));
    if member {
        let body = json!({"id": id});
        let (addr, reply) =
            to_leader(http, admins, Method::POST, "/members/remove", Some(&body)).await?;
        if reply.status != 200 {
            return Err(describe_error(&addr, &reply));
        }
        eprintln!("node {id} removed from the membership");
    }
    eprintln!(
        "waiting for node {id} to run on an empty data directory with --join at {peer_addr} \
         (move the damaged one aside first)..."
    );
    let deadline = tokio::time::Instant::now() + wait;
    let body = json!({"id": id, "peer_addr": peer_addr, "timeout_ms": 10_000});
    loop {
        let last = match to_leader(
            http,
            admins,
            Method::POST,
            "/members/add-learner",
            Some(&body),
        )
        .await
        {
            Ok((_, r)) if r.status == 200 => break,
            Ok((addr, r)) => describe_error(&addr, &r),
            Err(e) => e,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "node {id} did not come back and catch up within {wait:?}: {last}"
            ));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    eprintln!("node {id} caught up as a learner; promoting it");
    let body = json!({"id": id});
    let (addr, reply) =
        to_leader(http, admins, Method::POST, "/members/promote", Some(&body)).await?;
    if reply.status != 200 {
        return Err(describe_error(&addr, &reply));
    }
    print_membership(&reply.json()?, json_out);
    Ok(())
}

/// `cluster list`: the leader's view if the leader is among `admins`, else the first answer.
async fn list(http: &Admin, admins: &[String], json_out: bool) -> Result<(), String> {
    let mut first = None;
    let mut errors = Vec::new();
    for addr in admins {
        match request(http, addr, Method::GET, "/membership", None).await {
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

/// Runs `synodctl tenant ...` on the first reachable node (any node: a change is proposed
/// through the leader); prints the tenant table (or, after `add`, the tenant).
pub async fn tenant(
    http: &Admin,
    admins: &[String],
    cmd: TenantCmd,
    json_out: bool,
) -> Result<(), String> {
    let (method, path, body) = match cmd {
        TenantCmd::List => (Method::GET, "/tenants".to_string(), None),
        TenantCmd::Add {
            name,
            orgs,
            x509,
            digests,
            max_znodes,
            max_bytes,
            max_ephemerals,
            max_sessions,
            max_watches,
        } => {
            let mut members: Vec<String> = orgs.iter().map(|o| format!("org:{o}")).collect();
            members.extend(x509.iter().map(|c| format!("x509:{c}")));
            for d in &digests {
                let (user, password) = d
                    .split_once(':')
                    .ok_or_else(|| format!("--digest {d:?} is not user:password"))?;
                members.push(format!(
                    "digest:{}",
                    synod_client::digest_id(user, password).id
                ));
            }
            let quota = json!({
                "znodes": max_znodes, "bytes": max_bytes, "ephemerals": max_ephemerals,
                "sessions": max_sessions, "watches": max_watches,
            });
            let body = json!({"name": name, "members": members, "quota": quota});
            (Method::POST, "/tenants".to_string(), Some(body))
        }
        TenantCmd::Remove { name } => (Method::DELETE, format!("/tenants/{name}"), None),
    };
    let mut errors = Vec::new();
    for addr in admins {
        match request(http, addr, method.clone(), &path, body.as_ref()).await {
            Ok(r) if r.status == 200 => {
                let v = r.json()?;
                if json_out {
                    println!("{v}");
                } else {
                    print_tenants(&v);
                }
                return Ok(());
            }
            // A refusal is the cluster's answer: another node would say the same.
            Ok(r) if r.status == 400 || r.status == 401 || r.status == 403 => {
                return Err(describe_error(addr, &r))
            }
            Ok(r) => errors.push(describe_error(addr, &r)),
            Err(e) => errors.push(e),
        }
    }
    Err(errors.join("; "))
}

/// One line per tenant: name, home, identities, then each resource as used/limit.
fn print_tenants(v: &Value) {
    let list = match v {
        Value::Array(a) => a.clone(),
        one => vec![one.clone()],
    };
    for t in &list {
        let s = |k: &str| t.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
        let members: Vec<String> = t
            .get("members")
            .and_then(Value::as_array)
            .map(|m| {
                m.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let used = |r: &str| {
            let u = t
                .pointer(&format!("/usage/{r}"))
                .and_then(Value::as_u64)
                .unwrap_or(0);
            match t.pointer(&format!("/quota/{r}")).and_then(Value::as_u64) {
                Some(q) => format!("{r}={u}/{q}"),
                None => format!("{r}={u}"),
            }
        };
        println!(
            "{}\t{}\t{}\t{} {} {} {} {}",
            s("name"),
            s("home"),
            members.join(","),
            used("znodes"),
            used("bytes"),
            used("ephemerals"),
            used("sessions"),
            used("watches")
        );
    }
}

/// The temp file `out` is written through (`<out>.partial`, renamed over `out` once complete
/// and durable), readable by its owner only: backups and audit exports hold every
/// institution's data.
fn private_partial(out: &Path) -> Result<(std::path::PathBuf, std::fs::File), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = out.with_extension("partial");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    Ok((tmp, file))
}

/// The filters of `synodctl audit`.
pub struct AuditQuery {
    pub path: Option<String>,
    pub identity: Option<String>,
    pub tenant: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
}

/// Percent-encodes a query value (everything but unreserved characters and `/`).
fn encode_query(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs `synodctl audit`: prints matching records (one line each, or JSON with `--json`), or
/// with `out` exports every matching record as JSON lines, page by page (anchors first).
pub async fn audit(
    http: &Admin,
    admins: &[String],
    q: &AuditQuery,
    limit: usize,
    out: Option<&Path>,
    json_out: bool,
) -> Result<(), String> {
    let filters: String = [
        ("path", &q.path),
        ("identity", &q.identity),
        ("tenant", &q.tenant),
        ("until", &q.until),
    ]
    .iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| format!("&{k}={}", encode_query(v))))
    .collect();
    let Some(out) = out else {
        let since = q.since.as_deref().unwrap_or("0");
        let path = format!(
            "/audit?limit={limit}&since={}{filters}",
            encode_query(since)
        );
        let mut errors = Vec::new();
        for addr in admins {
            match request(http, addr, Method::GET, &path, None).await {
                Ok(r) if r.status == 200 => {
                    let v = r.json()?;
                    if json_out {
                        println!("{v}");
                    } else {
                        for rec in v["records"].as_array().into_iter().flatten() {
                            println!("{}", describe_record(rec));
                        }
                    }
                    return Ok(());
                }
                Ok(r) => errors.push(describe_error(addr, &r)),
                Err(e) => errors.push(e),
            }
        }
        return Err(errors.join("; "));
    };
    let addr = admins.first().ok_or("no --admin address")?;
    let (tmp, mut file) = private_partial(out)?;
    let cannot_write = |e: std::io::Error| format!("cannot write {}: {e}", out.display());
    let mut since = q.since.clone().unwrap_or_else(|| "0".into());
    let (mut records, mut first) = (0u64, true);
    loop {
        const PAGE: usize = 10_000;
        let path = format!(
            "/audit?format=jsonl&limit={PAGE}&since={}{filters}",
            encode_query(&since)
        );
        let r = send(http, addr, Method::GET, &path, None).await?;
        let status = r.status().as_u16();
        // Where the server's scan stopped, if it did not read the range to its end.
        let next = r
            .headers()
            .get("x-synod-audit-next")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut data = Vec::new();
        read_body(addr, r, |c| {
            data.extend_from_slice(c);
            Ok(())
        })
        .await?;
        let r = Reply { status, body: data };
        if r.status != 200 {
            return Err(describe_error(addr, &r));
        }
        let text = String::from_utf8_lossy(&r.body);
        let mut page = 0;
        for line in text.lines().filter(|l| !l.is_empty()) {
            let anchor = line.starts_with("{\"anchor_zxid\"");
            if anchor && !first {
                continue;
            }
            writeln!(file, "{line}").map_err(cannot_write)?;
            if !anchor {
                page += 1;
            }
        }
        first = false;
        records += page as u64;
        match next {
            Some(n) => since = n,
            None => break,
        }
    }
    file.sync_all().map_err(cannot_write)?;
    std::fs::rename(&tmp, out).map_err(cannot_write)?;
    eprintln!(
        "exported {records} audit records from {addr} to {}",
        out.display()
    );
    Ok(())
}

/// One line for a record: zxid, time, identities, tenant, and what was done.
fn describe_record(r: &Value) -> String {
    let action = match r["action"].as_object().and_then(|o| o.iter().next()) {
        Some((kind, body)) if kind == "Write" => {
            let ops: Vec<String> = body["ops"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|o| {
                    format!(
                        "{} {} err={}",
                        o["op"].as_str().unwrap_or("?"),
                        o["path"].as_str().unwrap_or("?"),
                        o["err"]
                    )
                })
                .collect();
            format!(
                "{} err={} [{}]",
                body["op"].as_str().unwrap_or("?"),
                body["err"],
                ops.join("; ")
            )
        }
        Some((kind, body)) => format!("{kind} {body}"),
        None => r["action"].to_string(),
    };
    let ids: Vec<&str> = r["identities"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    format!(
        "{:#x}\t{}\t{}\t{}\t{action}",
        r["zxid"].as_i64().unwrap_or(0),
        r["time_ms"],
        ids.join(","),
        r["tenant"].as_str().unwrap_or("-"),
    )
}

/// `synodctl snapshot`: triggers a snapshot on the first reachable node; prints its metadata.
pub async fn snapshot(http: &Admin, admins: &[String]) -> Result<(), String> {
    let mut errors = Vec::new();
    for addr in admins {
        match request(http, addr, Method::POST, "/snapshot", None).await {
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
pub async fn backup(http: &Admin, admins: &[String], out: &Path) -> Result<(), String> {
    let mut errors = Vec::new();
    for addr in admins {
        let taken = match request(http, addr, Method::POST, "/snapshot", None).await {
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
        let r = send(http, addr, Method::GET, "/snapshot", None).await?;
        let status = r.status().as_u16();
        if status != 200 {
            let mut body = Vec::new();
            read_body(addr, r, |c| {
                body.extend_from_slice(c);
                Ok(())
            })
            .await?;
            return Err(describe_error(addr, &Reply { status, body }));
        }
        let index = r
            .headers()
            .get("x-synod-snapshot-index")
            .and_then(|i| i.to_str().ok()?.parse::<u64>().ok())
            .or_else(|| taken.json().ok()?.get("last_log_index")?.as_u64())
            .unwrap_or(0);
        // Streamed to the temp file as it arrives (a backup is a whole snapshot), then made
        // durable and renamed over `out`; a failed download leaves `out` as it was.
        let (tmp, mut file) = private_partial(out)?;
        let cannot_write = |e: std::io::Error| format!("cannot write {}: {e}", out.display());
        let downloaded = read_body(addr, r, |c| file.write_all(c).map_err(cannot_write)).await;
        let len = match downloaded {
            Ok(len) => len,
            Err(e) => {
                drop(file);
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        file.sync_all()
            .and_then(|()| std::fs::rename(&tmp, out))
            .map_err(cannot_write)?;
        println!(
            "backup of zxid {index:#x} from {addr} ({len} bytes) written to {}",
            out.display()
        );
        return Ok(());
    }
    Err(errors.join("; "))
}
