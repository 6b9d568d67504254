//! synodctl's ZooKeeper commands (`ls`, `get`, `stat`, `create`, `set`, `delete`, `rmr`,
//! `watch`, `whoami`, `getacl`, `setacl`): each checked and given its data before connecting,
//! then run on one session.

use std::io::{IsTerminal, Read};
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use serde_json::json;
use synod_client::{perms, Acl, AddWatchMode, Client, CreateMode, Error, EventType, KeeperState};

use crate::cli::Command;
use crate::output::{self, print_json, stat_json, stat_text, write_stdout};
use crate::{CmdResult, Failure, EXIT_USAGE};

/// How many requests `rmr` keeps in flight at once.
const RMR_CONCURRENCY: usize = 128;

/// The data for `create` / `set`: the argument, else stdin when it is not a terminal, else empty.
fn read_data(arg: Option<&str>) -> CmdResult<Vec<u8>> {
    if let Some(s) = arg {
        return Ok(s.as_bytes().to_vec());
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Ok(Vec::new());
    }
    let mut buf = Vec::new();
    stdin.lock().read_to_end(&mut buf).map_err(|e| Failure {
        name: "IoError".into(),
        path: None,
        detail: Some(format!("reading data from stdin: {e}")),
        exit: EXIT_USAGE,
    })?;
    Ok(buf)
}

/// The mode `create`'s flags ask for.
fn create_mode(
    path: &str,
    ephemeral: bool,
    sequential: bool,
    container: bool,
) -> CmdResult<CreateMode> {
    Ok(match (ephemeral, sequential, container) {
        (false, false, false) => CreateMode::Persistent,
        (true, false, false) => CreateMode::Ephemeral,
        (false, true, false) => CreateMode::PersistentSequential,
        (true, true, false) => CreateMode::EphemeralSequential,
        (false, false, true) => CreateMode::Container,
        _ => {
            return Err(Failure::usage(
                Some(path),
                "-c cannot be combined with -e or -s",
            ))
        }
    })
}

/// The permission letters of ZooKeeper's ACL notation, in zkCli's order.
const PERM_LETTERS: [(char, i32); 5] = [
    ('c', perms::CREATE),
    ('d', perms::DELETE),
    ('r', perms::READ),
    ('w', perms::WRITE),
    ('a', perms::ADMIN),
];

/// `cdrwa`-style letters of `perms`.
fn perm_letters(p: i32) -> String {
    PERM_LETTERS
        .iter()
        .filter(|(_, bit)| p & bit != 0)
        .map(|(c, _)| *c)
        .collect()
}

/// Parses one `scheme:id:perms` ACL entry (the id may itself contain `:`, as digest ids do).
fn parse_acl(entry: &str) -> CmdResult<Acl> {
    let bad = |why: &str| Failure::usage(None, format!("ACL entry {entry:?}: {why}"));
    let (scheme, rest) = entry
        .split_once(':')
        .ok_or_else(|| bad("not scheme:id:perms"))?;
    let (id, letters) = rest
        .rsplit_once(':')
        .ok_or_else(|| bad("not scheme:id:perms"))?;
    let mut p = 0;
    for c in letters.chars() {
        let bit = PERM_LETTERS
            .iter()
            .find(|(l, _)| *l == c)
            .map(|(_, b)| *b)
            .ok_or_else(|| bad("permissions are letters of cdrwa"))?;
        p |= bit;
    }
    if scheme.is_empty() || p == 0 {
        return Err(bad("needs a scheme and at least one permission"));
    }
    Ok(Acl::new(p, scheme, id))
}

/// An admin-port command handed to the ZooKeeper side.
fn admin_without_session() -> Failure {
    Failure::usage(None, "admin commands run without a ZooKeeper session")
}

/// A ZooKeeper command with its arguments checked and its data read, ready to run against a
/// session.
#[derive(Debug)]
pub struct Job {
    /// The command as parsed.
    cmd: Command,
    /// The data for `create` and `set` (from the argument or stdin); empty for the others.
    data: Vec<u8>,
}

