//! Coordination recipes built on the plain client: locks, elections, barriers, queues, counters, a
//! tree cache and a two-phase commit. They use only the standard ZooKeeper API, so they work
//! against Apache ZooKeeper 3.6+ (persistent watches) as well as synod, and follow the semantics of
//! ZooKeeper's documented recipes and of Apache Curator.
//!
//! # Connection states (shared by every recipe)
//!
//! A [`crate::Client`] goes `Connected → Disconnected → Connected` when its connection breaks and it
//! resumes the same session on another server, and ends in `Expired` when the session is gone.
//!
//! * **Disconnected (suspended).** The session may still be alive, but nothing this client holds can
//!   be trusted any more: another process may already own it if the session expires meanwhile.
//!   Lock guards report themselves [suspended](lock::LockGuard::is_suspended) and a leader latch
//!   emits [`election::Leadership::Lost`] at once. Blocking waits keep waiting: their watches
//!   survive the reconnect.
//! * **Reconnected.** Every recipe re-reads the tree before it trusts anything again: the latch
//!   re-checks whether its node is still first and emits `Gained` again if so; the tree cache
//!   reloads the subtree (persistent watches do not replay missed events).
//! * **Expired.** Ephemeral nodes are gone: locks and leadership are lost for good, waits fail with
//!   [`crate::Error::SessionExpired`], the cache stops. Recovering means a new client.
//!
//! # Who may act (ACLs)
//!
//! Without named parties a recipe creates its nodes with the client's default ACL
//! ([`crate::ConnectOptions::default_acl`]), as ZooKeeper's recipes do. Given its parties — the
//! identities that take part, e.g. `x509:<CN>` of each institution's certificate — a recipe
//! creates its nodes so that nobody else can see or touch them, and each party can do only its
//! own part: see [`Guard`], [`lock::Lock::contenders`], [`election::LeaderLatch::start_among`],
//! [`barrier::DoubleBarrier::participants`], [`queue::Queue::open_among`] and
//! [`twophase::Party`]. ZooKeeper's ACL
//! model puts DELETE on the parent, so parties that may delete their own node in a directory may
//! delete each other's there too; each recipe says what that leaves open.
//!
//! Idempotent reads and conditional writes are retried under a bounded [`retry::RetryPolicy`].
//! Creates of ephemeral sequential nodes are made *protected*, as Curator does: the node name
//! carries a random tag, so that after a `ConnectionLoss` the recipe finds the node it may have
//! created instead of leaking a second one.

pub mod barrier;
pub mod cache;
pub mod counter;
pub mod election;
pub mod lock;
pub mod queue;
pub mod retry;
pub mod twophase;

use bytes::Bytes;
use rand::Rng;
use synod_proto::path::child as child_path;

use crate::{perms, Acl, Client, CreateMode, Error, Id, Result, Stat};

/// The ACLs of a recipe's directory and of the nodes its parties create in it (an empty list is
/// the client's default ACL).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guard {
    /// The directory's ACL, when the recipe creates it.
    pub dir: Vec<Acl>,
    /// Each party's node in the directory.
    pub node: Vec<Acl>,
}

impl Guard {
    /// For contenders that each create a node in a shared directory (locks, elections,
    /// barriers): only they may list the directory, create in it and delete from it; each node
    /// is readable by them only; nobody may change a node's data or ACL, nor the directory's.
    pub fn contenders(ids: &[Id]) -> Guard {
        Guard {
            dir: grant(ids, perms::READ | perms::CREATE | perms::DELETE),
            node: grant(ids, perms::READ),
        }
    }
}

impl Guard {
    /// The ACL of a party's node: [`Guard::node`], or the client's default when unguarded.
    pub(crate) fn node_acl<'a>(&'a self, client: &'a Client) -> &'a [Acl] {
        if self.node.is_empty() {
            client.default_acl()
        } else {
            &self.node
        }
    }
}

/// One ACL entry per identity, each granting `perms`.
pub fn grant(ids: &[Id], perms: i32) -> Vec<Acl> {
    ids.iter()
        .map(|id| Acl {
            perms,
            id: id.clone(),
        })
        .collect()
}

/// Width of the sequence suffix ZooKeeper appends to sequential nodes.
const SEQ_DIGITS: usize = 10;

/// A random tag that makes a protected node's name unique to one attempt.
pub(crate) fn random_tag() -> String {
    format!("{:016x}", rand::rng().random::<u64>())
}

/// The sequence number of a sequential node name (its last ten characters), if it has one.
pub(crate) fn sequence_of(name: &str) -> Option<u64> {
    let start = name.len().checked_sub(SEQ_DIGITS)?;
    name.get(start..)?.parse().ok()
}

