//! A distributed FIFO queue with consume-once delivery ([`Queue`]).
//!
//! Producers append persistent sequential nodes `dir/items/item-NNNNNNNNNN`. A consumer
//! [`take`](Queue::take)s the oldest item by **moving** it, in one `multi`, to
//! `dir/taken/item-NNNNNNNNNN` (data: `<consumer id>\n<payload>`): the `delete` in that multi
//! succeeds for exactly one consumer, so every item is delivered to at most one `take`. If the
//! reply is lost (`ConnectionLoss`), the consumer re-reads `taken/…` and recognises its own claim,
//! so a delivered item is never lost to a connection failure either. Once processed, the consumer
//! [`ack`](Queue::ack)s it (deleting the claim); claims of consumers that died before acking stay
//! visible under `taken/` and can be put back with [`Queue::requeue_unacked`].
//!
//! Guarantees: FIFO by sequence number among items present when a `take` looks; every item is
//! taken by at most one consumer; with acks, exactly once per item as long as consumers ack after
//! processing and nobody requeues claims of live consumers.

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::{ensure_path_with, retry, sort_sequential, Guard};
use crate::{Client, CreateMode, Error, EventType, Id, Op, Result};
use synod_proto::path::child as child_path;

/// An item handed to one consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueItem {
    /// The item's node name (`item-NNNNNNNNNN`), stable from `put` to `ack`.
    pub name: String,
    /// The payload.
    pub data: Bytes,
}

/// A FIFO queue on a directory.
#[derive(Debug, Clone)]
pub struct Queue {
    /// The session producing or consuming.
    client: Client,
    /// `dir/items`.
    items: String,
    /// `dir/taken`.
    taken: String,
    /// This consumer's id, recorded in its claims.
    consumer: String,
    /// The ACLs of the directories and of the items and claims ([`Queue::open_among`]).
    guard: Guard,
}

impl Queue {
    /// A queue on `dir`; `consumer` identifies this process in the claims it makes.
    pub async fn open(client: &Client, dir: &str, consumer: &str) -> Result<Queue> {
        Self::open_with(client, dir, consumer, Guard::default()).await
    }

    /// [`Queue::open`] among named producers and consumers only: `items/` and `taken/` (when
    /// this member creates them) let them alone list, add and take, and every item and claim
    /// is readable by them alone ([`Guard::contenders`]); anyone else can neither read, add nor
    /// take an item. (A member can delete another's claim: ZooKeeper puts DELETE on the
    /// directory.)
    pub async fn open_among(
        client: &Client,
        dir: &str,
        consumer: &str,
        members: &[Id],
    ) -> Result<Queue> {
        Self::open_with(client, dir, consumer, Guard::contenders(members)).await
    }

    async fn open_with(client: &Client, dir: &str, consumer: &str, guard: Guard) -> Result<Queue> {
        let items = child_path(dir, "items");
        let taken = child_path(dir, "taken");
        ensure_path_with(client, &items, &guard.dir).await?;
        ensure_path_with(client, &taken, &guard.dir).await?;
        Ok(Queue {
            client: client.clone(),
            items,
            taken,
            consumer: consumer.replace('\n', " "),
            guard,
        })
    }

    /// Appends an item; returns its name. Not retried on connection loss (a blind retry could
    /// enqueue twice): the caller decides.
    pub async fn put(&self, data: &[u8]) -> Result<String> {
        let (path, _) = self
            .client
            .create_full(
                &child_path(&self.items, "item-"),
                data,
                self.guard.node_acl(&self.client),
                CreateMode::PersistentSequential,
                None,
            )
            .await?;
        Ok(super::node_name(&path).to_string())
    }

    /// Items waiting (not yet taken).
    pub async fn len(&self) -> Result<usize> {
        Ok(self.client.get_children(&self.items).await?.len())
    }

    /// Whether no item is waiting.
    pub async fn is_empty(&self) -> Result<bool> {
        Ok(self.len().await? == 0)
    }

    /// Takes the oldest item if there is one.
    pub async fn try_take(&self) -> Result<Option<QueueItem>> {
        let policy = retry::RetryPolicy::default();
        let children = policy
            .run(&self.client, || self.client.get_children(&self.items))
            .await?;
        for name in sort_sequential(children) {
            if let Some(item) = self.claim(&name).await? {
                return Ok(Some(item));
            }
        }
        Ok(None)
    }

