//! Leader election: [`LeaderLatch`] (like Curator's `LeaderLatch`), with a leadership stream.
//!
//! Each candidate creates a protected ephemeral sequential node `dir/n-<tag>-NNNNNNNNNN` whose data
//! is its participant id; the lowest sequence leads; every other candidate watches only its
//! predecessor. A background task keeps the latch's view current:
//!
//! ```text
//!            first child & Connected                 Disconnected (suspended)
//!  Waiting ───────────────────────────▶ Leader ─────────────────────────────────▶ Waiting
//!     ▲   ◀── predecessor deleted (re-check)  │ own node deleted / close()          │
//!     └────────────────────────────────────────┴──────── reconnected: re-check ◀─────┘
//!                               Expired / closed: Lost, the latch ends (stream closes)
//! ```
//!
//! Guarantees: at most one candidate whose node is first at any zxid; a leader emits
//! [`Leadership::Lost`] **as soon as its session is suspended** (before it may expire and another
//! candidate take over), so a well-behaved leader stops acting before anyone else starts. A leader
//! that must be safe even against its own scheduling delays should pair leadership with a
//! fencing token: [`LeaderLatch::leader_token`] (the czxid of its node).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::{create_protected, delete_quietly, node_name, retry, sort_sequential, text, Guard};
use crate::{Client, CreateMode, Error, EventType, Id, Result, SessionState};
use synod_proto::path::child as child_path;

/// A change of leadership, as delivered by [`LeaderLatch::subscribe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leadership {
    /// This candidate is now the leader.
    Gained,
    /// This candidate is no longer (or may no longer be) the leader.
    Lost,
}

/// A stream of [`Leadership`] changes; ends when the latch ends.
#[derive(Debug)]
pub struct LeadershipStream {
    /// Fed by the latch task.
    rx: mpsc::UnboundedReceiver<Leadership>,
}

impl LeadershipStream {
    /// The next change; `None` once the latch has ended (closed, or its session expired).
    pub async fn next(&mut self) -> Option<Leadership> {
        self.rx.recv().await
    }
}

/// State shared between the latch handle and its task.
#[derive(Debug)]
struct Shared {
    /// Subscribers to leadership changes.
    subscribers: Mutex<Vec<mpsc::UnboundedSender<Leadership>>>,
    /// Current leadership (true = leader), for polling and waiting.
    leader: watch::Sender<bool>,
}

impl Shared {
    fn set(&self, leader: bool) {
        // The subscriber list is locked across the state change so that a subscriber added
        // right after a waiter saw the new state never receives the event for it.
        let mut subs = self
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let changed = self.leader.send_if_modified(|l| {
            let changed = *l != leader;
            *l = leader;
            changed
        });
        if changed {
            let ev = if leader {
                Leadership::Gained
            } else {
                Leadership::Lost
            };
            subs.retain(|s| s.send(ev).is_ok());
        }
    }
}

/// One candidate in a leader election on a directory.
#[derive(Debug)]
pub struct LeaderLatch {
    /// The candidate's session.
    client: Client,
    /// The election directory.
    dir: String,
    /// The candidate's node.
    path: String,
    /// Its czxid (the leader's fencing token).
    token: i64,
    /// Leadership state and subscribers.
    shared: Arc<Shared>,
    /// Stops the task (it then deletes the node).
    stop: Option<oneshot::Sender<()>>,
    /// Receives leadership updates for `wait_leadership`.
    state: watch::Receiver<bool>,
}

impl LeaderLatch {
    /// Joins the election on `dir` as participant `id` (stored as the node's data) and starts
    /// following it in the background.
    pub async fn start(client: &Client, dir: &str, id: &str) -> Result<LeaderLatch> {
        Self::start_with(client, dir, id, &Guard::default()).await
    }

    /// [`LeaderLatch::start`] among named candidates only: the election directory (when this
    /// candidate creates it) lets them alone list, join and leave it, and each candidate's node
    /// is readable by them alone ([`Guard::contenders`]); anyone else can neither see who
    /// leads nor stand. (A candidate can delete another's node: ZooKeeper puts DELETE on the
    /// directory. The leader's token still fences what it writes.)
    pub async fn start_among(
        client: &Client,
        dir: &str,
        id: &str,
        candidates: &[Id],
    ) -> Result<LeaderLatch> {
        Self::start_with(client, dir, id, &Guard::contenders(candidates)).await
    }

    async fn start_with(
        client: &Client,
        dir: &str,
        id: &str,
        guard: &Guard,
    ) -> Result<LeaderLatch> {
        let (path, stat) = create_protected(
            client,
            dir,
            "n-",
            id.as_bytes(),
            CreateMode::EphemeralSequential,
            guard,
        )
        .await?;
        let (leader, state) = watch::channel(false);
        let shared = Arc::new(Shared {
            subscribers: Mutex::new(Vec::new()),
            leader,
        });
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(follow(
            client.clone(),
            dir.to_string(),
            path.clone(),
            shared.clone(),
            stopped,
        ));
        Ok(LeaderLatch {
            client: client.clone(),
            dir: dir.to_string(),
            path,
            token: stat.czxid,
            shared,
            stop: Some(stop),
            state,
        })
    }