/// Children of a recipe directory that carry a sequence suffix, sorted by it (the order in which
/// they were created, whatever their prefixes).
pub(crate) fn sort_sequential(children: Vec<String>) -> Vec<String> {
    let mut seq: Vec<(u64, String)> = children
        .into_iter()
        .filter_map(|c| sequence_of(&c).map(|s| (s, c)))
        .collect();
    seq.sort();
    seq.into_iter().map(|(_, c)| c).collect()
}

/// The last component of a path.
pub(crate) use synod_proto::path::basename as node_name;

/// Creates `path` and every missing ancestor as persistent nodes with empty data (like Curator's
/// `creatingParentsIfNeeded`). Existing nodes are fine. Recipes call this on every use, so an
/// existing path costs one read, not one write per component (a create that fails with
/// NodeExists is still a replicated write).
pub async fn ensure_path(client: &Client, path: &str) -> Result<()> {
    ensure_path_with(client, path, &[]).await
}

/// [`ensure_path`], creating `path` itself (if missing) with `acl` (empty: the client's default);
/// its missing ancestors get the client's default.
pub async fn ensure_path_with(client: &Client, path: &str, acl: &[Acl]) -> Result<()> {
    if path == "/" {
        return Ok(());
    }
    let policy = retry::RetryPolicy::default();
    if policy.run(client, || client.exists(path)).await?.is_some() {
        return Ok(());
    }
    let mut prefix = String::new();
    for part in path.trim_start_matches('/').split('/') {
        prefix.push('/');
        prefix.push_str(part);
        let p = prefix.clone();
        let created = policy
            .run(client, || async {
                let acl = if p == path && !acl.is_empty() {
                    acl
                } else {
                    client.default_acl()
                };
                match client
                    .create_full(&p, b"", acl, CreateMode::Persistent, None)
                    .await
                {
                    Ok(_) | Err(Error::NodeExists) => Ok(()),
                    Err(e) => Err(e),
                }
            })
            .await;
        created?;
    }
    Ok(())
}

/// Creates a *protected* sequential node `dir/{prefix}{tag}-NNNNNNNNNN` with `guard.node` and
/// returns its path and Stat. On `ConnectionLoss` it waits for the session to come back and looks
/// for a child carrying its tag before trying again, so that one call creates at most one node.
/// Creates `dir` with `guard.dir` if missing.
pub(crate) async fn create_protected(
    client: &Client,
    dir: &str,
    prefix: &str,
    data: &[u8],
    mode: CreateMode,
    guard: &Guard,
) -> Result<(String, Stat)> {
    let acl = guard.node_acl(client);
    let tag = random_tag();
    let base = child_path(dir, &format!("{prefix}{tag}-"));
    let policy = retry::RetryPolicy::default();
    let mut attempt = 0;
    loop {
        match client.create_full(&base, data, acl, mode, None).await {
            Ok(done) => return Ok(done),
            Err(Error::NoNode) => ensure_path_with(client, dir, &guard.dir).await?,
            Err(e) if retry::is_retryable(&e) => {
                attempt += 1;
                policy.backoff(client, attempt, e).await?;
                let found = find_tagged(client, dir, &tag).await;
                match found {
                    Ok(Some(done)) => return Ok(done),
                    Ok(None) => {}
                    Err(e) if retry::is_retryable(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// The child of `dir` whose name carries `tag`, with its Stat.
async fn find_tagged(client: &Client, dir: &str, tag: &str) -> Result<Option<(String, Stat)>> {
    for child in client.get_children(dir).await? {
        if child.contains(tag) {
            let path = child_path(dir, &child);
            if let Some(stat) = client.exists(&path).await? {
                return Ok(Some((path, stat)));
            }
        }
    }
    Ok(None)
}

/// Deletes `path` (any version), retrying connection loss; a node already gone is success.
pub(crate) async fn delete_quietly(client: &Client, path: &str) -> Result<()> {
    retry::RetryPolicy::default()
        .run(client, || async {
            match client.delete(path, None).await {
                Ok(()) | Err(Error::NoNode) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
}

/// Data as text for messages (lossy).
pub(crate) fn text(data: &Bytes) -> String {
    String::from_utf8_lossy(data).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_children_sort_by_suffix_across_prefixes() {
        let sorted = sort_sequential(vec![
            "write-b-0000000012".into(),
            "read-a-0000000003".into(),
            "junk".into(),
            "read-c-0000000007".into(),
        ]);
        assert_eq!(
            sorted,
            [
                "read-a-0000000003",
                "read-c-0000000007",
                "write-b-0000000012"
            ]
        );
        assert_eq!(sequence_of("x-0000000042"), Some(42));
        assert_eq!(sequence_of("short"), None);
        assert_eq!(child_path("/", "a"), "/a");
        assert_eq!(child_path("/d", "a"), "/d/a");
        assert_eq!(node_name("/d/a"), "a");
    }
}
