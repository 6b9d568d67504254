//! Mutual exclusion: [`Lock`] (ZooKeeper's lock recipe, like Curator's `InterProcessMutex`),
//! [`ReadWriteLock`] and [`Semaphore`].
//!
//! # Lock
//!
//! Each contender creates an ephemeral sequential node `dir/lock-<tag>-NNNNNNNNNN`; the lowest
//! sequence holds the lock; every other contender watches only its immediate predecessor (no herd
//! effect: a release wakes exactly one waiter). Guarantees:
//!
//! * **At most one holder** whose node exists, at any zxid: the order of sequence numbers is total.
//! * **Fencing.** [`LockGuard::fencing_token`] is the lock node's `czxid`: it grows with every
//!   acquisition, cluster-wide. A holder that was suspended and lost its session may still *believe*
//!   it holds the lock; resources it writes to must reject tokens lower than the highest they have
//!   seen. This is what makes the lock safe, not the lock alone.
//! * **Session loss.** The node is ephemeral: if the holder's session expires the node is deleted
//!   and the next waiter proceeds. While the client is `Disconnected` the guard reports itself
//!   [suspended](LockGuard::is_suspended); callers must stop acting on the resource.
//! * **Timeouts.** [`Lock::try_acquire`] and [`Lock::acquire_timeout`] delete their node when they
//!   give up, so an abandoned attempt never blocks others.
//!
//! # ReadWriteLock
//!
//! Readers create `read-…` nodes and hold as soon as no `write-…` node precedes them (they watch
//! the nearest preceding writer); writers create `write-…` nodes and behave as the lock above.
//!
//! # Semaphore
//!
//! `leases` holders at a time: a contender holds a lease while fewer than `leases` nodes precede
//! it. Waiters watch the children (a release may free a slot for any of them).

use std::time::Duration;

use tokio::time::Instant;

use super::{create_protected, delete_quietly, node_name, retry, sort_sequential, Guard};
use crate::{Client, CreateMode, Error, Id, Result, SessionState};

/// What a contender needs to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// Hold when first (exclusive lock, writer).
    First,
    /// Hold when no `write-` node precedes.
    NoWriterBefore,
    /// Hold when fewer than n nodes precede.
    FewerBefore(usize),
}

/// What a waiting contender watches.
#[derive(Debug, PartialEq, Eq)]
enum Blocker {
    /// Nothing: the contender holds.
    Nothing,
    /// The deletion of this node (the predecessor, or the nearest preceding writer).
    Node(String),
    /// Any change to the children (semaphore: any release may free a lease).
    AnyChild,
}

/// A distributed mutual-exclusion lock on a directory znode.
#[derive(Debug, Clone)]
pub struct Lock {
    /// The session contenders' nodes belong to.
    client: Client,
    /// The lock directory (created on first use).
    dir: String,
    /// The ACLs of the directory and of the contenders' nodes ([`Lock::contenders`]).
    guard: Guard,
}

/// A held lock, read/write lock side or semaphore lease. Release it with [`LockGuard::release`];
/// dropping it without releasing leaves the node until the session ends.
#[derive(Debug)]
pub struct LockGuard {
    /// The session holding the node.
    client: Client,
    /// The holder's node.
    path: String,
    /// The node's czxid.
    token: i64,
}

impl LockGuard {
    /// The fencing token: the lock node's creation zxid, strictly greater than every token of
    /// an earlier acquisition of the same lock. Pass it to the resources the lock protects.
    pub fn fencing_token(&self) -> i64 {
        self.token
    }

    /// The holder's node path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// True while the session is not `Connected`: the lock may be lost (if the session expires)
    /// and the holder must not act on the protected resource until it is connected again.
    pub fn is_suspended(&self) -> bool {
        self.client.state() != SessionState::Connected
    }

    /// Resolves when the session stops being `Connected`: race the critical section against it.
    pub async fn suspended(&self) -> SessionState {
        retry::suspended(&self.client).await
    }

    /// Checks with the server that the node still exists and belongs to this session (e.g. before
    /// an irreversible action). `Recipe` error if it is gone.
    pub async fn verify(&self) -> Result<()> {
        match self.client.exists(&self.path).await? {
            Some(stat) if stat.ephemeral_owner == self.client.session_id() => Ok(()),
            _ => Err(Error::Recipe(format!("lock node {} is gone", self.path))),
        }
    }

