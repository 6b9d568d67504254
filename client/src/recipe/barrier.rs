//! Barriers: [`Barrier`] (a gate held closed by one node) and [`DoubleBarrier`] (ZooKeeper's
//! double-barrier recipe, like Curator's `DistributedDoubleBarrier`).
//!
//! # Barrier
//!
//! Closed while the barrier node exists; [`Barrier::wait`] returns once it is deleted. The node is
//! persistent: a coordinator that dies leaves the barrier closed (on purpose: releasing waiters is
//! a decision, not a side effect of a crash).
//!
//! # DoubleBarrier
//!
//! `count` participants [`enter`](DoubleBarrier::enter) together and
//! [`leave`](DoubleBarrier::leave) together. Each creates an ephemeral `dir/<id>`; the one that
//! sees `count` children creates `dir/ready`, releasing every participant blocked in `enter`
//! (they watch `ready`, not each other). To leave, each deletes its node and waits until no
//! participant node remains (watching the lowest remaining one, so no herd). Guarantees: no
//! participant returns from `enter` before `count` have entered; none returns from `leave` while
//! another is still inside. A participant whose session expires inside the barrier counts as
//! having left. One `dir` serves one round: `ready` stays until [`DoubleBarrier::reset`].

use std::time::Duration;

use tokio::time::Instant;

use super::{ensure_path, ensure_path_with, retry, Guard};
use crate::{Client, CreateMode, Error, EventType, Id, Result};
use synod_proto::path::child as child_path;

/// A gate: closed while its node exists.
#[derive(Debug, Clone)]
pub struct Barrier {
    /// Session used to set, remove and watch.
    client: Client,
    /// The barrier node.
    path: String,
}

impl Barrier {
    /// A barrier on node `path`.
    pub fn new(client: &Client, path: &str) -> Barrier {
        Barrier {
            client: client.clone(),
            path: path.to_string(),
        }
    }

    /// Closes the barrier (creates its node; already closed is fine).
    pub async fn set(&self) -> Result<()> {
        if let Some((parent, _)) = self.path.rsplit_once('/') {
            if !parent.is_empty() {
                ensure_path(&self.client, parent).await?;
            }
        }
        retry::RetryPolicy::default()
            .run(&self.client, || async {
                match self
                    .client
                    .create(&self.path, b"", CreateMode::Persistent)
                    .await
                {
                    Ok(_) | Err(Error::NodeExists) => Ok(()),
                    Err(e) => Err(e),
                }
            })
            .await
    }

    /// Opens the barrier, releasing every waiter.
    pub async fn remove(&self) -> Result<()> {
        super::delete_quietly(&self.client, &self.path).await
    }

    /// Waits until the barrier is open (its node absent), at most `timeout`.
    pub async fn wait(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let (stat, watch) = retry::RetryPolicy::default()
                .run(&self.client, || self.client.exists_watch(&self.path))
                .await?;
            if stat.is_none() {
                return Ok(());
            }
            wait_event(&self.client, watch, deadline, &self.path).await?;
        }
    }
}

/// Awaits a one-shot watch until `deadline`; an event of type `None` means the session ended.
async fn wait_event(
    client: &Client,
    watch: crate::OneshotWatch,
    deadline: Instant,
    what: &str,
) -> Result<()> {
    match tokio::time::timeout_at(deadline, watch).await {
        Err(_) => Err(Error::WaitTimeout(what.to_string())),
        Ok(ev) if ev.event_type == EventType::None => Err(retry::terminal_error(client.state())),
        Ok(_) => Ok(()),
    }
}

/// Name of the node that opens the entry side of a double barrier.
const READY: &str = "ready";

/// `count` participants enter together and leave together.
#[derive(Debug, Clone)]
pub struct DoubleBarrier {
    /// The participant's session.
    client: Client,
    /// The barrier directory.
    dir: String,
    /// This participant's id (its node name); unique among participants.
    id: String,
    /// Participants needed to enter.
    count: usize,
    /// The ACLs of the directory and of the participants' nodes
    /// ([`DoubleBarrier::participants`]).
    guard: Guard,
}

impl DoubleBarrier {
    /// Participant `id` (a valid node name other than `ready`) of a barrier of `count` on `dir`.
    pub fn new(client: &Client, dir: &str, id: &str, count: usize) -> DoubleBarrier {
        DoubleBarrier {
            client: client.clone(),
            dir: dir.to_string(),
            id: id.to_string(),
            count: count.max(1),
            guard: Guard::default(),
        }
    }

    /// Only these identities may take part: the barrier directory (when this participant
    /// creates it) lets them alone list, enter and leave it, and its nodes are readable by them
    /// alone ([`Guard::contenders`]). Anyone else can neither see who is inside nor enter, nor
    /// open the barrier for the others.
    pub fn participants(mut self, ids: &[Id]) -> DoubleBarrier {
        self.guard = Guard::contenders(ids);
        self
    }

    fn my_path(&self) -> String {
        child_path(&self.dir, &self.id)
    }

    /// Registers and waits (at most `timeout`) until `count` participants have entered. On
    /// timeout this participant's node is removed again.
    pub async fn enter(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        ensure_path_with(&self.client, &self.dir, &self.guard.dir).await?;
        let policy = retry::RetryPolicy::default();
        let ready = child_path(&self.dir, READY);
        let acl = self.guard.node_acl(&self.client);
        let mine = self.my_path();
        // Watch `ready` before joining, so its creation cannot be missed.
        let (stat, watch) = policy
            .run(&self.client, || self.client.exists_watch(&ready))
            .await?;
        policy
            .run(&self.client, || async {
                match self
                    .client
                    .create_full(&mine, b"", acl, CreateMode::Ephemeral, None)
                    .await
                {
                    Ok(_) | Err(Error::NodeExists) => Ok(()),
                    Err(e) => Err(e),
                }
            })
            .await?;
        if stat.is_some() {
            return Ok(());
        }
        let children = policy
            .run(&self.client, || self.client.get_children(&self.dir))
            .await?;
        let inside = children.iter().filter(|c| *c != READY).count();
        if inside >= self.count {
            return policy
                .run(&self.client, || async {
                    match self
                        .client
                        .create_full(&ready, b"", acl, CreateMode::Persistent, None)
                        .await
                    {
                        Ok(_) | Err(Error::NodeExists) => Ok(()),
                        Err(e) => Err(e),
                    }
                })
                .await;
        }
        match wait_event(&self.client, watch, deadline, &ready).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = super::delete_quietly(&self.client, &mine).await;
                Err(e)
            }
        }
    }

    /// Leaves and waits (at most `timeout`) until every participant has left.
    pub async fn leave(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let policy = retry::RetryPolicy::default();
        super::delete_quietly(&self.client, &self.my_path()).await?;
        loop {
            let mut inside: Vec<String> = policy
                .run(&self.client, || self.client.get_children(&self.dir))
                .await?
                .into_iter()
                .filter(|c| c != READY)
                .collect();
            if inside.is_empty() {
                return Ok(());
            }
            inside.sort();
            let first = child_path(&self.dir, &inside[0]);
            let (stat, watch) = policy
                .run(&self.client, || self.client.exists_watch(&first))
                .await?;
            if stat.is_some() {
                wait_event(&self.client, watch, deadline, &self.dir).await?;
            }
        }
    }

    /// Removes `ready` so that `dir` can serve another round (call once everyone has left).
    pub async fn reset(&self) -> Result<()> {
        super::delete_quietly(&self.client, &child_path(&self.dir, READY)).await
    }
}