impl Job {
    /// Checks the arguments and reads stdin, before any connection is made.
    pub fn prepare(cmd: Command) -> CmdResult<Job> {
        let data = match &cmd {
            Command::Create {
                ephemeral,
                sequential,
                container,
                acl,
                path,
                data,
            } => {
                create_mode(path, *ephemeral, *sequential, *container)?;
                for entry in acl {
                    parse_acl(entry)?;
                }
                read_data(data.as_deref())?
            }
            Command::Set { data, .. } => read_data(data.as_deref())?,
            Command::Setacl { acl, .. } => {
                for entry in acl {
                    parse_acl(entry)?;
                }
                Vec::new()
            }
            Command::Rmr { path } if path == "/" => {
                return Err(Failure::usage(
                    Some("/"),
                    "refusing to delete the root znode",
                ))
            }
            Command::Cluster { .. }
            | Command::Tenant { .. }
            | Command::Audit { .. }
            | Command::Snapshot { .. }
            | Command::Backup { .. } => return Err(admin_without_session()),
            _ => Vec::new(),
        };
        Ok(Job { cmd, data })
    }

    /// The path the command is about.
    pub fn path(&self) -> &str {
        self.cmd.znode().unwrap_or_default()
    }

    /// Whether Ctrl-C is the normal way to end the command.
    pub fn is_watch(&self) -> bool {
        matches!(self.cmd, Command::Watch { .. })
    }
}

/// A connected session plus the output settings.
pub struct Ctx {
    /// The session.
    pub zk: Client,
    /// Print JSON instead of text.
    pub json: bool,
    /// The per-request timeout (`--timeout-ms`).
    pub timeout: Duration,
}