    /// Releases: deletes the node (retrying connection loss). Succeeds if the node is already
    /// gone (e.g. the session expired).
    pub async fn release(self) -> Result<()> {
        match delete_quietly(&self.client, &self.path).await {
            Err(Error::SessionExpired) | Err(Error::Closed) => Ok(()),
            other => other,
        }
    }
}

impl Lock {
    /// A lock on `dir` for `client`'s session.
    pub fn new(client: &Client, dir: &str) -> Lock {
        Lock {
            client: client.clone(),
            dir: dir.to_string(),
            guard: Guard::default(),
        }
    }

    /// Only these identities may contend: the lock directory (when this lock creates it) lets
    /// them alone list it, create in it and delete from it, and each contender's node is
    /// readable by them alone ([`Guard::contenders`]). Anyone else can neither see who holds the
    /// lock nor take it, nor delete a holder's node. (A contender can delete another
    /// contender's node: ZooKeeper puts DELETE on the directory. The fencing token still
    /// protects the resource.)
    pub fn contenders(mut self, ids: &[Id]) -> Lock {
        self.guard = Guard::contenders(ids);
        self
    }

    /// Waits until the lock is held (or the session ends).
    pub async fn acquire(&self) -> Result<LockGuard> {
        acquire(
            &self.client,
            &self.dir,
            &self.guard,
            "lock-",
            Rule::First,
            None,
        )
        .await
    }

    /// Takes the lock if it is free now; `None` if another contender holds or precedes.
    pub async fn try_acquire(&self) -> Result<Option<LockGuard>> {
        self.acquire_timeout(Duration::ZERO).await
    }