    /// Whether this candidate leads now (as far as its session knows: false while suspended).
    pub fn is_leader(&self) -> bool {
        *self.state.borrow()
    }

    /// This candidate's node.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The czxid of this candidate's node: grows with every new candidate, so a resource can
    /// reject an older leader's writes.
    pub fn leader_token(&self) -> i64 {
        self.token
    }

    /// Every leadership change from now on (the current state is [`LeaderLatch::is_leader`]).
    pub fn subscribe(&self) -> LeadershipStream {
        let (tx, rx) = mpsc::unbounded_channel();
        self.shared
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(tx);
        LeadershipStream { rx }
    }

    /// Waits until this candidate leads; `WaitTimeout` after `timeout`, `SessionExpired` /
    /// `Closed` if the latch ended first.
    pub async fn wait_leadership(&mut self, timeout: Duration) -> Result<()> {
        let wait = self.state.wait_for(|l| *l);
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(retry::terminal_error(self.client.state())),
            Err(_) => Err(Error::WaitTimeout(format!("leadership of {}", self.dir))),
        }
    }

    /// The participant id of the current leader (the first candidate's data), if any.
    pub async fn current_leader(&self) -> Result<Option<String>> {
        current_leader(&self.client, &self.dir).await
    }

    /// Leaves the election: stops following and deletes the node (leadership is lost at once).
    pub async fn close(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.shared.set(false);
        match delete_quietly(&self.client, &self.path).await {
            Err(Error::SessionExpired) | Err(Error::Closed) => Ok(()),
            other => other,
        }
    }
}

impl Drop for LeaderLatch {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The participant id of the first candidate in `dir`, if any.
pub async fn current_leader(client: &Client, dir: &str) -> Result<Option<String>> {
    let children = match client.get_children(dir).await {
        Ok(c) => sort_sequential(c),
        Err(Error::NoNode) => return Ok(None),
        Err(e) => return Err(e),
    };
    for c in children {
        match client.get_data(&child_path(dir, &c)).await {
            Ok((data, _)) => return Ok(Some(text(&data))),
            Err(Error::NoNode) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// What ended one wait of the latch task.
enum Woke {
    /// Something in the tree changed: re-check.
    Recheck,
    /// The session is suspended: leadership lost until reconnected.
    Suspended,
    /// Closed, expired, or the node is gone for good.
    End,
}

/// The latch task: keeps `shared` in step with the tree and the session state.
async fn follow(
    client: Client,
    dir: String,
    mine: String,
    shared: Arc<Shared>,
    mut stopped: oneshot::Receiver<()>,
) {
    let me = node_name(&mine).to_string();
    // `mine` is kept for diagnostics only.
    tracing::debug!(node = %mine, "leader latch following");
    loop {
        let woke = tokio::select! {
            _ = &mut stopped => Woke::End,
            w = step(&client, &dir, &me, &shared) => w,
        };
        match woke {
            Woke::Recheck => {}
            Woke::End => break,
            Woke::Suspended => {
                shared.set(false);
                tokio::time::sleep(Duration::from_millis(20)).await;
                let back = tokio::select! {
                    _ = &mut stopped => false,
                    r = retry::wait_connected(&client, Duration::from_secs(3600)) => r.is_ok(),
                };
                if !back {
                    break;
                }
            }
        }
    }
    shared.set(false);
    // Dropping `shared`'s subscribers ends every stream once the handle goes too.
    shared
        .subscribers
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
}

/// One check of the election: sets leadership, then waits for the next thing that may change it.
async fn step(client: &Client, dir: &str, me: &str, shared: &Shared) -> Woke {
    if client.state() != SessionState::Connected {
        return if client.state().is_terminal() {
            Woke::End
        } else {
            Woke::Suspended
        };
    }
    let children = match client.get_children(dir).await {
        Ok(c) => sort_sequential(c),
        Err(e) => return woke_by_error(client, &e),
    };
    let Some(idx) = children.iter().position(|c| c == me) else {
        return Woke::End; // our node is gone: deleted by someone, or the session expired
    };
    // Leader: watch our own node; candidate: watch the predecessor.
    let watched = if idx == 0 {
        child_path(dir, me)
    } else {
        child_path(dir, &children[idx - 1])
    };
    let watch = match client.exists_watch(&watched).await {
        Ok((Some(_), w)) => w,
        Ok((None, _)) => return Woke::Recheck,
        Err(e) => return woke_by_error(client, &e),
    };
    shared.set(idx == 0);
    tokio::select! {
        ev = watch => {
            if ev.event_type == EventType::None { Woke::End } else { Woke::Recheck }
        }
        s = retry::suspended(client) => {
            if s.is_terminal() { Woke::End } else { Woke::Suspended }
        }
    }
}

fn woke_by_error(client: &Client, e: &Error) -> Woke {
    if retry::is_retryable(e) && !client.state().is_terminal() {
        Woke::Suspended
    } else {
        Woke::End
    }
}