impl Ctx {
    /// Awaits one request with the per-request timeout, mapping its error to a [`Failure`].
    async fn req<T>(
        &self,
        path: &str,
        fut: impl std::future::Future<Output = Result<T, Error>>,
    ) -> CmdResult<T> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Failure::zk(e, path)),
            Err(_) => Err(Failure::timeout(path, self.timeout)),
        }
    }

    /// Runs one prepared command.
    pub async fn run(&self, job: Job) -> CmdResult {
        let Job { cmd, data } = job;
        match cmd {
            Command::Ls { path, stat } => self.ls(&path, stat).await,
            Command::Get { path } => self.get(&path).await,
            Command::Stat { path } => self.stat(&path).await,
            Command::Create {
                ephemeral,
                sequential,
                container,
                acl,
                path,
                data: _,
            } => {
                let mode = create_mode(&path, ephemeral, sequential, container)?;
                let acl = acl
                    .iter()
                    .map(|e| parse_acl(e))
                    .collect::<CmdResult<Vec<Acl>>>()?;
                self.create(&path, &data, mode, &acl).await
            }
            Command::Set {
                version,
                stat,
                path,
                data: _,
            } => self.set(&path, &data, version, stat).await,
            Command::Delete { version, path } => self.delete(&path, version).await,
            Command::Rmr { path } => self.rmr(&path).await,
            Command::Whoami => self.whoami().await,
            Command::Getacl { path } => self.getacl(&path).await,
            Command::Setacl { version, path, acl } => {
                let acl = acl
                    .iter()
                    .map(|e| parse_acl(e))
                    .collect::<CmdResult<Vec<_>>>()?;
                self.setacl(&path, &acl, version).await
            }
            Command::Watch {
                path,
                recursive,
                count,
            } => self.watch(&path, recursive, count).await,
            Command::Cluster { .. }
            | Command::Tenant { .. }
            | Command::Audit { .. }
            | Command::Snapshot { .. }
            | Command::Backup { .. } => Err(admin_without_session()),
        }
    }

    /// `whoami`: the session's identities.
    async fn whoami(&self) -> CmdResult {
        let ids = self.req("", self.zk.whoami()).await?;
        if self.json {
            let ids: Vec<_> = ids
                .iter()
                .map(|i| json!({ "scheme": i.auth_scheme, "id": i.user }))
                .collect();
            return print_json(&json!({ "identities": ids }));
        }
        let out: String = ids
            .iter()
            .map(|i| format!("{}:{}\n", i.auth_scheme, i.user))
            .collect();
        write_stdout(out.as_bytes())
    }

    /// `getacl PATH`: one `scheme:id:perms` line per entry.
    async fn getacl(&self, path: &str) -> CmdResult {
        let (acl, stat) = self.req(path, self.zk.get_acl(path)).await?;
        if self.json {
            let entries: Vec<_> = acl
                .iter()
                .map(|a| json!({ "scheme": a.id.scheme, "id": a.id.id, "perms": perm_letters(a.perms) }))
                .collect();
            return print_json(&json!({ "path": path, "acl": entries, "aversion": stat.aversion }));
        }
        let out: String = acl
            .iter()
            .map(|a| format!("{}:{}:{}\n", a.id.scheme, a.id.id, perm_letters(a.perms)))
            .collect();
        write_stdout(out.as_bytes())
    }

    /// `setacl [-v VERSION] PATH ACL...`.
    async fn setacl(&self, path: &str, acl: &[Acl], version: Option<i32>) -> CmdResult {
        let stat = self.req(path, self.zk.set_acl(path, acl, version)).await?;
        if self.json {
            return print_json(&json!({ "path": path, "stat": stat_json(&stat) }));
        }
        Ok(())
    }

    /// `ls [-s] PATH`: sorted children, optionally followed by the Stat.
    async fn ls(&self, path: &str, with_stat: bool) -> CmdResult {
        let (mut children, stat) = if with_stat {
            let (c, s) = self.req(path, self.zk.get_children2(path)).await?;
            (c, Some(s))
        } else {
            (self.req(path, self.zk.get_children(path)).await?, None)
        };
        children.sort();
        if self.json {
            let mut obj = json!({ "path": path, "children": children });
            if let Some(s) = &stat {
                obj["stat"] = stat_json(s);
            }
            return print_json(&obj);
        }
        let mut out = String::new();
        for c in &children {
            out.push_str(c);
            out.push('\n');
        }
        if let Some(s) = &stat {
            out.push_str(&stat_text(s));
        }
        write_stdout(out.as_bytes())
    }

    /// `get PATH`: the raw data, or a JSON object with the data as UTF-8 or base64.
    async fn get(&self, path: &str) -> CmdResult {
        let (data, stat) = self.req(path, self.zk.get_data(path)).await?;
        if !self.json {
            return output::write_data(&data);
        }
        let (data, encoding) = match std::str::from_utf8(&data) {
            Ok(s) => (s.to_string(), "utf-8"),
            Err(_) => (output::base64(&data), "base64"),
        };
        print_json(
            &json!({ "path": path, "data": data, "encoding": encoding, "stat": stat_json(&stat) }),
        )
    }

    /// `stat PATH`: the Stat, zkCli style.
    async fn stat(&self, path: &str) -> CmdResult {
        let stat = self
            .req(path, self.zk.exists(path))
            .await?
            .ok_or_else(|| Failure::zk(Error::NoNode, path))?;
        if self.json {
            let mut obj = stat_json(&stat);
            obj["path"] = json!(path);
            return print_json(&obj);
        }
        write_stdout(stat_text(&stat).as_bytes())
    }

    /// `create [-e] [-s] [-c] [--acl ENTRY]... PATH [DATA]`: prints the created path. An empty
    /// `acl` is the session's default (open, as zkCli's).
    async fn create(&self, path: &str, data: &[u8], mode: CreateMode, acl: &[Acl]) -> CmdResult {
        let acl = if acl.is_empty() {
            self.zk.default_acl()
        } else {
            acl
        };
        let (created, stat) = self
            .req(path, self.zk.create_full(path, data, acl, mode, None))
            .await?;
        if self.json {
            return print_json(&json!({ "path": created, "stat": stat_json(&stat) }));
        }
        write_stdout(format!("{created}\n").as_bytes())
    }

    /// `set [-v VERSION] [-s] PATH [DATA]`.
    async fn set(
        &self,
        path: &str,
        data: &[u8],
        version: Option<i32>,
        with_stat: bool,
    ) -> CmdResult {
        let stat = self
            .req(path, self.zk.set_data(path, data, version))
            .await?;
        if self.json {
            return print_json(&json!({ "path": path, "stat": stat_json(&stat) }));
        }
        if with_stat {
            return write_stdout(stat_text(&stat).as_bytes());
        }
        Ok(())
    }

    /// `delete [-v VERSION] PATH`.
    async fn delete(&self, path: &str, version: Option<i32>) -> CmdResult {
        self.req(path, self.zk.delete(path, version)).await?;
        if self.json {
            return print_json(&json!({ "path": path, "deleted": 1 }));
        }
        Ok(())
    }

    /// `rmr PATH`: the subtree, deepest znodes first.
    async fn rmr(&self, path: &str) -> CmdResult {
        // A child created under a node while the subtree is being removed makes its delete fail
        // with NotEmpty; list again and retry a few times before giving up.
        let mut deleted = 0;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.rmr_once(path).await {
                Ok(n) => {
                    deleted += n;
                    break;
                }
                Err((n, f)) if f.name == "NotEmpty" && attempt < 5 => deleted += n,
                Err((_, f)) => return Err(f),
            }
        }
        if self.json {
            return print_json(&json!({ "path": path, "deleted": deleted }));
        }
        Ok(())
    }

    /// Lists the subtree level by level, then deletes the levels deepest first, many requests in
    /// flight at a time. Returns how many znodes it deleted (also on failure, with the failure).
    async fn rmr_once(&self, root: &str) -> Result<usize, (usize, Failure)> {
        let mut levels: Vec<Vec<String>> = vec![vec![root.to_string()]];
        while let Some(last) = levels.last() {
            let listed: Vec<(String, Result<Vec<String>, Failure>)> =
                stream::iter(last.iter().cloned())
                    .map(|p| async move {
                        let r = self.req(&p, self.zk.get_children(&p)).await;
                        (p, r)
                    })
                    .buffer_unordered(RMR_CONCURRENCY)
                    .collect()
                    .await;
            let mut next = Vec::new();
            for (p, r) in listed {
                match r {
                    Ok(children) => {
                        next.extend(children.iter().map(|c| synod_proto::path::child(&p, c)))
                    }
                    // Deleted by someone else meanwhile: nothing left to do below it. For the
                    // root itself that is the command's answer.
                    Err(f) if f.name == "NoNode" && p != root => {}
                    Err(f) => return Err((0, f)),
                }
            }
            if next.is_empty() {
                break;
            }
            levels.push(next);
        }
        let mut deleted = 0;
        for level in levels.iter().rev() {
            let results: Vec<CmdResult> = stream::iter(level.iter())
                .map(|p| async move {
                    match self.req(p, self.zk.delete(p, None)).await {
                        // Gone already (deleted concurrently, or a container the server removed).
                        Err(f) if f.name == "NoNode" && p != root => Ok(()),
                        other => other,
                    }
                })
                .buffer_unordered(RMR_CONCURRENCY)
                .collect()
                .await;
            for r in results {
                match r {
                    Ok(()) => deleted += 1,
                    Err(f) => return Err((deleted, f)),
                }
            }
        }
        Ok(deleted)
    }

    /// `watch PATH [-r] [--count N]`: one line per event until Ctrl-C, `--count` events or the end of the session.
    async fn watch(&self, path: &str, recursive: bool, count: Option<u64>) -> CmdResult {
        let mode = if recursive {
            AddWatchMode::PersistentRecursive
        } else {
            AddWatchMode::Persistent
        };
        let mut events = self.req(path, self.zk.add_watch(path, mode)).await?;
        eprintln!(
            "watching {path}{}",
            if recursive { " (recursive)" } else { "" }
        );
        let mut seen = 0u64;
        if count == Some(0) {
            return Ok(());
        }
        while let Some(ev) = events.next().await {
            if ev.event_type == EventType::None {
                // The watch ended with the session.
                let err = match ev.state {
                    KeeperState::Expired => Error::SessionExpired,
                    KeeperState::AuthFailed => Error::AuthFailed,
                    _ => Error::ConnectionLoss,
                };
                return Err(Failure::zk(err, path));
            }
            if self.json {
                print_json(&json!({ "type": format!("{:?}", ev.event_type), "path": ev.path }))?;
            } else {
                write_stdout(format!("{:?} {}\n", ev.event_type, ev.path).as_bytes())?;
            }
            seen += 1;
            if count.is_some_and(|n| seen >= n) {
                break;
            }
        }
        Ok(())
    }
}