    /// Waits at most `timeout`; `None` if the lock was not acquired in time.
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<Option<LockGuard>> {
        let deadline = Instant::now() + timeout;
        match acquire(
            &self.client,
            &self.dir,
            &self.guard,
            "lock-",
            Rule::First,
            Some(deadline),
        )
        .await
        {
            Ok(g) => Ok(Some(g)),
            Err(Error::WaitTimeout(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A distributed read/write lock: many readers or one writer.
#[derive(Debug, Clone)]
pub struct ReadWriteLock {
    /// The session contenders' nodes belong to.
    client: Client,
    /// The lock directory.
    dir: String,
    /// The ACLs of the directory and of the contenders' nodes ([`Lock::contenders`]).
    guard: Guard,
}

impl ReadWriteLock {
    /// A read/write lock on `dir`.
    pub fn new(client: &Client, dir: &str) -> ReadWriteLock {
        ReadWriteLock {
            client: client.clone(),
            dir: dir.to_string(),
            guard: Guard::default(),
        }
    }

    /// Only these identities may read or write-lock (see [`Lock::contenders`]).
    pub fn contenders(mut self, ids: &[Id]) -> ReadWriteLock {
        self.guard = Guard::contenders(ids);
        self
    }

    /// Waits for shared (read) access, at most `timeout` if given.
    pub async fn read(&self, timeout: Option<Duration>) -> Result<LockGuard> {
        let deadline = timeout.map(|t| Instant::now() + t);
        acquire(
            &self.client,
            &self.dir,
            &self.guard,
            "read-",
            Rule::NoWriterBefore,
            deadline,
        )
        .await
    }

    /// Waits for exclusive (write) access, at most `timeout` if given.
    pub async fn write(&self, timeout: Option<Duration>) -> Result<LockGuard> {
        let deadline = timeout.map(|t| Instant::now() + t);
        acquire(
            &self.client,
            &self.dir,
            &self.guard,
            "write-",
            Rule::First,
            deadline,
        )
        .await
    }
}

/// A distributed counting semaphore: at most `leases` holders at a time.
#[derive(Debug, Clone)]
pub struct Semaphore {
    /// The session contenders' nodes belong to.
    client: Client,
    /// The semaphore directory.
    dir: String,
    /// How many holders at once.
    leases: usize,
    /// The ACLs of the directory and of the contenders' nodes ([`Lock::contenders`]).
    guard: Guard,
}

impl Semaphore {
    /// A semaphore of `leases` (at least 1) on `dir`. Every user must agree on `leases`.
    pub fn new(client: &Client, dir: &str, leases: usize) -> Semaphore {
        Semaphore {
            client: client.clone(),
            dir: dir.to_string(),
            leases: leases.max(1),
            guard: Guard::default(),
        }
    }

    /// Only these identities may take a lease (see [`Lock::contenders`]).
    pub fn contenders(mut self, ids: &[Id]) -> Semaphore {
        self.guard = Guard::contenders(ids);
        self
    }

    /// Waits for a lease, at most `timeout` if given.
    pub async fn acquire(&self, timeout: Option<Duration>) -> Result<LockGuard> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let rule = Rule::FewerBefore(self.leases);
        acquire(
            &self.client,
            &self.dir,
            &self.guard,
            "lease-",
            rule,
            deadline,
        )
        .await
    }
}

/// The common acquisition loop: create a protected ephemeral sequential node, then wait until
/// `rule` holds for it. On timeout or error the node is deleted.
async fn acquire(
    client: &Client,
    dir: &str,
    guard: &Guard,
    prefix: &str,
    rule: Rule,
    deadline: Option<Instant>,
) -> Result<LockGuard> {
    let (path, stat) = create_protected(
        client,
        dir,
        prefix,
        b"",
        CreateMode::EphemeralSequential,
        guard,
    )
    .await?;
    let guard = LockGuard {
        client: client.clone(),
        path,
        token: stat.czxid,
    };
    match wait_turn(client, dir, &guard.path, rule, deadline).await {
        Ok(()) => Ok(guard),
        Err(e) => {
            if !matches!(e, Error::SessionExpired | Error::Closed) {
                // Best effort: an abandoned node would block the others until our session ends.
                let _ = delete_quietly(client, &guard.path).await;
            }
            Err(e)
        }
    }
}

/// Waits until the node `mine` satisfies `rule`.
async fn wait_turn(
    client: &Client,
    dir: &str,
    mine: &str,
    rule: Rule,
    deadline: Option<Instant>,
) -> Result<()> {
    let policy = retry::RetryPolicy::default();
    let me = node_name(mine).to_string();
    let mut attempt = 0;
    loop {
        let children = match client.get_children(dir).await {
            Ok(c) => sort_sequential(c),
            Err(e) if retry::is_retryable(&e) => {
                attempt += 1;
                policy.backoff(client, attempt, e).await?;
                continue;
            }
            Err(e) => return Err(e),
        };
        let Some(idx) = children.iter().position(|c| *c == me) else {
            return Err(match client.state() {
                s if s.is_terminal() => retry::terminal_error(s),
                _ => Error::Recipe(format!("contender node {mine} vanished")),
            });
        };
        // What may let us proceed when it changes.
        let blocker = match rule {
            Rule::First => idx
                .checked_sub(1)
                .map_or(Blocker::Nothing, |p| Blocker::Node(children[p].clone())),
            Rule::NoWriterBefore => children[..idx]
                .iter()
                .rev()
                .find(|c| c.starts_with("write-"))
                .map_or(Blocker::Nothing, |c| Blocker::Node(c.clone())),
            Rule::FewerBefore(n) if idx < n => Blocker::Nothing,
            Rule::FewerBefore(_) => Blocker::AnyChild,
        };
        if blocker == Blocker::Nothing {
            return Ok(());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Error::WaitTimeout(dir.to_string()));
        }
        let watched = match &blocker {
            Blocker::Node(name) => client
                .exists_watch(&synod_proto::path::child(dir, name))
                .await
                .map(|(stat, w)| stat.map(|_| w)),
            // A release between the read above and this one would be missed by the watch:
            // look again if the children changed meanwhile.
            _ => client
                .get_children_watch(dir)
                .await
                .map(|(now, _, w)| (sort_sequential(now) == children).then_some(w)),
        };
        let watch = match watched {
            Ok(Some(w)) => w,
            Ok(None) => continue, // already gone or changed: look again
            Err(e) if retry::is_retryable(&e) => {
                attempt += 1;
                policy.backoff(client, attempt, e).await?;
                continue;
            }
            Err(e) => return Err(e),
        };
        attempt = 0;
        let event = match deadline {
            Some(d) => match tokio::time::timeout_at(d, watch).await {
                Ok(ev) => ev,
                Err(_) => return Err(Error::WaitTimeout(dir.to_string())),
            },
            None => watch.await,
        };
        if event.event_type == crate::EventType::None {
            // The watch ended with the session.
            return Err(retry::terminal_error(client.state()));
        }
    }
}