    /// Waits (at most `timeout`) for an item and takes it.
    pub async fn take(&self, timeout: Duration) -> Result<QueueItem> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(item) = self.try_take().await? {
                return Ok(item);
            }
            let (children, _, watch) = retry::RetryPolicy::default()
                .run(&self.client, || self.client.get_children_watch(&self.items))
                .await?;
            if !children.is_empty() {
                continue;
            }
            match tokio::time::timeout_at(deadline, watch).await {
                Err(_) => return Err(Error::WaitTimeout(format!("an item in {}", self.items))),
                Ok(ev) if ev.event_type == EventType::None => {
                    return Err(retry::terminal_error(self.client.state()))
                }
                Ok(_) => {}
            }
        }
    }

    /// Tries to move item `name` to `taken/`; `None` if another consumer got it first.
    async fn claim(&self, name: &str) -> Result<Option<QueueItem>> {
        let src = child_path(&self.items, name);
        let dst = child_path(&self.taken, name);
        let policy = retry::RetryPolicy::default();
        let mut attempt = 0;
        loop {
            let (data, stat) = match self.client.get_data(&src).await {
                Ok(v) => v,
                Err(Error::NoNode) => return self.own_claim(name).await,
                Err(e) if retry::is_retryable(&e) => {
                    attempt += 1;
                    policy.backoff(&self.client, attempt, e).await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut claim = Vec::with_capacity(self.consumer.len() + 1 + data.len());
            claim.extend_from_slice(self.consumer.as_bytes());
            claim.push(b'\n');
            claim.extend_from_slice(&data);
            let ops = vec![
                Op::delete(&src, Some(stat.version)),
                Op::create_with_acl(
                    &dst,
                    claim,
                    self.guard.node_acl(&self.client),
                    CreateMode::Persistent,
                ),
            ];
            match self.client.multi(ops).await {
                Ok(_) => {
                    return Ok(Some(QueueItem {
                        name: name.to_string(),
                        data,
                    }))
                }
                // Someone else moved it (or a claim of that name exists).
                Err(Error::Multi { .. }) => return Ok(None),
                Err(e) if retry::is_retryable(&e) => {
                    attempt += 1;
                    policy.backoff(&self.client, attempt, e).await?;
                    // The multi may have been applied: is the claim ours?
                    if let Some(item) = self.own_claim(name).await? {
                        return Ok(Some(item));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The claim `taken/name` if this consumer made it.
    async fn own_claim(&self, name: &str) -> Result<Option<QueueItem>> {
        let dst = child_path(&self.taken, name);
        let got = retry::RetryPolicy::default()
            .run(&self.client, || self.client.get_data(&dst))
            .await;
        match got {
            Ok((data, _)) => Ok(split_claim(&data)
                .filter(|(who, _)| *who == self.consumer)
                .map(|(_, payload)| QueueItem {
                    name: name.to_string(),
                    data: payload,
                })),
            Err(Error::NoNode) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Marks a taken item processed (deletes its claim).
    pub async fn ack(&self, item: &QueueItem) -> Result<()> {
        super::delete_quietly(&self.client, &child_path(&self.taken, &item.name)).await
    }

    /// Claims not acked yet: (item name, consumer id).
    pub async fn unacked(&self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for name in sort_sequential(self.client.get_children(&self.taken).await?) {
            match self.client.get_data(&child_path(&self.taken, &name)).await {
                Ok((data, _)) => {
                    if let Some((who, _)) = split_claim(&data) {
                        out.push((name, who));
                    }
                }
                Err(Error::NoNode) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Puts the unacked claims of `consumer` (known to be dead) back at the head of their
    /// original position order (same sequence name), atomically per item.
    pub async fn requeue_unacked(&self, consumer: &str) -> Result<usize> {
        let mut moved = 0;
        for (name, who) in self.unacked().await? {
            if who != consumer {
                continue;
            }
            let dst = child_path(&self.taken, &name);
            let (data, stat) = match self.client.get_data(&dst).await {
                Ok(v) => v,
                Err(Error::NoNode) => continue,
                Err(e) => return Err(e),
            };
            let Some((_, payload)) = split_claim(&data) else {
                continue;
            };
            let ops = vec![
                Op::delete(&dst, Some(stat.version)),
                Op::create_with_acl(
                    &child_path(&self.items, &name),
                    payload,
                    self.guard.node_acl(&self.client),
                    CreateMode::Persistent,
                ),
            ];
            match self.client.multi(ops).await {
                Ok(_) => moved += 1,
                Err(Error::Multi { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(moved)
    }
}

/// Splits a claim's data into (consumer id, payload).
fn split_claim(data: &Bytes) -> Option<(String, Bytes)> {
    let nl = data.iter().position(|b| *b == b'\n')?;
    let who = String::from_utf8_lossy(&data[..nl]).into_owned();
    Some((who, data.slice(nl + 1..)))
}
